//! The thin tokio side of the BMP station: accepts router connections, feeds each to a
//! [`bmp::Station`], and forwards its events. The standalone `bmp` command prints them.
//!
//! - Read-only: the station never writes a byte to a router. The socket is never split or shut
//!   down for writing, so the router sees no half-close while the feed runs.
//! - Only routers on the allow list are accepted; an empty list refuses every connection (the
//!   operator names the routers explicitly, as for BGP peers). A refused connection is closed
//!   without reading from it.
//! - A new connection from a router that already has one replaces it: the old one is usually a
//!   dead half-open connection after a router restart, and its peers are reported down first.
//! - Backpressure: events go into the caller's bounded channel and a connection task awaits room
//!   before it reads more, so a slow consumer slows the router down through TCP, never memory.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::bmp::{Input, Output, RouterInfo, Station};
use crate::event::{BmpView, Event, RouteChange, SessionEvent, Source};
use crate::event_jsonl::JsonlWriter;
use crate::resync::StationResync;
use crate::watch::{Format, event_text};
use crate::wire::Family;

/// The BMP port IANA assigned (RFC 7854 §10); routers are usually configured with another.
pub const BMP_PORT: u16 = 11019;

#[derive(Debug, thiserror::Error)]
pub enum StationError {
    #[error("event receiver went away")]
    EventsClosed,
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
}

/// Waits until `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// What each connected router said about itself in Initiation (sysName, sysDescr), for logs and
/// summaries; an entry stays after its connection ends.
pub type RouterNames = Arc<Mutex<HashMap<IpAddr, RouterInfo>>>;

/// TCP keepalive on router connections: a router silent for 30 s is probed every 10 s, and its
/// connection (and so its peers) is declared gone after 3 unanswered probes, about a minute after
/// it vanished. Routers send BMP statistics or route monitoring often, so a live one is rarely
/// probed at all.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;

/// Accepts routers on `listener` until `stop` becomes true; then every connection ends (its
/// peers reported down) and this returns once their events are delivered.
pub async fn run(
    listener: TcpListener,
    allowed_routers: Vec<IpAddr>,
    events: mpsc::Sender<Event>,
    stop: watch::Receiver<bool>,
) -> Result<(), StationError> {
    run_with_names(
        listener,
        allowed_routers,
        events,
        stop,
        RouterNames::default(),
    )
    .await
}

/// [`run`], also publishing each router's Initiation information into `names`.
pub async fn run_with_names(
    listener: TcpListener,
    allowed_routers: Vec<IpAddr>,
    events: mpsc::Sender<Event>,
    stop: watch::Receiver<bool>,
    names: RouterNames,
) -> Result<(), StationError> {
    run_resyncing(listener, allowed_routers, events, stop, names, None).await
}

/// [`run_with_names`] whose router connections also answer resync requests with snapshots of
/// every table they hold (see `resync.rs`).
pub async fn run_resyncing(
    listener: TcpListener,
    allowed_routers: Vec<IpAddr>,
    events: mpsc::Sender<Event>,
    mut stop: watch::Receiver<bool>,
    names: RouterNames,
    resync: Option<StationResync>,
) -> Result<(), StationError> {
    let allowed: Vec<IpAddr> = allowed_routers.iter().map(|a| a.to_canonical()).collect();
    if allowed.is_empty() {
        tracing::warn!("BMP station: no router is allowed; every connection will be refused");
    }
    let mut tasks: JoinSet<(IpAddr, u64, Result<(), StationError>)> = JoinSet::new();
    let mut current: HashMap<IpAddr, (u64, watch::Sender<bool>)> = HashMap::new();
    let mut next_id = 0u64;
    let result = loop {
        tokio::select! {
            r = listener.accept() => {
                let (stream, from) = match r {
                    Ok(v) => v,
                    Err(e) => {
                        // Out of descriptors or an aborted handshake: the routers already
                        // connected must keep their feeds, so pause and accept again.
                        tracing::warn!(error = %e, "BMP accept failed; retrying in 1 s");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = stopped(&mut stop) => break Ok(()),
                        }
                    }
                };
                let router = from.ip().to_canonical();
                if !allowed.contains(&router) {
                    tracing::warn!(%from, "BMP connection from a router that is not allowed; closed");
                    drop(stream);
                    continue;
                }
                // BMP is read-only, so without keepalive a router that vanished without a FIN
                // (power loss, a cut path) would hold its peers "up" until it reconnects.
                if let Err(e) = foureyes_sockopt::set_keepalive(
                    &stream,
                    KEEPALIVE_IDLE,
                    KEEPALIVE_INTERVAL,
                    KEEPALIVE_PROBES,
                ) {
                    tracing::warn!(%from, error = %e, "BMP: cannot set TCP keepalive");
                }
                tracing::info!(%from, "BMP router connected");
                let (kick_tx, kick_rx) = watch::channel(false);
                if let Some((_, old)) = current.insert(router, (next_id, kick_tx)) {
                    tracing::info!(%router, "new BMP connection replaces the previous one");
                    let _ = old.send(true);
                }
                let (events, stop, names) = (events.clone(), stop.clone(), Arc::clone(&names));
                let id = next_id;
                next_id += 1;
                let resync = resync.clone();
                tasks.spawn(async move {
                    let r = serve(stream, router, events, stop, kick_rx, names, resync).await;
                    (router, id, r)
                });
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok((router, id, r)) = done {
                    if current.get(&router).is_some_and(|(cur, _)| *cur == id) {
                        current.remove(&router);
                    }
                    if let Err(StationError::EventsClosed) = r {
                        break Err(StationError::EventsClosed);
                    }
                }
            }
            _ = stopped(&mut stop) => break Ok(()),
        }
    };
    for (_, kick) in current.values() {
        let _ = kick.send(true);
    }
    while tasks.join_next().await.is_some() {}
    result
}

