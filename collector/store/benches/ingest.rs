//! Results/second through `Ingest` (buffer → flush → SQLite with watermark dedupe, the per-test
//! postings and the signed-batch copy) next to the raw rusqlite ceiling for the same rows: 10k-row
//! transactions into a results table without any index, bodies encoded before the clock starts,
//! `synchronous=NORMAL`. Both run in this process, in alternating order, `BENCH_ROUNDS` times
//! (default 5); the summary gives best-of-N and median for each and the median of the per-round
//! ratios (the most robust figure when the machine is shared). The same ceiling with the store's
//! `synchronous=FULL` is printed next to it: the store pays one WAL fsync per flush, which the
//! target's ceiling does not.
//!
//! `cargo bench -p foureyes-store`. Env: `BENCH_ROWS` (row count), `BENCH_ROUNDS`,
//! `BENCH_BREAKDOWN=1` (raw variants and `write_batches` without the pipeline), `BENCH_EXP=1` (the
//! per-test index layouts that were tried, see [`experiments`]), `BENCH_ONLY_INGEST=1` (ingest
//! alone, three times, with process CPU seconds: for profilers).
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
const ROUNDS: usize = 5;

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
    let start_ms = now_ms();
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
    if std::env::var_os("BENCH_QUERY").is_some() {
        query_timing(&store, start_ms, now_ms());
    }
    let m = ingest.metrics();
    assert_eq!(m.rows as usize, rows);
    drop(ingest);
    task.join().unwrap();
    (rows as f64 / secs, m.flushes)
}

