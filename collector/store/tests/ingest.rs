//! The ingest pipeline against real SQLite files: dedupe by watermark, replays, overlap, gaps,
//! restart, backpressure, failed commits, and a process killed inside the flush transaction.
#![allow(clippy::unwrap_used)]

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use foureyes_proto::v1 as pb;
use foureyes_store::{
    ResultFilter, SqliteStore, Store,
    ingest::{Ingest, IngestConfig, IngestError},
};

fn cfg() -> IngestConfig {
    IngestConfig {
        capacity_records: 10_000,
        max_batch_records: 1_000,
        max_delay: Duration::from_millis(2),
    }
}

fn setup(dir: &std::path::Path) -> Arc<SqliteStore> {
    let s = Arc::new(open(dir));
    tenants(&*s);
    agent(&*s, "n-1", "a", Some("x"), pb::AgentKind::Node);
    agent(&*s, "n-2", "a", Some("x"), pb::AgentKind::Node);
    s
}

fn rows(s: &SqliteStore, table: &str) -> i64 {
    let c = rusqlite::Connection::open(s.path()).unwrap();
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn watermark(s: &dyn Store, agent: &str) -> u64 {
    s.get_agent(&all(), agent).unwrap().unwrap().last_seq
}

fn results(from: u64, to: u64) -> Vec<pb::Record> {
    (from..=to).map(|q| result(q, "t-1")).collect()
}

#[tokio::test]
async fn a_replayed_batch_is_acked_again_but_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let (ingest, _t) = Ingest::start(s.clone(), cfg());
    let b = batch("n-1", "a", "x", results(1, 10), 1_000);
    assert_eq!(ingest.submit(b.clone()).await.unwrap(), 10);
    assert_eq!(ingest.submit(b).await.unwrap(), 10);
    assert_eq!(
        results_seqs(&*s, &all(), "n-1"),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        rows(&s, "batches"),
        1,
        "the replay keeps no second copy of the batch"
    );
    let m = ingest.metrics();
    assert_eq!((m.flushed_batches, m.rows, m.duplicates), (2, 10, 10));
    assert_eq!(m.queue_depth_records, 0);
    assert!(m.last_flush_at_ms > 0);

    // Overlap: 6..=15 stores only 11..=15.
    assert_eq!(
        ingest
            .submit(batch("n-1", "a", "x", results(6, 15), 2_000))
            .await
            .unwrap(),
        15
    );
    assert_eq!(
        results_seqs(&*s, &all(), "n-1"),
        (1..=15).collect::<Vec<_>>()
    );
    assert_eq!(rows(&s, "batches"), 2);
    // A stale batch from far behind is a pure replay.
    assert_eq!(
        ingest
            .submit(batch("n-1", "a", "x", results(3, 4), 3_000))
            .await
            .unwrap(),
        15
    );
    // An empty batch reports the watermark.
    assert_eq!(
        ingest
            .submit(batch("n-1", "a", "x", vec![], 3_000))
            .await
            .unwrap(),
        15
    );
    // The other agent's sequence is its own.
    assert_eq!(
        ingest
            .submit(batch("n-2", "a", "x", results(1, 3), 3_000))
            .await
            .unwrap(),
        3
    );
    assert_eq!(watermark(&*s, "n-1"), 15);
    assert_eq!(watermark(&*s, "n-2"), 3);
    let a = s.get_agent(&all(), "n-1").unwrap().unwrap();
    assert_eq!(a.last_seen_ms, Some(3_000));
}

#[tokio::test]
async fn overlapping_batches_in_one_flush_store_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    // A long delay groups everything submitted together into one transaction.
    let (ingest, _t) = Ingest::start(
        s.clone(),
        IngestConfig {
            max_delay: Duration::from_millis(200),
            ..cfg()
        },
    );
    let subs = [(1, 10), (5, 20), (1, 20), (15, 30), (31, 31)];
    let futs: Vec<_> = subs
        .iter()
        .map(|(a, b)| {
            let ingest = ingest.clone();
            let b = batch("n-1", "a", "x", results(*a, *b), 1_000);
            tokio::spawn(async move { ingest.submit(b).await })
        })
        .collect();
    let mut acks = Vec::new();
    for f in futs {
        acks.push(f.await.unwrap().unwrap());
    }
    // Each ack is at least the batch's own last seq: nothing acked beyond what is committed.
    for ((_, last), ack) in subs.iter().zip(&acks) {
        assert!(ack >= last, "{acks:?}");
    }
    assert_eq!(
        results_seqs(&*s, &all(), "n-1"),
        (1..=31).collect::<Vec<_>>()
    );
    assert_eq!(ingest.metrics().flushes, 1, "{:?}", ingest.metrics());
    assert_eq!(ingest.metrics().rows, 31);
}