/// One router connection: read, feed the station, forward events. Never writes.
async fn serve(
    stream: TcpStream,
    router: IpAddr,
    events: mpsc::Sender<Event>,
    stop: watch::Receiver<bool>,
    kick: watch::Receiver<bool>,
    names: RouterNames,
    resync: Option<StationResync>,
) -> Result<(), StationError> {
    // The count of routes this connection holds sizes resync snapshots; it goes with it.
    let held = resync.as_ref().map(|r| {
        let n = Arc::new(AtomicUsize::new(0));
        if let Ok(mut h) = r.held.lock() {
            h.insert(format!("bmp {router}"), n.clone());
        }
        (r.held.clone(), n)
    });
    let requests = resync.map(|mut r| {
        r.requests.borrow_and_update();
        r.requests
    });
    let r = serve_inner(
        stream,
        router,
        events,
        (stop, kick),
        names,
        requests,
        held.as_ref().map(|(_, n)| n.clone()),
    )
    .await;
    if let Some((map, n)) = held
        && let Ok(mut h) = map.lock()
    {
        // A newer connection of the same router may have registered its own count since.
        let key = format!("bmp {router}");
        if h.get(&key).is_some_and(|cur| Arc::ptr_eq(cur, &n)) {
            h.remove(&key);
        }
    }
    r
}

async fn serve_inner(
    mut stream: TcpStream,
    router: IpAddr,
    events: mpsc::Sender<Event>,
    (mut stop, mut kick): (watch::Receiver<bool>, watch::Receiver<bool>),
    names: RouterNames,
    mut requests: Option<watch::Receiver<u64>>,
    held: Option<Arc<AtomicUsize>>,
) -> Result<(), StationError> {
    let mut station = Station::new(router);
    let mut published = RouterInfo::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(n) = &held {
            n.store(station.routes_held(), Ordering::Relaxed);
        }
        let input = tokio::select! {
            asked = crate::resync::requested(requests.as_mut()) => {
                if !asked {
                    requests = None;
                    continue;
                }
                // No router input is read until the snapshot is out: it sits at one point of
                // this router's events.
                let tables = station.tables();
                // Which peers this router monitors now, then each one's state and table: every
                // peer the station holds is up (a peer that went down is forgotten). When each
                // came up is not kept, so the collector checks up or down only.
                let peers = tables.iter().map(|(p, _, _)| *p).collect();
                let set = crate::event::PeerSet::BmpRouter { router, peers };
                events
                    .send(crate::resync::peers_mark(set, SystemTime::now()))
                    .await
                    .map_err(|_| StationError::EventsClosed)?;
                let mut routes = 0;
                for (peer, negotiated, rib) in tables {
                    let state = crate::event::SessionMark {
                        up: Some(negotiated.clone()),
                        since: None,
                        routes: rib.len() as u64,
                    };
                    routes += crate::resync::send_table(rib, peer, state, &events)
                        .await
                        .map_err(|_| StationError::EventsClosed)?;
                }
                tracing::info!(%router, routes, "resync snapshot sent (BMP)");
                continue;
            }
            r = stream.read(&mut buf) => match r {
                Ok(0) => Input::Closed,
                Err(e) => {
                    tracing::info!(%router, error = %e, "BMP connection failed");
                    Input::Closed
                }
                Ok(n) => Input::Received(buf.get(..n).unwrap_or_default().to_vec()),
            },
            _ = stopped(&mut stop) => Input::Closed,
            _ = stopped(&mut kick) => Input::Closed,
        };
        for o in station.handle(SystemTime::now(), input) {
            match o {
                Output::Event(ev) => events
                    .send(ev)
                    .await
                    .map_err(|_| StationError::EventsClosed)?,
                Output::Close(why) => tracing::info!(%router, %why, "closing BMP connection"),
            }
        }
        if *station.info() != published {
            published = station.info().clone();
            if let Ok(mut n) = names.lock() {
                n.insert(router, published.clone());
            }
        }
        if station.is_closed() {
            let c = station.counters();
            tracing::info!(%router, sys_name = ?station.info().sys_name, messages = c.messages,
                dropped = c.malformed_dropped, mirroring_skipped = c.route_mirroring_skipped,
                adj_rib_out_skipped = c.adj_rib_out_skipped, "BMP connection ended");
            return Ok(());
        }
    }
}

