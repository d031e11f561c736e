//! One reconcile of one DPA: limit and validation, target resolution, the scale subresource, pods,
//! the horizontal engine of `lazyscale-core` (recommendation, then policy), the scale write with its
//! event, and the status write when the fields this writer owns changed. Writes happen only while
//! this replica leads, on inputs that agree, and while the decision is fresh ([`inputs`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::events::{Event, EventType};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Resource};
use lazyscale_api::consts::conditions::{self, reasons};
use lazyscale_api::consts::{API_VERSION, DPA_KIND, events, field_managers};
use lazyscale_api::{
    ApplyMode, DatadogPodAutoscaler, DatadogPodAutoscalerCondition, DatadogPodAutoscalerStatus,
    HorizontalRecommendation, HorizontalStatus,
};
use lazyscale_core::horizontal::policy;
use lazyscale_core::horizontal::recommender::{self, Recommendation};
use serde_json::json;

use crate::controller::{Key, Shared};
use crate::explain::Explanation;
use crate::horizontal;
use crate::inputs::{self, Basis, Dropped, Hold};
use crate::pods::PodPhase;
use crate::scale::{self, TargetError};
use crate::status::{self, Cond};
use crate::validate::{self, Invalid, Transition, Undecodable};
use lazyscale_api::time;

