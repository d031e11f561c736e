//! The local horizontal recommender: replicas from per-pod CPU and memory usage.
//!
//! This is the fallback the DPA uses when the Datadog backend's recommendations go stale, with the pod
//! handling of the Kubernetes HPA. For each objective:
//!
//! 1. Pods are sorted as the HPA sorts them. Deleting and terminated pods are ignored. Pending pods are
//!    *unready*. Pods without usable samples are *missing*. For CPU only, a pod is also unready when it
//!    has no Ready condition or start time; when it is within the CPU initialization period (5 min) and
//!    is not Ready, or its samples predate its last readiness change; or when it is past that period, not
//!    Ready, and never became Ready (its readiness last changed within the initial readiness delay, 30 s,
//!    of its start). The rest are *ready*.
//! 2. A pod's value is the mean of its non-stale samples (at most 180 s old, at least one point per
//!    container, as the Datadog local recommender), summed over the measured containers: all of them for `PodResource`, one for
//!    `ContainerResource`. For `Utilization` it is divided by the sum of the same containers' requests
//!    (containers without a request are left out of both sums) and expressed in percent.
//! 3. With `avg` the mean over ready pods, `n` the current replica count (the DCA's base; the HPA
//!    multiplies by the number of ready pods instead, see below) and the watermarks
//!    `low = target − 5`, `high = target + 5` (percentage points for utilization, 5 % of the target for
//!    absolute values): above `high`, `ceil(avg / high · n)`; below `low`, the smallest `p ≥
//!    max(floor(avg / low · n), 1)` with `n · avg / p < high`; inside the band, `n`.
//! 4. If that changes the count and some pods were left out, the average is recomputed with missing
//!    pods at 0 % on a scale-up and at 100 % of their request (the target, for absolute values) on a
//!    scale-down, and with unready pods at 0 % on a scale-up only. If the new result is no change, or a
//!    change in the other direction, the count stays at `n`.
//! 5. With several objectives the largest count wins. If some objectives fail and the others would
//!    scale down, the count stays at `n`: a scale-down needs every objective's agreement.
//!
//! # Whose semantics
//!
//! The DatadogPodAutoscaler contract is the Datadog Cluster Agent's (DCA) local recommender
//! (`pkg/clusteragent/autoscaling/workload/local/replica_calculator.go`); the pod handling it lacks
//! comes from the Kubernetes HPA (`pkg/controller/podautoscaler/replica_calculator.go`). Where the two
//! disagree this module follows the DCA:
//!
//! - the formula scales the *current replica count* (`ceil(avg / high · n)`), where the HPA scales the
//!   number of ready pods. With unready pods during a scale-down the results differ: 5 replicas, 3
//!   ready at 28 % of a 50 % target give 3 here and 2 in the HPA (see the tests);
//! - the band is the DCA's watermarks (`target ± 5` points), not the HPA's 10 % ratio tolerance;
//! - samples up to 180 s old count (the DCA's staleness threshold), and one sample is enough.
//!
//! One DCA quirk is not followed: the DCA treats a pod whose summed usage is exactly 0 as missing,
//! which makes an idle workload unrecommendable; here a measured 0 is a 0.

use std::time::Duration;

use lazyscale_api::time::{self as wall, Timestamp};

use serde::{Deserialize, Serialize};

use super::{Direction, ValueSource};

/// The resource an objective measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceName {
    /// CPU, in millicores.
    Cpu,
    /// Memory, in bytes.
    Memory,
}

/// The value an objective keeps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ObjectiveValue {
    /// Mean usage as a percentage of the requests.
    Utilization(u32),
    /// Mean usage per pod: millicores for CPU, bytes for memory.
    AbsoluteValue(f64),
}

/// What the recommender aims for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Objective {
    /// Usage summed over the pod's containers.
    PodResource {
        /// The resource measured.
        name: ResourceName,
        /// The value to keep.
        value: ObjectiveValue,
    },
    /// Usage of one container.
    ContainerResource {
        /// The resource measured.
        name: ResourceName,
        /// The container measured.
        container: String,
        /// The value to keep.
        value: ObjectiveValue,
    },
}

impl Objective {
    /// The resource measured.
    pub fn resource(&self) -> ResourceName {
        match self {
            Objective::PodResource { name, .. } | Objective::ContainerResource { name, .. } => *name,
        }
    }

    /// The container measured, for a container objective.
    pub fn container(&self) -> Option<&str> {
        match self {
            Objective::PodResource { .. } => None,
            Objective::ContainerResource { container, .. } => Some(container),
        }
    }

    /// The value to keep.
    pub fn value(&self) -> ObjectiveValue {
        match self {
            Objective::PodResource { value, .. } | Objective::ContainerResource { value, .. } => *value,
        }
    }
}

/// One usage sample: millicores for CPU, bytes for memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When the measurement began: for a PodMetrics sample, `timestamp − window`. The HPA's rule for
    /// initializing pods ("a whole window collected since readiness") then reads "began after the
    /// pod became Ready".
    pub at: Timestamp,
    /// The usage.
    pub value: f64,
}

