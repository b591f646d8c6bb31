//! The store against real SQLite files: scope isolation for every tenant method, tokens, the
//! redemption race, agents and keys, tests and assignments, results pagination.
#![allow(clippy::unwrap_used, clippy::needless_range_loop)]

mod common;

use std::sync::{Arc, Barrier};

use common::*;
use foureyes_proto::v1::{self as pb, record};
use foureyes_store::{
    BatchOutcome, RedeemError, ResultFilter, Scope, SqliteStore, Store, StoreError, TokenBinding,
};
use prost::Message;

fn icmp_test(name: &str) -> pb::Test {
    pb::Test {
        name: name.into(),
        interval_ms: 1000,
        timeout_ms: 500,
        count: 3,
        config: Some(pb::ProbeConfig {
            kind: Some(pb::probe_config::Kind::Icmp(pb::IcmpConfig {
                host: "192.0.2.1".into(),
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

/// Every scope the isolation tests look through, and which of the four tenant cells it may see:
/// ("a", ""), ("a", "x"), ("a", "y"), ("b", "x").
fn scopes() -> Vec<(&'static str, Scope, [bool; 4])> {
    vec![
        ("org a", org("a"), [true, true, true, false]),
        ("team a/x", team("a", "x"), [false, true, false, false]),
        ("team a/y", team("a", "y"), [false, false, true, false]),
        ("org b", org("b"), [false, false, false, true]),
        ("team b/x", team("b", "x"), [false, false, false, true]),
        ("team b/y", team("b", "y"), [false, false, false, false]),
        ("system", all(), [true, true, true, true]),
    ]
}

const CELLS: [(&str, &str); 4] = [("a", ""), ("a", "x"), ("a", "y"), ("b", "x")];

fn cell_scope(i: usize) -> Scope {
    let (o, t) = CELLS[i];
    if t.is_empty() { org(o) } else { team(o, t) }
}

#[test]
fn names_are_validated_and_orgs_teams_listed() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let e = s.create_org(&sys(), "Bad_Name").unwrap_err();
    assert!(matches!(e, StoreError::InvalidName { .. }));
    assert!(e.to_string().contains("[a-z0-9][a-z0-9-]{0,62}"), "{e}");
    tenants(&s);
    assert!(matches!(
        s.create_org(&sys(), "a"),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.create_team(&sys(), "a", "x"),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.create_team(&sys(), "nope", "x"),
        Err(StoreError::NotFound(_))
    ));
    assert!(s.create_team(&sys(), "a", "-x").is_err());
    assert_eq!(s.list_orgs(&sys()).unwrap(), vec!["a", "b"]);
    assert_eq!(s.list_teams(&sys(), "a").unwrap(), vec!["x", "y"]);
    assert!(s.org_exists(&sys(), "a").unwrap());
    assert!(!s.org_exists(&sys(), "c").unwrap());
    assert!(s.team_exists(&sys(), "b", "y").unwrap());
    assert!(!s.team_exists(&sys(), "b", "z").unwrap());
}

#[test]
fn api_tokens_are_isolated_and_revocable() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    tenants(&s);
    let mut ids = Vec::new();
    for i in 0..CELLS.len() {
        let row = s
            .create_api_token(&cell_scope(i), "ci", &format!("{:064x}", i))
            .unwrap();
        ids.push(row.id);
    }
    assert!(
        s.create_api_token(&all(), "ci", "ff").is_err(),
        "system scope has no tenant"
    );
    assert!(
        s.create_api_token(&team("a", "nope"), "ci", "fe").is_err(),
        "unknown team"
    );

    for (label, scope, sees) in scopes() {
        let listed: Vec<String> = s
            .list_api_tokens(&scope)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                listed.contains(id),
                sees[i],
                "{label} listing token of cell {i}"
            );
        }
        // A scope that cannot see a token cannot revoke it either.
        for (i, id) in ids.iter().enumerate() {
            if !sees[i] {
                assert!(
                    !s.revoke_api_token(&scope, id).unwrap(),
                    "{label} revoked cell {i}"
                );
            }
        }
    }
    let revoked = |i: usize| {
        s.find_api_token_by_hash(&sys(), &format!("{:064x}", i))
            .unwrap()
            .unwrap()
            .revoked
    };
    assert!(
        (0..4).all(|i| !revoked(i)),
        "no cross-scope revocation happened"
    );
    assert_eq!(s.revoke_api_tokens_named(&team("b", "y"), "ci").unwrap(), 0);
    assert_eq!(s.revoke_api_tokens_named(&team("a", "x"), "ci").unwrap(), 1);
    assert_eq!(
        (0..4).map(revoked).collect::<Vec<_>>(),
        vec![false, true, false, false]
    );
    assert_eq!(s.revoke_api_tokens_named(&org("a"), "ci").unwrap(), 2);
    let found = s
        .find_api_token_by_hash(&sys(), &format!("{:064x}", 3))
        .unwrap()
        .unwrap();
    assert!(!found.revoked);
    assert_eq!(found.org, "b");
    assert_eq!(found.team.as_deref(), Some("x"));
    let a_tok = s
        .find_api_token_by_hash(&sys(), &format!("{:064x}", 1))
        .unwrap()
        .unwrap();
    assert!(a_tok.revoked, "revoked tokens are returned, marked revoked");
    assert!(s.find_api_token_by_hash(&sys(), "00").unwrap().is_none());

    // Named revocation: dev mode replaces its token.
    let t1 = s.create_api_token(&org("b"), "dev", "d1").unwrap();
    assert_eq!(s.revoke_api_tokens_named(&org("b"), "dev").unwrap(), 1);
    assert_eq!(s.revoke_api_tokens_named(&org("b"), "dev").unwrap(), 0);
    assert!(
        s.find_api_token_by_hash(&sys(), "d1")
            .unwrap()
            .unwrap()
            .revoked
    );
    assert!(
        s.revoke_api_token(&org("b"), &t1.id).unwrap(),
        "revoking twice is still found"
    );
    let _ = s.create_api_token(&org("b"), "dev", "d2").unwrap();
    assert!(
        !s.find_api_token_by_hash(&sys(), "d2")
            .unwrap()
            .unwrap()
            .revoked
    );
    // The same hash cannot be registered twice.
    assert!(s.create_api_token(&org("b"), "dup", "d2").is_err());
}

#[test]
fn enrollment_tokens_redeem_once_and_say_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    tenants(&s);
    s.create_enrollment_token(&team("a", "x"), "h1", pb::AgentKind::Node, 10_000)
        .unwrap();
    s.create_enrollment_token(&org("b"), "h2", pb::AgentKind::Listener, 10_000)
        .unwrap();
    assert!(
        s.create_enrollment_token(&all(), "h3", pb::AgentKind::Node, 10_000)
            .is_err()
    );
    assert!(
        s.create_enrollment_token(&org("zz"), "h3", pb::AgentKind::Node, 10_000)
            .is_err()
    );

    assert!(matches!(
        s.redeem_enrollment_token(&sys(), "h1", 10_000),
        Err(RedeemError::Expired)
    ));
    assert_eq!(
        s.redeem_enrollment_token(&sys(), "h1", 9_999).unwrap(),
        TokenBinding {
            org: "a".into(),
            team: Some("x".into()),
            kind: pb::AgentKind::Node
        }
    );
    assert!(matches!(
        s.redeem_enrollment_token(&sys(), "h1", 9_999),
        Err(RedeemError::AlreadyUsed)
    ));
    assert!(matches!(
        s.redeem_enrollment_token(&sys(), "nope", 1),
        Err(RedeemError::Unknown)
    ));
    assert_eq!(
        s.redeem_enrollment_token(&sys(), "h2", 1).unwrap(),
        TokenBinding {
            org: "b".into(),
            team: None,
            kind: pb::AgentKind::Listener
        }
    );
}

#[test]
fn a_hundred_concurrent_redemptions_yield_exactly_one_enrollment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite");
    let shared = Arc::new(SqliteStore::open(&path).unwrap());
    tenants(&*shared);
    for (hash, _) in [("race-shared", 0), ("race-separate", 1)] {
        shared
            .create_enrollment_token(&team("a", "x"), hash, pb::AgentKind::Node, i64::MAX)
            .unwrap();
    }
    // Once through one shared store (its writer mutex), once through 100 separate connections,
    // where only SQLite's own locking decides.
    for separate in [false, true] {
        let hash = if separate {
            "race-separate"
        } else {
            "race-shared"
        };
        let stores: Vec<Arc<SqliteStore>> = (0..100)
            .map(|_| {
                if separate {
                    Arc::new(SqliteStore::open(&path).unwrap())
                } else {
                    shared.clone()
                }
            })
            .collect();
        let barrier = Arc::new(Barrier::new(100));
        let handles: Vec<_> = stores
            .into_iter()
            .map(|s| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    s.redeem_enrollment_token(&sys(), hash, 1)
                })
            })
            .collect();
        let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let won = outcomes.iter().filter(|o| o.is_ok()).count();
        let used = outcomes
            .iter()
            .filter(|o| matches!(o, Err(RedeemError::AlreadyUsed)))
            .count();
        assert_eq!(won, 1, "separate={separate}: {outcomes:?}");
        assert_eq!(used, 99, "separate={separate}: {outcomes:?}");
    }
}

