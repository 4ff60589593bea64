//! What a run reports: [`Measurement`]s gathered in a [`Report`], printed as a text table (comfy-table) and
//! written as JSON (`--json`) and charts (`--plot`, see [`super::plot`]).

use super::{cpus, plot, Common, Stats};
use anyhow::Context as _;
use comfy_table::{Cell, CellAlignment, LineStyle, TableStyle};
use serde::ser::{SerializeMap as _, Serializer};
use serde::Serialize;
use serde_json::Value;
use std::path::Path;
use std::time::SystemTime;

/// One named parameter of a configuration. `x` is its numeric position on a chart when it can be swept
/// (megapixels for an image size, the batch size, the thread count, the bank size).
#[derive(Clone, Debug)]
pub(crate) struct Param {
    pub(crate) name: &'static str,
    pub(crate) value: Value,
    pub(crate) x: Option<f64>,
}

impl Param {
    /// A parameter that is not plotted.
    pub(crate) fn new(name: &'static str, value: impl Into<Value>) -> Param {
        Param { name, value: value.into(), x: None }
    }

    /// A parameter that can be swept and plotted at `x`.
    pub(crate) fn axis(name: &'static str, value: impl Into<Value>, x: f64) -> Param {
        Param { name, value: value.into(), x: Some(x) }
    }

    /// The value as table text.
    pub(crate) fn text(&self) -> String {
        match &self.value {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }
}

fn ser_pairs<S: Serializer>(pairs: &[(&'static str, Value)], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        m.serialize_entry(k, v)?;
    }
    m.end()
}

fn ser_params<S: Serializer>(params: &[Param], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(params.len()))?;
    for p in params {
        m.serialize_entry(p.name, &p.value)?;
    }
    m.end()
}

/// One configuration's result.
#[derive(Serialize, Clone, Debug)]
pub(crate) struct Measurement {
    /// The mode (or, in the capacity report, the stage) measured.
    pub(crate) mode: &'static str,
    /// What an item is: "images" or "queries" (rates are items per second).
    pub(crate) unit: &'static str,
    /// The configuration, in table column order.
    #[serde(serialize_with = "ser_params")]
    pub(crate) params: Vec<Param>,
    /// The measured rates.
    pub(crate) rate: Stats,
    /// Further figures (megapixels/s, build time, bytes per hash…), in table column order.
    #[serde(serialize_with = "ser_pairs")]
    pub(crate) extra: Vec<(&'static str, Value)>,
}

impl Measurement {
    pub(crate) fn new(
        mode: &'static str,
        unit: &'static str,
        params: Vec<Param>,
        rate: Stats,
    ) -> Measurement {
        Measurement { mode, unit, params, rate, extra: Vec::new() }
    }

    pub(crate) fn with(mut self, name: &'static str, value: impl Into<Value>) -> Measurement {
        self.extra.push((name, value.into()));
        self
    }

    /// Prints a one-line progress note on stderr (the table comes at the end, on stdout).
    pub(crate) fn note(&self) {
        let params: Vec<String> = self.params.iter().map(|p| format!("{} {}", p.name, p.text())).collect();
        eprintln!(
            "bench {}: {}: {} {}/s (min {}, max {})",
            self.mode,
            params.join(", "),
            fmt_rate(self.rate.median),
            self.unit,
            fmt_rate(self.rate.min),
            fmt_rate(self.rate.max)
        );
    }
}

/// Where it ran.
#[derive(Serialize, Clone, Debug)]
pub(crate) struct Machine {
    os: &'static str,
    arch: &'static str,
    cpus: usize,
    cpu_model: String,
}

impl Machine {
    pub(crate) fn this() -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine { os: std::env::consts::OS, arch: std::env::consts::ARCH, cpus: cpus(), cpu_model }
    }
}

#[derive(Serialize, Clone, Debug)]
struct Settings {
    reps: u32,
    warmup: u32,
    min_seconds_per_rep: f64,
}

/// Everything one `pharos bench` run reports.
#[derive(Serialize, Debug)]
pub(crate) struct Report {
    tool: &'static str,
    mode: &'static str,
    version: &'static str,
    date: String,
    machine: Machine,
    settings: Settings,
    spread: &'static str,
    /// Every measured configuration.
    pub(crate) results: Vec<Measurement>,
    /// The capacity mode's report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) capacity: Option<Value>,
}

impl Report {
    pub(crate) fn new(mode: &'static str, c: &Common) -> Report {
        Report {
            tool: "pharos bench",
            mode,
            version: env!("CARGO_PKG_VERSION"),
            date: utc_now(),
            machine: Machine::this(),
            settings: Settings { reps: c.reps, warmup: c.warmup, min_seconds_per_rep: c.seconds },
            spread: "min/max and p10/p90 of the per-repetition rates; the figure is the median",
            results: Vec::new(),
            capacity: None,
        }
    }

