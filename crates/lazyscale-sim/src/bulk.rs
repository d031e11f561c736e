//! Bulk mode: populates a cluster with many realistic pods fast, for memory benchmarks. It creates
//! namespaces, real Deployments and their ReplicaSets (`<deployment>-<pod-template-hash>`), then
//! pods `<replicaset>-<5 chars>` owned by them — a dozen labels and annotations, two containers with
//! requests, limits, probes, env and mounts, bound to a simulated node — each followed by a status
//! write making it Running and Ready (so each pod is 3–5 KB in etcd with the managedFields the
//! server adds). Writes run concurrently over several clients. Everything carries
//! [`crate::BULK_LABEL`], so a running [`crate::Simulator`] leaves it alone by default.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, Namespace, Pod, PodSpec, PodTemplateSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::info;

use crate::controllers::{POD_TEMPLATE_HASH, REVISION, is_conflict, owner_ref};
use crate::hash::{SplitMix64, pod_template_hash, random_suffix};
use crate::kubelet::{build_status, node_ip};
use crate::{BULK_LABEL, Error, Result, SimConfig};

/// What to create.
#[derive(Debug, Clone)]
pub struct BulkSpec {
    /// Number of pods.
    pub pods: usize,
    /// Number of namespaces (`<prefix>0`, ...).
    pub namespaces: usize,
    /// Number of Deployments, spread over the namespaces.
    pub deployments: usize,
    /// Namespace name prefix.
    pub namespace_prefix: String,
    /// Concurrent requests in flight.
    pub concurrency: usize,
    /// Simulated nodes the pods are bound to (named as [`SimConfig`] names them).
    pub nodes: u32,
    /// Seed of names.
    pub seed: u64,
    /// Whether to write a Running/Ready status for every pod.
    pub status: bool,
}

impl Default for BulkSpec {
    fn default() -> Self {
        Self {
            pods: 1000,
            namespaces: 10,
            deployments: 100,
            namespace_prefix: "bulk-".to_string(),
            concurrency: 48,
            nodes: 3,
            seed: 1,
            status: true,
        }
    }
}

/// What was created and how fast.
#[derive(Debug, Clone, Default)]
pub struct BulkReport {
    /// Pods created (with status when asked).
    pub pods: usize,
    /// Deployments created.
    pub deployments: usize,
    /// Namespaces used.
    pub namespaces: usize,
    /// Time spent on pods (creates plus status writes).
    pub pod_elapsed: Duration,
    /// Total time.
    pub elapsed: Duration,
    /// Pods per second over `pod_elapsed`.
    pub pods_per_second: f64,
    /// Mean size of a stored pod as the server returns it (JSON bytes, managedFields included).
    pub mean_pod_bytes: usize,
}

struct Group {
    ns: String,
    deployment: String,
    rs_name: String,
    rs_uid: String,
    template: PodTemplateSpec,
    pods: usize,
}

fn q(s: &str) -> Quantity {
    Quantity(s.to_string())
}

fn res(cpu_req: &str, mem_req: &str, cpu_lim: &str, mem_lim: &str) -> ResourceRequirements {
    ResourceRequirements {
        claims: None,
        requests: Some(
            [
                ("cpu".to_string(), q(cpu_req)),
                ("memory".to_string(), q(mem_req)),
            ]
            .into(),
        ),
        limits: Some(
            [
                ("cpu".to_string(), q(cpu_lim)),
                ("memory".to_string(), q(mem_lim)),
            ]
            .into(),
        ),
    }
}

/// A realistic pod template for bulk deployment `name` in `ns`.
fn template(ns: &str, name: &str, team: usize) -> PodTemplateSpec {
    let labels: BTreeMap<String, String> = [
        ("app", name),
        ("app.kubernetes.io/name", name),
        ("app.kubernetes.io/instance", name),
        ("app.kubernetes.io/version", "1.4.2"),
        ("team", ["payments", "search", "platform", "growth"][team % 4]),
        ("env", "bench"),
        (BULK_LABEL, "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let annotations: BTreeMap<String, String> = [
        ("prometheus.io/scrape", "true".to_string()),
        ("prometheus.io/port", "9090".to_string()),
        ("kubectl.kubernetes.io/default-container", "app".to_string()),
        (
            "checksum/config",
            format!(
                "{:016x}{:016x}",
                crate::hash::mix64(team as u64),
                crate::hash::mix64(team as u64 + 1)
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let env = |pairs: &[(&str, &str)]| -> Option<Vec<EnvVar>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| EnvVar {
                    name: (*k).to_string(),
                    value: Some((*v).to_string()),
                    value_from: None,
                })
                .collect(),
        )
    };
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![
                Container {
                    name: "app".to_string(),
                    image: Some(format!("registry.example.internal/{ns}/{name}:1.4.2")),
                    ports: Some(vec![ContainerPort {
                        container_port: 8080,
                        name: Some("http".into()),
                        protocol: Some("TCP".into()),
                        ..ContainerPort::default()
                    }]),
                    env: env(&[("DD_SERVICE", name)]),
                    resources: Some(res("250m", "256Mi", "1", "512Mi")),
                    image_pull_policy: Some("IfNotPresent".into()),
                    ..Container::default()
                },
                Container {
                    name: "proxy".to_string(),
                    image: Some("registry.example.internal/mesh/proxy:1.22.3".to_string()),
                    resources: Some(res("100m", "128Mi", "500m", "256Mi")),
                    image_pull_policy: Some("IfNotPresent".into()),
                    ..Container::default()
                },
            ],
            restart_policy: Some("Always".into()),
            dns_policy: Some("ClusterFirst".into()),
            scheduler_name: Some("default-scheduler".into()),
            service_account_name: Some(name.to_string()),
            termination_grace_period_seconds: Some(30),
            ..PodSpec::default()
        }),
    }
}

