//! Cluster set-up shared by the demo and the benchmarks.

use std::time::Duration;

use anyhow::Result;

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
