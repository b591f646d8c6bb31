//! `replay`: MRT files (RFC 6396) printed as the events `watch` prints, for post-mortems and tests.
//!
//! Files are read one after the other as a single replay: BGP4MP Adj-RIBs-In carry over from one
//! file to the next (RIS and RouteViews cut update streams into 5- and 15-minute files). A framing
//! error (truncated file, absurd record length, bad compressed data) ends that file after every
//! good event before it; a malformed record body is reported and skipped. Either way the replay
//! goes on with the next file and the command exits non-zero at the end. See `mrt.rs` for what each
//! record type becomes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::SystemTime;

use crate::event::{Event, Peer, Route, RouteChange, RouteEvent, SessionEvent, Source};
use crate::iana::as_path;
use crate::mrt::{Compression, Decoder, MrtError, RecordReader, open_decompressed, record_name};
use crate::update::PathAttributes;
use crate::watch::{Format, event_json, event_text};
use crate::wire::Family;

#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub files: Vec<PathBuf>,
    pub format: Format,
}

/// Per-peer, per-family event totals for the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FamilyTotals {
    pub announce: u64,
    pub withdraw: u64,
    pub attribute_change: u64,
    pub end_of_rib: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerTotals {
    pub families: BTreeMap<Family, FamilyTotals>,
    pub session_up: u64,
    pub session_down: u64,
    pub update_errors: u64,
}

/// What a replay did: totals, and the errors it reported (on the error writer too).
#[derive(Debug, Default)]
pub struct ReplayReport {
    pub events: u64,
    pub peers: BTreeMap<Peer, PeerTotals>,
    pub errors: Vec<String>,
}

impl ReplayReport {
    fn count(&mut self, ev: &Event) {
        self.events += 1;
        match ev {
            Event::Route(r) => {
                let f = self
                    .peers
                    .entry(r.peer)
                    .or_default()
                    .families
                    .entry(r.family)
                    .or_default();
                match r.change {
                    RouteChange::Announce { .. } => f.announce += 1,
                    RouteChange::Withdraw { .. } => f.withdraw += 1,
                    RouteChange::AttributeChange { .. } => f.attribute_change += 1,
                    RouteChange::EndOfRib => f.end_of_rib += 1,
                    RouteChange::Resync(_) => {}
                }
            }
            Event::Session(SessionEvent::Established { peer, .. }) => {
                self.peers.entry(*peer).or_default().session_up += 1
            }
            Event::Session(SessionEvent::Down { peer, .. }) => {
                self.peers.entry(*peer).or_default().session_down += 1
            }
            Event::Session(SessionEvent::UpdateError { peer, .. }) => {
                self.peers.entry(*peer).or_default().update_errors += 1
            }
            // MRT carries no BMP statistics, graceful-restart or prefix-limit events.
            Event::Session(
                SessionEvent::Statistics { .. }
                | SessionEvent::StaleDropped { .. }
                | SessionEvent::PrefixLimit { .. },
            ) => {}
        }
    }
}

/// Writes events in the chosen format. JSON lines of route events from MRT and session peers are
/// written directly, byte for byte what `watch::event_json` gives (the test
/// `fast_json_is_byte_identical_to_event_json` holds them together): building a `serde_json::Value`
/// map per event, with its merges, was most of a replay's time. Everything else goes through
/// `event_json`/`event_text` themselves.
#[derive(Default)]
pub struct EventWriter {
    buf: Vec<u8>,
    received: TimeCache,
    source: TimeCache,
}

/// The last time formatted, RFC 3339 as `watch` prints it: the entries of an MRT record share
/// their received time, and often their originated time.
#[derive(Default)]
struct TimeCache {
    t: Option<SystemTime>,
    s: String,
}

impl TimeCache {
    fn get(&mut self, t: SystemTime) -> &str {
        if self.t != Some(t) {
            self.t = Some(t);
            self.s.clear();
            rfc3339(&mut self.s, t);
        }
        &self.s
    }
}

/// `watch`'s time format (the `time` crate's RFC 3339 in UTC). Whole seconds, the common case in
/// MRT, are written here directly; anything else goes through `time`.
fn rfc3339(out: &mut String, t: SystemTime) {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs >= 253_402_300_800 {
        out.push_str(
            &time::OffsetDateTime::from(t)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        );
        return;
    }
    // Days to civil date (H. Hinnant's algorithm), valid for the whole u64 range used here.
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let digits = |out: &mut String, v: u64, n: u32| {
        for i in (0..n).rev() {
            let d = (v / 10u64.pow(i)) % 10;
            out.push(char::from(b'0' + d as u8));
        }
    };
    digits(out, year, 4);
    out.push('-');
    digits(out, month, 2);
    out.push('-');
    digits(out, day, 2);
    out.push('T');
    digits(out, rem / 3600, 2);
    out.push(':');
    digits(out, rem % 3600 / 60, 2);
    out.push(':');
    digits(out, rem % 60, 2);
    out.push('Z');
}

