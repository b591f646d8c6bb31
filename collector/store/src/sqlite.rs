//! The SQLite implementation of [`Store`].
//!
//! Connections: one writer behind a mutex (SQLite has one writer at a time anyway; taking the lock
//! in-process is cheaper than spinning on `SQLITE_BUSY`), plus a small pool of reader connections
//! that WAL lets run next to the writer. Other processes (the admin CLI) use their own connections;
//! `busy_timeout` covers them.
//!
//! Durability: WAL with `synchronous=FULL`. A commit is acknowledged to the agent, which then
//! deletes the records from its spool, so a commit must survive a power loss, not only a killed
//! process (NORMAL would only promise the latter). Flushes are batched, so this costs one WAL
//! fsync per flush, not per result.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::Duration,
};

use foureyes_proto::v1::{self as pb, record};
use prost::Message;
use rusqlite::{
    Connection, OptionalExtension, Row, TransactionBehavior, params, params_from_iter, types::Value,
};

use crate::{
    AgentKey, AgentRow, ApiTokenRow, BatchOutcome, CorrelationFilter, CorrelationPage, IngestBatch,
    IpPrefix, MAX_GAPS, MAX_ROUTES, NewAgent, PrefixMatch, RedeemError, ResultCursor, ResultFilter,
    ResultPage, RouteEventFilter, RouteEventPage, RouteQuery, Scope, Store, StoreError,
    StreamCursor, StreamItem, StreamPage, StreamRow, SystemScope, Tenant, TokenBinding, now_ms,
    routes, schema, validate_name,
};

mod alerts;
mod peers;

/// Readers kept open between calls; more are opened on demand under load and closed afterwards.
const IDLE_READERS: usize = 4;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest page a caller can ask for, so one request cannot pull the whole table into memory.
const MAX_PAGE: usize = 10_000;
/// Bits of the results key below the millisecond: up to 2^20 rows per millisecond before the key
/// runs ahead of the clock (it stays unique and ordered either way).
const KEY_SHIFT: u32 = 20;
const MAX_KEY_MS: i64 = i64::MAX >> KEY_SHIFT;

/// Test keys the writer remembers (see `SqliteStore::test_keys`); past this the cache starts over,
/// so results naming ever new test ids cannot grow it without bound.
const TEST_KEY_CACHE: usize = 65_536;

/// WAL pages after which a committing writer checkpoints inline (about 200 MiB).
const WAL_BACKSTOP_PAGES: i64 = 50_000;
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Checkpoints the WAL from its own thread and connection. SQLite's default autocheckpoint runs
/// inside the commit that crosses 1000 pages, including its fsyncs: with 10k-row ingest flushes
/// that is nearly every flush, and the agents' acks would wait for the disk. A PASSIVE checkpoint
/// never blocks the writer or readers.
struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self, StoreError> {
        let conn = open_conn(path)?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("foureyes-checkpoint".into())
            .spawn(move || {
                let (lock_, cv) = &*signal;
                let mut stopped = lock(lock_);
                while !*stopped {
                    stopped = cv
                        .wait_timeout(stopped, CHECKPOINT_EVERY)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                    if *stopped {
                        break;
                    }
                    if let Err(e) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
                    {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                }
            });
        if let Err(e) = spawned {
            // Not fatal: the writer's autocheckpoint backstop keeps the WAL bounded.
            tracing::warn!(error = %e, "cannot start the WAL checkpointer thread");
        }
        Ok(Self { stop })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (l, cv) = &*self.stop;
        *lock(l) = true;
        cv.notify_all();
    }
}

/// Env var naming a failpoint; see [`SqliteStore::open`].
pub const FAILPOINT_ENV: &str = "FOUREYES_FAILPOINT";
const FAILPOINT_FLUSH: &str = "flush-mid-transaction";

pub struct SqliteStore {
    path: PathBuf,
    _checkpointer: Checkpointer,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Committed `test_keys` rows (test id → key), so ingest resolves a test id without a query.
    /// Only committed rows go in, and a row never changes once written, so an entry stays true
    /// even when another process writes to the database.
    test_keys: Mutex<HashMap<String, i64>>,
    /// Set from `FOUREYES_FAILPOINT=flush-mid-transaction` at open: the first flush that wrote rows
    /// aborts the process before committing. Exists only for the kill -9 durability tests.
    abort_mid_flush: bool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a connection leaves it usable: an open transaction rolls back on drop.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // 32 MiB page cache: the results indexes stay hot during ingest.
    conn.pragma_update(None, "cache_size", -32_000)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, switches it to WAL and migrates it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut writer = open_conn(&path)?;
        let mode: String =
            writer.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Schema(format!(
                "{}: cannot switch to WAL (journal_mode is {mode})",
                path.display()
            )));
        }
        schema::migrate_to(&mut writer, schema::CURRENT_VERSION)?;
        let abort_mid_flush = std::env::var(FAILPOINT_ENV).is_ok_and(|v| v == FAILPOINT_FLUSH);
        if abort_mid_flush {
            tracing::warn!("failpoint {FAILPOINT_FLUSH} armed: the first flush aborts the process");
        }
        // The writer checkpoints only as a backstop (the WAL would otherwise grow without bound if
        // the background thread stalled); normally the checkpointer keeps the WAL short.
        writer.pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES)?;
        let _checkpointer = Checkpointer::start(&path)?;
        Ok(Self {
            path,
            _checkpointer,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            test_keys: Mutex::new(HashMap::new()),
            abort_mid_flush,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `PRAGMA user_version`: how many migration steps the database has applied.
    pub fn schema_version(&self) -> Result<usize, StoreError> {
        self.read(|c| {
            let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            Ok(usize::try_from(v).unwrap_or(0))
        })
    }

    #[cfg(test)]
    pub(crate) fn schema_objects(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare("SELECT name FROM sqlite_master ORDER BY name")?;
            let v = st
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(v)
        })
    }

    fn write<T, E>(&self, f: impl FnOnce(&mut Connection) -> Result<T, E>) -> Result<T, E> {
        let mut conn = lock(&self.writer);
        f(&mut conn)
    }

    fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let pooled = lock(&self.readers).pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_conn(&self.path)?,
        };
        let out = f(&conn);
        let mut idle = lock(&self.readers);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        out
    }
}

/// A `WHERE` clause built from a scope and filters, with its positional parameters.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    params: Vec<Value>,
}

impl Where {
    /// The one place a scope becomes SQL. See the crate docs for the rule.
    fn scope(mut self, scope: &Scope, prefix: &str) -> Self {
        if let Scope::Tenant(t) = scope {
            self.clauses.push(format!("{prefix}org = ?"));
            self.params.push(Value::Text(t.org.clone()));
            if let Some(team) = &t.team {
                self.clauses.push(format!("{prefix}team = ?"));
                self.params.push(Value::Text(team.clone()));
            }
        }
        self
    }

    fn and(mut self, clause: &str, v: impl Into<Value>) -> Self {
        self.clauses.push(clause.to_string());
        self.params.push(v.into());
        self
    }

    fn and_many(mut self, clause: String, vs: Vec<Value>) -> Self {
        self.clauses.push(format!("({clause})"));
        self.params.extend(vs);
        self
    }

