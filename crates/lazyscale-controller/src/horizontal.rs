//! The controller's side of the horizontal engine ([`lazyscale_core::horizontal`]): it turns a DPA,
//! the target's pods and their PodMetrics into the engine's inputs, and the engine's history back
//! into `status.horizontal`. Nothing is decided here; the recommender and the policy are the
//! engine's.
//!
//! The recommendation history the policy stabilizes over lives in memory, one [`History`] per DPA
//! (see `controller.rs`): every evaluation is recorded, so the windows count exactly the
//! recommendations made inside them, as the HPA and the DCA do. The status keeps a compact copy
//! ([`status_recommendations`]): the first recommendation of every run of equal values that can
//! still count, so an unchanged recommendation writes nothing. A restart or a new leader restores the
//! history from it ([`restore_history`]); a steady run that began before the window then counts only
//! from the restore on.

use std::collections::HashMap;
use std::time::Duration;

use lazyscale_api::time::Timestamp;

use lazyscale_api::consts::value_sources;
use lazyscale_api::{
    ApplyMode as ApiApplyMode, DatadogPodAutoscalerSpec, FallbackDirection as ApiFallback, HorizontalAction,
    HorizontalRecommendation, HorizontalStatus, Objective as ApiObjective, ObjectiveResourceName,
    ObjectiveType, ObjectiveValueType, ScalingPolicy as ApiScalingPolicy, ScalingRuleType,
    ScalingStrategySelect,
};
use lazyscale_core::horizontal::policy::{
    ApplyMode, FallbackDirection, History, MAX_ACTIONS, MAX_WINDOW, Policy, RuleType, ScalingAction,
    ScalingPolicy, ScalingRule, SelectPolicy, TimedRecommendation,
};
use lazyscale_core::horizontal::recommender::{
    ContainerMetrics, Objective, ObjectiveValue, PodMetrics, ReadyCondition, ResourceName, Sample,
};

use crate::pods::PodSample;

use crate::usage::PodUsage;
use lazyscale_api::quantity;
use lazyscale_api::time;

/// Recommendations kept in `status.horizontal.lastRecommendations` at most.
pub const MAX_STATUS_RECOMMENDATIONS: usize = 60;

/// The objective of a DPA without any: 80 % pod CPU utilization (the DCA's default).
pub const DEFAULT_OBJECTIVE: Objective = Objective::PodResource {
    name: ResourceName::Cpu,
    value: ObjectiveValue::Utilization(80),
};

fn scaling_policy(p: Option<&ApiScalingPolicy>) -> ScalingPolicy {
    let Some(p) = p else {
        return ScalingPolicy::default();
    };
    ScalingPolicy {
        strategy: match p.strategy {
            None | Some(ScalingStrategySelect::Max) => SelectPolicy::Max,
            Some(ScalingStrategySelect::Min) => SelectPolicy::Min,
            Some(ScalingStrategySelect::Disabled) => SelectPolicy::Disabled,
        },
        rules: p
            .rules
            .iter()
            .flatten()
            .map(|r| ScalingRule {
                kind: match r.type_ {
                    ScalingRuleType::Pods => RuleType::Pods,
                    ScalingRuleType::Percent => RuleType::Percent,
                },
                value: u32::try_from(r.value).unwrap_or(0),
                period_seconds: u32::try_from(r.period_seconds).unwrap_or(0).max(1),
            })
            .collect(),
        stabilization_window_seconds: p
            .stabilization_window_seconds
            .and_then(|w| u32::try_from(w).ok())
            .unwrap_or(0),
    }
}

/// The engine's policy for a DPA spec.
pub fn policy(spec: &DatadogPodAutoscalerSpec) -> Policy {
    let c = spec.constraints.as_ref();
    Policy {
        min_replicas: c
            .and_then(|c| c.min_replicas)
            .and_then(|m| u32::try_from(m).ok())
            .unwrap_or(1)
            .max(1),
        max_replicas: c.and_then(|c| c.max_replicas).and_then(|m| u32::try_from(m).ok()),
        mode: match spec.apply_policy.mode {
            ApiApplyMode::Apply => ApplyMode::Apply,
            ApiApplyMode::Preview => ApplyMode::Preview,
        },
        scale_up: scaling_policy(spec.apply_policy.scale_up.as_ref()),
        scale_down: scaling_policy(spec.apply_policy.scale_down.as_ref()),
        fallback_direction: match spec.fallback.horizontal.direction {
            ApiFallback::ScaleUp => FallbackDirection::ScaleUp,
            ApiFallback::ScaleDown => FallbackDirection::ScaleDown,
            ApiFallback::All => FallbackDirection::All,
        },
    }
}

