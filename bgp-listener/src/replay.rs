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
use std::path::PathBuf;

use crate::event::{Event, Peer, RouteChange, SessionEvent};
use crate::mrt::{Decoder, MrtError, RecordReader, open_decompressed};
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
        }
    }
}

fn write_event<W: Write>(out: &mut W, format: Format, ev: &Event) -> io::Result<()> {
    match format {
        Format::Jsonl => {
            serde_json::to_writer(&mut *out, &event_json(ev))?;
            out.write_all(b"\n")
        }
        Format::Text => writeln!(out, "{}", event_text(ev)),
        Format::Summary => Ok(()),
    }
}

/// Replays every file in order, writing events to `out` and errors to `err`. I/O errors on `out`
/// end the replay (`Err`); problems with the input files are in the report's `errors`.
pub fn replay<W: Write, E: Write>(
    opts: &ReplayOptions,
    out: &mut W,
    err: &mut E,
) -> io::Result<ReplayReport> {
    let mut report = ReplayReport::default();
    let mut decoder = Decoder::new();
    let mut events = Vec::new();
    for path in &opts.files {
        let name = path.display();
        decoder.start_file();
        let input = match File::open(path).and_then(open_decompressed) {
            Ok((_, r)) => r,
            Err(e) => {
                let msg = format!("{name}: cannot open: {e}");
                writeln!(err, "replay: {msg}")?;
                report.errors.push(msg);
                continue;
            }
        };
        let mut reader = RecordReader::new(input);
        loop {
            let rec = match reader.next_record() {
                Ok(Some(rec)) => rec,
                Ok(None) => break,
                Err(e) => {
                    let recoverable = e.recoverable();
                    let msg = describe(&name.to_string(), &e, recoverable);
                    writeln!(err, "replay: {msg}")?;
                    report.errors.push(msg);
                    if recoverable {
                        continue;
                    }
                    break;
                }
            };
            events.clear();
            let r = decoder.decode(&rec, &mut events);
            for ev in &events {
                report.count(ev);
                write_event(out, opts.format, ev)?;
            }
            if let Err(e) = r {
                let msg = describe(&name.to_string(), &e, true);
                writeln!(err, "replay: {msg}")?;
                report.errors.push(msg);
            }
        }
    }
    if opts.format == Format::Summary {
        write_summary(out, &decoder, &report)?;
    }
    out.flush()?;
    Ok(report)
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
    for (name, n) in &s.records {
        writeln!(out, "  {name} {n}")?;
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
