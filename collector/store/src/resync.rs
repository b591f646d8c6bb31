//! Resync snapshots from listeners (the `route_resyncs` and `route_resync_routes` tables): the collector's copy of a peer's table is
//! replaced by the listener's own after the listener's spool dropped events.
//!
//! A listener whose spool overflowed sends, per peer and family, `RESYNC_BEGIN`, one
//! `RESYNC_ROUTE` per route it holds, and `RESYNC_END` with the count (bgp-listener `resync.rs`).
//! Ingest stages the routes in `route_resync_routes` (not as route events: a snapshot is a copy,
//! not a change) and applies the snapshot only at `RESYNC_END`, and only when every route it
//! announced was staged: an interrupted snapshot (a listener restarted mid-way, a session that
//! went down, a gap inside it) never wipes anything. Applying compares staged and held routes:
//!
//! - identical routes: nothing at all (no event, the route keeps its `since`);
//! - a route the snapshot has and the table does not: an `ANNOUNCE` event; attributes that
//!   differ: an `ATTRIBUTE_CHANGE` event; a route the table holds and the snapshot does not: a
//!   `WITHDRAW` event. Each has `reason` "resync" and the snapshot's time as `observed_at`: these
//!   are changes the spool's gap swallowed, found later, and when they really happened is
//!   unknown. They go through [`crate::routes::write_event`] like any event, so the routes table
//!   ends up equal to the snapshot. The correlator does not correlate them (they are not fresh
//!   changes). Session state is `resync_state.rs`: a snapshot's `RESYNC_SESSION` and
//!   `RESYNC_PEERS` records, which come before the routes, may store `session_down` /
//!   `session_up` events the gap swallowed; identical state stores nothing.
//! - the `RESYNC_END` event itself is stored with a [`pb::ResyncOutcome`] (applied or discarded,
//!   and the counts), which is what `/api/v1/route-events` shows and `/metrics` counts.
//!
//! A session event of the peer (up, down, stale dropped) discards a snapshot being staged for
//! it: what follows is a new table, not the rest of that snapshot.

use foureyes_proto::v1 as pb;
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;
use crate::prefix::{AFI_IPV4, AFI_IPV6, IpPrefix};

/// `reason` of the events a resync derives.
pub const RESYNC_REASON: &str = "resync";

/// Whether `t` is one of the three snapshot record types, which [`write`] handles.
pub(crate) fn is_resync(t: i32) -> bool {
    use pb::RouteEventType as T;
    matches!(
        T::try_from(t),
        Ok(T::ResyncBegin | T::ResyncRoute | T::ResyncEnd | T::ResyncSession | T::ResyncPeers)
    )
}

fn family_afi(afi_safi: i32) -> Option<i64> {
    match pb::AfiSafi::try_from(afi_safi) {
        Ok(pb::AfiSafi::Ipv4Unicast) => Some(AFI_IPV4),
        Ok(pb::AfiSafi::Ipv6Unicast) => Some(AFI_IPV6),
        _ => None,
    }
}

/// Drops a snapshot being staged for the peer (one family, or all with `afi` `None`).
pub(crate) fn discard(
    tx: &Connection,
    agent_id: &str,
    peer: &str,
    afi: Option<i64>,
) -> Result<(), StoreError> {
    let n = match afi {
        Some(afi) => {
            tx.prepare_cached(
                "DELETE FROM route_resync_routes WHERE agent_id = ?1 AND peer = ?2 AND afi = ?3",
            )?
            .execute(params![agent_id, peer, afi])?;
            tx.prepare_cached(
                "DELETE FROM route_resyncs WHERE agent_id = ?1 AND peer = ?2 AND afi = ?3",
            )?
            .execute(params![agent_id, peer, afi])?
        }
        None => {
            tx.prepare_cached("DELETE FROM route_resync_routes WHERE agent_id = ?1 AND peer = ?2")?
                .execute(params![agent_id, peer])?;
            tx.prepare_cached("DELETE FROM route_resyncs WHERE agent_id = ?1 AND peer = ?2")?
                .execute(params![agent_id, peer])?
        }
    };
    if n > 0 {
        tracing::warn!(agent = %agent_id, peer, "resync snapshot interrupted by a session event; discarded");
    }
    Ok(())
}

