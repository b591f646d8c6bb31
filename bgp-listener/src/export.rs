//! Listener events as wire messages (`foureyes.v1.RouteEvent`) for the collector.
//!
//! One conversion for every source (sessions, BMP, MRT), so the collector stores the same shape
//! whatever the listener heard it from.

use std::net::IpAddr;

use foureyes_proto::v1 as pb;

use crate::event::{
    BmpView, DownReason, Event, Negotiated, Peer, PeerSet, ResyncMark, Route, RouteChange,
    RouteEvent, SessionEvent, Source,
};
use crate::update::{PathAttributes, Rfc7606Action};
use crate::wire::Family;

fn afi_safi(f: Family) -> pb::AfiSafi {
    match f {
        Family::Ipv4Unicast => pb::AfiSafi::Ipv4Unicast,
        Family::Ipv6Unicast => pb::AfiSafi::Ipv6Unicast,
    }
}

pub fn peer(p: &Peer) -> pb::BgpPeer {
    let (source, router, distinguisher) = match p.source {
        Source::Session => (pb::RouteSource::Session, None, 0),
        Source::Mrt => (pb::RouteSource::Mrt, None, 0),
        Source::Bmp {
            router,
            view,
            distinguisher,
        } => (
            match view {
                BmpView::PrePolicy => pb::RouteSource::BmpPrePolicy,
                BmpView::PostPolicy => pb::RouteSource::BmpPostPolicy,
                BmpView::LocRib => pb::RouteSource::BmpLocRib,
            },
            Some(router),
            distinguisher,
        ),
    };
    pb::BgpPeer {
        address: p.addr.to_string(),
        asn: p.asn,
        source: source as i32,
        bmp_router: router.map(|r: IpAddr| r.to_string()).unwrap_or_default(),
        peer_distinguisher: distinguisher,
    }
}

/// The AS that originated a path: the last AS of a path ending in an AS_SEQUENCE.
fn origin_as(a: &PathAttributes) -> u32 {
    a.as_path
        .as_ref()
        .and_then(|segs| segs.last())
        .filter(|s| s.kind == 2)
        .and_then(|s| s.asns.last().copied())
        .unwrap_or(0)
}

pub fn attributes(r: &Route) -> pb::RouteAttributes {
    let a = &*r.attrs;
    pb::RouteAttributes {
        next_hop: r.next_hop.map(|n| n.to_string()).unwrap_or_default(),
        as_path: a
            .as_path
            .iter()
            .flatten()
            .map(|s| pb::AsPathSegment {
                r#type: u32::from(s.kind),
                asns: s.asns.clone(),
            })
            .collect(),
        origin: match a.origin {
            Some(0) => pb::BgpOrigin::Igp,
            Some(1) => pb::BgpOrigin::Egp,
            Some(2) => pb::BgpOrigin::Incomplete,
            _ => pb::BgpOrigin::Unknown,
        } as i32,
        med: a.med,
        local_pref: a.local_pref,
        communities: a.communities.clone(),
        large_communities: a
            .large_communities
            .iter()
            .map(|[g, l1, l2]| pb::LargeCommunity {
                global_admin: *g,
                local_data_1: *l1,
                local_data_2: *l2,
            })
            .collect(),
        extended_communities: a
            .extended_communities
            .iter()
            .map(|c| u64::from_be_bytes(*c))
            .collect(),
        atomic_aggregate: a.atomic_aggregate,
        aggregator_as: a.aggregator.map(|(asn, _)| asn).unwrap_or(0),
        aggregator_address: a
            .aggregator
            .map(|(_, ip)| ip.to_string())
            .unwrap_or_default(),
        origin_as: origin_as(a),
        other_attribute_types: a.other.iter().map(|o| u32::from(o.type_code)).collect(),
    }
}

fn session_info(n: &Negotiated) -> pb::SessionInfo {
    pb::SessionInfo {
        peer_router_id: n.peer_router_id.to_string(),
        hold_time: u32::from(n.hold_time),
        families: n.families.iter().map(|f| afi_safi(*f) as i32).collect(),
        four_octet_as: n.four_octet_as,
        graceful_restart: n.graceful_restart,
        add_path: n.add_path.iter().map(|f| afi_safi(*f) as i32).collect(),
        extended_messages: n.extended_messages,
    }
}