#[tokio::test]
async fn gap_records_are_stored_and_consume_their_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let (ingest, _t) = Ingest::start(s.clone(), cfg());
    // The node dropped 4..=9 and says so with record 10.
    let mut recs = results(1, 3);
    recs.push(gap(10, 4, 9));
    recs.extend(results(11, 12));
    assert_eq!(
        ingest
            .submit(batch("n-1", "a", "x", recs.clone(), 5_000))
            .await
            .unwrap(),
        12
    );
    // Replayed: still one gap.
    assert_eq!(
        ingest
            .submit(batch("n-1", "a", "x", recs, 6_000))
            .await
            .unwrap(),
        12
    );
    // A batch ending with a gap moves the watermark to the gap's seq.
    assert_eq!(
        ingest
            .submit(batch("n-1", "a", "x", vec![gap(13, 13, 13)], 7_000))
            .await
            .unwrap(),
        13
    );
    let gaps = s.gaps(&team("a", "x"), &ResultFilter::default()).unwrap();
    assert_eq!(gaps.len(), 2);
    let g = &gaps[0];
    assert_eq!(
        (g.first_seq, g.last_seq, g.count, g.reason.as_str()),
        (4, 9, 6, "spool full")
    );
    assert_eq!(g.agent_id, "n-1");
    assert_eq!(
        g.received_at.map(|t| foureyes_proto::timestamp_ms(&t)),
        Some(5_000)
    );
    assert_eq!(results_seqs(&*s, &all(), "n-1"), vec![1, 2, 3, 11, 12]);
    // Time filter on gaps.
    let f = ResultFilter {
        from_ms: Some(6_000),
        ..Default::default()
    };
    assert_eq!(s.gaps(&all(), &f).unwrap().len(), 1);
}

