//! `/metrics`: the operator's cross-tenant view in the Prometheus text format.
//!
//! Hand-written rather than `prometheus-client`: the collector already keeps its counters (ingest,
//! hub, registry) in its own atomics, so a registry crate would only mirror them; the text format
//! is a few lines per family and `promtool check metrics` checks it in `tests/stream.rs`.
//!
//! Who may read it is decided by [`decide`]: loopback clients, or a scraper presenting the scrape
//! token from `metrics_token_file`. A tenant's API token is not a scrape token, so it gets 403
//! (unit-tested below, and over HTTPS from another namespace in `tests/stream.rs`).

use std::{fmt::Write as _, net::SocketAddr, sync::Arc, sync::atomic::Ordering};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

use crate::state::Collector;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Allow,
    /// No credential from a non-loopback client.
    Unauthorized,
    /// A credential that is not the scrape token (e.g. a tenant's API token).
    Forbidden,
}

/// Loopback peers are the operator's own host; anyone else needs the scrape token. `peer` is
/// `None` when the server did not record it: then only the token admits. Behind a reverse proxy on
/// the same host every client looks local, so such a proxy must not forward `/metrics`.
pub fn decide(
    peer: Option<SocketAddr>,
    authorization: Option<&str>,
    token: Option<&str>,
) -> Access {
    if peer.is_some_and(|p| p.ip().to_canonical().is_loopback()) {
        return Access::Allow;
    }
    let Some(value) = authorization else {
        return Access::Unauthorized;
    };
    let presented = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .unwrap_or("");
    match token {
        // Compare digests so the comparison time does not depend on a matching prefix.
        Some(t) if !t.is_empty() && Sha256::digest(presented) == Sha256::digest(t) => Access::Allow,
        _ => Access::Forbidden,
    }
}

pub async fn handler(State(c): State<Arc<Collector>>, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0);
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match decide(peer, auth, c.metrics_token.as_deref()) {
        Access::Allow => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            render(&c),
        )
            .into_response(),
        Access::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            "metrics: loopback only, or Authorization: Bearer <scrape token>\n",
        )
            .into_response(),
        Access::Forbidden => {
            (StatusCode::FORBIDDEN, "metrics: not the scrape token\n").into_response()
        }
    }
}

/// A label value with `\`, `"` and newlines escaped as the format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn one(out: &mut String, name: &str, kind: &str, help: &str, v: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {v}");
}

/// Reads one figure of a test's gauge.
type GaugeOf = fn(&crate::stream::TestGauge) -> f64;

