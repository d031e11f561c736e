//! The controller: a DPA reflector, a work queue and the periodic recommendation pass.
//!
//! - A reflector keeps every DPA in memory; each change enqueues its key.
//! - Every recommendation period the leader lists PodMetrics once per namespace with DPAs
//!   (metrics.k8s.io cannot be watched), recomputes the per-cluster limit and enqueues every DPA.
//! - The work queue never runs one key twice at once (a key changed while it runs is queued again
//!   when it finishes), runs at most `concurrency` reconciles, honours requeue-after, and retries
//!   failures with exponential backoff up to `max_retries` times (the next period retries anyway).
//! - Only the leader reconciles and writes; followers keep the DPA cache warm. Every write checks
//!   leadership just before it is made, so losing the lease stops writes at once.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::events::{Recorder, Reporter};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use lazyscale_api::consts::events::REPORTER;
use lazyscale_api::{DatadogPodAutoscaler, DatadogPodAutoscalerStatus};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use lazyscale_api::HorizontalStatus;
use lazyscale_core::horizontal::policy::History;
use lazyscale_core::horizontal::recommender::{Recommender, Settings};

use crate::explain::{self, Explanation};
use crate::horizontal;
use crate::pods::PodSource;
use crate::reconcile::{self, Requeue};
use crate::scale::Resolver;
use crate::usage::{self, NamespaceUsage};
use crate::validate::{self, SelfTarget};
use lazyscale_api::time;

/// A DPA key: namespace and name.
pub type Key = (String, String);

/// Where the controller reads DPAs from: its own reflector ([`Controller::new`]) or the agent's one
/// DPA index ([`Controller::with_dpas`]), so the agent watches DPAs once.
pub trait DpaSource: Send + Sync {
    /// One DPA.
    fn get(&self, namespace: &str, name: &str) -> Option<Arc<DatadogPodAutoscaler>>;
    /// Every DPA.
    fn list(&self) -> Vec<Arc<DatadogPodAutoscaler>>;
    /// One DPA the source holds but could not decode ([`validate::decode`]); the controller
    /// reports it `InvalidSpec` instead of acting on it.
    fn undecodable(&self, _namespace: &str, _name: &str) -> Option<Arc<validate::Undecodable>> {
        None
    }
    /// Every DPA the source could not decode.
    fn undecodables(&self) -> Vec<Arc<validate::Undecodable>> {
        Vec::new()
    }
}

/// A change of an external [`DpaSource`], sent by its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DpaChange {
    /// This DPA was added, changed or deleted.
    Changed(Key),
    /// The source has its initial list (again, after a relist).
    Synced,
}

/// The controller's own reflector store as a [`DpaSource`].
struct StoreDpas(Store<DatadogPodAutoscaler>);

impl DpaSource for StoreDpas {
    fn get(&self, namespace: &str, name: &str) -> Option<Arc<DatadogPodAutoscaler>> {
        self.0.get(&ObjectRef::new(name).within(namespace))
    }

    fn list(&self) -> Vec<Arc<DatadogPodAutoscaler>> {
        self.0.state()
    }
}

/// Controller settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often PodMetrics are listed and every DPA is reconciled (30 s).
    pub recommendation_period: Duration,
    /// Reconciles running at once (the Cluster Agent's `num_workers` is 2; more helps with many DPAs).
    pub concurrency: usize,
    /// Per-cluster number of active autoscalers, oldest first (`autoscaling.workload.limit`, 1000).
    pub limit: usize,
    /// Retries of a failed reconcile before waiting for the next period (5, as the Cluster Agent).
    pub max_retries: u32,
    /// First retry delay; doubles per failure.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Recommender tunables (the engine's; the DCA's values by default).
    pub recommender: Settings,
    /// The agent's own workload (namespace, kind, name), which it refuses to scale.
    pub self_target: Option<SelfTarget>,
    /// Watch DPAs of this namespace only (all namespaces when `None`).
    pub namespace: Option<String>,
    /// Reporting instance of events (the pod name).
    pub instance: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            recommendation_period: Duration::from_secs(30),
            concurrency: 8,
            limit: 1000,
            max_retries: 5,
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            recommender: Settings::default(),
            self_target: None,
            namespace: None,
            instance: None,
        }
    }
}

/// Counters since the controller was created.
#[derive(Debug, Default)]
pub struct Counters {
    /// API requests made by reconciles and passes (watches not included).
    pub api_requests: AtomicU64,
    /// Status writes.
    pub status_writes: AtomicU64,
    /// Scale writes.
    pub scale_writes: AtomicU64,
    /// Scale writes that failed.
    pub scale_errors: AtomicU64,
    /// Reconciles run.
    pub reconciles: AtomicU64,
    /// Reconciles that failed.
    pub errors: AtomicU64,
    /// Decisions held because the inputs were re-syncing ([`crate::inputs::Hold`]).
    pub held: AtomicU64,
    /// Decisions dropped before their write ([`crate::inputs::Dropped`]).
    pub dropped: AtomicU64,
}

