//! `cargo xtask bench ...`: benchmarks that print one JSON object on stdout (progress on stderr).
//!
//! - `lazy`: the agent's memory and pod requests through the life of the lazy stack, at N pods, then the
//!   peers on the same cluster in the same run, one after another: a plain kube-rs reflector of full
//!   `Pod` objects, a client-go pod informer, the VPA recommender and the VPA admission controller (with
//!   one VPA and with a VPA over every Deployment), each with its RSS, sync time and pod requests (audit
//!   log, by the peer's own user) and its ratios to lazyscale; an HTML chart of every process's RSS over
//!   the run next to the JSON (`target/bench/lazy.json`, `target/bench/lazy-rss.html`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use lazyscale_testenv::{Server, ServerOptions};
use serde_json::{Value, json};

use crate::agent::{Agent, AgentOptions, reset_peak};

#[path = "bench_peers.rs"]
mod bench_peers;
#[path = "quality.rs"]
mod quality;

/// Benchmark options.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(clap::Subcommand)]
enum Bench {
    /// Memory and pod requests of the agent per phase of the lazy stack.
    Lazy(LazyArgs),
    /// AdmissionReviews over TLS at a fixed rate: stack down (fast path), then 1,000 DPAs (patch path).
    Webhook(crate::webhook_bench::WebhookArgs),
    /// Vertical recommendation quality against the VPA and the DPA method on replayed usage traces.
    Quality(quality::QualityArgs),
    /// Time and API requests from a new vertical recommendation to every pod at it, rollout vs in place.
    VerticalApply(crate::bench_vertical::VerticalApplyArgs),
    /// One full recommendation + reconcile pass over N DPAs, each over a 10-pod Deployment.
    Reconcile {
        /// DPAs (and Deployments); with `--profiles`, labelled Deployments.
        #[arg(long, default_value_t = 1000)]
        dpas: usize,
        /// The ClusterProfile case: N labelled Deployments under one profile, the profile controller's
        /// passes (generate, unchanged, after a profile edit).
        #[arg(long)]
        profiles: bool,
    },
}

#[derive(clap::Args)]
struct LazyArgs {
    /// Pods in the cluster.
    #[arg(long, default_value_t = 100_000)]
    pods: u32,
    /// Pods per deployment.
    #[arg(long, default_value_t = 10)]
    pods_per_deployment: u32,
    /// Namespaces the deployments are spread over.
    #[arg(long, default_value_t = 50)]
    namespaces: u32,
    /// Skip the reference reflector.
    #[arg(long)]
    no_reference: bool,
    /// Skip the Go peers (client-go informer, VPA recommender and admission controller).
    #[arg(long)]
    no_peers: bool,
    /// The VPA recommender's pass interval in the peer runs (the release's default is 60 s).
    #[arg(long, default_value_t = 15)]
    vpa_interval_seconds: u64,
}

/// Runs a benchmark.
pub fn run(args: Args) -> Result<()> {
    match args.bench {
        Bench::Lazy(a) => lazy(a),
        Bench::Reconcile { dpas, profiles } => reconcile(dpas, profiles),
        Bench::Webhook(a) => crate::webhook_bench::run(a),
        Bench::Quality(a) => quality::run(a),
        Bench::VerticalApply(a) => crate::bench_vertical::run(a),
    }
}