#[test]
fn agents_keys_and_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    tenants(&s);
    let ids = ["n-org-a", "n-ax", "n-ay", "n-bx"];
    for (i, id) in ids.iter().enumerate() {
        let (o, t) = CELLS[i];
        agent(&s, id, o, (!t.is_empty()).then_some(t), pb::AgentKind::Node);
    }
    assert!(matches!(
        s.create_agent(
            &sys(),
            foureyes_store::NewAgent {
                id: "n-ax".into(),
                org: "a".into(),
                team: None,
                kind: pb::AgentKind::Node,
                hostname: String::new(),
                version: String::new(),
                created_at_ms: 0,
            }
        ),
        Err(StoreError::Conflict(_))
    ));
    for (label, scope, sees) in scopes() {
        let listed: Vec<String> = s
            .list_agents(&scope)
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                listed.contains(&id.to_string()),
                sees[i],
                "{label} lists {id}"
            );
            assert_eq!(
                s.get_agent(&scope, id).unwrap().is_some(),
                sees[i],
                "{label} gets {id}"
            );
            if !sees[i] {
                assert!(
                    !s.revoke_agent(&scope, id, 5).unwrap(),
                    "{label} revoked {id}"
                );
            }
        }
    }
    assert!(s.revoked_agent_ids(&sys()).unwrap().is_empty());

    // Keys: two generations for n-ax.
    s.add_agent_key(&sys(), "n-ax", [1; 32], vec![11; 32], vec![1], 100_000)
        .unwrap();
    s.add_agent_key(&sys(), "n-ax", [2; 32], vec![22; 32], vec![2], 200_000)
        .unwrap();
    s.add_agent_key(&sys(), "n-bx", [3; 32], vec![33; 32], vec![3], 300_000)
        .unwrap();
    assert!(matches!(
        s.add_agent_key(&sys(), "n-bx", [1; 32], vec![11; 32], vec![9], 1),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.add_agent_key(&sys(), "ghost", [4; 32], vec![], vec![], 1),
        Err(StoreError::NotFound(_))
    ));
    let keys = s.agent_keys(&sys(), "n-ax").unwrap();
    assert_eq!(
        keys.iter().map(|k| k.key_id).collect::<Vec<_>>(),
        vec![[1; 32], [2; 32]]
    );
    assert_eq!(keys[1].public_key, vec![22; 32]);
    assert_eq!(
        s.key_owner(&sys(), &[2; 32]).unwrap(),
        Some(("n-ax".into(), false))
    );
    assert_eq!(s.key_owner(&sys(), &[9; 32]).unwrap(), None);
    let a = s.get_agent(&team("a", "x"), "n-ax").unwrap().unwrap();
    assert_eq!(a.cert_not_after_ms, Some(200_000));
    assert_eq!(a.team.as_deref(), Some("x"));
    assert_eq!(a.kind, pb::AgentKind::Node);
    assert_eq!(a.last_seen_ms, None);

    s.record_hello(&sys(), "n-ax", "new-host", "2.0", -250, 7_000)
        .unwrap();
    s.touch_agent(&sys(), "n-ax", 6_000).unwrap(); // older: last_seen stays
    let a = s.get_agent(&all(), "n-ax").unwrap().unwrap();
    assert_eq!(
        (
            a.hostname.as_str(),
            a.version.as_str(),
            a.clock_offset_ms,
            a.last_seen_ms
        ),
        ("new-host", "2.0", -250, Some(7_000))
    );
    assert!(s.record_hello(&sys(), "ghost", "h", "v", 0, 1).is_err());

    // The org revokes its team's agent: agent and every key revoked.
    assert!(s.revoke_agent(&org("a"), "n-ax", 8_000).unwrap());
    assert!(s.get_agent(&org("a"), "n-ax").unwrap().unwrap().revoked);
    assert_eq!(
        s.key_owner(&sys(), &[1; 32]).unwrap(),
        Some(("n-ax".into(), true))
    );
    let mut revoked = s.revoked_key_ids(&sys()).unwrap();
    revoked.sort();
    assert_eq!(revoked, vec![[1; 32], [2; 32]]);
    assert_eq!(s.revoked_agent_ids(&sys()).unwrap(), vec!["n-ax"]);
    assert!(
        s.agent_keys(&sys(), "n-ax")
            .unwrap()
            .iter()
            .all(|k| k.revoked)
    );
    // A key added afterwards is born revoked.
    s.add_agent_key(&sys(), "n-ax", [5; 32], vec![55; 32], vec![5], 1)
        .unwrap();
    assert_eq!(
        s.key_owner(&sys(), &[5; 32]).unwrap(),
        Some(("n-ax".into(), true))
    );
    // n-bx untouched.
    assert_eq!(
        s.key_owner(&sys(), &[3; 32]).unwrap(),
        Some(("n-bx".into(), false))
    );
}

