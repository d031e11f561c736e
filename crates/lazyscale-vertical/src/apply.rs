//! What a DPA's vertical recommendation does to running pods, decided without I/O: the mode matrix, the
//! H+V defaults, the CPU coupling rule, and the resources a container ends up with under a plan.
//!
//! **Mode matrix** ([`mode`]): the scaling is [`DatadogPodAutoscalerSpec::scaling`] (`lazyscale-api`, the
//! one decision the horizontal controller reads too):
//!
//! | objectives | `applyPolicy.update.strategy` | scaling |
//! |---|---|---|
//! | any | unset or `Disabled` | [`Scaling::Horizontal`] (no objectives: the default 80 % CPU objective) |
//! | no | `Auto` or `TriggerRollout` | [`Scaling::Vertical`] |
//! | yes | `Auto` or `TriggerRollout` | [`Scaling::HorizontalAndVertical`] |
//!
//! Vertical values reach pods, new (the admission webhook) or running, only with `Auto` (in place where
//! possible, else a rollout) or `TriggerRollout` (always a rollout), in `Apply` mode and without the
//! `pause` annotation: `Preview`, `Disabled`, a paused DPA and an unset strategy apply nothing
//! ([`Strategy::Hold`]). An unset strategy is not an opt-in: such a DPA scales replicas only.
//!
//! **H+V defaults** ([`effective_constraints`]): in H+V mode a container whose constraints leave
//! `controlledResources` unset is controlled for memory only; CPU must be opted in (`[cpu, memory]`). CPU
//! goes to replicas and memory to requests, so the two loops act on different resources.
//!
//! **Coupling when CPU is in both** ([`couple_cpu`]): horizontal first. While the horizontal part can still
//! move (the replica count is strictly between `minReplicas` and `maxReplicas`, or unknown), the vertical
//! CPU request is held at what the pods have; at `maxReplicas` it may only rise, at `minReplicas` only
//! fall. Raising a request at `maxReplicas` lowers utilization, the horizontal part leaves the bound and
//! the CPU request freezes again; lowering at `minReplicas` does the mirror. Each loop moves only while
//! the other is pinned, so a step load converges instead of the two chasing each other.
//!
//! **Update gate** ([`gate`], [`UpdateGate`]): when a new target replaces the one in force. A raise of
//! 10 % or more goes through at once; a lowering of 10 % or more once the target in force is an hour
//! old; smaller moves once it is a day old. [`crate::dpa_vertical_target`] keeps the DPA's
//! `status.vertical.target` (version and `generatedAt`) while the gate holds (only for DPAs whose values
//! reach pods: `Auto` or `TriggerRollout`, not paused, not Preview), so the webhook and the
//! apply path see no new rec-id: a recommender whose CPU follows the hours of the day does not roll the
//! workload out every hour.

use std::collections::HashMap;
use std::time::Duration;

pub use lazyscale_api::dpa::Scaling;
use lazyscale_api::{
    ApplyMode, Constraints, ContainerConstraints, DatadogPodAutoscaler, DatadogPodAutoscalerSpec,
    UpdateStrategy, consts,
};

use crate::constraints::{ContainerPlan, LimitAction, Resource, Resources, VerticalPlan};
use crate::recommender::WorkloadRecommendation;

/// Why running pods are left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hold {
    /// `applyPolicy.mode: Preview`.
    Preview,
    /// The `autoscaling.datadoghq.com/pause` annotation is `true`.
    Paused,
    /// `applyPolicy.update.strategy: Disabled`.
    Disabled,
    /// `applyPolicy.update.strategy` is unset.
    NotOptedIn,
}

impl Hold {
    /// A sentence for conditions and `explain`.
    pub fn message(self) -> &'static str {
        match self {
            Hold::Preview => "mode Preview: recommendations are not applied",
            Hold::Paused => "the autoscaler is paused",
            Hold::Disabled => "update.strategy is Disabled",
            Hold::NotOptedIn => {
                "update.strategy is unset: replicas only, no pod gets vertical values (Auto or TriggerRollout opts in)"
            }
        }
    }
}

/// How the vertical recommendation reaches running pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Not at all.
    Hold(Hold),
    /// Through a rollout of the workload (`TriggerRollout`).
    Rollout,
    /// In place where the cluster and the change allow it, else through a rollout (`Auto`).
    Auto,
}

/// The mode of a DPA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mode {
    /// Which loops act.
    pub scaling: Scaling,
    /// How vertical values reach running pods.
    pub strategy: Strategy,
}

/// Whether the DPA carries the `pause` annotation set to `true`.
pub fn paused(dpa: &DatadogPodAutoscaler) -> bool {
    dpa.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(consts::annotations::PAUSE))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The mode matrix (see the module documentation).
pub fn mode(dpa: &DatadogPodAutoscaler) -> Mode {
    let spec: &DatadogPodAutoscalerSpec = &dpa.spec;
    let scaling = spec.scaling();
    let strategy = spec.apply_policy.update.as_ref().and_then(|u| u.strategy);
    let strategy = if spec.apply_policy.mode == ApplyMode::Preview {
        Strategy::Hold(Hold::Preview)
    } else if paused(dpa) {
        Strategy::Hold(Hold::Paused)
    } else {
        match strategy {
            None => Strategy::Hold(Hold::NotOptedIn),
            Some(UpdateStrategy::Disabled) => Strategy::Hold(Hold::Disabled),
            Some(UpdateStrategy::TriggerRollout) => Strategy::Rollout,
            Some(UpdateStrategy::Auto) => Strategy::Auto,
        }
    };
    Mode { scaling, strategy }
}