/// `BENCH_QUERY=1`: the correlator's read, one test over a time range, after ingest: every test's
/// whole history (paged by 1000) and the middle tenth of the run by receive time (one page).
fn query_timing(store: &SqliteStore, start_ms: i64, end_ms: i64) {
    use foureyes_store::{ResultFilter, Scope, Tenant};
    let scope = Scope::Tenant(Tenant {
        org: "acme".into(),
        team: Some("noc".into()),
    });
    let (mut rows, mut pages) = (0usize, 0usize);
    let started = Instant::now();
    for t in 0..TESTS {
        let filter = ResultFilter {
            test_id: Some(format!("t-{t:016x}")),
            ..Default::default()
        };
        let mut after = None;
        loop {
            let p = store.results(&scope, &filter, after, 1000).unwrap();
            rows += p.results.len();
            pages += 1;
            after = p.next;
            if after.is_none() {
                break;
            }
        }
    }
    let full = started.elapsed();
    // The middle tenth of the run.
    let from = start_ms + (end_ms - start_ms) * 45 / 100;
    let to = start_ms + (end_ms - start_ms) * 55 / 100;
    let started = Instant::now();
    let mut recent = 0;
    for t in 0..TESTS {
        let filter = ResultFilter {
            test_id: Some(format!("t-{t:016x}")),
            from_ms: Some(from),
            to_ms: Some(to),
            ..Default::default()
        };
        recent += store
            .results(&scope, &filter, None, 1000)
            .unwrap()
            .results
            .len();
    }
    let window = started.elapsed();
    println!(
        "  per-test reads: whole history {rows} rows in {pages} pages, {:.0} rows/s, {:.0} us/page | middle tenth of the run by receive time: {recent} rows, {:.0} us/query",
        rows as f64 / full.as_secs_f64(),
        full.as_micros() as f64 / pages as f64,
        window.as_micros() as f64 / TESTS as f64
    );
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
    /// Plain, with the store's durability (one WAL fsync per commit).
    PlainFullSync,
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
    let sync = if matches!(mode, Raw::PlainFullSync) {
        "FULL"
    } else {
        "NORMAL"
    };
    conn.pragma_update(None, "synchronous", sync).unwrap();
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

/// Experiment: one results layout, written like the store would write it.
#[derive(Clone, Copy, Debug)]
struct Variant {
    name: &'static str,
    full_sync: bool,
    page_size: Option<u32>,
    /// Keep the TEXT test_id column.
    text_col: bool,
    /// Add an INTEGER test_key column.
    int_col: bool,
    /// DDL run after the table.
    ddl: &'static str,
    /// Insert each transaction's rows ordered by (test, key) (keys assigned in arrival order).
    sorted: bool,
    /// Also insert (test_key, key) into a side WITHOUT ROWID table.
    side: bool,
    /// Rows per INSERT statement.
    multi: usize,
}

fn run_variant(work: &[Vec<IngestBatch>], v: Variant) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join("var.sqlite")).unwrap();
    if let Some(ps) = v.page_size {
        conn.execute_batch(&format!("PRAGMA page_size = {ps}"))
            .unwrap();
    }
    let _: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    conn.pragma_update(
        None,
        "synchronous",
        if v.full_sync { "FULL" } else { "NORMAL" },
    )
    .unwrap();
    conn.pragma_update(None, "cache_size", -32_000).unwrap();
    let cols =
        format!(
        "key INTEGER PRIMARY KEY, org TEXT NOT NULL, team TEXT NOT NULL, agent_id TEXT NOT NULL,
         {} {} seq INTEGER NOT NULL, status INTEGER NOT NULL, latency_ms REAL NOT NULL,
         loss REAL NOT NULL, sent_ms INTEGER, received_ms INTEGER NOT NULL, body BLOB NOT NULL",
        if v.text_col { "test_id TEXT NOT NULL," } else { "" },
        if v.int_col { "test_key INTEGER NOT NULL," } else { "" },
    );
    conn.execute_batch(&format!("CREATE TABLE results ({cols})"))
        .unwrap();
    conn.execute_batch(v.ddl).unwrap();
    if v.side {
        conn.execute_batch(
            "CREATE TABLE results_by_test (test_key INTEGER NOT NULL, key INTEGER NOT NULL,
             PRIMARY KEY (test_key, key)) WITHOUT ROWID",
        )
        .unwrap();
    }
    struct Row {
        key: i64,
        agent: String,
        test: String,
        test_key: i64,
        seq: i64,
        status: i32,
        latency: f64,
        loss: f64,
        sent: Option<i64>,
        body: Vec<u8>,
    }
    let mut rows = Vec::new();
    let mut tkeys = std::collections::HashMap::new();
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
                let n = tkeys.len() as i64 + 1;
                let test_key = *tkeys.entry(r.test_id.clone()).or_insert(n);
                rows.push(Row {
                    key: 0,
                    agent: b.agent_id.clone(),
                    test: r.test_id.clone(),
                    test_key,
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
    let mut names = vec!["key", "org", "team", "agent_id"];
    if v.text_col {
        names.push("test_id");
    }
    if v.int_col {
        names.push("test_key");
    }
    names.extend([
        "seq",
        "status",
        "latency_ms",
        "loss",
        "sent_ms",
        "received_ms",
        "body",
    ]);
    let mk = |n: usize| {
        let groups: Vec<String> = (0..n)
            .map(|g| {
                let q: Vec<String> = (1..=names.len())
                    .map(|i| format!("?{}", g * names.len() + i))
                    .collect();
                format!("({})", q.join(", "))
            })
            .collect();
        format!(
            "INSERT INTO results ({}) VALUES {}",
            names.join(", "),
            groups.join(", ")
        )
    };
    let sql = mk(1);
    let sql_multi = mk(v.multi.max(1));
    let mut conn = conn;
    let started = Instant::now();
    let mut key = 0i64;
    for chunk in rows.chunks_mut(RAW_TX_ROWS) {
        let tx = conn.transaction().unwrap();
        {
            let mut st = tx.prepare_cached(&sql).unwrap();
            let ms = now_ms();
            for r in chunk.iter_mut() {
                key = (ms << 20).max(key + 1);
                r.key = key;
            }
            let mut order: Vec<usize> = (0..chunk.len()).collect();
            if v.sorted {
                order.sort_by_key(|&i| (chunk[i].test_key, chunk[i].key));
            }
            let mut stm = tx.prepare_cached(&sql_multi).unwrap();
            let mut acc: Vec<rusqlite::types::Value> = Vec::new();
            let mut n_acc = 0;
            for &i in &order {
                let r = &chunk[i];
                let mut p: Vec<rusqlite::types::Value> = vec![
                    r.key.into(),
                    "acme".to_string().into(),
                    "noc".to_string().into(),
                    r.agent.clone().into(),
                ];
                if v.text_col {
                    p.push(r.test.clone().into());
                }
                if v.int_col {
                    p.push(r.test_key.into());
                }
                p.extend([
                    r.seq.into(),
                    (r.status as i64).into(),
                    r.latency.into(),
                    r.loss.into(),
                    r.sent.into(),
                    ms.into(),
                    r.body.clone().into(),
                ]);
                if v.multi > 1 {
                    acc.extend(p);
                    n_acc += 1;
                    if n_acc == v.multi {
                        stm.execute(rusqlite::params_from_iter(acc.drain(..)))
                            .unwrap();
                        n_acc = 0;
                    }
                } else {
                    st.execute(rusqlite::params_from_iter(p)).unwrap();
                }
            }
            assert_eq!(n_acc, 0);
            if v.side {
                let mut side = tx
                    .prepare_cached("INSERT INTO results_by_test (test_key, key) VALUES (?1, ?2)")
                    .unwrap();
                let mut order: Vec<usize> = (0..chunk.len()).collect();
                order.sort_by_key(|&i| (chunk[i].test_key, chunk[i].key));
                for i in order {
                    side.execute(params![chunk[i].test_key, chunk[i].key])
                        .unwrap();
                }
            }
        }
        tx.commit().unwrap();
    }
    rows.len() as f64 / started.elapsed().as_secs_f64()
}

/// `BENCH_EXP=1`: the results layouts tried for the per-test lookup, each written the way a flush
/// writes (10k-row transactions, one prepared statement), best of three. The store kept neither
/// index: it writes one `results_by_test` posting per test and flush instead (schema v3), which the
/// main comparison measures through `Ingest`.
fn experiments(work: &[Vec<IngestBatch>]) {
    let base = Variant {
        name: "",
        full_sync: false,
        page_size: None,
        text_col: true,
        int_col: false,
        ddl: "",
        sorted: false,
        side: false,
        multi: 1,
    };
    let text_ix = Variant {
        ddl: "CREATE INDEX ix ON results (test_id)",
        ..base
    };
    let int_ix = Variant {
        text_col: false,
        int_col: true,
        ddl: "CREATE INDEX ix ON results (test_key)",
        ..base
    };
    let vs = [
        Variant {
            name: "TEXT test_id, no index",
            ..base
        },
        Variant {
            name: "TEXT test_id, no index, synchronous=FULL",
            full_sync: true,
            ..base
        },
        Variant {
            name: "INTEGER test_key, no index",
            text_col: false,
            int_col: true,
            ..base
        },
        Variant {
            name: "index on TEXT test_id (v1/v2)",
            ..text_ix
        },
        Variant {
            name: "index on TEXT test_id, rows sorted by test",
            sorted: true,
            ..text_ix
        },
        Variant {
            name: "TEXT + INTEGER columns, index on test_key",
            text_col: true,
            ..int_ix
        },
        Variant {
            name: "index on INTEGER test_key",
            ..int_ix
        },
        Variant {
            name: "index on test_key, rows sorted by test",
            sorted: true,
            ..int_ix
        },
        Variant {
            name: "index on test_key, 8 KiB pages",
            page_size: Some(8192),
            ..int_ix
        },
        Variant {
            name: "index on test_key, 16 KiB pages",
            page_size: Some(16384),
            ..int_ix
        },
        Variant {
            name: "index on test_key, 50-row INSERTs",
            multi: 50,
            ..int_ix
        },
        Variant {
            name: "test_key, WITHOUT ROWID (test_key, key) side table",
            text_col: false,
            int_col: true,
            side: true,
            ..base
        },
    ];
    let mut best = vec![0f64; vs.len()];
    for _ in 0..3 {
        for (i, v) in vs.iter().enumerate() {
            best[i] = best[i].max(run_variant(work, *v));
        }
    }
    for (v, b) in vs.iter().zip(best) {
        println!("  {:<52} {b:>10.0} rows/s", v.name);
    }
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
    if std::env::var_os("BENCH_ONLY_INGEST").is_some() {
        let cpu = || {
            let st = std::fs::read_to_string("/proc/self/stat").unwrap();
            let f: Vec<&str> = st.rsplit(')').next().unwrap().split_whitespace().collect();
            (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
        };
        for _ in 0..3 {
            let c0 = cpu();
            let r = run_ingest(&work, &cfg).0;
            println!("ingest {r:.0} cpu {:.2}s", cpu() - c0);
        }
        return;
    }
    if std::env::var_os("BENCH_EXP").is_some() {
        experiments(&work);
        return;
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS)
        .max(1);
    let (mut raws, mut ingests, mut fulls, mut ratios) = (vec![], vec![], vec![], vec![]);
    let mut flushes = 0;
    for round in 1..=rounds {
        // Alternate which goes first so a slow start (page cache, another build) hits both.
        let (raw, (ing, f)) = if round % 2 == 1 {
            let raw = run_raw(&work, Raw::Plain);
            (raw, run_ingest(&work, &cfg))
        } else {
            let ing = run_ingest(&work, &cfg);
            (run_raw(&work, Raw::Plain), ing)
        };
        let full = run_raw(&work, Raw::PlainFullSync);
        if std::env::var_os("BENCH_BREAKDOWN").is_some() {
            let wr = run_raw(&work, Raw::WithoutRowid);
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
                "  breakdown: raw WITHOUT ROWID (received_ms, agent, seq) {wr:.0} | raw+TEXT index {ix:.0} | raw+TEXT index+batch copy {ixb:.0} | store.write_batches direct {direct:.0} rows/s"
            );
        }
        println!(
            "  round {round}: ceiling {raw:>8.0} rows/s | ingest {ing:>8.0} rows/s ({f} flushes) | ratio {:.2} | ceiling with synchronous=FULL {full:>8.0} rows/s",
            ing / raw
        );
        if ing > ingests.iter().copied().fold(0.0, f64::max) {
            flushes = f;
        }
        raws.push(raw);
        ingests.push(ing);
        fulls.push(full);
        ratios.push(ing / raw);
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("{rounds} rounds (best | median):");
    println!(
        "raw rusqlite ceiling (10k-row tx, no index, NORMAL): {:>8.0} | {:>8.0} rows/s",
        best(&raws),
        median(&raws)
    );
    println!(
        "same ceiling with synchronous=FULL (the store's):    {:>8.0} | {:>8.0} rows/s",
        best(&fulls),
        median(&fulls)
    );
    println!(
        "through Ingest (dedupe, test postings, batch copy):  {:>8.0} | {:>8.0} rows/s ({} rows/flush)",
        best(&ingests),
        median(&ingests),
        rows / flushes.max(1) as usize
    );
    println!(
        "ratio ingest / ceiling: best/best {:.2}x, median/median {:.2}x, median of per-round ratios {:.2}x (target >= 0.70x)",
        best(&ingests) / best(&raws),
        median(&ingests) / median(&raws),
        median(&ratios)
    );
}
