//! The tokio side of the RTR client: one TCP connection at a time to the configured cache,
//! driving [`rtr::Session`], with the refresh, retry and expire timers of RFC 8210 section 6 and
//! reconnects with capped exponential backoff. A failure never clears the table; only the expire
//! timer does (no End of Data for `expire` since the last one), and then validation says Unknown.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    RpkiTable,
    rtr::{self, Session, Step},
};

/// `[rpki]` resolved. The intervals override what the cache announces (version 1) or the RFC
/// defaults (version 0).
#[derive(Clone, Debug)]
pub struct RtrConfig {
    /// `host:port` of the RTR cache (plain TCP; run it on the same host or a trusted network).
    pub server: String,
    pub refresh: Option<Duration>,
    pub retry: Option<Duration>,
    pub expire: Option<Duration>,
}

/// How long the cache gets to answer a query, and to accept a connection.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

struct Driver {
    cfg: RtrConfig,
    table: Arc<RpkiTable>,
    session: Session,
    /// When the held data expires; `None` while none is held.
    expires_at: Option<Instant>,
}

impl Driver {
    fn refresh(&self) -> Duration {
        self.cfg.refresh.unwrap_or(self.session.timing.refresh)
    }
    fn retry(&self) -> Duration {
        self.cfg.retry.unwrap_or(self.session.timing.retry)
    }
    fn expire(&self) -> Duration {
        self.cfg.expire.unwrap_or(self.session.timing.expire)
    }

    fn expired(&mut self) {
        tracing::warn!(server = %self.cfg.server, "RPKI data expired without a refresh: origin validation is unknown until the cache answers");
        self.session.forget();
        self.table.replace(None);
        self.expires_at = None;
        self.table.update_status(|s| {
            s.expirations += 1;
            s.serial = None;
            s.session_id = None;
        });
    }

    fn synced(&mut self, set: Arc<super::VrpSet>) {
        let count = set.len();
        self.table.replace(Some(set));
        self.expires_at = Some(Instant::now() + self.expire());
        let st = self.session.state();
        let version = self.session.version();
        self.table.update_status(|s| {
            s.session_id = st.map(|x| x.0);
            s.serial = st.map(|x| x.1);
            s.version = Some(version);
            s.last_sync_ms = Some(crate::server::now_ms());
        });
        tracing::info!(server = %self.cfg.server, vrps = count, serial = ?st.map(|x| x.1), version, "RPKI table synced");
    }
}

/// Sleeps until `at`, or forever when `None`.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How a connection ended.
enum End {
    Shutdown,
    /// Reconnect at once with this version.
    Downgrade(u8),
    /// Wait the retry interval (the cache has no data).
    Retry,
    /// Wait the backoff.
    Failed,
}

pub fn spawn(
    table: Arc<RpkiTable>,
    cfg: RtrConfig,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut d = Driver {
            cfg,
            table,
            session: Session::new(rtr::VERSION),
            expires_at: None,
        };
        let mut backoff = FIRST_BACKOFF;
        loop {
            let synced_before = d.table.status().last_sync_ms;
            let end = connection(&mut d, &shutdown).await;
            d.table.update_status(|s| s.connected = false);
            if d.table.status().last_sync_ms != synced_before {
                // The cache worked on this connection: start the backoff over.
                backoff = FIRST_BACKOFF;
            }
            let wait = match end {
                End::Shutdown => return,
                End::Downgrade(v) => {
                    tracing::info!(server = %d.cfg.server, version = v, "RTR cache speaks an older version");
                    d.session = Session::new(v);
                    continue;
                }
                End::Retry => d.retry(),
                End::Failed => backoff,
            };
            // Capped exponential backoff: quick while the cache restarts, at most the retry
            // interval while it stays away.
            backoff = (backoff * 2).min(d.retry().max(FIRST_BACKOFF));
            let resume = Instant::now() + wait;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(resume) => break,
                    _ = until(d.expires_at) => d.expired(),
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    })
}

