//! Vertical autoscaling end to end: the simulator runs a workload whose requests are far below its usage;
//! the agent recommends more, writes `status.vertical.target`, and pods created afterwards are patched by
//! the real API server calling the agent's webhook. Preview records and patches nothing; a DPA with
//! objectives and no vertical opt-in (`update.strategy` unset) is horizontal only (the mode matrix): its
//! new pods get the `autoscaler-id` annotation and no vertical values.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use lazyscale_testenv::{Server, ServerOptions, Simulated, constant_load, wait_for};
use serde_json::json;

use common::start_agent;
use lazyscale_testenv::fixtures::{dpa_api, webhook_configuration};
use lazyscale_testenv::install_crds;

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "x",
                    "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "2Gi"}}}]}}}}))
    .unwrap()
}

/// A vertical-only DPA (no objectives, `update.strategy: TriggerRollout`: running pods are replaced by the
/// Deployment controller, new pods get the values from the webhook).
fn dpa(name: &str, mode: &str) -> serde_json::Value {
    json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler", "metadata": {"name": name},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, "owner": "Local",
            "applyPolicy": {"mode": mode, "update": {"strategy": "TriggerRollout"}},
            "constraints": {"minReplicas": 2, "maxReplicas": 2}}})
}

/// Objectives and no `update.strategy`: horizontal only (replicas held at 2 by the bounds).
fn horizontal_dpa(name: &str) -> serde_json::Value {
    json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler", "metadata": {"name": name},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, "owner": "Local",
            "constraints": {"minReplicas": 2, "maxReplicas": 2},
            "objectives": [{"type": "PodResource", "podResource": {"name": "cpu", "value": {"type": "Utilization", "utilization": 70}}}]}})
}