    /// The clauses as a continuation of a `WHERE` the caller started.
    fn and_sql(&self) -> String {
        self.clauses.iter().map(|c| format!(" AND {c}")).collect()
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
}

fn tenant_of<'a>(scope: &'a Scope, what: &str) -> Result<&'a Tenant, StoreError> {
    scope
        .tenant()
        .ok_or_else(|| StoreError::Invalid(format!("{what} needs a tenant scope (org and team)")))
}

fn team_opt(team: String) -> Option<String> {
    (!team.is_empty()).then_some(team)
}

fn random_id(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 8]>()))
}

fn kind_from_i32(v: i32) -> pb::AgentKind {
    pb::AgentKind::try_from(v).unwrap_or(pb::AgentKind::Unspecified)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn key_floor(ms: i64) -> i64 {
    ms.clamp(0, MAX_KEY_MS) << KEY_SHIFT
}

/// The next results key: the receive time's slot, or one past the last key if that is later (many
/// rows in one millisecond, or the clock stepped back). Keys never repeat, so cursors stay valid.
fn next_key(last: i64, received_ms: i64) -> i64 {
    key_floor(received_ms).max(last.saturating_add(1))
}

/// The key of `test_id` in `test_keys`, adding it if new. `committed` is the writer's cache, `fresh`
/// collects keys first seen in the current transaction (they enter the cache after commit).
fn test_key_tx(
    tx: &Connection,
    committed: &HashMap<String, i64>,
    fresh: &mut HashMap<String, i64>,
    test_id: &str,
) -> Result<i64, StoreError> {
    if let Some(k) = committed.get(test_id).or_else(|| fresh.get(test_id)) {
        return Ok(*k);
    }
    tx.prepare_cached(
        "INSERT INTO test_keys (test_id) VALUES (?1) ON CONFLICT (test_id) DO NOTHING",
    )?
    .execute([test_id])?;
    let k: i64 = tx
        .prepare_cached("SELECT key FROM test_keys WHERE test_id = ?1")?
        .query_row([test_id], |r| r.get(0))?;
    fresh.insert(test_id.to_string(), k);
    Ok(k)
}

/// Bytes per key in a `results_by_test` posting (big-endian, ascending; see schema v3).
const POSTING_KEY_BYTES: usize = 8;

fn posting_keys(blob: &[u8]) -> Result<impl Iterator<Item = i64> + '_, StoreError> {
    if !blob.len().is_multiple_of(POSTING_KEY_BYTES) {
        return Err(StoreError::Schema(format!(
            "results_by_test posting of {} bytes is not a list of {POSTING_KEY_BYTES}-byte keys",
            blob.len()
        )));
    }
    Ok(blob.chunks_exact(POSTING_KEY_BYTES).map(|c| {
        let mut b = [0u8; POSTING_KEY_BYTES];
        b.copy_from_slice(c);
        i64::from_be_bytes(b)
    }))
}

/// What the collector sets in every stored result of one batch, `received_at` (20) and `agent_id`
/// (21), encoded once per batch for [`encode_stored_result`].
fn collector_fields(agent_id: &str, received_at: &foureyes_proto::Timestamp) -> Vec<u8> {
    let mut buf = Vec::with_capacity(agent_id.len() + 16);
    prost::encoding::message::encode(20, received_at, &mut buf);
    prost::encoding::encode_key(21, prost::encoding::WireType::LengthDelimited, &mut buf);
    prost::encoding::encode_varint(agent_id.len() as u64, &mut buf);
    buf.extend_from_slice(agent_id.as_bytes());
    buf
}

/// The stored body of a result: the agent's result with the collector's `seq`, `received_at` and
/// `agent_id`. Appends those fields after the agent's encoding instead of cloning the result and
/// setting them (the clone was the flush's hottest allocation): a protobuf decoder keeps the last
/// value of a scalar or string field, so the collector's values win. A message field would merge
/// instead, so a result that claims a `received_at` of its own is re-encoded from a copy.
fn encode_stored_result(
    r: &pb::ProbeResult,
    seq: u64,
    agent_id: &str,
    received_at: &foureyes_proto::Timestamp,
    collector_fields: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let encoded = if r.received_at.is_some() {
        let mut r = r.clone();
        r.agent_id = agent_id.to_string();
        r.received_at = Some(*received_at);
        r.seq = seq;
        r.encode(buf)
    } else {
        r.encode(buf).map(|()| {
            prost::encoding::uint64::encode(1, &seq, buf);
            buf.extend_from_slice(collector_fields);
        })
    };
    encoded.map_err(|e| StoreError::Invalid(format!("encode: {e}")))
}

fn org_exists_tx(c: &Connection, org: &str) -> Result<bool, StoreError> {
    Ok(c.prepare_cached("SELECT 1 FROM orgs WHERE name = ?1")?
        .exists([org])?)
}

fn team_exists_tx(c: &Connection, org: &str, team: &str) -> Result<bool, StoreError> {
    Ok(
        c.prepare_cached("SELECT 1 FROM teams WHERE org = ?1 AND name = ?2")?
            .exists([org, team])?,
    )
}

/// Fails unless the org (and the team, when non-empty) exists.
fn ensure_tenant(c: &Connection, org: &str, team: &str) -> Result<(), StoreError> {
    if !org_exists_tx(c, org)? {
        return Err(StoreError::NotFound(format!("org {org:?}")));
    }
    if !team.is_empty() && !team_exists_tx(c, org, team)? {
        return Err(StoreError::NotFound(format!(
            "team {team:?} in org {org:?}"
        )));
    }
    Ok(())
}

fn bump_assignment_version(c: &Connection, org: &str) -> Result<(), StoreError> {
    let n = c
        .prepare_cached(
            "UPDATE orgs SET assignment_version = assignment_version + 1 WHERE name = ?1",
        )?
        .execute([org])?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("org {org:?}")));
    }
    Ok(())
}

const API_TOKEN_COLS: &str = "id, org, team, name, created_at_ms, revoked_at_ms IS NOT NULL";

fn api_token_row(r: &Row<'_>) -> rusqlite::Result<ApiTokenRow> {
    Ok(ApiTokenRow {
        id: r.get(0)?,
        org: r.get(1)?,
        team: team_opt(r.get(2)?),
        name: r.get(3)?,
        created_at_ms: r.get(4)?,
        revoked: r.get(5)?,
    })
}

const AGENT_COLS: &str = "a.id, a.org, a.team, a.kind, a.hostname, a.version, a.created_at_ms, \
    a.last_seen_ms, (SELECT max(k.cert_not_after_ms) FROM agent_keys k WHERE k.agent_id = a.id), \
    a.revoked_at_ms IS NOT NULL, a.clock_offset_ms, a.last_seq";

fn agent_row(r: &Row<'_>) -> rusqlite::Result<AgentRow> {
    Ok(AgentRow {
        id: r.get(0)?,
        org: r.get(1)?,
        team: team_opt(r.get(2)?),
        kind: kind_from_i32(r.get(3)?),
        hostname: r.get(4)?,
        version: r.get(5)?,
        created_at_ms: r.get(6)?,
        last_seen_ms: r.get(7)?,
        cert_not_after_ms: r.get(8)?,
        revoked: r.get(9)?,
        clock_offset_ms: r.get(10)?,
        last_seq: u64::try_from(r.get::<_, i64>(11)?).unwrap_or(0),
    })
}

fn key_id_of(v: Vec<u8>) -> Option<[u8; 32]> {
    <[u8; 32]>::try_from(v.as_slice()).ok()
}

