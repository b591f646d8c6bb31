//! OTLP export (OTLP/HTTP with protobuf bodies) of the collector's health metrics and of spans on
//! the ingest path, to an OpenTelemetry collector or any OTLP receiver.
//!
//! Metrics: every `interval` the exporter renders the same text `/metrics` serves
//! ([`crate::metrics::render`]) and converts each family to an OTLP metric (Prometheus counters
//! become cumulative monotonic sums, gauges gauges, labels attributes). Reading the one rendering
//! means the two views cannot drift: whatever `/metrics` gains, OTLP gains.
//!
//! Traces: [`span_layer`] is a `tracing` layer that keeps only the ingest spans (`ingest.flush`
//! with its children `ingest.store_commit` and `ingest.ack`, and `ingest.taps`, the stream hub's
//! fan-out after a commit) and queues them, bounded, for the next export.
//!
//! Why not the `opentelemetry` SDK and `opentelemetry-otlp`? The figures already live in our
//! atomics (the SDK would mirror them through callbacks), our spans are `tracing` spans (the SDK
//! would need the `tracing-opentelemetry` bridge, a third crate to keep in step), and its HTTP
//! exporter brings reqwest, a second HTTP client stack beside hyper. `opentelemetry-proto` gives the
//! message types (prost 0.14, as ours) and a POST over hyper does the rest.
//!
//! Secrets: header values (e.g. an `Authorization` token) come from files named in the config
//! (`header_files`), are marked sensitive and never logged.

use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Uri,
    body::Bytes,
    header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue},
};
use opentelemetry_proto::tonic::{
    collector::{metrics::v1::ExportMetricsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
    },
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, span},
};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::{
    Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_subscriber::{Layer, layer::Context, registry::LookupSpan};

use crate::state::Collector;

/// `[otlp]` as resolved: where to send, how often, which header files to read at start.
#[derive(Clone, Debug)]
pub struct OtlpConfig {
    /// Base URL, e.g. `http://127.0.0.1:4318`; `/v1/metrics` and `/v1/traces` are appended.
    pub endpoint: String,
    pub interval: Duration,
    /// Header name → file holding its value.
    pub header_files: BTreeMap<String, PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("otlp.endpoint {0:?}: {1}")]
    Endpoint(String, String),
    #[error("otlp.header_files {name:?}: {msg}")]
    Header { name: String, msg: String },
    #[error("{0}")]
    Send(String),
}

/// Spans queued for export at most; more are dropped and counted.
const SPAN_QUEUE: usize = 4096;
/// Time one export request may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Response bodies read at most (we only need the status).
const MAX_RESPONSE: usize = 64 * 1024;

/// Where finished spans wait for the exporter. Set only when OTLP is configured, so the layer
/// costs one atomic load per span otherwise.
struct SpanSink {
    queue: Mutex<VecDeque<Span>>,
    dropped: AtomicU64,
}

static SINK: OnceLock<SpanSink> = OnceLock::new();

fn sink() -> &'static SpanSink {
    SINK.get_or_init(|| SpanSink {
        queue: Mutex::new(VecDeque::new()),
        dropped: AtomicU64::new(0),
    })
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn string_kv(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.to_string()))
}

/// Is this span one we export?
fn traced(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.name().starts_with("ingest.")
}

/// A span being recorded, kept in the span's extensions until it closes.
struct Open {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    start_ns: u64,
    attributes: Vec<KeyValue>,
}

