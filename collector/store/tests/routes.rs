//! Route events and the routes table: ingest keeps each listener peer's table, reads are scoped and
//! match prefixes exactly, by covering, longest-per-peer or within.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use foureyes_proto::v1::{self as pb, record};
use foureyes_store::{
    BatchOutcome, IpPrefix, PrefixMatch, RouteEventFilter, RouteQuery, Scope, Store,
};

fn peer(addr: &str) -> Option<pb::BgpPeer> {
    Some(pb::BgpPeer {
        address: addr.into(),
        asn: 65001,
        source: pb::RouteSource::Session as i32,
        ..Default::default()
    })
}

fn ev(seq: u64, t: pb::RouteEventType, from: &str, prefix: &str, med: Option<u32>) -> pb::Record {
    pb::Record {
        seq,
        kind: Some(record::Kind::RouteEvent(pb::RouteEvent {
            r#type: t as i32,
            peer: peer(from),
            afi_safi: if prefix.contains(':') {
                pb::AfiSafi::Ipv6Unicast
            } else {
                pb::AfiSafi::Ipv4Unicast
            } as i32,
            prefix: prefix.into(),
            attributes: Some(pb::RouteAttributes {
                med,
                ..Default::default()
            }),
            // A lie the collector must overwrite.
            agent_id: "forged".into(),
            ..Default::default()
        })),
    }
}

fn session(seq: u64, t: pb::RouteEventType, from: &str, stale: u64) -> pb::Record {
    pb::Record {
        seq,
        kind: Some(record::Kind::RouteEvent(pb::RouteEvent {
            r#type: t as i32,
            peer: peer(from),
            routes_stale: stale,
            ..Default::default()
        })),
    }
}

fn q(prefix: &str, how: PrefixMatch) -> RouteQuery {
    RouteQuery {
        prefix: IpPrefix::parse(prefix).unwrap(),
        how,
        agent_id: None,
        peer: None,
    }
}

fn prefixes(s: &dyn Store, scope: &Scope, query: &RouteQuery) -> Vec<String> {
    s.routes(scope, query)
        .unwrap()
        .into_iter()
        .map(|r| format!("{} {}", r.peer.unwrap().address, r.prefix))
        .collect()
}

use pb::RouteEventType as T;

