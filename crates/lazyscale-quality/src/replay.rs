//! The replay harness: feeds a [`Trace`] minute by minute to a recommender ([`Method`]), applies its
//! recommendation as the containers' resources under one update policy shared by every recommender,
//! and scores the result against the usage.
//!
//! **Update policy** ([`Policy`]). Every container starts with the trace's initial resources. A new
//! recommendation is applied (to every pod of the workload at once, as an in-place resize or a rolling
//! update would) when at least [`Policy::min_update_interval_minutes`] have passed since the last change
//! and the request of a resource moves by at least [`Policy::change_threshold`]; on a rollout of the
//! trace, any different recommendation is applied; after an OOM kill the restarted container gets the
//! current recommendation (the VPA updater's quick-OOM eviction), also counted as a change.
//!
//! **Node model** ([`NodeModel`]). The container shares a node packed by requests with neighbours whose
//! own traffic peaks around 14:00 UTC. Node pressure at a minute is
//! `0.55 + 0.4·cos(2π(hour − 14)/24) + 0.1·u`, with `u` in `[-1, 1]` drawn per 10-minute block from a
//! hash of the seed; the node's CPU is full when pressure ≥ 0.9 (about 4 hours a day around the
//! neighbours' peak) and its memory is full when pressure ≥ 0.95 (about 2 hours a day). When the node
//! is full a container only gets its request.
//!
//! **Scores** ([`Score`]), per pod-minute from [`Policy::score_from_minutes`] on:
//! - waste: `max(request − usage, 0)` summed as core-hours and GiB-hours (requested and used are also
//!   reported);
//! - OOM kills: memory usage above the memory limit, or above the memory request while the node's memory
//!   is full (the kubelet evicts, the kernel kills: the container is over its share);
//! - CPU-starved minutes: CPU usage above the CPU limit (throttled), or above the CPU request while the
//!   node's CPU is full;
//! - changes: how many times the resources were changed.
//!
//! The usage is replayed as recorded: an OOM kill does not reset the trace's memory (a leak is reset only
//! by the trace's rollouts), and a starved container's usage is not deferred to later minutes.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::trace::{ContainerSpec, GIB, Trace};

/// The resources of a container (CPU in cores, memory in bytes; `None` limit = no limit).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Resources {
    /// CPU request.
    pub cpu_request: f64,
    /// CPU limit.
    pub cpu_limit: Option<f64>,
    /// Memory request.
    pub memory_request: f64,
    /// Memory limit.
    pub memory_limit: Option<f64>,
}

impl Resources {
    /// The initial resources of `spec`.
    pub fn initial(spec: &ContainerSpec) -> Self {
        Self::proportional(spec, spec.cpu_request_cores, spec.memory_request_bytes)
    }

    /// Requests `cpu` and `memory` with the limits scaled like the requests (the request/limit ratio of
    /// `spec` kept), which is what the VPA and lazyscale's webhook do by default.
    pub fn proportional(spec: &ContainerSpec, cpu: f64, memory: f64) -> Self {
        Self {
            cpu_request: cpu,
            cpu_limit: spec.cpu_limit_ratio.map(|r| cpu * r),
            memory_request: memory,
            memory_limit: spec.memory_limit_ratio.map(|r| memory * r),
        }
    }

    /// True when a request moved by at least `threshold` (relative), or a limit appeared or vanished.
    pub fn differs(&self, other: &Self, threshold: f64) -> bool {
        let moved = |a: f64, b: f64| {
            if threshold <= 0.0 {
                (a - b).abs() > f64::EPSILON * a.abs().max(b.abs())
            } else {
                (a - b).abs() >= threshold * b.abs().max(f64::MIN_POSITIVE)
            }
        };
        let limit = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => moved(a, b),
            (None, None) => false,
            _ => true,
        };
        moved(self.cpu_request, other.cpu_request)
            || moved(self.memory_request, other.memory_request)
            || limit(self.cpu_limit, other.cpu_limit)
            || limit(self.memory_limit, other.memory_limit)
    }
}

