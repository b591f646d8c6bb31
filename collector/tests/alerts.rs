//! The alert engine end to end: a real collector process, real nodes probing a loopback TCP port
//! the test opens and closes, a real BIRD peer for BGP rules, real SQLite.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::{
    net::TcpListener,
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{Api, Collector, admin, wait_until};
use serde_json::{Value, json};

/// A loopback TCP port the test can close (connections refused) and reopen.
struct Gate {
    port: u16,
    open: Option<Arc<AtomicBool>>,
}

impl Gate {
    fn new() -> Self {
        let mut g = Gate {
            port: common::free_port(),
            open: None,
        };
        g.reopen();
        g
    }

    fn reopen(&mut self) {
        let l = wait_until("the port to bind again", Duration::from_secs(10), || {
            TcpListener::bind(("127.0.0.1", self.port)).ok()
        });
        l.set_nonblocking(true).unwrap();
        let flag = Arc::new(AtomicBool::new(true));
        let f = flag.clone();
        std::thread::spawn(move || {
            while f.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => drop(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        self.open = Some(flag);
    }

    fn close(&mut self) {
        if let Some(f) = self.open.take() {
            f.store(false, Ordering::Relaxed);
        }
        // The accept thread drops the listener within its next poll.
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.close();
    }
}

fn alerts(api: &Api, query: &str) -> Vec<Value> {
    api.get(&format!("/api/v1/alerts?page_size=1000&{query}"))["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn transitions(api: &Api, id: &str) -> Vec<(String, String, bool)> {
    api.get(&format!("/api/v1/alerts/{id}/transitions"))["transitions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            (
                t["from"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("ALERT_STATE_")
                    .to_string(),
                t["to"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("ALERT_STATE_")
                    .to_string(),
                t["notify"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn wait_state(api: &Api, rule: &str, state: &str, what: &str) -> Value {
    wait_until(what, Duration::from_secs(60), || {
        alerts(api, &format!("rule_id={rule}&state={state}"))
            .into_iter()
            .next()
    })
}

fn tcp_test(api: &Api, port: u16) -> String {
    let t = api.post(
        "/api/v1/tests",
        json!({"name": "gate", "intervalMs": 500, "timeoutMs": 400, "count": 1,
               "config": {"tcp": {"host": "127.0.0.1", "port": port}}}),
    );
    t["id"].as_str().unwrap().to_string()
}

fn ok_results(api: &Api, test: &str) -> usize {
    api.get(&format!("/api/v1/results?page_size=1000&test_id={test}"))["results"]
        .as_array()
        .map(|r| r.iter().filter(|x| x["status"] == "STATUS_OK").count())
        .unwrap_or(0)
}

#[test]
fn rule_crud_is_tenant_scoped_and_validated() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "", &[]);
    let a = Api::new(&c.api, &c.tenant("acme", "noc"));
    let b = Api::new(&c.api, &c.tenant("other", "ops"));
    let rule = a.post(
        "/api/v1/alert-rules",
        json!({"name": "lat", "latency": {"testId": "t-1", "percentile": "PERCENTILE_P95",
               "thresholdMs": 100.0, "minAgents": 2}, "fireAfter": 3, "labels": {"svc": "api"}}),
    );
    let id = rule["id"].as_str().unwrap();
    assert_eq!(rule["org"], "acme");
    assert_eq!(rule["fileManaged"], false);
    assert_eq!(a.get(&format!("/api/v1/alert-rules/{id}"))["name"], "lat");
    // Same name twice: 409. Bad rules: 400 naming the field.
    let (s, _) = a.call(
        "POST",
        "/api/v1/alert-rules",
        Some(json!({"name": "lat", "loss": {"testId": "t", "threshold": 0.1}})),
    );
    assert_eq!(s, 409);
    for (bad, field) in [
        (json!({"name": "x"}), "kind"),
        (
            json!({"name": "x", "loss": {"testId": "t", "threshold": 3.0}}),
            "loss.threshold",
        ),
        (
            json!({"name": "x", "visibility": {"prefix": "10.0.0.0/40"}}),
            "10.0.0.0/40",
        ),
        (json!({"name": "x", "bogus": 1}), "bogus"),
    ] {
        let (s, v) = a.call("POST", "/api/v1/alert-rules", Some(bad));
        assert_eq!(s, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains(field), "{v}");
    }
    // Update.
    let up = a.call(
        "PUT",
        &format!("/api/v1/alert-rules/{id}"),
        Some(json!({"name": "lat2", "latency": {"testId": "t-1", "thresholdMs": 50.0}})),
    );
    assert_eq!(up.0, 200, "{}", up.1);
    assert_eq!(up.1["name"], "lat2");
    // Org B: nothing to list, 404 on every id of org A's.
    assert!(
        b.get("/api/v1/alert-rules")["rules"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    for (m, path) in [
        ("GET", format!("/api/v1/alert-rules/{id}")),
        ("PUT", format!("/api/v1/alert-rules/{id}")),
        ("DELETE", format!("/api/v1/alert-rules/{id}")),
    ] {
        let body =
            (m == "PUT").then(|| json!({"name": "x", "loss": {"testId": "t", "threshold": 0.1}}));
        let (s, v) = b.call(m, &path, body);
        assert_eq!(s, 404, "{m} {path}: {v}");
    }
    assert_eq!(a.get(&format!("/api/v1/alert-rules/{id}"))["name"], "lat2");
    // Silences: B cannot see or delete A's.
    let sil = a.post(
        "/api/v1/silences",
        json!({"ruleId": id, "expiresAt": "2999-01-01T00:00:00Z", "comment": "maintenance"}),
    );
    let sid = sil["id"].as_str().unwrap();
    assert!(
        b.get("/api/v1/silences")["silences"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        b.call("DELETE", &format!("/api/v1/silences/{sid}"), None).0,
        404
    );
    assert_eq!(
        a.get("/api/v1/silences")["silences"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        a.call("DELETE", &format!("/api/v1/silences/{sid}"), None).0,
        204
    );
    let (s, _) = a.call(
        "POST",
        "/api/v1/silences",
        Some(json!({"comment": "no expiry"})),
    );
    assert_eq!(s, 400);
    // Delete.
    assert_eq!(
        a.call("DELETE", &format!("/api/v1/alert-rules/{id}"), None)
            .0,
        204
    );
    assert_eq!(
        a.call("GET", &format!("/api/v1/alert-rules/{id}"), None).0,
        404
    );
    // The alert routes are in the OpenAPI document.
    let doc = a.get("/openapi.json");
    for p in [
        "/api/v1/alert-rules/{id}",
        "/api/v1/alerts/{id}/ack",
        "/api/v1/silences",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} missing");
    }
}

/// Pending → firing → resolved from a node probing a port the test closes and reopens; ack; a
/// silence suppresses the notification flag but not the state, and expires.
#[test]
fn hysteresis_ack_and_silences_with_a_real_node() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let c = Collector::start(root, 0, "", &[]);
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));
    let other = Api::new(&c.api, &c.tenant("other", "ops"));
    let mut gate = Gate::new();
    let test = tcp_test(&api, gate.port);
    let rule = api.post(
        "/api/v1/alert-rules",
        json!({"name": "gate down", "unreachable": {"testId": test, "windowSeconds": 2},
               "fireAfter": 3, "clearAfter": 3, "severity": "SEVERITY_CRITICAL",
               "labels": {"svc": "gate"}}),
    );
    let rid = rule["id"].as_str().unwrap().to_string();
    let state = common::enroll_node(&c, root, "acme", "noc");
    let _node = common::run_node(&state, root.join("node.log"));
    wait_until("OK results", Duration::from_secs(60), || {
        (ok_results(&api, &test) >= 3).then_some(())
    });
    assert!(alerts(&api, "").is_empty(), "{:?}", alerts(&api, ""));

    // Down: pending first, then firing after three failing evaluations.
    gate.close();
    let firing = wait_state(&api, &rid, "firing", "the alert to fire");
    let aid = firing["id"].as_str().unwrap().to_string();
    assert_eq!(firing["subject"], test.as_str());
    assert_eq!(firing["kind"], "unreachable");
    assert_eq!(firing["severity"], "SEVERITY_CRITICAL");
    assert_eq!(firing["silenced"], false);
    assert!(
        firing["values"]["failing_agents"].as_f64().unwrap() >= 1.0,
        "{firing}"
    );
    assert_eq!(
        transitions(&api, &aid),
        vec![
            ("UNSPECIFIED".into(), "PENDING".into(), false),
            ("PENDING".into(), "FIRING".into(), true)
        ]
    );
    let metrics = ureq::get(&format!("{}/metrics", c.api))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains("foureyes_alerts{state=\"firing\"} 1"),
        "{metrics}"
    );

    // Ack: org B cannot, org A can, and the first ack is kept.
    assert_eq!(
        other
            .call("POST", &format!("/api/v1/alerts/{aid}/ack"), None)
            .0,
        404
    );
    assert_eq!(
        other.call("GET", &format!("/api/v1/alerts/{aid}"), None).0,
        404
    );
    assert_eq!(
        other
            .call("GET", &format!("/api/v1/alerts/{aid}/transitions"), None)
            .0,
        404
    );
    assert!(alerts(&other, "").is_empty());
    let acked = api.post(
        &format!("/api/v1/alerts/{aid}/ack"),
        json!({"ackedBy": "alice"}),
    );
    assert_eq!(acked["ackedBy"], "alice");
    api.post(
        &format!("/api/v1/alerts/{aid}/ack"),
        json!({"ackedBy": "bob"}),
    );

    // Up again: resolved after three clear evaluations; the ack survives the engine's writes.
    gate.reopen();
    let resolved = wait_state(&api, &rid, "resolved", "the alert to resolve");
    assert_eq!(resolved["id"], aid.as_str());
    assert_eq!(resolved["ackedBy"], "alice");
    assert!(resolved["resolvedAt"].is_string());
    let t = transitions(&api, &aid);
    assert_eq!(
        t.last().unwrap(),
        &("FIRING".into(), "RESOLVED".into(), true)
    );

    // A silence on the rule: the next outage still fires (state changes), but quietly.
    api.post(
        "/api/v1/silences",
        json!({"ruleId": rid, "labels": {"svc": "gate"}, "expiresAt": rfc3339_in(15),
               "comment": "maintenance", "createdBy": "alice"}),
    );
    gate.close();
    let quiet = wait_state(&api, &rid, "firing", "the silenced alert to fire");
    let qid = quiet["id"].as_str().unwrap().to_string();
    assert_ne!(qid, aid, "a new outage is a new alert");
    assert_eq!(quiet["silenced"], true);
    assert_eq!(
        transitions(&api, &qid).last().unwrap(),
        &("PENDING".into(), "FIRING".into(), false)
    );
    // The silence expires: the alert is no longer silenced, and its all-clear is notified.
    wait_until("the silence to expire", Duration::from_secs(40), || {
        (api.get(&format!("/api/v1/alerts/{qid}"))["silenced"] == false).then_some(())
    });
    assert!(
        api.get("/api/v1/silences")["silences"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    gate.reopen();
    wait_until("the second resolve", Duration::from_secs(60), || {
        (api.get(&format!("/api/v1/alerts/{qid}"))["state"] == "ALERT_STATE_RESOLVED").then_some(())
    });
    assert_eq!(
        transitions(&api, &qid).last().unwrap(),
        &("FIRING".into(), "RESOLVED".into(), true)
    );
}

/// Now plus `secs`, as RFC 3339 (a JSON timestamp).
fn rfc3339_in(secs: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(secs))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// A stopped node makes its test STALE; the loss rule on the same test stays quiet (no data is
/// not 100 % loss).
#[test]
fn a_stopped_node_is_stale_not_lossy() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let c = Collector::start(root, 0, "", &[]);
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));
    let gate = Gate::new();
    let test = tcp_test(&api, gate.port);
    let state = common::enroll_node(&c, root, "acme", "noc");
    let mut node = common::run_node(&state, root.join("node.log"));
    wait_until("OK results", Duration::from_secs(60), || {
        (ok_results(&api, &test) >= 3).then_some(())
    });
    let stale = api.post(
        "/api/v1/alert-rules",
        json!({"name": "stale", "stale": {"testId": test, "missedIntervals": 4}}),
    );
    let loss = api.post(
        "/api/v1/alert-rules",
        json!({"name": "loss", "loss": {"testId": test, "threshold": 0.5, "windowSeconds": 2}}),
    );
    let unreach = api.post(
        "/api/v1/alert-rules",
        json!({"name": "unreach", "unreachable": {"testId": test, "windowSeconds": 2}}),
    );
    // Results still flow: nothing is stale.
    std::thread::sleep(Duration::from_secs(4));
    assert!(alerts(&api, "").is_empty(), "{:?}", alerts(&api, ""));
    node.kill9();
    let agent = api.get("/api/v1/agents")["agents"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let st = wait_state(
        &api,
        stale["id"].as_str().unwrap(),
        "firing",
        "the stale alert",
    );
    assert_eq!(st["kind"], "stale");
    assert_eq!(st["subject"], format!("{test}/{agent}"));
    assert!(st["summary"].as_str().unwrap().starts_with("STALE"), "{st}");
    assert!(!st["values"].as_object().unwrap().contains_key("loss"));
    std::thread::sleep(Duration::from_secs(3));
    for r in [&loss, &unreach] {
        let a = alerts(&api, &format!("rule_id={}", r["id"].as_str().unwrap()));
        assert!(a.is_empty(), "no data must not alert as loss: {a:?}");
    }
    // The node comes back: the stale alert resolves.
    let _node = common::run_node(&state, root.join("node2.log"));
    wait_state(
        &api,
        stale["id"].as_str().unwrap(),
        "resolved",
        "stale to resolve",
    );
}

const RULES: &str = r#"
[[notifier]]
name = "noc-hook"
org = "acme"
kind = "webhook"
url = "http://127.0.0.1:9/hook"
hmac_key_file = "hook.key"

[[rule]]
name = "file loss"
org = "acme"
team = "noc"
notifiers = ["noc-hook"]
fire_after = 2
loss = { test_id = "t-0000000000000001", threshold = 0.5 }
"#;

#[test]
fn rules_file_loads_is_read_only_and_reloads_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("data");
    admin(&data, &["org", "create", "acme"]);
    admin(&data, &["team", "create", "acme", "noc"]);
    admin(&data, &["org", "create", "other"]);
    let token = admin(
        &data,
        &["apitoken", "create", "--org", "acme", "--name", "t"],
    );
    let other_token = admin(
        &data,
        &["apitoken", "create", "--org", "other", "--name", "t"],
    );
    let secret = "hmac-secret-5f1d2c9e";
    std::fs::write(root.join("hook.key"), secret).unwrap();
    let rules = root.join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let rules_arg = rules.to_str().unwrap().to_string();
    let c = Collector::start_args(root, 0, "127.0.0.1:0", "", &[], &["--rules", &rules_arg]);
    let api = Api::new(&c.api, &token);
    let other = Api::new(&c.api, &other_token);

    let list = api.get("/api/v1/alert-rules")["rules"]
        .as_array()
        .cloned()
        .unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["fileManaged"], true);
    assert_eq!(list[0]["team"], "noc");
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert!(
        other.get("/api/v1/alert-rules")["rules"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // The API cannot change a file-managed rule.
    let (s, v) = api.call(
        "PUT",
        &format!("/api/v1/alert-rules/{id}"),
        Some(json!({"name": "x", "loss": {"testId": "t", "threshold": 0.1}})),
    );
    assert_eq!(s, 403, "{v}");
    assert_eq!(
        api.call("DELETE", &format!("/api/v1/alert-rules/{id}"), None)
            .0,
        403
    );
    // Notifiers: listed without their secret, which is sealed in the database.
    let n = api.get("/api/v1/notifiers");
    assert_eq!(n["notifiers"][0]["secretNames"], json!(["hmac_key"]));
    assert!(!n.to_string().contains(secret));
    assert!(
        other.get("/api/v1/notifiers")["notifiers"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    common::assert_not_in_database(&data, secret);

    let hup = || {
        let s = Command::new("kill")
            .args(["-HUP", &c.proc.pid().to_string()])
            .status()
            .unwrap();
        assert!(s.success());
    };
    // Add a rule and reload.
    let two = format!(
        "{RULES}\n[[rule]]\nname = \"file down\"\norg = \"acme\"\nunreachable = {{ test_id = \"t-0000000000000001\" }}\n"
    );
    std::fs::write(&rules, &two).unwrap();
    hup();
    wait_until("the reload", Duration::from_secs(20), || {
        (api.get("/api/v1/alert-rules")["rules"]
            .as_array()
            .unwrap()
            .len()
            == 2)
            .then_some(())
    });
    // The first rule kept its id (its alerts keep their state).
    assert!(api.get(&format!("/api/v1/alert-rules/{id}"))["fileManaged"] == true);

    // A bad file: the old rules stay, and the log names the line.
    let bad = format!(
        "{two}\n[[rule]]\nname = \"bad\"\norg = \"acme\"\nfire_after = \"three\"\nloss = {{ test_id = \"t\", threshold = 0.1 }}\n"
    );
    let bad_line = bad
        .lines()
        .position(|l| l.starts_with("fire_after = \"three\""))
        .unwrap()
        + 1;
    std::fs::write(&rules, &bad).unwrap();
    hup();
    let want = format!("rules.toml:{bad_line}:");
    wait_until(
        "the reload error in the log",
        Duration::from_secs(20),
        || {
            let log = c.proc.log_text();
            (log.contains("rules file not reloaded") && log.contains(&want)).then_some(())
        },
    );
    assert_eq!(
        api.get("/api/v1/alert-rules")["rules"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let metrics = ureq::get(&format!("{}/metrics", c.api))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains("foureyes_alert_rules_file_reload_errors_total 1"),
        "{metrics}"
    );
    assert!(!c.proc.log_text().contains(secret), "secret in the log");
}

/// BGP rules against a real BIRD peer: session down and visibility loss fire when BIRD drops the
/// session, and resolve when it comes back.
#[test]
fn bgp_session_down_and_visibility_from_a_real_peer() {
    const NET: u8 = 81;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut lab = common::bird::BirdLab::new(root, NET);
    let c = Collector::start(root, 0, "", &[]);
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));
    let other = Api::new(&c.api, &c.tenant("other", "ops"));
    let down = api.post(
        "/api/v1/alert-rules",
        json!({"name": "session", "sessionDown": {}}),
    );
    let more = api.post(
        "/api/v1/alert-rules",
        json!({"name": "more", "moreSpecific": {"prefix": "203.0.113.0/24"}}),
    );
    let mut listener = common::bird::start_listener(&c, root, NET, "acme", "noc");
    lab.write_conf("    route 203.0.113.0/24 blackhole;\n", "");
    lab.start();
    wait_until("the route", Duration::from_secs(60), || {
        if !listener.is_running() {
            panic!("listener exited:\n{}", listener.log_text());
        }
        (!api.get("/api/v1/routes?prefix=203.0.113.0/24&match=exact")["routes"]
            .as_array()
            .unwrap()
            .is_empty())
        .then_some(())
    });
    // Created while the prefix is visible: evaluated at once, and clear. (Created before the
    // session, it would rightly fire: nobody saw the prefix yet.)
    let vis = api.post(
        "/api/v1/alert-rules",
        json!({"name": "vis", "visibility": {"prefix": "203.0.113.0/24", "minPeers": 1}}),
    );
    // A more-specific appears: that rule fires, the others stay quiet.
    lab.write_conf(
        "    route 203.0.113.0/24 blackhole;\n    route 203.0.113.128/25 blackhole;\n",
        "",
    );
    assert!(
        lab.birdc(&["configure"])
            .to_lowercase()
            .contains("reconfigured")
    );
    let m = wait_state(
        &api,
        more["id"].as_str().unwrap(),
        "firing",
        "the more-specific alert",
    );
    assert!(
        m["summary"].as_str().unwrap().contains("203.0.113.128/25"),
        "{m}"
    );
    assert!(alerts(&api, &format!("rule_id={}", down["id"].as_str().unwrap())).is_empty());
    assert!(alerts(&api, &format!("rule_id={}", vis["id"].as_str().unwrap())).is_empty());

    lab.birdc(&["disable", "fe"]);
    let d = wait_state(&api, down["id"].as_str().unwrap(), "firing", "session down");
    assert!(
        d["subject"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/198.19.{NET}.1")),
        "{d}"
    );
    // How long from the stored session-down event to the firing alert (both collector clock).
    let ev = api.get("/api/v1/route-events?type=session_down")["events"][0].clone();
    let ms = |v: &Value| {
        let t = time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        (t.unix_timestamp_nanos() / 1_000_000) as i64
    };
    let lag = ms(&d["firedAt"]) - ms(&ev["receivedAt"]);
    println!("session down: event stored -> alert firing in {lag} ms");
    assert!(lag >= 0, "fired before the event: {lag} ms");
    let v = wait_state(
        &api,
        vis["id"].as_str().unwrap(),
        "firing",
        "visibility loss",
    );
    assert_eq!(v["values"]["seen_by"], 0.0);
    assert_eq!(v["subject"], "203.0.113.0/24");
    assert!(alerts(&other, "").is_empty());

    lab.birdc(&["enable", "fe"]);
    wait_state(&api, down["id"].as_str().unwrap(), "resolved", "session up");
    wait_state(
        &api,
        vis["id"].as_str().unwrap(),
        "resolved",
        "the prefix back",
    );
    listener.kill9();
}

/// In-process: every transition goes out on the engine's broadcast channel (with the rule's
/// notifier names and the notify flag) and to the owning tenant's `/api/v1/stream`, never to
/// another tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_reach_the_channel_and_only_the_owners_stream() {
    use foureyes_collector::{
        config::{Config, FileConfig},
        server,
    };
    use foureyes_proto::v1 as pb;
    use foureyes_store::{Scope, SystemScope, Tenant};
    use std::io::BufRead;

    let tmp = tempfile::tempdir().unwrap();
    let cfg = Config::resolve(
        FileConfig::default(),
        Some(tmp.path().join("data")),
        Some("127.0.0.1:0".parse().unwrap()),
        Some("127.0.0.1:0".parse().unwrap()),
    )
    .unwrap();
    let sd = tokio_util::sync::CancellationToken::new();
    let run = server::start(cfg, sd.clone()).await.unwrap();
    let c = run.collector.clone();
    let sys = SystemScope::collector_internal();
    let scope = |org: &str| {
        Scope::Tenant(Tenant {
            org: org.into(),
            team: None,
        })
    };
    let mut tokens = Vec::new();
    for org in ["acme", "other"] {
        c.store.create_org(&sys, org).unwrap();
        let t = foureyes_identity::ApiToken::generate();
        c.store
            .create_api_token(&scope(org), "t", &t.secret_hash())
            .unwrap();
        tokens.push(t.reveal());
    }
    let mut rx = c.alerts.subscribe();
    // One SSE client per tenant; each forwards the alert events it reads.
    let (tx, seen) = std::sync::mpsc::channel::<(usize, String)>();
    for (i, tok) in tokens.iter().enumerate() {
        let url = format!("{}/api/v1/stream?kinds=alerts", run.api_url);
        let tok = tok.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            let resp = ureq::get(&url)
                .set("Authorization", &format!("Bearer {tok}"))
                .call()
                .unwrap();
            let mut alert = false;
            for line in std::io::BufReader::new(resp.into_reader()).lines() {
                let Ok(line) = line else { return };
                if line == "event: alert" {
                    alert = true;
                } else if let Some(d) = line.strip_prefix("data: ")
                    && alert
                {
                    alert = false;
                    if tx.send((i, d.to_string())).is_err() {
                        return;
                    }
                }
            }
        });
    }
    let hub = c.clone();
    wait_until("both stream clients", Duration::from_secs(20), || {
        (hub.stream.client_count() == 2).then_some(())
    });
    // Nobody announces 192.0.2.0/24: the visibility rule holds at its first evaluation.
    let rule = c
        .alerts
        .store
        .create_alert_rule(
            &scope("acme"),
            pb::AlertRule {
                name: "dark".into(),
                kind: Some(pb::alert_rule::Kind::Visibility(pb::VisibilityRule {
                    prefix: "192.0.2.0/24".into(),
                    min_peers: 1,
                })),
                notifiers: vec!["noc-hook".into()],
                ..Default::default()
            },
        )
        .unwrap();
    c.alerts.changed();
    let mut got = Vec::new();
    while got.len() < 2 {
        let t = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("a transition within 20 s")
            .unwrap();
        got.push(t);
    }
    assert_eq!(got[0].to(), pb::AlertState::Pending);
    assert!(!got[0].notify);
    assert_eq!(got[1].to(), pb::AlertState::Firing);
    assert!(got[1].notify);
    assert_eq!(got[1].notifiers, vec!["noc-hook".to_string()]);
    assert_eq!(got[1].rule_id, rule.id);
    assert_eq!(got[1].subject, "192.0.2.0/24");
    assert_eq!(got[1].alert.as_ref().unwrap().org, "acme");
    // The owner's stream got both; the other tenant's nothing.
    let events = tokio::task::spawn_blocking(move || {
        let mut v = Vec::new();
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
            match seen.recv_timeout(left) {
                Ok(e) => v.push(e),
                Err(_) => break,
            }
        }
        v
    })
    .await
    .unwrap();
    assert!(events.iter().all(|(i, _)| *i == 0), "{events:?}");
    assert_eq!(events.len(), 2, "{events:?}");
    let firing: Value = serde_json::from_str(&events[1].1).unwrap();
    assert_eq!(firing["to"], "ALERT_STATE_FIRING");
    assert_eq!(firing["ruleName"], "dark");
    sd.cancel();
}

/// A minimal HTTP receiver on `addr`: answers every request 200 and keeps the bodies.
fn http_sink(addr: &str) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let l = TcpListener::bind((addr, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let got = bodies.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // Headers, then as much body as Content-Length says.
            let split = |b: &[u8]| -> Option<usize> {
                let text = String::from_utf8_lossy(b);
                let end = text.find("\r\n\r\n")?;
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                (b.len() >= end + 4 + len).then_some(end + 4)
            };
            while split(&buf).is_none() {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            if let Some(at) = split(&buf) {
                let body = String::from_utf8_lossy(&buf[at..]).to_string();
                got.lock().unwrap().push(body);
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, bodies)
}

/// With the API bound to 0.0.0.0 the collector answers on every interface address, so a
/// notifier aimed at one (here the root end of a veth this test creates, 198.18.N.2) is refused as
/// "the collector's own" even with `allow_private`; the operator's `allowed` lets it through.
#[test]
fn a_notifier_to_an_interface_address_is_refused_unless_allowed() {
    const NET: u8 = 114;
    let link = common::netns::VethNs::new("own", NET);
    let (port, hits) = http_sink(&link.root());
    let hits = || hits.lock().unwrap().len();
    let rules = format!(
        r#"
[[notifier]]
name = "hook"
org = "acme"
kind = "webhook"
url = "http://{}:{port}/hook"

[[rule]]
name = "unseen prefix"
org = "acme"
notifiers = ["hook"]
visibility = {{ prefix = "203.0.113.0/24", min_peers = 1 }}
"#,
        link.root()
    );
    // The visibility rule fires at once (no listener sees the prefix), and its notification goes
    // to the interface address.
    let run = |root: &Path, policy: &str| {
        let data = root.join("data");
        admin(&data, &["org", "create", "acme"]);
        let file = root.join("rules.toml");
        std::fs::write(&file, &rules).unwrap();
        let file = file.to_str().unwrap().to_string();
        Collector::start_args(
            root,
            0,
            "0.0.0.0:0",
            &format!("[notifier_policy]\nallow_private = true\n{policy}"),
            &[],
            &["--rules", &file],
        )
    };

    let tmp = tempfile::tempdir().unwrap();
    let c = run(tmp.path(), "");
    let log = wait_until("the refused notification", Duration::from_secs(60), || {
        let log = c.proc.log_text();
        log.contains("notification failed").then_some(log)
    });
    assert!(log.contains("the collector's own"), "{log}");
    assert_eq!(hits(), 0);
    drop(c);

    let tmp = tempfile::tempdir().unwrap();
    let c = run(tmp.path(), &format!("allowed = [\"{}/32\"]\n", link.root()));
    wait_until("the allowed notification", Duration::from_secs(60), || {
        (hits() > 0).then_some(())
    });
    let log = c.proc.log_text();
    assert!(log.contains("notification sent"), "{log}");
    assert!(!log.contains("the collector's own"), "{log}");
}

/// A duration hold fires when it is met, not at the engine's next one-second tick: rules whose
/// holds start 200 ms apart (so a fixed tick would be up to 800 ms late for one of them) each fire
/// `fire_after_seconds` after going pending, never before.
#[test]
fn duration_holds_fire_when_due() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "", &[]);
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));
    let ms = |v: &Value| {
        let t = time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        (t.unix_timestamp_nanos() / 1_000_000) as i64
    };
    // Visibility rules with no listener hold at once (nobody sees the prefix).
    let mut rules = Vec::new();
    for i in 0..5 {
        let r = api.post(
            "/api/v1/alert-rules",
            json!({"name": format!("held {i}"), "fireAfterSeconds": 2,
                   "visibility": {"prefix": format!("203.0.113.{}/32", i), "minPeers": 1}}),
        );
        rules.push(r["id"].as_str().unwrap().to_string());
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut lags = Vec::new();
    for r in &rules {
        let a = wait_state(&api, r, "firing", "the held alert to fire");
        let t = api.get(&format!(
            "/api/v1/alerts/{}/transitions",
            a["id"].as_str().unwrap()
        ))["transitions"]
            .as_array()
            .cloned()
            .unwrap();
        let at = |to: &str| {
            t.iter()
                .find(|x| x["to"] == to)
                .map(|x| ms(&x["at"]))
                .unwrap_or_else(|| panic!("no {to} in {t:?}"))
        };
        lags.push(at("ALERT_STATE_FIRING") - at("ALERT_STATE_PENDING") - 2000);
    }
    println!("duration hold met -> firing: {lags:?} ms");
    assert!(lags.iter().all(|l| *l >= 0), "fired early: {lags:?}");
    // Five holds 200 ms apart: an engine waiting for a one-second tick fires two or three of
    // them 500 ms or more late, whatever the tick's phase. One late outlier is allowed, so a
    // loaded machine's scheduling hiccup does not fail this.
    let mut sorted = lags.clone();
    sorted.sort_unstable();
    assert!(sorted[3] < 500, "late: {lags:?}");
}

/// Slack takes images only by URL: with `chart_base_url` set, a firing alert about a test reaches
/// a real Slack-compatible receiver with an image block whose signed link serves the chart as a
/// PNG without any credential; a changed signature or another alert's id gets 404.
#[test]
fn slack_gets_a_signed_chart_link() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("data");
    admin(&data, &["org", "create", "acme"]);
    admin(&data, &["team", "create", "acme", "noc"]);
    let token = admin(
        &data,
        &["apitoken", "create", "--org", "acme", "--name", "t"],
    );
    let (sink, bodies) = http_sink("127.0.0.1");
    std::fs::write(
        root.join("slack.url"),
        format!("http://127.0.0.1:{sink}/slack"),
    )
    .unwrap();
    let rules = root.join("rules.toml");
    std::fs::write(
        &rules,
        "[[notifier]]\nname = \"chat\"\norg = \"acme\"\nkind = \"slack\"\nurl_file = \"slack.url\"\n",
    )
    .unwrap();
    let api_port = common::free_port();
    let base = format!("http://127.0.0.1:{api_port}");
    let c = Collector::start_args(
        root,
        0,
        &format!("127.0.0.1:{api_port}"),
        &format!("chart_base_url = \"{base}/\"\n[notifier_policy]\nallowed = [\"127.0.0.1/32\"]\n"),
        &[],
        &["--rules", rules.to_str().unwrap()],
    );
    let api = Api::new(&c.api, &token);
    let mut gate = Gate::new();
    gate.close();
    let test = tcp_test(&api, gate.port);
    let rule = api.post(
        "/api/v1/alert-rules",
        json!({"name": "gate down", "unreachable": {"testId": test, "windowSeconds": 2},
               "notifiers": ["chat"]}),
    );
    let state = common::enroll_node(&c, root, "acme", "noc");
    let _node = common::run_node(&state, root.join("node.log"));
    let firing = wait_state(
        &api,
        rule["id"].as_str().unwrap(),
        "firing",
        "the alert to fire",
    );
    let body = wait_until("the Slack message", Duration::from_secs(60), || {
        bodies.lock().unwrap().first().cloned()
    });
    let msg: Value = serde_json::from_str(&body).unwrap();
    let url = msg["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "image")
        .and_then(|b| b["image_url"].as_str())
        .unwrap_or_else(|| panic!("no image block in {msg}"))
        .to_string();
    let alert_id = firing["id"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{base}/charts/acme/{alert_id}.png?exp=")),
        "{url}"
    );
    let get = |u: &str| match ureq::get(u).timeout(Duration::from_secs(30)).call() {
        Ok(r) => {
            let ct = r.header("content-type").unwrap_or("").to_string();
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut r.into_reader(), &mut b).unwrap();
            (200, ct, b)
        }
        Err(ureq::Error::Status(s, _)) => (s, String::new(), Vec::new()),
        Err(e) => panic!("{u}: {e}"),
    };
    let (s, ct, png) = get(&url);
    assert_eq!(s, 200, "{url}");
    assert_eq!(ct, "image/png");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // Tampered: the last hex digit of the signature changed.
    let mut bad = url.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == '0' { '1' } else { '0' });
    assert_eq!(get(&bad).0, 404);
    // The same signature does not open another alert, nor the same alert in another org.
    assert_eq!(get(&url.replace(alert_id, "a-0000000000000000")).0, 404);
    assert_eq!(get(&url.replace("/charts/acme/", "/charts/other/")).0, 404);
}
