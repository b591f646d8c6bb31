//! End to end: collector and node as separate processes from the built binaries.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn tests_for_every_executor(api_port: u16, dns: std::net::SocketAddr) -> Vec<Value> {
    vec![
        json!({"name": "icmp", "intervalMs": 1000, "count": 3, "config": {"icmp": {"host": "127.0.0.1"}}}),
        json!({"name": "tcp", "intervalMs": 1000, "config": {"tcp": {"host": "127.0.0.1", "port": api_port}}}),
        json!({"name": "http", "intervalMs": 1000, "config": {"http": {"url": format!("http://127.0.0.1:{api_port}/healthz"), "expectStatus": 200}}}),
        json!({"name": "dns", "intervalMs": 1000, "config": {"dns": {"server": "127.0.0.1", "port": dns.port(), "queryName": "probe.example.test", "expectAnswer": "127.0.0.9"}}}),
        json!({"name": "traceroute", "intervalMs": 2000, "config": {"traceroute": {"host": "127.0.0.1", "maxHops": 4}}}),
    ]
}

fn start_dns(rt: &tokio::runtime::Runtime) -> std::net::SocketAddr {
    rt.block_on(async {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(foureyes_probes::dev_dns::serve(
            sock,
            vec![(
                "probe.example.test".to_string(),
                "127.0.0.9".parse().unwrap(),
            )],
            std::future::pending::<()>(),
        ));
        addr
    })
}

#[test]
fn node_enrolls_and_results_for_every_executor_come_back_from_the_api() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dns = start_dns(&rt);
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "", &[]);
    let api_token = c.tenant("acme", "noc");
    let api = Api::new(&c.api, &api_token);
    let api_port: u16 = c.api.rsplit(':').next().unwrap().parse().unwrap();

    let enrollment = c.enrollment_token("acme", "noc", "10m");
    let state = tmp.path().join("node");
    let out = enroll(&c.node_addr, &enrollment, &state);
    assert!(
        out.status.success(),
        "enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut ids = Vec::new();
    for t in tests_for_every_executor(api_port, dns) {
        let created = api.post("/api/v1/tests", t);
        ids.push((
            created["name"].as_str().unwrap().to_string(),
            created["id"].as_str().unwrap().to_string(),
        ));
    }
    let mut node = run_node(&state, tmp.path().join("node.log"));

    let agents = wait_until("the node to connect", Duration::from_secs(30), || {
        let a = api.get("/api/v1/agents");
        let list = a["agents"].as_array()?.clone();
        (list.len() == 1 && list[0]["connected"] == json!(true)).then_some(list)
    });
    let agent_id = agents[0]["id"].as_str().unwrap().to_string();
    assert!(agent_id.starts_with("n-"));
    assert_eq!(agents[0]["org"], "acme");
    assert_eq!(agents[0]["team"], "noc");

    for (name, id) in &ids {
        let r = wait_until(
            &format!("an OK result for the {name} test"),
            Duration::from_secs(60),
            || {
                let v = api.get(&format!("/api/v1/results?test_id={id}&page_size=20"));
                v["results"]
                    .as_array()?
                    .iter()
                    .find(|r| r["status"] == "STATUS_OK")
                    .cloned()
            },
        );
        assert_eq!(
            r["agentId"],
            json!(agent_id),
            "{name}: collector fills in the agent id"
        );
        assert!(
            r["receivedAt"].is_string() && r["sentAt"].is_string(),
            "{name}: {r}"
        );
        assert!(
            r["seq"].as_str().unwrap().parse::<u64>().unwrap() >= 1,
            "{name}: {r}"
        );
        match name.as_str() {
            "icmp" => assert_eq!(r["icmp"]["received"], json!(3), "{r}"),
            "http" => assert_eq!(r["http"]["statusCode"], json!(200), "{r}"),
            "dns" => assert_eq!(r["dns"]["answers"][0], "127.0.0.9", "{r}"),
            "traceroute" => assert_eq!(r["traceroute"]["reached"], json!(true), "{r}"),
            _ => {}
        }
    }
    assert!(node.is_running(), "node died:\n{}", node.log_text());
}

