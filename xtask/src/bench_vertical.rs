//! `cargo xtask bench vertical-apply`: how long a new vertical recommendation takes to reach every pod of
//! an N-pod Deployment, by rollout (`TriggerRollout`: kube-controller-manager's Deployment controller
//! replaces the pods, the agent's webhook sizes the new ones) and in place (`Auto`: `pods/resize` on the
//! running pods, the simulator answering as a kubelet), and the agent's API requests during each window,
//! counted from the API server's audit log. One JSON object on stdout.
//!
//! The DPAs pin the CPU target (`minAllowed = maxAllowed`) so the recommendation is known with the first
//! sample, and pin the replica count so the horizontal part stays out of the measurement. The windows
//! include the agent's steady work (PodMetrics lists, status writes, lease renewals), reported apart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use lazyscale_sim::load::{CpuProfile, LoadProfile, MemoryProfile};
use lazyscale_sim::units::{Bytes, Cpu};
use lazyscale_sim::{SimConfig, Simulator, WorkloadRef};
use lazyscale_testenv::{Server, ServerOptions};
use serde_json::{Value, json};

use crate::agent::{Agent, AgentOptions};

/// Options.
#[derive(clap::Args)]
pub struct VerticalApplyArgs {
    /// Pods of each Deployment.
    #[arg(long, default_value_t = 100)]
    pods: i32,
    /// Seconds to wait for every pod to reach the target.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

const TARGET_CPU: &str = "300m";

fn deployment(name: &str, replicas: i32) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "app", "image": "x",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}}]}}}}))?)
}

fn dpa(name: &str, replicas: i32, strategy: &str) -> Value {
    json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler", "metadata": {"name": name},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, "owner": "Local",
            "applyPolicy": {"update": {"strategy": strategy}},
            "constraints": {"minReplicas": replicas, "maxReplicas": replicas, "containers": [{"name": "*",
                "controlledResources": ["cpu"], "minAllowed": {"cpu": TARGET_CPU}, "maxAllowed": {"cpu": TARGET_CPU}}]}}})
}

fn cpu_request(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()?
        .containers
        .first()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("cpu")
        .map(|q| q.0.as_str())
}

/// Live Running pods of `app`, and how many have the target CPU request.
async fn progress(api: &Api<Pod>, app: &str) -> (usize, usize) {
    let pods = api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect();
    let at = live.iter().filter(|p| cpu_request(p) == Some(TARGET_CPU)).count();
    (live.len(), at)
}

