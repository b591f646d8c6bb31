//! Issue 5's benchmark against a real collector process: route event → provisional correlation
//! and route event → alert notification latency under a background load of node results.
//!
//! The collector is `foureyes-collector serve` (the binary given), set up through its admin CLI
//! and REST API. The load comes from this separate process over the real agent link: `NODES`
//! enrolled node identities (enrollment tokens minted over the API, CSRs, client certificates),
//! each with the agent runtime's own spool, which numbers and ed25519-signs every batch, and its
//! own mTLS gRPC link with the acknowledgement window. The collector verifies every signature.
//! Records are produced at the offered rate while the timed phase runs; they are not pre-signed,
//! so the generator's own CPU (building, signing, spooling) is measured and printed next to the
//! collector's. The spools live on tmpfs when `/dev/shm` exists, so the generator's fsyncs do
//! not queue on the collector's disk (a second machine would have its own).
//!
//! Route events come from an enrolled listener identity over the same link, one at a time, each
//! spooled as soon as it is handed over (a real listener may wait up to its batching delay first,
//! which is not included). Latency is measured from that hand-over until the correlation, and the
//! firing alert, arrive on a client of `/api/v1/stream`, and until the HMAC-signed webhook (chart
//! included) reaches a receiver in this process.
//!
//! `foureyes-loadgen --collector target/release/foureyes-collector [--rate N] [--events N]`;
//! `benches/ingest_load.sh` builds both in release and runs it.
// A benchmark: its report is its standard output.
#![allow(clippy::print_stdout)]

mod agents;
mod collector;
mod observe;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use foureyes_proto::v1 as pb;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::collector::{Api, CollectorProc, cpu_time};

const ORG: &str = "bench";
const TESTS: usize = 1000;
/// The node runtime's own batching: at most this many results per batch, the first waiting at most
/// `NODE_BATCH_DELAY` for company.
const NODE_BATCH: usize = 1000;
const NODE_BATCH_DELAY: Duration = Duration::from_millis(200);

#[derive(Parser)]
#[command(
    about = "Route event → correlation / alert latency under node load, against a real collector process"
)]
struct Args {
    /// The `foureyes-collector` binary to run (a release build).
    #[arg(long)]
    collector: PathBuf,
    /// Offered background load, results per second over all nodes.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Route events per measurement (correlation, then alert).
    #[arg(long, default_value_t = 100)]
    events: usize,
    /// Synthetic nodes sharing the load.
    #[arg(long, default_value_t = 16)]
    nodes: usize,
    /// Record a `perf` profile of the collector during the timed phase into this file.
    #[arg(long)]
    perf: Option<PathBuf>,
}

fn target(i: usize) -> String {
    format!("10.{}.{}.1", 100 + i / 250, i % 250)
}