/// A copy of the [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// API requests.
    pub api_requests: u64,
    /// Status writes.
    pub status_writes: u64,
    /// Scale writes.
    pub scale_writes: u64,
    /// Failed scale writes.
    pub scale_errors: u64,
    /// Reconciles.
    pub reconciles: u64,
    /// Failed reconciles.
    pub errors: u64,
    /// Held decisions.
    pub held: u64,
    /// Dropped decisions.
    pub dropped: u64,
}

impl Counters {
    fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            api_requests: self.api_requests.load(Ordering::Relaxed),
            status_writes: self.status_writes.load(Ordering::Relaxed),
            scale_writes: self.scale_writes.load(Ordering::Relaxed),
            scale_errors: self.scale_errors.load(Ordering::Relaxed),
            reconciles: self.reconciles.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            held: self.held.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

impl std::ops::Sub for CounterSnapshot {
    type Output = CounterSnapshot;
    fn sub(self, o: Self) -> Self {
        CounterSnapshot {
            api_requests: self.api_requests.saturating_sub(o.api_requests),
            status_writes: self.status_writes.saturating_sub(o.status_writes),
            scale_writes: self.scale_writes.saturating_sub(o.scale_writes),
            scale_errors: self.scale_errors.saturating_sub(o.scale_errors),
            reconciles: self.reconciles.saturating_sub(o.reconciles),
            errors: self.errors.saturating_sub(o.errors),
            held: self.held.saturating_sub(o.held),
            dropped: self.dropped.saturating_sub(o.dropped),
        }
    }
}

/// State shared by the loop, the reconciles and the [`Handle`]s.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) config: Config,
    pub(crate) pods: Arc<dyn PodSource>,
    pub(crate) resolver: Resolver,
    pub(crate) recorder: Recorder,
    pub(crate) recommender: Recommender,
    pub(crate) dpas: Arc<dyn DpaSource>,
    /// What the controller keeps per DPA reconciled (bounded by the DPAs): one entry, one key.
    per_dpa: Mutex<HashMap<Key, PerDpa>>,
    usage: RwLock<HashMap<String, Arc<NamespaceUsage>>>,
    /// Which DPAs are within the per-cluster limit (one key, not one per DPA).
    limit: RwLock<validate::Cutoff>,
    limit_dirty: AtomicBool,
    leader: RwLock<watch::Receiver<bool>>,
    pub(crate) counters: Counters,
}

impl Shared {
    pub(crate) fn dpa(&self, key: &Key) -> Option<Arc<DatadogPodAutoscaler>> {
        self.dpas.get(&key.0, &key.1)
    }

    /// Whether this replica leads right now (a closed channel means it does not).
    pub(crate) fn is_leader(&self) -> bool {
        let rx = self.leader.read();
        rx.has_changed().is_ok() && *rx.borrow()
    }

