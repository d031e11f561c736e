//! The scheduler and kubelet of a few simulated nodes: pods are bound to the least-loaded node,
//! become Running and Ready after a configurable delay, report `containerStatuses[].resources`
//! mirroring the spec, answer in-place resizes (applied, `PodResizeInProgress`, or
//! `PodResizePending` with reason `Deferred`/`Infeasible`), and are OOM-killed when their simulated
//! memory exceeds the limit (`lastState.terminated.reason=OOMKilled`, `restartCount` + 1).
//! Pods whose controller owner is gone are deleted (the garbage collector's part).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo, Pod, PodCondition,
    PodIP, PodStatus, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::{debug, info};

use crate::controllers::{controller_of, delete_ignore_missing, is_conflict, now, owner_gone};
use crate::hash::fnv32a;
use crate::sim::{Shared, SimConfig};
use crate::units::parse_quantity;
use crate::{RESIZE_ANNOTATION, RESIZE_DURATION_ANNOTATION, ResizeMode, Result};

/// Field manager of kubelet writes.
pub const KUBELET: &str = "kubelet";
/// Field manager of scheduler writes.
pub const SCHEDULER: &str = "kube-scheduler";

/// Mutable kubelet bookkeeping.
pub(crate) struct KubeletState {
    pub(crate) nodes: Vec<String>,
    node_pods: HashMap<String, usize>,
    first_seen: HashMap<String, Instant>,
    next_ip: u32,
    /// ControllerRevisions already created (namespace, name).
    pub(crate) revisions: HashSet<(String, String)>,
}

impl KubeletState {
    pub(crate) fn new(cfg: &SimConfig) -> Self {
        let nodes: Vec<String> = (1..=cfg.nodes.max(1))
            .map(|i| format!("{}{i}", cfg.node_prefix))
            .collect();
        Self {
            node_pods: nodes.iter().map(|n| (n.clone(), 0)).collect(),
            nodes,
            first_seen: HashMap::new(),
            next_ip: 0,
            revisions: HashSet::new(),
        }
    }
}

fn params<T: Default>(f: impl FnOnce(&mut T)) -> T {
    let mut p = T::default();
    f(&mut p);
    p
}

fn kubelet_patch() -> PatchParams {
    params(|p: &mut PatchParams| p.field_manager = Some(KUBELET.to_string()))
}

pub(crate) fn node_ip(cfg: &SimConfig, node: &str) -> String {
    let idx = node
        .strip_prefix(&cfg.node_prefix)
        .and_then(|i| i.parse::<u32>().ok())
        .unwrap_or(0);
    format!("172.18.0.{}", (idx % 250) + 2)
}

/// Creates the simulated nodes (Ready, with capacity) if they do not exist.
pub(crate) async fn ensure_nodes(client: &Client, cfg: &SimConfig) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let cpu = Quantity(format!("{}", cfg.node_cpu));
    let mem = Quantity(format!("{}Ki", (cfg.node_memory / 1024.0) as u64));
    for i in 1..=cfg.nodes.max(1) {
        let name = format!("{}{i}", cfg.node_prefix);
        let labels: BTreeMap<String, String> = [
            ("kubernetes.io/hostname", name.as_str()),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "amd64"),
            ("node.kubernetes.io/instance-type", "sim.large"),
            (
                "topology.kubernetes.io/zone",
                ["zone-a", "zone-b", "zone-c"][(i as usize - 1) % 3],
            ),
            ("type", "kwok"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        let pp = params(|p: &mut PostParams| p.field_manager = Some(KUBELET.to_string()));
        match api.create(&pp, &node).await {
            Ok(_) => {}
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
        let resources: BTreeMap<String, Quantity> = [
            ("cpu".to_string(), cpu.clone()),
            ("memory".to_string(), mem.clone()),
            ("pods".to_string(), Quantity("110".to_string())),
        ]
        .into();
        let status = NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    address: node_ip(cfg, &name),
                    type_: "InternalIP".to_string(),
                },
                NodeAddress {
                    address: name.clone(),
                    type_: "Hostname".to_string(),
                },
            ]),
            allocatable: Some(resources.clone()),
            capacity: Some(resources),
            conditions: Some(vec![NodeCondition {
                last_heartbeat_time: Some(now()),
                last_transition_time: Some(now()),
                message: Some("kubelet is posting ready status".to_string()),
                reason: Some("KubeletReady".to_string()),
                status: "True".to_string(),
                type_: "Ready".to_string(),
            }]),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".to_string(),
                container_runtime_version: "containerd://2.0.0".to_string(),
                kubelet_version: "v1.33.0-lazyscale-sim".to_string(),
                kube_proxy_version: String::new(),
                operating_system: "linux".to_string(),
                os_image: "lazyscale-sim".to_string(),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        };
        api.patch_status(
            &name,
            &kubelet_patch(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await?;
    }
    Ok(())
}

