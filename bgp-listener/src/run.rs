//! `run`: the collector-connected listener. Every configured peer gets a receive-only session
//! (passive peers may share one listening socket), the optional BMP station takes the routers
//! the config allows, every event becomes a numbered, signed record
//! in the disk spool, and the shared agent link streams the spool to the collector.
//!
//! Backpressure, from the socket outwards: a session's driver waits for room in the event channel
//! before reading more from its peer (so a slow spool slows the peer down through TCP); the spool
//! is on disk and bounded by `spool.max_records` (when a long partition fills it, the oldest
//! records go and a gap record says so; `resync.rs` then sends the collector a snapshot of every
//! session's table once the link is up and the spool has room for it).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foureyes_agent::AgentError;
use foureyes_agent::link::{self, LinkOptions, Shared};
use foureyes_agent::spool::Spool;
use foureyes_agent::state::StateDir;
use foureyes_proto::v1::record;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{ListenerConfig, Peer, PeerMode};
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
    /// Where the configuration came from: for error messages, and read again on reload.
    pub config_path: String,
    /// Each message asks for a reload of `config_path` (SIGHUP in `main`).
    pub reload: Option<mpsc::Receiver<()>>,
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
    let shared = Shared::new(creds.signing_key()?, spool, assign_tx, None);
    let connected_rx = shared.connected.subscribe();
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

    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let (resync_tx, resync_rx) = watch::channel(0u64);
    // Bind every configured listening address before starting anything, so a typo or a port in
    // use is an error at start, not a silent missing peer.
    let resync_rx_bmp = resync_rx.clone();
    let mut peers_running = Peers::new(ev_tx.clone(), resync_rx);
    peers_running.apply(peers).await?;
    let resync_stop = CancellationToken::new();
    let resync_task = tokio::spawn(crate::resync::run(
        shared.clone(),
        connected_rx,
        cfg.spool.max_records,
        peers_running.held.clone(),
        resync_tx,
        ev_tx.clone(),
        resync_stop.clone(),
    ));

    let spooler = tokio::spawn(link::spool_from(
        shared.clone(),
        ev_rx,
        |e: Event| record::Kind::RouteEvent(crate::export::event(&e)),
        SPOOL_BATCH_MAX,
        SPOOL_BATCH_DELAY,
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
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
        let resync = crate::resync::StationResync {
            requests: resync_rx_bmp,
            held: peers_running.held.clone(),
        };
        bmp = Some(tokio::spawn(async move {
            let names = Default::default();
            let r = crate::bmp_station::run_resyncing(l, allow, ev, stop, names, Some(resync));
            if let Err(e) = r.await {
                tracing::error!(error = %e, "BMP station ended");
            }
        }));
    }
    drop(ev_tx);

    let mut reload = opts.reload;
    let mut current = cfg;
    loop {
        let asked = async {
            match reload.as_mut() {
                Some(r) => r.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = asked => {
                if r.is_none() {
                    reload = None;
                    continue;
                }
                current = reload_config(current, &opts.config_path, &mut peers_running).await;
            }
        }
    }
    tracing::info!("shutting down: closing sessions");
    resync_stop.cancel();
    let _ = resync_task.await;
    let _ = stop_tx.send(true);
    peers_running.stop_all().await;
    if let Some(b) = bmp {
        let _ = b.await;
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

/// SIGHUP: reads the config file again and applies its peers. A file that does not load or
/// validate (the error names the file, and TOML errors the line and column) or a listening
/// address that cannot be bound leaves everything as it was. Peers whose settings are unchanged
/// keep their sessions; changed ones are restarted; `[bmp]` and `[spool]` changes need a restart
/// of the process (logged).
async fn reload_config(current: ListenerConfig, path: &str, peers: &mut Peers) -> ListenerConfig {
    tracing::info!(config = path, "SIGHUP: reloading the configuration");
    let new = match ListenerConfig::load(Path::new(path)).and_then(|c| {
        let p = c.peers(path)?;
        Ok((c, p))
    }) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "reload refused; the previous configuration stays in force");
            return current;
        }
    };
    let (cfg, list) = new;
    if cfg.bmp != current.bmp || cfg.spool != current.spool {
        tracing::warn!("[bmp] and [spool] changes take effect at the next start, not on reload");
    }
    match peers.apply(list).await {
        Ok(()) => {
            tracing::info!(peers = peers.sessions.len(), "configuration reloaded");
            cfg
        }
        Err(e) => {
            tracing::error!(error = %e, "reload refused; the previous configuration stays in force");
            current
        }
    }
}