#[test]
fn tests_are_isolated_versioned_and_assigned() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    tenants(&s);
    // One test per cell; the org-wide one in org a names no team.
    let mut ids = Vec::new();
    for i in 0..CELLS.len() {
        let t = s
            .create_test(&cell_scope(i), icmp_test(&format!("cell {i}")))
            .unwrap();
        assert!(t.id.starts_with("t-"));
        assert_eq!(t.team, CELLS[i].1);
        ids.push(t.id);
    }
    // A team scope cannot create a test for another team; an org scope may pick its teams.
    let mut other = icmp_test("sneaky");
    other.team = "y".into();
    assert_eq!(
        s.create_test(&team("a", "x"), other.clone()).unwrap().team,
        "x"
    );
    let by_org = s.create_test(&org("a"), other.clone()).unwrap();
    assert_eq!(by_org.team, "y");
    other.team = "nope".into();
    assert!(matches!(
        s.create_test(&org("a"), other),
        Err(StoreError::NotFound(_))
    ));
    assert!(s.create_test(&all(), icmp_test("sys")).is_err());
    assert!(s.delete_test(&org("a"), &by_org.id).unwrap());

    let a_cleanup: Vec<String> = s
        .list_tests(&team("a", "x"), None, 100)
        .unwrap()
        .into_iter()
        .filter(|t| t.name == "sneaky")
        .map(|t| t.id)
        .collect();
    for id in a_cleanup {
        assert!(s.delete_test(&team("a", "x"), &id).unwrap());
    }

    for (label, scope, sees) in scopes() {
        let listed: Vec<String> = s
            .list_tests(&scope, None, 100)
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                listed.contains(id),
                sees[i],
                "{label} lists test of cell {i}"
            );
            assert_eq!(
                s.get_test(&scope, id).unwrap().is_some(),
                sees[i],
                "{label} gets cell {i}"
            );
            if !sees[i] {
                let mut t = icmp_test("hijack");
                t.id = id.clone();
                assert_eq!(
                    s.update_test(&scope, t).unwrap(),
                    None,
                    "{label} updates cell {i}"
                );
                assert!(
                    !s.delete_test(&scope, id).unwrap(),
                    "{label} deletes cell {i}"
                );
            }
        }
    }
    // Nothing was hijacked.
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            s.get_test(&all(), id).unwrap().unwrap().name,
            format!("cell {i}")
        );
    }

    // Assignments: node agents in a/x, org-wide in a, a listener, and one in b.
    agent(&s, "n-ax", "a", Some("x"), pb::AgentKind::Node);
    agent(&s, "n-a", "a", None, pb::AgentKind::Node);
    agent(&s, "l-ax", "a", Some("x"), pb::AgentKind::Listener);
    agent(&s, "n-bx", "b", Some("x"), pb::AgentKind::Node);
    let names = |id: &str| -> (u64, Vec<String>) {
        let (v, tests) = s.tests_for_agent(&sys(), id).unwrap();
        let mut n: Vec<String> = tests.into_iter().map(|t| t.name).collect();
        n.sort();
        (v, n)
    };
    let (v0, ax) = names("n-ax");
    assert_eq!(ax, vec!["cell 0", "cell 1"]);
    assert_eq!(names("n-a").1, vec!["cell 0"]);
    assert_eq!(names("l-ax").1, Vec::<String>::new());
    assert_eq!(names("n-bx").1, vec!["cell 3"]);
    assert!(s.tests_for_agent(&sys(), "ghost").is_err());

    // Pinning a test to an agent, by update: version bumps, only that agent keeps it.
    let mut t0 = s.get_test(&org("a"), &ids[0]).unwrap().unwrap();
    t0.agent_ids = vec!["n-a".into()];
    let t0 = s.update_test(&org("a"), t0).unwrap().unwrap();
    assert_eq!(t0.team, "");
    let (v1, ax) = names("n-ax");
    assert!(v1 > v0);
    assert_eq!(ax, vec!["cell 1"]);
    assert_eq!(names("n-a").1, vec!["cell 0"]);
    // Org b's counter is its own.
    let vb = names("n-bx").0;
    assert!(s.delete_test(&team("a", "x"), &ids[1]).unwrap());
    let (v2, ax) = names("n-ax");
    assert!(v2 > v1);
    assert!(ax.is_empty());
    assert_eq!(names("n-bx").0, vb);

    // A team scope updating its test cannot move it to another team.
    let mut t2 = s.get_test(&team("a", "y"), &ids[2]).unwrap().unwrap();
    t2.team = "x".into();
    assert_eq!(
        s.update_test(&team("a", "y"), t2).unwrap().unwrap().team,
        "y"
    );
}

