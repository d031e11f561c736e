//! Agent restarts lose nothing (kill -9, on the real control plane):
//! - the vertical history comes back from its checkpoint: after the agent is killed and the load drops,
//!   the restarted agent keeps the recommendation it had (within one histogram bucket), while a DPA
//!   whose checkpoint was deleted drops to the new load at once (the control: the test can fail);
//! - the horizontal scale-down stabilization window comes back from the DPA's status: the leader is
//!   killed, then the other replica, right after the load drops; no replica scales down before the
//!   window has passed since the last recommendation the status recorded (see the test), and no `/scale` write of the scale-up before it was redundant.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use lazyscale_testenv::fixtures::{app_deployment, dpa_api};
use lazyscale_testenv::{
    Agent, Server, ServerOptions, Simulated, constant_load, install_crds, rbac, wait_for,
};
use serde_json::json;

use common::start_agent;

fn load(cores: f64) -> lazyscale_sim::load::LoadProfile {
    constant_load(cores, 64.0)
}

fn kill9(agent: Agent) {
    std::process::Command::new("kill")
        .args(["-KILL", &agent.pid().to_string()])
        .status()
        .unwrap();
    drop(agent);
}

async fn setup(ns: &str) -> (Server, kube::Client, Simulated) {
    lazyscale_testenv::init_tracing();
    let server = Server::start(ServerOptions::default()).unwrap();
    let client = server.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let scene = Simulated::start(&client, ns).await.unwrap();
    (server, client, scene)
}

/// A vertical-only DPA in Preview: recommendations are computed, checkpointed and written to the
/// status; no pod changes.
fn vertical_dpa(name: &str) -> serde_json::Value {
    json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler", "metadata": {"name": name},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, "owner": "Local",
            "applyPolicy": {"mode": "Preview", "update": {"strategy": "TriggerRollout"}},
            "constraints": {"minReplicas": 2, "maxReplicas": 2}}})
}

fn target_millis(d: &kube::api::DynamicObject) -> Option<u64> {
    let t = d.data["status"]["vertical"]["target"]["podCPURequest"].as_str()?;
    lazyscale_vertical::quantity::parse_millis(t).ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn vertical_history_comes_back_from_its_checkpoint_after_kill_9() {
    let ns = "restarts";
    let (server, client, sim) = setup(ns).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let dpas = dpa_api(client.clone(), ns);
    // 2 pods sharing 1 core: 500m each, far above the 50m request.
    for name in ["kept", "control"] {
        sim.set_load(name, load(1.0));
        deployments
            .create(&PostParams::default(), &app_deployment(name, 2, "50m", "64Mi"))
            .await
            .unwrap();
    }
    let args = ["--vertical-period-seconds=2", "--grace-period-seconds=0"];
    let first = start_agent(&server, &args);
    for name in ["kept", "control"] {
        dpas.patch(
            name,
            &PatchParams::apply("test"),
            &Patch::Apply(vertical_dpa(name)),
        )
        .await
        .unwrap();
    }
    let cms = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), ns);
    let mut before = std::collections::BTreeMap::new();
    for name in ["kept", "control"] {
        let m = wait_for(60, "a vertical target", || {
            let dpas = dpas.clone();
            async move { target_millis(&dpas.get(name).await.ok()?) }
        })
        .await;
        assert!(m >= 400, "{name}: recommended {m}m for 500m of use per pod");
        wait_for(60, "a checkpoint", || {
            let cms = cms.clone();
            async move { cms.get_opt(&format!("lazyscale-checkpoint-{name}")).await.ok()? }
        })
        .await;
        before.insert(name, m);
    }
    // Samples taken after the checkpoint are the only ones a kill may lose; with a constant load they
    // fall in the checkpointed bucket.
    tokio::time::sleep(Duration::from_secs(4)).await;
    kill9(first);
    cms.delete("lazyscale-checkpoint-control", &DeleteParams::default())
        .await
        .unwrap();
    for name in ["kept", "control"] {
        sim.set_load(name, load(0.02));
    }
    let second_log = std::env::temp_dir().join(format!("restarts-{}.log", std::process::id()));
    let second = Agent::start(
        lazyscale_testenv::AgentOptions::new(env!("CARGO_BIN_EXE_lazyscale"), server.agent_kubeconfig_path())
            .args(args)
            .log_to(&second_log),
    )
    .unwrap();
    // Without its history the control follows the new load at the first pass.
    let dropped = wait_for(60, "the control's target to follow the low load", || {
        let dpas = dpas.clone();
        async move { target_millis(&dpas.get("control").await.ok()?).filter(|m| *m < 200) }
    })
    .await;
    let kept = target_millis(&dpas.get("kept").await.unwrap()).unwrap();
    let b = before["kept"];
    // One bucket of the default layout is under 10 % wide.
    assert!(
        kept.abs_diff(b) * 10 <= b,
        "the restarted agent recommends {kept}m, the killed one {b}m (control dropped to {dropped}m)"
    );
    let log = std::fs::read_to_string(&second_log).unwrap_or_default();
    assert!(
        log.contains("vertical history restored from its checkpoint"),
        "no restore logged:\n{log}"
    );
    drop(second);
    sim.shutdown().await;
}

