//! Workload controllers, following kube-controller-manager's conventions:
//!
//! - [`deployment`]: Deployment → one ReplicaSet per pod template (`<deployment>-<pod-template-hash>`),
//!   rolling updates with maxSurge/maxUnavailable, Recreate, revision history, status and conditions;
//! - [`replicaset`]: ReplicaSet → pods named by the API server from `generateName: <replicaset>-`
//!   (5 characters of Kubernetes' safe alphabet), status;
//! - [`statefulset`]: StatefulSet → pods `<name>-<ordinal>` with `controller-revision-hash`,
//!   `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index`, ControllerRevisions,
//!   ordered or parallel pod management, rolling updates from the highest ordinal down.
//!
//! Every object the controllers create carries a controller ownerReference with
//! `blockOwnerDeletion: true`. Objects whose controller owner is gone are deleted (the garbage
//! collector's job; the test API server runs none).

pub mod deployment;
pub mod replicaset;
pub mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PatchParams, PostParams, PropagationPolicy};
use kube::{Api, Resource, ResourceExt};

use crate::Result;

/// Field manager of controller writes (as kube-controller-manager's).
pub const CONTROLLER_MANAGER: &str = "kube-controller-manager";

/// The label Deployments add to their ReplicaSets and pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The label StatefulSets add to their pods.
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";
/// The StatefulSet pod-name label.
pub const STS_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
/// The StatefulSet pod-index label.
pub const POD_INDEX: &str = "apps.kubernetes.io/pod-index";
/// The Deployment revision annotation on Deployments and ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Annotation: the Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// Annotation: replicas + maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// The controller ownerReference of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

/// A controller ownerReference to an apps/v1 object, as kube-controller-manager writes it.
pub fn owner_ref(kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
        uid: uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether the object's controller owner has this uid.
pub fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|o| o.uid == uid)
}

/// Whether a pod counts as active (not terminating, not finished).
pub fn pod_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// The pod's Ready condition, if true: its last transition time.
pub fn ready_since(p: &Pod) -> Option<Timestamp> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        c.last_transition_time
            .as_ref()
            .map_or_else(Timestamp::now, |t| t.0),
    )
}

/// Whether the pod is Ready.
pub fn pod_ready(p: &Pod) -> bool {
    ready_since(p).is_some()
}

/// Whether the pod has been Ready for at least `min_ready_seconds`.
pub fn pod_available(p: &Pod, min_ready_seconds: i32) -> bool {
    ready_since(p).is_some_and(|t| min_ready_seconds <= 0 || seconds_since(t) >= f64::from(min_ready_seconds))
}

/// Now as a Kubernetes Time.
pub fn now() -> Time {
    Time(Timestamp::now())
}

/// Seconds from `t` until now (negative when `t` is in the future).
pub fn seconds_since(t: Timestamp) -> f64 {
    Timestamp::now().duration_since(t).as_secs_f64()
}

/// Post parameters with the controller field manager.
pub(crate) fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(CONTROLLER_MANAGER.to_string()),
        ..PostParams::default()
    }
}

/// Patch parameters with the controller field manager.
pub(crate) fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(CONTROLLER_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

/// Background-propagation delete, treating "already gone" as success.
pub(crate) async fn delete_ignore_missing<K>(api: &Api<K>, name: &str) -> Result<bool>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether the error is the API's 404.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether the error is the API's 409 (AlreadyExists or Conflict).
pub(crate) fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Whether the owner named by `owner` is gone, checked live (as the garbage collector does before
/// deleting a dependent).
pub(crate) async fn owner_gone<K>(api: &Api<K>, owner: &OwnerReference) -> Result<bool>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_metadata_opt(&owner.name).await? {
        None => Ok(true),
        Some(m) => Ok(m.uid().as_deref() != Some(owner.uid.as_str())),
    }
}

/// Labels of a pod template plus extra ones.
pub(crate) fn with_label(
    labels: Option<&BTreeMap<String, String>>,
    extra: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let mut l = labels.cloned().unwrap_or_default();
    for (k, v) in extra {
        l.insert((*k).to_string(), (*v).to_string());
    }
    l
}

/// Resolves an IntOrString percentage against `total` (rounding up or down), as Kubernetes does
/// for maxSurge (up) and maxUnavailable (down).
pub fn resolve_int_or_percent(
    v: Option<&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    default_percent: i32,
    total: i32,
    round_up: bool,
) -> i32 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let pct = |p: i32| {
        let x = f64::from(p) * f64::from(total) / 100.0;
        (if round_up { x.ceil() } else { x.floor() }) as i32
    };
    match v {
        None => pct(default_percent),
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => match s.strip_suffix('%').and_then(|n| n.parse().ok()) {
            Some(p) => pct(p),
            None => s.parse().unwrap_or_else(|_| pct(default_percent)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn surge_rounds_up_unavailable_rounds_down() {
        assert_eq!(resolve_int_or_percent(None, 25, 10, true), 3);
        assert_eq!(resolve_int_or_percent(None, 25, 10, false), 2);
        assert_eq!(resolve_int_or_percent(None, 25, 1, true), 1);
        assert_eq!(resolve_int_or_percent(None, 25, 1, false), 0);
        let v = IntOrString::String("50%".into());
        assert_eq!(resolve_int_or_percent(Some(&v), 25, 5, true), 3);
        assert_eq!(resolve_int_or_percent(Some(&IntOrString::Int(2)), 25, 5, true), 2);
    }
}
