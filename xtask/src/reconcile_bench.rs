//! The reconcile benchmark (`cargo xtask bench reconcile --dpas 1000`).
//!
//! [`run`] creates, in a fresh namespace, `dpas` Deployments of `pods_per_dpa` replicas, one DPA per
//! Deployment, and a PodMetrics object per pod (70 % CPU utilization against a 70 % target, so
//! nothing scales); the pods themselves are served by a [`StaticPods`] source, as the agent serves
//! them from its in-memory pod cache. It then runs two full passes (metrics list + reconcile of
//! every DPA): the first writes every status, the second finds nothing changed. CPU time is the
//! process's user + system time during each pass, read from `/proc/self/stat`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use lazyscale_api::DatadogPodAutoscaler;
use serde::Serialize;
use serde_json::json;

use lazyscale_api::time;
use lazyscale_controller::pods::{ContainerRequests, PodPhase, PodSample, StaticPods};
use lazyscale_controller::{Config, Controller, PassReport};

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating the objects failed.
    #[error("cannot create {0}")]
    Setup(&'static str, #[source] kube::Error),
    /// Decoding a built object failed.
    #[error("cannot build {0}")]
    Build(&'static str, #[source] serde_json::Error),
}

/// What to create.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Number of DPAs (and Deployments).
    pub dpas: usize,
    /// Pods per Deployment.
    pub pods_per_dpa: usize,
    /// Namespace to create and use.
    pub namespace: String,
    /// Concurrent requests while creating objects.
    pub setup_concurrency: usize,
    /// Reconcile concurrency of the controller.
    pub concurrency: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            dpas: 1000,
            pods_per_dpa: 10,
            namespace: "bench-reconcile".into(),
            setup_concurrency: 32,
            concurrency: 16,
        }
    }
}

/// The benchmark result (serialize it as JSON).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BenchReport {
    /// DPAs reconciled per pass.
    pub dpas: usize,
    /// CPU seconds of the costlier of the two passes.
    pub cpu_seconds_per_pass: f64,
    /// API requests of a pass once statuses are written (the steady state).
    pub api_requests_per_pass: u64,
    /// Status writes of the first pass.
    pub status_writes_first_pass: u64,
    /// Status writes of the second pass (nothing changed).
    pub status_writes_unchanged_pass: u64,
    /// CPU seconds of the first pass.
    pub cpu_seconds_first_pass: f64,
    /// CPU seconds of the unchanged pass.
    pub cpu_seconds_unchanged_pass: f64,
    /// API requests of the first pass.
    pub api_requests_first_pass: u64,
    /// Wall-clock seconds of the first pass.
    pub wall_seconds_first_pass: f64,
    /// Wall-clock seconds of the unchanged pass.
    pub wall_seconds_unchanged_pass: f64,
    /// Scale writes over both passes (0 expected).
    pub scale_writes: u64,
    /// Failed reconciles over both passes (0 expected).
    pub errors: u64,
    /// Seconds spent creating the objects.
    pub setup_seconds: f64,
}

/// CPU time of this process (user + system), from `/proc/self/stat`; zero where unavailable.
pub fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Linux reports in USER_HZ, 100 on every supported architecture.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn dpa(name: &str) -> Result<DatadogPodAutoscaler, serde_json::Error> {
    serde_json::from_value(json!({
        "apiVersion": "datadoghq.com/v1alpha2",
        "kind": "DatadogPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "owner": "Local",
            "constraints": {"minReplicas": 1, "maxReplicas": 50},
            "objectives": [{"type": "PodResource", "podResource": {"name": "cpu", "value": {"type": "Utilization", "utilization": 70}}}],
            "fallback": {"horizontal": {"direction": "All"}}
        }
    }))
}