/// Errors of a reconcile (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the target's scale subresource failed.
    #[error("cannot read the scale of {target}")]
    GetScale {
        /// The target.
        target: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// Writing the target's scale subresource failed.
    #[error("cannot scale {target}")]
    SetScale {
        /// The target.
        target: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// Writing the status failed.
    #[error("cannot write the status of {0}")]
    Status(String, #[source] kube::Error),
    /// Discovery failed.
    #[error("{0}")]
    Discovery(TargetError),
}

/// What a reconcile asks of the work queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Requeue(pub Option<Duration>);

/// Reconciles the DPA `key`.
pub(crate) async fn reconcile(shared: &Arc<Shared>, key: &Key) -> Result<Requeue, Error> {
    let Some(dpa) = shared.dpa(key) else {
        if let Some(u) = shared.dpas.undecodable(&key.0, &key.1) {
            return report_undecodable(shared, key, &u).await;
        }
        shared.forget(key);
        return Ok(Requeue::default());
    };
    let now = time::now();
    let (ns, name) = (key.0.as_str(), key.1.as_str());
    let t = &dpa.spec.target_ref;
    let api_version = t.api_version.clone().unwrap_or_default();
    let mut ex = Explanation {
        at: now,
        target: format!("{api_version} {} {}", t.kind, t.name),
        mode: dpa.spec.apply_policy.mode.as_str(),
        blocked: None,
        current_replicas: None,
        pods: 0,
        metrics_listed_at: None,
        recommendation: None,
        unusable_objectives: Vec::new(),
        decision: None,
        outcome: String::new(),
    };
    let old = shared.old_status(key, dpa.status.clone().unwrap_or_default());
    let old_conditions = old.conditions.clone().unwrap_or_default();

    // Limit, validation, target.
    let blocked: Option<Invalid> = if !shared.within_limit(&dpa) {
        Some(Invalid {
            reason: reasons::CLUSTER_AUTOSCALER_LIMIT_REACHED,
            message: format!(
                "Autoscaler disabled as maximum number per cluster reached ({})",
                shared.config.limit
            ),
        })
    } else {
        validate::validate(&dpa, shared.config.self_target.as_ref()).err()
    };
    let mut target = None;
    let mut state = None;
    let mut replicas_read_at = now;
    let blocked = match blocked {
        Some(b) => Some(b),
        None => {
            let mut discovered = false;
            let r = shared
                .resolver
                .resolve(&api_version, &t.kind, &mut discovered)
                .await;
            if discovered {
                shared.count_request();
            }
            match r {
                Err(TargetError::InvalidRef(m)) => Some(Invalid {
                    reason: reasons::INVALID_TARGET_REF,
                    message: m,
                }),
                Err(TargetError::Unsupported(m)) => Some(Invalid {
                    reason: reasons::UNSUPPORTED_TARGET_KIND,
                    message: m,
                }),
                Err(e @ TargetError::Discovery(..)) => return Err(Error::Discovery(e)),
                Ok(ar) => {
                    shared.count_request();
                    replicas_read_at = time::now();
                    let s = scale::get(&shared.client, &ar, ns, &t.name)
                        .await
                        .map_err(|source| Error::GetScale {
                            target: ex.target.clone(),
                            source,
                        })?;
                    target = Some(ar);
                    match s {
                        None => Some(Invalid {
                            reason: reasons::TARGET_NOT_FOUND,
                            message: format!("{} {} not found", t.kind, t.name),
                        }),
                        Some(s) => {
                            state = Some(s);
                            None
                        }
                    }
                }
            }
        }
    };
    if let Some(b) = blocked {
        ex.blocked = Some(Box::new((b.reason.to_owned(), b.message.clone())));
        ex.outcome = "nothing (not active)".into();
        shared.explain_store(key, ex);
        block(shared, key, &dpa.metadata, &old, b, now).await?;
        return Ok(Requeue::default());
    }
    let (Some(ar), Some(state)) = (target, state) else {
        return Ok(Requeue::default());
    };

    // Pods and the recommendation, held while the pod view of the namespace is not current. The count
    // of sync losses is read first: a loss after this point drops the decision before its write.
    let sync_losses = shared.pods.sync_losses();
    let pod_hold = inputs::hold_for_pods(shared.pods.pod_sync(ns));
    if pod_hold.as_ref().is_some_and(|h| !h.shows()) {
        shared.counters.held.fetch_add(1, Ordering::Relaxed);
        return Ok(Requeue(Some(inputs::RETRY)));
    }
    let basis = Basis {
        replicas_read_at,
        sync_losses,
    };
    let pods = shared.pods.pods_of(ns, &t.kind, &t.name);
    let current = state.spec_replicas;
    ex.current_replicas = Some(current);
    ex.pods = pods.len();
    let live = |p: &&crate::pods::PodSample| {
        !p.deleting && !matches!(p.phase, PodPhase::Failed | PodPhase::Succeeded)
    };
    let live_pods = pods.iter().filter(live).count();
    let usage = shared.usage_of(ns);
    ex.metrics_listed_at = usage.as_ref().map(|u| u.fetched_at);
    let policy = horizontal::policy(&dpa.spec);
    let objectives = horizontal::objectives(&dpa.spec);
    let current_u = u32::try_from(current).unwrap_or(0);
    let recommendation: Result<Recommendation, String> = if !dpa.spec.fallback.horizontal.enabled {
        Err("fallback.horizontal.enabled is false: no recommendation source".to_owned())
    } else if objectives.vertical_only {
        Err("no objectives and update.strategy opts in to vertical updates: a vertical-only autoscaler, replicas are left alone".to_owned())
    } else if objectives.usable.is_empty() {
        Err(objectives.unusable.join("; "))
    } else if let Some(u) = &usage {
        let engine_pods = horizontal::pods(&pods, &u.pods);
        shared
            .recommender
            .recommend(&recommender::Input {
                now,
                current_replicas: current_u,
                objectives: &objectives.usable,
                pods: &engine_pods,
            })
            .map(|mut r| {
                // Objectives the local recommender cannot compute hold back a scale-down, as failed
                // ones do.
                if !objectives.unusable.is_empty() {
                    r.partial = true;
                    r.replicas = r.replicas.max(current_u);
                }
                r
            })
            .map_err(|e| e.to_string())
    } else {
        Err("pod metrics not listed yet".to_owned())
    };
    ex.unusable_objectives = objectives.unusable.clone();

    let old_part = Owned::of(&old);
    let mut conds = vec![Cond::yes(conditions::ACTIVE), Cond::no(conditions::ERROR)];
    let mut requeue = Requeue::default();
    match &recommendation {
        // Computed on a stale view: shown by explain, not in the status.
        _ if pod_hold.is_some() => {}
        Ok(_) => conds.push(Cond::yes(conditions::HORIZONTAL_ABLE_TO_RECOMMEND)),
        Err(e) => conds.push(
            Cond::no(conditions::HORIZONTAL_ABLE_TO_RECOMMEND)
                .because(reasons::LOCAL_RECOMMENDER_ERROR, e.clone()),
        ),
    }
    let mut history = shared.history(key, old_part.horizontal.as_deref());
    let mut horizontal = old_part.horizontal.as_deref().cloned().unwrap_or_default();
    let mut scale_error = None;
    let decision = recommendation.as_ref().ok().map(|r| {
        policy::evaluate(
            &policy,
            &history,
            &policy::Input {
                now,
                current_replicas: current_u,
                recommended_replicas: r.replicas,
                source: r.source,
            },
        )
    });
    // A scale-up on a pod view that lags the target would count the missing pods' load twice.
    let lagging = decision.as_ref().filter(|d| d.action.is_some()).and_then(|d| {
        inputs::hold_scale_up(
            current_u,
            d.final_replicas,
            u32::try_from(live_pods).unwrap_or(u32::MAX),
        )
    });
    // ... and so would a scale-up on samples taken before the last pod became Ready.
    let predating = match (&decision, &usage) {
        (Some(d), Some(u)) if d.action.is_some() && lagging.is_none() => {
            let ready: Vec<inputs::ReadyPod> = pods
                .iter()
                .filter(live)
                .filter(|p| p.ready)
                .map(|p| inputs::ReadyPod {
                    ready_since: p.ready_changed_at,
                    sampled_at: u.pods.get(&p.name).map(|s| s.timestamp),
                })
                .collect();
            inputs::hold_for_samples(
                current_u,
                d.final_replicas,
                &ready,
                now,
                shared.recommender.settings().sample_max_age,
            )
        }
        _ => None,
    };
    let scale_up_hold = lagging.or(predating);
    // A held decision sets only `HorizontalAbleToScale`; the other owned conditions and fields stay.
    let held = pod_hold.is_some() || scale_up_hold.is_some();
    if let Some(h) = pod_hold.as_ref().or(scale_up_hold.as_ref()) {
        let doing = match &decision {
            Some(d) if d.action.is_some() => format!("would scale {current} -> {}", d.final_replicas),
            _ => "no scaling decision".to_owned(),
        };
        hold(shared, key, &mut conds, &mut ex, &mut requeue, h, &doing);
        ex.decision = decision.map(Box::new);
    } else if current == 0 {
        let m = "target has 0 replicas: scaling disabled";
        conds.push(Cond::no(conditions::HORIZONTAL_ABLE_TO_SCALE).because(reasons::SCALING_DISABLED, m));
        ex.outcome = format!("nothing ({m})");
    } else if let (Ok(r), Some(u)) = (&recommendation, &usage)
        && horizontal::metrics_predate_last_action(&history, u.fetched_at)
    {
        conds.push(Cond::yes(conditions::HORIZONTAL_ABLE_TO_SCALE));
        ex.outcome = format!(
            "no change (recommends {} but the pod metrics predate the last scale; waiting for a newer list)",
            r.replicas
        );
    } else if let (Ok(r), Some(d)) = (&recommendation, decision) {
        // Checked before the write: a decision whose inputs aged or resynced is dropped, not recorded.
        let stale = d.action.as_ref().filter(|_| shared.is_leader()).and_then(|_| {
            inputs::check_basis(
                &basis,
                time::now(),
                shared.pods.sync_losses(),
                inputs::MAX_DECISION_AGE,
            )
            .err()
        });
        if stale.is_none() {
            history.record_recommendation(now, r.replicas);
        }
        tracing::debug!(
            namespace = ns,
            name,
            current,
            pods = pods.len(),
            live_pods,
            ready_pods = pods.iter().filter(|p| p.ready).count(),
            metrics_listed_at = ?usage.as_ref().map(|u| u.fetched_at),
            recommended = r.replicas,
            desired = d.final_replicas,
            "horizontal decision"
        );
        match (d.limit, &d.limited_reason) {
            (Some(l), reason) => conds.push(
                Cond::yes(conditions::HORIZONTAL_SCALING_LIMITED)
                    .because(limit_reason(l), reason.clone().unwrap_or_default()),
            ),
            (None, _) => conds.push(Cond::no(conditions::HORIZONTAL_SCALING_LIMITED)),
        }
        requeue = Requeue(d.requeue_after);
        let desired = i32::try_from(d.final_replicas).unwrap_or(i32::MAX);
        if let Some(action) = &d.action {
            if !shared.is_leader() {
                ex.outcome = format!("would scale {current} -> {desired} (not the leader)");
            } else if let Some(why) = stale {
                dropped(shared, key, &mut ex, &mut requeue, why, current, desired);
            } else {
                shared.count_request();
                let result = scale::set(
                    &shared.client,
                    &ar,
                    ns,
                    &t.name,
                    desired,
                    state.resource_version.as_deref(),
                )
                .await;
                shared.counters.scale_writes.fetch_add(1, Ordering::Relaxed);
                match result {
                    Err(e) if scale::is_conflict(&e) => {
                        dropped(
                            shared,
                            key,
                            &mut ex,
                            &mut requeue,
                            Dropped::TargetChanged,
                            current,
                            desired,
                        );
                    }
                    Ok(()) => {
                        tracing::info!(
                            namespace = ns,
                            name,
                            from = current,
                            to = desired,
                            recommended = r.replicas,
                            "scaled"
                        );
                        // The action counts from when it took effect (the metrics guard compares
                        // the next list with it).
                        let mut action = action.clone();
                        action.time = time::now();
                        history.record_action(action);
                        conds.push(Cond::yes(conditions::HORIZONTAL_ABLE_TO_SCALE));
                        publish(
                            shared,
                            &dpa,
                            EventType::Normal,
                            events::SUCCESSFUL_SCALE,
                            format!("scaled {} from {current} to {desired} replicas", ex.target),
                        )
                        .await;
                        ex.outcome = format!("scaled {current} -> {desired}");
                    }
                    Err(e) => {
                        let m = format!("scaling to {desired} failed: {e}");
                        tracing::warn!(namespace = ns, name, error = %e, "scale failed");
                        shared.counters.scale_errors.fetch_add(1, Ordering::Relaxed);
                        conds.push(
                            Cond::no(conditions::HORIZONTAL_ABLE_TO_SCALE)
                                .because(reasons::SCALE_FAILED, m.clone()),
                        );
                        conds[1] = Cond::yes(conditions::ERROR).because(reasons::SCALE_FAILED, m.clone());
                        publish(shared, &dpa, EventType::Warning, events::FAILED_SCALE, m.clone()).await;
                        ex.outcome = m;
                        scale_error = Some(Error::SetScale {
                            target: ex.target.clone(),
                            source: e,
                        });
                    }
                }
            }
        } else {
            let detail = d.steps.last().map(|s| s.detail.clone()).unwrap_or_default();
            match d.restriction {
                Some(restriction) => conds.push(
                    Cond::no(conditions::HORIZONTAL_ABLE_TO_SCALE)
                        .because(restriction_reason(restriction), detail.clone()),
                ),
                None => conds.push(Cond::yes(conditions::HORIZONTAL_ABLE_TO_SCALE)),
            }
            ex.outcome = match (d.restriction, dpa.spec.apply_policy.mode) {
                (Some(_), ApplyMode::Preview) if d.desired_replicas != current_u => format!(
                    "Preview: would scale {current} -> {}; nothing written to /scale",
                    d.desired_replicas
                ),
                (Some(r), _) => format!("no change ({}: {detail})", restriction_reason(r)),
                (None, _) => format!("no change (stays at {current})"),
            };
        }
        let window = horizontal::longest_window(&policy);
        let recent = horizontal::status_recommendations(&history, now, window);
        horizontal.target = Some(HorizontalRecommendation {
            source: Some(lazyscale_api::Word::from(r.source.to_string())),
            generated_at: recent.last().and_then(|x| x.generated_at.clone()),
            desired_replicas: i32::try_from(r.replicas).unwrap_or(i32::MAX),
        });
        horizontal.last_recommendations = Some(recent);
        let actions = horizontal::status_actions(&history);
        horizontal.last_actions = (!actions.is_empty()).then_some(actions);
        ex.decision = Some(Box::new(d));
    } else {
        ex.outcome = "no change (no recommendation)".into();
    }
    ex.recommendation = Some(Box::new(recommendation));
    shared.keep_history(key, history);

    let new = Owned {
        current_replicas: match pod_hold {
            Some(_) => old_part.current_replicas,
            None => Some(i32::try_from(live_pods).unwrap_or(i32::MAX)),
        },
        horizontal: (horizontal != HorizontalStatus::default()).then(|| Box::new(horizontal)),
        conditions: status::owned_conditions(&merged_conditions(&old_conditions, &conds, held, now)),
    };
    let written = write_status(shared, key, &dpa.metadata, &old_part, new).await;
    shared.explain_store(key, ex);
    if written.is_ok()
        && let Some(t) = validate::transition(&old_conditions, None)
    {
        announce(shared, &dpa.metadata, t).await;
    }
    if let Some(e) = scale_error {
        return Err(e);
    }
    written?;
    Ok(requeue)
}

/// A decision held ([`inputs::Hold`]): `HorizontalAbleToScale=False` with the reason, the outcome,
/// the counter, and a retry.
fn hold(
    shared: &Shared,
    key: &Key,
    conds: &mut Vec<Cond>,
    ex: &mut Explanation,
    requeue: &mut Requeue,
    h: &Hold,
    doing: &str,
) {
    shared.counters.held.fetch_add(1, Ordering::Relaxed);
    let m = h.message();
    tracing::debug!(namespace = %key.0, name = %key.1, hold = ?h, "horizontal decision held");
    ex.outcome = format!("held: {doing}, but {m} ({})", h.reason());
    conds.push(Cond::no(conditions::HORIZONTAL_ABLE_TO_SCALE).because(h.reason(), m));
    *requeue = Requeue(Some(inputs::RETRY));
}

/// A decision dropped before its write ([`inputs::Dropped`]): nothing written, recomputed soon.
fn dropped(
    shared: &Shared,
    key: &Key,
    ex: &mut Explanation,
    requeue: &mut Requeue,
    why: Dropped,
    current: i32,
    desired: i32,
) {
    shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
    tracing::info!(namespace = %key.0, name = %key.1, from = current, to = desired, reason = %why, "scale decision dropped");
    ex.outcome = format!("dropped: would scale {current} -> {desired}, but {why}; recomputing");
    *requeue = Requeue(Some(inputs::RETRY));
}

/// The owned conditions after this reconcile: merged as [`status::merge_conditions`] does; with
/// `keep_unset` (a held decision) the owned conditions it did not set stay as they were.
fn merged_conditions(
    old: &[DatadogPodAutoscalerCondition],
    new: &[Cond],
    keep_unset: bool,
    now: time::Timestamp,
) -> Vec<DatadogPodAutoscalerCondition> {
    let merged = status::merge_conditions(old, new, now);
    if !keep_unset {
        return merged;
    }
    let mut out = Vec::new();
    for t in conditions::DPA_CONDITION_TYPES {
        if let Some(c) = merged.iter().find(|c| c.type_ == t) {
            out.push(c.clone());
        } else if status::OWNED.contains(&t)
            && let Some(o) = old.iter().find(|o| o.type_ == t)
        {
            out.push(o.clone());
        }
    }
    out.extend(
        merged
            .into_iter()
            .filter(|c| !conditions::DPA_CONDITION_TYPES.contains(&c.type_.as_str())),
    );
    out
}

fn limit_reason(l: policy::Limit) -> &'static str {
    match l {
        policy::Limit::LimitedByConstraint => reasons::LIMITED_BY_CONSTRAINT,
        policy::Limit::LimitedByScalingBehavior => reasons::LIMITED_BY_SCALING_BEHAVIOR,
    }
}

fn restriction_reason(r: policy::Restriction) -> &'static str {
    match r {
        policy::Restriction::ScalingDisabled => reasons::SCALING_DISABLED,
        policy::Restriction::FallbackRestricted => reasons::FALLBACK_RESTRICTED,
        policy::Restriction::PolicyRestricted => reasons::POLICY_RESTRICTED,
    }
}