    pub(crate) fn count_request(&self) {
        self.counters.api_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn usage_of(&self, ns: &str) -> Option<Arc<NamespaceUsage>> {
        self.usage.read().get(ns).cloned()
    }

    /// The history of `key`: the one in memory, else the one stored in its status.
    pub(crate) fn history(&self, key: &Key, stored: Option<&HorizontalStatus>) -> History {
        if let Some(h) = self.per_dpa.lock().get(key).and_then(|e| e.history.as_ref()) {
            return h.clone();
        }
        stored.map(horizontal::restore_history).unwrap_or_default()
    }

    /// Keeps the history of `key` for the next evaluation.
    pub(crate) fn keep_history(&self, key: &Key, history: History) {
        self.with_entry(key, |e| e.history = Some(history));
    }

    /// Forgets everything about a DPA that is gone.
    pub(crate) fn forget(&self, key: &Key) {
        let mut all = self.per_dpa.lock();
        all.remove(key);
        shrink_if_sparse(&mut all);
    }

    /// Changes the entry of `key` (made when missing; the key is copied only then).
    fn with_entry(&self, key: &Key, f: impl FnOnce(&mut PerDpa)) {
        let mut all = self.per_dpa.lock();
        match all.get_mut(key) {
            Some(e) => f(e),
            None => f(all.entry(key.clone()).or_default()),
        }
    }

    /// Keeps the fields written last for `key` until the DPA watch shows them ([`Shared::old_status`]).
    /// When the watch delivered them before the write's response came back, they go at once.
    pub(crate) fn keep_written(&self, key: &Key, written: crate::reconcile::Owned) {
        self.with_entry(key, |e| e.written = Some(Box::new(written)));
        self.settle_written(key);
    }

    /// Forgets what another leader may have moved on from (histories, statuses written): they are
    /// restored from the stored status. Explanations stay.
    fn forget_leader_state(&self) {
        let mut all = self.per_dpa.lock();
        all.retain(|_, e| {
            e.history = None;
            e.written = None;
            !e.is_empty()
        });
        shrink_if_sparse(&mut all);
    }

    pub(crate) fn explain_store(&self, key: &Key, e: Explanation) {
        let e = Arc::new(e);
        self.with_entry(key, |entry| entry.explanation = Some(e));
    }

    /// The status to compare with: the stored one with the fields this writer wrote last put in, until
    /// the DPA watch shows them. Only the writer's own fields are kept and compared: the vertical
    /// writer's changes to the rest do not keep a written entry alive.
    pub(crate) fn old_status(
        &self,
        key: &Key,
        stored: DatadogPodAutoscalerStatus,
    ) -> DatadogPodAutoscalerStatus {
        compare_written(&mut self.per_dpa.lock(), key, stored)
    }

    /// Drops the fields written last for `key` as soon as the DPA watch shows them ([`status_to_compare`]
    /// on the DPA just delivered), instead of at the DPA's next reconcile: during a rollout of thousands
    /// of DPAs most written statuses would otherwise wait in memory for a reconcile far down the queue.
    pub(crate) fn settle_written(&self, key: &Key) {
        let Some(dpa) = self.dpa(key) else {
            return;
        };
        let mut all = self.per_dpa.lock();
        if all.get(key).is_some_and(|e| e.written.is_some()) {
            let _ = compare_written(&mut all, key, dpa.status.clone().unwrap_or_default());
        }
    }

    /// Whether `dpa` is among the `limit` oldest DPAs of the cluster.
    pub(crate) fn within_limit(&self, dpa: &DatadogPodAutoscaler) -> bool {
        if self.limit_dirty.swap(false, Ordering::AcqRel) {
            self.recompute_limit();
        }
        let meta = &dpa.metadata;
        self.limit.read().admits(
            created_ms(dpa),
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }

    fn recompute_limit(&self) {
        let all: Vec<validate::LimitKey> = self
            .dpas
            .list()
            .iter()
            .map(|d| (created_ms(d), d.namespace().unwrap_or_default(), d.name_any()))
            .collect();
        *self.limit.write() = validate::limit_cutoff(all, self.config.limit);
    }

    /// The DPAs to reconcile: those decoded, and those that were not (to report them).
    fn keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .dpas
            .list()
            .iter()
            .map(|d| (d.namespace().unwrap_or_default(), d.name_any()))
            .collect();
        keys.extend(self.dpas.undecodables().iter().map(|u| u.key()));
        keys
    }

    /// Lists PodMetrics of every namespace with DPAs and recomputes the limit.
    async fn refresh(&self) {
        self.recompute_limit();
        let namespaces: HashSet<String> = self.keys().into_iter().map(|k| k.0).collect();
        let lists = futures::stream::iter(namespaces)
            .map(|ns| async move {
                let r = usage::list(&self.client, &ns, time::now()).await;
                (ns, r)
            })
            .buffer_unordered(4)
            .collect::<Vec<_>>()
            .await;
        let mut usage = self.usage.write();
        let listed: HashSet<&String> = lists.iter().map(|(ns, _)| ns).collect();
        usage.retain(|ns, _| listed.contains(ns));
        for (ns, r) in lists {
            self.count_request();
            match r {
                Ok(u) => {
                    usage.insert(ns, Arc::new(u));
                }
                Err(error) => {
                    // The previous samples stay; the recommender ignores them once too old.
                    tracing::warn!(namespace = %ns, error = %error_chain(&error), "cannot list pod metrics");
                }
            }
        }
    }
}

/// Formats an error with its sources.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The DPA controller. Create it with [`Controller::new`], keep a [`Handle`] for `explain`, then
/// [`Controller::run`] it.
pub struct Controller {
    shared: Arc<Shared>,
    /// The own reflector (standalone controllers) ...
    writer: Option<reflector::store::Writer<DatadogPodAutoscaler>>,
    store: Option<Store<DatadogPodAutoscaler>>,
    /// ... or the changes of an external source.
    changes: Option<mpsc::Receiver<DpaChange>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// What a [`Controller::pass`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PassReport {
    /// DPAs reconciled.
    pub dpas: usize,
    /// Counters of the pass.
    pub counters: CounterSnapshot,
    /// Wall-clock time of the pass.
    pub elapsed: Duration,
}

impl Controller {
    /// A controller over `client`, reading pods from `pods` and DPAs from a reflector of its own.
    /// Nothing runs until [`Controller::run`].
    pub fn new(client: Client, config: Config, pods: Arc<dyn PodSource>) -> Self {
        let (store, writer) = reflector::store();
        let mut c = Self::build(client, config, pods, Arc::new(StoreDpas(store.clone())));
        c.writer = Some(writer);
        c.store = Some(store);
        c
    }

    /// A controller reading DPAs from `dpas`, told of their changes on `changes` (the agent's one
    /// DPA index; no DPA watch of its own).
    pub fn with_dpas(
        client: Client,
        config: Config,
        pods: Arc<dyn PodSource>,
        dpas: Arc<dyn DpaSource>,
        changes: mpsc::Receiver<DpaChange>,
    ) -> Self {
        let mut c = Self::build(client, config, pods, dpas);
        c.changes = Some(changes);
        c
    }

