//! Vertical autoscaling wired to the cluster: the webhook mutator and the recommendation loop.
//!
//! While the stack is up:
//! - [`VerticalMutator`] answers admission requests with `lazyscale_vertical::mutate` over an index of
//!   the known DPAs (their `status.vertical.target`, constraints and mode);
//! - [`run`] lists metrics.k8s.io PodMetrics every period for the namespaces with DPAs, feeds the usage of
//!   each DPA target's pods (found through the pod cache's owner index) to the local recommender, notes
//!   OOM kills the pod cache saw, and writes `status.vertical.target` when it changed (a merge patch of
//!   `status.vertical` only, so other status writers are not disturbed).
//!
//! The recommender's memory is per tracked container and is freed when its DPA goes away.
//!
//! The leader then brings running pods to the stored recommendation ([`crate::vertical_apply`]: rollout
//! or in-place resize per the DPA's mode) and writes `status.vertical.lastAction`, the target's
//! `scaled`/`evicted` counts and `VerticalAbleToApply` in the same apply. In H+V mode with CPU opted in,
//! the CPU target follows the coupling rule of [`lazyscale_vertical::apply::couple_cpu`].
//!
//! Histograms are checkpointed (at most once per 10 minutes per DPA, by the leader) into a ConfigMap
//! `lazyscale-checkpoint-<dpa>` next to the DPA, owned by it: the garbage collector deletes it with the
//! DPA, RBAC for ConfigMaps is ordinary, and a checkpoint (a few KB) fits easily. When the loop first sees
//! a DPA it restores that checkpoint, so a restart or a new leader keeps the history.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use lazyscale_api::DatadogPodAutoscaler;
use lazyscale_api::consts;
use lazyscale_podcache::store::PodStore;
use lazyscale_vertical::{Outcome, Recommender, WorkloadKey};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::index::DpaIndex;
use crate::telemetry::{MemoryComponent, Metrics, VerticalOp};
use crate::webhook::Mutator;

/// The webhook mutator of a running stack.
pub struct VerticalMutator {
    /// The DPA index.
    pub state: Arc<DpaIndex>,
    /// Where conflicts are reported as Kubernetes events (on the DPAs involved).
    pub events: Option<Arc<lazyscale_controller::events::Recorder>>,
    /// When each conflict was last reported: one event per conflict per [`CONFLICT_EVERY`], at most
    /// [`MAX_CONFLICTS`] conflicts remembered, so admissions never pile up event tasks.
    reported: Mutex<HashMap<String, Instant>>,
    /// Where reported conflicts are counted.
    metrics: Option<Arc<Metrics>>,
}

/// How often one conflict is reported.
pub const CONFLICT_EVERY: Duration = Duration::from_secs(300);
/// Conflicts remembered at most (beyond, new ones are logged but not reported as events).
pub const MAX_CONFLICTS: usize = 1024;

impl VerticalMutator {
    /// A mutator over the index, reporting conflicts to `events`.
    pub fn new(
        state: Arc<DpaIndex>,
        events: Option<Arc<lazyscale_controller::events::Recorder>>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Self {
            state,
            events,
            reported: Mutex::default(),
            metrics,
        }
    }

    /// Whether this conflict is due for an event now (and remembers that it was reported).
    fn due(&self, key: String, now: Instant) -> bool {
        let Ok(mut reported) = self.reported.lock() else {
            return false;
        };
        if let Some(at) = reported.get(&key)
            && now.duration_since(*at) < CONFLICT_EVERY
        {
            return false;
        }
        if reported.len() >= MAX_CONFLICTS {
            reported.retain(|_, at| now.duration_since(*at) < CONFLICT_EVERY);
            if reported.len() >= MAX_CONFLICTS {
                return false;
            }
        }
        reported.insert(key, now);
        true
    }
}

