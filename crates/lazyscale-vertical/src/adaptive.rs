//! The adaptive estimation method ([`crate::EstimationMethod::Adaptive`]): what it adds to the decaying
//! histograms, and the rules that turn it into targets.
//!
//! Per container it keeps one [`HourStat`] per hour for the last 8 days (192 entries, 16 bytes each,
//! about 3 KB; allocated only for the adaptive method): the exact memory peak (largest sample of any pod)
//! and the largest CPU sample of the hour.
//!
//! **Memory.** The VPA requests the p90 of daily peaks, reported as the end of a 5 % bucket, plus 15 %:
//! on a steady workload that is 15–20 % above anything ever used. The adaptive target is the exact
//! largest hourly peak of the window plus a margin sized by how much the daily peaks vary
//! (`5 % + their coefficient of variation`, at most 10 %), plus a growth allowance when the peaks rise
//! steadily (a leak, a filling cache): the least-squares slope of the hourly peaks over the last 3 days,
//! when it explains most of their variance (R² ≥ 0.7), times 36 hours (a request lives for at least one
//! update interval, typically 12–24 h), capped at half the peak. The window is 8 days, except after a
//! level shift down: when the last 36 hours peaked below 75 % of the window's peak (a release that uses
//! less, a leak reset by a restart), only those 36 hours count, with a 10 % margin.
//!
//! **CPU.** The target is the p98 of the decaying CPU histogram (24 h half-life) with no margin: CPU
//! above the request is only lost when the node is full, and a high percentile tracks the busy hours
//! better than the p90 + 15 % that over-reserves a tight distribution and under-reserves a skewed one.
//! After a step down (the last 48 hours peaked, +10 %, below 60 % of that target) the target is the
//! recent peak + 10 %: the decaying histogram would keep the old level for about three days. Weekends
//! (30 % less traffic) do not trigger it.
//!
//! Both keep the recommender's minimums and its OOM floor.

use std::collections::VecDeque;

/// Hours of history kept.
pub const WINDOW_HOURS: usize = 8 * 24;
/// Hours that decide a level shift of memory.
const MEMORY_RECENT_HOURS: i64 = 36;
/// A memory level shift: the recent peak is below this fraction of the window's.
const MEMORY_SHIFT_RATIO: f64 = 0.75;
/// Margin after a memory level shift.
const MEMORY_SHIFT_MARGIN: f64 = 0.10;
/// Smallest and largest memory margin.
const MEMORY_MARGIN: (f64, f64) = (0.05, 0.10);
/// Hours fitted for the memory trend, and the least fit that counts as a trend.
const TREND_HOURS: i64 = 72;
const TREND_MIN_R2: f64 = 0.7;
/// How far ahead the trend is projected, in hours.
const TREND_HORIZON_HOURS: f64 = 36.0;
/// CPU percentile of the decaying histogram (no margin on top).
pub const CPU_PERCENTILE: f64 = 0.98;
/// Hours that decide a CPU step down, the ratio that makes one, and the margin on the recent peak.
const CPU_RECENT_HOURS: i64 = 48;
const CPU_STEP_RATIO: f64 = 0.6;
const CPU_STEP_MARGIN: f64 = 0.10;

/// The largest samples of one hour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourStat {
    /// Unix seconds / 3600.
    pub hour: i64,
    /// Largest memory sample, bytes.
    pub memory_peak: f64,
    /// Largest CPU sample, millicores.
    pub cpu_max: f64,
}

/// Hourly maxima of one container over the last [`WINDOW_HOURS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdaptiveState {
    hours: VecDeque<HourStat>,
}

impl AdaptiveState {
    /// Empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of hours held.
    pub fn len(&self) -> usize {
        self.hours.len()
    }

    /// True when no hour is held.
    pub fn is_empty(&self) -> bool {
        self.hours.is_empty()
    }

