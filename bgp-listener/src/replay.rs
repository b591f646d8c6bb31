//! `replay`: MRT files (RFC 6396) printed as the events `watch` prints, for post-mortems and tests.
//!
//! Files are read one after the other as a single replay: BGP4MP Adj-RIBs-In carry over from one
//! file to the next (RIS and RouteViews cut update streams into 5- and 15-minute files). A framing
//! error (truncated file, absurd record length, bad compressed data) ends that file after every
//! good event before it; a malformed record body is reported and skipped. Either way the replay
//! goes on with the next file and the command exits non-zero at the end. See `mrt.rs` for what each
//! record type becomes.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::event::{Event, Peer, RouteChange, SessionEvent};
use crate::event_jsonl::JsonlWriter;
use crate::mrt::{Decoder, MrtError, record_name};

mod pipeline;
mod rib_json;
use crate::watch::{Format, event_text};
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
    /// Adds the totals of `other` (its errors are not taken: the writer collects those in order).
    fn merge(&mut self, other: ReplayReport) {
        self.events += other.events;
        for (peer, t) in other.peers {
            let mine = self.peers.entry(peer).or_default();
            for (family, f) in t.families {
                let m = mine.families.entry(family).or_default();
                m.announce += f.announce;
                m.withdraw += f.withdraw;
                m.attribute_change += f.attribute_change;
                m.end_of_rib += f.end_of_rib;
            }
            mine.session_up += t.session_up;
            mine.session_down += t.session_down;
            mine.update_errors += t.update_errors;
        }
    }

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

/// Writes events in the chosen format: JSON lines through [`JsonlWriter`] (byte for byte what
/// `watch::event_json` gives, at a fraction of its cost), text through `watch::event_text`.
#[derive(Default)]
pub struct EventWriter {
    buf: Vec<u8>,
    jsonl: JsonlWriter,
}

impl EventWriter {
    /// Output is gathered and written in chunks of about this size.
    const CHUNK: usize = 1 << 18;

    /// Formats `ev`; writes to `out` when a chunk is full. Call [`EventWriter::finish`] at the end.
    pub fn write<W: Write>(&mut self, out: &mut W, format: Format, ev: &Event) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.format(&mut buf, format, ev);
        self.buf = buf;
        r?;
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

    /// Appends `ev` in `format` (nothing for `summary`) to `b`.
    pub(crate) fn format(&mut self, b: &mut Vec<u8>, format: Format, ev: &Event) -> io::Result<()> {
        match format {
            Format::Jsonl => self.jsonl.line(b, ev),
            Format::Text => writeln!(b, "{}", event_text(ev))?,
            Format::Summary => {}
        }
        Ok(())
    }
}

/// Replays every file in order, writing events to `out` and errors to `err`. I/O errors on `out`
/// end the replay (`Err`); problems with the input files are in the report's `errors`. The work is
/// spread over threads (`replay/pipeline.rs` says how); the output is what a single thread
/// decoding and printing record after record would give.
pub fn replay<W: Write, E: Write>(
    opts: &ReplayOptions,
    out: &mut W,
    err: &mut E,
) -> io::Result<ReplayReport> {
    let inputs: Vec<_> = opts
        .files
        .iter()
        .map(|f| pipeline::Input::File(f))
        .collect();
    pipeline::run(&inputs, opts.format, out, err)
}

/// [`replay`] of MRT data in memory (named `(memory)` in errors), for tests and the fuzz target.
pub fn replay_bytes<W: Write, E: Write>(
    data: &[u8],
    format: Format,
    out: &mut W,
    err: &mut E,
) -> io::Result<ReplayReport> {
    pipeline::run(&[pipeline::Input::Bytes(data)], format, out, err)
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