/// A container's requests and recent usage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerMetrics {
    /// The container name.
    pub name: String,
    /// CPU request in millicores, if any.
    pub cpu_request_millis: Option<u64>,
    /// Memory request in bytes, if any.
    pub memory_request_bytes: Option<u64>,
    /// CPU usage samples (millicores).
    pub cpu: Vec<Sample>,
    /// Memory usage samples (bytes).
    pub memory: Vec<Sample>,
}

impl ContainerMetrics {
    fn request(&self, resource: ResourceName) -> Option<u64> {
        match resource {
            ResourceName::Cpu => self.cpu_request_millis,
            ResourceName::Memory => self.memory_request_bytes,
        }
        .filter(|r| *r > 0)
    }

    fn samples(&self, resource: ResourceName) -> &[Sample] {
        match resource {
            ResourceName::Cpu => &self.cpu,
            ResourceName::Memory => &self.memory,
        }
    }
}

/// A pod's lifecycle phase: the one pod phase type of lazyscale, from its API crate.
pub use lazyscale_api::PodPhase;

/// A pod's `Ready` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyCondition {
    /// Whether the condition is `True`.
    pub ready: bool,
    /// When it last changed.
    pub last_transition: Timestamp,
}

/// One pod of the target workload.
#[derive(Debug, Clone, PartialEq)]
pub struct PodMetrics {
    /// The pod name (for explanations).
    pub name: String,
    /// The phase.
    pub phase: PodPhase,
    /// Whether it has a deletion timestamp.
    pub deleting: bool,
    /// `status.startTime`.
    pub start_time: Option<Timestamp>,
    /// The `Ready` condition, if reported.
    pub ready: Option<ReadyCondition>,
    /// Its containers (init containers excluded).
    pub containers: Vec<ContainerMetrics>,
}

/// Tunables of the recommender; [`Settings::default`] has the DPA and HPA values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Settings {
    /// Half-width of the no-change band: percentage points for utilization, percent of the target for
    /// absolute values (5, the DPA's watermarks).
    pub tolerance: f64,
    /// After its start, a pod's CPU samples count only once it is Ready and they postdate its readiness
    /// (5 min, the HPA's `cpu-initialization-period`).
    #[serde(with = "secs")]
    pub cpu_initialization_period: Duration,
    /// A pod whose readiness went false this soon after its start never became Ready (30 s, the HPA's
    /// `initial-readiness-delay`).
    #[serde(with = "secs")]
    pub initial_readiness_delay: Duration,
    /// Samples older than this are stale (180 s, the DCA's `staleDataThresholdSeconds`).
    #[serde(with = "secs")]
    pub sample_max_age: Duration,
    /// Fewest non-stale samples per container for usable data (1, as the DCA).
    pub min_samples: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tolerance: 5.0,
            cpu_initialization_period: Duration::from_secs(300),
            initial_readiness_delay: Duration::from_secs(30),
            sample_max_age: Duration::from_secs(180),
            min_samples: 1,
        }
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// Why the recommender could not produce a count.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecommendError {
    /// The autoscaler has no objectives the local recommender understands.
    #[error("no objectives")]
    NoObjectives,
    /// The target has zero replicas: there is nothing to scale from.
    #[error("the target has no replicas")]
    NoReplicas,
    /// The target has no pods (deleting and terminated pods aside).
    #[error("no pods found for the target")]
    NoPods,
    /// A utilization objective, but no pod's measured containers have a request for the resource.
    #[error("no {resource:?} requests{} to compute a utilization from", on_container(.container))]
    NoRequests {
        /// The resource.
        resource: ResourceName,
        /// The container, for a container objective.
        container: Option<String>,
    },
    /// No ready pod has usable samples.
    #[error(
        "no usable {resource:?} metrics{} ({missing} pods without metrics, {unready} unready)",
        on_container(.container)
    )]
    NoMetrics {
        /// The resource.
        resource: ResourceName,
        /// The container, for a container objective.
        container: Option<String>,
        /// Pods without usable samples.
        missing: u32,
        /// Pods with samples that did not count because they were unready.
        unready: u32,
    },
    /// The objective's value cannot be used.
    #[error("invalid objective: {0}")]
    InvalidObjective(&'static str),
}

fn on_container(c: &Option<String>) -> String {
    c.as_ref()
        .map(|c| format!(" on container {c}"))
        .unwrap_or_default()
}

/// How the pods were counted for one objective.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCounts {
    /// Ready pods with usable samples: the ones averaged.
    pub ready: u32,
    /// Pods without usable samples.
    pub missing: u32,
    /// Pending pods, and (CPU) pods still initializing or never Ready.
    pub unready: u32,
    /// Deleting and terminated pods.
    pub ignored: u32,
}

/// Whether, and how, left-out pods changed the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Adjustment {
    /// No pod was left out, or the result was no change anyway.
    None,
    /// The result was recomputed with left-out pods included.
    Applied,
    /// Including them changed or cancelled the direction, so the count stays.
    Cancelled,
}