/// The agent's requests so far by `verb resource[/subresource]` (the audit log records only the agent's
/// identity here).
fn requests(server: &Server) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in server.requests() {
        let key = if r.subresource.is_empty() {
            format!("{} {}", r.verb, r.resource)
        } else {
            format!("{} {}/{}", r.verb, r.resource, r.subresource)
        };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

/// The requests that are the apply path's (the rest is the loop's steady work).
fn apply_requests(window: &BTreeMap<String, u64>) -> u64 {
    window
        .iter()
        .filter(|(k, _)| {
            k.ends_with("pods/resize")
                || k.ends_with("pods/eviction")
                || k.starts_with("patch pods")
                || k.contains("apps/deployments")
                || k.contains("events")
        })
        .map(|(_, v)| v)
        .sum()
}

async fn measure(
    server: &Server,
    client: &kube::Client,
    ns: &str,
    name: &str,
    replicas: i32,
    strategy: &str,
    timeout: Duration,
) -> Result<Value> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let dpas = lazyscale_testenv::fixtures::dpa_api(client.clone(), ns);
    let before = requests(server);
    let applied = Instant::now();
    dpas.patch(
        name,
        &PatchParams::apply("bench"),
        &Patch::Apply(dpa(name, replicas, strategy)),
    )
    .await?;
    let deadline = Instant::now() + timeout;
    // the window starts when the recommendation is in the DPA's status (the apply path reads it there)
    let recommended = loop {
        let d = dpas.get(name).await?;
        if d.data["status"]["vertical"]["target"]["version"].is_string() {
            break Instant::now();
        }
        anyhow::ensure!(Instant::now() < deadline, "{name}: no vertical target");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let n = usize::try_from(replicas)?;
    let mut half = None;
    let done = loop {
        let (live, at) = progress(&pods, name).await;
        if half.is_none() && at * 2 >= n {
            half = Some(recommended.elapsed());
        }
        if live == n && at == n {
            break recommended.elapsed();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{name}: {at}/{live} pods at target after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // the agent's last writes of the window (status, events) land within a period
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = diff(&requests(server), &before);
    let status = dpas.get(name).await?.data["status"].clone();
    Ok(json!({
        "strategy": strategy,
        "seconds_dpa_to_recommendation": recommended.duration_since(applied).as_secs_f64(),
        "seconds_to_half_the_pods": half.map(|h| h.as_secs_f64()),
        "seconds_to_every_pod": done.as_secs_f64(),
        "apply_requests": apply_requests(&window),
        "requests_total": window.values().sum::<u64>(),
        "requests": window,
        "last_action": status["vertical"]["lastAction"]["type"],
        "evicted": status["vertical"]["target"]["evicted"],
    }))
}

/// Runs the benchmark.
pub fn run(args: VerticalApplyArgs) -> Result<()> {
    crate::testenv_build()?;
    let binary = crate::agent::build_agent()?;
    let server = Server::start(ServerOptions::default())
        .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    let rt = tokio::runtime::Runtime::new()?;
    let dir = crate::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let out = rt.block_on(async {
        let client = server.client().await?;
        lazyscale_testenv::install_crds(&client).await?;
        let namespaces = ["bench-rollout", "bench-inplace"];
        for ns in namespaces {
            Api::<Namespace>::all(client.clone())
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
                )
                .await?;
        }
        let sim = Simulator::start(
            client.clone(),
            SimConfig {
                namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
                metrics_interval: Duration::from_secs(2),
                resync: Duration::from_secs(5),
                ..SimConfig::default()
            },
        )
        .await?;
        let name = "web";
        for ns in namespaces {
            sim.set_load(
                &WorkloadRef::deployment(ns, name),
                LoadProfile {
                    cpu: CpuProfile::Constant {
                        value: Cpu(f64::from(args.pods) * 0.05),
                    },
                    memory: MemoryProfile {
                        base: Bytes(40.0 * 1024.0 * 1024.0),
                        per_cpu: Bytes(0.0),
                        leak: Bytes(0.0),
                    },
                    noise: 0.0,
                },
            );
            Api::<Deployment>::namespaced(client.clone(), ns)
                .create(&PostParams::default(), &deployment(name, args.pods)?)
                .await?;
        }
        eprintln!("[bench] waiting for 2 × {} running pods", args.pods);
        let n = usize::try_from(args.pods)?;
        let deadline = Instant::now() + Duration::from_secs(args.timeout);
        for ns in namespaces {
            let pods = Api::<Pod>::namespaced(client.clone(), ns);
            while progress(&pods, name).await.0 != n {
                anyhow::ensure!(Instant::now() < deadline, "{ns}: pods not running");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let agent = Agent::start(
            AgentOptions::new(&binary, server.agent_kubeconfig_path())
                .args([
                    "--grace-period-seconds=0".to_string(),
                    "--vertical-period-seconds=1".to_string(),
                ])
                .log_to(dir.join("agent-vertical-apply.log")),
        )?;
        let timeout = Duration::from_secs(args.timeout);
        eprintln!("[bench] rollout");
        let rollout = measure(
            &server,
            &client,
            namespaces[0],
            name,
            args.pods,
            "TriggerRollout",
            timeout,
        )
        .await?;
        eprintln!("[bench] in place");
        let in_place = measure(&server, &client, namespaces[1], name, args.pods, "Auto", timeout).await?;
        agent.stop()?;
        drop(sim);
        anyhow::Ok(json!({
            "pods": args.pods,
            "vertical_period_seconds": 1,
            "rollout": rollout,
            "in_place": in_place,
        }))
    })?;
    println!("{}", serde_json::to_string_pretty(&out).context("encode")?);
    drop(rt);
    server.stop();
    Ok(())
}