pub fn render(c: &Collector) -> String {
    let m = c.ingest.metrics();
    let h = &c.stream.counters;
    let mut o = String::with_capacity(4096);
    let g = "gauge";
    let k = "counter";
    one(
        &mut o,
        "foureyes_ingest_queue_records",
        g,
        "Records waiting in the ingest buffer.",
        m.queue_depth_records,
    );
    one(
        &mut o,
        "foureyes_ingest_queue_batches",
        g,
        "Batches waiting in the ingest buffer.",
        m.queue_depth_batches,
    );
    one(
        &mut o,
        "foureyes_ingest_flushes_total",
        k,
        "Committed flush transactions.",
        m.flushes,
    );
    one(
        &mut o,
        "foureyes_ingest_failed_flushes_total",
        k,
        "Flush transactions that failed.",
        m.failed_flushes,
    );
    one(
        &mut o,
        "foureyes_ingest_batches_total",
        k,
        "Batches acknowledged after a commit.",
        m.flushed_batches,
    );
    one(
        &mut o,
        "foureyes_ingest_rows_total",
        k,
        "Results, gaps and route events stored.",
        m.rows,
    );
    one(
        &mut o,
        "foureyes_ingest_duplicates_total",
        k,
        "Records skipped as replays.",
        m.duplicates,
    );
    one(
        &mut o,
        "foureyes_ingest_last_flush_duration_seconds",
        g,
        "Duration of the last committed flush.",
        m.last_flush_us as f64 / 1e6,
    );
    {
        let name = "foureyes_ingest_flush_duration_seconds";
        family(
            &mut o,
            name,
            "histogram",
            "Duration of committed flush transactions.",
        );
        // A flush counted between the reads of `flushes` and the buckets: keep +Inf the largest.
        let count = m.flushes.max(m.flush_buckets.last().copied().unwrap_or(0));
        for (le, n) in foureyes_store::ingest::FLUSH_BUCKETS_US
            .iter()
            .zip(m.flush_buckets)
        {
            let _ = writeln!(o, "{name}_bucket{{le=\"{}\"}} {n}", *le as f64 / 1e6);
        }
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(o, "{name}_sum {}", m.flush_us_sum as f64 / 1e6);
        let _ = writeln!(o, "{name}_count {count}");
    }
    one(
        &mut o,
        "foureyes_ingest_last_flush_timestamp_seconds",
        g,
        "When the last flush committed (0 before the first).",
        m.last_flush_at_ms as f64 / 1e3,
    );
    one(
        &mut o,
        "foureyes_agent_streams",
        g,
        "Connected agent streams.",
        c.registry.connected_count(),
    );
    one(
        &mut o,
        "foureyes_stream_clients",
        g,
        "Connected /api/v1/stream clients.",
        c.stream.client_count(),
    );
    one(
        &mut o,
        "foureyes_stream_events_total",
        k,
        "Events queued to stream clients.",
        h.events.load(Ordering::Relaxed),
    );
    one(
        &mut o,
        "foureyes_stream_dropped_clients_total",
        k,
        "Stream clients dropped for not keeping up.",
        h.dropped_clients.load(Ordering::Relaxed),
    );
    one(
        &mut o,
        "foureyes_stream_dropped_correlations_total",
        k,
        "Correlation updates the stream hub had no room for.",
        h.dropped_correlations.load(Ordering::Relaxed),
    );
    one(
        &mut o,
        "foureyes_correlations_open",
        g,
        "Incidents still collecting route events.",
        h.correlations_open.load(Ordering::Relaxed),
    );
    one(
        &mut o,
        "foureyes_correlations_pending",
        g,
        "Closed incidents waiting for their verdict.",
        h.correlations_pending.load(Ordering::Relaxed),
    );
    family(
        &mut o,
        "foureyes_route_resyncs_total",
        k,
        "Listener resync snapshots (sent after a listener's spool dropped events), by outcome.",
    );
    for (outcome, n) in [
        ("applied", h.route_resyncs_applied.load(Ordering::Relaxed)),
        (
            "discarded",
            h.route_resyncs_discarded.load(Ordering::Relaxed),
        ),
    ] {
        let _ = writeln!(
            o,
            "foureyes_route_resyncs_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    one(
        &mut o,
        "foureyes_route_resync_changes_total",
        k,
        "Route changes applied resync snapshots found (stored as events with reason resync).",
        h.route_resync_changes.load(Ordering::Relaxed),
    );
    family(
        &mut o,
        "foureyes_session_resyncs_total",
        k,
        "Session events listener resyncs stored (reason resync) where the stored session state was wrong: a missed session_down or session_up, or a peer the listener no longer has.",
    );
    for (event, n) in [
        (
            "session_down",
            h.session_resyncs_down.load(Ordering::Relaxed),
        ),
        ("session_up", h.session_resyncs_up.load(Ordering::Relaxed)),
        ("peer_gone", h.session_resyncs_gone.load(Ordering::Relaxed)),
    ] {
        let _ = writeln!(o, "foureyes_session_resyncs_total{{event=\"{event}\"}} {n}");
    }
    let al = &c.alerts.counters;
    family(&mut o, "foureyes_alerts", g, "Active alerts by state.");
    for (state, n) in [
        ("pending", al.pending.load(Ordering::Relaxed)),
        ("firing", al.firing.load(Ordering::Relaxed)),
    ] {
        let _ = writeln!(o, "foureyes_alerts{{state=\"{state}\"}} {n}");
    }
    one(
        &mut o,
        "foureyes_alert_transitions_total",
        k,
        "Alert state transitions.",
        al.transitions.load(Ordering::Relaxed),
    );
    one(
        &mut o,
        "foureyes_alert_silenced_notifications_total",
        k,
        "Firing or resolved transitions a silence kept from being notified.",
        al.silenced_transitions.load(Ordering::Relaxed),
    );
    one(
        &mut o,
        "foureyes_alert_rules_file_reload_errors_total",
        k,
        "Rules file reloads that failed (the previous rules stayed in force).",
        al.file_reload_errors.load(Ordering::Relaxed),
    );
    family(
        &mut o,
        "foureyes_notifications_total",
        k,
        "Alert notifications by outcome (lost: transitions the sender fell behind on).",
    );
    for (outcome, n) in [
        ("sent", al.notifications_sent.load(Ordering::Relaxed)),
        ("failed", al.notifications_failed.load(Ordering::Relaxed)),
        ("lost", al.notifications_lost.load(Ordering::Relaxed)),
    ] {
        let _ = writeln!(
            o,
            "foureyes_notifications_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    crate::rpki::render_metrics(&mut o, &c.rpki, crate::server::now_ms());
    let gauges = c.stream.gauges();
    let fams: [(&str, &str, GaugeOf); 3] = [
        (
            "foureyes_test_latency_seconds",
            "Latency of the test's latest result.",
            |t| t.latency_ms / 1e3,
        ),
        (
            "foureyes_test_loss_ratio",
            "Loss (0-1) of the test's latest result.",
            |t| t.loss,
        ),
        (
            "foureyes_test_last_result_timestamp_seconds",
            "Collector receive time of the test's latest result.",
            |t| t.received_ms as f64 / 1e3,
        ),
    ];
    for (name, help, f) in fams {
        family(&mut o, name, g, help);
        for ((org, test), t) in &gauges {
            let _ = writeln!(
                o,
                "{name}{{org=\"{}\",test_id=\"{}\"}} {}",
                label(org),
                label(test),
                f(t)
            );
        }
    }
    o
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn loopback_or_the_scrape_token_only() {
        let lo: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let lo6: SocketAddr = "[::ffff:127.0.0.1]:5000"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        let far: SocketAddr = "198.18.0.7:5000".parse().unwrap();
        assert_eq!(decide(Some(lo), None, None), Access::Allow);
        assert_eq!(decide(Some(lo6), None, None), Access::Allow);
        assert_eq!(
            decide(Some(far), None, Some("s3cret")),
            Access::Unauthorized
        );
        assert_eq!(decide(None, None, Some("s3cret")), Access::Unauthorized);
        assert_eq!(
            decide(Some(far), Some("Bearer s3cret"), Some("s3cret")),
            Access::Allow
        );
        // A tenant's API token is not the scrape token.
        assert_eq!(
            decide(Some(far), Some("Bearer fea1.tenant"), Some("s3cret")),
            Access::Forbidden
        );
        // Without a configured token nobody remote gets in, whatever they present.
        assert_eq!(decide(Some(far), Some("Bearer "), None), Access::Forbidden);
        assert_eq!(
            decide(Some(far), Some("Bearer "), Some("")),
            Access::Forbidden
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
