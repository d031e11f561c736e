//! The `DatadogPodAutoscaler` custom resource (`datadoghq.com/v1alpha2`, namespaced, short name `dpa`):
//! one autoscaler for one target workload.
//!
//! The spec names the target and who owns the object (`Local`: Kubernetes is the source of truth;
//! `Remote`: the Datadog app, through Remote Config) and carries the autoscaling policy (the same fields
//! as a ClusterProfile template, see [`crate::template`]). The status reports the current horizontal and
//! vertical targets, the last actions and the conditions.

use k8s_openapi::api::autoscaling::v2::CrossVersionObjectReference;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::template::{
    ApplyPolicy, AutoscalerOptions, Constraints, DatadogPodAutoscalerTemplate, Fallback, Objective,
    ResourceList,
};
use crate::word::Word;

/// Spec of a DatadogPodAutoscaler: the target, the owner and the autoscaling policy.
// Several printer columns share a type or a name; clippy reads those as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "datadoghq.com",
    version = "v1alpha2",
    kind = "DatadogPodAutoscaler",
    namespaced,
    shortname = "dpa",
    status = "DatadogPodAutoscalerStatus",
    derive = "PartialEq",
    doc = "Autoscaler of one workload: horizontal (replicas) and vertical (container resources) scaling \
           driven by Datadog recommendations, with a local fallback.",
    printcolumn(name = "Apply Mode", type_ = "string", json_path = ".spec.applyPolicy.mode"),
    printcolumn(
        name = "Active",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Active')].status"
    ),
    printcolumn(
        name = "In Error",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Error')].status"
    ),
    printcolumn(
        name = "Desired Replicas",
        type_ = "integer",
        json_path = ".status.horizontal.target.desiredReplicas"
    ),
    printcolumn(
        name = "Generated",
        type_ = "date",
        json_path = ".status.horizontal.target.generatedAt"
    ),
    printcolumn(
        name = "Able to Scale",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='HorizontalAbleToScale')].status"
    ),
    printcolumn(
        name = "Last Scale",
        type_ = "date",
        json_path = ".status.horizontal.lastAction.time"
    ),
    printcolumn(
        name = "Target CPU Req",
        type_ = "string",
        json_path = ".status.vertical.target.podCPURequest"
    ),
    printcolumn(
        name = "Target Memory Req",
        type_ = "string",
        json_path = ".status.vertical.target.podMemoryRequest"
    ),
    printcolumn(
        name = "Generated",
        type_ = "date",
        json_path = ".status.vertical.target.generatedAt"
    ),
    printcolumn(
        name = "Able to Apply",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='VerticalAbleToApply')].status"
    ),
    printcolumn(
        name = "Last Trigger",
        type_ = "date",
        json_path = ".status.vertical.lastAction.time"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DatadogPodAutoscalerSpec {
    /// The workload to scale (`apiVersion`, `kind`, `name`, in the DPA's namespace).
    pub target_ref: CrossVersionObjectReference,

    /// Source of truth of this object; must be set at creation.
    pub owner: DatadogPodAutoscalerOwner,

    /// Version of the spec received through Remote Config (only for `owner: Remote`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i64>")]
    pub remote_version: Option<u64>,

    /// How recommendations are applied.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub apply_policy: ApplyPolicy,

    /// Targets to reach and keep. When unset the recommender uses 80 % pod CPU utilization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), extend("x-kubernetes-list-type" = "atomic"))]
    pub objectives: Option<Vec<Objective>>,

    /// Behaviour when the main recommendations are stale and local ones are used.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub fallback: Fallback,

    /// Bounds that every recommendation must respect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Constraints>,

    /// Optional behaviour changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<AutoscalerOptions>,
}

impl DatadogPodAutoscalerSpec {
    /// A spec for `target_ref` owned by `owner`, with the policy of a ClusterProfile template.
    pub fn from_template(
        target_ref: CrossVersionObjectReference,
        owner: DatadogPodAutoscalerOwner,
        template: DatadogPodAutoscalerTemplate,
    ) -> Self {
        let DatadogPodAutoscalerTemplate {
            apply_policy,
            objectives,
            fallback,
            constraints,
            options,
        } = template;
        Self {
            target_ref,
            owner,
            remote_version: None,
            apply_policy,
            objectives,
            fallback,
            constraints,
            options,
        }
    }

    /// The autoscaling policy of this spec (every field except `targetRef`, `owner`, `remoteVersion`).
    pub fn template(&self) -> DatadogPodAutoscalerTemplate {
        DatadogPodAutoscalerTemplate {
            apply_policy: self.apply_policy.clone(),
            objectives: self.objectives.clone(),
            fallback: self.fallback.clone(),
            constraints: self.constraints.clone(),
            options: self.options.clone(),
        }
    }
}

/// Which loops act on a DPA's target: the mode matrix (`dpa-system.md` §8), decided once here for the
/// horizontal controller and the vertical path (webhook and running pods) alike.
///
/// | objectives ([`DatadogPodAutoscalerSpec::horizontal_objectives`]) | `applyPolicy.update.strategy` | scaling |
/// |---|---|---|
/// | yes | unset or `Disabled` | [`Scaling::Horizontal`] |
/// | no | unset or `Disabled` | [`Scaling::Horizontal`], on the default objective (80 % pod CPU) |
/// | no | `Auto` or `TriggerRollout` | [`Scaling::Vertical`] |
/// | yes | `Auto` or `TriggerRollout` | [`Scaling::HorizontalAndVertical`] |
///
/// Vertical values (at pod creation and on running pods) need the opt-in; without it the DPA scales
/// replicas only, so the two loops never act on CPU at once by accident. `mode: Preview` and the `pause`
/// annotation freeze what the matrix allows; they do not change the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scaling {
    /// Replicas only.
    Horizontal,
    /// Resources only (no objectives, vertical updates opted in).
    Vertical,
    /// Replicas and resources (objectives, vertical updates opted in).
    HorizontalAndVertical,
}