#[test]
fn list_tests_paginates_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    tenants(&s);
    for i in 0..25 {
        s.create_test(&team("a", "x"), icmp_test(&format!("t{i}")))
            .unwrap();
    }
    s.create_test(&team("a", "y"), icmp_test("other team"))
        .unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.list_tests(&team("a", "x"), after.as_deref(), 10).unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|t| t.id.clone());
        seen.extend(page.into_iter().map(|t| t.id));
    }
    assert_eq!(seen.len(), 25);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen);
}

/// Results and gaps of every cell, written through the store's flush path.
#[test]
fn results_and_gaps_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    tenants(&s);
    let agents = ["n-a", "n-ax", "n-ay", "n-bx"];
    let mut batches = Vec::new();
    for (i, id) in agents.iter().enumerate() {
        let (o, t) = CELLS[i];
        agent(&s, id, o, (!t.is_empty()).then_some(t), pb::AgentKind::Node);
        batches.push(batch(
            id,
            o,
            t,
            vec![result(1, "t-1"), gap(2, 1, 1), result(3, "t-1")],
            1_000 + i as i64,
        ));
    }
    let out = s.write_batches(&sys(), &batches).unwrap();
    assert!(
        out.iter().all(|o| matches!(
            o,
            BatchOutcome::Stored {
                watermark: 3,
                rows: 3,
                duplicates: 0
            }
        )),
        "{out:?}"
    );
    for (label, scope, sees) in scopes() {
        let page = s
            .results(&scope, &ResultFilter::default(), None, 1000)
            .unwrap();
        let gaps = s.gaps(&scope, &ResultFilter::default()).unwrap();
        for (i, id) in agents.iter().enumerate() {
            let n = page.results.iter().filter(|r| r.agent_id == *id).count();
            assert_eq!(n, if sees[i] { 2 } else { 0 }, "{label} results of {id}");
            let g = gaps.iter().filter(|g| g.agent_id == *id).count();
            assert_eq!(g, usize::from(sees[i]), "{label} gaps of {id}");
            // Asking for another tenant's agent by name does not help.
            let f = ResultFilter {
                agent_id: Some(id.to_string()),
                ..Default::default()
            };
            assert_eq!(
                s.results(&scope, &f, None, 10).unwrap().results.is_empty(),
                !sees[i],
                "{label} filter {id}"
            );
            assert_eq!(
                s.gaps(&scope, &f).unwrap().is_empty(),
                !sees[i],
                "{label} gap filter {id}"
            );
        }
    }
}