fn report_conflict(
    recorder: Arc<lazyscale_controller::events::Recorder>,
    namespace: String,
    autoscalers: Vec<String>,
) {
    use lazyscale_controller::events::{Event, EventType};
    // Mutators run inside the webhook's tokio runtime.
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let span = tracing::info_span!("conflict_event", namespace = %namespace);
    rt.spawn(
        async move {
        let note = format!(
            "{} DatadogPodAutoscalers target the same workload ({}); new pods are not patched until only one does",
            autoscalers.len(),
            autoscalers.join(", ")
        );
        for id in &autoscalers {
            let name = id.rsplit('/').next().unwrap_or(id).to_string();
            let reference = k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some(consts::API_VERSION.into()),
                kind: Some(consts::DPA_KIND.into()),
                name: Some(name),
                namespace: Some(namespace.clone()),
                ..Default::default()
            };
            let ev = Event {
                type_: EventType::Warning,
                reason: "ConflictingAutoscalers".into(),
                note: Some(note.clone()),
                action: "MutatePod".into(),
                secondary: None,
            };
            if let Err(error) = recorder.publish(&ev, &reference).await {
                tracing::debug!(%error, "conflict event not written");
            }
        }
    }
    .instrument(span));
}

impl Mutator for VerticalMutator {
    fn mutate(&self, review: &[u8]) -> Result<Option<serde_json::Value>, String> {
        let snapshot = self.state.snapshot();
        match lazyscale_vertical::mutate(review, snapshot.autoscalers()) {
            Ok(Outcome::Patched { patch, .. }) => Ok(Some(patch)),
            Ok(Outcome::Conflict {
                namespace,
                target,
                autoscalers,
            }) => {
                tracing::warn!(%namespace, ?target, ?autoscalers, "more than one DatadogPodAutoscaler targets this workload: pod not patched");
                if let Some(r) = &self.events
                    && self.due(format!("{namespace}/{}", autoscalers.join(",")), Instant::now())
                {
                    if let Some(m) = &self.metrics {
                        m.vertical(VerticalOp::Conflict);
                    }
                    report_conflict(r.clone(), namespace, autoscalers);
                }
                Ok(None)
            }
            Ok(_) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn pod_metrics_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics"),
        "pods",
    )
}

/// Settings of the recommendation loop.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// How often usage is read and recommendations are refreshed.
    pub period: Duration,
    /// Whether this replica may write status (it holds the lease).
    pub leader: tokio::sync::watch::Receiver<bool>,
    /// The recommender's tunables.
    pub recommender: lazyscale_vertical::Config,
    /// Where the loop's operations are counted.
    pub metrics: Arc<Metrics>,
    /// The apply path's settings.
    pub apply: crate::vertical_apply::ApplySettings,
    /// The last vertical decision per DPA (`namespace/name`), for `explain`.
    pub decisions: Decisions,
}

/// The last vertical decision per DPA (`namespace/name` → one line), shared with the admin server.
pub type Decisions = Arc<std::sync::RwLock<BTreeMap<String, String>>>;

