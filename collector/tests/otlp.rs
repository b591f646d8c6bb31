//! OTLP export end to end: the real collector and node binaries, and a real OTLP/HTTP receiver in
//! this test (a plain HTTP/1.1 server) that decodes the protobuf bodies with the
//! opentelemetry-proto types.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::mpsc,
    time::{Duration, Instant},
};

use common::*;
use opentelemetry_proto::tonic::{
    collector::{metrics::v1::ExportMetricsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::any_value,
    metrics::v1::{Metric, metric, number_data_point},
    trace::v1::Span,
};
use prost::Message;
use serde_json::json;

struct Received {
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// An OTLP/HTTP receiver on a loopback port: every request goes to the channel, and gets 200.
fn receiver() -> (u16, mpsc::Receiver<Received>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split(' ').nth(1).unwrap_or("").to_string();
                    let (mut len, mut authorization, mut content_type) = (0, None, None);
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (k, v) = h.split_once(':').unwrap();
                        match k.to_ascii_lowercase().as_str() {
                            "content-length" => len = v.trim().parse().unwrap(),
                            "authorization" => authorization = Some(v.trim().to_string()),
                            "content-type" => content_type = Some(v.trim().to_string()),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    let _ = tx.send(Received {
                        path,
                        authorization,
                        content_type,
                        body,
                    });
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                    );
                }
            });
        }
    });
    (port, rx)
}

fn value(m: &Metric, org: Option<&str>) -> Option<f64> {
    let points = match m.data.as_ref()? {
        metric::Data::Gauge(g) => &g.data_points,
        metric::Data::Sum(s) => &s.data_points,
        _ => return None,
    };
    points
        .iter()
        .find(|p| {
            org.is_none_or(|o| {
                p.attributes.iter().any(|kv| {
                    kv.key == "org"
                        && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()),
                            Some(any_value::Value::StringValue(s)) if s == o)
                })
            })
        })
        .and_then(|p| match p.value {
            Some(number_data_point::Value::AsDouble(v)) => Some(v),
            Some(number_data_point::Value::AsInt(v)) => Some(v as f64),
            None => None,
        })
}

fn find<'a>(req: &'a ExportMetricsServiceRequest, name: &str) -> Option<&'a Metric> {
    req.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .find(|m| m.name == name)
}

#[test]
fn metrics_and_ingest_spans_reach_an_otlp_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (port, rx) = receiver();
    let secret = "Bearer otlp-secret-7f3a9c1d";
    let token_file = root.join("otlp.auth");
    std::fs::write(&token_file, format!("{secret}\n")).unwrap();
    let c = Collector::start(
        root,
        0,
        &format!(
            "[otlp]\nendpoint = \"http://127.0.0.1:{port}\"\ninterval = \"500ms\"\n\
             [otlp.header_files]\nauthorization = \"{}\"\n",
            token_file.display()
        ),
        &[],
    );
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));

    // Before any node: the ingest counter is exported, at 0.
    let deadline = Duration::from_secs(60);
    let started = Instant::now();
    let first = loop {
        let r = rx.recv_timeout(deadline).expect("no OTLP request");
        assert_eq!(r.authorization.as_deref(), Some(secret), "{}", r.path);
        assert_eq!(r.content_type.as_deref(), Some("application/x-protobuf"));
        if r.path == "/v1/metrics" {
            break ExportMetricsServiceRequest::decode(r.body.as_slice()).unwrap();
        }
        assert!(started.elapsed() < deadline);
    };
    let rows = find(&first, "foureyes_ingest_rows_total").expect("ingest rows metric");
    assert!(matches!(rows.data, Some(metric::Data::Sum(ref s)) if s.is_monotonic));
    assert_eq!(value(rows, None), Some(0.0));
    assert!(find(&first, "foureyes_ingest_queue_records").is_some());
    assert!(find(&first, "foureyes_stream_clients").is_some());
    let service = &first.resource_metrics[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes;
    assert!(service.iter().any(|kv| kv.key == "service.name"));

    // A node's results arrive: the count grows, the test's gauge carries the org, and the ingest
    // path shows up as spans: flush → store commit (same trace, parent set), and the taps.
    let api_port = c.api.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    api.post(
        "/api/v1/tests",
        json!({"name": "tcp", "intervalMs": 200,
               "config": {"tcp": {"host": "127.0.0.1", "port": api_port}}}),
    );
    let state = enroll_node(&c, root, "acme", "noc");
    let _node = run_node(&state, root.join("node.log"));

    let (mut grew, mut gauge, mut spans) = (false, false, Vec::<Span>::new());
    let started = Instant::now();
    while !(grew && gauge && has_ingest_trace(&spans)) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "grew={grew} gauge={gauge} spans={:?}\n{}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>(),
            c.proc.log_text()
        );
        let Ok(r) = rx.recv_timeout(Duration::from_secs(5)) else {
            continue;
        };
        assert_eq!(r.authorization.as_deref(), Some(secret));
        match r.path.as_str() {
            "/v1/metrics" => {
                let m = ExportMetricsServiceRequest::decode(r.body.as_slice()).unwrap();
                if let Some(v) = find(&m, "foureyes_ingest_rows_total").and_then(|m| value(m, None))
                {
                    grew |= v > 0.0;
                }
                gauge |= find(&m, "foureyes_test_latency_seconds")
                    .and_then(|m| value(m, Some("acme")))
                    .is_some();
            }
            "/v1/traces" => {
                let t = ExportTraceServiceRequest::decode(r.body.as_slice()).unwrap();
                spans.extend(
                    t.resource_spans
                        .into_iter()
                        .flat_map(|r| r.scope_spans)
                        .flat_map(|s| s.spans),
                );
            }
            other => panic!("unexpected path {other}"),
        }
    }
    // The token is sent, never logged.
    assert!(!c.proc.log_text().contains("otlp-secret"));
}

fn has_ingest_trace(spans: &[Span]) -> bool {
    let taps = spans.iter().any(|s| s.name == "ingest.taps");
    let linked = spans.iter().filter(|s| s.name == "ingest.flush").any(|f| {
        let rows = f.attributes.iter().any(|kv| {
            kv.key == "rows"
                && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()),
                    Some(any_value::Value::IntValue(n)) if *n > 0)
        });
        rows && f.trace_id.len() == 16
            && f.end_time_unix_nano >= f.start_time_unix_nano
            && spans.iter().any(|s| {
                s.name == "ingest.store_commit"
                    && s.trace_id == f.trace_id
                    && s.parent_span_id == f.span_id
            })
    });
    taps && linked
}
