//! The thin tokio driver: owns the TCP connections and the timers, feeds a [`Session`], writes
//! what it sends, and forwards its events.
//!
//! One loop serves the peer for the driver's whole life. It keeps accepting while a session is up:
//! a connection from the peer then is a *contender* (collision, RFC 4271 §6.8, or a restarted
//! peer, RFC 4724 §4.2) and the session decides which connection survives. Timers outlive
//! connections, because the graceful-restart timer runs while the peer is away.
//!
//! Backpressure: events go into a bounded channel and the driver awaits room before reading more
//! from the sockets, so a slow consumer slows the peer down through TCP (hold timer permitting)
//! instead of growing memory.
//!
//! Batches: with [`EventSink::Batches`] the events of one input (a TCP read: a few thousand route
//! events during a table transfer) go through the channel in vectors of at most [`BATCH_MAX`],
//! so the channel's atomics, wake-ups and the receiving task's `select!` are paid per batch, not
//! per route. `watch` takes them that way; [`EventSink::Each`] (one message per event) stays for
//! consumers that share one channel between many sources (`run`, tests).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant, sleep_until};

use crate::event::{Event, ResyncMark};
use crate::resync;
use crate::session::{Direction, Input, Output, Session, SessionConfig, State, Timer};
use crate::transport::Transport;
use crate::wire::{Family, encode};

/// The BGP port (RFC 4271).
pub const BGP_PORT: u16 = 179;

/// Most events in one [`EventSink::Batches`] message. With a channel of `n` batches at most
/// `n × BATCH_MAX` events wait for the consumer.
pub const BATCH_MAX: usize = 256;

/// Where a driver's events go (see the module doc).
#[derive(Debug, Clone)]
pub enum EventSink {
    /// One channel message per event.
    Each(mpsc::Sender<Event>),
    /// Events in order, in vectors of 1 to [`BATCH_MAX`].
    Batches(mpsc::Sender<Vec<Event>>),
}

impl From<mpsc::Sender<Event>> for EventSink {
    fn from(tx: mpsc::Sender<Event>) -> Self {
        EventSink::Each(tx)
    }
}

impl From<mpsc::Sender<Vec<Event>>> for EventSink {
    fn from(tx: mpsc::Sender<Vec<Event>>) -> Self {
        EventSink::Batches(tx)
    }
}

/// Sends one message, waiting for room when the channel is full (backpressure reaches the peer
/// through TCP).
async fn send_or_wait<T>(tx: &mpsc::Sender<T>, msg: T) -> Result<(), DriverError> {
    match tx.try_send(msg) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(msg)) => {
            tx.send(msg).await.map_err(|_| DriverError::EventsClosed)
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Err(DriverError::EventsClosed),
    }
}

/// How the session's TCP connection comes about.
#[derive(Debug)]
pub enum Connection {
    /// Accept the peer's connection on this already bound listener; connections from any other
    /// address are closed at once.
    Passive(TcpListener),
    /// Dial the peer at this address, retrying after `retry`.
    Active { remote: SocketAddr, retry: Duration },
    /// Connections from the peer accepted elsewhere: `run` shares one listening socket between
    /// the peers configured on it and hands each its own connections (already filtered by
    /// source address). The mutex only lets the driver poll it through a shared reference.
    Accepted(tokio::sync::Mutex<mpsc::Receiver<TcpStream>>),
}

impl Connection {
    /// Connections handed over by another task (see [`Connection::Accepted`]).
    pub fn accepted(rx: mpsc::Receiver<TcpStream>) -> Self {
        Connection::Accepted(tokio::sync::Mutex::new(rx))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("accept failed: {0}")]
    Accept(std::io::Error),
    #[error("event receiver went away")]
    EventsClosed,
    #[error("setting the peer's TCP MD5 key or TTL on the listening socket: {0}")]
    Md5(std::io::Error),
}

fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

struct Link {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
}

impl Link {
    fn new(stream: TcpStream) -> Link {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        Link { rd, wr }
    }
}