struct Fields<'a>(&'a mut Vec<KeyValue>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push(string_kv(field.name(), &format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push(string_kv(field.name(), value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0
            .push(kv(field.name(), any_value::Value::IntValue(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push(kv(
            field.name(),
            any_value::Value::IntValue(i64::try_from(value).unwrap_or(i64::MAX)),
        ));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0
            .push(kv(field.name(), any_value::Value::DoubleValue(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0
            .push(kv(field.name(), any_value::Value::BoolValue(value)));
    }
}

/// The `tracing` layer that captures the ingest spans. `main.rs` installs it beside the log
/// output; it keeps nothing until [`spawn`] has started an exporter.
pub struct SpanLayer;

pub fn span_layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    // The hint keeps debug and trace callsites disabled for this layer at no per-call cost.
    SpanLayer.with_filter(
        tracing_subscriber::filter::filter_fn(traced)
            .with_max_level_hint(tracing::level_filters::LevelFilter::INFO),
    )
}

impl<S> Layer<S> for SpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if SINK.get().is_none() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let parent = span.parent().and_then(|p| {
            p.extensions()
                .get::<Open>()
                .map(|o| (o.trace_id, o.span_id))
        });
        let mut attributes = Vec::new();
        attrs.record(&mut Fields(&mut attributes));
        let open = Open {
            trace_id: parent.map(|p| p.0).unwrap_or_else(rand::random),
            span_id: rand::random(),
            parent: parent.map(|p| p.1),
            start_ns: now_ns(),
            attributes,
        };
        span.extensions_mut().insert(open);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(open) = ext.get_mut::<Open>() {
            values.record(&mut Fields(&mut open.attributes));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(sink) = SINK.get() else { return };
        let Some(span) = ctx.span(&id) else { return };
        let Some(open) = span.extensions_mut().remove::<Open>() else {
            return;
        };
        let out = Span {
            trace_id: open.trace_id.to_vec(),
            span_id: open.span_id.to_vec(),
            parent_span_id: open.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: span.name().to_string(),
            kind: span::SpanKind::Internal as i32,
            start_time_unix_nano: open.start_ns,
            end_time_unix_nano: now_ns(),
            attributes: open.attributes,
            ..Default::default()
        };
        let mut q = sink.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= SPAN_QUEUE {
            // Drop the oldest: the newest spans say most about the present.
            q.pop_front();
            sink.dropped.fetch_add(1, Ordering::Relaxed);
        }
        q.push_back(out);
    }
}

/// One metric family of the Prometheus text.
#[derive(Debug, Default, PartialEq)]
struct Family {
    name: String,
    help: String,
    counter: bool,
    points: Vec<(Vec<(String, String)>, f64)>,
    /// For a `histogram` family (ours have no labels): its `_bucket`, `_sum` and `_count` lines.
    histogram: Option<Hist>,
}

/// A Prometheus histogram as exposed: cumulative buckets by upper bound (`+Inf` last).
#[derive(Debug, Default, PartialEq)]
struct Hist {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl Hist {
    /// The OTLP form: per-bucket (not cumulative) counts, one more than the finite bounds.
    fn data_point(&self, start_ns: u64, now_ns: u64) -> HistogramDataPoint {
        let mut bounds = Vec::new();
        let mut counts = Vec::new();
        let mut below = 0.0;
        for (le, cumulative) in &self.buckets {
            if le.is_finite() {
                bounds.push(*le);
            }
            counts.push((cumulative - below).max(0.0) as u64);
            below = *cumulative;
        }
        if self.buckets.last().is_none_or(|(le, _)| le.is_finite()) {
            // No `+Inf` line: the rest of the count is above the last bound.
            counts.push((self.count - below).max(0.0) as u64);
        }
        HistogramDataPoint {
            start_time_unix_nano: start_ns,
            time_unix_nano: now_ns,
            count: self.count as u64,
            sum: Some(self.sum),
            bucket_counts: counts,
            explicit_bounds: bounds,
            ..Default::default()
        }
    }
}

/// Reads `name{k="v",...} value` label sets with the format's escapes (`\\`, `\"`, `\n`).
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(r) = rest.strip_prefix('}') {
            return Some((labels, r));
        }
        let (key, r) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        rest = r.get(end + 1..)?;
    }
}

/// Parses the exposition text `metrics::render` writes (HELP and TYPE before each family).
fn parse_exposition(text: &str) -> Vec<Family> {
    let mut out: Vec<Family> = Vec::new();
    for line in text.lines() {
        if let Some(r) = line.strip_prefix("# HELP ") {
            let (name, help) = r.split_once(' ').unwrap_or((r, ""));
            out.push(Family {
                name: name.to_string(),
                help: help.to_string(),
                ..Default::default()
            });
        } else if let Some(r) = line.strip_prefix("# TYPE ") {
            if let (Some(f), Some((name, kind))) = (out.last_mut(), r.split_once(' '))
                && f.name == name
            {
                f.counter = kind == "counter";
                if kind == "histogram" {
                    f.histogram = Some(Hist::default());
                }
            }
        } else if let Some((h, part, labels, v)) = out
            .last_mut()
            .and_then(|f| Some((f.name.clone(), f.histogram.as_mut()?)))
            .and_then(|(name, h)| {
                // `_bucket{le="0.001"} 3`, `_sum 0.5`, `_count 7`.
                let rest = line.strip_prefix(name.as_str())?;
                let (part, labels, value) = match rest.split_once('{') {
                    Some((part, r)) if !part.contains(' ') => {
                        let (labels, value) = parse_labels(r)?;
                        (part, labels, value)
                    }
                    _ => {
                        let (part, value) = rest.split_once(' ')?;
                        (part, Vec::new(), value)
                    }
                };
                Some((
                    h,
                    part.to_string(),
                    labels,
                    value.trim().parse::<f64>().ok()?,
                ))
            })
        {
            match part.as_str() {
                "_bucket" => {
                    let le = labels.iter().find(|(k, _)| k == "le").and_then(|(_, v)| {
                        match v.as_str() {
                            "+Inf" => Some(f64::INFINITY),
                            v => v.parse().ok(),
                        }
                    });
                    if let Some(le) = le {
                        h.buckets.push((le, v));
                    }
                }
                "_sum" => h.sum = v,
                "_count" => h.count = v,
                _ => {}
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let (name, labels, value) = match line.split_once('{') {
                Some((name, r)) => match parse_labels(r) {
                    Some((l, v)) => (name, l, v),
                    None => continue,
                },
                None => match line.split_once(' ') {
                    Some((name, v)) => (name, Vec::new(), v),
                    None => continue,
                },
            };
            let Ok(v) = value.trim().parse::<f64>() else {
                continue;
            };
            match out.last_mut() {
                Some(f) if f.name == name => f.points.push((labels, v)),
                _ => out.push(Family {
                    name: name.to_string(),
                    points: vec![(labels, v)],
                    ..Default::default()
                }),
            }
        }
    }
    out
}

fn resource() -> Resource {
    Resource {
        attributes: vec![
            string_kv("service.name", "foureyes-collector"),
            string_kv("service.version", env!("CARGO_PKG_VERSION")),
        ],
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "foureyes-collector".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// The `/metrics` text as an OTLP request. NaN samples (no value yet) are left out.
fn metrics_request(text: &str, start_ns: u64, now_ns: u64) -> ExportMetricsServiceRequest {
    let metrics = parse_exposition(text)
        .into_iter()
        .map(|f| {
            if let Some(h) = &f.histogram {
                return Metric {
                    name: f.name,
                    description: f.help,
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: vec![h.data_point(start_ns, now_ns)],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    })),
                    ..Default::default()
                };
            }
            let data_points = f
                .points
                .iter()
                .filter(|(_, v)| !v.is_nan())
                .map(|(labels, v)| NumberDataPoint {
                    attributes: labels.iter().map(|(k, v)| string_kv(k, v)).collect(),
                    start_time_unix_nano: if f.counter { start_ns } else { 0 },
                    time_unix_nano: now_ns,
                    value: Some(number_data_point::Value::AsDouble(*v)),
                    ..Default::default()
                })
                .collect();
            let data = if f.counter {
                metric::Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })
            } else {
                metric::Data::Gauge(Gauge { data_points })
            };
            Metric {
                name: f.name,
                description: f.help,
                data: Some(data),
                ..Default::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn traces_request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource()),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Sends OTLP/HTTP requests: one connection per export (one every `interval`).
pub struct Exporter {
    base: String,
    https: bool,
    host: String,
    port: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    tls: Option<tokio_rustls::TlsConnector>,
    pub interval: Duration,
}

impl Exporter {
    /// Checks the endpoint and reads the header files (at start, so a missing file fails it).
    pub fn new(cfg: &OtlpConfig) -> Result<Self, OtlpError> {
        let bad = |m: &str| OtlpError::Endpoint(cfg.endpoint.clone(), m.to_string());
        let uri: Uri = cfg.endpoint.parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("use http:// or https://")),
        };
        let host = uri
            .host()
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let mut headers = Vec::new();
        for (name, file) in &cfg.header_files {
            let err = |msg: String| OtlpError::Header {
                name: name.clone(),
                msg,
            };
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| err("not a header name".into()))?;
            let v = std::fs::read_to_string(file)
                .map_err(|e| err(format!("{}: {e}", file.display())))?;
            let mut v = HeaderValue::from_str(v.trim())
                .map_err(|_| err(format!("{}: not a header value", file.display())))?;
            v.set_sensitive(true);
            headers.push((n, v));
        }
        let tls = https.then(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| {
                    tokio_rustls::TlsConnector::from(Arc::new(
                        b.with_root_certificates(roots).with_no_client_auth(),
                    ))
                })
        });
        let tls = tls
            .transpose()
            .map_err(|e| bad(&format!("TLS setup: {e}")))?;
        Ok(Self {
            base: cfg.endpoint.trim_end_matches('/').to_string(),
            https,
            host,
            port,
            headers,
            tls,
            interval: cfg.interval,
        })
    }

    /// POSTs one protobuf body to `path` (`/v1/metrics` or `/v1/traces`).
    pub async fn post(&self, path: &str, body: Vec<u8>) -> Result<(), OtlpError> {
        tokio::time::timeout(SEND_TIMEOUT, self.post_inner(path, body))
            .await
            .map_err(|_| OtlpError::Send(format!("{path}: timed out")))?
    }

    async fn post_inner(&self, path: &str, body: Vec<u8>) -> Result<(), OtlpError> {
        let send = |e: &dyn std::fmt::Display| OtlpError::Send(format!("{path}: {e}"));
        let uri: Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|e| send(&e))?;
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let mut req = Request::post(uri.path())
            .header(HOST, authority)
            .header(CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| send(&e))?;
        for (n, v) in &self.headers {
            req.headers_mut().insert(n.clone(), v.clone());
        }
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| send(&e))?;
        let status = match (&self.tls, self.https) {
            (Some(tls), true) => {
                let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| send(&e))?;
                let io = tls.connect(name, tcp).await.map_err(|e| send(&e))?;
                request(io, req).await?
            }
            _ => request(tcp, req).await?,
        };
        if !status.is_success() {
            return Err(send(&format!("receiver answered {status}")));
        }
        Ok(())
    }
}

