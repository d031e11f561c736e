//! Horizontal autoscaling end to end through the agent: the simulator's load rises far above the CPU
//! target, the agent (holding the lease) scales the Deployment through /scale up to maxReplicas, and
//! `lazyscale explain` tells why.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use lazyscale_sim::load::{CpuProfile, LoadProfile, MemoryProfile};
use lazyscale_sim::units::{Bytes, Cpu};
use lazyscale_sim::{SimConfig, Simulator, WorkloadRef};
use lazyscale_testenv::{Server, ServerOptions};
use serde_json::json;

use common::start_agent;
use lazyscale_testenv::fixtures::dpa_api;
use lazyscale_testenv::install_crds;

#[tokio::test(flavor = "multi_thread")]
async fn load_above_target_scales_up_to_max_replicas_and_explain_says_why() {
    let server = Server::start(ServerOptions::default()).unwrap();
    let client = server.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = "default";
    let sim = Simulator::start(
        client.clone(),
        SimConfig {
            namespaces: vec![ns.to_string()],
            metrics_interval: Duration::from_secs(1),
            resync: Duration::from_secs(2),
            ..SimConfig::default()
        },
    )
    .await
    .unwrap();
    sim.set_load(
        &WorkloadRef::deployment(ns, "api"),
        LoadProfile {
            cpu: CpuProfile::Constant { value: Cpu(2.0) },
            memory: MemoryProfile {
                base: Bytes(64.0 * 1024.0 * 1024.0),
                per_cpu: Bytes(0.0),
                leak: Bytes(0.0),
            },
            noise: 0.0,
        },
    );
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let d = lazyscale_testenv::fixtures::app_deployment("api", 1, "200m", "64Mi");
    deployments.create(&PostParams::default(), &d).await.unwrap();
    let agent = start_agent(
        &server,
        &["--horizontal-period-seconds=2", "--lease-namespace=default"],
    );
    let dpa = json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler", "metadata": {"name": "api"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}, "owner": "Local",
            "constraints": {"minReplicas": 1, "maxReplicas": 4},
            "objectives": [{"type": "PodResource", "podResource": {"name": "cpu", "value": {"type": "Utilization", "utilization": 50}}}]}});
    let started = Instant::now();
    dpa_api(client.clone(), ns)
        .patch("api", &PatchParams::apply("test"), &Patch::Apply(&dpa))
        .await
        .unwrap();
    loop {
        let replicas = deployments
            .get("api")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas
            .unwrap();
        assert!(replicas <= 4, "beyond maxReplicas: {replicas}");
        if replicas == 4 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "still {replicas} replicas"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("scaled 1 -> 4 in {:.1}s", started.elapsed().as_secs_f64());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lazyscale"))
        .args(["explain", "default/api", "--admin-address"])
        .arg(format!("127.0.0.1:{}", agent.admin_port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("api"), "{text}");
    eprintln!("{text}");
    sim.shutdown().await;
}
