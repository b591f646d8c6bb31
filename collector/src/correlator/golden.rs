//! Golden tests: recorded inputs replayed through the correlator on a simulated clock, and its
//! records compared with the expected JSONL next to them.
//!
//! A case is `collector/tests/golden/correlator/NAME.input.jsonl` (tests, route events and
//! results as canonical JSON, one per line: `{"test": ...}`, `{"routeEvent": ...}`,
//! `{"result": ...}`; the routed end-to-end test writes one with `FOUREYES_RECORD=FILE`) and
//! `NAME.expected.jsonl` (the correlations, one per line, in opening order). Records are written
//! into a real SQLite store one at a time at their recorded receive time, and the correlator runs
//! a round every 500 ms of simulated time in between, as it does live, so the routes table it
//! consults is the one of that moment. Random ids are normalised (correlations `c-1`, `c-2`...,
//! tests back to their recorded ids, in that order). `session-down`, `flap`, `long-flap` and
//! `origin-change` are written by `hand_cases.py` beside them, on a simulated timeline.
//!
//! `FOUREYES_BLESS=1 cargo test -p foureyes-collector --lib golden` rewrites the expected files;
//! review the diff before committing it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use foureyes_proto::v1 as pb;
use foureyes_store::{IngestBatch, NewAgent, Scope, SystemScope, Tenant};
use prost::Message;
use serde_json::Value;

use super::{CorrelationConfig, Correlator};
use crate::config::{Config, FileConfig};
use crate::state::Collector;

const ORG: &str = "acme";
const STEP_MS: i64 = 500;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/correlator");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".input.jsonl"))
        .collect();
    v.sort();
    v
}

