//! The collector's tenant-scoped store and its ingest pipeline.
//!
//! Every method takes a scope first, so the question "whose rows may this caller see?" is answered
//! in one place (the SQL the store builds from the scope), never by each caller remembering a
//! `WHERE org = ?`. Tenant scopes come from credentials; [`SystemScope`] is reserved for collector
//! internals and has no public constructor other than [`SystemScope::collector_internal`], so a grep
//! (the collector's tidy test) can prove the REST API never reaches for it.
//!
//! # Visibility rule
//! - `Scope::System` sees every row.
//! - `Scope::Tenant { org, team: None }` (org-wide) sees every row of `org`, whatever its team.
//! - `Scope::Tenant { org, team: Some(t) }` sees only rows whose team is exactly `t`. Rows with the
//!   empty team belong to the org as a whole (org-wide tests, org-wide agents and their results,
//!   org-wide API tokens) and are visible to org-wide scopes only: a team cannot read or edit what
//!   the org owns. A team's nodes still *run* org-wide tests (see [`Store::tests_for_agent`]), and
//!   those results carry the node's team, so the team sees its own measurements.
//!
//! The store is synchronous on purpose: SQLite calls block, and the callers decide where blocking
//! is acceptable (the ingest flusher runs on its own OS thread).

pub mod alerts;
pub mod ingest;
pub mod prefix;
mod resync;
mod resync_state;
mod routes;
mod schema;
mod sqlite;

use foureyes_proto::v1 as pb;

pub use alerts::{AlertFilter, AlertPage, AlertStore, NotifierRow};
pub use ingest::IngestBatch;
pub use prefix::IpPrefix;
pub use resync::RESYNC_REASON;
pub use resync_state::is_resync_reason;
pub use routes::peer_key;
pub use sqlite::{FAILPOINT_ENV, SqliteStore};

/// Who is asking. See the crate docs for the visibility rule.
#[derive(Clone, Debug)]
pub enum Scope {
    Tenant(Tenant),
    System(SystemScope),
}

impl Scope {
    /// The tenant of a tenant scope; `None` for the system scope.
    pub fn tenant(&self) -> Option<&Tenant> {
        match self {
            Scope::Tenant(t) => Some(t),
            Scope::System(_) => None,
        }
    }
}

/// An org, optionally narrowed to one team of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    pub org: String,
    pub team: Option<String>,
}

/// Proof that the caller is collector-internal code. Deliberately not constructible from a request.
#[derive(Clone, Debug)]
pub struct SystemScope {
    _private: (),
}

impl SystemScope {
    /// Only collector internals (ingest, enrollment, correlator, retention, operator CLI) call this;
    /// a tidy test checks the API module never does.
    pub fn collector_internal() -> Self {
        Self { _private: () }
    }
}

/// Errors of the store. Messages are meant for operators and API clients (no SQL in the
/// user-facing variants).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("invalid {what} name {name:?}: {rule}")]
    InvalidName {
        what: &'static str,
        name: String,
        rule: &'static str,
    },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("stored row does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("database schema: {0}")]
    Schema(String),
}

/// Why an enrollment token could not be redeemed. The three refusals are distinct so the agent's
/// operator learns whether to ask for a new token or fix a typo.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error("unknown enrollment token")]
    Unknown,
    #[error("enrollment token was already used")]
    AlreadyUsed,
    #[error("enrollment token has expired")]
    Expired,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for RedeemError {
    fn from(e: rusqlite::Error) -> Self {
        RedeemError::Store(e.into())
    }
}

/// The rule every org and team name follows: it ends up in certificates, URLs and log lines.
pub const NAME_RULE: &str = "1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit ([a-z0-9][a-z0-9-]{0,62})";

/// Checks an org or team name against [`NAME_RULE`].
pub fn validate_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            what,
            name: name.to_string(),
            rule: NAME_RULE,
        })
    }
}

/// An API token as stored: never the secret, only its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiTokenRow {
    pub id: String,
    pub org: String,
    pub team: Option<String>,
    pub name: String,
    pub created_at_ms: i64,
    pub revoked: bool,
}

