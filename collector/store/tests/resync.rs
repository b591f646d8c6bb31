//! Resync snapshots: ingest replaces a listener peer's table in one family by the snapshot at its
//! end marker, stores only the differences (reason "resync"), and leaves the table alone when a
//! snapshot is incomplete or interrupted.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use foureyes_proto::v1::{self as pb, record};
use foureyes_store::{IpPrefix, PrefixMatch, RESYNC_REASON, RouteEventFilter, RouteQuery, Store};

use pb::RouteEventType as T;

fn peer(addr: &str) -> Option<pb::BgpPeer> {
    Some(pb::BgpPeer {
        address: addr.into(),
        asn: 65001,
        source: pb::RouteSource::Session as i32,
        ..Default::default()
    })
}

fn family(prefix: &str) -> i32 {
    if prefix.contains(':') {
        pb::AfiSafi::Ipv6Unicast as i32
    } else {
        pb::AfiSafi::Ipv4Unicast as i32
    }
}

fn ev(seq: u64, t: T, from: &str, prefix: &str, med: u32) -> pb::Record {
    pb::Record {
        seq,
        kind: Some(record::Kind::RouteEvent(pb::RouteEvent {
            r#type: t as i32,
            peer: peer(from),
            afi_safi: family(prefix),
            prefix: prefix.into(),
            attributes: Some(pb::RouteAttributes {
                med: Some(med),
                next_hop: "198.18.0.1".into(),
                ..Default::default()
            }),
            ..Default::default()
        })),
    }
}

fn mark(seq: u64, t: T, from: &str, v6: bool, count: u64) -> pb::Record {
    pb::Record {
        seq,
        kind: Some(record::Kind::RouteEvent(pb::RouteEvent {
            r#type: t as i32,
            peer: peer(from),
            afi_safi: family(if v6 { "::/0" } else { "0.0.0.0/0" }),
            prefix_count: count,
            ..Default::default()
        })),
    }
}

fn session_up(seq: u64, from: &str) -> pb::Record {
    pb::Record {
        seq,
        kind: Some(record::Kind::RouteEvent(pb::RouteEvent {
            r#type: T::SessionUp as i32,
            peer: peer(from),
            ..Default::default()
        })),
    }
}

/// `peer prefix med` of every route org `a` sees, sorted.
fn table(s: &dyn Store) -> Vec<String> {
    let mut v: Vec<String> = ["0.0.0.0/0", "::/0"]
        .iter()
        .flat_map(|p| {
            s.routes(
                &org("a"),
                &RouteQuery {
                    prefix: IpPrefix::parse(p).unwrap(),
                    how: PrefixMatch::Within,
                    agent_id: None,
                    peer: None,
                },
            )
            .unwrap()
        })
        .map(|r| {
            format!(
                "{} {} {}",
                r.peer.unwrap().address,
                r.prefix,
                r.attributes.unwrap().med.unwrap_or(0)
            )
        })
        .collect();
    v.sort();
    v
}

fn events(s: &dyn Store) -> Vec<pb::RouteEvent> {
    s.route_events(&org("a"), &RouteEventFilter::default(), None, 1000)
        .unwrap()
        .events
}

fn setup() -> (tempfile::TempDir, foureyes_store::SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    tenants(&s);
    agent(&s, "l1", "a", Some("x"), pb::AgentKind::Listener);
    agent(&s, "l2", "b", Some("x"), pb::AgentKind::Listener);
    let live = vec![
        session_up(1, "192.0.2.1"),
        ev(2, T::Announce, "192.0.2.1", "10.0.0.0/24", 1),
        ev(3, T::Announce, "192.0.2.1", "10.0.1.0/24", 2),
        ev(4, T::Announce, "192.0.2.1", "10.0.2.0/24", 3),
        ev(5, T::Announce, "192.0.2.1", "2001:db8::/32", 4),
        ev(6, T::Announce, "192.0.2.2", "10.0.2.0/24", 5),
    ];
    s.write_batches(&sys(), &[batch("l1", "a", "x", live, 1_700_000_000_000)])
        .unwrap();
    (dir, s)
}

