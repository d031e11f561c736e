//! The adaptive estimation method ([`crate::EstimationMethod::Adaptive`]): what it adds to the decaying
//! histograms, and the rules that turn it into targets.
//!
//! Per container it keeps one [`HourStat`] per hour for the last 8 days (192 entries, 48 bytes each,
//! about 9 KB; allocated only for the adaptive method): the exact memory peak (largest sample of any pod),
//! the largest CPU sample of the hour, and the count, sum and sum of squares of its CPU samples.
//!
//! **Memory.** The VPA requests the p90 of daily peaks, reported as the end of a 5 % bucket, plus 15 %:
//! on a steady workload that is 15–20 % above anything ever used. The adaptive target is the exact
//! largest hourly peak of the window plus a margin sized by how much the daily peaks vary
//! (`3 % + their coefficient of variation`, at most 10 %), plus a growth allowance when the peaks rise
//! steadily (a leak, a filling cache): the least-squares slope of the hourly peaks over the last 3 days,
//! when it explains most of their variance (R² ≥ 0.7), times the hours the request lives (the CPU
//! horizon + 1 hour when [`crate::Config::cpu_horizon_seconds`] is set, else 36 hours: a request applied
//! at pod creation lives for at least one update interval, typically 12–24 h), capped at half the peak.
//! The window is 8 days, except after a level shift down: when the last 36 hours peaked below 65 % of
//! the window's peak (a release that uses less, a leak reset by a restart), only those 36 hours count,
//! with a 10 % margin. (A rare spike 35 % above the usual peak is not a level: at 75 % a worker whose
//! spike skipped a day and a half lost its memory for the next one.)
//!
//! **CPU.** The target is the p98 of the decaying CPU histogram (24 h half-life) with no margin: CPU
//! above the request is only lost when the node is full, and a high percentile tracks the busy hours
//! better than the p90 + 15 % that over-reserves a tight distribution and under-reserves a skewed one.
//! After a step down (the last 48 hours peaked, +10 %, below 60 % of that target) the target is the
//! recent peak + 10 %: the decaying histogram would keep the old level for about three days. Weekends
//! (30 % less traffic) do not trigger it.
//!
//! **CPU by the hours of the day** (with [`crate::Config::cpu_horizon_seconds`] set, the default: the
//! request is re-applied about that often, by in-place updates): an applied request only has to cover
//! the hours until the next update. Each hour has a level `mean + 2.5·sd` of its samples; per hour of the
//! day the level is the median over the 8 days (a spike or a JVM warm-up on one day does not count) or
//! the latest day's when higher (a step up is seen after a day). When the last two hours run more than
//! 25 % above the same hours of the other days (a step up, a launch), every hour's median is scaled by
//! that ratio (at most ×3), so the step is followed within the hour instead of after a day. A request
//! applied during an hour lives into the hours after it: the target is the highest level of the hour
//! under way and the `horizon` hours after it, when that is below 85 % of the whole day's (else the
//! whole day's: a saving smaller than an updater's change threshold is not worth a change). It never
//! exceeds the histogram's target, and gets [`crate::Config::cpu_horizon_margin`] on top (12 % by
//! default: at least the updater's 10 % change threshold, so a request the threshold leaves in place
//! still covers the level). The step-down rule still applies on top.
//!
//! A history spanning fewer than [`CPU_MIN_HOURS`] clock-hours keeps the VPA method's CPU target (a
//! high percentile of a few dozen samples is their largest). Both keep the recommender's minimums and
//! its OOM floor. The hourly history is checkpointed with the
//! histograms ([`AdaptiveState::to_rows`]), so a restart keeps it; while it holds less than a day (a
//! first day, a checkpoint without it) memory is never below the decaying histogram's target.

use std::collections::VecDeque;