/// Runs the recommendation loop until `stop`.
pub async fn run(
    client: kube::Client,
    pods: Arc<PodStore>,
    state: Arc<DpaIndex>,
    config: LoopConfig,
    stop: CancellationToken,
) {
    let mut recommender = match Recommender::new(config.recommender.clone()) {
        Ok(r) => r,
        Err(error) => {
            tracing::error!(%error, "vertical recommender configuration invalid; vertical recommendations disabled");
            return;
        }
    };
    // What each DPA's last write decided on, as a fingerprint (a few bytes, not the JSON).
    let mut written: HashMap<(String, String), u64> = HashMap::new();
    let mut seen_ooms = std::collections::HashSet::new();
    let mut tracked: std::collections::HashSet<WorkloadKey> = std::collections::HashSet::new();
    let mut restores = Restores::default();
    let mut applier =
        crate::vertical_apply::Applier::new(client.clone(), config.apply.clone(), config.metrics.clone());
    let mut tick = tokio::time::interval(config.period);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let dpas: Vec<Arc<DatadogPodAutoscaler>> = state.snapshot().dpas().cloned().collect();
        written.retain(|(ns, name), _| {
            dpas.iter().any(|d| {
                d.metadata.namespace.as_deref() == Some(ns) && d.metadata.name.as_deref() == Some(name)
            })
        });
        // a DPA gone: its histograms go too
        let live: std::collections::HashSet<WorkloadKey> = dpas.iter().filter_map(|d| key_of(d)).collect();
        for gone in tracked.difference(&live) {
            recommender.forget(gone);
            restores.forget(gone);
        }
        tracked = live;
        let names: std::collections::HashSet<(String, String)> = dpas
            .iter()
            .filter_map(|d| Some((d.metadata.namespace.clone()?, d.metadata.name.clone()?)))
            .collect();
        applier.retain(&names);
        if let Ok(mut d) = config.decisions.write() {
            d.retain(|k, _| {
                k.split_once('/')
                    .is_some_and(|(ns, n)| names.contains(&(ns.to_owned(), n.to_owned())))
            });
        }
        recommender.garbage_collect(Timestamp::now());
        // OOM kills already counted, bounded by the pods still cached (kept only for pods seen this round).
        let mut alive: std::collections::HashSet<u128> = std::collections::HashSet::new();
        let mut complete = true;
        let mut namespaces: BTreeMap<String, Vec<Arc<DatadogPodAutoscaler>>> = BTreeMap::new();
        for d in &dpas {
            if let Some(ns) = &d.metadata.namespace {
                namespaces.entry(ns.clone()).or_default().push(d.clone());
            }
        }
        for (ns, list) in namespaces {
            let metrics =
                match Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &pod_metrics_resource())
                    .list(&ListParams::default())
                    .await
                {
                    Ok(l) => l.items,
                    Err(error) => {
                        tracing::debug!(%error, namespace = %ns, "no pod metrics");
                        complete = false;
                        config.metrics.vertical(VerticalOp::MetricsError);
                        continue;
                    }
                };
            let by_pod: HashMap<&str, &DynamicObject> = metrics
                .iter()
                .filter_map(|m| Some((m.metadata.name.as_deref()?, m)))
                .collect();
            for dpa in list {
                let Some(key) = key_of(&dpa) else { continue };
                if restores.due(&key, Instant::now()) {
                    match restore(&client, &mut recommender, &dpa, &key).await {
                        Restored::Settled => restores.settled(&key),
                        Restored::Failed => restores.failed(&key, Instant::now()),
                    }
                }
                let bump = dpa
                    .spec
                    .options
                    .as_ref()
                    .and_then(|o| o.out_of_memory.as_ref())
                    .and_then(|o| o.bump_up_ratio.as_ref())
                    .and_then(|q| q.0.trim().parse::<f64>().ok());
                for _ in 0..feed(
                    &mut recommender,
                    &mut seen_ooms,
                    &mut alive,
                    &pods,
                    &key,
                    &by_pod,
                    bump,
                ) {
                    config.metrics.vertical(VerticalOp::OomRecorded);
                }
                // Only once the checkpoint was read: a read that failed would otherwise be overwritten by
                // the few samples taken since the start.
                if *config.leader.borrow()
                    && restores.is_settled(&key)
                    && let Some(cp) = recommender.checkpoint_if_due(&key, Timestamp::now())
                    && save_checkpoint(&client, &dpa, &cp).await
                {
                    config.metrics.vertical(VerticalOp::Checkpoint);
                }
                let rec = recommender.recommend(&key);
                let rec = match lazyscale_vertical::apply::mode(&dpa).scaling {
                    lazyscale_vertical::apply::Scaling::HorizontalAndVertical => rec.map(|r| {
                        lazyscale_vertical::apply::couple_cpu(
                            &r,
                            &current_cpu(&pods, &key),
                            lazyscale_vertical::apply::horizontal_position(&dpa),
                        )
                    }),
                    _ => rec,
                };
                let out =
                    lazyscale_vertical::dpa_vertical_target(&dpa, rec.as_ref(), false, Timestamp::now());
                let applied = if *config.leader.borrow() {
                    Some(applier.step(&dpa, &pods, &by_pod).await)
                } else {
                    None
                };
                let mut inputs = vec![&out.able_to_recommend, &out.scaling_limited];
                if let Some(a) = &applied {
                    inputs.push(&a.condition);
                    if let Ok(mut d) = config.decisions.write() {
                        d.insert(
                            format!("{ns}/{}", dpa.metadata.name.as_deref().unwrap_or_default()),
                            a.decision.clone(),
                        );
                    }
                }
                let conditions = conditions_of(&dpa, &inputs);
                let target = out
                    .target
                    .map(|mut t| {
                        if let Some(a) = &applied
                            && a.version.as_deref() == Some(t.version.as_str())
                        {
                            t.scaled = a.scaled;
                            t.evicted = a.evicted;
                        }
                        t
                    })
                    .and_then(|t| serde_json::to_value(&t).ok())
                    .map(|mut v| {
                        if let Some(o) = v.as_object_mut() {
                            o.retain(|_, x| !x.is_null());
                        }
                        v
                    });
                // what decides a write: the target without its time, and the conditions without theirs
                let last_action = applied
                    .as_ref()
                    .and_then(|a| a.last_action.as_ref())
                    .or_else(|| {
                        dpa.status
                            .as_ref()
                            .and_then(|s| s.vertical.as_ref())
                            .and_then(|v| v.last_action.as_ref())
                    })
                    .and_then(|a| serde_json::to_value(a).ok());
                let comparable = json!({"target": target.as_ref().map(strip_time), "lastAction": last_action,
                    "conditions": strip_condition_times(&conditions)});
                let stored = dpa.status.as_ref().and_then(|s| s.vertical.as_ref());
                let current = json!({
                    "target": stored.and_then(|v| v.target.as_ref())
                        .and_then(|t| serde_json::to_value(t).ok()).map(|v| strip_time(&v)),
                    "lastAction": stored.and_then(|v| v.last_action.as_ref()).and_then(|a| serde_json::to_value(a).ok()),
                    "conditions": strip_condition_times(&current_conditions(&dpa)),
                });
                let id = (ns.clone(), dpa.metadata.name.clone().unwrap_or_default());
                let current_matches = current == comparable;
                let comparable = fingerprint(&comparable);
                if current_matches || written.get(&id) == Some(&comparable) || !*config.leader.borrow() {
                    continue;
                }
                let mut status = json!({"conditions": conditions});
                if let Some(t) = target {
                    status["vertical"] = json!({"target": t});
                }
                if let Some(a) = last_action {
                    status["vertical"]["lastAction"] = a;
                }
                let body = json!({"apiVersion": consts::API_VERSION, "kind": consts::DPA_KIND,
                    "metadata": {"name": id.1, "namespace": ns}, "status": status});
                match Api::<DynamicObject>::namespaced_with(
                    client.clone(),
                    &ns,
                    &crate::demand::dpa_resource(),
                )
                .patch_status(
                    &id.1,
                    &PatchParams::apply(consts::field_managers::VERTICAL).force(),
                    &Patch::Apply(&body),
                )
                .await
                {
                    Ok(_) => {
                        tracing::info!(namespace = %ns, dpa = %id.1, "vertical recommendation written");
                        config.metrics.vertical(VerticalOp::StatusWrite);
                        written.insert(id, comparable);
                    }
                    Err(error) => {
                        tracing::warn!(%error, namespace = %ns, dpa = %id.1, "writing the vertical recommendation failed; retrying next period");
                        config.metrics.vertical(VerticalOp::StatusError);
                    }
                }
            }
        }
        if complete {
            seen_ooms.retain(|(uid, _, _)| alive.contains(uid));
        }
        config.metrics.set_memory(
            MemoryComponent::VerticalHistograms,
            recommender.approx_heap_bytes(),
        );
        let decisions = config
            .decisions
            .read()
            .map(|d| state_bytes(&written, &d))
            .unwrap_or(0);
        config
            .metrics
            .set_memory(MemoryComponent::VerticalState, decisions);
    }
}

