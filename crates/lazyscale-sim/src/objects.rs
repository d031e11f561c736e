//! Kubernetes object helpers shared by the simulator: owner references, pod readiness, API error
//! classes, and the well-known labels and annotations of kube-controller-manager's workload
//! controllers (which, on the real control plane, create the ReplicaSets and pods the simulator loads).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;

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

/// Whether the error is the API's 404.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether the error is the API's 409 (AlreadyExists or Conflict).
pub(crate) fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
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
