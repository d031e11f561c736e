//! The ClusterProfile controller: DPAs generated for the Deployments and StatefulSets labelled
//! `autoscaling.datadoghq.com/profile=<name>` (directly or through their namespace), the profile status
//! and the built-in profiles. It runs inside the lazy stack, writes only while this replica holds the
//! lease, and uses its own field manager ([`field_managers::PROFILES`]).
//!
//! What it reads, while the stack runs: ClusterProfiles (one cluster-scoped watch, whole objects);
//! metadata-only watches of Deployments, StatefulSets and namespaces that carry the profile label
//! (label-selector scoped: the API server filters them); for each labelled namespace, metadata-only
//! watches of its Deployments and StatefulSets; and DPAs from a [`DpaSource`] (the agent's one DPA index,
//! or a reflector of its own when standalone). The plan is [`plan::plan`], pure; this module carries it
//! out: generated DPAs are created (POST) and written again with an optimistic replace (PUT with the
//! resource version read), so that a drifted field is reset whoever changed it; deleted ones are deleted;
//! notices become events on the workload or namespace, once per distinct notice; profile statuses are
//! applied (server-side apply of `status`) only when they differ from what the profile shows.
//!
//! Built-in profiles are applied once by [`ensure_builtins`] (the agent calls it at startup, whatever
//! the gate) and reset by the controller when they drift while the stack runs. A profile never opens
//! the gate and the generated DPAs do not keep it open (the agent's demand ignores them, see
//! [`lazyscale_api::is_generated`]).

pub mod plan;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use lazyscale_api::consts::conditions::{STATUS_FALSE, STATUS_TRUE, VALID};
use lazyscale_api::consts::{
    API_VERSION, CLUSTER_PROFILE_KIND, GROUP, VERSION, events, field_managers, labels,
};
use lazyscale_api::{
    DatadogPodAutoscaler, DatadogPodAutoscalerClusterProfile, DatadogPodAutoscalerClusterProfileStatus,
    DatadogPodAutoscalerTemplate, builtin_profiles, is_builtin,
};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::controller::{DpaChange, DpaSource, Key};
use plan::{Inputs, Notice, Plan, Profile, ProfileStatus, Subject, Why, Workload, WorkloadKind};

/// Errors of a write of the profile controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{0} {1}")]
    Api(&'static str, String, #[source] kube::Error),
    /// An object could not be encoded.
    #[error("cannot encode {0}")]
    Encode(String, #[source] serde_json::Error),
}

/// Settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Full pass period (also the drift check of the built-in profiles): 30 s.
    pub period: Duration,
    /// How long changes are collected before a pass (many labels changed together cost one pass).
    pub debounce: Duration,
    /// Reporting instance of events (the pod name).
    pub instance: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(30),
            debounce: Duration::from_millis(200),
            instance: None,
        }
    }
}

/// Counters since the controller was created.
#[derive(Debug, Default)]
pub struct Counters {
    /// Passes planned (leader with every input listed).
    pub passes: AtomicU64,
    /// Generated DPAs created.
    pub creates: AtomicU64,
    /// Generated DPAs written again (template change or drift).
    pub updates: AtomicU64,
    /// Generated DPAs deleted.
    pub deletes: AtomicU64,
    /// Profile status writes.
    pub status_writes: AtomicU64,
    /// Built-in profiles reset.
    pub builtin_resets: AtomicU64,
    /// Events published.
    pub events: AtomicU64,
    /// Failed writes.
    pub errors: AtomicU64,
}

/// A copy of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CounterSnapshot {
    /// See [`Counters::passes`].
    pub passes: u64,
    /// See [`Counters::creates`].
    pub creates: u64,
    /// See [`Counters::updates`].
    pub updates: u64,
    /// See [`Counters::deletes`].
    pub deletes: u64,
    /// See [`Counters::status_writes`].
    pub status_writes: u64,
    /// See [`Counters::builtin_resets`].
    pub builtin_resets: u64,
    /// See [`Counters::events`].
    pub events: u64,
    /// See [`Counters::errors`].
    pub errors: u64,
}

impl CounterSnapshot {
    /// What happened since `before`.
    pub fn since(&self, before: &CounterSnapshot) -> CounterSnapshot {
        CounterSnapshot {
            passes: self.passes.saturating_sub(before.passes),
            creates: self.creates.saturating_sub(before.creates),
            updates: self.updates.saturating_sub(before.updates),
            deletes: self.deletes.saturating_sub(before.deletes),
            status_writes: self.status_writes.saturating_sub(before.status_writes),
            builtin_resets: self.builtin_resets.saturating_sub(before.builtin_resets),
            events: self.events.saturating_sub(before.events),
            errors: self.errors.saturating_sub(before.errors),
        }
    }

