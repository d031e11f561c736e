//! The DPA's container constraints applied to desired resources, the resources hash, and the
//! `status.vertical.target` value with its conditions.
//!
//! Rules (DatadogPodAutoscaler `spec.constraints.containers[]`, `spec.options.burstable`):
//!
//! - A container's entry is the one with its exact name, else the `*` entry, else none (defaults).
//! - `enabled: false` drops the container: it gets no recommendation and the webhook leaves it alone.
//! - `controlledResources` (default `cpu` and `memory`, empty list = none) keeps only those resources;
//!   the others are neither requested nor limited.
//! - `minAllowed`/`maxAllowed` (or the deprecated `requests.minAllowed`/`maxAllowed` for resources the
//!   new fields do not name) clamp the requests; a clamp is reported as a [`Limitation`]
//!   (→ `VerticalScalingLimited`).
//! - `controlledValues`:
//!   - `RequestsAndLimits` (default): an explicit desired limit is kept, raised to the request if below
//!     it; without one the webhook scales the pod's existing limit by the same factor as the request
//!     (the request/limit ratio is kept) — [`LimitAction::Proportional`].
//!   - `RequestsOnly`: limits are not touched ([`LimitAction::Untouched`]; the webhook then caps the
//!     request at an existing limit so the pod stays valid), except that an explicit desired **memory**
//!     limit raises an existing memory limit to at least that value ([`LimitAction::AtLeast`]): the OOM
//!     ratchet ([`crate::oom`]), which `RequestsOnly` does not suppress (`dpa-system.md` §8). The local
//!     recommender sets an explicit memory limit only after an OOM kill.
//!   - `CPURequestsRemoveLimitsMemoryRequestsAndLimits`: the CPU limit is removed, memory as
//!     `RequestsAndLimits`.
//! - `burstable` (DPA option, else the agent default): the CPU limit is removed.
//!
//! The version (rec-id) is a stable hash (SHA-256, 16 hex digits) of the resulting plan: the same desired
//! resources under the same constraints always give the same version, on every replica and across
//! restarts.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use lazyscale_api::consts::conditions;
use lazyscale_api::{
    Constraints, ContainerConstraints, ContainerResources, ContainerRuntime, ControlledValues,
    DatadogPodAutoscaler, ResourceList, VerticalRecommendation,
};
use sha2::{Digest, Sha256};

use crate::quantity::{
    QuantityError, cpu_quantity, format_cpu_millis, format_memory_bytes, memory_quantity, parse_millis,
    parse_units,
};
use crate::recommender::WorkloadRecommendation;

/// A resource the vertical autoscaler controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// CPU, in millicores.
    Cpu,
    /// Memory, in bytes.
    Memory,
}

impl Resource {
    /// Both resources, CPU first.
    pub const ALL: [Resource; 2] = [Resource::Cpu, Resource::Memory];

    /// The Kubernetes resource name (`cpu`, `memory`).
    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        }
    }

    /// Parses a quantity of this resource into its unit.
    pub fn parse(self, s: &str) -> Result<u64, QuantityError> {
        match self {
            Resource::Cpu => parse_millis(s),
            Resource::Memory => parse_units(s),
        }
    }

    /// Formats an amount of this resource as a quantity string.
    pub fn format(self, v: u64) -> String {
        match self {
            Resource::Cpu => format_cpu_millis(v),
            Resource::Memory => format_memory_bytes(v),
        }
    }

    /// The resource named `name` (`cpu`, `memory`), if this crate controls it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "cpu" => Some(Resource::Cpu),
            "memory" => Some(Resource::Memory),
            _ => None,
        }
    }
}

/// Amounts of CPU (millicores) and memory (bytes); `None` = not set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// CPU in millicores.
    pub cpu_millicores: Option<u64>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
}

impl Resources {
    /// The amount of `r`.
    pub fn get(&self, r: Resource) -> Option<u64> {
        match r {
            Resource::Cpu => self.cpu_millicores,
            Resource::Memory => self.memory_bytes,
        }
    }

    /// Sets the amount of `r`.
    pub fn set(&mut self, r: Resource, v: Option<u64>) {
        match r {
            Resource::Cpu => self.cpu_millicores = v,
            Resource::Memory => self.memory_bytes = v,
        }
    }

    /// True when neither resource is set.
    pub fn is_empty(&self) -> bool {
        self.cpu_millicores.is_none() && self.memory_bytes.is_none()
    }