fn reconcile(dpas: usize, profiles: bool) -> Result<()> {
    crate::testenv_build()?;
    let server = Server::start(ServerOptions::default())
        .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    let rt = tokio::runtime::Runtime::new()?;
    if profiles {
        let report = rt.block_on(async {
            let client = server.client().await?;
            lazyscale_testenv::install_crds(&client).await?;
            progress(&format!(
                "creating {dpas} labelled Deployments and a profile; then three passes"
            ));
            anyhow::Ok(crate::profile_bench::run(client, dpas).await?)
        })?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        drop(rt);
        server.stop();
        return Ok(());
    }
    let report = rt.block_on(async {
        let client = server.client().await?;
        lazyscale_testenv::install_crds(&client).await?;
        progress(&format!(
            "creating {dpas} Deployments, DPAs and PodMetrics; then two passes"
        ));
        let opts = crate::reconcile_bench::BenchOptions {
            dpas,
            ..Default::default()
        };
        anyhow::Ok(crate::reconcile_bench::run(client, &opts).await?)
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    drop(rt);
    server.stop();
    Ok(())
}

fn progress(msg: &str) {
    eprintln!("[bench {:>8}] {msg}", chrono_now());
}

fn chrono_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// A populated cluster: started from a saved etcd data folder keyed by the bulk parameters, or populated
/// by the simulator's bulk mode and saved for the next run.
fn populated_server(spec: &lazyscale_sim::bulk::BulkSpec, rt: &tokio::runtime::Runtime) -> Result<Server> {
    let key = format!(
        "{}-pods{}-deploy{}-ns{}-seed{}",
        lazyscale_testenv::recipe::key(),
        spec.pods,
        spec.deployments,
        spec.namespaces,
        spec.seed
    );
    let snapshots = lazyscale_testenv::recipe::cache_dir().join("snapshots");
    let snap = snapshots.join(&key);
    let dir = crate::workspace_root().join("target/bench/apiserver");
    if snap.join("member").exists() {
        progress(&format!(
            "restoring the populated cluster from the snapshot {key}"
        ));
        let t = Instant::now();
        let server = Server::start(ServerOptions {
            dir: Some(dir),
            etcd_snapshot: Some(snap),
            ..Default::default()
        })
        .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
        progress(&format!("restored in {:.1}s", t.elapsed().as_secs_f64()));
        return Ok(server);
    }
    let server = Server::start(ServerOptions {
        dir: Some(dir.clone()),
        ..Default::default()
    })
    .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    let client = rt.block_on(server.client())?;
    progress(&format!(
        "populating {} pods with the simulator's bulk mode",
        spec.pods
    ));
    let report = rt.block_on(lazyscale_sim::bulk::populate(&client, spec))?;
    progress(&format!(
        "populated {} pods in {:.1}s ({:.0} pods/s, {} bytes per pod as stored)",
        report.pods,
        report.elapsed.as_secs_f64(),
        report.pods_per_second,
        report.mean_pod_bytes
    ));
    // Save the etcd data folder while etcd is stopped, then start again from it.
    server.stop();
    std::fs::create_dir_all(&snapshots)?;
    let tmp = snapshots.join(format!("{key}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    crate::run(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(dir.join("etcd"))
            .arg(&tmp),
    )?;
    std::fs::rename(&tmp, &snap)?;
    progress(&format!("saved the snapshot {key}"));
    Server::start(ServerOptions {
        dir: Some(dir),
        etcd_snapshot: Some(snap),
        ..Default::default()
    })
    .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))
}

struct Phase {
    name: &'static str,
    value: Value,
}

fn measure(name: &'static str, agent: &Agent, server: &Server, base: (u64, u64)) -> Result<Phase> {
    let (rss, peak) = agent.rss();
    let (anon, file, _) = agent.rss_parts();
    let m = agent.metrics()?;
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    let cached = get("lazyscale_podcache_pods");
    let cache_bytes = get("lazyscale_podcache_bytes");
    let lists = server.agent_requests("LIST", "pods");
    let watches = server.agent_requests("WATCH", "pods");
    let value = json!({
        "name": name,
        "rss_bytes": rss,
        "peak_rss_bytes": peak,
        "rss_anon_bytes": anon,
        "rss_file_bytes": file,
        "heap_bytes": get("lazyscale_process_heap_bytes") as u64,
        "allocator": {
            "active_bytes": get("lazyscale_process_allocator_bytes{part=\"Active\"}") as u64,
            "metadata_bytes": get("lazyscale_process_allocator_bytes{part=\"Metadata\"}") as u64,
            "resident_bytes": get("lazyscale_process_allocator_bytes{part=\"Resident\"}") as u64,
            "mapped_bytes": get("lazyscale_process_allocator_bytes{part=\"Mapped\"}") as u64,
            "retained_bytes": get("lazyscale_process_allocator_bytes{part=\"Retained\"}") as u64,
        },
        "threads": get("lazyscale_process_threads") as u64,
        "cached_pods": cached as u64,
        "cache_bytes": cache_bytes as u64,
        "cache_bytes_per_pod": if cached > 0.0 { (cache_bytes / cached).round() as u64 } else { 0 },
        "pod_list_requests": lists.saturating_sub(base.0),
        "pod_watch_requests": watches.saturating_sub(base.1),
    });
    progress(&format!("{name}: {value}"));
    Ok(Phase { name, value })
}

/// Reconciles of the horizontal controller so far.
fn reconciles(m: &std::collections::HashMap<String, f64>) -> f64 {
    m.get("lazyscale_controller_operations_total{op=\"Reconcile\"}")
        .copied()
        .unwrap_or(0.0)
}

/// The agent's per-DPA memory breakdown (`lazyscale_memory_bytes`, estimates computed by the agent from
/// the sizes of its structures), each component divided by the DPAs the agent knows.
fn per_dpa(m: &std::collections::HashMap<String, f64>, applied: usize, reconciled: bool) -> Value {
    let component = |c: &str| {
        m.get(&format!("lazyscale_memory_bytes{{component=\"{c}\"}}"))
            .copied()
            .unwrap_or(0.0)
    };
    let dpas = m
        .get("lazyscale_autoscalers{source=\"Dpa\"}")
        .copied()
        .unwrap_or(applied as f64)
        .max(1.0);
    let (index, controller, vertical_state, histograms, indexes) = (
        component("DpaIndex"),
        component("ControllerState"),
        component("VerticalState"),
        component("VerticalHistograms"),
        component("Indexes"),
    );
    let per = |b: f64| (b / dpas).round() as u64;
    let part = |p: &str| {
        per(m
            .get(&format!("lazyscale_controller_state_bytes{{part=\"{p}\"}}"))
            .copied()
            .unwrap_or(0.0))
    };
    json!({
        "dpas": dpas as u64,
        "dpa_index_bytes": per(index),
        "controller_state_bytes": per(controller),
        "controller_parts_bytes": {"slots_and_keys": part("Slots"), "histories": part("Histories"),
            "explanations": part("Explanations"), "written": part("Written")},
        "controller_pending_writes": m.get("lazyscale_controller_pending_writes").copied().unwrap_or(0.0) as u64,
        "vertical_state_bytes": per(vertical_state),
        "vertical_histogram_bytes": per(histograms),
        "index_bytes": per(indexes),
        "outside_histograms_bytes": per(index + controller + vertical_state + indexes),
        "target_outside_histograms_bytes": 2048,
        "totals_bytes": {"dpa_index": index as u64, "controller_state": controller as u64,
            "vertical_state": vertical_state as u64, "vertical_histograms": histograms as u64,
            "indexes": indexes as u64},
        "every_dpa_reconciled": reconciled,
        "note": "estimates by the agent (lazyscale_memory_bytes), from lengths and capacities; indexes are the webhook's autoscaler lookup (the pod cache's uid, owner and interest indexes are in cache_bytes, per cached pod); the status's conditions are counted from their layout, the rest of the DPA by a serde walk",
    })
}

/// One line: the per-DPA bytes outside the histograms against the target, and their parts.
fn per_dpa_summary(v: &Value) -> String {
    let b = |k: &str| v[k].as_u64().unwrap_or(0);
    format!(
        "per DPA ({} DPAs): {} B outside the histograms (target <= {} B): DPA index {} B, controller {} B, vertical state {} B, indexes {} B; vertical histograms {} B",
        b("dpas"),
        b("outside_histograms_bytes"),
        b("target_outside_histograms_bytes"),
        b("dpa_index_bytes"),
        b("controller_state_bytes"),
        b("vertical_state_bytes"),
        b("index_bytes"),
        b("vertical_histogram_bytes"),
    )
}

/// What [`churn`] did.
struct Churn {
    seconds: f64,
    deleted: u64,
    /// Pod watch events of the namespace while it ran (ADDED, MODIFIED, DELETED; the initial list excluded).
    events: u64,
}

/// Deletes 10 pods of `ns` per second for `duration` (their ReplicaSets replace them) while a watch of our
/// own counts the namespace's pod events: the churn a cluster-wide pod watch would have to decode.
async fn churn(client: &kube::Client, ns: &str, duration: Duration) -> Result<Churn> {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let events = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = {
        let (pods, events) = (pods.clone(), events.clone());
        // Start from the current resourceVersion: only changes count.
        let rv = pods
            .list_metadata(&ListParams::default().limit(1))
            .await?
            .metadata
            .resource_version
            .unwrap_or_default();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(pods.watch(&kube::api::WatchParams::default(), &rv).await?);
            while let Some(ev) = stream.next().await {
                if matches!(
                    ev?,
                    kube::api::WatchEvent::Added(_)
                        | kube::api::WatchEvent::Modified(_)
                        | kube::api::WatchEvent::Deleted(_)
                ) {
                    events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Ok::<(), kube::Error>(())
        })
    };
    let t = Instant::now();
    let mut deleted = 0;
    while t.elapsed() < duration {
        let tick = Instant::now();
        for p in pods.list_metadata(&ListParams::default().limit(10)).await?.items {
            if let Some(name) = p.metadata.name.as_deref()
                && pods.delete(name, &DeleteParams::default()).await.is_ok()
            {
                deleted += 1;
            }
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    }
    // the replacements become Running and Ready
    tokio::time::sleep(Duration::from_secs(5)).await;
    let seconds = t.elapsed().as_secs_f64();
    counter.abort();
    Ok(Churn {
        seconds,
        deleted,
        events: events.load(std::sync::atomic::Ordering::Relaxed),
    })
}

fn dpa(ns: &str, deployment: &str) -> Value {
    json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler",
        "metadata": {"name": deployment, "namespace": ns},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}, "owner": "Local",
            "applyPolicy": {"mode": "Preview"},
            "constraints": {"minReplicas": 1, "maxReplicas": 20},
            "objectives": [{"type": "PodResource", "podResource": {"name": "cpu", "value": {"type": "Utilization", "utilization": 70}}}]}})
}

