//! The simulator runtime: configuration, shared state (caches over reflector stores, the work
//! queue, per-workload settings), the watchers that feed the queue, the workers that answer resizes,
//! periodic resync, and the metrics loop (load → PodMetrics, OOM kills).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::cache::{Cache, SharedRecent, forget_deleted};
use crate::kubelet;
use crate::load::LoadProfile;
use crate::metrics;
use crate::objects::controller_of;
use crate::queue::WorkQueue;
use crate::units::Dur;
use crate::{BULK_LABEL, Result};

/// Configuration of a [`Simulator`].
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Namespaces to simulate; empty means all namespaces.
    pub namespaces: Vec<String>,
    /// kwok-managed nodes to add (`<node_prefix>1`, ...); the test control plane has its own, so the
    /// default is 0.
    pub nodes: u32,
    /// Name prefix of added nodes.
    pub node_prefix: String,
    /// CPU of a node, in cores: the capacity of added nodes, and the limit above which a resize is
    /// Infeasible.
    pub node_cpu: f64,
    /// Memory of a node, in bytes (as `node_cpu`).
    pub node_memory: f64,
    /// Interval of PodMetrics writes (metrics-server's resolution is 15 s).
    pub metrics_interval: Duration,
    /// Whether to write metrics at all.
    pub metrics: bool,
    /// Interval at which every object is reconciled again even without watch events.
    pub resync: Duration,
    /// Seed of all simulated randomness.
    pub seed: u64,
    /// Concurrent reconcile workers.
    pub workers: usize,
    /// Also manage objects labelled [`BULK_LABEL`] (off: bulk-created pods are left alone).
    pub include_bulk: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            nodes: 0,
            node_prefix: "sim-node-".to_string(),
            node_cpu: 8.0,
            node_memory: 32.0 * 1024.0 * 1024.0 * 1024.0,
            metrics_interval: Duration::from_secs(15),
            metrics: true,
            resync: Duration::from_secs(30),
            seed: 1,
            workers: 4,
            include_bulk: false,
        }
    }
}

/// The kind of a simulated workload: lazyscale's one [`WorkloadKind`]. The simulator drives
/// Deployments (the default), StatefulSets and ReplicaSets without a Deployment (found from their pods);
/// a scenario declares Deployments and StatefulSets only (checked when it is loaded).
pub use lazyscale_api::workload::WorkloadKind;

/// Identifies a workload: namespace, kind and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkloadRef {
    /// Namespace.
    pub namespace: String,
    /// Kind.
    pub kind: WorkloadKind,
    /// Name.
    pub name: String,
}

impl WorkloadRef {
    /// A reference to a Deployment.
    pub fn deployment(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            kind: WorkloadKind::Deployment,
            name: name.to_string(),
        }
    }

    /// A reference to a StatefulSet.
    pub fn statefulset(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            kind: WorkloadKind::StatefulSet,
            name: name.to_string(),
        }
    }
}

/// How the simulated kubelet answers an in-place resize (`pods/resize`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ResizeMode {
    /// Applied at once: status resources follow the spec.
    #[default]
    Immediate,
    /// `PodResizeInProgress` for `duration`, then applied.
    InProgress {
        /// How long the resize takes.
        #[serde(default)]
        duration: Dur,
    },
    /// `PodResizePending` with reason `Deferred` (not applied until the mode changes).
    Deferred,
    /// `PodResizePending` with reason `Infeasible` (never applied while the mode holds).
    Infeasible,
    /// `PodResizeInProgress` with reason `Error` (the kubelet failed to actuate it; never applied while
    /// the mode holds).
    Error,
}

impl ResizeMode {
    /// Parses the value of [`crate::RESIZE_ANNOTATION`].
    pub fn from_annotation(value: &str, duration: Option<Duration>) -> Option<Self> {
        match value {
            "immediate" => Some(Self::Immediate),
            "in-progress" => Some(Self::InProgress {
                duration: Dur(duration.unwrap_or(Duration::from_secs(5))),
            }),
            "deferred" => Some(Self::Deferred),
            "infeasible" => Some(Self::Infeasible),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// What the simulator knows about one workload beyond its Kubernetes object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkloadSettings {
    /// Its load; `None` uses a default (30 % of CPU requests, 50 % of memory requests per pod).
    pub load: Option<LoadProfile>,
    /// How in-place resizes are answered.
    pub resize: ResizeMode,
}

/// A unit of work for the workers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Pod(String, String),
}

/// State shared by the simulator's tasks.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) cfg: SimConfig,
    pub(crate) replicasets: Cache<ReplicaSet>,
    pub(crate) pods: Cache<Pod>,
    pub(crate) queue: WorkQueue<Key>,
    pub(crate) workloads: RwLock<HashMap<WorkloadRef, WorkloadSettings>>,
    pub(crate) start: Instant,
    pub(crate) metrics_state: tokio::sync::Mutex<metrics::MetricsState>,
}