/// The QoS class Kubernetes derives from a pod's containers.
pub fn qos_class(containers: &[Container]) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let r = c.resources.clone().unwrap_or_default();
        let req = r.requests.unwrap_or_default();
        let lim = r.limits.unwrap_or_default();
        if !req.is_empty() || !lim.is_empty() {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let l = lim.get(res);
            let q = req.get(res).or(l);
            if l.is_none() || q.map(|q| parse_quantity(&q.0)) != l.map(|l| parse_quantity(&l.0)) {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Resources of a container as its status reports them (requests default to limits).
fn effective_resources(c: &Container) -> ResourceRequirements {
    let r = c.resources.clone().unwrap_or_default();
    let mut requests = r.requests.clone().unwrap_or_default();
    for (k, v) in r.limits.clone().unwrap_or_default() {
        requests.entry(k).or_insert(v);
    }
    ResourceRequirements {
        claims: None,
        limits: r.limits.filter(|l| !l.is_empty()),
        requests: (!requests.is_empty()).then_some(requests),
    }
}

fn same_resources(a: &ResourceRequirements, b: &ResourceRequirements) -> bool {
    let norm = |m: &Option<BTreeMap<String, Quantity>>| -> BTreeMap<String, Option<u64>> {
        m.clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, parse_quantity(&v.0).map(|x| (x * 1e9).round() as u64)))
            .collect()
    };
    norm(&a.requests) == norm(&b.requests) && norm(&a.limits) == norm(&b.limits)
}

fn cond(type_: &str, status: &str, prev: Option<&PodStatus>) -> PodCondition {
    let old = prev
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_ && c.status == status));
    match old {
        Some(c) => c.clone(),
        None => PodCondition {
            last_probe_time: None,
            last_transition_time: Some(now()),
            message: None,
            observed_generation: None,
            reason: None,
            status: status.to_string(),
            type_: type_.to_string(),
        },
    }
}

fn container_id(pod_uid: &str, name: &str, restarts: i32) -> String {
    let h = fnv32a(format!("{pod_uid}/{name}/{restarts}").as_bytes());
    let h2 = fnv32a(format!("{name}/{restarts}/{pod_uid}").as_bytes());
    format!("containerd://{h:08x}{h2:08x}{h:08x}{h2:08x}{h:08x}{h2:08x}{h:08x}{h2:08x}")
}

fn image_id(image: &str) -> String {
    let h = fnv32a(image.as_bytes());
    let repo = image.split(':').next().unwrap_or(image);
    format!("{repo}@sha256:{h:08x}{:056x}", u128::from(h) * 0x9e37_79b9)
}