/// The prefix alert rule `i` watches (outside the tests' targets, so no correlation is made).
fn watched(i: usize) -> String {
    format!("10.{}.{}.0/24", 200 + i / 250, i % 250)
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(what: &str, v: &mut [Duration], missed: usize, target: &str) {
    v.sort();
    println!(
        "{what} ({} events, {missed} missed): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms{target}",
        v.len(),
        ms(percentile(v, 0.5)),
        ms(percentile(v, 0.99)),
        ms(v.last().copied().unwrap_or_default()),
    );
}

fn route_event(seq: u64, prefix: String, peer: String, origin: u32) -> pb::RouteEvent {
    pb::RouteEvent {
        seq,
        r#type: pb::RouteEventType::Announce as i32,
        afi_safi: pb::AfiSafi::Ipv4Unicast as i32,
        prefix,
        peer: Some(pb::BgpPeer {
            address: peer.clone(),
            asn: 65001,
            source: pb::RouteSource::Session as i32,
            ..Default::default()
        }),
        attributes: (origin != 0).then(|| pb::RouteAttributes {
            as_path: vec![pb::AsPathSegment {
                r#type: 2,
                asns: vec![65001, origin],
            }],
            next_hop: peer,
            origin_as: origin,
            ..Default::default()
        }),
        received_at: Some(foureyes_proto::timestamp(std::time::SystemTime::now())),
        ..Default::default()
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.nodes == 0 || args.events == 0 {
        bail!("--nodes and --events must be at least 1");
    }
    let bin = std::fs::canonicalize(&args.collector)
        .with_context(|| format!("collector binary {}", args.collector.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("foureyes-loadgen")
        .tempdir()?;
    let shm = std::path::Path::new("/dev/shm");
    let agents_tmp = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("foureyes-loadgen")
            .tempdir_in(shm)?
    } else {
        tempfile::Builder::new()
            .prefix("foureyes-loadgen-agents")
            .tempdir()?
    };
    println!(
        "collector data: {} (log collector.log); agent spools: {}",
        tmp.path().display(),
        agents_tmp.path().display()
    );

    // The collector: provisional records come from the first event of an incident; keep
    // incidents short so the run's records do not pile up, and send no probe bursts (the
    // synthetic nodes run no probes).
    let mut coll = CollectorProc::new(
        &bin,
        tmp.path(),
        "[correlation]\nincident_gap = \"1s\"\nburst_runs = 0\n\
         [notifier_policy]\nallowed = [\"127.0.0.1/32\"]\n",
    )?;
    coll.admin(&["org", "create", ORG])?;
    let token = coll.admin(&["apitoken", "create", "--org", ORG, "--name", "loadgen"])?;
    let (hook_port, mut hooks) = observe::webhook_receiver().await?;
    std::fs::write(tmp.path().join("hook.key"), "bench-hmac-key\n")?;
    let mut rules = format!(
        "[[notifier]]\nname = \"hook\"\norg = \"{ORG}\"\nkind = \"webhook\"\n\
         url = \"http://127.0.0.1:{hook_port}/hook\"\nhmac_key_file = \"hook.key\"\n"
    );
    for i in 0..args.events {
        rules.push_str(&format!(
            "[[rule]]\nname = \"ms{i}\"\norg = \"{ORG}\"\nnotifiers = [\"hook\"]\n\
             fire_after = 1\nmore_specific = {{ prefix = \"{}\" }}\n",
            watched(i)
        ));
    }
    let rules_file = tmp.path().join("rules.toml");
    std::fs::write(&rules_file, rules)?;
    let rules_arg = rules_file.to_string_lossy().to_string();
    coll.serve(&["--rules", &rules_arg])?;
    let pid = coll.pid().context("collector pid")?.to_string();
    let api = Api {
        base: coll.api.clone(),
        token: token.clone(),
    };

    // Tests, and the agents' enrollment tokens, through the REST API.
    let (test_ids, node_tokens, listener_token) = {
        let nodes = args.nodes;
        tokio::task::spawn_blocking(move || -> Result<_> {
            let mut ids = Vec::with_capacity(TESTS);
            for i in 0..TESTS {
                let t = api.post(
                    "/api/v1/tests",
                    json!({"name": format!("t{i}"), "intervalMs": 60000, "timeoutMs": 1000,
                           "count": 1, "config": {"icmp": {"host": target(i)}}}),
                )?;
                ids.push(t["id"].as_str().context("test id")?.to_string());
            }
            let mint = |kind: &str| -> Result<String> {
                let t = api.post(
                    "/api/v1/enrollment-tokens",
                    json!({"ttlSeconds": 600, "kind": kind}),
                )?;
                Ok(t["token"].as_str().context("token")?.to_string())
            };
            let nodes = (0..nodes)
                .map(|_| mint("AGENT_KIND_NODE"))
                .collect::<Result<Vec<_>>>()?;
            Ok((ids, nodes, mint("AGENT_KIND_LISTENER")?))
        })
        .await??
    };
    let correlator_ready = Instant::now() + Duration::from_secs(11);

    let shutdown = CancellationToken::new();
    let mut agents = Vec::new();
    let mut node_tx = Vec::new();
    for (n, tok) in node_tokens.iter().enumerate() {
        let dir = agents_tmp.path().join(format!("node-{n}"));
        agents::enroll(&coll.node_addr, tok, &dir).await?;
        let (a, tx) = agents::run(
            &dir,
            pb::record::Kind::Result,
            NODE_BATCH,
            NODE_BATCH_DELAY,
            &shutdown,
        )?;
        agents.push(a);
        node_tx.push(tx);
    }
    let dir = agents_tmp.path().join("listener");
    agents::enroll(&coll.node_addr, &listener_token, &dir).await?;
    // One event per batch: each is spooled and sent the moment it is handed over.
    let (listener, events_tx) = agents::run(
        &dir,
        pb::record::Kind::RouteEvent,
        1,
        Duration::ZERO,
        &shutdown,
    )?;
    agents.push(listener);
    agents::all_connected(&mut agents, Duration::from_secs(60)).await?;
    let mut sse = observe::sse(&coll.api, &token, "correlations,alerts")?;
    // The correlator refreshes its targets every 10 s: let it see the tests.
    tokio::time::sleep_until(correlator_ready.into()).await;

    // Background load: each node produces its share at an even pace, as probes would.
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let per_node = args.rate as f64 / args.nodes as f64;
    let test_ids = Arc::new(test_ids);
    let mut load = tokio::task::JoinSet::new();
    for (n, tx) in node_tx.into_iter().enumerate() {
        let (stop, produced, test_ids) = (stop.clone(), produced.clone(), test_ids.clone());
        load.spawn(async move {
            let start = Instant::now();
            let mut done = 0u64;
            let mut i = n;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let due = (start.elapsed().as_secs_f64() * per_node) as u64;
                // A producer that fell behind by more than a second does not burst to catch up.
                done = done.max(due.saturating_sub(per_node as u64));
                let now = foureyes_proto::timestamp(std::time::SystemTime::now());
                while done < due {
                    i = (i + 7) % TESTS;
                    let r = pb::ProbeResult {
                        test_id: test_ids[i].clone(),
                        sent_at: Some(now),
                        status: pb::Status::Ok as i32,
                        latency_ms: 12.5,
                        ..Default::default()
                    };
                    if tx.send(r).await.is_err() {
                        return;
                    }
                    done += 1;
                    produced.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let t_load = Instant::now();
    let produced0 = produced.load(Ordering::Relaxed);
    let committed0 = coll.rows_committed()?;
    let cpu_c0 = cpu_time(&pid);
    let cpu_g0 = cpu_time("self");
    let mut perf = match &args.perf {
        Some(out) => Some(
            std::process::Command::new("perf")
                .args(["record", "-F", "499", "-g", "-o"])
                .arg(out)
                .args(["-p", &pid])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("perf record (apt-get install -y linux-perf)")?,
        ),
        None => None,
    };

    let mut seq = 0u64;
    let mut lat = Vec::new();
    let mut missed = 0;
    for i in 0..args.events {
        let tgt = target((i * 37) % TESTS);
        let want = format!("{tgt}/32");
        seq += 1;
        let ev = route_event(seq, want.clone(), format!("192.0.2.{}", i % 250 + 1), 0);
        let t0 = Instant::now();
        events_tx.send(ev).await.context("listener spooler")?;
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(e) = sse.recv().await {
                if e.name == "correlation" && e.data.to_string().contains(&want) {
                    return Some(e.at);
                }
            }
            None
        })
        .await;
        match got {
            Ok(Some(at)) => lat.push(at.duration_since(t0)),
            _ => missed += 1,
        }
        // Events from different peers, spaced like a busy but not flooding feed.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    let mut fired = Vec::new();
    let mut notified = Vec::new();
    let mut alert_missed = 0;
    for i in 0..args.events {
        let watched = watched(i);
        seq += 1;
        let ev = route_event(
            seq,
            watched.replace(".0/24", ".128/25"),
            "192.0.2.251".into(),
            64999,
        );
        let t0 = Instant::now();
        events_tx.send(ev).await.context("listener spooler")?;
        let firing = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(e) = sse.recv().await {
                if e.name == "alert"
                    && e.data["subject"] == watched.as_str()
                    && e.data["to"] == "ALERT_STATE_FIRING"
                {
                    return Some(e.at);
                }
            }
            None
        })
        .await;
        let Ok(Some(at)) = firing else {
            alert_missed += 1;
            continue;
        };
        fired.push(at.duration_since(t0));
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
    let offered = (produced.load(Ordering::Relaxed) - produced0) as f64 / secs;
    let committed = coll.rows_committed()?.saturating_sub(committed0) as f64 / secs;
    let cpu = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.0} %", (b - a).as_secs_f64() / secs * 100.0),
        _ => "?".into(),
    };
    let cpu_c = cpu(cpu_c0, cpu_time(&pid));
    let cpu_g = cpu(cpu_g0, cpu_time("self"));
    if let Some(p) = perf.as_mut() {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &p.id().to_string()])
            .status();
        let _ = p.wait();
    }
    let backlog = agents::backlog(&agents);
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    shutdown.cancel();

    println!(
        "background load over {secs:.1} s ({} nodes, batches of up to {NODE_BATCH}, signed, mTLS gRPC): \
         offered {:.0} results/s (target {}), committed by the collector {committed:.0} rows/s; \
         {backlog} records spooled but not yet acknowledged at the end",
        args.nodes, offered, args.rate
    );
    println!(
        "CPU over the timed phase (100 % = one core): collector {cpu_c}, load generator {cpu_g}; {} cores online",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    summary(
        "route event -> provisional correlation on /api/v1/stream",
        &mut lat,
        missed,
        " (target p99 <= 1000 ms)",
    );
    summary(
        "route event -> firing alert on /api/v1/stream",
        &mut fired,
        alert_missed,
        " (target p99 <= 500 ms)",
    );
    summary(
        "route event -> webhook notification received, chart included",
        &mut notified,
        0,
        "",
    );
    Ok(())
}