/// The part of the status the horizontal writer owns: `currentReplicas`, `horizontal` and its
/// conditions ([`status::OWNED`]). It applies exactly these fields under its own field manager
/// ([`field_managers::HORIZONTAL`]), so the vertical writer's fields are never touched.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Owned {
    current_replicas: Option<i32>,
    horizontal: Option<Box<HorizontalStatus>>,
    conditions: Vec<DatadogPodAutoscalerCondition>,
}

impl Owned {
    pub(crate) fn of(s: &DatadogPodAutoscalerStatus) -> Self {
        Self {
            current_replicas: s.current_replicas,
            horizontal: s.horizontal.clone(),
            conditions: status::owned_conditions(s.conditions.as_deref().unwrap_or_default()),
        }
    }

    /// Approximate heap bytes of the fields ([`lazyscale_api::heap::approx_heap_bytes`]).
    pub(crate) fn approx_heap_bytes(&self) -> usize {
        use lazyscale_api::heap::{alloc_bytes, approx_heap_bytes};
        self.horizontal.as_ref().map_or(0, |h| {
            alloc_bytes(std::mem::size_of::<HorizontalStatus>()) + approx_heap_bytes(h)
        }) + alloc_bytes(self.conditions.capacity() * std::mem::size_of::<DatadogPodAutoscalerCondition>())
            + self.conditions.iter().map(approx_heap_bytes).sum::<usize>()
    }