impl Shared {
    /// Seconds since the simulator started: the `t` of load profiles.
    pub(crate) fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Settings of a workload (defaults when unknown).
    pub(crate) fn settings(&self, w: &WorkloadRef) -> WorkloadSettings {
        self.workloads
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(w)
            .cloned()
            .unwrap_or_default()
    }

    /// The workload a pod belongs to (through its ReplicaSet to a Deployment).
    pub(crate) fn workload_of(&self, pod: &Pod) -> Option<WorkloadRef> {
        let ns = pod.namespace().unwrap_or_default();
        let owner = controller_of(&pod.metadata)?;
        match owner.kind.as_str() {
            "StatefulSet" => Some(WorkloadRef::statefulset(&ns, &owner.name)),
            "ReplicaSet" => {
                let rs = self.replicasets.get(&ns, &owner.name);
                match rs.as_ref().and_then(|rs| controller_of(&rs.metadata).cloned()) {
                    Some(o) if o.kind == "Deployment" => Some(WorkloadRef::deployment(&ns, &o.name)),
                    _ => {
                        // Not cached yet: derive the Deployment from the pod-template-hash naming.
                        let hash = pod.labels().get("pod-template-hash");
                        match hash.and_then(|h| owner.name.strip_suffix(&format!("-{h}"))) {
                            Some(d) => Some(WorkloadRef::deployment(&ns, d)),
                            None => Some(WorkloadRef {
                                namespace: ns,
                                kind: WorkloadKind::ReplicaSet,
                                name: owner.name.clone(),
                            }),
                        }
                    }
                }
            }
            _ => None,
        }
    }

    pub(crate) fn in_scope<K: Resource>(&self, obj: &K) -> bool {
        let ns_ok = self.cfg.namespaces.is_empty()
            || obj
                .meta()
                .namespace
                .as_ref()
                .is_some_and(|n| self.cfg.namespaces.contains(n));
        let bulk_ok = self.cfg.include_bulk
            || !obj
                .meta()
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(BULK_LABEL));
        ns_ok && bulk_ok
    }
}

/// A running simulator. Dropping it stops its tasks; [`Simulator::shutdown`] does so explicitly.
pub struct Simulator {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("config", &self.shared.cfg)
            .finish_non_exhaustive()
    }
}

/// Turns a watch event (object, deleted) into work-queue keys.
type Dispatch<K> = Arc<dyn Fn(&K, bool) + Send + Sync>;

/// Starts watchers (one per namespace, or one for all) feeding one store per watcher.
fn start_watchers<K>(
    client: &Client,
    cfg: &SimConfig,
    tasks: &mut Vec<JoinHandle<()>>,
    dispatch: Dispatch<K>,
) -> Vec<Store<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let apis: Vec<Api<K>> = if cfg.namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        cfg.namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let mut wc = watcher::Config::default();
    if !cfg.include_bulk {
        wc = wc.labels(&format!("!{BULK_LABEL}"));
    }
    let mut stores = Vec::new();
    for api in apis {
        let (reader, writer) = reflector::store();
        stores.push(reader);
        let stream = reflector::reflector(writer, watcher::watcher(api, wc.clone()).default_backoff());
        let dispatch = dispatch.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(Event::Apply(o) | Event::InitApply(o)) => dispatch(&o, false),
                    Ok(Event::Delete(o)) => dispatch(&o, true),
                    Ok(_) => {}
                    Err(e) => warn!(kind = %K::kind(&()), error = %e, "watch error"),
                }
            }
        }));
    }
    stores
}