#[tokio::test]
async fn the_collector_overwrites_what_the_agent_claims() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let (ingest, _t) = Ingest::start(s.clone(), cfg());
    let mut recs = results(1, 1);
    if let Some(pb::record::Kind::Result(r)) = &mut recs[0].kind {
        r.seq = 999; // disagrees with the record's seq
    }
    ingest
        .submit(batch("n-1", "a", "x", recs, 123_456))
        .await
        .unwrap();
    let page = s
        .results(&team("a", "x"), &ResultFilter::default(), None, 10)
        .unwrap();
    let r = &page.results[0];
    assert_eq!(r.agent_id, "n-1");
    assert_eq!(r.seq, 1);
    assert_eq!(
        r.received_at.map(|t| foureyes_proto::timestamp_ms(&t)),
        Some(123_456)
    );
    // The stored body itself carries the collector's values (not only the read path).
    let c = rusqlite::Connection::open(s.path()).unwrap();
    let body: Vec<u8> = c
        .query_row("SELECT body FROM results", [], |r| r.get(0))
        .unwrap();
    let stored = <pb::ProbeResult as prost::Message>::decode(body.as_slice()).unwrap();
    assert_eq!((stored.agent_id.as_str(), stored.seq), ("n-1", 1));
    // Plain columns for the correlator.
    let (status, latency, sent): (i32, f64, i64) = c
        .query_row("SELECT status, latency_ms, sent_ms FROM results", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(
        (status, latency, sent),
        (pb::Status::Ok as i32, 1.0, 1_700_000_000_001)
    );
    // The signed batch is kept as sent.
    let (sig, kid, first, last): (Vec<u8>, Vec<u8>, i64, i64) = c
        .query_row(
            "SELECT signature, key_id, first_seq, last_seq FROM batches",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!((sig, kid, first, last), (vec![7; 64], vec![9; 32], 1, 1));
}

#[tokio::test]
async fn the_watermark_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = setup(dir.path());
        let (ingest, task) = Ingest::start(s.clone(), cfg());
        assert_eq!(
            ingest
                .submit(batch("n-1", "a", "x", results(1, 50), 1_000))
                .await
                .unwrap(),
            50
        );
        drop(ingest);
        // The flusher exits once the last handle is gone.
        tokio::task::spawn_blocking(move || task.join().unwrap())
            .await
            .unwrap();
    }
    let s = Arc::new(open(dir.path()));
    assert_eq!(watermark(&*s, "n-1"), 50);
    let (ingest, _t) = Ingest::start(s.clone(), cfg());
    // The agent resends a window that straddles the restart.
    assert_eq!(
        ingest
            .submit(batch("n-1", "a", "x", results(41, 60), 2_000))
            .await
            .unwrap(),
        60
    );
    assert_eq!(
        results_seqs(&*s, &all(), "n-1"),
        (1..=60).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn unknown_agents_are_refused_without_hurting_their_flush_mates() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let (ingest, _t) = Ingest::start(
        s.clone(),
        IngestConfig {
            max_delay: Duration::from_millis(100),
            ..cfg()
        },
    );
    let a = tokio::spawn({
        let i = ingest.clone();
        async move { i.submit(batch("ghost", "a", "x", results(1, 5), 1)).await }
    });
    let b = tokio::spawn({
        let i = ingest.clone();
        async move { i.submit(batch("n-1", "a", "x", results(1, 5), 1)).await }
    });
    assert_eq!(
        a.await.unwrap(),
        Err(IngestError::UnknownAgent("ghost".into()))
    );
    assert_eq!(b.await.unwrap(), Ok(5));
    assert_eq!(rows(&s, "results"), 5);
}