fn lazy(a: LazyArgs) -> Result<()> {
    let started = Instant::now();
    crate::testenv_build()?;
    progress("building the agent and the reference reflector (release)");
    let binary = crate::agent::build_agent()?;
    crate::run(crate::cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "xtask",
        "--bin",
        "full-pod-reflector",
    ]))?;
    let reflector = crate::workspace_root().join("target/release/full-pod-reflector");
    let peer_bins = if a.no_peers {
        None
    } else {
        progress("building the Go peers (client-go informer, VPA recommender and admission controller)");
        let t = Instant::now();
        let (bins, outcome) =
            lazyscale_testenv::peers::ensure_built(&crate::workspace_root().join("testenv"))
                .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
        progress(&format!(
            "peers {outcome:?} in {:.2}s: {}",
            t.elapsed().as_secs_f64(),
            lazyscale_testenv::peers::versions()
                .unwrap_or_default()
                .replace('\n', "; ")
        ));
        Some(bins)
    };
    let rt = tokio::runtime::Runtime::new()?;
    let spec = lazyscale_sim::bulk::BulkSpec {
        pods: a.pods as usize,
        deployments: (a.pods / a.pods_per_deployment.max(1)).max(1) as usize,
        namespaces: a.namespaces as usize,
        // Room for ~1,000 pods per kwok node.
        nodes: (a.pods / 1000).max(4),
        ..Default::default()
    };
    let server = populated_server(&spec, &rt)?;
    let client = rt.block_on(server.client())?;
    rt.block_on(lazyscale_testenv::install_crds(&client))?;
    let dir = crate::workspace_root().join("target/bench");
    // The agent's own requests, from the audit log (the control plane lists and watches pods too).
    let counts = || -> (u64, u64) {
        (
            server.agent_requests("LIST", "pods"),
            server.agent_requests("WATCH", "pods"),
        )
    };
    let settle = Duration::from_secs(5);
    let mut phases = Vec::new();
    let timeline = bench_peers::Timeline::start();

    progress("phase disabled: autoscaling.workload.enabled=false");
    let base = counts();
    let agent = Agent::start(
        AgentOptions::new(&binary, server.agent_kubeconfig_path())
            .args(["--workload-autoscaling-enabled=false".to_string()])
            .log_to(dir.join("agent-disabled.log")),
    )?;
    timeline.mark("lazyscale disabled");
    timeline.follow("lazyscale (disabled)", agent.pid());
    std::thread::sleep(settle);
    phases.push(measure("disabled", &agent, &server, base)?);
    agent.stop()?;

    progress("phase idle: enabled, no autoscaler");
    let base = counts();
    let agent = Agent::start(
        AgentOptions::new(&binary, server.agent_kubeconfig_path())
            .args(["--grace-period-seconds=5".to_string()])
            .log_to(dir.join("agent.log")),
    )?;
    timeline.mark("lazyscale idle");
    timeline.follow("lazyscale", agent.pid());
    std::thread::sleep(settle);
    phases.push(measure("idle", &agent, &server, base)?);

    progress("phase one_dpa: one DPA over a 10-pod deployment");
    let deployments = rt.block_on(
        Api::<k8s_openapi::api::apps::v1::Deployment>::all(client.clone())
            .list_metadata(&ListParams::default()),
    )?;
    let targets: Vec<(String, String)> = deployments
        .items
        .iter()
        .filter_map(|d| Some((d.metadata.namespace.clone()?, d.metadata.name.clone()?)))
        .collect();
    let (ns0, d0) = targets
        .first()
        .cloned()
        .context("the populated cluster has no deployment")?;
    let apply = |ns: &str, d: &str| -> Result<()> {
        let api = Api::<DynamicObject>::namespaced_with(
            client.clone(),
            ns,
            &lazyscale_testenv::fixtures::dpa_resource(),
        );
        rt.block_on(api.patch(d, &PatchParams::apply("bench"), &Patch::Apply(dpa(ns, d))))?;
        Ok(())
    };
    reset_peak(agent.pid());
    timeline.mark("one DPA");
    apply(&ns0, &d0)?;
    agent.wait_metrics(
        "the first DPA's pods in the cache",
        Duration::from_secs(300),
        |m| {
            m.get("lazyscale_pod_collection_synced").copied() == Some(1.0)
                && m.get("lazyscale_podcache_pods").copied().unwrap_or(0.0)
                    >= f64::from(a.pods_per_deployment)
        },
    )?;
    std::thread::sleep(settle);
    phases.push(measure("one_dpa", &agent, &server, base)?);

    // Churn where nothing is autoscaled: the agent must not decode it (its watches are scoped).
    if let Some(churn_ns) = targets.iter().map(|(n, _)| n.clone()).find(|n| *n != ns0) {
        progress(&format!(
            "phase churn: pods replaced in {churn_ns}, a namespace without autoscalers"
        ));
        let decoded = |m: &std::collections::HashMap<String, f64>| {
            m.get("lazyscale_podcache_decoded_pods_total")
                .copied()
                .unwrap_or(0.0)
        };
        let before = decoded(&agent.metrics()?);
        let churn = rt.block_on(churn(&client, &churn_ns, Duration::from_secs(30)))?;
        std::thread::sleep(settle);
        let agent_decoded = decoded(&agent.metrics()?) - before;
        let mut p = measure("churn", &agent, &server, base)?;
        p.value["churn"] = json!({
            "namespace": churn_ns,
            "seconds": churn.seconds,
            "pods_deleted": churn.deleted,
            "cluster_pod_events": churn.events,
            "cluster_pod_events_per_second": churn.events as f64 / churn.seconds,
            "agent_pods_decoded": agent_decoded,
            "agent_pods_decoded_per_second": agent_decoded / churn.seconds,
        });
        progress(&format!("churn: {}", p.value["churn"]));
        phases.push(p);
    }

    progress(&format!("phase all_dpas: {} DPAs", targets.len()));
    let reconciles_before = reconciles(&agent.metrics()?);
    reset_peak(agent.pid());
    timeline.mark("all DPAs");
    let t = Instant::now();
    // applied concurrently, as a GitOps sync or a profile rollout would
    rt.block_on(async {
        use futures::StreamExt;
        futures::stream::iter(targets.iter().skip(1))
            .map(|(ns, d)| {
                let api = Api::<DynamicObject>::namespaced_with(
                    client.clone(),
                    ns,
                    &lazyscale_testenv::fixtures::dpa_resource(),
                );
                async move {
                    api.patch(d, &PatchParams::apply("bench"), &Patch::Apply(dpa(ns, d)))
                        .await
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
    })?;
    progress(&format!(
        "{} DPAs applied in {:.1}s",
        targets.len(),
        t.elapsed().as_secs_f64()
    ));
    let expected = f64::from(a.pods);
    agent.wait_metrics("every pod in the cache", Duration::from_secs(900), |m| {
        m.get("lazyscale_podcache_pods").copied().unwrap_or(0.0) >= expected
    })?;
    let all_sync = t.elapsed().as_secs_f64();
    std::thread::sleep(settle);
    // The per-DPA state once the controller has reconciled every DPA (its period is 30 s).
    let reconciled = agent
        .wait_metrics("a reconcile of every DPA", Duration::from_secs(120), |m| {
            reconciles(m) >= reconciles_before + targets.len() as f64
        })
        .is_ok();
    let mut p = measure("all_dpas", &agent, &server, base)?;
    p.value["sync_seconds"] = json!(all_sync);
    p.value["per_dpa"] = per_dpa(&agent.metrics()?, targets.len(), reconciled);
    progress(&per_dpa_summary(&p.value["per_dpa"]));
    phases.push(p);

    progress("phase after_teardown: every DPA deleted, grace period elapsed");
    timeline.mark("teardown");
    for (ns, _) in targets
        .iter()
        .map(|(n, d)| (n.clone(), d.clone()))
        .collect::<std::collections::BTreeSet<_>>()
    {
        let api = Api::<DynamicObject>::namespaced_with(
            client.clone(),
            &ns,
            &lazyscale_testenv::fixtures::dpa_resource(),
        );
        rt.block_on(api.delete_collection(&DeleteParams::default(), &ListParams::default()))?;
    }
    agent.wait_metrics("the gate to close", Duration::from_secs(120), |m| {
        m.get("lazyscale_gate_open").copied() == Some(0.0)
    })?;
    std::thread::sleep(settle);
    phases.push(measure("after_teardown", &agent, &server, base)?);
    // What is still resident once the timers of the stopped stack's leftovers ran out (jemalloc's 10 s
    // decay, the connection pool's 15 s idle time, tokio's 10 s for an idle blocking thread).
    std::thread::sleep(Duration::from_secs(30));
    phases.push(measure("after_teardown_30s", &agent, &server, base)?);
    agent.stop()?;

    let phase = |name: &str| {
        phases
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.clone())
            .unwrap_or(Value::Null)
    };
    let (lazy_one, lazy_all) = (phase("one_dpa"), phase("all_dpas"));
    let ctx = bench_peers::Ctx {
        server: &server,
        rt: &rt,
        client: client.clone(),
        dir: dir.clone(),
        timeline: &timeline,
        settle,
    };
    let with_ratios = |mut v: Value, lazy: &Value| {
        v["ratios_to_lazyscale"] = bench_peers::ratios(&v, lazy);
        v
    };
    let mut peers = serde_json::Map::new();
    let failed = |name: &str, e: anyhow::Error| {
        progress(&format!("peer {name} failed: {e:#}"));
        json!({"error": format!("{e:#}")})
    };
    if !a.no_reference {
        progress("peer: a kube-rs reflector of full Pod objects");
        let v = bench_peers::kube_rs_reflector(&ctx, &reflector)
            .map(|v| with_ratios(v, &lazy_all))
            .unwrap_or_else(|e| failed("kube_rs_full_reflector", e));
        peers.insert("kube_rs_full_reflector".into(), v);
    }
    if let Some(bins) = &peer_bins {
        progress("peer: a client-go shared pod informer");
        let v = bench_peers::client_go_informer(&ctx, bins)
            .map(|v| with_ratios(v, &lazy_all))
            .unwrap_or_else(|e| failed("client_go_informer", e));
        peers.insert("client_go_informer".into(), v);
        progress("peers: the VPA recommender and admission controller, one VPA then a VPA per Deployment");
        match bench_peers::vpa(&ctx, bins, &targets, Duration::from_secs(a.vpa_interval_seconds)) {
            Ok((mut rec, mut adm)) => {
                for v in [&mut rec, &mut adm] {
                    v["ratios_to_lazyscale"] = bench_peers::ratios(v, &lazy_all);
                    if let Some(one) = v.get_mut("one_vpa") {
                        one["ratios_to_lazyscale_one_dpa"] = bench_peers::ratios(one, &lazy_one);
                    }
                }
                peers.insert("vpa_recommender".into(), rec);
                peers.insert("vpa_admission".into(), adm);
            }
            Err(e) => {
                let v = failed("vpa", e);
                peers.insert("vpa_recommender".into(), v.clone());
                peers.insert("vpa_admission".into(), v);
            }
        }
        peers.insert(
            "versions".into(),
            json!(
                lazyscale_testenv::peers::versions()
                    .unwrap_or_default()
                    .lines()
                    .collect::<Vec<_>>()
            ),
        );
    }
    let (samples, marks) = timeline.finish();
    let chart = dir.join("lazy-rss.html");
    std::fs::write(
        &chart,
        bench_peers::chart_html(
            &format!("RSS over the phases: lazyscale and its peers, {} pods", a.pods),
            &samples,
            &marks,
        ),
    )?;
    let result = json!({
        "pods": a.pods,
        "deployments": targets.len(),
        "phases": phases.into_iter().map(|p| { let _ = p.name; p.value }).collect::<Vec<_>>(),
        "peers": Value::Object(peers),
        "ratios_note": "ratios_to_lazyscale: peer / lazyscale's all_dpas phase (every pod cached); one_vpa: peer / lazyscale's one_dpa phase",
        "chart": "target/bench/lazy-rss.html",
        "total_seconds": started.elapsed().as_secs_f64(),
    });
    let text = serde_json::to_string_pretty(&result)?;
    std::fs::write(dir.join("lazy.json"), &text)?;
    progress(&format!("wrote target/bench/lazy.json and {}", chart.display()));
    progress(&per_dpa_summary(&lazy_all["per_dpa"]));
    println!("{text}");
    server.stop();
    Ok(())
}
