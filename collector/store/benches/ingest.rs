//! Results/second through `Ingest` (buffer → flush → SQLite with watermark dedupe, indexes and the
//! signed-batch copy) next to the raw rusqlite ceiling for the same rows: 10k-row transactions into
//! the same results table without its indexes. Both run in this process, alternately, best of
//! `ROUNDS`, so machine noise hits both. Also compares the two results-key layouts the design
//! allowed (INTEGER key vs WITHOUT ROWID (received_ms, agent_id, seq)).
//!
//! `cargo bench -p foureyes-store` (env `BENCH_ROWS` overrides the row count).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use foureyes_proto::v1::{self as pb, record};
use foureyes_store::{
    IngestBatch, NewAgent, SqliteStore, Store, SystemScope,
    ingest::{Ingest, IngestConfig},
};
use prost::Message;
use rusqlite::{Connection, params};

const AGENTS: usize = 40;
const AGENT_BATCH: usize = 500;
const TESTS: usize = 120;
const RAW_TX_ROWS: usize = 10_000;
const ROUNDS: usize = 2;

fn probe_result(agent: usize, seq: u64) -> pb::ProbeResult {
    pb::ProbeResult {
        seq,
        test_id: format!("t-{:016x}", (seq as usize + agent) % TESTS),
        sent_at: Some(foureyes_proto::timestamp_from_ms(
            1_700_000_000_000 + seq as i64 * 100,
        )),
        status: pb::Status::Timeout as i32,
        error: "connect timed out".into(),
        latency_ms: 12.5 + (seq % 7) as f64,
        loss: 0.0,
        detail: Some(pb::probe_result::Detail::Tcp(pb::TcpResult {
            address: "192.0.2.10:443".into(),
            connect_ms: 12.5,
        })),
        ..Default::default()
    }
}

