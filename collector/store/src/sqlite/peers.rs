//! `Store::peers`: each listener peer's session state and route counts, from what ingest already
//! keeps. Session events have no prefix, so they sit at `(afi 0, net '', len 0)` of the
//! `route_events_prefix` index: reading them newest first touches no announcement rows. Route
//! counts are one grouped pass over the tenant's part of the routes table.

use std::collections::BTreeMap;

use foureyes_proto::v1 as pb;
use prost::Message;
use rusqlite::params_from_iter;

use super::{SqliteStore, Where};
use crate::{
    Scope, StoreError,
    prefix::{AFI_IPV4, AFI_IPV6, AFI_NONE},
};

/// Session events read at most per call (newest first). A peer whose last up or down is older
/// than this many session events of its tenant shows as "unknown".
pub const MAX_SESSION_EVENTS: usize = 100_000;
/// Peers returned at most.
pub const MAX_PEERS: usize = 10_000;

impl SqliteStore {
    pub(super) fn peer_states(&self, scope: &Scope) -> Result<Vec<pb::PeerState>, StoreError> {
        let up = pb::RouteEventType::SessionUp as i64;
        let down = pb::RouteEventType::SessionDown as i64;
        let w = Where::default()
            .scope(scope, "")
            .and("afi = ?", AFI_NONE)
            .and("net = ?", Vec::<u8>::new())
            .and("len = ?", 0i64);
        let (events, counts) = self.read(|c| {
            let sql = format!(
                "SELECT agent_id, peer, received_ms, body FROM route_events{} AND type IN ({up}, {down})
                 ORDER BY key DESC LIMIT {MAX_SESSION_EVENTS}",
                w.sql()
            );
            let mut st = c.prepare_cached(&sql)?;
            let events = st
                .query_map(params_from_iter(&w.params), |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let cw = Where::default().scope(scope, "");
            let sql = format!(
                "SELECT agent_id, peer, afi, COUNT(*), MIN(body) FROM routes{}
                 GROUP BY agent_id, peer, afi LIMIT {}",
                cw.sql(),
                MAX_PEERS * 2
            );
            let mut st = c.prepare_cached(&sql)?;
            let counts = st
                .query_map(params_from_iter(&cw.params), |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, StoreError>((events, counts))
        })?;

        let mut peers: BTreeMap<(String, String), pb::PeerState> = BTreeMap::new();
        // Newest first: the first up/down seen for a peer is its state, the first down its error.
        for (agent, peer, received_ms, body) in events {
            let ev = pb::RouteEvent::decode(body.as_slice())?;
            let at = Some(foureyes_proto::timestamp_from_ms(received_ms));
            if peers.len() >= MAX_PEERS && !peers.contains_key(&(agent.clone(), peer.clone())) {
                continue;
            }
            let p = peers
                .entry((agent.clone(), peer))
                .or_insert_with(|| pb::PeerState {
                    agent_id: agent,
                    peer: ev.peer.clone(),
                    ..Default::default()
                });
            let is_down = ev.r#type == pb::RouteEventType::SessionDown as i32;
            if p.state.is_empty() {
                p.state = if is_down { "down" } else { "up" }.into();
                p.since = at;
            }
            if is_down && p.last_error_at.is_none() {
                p.last_error = ev.reason;
                p.last_error_at = at;
            }
        }
        for (agent, peer, afi, n, body) in counts {
            if peers.len() >= MAX_PEERS && !peers.contains_key(&(agent.clone(), peer.clone())) {
                continue;
            }
            let p = peers.entry((agent.clone(), peer)).or_insert_with(|| {
                let route = pb::Route::decode(body.as_slice()).unwrap_or_default();
                pb::PeerState {
                    agent_id: agent,
                    peer: route.peer,
                    state: "unknown".into(),
                    ..Default::default()
                }
            });
            let n = u64::try_from(n).unwrap_or(0);
            match afi {
                AFI_IPV4 => p.prefixes_v4 = n,
                AFI_IPV6 => p.prefixes_v6 = n,
                _ => {}
            }
        }
        Ok(peers.into_values().collect())
    }
}
