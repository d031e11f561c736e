//! Cluster set-up shared by the demo and the benchmarks.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};

/// The DatadogPodAutoscaler resource.
pub fn dpa_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("datadoghq.com", "v1alpha2", "DatadogPodAutoscaler"),
        "datadogpodautoscalers",
    )
}

/// Installs lazyscale's CRDs (as `lazyscale crds` prints them) and waits until they are established.
pub async fn install_crds(client: &kube::Client) -> Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in lazyscale_api::crds() {
        let name = crd.metadata.name.clone().context("a CRD without a name")?;
        api.patch(
            &name,
            &PatchParams::apply("lazyscale-xtask").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("install CRD {name}"))?;
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("CRD {name} not established"))??;
    }
    Ok(())
}

/// The running simulated cluster of the demo.
pub struct DemoCluster {
    /// One line per workload.
    pub summary: String,
    sim: Option<lazyscale_sim::Simulator>,
    rt: tokio::runtime::Handle,
}

impl DemoCluster {
    /// Changes the load of a Deployment.
    pub fn set_load(&self, ns: &str, name: &str, load: lazyscale_sim::load::LoadProfile) {
        if let Some(sim) = &self.sim {
            sim.set_load(&lazyscale_sim::WorkloadRef::deployment(ns, name), load);
        }
    }
}

impl Drop for DemoCluster {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            let _ = self
                .rt
                .block_on(async move { tokio::time::timeout(Duration::from_secs(10), sim.shutdown()).await });
        }
    }
}

/// The simulator's demo scenario (namespaces, workloads and load profiles; its timed events are not
/// played, so the narration stays in control of the autoscalers).
pub async fn start_demo_cluster(client: &kube::Client) -> Result<DemoCluster> {
    let path = crate::workspace_root().join("crates/lazyscale-sim/examples/scenarios/demo.yaml");
    let sc = lazyscale_sim::scenario::load(&path)?;
    lazyscale_sim::scenario::setup(client, &sc).await?;
    // Fresh metrics every 5 s, so the demo's recommendations come quickly.
    let cfg = lazyscale_sim::SimConfig {
        metrics_interval: Duration::from_secs(5),
        ..sc.sim_config()
    };
    let sim = lazyscale_sim::Simulator::start(client.clone(), cfg).await?;
    lazyscale_sim::scenario::register(&sim, &sc);
    let summary = sc
        .workloads
        .iter()
        .map(|w| {
            let w = &w.value;
            format!(
                "  {:?} {}/{} replicas={}",
                w.kind, w.namespace, w.name, w.replicas
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    Ok(DemoCluster {
        summary,
        sim: Some(sim),
        rt: tokio::runtime::Handle::current(),
    })
}