async fn request<IO>(io: IO, req: Request<Full<Bytes>>) -> Result<hyper::StatusCode, OtlpError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let e = |e: hyper::Error| OtlpError::Send(e.to_string());
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(e)?;
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(e)?;
    let status = resp.status();
    // Read (a bounded part of) the body so the exchange completes cleanly; its content is unused.
    let _ = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE)
        .collect()
        .await;
    conn.abort();
    Ok(status)
}

/// Counters of the exporter itself, shown in its log lines.
#[derive(Default)]
struct Stats {
    exports: u64,
    failures: u64,
}

/// Runs the exporter until shutdown (with one last export on the way out).
pub fn spawn(
    c: Arc<Collector>,
    exporter: Exporter,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let _ = sink();
    let start_ns = now_ns();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(exporter.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stats = Stats::default();
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                _ = shutdown.cancelled() => true,
            };
            export_once(&c, &exporter, start_ns, &mut stats).await;
            if last {
                return;
            }
        }
    })
}

async fn export_once(c: &Collector, exporter: &Exporter, start_ns: u64, stats: &mut Stats) {
    let text = crate::metrics::render(c);
    let body = metrics_request(&text, start_ns, now_ns()).encode_to_vec();
    let mut result = exporter.post("/v1/metrics", body).await;
    let spans: Vec<Span> = {
        let mut q = sink().queue.lock().unwrap_or_else(|e| e.into_inner());
        q.drain(..).collect()
    };
    if !spans.is_empty() {
        let body = traces_request(spans).encode_to_vec();
        let r = exporter.post("/v1/traces", body).await;
        if result.is_ok() {
            result = r;
        }
    }
    stats.exports += 1;
    if let Err(e) = result {
        stats.failures += 1;
        // Every failure would flood the log while a receiver is down: the first, then every 60th.
        if stats.failures % 60 == 1 {
            tracing::warn!(error = %e, failures = stats.failures, exports = stats.exports, dropped_spans = sink().dropped.load(Ordering::Relaxed), "OTLP export failed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exposition_text_becomes_otlp_metrics() {
        let text = "# HELP a_total Things.\n# TYPE a_total counter\na_total 5\n\
                    # HELP g Gauge.\n# TYPE g gauge\ng{org=\"a\\\"b\",test_id=\"t,1\"} 0.25\ng{org=\"x\\\\y\\nz\",test_id=\"2\"} 1\n\
                    # HELP n Not yet.\n# TYPE n gauge\nn NaN\n";
        let fams = parse_exposition(text);
        assert_eq!(fams.len(), 3);
        assert!(fams[0].counter);
        assert_eq!(fams[0].points, vec![(vec![], 5.0)]);
        assert_eq!(
            fams[1].points[0].0,
            vec![
                ("org".to_string(), "a\"b".to_string()),
                ("test_id".to_string(), "t,1".to_string())
            ]
        );
        assert_eq!(fams[1].points[1].0[0].1, "x\\y\nz");
        let req = metrics_request(text, 1, 2);
        let m = &req.resource_metrics[0].scope_metrics[0].metrics;
        assert!(
            matches!(m[0].data, Some(metric::Data::Sum(ref s)) if s.is_monotonic && s.data_points[0].start_time_unix_nano == 1)
        );
        assert!(matches!(m[1].data, Some(metric::Data::Gauge(ref g)) if g.data_points.len() == 2));
        assert!(matches!(m[2].data, Some(metric::Data::Gauge(ref g)) if g.data_points.is_empty()));
    }

    #[test]
    fn a_histogram_becomes_an_otlp_histogram() {
        let text = "# HELP d Durations.\n# TYPE d histogram\n\
                    d_bucket{le=\"0.01\"} 2\nd_bucket{le=\"0.1\"} 5\nd_bucket{le=\"+Inf\"} 6\n\
                    d_sum 0.75\nd_count 6\n# HELP after_total After.\n# TYPE after_total counter\n\
                    after_total 1\n";
        let req = metrics_request(text, 1, 2);
        let m = &req.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[0].name, "d");
        let Some(metric::Data::Histogram(h)) = &m[0].data else {
            panic!("{:?}", m[0].data)
        };
        let p = &h.data_points[0];
        assert_eq!(p.explicit_bounds, vec![0.01, 0.1]);
        assert_eq!(p.bucket_counts, vec![2, 3, 1]);
        assert_eq!((p.count, p.sum, p.start_time_unix_nano), (6, Some(0.75), 1));
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert!(matches!(m[1].data, Some(metric::Data::Sum(_))));
    }

    #[test]
    fn the_real_metrics_text_parses_completely() {
        // Every sample line of a rendering must land in a family (a format change shows here).
        let text = "# HELP x X.\n# TYPE x gauge\nx{org=\"o\",test_id=\"t\"} 3\n";
        let n: usize = parse_exposition(text).iter().map(|f| f.points.len()).sum();
        assert_eq!(n, 1);
        assert!(parse_labels("a=\"unterminated").is_none());
    }

    #[test]
    fn endpoints_and_header_files_are_checked() {
        let cfg = |e: &str| OtlpConfig {
            endpoint: e.into(),
            interval: Duration::from_secs(1),
            header_files: BTreeMap::new(),
        };
        assert!(Exporter::new(&cfg("ftp://x")).is_err());
        assert!(Exporter::new(&cfg("not a url")).is_err());
        let e = Exporter::new(&cfg("http://[::1]:4318/")).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 4318));
        let mut c = cfg("http://127.0.0.1:4318");
        c.header_files
            .insert("authorization".into(), "/nonexistent/otlp.token".into());
        let err = Exporter::new(&c).err().unwrap().to_string();
        assert!(err.contains("authorization"), "{err}");
    }
}