impl EventWriter {
    /// Output is gathered and written in chunks of about this size.
    const CHUNK: usize = 1 << 18;

    /// Formats `ev`; writes to `out` when a chunk is full. Call [`EventWriter::finish`] at the end.
    pub fn write<W: Write>(&mut self, out: &mut W, format: Format, ev: &Event) -> io::Result<()> {
        match format {
            Format::Jsonl => {
                match ev {
                    Event::Route(r) if !matches!(r.peer.source, Source::Bmp { .. }) => {
                        self.route_json(r)
                    }
                    _ => serde_json::to_writer(&mut self.buf, &event_json(ev))?,
                }
                self.buf.push(b'\n');
            }
            Format::Text => writeln!(self.buf, "{}", event_text(ev))?,
            Format::Summary => {}
        }
        if self.buf.len() >= Self::CHUNK {
            self.finish(out)?;
        }
        Ok(())
    }

    /// Writes whatever is gathered.
    pub fn finish<W: Write>(&mut self, out: &mut W) -> io::Result<()> {
        out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    fn route_json(&mut self, e: &RouteEvent) {
        let received = self.received.get(e.received);
        let source_time = e.source_time.map(|t| self.source.get(t));
        let b = &mut self.buf;
        let _ = write!(b, "{{\"afi_safi\":\"{}\",", e.family.name());
        let (prefix, type_name) = match &e.change {
            RouteChange::Announce { prefix, route } => {
                route_fields(b, route);
                (Some(prefix), "announce")
            }
            RouteChange::Withdraw { prefix, .. } => (Some(prefix), "withdraw"),
            RouteChange::AttributeChange {
                prefix,
                route,
                changed,
                ..
            } => {
                b.extend_from_slice(b"\"as_path\":");
                write_as_path(b, &route.attrs);
                b.extend_from_slice(b",\"changed\":[");
                for (i, c) in changed.iter().enumerate() {
                    if i > 0 {
                        b.push(b',');
                    }
                    let _ = write!(b, "\"{}\"", c.name());
                }
                b.extend_from_slice(b"],");
                route_fields_after_as_path(b, route);
                (Some(prefix), "attribute_change")
            }
            RouteChange::EndOfRib => (None, "end_of_rib"),
            // MRT replay never takes resync snapshots (only `run` does).
            RouteChange::Resync(_) => (None, "resync"),
        };
        b.extend_from_slice(b"\"path_id\":");
        opt_num(b, e.path_id);
        b.extend_from_slice(b",\"peer\":\"");
        ip(b, e.peer.addr);
        b.extend_from_slice(b"\",\"peer_as\":");
        num(b, e.peer.asn);
        b.push(b',');
        if let Some(p) = prefix {
            b.extend_from_slice(b"\"prefix\":\"");
            ip(b, p.addr);
            b.push(b'/');
            num(b, u32::from(p.len));
            b.extend_from_slice(b"\",");
        }
        if let RouteChange::AttributeChange { previous, .. } = &e.change {
            b.extend_from_slice(b"\"previous\":{");
            route_fields(b, previous);
            // route_fields ends with a comma; close the object instead.
            b.pop();
            b.extend_from_slice(b"},");
        }
        let _ = write!(
            b,
            "\"received\":\"{received}\",\"source\":\"{}\",",
            e.peer.source.name()
        );
        if let Some(st) = source_time {
            let _ = write!(b, "\"source_time\":\"{st}\",");
        }
        let _ = write!(b, "\"type\":\"{type_name}\"}}");
    }
}

fn num(b: &mut Vec<u8>, mut n: u32) {
    let mut tmp = [0u8; 10];
    let mut i = tmp.len();
    while let Some(slot) = i.checked_sub(1).and_then(|j| tmp.get_mut(j)) {
        *slot = b'0' + (n % 10) as u8;
        i -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    b.extend_from_slice(tmp.get(i..).unwrap_or_default());
}

fn opt_num(b: &mut Vec<u8>, v: Option<u32>) {
    match v {
        Some(n) => num(b, n),
        None => b.extend_from_slice(b"null"),
    }
}

fn ip(b: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(a) => {
            for (i, o) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    b.push(b'.');
                }
                num(b, u32::from(o));
            }
        }
        IpAddr::V6(a) => {
            let _ = write!(b, "{a}");
        }
    }
}

