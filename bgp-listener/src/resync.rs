//! Resync of the collector's copy of the listener's tables after the disk spool dropped events.
//!
//! `run` spools every event until the collector acknowledges it. The spool is bounded: a long
//! partition makes it drop its oldest batches (and spool a `Gap` record saying so), and from then
//! on the collector's table misses whatever those events said. Resetting the BGP sessions would
//! make the peers send everything again, but that is visible to the peer's operator, loses
//! graceful-restart state and may page someone, for a problem that is ours. The listener already
//! holds every session's Adj-RIB-In, so it sends a copy instead:
//!
//! 1. [`Trigger`] notices that the spool dropped records (its `dropped_total` grew) and waits
//!    until the link is up and the spooled backlog plus the snapshot fit under the spool's drop
//!    level (90 % of `[spool] max_records`), so the snapshot cannot overflow the spool again and
//!    start another round; then it asks every session for a snapshot (a generation number on a
//!    `watch` channel).
//!    Before the request, it sends the listener's peer set (`ResyncMark::Peers`: every configured
//!    session and the BMP routers connected), so the collector can tell a peer stored as up that
//!    no longer exists (removed by SIGHUP while the events saying so were dropped).
//! 2. Each session's driver ([`crate::driver`]) emits its session state (`ResyncMark::Session`:
//!    up with what was negotiated or down, and since when, from the last session event it sent:
//!    [`LastState`]), then, per family, `ResyncMark::Begin`, one
//!    `ResyncMark::Route` per route it holds (stale ones too, the collector holds them as well),
//!    and `ResyncMark::End` with the count, into the same event channel as its live events and
//!    without handling peer input in between: the snapshot sits at one point of that peer's event
//!    order, so nothing can overtake it. It walks the table in chunks of [`CHUNK`] and sends a
//!    KEEPALIVE between chunks when one is due, so a large snapshot cannot let the peer's hold
//!    timer expire; its own hold timer is moved on by the time spent, which was ours, not the
//!    peer's silence.
//! 3. The collector stages the routes and, at `End`, replaces its copy of that peer's family with
//!    them, storing the differences as events with reason "resync" (see the store's
//!    `resync.rs`). An interrupted snapshot (no `End`, or fewer routes than `End` says) is
//!    discarded without touching the table. Where the session state disagrees with the last
//!    session event it stored, it stores the missing `session_down` / `session_up` (the store's
//!    `resync_state.rs`), before the routes.
//!
//! The BMP station keeps an Adj-RIB-In per monitored peer and view, so each router connection
//! answers the same request with its own peer set (the peers and views it monitors, all up) and
//! a snapshot of every table it holds ([`send_table`], each after an up state without a
//! since-time: the station does not keep when a view came up); the
//! collector keys them by peer, view and router like their live events. Nothing is sent to the
//! router (BMP is one-way, and closing its connection to make it resend would report every peer
//! down and up).

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::event::{
    Event, Negotiated, Peer, PeerSet, ResyncMark, RouteChange, RouteEvent, SessionEvent,
    SessionMark,
};
use crate::rib::AdjRibIn;
use crate::wire::Family;

/// Routes per chunk of a snapshot walk: small enough that a KEEPALIVE is never far away, large
/// enough that the B-tree seek per chunk costs nothing.
pub const CHUNK: usize = 4096;

/// Markers per peer in a snapshot: its session state, and Begin and End for each family.
pub const MARKERS_PER_PEER: u64 = 2 * Family::ALL.len() as u64 + 1;

/// One piece of a snapshot as an event.
pub fn mark(
    peer: Peer,
    family: Family,
    path_id: Option<u32>,
    at: SystemTime,
    m: ResyncMark,
) -> Event {
    Event::Route(RouteEvent {
        peer,
        family,
        path_id,
        received: at,
        source_time: None,
        change: RouteChange::Resync(m),
    })
}

/// The last session state a driver reported (`Established` = up), and when: what the collector
/// was told, or should have been, about this session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LastState {
    pub up: bool,
    pub since: Option<SystemTime>,
}

impl LastState {
    /// Follows the session events a driver emits (other events leave it alone).
    pub fn on_event(&mut self, ev: &Event) {
        match ev {
            Event::Session(SessionEvent::Established { at, .. }) => {
                *self = LastState {
                    up: true,
                    since: Some(*at),
                }
            }
            Event::Session(SessionEvent::Down { at, .. }) => {
                *self = LastState {
                    up: false,
                    since: Some(*at),
                }
            }
            _ => {}
        }
    }