/// The evaluation of one objective, for `lazyscale explain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectiveDetails {
    /// The count this objective asks for.
    pub replicas: u32,
    /// Its direction from the current count.
    pub direction: Direction,
    /// The mean over ready pods: percent for utilization, millicores or bytes otherwise.
    pub raw_value: f64,
    /// The mean the count was computed from (differs from `raw_value` when left-out pods were added).
    pub value: f64,
    /// The target, in the unit of `value`.
    pub target: f64,
    /// Below this, scale down.
    pub low_watermark: f64,
    /// Above this, scale up.
    pub high_watermark: f64,
    /// How the pods were counted.
    pub pods: PodCounts,
    /// Names of the pods without usable samples (at most [`MAX_LISTED_PODS`]).
    pub missing_pods: Vec<String>,
    /// Whether left-out pods changed the result.
    pub adjustment: Adjustment,
    /// The newest sample used.
    pub newest_sample: Option<Timestamp>,
    /// The oldest sample used.
    pub oldest_sample: Option<Timestamp>,
}

/// How many missing pods are named in [`ObjectiveDetails::missing_pods`].
pub const MAX_LISTED_PODS: usize = 10;

/// One objective and how it went.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectiveReport {
    /// The objective.
    pub objective: Objective,
    /// Its evaluation, or why it failed.
    pub outcome: Result<ObjectiveDetails, RecommendError>,
}

/// A local horizontal recommendation.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// The recommended replica count.
    pub replicas: u32,
    /// Always [`ValueSource::Local`].
    pub source: ValueSource,
    /// The time of the newest sample behind the winning objective: how fresh the data is.
    pub generated_at: Timestamp,
    /// When the recommendation was computed.
    pub evaluated_at: Timestamp,
    /// The current replica count it was computed from.
    pub current_replicas: u32,
    /// Whether some objectives failed (a scale-down is then held back).
    pub partial: bool,
    /// Every objective, in order.
    pub objectives: Vec<ObjectiveReport>,
}

/// What one recommendation is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The evaluation time.
    pub now: Timestamp,
    /// The target's current replica count.
    pub current_replicas: u32,
    /// The objectives.
    pub objectives: &'a [Objective],
    /// The target's pods.
    pub pods: &'a [PodMetrics],
}

/// The local recommender.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Recommender {
    settings: Settings,
}

enum PodClass {
    Ignored,
    Unready,
    Missing,
    Ready {
        value: f64,
        oldest: Timestamp,
        newest: Timestamp,
    },
}

struct PodData {
    usage: f64,
    request: f64,
    has_request: bool,
    oldest: Timestamp,
    newest: Timestamp,
}

// === impl Recommender ===

