//! The lazily started pod collection: the pod watches an interest set needs, feeding one [`PodStore`].
//!
//! [`PodCollection::start`] is called when the first autoscaler appears; it watches nothing until
//! [`PodCollection::set_interest`] says which workloads are autoscaled. The watches follow
//! [`crate::plan::plan`]: while few workloads are autoscaled, one watch per namespace and pod label
//! selector (so the agent lists and decodes only their pods); beyond [`Config::limits`], one
//! cluster-wide watch, which gives way to scoped watches again only once the plan has stayed scoped for
//! [`Config::narrow_after`] (widening is immediate). Each watch is a task running kube's [`watcher()`] — paged initial lists
//! (`page_size`, default 500), or, when [`Config::streaming_lists`] is set, a WatchList stream with a
//! deadline after which the watch falls back to paged lists (a server without WatchList ignores
//! `sendInitialEvents` and never sends the end-of-initial-events bookmark). Bookmarks are on, finished pods
//! are excluded by field selector unless disabled, and errors are retried with kube's default backoff and
//! counted.
//!
//! All watches feed the one store (one cache, one owner index): a pod delivered by two watches is one
//! entry. The cluster-wide watch relists by mark and sweep over the whole store
//! ([`PodStore::begin_relist`]); a scoped watch sweeps only the pods it delivers
//! ([`PodStore::sweep_scope`]), so scoped watches relist independently. When the plan changes, new
//! watches start first and the ones they replace stop only once every new one has listed; meanwhile
//! deletions are remembered, so a lagging old watch cannot resurrect a pod — switching between scoped and
//! cluster-wide neither loses nor doubles pods. A workload that joins the interest set under a watch that
//! already runs (the cluster-wide one, or a shared selector) is backfilled with a scoped list
//! ([`backfill`]); one worker gathers the backfills of a burst per namespace
//! ([`crate::plan::coalesce_backfills`]) and lists a few at a time. [`PodCollection::synced`] resolves
//! once every planned watch has listed.
//!
//! A watch is *synced* while the store holds what it delivers up to now: from its completed list until its
//! next error or restart, and again from the list that follows. Resumed from its last resourceVersion
//! after an error, kube's watcher would give no sign of being current again, so a watch that fails after
//! it has listed starts over with a fresh list (one relist per outage, which a `410 Gone` after an API
//! server restart forces anyway). [`SyncView`] tells the controller whether the watches of a namespace
//! are synced and counts every loss of sync, so a decision taken on pods read before a loss can be
//! recognised and dropped. Cancelling the
//! token given to `start` (or dropping the collection, or [`PodCollection::stop`]) ends the watches and
//! clears the store, releasing its memory; [`PodCollection::stopped`] resolves once that is done.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use thiserror::Error;
use tokio::sync::watch as tokio_watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use hashbrown::HashSet;
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::plan::{Limits, PodCounts, WatchScope, coalesce_backfills, narrows, plan};
use crate::slim::WorkloadKey;
use crate::store::{ApplyOutcome, BackfillTarget, Delivery, Interest, InterestUpdate, PodStore, StoreError};
use crate::wire::PodWire;

/// Field selector that leaves out pods that will never run again.
pub const UNFINISHED_PODS: &str = "status.phase!=Succeeded,status.phase!=Failed";

/// Backfill attempts per target before giving up (the next relist or interest change catches up).
const BACKFILL_ATTEMPTS: u32 = 3;
/// How long the backfill worker lets a burst of interest changes (DPAs applied together) gather before
/// it lists.
const BACKFILL_GATHER: Duration = Duration::from_millis(100);
/// Waiting selectors of one namespace from which one list of the whole namespace replaces theirs.
const BACKFILL_NAMESPACE_AT: usize = 8;
/// Backfill lists in flight at once.
const BACKFILL_CONCURRENCY: usize = 4;