/// Approximate heap bytes of the vertical loop's per-DPA state beside the histograms: the statuses it
/// wrote (compared with before writing again) and the explain decisions, keys included. Not counted:
/// the OOM kills seen, the restore schedule and the apply path's per-DPA state.
fn state_bytes(written: &HashMap<(String, String), u64>, decisions: &BTreeMap<String, String>) -> usize {
    use lazyscale_api::heap::{btree_bytes, hash_table_bytes, string_bytes};
    hash_table_bytes::<((String, String), u64)>(written.capacity())
        + written
            .keys()
            .map(|(ns, name)| string_bytes(ns) + string_bytes(name))
            .sum::<usize>()
        + btree_bytes(decisions.len(), std::mem::size_of::<(String, String)>())
        + decisions
            .iter()
            .map(|(k, v)| string_bytes(k) + string_bytes(v))
            .sum::<usize>()
}

/// A fingerprint of what a status write decided on (its serialization hashed with std's SipHash, fixed
/// keys): equal values have equal fingerprints in every run; a different value shares one with
/// probability 2^-64, which would skip one write until the value changes again.
fn fingerprint(v: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    v.to_string().hash(&mut h);
    h.finish()
}

fn key_of(dpa: &DatadogPodAutoscaler) -> Option<WorkloadKey> {
    Some(WorkloadKey::new(
        dpa.metadata.namespace.as_deref()?,
        dpa.spec.target_ref.kind.as_str(),
        &dpa.spec.target_ref.name,
    ))
}

