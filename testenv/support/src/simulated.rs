//! The agent tests' common scene: a namespace whose workloads the simulator drives ([`Simulated`]).
//!
//! The horizontal, vertical, H+V, apply, profile, restart and certificate tests all start the same way:
//! make sure the namespace exists (and has the `default` ServiceAccount the pods need), start the
//! simulator on it with PodMetrics every second, give each workload a load and create it, apply a DPA,
//! and wait until the workload's pods run. [`Simulated`] is that block, once.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use lazyscale_sim::load::{CpuProfile, LoadProfile, MemoryProfile};
use lazyscale_sim::units::{Bytes, Cpu};
use lazyscale_sim::{SimConfig, Simulator, WorkloadRef};

use crate::fixtures::ensure_namespace;
use crate::{Error, Result, wait_for};

/// The field manager the tests apply their DPAs with (a user's, not one of the agent's).
pub const FIELD_MANAGER: &str = "test";

/// How often the simulator writes PodMetrics in the tests (metrics-server's 15 s would make every test
/// wait minutes for a recommendation).
pub const METRICS_INTERVAL: Duration = Duration::from_secs(1);

/// The simulator's default resync in the tests: every object is reconciled again at least this often.
pub const RESYNC: Duration = Duration::from_secs(2);

const MI: f64 = 1024.0 * 1024.0;

/// A constant load: `cores` of CPU and `memory_mib` MiB of memory per pod, no growth with CPU, no leak,
/// no noise.
pub fn constant_load(cores: f64, memory_mib: f64) -> LoadProfile {
    LoadProfile {
        cpu: CpuProfile::Constant { value: Cpu(cores) },
        memory: MemoryProfile {
            base: Bytes(memory_mib * MI),
            per_cpu: Bytes(0.0),
            leak: Bytes(0.0),
        },
        noise: 0.0,
    }
}

/// A namespace driven by the simulator: its workloads get the load they are created with, PodMetrics
/// every [`METRICS_INTERVAL`], and the simulator answers their pods' resizes.
pub struct Simulated {
    client: kube::Client,
    namespace: String,
    sim: Simulator,
}

impl std::fmt::Debug for Simulated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulated")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Simulated {
    /// Makes sure `namespace` exists (created when absent) with its `default` ServiceAccount, and starts
    /// the simulator on it with the tests' [`METRICS_INTERVAL`] and [`RESYNC`].
    ///
    /// # Errors
    /// When the namespace cannot be read or created, its ServiceAccount does not appear within 30 s, or
    /// the simulator cannot list what it watches.
    pub async fn start(client: &kube::Client, namespace: &str) -> Result<Self> {
        Self::start_with(client, namespace, RESYNC).await
    }

    /// As [`Simulated::start`], with the simulator resyncing every `resync` (tests whose pods change
    /// quickly, such as resizes and OOM kills, use 1 s).
    ///
    /// # Errors
    /// As [`Simulated::start`].
    pub async fn start_with(client: &kube::Client, namespace: &str, resync: Duration) -> Result<Self> {
        ensure_namespace(client, namespace).await?;
        let sim = Simulator::start(
            client.clone(),
            SimConfig {
                namespaces: vec![namespace.to_owned()],
                metrics_interval: METRICS_INTERVAL,
                resync,
                ..SimConfig::default()
            },
        )
        .await
        .map_err(|e| Error::NotReady(format!("simulator on {namespace}: {e}")))?;
        Ok(Simulated {
            client: client.clone(),
            namespace: namespace.to_owned(),
            sim,
        })
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The client the scene was started with.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The simulator, to change a workload's load or resize answers during a test.
    pub fn sim(&self) -> &Simulator {
        &self.sim
    }

    /// Sets the load of Deployment `name` of this namespace.
    pub fn set_load(&self, name: &str, load: LoadProfile) {
        self.sim
            .set_load(&WorkloadRef::deployment(&self.namespace, name), load);
    }

    /// Deployments of this namespace.
    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// DPAs of this namespace through a dynamic client (status fields read as JSON).
    pub fn dpas(&self) -> Api<DynamicObject> {
        crate::fixtures::dpa_api(self.client.clone(), &self.namespace)
    }

    /// Gives Deployment `d` the load `load`, then creates it in this namespace (the load is set first,
    /// so its first pods already use it).
    ///
    /// # Errors
    /// When the API server refuses the Deployment.
    pub async fn deployment(&self, d: &Deployment, load: LoadProfile) -> Result<()> {
        let name = d.metadata.name.as_deref().unwrap_or_default();
        self.set_load(name, load);
        self.deployments().create(&PostParams::default(), d).await?;
        Ok(())
    }

    /// As [`Simulated::deployment`], for a StatefulSet.
    ///
    /// # Errors
    /// When the API server refuses the StatefulSet.
    pub async fn statefulset(&self, s: &StatefulSet, load: LoadProfile) -> Result<()> {
        let name = s.metadata.name.as_deref().unwrap_or_default();
        self.sim
            .set_load(&WorkloadRef::statefulset(&self.namespace, name), load);
        Api::<StatefulSet>::namespaced(self.client.clone(), &self.namespace)
            .create(&PostParams::default(), s)
            .await?;
        Ok(())
    }

    /// Applies the DPA object `dpa` (`apiVersion`, `kind`, `metadata.name`, `spec`) in this namespace by
    /// server-side apply under [`FIELD_MANAGER`]; applying it again changes it.
    ///
    /// # Errors
    /// When `dpa` has no `metadata.name` or the API server refuses it.
    pub async fn apply_dpa(&self, dpa: &serde_json::Value) -> Result<()> {
        let name = dpa["metadata"]["name"]
            .as_str()
            .ok_or_else(|| Error::NotReady(format!("a DPA without metadata.name: {dpa}")))?;
        self.dpas()
            .patch(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(dpa))
            .await?;
        Ok(())
    }

    /// The pods labelled `app=<app>` that are not being deleted (none when the list fails: the callers
    /// poll).
    pub async fn live_pods(&self, app: &str) -> Vec<Pod> {
        Api::<Pod>::namespaced(self.client.clone(), &self.namespace)
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// The live pods of `app` when there are exactly `n` and all of them are Running.
    pub async fn running(&self, app: &str, n: usize) -> Option<Vec<Pod>> {
        let pods = self.live_pods(app).await;
        let running = pods
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        (pods.len() == n && running == n).then_some(pods)
    }

    /// Waits until `app` has exactly `n` live pods, all Running, and returns them.
    ///
    /// # Panics
    /// After `secs` seconds without them (see [`wait_for`]).
    pub async fn wait_running(&self, app: &str, n: usize, secs: u64) -> Vec<Pod> {
        wait_for(
            secs,
            &format!("{n} running {app} pods in {}", self.namespace),
            || self.running(app, n),
        )
        .await
    }

    /// Stops the simulator.
    pub async fn shutdown(self) {
        self.sim.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_load_is_what_it_says() {
        let l = constant_load(0.5, 64.0);
        assert!(matches!(l.cpu, CpuProfile::Constant { value: Cpu(c) } if c == 0.5));
        assert_eq!(l.memory.base.0, 64.0 * 1024.0 * 1024.0);
        assert_eq!((l.memory.per_cpu.0, l.memory.leak.0, l.noise), (0.0, 0.0, 0.0));
    }
}