/// A recommender under test.
pub trait Method {
    /// Name in the report.
    fn name(&self) -> String;
    /// One minute of usage of `container` in `pod`.
    fn observe(&mut self, at: i64, pod: &str, container: &str, cpu_cores: f64, memory_bytes: f64);
    /// `container` in `pod` was OOM-killed at `at` with `memory_bytes` in use, under `current`.
    fn record_oom(&mut self, at: i64, pod: &str, container: &str, memory_bytes: f64, current: &Resources);
    /// The resources recommended for `container` now, if any.
    fn recommend(&mut self, at: i64, spec: &ContainerSpec, containers_per_pod: usize) -> Option<Resources>;
}

/// When recommendations are applied and what is scored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Policy {
    /// Smallest interval between two periodic changes. Default 12 h (the VPA updater's pod lifetime gate).
    pub min_update_interval_minutes: usize,
    /// Smallest relative move of a request that is worth a periodic change. Default 0.1 (the VPA
    /// updater's).
    pub change_threshold: f64,
    /// Minutes before this one are replayed but not scored. Default 24 h: until then every recommender
    /// runs on the initial resources.
    pub score_from_minutes: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_update_interval_minutes: 12 * 60,
            change_threshold: 0.1,
            score_from_minutes: 24 * 60,
        }
    }
}

/// When the node is full (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NodeModel {
    /// Seed of the pressure noise.
    pub seed: u64,
    /// Pressure from which the node's CPU is full.
    pub cpu_threshold: f64,
    /// Pressure from which the node's memory is full.
    pub memory_threshold: f64,
}

impl Default for NodeModel {
    fn default() -> Self {
        Self {
            seed: 1,
            cpu_threshold: 0.9,
            memory_threshold: 0.95,
        }
    }
}

impl NodeModel {
    /// The node pressure at unix second `at`.
    pub fn pressure(&self, at: i64) -> f64 {
        let hour = at.rem_euclid(86_400) as f64 / 3600.0;
        let block = at.div_euclid(600) as u64;
        let mut h = self.seed ^ block.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        let u = (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        0.55 + 0.4 * (std::f64::consts::TAU * (hour - 14.0) / 24.0).cos() + 0.1 * u
    }

    /// True when the node's CPU is full at `at`.
    pub fn cpu_full(&self, at: i64) -> bool {
        self.pressure(at) >= self.cpu_threshold
    }

    /// True when the node's memory is full at `at`.
    pub fn memory_full(&self, at: i64) -> bool {
        self.pressure(at) >= self.memory_threshold
    }
}

/// The scores of one recommender on one trace.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Score {
    /// CPU requested (sum over pods), core-hours.
    pub cpu_requested_core_hours: f64,
    /// CPU used, core-hours.
    pub cpu_used_core_hours: f64,
    /// CPU requested and not used, core-hours.
    pub cpu_waste_core_hours: f64,
    /// Memory requested, GiB-hours.
    pub memory_requested_gib_hours: f64,
    /// Memory used, GiB-hours.
    pub memory_used_gib_hours: f64,
    /// Memory requested and not used, GiB-hours.
    pub memory_waste_gib_hours: f64,
    /// OOM kills.
    pub oom_kills: u64,
    /// CPU-starved pod-minutes.
    pub starved_minutes: u64,
    /// Resource changes applied.
    pub changes: u64,
}

impl Score {
    /// Adds `other` into this score.
    pub fn add(&mut self, other: &Score) {
        self.cpu_requested_core_hours += other.cpu_requested_core_hours;
        self.cpu_used_core_hours += other.cpu_used_core_hours;
        self.cpu_waste_core_hours += other.cpu_waste_core_hours;
        self.memory_requested_gib_hours += other.memory_requested_gib_hours;
        self.memory_used_gib_hours += other.memory_used_gib_hours;
        self.memory_waste_gib_hours += other.memory_waste_gib_hours;
        self.oom_kills += other.oom_kills;
        self.starved_minutes += other.starved_minutes;
        self.changes += other.changes;
    }
}

/// What one replay produced: the score and, per container, the resources over time (for charts).
#[derive(Debug, Clone)]
pub struct Replay {
    /// The scores.
    pub score: Score,
    /// Per container: the resources in force at each minute.
    pub resources: BTreeMap<String, Vec<Resources>>,
    /// Minutes (and containers) with an OOM kill.
    pub oom_minutes: Vec<(usize, String)>,
}