fn strip_time(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("generatedAt");
        o.retain(|_, x| !x.is_null());
    }
    v
}

/// The CPU request per container of the workload's first live pod (the coupling rule's "current").
fn current_cpu(pods: &PodStore, key: &WorkloadKey) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    pods.for_each_pod_of(key, |pod| {
        if !out.is_empty() || pod.is_terminating() {
            return;
        }
        for c in pod.containers() {
            if let Some(cpu) = c.resources.requests.cpu_millis {
                out.insert(c.name.to_string(), cpu);
            }
        }
    });
    out
}

fn feed(
    recommender: &mut Recommender,
    seen_ooms: &mut std::collections::HashSet<(u128, usize, u32)>,
    alive: &mut std::collections::HashSet<u128>,
    pods: &PodStore,
    key: &WorkloadKey,
    metrics: &HashMap<&str, &DynamicObject>,
    bump_up_ratio: Option<f64>,
) -> usize {
    let now = Timestamp::now();
    let mut ooms = 0;
    pods.for_each_pod_of(key, |pod| {
        alive.insert(pod.uid());
        for (i, state) in pod.container_states().iter().enumerate() {
            // each kill once: the termination stays in lastState until the next one
            if state.last_oom_killed()
                && let Some(c) = pod.containers().get(i)
                && seen_ooms.insert((pod.uid(), i, state.restarts()))
            {
                let r = &c.resources;
                let limit = r.limits.memory_bytes.or(r.requests.memory_bytes).unwrap_or(0);
                if limit > 0 {
                    recommender.record_oom(key, c.name.as_str(), limit, now, bump_up_ratio);
                    ooms += 1;
                }
                // the OOM ratchet: the limit it was killed at (what the kubelet reports it runs with, else
                // the spec's), raised by the ratio
                let running = c.status_resources.as_ref().unwrap_or(r);
                if let Some(limit) = running.limits.memory_bytes.filter(|l| *l > 0) {
                    recommender.record_oom_limit(key, c.name.as_str(), limit, now, bump_up_ratio);
                }
            }
        }
        let name = pod.name();
        let Some(m) = metrics.get(name.as_ref()) else {
            return;
        };
        let at = m
            .data
            .get("timestamp")
            .and_then(|t| t.as_str())
            .and_then(|t| t.parse::<Timestamp>().ok())
            .unwrap_or(now);
        let Some(containers) = m.data.get("containers").and_then(|c| c.as_array()) else {
            return;
        };
        for c in containers {
            let Some(name) = c.get("name").and_then(|n| n.as_str()) else {
                continue;
            };
            let usage = c.get("usage");
            if let Some(cpu) = usage.and_then(|u| u.get("cpu")).and_then(|v| v.as_str())
                && let Ok(millis) = lazyscale_vertical::quantity::parse_millis(cpu)
            {
                recommender.add_cpu_sample(key, name, millis as f64, at);
            }
            if let Some(mem) = usage.and_then(|u| u.get("memory")).and_then(|v| v.as_str())
                && let Ok(bytes) = lazyscale_vertical::quantity::parse_units(mem)
            {
                recommender.add_memory_sample(key, name, bytes, at);
            }
        }
    });
    ooms
}

