//! The autoscaling policy shared by a DatadogPodAutoscaler spec and a ClusterProfile template: how
//! recommendations are applied ([`ApplyPolicy`]), what to aim for ([`Objective`]), what to do when the main
//! recommendations are stale ([`Fallback`]), the bounds to respect ([`Constraints`]) and optional
//! behaviour ([`AutoscalerOptions`]).
//!
//! Field names, enum values, defaults and validation ranges follow the official `v1alpha2` schema.
//! Fields the official schema defaults (`applyPolicy`, `applyPolicy.mode`, `fallback`, `fallback.horizontal`
//! and its `enabled`, `direction`, `triggers.staleRecommendationThresholdSeconds`) are plain values with a
//! serde default, so a deserialized object always carries the value the API server would have stored;
//! every other optional field is an `Option` that is left out when serialized.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A resource list (`cpu`, `memory`, ...) mapped to quantities, as in a container's requests and limits.
pub type ResourceList = BTreeMap<String, Quantity>;

/// The autoscaling policy of a ClusterProfile: every DPA spec field except `targetRef`, `owner` and
/// `remoteVersion`. A DPA generated from a profile copies it (see
/// [`DatadogPodAutoscalerSpec::from_template`](crate::DatadogPodAutoscalerSpec::from_template)).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatadogPodAutoscalerTemplate {
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

// === Apply policy ===

/// How and when recommendations are applied to the target.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplyPolicy {
    /// `Apply` acts on recommendations, `Preview` only shows them in the status.
    #[serde(default)]
    pub mode: ApplyMode,

    /// Policy for vertical updates (resource changes of the pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdatePolicy>,

    /// Policy for horizontal scale-ups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingPolicy>,

    /// Policy for horizontal scale-downs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingPolicy>,
}

/// Whether recommendations are acted on.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ApplyMode {
    /// Apply every recommendation (the default).
    #[default]
    Apply,
    /// Receive recommendations and publish them in the status, but change nothing.
    Preview,
}

impl ApplyMode {
    /// The mode's name as in the spec (`Apply`, `Preview`).
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyMode::Apply => "Apply",
            ApplyMode::Preview => "Preview",
        }
    }
}

/// Policy for vertical updates.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePolicy {
    /// How updates are applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<UpdateStrategy>,

    /// Seconds a resize may stay pending (kubelet `Deferred`) before the pod is evicted. The controller
    /// uses 600 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub resize_pending_period: Option<i32>,

    /// Seconds to wait for blocked evictions before falling back to a rollout. The controller uses 1200
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub rollout_fallback_delay: Option<i32>,
}

/// How vertical updates are applied.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpdateStrategy {
    /// In-place resize when available, else a rollout.
    Auto,
    /// Never update the pods.
    Disabled,
    /// Always apply through a rollout of the target.
    TriggerRollout,
}

/// Policy for one horizontal direction.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicy {
    /// Which rule wins when several apply; `Max` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<ScalingStrategySelect>,

    /// Limits on how fast the replica count may change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub rules: Option<Vec<ScalingRule>>,

    /// Seconds of past recommendations taken into account before acting; 0 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub stabilization_window_seconds: Option<i32>,
}

/// Which scaling rule is used.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScalingStrategySelect {
    /// The rule allowing the largest change.
    Max,
    /// The rule allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// A limit on the change of the replica count over a period.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRule {
    /// Whether `value` counts pods or a percentage.
    #[serde(rename = "type")]
    pub type_: ScalingRuleType,

    /// Change allowed per period; 0 prevents scaling in this direction.
    #[schemars(range(min = 0))]
    pub value: i32,

    /// Length in seconds of the period the rule is evaluated over.
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: i32,
}

/// Unit of a [`ScalingRule`] value.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScalingRuleType {
    /// An absolute number of pods.
    Pods,
    /// A percentage of the current replica count.
    Percent,
}

// === Objectives ===

