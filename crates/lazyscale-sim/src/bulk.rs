//! Bulk mode: populates a cluster with many realistic pods, for memory benchmarks. It creates
//! namespaces, enough kwok nodes for the pods, and real Deployments whose pod templates carry a dozen
//! labels and annotations and two containers with requests, limits, ports and env; then the control
//! plane does the rest, as in a real cluster: kube-controller-manager creates the ReplicaSets and pods
//! (real owner chains) and kwok makes them Running and Ready. Each Deployment's template names its kwok
//! node (`spec.nodeName`, the Deployments spread round-robin over the nodes), so kube-scheduler has nothing
//! to bind: a bind is one more write and one more pod event per pod, and the scheduler took a third of a
//! core in a 100,000-pod population here. Scheduling is exercised by the tests and scenarios, not by bulk
//! loads. Creation is done when every pod runs (counted from a pod watch). Everything carries
//! [`crate::BULK_LABEL`], so a running [`crate::Simulator`] leaves it alone by default.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, Namespace, Pod, PodSpec, PodTemplateSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::PostParams;
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use tracing::info;

use crate::hash::SplitMix64;
use crate::objects::is_conflict;
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
    /// kwok nodes to add for the pods (`bulk-node-1`, ...), each with room for its share of them.
    pub nodes: u32,
    /// Seed of names.
    pub seed: u64,
    /// How long to wait for every pod to run.
    pub timeout: Duration,
}

impl Default for BulkSpec {
    fn default() -> Self {
        Self {
            pods: 1000,
            namespaces: 10,
            deployments: 100,
            namespace_prefix: "bulk-".to_string(),
            concurrency: 48,
            nodes: 4,
            seed: 1,
            timeout: Duration::from_secs(3600),
        }
    }
}

/// What was created and how fast.
#[derive(Debug, Clone, Default)]
pub struct BulkReport {
    /// Pods running.
    pub pods: usize,
    /// Deployments created.
    pub deployments: usize,
    /// Namespaces used.
    pub namespaces: usize,
    /// From the first Deployment created to the last pod running.
    pub pod_elapsed: Duration,
    /// Total time.
    pub elapsed: Duration,
    /// Pods per second over `pod_elapsed`.
    pub pods_per_second: f64,
    /// Mean size of a stored pod as the server returns it (JSON bytes, managedFields included).
    pub mean_pod_bytes: usize,
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

/// Populates the cluster, spreading requests over `clients` (several connection pools help the
/// server use its cores); `progress` is called with the number of pods running so far.
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
    let nodes = spec.nodes.max(1);
    // The Deployments are spread round-robin: a node holds at most this many of their pods.
    let per_node = n_dep.div_ceil(nodes as usize) * spec.pods.div_ceil(n_dep) + 16;
    let node_cfg = SimConfig {
        nodes,
        node_prefix: "bulk-node-".to_string(),
        node_cpu: (per_node as f64 * 0.35 * 1.2).ceil().max(8.0),
        node_memory: (per_node as f64 * 384.0 * 1.2 * 1024.0 * 1024.0).max(32.0 * 1024.0 * 1024.0 * 1024.0),
        ..SimConfig::default()
    };
    crate::kubelet::ensure_nodes_with_pods(client, &node_cfg, per_node).await?;

    // Count running pods from a watch, so the Deployments' progress is seen as it happens.
    let running = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = {
        let running = running.clone();
        let api: Api<Pod> = Api::all(client.clone());
        let cfg = kube::runtime::watcher::Config::default().labels(BULK_LABEL);
        tokio::spawn(async move {
            let mut seen: HashSet<(String, String)> = HashSet::new();
            let stream = kube::runtime::watcher::watcher(api, cfg).default_backoff();
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                let pods = match ev {
                    Ok(
                        kube::runtime::watcher::Event::Apply(p) | kube::runtime::watcher::Event::InitApply(p),
                    ) => vec![p],
                    _ => continue,
                };
                for p in pods {
                    if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                        && seen.insert((p.namespace().unwrap_or_default(), p.name_any()))
                    {
                        running.store(seen.len(), Ordering::Relaxed);
                    }
                }
            }
        })
    };

    let pod_start = Instant::now();
    let node_prefix = &node_cfg.node_prefix;
    let created = futures::stream::iter(0..n_dep)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            let ns = namespaces[i % n_ns].clone();
            async move {
                let name = format!("svc-{i}");
                let pods = spec.pods / n_dep + usize::from(i < spec.pods % n_dep);
                let mut tmpl = template(&ns, &name, i);
                if let Some(s) = tmpl.spec.as_mut() {
                    s.node_name = Some(format!("{node_prefix}{}", i % nodes as usize + 1));
                }
                let mut sel = bulk_labels();
                sel.insert("app".into(), name.clone());
                let d = Deployment {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(ns.clone()),
                        labels: tmpl.metadata.as_ref().and_then(|m| m.labels.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(DeploymentSpec {
                        replicas: Some(pods as i32),
                        selector: LabelSelector {
                            match_labels: Some(sel),
                            match_expressions: None,
                        },
                        template: tmpl,
                        ..DeploymentSpec::default()
                    }),
                    status: None,
                };
                create_ignore_exists(&Api::namespaced(client, &ns), &d).await?;
                Ok::<(), Error>(())
            }
        })
        .buffer_unordered(spec.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    if let Some(e) = created.into_iter().find_map(|r| r.err()) {
        counter.abort();
        return Err(e);
    }
    info!(
        deployments = n_dep,
        namespaces = namespaces.len(),
        "bulk: Deployments created; waiting for their pods to run"
    );
    let deadline = Instant::now() + spec.timeout;
    loop {
        let n = running.load(Ordering::Relaxed);
        progress(n);
        if n >= spec.pods {
            break;
        }
        if Instant::now() >= deadline {
            counter.abort();
            return Err(Error::Missing(format!(
                "bulk: only {n} of {} pods running after {:?}",
                spec.pods, spec.timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let pod_elapsed = pod_start.elapsed();
    counter.abort();

    // The size of a stored pod, from a sample.
    let mut bytes = 0;
    let mut sampled = 0;
    let mut rng = SplitMix64::new(spec.seed ^ 0xb01c);
    for _ in 0..8 {
        let i = (rng.next_u64() % n_dep as u64) as usize;
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespaces[i % n_ns]);
        let lp = kube::api::ListParams::default()
            .labels(&format!("app=svc-{i}"))
            .limit(1);
        if let Some(p) = api.list(&lp).await?.items.into_iter().next() {
            bytes += serde_json::to_vec(&p).map(|v| v.len()).unwrap_or(0);
            sampled += 1;
        }
    }
    let pods = running.load(Ordering::Relaxed);
    Ok(BulkReport {
        pods,
        deployments: n_dep,
        namespaces: namespaces.len(),
        pod_elapsed,
        elapsed: start.elapsed(),
        pods_per_second: pods as f64 / pod_elapsed.as_secs_f64().max(1e-9),
        mean_pod_bytes: bytes.checked_div(sampled).unwrap_or(0),
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
