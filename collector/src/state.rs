//! What every part of a running collector shares.

use std::sync::Arc;

use foureyes_store::{SqliteStore, Store, ingest::Ingest};

use crate::{ca::Ca, config::Config, link::Registry, tls::RevokedKeys};

pub struct Collector {
    pub cfg: Config,
    pub store: Arc<SqliteStore>,
    pub ca: Ca,
    pub ingest: Ingest,
    pub registry: Registry,
    pub revoked: RevokedKeys,
}

impl Collector {
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }
}
