//! The local horizontal recommender: a replica count from per-pod usage (metrics.k8s.io PodMetrics)
//! against container requests, one objective at a time, the largest result winning.
//!
//! Per objective:
//! - every pod is put in one group, as the Kubernetes HPA does: *ignored* (being deleted, Failed or
//!   Succeeded), *unready* (Pending; for CPU also a pod in its first 5 minutes that is not Ready or
//!   whose sample predates its readiness, and a pod that never became Ready), *missing* (no sample, or
//!   a sample older than the maximum age) or *ready*;
//! - the mean value over ready pods is compared with the watermarks `target ± 5` points
//!   (`Utilization`) or `target ± 5 %` (`AbsoluteValue`). Above the high watermark the count becomes
//!   `ceil(mean / high · n)`; below the low one, the smallest `p ≥ max(floor(mean / low · n), 1)` with
//!   `n · mean / p < high`; in between it stays at the current replica count;
//! - when pods are missing (or unready while scaling up) the mean is computed again with missing
//!   pods at 0 % when scaling up and 100 % (the target, for `AbsoluteValue`) when scaling down, and
//!   unready pods at 0 % when scaling up. If that reverses or cancels the direction the count stays as
//!   it is; a scale-up never proposes fewer replicas than current, a scale-down never more.
//!
//! With several objectives the largest count wins; an objective that cannot be computed blocks
//! scale-downs (as in the HPA) but not scale-ups.

use std::collections::HashMap;
use std::fmt;

use lazyscale_api::{
    DatadogPodAutoscalerSpec, Objective, ObjectiveResourceName, ObjectiveType, ObjectiveValueType,
};

use crate::pods::{PodPhase, PodSample};
use crate::quantity;
use crate::time::Millis;

/// The resource an objective measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// CPU, in cores.
    Cpu,
    /// Memory, in bytes.
    Memory,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
        })
    }
}

/// The value an objective keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TargetValue {
    /// Usage as a percentage of the requests (0–100).
    Utilization(f64),
    /// Usage per pod, in cores or bytes.
    Absolute(f64),
}

/// One objective, in the recommender's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectiveSpec {
    /// The resource measured.
    pub resource: Resource,
    /// `Some(container)` for a `ContainerResource` objective, `None` for `PodResource`.
    pub container: Option<String>,
    /// The value to keep.
    pub target: TargetValue,
}

impl fmt::Display for ObjectiveSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.container {
            Some(c) => write!(f, "ContainerResource {}/{c}", self.resource)?,
            None => write!(f, "PodResource {}", self.resource)?,
        }
        match self.target {
            TargetValue::Utilization(u) => write!(f, " utilization {u}%"),
            TargetValue::Absolute(v) => write!(f, " absolute {}", self.resource.format(v)),
        }
    }
}

impl Resource {
    /// A value of this resource for humans (`250m`, `1.5`, `64Mi`).
    pub fn format(self, v: f64) -> String {
        match self {
            Self::Cpu => format!("{}m", (v * 1000.0).round()),
            Self::Memory => format!("{:.1}Mi", v / (1024.0 * 1024.0)),
        }
    }
}

/// The default objective when a DPA has none: 80 % pod CPU utilization.
pub const DEFAULT_OBJECTIVE: ObjectiveSpec = ObjectiveSpec {
    resource: Resource::Cpu,
    container: None,
    target: TargetValue::Utilization(80.0),
};

