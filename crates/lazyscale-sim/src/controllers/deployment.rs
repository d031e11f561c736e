//! The Deployment controller: one ReplicaSet per pod template, named `<deployment>-<hash>` and
//! labelled `pod-template-hash=<hash>`, rolled with maxSurge/maxUnavailable (25 % defaults) or
//! Recreate; revision annotations, revision history cleanup, status and the `Available` and
//! `Progressing` conditions.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Patch;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{debug, info};

use super::{
    DESIRED_REPLICAS, MAX_REPLICAS, POD_TEMPLATE_HASH, REVISION, delete_ignore_missing, is_conflict, now,
    owned_by, owner_ref, patch_params, pod_active, pod_available, post_params, resolve_int_or_percent,
    with_label,
};
use crate::Result;
use crate::hash::pod_template_hash;
use crate::sim::Shared;

/// The revision annotation of a ReplicaSet (0 when absent).
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Whether a ReplicaSet's template equals the Deployment's, ignoring the pod-template-hash label.
pub fn template_matches(rs: &ReplicaSet, template: &PodTemplateSpec) -> bool {
    fn normalize(mut t: PodTemplateSpec) -> Option<serde_json::Value> {
        if let Some(m) = t.metadata.as_mut() {
            if let Some(l) = m.labels.as_mut() {
                l.remove(POD_TEMPLATE_HASH);
            }
            if m.labels.as_ref().is_some_and(|l| l.is_empty()) {
                m.labels = None;
            }
        }
        serde_json::to_value(&t).ok()
    }
    let Some(t) = rs.spec.as_ref().and_then(|s| s.template.clone()) else {
        return false;
    };
    normalize(t) == normalize(template.clone())
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        )
    })
}