#[tokio::test]
async fn a_failed_commit_fails_every_submit_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let (ingest, _t) = Ingest::start(
        s.clone(),
        IngestConfig {
            max_delay: Duration::from_millis(100),
            ..cfg()
        },
    );
    assert_eq!(
        ingest
            .submit(batch("n-1", "a", "x", results(1, 5), 1))
            .await
            .unwrap(),
        5
    );
    // Break the flush half-way: results insert fine, the batches table is gone.
    let c = rusqlite::Connection::open(s.path()).unwrap();
    c.execute_batch("ALTER TABLE batches RENAME TO batches_away")
        .unwrap();
    let subs: Vec<_> = [("n-1", 6), ("n-2", 1)]
        .into_iter()
        .map(|(id, from)| {
            let i = ingest.clone();
            tokio::spawn(async move {
                i.submit(batch(id, "a", "x", results(from, from + 4), 2))
                    .await
            })
        })
        .collect();
    for f in subs {
        assert!(matches!(f.await.unwrap(), Err(IngestError::Store(_))));
    }
    assert_eq!(
        rows(&s, "results"),
        5,
        "nothing of the failed flush is visible"
    );
    assert_eq!((watermark(&*s, "n-1"), watermark(&*s, "n-2")), (5, 0));
    assert_eq!(ingest.metrics().failed_flushes, 1);
    // Repaired, the agent's resend goes through.
    c.execute_batch("ALTER TABLE batches_away RENAME TO batches")
        .unwrap();
    assert_eq!(
        ingest
            .submit(batch("n-1", "a", "x", results(6, 10), 3))
            .await
            .unwrap(),
        10
    );
    assert_eq!(
        results_seqs(&*s, &all(), "n-1"),
        (1..=10).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_full_buffer_makes_submit_wait() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let (ingest, _t) = Ingest::start(
        s.clone(),
        IngestConfig {
            capacity_records: 5,
            max_batch_records: 100,
            max_delay: Duration::from_millis(400),
        },
    );
    let first = tokio::spawn({
        let i = ingest.clone();
        async move { i.submit(batch("n-1", "a", "x", results(1, 3), 1)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = tokio::spawn({
        let i = ingest.clone();
        async move { i.submit(batch("n-2", "a", "x", results(1, 3), 1)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // 3 of 5 records queued; the second batch (3) waits for room, outside the queue.
    let m = ingest.metrics();
    assert_eq!(
        (m.queue_depth_batches, m.queue_depth_records),
        (1, 3),
        "{m:?}"
    );
    assert_eq!(first.await.unwrap(), Ok(3));
    assert_eq!(second.await.unwrap(), Ok(3));
    // A batch larger than the whole buffer still goes through (alone).
    assert_eq!(
        ingest
            .submit(batch("n-1", "a", "x", results(4, 20), 1))
            .await
            .unwrap(),
        20
    );
}

#[tokio::test]
async fn many_agents_under_load_lose_nothing_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    for i in 3..=8 {
        agent(&*s, &format!("n-{i}"), "a", Some("y"), pb::AgentKind::Node);
    }
    let (ingest, _t) = Ingest::start(
        s.clone(),
        IngestConfig {
            capacity_records: 500,
            max_batch_records: 300,
            ..cfg()
        },
    );
    let mut tasks = Vec::new();
    for i in 1..=8u64 {
        let ingest = ingest.clone();
        let team = if i <= 2 { "x" } else { "y" };
        tasks.push(tokio::spawn(async move {
            let id = format!("n-{i}");
            let mut next: u64 = 1;
            while next <= 1_000 {
                // Resend the last 10 every time, like an agent whose acks got lost.
                let from = next.saturating_sub(10).max(1);
                let to = (next + 49).min(1_000);
                let ack = ingest
                    .submit(batch(&id, "a", team, results(from, to), 1))
                    .await
                    .unwrap();
                assert_eq!(ack, to);
                next = to + 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for i in 1..=8 {
        assert_eq!(
            results_seqs(&*s, &all(), &format!("n-{i}")),
            (1..=1_000).collect::<Vec<_>>()
        );
    }
    let m = ingest.metrics();
    assert_eq!(m.rows, 8_000);
    assert!(m.duplicates > 0);
}

const CHILD_DB_ENV: &str = "FOUREYES_STORE_TEST_CHILD_DB";

/// Runs only as the child of `a_process_killed_inside_the_flush_leaves_no_partial_batch`.
#[test]
fn failpoint_child() {
    let Some(path) = std::env::var_os(CHILD_DB_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = Arc::new(SqliteStore::open(&path).unwrap());
        let (ingest, _t) = Ingest::start(s, cfg());
        // With the failpoint armed this never returns: the flush aborts the process.
        let _ = ingest
            .submit(batch(
                "n-1",
                "a",
                "x",
                (101..=300).map(|q| result(q, "t-1")).collect(),
                9_000,
            ))
            .await;
    });
    // Reaching this line means the failpoint did not fire; the parent sees a clean exit and fails.
}

#[tokio::test]
async fn a_process_killed_inside_the_flush_leaves_no_partial_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    {
        let (ingest, _t) = Ingest::start(s.clone(), cfg());
        assert_eq!(
            ingest
                .submit(batch("n-1", "a", "x", results(1, 100), 1_000))
                .await
                .unwrap(),
            100
        );
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "failpoint_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB_ENV, s.path())
        .env(foureyes_store::FAILPOINT_ENV, "flush-mid-transaction")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(
        !status.success(),
        "the child should have aborted: {status:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(6), "SIGABRT expected: {status:?}");
    }
    // Reopen as the restarted collector would: the half-written flush is gone, the watermark agrees
    // with what is stored.
    drop(s);
    let s = Arc::new(open(dir.path()));
    assert_eq!(watermark(&*s, "n-1"), 100);
    assert_eq!(rows(&s, "results"), 100);
    assert_eq!(rows(&s, "batches"), 1);
    let (ingest, _t) = Ingest::start(s.clone(), cfg());
    assert_eq!(
        ingest
            .submit(batch(
                "n-1",
                "a",
                "x",
                (101..=300).map(|q| result(q, "t-1")).collect(),
                9_000
            ))
            .await
            .unwrap(),
        300
    );
    assert_eq!(
        results_seqs(&*s, &all(), "n-1"),
        (1..=300).collect::<Vec<_>>()
    );
}