    /// Parses the `cpu` and `memory` entries of a resource list (other resources are ignored).
    pub fn from_list(list: Option<&ResourceList>) -> Result<Self, QuantityError> {
        let mut out = Self::default();
        if let Some(list) = list {
            for r in Resource::ALL {
                if let Some(q) = list.get(r.name()) {
                    out.set(r, Some(r.parse(&q.0)?));
                }
            }
        }
        Ok(out)
    }

    /// The set amounts as a resource list (`None` when empty).
    pub fn to_list(&self) -> Option<ResourceList> {
        let mut list = ResourceList::new();
        if let Some(c) = self.cpu_millicores {
            list.insert("cpu".into(), cpu_quantity(c));
        }
        if let Some(m) = self.memory_bytes {
            list.insert("memory".into(), memory_quantity(m));
        }
        (!list.is_empty()).then_some(list)
    }
}

/// What the webhook does with a container's limit of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitAction {
    /// Leave the pod's limit as it is (the request is capped at it).
    Untouched,
    /// Scale the pod's existing limit by the factor its request changes (keep the ratio); no limit stays
    /// no limit.
    Proportional,
    /// Set this limit (at least the request).
    Set(u64),
    /// Remove the limit.
    Remove,
    /// Raise an existing limit to at least this value, never lower it (the request is capped at the
    /// result); no limit stays no limit.
    AtLeast(u64),
}

/// Desired resources of one container, before constraints: from the local recommender
/// ([`DesiredContainer::from_recommendation`]) or from a DPA's `status.vertical.target`
/// ([`DesiredContainer::from_status`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredContainer {
    /// Container name.
    pub name: String,
    /// Desired requests.
    pub requests: Resources,
    /// Desired limits (explicit; usually none from the local recommender).
    pub limits: Resources,
    /// Desired `GOMEMLIMIT`, verbatim.
    pub gomemlimit: Option<String>,
}

impl DesiredContainer {
    /// The targets of a local recommendation: requests, and the memory limit of the OOM ratchet when one
    /// is active.
    pub fn from_recommendation(rec: &WorkloadRecommendation) -> Vec<Self> {
        rec.containers
            .iter()
            .map(|c| Self {
                name: c.name.clone(),
                requests: Resources {
                    cpu_millicores: c.cpu_millicores.map(|e| e.target),
                    memory_bytes: c.memory_bytes.map(|e| e.target),
                },
                // the OOM ratchet, the only limit the local recommender sets
                limits: Resources {
                    cpu_millicores: None,
                    memory_bytes: c.memory_limit_bytes,
                },
                gomemlimit: None,
            })
            .collect()
    }

    /// The desired resources of a DPA's vertical target (`status.vertical.target.desiredResources`).
    pub fn from_status(resources: &[ContainerResources]) -> Result<Vec<Self>, ConstraintError> {
        resources
            .iter()
            .map(|c| {
                let quantity = |e| ConstraintError::Quantity {
                    container: c.name.clone(),
                    error: e,
                };
                Ok(Self {
                    name: c.name.clone(),
                    requests: Resources::from_list(c.requests.as_ref()).map_err(quantity)?,
                    limits: Resources::from_list(c.limits.as_ref()).map_err(quantity)?,
                    gomemlimit: c.runtime.as_ref().and_then(|r| r.gomemlimit.clone()),
                })
            })
            .collect()
    }
}

/// The resources the webhook gives one container.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerPlan {
    /// Container name.
    pub name: String,
    /// Requests to set (`None` = leave the pod's request).
    pub requests: Resources,
    /// What to do with the CPU limit.
    pub cpu_limit: LimitAction,
    /// What to do with the memory limit.
    pub memory_limit: LimitAction,
    /// `GOMEMLIMIT` environment variable to set.
    pub gomemlimit: Option<String>,
}

impl ContainerPlan {
    /// The limit action of `r`.
    pub fn limit(&self, r: Resource) -> LimitAction {
        match r {
            Resource::Cpu => self.cpu_limit,
            Resource::Memory => self.memory_limit,
        }
    }

    fn limit_mut(&mut self, r: Resource) -> &mut LimitAction {
        match r {
            Resource::Cpu => &mut self.cpu_limit,
            Resource::Memory => &mut self.memory_limit,
        }
    }

    /// The explicit limits of the plan (as written in `desiredResources[].limits`).
    pub fn explicit_limits(&self) -> Resources {
        let mut out = Resources::default();
        for r in Resource::ALL {
            if let LimitAction::Set(v) | LimitAction::AtLeast(v) = self.limit(r) {
                out.set(r, Some(v));
            }
        }
        out
    }
}