    fn build(client: Client, config: Config, pods: Arc<dyn PodSource>, dpas: Arc<dyn DpaSource>) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: REPORTER.to_owned(),
                instance: config.instance.clone(),
            },
        );
        // Until `run` gets the real lease, this replica is not the leader; `pass` assumes it is.
        let (_tx, rx) = watch::channel(false);
        let recommender = Recommender::new(config.recommender);
        let shared = Arc::new(Shared {
            resolver: Resolver::new(client.clone()),
            client,
            config,
            pods,
            recorder,
            recommender,
            dpas,
            per_dpa: Mutex::default(),
            usage: RwLock::default(),
            limit: RwLock::new(validate::Cutoff::Everyone),
            limit_dirty: AtomicBool::new(true),
            leader: RwLock::new(rx),
            counters: Counters::default(),
        });
        Self {
            shared,
            writer: None,
            store: None,
            changes: None,
        }
    }

    /// A handle for `explain` and counters, valid while and after the controller runs.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    fn dpa_api(&self) -> Api<DatadogPodAutoscaler> {
        match &self.shared.config.namespace {
            Some(ns) => Api::namespaced(self.shared.client.clone(), ns),
            None => Api::all(self.shared.client.clone()),
        }
    }

    /// Starts the DPA reflector on its own task (for [`Controller::pass`]) and waits for its initial
    /// list. [`Controller::run`] drives the reflector itself; do not call both.
    pub async fn start_cache(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        let writer = self.writer.take()?;
        let stream = reflector::reflector(
            writer,
            watcher::watcher(self.dpa_api(), watcher::Config::default()).default_backoff(),
        );
        let shared = self.shared.clone();
        let task = tokio::spawn(
            async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(ev) = stream.next().await {
                    if matches!(ev, Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone)) {
                        shared.limit_dirty.store(true, Ordering::Release);
                    }
                }
            }
            .instrument(tracing::info_span!("dpa_reflector")),
        );
        if let Some(store) = &self.store {
            let _ = store.wait_until_ready().await;
        }
        Some(task)
    }

    /// One full pass as the leader: list metrics, then reconcile every DPA (bounded concurrency).
    /// Needs the cache ([`Controller::start_cache`]). Used by benchmarks and tests.
    pub async fn pass(&self) -> PassReport {
        let start = Instant::now();
        let before = self.shared.counters.snapshot();
        let (_tx, rx) = watch::channel(true);
        let previous = std::mem::replace(&mut *self.shared.leader.write(), rx);
        self.shared.refresh().await;
        let keys = self.shared.keys();
        let dpas = keys.len();
        let shared = &self.shared;
        futures::stream::iter(keys)
            .for_each_concurrent(self.shared.config.concurrency.max(1), |key| async move {
                shared.counters.reconciles.fetch_add(1, Ordering::Relaxed);
                if let Err(error) = reconcile::reconcile(shared, &key).await {
                    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(namespace = %key.0, name = %key.1, error = %error_chain(&error), "reconcile failed");
                }
            })
            .await;
        *self.shared.leader.write() = previous;
        PassReport {
            dpas,
            counters: self.shared.counters.snapshot() - before,
            elapsed: start.elapsed(),
        }
    }

    /// Runs until `stop`: reconciles while `leader` is `true`, keeps the DPA cache warm otherwise.
    pub async fn run(mut self, leader: watch::Receiver<bool>, stop: CancellationToken) {
        let shared = self.shared.clone();
        *shared.leader.write() = leader.clone();
        let mut leader = leader;
        let mut leader_open = true;
        let mut events: futures::stream::BoxStream<'static, DpaChange> =
            match (self.writer.take(), self.changes.take()) {
                (Some(writer), _) => reflector::reflector(
                    writer,
                    watcher::watcher(self.dpa_api(), watcher::Config::default()).default_backoff(),
                )
                .filter_map(|ev| async move {
                    match ev {
                        Ok(Event::Apply(d) | Event::Delete(d)) => Some(DpaChange::Changed((
                            d.namespace().unwrap_or_default(),
                            d.name_any(),
                        ))),
                        Ok(Event::InitDone) => Some(DpaChange::Synced),
                        Ok(_) => None,
                        Err(error) => {
                            tracing::warn!(error = %error_chain(&error), "DPA watch error");
                            None
                        }
                    }
                })
                .boxed(),
                (None, Some(changes)) => tokio_stream_from(changes),
                (None, None) => futures::stream::pending().boxed(),
            };
        let mut queue = Queue::default();
        let mut tasks: FuturesUnordered<BoxFuture<'static, Done>> = FuturesUnordered::new();
        let mut tick = tokio::time::interval(shared.config.recommendation_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refreshing = false;
        let mut synced = false;
        let mut is_leader = *leader.borrow();
        tracing::info!(leader = is_leader, "controller started");
        loop {
            if is_leader && synced {
                while tasks.len() < shared.config.concurrency.max(1) + usize::from(refreshing) {
                    let Some(key) = queue.pop() else { break };
                    let s = shared.clone();
                    tasks.push(
                        async move {
                            s.counters.reconciles.fetch_add(1, Ordering::Relaxed);
                            let r = reconcile::reconcile(&s, &key).await;
                            Done::Reconciled(key, r)
                        }
                        .boxed(),
                    );
                }
            }
            let deadline = queue.next_deadline();
            tokio::select! {
                () = stop.cancelled() => break,
                changed = leader.changed(), if leader_open => {
                    // A closed channel (the lease task ended) means: not the leader, for good.
                    leader_open = changed.is_ok();
                    if !leader_open {
                        tracing::warn!("leader channel closed: acting as a follower");
                    }
                    let now_leader = leader_open && *leader.borrow();
                    if now_leader != is_leader {
                        tracing::info!(leader = now_leader, "leadership changed");
                        is_leader = now_leader;
                        // Another leader may have moved on: restore from the status.
                        shared.forget_leader_state();
                        if is_leader {
                            tick.reset_immediately();
                        } else {
                            queue.clear();
                        }
                    }
                }
                ev = events.next() => match ev {
                    Some(DpaChange::Changed(key)) => {
                        shared.limit_dirty.store(true, Ordering::Release);
                        shared.settle_written(&key);
                        if synced {
                            queue.push(key);
                        }
                    }
                    Some(DpaChange::Synced) => {
                        shared.limit_dirty.store(true, Ordering::Release);
                        synced = true;
                        tick.reset_immediately();
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if is_leader && synced && !refreshing {
                        refreshing = true;
                        let s = shared.clone();
                        tasks.push(async move { s.refresh().await; Done::Refreshed }.boxed());
                    }
                }
                () = sleep_until(deadline) => queue.expire(Instant::now()),
                Some(done) = tasks.next(), if !tasks.is_empty() => match done {
                    Done::Refreshed => {
                        refreshing = false;
                        for key in shared.keys() {
                            queue.push(key);
                        }
                    }
                    Done::Reconciled(key, r) => {
                        let r = r.map_err(|error| {
                            shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(namespace = %key.0, name = %key.1, error = %error_chain(&error), "reconcile failed");
                        });
                        queue.done(key, r, &shared.config);
                    }
                },
            }
        }
        tracing::info!("controller stopped");
    }
}

/// A channel receiver as a stream.
fn tokio_stream_from(mut rx: mpsc::Receiver<DpaChange>) -> futures::stream::BoxStream<'static, DpaChange> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

enum Done {
    Refreshed,
    Reconciled(Key, Result<Requeue, reconcile::Error>),
}

/// The work queue: deduplicated, one run per key at a time, delayed requeues, failure counts.
#[derive(Default)]
struct Queue {
    ready: VecDeque<Key>,
    queued: HashSet<Key>,
    active: HashSet<Key>,
    dirty: HashSet<Key>,
    delayed: BTreeMap<(Instant, u64), Key>,
    delay_of: HashMap<Key, (Instant, u64)>,
    seq: u64,
    failures: HashMap<Key, u32>,
}

impl Queue {
    fn push(&mut self, key: Key) {
        if self.active.contains(&key) {
            self.dirty.insert(key);
        } else if self.queued.insert(key.clone()) {
            if let Some(at) = self.delay_of.remove(&key) {
                self.delayed.remove(&at);
            }
            self.ready.push_back(key);
        }
    }

    fn push_after(&mut self, key: Key, after: Duration) {
        if self.queued.contains(&key) {
            return;
        }
        let at = Instant::now() + after;
        if let Some(prev) = self.delay_of.get(&key) {
            if prev.0 <= at {
                return;
            }
            let prev = *prev;
            self.delayed.remove(&prev);
        }
        self.seq += 1;
        let slot = (at, self.seq);
        self.delayed.insert(slot, key.clone());
        self.delay_of.insert(key, slot);
    }

    fn pop(&mut self) -> Option<Key> {
        let key = self.ready.pop_front()?;
        self.queued.remove(&key);
        self.active.insert(key.clone());
        Some(key)
    }

    fn done(&mut self, key: Key, result: Result<Requeue, ()>, config: &Config) {
        self.active.remove(&key);
        match result {
            Ok(Requeue(after)) => {
                self.failures.remove(&key);
                if let Some(after) = after {
                    self.push_after(key.clone(), after);
                }
            }
            Err(()) => {
                let n = self.failures.entry(key.clone()).or_insert(0);
                *n += 1;
                if *n <= config.max_retries {
                    let delay = config
                        .retry_base
                        .saturating_mul(1u32 << (*n - 1).min(16))
                        .min(config.retry_max);
                    self.push_after(key.clone(), delay);
                } else {
                    // Give up until the next event or period.
                    self.failures.remove(&key);
                }
            }
        }
        if self.dirty.remove(&key) {
            self.push(key);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.delayed.keys().next().map(|(at, _)| *at)
    }

    fn expire(&mut self, now: Instant) {
        while let Some((&slot, _)) = self.delayed.iter().next() {
            if slot.0 > now {
                break;
            }
            if let Some(key) = self.delayed.remove(&slot) {
                self.delay_of.remove(&key);
                self.push(key);
            }
        }
    }

    fn clear(&mut self) {
        self.ready.clear();
        self.queued.clear();
        self.dirty.clear();
        self.delayed.clear();
        self.delay_of.clear();
        self.failures.clear();
    }
}

/// A cheap, cloneable view of a running (or stopped) controller.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl Handle {
    /// The last reconcile of `namespace/name`, rendered as text (`lazyscale explain NS/NAME`);
    /// `None` when it has not been reconciled (unknown DPA, or this replica is not the leader).
    pub fn explain(&self, namespace: &str, name: &str) -> Option<String> {
        self.explanation(namespace, name)
            .map(|e| explain::render(namespace, name, &e, time::now()))
    }

    /// The last reconcile of `namespace/name`, structured.
    pub fn explanation(&self, namespace: &str, name: &str) -> Option<Arc<Explanation>> {
        self.shared
            .per_dpa
            .lock()
            .get(&(namespace.to_owned(), name.to_owned()))
            .and_then(|e| e.explanation.clone())
    }

    /// The controller's counters.
    pub fn counters(&self) -> CounterSnapshot {
        self.shared.counters.snapshot()
    }

    /// DPAs in the cache.
    pub fn dpas(&self) -> usize {
        self.shared.dpas.list().len()
    }

    /// Approximate heap bytes of what the controller keeps per DPA ([`state_bytes`]); the DPAs
    /// themselves are the source's, the PodMetrics samples per namespace are not counted.
    pub fn approx_heap_bytes(&self) -> usize {
        self.state_bytes().total()
    }

    /// [`Handle::approx_heap_bytes`] by part, with the count of statuses written but not yet seen
    /// back (the part that depends on when it is sampled).
    pub fn state_bytes(&self) -> StateBytes {
        state_bytes(&self.shared.per_dpa.lock())
    }
}

/// The controller's per-DPA state by part ([`Handle::state_bytes`]; approximate heap bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateBytes {
    /// The table's slots (from its capacity) and the keys' strings.
    pub slots_and_keys: usize,
    /// The recommendation histories.
    pub histories: usize,
    /// The last explanation of each DPA.
    pub explanations: usize,
    /// The statuses written but not yet seen back by the DPA watch.
    pub written: usize,
    /// How many statuses are written but not yet seen back.
    pub written_pending: usize,
}

