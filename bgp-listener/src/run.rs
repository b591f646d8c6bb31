//! `run`: the collector-connected listener. Every configured peer gets a receive-only session
//! (passive peers may share one listening socket), the optional BMP station takes the routers
//! the config allows, every event becomes a numbered, signed record
//! in the disk spool, and the shared agent link streams the spool to the collector.
//!
//! Backpressure, from the socket outwards: a session's driver waits for room in the event channel
//! before reading more from its peer (so a slow spool slows the peer down through TCP); the spool
//! is on disk and bounded by `spool.max_records` (when a long partition fills it, the oldest
//! records go and a gap record says so; the collector's route table for this listener is then
//! incomplete until the sessions restart).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foureyes_agent::AgentError;
use foureyes_agent::link::{self, LinkOptions, Shared};
use foureyes_agent::spool::Spool;
use foureyes_agent::state::StateDir;
use foureyes_proto::v1::record;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{ListenerConfig, PeerMode};
use crate::driver::{self, Connection};
use crate::event::Event;

/// Events queued between the sessions and the spool writer.
const EVENT_QUEUE: usize = 10_000;
/// Records per spooled batch, at most, and how long the first one waits for company.
const SPOOL_BATCH_MAX: usize = 2_000;
const SPOOL_BATCH_DELAY: Duration = Duration::from_millis(100);
/// Connections accepted for one peer but not yet taken by its session.
const ACCEPT_QUEUE: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("binding {addr}: {err}")]
    Bind {
        addr: SocketAddr,
        err: std::io::Error,
    },
    #[error("setting TCP MD5 keys or TTLs on {addr}: {err}")]
    Transport {
        addr: SocketAddr,
        err: std::io::Error,
    },
}

pub struct RunOptions {
    pub hostname: String,
    /// Where the configuration came from, for error messages.
    pub config_path: String,
}

