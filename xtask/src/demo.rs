//! `cargo xtask demo`: the lazy stack at work on a local test API server.
//!
//! Starts the test API server, a simulated cluster (the simulator's demo scenario), and the agent; then
//! narrates: idle with no pod watch, the first DatadogPodAutoscaler applied, the gate opening, pods cached,
//! memory figures, the DPA deleted, the stack stopping after the grace period. Everything keeps running
//! until Ctrl-C, with the KUBECONFIG printed for kubectl.

use std::time::Duration;

use anyhow::{Context, Result};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use lazyscale_testenv::{Server, ServerOptions};
use serde_json::json;

use crate::agent::{Agent, AgentOptions};

/// Demo options.
#[derive(clap::Args)]
pub struct Args {
    /// Grace period of the agent in seconds (the real default is 600).
    #[arg(long, default_value_t = 10)]
    grace: u64,
    /// Exit after the narrated phases instead of waiting for Ctrl-C.
    #[arg(long)]
    no_wait: bool,
}

fn mib(b: f64) -> String {
    format!("{:.1} MiB", b / (1024.0 * 1024.0))
}

fn say(s: &str) {
    println!("\n\x1b[1m== {s}\x1b[0m");
}

/// Runs the demo.
pub fn run(args: Args) -> Result<()> {
    crate::testenv_build()?;
    say("building the agent (release)");
    let binary = crate::agent::build_agent()?;
    let dir = crate::workspace_root().join("target/demo");
    std::fs::create_dir_all(&dir)?;
    say("starting the test API server (etcd + k8s.io/apiserver on loopback)");
    let server = Server::start(ServerOptions {
        dir: Some(dir.join("apiserver")),
        ..Default::default()
    })
    .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    let kubeconfig = server.kubeconfig_path().to_path_buf();
    println!("export KUBECONFIG={}", kubeconfig.display());

    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(server.client())?;
    rt.block_on(crate::cluster::install_crds(&client))?;
    say("simulated cluster: namespaces, deployments, a statefulset, kubelet, pod metrics");
    let sim = rt.block_on(crate::cluster::start_demo_cluster(&client))?;
    println!("{}", sim.summary);

    let pod_requests = |rt: &tokio::runtime::Runtime| -> Result<(u64, u64)> {
        let text = rt.block_on(server.metrics_text(&client))?;
        Ok((
            lazyscale_testenv::metrics::request_count(&text, "LIST", "pods"),
            lazyscale_testenv::metrics::request_count(&text, "WATCH", "pods"),
        ))
    };
    // The simulator watches pods itself; counting from here on isolates the agent's requests.
    let base_requests = pod_requests(&rt)?;
    say("starting the agent");
    let agent = Agent::start(AgentOptions {
        binary: &binary,
        kubeconfig: &kubeconfig,
        args: vec![format!("--grace-period-seconds={}", args.grace)],
        log: dir.join("agent.log"),
    })?;
    println!("agent log: {}", agent.log.display());
    std::thread::sleep(Duration::from_secs(3));
    let (rss, _) = agent.rss();
    let (lists, watches) = pod_requests(&rt)?;
    say("phase 1 — idle: no autoscaler in the cluster");
    println!(
        "gate open: {}   cached pods: {}   agent RSS: {}   heap: {}",
        agent.metric("lazyscale_gate_open"),
        agent.metric("lazyscale_podcache_pods"),
        mib(rss as f64),
        mib(agent.metric("lazyscale_process_heap_bytes")),
    );
    println!(
        "pod LIST/WATCH requests since the agent started: {}/{}",
        lists.saturating_sub(base_requests.0),
        watches.saturating_sub(base_requests.1)
    );

    say("phase 2 — applying the first DatadogPodAutoscaler (target: deployment web in shop)");
    let dpas = Api::<DynamicObject>::namespaced_with(client.clone(), "shop", &crate::cluster::dpa_resource());
    let dpa = json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "owner": "Local",
            "constraints": {"minReplicas": 2, "maxReplicas": 10},
            "objectives": [{"type": "PodResource", "podResource": {"name": "cpu", "value": {"type": "Utilization", "utilization": 70}}}]}});
    rt.block_on(dpas.patch("web", &PatchParams::apply("demo"), &Patch::Apply(&dpa)))
        .context("apply the DPA")?;
    agent.wait_for("the gate to open", Duration::from_secs(30), |m| {
        m.get("lazyscale_gate_open").copied() == Some(1.0)
    })?;
    println!("gate open: the agent started its pod collection");
    agent.wait_for("the pod collection to sync", Duration::from_secs(60), |m| {
        m.get("lazyscale_pod_collection_synced").copied() == Some(1.0)
    })?;
    std::thread::sleep(Duration::from_secs(3));
    let (rss, _) = agent.rss();
    let (lists, watches) = pod_requests(&rt)?;
    println!(
        "cached pods: {} (only pods of autoscaled workloads)   cache bytes: {}   agent RSS: {}",
        agent.metric("lazyscale_podcache_pods"),
        agent.metric("lazyscale_podcache_bytes"),
        mib(rss as f64)
    );
    println!(
        "pod LIST/WATCH requests since the agent started: {}/{}",
        lists.saturating_sub(base_requests.0),
        watches.saturating_sub(base_requests.1)
    );

    say(&format!(
        "phase 3 — deleting the DPA; the stack stops after the {}s grace period",
        args.grace
    ));
    rt.block_on(dpas.delete("web", &DeleteParams::default()))?;
    agent.wait_for("the gate to close", Duration::from_secs(args.grace + 30), |m| {
        m.get("lazyscale_gate_open").copied() == Some(0.0)
    })?;
    std::thread::sleep(Duration::from_secs(3));
    let (rss, peak) = agent.rss();
    println!(
        "gate closed: pod watch stopped, cache released   cached pods: {}   agent RSS: {} (peak {})",
        agent.metric("lazyscale_podcache_pods"),
        mib(rss as f64),
        mib(peak as f64)
    );

    say("everything keeps running: try kubectl (Ctrl-C to stop)");
    println!("export KUBECONFIG={}", kubeconfig.display());
    println!(
        "kubectl get deploy,pods -A;  kubectl top pod -n shop;  curl -s 127.0.0.1:{}/metrics | grep lazyscale_",
        agent.admin_port
    );
    if !args.no_wait {
        rt.block_on(tokio::signal::ctrl_c())?;
    }
    drop(sim);
    agent.stop()?;
    server.stop();
    Ok(())
}
