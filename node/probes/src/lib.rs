//! Closed registry of probe executors.
//!
//! A node can only run what a `ProbeConfig` variant describes: there is no command string, no
//! plug-in, nothing a collector could use to make a node run arbitrary code. Every executor turns
//! network trouble into a `Status` and a human `error`, never into a panic, because a node runs
//! thousands of these against networks we do not control.
//!
//! Executors measure with real sockets (ICMP datagram or raw sockets, TCP, TLS, DNS over UDP/TCP)
//! so the figures are what the network does, not what a library's retry policy makes of it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use foureyes_proto::v1::{IpFamily, ProbeResult, Status, Test, probe_config, probe_result};

mod burst_trace;
pub mod dev_dns;
mod dns;
mod http;
pub mod icmp;
mod packet;
mod tcp;
mod traceroute;

pub use burst_trace::{TRACE_SUFFIX, burst_traceroute, parent_test_id, trace_test_id};

/// Applied when a test leaves `timeout_ms` at zero.
pub const DEFAULT_TIMEOUT_MS: u32 = 2000;
/// Echoes per ICMP run when a test leaves `count` at zero: one echo says little about loss.
pub const DEFAULT_ICMP_COUNT: u32 = 5;
/// Upper bound on `count`: a run must end in bounded time and memory whatever a config says.
pub const MAX_COUNT: u32 = 10_000;
/// Upper bound on `timeout_ms` (ten minutes): beyond that a "timeout" is a config mistake.
pub const MAX_TIMEOUT_MS: u32 = 600_000;

/// Runs one run of `test` and returns its result. seq, agent_id, received_at are left at default:
/// the caller fills seq.
pub async fn run_test(test: &Test) -> ProbeResult {
    let sent_at = SystemTime::now();
    let outcome = match Settings::from_test(test) {
        Ok(settings) => dispatch(test, &settings).await,
        Err(e) => Outcome::failed(e, None),
    };
    let mut result = ProbeResult {
        test_id: test.id.clone(),
        sent_at: Some(foureyes_proto::timestamp(sent_at)),
        error: outcome.error,
        latency_ms: outcome.latency_ms,
        loss: outcome.loss,
        detail: outcome.detail,
        ..Default::default()
    };
    result.set_status(outcome.status);
    result
}

async fn dispatch(test: &Test, settings: &Settings) -> Outcome {
    let Some(kind) = test.config.as_ref().and_then(|c| c.kind.as_ref()) else {
        return Outcome::failed(ProbeError::Config("test has no probe config".into()), None);
    };
    match kind {
        probe_config::Kind::Icmp(cfg) => icmp::run(cfg, settings).await,
        probe_config::Kind::Tcp(cfg) => tcp::run(cfg, settings).await,
        probe_config::Kind::Http(cfg) => http::run(cfg, settings).await,
        probe_config::Kind::Dns(cfg) => dns::run(cfg, settings).await,
        probe_config::Kind::Traceroute(cfg) => traceroute::run(cfg, settings).await,
    }
}

/// Run-wide knobs with defaults applied, so executors never see a zero timeout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub timeout: Duration,
    /// `count` as configured (0 = executor default).
    pub count: u32,
}

impl Settings {
    fn from_test(test: &Test) -> Result<Self, ProbeError> {
        let timeout_ms = match test.timeout_ms {
            0 => DEFAULT_TIMEOUT_MS,
            t if t > MAX_TIMEOUT_MS => {
                return Err(ProbeError::Config(format!(
                    "timeout_ms {t} is above the maximum of {MAX_TIMEOUT_MS}"
                )));
            }
            t => t,
        };
        if test.count > MAX_COUNT {
            return Err(ProbeError::Config(format!(
                "count {} is above the maximum of {MAX_COUNT}",
                test.count
            )));
        }
        Ok(Self {
            timeout: Duration::from_millis(u64::from(timeout_ms)),
            count: test.count,
        })
    }

    pub fn timeout_ms(&self) -> u128 {
        self.timeout.as_millis()
    }
}

/// Why a run failed. Each variant maps to one wire `Status` so alerting can tell them apart.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error("bad config: {0}")]
    Config(String),
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("{0}")]
    Dns(String),
    #[error("no answer from {target} within {ms} ms")]
    Timeout { target: String, ms: u128 },
    #[error("{target} refused the connection")]
    Refused { target: String },
    #[error("{target} is unreachable: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("TLS with {target} failed: {reason}")]
    Tls { target: String, reason: String },
    #[error("HTTP exchange failed: {0}")]
    Http(String),
    #[error("{0}")]
    Mismatch(String),
    /// RST after the handshake completed (a reset in SYN_SENT is "refused"): the port is open
    /// but the server dropped us at once. Each executor decides what that means for it.
    #[error("{target} reset the connection right after accepting it")]
    ResetAfterHandshake { target: String, took: Duration },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl ProbeError {
    pub fn status(&self) -> Status {
        match self {
            ProbeError::Config(_)
            | ProbeError::Io { .. }
            | ProbeError::ResetAfterHandshake { .. } => Status::Error,
            ProbeError::Resolve { .. } | ProbeError::Dns(_) => Status::DnsFailure,
            ProbeError::Timeout { .. } => Status::Timeout,
            ProbeError::Refused { .. } => Status::Refused,
            ProbeError::Unreachable { .. } => Status::Unreachable,
            ProbeError::Tls { .. } => Status::TlsFailure,
            ProbeError::Http(_) => Status::HttpFailure,
            ProbeError::Mismatch(_) => Status::Mismatch,
        }
    }

    /// Sorts a socket error into the kinds alerting distinguishes (refused vs unreachable vs
    /// timeout); anything else is a local error.
    pub fn from_io(err: std::io::Error, target: impl std::fmt::Display, context: &str) -> Self {
        use std::io::ErrorKind;
        let target = target.to_string();
        match err.kind() {
            ErrorKind::ConnectionRefused => ProbeError::Refused { target },
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => ProbeError::Unreachable {
                target,
                reason: err.to_string(),
            },
            ErrorKind::TimedOut => ProbeError::Timeout { target, ms: 0 },
            _ => ProbeError::Io {
                context: format!("{context} {target}"),
                source: err,
            },
        }
    }
}

