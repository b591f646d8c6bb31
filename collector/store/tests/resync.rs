//! Resync snapshots: ingest replaces a listener peer's table in one family by the snapshot at its
//! end marker, stores only the differences (reason "resync"), and leaves the table alone when a
//! snapshot is incomplete or interrupted; and stores the session events a snapshot's session state
//! and peer set show missing (nothing when they agree).
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

// Session state in a snapshot (RESYNC_SESSION, RESYNC_PEERS): the session events a spool
// overflow swallowed are stored with reason "resync" where the stored state disagrees.

fn at(s: i64) -> Option<foureyes_proto::Timestamp> {
    Some(foureyes_proto::Timestamp {
        seconds: s,
        nanos: 250,
    })
}

fn record(seq: u64, ev: pb::RouteEvent) -> pb::Record {
    pb::Record {
        seq,
        kind: Some(record::Kind::RouteEvent(ev)),
    }
}

/// A live session_up or session_down the listener sent at `t`.
fn session(seq: u64, up: bool, from: &str, t: i64) -> pb::Record {
    record(
        seq,
        pb::RouteEvent {
            r#type: if up { T::SessionUp } else { T::SessionDown } as i32,
            peer: peer(from),
            observed_at: at(t),
            session: up.then(|| pb::SessionInfo {
                hold_time: 90,
                ..Default::default()
            }),
            reason: if up { "" } else { "connection closed" }.into(),
            ..Default::default()
        },
    )
}

