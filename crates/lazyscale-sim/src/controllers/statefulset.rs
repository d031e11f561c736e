//! The StatefulSet controller: pods `<name>-<ordinal>` with the `controller-revision-hash`
//! (`<name>-<hash>`), `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index`
//! labels, hostname and subdomain; a ControllerRevision per template; OrderedReady or Parallel
//! pod management; rolling updates that replace pods from the highest ordinal down (honouring the
//! partition), one at a time once all pods are Ready; status with current/update revisions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::Patch;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{debug, info};

use super::{
    CONTROLLER_REVISION_HASH, POD_INDEX, STS_POD_NAME, delete_ignore_missing, is_conflict, owned_by,
    owner_ref, patch_params, pod_active, pod_available, pod_ready, post_params, with_label,
};
use crate::Result;
use crate::hash::revision_hash;
use crate::sim::Shared;

/// The ControllerRevision data of a StatefulSet's template (a strategic-merge patch replacing it).
fn revision_data(sts: &StatefulSet) -> serde_json::Value {
    let template = sts.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let mut t = serde_json::to_value(template).unwrap_or_default();
    if let Some(o) = t.as_object_mut() {
        o.insert("$patch".to_string(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The `controller-revision-hash` label value of a StatefulSet's current template.
pub fn update_revision(sts: &StatefulSet) -> String {
    let collision = sts.status.as_ref().and_then(|s| s.collision_count);
    format!(
        "{}-{}",
        sts.name_any(),
        revision_hash(&revision_data(sts), collision)
    )
}

/// The pod of one ordinal, as the StatefulSet controller creates it.
pub fn pod_for_ordinal(sts: &StatefulSet, ordinal: i32, revision: &str) -> Pod {
    let name = sts.name_any();
    let pod_name = format!("{name}-{ordinal}");
    let spec = sts.spec.clone().unwrap_or_default();
    let tm = spec.template.metadata.unwrap_or_default();
    let idx = ordinal.to_string();
    let labels = with_label(
        tm.labels.as_ref(),
        &[
            (CONTROLLER_REVISION_HASH, revision),
            (STS_POD_NAME, &pod_name),
            (POD_INDEX, &idx),
        ],
    );
    let mut pod_spec = spec.template.spec.unwrap_or_default();
    pod_spec.hostname = Some(pod_name.clone());
    if let Some(svc) = spec.service_name.filter(|s| !s.is_empty()) {
        pod_spec.subdomain = Some(svc);
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name),
            namespace: sts.namespace(),
            labels: Some(labels),
            annotations: tm.annotations,
            owner_references: Some(vec![owner_ref(
                "StatefulSet",
                &name,
                sts.metadata.uid.as_deref().unwrap_or_default(),
            )]),
            ..ObjectMeta::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

/// The ordinal of a pod of StatefulSet `set`, from its name.
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn revision_of(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(CONTROLLER_REVISION_HASH)
        .map(String::as_str)
}

fn running_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && pod_ready(p)
}

/// Reconciles one StatefulSet.
pub(crate) async fn reconcile(sh: &Shared, ns: &str, name: &str) -> Result<Option<Duration>> {
    let Some(sts) = sh.statefulsets.get(ns, name) else {
        return Ok(None);
    };
    if sts.metadata.deletion_timestamp.is_some() || !sh.in_scope(sts.as_ref()) {
        return Ok(None);
    }
    let (Some(uid), Some(spec)) = (sts.metadata.uid.clone(), sts.spec.as_ref()) else {
        return Ok(None);
    };
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let on_delete = strategy.type_.as_deref() == Some("OnDelete");
    let partition = strategy.rolling_update.and_then(|r| r.partition).unwrap_or(0);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let update_rev = update_revision(&sts);
    let current_rev = sts
        .status
        .as_ref()
        .and_then(|s| s.current_revision.clone())
        .unwrap_or_else(|| update_rev.clone());

    ensure_revision(sh, &sts, &update_rev).await?;

    let pod_api: Api<Pod> = Api::namespaced(sh.client.clone(), ns);
    let pods: Vec<Arc<Pod>> = sh
        .pods
        .list(|p| p.metadata.namespace.as_deref() == Some(ns) && owned_by(&p.metadata, &uid));
    let mut by_ord: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
    for p in &pods {
        if let Some(o) = ordinal_of(name, &p.name_any()) {
            by_ord.insert(o, p.clone());
        }
    }

    let mut acted = false;
    // Failed pods are deleted and recreated, as the StatefulSet controller does.
    for (o, p) in &by_ord {
        if !pod_active(p) && p.metadata.deletion_timestamp.is_none() {
            info!(sts = %name, ordinal = o, "deleting failed pod");
            delete_ignore_missing(&pod_api, &p.name_any()).await?;
            sh.pods.note_delete(ns, &p.name_any());
            acted = true;
        }
    }
    if acted {
        return Ok(Some(Duration::from_millis(200)));
    }

    // Scale up: create missing ordinals (in order, waiting for readiness, unless Parallel).
    for o in 0..replicas {
        match by_ord.get(&o) {
            Some(p) => {
                if !parallel && !running_ready(p) {
                    break;
                }
            }
            None => {
                let pod = pod_for_ordinal(&sts, o, &update_rev);
                debug!(sts = %name, ordinal = o, "creating pod");
                match pod_api.create(&post_params(), &pod).await {
                    Ok(created) => sh.pods.note_write(created),
                    Err(e) if is_conflict(&e) => return Ok(Some(Duration::from_millis(200))),
                    Err(e) => return Err(e.into()),
                }
                acted = true;
                if !parallel {
                    break;
                }
            }
        }
    }

    // Scale down: remove ordinals >= replicas, highest first (one at a time unless Parallel).
    if !acted {
        let surplus: Vec<(i32, Arc<Pod>)> = by_ord
            .range(replicas..)
            .rev()
            .map(|(o, p)| (*o, p.clone()))
            .collect();
        let all_ready = by_ord.range(..replicas).all(|(_, p)| running_ready(p));
        for (o, p) in surplus {
            if !parallel && !all_ready {
                break;
            }
            debug!(sts = %name, ordinal = o, "deleting surplus pod");
            delete_ignore_missing(&pod_api, &p.name_any()).await?;
            sh.pods.note_delete(ns, &p.name_any());
            acted = true;
            if !parallel {
                break;
            }
        }
    }

    // Rolling update: once all pods are Running and Ready, replace the highest outdated ordinal.
    if !acted && !on_delete {
        let complete = (0..replicas).all(|o| by_ord.get(&o).is_some_and(|p| running_ready(p)));
        if complete
            && let Some((o, p)) = by_ord
                .range(partition.max(0)..replicas)
                .rev()
                .find(|(_, p)| revision_of(p) != Some(update_rev.as_str()))
        {
            info!(sts = %name, ordinal = o, revision = %update_rev, "rolling pod to new revision");
            delete_ignore_missing(&pod_api, &p.name_any()).await?;
            sh.pods.note_delete(ns, &p.name_any());
        }
    }

    // Status.
    let active: Vec<&Arc<Pod>> = by_ord.values().filter(|p| pod_active(p)).collect();
    let ready = active.iter().filter(|p| pod_ready(p)).count() as i32;
    let available = active.iter().filter(|p| pod_available(p, min_ready)).count() as i32;
    let updated = active
        .iter()
        .filter(|p| revision_of(p) == Some(update_rev.as_str()))
        .count() as i32;
    let mut current = active
        .iter()
        .filter(|p| revision_of(p) == Some(current_rev.as_str()))
        .count() as i32;
    let mut current_revision = current_rev.clone();
    if updated == replicas && ready == replicas && active.len() as i32 == replicas {
        current_revision = update_rev.clone();
        current = updated;
    }
    let status = StatefulSetStatus {
        available_replicas: Some(available),
        collision_count: Some(sts.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0)),
        conditions: sts.status.as_ref().and_then(|s| s.conditions.clone()),
        current_replicas: Some(current),
        current_revision: Some(current_revision),
        observed_generation: sts.metadata.generation,
        ready_replicas: Some(ready),
        replicas: active.len() as i32,
        update_revision: Some(update_rev),
        updated_replicas: Some(updated),
    };
    if sts.status.as_ref() != Some(&status) {
        let patch = json!({ "status": status });
        let out = Api::<StatefulSet>::namespaced(sh.client.clone(), ns)
            .patch_status(name, &patch_params(), &Patch::Merge(&patch))
            .await?;
        sh.statefulsets.note_write(out);
    }
    Ok((ready > available || acted).then(|| Duration::from_secs(1)))
}

/// Creates the ControllerRevision of the current template if it does not exist yet.
async fn ensure_revision(sh: &Shared, sts: &StatefulSet, rev: &str) -> Result<()> {
    let ns = sts.namespace().unwrap_or_default();
    let key = (ns.clone(), rev.to_string());
    {
        let mut k = sh
            .kubelet
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !k.revisions.insert(key.clone()) {
            return Ok(());
        }
    }
    let api: Api<ControllerRevision> = Api::namespaced(sh.client.clone(), &ns);
    let cr = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(rev.to_string()),
            namespace: Some(ns.clone()),
            labels: Some(with_label(
                sts.spec.as_ref().and_then(|s| s.selector.match_labels.as_ref()),
                &[(CONTROLLER_REVISION_HASH, rev)],
            )),
            owner_references: Some(vec![owner_ref(
                "StatefulSet",
                &sts.name_any(),
                sts.metadata.uid.as_deref().unwrap_or_default(),
            )]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(revision_data(sts))),
        revision: sts.metadata.generation.unwrap_or(1),
    };
    match api.create(&post_params(), &cr).await {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => {
            sh.kubelet
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .revisions
                .remove(&key);
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals() {
        assert_eq!(ordinal_of("db", "db-0"), Some(0));
        assert_eq!(ordinal_of("db", "db-12"), Some(12));
        assert_eq!(ordinal_of("db", "dbx-1"), None);
        assert_eq!(ordinal_of("db", "db-x"), None);
    }

    #[test]
    fn pod_naming_and_labels() {
        let mut sts = StatefulSet::default();
        sts.metadata.name = Some("db".into());
        sts.metadata.namespace = Some("ns".into());
        sts.metadata.uid = Some("u1".into());
        let mut spec = k8s_openapi::api::apps::v1::StatefulSetSpec {
            service_name: Some("db-headless".into()),
            ..Default::default()
        };
        spec.template.metadata = Some(ObjectMeta {
            labels: Some([("app".to_string(), "db".to_string())].into()),
            ..ObjectMeta::default()
        });
        sts.spec = Some(spec);
        let rev = update_revision(&sts);
        assert!(rev.starts_with("db-"));
        let p = pod_for_ordinal(&sts, 2, &rev);
        assert_eq!(p.metadata.name.as_deref(), Some("db-2"));
        let l = p.metadata.labels.unwrap_or_default();
        assert_eq!(l.get(STS_POD_NAME).map(String::as_str), Some("db-2"));
        assert_eq!(l.get(POD_INDEX).map(String::as_str), Some("2"));
        assert_eq!(l.get(CONTROLLER_REVISION_HASH), Some(&rev));
        assert_eq!(l.get("app").map(String::as_str), Some("db"));
        let spec = p.spec.unwrap_or_default();
        assert_eq!(spec.hostname.as_deref(), Some("db-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("db-headless"));
        let o = &p.metadata.owner_references.unwrap_or_default()[0];
        assert_eq!(
            (o.kind.as_str(), o.controller, o.block_owner_deletion),
            ("StatefulSet", Some(true), Some(true))
        );
    }
}