/// `PathAttributes::as_path_string` as a JSON value, written in place.
fn write_as_path(b: &mut Vec<u8>, a: &PathAttributes) {
    let Some(segs) = &a.as_path else {
        b.extend_from_slice(b"null");
        return;
    };
    b.push(b'"');
    for (i, seg) in segs.iter().enumerate() {
        if i > 0 {
            b.push(b' ');
        }
        let set = matches!(seg.kind, as_path::AS_SET | as_path::AS_CONFED_SET);
        if set {
            b.push(b'{');
        }
        for (j, asn) in seg.asns.iter().enumerate() {
            if j > 0 {
                b.push(if set { b',' } else { b' ' });
            }
            num(b, *asn);
        }
        if set {
            b.push(b'}');
        }
    }
    b.push(b'"');
}

/// `watch`'s route fields, in key order, each followed by a comma.
fn route_fields(b: &mut Vec<u8>, r: &Route) {
    b.extend_from_slice(b"\"as_path\":");
    write_as_path(b, &r.attrs);
    b.push(b',');
    route_fields_after_as_path(b, r);
}

fn route_fields_after_as_path(b: &mut Vec<u8>, r: &Route) {
    let a = &r.attrs;
    b.extend_from_slice(b"\"communities\":[");
    for (i, c) in a.communities.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        b.push(b'"');
        num(b, c >> 16);
        b.push(b':');
        num(b, c & 0xffff);
        b.push(b'"');
    }
    b.extend_from_slice(b"],\"extended_communities\":[");
    for (i, c) in a.extended_communities.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        b.push(b'"');
        for x in c {
            let _ = write!(b, "{x:02x}");
        }
        b.push(b'"');
    }
    b.extend_from_slice(b"],\"large_communities\":[");
    for (i, [x, y, z]) in a.large_communities.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        b.push(b'"');
        num(b, *x);
        b.push(b':');
        num(b, *y);
        b.push(b':');
        num(b, *z);
        b.push(b'"');
    }
    b.extend_from_slice(b"],\"local_pref\":");
    opt_num(b, a.local_pref);
    b.extend_from_slice(b",\"med\":");
    opt_num(b, a.med);
    b.extend_from_slice(b",\"next_hop\":");
    match r.next_hop {
        Some(n) => {
            b.push(b'"');
            ip(b, n);
            b.push(b'"');
        }
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"origin\":");
    b.extend_from_slice(match a.origin {
        Some(0) => b"\"igp\"",
        Some(1) => b"\"egp\"",
        Some(2) => b"\"incomplete\"",
        _ => b"null",
    });
    b.push(b',');
}

/// Replays every file in order, writing events to `out` and errors to `err`. I/O errors on `out`
/// end the replay (`Err`); problems with the input files are in the report's `errors`.
pub fn replay<W: Write, E: Write>(
    opts: &ReplayOptions,
    out: &mut W,
    err: &mut E,
) -> io::Result<ReplayReport> {
    // Two stages: reading and decoding on one thread, formatting and writing on this one (with a
    // helper thread formatting half of each JSON batch; see the benchmark in the README). Batches keep the channel cheap; the
    // bound keeps memory flat when the writer is slower.
    let (tx, rx) = mpsc::sync_channel::<Msg>(8);
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || decode_files(&opts.files, &tx));
        let mut report = ReplayReport::default();
        let mut writer = EventWriter::default();
        let mut helper = EventWriter::default();
        let mut split = (Vec::new(), Vec::new());
        let mut result = Ok(());
        for msg in rx.iter() {
            match msg {
                Msg::Events(events) => {
                    for ev in &events {
                        report.count(ev);
                    }
                    if result.is_ok() {
                        result = if events.len() >= 256 && opts.format == Format::Jsonl {
                            // Formatting is the slower stage: split the batch in two halves,
                            // format them side by side, write them in order.
                            let (a, b) = events.split_at(events.len() / 2);
                            split.0.clear();
                            split.1.clear();
                            let (first, second) = (&mut split.0, &mut split.1);
                            let helper = &mut helper;
                            let writer = &mut writer;
                            std::thread::scope(|s| {
                                let h = s.spawn(move || format_all(helper, first, a));
                                let mine = format_all(writer, second, b);
                                let theirs = h
                                    .join()
                                    .map_err(|_| io::Error::other("a formatting thread panicked"));
                                theirs.and_then(|r| r).and(mine)
                            })
                            .and_then(|()| {
                                writer.finish(out)?;
                                out.write_all(&split.0)?;
                                out.write_all(&split.1)
                            })
                        } else {
                            events
                                .iter()
                                .try_for_each(|ev| writer.write(out, opts.format, ev))
                        };
                    }
                }
                Msg::Error(m) => {
                    if result.is_ok() {
                        // Events before the error go out first.
                        result = writer
                            .finish(out)
                            .and_then(|()| out.flush())
                            .and_then(|()| writeln!(err, "replay: {m}"));
                    }
                    report.errors.push(m);
                }
            }
            if result.is_err() {
                break;
            }
        }
        // Dropping the receiver stops the producer at its next send.
        drop(rx);
        let decoder = producer
            .join()
            .map_err(|_| io::Error::other("the MRT decoding thread panicked"))?;
        result?;
        writer.finish(out)?;
        if opts.format == Format::Summary {
            write_summary(out, &decoder, &report)?;
        }
        out.flush()?;
        Ok(report)
    })
}

