//! Session state from a listener's resync snapshot (`RESYNC_SESSION`, `RESYNC_PEERS`): repairs
//! the session events a spool overflow swallowed.
//!
//! The route part of a snapshot (`resync.rs`) fixes the routes table, but a `session_down` lost
//! in the gap, or a session that went down and came back, or a peer removed from the listener's
//! config while the collector was away, would never be reported again, and `/api/v1/peers`
//! (which reads the last stored `session_up` / `session_down` of each peer) and the alert
//! engine's session rules would show a stale state for good. So the listener also sends, per
//! peer, its session state ([`write`] with `RESYNC_SESSION`, before that peer's routes), and the
//! set of peers it has (`RESYNC_PEERS`). Ingest compares them with the last stored session event
//! of each peer and, where they disagree, stores what is missing:
//!
//! | stored        | listener                    | stored now                       |
//! |---------------|-----------------------------|----------------------------------|
//! | up            | up, same `since`            | nothing                          |
//! | up            | up, other `since`           | `session_down`, then `session_up`|
//! | up            | down                        | `session_down`                   |
//! | down or none  | up                          | `session_up`                     |
//! | down or none  | down                        | nothing                          |
//! | up            | not in the peer set         | `session_down` ("resync: ...")   |
//!
//! Each derived event has `reason` "resync" (a gone peer's a longer one starting "resync: ",
//! which says why, for a NOC engineer) and the snapshot's time as `observed_at`: when it really
//! happened is unknown. A derived `session_up` carries the listener's `SessionInfo` and the
//! session's real start in `source_time`, which is what the next resync compares (`since`
//! marks which session it is). A session the listener reports without a `since` (BMP-monitored
//! peers) is checked for up or down only. The events go through [`crate::routes::write_event`]
//! like live ones: a derived down without stale routes empties the peer's table (the snapshot's
//! routes that follow refill it), and the alert engine's session rules see the corrected state.
//! The correlator does not correlate them ([`is_resync_reason`]).
//!
//! Nothing is trusted: a marker without a peer, for a peer never seen, repeated or out of order
//! only ever compares against what is stored, so a repeat finds agreement and stores nothing.

use std::collections::{HashMap, HashSet};

use foureyes_proto::v1 as pb;
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;
use crate::prefix::AFI_NONE;
use crate::resync::RESYNC_REASON;
use crate::routes::peer_key;

/// Session events read at most when comparing a peer set (newest first), like `peers.rs`.
const MAX_SESSION_EVENTS: i64 = 100_000;

/// Whether an event's `reason` marks it as derived from a resync snapshot (not a fresh change).
pub fn is_resync_reason(reason: &str) -> bool {
    reason == RESYNC_REASON || reason.starts_with("resync: ")
}

/// What a peer's last stored session event says: up or down, and which session (the listener's
/// time it began).
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub up: bool,
    pub since: Option<foureyes_proto::Timestamp>,
}

impl Stored {
    fn of(ev: &pb::RouteEvent) -> Self {
        Stored {
            up: ev.r#type == pb::RouteEventType::SessionUp as i32,
            // A derived session_up keeps the session's start in source_time; a live one's is its
            // observed_at (direct sessions have no source time).
            since: ev.source_time.or(ev.observed_at),
        }
    }
}

/// The session events to store so the stored state equals the listener's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fix {
    Nothing,
    Down,
    Up,
    DownUp,
}

/// The table in the module doc, without I/O.
pub fn decide(stored: Option<&Stored>, up: bool, since: Option<&foureyes_proto::Timestamp>) -> Fix {
    let stored_up = stored.is_some_and(|s| s.up);
    match (stored_up, up) {
        (true, true) => match (since, stored.and_then(|s| s.since.as_ref())) {
            (Some(now), Some(then)) if now != then => Fix::DownUp,
            // Which session is unknown on one side: never a down from a guess.
            _ => Fix::Nothing,
        },
        (true, false) => Fix::Down,
        (false, true) => Fix::Up,
        (false, false) => Fix::Nothing,
    }
}

/// The last stored session_up / session_down of one peer of the agent, among the tenant's
/// newest [`MAX_SESSION_EVENTS`] of them: what `/api/v1/peers` reads, and a bound on the walk
/// for a peer that has none (the index is by org and key, not by peer).
fn last_session(
    tx: &Connection,
    org: &str,
    agent_id: &str,
    peer: &str,
) -> Result<Option<Stored>, StoreError> {
    let (up, down) = (
        pb::RouteEventType::SessionUp as i64,
        pb::RouteEventType::SessionDown as i64,
    );
    let body: Option<Vec<u8>> = tx
        .prepare_cached(
            "SELECT body FROM route_events WHERE key = (
                 SELECT MAX(key) FROM (
                     SELECT key, agent_id, peer FROM route_events
                     WHERE org = ?1 AND afi = ?2 AND net = ?3 AND len = 0 AND type IN (?6, ?7)
                     ORDER BY key DESC LIMIT ?8)
                 WHERE agent_id = ?4 AND peer = ?5)",
        )?
        .query_row(
            params![
                org,
                AFI_NONE,
                Vec::<u8>::new(),
                agent_id,
                peer,
                up,
                down,
                MAX_SESSION_EVENTS
            ],
            |r| r.get(0),
        )
        .optional()?;
    match body {
        None => Ok(None),
        Some(b) => Ok(Some(Stored::of(&pb::RouteEvent::decode(b.as_slice())?))),
    }
}