/// What a redeemed enrollment token grants: the tenant and kind the new agent's certificate names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBinding {
    pub org: String,
    pub team: Option<String>,
    pub kind: pb::AgentKind,
}

#[derive(Clone, Debug)]
pub struct NewAgent {
    pub id: String,
    pub org: String,
    pub team: Option<String>,
    pub kind: pb::AgentKind,
    pub hostname: String,
    pub version: String,
    pub created_at_ms: i64,
}

/// One key an agent held. Kept forever so batches spooled under an earlier key still verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentKey {
    /// SHA-256 of the raw ed25519 public key.
    pub key_id: [u8; 32],
    pub public_key: Vec<u8>,
    pub cert_serial: Vec<u8>,
    pub cert_not_after_ms: i64,
    pub added_at_ms: i64,
    pub revoked: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AgentRow {
    pub id: String,
    pub org: String,
    pub team: Option<String>,
    pub kind: pb::AgentKind,
    pub hostname: String,
    pub version: String,
    pub created_at_ms: i64,
    pub last_seen_ms: Option<i64>,
    /// The latest certificate's expiry (the maximum over the agent's keys).
    pub cert_not_after_ms: Option<i64>,
    pub revoked: bool,
    /// Agent clock minus collector clock at the last hello.
    pub clock_offset_ms: i64,
    /// Highest sequence number stored for this agent: the ingest watermark.
    pub last_seq: u64,
}

/// Which results to read. Times are collector receive times in milliseconds since the epoch,
/// half-open: `from_ms <= received < to_ms`. Receive time (not the node's `sent_at`) because it is
/// the clock the collector controls and the one the results key is ordered by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResultFilter {
    pub test_id: Option<String>,
    pub agent_id: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

/// Position after the last result of a page. Opaque to clients; stable because result keys only
/// grow and are never reused, so rows arriving later always sort after every cursor handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResultCursor(pub(crate) i64);

impl ResultCursor {
    const PREFIX: &'static str = "r1.";

    pub fn encode(&self) -> String {
        format!("{}{:x}", Self::PREFIX, self.0)
    }

    /// `None` for anything this store did not hand out (a client may send garbage).
    pub fn decode(s: &str) -> Option<Self> {
        let hex = s.strip_prefix(Self::PREFIX)?;
        if hex.is_empty() || hex.len() > 16 {
            return None;
        }
        let v = u64::from_str_radix(hex, 16).ok()?;
        i64::try_from(v).ok().map(Self)
    }
}

/// One page of results, oldest first (ascending receive order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResultPage {
    pub results: Vec<pb::ProbeResult>,
    /// Set when more results may follow.
    pub next: Option<ResultCursor>,
}

/// How a prefix filter matches stored prefixes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PrefixMatch {
    /// The same prefix.
    #[default]
    Exact,
    /// Prefixes that contain the query (less-specifics and the prefix itself): what a packet to
    /// that address could be routed by.
    Covering,
    /// Per listener peer, the longest prefix containing the query: what that peer's route to the
    /// address is. Route queries only; for events it means `Covering`.
    Longest,
    /// Prefixes inside the query (more-specifics and the prefix itself).
    Within,
}

impl PrefixMatch {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "exact" => PrefixMatch::Exact,
            "covering" | "less-specific" => PrefixMatch::Covering,
            "longest" | "lpm" => PrefixMatch::Longest,
            "within" | "more-specific" | "covered" => PrefixMatch::Within,
            _ => return None,
        })
    }
}

/// Which route events to read. Times are collector receive times in ms, half-open.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteEventFilter {
    pub agent_id: Option<String>,
    /// The BGP peer's address.
    pub peer: Option<std::net::IpAddr>,
    pub prefix: Option<(IpPrefix, PrefixMatch)>,
    /// Empty: every type.
    pub types: Vec<pb::RouteEventType>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

/// Which current routes to read.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteQuery {
    pub prefix: IpPrefix,
    pub how: PrefixMatch,
    pub agent_id: Option<String>,
    pub peer: Option<std::net::IpAddr>,
}

