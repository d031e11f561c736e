//! The lazy stack end to end: the agent binary against a real API server.
//!
//! Each test starts its own API server, so the server's request counters see only this test's agent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use lazyscale_testenv::{Server, ServerOptions};
use serde_json::json;

use common::{pod_requests, start_agent};
use lazyscale_testenv::fixtures::{dpa_api, webhook_configuration};
use lazyscale_testenv::install_crds;

fn dpa(name: &str) -> serde_json::Value {
    json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler", "metadata": {"name": name},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, "owner": "Local",
            "objectives": [{"type": "PodResource", "podResource": {"name": "cpu", "value": {"type": "Utilization", "utilization": 70}}}]}})
}

#[tokio::test(flavor = "multi_thread")]
async fn no_pod_request_until_the_first_dpa_then_teardown_and_reopen() {
    let server = Server::start(ServerOptions::default()).unwrap();
    let client = server.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let agent = start_agent(&server, &["--grace-period-seconds=2"]);
    // idle: watching autoscalers for a while lists and watches no pod
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        pod_requests(&server),
        (0, 0),
        "pod LIST/WATCH before any autoscaler"
    );
    assert_eq!(agent.metric("lazyscale_gate_open"), 0.0);
    assert!(
        webhook_configuration(&client).await.unwrap().is_none(),
        "no webhook while idle"
    );

    // first DPA: the gate opens and the pod collection starts
    let dpas = dpa_api(client.clone(), "default");
    dpas.patch("web", &PatchParams::apply("test"), &Patch::Apply(dpa("web")))
        .await
        .unwrap();
    agent
        .wait_metric("lazyscale_gate_open", 1.0, Duration::from_secs(20))
        .await;
    agent
        .wait_metric("lazyscale_pod_collection_synced", 1.0, Duration::from_secs(20))
        .await;
    let (lists, watches) = pod_requests(&server);
    assert!(lists + watches >= 1, "the stack lists or watches pods once open");
    let hook = webhook_configuration(&client)
        .await
        .unwrap()
        .expect("the webhook is registered while the stack is up");
    assert_eq!(
        hook.data["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["default"]),
        "only namespaces with autoscalers"
    );

    // last DPA gone: after the grace period the stack stops and the webhook goes away
    dpas.delete("web", &DeleteParams::default()).await.unwrap();
    agent
        .wait_metric("lazyscale_gate_open", 0.0, Duration::from_secs(20))
        .await;
    assert!(
        webhook_configuration(&client).await.unwrap().is_none(),
        "webhook removed on teardown"
    );
    assert_eq!(agent.metric("lazyscale_podcache_pods"), 0.0);

    // and it opens again
    dpas.patch("again", &PatchParams::apply("test"), &Patch::Apply(dpa("again")))
        .await
        .unwrap();
    agent
        .wait_metric("lazyscale_gate_open", 1.0, Duration::from_secs(20))
        .await;
    let m = agent.metrics().unwrap();
    assert_eq!(
        m.get("lazyscale_gate_transitions_total{to=\"Open\"}").copied(),
        Some(2.0)
    );
    assert_eq!(
        m.get("lazyscale_gate_transitions_total{to=\"Closed\"}").copied(),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profile_label_opens_the_gate_and_excluded_does_not() {
    let server = Server::start(ServerOptions::default()).unwrap();
    let client = server.client().await.unwrap();
    let agent = start_agent(&server, &["--grace-period-seconds=1"]);
    let deployments = Api::<Deployment>::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(
        json!({"metadata": {"name": "app", "labels": {"autoscaling.datadoghq.com/profile": "excluded"}},
        "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
    )
    .unwrap();
    deployments.create(&PostParams::default(), &d).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        agent.metric("lazyscale_gate_open"),
        0.0,
        "excluded does not count"
    );
    deployments
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"autoscaling.datadoghq.com/profile": "datadog-optimize-cost"}}})),
        )
        .await
        .unwrap();
    agent
        .wait_metric("lazyscale_gate_open", 1.0, Duration::from_secs(20))
        .await;
    assert_eq!(agent.metric("lazyscale_autoscalers{source=\"Workload\"}"), 1.0);
    // switching back to excluded removes the demand; the stack stops after the grace period
    deployments
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"autoscaling.datadoghq.com/profile": "excluded"}}})),
        )
        .await
        .unwrap();
    agent
        .wait_metric("lazyscale_gate_open", 0.0, Duration::from_secs(20))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_never_starts_and_the_webhook_fast_path_allows_without_decoding() {
    let server = Server::start(ServerOptions::default()).unwrap();
    let client = server.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let agent = start_agent(&server, &["--workload-autoscaling-enabled=false"]);
    dpa_api(client.clone(), "default")
        .patch("web", &PatchParams::apply("test"), &Patch::Apply(dpa("web")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(agent.metric("lazyscale_gate_open"), 0.0);
    assert_eq!(pod_requests(&server), (0, 0));

    // the webhook answers over TLS; a pod of nonsense shape is not decoded, so it is allowed
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest_like_post(agent.webhook_port, br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"abc","object":{"spec":7}}}"#);
    let (code, body) = http.await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["response"]["uid"], "abc");
    assert_eq!(v["response"]["allowed"], true);
    let (code, _) = reqwest_like_post(agent.webhook_port, b"not json").await;
    assert_eq!(code, 400, "a malformed AdmissionReview is a 400, never a crash");
    assert_eq!(
        agent.metric("lazyscale_webhook_requests_total{path=\"Fast\"}"),
        1.0
    );
    assert_eq!(
        agent.metric("lazyscale_webhook_requests_total{path=\"Malformed\"}"),
        1.0
    );
}

/// POSTs to the agent's webhook over TLS without verifying the self-signed certificate (this checks the
/// handler, not the certificate; the API server verifies it in the other tests).
async fn reqwest_like_post(port: u16, body: &[u8]) -> (u16, String) {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let config = lazyscale_testenv::tls::trust_any_certificate();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut tls = connector
        .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let head = format!(
        "POST /mutate/pods HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn works_with_the_official_crds_installed() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::runtime::wait::{await_condition, conditions};

    let server = Server::start(ServerOptions::default()).unwrap();
    let client = server.client().await.unwrap();
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lazyscale-api/tests/fixtures");
    for f in ["official-dpa-v1alpha2.yaml", "official-dpacp-v1alpha2.yaml"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(20),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap()
        .unwrap();
    }
    let agent = start_agent(&server, &["--grace-period-seconds=2"]);
    let full = std::fs::read_to_string(dir.join("dpa-full.yaml")).unwrap();
    let mut obj: serde_json::Value = serde_saphyr::from_str(&full).unwrap();
    obj["metadata"]["namespace"] = json!("default");
    obj.as_object_mut().unwrap().remove("status");
    // The fixture carries the profile-hash annotation of a generated DPA; generated DPAs are not demand
    // (tests/profiles.rs), so drop it: this DPA is the user's own.
    obj["metadata"].as_object_mut().unwrap().remove("annotations");
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    dpa_api(client.clone(), "default")
        .patch(&name, &PatchParams::apply("test"), &Patch::Apply(&obj))
        .await
        .unwrap();
    agent
        .wait_metric("lazyscale_gate_open", 1.0, Duration::from_secs(20))
        .await;
    agent
        .wait_metric("lazyscale_pod_collection_synced", 1.0, Duration::from_secs(20))
        .await;
    assert_eq!(agent.metric("lazyscale_autoscalers{source=\"Dpa\"}"), 1.0);
    assert!(webhook_configuration(&client).await.unwrap().is_some());
}