impl Scaling {
    /// Whether the horizontal loop acts.
    pub fn horizontal(self) -> bool {
        matches!(self, Scaling::Horizontal | Scaling::HorizontalAndVertical)
    }

    /// Whether vertical values reach pods.
    pub fn vertical(self) -> bool {
        matches!(self, Scaling::Vertical | Scaling::HorizontalAndVertical)
    }
}

impl DatadogPodAutoscalerSpec {
    /// The objectives the horizontal recommender uses: `fallback.horizontal.objectives`, else
    /// `objectives`; `None` when that list is unset or empty.
    pub fn horizontal_objectives(&self) -> Option<&[Objective]> {
        self.fallback
            .horizontal
            .objectives
            .as_ref()
            .or(self.objectives.as_ref())
            .map(Vec::as_slice)
            .filter(|l| !l.is_empty())
    }

    /// Whether `applyPolicy.update.strategy` opts in to vertical updates (`Auto` or `TriggerRollout`).
    pub fn vertical_updates(&self) -> bool {
        matches!(
            self.apply_policy.update.as_ref().and_then(|u| u.strategy),
            Some(crate::template::UpdateStrategy::Auto | crate::template::UpdateStrategy::TriggerRollout)
        )
    }

    /// The mode matrix (see [`Scaling`]).
    pub fn scaling(&self) -> Scaling {
        match (self.horizontal_objectives().is_some(), self.vertical_updates()) {
            (_, false) => Scaling::Horizontal,
            (false, true) => Scaling::Vertical,
            (true, true) => Scaling::HorizontalAndVertical,
        }
    }
}

/// Source of truth of a DatadogPodAutoscaler.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatadogPodAutoscalerOwner {
    /// The Kubernetes object is the source of truth.
    Local,
    /// The Datadog app is the source of truth; the object mirrors what Remote Config sends.
    Remote,
}

// === Status ===

/// Status of a DatadogPodAutoscaler, written by the controller.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatadogPodAutoscalerStatus {
    /// Vertical scaling status, when vertical scaling is in use.
    // Boxed, like `horizontal`: the DPA index keeps every DPA in one allocation, and the two inline
    // (328 bytes) put it in jemalloc's 1,280-byte class instead of the 768-byte one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertical: Option<Box<VerticalStatus>>,

    /// Horizontal scaling status, when horizontal scaling is in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal: Option<Box<HorizontalStatus>>,

    /// Number of pods of the target observed by the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<i32>,

    /// Conditions of the autoscaler, at most one per type (Error, Active, HorizontalAbleToRecommend,
    /// HorizontalAbleToScale, HorizontalScalingLimited, VerticalAbleToRecommend, VerticalAbleToApply,
    /// VerticalScalingLimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<DatadogPodAutoscalerCondition>>,

    /// Options in effect (spec values merged with the agent-wide defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<StatusOptions>,
}

impl DatadogPodAutoscalerStatus {
    /// Heap bytes this status owns. The conditions (most of a DPA's status) are counted from their
    /// layout: the vector's buffer at its capacity, and each condition's message and owned words; their
    /// times are inline (the serde-based [`crate::heap::approx_heap_bytes`] would count each as a
    /// string). The `vertical` and `horizontal` parts are their boxes plus that estimate of what they
    /// own.
    pub fn heap_bytes(&self) -> usize {
        use crate::heap::{alloc_bytes, approx_heap_bytes};
        use std::mem::size_of;
        let conditions = self.conditions.as_ref().map_or(0, |cs| {
            alloc_bytes(cs.capacity() * size_of::<DatadogPodAutoscalerCondition>())
                + cs.iter()
                    .map(DatadogPodAutoscalerCondition::heap_bytes)
                    .sum::<usize>()
        });
        let vertical = self.vertical.as_deref().map_or(0, |v| {
            alloc_bytes(size_of::<VerticalStatus>()) + approx_heap_bytes(v)
        });
        let horizontal = self.horizontal.as_deref().map_or(0, |h| {
            alloc_bytes(size_of::<HorizontalStatus>()) + approx_heap_bytes(h)
        });
        conditions + vertical + horizontal
    }