    fn hour_mut(&mut self, at: i64) -> Option<&mut HourStat> {
        let hour = at.div_euclid(3600);
        match self.hours.back() {
            Some(last) if last.hour == hour => {}
            Some(last) if last.hour > hour => {
                // A late sample: into its hour if still held, else dropped.
                return self.hours.iter_mut().rev().find(|h| h.hour == hour);
            }
            _ => {
                self.hours.push_back(HourStat {
                    hour,
                    memory_peak: 0.0,
                    cpu_max: 0.0,
                });
                let oldest = hour - WINDOW_HOURS as i64 + 1;
                while self.hours.front().is_some_and(|h| h.hour < oldest) {
                    self.hours.pop_front();
                }
            }
        }
        self.hours.back_mut()
    }

    /// Records a CPU sample (millicores).
    pub fn add_cpu(&mut self, millicores: f64, at: i64) {
        if let Some(h) = self.hour_mut(at) {
            h.cpu_max = h.cpu_max.max(millicores);
        }
    }

    /// Records a memory sample (bytes).
    pub fn add_memory(&mut self, bytes: f64, at: i64) {
        if let Some(h) = self.hour_mut(at) {
            h.memory_peak = h.memory_peak.max(bytes);
        }
    }

    fn since(&self, hours: i64) -> impl Iterator<Item = &HourStat> {
        let newest = self.hours.back().map_or(0, |h| h.hour);
        self.hours.iter().filter(move |h| h.hour > newest - hours)
    }

    fn span_hours(&self) -> i64 {
        match (self.hours.front(), self.hours.back()) {
            (Some(a), Some(b)) => b.hour - a.hour + 1,
            _ => 0,
        }
    }

    /// The adaptive memory target (bytes, before minimums and the OOM floor); `None` without memory
    /// samples.
    pub fn memory_target(&self) -> Option<f64> {
        let peak = |it: &mut dyn Iterator<Item = &HourStat>| it.map(|h| h.memory_peak).fold(0.0f64, f64::max);
        let window = peak(&mut self.hours.iter());
        if window <= 0.0 {
            return None;
        }
        let recent = peak(&mut self.since(MEMORY_RECENT_HOURS));
        let shifted = self.span_hours() > MEMORY_RECENT_HOURS && recent < MEMORY_SHIFT_RATIO * window;
        let (base, margin, fit_hours) = if shifted {
            (recent, MEMORY_SHIFT_MARGIN, MEMORY_RECENT_HOURS)
        } else {
            (window, self.memory_margin(), TREND_HOURS)
        };
        let trend = self
            .memory_slope_per_hour(fit_hours)
            .map_or(0.0, |s| (s * TREND_HORIZON_HOURS).clamp(0.0, 0.5 * base));
        Some(base * (1.0 + margin) + trend)
    }

    /// `5 % + coefficient of variation of the daily peaks`, within [`MEMORY_MARGIN`]; the largest
    /// margin with less than two days.
    fn memory_margin(&self) -> f64 {
        let newest = self.hours.back().map_or(0, |h| h.hour);
        let mut days = [0.0f64; WINDOW_HOURS / 24 + 1];
        for h in &self.hours {
            if let Some(d) = usize::try_from((newest - h.hour) / 24)
                .ok()
                .and_then(|i| days.get_mut(i))
            {
                *d = d.max(h.memory_peak);
            }
        }
        let full_days = usize::try_from(self.span_hours() / 24)
            .unwrap_or(0)
            .min(days.len());
        let peaks: Vec<f64> = days
            .iter()
            .take(full_days)
            .copied()
            .filter(|p| *p > 0.0)
            .collect();
        if peaks.len() < 2 {
            return MEMORY_MARGIN.1;
        }
        let n = peaks.len() as f64;
        let mean = peaks.iter().sum::<f64>() / n;
        let var = peaks.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / n;
        (MEMORY_MARGIN.0 + var.sqrt() / mean).clamp(MEMORY_MARGIN.0, MEMORY_MARGIN.1)
    }

    /// Least-squares slope (bytes per hour) of the hourly peaks of the last `hours`, when positive and
    /// with R² ≥ 0.7 over at least 24 hours.
    fn memory_slope_per_hour(&self, hours: i64) -> Option<f64> {
        let points: Vec<(f64, f64)> = self
            .since(hours)
            .filter(|h| h.memory_peak > 0.0)
            .map(|h| (h.hour as f64, h.memory_peak))
            .collect();
        if points.len() < 24 {
            return None;
        }
        let n = points.len() as f64;
        let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
        let my = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
        if sxx <= 0.0 || syy <= 0.0 {
            return None;
        }
        let slope = sxy / sxx;
        let r2 = sxy * sxy / (sxx * syy);
        (slope > 0.0 && r2 >= TREND_MIN_R2).then_some(slope)
    }