#[test]
fn results_pages_are_stable_while_rows_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    tenants(&s);
    agent(&s, "n-ax", "a", Some("x"), pb::AgentKind::Node);
    let scope = team("a", "x");
    // 50 results, several per millisecond and one millisecond going backwards (clock step).
    let mut seq = 0;
    for (ms, n) in [(10_000i64, 20u64), (10_001, 20), (9_000, 10)] {
        let recs: Vec<_> = (0..n)
            .map(|_| {
                seq += 1;
                result(seq, if seq % 2 == 0 { "t-even" } else { "t-odd" })
            })
            .collect();
        s.write_batches(&sys(), &[batch("n-ax", "a", "x", recs, ms)])
            .unwrap();
    }
    let filter = ResultFilter::default();
    let first = s.results(&scope, &filter, None, 15).unwrap();
    assert_eq!(first.results.len(), 15);
    let cursor = first.next.unwrap();
    // The cursor survives an encode/decode round trip (it goes through the API as a string).
    let cursor = foureyes_store::ResultCursor::decode(&cursor.encode()).unwrap();
    // New rows arrive between pages.
    let recs: Vec<_> = (51..=60).map(|q| result(q, "t-odd")).collect();
    s.write_batches(&sys(), &[batch("n-ax", "a", "x", recs, 20_000)])
        .unwrap();
    let mut all: Vec<u64> = first.results.iter().map(|r| r.seq).collect();
    let mut c = Some(cursor);
    while let Some(cur) = c {
        let page = s.results(&scope, &filter, Some(cur), 15).unwrap();
        all.extend(page.results.iter().map(|r| r.seq));
        c = page.next;
    }
    // Oldest first (insertion order), every row exactly once, the late ones at the end.
    assert_eq!(all, (1..=60).collect::<Vec<_>>());
    // Exactly-full last page: no dangling cursor.
    let p = s.results(&scope, &filter, None, 60).unwrap();
    assert_eq!((p.results.len(), p.next), (60, None));

    // Filters: by test, and by receive time (half-open).
    let odd = s
        .results(
            &scope,
            &ResultFilter {
                test_id: Some("t-odd".into()),
                ..Default::default()
            },
            None,
            1000,
        )
        .unwrap();
    assert_eq!(odd.results.len(), 35);
    assert!(odd.results.iter().all(|r| r.test_id == "t-odd"));
    let late = s
        .results(
            &scope,
            &ResultFilter {
                from_ms: Some(20_000),
                ..Default::default()
            },
            None,
            1000,
        )
        .unwrap();
    assert_eq!(
        late.results.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (51..=60).collect::<Vec<_>>()
    );
    let early = s
        .results(
            &scope,
            &ResultFilter {
                from_ms: Some(10_000),
                to_ms: Some(10_001),
                ..Default::default()
            },
            None,
            1000,
        )
        .unwrap();
    assert_eq!(early.results.len(), 20);
    // The collector's fields, not the agent's.
    let r = &late.results[0];
    assert_eq!(r.agent_id, "n-ax");
    assert_eq!(
        r.received_at.map(|t| foureyes_proto::timestamp_ms(&t)),
        Some(20_000)
    );
}