    /// The stored status with these fields put in (what the reflector will show once applied).
    pub(crate) fn put_into(&self, s: &mut DatadogPodAutoscalerStatus) {
        s.current_replicas = self.current_replicas;
        s.horizontal = self.horizontal.clone();
        let mut all: Vec<DatadogPodAutoscalerCondition> = s
            .conditions
            .iter()
            .flatten()
            .filter(|c| !status::OWNED.contains(&c.type_.as_str()))
            .cloned()
            .collect();
        all.extend(self.conditions.iter().cloned());
        s.conditions = Some(all);
    }

    /// The server-side apply body: only the owned fields (absent ones are given up).
    fn body(&self, namespace: &str, name: &str) -> serde_json::Value {
        let mut status = serde_json::Map::new();
        if let Some(r) = self.current_replicas {
            status.insert("currentReplicas".into(), json!(r));
        }
        if let Some(h) = &self.horizontal {
            status.insert("horizontal".into(), json!(h));
        }
        status.insert("conditions".into(), json!(self.conditions));
        json!({
            "apiVersion": API_VERSION,
            "kind": DPA_KIND,
            "metadata": {"name": name, "namespace": namespace},
            "status": status,
        })
    }
}

/// A DPA that is not acted on: `Active=False` and `Error=True` with the reason, applied by the
/// horizontal writer (its other fields kept), and a Warning event when it stops being acted on.
async fn block(
    shared: &Arc<Shared>,
    key: &Key,
    meta: &ObjectMeta,
    old: &DatadogPodAutoscalerStatus,
    b: Invalid,
    now: time::Timestamp,
) -> Result<(), Error> {
    let old_conditions = old.conditions.clone().unwrap_or_default();
    let transition = validate::transition(&old_conditions, Some(&b));
    let conds = [
        Cond::no(conditions::ACTIVE).because(b.reason, b.message.clone()),
        Cond::yes(conditions::ERROR).because(b.reason, b.message),
    ];
    let old_part = Owned::of(old);
    let new = Owned {
        conditions: status::owned_conditions(&status::merge_conditions(&old_conditions, &conds, now)),
        ..old_part.clone()
    };
    write_status(shared, key, meta, &old_part, new).await?;
    if let Some(t) = transition {
        announce(shared, meta, t).await;
    }
    Ok(())
}

