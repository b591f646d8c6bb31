//! The probe node: runs its assigned tests on schedule, spools signed results, and keeps going
//! through a partition with the last assignment set it stored.

mod burst_limit;
pub use burst_limit::{BurstLimiter, BurstLimits};

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use foureyes_agent::{
    AgentError,
    link::{self, LinkOptions, Shared, lock},
    spool::Spool,
    state::StateDir,
};
use foureyes_proto::v1::{AssignmentSet, ProbeResult, Test, record};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub struct NodeOptions {
    pub spool_max_records: u64,
    pub hostname: String,
}

/// Results queued between the probes and the spool. When it is full, probe tasks wait (a probe
/// run is late rather than lost); the spool's own bound decides what is dropped, with a gap record.
const RESULT_QUEUE: usize = 10_000;
const SPOOL_BATCH_MAX: usize = 1_000;
const SPOOL_BATCH_DELAY: Duration = Duration::from_millis(200);
/// Probe bursts waiting to start.
const BURST_QUEUE: usize = 16;
/// Caps on what one burst can ask of the node, whatever the collector says.
const BURST_MAX_RUNS: u32 = 10;
const BURST_MIN_SPACING: Duration = Duration::from_millis(100);
/// At most one burst traceroute per test in this long: a traceroute sends up to
/// `max_hops * probes_per_hop` packets, and routers rate-limit their ICMP answers.
const TRACE_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// Burst traceroutes running at once on this node, at most; more are skipped, not queued.
const TRACES_IN_FLIGHT: usize = 2;

/// Runs until `shutdown`. Returns a verified, staged update to execute, if the collector offered
/// one.
pub async fn run(
    state_dir: &Path,
    opts: NodeOptions,
    shutdown: CancellationToken,
) -> Result<Option<std::path::PathBuf>, AgentError> {
    let state = Arc::new(StateDir::open(state_dir, false)?);
    let identity = state.identity()?;
    if identity.kind != "node" {
        return Err(AgentError::Config(format!(
            "{} holds a {} identity, not a node",
            state_dir.display(),
            identity.kind
        )));
    }
    let creds = state.credentials()?;
    let spool = Spool::open(&state.spool_path(), opts.spool_max_records)?;
    let initial = state.load_assignments().unwrap_or_default();
    tracing::info!(agent = %identity.agent_id, org = %identity.org, tests = initial.tests.len(), spooled = spool.records(), "node starting");
    let (assign_tx, assign_rx) = tokio::sync::watch::channel(initial);
    let (burst_tx, burst_rx) = mpsc::channel(BURST_QUEUE);
    let shared = Shared::new(creds.signing_key()?, spool, assign_tx, Some(burst_tx));
    let link_task = tokio::spawn(link::run(
        state.clone(),
        shared.clone(),
        LinkOptions {
            hostname: opts.hostname.clone(),
            ..Default::default()
        },
        shutdown.clone(),
    ));
    let (result_tx, result_rx) = mpsc::channel(RESULT_QUEUE);
    let spooler = tokio::spawn(link::spool_from(
        shared.clone(),
        result_rx,
        record::Kind::Result,
        SPOOL_BATCH_MAX,
        SPOOL_BATCH_DELAY,
    ));
    let bursts = tokio::spawn(bursts(
        burst_rx,
        assign_rx.clone(),
        result_tx.clone(),
        shutdown.clone(),
    ));
    schedule(assign_rx, result_tx, shutdown.clone()).await;
    bursts.abort();
    // Schedules are stopped; the spooler drains what the probes already produced.
    let _ = spooler.await;
    let _ = link_task.await;
    let staged = lock(&shared.staged_update).take();
    Ok(staged)
}

async fn schedule(
    mut assignments: tokio::sync::watch::Receiver<AssignmentSet>,
    results: mpsc::Sender<ProbeResult>,
    shutdown: CancellationToken,
) {
    let mut running: HashMap<String, (Test, JoinHandle<()>)> = HashMap::new();
    loop {
        let set = assignments.borrow_and_update().clone();
        running.retain(|id, (test, handle)| {
            let keep = set.tests.iter().any(|t| t.id == *id && t == test);
            if !keep {
                handle.abort();
            }
            keep
        });
        for t in set.tests {
            if !running.contains_key(&t.id) {
                let handle = tokio::spawn(test_loop(t.clone(), results.clone()));
                running.insert(t.id.clone(), (t, handle));
            }
        }
        tokio::select! {
            r = assignments.changed() => if r.is_err() { break },
            _ = shutdown.cancelled() => break,
        }
    }
    for (_, (_, h)) in running {
        h.abort();
    }
}

async fn test_loop(test: Test, results: mpsc::Sender<ProbeResult>) {
    let interval = Duration::from_millis(u64::from(test.interval_ms.max(100)));
    // Spread first runs over the interval so a fleet's probes do not fire in lockstep.
    let offset = Duration::from_millis(rand_offset(interval.as_millis() as u64));
    tokio::time::sleep(offset.min(Duration::from_secs(2))).await;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = foureyes_probes::run_test(&test).await;
        if results.send(result).await.is_err() {
            return;
        }
    }
}

fn rand_offset(max: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(max);
    h.finish() % max.max(1)
}