fn decode_test(body: &[u8]) -> Result<pb::Test, StoreError> {
    Ok(pb::Test::decode(body)?)
}

fn insert_or_replace_test(
    c: &Connection,
    org: &str,
    test: &pb::Test,
    insert: bool,
) -> Result<(), StoreError> {
    let body = test.encode_to_vec();
    let sql = if insert {
        "INSERT INTO tests (id, org, team, updated_at_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)"
    } else {
        "UPDATE tests SET team = ?3, updated_at_ms = ?4, body = ?5 WHERE id = ?1 AND org = ?2"
    };
    c.prepare_cached(sql)?
        .execute(params![test.id, org, test.team, now_ms(), body])?;
    Ok(())
}

/// Columns [`raw_result`] reads.
const RESULT_COLS: &str = "key, agent_id, seq, received_ms, body";

/// A results row as read: key, agent id, seq, received ms, encoded body.
type RawResult = (i64, String, i64, i64, Vec<u8>);

fn raw_result(r: &Row<'_>) -> rusqlite::Result<RawResult> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

/// The prefixes a correlation is found by: the changed prefixes, and each touched test's
/// covering prefix (a session loss changes no prefix of its own). Unparseable ones are skipped:
/// the record itself keeps them.
fn correlation_prefixes(c: &pb::Correlation) -> Vec<IpPrefix> {
    let mut v: Vec<IpPrefix> = c
        .prefixes
        .iter()
        .chain(c.tests.iter().map(|t| &t.prefix))
        .filter_map(|p| IpPrefix::parse(p).ok())
        .collect();
    v.sort_by_key(|p| (p.afi(), p.net(), p.len));
    v.dedup();
    v
}

/// One page of `(key, body)` rows of `table` in key order, decoded: the messages, the last key
/// returned, and whether more rows follow.
fn key_body_page<M: Message + Default>(
    c: &Connection,
    table: &str,
    w: &Where,
    limit: usize,
) -> Result<(Vec<M>, Option<i64>, bool), StoreError> {
    let sql = format!(
        "SELECT key, body FROM {table}{} ORDER BY key LIMIT {}",
        w.sql(),
        limit + 1
    );
    let mut st = c.prepare_cached(&sql)?;
    let rows = st
        .query_map(params_from_iter(&w.params), |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let more = rows.len() > limit;
    let mut out = Vec::with_capacity(rows.len().min(limit));
    let mut last = None;
    for (key, body) in rows.into_iter().take(limit) {
        out.push(M::decode(body.as_slice())?);
        last = Some(key);
    }
    Ok((out, last, more))
}

/// Up to `limit + 1` rows in key order become a page of `limit` with a cursor when more follow.
fn result_page(rows: Vec<RawResult>, limit: usize) -> Result<ResultPage, StoreError> {
    let mut page = ResultPage::default();
    let more = rows.len() > limit;
    let mut last_key = None;
    for (key, agent_id, seq, received_ms, body) in rows.into_iter().take(limit) {
        let mut res = pb::ProbeResult::decode(body.as_slice())?;
        // The columns are the collector's truth; the body already agrees, this keeps it so.
        res.agent_id = agent_id;
        res.seq = u64::try_from(seq).unwrap_or(0);
        res.received_at = Some(foureyes_proto::timestamp_from_ms(received_ms));
        page.results.push(res);
        last_key = Some(key);
    }
    if more {
        page.next = last_key.map(ResultCursor);
    }
    Ok(page)
}

impl Store for SqliteStore {
    fn create_org(&self, _sys: &SystemScope, org: &str) -> Result<(), StoreError> {
        validate_name("org", org)?;
        self.write(|c| {
            let n = c.execute(
                "INSERT INTO orgs (name, created_at_ms) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![org, now_ms()],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("org {org:?}")));
            }
            tracing::info!(org, "org created");
            Ok(())
        })
    }

    fn create_team(&self, _sys: &SystemScope, org: &str, team: &str) -> Result<(), StoreError> {
        validate_name("team", team)?;
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !org_exists_tx(&tx, org)? {
                return Err(StoreError::NotFound(format!("org {org:?}")));
            }
            let n = tx.execute(
                "INSERT INTO teams (org, name, created_at_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![org, team, now_ms()],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("team {team:?} in org {org:?}")));
            }
            tx.commit()?;
            tracing::info!(org, team, "team created");
            Ok(())
        })
    }

    fn org_exists(&self, _sys: &SystemScope, org: &str) -> Result<bool, StoreError> {
        self.read(|c| org_exists_tx(c, org))
    }

    fn team_exists(&self, _sys: &SystemScope, org: &str, team: &str) -> Result<bool, StoreError> {
        self.read(|c| team_exists_tx(c, org, team))
    }

    fn list_orgs(&self, _sys: &SystemScope) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT name FROM orgs ORDER BY name")?;
            let v = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            Ok(v)
        })
    }

    fn list_teams(&self, _sys: &SystemScope, org: &str) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT name FROM teams WHERE org = ?1 ORDER BY name")?;
            let v = st
                .query_map([org], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            Ok(v)
        })
    }

    fn create_api_token(
        &self,
        scope: &Scope,
        name: &str,
        token_hash: &str,
    ) -> Result<ApiTokenRow, StoreError> {
        let t = tenant_of(scope, "creating an API token")?;
        if name.is_empty() || name.chars().count() > 64 {
            return Err(StoreError::Invalid(
                "API token name: 1 to 64 characters".into(),
            ));
        }
        let team = t.team.clone().unwrap_or_default();
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            ensure_tenant(&tx, &t.org, &team)?;
            let row = ApiTokenRow {
                id: random_id("tok-"),
                org: t.org.clone(),
                team: t.team.clone(),
                name: name.to_string(),
                created_at_ms: now_ms(),
                revoked: false,
            };
            tx.execute(
                "INSERT INTO api_tokens (id, org, team, name, token_hash, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    row.id,
                    row.org,
                    team,
                    row.name,
                    token_hash,
                    row.created_at_ms
                ],
            )?;
            tx.commit()?;
            tracing::info!(id = %row.id, org = %row.org, name, "API token created");
            Ok(row)
        })
    }

    fn find_api_token_by_hash(
        &self,
        _sys: &SystemScope,
        token_hash: &str,
    ) -> Result<Option<ApiTokenRow>, StoreError> {
        self.read(|c| {
            let sql = format!("SELECT {API_TOKEN_COLS} FROM api_tokens WHERE token_hash = ?1");
            Ok(c.prepare_cached(&sql)?
                .query_row([token_hash], api_token_row)
                .optional()?)
        })
    }

    fn list_api_tokens(&self, scope: &Scope) -> Result<Vec<ApiTokenRow>, StoreError> {
        let w = Where::default().scope(scope, "");
        self.read(|c| {
            let sql = format!(
                "SELECT {API_TOKEN_COLS} FROM api_tokens{} ORDER BY created_at_ms, id",
                w.sql()
            );
            let mut st = c.prepare_cached(&sql)?;
            let v = st
                .query_map(params_from_iter(&w.params), api_token_row)?
                .collect::<Result<_, _>>()?;
            Ok(v)
        })
    }

    fn revoke_api_token(&self, scope: &Scope, id: &str) -> Result<bool, StoreError> {
        let w = Where::default()
            .and("id = ?", id.to_string())
            .scope(scope, "");
        self.write(|c| {
            let sql = format!(
                "UPDATE api_tokens SET revoked_at_ms = coalesce(revoked_at_ms, {}){}",
                now_ms(),
                w.sql()
            );
            let n = c.execute(&sql, params_from_iter(&w.params))?;
            if n > 0 {
                tracing::info!(id, "API token revoked");
            }
            Ok(n > 0)
        })
    }

    fn revoke_api_tokens_named(&self, scope: &Scope, name: &str) -> Result<usize, StoreError> {
        let w = Where::default()
            .and("name = ?", name.to_string())
            .scope(scope, "");
        self.write(|c| {
            let sql = format!(
                "UPDATE api_tokens SET revoked_at_ms = {}{} AND revoked_at_ms IS NULL",
                now_ms(),
                w.sql()
            );
            Ok(c.execute(&sql, params_from_iter(&w.params))?)
        })
    }

    fn create_enrollment_token(
        &self,
        scope: &Scope,
        token_hash: &str,
        kind: pb::AgentKind,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let t = tenant_of(scope, "creating an enrollment token")?;
        let team = t.team.clone().unwrap_or_default();
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            ensure_tenant(&tx, &t.org, &team)?;
            tx.execute(
                "INSERT INTO enrollment_tokens (token_hash, org, team, kind, created_at_ms, expires_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![token_hash, t.org, team, kind as i32, now_ms(), expires_at_ms],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn redeem_enrollment_token(
        &self,
        _sys: &SystemScope,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<TokenBinding, RedeemError> {
        self.write(|c| {
            // The whole decision is this one statement: SQLite runs it under the write lock, so of
            // any number of concurrent redemptions exactly one sees `used_at_ms IS NULL`.
            let won = c
                .prepare_cached(
                    "UPDATE enrollment_tokens SET used_at_ms = ?2
                     WHERE token_hash = ?1 AND used_at_ms IS NULL AND expires_at_ms > ?2
                     RETURNING org, team, kind",
                )?
                .query_row(params![token_hash, now_ms], |r| {
                    Ok(TokenBinding {
                        org: r.get(0)?,
                        team: team_opt(r.get(1)?),
                        kind: kind_from_i32(r.get(2)?),
                    })
                })
                .optional()?;
            if let Some(b) = won {
                return Ok(b);
            }
            // Only to say why: the token stays unusable whatever this read sees.
            let state = c
                .prepare_cached(
                    "SELECT used_at_ms IS NOT NULL FROM enrollment_tokens WHERE token_hash = ?1",
                )?
                .query_row([token_hash], |r| r.get::<_, bool>(0))
                .optional()?;
            Err(match state {
                None => RedeemError::Unknown,
                Some(true) => RedeemError::AlreadyUsed,
                Some(false) => RedeemError::Expired,
            })
        })
    }

    fn create_agent(&self, _sys: &SystemScope, a: NewAgent) -> Result<(), StoreError> {
        self.write(|c| {
            let n = c.execute(
                "INSERT INTO agents (id, org, team, kind, hostname, version, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                params![
                    a.id,
                    a.org,
                    a.team.clone().unwrap_or_default(),
                    a.kind as i32,
                    a.hostname,
                    a.version,
                    a.created_at_ms
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("agent {:?}", a.id)));
            }
            Ok(())
        })
    }

    fn add_agent_key(
        &self,
        _sys: &SystemScope,
        agent_id: &str,
        key_id: [u8; 32],
        public_key: Vec<u8>,
        cert_serial: Vec<u8>,
        cert_not_after_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let agent_revoked: Option<Option<i64>> = tx
                .query_row(
                    "SELECT revoked_at_ms FROM agents WHERE id = ?1",
                    [agent_id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(agent_revoked) = agent_revoked else {
                return Err(StoreError::NotFound(format!("agent {agent_id:?}")));
            };
            let owner: Option<String> = tx
                .query_row(
                    "SELECT agent_id FROM agent_keys WHERE key_id = ?1",
                    [key_id.as_slice()],
                    |r| r.get(0),
                )
                .optional()?;
            match owner {
                Some(o) if o != agent_id => {
                    return Err(StoreError::Conflict(format!(
                        "key {} (held by another agent)",
                        hex::encode(key_id)
                    )));
                }
                Some(_) => {
                    tx.execute(
                        "UPDATE agent_keys SET cert_serial = ?2, cert_not_after_ms = ?3 WHERE key_id = ?1",
                        params![key_id.as_slice(), cert_serial, cert_not_after_ms],
                    )?;
                }
                None => {
                    // A key added to a revoked agent is born revoked.
                    tx.execute(
                        "INSERT INTO agent_keys (key_id, agent_id, public_key, cert_serial,
                             cert_not_after_ms, added_at_ms, revoked_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![
                            key_id.as_slice(),
                            agent_id,
                            public_key,
                            cert_serial,
                            cert_not_after_ms,
                            now_ms(),
                            agent_revoked
                        ],
                    )?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn agent_keys(&self, _sys: &SystemScope, agent_id: &str) -> Result<Vec<AgentKey>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT key_id, public_key, cert_serial, cert_not_after_ms, added_at_ms,
                        revoked_at_ms IS NOT NULL
                 FROM agent_keys WHERE agent_id = ?1 ORDER BY added_at_ms, rowid",
            )?;
            let rows = st.query_map([agent_id], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    AgentKey {
                        key_id: [0; 32],
                        public_key: r.get(1)?,
                        cert_serial: r.get(2)?,
                        cert_not_after_ms: r.get(3)?,
                        added_at_ms: r.get(4)?,
                        revoked: r.get(5)?,
                    },
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (kid, mut key) = row?;
                if let Some(kid) = key_id_of(kid) {
                    key.key_id = kid;
                    out.push(key);
                }
            }
            Ok(out)
        })
    }

    fn key_owner(
        &self,
        _sys: &SystemScope,
        key_id: &[u8; 32],
    ) -> Result<Option<(String, bool)>, StoreError> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT k.agent_id, k.revoked_at_ms IS NOT NULL OR a.revoked_at_ms IS NOT NULL
                 FROM agent_keys k LEFT JOIN agents a ON a.id = k.agent_id WHERE k.key_id = ?1",
            )?
            .query_row([key_id.as_slice()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
        })
    }

    fn revoked_key_ids(&self, _sys: &SystemScope) -> Result<Vec<[u8; 32]>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT k.key_id FROM agent_keys k LEFT JOIN agents a ON a.id = k.agent_id
                 WHERE k.revoked_at_ms IS NOT NULL OR a.revoked_at_ms IS NOT NULL",
            )?;
            let v = st
                .query_map([], |r| r.get::<_, Vec<u8>>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(v.into_iter().filter_map(key_id_of).collect())
        })
    }

    fn revoked_agent_ids(&self, _sys: &SystemScope) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id FROM agents WHERE revoked_at_ms IS NOT NULL ORDER BY id",
            )?;
            let v = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            Ok(v)
        })
    }

    fn get_agent(&self, scope: &Scope, id: &str) -> Result<Option<AgentRow>, StoreError> {
        let w = Where::default()
            .and("a.id = ?", id.to_string())
            .scope(scope, "a.");
        self.read(|c| {
            let sql = format!("SELECT {AGENT_COLS} FROM agents a{}", w.sql());
            Ok(c.prepare_cached(&sql)?
                .query_row(params_from_iter(&w.params), agent_row)
                .optional()?)
        })
    }

    fn list_agents(&self, scope: &Scope) -> Result<Vec<AgentRow>, StoreError> {
        let w = Where::default().scope(scope, "a.");
        self.read(|c| {
            let sql = format!("SELECT {AGENT_COLS} FROM agents a{} ORDER BY a.id", w.sql());
            let mut st = c.prepare_cached(&sql)?;
            let v = st
                .query_map(params_from_iter(&w.params), agent_row)?
                .collect::<Result<_, _>>()?;
            Ok(v)
        })
    }

    fn revoke_agent(&self, scope: &Scope, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let w = Where::default()
            .and("id = ?", id.to_string())
            .scope(scope, "");
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let sql = format!(
                "UPDATE agents SET revoked_at_ms = coalesce(revoked_at_ms, {now_ms}){}",
                w.sql()
            );
            if tx.execute(&sql, params_from_iter(&w.params))? == 0 {
                return Ok(false);
            }
            tx.execute(
                "UPDATE agent_keys SET revoked_at_ms = coalesce(revoked_at_ms, ?2) WHERE agent_id = ?1",
                params![id, now_ms],
            )?;
            tx.commit()?;
            tracing::info!(agent = id, "agent and its keys revoked in the store");
            Ok(true)
        })
    }

    fn record_hello(
        &self,
        _sys: &SystemScope,
        agent_id: &str,
        hostname: &str,
        version: &str,
        clock_offset_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(|c| {
            let n = c
                .prepare_cached(
                    "UPDATE agents SET hostname = ?2, version = ?3, clock_offset_ms = ?4,
                         last_seen_ms = ?5 WHERE id = ?1",
                )?
                .execute(params![
                    agent_id,
                    hostname,
                    version,
                    clock_offset_ms,
                    now_ms
                ])?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("agent {agent_id:?}")));
            }
            Ok(())
        })
    }

    fn touch_agent(
        &self,
        _sys: &SystemScope,
        agent_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(|c| {
            c.prepare_cached(
                "UPDATE agents SET last_seen_ms = max(coalesce(last_seen_ms, 0), ?2) WHERE id = ?1",
            )?
            .execute(params![agent_id, now_ms])?;
            Ok(())
        })
    }

    fn create_test(&self, scope: &Scope, mut test: pb::Test) -> Result<pb::Test, StoreError> {
        let t = tenant_of(scope, "creating a test")?;
        test.team = match &t.team {
            Some(team) => team.clone(),
            None => test.team,
        };
        test.id = random_id("t-");
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            ensure_tenant(&tx, &t.org, &test.team)?;
            insert_or_replace_test(&tx, &t.org, &test, true)?;
            bump_assignment_version(&tx, &t.org)?;
            tx.commit()?;
            Ok(test)
        })
    }

    fn update_test(
        &self,
        scope: &Scope,
        mut test: pb::Test,
    ) -> Result<Option<pb::Test>, StoreError> {
        let w = Where::default()
            .and("id = ?", test.id.clone())
            .scope(scope, "");
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let sql = format!("SELECT org FROM tests{}", w.sql());
            let Some(org) = tx
                .query_row(&sql, params_from_iter(&w.params), |r| r.get::<_, String>(0))
                .optional()?
            else {
                return Ok(None);
            };
            if let Some(Tenant {
                team: Some(team), ..
            }) = scope.tenant()
            {
                test.team = team.clone();
            }
            ensure_tenant(&tx, &org, &test.team)?;
            insert_or_replace_test(&tx, &org, &test, false)?;
            bump_assignment_version(&tx, &org)?;
            tx.commit()?;
            Ok(Some(test))
        })
    }

    fn delete_test(&self, scope: &Scope, id: &str) -> Result<bool, StoreError> {
        let w = Where::default()
            .and("id = ?", id.to_string())
            .scope(scope, "");
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let sql = format!("DELETE FROM tests{} RETURNING org", w.sql());
            let Some(org) = tx
                .query_row(&sql, params_from_iter(&w.params), |r| r.get::<_, String>(0))
                .optional()?
            else {
                return Ok(false);
            };
            bump_assignment_version(&tx, &org)?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn get_test(&self, scope: &Scope, id: &str) -> Result<Option<pb::Test>, StoreError> {
        let w = Where::default()
            .and("id = ?", id.to_string())
            .scope(scope, "");
        self.read(|c| {
            let sql = format!("SELECT body FROM tests{}", w.sql());
            let body: Option<Vec<u8>> = c
                .prepare_cached(&sql)?
                .query_row(params_from_iter(&w.params), |r| r.get(0))
                .optional()?;
            body.map(|b| decode_test(&b)).transpose()
        })
    }

    fn list_tests(
        &self,
        scope: &Scope,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<pb::Test>, StoreError> {
        let mut w = Where::default().scope(scope, "");
        if let Some(after) = after_id {
            w = w.and("id > ?", after.to_string());
        }
        let limit = limit.clamp(1, MAX_PAGE) as i64;
        self.read(|c| {
            let sql = format!(
                "SELECT body FROM tests{} ORDER BY id LIMIT {limit}",
                w.sql()
            );
            let mut st = c.prepare_cached(&sql)?;
            let bodies = st
                .query_map(params_from_iter(&w.params), |r| r.get::<_, Vec<u8>>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            bodies.iter().map(|b| decode_test(b)).collect()
        })
    }

    fn tests_for_agent(
        &self,
        _sys: &SystemScope,
        agent_id: &str,
    ) -> Result<(u64, Vec<pb::Test>), StoreError> {
        self.read(|c| {
            // One snapshot for the version and the tests, so a version never labels another set.
            let tx = c.unchecked_transaction()?;
            let Some((org, team, kind, version)) = tx
                .query_row(
                    "SELECT a.org, a.team, a.kind, coalesce(o.assignment_version, 0)
                     FROM agents a LEFT JOIN orgs o ON o.name = a.org WHERE a.id = ?1",
                    [agent_id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i32>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    },
                )
                .optional()?
            else {
                return Err(StoreError::NotFound(format!("agent {agent_id:?}")));
            };
            let version = u64::try_from(version).unwrap_or(0);
            if kind_from_i32(kind) != pb::AgentKind::Node {
                return Ok((version, Vec::new()));
            }
            let mut st = tx.prepare_cached(
                "SELECT body FROM tests WHERE org = ?1 AND (team = '' OR team = ?2) ORDER BY id",
            )?;
            let bodies = st
                .query_map([&org, &team], |r| r.get::<_, Vec<u8>>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            let mut tests = Vec::new();
            for b in bodies {
                let t = decode_test(&b)?;
                if t.agent_ids.is_empty() || t.agent_ids.iter().any(|a| a == agent_id) {
                    tests.push(t);
                }
            }
            Ok((version, tests))
        })
    }

    fn results(
        &self,
        scope: &Scope,
        filter: &ResultFilter,
        after: Option<ResultCursor>,
        limit: usize,
    ) -> Result<ResultPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut w = Where::default().scope(scope, "");
        if let Some(a) = &filter.agent_id {
            w = w.and("agent_id = ?", a.clone());
        }
        let Some(test_id) = &filter.test_id else {
            if let Some(f) = filter.from_ms {
                w = w.and("key >= ?", key_floor(f));
            }
            if let Some(t) = filter.to_ms {
                w = w.and("key < ?", key_floor(t));
            }
            if let Some(c) = after {
                w = w.and("key > ?", c.0);
            }
            return self.read(|c| {
                let sql = format!(
                    "SELECT {RESULT_COLS} FROM results{} ORDER BY key LIMIT {}",
                    w.sql(),
                    limit + 1
                );
                let mut st = c.prepare_cached(&sql)?;
                let rows = st
                    .query_map(params_from_iter(&w.params), raw_result)?
                    .collect::<Result<Vec<_>, _>>()?;
                result_page(rows, limit)
            });
        };
        // One test: walk its postings (schema v3) in key order and fetch each row by key, with the
        // scope and agent filters applied to the row. Keys are exclusive bounds: lo < key < hi.
        let lo = filter
            .from_ms
            .map(|f| key_floor(f) - 1)
            .into_iter()
            .chain(after.map(|c| c.0))
            .fold(-1, i64::max);
        let hi = filter.to_ms.map(key_floor).unwrap_or(i64::MAX);
        self.read(|c| {
            // One snapshot for the postings and the rows they name.
            let tx = c.unchecked_transaction()?;
            let Some(test_key) = tx
                .prepare_cached("SELECT key FROM test_keys WHERE test_id = ?1")?
                .query_row([test_id], |r| r.get::<_, i64>(0))
                .optional()?
            else {
                return Ok(ResultPage::default());
            };
            let mut postings = tx.prepare_cached(
                "SELECT keys FROM results_by_test WHERE test_key = ?1 AND last_key > ?2
                 ORDER BY last_key",
            )?;
            let mut by_key = tx.prepare_cached(&format!(
                "SELECT {RESULT_COLS} FROM results WHERE key = ?{}",
                w.and_sql()
            ))?;
            // Bindings outlive each execution: the filters are bound once, the key per row.
            for (i, v) in w.params.iter().enumerate() {
                by_key.raw_bind_parameter(i + 2, v)?;
            }
            let mut rows = Vec::new();
            let mut ps = postings.query(params![test_key, lo])?;
            'postings: while let Some(p) = ps.next()? {
                let blob = p
                    .get_ref(0)?
                    .as_blob()
                    .map_err(|e| StoreError::Schema(format!("results_by_test keys: {e}")))?;
                for key in posting_keys(blob)? {
                    if key <= lo {
                        continue;
                    }
                    if key >= hi {
                        break 'postings;
                    }
                    by_key.raw_bind_parameter(1, key)?;
                    let row = by_key.raw_query().next()?.map(raw_result).transpose()?;
                    if let Some(row) = row {
                        rows.push(row);
                        if rows.len() > limit {
                            break 'postings;
                        }
                    }
                }
            }
            drop(ps);
            result_page(rows, limit)
        })
    }

    fn gaps(&self, scope: &Scope, filter: &ResultFilter) -> Result<Vec<pb::Gap>, StoreError> {
        let mut w = Where::default().scope(scope, "");
        if let Some(a) = &filter.agent_id {
            w = w.and("agent_id = ?", a.clone());
        }
        if let Some(f) = filter.from_ms {
            w = w.and("received_ms >= ?", f);
        }
        if let Some(t) = filter.to_ms {
            w = w.and("received_ms < ?", t);
        }
        self.read(|c| {
            let sql = format!(
                "SELECT agent_id, first_seq, last_seq, count, reason, received_ms FROM gaps{}
                 ORDER BY id LIMIT {MAX_GAPS}",
                w.sql()
            );
            let mut st = c.prepare_cached(&sql)?;
            let v = st
                .query_map(params_from_iter(&w.params), |r| {
                    Ok(pb::Gap {
                        agent_id: r.get(0)?,
                        first_seq: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                        last_seq: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                        count: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                        reason: r.get(4)?,
                        received_at: Some(foureyes_proto::timestamp_from_ms(r.get(5)?)),
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(v)
        })
    }

    fn route_events(
        &self,
        scope: &Scope,
        filter: &RouteEventFilter,
        after: Option<ResultCursor>,
        limit: usize,
    ) -> Result<RouteEventPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut w = Where::default().scope(scope, "");
        if let Some(a) = &filter.agent_id {
            w = w.and("agent_id = ?", a.clone());
        }
        if let Some(p) = &filter.peer {
            w = w.and("peer_addr = ?", p.to_string());
        }
        if !filter.types.is_empty() {
            let marks = vec!["?"; filter.types.len()].join(", ");
            w = w.and_many(
                format!("type IN ({marks})"),
                filter
                    .types
                    .iter()
                    .map(|t| Value::Integer(*t as i64))
                    .collect(),
            );
        }
        if let Some((p, how)) = &filter.prefix {
            let (sql, params) = routes::prefix_condition(p, *how);
            w = w.and_many(sql, params);
        }
        if let Some(f) = filter.from_ms {
            w = w.and("key >= ?", key_floor(f));
        }
        if let Some(t) = filter.to_ms {
            w = w.and("key < ?", key_floor(t));
        }
        if let Some(c) = after {
            w = w.and("key > ?", c.0);
        }
        self.read(|c| {
            let (events, last, more) = key_body_page(c, "route_events", &w, limit)?;
            let last = last.map(ResultCursor);
            let page = RouteEventPage {
                events,
                next: if more { last } else { None },
                last,
            };
            Ok(page)
        })
    }

    fn routes(&self, scope: &Scope, q: &RouteQuery) -> Result<Vec<pb::Route>, StoreError> {
        let mut w = Where::default().scope(scope, "");
        if let Some(a) = &q.agent_id {
            w = w.and("agent_id = ?", a.clone());
        }
        if let Some(p) = &q.peer {
            w = w.and("peer_addr = ?", p.to_string());
        }
        let (sql, params) = routes::prefix_condition(&q.prefix, q.how);
        w = w.and_many(sql, params);
        let rows = self.read(|c| {
            let sql = format!(
                "SELECT agent_id, peer, len, body FROM routes{}
                 ORDER BY afi, net, len, agent_id, peer, path_id LIMIT {MAX_ROUTES}",
                w.sql()
            );
            let mut st = c.prepare_cached(&sql)?;
            let rows = st
                .query_map(params_from_iter(&w.params), |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, StoreError>(rows)
        })?;
        // Longest match is per listener peer: each peer has its own table, and a NOC wants to see
        // what every one of them would use for the address.
        let keep_len: Option<HashMap<(String, String), i64>> = (q.how == PrefixMatch::Longest)
            .then(|| {
                let mut m: HashMap<(String, String), i64> = HashMap::new();
                for (agent, peer, len, _) in &rows {
                    let e = m.entry((agent.clone(), peer.clone())).or_insert(*len);
                    *e = (*e).max(*len);
                }
                m
            });
        let mut out = Vec::new();
        for (agent, peer, len, body) in rows {
            if let Some(m) = &keep_len
                && m.get(&(agent, peer)) != Some(&len)
            {
                continue;
            }
            out.push(pb::Route::decode(body.as_slice())?);
        }
        Ok(out)
    }

    fn peers(&self, scope: &Scope) -> Result<Vec<pb::PeerState>, StoreError> {
        self.peer_states(scope)
    }

    fn save_correlation(
        &self,
        _sys: &SystemScope,
        c: &pb::Correlation,
        decided: bool,
    ) -> Result<(), StoreError> {
        let body = c.encode_to_vec();
        let opened = c
            .opened_at
            .as_ref()
            .map(foureyes_proto::timestamp_ms)
            .unwrap_or_else(now_ms);
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // The change sequence the live stream resumes by: inside the write transaction, so
            // sequences grow in commit order.
            let last_seq: i64 =
                tx.query_row("SELECT coalesce(max(seq), 0) FROM correlations", [], |r| {
                    r.get(0)
                })?;
            let seq = next_key(last_seq, now_ms());
            let existing: Option<i64> = tx
                .query_row("SELECT key FROM correlations WHERE id = ?1", [&c.id], |r| {
                    r.get(0)
                })
                .optional()?;
            let key = match existing {
                Some(k) => {
                    tx.execute(
                        "UPDATE correlations SET final = ?2, updated_ms = ?3, body = ?4, seq = ?5
                         WHERE key = ?1",
                        params![k, decided, now_ms(), body, seq],
                    )?;
                    tx.execute("DELETE FROM correlation_tests WHERE corr_key = ?1", [k])?;
                    tx.execute("DELETE FROM correlation_prefixes WHERE corr_key = ?1", [k])?;
                    k
                }
                None => {
                    let last: i64 =
                        tx.query_row("SELECT coalesce(max(key), 0) FROM correlations", [], |r| {
                            r.get(0)
                        })?;
                    let k = next_key(last, opened);
                    tx.execute(
                        "INSERT INTO correlations (key, id, org, team, final, updated_ms, body, seq)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        params![k, c.id, c.org, c.team, decided, now_ms(), body, seq],
                    )?;
                    k
                }
            };
            for t in &c.tests {
                tx.execute(
                    "INSERT OR IGNORE INTO correlation_tests (test_id, corr_key) VALUES (?1, ?2)",
                    params![t.test_id, key],
                )?;
            }
            for p in correlation_prefixes(c) {
                tx.execute(
                    "INSERT OR IGNORE INTO correlation_prefixes (afi, net, len, corr_key)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![p.afi(), p.net(), i64::from(p.len), key],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn correlations(
        &self,
        scope: &Scope,
        filter: &CorrelationFilter,
        after: Option<ResultCursor>,
        limit: usize,
    ) -> Result<CorrelationPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut w = Where::default().scope(scope, "");
        if let Some(t) = &filter.test_id {
            w = w.and(
                "key IN (SELECT corr_key FROM correlation_tests WHERE test_id = ?)",
                t.clone(),
            );
        }
        if filter.pending_only {
            w = w.and("final = ?", 0);
        }
        if let Some((p, how)) = &filter.prefix {
            let how = match how {
                PrefixMatch::Longest => PrefixMatch::Covering,
                h => *h,
            };
            let (sql, params) = routes::prefix_condition(p, how);
            w = w.and_many(
                format!("key IN (SELECT corr_key FROM correlation_prefixes WHERE {sql})"),
                params,
            );
        }
        if let Some(f) = filter.from_ms {
            w = w.and("key >= ?", key_floor(f));
        }
        if let Some(t) = filter.to_ms {
            w = w.and("key < ?", key_floor(t));
        }
        if let Some(c) = after {
            w = w.and("key > ?", c.0);
        }
        self.read(|c| {
            let (correlations, last, more) = key_body_page(c, "correlations", &w, limit)?;
            let page = CorrelationPage {
                correlations,
                next: if more { last.map(ResultCursor) } else { None },
            };
            Ok(page)
        })
    }

    fn get_correlation(
        &self,
        scope: &Scope,
        id: &str,
    ) -> Result<Option<pb::Correlation>, StoreError> {
        let w = Where::default()
            .scope(scope, "")
            .and("id = ?", id.to_string());
        self.read(|c| {
            let body: Option<Vec<u8>> = c
                .prepare_cached(&format!("SELECT body FROM correlations{}", w.sql()))?
                .query_row(params_from_iter(&w.params), |r| r.get(0))
                .optional()?;
            Ok(body
                .map(|b| pb::Correlation::decode(b.as_slice()))
                .transpose()?)
        })
    }

    fn stream_rows(
        &self,
        scope: &Scope,
        after: StreamCursor,
        limit: usize,
    ) -> Result<StreamPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let w = Where::default().scope(scope, "");
        let params = |key: i64| {
            let mut p = w.params.clone();
            p.push(Value::Integer(key));
            p
        };
        self.read(|c| {
            // One snapshot for both tables.
            let tx = c.unchecked_transaction()?;
            let mut page = StreamPage {
                last: after,
                ..Default::default()
            };
            // (table, key column, the cursor's key for it)
            let tables = [
                ("results", "key", after.result_key),
                ("route_events", "key", after.event_key),
                ("correlations", "seq", after.corr_key),
                ("alert_transitions", "key", after.alert_key),
            ];
            for (table, col, from) in tables {
                let sql = format!(
                    "SELECT {col}, org, team, body FROM {table} WHERE {col} > ?{} ORDER BY {col} LIMIT {}",
                    w.and_sql(),
                    limit + 1
                );
                // The key is bound first: the scope's parameters follow it.
                let mut p = params(from);
                p.rotate_right(1);
                let mut st = tx.prepare_cached(&sql)?;
                let rows = st
                    .query_map(params_from_iter(&p), |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, Vec<u8>>(3)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                page.more |= rows.len() > limit;
                for (key, org, team, body) in rows.into_iter().take(limit) {
                    let b = body.as_slice();
                    let item = match table {
                        "results" => StreamItem::Result(Box::new(pb::ProbeResult::decode(b)?)),
                        "route_events" => StreamItem::RouteEvent(Box::new(pb::RouteEvent::decode(b)?)),
                        "correlations" => StreamItem::Correlation(Box::new(pb::Correlation::decode(b)?)),
                        _ => StreamItem::Alert(Box::new(pb::AlertTransition::decode(b)?)),
                    };
                    let row = StreamRow {
                        key,
                        org,
                        team,
                        item,
                    };
                    page.last.advance(&row);
                    page.rows.push(row);
                }
            }
            Ok(page)
        })
    }

    fn stream_head(&self, _sys: &SystemScope) -> Result<StreamCursor, StoreError> {
        self.read(|c| {
            let tx = c.unchecked_transaction()?;
            let max = |table: &str| -> Result<i64, StoreError> {
                Ok(tx.query_row(
                    &format!("SELECT coalesce(max(key), 0) FROM {table}"),
                    [],
                    |r| r.get(0),
                )?)
            };
            let max_seq: i64 =
                tx.query_row("SELECT coalesce(max(seq), 0) FROM correlations", [], |r| {
                    r.get(0)
                })?;
            Ok(StreamCursor {
                result_key: max("results")?,
                event_key: max("route_events")?,
                corr_key: max_seq,
                alert_key: max("alert_transitions")?,
            })
        })
    }

    fn write_batches(
        &self,
        _sys: &SystemScope,
        batches: &[IngestBatch],
    ) -> Result<Vec<BatchOutcome>, StoreError> {
        self.write(|c| {
            // Taken under the writer lock, so never contended.
            let mut test_keys = lock(&self.test_keys);
            let mut fresh_test_keys = HashMap::new();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut out = Vec::with_capacity(batches.len());
            let mut written = 0u64;
            {
                // test key -> this flush's keys of that test, as a results_by_test posting.
                let mut postings: BTreeMap<i64, (i64, Vec<u8>)> = BTreeMap::new();
                // Read inside the transaction: another process may have written since our last flush.
                let mut last_key: i64 =
                    tx.query_row("SELECT coalesce(max(key), 0) FROM results", [], |r| r.get(0))?;
                let mut last_event_key: i64 = tx.query_row(
                    "SELECT coalesce(max(key), 0) FROM route_events",
                    [],
                    |r| r.get(0),
                )?;
                let mut get_wm = tx.prepare_cached("SELECT last_seq FROM agents WHERE id = ?1")?;
                let mut ins_result = tx.prepare_cached(
                    "INSERT INTO results (key, org, team, agent_id, test_key, seq, status, latency_ms,
                         loss, sent_ms, received_ms, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?;
                let mut ins_gap = tx.prepare_cached(
                    "INSERT INTO gaps (org, team, agent_id, seq, first_seq, last_seq, count, reason,
                         received_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                let mut ins_batch = tx.prepare_cached(
                    "INSERT INTO batches (agent_id, key_id, first_seq, last_seq, received_ms, body,
                         signature)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                let mut set_wm = tx.prepare_cached(
                    "UPDATE agents SET last_seq = ?2,
                         last_seen_ms = max(coalesce(last_seen_ms, 0), ?3) WHERE id = ?1",
                )?;
                let mut buf = Vec::with_capacity(512);
                for b in batches {
                    let Some(start) = get_wm
                        .query_row([&b.agent_id], |r| r.get::<_, i64>(0))
                        .optional()?
                    else {
                        tracing::warn!(agent = %b.agent_id, "batch from an agent the store does not know");
                        out.push(BatchOutcome::UnknownAgent);
                        continue;
                    };
                    let start = u64::try_from(start).unwrap_or(0);
                    let received_ms = b.received_ms.clamp(0, MAX_KEY_MS);
                    let received_at = foureyes_proto::timestamp_from_ms(received_ms);
                    let collector = collector_fields(&b.agent_id, &received_at);
                    let (mut wm, mut rows, mut duplicates) = (start, 0u64, 0u64);
                    // Bindings outlive each execution: the batch's columns are bound once, not
                    // per result (binding a text copies it).
                    ins_result.raw_bind_parameter(2, &b.org)?;
                    ins_result.raw_bind_parameter(3, &b.team)?;
                    ins_result.raw_bind_parameter(4, &b.agent_id)?;
                    ins_result.raw_bind_parameter(11, received_ms)?;
                    // The link checks that records ascend; comparing with the running watermark
                    // keeps a record from being stored twice even if they did not.
                    for rec in &b.records {
                        if rec.seq <= wm {
                            duplicates += 1;
                            continue;
                        }
                        if rec.seq > i64::MAX as u64 {
                            tracing::warn!(agent = %b.agent_id, seq = rec.seq, "sequence number out of range, record dropped");
                            duplicates += 1;
                            continue;
                        }
                        let seq = rec.seq as i64;
                        match &rec.kind {
                            Some(record::Kind::Result(r)) => {
                                buf.clear();
                                encode_stored_result(
                                    r,
                                    rec.seq,
                                    &b.agent_id,
                                    &received_at,
                                    &collector,
                                    &mut buf,
                                )?;
                                last_key = next_key(last_key, received_ms);
                                let test_key =
                                    test_key_tx(&tx, &test_keys, &mut fresh_test_keys, &r.test_id)?;
                                let posting = postings.entry(test_key).or_default();
                                posting.0 = last_key;
                                posting.1.extend_from_slice(&last_key.to_be_bytes());
                                // ?2, ?3, ?4 and ?11 are the batch's, bound above.
                                ins_result.raw_bind_parameter(1, last_key)?;
                                ins_result.raw_bind_parameter(5, test_key)?;
                                ins_result.raw_bind_parameter(6, seq)?;
                                ins_result.raw_bind_parameter(7, r.status)?;
                                ins_result.raw_bind_parameter(8, r.latency_ms)?;
                                ins_result.raw_bind_parameter(9, r.loss)?;
                                ins_result.raw_bind_parameter(
                                    10,
                                    r.sent_at.as_ref().map(foureyes_proto::timestamp_ms),
                                )?;
                                ins_result.raw_bind_parameter(12, &buf)?;
                                ins_result.raw_execute()?;
                                rows += 1;
                            }
                            Some(record::Kind::Gap(g)) => {
                                ins_gap.execute(params![
                                    b.org,
                                    b.team,
                                    b.agent_id,
                                    seq,
                                    to_i64(g.first_seq),
                                    to_i64(g.last_seq),
                                    to_i64(g.count),
                                    g.reason,
                                    received_ms
                                ])?;
                                rows += 1;
                            }
                            Some(record::Kind::RouteEvent(ev)) => {
                                let mut ev = ev.clone();
                                ev.agent_id = b.agent_id.clone();
                                ev.seq = rec.seq;
                                ev.received_at = Some(received_at);
                                if crate::resync::is_resync(ev.r#type) {
                                    rows += crate::resync::write(
                                        &tx,
                                        &mut last_event_key,
                                        |last| next_key(last, received_ms),
                                        &b.org,
                                        &b.team,
                                        &b.agent_id,
                                        seq,
                                        received_ms,
                                        &mut ev,
                                        &mut buf,
                                    )?;
                                    wm = rec.seq;
                                    continue;
                                }
                                last_event_key = next_key(last_event_key, received_ms);
                                if routes::write_event(
                                    &tx,
                                    last_event_key,
                                    &b.org,
                                    &b.team,
                                    &b.agent_id,
                                    seq,
                                    received_ms,
                                    &ev,
                                    &mut buf,
                                )? {
                                    rows += 1;
                                }
                            }
                            // Nothing to keep, but the sequence number is spent all the same.
                            None => {}
                        }
                        wm = rec.seq;
                    }
                    if wm > start {
                        let first = b.records.iter().map(|r| r.seq).min().unwrap_or(0);
                        let last = b.records.iter().map(|r| r.seq).max().unwrap_or(0);
                        ins_batch.execute(params![
                            b.agent_id,
                            b.key_id,
                            to_i64(first),
                            to_i64(last),
                            received_ms,
                            b.body,
                            b.signature
                        ])?;
                    }
                    // Also for pure replays: a resend is a sign of life.
                    set_wm.execute(params![b.agent_id, wm as i64, received_ms])?;
                    written += rows;
                    out.push(BatchOutcome::Stored {
                        watermark: wm,
                        rows,
                        duplicates,
                    });
                }
                let mut ins_posting = tx.prepare_cached(
                    "INSERT INTO results_by_test (test_key, last_key, keys) VALUES (?1, ?2, ?3)",
                )?;
                for (test_key, (last, keys)) in &postings {
                    ins_posting.execute(params![test_key, last, keys])?;
                }
            }
            if self.abort_mid_flush && written > 0 {
                tracing::error!(rows = written, "failpoint {FAILPOINT_FLUSH}: aborting before commit");
                std::process::abort();
            }
            tx.commit()?;
            if test_keys.len() + fresh_test_keys.len() > TEST_KEY_CACHE {
                test_keys.clear();
            }
            test_keys.extend(fresh_test_keys);
            Ok(out)
        })
    }
}
