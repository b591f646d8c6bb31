//! One outbound HTTP/2 connection per agent, TLS done by us (tokio-rustls) so the trust decision
//! (pinned fingerprint or stored CA) is ours, not tonic's. Nothing here listens.

use std::{sync::Arc, time::Duration};

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tonic::transport::{Channel, Endpoint};

use crate::AgentError;

/// Splits `host:port` (IPv6 as `[::1]:7443`) into the TLS server name and the dial address.
pub fn split_addr(addr: &str) -> Result<(String, u16), AgentError> {
    let bad = || AgentError::Config(format!("collector address {addr:?} is not HOST:PORT"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

pub async fn connect(addr: &str, tls: ClientConfig) -> Result<Channel, AgentError> {
    let (host, port) = split_addr(addr)?;
    let server_name = ServerName::try_from(host.clone())
        .map_err(|_| AgentError::Config(format!("{host:?} is not a valid server name")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let dial = (host, port);
    let svc = tower::service_fn(move |_uri: http::Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        let dial = dial.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect((dial.0.as_str(), dial.1)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    // The URI is only a label here: the connector above decides where to dial.
    let channel = Endpoint::from_static("http://collector.invalid")
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect_with_connector(svc)
        .await
        .map_err(|e| AgentError::Connect(error_chain(&e)))?;
    Ok(channel)
}

/// Flattens an error and its sources, so "transport error" shows what actually failed.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
