//! The agent-managed webhook certificate on the real control plane, with the agents under the chart's
//! RBAC: two replicas agree on one Secret, the registered MutatingWebhookConfiguration carries its CA, a
//! short validity makes it rotate, both replicas serve the new certificate without a restart, the caBundle
//! follows, and the real API server keeps calling the webhook (new pods are still patched).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use lazyscale::cert::{CA_KEY, CERT_KEY, SECRET_NAME};
use lazyscale_sim::load::{CpuProfile, LoadProfile, MemoryProfile};
use lazyscale_sim::units::{Bytes, Cpu};
use lazyscale_sim::{SimConfig, Simulator, WorkloadRef};
use lazyscale_testenv::fixtures::{dpa_api, webhook_configuration};
use lazyscale_testenv::rbac::AGENT_NAMESPACE;
use lazyscale_testenv::wait::wait_for;
use lazyscale_testenv::{TestEnv, install_crds};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;

use common::start_agent;

/// The leaf certificate (DER) the agent serves on `port`, verified against `ca_pem` (`None` when the
/// handshake fails, for example because the served certificate is not signed by that bundle).
async fn served_leaf(port: u16, ca_pem: &str) -> Option<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.ok()?).ok()?;
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let name = ServerName::try_from("127.0.0.1").ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .ok()?;
    let (_, conn) = tls.get_ref();
    Some(conn.peer_certificates()?.first()?.to_vec())
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