/// Creates the objects and runs the two passes.
pub async fn run(client: Client, opts: &BenchOptions) -> Result<BenchReport, Error> {
    let setup = Instant::now();
    let ns = opts.namespace.as_str();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match ns_api.create(&PostParams::default(), &namespace).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(Error::Setup("namespace", e)),
    }
    let names: Vec<String> = (0..opts.dpas).map(|i| format!("w{i:05}")).collect();
    let pods = Arc::new(StaticPods::new());
    let now = time::now();
    let replicas = i32::try_from(opts.pods_per_dpa).unwrap_or(i32::MAX);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let dpas: Api<DatadogPodAutoscaler> = Api::namespaced(client.clone(), ns);
    let metrics_ar = ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    };
    let metrics: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &metrics_ar);
    let stamp = k8s_openapi::jiff::Timestamp::now().to_string();
    let ssa = PatchParams::apply("lazyscale-bench").force();
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let (deployments, dpas, metrics, pods, ssa, stamp) = (
                deployments.clone(),
                dpas.clone(),
                metrics.clone(),
                pods.clone(),
                ssa.clone(),
                stamp.clone(),
            );
            async move {
                let d = lazyscale_testenv::fixtures::app_deployment(&name, replicas, "500m", "256Mi");
                match deployments.create(&PostParams::default(), &d).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(Error::Setup("deployment", e)),
                }
                let obj = dpa(&name).map_err(|e| Error::Build("DatadogPodAutoscaler", e))?;
                dpas.patch(&name, &ssa, &Patch::Apply(&obj))
                    .await
                    .map_err(|e| Error::Setup("DatadogPodAutoscaler", e))?;
                let mut samples = Vec::with_capacity(opts.pods_per_dpa);
                for p in 0..opts.pods_per_dpa {
                    let pod = format!("{name}-5d8f7c9b4-{p:05}");
                    let m = json!({
                        "apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
                        "metadata": {"name": pod, "namespace": ns},
                        "timestamp": stamp, "window": "15s",
                        "containers": [{"name": "app", "usage": {"cpu": "350m", "memory": "128Mi"}}],
                    });
                    metrics
                        .patch(&pod, &ssa, &Patch::Apply(&m))
                        .await
                        .map_err(|e| Error::Setup("PodMetrics", e))?;
                    samples.push(PodSample {
                        name: pod,
                        phase: PodPhase::Running,
                        deleting: false,
                        ready: true,
                        ready_changed_at: Some(now - Duration::from_secs(3_590)),
                        started_at: Some(now - Duration::from_secs(3_600)),
                        containers: vec![ContainerRequests {
                            name: "app".into(),
                            cpu_millis: Some(500),
                            memory_bytes: Some(256 << 20),
                        }],
                    });
                }
                pods.set(ns, "Deployment", &name, samples);
                Ok::<(), Error>(())
            }
        })
        .buffer_unordered(opts.setup_concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    let setup_seconds = setup.elapsed().as_secs_f64();

    let config = Config {
        namespace: Some(ns.to_owned()),
        concurrency: opts.concurrency,
        limit: opts.dpas.max(1000),
        ..Config::default()
    };
    let mut controller = Controller::new(client, config, pods);
    let cache = controller.start_cache().await;
    let measure = |r: PassReport, cpu: Duration| (r, cpu.as_secs_f64());
    let cpu0 = process_cpu();
    let first = controller.pass().await;
    let cpu1 = process_cpu();
    let (first, first_cpu) = measure(first, cpu1.saturating_sub(cpu0));
    // let the reflector catch up with the statuses written
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu2 = process_cpu();
    let second = controller.pass().await;
    let cpu3 = process_cpu();
    let (second, second_cpu) = measure(second, cpu3.saturating_sub(cpu2));
    if let Some(task) = cache {
        task.abort();
    }
    Ok(BenchReport {
        dpas: first.dpas,
        cpu_seconds_per_pass: first_cpu.max(second_cpu),
        api_requests_per_pass: second.counters.api_requests,
        status_writes_first_pass: first.counters.status_writes,
        status_writes_unchanged_pass: second.counters.status_writes,
        cpu_seconds_first_pass: first_cpu,
        cpu_seconds_unchanged_pass: second_cpu,
        api_requests_first_pass: first.counters.api_requests,
        wall_seconds_first_pass: first.elapsed.as_secs_f64(),
        wall_seconds_unchanged_pass: second.elapsed.as_secs_f64(),
        scale_writes: first.counters.scale_writes + second.counters.scale_writes,
        errors: first.counters.errors + second.counters.errors,
        setup_seconds,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A small run on the test control plane: the first pass writes every status, an unchanged pass
    /// writes nothing, nothing scales, and a pass costs one metrics list plus one scale read per DPA.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unchanged_pass_writes_nothing() {
        lazyscale_testenv::init_tracing();
        let env = lazyscale_testenv::TestEnv::shared();
        let client = env.client().await;
        lazyscale_testenv::install_crds(&client).await.unwrap();
        let opts = BenchOptions {
            dpas: 20,
            namespace: format!("bench-small-{}", std::process::id()),
            ..BenchOptions::default()
        };
        let r = run(client, &opts).await.unwrap();
        assert_eq!(r.dpas, 20);
        assert_eq!(r.errors, 0);
        assert_eq!(r.status_writes_first_pass, 20);
        assert_eq!(r.status_writes_unchanged_pass, 0);
        assert_eq!(r.scale_writes, 0);
        assert_eq!(r.api_requests_per_pass, 1 + 20);
    }
}
