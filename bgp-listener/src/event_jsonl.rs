//! JSON lines of events, written by hand: byte for byte what [`crate::watch::event_json`] (a
//! `serde_json::Value` serialised) gives, for every event kind, at a small fraction of its cost.
//!
//! Why not serde: `watch --format jsonl` on a full table prints a million lines, and a `Value`
//! per event (a B-tree map, a dozen small allocations, merges, then the serialiser's walk) took
//! ten times as long as receiving and decoding the table (README, Performance). This writer
//! appends to a caller's reusable buffer, copies constant runs of keys whole, writes integers
//! through `itoa`, and formats once what repeats from line to line: the peer's fields, the times
//! (the events of one TCP read or MRT record share their received time), an IPv6 next hop, and
//! the route attributes of the last event when the next one carries the same attribute set and
//! next hop (the prefixes of one UPDATE do).
//!
//! `event_json` stays the reference. Keys are written in sorted order, as serde_json's map (a
//! `BTreeMap`; the workspace does not enable `preserve_order`) writes them; strings that are not
//! the listener's own constants or addresses (down reasons, resync marks, statistics names, RFC
//! 7606 reasons) go through serde_json's own string escaping, so escaping cannot drift.
//! `tests/event_jsonl.rs` compares the two on generated events of every kind,
//! `tests/mrt_pipeline.rs` on real and generated MRT files, and the `mrt`, `bgp_update` and `bmp`
//! fuzz targets on whatever the fuzzer makes. The replay's RIB entry lines
//! (`replay/rib_json.rs`) are built from the pieces here.

use std::io::Write as _;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::SystemTime;

use crate::event::{Event, Peer, Route, RouteChange, RouteEvent, SessionEvent, Source, Statistic};
use crate::iana::as_path;
use crate::update::{PathAttributes, Rfc7606Action};
use crate::wire::{Family, Prefix};

/// Writes events as JSON lines. One per output stream: its caches assume the events come in
/// order from the same few peers (they are only ever a speed-up; any event is written right).
#[derive(Default)]
pub struct JsonlWriter {
    received: TimeCache,
    source_time: TimeCache,
    at: TimeCache,
    /// The last peer and its `"peer":"A","peer_as":N,["peer_distinguisher":D,]`.
    peer: Option<(Peer, Vec<u8>)>,
    route: RouteCache,
    next_hop: NextHopText,
}

/// The route fields of the last announced or changed route, keyed by its attribute set (held, so
/// its address cannot be reused by another set while cached) and next hop.
#[derive(Default)]
struct RouteCache {
    key: Option<(Arc<PathAttributes>, Option<IpAddr>)>,
    /// `"as_path":X,` then `"communities":[...]` to `"origin":X,`.
    text: Vec<u8>,
    /// Where the `as_path` field ends in `text` (other keys sort in between).
    split: usize,
}

