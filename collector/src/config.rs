//! Collector configuration: a strict TOML file (unknown keys are errors naming the key and file),
//! overridden by command-line flags. Secrets never sit in it: it names files or env variables.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    /// Where agents connect (mTLS gRPC). Default 0.0.0.0:7443.
    pub node_addr: Option<SocketAddr>,
    /// REST API, dashboard, metrics. Default 127.0.0.1:8080.
    pub api_addr: Option<SocketAddr>,
    /// File holding the key-encryption key (hex or base64, 32 bytes). `FOUREYES_KEK` wins over it.
    pub kek_file: Option<PathBuf>,
    /// Names agents dial the collector by (DNS names or IPs) for its server certificate.
    #[serde(default)]
    pub server_names: Vec<String>,
    /// Agent certificate lifetime, e.g. "24h". Agents renew at half-life.
    pub agent_cert_lifetime: Option<String>,
    /// Operator certificate chain (PEM) and key (PEM) for the HTTPS API. Without them, a
    /// non-loopback API gets a certificate from the collector's CA.
    pub api_tls_cert_file: Option<PathBuf>,
    pub api_tls_key_file: Option<PathBuf>,
    /// Base URL nodes download releases from (default: the API URL).
    pub update_base_url: Option<String>,
    /// Base URL Slack and PagerDuty can fetch signed chart links from (`/charts/...` under it);
    /// unset: those notifiers carry no chart.
    pub chart_base_url: Option<String>,
    /// File holding the bearer token a Prometheus scraper presents for `/metrics` from a
    /// non-loopback address (loopback clients need none). The token itself is never in this file.
    pub metrics_token_file: Option<PathBuf>,
    #[serde(default)]
    pub ingest: IngestFileConfig,
    #[serde(default)]
    pub correlation: CorrelationFileConfig,
    #[serde(default)]
    pub stream: StreamFileConfig,
    #[serde(default)]
    pub rpki: RpkiFileConfig,
    #[serde(default)]
    pub otlp: OtlpFileConfig,
    /// What tenants' notification targets may reach (`[notifier_policy]`: `allow_private`,
    /// `allowed` networks). By default not loopback, link-local, private ranges or the
    /// collector's own addresses (see collector/notify/README.md).
    #[serde(default)]
    pub notifier_policy: foureyes_notify::TargetPolicySpec,
}

/// `[otlp]`: export of health metrics and ingest spans over OTLP/HTTP (protobuf).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpFileConfig {
    /// Base URL of the OTLP/HTTP receiver, e.g. "http://127.0.0.1:4318". Without it, no export.
    pub endpoint: Option<String>,
    /// Export period, e.g. "10s" (default 10s).
    pub interval: Option<String>,
    /// Header name to a file holding its value (e.g. `authorization = "/etc/foureyes/otlp.auth"`):
    /// tokens stay out of this file.
    #[serde(default)]
    pub header_files: std::collections::BTreeMap<String, PathBuf>,
}

/// `[rpki]`: origin validation against an RTR cache (RFC 8210, falling back to RFC 6810).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpkiFileConfig {
    /// `host:port` of the RTR cache (plain TCP, e.g. a local Routinator or StayRTR). Without it,
    /// every RPKI state is "unknown".
    pub rtr_server: Option<String>,
    /// Override the cache's refresh, retry and expire intervals, e.g. "10m".
    pub refresh: Option<String>,
    pub retry: Option<String>,
    pub expire: Option<String>,
}

/// `[stream]`: the live event stream (`/api/v1/stream`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamFileConfig {
    /// Events queued per client before the client counts as too slow and is dropped (default 1024).
    pub client_buffer: Option<usize>,
    /// Rows a `Last-Event-ID` resume replays at most before it sends `event: reset` and goes live
    /// (default 10000).
    pub max_replay: Option<usize>,
}

