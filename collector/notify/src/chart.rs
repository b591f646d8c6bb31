//! The chart attached to a notification: latency and loss around the event, route events marked.
//!
//! Rendered with plotters into an RGB buffer and encoded with `png`. Text uses the bundled DejaVu
//! Sans through plotters' `ab_glyph` backend, so rendering needs no fontconfig and no system fonts
//! and looks the same on every machine.

use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

/// Width and height of every chart, in pixels.
pub const CHART_WIDTH: u32 = 900;
pub const CHART_HEIGHT: u32 = 500;
/// Points across all series; more is a caller bug (downsample first), not something to draw.
pub const MAX_POINTS: usize = 100_000;
pub const MAX_SERIES: usize = 16;
pub const MAX_MARKERS: usize = 64;

/// Series colours: no red, which is kept for route-event markers.
const SERIES_COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

static FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Milliseconds (latency).
    Ms,
    /// Percent (loss).
    Percent,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Self::Ms => "latency (ms)",
            Self::Percent => "loss (%)",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub unit: Unit,
    /// (unix milliseconds, value). Non-finite values are skipped.
    pub points: Vec<(i64, f64)>,
}

#[derive(Debug, Clone, Default)]
pub struct Chart {
    pub title: String,
    pub series: Vec<Series>,
    /// Vertical lines at (unix milliseconds, label), e.g. the route event.
    pub markers: Vec<(i64, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("chart too large: {0}")]
    TooLarge(String),
    #[error("bundled font: {0}")]
    Font(String),
    #[error("drawing: {0}")]
    Draw(String),
    #[error("PNG encoding: {0}")]
    Encode(String),
}

fn font() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
                .map_err(|_| "DejaVu Sans did not load".to_string())
        })
        .clone()
        .map_err(ChartError::Font)
}

/// Renders the chart as a `CHART_WIDTH` × `CHART_HEIGHT` PNG: one panel per unit present
/// (latency above loss), a shared time axis in UTC, and each marker as a red vertical line with
/// its label. CPU-bound (tens of milliseconds); call it from `spawn_blocking` in async code.
pub fn render_png(chart: &Chart) -> Result<Vec<u8>, ChartError> {
    font()?;
    if chart.series.len() > MAX_SERIES {
        return Err(ChartError::TooLarge(format!(
            "{} series (max {MAX_SERIES})",
            chart.series.len()
        )));
    }
    if chart.markers.len() > MAX_MARKERS {
        return Err(ChartError::TooLarge(format!(
            "{} markers (max {MAX_MARKERS})",
            chart.markers.len()
        )));
    }
    let total: usize = chart.series.iter().map(|s| s.points.len()).sum();
    if total > MAX_POINTS {
        return Err(ChartError::TooLarge(format!(
            "{total} points (max {MAX_POINTS})"
        )));
    }
    let (w, h) = (CHART_WIDTH, CHART_HEIGHT);
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    draw(chart, &mut rgb, (w, h)).map_err(|e| ChartError::Draw(e.to_string()))?;
    encode(&rgb, w, h)
}

fn draw(chart: &Chart, rgb: &mut [u8], size: (u32, u32)) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(rgb, size).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&chart.title, (FAMILY, 20))?;

    let finite = |s: &Series| -> Vec<(i64, f64)> {
        s.points
            .iter()
            .copied()
            .filter(|(_, v)| v.is_finite())
            .collect()
    };
    let units: Vec<Unit> = [Unit::Ms, Unit::Percent]
        .into_iter()
        .filter(|u| chart.series.iter().any(|s| s.unit == *u))
        .collect();

    // One time range for every panel, covering the points and the markers.
    let times = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(chart.markers.iter().map(|m| m.0));
    let (mut t0, mut t1) = times.fold((i64::MAX, i64::MIN), |(a, b), t| (a.min(t), b.max(t)));
    if t0 > t1 {
        root.draw(&Text::new("no data", (20, 20), (FAMILY, 18).into_font()))?;
        root.present()?;
        return Ok(());
    }
    if t0 == t1 {
        t0 -= 30_000;
        t1 += 30_000;
    }

    let panels = root.split_evenly((units.len().max(1), 1));
    for (unit, area) in units.iter().zip(panels.iter()) {
        let series: Vec<(&Series, Vec<(i64, f64)>)> = chart
            .series
            .iter()
            .filter(|s| s.unit == *unit)
            .map(|s| (s, finite(s)))
            .collect();
        let max = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|x| x.1))
            .fold(0.0f64, f64::max);
        let y_max = match unit {
            Unit::Percent => 100.0f64.min((max * 1.15).max(5.0)),
            Unit::Ms => (max * 1.15).max(1.0),
        };
        let mut ctx = ChartBuilder::on(area)
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d(t0..t1, 0.0..y_max)?;
        ctx.configure_mesh()
            .x_labels(6)
            .y_labels(5)
            .x_label_formatter(&|t| hms(*t))
            .y_desc(unit.label())
            .label_style((FAMILY, 12))
            .axis_desc_style((FAMILY, 13))
            .draw()?;
        for (i, (s, pts)) in series.iter().enumerate() {
            let color = SERIES_COLORS[i % SERIES_COLORS.len()];
            ctx.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        for (t, label) in &chart.markers {
            ctx.draw_series(LineSeries::new(
                [(*t, 0.0), (*t, y_max)],
                RED.stroke_width(2),
            ))?;
            ctx.draw_series(std::iter::once(Text::new(
                label.clone(),
                (*t, y_max * 0.95),
                (FAMILY, 12).into_font().color(&RED),
            )))?;
        }
        if !series.is_empty() {
            ctx.configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font((FAMILY, 12))
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

fn hms(unix_ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix_ms.div_euclid(1000)) {
        Ok(t) => format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second()),
        Err(_) => String::new(),
    }
}

fn encode(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>, ChartError> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    // Mostly flat white with thin lines: adaptive filtering and best compression make the
    // attachment several times smaller for a few milliseconds more.
    enc.set_compression(png::Compression::Best);
    enc.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
    let mut writer = enc
        .write_header()
        .map_err(|e| ChartError::Encode(e.to_string()))?;
    writer
        .write_image_data(rgb)
        .map_err(|e| ChartError::Encode(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| ChartError::Encode(e.to_string()))?;
    Ok(out)
}
