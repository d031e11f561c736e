//! Kubelet behaviour (resize, OOM) and usage metrics against the real test API server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, ResourceExt};
use lazyscale_sim::load::{CpuProfile, LoadProfile, MemoryProfile};
use lazyscale_sim::metrics::pod_metrics_resource;
use lazyscale_sim::units::{Bytes, Cpu, parse_quantity};
use lazyscale_sim::{SimConfig, Simulator, WorkloadRef};
use serde_json::json;

fn condition<'a>(p: &'a Pod, t: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
}

fn status_cpu_request(p: &Pod) -> Option<String> {
    let cs = &p.status.as_ref()?.container_statuses.as_ref()?[0];
    Some(cs.resources.as_ref()?.requests.as_ref()?.get("cpu")?.0.clone())
}

async fn resize_cpu(api: &Api<Pod>, name: &str, cpu: &str) {
    let patch = json!({"spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": cpu}}}]}});
    api.patch_resize(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
}

async fn resize_cpu_and_limit(api: &Api<Pod>, name: &str, cpu: &str) {
    let patch = json!({"spec": {"containers": [{"name": "app", "resources": {
        "requests": {"cpu": cpu}, "limits": {"cpu": cpu}}}]}});
    api.patch_resize(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
}

async fn one_ready_pod(client: &kube::Client, ns: &str, app: &str) -> Pod {
    wait_for(30, "a ready pod", || async {
        let p = pods(client, ns, &format!("app={app}")).await;
        (p.len() == 1 && running_ready(&p[0])).then(|| p[0].clone())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn resize_is_applied_deferred_infeasible_or_in_progress() {
    let env = lazyscale_testenv::TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace().await;
    let sim = start(&client, &ns).await;
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // Immediate: status resources follow the spec.
    create_deployment(&client, &deployment(&ns, "imm", 1, "").unwrap()).await;
    let p = one_ready_pod(&client, &ns, "imm").await;
    resize_cpu(&api, &p.name_any(), "200m").await;
    wait_for(20, "resize applied", || async {
        let p = api.get(&p.name_any()).await.unwrap();
        (status_cpu_request(&p).as_deref() == Some("200m")
            && condition(&p, "PodResizePending").is_none()
            && p.status.as_ref().unwrap().observed_generation == p.metadata.generation)
            .then_some(())
    })
    .await;

    // Deferred (asked through the template annotation), then released by the workload setting.
    let ann = "      annotations: {sim.lazyscale.io/resize: deferred}";
    create_deployment(&client, &deployment(&ns, "def", 1, ann).unwrap()).await;
    let p = one_ready_pod(&client, &ns, "def").await;
    resize_cpu(&api, &p.name_any(), "300m").await;
    let c = wait_for(20, "PodResizePending Deferred", || async {
        let p = api.get(&p.name_any()).await.unwrap();
        condition(&p, "PodResizePending").cloned()
    })
    .await;
    assert_eq!(c.reason.as_deref(), Some("Deferred"));
    assert_eq!(
        status_cpu_request(&api.get(&p.name_any()).await.unwrap()).as_deref(),
        Some("100m")
    );

    // Infeasible: more CPU than the simulator's node model has (8 cores). Above the node's allocatable
    // (32) the API server itself refuses the resize with 403.
    create_deployment(&client, &deployment(&ns, "inf", 1, "").unwrap()).await;
    let p = one_ready_pod(&client, &ns, "inf").await;
    // (The API server rejects a request above the limit: raise both.)
    resize_cpu_and_limit(&api, &p.name_any(), "16").await;
    let c = wait_for(20, "PodResizePending Infeasible", || async {
        let p = api.get(&p.name_any()).await.unwrap();
        condition(&p, "PodResizePending").cloned()
    })
    .await;
    assert_eq!(c.reason.as_deref(), Some("Infeasible"));

    // In progress for 2 s, then applied.
    let ann =
        "      annotations: {sim.lazyscale.io/resize: in-progress, sim.lazyscale.io/resize-duration: 2s}";
    create_deployment(&client, &deployment(&ns, "prog", 1, ann).unwrap()).await;
    let p = one_ready_pod(&client, &ns, "prog").await;
    resize_cpu(&api, &p.name_any(), "250m").await;
    wait_for(10, "PodResizeInProgress", || async {
        let p = api.get(&p.name_any()).await.unwrap();
        (condition(&p, "PodResizeInProgress").is_some() && status_cpu_request(&p).as_deref() == Some("100m"))
            .then_some(())
    })
    .await;
    wait_for(20, "in-progress resize applied", || async {
        let p = api.get(&p.name_any()).await.unwrap();
        (condition(&p, "PodResizeInProgress").is_none() && status_cpu_request(&p).as_deref() == Some("250m"))
            .then_some(())
    })
    .await;
    let _ = sim.workload(&WorkloadRef::deployment(&ns, "def"));
    sim.shutdown().await;
}

fn usage(obj: &DynamicObject) -> Vec<(String, f64, f64)> {
    obj.data["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                parse_quantity(c["usage"]["cpu"].as_str().unwrap()).unwrap(),
                parse_quantity(c["usage"]["memory"].as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_follow_the_profile_and_scaling_and_oom_kills() {
    let env = lazyscale_testenv::TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace().await;
    init_tracing();
    let sim = Simulator::start(
        client.clone(),
        SimConfig {
            namespaces: vec![ns.clone()],
            metrics_interval: Duration::from_secs(3600),
            resync: Duration::from_secs(5),
            ..SimConfig::default()
        },
    )
    .await
    .unwrap();
    const MI: f64 = 1024.0 * 1024.0;
    let w = WorkloadRef::deployment(&ns, "svc");
    sim.set_load(
        &w,
        LoadProfile {
            cpu: CpuProfile::Constant { value: Cpu(1.0) },
            memory: MemoryProfile {
                base: Bytes(40.0 * MI),
                per_cpu: Bytes(20.0 * MI),
                leak: Bytes(0.0),
            },
            noise: 0.0,
        },
    );
    create_deployment(&client, &deployment(&ns, "svc", 2, "").unwrap()).await;
    wait_for(30, "2 ready", || async {
        let p = pods(&client, &ns, "app=svc").await;
        (p.len() == 2 && p.iter().all(running_ready)).then_some(())
    })
    .await;
    let pm: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &pod_metrics_resource());
    assert_eq!(sim.tick_metrics().await.unwrap(), 2);
    let list = pm.list(&Default::default()).await.unwrap().items;
    assert_eq!(list.len(), 2);
    for m in &list {
        let u = usage(m);
        assert!((u[0].1 - 0.5).abs() < 1e-6, "{u:?}");
        assert!((u[0].2 - 50.0 * MI).abs() < 2048.0, "{u:?}");
        assert!(m.data["timestamp"].is_string() && m.data["window"].is_string());
        assert_eq!(m.labels().get("app").map(String::as_str), Some("svc"));
    }
    // Four ready replicas share the same load: a quarter each.
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns)
        .patch_scale(
            "svc",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    wait_for(30, "4 ready", || async {
        let p = pods(&client, &ns, "app=svc").await;
        (p.len() == 4 && p.iter().all(running_ready)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sim.tick_metrics().await.unwrap(), 4);
    for m in pm.list(&Default::default()).await.unwrap().items {
        let u = usage(&m);
        assert!((u[0].1 - 0.25).abs() < 1e-6, "{u:?}");
    }
    // Memory above the 128Mi limit: OOM kill, restartCount + 1.
    sim.set_load(
        &w,
        LoadProfile {
            cpu: CpuProfile::Constant { value: Cpu(1.0) },
            memory: MemoryProfile {
                base: Bytes(200.0 * MI),
                per_cpu: Bytes(0.0),
                leak: Bytes(0.0),
            },
            noise: 0.0,
        },
    );
    sim.tick_metrics().await.unwrap();
    let p = wait_for(10, "OOMKilled", || async {
        let p = pods(&client, &ns, "app=svc").await;
        let killed = p.iter().all(|p| {
            let cs = &p.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
            cs.restart_count == 1
                && cs
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .and_then(|t| t.reason.as_deref())
                    == Some("OOMKilled")
        });
        killed.then_some(p)
    })
    .await;
    let t = p[0].status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0]
        .last_state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(t.exit_code, 137);
    // PodMetrics of deleted pods disappear.
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns)
        .patch_scale(
            "svc",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    wait_for(30, "1 pod", || async {
        (pods(&client, &ns, "app=svc").await.len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sim.set_load(&w, LoadProfile::default());
    sim.tick_metrics().await.unwrap();
    assert_eq!(pm.list(&Default::default()).await.unwrap().items.len(), 1);
    let nodes: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource {
            plural: "nodes".into(),
            kind: "NodeMetrics".into(),
            ..pod_metrics_resource()
        },
    );
    let node = pods(&client, &ns, "app=svc").await[0]
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap();
    assert!(nodes.get(&node).await.is_ok(), "no NodeMetrics for {node}");
    sim.shutdown().await;
}