impl ObjectiveSpec {
    /// Converts an API objective; `CustomQuery` objectives and missing bodies are errors (the local
    /// recommender only has resource metrics).
    pub fn from_api(o: &Objective) -> Result<Self, String> {
        let (name, value, container) = match o.type_ {
            ObjectiveType::PodResource => {
                let p = o
                    .pod_resource
                    .as_ref()
                    .ok_or("objective of type PodResource has no podResource")?;
                (p.name, &p.value, None)
            }
            ObjectiveType::ContainerResource => {
                let c = o
                    .container_resource
                    .as_ref()
                    .ok_or("objective of type ContainerResource has no containerResource")?;
                (c.name, &c.value, Some(c.container.clone()))
            }
            ObjectiveType::CustomQuery => {
                return Err("CustomQuery objectives cannot be computed locally".into());
            }
        };
        let resource = match name {
            ObjectiveResourceName::Cpu => Resource::Cpu,
            ObjectiveResourceName::Memory => Resource::Memory,
        };
        let target = match value.type_ {
            ObjectiveValueType::Utilization => TargetValue::Utilization(f64::from(
                value
                    .utilization
                    .filter(|u| *u > 0)
                    .ok_or("Utilization objective needs a utilization above 0")?,
            )),
            ObjectiveValueType::AbsoluteValue => TargetValue::Absolute(
                value
                    .absolute_value
                    .as_ref()
                    .and_then(|q| quantity::parse(&q.0))
                    .filter(|v| *v > 0.0)
                    .ok_or("AbsoluteValue objective needs a positive absoluteValue")?,
            ),
        };
        Ok(Self {
            resource,
            container,
            target,
        })
    }

    /// The objectives the local recommender uses for a spec: `fallback.horizontal.objectives`, else
    /// `objectives`, else [`DEFAULT_OBJECTIVE`]; the `Err` entries name objectives it cannot compute.
    pub fn of_spec(spec: &DatadogPodAutoscalerSpec) -> Vec<Result<Self, String>> {
        let list = spec
            .fallback
            .horizontal
            .objectives
            .as_ref()
            .or(spec.objectives.as_ref());
        match list {
            Some(l) if !l.is_empty() => l.iter().map(Self::from_api).collect(),
            _ => vec![Ok(DEFAULT_OBJECTIVE)],
        }
    }
}

/// Usage of one container in one sample.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerUsage {
    /// Container name.
    pub name: String,
    /// CPU in cores.
    pub cpu: f64,
    /// Memory in bytes.
    pub memory: f64,
}

/// One PodMetrics sample.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodUsage {
    /// When the sample was taken (unix milliseconds).
    pub timestamp: Millis,
    /// Window the sample covers, in milliseconds.
    pub window: Millis,
    /// Per-container usage.
    pub containers: Vec<ContainerUsage>,
}

/// Tunables of the recommender.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Half-width of the band around the target where nothing changes: points of utilization
    /// (`5.0` = ±5 points) and percent of an absolute target.
    pub tolerance: f64,
    /// Samples older than this count as missing.
    pub max_sample_age: Millis,
    /// CPU samples of a pod this young are used only once it is Ready and the sample is newer than
    /// readiness (Kubernetes' `--horizontal-pod-autoscaler-cpu-initialization-period`, 5 min).
    pub cpu_initialization_period: Millis,
    /// A pod not Ready whose readiness last changed this soon after it started never became Ready
    /// (Kubernetes' `--horizontal-pod-autoscaler-initial-readiness-delay`, 30 s).
    pub initial_readiness_delay: Millis,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            tolerance: 5.0,
            max_sample_age: 180_000,
            cpu_initialization_period: 300_000,
            initial_readiness_delay: 30_000,
        }
    }
}

/// Which way an objective pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Above the high watermark.
    Up,
    /// Below the low watermark.
    Down,
    /// Between the watermarks.
    Hold,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Up => "scale up",
            Self::Down => "scale down",
            Self::Hold => "hold",
        })
    }
}