    /// Writes of any kind (DPAs, statuses, built-ins, events).
    pub fn writes(&self) -> u64 {
        self.creates + self.updates + self.deletes + self.status_writes + self.builtin_resets + self.events
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Counters {
    /// The current values.
    pub fn snapshot(&self) -> CounterSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            passes: l(&self.passes),
            creates: l(&self.creates),
            updates: l(&self.updates),
            deletes: l(&self.deletes),
            status_writes: l(&self.status_writes),
            builtin_resets: l(&self.builtin_resets),
            events: l(&self.events),
            errors: l(&self.errors),
        }
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The ClusterProfile resource.
pub fn profile_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, CLUSTER_PROFILE_KIND),
        lazyscale_api::consts::CLUSTER_PROFILE_PLURAL,
    )
}

/// A mirror of one watch: its objects by key, and whether it has listed.
struct Mirror<V> {
    items: Mutex<BTreeMap<String, V>>,
    ready: AtomicBool,
}

impl<V> Default for Mirror<V> {
    fn default() -> Self {
        Self {
            items: Mutex::new(BTreeMap::new()),
            ready: AtomicBool::new(false),
        }
    }
}

impl<V: Clone> Mirror<V> {
    fn values(&self) -> Vec<V> {
        self.items.lock().values().cloned().collect()
    }
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// A watch stream of `K`.
type Stream<K> = futures::stream::BoxStream<'static, Result<Event<K>, watcher::Error>>;

/// A metadata-only watch stream of `K` (`PartialObjectMeta<K>` objects).
fn metadata_stream<K>(api: Api<PartialObjectMeta<K>>, config: watcher::Config) -> Stream<PartialObjectMeta<K>>
where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    watcher::watcher(api, config).default_backoff().boxed()
}

/// Keeps `mirror` equal to what `stream` lists and watches, converting each object with `convert`;
/// wakes `notify` on every change. Ends when `stop` is cancelled.
async fn mirror<K, V>(
    mut stream: Stream<K>,
    mirror: Arc<Mirror<V>>,
    convert: fn(&K) -> Option<(String, V)>,
    notify: Arc<Notify>,
    stop: CancellationToken,
) where
    K: Send + 'static,
    V: Send + 'static,
{
    let mut pending: BTreeMap<String, V> = BTreeMap::new();
    let mut warned = false;
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            n = stream.next() => n,
        };
        let Some(item) = next else { return };
        match item {
            Ok(Event::Init) => pending.clear(),
            Ok(Event::InitApply(o)) => pending.extend(convert(&o)),
            Ok(Event::InitDone) => {
                *mirror.items.lock() = std::mem::take(&mut pending);
                mirror.ready.store(true, Ordering::Release);
                warned = false;
                notify.notify_one();
            }
            Ok(Event::Apply(o)) => {
                if let Some((k, v)) = convert(&o) {
                    mirror.items.lock().insert(k, v);
                    notify.notify_one();
                }
            }
            Ok(Event::Delete(o)) => {
                if let Some((k, _)) = convert(&o) {
                    mirror.items.lock().remove(&k);
                    notify.notify_one();
                }
            }
            Err(error) => {
                if !warned {
                    tracing::warn!(%error, "profile controller watch failed; retrying with backoff");
                    warned = true;
                }
            }
        }
    }
}

fn spawn_mirror<K, V>(
    stream: Stream<K>,
    convert: fn(&K) -> Option<(String, V)>,
    notify: &Arc<Notify>,
    stop: &CancellationToken,
    what: &'static str,
) -> Arc<Mirror<V>>
where
    K: Send + 'static,
    V: Send + 'static,
{
    let m = Arc::new(Mirror::default());
    tokio::spawn(
        mirror(stream, m.clone(), convert, notify.clone(), stop.clone())
            .instrument(tracing::info_span!("profile_watch", what)),
    );
    m
}

fn workload_of<K>(kind: WorkloadKind, o: &PartialObjectMeta<K>) -> Option<(String, Workload)> {
    let ns = o.metadata.namespace.clone()?;
    let name = o.metadata.name.clone()?;
    let w = Workload {
        kind,
        uid: o.metadata.uid.clone(),
        label: o
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::PROFILE).cloned()),
        namespace: ns,
        name,
    };
    Some((format!("{}/{}/{}", kind.as_str(), w.namespace, w.name), w))
}

