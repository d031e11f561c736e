//! The vertical apply path's Kubernetes actions: it brings running pods to a DPA's vertical
//! recommendation, by a rollout of the workload or by in-place resizes with eviction as a fallback. The
//! decisions are `lazyscale_vertical`'s pure planners ([`lazyscale_vertical::apply`],
//! [`lazyscale_vertical::rollout`], [`lazyscale_vertical::resize`]); this module reads the pod cache and
//! the workload, and writes:
//!
//! - rollouts: a merge patch of the pod template's `autoscaling.datadoghq.com/rolloutAt` and `rec-id`
//!   annotations (Deployments, StatefulSets, Argo Rollouts); events `SuccessfulTriggerRollout` /
//!   `FailedTriggerRollout`;
//! - in place: a strategic-merge patch of `pods/resize`, then a merge patch of the pod's `rec-id`
//!   annotation; evictions through the Eviction API (stopping at the first refusal, a PDB's 429 included);
//!   events `ResizeSuccessful`, `InPlaceEvicted`, `FailedToEvict`. A pod counts as at the recommendation
//!   in place when its rec-id matches or its spec already has the plan's resources (applying a plan is
//!   idempotent), so a failed annotation patch costs no eviction; a resize the API server rejects as
//!   invalid for the pod (not 403) marks the pod for eviction: its replacement gets the values at
//!   admission.
//!
//! The in-place path is used when the agent setting allows it (default: wherever the API server serves
//! `pods/resize`, discovered once per 15 minutes), the DPA's strategy is `Auto`, and the change can be made
//! in place (no limit removed, no `GOMEMLIMIT`, every container known). It falls back to a rollout when a
//! resize is refused by RBAC (403 naming the verb), or `rolloutFallbackDelay` after its first resize. A
//! resize the API server refuses as over the node's capacity (403 otherwise) or that the kubelet marks
//! `Infeasible` is remembered: the DPA gets `VerticalAbleToApply=False` (`RecommendationInfeasible`), one
//! warning event per rec-id, and the values are not tried again until the recommendation drops below
//! them.
//!
//! RBAC the agent needs for this path: `patch` on `deployments` and `statefulsets` (`apps`) and `rollouts`
//! (`argoproj.io`), `get` on the same; `patch` on `pods` and `pods/resize`; `create` on `pods/eviction`;
//! `create`/`patch` on `events` (`events.k8s.io`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, EvictParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use lazyscale_api::consts::{self, annotations, conditions, events, vertical_actions};
use lazyscale_api::{DatadogPodAutoscaler, VerticalAction};
use lazyscale_controller::events::{Event, EventType, Recorder};
use lazyscale_podcache::slim::{ResizePending, SlimPod, WorkloadKey as PodWorkload, WorkloadKind};
use lazyscale_podcache::store::PodStore;
use lazyscale_vertical::apply::{self, CurrentResources, Hold, NeedsRollout, Strategy};
use lazyscale_vertical::resize::{self, InPlaceSettings, Infeasible, PodInPlace, RateLimit, ResizeState};
use lazyscale_vertical::rollout::{self, PodRevision, RolloutDecision, RolloutInputs};
use lazyscale_vertical::{Autoscaler, ConditionInput, Resource, Resources, VerticalPatch};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::telemetry::{Metrics, VerticalOp};

/// Agent settings of the apply path (`autoscaling.vertical.apply` in the file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApplySettings {
    /// In-place resizes: `None` (default) = wherever `pods/resize` is served; `false` = never (rollouts
    /// only); `true` = wherever served too (it cannot be forced where the API server lacks it).
    pub in_place: Option<bool>,
    /// Percent of a workload's pods that may be disrupted (evicted or not ready) at once.
    pub disruption_budget_percent: u32,
    /// Evictions per minute, agent-wide (token bucket refill).
    pub evictions_per_minute: u32,
    /// Evictions at once, agent-wide (token bucket size).
    pub eviction_burst: u32,
}

