//! Starting a collector: data dir, key-encryption key, CA, store, ingest, the agent port and the
//! API port. `start` takes already-bindable addresses and a shutdown token so tests can run the
//! real server in-process on port 0.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use foureyes_identity::Kek;
use foureyes_proto::v1 as pb;
use foureyes_store::{Scope, SqliteStore, Store, SystemScope, Tenant, ingest::Ingest};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    api,
    ca::Ca,
    config::Config,
    link::{self, Registry},
    state::Collector,
    tls::{self, RevokedKeys},
};

pub const KEK_ENV: &str = "FOUREYES_KEK";
pub const DB_FILE: &str = "foureyes.sqlite";
/// JSON `{"node_addr": ..., "api_url": ...}` written at start.
pub const ADDR_FILE: &str = "collector.addr.json";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot listen on {addr}: {err}")]
    Bind {
        addr: SocketAddr,
        err: std::io::Error,
    },
}

fn setup(e: impl std::fmt::Display) -> ServerError {
    ServerError::Setup(e.to_string())
}

pub fn ensure_data_dir(dir: &Path) -> Result<(), ServerError> {
    std::fs::create_dir_all(dir).map_err(|e| setup(format!("data dir {}: {e}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| setup(format!("data dir {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// Opens the store without the CA key: enough for admin commands.
pub fn open_store(data_dir: &Path) -> Result<SqliteStore, ServerError> {
    ensure_data_dir(data_dir)?;
    SqliteStore::open(data_dir.join(DB_FILE)).map_err(setup)
}

pub fn ca_fingerprint(data_dir: &Path) -> Result<[u8; 32], ServerError> {
    let der = std::fs::read(data_dir.join(crate::ca::CA_CERT_FILE)).map_err(|e| {
        setup(format!(
            "no CA in {} ({e}): start `foureyes-collector serve` once to create it",
            data_dir.display()
        ))
    })?;
    Ok(foureyes_identity::fingerprint(&der))
}

impl Collector {
    pub fn open(cfg: Config) -> Result<Arc<Self>, ServerError> {
        ensure_data_dir(&cfg.data_dir)?;
        let (kek, created) = Kek::load_or_create(KEK_ENV, &cfg.kek_file, true).map_err(setup)?;
        if created {
            tracing::warn!(
                file = %cfg.kek_file.display(),
                "generated a key-encryption key next to the data: it protects copies of the database, not the host; set FOUREYES_KEK or kek_file to keep it elsewhere"
            );
        }
        let ca = Ca::load_or_create(&cfg.data_dir, &kek).map_err(setup)?;
        let sqlite = Arc::new(SqliteStore::open(cfg.data_dir.join(DB_FILE)).map_err(setup)?);
        let alerts =
            crate::alerts::Alerts::new(sqlite.clone(), Arc::new(kek), cfg.rules_file.clone());
        let store: Arc<dyn Store> = sqlite;
        let revoked = RevokedKeys::default();
        revoked.replace(
            store
                .revoked_key_ids(&SystemScope::collector_internal())
                .map_err(setup)?,
        );
        let metrics_token = match &cfg.metrics_token_file {
            Some(p) => {
                let t = std::fs::read_to_string(p)
                    .map_err(|e| setup(format!("metrics_token_file {}: {e}", p.display())))?;
                let t = t.trim().to_string();
                if t.len() < 16 {
                    return Err(setup(format!(
                        "metrics_token_file {}: the token must be at least 16 characters",
                        p.display()
                    )));
                }
                Some(t)
            }
            None => None,
        };
        let (ingest, _task) = Ingest::start(store.clone(), cfg.ingest.clone());
        Ok(Arc::new(Self {
            store,
            ca,
            ingest,
            registry: Registry::default(),
            revoked,
            route_events_committed: Arc::new(tokio::sync::Notify::new()),
            update_base_url: std::sync::OnceLock::new(),
            stream: crate::stream::Hub::new(cfg.stream_client_buffer),
            metrics_token,
            alerts,
            rpki: Arc::new(crate::rpki::RpkiTable::new(cfg.rpki.is_some())),
            sessions: Default::default(),
            cfg,
        }))
    }

    /// API token lookup: the only place an API credential is resolved.
    pub fn auth_lookup(
        &self,
        hash: &str,
    ) -> Result<Option<foureyes_store::ApiTokenRow>, foureyes_store::StoreError> {
        Ok(self
            .store
            .find_api_token_by_hash(&SystemScope::collector_internal(), hash)?
            .filter(|r| !r.revoked))
    }

    /// Revokes the agent and every key it ever held, and cuts its live stream at once.
    pub fn revoke_agent(
        &self,
        scope: &Scope,
        id: &str,
    ) -> Result<bool, foureyes_store::StoreError> {
        if !self.store.revoke_agent(scope, id, now_ms())? {
            return Ok(false);
        }
        for k in self
            .store
            .agent_keys(&SystemScope::collector_internal(), id)?
        {
            if let Ok(kid) = <[u8; 32]>::try_from(k.key_id.as_slice()) {
                self.revoked.insert(kid);
            }
        }
        self.registry.cut(id);
        tracing::warn!(agent = %id, "agent revoked");
        Ok(true)
    }

    pub fn mint_enrollment_token(
        &self,
        tenant: &Tenant,
        kind: pb::AgentKind,
        ttl: Duration,
    ) -> Result<pb::EnrollmentToken, foureyes_store::StoreError> {
        mint_token(&*self.store, self.ca.fingerprint(), tenant, kind, ttl)
    }
}

/// Mints an enrollment token, shown once; the store keeps only its hash.
pub fn mint_token(
    store: &dyn Store,
    ca_fingerprint: [u8; 32],
    tenant: &Tenant,
    kind: pb::AgentKind,
    ttl: Duration,
) -> Result<pb::EnrollmentToken, foureyes_store::StoreError> {
    let token = foureyes_identity::EnrollmentToken::generate(ca_fingerprint);
    let expires = now_ms() + ttl.as_millis() as i64;
    store.create_enrollment_token(
        &Scope::Tenant(tenant.clone()),
        &token.secret_hash(),
        kind,
        expires,
    )?;
    Ok(pb::EnrollmentToken {
        token: token.reveal(),
        org: tenant.org.clone(),
        team: tenant.team.clone().unwrap_or_default(),
        kind: kind as i32,
        expires_at: Some(foureyes_proto::timestamp_from_ms(expires)),
    })
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub struct Running {
    pub collector: Arc<Collector>,
    pub node_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// `http://` on loopback, `https://` elsewhere.
    pub api_url: String,
    pub done: tokio::task::JoinHandle<()>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| ServerError::Bind { addr, err })
}

pub async fn start(cfg: Config, shutdown: CancellationToken) -> Result<Running, ServerError> {
    let node_listener = bind(cfg.node_addr).await?;
    let api_listener = bind(cfg.api_addr).await?;
    let c = Collector::open(cfg)?;
    let node_addr = node_listener.local_addr().map_err(setup)?;
    let api_addr = api_listener.local_addr().map_err(setup)?;

    let (server_cert, server_key) = c.ca.issue_server(&c.cfg.server_names).map_err(setup)?;
    let agent_tls = tls::agent_port_config(
        c.ca.cert_der(),
        server_cert.clone(),
        server_key.clone(),
        c.revoked.clone(),
    )
    .map_err(setup)?;

    let api_tls = if api_addr.ip().is_loopback() && c.cfg.api_tls.is_none() {
        None
    } else {
        Some(api_tls_config(&c, server_cert, server_key)?)
    };
    let api_url = format!(
        "{}://{}",
        if api_tls.is_some() { "https" } else { "http" },
        api_addr
    );

    let _ = c.update_base_url.set(
        c.cfg
            .update_base_url
            .clone()
            .unwrap_or_else(|| api_url.clone()),
    );

    let mut tasks = tokio::task::JoinSet::new();
    {
        let c = c.clone();
        let sd = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = link::serve(c, node_listener, agent_tls, sd).await {
                tracing::error!(error = %e, "agent port stopped");
            }
        });
    }
    {
        let task = crate::correlator::spawn(
            c.clone(),
            c.cfg.correlation.clone(),
            c.route_events_committed.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            let _ = task.await;
        });
    }
    if c.cfg.rpki.is_some() {
        c.alerts.set_validator(Some(c.rpki.clone()));
    }
    if c.alerts.rules_file.is_some() {
        crate::alerts::file::load(&c).map_err(setup)?;
    }
    if let Some(base) = &c.cfg.chart_base_url {
        let links =
            crate::alerts::chart_link::ChartLinks::load(&c.cfg.data_dir, &c.alerts.kek, base)
                .map_err(setup)?;
        let _ = c.alerts.chart_links.set(links);
    }
    {
        // Notification targets may never be the collector itself (unless the operator allows).
        let own: Vec<std::net::IpAddr> = [node_addr.ip(), api_addr.ip()]
            .into_iter()
            .filter(|ip| !ip.is_unspecified())
            .collect();
        let policy = c.cfg.notifier_policy.build(own);
        if node_addr.ip().is_unspecified() || api_addr.ip().is_unspecified() {
            // Bound to every address: each interface address is ours too.
            let task = crate::alerts::host_addrs::spawn(
                policy.host_addresses.clone(),
                crate::alerts::host_addrs::REFRESH,
                shutdown.clone(),
            );
            tasks.spawn(async move {
                let _ = task.await;
            });
        }
        let _ = c.alerts.target_policy.set(policy.clone());
        let task =
            crate::alerts::dispatch::spawn(c.clone(), policy, shutdown.clone()).map_err(setup)?;
        tasks.spawn(async move {
            let _ = task.await;
        });
    }
    {
        let task = crate::alerts::spawn(c.clone(), shutdown.clone());
        tasks.spawn(async move {
            let _ = task.await;
        });
    }
    {
        let task = crate::stream::spawn(c.clone(), shutdown.clone());
        tasks.spawn(async move {
            let _ = task.await;
        });
    }
    if let Some(o) = &c.cfg.otlp {
        let exporter = crate::otlp::Exporter::new(o).map_err(setup)?;
        let task = crate::otlp::spawn(c.clone(), exporter, shutdown.clone());
        tasks.spawn(async move {
            let _ = task.await;
        });
    }
    if let Some(rtr) = c.cfg.rpki.clone() {
        let task = crate::rpki::spawn(c.rpki.clone(), rtr, shutdown.clone());
        tasks.spawn(async move {
            let _ = task.await;
        });
    }
    {
        let router = api::router(c.clone());
        let sd = shutdown.clone();
        tasks.spawn(async move { serve_api(api_listener, router, api_tls, sd).await });
    }
    {
        // Revocations made by the admin CLI (another process) reach running streams here.
        let c = c.clone();
        let sd = shutdown.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut release = crate::update::current(&c.cfg.data_dir);
            loop {
                tokio::select! { _ = tick.tick() => {}, _ = sd.cancelled() => return }
                // A release published by the admin CLI reaches live streams here.
                let now = crate::update::current(&c.cfg.data_dir);
                if now != release {
                    release = now;
                    c.registry.poke_all();
                }
                let sys = SystemScope::collector_internal();
                if let Ok(keys) = c.store.revoked_key_ids(&sys) {
                    c.revoked.replace(keys);
                }
                if let Ok(ids) = c.store.revoked_agent_ids(&sys) {
                    for id in ids {
                        if c.registry.is_connected(&id) {
                            c.registry.cut(&id);
                        }
                    }
                }
            }
        });
    }
    // Where this collector listens, for tooling and tests that start it on port 0.
    let addr_file = serde_json::json!({ "node_addr": node_addr.to_string(), "api_url": api_url });
    if let Err(e) = std::fs::write(c.cfg.data_dir.join(ADDR_FILE), addr_file.to_string()) {
        tracing::warn!(error = %e, "cannot write {ADDR_FILE}");
    }
    tracing::info!(%node_addr, %api_url, "collector listening");
    let done = tokio::spawn(async move { while tasks.join_next().await.is_some() {} });
    Ok(Running {
        collector: c,
        node_addr,
        api_addr,
        api_url,
        done,
    })
}

fn api_tls_config(
    c: &Collector,
    server_cert: Vec<u8>,
    server_key: Vec<u8>,
) -> Result<rustls::ServerConfig, ServerError> {
    let (chain, key) = match &c.cfg.api_tls {
        Some((cert_file, key_file)) => {
            let chain = CertificateDer::pem_file_iter(cert_file)
                .map_err(|e| setup(format!("{}: {e}", cert_file.display())))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| setup(format!("{}: {e}", cert_file.display())))?;
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| setup(format!("{}: {e}", key_file.display())))?;
            (chain, key)
        }
        None => (
            vec![
                CertificateDer::from(server_cert),
                CertificateDer::from(c.ca.cert_der().to_vec()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key)),
        ),
    };
    tls::api_port_config(chain, key).map_err(setup)
}

async fn serve_api(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<rustls::ServerConfig>,
    shutdown: CancellationToken,
) {
    let Some(tls) = tls else {
        // The peer address reaches handlers as `ConnectInfo` (`/metrics` admits loopback peers).
        let r = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "API port stopped");
        }
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = shutdown.cancelled() => return,
        };
        let acceptor = acceptor.clone();
        let router = router
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let svc = hyper_util::service::TowerToHyperService::new(router);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
        });
    }
}
