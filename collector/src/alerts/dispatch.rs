//! Delivers alert notifications: follows the engine's transition channel and sends every
//! transition users are told about (→ firing, and firing → resolved, the all-clear; `notify` is
//! false when a silence matched) to the rule's notifiers through `foureyes-notify`.
//!
//! Each transition is delivered on its own task (bounded), so one slow receiver never holds up
//! another alert's notifications or the engine. The chart (latency and loss of the alert's test
//! around the alert, with the route changes correlated with that test as markers) is rendered
//! once per transition and attached where the notifier takes a PNG (webhook, mail).
//!
//! Notifier secrets are unsealed with the collector's key-encryption key just before sending and
//! dropped (zeroized) after; they never reach a log: `foureyes-notify` errors name targets only as
//! `scheme://host:port` and mask secrets.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use foureyes_notify::{
    AlertState, Chart, Notification, NotifierConfig, PAGERDUTY_EVENTS_URL, Secret, Sender,
    SenderOptions, Series, Severity, SmtpConfig, SmtpSecurity, TargetPolicy, Unit,
};
use foureyes_proto::v1 as pb;
use foureyes_store::{CorrelationFilter, IpPrefix, PrefixMatch, ResultFilter, Scope, Tenant};
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use crate::state::Collector;

/// Transitions being delivered at once, at most.
const PARALLEL: usize = 32;
/// How far before the alert the chart starts.
const CHART_BEFORE_MS: i64 = 15 * 60 * 1000;
/// Agents drawn on one chart (two series each), at most.
const CHART_AGENTS: usize = 6;

/// Starts the sender; it runs until `shutdown`.
pub fn spawn(
    c: Arc<Collector>,
    policy: TargetPolicy,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let sender = Sender::new(SenderOptions {
        policy,
        ..Default::default()
    })
    .map_err(|e| format!("notification sender: {e}"))?;
    let mut rx = c.alerts.subscribe();
    Ok(tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(PARALLEL));
        loop {
            let t = tokio::select! {
                r = rx.recv() => match r {
                    Ok(t) => t,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        c.alerts.counters.notifications_lost.fetch_add(n, Ordering::Relaxed);
                        tracing::error!(lost = n, "alert transitions arrived faster than they were sent; some were not notified");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = shutdown.cancelled() => return,
            };
            if !wanted(&t) {
                continue;
            }
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (c, sender) = (c.clone(), sender.clone());
            tokio::spawn(async move {
                deliver(&c, &sender, &t).await;
                drop(slot);
            });
        }
    }))
}

/// Firing, and the all-clear of a firing alert; not pending, not silenced, and only with somewhere
/// to send it.
fn wanted(t: &pb::AlertTransition) -> bool {
    let to = pb::AlertState::try_from(t.to).unwrap_or(pb::AlertState::Unspecified);
    let from = pb::AlertState::try_from(t.from).unwrap_or(pb::AlertState::Unspecified);
    t.notify
        && !t.notifiers.is_empty()
        && (to == pb::AlertState::Firing
            || (to == pb::AlertState::Resolved && from == pb::AlertState::Firing))
}

async fn deliver(c: &Arc<Collector>, sender: &Sender, t: &pb::AlertTransition) {
    let mut configs = Vec::new();
    for name in &t.notifiers {
        match notifier_config(c, &t.org, name) {
            Ok(cfg) => configs.push((name, cfg)),
            Err(e) => {
                c.alerts
                    .counters
                    .notifications_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(alert = %t.alert_id, notifier = %name, error = %e, "notifier not usable");
            }
        }
    }
    // Only webhooks and mail carry the PNG: read and draw the chart only for them.
    let wants_chart = configs.iter().any(|(_, cfg)| {
        matches!(
            cfg,
            NotifierConfig::Webhook { .. } | NotifierConfig::Smtp(_)
        )
    });
    let n = notification(c, t, wants_chart).await;
    let png = match &n.chart {
        Some(chart) => match foureyes_notify::render_off_thread(chart.clone()).await {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(alert = %t.alert_id, error = %e, "alert chart not rendered; sending without it");
                None
            }
        },
        None => None,
    };
    for (name, cfg) in configs {
        match sender.send_rendered(&cfg, &n, png.as_deref()).await {
            Ok(d) => {
                c.alerts
                    .counters
                    .notifications_sent
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(alert = %t.alert_id, notifier = %name, kind = cfg.kind(), state = n.state.label(), delivery = ?d, "notification sent");
            }
            Err(e) => {
                c.alerts
                    .counters
                    .notifications_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(alert = %t.alert_id, notifier = %name, kind = cfg.kind(), error = %e, "notification failed");
            }
        }
    }
}