    /// The session marker of a snapshot: up (with what was negotiated) only when the last event
    /// said so and the session still holds its parameters.
    pub fn mark(&self, negotiated: Option<&Negotiated>, routes: usize) -> SessionMark {
        SessionMark {
            up: negotiated.filter(|_| self.up).cloned(),
            since: self.since,
            routes: routes as u64,
        }
    }
}

/// The listener's own peer set for a snapshot, from the names in [`Held`] (`session <addr>`,
/// `bmp <router>`); anything else is ignored. The AS is left 0: the collector keys peers by
/// source, BMP router, distinguisher and address, not by AS.
pub fn listener_peers<'a>(names: impl IntoIterator<Item = &'a str>) -> PeerSet {
    let mut sessions = Vec::new();
    let mut bmp_routers = Vec::new();
    for name in names {
        if let Some(addr) = name.strip_prefix("session ").and_then(|a| a.parse().ok()) {
            sessions.push(Peer::session(addr, 0));
        } else if let Some(router) = name.strip_prefix("bmp ").and_then(|a| a.parse().ok()) {
            bmp_routers.push(router);
        }
    }
    sessions.sort();
    sessions.dedup();
    bmp_routers.sort();
    bmp_routers.dedup();
    PeerSet::Listener {
        sessions,
        bmp_routers,
    }
}

/// A peer-set marker (its event's peer and family are placeholders; see `export.rs`).
pub fn peers_mark(set: PeerSet, at: SystemTime) -> Event {
    let placeholder = Peer::session(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);
    mark(
        placeholder,
        Family::Ipv4Unicast,
        None,
        at,
        ResyncMark::Peers(Box::new(set)),
    )
}

/// Sends one table's snapshot (every family) into `events`, waiting for room as live events
/// do, after the session marker `state`. For the BMP station, which has no session timers to
/// keep; a session's driver has its own loop (it sends KEEPALIVEs between chunks). Returns the
/// routes sent, or `Err` when the receiver is gone.
pub async fn send_table(
    rib: &AdjRibIn,
    peer: Peer,
    state: SessionMark,
    events: &mpsc::Sender<Event>,
) -> Result<u64, ()> {
    let m = ResyncMark::Session(Box::new(state));
    let ev = mark(peer, Family::Ipv4Unicast, None, SystemTime::now(), m);
    events.send(ev).await.map_err(|_| ())?;
    let mut total = 0;
    for family in Family::ALL {
        let at = SystemTime::now();
        let send = |ev: Event| async move { events.send(ev).await.map_err(|_| ()) };
        send(mark(peer, family, None, at, ResyncMark::Begin)).await?;
        let (mut after, mut routes) = (None, 0u64);
        loop {
            let chunk = rib.routes_chunk(family, after, CHUNK);
            let done = chunk.len() < CHUNK;
            after = chunk.last().map(|(p, id, _)| (*p, *id));
            for (prefix, path_id, route) in chunk {
                routes += 1;
                let m = ResyncMark::Route { prefix, route };
                send(mark(peer, family, path_id, at, m)).await?;
            }
            if done {
                break;
            }
        }
        send(mark(peer, family, None, at, ResyncMark::End { routes })).await?;
        total += routes;
    }
    Ok(total)
}

/// Routes each running session or BMP router connection holds, which sizes a snapshot, by a
/// name (`session <addr>`, `bmp <router>`). Kept by `run.rs` and the BMP station.
pub type Held = Arc<Mutex<HashMap<String, Arc<AtomicUsize>>>>;

/// What a BMP station gets to take part in resyncs.
#[derive(Clone)]
pub struct StationResync {
    pub requests: tokio::sync::watch::Receiver<u64>,
    pub held: Held,
}

