//! PNG plots of latency percentile distributions, drawn like HdrHistogram's plotter: x is the
//! percentile on a log axis of 1/(1-p) (so 90%, 99%, 99.9% are equally spaced), y the latency
//! in µs on a log axis; one line per histogram.
//!
//! Owns: turning histograms into PNG files (`plotters`, bitmap backend, text rasterized with
//! ab_glyph from a TrueType file: no system font libraries). Must not measure anything.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Where the plots' font is looked for (Debian's `fonts-dejavu-core`; scripts/deps.sh
/// installs it).
const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];
const PANEL_WIDTH_PX: u32 = 900;
const PANEL_HEIGHT_PX: u32 = 520;
/// Percentile steps per halving of the distance to 100% (HdrHistogram's usual 5).
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// One line: a label, its colour and the latencies (µs) it plots.
pub struct Curve<'a> {
    pub label: String,
    pub color: RGBColor,
    pub latency_us: &'a Histogram<u64>,
}

/// One chart of curves.
pub struct Panel<'a> {
    pub title: String,
    pub curves: Vec<Curve<'a>>,
}

/// Line colours, by curve order (colour-blind-safe Okabe-Ito palette).
pub const COLORS: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];

/// Writes `panels` as one PNG at `path`, `columns` panels per row.
pub fn write_png(path: &Path, panels: &[Panel], columns: usize) -> Result<()> {
    assert!(columns > 0, "at least one column");
    register_font()?;
    let rows = panels.len().div_ceil(columns).max(1);
    let size = (PANEL_WIDTH_PX * columns as u32, PANEL_HEIGHT_PX * rows as u32);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
    for (panel, area) in panels.iter().zip(root.split_evenly((rows, columns))) {
        draw_panel(&area, panel).with_context(|| format!("plot {}", panel.title))?;
    }
    root.present()
        .map_err(|e| anyhow!("plot: write {}: {e}", path.display()))
}

fn draw_panel(area: &DrawingArea<BitMapBackend, plotters::coord::Shift>, panel: &Panel) -> Result<()> {
    let lines: Vec<(&Curve, Vec<(f64, f64)>)> = panel
        .curves
        .iter()
        .filter(|c| !c.latency_us.is_empty())
        .map(|c| (c, points(c.latency_us)))
        .collect();
    let all = lines.iter().flat_map(|(_, p)| p.iter());
    let x_max = all.clone().map(|p| p.0).fold(10.0, f64::max);
    let (y_min, y_max) = all.fold((f64::MAX, 1.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let y_min = if y_min == f64::MAX { 1.0 } else { (y_min * 0.8).max(1.0) };
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0..x_max * 1.2).log_scale(), (y_min..y_max * 1.3).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency µs")
        .x_label_formatter(&|x| percentile_label(*x))
        .y_labels(8)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (curve, pts) in lines {
        let color = curve.color;
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(curve.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// The curve of a histogram: (1/(1-p), latency µs) at HdrHistogram's percentile steps, ending
/// at the maximum, plotted at 1/(1-p) = count (the top one of `count` values).
fn points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = h
        .iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .map(|v| (v.quantile_iterated_to(), v.value_iterated_to()))
        .filter(|(q, _)| *q < 1.0)
        .map(|(q, v)| (1.0 / (1.0 - q), v.max(1) as f64))
        .filter(|(x, _)| *x < h.len() as f64)
        .collect();
    pts.push((h.len().max(1) as f64, h.max().max(1) as f64));
    pts
}

/// The percentile at x = 1/(1-p), with the decimals that tell the nines apart: 1 -> 0%,
/// 10 -> 90%, 100 -> 99%, 1000 -> 99.9%, 200 -> 99.5%.
pub fn percentile_label(x: f64) -> String {
    if x <= 1.0 {
        return "0%".to_string();
    }
    let decimals = (x.log10().ceil() as usize).saturating_sub(2);
    format!("{:.*}%", decimals, 100.0 * (1.0 - 1.0 / x))
}

/// Registers the TrueType font as plotters' "sans-serif", once per process.
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let (path, bytes) = FONT_PATHS
                .iter()
                .find_map(|p| std::fs::read(p).ok().map(|b| (p, b)))
                .ok_or_else(|| {
                    format!("no font for the plots at {FONT_PATHS:?} (apt-get install fonts-dejavu-core)")
                })?;
            // plotters keeps registered fonts for the whole process: leaked once, on purpose.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{path} is not a TrueType font"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::new_histogram;

    // Proves the x axis labels: each power of ten is one more nine, in between shows the
    // decimal that tells it apart.
    #[test]
    fn percentile_labels_count_nines() {
        let labels: Vec<String> = [1.0, 10.0, 100.0, 1000.0, 10_000.0, 200.0, 2.0]
            .into_iter()
            .map(percentile_label)
            .collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.5%", "50%"]);
    }

    // Proves a curve rises with the percentile from the minimum to the maximum, at
    // increasing x, with x = count at the maximum.
    #[test]
    fn curve_points_climb_to_the_maximum() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let pts = points(&h);
        assert!(pts.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{pts:?}");
        // The maximum as the histogram holds it: 10 000 within its 3 significant digits.
        assert_eq!(*pts.last().unwrap(), (10_000.0, h.max() as f64));
        assert!((10_000..10_010).contains(&h.max()));
        assert!(pts[0].1 <= 2.0 && pts.len() > 20);
    }

    // Proves the file written is a PNG of the requested layout: the signature, then an IHDR
    // chunk whose width and height are two panels across, one down.
    #[test]
    fn plot_is_written_as_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latency.png");
        let (mut a, mut b) = (new_histogram(), new_histogram());
        for v in 1..=1000u64 {
            a.record(100 + v).unwrap();
            b.record(300 + 5 * v).unwrap();
        }
        fn curve(h: &Histogram<u64>) -> Curve<'_> {
            Curve {
                label: "read".into(),
                color: COLORS[0],
                latency_us: h,
            }
        }
        let panels = [
            Panel {
                title: "a".into(),
                curves: vec![curve(&a), curve(&b)],
            },
            Panel {
                title: "empty".into(),
                curves: Vec::new(),
            },
        ];
        write_png(&path, &panels, 2).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes[..8], [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]);
        assert_eq!(&bytes[12..16], b"IHDR");
        let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((width, height), (2 * PANEL_WIDTH_PX, PANEL_HEIGHT_PX));
        assert!(
            bytes.len() > 10_000,
            "a drawn chart, not a blank image: {} bytes",
            bytes.len()
        );
    }
}