fn severity(s: i32) -> Severity {
    match pb::Severity::try_from(s).unwrap_or(pb::Severity::Unspecified) {
        pb::Severity::Critical => Severity::Critical,
        pb::Severity::Info => Severity::Info,
        pb::Severity::Warning | pb::Severity::Unspecified => Severity::Warning,
    }
}

fn odt(ts: Option<&pbjson_types::Timestamp>) -> Option<time::OffsetDateTime> {
    let ms = foureyes_proto::timestamp_ms(ts?);
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

async fn notification(
    c: &Arc<Collector>,
    t: &pb::AlertTransition,
    with_chart: bool,
) -> Notification {
    let alert = t.alert.clone().unwrap_or_default();
    let resolved = pb::AlertState::try_from(t.to) == Ok(pb::AlertState::Resolved);
    let now = time::OffsetDateTime::now_utc();
    let title = format!("{}: {}", alert.rule_name, alert.subject);
    let mut text = alert.summary.clone();
    if !alert.values.is_empty() {
        let vals: Vec<String> = alert
            .values
            .iter()
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        text.push_str(&format!("\n{}", vals.join(" ")));
    }
    let chart = if with_chart {
        let c = c.clone();
        let alert = alert.clone();
        tokio::task::spawn_blocking(move || chart(&c, &alert))
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    Notification {
        org: alert.org.clone(),
        alert_id: alert.id.clone(),
        // The alert id is the (rule, subject) dedup key across its firing and all-clear.
        dedup_key: format!("foureyes/{}/{}", alert.org, alert.id),
        state: if resolved {
            AlertState::Resolved
        } else {
            AlertState::Firing
        },
        severity: severity(alert.severity),
        title,
        text,
        fired_at: odt(alert.fired_at.as_ref()).unwrap_or(now),
        resolved_at: if resolved {
            Some(odt(alert.resolved_at.as_ref()).unwrap_or(now))
        } else {
            None
        },
        body: serde_json::to_value(&alert).unwrap_or(serde_json::Value::Null),
        chart,
        // Slack and PagerDuty take the chart only as a link; there is one for alerts about a test.
        chart_url: c
            .alerts
            .chart_links
            .get()
            .filter(|_| test_of(&alert).is_some())
            .and_then(|l| l.url(&alert.org, &alert.id, now.unix_timestamp())),
    }
}

/// The test an alert is about, for result rules (subject `TEST` or `TEST/AGENT`).
fn test_of(alert: &pb::Alert) -> Option<String> {
    let id = alert.subject.split('/').next()?;
    id.starts_with("t-").then(|| id.to_string())
}

/// For an alert about a prefix (withdrawn, visibility, origin change, more-specific, unexpected
/// AS, RPKI invalid): a test of the rule's tenant whose target the prefix routes, so the chart
/// shows what the route change did to the tenant's own measurements. First a test whose IP
/// literal target lies in the prefix (read from the tests themselves, so it does not wait for the
/// correlator), else a test a correlation of that prefix (or one inside it) touched since
/// `from_ms` (targets named by host, as the correlator resolved them). `None`: no test involved.
fn test_of_prefix(c: &Collector, scope: &Scope, alert: &pb::Alert, from_ms: i64) -> Option<String> {
    let prefix = IpPrefix::parse(&alert.subject).ok()?;
    let routes = |ip: std::net::IpAddr| {
        ip.is_ipv4() == prefix.addr.is_ipv4() && IpPrefix::new(ip, prefix.len) == prefix
    };
    let mut after: Option<String> = None;
    loop {
        let page = c.store.list_tests(scope, after.as_deref(), 1000).ok()?;
        if let Some(t) = page.iter().find(|t| {
            crate::correlator::target_host(t)
                .and_then(|h| h.parse().ok())
                .is_some_and(routes)
        }) {
            return Some(t.id.clone());
        }
        match page.last() {
            Some(t) if page.len() == 1000 => after = Some(t.id.clone()),
            _ => break,
        }
    }
    [PrefixMatch::Exact, PrefixMatch::Within]
        .into_iter()
        .find_map(|how| {
            let page = c
                .store
                .correlations(
                    scope,
                    &CorrelationFilter {
                        from_ms: Some(from_ms),
                        prefix: Some((prefix, how)),
                        ..Default::default()
                    },
                    None,
                    16,
                )
                .ok()?;
            page.correlations
                .iter()
                .flat_map(|corr| corr.tests.iter())
                .map(|t| t.test_id.clone())
                .find(|id| !id.is_empty())
        })
}

/// Latency and loss of the alert's test per agent (for an alert about a prefix, of a test the
/// prefix routes: [`test_of_prefix`]), from before the alert until now, with the route changes
/// correlated with the test as markers. `None` when no test is involved.
pub(super) fn chart(c: &Collector, alert: &pb::Alert) -> Option<Chart> {
    let scope = Scope::Tenant(Tenant {
        org: alert.org.clone(),
        team: None,
    });
    let started = alert
        .started_at
        .as_ref()
        .map(foureyes_proto::timestamp_ms)
        .unwrap_or_else(crate::server::now_ms);
    let from = started - CHART_BEFORE_MS;
    let (test_id, title) = match test_of(alert) {
        Some(t) => (t, format!("{} ({})", alert.rule_name, alert.subject)),
        None => {
            // Only the rule's own team's tests (or the whole org's, for an org-wide rule).
            let team_scope = Scope::Tenant(Tenant {
                org: alert.org.clone(),
                team: (!alert.team.is_empty()).then(|| alert.team.clone()),
            });
            let t = test_of_prefix(c, &team_scope, alert, from)?;
            let title = format!("{} ({}): test {t}", alert.rule_name, alert.subject);
            (t, title)
        }
    };
    let filter = ResultFilter {
        test_id: Some(test_id.clone()),
        from_ms: Some(from),
        ..Default::default()
    };
    // Per agent: (latency points, loss points).
    type Points = Vec<(i64, f64)>;
    let mut by_agent: HashMap<String, (Points, Points)> = HashMap::new();
    let mut cursor = None;
    let mut total = 0usize;
    loop {
        let page = c.store.results(&scope, &filter, cursor, 5000).ok()?;
        for r in &page.results {
            let Some(at) = r.sent_at.as_ref().or(r.received_at.as_ref()) else {
                continue;
            };
            let at = foureyes_proto::timestamp_ms(at);
            let e = by_agent.entry(r.agent_id.clone()).or_default();
            let ok = r.status == pb::Status::Ok as i32 || r.status == pb::Status::Degraded as i32;
            if ok {
                e.0.push((at, r.latency_ms));
            }
            let loss = if ok || r.loss > 0.0 { r.loss } else { 1.0 };
            e.1.push((at, loss * 100.0));
        }
        total += page.results.len();
        match page.next {
            Some(n) if total < 50_000 => cursor = Some(n),
            _ => break,
        }
    }
    let mut agents: Vec<_> = by_agent.into_iter().collect();
    agents.sort_by(|a, b| a.0.cmp(&b.0));
    let mut series = Vec::new();
    for (agent, (lat, loss)) in agents.into_iter().take(CHART_AGENTS) {
        series.push(Series {
            name: format!("{agent} latency"),
            unit: Unit::Ms,
            points: lat,
        });
        series.push(Series {
            name: format!("{agent} loss"),
            unit: Unit::Percent,
            points: loss,
        });
    }
    let markers = c
        .store
        .correlations(
            &scope,
            &CorrelationFilter {
                test_id: Some(test_id),
                from_ms: Some(from),
                ..Default::default()
            },
            None,
            64,
        )
        .map(|p| {
            p.correlations
                .iter()
                .filter_map(|corr| {
                    let at = foureyes_proto::timestamp_ms(corr.opened_at.as_ref()?);
                    let what = corr.prefixes.first().cloned().unwrap_or_default();
                    let kind = if corr.withdraws > 0 {
                        "withdraw"
                    } else if corr.session_downs > 0 {
                        "session down"
                    } else {
                        "route change"
                    };
                    Some((at, format!("{kind} {what}")))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Chart {
        title,
        series,
        markers,
    })
}

/// The notifier `name` of `org`, with its secrets unsealed.
fn notifier_config(c: &Collector, org: &str, name: &str) -> Result<NotifierConfig, String> {
    let scope = Scope::Tenant(Tenant {
        org: org.to_string(),
        team: None,
    });
    let n = c
        .alerts
        .store
        .notifiers(&scope)
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|n| n.name == name)
        .ok_or_else(|| format!("org {org:?} has no notifier {name:?}"))?;
    let secrets = c
        .alerts
        .notifier_secrets(org, name)?
        .map(|s| s.values)
        .unwrap_or_default();
    config_from(&n, &secrets)
}

/// A stored notifier (settings plus unsealed secrets, as `alerts/file.rs` wrote them) as the
/// sender's typed config.
pub fn config_from(
    n: &pb::Notifier,
    secrets: &HashMap<String, String>,
) -> Result<NotifierConfig, String> {
    let setting = |k: &str| n.settings.get(k).cloned();
    let secret = |k: &str| secrets.get(k).map(|v| Secret::new(v.clone()));
    let need = |k: &str| {
        setting(k)
            .or_else(|| secrets.get(k).cloned())
            .ok_or_else(|| format!("notifier {:?} has no {k}", n.name))
    };
    Ok(match n.kind.as_str() {
        "webhook" => NotifierConfig::Webhook {
            url: need("url")?,
            hmac_key: secret("hmac_key"),
        },
        "slack" => NotifierConfig::Slack {
            url: secret("url").ok_or_else(|| format!("notifier {:?} has no url", n.name))?,
        },
        "pagerduty" => NotifierConfig::PagerDuty {
            routing_key: secret("routing_key")
                .ok_or_else(|| format!("notifier {:?} has no routing_key", n.name))?,
            url: setting("url").unwrap_or_else(|| PAGERDUTY_EVENTS_URL.to_string()),
        },
        "smtp" => {
            let security = match setting("security").as_deref() {
                None | Some("starttls") => SmtpSecurity::StartTls,
                Some("tls") => SmtpSecurity::Tls,
                Some("plain-on-loopback") => SmtpSecurity::PlainOnLoopback,
                Some(other) => {
                    return Err(format!(
                        "notifier {:?}: security {other:?}: use tls, starttls or plain-on-loopback",
                        n.name
                    ));
                }
            };
            let port = match setting("port") {
                Some(p) => p
                    .parse()
                    .map_err(|_| format!("notifier {:?}: port {p:?}", n.name))?,
                None => match security {
                    SmtpSecurity::Tls => 465,
                    SmtpSecurity::StartTls => 587,
                    SmtpSecurity::PlainOnLoopback => 25,
                },
            };
            NotifierConfig::Smtp(SmtpConfig {
                host: need("host")?,
                port,
                security,
                username: setting("username"),
                password: secret("password"),
                from: need("from")?,
                to: need("to")?
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                ca_pem: secrets.get("ca_pem").cloned().or_else(|| setting("ca_pem")),
            })
        }
        other => return Err(format!("notifier {:?}: unknown kind {other:?}", n.name)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier(kind: &str, settings: &[(&str, &str)]) -> pb::Notifier {
        pb::Notifier {
            name: "n".into(),
            org: "acme".into(),
            kind: kind.into(),
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn stored_notifiers_become_sender_configs() {
        let s: HashMap<String, String> = [("hmac_key".to_string(), "k".to_string())].into();
        match config_from(&notifier("webhook", &[("url", "https://h/x")]), &s) {
            Ok(NotifierConfig::Webhook { url, hmac_key }) => {
                assert_eq!(url, "https://h/x");
                assert!(hmac_key.is_some());
            }
            other => panic!("{other:?}"),
        }
        let smtp = notifier(
            "smtp",
            &[
                ("host", "mx"),
                ("from", "a@b"),
                ("to", "x@y, z@w"),
                ("security", "tls"),
            ],
        );
        match config_from(&smtp, &HashMap::new()) {
            Ok(NotifierConfig::Smtp(c)) => {
                assert_eq!((c.port, c.to.len()), (465, 2));
            }
            other => panic!("{other:?}"),
        }
        assert!(config_from(&notifier("slack", &[]), &HashMap::new()).is_err());
        assert!(config_from(&notifier("smtp", &[("host", "mx")]), &HashMap::new()).is_err());
        assert!(config_from(&notifier("fax", &[]), &HashMap::new()).is_err());
    }

    #[test]
    fn only_firing_and_all_clear_of_firing_are_sent() {
        let t = |from: pb::AlertState, to: pb::AlertState, notify: bool| pb::AlertTransition {
            from: from as i32,
            to: to as i32,
            notify,
            notifiers: vec!["n".into()],
            ..Default::default()
        };
        use pb::AlertState as S;
        assert!(wanted(&t(S::Pending, S::Firing, true)));
        assert!(wanted(&t(S::Firing, S::Resolved, true)));
        assert!(!wanted(&t(S::Pending, S::Resolved, true)));
        assert!(!wanted(&t(S::Unspecified, S::Pending, true)));
        assert!(!wanted(&t(S::Pending, S::Firing, false)));
    }
}