/// The peers of the agent whose last stored session event is a session_up, with that event.
fn peers_up(tx: &Connection, org: &str, agent_id: &str) -> Result<Vec<pb::RouteEvent>, StoreError> {
    let (up, down) = (
        pb::RouteEventType::SessionUp as i64,
        pb::RouteEventType::SessionDown as i64,
    );
    let mut st = tx.prepare_cached(
        "SELECT peer, type, body FROM route_events
         WHERE org = ?1 AND afi = ?2 AND net = ?3 AND len = 0 AND agent_id = ?4
             AND type IN (?5, ?6)
         ORDER BY key DESC LIMIT ?7",
    )?;
    let mut rows = st.query(params![
        org,
        AFI_NONE,
        Vec::<u8>::new(),
        agent_id,
        up,
        down,
        MAX_SESSION_EVENTS
    ])?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let peer: String = r.get(0)?;
        let t: i64 = r.get(1)?;
        // Newest first: the first event of a peer is its state.
        if !seen.insert(peer) || t != up {
            continue;
        }
        let body: Vec<u8> = r.get(2)?;
        out.push(pb::RouteEvent::decode(body.as_slice())?);
    }
    Ok(out)
}

/// A peer's key for comparing peer sets: [`peer_key`] with the addresses in canonical form
/// (an IPv4-mapped IPv6 address written either way is one peer), so a spelling difference can
/// never make a peer look gone.
fn set_key(p: &pb::BgpPeer) -> String {
    let canon = |s: &str| {
        s.parse::<std::net::IpAddr>()
            .map(|a| a.to_canonical().to_string())
            .unwrap_or_else(|_| s.to_string())
    };
    let p = pb::BgpPeer {
        address: canon(&p.address),
        bmp_router: canon(&p.bmp_router),
        ..p.clone()
    };
    peer_key(Some(&p)).0
}

/// Whether two address strings name the same address (canonical form), or are equal text.
fn same_ip(a: &str, b: &str) -> bool {
    match (a.parse::<std::net::IpAddr>(), b.parse::<std::net::IpAddr>()) {
        (Ok(x), Ok(y)) => x.to_canonical() == y.to_canonical(),
        _ => a == b,
    }
}

/// A derived session event from a marker (the collector's fields already set on it).
fn derived(
    marker: &pb::RouteEvent,
    peer: Option<pb::BgpPeer>,
    t: pb::RouteEventType,
    reason: &str,
) -> pb::RouteEvent {
    pb::RouteEvent {
        r#type: t as i32,
        peer,
        // When the listener took the snapshot: the real time of the change is unknown.
        observed_at: marker.observed_at,
        reason: reason.into(),
        agent_id: marker.agent_id.clone(),
        seq: marker.seq,
        received_at: marker.received_at,
        ..Default::default()
    }
}

