//! The `DatadogPodAutoscalerClusterProfile` custom resource (`datadoghq.com/v1alpha2`, cluster-scoped,
//! short name `dpacp`): a named autoscaling policy that workloads and namespaces opt into with the label
//! [`crate::consts::labels::PROFILE`]. For every labelled workload a DPA is generated from the profile's
//! template.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::template::DatadogPodAutoscalerTemplate;

/// Spec of a DatadogPodAutoscalerClusterProfile.
// Several printer columns share a type or a name; clippy reads those as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "datadoghq.com",
    version = "v1alpha2",
    kind = "DatadogPodAutoscalerClusterProfile",
    shortname = "dpacp",
    status = "DatadogPodAutoscalerClusterProfileStatus",
    derive = "PartialEq",
    doc = "A named autoscaling policy applied to every workload labelled with it (directly or through \
           its namespace).",
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Valid')].status"
    ),
    printcolumn(
        name = "Controlled Autoscalers",
        type_ = "integer",
        json_path = ".status.controlledAutoscalers"
    ),
    printcolumn(
        name = "Apply Mode",
        type_ = "string",
        json_path = ".spec.template.applyPolicy.mode"
    ),
    printcolumn(
        name = "Min Replicas",
        type_ = "integer",
        json_path = ".spec.template.constraints.minReplicas"
    ),
    printcolumn(
        name = "Max Replicas",
        type_ = "integer",
        json_path = ".spec.template.constraints.maxReplicas"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DatadogPodAutoscalerClusterProfileSpec {
    /// The policy copied into every DPA generated from this profile.
    pub template: DatadogPodAutoscalerTemplate,
}

/// Status of a DatadogPodAutoscalerClusterProfile, written by the profile controller.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatadogPodAutoscalerClusterProfileStatus {
    /// Conditions of the profile (type `Valid`), standard `metav1.Condition`s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::conditions_schema")]
    pub conditions: Option<Vec<Condition>>,

    /// Hash of the template last applied to the generated DPAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_hash: Option<String>,

    /// Number of DPAs generated from this profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlled_autoscalers: Option<i32>,
}

impl DatadogPodAutoscalerClusterProfileStatus {
    /// The condition of type `type_`, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.as_deref()?.iter().find(|c| c.type_ == type_)
    }
}
