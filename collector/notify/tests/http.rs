//! The HTTP notifiers against a real local receiver (axum on loopback), and the target policy.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use common::{assert_chart_png, notification};
use foureyes_notify::{
    AlertState, NotifierConfig, NotifyError, Secret, Sender, SenderOptions, SmtpConfig,
    SmtpSecurity, TargetPolicy,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>,
    /// Replies to give, in order; 200 once they run out.
    replies: Arc<Mutex<VecDeque<(u16, String)>>>,
}

impl Receiver {
    fn reply(&self, status: u16, body: &str) {
        self.replies
            .lock()
            .expect("lock")
            .push_back((status, body.to_string()));
    }
    fn hits(&self) -> usize {
        self.got.lock().expect("lock").len()
    }
    fn take(&self) -> Vec<(String, HeaderMap, Bytes)> {
        std::mem::take(&mut *self.got.lock().expect("lock"))
    }
}

async fn handle(
    State(r): State<Receiver>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    r.got
        .lock()
        .expect("lock")
        .push((uri.path().to_string(), headers, body));
    let next = r.replies.lock().expect("lock").pop_front();
    let (status, text) = next.unwrap_or((200, "ok".into()));
    let status = StatusCode::from_u16(status).expect("status");
    if status.is_redirection() {
        return (status, [("location", "http://127.0.0.1:9/elsewhere")], text).into_response();
    }
    (status, text).into_response()
}

async fn receiver(bind: &str) -> Option<(Receiver, std::net::SocketAddr)> {
    let r = Receiver::default();
    let l = tokio::net::TcpListener::bind(bind).await.ok()?;
    let addr = l.local_addr().expect("addr");
    let app = Router::new().fallback(handle).with_state(r.clone());
    tokio::spawn(async move { axum::serve(l, app).await });
    Some((r, addr))
}

fn loopback_allowed() -> SenderOptions {
    SenderOptions {
        policy: TargetPolicy::allowing([
            "127.0.0.1/32".parse().expect("net"),
            "::1/128".parse().expect("net"),
        ]),
        timeout: Duration::from_secs(30),
        attempts: 3,
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        ..SenderOptions::default()
    }
}

/// HMAC-SHA256 written out from RFC 2104 over plain SHA-256, independent of the crate's `hmac`.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// What a receiver does: refuse stale timestamps, recompute the signature, compare.
fn verify(key: &[u8], headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), String> {
    let ts = headers
        .get("x-foureyes-timestamp")
        .ok_or("no timestamp")?
        .to_str()
        .map_err(|e| e.to_string())?;
    let ts_num: i64 = ts.parse().map_err(|_| "timestamp not a number")?;
    if (now - ts_num).abs() > 300 {
        return Err("stale timestamp".into());
    }
    let sig = headers
        .get("x-foureyes-signature")
        .ok_or("no signature")?
        .to_str()
        .map_err(|e| e.to_string())?;
    let mut msg = ts.as_bytes().to_vec();
    msg.push(b'.');
    msg.extend_from_slice(body);
    let want = format!("sha256={}", hex::encode(hmac_sha256(key, &msg)));
    if sig != want {
        return Err(format!("signature mismatch: {sig} != {want}"));
    }
    Ok(())
}

#[tokio::test]
async fn webhook_is_signed_with_a_verifiable_hmac_and_carries_the_chart() {
    let (rx, addr) = receiver("127.0.0.1:0").await.expect("bind");
    let sender = Sender::new(loopback_allowed()).expect("sender");
    let key = "whsec-0123456789abcdef";
    let cfg = NotifierConfig::Webhook {
        url: format!("http://{addr}/hooks/foureyes"),
        hmac_key: Some(Secret::new(key)),
    };
    let mut n = notification(AlertState::Firing);
    n.chart_url = Some("https://foureyes.example/charts/al-42.png".into());
    let d = sender.send(&cfg, &n).await.expect("delivered");
    assert_eq!((d.kind, d.attempts, d.status), ("webhook", 1, 200));

    let got = rx.take();
    assert_eq!(got.len(), 1);
    let (path, headers, body) = &got[0];
    assert_eq!(path, "/hooks/foureyes");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    verify(key.as_bytes(), headers, body, now).expect("signature verifies");
    // A changed body, another key or an old timestamp do not verify.
    let mut tampered = body.to_vec();
    tampered[10] ^= 1;
    assert!(verify(key.as_bytes(), headers, &tampered, now).is_err());
    assert!(verify(b"another key", headers, body, now).is_err());
    assert!(verify(key.as_bytes(), headers, body, now + 3600).is_err());

    let v: Value = serde_json::from_slice(body).expect("json");
    assert_eq!(v["version"], 1);
    assert_eq!(v["state"], "firing");
    assert_eq!(v["org"], "acme");
    assert_eq!(v["dedup_key"], "acme/latency/198.51.100.10");
    assert_eq!(v["severity"], "critical");
    assert_eq!(v["alert"], n.body);
    assert_eq!(v["chart_url"], "https://foureyes.example/charts/al-42.png");
    assert!(v.get("resolved_at").is_none());
    let png = base64::engine::general_purpose::STANDARD
        .decode(v["chart_png_base64"].as_str().expect("chart"))
        .expect("base64");
    assert_chart_png(&png);

    // Unsigned webhooks still carry the timestamp, and no signature.
    let cfg = NotifierConfig::Webhook {
        url: format!("http://{addr}/plain"),
        hmac_key: None,
    };
    let mut n = notification(AlertState::Resolved);
    n.chart = None;
    sender.send(&cfg, &n).await.expect("delivered");
    let got = rx.take();
    let (_, headers, body) = &got[0];
    assert!(headers.get("x-foureyes-timestamp").is_some());
    assert!(headers.get("x-foureyes-signature").is_none());
    let v: Value = serde_json::from_slice(body).expect("json");
    assert_eq!(v["state"], "resolved");
    assert!(v["resolved_at"].as_str().is_some());
    assert!(v.get("chart_png_base64").is_none());
}

