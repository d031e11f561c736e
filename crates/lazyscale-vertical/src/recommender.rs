//! The local vertical recommender: per (workload, container) usage history and the resource
//! recommendations computed from it.
//!
//! The agent feeds it CPU usage samples and memory usage samples (from metrics.k8s.io PodMetrics) and OOM
//! kills (from the pod cache), and asks it for a [`WorkloadRecommendation`] per workload. Per container it
//! keeps two [`DecayingHistogram`]s of fixed size (about 1 KB each with the defaults):
//!
//! - **CPU**: every sample, weight 1, in millicores.
//! - **Memory**: one peak per aggregation interval (24 h by default) and container, the largest sample of
//!   any pod of the workload in that interval: memory is not compressible, so what matters is the peak,
//!   and one peak per interval keeps a memory spike from being diluted by thousands of quiet samples.
//!
//! A recommendation is, per resource, a target (the [`Config::cpu_target_percentile`] /
//! [`Config::memory_target_percentile`] of the history, plus the safety margin) and lower and upper bounds
//! (the p50 and p95 with the same margin, widened by a confidence factor `1 + k / days of history`: with
//! little history the bounds are wide, and they narrow as history accumulates). An observed OOM kill
//! raises memory to at least `max(usage × bumpUpRatio, usage + 100 MiB)` for a while. Every value is at
//! least the configured minimum (10m CPU, 10 MiB memory by default; unlike the VPA the minimum is per
//! container, not 250 MiB per pod).
//!
//! [`Recommender::forget`] frees a workload's state when its autoscaler goes away, and
//! [`Recommender::garbage_collect`] drops containers that stopped reporting (renamed or removed
//! containers). Checkpoints ([`WorkloadCheckpoint`]) persist the histograms so that a restart keeps the
//! history; [`Recommender::checkpoint_if_due`] throttles them.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::adaptive::{self, AdaptiveState};
use crate::histogram::{BucketLayout, DecayingHistogram, HistogramCheckpoint, HistogramError};
use crate::quantity::MIB;

const DAY_SECS: u64 = 86_400;