fn bulk_labels() -> BTreeMap<String, String> {
    [(BULK_LABEL.to_string(), "true".to_string())].into()
}

async fn create_ignore_exists<K>(api: &Api<K>, obj: &K) -> Result<K>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(o) => Ok(o),
        Err(e) if is_conflict(&e) => Ok(api.get(&obj.name_any()).await?),
        Err(e) => Err(e.into()),
    }
}

/// Populates the cluster on one client. See [`populate_with`].
pub async fn populate(client: &Client, spec: &BulkSpec) -> Result<BulkReport> {
    populate_with(std::slice::from_ref(client), spec, &|_| {}).await
}

/// Populates the cluster, spreading requests over `clients` (several connections pools help the
/// server use its cores); `progress` is called with the number of pods done so far.
pub async fn populate_with(
    clients: &[Client],
    spec: &BulkSpec,
    progress: &(dyn Fn(usize) + Send + Sync),
) -> Result<BulkReport> {
    let start = Instant::now();
    let Some(client) = clients.first() else {
        return Err(Error::Missing(
            "bulk::populate_with needs at least one client".into(),
        ));
    };
    let n_ns = spec.namespaces.max(1);
    let n_dep = spec.deployments.max(1);
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let mut namespaces = Vec::new();
    for i in 0..n_ns {
        let name = format!("{}{i}", spec.namespace_prefix);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(bulk_labels()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        create_ignore_exists(&ns_api, &ns).await?;
        namespaces.push(name);
    }
    // Deployments and ReplicaSets.
    let mut groups = Vec::with_capacity(n_dep);
    for i in 0..n_dep {
        let ns = &namespaces[i % n_ns];
        let name = format!("svc-{i}");
        let pods = spec.pods / n_dep + usize::from(i < spec.pods % n_dep);
        let tmpl = template(ns, &name, i);
        let mut sel = bulk_labels();
        sel.insert("app".into(), name.clone());
        let d = Deployment {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: tmpl.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: Some([(REVISION.to_string(), "1".to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(pods as i32),
                selector: LabelSelector {
                    match_labels: Some(sel.clone()),
                    match_expressions: None,
                },
                template: tmpl.clone(),
                ..DeploymentSpec::default()
            }),
            status: None,
        };
        let d = create_ignore_exists(&Api::namespaced(client.clone(), ns), &d).await?;
        // The server defaults the template: hash what it stored, as the controller would.
        let stored_tmpl = d.spec.as_ref().map(|s| s.template.clone()).unwrap_or(tmpl);
        let hash = pod_template_hash(&stored_tmpl, None);
        let mut rs_tmpl = stored_tmpl.clone();
        if let Some(l) = rs_tmpl.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.insert(POD_TEMPLATE_HASH.into(), hash.clone());
        }
        sel.insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let rs_name = format!("{name}-{hash}");
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(rs_name.clone()),
                namespace: Some(ns.clone()),
                labels: rs_tmpl.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: Some(
                    [
                        (REVISION.to_string(), "1".to_string()),
                        (crate::controllers::DESIRED_REPLICAS.to_string(), pods.to_string()),
                        (
                            crate::controllers::MAX_REPLICAS.to_string(),
                            (pods + pods.div_ceil(4)).to_string(),
                        ),
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
            spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
                replicas: Some(pods as i32),
                min_ready_seconds: None,
                selector: LabelSelector {
                    match_labels: Some(sel),
                    match_expressions: None,
                },
                template: Some(rs_tmpl.clone()),
            }),
            status: None,
        };
        let rs = create_ignore_exists(&Api::namespaced(client.clone(), ns), &rs).await?;
        groups.push(Group {
            ns: ns.clone(),
            deployment: name,
            rs_name,
            rs_uid: rs.metadata.uid.clone().unwrap_or_default(),
            template: rs_tmpl,
            pods,
        });
    }
    info!(
        deployments = groups.len(),
        namespaces = namespaces.len(),
        "bulk: workloads created; creating pods"
    );

    // Pods: names generated here, like the API server's generateName, unique per ReplicaSet.
    let mut rng = SplitMix64::new(spec.seed ^ 0xb01c);
    let cfg = SimConfig::default();
    let mut work = Vec::with_capacity(spec.pods);
    for (gi, g) in groups.iter().enumerate() {
        let mut used = HashSet::new();
        for k in 0..g.pods {
            let name = loop {
                let n = format!("{}-{}", g.rs_name, random_suffix(&mut rng, 5));
                if used.insert(n.clone()) {
                    break n;
                }
            };
            let node = format!("{}{}", cfg.node_prefix, (gi + k) % spec.nodes.max(1) as usize + 1);
            work.push((gi, name, node));
        }
    }
    let pod_start = Instant::now();
    let done = AtomicUsize::new(0);
    let bytes = AtomicUsize::new(0);
    let sampled = AtomicUsize::new(0);
    let groups_ref = &groups;
    let results = futures::stream::iter(work.into_iter().enumerate())
        .map(|(i, (gi, name, node))| {
            let client = clients[i % clients.len()].clone();
            let g = &groups_ref[gi];
            let done = &done;
            let bytes = &bytes;
            let sampled = &sampled;
            let cfg = &cfg;
            async move {
                let tm = g.template.metadata.clone().unwrap_or_default();
                let mut pod_spec = g.template.spec.clone().unwrap_or_default();
                pod_spec.node_name = Some(node.clone());
                let pod = Pod {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        generate_name: Some(format!("{}-", g.rs_name)),
                        namespace: Some(g.ns.clone()),
                        labels: tm.labels,
                        annotations: tm.annotations,
                        owner_references: Some(vec![owner_ref("ReplicaSet", &g.rs_name, &g.rs_uid)]),
                        ..ObjectMeta::default()
                    },
                    spec: Some(pod_spec),
                    status: None,
                };
                let api: Api<Pod> = Api::namespaced(client, &g.ns);
                let created = match api.create(&PostParams::default(), &pod).await {
                    Ok(p) => p,
                    Err(e) if is_conflict(&e) => api.get(&name).await?,
                    Err(e) => return Err(Error::from(e)),
                };
                let last = if spec.status {
                    let ip = format!("10.{}.{}.{}", 64 + (i >> 16) % 64, (i >> 8) & 255, i & 255);
                    let status = build_status(&created, &node_ip(cfg, &node), &ip, true);
                    api.patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(&json!({ "status": status })),
                    )
                    .await?
                } else {
                    created
                };
                if i % 97 == 0 {
                    bytes.fetch_add(
                        serde_json::to_vec(&last).map(|v| v.len()).unwrap_or(0),
                        Ordering::Relaxed,
                    );
                    sampled.fetch_add(1, Ordering::Relaxed);
                }
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress(n);
                Ok::<(), Error>(())
            }
        })
        .buffer_unordered(spec.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let pod_elapsed = pod_start.elapsed();
    if let Some(e) = results.into_iter().find_map(|r| r.err()) {
        return Err(e);
    }

    // Workload statuses, as the controllers would report them.
    for g in &groups {
        let n = g.pods as i32;
        let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), &g.ns);
        let st = json!({"status": {"replicas": n, "fullyLabeledReplicas": n, "readyReplicas": n,
            "availableReplicas": n, "observedGeneration": 1}});
        rs_api
            .patch_status(&g.rs_name, &PatchParams::default(), &Patch::Merge(&st))
            .await?;
        let d_api: Api<Deployment> = Api::namespaced(client.clone(), &g.ns);
        let now = crate::controllers::now();
        let st = json!({"status": {"replicas": n, "updatedReplicas": n, "readyReplicas": n,
            "availableReplicas": n, "observedGeneration": 1, "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                 "message": "Deployment has minimum availability.", "lastUpdateTime": now, "lastTransitionTime": now},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                 "message": format!("ReplicaSet \"{}\" has successfully progressed.", g.rs_name),
                 "lastUpdateTime": now, "lastTransitionTime": now}]}});
        d_api
            .patch_status(&g.deployment, &PatchParams::default(), &Patch::Merge(&st))
            .await?;
    }
    let pods = done.load(Ordering::Relaxed);
    let s = sampled.load(Ordering::Relaxed);
    Ok(BulkReport {
        pods,
        deployments: groups.len(),
        namespaces: namespaces.len(),
        pod_elapsed,
        elapsed: start.elapsed(),
        pods_per_second: pods as f64 / pod_elapsed.as_secs_f64().max(1e-9),
        mean_pod_bytes: bytes.load(Ordering::Relaxed).checked_div(s).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_is_realistic() {
        let t = template("ns", "svc-1", 1);
        let m = t.metadata.clone().unwrap();
        assert!(m.labels.unwrap().len() >= 7);
        assert!(m.annotations.unwrap().len() >= 4);
        let s = t.spec.clone().unwrap();
        assert_eq!(s.containers.len(), 2);
        let size = serde_json::to_vec(&t).unwrap().len();
        assert!(size > 800, "{size}");
    }
}
