//! The DatadogPodAutoscaler API as lazyscale reads and writes it: the `datadoghq.com/v1alpha2`
//! custom resources [`DatadogPodAutoscaler`] (namespaced, `dpa`) and
//! [`DatadogPodAutoscalerClusterProfile`] (cluster-scoped, `dpacp`), the well-known strings of the API
//! ([`consts`]: condition types and reasons, labels, annotations, the field managers), exact resource
//! quantities ([`quantity`]), the one wall-clock time type ([`time`]), the workload key and kind
//! ([`workload`]) and the generation of
//! our CustomResourceDefinitions ([`crds`], [`crds_yaml`]).
//!
//! The types are wire-compatible with the official CRDs shipped by the Datadog Operator: every object
//! valid under the official `v1alpha2` schema deserializes into them and serializes back without losing
//! or adding fields (except the defaults the API server would add itself), and the generated schemas
//! have the same properties, enums, defaults and validation ranges. The committed copy of the generated
//! CRDs lives in `deploy/crds/lazyscale-crds.yaml`; a test fails when it is stale.

pub mod consts;
pub mod dpa;
pub mod heap;
pub mod pod;
pub mod profile;
pub mod quantity;
mod schema;
pub mod template;
pub mod time;
pub mod word;
pub mod workload;

pub use dpa::{
    ContainerResources, ContainerRuntime, DatadogPodAutoscaler, DatadogPodAutoscalerCondition,
    DatadogPodAutoscalerOwner, DatadogPodAutoscalerSpec, DatadogPodAutoscalerStatus, HorizontalAction,
    HorizontalRecommendation, HorizontalStatus, StatusOptions, VerticalAction, VerticalRecommendation,
    VerticalStatus,
};
pub use pod::PodPhase;
pub use profile::{
    DatadogPodAutoscalerClusterProfile, DatadogPodAutoscalerClusterProfileSpec,
    DatadogPodAutoscalerClusterProfileStatus, builtin_profiles, is_builtin, is_generated,
};
pub use schema::QUANTITY_PATTERN;
pub use template::{
    ApmMetricsQuery, ApmMetricsStat, ApplyMode, ApplyPolicy, AutoscalerOptions, Constraints,
    ContainerConstraints, ContainerResourceConstraints, ContainerResourceObjective, ControlledValues,
    CustomQueryObjective, CustomQueryRequest, DatadogPodAutoscalerTemplate, Fallback, FallbackDirection,
    FallbackTriggers, HorizontalFallback, MetricsQuery, Objective, ObjectiveResourceName, ObjectiveType,
    ObjectiveValue, ObjectiveValueType, OutOfMemoryOptions, PodResourceObjective, ResourceList,
    ScalingPolicy, ScalingRule, ScalingRuleType, ScalingStrategySelect, TimeseriesQuery,
    TimeseriesQuerySource, UpdatePolicy, UpdateStrategy,
};
pub use word::Word;
pub use workload::{WorkloadKey, WorkloadKind, WorkloadRef};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CRDs could not be serialized to YAML.
    #[error("cannot serialize the CRDs to YAML")]
    Yaml(#[source] serde_saphyr::SerializeError),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Our CustomResourceDefinitions, DatadogPodAutoscaler first, then DatadogPodAutoscalerClusterProfile.
///
/// Each serves and stores only `v1alpha2`. The schemas are those derived from the Rust types, adjusted to
/// validate like the official ones (see the crate's `schema` module): no `nullable`, quantities with the
/// official `anyOf` and `pattern`.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [
        finish(DatadogPodAutoscaler::crd(), "DatadogPodAutoscalerList"),
        finish(
            DatadogPodAutoscalerClusterProfile::crd(),
            "DatadogPodAutoscalerClusterProfileList",
        ),
    ]
    .into()
}

fn finish(mut crd: CustomResourceDefinition, list_kind: &str) -> CustomResourceDefinition {
    crd.spec.names.list_kind = Some(list_kind.to_owned());
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            schema::normalize(schema);
            schema::add_object_root_properties(schema);
        }
    }
    crd
}

/// [`crds`] as one multi-document YAML string (documents separated by `---`), deterministic: the same
/// types always give the same bytes. This is the content of `deploy/crds/lazyscale-crds.yaml`.
pub fn crds_yaml() -> Result<String> {
    serde_saphyr::to_string_multiple(&crds()).map_err(Error::Yaml)
}
