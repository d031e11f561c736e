//! The ReplicaSet controller: keeps `spec.replicas` active pods (created from the template with
//! `generateName: <replicaset>-`, so the API server appends 5 characters of Kubernetes' safe
//! alphabet), deletes surplus pods in Kubernetes' preference order (unscheduled, pending, not ready,
//! then the newest), and writes status. ReplicaSets whose Deployment is gone are deleted.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Patch;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{debug, info};

use super::{
    controller_of, delete_ignore_missing, owned_by, owner_gone, owner_ref, patch_params, pod_active,
    pod_available, pod_ready, post_params,
};
use crate::Result;
use crate::sim::Shared;

/// Creates or deletes at most this many pods per reconcile (the rest follows on the next one).
const BURST: usize = 500;
/// Concurrent pod writes per reconcile.
const IN_FLIGHT: usize = 16;

/// A pod from a ReplicaSet's template, as the ReplicaSet controller creates it.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let name = rs.name_any();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: rs.namespace(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner_ref(
                "ReplicaSet",
                &name,
                rs.metadata.uid.as_deref().unwrap_or_default(),
            )]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Deletion preference: lower sorts first (deleted first), as Kubernetes' ActivePods ordering.
fn deletion_rank(
    p: &Pod,
) -> (
    u8,
    u8,
    u8,
    std::cmp::Reverse<Option<k8s_openapi::jiff::Timestamp>>,
) {
    let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    (
        u8::from(scheduled),
        match phase {
            Some("Pending") | None => 0,
            Some("Unknown") => 1,
            _ => 2,
        },
        u8::from(pod_ready(p)),
        std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
    )
}

/// Reconciles one ReplicaSet.
pub(crate) async fn reconcile(sh: &Shared, ns: &str, name: &str) -> Result<Option<Duration>> {
    let Some(rs) = sh.replicasets.get(ns, name) else {
        return Ok(None);
    };
    if rs.metadata.deletion_timestamp.is_some() || !sh.in_scope(rs.as_ref()) {
        return Ok(None);
    }
    let rs_api: Api<ReplicaSet> = Api::namespaced(sh.client.clone(), ns);
    if let Some(owner) = controller_of(&rs.metadata)
        && owner.kind == "Deployment"
        && sh
            .deployments
            .get(ns, &owner.name)
            .map(|d| d.metadata.uid.clone())
            != Some(Some(owner.uid.clone()))
        && owner_gone(&Api::<Deployment>::namespaced(sh.client.clone(), ns), owner).await?
    {
        info!(rs = %name, deployment = %owner.name, "owner gone, deleting replicaset");
        delete_ignore_missing(&rs_api, name).await?;
        sh.replicasets.note_delete(ns, name);
        return Ok(None);
    }
    let Some(uid) = rs.metadata.uid.clone() else {
        return Ok(None);
    };
    let replicas = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
    let min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let pods: Vec<Arc<Pod>> = sh
        .pods
        .list(|p| p.metadata.namespace.as_deref() == Some(ns) && owned_by(&p.metadata, &uid));
    let mut active: Vec<Arc<Pod>> = pods.iter().filter(|p| pod_active(p)).cloned().collect();
    let pod_api: Api<Pod> = Api::namespaced(sh.client.clone(), ns);

    if active.len() < replicas {
        let n = (replicas - active.len()).min(BURST);
        debug!(rs = %name, n, "creating pods");
        let template = pod_from_template(&rs);
        let created: Vec<Pod> = futures::stream::iter(0..n)
            .map(|_| {
                let api = pod_api.clone();
                let pod = template.clone();
                async move { api.create(&post_params(), &pod).await }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await?;
        for p in created {
            sh.pods.note_write(p);
        }
    } else if active.len() > replicas {
        active.sort_by_key(|p| deletion_rank(p));
        let victims: Vec<String> = active[..(active.len() - replicas).min(BURST)]
            .iter()
            .map(|p| p.name_any())
            .collect();
        debug!(rs = %name, n = victims.len(), "deleting pods");
        futures::stream::iter(victims.clone())
            .map(|v| {
                let api = pod_api.clone();
                async move { delete_ignore_missing(&api, &v).await }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<bool>>()
            .await?;
        for v in &victims {
            sh.pods.note_delete(ns, v);
        }
    }

    // Status from the pods as they are now (creations and deletions above show in the next sync).
    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| pod_active(p)).collect();
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully = active
        .iter()
        .filter(|p| {
            let l = p.labels();
            template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
        })
        .count() as i32;
    let ready = active.iter().filter(|p| pod_ready(p)).count() as i32;
    let available = active.iter().filter(|p| pod_available(p, min_ready)).count() as i32;
    let terminating = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .count() as i32;
    let status = ReplicaSetStatus {
        available_replicas: Some(available),
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        fully_labeled_replicas: Some(fully),
        observed_generation: rs.metadata.generation,
        ready_replicas: Some(ready),
        replicas: active.len() as i32,
        terminating_replicas: (terminating > 0).then_some(terminating),
    };
    if rs.status.as_ref() != Some(&status) {
        let patch = json!({ "status": status });
        let out = rs_api
            .patch_status(name, &patch_params(), &Patch::Merge(&patch))
            .await?;
        sh.replicasets.note_write(out);
    }
    // Pods become available after minReadySeconds without an event: look again then.
    Ok((ready > available).then(|| Duration::from_secs(1)))
}
