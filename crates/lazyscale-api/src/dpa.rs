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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertical: Option<VerticalStatus>,

    /// Horizontal scaling status, when horizontal scaling is in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal: Option<HorizontalStatus>,

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
    pub type_: String,

    /// `True`, `False` or `Unknown`.
    pub status: String,

    /// Last time the status changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,

    /// Machine-readable reason of the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// Human-readable details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
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
    pub source: Option<String>,

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
    pub limited_reason: Option<String>,
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
    pub source: String,

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
    pub type_: String,
}
