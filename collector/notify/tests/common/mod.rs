//! Shared pieces of the notifier tests: a sample notification and PNG checks.
#![allow(dead_code)]

use foureyes_notify::{AlertState, Chart, Notification, Series, Severity, Unit};

pub const T0: i64 = 1_790_000_000_000;

pub fn chart() -> Chart {
    let latency = (0..120)
        .map(|i| {
            let t = T0 + i * 5_000;
            (
                t,
                if i < 60 {
                    12.0 + (i % 5) as f64
                } else {
                    85.0 + (i % 7) as f64
                },
            )
        })
        .collect();
    let loss = (0..120)
        .map(|i| {
            (
                T0 + i * 5_000,
                if (60..80).contains(&i) { 40.0 } else { 0.0 },
            )
        })
        .collect();
    Chart {
        title: "198.51.100.0/24 via AS64500".into(),
        series: vec![
            Series {
                name: "p50 latency".into(),
                unit: Unit::Ms,
                points: latency,
            },
            Series {
                name: "loss".into(),
                unit: Unit::Percent,
                points: loss,
            },
        ],
        markers: vec![(T0 + 300_000, "withdraw 198.51.100.0/24".into())],
    }
}

pub fn notification(state: AlertState) -> Notification {
    let fired = time::OffsetDateTime::from_unix_timestamp(T0 / 1000).expect("time");
    Notification {
        org: "acme".into(),
        alert_id: "al-42".into(),
        dedup_key: "acme/latency/198.51.100.10".into(),
        state,
        severity: Severity::Critical,
        title: "Latency to 198.51.100.10 above 50 ms".into(),
        text: "p50 latency rose from 14 ms to 88 ms after a withdraw of 198.51.100.0/24".into(),
        fired_at: fired,
        resolved_at: (state == AlertState::Resolved).then(|| fired + time::Duration::minutes(7)),
        body: serde_json::json!({"rule": "latency_above", "threshold_ms": 50, "target": "198.51.100.10"}),
        chart: Some(chart()),
        chart_url: None,
    }
}

/// Decodes a PNG and checks its size and that it is not blank (many non-white pixels, and more
/// than two colours: lines, text and axes were drawn).
pub fn assert_chart_png(png_bytes: &[u8]) {
    assert_eq!(&png_bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG magic");
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("PNG header decodes");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("PNG frame decodes");
    assert_eq!(
        (info.width, info.height),
        (foureyes_notify::CHART_WIDTH, foureyes_notify::CHART_HEIGHT)
    );
    let px = info.line_size / info.width as usize;
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    let non_white = pixels.iter().filter(|p| p.iter().any(|c| *c < 250)).count();
    assert!(
        non_white > pixels.len() / 100,
        "chart looks blank: {non_white} of {} pixels drawn",
        pixels.len()
    );
    let red = pixels
        .iter()
        .filter(|p| p[0] > 200 && p[1] < 60 && p[2] < 60)
        .count();
    assert!(
        red > 200,
        "the route event marker (red) is missing: {red} red pixels"
    );
}
