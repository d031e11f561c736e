//! Horizontal autoscaling end to end through the agent: the simulator's load rises far above the CPU
//! target, the agent (holding the lease) scales the Deployment through /scale up to maxReplicas, and
//! `lazyscale explain` tells why.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use lazyscale_testenv::fixtures::app_deployment;
use lazyscale_testenv::{Server, ServerOptions, Simulated, constant_load, install_crds};
use serde_json::json;

use common::start_agent;

#[tokio::test(flavor = "multi_thread")]
async fn load_above_target_scales_up_to_max_replicas_and_explain_says_why() {
    let server = Server::start(ServerOptions::default()).unwrap();
    let client = server.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let scene = Simulated::start(&client, "default").await.unwrap();
    scene
        .deployment(
            &app_deployment("api", 1, "200m", "64Mi"),
            constant_load(2.0, 64.0),
        )
        .await
        .unwrap();
    let agent = start_agent(
        &server,
        &["--horizontal-period-seconds=2", "--lease-namespace=default"],
    );
    let dpa = json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler", "metadata": {"name": "api"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}, "owner": "Local",
            "constraints": {"minReplicas": 1, "maxReplicas": 4},
            "objectives": [{"type": "PodResource", "podResource": {"name": "cpu", "value": {"type": "Utilization", "utilization": 50}}}]}});
    let started = Instant::now();
    scene.apply_dpa(&dpa).await.unwrap();
    loop {
        let replicas = scene
            .deployments()
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
    scene.shutdown().await;
}
