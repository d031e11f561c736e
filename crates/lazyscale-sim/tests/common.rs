//! Shared helpers of the integration tests.
#![allow(dead_code, missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use lazyscale_sim::{SimConfig, Simulator};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

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

/// Polls `f` until it returns Some, or panics with `what` after `secs`.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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

pub fn deployment_yaml(ns: &str, name: &str, replicas: i32, extra: &str) -> Deployment {
    let text = format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
{extra}
    spec:
      containers:
        - name: app
          image: example/app:1
          resources:
            requests: {{cpu: 100m, memory: 64Mi}}
            limits: {{cpu: 500m, memory: 128Mi}}
"#
    );
    serde_saphyr::from_str(&text).expect("deployment yaml")
}

pub async fn create_deployment(client: &Client, d: &Deployment) -> Deployment {
    let ns = d.metadata.namespace.clone().expect("namespace");
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), d)
        .await
        .expect("create deployment")
}

pub fn statefulset_yaml(ns: &str, name: &str, replicas: i32) -> StatefulSet {
    let text = format!(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  serviceName: {name}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: db
          image: example/db:1
          resources:
            requests: {{cpu: 100m, memory: 64Mi}}
"#
    );
    serde_saphyr::from_str(&text).expect("statefulset yaml")
}