/// Formats `events` as JSON lines into `out`.
fn format_all(w: &mut EventWriter, out: &mut Vec<u8>, events: &[Event]) -> io::Result<()> {
    for ev in events {
        w.write(out, Format::Jsonl, ev)?;
    }
    w.finish(out)
}

enum Msg {
    Events(Vec<Event>),
    Error(String),
}

const BATCH: usize = 1024;

/// The first stage: every file's records, decoded, sent in batches. Returns the decoder for its
/// counts.
fn decode_files(files: &[PathBuf], tx: &mpsc::SyncSender<Msg>) -> Decoder {
    let mut decoder = Decoder::new();
    let mut batch = Vec::with_capacity(BATCH);
    // Sends the batch (if any) and then `then`; false once the receiver is gone.
    let send = |batch: &mut Vec<Event>, then: Option<String>| -> bool {
        if !batch.is_empty()
            && tx
                .send(Msg::Events(std::mem::replace(
                    batch,
                    Vec::with_capacity(BATCH),
                )))
                .is_err()
        {
            return false;
        }
        then.is_none_or(|m| tx.send(Msg::Error(m)).is_ok())
    };
    for path in files {
        let name = path.display();
        decoder.start_file();
        let (compression, input) = match File::open(path).and_then(open_decompressed) {
            Ok(v) => v,
            Err(e) => {
                if !send(&mut batch, Some(format!("{name}: cannot open: {e}"))) {
                    return decoder;
                }
                continue;
            }
        };
        let mut reader = RecordReader::new(input);
        // Offsets count the bytes of the MRT stream: after decompression for compressed files.
        let name = match compression {
            Compression::None => name.to_string(),
            c => format!(
                "{name} ({} offsets are of the decompressed stream)",
                c.name()
            ),
        };
        loop {
            let rec = match reader.next_record() {
                Ok(Some(rec)) => rec,
                Ok(None) => break,
                Err(e) => {
                    let recoverable = e.recoverable();
                    if !send(&mut batch, Some(describe(&name, &e, recoverable))) {
                        return decoder;
                    }
                    if recoverable {
                        continue;
                    }
                    break;
                }
            };
            let r = decoder.decode(&rec, &mut batch);
            let error = r.err().map(|e| describe(&name, &e, true));
            if (error.is_some() || batch.len() >= BATCH) && !send(&mut batch, error) {
                return decoder;
            }
        }
    }
    send(&mut batch, None);
    decoder
}

fn describe(file: &str, e: &MrtError, skipped: bool) -> String {
    if skipped {
        format!("{file}: {e}; record skipped")
    } else {
        format!("{file}: {e}; the rest of this file is not read")
    }
}

fn write_summary<W: Write>(
    out: &mut W,
    decoder: &Decoder,
    report: &ReplayReport,
) -> io::Result<()> {
    let s = decoder.stats();
    writeln!(out, "records:")?;
    for ((kind, subtype), n) in &s.records {
        writeln!(out, "  {} {n}", record_name(*kind, *subtype))?;
    }
    writeln!(out, "rib entries: {}", s.rib_entries)?;
    if !s.messages.is_empty() {
        let m: Vec<String> = s.messages.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(out, "bgp4mp messages: {}", m.join(", "))?;
    }
    if s.unknown_withdraws > 0 {
        writeln!(
            out,
            "withdrawals of prefixes not seen announced: {}",
            s.unknown_withdraws
        )?;
    }
    for (what, n) in &s.skipped {
        writeln!(out, "skipped: {what}: {n}")?;
    }
    for (what, n) in &s.bad {
        writeln!(out, "bad: {what}: {n}")?;
    }
    writeln!(out, "peers:")?;
    for (peer, t) in &report.peers {
        let fams: Vec<String> = t
            .families
            .iter()
            .map(|(f, c)| {
                format!(
                    "{f} announce {} withdraw {} attribute_change {} end_of_rib {}",
                    c.announce, c.withdraw, c.attribute_change, c.end_of_rib
                )
            })
            .collect();
        writeln!(
            out,
            "  {} AS{}: {}; session up {} down {}; update errors {}",
            peer.addr,
            peer.asn,
            if fams.is_empty() {
                "no routes".to_string()
            } else {
                fams.join("; ")
            },
            t.session_up,
            t.session_down,
            t.update_errors
        )?;
    }
    writeln!(
        out,
        "events {}, errors {}",
        report.events,
        report.errors.len()
    )?;
    Ok(())
}