/// Errors of the watch layer.
#[derive(Debug, Error)]
pub enum WatchError {
    /// A backfill list request failed.
    #[error("listing pods in namespace {namespace} failed: {source}")]
    List {
        /// The namespace listed.
        namespace: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// A listed pod could not be cached.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How the collection lists and watches pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// When to switch from scoped watches to one cluster-wide watch.
    pub limits: Limits,
    /// Page size of initial lists and backfills (client-go's default, 500).
    pub page_size: u32,
    /// Use a WatchList stream (`sendInitialEvents=true`) instead of paged lists.
    pub streaming_lists: bool,
    /// How long a WatchList stream may take to deliver its initial-events-end bookmark before the
    /// collection falls back to paged lists.
    pub streaming_timeout: Duration,
    /// Leave out `Succeeded` and `Failed` pods with a field selector.
    pub exclude_finished: bool,
    /// How long the plan must have stayed scoped before the cluster-wide watch gives way to scoped ones
    /// ([`crate::plan::narrows`]; widening is immediate, and zero narrows at once).
    pub narrow_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            page_size: 500,
            streaming_lists: false,
            streaming_timeout: Duration::from_secs(60),
            exclude_finished: true,
            narrow_after: Duration::from_secs(30),
        }
    }
}

impl Config {
    fn watcher_config(&self, scope: &WatchScope, streaming: bool) -> watcher::Config {
        // `Config::default()` already asks for bookmarks.
        let mut wc = watcher::Config::default();
        if let WatchScope::Namespace {
            label_selector: Some(sel),
            ..
        } = scope
        {
            wc = wc.labels(sel);
        }
        if streaming {
            wc = wc.streaming_lists();
        } else {
            wc = wc.page_size(self.page_size.max(1));
        }
        if self.exclude_finished {
            wc = wc.fields(UNFINISHED_PODS);
        }
        wc
    }
}

/// Counters of a running collection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CollectionStats {
    /// Cached pods.
    pub pods: usize,
    /// Workloads with cached pods.
    pub workloads: usize,
    /// Approximate heap bytes of the store.
    pub bytes: usize,
    /// The indexes' share of `bytes` ([`crate::store::StoreStats::index_bytes`]).
    pub index_bytes: usize,
    /// Pod watches running (scoped or the cluster-wide one), including ones being replaced.
    pub watches: usize,
    /// Whether the plan is the one cluster-wide watch.
    pub cluster_wide: bool,
    /// Pod objects decoded from lists and watch events, every watch together.
    pub decoded: u64,
    /// Relists after a watch's first list (410 Gone, stream fallbacks, idle timeouts).
    pub restarts: u64,
    /// Watch errors (each retried with backoff).
    pub errors: u64,
    /// Times a synced watch lost its sync (an error or a relist), each followed by a fresh list.
    pub sync_losses: u64,
    /// Backfill lists completed.
    pub backfills: u64,
    /// Backfill attempts that failed.
    pub backfill_errors: u64,
    /// Decoded pods dropped by the interest filter.
    pub dropped: u64,
    /// Whether every planned watch has completed its initial list.
    pub synced: bool,
}

#[derive(Default)]
struct Counters {
    decoded: AtomicU64,
    restarts: AtomicU64,
    errors: AtomicU64,
    sync_losses: AtomicU64,
    backfills: AtomicU64,
    backfill_errors: AtomicU64,
}

/// One running watch.
struct WatchTask {
    cancel: CancellationToken,
    /// Set while the watch is being replaced.
    retiring: Arc<AtomicBool>,
    /// Set from a loss of sync until the watch has listed again.
    lost: Arc<AtomicBool>,
    synced: tokio_watch::Receiver<bool>,
    handle: JoinHandle<()>,
}

/// The watches: the planned ones, and the ones replaced but still running until their successors listed.
#[derive(Default)]
struct Watches {
    planned: BTreeMap<WatchScope, WatchTask>,
    retiring: BTreeMap<WatchScope, WatchTask>,
    /// Set once the collection stops: no watch starts after that.
    closed: bool,
}

/// What the collection's tasks share.
struct Shared {
    store: Arc<PodStore>,
    client: Client,
    config: Config,
    counters: Counters,
    watches: Mutex<Watches>,
    synced: tokio_watch::Sender<bool>,
    cancel: CancellationToken,
    /// Backfills waiting for [`backfill_worker`], which gathers them ([`coalesce_backfills`]).
    backfills: Mutex<Vec<BackfillTarget>>,
    backfill_wake: tokio::sync::Notify,
    /// Held from planning until the watches are reconciled, so an interest update and a delayed
    /// narrowing cannot apply their plans in the wrong order.
    planning: Mutex<()>,
    /// A narrowing waiting for [`Config::narrow_after`].
    narrowing: Mutex<Narrowing>,
}

