//! Versioned schema. `PRAGMA user_version` holds how many steps of [`MIGRATIONS`] a database has
//! applied; opening a database applies the missing ones in one immediate transaction, so two
//! processes opening the same file at once cannot both migrate it.
//!
//! Steps are append-only: a released step is never edited, a change is a new step.

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// Step `i` takes a database from version `i` to version `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // v1: the base schema.
    //
    // Teams are stored as '' for "the org as a whole" rather than NULL so that `team = ?` filters and
    // composite indexes work without NULL special cases.
    r#"
    CREATE TABLE orgs (
        name TEXT PRIMARY KEY,
        created_at_ms INTEGER NOT NULL,
        -- Bumped by every test create/update/delete in the org: agents' assignment version.
        assignment_version INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;

    CREATE TABLE teams (
        org TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (org, name)
    ) WITHOUT ROWID;

    CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        org TEXT NOT NULL,
        team TEXT NOT NULL DEFAULT '',
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at_ms INTEGER NOT NULL,
        revoked_at_ms INTEGER
    );
    CREATE INDEX api_tokens_org ON api_tokens (org, team);

    CREATE TABLE enrollment_tokens (
        token_hash TEXT PRIMARY KEY,
        org TEXT NOT NULL,
        team TEXT NOT NULL DEFAULT '',
        kind INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        used_at_ms INTEGER
    ) WITHOUT ROWID;

    CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        org TEXT NOT NULL,
        team TEXT NOT NULL DEFAULT '',
        kind INTEGER NOT NULL,
        hostname TEXT NOT NULL DEFAULT '',
        version TEXT NOT NULL DEFAULT '',
        created_at_ms INTEGER NOT NULL,
        last_seen_ms INTEGER,
        clock_offset_ms INTEGER NOT NULL DEFAULT 0,
        revoked_at_ms INTEGER,
        -- Ingest watermark: highest sequence number stored.
        last_seq INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX agents_org ON agents (org, team);

    CREATE TABLE agent_keys (
        key_id BLOB PRIMARY KEY,
        agent_id TEXT NOT NULL,
        public_key BLOB NOT NULL,
        cert_serial BLOB NOT NULL,
        cert_not_after_ms INTEGER NOT NULL,
        added_at_ms INTEGER NOT NULL,
        revoked_at_ms INTEGER
    );
    CREATE INDEX agent_keys_agent ON agent_keys (agent_id);

    CREATE TABLE tests (
        id TEXT PRIMARY KEY,
        org TEXT NOT NULL,
        team TEXT NOT NULL DEFAULT '',
        updated_at_ms INTEGER NOT NULL,
        -- Encoded foureyes.v1.Test.
        body BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX tests_org ON tests (org, team, id);

    -- key = received_ms << 20 | counter: time-ordered, unique, never reused (see sqlite.rs).
    -- No UNIQUE(agent_id, seq): ingest dedupes by the agent's watermark instead.
    CREATE TABLE results (
        key INTEGER PRIMARY KEY,
        org TEXT NOT NULL,
        team TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        test_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        status INTEGER NOT NULL,
        latency_ms REAL NOT NULL,
        loss REAL NOT NULL,
        sent_ms INTEGER,
        received_ms INTEGER NOT NULL,
        -- Encoded foureyes.v1.ProbeResult with the collector's agent_id, seq and received_at.
        body BLOB NOT NULL
    );
    -- (test_id) alone: SQLite appends the rowid (= key) to every index entry, so this orders each
    -- test's results by time for free, and is the only index ingest pays for (each one costs about
    -- as much as the row insert itself: see benches/ingest.rs). Test ids are globally unique, so
    -- the org filter rides along. Agent-only queries walk the key (time) range instead.
    CREATE INDEX results_test ON results (test_id);

    CREATE TABLE gaps (
        id INTEGER PRIMARY KEY,
        org TEXT NOT NULL,
        team TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        count INTEGER NOT NULL,
        reason TEXT NOT NULL,
        received_ms INTEGER NOT NULL
    );
    CREATE INDEX gaps_agent ON gaps (agent_id, received_ms);
    "#,
    // v2: keep every signed batch as the agent sent it: the evidence behind the stored rows, and
    // what a replay is recognised against (agent, sequence range).
    r#"
    CREATE TABLE batches (
        id INTEGER PRIMARY KEY,
        agent_id TEXT NOT NULL,
        key_id BLOB NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        body BLOB NOT NULL,
        signature BLOB NOT NULL
    );
    CREATE INDEX batches_agent ON batches (agent_id, first_seq);
    "#,
    // v3: the per-test lookup without a per-row index. The TEXT index on results(test_id) cost as
    // much as the row insert itself (one B-tree descent and an ~30-byte entry per result, spread
    // over as many insertion points as there are tests). Instead:
    // - `test_keys` gives every test id ever seen in a result a small integer, kept forever (also
    //   after the test is deleted: its results must still resolve; results may also name ids the
    //   tests table never had);
    // - `results.test_key` replaces `results.test_id` (the id is still in `body`);
    // - `results_by_test` is a postings list: one row per (test, flush) holding the keys of that
    //   test's results written by the flush, as 8-byte big-endian integers in ascending key order,
    //   `last_key` being the largest. A flush's keys all exceed every earlier key, so walking one
    //   test's postings by `last_key` yields its results in key (= time) order. Ingest writes one
    //   posting per test per flush instead of one index entry per result.
    // Existing results get postings of at most 1024 keys each.
    r#"
    CREATE TABLE test_keys (
        key INTEGER PRIMARY KEY,
        test_id TEXT NOT NULL UNIQUE
    );
    INSERT INTO test_keys (test_id) SELECT DISTINCT test_id FROM results ORDER BY test_id;

    CREATE TABLE results_v3 (
        key INTEGER PRIMARY KEY,
        org TEXT NOT NULL,
        team TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        test_key INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        status INTEGER NOT NULL,
        latency_ms REAL NOT NULL,
        loss REAL NOT NULL,
        sent_ms INTEGER,
        received_ms INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    INSERT INTO results_v3 (key, org, team, agent_id, test_key, seq, status, latency_ms, loss,
            sent_ms, received_ms, body)
        SELECT r.key, r.org, r.team, r.agent_id, t.key, r.seq, r.status, r.latency_ms, r.loss,
            r.sent_ms, r.received_ms, r.body
        FROM results r JOIN test_keys t ON t.test_id = r.test_id
        ORDER BY r.key;
    DROP TABLE results;
    ALTER TABLE results_v3 RENAME TO results;

    CREATE TABLE results_by_test (
        test_key INTEGER NOT NULL,
        last_key INTEGER NOT NULL,
        keys BLOB NOT NULL,
        PRIMARY KEY (test_key, last_key)
    ) WITHOUT ROWID;
    INSERT INTO results_by_test (test_key, last_key, keys)
        SELECT test_key, max(key), unhex(group_concat(printf('%016x', key), '' ORDER BY key))
        FROM (SELECT test_key, key,
                (row_number() OVER (PARTITION BY test_key ORDER BY key) - 1) / 1024 AS chunk
              FROM results)
        GROUP BY test_key, chunk;
    "#,
    // v4: route events from listeners, and the routes they add up to.
    // - `route_events` is keyed like `results` (receive time in the high bits) so pages walk it in
    //   time order; `body` is the encoded `RouteEvent` with the collector's fields set. Prefixes are
    //   stored as (afi, net, len) with `net` the masked network in 4 (IPv4) or 16 (IPv6) big-endian
    //   bytes, so that "inside this prefix" is a byte range and "covering this address" is at most
    //   33 or 129 exact (net, len) probes. Session events have afi 0 and an empty net.
    // - `routes` holds each listener peer's current Adj-RIB-In: one row per (agent, peer, family,
    //   prefix, path id; -1 without ADD-PATH). `peer` is a stable key naming the source too (a BMP
    //   view of a peer is another table than a direct session with it); `peer_addr` is the BGP
    //   peer's address alone, for filters.
    r#"
    CREATE TABLE route_events (
        key INTEGER PRIMARY KEY,
        org TEXT NOT NULL,
        team TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        type INTEGER NOT NULL,
        peer TEXT NOT NULL,
        peer_addr TEXT NOT NULL,
        afi INTEGER NOT NULL,
        net BLOB NOT NULL,
        len INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX route_events_prefix ON route_events (org, afi, net, len, key);

    CREATE TABLE routes (
        agent_id TEXT NOT NULL,
        peer TEXT NOT NULL,
        afi INTEGER NOT NULL,
        net BLOB NOT NULL,
        len INTEGER NOT NULL,
        path_id INTEGER NOT NULL,
        peer_addr TEXT NOT NULL,
        org TEXT NOT NULL,
        team TEXT NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (agent_id, peer, afi, net, len, path_id)
    ) WITHOUT ROWID;
    CREATE INDEX routes_prefix ON routes (org, afi, net, len);
    "#,
    // v5: correlations (route-change incidents and what they did to tests). Keyed by the incident's
    // opening time like results; `final` is 0 while the verdict is pending. `correlation_tests`
    // indexes them by the tests they touched.
    r#"
    CREATE TABLE correlations (
        key INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        org TEXT NOT NULL,
        team TEXT NOT NULL,
        final INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX correlations_org ON correlations (org, team, key);
    CREATE INDEX correlations_pending ON correlations (final) WHERE final = 0;
    CREATE TABLE correlation_tests (
        test_id TEXT NOT NULL,
        corr_key INTEGER NOT NULL,
        PRIMARY KEY (test_id, corr_key)
    ) WITHOUT ROWID;
    "#,
    // v6: the alert engine. Rules and silences are small tables read whole per tenant; alerts are
    // keyed by start time like results (pages walk them in time order), with `state` and the ack
    // columns beside the body (acks are the user's, the body the engine's). `alerts_active` holds
    // only pending and firing rows, which is what the engine reloads. Notifier secrets are sealed
    // with the collector's key-encryption key before they reach the store.
    r#"
    CREATE TABLE alert_rules (
        id TEXT PRIMARY KEY,
        org TEXT NOT NULL,
        team TEXT NOT NULL,
        name TEXT NOT NULL,
        file_managed INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE UNIQUE INDEX alert_rules_name ON alert_rules (org, name);
    CREATE TABLE alerts (
        key INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        org TEXT NOT NULL,
        team TEXT NOT NULL,
        rule_id TEXT NOT NULL,
        subject TEXT NOT NULL,
        state INTEGER NOT NULL,
        acked_ms INTEGER,
        acked_by TEXT,
        updated_ms INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX alerts_org ON alerts (org, team, key);
    CREATE INDEX alerts_active ON alerts (state) WHERE state IN (1, 2);
    CREATE TABLE alert_transitions (
        key INTEGER PRIMARY KEY,
        alert_id TEXT NOT NULL,
        org TEXT NOT NULL,
        team TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX alert_transitions_alert ON alert_transitions (alert_id, key);
    CREATE TABLE silences (
        id TEXT PRIMARY KEY,
        org TEXT NOT NULL,
        team TEXT NOT NULL,
        expires_ms INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX silences_org ON silences (org, expires_ms);
    CREATE TABLE notifiers (
        org TEXT NOT NULL,
        name TEXT NOT NULL,
        team TEXT NOT NULL,
        file_managed INTEGER NOT NULL,
        body BLOB NOT NULL,
        sealed_secrets BLOB,
        PRIMARY KEY (org, name)
    ) WITHOUT ROWID;
    "#,
    // v7: correlations by prefix (`CorrelationFilter::prefix`): every prefix a record names, as
    // (afi, masked network bytes, length) like routes, so "covering" is a few exact probes and
    // "within" a byte range on the primary key. Records saved before v7 are not listed here until
    // they are saved again.
    r#"
    CREATE TABLE correlation_prefixes (
        afi INTEGER NOT NULL,
        net BLOB NOT NULL,
        len INTEGER NOT NULL,
        corr_key INTEGER NOT NULL,
        PRIMARY KEY (afi, net, len, corr_key)
    ) WITHOUT ROWID;
    CREATE INDEX correlation_prefixes_corr ON correlation_prefixes (corr_key);
    "#,
    // Resync snapshots being received from listeners (see resync.rs): one row per (agent, peer,
    // family) with a snapshot begun, and its routes so far (`attrs` an encoded RouteAttributes).
    r#"
    CREATE TABLE route_resyncs (
        agent_id TEXT NOT NULL,
        peer TEXT NOT NULL,
        afi INTEGER NOT NULL,
        begin_seq INTEGER NOT NULL,
        staged INTEGER NOT NULL,
        PRIMARY KEY (agent_id, peer, afi)
    ) WITHOUT ROWID;
    CREATE TABLE route_resync_routes (
        agent_id TEXT NOT NULL,
        peer TEXT NOT NULL,
        afi INTEGER NOT NULL,
        net BLOB NOT NULL,
        len INTEGER NOT NULL,
        path_id INTEGER NOT NULL,
        prefix TEXT NOT NULL,
        attrs BLOB NOT NULL,
        PRIMARY KEY (agent_id, peer, afi, net, len, path_id)
    ) WITHOUT ROWID;
    "#,
    // Correlations on the live stream's resume (`StreamCursor::corr_key`): every save gives the
    // record a new change sequence, larger than any before (a time-based key like the others, so
    // deleting the newest record never lets a sequence repeat). Records saved before this step
    // keep 0 and are not replayed.
    r#"
    ALTER TABLE correlations ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX correlations_seq ON correlations (seq);
    "#,
];

/// The version a database has after [`migrate`].
pub(crate) const CURRENT_VERSION: usize = MIGRATIONS.len();

/// Applies the missing steps up to `target`. Refuses a database newer than this code: running old
/// code on a newer schema could silently drop what the new columns mean.
pub(crate) fn migrate_to(conn: &mut Connection, target: usize) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let have: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let have = usize::try_from(have)
        .map_err(|_| StoreError::Schema(format!("negative user_version {have}")))?;
    if have > MIGRATIONS.len() {
        return Err(StoreError::Schema(format!(
            "database is at version {have}, this collector knows up to {}: upgrade the collector",
            MIGRATIONS.len()
        )));
    }
    if have >= target {
        return Ok(());
    }
    for (i, step) in MIGRATIONS.iter().enumerate().take(target).skip(have) {
        tx.execute_batch(step)
            .map_err(|e| StoreError::Schema(format!("migration to version {}: {e}", i + 1)))?;
        tracing::info!(version = i + 1, "database schema migrated");
    }
    // PRAGMA takes no bound parameters; `target` is our own integer.
    tx.execute_batch(&format!("PRAGMA user_version = {target}"))?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{ResultFilter, Scope, SqliteStore, Store, SystemScope, Tenant};
    use rusqlite::params;

    #[test]
    fn a_v1_database_upgrades_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let mut conn = Connection::open(&path).unwrap();
            migrate_to(&mut conn, 1).unwrap();
            let v: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, 1);
            conn.execute_batch(
                "INSERT INTO orgs (name, created_at_ms, assignment_version) VALUES ('acme', 1, 7);
                 INSERT INTO teams (org, name, created_at_ms) VALUES ('acme', 'noc', 1);
                 INSERT INTO agents (id, org, team, kind, hostname, version, created_at_ms, last_seq)
                     VALUES ('n-1', 'acme', 'noc', 1, 'h', 'v', 1, 3);",
            )
            .unwrap();
            // 2500 results over three tests (more than one v3 posting's worth for t-1), in key order
            // t-1, t-2, t-1, t-3, ...; t-3 is not in the tests table (deleted, or never there).
            let tx = conn.transaction().unwrap();
            for i in 0..2500i64 {
                let test = ["t-1", "t-2", "t-1", "t-3"][(i % 4) as usize];
                let r = foureyes_proto::v1::ProbeResult {
                    seq: i as u64 + 1,
                    test_id: test.into(),
                    agent_id: "n-1".into(),
                    latency_ms: i as f64,
                    ..Default::default()
                };
                tx.execute(
                    "INSERT INTO results (key, org, team, agent_id, test_id, seq, status, latency_ms,
                         loss, sent_ms, received_ms, body)
                     VALUES (?1, 'acme', 'noc', 'n-1', ?2, ?3, 1, ?4, 0, NULL, ?5, ?6)",
                    params![
                        ((5 + i) << 20) + 7,
                        test,
                        i + 1,
                        i as f64,
                        5 + i,
                        prost::Message::encode_to_vec(&r)
                    ],
                )
                .unwrap();
            }
            tx.commit().unwrap();
            // v2's objects are not there yet.
            let n: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name IN ('batches', 'batches_agent')",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(n, 0);
        }

        let store = SqliteStore::open(&path).unwrap();
        let sys = SystemScope::collector_internal();
        assert_eq!(store.schema_version().unwrap(), CURRENT_VERSION);
        const { assert!(CURRENT_VERSION >= 3) };
        assert!(store.team_exists(&sys, "acme", "noc").unwrap());
        let a = store
            .get_agent(&Scope::System(sys.clone()), "n-1")
            .unwrap()
            .unwrap();
        assert_eq!(a.last_seq, 3);
        let scope = Scope::Tenant(Tenant {
            org: "acme".into(),
            team: Some("noc".into()),
        });
        let page = store
            .results(&scope, &ResultFilter::default(), None, 10_000)
            .unwrap();
        assert_eq!(page.results.len(), 2500);
        assert_eq!(page.results[1].latency_ms, 1.0);
        assert_eq!(page.results[1].test_id, "t-2");
        // Per-test reads after v3: every row of the test, in key order, paged and time-bounded.
        let by_test = |test: &str, from_ms, to_ms| {
            let filter = ResultFilter {
                test_id: Some(test.into()),
                from_ms,
                to_ms,
                ..Default::default()
            };
            let mut seqs = Vec::new();
            let mut after = None;
            loop {
                let p = store.results(&scope, &filter, after, 300).unwrap();
                assert!(p.results.iter().all(|r| r.test_id == test));
                seqs.extend(p.results.iter().map(|r| r.seq));
                after = p.next;
                if after.is_none() {
                    break seqs;
                }
            }
        };
        let want = |rem: &[u64], lo: u64, hi: u64| -> Vec<u64> {
            (lo..hi)
                .filter(|i| rem.contains(&(i % 4)))
                .map(|i| i + 1)
                .collect()
        };
        assert_eq!(by_test("t-1", None, None), want(&[0, 2], 0, 2500));
        assert_eq!(by_test("t-2", None, None), want(&[1], 0, 2500));
        assert_eq!(by_test("t-3", None, None), want(&[3], 0, 2500));
        // received_ms = 5 + i: [1005, 2105) is i in [1000, 2100).
        assert_eq!(
            by_test("t-1", Some(1005), Some(2105)),
            want(&[0, 2], 1000, 2100)
        );
        assert!(by_test("t-9", None, None).is_empty());
        assert_eq!(store.tests_for_agent(&sys, "n-1").unwrap().0, 7);
        let objects = store.schema_objects().unwrap();
        for want in ["batches", "batches_agent", "test_keys", "results_by_test"] {
            assert!(
                objects.iter().any(|o| o == want),
                "{want} missing: {objects:?}"
            );
        }
        assert!(
            !objects
                .iter()
                .any(|o| o == "results_test" || o == "results_v3")
        );
        drop(store);
        // Reopening a current database is a no-op.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), CURRENT_VERSION);
    }

    /// The per-test read (see `SqliteStore::results`) seeks one test's postings by primary key and
    /// fetches each row by key: no scan, no sort.
    #[test]
    fn results_by_test_use_the_postings_in_key_order() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, CURRENT_VERSION).unwrap();
        let plan = |sql: &str, n: usize| {
            let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let args = vec!["1"; n];
            let plan: Vec<String> = st
                .query_map(rusqlite::params_from_iter(args), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            plan.join(" | ")
        };
        let p = plan(
            "SELECT keys FROM results_by_test WHERE test_key = ?1 AND last_key > ?2
             ORDER BY last_key",
            2,
        );
        assert!(
            p.contains("USING PRIMARY KEY (test_key=? AND last_key>?)"),
            "{p}"
        );
        assert!(!p.contains("TEMP B-TREE"), "{p}");
        let p = plan(
            "SELECT key, agent_id, seq, received_ms, body FROM results
             WHERE key = ? AND org = ? AND team = ? AND agent_id = ?",
            4,
        );
        assert!(p.contains("USING INTEGER PRIMARY KEY (rowid=?)"), "{p}");
        let p = plan("SELECT key FROM test_keys WHERE test_id = ?1", 1);
        assert!(p.contains("USING COVERING INDEX"), "{p}");
    }

    #[test]
    fn a_newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.sqlite");
        {
            let mut conn = Connection::open(&path).unwrap();
            migrate_to(&mut conn, CURRENT_VERSION).unwrap();
            conn.execute_batch(&format!("PRAGMA user_version = {}", CURRENT_VERSION + 1))
                .unwrap();
        }
        let e = SqliteStore::open(&path).err().unwrap().to_string();
        assert!(e.contains("upgrade the collector"), "{e}");
    }
}