/// The container constraints the recommendation is computed and applied with: the spec's, except that in
/// H+V mode an entry without `controlledResources` controls memory only, and containers without an entry
/// get a `*` entry controlling memory only.
pub fn effective_constraints(dpa: &DatadogPodAutoscaler) -> Option<Constraints> {
    let spec = dpa.spec.constraints.clone();
    if mode(dpa).scaling != Scaling::HorizontalAndVertical {
        return spec;
    }
    let mut constraints = spec.unwrap_or_default();
    let entries = constraints.containers.get_or_insert_with(Vec::new);
    for e in entries.iter_mut() {
        if e.controlled_resources.is_none() {
            e.controlled_resources = Some(vec![Resource::Memory.name().to_owned()]);
        }
    }
    if !entries.iter().any(|e| e.name == consts::CONTAINER_WILDCARD) {
        entries.push(ContainerConstraints {
            name: consts::CONTAINER_WILDCARD.to_owned(),
            enabled: None,
            controlled_resources: Some(vec![Resource::Memory.name().to_owned()]),
            controlled_values: None,
            min_allowed: None,
            max_allowed: None,
            requests: None,
        });
    }
    Some(constraints)
}

/// Where the horizontal part stands relative to its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HorizontalPosition {
    /// At `minReplicas` (default 1) or below.
    AtMin,
    /// At `maxReplicas` or above.
    AtMax,
    /// Free to move.
    Between,
    /// The replica count is not known yet.
    Unknown,
}

/// The horizontal position of a DPA from `status.currentReplicas` and `constraints.min/maxReplicas`.
pub fn horizontal_position(dpa: &DatadogPodAutoscaler) -> HorizontalPosition {
    let Some(current) = dpa.status.as_ref().and_then(|s| s.current_replicas) else {
        return HorizontalPosition::Unknown;
    };
    let c = dpa.spec.constraints.as_ref();
    let min = c.and_then(|c| c.min_replicas).unwrap_or(1);
    let max = c.and_then(|c| c.max_replicas);
    // at max wins when min == max: the horizontal part cannot add capacity
    if max.is_some_and(|m| current >= m) {
        HorizontalPosition::AtMax
    } else if current <= min {
        HorizontalPosition::AtMin
    } else {
        HorizontalPosition::Between
    }
}

/// The coupling rule for CPU in H+V mode (see the module documentation): the recommendation's CPU
/// targets replaced by what the pods have (`current`, by container), allowed to rise only at
/// [`HorizontalPosition::AtMax`] and to fall only at [`HorizontalPosition::AtMin`]. A container whose
/// current CPU request is unknown gets no CPU target (its CPU is left as it is).
pub fn couple_cpu(
    rec: &WorkloadRecommendation,
    current: &HashMap<String, u64>,
    position: HorizontalPosition,
) -> WorkloadRecommendation {
    let mut out = rec.clone();
    for c in &mut out.containers {
        let Some(est) = c.cpu_millicores.as_mut() else {
            continue;
        };
        let Some(&have) = current.get(&c.name) else {
            c.cpu_millicores = None;
            continue;
        };
        let target = match position {
            HorizontalPosition::AtMax => est.target.max(have),
            HorizontalPosition::AtMin => est.target.min(have),
            HorizontalPosition::Between | HorizontalPosition::Unknown => have,
        };
        est.target = target;
        est.lower = est.lower.min(target);
        est.upper = est.upper.max(target);
    }
    out
}

/// A container's requests and limits (`None` = not set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CurrentResources {
    /// Requests.
    pub requests: Resources,
    /// Limits.
    pub limits: Resources,
}

/// The resources a container gets under a plan, from the ones it has: the rule the admission webhook
/// applies to new pods ([`crate::mutate`]) and the in-place path to running ones.
///
/// - [`LimitAction::Untouched`]: the limit stays; the request is capped at it.
/// - [`LimitAction::Remove`]: the limit goes.
/// - [`LimitAction::Set`]: that limit, at least the request.
/// - [`LimitAction::AtLeast`]: an existing limit raised to at least that value (never lowered); the
///   request is capped at the result; no limit stays no limit.
/// - [`LimitAction::Proportional`]: an existing limit scaled by the factor the request changes (against
///   the old request, else the old limit), at least the new request; no limit stays no limit.
///
/// A resource the plan sets no request for keeps its request.
pub fn container_resources(plan: &ContainerPlan, current: &CurrentResources) -> CurrentResources {
    let mut out = *current;
    for r in Resource::ALL {
        let old_request = current.requests.get(r);
        let old_limit = current.limits.get(r);
        let mut request = plan.requests.get(r);
        match plan.limit(r) {
            LimitAction::Untouched => {
                if let (Some(req), Some(lim)) = (request, old_limit) {
                    request = Some(req.min(lim));
                }
            }
            LimitAction::Remove => out.limits.set(r, None),
            LimitAction::Set(lim) => out.limits.set(r, Some(lim.max(request.unwrap_or(0)))),
            LimitAction::AtLeast(floor) => {
                if let Some(lim) = old_limit {
                    let lim = lim.max(floor);
                    out.limits.set(r, Some(lim));
                    request = request.map(|req| req.min(lim));
                }
            }
            LimitAction::Proportional => {
                if let (Some(req), Some(lim)) = (request, old_limit) {
                    let base = old_request.unwrap_or(lim);
                    let scaled = if base == 0 {
                        lim
                    } else {
                        mul_div_ceil(lim, req, base)
                    };
                    out.limits.set(r, Some(scaled.max(req)));
                }
            }
        }
        if request.is_some() {
            out.requests.set(r, request);
        }
    }
    out
}

