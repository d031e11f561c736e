//! Horizontal and vertical autoscaling together, and the OOM ratchet, end to end on the real control plane
//! (kube-controller-manager's Deployment and ReplicaSet controllers, the API server's `pods/resize`, kwok
//! as the kubelet, the simulator for load, PodMetrics and OOM kills):
//!
//! - one DPA with a CPU objective and `update.strategy: Auto` (H+V, `controlledResources` unset = memory
//!   only) on a step load: the horizontal part adds replicas on CPU and settles; the vertical part moves the
//!   memory requests of the running pods to the recommendation and leaves their CPU requests alone; no
//!   loop undoes the other (replicas and CPU requests stay put once settled);
//! - a vertical-only DPA under `controlledValues: RequestsOnly` on pods whose memory use is above their
//!   limit: the simulated kubelet OOM-kills them, and the applied values raise the memory limit by the
//!   bump ratio on each kill at the raised limit until the container fits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use lazyscale_testenv::{
    Server, ServerOptions, Simulated, constant_load, install_crds, try_wait_for, wait_for,
};
use lazyscale_vertical::quantity::{parse_millis, parse_units};
use serde_json::{Value, json};

const MI: u64 = 1024 * 1024;

fn deployment(name: &str, replicas: i32, requests: Value, limits: Value) -> Deployment {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "app", "image": "x",
                    "resources": {"requests": requests, "limits": limits}}]}}}}))
    .unwrap()
}

fn quantity(p: &Pod, kind: &str, resource: &str) -> Option<String> {
    let r = p.spec.as_ref()?.containers[0].resources.as_ref()?;
    let list = if kind == "limits" { &r.limits } else { &r.requests };
    list.as_ref()?.get(resource).map(|q| q.0.clone())
}

fn memory(p: &Pod, kind: &str) -> Option<u64> {
    quantity(p, kind, "memory").and_then(|q| parse_units(&q).ok())
}

fn cpu(p: &Pod, kind: &str) -> Option<u64> {
    quantity(p, kind, "cpu").and_then(|q| parse_millis(&q).ok())
}

fn rec_id(p: &Pod) -> Option<&str> {
    p.metadata
        .annotations
        .as_ref()?
        .get(lazyscale_api::consts::annotations::REC_ID)
        .map(String::as_str)
}

fn oom_killed(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .and_then(|t| t.reason.as_deref())
                    == Some("OOMKilled")
            })
        })
}

fn restarts(pods: &[Pod]) -> i32 {
    pods.iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .map(|c| c.restart_count)
        .sum()
}

