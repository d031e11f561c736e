//! What a kubelet decides that kwok does not: the outcome of an in-place resize (applied,
//! `PodResizeInProgress`, or `PodResizePending` with reason `Deferred`/`Infeasible`, then
//! `containerStatuses[].resources` following the spec) and OOM kills when a container's simulated
//! memory exceeds its limit (`lastState.terminated.reason=OOMKilled`, `restartCount` + 1).
//! Scheduling, Running/Ready and deletion are kube-scheduler's and kwok's; garbage collection is
//! kube-controller-manager's. Optionally it adds kwok-managed nodes of its own ([`ensure_nodes`]).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, Node, NodeStatus, Pod,
    PodCondition, PodStatus, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::info;

use crate::hash::fnv32a;
use crate::objects::{is_conflict, now};
use crate::sim::{Shared, SimConfig};
use crate::units::parse_quantity;
use crate::{RESIZE_ANNOTATION, RESIZE_DURATION_ANNOTATION, ResizeMode, Result};

/// Field manager of kubelet writes.
pub const KUBELET: &str = "kubelet";
/// Field manager of scheduler writes.
pub const SCHEDULER: &str = "kube-scheduler";

fn params<T: Default>(f: impl FnOnce(&mut T)) -> T {
    let mut p = T::default();
    f(&mut p);
    p
}

fn kubelet_patch() -> PatchParams {
    params(|p: &mut PatchParams| p.field_manager = Some(KUBELET.to_string()))
}

/// Creates `cfg.nodes` kwok-managed nodes (`<node_prefix>1`, ...) with the configured capacity, if
/// they do not exist; kwok makes them Ready. The test control plane has nodes of its own, so the
/// default is none.
pub(crate) async fn ensure_nodes(client: &Client, cfg: &SimConfig) -> Result<()> {
    ensure_nodes_with_pods(client, cfg, 250).await
}

/// As [`ensure_nodes`], with room for `pods` pods per node.
pub(crate) async fn ensure_nodes_with_pods(client: &Client, cfg: &SimConfig, pods: usize) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let cpu = Quantity(format!("{}", cfg.node_cpu));
    let mem = Quantity(format!("{}Ki", (cfg.node_memory / 1024.0) as u64));
    for i in 1..=cfg.nodes {
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
                annotations: Some([(crate::KWOK_NODE_ANNOTATION.to_string(), "fake".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        let pp = params(|p: &mut PostParams| p.field_manager = Some(KUBELET.to_string()));
        match api.create(&pp, &node).await {
            Ok(_) => {}
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(e.into()),
        }
        let resources: BTreeMap<String, Quantity> = [
            ("cpu".to_string(), cpu.clone()),
            ("memory".to_string(), mem.clone()),
            ("pods".to_string(), Quantity(pods.to_string())),
        ]
        .into();
        let status = NodeStatus {
            allocatable: Some(resources.clone()),
            capacity: Some(resources),
            ..NodeStatus::default()
        };
        api.patch_status(
            &name,
            &kubelet_patch(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await?;
        // New nodes are tainted not-ready by admission; the node lifecycle controller that would lift
        // the taint does not run on the test control plane.
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"taints": null}})),
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

fn container_id(pod_uid: &str, name: &str, restarts: i32) -> String {
    let h = fnv32a(format!("{pod_uid}/{name}/{restarts}").as_bytes());
    let h2 = fnv32a(format!("{name}/{restarts}/{pod_uid}").as_bytes());
    format!("containerd://{h:08x}{h2:08x}{h:08x}{h2:08x}{h:08x}{h2:08x}{h:08x}{h2:08x}")
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

/// Reconciles one pod: answers a pending resize of a running pod.
pub(crate) async fn reconcile(sh: &Shared, ns: &str, name: &str) -> Result<Option<Duration>> {
    let Some(pod) = sh.pods.get(ns, name) else {
        return Ok(None);
    };
    if pod.metadata.deletion_timestamp.is_some() || !sh.in_scope(pod.as_ref()) {
        return Ok(None);
    }
    // kwok makes bound pods Running; their watch event brings them back here.
    if pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running") {
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
        ResizeMode::Error => (
            Some(match existing("PodResizeInProgress") {
                Some(c) if c.reason.as_deref() == Some("Error") => c,
                _ => PodCondition {
                    last_probe_time: None,
                    last_transition_time: Some(now()),
                    message: Some("the container runtime failed to resize the container".to_string()),
                    observed_generation: pod.metadata.generation,
                    reason: Some("Error".to_string()),
                    status: "True".to_string(),
                    type_: "PodResizeInProgress".to_string(),
                },
            }),
            false,
            None,
        ),
        ResizeMode::InProgress { duration } => match existing("PodResizeInProgress") {
            Some(c) => {
                let since = c
                    .last_transition_time
                    .as_ref()
                    .map_or_else(k8s_openapi::jiff::Timestamp::now, |t| t.0);
                let elapsed = Duration::from_secs_f64(crate::objects::seconds_since(since).max(0.0));
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
    fn effective_resources_default_requests_to_limits() {
        let c = container(&[("cpu", "100m")], &[("memory", "128Mi")]);
        assert!(same_resources(
            &effective_resources(&c),
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
