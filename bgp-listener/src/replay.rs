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
use std::time::SystemTime;

use crate::event::{Event, Peer, Route, RouteChange, RouteEvent, SessionEvent, Source};
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

/// Writes events in the chosen format. JSON lines of route events from MRT and session peers are
/// written directly, byte for byte what `watch::event_json` gives (the test
/// `fast_json_is_byte_identical_to_event_json` holds them together): building a `serde_json::Value`
/// map per event, with its merges, was most of a replay's time. Everything else goes through
/// `event_json`/`event_text` themselves.
#[derive(Default)]
pub struct EventWriter {
    buf: Vec<u8>,
    times: [(Option<SystemTime>, String); 2],
}

impl EventWriter {
    pub fn write<W: Write>(&mut self, out: &mut W, format: Format, ev: &Event) -> io::Result<()> {
        match format {
            Format::Jsonl => {
                self.buf.clear();
                match ev {
                    Event::Route(r) if !matches!(r.peer.source, Source::Bmp { .. }) => {
                        self.route_json(r)
                    }
                    _ => {
                        serde_json::to_writer(&mut self.buf, &event_json(ev))?;
                    }
                }
                self.buf.push(b'\n');
                out.write_all(&self.buf)
            }
            Format::Text => writeln!(out, "{}", event_text(ev)),
            Format::Summary => Ok(()),
        }
    }

    /// RFC 3339 as `watch` prints it, remembering the last two times (an MRT record's entries
    /// share their received time, and often their originated time).
    fn ts(&mut self, t: SystemTime) -> &str {
        let i = match &self.times {
            [(Some(a), _), _] if *a == t => 0,
            [_, (Some(b), _)] if *b == t => 1,
            _ => {
                self.times.swap(0, 1);
                self.times[0] = (
                    Some(t),
                    time::OffsetDateTime::from(t)
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                );
                0
            }
        };
        &self.times[i].1
    }

    fn route_json(&mut self, e: &RouteEvent) {
        let received = self.ts(e.received).to_owned();
        let source_time = e.source_time.map(|t| self.ts(t).to_owned());
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
                let _ = write!(b, "\"as_path\":");
                opt_str(
                    b,
                    route
                        .attrs
                        .as_path
                        .as_ref()
                        .map(|_| route.attrs.as_path_string()),
                );
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
        };
        b.extend_from_slice(b"\"path_id\":");
        match e.path_id {
            Some(id) => {
                let _ = write!(b, "{id}");
            }
            None => b.extend_from_slice(b"null"),
        }
        let _ = write!(
            b,
            ",\"peer\":\"{}\",\"peer_as\":{},",
            e.peer.addr, e.peer.asn
        );
        if let Some(p) = prefix {
            let _ = write!(b, "\"prefix\":\"{p}\",");
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

fn opt_str(b: &mut Vec<u8>, v: Option<String>) {
    match v {
        Some(s) => {
            b.push(b'"');
            b.extend_from_slice(s.as_bytes());
            b.push(b'"');
        }
        None => b.extend_from_slice(b"null"),
    }
}

fn opt_num(b: &mut Vec<u8>, v: Option<u32>) {
    match v {
        Some(n) => {
            let _ = write!(b, "{n}");
        }
        None => b.extend_from_slice(b"null"),
    }
}

/// `watch`'s route fields, in key order, each followed by a comma.
fn route_fields(b: &mut Vec<u8>, r: &Route) {
    b.extend_from_slice(b"\"as_path\":");
    opt_str(
        b,
        r.attrs.as_path.as_ref().map(|_| r.attrs.as_path_string()),
    );
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
        let _ = write!(b, "\"{}:{}\"", c >> 16, c & 0xffff);
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
        let _ = write!(b, "\"{x}:{y}:{z}\"");
    }
    b.extend_from_slice(b"],\"local_pref\":");
    opt_num(b, a.local_pref);
    b.extend_from_slice(b",\"med\":");
    opt_num(b, a.med);
    b.extend_from_slice(b",\"next_hop\":");
    opt_str(b, r.next_hop.map(|n| n.to_string()));
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
    let mut report = ReplayReport::default();
    let mut decoder = Decoder::new();
    let mut events = Vec::new();
    let mut writer = EventWriter::default();
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
                writer.write(out, opts.format, ev)?;
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