/// Which peers to stop and which to start to go from `old` to `new`: a peer is kept when its
/// validated settings (session parameters, mode, transport protections) are equal; a changed one
/// is stopped and started again. Returned as (stop, start) by peer address.
pub fn plan(old: &[Peer], new: &[Peer]) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let key = |p: &Peer| p.session.peer.to_canonical();
    let stop = old
        .iter()
        .filter(|o| !new.iter().any(|n| key(n) == key(o) && n == *o))
        .map(key)
        .collect();
    let start = new
        .iter()
        .filter(|n| !old.iter().any(|o| key(o) == key(n) && o == *n))
        .map(key)
        .collect();
    (stop, start)
}

type Routes = Arc<Mutex<HashMap<IpAddr, mpsc::Sender<TcpStream>>>>;

/// A listening socket shared by the passive peers configured on it.
struct Acceptor {
    listener: Arc<TcpListener>,
    routes: Routes,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// One peer's running session.
struct PeerTask {
    peer: Peer,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The running sessions and listening sockets, changed as a whole by [`Peers::apply`].
struct Peers {
    sessions: HashMap<IpAddr, PeerTask>,
    acceptors: HashMap<SocketAddr, Acceptor>,
    events: mpsc::Sender<Event>,
    /// Resync requests for the sessions, and the routes each holds (see `resync.rs`).
    resync: watch::Receiver<u64>,
    held: crate::resync::Held,
}

impl Peers {
    fn new(events: mpsc::Sender<Event>, resync: watch::Receiver<u64>) -> Self {
        Peers {
            sessions: HashMap::new(),
            acceptors: HashMap::new(),
            events,
            resync,
            held: Default::default(),
        }
    }

    /// Makes the running set equal `new`. Listening addresses not yet open are bound first; if
    /// one fails nothing is changed.
    async fn apply(&mut self, new: Vec<Peer>) -> Result<(), RunError> {
        let old: Vec<Peer> = self.sessions.values().map(|t| t.peer.clone()).collect();
        let (stop, start) = plan(&old, &new);
        let starting: Vec<Peer> = new
            .into_iter()
            .filter(|p| start.contains(&p.session.peer.to_canonical()))
            .collect();
        let mut bound = HashMap::new();
        for p in &starting {
            if let PeerMode::Passive(addr) = p.mode
                && !self.acceptors.contains_key(&addr)
                && !bound.contains_key(&addr)
            {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|err| RunError::Bind { addr, err })?;
                bound.insert(addr, l);
            }
        }
        for addr in stop {
            if let Some(t) = self.sessions.remove(&addr) {
                tracing::info!(peer = %t.peer.name, "stopping the session (removed or changed)");
                foureyes_agent::link::lock(&self.held).remove(&format!("session {addr}"));
                if let PeerMode::Passive(l) = t.peer.mode
                    && let Some(a) = self.acceptors.get(&l)
                    && let Ok(mut r) = a.routes.lock()
                {
                    r.remove(&addr);
                }
                let _ = t.stop.send(true);
                // It sends its Cease first; a restarted peer must not collide with it.
                let _ = tokio::time::timeout(Duration::from_secs(10), t.task).await;
            }
        }
        for (addr, l) in bound {
            let (stop, stop_rx) = watch::channel(false);
            let routes = Routes::default();
            let listener = Arc::new(l);
            tracing::info!(%addr, "listening for BGP peers");
            let task = tokio::spawn(accept_loop(listener.clone(), routes.clone(), stop_rx));
            self.acceptors.insert(
                addr,
                Acceptor {
                    listener,
                    routes,
                    stop,
                    task,
                },
            );
        }
        // MD5 keys and TTLs go on each shared listening socket before its peers' sessions start;
        // sockets no peer uses any more are closed.
        let mut unused = Vec::new();
        for (addr, a) in &self.acceptors {
            let peers: Vec<(IpAddr, &crate::transport::Transport)> = self
                .sessions
                .values()
                .map(|t| &t.peer)
                .chain(starting.iter())
                .filter(|p| p.mode == PeerMode::Passive(*addr))
                .map(|p| (p.session.peer, &p.transport))
                .collect();
            if peers.is_empty() {
                unused.push(*addr);
                continue;
            }
            crate::transport::prepare_shared_listener(&a.listener, &peers)
                .map_err(|err| RunError::Transport { addr: *addr, err })?;
        }
        for p in starting {
            let conn = match p.mode {
                PeerMode::Passive(addr) => {
                    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
                    if let Some(a) = self.acceptors.get(&addr)
                        && let Ok(mut r) = a.routes.lock()
                    {
                        r.insert(p.session.peer.to_canonical(), tx);
                    }
                    Connection::accepted(rx)
                }
                PeerMode::Active(remote) => Connection::Active {
                    remote,
                    retry: Duration::from_secs(5),
                },
            };
            let (stop, stop_rx) = watch::channel(false);
            let (ev, name, peer) = (self.events.clone(), p.name.clone(), p.clone());
            let held = Arc::new(AtomicUsize::new(0));
            foureyes_agent::link::lock(&self.held).insert(
                format!("session {}", p.session.peer.to_canonical()),
                held.clone(),
            );
            let resync = driver::ResyncLink {
                requests: self.resync.clone(),
                held,
            };
            tracing::info!(peer = %name, "starting the session");
            let task = tokio::spawn(async move {
                let r = driver::run_resyncing(
                    p.session,
                    conn,
                    p.transport,
                    ev.into(),
                    stop_rx,
                    Some(resync),
                );
                if let Err(e) = r.await {
                    tracing::error!(peer = %name, error = %e, "session task ended");
                }
            });
            self.sessions.insert(
                peer.session.peer.to_canonical(),
                PeerTask { peer, stop, task },
            );
        }
        for addr in unused {
            if let Some(a) = self.acceptors.remove(&addr) {
                tracing::info!(%addr, "no peer listens here any more; closing");
                let _ = a.stop.send(true);
                let _ = a.task.await;
            }
        }
        Ok(())
    }