/// Settings of the recommender. Every field has a documented default; in the agent configuration the
/// keys are camelCase (`halfLifeSeconds`, `safetyMargin`, ...) and unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// How targets are computed from the history: [`EstimationMethod::Adaptive`] (default) or
    /// [`EstimationMethod::Vpa`] (the VPA's, [`Config::vpa_compatible`]). Key `method`, values
    /// `adaptive`, `vpa`.
    pub method: EstimationMethod,
    /// Time after which a sample weighs half as much as a new one. Default 86400 (24 h).
    pub half_life_seconds: u64,
    /// Length of the interval over which one memory peak is kept per container. Default 86400 (24 h).
    pub memory_aggregation_interval_seconds: u64,
    /// Percentile of CPU usage the CPU request targets. Default 0.9.
    pub cpu_target_percentile: f64,
    /// Percentile of the memory peaks the memory request targets. Default 0.9.
    pub memory_target_percentile: f64,
    /// Percentile behind the lower bound. Default 0.5.
    pub lower_bound_percentile: f64,
    /// Percentile behind the upper bound. Default 0.95.
    pub upper_bound_percentile: f64,
    /// Fraction added on top of every percentile. Default 0.15 (+15 %).
    pub safety_margin: f64,
    /// `k` of the upper-bound confidence factor `1 + k / days`. Default 1.0 (×2 after 1 day of history,
    /// ×1.14 after a week).
    pub upper_bound_confidence: f64,
    /// `k` of the lower-bound confidence divisor `1 + k / days`. Default 0.1 (÷1.1 after 1 day).
    pub lower_bound_confidence: f64,
    /// Expected period of CPU samples, used to count history as samples × period. Default 60.
    pub sample_period_seconds: u64,
    /// Smallest CPU recommendation, in millicores. Default 10.
    pub min_cpu_millicores: u64,
    /// Smallest memory recommendation, in bytes. Default 10 MiB.
    pub min_memory_bytes: u64,
    /// Memory factor applied after an OOM kill when the DPA sets no `options.outOfMemory.bumpUpRatio`.
    /// Default 1.2.
    pub oom_bump_up_ratio: f64,
    /// Smallest memory increase after an OOM kill, in bytes. Default 100 MiB.
    pub oom_min_bump_bytes: u64,
    /// How long after an OOM kill the bumped memory is a floor of the target. Default 604800 (7 days).
    pub oom_floor_seconds: u64,
    /// Ratio between consecutive histogram bucket bounds. Default 1.05.
    pub bucket_ratio: f64,
    /// Upper bound of the first CPU bucket, in millicores. Default 10.
    pub cpu_first_bucket_millicores: f64,
    /// Value from which all CPU samples share the last bucket, in millicores. Default 1000000 (1000 cores).
    pub cpu_max_millicores: f64,
    /// Upper bound of the first memory bucket, in bytes. Default 10 MiB.
    pub memory_first_bucket_bytes: f64,
    /// Value from which all memory samples share the last bucket, in bytes. Default 1 TiB.
    pub memory_max_bytes: f64,
    /// Adaptive method only: how long an applied request stays in force before the next update (the
    /// cadence of in-place updates). When between 1 hour and 23 hours, the CPU target covers only the
    /// hour under way and the hours of the day this horizon spans (see [`crate::adaptive`]), so a
    /// request applied in the evening is not sized for the afternoon peak, and a memory trend is
    /// projected that far (plus an hour) instead of 36 hours. Default 3600 (1 h: the agent re-applies a
    /// changed recommendation in place within its period). 0: the whole day (right when a request may
    /// stay for days, e.g. applied only at pod creation or by a rollout).
    pub cpu_horizon_seconds: u64,
    /// Adaptive method only, with a CPU horizon: the fraction added to the CPU level of the hours
    /// ahead. Default 0.12 (at least an updater's usual 10 % change threshold, so a request left in
    /// place by the threshold still covers the level).
    pub cpu_horizon_margin: f64,
    /// Containers without any sample for this long are dropped by [`Recommender::garbage_collect`].
    /// Default 691200 (8 days).
    pub container_ttl_seconds: u64,
    /// Smallest interval between two checkpoints of one workload ([`Recommender::checkpoint_if_due`]).
    /// Default 600 (10 minutes).
    pub checkpoint_interval_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            method: EstimationMethod::Adaptive,
            half_life_seconds: DAY_SECS,
            memory_aggregation_interval_seconds: DAY_SECS,
            cpu_target_percentile: 0.9,
            memory_target_percentile: 0.9,
            lower_bound_percentile: 0.5,
            upper_bound_percentile: 0.95,
            safety_margin: 0.15,
            upper_bound_confidence: 1.0,
            lower_bound_confidence: 0.1,
            sample_period_seconds: 60,
            min_cpu_millicores: 10,
            min_memory_bytes: 10 * MIB,
            oom_bump_up_ratio: 1.2,
            oom_min_bump_bytes: 100 * MIB,
            oom_floor_seconds: 7 * DAY_SECS,
            bucket_ratio: 1.05,
            cpu_first_bucket_millicores: 10.0,
            cpu_max_millicores: 1_000_000.0,
            memory_first_bucket_bytes: (10 * MIB) as f64,
            memory_max_bytes: (1024 * 1024 * MIB) as f64,
            cpu_horizon_seconds: 3600,
            cpu_horizon_margin: 0.12,
            container_ttl_seconds: 8 * DAY_SECS,
            checkpoint_interval_seconds: 600,
        }
    }
}

/// How the recommender turns the history into targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EstimationMethod {
    /// The VPA's: the configured percentiles of the decaying histograms plus the safety margin.
    Vpa,
    /// lazyscale's adaptive method (see [`crate::adaptive`]): exact recent memory peaks with a trend
    /// and a margin sized by their spread, CPU from the decaying histogram with a margin sized by the
    /// spread of usage and a faster reaction to a step down. The default: on the replayed traces it
    /// wastes less than the VPA's method without more OOM kills or CPU-starved minutes
    /// (`lazyscale-quality`).
    #[default]
    Adaptive,
}

impl Config {
    /// The VPA-compatible settings: the VPA's method (its percentiles, margins and half-lives; the
    /// other settings at their defaults), no CPU horizon.
    pub fn vpa_compatible() -> Self {
        Self {
            method: EstimationMethod::Vpa,
            cpu_horizon_seconds: 0,
            ..Self::default()
        }
    }

    /// The adaptive method with the other settings at their defaults (the defaults).
    pub fn adaptive() -> Self {
        Self {
            method: EstimationMethod::Adaptive,
            ..Self::default()
        }
    }
}