/// A target to reach and keep; exactly the member named by `type` is expected to be set.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Objective {
    /// Which kind of objective this is.
    #[serde(rename = "type")]
    pub type_: ObjectiveType,

    /// A pod-level resource objective (`type: PodResource`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_resource: Option<PodResourceObjective>,

    /// A container-level resource objective (`type: ContainerResource`).
    // This one and `custom_query` are boxed: an objective is mostly a pod resource, and inline the two
    // made every objective 240 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_resource: Option<Box<ContainerResourceObjective>>,

    /// A custom metrics-query objective (`type: CustomQuery`; not allowed in fallback objectives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_query: Option<Box<CustomQueryObjective>>,
}

/// Kind of an [`Objective`].
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectiveType {
    /// Resource usage summed over the pod's containers.
    PodResource,
    /// Resource usage of one container.
    ContainerResource,
    /// The value of a Datadog metrics query.
    CustomQuery,
}

/// Resource measured by a resource objective.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ObjectiveResourceName {
    /// CPU.
    Cpu,
    /// Memory.
    Memory,
}

/// A pod-level resource objective.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodResourceObjective {
    /// The resource measured.
    pub name: ObjectiveResourceName,
    /// The value to keep.
    pub value: ObjectiveValue,
}

/// A container-level resource objective.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerResourceObjective {
    /// The resource measured.
    pub name: ObjectiveResourceName,
    /// The value to keep.
    pub value: ObjectiveValue,
    /// The container measured.
    pub container: String,
}

/// A custom-query objective.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomQueryObjective {
    /// The query evaluated.
    pub request: CustomQueryRequest,
    /// The value to keep.
    pub value: ObjectiveValue,
    /// Duration the query is evaluated over (Go duration syntax, for example `5m`); it should span at
    /// least one full sample.
    pub window: String,
}

/// The query of a [`CustomQueryObjective`]: one or more timeseries combined by an optional formula.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomQueryRequest {
    /// Formula combining the named queries (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formula: Option<String>,

    /// The timeseries queries (at least one).
    #[schemars(length(min = 1), extend("x-kubernetes-list-type" = "atomic"))]
    pub queries: Vec<TimeseriesQuery>,
}

/// One timeseries query; the member named by `source` is expected to be set.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TimeseriesQuery {
    /// Variable name (`a`, `b`, ...) the formula refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,

    /// Which kind of query this is.
    pub source: TimeseriesQuerySource,

    /// A metrics query (`source: Metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsQuery>,

    /// An APM metrics query (`source: ApmMetrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apm_metrics: Option<ApmMetricsQuery>,
}

/// Kind of a [`TimeseriesQuery`].
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeseriesQuerySource {
    /// A Datadog metrics query.
    Metrics,
    /// An APM metrics query.
    ApmMetrics,
}

/// A Datadog metrics query.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsQuery {
    /// The query text, for example `avg:trace.http.request.hits{service:web}`.
    #[schemars(length(min = 1))]
    pub query: String,
}

/// An APM metrics query.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApmMetricsQuery {
    /// The statistic computed.
    pub stat: ApmMetricsStat,

    /// Service queried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,

    /// Tags to group by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<Vec<String>>,

    /// Filter applied to the query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_filter: Option<String>,

    /// Operation queried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_name: Option<String>,

    /// Resource queried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,

    /// Hash identifying the resource instead of its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_hash: Option<String>,

    /// Span kind queried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_kind: Option<String>,
}

/// Statistic of an [`ApmMetricsQuery`].
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // the names are the documentation
pub enum ApmMetricsStat {
    ErrorRate,
    Errors,
    ErrorsPerSecond,
    Hits,
    HitsPerSecond,
    Apdex,
    LatencyAvg,
    LatencyMax,
    LatencyP50,
    LatencyP75,
    LatencyP90,
    LatencyP95,
    LatencyP99,
    LatencyP999,
    LatencyDistribution,
    TotalTime,
}

/// The value an objective keeps; the member named by `type` is expected to be set.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectiveValue {
    /// How the value is expressed.
    #[serde(rename = "type")]
    pub type_: ObjectiveValueType,

    /// Target usage as a percentage of the requests (`type: Utilization`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub utilization: Option<i32>,

    /// Target value per running pod (`type: AbsoluteValue`), a plain number such as `11.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute_value: Option<Quantity>,
}

/// How an [`ObjectiveValue`] is expressed.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectiveValueType {
    /// A percentage of the requests.
    Utilization,
    /// An absolute value per pod.
    AbsoluteValue,
}