    /// Stops every session (each sends a Cease) and listening socket.
    async fn stop_all(&mut self) {
        for t in self.sessions.values() {
            let _ = t.stop.send(true);
        }
        for (_, t) in self.sessions.drain() {
            let _ = t.task.await;
        }
        for (_, a) in self.acceptors.drain() {
            let _ = a.stop.send(true);
            a.task.abort();
        }
    }
}

/// Hands each accepted connection to the session of the peer it comes from; connections from any
/// other address are closed without a byte sent.
async fn accept_loop(l: Arc<TcpListener>, routes: Routes, mut stop: watch::Receiver<bool>) {
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
        let tx = routes
            .lock()
            .ok()
            .and_then(|r| r.get(&from.ip().to_canonical()).cloned());
        match tx {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(text: &str) -> Vec<Peer> {
        let head = "local_as = 65002\nrouter_id = \"198.18.0.2\"\n";
        let cfg = ListenerConfig::parse(&format!("{head}{text}"), "t.toml").expect("valid");
        cfg.peers("t.toml").expect("peers")
    }

    #[test]
    fn reload_touches_only_added_removed_and_changed_peers() {
        let a = "[[peer]]\naddress = \"198.18.0.1\"\nremote_as = 65001\nlisten = \"198.18.0.2\"\n";
        let b = "[[peer]]\naddress = \"198.18.0.3\"\nremote_as = 65003\nconnect = true\n";
        let b2 = "[[peer]]\naddress = \"198.18.0.3\"\nremote_as = 65003\nconnect = true\nhold_time = 30\n";
        let c = "[[peer]]\naddress = \"198.18.0.4\"\nremote_as = 65004\nlisten = \"198.18.0.2\"\n";
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let old = peers(&format!("{a}{b}"));
        assert_eq!(plan(&old, &old), (vec![], vec![]), "same file: nothing");
        // b changed (hold time), c added; a untouched.
        let (stop, start) = plan(&old, &peers(&format!("{a}{b2}{c}")));
        assert_eq!(stop, vec![ip("198.18.0.3")]);
        let mut start = start;
        start.sort();
        assert_eq!(start, vec![ip("198.18.0.3"), ip("198.18.0.4")]);
        // b removed.
        assert_eq!(plan(&old, &peers(a)), (vec![ip("198.18.0.3")], vec![]));
    }
}