/// A narrowing held back: since when the plan has been scoped under the cluster-wide watch, and whether
/// the task that applies it runs.
#[derive(Default)]
struct Narrowing {
    since: Option<Instant>,
    task: bool,
}

impl Shared {
    /// Synced once every planned watch has listed.
    fn refresh_synced(&self) {
        let w = self.watches.lock();
        let all = !w.closed && w.planned.values().all(|t| *t.synced.borrow());
        self.synced.send_if_modified(|s| std::mem::replace(s, all) != all);
    }

    /// A watch lost its sync: counted first (so a reader that saw it synced sees the count move), then
    /// the flags.
    fn lose_sync(&self, synced: &tokio_watch::Sender<bool>, lost: &AtomicBool) {
        if *synced.borrow() {
            self.counters.sync_losses.fetch_add(1, Ordering::AcqRel);
            lost.store(true, Ordering::Release);
            synced.send_replace(false);
            self.refresh_synced();
        }
    }

    /// The planned watches delivering pods of `namespace`.
    fn covering<'a>(w: &'a Watches, namespace: &'a str) -> impl Iterator<Item = &'a WatchTask> + 'a {
        w.planned
            .iter()
            .filter(move |(scope, _)| match scope {
                WatchScope::Cluster => true,
                WatchScope::Namespace { namespace: ns, .. } => ns.as_str() == namespace,
            })
            .map(|(_, t)| t)
    }

    /// Whether the planned watches that deliver pods of `namespace` (the cluster-wide one, or the
    /// namespace's scoped ones) all listed since their last error or restart; `false` when none does.
    fn namespace_synced(&self, namespace: &str) -> bool {
        let w = self.watches.lock();
        let mut covering = Self::covering(&w, namespace).peekable();
        !w.closed && covering.peek().is_some() && covering.all(|t| *t.synced.borrow())
    }

    /// Whether a planned watch delivering pods of `namespace` lost its sync and has not listed again.
    fn namespace_lost_sync(&self, namespace: &str) -> bool {
        let w = self.watches.lock();
        Self::covering(&w, namespace).any(|t| t.lost.load(Ordering::Acquire))
    }
}

/// The sync state of a collection's watches, for readers that decide on the cached pods (a cheap
/// clone; see the [module docs](self)).
#[derive(Clone)]
pub struct SyncView {
    shared: Arc<Shared>,
}

impl SyncView {
    /// Whether the pods of `namespace` are current: every planned watch delivering them has listed
    /// since its last error or restart.
    pub fn namespace_synced(&self, namespace: &str) -> bool {
        self.shared.namespace_synced(namespace)
    }

    /// Whether a watch delivering the pods of `namespace` lost its sync (an error or a relist after it
    /// had listed) and has not listed again: unlike a watch that is still on its first list, the cache
    /// then holds pods that may be out of date.
    pub fn lost_sync(&self, namespace: &str) -> bool {
        self.shared.namespace_lost_sync(namespace)
    }

    /// How many times a synced watch lost its sync so far. Read it before reading pods and again
    /// before acting on them: a change means a watch failed or relisted in between.
    pub fn losses(&self) -> u64 {
        self.shared.counters.sync_losses.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for SyncView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncView")
            .field("losses", &self.losses())
            .finish_non_exhaustive()
    }
}

/// A running pod collection. See the [module docs](self).
pub struct PodCollection {
    shared: Arc<Shared>,
    synced: tokio_watch::Receiver<bool>,
    stopped: tokio_watch::Receiver<bool>,
}

impl PodCollection {
    /// Starts a collection into a new interest-filtered [`PodStore`]; it watches nothing until
    /// [`PodCollection::set_interest`]. Must be called within a Tokio runtime. The collection stops when
    /// `cancel` (or the collection's own child token) is cancelled.
    pub fn start(client: Client, config: Config, cancel: CancellationToken) -> Self {
        Self::start_with_store(client, Arc::new(PodStore::new()), config, cancel)
    }

