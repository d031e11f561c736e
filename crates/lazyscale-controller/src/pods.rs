//! The controller's view of pods: the [`PodSource`] trait and the plain [`PodSample`] it returns.
//!
//! The agent adapts its compact pod cache to [`PodSource`]; tests use a fixed list
//! ([`StaticPods`]) or [`WatchedPods`], a small reflector over full `Pod` objects that resolves
//! owners the way the cache does (a ReplicaSet named `<deployment>-<pod-template-hash>` belongs to
//! the Deployment). Reads are synchronous: a reconcile never waits on the pod source.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use parking_lot::RwLock;
use tracing::Instrument;

use lazyscale_api::quantity;
use lazyscale_api::time::Timestamp;
use lazyscale_podcache::slim::{WorkloadKind, resolve_workload};

pub use crate::inputs::PodSync;
pub use lazyscale_core::horizontal::recommender::PodPhase;

/// Requests of one container.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerRequests {
    /// Container name.
    pub name: String,
    /// CPU request in millicores, when set.
    pub cpu_millis: Option<u64>,
    /// Memory request in bytes, when set.
    pub memory_bytes: Option<u64>,
}

/// What the controller needs to know about one pod of a target.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodSample {
    /// Pod name (metrics are matched by name within the namespace).
    pub name: String,
    /// `status.phase`.
    pub phase: PodPhase,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// `lastTransitionTime` of the `Ready` condition, when known.
    pub ready_changed_at: Option<Timestamp>,
    /// `status.startTime`, when known.
    pub started_at: Option<Timestamp>,
    /// Requests of the regular containers.
    pub containers: Vec<ContainerRequests>,
}

/// The pods of autoscaled workloads, by owner.
///
/// `kind` is the workload kind of the DPA's `targetRef` (`Deployment`, `StatefulSet`, ...). Pods owned
/// by a ReplicaSet of a Deployment are returned for the Deployment.
pub trait PodSource: Send + Sync {
    /// The pods of the workload `namespace`/`kind`/`name` (empty when none are known).
    fn pods_of(&self, namespace: &str, kind: &str, name: &str) -> Vec<PodSample>;

    /// Whether the source has its initial content (reconciles that need pods wait for it). Defaults to
    /// `true`.
    fn is_synced(&self) -> bool {
        true
    }

    /// Whether the pods of `namespace` are current ([`crate::inputs`] holds decisions until they
    /// are). Defaults to [`PodSync::Synced`] once [`PodSource::is_synced`], else
    /// [`PodSync::Listing`].
    fn pod_sync(&self, _namespace: &str) -> PodSync {
        if self.is_synced() {
            PodSync::Synced
        } else {
            PodSync::Listing
        }
    }

    /// How many times the source lost its sync so far (a watch error or restart); a decision on pods
    /// read before a change is dropped. Defaults to 0 (never).
    fn sync_losses(&self) -> u64 {
        0
    }
}

/// Owner key: namespace, workload kind, workload name.
type OwnerKey = (String, String, String);

/// A fixed pod source: the pods set with [`StaticPods::set`]. For tests and benchmarks.
#[derive(Debug, Default)]
pub struct StaticPods {
    pods: RwLock<HashMap<OwnerKey, Vec<PodSample>>>,
}

impl StaticPods {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the pods of one workload.
    pub fn set(&self, namespace: &str, kind: &str, name: &str, pods: Vec<PodSample>) {
        self.pods
            .write()
            .insert((namespace.into(), kind.into(), name.into()), pods);
    }
}

impl PodSource for StaticPods {
    fn pods_of(&self, namespace: &str, kind: &str, name: &str) -> Vec<PodSample> {
        self.pods
            .read()
            .get(&(namespace.to_owned(), kind.to_owned(), name.to_owned()))
            .cloned()
            .unwrap_or_default()
    }
}

/// A pod source over a reflector of full `Pod` objects in one namespace (or all). Simple and memory
/// hungry: meant for tests and small clusters; the agent uses its compact pod cache instead.
#[derive(Clone)]
pub struct WatchedPods {
    store: Store<Pod>,
    ready: Arc<AtomicBool>,
}

impl std::fmt::Debug for WatchedPods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedPods")
            .field("pods", &self.store.state().len())
            .finish()
    }
}