/// The per-test read walks postings (schema v3), not an index: it must return exactly what a full
/// scan filtered by test returns, in the same order, for every scope, window, agent filter and
/// page size, across many flushes, also after the test is deleted and for ids never in `tests`.
#[test]
fn results_by_test_match_a_full_scan_across_flushes_scopes_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    tenants(&s);
    let agents = [
        ("n-ax", "a", "x"),
        ("n-ay", "a", "y"),
        ("n-a", "a", ""),
        ("n-bx", "b", "x"),
    ];
    for (id, o, t) in agents {
        agent(&s, id, o, (!t.is_empty()).then_some(t), pb::AgentKind::Node);
    }
    let real = s.create_test(&org("a"), icmp_test("real")).unwrap().id;
    let tests = [real.as_str(), "t-ghost", "t-shared", "t-x"];
    let mut seqs = [0u64; 4];
    let mut ms = 50_000i64;
    for flush in 0..12u64 {
        let mut group = Vec::new();
        for (i, (id, o, t)) in agents.iter().enumerate() {
            let n = 1 + (flush * 7 + i as u64 * 5) % 30;
            let recs: Vec<_> = (0..n)
                .map(|j| {
                    seqs[i] += 1;
                    if (seqs[i] + flush) % 11 == 0 {
                        gap(seqs[i], seqs[i], seqs[i])
                    } else {
                        let test = tests[((j + flush + i as u64) % 4) as usize];
                        let mut rec = result(seqs[i], test);
                        if j % 2 == 0 {
                            // An honest agent leaves received_at alone.
                            if let Some(record::Kind::Result(r)) = &mut rec.kind {
                                r.received_at = None;
                            }
                        }
                        rec
                    }
                })
                .collect();
            group.push(batch(id, o, t, recs, ms));
            // Sometimes the clock steps back or stands still between batches.
            ms += [3, 0, -2, 40][(flush as usize + i) % 4];
        }
        // A replay in the same flush stores nothing new.
        group.push(group[0].clone());
        s.write_batches(&sys(), &group).unwrap();
    }
    assert!(s.delete_test(&org("a"), &real).unwrap());

    fn collect(s: &dyn Store, scope: &Scope, f: &ResultFilter, limit: usize) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let p = s.results(scope, f, after, limit).unwrap();
            assert!(p.results.len() <= limit);
            out.extend(p.results.iter().map(|r| (r.agent_id.clone(), r.seq)));
            match p.next {
                Some(c) => after = Some(c),
                None => break out,
            }
        }
    }
    let windows = [
        (None, None),
        (Some(50_100), None),
        (None, Some(50_300)),
        (Some(50_050), Some(50_200)),
        (Some(90_000), None),
    ];
    let mut checked = 0;
    for scope in [all(), org("a"), team("a", "x"), team("a", "y"), org("b")] {
        for (from_ms, to_ms) in windows {
            for agent_id in [None, Some("n-ax".to_string())] {
                let base = ResultFilter {
                    agent_id: agent_id.clone(),
                    from_ms,
                    to_ms,
                    ..Default::default()
                };
                let full = s.results(&scope, &base, None, 10_000).unwrap();
                assert!(full.next.is_none());
                for test in tests.iter().chain(&["t-none"]) {
                    let want: Vec<(String, u64)> = full
                        .results
                        .iter()
                        .filter(|r| r.test_id == *test)
                        .map(|r| (r.agent_id.clone(), r.seq))
                        .collect();
                    let f = ResultFilter {
                        test_id: Some(test.to_string()),
                        ..base.clone()
                    };
                    for limit in [1, 7, 1000] {
                        assert_eq!(
                            collect(&s, &scope, &f, limit),
                            want,
                            "{scope:?} {f:?} limit {limit}"
                        );
                    }
                    checked += want.len();
                }
            }
        }
    }
    assert!(checked > 1000, "the comparison saw too few rows: {checked}");
}