fn text(s: &Secret, key: &str) -> String {
    String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

async fn registered_ca(client: &kube::Client) -> Option<String> {
    let hook = webhook_configuration(client).await.ok()??;
    let b64 = hook.data["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()?
        .to_string();
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).ok()?).ok()
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "x",
                    "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "2Gi"}}}]}}}}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_creates_shares_rotates_and_injects_its_webhook_certificate() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = TestEnv::shared();
    let client = env.client().await;
    install_crds(&client).await.unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), AGENT_NAMESPACE);
    let _ = secrets.delete(SECRET_NAME, &DeleteParams::default()).await;

    // two replicas start together: one creates the Secret, the other reads the winner's
    // (certificates valid 40 s, renewed 20 s before expiry: a rotation every ~20 s)
    let args = [
        "--webhook-certificate-mode=agent",
        "--webhook-certificate-validity-seconds=40",
        "--webhook-certificate-renew-before-seconds=20",
        "--vertical-period-seconds=1",
        "--grace-period-seconds=2",
    ];
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| start_agent(env.server(), &args));
        let b = s.spawn(|| start_agent(env.server(), &args));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (pid_a, pid_b) = (a.pid(), b.pid());

    let first = wait_for(30, "the certificate Secret", || async {
        secrets.get_opt(SECRET_NAME).await.ok()?
    })
    .await;
    let first_leaf = der_of(&text(&first, CERT_KEY));
    let first_ca = text(&first, CA_KEY);
    // both replicas serve the Secret's certificate, signed by its CA bundle
    for agent in [&a, &b] {
        wait_for(20, "a replica serving the Secret's certificate", || async {
            (served_leaf(agent.webhook_port, &first_ca).await? == first_leaf).then_some(())
        })
        .await;
    }

    // an autoscaler starts the stack: the webhook configuration carries the Secret's CA
    let ns = env.namespace().await;
    let sim = Simulator::start(
        client.clone(),
        SimConfig {
            namespaces: vec![ns.clone()],
            metrics_interval: Duration::from_secs(1),
            resync: Duration::from_secs(2),
            ..SimConfig::default()
        },
    )
    .await
    .unwrap();
    const MI: f64 = 1024.0 * 1024.0;
    sim.set_load(
        &WorkloadRef::deployment(&ns, "web"),
        LoadProfile {
            cpu: CpuProfile::Constant { value: Cpu(1.0) },
            memory: MemoryProfile {
                base: Bytes(200.0 * MI),
                per_cpu: Bytes(0.0),
                leak: Bytes(0.0),
            },
            noise: 0.0,
        },
    );
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment("web"))
        .await
        .unwrap();
    let dpas = dpa_api(client.clone(), &ns);
    let dpa = json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler", "metadata": {"name": "web"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "owner": "Local",
            // vertical only: new pods get the recommendation from the webhook
            "applyPolicy": {"mode": "Apply", "update": {"strategy": "TriggerRollout"}},
            "constraints": {"minReplicas": 2, "maxReplicas": 2}}});
    dpas.patch("web", &PatchParams::apply("test"), &Patch::Apply(dpa))
        .await
        .unwrap();
    wait_for(
        30,
        "the webhook configuration trusting the Secret's CA",
        || async {
            let ca = registered_ca(&client).await?;
            let now = secrets.get(SECRET_NAME).await.ok()?;
            (ca == text(&now, CA_KEY)).then_some(())
        },
    )
    .await;

    // rotation: a new certificate in the Secret, the bundle keeps the previous CA for the replica that
    // has not switched yet
    let rotated = wait_for(60, "a rotated certificate", || async {
        let s = secrets.get(SECRET_NAME).await.ok()?;
        (der_of(&text(&s, CERT_KEY)) != first_leaf).then_some(s)
    })
    .await;
    let rotated_ca = text(&rotated, CA_KEY);
    assert!(
        rotated_ca.matches("BEGIN CERTIFICATE").count() >= 2,
        "the bundle keeps the previous CA:\n{rotated_ca}"
    );
    // both replicas switch without a restart, and the caBundle follows the Secret
    for agent in [&a, &b] {
        wait_for(20, "a replica serving the rotated certificate", || async {
            let s = secrets.get(SECRET_NAME).await.ok()?;
            let leaf = served_leaf(agent.webhook_port, &text(&s, CA_KEY)).await?;
            (leaf != first_leaf).then_some(())
        })
        .await;
    }
    wait_for(20, "the caBundle following the Secret", || async {
        let ca = registered_ca(&client).await?;
        let s = secrets.get(SECRET_NAME).await.ok()?;
        (ca == text(&s, CA_KEY) && ca != first_ca).then_some(())
    })
    .await;
    let (mut a, mut b) = (a, b);
    assert!(a.try_wait().unwrap().is_none() && b.try_wait().unwrap().is_none());
    assert_eq!((a.pid(), b.pid()), (pid_a, pid_b), "no restart");

    // admission keeps working after the rotation: once the recommendation is in the status, pods created
    // from now on are patched by the real API server calling the rotated webhook
    wait_for(60, "a vertical target", || async {
        let d = dpas.get("web").await.ok()?;
        d.data["status"]["vertical"]["target"].is_object().then_some(())
    })
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    for p in pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
    {
        pods.delete(p.metadata.name.as_deref().unwrap(), &DeleteParams::default())
            .await
            .unwrap();
    }
    wait_for(60, "patched web pods after the rotation", || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?
            .items;
        let patched = list
            .iter()
            .filter(|p| {
                p.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("autoscaling.datadoghq.com/rec-id"))
            })
            .count();
        (patched >= 2).then_some(())
    })
    .await;
    let patched = a.metric("lazyscale_webhook_requests_total{path=\"Patched\"}")
        + b.metric("lazyscale_webhook_requests_total{path=\"Patched\"}");
    assert!(patched >= 2.0, "patched {patched}");
    // the agents kept one Secret between them, and still serve what it holds
    let last = secrets.get(SECRET_NAME).await.unwrap();
    for agent in [&a, &b] {
        wait_for(20, "both replicas on the Secret's certificate", || async {
            let s = secrets.get(SECRET_NAME).await.ok()?;
            (served_leaf(agent.webhook_port, &text(&s, CA_KEY)).await? == der_of(&text(&s, CERT_KEY)))
                .then_some(())
        })
        .await;
    }
    assert!(
        last.metadata
            .labels
            .unwrap()
            .contains_key("app.kubernetes.io/managed-by")
    );

    dpas.delete("web", &DeleteParams::default()).await.unwrap();
    sim.shutdown().await;
    a.stop().unwrap();
    b.stop().unwrap();
    let _ = secrets.delete(SECRET_NAME, &DeleteParams::default()).await;
}