/// Reads from a connection that may not exist (then never completes).
async fn read_opt(link: Option<&mut Link>, buf: &mut [u8]) -> std::io::Result<usize> {
    match link {
        Some(l) => l.rd.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn opt<F: Future + Unpin>(f: Option<&mut F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// The next connection from the configured peer on a passive listener (others are closed).
async fn accept_peer(
    conn: &Connection,
    peer: IpAddr,
    transport: &Transport,
) -> Result<Option<TcpStream>, DriverError> {
    let stream = match accept_raw(conn, peer).await? {
        Some(s) => s,
        None => return Ok(None),
    };
    // The TTL check goes on before a byte of BGP is read (see transport.rs).
    if let Err(e) = transport.prepare_accepted(&stream) {
        tracing::warn!(error = %e, "cannot apply the peer's TTL policy to its connection; closed");
        return Ok(None);
    }
    Ok(Some(stream))
}

async fn accept_raw(conn: &Connection, peer: IpAddr) -> Result<Option<TcpStream>, DriverError> {
    match conn {
        Connection::Passive(listener) => {
            let (stream, from) = listener.accept().await.map_err(DriverError::Accept)?;
            if canonical(from.ip()) != canonical(peer) {
                tracing::warn!(%from, %peer, "connection from an address that is not the configured peer; closed");
                return Ok(None);
            }
            tracing::info!(%from, "accepted connection from peer");
            Ok(Some(stream))
        }
        Connection::Accepted(rx) => match rx.lock().await.recv().await {
            Some(stream) => {
                tracing::info!("accepted connection from peer");
                Ok(Some(stream))
            }
            // The acceptor is gone (shutting down): wait for stop.
            None => std::future::pending().await,
        },
        Connection::Active { .. } => std::future::pending().await,
    }
}

#[derive(Default)]
struct Timers {
    hold: Option<Instant>,
    keepalive: Option<Instant>,
    restart: Option<Instant>,
    contender_hold: Option<Instant>,
    idle_hold: Option<Instant>,
}

impl Timers {
    fn slot(&mut self, t: Timer) -> &mut Option<Instant> {
        match t {
            Timer::Hold => &mut self.hold,
            Timer::Keepalive => &mut self.keepalive,
            Timer::Restart => &mut self.restart,
            Timer::ContenderHold => &mut self.contender_hold,
            Timer::IdleHold => &mut self.idle_hold,
        }
    }
}

struct Driver {
    session: Session,
    events: EventSink,
    /// Events not yet sent as a batch (`EventSink::Batches`).
    pending: Vec<Event>,
    /// The session's outputs, one vector reused for every input (`Session::handle_into`).
    outputs: Vec<Output>,
    timers: Timers,
    primary: Option<Link>,
    contender: Option<Link>,
    /// The last session state emitted, for a resync snapshot's session marker.
    last_state: resync::LastState,
    /// Where the count of UPDATE messages is published (`run_counting`).
    updates: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl Driver {
    async fn emit(&mut self, ev: Event) -> Result<(), DriverError> {
        self.last_state.on_event(&ev);
        match &self.events {
            EventSink::Each(tx) => send_or_wait(tx, ev).await,
            EventSink::Batches(_) => {
                self.pending.push(ev);
                if self.pending.len() >= BATCH_MAX {
                    self.flush().await?;
                }
                Ok(())
            }
        }
    }

    /// Sends the pending batch, if any.
    async fn flush(&mut self) -> Result<(), DriverError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if let EventSink::Batches(tx) = &self.events {
            let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH_MAX));
            send_or_wait(tx, batch).await?;
        }
        Ok(())
    }

    /// Feeds one input to the session and carries out what it asks, in order.
    async fn step(&mut self, input: Input) -> Result<(), DriverError> {
        let mut outputs = std::mem::take(&mut self.outputs);
        self.session
            .handle_into(SystemTime::now(), input, &mut outputs);
        if let Some(u) = &self.updates {
            u.store(
                self.session.updates_received(),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let mut close_primary = false;
        for o in outputs.drain(..) {
            match o {
                Output::Send(msg) => {
                    if let Some(l) = self.primary.as_mut()
                        && let Err(e) = l.wr.write_all(&encode(&msg)).await
                    {
                        tracing::info!(error = %e, "write failed");
                        close_primary = true;
                    }
                }
                Output::SendContender(msg) => {
                    if let Some(l) = self.contender.as_mut()
                        && let Err(e) = l.wr.write_all(&encode(&msg)).await
                    {
                        tracing::info!(error = %e, "write to contender failed");
                    }
                }
                Output::Event(ev) => self.emit(ev).await?,
                Output::SetTimer(t, d) => *self.timers.slot(t) = d.map(|d| Instant::now() + d),
                Output::Close => {
                    if let Some(mut l) = self.primary.take() {
                        let _ = l.wr.shutdown().await;
                    }
                    close_primary = false;
                }
                Output::CloseContender => {
                    if let Some(mut l) = self.contender.take() {
                        let _ = l.wr.shutdown().await;
                    }
                }
                Output::PromoteContender => {
                    if let Some(mut old) = self.primary.take() {
                        let _ = old.wr.shutdown().await;
                    }
                    self.primary = self.contender.take();
                }
            }
        }
        self.outputs = outputs;
        self.flush().await?;
        if close_primary && let Some(mut l) = self.primary.take() {
            let _ = l.wr.shutdown().await;
        }
        if self.primary.is_none() && self.session.state() != State::Idle {
            // The connection is gone but the session has not said so (a failed write): tell it.
            Box::pin(self.step(Input::Closed)).await?;
        }
        Ok(())
    }

    /// Sends a resync snapshot of every family the Adj-RIB-In may hold (see `resync.rs`): no
    /// peer input is handled until it is out, so it sits at one point of this peer's events.
    async fn snapshot(&mut self) -> Result<(), DriverError> {
        let peer = self.session.config().peer_id();
        let started = Instant::now();
        let mut total = 0u64;
        // The session's state first: a session event the spool dropped is repaired before the
        // table (the collector's repair may empty its copy, which the routes then refill).
        let state = self
            .last_state
            .mark(self.session.negotiated(), self.session.rib().len());
        let m = ResyncMark::Session(Box::new(state));
        let at = SystemTime::now();
        self.emit(resync::mark(peer, Family::Ipv4Unicast, None, at, m))
            .await?;
        for family in Family::ALL {
            let at = SystemTime::now();
            self.emit(resync::mark(peer, family, None, at, ResyncMark::Begin))
                .await?;
            let mut after = None;
            let mut routes = 0u64;
            loop {
                let chunk = self
                    .session
                    .rib()
                    .routes_chunk(family, after, resync::CHUNK);
                let done = chunk.len() < resync::CHUNK;
                after = chunk.last().map(|(p, id, _)| (*p, *id));
                for (prefix, path_id, route) in chunk {
                    routes += 1;
                    let m = ResyncMark::Route { prefix, route };
                    self.emit(resync::mark(peer, family, path_id, at, m))
                        .await?;
                }
                self.keepalive_if_due().await?;
                if done {
                    break;
                }
            }
            self.emit(resync::mark(
                peer,
                family,
                None,
                at,
                ResyncMark::End { routes },
            ))
            .await?;
            total += routes;
        }
        self.flush().await?;
        // Waiting for room in the event channel was our doing, not the peer's silence.
        if let Some(h) = self.timers.hold.as_mut() {
            *h += started.elapsed();
        }
        tracing::info!(%peer, routes = total, ms = started.elapsed().as_millis() as u64, "resync snapshot sent");
        Ok(())
    }

    /// A KEEPALIVE whose time has come goes out now, even in the middle of a snapshot.
    async fn keepalive_if_due(&mut self) -> Result<(), DriverError> {
        if self.timers.keepalive.is_some_and(|k| k <= Instant::now()) {
            self.timers.keepalive = None;
            self.step(Input::TimerFired(Timer::Keepalive)).await?;
        }
        Ok(())
    }

    /// A new connection from the peer: the connection if there is none, else a contender (a
    /// newer contender replaces an older one).
    async fn connected(&mut self, stream: TcpStream, dir: Direction) -> Result<(), DriverError> {
        if self.session.config().router_id.is_unspecified() {
            // No configured identifier: the local IPv4 address of this connection (the one the
            // peer dialled, or ours when we dialled), known before our OPEN goes out.
            match stream.local_addr().map(|a| canonical(a.ip())) {
                Ok(IpAddr::V4(id)) => {
                    tracing::info!(router_id = %id, "BGP identifier taken from the connection's local address");
                    self.session.set_router_id(id);
                }
                other => {
                    tracing::warn!(local = ?other, "no IPv4 local address to take the BGP identifier from; connection closed (give a router id)");
                    return Ok(());
                }
            }
        }
        if self.primary.is_none() {
            self.primary = Some(Link::new(stream));
            let input = match dir {
                Direction::Accepted => Input::Connected,
                Direction::Dialled => Input::Dialled,
            };
            return self.step(input).await;
        }
        if self.contender.take().is_some() {
            self.step(Input::ContenderClosed).await?;
        }
        tracing::info!("second connection from the peer while a session exists: contender");
        self.contender = Some(Link::new(stream));
        self.step(Input::ContenderConnected(dir)).await
    }
}

/// Runs sessions with one peer until `stop` becomes true (then a Cease is sent if a session is up).
pub async fn run(
    cfg: SessionConfig,
    conn: Connection,
    events: impl Into<EventSink>,
    stop: watch::Receiver<bool>,
) -> Result<(), DriverError> {
    run_with(cfg, conn, Transport::default(), events, stop).await
}

/// [`run`] with transport protections (MD5 key, TTL policy). With [`Connection::Passive`] the key
/// is installed on the listener here; with [`Connection::Accepted`] whoever owns the shared
/// listener installs it (see `run.rs`).
pub async fn run_with(
    cfg: SessionConfig,
    conn: Connection,
    transport: Transport,
    events: impl Into<EventSink>,
    stop: watch::Receiver<bool>,
) -> Result<(), DriverError> {
    run_resyncing(cfg, conn, transport, events.into(), stop, None).await
}

/// What `run` gives a driver to take part in resyncs (see `resync.rs`).
pub struct ResyncLink {
    /// A new value asks for a snapshot.
    pub requests: watch::Receiver<u64>,
    /// Where the driver keeps the count of routes it holds, which sizes a snapshot.
    pub held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// [`run_with`] that also publishes the number of UPDATE messages received in `updates` (for
/// `watch --format summary`: events count prefixes, not messages).
pub async fn run_counting(
    cfg: SessionConfig,
    conn: Connection,
    transport: Transport,
    events: impl Into<EventSink>,
    stop: watch::Receiver<bool>,
    updates: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Result<(), DriverError> {
    run_inner(
        cfg,
        conn,
        transport,
        events.into(),
        stop,
        None,
        Some(updates),
    )
    .await
}

/// [`run_with`] that also answers resync requests with snapshots of its Adj-RIB-In.
pub async fn run_resyncing(
    cfg: SessionConfig,
    conn: Connection,
    transport: Transport,
    events: EventSink,
    stop: watch::Receiver<bool>,
    resync: Option<ResyncLink>,
) -> Result<(), DriverError> {
    run_inner(cfg, conn, transport, events, stop, resync, None).await
}

async fn run_inner(
    cfg: SessionConfig,
    conn: Connection,
    transport: Transport,
    events: EventSink,
    mut stop: watch::Receiver<bool>,
    resync: Option<ResyncLink>,
    updates: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
) -> Result<(), DriverError> {
    let (mut requests, held) = match resync {
        Some(mut r) => {
            // Only requests made after the start: a new session's table reaches the collector
            // anyway.
            r.requests.borrow_and_update();
            (Some(r.requests), Some(r.held))
        }
        None => (None, None),
    };
    let peer = cfg.peer;
    if let Connection::Passive(l) = &conn {
        transport
            .prepare_listener(l, peer)
            .map_err(DriverError::Md5)?;
    }
    let mut d = Driver {
        session: Session::new(cfg),
        events,
        pending: Vec::new(),
        outputs: Vec::new(),
        timers: Timers::default(),
        primary: None,
        contender: None,
        last_state: resync::LastState::default(),
        updates,
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut cbuf = vec![0u8; 4096];
    // Active mode: the dial in flight, and when to dial next.
    let mut dial: Option<JoinHandle<std::io::Result<TcpStream>>> = None;
    let mut next_dial: Option<Instant> = match &conn {
        Connection::Active { .. } => Some(Instant::now()),
        Connection::Passive(_) | Connection::Accepted(_) => None,
    };
    loop {
        if let Some(h) = &held {
            h.store(d.session.rib().len(), std::sync::atomic::Ordering::Relaxed);
        }
        if *stop.borrow() {
            if d.primary.is_some() || d.contender.is_some() {
                d.step(Input::Stop).await?;
            }
            if let Some(h) = dial.take() {
                h.abort();
            }
            return Ok(());
        }
        // No dialling in the idle hold after a max-prefix teardown: the session would refuse it.
        let dial_due = if d.primary.is_none() && dial.is_none() && !d.session.idle_held() {
            next_dial
        } else {
            None
        };
        let t = &d.timers;
        let (hold, keepalive, restart, contender_hold, idle_hold) = (
            t.hold,
            t.keepalive,
            t.restart,
            t.contender_hold,
            t.idle_hold,
        );
        tokio::select! {
            r = accept_peer(&conn, peer, &transport) => {
                if let Some(stream) = r? {
                    d.connected(stream, Direction::Accepted).await?;
                }
            }
            r = read_opt(d.primary.as_mut(), &mut buf) => {
                let input = match r {
                    Ok(0) | Err(_) => {
                        d.primary = None;
                        Input::Closed
                    }
                    Ok(n) => Input::Received(buf.get(..n).unwrap_or_default().to_vec()),
                };
                d.step(input).await?;
            }
            r = read_opt(d.contender.as_mut(), &mut cbuf) => {
                let input = match r {
                    Ok(0) | Err(_) => {
                        d.contender = None;
                        Input::ContenderClosed
                    }
                    Ok(n) => Input::ContenderReceived(cbuf.get(..n).unwrap_or_default().to_vec()),
                };
                d.step(input).await?;
            }
            _ = sleep_opt(hold) => { d.timers.hold = None; d.step(Input::TimerFired(Timer::Hold)).await?; }
            _ = sleep_opt(keepalive) => { d.timers.keepalive = None; d.step(Input::TimerFired(Timer::Keepalive)).await?; }
            _ = sleep_opt(restart) => { d.timers.restart = None; d.step(Input::TimerFired(Timer::Restart)).await?; }
            _ = sleep_opt(idle_hold) => { d.timers.idle_hold = None; d.step(Input::TimerFired(Timer::IdleHold)).await?; }
            _ = sleep_opt(contender_hold) => {
                d.timers.contender_hold = None;
                d.step(Input::TimerFired(Timer::ContenderHold)).await?;
            }
            _ = sleep_opt(dial_due) => {
                if let Connection::Active { remote, .. } = &conn {
                    let remote = *remote;
                    next_dial = None;
                    let t = transport.clone();
                    dial = Some(tokio::spawn(async move { t.connect(remote).await }));
                }
            }
            r = opt(dial.as_mut()) => {
                dial = None;
                let retry = match &conn {
                    Connection::Active { retry, .. } => *retry,
                    Connection::Passive(_) | Connection::Accepted(_) => Duration::from_secs(5),
                };
                match r {
                    Ok(Ok(stream)) => {
                        tracing::info!("connected to peer");
                        d.connected(stream, Direction::Dialled).await?;
                    }
                    Ok(Err(e)) => tracing::info!(error = %e, "connect failed; retrying"),
                    Err(e) => tracing::info!(error = %e, "connect task failed; retrying"),
                }
                // Dial again after `retry` once the connection is gone.
                next_dial = Some(Instant::now() + retry);
            }
            asked = crate::resync::requested(requests.as_mut()) => {
                if asked {
                    d.snapshot().await?;
                } else {
                    requests = None;
                }
            }
            r = stop.changed() => {
                if r.is_err() {
                    // The stop sender is gone: nobody can stop us any more; treat as stop.
                    if d.primary.is_some() || d.contender.is_some() {
                        d.step(Input::Stop).await?;
                    }
                    return Ok(());
                }
            }
        }
    }
}