pub fn down_reason(r: &DownReason) -> String {
    match r {
        DownReason::Sent(n) => format!("sent NOTIFICATION {n}"),
        DownReason::Received(n) => format!("received NOTIFICATION {n}"),
        DownReason::ConnectionClosed => "connection closed".into(),
        DownReason::Reported(why) => why.clone(),
        DownReason::PeerRestarted => "peer reconnected (restarted); routes kept as stale".into(),
    }
}

pub fn update_error(a: &Rfc7606Action) -> String {
    match a {
        Rfc7606Action::AttributeDiscard { type_code, reason } => {
            format!("attribute-discard: attribute {type_code}: {reason}")
        }
        Rfc7606Action::TreatAsWithdraw { type_code, reason } => match type_code {
            Some(t) => format!("treat-as-withdraw: attribute {t}: {reason}"),
            None => format!("treat-as-withdraw: {reason}"),
        },
        Rfc7606Action::AfiSafiDisable {
            family,
            type_code,
            reason,
        } => format!("afi-safi-disable: {family}: attribute {type_code}: {reason}"),
    }
}

fn route_event(e: &RouteEvent) -> pb::RouteEvent {
    let mut out = pb::RouteEvent {
        peer: Some(peer(&e.peer)),
        afi_safi: afi_safi(e.family) as i32,
        path_id: e.path_id,
        observed_at: Some(foureyes_proto::timestamp(e.received)),
        source_time: e.source_time.map(foureyes_proto::timestamp),
        ..Default::default()
    };
    let t = match &e.change {
        RouteChange::Announce { prefix, route } => {
            out.prefix = prefix.to_string();
            out.attributes = Some(attributes(route));
            pb::RouteEventType::Announce
        }
        RouteChange::Withdraw { prefix, previous } => {
            out.prefix = prefix.to_string();
            out.previous = Some(attributes(previous));
            pb::RouteEventType::Withdraw
        }
        RouteChange::AttributeChange {
            prefix,
            previous,
            route,
            changed,
        } => {
            out.prefix = prefix.to_string();
            out.attributes = Some(attributes(route));
            out.previous = Some(attributes(previous));
            out.changed = changed.iter().map(|c| c.name().to_string()).collect();
            pb::RouteEventType::AttributeChange
        }
        RouteChange::EndOfRib => pb::RouteEventType::EndOfRib,
        RouteChange::Resync(ResyncMark::Begin) => pb::RouteEventType::ResyncBegin,
        RouteChange::Resync(ResyncMark::Route { prefix, route }) => {
            out.prefix = prefix.to_string();
            out.attributes = Some(attributes(route));
            pb::RouteEventType::ResyncRoute
        }
        RouteChange::Resync(ResyncMark::End { routes }) => {
            out.prefix_count = *routes;
            pb::RouteEventType::ResyncEnd
        }
        RouteChange::Resync(ResyncMark::Session(m)) => {
            out.afi_safi = pb::AfiSafi::Unspecified as i32;
            out.prefix_count = m.routes;
            out.session = m.up.as_ref().map(session_info);
            out.resync_state = Some(pb::ResyncState {
                up: m.up.is_some(),
                since: m.since.map(foureyes_proto::timestamp),
                ..Default::default()
            });
            pb::RouteEventType::ResyncSession
        }
        RouteChange::Resync(ResyncMark::Peers(set)) => {
            out.afi_safi = pb::AfiSafi::Unspecified as i32;
            // The set names its peers itself; the event's own peer is a placeholder.
            out.peer = None;
            out.resync_state = Some(match &**set {
                PeerSet::Listener {
                    sessions,
                    bmp_routers,
                } => pb::ResyncState {
                    peers: sessions.iter().map(peer).collect(),
                    bmp_routers: bmp_routers.iter().map(|r| r.to_string()).collect(),
                    ..Default::default()
                },
                PeerSet::BmpRouter { router, peers } => pb::ResyncState {
                    peers: peers.iter().map(peer).collect(),
                    bmp_router: router.to_string(),
                    ..Default::default()
                },
            });
            pb::RouteEventType::ResyncPeers
        }
    };
    out.r#type = t as i32;
    out
}