fn horizontal_dpa(name: &str, window: u32) -> serde_json::Value {
    json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler", "metadata": {"name": name},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, "owner": "Local",
            "fallback": {"horizontal": {"direction": "All"}},
            "applyPolicy": {"scaleDown": {"stabilizationWindowSeconds": window}},
            "constraints": {"minReplicas": 1, "maxReplicas": 8},
            "objectives": [{"type": "PodResource", "podResource": {"name": "cpu", "value": {"type": "Utilization", "utilization": 50}}}]}})
}

async fn lease_holder(client: &kube::Client, ns: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get(lazyscale_api::consts::LEASE_NAME)
        .await
        .ok()?
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_down_window_survives_kill_9_of_both_replicas_in_turn() {
    let ns = "default";
    let (server, client, sim) = setup(ns).await;
    let name = "web";
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    // 0.6 cores over 200m requests at 50 %: 6 pods.
    sim.set_load(name, load(0.6));
    deployments
        .create(&PostParams::default(), &app_deployment(name, 1, "200m", "64Mi"))
        .await
        .unwrap();
    let args = [
        "--horizontal-period-seconds=2",
        "--lease-namespace=default",
        "--grace-period-seconds=0",
    ];
    let mut agents = vec![start_agent(&server, &args), start_agent(&server, &args)];
    const WINDOW: u64 = 45;
    dpa_api(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("test"),
            &Patch::Apply(horizontal_dpa(name, WINDOW as u32)),
        )
        .await
        .unwrap();
    let replicas = || {
        let deployments = deployments.clone();
        async move { deployments.get(name).await.ok()?.spec?.replicas }
    };
    wait_for(90, "6 replicas", || async {
        replicas().await.filter(|r| *r == 6)
    })
    .await;
    // Hold at 6 for a few reconciles so the status records the recommendations.
    const HOLD: u64 = 5;
    tokio::time::sleep(Duration::from_secs(HOLD)).await;
    let scale_writes = server
        .requests()
        .iter()
        .filter(|r| r.user == rbac::agent_username() && r.subresource == "scale")
        .filter(|r| matches!(r.verb.as_str(), "patch" | "update") && r.succeeded())
        .count() as i64;
    let generation = deployments.get(name).await.unwrap().metadata.generation.unwrap();
    // Every successful write changed the count (the Deployment starts at generation 1).
    assert_eq!(scale_writes, generation - 1, "/scale writes that changed nothing");
    // The load drops to one pod's worth: without the window the agent would scale down at once.
    sim.set_load(name, load(0.05));
    let dropped = Instant::now();
    for round in 0..2 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        // The killed replica's Lease stays held until it expires: wait for a living holder.
        let pids: Vec<u32> = agents.iter().map(Agent::pid).collect();
        let i = wait_for(30, "a living agent holding the Lease", || {
            let pids = pids.clone();
            let client = client.clone();
            async move {
                let holder = lease_holder(&client, ns).await?;
                pids.iter().position(|p| holder.ends_with(&format!("-{p}")))
            }
        })
        .await;
        kill9(agents.remove(i));
        agents.push(start_agent(&server, &args));
        assert_eq!(
            replicas().await,
            Some(6),
            "scaled down {round} restarts into the window"
        );
    }
    // The status is written only when the recommendation changes, so the restored window counts from
    // the last recommendation of 6 it recorded, up to HOLD seconds before the drop (measured: the
    // scale-down came 41 s after the drop with a 45 s window). Until then, less a reconcile period of
    // slack, the count holds; a history not restored would scale down a few seconds after the drop.
    while dropped.elapsed() < Duration::from_secs(WINDOW - HOLD - 3) {
        let r = replicas().await.unwrap();
        assert_eq!(
            r,
            6,
            "scaled to {r} {:.0}s after the load drop, inside the {WINDOW}s window",
            dropped.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // After it the scale-down comes (the window was honoured, not the scaling stopped).
    wait_for(90, "the scale-down after the window", || async {
        replicas().await.filter(|r| *r < 6)
    })
    .await;
    drop(agents);
    sim.shutdown().await;
}
