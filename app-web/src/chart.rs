//! Charts as SVG drawn by Leptos.
//!
//! Why SVG and not plotters' canvas backend: every line and route-event marker is a DOM element
//! with data attributes, so it is clickable without hit-testing code, readable by the browser
//! tests, crisp at any wall-screen size (the `viewBox` scales), styled by the same stylesheet
//! (dark wallboard included) and adds nothing to the wasm bundle.

use leptos::prelude::*;

use crate::util::{fmt_clock, now_ms};

const W: f64 = 1000.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;

/// One line on a chart.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    /// (time ms, value), in time order.
    pub points: Vec<(i64, f64)>,
    pub dashed: bool,
    /// Colour slot (CSS classes `c0`..`c7`).
    pub color: usize,
}

/// A route event on the time axis.
#[derive(Clone, Debug)]
pub struct Marker {
    pub at_ms: i64,
    pub kind: String,
    pub prefix: String,
    pub seq: u64,
    pub agent_id: String,
    /// Index into the caller's event list, handed back on click.
    pub index: usize,
}

pub struct Axis {
    pub from: i64,
    pub to: i64,
}

impl Axis {
    fn x(&self, t: i64) -> f64 {
        let span = (self.to - self.from).max(1) as f64;
        LEFT + (t - self.from) as f64 / span * (W - LEFT - RIGHT)
    }
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

/// A time chart: lines, a y axis in `unit`, the shared time axis and clickable markers.
pub fn time_chart(
    axis: Axis,
    height: f64,
    series: Vec<Series>,
    markers: Vec<Marker>,
    unit: &'static str,
    fixed_max: Option<f64>,
    on_marker: Option<Callback<usize>>,
) -> impl IntoView {
    let max = fixed_max.unwrap_or_else(|| {
        nice_max(
            series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1))
                .fold(0.0, f64::max),
        )
    });
    let plot_h = height - TOP - BOTTOM;
    let y = move |v: f64| TOP + plot_h - (v / max).clamp(0.0, 1.0) * plot_h;
    let seconds = axis.to - axis.from <= 2 * 3_600_000;
    let ticks: Vec<(f64, String)> = (0..=5)
        .map(|i| {
            let t = axis.from + (axis.to - axis.from) * i / 5;
            (axis.x(t), fmt_clock(t, seconds))
        })
        .collect();
    let yticks: Vec<(f64, String)> = (0..=4)
        .map(|i| {
            let v = max * f64::from(i) / 4.0;
            let label = if unit == "%" {
                format!("{:.0}%", v * 100.0)
            } else if max < 4.0 {
                format!("{v:.2} {unit}")
            } else if max < 40.0 {
                format!("{v:.1} {unit}")
            } else {
                format!("{v:.0} {unit}")
            };
            (y(v), label)
        })
        .collect();
    let lines = series
        .into_iter()
        .map(|s| {
            let pts = s
                .points
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", axis.x(*t), y(*v)))
                .collect::<Vec<_>>()
                .join(" ");
            let class = format!(
                "line c{}{}",
                s.color % 8,
                if s.dashed { " dashed" } else { "" }
            );
            view! { <polyline class=class points=pts data-series=s.name fill="none"></polyline> }
        })
        .collect_view();
    let marks = markers
        .into_iter()
        .map(|m| {
            let x = axis.x(m.at_ms);
            let idx = m.index;
            let class = format!("marker {}", m.kind);
            let title = m.kind.clone();
            view! {
                <g
                    class=class
                    data-type=m.kind.clone()
                    data-prefix=m.prefix
                    data-seq=m.seq.to_string()
                    data-agent=m.agent_id
                    data-at=m.at_ms.to_string()
                    on:click=move |_| {
                        if let Some(cb) = on_marker {
                            cb.run(idx);
                        }
                    }
                >
                    <line x1=x x2=x y1=TOP y2=TOP + plot_h></line>
                    <circle cx=x cy=TOP + 6.0 r="6"></circle>
                    <title>{title}</title>
                </g>
            }
        })
        .collect_view();
    let now_x = axis.x(now_ms().min(axis.to));
    let view_box = format!("0 0 {W} {height}");
    view! {
        <svg class="chart" viewBox=view_box preserveAspectRatio="none">
            <g class="grid">
                {yticks
                    .into_iter()
                    .map(|(yy, label)| {
                        view! {
                            <line x1=LEFT x2=W - RIGHT y1=yy y2=yy></line>
                            <text x=LEFT - 4.0 y=yy + 4.0 text-anchor="end">
                                {label}
                            </text>
                        }
                    })
                    .collect_view()}
                {ticks
                    .into_iter()
                    .map(|(xx, label)| {
                        view! {
                            <text x=xx y=height - 6.0 text-anchor="middle">
                                {label}
                            </text>
                        }
                    })
                    .collect_view()}
                <line class="now" x1=now_x x2=now_x y1=TOP y2=TOP + plot_h></line>
            </g>
            {lines}
            {marks}
        </svg>
    }
}

/// A small latency line for the overview table.
pub fn sparkline(points: &[(i64, f64)], from: i64, to: i64) -> impl IntoView + use<> {
    let max = nice_max(points.iter().map(|p| p.1).fold(0.0, f64::max));
    let span = (to - from).max(1) as f64;
    let pts = points
        .iter()
        .map(|(t, v)| {
            format!(
                "{:.1},{:.1}",
                (t - from) as f64 / span * 200.0,
                28.0 - (v / max).clamp(0.0, 1.0) * 26.0
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let last = points.last().map(|(t, v)| {
        let (x, y) = (
            (t - from) as f64 / span * 200.0,
            28.0 - (v / max).clamp(0.0, 1.0) * 26.0,
        );
        view! { <circle cx=x cy=y r="2"></circle> }
    });
    view! {
        <svg class="spark" viewBox="0 0 200 30" preserveAspectRatio="none">
            <polyline points=pts fill="none"></polyline>
            {last}
        </svg>
    }
}
