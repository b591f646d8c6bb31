//! The JSON bodies of the HTTP notifiers, and the webhook signature.
//!
//! Kept apart from the sending so the formats can be read (and tested) in one place; the crate
//! README documents them for receivers.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::notification::{AlertState, Notification, one_line, rfc3339, truncate};

/// The webhook body's `version`; bumped when a field changes meaning.
pub const WEBHOOK_VERSION: u32 = 1;
pub const TIMESTAMP_HEADER: &str = "X-FourEyes-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-FourEyes-Signature";

/// `sha256=<hex HMAC-SHA256(key, "<timestamp>.<body>")>`, the value of `X-FourEyes-Signature`.
pub fn webhook_signature(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable_hmac(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cold]
fn unreachable_hmac() -> ! {
    unreachable!("HMAC takes keys of any length")
}

/// The generic webhook body.
pub fn webhook(n: &Notification, chart_png: Option<&[u8]>) -> Value {
    let mut v = json!({
        "version": WEBHOOK_VERSION,
        "state": n.state,
        "org": n.org,
        "alert_id": n.alert_id,
        "dedup_key": n.dedup_key,
        "severity": n.severity,
        "title": n.title,
        "text": n.text,
        "fired_at": rfc3339(n.fired_at),
        "alert": n.body,
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(t) = n.resolved_at {
            obj.insert("resolved_at".into(), rfc3339(t).into());
        }
        if let Some(u) = &n.chart_url {
            obj.insert("chart_url".into(), u.clone().into());
        }
        if let Some(png) = chart_png {
            obj.insert(
                "chart_png_base64".into(),
                base64::engine::general_purpose::STANDARD.encode(png).into(),
            );
        }
    }
    v
}

/// A Slack incoming-webhook message: `text` is the fallback (notifications, old clients); the
/// blocks carry a header, the summary, a context line and, when `chart_url` is set, the chart.
pub fn slack(n: &Notification) -> Value {
    let icon = match n.state {
        AlertState::Firing => ":red_circle:",
        AlertState::Resolved => ":large_green_circle:",
    };
    let headline = one_line(&format!("[{}] {}", n.state.label(), n.title));
    let mut context = format!(
        "org {} · severity {} · fired {}",
        n.org,
        n.severity.as_str(),
        rfc3339(n.fired_at)
    );
    if let Some(t) = n.resolved_at {
        context.push_str(&format!(" · resolved {}", rfc3339(t)));
    }
    let mut blocks = vec![
        // Slack limits: header text 150 characters, section text 3000.
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&headline, 150)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&format!("{icon} {}", slack_escape(&n.text)), 3000)}}),
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(&slack_escape(&context), 3000)}]}),
    ];
    if let Some(url) = &n.chart_url {
        blocks.push(json!({
            "type": "image",
            "image_url": url,
            "alt_text": truncate(&format!("latency and loss around: {}", n.title), 2000),
        }));
    }
    json!({ "text": truncate(&headline, 3000), "blocks": blocks })
}

/// Slack's mrkdwn gives `<...>` meaning (`<!channel>` pings everyone); its documented escapes
/// make alert text literal.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A PagerDuty Events API v2 event: trigger when firing, resolve when resolved, both with the
/// alert's dedup key so PagerDuty closes the incident it opened.
pub fn pagerduty(n: &Notification, routing_key: &str) -> Value {
    match n.state {
        AlertState::Firing => {
            let mut v = json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": n.dedup_key,
                "client": "FourEyes",
                "payload": {
                    // PagerDuty caps the summary at 1024 characters.
                    "summary": truncate(&one_line(&n.title), 1024),
                    "severity": n.severity,
                    "source": format!("foureyes/{}", n.org),
                    "timestamp": rfc3339(n.fired_at),
                    "custom_details": n.body,
                },
            });
            if let (Some(url), Some(obj)) = (&n.chart_url, v.as_object_mut()) {
                obj.insert(
                    "images".into(),
                    json!([{ "src": url, "alt": "latency and loss around the event" }]),
                );
            }
            v
        }
        AlertState::Resolved => json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": n.dedup_key,
        }),
    }
}