/// Runs probe bursts: extra runs of assigned tests right after a route change covered their
/// targets. Only tests in the current assignment set run (a burst cannot add work the node was
/// not given), runs and spacing are capped, and [`BurstLimiter`] bounds how often a test and how
/// many tests in all may burst ([`BurstLimits`]). A burst that asks for a traceroute also traces toward each test's own
/// target ([`foureyes_probes::burst_traceroute`]), at most once per test per
/// [`TRACE_MIN_INTERVAL`] and [`TRACES_IN_FLIGHT`] at a time on the node.
async fn bursts(
    mut rx: mpsc::Receiver<foureyes_proto::v1::ProbeBurst>,
    assignments: tokio::sync::watch::Receiver<AssignmentSet>,
    results: mpsc::Sender<ProbeResult>,
    shutdown: CancellationToken,
) {
    let mut limiter = BurstLimiter::new(BurstLimits::default());
    let mut last_trace: HashMap<String, tokio::time::Instant> = HashMap::new();
    let traces = Arc::new(tokio::sync::Semaphore::new(TRACES_IN_FLIGHT));
    loop {
        let b = tokio::select! {
            b = rx.recv() => match b { Some(b) => b, None => return },
            _ = shutdown.cancelled() => return,
        };
        let runs = b.runs.clamp(1, BURST_MAX_RUNS);
        let spacing = Duration::from_millis(u64::from(b.spacing_ms)).max(BURST_MIN_SPACING);
        let now = tokio::time::Instant::now();
        let tests: Vec<Test> = assignments
            .borrow()
            .tests
            .iter()
            .filter(|t| b.test_ids.contains(&t.id))
            .cloned()
            .collect();
        let admitted = limiter.admit(now, tests.iter().map(|t| t.id.as_str()));
        for t in tests.into_iter().filter(|t| admitted.contains(&t.id)) {
            tracing::info!(test = %t.id, runs, reason = %b.reason, traceroute = b.traceroute, "probe burst");
            if b.traceroute {
                trace(&t, &traces, &mut last_trace, now, &results);
            }
            let results = results.clone();
            tokio::spawn(async move {
                for i in 0..runs {
                    if i > 0 {
                        tokio::time::sleep(spacing).await;
                    }
                    let r = foureyes_probes::run_test(&t).await;
                    if results.send(r).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
}

/// Starts the burst traceroute of `t` unless the test traced recently or the node is busy tracing.
fn trace(
    t: &Test,
    traces: &Arc<tokio::sync::Semaphore>,
    last: &mut HashMap<String, tokio::time::Instant>,
    now: tokio::time::Instant,
    results: &mpsc::Sender<ProbeResult>,
) {
    let Some(tr) = foureyes_probes::burst_traceroute(t) else {
        return;
    };
    if last
        .get(&t.id)
        .is_some_and(|at| now.duration_since(*at) < TRACE_MIN_INTERVAL)
    {
        return;
    }
    let Ok(permit) = traces.clone().try_acquire_owned() else {
        tracing::info!(test = %t.id, "burst traceroute skipped: {TRACES_IN_FLIGHT} already running");
        return;
    };
    last.insert(t.id.clone(), now);
    let results = results.clone();
    tokio::spawn(async move {
        let r = foureyes_probes::run_test(&tr).await;
        drop(permit);
        let _ = results.send(r).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use foureyes_proto::v1 as pb;

    fn tcp_test(id: &str, port: u16) -> Test {
        Test {
            id: id.into(),
            name: id.into(),
            interval_ms: 3_600_000,
            timeout_ms: 2_000,
            count: 1,
            config: Some(pb::ProbeConfig {
                kind: Some(pb::probe_config::Kind::Tcp(pb::TcpConfig {
                    host: "127.0.0.1".into(),
                    port: u32::from(port),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        }
    }

    /// Two bursts of one test within the node's interval run it once; a later burst of another
    /// test still runs (so the first's refusal was decided by then).
    #[tokio::test]
    // The listener is the probes' target in this test, not a socket of the node.
    #[allow(clippy::disallowed_methods)]
    async fn a_second_burst_within_the_interval_does_not_run() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = server.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
        tokio::spawn(async move {
            while let Ok((s, _)) = server.accept().await {
                drop(s);
            }
        });
        let (_assign_tx, assign_rx) = tokio::sync::watch::channel(AssignmentSet {
            tests: vec![tcp_test("a", port), tcp_test("b", port)],
            ..Default::default()
        });
        let (burst_tx, burst_rx) = mpsc::channel(BURST_QUEUE);
        let (result_tx, mut result_rx) = mpsc::channel(100);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(bursts(burst_rx, assign_rx, result_tx, shutdown.clone()));
        let burst = |id: &str| pb::ProbeBurst {
            test_ids: vec![id.into()],
            runs: 1,
            spacing_ms: 100,
            reason: "test".into(),
            traceroute: false,
        };
        for id in ["a", "a", "b"] {
            burst_tx
                .send(burst(id))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let mut got: Vec<String> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !(got.iter().any(|t| t == "a") && got.iter().any(|t| t == "b")) {
            match tokio::time::timeout_at(deadline, result_rx.recv()).await {
                Ok(Some(r)) => got.push(r.test_id),
                _ => panic!("burst results did not come: {got:?}"),
            }
        }
        // A second run of a, had it been started, would be done well within this.
        while let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(2), result_rx.recv()).await
        {
            got.push(r.test_id);
        }
        got.sort();
        assert_eq!(got, ["a", "b"]);
        shutdown.cancel();
        let _ = task.await;
    }
}
