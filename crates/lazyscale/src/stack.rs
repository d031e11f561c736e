//! The lazy autoscaling stack: started when the first autoscaler appears, stopped after the grace period
//! once the last one is gone, any number of times.
//!
//! [`run`] owns the demand set (`lazyscale_core::demand`, fed by the autoscaler watches of
//! [`crate::demand`]) and drives the gate (`lazyscale_core::gate`: its state machine and the watch channel
//! dependants wait on; the gate's driver task closes it when the grace period ends). While the gate is open, a [`Running`] stack holds the
//! pod collection, the webhook mutator and the webhook registration; closing the gate cancels its tasks and
//! drops it, which releases the pod cache's memory.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lazyscale_podcache::slim::{WorkloadKey, WorkloadKind};
use lazyscale_podcache::store::Interest;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Settings;
use crate::demand::{self, Target, Update};
use crate::index::DpaIndex;
use crate::telemetry::{DemandKind, DemandLabels, GateState, MemoryComponent, Metrics, TransitionLabels};
use crate::vertical::VerticalMutator;
use crate::webhook::{Mutator, Registration};
use lazyscale_controller::DpaChange;
use lazyscale_core::demand::{Demand, Source, SourceKind};
use lazyscale_core::gate::{Action, CloseOutcome, Gate};

/// Why the stack loop ended on its own.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The autoscaler watches stopped sending updates while the agent was running.
    #[error("the autoscaler watches ended")]
    WatchesEnded,
}

/// What the stack needs from the agent.
pub struct Deps {
    /// The Kubernetes client of the always-on parts.
    pub client: kube::Client,
    /// The client configuration: the stack gets a client (and a connection pool) of its own, dropped
    /// with the stack, so the memory of its connections goes back too.
    pub config: kube::Config,
    /// Settings.
    pub settings: Settings,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set once the agent is connected and watching.
    pub ready: Arc<AtomicBool>,
    /// Where the stack installs its webhook mutator.
    pub mutator: Arc<std::sync::RwLock<Option<Arc<dyn Mutator>>>>,
    /// The webhook registration (when the API server can reach our webhook).
    pub registration: Option<Registration>,
    /// Agent shutdown.
    pub stop: CancellationToken,
    /// The gate (its grace period is the configured one); dependants wait on its watchers.
    pub gate: Gate,
    /// The one DPA index (fed by the DPA watch; read by the webhook and the vertical loop).
    pub vertical: Arc<DpaIndex>,
    /// Period of the vertical recommendation loop.
    pub vertical_period: Duration,
    /// The vertical recommender's tunables.
    pub vertical_recommender: lazyscale_vertical::Config,
    /// Period of the horizontal controller.
    pub horizontal_period: Duration,
    /// Namespace of the leader-election Lease.
    pub lease_namespace: String,
    /// The vertical loop's last decision per DPA (for `explain`).
    pub vertical_decisions: crate::vertical::Decisions,
    /// Set to the controller's handle while the stack runs (for `explain`).
    pub controller: Arc<std::sync::RwLock<Option<lazyscale_controller::Handle>>>,
}

/// The stack while the gate is open.
struct Running {
    cancel: CancellationToken,
    /// The stack's tasks (controller, lease, vertical loop); stopping awaits every one.
    tasks: JoinSet<()>,
    /// DPA changes for the controller.
    dpa_changes: tokio::sync::mpsc::Sender<DpaChange>,
    /// DPA changes for the profile controller.
    profile_changes: tokio::sync::mpsc::Sender<DpaChange>,
    /// The controller, and its counters as last added to the metrics.
    controller: lazyscale_controller::Handle,
    flushed: lazyscale_controller::CounterSnapshot,
    pods: lazyscale_podcache::watch::PodCollection,
    /// The pod collection's decoded count as last added to the metrics.
    decoded_flushed: u64,
    /// The pod selectors of the autoscaled workloads (the pod watches are scoped by them).
    selectors: demand::Selectors,
    /// The interest set or the webhook namespaces must be refreshed at this time (changes are coalesced:
    /// many autoscalers created together cost one backfill per namespace, not one each).
    refresh_at: Option<Instant>,
}

