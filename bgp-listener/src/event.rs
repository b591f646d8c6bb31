//! Events the session produces: route events from the Adj-RIB-In and session events.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::SystemTime;

use crate::update::{PathAttributes, Rfc7606Action};
use crate::wire::{Family, Notification, Prefix};

/// A route as held in the Adj-RIB-In.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub next_hop: Option<IpAddr>,
    pub attrs: Arc<PathAttributes>,
}

/// Attributes an attribute-change event can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AttrKind {
    Origin,
    AsPath,
    NextHop,
    Med,
    LocalPref,
    Communities,
    ExtendedCommunities,
    LargeCommunities,
    AtomicAggregate,
    Aggregator,
    Other,
}

impl AttrKind {
    pub fn name(self) -> &'static str {
        match self {
            AttrKind::Origin => "origin",
            AttrKind::AsPath => "as_path",
            AttrKind::NextHop => "next_hop",
            AttrKind::Med => "med",
            AttrKind::LocalPref => "local_pref",
            AttrKind::Communities => "communities",
            AttrKind::ExtendedCommunities => "extended_communities",
            AttrKind::LargeCommunities => "large_communities",
            AttrKind::AtomicAggregate => "atomic_aggregate",
            AttrKind::Aggregator => "aggregator",
            AttrKind::Other => "other",
        }
    }

    /// Every kind, in the order `changed` lists are printed.
    pub const ALL: [AttrKind; 11] = [
        AttrKind::Origin,
        AttrKind::AsPath,
        AttrKind::NextHop,
        AttrKind::Med,
        AttrKind::LocalPref,
        AttrKind::Communities,
        AttrKind::ExtendedCommunities,
        AttrKind::LargeCommunities,
        AttrKind::AtomicAggregate,
        AttrKind::Aggregator,
        AttrKind::Other,
    ];

    /// Which attributes differ between two routes.
    pub fn diff(old: &Route, new: &Route) -> AttrKinds {
        let (a, b) = (&*old.attrs, &*new.attrs);
        let mut v = AttrKinds::default();
        let mut check = |differs: bool, k: AttrKind| {
            if differs {
                v.insert(k)
            }
        };
        check(a.origin != b.origin, AttrKind::Origin);
        check(a.as_path != b.as_path, AttrKind::AsPath);
        check(old.next_hop != new.next_hop, AttrKind::NextHop);
        check(a.med != b.med, AttrKind::Med);
        check(a.local_pref != b.local_pref, AttrKind::LocalPref);
        check(a.communities != b.communities, AttrKind::Communities);
        check(
            a.extended_communities != b.extended_communities,
            AttrKind::ExtendedCommunities,
        );
        check(
            a.large_communities != b.large_communities,
            AttrKind::LargeCommunities,
        );
        check(
            a.atomic_aggregate != b.atomic_aggregate,
            AttrKind::AtomicAggregate,
        );
        check(a.aggregator != b.aggregator, AttrKind::Aggregator);
        check(a.other != b.other, AttrKind::Other);
        v
    }
}

/// The attributes an attribute change names: a set of [`AttrKind`]s in two bytes, iterated in
/// [`AttrKind::ALL`]'s order. It was a `Vec<AttrKind>` (24 bytes inline and an allocation per
/// change); being `Copy` and small keeps every [`RouteEvent`] smaller, which the decode path
/// moves a million times per full table.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct AttrKinds(u16);

impl AttrKinds {
    fn bit(k: AttrKind) -> u16 {
        1 << (k as u16)
    }

    pub fn insert(&mut self, k: AttrKind) {
        self.0 |= Self::bit(k);
    }