    /// Starts a collection into `store`. An unfiltered store ([`PodStore::unfiltered`]) is watched
    /// cluster-wide at once; a filtered one as its interest set requires.
    pub fn start_with_store(
        client: Client,
        store: Arc<PodStore>,
        config: Config,
        cancel: CancellationToken,
    ) -> Self {
        let cancel = cancel.child_token();
        let (synced_tx, synced) = tokio_watch::channel(false);
        let (stopped_tx, stopped) = tokio_watch::channel(false);
        let shared = Arc::new(Shared {
            store,
            client,
            config,
            counters: Counters::default(),
            watches: Mutex::new(Watches::default()),
            synced: synced_tx,
            cancel,
            backfills: Mutex::default(),
            backfill_wake: tokio::sync::Notify::new(),
            planning: Mutex::new(()),
            narrowing: Mutex::default(),
        });
        tokio::spawn(backfill_worker(Arc::clone(&shared)).instrument(tracing::info_span!("pod_backfill")));
        tokio::spawn(
            supervise(Arc::clone(&shared), stopped_tx).instrument(tracing::info_span!("pod_collection")),
        );
        if shared.store.interest().is_none() {
            reconcile_watches(&shared, BTreeSet::from([WatchScope::Cluster]));
        }
        PodCollection {
            shared,
            synced,
            stopped,
        }
    }

    /// The store being filled.
    pub fn store(&self) -> &Arc<PodStore> {
        &self.shared.store
    }