/// Reports a DPA whose object does not decode ([`validate::decode`]): blocked as `InvalidSpec`
/// with the field and the decoder's error; nothing else is done with it.
async fn report_undecodable(shared: &Arc<Shared>, key: &Key, u: &Undecodable) -> Result<Requeue, Error> {
    let now = time::now();
    let b = u.invalid();
    tracing::debug!(namespace = %key.0, name = %key.1, field = %u.field, error = %u.error, "DPA cannot be read");
    let old = shared.old_status(key, u.status.clone().unwrap_or_default());
    shared.explain_store(
        key,
        Explanation {
            at: now,
            target: "(the object cannot be read)".to_owned(),
            mode: "",
            blocked: Some(Box::new((b.reason.to_owned(), b.message.clone()))),
            current_replicas: None,
            pods: 0,
            metrics_listed_at: None,
            recommendation: None,
            unusable_objectives: Vec::new(),
            decision: None,
            outcome: "nothing (not active)".into(),
        },
    );
    block(shared, key, &u.metadata, &old, b, now).await?;
    Ok(Requeue::default())
}

/// Publishes the event of a [`Transition`]: a Warning with the blocking reason when the agent stops
/// acting on a DPA, `AutoscalerResumed` when it acts on it again.
async fn announce(shared: &Arc<Shared>, meta: &ObjectMeta, t: Transition) {
    let (ns, name) = (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    );
    let (type_, reason, action, note) = match t {
        Transition::Stopped(b) => {
            tracing::info!(namespace = ns, name, reason = b.reason, message = %b.message, "not acting on the autoscaler");
            (
                EventType::Warning,
                b.reason.to_owned(),
                "Stop",
                format!("not acting on this autoscaler: {}", b.message),
            )
        }
        Transition::Resumed(was) => {
            tracing::info!(namespace = ns, name, was = %was, "acting on the autoscaler again");
            (
                EventType::Normal,
                events::AUTOSCALER_RESUMED.to_owned(),
                "Resume",
                format!("acting on this autoscaler again (it was not: {was})"),
            )
        }
    };
    publish_to(shared, &reference(meta), type_, reason, action, note).await;
}