#[test]
fn events_build_each_peers_table_and_reads_match_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    tenants(&s);
    agent(&s, "l1", "a", Some("x"), pb::AgentKind::Listener);
    agent(&s, "l2", "b", Some("x"), pb::AgentKind::Listener);
    let a_batch = vec![
        session(1, T::SessionUp, "192.0.2.1", 0),
        ev(2, T::Announce, "192.0.2.1", "10.0.0.0/8", None),
        ev(3, T::Announce, "192.0.2.1", "10.1.0.0/16", Some(5)),
        ev(4, T::Announce, "192.0.2.1", "10.1.2.0/24", None),
        ev(5, T::Announce, "192.0.2.2", "10.1.0.0/16", None),
        ev(6, T::Announce, "192.0.2.1", "2001:db8::/32", None),
        ev(7, T::AttributeChange, "192.0.2.1", "10.1.0.0/16", Some(9)),
        ev(8, T::Withdraw, "192.0.2.1", "10.1.2.0/24", None),
        ev(9, T::Announce, "192.0.2.1", "not-a-prefix", None),
    ];
    let out = s
        .write_batches(
            &sys(),
            &[
                batch("l1", "a", "x", a_batch.clone(), 1_700_000_000_000),
                batch(
                    "l2",
                    "b",
                    "x",
                    vec![ev(1, T::Announce, "192.0.2.9", "10.1.2.0/24", None)],
                    1_700_000_000_001,
                ),
            ],
        )
        .unwrap();
    // The bad prefix is not kept, but its sequence number is spent.
    assert_eq!(
        out[0],
        BatchOutcome::Stored {
            watermark: 9,
            rows: 8,
            duplicates: 0
        }
    );
    // A replay stores nothing twice.
    let again = s
        .write_batches(&sys(), &[batch("l1", "a", "x", a_batch, 1_700_000_000_002)])
        .unwrap();
    assert!(matches!(
        again[0],
        BatchOutcome::Stored {
            rows: 0,
            duplicates: 9,
            ..
        }
    ));

    let a = org("a");
    let evs = s
        .route_events(&a, &RouteEventFilter::default(), None, 100)
        .unwrap();
    assert_eq!(evs.events.len(), 8);
    assert!(evs.events.iter().all(|e| e.agent_id == "l1"));
    assert_eq!(
        evs.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6, 7, 8]
    );

    // Longest match per peer: .1 has 10.1/16 (its /24 was withdrawn), .2 has 10.1/16.
    assert_eq!(
        prefixes(&s, &a, &q("10.1.2.3", PrefixMatch::Longest)),
        vec!["192.0.2.1 10.1.0.0/16", "192.0.2.2 10.1.0.0/16"]
    );
    let r = s.routes(&a, &q("10.1.0.0/16", PrefixMatch::Exact)).unwrap();
    assert_eq!(r.len(), 2);
    let changed = r
        .iter()
        .find(|r| r.peer.as_ref().unwrap().address == "192.0.2.1")
        .unwrap();
    assert_eq!(changed.attributes.as_ref().unwrap().med, Some(9));
    assert_eq!(changed.seq, 7);
    assert_eq!(
        prefixes(&s, &a, &q("10.1.2.3", PrefixMatch::Covering)),
        vec![
            "192.0.2.1 10.0.0.0/8",
            "192.0.2.1 10.1.0.0/16",
            "192.0.2.2 10.1.0.0/16"
        ]
    );
    assert_eq!(
        prefixes(&s, &a, &q("10.0.0.0/8", PrefixMatch::Within)),
        vec![
            "192.0.2.1 10.0.0.0/8",
            "192.0.2.1 10.1.0.0/16",
            "192.0.2.2 10.1.0.0/16"
        ]
    );
    assert_eq!(
        prefixes(&s, &a, &q("2001:db8:1::1", PrefixMatch::Longest)),
        vec!["192.0.2.1 2001:db8::/32"]
    );
    // Filters by peer and by event type and prefix.
    let mut by_peer = q("10.0.0.0/8", PrefixMatch::Within);
    by_peer.peer = Some("192.0.2.2".parse().unwrap());
    assert_eq!(prefixes(&s, &a, &by_peer), vec!["192.0.2.2 10.1.0.0/16"]);
    let f = RouteEventFilter {
        prefix: Some((IpPrefix::parse("10.1.2.0/24").unwrap(), PrefixMatch::Exact)),
        types: vec![T::Withdraw],
        ..Default::default()
    };
    let w = s.route_events(&a, &f, None, 10).unwrap();
    assert_eq!(w.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![8]);

    // Tenants and teams see only their own.
    assert_eq!(
        prefixes(&s, &org("b"), &q("10.1.2.3", PrefixMatch::Longest)),
        vec!["192.0.2.9 10.1.2.0/24"]
    );
    assert!(prefixes(&s, &team("a", "y"), &q("0.0.0.0/0", PrefixMatch::Within)).is_empty());
    assert_eq!(
        prefixes(&s, &team("a", "x"), &q("0.0.0.0/0", PrefixMatch::Within)).len(),
        3
    );
    assert!(
        s.route_events(&team("a", "y"), &RouteEventFilter::default(), None, 10)
            .unwrap()
            .events
            .is_empty()
    );

    // Pages walk in order.
    let mut seqs = Vec::new();
    let mut cursor = None;
    loop {
        let p = s
            .route_events(&a, &RouteEventFilter::default(), cursor, 3)
            .unwrap();
        seqs.extend(p.events.iter().map(|e| e.seq));
        match p.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6, 7, 8]);

    // A session loss with stale routes (graceful restart) keeps the table; without, empties it.
    s.write_batches(
        &sys(),
        &[batch(
            "l1",
            "a",
            "x",
            vec![session(10, T::SessionDown, "192.0.2.1", 3)],
            1_700_000_000_003,
        )],
    )
    .unwrap();
    assert_eq!(
        prefixes(&s, &a, &q("0.0.0.0/0", PrefixMatch::Within)).len(),
        3
    );
    s.write_batches(
        &sys(),
        &[batch(
            "l1",
            "a",
            "x",
            vec![session(12, T::SessionDown, "192.0.2.1", 0)],
            1_700_000_000_004,
        )],
    )
    .unwrap();
    assert_eq!(
        prefixes(&s, &a, &q("0.0.0.0/0", PrefixMatch::Within)),
        vec!["192.0.2.2 10.1.0.0/16"]
    );
    assert!(prefixes(&s, &a, &q("::/0", PrefixMatch::Within)).is_empty());
}