/// The longest stabilization window of a policy (capped at [`MAX_WINDOW`]).
pub fn longest_window(p: &Policy) -> Duration {
    let w = p
        .scale_up
        .stabilization_window_seconds
        .max(p.scale_down.stabilization_window_seconds);
    Duration::from_secs(u64::from(w)).min(MAX_WINDOW)
}

/// The objectives of a spec for the local recommender, and the ones it cannot compute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Objectives {
    /// Objectives the engine evaluates.
    pub usable: Vec<Objective>,
    /// Why the others cannot be computed (they hold back a scale-down, as a failed objective does).
    pub unusable: Vec<String>,
    /// No objectives and vertical updates opted in: the mode matrix makes the DPA vertical only, and
    /// the horizontal engine leaves its replicas alone.
    pub vertical_only: bool,
}

fn objective(o: &ApiObjective) -> Result<Objective, String> {
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
    let name = match name {
        ObjectiveResourceName::Cpu => ResourceName::Cpu,
        ObjectiveResourceName::Memory => ResourceName::Memory,
    };
    let value = match value.type_ {
        ObjectiveValueType::Utilization => ObjectiveValue::Utilization(
            value
                .utilization
                .and_then(|u| u32::try_from(u).ok())
                .filter(|u| *u > 0)
                .ok_or("Utilization objective needs a utilization above 0")?,
        ),
        ObjectiveValueType::AbsoluteValue => {
            // The engine's units: millicores for CPU, bytes for memory.
            let parse = match name {
                ResourceName::Cpu => quantity::millis,
                ResourceName::Memory => quantity::units,
            };
            let v = value
                .absolute_value
                .as_ref()
                .and_then(|q| parse(&q.0))
                .filter(|v| *v > 0)
                .ok_or("AbsoluteValue objective needs a positive absoluteValue")?;
            ObjectiveValue::AbsoluteValue(v as f64)
        }
    };
    Ok(match container {
        None => Objective::PodResource { name, value },
        Some(container) => Objective::ContainerResource {
            name,
            container,
            value,
        },
    })
}

/// The spec's horizontal objectives ([`DatadogPodAutoscalerSpec::horizontal_objectives`]), else — unless
/// the mode matrix ([`DatadogPodAutoscalerSpec::scaling`], shared with the vertical path) makes the DPA
/// vertical only — [`DEFAULT_OBJECTIVE`].
pub fn objectives(spec: &DatadogPodAutoscalerSpec) -> Objectives {
    let mut out = Objectives::default();
    if !spec.scaling().horizontal() {
        out.vertical_only = true;
        return out;
    }
    match spec.horizontal_objectives() {
        Some(l) => {
            for o in l {
                match objective(o) {
                    Ok(o) => out.usable.push(o),
                    Err(e) => out.unusable.push(e),
                }
            }
        }
        None => out.usable.push(DEFAULT_OBJECTIVE),
    }
    out
}