/// Hours of history kept.
pub const WINDOW_HOURS: usize = 8 * 24;
/// Hours that decide a level shift of memory.
const MEMORY_RECENT_HOURS: i64 = 36;
/// A memory level shift: the recent peak is below this fraction of the window's.
const MEMORY_SHIFT_RATIO: f64 = 0.65;
/// Margin after a memory level shift.
const MEMORY_SHIFT_MARGIN: f64 = 0.10;
/// Smallest and largest memory margin.
const MEMORY_MARGIN: (f64, f64) = (0.03, 0.10);
/// Hours fitted for the memory trend, and the least fit that counts as a trend.
const TREND_HOURS: i64 = 72;
const TREND_MIN_R2: f64 = 0.7;
/// How far ahead the trend is projected without a CPU horizon, in hours.
pub const TREND_HORIZON_HOURS: f64 = 36.0;
/// CPU percentile of the decaying histogram (no margin on top).
pub const CPU_PERCENTILE: f64 = 0.98;
/// Hours that decide a CPU step down, the ratio that makes one, and the margin on the recent peak.
const CPU_RECENT_HOURS: i64 = 48;
const CPU_STEP_RATIO: f64 = 0.6;
const CPU_STEP_MARGIN: f64 = 0.10;
/// Fewest CPU samples that make an hour's level.
pub const CPU_HOUR_MIN_SAMPLES: u32 = 10;
/// `z` of an hour's CPU level `mean + z·sd`.
pub const CPU_HOUR_Z: f64 = 2.5;
/// The last hours run hot when their level is more than this ratio of the same hours' median on the
/// other days; the hours ahead are then scaled by the ratio, at most by [`CPU_SHIFT_MAX`].
const CPU_SHIFT_RATIO: f64 = 1.25;
const CPU_SHIFT_MAX: f64 = 3.0;
/// Hours a memory sample of the adaptive state must span before memory may go below the histogram's
/// target.
pub const MEMORY_MIN_HOURS: i64 = 24;
/// Clock-hours the adaptive state must span before CPU follows the adaptive method (before: the VPA
/// method's target).
pub const CPU_MIN_HOURS: i64 = 2;
/// The hours ahead get their own level only when it is below this fraction of the whole day's (a
/// saving the update policy's change threshold lets through); else the whole day's level.
const CPU_HORIZON_MIN_SAVING: f64 = 0.85;
/// History needed before the CPU target follows the hours of the day (two full days).
const CPU_HORIZON_MIN_HOURS: i64 = 48;

/// The largest samples of one hour, and the moments of its CPU samples.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HourStat {
    /// Unix seconds / 3600.
    pub hour: i64,
    /// Largest memory sample, bytes.
    pub memory_peak: f64,
    /// Largest CPU sample, millicores.
    pub cpu_max: f64,
    /// Number of CPU samples (any pod).
    pub cpu_count: u32,
    /// Sum of the CPU samples, millicores.
    pub cpu_sum: f64,
    /// Sum of the squared CPU samples.
    pub cpu_sum_sq: f64,
}

