//! `--plot DIR`: SVG line charts drawn with plotters (its SVG backend only).
//!
//! [`plot_sweeps`] draws one chart per swept parameter of a run (a parameter with an `x` position that takes
//! more than one value: image size in megapixels, batch size, threads, bank size): throughput (median
//! items/s, min–max error bars) against that parameter, one series per combination of the other parameters.
//! Text goes into the SVG as `<text>` in a generic font family; no font file is read (plotters only
//! estimates text extents for the layout), so nothing needs fontconfig.

use super::{Measurement, Param};
use anyhow::Context as _;
use plotters::coord::combinators::BindKeyPoints as _;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// One point: x, the median y and its min–max whisker.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Point {
    pub(crate) x: f64,
    pub(crate) y: f64,
    pub(crate) lo: f64,
    pub(crate) hi: f64,
}

/// A named line.
#[derive(Clone, Debug)]
pub(crate) struct Series {
    pub(crate) label: String,
    pub(crate) points: Vec<Point>,
}

/// A line chart.
#[derive(Clone, Debug)]
pub(crate) struct Chart {
    pub(crate) title: String,
    pub(crate) x_label: String,
    pub(crate) y_label: String,
    /// Logarithmic x axis (chosen when the x values span a factor of 20 or more).
    pub(crate) log_x: bool,
    pub(crate) series: Vec<Series>,
}

const SIZE: (u32, u32) = (900, 480);
/// Room on the right for the legend.
const LEGEND_WIDTH: u32 = 180;
const FONT: &str = "sans-serif";
/// Distinct line colours that read on white (the usual "tab10" ones), reused after eight series.
const COLOURS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// Compact tick text: 1.5k, 2M, 0.25.
fn tick_text(v: f64) -> String {
    let (d, suffix) = match v.abs() {
        a if a >= 1e9 => (v / 1e9, "G"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e4 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let s = format!("{d:.3}");
    format!("{}{suffix}", s.trim_end_matches('0').trim_end_matches('.'))
}

impl Chart {
    /// The chart as an SVG document.
    pub(crate) fn render(&self) -> anyhow::Result<String> {
        let mut xs: Vec<f64> = self.series.iter().flat_map(|s| s.points.iter().map(|p| p.x)).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        let (lo, hi) = (xs.first().copied().unwrap_or(0.0), xs.last().copied().unwrap_or(1.0));
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            root.fill(&WHITE)?;
            if self.log_x {
                // Ticks at the data's own x values (sweeps have few), skipping any too close to the last.
                let (x0, x1) = (lo / 1.25, hi * 1.25);
                let mut ticks: Vec<f64> = Vec::new();
                for &x in &xs {
                    if ticks.last().is_none_or(|&t| (x / t).log10() / (x1 / x0).log10() >= 0.05) {
                        ticks.push(x);
                    }
                }
                self.draw(&root, (x0..x1).log_scale().with_key_points(ticks), xs.len())?;
            } else {
                // From 0, with round ticks.
                let x1 = if hi > 0.0 { hi * 1.05 } else { 1.0 };
                self.draw(&root, RangedCoordf64::from(0.0..x1), xs.len())?;
            }
            root.present()?;
        }
        Ok(svg)
    }

    /// Draws axes, error bars, lines and legend on `x` (linear or logarithmic) for `n_x` distinct x values.
    fn draw<X>(&self, root: &DrawingArea<SVGBackend<'_>, Shift>, x: X, n_x: usize) -> anyhow::Result<()>
    where
        X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let ymax = self.series.iter().flat_map(|s| &s.points).map(|p| p.hi.max(p.y)).fold(0.0, f64::max);
        let ymax = if ymax > 0.0 { ymax * 1.05 } else { 1.0 };
        // The legend gets its own strip on the right, beside the plot, where it hides no data.
        let (plot, legend) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
        let mut chart = ChartBuilder::on(&plot)
            .caption(&self.title, (FONT, 18))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x, 0.0..ymax)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .x_label_formatter(&|v| tick_text(*v))
            .y_label_formatter(&|v| tick_text(*v))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            // Where the axis picks its ticks (linear), about as many as there are x values: 0, 1, 2 for 1, 2.
            .x_labels(n_x + 2)
            .max_light_lines(0)
            .draw()?;
        for (i, s) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let mut points = s.points.clone();
            points.sort_by(|a, b| a.x.total_cmp(&b.x));
            let bar = |p: &Point| ErrorBar::new_vertical(p.x, p.lo, p.y, p.hi, colour.filled(), 7);
            chart.draw_series(points.iter().map(bar))?;
            chart.draw_series(LineSeries::new(points.iter().map(|p| (p.x, p.y)), colour.stroke_width(2)))?;
            let y = 56 + 20 * i as i32;
            legend.draw(&PathElement::new([(0, y), (20, y)], colour.stroke_width(2)))?;
            legend.draw(&Text::new(s.label.as_str(), (26, y - 7), (FONT, 13)))?;
        }
        Ok(())
    }
}