/// Invalid recommender settings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A percentile is outside `0..=1`.
    #[error("{0} must be between 0 and 1")]
    Percentile(&'static str),
    /// A value that must be positive is not.
    #[error("{0} must be positive")]
    NotPositive(&'static str),
    /// A value that must be a non-negative finite number is not.
    #[error("{0} must be a non-negative number")]
    Negative(&'static str),
    /// The percentiles are not ordered lower ≤ targets ≤ upper.
    #[error("the percentiles must satisfy lower ≤ targets ≤ upper")]
    PercentileOrder,
    /// The histogram layout is not usable.
    #[error(transparent)]
    Histogram(#[from] HistogramError),
}

impl Config {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, p) in [
            ("cpuTargetPercentile", self.cpu_target_percentile),
            ("memoryTargetPercentile", self.memory_target_percentile),
            ("lowerBoundPercentile", self.lower_bound_percentile),
            ("upperBoundPercentile", self.upper_bound_percentile),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(ConfigError::Percentile(name));
            }
        }
        let targets = [self.cpu_target_percentile, self.memory_target_percentile];
        if targets
            .iter()
            .any(|&t| t < self.lower_bound_percentile || t > self.upper_bound_percentile)
        {
            return Err(ConfigError::PercentileOrder);
        }
        for (name, v) in [
            ("safetyMargin", self.safety_margin),
            ("cpuHorizonMargin", self.cpu_horizon_margin),
            ("upperBoundConfidence", self.upper_bound_confidence),
            ("lowerBoundConfidence", self.lower_bound_confidence),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ConfigError::Negative(name));
            }
        }
        for (name, v) in [
            ("halfLifeSeconds", self.half_life_seconds),
            (
                "memoryAggregationIntervalSeconds",
                self.memory_aggregation_interval_seconds,
            ),
            ("samplePeriodSeconds", self.sample_period_seconds),
        ] {
            if v == 0 {
                return Err(ConfigError::NotPositive(name));
            }
        }
        if !(self.oom_bump_up_ratio.is_finite() && self.oom_bump_up_ratio >= 1.0) {
            return Err(ConfigError::NotPositive("oomBumpUpRatio (at least 1)"));
        }
        self.layouts()?;
        Ok(())
    }

    fn layouts(&self) -> Result<(BucketLayout, BucketLayout), HistogramError> {
        Ok((
            BucketLayout::new(
                self.cpu_first_bucket_millicores,
                self.bucket_ratio,
                self.cpu_max_millicores,
            )?,
            BucketLayout::new(
                self.memory_first_bucket_bytes,
                self.bucket_ratio,
                self.memory_max_bytes,
            )?,
        ))
    }
}

/// The workload a history belongs to: the DPA's target, the one key of lazyscale (its kind an enum, its
/// strings shared; serialized as `{namespace, kind, name}` as when the kind was a string).
pub use lazyscale_api::workload::WorkloadKey;

/// Lower bound, target and upper bound of one resource (millicores for CPU, bytes for memory), with
/// `lower ≤ target ≤ upper`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Estimate {
    /// Below this the container is likely starved.
    pub lower: u64,
    /// The recommended request.
    pub target: u64,
    /// Above this the request is likely wasted.
    pub upper: u64,
}

impl Estimate {
    /// Replaces the target, widening the bounds to keep `lower ≤ target ≤ upper`.
    fn set_target(&mut self, target: u64) {
        self.target = target;
        self.lower = self.lower.min(target);
        self.upper = self.upper.max(target);
    }
}

/// The recommendation for one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecommendation {
    /// Container name.
    pub name: String,
    /// CPU in millicores, when CPU samples exist.
    pub cpu_millicores: Option<Estimate>,
    /// Memory in bytes, when memory samples (or an OOM kill) exist.
    pub memory_bytes: Option<Estimate>,
    /// Days of history the bounds are based on.
    pub confidence_days: f64,
    /// True when a recent OOM kill (within [`Config::oom_floor_seconds`] of the last sample) raised the
    /// memory history and floors the memory target.
    pub oom_bumped: bool,
    /// The memory limit of the OOM ratchet ([`crate::oom`]), while the last OOM kill of a container with
    /// a memory limit is recent (within [`Config::oom_floor_seconds`] of the last sample).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
}

/// The recommendation for every container of a workload that has history, sorted by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadRecommendation {
    /// Per-container recommendations.
    pub containers: Vec<ContainerRecommendation>,
}

/// History of one container of a workload.
#[derive(Debug, Clone)]
struct ContainerState {
    cpu: DecayingHistogram,
    memory: DecayingHistogram,
    /// Unix seconds of the first and last sample (any resource).
    first_sample: i64,
    last_sample: i64,
    cpu_samples: u64,
    /// Start of the current memory interval and the peak added to the histogram for it.
    memory_interval_start: i64,
    memory_peak: u64,
    /// Bumped memory after the last OOM kill, and when it happened.
    oom: Option<(u64, i64)>,
    /// The OOM ratchet of the memory limit, and when it last moved.
    oom_limit: Option<(u64, i64)>,
    /// Hourly maxima of the adaptive method (`None` with the VPA method; checkpointed as rows).
    adaptive: Option<Box<AdaptiveState>>,
}