    /// The condition of type `type_`, if present.
    pub fn condition(&self, type_: &str) -> Option<&DatadogPodAutoscalerCondition> {
        self.conditions.as_deref()?.iter().find(|c| c.type_ == type_)
    }
}

/// A condition of a DatadogPodAutoscaler.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatadogPodAutoscalerCondition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: Word,

    /// `True`, `False` or `Unknown`.
    pub status: Word,

    /// Last time the status changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,

    /// Machine-readable reason of the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Word>,

    /// Human-readable details.
    // A boxed `str` (16 bytes, its allocation exactly its length), not a `String` (24): the DPA index
    // keeps up to eight conditions per DPA, and at 88 bytes six of them fit jemalloc's 640-byte class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Box<str>>,
}

impl DatadogPodAutoscalerCondition {
    /// Heap bytes this condition owns: its message and the words that are not of the vocabulary.
    pub fn heap_bytes(&self) -> usize {
        self.type_.heap_bytes()
            + self.status.heap_bytes()
            + self.reason.as_ref().map_or(0, Word::heap_bytes)
            + self.message.as_deref().map_or(0, crate::heap::string_bytes)
    }
}

/// Options in effect for an autoscaler.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusOptions {
    /// Effective burstable setting (spec value, else the agent-wide default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burstable: Option<bool>,
}

/// Horizontal scaling status.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HorizontalStatus {
    /// The recommendation currently aimed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<HorizontalRecommendation>,

    /// The last successful scaling actions (the controller keeps 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_actions: Option<Vec<HorizontalAction>>,

    /// The most recent recommendations (used for stabilization).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recommendations: Option<Vec<HorizontalRecommendation>>,
}

/// A horizontal recommendation.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HorizontalRecommendation {
    /// Where the value comes from: Autoscaling, Manual, Local or External.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Word>,

    /// When the recommendation was generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_at: Option<Time>,

    /// Recommended replica count.
    pub desired_replicas: i32,
}

/// A horizontal scaling action.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HorizontalAction {
    /// When the action happened.
    pub time: Time,

    /// Replica count before the action.
    #[serde(rename = "replicas")]
    pub from_replicas: i32,

    /// Replica count after the action.
    pub to_replicas: i32,

    /// Replica count recommended (differs from `toReplicas` when the action was limited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_replicas: Option<i32>,

    /// Why the action was limited, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limited_reason: Option<Word>,
}

/// Vertical scaling status.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VerticalStatus {
    /// The recommendation currently aimed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<VerticalRecommendation>,

    /// The last successful vertical action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<VerticalAction>,
}

/// A vertical recommendation.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VerticalRecommendation {
    /// Where the values come from: Autoscaling, Manual, Local or External.
    pub source: Word,

    /// When the recommendation was generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_at: Option<Time>,

    /// Version of the recommendation (a hash of the container resources).
    pub version: String,

    /// Number of pods running with the desired resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaled: Option<i32>,

    /// Number of pods evicted as in-place resize fallback for this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted: Option<i32>,

    /// Desired resources per container.
    pub desired_resources: Vec<ContainerResources>,

    /// Sum of the CPU requests of the containers (for display).
    #[serde(rename = "podCPURequest")]
    pub pod_cpu_request: Quantity,

    /// Sum of the memory requests of the containers (for display).
    #[serde(rename = "podMemoryRequest")]
    pub pod_memory_request: Quantity,
}

/// Desired resources of one container.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerResources {
    /// Container name.
    pub name: String,

    /// Desired limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceList>,

    /// Desired requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceList>,

    /// Runtime settings of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<ContainerRuntime>,
}

/// Runtime settings of a container.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRuntime {
    /// Value of the `GOMEMLIMIT` environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gomemlimit: Option<String>,
}

/// A vertical action.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VerticalAction {
    /// When the action happened.
    pub time: Time,

    /// Version of the recommendation applied.
    pub version: String,

    /// Kind of action: RolloutTriggered, ResizeTriggered or ResizeCompleted.
    #[serde(rename = "type")]
    pub type_: Word,
}

