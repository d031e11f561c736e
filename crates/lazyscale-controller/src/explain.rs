//! "Why": the record of one reconcile of one DPA and its rendering as text.
//!
//! Each reconcile leaves an [`Explanation`]: the inputs (target, replicas, pods counted per
//! objective, utilization, data freshness), the raw recommendation, every policy step that changed
//! it (stabilization, rules, constraints, fallback direction, mode) and the final decision.
//! [`render`] is a pure function of it and the current time.

use lazyscale_api::time::{self as wall, Timestamp};
use std::fmt::Write as _;

use lazyscale_core::horizontal::policy::Decision;
use lazyscale_core::horizontal::recommender::{
    Adjustment, Objective, ObjectiveValue, Recommendation, ResourceName,
};

/// What one reconcile saw and decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// When the reconcile ran.
    pub at: Timestamp,
    /// `apiVersion kind name` of the target.
    pub target: String,
    /// `Apply` or `Preview` (empty when the DPA cannot be read).
    pub mode: &'static str,
    /// Why the DPA was not evaluated (reason, message), when it was not.
    pub blocked: Option<Box<(String, String)>>,
    /// Replica count from the scale subresource.
    pub current_replicas: Option<i32>,
    /// Pods of the target in the pod source.
    pub pods: usize,
    /// When the namespace's PodMetrics were listed.
    pub metrics_listed_at: Option<Timestamp>,
    /// The engine's recommendation, or why there is none, when one was asked for.
    pub recommendation: Option<Box<Result<Recommendation, String>>>,
    /// Objectives the local recommender cannot compute.
    pub unusable_objectives: Vec<String>,
    /// The engine's decision, when made.
    pub decision: Option<Box<Decision>>,
    /// What was done.
    pub outcome: String,
}

fn age(now: Timestamp, t: Timestamp) -> String {
    let s = wall::since(now, t).as_secs_f64();
    if s < 120.0 {
        format!("{s:.1}s ago")
    } else {
        format!("{:.1}m ago", s / 60.0)
    }
}

/// Renders the explanation of DPA `namespace/name` as text, with ages relative to `now`.
pub fn render(namespace: &str, name: &str, e: &Explanation, now: Timestamp) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "DatadogPodAutoscaler {namespace}/{name}");
    let _ = writeln!(s, "  evaluated: {}", age(now, e.at));
    let _ = writeln!(s, "  target:    {}", e.target);
    let _ = writeln!(s, "  mode:      {}", e.mode);
    if let Some((reason, message)) = e.blocked.as_deref() {
        let _ = writeln!(s, "  not evaluated: {reason}: {message}");
        let _ = writeln!(s, "decision: {}", e.outcome);
        return s;
    }
    let _ = writeln!(s, "inputs:");
    if let Some(c) = e.current_replicas {
        let _ = writeln!(s, "  current replicas: {c} (scale subresource)");
    }
    let _ = writeln!(s, "  pods in cache:    {}", e.pods);
    match e.metrics_listed_at {
        Some(t) => {
            let _ = writeln!(s, "  pod metrics:      listed {}", age(now, t));
        }
        None => {
            let _ = writeln!(s, "  pod metrics:      not listed yet");
        }
    }
    match e.recommendation.as_deref() {
        Some(Ok(r)) => {
            let _ = writeln!(s, "objectives:");
            for o in &r.objectives {
                let _ = writeln!(s, "  - {}", objective(&o.objective));
                let d = match &o.outcome {
                    Ok(d) => d,
                    Err(err) => {
                        let _ = writeln!(s, "    error: {err}");
                        continue;
                    }
                };
                let unit = |v: f64| value(&o.objective, v);
                let p = d.pods;
                let _ = writeln!(
                    s,
                    "    pods: {} counted, {} unready, {} missing metrics, {} ignored",
                    p.ready, p.unready, p.missing, p.ignored
                );
                let _ = writeln!(
                    s,
                    "    mean: {} (watermarks {} .. {}) -> {}",
                    unit(d.raw_value),
                    unit(d.low_watermark),
                    unit(d.high_watermark),
                    d.direction
                );
                match d.adjustment {
                    Adjustment::None => {}
                    Adjustment::Applied => {
                        let _ = writeln!(
                            s,
                            "    mean with missing/unready pods filled in: {}",
                            unit(d.value)
                        );
                    }
                    Adjustment::Cancelled => {
                        let _ = writeln!(
                            s,
                            "    mean with missing/unready pods filled in: {}: the change is cancelled",
                            unit(d.value)
                        );
                    }
                }
                if let (Some(oldest), Some(newest)) = (d.oldest_sample, d.newest_sample) {
                    let _ = writeln!(
                        s,
                        "    freshness: newest sample {}, oldest {}",
                        age_of(now, newest),
                        age_of(now, oldest)
                    );
                }
                let _ = writeln!(s, "    replicas: {}", d.replicas);
            }
            for u in &e.unusable_objectives {
                let _ = writeln!(s, "  - not computable here: {u}");
            }
            let _ = writeln!(s, "recommendation: {} replicas (source {})", r.replicas, r.source);
            if r.partial {
                let _ = writeln!(s, "  note: some objectives could not be computed: no scale-down");
            }
        }
        Some(Err(err)) => {
            let _ = writeln!(s, "recommendation: none ({err})");
        }
        None => {}
    }
    if let Some(d) = e.decision.as_deref() {
        let _ = writeln!(s, "policy:");
        for step in &d.steps {
            let _ = writeln!(s, "  {:?}: {} ({})", step.stage, step.replicas, step.detail);
        }
        if let (Some(l), Some(reason)) = (d.limit, &d.limited_reason) {
            let _ = writeln!(s, "  limited: {l:?}: {reason}");
        }
        if let Some(r) = d.restriction {
            let _ = writeln!(s, "  restricted: {r:?}");
        }
        if let Some(after) = d.requeue_after {
            let _ = writeln!(s, "  evaluate again in {}s", after.as_secs());
        }
    }
    let _ = writeln!(s, "decision: {}", e.outcome);
    s
}