/// Completes when a new resync is requested (true), or when no request can come any more
/// (false); never without a receiver.
pub(crate) async fn requested(rx: Option<&mut tokio::sync::watch::Receiver<u64>>) -> bool {
    match rx {
        Some(r) => r.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// What [`Trigger::poll`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing was dropped since the last snapshot.
    Idle,
    /// A snapshot is needed but must wait: the reason, for the log.
    Wait(&'static str),
    /// A snapshot is needed and can never fit the spool as configured.
    TooLarge { needed: u64, room: u64 },
    /// Ask every session for a snapshot now.
    Start,
}

/// The decision when to resync, without I/O: fed the spool's figures, it says when to start.
#[derive(Debug)]
pub struct Trigger {
    max_records: u64,
    seen_dropped: u64,
    pending: bool,
    /// Snapshots started so far (also the generation sent to the drivers).
    pub started: u64,
}

impl Trigger {
    pub fn new(max_records: u64) -> Self {
        Trigger {
            max_records: max_records.max(1),
            seen_dropped: 0,
            pending: false,
            started: 0,
        }
    }

    /// The spool drops records above `max_records` down to 90 % of it; a snapshot must fit
    /// under that level with what is already spooled.
    pub fn room(&self) -> u64 {
        self.max_records - self.max_records / 10
    }

    pub fn pending(&self) -> bool {
        self.pending
    }

    /// `dropped_total`: the spool's count of dropped records (grows only); `connected`: the link
    /// is up; `spooled`: records waiting in the spool; `routes` and `peers`: what the sessions
    /// hold, which sizes the snapshot.
    pub fn poll(
        &mut self,
        dropped_total: u64,
        connected: bool,
        spooled: u64,
        routes: u64,
        peers: u64,
    ) -> Decision {
        if dropped_total != self.seen_dropped {
            self.seen_dropped = dropped_total;
            self.pending = true;
        }
        if !self.pending {
            return Decision::Idle;
        }
        if !connected {
            return Decision::Wait("the link to the collector is down");
        }
        // One more record: the listener's peer set.
        let needed = routes
            .saturating_add(peers.saturating_mul(MARKERS_PER_PEER))
            .saturating_add(1);
        let room = self.room();
        if needed > room {
            return Decision::TooLarge { needed, room };
        }
        if spooled.saturating_add(needed) > room {
            return Decision::Wait("the spool backlog leaves no room for the snapshot yet");
        }
        self.pending = false;
        self.started += 1;
        Decision::Start
    }
}

/// How often the `run` task looks at the spool.
pub const POLL: Duration = Duration::from_millis(500);

#[cfg(feature = "agent")]
pub use task::run;

#[cfg(feature = "agent")]
mod task {
    use std::sync::atomic::Ordering;

    use foureyes_agent::link::{Shared, lock};
    use tokio::sync::watch;
    use tokio_util::sync::CancellationToken;

    use super::{Decision, Held, POLL, Trigger};
    use crate::event::Event;

    /// Watches the spool and asks the sessions for snapshots (a new generation on `requests`)
    /// when [`Trigger`] says so, after sending the listener's peer set into `events`. Runs
    /// until `stop`.
    pub async fn run(
        shared: Shared,
        connected: watch::Receiver<bool>,
        max_records: u64,
        held: Held,
        requests: watch::Sender<u64>,
        events: tokio::sync::mpsc::Sender<Event>,
        stop: CancellationToken,
    ) {
        let mut trigger = Trigger::new(max_records);
        let mut last_wait: Option<&'static str> = None;
        let mut warned_size = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            let (dropped, spooled) = {
                let s = lock(&shared.spool);
                (s.dropped_total(), s.records())
            };
            let (routes, peers) = {
                let h = lock(&held);
                let routes: usize = h.values().map(|n| n.load(Ordering::Relaxed)).sum();
                (routes as u64, h.len() as u64)
            };
            let connected = *connected.borrow();
            let was_pending = trigger.pending();
            match trigger.poll(dropped, connected, spooled, routes, peers) {
                Decision::Idle => {}
                Decision::Wait(why) => {
                    if !was_pending {
                        tracing::warn!(
                            dropped,
                            "the spool dropped events: the collector's copy of the tables is incomplete; a resync snapshot will follow"
                        );
                    }
                    if last_wait != Some(why) {
                        tracing::info!(reason = why, spooled, routes, "resync waiting");
                        last_wait = Some(why);
                    }
                }
                Decision::TooLarge { needed, room } => {
                    if !warned_size {
                        tracing::error!(
                            needed,
                            room,
                            "resync snapshot cannot fit the spool: raise [spool] max_records above {}",
                            needed + needed / 9 + 1
                        );
                        warned_size = true;
                    }
                }
                Decision::Start => {
                    last_wait = None;
                    warned_size = false;
                    tracing::info!(
                        resync = trigger.started,
                        peers,
                        routes,
                        spooled,
                        "spool dropped events: sending every session's table to the collector (resync)"
                    );
                    // The peer set goes first: a peer that is gone has no session to send
                    // its own state.
                    let set = {
                        let h = lock(&held);
                        super::listener_peers(h.keys().map(String::as_str))
                    };
                    let mark = super::peers_mark(set, std::time::SystemTime::now());
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        r = events.send(mark) => if r.is_err() { return },
                    }
                    let _ = requests.send(trigger.started);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DownReason;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_session_marker_follows_the_last_session_event() {
        let peer = Peer::session(ip("198.18.0.1"), 65001);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let t1 = t0 + Duration::from_secs(60);
        let negotiated = Negotiated {
            peer_as: 65001,
            peer_router_id: "198.18.0.1".parse().expect("id"),
            hold_time: 90,
            keepalive: 30,
            four_octet_as: true,
            families: vec![Family::Ipv4Unicast],
            graceful_restart: false,
            add_path: vec![],
            extended_messages: false,
        };
        let mut last = LastState::default();
        // Never up: down, since unknown, even if parameters linger.
        let m = last.mark(Some(&negotiated), 0);
        assert_eq!((m.up.is_some(), m.since, m.routes), (false, None, 0));
        let up = Event::Session(SessionEvent::Established {
            peer,
            at: t0,
            negotiated: negotiated.clone(),
        });
        last.on_event(&up);
        // A route event changes nothing.
        last.on_event(&mark(
            peer,
            Family::Ipv4Unicast,
            None,
            t1,
            ResyncMark::Begin,
        ));
        let m = last.mark(Some(&negotiated), 7);
        assert_eq!(m.up.as_ref(), Some(&negotiated));
        assert_eq!((m.since, m.routes), (Some(t0), 7));
        // Up per the last event but no parameters held: not claimed up.
        assert!(last.mark(None, 7).up.is_none());
        last.on_event(&Event::Session(SessionEvent::Down {
            peer,
            at: t1,
            reason: DownReason::ConnectionClosed,
            routes_lost: 7,
            routes_stale: 0,
            stale_families: vec![],
        }));
        let m = last.mark(Some(&negotiated), 0);
        assert_eq!((m.up.is_some(), m.since), (false, Some(t1)));
        // A new session: a new since, which is how the collector tells it from the old one.
        last.on_event(&Event::Session(SessionEvent::Established {
            peer,
            at: t1 + Duration::from_secs(1),
            negotiated: negotiated.clone(),
        }));
        assert_eq!(
            last.mark(Some(&negotiated), 0).since,
            Some(t1 + Duration::from_secs(1))
        );
    }

    #[test]
    fn the_listener_peer_set_comes_from_the_held_names() {
        let set = listener_peers([
            "session 198.18.0.3",
            "bmp 192.0.2.1",
            "session 198.18.0.1",
            "session 198.18.0.1",
            "session not-an-address",
            "something else",
            "bmp 2001:db8::1",
        ]);
        assert_eq!(
            set,
            PeerSet::Listener {
                sessions: vec![
                    Peer::session(ip("198.18.0.1"), 0),
                    Peer::session(ip("198.18.0.3"), 0)
                ],
                bmp_routers: vec![ip("192.0.2.1"), ip("2001:db8::1")],
            }
        );
        assert_eq!(
            listener_peers([]),
            PeerSet::Listener {
                sessions: vec![],
                bmp_routers: vec![]
            }
        );
        // The marker's own peer is a placeholder; export drops it (the set names its peers).
        let ev = peers_mark(set, SystemTime::UNIX_EPOCH);
        let Event::Route(r) = &ev else {
            panic!("a route event")
        };
        assert!(matches!(
            r.change,
            RouteChange::Resync(ResyncMark::Peers(_))
        ));
    }

    #[test]
    fn waits_for_a_drop_the_link_and_room() {
        let mut t = Trigger::new(1000);
        assert_eq!(t.room(), 900);
        assert_eq!(t.poll(0, true, 0, 100, 2), Decision::Idle);
        // Dropped while the link is down: wait.
        assert!(matches!(t.poll(50, false, 1000, 100, 2), Decision::Wait(_)));
        // Up, but the backlog leaves no room for 100 routes + 10 markers + the peer set.
        assert!(matches!(t.poll(50, true, 790, 100, 2), Decision::Wait(_)));
        assert_eq!(t.poll(50, true, 789, 100, 2), Decision::Start);
        assert_eq!(t.started, 1);
        // Done: nothing more until the next drop.
        assert_eq!(t.poll(50, true, 0, 100, 2), Decision::Idle);
        assert_eq!(t.poll(60, true, 0, 100, 2), Decision::Start);
        assert_eq!(t.started, 2);
        // A table larger than the spool can ever take is reported, and stays pending.
        assert_eq!(
            t.poll(70, true, 0, 5000, 1),
            Decision::TooLarge {
                needed: 5006,
                room: 900
            }
        );
        assert!(t.pending());
    }
}