#[tokio::test]
async fn slack_message_has_text_blocks_and_an_image_only_with_a_chart_url() {
    let (rx, addr) = receiver("127.0.0.1:0").await.expect("bind");
    let sender = Sender::new(loopback_allowed()).expect("sender");
    let cfg = NotifierConfig::Slack {
        url: Secret::new(format!("http://{addr}/services/T000/B000/XXXXSECRET")),
    };
    let mut n = notification(AlertState::Firing);
    n.chart_url = Some("https://foureyes.example/charts/al-42.png".into());
    n.text.push_str(" <!channel> & co");
    sender.send(&cfg, &n).await.expect("delivered");
    n.chart_url = None;
    n.state = AlertState::Resolved;
    sender.send(&cfg, &n).await.expect("delivered");

    let got = rx.take();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, "/services/T000/B000/XXXXSECRET");
    let first: Value = serde_json::from_slice(&got[0].2).expect("json");
    assert_eq!(
        first["text"],
        "[FIRING] Latency to 198.51.100.10 above 50 ms"
    );
    let blocks = first["blocks"].as_array().expect("blocks");
    assert_eq!(blocks[0]["type"], "header");
    assert!(
        blocks[1]["text"]["text"]
            .as_str()
            .expect("text")
            .contains("88 ms")
    );
    let summary = blocks[1]["text"]["text"].as_str().expect("text");
    assert!(
        summary.contains("&lt;!channel&gt; &amp; co") && !summary.contains("<!channel>"),
        "alert text must not ping a Slack channel: {summary}"
    );
    let image = blocks.iter().find(|b| b["type"] == "image").expect("image");
    assert_eq!(
        image["image_url"],
        "https://foureyes.example/charts/al-42.png"
    );

    let second: Value = serde_json::from_slice(&got[1].2).expect("json");
    assert!(
        second["text"]
            .as_str()
            .expect("text")
            .starts_with("[RESOLVED]")
    );
    assert!(
        !second["blocks"]
            .as_array()
            .expect("blocks")
            .iter()
            .any(|b| b["type"] == "image")
    );
}