#[test]
fn enrollment_refuses_reused_expired_and_foreign_ca_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "", &[]);
    c.tenant("acme", "noc");

    let token = c.enrollment_token("acme", "noc", "10m");
    let first = enroll(&c.node_addr, &token, &tmp.path().join("a"));
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let reused = enroll(&c.node_addr, &token, &tmp.path().join("b"));
    assert!(!reused.status.success());
    assert!(
        String::from_utf8_lossy(&reused.stderr).contains("already used"),
        "{}",
        String::from_utf8_lossy(&reused.stderr)
    );

    let short = c.enrollment_token("acme", "noc", "1s");
    std::thread::sleep(Duration::from_millis(2100));
    let expired = enroll(&c.node_addr, &short, &tmp.path().join("c"));
    assert!(!expired.status.success());
    assert!(
        String::from_utf8_lossy(&expired.stderr).contains("expired"),
        "{}",
        String::from_utf8_lossy(&expired.stderr)
    );

    // Same secret, another CA's fingerprint: the node must refuse in the TLS handshake, before it
    // sends the CSR, so the token stays unspent.
    let good = c.enrollment_token("acme", "noc", "10m");
    let parts: Vec<&str> = good.split('.').collect();
    let foreign = format!("{}.{}.{}", parts[0], parts[1], "A".repeat(43));
    let pinned = enroll(&c.node_addr, &foreign, &tmp.path().join("d"));
    assert!(!pinned.status.success());
    let err = String::from_utf8_lossy(&pinned.stderr);
    assert!(err.contains("fingerprint"), "{err}");
    let after = enroll(&c.node_addr, &good, &tmp.path().join("e"));
    assert!(
        after.status.success(),
        "token must be unspent: {}",
        String::from_utf8_lossy(&after.stderr)
    );
    assert!(
        !c.proc.log_text().contains(&good),
        "token text in the collector log"
    );
}

#[test]
fn one_hundred_concurrent_redemptions_give_exactly_one_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "", &[]);
    let api_token = c.tenant("acme", "noc");
    let token = c.enrollment_token("acme", "noc", "10m");
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let addr = c.node_addr.clone();
            let token = token.clone();
            let state = tmp.path().join(format!("n{i}"));
            std::thread::spawn(move || enroll(&addr, &token, &state).status.success())
        })
        .collect();
    let ok = handles
        .into_iter()
        .filter(|_| true)
        .map(|h| h.join().unwrap())
        .filter(|s| *s)
        .count();
    assert_eq!(ok, 1);
    let agents = Api::new(&c.api, &api_token).get("/api/v1/agents");
    assert_eq!(agents["agents"].as_array().unwrap().len(), 1);
}