    /// Whether every planned watch has completed its initial list (and the collection is still running).
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Resolves to `true` once every planned watch has listed, or `false` if the collection stops first.
    pub fn synced(&self) -> impl Future<Output = bool> + Send + 'static {
        let mut synced = self.synced.clone();
        let mut stopped = self.stopped.clone();
        async move {
            tokio::select! {
                r = synced.wait_for(|s| *s) => r.is_ok(),
                _ = stopped.wait_for(|s| *s) => false,
            }
        }
    }

    /// A receiver of the synced flag (for `reconcile_all_on`-style triggers).
    pub fn subscribe_synced(&self) -> tokio_watch::Receiver<bool> {
        self.synced.clone()
    }

    /// The per-namespace sync state and the count of sync losses, for deciding on the cached pods.
    pub fn sync_view(&self) -> SyncView {
        SyncView {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The watches planned now.
    pub fn scopes(&self) -> BTreeSet<WatchScope> {
        self.shared.watches.lock().planned.keys().cloned().collect()
    }

    /// Counters and sizes.
    pub fn stats(&self) -> CollectionStats {
        let s = self.shared.store.stats();
        let c = &self.shared.counters;
        let (watches, cluster_wide) = {
            let w = self.shared.watches.lock();
            (
                w.planned.len() + w.retiring.len(),
                w.planned.contains_key(&WatchScope::Cluster),
            )
        };
        CollectionStats {
            pods: s.pods,
            workloads: s.workloads,
            bytes: s.heap_bytes,
            index_bytes: s.index_bytes,
            watches,
            cluster_wide,
            decoded: c.decoded.load(Ordering::Relaxed),
            restarts: c.restarts.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            sync_losses: c.sync_losses.load(Ordering::Relaxed),
            backfills: c.backfills.load(Ordering::Relaxed),
            backfill_errors: c.backfill_errors.load(Ordering::Relaxed),
            dropped: s.dropped,
            synced: self.is_synced(),
        }
    }

    /// Replaces the interest set: evicts pods that left it, starts and stops watches as
    /// [`crate::plan::plan`] says (a narrowing from the cluster-wide watch only once the plan has
    /// stayed scoped for [`Config::narrow_after`]), and backfills the workloads that joined under a
    /// watch that already runs. Must be called within a Tokio runtime.
    pub fn set_interest(&self, interest: Interest) -> InterestUpdate {
        let _planning = self.shared.planning.lock();
        let planned = plan(&interest, &PodCounts::default(), &self.shared.config.limits);
        let update = self.shared.store.set_interest(interest);
        let scopes = hold_back_narrowing(&self.shared, planned);
        let started = reconcile_watches(&self.shared, scopes);
        for target in &update.backfill {
            let BackfillTarget::Namespace {
                namespace,
                label_selector,
            } = target;
            let as_scope = WatchScope::Namespace {
                namespace: namespace.clone(),
                label_selector: label_selector.clone(),
            };
            // A watch started now lists these pods itself.
            if started.iter().any(|s| s.includes(&as_scope)) {
                continue;
            }
            self.shared.backfills.lock().push(target.clone());
            self.shared.backfill_wake.notify_one();
        }
        update
    }

    /// Stops the collection (the store is cleared once the watch tasks have ended).
    pub fn stop(&self) {
        self.shared.cancel.cancel();
    }

    /// Resolves once the watch tasks have ended and the store has been cleared.
    pub async fn stopped(&self) {
        let mut stopped = self.stopped.clone();
        // An error means the task is gone, which is just as stopped.
        let _ = stopped.wait_for(|s| *s).await;
    }
}

impl Drop for PodCollection {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

impl std::fmt::Debug for PodCollection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodCollection")
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// The watches to run for the `planned` ones: the running cluster-wide watch while a narrowing waits
/// for [`Config::narrow_after`] (starting the task that applies it then), else `planned`.
fn hold_back_narrowing(shared: &Arc<Shared>, planned: BTreeSet<WatchScope>) -> BTreeSet<WatchScope> {
    let cluster_running = shared.watches.lock().planned.contains_key(&WatchScope::Cluster);
    let mut n = shared.narrowing.lock();
    if shared.config.narrow_after.is_zero() || !narrows(cluster_running, &planned) {
        n.since = None;
        return planned;
    }
    n.since.get_or_insert_with(Instant::now);
    if !n.task {
        n.task = true;
        let shared = Arc::clone(shared);
        tokio::spawn(narrow_later(shared).instrument(tracing::info_span!("pod_watch_narrow")));
    }
    BTreeSet::from([WatchScope::Cluster])
}

/// Applies a held-back narrowing once the plan has stayed scoped for [`Config::narrow_after`]; ends
/// early when the plan widens again or the interest empties in the meantime.
async fn narrow_later(shared: Arc<Shared>) {
    loop {
        let due = {
            let mut n = shared.narrowing.lock();
            match n.since {
                Some(since) => since + shared.config.narrow_after,
                None => {
                    n.task = false;
                    return;
                }
            }
        };
        if Instant::now() < due {
            tokio::select! {
                _ = shared.cancel.cancelled() => return,
                _ = tokio::time::sleep_until(due) => continue,
            }
        }
        let _planning = shared.planning.lock();
        {
            let mut n = shared.narrowing.lock();
            match n.since {
                None => {
                    n.task = false;
                    return;
                }
                // Widened and narrowed again while this task waited: wait for the new deadline.
                Some(since) if Instant::now() < since + shared.config.narrow_after => continue,
                Some(_) => {
                    n.since = None;
                    n.task = false;
                }
            }
        }
        let Some(interest) = shared.store.interest() else {
            return;
        };
        let scopes = plan(&interest, &PodCounts::default(), &shared.config.limits);
        tracing::info!(
            watches = scopes.len(),
            "interest stayed scoped; narrowing the pod watches"
        );
        reconcile_watches(&shared, scopes);
        return;
    }
}

/// Makes `scopes` the planned watches: starts the new ones, keeps those already running (bringing back
/// one being replaced), and retires the rest once every new one has listed. Returns the scopes started.
fn reconcile_watches(shared: &Arc<Shared>, scopes: BTreeSet<WatchScope>) -> Vec<WatchScope> {
    let mut started = Vec::new();
    let mut retired = Vec::new();
    let mut waits = Vec::new();
    let guard;
    {
        let mut w = shared.watches.lock();
        if w.closed {
            return started;
        }
        let old = std::mem::take(&mut w.planned);
        for (scope, task) in old {
            if scopes.contains(&scope) {
                w.planned.insert(scope, task);
            } else {
                retired.push(scope.clone());
                task.retiring.store(true, Ordering::Relaxed);
                w.retiring.insert(scope, task);
            }
        }
        // While old and new watches overlap, the new ones win (see the module docs); the switch begins
        // before any new watch can deliver.
        let starts = scopes
            .iter()
            .any(|s| !w.planned.contains_key(s) && !w.retiring.contains_key(s));
        guard = (starts && !retired.is_empty()).then(|| shared.store.begin_switch());
        for scope in scopes {
            if w.planned.contains_key(&scope) {
                continue;
            }
            if let Some(task) = w.retiring.remove(&scope) {
                task.retiring.store(false, Ordering::Relaxed);
                w.planned.insert(scope, task);
                continue;
            }
            let task = spawn_watch(shared, scope.clone());
            waits.push(task.synced.clone());
            w.planned.insert(scope.clone(), task);
            started.push(scope);
        }
    }
    if !retired.is_empty() {
        tracing::info!(
            started = started.len(),
            retired = retired.len(),
            "pod watches replaced"
        );
        let shared = Arc::clone(shared);
        tokio::spawn(
            async move {
                for mut synced in waits {
                    tokio::select! {
                        _ = shared.cancel.cancelled() => return,
                        r = synced.wait_for(|s| *s) => if r.is_err() { break },
                    }
                }
                let done: Vec<WatchTask> = {
                    let mut w = shared.watches.lock();
                    retired.iter().filter_map(|s| w.retiring.remove(s)).collect()
                };
                for task in &done {
                    task.cancel.cancel();
                }
                for task in done {
                    let _ = task.handle.await;
                }
                drop(guard);
            }
            .instrument(tracing::info_span!("pod_watch_retire")),
        );
    } else if !started.is_empty() {
        tracing::info!(started = started.len(), "pod watches started");
    }
    shared.refresh_synced();
    started
}

fn spawn_watch(shared: &Arc<Shared>, scope: WatchScope) -> WatchTask {
    let cancel = shared.cancel.child_token();
    let retiring = Arc::new(AtomicBool::new(false));
    let lost = Arc::new(AtomicBool::new(false));
    let (synced_tx, synced) = tokio_watch::channel(false);
    let span = match &scope {
        WatchScope::Cluster => tracing::info_span!("pods", scope = "cluster"),
        WatchScope::Namespace {
            namespace,
            label_selector,
        } => tracing::info_span!("pods", %namespace, selector = label_selector.as_deref().unwrap_or("")),
    };
    let handle = tokio::spawn(
        run_watch(
            Arc::clone(shared),
            scope,
            Arc::clone(&retiring),
            Arc::clone(&lost),
            synced_tx,
            cancel.clone(),
        )
        .instrument(span),
    );
    WatchTask {
        cancel,
        retiring,
        lost,
        synced,
        handle,
    }
}

/// Waits for the collection to stop, ends every watch, then clears the store.
async fn supervise(shared: Arc<Shared>, stopped: tokio_watch::Sender<bool>) {
    shared.cancel.cancelled().await;
    let tasks: Vec<WatchTask> = {
        let mut w = shared.watches.lock();
        w.closed = true;
        let planned = std::mem::take(&mut w.planned);
        let retiring = std::mem::take(&mut w.retiring);
        planned.into_values().chain(retiring.into_values()).collect()
    };
    for task in tasks {
        let _ = task.handle.await;
    }
    shared.synced.send_replace(false);
    shared.store.clear();
    tracing::info!("pod collection stopped; cache cleared");
    stopped.send_replace(true);
}

/// How a watch's current list is being tracked.
enum Listing {
    /// Not listing.
    Idle,
    /// The cluster-wide watch: the store's mark and sweep.
    Cluster,
    /// A scoped watch: the uids listed so far.
    Scoped(HashSet<u128>),
}

async fn run_watch(
    shared: Arc<Shared>,
    scope: WatchScope,
    retiring: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
    synced: tokio_watch::Sender<bool>,
    cancel: CancellationToken,
) {
    let config = &shared.config;
    let api: Api<PodWire> = match &scope {
        WatchScope::Cluster => Api::all(shared.client.clone()),
        WatchScope::Namespace { namespace, .. } => Api::namespaced(shared.client.clone(), namespace),
    };
    let mut streaming = config.streaming_lists;
    let mut inits = 0u64;
    let mut listing = Listing::Idle;
    let mut relists = RelistBackoff::default();
    'streams: loop {
        let stream = watcher(api.clone(), config.watcher_config(&scope, streaming)).default_backoff();
        let mut stream = pin!(stream);
        // Whether this stream has completed a list and is watching (an error then restarts it).
        let mut listed = false;
        // Only a streaming list needs a deadline for its first InitDone.
        let mut deadline = streaming.then(|| Instant::now() + config.streaming_timeout);
        loop {
            let item = tokio::select! {
                _ = cancel.cancelled() => break 'streams,
                _ = sleep_until(deadline) => {
                    tracing::warn!(
                        timeout = ?config.streaming_timeout,
                        "streaming pod list did not complete; the API server may not support WatchList, falling back to paged lists"
                    );
                    streaming = false;
                    shared.counters.restarts.fetch_add(1, Ordering::Relaxed);
                    continue 'streams;
                }
                item = stream.next() => item,
            };
            match item {
                Some(Ok(event)) => {
                    let from = if retiring.load(Ordering::Relaxed) {
                        Delivery::Retiring
                    } else {
                        Delivery::Current
                    };
                    if matches!(event, Event::Init) {
                        listed = false;
                        if inits > 0 {
                            shared.lose_sync(&synced, &lost);
                        }
                    }
                    if handle_event(&shared, &scope, from, &mut listing, &mut inits, event) {
                        deadline = None;
                        listed = true;
                        lost.store(false, Ordering::Release);
                        if !synced.send_replace(true) {
                            shared.refresh_synced();
                        }
                    }
                }
                Some(Err(error)) => {
                    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                    shared.lose_sync(&synced, &lost);
                    if listed {
                        // Resumed from its resourceVersion the watch would never say it is current
                        // again: start over with a list (its InitDone syncs it). A failing list retries
                        // with the new stream's backoff.
                        let wait = relists.next(Instant::now());
                        tracing::warn!(%error, ?wait, "pod watch error; relisting");
                        tokio::select! {
                            _ = cancel.cancelled() => break 'streams,
                            _ = tokio::time::sleep(wait) => continue 'streams,
                        }
                    }
                    tracing::warn!(%error, "pod watch error; retrying with backoff");
                }
                None => {
                    // The watcher stream does not end on its own; restart it if it ever does.
                    shared.counters.restarts.fetch_add(1, Ordering::Relaxed);
                    continue 'streams;
                }
            }
        }
    }
    if matches!(listing, Listing::Cluster) {
        // An unfinished cluster-wide relist must not leave the store in relist mode.
        shared.store.finish_relist_abandoned();
    }
}

/// The wait before a relist after a watch error: none for an isolated error, doubling from
/// [`RelistBackoff::FIRST`] up to [`RelistBackoff::MAX`] while errors follow lists closely (a watch the
/// API server refuses right after every list would otherwise relist in a loop).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelistBackoff {
    last: Option<Instant>,
    wait: Duration,
}

