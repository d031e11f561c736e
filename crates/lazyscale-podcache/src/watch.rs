//! The lazily started pod collection: one cluster-wide watch of [`PodWire`] feeding a [`PodStore`].
//!
//! [`PodCollection::start`] is called when the first autoscaler appears. It spawns a task running kube's
//! [`watcher()`] on `Api<PodWire>::all` — paged initial lists (`page_size`, default 500), or, when
//! [`Config::streaming_lists`] is set, a WatchList stream with a deadline after which the collection falls
//! back to paged lists (a server without WatchList ignores `sendInitialEvents` and never sends the
//! end-of-initial-events bookmark). Bookmarks are on, finished pods are excluded by field selector unless
//! disabled, and errors are retried with kube's default backoff and counted.
//!
//! Watch events map onto the store: `Init`/`InitApply`/`InitDone` are a mark-and-sweep relist,
//! `Apply` and `Delete` update in place. [`PodCollection::synced`] resolves after the first complete
//! list. [`PodCollection::set_interest`] changes which workloads are cached and backfills the new ones
//! with scoped lists ([`backfill`]). Cancelling the token given to `start` (or dropping the collection, or
//! [`PodCollection::stop`]) ends the watch and clears the store, releasing its memory;
//! [`PodCollection::stopped`] resolves once that is done.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

use crate::slim::WorkloadKey;
use crate::store::{ApplyOutcome, BackfillTarget, Interest, InterestUpdate, PodStore, StoreError};
use crate::wire::PodWire;

/// Field selector that leaves out pods that will never run again.
pub const UNFINISHED_PODS: &str = "status.phase!=Succeeded,status.phase!=Failed";

/// Backfill attempts per target before giving up (the next relist or interest change catches up).
const BACKFILL_ATTEMPTS: u32 = 3;

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
    /// Page size of initial lists and backfills (client-go's default, 500).
    pub page_size: u32,
    /// Use a WatchList stream (`sendInitialEvents=true`) instead of paged lists.
    pub streaming_lists: bool,
    /// How long a WatchList stream may take to deliver its initial-events-end bookmark before the
    /// collection falls back to paged lists.
    pub streaming_timeout: Duration,
    /// Leave out `Succeeded` and `Failed` pods with a field selector.
    pub exclude_finished: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            page_size: 500,
            streaming_lists: false,
            streaming_timeout: Duration::from_secs(60),
            exclude_finished: true,
        }
    }
}

impl Config {
    fn watcher_config(&self, streaming: bool) -> watcher::Config {
        // `Config::default()` already asks for bookmarks.
        let mut wc = watcher::Config::default();
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
    /// Relists after the first list (410 Gone, stream fallbacks, idle timeouts).
    pub restarts: u64,
    /// Watch errors (each retried with backoff).
    pub errors: u64,
    /// Backfill lists completed.
    pub backfills: u64,
    /// Backfill attempts that failed.
    pub backfill_errors: u64,
    /// Decoded pods dropped by the interest filter.
    pub dropped: u64,
    /// Whether the initial list has completed.
    pub synced: bool,
}

#[derive(Default)]
struct Counters {
    inits: AtomicU64,
    restarts: AtomicU64,
    errors: AtomicU64,
    backfills: AtomicU64,
    backfill_errors: AtomicU64,
}

/// A running pod collection. See the [module docs](self).
pub struct PodCollection {
    store: Arc<PodStore>,
    client: Client,
    config: Config,
    counters: Arc<Counters>,
    synced: tokio_watch::Receiver<bool>,
    stopped: tokio_watch::Receiver<bool>,
    cancel: CancellationToken,
}

impl PodCollection {
    /// Starts collecting into a new interest-filtered [`PodStore`] (which caches nothing until
    /// [`PodCollection::set_interest`]). Must be called within a Tokio runtime. The collection stops when
    /// `cancel` (or the collection's own child token) is cancelled.
    pub fn start(client: Client, config: Config, cancel: CancellationToken) -> Self {
        Self::start_with_store(client, Arc::new(PodStore::new()), config, cancel)
    }

    /// Starts collecting into `store` (use [`PodStore::unfiltered`] to cache every pod).
    pub fn start_with_store(
        client: Client,
        store: Arc<PodStore>,
        config: Config,
        cancel: CancellationToken,
    ) -> Self {
        let cancel = cancel.child_token();
        let counters = Arc::new(Counters::default());
        let (synced_tx, synced) = tokio_watch::channel(false);
        let (stopped_tx, stopped) = tokio_watch::channel(false);
        tokio::spawn(
            run(
                Api::all(client.clone()),
                Arc::clone(&store),
                config.clone(),
                Arc::clone(&counters),
                synced_tx,
                stopped_tx,
                cancel.clone(),
            )
            .instrument(tracing::info_span!("pods")),
        );
        PodCollection {
            store,
            client,
            config,
            counters,
            synced,
            stopped,
            cancel,
        }
    }