#[test]
fn tenants_see_nothing_of_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "", &[]);
    let a = Api::new(&c.api, &c.tenant("alpha", "noc"));
    let b = Api::new(&c.api, &c.tenant("bravo", "noc"));
    let t = a.post(
        "/api/v1/tests",
        json!({"name": "a-only", "config": {"tcp": {"host": "127.0.0.1", "port": 9}}}),
    );
    let tid = t["id"].as_str().unwrap();
    let state = tmp.path().join("node");
    assert!(
        enroll(
            &c.node_addr,
            &c.enrollment_token("alpha", "noc", "10m"),
            &state
        )
        .status
        .success()
    );
    let aid = a.get("/api/v1/agents")["agents"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Every route the API documents, called with org B's token and org A's ids.
    let doc = b.get("/openapi.json");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 7, "{paths:?}");
    let mut checked = 0;
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let m = method.to_uppercase();
            if path.contains("{id}") {
                let id = if path.contains("agents") { &aid } else { tid };
                let body = (m == "PUT").then(
                    || json!({"name": "x", "config": {"tcp": {"host": "127.0.0.1", "port": 9}}}),
                );
                let (s, v) = b.call(&m, &path.replace("{id}", id), body);
                assert_eq!(s, 404, "{m} {path} with org A's id from org B: {v}");
            } else if path.ends_with("/stream") {
                // A stream never ends; tests/stream.rs shows another tenant's stream stays empty.
                continue;
            } else if m == "GET" {
                let url = if path.ends_with("results") {
                    format!("{path}?test_id={tid}")
                } else if path.ends_with("/routes") {
                    format!("{path}?prefix=0.0.0.0/0&match=within")
                } else if path.ends_with("route-events") {
                    format!("{path}?agent_id={aid}")
                } else if path.ends_with("/rpki/validity") {
                    // Public VRP data, the same for every tenant.
                    format!("{path}?prefix=192.0.2.0/24&origin=64496")
                } else {
                    path.clone()
                };
                let (s, v) = b.call("GET", &url, None);
                assert_eq!(s, 200, "{m} {path}: {v}");
                let text = v.to_string();
                assert!(
                    !text.contains(tid) && !text.contains(&aid) && !text.contains("alpha"),
                    "{path} leaks org A: {text}"
                );
            } else {
                // Creating routes act in B's own org; nothing of A is reachable through them.
                continue;
            }
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} routes checked");
    // And A still has everything.
    assert_eq!(a.get(&format!("/api/v1/tests/{tid}"))["name"], "a-only");
    assert_eq!(
        a.get(&format!("/api/v1/agents/{aid}"))["revoked"],
        json!(false)
    );
    let (s, _) = Api::new(&c.api, "fea1.bogus").call("GET", "/api/v1/tests", None);
    assert_eq!(s, 401);
}

#[test]
fn the_node_never_listens_during_enroll_run_and_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let node_port = free_port();
    let mut c = Collector::start(tmp.path(), node_port, "", &[]);
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));
    let api_port: u16 = c.api.rsplit(':').next().unwrap().parse().unwrap();
    for t in tests_for_every_executor(api_port, "127.0.0.1:53".parse().unwrap()) {
        api.post("/api/v1/tests", t);
    }
    let state = tmp.path().join("node");
    // Enroll: sample the process while it runs.
    let mut cmd = std::process::Command::new(bin("foureyes-node"));
    cmd.arg("enroll")
        .arg("--collector")
        .arg(&c.node_addr)
        .arg("--state-dir")
        .arg(&state)
        .env(
            "FOUREYES_ENROLL_TOKEN",
            c.enrollment_token("acme", "noc", "10m"),
        );
    let mut enroll_proc = Proc::spawn(cmd, tmp.path().join("enroll.log"));
    while enroll_proc.is_running() {
        assert_eq!(
            listening_sockets(enroll_proc.pid()),
            vec![],
            "enroll listens"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        state.join("identity.json").exists(),
        "{}",
        enroll_proc.log_text()
    );

    let mut node = run_node(&state, tmp.path().join("node.log"));
    // Samples every 20 ms; returns how many distinct sockets it saw, so the test can show the
    // sampler really sees the node's sockets (a sampler that sees nothing proves nothing).
    let sample = |node: &mut Proc, secs: u64| -> usize {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..secs * 50 {
            assert!(node.is_running(), "{}", node.log_text());
            let all = sockets_of(node.pid());
            seen.extend(all.iter().cloned());
            assert_eq!(
                listening_sockets(node.pid()),
                vec![],
                "node listens; all sockets: {all:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        seen.len()
    };
    let connected = sample(&mut node, 5);
    assert!(
        connected > 0,
        "the sampler saw none of the node's sockets while it was connected"
    );
    // Partition: the collector goes away; the node keeps probing and reconnecting, still outbound.
    c.proc.kill9();
    sample(&mut node, 4);
    let c2 = Collector::start(tmp.path(), node_port, "", &[]);
    wait_until("the node to reconnect", Duration::from_secs(40), || {
        let a = Api::new(&c2.api, &api.token).get("/api/v1/agents");
        (a["agents"][0]["connected"] == json!(true)).then_some(())
    });
    sample(&mut node, 2);
}