impl RelistBackoff {
    /// The first wait of a run of close errors.
    pub const FIRST: Duration = Duration::from_millis(500);
    /// The longest wait.
    pub const MAX: Duration = Duration::from_secs(30);
    /// Errors further apart than this start over without a wait.
    pub const QUIET: Duration = Duration::from_secs(60);

    /// The wait before the relist of an error at `now`.
    pub fn next(&mut self, now: Instant) -> Duration {
        let close = self.last.is_some_and(|l| now.duration_since(l) < Self::QUIET);
        self.wait = if close {
            (self.wait * 2).clamp(Self::FIRST, Self::MAX)
        } else {
            Duration::ZERO
        };
        self.last = Some(now);
        self.wait
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Applies one watcher event to the store; returns whether it completed a list.
fn handle_event(
    shared: &Shared,
    scope: &WatchScope,
    from: Delivery,
    listing: &mut Listing,
    inits: &mut u64,
    event: Event<PodWire>,
) -> bool {
    let store = &shared.store;
    let outcome = match event {
        Event::Init => {
            if *inits > 0 {
                shared.counters.restarts.fetch_add(1, Ordering::Relaxed);
            }
            *inits += 1;
            *listing = match scope {
                WatchScope::Cluster => {
                    store.begin_relist();
                    Listing::Cluster
                }
                WatchScope::Namespace { .. } => Listing::Scoped(HashSet::new()),
            };
            return false;
        }
        Event::InitDone => {
            let swept = match std::mem::replace(listing, Listing::Idle) {
                Listing::Cluster => store.finish_relist(),
                Listing::Scoped(seen) => store.sweep_scope(scope, &seen),
                Listing::Idle => 0,
            };
            tracing::debug!(swept, pods = store.len(), "pod list complete");
            return true;
        }
        Event::InitApply(pod) => {
            shared.counters.decoded.fetch_add(1, Ordering::Relaxed);
            if let Listing::Scoped(seen) = listing {
                seen.insert(crate::slim::wire_uid(&pod));
            }
            store.apply_from(&pod, from)
        }
        Event::Apply(pod) => {
            shared.counters.decoded.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(uid = crate::slim::wire_uid(&pod), "pod applied");
            store.apply_from(&pod, from)
        }
        Event::Delete(pod) => {
            shared.counters.decoded.fetch_add(1, Ordering::Relaxed);
            Ok(store.delete_from(&pod, from))
        }
    };
    if let Err(error) = outcome {
        tracing::debug!(%error, "pod not cached");
    }
    false
}

/// Runs the waiting backfills until the collection stops: after a wake-up, lets more gather for
/// [`BACKFILL_GATHER`], then lists what [`coalesce_backfills`] makes of them, [`BACKFILL_CONCURRENCY`]
/// at a time. Targets that arrive meanwhile wait for the next round (one list per namespace and round at
/// most once a namespace is busy).
async fn backfill_worker(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            () = shared.backfill_wake.notified() => {}
        }
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            () = tokio::time::sleep(BACKFILL_GATHER) => {}
        }
        let waiting = std::mem::take(&mut *shared.backfills.lock());
        let lists = coalesce_backfills(waiting, BACKFILL_NAMESPACE_AT);
        let shared_ref = &shared;
        let round = futures::stream::iter(lists).for_each_concurrent(BACKFILL_CONCURRENCY, |t| async move {
            backfill_with_retry(shared_ref, &t).await;
        });
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            () = round => {}
        }
    }
}