/// `[correlation]`: windows and verdict thresholds (see `correlator.rs` for the rules).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationFileConfig {
    /// Window before the first route event, e.g. "5m".
    pub before: Option<String>,
    /// Window after the last route event, e.g. "2m".
    pub after: Option<String>,
    /// Events of one peer closer than this fold into one incident, e.g. "10s".
    pub incident_gap: Option<String>,
    /// Longest an incident stays open while its peer keeps changing, e.g. "10m" (the default).
    pub max_incident: Option<String>,
    /// Longest a session's initial transfer is ignored when no End-of-RIB comes, e.g. "2m".
    pub transfer_cap: Option<String>,
    /// Verdict thresholds (docs/correlation.md); checked at load.
    pub latency_factor: Option<f64>,
    pub latency_min_ms: Option<f64>,
    pub latency_p95_factor: Option<f64>,
    pub latency_p95_min_ms: Option<f64>,
    pub loss_delta: Option<f64>,
    /// Results this soon after the last event are left out of the after window, e.g. "2s".
    pub settle: Option<String>,
    /// Runs of the probe burst a route change triggers on the touched tests (0 turns bursts off).
    pub burst_runs: Option<u32>,
    /// Spacing of those runs, e.g. "1s".
    pub burst_spacing: Option<String>,
    /// A node gets at most one burst in this long, e.g. "5s" (the default; "0s": no cap).
    pub burst_node_interval: Option<String>,
    /// Whether a burst also traces the route toward each touched test's target (default true).
    pub burst_traceroute: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestFileConfig {
    pub capacity_records: Option<usize>,
    pub max_batch_records: Option<usize>,
    pub max_delay_ms: Option<u64>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub node_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub kek_file: PathBuf,
    pub server_names: Vec<String>,
    pub agent_cert_lifetime: Duration,
    pub api_tls: Option<(PathBuf, PathBuf)>,
    pub update_base_url: Option<String>,
    pub chart_base_url: Option<String>,
    pub ingest: foureyes_store::ingest::IngestConfig,
    pub correlation: crate::correlator::CorrelationConfig,
    pub metrics_token_file: Option<PathBuf>,
    pub stream_client_buffer: usize,
    pub stream_max_replay: usize,
    /// Alert rules and notifiers file (`serve --rules FILE`), reloaded on SIGHUP.
    pub rules_file: Option<PathBuf>,
    pub notifier_policy: foureyes_notify::TargetPolicySpec,
    pub rpki: Option<crate::rpki::client::RtrConfig>,
    pub otlp: Option<crate::otlp::OtlpConfig>,
}

