//! Partitions: the node keeps probing from its stored assignments (even across its own restart),
//! and when its bounded spool overflows it drops the oldest results with an explicit gap record.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use serde_json::{Value, json};

fn ms(v: &Value) -> i64 {
    let s = v.as_str().unwrap();
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn all_results(api: &Api) -> (Vec<Value>, Vec<Value>) {
    let mut results = Vec::new();
    let mut token = String::new();
    loop {
        let v = api.get(&format!(
            "/api/v1/results?page_size=1000&page_token={token}"
        ));
        results.extend(v["results"].as_array().cloned().unwrap_or_default());
        // Gaps are not paginated: every page carries all of them.
        let gaps = v["gaps"].as_array().cloned().unwrap_or_default();
        token = v["nextPageToken"].as_str().unwrap_or("").to_string();
        if token.is_empty() {
            return (results, gaps);
        }
    }
}

#[test]
fn the_node_keeps_probing_through_a_partition_and_its_own_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let node_port = free_port();
    let mut c = Collector::start(tmp.path(), node_port, "", &[]);
    let token = c.tenant("acme", "noc");
    let api = Api::new(&c.api, &token);
    api.post("/api/v1/tests", json!({"name": "t", "intervalMs": 200, "config": {"tcp": {"host": "127.0.0.1", "port": 9}}}));
    // Enroll with a token minted over the API.
    let minted = api.post(
        "/api/v1/enrollment-tokens",
        json!({"team": "noc", "ttlSeconds": 600, "kind": "AGENT_KIND_NODE"}),
    );
    let state = tmp.path().join("node");
    let out = enroll(&c.node_addr, minted["token"].as_str().unwrap(), &state);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut node = run_node(&state, tmp.path().join("node-1.log"));
    wait_until("first results", Duration::from_secs(20), || {
        let v = api.get("/api/v1/results?page_size=1");
        (!v["results"].as_array()?.is_empty()).then_some(())
    });

    c.proc.kill9();
    let outage_start = now_ms();
    std::thread::sleep(Duration::from_secs(1));
    // The node restarts while the collector is away: it must run the stored assignments.
    node.kill9();
    let node2 = run_node(&state, tmp.path().join("node-2.log"));
    std::thread::sleep(Duration::from_secs(3));
    let outage_end = now_ms();
    let c2 = Collector::start(tmp.path(), node_port, "", &[]);
    let api = Api::new(&c2.api, &token);
    wait_until("results from the outage", Duration::from_secs(30), || {
        let (results, _) = all_results(&api);
        let during = results
            .iter()
            .filter(|r| (outage_start + 1500..outage_end).contains(&ms(&r["sentAt"])))
            .count();
        (during >= 5).then_some(())
    });
    assert!(
        node2.log_text().contains("tests=1"),
        "restarted node did not load its stored assignments:\n{}",
        node2.log_text()
    );
}

#[test]
fn a_full_spool_drops_the_oldest_with_a_gap_record_that_reaches_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let node_port = free_port();
    let mut c = Collector::start(tmp.path(), node_port, "", &[]);
    let token = c.tenant("acme", "noc");
    let api = Api::new(&c.api, &token);
    for i in 0..5 {
        api.post("/api/v1/tests", json!({"name": format!("t{i}"), "intervalMs": 100, "config": {"tcp": {"host": "127.0.0.1", "port": 9}}}));
    }
    let state = enroll_node(&c, tmp.path(), "acme", "noc");
    let mut cmd = std::process::Command::new(bin("foureyes-node"));
    cmd.arg("run")
        .arg("--state-dir")
        .arg(&state)
        .arg("--spool-max-records")
        .arg("100");
    let node = Proc::spawn(cmd, tmp.path().join("node.log"));
    wait_until("first results", Duration::from_secs(20), || {
        let v = api.get("/api/v1/results?page_size=1");
        (!v["results"].as_array()?.is_empty()).then_some(())
    });
    c.proc.kill9();
    // 50 results/s against a 100-record spool: well over a hundred are dropped.
    std::thread::sleep(Duration::from_secs(6));
    let c2 = Collector::start(tmp.path(), node_port, "", &[]);
    let api = Api::new(&c2.api, &token);
    wait_until("a gap record", Duration::from_secs(30), || {
        let (_, gaps) = all_results(&api);
        (!gaps.is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let (results, gaps) = all_results(&api);
    let mut total = 0;
    let mut ranges = Vec::new();
    for g in &gaps {
        let first: u64 = g["firstSeq"].as_str().unwrap().parse().unwrap();
        let last: u64 = g["lastSeq"].as_str().unwrap().parse().unwrap();
        let count: u64 = g["count"].as_str().unwrap().parse().unwrap();
        assert_eq!(count, last - first + 1, "{g}");
        assert!(g["agentId"].as_str().unwrap().starts_with("n-"));
        total += count;
        ranges.push(first..=last);
    }
    assert!(total >= 100, "only {total} dropped: {gaps:?}");
    assert!(
        node.log_text().contains("spool full"),
        "{}",
        node.log_text()
    );
    // A gap is the node's conservative claim: it may cover a batch that was already in flight
    // when the link dropped, which the collector committed but whose ack never arrived. So a
    // stored record inside a gap must have reached the collector before that gap record did;
    // one received after it would mean the node sent what it said it had dropped.
    for r in &results {
        let seq: u64 = r["seq"].as_str().unwrap().parse().unwrap();
        for (g, range) in gaps.iter().zip(&ranges) {
            if range.contains(&seq) {
                assert!(
                    ms(&r["receivedAt"]) <= ms(&g["receivedAt"]),
                    "seq {seq} arrived after the gap that covers it: {r} {g}"
                );
            }
        }
    }
}

#[test]
fn cli_revoke_cuts_a_live_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "", &[]);
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));
    let state = enroll_node(&c, tmp.path(), "acme", "noc");
    let _node = run_node(&state, tmp.path().join("node.log"));
    let id = wait_connected(&api);
    let listed = c.admin(&["agent", "list"]);
    assert!(
        listed.contains(&id) && listed.contains("active"),
        "{listed}"
    );
    c.admin(&["agent", "revoke", &id]);
    wait_until("the stream to be cut", Duration::from_secs(5), || {
        (api.get(&format!("/api/v1/agents/{id}"))["connected"] == json!(false)).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        api.get(&format!("/api/v1/agents/{id}"))["connected"],
        json!(false)
    );
    assert!(c.admin(&["agent", "list"]).contains("revoked"));
}