/// Builds the status of a pod that runs (or is being started, when `running` is false).
pub(crate) fn build_status(pod: &Pod, node_ip: &str, pod_ip: &str, running: bool) -> PodStatus {
    let prev = pod.status.as_ref();
    let spec = pod.spec.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let started = prev.and_then(|s| s.start_time.clone()).unwrap_or_else(now);
    let ready = if running { "True" } else { "False" };
    let mut conditions = vec![
        cond("PodReadyToStartContainers", ready, prev),
        cond("Initialized", "True", prev),
        cond("Ready", ready, prev),
        cond("ContainersReady", ready, prev),
        cond("PodScheduled", "True", prev),
    ];
    if !running {
        for c in conditions.iter_mut().filter(|c| c.status == "False") {
            c.reason = Some("ContainersNotReady".to_string());
        }
    }
    let statuses = spec
        .containers
        .iter()
        .map(|c| {
            let prev_cs = prev
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.iter().find(|s| s.name == c.name));
            let restarts = prev_cs.map_or(0, |s| s.restart_count);
            let res = effective_resources(c);
            ContainerStatus {
                allocated_resources: res.requests.clone(),
                container_id: running.then(|| container_id(&uid, &c.name, restarts)),
                image: c.image.clone().unwrap_or_default(),
                image_id: if running {
                    image_id(c.image.as_deref().unwrap_or_default())
                } else {
                    String::new()
                },
                last_state: prev_cs.and_then(|s| s.last_state.clone()),
                name: c.name.clone(),
                ready: running,
                resources: Some(res),
                restart_count: restarts,
                started: Some(running),
                state: Some(if running {
                    prev_cs
                        .and_then(|s| s.state.clone())
                        .filter(|s| s.running.is_some())
                        .unwrap_or(ContainerState {
                            running: Some(ContainerStateRunning {
                                started_at: Some(now()),
                            }),
                            ..ContainerState::default()
                        })
                } else {
                    ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some("ContainerCreating".to_string()),
                            message: None,
                        }),
                        ..ContainerState::default()
                    }
                }),
                ..ContainerStatus::default()
            }
        })
        .collect();
    PodStatus {
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        host_ip: Some(node_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: node_ip.to_string(),
        }]),
        observed_generation: pod.metadata.generation,
        phase: Some(if running { "Running" } else { "Pending" }.to_string()),
        pod_ip: running.then(|| pod_ip.to_string()),
        pod_ips: running.then(|| {
            vec![PodIP {
                ip: pod_ip.to_string(),
            }]
        }),
        qos_class: Some(qos_class(&spec.containers).to_string()),
        start_time: Some(started),
        ..PodStatus::default()
    }
}