fn deployment_of(o: &PartialObjectMeta<Deployment>) -> Option<(String, Workload)> {
    workload_of(WorkloadKind::Deployment, o)
}

fn stateful_set_of(o: &PartialObjectMeta<StatefulSet>) -> Option<(String, Workload)> {
    workload_of(WorkloadKind::StatefulSet, o)
}

fn namespace_of(o: &PartialObjectMeta<Namespace>) -> Option<(String, String)> {
    let value = o.metadata.labels.as_ref()?.get(labels::PROFILE)?.clone();
    Some((o.metadata.name.clone()?, value))
}

/// A ClusterProfile as read: its planner view, its status and whether it is a built-in one that drifted.
#[derive(Debug, Clone)]
struct ProfileObject {
    profile: Profile,
    status: Option<DatadogPodAutoscalerClusterProfileStatus>,
    generation: Option<i64>,
    builtin_drift: bool,
}

fn profile_of(o: &DynamicObject) -> Option<(String, ProfileObject)> {
    let name = o.metadata.name.clone()?;
    let template = o
        .data
        .get("spec")
        .and_then(|s| s.get("template"))
        .cloned()
        .unwrap_or(serde_json::Value::Object(Default::default()));
    let decoded = serde_json::from_value::<DatadogPodAutoscalerTemplate>(template);
    let builtin_drift = is_builtin(&name)
        && builtin_profiles().into_iter().any(|b| {
            b.metadata.name.as_deref() == Some(name.as_str())
                && (decoded.as_ref().ok() != Some(&b.spec.template)
                    || o.labels().get(labels::MANAGED_BY) != Some(&labels::MANAGED_BY_DATADOG.to_owned()))
        });
    let profile = match decoded {
        Ok(t) => Profile::new(t),
        Err(e) => Profile::undecodable(format!("spec.template: {e}")),
    };
    let status = o
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    Some((
        name,
        ProfileObject {
            profile,
            status,
            generation: o.metadata.generation,
            builtin_drift,
        },
    ))
}

/// Applies the built-in profiles (server-side apply of their metadata and spec, forced). The agent
/// calls it once at startup; the controller calls it again for one that drifted.
pub async fn ensure_builtins(client: &Client) -> Result<(), Error> {
    for p in builtin_profiles() {
        apply_builtin(client, &p).await?;
    }
    Ok(())
}

/// [`ensure_builtins`] until it succeeds (the CRD may not be installed yet), retrying after 5 s,
/// doubling up to 5 min; ends when `stop` is cancelled. One apply per built-in profile when the CRD
/// is there: nothing periodic.
pub async fn ensure_builtins_until_done(client: Client, stop: CancellationToken) {
    let mut delay = Duration::from_secs(5);
    let mut first = true;
    loop {
        match ensure_builtins(&client).await {
            Ok(()) => {
                tracing::info!("built-in profiles applied");
                return;
            }
            Err(error) if first => {
                tracing::warn!(error = ?error, "built-in profiles not applied yet; retrying with backoff");
                first = false;
            }
            Err(error) => tracing::debug!(%error, "built-in profiles not applied yet; retrying"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(300));
    }
}

async fn apply_builtin(client: &Client, p: &DatadogPodAutoscalerClusterProfile) -> Result<(), Error> {
    let api: Api<DatadogPodAutoscalerClusterProfile> = Api::all(client.clone());
    let name = p.name_any();
    api.patch(
        &name,
        &PatchParams::apply(field_managers::PROFILES).force(),
        &Patch::Apply(p),
    )
    .await
    .map(|_| ())
    .map_err(|e| Error::Api("apply built-in profile", name, e))
}

/// How long a DPA this controller just wrote or deleted overrides what the DPA source says (the
/// source learns of it through its watch a moment later).
const RECENT: Duration = Duration::from_secs(5);

/// The controller; see the module docs.
pub struct ProfileController {
    client: Client,
    config: Config,
    dpas: Arc<dyn DpaSource>,
    changes: Option<mpsc::Receiver<DpaChange>>,
    counters: Arc<Counters>,
}

impl Debug for ProfileController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileController")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The controller's own DPA reflector, for standalone use.
struct OwnDpas(kube::runtime::reflector::Store<DatadogPodAutoscaler>);

impl DpaSource for OwnDpas {
    fn get(&self, namespace: &str, name: &str) -> Option<Arc<DatadogPodAutoscaler>> {
        self.0
            .get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))
    }
    fn list(&self) -> Vec<Arc<DatadogPodAutoscaler>> {
        self.0.state()
    }
}