/// Which bound clamped a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Raised to `minAllowed`.
    MinAllowed,
    /// Lowered to `maxAllowed`.
    MaxAllowed,
}

/// A request changed by `minAllowed`/`maxAllowed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limitation {
    /// Container name.
    pub container: String,
    /// Resource clamped.
    pub resource: Resource,
    /// The desired request.
    pub desired: u64,
    /// The request after clamping.
    pub applied: u64,
    /// The bound that applied.
    pub bound: Bound,
}

impl std::fmt::Display for Limitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (verb, bound) = match self.bound {
            Bound::MinAllowed => ("raised", "minAllowed"),
            Bound::MaxAllowed => ("lowered", "maxAllowed"),
        };
        write!(
            f,
            "container {}: {} request {} {verb} to {bound} {}",
            self.container,
            self.resource.name(),
            self.resource.format(self.desired),
            self.resource.format(self.applied),
        )
    }
}

/// Desired resources after constraints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerticalPlan {
    /// Per-container plans, sorted by name, disabled containers left out.
    pub containers: Vec<ContainerPlan>,
    /// Requests changed by `minAllowed`/`maxAllowed`.
    pub limited: Vec<Limitation>,
    /// True when the constraints changed anything (clamp, dropped container, resource or limit, limit
    /// raised to the request, limit replaced by a removal).
    pub changed: bool,
    /// Stable hash of `containers` ([`resources_hash`]).
    pub version: String,
}

impl VerticalPlan {
    /// The plan of container `name`.
    pub fn container(&self, name: &str) -> Option<&ContainerPlan> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// Sum of the CPU requests (millicores) and of the memory requests (bytes) of the plan.
    pub fn pod_requests(&self) -> (u64, u64) {
        self.containers.iter().fold((0u64, 0u64), |(c, m), p| {
            (
                c.saturating_add(p.requests.cpu_millicores.unwrap_or(0)),
                m.saturating_add(p.requests.memory_bytes.unwrap_or(0)),
            )
        })
    }

    /// `status.vertical.target.desiredResources`: requests, explicit limits and runtime per container.
    pub fn desired_resources(&self) -> Vec<ContainerResources> {
        self.containers
            .iter()
            .map(|c| ContainerResources {
                name: c.name.clone(),
                requests: c.requests.to_list(),
                limits: c.explicit_limits().to_list(),
                runtime: c.gomemlimit.as_ref().map(|g| ContainerRuntime {
                    gomemlimit: Some(g.clone()),
                }),
            })
            .collect()
    }
}

/// Invalid constraints or desired resources.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConstraintError {
    /// Two `constraints.containers[]` entries have the same name.
    #[error("constraints name container {0:?} twice")]
    DuplicateContainer(String),
    /// `minAllowed` is above `maxAllowed`.
    #[error("container {container:?}: {resource} minAllowed is above maxAllowed")]
    MinAboveMax {
        /// Container entry name.
        container: String,
        /// Resource name.
        resource: &'static str,
    },
    /// A quantity cannot be parsed.
    #[error("container {container:?}: {error}")]
    Quantity {
        /// Container (or constraint entry) name.
        container: String,
        /// The parse error.
        #[source]
        error: QuantityError,
    },
}

/// The `burstable` setting of a DPA: `spec.options.burstable`, else the agent default.
pub fn effective_burstable(dpa: &DatadogPodAutoscaler, agent_default: bool) -> bool {
    dpa.spec
        .options
        .as_ref()
        .and_then(|o| o.burstable)
        .unwrap_or(agent_default)
}

/// Bounds of one constraint entry, parsed.
struct Bounds {
    min: Resources,
    max: Resources,
}

fn entry_bounds(c: &ContainerConstraints) -> Result<Bounds, ConstraintError> {
    let quantity = |e| ConstraintError::Quantity {
        container: c.name.clone(),
        error: e,
    };
    let deprecated = c.requests.as_ref();
    let mut min = Resources::from_list(c.min_allowed.as_ref()).map_err(quantity)?;
    let mut max = Resources::from_list(c.max_allowed.as_ref()).map_err(quantity)?;
    let old_min = Resources::from_list(deprecated.and_then(|d| d.min_allowed.as_ref())).map_err(quantity)?;
    let old_max = Resources::from_list(deprecated.and_then(|d| d.max_allowed.as_ref())).map_err(quantity)?;
    for r in Resource::ALL {
        if min.get(r).is_none() {
            min.set(r, old_min.get(r));
        }
        if max.get(r).is_none() {
            max.set(r, old_max.get(r));
        }
        if let (Some(lo), Some(hi)) = (min.get(r), max.get(r))
            && lo > hi
        {
            return Err(ConstraintError::MinAboveMax {
                container: c.name.clone(),
                resource: r.name(),
            });
        }
    }
    Ok(Bounds { min, max })
}