async fn backfill_with_retry(shared: &Shared, target: &BackfillTarget) {
    for attempt in 1..=BACKFILL_ATTEMPTS {
        match backfill(&shared.client, &shared.store, target, &shared.config).await {
            Ok(n) => {
                shared.counters.backfills.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(?target, inserted = n, "backfill done");
                return;
            }
            Err(error) => {
                shared.counters.backfill_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, ?target, attempt, "backfill failed");
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
            }
        }
    }
}

/// Lists the pods of one backfill target (paged, `config.page_size`) into `store`; returns how many were
/// inserted. Pods not of interest, already cached or deleted meanwhile are skipped.
pub async fn backfill(
    client: &Client,
    store: &Arc<PodStore>,
    target: &BackfillTarget,
    config: &Config,
) -> Result<usize, WatchError> {
    let BackfillTarget::Namespace {
        namespace,
        label_selector,
    } = target;
    let guard = store.begin_backfill();
    let api: Api<PodWire> = Api::namespaced(client.clone(), namespace);
    let mut params = ListParams::default().limit(config.page_size.max(1));
    if let Some(sel) = label_selector {
        params = params.labels(sel);
    }
    if config.exclude_finished {
        params = params.fields(UNFINISHED_PODS);
    }
    let mut inserted = 0;
    let mut token: Option<String> = None;
    loop {
        let page = match &token {
            Some(t) => params.clone().continue_token(t),
            None => params.clone(),
        };
        let list = api.list(&page).await.map_err(|source| WatchError::List {
            namespace: namespace.to_string(),
            source,
        })?;
        for pod in &list.items {
            if guard.apply(pod)? == ApplyOutcome::Inserted {
                inserted += 1;
            }
        }
        token = list.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(inserted);
        }
    }
}

