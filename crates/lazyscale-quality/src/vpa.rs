//! The VPA recommender's algorithm with its default settings, written for this harness from the VPA's
//! documented behaviour (not a translation of its code), so that lazyscale is compared with the VPA and
//! not with itself. Read to learn the behaviour, in kubernetes/autoscaler (`vertical-pod-autoscaler/`):
//! `pkg/recommender/logic/recommender.go` (margins, confidence multipliers, per-pod minimums),
//! `pkg/recommender/logic/estimator.go` (percentile estimators, confidence = min(days of lifespan,
//! samples / 1440)), `pkg/recommender/model/aggregations_config.go` (bucket layout, half-lives, OOM
//! bump), `pkg/recommender/model/aggregate_container_state.go` (CPU samples of constant weight, peaks),
//! `pkg/recommender/model/container.go` (one memory peak per container instance per interval, OOM
//! samples), `pkg/recommender/util/histogram.go`, `histogram_options.go` and `decaying_histogram.go`
//! (exponential buckets, percentile = end of the bucket reaching it, exponential decay), and
//! `pkg/updater/priority/update_priority_calculator.go` (the updater's gates, which the harness replaces
//! by one update policy for every recommender).
//!
//! Defaults modelled: CPU buckets of 0.01 core growing by 5 % up to 1000 cores, memory buckets of 10 MB
//! growing by 5 % up to 1 TB; half-life 24 h for both; CPU sample weight 0.1 (constant); one memory peak
//! per pod and 24 h interval, time-stamped at the interval's end; target p90, lower bound p50, upper
//! bound p95, all + 15 %; upper bound × (1 + 1/confidence), lower bound × (1 + 0.001/confidence)⁻²;
//! minimums 25 millicores and 250 MiB per pod split evenly over its containers; after an OOM kill a
//! memory sample of max(m + 100 MiB, 1.2·m) with m = max(memory request, the pod's current peak).

use std::collections::{BTreeMap, HashMap};

use crate::trace::MIB;

const HALF_LIFE_SECS: f64 = 86_400.0;
const MEMORY_INTERVAL_SECS: i64 = 86_400;
const CPU_SAMPLE_WEIGHT: f64 = 0.1;
const MARGIN: f64 = 0.15;
const TARGET_PERCENTILE: f64 = 0.9;
const LOWER_PERCENTILE: f64 = 0.5;
const UPPER_PERCENTILE: f64 = 0.95;
const POD_MIN_CPU_CORES: f64 = 0.025;
const POD_MIN_MEMORY_BYTES: f64 = 250.0 * MIB;
const OOM_BUMP_RATIO: f64 = 1.2;
const OOM_MIN_BUMP_BYTES: f64 = 100.0 * MIB;

/// Exponential buckets as the VPA lays them out: bucket `i` starts at `first·(ratioⁱ − 1)/(ratio − 1)`,
/// so bucket widths grow by `ratio` from `first`; the last bucket is unbounded.
#[derive(Debug, Clone, Copy)]
pub struct VpaBuckets {
    first: f64,
    ratio: f64,
    count: usize,
}

impl VpaBuckets {
    /// Buckets covering `0..=max`.
    pub fn new(first: f64, ratio: f64, max: f64) -> Self {
        let count = ((max * (ratio - 1.0) / first + 1.0).ln() / ratio.ln()).ceil() as usize + 1;
        Self { first, ratio, count }
    }

    /// CPU buckets (cores).
    pub fn cpu() -> Self {
        Self::new(0.01, 1.05, 1000.0)
    }

    /// Memory buckets (bytes).
    pub fn memory() -> Self {
        Self::new(1e7, 1.05, 1e12)
    }

    /// Start of bucket `i`.
    pub fn start(&self, i: usize) -> f64 {
        if i == 0 {
            return 0.0;
        }
        self.first * (self.ratio.powi(i32::try_from(i).unwrap_or(i32::MAX)) - 1.0) / (self.ratio - 1.0)
    }

    /// Bucket of `value`.
    pub fn find(&self, value: f64) -> usize {
        if !(value.is_finite() && value >= self.first) {
            return if value.is_finite() || value.is_nan() {
                0
            } else {
                self.count - 1
            };
        }
        let i = (value * (self.ratio - 1.0) / self.first + 1.0).ln() / self.ratio.ln();
        (i.floor() as usize).min(self.count - 1)
    }
}

/// A histogram whose weights decay with a half-life (weights are stored relative to a reference time).
#[derive(Debug, Clone)]
pub struct VpaHistogram {
    buckets: VpaBuckets,
    weights: Vec<f64>,
    total: f64,
    reference: Option<i64>,
}