/// The constraint entry of container `name`: exact name, else `*`.
pub fn container_constraints<'a>(
    constraints: Option<&'a Constraints>,
    name: &str,
) -> Option<&'a ContainerConstraints> {
    let entries = constraints?.containers.as_deref()?;
    entries.iter().find(|c| c.name == name).or_else(|| {
        entries
            .iter()
            .find(|c| c.name == lazyscale_api::consts::CONTAINER_WILDCARD)
    })
}

/// Applies `constraints` (and the burstable option) to the desired resources. Desired containers are
/// taken in name order; a repeated name keeps its first occurrence.
pub fn apply_constraints(
    desired: &[DesiredContainer],
    constraints: Option<&Constraints>,
    burstable: bool,
) -> Result<VerticalPlan, ConstraintError> {
    if let Some(entries) = constraints.and_then(|c| c.containers.as_deref()) {
        let mut seen = BTreeSet::new();
        for e in entries {
            if !seen.insert(e.name.as_str()) {
                return Err(ConstraintError::DuplicateContainer(e.name.clone()));
            }
        }
    }
    let mut sorted: Vec<&DesiredContainer> = desired.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted.dedup_by(|a, b| a.name == b.name);

    let mut containers = Vec::with_capacity(sorted.len());
    let mut limited = Vec::new();
    let mut changed = false;
    for d in sorted {
        let entry = container_constraints(constraints, &d.name);
        if entry.and_then(|e| e.enabled) == Some(false) {
            changed = true;
            continue;
        }
        let bounds = match entry {
            Some(e) => Some(entry_bounds(e)?),
            None => None,
        };
        let controlled: Vec<Resource> = match entry.and_then(|e| e.controlled_resources.as_ref()) {
            None => Resource::ALL.to_vec(),
            Some(names) => Resource::ALL
                .into_iter()
                .filter(|r| names.iter().any(|n| n == r.name()))
                .collect(),
        };
        let values = entry
            .and_then(|e| e.controlled_values)
            .unwrap_or(ControlledValues::RequestsAndLimits);
        let mut plan = ContainerPlan {
            name: d.name.clone(),
            requests: Resources::default(),
            cpu_limit: LimitAction::Untouched,
            memory_limit: LimitAction::Untouched,
            gomemlimit: d.gomemlimit.clone(),
        };
        for r in Resource::ALL {
            let desired_limit = d.limits.get(r);
            if !controlled.contains(&r) {
                changed |= d.requests.get(r).is_some() || desired_limit.is_some();
                continue;
            }
            let mut request = d.requests.get(r);
            if let (Some(v), Some(b)) = (request, bounds.as_ref()) {
                let mut applied = v;
                let mut bound = None;
                if let Some(lo) = b.min.get(r).filter(|lo| applied < *lo) {
                    applied = lo;
                    bound = Some(Bound::MinAllowed);
                }
                if let Some(hi) = b.max.get(r).filter(|hi| applied > *hi) {
                    applied = hi;
                    bound = Some(Bound::MaxAllowed);
                }
                if let Some(bound) = bound {
                    changed = true;
                    limited.push(Limitation {
                        container: d.name.clone(),
                        resource: r,
                        desired: v,
                        applied,
                        bound,
                    });
                    request = Some(applied);
                }
            }
            plan.requests.set(r, request);
            let remove = r == Resource::Cpu
                && (burstable || values == ControlledValues::CpuRequestsRemoveLimitsMemoryRequestsAndLimits);
            let action = if remove {
                changed |= desired_limit.is_some();
                LimitAction::Remove
            } else if values == ControlledValues::RequestsOnly {
                match desired_limit {
                    Some(lim) if r == Resource::Memory => LimitAction::AtLeast(lim),
                    other => {
                        changed |= other.is_some();
                        LimitAction::Untouched
                    }
                }
            } else {
                match (request, desired_limit) {
                    (Some(req), Some(lim)) => {
                        changed |= lim < req;
                        LimitAction::Set(lim.max(req))
                    }
                    (Some(_), None) => LimitAction::Proportional,
                    (None, lim) => {
                        changed |= lim.is_some();
                        LimitAction::Untouched
                    }
                }
            };
            *plan.limit_mut(r) = action;
        }
        containers.push(plan);
    }
    let version = resources_hash(&containers);
    Ok(VerticalPlan {
        containers,
        limited,
        changed,
        version,
    })
}

