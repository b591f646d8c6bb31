//! Verdict latency: the time to compute one test's window figures (per agent and whole test,
//! before and after) with polars, against the plain sort it replaced, for a default-sized window
//! (5 min before, 2 min after, 4 agents at 2 results/s) and for the correlator's read cap (10k
//! results per window). `cargo bench -p foureyes-analysis --bench window_stats`.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use foureyes_analysis::{GroupBy, Window};

fn window(rows: usize, agents: usize) -> Window {
    let mut w = Window::new();
    for i in 0..rows {
        let ok = i % 17 != 0;
        let lat = 10.0 + ((i * 7919) % 1000) as f64 / 100.0;
        w.push(
            "t-bench",
            &format!("n-{}", i % agents),
            i as i64 * 500,
            ok,
            0.0,
            lat,
        );
    }
    w
}

/// The hand-written figures the correlator used before: per agent, a sort and two picks.
fn baseline(rows: &[(usize, bool, f64)], agents: usize) -> f64 {
    let mut acc = 0.0;
    for a in 0..=agents {
        let mut lat: Vec<f64> = rows
            .iter()
            .filter(|r| a == agents || r.0 == a)
            .filter(|r| r.1)
            .map(|r| r.2)
            .collect();
        lat.sort_by(f64::total_cmp);
        if let Some(x) = lat.get(((lat.len().saturating_sub(1)) as f64 * 0.95).round() as usize) {
            acc += x;
        }
    }
    acc
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    for (name, before, after, agents) in [
        ("default window", 2400, 960, 4),
        ("read cap", 10_000, 10_000, 4),
    ] {
        let (b, a) = (window(before, agents), window(after, agents));
        let raw: Vec<(usize, bool, f64)> = (0..before)
            .map(|i| {
                (
                    i % agents,
                    i % 17 != 0,
                    10.0 + ((i * 7919) % 1000) as f64 / 100.0,
                )
            })
            .collect();
        let mut polars = Vec::new();
        let mut plain = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            for w in [&b, &a] {
                std::hint::black_box(w.stats(GroupBy::TestAgent, None).unwrap());
                std::hint::black_box(w.stats(GroupBy::Test, None).unwrap());
            }
            polars.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(baseline(&raw, agents));
            std::hint::black_box(baseline(&raw[..after.min(raw.len())], agents));
            plain.push(t.elapsed());
        }
        println!(
            "{name} ({before} + {after} results, {agents} agents): polars p50 {:?} p99 {:?}; plain sort p50 {:?} p99 {:?}",
            pct(polars.clone(), 0.5),
            pct(polars, 0.99),
            pct(plain.clone(), 0.5),
            pct(plain, 0.99),
        );
    }
}