/// One flush with batches of two tenants: each row gets its own batch's org, team and agent
/// (ingest binds them once per batch), and the stored body carries the collector's agent id,
/// sequence number and receive time whether or not the agent claimed its own.
#[test]
fn stored_rows_carry_their_batch_and_the_collectors_fields() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    tenants(&s);
    agent(&s, "n-ax", "a", Some("x"), pb::AgentKind::Node);
    agent(&s, "n-b", "b", None, pb::AgentKind::Node);
    let honest = |seq| {
        let mut rec = result(seq, "t-1");
        if let Some(record::Kind::Result(r)) = &mut rec.kind {
            r.received_at = None;
            r.seq = 999;
        }
        rec
    };
    s.write_batches(
        &sys(),
        &[
            batch("n-ax", "a", "x", vec![honest(1), result(2, "t-1")], 7_000),
            batch("n-b", "b", "", vec![result(1, "t-2"), honest(2)], 8_000),
        ],
    )
    .unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("store.sqlite")).unwrap();
    let mut st = conn
        .prepare("SELECT org, team, agent_id, seq, received_ms, body FROM results ORDER BY key")
        .unwrap();
    let rows: Vec<(String, String, String, i64, i64, Vec<u8>)> = st
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let want = [
        ("a", "x", "n-ax", 1, 7_000),
        ("a", "x", "n-ax", 2, 7_000),
        ("b", "", "n-b", 1, 8_000),
        ("b", "", "n-b", 2, 8_000),
    ];
    assert_eq!(rows.len(), want.len());
    for (row, (o, t, a, seq, ms)) in rows.iter().zip(want) {
        assert_eq!(
            (row.0.as_str(), row.1.as_str(), row.2.as_str(), row.3, row.4),
            (o, t, a, seq, ms)
        );
        let body = pb::ProbeResult::decode(row.5.as_slice()).unwrap();
        assert_eq!(body.agent_id, a);
        assert_eq!(body.seq, seq as u64);
        assert_eq!(
            body.received_at,
            Some(foureyes_proto::timestamp_from_ms(ms))
        );
        assert_eq!(body.latency_ms, seq as f64);
    }
}

/// The live stream's reader: scoped like every read, and a cursor taken after any row resumes
/// with exactly the rows after it, also across pages and while rows arrive.
#[test]
fn stream_rows_are_scoped_and_resume_exactly_after_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    tenants(&s);
    agent(&s, "n-ax", "a", Some("x"), pb::AgentKind::Node);
    agent(&s, "n-bx", "b", Some("x"), pb::AgentKind::Node);
    let head = s.stream_head(&sys()).unwrap();
    assert_eq!(head, foureyes_store::StreamCursor::default());
    for (i, ms) in [5_000i64, 5_000, 4_000].iter().enumerate() {
        let base = i as u64 * 10;
        let recs = |_: &str| {
            (1..=10)
                .map(|q| result(base + q, "t-1"))
                .collect::<Vec<_>>()
        };
        s.write_batches(
            &sys(),
            &[
                batch("n-ax", "a", "x", recs("a"), *ms),
                batch("n-bx", "b", "x", recs("b"), *ms),
            ],
        )
        .unwrap();
    }
    let seqs = |scope: &Scope, from, limit| -> (Vec<(String, u64)>, foureyes_store::StreamPage) {
        let page = s.stream_rows(scope, from, limit).unwrap();
        let v = page
            .rows
            .iter()
            .map(|r| match &r.item {
                foureyes_store::StreamItem::Result(x) => (r.org.clone(), x.seq),
                foureyes_store::StreamItem::RouteEvent(e) => (r.org.clone(), e.seq),
                other => panic!("only results were stored: {other:?}"),
            })
            .collect();
        (v, page)
    };
    let (all, page) = seqs(&sys_scope(), Default::default(), 1000);
    assert_eq!(all.len(), 60);
    assert!(!page.more);
    assert_eq!(page.last, s.stream_head(&sys()).unwrap());
    let a = team("a", "x");
    let (mine, _) = seqs(&a, Default::default(), 1000);
    assert_eq!(mine.len(), 30);
    assert!(mine.iter().all(|(o, _)| o == "a"), "{mine:?}");
    assert_eq!(
        mine.iter().map(|x| x.1).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<_>>()
    );
    assert!(
        seqs(&org("b"), Default::default(), 1000)
            .0
            .iter()
            .all(|(o, _)| o == "b")
    );
    // Pages of 7 from an encoded cursor: the same 30 rows, once each, in order.
    let mut got = Vec::new();
    let mut cur = foureyes_store::StreamCursor::default();
    loop {
        let (v, page) = seqs(&a, cur, 7);
        got.extend(v.into_iter().map(|x| x.1));
        cur = foureyes_store::StreamCursor::decode(&page.last.encode()).unwrap();
        if !page.more {
            break;
        }
    }
    assert_eq!(got, (1..=30).collect::<Vec<_>>());
    // Rows stored later come after the cursor, and nothing before it comes again.
    s.write_batches(
        &sys(),
        &[batch("n-ax", "a", "x", vec![result(31, "t-1")], 1_000)],
    )
    .unwrap();
    let (v, _) = seqs(&a, cur, 100);
    assert_eq!(v, vec![("a".to_string(), 31)]);
    for bad in [
        "",
        "s1.",
        "s1.1",
        "s1.1.zz",
        "r1.10",
        "s1.ffffffffffffffff.1",
        "s2.1.1.1",
        "s2.1.1.1.1.1",
        "s2.1.1.1.-1",
    ] {
        assert_eq!(foureyes_store::StreamCursor::decode(bad), None, "{bad}");
    }
}

