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
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::event::{Event, Peer, Route, RouteChange, RouteEvent, SessionEvent, Source};
use crate::iana::as_path;
use crate::mrt::{Decoder, MrtError, record_name};

mod pipeline;
mod rib_json;
use crate::update::PathAttributes;
use crate::watch::{Format, event_json, event_text};
use crate::wire::{Family, Prefix};

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
/// their received time, and often their originated time; and the date part of the last whole
/// second time, which the next one usually shares.
#[derive(Default)]
struct TimeCache {
    t: Option<SystemTime>,
    s: String,
    /// Days since the epoch and `YYYY-MM-DDT` of the last whole-second time.
    date: Option<(u64, [u8; 11])>,
}

impl TimeCache {
    fn get(&mut self, t: SystemTime) -> &str {
        if self.t != Some(t) {
            self.t = Some(t);
            self.s.clear();
            self.format(t);
        }
        &self.s
    }

    /// `watch`'s time format (the `time` crate's RFC 3339 in UTC). Whole seconds, the common case
    /// in MRT, are written here directly; anything else goes through `time`.
    fn format(&mut self, t: SystemTime) {
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        if d.subsec_nanos() != 0 || secs >= 253_402_300_800 {
            self.s.push_str(
                &time::OffsetDateTime::from(t)
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            );
            return;
        }
        let days = secs / 86_400;
        let date = match self.date {
            Some((d, text)) if d == days => text,
            _ => {
                let text = civil_date(days);
                self.date = Some((days, text));
                text
            }
        };
        let rem = secs % 86_400;
        let two = |v: u64| {
            let v = (v % 100) as u8;
            [char::from(b'0' + v / 10), char::from(b'0' + v % 10)]
        };
        self.s.extend(date.iter().map(|&c| char::from(c)));
        let [h0, h1] = two(rem / 3600);
        let [m0, m1] = two(rem % 3600 / 60);
        let [s0, s1] = two(rem % 60);
        self.s.extend([h0, h1, ':', m0, m1, ':', s0, s1, 'Z']);
    }
}

/// `YYYY-MM-DDT` of a day since the epoch (H. Hinnant's days-to-civil algorithm), for years
/// up to 9999.
fn civil_date(days: u64) -> [u8; 11] {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let d = |v: u64, p: u32| b'0' + ((v / 10u64.pow(p)) % 10) as u8;
    [
        d(year, 3),
        d(year, 2),
        d(year, 1),
        d(year, 0),
        b'-',
        d(month, 1),
        d(month, 0),
        b'-',
        d(day, 1),
        d(day, 0),
        b'T',
    ]
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
            Format::Jsonl => {
                match ev {
                    Event::Route(r) if !matches!(r.peer.source, Source::Bmp { .. }) => {
                        self.route_json(b, r)
                    }
                    _ => serde_json::to_writer(&mut *b, &event_json(ev))?,
                }
                b.push(b'\n');
            }
            Format::Text => writeln!(b, "{}", event_text(ev))?,
            Format::Summary => {}
        }
        Ok(())
    }

    fn route_json(&mut self, b: &mut Vec<u8>, e: &RouteEvent) {
        b.extend_from_slice(b"{\"afi_safi\":\"");
        b.extend_from_slice(e.family.name().as_bytes());
        b.extend_from_slice(b"\",");
        let (prefix, previous, type_name) = match &e.change {
            RouteChange::Announce { prefix, route } => {
                route_fields(b, route.next_hop, &route.attrs);
                (Some(prefix), None, "announce")
            }
            RouteChange::Withdraw { prefix, .. } => (Some(prefix), None, "withdraw"),
            RouteChange::AttributeChange {
                prefix,
                route,
                changed,
                previous,
            } => {
                b.extend_from_slice(b"\"as_path\":");
                write_as_path(b, &route.attrs);
                b.extend_from_slice(b",\"changed\":[");
                for (i, c) in changed.iter().enumerate() {
                    if i > 0 {
                        b.push(b',');
                    }
                    b.push(b'"');
                    b.extend_from_slice(c.name().as_bytes());
                    b.push(b'"');
                }
                b.extend_from_slice(b"],");
                route_fields_after_as_path(b, route.next_hop, &route.attrs);
                (Some(prefix), Some(&**previous), "attribute_change")
            }
            RouteChange::EndOfRib => (None, None, "end_of_rib"),
            // MRT replay never takes resync snapshots (only `run` does).
            RouteChange::Resync(_) => (None, None, "resync"),
        };
        self.tail(
            b,
            &e.peer,
            e.path_id,
            e.received,
            e.source_time,
            prefix,
            previous,
            type_name,
        );
    }

    /// The keys after the route's own (`path_id` to `type`), and the closing brace.
    #[allow(clippy::too_many_arguments)]
    fn tail(
        &mut self,
        b: &mut Vec<u8>,
        peer: &Peer,
        path_id: Option<u32>,
        received: SystemTime,
        source_time: Option<SystemTime>,
        prefix: Option<&Prefix>,
        previous: Option<&Route>,
        type_name: &str,
    ) {
        b.extend_from_slice(b"\"path_id\":");
        opt_num(b, path_id);
        b.extend_from_slice(b",\"peer\":\"");
        ip(b, peer.addr);
        b.extend_from_slice(b"\",\"peer_as\":");
        num(b, peer.asn);
        b.push(b',');
        if let Some(p) = prefix {
            b.extend_from_slice(b"\"prefix\":\"");
            ip(b, p.addr);
            b.push(b'/');
            num(b, u32::from(p.len));
            b.extend_from_slice(b"\",");
        }
        if let Some(previous) = previous {
            b.extend_from_slice(b"\"previous\":{");
            route_fields(b, previous.next_hop, &previous.attrs);
            // route_fields ends with a comma; close the object instead.
            b.pop();
            b.extend_from_slice(b"},");
        }
        b.extend_from_slice(b"\"received\":\"");
        b.extend_from_slice(self.received.get(received).as_bytes());
        b.extend_from_slice(b"\",\"source\":\"");
        b.extend_from_slice(peer.source.name().as_bytes());
        b.extend_from_slice(b"\",");
        if let Some(t) = source_time {
            b.extend_from_slice(b"\"source_time\":\"");
            b.extend_from_slice(self.source.get(t).as_bytes());
            b.extend_from_slice(b"\",");
        }
        b.extend_from_slice(b"\"type\":\"");
        b.extend_from_slice(type_name.as_bytes());
        b.extend_from_slice(b"\"}");
    }
}

fn num(b: &mut Vec<u8>, n: u32) {
    b.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
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
fn route_fields(b: &mut Vec<u8>, next_hop: Option<IpAddr>, a: &PathAttributes) {
    b.extend_from_slice(b"\"as_path\":");
    write_as_path(b, a);
    b.push(b',');
    route_fields_after_as_path(b, next_hop, a);
}

fn route_fields_after_as_path(b: &mut Vec<u8>, next_hop: Option<IpAddr>, a: &PathAttributes) {
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
    match next_hop {
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