/// The vertical conditions of a DPA as stored (`VerticalAbleToRecommend`, `VerticalScalingLimited`,
/// `VerticalAbleToApply`).
fn current_conditions(dpa: &DatadogPodAutoscaler) -> Vec<serde_json::Value> {
    dpa.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| {
            c.iter()
                .filter(|c| {
                    c.type_ == consts::conditions::VERTICAL_ABLE_TO_RECOMMEND
                        || c.type_ == consts::conditions::VERTICAL_SCALING_LIMITED
                        || c.type_ == consts::conditions::VERTICAL_ABLE_TO_APPLY
                })
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The conditions to write: `lastTransitionTime` kept from the stored condition when its status did not
/// change (pure apart from reading the clock).
pub fn conditions_of(
    dpa: &DatadogPodAutoscaler,
    inputs: &[&lazyscale_vertical::ConditionInput],
) -> Vec<serde_json::Value> {
    let stored = dpa.status.as_ref().and_then(|s| s.conditions.as_ref());
    let now = Timestamp::now().to_string();
    inputs
        .iter()
        .map(|c| {
            let previous = stored.and_then(|list| list.iter().find(|x| x.type_ == c.type_));
            let since = match previous {
                Some(p) if p.status == c.status => p
                    .last_transition_time
                    .as_ref()
                    .and_then(|t| serde_json::to_value(t).ok())
                    .unwrap_or_else(|| json!(now)),
                _ => json!(now),
            };
            let mut v = json!({"type": c.type_, "status": c.status, "lastTransitionTime": since});
            if let Some(r) = c.reason {
                v["reason"] = json!(r);
            }
            if let Some(m) = &c.message {
                v["message"] = json!(m);
            }
            v
        })
        .collect()
}

fn strip_condition_times(list: &[serde_json::Value]) -> serde_json::Value {
    let mut out: Vec<serde_json::Value> = list
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if let Some(o) = c.as_object_mut() {
                o.remove("lastTransitionTime");
            }
            c
        })
        .collect();
    out.sort_by(|a, b| a["type"].as_str().cmp(&b["type"].as_str()));
    serde_json::Value::Array(out)
}

/// The ConfigMap holding a DPA's recommender checkpoint.
pub fn checkpoint_name(dpa: &str) -> String {
    format!("lazyscale-checkpoint-{dpa}")
}

/// The key of the checkpoint inside the ConfigMap.
const CHECKPOINT_KEY: &str = "checkpoint.json";