/// Handles a `RESYNC_SESSION` or `RESYNC_PEERS` record (`ev` already carries the collector's
/// fields). Returns the rows stored (the derived events; the marker itself is not kept).
#[allow(clippy::too_many_arguments)]
pub(crate) fn write(
    tx: &Connection,
    last_key: &mut i64,
    next_key: &impl Fn(i64) -> i64,
    org: &str,
    team: &str,
    agent_id: &str,
    seq: i64,
    received_ms: i64,
    ev: &pb::RouteEvent,
    buf: &mut Vec<u8>,
) -> Result<u64, StoreError> {
    use pb::RouteEventType as T;
    let mut out: Vec<pb::RouteEvent> = Vec::new();
    let state = ev.resync_state.clone().unwrap_or_default();
    match T::try_from(ev.r#type) {
        Ok(T::ResyncSession) => {
            let Some(p) = ev.peer.as_ref() else {
                tracing::warn!(agent = %agent_id, seq, "resync session state without a peer dropped");
                return Ok(0);
            };
            let (key, _) = peer_key(Some(p));
            let stored = last_session(tx, org, agent_id, &key)?;
            let fix = decide(stored.as_ref(), state.up, state.since.as_ref());
            if matches!(fix, Fix::Down | Fix::DownUp) {
                let mut d = derived(ev, ev.peer.clone(), T::SessionDown, RESYNC_REASON);
                if fix == Fix::Down {
                    // Routes the listener still holds for a down peer are stale ones (graceful
                    // restart): the table keeps them, and the snapshot that follows fixes it.
                    d.routes_stale = ev.prefix_count;
                }
                out.push(d);
            }
            if matches!(fix, Fix::Up | Fix::DownUp) {
                let mut u = derived(ev, ev.peer.clone(), T::SessionUp, RESYNC_REASON);
                u.session = ev.session.clone();
                u.source_time = state.since;
                out.push(u);
            }
            if fix != Fix::Nothing {
                tracing::warn!(
                    agent = %agent_id, peer = %p.address, bmp_router = %p.bmp_router,
                    stored = ?stored.map(|s| if s.up { "up" } else { "down" }),
                    listener = if state.up { "up" } else { "down" }, ?fix,
                    "resync: the stored session state was wrong (events lost in a spool overflow); stored the missing session events"
                );
            }
        }
        Ok(T::ResyncPeers) => {
            let listed: HashSet<String> = state.peers.iter().map(set_key).collect();
            let routers = &state.bmp_routers;
            let router_scope = (!state.bmp_router.is_empty()).then_some(state.bmp_router.as_str());
            let mut gone: HashMap<String, pb::RouteEvent> = HashMap::new();
            for up in peers_up(tx, org, agent_id)? {
                let Some(p) = up.peer.as_ref() else { continue };
                let key = set_key(p);
                let bmp = !p.bmp_router.is_empty();
                let why = match router_scope {
                    // One BMP router's monitored peers: only that router's are judged.
                    Some(r) if bmp && same_ip(&p.bmp_router, r) && !listed.contains(&key) => {
                        format!("resync: peer no longer monitored by BMP router {r}")
                    }
                    Some(_) => continue,
                    None if bmp && !routers.iter().any(|r| same_ip(r, &p.bmp_router)) => format!(
                        "resync: BMP router {} no longer connected to the listener",
                        p.bmp_router
                    ),
                    None if !bmp && !listed.contains(&key) => {
                        "resync: peer no longer configured on the listener".to_string()
                    }
                    None => continue,
                };
                gone.insert(key, derived(ev, up.peer.clone(), T::SessionDown, &why));
            }
            let mut gone: Vec<(String, pb::RouteEvent)> = gone.into_iter().collect();
            gone.sort_by(|a, b| a.0.cmp(&b.0));
            for (_, d) in gone {
                tracing::warn!(
                    agent = %agent_id, peer = ?d.peer.as_ref().map(|p| &p.address), reason = %d.reason,
                    "resync: a peer stored as up no longer exists on the listener; stored it down"
                );
                out.push(d);
            }
        }
        _ => return Ok(0),
    }
    let mut stored = 0;
    for d in &out {
        *last_key = next_key(*last_key);
        if crate::routes::write_event(tx, *last_key, org, team, agent_id, seq, received_ms, d, buf)?
        {
            stored += 1;
        }
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> foureyes_proto::Timestamp {
        foureyes_proto::Timestamp {
            seconds: s,
            nanos: 5,
        }
    }

    #[test]
    fn the_decision_table() {
        let up = |s| Stored {
            up: true,
            since: Some(ts(s)),
        };
        let down = Stored {
            up: false,
            since: Some(ts(1)),
        };
        assert_eq!(decide(Some(&up(1)), true, Some(&ts(1))), Fix::Nothing);
        assert_eq!(decide(Some(&up(1)), true, Some(&ts(2))), Fix::DownUp);
        // No since (BMP): up is up.
        assert_eq!(decide(Some(&up(1)), true, None), Fix::Nothing);
        assert_eq!(decide(Some(&up(1)), false, Some(&ts(2))), Fix::Down);
        assert_eq!(decide(Some(&down), true, Some(&ts(2))), Fix::Up);
        assert_eq!(decide(None, true, None), Fix::Up);
        assert_eq!(decide(Some(&down), false, Some(&ts(2))), Fix::Nothing);
        assert_eq!(decide(None, false, None), Fix::Nothing);
        assert!(is_resync_reason("resync"));
        assert!(is_resync_reason(
            "resync: peer no longer configured on the listener"
        ));
        assert!(!is_resync_reason("resynchronised"));
        assert!(!is_resync_reason("received NOTIFICATION 6/2"));
    }

    #[test]
    fn peer_sets_compare_addresses_in_canonical_form() {
        let p = |a: &str, r: &str| pb::BgpPeer {
            address: a.into(),
            bmp_router: r.into(),
            ..Default::default()
        };
        assert_eq!(
            set_key(&p("::ffff:192.0.2.1", "")),
            set_key(&p("192.0.2.1", ""))
        );
        assert_eq!(
            set_key(&p("2001:db8::1", "::ffff:192.0.2.9")),
            set_key(&p("2001:db8:0::1", "192.0.2.9"))
        );
        assert_ne!(set_key(&p("192.0.2.1", "")), set_key(&p("192.0.2.2", "")));
        // Not an address: compared as text, never a panic.
        assert_eq!(set_key(&p("x", "")), set_key(&p("x", "")));
        assert!(same_ip("::ffff:192.0.2.9", "192.0.2.9"));
        assert!(!same_ip("192.0.2.9", "192.0.2.10"));
        assert!(same_ip("junk", "junk"));
    }
}