/// What one objective computed, with everything `explain` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectiveOutcome {
    /// The objective (or the text of the objective that could not be converted).
    pub objective: String,
    /// Pods with a usable sample.
    pub ready: u32,
    /// Pods not ready (see the module docs).
    pub unready: u32,
    /// Pods without a usable sample.
    pub missing: u32,
    /// Pods ignored (deleted, finished).
    pub ignored: u32,
    /// Whether values are utilization fractions (`0.72` = 72 %) rather than absolute values.
    pub utilization: bool,
    /// Mean value over ready pods: a utilization fraction (`0.72`) or an absolute value.
    pub mean: Option<f64>,
    /// Mean after filling in missing and unready pods, when that was needed.
    pub filled_mean: Option<f64>,
    /// Low and high watermarks, in the unit of `mean`.
    pub watermarks: (f64, f64),
    /// Direction from the ready pods.
    pub direction: Direction,
    /// Oldest and newest sample used (unix milliseconds).
    pub samples: Option<(Millis, Millis)>,
    /// The replica count, or why there is none.
    pub result: Result<i32, String>,
    /// Why the result differs from the plain formula, when it does.
    pub note: Option<String>,
}

/// The recommendation: the largest objective result, and each objective's details.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// Recommended replica count, or why there is none.
    pub replicas: Result<i32, String>,
    /// Per-objective details.
    pub objectives: Vec<ObjectiveOutcome>,
    /// Why the combined value differs from the largest objective result, when it does.
    pub note: Option<String>,
}

/// Computes the recommendation for one target.
///
/// `current` is the replica count of the target (its scale subresource), `usage` the samples of the
/// namespace by pod name.
pub fn recommend(
    now: Millis,
    current: i32,
    pods: &[PodSample],
    usage: &HashMap<String, PodUsage>,
    objectives: &[Result<ObjectiveSpec, String>],
    settings: &Settings,
) -> Recommendation {
    let outcomes: Vec<ObjectiveOutcome> = objectives
        .iter()
        .map(|o| match o {
            Ok(o) => objective(now, current, pods, usage, o, settings),
            Err(e) => ObjectiveOutcome {
                objective: "(invalid objective)".into(),
                utilization: true,
                ready: 0,
                unready: 0,
                missing: 0,
                ignored: 0,
                mean: None,
                filled_mean: None,
                watermarks: (0.0, 0.0),
                direction: Direction::Hold,
                samples: None,
                result: Err(e.clone()),
                note: None,
            },
        })
        .collect();
    let best = outcomes.iter().filter_map(|o| o.result.as_ref().ok()).max();
    let failed: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err().map(String::as_str))
        .collect();
    let (replicas, note) = match best {
        None => (
            Err(if failed.is_empty() {
                "no objectives".to_owned()
            } else {
                failed.join("; ")
            }),
            None,
        ),
        Some(&r) if !failed.is_empty() && r < current => (
            Ok(current),
            Some(format!(
                "{} objective(s) could not be computed: no scale-down",
                failed.len()
            )),
        ),
        Some(&r) => (Ok(r), None),
    };
    Recommendation {
        replicas,
        objectives: outcomes,
        note,
    }
}

enum Group {
    Ready(f64, Millis),
    Unready,
    Missing,
    Ignored,
}

