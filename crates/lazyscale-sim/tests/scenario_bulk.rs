//! Scenarios and bulk population against the real test API server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use lazyscale_sim::bulk::{self, BulkSpec};
use lazyscale_sim::scenario::{self, RunOptions};

#[tokio::test(flavor = "multi_thread")]
async fn scenario_runs_events_scale_edit_apply_delete() {
    let env = lazyscale_testenv::TestEnv::shared();
    let client = env.client().await;
    init_tracing();
    let ns = format!("sc-{}", std::process::id());
    let text = format!(
        r#"
name: it
ready_delay: 200ms
metrics_interval: 1s
duration: 12s
namespaces: [{ns}]
workloads:
  - name: web
    namespace: {ns}
    replicas: 2
    containers:
      - name: app
        requests: {{cpu: 100m, memory: 64Mi}}
    load:
      cpu: {{type: constant, value: 400m}}
events:
  - at: 1s
    scale: {{workload: web, replicas: 3}}
  - at: 2s
    apply:
      manifest: {{apiVersion: v1, kind: ConfigMap, metadata: {{name: made-by-scenario, namespace: {ns}}}, data: {{k: v}}}}
  - at: 3s
    edit_template: {{workload: web, image: example/web:2}}
  - at: 4s
    delete:
      manifest: {{apiVersion: v1, kind: ConfigMap, metadata: {{name: gone, namespace: {ns}}}}}
"#
    );
    let sc = scenario::parse(&text, "inline.yaml").unwrap();
    let started = Instant::now();
    scenario::run(client.clone(), &sc, &RunOptions::default())
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(12));
    // The Deployment controller finishes the rollout (one pod at a time, each waiting for Ready).
    wait_for(30, "3 ready pods of the new template", || async {
        let p = pods(&client, &ns, "app=web").await;
        (p.len() == 3
            && p.iter().all(|p| {
                p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("example/web:2")
                    && running_ready(p)
            }))
        .then_some(())
    })
    .await;
    let cm: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    assert!(cm.get("made-by-scenario").await.is_ok());
    let pm: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &lazyscale_sim::metrics::pod_metrics_resource(),
    );
    // Written for the pods that ran during the scenario (the rollout may still have been going on).
    let written = pm.list(&Default::default()).await.unwrap().items.len();
    assert!((2..=4).contains(&written), "{written} PodMetrics");
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_populates_realistic_pods() {
    let env = lazyscale_testenv::TestEnv::shared();
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(env.client().await);
    }
    let n: usize = std::env::var("LAZYSCALE_SIM_BULK_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let spec = BulkSpec {
        pods: n,
        namespaces: 3,
        deployments: 20,
        namespace_prefix: format!("bulk{}-", std::process::id()),
        ..BulkSpec::default()
    };
    let report = bulk::populate_with(&clients, &spec, &|_| {}).await.unwrap();
    eprintln!(
        "bulk: {} pods in {:.2}s = {:.0} pods/s (Deployments to Running pods through the control plane), mean pod {} bytes, total {:.2}s, test process RSS {} MiB",
        report.pods,
        report.pod_elapsed.as_secs_f64(),
        report.pods_per_second,
        report.mean_pod_bytes,
        report.elapsed.as_secs_f64(),
        memory_stats::memory_stats().map_or(0, |m| m.physical_mem >> 20)
    );
    assert_eq!(report.pods, n);
    let client = &clients[0];
    let mut total = 0;
    for i in 0..3 {
        let ns = format!("{}{i}", spec.namespace_prefix);
        let pods = Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        assert!(pods.iter().all(running_ready));
        let rss = Api::<ReplicaSet>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        let deps = Api::<Deployment>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        for p in &pods {
            let o = &p.owner_references()[0];
            let rs = rss
                .iter()
                .find(|r| r.metadata.uid.as_deref() == Some(o.uid.as_str()))
                .expect("owner RS exists");
            let ro = &rs.owner_references()[0];
            assert!(
                deps.iter()
                    .any(|d| d.metadata.uid.as_deref() == Some(ro.uid.as_str()))
            );
            assert!(p.labels().len() + p.annotations().len() >= 12);
            assert_eq!(p.spec.as_ref().unwrap().containers.len(), 2);
        }
        if let Ok(path) = std::env::var("LAZYSCALE_SIM_DUMP_POD") {
            std::fs::write(path, serde_json::to_vec_pretty(&pods[0]).unwrap()).unwrap();
        }
        total += pods.len();
    }
    assert_eq!(total, n);
    assert!(
        (3000..=7000).contains(&report.mean_pod_bytes),
        "{}",
        report.mean_pod_bytes
    );
}