impl Simulator {
    /// Starts the simulator on `client`: adds the configured nodes (none by default), starts the
    /// watchers, waits until their initial lists are in, then answers resizes and writes metrics
    /// until [`Simulator::shutdown`] or drop.
    pub async fn start(client: Client, cfg: SimConfig) -> Result<Simulator> {
        kubelet::ensure_nodes(&client, &cfg).await?;
        let queue: WorkQueue<Key> = WorkQueue::new();
        let mut tasks = Vec::new();

        let rs_recent: SharedRecent<ReplicaSet> = Arc::default();
        let pod_recent: SharedRecent<Pod> = Arc::default();
        // ReplicaSets are watched to map pods to their Deployments.
        let r = rs_recent.clone();
        let rs_stores = start_watchers::<ReplicaSet>(
            &client,
            &cfg,
            &mut tasks,
            Arc::new(move |rs: &ReplicaSet, deleted| {
                if deleted {
                    forget_deleted(&r, rs);
                }
            }),
        );
        let q = queue.clone();
        let r = pod_recent.clone();
        let pod_stores = start_watchers::<Pod>(
            &client,
            &cfg,
            &mut tasks,
            Arc::new(move |p: &Pod, deleted| {
                if deleted {
                    forget_deleted(&r, p);
                } else {
                    q.add(Key::Pod(p.namespace().unwrap_or_default(), p.name_any()));
                }
            }),
        );
        for s in rs_stores.iter() {
            s.wait_until_ready()
                .await
                .map_err(|e| crate::Error::Missing(e.to_string()))?;
        }
        for s in pod_stores.iter() {
            s.wait_until_ready()
                .await
                .map_err(|e| crate::Error::Missing(e.to_string()))?;
        }

        let shared = Arc::new(Shared {
            client,
            replicasets: Cache::new(rs_stores, rs_recent),
            pods: Cache::new(pod_stores, pod_recent),
            queue,
            workloads: RwLock::new(HashMap::new()),
            start: Instant::now(),
            metrics_state: tokio::sync::Mutex::new(metrics::MetricsState::default()),
            cfg,
        });
        enqueue_all(&shared);

        for _ in 0..shared.cfg.workers.max(1) {
            let sh = shared.clone();
            tasks.push(tokio::spawn(async move { worker(sh).await }));
        }
        let sh = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(sh.cfg.resync);
            tick.tick().await;
            loop {
                tick.tick().await;
                enqueue_all(&sh);
            }
        }));
        if shared.cfg.metrics {
            let sh = shared.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(sh.cfg.metrics_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Err(e) = metrics::tick(&sh).await {
                        warn!(error = %e, "metrics round failed");
                    }
                }
            }));
        }
        info!(namespaces = ?shared.cfg.namespaces, nodes = shared.cfg.nodes, "simulator started");
        Ok(Simulator { shared, tasks })
    }

    /// Sets everything the simulator knows about a workload (load, resize behaviour, ready delay).
    pub fn set_workload(&self, workload: WorkloadRef, settings: WorkloadSettings) {
        self.shared
            .workloads
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(workload, settings);
    }

    /// Changes the load profile of a workload.
    pub fn set_load(&self, workload: &WorkloadRef, load: LoadProfile) {
        let mut w = self
            .shared
            .workloads
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.entry(workload.clone()).or_default().load = Some(load);
    }

    /// Changes how in-place resizes of a workload's pods are answered; re-examines its pods.
    pub fn set_resize(&self, workload: &WorkloadRef, mode: ResizeMode) {
        {
            let mut w = self
                .shared
                .workloads
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            w.entry(workload.clone()).or_default().resize = mode;
        }
        enqueue_all(&self.shared);
    }

    /// Settings of a workload.
    pub fn workload(&self, workload: &WorkloadRef) -> WorkloadSettings {
        self.shared.settings(workload)
    }

    /// Runs one metrics round now (also checks for OOM kills); returns the number of PodMetrics
    /// written.
    pub async fn tick_metrics(&self) -> Result<usize> {
        metrics::tick(&self.shared).await
    }

    /// Seconds since start: the time axis of load profiles.
    pub fn elapsed(&self) -> f64 {
        self.shared.elapsed()
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.shared.cfg
    }

    /// The client the simulator uses.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// Reconciles every known object again (as a resync does).
    pub fn resync(&self) {
        enqueue_all(&self.shared);
    }

    /// Stops all tasks.
    pub async fn shutdown(mut self) {
        self.stop();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }

    fn stop(&mut self) {
        self.shared.queue.shutdown();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop();
    }
}

fn enqueue_all(sh: &Shared) {
    for p in sh.pods.list(|_| true) {
        sh.queue
            .add(Key::Pod(p.namespace().unwrap_or_default(), p.name_any()));
    }
}

async fn worker(sh: Arc<Shared>) {
    while let Some(key) = sh.queue.get().await {
        let res = match &key {
            Key::Pod(ns, n) => kubelet::reconcile(&sh, ns, n).await,
        };
        match res {
            Ok(Some(after)) => sh.queue.add_after(key.clone(), after),
            Ok(None) => {}
            Err(crate::Error::Kube(kube::Error::Api(s))) if s.code == 404 => {
                debug!(?key, "object gone while reconciling");
            }
            Err(e) => {
                let conflict = matches!(&e, crate::Error::Kube(kube::Error::Api(s)) if s.code == 409);
                if conflict {
                    debug!(?key, "conflict, retrying");
                } else {
                    warn!(?key, error = %e, "reconcile failed");
                }
                sh.queue.add_after(
                    key.clone(),
                    Duration::from_millis(if conflict { 200 } else { 1000 }),
                );
            }
        }
        sh.queue.done(&key);
    }
}
