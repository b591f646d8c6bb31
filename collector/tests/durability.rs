//! At-least-once delivery: with the node producing over 1,000 results/s, kill -9 the collector five
//! times (once from a failpoint inside the flush transaction). Afterwards every sequence number the
//! node used is in the store exactly once, or covered by a gap record.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::*;
use foureyes_store::{ResultFilter, Scope, SqliteStore, Store, SystemScope};
use serde_json::json;

#[test]
fn kill_dash_nine_five_times_loses_nothing_and_stores_nothing_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let node_port = free_port();
    let mut c = Collector::start(tmp.path(), node_port, "", &[]);
    let token = c.tenant("acme", "noc");
    let api = Api::new(&c.api, &token);
    // 150 tests every 100 ms: 1,500 results/s (TCP connects to a closed loopback port are cheap
    // and keep failing fast whether or not the collector is up).
    let closed = free_port();
    let mut ids = Vec::new();
    for i in 0..150 {
        let t = api.post(
            "/api/v1/tests",
            json!({"name": format!("load {i}"), "intervalMs": 100, "timeoutMs": 500,
            "config": {"tcp": {"host": "127.0.0.1", "port": closed}}}),
        );
        ids.push(t["id"].as_str().unwrap().to_string());
    }
    let state = enroll_node(&c, tmp.path(), "acme", "noc");
    let node = run_node(&state, tmp.path().join("node.log"));
    let agent_id = wait_connected(&api);

    let last_seq = |api: &Api| -> u64 {
        api.get("/api/v1/agents")["agents"][0]["lastSeq"]
            .as_str()
            .unwrap_or("0")
            .parse()
            .unwrap()
    };
    for round in 0..5 {
        // Kill while the node is streaming: wait for it to be back on the link first.
        let round_api = Api::new(&c.api, &token);
        wait_connected(&round_api);
        let before = last_seq(&round_api);
        std::thread::sleep(Duration::from_secs(3));
        let after = last_seq(&round_api);
        println!("round {round}: stored {} results in 3 s", after - before);
        if round == 0 {
            // Steady state: the node really produces (and the collector stores) over 1,000/s.
            assert!(
                after - before >= 3_000,
                "node produced too little load: {}",
                after - before
            );
        }
        c.proc.kill9();
        std::thread::sleep(Duration::from_millis(500));
        if round == 2 {
            // This collector aborts inside its first flush transaction, by itself.
            let mut f = Collector::start(
                tmp.path(),
                node_port,
                "",
                &[("FOUREYES_FAILPOINT", "flush-mid-transaction")],
            );
            wait_until("the failpoint to fire", Duration::from_secs(30), || {
                (!f.proc.is_running()).then_some(())
            });
            f.proc.kill9();
        }
        c = Collector::start(tmp.path(), node_port, "", &[]);
    }
    // Stop the load and let the spool drain.
    let api = Api::new(&c.api, &token);
    for id in &ids {
        let (s, _) = api.call("DELETE", &format!("/api/v1/tests/{id}"), None);
        assert_eq!(s, 204);
    }
    let mut stable = (0, 0);
    let final_seq = wait_until("the spool to drain", Duration::from_secs(60), || {
        let s = last_seq(&api);
        if s == stable.0 && s > 0 {
            stable.1 += 1;
        } else {
            stable = (s, 0);
        }
        (stable.1 >= 15).then_some(s)
    });
    drop(node);
    drop(c);

    let store = SqliteStore::open(tmp.path().join("data/foureyes.sqlite")).unwrap();
    let scope = Scope::System(SystemScope::collector_internal());
    let filter = ResultFilter {
        agent_id: Some(agent_id.clone()),
        ..Default::default()
    };
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = store.results(&scope, &filter, cursor, 1000).unwrap();
        for r in &page.results {
            *seen.entry(r.seq).or_default() += 1;
        }
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let gaps = store.gaps(&scope, &filter).unwrap();
    // The node's spool (1M records) never fills here, so there is no excuse for a gap.
    assert!(gaps.is_empty(), "unexpected gap records: {gaps:?}");
    let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dupes.is_empty(), "stored twice: {dupes:?}");
    let missing: Vec<u64> = (1..=final_seq)
        .filter(|s| !seen.contains_key(s))
        .take(20)
        .collect();
    println!("final seq {final_seq}, results stored {}", seen.len());
    assert!(missing.is_empty(), "missing sequence numbers: {missing:?}");
    assert_eq!(seen.len() as u64, final_seq);
    assert!(final_seq > 15_000, "too little load: {final_seq}");
}
