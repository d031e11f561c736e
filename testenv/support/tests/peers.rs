//! The benchmark peers on the real control plane: the client-go informer syncs every pod of the cluster
//! with one pod watch and no more, and the VPA recommender, fed PodMetrics by the simulator, writes a
//! recommendation into a VPA's status while the VPA admission controller, registered by URL with its
//! loopback certificate, sets a new pod's requests from it. Builds the peers on first use (minutes cold;
//! a cache hit afterwards).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use lazyscale_testenv::peers::{self, Informer, Peer};
use lazyscale_testenv::pki::MEASURED_GROUP;
use lazyscale_testenv::{TestEnv, audit, fixtures, wait_for};

fn pod_metrics() -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    }
}

/// The peers, built once per test process (two builds into one folder at once would clash).
fn built() -> peers::Binaries {
    static BUILT: std::sync::OnceLock<peers::Binaries> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            peers::ensure_built(&dir)
                .unwrap_or_else(|e| panic!("build the peers: {}", lazyscale_testenv::error_chain(&e)))
                .0
        })
        .clone()
}

async fn running_pods(client: &kube::Client, ns: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_go_informer_syncs_every_pod_with_one_watch() {
    let bins = built();
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace().await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    deployments
        .create(
            &PostParams::default(),
            &fixtures::deployment(&ns, "web", 4, "").unwrap(),
        )
        .await
        .unwrap();
    wait_for(60, "4 running pods", || async {
        (running_pods(&client, &ns).await.len() == 4).then_some(())
    })
    .await;
    let user = "peer-test-informer";
    let kubeconfig = env.server().user_kubeconfig(user, &[MEASURED_GROUP]).unwrap();
    let log = env.server().dir().join("peer-test-informer.log");
    let (informer, synced) = tokio::task::spawn_blocking(move || {
        Informer::start(&bins.informer, &kubeconfig, &log, Duration::from_secs(60))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(synced.event, "synced");
    assert!(synced.pods >= 4, "the informer holds at least this test's pods");
    assert!(synced.sync_seconds > 0.0 && synced.rss_bytes > 0 && synced.heap_bytes > 0);
    assert!(synced.peak_rss_bytes >= synced.rss_bytes);
    // the cache stays live: a new pod appears in it
    deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    // (the other test of this process creates pods meanwhile: the informer must end up holding
    // exactly the cluster's pods, one more than at its sync at least)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut informer = informer;
    let stats = loop {
        let (back, stats) = tokio::task::spawn_blocking(move || {
            let s = informer.stats();
            (informer, s)
        })
        .await
        .unwrap();
        informer = back;
        let stats = stats.unwrap();
        let all = Api::<Pod>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len() as u64;
        if stats.pods == all && stats.pods > synced.pods {
            break stats;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the informer holds {} pods, the cluster {all} (at its sync: {})",
            stats.pods,
            synced.pods
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(stats.event, "stats");
    informer.stop();
    let requests = env.server().requests();
    let watches = audit::count(&requests, user, "watch", "pods");
    let lists = audit::count(&requests, user, "list", "pods");
    assert_eq!(watches, 1, "one cluster-wide pod watch");
    assert!(lists <= 1, "at most the initial list ({lists})");
    assert!(
        requests
            .iter()
            .filter(|r| r.user == user && r.resource == "pods")
            .all(|r| r.namespace.is_empty()),
        "cluster-wide requests only"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn vpa_recommends_and_its_admission_controller_applies_the_recommendation() {
    let bins = built();
    let env = TestEnv::shared();
    let client = env.client().await;
    peers::install_vpa_crds(&client, &bins.vpa_crds).await.unwrap();
    let ns = env.namespace().await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    deployments
        .create(
            &PostParams::default(),
            &fixtures::deployment(&ns, "api", 2, "").unwrap(),
        )
        .await
        .unwrap();
    wait_for(60, "2 running pods", || async {
        (running_pods(&client, &ns).await.len() == 2).then_some(())
    })
    .await;
    // our metrics path: PodMetrics objects served through metrics.k8s.io (the simulator's shape),
    // rewritten every 2 s with a fresh timestamp so every recommender pass has a new sample
    let writer = {
        let (client, ns) = (client.clone(), ns.clone());
        tokio::spawn(async move {
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &pod_metrics());
            loop {
                let stamp = k8s_openapi::jiff::Timestamp::now()
                    .round(k8s_openapi::jiff::Unit::Second)
                    .unwrap()
                    .to_string();
                for p in running_pods(&client, &ns).await {
                    let name = p.metadata.name.unwrap();
                    let obj = serde_json::json!({
                        "apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
                        "metadata": {"name": name, "namespace": ns},
                        "timestamp": stamp, "window": "2s",
                        "containers": [{"name": "app", "usage": {"cpu": "250m", "memory": "100Mi"}}],
                    });
                    let _ = api
                        .patch(
                            &name,
                            &PatchParams::apply("peers-test").force(),
                            &Patch::Apply(&obj),
                        )
                        .await;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    let vpas = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &peers::vpa_resource());
    vpas.patch(
        "api",
        &PatchParams::apply("peers-test"),
        &Patch::Apply(peers::vpa_object(&ns, "api", "Initial")),
    )
    .await
    .unwrap();

    let server = env.server();
    let kubeconfig = server
        .user_kubeconfig("peer-test-vpa", &[MEASURED_GROUP])
        .unwrap();
    let dir = server.dir().to_path_buf();
    let metrics_port = lazyscale_testenv::agent::free_port().unwrap();
    let rec_args = peers::recommender_args(&kubeconfig, metrics_port, Duration::from_secs(3));
    let mut recommender = Peer::start(
        &bins.vpa_recommender,
        &rec_args,
        &dir.join("peer-test-vpa-recommender.log"),
    )
    .unwrap();
    wait_for(120, "a recommendation in the VPA's status", || async {
        let v = vpas.get("api").await.ok()?;
        let r = v
            .data
            .pointer("/status/recommendation/containerRecommendations/0/target")?
            .clone();
        Some(r)
    })
    .await;
    let (_, _) = tokio::task::block_in_place(|| {
        recommender.wait_log("the checkpoint cache synced", 1, Duration::from_secs(5), |l| {
            l.contains("Initial VPA checkpoint synced successfully")
        })
    })
    .unwrap();

    let cert = peers::loopback_serving_cert(&dir.join("peer-test-vpa-webhook"), "vpa-webhook").unwrap();
    let port = lazyscale_testenv::agent::free_port().unwrap();
    let adm_metrics = lazyscale_testenv::agent::free_port().unwrap();
    let mut admission = Peer::start(
        &bins.vpa_admission_controller,
        &peers::admission_args(&kubeconfig, &cert, port, adm_metrics),
        &dir.join("peer-test-vpa-admission.log"),
    )
    .unwrap();
    tokio::task::block_in_place(|| admission.wait_port(port, Duration::from_secs(60))).unwrap();
    let webhooks = Api::<MutatingWebhookConfiguration>::all(client.clone());
    wait_for(60, "the VPA webhook registered", || async {
        webhooks
            .get_opt(peers::VPA_WEBHOOK_CONFIGURATION)
            .await
            .ok()
            .flatten()
    })
    .await;
    // a new pod of the workload gets the recommendation at admission
    let before: Vec<String> = running_pods(&client, &ns)
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    deployments
        .patch_scale(
            "api",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    let new_pod = wait_for(60, "the third pod", || async {
        Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|p| !before.contains(p.metadata.name.as_ref().unwrap()))
    })
    .await;
    // the recommendation as it stands now (a pass may have refined it since the first one)
    let target = vpas.get("api").await.unwrap().data["status"]["recommendation"]["containerRecommendations"]
        [0]["target"]
        .clone();
    let cpu = target["cpu"].as_str().unwrap().to_string();
    let memory = target["memory"].as_str().unwrap().to_string();
    let requests = new_pod.spec.unwrap().containers[0]
        .resources
        .clone()
        .unwrap()
        .requests
        .unwrap();
    assert_eq!(
        requests["cpu"].0, cpu,
        "the admission controller set the recommended CPU"
    );
    assert_eq!(requests["memory"].0, memory, "and the recommended memory");
    assert!(
        new_pod
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("vpaObservedContainers"),
        "the VPA admission controller annotated the pod"
    );
    recommender.stop();
    admission.stop();
    webhooks
        .delete(peers::VPA_WEBHOOK_CONFIGURATION, &DeleteParams::default())
        .await
        .unwrap();
    writer.abort();
}