async fn write_status(sh: &Shared, pod: &Pod, status: &PodStatus) -> Result<()> {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(sh.client.clone(), &ns);
    let out = api
        .patch_status(
            &pod.name_any(),
            &kubelet_patch(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await?;
    sh.pods.note_write(out);
    Ok(())
}

fn pick_node(sh: &Shared) -> Option<String> {
    let mut k = sh
        .kubelet
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let node = k
        .nodes
        .iter()
        .min_by_key(|n| k.node_pods.get(*n).copied().unwrap_or(0))?
        .clone();
    *k.node_pods.entry(node.clone()).or_default() += 1;
    Some(node)
}

fn pod_ip(sh: &Shared, node: &str, pod: &Pod) -> String {
    if let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) {
        return ip;
    }
    let mut k = sh
        .kubelet
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let idx = k.nodes.iter().position(|n| n == node).unwrap_or(0);
    k.next_ip = k.next_ip.wrapping_add(1);
    let n = k.next_ip;
    format!("10.244.{}.{}", idx % 250, (n % 250) + 2)
}

/// The resize mode that applies to a pod: its annotation, else its workload's setting.
fn resize_mode(sh: &Shared, pod: &Pod) -> ResizeMode {
    let ann = pod.annotations();
    if let Some(m) = ann.get(RESIZE_ANNOTATION).and_then(|v| {
        let d = ann
            .get(RESIZE_DURATION_ANNOTATION)
            .and_then(|d| crate::units::parse_duration(d));
        ResizeMode::from_annotation(v, d)
    }) {
        return m;
    }
    sh.workload_of(pod)
        .map(|w| sh.settings(&w).resize)
        .unwrap_or_default()
}

/// Reconciles one pod: garbage collection, scheduling, start-up, resize.
pub(crate) async fn reconcile(sh: &Shared, ns: &str, name: &str) -> Result<Option<Duration>> {
    let Some(pod) = sh.pods.get(ns, name) else {
        return Ok(None);
    };
    if pod.metadata.deletion_timestamp.is_some() || !sh.in_scope(pod.as_ref()) {
        return Ok(None);
    }
    let pod_api: Api<Pod> = Api::namespaced(sh.client.clone(), ns);
    // Garbage collection of pods whose controller is gone.
    if let Some(owner) = controller_of(&pod.metadata) {
        let gone = match owner.kind.as_str() {
            "ReplicaSet" => {
                sh.replicasets
                    .get(ns, &owner.name)
                    .and_then(|r| r.metadata.uid.clone())
                    != Some(owner.uid.clone())
                    && owner_gone(&Api::<ReplicaSet>::namespaced(sh.client.clone(), ns), owner).await?
            }
            "StatefulSet" => {
                sh.statefulsets
                    .get(ns, &owner.name)
                    .and_then(|r| r.metadata.uid.clone())
                    != Some(owner.uid.clone())
                    && owner_gone(&Api::<StatefulSet>::namespaced(sh.client.clone(), ns), owner).await?
            }
            _ => false,
        };
        if gone {
            info!(pod = %name, owner = %owner.name, "owner gone, deleting pod");
            delete_ignore_missing(&pod_api, name).await?;
            sh.pods.note_delete(ns, name);
            return Ok(None);
        }
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
        return Ok(None);
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let node = match pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
        Some(n) => n,
        None => {
            let Some(node) = pick_node(sh) else {
                return Ok(None);
            };
            debug!(pod = %name, node = %node, "binding");
            let pp = params(|p: &mut PatchParams| p.field_manager = Some(SCHEDULER.to_string()));
            let out = pod_api
                .patch(name, &pp, &Patch::Merge(&json!({"spec": {"nodeName": node}})))
                .await?;
            sh.pods.note_write(out.clone());
            let ip = node_ip(&sh.cfg, &node);
            write_status(sh, &out, &build_status(&out, &ip, "", false)).await?;
            node
        }
    };
    let known_node = sh
        .kubelet
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .nodes
        .contains(&node);
    if !known_node {
        return Ok(None);
    }
    let Some(pod) = sh.pods.get(ns, name) else {
        return Ok(None);
    };
    let host_ip = node_ip(&sh.cfg, &node);
    if phase.as_deref() != Some("Running") {
        let delay = sh
            .workload_of(&pod)
            .and_then(|w| sh.settings(&w).ready_delay)
            .unwrap_or(sh.cfg.ready_delay);
        let first = *sh
            .kubelet
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .first_seen
            .entry(uid.clone())
            .or_insert_with(Instant::now);
        let waited = first.elapsed();
        if waited < delay {
            if pod.status.as_ref().and_then(|s| s.phase.as_deref()).is_none() {
                write_status(sh, &pod, &build_status(&pod, &host_ip, "", false)).await?;
            }
            return Ok(Some(delay - waited));
        }
        let ip = pod_ip(sh, &node, &pod);
        debug!(pod = %name, "running");
        write_status(sh, &pod, &build_status(&pod, &host_ip, &ip, true)).await?;
        sh.kubelet
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .first_seen
            .remove(&uid);
        return Ok(None);
    }
    handle_resize(sh, &pod).await
}

/// Compares spec and status resources and answers a pending resize.
async fn handle_resize(sh: &Shared, pod: &Pod) -> Result<Option<Duration>> {
    let Some(status) = pod.status.clone() else {
        return Ok(None);
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let statuses = status.container_statuses.clone().unwrap_or_default();
    let differs = spec.containers.iter().any(|c| {
        let want = effective_resources(c);
        statuses
            .iter()
            .find(|s| s.name == c.name)
            .and_then(|s| s.resources.as_ref())
            .is_none_or(|have| !same_resources(have, &want))
    });
    let conditions = status.conditions.clone().unwrap_or_default();
    let resize_conds = |c: &PodCondition| c.type_ == "PodResizePending" || c.type_ == "PodResizeInProgress";
    let has_resize_cond = conditions.iter().any(resize_conds);
    let gen_stale = status.observed_generation != pod.metadata.generation;
    if !differs {
        if has_resize_cond || gen_stale {
            let mut st = status.clone();
            st.conditions = Some(conditions.into_iter().filter(|c| !resize_conds(c)).collect());
            st.observed_generation = pod.metadata.generation;
            write_status(sh, pod, &st).await?;
        }
        return Ok(None);
    }
    // Infeasible when the requests exceed a node's capacity, whatever the mode.
    let total = |res: &str| -> f64 {
        spec.containers
            .iter()
            .filter_map(|c| effective_resources(c).requests)
            .filter_map(|r| r.get(res).and_then(|q| parse_quantity(&q.0)))
            .sum()
    };
    let too_big = total("cpu") > sh.cfg.node_cpu || total("memory") > sh.cfg.node_memory;
    let mode = if too_big {
        ResizeMode::Infeasible
    } else {
        resize_mode(sh, pod)
    };
    let mut keep: Vec<PodCondition> = conditions.iter().filter(|c| !resize_conds(c)).cloned().collect();
    let existing = |t: &str| conditions.iter().find(|c| c.type_ == t).cloned();
    let pending = |reason: &str, message: String| -> PodCondition {
        match existing("PodResizePending") {
            Some(c) if c.reason.as_deref() == Some(reason) => c,
            _ => PodCondition {
                last_probe_time: None,
                last_transition_time: Some(now()),
                message: Some(message),
                observed_generation: pod.metadata.generation,
                reason: Some(reason.to_string()),
                status: "True".to_string(),
                type_: "PodResizePending".to_string(),
            },
        }
    };
    let (new_cond, apply, requeue) = match mode {
        ResizeMode::Immediate => (None, true, None),
        ResizeMode::Deferred => (
            Some(pending(
                "Deferred",
                "Node didn't have enough resource: the resize is deferred".to_string(),
            )),
            false,
            None,
        ),
        ResizeMode::Infeasible => (
            Some(pending(
                "Infeasible",
                "Node didn't have enough capacity for the requested resources".to_string(),
            )),
            false,
            None,
        ),
        ResizeMode::InProgress { duration } => match existing("PodResizeInProgress") {
            Some(c) => {
                let since = c
                    .last_transition_time
                    .as_ref()
                    .map_or_else(k8s_openapi::jiff::Timestamp::now, |t| t.0);
                let elapsed = Duration::from_secs_f64(crate::controllers::seconds_since(since).max(0.0));
                if elapsed >= duration.0 {
                    (None, true, None)
                } else {
                    (Some(c), false, Some(duration.0 - elapsed))
                }
            }
            None => (
                Some(PodCondition {
                    last_probe_time: None,
                    last_transition_time: Some(now()),
                    message: None,
                    observed_generation: pod.metadata.generation,
                    reason: None,
                    status: "True".to_string(),
                    type_: "PodResizeInProgress".to_string(),
                }),
                false,
                Some(duration.0.max(Duration::from_millis(100))),
            ),
        },
    };
    let mut st = status.clone();
    if apply {
        info!(pod = %pod.name_any(), "resize applied");
        let cs = statuses
            .into_iter()
            .map(|mut s| {
                if let Some(c) = spec.containers.iter().find(|c| c.name == s.name) {
                    let r = effective_resources(c);
                    s.allocated_resources = r.requests.clone();
                    s.resources = Some(r);
                }
                s
            })
            .collect();
        st.container_statuses = Some(cs);
        st.observed_generation = pod.metadata.generation;
    }
    if let Some(c) = new_cond {
        keep.push(c);
    }
    st.conditions = Some(keep);
    if pod.status.as_ref() != Some(&st) {
        write_status(sh, pod, &st).await?;
    }
    Ok(requeue)
}

/// OOM-kills a container: records `lastState.terminated` (OOMKilled, exit code 137), bumps
/// `restartCount` and restarts it at once.
pub(crate) async fn oom_kill(sh: &Shared, pod: &Pod, container: &str) -> Result<()> {
    let Some(mut st) = pod.status.clone() else {
        return Ok(());
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let t = now();
    if let Some(cs) = st.container_statuses.as_mut() {
        for s in cs.iter_mut().filter(|s| s.name == container) {
            let started = s
                .state
                .as_ref()
                .and_then(|st| st.running.as_ref())
                .and_then(|r| r.started_at.clone());
            s.last_state = Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    container_id: s.container_id.clone(),
                    exit_code: 137,
                    finished_at: Some(t.clone()),
                    message: None,
                    reason: Some("OOMKilled".to_string()),
                    signal: None,
                    started_at: started,
                }),
                ..ContainerState::default()
            });
            s.restart_count += 1;
            s.container_id = Some(container_id(&uid, &s.name, s.restart_count));
            s.state = Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(t.clone()),
                }),
                ..ContainerState::default()
            });
        }
    }
    info!(pod = %pod.name_any(), container, "OOM killed");
    write_status(sh, pod, &st).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(req: &[(&str, &str)], lim: &[(&str, &str)]) -> Container {
        let m = |v: &[(&str, &str)]| {
            (!v.is_empty()).then(|| {
                v.iter()
                    .map(|(k, q)| (k.to_string(), Quantity(q.to_string())))
                    .collect()
            })
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                claims: None,
                limits: m(lim),
                requests: m(req),
            }),
            ..Container::default()
        }
    }

    #[test]
    fn qos() {
        assert_eq!(qos_class(&[container(&[], &[])]), "BestEffort");
        assert_eq!(qos_class(&[container(&[("cpu", "100m")], &[])]), "Burstable");
        assert_eq!(
            qos_class(&[container(&[], &[("cpu", "1"), ("memory", "1Gi")])]),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&[container(
                &[("cpu", "1000m"), ("memory", "1Gi")],
                &[("cpu", "1"), ("memory", "1Gi")]
            )]),
            "Guaranteed"
        );
    }

    #[test]
    fn status_mirrors_resources() {
        let mut pod = Pod::default();
        pod.metadata.uid = Some("u".into());
        pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            containers: vec![container(&[("cpu", "100m")], &[("memory", "128Mi")])],
            ..Default::default()
        });
        let st = build_status(&pod, "1.2.3.4", "10.0.0.1", true);
        let cs = &st.container_statuses.unwrap_or_default()[0];
        let r = cs.resources.clone().unwrap_or_default();
        assert_eq!(
            r.requests.unwrap_or_default().get("memory").map(|q| q.0.as_str()),
            Some("128Mi")
        );
        assert!(cs.ready);
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert!(same_resources(
            &effective_resources(&pod.spec.clone().unwrap_or_default().containers[0]),
            &ResourceRequirements {
                claims: None,
                limits: Some([("memory".to_string(), Quantity("134217728".into()))].into()),
                requests: Some(
                    [
                        ("cpu".to_string(), Quantity("0.1".into())),
                        ("memory".to_string(), Quantity("128Mi".into()))
                    ]
                    .into()
                ),
            }
        ));
    }
}