#[derive(Debug, Clone, Default)]
struct WorkloadState {
    containers: BTreeMap<String, ContainerState>,
    last_checkpoint: Option<i64>,
}

/// Usage history and recommendations of many workloads. Not synchronized: wrap it in a lock to share it.
#[derive(Debug, Clone)]
pub struct Recommender {
    config: Config,
    cpu_layout: BucketLayout,
    memory_layout: BucketLayout,
    workloads: HashMap<WorkloadKey, WorkloadState>,
}

impl Recommender {
    /// A recommender with `config` (validated).
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let (cpu_layout, memory_layout) = config.layouts()?;
        Ok(Self {
            config,
            cpu_layout,
            memory_layout,
            workloads: HashMap::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Records a CPU usage sample of `container` of `workload`, in millicores (PodMetrics' `usage.cpu`,
    /// see [`crate::quantity::parse_millis`]). Returns false (and records nothing) for a negative or
    /// non-finite value.
    pub fn add_cpu_sample(
        &mut self,
        workload: &WorkloadKey,
        container: &str,
        millicores: f64,
        at: Timestamp,
    ) -> bool {
        if !(millicores.is_finite() && millicores >= 0.0) {
            return false;
        }
        let at = at.as_second();
        let Some(state) = self.container_mut(workload, container, at) else {
            return false;
        };
        state.cpu.add(millicores, 1.0, at);
        state.cpu_samples = state.cpu_samples.saturating_add(1);
        if let Some(a) = state.adaptive.as_mut() {
            a.add_cpu(millicores, at);
        }
        true
    }

    /// Records a memory usage sample (working set, in bytes) of `container` of `workload`. Only the peak
    /// of each aggregation interval enters the history.
    pub fn add_memory_sample(&mut self, workload: &WorkloadKey, container: &str, bytes: u64, at: Timestamp) {
        let at = at.as_second();
        let interval = i64::try_from(self.config.memory_aggregation_interval_seconds).unwrap_or(i64::MAX);
        if let Some(state) = self.container_mut(workload, container, at) {
            add_memory_peak(state, bytes, at, interval);
            if let Some(a) = state.adaptive.as_mut() {
                a.add_memory(bytes as f64, at);
            }
        }
    }

    /// Records an OOM kill of `container` of `workload` observed at `at`. `memory_bytes` is the memory the
    /// container had when killed (its last usage sample, or its memory limit when that is all that is
    /// known); `bump_up_ratio` is the DPA's `options.outOfMemory.bumpUpRatio` if set. The memory target
    /// becomes at least `max(memory × ratio, memory + oomMinBumpBytes)` for `oomFloorSeconds`.
    pub fn record_oom(
        &mut self,
        workload: &WorkloadKey,
        container: &str,
        memory_bytes: u64,
        at: Timestamp,
        bump_up_ratio: Option<f64>,
    ) {
        let ratio = bump_up_ratio
            .filter(|r| r.is_finite() && *r >= 1.0)
            .unwrap_or(self.config.oom_bump_up_ratio);
        let by_ratio = to_u64(memory_bytes as f64 * ratio);
        let bumped = by_ratio.max(memory_bytes.saturating_add(self.config.oom_min_bump_bytes));
        let at = at.as_second();
        let interval = i64::try_from(self.config.memory_aggregation_interval_seconds).unwrap_or(i64::MAX);
        if let Some(state) = self.container_mut(workload, container, at) {
            add_memory_peak(state, bumped, at, interval);
            let keep = match state.oom {
                Some((previous, when)) => at >= when || previous < bumped,
                None => true,
            };
            if keep {
                state.oom = Some((bumped, at));
            }
        }
    }

    /// Records the memory limit `limit_bytes` an OOM-killed `container` of `workload` had, observed at
    /// `at`: the OOM ratchet ([`crate::oom::ratchet`]) raises the recommended memory limit to
    /// `limit × ratio` (the DPA's `bumpUpRatio` if set, else [`Config::oom_bump_up_ratio`]), never
    /// lowering it, for [`Config::oom_floor_seconds`]. Call it next to [`Recommender::record_oom`] for
    /// containers that have a memory limit.
    pub fn record_oom_limit(
        &mut self,
        workload: &WorkloadKey,
        container: &str,
        limit_bytes: u64,
        at: Timestamp,
        bump_up_ratio: Option<f64>,
    ) {
        let ratio = bump_up_ratio
            .filter(|r| r.is_finite() && *r >= 1.0)
            .unwrap_or(self.config.oom_bump_up_ratio);
        let at = at.as_second();
        let floor = i64::try_from(self.config.oom_floor_seconds).unwrap_or(i64::MAX);
        if let Some(state) = self.container_mut(workload, container, at) {
            // an expired ratchet starts again from the limit the container has now
            let previous = state
                .oom_limit
                .filter(|(_, when)| state.last_sample.saturating_sub(*when) < floor)
                .map(|(v, _)| v);
            let next = crate::oom::ratchet(previous, limit_bytes, ratio);
            let when = match state.oom_limit {
                Some((v, when)) if v == next => when.max(at),
                _ => at,
            };
            state.oom_limit = Some((next, when));
        }
    }

    /// The recommendation for `workload`, or `None` when it has no history.
    pub fn recommend(&self, workload: &WorkloadKey) -> Option<WorkloadRecommendation> {
        let state = self.workloads.get(workload)?;
        let containers: Vec<_> = state
            .containers
            .iter()
            .filter_map(|(name, c)| self.recommend_container(name, c))
            .collect();
        (!containers.is_empty()).then_some(WorkloadRecommendation { containers })
    }

    fn recommend_container(&self, name: &str, c: &ContainerState) -> Option<ContainerRecommendation> {
        let cfg = &self.config;
        let span = c.last_sample.saturating_sub(c.first_sample).max(0) as f64;
        let sampled = c.cpu_samples as f64 * cfg.sample_period_seconds as f64;
        // A container sampled once still has one sample period of history.
        let days = (span.min(sampled).max(cfg.sample_period_seconds as f64)) / DAY_SECS as f64;
        let mut cpu = self.estimate(&c.cpu, cfg.cpu_target_percentile, cfg.min_cpu_millicores, days, 1);
        let mut memory = self.estimate(
            &c.memory,
            cfg.memory_target_percentile,
            cfg.min_memory_bytes,
            days,
            MIB,
        );
        if let (EstimationMethod::Adaptive, Some(a)) = (cfg.method, c.adaptive.as_deref()) {
            let horizon = i64::try_from(cfg.cpu_horizon_seconds / 3600).unwrap_or(0);
            // A history younger than CPU_MIN_HOURS clock-hours keeps the VPA method's CPU target: a
            // p98 or an hour's mean + 2.5 sd of a few dozen samples is the largest of them (a sample of
            // the previous load after a restart held a fresh target up for minutes).
            if let (Some(e), Some(p)) = (
                cpu.as_mut().filter(|_| a.span_hours() >= adaptive::CPU_MIN_HOURS),
                c.cpu.percentile(adaptive::CPU_PERCENTILE),
            ) {
                // The hours ahead never raise the histogram's target; the margin goes on top.
                let mut target = a
                    .cpu_horizon(horizon)
                    .map_or(p, |h| h.min(p) * (1.0 + cfg.cpu_horizon_margin));
                if let Some(low) = a.cpu_step_down(p) {
                    target = target.min(low);
                }
                e.set_target(to_u64(target).max(cfg.min_cpu_millicores));
            }
            // A request lives for the horizon and the hour under way; without one, for days.
            let trend_hours = if (1..24).contains(&horizon) {
                horizon as f64 + 1.0
            } else {
                adaptive::TREND_HORIZON_HOURS
            };
            if let (Some(e), Some(t)) = (memory.as_mut(), a.memory_target(trend_hours)) {
                let mut target = round_up(to_u64(t), MIB).max(cfg.min_memory_bytes);
                // Less than a day of hourly peaks (a first day, a restart from a checkpoint without
                // them): not below the histogram's target.
                if a.span_hours() < adaptive::MEMORY_MIN_HOURS {
                    target = target.max(e.target);
                }
                e.set_target(target);
            }
        }
        let mut oom_bumped = false;
        if let Some((bumped, when)) = c.oom {
            let age = c.last_sample.saturating_sub(when);
            if age < i64::try_from(cfg.oom_floor_seconds).unwrap_or(i64::MAX) {
                let bumped = round_up(bumped, MIB);
                let m = memory.get_or_insert(Estimate {
                    lower: bumped,
                    target: bumped,
                    upper: bumped,
                });
                m.target = m.target.max(bumped);
                oom_bumped = true;
                m.upper = m.upper.max(m.target);
            }
        }
        let memory_limit_bytes = c
            .oom_limit
            .filter(|(_, when)| {
                c.last_sample.saturating_sub(*when) < i64::try_from(cfg.oom_floor_seconds).unwrap_or(i64::MAX)
            })
            .map(|(v, _)| v);
        if cpu.is_none() && memory.is_none() {
            return None;
        }
        Some(ContainerRecommendation {
            name: name.to_owned(),
            cpu_millicores: cpu,
            memory_bytes: memory,
            confidence_days: days,
            oom_bumped,
            memory_limit_bytes,
        })
    }

    fn estimate(
        &self,
        h: &DecayingHistogram,
        target_percentile: f64,
        min: u64,
        days: f64,
        granularity: u64,
    ) -> Option<Estimate> {
        let cfg = &self.config;
        let margin = 1.0 + cfg.safety_margin;
        let max = h.layout().upper(h.layout().len().saturating_sub(1));
        let target = h.percentile(target_percentile)? * margin;
        let lower =
            h.percentile(cfg.lower_bound_percentile)? * margin / (1.0 + cfg.lower_bound_confidence / days);
        let upper =
            (h.percentile(cfg.upper_bound_percentile)? * margin * (1.0 + cfg.upper_bound_confidence / days))
                .min(max.max(target));
        let fix = |v: f64| round_up(to_u64(v), granularity).max(min);
        let target = fix(target);
        Some(Estimate {
            lower: fix(lower).min(target),
            target,
            upper: fix(upper).max(target),
        })
    }

    /// Forgets `workload` (its autoscaler is gone) and frees its memory. Returns whether it was known.
    pub fn forget(&mut self, workload: &WorkloadKey) -> bool {
        self.workloads.remove(workload).is_some()
    }

    /// Forgets one container of `workload`.
    pub fn forget_container(&mut self, workload: &WorkloadKey, container: &str) -> bool {
        let Some(w) = self.workloads.get_mut(workload) else {
            return false;
        };
        let removed = w.containers.remove(container).is_some();
        if w.containers.is_empty() {
            self.workloads.remove(workload);
        }
        removed
    }

    /// Drops containers without a sample for [`Config::container_ttl_seconds`] before `now`, and
    /// workloads left without containers. Returns the number of containers dropped.
    pub fn garbage_collect(&mut self, now: Timestamp) -> usize {
        let ttl = i64::try_from(self.config.container_ttl_seconds).unwrap_or(i64::MAX);
        let cutoff = now.as_second().saturating_sub(ttl);
        let mut dropped = 0;
        self.workloads.retain(|_, w| {
            let before = w.containers.len();
            w.containers.retain(|_, c| c.last_sample >= cutoff);
            dropped += before - w.containers.len();
            !w.containers.is_empty()
        });
        dropped
    }

    /// The workloads with history.
    pub fn workloads(&self) -> impl Iterator<Item = &WorkloadKey> {
        self.workloads.keys()
    }

    /// Number of workloads with history.
    pub fn len(&self) -> usize {
        self.workloads.len()
    }

    /// True when no workload has history.
    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty()
    }

    /// Number of containers tracked.
    pub fn container_count(&self) -> usize {
        self.workloads.values().map(|w| w.containers.len()).sum()
    }

    /// Approximate heap bytes used by the history (histograms, names, map entries).
    pub fn approx_heap_bytes(&self) -> usize {
        self.workloads
            .iter()
            .map(|(k, w)| {
                // two `ArcStr` blocks: the bytes after a 16-byte header each
                let key = k.namespace.len() + k.name.len() + 2 * 16;
                let containers: usize = w
                    .containers
                    .iter()
                    .map(|(n, c)| {
                        n.len()
                            + std::mem::size_of::<ContainerState>()
                            + c.cpu.heap_bytes()
                            + c.memory.heap_bytes()
                            + c.adaptive.as_ref().map_or(0, |a| {
                                std::mem::size_of::<AdaptiveState>()
                                    + a.len() * std::mem::size_of::<adaptive::HourStat>()
                            })
                            + 32
                    })
                    .sum();
                key + containers + std::mem::size_of::<(WorkloadKey, WorkloadState)>() + 16
            })
            .sum()
    }

    /// The checkpoint of `workload`, or `None` when it has no history.
    pub fn checkpoint(&self, workload: &WorkloadKey) -> Option<WorkloadCheckpoint> {
        let w = self.workloads.get(workload)?;
        Some(WorkloadCheckpoint {
            format: CHECKPOINT_FORMAT,
            cpu_layout: self.cpu_layout,
            memory_layout: self.memory_layout,
            containers: w
                .containers
                .iter()
                .map(|(name, c)| ContainerCheckpoint {
                    name: name.clone(),
                    cpu: c.cpu.checkpoint(),
                    memory: c.memory.checkpoint(),
                    first_sample: c.first_sample,
                    last_sample: c.last_sample,
                    cpu_samples: c.cpu_samples,
                    memory_interval_start: c.memory_interval_start,
                    memory_peak: c.memory_peak,
                    oom: c.oom,
                    oom_limit: c.oom_limit,
                    hours: c.adaptive.as_ref().map(|a| a.to_rows()).unwrap_or_default(),
                })
                .collect(),
        })
    }

    /// The checkpoint of `workload` if none was taken through this method in the last
    /// [`Config::checkpoint_interval_seconds`] (and records `now` as the time of this one); `None`
    /// otherwise. The agent writes what it returns, which bounds the writes per workload.
    pub fn checkpoint_if_due(
        &mut self,
        workload: &WorkloadKey,
        now: Timestamp,
    ) -> Option<WorkloadCheckpoint> {
        let now = now.as_second();
        let interval = i64::try_from(self.config.checkpoint_interval_seconds).unwrap_or(i64::MAX);
        let due = match self.workloads.get(workload)?.last_checkpoint {
            Some(last) => now.saturating_sub(last) >= interval,
            None => true,
        };
        if !due {
            return None;
        }
        let cp = self.checkpoint(workload)?;
        if let Some(w) = self.workloads.get_mut(workload) {
            w.last_checkpoint = Some(now);
        }
        Some(cp)
    }

    /// Restores `workload` from a checkpoint, merging it into any history gathered since the start. Fails
    /// (changing nothing) when the checkpoint was taken with another histogram layout or is corrupt.
    pub fn restore(
        &mut self,
        workload: &WorkloadKey,
        checkpoint: &WorkloadCheckpoint,
    ) -> Result<(), CheckpointError> {
        if checkpoint.format != CHECKPOINT_FORMAT {
            return Err(CheckpointError::Format(checkpoint.format));
        }
        if checkpoint.cpu_layout != self.cpu_layout || checkpoint.memory_layout != self.memory_layout {
            return Err(CheckpointError::Layout);
        }
        let half_life = self.config.half_life_seconds as f64;
        let mut restored = BTreeMap::new();
        for c in &checkpoint.containers {
            let mut cpu = DecayingHistogram::new(self.cpu_layout, half_life)?;
            cpu.restore(&c.cpu)?;
            let mut memory = DecayingHistogram::new(self.memory_layout, half_life)?;
            memory.restore(&c.memory)?;
            restored.insert(
                c.name.clone(),
                ContainerState {
                    cpu,
                    memory,
                    first_sample: c.first_sample.min(c.last_sample),
                    last_sample: c.last_sample,
                    cpu_samples: c.cpu_samples,
                    memory_interval_start: c.memory_interval_start,
                    memory_peak: c.memory_peak,
                    oom: c.oom,
                    oom_limit: c.oom_limit,
                    adaptive: self
                        .new_adaptive()
                        .map(|_| Box::new(AdaptiveState::from_rows(&c.hours))),
                },
            );
        }
        let w = self.workloads.entry(workload.clone()).or_default();
        for (name, mut old) in restored {
            match w.containers.remove(&name) {
                None => {
                    w.containers.insert(name, old);
                }
                Some(new) => {
                    old.cpu.merge(&new.cpu)?;
                    old.adaptive = match (old.adaptive.take(), new.adaptive) {
                        (Some(mut o), Some(n)) => {
                            o.merge(&n);
                            Some(o)
                        }
                        (o, n) => n.or(o),
                    };
                    old.memory.merge(&new.memory)?;
                    old.first_sample = old.first_sample.min(new.first_sample);
                    old.last_sample = old.last_sample.max(new.last_sample);
                    old.cpu_samples = old.cpu_samples.saturating_add(new.cpu_samples);
                    if new.memory_interval_start >= old.memory_interval_start {
                        old.memory_interval_start = new.memory_interval_start;
                        old.memory_peak = new.memory_peak;
                    }
                    old.oom = match (old.oom, new.oom) {
                        (Some(a), Some(b)) => Some(if b.1 >= a.1 { b } else { a }),
                        (a, b) => b.or(a),
                    };
                    // a ratchet never goes down: the higher one, from its latest move
                    old.oom_limit = match (old.oom_limit, new.oom_limit) {
                        (Some(a), Some(b)) => Some((a.0.max(b.0), a.1.max(b.1))),
                        (a, b) => b.or(a),
                    };
                    w.containers.insert(name, old);
                }
            }
        }
        Ok(())
    }

    fn new_adaptive(&self) -> Option<Box<AdaptiveState>> {
        (self.config.method == EstimationMethod::Adaptive).then(Box::default)
    }

    fn container_mut(
        &mut self,
        workload: &WorkloadKey,
        container: &str,
        at: i64,
    ) -> Option<&mut ContainerState> {
        let half_life = self.config.half_life_seconds as f64;
        let adaptive = self.new_adaptive();
        if !self.workloads.contains_key(workload) {
            self.workloads.insert(workload.clone(), WorkloadState::default());
        }
        let w = self.workloads.get_mut(workload)?;
        if !w.containers.contains_key(container) {
            let state = ContainerState {
                cpu: DecayingHistogram::new(self.cpu_layout, half_life).ok()?,
                memory: DecayingHistogram::new(self.memory_layout, half_life).ok()?,
                first_sample: at,
                last_sample: at,
                cpu_samples: 0,
                memory_interval_start: i64::MIN,
                memory_peak: 0,
                oom: None,
                oom_limit: None,
                adaptive,
            };
            w.containers.insert(container.to_owned(), state);
        }
        let state = w.containers.get_mut(container)?;
        state.first_sample = state.first_sample.min(at);
        state.last_sample = state.last_sample.max(at);
        Some(state)
    }
}

/// Adds `bytes` as the peak of the interval containing `at`: a new interval starts a new peak; a larger
/// value in the current interval replaces the peak (the old one is subtracted).
fn add_memory_peak(state: &mut ContainerState, bytes: u64, at: i64, interval: i64) {
    let value = bytes as f64;
    let in_current =
        at >= state.memory_interval_start && at < state.memory_interval_start.saturating_add(interval);
    if in_current {
        if bytes > state.memory_peak {
            let start = state.memory_interval_start;
            state.memory.subtract(state.memory_peak as f64, 1.0, start);
            state.memory.add(value, 1.0, start);
            state.memory_peak = bytes;
        }
    } else if at >= state.memory_interval_start {
        state.memory_interval_start = at;
        state.memory_peak = bytes;
        state.memory.add(value, 1.0, at);
    } else {
        // A late sample from an earlier interval: added on its own, with its (lower) weight.
        state.memory.add(value, 1.0, at);
    }
}

fn to_u64(v: f64) -> u64 {
    if v.is_nan() {
        0
    } else {
        // `as` saturates: negative → 0, too large or infinite → u64::MAX.
        v.ceil() as u64
    }
}

fn round_up(v: u64, granularity: u64) -> u64 {
    if granularity <= 1 {
        return v;
    }
    match v.checked_next_multiple_of(granularity) {
        Some(r) => r,
        None => v - v % granularity,
    }
}

/// Version of the checkpoint format.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// Persisted history of one workload: the histogram layouts (a checkpoint only restores into the same
/// layout) and, per container, both histograms and the sample bookkeeping. Serializable with serde; the
/// JSON form of a container with a few days of history is about 1–3 KB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadCheckpoint {
    /// [`CHECKPOINT_FORMAT`] of the writer.
    pub format: u32,
    /// CPU histogram layout.
    pub cpu_layout: BucketLayout,
    /// Memory histogram layout.
    pub memory_layout: BucketLayout,
    /// Per-container history.
    pub containers: Vec<ContainerCheckpoint>,
}

/// Persisted history of one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerCheckpoint {
    /// Container name.
    pub name: String,
    /// CPU histogram.
    pub cpu: HistogramCheckpoint,
    /// Memory peaks histogram.
    pub memory: HistogramCheckpoint,
    /// Unix seconds of the first sample.
    pub first_sample: i64,
    /// Unix seconds of the last sample.
    pub last_sample: i64,
    /// Number of CPU samples.
    pub cpu_samples: u64,
    /// Unix seconds of the start of the current memory interval.
    pub memory_interval_start: i64,
    /// Peak of the current memory interval, in bytes.
    pub memory_peak: u64,
    /// Bumped memory after the last OOM kill and its unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom: Option<(u64, i64)>,
    /// The OOM ratchet of the memory limit and the unix seconds it last moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_limit: Option<(u64, i64)>,
    /// The adaptive method's hourly history ([`AdaptiveState::to_rows`]: `[hour, memory peak, CPU max,
    /// CPU count, CPU sum, CPU sum of squares]`, oldest first), empty with the VPA method; about 60
    /// bytes of JSON per hour, 12 KB for the full 8 days.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hours: Vec<[f64; 6]>,
}

/// Why a checkpoint cannot be restored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckpointError {
    /// Written by an unknown format version.
    #[error("unknown checkpoint format {0}")]
    Format(u32),
    /// Written with another histogram layout (the bucket settings changed).
    #[error("the checkpoint was taken with another histogram layout")]
    Layout,
    /// The histograms are corrupt.
    #[error(transparent)]
    Histogram(#[from] HistogramError),
}

impl WorkloadCheckpoint {
    /// JSON encoding of the checkpoint.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Decodes a checkpoint from JSON.
    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }
}