fn cpu_millis(p: &Pod) -> u64 {
    let q = &p.spec.as_ref().unwrap().containers[0]
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap()["cpu"]
        .0;
    lazyscale_vertical::quantity::parse_millis(q).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn recommendations_rise_and_new_pods_are_patched_through_the_real_webhook_path() {
    let server = Server::start(ServerOptions::default()).unwrap();
    let client = server.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = "shop";
    let scene = Simulated::start(&client, ns).await.unwrap();
    for name in ["web", "preview", "plain"] {
        scene
            .deployment(&deployment(name), constant_load(1.0, 200.0))
            .await
            .unwrap();
    }
    let agent = start_agent(
        &server,
        &["--grace-period-seconds=2", "--vertical-period-seconds=1"],
    );
    let dpas = scene.dpas();
    scene.apply_dpa(&dpa("web", "Apply")).await.unwrap();
    scene.apply_dpa(&dpa("preview", "Preview")).await.unwrap();
    scene.apply_dpa(&horizontal_dpa("plain")).await.unwrap();

    // the recommendation rises far above the 50m request (2 ready pods share 1 core)
    for name in ["web", "preview"] {
        let target = wait_for(60, "a vertical target", || async {
            let d = dpas.get(name).await.ok()?;
            let t = d.data["status"]["vertical"]["target"].clone();
            t.is_object().then_some(t)
        })
        .await;
        let cpu =
            lazyscale_vertical::quantity::parse_millis(target["podCPURequest"].as_str().unwrap()).unwrap();
        assert!(
            cpu >= 400,
            "{name}: recommended {cpu}m for 500m of use per pod: {target}"
        );
        assert!(target["version"].is_string());
    }

    // the condition is written next to the target
    let web = dpas.get("web").await.unwrap();
    let conditions = web.data["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let able = conditions
        .iter()
        .find(|c| c["type"] == "VerticalAbleToRecommend")
        .expect("VerticalAbleToRecommend written");
    assert_eq!(able["status"], "True", "{able}");

    // the recommender's histograms are checkpointed next to the DPA, owned by it
    let cms = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), ns);
    let cm = wait_for(30, "a checkpoint", || async {
        cms.get_opt("lazyscale-checkpoint-web").await.ok()?
    })
    .await;
    assert!(cm.data.unwrap()["checkpoint.json"].len() > 100);
    assert_eq!(
        cm.metadata.owner_references.unwrap()[0].kind,
        "DatadogPodAutoscaler"
    );

    // the webhook selects only namespaces with autoscalers
    let hook = webhook_configuration(&client).await.unwrap().expect("registered");
    assert_eq!(
        hook.data["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"],
        json!([ns])
    );

    // pods created from now on: the simulator replaces deleted pods through the API (admission included)
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    // one delete-collection per app: a rollout the agent started may remove pods between a list and a
    // per-pod delete
    for name in ["web", "preview", "plain"] {
        pods.delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!("app={name}")),
        )
        .await
        .unwrap();
    }
    let patched = wait_for(60, "patched web pods", || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?
            .items;
        let fresh: Vec<Pod> = list
            .into_iter()
            .filter(|p| {
                p.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("autoscaling.datadoghq.com/rec-id"))
            })
            .collect();
        (fresh.len() >= 2).then_some(fresh)
    })
    .await;
    for p in &patched {
        assert!(cpu_millis(p) >= 400, "patched request {}m", cpu_millis(p));
        assert_eq!(
            p.metadata.annotations.as_ref().unwrap()["autoscaling.datadoghq.com/autoscaler-id"],
            format!("{ns}/web")
        );
    }
    let previews = wait_for(60, "recreated preview pods", || async {
        let list = pods
            .list(&ListParams::default().labels("app=preview"))
            .await
            .ok()?
            .items;
        (list.len() >= 2).then_some(list)
    })
    .await;
    for p in &previews {
        assert_eq!(cpu_millis(p), 50, "Preview never patches");
        assert!(
            !p.metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .contains_key("autoscaling.datadoghq.com/rec-id")
        );
    }

    // horizontal only: the autoscaler-id annotation, no vertical values
    let plain = wait_for(60, "recreated plain pods", || async {
        let list = pods
            .list(&ListParams::default().labels("app=plain"))
            .await
            .ok()?
            .items;
        let fresh: Vec<Pod> = list
            .into_iter()
            .filter(|p| {
                p.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("autoscaling.datadoghq.com/autoscaler-id"))
            })
            .collect();
        (fresh.len() >= 2).then_some(fresh)
    })
    .await;
    for p in &plain {
        assert_eq!(
            cpu_millis(p),
            50,
            "a horizontal-only DPA patches no vertical values"
        );
        assert!(
            !p.metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .contains_key("autoscaling.datadoghq.com/rec-id")
        );
    }

    // teardown: the webhook configuration goes with the stack
    dpas.delete("web", &DeleteParams::default()).await.unwrap();
    dpas.delete("preview", &DeleteParams::default()).await.unwrap();
    dpas.delete("plain", &DeleteParams::default()).await.unwrap();
    // kube-controller-manager's garbage collector removes the checkpoint with its DPA
    wait_for(60, "the checkpoint garbage-collected", || async {
        cms.get_opt("lazyscale-checkpoint-web")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    agent
        .wait_metric("lazyscale_gate_open", 0.0, Duration::from_secs(30))
        .await;
    assert!(webhook_configuration(&client).await.unwrap().is_none());
    assert!(agent.metric("lazyscale_webhook_requests_total{path=\"Patched\"}") >= 2.0);
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_dpas_on_one_workload_patch_nothing_and_raise_an_event() {
    let server = Server::start(ServerOptions::default()).unwrap();
    let client = server.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = "default";
    let agent = start_agent(&server, &["--grace-period-seconds=2"]);
    let dpas = dpa_api(client.clone(), ns);
    for name in ["first", "second"] {
        let mut d = dpa("dup", "Apply");
        d["metadata"]["name"] = json!(name);
        dpas.patch(name, &PatchParams::apply("test"), &Patch::Apply(&d))
            .await
            .unwrap();
    }
    agent
        .wait_metric("lazyscale_gate_open", 1.0, Duration::from_secs(20))
        .await;
    agent
        .wait_metric(
            "lazyscale_autoscalers{source=\"Dpa\"}",
            2.0,
            Duration::from_secs(20),
        )
        .await;
    // wait until the webhook configuration is in place, then create pods of the workload through the API
    wait_for(20, "the webhook configuration", || async {
        webhook_configuration(&client).await.unwrap()
    })
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns);
    let found = wait_for(30, "a ConflictingAutoscalers event", || async {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"generateName": "dup-7d9c5b-", "labels": {"pod-template-hash": "7d9c5b"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "dup-7d9c5b", "uid": "u1", "controller": true}]},
            "spec": {"containers": [{"name": "app", "image": "x", "resources": {"requests": {"cpu": "50m"}}}]}}))
        .unwrap();
        let created = pods.create(&PostParams::default(), &pod).await.ok()?;
        assert!(
            !created.metadata.annotations.clone().unwrap_or_default().contains_key("autoscaling.datadoghq.com/rec-id"),
            "a pod targeted by two DPAs is not patched"
        );
        let list = events.list(&ListParams::default()).await.ok()?.items;
        list.into_iter().find(|e| e.reason.as_deref() == Some("ConflictingAutoscalers"))
    })
    .await;
    assert_eq!(found.type_.as_deref(), Some("Warning"));
    assert_eq!(
        found.regarding.unwrap().kind.as_deref(),
        Some("DatadogPodAutoscaler")
    );
}