impl VpaHistogram {
    /// An empty histogram.
    pub fn new(buckets: VpaBuckets) -> Self {
        Self {
            buckets,
            weights: vec![0.0; buckets.count],
            total: 0.0,
            reference: None,
        }
    }

    fn factor(&mut self, at: i64) -> f64 {
        let reference = *self.reference.get_or_insert(at);
        let mut exp = (at - reference) as f64 / HALF_LIFE_SECS;
        if exp > 100.0 {
            // Move the reference forward so the weights stay finite.
            let scale = (-exp).exp2();
            self.weights.iter_mut().for_each(|w| *w *= scale);
            self.total *= scale;
            self.reference = Some(at);
            exp = 0.0;
        }
        exp.exp2()
    }

    /// Adds `value` with `weight` at `at`.
    pub fn add(&mut self, value: f64, weight: f64, at: i64) {
        let w = weight * self.factor(at);
        let i = self.buckets.find(value);
        if let Some(b) = self.weights.get_mut(i) {
            *b += w;
            self.total += w;
        }
    }

    /// Removes a sample added with the same arguments.
    pub fn subtract(&mut self, value: f64, weight: f64, at: i64) {
        let w = weight * self.factor(at);
        let i = self.buckets.find(value);
        if let Some(b) = self.weights.get_mut(i) {
            let removed = w.min(*b);
            *b -= removed;
            self.total -= removed;
        }
    }

    /// The end of the bucket where the cumulative weight reaches `p` of the total (the start of the last
    /// bucket if it is that one); 0 when empty.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.total <= 0.0 {
            return 0.0;
        }
        let threshold = p * self.total;
        let mut sum = 0.0;
        let last = self.weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
        let mut bucket = last;
        for (i, &w) in self.weights.iter().enumerate().take(last + 1) {
            sum += w;
            if sum >= threshold {
                bucket = i;
                break;
            }
        }
        if bucket + 1 < self.buckets.count {
            self.buckets.start(bucket + 1)
        } else {
            self.buckets.start(bucket)
        }
    }
}

/// Memory peak bookkeeping of one container instance (pod).
#[derive(Debug, Clone, Default)]
struct PodMemory {
    window_end: Option<i64>,
    peak: f64,
    oom_peak: f64,
}

/// History of one container name of the workload (all its pods).
#[derive(Debug, Clone)]
struct Aggregate {
    cpu: VpaHistogram,
    memory: VpaHistogram,
    first_sample: Option<i64>,
    last_sample: i64,
    samples: u64,
    pods: HashMap<String, PodMemory>,
}

/// Target and bounds of one resource.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VpaEstimate {
    /// Lower bound.
    pub lower: f64,
    /// Target (the request the VPA sets).
    pub target: f64,
    /// Upper bound.
    pub upper: f64,
}

/// The VPA's recommendation for one container: CPU in cores, memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VpaRecommendation {
    /// CPU.
    pub cpu: VpaEstimate,
    /// Memory.
    pub memory: VpaEstimate,
}

/// The VPA recommender for one workload.
#[derive(Debug, Clone, Default)]
pub struct Vpa {
    containers: BTreeMap<String, Aggregate>,
}

impl Vpa {
    /// An empty recommender.
    pub fn new() -> Self {
        Self::default()
    }

    fn aggregate(&mut self, container: &str) -> &mut Aggregate {
        self.containers
            .entry(container.to_owned())
            .or_insert_with(|| Aggregate {
                cpu: VpaHistogram::new(VpaBuckets::cpu()),
                memory: VpaHistogram::new(VpaBuckets::memory()),
                first_sample: None,
                last_sample: 0,
                samples: 0,
                pods: HashMap::new(),
            })
    }

    /// A CPU sample (cores) of `container` in `pod`.
    pub fn add_cpu(&mut self, pod: &str, container: &str, cores: f64, at: i64) {
        let _ = pod;
        let a = self.aggregate(container);
        a.cpu.add(cores, CPU_SAMPLE_WEIGHT, at);
        a.first_sample.get_or_insert(at);
        a.last_sample = a.last_sample.max(at);
        a.samples += 1;
    }

    /// A memory sample (bytes) of `container` in `pod`.
    pub fn add_memory(&mut self, pod: &str, container: &str, bytes: f64, at: i64) {
        add_memory_sample(self.aggregate(container), pod, bytes, at, false);
    }

    /// An OOM kill of `container` in `pod` whose memory request was `request_bytes`.
    pub fn record_oom(&mut self, pod: &str, container: &str, request_bytes: f64, at: i64) {
        let a = self.aggregate(container);
        let peak = a.pods.get(pod).map_or(0.0, |p| p.peak);
        let used = request_bytes.max(peak);
        let needed = (used + OOM_MIN_BUMP_BYTES).max(used * OOM_BUMP_RATIO);
        add_memory_sample(a, pod, needed, at, true);
    }

