//! `/api/v1/stream` and `/metrics` end to end: the real collector and a real node as processes,
//! SSE read over real HTTP.
//!
//! Architecture Invariant: the stream never shows another tenant's rows
//! (`stream_is_live_tenant_scoped_resumable_and_drops_slow_clients`).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
struct SseEvent {
    name: String,
    id: String,
    data: String,
}

impl SseEvent {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
    fn seq(&self) -> u64 {
        let v = self.json();
        match &v["seq"] {
            Value::String(s) => s.parse().unwrap(),
            Value::Number(n) => n.as_u64().unwrap(),
            other => panic!("no seq in {other}"),
        }
    }
}

/// Opens a stream and reads it on a thread, up to `max` events, then hangs up. Returns the HTTP
/// status and the events as they come.
fn open_sse(
    api: &str,
    token: &str,
    query: &str,
    last_id: Option<&str>,
    max: usize,
) -> (u16, mpsc::Receiver<SseEvent>) {
    let agent = ureq::AgentBuilder::new()
        .timeout_read(Duration::from_secs(120))
        .build();
    let mut req = agent
        .get(&format!("{api}/api/v1/stream?{query}"))
        .set("Authorization", &format!("Bearer {token}"));
    if let Some(id) = last_id {
        req = req.set("Last-Event-ID", id);
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(s, _)) => return (s, mpsc::channel().1),
        Err(e) => panic!("stream: {e}"),
    };
    let status = resp.status();
    assert_eq!(
        resp.header("content-type"),
        Some("text/event-stream"),
        "stream content type"
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(resp.into_reader());
        let (mut name, mut id, mut data) = (String::new(), String::new(), String::new());
        let mut sent = 0;
        let mut line = String::new();
        while sent < max {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if !name.is_empty() || !data.is_empty() {
                    let ev = SseEvent {
                        name: std::mem::take(&mut name),
                        id: std::mem::take(&mut id),
                        data: std::mem::take(&mut data),
                    };
                    if tx.send(ev).is_err() {
                        return;
                    }
                    sent += 1;
                }
            } else if let Some(v) = l.strip_prefix("event:") {
                name = v.trim_start().to_string();
            } else if let Some(v) = l.strip_prefix("id:") {
                id = v.trim_start().to_string();
            } else if let Some(v) = l.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    });
    (status, rx)
}

/// Collects events until `n` have come (panics on the deadline).
fn take(rx: &mpsc::Receiver<SseEvent>, n: usize, what: &str) -> Vec<SseEvent> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ev) => out.push(ev),
            Err(e) => panic!("{what}: {} of {n} events, then {e:?}", out.len()),
        }
    }
    out
}

