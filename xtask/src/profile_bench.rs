//! The ClusterProfile case of the reconcile benchmark (`cargo xtask bench reconcile --profiles`).
//!
//! [`run`] creates, in a fresh namespace, `workloads` Deployments labelled with one ClusterProfile (0
//! replicas: the profile controller reads only their metadata) and the profile, starts the profile
//! controller on its own watches and runs passes by hand: the first generates every DPA, the second
//! finds nothing changed (it must write nothing), and after a profile edit a third writes every DPA
//! again. CPU time is the process's user + system time during each pass (`/proc/self/stat`), which
//! includes the controller's watches decoding what arrives meanwhile.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use lazyscale_api::DatadogPodAutoscalerClusterProfile;
use lazyscale_api::consts::labels;
use lazyscale_controller::profiles::{Config, CounterSnapshot, Driver, PassReport, ProfileController};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::reconcile_bench::process_cpu;

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating the objects failed.
    #[error("cannot create {0}")]
    Setup(&'static str, #[source] kube::Error),
    /// A fixture could not be built.
    #[error("cannot build {0}: {1}")]
    Build(&'static str, String),
    /// The controller did not get where it should within the time allowed.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

/// One measured pass.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Pass {
    /// CPU seconds of the process during the pass.
    pub cpu_seconds: f64,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
    /// Seconds spent gathering inputs and planning (no I/O).
    pub plan_seconds: f64,
    /// Writes of any kind (DPAs, profile status, events).
    pub writes: u64,
    /// What the controller counted.
    pub counters: CounterSnapshot,
}

/// The benchmark result (serialize it as JSON).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProfileBenchReport {
    /// Labelled Deployments under the one profile.
    pub workloads: usize,
    /// The pass that generates every DPA.
    pub first_pass: Pass,
    /// The pass after it, nothing changed: 0 writes expected.
    pub unchanged_pass: Pass,
    /// The pass after a profile edit: every DPA written again.
    pub profile_edit_pass: Pass,
    /// CPU seconds of the costliest of the three passes (the target: ≤ 1 s).
    pub cpu_seconds_per_pass: f64,
    /// Seconds spent creating the objects.
    pub setup_seconds: f64,
}

fn profile(max_replicas: i32) -> serde_json::Value {
    json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscalerClusterProfile",
        "metadata": {"name": "bench"},
        "spec": {"template": {
            "constraints": {"minReplicas": 1, "maxReplicas": max_replicas},
            "objectives": [{"type": "PodResource", "podResource": {"name": "cpu", "value": {"type": "Utilization", "utilization": 70}}}]}}})
}

async fn measured(driver: &mut Driver) -> Result<Pass, Error> {
    let cpu = process_cpu();
    let wall = Instant::now();
    let report: PassReport = driver.pass().await.ok_or(Error::Timeout("the inputs to list"))?;
    Ok(Pass {
        cpu_seconds: (process_cpu().saturating_sub(cpu)).as_secs_f64(),
        wall_seconds: wall.elapsed().as_secs_f64(),
        plan_seconds: Duration::from_micros(report.plan_micros).as_secs_f64(),
        writes: report.counters.writes(),
        counters: report.counters,
    })
}

/// Waits until `ok` holds for the driver, polling every 100 ms for at most `secs` seconds.
async fn wait(
    driver: &mut Driver,
    secs: u64,
    what: &'static str,
    ok: impl Fn(&mut Driver) -> bool,
) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok(driver) {
        if Instant::now() > deadline {
            return Err(Error::Timeout(what));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Creates the objects and runs the three passes.
pub async fn run(client: Client, workloads: usize) -> Result<ProfileBenchReport, Error> {
    let setup = Instant::now();
    let ns = "bench-profiles";
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
    {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => return Err(Error::Setup("namespace", e)),
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    futures::stream::iter(0..workloads)
        .map(|i| {
            let deployments = deployments.clone();
            async move {
                let mut d = lazyscale_testenv::fixtures::deployment(ns, &format!("w{i:05}"), 0, "")
                    .map_err(|e| Error::Build("deployment", e.to_string()))?;
                d.metadata.labels = Some([(labels::PROFILE.to_owned(), "bench".to_owned())].into());
                match deployments.create(&PostParams::default(), &d).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(Error::Setup("deployment", e)),
                }
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    let profiles: Api<DatadogPodAutoscalerClusterProfile> = Api::all(client.clone());
    let ssa = PatchParams::apply("lazyscale-bench").force();
    profiles
        .patch("bench", &ssa, &Patch::Apply(profile(10)))
        .await
        .map_err(|e| Error::Setup("profile", e))?;
    // the built-in profiles, as the agent applies them at startup
    lazyscale_controller::profiles::ensure_builtins(&client)
        .await
        .map_err(|e| Error::Build("built-in profiles", e.to_string()))?;
    let setup_seconds = setup.elapsed().as_secs_f64();

    let stop = CancellationToken::new();
    let mut driver = ProfileController::new(client.clone(), Config::default()).start(&stop);
    // every input listed, the labelled Deployments and the profile included
    wait(&mut driver, 60, "the inputs to list", Driver::is_ready).await?;
    let first_pass = measured(&mut driver).await?;
    // the controller's DPA watch has every generated DPA
    wait(&mut driver, 60, "the generated DPAs to be seen", |d| {
        d.dpas_seen() >= workloads
    })
    .await?;
    // and the profile watch the status written
    tokio::time::sleep(Duration::from_secs(1)).await;
    let unchanged_pass = measured(&mut driver).await?;
    profiles
        .patch("bench", &ssa, &Patch::Apply(profile(20)))
        .await
        .map_err(|e| Error::Setup("profile edit", e))?;
    // the profile watch has the edit
    tokio::time::sleep(Duration::from_secs(1)).await;
    let profile_edit_pass = measured(&mut driver).await?;
    stop.cancel();
    Ok(ProfileBenchReport {
        workloads,
        cpu_seconds_per_pass: first_pass
            .cpu_seconds
            .max(unchanged_pass.cpu_seconds)
            .max(profile_edit_pass.cpu_seconds),
        first_pass,
        unchanged_pass,
        profile_edit_pass,
        setup_seconds,
    })
}