/// Stable hash of container plans (SHA-256 of a canonical text form, first 16 hex digits). Independent
/// of the order of `containers`.
pub fn resources_hash(containers: &[ContainerPlan]) -> String {
    let mut sorted: Vec<&ContainerPlan> = containers.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut text = String::new();
    for c in sorted {
        // Names are length-prefixed so that no name can forge a field separator.
        let _ = write!(text, "{}:{}", c.name.len(), c.name);
        for r in Resource::ALL {
            match c.requests.get(r) {
                Some(v) => {
                    let _ = write!(text, "|{}={v}", r.name());
                }
                None => {
                    let _ = write!(text, "|{}=-", r.name());
                }
            }
            let _ = match c.limit(r) {
                LimitAction::Untouched => write!(text, "|limit=keep"),
                LimitAction::Proportional => write!(text, "|limit=ratio"),
                LimitAction::Remove => write!(text, "|limit=remove"),
                LimitAction::Set(v) => write!(text, "|limit={v}"),
                LimitAction::AtLeast(v) => write!(text, "|limit>={v}"),
            };
        }
        if let Some(g) = &c.gomemlimit {
            let _ = write!(text, "|gomemlimit={}:{g}", g.len());
        }
        text.push('\n');
    }
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(digest.get(..8).unwrap_or_default())
}

/// What the controller writes for one condition: type, status, reason and message. The caller adds the
/// transition time (kept when the status does not change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionInput {
    /// Condition type (`VerticalAbleToRecommend`, `VerticalScalingLimited`).
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: &'static str,
    /// Reason, when there is one.
    pub reason: Option<&'static str>,
    /// Human-readable message.
    pub message: Option<String>,
}

impl ConditionInput {
    fn new(type_: &'static str, ok: bool, reason: Option<&'static str>, message: Option<String>) -> Self {
        Self {
            type_,
            status: if ok {
                conditions::STATUS_TRUE
            } else {
                conditions::STATUS_FALSE
            },
            reason,
            message,
        }
    }
}

/// The vertical status of a DPA computed from a recommendation.
#[derive(Debug, Clone, PartialEq)]
pub struct VerticalTargetOutcome {
    /// `status.vertical.target`, when a recommendation could be made.
    pub target: Option<VerticalRecommendation>,
    /// The plan behind the target.
    pub plan: Option<VerticalPlan>,
    /// The `VerticalAbleToRecommend` condition.
    pub able_to_recommend: ConditionInput,
    /// The `VerticalScalingLimited` condition.
    pub scaling_limited: ConditionInput,
}

/// Computes `status.vertical.target` from a local recommendation (`None` when there is no history yet),
/// the DPA's constraints and burstable setting: `desiredResources` (requests, explicit limits, runtime),
/// `podCPURequest`/`podMemoryRequest` (sums), `version` (the resources hash), `generatedAt` and `source`
/// (for example [`lazyscale_api::consts::value_sources::LOCAL`]).
pub fn vertical_target(
    recommendation: Option<&WorkloadRecommendation>,
    constraints: Option<&Constraints>,
    burstable: bool,
    source: &str,
    generated_at: Timestamp,
) -> VerticalTargetOutcome {
    use conditions::reasons;
    let not_limited = ConditionInput::new(conditions::VERTICAL_SCALING_LIMITED, false, None, None);
    let fail = |reason, message: String| VerticalTargetOutcome {
        target: None,
        plan: None,
        able_to_recommend: ConditionInput::new(
            conditions::VERTICAL_ABLE_TO_RECOMMEND,
            false,
            Some(reason),
            Some(message),
        ),
        scaling_limited: not_limited.clone(),
    };
    let Some(rec) = recommendation else {
        return fail(
            reasons::RECOMMENDATION_ERROR,
            "no usage history yet for the target's containers".into(),
        );
    };
    let desired = DesiredContainer::from_recommendation(rec);
    let plan = match apply_constraints(&desired, constraints, burstable) {
        Ok(p) => p,
        Err(e) => return fail(reasons::INVALID_SPEC, e.to_string()),
    };
    if plan.containers.iter().all(|c| c.requests.is_empty()) {
        return fail(
            reasons::LIMITED_BY_CONSTRAINT,
            "the constraints exclude every container with usage history".into(),
        );
    }
    let (cpu, memory) = plan.pod_requests();
    let target = VerticalRecommendation {
        source: lazyscale_api::Word::new(source),
        generated_at: Some(Time(generated_at)),
        version: plan.version.clone(),
        scaled: None,
        evicted: None,
        desired_resources: plan.desired_resources(),
        pod_cpu_request: cpu_quantity(cpu),
        pod_memory_request: memory_quantity(memory),
    };
    let scaling_limited = if plan.limited.is_empty() {
        not_limited
    } else {
        let message = plan
            .limited
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        ConditionInput::new(
            conditions::VERTICAL_SCALING_LIMITED,
            true,
            Some(reasons::LIMITED_BY_CONSTRAINT),
            Some(message),
        )
    };
    let containers = plan.containers.len();
    VerticalTargetOutcome {
        target: Some(target),
        plan: Some(plan),
        able_to_recommend: ConditionInput::new(
            conditions::VERTICAL_ABLE_TO_RECOMMEND,
            true,
            None,
            Some(format!("recommendation for {containers} container(s)")),
        ),
        scaling_limited,
    }
}