impl ProfileController {
    /// A controller reading DPAs from `dpas`, told of their changes on `changes` (the agent's index).
    pub fn with_dpas(
        client: Client,
        config: Config,
        dpas: Arc<dyn DpaSource>,
        changes: mpsc::Receiver<DpaChange>,
    ) -> Self {
        Self {
            client,
            config,
            dpas,
            changes: Some(changes),
            counters: Arc::default(),
        }
    }

    /// A standalone controller with a DPA reflector of its own (started by [`ProfileController::run`]).
    pub fn new(client: Client, config: Config) -> Self {
        let (store, _writer) = kube::runtime::reflector::store::<DatadogPodAutoscaler>();
        Self {
            client,
            config,
            dpas: Arc::new(OwnDpas(store)),
            changes: None,
            counters: Arc::default(),
        }
    }

    /// The counters (shared; valid while and after the controller runs).
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Runs until `stop` is cancelled; writes only while `leader` says so.
    pub async fn run(self, mut leader: watch::Receiver<bool>, stop: CancellationToken) {
        let period = self.config.period;
        let debounce = self.config.debounce;
        let mut driver = self.start(&stop);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = driver.state.notify.notified() => {}
                c = driver.changes.recv() => match c {
                    Some(c) => driver.note(&c),
                    None => break,
                },
                _ = tick.tick() => {}
                r = leader.changed() => if r.is_err() { break },
            }
            // collect what arrives together
            tokio::time::sleep(debounce).await;
            if driver.is_ready() && *leader.borrow() {
                driver.pass().await;
            }
        }
    }

    /// Starts the watches and returns a [`Driver`] that runs passes when asked ([`ProfileController::run`]
    /// asks on every change and every period; benchmarks ask themselves).
    pub fn start(mut self, stop: &CancellationToken) -> Driver {
        let notify = Arc::new(Notify::new());
        let changes = match self.changes.take() {
            Some(c) => c,
            None => self.spawn_own_dpas(stop),
        };
        let labelled = watcher::Config::default().labels(labels::PROFILE);
        let profiles = spawn_mirror(
            watcher::watcher(
                Api::<DynamicObject>::all_with(self.client.clone(), &profile_resource()),
                watcher::Config::default(),
            )
            .default_backoff()
            .boxed(),
            profile_of,
            &notify,
            stop,
            "profiles",
        );
        let deployments = spawn_mirror(
            metadata_stream(
                Api::<PartialObjectMeta<Deployment>>::all(self.client.clone()),
                labelled.clone(),
            ),
            deployment_of,
            &notify,
            stop,
            "deployments",
        );
        let stateful_sets = spawn_mirror(
            metadata_stream(
                Api::<PartialObjectMeta<StatefulSet>>::all(self.client.clone()),
                labelled.clone(),
            ),
            stateful_set_of,
            &notify,
            stop,
            "statefulsets",
        );
        let namespaces = spawn_mirror(
            metadata_stream(
                Api::<PartialObjectMeta<Namespace>>::all(self.client.clone()),
                labelled,
            ),
            namespace_of,
            &notify,
            stop,
            "namespaces",
        );
        let state = State {
            client: self.client.clone(),
            recorder: Recorder::new(
                self.client.clone(),
                Reporter {
                    controller: events::REPORTER.to_owned(),
                    instance: self.config.instance.clone(),
                },
            ),
            counters: self.counters.clone(),
            dpas: self.dpas.clone(),
            dpas_synced: false,
            profiles,
            deployments,
            stateful_sets,
            namespaces,
            scoped: BTreeMap::new(),
            notify,
            stop: stop.clone(),
            recent: HashMap::new(),
            noticed: BTreeSet::new(),
        };
        Driver { state, changes }
    }

    fn spawn_own_dpas(&mut self, stop: &CancellationToken) -> mpsc::Receiver<DpaChange> {
        let (store, writer) = kube::runtime::reflector::store::<DatadogPodAutoscaler>();
        self.dpas = Arc::new(OwnDpas(store));
        let (tx, rx) = mpsc::channel(64);
        let api = Api::<DatadogPodAutoscaler>::all(self.client.clone());
        let stop = stop.clone();
        tokio::spawn(
            async move {
                let stream = kube::runtime::reflector::reflector(
                    writer,
                    watcher::watcher(api, watcher::Config::default()),
                )
                .default_backoff();
                let mut stream = std::pin::pin!(stream);
                loop {
                    let ev = tokio::select! {
                        () = stop.cancelled() => return,
                        ev = stream.next() => ev,
                    };
                    let Some(ev) = ev else { return };
                    let change = match ev {
                        Ok(Event::InitDone) => DpaChange::Synced,
                        Ok(Event::Apply(d) | Event::Delete(d)) => {
                            DpaChange::Changed((d.namespace().unwrap_or_default(), d.name_any()))
                        }
                        _ => continue,
                    };
                    let _ = tx.try_send(change);
                }
            }
            .instrument(tracing::info_span!("profile_dpa_watch")),
        );
        rx
    }
}

