//! Shared helpers of the end-to-end tests: CRDs, a simulated namespace, a controller with a short
//! recommendation period, and polling.
#![allow(
    dead_code,
    unused_imports,
    missing_docs,
    clippy::expect_used,
    clippy::unwrap_used
)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use lazyscale_api::DatadogPodAutoscaler;
use lazyscale_controller::{Config, Controller, Handle, WatchedPods};
use lazyscale_core::horizontal::recommender;
use lazyscale_sim::load::{CpuProfile, LoadProfile};
use lazyscale_sim::units::Cpu;
use lazyscale_sim::{SimConfig, Simulator, WorkloadRef};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use lazyscale_testenv::fixtures::{condition, horizontal_spec as spec};
pub use lazyscale_testenv::{init_tracing, wait_for};

/// The recommendation period of the tests.
pub const PERIOD: Duration = Duration::from_secs(2);

/// A test namespace with the simulator running in it.
pub struct Cluster {
    pub client: Client,
    pub ns: String,
    pub sim: Simulator,
}

pub async fn cluster() -> Cluster {
    init_tracing();
    let env = lazyscale_testenv::TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace().await;
    lazyscale_testenv::install_crds(&client)
        .await
        .expect("CRDs installed");
    let sim = Simulator::start(
        client.clone(),
        SimConfig {
            namespaces: vec![ns.clone()],
            metrics_interval: Duration::from_millis(500),
            resync: Duration::from_secs(2),
            ..SimConfig::default()
        },
    )
    .await
    .expect("simulator starts");
    Cluster { client, ns, sim }
}

impl Cluster {
    /// Creates a Deployment with `replicas` pods requesting 500m CPU.
    pub async fn deployment(&self, name: &str, replicas: i32) {
        let d = lazyscale_testenv::fixtures::app_deployment(name, replicas, "500m", "128Mi");
        Api::<Deployment>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &d)
            .await
            .expect("create deployment");
    }

    /// Sets the total CPU demand of a Deployment, in cores.
    pub fn load(&self, name: &str, cores: f64) {
        self.sim.set_load(
            &WorkloadRef::deployment(&self.ns, name),
            LoadProfile {
                cpu: CpuProfile::Constant { value: Cpu(cores) },
                ..LoadProfile::default()
            },
        );
    }

    /// `spec.replicas` of a Deployment.
    pub async fn replicas(&self, name: &str) -> i32 {
        Api::<Deployment>::namespaced(self.client.clone(), &self.ns)
            .get(name)
            .await
            .expect("get deployment")
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(0)
    }

    /// Applies a DPA from its spec (JSON).
    pub async fn dpa(&self, name: &str, spec: serde_json::Value) {
        let obj = serde_json::json!({
            "apiVersion": "datadoghq.com/v1alpha2",
            "kind": "DatadogPodAutoscaler",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": spec,
        });
        Api::<DatadogPodAutoscaler>::namespaced(self.client.clone(), &self.ns)
            .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&obj))
            .await
            .expect("apply DPA");
    }

    pub async fn get_dpa(&self, name: &str) -> DatadogPodAutoscaler {
        Api::<DatadogPodAutoscaler>::namespaced(self.client.clone(), &self.ns)
            .get(name)
            .await
            .expect("get DPA")
    }

    /// Starts a controller (leader unless told otherwise) for this namespace.
    pub fn controller(&self, leader: watch::Receiver<bool>) -> Running {
        let (pods, pods_task) = WatchedPods::start(self.client.clone(), Some(&self.ns));
        let config = Config {
            recommendation_period: PERIOD,
            namespace: Some(self.ns.clone()),
            recommender: recommender::Settings {
                sample_max_age: Duration::from_secs(10),
                cpu_initialization_period: Duration::from_secs(1),
                initial_readiness_delay: Duration::from_millis(500),
                ..recommender::Settings::default()
            },
            ..Config::default()
        };
        let controller = Controller::new(self.client.clone(), config, Arc::new(pods));
        let handle = controller.handle();
        let stop = CancellationToken::new();
        let task = tokio::spawn(controller.run(leader, stop.clone()));
        Running {
            handle,
            stop,
            task,
            pods_task,
        }
    }
}

pub struct Running {
    pub handle: Handle,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
    pub pods_task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        self.pods_task.abort();
    }
}