async fn connection(d: &mut Driver, shutdown: &CancellationToken) -> End {
    let connect = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(d.cfg.server.as_str()));
    let sock = tokio::select! {
        r = connect => r,
        _ = shutdown.cancelled() => return End::Shutdown,
    };
    let sock = match sock {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(server = %d.cfg.server, error = %e, "cannot connect to the RTR cache");
            return End::Failed;
        }
        Err(_) => {
            tracing::warn!(server = %d.cfg.server, "connecting to the RTR cache timed out");
            return End::Failed;
        }
    };
    let _ = sock.set_nodelay(true);
    let (mut rd, mut wr) = sock.into_split();
    d.table.update_status(|s| s.connected = true);
    tracing::info!(server = %d.cfg.server, version = d.session.version(), "connected to the RTR cache");
    let first = d.session.connected();
    if let Err(e) = wr.write_all(&first).await {
        tracing::warn!(server = %d.cfg.server, error = %e, "RTR write failed");
        return End::Failed;
    }
    let mut deadline = Some(Instant::now() + IO_TIMEOUT);
    let mut refresh_at: Option<Instant> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        // Every complete PDU in the buffer first, then one compaction.
        let mut at = 0;
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut end = None;
        while let Some(rest) = buf.get(at..) {
            let n = match rtr::frame(rest) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(server = %d.cfg.server, error = %e, "RTR framing error");
                    out.push(rtr::error_report(
                        d.session.version(),
                        rtr::code::CORRUPT_DATA,
                        &[],
                        &e.to_string(),
                    ));
                    end = Some(End::Failed);
                    break;
                }
            };
            let frame = rest.get(..n).unwrap_or(&[]);
            at += n;
            match d.session.handle(frame) {
                Ok(Step::Nothing) => {}
                Ok(Step::Send(b)) => {
                    deadline = Some(Instant::now() + IO_TIMEOUT);
                    out.push(b);
                }
                Ok(Step::Synced(set)) => {
                    d.synced(set);
                    deadline = None;
                    refresh_at = Some(Instant::now() + d.refresh());
                }
                Err(f) => {
                    tracing::warn!(server = %d.cfg.server, reason = %f.reason, "RTR session error");
                    out.extend(f.reply);
                    end = Some(match (f.downgrade, f.no_data) {
                        (Some(v), _) => End::Downgrade(v),
                        (None, true) => End::Retry,
                        _ => End::Failed,
                    });
                    break;
                }
            }
        }
        buf.drain(..at.min(buf.len()));
        for b in out {
            if let Err(e) = wr.write_all(&b).await {
                tracing::warn!(server = %d.cfg.server, error = %e, "RTR write failed");
                return End::Failed;
            }
        }
        if let Some(end) = end {
            let _ = wr.shutdown().await;
            return end;
        }
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => {
                    tracing::warn!(server = %d.cfg.server, "the RTR cache closed the connection");
                    return End::Failed;
                }
                Ok(_) => {
                    // A large response on a slow link: the deadline is for silence, not for the
                    // whole transfer.
                    if d.session.awaiting_response() {
                        deadline = Some(Instant::now() + IO_TIMEOUT);
                    }
                }
                Err(e) => {
                    tracing::warn!(server = %d.cfg.server, error = %e, "RTR read failed");
                    return End::Failed;
                }
            },
            _ = until(refresh_at), if !d.session.awaiting_response() => {
                refresh_at = None;
                if let Some(q) = d.session.refresh() {
                    deadline = Some(Instant::now() + IO_TIMEOUT);
                    if wr.write_all(&q).await.is_err() {
                        return End::Failed;
                    }
                }
            }
            _ = until(deadline) => {
                tracing::warn!(server = %d.cfg.server, "the RTR cache did not answer in time");
                return End::Failed;
            }
            _ = until(d.expires_at) => d.expired(),
            _ = shutdown.cancelled() => return End::Shutdown,
        }
    }
}
