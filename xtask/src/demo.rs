//! `cargo xtask demo`: the whole job on a local, real control plane (kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok, etcd).
//!
//! Starts the control plane, the simulator's demo cluster (load and metrics; the controllers and kwok run
//! the workloads), and the agent; then narrates: idle (no pod request, no webhook), a DatadogPodAutoscaler
//! on a Deployment under a load step, the gate opening, replicas rising through real ReplicaSets, a
//! vertical recommendation that new pods carry, `lazyscale explain`, the DPA deleted, the stack stopping
//! and memory returning; it ends with a summary table. `--no-wait` exits after it; otherwise everything
//! keeps running until Ctrl-C, with the KUBECONFIG printed for kubectl.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
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

struct Row {
    phase: &'static str,
    gate: f64,
    cached: f64,
    rss: u64,
    lists: u64,
    watches: u64,
    webhook: bool,
    note: String,
}

fn replicas(rt: &tokio::runtime::Runtime, client: &kube::Client, ns: &str, name: &str) -> Result<(i32, i32)> {
    let d = rt.block_on(Api::<Deployment>::namespaced(client.clone(), ns).get(name))?;
    let st = d.status.unwrap_or_default();
    Ok((
        d.spec.and_then(|s| s.replicas).unwrap_or(0),
        st.ready_replicas.unwrap_or(0),
    ))
}

fn replica_sets(rt: &tokio::runtime::Runtime, client: &kube::Client, ns: &str, app: &str) -> Result<String> {
    let rss = rt.block_on(
        Api::<ReplicaSet>::namespaced(client.clone(), ns)
            .list(&ListParams::default().labels(&format!("app={app}"))),
    )?;
    Ok(rss
        .items
        .iter()
        .map(|r| {
            format!(
                "{} (replicas {})",
                r.metadata.name.clone().unwrap_or_default(),
                r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
            )
        })
        .collect::<Vec<_>>()
        .join(", "))
}

fn webhook_registered(rt: &tokio::runtime::Runtime, client: &kube::Client) -> bool {
    rt.block_on(Api::<MutatingWebhookConfiguration>::all(client.clone()).list(&ListParams::default()))
        .map(|l| !l.items.is_empty())
        .unwrap_or(false)
}

/// The requests of the first container of a Running pod of `app`, and its rec-id annotation.
fn pod_resources(
    rt: &tokio::runtime::Runtime,
    client: &kube::Client,
    ns: &str,
    app: &str,
) -> Result<Vec<String>> {
    let pods = rt.block_on(
        Api::<Pod>::namespaced(client.clone(), ns).list(&ListParams::default().labels(&format!("app={app}"))),
    )?;
    Ok(pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let c = p.spec.as_ref().and_then(|s| s.containers.first());
            let req = c
                .and_then(|c| c.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .map(|r| {
                    r.iter()
                        .map(|(k, v)| format!("{k}={}", v.0))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let patched = p
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.keys().any(|k| k.contains("rec-id")));
            format!(
                "{} app: {req}{}",
                p.metadata.name.clone().unwrap_or_default(),
                if patched { "  (patched by the webhook)" } else { "" }
            )
        })
        .collect())
}

