//! `--plot DIR`: small self-contained SVG line charts (no plotting crate): axes, ticks, one polyline per
//! series with min–max whiskers at each point, axis labels and a legend.
//!
//! [`plot_sweeps`] draws one chart per swept parameter of a run (a parameter with an `x` position that takes
//! more than one value: image size in megapixels, batch size, threads, bank size): throughput (median
//! items/s) against that parameter, one series per combination of the other parameters.

use super::{Measurement, Param};
use anyhow::Context as _;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One point: x, the median y and its min–max whisker.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Point {
    pub(crate) x: f64,
    pub(crate) y: f64,
    pub(crate) lo: f64,
    pub(crate) hi: f64,
}

/// A named polyline.
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

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 64.0;
const COLOURS: [&str; 8] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Compact tick text: 1.5k, 2M, 0.25.
fn tick_text(v: f64) -> String {
    let a = v.abs();
    let (d, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = if d.fract().abs() < 1e-9 {
        format!("{d:.0}")
    } else if d.abs() >= 10.0 {
        format!("{d:.1}")
    } else {
        format!("{d:.2}").trim_end_matches('0').trim_end_matches('.').to_string()
    };
    format!("{s}{suffix}")
}

/// Round tick values (steps of 1, 2 or 5 × 10^k) covering 0..=max.
fn y_ticks(max: f64) -> Vec<f64> {
    if max <= 0.0 || !max.is_finite() {
        return vec![0.0, 1.0];
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let n = (max / step).ceil() as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

impl Chart {
    /// The chart as an SVG document.
    pub(crate) fn render(&self) -> String {
        let pts = || self.series.iter().flat_map(|s| s.points.iter());
        let mut xs: Vec<f64> = pts().map(|p| p.x).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        let (x0, x1) = (xs.first().copied().unwrap_or(0.0), xs.last().copied().unwrap_or(1.0));
        let fx = |x: f64| if self.log_x { x.max(f64::MIN_POSITIVE).log10() } else { x };
        // A linear axis starts at 0; a logarithmic one at the smallest value.
        let x0 = if self.log_x { x0 } else { x0.min(0.0) };
        let (lx0, lx1) =
            if (fx(x1) - fx(x0)).abs() < 1e-12 { (fx(x0) - 1.0, fx(x1) + 1.0) } else { (fx(x0), fx(x1)) };
        let ymax = pts().map(|p| p.hi.max(p.y)).fold(0.0, f64::max) * 1.05;
        let yt = y_ticks(ymax);
        let ytop = *yt.last().unwrap_or(&1.0);
        let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let px = |x: f64| LEFT + (fx(x) - lx0) / (lx1 - lx0) * pw;
        let py = |y: f64| TOP + ph - y / ytop * ph;

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
            LEFT + pw / 2.0,
            esc(&self.title)
        );
        // Grid and y ticks.
        for &t in &yt {
            let y = py(t);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                tick_text(t)
            );
        }
        // x ticks: the data's own x values (sweeps have few points).
        let mut last_label_x = f64::NEG_INFINITY;
        for &x in &xs {
            let xp = px(x);
            let _ = writeln!(
                s,
                r##"<line x1="{xp:.1}" y1="{:.1}" x2="{xp:.1}" y2="{:.1}" stroke="#444"/>"##,
                TOP + ph,
                TOP + ph + 5.0
            );
            if xp - last_label_x >= 28.0 {
                let _ = writeln!(
                    s,
                    r#"<text x="{xp:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                    TOP + ph + 19.0,
                    tick_text(x)
                );
                last_label_x = xp;
            }
        }
        // Axes and their labels.
        let _ = writeln!(
            s,
            r##"<path d="M{LEFT},{TOP} V{:.1} H{:.1}" fill="none" stroke="#444"/>"##,
            TOP + ph,
            LEFT + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            HEIGHT - 18.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            esc(&self.y_label)
        );
        // Series: whiskers, polyline, markers, legend.
        for (i, series) in self.series.iter().enumerate() {
            let c = COLOURS[i % COLOURS.len()];
            let mut points: Vec<Point> = series.points.clone();
            points.sort_by(|a, b| a.x.total_cmp(&b.x));
            for p in &points {
                let xp = px(p.x);
                let _ = writeln!(
                    s,
                    r#"<line x1="{xp:.1}" y1="{:.1}" x2="{xp:.1}" y2="{:.1}" stroke="{c}" stroke-width="1"/>"#,
                    py(p.lo),
                    py(p.hi)
                );
            }
            let line: Vec<String> = points.iter().map(|p| format!("{:.1},{:.1}", px(p.x), py(p.y))).collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
                line.join(" ")
            );
            for p in &points {
                let _ = writeln!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#, px(p.x), py(p.y));
            }
            let ly = TOP + 10.0 + 18.0 * i as f64;
            let lx = LEFT + pw + 16.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{c}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                lx + 18.0,
                lx + 24.0,
                ly + 4.0,
                esc(&series.label)
            );
        }
        s.push_str("</svg>\n");
        s
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
        std::fs::write(&path, chart.render()).with_context(|| format!("writing {}", path.display()))?;
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
        let svg = chart.render();
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t &lt;&amp;&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(y_ticks(9.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(tick_text(1_500_000.0), "1.5M");
        assert_eq!(tick_text(0.25), "0.25");
        assert_eq!(tick_text(16.0), "16");
    }
}