    pub fn contains(self, k: AttrKind) -> bool {
        self.0 & Self::bit(k) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The kinds held, in [`AttrKind::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = AttrKind> {
        AttrKind::ALL.into_iter().filter(move |k| self.contains(*k))
    }
}

impl FromIterator<AttrKind> for AttrKinds {
    fn from_iter<I: IntoIterator<Item = AttrKind>>(iter: I) -> Self {
        let mut v = AttrKinds::default();
        for k in iter {
            v.insert(k);
        }
        v
    }
}

impl std::fmt::Debug for AttrKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// What happened to a prefix (or a family, for End-of-RIB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteChange {
    Announce {
        prefix: Prefix,
        route: Route,
    },
    Withdraw {
        prefix: Prefix,
        /// The route that was withdrawn.
        previous: Route,
    },
    /// `previous` is boxed: attribute changes are rare next to announcements, and an inline
    /// second `Route` made every event 32 bytes larger.
    AttributeChange {
        prefix: Prefix,
        previous: Box<Route>,
        route: Route,
        changed: AttrKinds,
    },
    EndOfRib,
    /// Part of a resync snapshot of the peer's table in this family (see `resync.rs`): not a
    /// change, a copy of what the Adj-RIB-In holds, for the collector to compare with its own.
    Resync(ResyncMark),
}

/// The pieces of a resync snapshot, in order: `Begin`, one `Route` per held route, `End`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResyncMark {
    Begin,
    Route {
        prefix: Prefix,
        route: Route,
    },
    /// `routes`: how many `Route`s the snapshot sent, so the collector can tell it is complete.
    End {
        routes: u64,
    },
    /// The peer's session state, sent before its `Begin`s, so the collector can repair a
    /// session event the spool dropped (boxed: rare, and larger than a route).
    Session(Box<SessionMark>),
    /// Which peers exist now, so the collector can tell one that no longer does.
    Peers(Box<PeerSet>),
}

/// A session's state in a resync snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionMark {
    /// What was negotiated, when the session is established now.
    pub up: Option<Negotiated>,
    /// When it entered this state: the time of the `Established` or `Down` event the listener
    /// sent then (the collector compares it with the one it stored). `None` when unknown.
    pub since: Option<SystemTime>,
    /// Routes held for the peer (stale ones too).
    pub routes: u64,
}

/// The peers a resync snapshot covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerSet {
    /// The listener's configured sessions (whatever their state) and the BMP routers connected.
    Listener {
        sessions: Vec<Peer>,
        bmp_routers: Vec<IpAddr>,
    },
    /// The peers (one per view) a BMP router monitors now.
    BmpRouter { router: IpAddr, peers: Vec<Peer> },
}

/// Which view of a BMP-monitored peer an event comes from (RFC 7854 §4.2 peer flags, RFC 9069).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BmpView {
    /// Adj-RIB-In before the router's import policy.
    PrePolicy,
    /// Adj-RIB-In after the router's import policy.
    PostPolicy,
    /// The router's Loc-RIB (RFC 9069).
    LocRib,
}

impl BmpView {
    pub fn name(self) -> &'static str {
        match self {
            BmpView::PrePolicy => "pre-policy",
            BmpView::PostPolicy => "post-policy",
            BmpView::LocRib => "loc-rib",
        }
    }
}

/// How the listener learned what a peer sent. Events from every source have the same shape, so a
/// consumer treats a BMP feed or an MRT file like a session and can still tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// A BGP session of this listener.
    Session,
    /// A BMP feed: `router` (the BMP client) reports what it holds from the peer.
    Bmp {
        router: IpAddr,
        view: BmpView,
        /// Peer distinguisher (RFC 7854 §4.2); 0 for global-instance peers.
        distinguisher: u64,
    },
    /// An MRT file (RFC 6396) being replayed.
    Mrt,
}

impl Source {
    /// Stable name for output: `session`, `bmp-pre-policy`, `bmp-post-policy`, `bmp-loc-rib`, `mrt`.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Session => "session",
            Source::Bmp { view, .. } => match view {
                BmpView::PrePolicy => "bmp-pre-policy",
                BmpView::PostPolicy => "bmp-post-policy",
                BmpView::LocRib => "bmp-loc-rib",
            },
            Source::Mrt => "mrt",
        }
    }
}

/// The BGP peer whose routes an event is about, and how the listener heard of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    pub addr: IpAddr,
    pub asn: u32,
    pub source: Source,
}

impl Peer {
    /// A peer of one of this listener's own sessions.
    pub fn session(addr: IpAddr, asn: u32) -> Self {
        Peer {
            addr,
            asn,
            source: Source::Session,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.source {
            Source::Session => write!(f, "{}", self.addr),
            Source::Bmp { router, view, .. } => {
                write!(f, "{} (bmp {router} {})", self.addr, view.name())
            }
            Source::Mrt => write!(f, "{} (mrt)", self.addr),
        }
    }
}

/// A route event: peer, family, ADD-PATH path id (`None` where not negotiated), receive time, and
/// the time the source says it happened where the protocol carries one (BMP per-peer header, MRT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEvent {
    pub peer: Peer,
    pub family: Family,
    pub path_id: Option<u32>,
    pub received: SystemTime,
    pub source_time: Option<SystemTime>,
    pub change: RouteChange,
}

/// Negotiated session parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub peer_as: u32,
    pub peer_router_id: Ipv4Addr,
    pub hold_time: u16,
    pub keepalive: u16,
    pub four_octet_as: bool,
    pub families: Vec<Family>,
    /// Both sides advertised graceful restart, so the peer sends End-of-RIB (RFC 4724 §2).
    pub graceful_restart: bool,
    /// Families whose NLRI carry ADD-PATH path ids.
    pub add_path: Vec<Family>,
    /// Both sides advertised Extended Messages (RFC 8654): messages up to 65535 octets. For MRT,
    /// whether the peer's OPEN in the file advertised it.
    pub extended_messages: bool,
}

/// Why a session went down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// The listener sent this NOTIFICATION (for BMP: the monitored router sent it to the peer).
    Sent(Notification),
    /// The peer sent this NOTIFICATION (for BMP: to the monitored router).
    Received(Notification),
    /// TCP closed without a NOTIFICATION.
    ConnectionClosed,
    /// A source that observes the session (BMP) reported it down without a NOTIFICATION, or its
    /// feed ended; the text says which.
    Reported(String),
    /// The peer opened a new connection while the session was up, and graceful restart was
    /// negotiated: the old session is taken as lost (RFC 4724 §4.2) and the new one proceeds.
    PeerRestarted,
}

/// One counter of a BMP Statistics Report (RFC 7854 §4.8). Types the station does not know keep
/// their bytes, so nothing a router reports is lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statistic {
    pub stat_type: u16,
    /// AFI/SAFI for the per-family gauges (types 9, 10 and the RFC 8671 ones).
    pub afi_safi: Option<(u16, u8)>,
    /// The counter or gauge; `None` for an unknown type or an unexpected length.
    pub value: Option<u64>,
    /// The raw value when `value` is `None`.
    pub raw: Vec<u8>,
}

/// Why stale routes (kept over a graceful restart), or a whole family, were dropped without a
/// withdraw per prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleDropReason {
    /// The peer did not come back within the restart time it advertised.
    RestartTimerExpired,
    /// The peer came back without graceful restart for this family, or without its F bit
    /// (forwarding state not preserved): RFC 4724 §4.2 says to drop them at once.
    NotPreserved,
    /// Not stale routes: RFC 7606 / RFC 4760 §7 AFI/SAFI disable dropped every route of the family
    /// after an unparseable MP_REACH_NLRI/MP_UNREACH_NLRI (the session stays up).
    AfiSafiDisabled,
}

impl StaleDropReason {
    pub fn name(self) -> &'static str {
        match self {
            StaleDropReason::RestartTimerExpired => "restart-timer-expired",
            StaleDropReason::NotPreserved => "not-preserved",
            StaleDropReason::AfiSafiDisabled => "afi-safi-disabled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    Established {
        peer: Peer,
        at: SystemTime,
        negotiated: Negotiated,
    },
    /// One event for a session loss, carrying how many routes the Adj-RIB-In lost (no per-prefix
    /// withdraws), and how many it keeps marked stale because graceful restart applies.
    Down {
        peer: Peer,
        at: SystemTime,
        reason: DownReason,
        routes_lost: usize,
        routes_stale: usize,
        /// The families whose routes are kept as stale (graceful restart), so a consumer that
        /// counts routes per family knows which counts survive (the others went to zero).
        stale_families: Vec<Family>,
    },
    /// Every route of `family` still stale was dropped at once, before the peer re-announced any
    /// of them, so the consumer drops all routes it holds from this peer in this family.
    StaleDropped {
        peer: Peer,
        at: SystemTime,
        family: Family,
        routes: usize,
        reason: StaleDropReason,
    },
    /// The peer's routes in `family` went over the configured maximum. Raised once per crossing;
    /// raised again only after the count fell below the hysteresis level (90 % of the limit).
    PrefixLimit {
        peer: Peer,
        at: SystemTime,
        family: Family,
        count: usize,
        limit: u32,
        /// The session is being torn down for it (Cease, RFC 4486 subcode 1).
        teardown: bool,
    },
    /// An RFC 7606 outcome that kept the session up.
    UpdateError {
        peer: Peer,
        at: SystemTime,
        action: Rfc7606Action,
    },
    /// Counters a BMP router reports about one of its peers.
    Statistics {
        peer: Peer,
        at: SystemTime,
        source_time: Option<SystemTime>,
        stats: Vec<Statistic>,
    },
}

impl SessionEvent {
    /// The peer the event is about, and when the listener saw it.
    pub fn peer_and_time(&self) -> (&Peer, &SystemTime) {
        match self {
            SessionEvent::Established { peer, at, .. }
            | SessionEvent::Down { peer, at, .. }
            | SessionEvent::StaleDropped { peer, at, .. }
            | SessionEvent::PrefixLimit { peer, at, .. }
            | SessionEvent::UpdateError { peer, at, .. }
            | SessionEvent::Statistics { peer, at, .. } => (peer, at),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Route(RouteEvent),
    Session(SessionEvent),
}