/// One page of route events, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteEventPage {
    pub events: Vec<pb::RouteEvent>,
    /// Set when more events may follow.
    pub next: Option<ResultCursor>,
    /// The position after the last event of this page, also when no more follow yet: a follower
    /// (the correlator) resumes from it.
    pub last: Option<ResultCursor>,
}

/// Which correlations to read. Times are the incident's opening time (ms), half-open.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CorrelationFilter {
    pub test_id: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Only those whose verdict is still pending.
    pub pending_only: bool,
    /// Only incidents whose prefixes (the changed prefixes and, for a session loss, the
    /// announcements that routed the touched tests) match this one: `Exact` the same prefix,
    /// `Covering` (or `Longest`) a prefix containing it, `Within` a prefix inside it.
    pub prefix: Option<(IpPrefix, PrefixMatch)>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CorrelationPage {
    pub correlations: Vec<pb::Correlation>,
    pub next: Option<ResultCursor>,
}

/// A position in the live stream of rows (`/api/v1/stream`): the last key a reader has seen of
/// each kind (results, route events, correlation changes, alert transitions). Every key only grows
/// (see [`ResultCursor`]), so a reader that resumes from a cursor gets every later row exactly once.
///
/// A correlation's `corr_key` is its change sequence, not its id's key: each save (opened, grown,
/// verdict) gives the record a new, larger one, so a reader after a cursor sees each record whose
/// latest change it missed, once, in its newest state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamCursor {
    pub result_key: i64,
    pub event_key: i64,
    /// Negative when unknown (an `s1.` id from before correlations were resumable): a resume then
    /// starts correlations at the store's head.
    pub corr_key: i64,
    /// Negative when unknown, like `corr_key`.
    pub alert_key: i64,
}

impl StreamCursor {
    const PREFIX: &'static str = "s2.";
    const PREFIX_V1: &'static str = "s1.";

    /// The SSE event id: `s2.<results>.<route events>.<correlation changes>.<alert transitions>`,
    /// each key in hex.
    pub fn encode(&self) -> String {
        format!(
            "{}{:x}.{:x}.{:x}.{:x}",
            Self::PREFIX,
            self.result_key,
            self.event_key,
            self.corr_key.max(0),
            self.alert_key.max(0)
        )
    }

    /// `None` for anything this store did not hand out. An `s1.` id (results and route events
    /// only) decodes with the other two keys unknown (negative).
    pub fn decode(s: &str) -> Option<Self> {
        let hex = |h: &str| -> Option<i64> {
            if h.is_empty() || h.len() > 16 {
                return None;
            }
            i64::try_from(u64::from_str_radix(h, 16).ok()?).ok()
        };
        if let Some(rest) = s.strip_prefix(Self::PREFIX_V1) {
            let (r, e) = rest.split_once('.')?;
            return Some(Self {
                result_key: hex(r)?,
                event_key: hex(e)?,
                corr_key: -1,
                alert_key: -1,
            });
        }
        let mut parts = s.strip_prefix(Self::PREFIX)?.split('.');
        let mut next = || parts.next().and_then(hex);
        let c = Self {
            result_key: next()?,
            event_key: next()?,
            corr_key: next()?,
            alert_key: next()?,
        };
        parts.next().is_none().then_some(c)
    }

    /// The later of the two positions, kind by kind.
    pub fn max(self, o: Self) -> Self {
        Self {
            result_key: self.result_key.max(o.result_key),
            event_key: self.event_key.max(o.event_key),
            corr_key: self.corr_key.max(o.corr_key),
            alert_key: self.alert_key.max(o.alert_key),
        }
    }

    /// Whether every kind is at or past `o`'s position.
    pub fn covers(&self, o: &Self) -> bool {
        self.result_key >= o.result_key
            && self.event_key >= o.event_key
            && self.corr_key >= o.corr_key
            && self.alert_key >= o.alert_key
    }