impl StateBytes {
    /// Every part's bytes together.
    pub fn total(&self) -> usize {
        self.slots_and_keys + self.histories + self.explanations + self.written
    }
}

/// What the controller keeps about one DPA; the entry goes when all three are empty.
#[derive(Debug, Default)]
pub(crate) struct PerDpa {
    /// The recommendation history (each bounded by the engine).
    history: Option<History>,
    /// The last reconcile, for `explain`.
    explanation: Option<Arc<Explanation>>,
    /// The fields written last, until the DPA watch shows them.
    written: Option<Box<crate::reconcile::Owned>>,
}

impl PerDpa {
    fn is_empty(&self) -> bool {
        self.history.is_none() && self.explanation.is_none() && self.written.is_none()
    }
}

/// Gives back the per-DPA table's slots once most DPAs are gone ([`lazyscale_api::heap::shrunk_capacity`]):
/// a cluster that goes from 10,000 DPAs to 10 without the stack stopping keeps no 10,000-slot table.
fn shrink_if_sparse(all: &mut HashMap<Key, PerDpa>) {
    if let Some(c) = lazyscale_api::heap::shrunk_capacity(all.len(), all.capacity(), 64) {
        all.shrink_to(c);
    }
}

/// [`Shared::old_status`] for one DPA: `stored` with the fields written last put in while the stored
/// ones differ from them; once they agree, `written` is emptied.
fn status_to_compare(
    written: &mut Option<Box<crate::reconcile::Owned>>,
    mut stored: DatadogPodAutoscalerStatus,
) -> DatadogPodAutoscalerStatus {
    match written {
        Some(w) if **w != crate::reconcile::Owned::of(&stored) => {
            w.put_into(&mut stored);
            stored
        }
        Some(_) => {
            *written = None;
            stored
        }
        None => stored,
    }
}