#[tokio::test]
async fn pagerduty_triggers_then_resolves_with_the_same_dedup_key() {
    let (rx, addr) = receiver("127.0.0.1:0").await.expect("bind");
    rx.reply(
        202,
        r#"{"status":"success","dedup_key":"acme/latency/198.51.100.10"}"#,
    );
    rx.reply(202, r#"{"status":"success"}"#);
    let sender = Sender::new(loopback_allowed()).expect("sender");
    let cfg = NotifierConfig::PagerDuty {
        routing_key: Secret::new("R0UT1NGKEY0123456789abcdef012345"),
        url: format!("http://{addr}/v2/enqueue"),
    };
    let mut n = notification(AlertState::Firing);
    n.chart_url = Some("https://foureyes.example/charts/al-42.png".into());
    let d = sender.send(&cfg, &n).await.expect("trigger");
    assert_eq!(d.status, 202);
    n.state = AlertState::Resolved;
    n.resolved_at = Some(n.fired_at + time::Duration::minutes(5));
    sender.send(&cfg, &n).await.expect("resolve");

    let got = rx.take();
    assert_eq!(got.len(), 2);
    let trigger: Value = serde_json::from_slice(&got[0].2).expect("json");
    let resolve: Value = serde_json::from_slice(&got[1].2).expect("json");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(trigger["routing_key"], "R0UT1NGKEY0123456789abcdef012345");
    assert_eq!(resolve["routing_key"], trigger["routing_key"]);
    assert_eq!(trigger["dedup_key"], "acme/latency/198.51.100.10");
    assert_eq!(resolve["dedup_key"], trigger["dedup_key"]);
    let p = &trigger["payload"];
    assert_eq!(p["summary"], "Latency to 198.51.100.10 above 50 ms");
    assert_eq!(p["severity"], "critical");
    assert_eq!(p["source"], "foureyes/acme");
    assert_eq!(p["custom_details"], n.body);
    assert_eq!(
        trigger["images"][0]["src"],
        "https://foureyes.example/charts/al-42.png"
    );
    assert!(resolve.get("payload").is_none());
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_and_redirects_are_not() {
    let (rx, addr) = receiver("127.0.0.1:0").await.expect("bind");
    let sender = Sender::new(loopback_allowed()).expect("sender");
    let cfg = NotifierConfig::Webhook {
        url: format!("http://{addr}/"),
        hmac_key: None,
    };
    let mut n = notification(AlertState::Firing);
    n.chart = None;

    rx.reply(500, "busy");
    rx.reply(503, "still busy");
    let d = sender.send(&cfg, &n).await.expect("third attempt succeeds");
    assert_eq!(d.attempts, 3);
    assert_eq!(rx.take().len(), 3);

    for _ in 0..3 {
        rx.reply(500, "down");
    }
    let e = sender.send(&cfg, &n).await.expect_err("gives up");
    assert!(matches!(e, NotifyError::Status { status: 500, .. }), "{e}");
    assert_eq!(rx.take().len(), 3, "bounded by attempts");

    rx.reply(400, "bad payload");
    let e = sender.send(&cfg, &n).await.expect_err("400 is final");
    assert!(matches!(e, NotifyError::Status { status: 400, .. }), "{e}");
    assert!(e.to_string().contains("bad payload"), "{e}");
    assert_eq!(rx.take().len(), 1, "a 4xx is not retried");

    rx.reply(302, "");
    let e = sender.send(&cfg, &n).await.expect_err("redirect");
    assert!(
        matches!(e, NotifyError::Redirect { status: 302, .. }),
        "{e}"
    );
    assert_eq!(rx.take().len(), 1, "the redirect is not followed");

    // A huge error body is read only up to the cap and shortened in the error.
    rx.reply(400, &"x".repeat(5 * 1024 * 1024));
    let e = sender.send(&cfg, &n).await.expect_err("400");
    assert!(e.to_string().len() < 1000, "error is bounded");
    rx.take();

    // Nothing listening: a connect error, retried.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let cfg = NotifierConfig::Webhook {
        url: format!("http://127.0.0.1:{port}/"),
        hmac_key: None,
    };
    let e = sender.send(&cfg, &n).await.expect_err("refused");
    assert!(matches!(e, NotifyError::Connect { .. }), "{e}");
}

#[tokio::test]
async fn the_policy_refuses_internal_targets_without_the_allowance() {
    let (rx, addr) = receiver("127.0.0.1:0").await.expect("bind");
    let v6 = receiver("[::1]:0").await;
    let sender = Sender::new(SenderOptions {
        attempts: 3,
        backoff: Duration::from_millis(10),
        ..SenderOptions::default()
    })
    .expect("sender");
    let mut n = notification(AlertState::Firing);
    n.chart = None;
    let port = addr.port();
    let mut urls = vec![
        (format!("http://127.0.0.1:{port}/"), "loopback"),
        (format!("http://localhost:{port}/"), "loopback"),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "link-local",
        ),
        ("http://[fe80::1]/".to_string(), "link-local"),
        ("http://0.0.0.0/".to_string(), "unspecified"),
        ("http://10.20.30.40/".to_string(), "private"),
    ];
    if let Some((_, a6)) = &v6 {
        urls.push((format!("http://[::1]:{}/", a6.port()), "loopback"));
    } else {
        urls.push(("http://[::1]:9/".to_string(), "loopback"));
    }
    for (url, why) in urls {
        let cfg = NotifierConfig::Webhook {
            url: url.clone(),
            hmac_key: None,
        };
        let e = sender.send(&cfg, &n).await.expect_err(&url);
        let refusal = e
            .policy_refusal()
            .unwrap_or_else(|| panic!("{url}: not a policy refusal: {e}"));
        assert_eq!(refusal.reason, why, "{url}");
        let msg = e.to_string();
        assert!(
            msg.contains("target policy refuses") && msg.contains(why),
            "{msg}"
        );
    }
    assert_eq!(rx.hits(), 0, "nothing reached the loopback receiver");
    if let Some((r6, _)) = v6 {
        assert_eq!(r6.hits(), 0);
    }

    // The collector's own address is refused even when its range is allowed otherwise.
    let own = Sender::new(SenderOptions {
        policy: TargetPolicy {
            allow_private: true,
            allowed: vec![],
            own_addresses: vec!["10.9.9.9".parse().expect("ip")],
            ..TargetPolicy::default()
        },
        ..SenderOptions::default()
    })
    .expect("sender");
    let cfg = NotifierConfig::Webhook {
        url: "http://10.9.9.9:8443/".into(),
        hmac_key: None,
    };
    let e = own.send(&cfg, &n).await.expect_err("own address");
    assert_eq!(
        e.policy_refusal().expect("refusal").reason,
        "the collector's own"
    );

    // SMTP hosts pass the same policy.
    let cfg = NotifierConfig::Smtp(SmtpConfig {
        host: "localhost".into(),
        port: 25,
        security: SmtpSecurity::PlainOnLoopback,
        username: None,
        password: None,
        from: "foureyes@example.org".into(),
        to: vec!["noc@example.org".into()],
        ca_pem: None,
    });
    let e = sender.send(&cfg, &n).await.expect_err("smtp to loopback");
    assert_eq!(e.policy_refusal().expect("refusal").reason, "loopback");
}