/// The started controller: its watches run; [`Driver::pass`] plans and carries out one pass.
pub struct Driver {
    state: State,
    changes: mpsc::Receiver<DpaChange>,
}

/// What one [`Driver::pass`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PassReport {
    /// Workloads seen (labelled, or in a labelled namespace).
    pub workloads: usize,
    /// DPAs seen.
    pub dpas: usize,
    /// Writes the plan asked for (DPA creates, updates and deletes).
    pub planned: usize,
    /// Counters of the pass.
    pub counters: CounterSnapshot,
    /// Time spent planning (gathering inputs included).
    pub plan_micros: u64,
    /// Wall-clock time of the pass.
    pub elapsed_micros: u64,
}

impl Driver {
    fn note(&mut self, c: &DpaChange) {
        if *c == DpaChange::Synced {
            self.state.dpas_synced = true;
        }
    }

    /// Whether every input has listed (DPAs, profiles, labelled objects, labelled namespaces'
    /// workloads); follows the labelled namespaces first.
    pub fn is_ready(&mut self) -> bool {
        while let Ok(c) = self.changes.try_recv() {
            self.note(&c);
        }
        self.state.follow_namespaces();
        self.state.ready()
    }

    /// One pass (this replica must lead: nothing here checks the lease). `None` until
    /// [`Driver::is_ready`].
    pub async fn pass(&mut self) -> Option<PassReport> {
        if !self.is_ready() {
            return None;
        }
        Some(self.state.pass().await)
    }

    /// The counters.
    pub fn counters(&self) -> CounterSnapshot {
        self.state.counters.snapshot()
    }

    /// How many DPAs the DPA source holds.
    pub fn dpas_seen(&self) -> usize {
        self.state.dpas.list().len()
    }
}

/// A write the DPA source may not have seen yet.
struct Recent {
    at: Instant,
    /// Resource version the source showed before the write (`None`: the DPA did not exist).
    before: Option<String>,
    /// The DPA as written, `None` when deleted.
    written: Option<Arc<DatadogPodAutoscaler>>,
}

/// The namespace-scoped watches of one labelled namespace.
struct Scoped {
    stop: CancellationToken,
    deployments: Arc<Mirror<Workload>>,
    stateful_sets: Arc<Mirror<Workload>>,
}

/// The loop's state.
struct State {
    client: Client,
    recorder: Recorder,
    counters: Arc<Counters>,
    dpas: Arc<dyn DpaSource>,
    dpas_synced: bool,
    profiles: Arc<Mirror<ProfileObject>>,
    deployments: Arc<Mirror<Workload>>,
    stateful_sets: Arc<Mirror<Workload>>,
    namespaces: Arc<Mirror<String>>,
    scoped: BTreeMap<String, Scoped>,
    notify: Arc<Notify>,
    stop: CancellationToken,
    /// DPAs written (`Some`) or deleted (`None`) a moment ago, with the resource version the source
    /// had before (`None`: absent), until the source moves on from it.
    recent: HashMap<Key, Recent>,
    /// Notices already published as events.
    noticed: BTreeSet<Notice>,
}

