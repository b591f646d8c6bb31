//! Chart rendering and a signed webhook round trip to a local receiver.
//! `cargo bench -p foureyes-notify --bench notify` prints p50/p99.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::time::{Duration, Instant};

use foureyes_notify::{
    AlertState, Chart, Notification, NotifierConfig, Secret, Sender, SenderOptions, Series,
    Severity, TargetPolicy, Unit, render_png,
};

const T0: i64 = 1_790_000_000_000;

fn chart(points: i64) -> Chart {
    let step = 420_000 / points;
    let s = |name: &str, unit, f: &dyn Fn(i64) -> f64| Series {
        name: name.into(),
        unit,
        points: (0..points).map(|i| (T0 + i * step, f(i))).collect(),
    };
    Chart {
        title: "198.51.100.0/24".into(),
        series: vec![
            s("p50", Unit::Ms, &|i| 10.0 + (i % 13) as f64),
            s("p95", Unit::Ms, &|i| 20.0 + (i % 17) as f64),
            s("loss", Unit::Percent, &|i| (i % 50) as f64 / 5.0),
        ],
        markers: vec![(T0 + 300_000, "withdraw".into())],
    }
}

fn pct(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

fn main() {
    for points in [100, 1_000, 10_000] {
        let c = chart(points);
        let mut times = Vec::new();
        for _ in 0..30 {
            let t = Instant::now();
            let png = render_png(&c).expect("render");
            times.push(t.elapsed());
            assert!(png.len() > 1000);
        }
        let (p50, p99) = pct(times);
        println!("render_png, 3 series × {points} points: p50 {p50:?} p99 {p99:?}");
    }

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let app = axum::Router::new().fallback(|| async { "ok" });
        tokio::spawn(async move { axum::serve(l, app).await });
        let sender = Sender::new(SenderOptions {
            policy: TargetPolicy::allowing(["127.0.0.1/32".parse().expect("net")]),
            ..SenderOptions::default()
        })
        .expect("sender");
        let cfg = NotifierConfig::Webhook {
            url: format!("http://{addr}/"),
            hmac_key: Some(Secret::new("bench-key")),
        };
        let png = render_png(&chart(1_000)).expect("render");
        let n = Notification {
            org: "acme".into(),
            alert_id: "a1".into(),
            dedup_key: "k".into(),
            state: AlertState::Firing,
            severity: Severity::Warning,
            title: "t".into(),
            text: "x".into(),
            fired_at: time::OffsetDateTime::now_utc(),
            resolved_at: None,
            body: serde_json::json!({"rule": "latency_above"}),
            chart: None,
            chart_url: None,
        };
        let mut times = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            sender
                .send_rendered(&cfg, &n, Some(&png))
                .await
                .expect("send");
            times.push(t.elapsed());
        }
        let (p50, p99) = pct(times);
        println!(
            "signed webhook with a {} KiB chart to a loopback receiver: p50 {p50:?} p99 {p99:?}",
            png.len() / 1024
        );
    });
}
