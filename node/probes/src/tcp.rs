//! TCP connect executor: the headline is the time the three-way handshake takes.

use std::net::SocketAddr;
use std::time::Instant;

use foureyes_proto::v1::{TcpConfig, TcpResult, probe_result::Detail};

use crate::{Outcome, ProbeError, Settings};

pub(crate) async fn run(cfg: &TcpConfig, settings: &Settings) -> Outcome {
    let mut detail = TcpResult::default();
    match connect_run(cfg, settings, &mut detail).await {
        Ok(()) => Outcome::ok(detail.connect_ms, Detail::Tcp(detail)),
        Err(e) => Outcome::failed(e, Some(Detail::Tcp(detail))),
    }
}

async fn connect_run(
    cfg: &TcpConfig,
    settings: &Settings,
    detail: &mut TcpResult,
) -> Result<(), ProbeError> {
    let port = port(cfg.port)?;
    let family = crate::family(cfg.family)?;
    let addr = crate::resolve(&cfg.host, port, family, settings.timeout).await?;
    detail.address = addr.to_string();
    let took = match connect(addr, settings).await {
        Ok((_stream, took)) => took,
        // The handshake completed, which is what this test measures.
        Err(ProbeError::ResetAfterHandshake { took, .. }) => took,
        Err(e) => return Err(e),
    };
    detail.connect_ms = crate::ms(took);
    Ok(())
}

pub(crate) fn port(raw: u32) -> Result<u16, ProbeError> {
    match u16::try_from(raw) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ProbeError::Config(format!(
            "port {raw} is not a valid TCP port (1-65535)"
        ))),
    }
}

/// Connects within the run's timeout and classifies failures (refused / unreachable / timeout).
pub(crate) async fn connect(
    addr: SocketAddr,
    settings: &Settings,
) -> Result<(tokio::net::TcpStream, std::time::Duration), ProbeError> {
    let start = Instant::now();
    match tokio::time::timeout(settings.timeout, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => Err(ProbeError::Timeout {
            target: addr.to_string(),
            ms: settings.timeout_ms(),
        }),
        // A reset in SYN_SENT is ECONNREFUSED; ECONNRESET means the RST came after the
        // handshake, before we saw the connect complete (a server that accepts and resets).
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            Err(ProbeError::ResetAfterHandshake {
                target: addr.to_string(),
                took: start.elapsed(),
            })
        }
        Ok(Err(e)) => Err(match ProbeError::from_io(e, addr, "connecting to") {
            ProbeError::Timeout { target, .. } => ProbeError::Timeout {
                target,
                ms: settings.timeout_ms(),
            },
            other => other,
        }),
        Ok(Ok(stream)) => {
            let took = start.elapsed();
            // Probes are short exchanges: Nagle would only add latency to the HTTP request.
            let _ = stream.set_nodelay(true);
            Ok((stream, took))
        }
    }
}