/// The axis label of a swept parameter.
fn axis_label(name: &str) -> String {
    match name {
        "size" => "image size (megapixels)".into(),
        "batch" => "batch size (images)".into(),
        "jobs" => "threads (--jobs)".into(),
        "bank" => "bank size (hashes)".into(),
        other => other.into(),
    }
}

/// Writes one chart per swept parameter of `results` into `dir` (created if needed); returns the files.
pub(crate) fn plot_sweeps(dir: &Path, mode: &str, results: &[Measurement]) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut axes: Vec<&'static str> = Vec::new();
    for m in results {
        for p in &m.params {
            if p.x.is_some() && !axes.contains(&p.name) {
                axes.push(p.name);
            }
        }
    }
    let mut written = Vec::new();
    for axis in axes {
        let xs = |m: &Measurement| m.params.iter().find(|p| p.name == axis).and_then(|p| p.x);
        let mut distinct: Vec<f64> = results.iter().filter_map(xs).collect();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        if distinct.len() < 2 {
            continue;
        }
        // Series: the other parameters that vary between results name the series.
        let varying: Vec<&'static str> = results
            .first()
            .map(|m0| {
                m0.params
                    .iter()
                    .filter(|p| p.name != axis)
                    .filter(|p| results.iter().any(|m| param_text(m, p.name) != Some(p.text())))
                    .map(|p| p.name)
                    .collect()
            })
            .unwrap_or_default();
        let mut series: Vec<Series> = Vec::new();
        for m in results {
            let Some(x) = xs(m) else { continue };
            let label: Vec<String> =
                varying.iter().map(|n| format!("{n} {}", param_text(m, n).unwrap_or_default())).collect();
            let label = if label.is_empty() { mode.to_string() } else { label.join(", ") };
            let point = Point { x, y: m.rate.median, lo: m.rate.min, hi: m.rate.max };
            match series.iter_mut().find(|s| s.label == label) {
                Some(s) => s.points.push(point),
                None => series.push(Series { label, points: vec![point] }),
            }
        }
        let unit = results.first().map_or("items", |m| m.unit);
        let (lo, hi) = (distinct[0], distinct[distinct.len() - 1]);
        let chart = Chart {
            title: format!("pharos bench {mode}: {unit}/s vs {}", axis_label(axis)),
            x_label: axis_label(axis) + if lo > 0.0 && hi / lo >= 20.0 { " (log scale)" } else { "" },
            y_label: format!("{unit}/s (median; whiskers min-max)"),
            log_x: lo > 0.0 && hi / lo >= 20.0,
            series,
        };
        let path = dir.join(format!("{mode}-vs-{axis}.svg"));
        std::fs::write(&path, chart.render()?).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn param_text(m: &Measurement, name: &str) -> Option<String> {
    m.params.iter().find(|p| p.name == name).map(Param::text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_is_well_formed_svg() {
        let chart = Chart {
            title: "t <&>".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            log_x: true,
            series: vec![Series {
                label: "a".into(),
                points: vec![
                    Point { x: 1e3, y: 10.0, lo: 9.0, hi: 11.0 },
                    Point { x: 1e6, y: 5.0, lo: 4.0, hi: 6.0 },
                ],
            }],
        };
        let svg = chart.render().unwrap();
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t &lt;&amp;&gt;"));
        assert!(svg.contains("<polyline"), "the series' line");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // The ticks at the data's own x values, compact, and the series' name in the legend.
        for text in ["1000", "1M", "a"] {
            assert!(svg.lines().any(|l| l.trim() == text), "no text {text} in {svg}");
        }
    }

    #[test]
    fn ticks_are_compact() {
        assert_eq!(tick_text(1_500_000.0), "1.5M");
        assert_eq!(tick_text(0.25), "0.25");
        assert_eq!(tick_text(16.0), "16");
        assert_eq!(tick_text(12_000.0), "12k");
    }
}
