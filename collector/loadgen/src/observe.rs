//! Where latency is measured: a client of the real `/api/v1/stream` SSE endpoint, and a webhook
//! receiver the collector's notifier posts to. Each hands (what, arrival time) to the benchmark.

use std::{
    io::{BufRead, BufReader},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::sync::mpsc;

/// One SSE event as it arrived.
pub struct SseEvent {
    pub name: String,
    pub data: Value,
    pub at: Instant,
}

/// Opens `/api/v1/stream?kinds=KINDS` with `token` and forwards its events from a thread (the
/// response is read as a byte stream, line by line, as any SSE client would).
pub fn sse(api: &str, token: &str, kinds: &str) -> Result<mpsc::UnboundedReceiver<SseEvent>> {
    // No read timeout: the stream stays open (keep-alive comments come every few seconds).
    let client = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .build();
    let resp = client
        .get(&format!("{api}/api/v1/stream?kinds={kinds}"))
        .set("Authorization", &format!("Bearer {token}"))
        .set("Accept", "text/event-stream")
        .call()
        .context("GET /api/v1/stream")?;
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let reader = BufReader::new(resp.into_reader());
        let (mut name, mut data) = (String::new(), String::new());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if line.is_empty() {
                if !data.is_empty() {
                    let ev = SseEvent {
                        name: std::mem::take(&mut name),
                        data: serde_json::from_str(&data).unwrap_or(Value::Null),
                        at: Instant::now(),
                    };
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
                name.clear();
                data.clear();
            } else if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    });
    Ok(rx)
}

/// A webhook receiver on loopback: each firing notification's alert subject and arrival time.
pub async fn webhook_receiver() -> Result<(u16, mpsc::UnboundedReceiver<(String, Instant)>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let at = Instant::now();
                if let Ok(v) = serde_json::from_slice::<Value>(&body)
                    && v["state"] == "firing"
                    && let Some(s) = v["alert"]["subject"].as_str()
                {
                    let _ = tx.send((s.to_string(), at));
                }
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Ok((port, rx))
}
