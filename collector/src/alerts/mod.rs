//! The alert engine: tenant-scoped rules over results and routes, with hysteresis, silences and
//! acknowledgements. It never sends anything itself: every transition goes out on a broadcast
//! channel ([`Alerts::subscribe`]) that the notification sender follows, and to the SSE hub.
//!
//! - `rules.rs`: each rule kind's condition as a pure function, rule validation, and the
//!   hysteresis ([`rules::Track`]).
//! - `engine.rs`: the task. It follows committed rows by store key (woken by the stream hub after
//!   each ingest flush, by each new RPKI table, by the earliest duration-hold deadline, plus a
//!   one-second tick for stale rules), keeps the recent results of the tests that rules watch in
//!   memory, and re-evaluates only what new data touched: no per-result table scans.
//! - `file.rs`: the rules file (`serve --rules FILE`), reloaded on SIGHUP.
//! - `chart_link.rs`: signed `/charts/...png` links, the chart for notifiers that take images only
//!   by URL (Slack, PagerDuty).
//! - `host_addrs.rs`: the host's interface addresses for the notifier guard when the collector is
//!   bound to an unspecified address.
//! - `api.rs`: `/api/v1/alert-rules`, `/api/v1/alerts`, `/api/v1/silences`.
//! - `notifiers.rs`: tenants' own notifiers (`/api/v1/notifiers`): validated, target-checked and
//!   sealed at create/update.

pub mod api;
pub mod chart_link;
pub mod dispatch;
mod engine;
pub mod file;
pub mod host_addrs;
pub mod notifiers;
pub mod rules;

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
};

use foureyes_identity::Kek;
use foureyes_proto::v1 as pb;
use foureyes_store::AlertStore;
use tokio::sync::{Notify, broadcast};

pub use engine::spawn;

/// The RPKI state of an origin (RFC 6811), as the RTR client's table says it.
pub use crate::rpki::RpkiState;

/// Origin validation for the `rpki_invalid` rule. The RTR client implements it; the engine only
/// asks.
pub trait OriginValidator: Send + Sync {
    fn validate(&self, prefix: IpAddr, len: u8, origin_as: u32) -> RpkiState;
}

/// Transitions queued per subscriber. A subscriber that falls further behind loses the oldest
/// (tokio broadcast semantics: it sees `Lagged(n)`), so a stuck sender never slows the engine.
pub const TRANSITION_BUFFER: usize = 4096;

/// What the rest of the collector shares with the alert engine.
pub struct Alerts {
    pub store: Arc<dyn AlertStore>,
    pub(crate) kek: Arc<Kek>,
    pub rules_file: Option<PathBuf>,
    transitions: broadcast::Sender<Arc<pb::AlertTransition>>,
    validator: RwLock<Option<Arc<dyn OriginValidator>>>,
    /// Poked by the stream hub after it read a committed flush, and by rule or silence changes.
    pub(crate) wake: Notify,
    /// Bumped whenever rules or silences change; the engine reloads them when it moves.
    changes: AtomicU64,
    pub counters: AlertCounters,
    /// The last rules-file load error (for tests and operators); empty when the last load worked.
    pub last_file_error: Mutex<String>,
    /// Signed chart links for Slack and PagerDuty, when `chart_base_url` is configured.
    pub chart_links: std::sync::OnceLock<chart_link::ChartLinks>,
    /// The notifier target policy the sender enforces, set at start; the API checks tenants'
    /// notifiers against the same one when they are created or changed.
    pub target_policy: std::sync::OnceLock<foureyes_notify::TargetPolicy>,
}

#[derive(Default)]
pub struct AlertCounters {
    pub pending: AtomicI64,
    pub firing: AtomicI64,
    pub transitions: AtomicU64,
    pub silenced_transitions: AtomicU64,
    pub file_reloads: AtomicU64,
    pub file_reload_errors: AtomicU64,
    /// Notifications delivered, failed (after retries), and transitions never notified because
    /// the sender fell behind the engine.
    pub notifications_sent: AtomicU64,
    pub notifications_failed: AtomicU64,
    pub notifications_lost: AtomicU64,
}

impl Alerts {
    pub fn new(store: Arc<dyn AlertStore>, kek: Arc<Kek>, rules_file: Option<PathBuf>) -> Self {
        let (transitions, _) = broadcast::channel(TRANSITION_BUFFER);
        Self {
            store,
            kek,
            rules_file,
            transitions,
            validator: RwLock::new(None),
            wake: Notify::new(),
            changes: AtomicU64::new(1),
            counters: AlertCounters::default(),
            last_file_error: Mutex::new(String::new()),
            chart_links: std::sync::OnceLock::new(),
            target_policy: std::sync::OnceLock::new(),
        }
    }

    /// Every transition from now on (pending, firing, resolved), with the rule's notifier names
    /// and whether it should be notified (`notify` is false while a silence matches).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<pb::AlertTransition>> {
        self.transitions.subscribe()
    }

    /// Installs the RPKI origin validator (the RTR client) used by `rpki_invalid` rules.
    pub fn set_validator(&self, v: Option<Arc<dyn OriginValidator>>) {
        *self.validator.write().unwrap_or_else(|e| e.into_inner()) = v;
    }

    pub(crate) fn validator(&self) -> Option<Arc<dyn OriginValidator>> {
        self.validator
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A notifier's secrets, unsealed with the collector's key-encryption key, for the sender.
    /// `None` when the notifier does not exist or has no secrets.
    pub fn notifier_secrets(
        &self,
        org: &str,
        name: &str,
    ) -> Result<Option<pb::NotifierSecrets>, String> {
        let sealed = self
            .store
            .notifier_secrets(
                &foureyes_store::SystemScope::collector_internal(),
                org,
                name,
            )
            .map_err(|e| e.to_string())?;
        sealed
            .map(|s| file::open_secrets(&self.kek, &s))
            .transpose()
    }

    /// Rules or silences changed: the engine reloads them on its next round, which this starts.
    pub fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// New rows were committed.
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn change_count(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    pub(crate) fn emit(&self, t: Arc<pb::AlertTransition>) {
        // No receiver is fine: nobody is listening yet.
        let _ = self.transitions.send(t);
    }
}