/// Each save of a correlation is a new change on the stream: a later, larger key, so a reader
/// after the first save gets the record again (once, in its newest state), scoped by tenant.
/// Alert transitions come in key order too, and cursors of every kind survive encoding.
#[test]
fn correlation_changes_and_alert_transitions_are_stream_rows() {
    use foureyes_store::{AlertStore, StreamCursor, StreamItem};
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    tenants(&s);
    let corr = |id: &str, o: &str, summary: &str| pb::Correlation {
        id: id.into(),
        org: o.into(),
        team: "x".into(),
        summary: summary.into(),
        ..Default::default()
    };
    let rows = |scope: &Scope, from| {
        let page = s.stream_rows(scope, from, 100).unwrap();
        let v: Vec<String> = page
            .rows
            .iter()
            .map(|r| match &r.item {
                StreamItem::Correlation(c) => format!("{}:{}", c.id, c.summary),
                StreamItem::Alert(t) => format!("alert:{}", t.alert_id),
                other => panic!("{other:?}"),
            })
            .collect();
        (v, page.last)
    };
    s.save_correlation(&sys(), &corr("c-1", "a", "open"), false)
        .unwrap();
    let (v, after_first) = rows(&org("a"), StreamCursor::default());
    assert_eq!(v, vec!["c-1:open"]);
    s.save_correlation(&sys(), &corr("o-1", "b", "open"), false)
        .unwrap();
    s.save_correlation(&sys(), &corr("c-1", "a", "verdict"), true)
        .unwrap();
    // Org a: c-1 again, in its new state; never org b's record.
    let (v, last) = rows(&org("a"), after_first);
    assert_eq!(v, vec!["c-1:verdict"]);
    assert!(last.corr_key > after_first.corr_key);
    // From the start, each record once, in the order of its latest change.
    let (v, _) = rows(&sys_scope(), StreamCursor::default());
    assert_eq!(v, vec!["o-1:open", "c-1:verdict"]);
    assert_eq!(s.stream_head(&sys()).unwrap().corr_key, last.corr_key);
    // Alert transitions, tenant-scoped.
    for (id, o) in [("al-1", "a"), ("al-2", "b"), ("al-3", "a")] {
        let t = pb::AlertTransition {
            alert_id: id.into(),
            org: o.into(),
            team: "x".into(),
            ..Default::default()
        };
        let alert = pb::Alert {
            id: id.into(),
            org: o.into(),
            team: "x".into(),
            ..Default::default()
        };
        s.save_alert(&sys(), &alert, Some(&t)).unwrap();
    }
    let (v, at) = rows(&org("a"), last);
    assert_eq!(v, vec!["alert:al-1", "alert:al-3"]);
    assert_eq!(StreamCursor::decode(&at.encode()), Some(at));
    assert!(at.encode().starts_with("s2."));
    assert_eq!(rows(&org("a"), at).0, Vec::<String>::new());
    // An id from before (results and route events only) leaves the new kinds unknown.
    let old = StreamCursor::decode("s1.a.b").unwrap();
    assert_eq!((old.result_key, old.event_key), (10, 11));
    assert!(old.corr_key < 0 && old.alert_key < 0);
}

fn sys_scope() -> Scope {
    Scope::System(sys())
}
