//! What every part of a running collector shares.

use std::sync::Arc;

use foureyes_store::{Store, ingest::Ingest};

use crate::{ca::Ca, config::Config, link::Registry, tls::RevokedKeys};

pub struct Collector {
    pub cfg: Config,
    /// The store sits behind its trait so another engine can replace SQLite.
    pub store: Arc<dyn Store>,
    pub ca: Ca,
    pub ingest: Ingest,
    pub registry: Registry,
    pub revoked: RevokedKeys,
    /// Poked when a listener's batch is committed: the correlator has new route events.
    pub route_events_committed: Arc<tokio::sync::Notify>,
    /// Where nodes fetch releases: `update_base_url`, else the API URL once bound.
    pub update_base_url: std::sync::OnceLock<String>,
    /// Live fan-out of committed rows and correlations (`/api/v1/stream`), and the per-test gauges.
    pub stream: crate::stream::Hub,
    /// The `/metrics` scrape token, read from `metrics_token_file` at start.
    pub metrics_token: Option<String>,
    /// The alert engine's shared half: its store, transition channel and counters.
    pub alerts: crate::alerts::Alerts,
    /// The RPKI VRP table (public data, shared by all tenants), synced over RTR when configured.
    pub rpki: std::sync::Arc<crate::rpki::RpkiTable>,
    /// The dashboard's browser sessions (in memory; see `web.rs`).
    pub sessions: crate::web::Sessions,
}