/// Replays `trace` through `method`.
pub fn replay(trace: &Trace, method: &mut dyn Method, policy: &Policy, node: &NodeModel) -> Replay {
    let per_pod = trace.containers.len().max(1);
    let mut current: BTreeMap<String, (Resources, usize)> = trace
        .containers
        .iter()
        .map(|c| (c.name.clone(), (Resources::initial(c), 0)))
        .collect();
    let mut resources: BTreeMap<String, Vec<Resources>> = trace
        .containers
        .iter()
        .map(|c| (c.name.clone(), Vec::with_capacity(trace.minutes)))
        .collect();
    let mut score = Score::default();
    let mut oom_minutes = Vec::new();
    let minute_hours = 1.0 / 60.0;
    for i in 0..trace.minutes {
        let at = trace.at(i);
        let rollout = trace.rollouts.binary_search(&i).is_ok();
        for spec in &trace.containers {
            let Some((applied, last_change)) = current.get_mut(&spec.name) else {
                continue;
            };
            let due = i.saturating_sub(*last_change) >= policy.min_update_interval_minutes;
            if (rollout || due)
                && let Some(rec) = method.recommend(at, spec, per_pod)
            {
                let threshold = if rollout { 0.0 } else { policy.change_threshold };
                if rec.differs(applied, threshold) {
                    *applied = rec;
                    *last_change = i;
                    if i >= policy.score_from_minutes {
                        score.changes += 1;
                    }
                }
            }
        }
        let mut restarted: Vec<&str> = Vec::new();
        let scored = i >= policy.score_from_minutes;
        let (cpu_full, memory_full) = (node.cpu_full(at), node.memory_full(at));
        for s in &trace.series {
            if !s.present(i) {
                continue;
            }
            let Some((r, _)) = current.get(&s.container) else {
                continue;
            };
            let r = *r;
            let (cpu, memory) = (s.cpu_cores[i], s.memory_bytes[i]);
            let over_limit = r.memory_limit.is_some_and(|l| memory > l);
            let oom = over_limit || (memory_full && memory > r.memory_request);
            let starved = r.cpu_limit.is_some_and(|l| cpu > l) || (cpu_full && cpu > r.cpu_request);
            if scored {
                score.cpu_requested_core_hours += r.cpu_request * minute_hours;
                score.cpu_used_core_hours += cpu * minute_hours;
                score.cpu_waste_core_hours += (r.cpu_request - cpu).max(0.0) * minute_hours;
                score.memory_requested_gib_hours += r.memory_request / GIB * minute_hours;
                score.memory_used_gib_hours += memory / GIB * minute_hours;
                score.memory_waste_gib_hours += (r.memory_request - memory).max(0.0) / GIB * minute_hours;
                score.starved_minutes += u64::from(starved);
                score.oom_kills += u64::from(oom);
            }
            method.observe(at, &s.pod, &s.container, cpu, memory);
            if oom {
                // Killed at the limit, or evicted with what it used under node pressure.
                let at_kill = match r.memory_limit {
                    Some(l) if over_limit => l,
                    _ => memory,
                };
                method.record_oom(at, &s.pod, &s.container, at_kill, &r);
                if scored {
                    oom_minutes.push((i, s.container.clone()));
                }
                if !restarted.contains(&s.container.as_str()) {
                    restarted.push(&s.container);
                }
            }
        }
        for name in restarted {
            let Some(spec) = trace.spec(name) else {
                continue;
            };
            if let Some(rec) = method.recommend(at, spec, per_pod)
                && let Some((applied, last_change)) = current.get_mut(name)
                && rec.differs(applied, 0.0)
            {
                *applied = rec;
                *last_change = i;
                if scored {
                    score.changes += 1;
                }
            }
        }
        for (name, (r, _)) in &current {
            if let Some(v) = resources.get_mut(name) {
                v.push(*r);
            }
        }
    }
    Replay {
        score,
        resources,
        oom_minutes,
    }
}