impl Default for ApplySettings {
    fn default() -> Self {
        Self {
            in_place: None,
            disruption_budget_percent: resize::DISRUPTION_PERCENT,
            evictions_per_minute: 10,
            eviction_burst: 5,
        }
    }
}

/// How long one event or eviction call may take before the round moves on.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the `pods/resize` discovery is trusted.
const DISCOVERY_TTL: Duration = Duration::from_secs(900);

/// What one round did for one DPA: the status fields the vertical writer applies.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyStatus {
    /// `status.vertical.lastAction`.
    pub last_action: Option<VerticalAction>,
    /// Pods at the rec-id (`status.vertical.target.scaled`).
    pub scaled: Option<i32>,
    /// Pods evicted for this rec-id (`status.vertical.target.evicted`).
    pub evicted: Option<i32>,
    /// The version these counts are for.
    pub version: Option<String>,
    /// `VerticalAbleToApply`.
    pub condition: ConditionInput,
    /// One line for `explain`.
    pub decision: String,
}

#[derive(Debug, Default)]
struct DpaState {
    rec_id: String,
    started: Option<Instant>,
    fell_back: bool,
    infeasible: Infeasible,
    warned_infeasible: Option<String>,
    patch_failed: HashSet<u128>,
    deferred_since: HashMap<u128, Instant>,
    evicted: u32,
    completed: bool,
    last_action: Option<VerticalAction>,
}

/// The apply path's state across rounds (per DPA, forgotten with it).
pub struct Applier {
    client: kube::Client,
    settings: ApplySettings,
    recorder: Arc<Recorder>,
    metrics: Arc<Metrics>,
    resize_served: Option<(bool, Instant)>,
    limiter: RateLimit,
    origin: Instant,
    state: HashMap<(String, String), DpaState>,
}

fn condition(ok: bool, reason: &'static str, message: impl Into<String>) -> ConditionInput {
    ConditionInput {
        type_: conditions::VERTICAL_ABLE_TO_APPLY,
        status: if ok {
            conditions::STATUS_TRUE
        } else {
            conditions::STATUS_FALSE
        },
        reason: Some(reason),
        message: Some(message.into()),
    }
}

fn workload_resource(kind: &str) -> Option<ApiResource> {
    let wk = WorkloadKind::from_kind(kind);
    let plural = match wk {
        WorkloadKind::Deployment => "deployments",
        WorkloadKind::StatefulSet => "statefulsets",
        WorkloadKind::Rollout => "rollouts",
        _ => return None,
    };
    let (group, version) = wk.api_version()?.split_once('/')?;
    Some(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, plural),
        plural,
    ))
}

/// The resources of the pod's containers and native sidecars (which the webhook patches and
/// `pods/resize` resizes alike).
fn current_of(pod: &SlimPod) -> Vec<(String, CurrentResources)> {
    pod.containers()
        .iter()
        .chain(pod.sidecars())
        .map(|c| {
            let r = &c.resources;
            (
                c.name.to_string(),
                CurrentResources {
                    requests: Resources {
                        cpu_millicores: r.requests.cpu_millis,
                        memory_bytes: r.requests.memory_bytes,
                    },
                    limits: Resources {
                        cpu_millicores: r.limits.cpu_millis,
                        memory_bytes: r.limits.memory_bytes,
                    },
                },
            )
        })
        .collect()
}

