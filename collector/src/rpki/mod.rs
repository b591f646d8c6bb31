//! RPKI route origin validation (RFC 6811) against a VRP table kept in sync over RTR.
//!
//! The VRP set is public data, not a tenant's: one table per collector, read by the API (any
//! authenticated tenant), `/metrics`, and the alert engine through [`RpkiTable::validate`].
//!
//! The table is an immutable [`VrpSet`] swapped in whole after each RTR End of Data, so readers
//! never see half an update and never wait for the RTR task. A lookup masks the route's address
//! to each VRP length present in the set (at most 33 or 129, in practice about 17 for IPv4 and
//! 30 for IPv6) and binary-searches that length's sorted slice: a few microseconds for a full
//! ~500k VRP set, with 24 bytes per VRP.

pub mod client;
pub mod rtr;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Arc, Mutex, RwLock},
};

pub use client::spawn;

/// RFC 6811 validation state of a route origin, plus `Unknown` while no VRP table is loaded (no
/// RTR server configured, not synced yet, or the data expired): "no data" is not "not found".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RpkiState {
    Unknown,
    NotFound,
    Valid,
    Invalid,
}

impl RpkiState {
    pub fn to_pb(self) -> foureyes_proto::v1::RpkiState {
        use foureyes_proto::v1::RpkiState as P;
        match self {
            Self::Unknown => P::Unknown,
            Self::NotFound => P::NotFound,
            Self::Valid => P::Valid,
            Self::Invalid => P::Invalid,
        }
    }
}

/// One Validated ROA Payload: `asn` may originate `addr/len` and its more-specifics up to
/// `max_len`. `addr` has its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vrp {
    pub addr: IpAddr,
    pub len: u8,
    pub max_len: u8,
    pub asn: u32,
}

impl Vrp {
    /// A VRP with host bits cleared, or `None` when the lengths are impossible for the family
    /// (`len` beyond its width, `max_len` below `len` or beyond the width).
    pub fn new(addr: IpAddr, len: u8, max_len: u8, asn: u32) -> Option<Self> {
        let w = width(&addr);
        if len > w || max_len < len || max_len > w {
            return None;
        }
        Some(Self {
            addr: from_bits(&addr, bits(&addr) & mask(w, len)),
            len,
            max_len,
            asn,
        })
    }

    pub fn to_pb(self) -> foureyes_proto::v1::Vrp {
        foureyes_proto::v1::Vrp {
            prefix: format!("{}/{}", self.addr, self.len),
            max_length: self.max_len.into(),
            asn: self.asn,
        }
    }
}

fn width(a: &IpAddr) -> u8 {
    if a.is_ipv4() { 32 } else { 128 }
}

fn bits(a: &IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u32::from(*v).into(),
        IpAddr::V6(v) => u128::from(*v),
    }
}

fn from_bits(like: &IpAddr, b: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(b as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(b)),
    }
}

/// The network mask of a `len`-bit prefix in a `w`-bit family, right-aligned in a u128.
fn mask(w: u8, len: u8) -> u128 {
    let len = len.min(w);
    if len == 0 {
        return 0;
    }
    // len >= 1, so the host part is at most 127 bits and the shift cannot overflow.
    let host = u32::from(w - len);
    let all: u128 = if w >= 128 {
        u128::MAX
    } else {
        (1u128 << w) - 1
    };
    all & !((1u128 << host) - 1)
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    net: u128,
    max_len: u8,
    asn: u32,
}

/// One address family: per VRP length present, its entries sorted by network.
#[derive(Default, Debug)]
struct Family {
    by_len: Vec<(u8, Vec<Entry>)>,
}

impl Family {
    fn build(w: u8, vrps: impl Iterator<Item = Vrp>) -> Self {
        let mut lens: Vec<Vec<Entry>> = vec![Vec::new(); usize::from(w) + 1];
        for v in vrps {
            if let Some(slot) = lens.get_mut(usize::from(v.len)) {
                slot.push(Entry {
                    net: bits(&v.addr),
                    max_len: v.max_len,
                    asn: v.asn,
                });
            }
        }
        let by_len = lens
            .into_iter()
            .enumerate()
            .filter(|(_, e)| !e.is_empty())
            .map(|(l, mut e)| {
                e.sort_unstable_by_key(|x| x.net);
                (l as u8, e)
            })
            .collect();
        Self { by_len }
    }