impl Config {
    pub fn resolve(
        file: FileConfig,
        data_dir: Option<PathBuf>,
        node_addr: Option<SocketAddr>,
        api_addr: Option<SocketAddr>,
    ) -> Result<Self, String> {
        let data_dir = data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("foureyes-data"));
        let lifetime = match &file.agent_cert_lifetime {
            Some(s) => humantime::parse_duration(s)
                .map_err(|e| format!("agent_cert_lifetime {s:?}: {e}"))?,
            None => Duration::from_secs(24 * 3600),
        };
        if lifetime < Duration::from_secs(2) {
            return Err("agent_cert_lifetime must be at least 2s".into());
        }
        let api_tls = match (file.api_tls_cert_file, file.api_tls_key_file) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err("api_tls_cert_file and api_tls_key_file go together".into()),
        };
        let mut server_names = file.server_names;
        for n in ["localhost", "127.0.0.1", "::1"] {
            if !server_names.iter().any(|s| s == n) {
                server_names.push(n.to_string());
            }
        }
        let mut ingest = foureyes_store::ingest::IngestConfig::default();
        if let Some(v) = file.ingest.capacity_records {
            ingest.capacity_records = v;
        }
        if let Some(v) = file.ingest.max_batch_records {
            ingest.max_batch_records = v;
        }
        if let Some(v) = file.ingest.max_delay_ms {
            ingest.max_delay = Duration::from_millis(v);
        }
        let mut correlation = crate::correlator::CorrelationConfig::default();
        let dur = |name: &str, v: &Option<String>, d: &mut Duration| -> Result<(), String> {
            if let Some(s) = v {
                *d = humantime::parse_duration(s)
                    .map_err(|e| format!("correlation.{name} {s:?}: {e}"))?;
            }
            Ok(())
        };
        let fc = &file.correlation;
        dur("before", &fc.before, &mut correlation.before)?;
        dur("after", &fc.after, &mut correlation.after)?;
        dur(
            "incident_gap",
            &fc.incident_gap,
            &mut correlation.incident_gap,
        )?;
        dur(
            "max_incident",
            &fc.max_incident,
            &mut correlation.max_incident,
        )?;
        dur(
            "transfer_cap",
            &fc.transfer_cap,
            &mut correlation.transfer_cap,
        )?;
        if let Some(v) = fc.latency_factor {
            correlation.latency_factor = v;
        }
        if let Some(v) = fc.latency_min_ms {
            correlation.latency_min_ms = v;
        }
        if let Some(v) = fc.latency_p95_factor {
            correlation.latency_p95_factor = v;
        }
        if let Some(v) = fc.latency_p95_min_ms {
            correlation.latency_p95_min_ms = v;
        }
        if let Some(v) = fc.loss_delta {
            correlation.loss_delta = v;
        }
        dur("settle", &fc.settle, &mut correlation.settle)?;
        if let Some(v) = fc.burst_runs {
            correlation.burst_runs = v.min(10);
        }
        dur(
            "burst_spacing",
            &fc.burst_spacing,
            &mut correlation.burst_spacing,
        )?;
        dur(
            "burst_node_interval",
            &fc.burst_node_interval,
            &mut correlation.burst_node_interval,
        )?;
        if let Some(v) = fc.burst_traceroute {
            correlation.burst_traceroute = v;
        }
        correlation.check()?;
        let stream_client_buffer = file.stream.client_buffer.unwrap_or(1024);
        if stream_client_buffer == 0 {
            return Err("stream.client_buffer must be at least 1".into());
        }
        let chart_base_url = file.chart_base_url.filter(|u| !u.is_empty());
        if let Some(u) = &chart_base_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(format!("chart_base_url {u:?}: use http:// or https://"));
        }
        let stream_max_replay = file.stream.max_replay.unwrap_or(crate::stream::MAX_REPLAY);
        if !(1..=1_000_000).contains(&stream_max_replay) {
            return Err("stream.max_replay must be 1 to 1000000".into());
        }
        let rpki = match file.rpki.rtr_server {
            Some(server) => {
                let d = |name: &str, v: &Option<String>| -> Result<Option<Duration>, String> {
                    v.as_deref()
                        .map(|s| {
                            humantime::parse_duration(s)
                                .map_err(|e| format!("rpki.{name} {s:?}: {e}"))
                                .and_then(|d| {
                                    if d < Duration::from_secs(1) {
                                        Err(format!("rpki.{name} must be at least 1s"))
                                    } else {
                                        Ok(d)
                                    }
                                })
                        })
                        .transpose()
                };
                if server
                    .rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
                {
                    return Err(format!("rpki.rtr_server {server:?}: use host:port"));
                }
                Some(crate::rpki::client::RtrConfig {
                    refresh: d("refresh", &file.rpki.refresh)?,
                    retry: d("retry", &file.rpki.retry)?,
                    expire: d("expire", &file.rpki.expire)?,
                    server,
                })
            }
            None => None,
        };
        let otlp = match file.otlp.endpoint {
            Some(endpoint) => {
                let interval = match &file.otlp.interval {
                    Some(s) => humantime::parse_duration(s)
                        .map_err(|e| format!("otlp.interval {s:?}: {e}"))?,
                    None => Duration::from_secs(10),
                };
                if interval < Duration::from_millis(100) {
                    return Err("otlp.interval must be at least 100ms".into());
                }
                Some(crate::otlp::OtlpConfig {
                    endpoint,
                    interval,
                    header_files: file.otlp.header_files,
                })
            }
            None if !file.otlp.header_files.is_empty() || file.otlp.interval.is_some() => {
                return Err("otlp: set endpoint, or remove the section".into());
            }
            None => None,
        };
        Ok(Self {
            otlp,
            rpki,
            correlation,
            metrics_token_file: file.metrics_token_file,
            stream_client_buffer,
            stream_max_replay,
            rules_file: None,
            notifier_policy: file.notifier_policy,
            kek_file: file.kek_file.unwrap_or_else(|| data_dir.join("kek")),
            data_dir,
            node_addr: node_addr
                .or(file.node_addr)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7443))),
            api_addr: api_addr
                .or(file.api_addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            server_names,
            agent_cert_lifetime: lifetime,
            api_tls,
            update_base_url: file.update_base_url,
            chart_base_url,
            ingest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_an_error_naming_key_and_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "data_dir = \"x\"\napi_adr = \"127.0.0.1:1\"\n").expect("write");
        let e = FileConfig::load(&p).expect_err("typo must fail");
        assert!(e.contains("api_adr") && e.contains("c.toml"), "{e}");
    }

    fn resolve(text: &str) -> Result<Config, String> {
        let f: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        Config::resolve(f, None, None, None)
    }

    #[test]
    fn stream_max_replay_is_bounded() {
        assert_eq!(resolve("").expect("default").stream_max_replay, 10_000);
        assert_eq!(
            resolve("[stream]\nmax_replay = 5\n")
                .expect("5")
                .stream_max_replay,
            5
        );
        assert!(resolve("[stream]\nmax_replay = 0\n").is_err());
        assert!(resolve("[stream]\nmax_replay = 2000000\n").is_err());
    }

    #[test]
    fn rpki_and_otlp_sections_are_checked() {
        let c =
            resolve("[rpki]\nrtr_server = \"127.0.0.1:8282\"\nexpire = \"2h\"\n").expect("rpki");
        let r = c.rpki.expect("configured");
        assert_eq!(r.expire, Some(Duration::from_secs(7200)));
        assert_eq!(r.refresh, None);
        assert!(resolve("").expect("empty").rpki.is_none());
        for bad in [
            "[rpki]\nrtr_server = \"127.0.0.1\"\n",
            "[rpki]\nrtr_server = \"h:1\"\nrefresh = \"0s\"\n",
            "[rpki]\nrtr_sever = \"h:1\"\n",
            "[otlp]\ninterval = \"1s\"\n",
            "[otlp]\nendpoint = \"http://h:1\"\ninterval = \"1ms\"\n",
            // Header values only from files.
            "[otlp]\nendpoint = \"http://h:1\"\nheaders = { authorization = \"Bearer x\" }\n",
        ] {
            assert!(resolve(bad).is_err(), "{bad}");
        }
        let c = resolve(
            "[otlp]\nendpoint = \"http://h:1\"\n[otlp.header_files]\nauthorization = \"/f\"\n",
        )
        .expect("otlp");
        let o = c.otlp.expect("configured");
        assert_eq!(o.interval, Duration::from_secs(10));
        assert_eq!(o.header_files.len(), 1);
    }

    #[test]
    fn correlation_thresholds_are_checked_at_load() {
        let c = resolve(
            "[correlation]\nlatency_p95_factor = 3.0\nlatency_p95_min_ms = 0\nmax_incident = \"1h\"\n",
        )
        .expect("valid");
        assert_eq!(c.correlation.latency_p95_factor, 3.0);
        assert_eq!(c.correlation.max_incident, Duration::from_secs(3600));
        for (bad, key) in [
            ("loss_delta = -0.1", "loss_delta"),
            ("loss_delta = 0.0", "loss_delta"),
            ("loss_delta = 1.5", "loss_delta"),
            ("loss_delta = nan", "loss_delta"),
            ("latency_factor = nan", "latency_factor"),
            ("latency_factor = 0.5", "latency_factor"),
            ("latency_p95_factor = inf", "latency_p95_factor"),
            ("latency_min_ms = -1.0", "latency_min_ms"),
            ("latency_p95_min_ms = -inf", "latency_p95_min_ms"),
            ("after = \"0s\"", "after"),
            ("max_incident = \"0s\"", "max_incident"),
            ("max_incident = \"5s\"", "max_incident"),
        ] {
            let e = resolve(&format!("[correlation]\n{bad}\n")).expect_err(bad);
            assert!(e.contains(&format!("correlation.{key}")), "{bad}: {e}");
        }
    }

    #[test]
    fn secrets_are_not_accepted_inline() {
        let e = toml::from_str::<FileConfig>("kek = \"00\"").expect_err("inline secret");
        assert!(e.to_string().contains("kek"));
    }
}
