//! Alert rules, alerts, their transitions, silences and notifiers: the alert engine's tables.
//!
//! A separate trait from [`crate::Store`] so the alert engine's storage can grow without touching
//! every other store method; the scope rule is the same (see the crate docs). The engine writes
//! with the system scope; API handlers only ever pass a tenant scope.
//!
//! Acknowledgements live in their own columns, not in the stored alert body: the engine rewrites
//! the body on every evaluation that changes it, and an ack made by a user in between must not be
//! lost. Reads merge the columns into the returned message.

use foureyes_proto::v1 as pb;

use crate::{ResultCursor, Scope, StoreError, SystemScope};

/// Which alerts to read. Times are the alert's start time (ms), half-open.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertFilter {
    pub state: Option<pb::AlertState>,
    pub rule_id: Option<String>,
    pub subject: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertPage {
    pub alerts: Vec<pb::Alert>,
    pub next: Option<ResultCursor>,
}

/// A notifier as the store keeps it: the public part and the sealed secrets (already sealed by
/// the caller: the store never sees a plaintext secret).
#[derive(Clone, Debug, PartialEq)]
pub struct NotifierRow {
    pub notifier: pb::Notifier,
    pub sealed_secrets: Option<Vec<u8>>,
}

/// Cap on rules, silences and active alerts read at once.
pub const MAX_ALERT_ROWS: usize = 100_000;

pub trait AlertStore: Send + Sync + 'static {
    // --- rules ---
    /// Needs a tenant scope. Assigns the id; a team scope always owns the rule, an org-wide scope
    /// may name an existing team. Names are unique per org.
    fn create_alert_rule(
        &self,
        scope: &Scope,
        rule: pb::AlertRule,
    ) -> Result<pb::AlertRule, StoreError>;
    /// `None` when no rule with `rule.id` is visible. File-managed rules are refused.
    fn update_alert_rule(
        &self,
        scope: &Scope,
        rule: pb::AlertRule,
    ) -> Result<Option<pb::AlertRule>, StoreError>;
    /// False when no such rule is visible. File-managed rules are refused.
    fn delete_alert_rule(&self, scope: &Scope, id: &str) -> Result<bool, StoreError>;
    fn get_alert_rule(&self, scope: &Scope, id: &str) -> Result<Option<pb::AlertRule>, StoreError>;
    fn list_alert_rules(&self, scope: &Scope) -> Result<Vec<pb::AlertRule>, StoreError>;
    /// Replaces every file-managed rule and notifier with these, in one transaction (a reload of
    /// the rules file). Orgs and teams must exist.
    fn replace_file_managed(
        &self,
        sys: &SystemScope,
        rules: &[pb::AlertRule],
        notifiers: &[NotifierRow],
    ) -> Result<(), StoreError>;

    // --- alerts ---
    /// Inserts or replaces the alert (by id) and appends the transition, in one transaction.
    fn save_alert(
        &self,
        sys: &SystemScope,
        alert: &pb::Alert,
        transition: Option<&pb::AlertTransition>,
    ) -> Result<(), StoreError>;
    /// Pending and firing alerts of every tenant (the engine's state after a restart).
    fn active_alerts(&self, sys: &SystemScope) -> Result<Vec<pb::Alert>, StoreError>;
    /// Oldest first.
    fn alerts(
        &self,
        scope: &Scope,
        filter: &AlertFilter,
        after: Option<ResultCursor>,
        limit: usize,
    ) -> Result<AlertPage, StoreError>;
    fn get_alert(&self, scope: &Scope, id: &str) -> Result<Option<pb::Alert>, StoreError>;
    /// Records the acknowledgement; `None` when no such alert is visible. Acking twice keeps the
    /// first.
    fn ack_alert(
        &self,
        scope: &Scope,
        id: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<Option<pb::Alert>, StoreError>;
    /// The alert's transitions, oldest first (at most [`MAX_ALERT_ROWS`]).
    fn alert_transitions(
        &self,
        scope: &Scope,
        alert_id: &str,
    ) -> Result<Vec<pb::AlertTransition>, StoreError>;

    // --- silences ---
    /// Needs a tenant scope. Assigns the id and creation time.
    fn create_silence(&self, scope: &Scope, s: pb::Silence) -> Result<pb::Silence, StoreError>;
    /// Silences not expired at `now_ms`.
    fn silences(&self, scope: &Scope, now_ms: i64) -> Result<Vec<pb::Silence>, StoreError>;
    fn delete_silence(&self, scope: &Scope, id: &str) -> Result<bool, StoreError>;

    // --- notifiers ---
    /// The public part only: secrets never leave through this.
    fn notifiers(&self, scope: &Scope) -> Result<Vec<pb::Notifier>, StoreError>;
    /// Needs a tenant scope: the org comes from it, a team scope always owns the notifier and an
    /// org-wide scope may name an existing team. Names are unique per org (file-managed ones
    /// included): a taken name is a `Conflict`.
    fn create_notifier(&self, scope: &Scope, n: NotifierRow) -> Result<pb::Notifier, StoreError>;
    /// The public part of one notifier visible to `scope`.
    fn get_notifier(&self, scope: &Scope, name: &str) -> Result<Option<pb::Notifier>, StoreError>;
    /// Replaces the notifier named `n.notifier.name` (its settings and sealed secrets as given).
    /// `None` when no such notifier is visible; file-managed ones are refused.
    fn update_notifier(
        &self,
        scope: &Scope,
        n: NotifierRow,
    ) -> Result<Option<pb::Notifier>, StoreError>;
    /// False when no such notifier is visible. File-managed ones, and ones an alert rule of the
    /// org still names, are refused (`Invalid`, naming the rules).
    fn delete_notifier(&self, scope: &Scope, name: &str) -> Result<bool, StoreError>;
    /// The sealed secrets of one notifier, for the sender.
    fn notifier_secrets(
        &self,
        sys: &SystemScope,
        org: &str,
        name: &str,
    ) -> Result<Option<Vec<u8>>, StoreError>;
}