/// Runs until `shutdown`: then every session sends a Cease, the events they produce are spooled,
/// and the link stops (what it did not deliver stays in the spool for the next start).
pub async fn run(
    cfg: ListenerConfig,
    state_dir: &Path,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let state = Arc::new(StateDir::open(state_dir, false)?);
    let identity = state.identity()?;
    if identity.kind != "listener" {
        return Err(AgentError::Config(format!(
            "{} holds a {} identity, not a listener: enroll with a `--kind listener` token",
            state_dir.display(),
            identity.kind
        ))
        .into());
    }
    let peers = cfg.peers(&opts.config_path)?;
    let creds = state.credentials()?;
    let spool = Spool::open(&state.spool_path(), cfg.spool.max_records)?;
    tracing::info!(agent = %identity.agent_id, org = %identity.org, peers = peers.len(), spooled = spool.records(), "listener starting");
    let (assign_tx, _) = watch::channel(Default::default());
    let (connected_tx, _) = watch::channel(false);
    let shared = Shared {
        signing_key: Arc::new(Mutex::new(creds.signing_key()?)),
        assignments: assign_tx,
        spool: Arc::new(Mutex::new(spool)),
        spool_notify: Arc::new(tokio::sync::Notify::new()),
        connected: connected_tx,
        staged_update: Arc::new(Mutex::new(None)),
        bursts: None,
    };
    let link_stop = CancellationToken::new();
    let link_task = tokio::spawn(link::run(
        state.clone(),
        shared.clone(),
        LinkOptions {
            hostname: opts.hostname.clone(),
            ..Default::default()
        },
        link_stop.clone(),
    ));

    // Bind every configured listening address before starting anything, so a typo or a port in
    // use is an error at start, not a silent missing peer.
    let mut by_addr: HashMap<SocketAddr, HashMap<IpAddr, mpsc::Sender<TcpStream>>> = HashMap::new();
    // MD5 keys and TTLs go on the shared listening socket before anyone dials.
    let mut keys: HashMap<SocketAddr, Vec<(IpAddr, crate::transport::Transport)>> = HashMap::new();
    let mut conns = Vec::new();
    for p in &peers {
        let conn = match p.mode {
            PeerMode::Passive(addr) => {
                let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
                by_addr
                    .entry(addr)
                    .or_default()
                    .insert(p.session.peer.to_canonical(), tx);
                keys.entry(addr)
                    .or_default()
                    .push((p.session.peer, p.transport.clone()));
                Connection::accepted(rx)
            }
            PeerMode::Active(remote) => Connection::Active {
                remote,
                retry: Duration::from_secs(5),
            },
        };
        conns.push(conn);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut acceptors = Vec::new();
    for (addr, routes) in by_addr {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|err| RunError::Bind { addr, err })?;
        let peers: Vec<(IpAddr, &crate::transport::Transport)> = keys
            .get(&addr)
            .into_iter()
            .flatten()
            .map(|(ip, t)| (*ip, t))
            .collect();
        crate::transport::prepare_shared_listener(&l, &peers)
            .map_err(|err| RunError::Transport { addr, err })?;
        tracing::info!(%addr, peers = routes.len(), "listening for BGP peers");
        acceptors.push(tokio::spawn(accept_loop(l, routes, stop_rx.clone())));
    }

    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let spooler = tokio::spawn(link::spool_from(
        shared.clone(),
        ev_rx,
        |e: Event| record::Kind::RouteEvent(crate::export::event(&e)),
        SPOOL_BATCH_MAX,
        SPOOL_BATCH_DELAY,
    ));
    let mut bmp = None;
    if let Some(b) = &cfg.bmp {
        let l = TcpListener::bind(b.listen)
            .await
            .map_err(|err| RunError::Bind {
                addr: b.listen,
                err,
            })?;
        tracing::info!(addr = %b.listen, routers = ?b.allow, "BMP station listening");
        let (allow, ev, stop) = (b.allow.clone(), ev_tx.clone(), stop_rx.clone());
        bmp = Some(tokio::spawn(async move {
            if let Err(e) = crate::bmp_station::run(l, allow, ev, stop).await {
                tracing::error!(error = %e, "BMP station ended");
            }
        }));
    }
    let mut sessions = Vec::new();
    for (p, conn) in peers.into_iter().zip(conns) {
        let (ev, stop) = (ev_tx.clone(), stop_rx.clone());
        let name = p.name.clone();
        sessions.push(tokio::spawn(async move {
            if let Err(e) = driver::run_with(p.session, conn, p.transport, ev, stop).await {
                tracing::error!(peer = %name, error = %e, "session task ended");
            }
        }));
    }
    drop(ev_tx);

    shutdown.cancelled().await;
    tracing::info!("shutting down: closing sessions");
    let _ = stop_tx.send(true);
    for s in sessions {
        let _ = s.await;
    }
    if let Some(b) = bmp {
        let _ = b.await;
    }
    for a in acceptors {
        a.abort();
    }
    // Every session is gone, so the event channel closes and the spooler writes what is left.
    let _ = spooler.await;
    // Give the link a moment to deliver the last batches (their acks let the spool shrink);
    // whatever is still spooled goes out on the next start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    link_stop.cancel();
    let _ = link_task.await;
    Ok(())
}

/// Hands each accepted connection to the session of the peer it comes from; connections from any
/// other address are closed without a byte sent.
async fn accept_loop(
    l: TcpListener,
    routes: HashMap<IpAddr, mpsc::Sender<TcpStream>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, from) = tokio::select! {
            r = l.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        match routes.get(&from.ip().to_canonical()) {
            Some(tx) => {
                if tx.try_send(stream).is_err() {
                    tracing::warn!(%from, "peer connects faster than its session takes connections; closed");
                }
            }
            None => {
                tracing::warn!(%from, "connection from an address that is no configured peer; closed")
            }
        }
    }
}