/// Builds the ReplicaSet for a Deployment's current template.
fn build_rs(d: &Deployment, hash: &str, replicas: i32, revision: i64, max_surge: i32) -> ReplicaSet {
    let name = d.name_any();
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    meta.labels = Some(with_label(meta.labels.as_ref(), &[(POD_TEMPLATE_HASH, hash)]));
    let mut selector = spec.selector.clone();
    selector.match_labels = Some(with_label(
        selector.match_labels.as_ref(),
        &[(POD_TEMPLATE_HASH, hash)],
    ));
    let dep_replicas = spec.replicas.unwrap_or(1);
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: d.namespace(),
            labels: meta.labels.clone(),
            annotations: Some(
                [
                    (REVISION.to_string(), revision.to_string()),
                    (DESIRED_REPLICAS.to_string(), dep_replicas.to_string()),
                    (MAX_REPLICAS.to_string(), (dep_replicas + max_surge).to_string()),
                ]
                .into(),
            ),
            owner_references: Some(vec![owner_ref(
                "Deployment",
                &name,
                d.metadata.uid.as_deref().unwrap_or_default(),
            )]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// Pods of a ReplicaSet that are available, capped at its desired replicas (pods above it are
/// about to be deleted).
fn available_pods(sh: &Shared, rs: &ReplicaSet, min_ready: i32) -> i32 {
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let ns = rs.namespace().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = sh.pods.list(|p| {
        p.metadata.namespace.as_deref() == Some(ns.as_str()) && owned_by(&p.metadata, &uid) && pod_active(p)
    });
    let n = pods.iter().filter(|p| pod_available(p, min_ready)).count() as i32;
    n.min(spec_replicas(rs))
}

async fn scale(
    sh: &Shared,
    api: &Api<ReplicaSet>,
    rs: &mut ReplicaSet,
    replicas: i32,
    dep_replicas: i32,
    max_surge: i32,
) -> Result<()> {
    let name = rs.name_any();
    debug!(rs = %name, from = spec_replicas(rs), to = replicas, "scaling replicaset");
    let patch = json!({
        "metadata": {"annotations": {
            DESIRED_REPLICAS: dep_replicas.to_string(),
            MAX_REPLICAS: (dep_replicas + max_surge).to_string(),
        }},
        "spec": {"replicas": replicas},
    });
    let out = api.patch(&name, &patch_params(), &Patch::Merge(&patch)).await?;
    sh.replicasets.note_write(out.clone());
    *rs = out;
    Ok(())
}

/// Reconciles one Deployment.
pub(crate) async fn reconcile(sh: &Shared, ns: &str, name: &str) -> Result<Option<Duration>> {
    let Some(d) = sh.deployments.get(ns, name) else {
        return Ok(None);
    };
    if d.metadata.deletion_timestamp.is_some() || !sh.in_scope(d.as_ref()) {
        return Ok(None);
    }
    let (Some(uid), Some(spec)) = (d.metadata.uid.clone(), d.spec.as_ref()) else {
        return Ok(None);
    };
    let replicas = spec.replicas.unwrap_or(1);
    let api: Api<ReplicaSet> = Api::namespaced(sh.client.clone(), ns);
    let mut all: Vec<ReplicaSet> = sh
        .replicasets
        .list(|rs| rs.metadata.namespace.as_deref() == Some(ns) && owned_by(&rs.metadata, &uid))
        .into_iter()
        .map(|rs| (*rs).clone())
        .collect();
    all.sort_by(|a, b| {
        (a.metadata.creation_timestamp.as_ref().map(|t| t.0), a.name_any())
            .cmp(&(b.metadata.creation_timestamp.as_ref().map(|t| t.0), b.name_any()))
    });
    let collision = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = pod_template_hash(&spec.template, collision);
    let strategy = spec.strategy.clone().unwrap_or_default();
    let recreate = strategy.type_.as_deref() == Some("Recreate");
    let ru = strategy.rolling_update.unwrap_or_default();
    let (max_surge, mut max_unavailable) = if recreate {
        (0, 0)
    } else {
        (
            resolve_int_or_percent(ru.max_surge.as_ref(), 25, replicas, true),
            resolve_int_or_percent(ru.max_unavailable.as_ref(), 25, replicas, false),
        )
    };
    if !recreate && max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);

    let new_pos = all.iter().position(|rs| template_matches(rs, &spec.template));
    let mut new_rs = new_pos.map(|i| all.remove(i));
    let mut old = all;
    let max_old_rev = old.iter().map(revision).max().unwrap_or(0);
    let paused = spec.paused == Some(true);

    if new_rs.is_none() && !paused {
        let old_sum: i32 = old.iter().map(spec_replicas).sum();
        let initial = if recreate {
            if old_sum == 0 { replicas } else { 0 }
        } else {
            let max_total = replicas + max_surge;
            (max_total - old_sum).clamp(0, replicas)
        };
        let rs = build_rs(&d, &hash, initial, max_old_rev + 1, max_surge);
        match api.create(&post_params(), &rs).await {
            Ok(created) => {
                info!(deployment = %name, rs = %created.name_any(), replicas = initial, "created replicaset");
                sh.replicasets.note_write(created.clone());
                new_rs = Some(created);
            }
            Err(e) if is_conflict(&e) => {
                let existing = api.get(&rs.name_any()).await?;
                if owned_by(&existing.metadata, &uid) && template_matches(&existing, &spec.template) {
                    sh.replicasets.note_write(existing);
                } else {
                    // A hash collision with a foreign ReplicaSet: bump collisionCount, as Kubernetes does.
                    let patch = json!({"status": {"collisionCount": collision.unwrap_or(0) + 1}});
                    let out = Api::<Deployment>::namespaced(sh.client.clone(), ns)
                        .patch_status(name, &patch_params(), &Patch::Merge(&patch))
                        .await?;
                    sh.deployments.note_write(out);
                }
                return Ok(Some(Duration::from_millis(100)));
            }
            Err(e) => return Err(e.into()),
        }
    }

    if let Some(new) = new_rs.as_mut() {
        // A template that returns (rollback) becomes the newest revision again.
        if revision(new) <= max_old_rev {
            let patch = json!({"metadata": {"annotations": {REVISION: (max_old_rev + 1).to_string()}}});
            let out = api
                .patch(&new.name_any(), &patch_params(), &Patch::Merge(&patch))
                .await?;
            sh.replicasets.note_write(out.clone());
            *new = out;
        }
        let rev = revision(new).to_string();
        if d.annotations().get(REVISION) != Some(&rev) {
            let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
            let out = Api::<Deployment>::namespaced(sh.client.clone(), ns)
                .patch(name, &patch_params(), &Patch::Merge(&patch))
                .await?;
            sh.deployments.note_write(out);
        }
    }

    let mut requeue = None;
    if !paused && let Some(new) = new_rs.as_mut() {
        if recreate {
            let mut waiting = false;
            for rs in old.iter_mut() {
                if spec_replicas(rs) > 0 {
                    scale(sh, &api, rs, 0, replicas, 0).await?;
                    waiting = true;
                }
                if status_of(rs).0 > 0 {
                    waiting = true;
                }
            }
            if !waiting && spec_replicas(new) != replicas {
                scale(sh, &api, new, replicas, replicas, 0).await?;
            }
        } else {
            // Scale the new ReplicaSet up within maxSurge (or down to the target).
            let all_spec: i32 = old.iter().map(spec_replicas).sum::<i32>() + spec_replicas(new);
            let cur = spec_replicas(new);
            let target = if cur > replicas {
                replicas
            } else if cur < replicas {
                let max_total = replicas + max_surge;
                if all_spec >= max_total {
                    cur
                } else {
                    cur + (max_total - all_spec).min(replicas - cur)
                }
            } else {
                cur
            };
            if target != cur {
                scale(sh, &api, new, target, replicas, max_surge).await?;
            }
            // Scale old ReplicaSets down within maxUnavailable.
            let old_sum: i32 = old.iter().map(spec_replicas).sum();
            if old_sum > 0 {
                let all_sum = old_sum + spec_replicas(new);
                let min_available = replicas - max_unavailable;
                let new_unavailable = spec_replicas(new) - available_pods(sh, new, min_ready);
                let max_scaled_down = all_sum - min_available - new_unavailable;
                if max_scaled_down > 0 {
                    // First old pods that are not available anyway.
                    let mut budget = max_scaled_down;
                    for rs in old.iter_mut() {
                        if budget <= 0 {
                            break;
                        }
                        let cur = spec_replicas(rs);
                        let unhealthy = cur - available_pods(sh, rs, min_ready);
                        if cur == 0 || unhealthy <= 0 {
                            continue;
                        }
                        let down = unhealthy.min(budget);
                        scale(sh, &api, rs, cur - down, replicas, max_surge).await?;
                        budget -= down;
                    }
                    // Then available ones, keeping minAvailable.
                    let available: i32 = old
                        .iter()
                        .chain(std::iter::once(&*new))
                        .map(|rs| available_pods(sh, rs, min_ready))
                        .sum();
                    if available > min_available {
                        let mut total = available - min_available;
                        for rs in old.iter_mut() {
                            if total <= 0 {
                                break;
                            }
                            let cur = spec_replicas(rs);
                            if cur == 0 {
                                continue;
                            }
                            let down = cur.min(total);
                            scale(sh, &api, rs, cur - down, replicas, max_surge).await?;
                            total -= down;
                        }
                    }
                }
                // Pods becoming available after minReadySeconds produce no event.
                if min_ready > 0 {
                    requeue = Some(Duration::from_secs(1));
                }
            }
        }
        cleanup_history(sh, &api, &old, spec.revision_history_limit.unwrap_or(10)).await?;
    }

    write_status(sh, &d, new_rs.as_ref(), &old, replicas, max_unavailable).await?;
    Ok(requeue)
}

async fn cleanup_history(sh: &Shared, api: &Api<ReplicaSet>, old: &[ReplicaSet], limit: i32) -> Result<()> {
    let idle: Vec<&ReplicaSet> = old
        .iter()
        .filter(|rs| spec_replicas(rs) == 0 && status_of(rs).0 == 0)
        .collect();
    let excess = idle.len() as i64 - i64::from(limit.max(0));
    if excess <= 0 {
        return Ok(());
    }
    let mut by_rev = idle;
    by_rev.sort_by_key(|rs| revision(rs));
    for rs in by_rev.into_iter().take(excess as usize) {
        let n = rs.name_any();
        debug!(rs = %n, "deleting old replicaset (revision history limit)");
        delete_ignore_missing(api, &n).await?;
        sh.replicasets
            .note_delete(&rs.namespace().unwrap_or_default(), &n);
    }
    Ok(())
}

fn condition(
    prev: Option<&DeploymentCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> DeploymentCondition {
    let t = now();
    match prev {
        Some(p)
            if p.status == status
                && p.reason.as_deref() == Some(reason)
                && p.message.as_deref() == Some(message.as_str()) =>
        {
            p.clone()
        }
        Some(p) if p.status == status => DeploymentCondition {
            last_transition_time: p.last_transition_time.clone(),
            last_update_time: Some(t),
            message: Some(message),
            reason: Some(reason.to_string()),
            status: status.to_string(),
            type_: type_.to_string(),
        },
        _ => DeploymentCondition {
            last_transition_time: Some(t.clone()),
            last_update_time: Some(t),
            message: Some(message),
            reason: Some(reason.to_string()),
            status: status.to_string(),
            type_: type_.to_string(),
        },
    }
}

async fn write_status(
    sh: &Shared,
    d: &Deployment,
    new: Option<&ReplicaSet>,
    old: &[ReplicaSet],
    replicas: i32,
    max_unavailable: i32,
) -> Result<()> {
    let all: Vec<&ReplicaSet> = old.iter().chain(new).collect();
    let total_status: i32 = all.iter().map(|rs| status_of(rs).0).sum();
    let ready: i32 = all.iter().map(|rs| status_of(rs).1).sum();
    let available: i32 = all.iter().map(|rs| status_of(rs).2).sum();
    let total_spec: i32 = all.iter().map(|rs| spec_replicas(rs)).sum();
    let updated = new.map_or(0, |rs| status_of(rs).0);
    let prev = d.status.clone().unwrap_or_default();
    let prev_cond = |t: &str| {
        prev.conditions
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.type_ == t))
    };
    let avail_cond = if available >= replicas - max_unavailable {
        condition(
            prev_cond("Available"),
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".to_string(),
        )
    } else {
        condition(
            prev_cond("Available"),
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".to_string(),
        )
    };
    let rs_name = new.map(|rs| rs.name_any()).unwrap_or_default();
    let complete = new.is_some()
        && updated == replicas
        && available == replicas
        && total_status == replicas
        && new.is_some_and(|rs| spec_replicas(rs) == replicas);
    let prog_cond = if d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
        condition(
            prev_cond("Progressing"),
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".to_string(),
        )
    } else if complete {
        condition(
            prev_cond("Progressing"),
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
        )
    } else {
        condition(
            prev_cond("Progressing"),
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs_name}\" is progressing."),
        )
    };
    let status = DeploymentStatus {
        available_replicas: Some(available),
        collision_count: prev.collision_count,
        conditions: Some(vec![avail_cond, prog_cond]),
        observed_generation: d.metadata.generation,
        ready_replicas: Some(ready),
        replicas: Some(total_status),
        terminating_replicas: None,
        unavailable_replicas: Some((total_spec - available).max(0)),
        updated_replicas: Some(updated),
    };
    if d.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let patch = json!({ "status": status });
    let out = Api::<Deployment>::namespaced(sh.client.clone(), &d.namespace().unwrap_or_default())
        .patch_status(&d.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await?;
    sh.deployments.note_write(out);
    Ok(())
}
