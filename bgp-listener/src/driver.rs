//! The thin tokio driver: owns the TCP connection and the timers, feeds a [`Session`], writes what
//! it sends, and forwards its events.
//!
//! Backpressure: events go into a bounded channel and the driver awaits room before reading more
//! from the socket, so a slow consumer slows the peer down through TCP (hold timer permitting)
//! instead of growing memory.

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Duration, Instant, sleep_until};

use crate::event::Event;
use crate::session::{Input, Output, Session, SessionConfig, Timer};
use crate::wire::encode;

/// The BGP port (RFC 4271).
pub const BGP_PORT: u16 = 179;

/// How the session's TCP connection comes about.
#[derive(Debug)]
pub enum Connection {
    /// Accept the peer's connection on this already bound listener; connections from any other
    /// address are closed at once.
    Passive(TcpListener),
    /// Dial the peer at this address, retrying after `retry`.
    Active { remote: SocketAddr, retry: Duration },
    /// Connections from the peer accepted elsewhere: `run` shares one listening socket between
    /// the peers configured on it and hands each its own connections.
    Accepted(mpsc::Receiver<TcpStream>),
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("accept failed: {0}")]
    Accept(std::io::Error),
    #[error("event receiver went away")]
    EventsClosed,
}

fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Runs sessions with one peer until `stop` becomes true (then a Cease is sent if a session is up).
pub async fn run(
    cfg: SessionConfig,
    mut conn: Connection,
    events: mpsc::Sender<Event>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), DriverError> {
    let mut session = Session::new(cfg.clone());
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let stream = match &mut conn {
            Connection::Accepted(rx) => {
                tokio::select! {
                    s = rx.recv() => match s {
                        Some(s) => s,
                        None => return Ok(()),
                    },
                    _ = stop.changed() => return Ok(()),
                }
            }
            Connection::Passive(listener) => {
                let (stream, from) = tokio::select! {
                    r = listener.accept() => r.map_err(DriverError::Accept)?,
                    _ = stop.changed() => return Ok(()),
                };
                if canonical(from.ip()) != canonical(cfg.peer) {
                    tracing::warn!(%from, peer = %cfg.peer, "connection from an address that is not the configured peer; closed");
                    drop(stream);
                    continue;
                }
                tracing::info!(%from, "accepted connection from peer");
                stream
            }
            Connection::Active { remote, retry } => {
                let r = tokio::select! {
                    r = TcpStream::connect(*remote) => r,
                    _ = stop.changed() => return Ok(()),
                };
                match r {
                    Ok(s) => {
                        tracing::info!(%remote, "connected to peer");
                        s
                    }
                    Err(e) => {
                        tracing::info!(%remote, error = %e, "connect failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(*retry) => continue,
                            _ = stop.changed() => return Ok(()),
                        }
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        run_connection(&mut session, stream, &events, &mut stop).await?;
    }
}

async fn run_connection(
    session: &mut Session,
    stream: TcpStream,
    events: &mpsc::Sender<Event>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), DriverError> {
    let (mut rd, mut wr) = stream.into_split();
    let mut hold: Option<Instant> = None;
    let mut keepalive: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut input = Some(Input::Connected);
    let far = || Instant::now() + Duration::from_secs(86400 * 365);
    loop {
        if let Some(i) = input.take() {
            let outputs = session.handle(SystemTime::now(), i);
            let mut close = false;
            for o in outputs {
                match o {
                    Output::Send(msg) => {
                        if let Err(e) = wr.write_all(&encode(&msg)).await {
                            tracing::info!(error = %e, "write failed");
                            close = true;
                        }
                    }
                    Output::Event(ev) => {
                        events
                            .send(ev)
                            .await
                            .map_err(|_| DriverError::EventsClosed)?;
                    }
                    Output::SetTimer(t, d) => {
                        let at = d.map(|d| Instant::now() + d);
                        match t {
                            Timer::Hold => hold = at,
                            Timer::Keepalive => keepalive = at,
                        }
                    }
                    Output::Close => close = true,
                }
            }
            if close {
                let _ = wr.shutdown().await;
                // Deliver the Down event if the session has not produced one yet.
                if session.state() != crate::session::State::Idle {
                    deliver_closed(session, events).await?;
                }
                return Ok(());
            }
        }
        let hold_at = hold.unwrap_or_else(far);
        let ka_at = keepalive.unwrap_or_else(far);
        input = Some(tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => Input::Closed,
                Ok(n) => Input::Received(buf.get(..n).unwrap_or_default().to_vec()),
            },
            _ = sleep_until(hold_at), if hold.is_some() => { hold = None; Input::TimerFired(Timer::Hold) },
            _ = sleep_until(ka_at), if keepalive.is_some() => { keepalive = None; Input::TimerFired(Timer::Keepalive) },
            r = stop.changed() => match r {
                Ok(()) if !*stop.borrow() => continue,
                _ => Input::Stop,
            },
        });
        if matches!(input, Some(Input::Closed)) {
            deliver_closed(session, events).await?;
            return Ok(());
        }
    }
}

/// Tells the session its connection closed and forwards the events that produces (the one
/// session-down event with the count of routes lost).
async fn deliver_closed(
    session: &mut Session,
    events: &mpsc::Sender<Event>,
) -> Result<(), DriverError> {
    for o in session.handle(SystemTime::now(), Input::Closed) {
        if let Output::Event(ev) = o {
            events
                .send(ev)
                .await
                .map_err(|_| DriverError::EventsClosed)?;
        }
    }
    Ok(())
}