impl State {
    /// Starts and stops the namespace-scoped watches to follow the labelled namespaces.
    fn follow_namespaces(&mut self) {
        let labelled: BTreeMap<String, String> = self.namespaces.items.lock().clone();
        self.scoped.retain(|ns, s| {
            let keep = labelled.contains_key(ns);
            if !keep {
                s.stop.cancel();
            }
            keep
        });
        for ns in labelled.keys() {
            if self.scoped.contains_key(ns) {
                continue;
            }
            let stop = self.stop.child_token();
            let scoped = Scoped {
                deployments: spawn_mirror(
                    metadata_stream(
                        Api::<PartialObjectMeta<Deployment>>::namespaced(self.client.clone(), ns),
                        watcher::Config::default(),
                    ),
                    deployment_of,
                    &self.notify,
                    &stop,
                    "namespace deployments",
                ),
                stateful_sets: spawn_mirror(
                    metadata_stream(
                        Api::<PartialObjectMeta<StatefulSet>>::namespaced(self.client.clone(), ns),
                        watcher::Config::default(),
                    ),
                    stateful_set_of,
                    &self.notify,
                    &stop,
                    "namespace statefulsets",
                ),
                stop,
            };
            self.scoped.insert(ns.clone(), scoped);
        }
    }

    fn ready(&self) -> bool {
        self.dpas_synced
            && self.profiles.is_ready()
            && self.deployments.is_ready()
            && self.stateful_sets.is_ready()
            && self.namespaces.is_ready()
            && self
                .scoped
                .values()
                .all(|s| s.deployments.is_ready() && s.stateful_sets.is_ready())
    }

    /// The DPAs: the source's, with what this controller wrote a moment ago laid over them.
    fn dpas(&mut self) -> Vec<Arc<DatadogPodAutoscaler>> {
        let mut all: BTreeMap<Key, Arc<DatadogPodAutoscaler>> = self
            .dpas
            .list()
            .into_iter()
            .map(|d| ((d.namespace().unwrap_or_default(), d.name_any()), d))
            .collect();
        self.recent.retain(|key, r| {
            // The source still shows what was there before the write: it has not seen it yet.
            let stale = all.get(key).and_then(|c| c.metadata.resource_version.clone()) == r.before;
            if !stale || r.at.elapsed() > RECENT {
                return false;
            }
            match &r.written {
                Some(w) => all.insert(key.clone(), w.clone()),
                None => all.remove(key),
            };
            true
        });
        all.into_values().collect()
    }

    /// One pass: plan and carry out (the caller checked [`State::ready`]).
    async fn pass(&mut self) -> PassReport {
        let started = Instant::now();
        let before = self.counters.snapshot();
        inc(&self.counters.passes);
        let profile_objects: BTreeMap<String, ProfileObject> = self.profiles.items.lock().clone();
        for name in profile_objects
            .iter()
            .filter(|(_, p)| p.builtin_drift)
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>()
        {
            self.reset_builtin(&name).await;
        }
        // a deleted built-in profile is recreated too
        for b in builtin_profiles() {
            if !profile_objects.contains_key(&b.name_any()) {
                self.reset_builtin(&b.name_any()).await;
            }
        }
        let profiles: BTreeMap<String, Profile> = profile_objects
            .iter()
            .map(|(n, p)| (n.clone(), p.profile.clone()))
            .collect();
        let mut workloads = self.deployments.values();
        workloads.extend(self.stateful_sets.values());
        for s in self.scoped.values() {
            workloads.extend(s.deployments.values());
            workloads.extend(s.stateful_sets.values());
        }
        let namespaces: BTreeMap<String, String> = self.namespaces.items.lock().clone();
        let dpas = self.dpas();
        let plan = plan::plan(Inputs {
            workloads: &workloads,
            namespaces: &namespaces,
            profiles: &profiles,
            dpas: &dpas,
        });
        let planned = plan.writes.len() + plan.deletes.len();
        let plan_micros = micros(started.elapsed());
        self.carry_out(plan, &profile_objects).await;
        PassReport {
            workloads: workloads.len(),
            dpas: dpas.len(),
            planned,
            counters: self.counters.snapshot().since(&before),
            plan_micros,
            elapsed_micros: micros(started.elapsed()),
        }
    }

    async fn reset_builtin(&mut self, name: &str) {
        let Some(p) = builtin_profiles()
            .into_iter()
            .find(|b| b.metadata.name.as_deref() == Some(name))
        else {
            return;
        };
        match apply_builtin(&self.client, &p).await {
            Ok(()) => {
                inc(&self.counters.builtin_resets);
                tracing::info!(profile = name, "built-in profile reset");
            }
            Err(error) => {
                inc(&self.counters.errors);
                tracing::warn!(%error, profile = name, "cannot reset built-in profile");
            }
        }
    }