/// Per agent: the batches exactly as the link hands them to ingest (decoded records + signed body).
fn agent_batches(agent: usize, per_agent: usize) -> Vec<IngestBatch> {
    let id = format!("n-{agent:04}");
    (0..per_agent)
        .step_by(AGENT_BATCH)
        .map(|start| {
            let records: Vec<pb::Record> = (start..(start + AGENT_BATCH).min(per_agent))
                .map(|i| {
                    let seq = i as u64 + 1;
                    pb::Record {
                        seq,
                        kind: Some(record::Kind::Result(probe_result(agent, seq))),
                    }
                })
                .collect();
            IngestBatch {
                agent_id: id.clone(),
                org: "acme".into(),
                team: "noc".into(),
                body: pb::RecordBatch {
                    records: records.clone(),
                }
                .encode_to_vec(),
                records,
                signature: vec![0xAB; 64],
                key_id: vec![0xCD; 32],
                received_ms: 0,
            }
        })
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn run_ingest(work: &[Vec<IngestBatch>], cfg: &IngestConfig) -> (f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("bench.sqlite")).unwrap());
    let sys = SystemScope::collector_internal();
    store.create_org(&sys, "acme").unwrap();
    store.create_team(&sys, "acme", "noc").unwrap();
    for a in 0..work.len() {
        store
            .create_agent(
                &sys,
                NewAgent {
                    id: format!("n-{a:04}"),
                    org: "acme".into(),
                    team: Some("noc".into()),
                    kind: pb::AgentKind::Node,
                    hostname: "bench".into(),
                    version: "0".into(),
                    created_at_ms: 0,
                },
            )
            .unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (ingest, task) = Ingest::start(store.clone(), cfg.clone());
    let rows: usize = work.iter().flatten().map(|b| b.records.len()).sum();
    let work: Vec<Vec<IngestBatch>> = work.to_vec();
    let started = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = work
            .into_iter()
            .map(|batches| {
                let ingest = ingest.clone();
                // Like the agent link: one batch in flight per agent, the next after its ack.
                tokio::spawn(async move {
                    for mut b in batches {
                        let last = b.records.last().map(|r| r.seq).unwrap_or(0);
                        b.received_ms = now_ms();
                        let ack = ingest.submit(b).await.unwrap();
                        assert_eq!(ack, last);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let m = ingest.metrics();
    assert_eq!(m.rows as usize, rows);
    drop(ingest);
    task.join().unwrap();
    (rows as f64 / secs, m.flushes)
}

/// `Store::write_batches` called directly with 10k-row groups: ingest minus the pipeline.
fn run_direct(work: &[Vec<IngestBatch>]) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("direct.sqlite")).unwrap();
    let sys = SystemScope::collector_internal();
    store.create_org(&sys, "acme").unwrap();
    store.create_team(&sys, "acme", "noc").unwrap();
    for a in 0..work.len() {
        store
            .create_agent(
                &sys,
                NewAgent {
                    id: format!("n-{a:04}"),
                    org: "acme".into(),
                    team: Some("noc".into()),
                    kind: pb::AgentKind::Node,
                    hostname: "b".into(),
                    version: "0".into(),
                    created_at_ms: 0,
                },
            )
            .unwrap();
    }
    let max_batches = work.iter().map(Vec::len).max().unwrap_or(0);
    let mut order = Vec::new();
    for i in 0..max_batches {
        for batches in work {
            if let Some(b) = batches.get(i) {
                order.push(b.clone());
            }
        }
    }
    let rows: usize = order.iter().map(|b| b.records.len()).sum();
    let started = Instant::now();
    for group in order.chunks(RAW_TX_ROWS / AGENT_BATCH) {
        store.write_batches(&sys, group).unwrap();
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

const RESULTS_TABLE: &str = "CREATE TABLE results (
    key INTEGER PRIMARY KEY, org TEXT NOT NULL, team TEXT NOT NULL, agent_id TEXT NOT NULL,
    test_id TEXT NOT NULL, seq INTEGER NOT NULL, status INTEGER NOT NULL, latency_ms REAL NOT NULL,
    loss REAL NOT NULL, sent_ms INTEGER, received_ms INTEGER NOT NULL, body BLOB NOT NULL)";

const RESULTS_TABLE_WITHOUT_ROWID: &str = "CREATE TABLE results (
    received_ms INTEGER NOT NULL, agent_id TEXT NOT NULL, seq INTEGER NOT NULL,
    org TEXT NOT NULL, team TEXT NOT NULL, test_id TEXT NOT NULL, status INTEGER NOT NULL,
    latency_ms REAL NOT NULL, loss REAL NOT NULL, sent_ms INTEGER, body BLOB NOT NULL,
    PRIMARY KEY (received_ms, agent_id, seq)) WITHOUT ROWID";

/// The ceiling: pre-encoded rows, one prepared statement, 10k-row transactions, no index.
#[derive(Clone, Copy)]
enum Raw {
    Plain,
    WithoutRowid,
    /// Plus the store's results index.
    Indexed,
    /// Plus the indexes and the signed-batch copy (what ingest writes).
    IndexedWithBatches,
    /// Plus an index layout to compare.
    Custom(&'static str),
}

fn run_raw(work: &[Vec<IngestBatch>], mode: Raw) -> f64 {
    let without_rowid = matches!(mode, Raw::WithoutRowid);
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("raw.sqlite")).unwrap();
    let _: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.execute_batch(if without_rowid {
        RESULTS_TABLE_WITHOUT_ROWID
    } else {
        RESULTS_TABLE
    })
    .unwrap();
    if matches!(mode, Raw::Indexed | Raw::IndexedWithBatches) {
        conn.execute_batch(
            "CREATE INDEX results_test ON results (test_id);
             CREATE TABLE batches (id INTEGER PRIMARY KEY, agent_id TEXT NOT NULL, key_id BLOB NOT NULL,
                 first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, received_ms INTEGER NOT NULL,
                 body BLOB NOT NULL, signature BLOB NOT NULL);
             CREATE INDEX batches_agent ON batches (agent_id, first_seq);",
        )
        .unwrap();
    }
    if let Raw::Custom(ix) = mode {
        conn.execute_batch(ix).unwrap();
    }
    let with_batches = matches!(mode, Raw::IndexedWithBatches);
    let batch_every = AGENT_BATCH;
    let sample = &work[0][0];
    // Everything the store would write per row, prepared before the clock starts.
    struct Row {
        agent: String,
        test: String,
        seq: i64,
        status: i32,
        latency: f64,
        loss: f64,
        sent: Option<i64>,
        body: Vec<u8>,
    }
    let mut rows = Vec::new();
    // Interleave agents the way concurrent flushes do.
    let max_batches = work.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..max_batches {
        for batches in work {
            let Some(b) = batches.get(i) else { continue };
            for rec in &b.records {
                let Some(record::Kind::Result(r)) = &rec.kind else {
                    continue;
                };
                let mut r = r.clone();
                r.agent_id.clone_from(&b.agent_id);
                r.received_at = Some(foureyes_proto::timestamp_from_ms(now_ms()));
                rows.push(Row {
                    agent: b.agent_id.clone(),
                    test: r.test_id.clone(),
                    seq: rec.seq as i64,
                    status: r.status,
                    latency: r.latency_ms,
                    loss: r.loss,
                    sent: r.sent_at.as_ref().map(foureyes_proto::timestamp_ms),
                    body: r.encode_to_vec(),
                });
            }
        }
    }
    let sql = if without_rowid {
        "INSERT INTO results (received_ms, agent_id, seq, org, team, test_id, status, latency_ms,
             loss, sent_ms, body) VALUES (?1, ?2, ?3, 'acme', 'noc', ?4, ?5, ?6, ?7, ?8, ?9)"
    } else {
        "INSERT INTO results (key, org, team, agent_id, test_id, seq, status, latency_ms, loss,
             sent_ms, received_ms, body) VALUES (?1, 'acme', 'noc', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    };
    let started = Instant::now();
    let mut key = 0i64;
    for chunk in rows.chunks(RAW_TX_ROWS) {
        let tx = conn.transaction().unwrap();
        {
            let mut st = tx.prepare_cached(sql).unwrap();
            let ms = now_ms();
            for r in chunk {
                key = (ms << 20).max(key + 1);
                if without_rowid {
                    st.execute(params![
                        ms, r.agent, r.seq, r.test, r.status, r.latency, r.loss, r.sent, r.body
                    ])
                    .unwrap();
                } else {
                    st.execute(params![
                        key, r.agent, r.test, r.seq, r.status, r.latency, r.loss, r.sent, ms,
                        r.body
                    ])
                    .unwrap();
                }
            }
        }
        if with_batches {
            let mut st = tx
                .prepare_cached("INSERT INTO batches (agent_id, key_id, first_seq, last_seq, received_ms, body, signature) VALUES (?1, ?2, 1, 500, 0, ?3, ?4)")
                .unwrap();
            for _ in 0..chunk.len() / batch_every {
                st.execute(params![
                    sample.agent_id,
                    sample.key_id,
                    sample.body,
                    sample.signature
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    rows.len() as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let total: usize = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000);
    let per_agent = total / AGENTS;
    let work: Vec<Vec<IngestBatch>> = (0..AGENTS).map(|a| agent_batches(a, per_agent)).collect();
    let rows: usize = work.iter().flatten().map(|b| b.records.len()).sum();
    let body_bytes: usize = work.iter().flatten().map(|b| b.body.len()).sum();
    println!(
        "ingest bench: {rows} results, {AGENTS} agents x {AGENT_BATCH}-record batches, {} B/result encoded",
        body_bytes / rows.max(1)
    );
    let cfg = IngestConfig {
        capacity_records: 100_000,
        max_batch_records: 10_000,
        max_delay: Duration::from_millis(5),
    };
    let (mut best_raw, mut best_ingest, mut best_wr) = (0f64, 0f64, 0f64);
    let mut flushes = 0;
    for round in 1..=ROUNDS {
        let raw = run_raw(&work, Raw::Plain);
        let (ing, f) = run_ingest(&work, &cfg);
        let wr = run_raw(&work, Raw::WithoutRowid);
        if std::env::var_os("BENCH_BREAKDOWN").is_some() {
            let ix = run_raw(&work, Raw::Indexed);
            let ixb = run_raw(&work, Raw::IndexedWithBatches);
            let direct = run_direct(&work);
            // Index layouts considered for the results table.
            for ix in [
                "CREATE INDEX i1 ON results (test_id, key)",
                "CREATE INDEX i1 ON results (test_id)",
                "CREATE INDEX i1 ON results (test_id); CREATE INDEX i2 ON results (agent_id)",
            ] {
                println!(
                    "  raw + [{ix}]: {:.0} rows/s",
                    run_raw(&work, Raw::Custom(ix))
                );
            }
            println!(
                "  breakdown: raw+index {ix:.0} | raw+index+batch copy {ixb:.0} | store.write_batches direct {direct:.0} rows/s"
            );
        }
        println!(
            "  round {round}: raw INTEGER key {raw:>10.0} rows/s | raw WITHOUT ROWID {wr:>10.0} rows/s | ingest {ing:>10.0} rows/s ({f} flushes)"
        );
        if ing > best_ingest {
            flushes = f;
        }
        best_raw = best_raw.max(raw);
        best_ingest = best_ingest.max(ing);
        best_wr = best_wr.max(wr);
    }
    println!("raw rusqlite ceiling (10k-row tx, no index):    {best_raw:>10.0} rows/s");
    println!("raw, WITHOUT ROWID (received_ms, agent, seq):  {best_wr:>10.0} rows/s");
    println!(
        "through Ingest (dedupe, index, batch copy):    {best_ingest:>10.0} rows/s ({} rows/flush avg)",
        rows / flushes.max(1) as usize
    );
    println!(
        "ratio ingest / raw: {:.2}x (target >= 0.70x)",
        best_ingest / best_raw
    );
}