/// The event reference of a DPA.
fn reference(meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(API_VERSION.to_owned()),
        kind: Some(DPA_KIND.to_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

/// Applies the horizontal writer's fields (server-side apply on the status subresource) when they
/// differ from the old ones and this replica leads; keeps them until the DPA watch shows them
/// ([`Shared::old_status`]).
async fn write_status(
    shared: &Arc<Shared>,
    key: &Key,
    meta: &ObjectMeta,
    old: &Owned,
    new: Owned,
) -> Result<(), Error> {
    if &new == old || !shared.is_leader() {
        return Ok(());
    }
    let (ns, name) = (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    );
    // The answer is read as a raw object: the DPA may be one our types cannot decode.
    let api: Api<DynamicObject> = Api::namespaced_with(
        shared.client.clone(),
        &ns,
        &ApiResource::erase::<DatadogPodAutoscaler>(&()),
    );
    shared.count_request();
    shared.counters.status_writes.fetch_add(1, Ordering::Relaxed);
    api.patch_status(
        &name,
        &PatchParams::apply(field_managers::HORIZONTAL).force(),
        &Patch::Apply(&new.body(&ns, &name)),
    )
    .await
    .map_err(|e| Error::Status(format!("{ns}/{name}"), e))?;
    shared.keep_written(key, new);
    tracing::debug!(namespace = %ns, name = %name, "status written");
    Ok(())
}

/// Publishes an event about a DPA (leader only; failures are logged, not returned).
async fn publish(
    shared: &Arc<Shared>,
    dpa: &DatadogPodAutoscaler,
    type_: EventType,
    reason: &str,
    note: String,
) {
    publish_to(
        shared,
        &dpa.object_ref(&()),
        type_,
        reason.to_owned(),
        "Scale",
        note,
    )
    .await;
}

/// Publishes an event about `reference` (leader only; failures are logged, not returned).
async fn publish_to(
    shared: &Arc<Shared>,
    reference: &ObjectReference,
    type_: EventType,
    reason: String,
    action: &str,
    note: String,
) {
    if !shared.is_leader() {
        return;
    }
    let ev = Event {
        type_,
        reason,
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    shared.count_request();
    if let Err(error) = shared.recorder.publish(&ev, reference).await {
        tracing::warn!(%error, reason = %ev.reason, "cannot publish event");
    }
}