    /// This cursor moved past `row`.
    pub fn advance(&mut self, row: &StreamRow) {
        let k = match row.item {
            StreamItem::Result(_) => &mut self.result_key,
            StreamItem::RouteEvent(_) => &mut self.event_key,
            StreamItem::Correlation(_) => &mut self.corr_key,
            StreamItem::Alert(_) => &mut self.alert_key,
        };
        *k = (*k).max(row.key);
    }

    /// Whether `row` is at or before this position (a reader at it has seen the row).
    pub fn has_seen(&self, row: &StreamRow) -> bool {
        row.key
            <= match row.item {
                StreamItem::Result(_) => self.result_key,
                StreamItem::RouteEvent(_) => self.event_key,
                StreamItem::Correlation(_) => self.corr_key,
                StreamItem::Alert(_) => self.alert_key,
            }
    }
}

/// A stored row as the stream sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamItem {
    // Both boxed: the messages are hundreds of bytes and of very different sizes.
    Result(Box<pb::ProbeResult>),
    RouteEvent(Box<pb::RouteEvent>),
    /// A correlation record as of one change (its key is the change sequence).
    Correlation(Box<pb::Correlation>),
    /// An alert transition (its key is the transition row's).
    Alert(Box<pb::AlertTransition>),
}

/// One row for the stream, with the tenant it belongs to (the stream filters by it).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamRow {
    /// The row's key in its table (results, route events, alert transitions), or a correlation's
    /// change sequence.
    pub key: i64,
    pub org: String,
    /// Empty for an org-wide agent's rows.
    pub team: String,
    pub item: StreamItem,
}

/// Rows after a [`StreamCursor`]: results, route events, correlation changes, then alert
/// transitions, each kind in key order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamPage {
    pub rows: Vec<StreamRow>,
    /// The cursor after the last row of each kind (unchanged where none came).
    pub last: StreamCursor,
    /// Set when either table had more rows than `limit`.
    pub more: bool,
}

/// What one signed batch did to the store in a flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchOutcome {
    Stored {
        /// The agent's watermark after this batch.
        watermark: u64,
        /// Results and gap records written.
        rows: u64,
        /// Records at or below the watermark (replays), skipped.
        duplicates: u64,
    },
    /// The agent is not in the store; nothing was written for this batch.
    UnknownAgent,
}

