//! End to end with routing that follows BGP (`common/routed_lab.rs`): the node's probes reach
//! their targets through an FRR router (zebra + bgpd) that learns the targets' prefixes from a
//! BIRD upstream and is peered with the listener. Withdrawing a prefix upstream removes it from
//! the router's forwarding table, so the probes fail because of the withdraw, and the collector
//! has to say so: a provisional correlation within seconds, then the verdict.
//!
//! An `unreachable` alert rule on the test follows: it fires, its webhook notification (HMAC
//! signed, with the chart) reaches a receiver in the test, and after the re-announce the
//! all-clear arrives with the same dedup key.
//!
//! Negative controls: a prefix covering no target correlates nothing, and a more-specific
//! covering one of two targets correlates only that one.
//!
//! Needs root, `frr`, `bird2`, `iproute2` and the built binaries (`cargo build --bins`).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::time::Duration;

use common::routed_lab::RoutedLab;
use common::{Api, Collector, start_listener, wait_until};
use serde_json::Value;

fn correlations(api: &Api) -> Vec<Value> {
    api.get("/api/v1/correlations?page_size=1000")["correlations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn tests_of(c: &Value) -> Vec<String> {
    let mut v: Vec<String> = c["tests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["testName"].as_str().map(String::from))
        .collect();
    v.sort();
    v
}

fn has_event(api: &Api, kind: &str, prefix: &str) -> bool {
    api.get(&format!(
        "/api/v1/route-events?page_size=100&type={kind}&prefix={prefix}"
    ))["events"]
        .as_array()
        .is_some_and(|e| !e.is_empty())
}

/// The status of a test's latest result from the last few seconds (results list oldest first).
fn last_status(api: &Api, test_id: &str) -> Option<String> {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        - 3_000;
    api.get(&format!(
        "/api/v1/results?page_size=1000&test_id={test_id}&from={since}"
    ))["results"]
        .as_array()?
        .last()?["status"]
        .as_str()
        .map(String::from)
}

#[test]
fn a_withdraw_upstream_breaks_forwarding_and_is_correlated_as_unreachable() {
    const NET: u8 = 84;
    const TARGETS: u8 = 94;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut lab = RoutedLab::new(root, NET, TARGETS);
    // The rules file names the webhook notifier; the org must exist first, so it starts empty and
    // is reloaded (SIGHUP) once the org is there. The operator allows loopback targets.
    let rules = root.join("rules.toml");
    std::fs::write(&rules, "").unwrap();
    let hook = Receiver::start();
    let c = Collector::start_args(
        root,
        0,
        "127.0.0.1:0",
        "[correlation]\nbefore = \"20s\"\nafter = \"6s\"\nincident_gap = \"2s\"\n\
         [notifier_policy]\nallowed = [\"127.0.0.1/32\"]\n",
        &[("RUST_LOG", "info,foureyes_collector::correlator=debug")],
        &["--rules", rules.to_str().unwrap()],
    );
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));
    std::fs::write(root.join("hook.key"), "routed-hmac-key\n").unwrap();
    std::fs::write(
        &rules,
        format!(
            "[[notifier]]\nname = \"hook\"\norg = \"acme\"\nkind = \"webhook\"\n\
             url = \"http://127.0.0.1:{}/hook\"\nhmac_key_file = \"hook.key\"\n",
            hook.port
        ),
    )
    .unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &c.proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_until(
        "the notifier from the rules file",
        Duration::from_secs(20),
        || (api.get("/api/v1/notifiers")["notifiers"][0]["name"] == "hook").then_some(()),
    );
    let mut ids = std::collections::HashMap::new();
    for (name, host) in [("a", lab.target(1)), ("b", lab.target(2))] {
        let t = api.post(
            "/api/v1/tests",
            serde_json::json!({"name": name, "intervalMs": 500, "timeoutMs": 400, "count": 1,
                               "config": {"icmp": {"host": host}}}),
        );
        ids.insert(name, t["id"].as_str().unwrap().to_string());
    }
    let node_state = common::enroll_node(&c, root, "acme", "noc");
    let _node = common::run_node(&node_state, root.join("node.log"));
    let _listener = start_listener(
        &c,
        root,
        "acme",
        "noc",
        &format!(
            "local_as = 65002\nrouter_id = \"{l}\"\n[[peer]]\naddress = \"{r}\"\nremote_as = 65001\nlisten = \"{l}\"\n",
            l = lab.listener_addr(),
            r = lab.router_addr()
        ),
    );

    let t24 = format!("198.19.{TARGETS}.0/24");
    let base = format!("    route {t24} blackhole;\n");
    lab.announce(&base);
    lab.start();
    wait_until(
        "the router's route to the targets",
        Duration::from_secs(60),
        || lab.router_fib().contains(&t24).then_some(()),
    );
    wait_until("the /24 at the collector", Duration::from_secs(60), || {
        has_event(&api, "announce", &t24).then_some(())
    });
    wait_until("both targets answering", Duration::from_secs(60), || {
        (last_status(&api, &ids["a"]).as_deref() == Some("STATUS_OK")
            && last_status(&api, &ids["b"]).as_deref() == Some("STATUS_OK"))
        .then_some(())
    });

    // The alert rule starts once a is reachable (before that, a was down for lack of routes).
    let rule = api.post(
        "/api/v1/alert-rules",
        serde_json::json!({"name": "a unreachable", "severity": "SEVERITY_CRITICAL",
                           "unreachable": {"testId": ids["a"], "windowSeconds": 3},
                           "fireAfter": 1, "clearAfter": 2, "notifiers": ["hook"]}),
    );
    assert!(rule["id"].is_string(), "{rule}");
    // A rule about the prefix itself: its notification charts a test the prefix routes.
    let vis = api.post(
        "/api/v1/alert-rules",
        serde_json::json!({"name": "/24 visible", "severity": "SEVERITY_WARNING",
                           "visibility": {"prefix": t24, "minPeers": 1},
                           "fireAfter": 1, "clearAfter": 1, "notifiers": ["hook"]}),
    );
    assert!(vis["id"].is_string(), "{vis}");

    // Negative control: a prefix covering no target.
    let with_other = format!("{base}    route 10.97.0.0/16 blackhole;\n");
    lab.reconfigure(&with_other);
    wait_until("the unrelated announce", Duration::from_secs(30), || {
        has_event(&api, "announce", "10.97.0.0/16").then_some(())
    });
    std::thread::sleep(Duration::from_secs(4));
    // Only this prefix is the control: other correlations are the later steps' business.
    let other: Vec<Value> = correlations(&api)
        .into_iter()
        .filter(|c| c["prefixes"][0] == "10.97.0.0/16")
        .collect();
    assert!(other.is_empty(), "{other:?}");

    // A more-specific for b only: b's traffic now follows the /32, a's still the /24.
    let b32 = format!("198.19.{TARGETS}.2/32");
    let with_b32 = format!("{with_other}    route {b32} blackhole;\n");
    lab.reconfigure(&with_b32);
    let more = wait_until("a correlation for b's /32", Duration::from_secs(30), || {
        correlations(&api)
            .into_iter()
            .find(|c| c["prefixes"][0] == b32.as_str())
    });
    assert_eq!(tests_of(&more), vec!["b"], "{more}");

    // Withdraw the /24 upstream: the router drops it from its FIB, so a is unreachable while b
    // keeps its /32. Nothing is removed by hand.
    std::thread::sleep(Duration::from_secs(3));
    lab.reconfigure(&with_b32.replace(&base, ""));
    // The record is stored as soon as it touches a test, before its verdict (which cannot come
    // before after + incident_gap, 8 s, have passed): the first sight of it is provisional.
    let gone = wait_until("a provisional correlation", Duration::from_secs(30), || {
        correlations(&api)
            .into_iter()
            .find(|c| c["prefixes"][0] == t24.as_str() && c["withdraws"] == "1")
    });
    assert_eq!(gone["verdict"], "VERDICT_PENDING", "{gone}");
    assert_eq!(tests_of(&gone), vec!["a"], "{gone}");
    wait_until(
        "the router to drop the /24",
        Duration::from_secs(30),
        || (!lab.router_fib().contains(&t24)).then_some(()),
    );
    let id = gone["id"].as_str().unwrap().to_string();
    let decided = wait_until("the withdraw's verdict", Duration::from_secs(60), || {
        api.get(&format!("/api/v1/correlations/{id}"))
            .as_object()
            .filter(|c| c["verdict"] != "VERDICT_PENDING")
            .cloned()
    });
    assert_eq!(decided["verdict"], "VERDICT_UNREACHABLE", "{decided:?}");
    assert_ne!(last_status(&api, &ids["a"]).as_deref(), Some("STATUS_OK"));
    assert_eq!(last_status(&api, &ids["b"]).as_deref(), Some("STATUS_OK"));

    // The alert fired and its notification arrived, signed, with the chart.
    let firing = hook.wait("the firing notification", |b| {
        b["state"] == "firing" && b["alert"]["subject"] == ids["a"].as_str()
    });
    assert_eq!(firing.body["org"], "acme");
    assert_eq!(firing.body["severity"], "critical");
    assert_eq!(
        firing.body["alert"]["subject"],
        ids["a"].as_str(),
        "{}",
        firing.body
    );
    assert!(
        firing.body["chart_png_base64"]
            .as_str()
            .is_some_and(|s| s.len() > 1000),
        "no chart"
    );
    let sig = firing.header("x-foureyes-signature").unwrap_or_default();
    assert!(
        sig.starts_with("sha256=") && sig.len() == 7 + 64,
        "signature header {sig:?}"
    );
    assert!(firing.header("x-foureyes-timestamp").is_some());
    // The prefix's own alert carries the chart of a test whose target the /24 routes.
    let lost = hook.wait("the /24 visibility notification", |b| {
        b["state"] == "firing" && b["alert"]["subject"] == t24.as_str()
    });
    assert!(
        lost.body["chart_png_base64"]
            .as_str()
            .is_some_and(|s| s.len() > 1000),
        "no chart for the prefix alert: {}",
        lost.body
    );
    let alert_id = firing.body["alert_id"].as_str().unwrap().to_string();
    let alert = api.get(&format!("/api/v1/alerts/{alert_id}"));
    assert_eq!(alert["state"], "ALERT_STATE_FIRING", "{alert}");

    // Re-announce: forwarding comes back with the route, and the all-clear follows.
    lab.reconfigure(&with_b32);
    wait_until("a answering again", Duration::from_secs(60), || {
        (last_status(&api, &ids["a"]).as_deref() == Some("STATUS_OK")).then_some(())
    });
    let resolved = hook.wait("the all-clear", |b| {
        b["state"] == "resolved" && b["alert"]["subject"] == ids["a"].as_str()
    });
    assert_eq!(resolved.body["dedup_key"], firing.body["dedup_key"]);
    assert_eq!(resolved.body["alert_id"], alert_id.as_str());

    // FOUREYES_RECORD=FILE keeps this run's tests, route events and results as JSONL: the
    // correlator's golden test (collector/tests/golden/) replays such recordings.
    if let Some(path) = std::env::var_os("FOUREYES_RECORD") {
        record(&api, std::path::Path::new(&path));
    }
}