    /// The store being filled.
    pub fn store(&self) -> &Arc<PodStore> {
        &self.store
    }

    /// Whether the initial list has completed (and the collection is still running).
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Resolves to `true` once the initial list has completed, or `false` if the collection stops first.
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

    /// Counters and sizes.
    pub fn stats(&self) -> CollectionStats {
        let s = self.store.stats();
        CollectionStats {
            pods: s.pods,
            workloads: s.workloads,
            bytes: s.heap_bytes,
            restarts: self.counters.restarts.load(Ordering::Relaxed),
            errors: self.counters.errors.load(Ordering::Relaxed),
            backfills: self.counters.backfills.load(Ordering::Relaxed),
            backfill_errors: self.counters.backfill_errors.load(Ordering::Relaxed),
            dropped: s.dropped,
            synced: self.is_synced(),
        }
    }

    /// Replaces the interest set: evicts pods that left it and spawns scoped backfills for the workloads
    /// that joined it. Must be called within a Tokio runtime.
    pub fn set_interest(&self, interest: Interest) -> InterestUpdate {
        let update = self.store.set_interest(interest);
        for target in &update.backfill {
            let (client, store, config) = (self.client.clone(), Arc::clone(&self.store), self.config.clone());
            let (counters, cancel, target) =
                (Arc::clone(&self.counters), self.cancel.clone(), target.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = backfill_with_retry(&client, &store, &target, &config, &counters) => {}
                }
            });
        }
        update
    }

    /// Stops the collection (the store is cleared once the watch task has ended).
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Resolves once the watch task has ended and the store has been cleared.
    pub async fn stopped(&self) {
        let mut stopped = self.stopped.clone();
        // An error means the task is gone, which is just as stopped.
        let _ = stopped.wait_for(|s| *s).await;
    }
}

impl Drop for PodCollection {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl std::fmt::Debug for PodCollection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodCollection")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

async fn run(
    api: Api<PodWire>,
    store: Arc<PodStore>,
    config: Config,
    counters: Arc<Counters>,
    synced: tokio_watch::Sender<bool>,
    stopped: tokio_watch::Sender<bool>,
    cancel: CancellationToken,
) {
    let mut streaming = config.streaming_lists;
    'streams: loop {
        let stream = watcher(api.clone(), config.watcher_config(streaming)).default_backoff();
        let mut stream = pin!(stream);
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
                    counters.restarts.fetch_add(1, Ordering::Relaxed);
                    continue 'streams;
                }
                item = stream.next() => item,
            };
            match item {
                Some(Ok(event)) => {
                    if handle_event(&store, &counters, event) {
                        deadline = None;
                        synced.send_replace(true);
                    }
                }
                Some(Err(error)) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, "pod watch error; retrying with backoff");
                }
                None => {
                    // The watcher stream does not end on its own; restart it if it ever does.
                    counters.restarts.fetch_add(1, Ordering::Relaxed);
                    continue 'streams;
                }
            }
        }
    }
    synced.send_replace(false);
    store.clear();
    tracing::info!("pod collection stopped; cache cleared");
    stopped.send_replace(true);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Applies one watcher event to the store; returns whether it completed a list.
fn handle_event(store: &PodStore, counters: &Counters, event: Event<PodWire>) -> bool {
    let outcome = match event {
        Event::Init => {
            if counters.inits.fetch_add(1, Ordering::Relaxed) > 0 {
                counters.restarts.fetch_add(1, Ordering::Relaxed);
            }
            store.begin_relist();
            return false;
        }
        Event::InitDone => {
            let swept = store.finish_relist();
            tracing::debug!(swept, pods = store.len(), "pod list complete");
            return true;
        }
        Event::InitApply(pod) | Event::Apply(pod) => store.apply(&pod),
        Event::Delete(pod) => Ok(store.delete(&pod)),
    };
    if let Err(error) = outcome {
        tracing::debug!(%error, "pod not cached");
    }
    false
}

async fn backfill_with_retry(
    client: &Client,
    store: &Arc<PodStore>,
    target: &BackfillTarget,
    config: &Config,
    counters: &Counters,
) {
    for attempt in 1..=BACKFILL_ATTEMPTS {
        match backfill(client, store, target, config).await {
            Ok(n) => {
                counters.backfills.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(?target, inserted = n, "backfill done");
                return;
            }
            Err(error) => {
                counters.backfill_errors.fetch_add(1, Ordering::Relaxed);
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
