//! Horizontal autoscaling wired to the lazy stack: the controller of `lazyscale-controller` reads pods from
//! the stack's pod cache through [`CachePods`], and only the lease holder writes.

use std::sync::Arc;

use lazyscale_controller::pods::{ContainerRequests, PodSync};
use lazyscale_controller::{PodSample, PodSource};
use lazyscale_podcache::slim::{SlimPod, WorkloadKey, WorkloadKind};
use lazyscale_podcache::store::PodStore;
use lazyscale_podcache::watch::SyncView;
use lazyscale_podcache::wire::PodPhase;

/// The stack's pod cache as the controller's pod source.
pub struct CachePods {
    /// The cache.
    pub store: Arc<PodStore>,
    /// Whether the pod collection finished its initial list.
    pub synced: tokio::sync::watch::Receiver<bool>,
    /// The collection's per-namespace sync state and sync losses.
    pub sync: SyncView,
}

/// The controller's view of one cached pod (pure).
pub fn sample(pod: &SlimPod) -> PodSample {
    PodSample {
        name: pod.name().into_owned(),
        phase: pod.phase().unwrap_or(PodPhase::Unknown),
        deleting: pod.is_terminating(),
        ready: pod.is_ready(),
        ready_changed_at: pod.ready_changed_at().map(seconds),
        started_at: pod.start_time().map(seconds),
        containers: pod
            .containers()
            .iter()
            .map(|c| ContainerRequests {
                name: c.name.to_string(),
                cpu_millis: c.resources.requests.cpu_millis,
                memory_bytes: c.resources.requests.memory_bytes,
            })
            .collect(),
    }
}

/// Unix seconds (the pod cache's compact unit) as the one wall-clock time type.
fn seconds(s: i64) -> lazyscale_api::time::Timestamp {
    lazyscale_api::time::from_unix_seconds(s)
}

impl PodSource for CachePods {
    fn pods_of(&self, namespace: &str, kind: &str, name: &str) -> Vec<PodSample> {
        let key = WorkloadKey::new(namespace, WorkloadKind::from_kind(kind), name);
        let mut out = Vec::new();
        self.store.for_each_pod_of(&key, |p| out.push(sample(p)));
        out
    }

    fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    fn pod_sync(&self, namespace: &str) -> PodSync {
        if self.sync.namespace_synced(namespace) {
            PodSync::Synced
        } else if self.sync.lost_sync(namespace) {
            PodSync::Relisting
        } else {
            PodSync::Listing
        }
    }

    fn sync_losses(&self) -> u64 {
        self.sync.losses()
    }
}

/// The agent's own workload, which the controller refuses to scale (the self-target guard): the
/// Deployment of the pod `POD_NAME` in `POD_NAMESPACE` (downward API).
pub fn self_target() -> Option<lazyscale_controller::validate::SelfTarget> {
    let ns = std::env::var("POD_NAMESPACE").ok();
    let pod = std::env::var("POD_NAME").ok();
    self_target_of(ns.as_deref(), pod.as_deref())
}

/// The Deployment of a pod named `<deployment>-<replicaset hash>-<suffix>`.
pub fn self_target_of(
    namespace: Option<&str>,
    pod: Option<&str>,
) -> Option<lazyscale_controller::validate::SelfTarget> {
    let namespace = namespace.filter(|n| !n.is_empty())?;
    let (rest, _suffix) = pod?.rsplit_once('-')?;
    let (deployment, _hash) = rest.rsplit_once('-')?;
    (!deployment.is_empty()).then(|| {
        (
            namespace.to_owned(),
            WorkloadKind::Deployment.as_str().to_owned(),
            deployment.to_owned(),
        )
    })
}

/// The identity of this replica in the leader election: `POD_NAME`, else the host name and process id.
pub fn identity() -> String {
    if let Ok(p) = std::env::var("POD_NAME")
        && !p.is_empty()
    {
        return p;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "lazyscale".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_deployment_from_the_pod_name() {
        assert_eq!(
            self_target_of(Some("ops"), Some("lazyscale-7d9f8b6c5d-x2x4z")),
            Some(("ops".into(), "Deployment".into(), "lazyscale".into()))
        );
        assert_eq!(
            self_target_of(Some("ops"), Some("my-agent-7d9f8b6c5d-x2x4z")).map(|t| t.2),
            Some("my-agent".into())
        );
        assert_eq!(self_target_of(None, Some("lazyscale-7d9f8b6c5d-x2x4z")), None);
        assert_eq!(self_target_of(Some("ops"), Some("lazyscale")), None);
        assert_eq!(self_target_of(Some("ops"), None), None);
    }
}
