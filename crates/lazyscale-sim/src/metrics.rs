//! Usage metrics: every interval, a metrics.k8s.io/v1beta1 PodMetrics object for every running pod
//! (and a NodeMetrics per simulated node), computed from the pod's workload [`LoadProfile`]. The
//! workload's CPU is shared by its ready replicas; each container gets a share proportional to its
//! requests; CPU is capped at the container's limit (throttling); memory above the limit triggers an
//! OOM kill in the kubelet. PodMetrics of pods that are gone are deleted.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::debug;

use crate::Result;
use crate::hash::fnv32a;
use crate::kubelet;
use crate::load::{LoadProfile, PodUsage};
use crate::objects::{is_not_found, pod_ready};
use crate::sim::{Shared, WorkloadRef};
use crate::units::{format_cpu_nanos, format_mem_ki, parse_quantity};

/// Field manager of metrics writes.
pub const METRICS_MANAGER: &str = "lazyscale-sim";

/// The metrics.k8s.io PodMetrics resource.
pub fn pod_metrics_resource() -> ApiResource {
    ApiResource {
        group: "metrics.k8s.io".to_string(),
        version: "v1beta1".to_string(),
        api_version: "metrics.k8s.io/v1beta1".to_string(),
        kind: "PodMetrics".to_string(),
        plural: "pods".to_string(),
    }
}

/// The metrics.k8s.io NodeMetrics resource.
pub fn node_metrics_resource() -> ApiResource {
    ApiResource {
        group: "metrics.k8s.io".to_string(),
        version: "v1beta1".to_string(),
        api_version: "metrics.k8s.io/v1beta1".to_string(),
        kind: "NodeMetrics".to_string(),
        plural: "nodes".to_string(),
    }
}

/// What the metrics writer remembers between rounds.
#[derive(Debug, Default)]
pub(crate) struct MetricsState {
    written: HashSet<(String, String)>,
}

fn quantity(c: &k8s_openapi::api::core::v1::Container, kind: &str, res: &str) -> Option<f64> {
    let r = c.resources.as_ref()?;
    let m = if kind == "limits" {
        r.limits.as_ref()
    } else {
        r.requests.as_ref().or(r.limits.as_ref())
    }?;
    m.get(res).and_then(|q| parse_quantity(&q.0))
}

/// Seconds a container has been running (since its last (re)start).
fn uptime(pod: &Pod, container: &str) -> f64 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == container))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.as_ref())
        .map_or(0.0, |t| crate::objects::seconds_since(t.0).max(0.0))
}

/// Usage of each container of a pod at `t` seconds, for a workload with `ready` ready replicas.
/// Without a profile, a pod uses 30 % of its CPU requests and 50 % of its memory requests.
/// `uptimes` gives each container's seconds since (re)start (for memory leaks).
pub fn container_usage(
    profile: Option<&LoadProfile>,
    pod: &Pod,
    t: f64,
    seed: u64,
    ready: u32,
    uptimes: &dyn Fn(&str) -> f64,
) -> Vec<(String, PodUsage)> {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    if containers.is_empty() {
        return Vec::new();
    }
    let weights = |res: &str| -> Vec<f64> {
        let w: Vec<f64> = containers
            .iter()
            .map(|c| quantity(c, "requests", res).unwrap_or(0.0))
            .collect();
        let sum: f64 = w.iter().sum();
        if sum > 0.0 {
            w.iter().map(|x| x / sum).collect()
        } else {
            vec![1.0 / containers.len() as f64; containers.len()]
        }
    };
    let (cw, mw) = (weights("cpu"), weights("memory"));
    let key = u64::from(fnv32a(pod.name_any().as_bytes()));
    containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let up = uptimes(&c.name);
            let (cpu, mem) = match profile {
                Some(p) => {
                    let u = p.pod_usage(t, seed, ready, 0.0, key);
                    (u.cpu * cw[i], mw[i] * (u.memory + p.memory.leak.0 * up))
                }
                None => (
                    0.3 * quantity(c, "requests", "cpu").unwrap_or(0.01),
                    0.5 * quantity(c, "requests", "memory").unwrap_or(64.0 * 1024.0 * 1024.0),
                ),
            };
            let cpu = match quantity(c, "limits", "cpu") {
                Some(l) => cpu.min(l),
                None => cpu,
            };
            (c.name.clone(), PodUsage { cpu, memory: mem })
        })
        .collect()
}