/// The wire form of one listener event.
pub fn event(ev: &Event) -> pb::RouteEvent {
    match ev {
        Event::Route(r) => route_event(r),
        Event::Session(s) => {
            let (p, at) = s.peer_and_time();
            let mut out = pb::RouteEvent {
                peer: Some(peer(p)),
                observed_at: Some(foureyes_proto::timestamp(*at)),
                ..Default::default()
            };
            match s {
                SessionEvent::Established { negotiated, .. } => {
                    out.r#type = pb::RouteEventType::SessionUp as i32;
                    out.session = Some(session_info(negotiated));
                }
                SessionEvent::Down {
                    reason,
                    routes_lost,
                    routes_stale,
                    ..
                } => {
                    out.r#type = pb::RouteEventType::SessionDown as i32;
                    out.reason = down_reason(reason);
                    out.routes_lost = *routes_lost as u64;
                    out.routes_stale = *routes_stale as u64;
                }
                SessionEvent::StaleDropped {
                    family,
                    routes,
                    reason,
                    ..
                } => {
                    out.r#type = pb::RouteEventType::StaleDropped as i32;
                    out.afi_safi = afi_safi(*family) as i32;
                    out.routes_lost = *routes as u64;
                    out.reason = reason.name().to_string();
                }
                SessionEvent::PrefixLimit {
                    family,
                    count,
                    limit,
                    teardown,
                    ..
                } => {
                    out.r#type = pb::RouteEventType::MaxPrefix as i32;
                    out.afi_safi = afi_safi(*family) as i32;
                    out.prefix_count = *count as u64;
                    out.reason = format!(
                        "limit {limit}{}",
                        if *teardown { ", session torn down" } else { "" }
                    );
                }
                SessionEvent::UpdateError { action, .. } => {
                    out.r#type = pb::RouteEventType::UpdateError as i32;
                    out.reason = update_error(action);
                }
                SessionEvent::Statistics {
                    source_time, stats, ..
                } => {
                    out.r#type = pb::RouteEventType::SessionInfo as i32;
                    out.source_time = source_time.map(foureyes_proto::timestamp);
                    out.reason = statistics(stats);
                }
            }
            out
        }
    }
}

/// BMP statistics as one readable line: `stat TYPE[ afi/safi]=VALUE`, comma-separated.
fn statistics(stats: &[crate::event::Statistic]) -> String {
    stats
        .iter()
        .map(|s| {
            let fam = s
                .afi_safi
                .map(|(a, f)| format!(" {a}/{f}"))
                .unwrap_or_default();
            let v = match s.value {
                Some(v) => v.to_string(),
                None => format!(
                    "0x{}",
                    s.raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
                ),
            };
            format!("stat {}{fam}={v}", s.stat_type)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn bmp_peers_keep_their_router_view_and_source_time() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let p = Peer {
            addr: "198.18.0.1".parse().unwrap(),
            asn: 65001,
            source: Source::Bmp {
                router: "192.0.2.1".parse().unwrap(),
                view: BmpView::PostPolicy,
                distinguisher: 7,
            },
        };
        let ev = event(&Event::Route(RouteEvent {
            peer: p,
            family: Family::Ipv6Unicast,
            path_id: Some(3),
            received: at,
            source_time: Some(at - Duration::from_secs(2)),
            change: RouteChange::EndOfRib,
        }));
        let peer = ev.peer.unwrap();
        assert_eq!(peer.source, pb::RouteSource::BmpPostPolicy as i32);
        assert_eq!(peer.bmp_router, "192.0.2.1");
        assert_eq!(peer.peer_distinguisher, 7);
        assert_eq!(ev.r#type, pb::RouteEventType::EndOfRib as i32);
        assert_eq!(ev.afi_safi, pb::AfiSafi::Ipv6Unicast as i32);
        assert_eq!(ev.path_id, Some(3));
        assert_eq!(ev.source_time.unwrap().seconds, 1_799_999_998);
        let stats = event(&Event::Session(SessionEvent::Statistics {
            peer: p,
            at,
            source_time: None,
            stats: vec![
                crate::event::Statistic {
                    stat_type: 7,
                    afi_safi: None,
                    value: Some(12),
                    raw: vec![],
                },
                crate::event::Statistic {
                    stat_type: 99,
                    afi_safi: Some((1, 1)),
                    value: None,
                    raw: vec![0xab],
                },
            ],
        }));
        assert_eq!(stats.r#type, pb::RouteEventType::SessionInfo as i32);
        assert_eq!(stats.reason, "stat 7=12, stat 99 1/1=0xab");
    }
}