/// The listener's session state of `from` in a snapshot; `since` 0: unknown (BMP, never up).
fn state(seq: u64, from: Option<pb::BgpPeer>, up: bool, since: i64, routes: u64) -> pb::Record {
    record(
        seq,
        pb::RouteEvent {
            r#type: T::ResyncSession as i32,
            peer: from,
            observed_at: at(5000),
            prefix_count: routes,
            session: up.then(|| pb::SessionInfo {
                hold_time: 30,
                ..Default::default()
            }),
            resync_state: Some(pb::ResyncState {
                up,
                since: if since == 0 { None } else { at(since) },
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

fn peer_set(seq: u64, set: pb::ResyncState) -> pb::Record {
    record(
        seq,
        pb::RouteEvent {
            r#type: T::ResyncPeers as i32,
            observed_at: at(5000),
            resync_state: Some(set),
            ..Default::default()
        },
    )
}

fn bmp(addr: &str, router: &str) -> pb::BgpPeer {
    pb::BgpPeer {
        address: addr.into(),
        asn: 65010,
        source: pb::RouteSource::BmpPostPolicy as i32,
        bmp_router: router.into(),
        ..Default::default()
    }
}

/// `address state last_error` of org a's peers.
fn peer_states(s: &dyn Store) -> Vec<String> {
    let mut v: Vec<String> = s
        .peers(&org("a"))
        .unwrap()
        .into_iter()
        .map(|p| {
            let a = p.peer.unwrap_or_default();
            let who = if a.bmp_router.is_empty() {
                a.address
            } else {
                format!("{}@{}", a.address, a.bmp_router)
            };
            format!("{who} {} {}", p.state, p.last_error)
        })
        .collect();
    v.sort();
    v
}

/// Session events derived from a resync: (type, address, reason).
fn derived_sessions(s: &dyn Store) -> Vec<(i32, String, String)> {
    events(s)
        .into_iter()
        .filter(|e| foureyes_store::is_resync_reason(&e.reason))
        .filter(|e| e.r#type == T::SessionUp as i32 || e.r#type == T::SessionDown as i32)
        .map(|e| (e.r#type, e.peer.unwrap_or_default().address, e.reason))
        .collect()
}

fn write(s: &dyn Store, agent: &str, org_: &str, records: Vec<pb::Record>, ms: i64) {
    s.write_batches(&sys(), &[batch(agent, org_, "x", records, ms)])
        .unwrap();
}

/// Two listener peers up since t=1000 and t=1100 (192.0.2.1 with routes), and a peer of
/// another tenant's listener.
fn setup_sessions() -> (tempfile::TempDir, foureyes_store::SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    tenants(&s);
    agent(&s, "l1", "a", Some("x"), pb::AgentKind::Listener);
    agent(&s, "l2", "b", Some("x"), pb::AgentKind::Listener);
    write(
        &s,
        "l1",
        "a",
        vec![
            session(1, true, "192.0.2.1", 1000),
            ev(2, T::Announce, "192.0.2.1", "10.0.0.0/24", 1),
            session(3, true, "192.0.2.2", 1100),
        ],
        1_700_000_000_000,
    );
    write(
        &s,
        "l2",
        "b",
        vec![session(1, true, "192.0.2.1", 1000)],
        1_700_000_000_000,
    );
    (dir, s)
}

#[test]
fn a_session_state_that_agrees_stores_nothing() {
    let (_dir, s) = setup_sessions();
    let before = events(&s).len();
    let both = pb::ResyncState {
        peers: vec![peer("192.0.2.1").unwrap(), peer("192.0.2.2").unwrap()],
        ..Default::default()
    };
    let snap = vec![
        peer_set(4, both.clone()),
        state(5, peer("192.0.2.1"), true, 1000, 1),
        state(6, peer("192.0.2.2"), true, 1100, 0),
        // Configured but never up, and unknown to the collector: down is what it has.
        state(7, peer("192.0.2.3"), false, 0, 0),
        // Repeats and a marker without a peer change nothing either.
        state(8, peer("192.0.2.1"), true, 1000, 1),
        state(9, None, false, 0, 0),
        peer_set(10, both),
    ];
    write(&s, "l1", "a", snap, 1_700_000_001_000);
    let evs = events(&s);
    assert_eq!(
        evs.len(),
        before,
        "no event from an agreeing state: {evs:?}"
    );
    assert_eq!(
        peer_states(&s),
        vec!["192.0.2.1 up ", "192.0.2.2 up "],
        "the markers themselves are not kept"
    );
    assert_eq!(table(&s), vec!["192.0.2.1 10.0.0.0/24 1"]);
}

#[test]
fn a_session_down_lost_in_the_gap_is_stored_from_the_snapshot() {
    let (_dir, s) = setup_sessions();
    // 192.0.2.1 went down at t=2000 (that event was dropped) and holds no routes.
    write(
        &s,
        "l1",
        "a",
        vec![state(4, peer("192.0.2.1"), false, 2000, 0)],
        1_700_000_001_000,
    );
    assert_eq!(
        derived_sessions(&s),
        vec![(T::SessionDown as i32, "192.0.2.1".into(), "resync".into())]
    );
    assert_eq!(
        peer_states(&s),
        vec!["192.0.2.1 down resync", "192.0.2.2 up "]
    );
    let down = events(&s)
        .into_iter()
        .find(|e| e.r#type == T::SessionDown as i32)
        .unwrap();
    assert_eq!(down.observed_at, at(5000), "the snapshot's time");
    assert_eq!(down.agent_id, "l1");
    // Its routes went with the session.
    assert!(table(&s).is_empty(), "{:?}", table(&s));
    // The same state again (another resync) agrees now.
    let n = events(&s).len();
    write(
        &s,
        "l1",
        "a",
        vec![state(5, peer("192.0.2.1"), false, 2000, 0)],
        1_700_000_002_000,
    );
    assert_eq!(events(&s).len(), n);
    // The other tenant's peer of the same address is untouched.
    let b = s.peers(&org("b")).unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].state, "up");
}

#[test]
fn a_session_that_went_down_and_came_back_ends_up_with_its_new_session() {
    let (_dir, s) = setup_sessions();
    // 192.0.2.1 went down and came back at t=3000: both events were dropped. Its new session's
    // routes follow the state (the same route, MED changed).
    let snap = vec![
        state(4, peer("192.0.2.1"), true, 3000, 1),
        mark(5, T::ResyncBegin, "192.0.2.1", false, 0),
        ev(6, T::ResyncRoute, "192.0.2.1", "10.0.0.0/24", 9),
        mark(7, T::ResyncEnd, "192.0.2.1", false, 1),
    ];
    write(&s, "l1", "a", snap, 1_700_000_001_000);
    assert_eq!(
        derived_sessions(&s),
        vec![
            (T::SessionDown as i32, "192.0.2.1".into(), "resync".into()),
            (T::SessionUp as i32, "192.0.2.1".into(), "resync".into()),
        ],
        "down first, then up"
    );
    assert_eq!(
        peer_states(&s),
        vec!["192.0.2.1 up resync", "192.0.2.2 up "]
    );
    let up = events(&s)
        .into_iter()
        .rfind(|e| e.r#type == T::SessionUp as i32 && e.reason == RESYNC_REASON)
        .unwrap();
    assert_eq!(up.session.unwrap().hold_time, 30, "the new session's info");
    assert_eq!(up.source_time, at(3000), "the session's real start");
    assert_eq!(table(&s), vec!["192.0.2.1 10.0.0.0/24 9"]);
    // The next resync sees the same session: nothing more.
    let n = events(&s).len();
    write(
        &s,
        "l1",
        "a",
        vec![state(8, peer("192.0.2.1"), true, 3000, 1)],
        1_700_000_002_000,
    );
    assert_eq!(events(&s).len(), n);
    // Down while stored down, up from down: only the missing up.
    write(
        &s,
        "l1",
        "a",
        vec![
            session(9, false, "192.0.2.2", 4000),
            state(10, peer("192.0.2.2"), true, 4500, 0),
        ],
        1_700_000_003_000,
    );
    assert_eq!(
        peer_states(&s),
        vec!["192.0.2.1 up resync", "192.0.2.2 up connection closed"]
    );
}

#[test]
fn a_peer_the_listener_no_longer_has_is_stored_down() {
    let (_dir, s) = setup_sessions();
    // Two BMP-monitored peers of router 192.0.2.100 and one of 192.0.2.200, all up.
    let mut live = Vec::new();
    for (i, p) in [
        bmp("198.18.0.1", "192.0.2.100"),
        bmp("198.18.0.2", "192.0.2.100"),
        bmp("198.18.0.3", "192.0.2.200"),
    ]
    .into_iter()
    .enumerate()
    {
        live.push(record(
            10 + i as u64,
            pb::RouteEvent {
                r#type: T::SessionUp as i32,
                peer: Some(p),
                observed_at: at(1000),
                ..Default::default()
            },
        ));
    }
    write(&s, "l1", "a", live, 1_700_000_000_500);
    // 192.0.2.2 was removed from listener.toml; router .200 is gone; router .100 no longer
    // monitors 198.18.0.2.
    let snap = vec![
        peer_set(
            20,
            pb::ResyncState {
                peers: vec![peer("192.0.2.1").unwrap()],
                bmp_routers: vec!["192.0.2.100".into()],
                ..Default::default()
            },
        ),
        peer_set(
            21,
            pb::ResyncState {
                peers: vec![bmp("198.18.0.1", "192.0.2.100")],
                bmp_router: "192.0.2.100".into(),
                ..Default::default()
            },
        ),
        state(22, Some(bmp("198.18.0.1", "192.0.2.100")), true, 0, 0),
    ];
    write(&s, "l1", "a", snap, 1_700_000_001_000);
    assert_eq!(
        peer_states(&s),
        vec![
            "192.0.2.1 up ",
            "192.0.2.2 down resync: peer no longer configured on the listener",
            "198.18.0.1@192.0.2.100 up ",
            "198.18.0.2@192.0.2.100 down resync: peer no longer monitored by BMP router 192.0.2.100",
            "198.18.0.3@192.0.2.200 down resync: BMP router 192.0.2.200 no longer connected to the listener",
        ]
    );
    // Once down, a repeat of the set stores nothing; the other tenant's listener is untouched.
    let n = events(&s).len();
    write(
        &s,
        "l1",
        "a",
        vec![peer_set(
            23,
            pb::ResyncState {
                peers: vec![peer("192.0.2.1").unwrap()],
                ..Default::default()
            },
        )],
        1_700_000_002_000,
    );
    assert_eq!(
        events(&s).len(),
        n + 1,
        "only the BMP peer of the router now missing"
    );
    assert_eq!(s.peers(&org("b")).unwrap()[0].state, "up");
}