    /// Adds a result (and prints its progress line on stderr).
    pub(crate) fn push(&mut self, m: Measurement) {
        m.note();
        self.results.push(m);
    }

    /// Prints the results table on stdout, then writes `--json` and `--plot` when asked.
    pub(crate) fn finish(&self, c: &Common) -> anyhow::Result<()> {
        print!("{}", results_table(&self.results, true));
        self.write_outputs(c)
    }

    /// Writes `--json` and `--plot` when asked (no table).
    pub(crate) fn write_outputs(&self, c: &Common) -> anyhow::Result<()> {
        if let Some(path) = &c.json {
            write_json(path, self)?;
        }
        if let Some(dir) = &c.plot {
            for p in plot::plot_sweeps(dir, self.mode, &self.results)? {
                eprintln!("bench: wrote {}", p.display());
            }
        }
        Ok(())
    }
}

/// Writes `value` as pretty JSON to `path`.
fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// A plain-text table: no borders, columns two spaces apart, a dashed line under the header, and cells that
/// start like a number (digit, `-`, `.`) right-aligned; one line per row, no trailing spaces.
pub(crate) fn table<S: Into<String>>(
    header: impl IntoIterator<Item = S>,
    rows: impl IntoIterator<Item = Vec<String>>,
) -> String {
    let numeric = |s: &str| s.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.');
    let mut t = comfy_table::Table::new();
    t.load_style(TableStyle::new().header_separator(LineStyle::none().fill('-')));
    t.set_header(header.into_iter().map(Into::into).collect::<Vec<String>>());
    for row in rows {
        t.add_row(row.into_iter().map(|c| {
            let align = if numeric(&c) { CellAlignment::Right } else { CellAlignment::Left };
            Cell::new(c).set_alignment(align)
        }));
    }
    let last = t.column_count().saturating_sub(1);
    for c in t.column_iter_mut() {
        c.set_padding((0, if c.index == last { 0 } else { 2 }));
    }
    t.trim_fmt() + "\n"
}

/// The standard results table: the parameters, the median rate, min–max and p10–p90, ms per call, and the
/// extra figures when `extras`.
pub(crate) fn results_table(results: &[Measurement], extras: bool) -> String {
    let with_extras = extras;
    let mut names: Vec<&'static str> = Vec::new();
    let mut extras: Vec<&'static str> = Vec::new();
    for m in results {
        for p in &m.params {
            if !names.contains(&p.name) {
                names.push(p.name);
            }
        }
        for (k, _) in m.extra.iter().filter(|_| with_extras) {
            if !extras.contains(k) {
                extras.push(k);
            }
        }
    }
    let mut header: Vec<String> = vec!["mode".into()];
    header.extend(names.iter().map(|s| s.to_string()));
    header.extend(["median/s", "unit", "min-max/s", "p10-p90/s", "ms/call"].map(String::from));
    header.extend(extras.iter().map(|s| s.to_string()));
    let mut rows = Vec::new();
    for m in results {
        let mut row = vec![m.mode.to_string()];
        for n in &names {
            row.push(m.params.iter().find(|p| p.name == *n).map_or_else(|| "-".into(), Param::text));
        }
        row.push(fmt_rate(m.rate.median));
        row.push(m.unit.to_string());
        row.push(format!("{}-{}", fmt_rate(m.rate.min), fmt_rate(m.rate.max)));
        row.push(format!("{}-{}", fmt_rate(m.rate.p10), fmt_rate(m.rate.p90)));
        row.push(format!("{:.2}", m.rate.ms_per_call));
        for k in &extras {
            row.push(m.extra.iter().find(|(n, _)| n == k).map_or_else(|| "-".into(), |(_, v)| fmt_value(v)));
        }
        rows.push(row);
    }
    table(header, rows)
}

/// A rate with sensible precision: 3 significant digits below 100, whole numbers above.
pub(crate) fn fmt_rate(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn fmt_value(v: &Value) -> String {
    match v {
        Value::Number(n) => n.as_f64().map_or_else(
            || n.to_string(),
            |f| {
                if f.fract() == 0.0 && f.abs() < 1e15 {
                    format!("{f:.0}")
                } else {
                    fmt_rate(f)
                }
            },
        ),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// The current UTC time to the second, RFC 3339: `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn utc_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_is_iso() {
        let d = utc_now();
        assert_eq!(d.len(), 20, "{d}");
        assert!(d.starts_with("20") && d.ends_with('Z'), "{d}");
    }

    #[test]
    fn table_aligns_numbers_right() {
        let s = table(["name", "rate"], vec![vec!["a".into(), "5".into()], vec!["bb".into(), "123".into()]]);
        assert!(s.contains("a        5\n"), "{s}");
        assert!(s.contains("bb     123\n"), "{s}");
    }
}