/// Per router, peer and view: state and prefix counts, for the `summary` format.
#[derive(Debug, Default)]
pub struct Summary {
    rows: BTreeMap<(IpAddr, IpAddr, u64, BmpView), Row>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Row {
    pub up: bool,
    pub asn: u32,
    pub v4: usize,
    pub v6: usize,
    pub events: u64,
}

impl Summary {
    pub fn on_event(&mut self, ev: &Event) {
        let peer = match ev {
            Event::Route(r) => r.peer,
            Event::Session(s) => *s.peer_and_time().0,
        };
        let Source::Bmp {
            router,
            view,
            distinguisher,
        } = peer.source
        else {
            return;
        };
        let row = self
            .rows
            .entry((router, peer.addr, distinguisher, view))
            .or_default();
        row.asn = peer.asn;
        match ev {
            Event::Route(r) => {
                row.events += 1;
                let c = match r.family {
                    Family::Ipv4Unicast => &mut row.v4,
                    Family::Ipv6Unicast => &mut row.v6,
                };
                match r.change {
                    RouteChange::Announce { .. } => *c += 1,
                    RouteChange::Withdraw { .. } => *c = c.saturating_sub(1),
                    _ => {}
                }
            }
            Event::Session(SessionEvent::Established { .. }) => row.up = true,
            Event::Session(SessionEvent::Down { .. }) => {
                row.up = false;
                row.v4 = 0;
                row.v6 = 0;
            }
            _ => {}
        }
    }

    /// One line per router, peer and view; routers named by their Initiation sysName if known.
    pub fn lines(&self, names: &HashMap<IpAddr, RouterInfo>) -> Vec<String> {
        self.rows
            .iter()
            .map(|((router, peer, rd, view), r)| {
                let rd = if *rd == 0 {
                    String::new()
                } else {
                    format!(" rd {rd}")
                };
                let name = names
                    .get(router)
                    .and_then(|i| i.sys_name.as_deref())
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                format!(
                    "router {router}{name} peer {peer} AS{}{rd} {} {} v4 {} v6 {} events {}",
                    r.asn,
                    view.name(),
                    if r.up { "up" } else { "down" },
                    r.v4,
                    r.v6,
                    r.events
                )
            })
            .collect()
    }
}

/// The standalone `bmp` command: runs the station and prints events until `shutdown`.
pub async fn watch<W: Write>(
    listener: TcpListener,
    allowed_routers: Vec<IpAddr>,
    format: Format,
    out: &mut W,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StationError> {
    // Events taken from the channel at once, of the 1024 it holds.
    const BATCH: usize = 256;
    let (tx, mut rx) = mpsc::channel::<Event>(1024);
    let (stop_tx, stop_rx) = watch::channel(false);
    let names = RouterNames::default();
    let mut task = tokio::spawn(run_with_names(
        listener,
        allowed_routers,
        tx,
        stop_rx,
        Arc::clone(&names),
    ));
    let mut summary = Summary::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut shutdown = std::pin::pin!(shutdown);
    // Lines are gathered per batch of received events and written with one `write_all` (stdout
    // is line-buffered); JSON lines are written directly (`event_jsonl`).
    let mut jsonl = JsonlWriter::new();
    let mut lines: Vec<u8> = Vec::new();
    let mut print = |ev: &Event,
                     lines: &mut Vec<u8>,
                     summary: &mut Summary|
     -> std::io::Result<()> {
        summary.on_event(ev);
        match format {
            Format::Jsonl => {
                jsonl.line(lines, ev);
                Ok(())
            }
            Format::Text => writeln!(lines, "{}", event_text(ev)),
            Format::Summary => match ev {
                Event::Session(SessionEvent::Established { .. } | SessionEvent::Down { .. }) => {
                    writeln!(lines, "{}", event_text(ev))
                }
                _ => Ok(()),
            },
        }
    };
    let mut received: Vec<Event> = Vec::with_capacity(BATCH);
    let mut task_result = None;
    loop {
        tokio::select! {
            n = rx.recv_many(&mut received, BATCH) => {
                if n == 0 {
                    break;
                }
                for ev in received.drain(..) {
                    print(&ev, &mut lines, &mut summary)?;
                }
                out.write_all(&lines)?;
                lines.clear();
            }
            _ = tick.tick() => {
                if format == Format::Summary {
                    let names = names.lock().map(|n| n.clone()).unwrap_or_default();
                    for l in summary.lines(&names) {
                        writeln!(out, "{l}")?;
                    }
                }
            }
            _ = &mut shutdown => break,
            r = &mut task => {
                task_result = Some(r);
                break;
            }
        }
        out.flush()?;
    }
    let _ = stop_tx.send(true);
    // Print the peers going down as the connections end.
    while rx.recv_many(&mut received, BATCH).await > 0 {
        for ev in received.drain(..) {
            print(&ev, &mut lines, &mut summary)?;
        }
        out.write_all(&lines)?;
        lines.clear();
    }
    out.flush()?;
    let r = match task_result {
        Some(r) => r,
        None => task.await,
    };
    match r {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "BMP station task failed");
            Ok(())
        }
    }
}