/// The engine's view of the target's pods: requests from the pod source, usage from the namespace's
/// PodMetrics (one sample per container, beginning at `timestamp − window`).
pub fn pods(pods: &[PodSample], usage: &HashMap<String, PodUsage>) -> Vec<PodMetrics> {
    pods.iter()
        .map(|p| {
            let sample = usage.get(&p.name);
            let began = sample.map(|s| time::sub(s.timestamp, s.window).unwrap_or(s.timestamp));
            let started = p.started_at;
            PodMetrics {
                name: p.name.clone(),
                phase: p.phase,
                deleting: p.deleting,
                start_time: started,
                // Without a transition time (a source that does not keep it), the start time stands
                // in: a Ready pod counts, a pod not Ready past its start never became Ready.
                ready: p
                    .ready_changed_at
                    .or(started)
                    .map(|last_transition| ReadyCondition {
                        ready: p.ready,
                        last_transition,
                    }),
                containers: p
                    .containers
                    .iter()
                    .map(|c| {
                        let used = sample.and_then(|s| s.containers.iter().find(|u| u.name == c.name));
                        let one = |value: f64| match (began, used) {
                            (Some(at), Some(_)) => vec![Sample { at, value }],
                            _ => Vec::new(),
                        };
                        ContainerMetrics {
                            name: c.name.clone(),
                            cpu_request_millis: c.cpu_millis,
                            memory_request_bytes: c.memory_bytes,
                            cpu: one(used.map_or(0.0, |u| u.cpu * 1000.0)),
                            memory: one(used.map_or(0.0, |u| u.memory)),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

fn to_u32(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// The history stored in the status: recommendations and actions, oldest first.
pub fn restore_history(status: &HorizontalStatus) -> History {
    let mut recs: Vec<TimedRecommendation> = status
        .last_recommendations
        .iter()
        .flatten()
        .filter_map(|r| {
            Some(TimedRecommendation {
                at: time::from_time(r.generated_at.as_ref()?),
                replicas: to_u32(r.desired_replicas),
            })
        })
        .collect();
    recs.sort_by_key(|r| r.at);
    let actions: Vec<ScalingAction> = status
        .last_actions
        .iter()
        .flatten()
        .map(|a| ScalingAction {
            time: time::from_time(&a.time),
            from_replicas: to_u32(a.from_replicas),
            to_replicas: to_u32(a.to_replicas),
            recommended_replicas: a.recommended_replicas.map_or(0, to_u32),
            limited_reason: a.limited_reason.as_deref().map(str::to_owned),
        })
        .collect();
    History::restore(recs, actions)
}

/// `status.horizontal.lastRecommendations`: the first recommendation of every run of equal values
/// whose last recommendation is still inside the longest window, and always the current run, at
/// most [`MAX_STATUS_RECOMMENDATIONS`], times truncated to the second as the API stores them.
pub fn status_recommendations(
    history: &History,
    now: Timestamp,
    window: Duration,
) -> Vec<HorizontalRecommendation> {
    // (first, last) of each run.
    let mut runs: Vec<(TimedRecommendation, Timestamp)> = Vec::new();
    for r in history.recommendations() {
        match runs.last_mut() {
            Some((first, last)) if first.replicas == r.replicas => *last = r.at,
            _ => runs.push((*r, r.at)),
        }
    }
    let cutoff = time::saturating_sub(now, window);
    let n = runs.len();
    let mut out: Vec<HorizontalRecommendation> = runs
        .into_iter()
        .enumerate()
        .filter(|(i, (_, last))| *i + 1 == n || (!window.is_zero() && *last > cutoff))
        .map(|(_, (first, _))| HorizontalRecommendation {
            source: Some(lazyscale_api::Word::from_static(value_sources::LOCAL)),
            generated_at: Some(time::to_time(first.at)),
            desired_replicas: to_i32(first.replicas),
        })
        .collect();
    if out.len() > MAX_STATUS_RECOMMENDATIONS {
        out.drain(..out.len() - MAX_STATUS_RECOMMENDATIONS);
    }
    out
}

/// `status.horizontal.lastActions`: the history's actions (the last [`MAX_ACTIONS`]).
pub fn status_actions(history: &History) -> Vec<HorizontalAction> {
    let n = history.actions().len();
    history
        .actions()
        .skip(n.saturating_sub(MAX_ACTIONS))
        .map(|a| HorizontalAction {
            time: time::to_time(a.time),
            from_replicas: to_i32(a.from_replicas),
            to_replicas: to_i32(a.to_replicas),
            recommended_replicas: Some(to_i32(a.recommended_replicas)),
            limited_reason: a.limited_reason.clone().map(lazyscale_api::Word::from),
        })
        .collect()
}

/// Whether the pod metrics listed at `metrics_at` were listed before the last scale action: then they
/// describe the workload at its previous size, and a recommendation from them would scale again on the
/// same load (one reconcile per own write doubling 1 → 2 → 4 → 8 within a second). The HPA avoids this
/// by recommending once per sync period; lazyscale also reconciles on DPA changes, so it waits for a
/// metrics list newer than its last action instead.
pub fn metrics_predate_last_action(history: &History, metrics_at: Timestamp) -> bool {
    history.last_action().is_some_and(|a| metrics_at <= a.time)
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_objectives_is_vertical_only_when_vertical_updates_are_opted_in() {
        let spec = |update: serde_json::Value| -> DatadogPodAutoscalerSpec {
            serde_json::from_value(serde_json::json!({
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "owner": "Local",
                "applyPolicy": update,
            }))
            .unwrap()
        };
        let auto = objectives(&spec(serde_json::json!({"update": {"strategy": "Auto"}})));
        assert!(auto.vertical_only && auto.usable.is_empty());
        let rollout = objectives(&spec(
            serde_json::json!({"update": {"strategy": "TriggerRollout"}}),
        ));
        assert!(rollout.vertical_only);
        let plain = objectives(&spec(serde_json::json!({})));
        assert!(!plain.vertical_only);
        assert_eq!(plain.usable, vec![DEFAULT_OBJECTIVE]);
        let disabled = objectives(&spec(serde_json::json!({"update": {"strategy": "Disabled"}})));
        assert_eq!(disabled.usable, vec![DEFAULT_OBJECTIVE]);
    }

    #[test]
    fn metrics_listed_before_the_last_action_are_stale() {
        use lazyscale_core::horizontal::policy::ScalingAction;
        let t0 = Timestamp::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut h = History::new();
        assert!(
            !metrics_predate_last_action(&h, t0),
            "no action yet: any metrics count"
        );
        h.record_action(ScalingAction {
            time: t0,
            from_replicas: 1,
            to_replicas: 2,
            recommended_replicas: 2,
            limited_reason: None,
        });
        assert!(metrics_predate_last_action(&h, t0 - Duration::from_secs(5)));
        assert!(metrics_predate_last_action(&h, t0));
        assert!(!metrics_predate_last_action(&h, t0 + Duration::from_millis(1)));
    }

    use super::*;
    use crate::pods::{ContainerRequests, PodPhase};
    use crate::usage::ContainerUsage;

    fn t(s: u64) -> Timestamp {
        Timestamp::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    #[test]
    fn status_keeps_runs_that_can_still_count() {
        let mut h = History::new();
        for (s, r) in [(0, 3), (30, 3), (60, 5), (90, 5), (400, 4), (430, 6), (460, 6)] {
            h.record_recommendation(t(s), r);
        }
        let list = status_recommendations(&h, t(460), Duration::from_secs(300));
        let v: Vec<i32> = list.iter().map(|r| r.desired_replicas).collect();
        // 3 and 5 ended before 160: they cannot count any more.
        assert_eq!(v, [4, 6]);
        // An unchanged recommendation changes nothing.
        h.record_recommendation(t(490), 6);
        assert_eq!(status_recommendations(&h, t(490), Duration::from_secs(300)), list);
        // Without windows only the current run is kept.
        let v: Vec<i32> = status_recommendations(&h, t(490), Duration::ZERO)
            .iter()
            .map(|r| r.desired_replicas)
            .collect();
        assert_eq!(v, [6]);
    }

    #[test]
    fn history_round_trips_through_the_status() {
        let mut h = History::new();
        h.record_recommendation(t(0), 3);
        h.record_recommendation(t(30), 5);
        h.record_action(ScalingAction {
            time: t(30),
            from_replicas: 3,
            to_replicas: 5,
            recommended_replicas: 5,
            limited_reason: None,
        });
        let status = HorizontalStatus {
            target: None,
            last_actions: Some(status_actions(&h)),
            last_recommendations: Some(status_recommendations(&h, t(30), Duration::from_secs(300))),
        };
        assert_eq!(restore_history(&status), h);
    }

    #[test]
    fn pods_carry_one_sample_from_the_window_start() {
        let pod = PodSample {
            name: "a".into(),
            phase: PodPhase::Running,
            deleting: false,
            ready: true,
            ready_changed_at: None,
            started_at: Some(time::from_unix_millis(1_000)),
            containers: vec![ContainerRequests {
                name: "app".into(),
                cpu_millis: Some(500),
                memory_bytes: Some(1 << 20),
            }],
        };
        let usage = HashMap::from([(
            "a".to_owned(),
            PodUsage {
                timestamp: time::from_unix_millis(100_000),
                window: Duration::from_secs(15),
                containers: vec![ContainerUsage {
                    name: "app".into(),
                    cpu: 0.25,
                    memory: 1024.0,
                }],
            },
        )]);
        let p = &pods(&[pod], &usage)[0];
        assert_eq!(
            p.containers[0].cpu,
            [Sample {
                at: time::from_unix_millis(85_000),
                value: 250.0
            }]
        );
        assert_eq!(
            p.ready.map(|r| r.last_transition),
            Some(time::from_unix_millis(1_000)),
            "the start time stands in for an unknown transition"
        );
        let none = pods(
            &[PodSample {
                name: "b".into(),
                ..PodSample::default()
            }],
            &usage,
        );
        assert!(none[0].containers.is_empty());
    }
}