fn protected(pod: &SlimPod) -> bool {
    pod.annotation(annotations::SAFE_TO_EVICT)
        .is_some_and(|v| v.eq_ignore_ascii_case("false"))
        || pod
            .annotation(annotations::DO_NOT_DISRUPT)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Whether the kubelet reports the spec's resources for every container and native sidecar (unknown
/// counts as applied).
fn applied(pod: &SlimPod) -> bool {
    pod.containers()
        .iter()
        .chain(pod.sidecars())
        .all(|c| c.status_resources.is_none_or(|s| s == c.resources))
}

/// Whether the pod's spec already has the plan's resources (a resize would change nothing). Applying a
/// plan is idempotent, so this holds for a pod resized in place and for a pod the webhook patched.
fn at_plan(pod: &SlimPod, plan: &lazyscale_vertical::VerticalPlan) -> bool {
    apply::resize_targets(plan, &current_of(pod)).is_ok_and(|t| t.is_empty())
}

/// Memory usage by (pod, container) from a namespace's PodMetrics.
pub type Usage<'a> = HashMap<&'a str, &'a DynamicObject>;

fn memory_usage(usage: &Usage<'_>, pod: &str, container: &str) -> Option<u64> {
    let m = usage.get(pod)?;
    m.data
        .get("containers")?
        .as_array()?
        .iter()
        .find(|c| c.get("name").and_then(|n| n.as_str()) == Some(container))?
        .get("usage")?
        .get("memory")?
        .as_str()
        .and_then(|q| lazyscale_vertical::quantity::parse_units(q).ok())
}

fn is_rbac_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && s.message.contains("cannot "))
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

struct Pods {
    list: Vec<SlimPod>,
}

impl Applier {
    /// An applier writing with `client`.
    pub fn new(client: kube::Client, settings: ApplySettings, metrics: Arc<Metrics>) -> Self {
        let recorder = Arc::new(Recorder::new(
            client.clone(),
            lazyscale_controller::events::Reporter {
                controller: events::REPORTER.into(),
                instance: Some(crate::horizontal::identity()),
            },
        ));
        let origin = Instant::now();
        Self {
            limiter: RateLimit::new(
                settings.evictions_per_minute,
                settings.eviction_burst,
                Duration::ZERO,
            ),
            client,
            settings,
            recorder,
            metrics,
            resize_served: None,
            origin,
            state: HashMap::new(),
        }
    }

    /// Forgets DPAs not in `live` (namespace, name).
    pub fn retain(&mut self, live: &HashSet<(String, String)>) {
        self.state.retain(|k, _| live.contains(k));
    }

    async fn in_place_available(&mut self) -> bool {
        if self.settings.in_place == Some(false) {
            return false;
        }
        if let Some((served, at)) = self.resize_served
            && at.elapsed() < DISCOVERY_TTL
        {
            return served;
        }
        let served = match self.client.list_core_api_resources("v1").await {
            Ok(list) => list.resources.iter().any(|r| r.name == "pods/resize"),
            Err(error) => {
                tracing::debug!(%error, "core API discovery failed; assuming no pods/resize");
                false
            }
        };
        tracing::info!(served, "pods/resize discovery");
        self.resize_served = Some((served, Instant::now()));
        served
    }