#[tokio::test]
async fn secrets_never_show_in_debug_or_errors() {
    let (rx, addr) = receiver("127.0.0.1:0").await.expect("bind");
    let sender = Sender::new(loopback_allowed()).expect("sender");
    let mut n = notification(AlertState::Firing);
    n.chart = None;

    let configs = [
        NotifierConfig::Webhook {
            url: format!("http://{addr}/"),
            hmac_key: Some(Secret::new("hmac-SECRET-1111")),
        },
        NotifierConfig::Slack {
            url: Secret::new(format!("http://{addr}/services/SECRET-2222")),
        },
        NotifierConfig::PagerDuty {
            routing_key: Secret::new("routing-SECRET-3333"),
            url: format!("http://{addr}/v2/enqueue"),
        },
        NotifierConfig::Smtp(SmtpConfig {
            host: "127.0.0.1".into(),
            port: 25,
            security: SmtpSecurity::StartTls,
            username: Some("alerts".into()),
            password: Some(Secret::new("smtp-SECRET-4444")),
            from: "foureyes@example.org".into(),
            to: vec!["noc@example.org".into()],
            ca_pem: None,
        }),
    ];
    for cfg in &configs {
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("SECRET"), "{dbg}");
    }

    // A receiver that echoes the request body back in a 400 (which holds the routing key).
    let pd = &configs[2];
    let body = serde_json::to_string(&foureyes_notify::payload::pagerduty(
        &n,
        "routing-SECRET-3333",
    ))
    .expect("json");
    rx.reply(400, &body);
    let e = sender.send(pd, &n).await.expect_err("400");
    let msg = format!("{e} {e:?}");
    assert!(msg.contains("400") && !msg.contains("SECRET"), "{msg}");

    // A Slack URL's token is in its path; a connect error must not show it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let slack = NotifierConfig::Slack {
        url: Secret::new(format!("http://127.0.0.1:{port}/services/SECRET-2222")),
    };
    let e = sender.send(&slack, &n).await.expect_err("refused");
    let msg = format!("{e} {e:?}");
    assert!(!msg.contains("SECRET"), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
}

#[test]
fn the_chart_renders_at_its_size_with_lines_and_the_marker() {
    let png = foureyes_notify::render_png(&common::chart()).expect("render");
    assert_chart_png(&png);
    // To look at it: FOUREYES_CHART_OUT=/tmp/chart.png cargo test -p foureyes-notify --test http
    if let Some(out) = std::env::var_os("FOUREYES_CHART_OUT") {
        std::fs::write(out, &png).expect("write chart");
    }
    // A chart with no data still renders (a "no data" image), and silly input is refused.
    let empty = foureyes_notify::Chart {
        title: "nothing".into(),
        ..Default::default()
    };
    foureyes_notify::render_png(&empty).expect("empty chart renders");
    let mut huge = common::chart();
    huge.series[0].points = vec![(0, 1.0); foureyes_notify::chart::MAX_POINTS + 1];
    assert!(matches!(
        foureyes_notify::render_png(&huge),
        Err(foureyes_notify::ChartError::TooLarge(_))
    ));
    let mut odd = common::chart();
    odd.series[0].points.push((common::T0 + 1, f64::NAN));
    odd.series[0].points.push((common::T0 + 2, f64::INFINITY));
    assert_chart_png(&foureyes_notify::render_png(&odd).expect("non-finite values skipped"));
}