impl WatchedPods {
    /// Starts watching pods of `namespace` (all namespaces when `None`); the watch runs until the
    /// returned task is aborted.
    pub fn start(client: Client, namespace: Option<&str>) -> (Self, tokio::task::JoinHandle<()>) {
        let api: Api<Pod> = match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        };
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff())
            .applied_objects();
        let ready = Arc::new(AtomicBool::new(false));
        let (r, s) = (ready.clone(), store.clone());
        let task = tokio::spawn(
            async move {
                let drive = async {
                    let mut stream = std::pin::pin!(stream);
                    while let Some(item) = stream.next().await {
                        if let Err(error) = item {
                            tracing::debug!(%error, "pod watch error");
                        }
                    }
                };
                let mark = async {
                    if s.wait_until_ready().await.is_ok() {
                        r.store(true, Ordering::Relaxed);
                    }
                };
                futures::join!(drive, mark);
            }
            .instrument(tracing::info_span!(
                "pod_reflector",
                namespace = namespace.unwrap_or("*")
            )),
        );
        (Self { store, ready }, task)
    }

    /// Waits until the initial list is in.
    pub async fn wait_until_ready(&self) {
        let _ = self.store.wait_until_ready().await;
    }
}

impl PodSource for WatchedPods {
    fn pods_of(&self, namespace: &str, kind: &str, name: &str) -> Vec<PodSample> {
        self.store
            .state()
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace))
            .filter(|p| owner_of(p).is_some_and(|(k, n)| k == kind && n == name))
            .map(|p| sample_of(p))
            .collect()
    }

    fn is_synced(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// A pod source shared behind an `Arc`.
pub type SharedPodSource = Arc<dyn PodSource>;

/// The workload (kind, name) owning a pod, as the pod cache resolves it
/// ([`lazyscale_podcache::slim::resolve_workload`]: a Deployment or an Argo Rollout through its
/// ReplicaSet, a StatefulSet, ...).
pub fn owner_of(pod: &Pod) -> Option<(&'static str, String)> {
    let owner = pod
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))?;
    let labels = pod.labels();
    let (kind, name) = resolve_workload(
        &owner.api_version,
        &owner.kind,
        &owner.name,
        labels.get("pod-template-hash").map(String::as_str),
        labels.get("rollouts-pod-template-hash").map(String::as_str),
    );
    (kind != WorkloadKind::Other).then(|| (kind.as_str(), name.to_owned()))
}

/// Converts a full `Pod` into a [`PodSample`].
pub fn sample_of(pod: &Pod) -> PodSample {
    let status = pod.status.as_ref();
    let ready_cond = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    PodSample {
        name: pod.name_any(),
        phase: status
            .and_then(|s| s.phase.as_deref())
            .map(PodPhase::parse)
            .unwrap_or_default(),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        ready: ready_cond.is_some_and(|c| c.status == "True"),
        ready_changed_at: ready_cond
            .and_then(|c| c.last_transition_time.as_ref())
            .map(lazyscale_api::time::from_time),
        started_at: status
            .and_then(|s| s.start_time.as_ref())
            .map(lazyscale_api::time::from_time),
        containers: pod
            .spec
            .as_ref()
            .map(|s| {
                s.containers
                    .iter()
                    .map(|c| {
                        let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
                        ContainerRequests {
                            name: c.name.clone(),
                            cpu_millis: req
                                .and_then(|r| r.get("cpu"))
                                .and_then(|q| quantity::millis(&q.0)),
                            memory_bytes: req
                                .and_then(|r| r.get("memory"))
                                .and_then(|q| quantity::units(&q.0)),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(kind: &str, owner: &str, labels: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": "u",
                                     "controller": true}]},
        }))
        .unwrap_or_default()
    }

    #[test]
    fn owners_resolve_as_the_pod_cache_resolves_them() {
        let deployment = pod(
            "ReplicaSet",
            "web-5d8f7c9b4",
            serde_json::json!({"pod-template-hash": "5d8f7c9b4"}),
        );
        assert_eq!(owner_of(&deployment), Some(("Deployment", "web".into())));
        let rollout = pod(
            "ReplicaSet",
            "canary-6c9d",
            serde_json::json!({"rollouts-pod-template-hash": "6c9d"}),
        );
        assert_eq!(owner_of(&rollout), Some(("Rollout", "canary".into())));
        let sts = pod("StatefulSet", "db", serde_json::json!({}));
        assert_eq!(owner_of(&sts), Some(("StatefulSet", "db".into())));
        assert_eq!(owner_of(&Pod::default()), None);
    }
}