impl JsonlWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `ev` as one JSON line, newline included: the bytes of
    /// `format!("{}\n", event_json(ev))`.
    pub fn line(&mut self, b: &mut Vec<u8>, ev: &Event) {
        match ev {
            Event::Route(r) => self.route_event(b, r),
            Event::Session(s) => self.session_event(b, s),
        }
        b.push(b'\n');
    }

    /// Reads the attribute sets of `events` ahead of writing them, so that their cache misses
    /// overlap. Why: a set is usually new to the writing thread (the decoding thread made or
    /// found it), and writing it waits on three dependent misses in a row (the set, its AS path
    /// segments, their ASNs) per UPDATE; perf showed the writer spending a quarter of its time
    /// there. Here the loads of different events do not depend on each other, so the CPU has
    /// many in flight at once. Only a speed-up: call it on a batch before [`JsonlWriter::line`].
    pub fn prefetch<'a>(events: impl IntoIterator<Item = &'a Event>) {
        for ev in events {
            if let Event::Route(RouteEvent {
                change:
                    RouteChange::Announce { route, .. } | RouteChange::AttributeChange { route, .. },
                ..
            }) = ev
            {
                let a = &*route.attrs;
                let asn = a
                    .as_path
                    .as_ref()
                    .and_then(|p| p.first())
                    .and_then(|s| s.asns.first())
                    .copied();
                std::hint::black_box((asn, a.communities.first()));
            }
        }
    }

    fn route_event(&mut self, b: &mut Vec<u8>, e: &RouteEvent) {
        b.extend_from_slice(b"{\"afi_safi\":\"");
        b.extend_from_slice(e.family.name().as_bytes());
        b.extend_from_slice(b"\",");
        let (prefix, previous, type_name): (_, _, &[u8]) = match &e.change {
            RouteChange::Announce { prefix, route } => {
                let (as_path, rest) = self.route_text(route);
                b.extend_from_slice(as_path);
                bmp_router(b, &e.peer);
                b.extend_from_slice(rest);
                (Some(prefix), None, b"announce")
            }
            RouteChange::Withdraw { prefix, .. } => {
                bmp_router(b, &e.peer);
                (Some(prefix), None, b"withdraw")
            }
            RouteChange::AttributeChange {
                prefix,
                previous,
                route,
                changed,
            } => {
                let (as_path, rest) = self.route_text(route);
                b.extend_from_slice(as_path);
                bmp_router(b, &e.peer);
                b.extend_from_slice(b"\"changed\":");
                names(b, changed.iter().map(|c| c.name()));
                b.push(b',');
                b.extend_from_slice(rest);
                (Some(prefix), Some(previous), b"attribute_change")
            }
            RouteChange::EndOfRib => {
                bmp_router(b, &e.peer);
                (None, None, b"end_of_rib")
            }
            RouteChange::Resync(m) => {
                bmp_router(b, &e.peer);
                b.extend_from_slice(b"\"mark\":");
                json_str(b, &format!("{m:?}"));
                b.push(b',');
                (None, None, b"resync")
            }
        };
        b.extend_from_slice(b"\"path_id\":");
        opt_num(b, e.path_id);
        b.push(b',');
        self.cached_peer(b, &e.peer);
        if let Some(p) = prefix {
            b.extend_from_slice(b"\"prefix\":\"");
            prefix_text(b, p);
            b.extend_from_slice(b"\",");
        }
        if let Some(previous) = previous {
            b.extend_from_slice(b"\"previous\":{");
            as_path_field(b, &previous.attrs);
            attrs_after_as_path(b, previous.next_hop, &previous.attrs, &mut self.next_hop);
            // The run ends with a comma; the object ends instead.
            b.pop();
            b.extend_from_slice(b"},");
        }
        b.extend_from_slice(b"\"received\":\"");
        b.extend_from_slice(self.received.get(e.received));
        b.extend_from_slice(b"\",");
        source(b, &e.peer);
        if let Some(t) = e.source_time {
            b.extend_from_slice(b"\"source_time\":\"");
            b.extend_from_slice(self.source_time.get(t));
            b.extend_from_slice(b"\",");
        }
        b.extend_from_slice(b"\"type\":\"");
        b.extend_from_slice(type_name);
        b.extend_from_slice(b"\"}");
    }

    /// The route's fields, from the cache when the last route had the same set and next hop:
    /// (`"as_path":X,`, `"communities":...` to `"origin":X,`).
    fn route_text(&mut self, r: &Route) -> (&[u8], &[u8]) {
        let c = &mut self.route;
        let hit =
            matches!(&c.key, Some((set, nh)) if Arc::ptr_eq(set, &r.attrs) && *nh == r.next_hop);
        if !hit {
            c.text.clear();
            as_path_field(&mut c.text, &r.attrs);
            c.split = c.text.len();
            attrs_after_as_path(&mut c.text, r.next_hop, &r.attrs, &mut self.next_hop);
            c.key = Some((Arc::clone(&r.attrs), r.next_hop));
        }
        c.text.split_at_checked(c.split).unwrap_or((&[], &[]))
    }

    /// [`peer_fields`], from the cache when the peer is the last one.
    fn cached_peer(&mut self, b: &mut Vec<u8>, p: &Peer) {
        if let Some((last, text)) = &self.peer
            && last == p
        {
            b.extend_from_slice(text);
            return;
        }
        let mut text = Vec::with_capacity(64);
        peer_fields(&mut text, p);
        b.extend_from_slice(&text);
        self.peer = Some((*p, text));
    }

    /// `"at":"T",`
    fn at(&mut self, b: &mut Vec<u8>, t: SystemTime) {
        b.extend_from_slice(b"\"at\":\"");
        b.extend_from_slice(self.at.get(t));
        b.extend_from_slice(b"\",");
    }

    fn session_event(&mut self, b: &mut Vec<u8>, ev: &SessionEvent) {
        match ev {
            SessionEvent::Established {
                peer,
                at,
                negotiated: n,
            } => {
                b.extend_from_slice(b"{\"add_path\":");
                families(b, &n.add_path);
                b.push(b',');
                self.at(b, *at);
                bmp_router(b, peer);
                b.extend_from_slice(b"\"extended_messages\":");
                boolean(b, n.extended_messages);
                b.extend_from_slice(b",\"families\":");
                families(b, &n.families);
                b.extend_from_slice(b",\"four_octet_as\":");
                boolean(b, n.four_octet_as);
                b.extend_from_slice(b",\"graceful_restart\":");
                boolean(b, n.graceful_restart);
                b.extend_from_slice(b",\"hold_time\":");
                num(b, n.hold_time);
                b.push(b',');
                self.cached_peer(b, peer);
                b.extend_from_slice(b"\"peer_router_id\":\"");
                ip(b, IpAddr::V4(n.peer_router_id));
                b.extend_from_slice(b"\",");
                source(b, peer);
                b.extend_from_slice(b"\"type\":\"session_established\"}");
            }
            SessionEvent::Down {
                peer,
                at,
                reason,
                routes_lost,
                routes_stale,
                stale_families,
            } => {
                b.push(b'{');
                self.at(b, *at);
                bmp_router(b, peer);
                self.cached_peer(b, peer);
                b.extend_from_slice(b"\"reason\":");
                // Session events are rare: the reference's own wording, not a copy of it.
                json_str(b, &crate::watch::down_reason(reason));
                b.extend_from_slice(b",\"routes_lost\":");
                num(b, *routes_lost);
                b.extend_from_slice(b",\"routes_stale\":");
                num(b, *routes_stale);
                b.push(b',');
                source(b, peer);
                b.extend_from_slice(b"\"stale_families\":");
                families(b, stale_families);
                b.extend_from_slice(b",\"type\":\"session_down\"}");
            }
            SessionEvent::StaleDropped {
                peer,
                at,
                family,
                routes,
                reason,
            } => {
                afi_safi_first(b, *family);
                self.at(b, *at);
                bmp_router(b, peer);
                self.cached_peer(b, peer);
                b.extend_from_slice(b"\"reason\":");
                json_str(b, reason.name());
                b.extend_from_slice(b",\"routes\":");
                num(b, *routes);
                b.push(b',');
                source(b, peer);
                b.extend_from_slice(b"\"type\":\"stale_dropped\"}");
            }
            SessionEvent::PrefixLimit {
                peer,
                at,
                family,
                count,
                limit,
                teardown,
            } => {
                afi_safi_first(b, *family);
                self.at(b, *at);
                bmp_router(b, peer);
                b.extend_from_slice(b"\"count\":");
                num(b, *count);
                b.extend_from_slice(b",\"limit\":");
                num(b, *limit);
                b.push(b',');
                self.cached_peer(b, peer);
                source(b, peer);
                b.extend_from_slice(b"\"teardown\":");
                boolean(b, *teardown);
                b.extend_from_slice(b",\"type\":\"prefix_limit\"}");
            }
            SessionEvent::UpdateError { peer, at, action } => {
                let (act, type_code, reason, family): (&[u8], _, _, _) = match action {
                    Rfc7606Action::AttributeDiscard { type_code, reason } => {
                        (b"attribute-discard", Some(*type_code), *reason, None)
                    }
                    Rfc7606Action::TreatAsWithdraw { type_code, reason } => {
                        (b"treat-as-withdraw", *type_code, *reason, None)
                    }
                    Rfc7606Action::AfiSafiDisable {
                        family,
                        type_code,
                        reason,
                    } => (
                        b"afi-safi-disable",
                        Some(*type_code),
                        *reason,
                        Some(*family),
                    ),
                };
                b.extend_from_slice(b"{\"action\":\"");
                b.extend_from_slice(act);
                b.extend_from_slice(b"\",");
                if let Some(f) = family {
                    b.extend_from_slice(b"\"afi_safi\":\"");
                    b.extend_from_slice(f.name().as_bytes());
                    b.extend_from_slice(b"\",");
                }
                self.at(b, *at);
                b.extend_from_slice(b"\"attribute\":");
                opt_num(b, type_code);
                b.push(b',');
                bmp_router(b, peer);
                self.cached_peer(b, peer);
                b.extend_from_slice(b"\"reason\":");
                json_str(b, reason);
                b.push(b',');
                source(b, peer);
                b.extend_from_slice(b"\"type\":\"update_error\"}");
            }
            SessionEvent::Statistics {
                peer,
                at,
                source_time,
                stats,
            } => {
                b.push(b'{');
                self.at(b, *at);
                bmp_router(b, peer);
                self.cached_peer(b, peer);
                source(b, peer);
                b.extend_from_slice(b"\"source_time\":");
                match source_time {
                    Some(t) => {
                        b.push(b'"');
                        b.extend_from_slice(self.source_time.get(*t));
                        b.push(b'"');
                    }
                    None => b.extend_from_slice(b"null"),
                }
                b.extend_from_slice(b",\"stats\":[");
                for (i, s) in stats.iter().enumerate() {
                    if i > 0 {
                        b.push(b',');
                    }
                    statistic(b, s);
                }
                b.extend_from_slice(b"],\"type\":\"statistics\"}");
            }
        }
    }
}