fn objective(
    now: Millis,
    current: i32,
    pods: &[PodSample],
    usage: &HashMap<String, PodUsage>,
    o: &ObjectiveSpec,
    settings: &Settings,
) -> ObjectiveOutcome {
    let tol = settings.tolerance;
    let (low, high, fill_down) = match o.target {
        TargetValue::Utilization(u) => ((u - tol) / 100.0, (u + tol) / 100.0, 1.0),
        TargetValue::Absolute(v) => (v * (1.0 - tol / 100.0), v * (1.0 + tol / 100.0), v),
    };
    let mut out = ObjectiveOutcome {
        objective: o.to_string(),
        utilization: matches!(o.target, TargetValue::Utilization(_)),
        ready: 0,
        unready: 0,
        missing: 0,
        ignored: 0,
        mean: None,
        filled_mean: None,
        watermarks: (low, high),
        direction: Direction::Hold,
        samples: None,
        result: Err(String::new()),
        note: None,
    };
    let mut values = Vec::with_capacity(pods.len());
    for pod in pods {
        match group(now, pod, usage.get(&pod.name), o, settings) {
            Ok(Group::Ready(v, ts)) => {
                out.ready += 1;
                values.push(v);
                out.samples = Some(match out.samples {
                    None => (ts, ts),
                    Some((a, b)) => (a.min(ts), b.max(ts)),
                });
            }
            Ok(Group::Unready) => out.unready += 1,
            Ok(Group::Missing) => out.missing += 1,
            Ok(Group::Ignored) => out.ignored += 1,
            Err(e) => {
                out.result = Err(e);
                return out;
            }
        }
    }
    if values.is_empty() {
        out.result = Err(format!(
            "{}: no usable metrics ({} pods: {} unready, {} missing, {} ignored)",
            out.objective,
            pods.len(),
            out.unready,
            out.missing,
            out.ignored
        ));
        return out;
    }
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    out.mean = Some(mean);
    let dir = classify(mean, low, high);
    out.direction = dir;
    if dir == Direction::Hold {
        out.result = Ok(current);
        return out;
    }
    let unready_counts = dir == Direction::Up && out.unready > 0;
    if out.missing == 0 && !unready_counts {
        out.result = Ok(replicas_for(dir, mean, n, low, high, current));
        return out;
    }
    // Fill in: missing pods at 0 when scaling up and at the target's 100 % when scaling down, unready
    // pods at 0 when scaling up.
    let fill = if dir == Direction::Up { 0.0 } else { fill_down };
    let extra = out.missing + if unready_counts { out.unready } else { 0 };
    // unready pods add 0: only the count grows
    let total = values.iter().sum::<f64>() + fill * f64::from(out.missing);
    let n1 = n + extra as usize;
    let filled = total / n1 as f64;
    out.filled_mean = Some(filled);
    if classify(filled, low, high) != dir {
        out.note = Some(format!(
            "with {} pods filled in the mean is {}: {} cancelled",
            extra,
            fmt_value(o, filled),
            dir
        ));
        out.result = Ok(current);
        return out;
    }
    let r = replicas_for(dir, filled, n1, low, high, current);
    out.result = Ok(match dir {
        Direction::Up if r < current => {
            out.note = Some(format!("{r} is below current {current}: kept"));
            current
        }
        Direction::Down if r > current => {
            out.note = Some(format!("{r} is above current {current}: kept"));
            current
        }
        _ => r,
    });
    out
}

/// A value of an objective for humans.
pub fn fmt_value(o: &ObjectiveSpec, v: f64) -> String {
    match o.target {
        TargetValue::Utilization(_) => format!("{:.1}%", v * 100.0),
        TargetValue::Absolute(_) => o.resource.format(v),
    }
}

fn classify(mean: f64, low: f64, high: f64) -> Direction {
    if mean > high {
        Direction::Up
    } else if mean < low {
        Direction::Down
    } else {
        Direction::Hold
    }
}

/// The watermark formula (see the module docs).
fn replicas_for(dir: Direction, mean: f64, n: usize, low: f64, high: f64, current: i32) -> i32 {
    let n_f = n as f64;
    let r = match dir {
        Direction::Hold => return current,
        Direction::Up => (mean / high * n_f).ceil(),
        Direction::Down => {
            let mut p = if low > 0.0 {
                (mean / low * n_f).floor().max(1.0)
            } else {
                1.0
            };
            while p < n_f && n_f * mean / p >= high {
                p += 1.0;
            }
            p
        }
    };
    r.clamp(0.0, f64::from(i32::MAX)) as i32
}

