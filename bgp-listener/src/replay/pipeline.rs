//! The replay's threads: one reads (and decompresses) the files and frames records, a few workers
//! decode and format, and the caller's thread writes the output in order.
//!
//! Why this shape (see the README's replay benchmark): a route collector's RIB dump is almost all
//! TABLE_DUMP_V2 RIB records, and each depends only on itself and the file's peer index table, so
//! they can be decoded anywhere. Decoding and formatting an entry on the same thread also keeps
//! its short-lived allocations (AS path, communities) in that thread's malloc cache, where handing
//! decoded events to another thread to format made every free a cross-thread one and malloc a
//! quarter of the profile. Everything stateful (the peer index table, BGP4MP Adj-RIBs-In, STATE
//! CHANGE) stays on the reading thread in [`Decoder`], in file order; its events travel in the same
//! chunk, so the output is what one thread would print.
//!
//! Chunks go to the workers round robin and come back through one channel per worker, so the
//! writer reads them in order without sequence numbers. Buffers go back to the reader for reuse:
//! a replay prints several times its input, and fresh buffers would be fresh pages every time.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};

use super::rib_json::RibLines;
use super::{EventWriter, ReplayReport, describe};
use crate::event::{Event, Peer};
use crate::iana::mrt as t;
use crate::mrt::{Compression, Decoder, RecordReader, RibJob, open_decompressed};
use crate::update::parse_rib_attributes;
use crate::watch::Format;
use crate::wire::Family;

/// Where a replay reads from.
pub(super) enum Input<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

/// A chunk is handed on once it holds this many bytes of RIB records (formatted as JSON they are
/// about seven times as much) or this many events.
const RAW_CHUNK: usize = 1 << 18;
const EVENT_CHUNK: usize = 4096;

/// Records of one file, in order.
struct Chunk {
    /// The file's name for error messages.
    name: Arc<str>,
    /// Bodies of the RIB records, back to back.
    raw: Vec<u8>,
    /// Events the reader decoded itself (every record but RIB records).
    events: Vec<Event>,
    items: Vec<Item>,
    /// The buffer the worker formats into.
    out: Vec<u8>,
}

enum Item {
    Rib {
        job: RibJob,
        offset: u64,
        timestamp: u32,
        subtype: u16,
        start: usize,
        end: usize,
    },
    /// `events[start..end]`.
    Events { start: usize, end: usize },
    /// An error, reported after everything before it.
    Error(String),
}

/// A formatted chunk.
struct Done {
    out: Vec<u8>,
    /// Errors in order, each with the length of `out` written before it.
    errors: Vec<(usize, String)>,
    report: ReplayReport,
    rib_entries: u64,
    rib_bad: u64,
    /// Buffers to reuse.
    raw: Vec<u8>,
    events: Vec<Event>,
    items: Vec<Item>,
}

type Spare = (Vec<u8>, Vec<u8>, Vec<Event>, Vec<Item>);

pub(super) fn run<W: Write, E: Write>(
    inputs: &[Input<'_>],
    format: Format,
    out: &mut W,
    err: &mut E,
) -> io::Result<ReplayReport> {
    let workers = std::thread::available_parallelism()
        .map_or(2, usize::from)
        .clamp(1, 4);
    std::thread::scope(|scope| {
        let mut to_workers = Vec::with_capacity(workers);
        let mut from_workers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = mpsc::sync_channel::<Chunk>(2);
            let (dtx, drx) = mpsc::sync_channel::<Done>(2);
            handles.push(scope.spawn(move || work(&rx, &dtx, format)));
            to_workers.push(tx);
            from_workers.push(drx);
        }
        let (spare_tx, spare_rx) = mpsc::channel::<Spare>();
        let reader = scope.spawn(move || read_inputs(inputs, &to_workers, &spare_rx));

        let mut report = ReplayReport::default();
        let (mut rib_entries, mut rib_bad) = (0, 0);
        let mut result = Ok(());
        'chunks: for i in 0.. {
            let Some(rx) = from_workers.get(i % workers) else {
                break;
            };
            let Ok(done) = rx.recv() else {
                break;
            };
            report.merge(done.report);
            rib_entries += done.rib_entries;
            rib_bad += done.rib_bad;
            let mut written = 0;
            for (at, m) in done.errors {
                if result.is_ok() {
                    // Events before the error go out first.
                    result = out
                        .write_all(done.out.get(written..at).unwrap_or_default())
                        .and_then(|()| out.flush())
                        .and_then(|()| writeln!(err, "replay: {m}"));
                    written = at;
                }
                report.errors.push(m);
            }
            if result.is_ok() {
                result = out.write_all(done.out.get(written..).unwrap_or_default());
            }
            if result.is_err() {
                break 'chunks;
            }
            // The reader may be gone already; then the buffers are simply dropped.
            let _ = spare_tx.send((done.out, done.raw, done.events, done.items));
        }
        // Dropping the receivers stops the workers at their next send, and then the reader.
        drop(from_workers);
        let mut panicked = false;
        for h in handles {
            panicked |= h.join().is_err();
        }
        let decoder = reader.join();
        if panicked {
            return Err(io::Error::other("an MRT formatting thread panicked"));
        }
        let mut decoder =
            decoder.map_err(|_| io::Error::other("the MRT decoding thread panicked"))?;
        result?;
        decoder.add_rib_counts(rib_entries, rib_bad);
        if format == Format::Summary {
            super::write_summary(out, &decoder, &report)?;
        }
        out.flush()?;
        Ok(report)
    })
}