fn metrics(api: &str, token: Option<&str>) -> (u16, String) {
    let mut req = ureq::get(&format!("{api}/metrics")).timeout(Duration::from_secs(10));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
        Err(e) => panic!("metrics: {e}"),
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn promtool_check(text: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is missing: apt-get install prometheus");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client that asks for the stream and then never reads: a tiny receive buffer so the server's
/// writes stall early.
fn slow_client(api: &str, token: &str) -> socket2::Socket {
    let addr: std::net::SocketAddr = api.strip_prefix("http://").unwrap().parse().unwrap();
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    let req = format!(
        "GET /api/v1/stream?kinds=results HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    (&s).write_all(req.as_bytes()).unwrap();
    s
}

#[test]
fn stream_is_live_tenant_scoped_resumable_and_drops_slow_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("scrape.token");
    std::fs::write(&token_file, "scrape-token-0123456789abcdef\n").unwrap();
    let cfg = format!(
        "metrics_token_file = \"{}\"\n[stream]\nclient_buffer = 256\n",
        token_file.display()
    );
    let c = Collector::start(tmp.path(), 0, &cfg, &[]);
    let a = Api::new(&c.api, &c.tenant("acme", "noc"));
    let b = Api::new(&c.api, &c.tenant("other", "noc"));
    let api_port: u16 = c.api.rsplit(':').next().unwrap().parse().unwrap();
    let mut test_ids = Vec::new();
    // Ten tests every 100 ms: about 100 results a second, enough to fill a stalled client.
    for i in 0..10 {
        let t = a.post(
            "/api/v1/tests",
            json!({"name": format!("tcp-{i}"), "intervalMs": 100,
                   "config": {"tcp": {"host": "127.0.0.1", "port": api_port}}}),
        );
        test_ids.push(t["id"].as_str().unwrap().to_string());
    }
    let state = enroll_node(&c, tmp.path(), "acme", "noc");

    // Streams open before the node runs: what they show is live.
    let (s, live) = open_sse(&c.api, &a.token, "kinds=results", None, usize::MAX);
    assert_eq!(s, 200);
    let (s, other) = open_sse(&c.api, &b.token, "", None, usize::MAX);
    assert_eq!(s, 200);
    let (s, first) = open_sse(&c.api, &a.token, "kinds=results", None, 5);
    assert_eq!(s, 200);
    let (s, _) = open_sse(&c.api, &a.token, "kinds=nonsense", None, 1);
    assert_eq!(s, 400);
    let (s, _) = open_sse(&c.api, "fea1.bogus", "", None, 1);
    assert_eq!(s, 401);

    let _node = run_node(&state, tmp.path().join("node.log"));
    let aid = wait_connected(&a);

    // Live: results of this tenant's node arrive, in seq order, with ids.
    let seen = take(&live, 20, "live results");
    for ev in &seen {
        assert_eq!(ev.name, "result");
        assert!(ev.id.starts_with("s2."), "{ev:?}");
        assert_eq!(ev.json()["agentId"], aid.as_str());
    }
    let seqs: Vec<u64> = seen.iter().map(SseEvent::seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // Resume: the first client hung up after 5 events; reconnecting with the last id it saw
    // replays exactly what it missed, then continues live.
    let got = take(&first, 5, "first client");
    let last_id = got[4].id.clone();
    let last_seq = got[4].seq();
    let mut all_live: Vec<SseEvent> = seen;
    let enough = |v: &Vec<SseEvent>| v.iter().filter(|e| e.seq() > last_seq).count() >= 60;
    while !enough(&all_live) {
        all_live.extend(take(&live, 1, "more live results"));
    }
    let (s, resumed) = open_sse(
        &c.api,
        &a.token,
        "kinds=results",
        Some(&last_id),
        usize::MAX,
    );
    assert_eq!(s, 200);
    let want: Vec<u64> = all_live
        .iter()
        .map(SseEvent::seq)
        .filter(|s| *s > last_seq)
        .take(60)
        .collect();
    let got: Vec<u64> = take(&resumed, 60, "resumed stream")
        .iter()
        .map(SseEvent::seq)
        .collect();
    assert_eq!(
        got, want,
        "resume after seq {last_seq} must neither skip nor repeat"
    );

    // A slow client is dropped; ingest and the other clients carry on.
    let stalled = slow_client(&c.api, &a.token);
    let dropped = wait_until(
        "the stalled client to be dropped",
        Duration::from_secs(240),
        || {
            // Keep draining the live stream so it stays fast.
            while live.try_recv().is_ok() {}
            let (_, text) = metrics(&c.api, None);
            metric(&text, "foureyes_stream_dropped_clients_total").filter(|v| *v >= 1.0)
        },
    );
    assert!(dropped >= 1.0);
    while live.try_recv().is_ok() {}
    let after = take(&live, 10, "live results after the drop");
    assert!(after.iter().all(|e| e.name == "result"));
    drop(stalled);

    // The other tenant saw nothing, though its stream was open all along.
    assert!(
        other.try_recv().is_err(),
        "another tenant's stream showed acme's rows"
    );
    let (s, filtered) = open_sse(&c.api, &b.token, &format!("agent_id={aid}"), None, 1);
    assert_eq!(s, 200);
    std::thread::sleep(Duration::from_secs(2));
    assert!(filtered.try_recv().is_err());

    // /metrics from loopback: valid exposition format, per-test gauges, the drop counted.
    let (s, text) = metrics(&c.api, None);
    assert_eq!(s, 200, "{text}");
    promtool_check(&text);
    for t in &test_ids {
        let line = format!("foureyes_test_latency_seconds{{org=\"acme\",test_id=\"{t}\"}}");
        assert!(text.contains(&line), "no {line} in\n{text}");
    }
    assert!(
        metric(&text, "foureyes_agent_streams") == Some(1.0),
        "{text}"
    );
    assert!(metric(&text, "foureyes_ingest_rows_total").unwrap() > 0.0);
    // The flush-duration histogram counts every committed flush (a scrape may fall between the
    // two reads, so the histogram may be one ahead), with non-decreasing buckets.
    let flushes = metric(&text, "foureyes_ingest_flushes_total").unwrap();
    let count = metric(&text, "foureyes_ingest_flush_duration_seconds_count").unwrap();
    assert!(
        count >= flushes && count >= 1.0,
        "{count} vs {flushes}:\n{text}"
    );
    let buckets: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("foureyes_ingest_flush_duration_seconds_bucket{le=\""))
        .filter_map(|l| l.split_once("} ")?.1.parse().ok())
        .collect();
    assert_eq!(buckets.len(), 13, "{text}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&count));
    assert!(metric(&text, "foureyes_ingest_flush_duration_seconds_sum").unwrap() > 0.0);
    assert!(!text.contains("org=\"other\""));
    // The scrape token works too (the loopback rule would admit anyone here; remote peers are
    // `metrics_for_a_remote_client_need_the_scrape_token`).
    let (s, _) = metrics(&c.api, Some("scrape-token-0123456789abcdef"));
    assert_eq!(s, 200);
}

/// `curl` run inside the namespace against `url` (the CA in `ca`); returns (HTTP status, body).
fn curl_from(
    ns: &common::netns::VethNs,
    url: &str,
    ca: &std::path::Path,
    token: Option<&str>,
) -> (u16, String) {
    let mut cmd = ns.command("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "20",
        "-w",
        "\n%{http_code}",
        "--cacert",
    ])
    .arg(ca)
    .arg(url);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd
        .output()
        .expect("curl is installed (apt-get install -y curl)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "curl {url}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

/// `/metrics` for a remote client over real HTTPS: the API is bound to a veth address (not
/// loopback) and `curl` asks from inside a namespace. No credential is a 401, a tenant's API
/// token a 403, the scrape token a 200 whose body passes `promtool check metrics`.
#[test]
fn metrics_for_a_remote_client_need_the_scrape_token() {
    use base64::Engine;
    const NET: u8 = 115;
    const SCRAPE: &str = "scrape-token-remote-0123456789";
    let link = common::netns::VethNs::new("met", NET);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let token_file = root.join("scrape.token");
    std::fs::write(&token_file, format!("{SCRAPE}\n")).unwrap();
    let c = Collector::start_api(
        root,
        0,
        &format!("{}:0", link.root()),
        &format!(
            "metrics_token_file = \"{}\"\nserver_names = [\"{}\"]\n",
            token_file.display(),
            link.root()
        ),
        &[],
    );
    assert!(c.api.starts_with("https://"), "{}", c.api);
    let tenant = c.tenant("acme", "noc");
    // The collector's CA as PEM, for curl.
    let der = std::fs::read(c.data_dir.join("ca.crt.der")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let body: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    let ca = root.join("ca.pem");
    std::fs::write(
        &ca,
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            body.join("\n")
        ),
    )
    .unwrap();
    let url = format!("{}/metrics", c.api);

    let (s, text) = curl_from(&link, &url, &ca, None);
    assert_eq!(s, 401, "{text}");
    let (s, text) = curl_from(&link, &url, &ca, Some(&tenant));
    assert_eq!(s, 403, "{text}");
    let (s, text) = curl_from(&link, &url, &ca, Some("scrape-token-remote-wrong"));
    assert_eq!(s, 403, "{text}");
    let (s, text) = curl_from(&link, &url, &ca, Some(SCRAPE));
    assert_eq!(s, 200, "{text}");
    assert!(
        metric(&text, "foureyes_ingest_rows_total").is_some(),
        "{text}"
    );
    promtool_check(&text);
    // The tenant's token still works where it belongs.
    let (s, _) = curl_from(
        &link,
        &format!("{}/api/v1/tests", c.api),
        &ca,
        Some(&tenant),
    );
    assert_eq!(s, 200);
}

/// A resume that would replay more than `[stream] max_replay` rows replays that many, then says
/// so with an `event: reset` naming the skipped range, and continues live after it: the gap is
/// announced, never silent, and nothing is sent twice.
#[test]
fn a_resume_past_the_replay_limit_sends_reset() {
    const CAP: usize = 20;
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(
        tmp.path(),
        0,
        &format!("[stream]\nmax_replay = {CAP}\n"),
        &[],
    );
    let a = Api::new(&c.api, &c.tenant("acme", "noc"));
    let api_port: u16 = c.api.rsplit(':').next().unwrap().parse().unwrap();
    for i in 0..5 {
        a.post(
            "/api/v1/tests",
            json!({"name": format!("tcp-{i}"), "intervalMs": 100,
                   "config": {"tcp": {"host": "127.0.0.1", "port": api_port}}}),
        );
    }
    let state = enroll_node(&c, tmp.path(), "acme", "noc");
    let (s, live) = open_sse(&c.api, &a.token, "kinds=results", None, usize::MAX);
    assert_eq!(s, 200);
    let (_, first) = open_sse(&c.api, &a.token, "kinds=results", None, 5);
    let _node = run_node(&state, tmp.path().join("node.log"));
    wait_connected(&a);

    let got = take(&first, 5, "first client");
    let (last_id, last_seq) = (got[4].id.clone(), got[4].seq());
    // Three times the cap stored after the client hung up.
    let mut seen: Vec<SseEvent> = Vec::new();
    while seen.iter().filter(|e| e.seq() > last_seq).count() < 3 * CAP {
        seen.extend(take(&live, 1, "live results"));
    }
    let stored_max = seen.iter().map(SseEvent::seq).max().unwrap();
    let want: Vec<u64> = seen
        .iter()
        .map(SseEvent::seq)
        .filter(|s| *s > last_seq)
        .take(CAP)
        .collect();

    let (s, resumed) = open_sse(
        &c.api,
        &a.token,
        "kinds=results",
        Some(&last_id),
        usize::MAX,
    );
    assert_eq!(s, 200);
    let replayed = take(&resumed, CAP, "the capped replay");
    assert!(replayed.iter().all(|e| e.name == "result"), "{replayed:?}");
    let got: Vec<u64> = replayed.iter().map(SseEvent::seq).collect();
    assert_eq!(got, want, "the replay starts right after Last-Event-ID");
    let reset = take(&resumed, 1, "the reset").remove(0);
    assert_eq!(reset.name, "reset", "{reset:?}");
    let r = reset.json();
    assert_eq!(r["reason"], "replay_limit", "{r}");
    assert_eq!(r["replayedRows"], CAP, "{r}");
    assert_eq!(r["after"], replayed[CAP - 1].id.as_str(), "{r}");
    assert_eq!(r["resumeFrom"], reset.id.as_str(), "{r}");
    // Live after the announced gap: nothing stored before the resume comes again.
    let after = take(&resumed, 5, "live after the reset");
    for e in &after {
        assert_eq!(e.name, "result", "{e:?}");
        assert!(e.seq() > stored_max, "{} again after the reset", e.seq());
    }
    // Reconnecting from the reset's id continues from there, with no reset.
    let (_, again) = open_sse(&c.api, &a.token, "kinds=results", Some(&reset.id), 3);
    let next = take(&again, 3, "resume from the reset id");
    assert!(
        next.iter()
            .all(|e| e.name == "result" && e.seq() > stored_max)
    );
}

/// A correlation record as the correlator saves it (the test writes it into the collector's own
/// database, as the correlator would after route changes: a BGP lab for this is `routed.rs`).
fn correlation(id: &str, org: &str, verdict: i32) -> foureyes_proto::v1::Correlation {
    foureyes_proto::v1::Correlation {
        id: id.into(),
        org: org.into(),
        team: "noc".into(),
        opened_at: Some(foureyes_proto::timestamp_from_ms(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64,
        )),
        verdict,
        summary: format!("{id} {verdict}"),
        ..Default::default()
    }
}

/// Correlation changes and alert transitions stored while a client was away are replayed on
/// `Last-Event-ID`, once each and in order (a record updated while away arrives once, in its
/// newest state), then live ones follow; another org's never appear, on replay or live. An `s1.`
/// id from before these kinds were resumable is still accepted (they then start live).
#[test]
fn resume_replays_missed_correlations_and_alert_transitions() {
    use foureyes_store::{SqliteStore, Store, SystemScope};
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "", &[]);
    let a = Api::new(&c.api, &c.tenant("acme", "noc"));
    let b = Api::new(&c.api, &c.tenant("other", "noc"));
    let store = SqliteStore::open(c.data_dir.join("foureyes.sqlite")).unwrap();
    let sys = SystemScope::collector_internal();
    let save = |corr: &foureyes_proto::v1::Correlation, decided: bool| {
        store.save_correlation(&sys, corr, decided).unwrap();
    };
    // Nobody announces these prefixes: a visibility rule fires at once (pending, then firing).
    let dark_rule = |api: &Api, prefix: &str| -> (String, Vec<(String, String)>) {
        let rule = api.post(
            "/api/v1/alert-rules",
            json!({"name": format!("dark {prefix}"),
                   "visibility": {"prefix": prefix, "minPeers": 1}}),
        );
        let rid = rule["id"].as_str().unwrap().to_string();
        let id = wait_until("the alert to fire", Duration::from_secs(60), || {
            let v = api.get(&format!("/api/v1/alerts?rule_id={rid}&state=firing"));
            Some(v["alerts"].as_array()?.first()?["id"].as_str()?.to_string())
        });
        let ts = api.get(&format!("/api/v1/alerts/{id}/transitions"))["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["from"].to_string(), t["to"].to_string()))
            .collect();
        (id, ts)
    };
    let kinds = "kinds=correlations,alerts";

    // Org B listens all along.
    let (s, b_live) = open_sse(&c.api, &b.token, kinds, None, usize::MAX);
    assert_eq!(s, 200);
    // The client sees one correlation live, then hangs up.
    let (s, first) = open_sse(&c.api, &a.token, kinds, None, 1);
    assert_eq!(s, 200);
    save(&correlation("c-1", "acme", 0), false);
    let got = take(&first, 1, "the first correlation live");
    assert_eq!(got[0].name, "correlation", "{got:?}");
    assert_eq!(got[0].json()["id"], "c-1");
    let last_id = got[0].id.clone();
    assert!(last_id.starts_with("s2."), "{last_id}");

    // While away: a new correlation, c-1's verdict, an alert that fires; org B's too.
    save(&correlation("c-2", "acme", 0), false);
    save(&correlation("b-1", "other", 0), false);
    save(&correlation("c-1", "acme", 2), true);
    let (alert_id, transitions) = dark_rule(&a, "192.0.2.0/24");
    assert!(transitions.len() >= 2, "{transitions:?}");
    let (b_alert, b_transitions) = dark_rule(&b, "198.51.100.0/24");

    // Back: exactly what was missed, once and in order, then live.
    let (s, resumed) = open_sse(&c.api, &a.token, kinds, Some(&last_id), usize::MAX);
    assert_eq!(s, 200);
    let replayed = take(&resumed, 2 + transitions.len(), "the replay");
    save(&correlation("c-3", "acme", 0), false);
    let live = take(&resumed, 1, "the live correlation after the replay");
    let corrs: Vec<(String, String)> = replayed
        .iter()
        .chain(&live)
        .filter(|e| e.name == "correlation")
        .map(|e| {
            let v = e.json();
            (
                v["id"].as_str().unwrap().to_string(),
                v["verdict"]
                    .as_str()
                    .unwrap_or("VERDICT_PENDING")
                    .to_string(),
            )
        })
        .collect();
    let want = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        corrs,
        want(&[
            ("c-2", "VERDICT_PENDING"),
            ("c-1", "VERDICT_DEGRADED"),
            ("c-3", "VERDICT_PENDING")
        ]),
        "{replayed:?} {live:?}"
    );
    let alerts: Vec<(String, String)> = replayed
        .iter()
        .filter(|e| e.name == "alert")
        .map(|e| {
            let v = e.json();
            assert_eq!(v["alertId"], alert_id.as_str(), "{v}");
            (v["from"].to_string(), v["to"].to_string())
        })
        .collect();
    assert_eq!(alerts, transitions, "every transition once, in order");
    // Resuming from the newest id replays nothing.
    let newest = live[0].id.clone();
    let (_, again) = open_sse(&c.api, &a.token, kinds, Some(&newest), 1);
    save(&correlation("c-4", "acme", 0), false);
    let next = take(&again, 1, "live after resuming at the head");
    assert_eq!(next[0].json()["id"], "c-4", "{next:?}");

    // Org B resuming from the same position gets only its own, as does its live stream.
    let (s, b_resumed) = open_sse(&c.api, &b.token, kinds, Some(&last_id), usize::MAX);
    assert_eq!(s, 200);
    for (rx, what) in [
        (&b_resumed, "org B's replay"),
        (&b_live, "org B's live stream"),
    ] {
        let got = take(rx, 1 + b_transitions.len(), what);
        assert_eq!(got[0].name, "correlation", "{what}: {got:?}");
        assert_eq!(got[0].json()["id"], "b-1", "{what}: {got:?}");
        for e in &got[1..] {
            assert_eq!(e.name, "alert", "{what}: {e:?}");
            assert_eq!(e.json()["alertId"], b_alert.as_str(), "{what}: {e:?}");
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    for rx in [&b_resumed, &b_live] {
        if let Ok(e) = rx.try_recv() {
            panic!("org B saw another org's event: {e:?}");
        }
    }

    // An id from before (`s1.`, results and route events only) is still accepted; correlations
    // then start live.
    let (s, old) = open_sse(&c.api, &a.token, kinds, Some("s1.0.0"), 1);
    assert_eq!(s, 200);
    save(&correlation("c-5", "acme", 0), false);
    let got = take(&old, 1, "live after an s1 id");
    assert_eq!(got[0].json()["id"], "c-5", "{got:?}");
}