    /// The CPU target after a step down: `Some(recent peak + 10 %)` when that is below 60 % of
    /// `histogram_target` and 48 hours are known, else `None` (keep the histogram's target).
    pub fn cpu_step_down(&self, histogram_target: f64) -> Option<f64> {
        if self.span_hours() <= CPU_RECENT_HOURS {
            return None;
        }
        let recent = self
            .since(CPU_RECENT_HOURS)
            .map(|h| h.cpu_max)
            .fold(0.0f64, f64::max);
        let capped = recent * (1.0 + CPU_STEP_MARGIN);
        (capped > 0.0 && capped < CPU_STEP_RATIO * histogram_target).then_some(capped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;

    fn feed(
        s: &mut AdaptiveState,
        hours: i64,
        from: i64,
        mem: impl Fn(i64) -> f64,
        cpu: impl Fn(i64) -> f64,
    ) {
        for m in (from * 60)..((from + hours) * 60) {
            s.add_memory(mem(m), m * 60);
            s.add_cpu(cpu(m), m * 60);
        }
    }

    #[test]
    fn steady_memory_gets_the_exact_peak_plus_five_percent() {
        let mut s = AdaptiveState::new();
        feed(&mut s, 96, 0, |_| 500.0 * MIB, |_| 100.0);
        let t = s.memory_target().unwrap_or_default();
        assert!((t / (500.0 * MIB) - 1.05).abs() < 1e-6, "{}", t / MIB);
        assert_eq!(s.len(), 96);
    }

    #[test]
    fn the_window_is_eight_days() {
        let mut s = AdaptiveState::new();
        feed(&mut s, 24 * 10, 0, |_| 100.0 * MIB, |_| 1.0);
        assert_eq!(s.len(), WINDOW_HOURS);
    }

    #[test]
    fn a_leak_is_projected() {
        let mut s = AdaptiveState::new();
        // +2 MiB per hour.
        feed(
            &mut s,
            96,
            0,
            |m| 400.0 * MIB + (m as f64 / 60.0) * 2.0 * MIB,
            |_| 100.0,
        );
        let peak = 400.0 * MIB + 96.0 * 2.0 * MIB;
        let t = s.memory_target().unwrap_or_default();
        assert!(t > peak * 1.05 + 60.0 * MIB, "{}", t / MIB);
        assert!(t < peak * 1.15 + 80.0 * MIB, "{}", t / MIB);
    }

    #[test]
    fn a_step_down_forgets_the_old_level_after_36_hours() {
        let mut s = AdaptiveState::new();
        feed(&mut s, 72, 0, |_| 1000.0 * MIB, |_| 1000.0);
        feed(&mut s, 40, 72, |_| 500.0 * MIB, |_| 300.0);
        let t = s.memory_target().unwrap_or_default();
        assert!((t / (500.0 * MIB) - 1.1).abs() < 1e-6, "{}", t / MIB);
        assert_eq!(s.cpu_step_down(1000.0), None, "48 hours not yet passed");
        feed(&mut s, 10, 112, |_| 500.0 * MIB, |_| 300.0);
        let cap = s.cpu_step_down(1000.0).unwrap_or_default();
        assert!((cap - 330.0).abs() < 1e-9);
        // A weekend-sized dip (30 %) is not a step down.
        assert_eq!(s.cpu_step_down(450.0), None);
    }

    #[test]
    fn a_daily_cycle_is_not_a_trend() {
        let mut s = AdaptiveState::new();
        let wave = |m: i64| 600.0 * MIB + 200.0 * MIB * (m as f64 / 1440.0 * std::f64::consts::TAU).sin();
        feed(&mut s, 24 * 7, 0, wave, |_| 100.0);
        let t = s.memory_target().unwrap_or_default();
        assert!(t <= 800.0 * MIB * 1.06, "{}", t / MIB);
    }
}