async fn replicas(client: &kube::Client, ns: &str, name: &str) -> i32 {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()
        .and_then(|d| d.spec?.replicas)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn hv_on_a_step_load_scales_replicas_on_cpu_and_memory_requests_and_oom_kills_ratchet_the_limit() {
    let server = Server::start(ServerOptions::default()).unwrap();
    let client = server.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = "hv";
    let scene = Simulated::start_with(&client, ns, Duration::from_secs(1))
        .await
        .unwrap();
    // H+V: 2 × 200m requested, 0.2 cores used in all (50 % of the request, under the 70 % objective),
    // 150 MiB of memory per pod against 64 MiB requested
    scene
        .deployment(
            &deployment(
                "web",
                2,
                json!({"cpu": "200m", "memory": "64Mi"}),
                json!({"memory": "1Gi"}),
            ),
            constant_load(0.2, 150.0),
        )
        .await
        .unwrap();
    // OOM: 200 MiB used against a 128 MiB limit, RequestsOnly
    scene
        .deployment(
            &deployment(
                "oom",
                2,
                json!({"cpu": "100m", "memory": "64Mi"}),
                json!({"memory": "128Mi"}),
            ),
            constant_load(0.1, 200.0),
        )
        .await
        .unwrap();
    let agent = common::start_agent(
        &server,
        &[
            "--grace-period-seconds=0",
            "--vertical-period-seconds=1",
            "--horizontal-period-seconds=2",
            "--lease-namespace=default",
        ],
    );
    let dpas = scene.dpas();
    let hv = json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler", "metadata": {"name": "web"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "owner": "Local",
            "applyPolicy": {"update": {"strategy": "Auto"}},
            "constraints": {"minReplicas": 1, "maxReplicas": 8},
            "objectives": [{"type": "PodResource", "podResource": {"name": "cpu", "value": {"type": "Utilization", "utilization": 70}}}]}});
    scene.apply_dpa(&hv).await.unwrap();
    let oom = json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler", "metadata": {"name": "oom"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "oom"}, "owner": "Local",
            "applyPolicy": {"update": {"strategy": "Auto"}},
            "constraints": {"containers": [{"name": "*", "controlledValues": "RequestsOnly"}]}}});
    scene.apply_dpa(&oom).await.unwrap();

    // --- the OOM ratchet ---
    wait_for(60, "an OOM kill of an oom pod", || async {
        let pods = scene.live_pods("oom").await;
        pods.iter().any(oom_killed).then_some(())
    })
    .await;
    // the recommendation carries a memory limit above the 128 MiB the containers were killed at
    let limit = wait_for(60, "a ratcheted memory limit in the oom target", || async {
        let d = dpas.get("oom").await.ok()?;
        let q = d.data["status"]["vertical"]["target"]["desiredResources"][0]["limits"]["memory"].as_str()?;
        parse_units(q).ok().filter(|l| *l > 128 * MI)
    })
    .await;
    assert!(
        limit >= 154 * MI,
        "128 MiB × 1.2 rounded up is 154 MiB, got {limit}"
    );
    // raised again on each kill at the raised limit (154, 185, 222 MiB) until the 200 MiB fit: only then
    // do the kills stop
    let fitted = try_wait_for(Duration::from_secs(120), || async {
        let pods = scene.live_pods("oom").await;
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| memory(p, "limits").is_some_and(|l| l > 200 * MI)))
        .then_some(pods)
    })
    .await;
    let Some(fitted) = fitted else {
        let pods: Vec<Value> = scene
            .live_pods("oom")
            .await
            .iter()
            .map(|p| {
                json!({"name": p.metadata.name, "rec": rec_id(p), "limits": quantity(p, "limits", "memory"),
                "requests": quantity(p, "requests", "memory"), "restarts": restarts(std::slice::from_ref(p))})
            })
            .collect();
        panic!(
            "oom pods never got a limit above their use: {} {}",
            json!(pods),
            dpas.get("oom").await.unwrap().data["status"]
        );
    };
    for p in &fitted {
        let (req, lim) = (memory(p, "requests").unwrap(), memory(p, "limits").unwrap());
        assert!(req <= lim, "request {req} above limit {lim}");
        assert!(lim >= 222 * MI, "three raises from 128 MiB: {lim}");
    }
    let settled = restarts(&scene.live_pods("oom").await);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        restarts(&scene.live_pods("oom").await),
        settled,
        "OOM kills go on after the limit fits"
    );
    assert!(agent.metric("lazyscale_vertical_operations_total{op=\"OomRecorded\"}") >= 3.0);

    // --- H+V on a step load ---
    // before the step: memory requests move to the recommendation in place, CPU requests stay at 200m
    let target = |d: &Value| -> Option<(String, u64)> {
        let t = &d["status"]["vertical"]["target"];
        let c = &t["desiredResources"][0];
        assert!(
            c["requests"].get("cpu").is_none(),
            "H+V without controlledResources recommends memory only: {t}"
        );
        Some((
            t["version"].as_str()?.to_owned(),
            parse_units(c["requests"]["memory"].as_str()?).ok()?,
        ))
    };
    let (version, mem) = wait_for(90, "web: a memory target", || async {
        target(&dpas.get("web").await.ok()?.data)
    })
    .await;
    assert!(mem > 150 * MI, "150 MiB used: {mem}");
    // the step: 0.84 cores, 6 × 200m at 70 %
    scene.set_load("web", constant_load(0.84, 150.0));
    wait_for(120, "web scaled up on CPU", || async {
        (replicas(&client, ns, "web").await >= 5).then_some(())
    })
    .await;
    // settled: every live pod at the memory recommendation, CPU requests untouched
    let at_target = |pods: &[Pod], version: &str| {
        pods.iter()
            .all(|p| rec_id(p) == Some(version) && cpu(p, "requests") == Some(200))
    };
    let settled = try_wait_for(Duration::from_secs(120), || async {
        let n = replicas(&client, ns, "web").await;
        let d = dpas.get("web").await.ok()?;
        let (v, _) = target(&d.data)?;
        let pods = scene.live_pods("web").await;
        (pods.len() == usize::try_from(n).ok()? && at_target(&pods, &v)).then_some((n, v))
    })
    .await;
    let Some((n, version_after)) = settled else {
        let pods: Vec<Value> = scene
            .live_pods("web")
            .await
            .iter()
            .map(|p| {
                json!({"name": p.metadata.name, "rec": rec_id(p), "cpu": quantity(p, "requests", "cpu"),
                "memory": quantity(p, "requests", "memory")})
            })
            .collect();
        panic!(
            "web never settled (first version {version}): replicas {} pods {} status {}",
            replicas(&client, ns, "web").await,
            json!(pods),
            dpas.get("web").await.unwrap().data["status"]
        );
    };
    assert!(
        (5..=8).contains(&n),
        "0.84 cores at 70 % of 200m: about 6 replicas, got {n}"
    );
    // no fight: over the next seconds neither loop moves (replicas, CPU requests, memory version)
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            replicas(&client, ns, "web").await,
            n,
            "replicas moved after settling"
        );
        let pods = scene.live_pods("web").await;
        assert!(
            pods.iter().all(|p| cpu(p, "requests") == Some(200)),
            "a CPU request moved in H+V mode without CPU opted in"
        );
    }
    let (v, _) = target(&dpas.get("web").await.unwrap().data).unwrap();
    let pods = scene.live_pods("web").await;
    assert!(
        pods.iter()
            .all(|p| memory(p, "requests").is_some_and(|m| m > 150 * MI)),
        "memory requests moved to the recommendation"
    );
    assert_eq!(v, version_after, "the memory recommendation kept moving");
    scene.shutdown().await;
}