/// Backfills one workload: lists its namespace narrowed by `label_selector` (the workload's pod selector,
/// when known) into `store`.
pub async fn backfill_workload(
    client: &Client,
    store: &Arc<PodStore>,
    workload: &WorkloadKey,
    label_selector: Option<&str>,
    config: &Config,
) -> Result<usize, WatchError> {
    let target = BackfillTarget::Namespace {
        namespace: workload.namespace.clone(),
        label_selector: label_selector.map(str::to_owned),
    };
    backfill(client, store, &target, config).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relists_wait_only_while_errors_follow_closely() {
        let t0 = Instant::now();
        let mut b = RelistBackoff::default();
        assert_eq!(b.next(t0), Duration::ZERO, "an isolated error relists at once");
        let s = Duration::from_secs;
        assert_eq!(b.next(t0 + s(1)), RelistBackoff::FIRST);
        assert_eq!(b.next(t0 + s(2)), RelistBackoff::FIRST * 2);
        let mut at = t0 + s(2);
        for _ in 0..20 {
            at += s(1);
            assert!(b.next(at) <= RelistBackoff::MAX);
        }
        assert_eq!(b.next(at + s(1)), RelistBackoff::MAX);
        assert_eq!(
            b.next(at + s(1) + RelistBackoff::QUIET),
            Duration::ZERO,
            "a quiet minute starts over"
        );
    }
}
