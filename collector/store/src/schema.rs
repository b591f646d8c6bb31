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
            let r = foureyes_proto::v1::ProbeResult {
                seq: 3,
                test_id: "t-1".into(),
                agent_id: "n-1".into(),
                latency_ms: 1.5,
                ..Default::default()
            };
            conn.execute(
                "INSERT INTO results (key, org, team, agent_id, test_id, seq, status, latency_ms, loss,
                     sent_ms, received_ms, body)
                 VALUES (?1, 'acme', 'noc', 'n-1', 't-1', 3, 1, 1.5, 0, NULL, 5, ?2)",
                params![5i64 << 20, prost::Message::encode_to_vec(&r)],
            )
            .unwrap();
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
        const { assert!(CURRENT_VERSION >= 2) };
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
            .results(&scope, &ResultFilter::default(), None, 10)
            .unwrap();
        assert_eq!(page.results.len(), 1);
        assert_eq!(page.results[0].latency_ms, 1.5);
        assert_eq!(store.tests_for_agent(&sys, "n-1").unwrap().0, 7);
        let objects = store.schema_objects().unwrap();
        for want in ["batches", "batches_agent", "results_test"] {
            assert!(
                objects.iter().any(|o| o == want),
                "{want} missing: {objects:?}"
            );
        }
        drop(store);
        // Reopening a current database is a no-op.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), CURRENT_VERSION);
    }

    /// The per-test query the API and correlator run walks the index in key order: no table scan,
    /// no sort, even though the index names only `test_id`.
    #[test]
    fn results_by_test_use_the_index_in_key_order() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, CURRENT_VERSION).unwrap();
        let mut st = conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT key, body FROM results
                 WHERE org = ?1 AND team = ?2 AND test_id = ?3 AND key >= ?4 AND key > ?5
                 ORDER BY key LIMIT 100",
            )
            .unwrap();
        let plan: Vec<String> = st
            .query_map(["a", "x", "t-1", "0", "0"], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join(" | ");
        assert!(plan.contains("USING INDEX results_test"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
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