/// A DPA's creation time in unix milliseconds, its first place in the per-cluster limit (none sorts
/// last).
fn created_ms(d: &DatadogPodAutoscaler) -> i64 {
    d.metadata
        .creation_timestamp
        .as_ref()
        .map_or(i64::MAX, |t| time::unix_millis(time::from_time(t)))
}

/// Heap bytes of a key's two strings.
fn key_bytes(k: &Key) -> usize {
    lazyscale_api::heap::string_bytes(&k.0) + lazyscale_api::heap::string_bytes(&k.1)
}

/// Approximate heap bytes of the controller's per-DPA state: the table's slots (from its capacity)
/// and keys, the recommendation histories ([`History::approx_heap_bytes`]), the last explanation of
/// each ([`explanation_bytes`]) and the statuses written but not yet seen back
/// ([`lazyscale_api::heap::approx_heap_bytes`]). Not counted: the work queue (keys waiting, transient).
/// [`status_to_compare`] on the entry of `key` (`stored` itself when there is none); the entry goes once
/// it holds nothing more.
fn compare_written(
    all: &mut HashMap<Key, PerDpa>,
    key: &Key,
    stored: DatadogPodAutoscalerStatus,
) -> DatadogPodAutoscalerStatus {
    let Some(entry) = all.get_mut(key) else {
        return stored;
    };
    let seen = status_to_compare(&mut entry.written, stored);
    if entry.is_empty() {
        all.remove(key);
        shrink_if_sparse(all);
    }
    seen
}

pub(crate) fn state_bytes(per_dpa: &HashMap<Key, PerDpa>) -> StateBytes {
    use lazyscale_api::heap::hash_table_bytes;
    let mut b = StateBytes {
        slots_and_keys: hash_table_bytes::<(Key, PerDpa)>(per_dpa.capacity()),
        ..StateBytes::default()
    };
    for (k, e) in per_dpa {
        b.slots_and_keys += key_bytes(k);
        b.histories += e.history.as_ref().map_or(0, History::approx_heap_bytes);
        b.explanations += e.explanation.as_deref().map_or(0, explanation_bytes);
        if let Some(w) = &e.written {
            b.written += lazyscale_api::heap::alloc_bytes(std::mem::size_of::<crate::reconcile::Owned>())
                + w.approx_heap_bytes();
            b.written_pending += 1;
        }
    }
    b
}