/// The reading stage: every input's records, framed; RIB records go to the workers as they are,
/// the rest is decoded here. Returns the decoder for its counts.
fn read_inputs(
    inputs: &[Input<'_>],
    workers: &[SyncSender<Chunk>],
    spare: &Receiver<Spare>,
) -> Decoder {
    let mut decoder = Decoder::new();
    let mut next = 0usize;
    let fresh = |name: &Arc<str>| {
        let (out, raw, events, items) = spare.try_recv().unwrap_or_default();
        Chunk {
            name: name.clone(),
            raw,
            events,
            items,
            out,
        }
    };
    // Hands `chunk` on (if it holds anything); false once the writer is gone.
    let mut send = |chunk: Chunk| -> bool {
        if chunk.items.is_empty() {
            return true;
        }
        let Some(w) = workers.get(next % workers.len()) else {
            return false;
        };
        next += 1;
        w.send(chunk).is_ok()
    };
    for input in inputs {
        decoder.start_file();
        let (name, opened) = match input {
            Input::File(path) => (
                path.display().to_string(),
                std::fs::File::open(path).and_then(open_decompressed),
            ),
            Input::Bytes(data) => (
                "(memory)".to_string(),
                open_decompressed(io::Cursor::new(data.to_vec())),
            ),
        };
        let (compression, reader) = match opened {
            Ok(v) => v,
            Err(e) => {
                let name: Arc<str> = name.into();
                let mut c = fresh(&name);
                c.items
                    .push(Item::Error(format!("{name}: cannot open: {e}")));
                if !send(c) {
                    return decoder;
                }
                continue;
            }
        };
        // Offsets count the bytes of the MRT stream: after decompression for compressed files.
        let name: Arc<str> = match compression {
            Compression::None => name.into(),
            c => format!(
                "{name} ({} offsets are of the decompressed stream)",
                c.name()
            )
            .into(),
        };
        let mut reader = RecordReader::new(reader);
        let mut chunk = fresh(&name);
        loop {
            let rec = match reader.next_record() {
                Ok(Some(rec)) => rec,
                Ok(None) => break,
                Err(e) => {
                    let recoverable = e.recoverable();
                    chunk
                        .items
                        .push(Item::Error(describe(&name, &e, recoverable)));
                    if recoverable {
                        continue;
                    }
                    break;
                }
            };
            if let Some(job) = decoder.rib_job(&rec) {
                let start = chunk.raw.len();
                chunk.raw.extend_from_slice(rec.body);
                chunk.items.push(Item::Rib {
                    job,
                    offset: rec.offset,
                    timestamp: rec.timestamp,
                    subtype: rec.subtype,
                    start,
                    end: chunk.raw.len(),
                });
            } else {
                let start = chunk.events.len();
                let r = decoder.decode(&rec, &mut chunk.events);
                let end = chunk.events.len();
                if end > start {
                    chunk.items.push(Item::Events { start, end });
                }
                if let Err(e) = r {
                    chunk.items.push(Item::Error(describe(&name, &e, true)));
                }
            }
            if chunk.raw.len() >= RAW_CHUNK || chunk.events.len() >= EVENT_CHUNK {
                let full = std::mem::replace(&mut chunk, fresh(&name));
                if !send(full) {
                    return decoder;
                }
            }
        }
        if !send(chunk) {
            return decoder;
        }
    }
    decoder
}

/// Per-peer announce counts of the RIB entries written directly, by peer index; added to the
/// chunk's report when the peer index table changes and at the end (a map lookup per entry was
/// measurable).
#[derive(Default)]
struct AnnounceCounts {
    index_id: usize,
    /// Per peer index: the peer and its IPv4 and IPv6 announce counts.
    peers: Vec<Option<(Peer, [u64; 2])>>,
}

impl AnnounceCounts {
    fn add(
        &mut self,
        index_id: usize,
        idx: u16,
        peer: Peer,
        family: Family,
        report: &mut ReplayReport,
    ) {
        if index_id != self.index_id {
            self.flush(report);
            self.index_id = index_id;
        }
        let i = usize::from(idx);
        if self.peers.len() <= i {
            self.peers.resize(i + 1, None);
        }
        if let Some(slot) = self.peers.get_mut(i) {
            let (_, c) = slot.get_or_insert((peer, [0, 0]));
            match family {
                Family::Ipv4Unicast => c[0] += 1,
                Family::Ipv6Unicast => c[1] += 1,
            }
        }
    }

    fn flush(&mut self, report: &mut ReplayReport) {
        for (peer, [v4, v6]) in self.peers.drain(..).flatten() {
            report.events += v4 + v6;
            let t = report.peers.entry(peer).or_default();
            for (family, n) in [(Family::Ipv4Unicast, v4), (Family::Ipv6Unicast, v6)] {
                if n > 0 {
                    t.families.entry(family).or_default().announce += n;
                }
            }
        }
    }
}

/// A worker: formats chunks until the reader is done or the writer gone.
fn work(rx: &Receiver<Chunk>, tx: &SyncSender<Done>, format: Format) {
    let mut w = EventWriter::default();
    let mut lines = RibLines::default();
    let mut counts = AnnounceCounts::default();
    let mut scratch = Vec::new();
    for chunk in rx.iter() {
        let done = format_chunk(chunk, format, &mut w, &mut lines, &mut counts, &mut scratch);
        if tx.send(done).is_err() {
            return;
        }
    }
}

fn format_chunk(
    mut chunk: Chunk,
    format: Format,
    w: &mut EventWriter,
    lines: &mut RibLines,
    counts: &mut AnnounceCounts,
    scratch: &mut Vec<Event>,
) -> Done {
    let mut out = std::mem::take(&mut chunk.out);
    out.clear();
    let mut errors = Vec::new();
    let mut report = ReplayReport::default();
    let (mut rib_entries, mut rib_bad) = (0, 0);
    let write = |w: &mut EventWriter, out: &mut Vec<u8>, report: &mut ReplayReport, ev: &Event| {
        report.count(ev);
        // Formatting into a Vec fails only if serde_json fails, which it does not for our values.
        let _ = w.format(out, format, ev);
    };
    for item in &chunk.items {
        match item {
            Item::Rib {
                job,
                offset,
                timestamp,
                subtype,
                start,
                end,
            } => {
                let rec = crate::mrt::Record {
                    offset: *offset,
                    timestamp: *timestamp,
                    microseconds: None,
                    kind: t::TABLE_DUMP_V2,
                    subtype: *subtype,
                    body: chunk.raw.get(*start..*end).unwrap_or_default(),
                };
                let index_id = job.index_id();
                lines.start_record(index_id);
                let o = job.walk(&rec, |e| {
                    let Ok(ra) = parse_rib_attributes(e.attributes, e.family, true) else {
                        return false;
                    };
                    if format == Format::Jsonl && ra.actions.is_empty() {
                        lines.announce(&mut out, e, &ra);
                        counts.add(index_id, e.peer_index, e.peer, e.family, &mut report);
                    } else if format == Format::Summary && ra.actions.is_empty() {
                        counts.add(index_id, e.peer_index, e.peer, e.family, &mut report);
                    } else {
                        scratch.clear();
                        e.events(ra, scratch);
                        for ev in scratch.iter() {
                            write(w, &mut out, &mut report, ev);
                        }
                    }
                    true
                });
                rib_entries += o.entries;
                rib_bad += o.bad;
                if let Some(e) = o.error {
                    errors.push((out.len(), describe(&chunk.name, &e, true)));
                }
            }
            Item::Events { start, end } => {
                for ev in chunk.events.get(*start..*end).unwrap_or_default() {
                    write(w, &mut out, &mut report, ev);
                }
            }
            Item::Error(m) => errors.push((out.len(), m.clone())),
        }
    }
    counts.flush(&mut report);
    chunk.raw.clear();
    chunk.events.clear();
    chunk.items.clear();
    Done {
        out,
        errors,
        report,
        rib_entries,
        rib_bad,
        raw: chunk.raw,
        events: chunk.events,
        items: chunk.items,
    }
}
