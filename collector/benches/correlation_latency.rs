//! Route event → provisional correlation latency under background load (issue 5's benchmark).
//!
//! An in-process collector (`server::start`, real SQLite file, real ingest pipeline, stream hub
//! and correlator) receives synthetic results from 16 nodes at a target rate (default 100k/s, in
//! batches of up to 1,000, each node's in sequence as the agent link submits them) while a synthetic listener sends one route
//! event at a time, each from its own peer and covering one of the org's test targets. Latency is
//! measured from the event's submission to ingest until its provisional correlation reaches a
//! stream subscriber (the same path `/api/v1/stream` clients see). It prints the achieved
//! background rate and p50/p99/max; the target is p99 ≤ 1 s.
//!
//! Then, under the same load, route event → alert: one `more_specific` rule per event (from the
//! rules file, `fire_after = 1`, so its hold condition is met by the event itself) with a webhook
//! notifier pointing at a receiver in this process. Each event announces a more-specific of its
//! rule's prefix; latency is measured to the firing transition (what the SSE stream and the
//! dashboard get) and to the webhook's arrival (the notification, chart included). Target: alert
//! p99 ≤ 500 ms after the hold condition is met.
//!
//! `cargo bench -p foureyes-collector --bench correlation_latency -- [RESULTS_PER_S] [EVENTS]`
//! (release build; run it alone on the machine).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use foureyes_collector::config::{Config, FileConfig};
use foureyes_collector::server;
use foureyes_collector::stream::StreamFilter;
use foureyes_proto::v1 as pb;
use foureyes_store::{IngestBatch, NewAgent, Scope, SystemScope, Tenant};
use prost::Message;
use tokio_util::sync::CancellationToken;

const ORG: &str = "bench";
const TESTS: usize = 1000;
const BATCH: usize = 1000;
const NODES: usize = 16;

fn batch(agent: &str, records: Vec<pb::Record>) -> IngestBatch {
    IngestBatch {
        agent_id: agent.into(),
        org: ORG.into(),
        team: String::new(),
        body: pb::RecordBatch {
            records: records.clone(),
        }
        .encode_to_vec(),
        records,
        signature: vec![0; 64],
        key_id: vec![0; 32],
        received_ms: server::now_ms(),
    }
}