async fn save_checkpoint(
    client: &kube::Client,
    dpa: &DatadogPodAutoscaler,
    cp: &lazyscale_vertical::WorkloadCheckpoint,
) -> bool {
    let (Some(ns), Some(name), Some(uid)) = (&dpa.metadata.namespace, &dpa.metadata.name, &dpa.metadata.uid)
    else {
        return false;
    };
    let Ok(data) = cp.to_json() else { return false };
    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": checkpoint_name(name), "namespace": ns,
            "labels": {consts::labels::APP_MANAGED_BY: consts::labels::MANAGED_BY_LAZYSCALE},
            "ownerReferences": [{"apiVersion": consts::API_VERSION, "kind": consts::DPA_KIND,
                "name": name, "uid": uid, "controller": true}]},
        "data": {CHECKPOINT_KEY: data}});
    let api = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), ns);
    match api
        .patch(
            &checkpoint_name(name),
            &PatchParams::apply(consts::field_managers::AGENT).force(),
            &Patch::Apply(&cm),
        )
        .await
    {
        Ok(_) => {
            tracing::debug!(namespace = %ns, dpa = %name, "vertical checkpoint written");
            true
        }
        Err(error) => {
            tracing::warn!(%error, namespace = %ns, dpa = %name, "vertical checkpoint not written");
            false
        }
    }
}

/// The first retry of a checkpoint read that failed; each failure doubles it.
const RESTORE_RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two checkpoint reads.
const RESTORE_RETRY_MAX: Duration = Duration::from_secs(300);

/// How a checkpoint read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restored {
    /// Read: restored, absent or unusable; nothing more to read.
    Settled,
    /// The read failed (the API server did not answer, or refused): read it again later.
    Failed,
}

/// Which DPAs' checkpoints are read, and when a failed read is due again (exponential backoff from
/// [`RESTORE_RETRY_FIRST`] to [`RESTORE_RETRY_MAX`]). Until its checkpoint is read the loop does not
/// treat the DPA as having none.
#[derive(Debug, Default)]
struct Restores {
    settled: std::collections::HashSet<WorkloadKey>,
    /// Failed reads: when the next is due, and the wait after it fails again.
    retry: HashMap<WorkloadKey, (Instant, Duration)>,
}

impl Restores {
    /// Whether the checkpoint of `key` is to be read at `now`.
    fn due(&self, key: &WorkloadKey, now: Instant) -> bool {
        !self.settled.contains(key) && self.retry.get(key).is_none_or(|(at, _)| now >= *at)
    }

    fn is_settled(&self, key: &WorkloadKey) -> bool {
        self.settled.contains(key)
    }

    fn settled(&mut self, key: &WorkloadKey) {
        self.retry.remove(key);
        self.settled.insert(key.clone());
    }

    fn failed(&mut self, key: &WorkloadKey, now: Instant) {
        let wait = self.retry.get(key).map_or(RESTORE_RETRY_FIRST, |(_, w)| *w);
        self.retry
            .insert(key.clone(), (now + wait, (wait * 2).min(RESTORE_RETRY_MAX)));
    }

    /// The DPA is gone: its checkpoint is read again if it comes back.
    fn forget(&mut self, key: &WorkloadKey) {
        self.settled.remove(key);
        self.retry.remove(key);
    }
}