/// Approximate heap bytes of one explanation in its `Arc`: strings, the boxed parts (blocked reason,
/// recommendation, decision), objective reports (error texts inside a recommendation not counted).
fn explanation_bytes(e: &Explanation) -> usize {
    use lazyscale_api::heap::{alloc_bytes, approx_heap_bytes, arc_bytes, string_bytes};
    use lazyscale_core::horizontal::policy::Decision;
    use lazyscale_core::horizontal::recommender::{ObjectiveReport, Recommendation};
    arc_bytes::<Explanation>()
        + [&e.target, &e.outcome]
            .into_iter()
            .map(|s| string_bytes(s))
            .sum::<usize>()
        + e.blocked.as_deref().map_or(0, |(r, m)| {
            alloc_bytes(std::mem::size_of::<(String, String)>()) + string_bytes(r) + string_bytes(m)
        })
        + alloc_bytes(e.unusable_objectives.capacity() * std::mem::size_of::<String>())
        + e.unusable_objectives
            .iter()
            .map(|s| string_bytes(s))
            .sum::<usize>()
        + e.decision.as_deref().map_or(0, |d| {
            alloc_bytes(std::mem::size_of::<Decision>()) + approx_heap_bytes(d)
        })
        + e.recommendation.as_deref().map_or(0, |r| {
            alloc_bytes(std::mem::size_of::<Result<Recommendation, String>>())
                + match r {
                    Ok(r) => alloc_bytes(r.objectives.capacity() * std::mem::size_of::<ObjectiveReport>()),
                    Err(m) => string_bytes(m),
                }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Key {
        ("ns".into(), s.into())
    }

    #[test]
    fn queue_dedupes_and_requeues_keys_changed_while_running() {
        let mut q = Queue::default();
        q.push(k("a"));
        q.push(k("a"));
        q.push(k("b"));
        assert_eq!(q.pop(), Some(k("a")));
        q.push(k("a")); // changed while running
        assert_eq!(q.pop(), Some(k("b")));
        assert_eq!(q.pop(), None);
        q.done(k("a"), Ok(Requeue::default()), &Config::default());
        assert_eq!(q.pop(), Some(k("a")));
    }

    #[test]
    fn queue_retries_with_backoff_then_gives_up() {
        let cfg = Config {
            max_retries: 2,
            retry_base: Duration::ZERO,
            ..Config::default()
        };
        let mut q = Queue::default();
        q.push(k("a"));
        for _ in 0..2 {
            let key = q.pop();
            assert_eq!(key, Some(k("a")));
            q.done(k("a"), Err(()), &cfg);
            assert!(q.next_deadline().is_some());
            q.expire(Instant::now() + Duration::from_secs(1));
        }
        assert_eq!(q.pop(), Some(k("a")));
        q.done(k("a"), Err(()), &cfg);
        assert!(q.next_deadline().is_none(), "gave up after max_retries");
    }

    #[test]
    fn a_written_status_is_kept_until_the_watch_shows_the_writers_fields() {
        let status = |v: serde_json::Value| -> DatadogPodAutoscalerStatus {
            serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
        };
        let ours = status(serde_json::json!({"currentReplicas": 4,
            "conditions": [{"type": "Active", "status": "True", "reason": "Active"}]}));
        let mut written = Some(Box::new(crate::reconcile::Owned::of(&ours)));
        // The watch still shows the old replicas: compared with what was written, entry kept.
        let behind = status(serde_json::json!({"currentReplicas": 3}));
        let seen = status_to_compare(&mut written, behind);
        assert_eq!(seen.current_replicas, Some(4));
        assert!(written.is_some());
        // The watch shows our fields and the vertical writer's new ones: the entry goes, and the
        // stored status (with the vertical part) is what is compared with.
        let mut caught_up = ours.clone();
        caught_up.vertical = status(
            serde_json::json!({"vertical": {"target": {"source": "Local", "version": "1",
            "desiredResources": [], "podCPURequest": "250m", "podMemoryRequest": "64Mi"}}}),
        )
        .vertical;
        assert!(caught_up.vertical.is_some());
        let seen = status_to_compare(&mut written, caught_up.clone());
        assert_eq!(seen, caught_up);
        assert!(written.is_none(), "the entry outlived the watch catching up");
        // Nothing written: the stored status as it is.
        assert_eq!(status_to_compare(&mut None, ours.clone()), ours);
    }

    /// DPAs by key, as the watch last delivered them.
    #[derive(Default)]
    struct Dpas(parking_lot::Mutex<HashMap<Key, Arc<DatadogPodAutoscaler>>>);

    impl DpaSource for Dpas {
        fn get(&self, namespace: &str, name: &str) -> Option<Arc<DatadogPodAutoscaler>> {
            self.0
                .lock()
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned()
        }
        fn list(&self) -> Vec<Arc<DatadogPodAutoscaler>> {
            self.0.lock().values().cloned().collect()
        }
    }

    fn with_status(name: &str, replicas: i32) -> Arc<DatadogPodAutoscaler> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "owner": "Local"},
                "status": {"currentReplicas": replicas,
                    "conditions": [{"type": "Active", "status": "True", "reason": "Active"}]},
            }))
            .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    #[tokio::test]
    async fn a_written_status_goes_once_the_watch_shows_it_whichever_comes_first() {
        // Never contacted: the client only fills the controller's fields.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap_or_else(|e| panic!("{e}")));
        let client = Client::try_from(config).unwrap_or_else(|e| panic!("{e}"));
        let dpas = Arc::new(Dpas::default());
        let (_tx, rx) = mpsc::channel(1);
        let c = Controller::with_dpas(
            client,
            Config::default(),
            Arc::new(crate::StaticPods::default()),
            dpas.clone(),
            rx,
        );
        let (shared, handle) = (c.shared.clone(), c.handle());
        let written = |n: i32| {
            crate::reconcile::Owned::of(with_status("a", n).status.as_ref().unwrap_or_else(|| panic!()))
        };

        // The response first: kept until the watch delivers the DPA with it.
        dpas.0.lock().insert(k("a"), with_status("a", 1));
        shared.keep_written(&k("a"), written(3));
        assert_eq!(handle.state_bytes().written_pending, 1);
        shared.settle_written(&k("a"));
        assert_eq!(
            handle.state_bytes().written_pending,
            1,
            "the watch still shows 1 replica"
        );
        dpas.0.lock().insert(k("a"), with_status("a", 3));
        shared.settle_written(&k("a"));
        assert_eq!(
            handle.state_bytes().written_pending,
            0,
            "gone without a reconcile"
        );
        assert_eq!(handle.state_bytes().total(), handle.state_bytes().slots_and_keys);

        // The watch first: never kept.
        dpas.0.lock().insert(k("b"), with_status("b", 4));
        shared.keep_written(&k("b"), written(4));
        assert_eq!(handle.state_bytes().written_pending, 0);
    }

    #[test]
    fn the_per_dpa_table_gives_its_slots_back_when_most_dpas_are_gone() {
        let mut all: HashMap<Key, PerDpa> = (0..10_000)
            .map(|i| (k(&format!("dpa-{i:05}")), PerDpa::default()))
            .collect();
        let full = all.capacity();
        for i in 10..10_000 {
            all.remove(&k(&format!("dpa-{i:05}")));
            shrink_if_sparse(&mut all);
        }
        assert_eq!(all.len(), 10);
        assert!(
            all.capacity() <= 128,
            "{} slots of {full} kept for 10 DPAs",
            all.capacity()
        );
        assert!(all.contains_key(&k("dpa-00009")));
    }

    #[test]
    fn state_bytes_grow_with_every_dpa_kept() {
        let state = |n: usize| {
            let keys: Vec<Key> = (0..n).map(|i| k(&format!("dpa-{i:05}"))).collect();
            let mut history = History::new();
            for s in 0..60 {
                history.record_recommendation(
                    lazyscale_api::time::Timestamp::UNIX_EPOCH + Duration::from_secs(1_000_000 + s),
                    3 + (s % 2) as u32, // changing counts, each one kept
                );
            }
            let status: DatadogPodAutoscalerStatus =
                serde_json::from_value(serde_json::json!({"currentReplicas": 3,
                "conditions": [{"type": "Active", "status": "True", "reason": "Active"}]}))
                .unwrap_or_else(|e| panic!("{e}"));
            let per_dpa: HashMap<Key, PerDpa> = keys
                .iter()
                .map(|k| {
                    let entry = PerDpa {
                        history: Some(history.clone()),
                        explanation: None,
                        written: Some(Box::new(crate::reconcile::Owned::of(&status))),
                    };
                    (k.clone(), entry)
                })
                .collect();
            let b = state_bytes(&per_dpa);
            assert_eq!(b.written_pending, n);
            assert!(n == 0 || (b.histories > 0 && b.written > 0 && b.explanations == 0));
            b.total()
        };
        assert_eq!(state(0), 0);
        let per = (state(2_000) - state(1_000)) as f64 / 1_000.0;
        // a 64-slot ring of recommendations, the key, the small status, and the slot of one table
        // (between 8/7 and 16/7 slots a DPA at the 7/8 load factor)
        let history =
            (64 * std::mem::size_of::<lazyscale_core::horizontal::policy::TimedRecommendation>()) as f64;
        let slots = std::mem::size_of::<(Key, PerDpa)>() as f64;
        let least = history + 8.0 / 7.0 * slots + 50.0;
        assert!(
            per > least && per < least + slots + 1000.0,
            "{per} bytes per DPA, {least} at least"
        );
    }

    #[test]
    fn queue_keeps_the_earliest_delay() {
        let mut q = Queue::default();
        q.push_after(k("a"), Duration::from_secs(10));
        q.push_after(k("a"), Duration::from_secs(1));
        q.push_after(k("a"), Duration::from_secs(5));
        assert_eq!(q.delayed.len(), 1);
        let d = q.next_deadline().map(|d| d - Instant::now());
        assert!(d.is_some_and(|d| d <= Duration::from_secs(1)));
    }
}