    /// The recommendation for `container`, with the per-pod minimums split over `containers_per_pod`.
    pub fn recommend(&self, container: &str, containers_per_pod: usize) -> Option<VpaRecommendation> {
        let a = self.containers.get(container)?;
        let first = a.first_sample?;
        let days = ((a.last_sample - first) as f64 / 86_400.0).min(a.samples as f64 / 1440.0);
        let fraction = 1.0 / containers_per_pod.max(1) as f64;
        let estimate = |h: &VpaHistogram, min: f64| {
            let margin = 1.0 + MARGIN;
            let target = (h.percentile(TARGET_PERCENTILE) * margin).max(min);
            let lower = (h.percentile(LOWER_PERCENTILE) * margin * (1.0 + 0.001 / days).powi(-2)).max(min);
            let upper = (h.percentile(UPPER_PERCENTILE) * margin * (1.0 + 1.0 / days)).max(min);
            VpaEstimate { lower, target, upper }
        };
        Some(VpaRecommendation {
            cpu: estimate(&a.cpu, POD_MIN_CPU_CORES * fraction),
            memory: estimate(&a.memory, POD_MIN_MEMORY_BYTES * fraction),
        })
    }
}

/// One peak per pod and interval: a larger sample in the current interval replaces the peak (old one
/// subtracted); a sample past the interval's end opens the next interval.
fn add_memory_sample(a: &mut Aggregate, pod: &str, bytes: f64, at: i64, oom: bool) {
    let p = a.pods.entry(pod.to_owned()).or_default();
    let end = *p.window_end.get_or_insert(at);
    if at < end {
        let old = p.peak.max(p.oom_peak);
        if old > 0.0 && bytes > old {
            a.memory.subtract(old, 1.0, end);
        } else {
            return;
        }
    } else {
        let shift = ((at - end) / MEMORY_INTERVAL_SECS + 1) * MEMORY_INTERVAL_SECS;
        p.window_end = Some(end + shift);
        p.peak = 0.0;
        p.oom_peak = 0.0;
    }
    let end = p.window_end.unwrap_or(at);
    a.memory.add(bytes, 1.0, end);
    if oom {
        p.oom_peak = bytes;
    } else {
        p.peak = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip() {
        let b = VpaBuckets::cpu();
        for v in [0.011, 0.1, 0.5, 1.0, 3.7, 250.0] {
            let i = b.find(v);
            assert!(
                b.start(i) <= v * 1.000_001 && v < b.start(i + 1) * 1.000_001,
                "{v} {i}"
            );
        }
        assert_eq!(b.find(0.0), 0);
    }

    #[test]
    fn constant_usage_gives_percentile_plus_margin() {
        let mut v = Vpa::new();
        for m in 0..(3 * 1440) {
            v.add_cpu("p", "app", 0.5, m * 60);
            v.add_memory("p", "app", 500.0 * MIB, m * 60);
        }
        let r = v
            .recommend("app", 1)
            .unwrap_or_else(|| panic!("no recommendation"));
        // The end of 0.5's bucket, +15 %.
        assert!(
            r.cpu.target > 0.5 * 1.15 && r.cpu.target < 0.5 * 1.15 * 1.06,
            "{r:?}"
        );
        assert!(r.memory.target > 500.0 * MIB * 1.15 && r.memory.target < 500.0 * MIB * 1.15 * 1.06);
        assert!(r.cpu.lower <= r.cpu.target && r.cpu.target <= r.cpu.upper);
    }

    #[test]
    fn pod_minimum_is_split_over_containers() {
        let mut v = Vpa::new();
        v.add_cpu("p", "app", 0.001, 0);
        v.add_memory("p", "app", 1.0, 0);
        let r = v
            .recommend("app", 2)
            .unwrap_or_else(|| panic!("no recommendation"));
        assert!((r.memory.target - 125.0 * MIB).abs() < 1.0);
        assert!((r.cpu.target - 0.0125).abs() < 1e-9);
    }

    #[test]
    fn oom_bumps_memory() {
        let mut v = Vpa::new();
        for m in 0..60 {
            v.add_cpu("p", "app", 0.1, m * 60);
            v.add_memory("p", "app", 400.0 * MIB, m * 60);
        }
        v.record_oom("p", "app", 500.0 * MIB, 3600);
        let r = v
            .recommend("app", 1)
            .unwrap_or_else(|| panic!("no recommendation"));
        assert!(r.memory.target >= 600.0 * MIB * 1.15, "{r:?}");
    }
}