fn time_of(v: &Value, field: &str) -> i64 {
    let s = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {v}"));
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{field} {s}: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The correlation settings the recordings were made with (the routed test's).
fn config() -> CorrelationConfig {
    CorrelationConfig {
        before: std::time::Duration::from_secs(20),
        after: std::time::Duration::from_secs(6),
        incident_gap: std::time::Duration::from_secs(2),
        // Shorter than the default so `long-flap` crosses it; longer than any other case's
        // incident.
        max_incident: std::time::Duration::from_secs(20),
        burst_runs: 0,
        ..Default::default()
    }
}

async fn replay(input: &Path, data: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(input).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", input.display())))
        .collect();
    let cfg = Config::resolve(
        FileConfig::default(),
        Some(data.to_path_buf()),
        Some("127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!())),
        Some("127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!())),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let c = Collector::open(cfg).unwrap_or_else(|e| panic!("{e}"));
    let sys = SystemScope::collector_internal();
    c.store
        .create_org(&sys, ORG)
        .unwrap_or_else(|e| panic!("{e}"));
    let org = Scope::Tenant(Tenant {
        org: ORG.into(),
        team: None,
    });

    // Tests first (ids are new: map them both ways), then agents as they appear.
    let mut test_ids: HashMap<String, String> = HashMap::new();
    let mut recorded_ids: HashMap<String, String> = HashMap::new();
    let mut records: Vec<(i64, String, pb::Record)> = Vec::new();
    let mut agents: HashMap<String, pb::AgentKind> = HashMap::new();
    for l in &lines {
        if let Some(t) = l.get("test") {
            let test: pb::Test =
                serde_json::from_value(t.clone()).unwrap_or_else(|e| panic!("{e}"));
            let old = test.id.clone();
            let new = c
                .store
                .create_test(&org, test)
                .unwrap_or_else(|e| panic!("{e}"));
            test_ids.insert(old.clone(), new.id.clone());
            recorded_ids.insert(new.id, old);
        } else if let Some(e) = l.get("routeEvent") {
            let ev: pb::RouteEvent =
                serde_json::from_value(e.clone()).unwrap_or_else(|e| panic!("{e}"));
            agents.insert(ev.agent_id.clone(), pb::AgentKind::Listener);
            let at = time_of(e, "receivedAt");
            let seq = ev.seq;
            let agent = ev.agent_id.clone();
            records.push((
                at,
                agent,
                pb::Record {
                    seq,
                    kind: Some(pb::record::Kind::RouteEvent(ev)),
                },
            ));
        } else if let Some(r) = l.get("result") {
            let mut res: pb::ProbeResult =
                serde_json::from_value(r.clone()).unwrap_or_else(|e| panic!("{e}"));
            agents.insert(res.agent_id.clone(), pb::AgentKind::Node);
            if let Some(new) = test_ids.get(&res.test_id) {
                res.test_id = new.clone();
            }
            let at = time_of(r, "receivedAt");
            let (seq, agent) = (res.seq, res.agent_id.clone());
            records.push((
                at,
                agent,
                pb::Record {
                    seq,
                    kind: Some(pb::record::Kind::Result(res)),
                },
            ));
        } else {
            panic!("{}: unknown line {l}", input.display());
        }
    }
    // Receive order across agents; each agent's own records stay in sequence order.
    records.sort_by_key(|(at, agent, r)| (*at, agent.clone(), r.seq));
    let first = records.first().map(|r| r.0).unwrap_or(0);
    for (id, kind) in &agents {
        c.store
            .create_agent(
                &sys,
                NewAgent {
                    id: id.clone(),
                    org: ORG.into(),
                    team: None,
                    kind: *kind,
                    hostname: "golden".into(),
                    version: "golden".into(),
                    created_at_ms: first,
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
    }

    let cfg = config();
    let tail = (cfg.incident_gap + cfg.after).as_millis() as i64 + 2 * STEP_MS;
    let mut k = Correlator::new(c.clone(), cfg);
    k.start_ms = first - 1;
    let mut clock = first - first.rem_euclid(STEP_MS);
    k.round_at(clock);
    for (at, agent, rec) in records.clone() {
        while clock + STEP_MS <= at {
            clock += STEP_MS;
            k.round_at(clock);
        }
        let batch = IngestBatch {
            agent_id: agent,
            org: ORG.into(),
            team: String::new(),
            body: pb::RecordBatch {
                records: vec![rec.clone()],
            }
            .encode_to_vec(),
            records: vec![rec],
            signature: vec![0; 64],
            key_id: vec![0; 32],
            received_ms: at,
        };
        c.store
            .write_batches(&sys, &[batch])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let end = records.last().map(|r| r.0).unwrap_or(first) + tail;
    while clock < end {
        clock += STEP_MS;
        k.round_at(clock);
    }

    // Every record, oldest first, normalised.
    let mut page_after = None;
    let mut out = Vec::new();
    loop {
        let page = c
            .store
            .correlations(
                &Scope::System(SystemScope::collector_internal()),
                &Default::default(),
                page_after,
                1000,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        out.extend(page.correlations);
        match page.next {
            Some(n) => page_after = Some(n),
            None => break,
        }
    }
    out.sort_by_key(|c| {
        (
            c.opened_at.as_ref().map(foureyes_proto::timestamp_ms),
            c.event_seqs.first().copied(),
        )
    });
    out.into_iter()
        .enumerate()
        .map(|(i, mut corr)| {
            corr.id = format!("c-{}", i + 1);
            for t in &mut corr.tests {
                if let Some(old) = recorded_ids.get(&t.test_id) {
                    t.test_id = old.clone();
                }
            }
            // The correlator lists tests in the order of their (random, new) ids.
            corr.tests.sort_by(|a, b| a.test_id.cmp(&b.test_id));
            serde_json::to_value(&corr).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_inputs_give_the_expected_correlations() {
    let bless = std::env::var_os("FOUREYES_BLESS").is_some();
    let cases = cases();
    assert!(!cases.is_empty(), "no golden cases found");
    let mut failed = Vec::new();
    for input in cases {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let got = replay(&input, tmp.path()).await;
        let got_text: String = got.iter().map(|v| format!("{v}\n")).collect();
        let expected = PathBuf::from(
            input
                .to_string_lossy()
                .replace(".input.jsonl", ".expected.jsonl"),
        );
        if bless {
            std::fs::write(&expected, &got_text).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        let want = std::fs::read_to_string(&expected).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with FOUREYES_BLESS=1 to create it)",
                expected.display()
            )
        });
        if want != got_text {
            failed.push(format!(
                "{}:\n--- expected\n{want}--- got\n{got_text}",
                input.display()
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "correlator output differs from the golden files (FOUREYES_BLESS=1 rewrites them after review):\n{}",
        failed.join("\n")
    );
}