/// One statistics counter: `{"afi":..,"name":..,"raw":..,"safi":..,"type":..,"value":..}`.
fn statistic(b: &mut Vec<u8>, s: &Statistic) {
    b.extend_from_slice(b"{\"afi\":");
    opt_num(b, s.afi_safi.map(|(a, _)| a));
    b.extend_from_slice(b",\"name\":");
    match crate::bmp::stat_name(s.stat_type) {
        Some(name) => json_str(b, name),
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"raw\":");
    if s.value.is_none() {
        b.push(b'"');
        hex(b, &s.raw);
        b.push(b'"');
    } else {
        b.extend_from_slice(b"null");
    }
    b.extend_from_slice(b",\"safi\":");
    opt_num(b, s.afi_safi.map(|(_, x)| x));
    b.extend_from_slice(b",\"type\":");
    num(b, s.stat_type);
    b.extend_from_slice(b",\"value\":");
    opt_num(b, s.value);
    b.push(b'}');
}

/// `{"afi_safi":"F",`
fn afi_safi_first(b: &mut Vec<u8>, f: Family) {
    b.extend_from_slice(b"{\"afi_safi\":\"");
    b.extend_from_slice(f.name().as_bytes());
    b.extend_from_slice(b"\",");
}

/// `["ipv4-unicast",...]`
fn families(b: &mut Vec<u8>, fs: &[Family]) {
    names(b, fs.iter().map(|f| f.name()));
}