/// `Store::peers`: the latest up or down decides a peer's state, the latest down gives its last
/// error, route counts are per family, a peer with routes but no kept session event is "unknown",
/// and another tenant sees none of it.
#[test]
fn peers_show_session_state_route_counts_and_last_error_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    tenants(&s);
    agent(&s, "l1", "a", Some("x"), pb::AgentKind::Listener);
    agent(&s, "l2", "b", Some("x"), pb::AgentKind::Listener);
    let mut down = session(4, T::SessionDown, "192.0.2.2", 0);
    if let Some(record::Kind::RouteEvent(e)) = &mut down.kind {
        e.reason = "hold timer expired".into();
    }
    let a_batch = vec![
        session(1, T::SessionUp, "192.0.2.1", 0),
        session(2, T::SessionUp, "192.0.2.2", 0),
        ev(3, T::Announce, "192.0.2.2", "10.9.0.0/16", None),
        down,
        ev(5, T::Announce, "192.0.2.1", "10.0.0.0/8", None),
        ev(6, T::Announce, "192.0.2.1", "10.1.0.0/16", None),
        ev(7, T::Announce, "192.0.2.1", "2001:db8::/32", None),
        session(8, T::SessionUp, "192.0.2.2", 0),
    ];
    s.write_batches(
        &sys(),
        &[
            batch("l1", "a", "x", a_batch, 1_700_000_000_000),
            batch(
                "l2",
                "b",
                "x",
                vec![ev(1, T::Announce, "192.0.2.9", "10.1.2.0/24", None)],
                1_700_000_000_001,
            ),
        ],
    )
    .unwrap();
    let ps = s.peers(&org("a")).unwrap();
    assert_eq!(ps.len(), 2, "{ps:?}");
    let p1 = &ps[0];
    assert_eq!(p1.peer.as_ref().unwrap().address, "192.0.2.1");
    assert_eq!((p1.agent_id.as_str(), p1.state.as_str()), ("l1", "up"));
    assert_eq!((p1.prefixes_v4, p1.prefixes_v6), (2, 1));
    assert!(p1.last_error.is_empty() && p1.since.is_some());
    // Down, then up again: up now, with the down's reason as the last error; the down emptied
    // its table (no graceful restart).
    let p2 = &ps[1];
    assert_eq!(p2.state, "up");
    assert_eq!(p2.last_error, "hold timer expired");
    assert!(p2.last_error_at.is_some());
    assert_eq!((p2.prefixes_v4, p2.prefixes_v6), (0, 0));
    // Org b's listener has routes but no session event: unknown, and only org b sees it.
    let pb_ = s.peers(&org("b")).unwrap();
    assert_eq!(pb_.len(), 1);
    assert_eq!(
        (
            pb_[0].state.as_str(),
            pb_[0].prefixes_v4,
            pb_[0].agent_id.as_str()
        ),
        ("unknown", 1, "l2")
    );
    assert_eq!(pb_[0].peer.as_ref().unwrap().address, "192.0.2.9");
    assert!(s.peers(&team("a", "y")).unwrap().is_empty());
}