impl Recommender {
    /// A recommender with these settings.
    pub fn new(settings: Settings) -> Recommender {
        Recommender { settings }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Computes a recommendation.
    pub fn recommend(&self, input: &Input<'_>) -> Result<Recommendation, RecommendError> {
        if input.objectives.is_empty() {
            return Err(RecommendError::NoObjectives);
        }
        if input.current_replicas == 0 {
            return Err(RecommendError::NoReplicas);
        }
        let reports: Vec<ObjectiveReport> = input
            .objectives
            .iter()
            .map(|o| ObjectiveReport {
                objective: o.clone(),
                outcome: self.evaluate(o, input),
            })
            .collect();
        let best = reports
            .iter()
            .filter_map(|r| r.outcome.as_ref().ok())
            .max_by_key(|d| d.replicas);
        let Some(best) = best else {
            let first = reports.into_iter().find_map(|r| r.outcome.err());
            return Err(first.unwrap_or(RecommendError::NoObjectives));
        };
        let partial = reports.iter().any(|r| r.outcome.is_err());
        let mut replicas = best.replicas;
        if partial && replicas < input.current_replicas {
            replicas = input.current_replicas;
        }
        let generated_at = best.newest_sample.unwrap_or(input.now);
        Ok(Recommendation {
            replicas,
            source: ValueSource::Local,
            generated_at,
            evaluated_at: input.now,
            current_replicas: input.current_replicas,
            partial,
            objectives: reports,
        })
    }

    /// Evaluates one objective.
    pub fn evaluate(
        &self,
        objective: &Objective,
        input: &Input<'_>,
    ) -> Result<ObjectiveDetails, RecommendError> {
        let n = input.current_replicas;
        if n == 0 {
            return Err(RecommendError::NoReplicas);
        }
        let resource = objective.resource();
        let container = objective.container();
        let tol = self.settings.tolerance;
        let (target, low, high, utilization) = match objective.value() {
            ObjectiveValue::Utilization(u) => {
                let u = f64::from(u);
                (u, u - tol, u + tol, true)
            }
            ObjectiveValue::AbsoluteValue(v) => {
                if !(v.is_finite() && v > 0.0) {
                    return Err(RecommendError::InvalidObjective(
                        "absolute value must be positive",
                    ));
                }
                (v, v * (1.0 - tol / 100.0), v * (1.0 + tol / 100.0), false)
            }
        };
        if !(tol.is_finite() && tol >= 0.0 && high > 0.0) {
            return Err(RecommendError::InvalidObjective("tolerance leaves no band"));
        }

        let mut counts = PodCounts::default();
        let mut missing_pods = Vec::new();
        let mut any_request = false;
        let mut ready_values = Vec::new();
        // Requests of the pods left out, for filling in missing pods at 100 % on a scale-down.
        let mut missing_fill = 0.0;
        let mut oldest: Option<Timestamp> = None;
        let mut newest: Option<Timestamp> = None;
        for pod in input.pods {
            let (class, had_request) = self.classify(pod, resource, container, utilization, input.now);
            any_request |= had_request;
            match class {
                PodClass::Ignored => counts.ignored += 1,
                PodClass::Unready => counts.unready += 1,
                PodClass::Missing => {
                    counts.missing += 1;
                    if missing_pods.len() < MAX_LISTED_PODS {
                        missing_pods.push(pod.name.clone());
                    }
                    missing_fill += if utilization { 100.0 } else { target };
                }
                PodClass::Ready {
                    value,
                    oldest: o,
                    newest: w,
                } => {
                    counts.ready += 1;
                    ready_values.push(value);
                    oldest = Some(oldest.map_or(o, |x| x.min(o)));
                    newest = Some(newest.map_or(w, |x| x.max(w)));
                }
            }
        }
        if counts.ready + counts.missing + counts.unready == 0 {
            return Err(RecommendError::NoPods);
        }
        if utilization && !any_request {
            return Err(RecommendError::NoRequests {
                resource,
                container: container.map(str::to_owned),
            });
        }
        if counts.ready == 0 {
            return Err(RecommendError::NoMetrics {
                resource,
                container: container.map(str::to_owned),
                missing: counts.missing,
                unready: counts.unready,
            });
        }

        let ready_sum: f64 = ready_values.iter().sum();
        let raw = ready_sum / f64::from(counts.ready);
        let first = replicas_for(n, raw, low, high);
        let direction = Direction::of(n, first);
        let (value, replicas, adjustment) = match direction {
            Direction::Up if counts.missing + counts.unready > 0 => {
                // Left-out pods at 0 %.
                let pods = counts.ready + counts.missing + counts.unready;
                let adjusted = ready_sum / f64::from(pods);
                adjust(n, direction, adjusted, low, high)
            }
            Direction::Down if counts.missing > 0 => {
                // Missing pods at 100 % of their request (the target for absolute values); unready
                // pods stay out, as in the HPA.
                let pods = counts.ready + counts.missing;
                let adjusted = (ready_sum + missing_fill) / f64::from(pods);
                adjust(n, direction, adjusted, low, high)
            }
            _ => (raw, first, Adjustment::None),
        };
        Ok(ObjectiveDetails {
            replicas,
            direction: Direction::of(n, replicas),
            raw_value: raw,
            value,
            target,
            low_watermark: low,
            high_watermark: high,
            pods: counts,
            missing_pods,
            adjustment,
            newest_sample: newest,
            oldest_sample: oldest,
        })
    }

    /// Sorts one pod; the flag says whether its measured containers have a request for the resource.
    fn classify(
        &self,
        pod: &PodMetrics,
        resource: ResourceName,
        container: Option<&str>,
        utilization: bool,
        now: Timestamp,
    ) -> (PodClass, bool) {
        if pod.deleting || matches!(pod.phase, PodPhase::Failed | PodPhase::Succeeded) {
            return (PodClass::Ignored, false);
        }
        let data = self.pod_data(pod, resource, container, utilization, now);
        let has_request = data.as_ref().is_some_and(|d| d.has_request)
            || pod
                .containers
                .iter()
                .filter(|c| container.is_none_or(|name| c.name == name))
                .any(|c| c.request(resource).is_some());
        if pod.phase == PodPhase::Pending {
            return (PodClass::Unready, has_request);
        }
        let Some(data) = data else {
            return (PodClass::Missing, has_request);
        };
        if resource == ResourceName::Cpu && self.cpu_unready(pod, data.oldest, now) {
            return (PodClass::Unready, has_request);
        }
        let value = if utilization {
            data.usage / data.request * 100.0
        } else {
            data.usage
        };
        (
            PodClass::Ready {
                value,
                oldest: data.oldest,
                newest: data.newest,
            },
            has_request,
        )
    }

    /// The pod's usage (and requests) over the measured containers, if every one of them has usable
    /// samples. For utilization, containers without a request are left out.
    fn pod_data(
        &self,
        pod: &PodMetrics,
        resource: ResourceName,
        container: Option<&str>,
        utilization: bool,
        now: Timestamp,
    ) -> Option<PodData> {
        let mut data: Option<PodData> = None;
        for c in &pod.containers {
            if container.is_some_and(|name| c.name != name) {
                continue;
            }
            let request = c.request(resource);
            if utilization && request.is_none() {
                continue;
            }
            let (mean, oldest, newest) = self.mean_of_fresh(c.samples(resource), now)?;
            let request = request.map_or(0.0, |r| r as f64);
            data = Some(match data {
                None => PodData {
                    usage: mean,
                    request,
                    has_request: request > 0.0,
                    oldest,
                    newest,
                },
                Some(d) => PodData {
                    usage: d.usage + mean,
                    request: d.request + request,
                    has_request: d.has_request || request > 0.0,
                    oldest: d.oldest.min(oldest),
                    newest: d.newest.max(newest),
                },
            });
        }
        data
    }

    /// The mean of the non-stale samples, with their time span; `None` with too few of them.
    fn mean_of_fresh(&self, samples: &[Sample], now: Timestamp) -> Option<(f64, Timestamp, Timestamp)> {
        let mut sum = 0.0;
        let mut count = 0usize;
        let mut oldest: Option<Timestamp> = None;
        let mut newest: Option<Timestamp> = None;
        for s in samples {
            // A sample from the future (clock skew) has age zero.
            let age = wall::since(now, s.at);
            if age > self.settings.sample_max_age || !s.value.is_finite() || s.value < 0.0 {
                continue;
            }
            sum += s.value;
            count += 1;
            oldest = Some(oldest.map_or(s.at, |o| o.min(s.at)));
            newest = Some(newest.map_or(s.at, |n| n.max(s.at)));
        }
        if count == 0 || count < self.settings.min_samples {
            return None;
        }
        Some((sum / count as f64, oldest?, newest?))
    }

    /// The HPA's CPU readiness rule.
    fn cpu_unready(&self, pod: &PodMetrics, oldest_sample: Timestamp, now: Timestamp) -> bool {
        let (Some(cond), Some(start)) = (pod.ready, pod.start_time) else {
            return true;
        };
        let initializing =
            wall::add(start, self.settings.cpu_initialization_period).is_none_or(|end| end > now);
        if initializing {
            // Not ready, or the samples were taken partly before the pod became ready.
            !cond.ready || oldest_sample < cond.last_transition
        } else {
            // Not ready and never was: readiness went false right after the start.
            !cond.ready
                && wall::add(start, self.settings.initial_readiness_delay)
                    .is_none_or(|t| t > cond.last_transition)
        }
    }
}

/// Recomputes with left-out pods included; keeps `n` if the direction does not survive.
fn adjust(n: u32, direction: Direction, adjusted: f64, low: f64, high: f64) -> (f64, u32, Adjustment) {
    let replicas = replicas_for(n, adjusted, low, high);
    if Direction::of(n, replicas) == direction {
        (adjusted, replicas, Adjustment::Applied)
    } else {
        (adjusted, n, Adjustment::Cancelled)
    }
}

/// The watermark rule: `n` replicas at mean value `avg`, band `[low, high]`.
pub fn replicas_for(n: u32, avg: f64, low: f64, high: f64) -> u32 {
    let nf = f64::from(n);
    if avg > high && high > 0.0 {
        // `as` saturates: an absurd average asks for u32::MAX, and the policy's bounds clamp it.
        let r = (avg / high * nf).ceil() as u32;
        return r.max(n);
    }
    if avg < low && low > 0.0 {
        let start = ((avg / low * nf).floor() as u32).max(1);
        // The smallest p with n·avg/p < high is just above n·avg/high; begin one below to absorb
        // rounding, and never go under `start`.
        let mut p = (((nf * avg / high).floor() as u32).saturating_sub(1)).max(start);
        while p < n {
            if nf * avg / f64::from(p) < high {
                return p;
            }
            p += 1;
        }
        return n;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: u64) -> Timestamp {
        Timestamp::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    const NOW: u64 = 10_000;

    /// A ready, long-running pod with one container `app` requesting 1000m / 1 GiB and using `cpu` and
    /// `mem` over the last 30 s.
    fn pod(name: &str, cpu: f64, mem: f64) -> PodMetrics {
        PodMetrics {
            name: name.into(),
            phase: PodPhase::Running,
            deleting: false,
            start_time: Some(t(0)),
            ready: Some(ReadyCondition {
                ready: true,
                last_transition: t(10),
            }),
            containers: vec![container("app", cpu, mem)],
        }
    }

    fn container(name: &str, cpu: f64, mem: f64) -> ContainerMetrics {
        ContainerMetrics {
            name: name.into(),
            cpu_request_millis: Some(1000),
            memory_request_bytes: Some(1 << 30),
            cpu: vec![
                Sample {
                    at: t(NOW - 30),
                    value: cpu,
                },
                Sample {
                    at: t(NOW - 15),
                    value: cpu,
                },
            ],
            memory: vec![
                Sample {
                    at: t(NOW - 30),
                    value: mem,
                },
                Sample {
                    at: t(NOW - 15),
                    value: mem,
                },
            ],
        }
    }

    fn cpu_util(u: u32) -> Objective {
        Objective::PodResource {
            name: ResourceName::Cpu,
            value: ObjectiveValue::Utilization(u),
        }
    }

    fn run(
        current: u32,
        objectives: &[Objective],
        pods: &[PodMetrics],
    ) -> Result<Recommendation, RecommendError> {
        Recommender::default().recommend(&Input {
            now: t(NOW),
            current_replicas: current,
            objectives,
            pods,
        })
    }

    fn details(r: &Recommendation, i: usize) -> &ObjectiveDetails {
        r.objectives[i].outcome.as_ref().unwrap()
    }

    #[test]
    fn watermark_rule() {
        // Scale up to the high watermark.
        assert_eq!(replicas_for(4, 0.90, 0.65, 0.75), 5);
        assert_eq!(replicas_for(10, 1.5, 0.45, 0.55), 28);
        // Inside the band.
        assert_eq!(replicas_for(4, 0.70, 0.65, 0.75), 4);
        assert_eq!(replicas_for(4, 0.75, 0.65, 0.75), 4);
        assert_eq!(replicas_for(4, 0.65, 0.65, 0.75), 4);
        // Scale down: the fewest pods that stay under the high watermark.
        assert_eq!(replicas_for(10, 0.30, 0.65, 0.75), 5);
        assert_eq!(replicas_for(10, 0.0, 0.65, 0.75), 1);
        assert_eq!(replicas_for(3, 0.60, 0.65, 0.75), 3);
        // Low watermark at or below zero: never down.
        assert_eq!(replicas_for(4, 0.0, 0.0, 0.1), 4);
    }

    #[test]
    fn utilization_up_down_and_band() {
        let pods: Vec<_> = (0..4).map(|i| pod(&format!("p{i}"), 900.0, 0.0)).collect();
        let r = run(4, &[cpu_util(70)], &pods).unwrap();
        assert_eq!(r.replicas, 5); // ceil(90/75*4)
        assert_eq!(r.source, ValueSource::Local);
        assert_eq!(r.generated_at, t(NOW - 15));
        let d = details(&r, 0);
        assert_eq!(
            (d.raw_value, d.low_watermark, d.high_watermark),
            (90.0, 65.0, 75.0)
        );
        assert_eq!(
            d.pods,
            PodCounts {
                ready: 4,
                ..PodCounts::default()
            }
        );

        let pods: Vec<_> = (0..4).map(|i| pod(&format!("p{i}"), 720.0, 0.0)).collect();
        assert_eq!(run(4, &[cpu_util(70)], &pods).unwrap().replicas, 4);
        let pods: Vec<_> = (0..10).map(|i| pod(&format!("p{i}"), 300.0, 0.0)).collect();
        assert_eq!(run(10, &[cpu_util(70)], &pods).unwrap().replicas, 5);
    }

    #[test]
    fn absolute_value_uses_a_relative_band() {
        let mem = Objective::PodResource {
            name: ResourceName::Memory,
            value: ObjectiveValue::AbsoluteValue(512.0 * 1024.0 * 1024.0),
        };
        let pods: Vec<_> = (0..2)
            .map(|i| pod(&format!("p{i}"), 0.0, 1024.0 * 1024.0 * 1024.0))
            .collect();
        let r = run(2, std::slice::from_ref(&mem), &pods).unwrap();
        assert_eq!(r.replicas, 4); // ceil(2 / 1.05 * 2)
        let d = details(&r, 0);
        assert!((d.high_watermark / d.target - 1.05).abs() < 1e-9);
        let bad = Objective::PodResource {
            name: ResourceName::Cpu,
            value: ObjectiveValue::AbsoluteValue(0.0),
        };
        assert!(matches!(
            run(2, &[bad], &pods),
            Err(RecommendError::InvalidObjective(_))
        ));
    }

    #[test]
    fn missing_pods_count_as_zero_on_scale_up() {
        let mut pods: Vec<_> = (0..2).map(|i| pod(&format!("p{i}"), 1000.0, 0.0)).collect();
        let mut quiet = pod("quiet", 0.0, 0.0);
        quiet.containers[0].cpu.clear();
        pods.push(quiet.clone());
        pods.push(PodMetrics {
            name: "quiet2".into(),
            ..quiet
        });
        // Ready pods at 100 % (would give ceil(100/75*4) = 6); with the 2 missing at 0 %: 50 % → down,
        // which reverses the direction, so no change.
        let r = run(4, &[cpu_util(70)], &pods).unwrap();
        assert_eq!(r.replicas, 4);
        let d = details(&r, 0);
        assert_eq!(d.adjustment, Adjustment::Cancelled);
        assert_eq!(d.missing_pods, ["quiet", "quiet2"]);
        // With 3 pods at 100 % and 1 missing: 75 %, inside the band: no change either.
        let mut pods: Vec<_> = (0..3).map(|i| pod(&format!("p{i}"), 1000.0, 0.0)).collect();
        pods.push(PodMetrics {
            name: "quiet".into(),
            ..pods[0].clone()
        });
        pods[3].containers[0].cpu.clear();
        assert_eq!(run(4, &[cpu_util(70)], &pods).unwrap().replicas, 4);
        // With 3 very hot pods (200 %) and 1 missing: 150 % → ceil(150/75*4) = 8.
        for p in &mut pods[..3] {
            for s in &mut p.containers[0].cpu {
                s.value = 2000.0;
            }
        }
        let r = run(4, &[cpu_util(70)], &pods).unwrap();
        assert_eq!(r.replicas, 8);
        assert_eq!(details(&r, 0).adjustment, Adjustment::Applied);
        assert_eq!(details(&r, 0).value, 150.0);
    }

    #[test]
    fn missing_pods_count_as_full_on_scale_down() {
        let mut pods: Vec<_> = (0..5).map(|i| pod(&format!("p{i}"), 100.0, 0.0)).collect();
        for i in 0..5 {
            let mut p = pod(&format!("m{i}"), 0.0, 0.0);
            p.containers[0].cpu.clear(); // no point: missing
            pods.push(p);
        }
        // Ready mean 10 % → down to 1; with 5 missing at 100 %: 55 % → floor(55/65*10)=8, 10·55/8 < 75 → 8.
        let r = run(10, &[cpu_util(70)], &pods).unwrap();
        assert_eq!(r.replicas, 8);
        assert_eq!(details(&r, 0).pods.missing, 5);
        // With 9 missing: (10 + 900) / 10 = 91 % → up: reversed, no change.
        let mut pods: Vec<_> = (0..1).map(|i| pod(&format!("p{i}"), 100.0, 0.0)).collect();
        for i in 0..9 {
            let mut p = pod(&format!("m{i}"), 0.0, 0.0);
            p.containers[0].cpu.clear();
            pods.push(p);
        }
        assert_eq!(run(10, &[cpu_util(70)], &pods).unwrap().replicas, 10);
    }

    #[test]
    fn unready_and_initializing_pods_follow_the_hpa() {
        let hot = |name: &str| pod(name, 1500.0, 1500.0);
        let mut pending = hot("pending");
        pending.phase = PodPhase::Pending;
        let mut never_ready = hot("never-ready");
        never_ready.ready = Some(ReadyCondition {
            ready: false,
            last_transition: t(5),
        });
        let mut starting = hot("starting");
        starting.start_time = Some(t(NOW - 60));
        starting.ready = Some(ReadyCondition {
            ready: true,
            last_transition: t(NOW - 20),
        });
        let mut no_condition = hot("no-condition");
        no_condition.ready = None;
        // Went unready long after it started: it was ready once, so its samples count.
        let mut flapped = hot("flapped");
        flapped.ready = Some(ReadyCondition {
            ready: false,
            last_transition: t(5000),
        });
        let mut deleting = hot("deleting");
        deleting.deleting = true;
        let mut failed = hot("failed");
        failed.phase = PodPhase::Failed;
        let pods = vec![
            hot("a"),
            pending,
            never_ready,
            starting,
            no_condition,
            flapped,
            deleting,
            failed,
        ];

        let r = run(6, &[cpu_util(70)], &pods).unwrap();
        let d = details(&r, 0);
        assert_eq!(
            d.pods,
            PodCounts {
                ready: 2,
                missing: 0,
                unready: 4,
                ignored: 2
            }
        );
        // 150 % over 2 ready → ceil(150/75*6)=12; the 4 unready at 0 %: 50 % → down: reversed.
        assert_eq!(r.replicas, 6);
        assert_eq!(d.adjustment, Adjustment::Cancelled);

        // Memory ignores readiness (pending aside).
        let mem = Objective::PodResource {
            name: ResourceName::Memory,
            value: ObjectiveValue::Utilization(70),
        };
        let mem_pods: Vec<_> = pods
            .iter()
            .cloned()
            .map(|mut p| {
                p.containers[0].memory_request_bytes = Some(1000);
                p
            })
            .collect();
        let r = run(6, &[mem], &mem_pods).unwrap();
        assert_eq!(
            details(&r, 0).pods,
            PodCounts {
                ready: 5,
                missing: 0,
                unready: 1,
                ignored: 2
            }
        );
    }

    /// Cases of the Kubernetes HPA's replica calculator, restated for one container per pod (CPU
    /// request 1000m, usage in millicores): kubernetes/kubernetes
    /// `pkg/controller/podautoscaler/replica_calculator_test.go` (stored revision
    /// 5f3bc7cdab9b2544f0389b9a83c88fa15b793b7a), `TestReplicaCalcScaleUp`,
    /// `TestReplicaCalcScaleUpUnreadyLessScale`, `TestReplicaCalcScaleUpUnreadyNoScale`,
    /// `TestReplicaCalcScaleDown` and `TestReplicaCalcScaleDownIgnoresUnreadyPods`. The last one is
    /// where the DCA formula (which scales the current count, not the ready pods) gives another
    /// answer; the DCA is followed.
    #[test]
    fn hpa_replica_calculator_table() {
        // (case, current, target %, [(usage m, ready)], expected, the HPA's answer)
        type Row<'a> = (&'a str, u32, u32, &'a [(f64, bool)], u32, u32);
        let cases: &[Row<'_>] = &[
            (
                "scale up",
                3,
                30,
                &[(300.0, true), (500.0, true), (700.0, true)],
                5,
                5,
            ),
            (
                "scale up, one unready: less",
                3,
                30,
                &[(300.0, false), (500.0, true), (700.0, true)],
                4,
                4,
            ),
            (
                "scale up, two unready: none",
                3,
                30,
                &[(400.0, true), (500.0, false), (700.0, false)],
                3,
                3,
            ),
            (
                "scale down",
                5,
                50,
                &[
                    (100.0, true),
                    (300.0, true),
                    (500.0, true),
                    (250.0, true),
                    (250.0, true),
                ],
                3,
                3,
            ),
            (
                "scale down ignores unready pods",
                5,
                50,
                &[
                    (100.0, true),
                    (300.0, true),
                    (500.0, true),
                    (250.0, false),
                    (250.0, false),
                ],
                3,
                2,
            ),
        ];
        for &(case, current, target, pods, want, hpa) in cases {
            let pods: Vec<_> = pods
                .iter()
                .enumerate()
                .map(|(i, &(cpu, ready))| {
                    let mut p = pod(&format!("p{i}"), cpu, 0.0);
                    if !ready {
                        // Started a minute ago and not Ready: unready for CPU, as in the HPA.
                        p.start_time = Some(t(NOW - 60));
                        p.ready = Some(ReadyCondition {
                            ready: false,
                            last_transition: t(NOW - 60),
                        });
                    }
                    p
                })
                .collect();
            let r = run(current, &[cpu_util(target)], &pods).unwrap();
            assert_eq!(r.replicas, want, "{case} (the HPA says {hpa})");
        }
    }

    #[test]
    fn stale_samples_do_not_count() {
        let mut p = pod("old", 900.0, 0.0);
        for s in &mut p.containers[0].cpu {
            s.at = t(NOW - 240);
        }
        let err = run(1, &[cpu_util(70)], &[p]).unwrap_err();
        assert_eq!(
            err,
            RecommendError::NoMetrics {
                resource: ResourceName::Cpu,
                container: None,
                missing: 1,
                unready: 0
            }
        );
        assert_eq!(
            err.to_string(),
            "no usable Cpu metrics (1 pods without metrics, 0 unready)"
        );
    }

    #[test]
    fn container_objectives_and_requests() {
        let mut p = pod("a", 200.0, 0.0);
        let mut sidecar = container("sidecar", 1000.0, 0.0);
        sidecar.cpu_request_millis = Some(100);
        p.containers.push(sidecar);
        let app = Objective::ContainerResource {
            name: ResourceName::Cpu,
            container: "app".into(),
            value: ObjectiveValue::Utilization(50),
        };
        let side = Objective::ContainerResource {
            name: ResourceName::Cpu,
            container: "sidecar".into(),
            value: ObjectiveValue::Utilization(50),
        };
        let pods = vec![
            p.clone(),
            PodMetrics {
                name: "b".into(),
                ..p.clone()
            },
        ];
        // app at 20 % → down to 1; sidecar at 1000 % → up; pod at 1200/1100 → up. The largest wins.
        let r = run(2, &[app.clone(), side, cpu_util(50)], &pods).unwrap();
        assert_eq!(details(&r, 0).replicas, 1);
        assert_eq!(details(&r, 1).replicas, 37); // ceil(1000/55*2)
        assert_eq!(details(&r, 2).replicas, 4); // ceil(109.09/55*2)
        assert_eq!(r.replicas, 37);

        // No requests at all.
        let mut bare = p.clone();
        for c in &mut bare.containers {
            c.cpu_request_millis = None;
        }
        assert_eq!(
            run(1, std::slice::from_ref(&app), &[bare]).unwrap_err(),
            RecommendError::NoRequests {
                resource: ResourceName::Cpu,
                container: Some("app".into())
            }
        );
        assert_eq!(
            run(1, std::slice::from_ref(&app), &[]).unwrap_err(),
            RecommendError::NoPods
        );
        assert_eq!(run(0, &[app], &pods).unwrap_err(), RecommendError::NoReplicas);
        assert_eq!(run(1, &[], &pods).unwrap_err(), RecommendError::NoObjectives);
    }

    #[test]
    fn a_failing_objective_holds_back_scale_down() {
        let pods: Vec<_> = (0..4).map(|i| pod(&format!("p{i}"), 100.0, 0.0)).collect();
        let broken = Objective::ContainerResource {
            name: ResourceName::Cpu,
            container: "nope".into(),
            value: ObjectiveValue::Utilization(70),
        };
        let r = run(4, &[cpu_util(70), broken], &pods).unwrap();
        assert!(r.partial);
        assert_eq!(details(&r, 0).replicas, 1);
        assert_eq!(r.replicas, 4);
    }

    proptest! {
        #[test]
        fn scale_down_result_stays_under_the_high_watermark(
            n in 1u32..500, avg in 0.0f64..3.0, target in 10u32..95,
        ) {
            let low = (f64::from(target) - 5.0) / 100.0;
            let high = (f64::from(target) + 5.0) / 100.0;
            let r = replicas_for(n, avg, low, high);
            prop_assert!(r >= 1);
            if avg > high {
                prop_assert!(r >= n);
                prop_assert!(f64::from(n) * avg / f64::from(r) <= high + 1e-9);
            } else if avg < low {
                prop_assert!(r <= n);
                if r < n {
                    prop_assert!(f64::from(n) * avg / f64::from(r) < high);
                    // And one fewer pod would not do (unless already at the floor).
                    let floor = ((avg / low * f64::from(n)).floor() as u32).max(1);
                    if r > floor {
                        prop_assert!(f64::from(n) * avg / f64::from(r - 1) >= high);
                    }
                }
            } else {
                prop_assert_eq!(r, n);
            }
        }

        #[test]
        fn left_out_pods_never_reverse_the_direction(
            ready in proptest::collection::vec(0.0f64..3000.0, 1..12),
            missing in 0usize..6,
            n in 1u32..20,
        ) {
            let mut pods: Vec<_> = ready.iter().enumerate().map(|(i, c)| pod(&format!("p{i}"), *c, 0.0)).collect();
            for i in 0..missing {
                let mut p = pod(&format!("m{i}"), 0.0, 0.0);
                p.containers[0].cpu.clear();
                pods.push(p);
            }
            let r = run(n, &[cpu_util(70)], &pods).unwrap();
            let d = details(&r, 0);
            let raw_dir = Direction::of(n, replicas_for(n, d.raw_value, 65.0, 75.0));
            let dir = Direction::of(n, r.replicas);
            prop_assert!(dir == raw_dir || dir == Direction::None);
        }
    }
}