/// Drops from a DPA's metadata what only the API server and kubectl use: `managedFields` (one entry per
/// writer, each a tree of the fields it owns; most of a stored DPA once the agent's status writers have
/// applied theirs) and `kubectl apply`'s copy of the last applied object. The agent reads neither: its
/// writers apply their own fields by server-side apply, which needs no local copy of the ownership. The
/// DPA index keeps every DPA this way (in a 200-DPA bench run this was 8.1 KB of the 10.4 KB each held).
pub fn strip_bookkeeping(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(crate::consts::annotations::LAST_APPLIED_CONFIGURATION);
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(extra: serde_json::Value) -> DatadogPodAutoscalerSpec {
        let mut v = serde_json::json!({
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "owner": "Local",
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn apply_mode_names_are_the_wire_names() {
        for m in [crate::ApplyMode::Apply, crate::ApplyMode::Preview] {
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
    }

    #[test]
    fn the_mode_matrix() {
        let cpu = serde_json::json!([{"type": "PodResource", "podResource": {"name": "cpu",
            "value": {"type": "Utilization", "utilization": 70}}}]);
        let strategies = [
            (None, false),
            (Some("Disabled"), false),
            (Some("Auto"), true),
            (Some("TriggerRollout"), true),
        ];
        for (strategy, opted_in) in strategies {
            let policy = match strategy {
                Some(s) => serde_json::json!({"update": {"strategy": s}}),
                None => serde_json::json!({}),
            };
            for objectives in [
                serde_json::json!({}),
                serde_json::json!({"objectives": cpu}),
                serde_json::json!({"fallback": {"horizontal": {"objectives": cpu}}}),
            ] {
                let has = objectives.as_object().is_some_and(|o| !o.is_empty());
                let mut extra = objectives.clone();
                extra["applyPolicy"] = policy.clone();
                let s = spec(extra);
                let want = match (has, opted_in) {
                    (_, false) => Scaling::Horizontal,
                    (false, true) => Scaling::Vertical,
                    (true, true) => Scaling::HorizontalAndVertical,
                };
                assert_eq!(s.scaling(), want, "{strategy:?} {objectives}");
                assert_eq!(s.vertical_updates(), opted_in);
                assert_eq!(s.scaling().vertical(), opted_in);
                assert_eq!(s.scaling().horizontal(), has || !opted_in);
            }
        }
        // Preview freezes, it does not change the matrix
        let preview =
            spec(serde_json::json!({"applyPolicy": {"mode": "Preview", "update": {"strategy": "Auto"}}}));
        assert_eq!(preview.scaling(), Scaling::Vertical);
    }

    #[test]
    fn horizontal_objectives_prefer_the_fallback_list_and_ignore_empty_ones() {
        let cpu = serde_json::json!([{"type": "PodResource", "podResource": {"name": "cpu",
            "value": {"type": "Utilization", "utilization": 70}}}]);
        let mem = serde_json::json!([{"type": "PodResource", "podResource": {"name": "memory",
            "value": {"type": "Utilization", "utilization": 60}}}]);
        let s = spec(serde_json::json!({"objectives": cpu, "fallback": {"horizontal": {"objectives": mem}}}));
        let names: Vec<_> = s
            .horizontal_objectives()
            .unwrap()
            .iter()
            .map(|o| o.pod_resource.as_ref().unwrap().name)
            .collect();
        assert_eq!(names, vec![crate::template::ObjectiveResourceName::Memory]);
        let empty = spec(serde_json::json!({"fallback": {"horizontal": {"objectives": []}}}));
        assert!(empty.horizontal_objectives().is_none());
    }

    #[test]
    fn a_status_counts_its_conditions_from_their_layout() {
        let status: DatadogPodAutoscalerStatus = serde_json::from_value(serde_json::json!({
            "conditions": [
                {"type": "Active", "status": "True", "lastTransitionTime": "2026-12-06T20:18:20Z"},
                {"type": "Error", "status": "False", "lastTransitionTime": "2026-12-06T20:18:20Z"},
                {"type": "HorizontalAbleToRecommend", "status": "False", "reason": "LocalRecommenderError",
                 "message": "no Cpu requests to compute a utilization from"},
                {"type": "SomeoneElses", "status": "True", "reason": "Theirs"},
            ],
            "currentReplicas": 1,
        }))
        .unwrap();
        use crate::heap::{alloc_bytes, string_bytes};
        use std::mem::size_of;
        let conditions = status.conditions.as_ref().unwrap();
        let buffer = alloc_bytes(conditions.capacity() * size_of::<DatadogPodAutoscalerCondition>());
        let message = string_bytes("no Cpu requests to compute a utilization from");
        // the two words outside the vocabulary: a boxed str each, and its text
        let foreign = 2 * alloc_bytes(16) + string_bytes("SomeoneElses") + string_bytes("Theirs");
        assert_eq!(status.heap_bytes(), buffer + message + foreign);
        assert!(size_of::<DatadogPodAutoscalerCondition>() <= 88);
        assert!(size_of::<crate::template::Objective>() <= 80);
    }
}
