//! One reconcile of one DPA: limit and validation, target resolution, the scale subresource, pods,
//! the local recommendation, the policy, the scale write with its event, and the status write when
//! the status changed semantically. Writes happen only while this replica leads.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use lazyscale_api::consts::conditions::{self, reasons};
use lazyscale_api::consts::{API_VERSION, FIELD_MANAGER, events, value_sources};
use lazyscale_api::{
    ApplyMode, DatadogPodAutoscaler, DatadogPodAutoscalerStatus, HorizontalAction, HorizontalRecommendation,
    HorizontalStatus,
};
use serde_json::json;

use crate::controller::{Key, Shared};
use crate::explain::Explanation;
use crate::pods::PodPhase;
use crate::policy::{self, Policy};
use crate::recommend::{self, ObjectiveSpec};
use crate::scale::{self, TargetError};
use crate::status::{self, Cond};
use crate::time;
use crate::validate::{self, Invalid};

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
        shared.explanations.write().remove(key);
        return Ok(Requeue::default());
    };
    let now = time::now();
    let (ns, name) = (key.0.as_str(), key.1.as_str());
    let t = &dpa.spec.target_ref;
    let api_version = t.api_version.clone().unwrap_or_default();
    let mut ex = Explanation {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        at: now,
        target: format!("{api_version} {} {}", t.kind, t.name),
        mode: format!("{:?}", dpa.spec.apply_policy.mode),
        blocked: None,
        current_replicas: None,
        pods: 0,
        metrics_listed_at: None,
        recommendation: None,
        decision: None,
        outcome: String::new(),
    };
    let old = shared.old_status(key, dpa.status.clone().unwrap_or_default());
    let old_conditions = old.conditions.clone().unwrap_or_default();

    // Limit, validation, target.
    let blocked: Option<Invalid> = if !shared.within_limit(key) {
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
        ex.blocked = Some((b.reason.to_owned(), b.message.clone()));
        ex.outcome = "nothing (not active)".into();
        let conds = [
            Cond::no(conditions::ACTIVE).because(b.reason, b.message.clone()),
            Cond::yes(conditions::ERROR).because(b.reason, b.message),
        ];
        let mut new = old.clone();
        new.conditions = Some(status::merge_conditions(&old_conditions, &conds, now));
        write_status(shared, key, &dpa, &old, new).await?;
        shared.explain_store(key, ex);
        return Ok(Requeue::default());
    }
    let (Some(ar), Some(state)) = (target, state) else {
        return Ok(Requeue::default());
    };

    // Pods and the recommendation.
    if !shared.pods.is_synced() {
        return Ok(Requeue(Some(Duration::from_secs(1))));
    }
    let pods = shared.pods.pods_of(ns, &t.kind, &t.name);
    let current = state.spec_replicas;
    ex.current_replicas = Some(current);
    ex.pods = pods.len();
    let live_pods = pods
        .iter()
        .filter(|p| !p.deleting && !matches!(p.phase, PodPhase::Failed | PodPhase::Succeeded))
        .count();
    let usage = shared.usage_of(ns);
    ex.metrics_listed_at = usage.as_ref().map(|u| u.fetched_at);
    let policy = Policy::from_spec(&dpa.spec);
    let horizontal_old = old.horizontal.clone().unwrap_or_default();
    let recommendation = if !dpa.spec.fallback.horizontal.enabled {
        Err("fallback.horizontal.enabled is false: no recommendation source".to_owned())
    } else if let Some(u) = &usage {
        let r = recommend::recommend(
            now,
            current,
            &pods,
            &u.pods,
            &ObjectiveSpec::of_spec(&dpa.spec),
            &shared.config.recommender,
        );
        let out = r.replicas.clone();
        ex.recommendation = Some(r);
        out
    } else {
        Err("pod metrics not listed yet".to_owned())
    };

    let mut conds = vec![Cond::yes(conditions::ACTIVE), Cond::no(conditions::ERROR)];
    let mut horizontal = horizontal_old.clone();
    let mut requeue = Requeue::default();
    match &recommendation {
        Ok(_) => conds.push(Cond::yes(conditions::HORIZONTAL_ABLE_TO_RECOMMEND)),
        Err(e) => conds.push(
            Cond::no(conditions::HORIZONTAL_ABLE_TO_RECOMMEND)
                .because(reasons::LOCAL_RECOMMENDER_ERROR, e.clone()),
        ),
    }
    let mut history = status::history(horizontal_old.last_recommendations.as_deref());
    let actions = status::actions(horizontal_old.last_actions.as_deref());
    let mut scale_error = None;
    if current == 0 {
        let m = "target has 0 replicas: scaling disabled";
        conds.push(Cond::no(conditions::HORIZONTAL_ABLE_TO_SCALE).because(reasons::SCALING_DISABLED, m));
        ex.outcome = format!("nothing ({m})");
    } else if let Ok(recommended) = recommendation {
        let d = policy::decide(now, current, recommended, true, &policy, &history, &actions);
        history = status::record(history, now, recommended, &policy);
        let generated_at = history.last().map_or(now, |r| r.time);
        horizontal.target = Some(HorizontalRecommendation {
            source: Some(value_sources::LOCAL.to_owned()),
            generated_at: Some(time::to_time(generated_at)),
            desired_replicas: recommended,
        });
        horizontal.last_recommendations = Some(status::history_to_status(&history));
        match &d.limited {
            Some(l) => conds
                .push(Cond::yes(conditions::HORIZONTAL_SCALING_LIMITED).because(l.reason, l.message.clone())),
            None => conds.push(Cond::no(conditions::HORIZONTAL_SCALING_LIMITED)),
        }
        requeue = Requeue(d.requeue_after.map(|ms| Duration::from_millis(ms.max(0) as u64)));
        if d.scale {
            if !shared.is_leader() {
                ex.outcome = format!("would scale {current} -> {} (not the leader)", d.desired);
            } else {
                shared.count_request();
                let r = scale::set(&shared.client, &ar, ns, &t.name, d.desired).await;
                shared
                    .counters
                    .scale_writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match r {
                    Ok(()) => {
                        tracing::info!(
                            namespace = ns,
                            name,
                            from = current,
                            to = d.desired,
                            recommended,
                            "scaled"
                        );
                        horizontal.last_actions = Some(status::push_action(
                            horizontal_old.last_actions.as_deref(),
                            HorizontalAction {
                                time: time::to_time(now),
                                from_replicas: current,
                                to_replicas: d.desired,
                                recommended_replicas: Some(recommended),
                                limited_reason: d.limited.as_ref().map(|l| l.message.clone()),
                            },
                        ));
                        conds.push(Cond::yes(conditions::HORIZONTAL_ABLE_TO_SCALE));
                        publish(
                            shared,
                            &dpa,
                            EventType::Normal,
                            events::SUCCESSFUL_SCALE,
                            format!("scaled {} from {current} to {} replicas", ex.target, d.desired),
                        )
                        .await;
                        ex.outcome = format!("scaled {current} -> {}", d.desired);
                    }
                    Err(e) => {
                        let m = format!("scaling to {} failed: {e}", d.desired);
                        tracing::warn!(namespace = ns, name, error = %e, "scale failed");
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
            match &d.restricted {
                Some(r) => conds.push(
                    Cond::no(conditions::HORIZONTAL_ABLE_TO_SCALE).because(r.reason, r.message.clone()),
                ),
                None => conds.push(Cond::yes(conditions::HORIZONTAL_ABLE_TO_SCALE)),
            }
            ex.outcome = match (&d.restricted, dpa.spec.apply_policy.mode) {
                (Some(_), ApplyMode::Preview) if d.desired != current => {
                    format!(
                        "Preview: would scale {current} -> {}; nothing written to /scale",
                        d.desired
                    )
                }
                (Some(r), _) => format!("no change ({}: {})", r.reason, r.message),
                (None, _) => format!("no change (stays at {current})"),
            };
        }
        ex.decision = Some(d);
    } else {
        ex.outcome = "no change (no recommendation)".into();
    }

    let mut new = old.clone();
    new.current_replicas = Some(i32::try_from(live_pods).unwrap_or(i32::MAX));
    new.horizontal = if horizontal == HorizontalStatus::default() {
        None
    } else {
        Some(horizontal)
    };
    new.conditions = Some(status::merge_conditions(&old_conditions, &conds, now));
    let written = write_status(shared, key, &dpa, &old, new).await;
    shared.explain_store(key, ex);
    if let Some(e) = scale_error {
        return Err(e);
    }
    written?;
    Ok(requeue)
}

/// Writes the status (server-side apply on the status subresource) when it differs from the stored
/// one and this replica leads.
async fn write_status(
    shared: &Arc<Shared>,
    key: &Key,
    dpa: &DatadogPodAutoscaler,
    old: &DatadogPodAutoscalerStatus,
    new: DatadogPodAutoscalerStatus,
) -> Result<(), Error> {
    if &new == old || !shared.is_leader() {
        return Ok(());
    }
    let (ns, name) = (dpa.namespace().unwrap_or_default(), dpa.name_any());
    let api: Api<DatadogPodAutoscaler> = Api::namespaced(shared.client.clone(), &ns);
    let new_status = new.clone();
    let body = json!({
        "apiVersion": API_VERSION,
        "kind": "DatadogPodAutoscaler",
        "metadata": {"name": name, "namespace": ns},
        "status": new,
    });
    shared.count_request();
    shared
        .counters
        .status_writes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| Error::Status(format!("{ns}/{name}"), e))?;
    shared.written.lock().insert(key.clone(), new_status);
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
    if !shared.is_leader() {
        return;
    }
    let reference: ObjectReference = dpa.object_ref(&());
    let ev = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Scale".to_owned(),
        secondary: None,
    };
    shared.count_request();
    if let Err(error) = shared.recorder.publish(&ev, &reference).await {
        tracing::warn!(%error, reason, "cannot publish event");
    }
}