/// How long autoscaler changes are collected before the pod cache's interest set is refreshed.
const COALESCE: Duration = Duration::from_secs(1);

fn set_autoscaler_gauges(metrics: &Metrics, demand: &Demand) {
    for (kind, label) in [
        (SourceKind::Dpa, DemandKind::Dpa),
        (SourceKind::Namespace, DemandKind::Namespace),
    ] {
        metrics
            .autoscalers
            .get_or_create(&DemandLabels { source: label })
            .set(demand.count(kind) as i64);
    }
    metrics
        .autoscalers
        .get_or_create(&DemandLabels {
            source: DemandKind::Workload,
        })
        .set((demand.count(SourceKind::Deployment) + demand.count(SourceKind::StatefulSet)) as i64);
}

async fn wait_for_api(client: &kube::Client, stop: &CancellationToken) -> bool {
    let mut delay = Duration::from_millis(200);
    loop {
        match client.apiserver_version().await {
            Ok(v) => {
                tracing::info!(version = %v.git_version, "connected to the API server");
                return true;
            }
            Err(error) => tracing::warn!(%error, "API server not reachable yet; retrying"),
        }
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Runs until the agent stops.
pub async fn run(mut deps: Deps) -> Result<(), StackError> {
    if !deps.settings.enabled {
        tracing::info!("autoscaling.workload.enabled is false: the autoscaling stack never starts");
        deps.ready.store(true, Ordering::Relaxed);
        deps.stop.cancelled().await;
        return Ok(());
    }
    if !wait_for_api(&deps.client, &deps.stop).await {
        return Ok(());
    }
    // The built-in ClusterProfiles exist from startup (one apply each; they never open the gate).
    tokio::spawn(
        lazyscale_controller::profiles::ensure_builtins_until_done(deps.client.clone(), deps.stop.clone())
            .instrument(tracing::info_span!("builtin_profiles")),
    );
    let mut updates = demand::spawn(
        deps.client.clone(),
        deps.metrics.demand_watch_errors.clone(),
        deps.stop.clone(),
    );
    // Ready once every always-on watch has finished its initial list (its first snapshot).
    let mut listed: BTreeSet<SourceKind> = BTreeSet::new();
    let mut demand = Demand::new();
    let mut targets: BTreeMap<Source, Target> = BTreeMap::new();
    tokio::spawn(deps.gate.driver().instrument(tracing::info_span!("gate")));
    let mut watcher = deps.gate.watcher();
    let mut epoch = 0;
    let mut running: Option<Running> = None;
    let mut refresh = tokio::time::interval(Duration::from_secs(2));
    let mut ended_on_its_own = false;
    if deps.settings.eager {
        tracing::info!("eager mode: starting the stack without waiting for an autoscaler");
        running = Some(start(&mut deps, &demand, &targets, listed.contains(&SourceKind::Dpa)).await);
    }
    loop {
        let refresh_at = running.as_ref().and_then(|r| r.refresh_at);
        tokio::select! {
            () = deps.stop.cancelled() => break,
            u = updates.recv() => {
                let Some(u) = u else {
                    ended_on_its_own = !deps.stop.is_cancelled();
                    break;
                };
                note_listed(&mut listed, &u, &deps.ready);
                let mut changes = apply(&mut demand, &mut targets, &deps.vertical, u);
                // take whatever else is already queued before acting
                while let Ok(u) = updates.try_recv() {
                    note_listed(&mut listed, &u, &deps.ready);
                    changes.extend(apply(&mut demand, &mut targets, &deps.vertical, u));
                }
                if let Some(r) = &running {
                    for c in changes {
                        // A full channel is fine: the controller's period reconciles every DPA anyway.
                        let _ = r.profile_changes.try_send(c.clone());
                        let _ = r.dpa_changes.try_send(c);
                    }
                }
                set_autoscaler_gauges(&deps.metrics, &demand);
                if let Some(r) = running.as_mut()
                    && r.refresh_at.is_none()
                {
                    r.refresh_at = Some(Instant::now() + COALESCE);
                }
            }
            // the driver closed the gate at the end of the grace period
            closed = watcher.wait_closed(epoch), if running.is_some() && !deps.settings.eager => {
                if closed == CloseOutcome::Closed {
                    stop_stack(&mut deps, &mut running).await;
                }
                continue;
            }
            () = async { if let Some(d) = refresh_at { tokio::time::sleep_until(d).await } else { std::future::pending().await } } => {
                if let Some(r) = running.as_mut() {
                    r.refresh_at = None;
                    r.selectors.refresh(&wanted(&demand, &targets)).await;
                    r.pods.set_interest(interest(&demand, &targets, &r.selectors));
                    if let Some(reg) = deps.registration.as_mut()
                        && let Err(error) = reg.sync(&namespaces(&demand)).await
                    {
                        tracing::warn!(%error, "webhook registration update failed; retrying");
                        r.refresh_at = Some(Instant::now() + Duration::from_secs(5));
                    }
                }
            }
            _ = refresh.tick() => {
                if let Some(r) = running.as_mut() {
                    // a rotated webhook certificate: re-inject its CA bundle
                    if let Some(reg) = deps.registration.as_mut()
                        && reg.ca_changed()
                        && let Err(error) = reg.sync(&namespaces(&demand)).await
                    {
                        tracing::warn!(%error, "webhook caBundle update failed; retrying");
                    }
                    flush_controller_metrics(&deps.metrics, r);
                    publish_cache_metrics(&deps.metrics, r);
                    publish_memory_metrics(&deps.metrics, &deps.vertical, r);
                    if r.refresh_at.is_none() && r.selectors.retry_due() {
                        r.refresh_at = Some(Instant::now());
                    }
                    if r.pods.is_synced() {
                        deps.gate.mark_pod_collection_synced(epoch);
                    }
                }
            }
        }
        if deps.settings.eager {
            continue;
        }
        match deps.gate.set_demand(!demand.is_empty()) {
            Action::StartStack => {
                epoch = deps.gate.epoch();
                deps.metrics
                    .gate_transitions
                    .get_or_create(&TransitionLabels { to: GateState::Open })
                    .inc();
                running = Some(start(&mut deps, &demand, &targets, listed.contains(&SourceKind::Dpa)).await);
            }
            Action::StopStack => stop_stack(&mut deps, &mut running).await,
            Action::None => {}
        }
    }
    let _ = deps.gate.shutdown();
    if let Some(r) = running.take() {
        stop(&mut deps, r).await;
    }
    if ended_on_its_own {
        return Err(StackError::WatchesEnded);
    }
    Ok(())
}

/// Marks the agent ready once every kind of [`SourceKind::ALL`] has sent its first snapshot.
fn note_listed(listed: &mut BTreeSet<SourceKind>, u: &Update, ready: &AtomicBool) {
    if let Update::Snapshot(kind, _) = u
        && listed.insert(*kind)
        && listed.len() == SourceKind::ALL.len()
    {
        tracing::info!("every autoscaler watch has listed: ready");
        ready.store(true, Ordering::Relaxed);
    }
}

async fn stop_stack(deps: &mut Deps, running: &mut Option<Running>) {
    if let Some(r) = running.take() {
        deps.metrics
            .gate_transitions
            .get_or_create(&TransitionLabels {
                to: GateState::Closed,
            })
            .inc();
        stop(deps, r).await;
    }
}

/// Applies one update to the demand set, the DPA targets and the DPA index; returns what changed
/// for the controller.
fn apply(
    demand: &mut Demand,
    targets: &mut BTreeMap<Source, Target>,
    index: &DpaIndex,
    u: Update,
) -> Vec<DpaChange> {
    let mut changes = Vec::new();
    match u {
        Update::Snapshot(kind, list) => {
            if kind == SourceKind::Dpa {
                // Every DPA before and after the relist: the deleted ones are forgotten too.
                let before = index.snapshot();
                changes.extend(
                    before
                        .keys()
                        .map(|(ns, name)| DpaChange::Changed((ns.to_owned(), name.to_owned()))),
                );
                targets.clear();
                index.replace(list.iter().filter_map(|(_, t)| Some(t.as_ref()?.dpa.clone())));
                changes.extend(
                    list.iter().map(|(s, _)| {
                        DpaChange::Changed((s.namespace_name().to_owned(), s.name().to_owned()))
                    }),
                );
                changes.push(DpaChange::Synced);
            }
            let mut set = BTreeSet::new();
            for (s, t) in list {
                // A DPA generated from a profile is not demand: its labelled workload is.
                let generated = t.as_ref().is_some_and(|t| t.generated);
                // A DPA that does not decode is reported, not acted on: no pods are kept for it.
                if let Some(t) = t.filter(|t| t.dpa.is_ok()) {
                    targets.insert(s.clone(), t);
                }
                if !generated {
                    set.insert(s);
                }
            }
            let _ = demand.replace_kind(kind, set);
        }
        Update::Present(s, t) => {
            if s.kind() == SourceKind::Dpa {
                changes.push(DpaChange::Changed((
                    s.namespace_name().to_owned(),
                    s.name().to_owned(),
                )));
            }
            let generated = t.as_ref().is_some_and(|t| t.generated);
            match t {
                Some(t) => {
                    if s.kind() == SourceKind::Dpa {
                        index.set(t.dpa.clone());
                    }
                    if t.dpa.is_ok() {
                        targets.insert(s.clone(), t)
                    } else {
                        targets.remove(&s)
                    }
                }
                None => targets.remove(&s),
            };
            let _ = demand.apply(s, !generated);
        }
        Update::Gone(s) => {
            if s.kind() == SourceKind::Dpa {
                index.remove(s.namespace_name(), s.name());
                changes.push(DpaChange::Changed((
                    s.namespace_name().to_owned(),
                    s.name().to_owned(),
                )));
            }
            targets.remove(&s);
            let _ = demand.apply(s, false);
        }
    }
    changes
}

/// The autoscaled workloads (DPA targets and profile-labelled workloads) with their `targetRef`
/// `apiVersion` and kind, whose pod selectors scope the pod watches.
pub fn wanted(demand: &Demand, targets: &BTreeMap<Source, Target>) -> Vec<demand::Wanted> {
    let mut out = Vec::new();
    for (dpa, t) in targets {
        let api_version = t
            .dpa
            .as_ref()
            .ok()
            .and_then(|d| d.spec.target_ref.api_version.clone())
            .unwrap_or_else(|| {
                WorkloadKind::from_kind(&t.kind)
                    .api_version()
                    .unwrap_or_default()
                    .to_string()
            });
        out.push((
            WorkloadKey::new(dpa.namespace_name(), WorkloadKind::from_kind(&t.kind), &t.name),
            api_version,
            t.kind.clone(),
        ));
    }
    for (kind, wk) in [
        (SourceKind::Deployment, WorkloadKind::Deployment),
        (SourceKind::StatefulSet, WorkloadKind::StatefulSet),
    ] {
        for s in demand.of_kind(kind) {
            out.push((
                WorkloadKey::new(s.namespace_name(), wk, s.name()),
                wk.api_version().unwrap_or_default().to_string(),
                wk.as_str().to_string(),
            ));
        }
    }
    out
}

/// The workloads whose pods the cache keeps, with their pod selectors when known: DPA targets,
/// profile-labelled workloads, and every workload of a profile-labelled namespace.
pub fn interest(
    demand: &Demand,
    targets: &BTreeMap<Source, Target>,
    selectors: &demand::Selectors,
) -> Interest {
    let mut i = Interest::new();
    for (key, _, _) in wanted(demand, targets) {
        let selector = selectors.get(&key).map(str::to_owned);
        i.add_workload(key, selector);
    }
    for s in demand.of_kind(SourceKind::Namespace) {
        i.add_namespace(s.namespace_name());
    }
    i
}

/// How many DPA changes may wait for the controller (beyond, its period catches up).
const DPA_CHANGES: usize = 1024;

async fn start(
    deps: &mut Deps,
    demand: &Demand,
    targets: &BTreeMap<Source, Target>,
    dpas_listed: bool,
) -> Running {
    tracing::info!(
        autoscalers = demand.len(),
        "first autoscaler: starting the autoscaling stack"
    );
    let cancel = deps.stop.child_token();
    let mut tasks = JoinSet::new();
    let client = match crate::telemetry::client(deps.config.clone(), &deps.metrics) {
        Ok(c) => c,
        Err(error) => {
            tracing::warn!(%error, "could not build the stack's own client; sharing the agent's");
            deps.client.clone()
        }
    };
    let pods = lazyscale_podcache::watch::PodCollection::start(
        client.clone(),
        lazyscale_podcache::watch::Config {
            page_size: deps.settings.page_size,
            ..Default::default()
        },
        cancel.clone(),
    );
    // Only the lease holder writes (scale, status, events); every replica keeps its cache and serves
    // the webhook. The lease lives with the stack: an idle agent renews nothing.
    let (leader, lease) = lazyscale_controller::lease::spawn(
        client.clone(),
        lazyscale_controller::lease::LeaseConfig::new(
            &deps.lease_namespace,
            lazyscale_api::consts::LEASE_NAME,
            &crate::horizontal::identity(),
        ),
        cancel.clone(),
    );
    // The controller reads the one DPA index; the stack tells it what changed.
    let (dpa_changes, changes) = tokio::sync::mpsc::channel(DPA_CHANGES);
    if dpas_listed {
        let _ = dpa_changes.try_send(DpaChange::Synced);
    }
    let controller = lazyscale_controller::Controller::with_dpas(
        client.clone(),
        lazyscale_controller::Config {
            recommendation_period: deps.horizontal_period,
            self_target: crate::horizontal::self_target(),
            instance: Some(crate::horizontal::identity()),
            ..Default::default()
        },
        Arc::new(crate::horizontal::CachePods {
            store: pods.store().clone(),
            synced: pods.subscribe_synced(),
            sync: pods.sync_view(),
        }),
        deps.vertical.clone(),
        changes,
    );
    let handle = controller.handle();
    // The profile controller generates DPAs for labelled workloads (leader only); it reads the same index.
    let (profile_changes, profile_rx) = tokio::sync::mpsc::channel(DPA_CHANGES);
    if dpas_listed {
        let _ = profile_changes.try_send(DpaChange::Synced);
    }
    let profiles = lazyscale_controller::profiles::ProfileController::with_dpas(
        client.clone(),
        lazyscale_controller::profiles::Config {
            instance: Some(crate::horizontal::identity()),
            ..Default::default()
        },
        deps.vertical.clone(),
        profile_rx,
    );
    tasks.spawn(
        profiles
            .run(leader.clone(), cancel.clone())
            .instrument(tracing::info_span!("profiles")),
    );
    if let Ok(mut h) = deps.controller.write() {
        *h = Some(handle.clone());
    }
    tasks.spawn(
        async move {
            if let Err(error) = lease.await {
                tracing::warn!(%error, "the lease task failed");
            }
        }
        .instrument(tracing::info_span!("lease")),
    );
    tasks.spawn(
        controller
            .run(leader.clone(), cancel.clone())
            .instrument(tracing::info_span!("controller")),
    );
    // lazyscale_leader follows the Lease (0 again when the stack stops)
    let (mut held, metrics, done) = (leader.clone(), deps.metrics.clone(), cancel.clone());
    tasks.spawn(
        async move {
            loop {
                metrics.leader.set(i64::from(*held.borrow_and_update()));
                tokio::select! {
                    () = done.cancelled() => break,
                    changed = held.changed() => if changed.is_err() { break },
                }
            }
            metrics.leader.set(0);
        }
        .instrument(tracing::info_span!("leader_metric")),
    );
    let mut selectors = demand::Selectors::new(client.clone());
    selectors.refresh(&wanted(demand, targets)).await;
    pods.set_interest(interest(demand, targets, &selectors));
    deps.metrics.gate_open.set(1);
    if let Ok(mut m) = deps.mutator.write() {
        *m = Some(Arc::new(VerticalMutator::new(
            deps.vertical.clone(),
            Some(Arc::new(lazyscale_controller::events::Recorder::new(
                client.clone(),
                lazyscale_controller::events::Reporter {
                    controller: lazyscale_api::consts::events::REPORTER.into(),
                    instance: Some(crate::horizontal::identity()),
                },
            ))),
            Some(deps.metrics.clone()),
        )));
    }
    tasks.spawn(
        crate::vertical::run(
            client,
            pods.store().clone(),
            deps.vertical.clone(),
            crate::vertical::LoopConfig {
                period: deps.vertical_period,
                leader,
                recommender: deps.vertical_recommender.clone(),
                metrics: deps.metrics.clone(),
                apply: deps.settings.vertical_apply.clone(),
                decisions: deps.vertical_decisions.clone(),
            },
            cancel.clone(),
        )
        .instrument(tracing::info_span!("vertical")),
    );
    if let Some(reg) = deps.registration.as_mut()
        && let Err(error) = reg.sync(&namespaces(demand)).await
    {
        tracing::warn!(%error, "webhook registration failed; retrying on the next change");
    }
    Running {
        cancel,
        tasks,
        dpa_changes,
        profile_changes,
        controller: handle,
        flushed: lazyscale_controller::CounterSnapshot::default(),
        pods,
        decoded_flushed: 0,
        selectors,
        refresh_at: None,
    }
}

fn flush_controller_metrics(metrics: &Metrics, r: &mut Running) {
    let now = r.controller.counters();
    metrics.add_controller(now, r.flushed);
    r.flushed = now;
}

fn publish_cache_metrics(metrics: &Metrics, r: &mut Running) {
    let stats = r.pods.stats();
    metrics
        .pods_decoded
        .inc_by(stats.decoded.saturating_sub(r.decoded_flushed));
    r.decoded_flushed = stats.decoded;
    metrics.pod_watches.set(stats.watches as i64);
    metrics.cached_pods.set(stats.pods as i64);
    metrics.cache_bytes.set(stats.bytes as i64);
    metrics.watch_restarts.set(stats.restarts as i64);
    metrics.watch_errors.set(stats.errors as i64);
    metrics.pod_collection_synced.set(i64::from(r.pods.is_synced()));
}

/// The per-DPA memory breakdown (`lazyscale_memory_bytes`) the stack publishes on its refresh tick; the
/// vertical loop publishes its own two components (histograms, state) on its period.
fn publish_memory_metrics(metrics: &Metrics, index: &DpaIndex, r: &Running) {
    let snapshot = index.snapshot();
    metrics.set_memory(MemoryComponent::DpaIndex, snapshot.dpa_heap_bytes());
    let controller = r.controller.state_bytes();
    metrics.set_memory(MemoryComponent::ControllerState, controller.total());
    metrics.set_controller_state(Some(controller));
    // The pod cache's own indexes (uid, owner, interest) are in `lazyscale_podcache_bytes`, the figure
    // per cached pod: counted here as well they were counted twice.
    metrics.set_memory(MemoryComponent::Indexes, snapshot.autoscalers_heap_bytes());
}

/// How long stopping the stack waits for its tasks (the lease release is one API call).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

async fn stop(deps: &mut Deps, mut r: Running) {
    tracing::info!("last autoscaler gone and grace period over: stopping the autoscaling stack");
    if let Ok(mut m) = deps.mutator.write() {
        *m = None;
    }
    if let Ok(mut h) = deps.controller.write() {
        *h = None;
    }
    if let Some(reg) = deps.registration.as_mut()
        && let Err(error) = reg.remove().await
    {
        tracing::warn!(%error, "could not remove the webhook configuration");
    }
    r.cancel.cancel();
    let drain = async {
        while let Some(done) = r.tasks.join_next().await {
            if let Err(error) = done {
                tracing::warn!(%error, "a stack task failed");
            }
        }
    };
    if tokio::time::timeout(STOP_TIMEOUT, drain).await.is_err() {
        tracing::warn!("stack tasks still running after {STOP_TIMEOUT:?}: aborting them");
        r.tasks.abort_all();
    }
    flush_controller_metrics(&deps.metrics, &mut r);
    publish_cache_metrics(&deps.metrics, &mut r);
    r.pods.stopped().await;
    drop(r);
    deps.metrics.gate_open.set(0);
    deps.metrics.pod_collection_synced.set(0);
    deps.metrics.cached_pods.set(0);
    deps.metrics.cache_bytes.set(0);
    for c in MemoryComponent::ALL {
        deps.metrics.set_memory(c, 0);
    }
    deps.metrics.set_controller_state(None);
}

fn namespaces(demand: &Demand) -> BTreeSet<String> {
    demand.namespaces_with_autoscalers().map(str::to_string).collect()
}