    async fn carry_out(&mut self, plan: Plan, profiles: &BTreeMap<String, ProfileObject>) {
        let Plan {
            writes,
            deletes,
            notices,
            statuses,
        } = plan;
        for w in writes {
            let key = (w.dpa.namespace().unwrap_or_default(), w.dpa.name_any());
            match self.write(&w).await {
                Ok(written) => {
                    inc(match w.why {
                        Why::Create => &self.counters.creates,
                        Why::Update | Why::Drift => &self.counters.updates,
                    });
                    tracing::info!(namespace = %key.0, name = %key.1, why = ?w.why, "generated DPA written");
                    self.recent.insert(
                        key,
                        Recent {
                            at: Instant::now(),
                            before: w.resource_version.clone(),
                            written: Some(Arc::new(written)),
                        },
                    );
                }
                Err(error) => {
                    inc(&self.counters.errors);
                    tracing::warn!(error = %crate::controller::error_chain(&error), namespace = %key.0, name = %key.1, "cannot write generated DPA");
                }
            }
        }
        for (ns, name) in deletes {
            let before = self
                .dpas
                .get(&ns, &name)
                .and_then(|d| d.metadata.resource_version.clone());
            let api: Api<DatadogPodAutoscaler> = Api::namespaced(self.client.clone(), &ns);
            match api.delete(&name, &DeleteParams::default()).await {
                Err(kube::Error::Api(s)) if s.code != 404 => {
                    inc(&self.counters.errors);
                    tracing::warn!(error = %s, namespace = %ns, name = %name, "cannot delete generated DPA");
                }
                Ok(_) | Err(kube::Error::Api(_)) => {
                    inc(&self.counters.deletes);
                    tracing::info!(namespace = %ns, name = %name, "generated DPA deleted");
                    self.recent.insert(
                        (ns, name),
                        Recent {
                            at: Instant::now(),
                            before,
                            written: None,
                        },
                    );
                }
                Err(error) => {
                    inc(&self.counters.errors);
                    tracing::warn!(%error, namespace = %ns, name = %name, "cannot delete generated DPA");
                }
            }
        }
        // events once per distinct notice; forget notices that no longer hold so they can come back
        let current: BTreeSet<Notice> = notices.into_iter().collect();
        self.noticed.retain(|n| current.contains(n));
        for n in current {
            if self.noticed.contains(&n) {
                continue;
            }
            self.publish(&n).await;
            self.noticed.insert(n);
        }
        for (name, want) in statuses {
            let Some(have) = profiles.get(&name) else { continue };
            if let Some(body) = status_body(&name, have, &want) {
                let api = Api::<DynamicObject>::all_with(self.client.clone(), &profile_resource());
                match api
                    .patch_status(
                        &name,
                        &PatchParams::apply(field_managers::PROFILES).force(),
                        &Patch::Apply(body),
                    )
                    .await
                {
                    Ok(_) => inc(&self.counters.status_writes),
                    Err(error) => {
                        inc(&self.counters.errors);
                        tracing::warn!(%error, profile = %name, "cannot write profile status");
                    }
                }
            }
        }
    }

    async fn write(&self, w: &plan::Write) -> Result<DatadogPodAutoscaler, Error> {
        let ns = w.dpa.namespace().unwrap_or_default();
        let name = w.dpa.name_any();
        let api: Api<DatadogPodAutoscaler> = Api::namespaced(self.client.clone(), &ns);
        let pp = PostParams {
            dry_run: false,
            field_manager: Some(field_managers::PROFILES.to_owned()),
        };
        match (&w.why, &w.resource_version) {
            (Why::Create, _) | (_, None) => api
                .create(&pp, &w.dpa)
                .await
                .map_err(|e| Error::Api("create generated DPA", format!("{ns}/{name}"), e)),
            (_, Some(rv)) => {
                let mut dpa = w.dpa.clone();
                dpa.metadata.resource_version = Some(rv.clone());
                api.replace(&name, &pp, &dpa)
                    .await
                    .map_err(|e| Error::Api("replace generated DPA", format!("{ns}/{name}"), e))
            }
        }
    }

    async fn publish(&self, n: &Notice) {
        let reference = match &n.subject {
            Subject::Workload(kind, ns, name) => ObjectReference {
                api_version: Some(plan::PROFILE_API_VERSION.to_owned()),
                kind: Some(kind.as_str().to_owned()),
                namespace: Some(ns.clone()),
                name: Some(name.clone()),
                ..Default::default()
            },
            Subject::Namespace(ns) => ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Namespace".to_owned()),
                name: Some(ns.clone()),
                ..Default::default()
            },
        };
        let ev = KubeEvent {
            type_: EventType::Warning,
            reason: n.reason.to_owned(),
            note: Some(n.message.clone()),
            action: "GenerateAutoscaler".to_owned(),
            secondary: None,
        };
        match self.recorder.publish(&ev, &reference).await {
            Ok(()) => inc(&self.counters.events),
            Err(error) => tracing::warn!(%error, reason = n.reason, "cannot publish event"),
        }
    }
}