/// Handles one snapshot record (`ev` already carries the collector's fields). Returns the rows
/// stored: 0 for begin and route records, the end event plus the derived events for an end.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write(
    tx: &Connection,
    last_key: &mut i64,
    next_key: impl Fn(i64) -> i64,
    org: &str,
    team: &str,
    agent_id: &str,
    seq: i64,
    received_ms: i64,
    ev: &mut pb::RouteEvent,
    buf: &mut Vec<u8>,
) -> Result<u64, StoreError> {
    use pb::RouteEventType as T;
    if matches!(
        T::try_from(ev.r#type),
        Ok(T::ResyncSession | T::ResyncPeers)
    ) {
        return crate::resync_state::write(
            tx,
            last_key,
            &next_key,
            org,
            team,
            agent_id,
            seq,
            received_ms,
            ev,
            buf,
        );
    }
    let (peer, _) = crate::routes::peer_key(ev.peer.as_ref());
    let Some(afi) = family_afi(ev.afi_safi) else {
        tracing::warn!(agent = %agent_id, seq, "resync record without a family dropped");
        return Ok(0);
    };
    match T::try_from(ev.r#type) {
        Ok(T::ResyncBegin) => {
            discard(tx, agent_id, &peer, Some(afi))?;
            tx.prepare_cached(
                "INSERT INTO route_resyncs (agent_id, peer, afi, begin_seq, staged)
                 VALUES (?1, ?2, ?3, ?4, 0)",
            )?
            .execute(params![agent_id, peer, afi, seq])?;
            Ok(0)
        }
        Ok(T::ResyncRoute) => {
            let p = match IpPrefix::parse(&ev.prefix) {
                Ok(p) if p.afi() == afi => p,
                _ => {
                    tracing::warn!(agent = %agent_id, seq, prefix = %ev.prefix, "resync route with a bad prefix dropped");
                    return Ok(0);
                }
            };
            let staged = tx
                .prepare_cached(
                    "UPDATE route_resyncs SET staged = staged + 1
                     WHERE agent_id = ?1 AND peer = ?2 AND afi = ?3",
                )?
                .execute(params![agent_id, peer, afi])?;
            if staged == 0 {
                // Its begin was lost (a gap) or discarded: the end will not apply either.
                return Ok(0);
            }
            buf.clear();
            ev.attributes
                .clone()
                .unwrap_or_default()
                .encode(buf)
                .map_err(|e| StoreError::Invalid(format!("resync route encode: {e}")))?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO route_resync_routes
                     (agent_id, peer, afi, net, len, path_id, prefix, attrs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                agent_id,
                peer,
                afi,
                p.net(),
                i64::from(p.len),
                ev.path_id.map(i64::from).unwrap_or(-1),
                ev.prefix,
                &buf[..]
            ])?;
            Ok(0)
        }
        Ok(T::ResyncEnd) => {
            let state: Option<(i64, i64)> = tx
                .prepare_cached(
                    "SELECT begin_seq, staged FROM route_resyncs
                     WHERE agent_id = ?1 AND peer = ?2 AND afi = ?3",
                )?
                .query_row(params![agent_id, peer, afi], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let complete = state.is_some_and(|(_, staged)| {
                u64::try_from(staged).is_ok_and(|s| s == ev.prefix_count)
            });
            let mut outcome = pb::ResyncOutcome::default();
            let mut rows = 0;
            if complete {
                outcome.applied = true;
                rows += apply(
                    tx,
                    last_key,
                    &next_key,
                    (org, team, agent_id, &peer, afi),
                    seq,
                    received_ms,
                    ev,
                    &mut outcome,
                    buf,
                )?;
                tracing::info!(
                    agent = %agent_id, peer, afi, routes = ev.prefix_count,
                    added = outcome.added, changed = outcome.changed, removed = outcome.removed,
                    "resync snapshot applied"
                );
            } else {
                tracing::warn!(
                    agent = %agent_id, peer, afi, expected = ev.prefix_count,
                    staged = state.map(|s| s.1), "resync snapshot incomplete; discarded, the table is unchanged"
                );
            }
            tx.prepare_cached(
                "DELETE FROM route_resync_routes WHERE agent_id = ?1 AND peer = ?2 AND afi = ?3",
            )?
            .execute(params![agent_id, peer, afi])?;
            tx.prepare_cached(
                "DELETE FROM route_resyncs WHERE agent_id = ?1 AND peer = ?2 AND afi = ?3",
            )?
            .execute(params![agent_id, peer, afi])?;
            ev.reason = RESYNC_REASON.into();
            ev.resync = Some(outcome);
            *last_key = next_key(*last_key);
            if crate::routes::write_event(
                tx,
                *last_key,
                org,
                team,
                agent_id,
                seq,
                received_ms,
                ev,
                buf,
            )? {
                rows += 1;
            }
            Ok(rows)
        }
        _ => Ok(0),
    }
}

/// Which attributes differ, by the names listener events use.
fn changed(a: &pb::RouteAttributes, b: &pb::RouteAttributes) -> Vec<String> {
    let mut v = Vec::new();
    let mut check = |differs: bool, name: &str| {
        if differs {
            v.push(name.to_string());
        }
    };
    check(a.origin != b.origin, "origin");
    check(a.as_path != b.as_path, "as_path");
    check(a.next_hop != b.next_hop, "next_hop");
    check(a.med != b.med, "med");
    check(a.local_pref != b.local_pref, "local_pref");
    check(a.communities != b.communities, "communities");
    check(
        a.extended_communities != b.extended_communities,
        "extended_communities",
    );
    check(
        a.large_communities != b.large_communities,
        "large_communities",
    );
    check(a.atomic_aggregate != b.atomic_aggregate, "atomic_aggregate");
    check(
        a.aggregator_as != b.aggregator_as || a.aggregator_address != b.aggregator_address,
        "aggregator",
    );
    check(a.other_attribute_types != b.other_attribute_types, "other");
    v
}

/// Replaces the held routes of one peer and family by the staged snapshot, storing each
/// difference as an event. Returns the events stored.
#[allow(clippy::too_many_arguments)]
fn apply(
    tx: &Connection,
    last_key: &mut i64,
    next_key: &impl Fn(i64) -> i64,
    (org, team, agent_id, peer, afi): (&str, &str, &str, &str, i64),
    seq: i64,
    received_ms: i64,
    end: &pb::RouteEvent,
    outcome: &mut pb::ResyncOutcome,
    buf: &mut Vec<u8>,
) -> Result<u64, StoreError> {
    // Differences are collected first: the routes table must not change under a running query.
    let mut derived: Vec<pb::RouteEvent> = Vec::new();
    let base = pb::RouteEvent {
        peer: end.peer.clone(),
        afi_safi: end.afi_safi,
        // When the listener took the snapshot: the real time of the change is unknown.
        observed_at: end.observed_at,
        reason: RESYNC_REASON.into(),
        agent_id: end.agent_id.clone(),
        seq: end.seq,
        received_at: end.received_at,
        ..Default::default()
    };
    {
        let mut st = tx.prepare_cached(
            "SELECT s.prefix, s.path_id, s.attrs, r.body FROM route_resync_routes s
             LEFT JOIN routes r ON r.agent_id = s.agent_id AND r.peer = s.peer AND r.afi = s.afi
                 AND r.net = s.net AND r.len = s.len AND r.path_id = s.path_id
             WHERE s.agent_id = ?1 AND s.peer = ?2 AND s.afi = ?3",
        )?;
        let mut rows = st.query(params![agent_id, peer, afi])?;
        while let Some(r) = rows.next()? {
            let prefix: String = r.get(0)?;
            let path_id: i64 = r.get(1)?;
            let attrs: Vec<u8> = r.get(2)?;
            let held: Option<Vec<u8>> = r.get(3)?;
            let new = pb::RouteAttributes::decode(attrs.as_slice())
                .map_err(|e| StoreError::Invalid(format!("staged resync route: {e}")))?;
            let path_id = u32::try_from(path_id).ok();
            let old = match held {
                None => None,
                Some(b) => Some(
                    pb::Route::decode(b.as_slice())
                        .map_err(|e| StoreError::Invalid(format!("stored route: {e}")))?
                        .attributes
                        .unwrap_or_default(),
                ),
            };
            match old {
                None => {
                    outcome.added += 1;
                    derived.push(pb::RouteEvent {
                        r#type: pb::RouteEventType::Announce as i32,
                        prefix,
                        path_id,
                        attributes: Some(new),
                        ..base.clone()
                    });
                }
                Some(old) if old == new => outcome.unchanged += 1,
                Some(old) => {
                    outcome.changed += 1;
                    derived.push(pb::RouteEvent {
                        r#type: pb::RouteEventType::AttributeChange as i32,
                        prefix,
                        path_id,
                        changed: changed(&old, &new),
                        attributes: Some(new),
                        previous: Some(old),
                        ..base.clone()
                    });
                }
            }
        }
    }
    {
        let mut st = tx.prepare_cached(
            "SELECT r.body FROM routes r
             WHERE r.agent_id = ?1 AND r.peer = ?2 AND r.afi = ?3 AND NOT EXISTS (
                 SELECT 1 FROM route_resync_routes s WHERE s.agent_id = r.agent_id
                     AND s.peer = r.peer AND s.afi = r.afi AND s.net = r.net AND s.len = r.len
                     AND s.path_id = r.path_id)",
        )?;
        let mut rows = st.query(params![agent_id, peer, afi])?;
        while let Some(r) = rows.next()? {
            let body: Vec<u8> = r.get(0)?;
            let old = pb::Route::decode(body.as_slice())
                .map_err(|e| StoreError::Invalid(format!("stored route: {e}")))?;
            outcome.removed += 1;
            derived.push(pb::RouteEvent {
                r#type: pb::RouteEventType::Withdraw as i32,
                prefix: old.prefix,
                path_id: old.path_id,
                previous: old.attributes,
                ..base.clone()
            });
        }
    }
    let mut stored = 0;
    for ev in &derived {
        *last_key = next_key(*last_key);
        if crate::routes::write_event(
            tx,
            *last_key,
            org,
            team,
            agent_id,
            seq,
            received_ms,
            ev,
            buf,
        )? {
            stored += 1;
        }
    }
    Ok(stored)
}