// === Fallback ===

/// Behaviour when the main recommendations are stale.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    /// Horizontal fallback.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub horizontal: HorizontalFallback,
}

/// Horizontal fallback: scale on local recommendations when the main ones are stale.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HorizontalFallback {
    /// Whether local recommendations may be applied (default `true`).
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Which directions local recommendations may scale in (default `ScaleUp`).
    #[serde(default)]
    pub direction: FallbackDirection,

    /// Objectives used in fallback mode (no `CustomQuery`); the main objectives when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub objectives: Option<Vec<Objective>>,

    /// When fallback mode starts.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub triggers: FallbackTriggers,
}

impl Default for HorizontalFallback {
    fn default() -> Self {
        Self {
            enabled: true,
            direction: FallbackDirection::default(),
            objectives: None,
            triggers: FallbackTriggers::default(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// Directions in which local recommendations may scale.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FallbackDirection {
    /// Scale up only (the default).
    #[default]
    ScaleUp,
    /// Scale down only.
    ScaleDown,
    /// Both directions.
    All,
}

/// When horizontal fallback starts.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FallbackTriggers {
    /// Age in seconds after which main recommendations are stale (default 600).
    #[serde(default = "default_stale_threshold")]
    #[schemars(range(min = 100, max = 3600))]
    pub stale_recommendation_threshold_seconds: i32,
}

/// Default of [`FallbackTriggers::stale_recommendation_threshold_seconds`].
pub const DEFAULT_STALE_RECOMMENDATION_THRESHOLD_SECONDS: i32 = 600;

fn default_stale_threshold() -> i32 {
    DEFAULT_STALE_RECOMMENDATION_THRESHOLD_SECONDS
}

impl Default for FallbackTriggers {
    fn default() -> Self {
        Self {
            stale_recommendation_threshold_seconds: DEFAULT_STALE_RECOMMENDATION_THRESHOLD_SECONDS,
        }
    }
}

// === Constraints ===

/// Bounds every recommendation must respect.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Constraints {
    /// Lower bound of the replica count (1 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_replicas: Option<i32>,

    /// Upper bound of the replica count; must be at least `minReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replicas: Option<i32>,

    /// Per-container bounds of vertical recommendations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<ContainerConstraints>>,
}

/// Bounds of the vertical recommendations of one container (or of every container, with name `*`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerConstraints {
    /// Container name, or `*` for every container without an entry of its own.
    pub name: String,

    /// `false` disables vertical scaling of the container (`true` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,

    /// Resources recommendations are made for; CPU and memory when unset, none when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlled_resources: Option<Vec<String>>,

    /// Whether requests, or requests and limits, are recommended (`RequestsAndLimits` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlled_values: Option<ControlledValues>,

    /// Lower bound of the requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_allowed: Option<ResourceList>,

    /// Upper bound of the requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_allowed: Option<ResourceList>,

    /// Deprecated form of `minAllowed`/`maxAllowed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ContainerResourceConstraints>,
}

/// Deprecated bounds of a container's requests.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerResourceConstraints {
    /// Lower bound of the requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_allowed: Option<ResourceList>,

    /// Upper bound of the requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_allowed: Option<ResourceList>,
}

/// Which values of a container's resources are recommended.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlledValues {
    /// Requests and limits (the limits keep their ratio to the requests).
    RequestsAndLimits,
    /// Requests only; limits are dropped from recommendations.
    RequestsOnly,
    /// CPU: requests, and the CPU limit is removed; memory: requests and limits.
    #[serde(rename = "CPURequestsRemoveLimitsMemoryRequestsAndLimits")]
    CpuRequestsRemoveLimitsMemoryRequestsAndLimits,
}

// === Options ===

/// Optional behaviour changes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerOptions {
    /// Behaviour on out-of-memory kills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_memory: Option<OutOfMemoryOptions>,

    /// `true` removes CPU limits while keeping CPU request recommendations (Burstable QoS); when unset the
    /// agent-wide setting applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burstable: Option<bool>,
}

/// Behaviour on out-of-memory kills.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutOfMemoryOptions {
    /// Factor memory is multiplied by after an OOM kill, for example `1.2` for +20 %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bump_up_ratio: Option<Quantity>,
}
