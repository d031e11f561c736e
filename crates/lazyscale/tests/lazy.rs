//! The lazy stack end to end: the agent binary against a real API server.
//!
//! Each test starts its own API server, so the server's request counters see only this test's agent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use lazyscale_testenv::{Server, ServerOptions};
use serde_json::json;

struct Agent {
    child: Child,
    admin: u16,
    webhook: u16,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf.split_once("\r\n\r\n")?.1.to_string()))
}

impl Agent {
    fn start(server: &Server, args: &[&str]) -> Agent {
        let admin = free_port();
        let webhook = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_lazyscale"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(server.kubeconfig_path())
            .arg(format!("--admin-address=127.0.0.1:{admin}"))
            .arg(format!("--webhook-address=127.0.0.1:{webhook}"))
            .arg("--self-signed")
            .arg(format!("--webhook-url=https://127.0.0.1:{webhook}"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let agent = Agent {
            child,
            admin,
            webhook,
        };
        let start = Instant::now();
        while http_get(admin, "/readyz").map(|(c, _)| c) != Some(200) {
            assert!(start.elapsed() < Duration::from_secs(30), "agent not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    fn metrics(&self) -> HashMap<String, f64> {
        let (_, body) = http_get(self.admin, "/metrics").unwrap();
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }

    fn metric(&self, name: &str) -> f64 {
        self.metrics().get(name).copied().unwrap_or(0.0)
    }

    async fn wait_metric(&self, name: &str, value: f64, timeout: Duration) {
        let start = Instant::now();
        loop {
            let v = self.metric(name);
            if v == value {
                return;
            }
            assert!(start.elapsed() < timeout, "{name} stayed {v}, expected {value}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn dpa_api(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client,
        ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("datadoghq.com", "v1alpha2", "DatadogPodAutoscaler"),
            "datadogpodautoscalers",
        ),
    )
}

async fn install_crds(client: &kube::Client) {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in lazyscale_api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        api.create(&PostParams::default(), &crd).await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(20),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap()
        .unwrap();
    }
}

fn dpa(name: &str) -> serde_json::Value {
    json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler", "metadata": {"name": name},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, "owner": "Local",
            "objectives": [{"type": "PodResource", "podResource": {"name": "cpu", "value": {"type": "Utilization", "utilization": 70}}}]}})
}

async fn pod_requests(server: &Server, client: &kube::Client) -> (u64, u64) {
    let text = server.metrics_text(client).await.unwrap();
    (
        lazyscale_testenv::metrics::request_count(&text, "LIST", "pods"),
        lazyscale_testenv::metrics::request_count(&text, "WATCH", "pods"),
    )
}

async fn webhook_configuration(client: &kube::Client) -> Option<DynamicObject> {
    Api::<DynamicObject>::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(
                "admissionregistration.k8s.io",
                "v1",
                "MutatingWebhookConfiguration",
            ),
            "mutatingwebhookconfigurations",
        ),
    )
    .get_opt("lazyscale-pod-autoscaling")
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_pod_request_until_the_first_dpa_then_teardown_and_reopen() {
    let server = Server::start(ServerOptions::default()).unwrap();
    let client = server.client().await.unwrap();
    install_crds(&client).await;
    let agent = Agent::start(&server, &["--grace-period-seconds=2"]);
    // idle: watching autoscalers for a while lists and watches no pod
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        pod_requests(&server, &client).await,
        (0, 0),
        "pod LIST/WATCH before any autoscaler"
    );
    assert_eq!(agent.metric("lazyscale_gate_open"), 0.0);
    assert!(
        webhook_configuration(&client).await.is_none(),
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
    let (lists, watches) = pod_requests(&server, &client).await;
    assert!(lists + watches >= 1, "the stack lists or watches pods once open");
    let hook = webhook_configuration(&client)
        .await
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
        webhook_configuration(&client).await.is_none(),
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
    let m = agent.metrics();
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
    let agent = Agent::start(&server, &["--grace-period-seconds=1"]);
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
    install_crds(&client).await;
    let agent = Agent::start(&server, &["--workload-autoscaling-enabled=false"]);
    dpa_api(client.clone(), "default")
        .patch("web", &PatchParams::apply("test"), &Patch::Apply(dpa("web")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(agent.metric("lazyscale_gate_open"), 0.0);
    assert_eq!(pod_requests(&server, &client).await, (0, 0));

    // the webhook answers over TLS; a pod of nonsense shape is not decoded, so it is allowed
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest_like_post(agent.webhook, br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"abc","object":{"spec":7}}}"#);
    let (code, body) = http.await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["response"]["uid"], "abc");
    assert_eq!(v["response"]["allowed"], true);
    let (code, _) = reqwest_like_post(agent.webhook, b"not json").await;
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

    #[derive(Debug)]
    struct AnyCert;
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
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