/// Runs the demo.
pub fn run(args: Args) -> Result<()> {
    let started = std::time::Instant::now();
    crate::testenv_build()?;
    say("building the agent (release)");
    let binary = crate::agent::build_agent()?;
    // The bound (4 minutes) is for the demo once built: the builds are timed apart.
    let built = started.elapsed();
    let dir = crate::workspace_root().join("target/demo");
    std::fs::create_dir_all(&dir)?;
    say("starting the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)");
    let server = Server::start(ServerOptions {
        dir: Some(dir.join("apiserver")),
        ..Default::default()
    })
    .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    let kubeconfig = server.kubeconfig_path().to_path_buf();
    println!("export KUBECONFIG={}", kubeconfig.display());

    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(server.client())?;
    rt.block_on(lazyscale_testenv::install_crds(&client))?;
    say(
        "the demo cluster: 3 namespaces, 5 Deployments and a StatefulSet, run by kube-controller-manager and kwok; the simulator adds load and PodMetrics",
    );
    let sim = rt.block_on(crate::cluster::start_demo_cluster(&client))?;
    println!("{}", sim.summary);
    let ready_start = std::time::Instant::now();
    while replicas(&rt, &client, "shop", "web")?.1 < 3 {
        if ready_start.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("shop/web has no 3 ready replicas after 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "shop/web ReplicaSets: {}",
        replica_sets(&rt, &client, "shop", "web")?
    );

    // The agent's own requests, from the audit log (the control plane lists and watches pods too).
    let pod_requests = || -> (u64, u64) {
        (
            server.agent_requests("LIST", "pods"),
            server.agent_requests("WATCH", "pods"),
        )
    };
    say("starting the agent");
    let agent = Agent::start(
        AgentOptions::new(&binary, server.agent_kubeconfig_path())
            .args([
                format!("--grace-period-seconds={}", args.grace),
                "--horizontal-period-seconds=5".to_string(),
                "--vertical-period-seconds=5".to_string(),
            ])
            .log_to(dir.join("agent.log")),
    )?;
    println!(
        "agent log: {}",
        agent.log().map(|p| p.display().to_string()).unwrap_or_default()
    );
    let mut rows = Vec::new();
    let row = |phase: &'static str, agent: &Agent, note: String| -> Row {
        std::thread::sleep(Duration::from_millis(500));
        let (lists, watches) = pod_requests();
        let r = Row {
            phase,
            gate: agent.metric("lazyscale_gate_open"),
            cached: agent.metric("lazyscale_podcache_pods"),
            rss: agent.rss().0,
            lists,
            watches,
            webhook: webhook_registered(&rt, &client),
            note,
        };
        println!(
            "gate open: {}   cached pods: {}   agent RSS: {}   pod LIST/WATCH by the agent: {}/{}   webhook registered: {}",
            r.gate,
            r.cached,
            mib(r.rss as f64),
            r.lists,
            r.watches,
            r.webhook
        );
        r
    };

    std::thread::sleep(Duration::from_secs(3));
    say("phase 1 — idle: no autoscaler in the cluster");
    rows.push(row("idle", &agent, "no autoscaler".into()));

    say(
        "phase 2 — a load step on shop/web (3 × 200m requested, 1.5 cores used each), then its first DatadogPodAutoscaler",
    );
    sim.set_load(
        "shop",
        "web",
        serde_json::from_value(
            json!({"cpu": {"type": "constant", "value": "1500m"}, "memory": {"base": "96Mi"}}),
        )?,
    );
    let dpas = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        "shop",
        &lazyscale_testenv::fixtures::dpa_resource(),
    );
    let dpa = json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "owner": "Local",
            "applyPolicy": {"update": {"strategy": "Auto"}},
            "constraints": {"minReplicas": 2, "maxReplicas": 10},
            "objectives": [{"type": "PodResource", "podResource": {"name": "cpu", "value": {"type": "Utilization", "utilization": 70}}}]}});
    rt.block_on(dpas.patch("web", &PatchParams::apply("demo"), &Patch::Apply(&dpa)))
        .context("apply the DPA")?;
    agent.wait_metrics("the gate to open", Duration::from_secs(30), |m| {
        m.get("lazyscale_gate_open").copied() == Some(1.0)
    })?;
    println!("gate open: the agent started its pod collection and registered its webhook");
    agent.wait_metrics("the pod collection to sync", Duration::from_secs(60), |m| {
        m.get("lazyscale_pod_collection_synced").copied() == Some(1.0)
    })?;
    rows.push(row("first DPA", &agent, "gate opens".into()));

    say("phase 3 — replicas rise through real ReplicaSets (kube-controller-manager) and kwok pods");
    let t = std::time::Instant::now();
    let mut last = (0, 0);
    while t.elapsed() < Duration::from_secs(90) {
        let now = replicas(&rt, &client, "shop", "web")?;
        if now != last {
            println!(
                "  after {:>4.1}s: spec.replicas {}  ready {}",
                t.elapsed().as_secs_f64(),
                now.0,
                now.1
            );
            last = now;
        }
        if now.0 >= 10 && now.1 >= 10 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "shop/web ReplicaSets: {}",
        replica_sets(&rt, &client, "shop", "web")?
    );
    rows.push(row(
        "scaled",
        &agent,
        format!("replicas {} (ready {})", last.0, last.1),
    ));

    say("phase 4 — the vertical recommendation, and new pods carrying it");
    let t = std::time::Instant::now();
    let mut target = None;
    while t.elapsed() < Duration::from_secs(60) && target.is_none() {
        let d = rt.block_on(dpas.get("web"))?;
        target = d
            .data
            .pointer("/status/vertical/target")
            .filter(|v| !v.is_null())
            .cloned();
        if target.is_none() {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    match &target {
        Some(t) => println!("status.vertical.target: {t}"),
        None => println!("no vertical recommendation after 60 s (see the agent log)"),
    }
    // A rollout (as `kubectl rollout restart` does) makes new pods, which the webhook patches.
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {"demo.lazyscale.io/restartedAt": format!("{:?}", std::time::SystemTime::now())}}}}});
    rt.block_on(Api::<Deployment>::namespaced(client.clone(), "shop").patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&restart),
    ))?;
    let t = std::time::Instant::now();
    let mut shown = Vec::new();
    while t.elapsed() < Duration::from_secs(60) {
        shown = pod_resources(&rt, &client, "shop", "web")?;
        let patched = shown.iter().filter(|l| l.contains("patched")).count();
        if patched >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    for l in shown.iter().take(4) {
        println!("  {l}");
    }
    let patched = shown.iter().filter(|l| l.contains("patched")).count();
    rows.push(row("right-sized", &agent, format!("{patched} new pods patched")));

    say("phase 5 — lazyscale explain shop/web");
    let out = std::process::Command::new(&binary)
        .args(["explain", "shop/web", "--admin-address"])
        .arg(format!("127.0.0.1:{}", agent.admin_port))
        .output()?;
    println!("{}", String::from_utf8_lossy(&out.stdout).trim_end());

    say(&format!(
        "phase 6 — deleting the DPA; the stack stops after the {}s grace period",
        args.grace
    ));
    rt.block_on(dpas.delete("web", &DeleteParams::default()))?;
    agent.wait_metrics("the gate to close", Duration::from_secs(args.grace + 30), |m| {
        m.get("lazyscale_gate_open").copied() == Some(0.0)
    })?;
    std::thread::sleep(Duration::from_secs(3));
    rows.push(row(
        "torn down",
        &agent,
        "pod watch stopped, cache released".into(),
    ));

    say("summary");
    println!(
        "{:<12} {:>4} {:>11} {:>10} {:>14} {:>8}  note",
        "phase", "gate", "cached pods", "agent RSS", "pod LIST/WATCH", "webhook"
    );
    for r in &rows {
        println!(
            "{:<12} {:>4} {:>11} {:>10} {:>14} {:>8}  {}",
            r.phase,
            r.gate,
            r.cached,
            mib(r.rss as f64),
            format!("{}/{}", r.lists, r.watches),
            if r.webhook { "yes" } else { "no" },
            r.note
        );
    }
    let total = started.elapsed();
    println!(
        "demo ran in {:.0}s: {:.0}s once built (+{:.0}s checking or building the control plane and the agent)",
        total.as_secs_f64(),
        total.saturating_sub(built).as_secs_f64(),
        built.as_secs_f64()
    );

    say("everything keeps running: try kubectl (Ctrl-C to stop)");
    println!("export KUBECONFIG={}", kubeconfig.display());
    println!(
        "kubectl get deploy,rs,pods -n shop;  kubectl top pod -n shop;  curl -s 127.0.0.1:{}/metrics | grep lazyscale_",
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
