//! What the alert engine hands to the notifiers.

use serde::Serialize;
use time::OffsetDateTime;

use crate::chart::Chart;

/// Whether the alert started or ended; a resolved notification is the all-clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    /// The word used in subjects and titles.
    pub fn label(self) -> &'static str {
        match self {
            Self::Firing => "FIRING",
            Self::Resolved => "RESOLVED",
        }
    }
}

/// PagerDuty's four severities, which the other notifiers reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }
}

/// One alert state change to deliver.
///
/// `dedup_key` is stable across the firing and resolved notifications of one alert (PagerDuty
/// pairs them by it; receivers can too). `body` is the alert as canonical JSON, filled in by the
/// caller and passed through untouched. `chart` is rendered to a PNG by the sender (attached to
/// mail, base64 in the webhook); `chart_url` is a link to the same chart served elsewhere, for
/// Slack and PagerDuty, which take images only by URL.
#[derive(Debug, Clone)]
pub struct Notification {
    pub org: String,
    pub alert_id: String,
    pub dedup_key: String,
    pub state: AlertState,
    pub severity: Severity,
    pub title: String,
    /// A plain-text summary, a few lines.
    pub text: String,
    pub fired_at: OffsetDateTime,
    pub resolved_at: Option<OffsetDateTime>,
    pub body: serde_json::Value,
    pub chart: Option<Chart>,
    pub chart_url: Option<String>,
}

/// RFC 3339, as every payload writes times.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Cuts `s` to at most `max` characters, marking the cut, for receivers with length limits.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// One line, for subjects and headers: control characters (newlines included) become spaces.
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