/// One request the webhook receiver got.
struct Hooked {
    headers: Vec<(String, String)>,
    body: Value,
}

impl Hooked {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

/// A minimal HTTP receiver on loopback for webhook notifications (answers 200 to each POST).
struct Receiver {
    port: u16,
    rx: std::sync::mpsc::Receiver<Hooked>,
    seen: std::cell::RefCell<Vec<Hooked>>,
}

impl Receiver {
    fn start() -> Self {
        use std::io::{BufRead, BufReader, Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut headers = Vec::new();
                let mut line = String::new();
                let _ = r.read_line(&mut line); // request line
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        headers.push((k.trim().to_string(), v.trim().to_string()));
                    }
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let mut s = s;
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if tx.send(Hooked { headers, body }).is_err() {
                    return;
                }
            }
        });
        Receiver {
            port,
            rx,
            seen: Default::default(),
        }
    }

    /// The first request (so far or within a minute) whose JSON body matches.
    fn wait(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Hooked {
        let t0 = std::time::Instant::now();
        loop {
            let mut seen = self.seen.borrow_mut();
            if let Some(i) = seen.iter().position(|h| pred(&h.body)) {
                return seen.remove(i);
            }
            let left = Duration::from_secs(60).saturating_sub(t0.elapsed());
            match self.rx.recv_timeout(left) {
                Ok(h) => seen.push(h),
                Err(_) => panic!(
                    "timed out waiting for {what}; got {:?}",
                    seen.iter().map(|h| &h.body["state"]).collect::<Vec<_>>()
                ),
            }
        }
    }
}

/// Every item of a paged list endpoint.
fn all_pages(api: &Api, path: &str, key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let page = api.get(&format!("{path}{sep}page_size=1000&page_token={token}"));
        out.extend(page[key].as_array().cloned().unwrap_or_default());
        match page["nextPageToken"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_string(),
            _ => return out,
        }
    }
}

fn record(api: &Api, path: &std::path::Path) {
    let mut lines = Vec::new();
    for t in all_pages(api, "/api/v1/tests", "tests") {
        lines.push(serde_json::json!({ "test": t }));
    }
    for e in all_pages(api, "/api/v1/route-events", "events") {
        lines.push(serde_json::json!({ "routeEvent": e }));
    }
    for r in all_pages(api, "/api/v1/results", "results") {
        lines.push(serde_json::json!({ "result": r }));
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
    println!("recorded {} lines to {}", lines.len(), path.display());
}
