//! Scoped pod watches end to end: a DPA in namespace `team-a` makes the agent list and watch only its
//! workload's pods (its namespace, its selector), never the pods of `team-b` nor the cluster's; the
//! agent's pod requests are read from the API server's audit log. The test starts its own API server, so
//! the log holds only this test's agent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use lazyscale_testenv::fixtures::{app_deployment, dpa_api, dpa_object, horizontal_spec};
use lazyscale_testenv::{Server, ServerOptions, install_crds};
use serde_json::json;

use common::start_agent;

async fn namespace(client: &kube::Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

async fn deploy(client: &kube::Client, ns: &str, name: &str, replicas: i32) {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &app_deployment(name, replicas, "100m", "64Mi"),
        )
        .await
        .unwrap();
}

/// The agent's pod LIST and WATCH requests: (namespace, verb) for each.
fn pod_requests(server: &Server) -> Vec<(String, String)> {
    let agent = lazyscale_testenv::rbac::agent_username();
    server
        .requests()
        .into_iter()
        .filter(|r| r.user == agent && r.resource == "pods" && r.subresource.is_empty())
        .filter(|r| r.verb == "list" || r.verb == "watch")
        .map(|r| (r.namespace, r.verb))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dpa_in_one_namespace_lists_and_watches_only_its_pods() {
    let server = Server::start(ServerOptions::default()).unwrap();
    let client = server.client().await.unwrap();
    install_crds(&client).await.unwrap();
    for ns in ["team-a", "team-b"] {
        namespace(&client, ns).await;
    }
    deploy(&client, "team-a", "web", 3).await;
    deploy(&client, "team-a", "batch", 2).await;
    deploy(&client, "team-b", "other", 4).await;
    let agent = start_agent(&server, &["--grace-period-seconds=2"]);

    dpa_api(client.clone(), "team-a")
        .patch(
            "web",
            &PatchParams::apply("test"),
            &Patch::Apply(dpa_object("team-a", "web", horizontal_spec("web", 70, 1, 5))),
        )
        .await
        .unwrap();
    agent
        .wait_metric("lazyscale_pod_collection_synced", 1.0, Duration::from_secs(30))
        .await;
    agent
        .wait_metric("lazyscale_podcache_pods", 3.0, Duration::from_secs(60))
        .await;

    let requests = pod_requests(&server);
    assert!(
        requests.iter().any(|(ns, verb)| ns == "team-a" && verb == "list"),
        "the DPA's namespace is listed: {requests:?}"
    );
    assert!(
        requests.iter().all(|(ns, _)| ns == "team-a"),
        "only team-a's pods, never team-b's nor the cluster's: {requests:?}"
    );
    // One page: the list is narrowed to web's selector (5 pods in team-a, 3 of them web's, page 500).
    assert_eq!(
        requests.iter().filter(|(_, v)| v == "list").count(),
        1,
        "{requests:?}"
    );

    // Scaling team-b's workload changes nothing the agent sees; web's new pods arrive.
    Api::<Deployment>::namespaced(client.clone(), "team-a")
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    Api::<Deployment>::namespaced(client.clone(), "team-b")
        .patch(
            "other",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 6}})),
        )
        .await
        .unwrap();
    agent
        .wait_metric("lazyscale_podcache_pods", 4.0, Duration::from_secs(60))
        .await;
    let requests = pod_requests(&server);
    assert!(requests.iter().all(|(ns, _)| ns == "team-a"), "{requests:?}");
}