/// The status to apply to a profile, or `None` when it already shows `want`.
fn status_body(name: &str, have: &ProfileObject, want: &ProfileStatus) -> Option<serde_json::Value> {
    let current = have.status.clone().unwrap_or_default();
    let (status, reason, message) = match &want.valid {
        Ok(()) => (STATUS_TRUE, "Valid", "the template is valid".to_owned()),
        Err(e) => (STATUS_FALSE, e.reason, e.message.clone()),
    };
    let old = current.condition(VALID);
    let hash = want.template_hash.clone().or(current.template_hash.clone());
    let same = old.is_some_and(|c| c.status == status && c.reason == reason && c.message == message)
        && current.template_hash == hash
        && current.controlled_autoscalers == Some(want.controlled_autoscalers);
    if same {
        return None;
    }
    let transition = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    };
    let condition = Condition {
        type_: VALID.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: transition,
        observed_generation: have.generation,
    };
    let status = DatadogPodAutoscalerClusterProfileStatus {
        conditions: Some(vec![condition]),
        template_hash: hash,
        controlled_autoscalers: Some(want.controlled_autoscalers),
    };
    Some(serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": CLUSTER_PROFILE_KIND,
        "metadata": {"name": name},
        "status": status,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Invalid;

    fn object(status: Option<DatadogPodAutoscalerClusterProfileStatus>) -> ProfileObject {
        ProfileObject {
            profile: Profile::new(DatadogPodAutoscalerTemplate::default()),
            status,
            generation: Some(1),
            builtin_drift: false,
        }
    }

    #[test]
    fn status_is_written_only_when_it_changes() {
        let want = ProfileStatus {
            valid: Ok(()),
            template_hash: Some("abc".into()),
            controlled_autoscalers: 2,
        };
        let body = status_body("p", &object(None), &want);
        let Some(body) = body else {
            panic!("a first status is written")
        };
        let written: DatadogPodAutoscalerClusterProfileStatus =
            serde_json::from_value(body["status"].clone()).unwrap_or_default();
        assert_eq!(written.controlled_autoscalers, Some(2));
        assert_eq!(
            written.condition(VALID).map(|c| c.status.as_str()),
            Some(STATUS_TRUE)
        );
        assert_eq!(status_body("p", &object(Some(written.clone())), &want), None);
        // invalid: the last applied hash is kept, the condition says why
        let invalid = ProfileStatus {
            valid: Err(Invalid {
                reason: "InvalidSpec",
                message: "constraints.maxReplicas 1 is below minReplicas 3".into(),
            }),
            template_hash: None,
            controlled_autoscalers: 2,
        };
        let body = status_body("p", &object(Some(written)), &invalid);
        let Some(body) = body else {
            panic!("the condition changed")
        };
        assert_eq!(body["status"]["templateHash"], "abc");
        assert_eq!(body["status"]["conditions"][0]["status"], STATUS_FALSE);
        assert_eq!(body["status"]["conditions"][0]["reason"], "InvalidSpec");
    }

    #[test]
    fn builtin_drift_is_detected_from_the_object() {
        let b = &builtin_profiles()[1];
        let mut v = serde_json::to_value(b).unwrap_or_default();
        let o: DynamicObject = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}"));
        let Some((_, p)) = profile_of(&o) else {
            panic!("decoded")
        };
        assert!(!p.builtin_drift && p.profile.template.is_ok());
        v["spec"]["template"]["constraints"]["minReplicas"] = serde_json::json!(7);
        let o: DynamicObject = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert!(profile_of(&o).is_some_and(|(_, p)| p.builtin_drift));
        // an undecodable template: invalid, and for a built-in one, drift
        v["spec"]["template"]["objectives"][0]["type"] = serde_json::json!("Foo");
        let o: DynamicObject = serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
        let Some((_, p)) = profile_of(&o) else {
            panic!("decoded")
        };
        assert!(p.builtin_drift);
        assert!(p.profile.template.is_err_and(|e| e.message.contains("Foo")));
    }
}