const BEFORE: [&str; 5] = [
    "192.0.2.1 10.0.0.0/24 1",
    "192.0.2.1 10.0.1.0/24 2",
    "192.0.2.1 10.0.2.0/24 3",
    "192.0.2.1 2001:db8::/32 4",
    "192.0.2.2 10.0.2.0/24 5",
];

#[test]
fn a_snapshot_replaces_one_peer_family_and_stores_only_the_differences() {
    let (_dir, s) = setup();
    // The spool dropped: the withdraw of 10.0.2.0/24, a MED change of 10.0.1.0/24 and the
    // announcement of 10.0.3.0/24. The snapshot of the IPv4 table says so; it spans two batches
    // (two flushes) and another peer's live event sits inside it.
    let first = vec![
        mark(7, T::ResyncBegin, "192.0.2.1", false, 0),
        ev(8, T::ResyncRoute, "192.0.2.1", "10.0.0.0/24", 1),
        ev(9, T::ResyncRoute, "192.0.2.1", "10.0.1.0/24", 20),
        ev(10, T::Announce, "192.0.2.2", "10.0.9.0/24", 6),
    ];
    let second = vec![
        ev(11, T::ResyncRoute, "192.0.2.1", "10.0.3.0/24", 7),
        mark(12, T::ResyncEnd, "192.0.2.1", false, 3),
    ];
    s.write_batches(&sys(), &[batch("l1", "a", "x", first, 1_700_000_001_000)])
        .unwrap();
    assert_eq!(
        table(&s),
        [&BEFORE[..], &["192.0.2.2 10.0.9.0/24 6"]].concat(),
        "nothing applies before the end marker"
    );
    s.write_batches(&sys(), &[batch("l1", "a", "x", second, 1_700_000_002_000)])
        .unwrap();
    assert_eq!(
        table(&s),
        vec![
            "192.0.2.1 10.0.0.0/24 1",
            "192.0.2.1 10.0.1.0/24 20",
            "192.0.2.1 10.0.3.0/24 7",
            // The other family and the other peer are untouched.
            "192.0.2.1 2001:db8::/32 4",
            "192.0.2.2 10.0.2.0/24 5",
            "192.0.2.2 10.0.9.0/24 6",
        ]
    );
    let evs = events(&s);
    let derived: Vec<(i32, String, Vec<String>)> = evs
        .iter()
        .filter(|e| e.reason == RESYNC_REASON && e.r#type != T::ResyncEnd as i32)
        .map(|e| (e.r#type, e.prefix.clone(), e.changed.clone()))
        .collect();
    assert_eq!(
        derived,
        vec![
            (
                T::AttributeChange as i32,
                "10.0.1.0/24".into(),
                vec!["med".to_string()]
            ),
            (T::Announce as i32, "10.0.3.0/24".into(), vec![]),
            (T::Withdraw as i32, "10.0.2.0/24".into(), vec![]),
        ],
        "the identical route gives no event"
    );
    let change = evs
        .iter()
        .find(|e| e.r#type == T::AttributeChange as i32)
        .unwrap();
    assert_eq!(change.previous.as_ref().unwrap().med, Some(2));
    assert_eq!(change.agent_id, "l1");
    let end = evs
        .iter()
        .find(|e| e.r#type == T::ResyncEnd as i32)
        .unwrap();
    assert_eq!(
        end.resync.unwrap(),
        pb::ResyncOutcome {
            applied: true,
            added: 1,
            changed: 1,
            removed: 1,
            unchanged: 1,
        }
    );
    // Begin and route records are staged, not stored as events.
    assert!(
        !evs.iter()
            .any(|e| e.r#type == T::ResyncBegin as i32 || e.r#type == T::ResyncRoute as i32)
    );
    // The unchanged route keeps the event that set it.
    let kept = s
        .routes(
            &org("a"),
            &RouteQuery {
                prefix: IpPrefix::parse("10.0.0.0/24").unwrap(),
                how: PrefixMatch::Exact,
                agent_id: None,
                peer: None,
            },
        )
        .unwrap();
    assert_eq!(kept[0].seq, 2);
    // Another tenant sees none of it.
    assert!(
        s.route_events(&org("b"), &RouteEventFilter::default(), None, 10)
            .unwrap()
            .events
            .is_empty()
    );
}

#[test]
fn an_identical_snapshot_stores_no_change() {
    let (_dir, s) = setup();
    let snap = vec![
        mark(7, T::ResyncBegin, "192.0.2.1", false, 0),
        ev(8, T::ResyncRoute, "192.0.2.1", "10.0.0.0/24", 1),
        ev(9, T::ResyncRoute, "192.0.2.1", "10.0.1.0/24", 2),
        ev(10, T::ResyncRoute, "192.0.2.1", "10.0.2.0/24", 3),
        mark(11, T::ResyncEnd, "192.0.2.1", false, 3),
        mark(12, T::ResyncBegin, "192.0.2.1", true, 0),
        ev(13, T::ResyncRoute, "192.0.2.1", "2001:db8::/32", 4),
        mark(14, T::ResyncEnd, "192.0.2.1", true, 1),
    ];
    let before = events(&s).len();
    s.write_batches(&sys(), &[batch("l1", "a", "x", snap, 1_700_000_001_000)])
        .unwrap();
    assert_eq!(table(&s), BEFORE);
    let evs = events(&s);
    assert_eq!(evs.len(), before + 2, "only the two end markers: {evs:?}");
    for e in &evs[before..] {
        assert_eq!(e.r#type, T::ResyncEnd as i32);
        let o = e.resync.unwrap();
        assert!(o.applied);
        assert_eq!((o.added, o.changed, o.removed), (0, 0, 0));
    }
}

#[test]
fn an_incomplete_or_interrupted_snapshot_changes_nothing() {
    let (_dir, s) = setup();
    // A snapshot whose end says 3 routes but only 1 arrived (a gap inside it): discarded.
    // One whose begin was lost: discarded. One interrupted by a session event: discarded.
    let snap = vec![
        mark(7, T::ResyncBegin, "192.0.2.1", false, 0),
        ev(8, T::ResyncRoute, "192.0.2.1", "10.0.0.0/24", 1),
        mark(9, T::ResyncEnd, "192.0.2.1", false, 3),
        ev(10, T::ResyncRoute, "192.0.2.1", "10.0.0.0/24", 1),
        mark(11, T::ResyncEnd, "192.0.2.1", true, 1),
        mark(12, T::ResyncBegin, "192.0.2.2", false, 0),
        session_up(13, "192.0.2.2"),
        mark(14, T::ResyncEnd, "192.0.2.2", false, 0),
    ];
    s.write_batches(&sys(), &[batch("l1", "a", "x", snap, 1_700_000_001_000)])
        .unwrap();
    // 192.0.2.2's session came up fresh (its table is emptied by that, not by the snapshot).
    assert_eq!(table(&s), BEFORE[..4]);
    let ends: Vec<pb::ResyncOutcome> = events(&s)
        .iter()
        .filter(|e| e.r#type == T::ResyncEnd as i32)
        .map(|e| e.resync.unwrap())
        .collect();
    assert_eq!(ends.len(), 3);
    assert!(ends.iter().all(|o| !o.applied));
    assert!(
        events(&s)
            .iter()
            .all(|e| e.reason != RESYNC_REASON || e.r#type == T::ResyncEnd as i32),
        "no derived events"
    );
    // A listener restarted mid-snapshot begins again: the new snapshot applies in full.
    let again = vec![
        mark(15, T::ResyncBegin, "192.0.2.1", false, 0),
        ev(16, T::ResyncRoute, "192.0.2.1", "10.0.0.0/24", 1),
        mark(17, T::ResyncBegin, "192.0.2.1", false, 0),
        ev(18, T::ResyncRoute, "192.0.2.1", "10.0.1.0/24", 2),
        mark(19, T::ResyncEnd, "192.0.2.1", false, 1),
    ];
    s.write_batches(&sys(), &[batch("l1", "a", "x", again, 1_700_000_002_000)])
        .unwrap();
    assert_eq!(
        table(&s),
        vec!["192.0.2.1 10.0.1.0/24 2", "192.0.2.1 2001:db8::/32 4",]
    );
}