fn group(
    now: Millis,
    pod: &PodSample,
    sample: Option<&PodUsage>,
    o: &ObjectiveSpec,
    settings: &Settings,
) -> Result<Group, String> {
    if pod.deleting || matches!(pod.phase, PodPhase::Failed | PodPhase::Succeeded) {
        return Ok(Group::Ignored);
    }
    if pod.phase == PodPhase::Pending {
        return Ok(Group::Unready);
    }
    let Some(sample) = sample.filter(|s| now - s.timestamp <= settings.max_sample_age) else {
        return Ok(Group::Missing);
    };
    if o.resource == Resource::Cpu && cpu_unready(now, pod, sample, settings) {
        return Ok(Group::Unready);
    }
    let pick = |c: &ContainerUsage| match o.resource {
        Resource::Cpu => c.cpu,
        Resource::Memory => c.memory,
    };
    let request = |name: &str| -> Result<f64, String> {
        let c = pod.containers.iter().find(|c| c.name == name);
        let r = c.and_then(|c| match o.resource {
            Resource::Cpu => c.cpu_millis.map(|m| m as f64 / 1000.0),
            Resource::Memory => c.memory_bytes.map(|b| b as f64),
        });
        r.filter(|r| *r > 0.0).ok_or_else(|| {
            format!(
                "container {name} of pod {} has no {} request",
                pod.name, o.resource
            )
        })
    };
    let utilization = matches!(o.target, TargetValue::Utilization(_));
    let value = match &o.container {
        Some(name) => {
            let Some(c) = sample.containers.iter().find(|c| &c.name == name) else {
                return Ok(Group::Missing);
            };
            if utilization {
                pick(c) / request(name)?
            } else {
                pick(c)
            }
        }
        None => {
            if sample.containers.is_empty() {
                return Ok(Group::Missing);
            }
            let used: f64 = sample.containers.iter().map(pick).sum();
            if utilization {
                let mut requested = 0.0;
                for c in &sample.containers {
                    requested += request(&c.name)?;
                }
                used / requested
            } else {
                used
            }
        }
    };
    Ok(Group::Ready(value, sample.timestamp))
}