/// `ceil(a × b / c)`, saturating.
pub(crate) fn mul_div_ceil(a: u64, b: u64, c: u64) -> u64 {
    if c == 0 {
        return u64::MAX;
    }
    let v = (u128::from(a) * u128::from(b)).div_ceil(u128::from(c));
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Whether applying `plan` to a container with `current` raises or removes one of its limits (a change
/// that may start while another rollout is in progress, see [`crate::rollout`]).
pub fn raises_or_removes_limit(plan: &ContainerPlan, current: &CurrentResources) -> bool {
    let new = container_resources(plan, current);
    Resource::ALL
        .into_iter()
        .any(|r| match (current.limits.get(r), new.limits.get(r)) {
            (Some(_), None) => true,
            (Some(old), Some(new)) => new > old,
            _ => false,
        })
}

/// Why a plan cannot be applied to a running pod in place (it needs a rollout).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NeedsRollout {
    /// The plan removes a limit (burstable, `CPURequestsRemoveLimits…`): a resize cannot remove a limit.
    RemovesLimit {
        /// The container.
        container: String,
    },
    /// The plan sets `GOMEMLIMIT`, an environment variable: only a new pod gets it.
    Environment {
        /// The container.
        container: String,
    },
    /// The plan names a container the cached pod does not show (one a newer template added, say).
    UnknownContainer {
        /// The container.
        container: String,
    },
}

impl std::fmt::Display for NeedsRollout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NeedsRollout::RemovesLimit { container } => {
                write!(
                    f,
                    "container {container}: a limit is removed, which only a rollout can do"
                )
            }
            NeedsRollout::Environment { container } => {
                write!(
                    f,
                    "container {container}: GOMEMLIMIT changes, which only a rollout can do"
                )
            }
            NeedsRollout::UnknownContainer { container } => {
                write!(f, "container {container} is not among the pod's containers")
            }
        }
    }
}

/// The per-container resources of an in-place resize of a pod with `containers` (name → current
/// resources), or why it needs a rollout. Containers the plan does not name are left out; containers whose
/// resources do not change too.
pub fn resize_targets(
    plan: &VerticalPlan,
    containers: &[(String, CurrentResources)],
) -> Result<Vec<(String, CurrentResources)>, NeedsRollout> {
    let mut out = Vec::new();
    for p in &plan.containers {
        let Some((_, current)) = containers.iter().find(|(n, _)| *n == p.name) else {
            return Err(NeedsRollout::UnknownContainer {
                container: p.name.clone(),
            });
        };
        if p.gomemlimit.is_some() {
            return Err(NeedsRollout::Environment {
                container: p.name.clone(),
            });
        }
        let new = container_resources(p, current);
        if Resource::ALL
            .into_iter()
            .any(|r| current.limits.get(r).is_some() && new.limits.get(r).is_none())
        {
            return Err(NeedsRollout::RemovesLimit {
                container: p.name.clone(),
            });
        }
        if new != *current {
            out.push((p.name.clone(), new));
        }
    }
    Ok(out)
}

/// The strategic-merge body of a `pods/resize` call setting these containers' resources: native sidecars
/// (`is_sidecar`, init containers with `restartPolicy: Always`) under `initContainers`, the others under
/// `containers`.
pub fn resize_body(
    targets: &[(String, CurrentResources)],
    is_sidecar: impl Fn(&str) -> bool,
) -> serde_json::Value {
    let mut containers = Vec::new();
    let mut sidecars = Vec::new();
    for (name, r) in targets {
        let mut resources = serde_json::Map::new();
        if let Some(list) = r.requests.to_list() {
            resources.insert("requests".into(), serde_json::json!(list));
        }
        if let Some(list) = r.limits.to_list() {
            resources.insert("limits".into(), serde_json::json!(list));
        }
        let entry = serde_json::json!({"name": name, "resources": resources});
        if is_sidecar(name) {
            sidecars.push(entry);
        } else {
            containers.push(entry);
        }
    }
    let mut spec = serde_json::Map::new();
    if !containers.is_empty() {
        spec.insert("containers".into(), serde_json::Value::Array(containers));
    }
    if !sidecars.is_empty() {
        spec.insert("initContainers".into(), serde_json::Value::Array(sidecars));
    }
    serde_json::json!({ "spec": spec })
}

/// When a new vertical target replaces the one in force (see [`gate`]). The recommender refreshes its
/// target every period and its CPU follows the hours of the day, so without a gate every bucket step
/// would be a new rec-id, and with rollouts only a new set of pods.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateGate {
    /// Smallest relative move of a request or limit that replaces the target in force (0.1: the VPA
    /// updater's change threshold; at most the adaptive method's 12 % CPU horizon margin, so a request
    /// the gate leaves in place still covers the level it was sized for).
    pub min_change: f64,
    /// Smallest age of the target in force before a target that only lowers values replaces it: raises
    /// are applied at once (they prevent OOM kills and starvation), savings wait. Default 1 h.
    pub min_age_to_lower: Duration,
    /// Age from which a target that differs at all replaces the one in force. Default 24 h.
    pub max_age: Duration,
}