/// The store. Sync on purpose (see the crate docs); `Send + Sync` so one instance serves every task.
///
/// Methods taking `&SystemScope` are collector-internal; methods taking `&Scope` filter by it.
pub trait Store: Send + Sync + 'static {
    // --- orgs and teams ---
    fn create_org(&self, sys: &SystemScope, org: &str) -> Result<(), StoreError>;
    fn create_team(&self, sys: &SystemScope, org: &str, team: &str) -> Result<(), StoreError>;
    fn org_exists(&self, sys: &SystemScope, org: &str) -> Result<bool, StoreError>;
    fn team_exists(&self, sys: &SystemScope, org: &str, team: &str) -> Result<bool, StoreError>;
    fn list_orgs(&self, sys: &SystemScope) -> Result<Vec<String>, StoreError>;
    fn list_teams(&self, sys: &SystemScope, org: &str) -> Result<Vec<String>, StoreError>;

    // --- API tokens (the caller hashes; only SHA-256 hex reaches the store) ---
    /// Needs a tenant scope: the token gets the scope's org and team.
    fn create_api_token(
        &self,
        scope: &Scope,
        name: &str,
        token_hash: &str,
    ) -> Result<ApiTokenRow, StoreError>;
    /// Returns revoked tokens too (with `revoked = true`) so the caller can tell "revoked" from
    /// "unknown" in its audit log; it must refuse them.
    fn find_api_token_by_hash(
        &self,
        sys: &SystemScope,
        token_hash: &str,
    ) -> Result<Option<ApiTokenRow>, StoreError>;
    fn list_api_tokens(&self, scope: &Scope) -> Result<Vec<ApiTokenRow>, StoreError>;
    /// True when the token exists in the scope (revoking twice is still true).
    fn revoke_api_token(&self, scope: &Scope, id: &str) -> Result<bool, StoreError>;
    /// Revokes every live token of that name in the scope; returns how many were live.
    fn revoke_api_tokens_named(&self, scope: &Scope, name: &str) -> Result<usize, StoreError>;

    // --- enrollment tokens ---
    /// Needs a tenant scope: the token binds the scope's org and team.
    fn create_enrollment_token(
        &self,
        scope: &Scope,
        token_hash: &str,
        kind: pb::AgentKind,
        expires_at_ms: i64,
    ) -> Result<(), StoreError>;
    /// Atomic: of any number of concurrent redemptions of one token, exactly one succeeds.
    fn redeem_enrollment_token(
        &self,
        sys: &SystemScope,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<TokenBinding, RedeemError>;

    // --- agents ---
    fn create_agent(&self, sys: &SystemScope, agent: NewAgent) -> Result<(), StoreError>;
    /// Adding a key the agent already holds updates its certificate facts; a key another agent
    /// holds is a conflict.
    fn add_agent_key(
        &self,
        sys: &SystemScope,
        agent_id: &str,
        key_id: [u8; 32],
        public_key: Vec<u8>,
        cert_serial: Vec<u8>,
        cert_not_after_ms: i64,
    ) -> Result<(), StoreError>;
    /// Every key the agent ever held, oldest first.
    fn agent_keys(&self, sys: &SystemScope, agent_id: &str) -> Result<Vec<AgentKey>, StoreError>;
    /// The agent holding this key, and whether the key (or its agent) is revoked.
    fn key_owner(
        &self,
        sys: &SystemScope,
        key_id: &[u8; 32],
    ) -> Result<Option<(String, bool)>, StoreError>;
    fn revoked_key_ids(&self, sys: &SystemScope) -> Result<Vec<[u8; 32]>, StoreError>;
    fn revoked_agent_ids(&self, sys: &SystemScope) -> Result<Vec<String>, StoreError>;
    fn get_agent(&self, scope: &Scope, id: &str) -> Result<Option<AgentRow>, StoreError>;
    fn list_agents(&self, scope: &Scope) -> Result<Vec<AgentRow>, StoreError>;
    /// Marks the agent and all its keys revoked. True when the agent exists in the scope (also when
    /// it was already revoked; the first revocation time is kept).
    fn revoke_agent(&self, scope: &Scope, id: &str, now_ms: i64) -> Result<bool, StoreError>;
    fn record_hello(
        &self,
        sys: &SystemScope,
        agent_id: &str,
        hostname: &str,
        version: &str,
        clock_offset_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    fn touch_agent(&self, sys: &SystemScope, agent_id: &str, now_ms: i64)
    -> Result<(), StoreError>;

    // --- tests (probe definitions) ---
    /// Needs a tenant scope. Assigns the id. A team scope always owns the test; an org-wide scope
    /// may name an existing team in `test.team` or leave it empty (org-wide test).
    fn create_test(&self, scope: &Scope, test: pb::Test) -> Result<pb::Test, StoreError>;
    /// `None` when no test with `test.id` is visible in the scope. Team rules as in `create_test`.
    fn update_test(&self, scope: &Scope, test: pb::Test) -> Result<Option<pb::Test>, StoreError>;
    fn delete_test(&self, scope: &Scope, id: &str) -> Result<bool, StoreError>;
    fn get_test(&self, scope: &Scope, id: &str) -> Result<Option<pb::Test>, StoreError>;
    /// Keyset pagination by id: pass the last id of the previous page as `after_id`.
    fn list_tests(
        &self,
        scope: &Scope,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<pb::Test>, StoreError>;
    /// The tests a node runs: its org's tests whose team is empty or the node's team and whose
    /// `agent_ids` is empty or names it. Listeners get none. The version is the org's assignment
    /// counter, bumped by every test change, read in the same snapshot as the tests.
    fn tests_for_agent(
        &self,
        sys: &SystemScope,
        agent_id: &str,
    ) -> Result<(u64, Vec<pb::Test>), StoreError>;

    // --- results ---
    /// Oldest first; `agent_id`, `received_at` and `seq` are the collector's, never the agent's.
    fn results(
        &self,
        scope: &Scope,
        filter: &ResultFilter,
        after: Option<ResultCursor>,
        limit: usize,
    ) -> Result<ResultPage, StoreError>;
    /// Gap records, oldest first, filtered by agent and receive time (`test_id` does not apply: a
    /// gap covers whatever the node dropped). At most [`MAX_GAPS`] are returned.
    fn gaps(&self, scope: &Scope, filter: &ResultFilter) -> Result<Vec<pb::Gap>, StoreError>;

    // --- route events and routes (from listeners) ---
    /// Oldest first. `agent_id`, `seq` and `received_at` are the collector's.
    fn route_events(
        &self,
        scope: &Scope,
        filter: &RouteEventFilter,
        after: Option<ResultCursor>,
        limit: usize,
    ) -> Result<RouteEventPage, StoreError>;
    /// Current routes matching the query, at most [`MAX_ROUTES`], ordered by prefix, agent and peer.
    fn routes(&self, scope: &Scope, query: &RouteQuery) -> Result<Vec<pb::Route>, StoreError>;
    /// Every listener peer of the scope: session state from its latest stored session_up or
    /// session_down, route counts per family from the routes table, the last down's reason.
    fn peers(&self, scope: &Scope) -> Result<Vec<pb::PeerState>, StoreError>;

    // --- correlations ---
    /// Inserts or replaces (by id) a correlation; `org`/`team` come from the record. `decided`
    /// marks the verdict final.
    fn save_correlation(
        &self,
        sys: &SystemScope,
        c: &pb::Correlation,
        decided: bool,
    ) -> Result<(), StoreError>;
    /// Oldest first.
    fn correlations(
        &self,
        scope: &Scope,
        filter: &CorrelationFilter,
        after: Option<ResultCursor>,
        limit: usize,
    ) -> Result<CorrelationPage, StoreError>;
    fn get_correlation(
        &self,
        scope: &Scope,
        id: &str,
    ) -> Result<Option<pb::Correlation>, StoreError>;

    // --- live stream ---
    /// Results, route events, correlation changes and alert transitions stored after `after`, at
    /// most `limit` of each kind, scoped like every other read. The stream hub reads with the system scope after each commit; a client
    /// resuming with `Last-Event-ID` replays with its tenant scope.
    fn stream_rows(
        &self,
        scope: &Scope,
        after: StreamCursor,
        limit: usize,
    ) -> Result<StreamPage, StoreError>;
    /// The cursor after the newest stored rows: where a fresh follower starts.
    fn stream_head(&self, sys: &SystemScope) -> Result<StreamCursor, StoreError>;

    // --- ingest ---
    /// Writes verified signed batches in ONE transaction, deduplicating by each agent's watermark
    /// (read inside the transaction). Returns one outcome per batch, in order, only after commit.
    fn write_batches(
        &self,
        sys: &SystemScope,
        batches: &[IngestBatch],
    ) -> Result<Vec<BatchOutcome>, StoreError>;
}

/// Cap on routes per [`Store::routes`] call (a `within 0.0.0.0/0` query would be a full table).
pub const MAX_ROUTES: usize = 10_000;

/// Cap on gap records per [`Store::gaps`] call, so a pathological agent cannot make a page huge.
pub const MAX_GAPS: usize = 10_000;

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for ok in ["a", "acme", "0x", "a-b-c", &"a".repeat(63)] {
            assert!(validate_name("org", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "A", "a_b", "a.b", "é", &"a".repeat(64)] {
            let e = validate_name("org", bad).unwrap_err().to_string();
            assert!(e.contains("[a-z0-9][a-z0-9-]{0,62}"), "{e}");
        }
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = ResultCursor(123_456_789);
        assert_eq!(ResultCursor::decode(&c.encode()), Some(c));
        for bad in [
            "",
            "r1.",
            "r1.zz",
            "x1.10",
            "r1.ffffffffffffffff",
            "r1.10000000000000000",
        ] {
            assert_eq!(ResultCursor::decode(bad), None, "{bad}");
        }
    }
}