async fn restore(
    client: &kube::Client,
    recommender: &mut Recommender,
    dpa: &DatadogPodAutoscaler,
    key: &WorkloadKey,
) -> Restored {
    let (Some(ns), Some(name)) = (&dpa.metadata.namespace, &dpa.metadata.name) else {
        return Restored::Settled;
    };
    let api = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), ns);
    let cm = match api.get_opt(&checkpoint_name(name)).await {
        Ok(Some(cm)) => cm,
        Ok(None) => return Restored::Settled,
        Err(error) => {
            tracing::warn!(%error, namespace = %ns, dpa = %name, "vertical checkpoint not readable; retrying with backoff");
            return Restored::Failed;
        }
    };
    let Some(text) = cm.data.as_ref().and_then(|d| d.get(CHECKPOINT_KEY)) else {
        return Restored::Settled;
    };
    match lazyscale_vertical::WorkloadCheckpoint::from_json(text).map(|cp| recommender.restore(key, &cp)) {
        Ok(Ok(())) => {
            tracing::info!(namespace = %ns, dpa = %name, "vertical history restored from its checkpoint")
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, namespace = %ns, dpa = %name, "checkpoint not usable; starting afresh")
        }
        Err(error) => {
            tracing::warn!(%error, namespace = %ns, dpa = %name, "checkpoint unreadable; starting afresh")
        }
    }
    Restored::Settled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> WorkloadKey {
        WorkloadKey::new("ns", "Deployment", "web")
    }

    #[test]
    fn the_vertical_state_bytes_grow_with_every_dpa() {
        let state = |n: usize| {
            let written: HashMap<(String, String), u64> = (0..n)
                .map(|i| {
                    let v = json!({"target": {"source": "Local", "version": "v1"}, "conditions": []});
                    (("ns".to_owned(), format!("dpa-{i:05}")), fingerprint(&v))
                })
                .collect();
            let decisions: BTreeMap<String, String> = (0..n)
                .map(|i| {
                    (
                        format!("ns/dpa-{i:05}"),
                        "held: the rollout budget is spent".to_owned(),
                    )
                })
                .collect();
            state_bytes(&written, &decisions)
        };
        assert_eq!(state(0), 0);
        let per = (state(2_000) - state(1_000)) as f64 / 1_000.0;
        // a table slot, the keys, a fingerprint and a decision: no JSON kept
        assert!((120.0..=800.0).contains(&per), "{per} bytes per DPA");
    }

    #[test]
    fn fingerprints_follow_the_value() {
        let a = json!({"target": {"source": "Local", "version": "v1"}, "conditions": [{"type": "A"}]});
        let b = json!({"conditions": [{"type": "A"}], "target": {"version": "v1", "source": "Local"}});
        assert_eq!(
            fingerprint(&a),
            fingerprint(&b),
            "the same value built in another order"
        );
        let c = json!({"target": {"source": "Local", "version": "v2"}, "conditions": [{"type": "A"}]});
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }

    #[test]
    fn a_failed_checkpoint_read_is_retried_with_backoff() {
        let mut r = Restores::default();
        let t0 = Instant::now();
        assert!(r.due(&key(), t0), "a new DPA's checkpoint is read");
        r.failed(&key(), t0);
        assert!(!r.is_settled(&key()), "a failed read is not \"no checkpoint\"");
        assert!(!r.due(&key(), t0));
        assert!(r.due(&key(), t0 + Duration::from_secs(1)));
        r.failed(&key(), t0 + Duration::from_secs(1));
        assert!(!r.due(&key(), t0 + Duration::from_millis(2_900)));
        assert!(
            r.due(&key(), t0 + Duration::from_secs(3)),
            "the wait doubled to 2 s"
        );
        let mut at = t0;
        for _ in 0..20 {
            r.failed(&key(), at);
            at += Duration::from_secs(1);
        }
        assert!(!r.due(&key(), at + RESTORE_RETRY_MAX - Duration::from_secs(2)));
        assert!(r.due(&key(), at + RESTORE_RETRY_MAX), "the wait is bounded");
        r.settled(&key());
        assert!(r.is_settled(&key()));
        assert!(
            !r.due(&key(), at + Duration::from_secs(3600)),
            "read once settled"
        );
        r.forget(&key());
        assert!(r.due(&key(), at), "a DPA back again is read again");
    }

    #[tokio::test]
    async fn restore_reports_a_read_that_fails_as_failed() {
        // An API server that is not there: the GET fails (connection refused), which is no answer
        // about the checkpoint.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut config = kube::Config::new(
            format!("http://127.0.0.1:{port}")
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
        );
        config.connect_timeout = Some(Duration::from_secs(2));
        let client = kube::Client::try_from(config).unwrap_or_else(|e| panic!("{e}"));
        let mut recommender =
            Recommender::new(lazyscale_vertical::Config::default()).unwrap_or_else(|e| panic!("{e}"));
        let dpa: DatadogPodAutoscaler = serde_json::from_value(json!({
            "apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler",
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "owner": "Local"}}))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            restore(&client, &mut recommender, &dpa, &key()).await,
            Restored::Failed
        );
    }
}
