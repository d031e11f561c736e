//! Shared helpers of the integration tests.
#![allow(
    dead_code,
    unused_imports,
    missing_docs,
    clippy::expect_used,
    clippy::unwrap_used
)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use lazyscale_sim::{SimConfig, Simulator};

pub use lazyscale_testenv::fixtures::{deployment, statefulset};
pub use lazyscale_testenv::{init_tracing, wait_for};

pub async fn start(client: &Client, ns: &str) -> Simulator {
    init_tracing();
    Simulator::start(
        client.clone(),
        SimConfig {
            namespaces: vec![ns.to_string()],
            metrics: false,
            resync: Duration::from_secs(5),
            ..SimConfig::default()
        },
    )
    .await
    .expect("simulator starts")
}

pub async fn pods(client: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list pods")
        .items
}

pub fn running_ready(p: &Pod) -> bool {
    let st = p.status.as_ref();
    st.and_then(|s| s.phase.as_deref()) == Some("Running")
        && st
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub async fn create_deployment(client: &Client, d: &Deployment) -> Deployment {
    let ns = d.metadata.namespace.clone().expect("namespace");
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), d)
        .await
        .expect("create deployment")
}
