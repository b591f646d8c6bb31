//! HTTP(S) executor. The phases are driven by hand (resolve, connect, TLS, request) rather than
//! through a pooled client so each can be timed on its own and failures land in the right kind.
//!
//! Timings: `dns_ms`, `connect_ms` and `tls_ms` are the duration of that phase alone;
//! `first_byte_ms` (response head received) and `total_ms` (body fully read) are counted from the
//! start of the run, like curl's `time_starttransfer` and `time_total`, so
//! `total_ms >= first_byte_ms >= dns_ms + connect_ms + tls_ms`.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use foureyes_proto::v1::{HttpConfig, HttpMethod, HttpResult, probe_result::Detail};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Method, Request, Uri, header};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{Outcome, ProbeError, Settings};

const USER_AGENT: &str = concat!("foureyes-node/", env!("CARGO_PKG_VERSION"));

pub(crate) async fn run(cfg: &HttpConfig, settings: &Settings) -> Outcome {
    let mut detail = HttpResult::default();
    let start = Instant::now();
    let result = match tokio::time::timeout(
        settings.timeout,
        fetch(cfg, settings, &mut detail, start),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout {
            target: cfg.url.clone(),
            ms: settings.timeout_ms(),
        }),
    };
    match result {
        Ok(()) => Outcome::ok(detail.total_ms, Detail::Http(detail)),
        Err(e @ ProbeError::Http(_)) if detail.status_code != 0 => {
            Outcome::answered_wrong(e, detail.total_ms, Detail::Http(detail))
        }
        Err(e) => Outcome::failed(e, Some(Detail::Http(detail))),
    }
}

fn config_err(msg: impl Into<String>) -> ProbeError {
    ProbeError::Config(msg.into())
}

async fn fetch(
    cfg: &HttpConfig,
    settings: &Settings,
    detail: &mut HttpResult,
    start: Instant,
) -> Result<(), ProbeError> {
    let uri: Uri = cfg
        .url
        .trim()
        .parse()
        .map_err(|e| config_err(format!("url {:?} is not a valid URL: {e}", cfg.url)))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(config_err(format!(
                "url {:?} is not http:// or https://",
                cfg.url
            )));
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| config_err(format!("url {:?} has no host", cfg.url)))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let method = match HttpMethod::try_from(cfg.method) {
        Ok(HttpMethod::Get) => Method::GET,
        Ok(HttpMethod::Head) => Method::HEAD,
        Err(_) => return Err(config_err(format!("unknown HTTP method {}", cfg.method))),
    };
    if cfg.expect_status != 0 && !(100..=999).contains(&cfg.expect_status) {
        return Err(config_err(format!(
            "expect_status {} is not an HTTP status code",
            cfg.expect_status
        )));
    }
    let family = crate::family(cfg.family)?;
    // Parse everything from the config before touching the network.
    let tls_config = if tls {
        Some(tls_config(&cfg.ca_certificate_der)?)
    } else {
        None
    };
    let server_name = if tls {
        Some(
            ServerName::try_from(host.to_string())
                .map_err(|e| config_err(format!("host {host:?} is not a TLS server name: {e}")))?,
        )
    } else {
        None
    };
    // Host header: the authority without any userinfo.
    let host_header = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, h)| h)
        .to_string();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, host_header)
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::ACCEPT, "*/*")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| config_err(format!("cannot build a request for {:?}: {e}", cfg.url)))?;

    let t = Instant::now();
    let addr = crate::resolve(host, port, family, settings.timeout).await?;
    detail.dns_ms = crate::elapsed_ms(t);
    detail.address = addr.to_string();

    let (tcp, took) = crate::tcp::connect(addr, settings)
        .await
        .map_err(|e| match e {
            ProbeError::ResetAfterHandshake { .. } => ProbeError::Http(e.to_string()),
            e => e,
        })?;
    detail.connect_ms = crate::ms(took);

    match (tls_config, server_name) {
        (Some(config), Some(name)) => {
            let t = Instant::now();
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| ProbeError::Tls {
                    target: addr.to_string(),
                    reason: e.to_string(),
                })?;
            detail.tls_ms = crate::elapsed_ms(t);
            exchange(stream, request, cfg.expect_status, detail, start).await
        }
        _ => exchange(tcp, request, cfg.expect_status, detail, start).await,
    }
}

async fn exchange<S>(
    stream: S,
    request: Request<Empty<Bytes>>,
    expect_status: u32,
    detail: &mut HttpResult,
    start: Instant,
) -> Result<(), ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_err = |e: hyper::Error| ProbeError::Http(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_err)?;
    let exchange = async {
        let response = sender.send_request(request).await.map_err(http_err)?;
        detail.first_byte_ms = crate::elapsed_ms(start);
        let status_code = u32::from(response.status().as_u16());
        detail.status_code = status_code;
        let mut body = response.into_body();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(http_err)?;
            if let Some(data) = frame.data_ref() {
                bytes += data.len() as u64;
            }
        }
        detail.body_bytes = bytes;
        detail.total_ms = crate::elapsed_ms(start);
        Ok::<u32, ProbeError>(status_code)
    };
    // The connection future does the actual I/O; drive it next to the exchange instead of
    // spawning it so nothing outlives the run's timeout.
    tokio::pin!(exchange);
    tokio::pin!(conn);
    let mut conn_done = false;
    let code = loop {
        tokio::select! {
            biased;
            r = &mut exchange => break r?,
            c = &mut conn, if !conn_done => {
                conn_done = true;
                c.map_err(http_err)?;
            }
        }
    };
    let accepted = if expect_status == 0 {
        (200..400).contains(&code)
    } else {
        code == expect_status
    };
    if accepted {
        Ok(())
    } else {
        let expected = if expect_status == 0 {
            "2xx or 3xx".to_string()
        } else {
            expect_status.to_string()
        };
        Err(ProbeError::Http(format!(
            "status {code}, expected {expected}"
        )))
    }
}

/// Web PKI roots plus the test's private CA, if any. The common no-extra-CA config is built once:
/// parsing ~150 roots per run would cost more than many probes.
fn tls_config(extra_ca_der: &[u8]) -> Result<Arc<ClientConfig>, ProbeError> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let (true, Some(c)) = (extra_ca_der.is_empty(), DEFAULT.get()) {
        return Ok(c.clone());
    }
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if !extra_ca_der.is_empty() {
        roots
            .add(CertificateDer::from(extra_ca_der.to_vec()))
            .map_err(|e| {
                config_err(format!(
                    "ca_certificate_der is not a usable certificate: {e}"
                ))
            })?;
    }
    // An explicit provider: the process-wide default may be unset or another engineer's choice.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeError::Io {
            context: "building TLS config".into(),
            source: std::io::Error::other(e),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    if extra_ca_der.is_empty() {
        let _ = DEFAULT.set(config.clone());
    }
    Ok(config)
}