    async fn event(&self, dpa: &DatadogPodAutoscaler, warning: bool, reason: &str, note: String) {
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(consts::API_VERSION.into()),
            kind: Some(consts::DPA_KIND.into()),
            name: dpa.metadata.name.clone(),
            namespace: dpa.metadata.namespace.clone(),
            uid: dpa.metadata.uid.clone(),
            ..Default::default()
        };
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: "ApplyVerticalRecommendation".into(),
            secondary: None,
        };
        match tokio::time::timeout(CALL_TIMEOUT, self.recorder.publish(&ev, &reference)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, reason, "event not written"),
            Err(_) => tracing::warn!(reason, "event not written in time"),
        }
    }

    /// One round for one DPA (the leader only): decides and acts, and returns the status to write.
    pub async fn step(
        &mut self,
        dpa: &DatadogPodAutoscaler,
        pods: &PodStore,
        usage: &Usage<'_>,
    ) -> ApplyStatus {
        let (Some(ns), Some(name)) = (dpa.metadata.namespace.clone(), dpa.metadata.name.clone()) else {
            return self.status(
                None,
                None,
                condition(false, conditions::reasons::INVALID_SPEC, "no name"),
                "".into(),
            );
        };
        let key = (ns.clone(), name.clone());
        let mode = apply::mode(dpa);
        if let Strategy::Hold(hold) = mode.strategy {
            let reason = match hold {
                Hold::Preview | Hold::Paused | Hold::Disabled | Hold::NotOptedIn => {
                    conditions::reasons::POLICY_RESTRICTED
                }
            };
            let last = self.state.get(&key).and_then(|s| s.last_action.clone());
            return ApplyStatus {
                last_action: last,
                scaled: None,
                evicted: None,
                version: None,
                condition: condition(false, reason, hold.message()),
                decision: format!("hold: {}", hold.message()),
            };
        }
        let kind = dpa.spec.target_ref.kind.clone();
        let Some(resource) = workload_resource(&kind) else {
            let msg = format!(
                "{kind} targets are not rolled out or resized (Deployment, StatefulSet, Rollout are)"
            );
            return self.status(
                Some(&key),
                None,
                condition(false, conditions::reasons::UNSUPPORTED_TARGET_KIND, msg.clone()),
                msg,
            );
        };
        let autoscaler = Autoscaler::from_dpa(dpa, false);
        let Some(patch) = autoscaler.vertical.clone() else {
            let msg = autoscaler
                .error
                .unwrap_or_else(|| "no vertical recommendation yet".into());
            return self.status(
                Some(&key),
                None,
                condition(false, conditions::reasons::RECOMMENDATION_ERROR, msg.clone()),
                msg,
            );
        };
        let state = self.state.entry(key.clone()).or_default();
        if state.rec_id != patch.rec_id {
            let last = state.last_action.take();
            let infeasible = std::mem::take(&mut state.infeasible);
            *state = DpaState {
                rec_id: patch.rec_id.clone(),
                infeasible,
                last_action: last,
                ..DpaState::default()
            };
        }
        let workload = PodWorkload::new(&ns, WorkloadKind::from_kind(&kind), &dpa.spec.target_ref.name);
        let mut list = Vec::new();
        pods.for_each_pod_of(&workload, |p| list.push(p.clone()));
        let pods = Pods { list };
        let needs_rollout: Option<NeedsRollout> = pods
            .list
            .iter()
            .filter(|p| {
                !p.is_terminating() && p.annotation(annotations::REC_ID) != Some(patch.rec_id.as_str())
            })
            .find_map(|p| apply::resize_targets(&patch.plan, &current_of(p)).err());
        let in_place = mode.strategy == Strategy::Auto && needs_rollout.is_none() && !state.fell_back;
        let in_place = in_place && self.in_place_available().await;
        if in_place {
            self.in_place(dpa, &key, &patch, &pods, usage).await
        } else {
            let why = match (&needs_rollout, mode.strategy) {
                (_, Strategy::Rollout) => "strategy TriggerRollout".to_string(),
                (Some(n), _) => n.to_string(),
                _ if self.state.get(&key).is_some_and(|s| s.fell_back) => {
                    "in-place fell back to a rollout".into()
                }
                _ => "in-place resize not available".into(),
            };
            self.rollout(dpa, &key, &resource, &patch, &pods, &why).await
        }
    }

    fn status(
        &self,
        key: Option<&(String, String)>,
        scaled: Option<i32>,
        condition: ConditionInput,
        decision: String,
    ) -> ApplyStatus {
        let state = key.and_then(|k| self.state.get(k));
        ApplyStatus {
            last_action: state.and_then(|s| s.last_action.clone()),
            scaled,
            evicted: state.map(|s| i32::try_from(s.evicted).unwrap_or(i32::MAX)),
            version: state.map(|s| s.rec_id.clone()).filter(|v| !v.is_empty()),
            condition,
            decision,
        }
    }

    fn act(&mut self, key: &(String, String), type_: &str) {
        if let Some(s) = self.state.get_mut(key) {
            s.last_action = Some(VerticalAction {
                time: Time(Timestamp::now()),
                version: s.rec_id.clone(),
                type_: lazyscale_api::Word::new(type_),
            });
            s.started.get_or_insert_with(Instant::now);
        }
    }

    async fn rollout(
        &mut self,
        dpa: &DatadogPodAutoscaler,
        key: &(String, String),
        resource: &ApiResource,
        patch: &VerticalPatch,
        pods: &Pods,
        why: &str,
    ) -> ApplyStatus {
        // a pod whose in-place resize is pending, in progress or not applied does not run its rec-id yet
        // (after a fall back from in place, the rollout replaces it)
        let runs =
            |p: &SlimPod| applied(p) && p.resize_pending().is_none() && p.resize_in_progress().is_none();
        let revisions: Vec<PodRevision<'_>> = pods
            .list
            .iter()
            .map(|p| PodRevision {
                rec_id: p.annotation(annotations::REC_ID).filter(|_| runs(p)),
                revision: p.template_hash(),
                terminating: p.is_terminating(),
            })
            .collect();
        let (scaled, live, _) = rollout::progress(&patch.rec_id, &revisions);
        let scaled_i = Some(i32::try_from(scaled).unwrap_or(i32::MAX));
        if scaled == live {
            return self.done(key, scaled_i, vertical_actions::ROLLOUT_TRIGGERED);
        }
        let api = Api::<DynamicObject>::namespaced_with(self.client.clone(), &key.0, resource);
        let target = &dpa.spec.target_ref.name;
        let workload = match api.get(target).await {
            Ok(w) => w,
            Err(error) => {
                let msg = format!("reading {} {target}: {error}", dpa.spec.target_ref.kind);
                return self.status(
                    Some(key),
                    scaled_i,
                    condition(false, conditions::reasons::ROLLOUT_FAILED, msg.clone()),
                    msg,
                );
            }
        };
        let template_notes = workload.data.pointer("/spec/template/metadata/annotations");
        let template_rec_id = template_notes
            .and_then(|a| a.get(annotations::REC_ID))
            .and_then(|v| v.as_str());
        let triggered_ago = template_notes
            .and_then(|a| a.get(annotations::ROLLOUT_AT))
            .and_then(|v| v.as_str())
            .and_then(|t| t.parse::<Timestamp>().ok())
            .map(|t| Duration::try_from(Timestamp::now().duration_since(t)).unwrap_or_default());
        let raises = pods.list.iter().any(|p| {
            current_of(p).iter().any(|(name, cur)| {
                patch
                    .plan
                    .container(name)
                    .is_some_and(|c| apply::raises_or_removes_limit(c, cur))
            })
        });
        let last_action_ago = self
            .state
            .get(key)
            .and_then(|s| s.last_action.as_ref())
            .map(|a| Duration::try_from(Timestamp::now().duration_since(a.time.0)).unwrap_or_default());
        let decision = rollout::decide(&RolloutInputs {
            rec_id: &patch.rec_id,
            template_rec_id,
            triggered_ago,
            pods: &revisions,
            raises_or_removes_limit: raises,
            last_action_ago,
        });
        match decision {
            RolloutDecision::Done { scaled } => self.done(
                key,
                Some(i32::try_from(scaled).unwrap_or(i32::MAX)),
                vertical_actions::ROLLOUT_TRIGGERED,
            ),
            RolloutDecision::Wait { why: w, scaled } => {
                let msg = match w {
                    rollout::Wait::Ours => {
                        format!("rollout of {} under way: {scaled}/{live} pods", patch.rec_id)
                    }
                    rollout::Wait::InProgress => {
                        "waiting for another rollout of the workload to finish".into()
                    }
                };
                self.status(
                    Some(key),
                    scaled_i,
                    condition(true, conditions::reasons::APPLYING, msg.clone()),
                    msg,
                )
            }
            RolloutDecision::Trigger | RolloutDecision::Retrigger => {
                let body = json!({"spec": {"template": {"metadata": {"annotations": {
                    annotations::ROLLOUT_AT: Timestamp::now().to_string(),
                    annotations::REC_ID: patch.rec_id,
                }}}}});
                let again = decision == RolloutDecision::Retrigger;
                match api
                    .patch(
                        target,
                        &PatchParams::apply(consts::field_managers::VERTICAL),
                        &Patch::Merge(&body),
                    )
                    .await
                {
                    Ok(_) => {
                        self.metrics.vertical(VerticalOp::RolloutTriggered);
                        let note = format!(
                            "{} {} of {} {target} to apply recommendation {} ({why})",
                            if again {
                                "re-triggered the stalled rollout"
                            } else {
                                "triggered a rollout"
                            },
                            "",
                            dpa.spec.target_ref.kind,
                            patch.rec_id
                        )
                        .replace("  ", " ");
                        tracing::info!(namespace = %key.0, dpa = %key.1, rec_id = %patch.rec_id, again, "rollout triggered");
                        self.event(dpa, false, events::SUCCESSFUL_TRIGGER_ROLLOUT, note.clone())
                            .await;
                        self.act(key, vertical_actions::ROLLOUT_TRIGGERED);
                        self.status(
                            Some(key),
                            scaled_i,
                            condition(true, conditions::reasons::APPLYING, note.clone()),
                            note,
                        )
                    }
                    Err(error) => {
                        self.metrics.vertical(VerticalOp::ApplyError);
                        let note =
                            format!("rollout of {} {target} failed: {error}", dpa.spec.target_ref.kind);
                        tracing::warn!(namespace = %key.0, dpa = %key.1, %error, "rollout not triggered");
                        self.event(dpa, true, events::FAILED_TRIGGER_ROLLOUT, note.clone())
                            .await;
                        self.status(
                            Some(key),
                            scaled_i,
                            condition(false, conditions::reasons::ROLLOUT_FAILED, note.clone()),
                            note,
                        )
                    }
                }
            }
        }
    }

    fn done(&mut self, key: &(String, String), scaled: Option<i32>, how: &str) -> ApplyStatus {
        let first = self
            .state
            .get(key)
            .is_some_and(|s| !s.completed && s.started.is_some());
        if let Some(s) = self.state.get_mut(key) {
            s.completed = true;
        }
        if first && how == vertical_actions::RESIZE_TRIGGERED {
            self.act(key, vertical_actions::RESIZE_COMPLETED);
        }
        let msg = "every pod runs the recommendation".to_string();
        self.status(
            Some(key),
            scaled,
            condition(true, conditions::reasons::APPLIED, msg.clone()),
            msg,
        )
    }

    async fn in_place(
        &mut self,
        dpa: &DatadogPodAutoscaler,
        key: &(String, String),
        patch: &VerticalPatch,
        pods: &Pods,
        usage: &Usage<'_>,
    ) -> ApplyStatus {
        let now = Instant::now();
        let policy = dpa.spec.apply_policy.update.as_ref();
        let secs = |v: Option<i32>, d: Duration| {
            v.and_then(|s| u64::try_from(s).ok())
                .map_or(d, Duration::from_secs)
        };
        let settings = InPlaceSettings {
            resize_pending_period: secs(
                policy.and_then(|p| p.resize_pending_period),
                resize::RESIZE_PENDING_PERIOD,
            ),
            rollout_fallback_delay: secs(
                policy.and_then(|p| p.rollout_fallback_delay),
                resize::ROLLOUT_FALLBACK_DELAY,
            ),
            disruption_percent: self.settings.disruption_budget_percent,
        };
        let Some(state) = self.state.get_mut(key) else {
            return self.status(
                None,
                None,
                condition(false, conditions::reasons::RECOMMENDATION_ERROR, "no state"),
                String::new(),
            );
        };
        let blocked = state.infeasible.check(&patch.plan);
        let live_uids: HashSet<u128> = pods.list.iter().map(SlimPod::uid).collect();
        state.deferred_since.retain(|u, _| live_uids.contains(u));
        state.patch_failed.retain(|u| live_uids.contains(u));
        let mut views = Vec::with_capacity(pods.list.len());
        for p in &pods.list {
            let rs = match (p.resize_in_progress(), p.resize_pending()) {
                (Some(true), _) => ResizeState::Error,
                (_, Some(ResizePending::Deferred)) => {
                    let since = *state.deferred_since.entry(p.uid()).or_insert(now);
                    ResizeState::Deferred(now.duration_since(since))
                }
                (_, Some(ResizePending::Infeasible | ResizePending::Other)) => ResizeState::Infeasible,
                (Some(false), None) => ResizeState::InProgress,
                (None, None) => ResizeState::Idle,
            };
            if !matches!(rs, ResizeState::Deferred(_)) {
                state.deferred_since.remove(&p.uid());
            }
            let name = p.name();
            let below_usage = patch.plan.containers.iter().any(|c| {
                let cur = current_of(p);
                let Some((_, have)) = cur.iter().find(|(n, _)| *n == c.name) else {
                    return false;
                };
                let new = apply::container_resources(c, have);
                match (
                    new.limits.get(Resource::Memory),
                    memory_usage(usage, &name, &c.name),
                ) {
                    // only a shrink waits: a raise (the OOM ratchet) helps even while still below usage
                    (Some(limit), Some(used)) => {
                        limit < used && have.limits.get(Resource::Memory).is_none_or(|old| limit < old)
                    }
                    _ => false,
                }
            });
            views.push(PodInPlace {
                rec_id_matches: at_plan(p, &patch.plan)
                    || p.annotation(annotations::REC_ID) == Some(patch.rec_id.as_str()),
                applied: applied(p),
                state: rs,
                terminating: p.is_terminating(),
                ready: p.is_ready(),
                protected: protected(p),
                patch_failed: state.patch_failed.contains(&p.uid()),
                below_usage,
            });
        }
        let started_ago = state.started.map(|s| now.duration_since(s));
        let tokens = self.limiter.available(self.origin.elapsed());
        let mut plan = resize::plan(&views, &settings, started_ago, tokens);
        if blocked {
            // an attempt at or above these values was refused: no resize until the recommendation drops
            // below it (pods the kubelet already marked are still evicted)
            plan.resize.clear();
        }
        let mut resized = 0usize;
        let mut refused: Option<String> = None;
        let pod_api = Api::<Pod>::namespaced(self.client.clone(), &key.0);
        for &i in &plan.resize {
            let p = &pods.list[i];
            let name = p.name().into_owned();
            let targets = match apply::resize_targets(&patch.plan, &current_of(p)) {
                Ok(t) => t,
                Err(_) => continue,
            };
            if !targets.is_empty() {
                let body = apply::resize_body(&targets, |n| p.sidecars().iter().any(|c| c.name == n));
                if let Err(error) = pod_api
                    .patch_subresource("resize", &name, &PatchParams::default(), &Patch::Strategic(&body))
                    .await
                {
                    self.metrics.vertical(VerticalOp::ApplyError);
                    tracing::warn!(pod = %name, %error, "in-place resize refused");
                    if is_rbac_forbidden(&error) {
                        if let Some(s) = self.state.get_mut(key) {
                            s.fell_back = true;
                        }
                        refused = Some(format!("resize forbidden ({error}); falling back to a rollout"));
                    } else if code(&error) == Some(403) {
                        if let Some(s) = self.state.get_mut(key) {
                            s.infeasible.record(&patch.plan);
                        }
                        refused = Some(format!(
                            "the API server refused the resize of pod {name}: {error}"
                        ));
                    } else {
                        // invalid for this pod (a QoS class change, say): the pod is evicted next round and
                        // its replacement gets the values at admission
                        if let Some(s) = self.state.get_mut(key) {
                            s.patch_failed.insert(p.uid());
                        }
                        continue;
                    }
                    break;
                }
                self.metrics.vertical(VerticalOp::Resize);
            }
            let note = json!({"metadata": {"annotations": {annotations::REC_ID: patch.rec_id}}});
            resized += 1;
            // the pod's resources already say it is at the recommendation; the annotation tells others
            if let Err(error) = pod_api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&note))
                .await
            {
                tracing::warn!(pod = %name, %error, "rec-id not patched after the resize");
            }
        }
        if resized > 0 {
            self.act(key, vertical_actions::RESIZE_TRIGGERED);
            self.event(
                dpa,
                false,
                events::RESIZE_SUCCESSFUL,
                format!(
                    "resized {resized} pod(s) in place to recommendation {}",
                    patch.rec_id
                ),
            )
            .await;
        }
        let infeasible = blocked
            || self
                .state
                .get(key)
                .is_some_and(|s| !s.infeasible.is_empty() && !s.fell_back);
        let refused = match refused {
            None if blocked => Some(format!(
                "recommendation {} was refused as infeasible for the pods' nodes; not retried in place until the recommendation drops below it",
                patch.rec_id
            )),
            other => other,
        };
        if let Some(msg) = &refused
            && infeasible
        {
            let warn = self.state.get_mut(key).is_some_and(|s| {
                s.warned_infeasible.replace(patch.rec_id.clone()).as_deref() != Some(patch.rec_id.as_str())
            });
            if warn {
                self.event(dpa, true, events::FAILED_RESIZE, msg.clone()).await;
            }
        }
        let mut evicted = 0usize;
        for &i in &plan.evict {
            let p = &pods.list[i];
            let name = p.name().into_owned();
            if !self.limiter.take(self.origin.elapsed()) {
                break;
            }
            let answer =
                tokio::time::timeout(CALL_TIMEOUT, pod_api.evict(&name, &EvictParams::default())).await;
            let Ok(answer) = answer else {
                // the client retries a PDB's 429 by itself: no answer in time is a refusal
                self.metrics.vertical(VerticalOp::ApplyError);
                tracing::info!(pod = %name, "eviction refused (no answer in time, a PodDisruptionBudget blocks it); stopping evictions for this round");
                self.event(
                    dpa,
                    true,
                    events::FAILED_TO_EVICT,
                    format!(
                        "pod {name} not evicted: refused (a PodDisruptionBudget allows no disruption now)"
                    ),
                )
                .await;
                break;
            };
            match answer {
                Ok(_) => {
                    evicted += 1;
                    tracing::info!(pod = %name, "evicted: its resize could not be done in place");
                    self.metrics.vertical(VerticalOp::Eviction);
                    self.event(
                        dpa,
                        false,
                        events::IN_PLACE_EVICTED,
                        format!("evicted pod {name}: its resize could not be done in place"),
                    )
                    .await;
                }
                Err(error) => {
                    self.metrics.vertical(VerticalOp::ApplyError);
                    tracing::info!(pod = %name, %error, "eviction refused; stopping evictions for this round");
                    self.event(
                        dpa,
                        true,
                        events::FAILED_TO_EVICT,
                        format!("pod {name} not evicted: {error}"),
                    )
                    .await;
                    break;
                }
            }
        }
        if let Some(s) = self.state.get_mut(key) {
            s.evicted += u32::try_from(evicted).unwrap_or(u32::MAX);
            if plan.fallback {
                s.fell_back = true;
            }
        }
        let scaled = Some(i32::try_from(plan.scaled).unwrap_or(i32::MAX));
        if let Some(msg) = refused {
            let c = if infeasible {
                condition(false, conditions::reasons::RECOMMENDATION_INFEASIBLE, msg.clone())
            } else {
                condition(true, conditions::reasons::APPLYING, msg.clone())
            };
            return self.status(Some(key), scaled, c, msg);
        }
        if plan.done() {
            return self.done(key, scaled, vertical_actions::RESIZE_TRIGGERED);
        }
        let msg = format!(
            "in place: {}/{} pods at {}; {resized} resized, {evicted} evicted this round{}{}",
            plan.scaled,
            plan.live,
            patch.rec_id,
            if plan.protected > 0 {
                format!(", {} protected from eviction", plan.protected)
            } else {
                String::new()
            },
            if plan.below_usage > 0 {
                format!(", {} waiting (limit below usage)", plan.below_usage)
            } else {
                String::new()
            },
        );
        self.status(
            Some(key),
            scaled,
            condition(true, conditions::reasons::APPLYING, msg.clone()),
            msg,
        )
    }
}