/// [`vertical_target`] for a DPA: its effective constraints ([`crate::apply::effective_constraints`]: the
/// H+V memory-only default) and burstable setting (`agent_burstable` when the DPA does not set one), source
/// `Local`, behind the default [`crate::apply::UpdateGate`] when its values reach pods (strategy `Auto` or
/// `TriggerRollout`, not paused, not Preview): while the gate holds, the target in force
/// (`status.vertical.target`, its version and `generatedAt`) stays, so neither the webhook nor the apply
/// path moves pods for a change the gate deems not worth it. The target in force is kept only while the
/// current constraints leave it as it is (a constraint edit applies at once). An unchanged version keeps
/// the `generatedAt` in force: it is the age the gate reads.
pub fn dpa_vertical_target(
    dpa: &DatadogPodAutoscaler,
    recommendation: Option<&WorkloadRecommendation>,
    agent_burstable: bool,
    generated_at: Timestamp,
) -> VerticalTargetOutcome {
    dpa_vertical_target_gated(
        dpa,
        recommendation,
        agent_burstable,
        generated_at,
        &crate::apply::UpdateGate::default(),
    )
}

/// [`dpa_vertical_target`] behind `gate`.
pub fn dpa_vertical_target_gated(
    dpa: &DatadogPodAutoscaler,
    recommendation: Option<&WorkloadRecommendation>,
    agent_burstable: bool,
    generated_at: Timestamp,
    gate: &crate::apply::UpdateGate,
) -> VerticalTargetOutcome {
    let constraints = crate::apply::effective_constraints(dpa);
    let burstable = effective_burstable(dpa, agent_burstable);
    let mut out = vertical_target(
        recommendation,
        constraints.as_ref(),
        burstable,
        lazyscale_api::consts::value_sources::LOCAL,
        generated_at,
    );
    let in_force = dpa
        .status
        .as_ref()
        .and_then(|s| s.vertical.as_ref())
        .and_then(|v| v.target.as_ref())
        .filter(|t| t.source == lazyscale_api::consts::value_sources::LOCAL);
    let (Some(target), Some(plan), Some(in_force)) = (out.target.as_mut(), out.plan.as_ref(), in_force)
    else {
        return out;
    };
    if target.version == in_force.version {
        target.generated_at = in_force.generated_at.clone().or(target.generated_at.take());
        return out;
    }
    // nothing reaches pods (Preview, paused, Disabled, not opted in): nothing to spare, the status shows
    // the recommendation as it is
    if matches!(crate::apply::mode(dpa).strategy, crate::apply::Strategy::Hold(_)) {
        return out;
    }
    // the target in force under the current constraints: kept only when they leave it unchanged
    let Ok(old_plan) = DesiredContainer::from_status(&in_force.desired_resources)
        .and_then(|d| apply_constraints(&d, constraints.as_ref(), burstable))
    else {
        return out;
    };
    if old_plan.version != in_force.version {
        return out;
    }
    let age = in_force
        .generated_at
        .as_ref()
        .map(|t| std::time::Duration::try_from(generated_at.duration_since(t.0)).unwrap_or_default());
    let hold = crate::apply::gate_values(&old_plan, plan)
        .is_some_and(|(old, new)| !crate::apply::gate(&old, &new, age, gate).applies());
    if hold {
        out.target = Some(in_force.clone());
        out.plan = Some(old_plan);
    }
    out
}
