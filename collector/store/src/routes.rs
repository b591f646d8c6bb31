//! Route events and the routes table (schema v4): what ingest writes, and the tenant-scoped reads.
//!
//! The routes table is the collector's copy of every listener peer's Adj-RIB-In, kept by replaying
//! the listener's events in sequence order inside the ingest transaction: announce and attribute
//! change upsert, withdraw deletes, a session coming up or going down without stale routes
//! (no graceful restart) empties that peer's table, and stale routes dropped after a graceful
//! restart empty that peer's table for the family. A session that comes up fresh therefore also
//! clears what an earlier run of the listener left behind (it cannot have sent a down event if it
//! was killed).

use foureyes_proto::v1 as pb;
use prost::Message;
use rusqlite::{Connection, params};

use crate::prefix::{AFI_NONE, IpPrefix};
use crate::{PrefixMatch, StoreError};

/// The stable key of a listener's peer (source, BMP router, distinguisher, address), and the
/// peer's address alone. The routes table and the correlator key peers by it.
pub fn peer_key(p: Option<&pb::BgpPeer>) -> (String, String) {
    match p {
        Some(p) => (
            format!(
                "{}|{}|{}|{}",
                p.source, p.bmp_router, p.peer_distinguisher, p.address
            ),
            p.address.clone(),
        ),
        None => ("||0|".into(), String::new()),
    }
}

/// `(afi, net, len)` of an event's prefix; session events (no prefix) get `(0, [], 0)`.
fn prefix_cols(prefix: &str) -> Result<(i64, Vec<u8>, i64), String> {
    if prefix.is_empty() {
        return Ok((AFI_NONE, Vec::new(), 0));
    }
    let p = IpPrefix::parse(prefix)?;
    Ok((p.afi(), p.net(), i64::from(p.len)))
}

/// Writes one route event (the collector's fields already set in `ev`) and applies it to the routes
/// table. Returns false when the event was not kept (an unparsable prefix: logged, the sequence
/// number is spent all the same).
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_event(
    tx: &Connection,
    key: i64,
    org: &str,
    team: &str,
    agent_id: &str,
    seq: i64,
    received_ms: i64,
    ev: &pb::RouteEvent,
    buf: &mut Vec<u8>,
) -> Result<bool, StoreError> {
    let (afi, net, len) = match prefix_cols(&ev.prefix) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(agent = %agent_id, seq, error = %e, "route event with a bad prefix dropped");
            return Ok(false);
        }
    };
    let (peer, peer_addr) = peer_key(ev.peer.as_ref());
    buf.clear();
    ev.encode(buf)
        .map_err(|e| StoreError::Invalid(format!("route event encode: {e}")))?;
    tx.prepare_cached(
        "INSERT INTO route_events (key, org, team, agent_id, seq, type, peer, peer_addr, afi, net,
             len, received_ms, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        key,
        org,
        team,
        agent_id,
        seq,
        ev.r#type,
        peer,
        peer_addr,
        afi,
        net,
        len,
        received_ms,
        &buf[..]
    ])?;
    let path_id = ev.path_id.map(i64::from).unwrap_or(-1);
    use pb::RouteEventType as T;
    // A new session state ends any resync snapshot being staged for the peer.
    match T::try_from(ev.r#type).unwrap_or(T::Unspecified) {
        T::SessionUp | T::SessionDown => crate::resync::discard(tx, agent_id, &peer, None)?,
        T::StaleDropped => {
            let afi = match pb::AfiSafi::try_from(ev.afi_safi) {
                Ok(pb::AfiSafi::Ipv4Unicast) => Some(crate::prefix::AFI_IPV4),
                Ok(pb::AfiSafi::Ipv6Unicast) => Some(crate::prefix::AFI_IPV6),
                _ => None,
            };
            if afi.is_some() {
                crate::resync::discard(tx, agent_id, &peer, afi)?;
            }
        }
        _ => {}
    }
    match T::try_from(ev.r#type).unwrap_or(T::Unspecified) {
        T::Announce | T::AttributeChange if afi != AFI_NONE => {
            let route = pb::Route {
                agent_id: agent_id.to_string(),
                peer: ev.peer.clone(),
                afi_safi: ev.afi_safi,
                prefix: ev.prefix.clone(),
                path_id: ev.path_id,
                attributes: ev.attributes.clone(),
                since: ev.observed_at,
                seq: u64::try_from(seq).unwrap_or(0),
                // Computed by the API when served: VRPs change without the route changing.
                rpki_state: 0,
            };
            buf.clear();
            route
                .encode(buf)
                .map_err(|e| StoreError::Invalid(format!("route encode: {e}")))?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO routes (agent_id, peer, afi, net, len, path_id, peer_addr,
                     org, team, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                agent_id,
                peer,
                afi,
                net,
                len,
                path_id,
                peer_addr,
                org,
                team,
                &buf[..]
            ])?;
        }
        T::Withdraw if afi != AFI_NONE => {
            tx.prepare_cached(
                "DELETE FROM routes WHERE agent_id = ?1 AND peer = ?2 AND afi = ?3 AND net = ?4
                     AND len = ?5 AND path_id = ?6",
            )?
            .execute(params![agent_id, peer, afi, net, len, path_id])?;
        }
        T::StaleDropped => {
            let afi = match pb::AfiSafi::try_from(ev.afi_safi) {
                Ok(pb::AfiSafi::Ipv4Unicast) => crate::prefix::AFI_IPV4,
                Ok(pb::AfiSafi::Ipv6Unicast) => crate::prefix::AFI_IPV6,
                _ => return Ok(true),
            };
            tx.prepare_cached("DELETE FROM routes WHERE agent_id = ?1 AND peer = ?2 AND afi = ?3")?
                .execute(params![agent_id, peer, afi])?;
        }
        T::SessionUp | T::SessionDown if ev.routes_stale == 0 => {
            tx.prepare_cached("DELETE FROM routes WHERE agent_id = ?1 AND peer = ?2")?
                .execute(params![agent_id, peer])?;
        }
        _ => {}
    }
    Ok(true)
}

/// The SQL condition (and its parameters) selecting stored prefixes against a query prefix.
/// `Longest` selects the covering prefixes; the caller keeps the longest per peer.
pub(crate) fn prefix_condition(
    p: &IpPrefix,
    how: PrefixMatch,
) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    match how {
        PrefixMatch::Exact => (
            "afi = ? AND net = ? AND len = ?".into(),
            vec![
                Value::Integer(p.afi()),
                Value::Blob(p.net()),
                Value::Integer(i64::from(p.len)),
            ],
        ),
        PrefixMatch::Covering | PrefixMatch::Longest => {
            let cands = p.covering();
            let mut sql = String::from("afi = ? AND (net, len) IN (VALUES ");
            let mut params = vec![Value::Integer(p.afi())];
            for (i, (net, len)) in cands.into_iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str("(?, ?)");
                params.push(Value::Blob(net));
                params.push(Value::Integer(i64::from(len)));
            }
            sql.push(')');
            (sql, params)
        }
        PrefixMatch::Within => (
            "afi = ? AND net >= ? AND net <= ? AND len >= ?".into(),
            vec![
                Value::Integer(p.afi()),
                Value::Blob(p.net()),
                Value::Blob(p.broadcast()),
                Value::Integer(i64::from(p.len)),
            ],
        ),
    }
}