fn age_of(now: Timestamp, t: Timestamp) -> String {
    age(now, t)
}

fn objective(o: &Objective) -> String {
    let resource = match o.resource() {
        ResourceName::Cpu => "cpu",
        ResourceName::Memory => "memory",
    };
    let what = match o.container() {
        Some(c) => format!("ContainerResource {resource}/{c}"),
        None => format!("PodResource {resource}"),
    };
    match o.value() {
        ObjectiveValue::Utilization(u) => format!("{what} utilization {u}%"),
        ObjectiveValue::AbsoluteValue(v) => format!("{what} absolute {}", value(o, v)),
    }
}

/// A value in the objective's unit: percent for utilization, millicores or MiB otherwise.
fn value(o: &Objective, v: f64) -> String {
    match (o.value(), o.resource()) {
        (ObjectiveValue::Utilization(_), _) => format!("{v:.1}%"),
        (ObjectiveValue::AbsoluteValue(_), ResourceName::Cpu) => format!("{}m", v.round()),
        (ObjectiveValue::AbsoluteValue(_), ResourceName::Memory) => {
            format!("{:.1}Mi", v / (1024.0 * 1024.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazyscale_api::time;
    use lazyscale_core::horizontal::policy::{self, History, Policy};
    use lazyscale_core::horizontal::recommender::{
        ContainerMetrics, Input, PodMetrics, PodPhase, ReadyCondition, Recommender, Sample,
    };

    #[test]
    fn renders_the_engine_steps() {
        let at = time::from_unix_millis;
        let pods: Vec<PodMetrics> = (0..3)
            .map(|i| PodMetrics {
                name: format!("p{i}"),
                phase: PodPhase::Running,
                deleting: false,
                start_time: Some(at(0)),
                ready: Some(ReadyCondition {
                    ready: true,
                    last_transition: at(1_000),
                }),
                containers: vec![ContainerMetrics {
                    name: "app".into(),
                    cpu_request_millis: Some(1000),
                    memory_request_bytes: None,
                    cpu: vec![Sample {
                        at: at(1_000_000 - 5_000),
                        value: 1400.0,
                    }],
                    memory: Vec::new(),
                }],
            })
            .collect();
        let objectives = [Objective::PodResource {
            name: ResourceName::Cpu,
            value: ObjectiveValue::Utilization(50),
        }];
        let r = Recommender::default()
            .recommend(&Input {
                now: at(1_000_000),
                current_replicas: 3,
                objectives: &objectives,
                pods: &pods,
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let p = Policy {
            max_replicas: Some(5),
            ..Policy::default()
        };
        let d = policy::evaluate(
            &p,
            &History::new(),
            &policy::Input {
                now: at(1_000_000),
                current_replicas: 3,
                recommended_replicas: r.replicas,
                source: r.source,
            },
        );
        let e = Explanation {
            at: at(1_000_000),
            target: "apps/v1 Deployment web".into(),
            mode: "Apply",
            blocked: None,
            current_replicas: Some(3),
            pods: 3,
            metrics_listed_at: Some(at(998_000)),
            recommendation: Some(Box::new(Ok(r))),
            unusable_objectives: vec!["CustomQuery objectives cannot be computed locally".into()],
            decision: Some(Box::new(d)),
            outcome: "scaled 3 -> 5".into(),
        };
        let text = render("ns", "web", &e, at(1_002_000));
        for want in [
            "DatadogPodAutoscaler ns/web",
            "current replicas: 3",
            "PodResource cpu utilization 50%",
            "pods: 3 counted, 0 unready, 0 missing metrics, 0 ignored",
            "mean: 140.0% (watermarks 45.0% .. 55.0%) -> up",
            "freshness: newest sample 7.0s ago",
            "not computable here: CustomQuery",
            "recommendation: 8 replicas (source Local)",
            "Recommended: 8",
            "Constrained: 5",
            "limited: LimitedByConstraint",
            "decision: scaled 3 -> 5",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