    /// Every VRP whose prefix covers `net/len` (the route's own length included).
    fn covering(&self, w: u8, net: u128, len: u8, mut f: impl FnMut(u8, &Entry)) {
        for (vl, entries) in &self.by_len {
            if *vl > len {
                break;
            }
            let key = net & mask(w, *vl);
            let start = entries.partition_point(|e| e.net < key);
            for e in entries.iter().skip(start).take_while(|e| e.net == key) {
                f(*vl, e);
            }
        }
    }
}

/// An immutable, indexed VRP set.
#[derive(Default, Debug)]
pub struct VrpSet {
    v4: Family,
    v6: Family,
    count: usize,
}

/// The VRPs that decided a validation, as Routinator's validity API groups them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Matches {
    /// Covering VRPs with this origin and a max length the route fits: they make it Valid.
    pub matched: Vec<Vrp>,
    /// Covering VRPs of another AS (AS 0 included).
    pub unmatched_as: Vec<Vrp>,
    /// Covering VRPs of this AS whose max length the route exceeds.
    pub unmatched_length: Vec<Vrp>,
}

impl VrpSet {
    pub fn new<I: IntoIterator<Item = Vrp>>(vrps: I) -> Self {
        let (v4, v6): (Vec<Vrp>, Vec<Vrp>) = vrps.into_iter().partition(|v| v.addr.is_ipv4());
        let count = v4.len() + v6.len();
        Self {
            v4: Family::build(32, v4.into_iter()),
            v6: Family::build(128, v6.into_iter()),
            count,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn walk(&self, prefix: IpAddr, len: u8, f: impl FnMut(u8, &Entry)) -> bool {
        let w = width(&prefix);
        if len > w {
            return false;
        }
        let fam = if prefix.is_ipv4() { &self.v4 } else { &self.v6 };
        fam.covering(w, bits(&prefix) & mask(w, len), len, f);
        true
    }

    /// RFC 6811 section 2: a route is Valid when a covering VRP has its origin AS and a max length
    /// at least its length; Invalid when VRPs cover it but none matches; NotFound when none covers
    /// it. A VRP for AS 0 (RFC 6483 section 4) covers but never matches, so it makes a route
    /// Invalid unless another VRP makes it Valid; a route whose origin is 0 (none, or an AS_SET)
    /// matches nothing. A length beyond the family's width covers nothing: NotFound.
    pub fn validate(&self, prefix: IpAddr, len: u8, origin_as: u32) -> RpkiState {
        let mut covered = false;
        let mut valid = false;
        self.walk(prefix, len, |_, e| {
            covered = true;
            if e.asn != 0 && e.asn == origin_as && len <= e.max_len {
                valid = true;
            }
        });
        match (covered, valid) {
            (_, true) => RpkiState::Valid,
            (true, false) => RpkiState::Invalid,
            (false, _) => RpkiState::NotFound,
        }
    }

    /// The state and the covering VRPs, grouped by why they did or did not match.
    pub fn explain(&self, prefix: IpAddr, len: u8, origin_as: u32) -> (RpkiState, Matches) {
        let mut m = Matches::default();
        let w = width(&prefix);
        self.walk(prefix, len, |vl, e| {
            let v = Vrp {
                addr: from_bits(&prefix, e.net),
                len: vl,
                max_len: e.max_len,
                asn: e.asn,
            };
            if e.asn == 0 || e.asn != origin_as {
                m.unmatched_as.push(v);
            } else if len > e.max_len {
                m.unmatched_length.push(v);
            } else {
                m.matched.push(v);
            }
        });
        let state = if len > w {
            RpkiState::NotFound
        } else if !m.matched.is_empty() {
            RpkiState::Valid
        } else if m.unmatched_as.is_empty() && m.unmatched_length.is_empty() {
            RpkiState::NotFound
        } else {
            RpkiState::Invalid
        };
        (state, m)
    }
}

/// Where the RTR session stands, for the API and `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// An RTR server is configured.
    pub configured: bool,
    pub session_id: Option<u16>,
    pub serial: Option<u32>,
    /// Negotiated RTR version (0 or 1).
    pub version: Option<u8>,
    /// Collector time (ms since the epoch) of the last End of Data applied.
    pub last_sync_ms: Option<i64>,
    pub connected: bool,
    /// Times the table was dropped because the data expired.
    pub expirations: u64,
}

/// The collector's VRP table: `None` until the first full load, and again after expiry.
pub struct RpkiTable {
    set: RwLock<Option<Arc<VrpSet>>>,
    status: Mutex<SyncStatus>,
    /// Bumped on every swap (each End of Data, a cache reset's reload, expiry): VRPs change
    /// without any route changing, so whoever judges routes by them (the alert engine's
    /// `rpki_invalid` rules) follows this instead of the route feed.
    generation: tokio::sync::watch::Sender<u64>,
}

impl Default for RpkiTable {
    fn default() -> Self {
        Self {
            set: RwLock::default(),
            status: Mutex::default(),
            generation: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl RpkiTable {
    pub fn new(configured: bool) -> Self {
        let t = Self::default();
        t.update_status(|s| s.configured = configured);
        t
    }

    /// The table's generation (0 before the first swap); see [`RpkiTable::subscribe`].
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// A receiver that sees each new generation: the table was swapped (or dropped).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The current set, if one is loaded.
    pub fn current(&self) -> Option<Arc<VrpSet>> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swaps the whole set (`None` drops it: validation says Unknown again).
    pub fn replace(&self, set: Option<Arc<VrpSet>>) {
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = set;
        // After the swap, so a reader woken by the new generation sees the new set.
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    pub fn status(&self) -> SyncStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn update_status(&self, f: impl FnOnce(&mut SyncStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// RFC 6811 origin validation; `Unknown` while no table is loaded. Host bits of `prefix`
    /// beyond `len` are ignored.
    pub fn validate(&self, prefix: IpAddr, len: u8, origin_as: u32) -> RpkiState {
        match self.current() {
            Some(s) => s.validate(prefix, len, origin_as),
            None => RpkiState::Unknown,
        }
    }

    /// Like [`validate`](Self::validate), with the covering VRPs.
    pub fn explain(&self, prefix: IpAddr, len: u8, origin_as: u32) -> (RpkiState, Matches) {
        match self.current() {
            Some(s) => s.explain(prefix, len, origin_as),
            None => (RpkiState::Unknown, Matches::default()),
        }
    }
}

/// Sets each route's `rpki_state` from its prefix and origin AS, by the table as it is now (VRPs
/// change without the route changing, so the state is computed when served, never stored).
pub fn annotate_routes(t: &RpkiTable, routes: &mut [foureyes_proto::v1::Route]) {
    let set = t.current();
    for r in routes {
        let parsed = r
            .prefix
            .split_once('/')
            .and_then(|(a, l)| Some((a.parse::<IpAddr>().ok()?, l.parse::<u8>().ok()?)));
        let state = match (&set, parsed) {
            (None, _) | (_, None) => RpkiState::Unknown,
            (Some(s), Some((addr, len))) => {
                let origin = r.attributes.as_ref().map(|a| a.origin_as).unwrap_or(0);
                s.validate(addr, len, origin)
            }
        };
        r.rpki_state = state.to_pb() as i32;
    }
}

/// Appends the RPKI families to the `/metrics` text.
pub fn render_metrics(out: &mut String, t: &RpkiTable, now_ms: i64) {
    use std::fmt::Write as _;
    let st = t.status();
    let vrps = t.current().map(|s| s.len()).unwrap_or(0);
    let mut one = |name: &str, kind: &str, help: &str, v: String| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {v}");
    };
    one(
        "foureyes_rpki_vrps",
        "gauge",
        "VRPs in the loaded RPKI table (0 when none is loaded).",
        vrps.to_string(),
    );
    one(
        "foureyes_rpki_table_loaded",
        "gauge",
        "1 when a VRP table is loaded (validation answers), 0 while states are unknown.",
        u8::from(t.current().is_some()).to_string(),
    );
    one(
        "foureyes_rpki_serial",
        "gauge",
        "RTR serial of the loaded VRP table (0 before the first sync).",
        st.serial.unwrap_or(0).to_string(),
    );
    one(
        "foureyes_rpki_rtr_connected",
        "gauge",
        "1 while the RTR session is up.",
        u8::from(st.connected).to_string(),
    );
    one(
        "foureyes_rpki_rtr_version",
        "gauge",
        "RTR protocol version in use (1: RFC 8210, 0: RFC 6810; -1 before the first answer).",
        st.version.map(i16::from).unwrap_or(-1).to_string(),
    );
    one(
        "foureyes_rpki_expirations_total",
        "counter",
        "Times the VRP table was dropped because no sync came within the expire interval.",
        st.expirations.to_string(),
    );
    let since = st
        .last_sync_ms
        .map(|t| (((now_ms - t).max(0)) as f64 / 1e3).to_string())
        .unwrap_or_else(|| "NaN".into());
    one(
        "foureyes_rpki_seconds_since_sync",
        "gauge",
        "Seconds since the last RTR End of Data was applied (NaN before the first).",
        since,
    );
}

/// The alert engine's `rpki_invalid` rule asks the RTR client's table.
impl crate::alerts::OriginValidator for RpkiTable {
    fn validate(&self, prefix: IpAddr, len: u8, origin_as: u32) -> RpkiState {
        RpkiTable::validate(self, prefix, len, origin_as)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn vrp(p: &str, max: u8, asn: u32) -> Vrp {
        let (a, l) = p.split_once('/').unwrap();
        Vrp::new(a.parse().unwrap(), l.parse().unwrap(), max, asn).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn masks_are_right() {
        assert_eq!(mask(32, 0), 0);
        assert_eq!(mask(32, 8), 0xff00_0000);
        assert_eq!(mask(32, 32), 0xffff_ffff);
        assert_eq!(mask(128, 128), u128::MAX);
        assert_eq!(mask(128, 1), 1u128 << 127);
        assert_eq!(mask(128, 0), 0);
        assert_eq!(mask(32, 40), 0xffff_ffff);
    }

    #[test]
    fn impossible_vrps_are_refused_and_host_bits_cleared() {
        assert!(Vrp::new(ip("192.0.2.0"), 33, 33, 1).is_none());
        assert!(Vrp::new(ip("192.0.2.0"), 24, 23, 1).is_none());
        assert!(Vrp::new(ip("192.0.2.0"), 24, 33, 1).is_none());
        assert!(Vrp::new(ip("2001:db8::"), 32, 129, 1).is_none());
        assert_eq!(vrp("192.0.2.77/24", 24, 1).addr, ip("192.0.2.0"));
    }

    #[test]
    fn rfc6811_states_with_max_length() {
        let s = VrpSet::new([vrp("192.0.2.0/24", 24, 64496), vrp("10.0.0.0/8", 16, 64497)]);
        assert_eq!(s.validate(ip("192.0.2.0"), 24, 64496), RpkiState::Valid);
        // Wrong origin.
        assert_eq!(s.validate(ip("192.0.2.0"), 24, 64499), RpkiState::Invalid);
        // Too long for maxLength.
        assert_eq!(s.validate(ip("192.0.2.128"), 25, 64496), RpkiState::Invalid);
        // Within maxLength.
        assert_eq!(s.validate(ip("10.20.0.0"), 16, 64497), RpkiState::Valid);
        assert_eq!(s.validate(ip("10.20.30.0"), 24, 64497), RpkiState::Invalid);
        // A less-specific than any VRP is not covered.
        assert_eq!(s.validate(ip("192.0.0.0"), 16, 64496), RpkiState::NotFound);
        assert_eq!(
            s.validate(ip("198.51.100.0"), 24, 64496),
            RpkiState::NotFound
        );
        // Host bits beyond the length are ignored.
        assert_eq!(s.validate(ip("192.0.2.99"), 24, 64496), RpkiState::Valid);
        // A length beyond the width covers nothing.
        assert_eq!(s.validate(ip("192.0.2.0"), 33, 64496), RpkiState::NotFound);
    }

    #[test]
    fn as0_vrps_cover_but_never_match() {
        let s = VrpSet::new([vrp("203.0.113.0/24", 32, 0)]);
        assert_eq!(s.validate(ip("203.0.113.0"), 24, 0), RpkiState::Invalid);
        assert_eq!(s.validate(ip("203.0.113.0"), 24, 64496), RpkiState::Invalid);
        // Another VRP can still make it valid.
        let s = VrpSet::new([
            vrp("203.0.113.0/24", 32, 0),
            vrp("203.0.113.0/24", 24, 64496),
        ]);
        assert_eq!(s.validate(ip("203.0.113.0"), 24, 64496), RpkiState::Valid);
        // A route without an origin (AS_SET) matches nothing, not even an AS 0 VRP.
        let s = VrpSet::new([vrp("198.51.100.0/24", 24, 64496)]);
        assert_eq!(s.validate(ip("198.51.100.0"), 24, 0), RpkiState::Invalid);
    }

    #[test]
    fn v4_and_v6_do_not_mix() {
        let s = VrpSet::new([vrp("2001:db8::/32", 48, 64496), vrp("0.0.0.0/0", 32, 64500)]);
        assert_eq!(s.validate(ip("2001:db8:1::"), 48, 64496), RpkiState::Valid);
        assert_eq!(
            s.validate(ip("2001:db8:1::"), 49, 64496),
            RpkiState::Invalid
        );
        assert_eq!(s.validate(ip("2001:db9::"), 32, 64496), RpkiState::NotFound);
        // ::/0-style coverage of v4 does not leak into v6 and back.
        assert_eq!(s.validate(ip("::"), 0, 64500), RpkiState::NotFound);
        assert_eq!(s.validate(ip("192.0.2.0"), 24, 64500), RpkiState::Valid);
        assert_eq!(s.validate(ip("192.0.2.0"), 24, 64496), RpkiState::Invalid);
        // The v4-mapped address is IPv6 here.
        assert_eq!(
            s.validate(ip("::ffff:192.0.2.0"), 120, 64500),
            RpkiState::NotFound
        );
    }

    #[test]
    fn explain_groups_the_covering_vrps() {
        let s = VrpSet::new([
            vrp("192.0.2.0/24", 24, 64496),
            vrp("192.0.0.0/16", 24, 64497),
            vrp("192.0.2.0/23", 23, 64496),
        ]);
        let (st, m) = s.explain(ip("192.0.2.0"), 24, 64496);
        assert_eq!(st, RpkiState::Valid);
        assert_eq!(m.matched, vec![vrp("192.0.2.0/24", 24, 64496)]);
        assert_eq!(m.unmatched_as, vec![vrp("192.0.0.0/16", 24, 64497)]);
        assert_eq!(m.unmatched_length, vec![vrp("192.0.2.0/23", 23, 64496)]);
    }

    #[test]
    fn the_table_is_unknown_until_loaded_and_after_a_drop() {
        let t = RpkiTable::new(true);
        let mut rx = t.subscribe();
        assert_eq!(t.generation(), 0);
        assert_eq!(t.validate(ip("192.0.2.0"), 24, 1), RpkiState::Unknown);
        t.replace(Some(Arc::new(VrpSet::new([vrp("192.0.2.0/24", 24, 1)]))));
        assert_eq!(t.validate(ip("192.0.2.0"), 24, 1), RpkiState::Valid);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 1);
        t.replace(None);
        assert_eq!(t.validate(ip("192.0.2.0"), 24, 1), RpkiState::Unknown);
        assert!(rx.has_changed().unwrap());
        assert_eq!(t.generation(), 2);
    }

    #[test]
    fn routes_get_the_state_of_their_origin() {
        use foureyes_proto::v1 as pb;
        let route = |prefix: &str, origin_as: u32| pb::Route {
            prefix: prefix.into(),
            attributes: Some(pb::RouteAttributes {
                origin_as,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut routes = vec![
            route("192.0.2.0/24", 64496),
            route("192.0.2.0/25", 64496),
            route("192.0.2.0/24", 64511),
            route("2001:db8::/32", 64496),
            route("garbage", 64496),
            pb::Route {
                prefix: "192.0.2.0/24".into(),
                ..Default::default()
            },
        ];
        let t = RpkiTable::new(true);
        annotate_routes(&t, &mut routes);
        assert!(
            routes
                .iter()
                .all(|r| r.rpki_state == pb::RpkiState::Unknown as i32)
        );
        t.replace(Some(Arc::new(VrpSet::new([vrp(
            "192.0.2.0/24",
            24,
            64496,
        )]))));
        annotate_routes(&t, &mut routes);
        let got: Vec<i32> = routes.iter().map(|r| r.rpki_state).collect();
        use pb::RpkiState as S;
        assert_eq!(
            got,
            [
                S::Valid,
                S::Invalid,
                S::Invalid,
                S::NotFound,
                S::Unknown,
                S::Invalid
            ]
            .map(|s| s as i32)
        );
    }

    /// Brute force over random sets and routes: the index agrees with the RFC's definition.
    #[test]
    fn the_index_agrees_with_a_linear_scan() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20 {
            let vrps: Vec<Vrp> = (0..300)
                .filter_map(|_| {
                    let v6 = rng.gen_bool(0.3);
                    let w = if v6 { 128 } else { 32 };
                    let len = rng.gen_range(0..=w.min(24));
                    let max = rng.gen_range(len..=w.min(len + 8));
                    let a: IpAddr = if v6 {
                        Ipv6Addr::from(u128::from(rng.r#gen::<u8>() & 3) << 120).into()
                    } else {
                        Ipv4Addr::from(
                            u32::from(rng.r#gen::<u8>() & 7) << 24 | rng.r#gen::<u32>() & 0xff_ff00,
                        )
                        .into()
                    };
                    Vrp::new(a, len, max, rng.gen_range(0..4))
                })
                .collect();
            let set = VrpSet::new(vrps.clone());
            for _ in 0..300 {
                let v6 = rng.gen_bool(0.3);
                let w: u8 = if v6 { 128 } else { 32 };
                let len = rng.gen_range(0..=w);
                let a: IpAddr = if v6 {
                    Ipv6Addr::from(
                        u128::from(rng.r#gen::<u8>() & 3) << 120 | u128::from(rng.r#gen::<u64>()),
                    )
                    .into()
                } else {
                    Ipv4Addr::from(
                        u32::from(rng.r#gen::<u8>() & 7) << 24 | rng.r#gen::<u32>() & 0xff_ffff,
                    )
                    .into()
                };
                let origin = rng.gen_range(0..4);
                let net = bits(&a) & mask(w, len);
                let cover: Vec<&Vrp> = vrps
                    .iter()
                    .filter(|v| {
                        v.addr.is_ipv4() == a.is_ipv4()
                            && v.len <= len
                            && bits(&v.addr) == net & mask(w, v.len)
                    })
                    .collect();
                let want = if cover
                    .iter()
                    .any(|v| v.asn != 0 && v.asn == origin && len <= v.max_len)
                {
                    RpkiState::Valid
                } else if cover.is_empty() {
                    RpkiState::NotFound
                } else {
                    RpkiState::Invalid
                };
                assert_eq!(set.validate(a, len, origin), want, "{a}/{len} AS{origin}");
                assert_eq!(set.explain(a, len, origin).0, want);
            }
        }
    }
}
