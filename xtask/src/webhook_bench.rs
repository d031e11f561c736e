//! `cargo xtask bench webhook`: AdmissionReview requests over TLS on loopback at a fixed rate against the
//! agent's webhook, (a) with the stack down (fast path) and (b) with 1,000 DPAs known and every request
//! patched; latency percentiles, errors and the agent's CPU time as JSON.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use lazyscale_testenv::{Server, ServerOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::agent::{Agent, AgentOptions};

/// Options.
#[derive(clap::Args)]
pub struct WebhookArgs {
    /// Requests per second.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Seconds per path.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// DPAs known on the patch path.
    #[arg(long, default_value_t = 1000)]
    dpas: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

/// A realistic pod CREATE review for a pod of deployment `deploy` in `ns`.
fn review(i: usize, ns: &str, deploy: &str) -> Vec<u8> {
    let rs = format!("{deploy}-5d8f7c9b6");
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": format!("{rs}-"), "namespace": ns,
            "labels": {"app": deploy, "pod-template-hash": "5d8f7c9b6", "team": "payments", "tier": "backend",
                "app.kubernetes.io/name": deploy, "app.kubernetes.io/version": "1.4.2"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": "3f1b2c4d-0000-4000-8000-000000000001",
                "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"containers": [
            {"name": "app", "image": "registry.example/app:1.4.2", "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "LOG_LEVEL", "value": "info"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}}},
            {"name": "proxy", "image": "registry.example/proxy:1.31",
                "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default"}});
    let r = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": format!("00000000-0000-4000-8000-{i:012}"), "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"}, "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": ns, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod, "oldObject": null, "dryRun": false, "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}}});
    serde_json::to_vec(&r).unwrap_or_default()
}

struct PathResult {
    latencies_us: Vec<u64>,
    errors: u64,
    patched: u64,
}

async fn read_response<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Result<(u16, Vec<u8>)> {
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let code = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .context("no content-length")?;
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    bail!("connection closed mid-body");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok((code, buf[end + 4..end + 4 + len].to_vec()));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn drive(port: u16, args: &WebhookArgs, bodies: Arc<Vec<Vec<u8>>>) -> Result<PathResult> {
    let config = lazyscale_testenv::tls::trust_any_certificate();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let total = args.rate as u64 * args.seconds;
    let per_conn = total / args.connections as u64;
    let interval = Duration::from_secs_f64(args.connections as f64 / args.rate as f64);
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let connector = connector.clone();
        let bodies = bodies.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = PathResult {
                latencies_us: Vec::with_capacity(per_conn as usize),
                errors: 0,
                patched: 0,
            };
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            tcp.set_nodelay(true)?;
            let mut tls = connector
                .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
                .await?;
            let mut buf = Vec::new();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for i in 0..per_conn {
                tick.tick().await;
                let body = &bodies[(c + i as usize * 7) % bodies.len()];
                let head = format!(
                    "POST /mutate/pods HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let t = Instant::now();
                tls.write_all(head.as_bytes()).await?;
                tls.write_all(body).await?;
                match read_response(&mut tls, &mut buf).await {
                    Ok((200, resp)) => {
                        r.latencies_us.push(t.elapsed().as_micros() as u64);
                        let v: Value = serde_json::from_slice(&resp).unwrap_or(Value::Null);
                        if v["response"]["allowed"] != true {
                            r.errors += 1;
                        } else if v["response"].get("patch").is_some() {
                            r.patched += 1;
                        }
                    }
                    _ => r.errors += 1,
                }
            }
            anyhow::Ok(r)
        }));
    }
    let mut all = PathResult {
        latencies_us: Vec::new(),
        errors: 0,
        patched: 0,
    };
    for t in tasks {
        let r = t.await??;
        all.latencies_us.extend(r.latencies_us);
        all.errors += r.errors;
        all.patched += r.patched;
    }
    Ok(all)
}