/// A JSON array of our own constant names (no escaping needed): `["a","b"]`.
fn names<'a>(b: &mut Vec<u8>, it: impl Iterator<Item = &'a str>) {
    b.push(b'[');
    for (i, n) in it.enumerate() {
        if i > 0 {
            b.push(b',');
        }
        b.push(b'"');
        b.extend_from_slice(n.as_bytes());
        b.push(b'"');
    }
    b.push(b']');
}

fn boolean(b: &mut Vec<u8>, v: bool) {
    b.extend_from_slice(if v { b"true" } else { b"false" });
}

/// `"peer":"A","peer_as":N,` and `"peer_distinguisher":D,` for a BMP peer with one.
pub(crate) fn peer_fields(b: &mut Vec<u8>, p: &Peer) {
    b.extend_from_slice(b"\"peer\":\"");
    ip(b, p.addr);
    b.extend_from_slice(b"\",\"peer_as\":");
    num(b, p.asn);
    b.push(b',');
    if let Source::Bmp { distinguisher, .. } = p.source
        && distinguisher != 0
    {
        b.extend_from_slice(b"\"peer_distinguisher\":");
        num(b, distinguisher);
        b.push(b',');
    }
}

/// `"bmp_router":"R",` for a BMP source; nothing otherwise.
fn bmp_router(b: &mut Vec<u8>, p: &Peer) {
    if let Source::Bmp { router, .. } = p.source {
        b.extend_from_slice(b"\"bmp_router\":\"");
        ip(b, router);
        b.extend_from_slice(b"\",");
    }
}

/// `"source":"S",`
fn source(b: &mut Vec<u8>, p: &Peer) {
    b.extend_from_slice(b"\"source\":\"");
    b.extend_from_slice(p.source.name().as_bytes());
    b.extend_from_slice(b"\",");
}

/// A JSON string as serde_json writes it (its own escaper: quotes, backslashes, control
/// characters; everything else, `U+2028` included, as it is).
pub(crate) fn json_str(b: &mut Vec<u8>, s: &str) {
    // Serialising a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *b, s);
}

