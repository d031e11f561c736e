//! The `DatadogPodAutoscalerClusterProfile` custom resource (`datadoghq.com/v1alpha2`, cluster-scoped,
//! short name `dpacp`): a named autoscaling policy that workloads and namespaces opt into with the label
//! [`crate::consts::labels::PROFILE`]. For every labelled workload a DPA is generated from the profile's
//! template. The three built-in profiles are [`builtin_profiles`].

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::consts::{annotations, labels, profiles};
use crate::template::{
    Constraints, DatadogPodAutoscalerTemplate, Objective, ObjectiveResourceName, ObjectiveType,
    ObjectiveValue, ObjectiveValueType, PodResourceObjective,
};

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

/// Whether a DPA with this metadata was generated from a ClusterProfile: it carries the
/// [`PROFILE_HASH`](crate::consts::annotations::PROFILE_HASH) annotation. Generated DPAs are
/// reconciled like any other, but they never count as demand for the lazy stack by themselves.
pub fn is_generated(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(annotations::PROFILE_HASH))
}

/// One built-in profile: its name, the CPU utilization target and the minimum replica count.
const BUILTINS: [(&str, i32, i32); 3] = [
    (profiles::OPTIMIZE_COST, 85, 1),
    (profiles::OPTIMIZE_BALANCE, 70, 2),
    (profiles::OPTIMIZE_PERFORMANCE, 60, 3),
];

/// The built-in ClusterProfiles `datadog-optimize-cost`, `-balance` and `-performance` (pod CPU
/// utilization target 85 / 70 / 60 %, at least 1 / 2 / 3 replicas), labelled
/// [`MANAGED_BY`](labels::MANAGED_BY)`=`[`MANAGED_BY_DATADOG`](labels::MANAGED_BY_DATADOG) as the
/// Cluster Agent labels its own. Only `metadata` and `spec` are set: the objects are applied as they are.
pub fn builtin_profiles() -> Vec<DatadogPodAutoscalerClusterProfile> {
    BUILTINS
        .iter()
        .map(|&(name, utilization, min_replicas)| {
            let template = DatadogPodAutoscalerTemplate {
                objectives: Some(vec![Objective {
                    type_: ObjectiveType::PodResource,
                    pod_resource: Some(PodResourceObjective {
                        name: ObjectiveResourceName::Cpu,
                        value: ObjectiveValue {
                            type_: ObjectiveValueType::Utilization,
                            utilization: Some(utilization),
                            absolute_value: None,
                        },
                    }),
                    container_resource: None,
                    custom_query: None,
                }]),
                constraints: Some(Constraints {
                    min_replicas: Some(min_replicas),
                    max_replicas: None,
                    containers: None,
                }),
                ..Default::default()
            };
            let mut p = DatadogPodAutoscalerClusterProfile::new(
                name,
                DatadogPodAutoscalerClusterProfileSpec { template },
            );
            p.metadata.labels = Some(BTreeMap::from([(
                labels::MANAGED_BY.to_owned(),
                labels::MANAGED_BY_DATADOG.to_owned(),
            )]));
            p
        })
        .collect()
}

/// Whether `name` is one of the built-in profiles.
pub fn is_builtin(name: &str) -> bool {
    BUILTINS.iter().any(|(n, _, _)| *n == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_have_the_documented_targets() {
        let all = builtin_profiles();
        let got: Vec<(String, Option<i32>, Option<i32>, bool)> = all
            .iter()
            .map(|p| {
                let t = &p.spec.template;
                let objective = t.objectives.as_ref().and_then(|o| o.first());
                (
                    p.metadata.name.clone().unwrap_or_default(),
                    objective.and_then(|o| o.pod_resource.as_ref()?.value.utilization),
                    t.constraints.as_ref().and_then(|c| c.min_replicas),
                    p.metadata.labels.as_ref().and_then(|l| l.get(labels::MANAGED_BY))
                        == Some(&labels::MANAGED_BY_DATADOG.to_owned()),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("datadog-optimize-cost".to_owned(), Some(85), Some(1), true),
                ("datadog-optimize-balance".to_owned(), Some(70), Some(2), true),
                ("datadog-optimize-performance".to_owned(), Some(60), Some(3), true),
            ]
        );
        assert!(is_builtin("datadog-optimize-cost") && !is_builtin("datadog-optimize"));
        // They serialize as objects the API server accepts (apiVersion and kind set).
        let v = serde_json::to_value(&all[0]).unwrap_or_default();
        assert_eq!(v["apiVersion"], "datadoghq.com/v1alpha2");
        assert_eq!(v["kind"], "DatadogPodAutoscalerClusterProfile");
        assert_eq!(
            v["spec"]["template"]["objectives"][0]["podResource"]["name"],
            "cpu"
        );
    }

    #[test]
    fn generated_means_annotated_with_the_profile_hash() {
        let mut meta = ObjectMeta::default();
        assert!(!is_generated(&meta));
        meta.annotations = Some(BTreeMap::from([(
            annotations::PROFILE_HASH.to_owned(),
            "abc".to_owned(),
        )]));
        assert!(is_generated(&meta));
    }
}