impl Default for UpdateGate {
    fn default() -> Self {
        Self {
            min_change: 0.1,
            min_age_to_lower: Duration::from_secs(3600),
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// What [`gate`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GateDecision {
    /// Replace the target in force, because:
    Apply(GateReason),
    /// Keep the target in force, because:
    Hold(GateReason),
}

/// Why [`gate`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GateReason {
    /// There is no target in force (or its age is unknown).
    First,
    /// The containers or the resources set differ (a container, a request or a limit appears or goes).
    Shape,
    /// A value rises by at least `min_change`.
    Raise,
    /// A value falls by at least `min_change` and the target in force is at least `min_age_to_lower`
    /// old (Apply), or younger (Hold).
    Lower,
    /// Every value moves by less than `min_change` and the target in force is at least `max_age` old
    /// (Apply), or younger (Hold).
    Small,
    /// Nothing differs (Hold).
    Same,
}

impl GateDecision {
    /// True for [`GateDecision::Apply`].
    pub fn applies(self) -> bool {
        matches!(self, GateDecision::Apply(_))
    }
}

/// Whether `new` replaces `in_force` (per container: its requests and limits), the target in force
/// being `age` old:
///
/// 1. no target in force or an unknown age → apply;
/// 2. a container, request or limit in one and not the other → apply;
/// 3. a value rising by at least `min_change` → apply at once;
/// 4. a value falling by at least `min_change` → apply once the target in force is `min_age_to_lower`
///    old, else hold;
/// 5. every value moving by less than `min_change` → apply once it is `max_age` old, else hold; equal →
///    hold.
///
/// Containers are matched by name, in any order.
pub fn gate(
    in_force: &[(String, CurrentResources)],
    new: &[(String, CurrentResources)],
    age: Option<Duration>,
    g: &UpdateGate,
) -> GateDecision {
    use GateDecision::{Apply, Hold};
    let Some(age) = age.filter(|_| !in_force.is_empty()) else {
        return Apply(GateReason::First);
    };
    if in_force.len() != new.len() {
        return Apply(GateReason::Shape);
    }
    let (mut raise, mut lower, mut differs) = (false, false, false);
    for (name, n) in new {
        let Some((_, old)) = in_force.iter().find(|(o, _)| o == name) else {
            return Apply(GateReason::Shape);
        };
        for r in Resource::ALL {
            for (o, v) in [
                (old.requests.get(r), n.requests.get(r)),
                (old.limits.get(r), n.limits.get(r)),
            ] {
                match (o, v) {
                    (None, None) => {}
                    (Some(o), Some(v)) => {
                        differs |= o != v;
                        let moved = o.abs_diff(v) as f64;
                        let big = moved >= g.min_change * (o.max(1) as f64);
                        raise |= big && v > o;
                        lower |= big && v < o;
                    }
                    _ => return Apply(GateReason::Shape),
                }
            }
        }
    }
    if raise {
        Apply(GateReason::Raise)
    } else if lower {
        if age >= g.min_age_to_lower {
            Apply(GateReason::Lower)
        } else {
            Hold(GateReason::Lower)
        }
    } else if !differs {
        Hold(GateReason::Same)
    } else if age >= g.max_age {
        Apply(GateReason::Small)
    } else {
        Hold(GateReason::Small)
    }
}

/// Per container, its name and the values [`gate`] compares.
pub type GateValues = Vec<(String, CurrentResources)>;

/// A plan's values as [`gate`] compares them: the requests, and the limits the plan sets (`Set`,
/// `AtLeast`; a removed limit counts as unset, `Untouched` and `Proportional` follow the requests).
/// Plans whose containers differ in limit actions otherwise (one removes a limit the other scales, say)
/// differ in shape: `None`.
pub fn gate_values(in_force: &VerticalPlan, new: &VerticalPlan) -> Option<(GateValues, GateValues)> {
    let kind = |a: LimitAction| match a {
        LimitAction::Untouched => 0,
        LimitAction::Proportional => 1,
        LimitAction::Set(_) | LimitAction::AtLeast(_) => 2,
        LimitAction::Remove => 3,
    };
    let values = |p: &ContainerPlan| {
        let limit = |a: LimitAction| match a {
            LimitAction::Set(v) | LimitAction::AtLeast(v) => Some(v),
            _ => None,
        };
        (
            p.name.clone(),
            CurrentResources {
                requests: p.requests,
                limits: Resources {
                    cpu_millicores: limit(p.cpu_limit),
                    memory_bytes: limit(p.memory_limit),
                },
            },
        )
    };
    for n in &new.containers {
        let o = in_force.container(&n.name)?;
        if kind(o.cpu_limit) != kind(n.cpu_limit)
            || kind(o.memory_limit) != kind(n.memory_limit)
            || o.gomemlimit.is_some() != n.gomemlimit.is_some()
        {
            return None;
        }
    }
    Some((
        in_force.containers.iter().map(values).collect(),
        new.containers.iter().map(values).collect(),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::Strategy;
    use super::*;
    use crate::constraints::apply_constraints;
    use crate::recommender::{ContainerRecommendation, Estimate};
    use proptest::prelude::*;
    use proptest::strategy::Strategy as _;
    use serde_json::json;

    fn dpa(spec: serde_json::Value) -> DatadogPodAutoscaler {
        let mut s = json!({"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "owner": "Local"});
        if let (Some(o), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
            for (k, v) in extra {
                o.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(
            json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler",
            "metadata": {"name": "web", "namespace": "ns"}, "spec": s}),
        )
        .unwrap()
    }

    fn objectives() -> serde_json::Value {
        json!([{"type": "PodResource", "podResource": {"name": "cpu", "value": {"type": "Utilization", "utilization": 70}}}])
    }

    #[test]
    fn the_mode_matrix() {
        let cases = [
            (
                json!({"objectives": objectives()}),
                Scaling::Horizontal,
                Strategy::Hold(Hold::NotOptedIn),
            ),
            (
                json!({"objectives": objectives(), "applyPolicy": {"update": {"strategy": "Disabled"}}}),
                Scaling::Horizontal,
                Strategy::Hold(Hold::Disabled),
            ),
            (
                json!({"applyPolicy": {"update": {"strategy": "Auto"}}}),
                Scaling::Vertical,
                Strategy::Auto,
            ),
            (
                json!({"applyPolicy": {"update": {"strategy": "TriggerRollout"}}}),
                Scaling::Vertical,
                Strategy::Rollout,
            ),
            (
                json!({"objectives": objectives(), "applyPolicy": {"update": {"strategy": "Auto"}}}),
                Scaling::HorizontalAndVertical,
                Strategy::Auto,
            ),
            (
                json!({"applyPolicy": {"mode": "Preview", "update": {"strategy": "Auto"}}}),
                Scaling::Vertical,
                Strategy::Hold(Hold::Preview),
            ),
            // no objectives and no opt-in: the default CPU objective scales replicas, nothing vertical
            (json!({}), Scaling::Horizontal, Strategy::Hold(Hold::NotOptedIn)),
            (
                json!({"applyPolicy": {"update": {"strategy": "Disabled"}}}),
                Scaling::Horizontal,
                Strategy::Hold(Hold::Disabled),
            ),
            // the fallback's objectives are the horizontal objectives too
            (
                json!({"fallback": {"horizontal": {"objectives": objectives()}}, "applyPolicy": {"update": {"strategy": "Auto"}}}),
                Scaling::HorizontalAndVertical,
                Strategy::Auto,
            ),
        ];
        for (spec, scaling, strategy) in cases {
            let m = mode(&dpa(spec.clone()));
            assert_eq!(m, Mode { scaling, strategy }, "{spec}");
        }
        let mut paused = dpa(json!({"applyPolicy": {"update": {"strategy": "Auto"}}}));
        paused.metadata.annotations =
            Some([(consts::annotations::PAUSE.to_owned(), "True".to_owned())].into());
        assert_eq!(mode(&paused).strategy, Strategy::Hold(Hold::Paused));
    }

    fn rec(cpu: u64, mem: u64) -> WorkloadRecommendation {
        let e = |v| {
            Some(Estimate {
                lower: v,
                target: v,
                upper: v,
            })
        };
        WorkloadRecommendation {
            containers: vec![ContainerRecommendation {
                name: "app".into(),
                cpu_millicores: e(cpu),
                memory_bytes: e(mem),
                confidence_days: 1.0,
                oom_bumped: false,
                memory_limit_bytes: None,
            }],
        }
    }

    fn desired(rec: &WorkloadRecommendation) -> Vec<crate::DesiredContainer> {
        crate::DesiredContainer::from_recommendation(rec)
    }

    #[test]
    fn hv_controls_memory_only_unless_cpu_is_opted_in() {
        let hv = dpa(json!({"objectives": objectives(), "applyPolicy": {"update": {"strategy": "Auto"}}}));
        let plan = apply_constraints(
            &desired(&rec(500, 1 << 30)),
            effective_constraints(&hv).as_ref(),
            false,
        )
        .unwrap();
        assert_eq!(plan.containers[0].requests.cpu_millicores, None);
        assert_eq!(plan.containers[0].requests.memory_bytes, Some(1 << 30));

        let named = dpa(
            json!({"objectives": objectives(), "applyPolicy": {"update": {"strategy": "Auto"}},
            "constraints": {"containers": [{"name": "app", "maxAllowed": {"memory": "512Mi"}}]}}),
        );
        let plan = apply_constraints(
            &desired(&rec(500, 1 << 30)),
            effective_constraints(&named).as_ref(),
            false,
        )
        .unwrap();
        assert_eq!(plan.containers[0].requests.cpu_millicores, None);
        assert_eq!(plan.containers[0].requests.memory_bytes, Some(512 << 20));

        let opted = dpa(
            json!({"objectives": objectives(), "applyPolicy": {"update": {"strategy": "Auto"}},
            "constraints": {"containers": [{"name": "*", "controlledResources": ["cpu", "memory"]}]}}),
        );
        let plan = apply_constraints(
            &desired(&rec(500, 1 << 30)),
            effective_constraints(&opted).as_ref(),
            false,
        )
        .unwrap();
        assert_eq!(plan.containers[0].requests.cpu_millicores, Some(500));

        // vertical only: unset means both
        let v = dpa(json!({"applyPolicy": {"update": {"strategy": "Auto"}}}));
        assert_eq!(effective_constraints(&v), None);
    }

    #[test]
    fn cpu_coupling_moves_only_at_the_horizontal_bounds() {
        let current: HashMap<String, u64> = [("app".to_owned(), 300)].into();
        let cpu = |r: &WorkloadRecommendation| r.containers[0].cpu_millicores.map(|e| e.target);
        for (position, high, low) in [
            (HorizontalPosition::Between, 300, 300),
            (HorizontalPosition::Unknown, 300, 300),
            (HorizontalPosition::AtMax, 800, 300),
            (HorizontalPosition::AtMin, 300, 100),
        ] {
            assert_eq!(
                cpu(&couple_cpu(&rec(800, 1), &current, position)),
                Some(high),
                "{position:?}"
            );
            assert_eq!(
                cpu(&couple_cpu(&rec(100, 1), &current, position)),
                Some(low),
                "{position:?}"
            );
        }
        assert_eq!(
            cpu(&couple_cpu(
                &rec(800, 1),
                &HashMap::new(),
                HorizontalPosition::AtMax
            )),
            None
        );
    }

    #[test]
    fn horizontal_position_from_status_and_bounds() {
        let mut d = dpa(json!({"constraints": {"minReplicas": 2, "maxReplicas": 5}}));
        assert_eq!(horizontal_position(&d), HorizontalPosition::Unknown);
        for (n, want) in [
            (1, HorizontalPosition::AtMin),
            (2, HorizontalPosition::AtMin),
            (3, HorizontalPosition::Between),
            (5, HorizontalPosition::AtMax),
        ] {
            d.status = Some(lazyscale_api::DatadogPodAutoscalerStatus {
                current_replicas: Some(n),
                ..Default::default()
            });
            assert_eq!(horizontal_position(&d), want, "{n}");
        }
    }

    /// The coupled loop on a step load: utilization-driven replicas (HPA rule with a 10 % tolerance,
    /// capped at max) and the coupled CPU request (recommended at usage per pod + 15 %) settle and stay.
    #[test]
    fn coupled_loops_settle_on_a_step_load() {
        let (min, max, target_util) = (1i64, 6i64, 0.7f64);
        let mut replicas = 2i64;
        let mut request = 200u64;
        let mut history = Vec::new();
        for step in 0..60 {
            let total_usage = if step < 10 { 300.0 } else { 3000.0 };
            let per_pod = total_usage / replicas as f64;
            let util = per_pod / request as f64;
            if (util / target_util - 1.0).abs() > 0.1 {
                let want = (replicas as f64 * util / target_util).ceil() as i64;
                replicas = want.clamp(min, max);
            }
            let position = if replicas >= max {
                HorizontalPosition::AtMax
            } else if replicas <= min {
                HorizontalPosition::AtMin
            } else {
                HorizontalPosition::Between
            };
            let recommended = (total_usage / replicas as f64 * 1.15) as u64;
            let coupled = couple_cpu(
                &rec(recommended, 1),
                &[("app".to_owned(), request)].into(),
                position,
            );
            request = coupled.containers[0].cpu_millicores.map_or(request, |e| e.target);
            history.push((replicas, request));
        }
        let tail = &history[40..];
        assert!(tail.iter().all(|s| *s == tail[0]), "not settled: {history:?}");
        assert_eq!(tail[0].0, max, "{history:?}");
    }

    fn res(
        cpu_req: Option<u64>,
        mem_req: Option<u64>,
        cpu_lim: Option<u64>,
        mem_lim: Option<u64>,
    ) -> CurrentResources {
        CurrentResources {
            requests: Resources {
                cpu_millicores: cpu_req,
                memory_bytes: mem_req,
            },
            limits: Resources {
                cpu_millicores: cpu_lim,
                memory_bytes: mem_lim,
            },
        }
    }

    fn plan_of(
        cpu: Option<u64>,
        mem: Option<u64>,
        cpu_limit: LimitAction,
        memory_limit: LimitAction,
    ) -> ContainerPlan {
        ContainerPlan {
            name: "app".into(),
            requests: Resources {
                cpu_millicores: cpu,
                memory_bytes: mem,
            },
            cpu_limit,
            memory_limit,
            gomemlimit: None,
        }
    }

    #[test]
    fn container_resources_follow_the_limit_actions() {
        let current = res(Some(100), Some(100), Some(200), Some(400));
        let p = plan_of(
            Some(300),
            Some(50),
            LimitAction::Proportional,
            LimitAction::Proportional,
        );
        assert_eq!(
            container_resources(&p, &current),
            res(Some(300), Some(50), Some(600), Some(200))
        );
        let p = plan_of(Some(300), Some(500), LimitAction::Untouched, LimitAction::Set(10));
        assert_eq!(
            container_resources(&p, &current),
            res(Some(200), Some(500), Some(200), Some(500))
        );
        let p = plan_of(Some(300), None, LimitAction::Remove, LimitAction::Untouched);
        assert_eq!(
            container_resources(&p, &current),
            res(Some(300), Some(100), None, Some(400))
        );
        assert!(raises_or_removes_limit(&p, &current));
        let p = plan_of(
            Some(50),
            Some(50),
            LimitAction::Proportional,
            LimitAction::Proportional,
        );
        assert!(!raises_or_removes_limit(&p, &current));
    }

    #[test]
    fn resize_needs_a_rollout_to_remove_a_limit_or_set_the_environment() {
        let plan = |c: ContainerPlan| VerticalPlan {
            containers: vec![c],
            limited: vec![],
            changed: false,
            version: "v".into(),
        };
        let pod = vec![("app".to_owned(), res(Some(100), Some(100), Some(200), Some(400)))];
        let burstable = plan(plan_of(
            Some(300),
            None,
            LimitAction::Remove,
            LimitAction::Untouched,
        ));
        assert!(matches!(
            resize_targets(&burstable, &pod),
            Err(NeedsRollout::RemovesLimit { .. })
        ));
        let mut go = plan_of(Some(300), None, LimitAction::Untouched, LimitAction::Untouched);
        go.gomemlimit = Some("100MiB".into());
        assert!(matches!(
            resize_targets(&plan(go), &pod),
            Err(NeedsRollout::Environment { .. })
        ));
        let mut other = plan_of(Some(300), None, LimitAction::Untouched, LimitAction::Untouched);
        other.name = "sidecar".into();
        assert!(matches!(
            resize_targets(&plan(other), &pod),
            Err(NeedsRollout::UnknownContainer { .. })
        ));
        // a container without a limit: removal is a no-op, so in place is fine
        let nolimit = vec![("app".to_owned(), res(Some(100), Some(100), None, Some(400)))];
        let t = resize_targets(&burstable, &nolimit).unwrap();
        assert_eq!(t[0].1, res(Some(300), Some(100), None, Some(400)));
        assert_eq!(
            resize_body(&t, |_| false),
            json!({"spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "300m", "memory": "100"}, "limits": {"memory": "400"}}}]}})
        );
        // a native sidecar named by the plan is resized in place too, under initContainers
        let mut side = plan_of(Some(50), None, LimitAction::Untouched, LimitAction::Untouched);
        side.name = "proxy".into();
        let both = VerticalPlan {
            containers: vec![
                plan_of(Some(300), None, LimitAction::Untouched, LimitAction::Untouched),
                side,
            ],
            limited: vec![],
            changed: false,
            version: "v".into(),
        };
        let with_sidecar = vec![
            ("app".to_owned(), res(Some(100), Some(100), None, None)),
            ("proxy".to_owned(), res(Some(10), None, None, None)),
        ];
        let t = resize_targets(&both, &with_sidecar).unwrap();
        assert_eq!(
            resize_body(&t, |n| n == "proxy"),
            json!({"spec": {
                "containers": [{"name": "app", "resources": {"requests": {"cpu": "300m", "memory": "100"}}}],
                "initContainers": [{"name": "proxy", "resources": {"requests": {"cpu": "50m"}}}]}})
        );
        // nothing changes: nothing to resize
        let same = plan(plan_of(
            Some(100),
            Some(100),
            LimitAction::Untouched,
            LimitAction::Untouched,
        ));
        assert!(resize_targets(&same, &pod).unwrap().is_empty());
    }

    fn action() -> impl proptest::strategy::Strategy<Value = LimitAction> {
        prop_oneof![
            Just(LimitAction::Untouched),
            Just(LimitAction::Proportional),
            Just(LimitAction::Remove),
            (1u64..1 << 40).prop_map(LimitAction::Set),
            (1u64..1 << 40).prop_map(LimitAction::AtLeast),
        ]
    }

    fn opt() -> impl proptest::strategy::Strategy<Value = Option<u64>> {
        prop_oneof![Just(None), (1u64..1 << 40).prop_map(Some)]
    }

    proptest! {
        /// The webhook's patch of a new pod and the in-place resources agree: applying the webhook's JSON
        /// patch to a pod with `current` gives exactly `container_resources`.
        #[test]
        fn the_webhook_and_the_resize_agree(
            cr in opt(), mr in opt(), cl in opt(), ml in opt(),
            pc in opt(), pm in opt(), ca in action(), ma in action(),
        ) {
            let current = res(cr, mr, cl, ml);
            let p = plan_of(pc, pm, ca, ma);
            let want = container_resources(&p, &current);
            let list = |r: &Resources| r.to_list().map(|l| json!(l));
            let mut resources = serde_json::Map::new();
            if let Some(l) = list(&current.requests) { resources.insert("requests".into(), l); }
            if let Some(l) = list(&current.limits) { resources.insert("limits".into(), l); }
            let mut pod = json!({"metadata": {"name": "p", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]},
                "spec": {"containers": [{"name": "app", "resources": resources}]}});
            let autoscaler = crate::Autoscaler {
                namespace: "ns".into(), name: "web".into(),
                target: crate::TargetRef { group: "apps".into(), kind: "StatefulSet".into(), name: "web".into() },
                preview: false,
                vertical: Some(crate::VerticalPatch { plan: VerticalPlan { containers: vec![p], limited: vec![], changed: false, version: "v".into() }, rec_id: "v".into() }),
                error: None,
            };
            let out = crate::mutate_pod("ns", &pod, &[std::sync::Arc::new(autoscaler)][..]).unwrap();
            let patch: json_patch::Patch = serde_json::from_value(out.patch().unwrap().clone()).unwrap();
            json_patch::patch(&mut pod, &patch).unwrap();
            let r = &pod["spec"]["containers"][0]["resources"];
            let parse = |v: &serde_json::Value, k: &str, res: Resource| v.get(k).and_then(|m| m.get(res.name())).and_then(|q| q.as_str()).map(|q| res.parse(q).unwrap());
            let got = CurrentResources {
                requests: Resources { cpu_millicores: parse(r, "requests", Resource::Cpu), memory_bytes: parse(r, "requests", Resource::Memory) },
                limits: Resources { cpu_millicores: parse(r, "limits", Resource::Cpu), memory_bytes: parse(r, "limits", Resource::Memory) },
            };
            prop_assert_eq!(got, want);
        }

        /// A resize never leaves a request above its limit when the pod was valid.
        #[test]
        fn resized_containers_stay_valid(
            cr in 1u64..1 << 30, mr in 1u64..1 << 30, extra in 0u64..1 << 30,
            pc in opt(), pm in opt(), ca in action(), ma in action(),
        ) {
            // as `apply_constraints` builds plans: a limit is set only next to a request
            let realistic = |req: Option<u64>, a: LimitAction| match (req, a) {
                (None, LimitAction::Set(_)) => LimitAction::Untouched,
                (_, a) => a,
            };
            let current = res(Some(cr), Some(mr), Some(cr + extra), Some(mr + extra));
            let new = container_resources(&plan_of(pc, pm, realistic(pc, ca), realistic(pm, ma)), &current);
            for r in Resource::ALL {
                if let (Some(req), Some(lim)) = (new.requests.get(r), new.limits.get(r)) {
                    prop_assert!(req <= lim, "{:?}: {} > {}", r, req, lim);
                }
            }
        }
    }

    fn view(cpu: u64, mem: u64, mem_limit: Option<u64>) -> Vec<(String, CurrentResources)> {
        vec![("app".to_owned(), res(Some(cpu), Some(mem), None, mem_limit))]
    }

    #[test]
    fn the_gate_applies_raises_at_once_waits_to_lower_and_holds_small_moves() {
        let g = UpdateGate::default();
        let h = |n: u64| Some(Duration::from_secs(n * 3600));
        let old = view(1000, 1000, None);
        use GateDecision::{Apply, Hold};
        let cases = [
            (vec![], view(500, 500, None), h(0), Apply(GateReason::First)),
            (old.clone(), view(500, 500, None), None, Apply(GateReason::First)),
            (
                old.clone(),
                view(1000, 1000, Some(1200)),
                h(0),
                Apply(GateReason::Shape),
            ),
            (old.clone(), vec![], h(0), Apply(GateReason::Shape)),
            (
                old.clone(),
                view(1100, 1000, None),
                h(0),
                Apply(GateReason::Raise),
            ),
            (old.clone(), view(950, 1100, None), h(0), Apply(GateReason::Raise)),
            (old.clone(), view(900, 1000, None), h(0), Hold(GateReason::Lower)),
            (old.clone(), view(900, 1000, None), h(1), Apply(GateReason::Lower)),
            (
                old.clone(),
                view(1000, 1090, None),
                h(23),
                Hold(GateReason::Small),
            ),
            (
                old.clone(),
                view(1000, 1090, None),
                h(24),
                Apply(GateReason::Small),
            ),
            (
                old.clone(),
                view(1000, 1000, None),
                h(100),
                Hold(GateReason::Same),
            ),
        ];
        for (i, (a, b, age, want)) in cases.into_iter().enumerate() {
            assert_eq!(gate(&a, &b, age, &g), want, "case {i}");
        }
        // another container: a shape change
        let mut two = old.clone();
        two.push(("proxy".to_owned(), res(Some(10), None, None, None)));
        assert_eq!(gate(&old, &two, h(0), &g), Apply(GateReason::Shape));
        // a limit the plan sets (the OOM ratchet) counts like a request
        let limited = view(1000, 1000, Some(1000));
        assert_eq!(
            gate(&limited, &view(1000, 1000, Some(1200)), h(0), &g),
            Apply(GateReason::Raise)
        );
    }

    #[test]
    fn gate_values_compare_set_limits_and_refuse_other_limit_changes() {
        let plan = |limit: LimitAction, mem: u64| VerticalPlan {
            containers: vec![plan_of(Some(100), Some(mem), LimitAction::Proportional, limit)],
            limited: vec![],
            changed: false,
            version: "v".into(),
        };
        let (a, b) = gate_values(
            &plan(LimitAction::Set(500), 400),
            &plan(LimitAction::Set(600), 400),
        )
        .unwrap();
        assert_eq!(
            (a[0].1.limits.memory_bytes, b[0].1.limits.memory_bytes),
            (Some(500), Some(600))
        );
        assert_eq!(b[0].1.requests.memory_bytes, Some(400));
        assert!(
            gate_values(
                &plan(LimitAction::Proportional, 400),
                &plan(LimitAction::Set(600), 400)
            )
            .is_none()
        );
        assert!(
            gate_values(
                &plan(LimitAction::Proportional, 400),
                &plan(LimitAction::Remove, 400)
            )
            .is_none()
        );
        let mut other = plan(LimitAction::Proportional, 400);
        other.containers[0].name = "other".into();
        assert!(gate_values(&plan(LimitAction::Proportional, 400), &other).is_none());
        let (a, b) = gate_values(
            &plan(LimitAction::Proportional, 400),
            &plan(LimitAction::Proportional, 420),
        )
        .unwrap();
        assert_eq!(
            gate(&a, &b, Some(Duration::ZERO), &UpdateGate::default()),
            GateDecision::Hold(GateReason::Small)
        );
    }

    fn gate_settings() -> impl proptest::strategy::Strategy<Value = UpdateGate> {
        (0.0f64..0.5, 0u64..48, 0u64..96).prop_map(|(c, lower, max)| UpdateGate {
            min_change: c,
            min_age_to_lower: Duration::from_secs(lower * 3600),
            max_age: Duration::from_secs(max * 3600),
        })
    }

    proptest! {
        /// The gate holds only what it promises to hold: no value rises by `min_change` or more, a value
        /// that falls by that much only while the target in force is younger than `min_age_to_lower`, and
        /// small moves only while it is younger than `max_age`; an older target in force never turns an
        /// Apply into a Hold.
        #[test]
        fn the_gate_holds_only_small_moves_and_young_lowerings(
            old in proptest::collection::vec((1u64..1 << 20, 1u64..1 << 30), 1..3),
            factor in proptest::collection::vec((0.5f64..2.0, 0.5f64..2.0), 3),
            age in 0u64..200_000,
            later in 0u64..200_000,
            g in gate_settings(),
        ) {
            let name = |i: usize| format!("c{i}");
            let a: Vec<(String, CurrentResources)> = old.iter().enumerate()
                .map(|(i, (c, m))| (name(i), res(Some(*c), Some(*m), None, None))).collect();
            let b: Vec<(String, CurrentResources)> = old.iter().enumerate()
                .map(|(i, (c, m))| {
                    let (fc, fm) = factor[i];
                    (name(i), res(Some((*c as f64 * fc) as u64), Some((*m as f64 * fm) as u64), None, None))
                }).collect();
            let age_d = Duration::from_secs(age);
            let d = gate(&a, &b, Some(age_d), &g);
            let moves: Vec<(u64, u64)> = a.iter().zip(&b).flat_map(|((_, x), (_, y))| {
                [(x.requests.cpu_millicores.unwrap_or(0), y.requests.cpu_millicores.unwrap_or(0)),
                 (x.requests.memory_bytes.unwrap_or(0), y.requests.memory_bytes.unwrap_or(0))]
            }).collect();
            let big = |o: u64, v: u64| o.abs_diff(v) as f64 >= g.min_change * o.max(1) as f64;
            let raise = moves.iter().any(|&(o, v)| v > o && big(o, v));
            let lower = moves.iter().any(|&(o, v)| v < o && big(o, v));
            let same = moves.iter().all(|&(o, v)| o == v);
            if raise {
                prop_assert!(d.applies(), "{d:?}");
            }
            if !d.applies() {
                prop_assert!(!raise);
                prop_assert!(same || (lower && age_d < g.min_age_to_lower) || (!lower && age_d < g.max_age), "{d:?}");
            }
            if d.applies() {
                prop_assert!(gate(&a, &b, Some(age_d + Duration::from_secs(later)), &g).applies());
            }
        }
    }
}