fn running(sh: &Shared, p: &Pod) -> bool {
    sh.in_scope(p)
        && p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// One metrics round: writes PodMetrics and NodeMetrics, OOM-kills containers over their memory
/// limit, deletes PodMetrics of vanished pods. Returns the number of PodMetrics written.
pub(crate) async fn tick(sh: &Shared) -> Result<usize> {
    let mut state = sh.metrics_state.lock().await;
    let t = sh.elapsed();
    let pods = sh.pods.list(|p| running(sh, p));
    let nodes: std::collections::BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .collect();
    let mut ready: HashMap<WorkloadRef, u32> = HashMap::new();
    let mut owners = Vec::with_capacity(pods.len());
    for p in &pods {
        let w = sh.workload_of(p);
        if let Some(w) = &w
            && pod_ready(p)
        {
            *ready.entry(w.clone()).or_default() += 1;
        }
        owners.push(w);
    }
    let stamp = k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now())
        .to_string();
    let window = format!("{}s", sh.cfg.metrics_interval.as_secs().max(1));
    let mut objects = Vec::with_capacity(pods.len());
    let mut ooms = Vec::new();
    let mut node_usage: BTreeMap<String, PodUsage> = BTreeMap::new();
    let mut current = HashSet::new();
    for (p, w) in pods.iter().zip(&owners) {
        let settings = w.as_ref().map(|w| sh.settings(w)).unwrap_or_default();
        let n = w.as_ref().and_then(|w| ready.get(w)).copied().unwrap_or(1);
        let usage = container_usage(settings.load.as_ref(), p, t, sh.cfg.seed, n, &|c| uptime(p, c));
        let containers = p.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
        for (name, u) in &usage {
            if let Some(limit) = containers
                .iter()
                .find(|c| &c.name == name)
                .and_then(|c| quantity(c, "limits", "memory"))
                && u.memory > limit
            {
                ooms.push((p.clone(), name.clone()));
            }
        }
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            let e = node_usage.entry(node).or_default();
            for (_, u) in &usage {
                e.cpu += u.cpu;
                e.memory += u.memory;
            }
        }
        let ns = p.namespace().unwrap_or_default();
        current.insert((ns.clone(), p.name_any()));
        objects.push((
            ns.clone(),
            p.name_any(),
            json!({
                "apiVersion": "metrics.k8s.io/v1beta1",
                "kind": "PodMetrics",
                "metadata": {"name": p.name_any(), "namespace": ns, "labels": p.labels()},
                "timestamp": stamp,
                "window": window,
                "containers": usage.iter().map(|(name, u)| json!({
                    "name": name,
                    "usage": {"cpu": format_cpu_nanos(u.cpu), "memory": format_mem_ki(u.memory)},
                })).collect::<Vec<_>>(),
            }),
        ));
    }
    let pp = PatchParams::apply(METRICS_MANAGER).force();
    let ar = pod_metrics_resource();
    let written = objects.len();
    futures::stream::iter(objects)
        .map(|(ns, name, obj)| {
            let api: Api<DynamicObject> = Api::namespaced_with(sh.client.clone(), &ns, &ar);
            let pp = pp.clone();
            async move { api.patch(&name, &pp, &Patch::Apply(&obj)).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    let node_api: Api<DynamicObject> = Api::all_with(sh.client.clone(), &node_metrics_resource());
    for node in nodes {
        let u = node_usage.get(&node).copied().unwrap_or_default();
        let obj = json!({
            "apiVersion": "metrics.k8s.io/v1beta1",
            "kind": "NodeMetrics",
            "metadata": {"name": node},
            "timestamp": stamp,
            "window": window,
            "usage": {"cpu": format_cpu_nanos(u.cpu), "memory": format_mem_ki(u.memory)},
        });
        node_api.patch(&node, &pp, &Patch::Apply(&obj)).await?;
    }
    for (ns, name) in state.written.difference(&current) {
        let api: Api<DynamicObject> = Api::namespaced_with(sh.client.clone(), ns, &ar);
        match api.delete(name, &Default::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    state.written = current;
    drop(state);
    for (p, c) in ooms {
        kubelet::oom_kill(sh, &p, &c).await?;
    }
    debug!(pods = written, t, "metrics written");
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{CpuProfile, MemoryProfile};
    use crate::units::{Bytes, Cpu};
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn c(name: &str, cpu: &str, mem: &str, cpu_lim: Option<&str>) -> Container {
        Container {
            name: name.into(),
            resources: Some(ResourceRequirements {
                claims: None,
                requests: Some(
                    [
                        ("cpu".to_string(), Quantity(cpu.into())),
                        ("memory".to_string(), Quantity(mem.into())),
                    ]
                    .into(),
                ),
                limits: cpu_lim.map(|l| [("cpu".to_string(), Quantity(l.into()))].into()),
            }),
            ..Container::default()
        }
    }

    #[test]
    fn containers_share_by_requests_and_cpu_is_capped() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![
                    c("app", "300m", "300Mi", None),
                    c("side", "100m", "100Mi", Some("50m")),
                ],
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        let p = LoadProfile {
            cpu: CpuProfile::Constant { value: Cpu(2.0) },
            memory: MemoryProfile {
                base: Bytes(400.0),
                per_cpu: Bytes(0.0),
                leak: Bytes(0.0),
            },
            noise: 0.0,
        };
        let u = container_usage(Some(&p), &pod, 0.0, 1, 2, &|_| 0.0);
        assert_eq!(u[0].0, "app");
        assert!((u[0].1.cpu - 0.75).abs() < 1e-9);
        assert!((u[1].1.cpu - 0.05).abs() < 1e-9, "capped at the limit");
        assert!((u[0].1.memory - 300.0).abs() < 1e-9);
        assert!((u[1].1.memory - 100.0).abs() < 1e-9);
        let d = container_usage(None, &pod, 0.0, 1, 2, &|_| 0.0);
        assert!((d[0].1.cpu - 0.09).abs() < 1e-9);
    }
}