/// Kubernetes' CPU readiness rules for a pod with a sample.
fn cpu_unready(now: Millis, pod: &PodSample, sample: &PodUsage, settings: &Settings) -> bool {
    let (Some(started), Some(changed)) = (pod.started_at, pod.ready_changed_at) else {
        // Without a start time or readiness history, only readiness itself can be judged.
        return !pod.ready;
    };
    if now < started + settings.cpu_initialization_period {
        // Young pod: use it only when Ready and sampled after it became Ready.
        !pod.ready || sample.timestamp < changed + sample.window
    } else {
        // Older pod: unready only if it never became Ready.
        !pod.ready && changed < started + settings.initial_readiness_delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::ContainerRequests;

    const NOW: Millis = 10_000_000;

    fn pod(name: &str, cpu_m: u64) -> PodSample {
        PodSample {
            name: name.into(),
            phase: PodPhase::Running,
            deleting: false,
            ready: true,
            ready_changed_at: Some(NOW - 3_600_000),
            started_at: Some(NOW - 3_601_000),
            containers: vec![ContainerRequests {
                name: "app".into(),
                cpu_millis: Some(cpu_m),
                memory_bytes: Some(100 << 20),
            }],
        }
    }

    fn usage(cpu: f64) -> PodUsage {
        PodUsage {
            timestamp: NOW - 5_000,
            window: 15_000,
            containers: vec![ContainerUsage {
                name: "app".into(),
                cpu,
                memory: 50.0 * 1024.0 * 1024.0,
            }],
        }
    }

    fn cpu(u: f64) -> Vec<Result<ObjectiveSpec, String>> {
        vec![Ok(ObjectiveSpec {
            resource: Resource::Cpu,
            container: None,
            target: TargetValue::Utilization(u),
        })]
    }

    /// `n` pods with 1000m requests and the given usages (cores); `None` = no sample.
    fn fleet(usages: &[Option<f64>]) -> (Vec<PodSample>, HashMap<String, PodUsage>) {
        let mut pods = Vec::new();
        let mut m = HashMap::new();
        for (i, u) in usages.iter().enumerate() {
            let name = format!("p{i}");
            pods.push(pod(&name, 1000));
            if let Some(u) = u {
                m.insert(name, usage(*u));
            }
        }
        (pods, m)
    }

    fn rec(usages: &[Option<f64>], current: i32, target: f64) -> Result<i32, String> {
        let (pods, m) = fleet(usages);
        recommend(NOW, current, &pods, &m, &cpu(target), &Settings::default()).replicas
    }

    #[test]
    fn watermark_table() {
        // (usages, current, target %, expected)
        let cases: Vec<(Vec<Option<f64>>, i32, f64, i32)> = vec![
            // within ±5 points: hold at current
            (vec![Some(0.72); 4], 4, 70.0, 4),
            (vec![Some(0.66); 4], 4, 70.0, 4),
            // above: ceil(mean/high·n) = ceil(0.9/0.75·4) = 5
            (vec![Some(0.9); 4], 4, 70.0, 5),
            // 200 %: ceil(2/0.75·4) = 11
            (vec![Some(2.0); 4], 4, 70.0, 11),
            // below: floor(0.3/0.65·4) = 1, 4·0.3/1 = 1.2 ≥ 0.75, p=2: 0.6 < 0.75 → 2
            (vec![Some(0.3); 4], 4, 70.0, 2),
            // idle: 1
            (vec![Some(0.0); 4], 4, 70.0, 1),
            // hold uses current, not the pod count
            (vec![Some(0.7); 3], 5, 70.0, 5),
        ];
        for (u, current, target, want) in cases {
            assert_eq!(rec(&u, current, target), Ok(want), "{u:?} {current} {target}");
        }
    }

    #[test]
    fn missing_pods_count_zero_when_scaling_up() {
        // 2 pods at 100 %, 2 missing → mean 0.5 with fill: reverses scale-up → current
        assert_eq!(rec(&[Some(1.0), Some(1.0), None, None], 4, 70.0), Ok(4));
        // 3 at 150 %, 1 missing: filled 1.125 > 0.75 → ceil(1.125/0.75·4) = 6
        assert_eq!(rec(&[Some(1.5), Some(1.5), Some(1.5), None], 4, 70.0), Ok(6));
    }

    #[test]
    fn missing_pods_count_full_when_scaling_down() {
        // 3 at 10 %, 1 missing at 100 %: mean 0.325 < 0.65 → floor(0.325/0.65·4)=2; 4·0.325/2 = 0.65 < 0.75 → 2
        assert_eq!(rec(&[Some(0.1), Some(0.1), Some(0.1), None], 4, 70.0), Ok(2));
        // 1 at 50 %, 3 missing: filled (0.5+3)/4 = 0.875 → reverses → current
        assert_eq!(rec(&[Some(0.5), None, None, None], 4, 70.0), Ok(4));
    }

    #[test]
    fn unready_pods_count_zero_only_when_scaling_up() {
        let (mut pods, m) = fleet(&[Some(1.5), Some(1.5), Some(0.0), Some(0.0)]);
        pods[2].ready = false;
        pods[3].phase = PodPhase::Pending;
        // ready mean 1.5 → up; filled (3)/4 = 0.75 → not above high (0.75) → hold at current
        let r = recommend(NOW, 4, &pods, &m, &cpu(70.0), &Settings::default());
        assert_eq!(r.replicas, Ok(4));
        assert_eq!(r.objectives[0].ready, 2);
        assert_eq!(r.objectives[0].unready, 2);
        // scaling down: unready pods are left out
        let (mut pods, m) = fleet(&[Some(0.1), Some(0.1), Some(0.0), Some(0.0)]);
        pods[2].ready = false;
        pods[3].ready = false;
        let r = recommend(NOW, 4, &pods, &m, &cpu(70.0), &Settings::default());
        // mean 0.1 over 2: floor(0.1/0.65·2) = 0 → 1
        assert_eq!(r.replicas, Ok(1));
    }

    #[test]
    fn young_pods_need_a_sample_after_readiness() {
        let (mut pods, m) = fleet(&[Some(2.0), Some(2.0)]);
        pods[1].started_at = Some(NOW - 60_000);
        pods[1].ready_changed_at = Some(NOW - 10_000); // sample at NOW-5s < ready + 15 s window
        let r = recommend(NOW, 2, &pods, &m, &cpu(50.0), &Settings::default());
        assert_eq!(r.objectives[0].unready, 1);
        // older pod that was ready once and is not now: counted
        let (mut pods, m) = fleet(&[Some(2.0), Some(2.0)]);
        pods[1].ready = false;
        pods[1].ready_changed_at = Some(NOW - 60_000);
        let r = recommend(NOW, 2, &pods, &m, &cpu(50.0), &Settings::default());
        assert_eq!(r.objectives[0].unready, 0);
        // older pod that never became ready (readiness changed right after start): unready
        pods[1].ready_changed_at = pods[1].started_at.map(|s| s + 1_000);
        let r = recommend(NOW, 2, &pods, &m, &cpu(50.0), &Settings::default());
        assert_eq!(r.objectives[0].unready, 1);
    }

    #[test]
    fn stale_deleted_and_failed_pods() {
        let (mut pods, mut m) = fleet(&[Some(0.9), Some(0.9), Some(0.9)]);
        if let Some(u) = m.get_mut("p0") {
            u.timestamp = NOW - 600_000;
        }
        pods[1].deleting = true;
        pods[2].phase = PodPhase::Failed;
        let r = recommend(NOW, 3, &pods, &m, &cpu(50.0), &Settings::default());
        let o = &r.objectives[0];
        assert_eq!((o.ready, o.missing, o.ignored), (0, 1, 2));
        assert!(r.replicas.is_err());
    }

    #[test]
    fn absolute_and_container_objectives() {
        let (pods, m) = fleet(&[Some(0.4), Some(0.4)]);
        let abs = vec![Ok(ObjectiveSpec {
            resource: Resource::Cpu,
            container: Some("app".into()),
            target: TargetValue::Absolute(0.2),
        })];
        // mean 0.4 cores vs high 0.21: ceil(0.4/0.21·2) = 4
        assert_eq!(
            recommend(NOW, 2, &pods, &m, &abs, &Settings::default()).replicas,
            Ok(4)
        );
        let missing_container = vec![Ok(ObjectiveSpec {
            resource: Resource::Memory,
            container: Some("sidecar".into()),
            target: TargetValue::Utilization(50.0),
        })];
        assert!(
            recommend(NOW, 2, &pods, &m, &missing_container, &Settings::default())
                .replicas
                .is_err()
        );
    }

    #[test]
    fn several_objectives_take_the_largest_and_errors_block_scale_down() {
        let (pods, m) = fleet(&[Some(0.1), Some(0.1)]);
        let objs = vec![
            Ok(ObjectiveSpec {
                resource: Resource::Cpu,
                container: None,
                target: TargetValue::Utilization(50.0),
            }),
            Ok(ObjectiveSpec {
                resource: Resource::Memory,
                container: None,
                target: TargetValue::Utilization(20.0),
            }),
        ];
        // cpu → 1; memory 50 % of 100Mi vs 20 % → ceil(0.5/0.25·2) = 4
        assert_eq!(
            recommend(NOW, 2, &pods, &m, &objs, &Settings::default()).replicas,
            Ok(4)
        );
        let with_error = vec![objs[0].clone(), Err("CustomQuery".into())];
        let r = recommend(NOW, 2, &pods, &m, &with_error, &Settings::default());
        assert_eq!(r.replicas, Ok(2));
        assert!(r.note.is_some());
    }

    #[test]
    fn missing_request_is_an_error() {
        let (mut pods, m) = fleet(&[Some(0.5)]);
        pods[0].containers[0].cpu_millis = None;
        let r = recommend(NOW, 1, &pods, &m, &cpu(50.0), &Settings::default());
        assert!(r.replicas.unwrap_err().contains("no cpu request"));
    }
}
