//! "Why": the record of one reconcile of one DPA and its rendering as text.
//!
//! Each reconcile leaves an [`Explanation`]: the inputs (target, replicas, pods counted per
//! objective, utilization, data freshness), the raw recommendation, every policy step that changed
//! it (stabilization, rules, constraints, fallback direction, mode) and the final decision.
//! [`render`] is a pure function of it and the current time.

use std::fmt::Write as _;

use crate::policy::Decision;
use crate::recommend::Recommendation;
use crate::time::Millis;

/// What one reconcile saw and decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// DPA namespace.
    pub namespace: String,
    /// DPA name.
    pub name: String,
    /// When the reconcile ran.
    pub at: Millis,
    /// `apiVersion kind name` of the target.
    pub target: String,
    /// `Apply` or `Preview`.
    pub mode: String,
    /// Why the DPA was not evaluated (reason, message), when it was not.
    pub blocked: Option<(String, String)>,
    /// Replica count from the scale subresource.
    pub current_replicas: Option<i32>,
    /// Pods of the target in the pod source.
    pub pods: usize,
    /// When the namespace's PodMetrics were listed.
    pub metrics_listed_at: Option<Millis>,
    /// The recommendation, when computed.
    pub recommendation: Option<Recommendation>,
    /// The policy's decision, when made.
    pub decision: Option<Decision>,
    /// What was done.
    pub outcome: String,
}

fn age(now: Millis, t: Millis) -> String {
    let s = (now - t).max(0) as f64 / 1000.0;
    if s < 120.0 {
        format!("{s:.1}s ago")
    } else {
        format!("{:.1}m ago", s / 60.0)
    }
}

/// Renders an explanation as text, with ages relative to `now`.
pub fn render(e: &Explanation, now: Millis) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "DatadogPodAutoscaler {}/{}", e.namespace, e.name);
    let _ = writeln!(s, "  evaluated: {}", age(now, e.at));
    let _ = writeln!(s, "  target:    {}", e.target);
    let _ = writeln!(s, "  mode:      {}", e.mode);
    if let Some((reason, message)) = &e.blocked {
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
    if let Some(r) = &e.recommendation {
        let _ = writeln!(s, "objectives:");
        for o in &r.objectives {
            let _ = writeln!(s, "  - {}", o.objective);
            let _ = writeln!(
                s,
                "    pods: {} counted, {} unready, {} missing metrics, {} ignored",
                o.ready, o.unready, o.missing, o.ignored
            );
            if let Some(m) = o.mean {
                let (lo, hi) = o.watermarks;
                let _ = writeln!(
                    s,
                    "    mean: {} (watermarks {} .. {}) -> {}",
                    num(o.utilization, m),
                    num(o.utilization, lo),
                    num(o.utilization, hi),
                    o.direction
                );
            }
            if let Some(f) = o.filled_mean {
                let _ = writeln!(
                    s,
                    "    mean with missing/unready pods filled in: {}",
                    num(o.utilization, f)
                );
            }
            if let Some((oldest, newest)) = o.samples {
                let _ = writeln!(
                    s,
                    "    freshness: newest sample {}, oldest {}",
                    age(now, newest),
                    age(now, oldest)
                );
            }
            match &o.result {
                Ok(n) => {
                    let _ = writeln!(s, "    replicas: {n}");
                }
                Err(err) => {
                    let _ = writeln!(s, "    error: {err}");
                }
            }
            if let Some(note) = &o.note {
                let _ = writeln!(s, "    note: {note}");
            }
        }
        match &r.replicas {
            Ok(n) => {
                let _ = writeln!(s, "recommendation: {n} replicas (source Local)");
            }
            Err(err) => {
                let _ = writeln!(s, "recommendation: none ({err})");
            }
        }
        if let Some(note) = &r.note {
            let _ = writeln!(s, "  note: {note}");
        }
    }
    if let Some(d) = &e.decision {
        let _ = writeln!(s, "policy:");
        if d.steps.is_empty() {
            let _ = writeln!(s, "  no step changed the recommendation");
        }
        for step in &d.steps {
            let _ = writeln!(s, "  {step}");
        }
        if let Some(l) = &d.limited {
            let _ = writeln!(s, "  limited: {}: {}", l.reason, l.message);
        }
        if let Some(r) = &d.restricted {
            let _ = writeln!(s, "  restricted: {}: {}", r.reason, r.message);
        }
    }
    let _ = writeln!(s, "decision: {}", e.outcome);
    s
}

fn num(utilization: bool, v: f64) -> String {
    if utilization {
        format!("{:.1}%", v * 100.0)
    } else if v.abs() < 1000.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Decision, Limit, Step};
    use crate::recommend::{Direction, ObjectiveOutcome};

    #[test]
    fn renders_inputs_steps_and_decision() {
        let e = Explanation {
            namespace: "ns".into(),
            name: "web".into(),
            at: 10_000,
            target: "apps/v1 Deployment web".into(),
            mode: "Apply".into(),
            blocked: None,
            current_replicas: Some(3),
            pods: 3,
            metrics_listed_at: Some(8_000),
            recommendation: Some(Recommendation {
                replicas: Ok(9),
                objectives: vec![ObjectiveOutcome {
                    objective: "PodResource cpu utilization 50%".into(),
                    utilization: true,
                    ready: 3,
                    unready: 0,
                    missing: 0,
                    ignored: 0,
                    mean: Some(1.4),
                    filled_mean: None,
                    watermarks: (0.45, 0.55),
                    direction: Direction::Up,
                    samples: Some((7_000, 9_000)),
                    result: Ok(9),
                    note: None,
                }],
                note: None,
            }),
            decision: Some(Decision {
                current: 3,
                recommended: 9,
                desired: 5,
                scale: true,
                limited: Some(Limit {
                    reason: "LimitedByConstraint",
                    message: "desired replicas 9 limited to 5 by [1, 5]".into(),
                }),
                restricted: None,
                steps: vec![Step {
                    name: "constraints",
                    before: 9,
                    after: 5,
                    detail: "bounds [1, 5]".into(),
                }],
                requeue_after: None,
            }),
            outcome: "scaled 3 -> 5".into(),
        };
        let text = render(&e, 12_000);
        for want in [
            "DatadogPodAutoscaler ns/web",
            "current replicas: 3",
            "pods: 3 counted, 0 unready, 0 missing metrics, 0 ignored",
            "mean: 140.0% (watermarks 45.0% .. 55.0%) -> scale up",
            "freshness: newest sample 3.0s ago, oldest 5.0s ago",
            "recommendation: 9 replicas",
            "constraints: 9 -> 5 (bounds [1, 5])",
            "limited: LimitedByConstraint",
            "decision: scaled 3 -> 5",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