/// What an executor hands back; `run_test` adds the envelope fields.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub status: Status,
    pub error: String,
    pub latency_ms: f64,
    pub loss: f64,
    pub detail: Option<probe_result::Detail>,
}

impl Outcome {
    pub fn ok(latency_ms: f64, detail: probe_result::Detail) -> Self {
        Self {
            status: Status::Ok,
            error: String::new(),
            latency_ms,
            loss: 0.0,
            detail: Some(detail),
        }
    }

    /// The target answered, but not what the test expects: latency is real, nothing was lost.
    pub fn answered_wrong(err: ProbeError, latency_ms: f64, detail: probe_result::Detail) -> Self {
        Self {
            status: err.status(),
            error: err.to_string(),
            latency_ms,
            loss: 0.0,
            detail: Some(detail),
        }
    }

    /// A run with nothing measured: every attempt counts as lost.
    pub fn failed(err: ProbeError, detail: Option<probe_result::Detail>) -> Self {
        tracing::debug!(error = %err, "probe run failed");
        Self {
            status: err.status(),
            error: err.to_string(),
            latency_ms: 0.0,
            loss: 1.0,
            detail,
        }
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn elapsed_ms(since: Instant) -> f64 {
    ms(since.elapsed())
}

pub(crate) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

pub(crate) fn family(raw: i32) -> Result<IpFamily, ProbeError> {
    IpFamily::try_from(raw).map_err(|_| ProbeError::Config(format!("unknown IP family {raw}")))
}

fn family_matches(ip: &IpAddr, family: IpFamily) -> bool {
    match family {
        IpFamily::Any => true,
        IpFamily::V4 => ip.is_ipv4(),
        IpFamily::V6 => ip.is_ipv6(),
    }
}

/// Resolves `host` (name or IP literal, IPv6 literals with or without brackets) to one address of
/// the requested family. Resolution is bounded by `timeout` because the system resolver's own
/// timeouts (seconds per server, several servers) would blow the run's budget.
pub(crate) async fn resolve(
    host: &str,
    port: u16,
    family: IpFamily,
    timeout: Duration,
) -> Result<SocketAddr, ProbeError> {
    let host = host.trim();
    if host.is_empty() {
        return Err(ProbeError::Config("host is empty".into()));
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        if !family_matches(&ip, family) {
            return Err(ProbeError::Config(format!(
                "address {ip} does not match the requested family {}",
                family.as_str_name()
            )));
        }
        return Ok(SocketAddr::new(ip, port));
    }
    let lookup = tokio::net::lookup_host((bare, port));
    let addrs = match tokio::time::timeout(timeout, lookup).await {
        Err(_) => {
            return Err(ProbeError::Resolve {
                host: bare.to_string(),
                reason: format!("no answer within {} ms", timeout.as_millis()),
            });
        }
        Ok(Err(e)) => {
            return Err(ProbeError::Resolve {
                host: bare.to_string(),
                reason: e.to_string(),
            });
        }
        Ok(Ok(addrs)) => addrs,
    };
    let mut first_other = None;
    for addr in addrs {
        if family_matches(&addr.ip(), family) {
            return Ok(addr);
        }
        first_other.get_or_insert(addr);
    }
    Err(ProbeError::Resolve {
        host: bare.to_string(),
        reason: match first_other {
            Some(_) => format!("no {} address", family.as_str_name()),
            None => "no address".into(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[tokio::test]
    async fn resolve_literals_and_family() {
        let t = Duration::from_secs(1);
        let a = resolve("[::1]", 80, IpFamily::Any, t)
            .await
            .expect("v6 literal");
        assert_eq!(a, "[::1]:80".parse().expect("addr"));
        assert!(matches!(
            resolve("127.0.0.1", 80, IpFamily::V6, t).await,
            Err(ProbeError::Config(_))
        ));
        assert!(matches!(
            resolve("", 80, IpFamily::Any, t).await,
            Err(ProbeError::Config(_))
        ));
    }

    #[tokio::test]
    async fn missing_config_is_error_not_panic() {
        let r = run_test(&Test::default()).await;
        assert_eq!(r.status(), Status::Error);
        assert!(!r.error.is_empty());
    }
}