fn summary(r: &mut PathResult) -> Value {
    r.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if r.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((r.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        r.latencies_us[i] as f64 / 1000.0
    };
    json!({"requests": r.latencies_us.len() as u64 + r.errors, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
        "max_ms": pct(1.0), "errors": r.errors, "patched": r.patched})
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs the webhook benchmark.
pub fn run(args: WebhookArgs) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    crate::testenv_build()?;
    let binary = crate::agent::build_agent()?;
    let server = Server::start(ServerOptions::default())
        .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(server.client())?;
    rt.block_on(lazyscale_testenv::install_crds(&client))?;
    let dir = crate::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let agent = Agent::start(
        AgentOptions::new(&binary, server.agent_kubeconfig_path())
            .args(["--grace-period-seconds=0".to_string()])
            .log_to(dir.join("agent-webhook.log")),
    )?;
    let port = agent.webhook_port;
    let ns = "bench";
    let deployments: Vec<String> = (0..args.dpas).map(|i| format!("svc-{i:04}")).collect();
    let bodies = Arc::new(
        deployments
            .iter()
            .enumerate()
            .map(|(i, d)| review(i, ns, d))
            .collect::<Vec<_>>(),
    );
    eprintln!(
        "[bench] fast path: {} req/s for {} s, stack down",
        args.rate, args.seconds
    );
    let cpu0 = cpu_seconds(agent.pid());
    let mut fast = rt.block_on(drive(port, &args, bodies.clone()))?;
    let cpu_fast = cpu_seconds(agent.pid()) - cpu0;

    eprintln!("[bench] creating {} DPAs with vertical targets", args.dpas);
    rt.block_on(async {
        use futures::StreamExt;
        let ns_api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
        ns_api
            .patch(ns, &PatchParams::apply("bench"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})))
            .await?;
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &lazyscale_testenv::fixtures::dpa_resource());
        futures::stream::iter(deployments.iter())
            .map(|d| {
                let api = api.clone();
                async move {
                    let obj = json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler",
                        "metadata": {"name": d, "namespace": ns},
                        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": d}, "owner": "Local",
                            "objectives": [{"type": "PodResource", "podResource": {"name": "cpu", "value": {"type": "Utilization", "utilization": 70}}}]}});
                    api.patch(d, &PatchParams::apply("bench"), &Patch::Apply(&obj)).await?;
                    let status = json!({"status": {"vertical": {"target": {"source": "Local", "generatedAt": "2026-01-01T00:00:00Z",
                        "version": "bench1", "podCPURequest": "300m", "podMemoryRequest": "384Mi",
                        "desiredResources": [{"name": "app", "requests": {"cpu": "250m", "memory": "256Mi"}},
                            {"name": "proxy", "requests": {"cpu": "50m", "memory": "128Mi"}}]}}}});
                    api.patch_status(d, &PatchParams::default(), &Patch::Merge(&status)).await
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        anyhow::Ok(())
    })?;
    let want = args.dpas as f64;
    agent.wait_metrics("the stack with every DPA", Duration::from_secs(120), |m| {
        m.get("lazyscale_gate_open").copied() == Some(1.0)
            && m.get("lazyscale_autoscalers{source=\"Dpa\"}").copied() == Some(want)
    })?;
    std::thread::sleep(Duration::from_secs(3));
    eprintln!(
        "[bench] patch path: {} req/s for {} s, {} DPAs known",
        args.rate, args.seconds, args.dpas
    );
    let cpu1 = cpu_seconds(agent.pid());
    let mut patch = rt.block_on(drive(port, &args, bodies))?;
    let cpu_patch = cpu_seconds(agent.pid()) - cpu1;
    let out = json!({
        "rate_per_second": args.rate,
        "seconds_per_path": args.seconds,
        "fast_path": summary(&mut fast),
        "patch_path": summary(&mut patch),
        "agent_cpu_seconds": cpu_fast + cpu_patch,
        "agent_cpu_seconds_fast_path": cpu_fast,
        "agent_cpu_seconds_patch_path": cpu_patch,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    agent.stop()?;
    drop(rt);
    server.stop();
    Ok(())
}