pub(crate) fn num<I: itoa::Integer>(b: &mut Vec<u8>, n: I) {
    b.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

pub(crate) fn opt_num<I: itoa::Integer>(b: &mut Vec<u8>, v: Option<I>) {
    match v {
        Some(n) => num(b, n),
        None => b.extend_from_slice(b"null"),
    }
}

/// An address as its `Display` writes it.
pub(crate) fn ip(b: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(a) => {
            let [w, x, y, z] = a.octets();
            num(b, w);
            b.push(b'.');
            num(b, x);
            b.push(b'.');
            num(b, y);
            b.push(b'.');
            num(b, z);
        }
        IpAddr::V6(a) => {
            let _ = write!(b, "{a}");
        }
    }
}

/// A prefix as its `Display` writes it: `ADDR/LEN`.
pub(crate) fn prefix_text(b: &mut Vec<u8>, p: &Prefix) {
    ip(b, p.addr);
    b.push(b'/');
    num(b, p.len);
}

/// Lower-case hex of every byte, as `{:02x}` writes it.
fn hex(b: &mut Vec<u8>, bytes: &[u8]) {
    for x in bytes {
        b.extend_from_slice(HEX.get(usize::from(*x)).unwrap_or(b"??"));
    }
}

const HEX: [[u8; 2]; 256] = {
    let digits = *b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [digits[i >> 4], digits[i & 15]];
        i += 1;
    }
    t
};

/// `"as_path":X,` where X is `PathAttributes::as_path_string` as a JSON string, or `null`.
pub(crate) fn as_path_field(b: &mut Vec<u8>, a: &PathAttributes) {
    let Some(segs) = &a.as_path else {
        b.extend_from_slice(b"\"as_path\":null,");
        return;
    };
    b.extend_from_slice(b"\"as_path\":\"");
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
    b.extend_from_slice(b"\",");
}

/// The route's fields after `as_path`, in key order, each followed by a comma:
/// `"communities"`, `"extended_communities"`, `"large_communities"`, `"local_pref"`, `"med"`,
/// `"next_hop"`, `"origin"`.
pub(crate) fn attrs_after_as_path(
    b: &mut Vec<u8>,
    next_hop: Option<IpAddr>,
    a: &PathAttributes,
    v6: &mut NextHopText,
) {
    b.extend_from_slice(b"\"communities\":[");
    for (i, c) in a.communities.iter().enumerate() {
        b.extend_from_slice(if i > 0 { b",\"" } else { b"\"" });
        num(b, c >> 16);
        b.push(b':');
        num(b, c & 0xffff);
        b.push(b'"');
    }
    if a.extended_communities.is_empty() && a.large_communities.is_empty() {
        b.extend_from_slice(
            b"],\"extended_communities\":[],\"large_communities\":[],\"local_pref\":",
        );
    } else {
        b.extend_from_slice(b"],\"extended_communities\":[");
        for (i, c) in a.extended_communities.iter().enumerate() {
            b.extend_from_slice(if i > 0 { b",\"" } else { b"\"" });
            hex(b, c);
            b.push(b'"');
        }
        b.extend_from_slice(b"],\"large_communities\":[");
        for (i, [x, y, z]) in a.large_communities.iter().enumerate() {
            b.extend_from_slice(if i > 0 { b",\"" } else { b"\"" });
            num(b, *x);
            b.push(b':');
            num(b, *y);
            b.push(b':');
            num(b, *z);
            b.push(b'"');
        }
        b.extend_from_slice(b"],\"local_pref\":");
    }
    opt_num(b, a.local_pref);
    b.extend_from_slice(b",\"med\":");
    opt_num(b, a.med);
    match next_hop {
        Some(IpAddr::V4(n)) => {
            b.extend_from_slice(b",\"next_hop\":\"");
            ip(b, IpAddr::V4(n));
            b.push(b'"');
        }
        Some(IpAddr::V6(n)) => {
            b.extend_from_slice(b",\"next_hop\":\"");
            b.extend_from_slice(v6.get(n));
            b.push(b'"');
        }
        None => b.extend_from_slice(b",\"next_hop\":null"),
    }
    b.extend_from_slice(match a.origin {
        Some(0) => b",\"origin\":\"igp\",",
        Some(1) => b",\"origin\":\"egp\",",
        Some(2) => b",\"origin\":\"incomplete\",",
        _ => b",\"origin\":null,",
    });
}

/// The text of the last IPv6 next hop: a peer's next hop repeats from route to route, and
/// IPv6's `Display` (zero-run compression) is the slowest piece of a line.
#[derive(Default)]
pub(crate) struct NextHopText {
    last: Option<(Ipv6Addr, Vec<u8>)>,
}

