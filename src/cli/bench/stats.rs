//! The measuring harness: [`measure`] times a closure over repetitions and sums them up as [`Stats`].

use super::Common;
use serde::Serialize;
use std::time::Instant;

/// Rates of one configuration over its timed repetitions, in items per second.
#[derive(Serialize, Clone, Debug)]
pub(crate) struct Stats {
    /// Median of the per-repetition rates: the figure reported.
    pub(crate) median: f64,
    /// Slowest repetition.
    pub(crate) min: f64,
    /// Fastest repetition.
    pub(crate) max: f64,
    /// 10th percentile of the repetitions' rates (linear interpolation between sorted rates).
    pub(crate) p10: f64,
    /// 90th percentile.
    pub(crate) p90: f64,
    /// Every repetition's rate, in order.
    pub(crate) runs: Vec<f64>,
    /// Items handled in all timed repetitions.
    pub(crate) items: u64,
    /// Seconds of all timed repetitions.
    pub(crate) seconds: f64,
    /// Calls of the closure in all timed repetitions.
    pub(crate) calls: u64,
    /// Median milliseconds per call (per batch, per pass: whatever one call does).
    pub(crate) ms_per_call: f64,
}

/// Percentile `p` (0..=1) of sorted values, interpolating linearly between the two nearest ranks (numpy's
/// default, Hyndman–Fan type 7); NaN when there are none.
///
/// Kept by hand on purpose: it is these few lines over a handful of repetitions (or a few thousand
/// latencies), and the crates with percentiles either use another estimator and bring much along (`statrs`:
/// R's type 8, nalgebra by default) or approximate from a stream (`hdrhistogram`, P² estimators) where an
/// exact figure is cheap.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl Stats {
    fn from_runs(runs: Vec<f64>, call_ms: Vec<f64>, items: u64, seconds: f64, calls: u64) -> Stats {
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        let mut ms = call_ms;
        ms.sort_by(f64::total_cmp);
        Stats {
            median: percentile(&sorted, 0.5),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            p10: percentile(&sorted, 0.1),
            p90: percentile(&sorted, 0.9),
            runs,
            items,
            seconds,
            calls,
            ms_per_call: percentile(&ms, 0.5),
        }
    }

    /// Combines measurements of one configuration taken at different times (the capacity report measures
    /// its stages in interleaved rounds): all their repetitions, as if measured together.
    pub(crate) fn merge<'a>(parts: impl IntoIterator<Item = &'a Stats>) -> Stats {
        let (mut runs, mut call_ms) = (Vec::new(), Vec::new());
        let (mut items, mut seconds, mut calls) = (0, 0.0, 0);
        for p in parts {
            runs.extend_from_slice(&p.runs);
            // Each part's median call time stands for its repetitions.
            call_ms.extend(std::iter::repeat_n(p.ms_per_call, p.runs.len()));
            items += p.items;
            seconds += p.seconds;
            calls += p.calls;
        }
        Stats::from_runs(runs, call_ms, items, seconds, calls)
    }

    /// Seconds per item at the median rate (what the capacity model adds up).
    pub(crate) fn seconds_per_item(&self) -> f64 {
        1.0 / self.median
    }
}

/// Measures `work`, a closure that does some work and returns how many items it handled: `--warmup` untimed
/// calls, then `--reps` repetitions, each calling it until `--seconds` have passed (at least once).
pub(crate) fn measure(c: &Common, mut work: impl FnMut() -> u64) -> Stats {
    for _ in 0..c.warmup {
        std::hint::black_box(work());
    }
    let (mut runs, mut call_ms) = (Vec::new(), Vec::new());
    let (mut items_all, mut seconds_all, mut calls_all) = (0u64, 0.0, 0u64);
    for _ in 0..c.reps.max(1) {
        let start = Instant::now();
        let (mut items, mut calls) = (0u64, 0u64);
        loop {
            items += std::hint::black_box(work());
            calls += 1;
            if start.elapsed().as_secs_f64() >= c.seconds {
                break;
            }
        }
        let s = start.elapsed().as_secs_f64().max(1e-9);
        runs.push(items as f64 / s);
        call_ms.push(s * 1e3 / calls as f64);
        items_all += items;
        seconds_all += s;
        calls_all += calls;
    }
    Stats::from_runs(runs, call_ms, items_all, seconds_all, calls_all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert!((percentile(&v, 0.1) - 1.4).abs() < 1e-12);
        assert!((percentile(&v, 0.9) - 4.6).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 0.9), 7.0);
    }

    #[test]
    fn merged_stats_pool_the_repetitions() {
        let a = Stats::from_runs(vec![10.0], vec![2.0], 10, 1.0, 1);
        let b = Stats::from_runs(vec![30.0, 20.0], vec![4.0, 6.0], 50, 2.0, 2);
        let m = Stats::merge([&a, &b]);
        assert_eq!(m.runs, vec![10.0, 30.0, 20.0]);
        assert_eq!((m.median, m.min, m.max), (20.0, 10.0, 30.0));
        assert_eq!((m.items, m.seconds, m.calls), (60, 3.0, 3));
        assert_eq!(m.ms_per_call, 5.0);
    }
}