impl HourStat {
    /// `mean + z·sd` of the hour's CPU samples (millicores), never above the hour's largest sample;
    /// `None` with fewer than [`CPU_HOUR_MIN_SAMPLES`].
    pub fn cpu_level(&self, z: f64) -> Option<f64> {
        if self.cpu_count < CPU_HOUR_MIN_SAMPLES {
            return None;
        }
        let n = f64::from(self.cpu_count);
        let mean = self.cpu_sum / n;
        let var = (self.cpu_sum_sq / n - mean * mean).max(0.0);
        Some((mean + z * var.sqrt()).min(self.cpu_max))
    }
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
                    ..HourStat::default()
                });
                let oldest = hour - WINDOW_HOURS as i64 + 1;
                while self.hours.front().is_some_and(|h| h.hour < oldest) {
                    self.hours.pop_front();
                }
            }
        }
        self.hours.back_mut()
    }

    /// The hours held, oldest first, as `[hour, memory_peak, cpu_max, cpu_count, cpu_sum, cpu_sum_sq]`
    /// rows (the checkpoint form; every value is exact in `f64`).
    pub fn to_rows(&self) -> Vec<[f64; 6]> {
        self.hours
            .iter()
            .map(|h| {
                [
                    h.hour as f64,
                    h.memory_peak,
                    h.cpu_max,
                    f64::from(h.cpu_count),
                    h.cpu_sum,
                    h.cpu_sum_sq,
                ]
            })
            .collect()
    }

    /// A state from [`AdaptiveState::to_rows`] rows; rows that are not finite, not in increasing hour
    /// order or outside the window of the newest are dropped.
    pub fn from_rows(rows: &[[f64; 6]]) -> Self {
        let mut s = Self::new();
        for r in rows {
            if !r.iter().all(|v| v.is_finite()) || r.iter().skip(1).any(|v| *v < 0.0) {
                continue;
            }
            let [hour, memory_peak, cpu_max, count, cpu_sum, cpu_sum_sq] = *r;
            let hour = hour as i64;
            if s.hours.back().is_some_and(|last| last.hour >= hour) {
                continue;
            }
            s.hours.push_back(HourStat {
                hour,
                memory_peak,
                cpu_max,
                cpu_count: count.min(f64::from(u32::MAX)) as u32,
                cpu_sum,
                cpu_sum_sq,
            });
        }
        s.trim();
        s
    }

    /// Adds `other`'s hours into this state (same hour: the larger peaks, the summed moments).
    pub fn merge(&mut self, other: &Self) {
        let mut by_hour: std::collections::BTreeMap<i64, HourStat> =
            self.hours.drain(..).map(|h| (h.hour, h)).collect();
        for h in &other.hours {
            let e = by_hour.entry(h.hour).or_insert(HourStat {
                hour: h.hour,
                ..HourStat::default()
            });
            e.memory_peak = e.memory_peak.max(h.memory_peak);
            e.cpu_max = e.cpu_max.max(h.cpu_max);
            e.cpu_count = e.cpu_count.saturating_add(h.cpu_count);
            e.cpu_sum += h.cpu_sum;
            e.cpu_sum_sq += h.cpu_sum_sq;
        }
        self.hours = by_hour.into_values().collect();
        self.trim();
    }

    /// Drops the hours older than the window of the newest one.
    fn trim(&mut self) {
        let Some(newest) = self.hours.back().map(|h| h.hour) else {
            return;
        };
        let oldest = newest - WINDOW_HOURS as i64 + 1;
        while self.hours.front().is_some_and(|h| h.hour < oldest) {
            self.hours.pop_front();
        }
    }

    /// Records a CPU sample (millicores).
    pub fn add_cpu(&mut self, millicores: f64, at: i64) {
        if let Some(h) = self.hour_mut(at) {
            h.cpu_max = h.cpu_max.max(millicores);
            h.cpu_count = h.cpu_count.saturating_add(1);
            h.cpu_sum += millicores;
            h.cpu_sum_sq += millicores * millicores;
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

    /// Hours from the oldest to the newest hour held (0 when empty).
    pub fn span_hours(&self) -> i64 {
        match (self.hours.front(), self.hours.back()) {
            (Some(a), Some(b)) => b.hour - a.hour + 1,
            _ => 0,
        }
    }

    /// The adaptive memory target (bytes, before minimums and the OOM floor), with a trend projected
    /// `trend_hours` ahead; `None` without memory samples.
    pub fn memory_target(&self, trend_hours: f64) -> Option<f64> {
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
            .map_or(0.0, |s| (s * trend_hours.max(0.0)).clamp(0.0, 0.5 * base));
        Some(base * (1.0 + margin) + trend)
    }

    /// `3 % + coefficient of variation of the daily peaks`, within [`MEMORY_MARGIN`]; the largest
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

    /// The CPU level of the hours of the day that a request applied now lives through: the hour under
    /// way and the `horizon_hours` after it. Per hour of the day, the larger of the median and the
    /// latest day's `mean + 2.5·sd` ([`HourStat::cpu_level`]) over the window (8 days, so a quiet weekend
    /// does not lower a Monday), scaled up when the last two hours run hot ([`recent_ratio`]); the whole
    /// day's level when the hours ahead save less than 15 %. `None` when `horizon_hours` is not in
    /// `1..24`, with less than 48 hours of history, or when one hour of the day has no level yet.
    pub fn cpu_horizon(&self, horizon_hours: i64) -> Option<f64> {
        let ahead = usize::try_from(horizon_hours)
            .ok()
            .filter(|h| (1..24).contains(h))?;
        if self.span_hours() < CPU_HORIZON_MIN_HOURS {
            return None;
        }
        let newest = self.hours.back()?.hour;
        // Per hour of the day (0 = the current one, 23 = the one before): every day's (hour, level).
        let mut by_hour: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 24];
        for h in &self.hours {
            let slot = usize::try_from((h.hour - newest).rem_euclid(24)).unwrap_or(usize::MAX);
            if let (Some(l), Some(all)) = (h.cpu_level(CPU_HOUR_Z), by_hour.get_mut(slot)) {
                all.push((h.hour, l));
            }
        }
        let scale = recent_ratio(&by_hour, newest);
        let mut levels = Vec::with_capacity(24);
        for all in &by_hour {
            // Hours come oldest first: the last one is the latest day's.
            let latest = all.last()?.1;
            let median = median_level(all, None)?;
            levels.push((median * scale).max(latest));
        }
        let day = levels.iter().copied().fold(0.0f64, f64::max);
        let window = levels.iter().take(ahead + 1).copied().fold(0.0f64, f64::max);
        Some(if window < CPU_HORIZON_MIN_SAVING * day {
            window
        } else {
            day
        })
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

/// The median level of one hour of the day's `(hour, level)` entries, leaving out `skip`.
fn median_level(entries: &[(i64, f64)], skip: Option<i64>) -> Option<f64> {
    let mut l: Vec<f64> = entries
        .iter()
        .filter(|(h, _)| Some(*h) != skip)
        .map(|(_, l)| *l)
        .collect();
    l.sort_by(f64::total_cmp);
    l.get(l.len() / 2).copied()
}

/// How much hotter the current and the previous hour run than the same hours of the day on the other
/// days (the largest ratio of the two): that ratio, capped at [`CPU_SHIFT_MAX`], when above
/// [`CPU_SHIFT_RATIO`]; else 1. `by_hour[0]` holds the current hour of the day, `by_hour[23]` the one
/// before.
fn recent_ratio(by_hour: &[Vec<(i64, f64)>], newest: i64) -> f64 {
    let mut ratio = 1.0f64;
    for (slot, hour) in [(0usize, newest), (23, newest - 1)] {
        let Some(entries) = by_hour.get(slot) else {
            continue;
        };
        let Some(&(_, level)) = entries.iter().find(|(h, _)| *h == hour) else {
            continue;
        };
        if let Some(usual) = median_level(entries, Some(hour)).filter(|m| *m > 0.0) {
            ratio = ratio.max(level / usual);
        }
    }
    if ratio > CPU_SHIFT_RATIO {
        ratio.min(CPU_SHIFT_MAX)
    } else {
        1.0
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
    fn steady_memory_gets_the_exact_peak_plus_three_percent() {
        let mut s = AdaptiveState::new();
        feed(&mut s, 96, 0, |_| 500.0 * MIB, |_| 100.0);
        let t = s.memory_target(TREND_HORIZON_HOURS).unwrap_or_default();
        assert!((t / (500.0 * MIB) - 1.03).abs() < 1e-6, "{}", t / MIB);
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
        let t = s.memory_target(TREND_HORIZON_HOURS).unwrap_or_default();
        assert!(t > peak * 1.05 + 60.0 * MIB, "{}", t / MIB);
        assert!(t < peak * 1.15 + 80.0 * MIB, "{}", t / MIB);
    }

    #[test]
    fn a_step_down_forgets_the_old_level_after_36_hours() {
        let mut s = AdaptiveState::new();
        feed(&mut s, 72, 0, |_| 1000.0 * MIB, |_| 1000.0);
        feed(&mut s, 40, 72, |_| 500.0 * MIB, |_| 300.0);
        let t = s.memory_target(TREND_HORIZON_HOURS).unwrap_or_default();
        assert!((t / (500.0 * MIB) - 1.1).abs() < 1e-6, "{}", t / MIB);
        assert_eq!(s.cpu_step_down(1000.0), None, "48 hours not yet passed");
        feed(&mut s, 10, 112, |_| 500.0 * MIB, |_| 300.0);
        let cap = s.cpu_step_down(1000.0).unwrap_or_default();
        assert!((cap - 330.0).abs() < 1e-9);
        // A weekend-sized dip (30 %) is not a step down.
        assert_eq!(s.cpu_step_down(450.0), None);
    }

    /// A diurnal CPU load: 100 millicores at night (hours 0-11), 1000 in the afternoon (12-23).
    fn diurnal(m: i64) -> f64 {
        if (m / 60).rem_euclid(24) < 12 {
            100.0 + (m % 7) as f64
        } else {
            1000.0 + (m % 7) as f64
        }
    }

    #[test]
    fn the_horizon_covers_only_the_hours_ahead() {
        let mut s = AdaptiveState::new();
        // Three days and an hour, ending at 00:59: the hour under way and the next 11 are the night.
        feed(&mut s, 73, 0, |_| MIB, diurnal);
        let night = s.cpu_horizon(11).unwrap_or_default();
        assert!((100.0..=110.0).contains(&night), "{night}");
        // One more hour of horizon reaches 12:00, the afternoon.
        assert!(s.cpu_horizon(12).unwrap_or_default() >= 1000.0);
        // Twelve more hours, ending at 12:59: the next hours are the afternoon.
        feed(&mut s, 12, 73, |_| MIB, diurnal);
        let day = s.cpu_horizon(11).unwrap_or_default();
        assert!((1000.0..=1010.0).contains(&day), "{day}");
        // Off, out of range, or too little history.
        assert_eq!(s.cpu_horizon(0), None);
        assert_eq!(s.cpu_horizon(24), None);
        let mut young = AdaptiveState::new();
        feed(&mut young, 40, 0, |_| MIB, diurnal);
        assert_eq!(young.cpu_horizon(12), None);
    }

    #[test]
    fn a_small_daily_swing_keeps_the_whole_day() {
        let mut s = AdaptiveState::new();
        // The night is only 10 % quieter: not worth a change, keep the day's level.
        feed(
            &mut s,
            72,
            0,
            |_| MIB,
            |m| if (m / 60) % 24 < 12 { 900.0 } else { 1000.0 },
        );
        let t = s.cpu_horizon(12).unwrap_or_default();
        assert!((t - 1000.0).abs() < 1e-6, "{t}");
    }

    #[test]
    fn one_day_with_a_spike_does_not_raise_the_night() {
        let mut s = AdaptiveState::new();
        // A warm-up burst at 02:00 of the first day only.
        feed(
            &mut s,
            97,
            0,
            |_| MIB,
            |m| {
                if (60 * 2..60 * 2 + 10).contains(&m) {
                    5000.0
                } else {
                    diurnal(m)
                }
            },
        );
        let night = s.cpu_horizon(11).unwrap_or_default();
        assert!(night <= 110.0, "{night}");
    }

    #[test]
    fn a_request_applied_mid_hour_covers_the_next_hour() {
        let mut s = AdaptiveState::new();
        // Ending at 11:09: a request applied now lives until after 12:00, the afternoon.
        let mut at_11 = AdaptiveState::new();
        feed(&mut at_11, 3 * 24 + 11, 0, |_| MIB, diurnal);
        for m in ((3 * 24 + 11) * 60)..((3 * 24 + 11) * 60 + 10) {
            at_11.add_cpu(diurnal(m), m * 60);
        }
        assert!(at_11.cpu_horizon(1).unwrap_or_default() >= 1000.0);
        // Ending at 03:30: the next hours are the night.
        feed(&mut s, 3 * 24 + 3, 0, |_| MIB, diurnal);
        for m in ((3 * 24 + 3) * 60)..((3 * 24 + 3) * 60 + 30) {
            s.add_cpu(diurnal(m), m * 60);
        }
        let night = s.cpu_horizon(1).unwrap_or_default();
        assert!((100.0..=110.0).contains(&night), "{night}");
    }

    #[test]
    fn a_step_up_is_followed_within_the_hours_not_after_a_day() {
        let level = |base: f64| move |m: i64| base + (m % 7) as f64;
        let mut s = AdaptiveState::new();
        feed(&mut s, 72, 0, |_| MIB, level(100.0));
        assert!(s.cpu_horizon(1).unwrap_or_default() <= 110.0);
        // Two hours at three times the usual level: the hours ahead are scaled by that ratio.
        let mut up = s.clone();
        feed(&mut up, 2, 72, |_| MIB, level(300.0));
        let t = up.cpu_horizon(1).unwrap_or_default();
        assert!(t >= 300.0, "{t}");
        // 20 % hotter is within the day-to-day noise of an hour: no scaling.
        let mut warm = s.clone();
        feed(&mut warm, 2, 72, |_| MIB, level(120.0));
        let t = warm.cpu_horizon(1).unwrap_or_default();
        assert!((120.0..=130.0).contains(&t), "{t}");
        // Ten times hotter is scaled at most three times.
        let mut hot = s;
        feed(&mut hot, 2, 72, |_| MIB, level(1000.0));
        let t = hot.cpu_horizon(1).unwrap_or_default();
        assert!((1000.0..=1010.0).contains(&t), "the latest hour's own level: {t}");
    }

    #[test]
    fn a_shorter_request_life_projects_less_of_a_leak() {
        let mut s = AdaptiveState::new();
        feed(
            &mut s,
            96,
            0,
            |m| 400.0 * MIB + (m as f64 / 60.0) * 2.0 * MIB,
            |_| 100.0,
        );
        let peak = 400.0 * MIB + 96.0 * 2.0 * MIB;
        let hour = s.memory_target(2.0).unwrap_or_default();
        let long = s.memory_target(TREND_HORIZON_HOURS).unwrap_or_default();
        assert!(hour >= peak * 1.03 + 3.9 * MIB, "{}", hour / MIB);
        assert!(hour < long - 60.0 * MIB, "{} vs {}", hour / MIB, long / MIB);
    }

    #[test]
    fn a_rare_memory_spike_is_not_forgotten_after_36_hours() {
        let mut s = AdaptiveState::new();
        // 700 MiB with one 950 MiB spike on the second day, then 40 quiet hours.
        feed(
            &mut s,
            24 * 4,
            0,
            |m| if m == 30 * 60 { 950.0 * MIB } else { 700.0 * MIB },
            |_| 100.0,
        );
        let t = s.memory_target(TREND_HORIZON_HOURS).unwrap_or_default();
        assert!(t >= 950.0 * MIB, "{}", t / MIB);
    }

    #[test]
    fn rows_round_trip_and_bad_rows_are_dropped() {
        let mut s = AdaptiveState::new();
        feed(&mut s, 30, 100, |m| (m % 11) as f64 * MIB, diurnal);
        let rows = s.to_rows();
        assert_eq!(AdaptiveState::from_rows(&rows), s);
        let mut bad = rows.clone();
        bad.push([f64::NAN; 6]);
        bad.push(rows[0]);
        bad.push([200.0, -1.0, 1.0, 1.0, 1.0, 1.0]);
        assert_eq!(AdaptiveState::from_rows(&bad), s);
    }

    proptest::proptest! {
        /// Two states fed with the two parts of one history merge into the state fed with all of it,
        /// whichever part is merged into which.
        #[test]
        fn merging_split_histories_is_feeding_all(
            samples in proptest::collection::vec((0i64..400, 0.0f64..5000.0, 0.0f64..4000.0), 1..300),
            split in 0usize..300,
        ) {
            let mut samples = samples;
            samples.sort_by_key(|s| s.0);
            let split = split.min(samples.len());
            let mut all = AdaptiveState::new();
            let (mut a, mut b) = (AdaptiveState::new(), AdaptiveState::new());
            for (i, &(minute, cpu, mem)) in samples.iter().enumerate() {
                let part = if i < split { &mut a } else { &mut b };
                for s in [&mut all, part] {
                    s.add_cpu(cpu, minute * 60 * 20);
                    s.add_memory(mem * MIB, minute * 60 * 20);
                }
            }
            let mut ab = a.clone();
            ab.merge(&b);
            let mut ba = b;
            ba.merge(&a);
            for merged in [ab, ba] {
                proptest::prop_assert_eq!(merged.len(), all.len());
                for (m, w) in merged.to_rows().iter().zip(all.to_rows()) {
                    for (x, y) in m.iter().zip(w) {
                        proptest::prop_assert!((x - y).abs() <= 1e-6 * y.abs().max(1.0), "{m:?} {w:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_daily_cycle_is_not_a_trend() {
        let mut s = AdaptiveState::new();
        let wave = |m: i64| 600.0 * MIB + 200.0 * MIB * (m as f64 / 1440.0 * std::f64::consts::TAU).sin();
        feed(&mut s, 24 * 7, 0, wave, |_| 100.0);
        let t = s.memory_target(TREND_HORIZON_HOURS).unwrap_or_default();
        assert!(t <= 800.0 * MIB * 1.06, "{}", t / MIB);
    }
}