fn target(i: usize) -> String {
    format!("10.{}.{}.1", 100 + i / 250, i % 250)
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i.min(v.len() - 1)]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let rate: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let events: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);

    let tmp = tempfile::tempdir().unwrap();
    let mut file = FileConfig::default();
    // Provisional records come from the first event of an incident; keep incidents short so the
    // run's records do not pile up in memory, and send no probe bursts (no nodes are connected).
    file.correlation.incident_gap = Some("1s".into());
    file.correlation.burst_runs = Some(0);
    file.notifier_policy = toml::from_str("allowed = [\"127.0.0.1/32\"]").unwrap();
    // Rules name the org, which must exist when the file loads: it starts empty and is loaded
    // again once the org is there.
    let rules = tmp.path().join("rules.toml");
    std::fs::write(&rules, "").unwrap();
    let mut cfg = Config::resolve(
        file,
        Some(tmp.path().to_path_buf()),
        Some("127.0.0.1:0".parse().unwrap()),
        Some("127.0.0.1:0".parse().unwrap()),
    )
    .unwrap();
    cfg.rules_file = Some(rules.clone());
    let shutdown = CancellationToken::new();
    let running = server::start(cfg, shutdown.clone()).await.unwrap();
    let c = running.collector.clone();
    let sys = SystemScope::collector_internal();
    c.store.create_org(&sys, ORG).unwrap();
    let org = Scope::Tenant(Tenant {
        org: ORG.into(),
        team: None,
    });
    let mut test_ids = Vec::new();
    for i in 0..TESTS {
        let t = c
            .store
            .create_test(
                &org,
                pb::Test {
                    name: format!("t{i}"),
                    interval_ms: 60_000,
                    timeout_ms: 1000,
                    count: 1,
                    config: Some(pb::ProbeConfig {
                        kind: Some(pb::probe_config::Kind::Icmp(pb::IcmpConfig {
                            host: target(i),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                },
            )
            .unwrap();
        test_ids.push(t.id);
    }
    let agents = (0..NODES)
        .map(|n| (format!("n-bench-{n}"), pb::AgentKind::Node))
        .chain([("l-bench".to_string(), pb::AgentKind::Listener)]);
    for (id, kind) in agents {
        c.store
            .create_agent(
                &sys,
                NewAgent {
                    id,
                    org: ORG.into(),
                    team: None,
                    kind,
                    hostname: "bench".into(),
                    version: "bench".into(),
                    created_at_ms: server::now_ms(),
                },
            )
            .unwrap();
    }
    let (hook_port, mut hooks) = webhook_receiver().await;
    std::fs::write(tmp.path().join("hook.key"), "bench-hmac-key\n").unwrap();
    let mut file = format!(
        "[[notifier]]\nname = \"hook\"\norg = \"{ORG}\"\nkind = \"webhook\"\n\
         url = \"http://127.0.0.1:{hook_port}/hook\"\nhmac_key_file = \"hook.key\"\n"
    );
    for i in 0..events {
        file.push_str(&format!(
            "[[rule]]\nname = \"ms{i}\"\norg = \"{ORG}\"\nnotifiers = [\"hook\"]\n\
             fire_after = 1\nmore_specific = {{ prefix = \"{}\" }}\n",
            watched(i)
        ));
    }
    std::fs::write(&rules, file).unwrap();
    foureyes_collector::alerts::file::load(&c).unwrap();
    c.alerts.changed();
    let mut transitions = c.alerts.subscribe();
    let mut sub = c.stream.subscribe(StreamFilter {
        tenant: Tenant {
            org: ORG.into(),
            team: None,
        },
        results: false,
        route_events: false,
        correlations: true,
        alerts: false,
        test_id: None,
        agent_id: None,
    });
    // The correlator refreshes its targets every 10 s: wait until it has seen the tests.
    tokio::time::sleep(Duration::from_secs(11)).await;

    // Background load: `rate` results per second from NODES nodes, each submitting its batches
    // in sequence as the agent link does (one node's batches never overtake each other).
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut load = tokio::task::JoinSet::new();
    for n in 0..NODES {
        let (c, stop, sent, test_ids) = (c.clone(), stop.clone(), sent.clone(), test_ids.clone());
        load.spawn(async move {
            let agent = format!("n-bench-{n}");
            let mut seq = 0u64;
            let per_tick = (rate / 100 / NODES as u64).max(1);
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let mut left = per_tick;
                while left > 0 {
                    let k = left.min(BATCH as u64);
                    left -= k;
                    let now = server::now_ms();
                    let records = (0..k)
                        .map(|_| {
                            seq += 1;
                            pb::Record {
                                seq,
                                kind: Some(pb::record::Kind::Result(pb::ProbeResult {
                                    seq,
                                    test_id: test_ids[(seq as usize * 7 + n) % TESTS].clone(),
                                    sent_at: Some(foureyes_proto::timestamp_from_ms(now)),
                                    status: pb::Status::Ok as i32,
                                    latency_ms: 12.5,
                                    ..Default::default()
                                })),
                            }
                        })
                        .collect();
                    if c.ingest.submit(batch(&agent, records)).await.is_ok() {
                        sent.fetch_add(k, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t_load = Instant::now();
    let sent0 = sent.load(Ordering::Relaxed);

    let mut lat = Vec::new();
    let mut missed = 0;
    for i in 0..events {
        let tgt = target((i * 37) % TESTS);
        let ev = pb::RouteEvent {
            seq: i as u64 + 1,
            r#type: pb::RouteEventType::Announce as i32,
            afi_safi: pb::AfiSafi::Ipv4Unicast as i32,
            prefix: format!("{tgt}/32"),
            peer: Some(pb::BgpPeer {
                address: format!("192.0.2.{}", i % 250 + 1),
                asn: 65001,
                source: pb::RouteSource::Session as i32,
                ..Default::default()
            }),
            received_at: Some(foureyes_proto::timestamp_from_ms(server::now_ms())),
            ..Default::default()
        };
        let t0 = Instant::now();
        c.ingest
            .submit(batch(
                "l-bench",
                vec![pb::Record {
                    seq: i as u64 + 1,
                    kind: Some(pb::record::Kind::RouteEvent(ev)),
                }],
            ))
            .await
            .unwrap();
        // What the agent link does after a listener's batch commits.
        c.route_events_committed.notify_one();
        let want = format!("{tgt}/32");
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(e) = sub.rx.recv().await {
                if e.name == "correlation" && e.data.contains(&want) {
                    return true;
                }
            }
            false
        })
        .await;
        match got {
            Ok(true) => lat.push(t0.elapsed()),
            _ => missed += 1,
        }
        // Events from different peers, spaced like a busy but not flooding feed.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    // Route event → alert, under the same load.
    let mut fired = Vec::new();
    let mut notified = Vec::new();
    let mut alert_missed = 0;
    for i in 0..events {
        let watched = watched(i);
        let more = watched.replace(".0/24", ".128/25");
        let ev = pb::RouteEvent {
            seq: (events + i) as u64 + 1,
            r#type: pb::RouteEventType::Announce as i32,
            afi_safi: pb::AfiSafi::Ipv4Unicast as i32,
            prefix: more,
            peer: Some(pb::BgpPeer {
                address: "192.0.2.251".into(),
                asn: 65001,
                source: pb::RouteSource::Session as i32,
                ..Default::default()
            }),
            attributes: Some(pb::RouteAttributes {
                as_path: vec![pb::AsPathSegment {
                    r#type: 2,
                    asns: vec![65001, 64999],
                }],
                next_hop: "192.0.2.251".into(),
                origin_as: 64999,
                ..Default::default()
            }),
            received_at: Some(foureyes_proto::timestamp_from_ms(server::now_ms())),
            ..Default::default()
        };
        let t0 = Instant::now();
        c.ingest
            .submit(batch(
                "l-bench",
                vec![pb::Record {
                    seq: (events + i) as u64 + 1,
                    kind: Some(pb::record::Kind::RouteEvent(ev)),
                }],
            ))
            .await
            .unwrap();
        c.route_events_committed.notify_one();
        let firing = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match transitions.recv().await {
                    Ok(t) => {
                        let a = t.alert.as_ref();
                        if a.is_some_and(|a| {
                            a.subject == watched && a.state == pb::AlertState::Firing as i32
                        }) {
                            return true;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return false,
                }
            }
        })
        .await;
        if !matches!(firing, Ok(true)) {
            alert_missed += 1;
            continue;
        }
        fired.push(t0.elapsed());
        let hook = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some((subject, at)) = hooks.recv().await {
                if subject == watched {
                    return Some(at);
                }
            }
            None
        })
        .await;
        match hook {
            Ok(Some(at)) => notified.push(at.duration_since(t0)),
            _ => alert_missed += 1,
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let secs = t_load.elapsed().as_secs_f64();
    let achieved = (sent.load(Ordering::Relaxed) - sent0) as f64 / secs;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    lat.sort();
    let m = c.ingest.metrics();
    println!(
        "background load: target {rate} results/s, achieved {achieved:.0} results/s over {secs:.1} s"
    );
    println!("ingest: {m:?}");
    println!(
        "route event -> provisional correlation ({} events, {missed} missed): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (target p99 <= 1000 ms)",
        lat.len(),
        percentile(&lat, 0.5).as_secs_f64() * 1000.0,
        percentile(&lat, 0.99).as_secs_f64() * 1000.0,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
    );
    fired.sort();
    notified.sort();
    println!(
        "route event -> firing alert ({} events, {alert_missed} missed): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (target p99 <= 500 ms)",
        fired.len(),
        percentile(&fired, 0.5).as_secs_f64() * 1000.0,
        percentile(&fired, 0.99).as_secs_f64() * 1000.0,
        fired.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
    );
    println!(
        "route event -> webhook notification received, chart included ({} events): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        notified.len(),
        percentile(&notified, 0.5).as_secs_f64() * 1000.0,
        percentile(&notified, 0.99).as_secs_f64() * 1000.0,
        notified.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), running.done).await;
}

/// The prefix alert rule `i` watches (outside the tests' targets, so no correlation is made).
fn watched(i: usize) -> String {
    format!("10.{}.{}.0/24", 200 + i / 250, i % 250)
}

/// A webhook receiver on loopback: each firing notification's subject and arrival time.
async fn webhook_receiver() -> (u16, tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let at = Instant::now();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
                    && v["state"] == "firing"
                    && let Some(s) = v["alert"]["subject"].as_str()
                {
                    let _ = tx.send((s.to_string(), at));
                }
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (port, rx)
}