impl NextHopText {
    fn get(&mut self, n: Ipv6Addr) -> &[u8] {
        if self.last.as_ref().is_none_or(|(last, _)| *last != n) {
            let mut text = Vec::with_capacity(39);
            ip(&mut text, IpAddr::V6(n));
            self.last = Some((n, text));
        }
        self.last.as_ref().map_or(&[], |(_, text)| text)
    }
}

/// The last time formatted, RFC 3339 in UTC as `watch` prints it (the `time` crate's
/// `Rfc3339`: fractional seconds with trailing zeros cut, none for whole seconds), and the date
/// part of the last day, which the next time usually shares.
#[derive(Default)]
pub(crate) struct TimeCache {
    t: Option<SystemTime>,
    s: Vec<u8>,
    /// Days since the epoch and `YYYY-MM-DDT` of the last time.
    date: Option<(u64, [u8; 11])>,
}

impl TimeCache {
    pub(crate) fn get(&mut self, t: SystemTime) -> &[u8] {
        if self.t != Some(t) {
            self.t = Some(t);
            self.s.clear();
            self.format(t);
        }
        &self.s
    }

    /// Times from 1970 to 9999 are written here; anything else (never seen from a clock or an
    /// MRT file) goes through `watch::ts` as `watch::event_json` does.
    fn format(&mut self, t: SystemTime) {
        let Some(d) = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .filter(|d| d.as_secs() < 253_402_300_800)
        else {
            self.s.extend_from_slice(crate::watch::ts(t).as_bytes());
            return;
        };
        let secs = d.as_secs();
        let days = secs / 86_400;
        let date = match self.date {
            Some((d, text)) if d == days => text,
            _ => {
                let text = civil_date(days);
                self.date = Some((days, text));
                text
            }
        };
        self.s.extend_from_slice(&date);
        let rem = secs % 86_400;
        let two = |v: u64| {
            let v = (v % 100) as u8;
            [b'0' + v / 10, b'0' + v % 10]
        };
        let [h0, h1] = two(rem / 3600);
        let [m0, m1] = two(rem % 3600 / 60);
        let [s0, s1] = two(rem % 60);
        self.s
            .extend_from_slice(&[h0, h1, b':', m0, m1, b':', s0, s1]);
        let nanos = d.subsec_nanos();
        if nanos != 0 {
            let mut digits = [b'0'; 9];
            let mut n = nanos;
            for c in digits.iter_mut().rev() {
                *c = b'0' + (n % 10) as u8;
                n /= 10;
            }
            // The `time` crate cuts trailing zeros (nanos is not 0, so this ends).
            let (mut used, mut n) = (9, nanos);
            while n % 10 == 0 {
                n /= 10;
                used -= 1;
            }
            self.s.push(b'.');
            self.s
                .extend_from_slice(digits.get(..used).unwrap_or(&digits));
        }
        self.s.push(b'Z');
    }
}

/// `YYYY-MM-DDT` of a day since the epoch (H. Hinnant's days-to-civil algorithm), for years up
/// to 9999.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_match_the_time_crate_to_the_nanosecond() {
        let mut c = TimeCache::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut cases = vec![
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH + Duration::new(253_402_300_799, 999_999_999),
            SystemTime::UNIX_EPOCH + Duration::new(253_402_300_800, 0),
            SystemTime::UNIX_EPOCH + Duration::new(u64::MAX / 2, 3),
            SystemTime::UNIX_EPOCH - Duration::new(400_000_000_000, 0),
            SystemTime::UNIX_EPOCH - Duration::new(86_400 * 400, 5),
            SystemTime::UNIX_EPOCH + Duration::new(951_782_400, 100_000_000),
            SystemTime::UNIX_EPOCH + Duration::new(1_800_000_000, 1),
            SystemTime::UNIX_EPOCH + Duration::new(1_800_000_000, 10),
            SystemTime::UNIX_EPOCH + Duration::new(1_800_000_000, 120_000),
        ];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = x % 253_402_300_800;
            let nanos = match x % 4 {
                0 => 0,
                1 => (x >> 20) as u32 % 1_000_000_000,
                2 => (x >> 20) as u32 % 1000 * 1_000_000,
                _ => (x >> 20) as u32 % 1_000_000 * 1000,
            };
            cases.push(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos));
        }
        for t in cases {
            let got = String::from_utf8(c.get(t).to_vec()).expect("ascii");
            assert_eq!(got, crate::watch::ts(t), "{t:?}");
        }
    }
}
