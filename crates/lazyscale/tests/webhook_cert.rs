//! The webhook's serving certificate on the real control plane, with the agents under the chart's RBAC.
//!
//! - Agent-managed: two replicas agree on one Secret, the registered MutatingWebhookConfiguration carries
//!   its CA, a short validity makes it rotate, both replicas serve the new certificate without a restart,
//!   the caBundle follows, and the real API server keeps calling the webhook (new pods are still patched).
//!   A Secret of that name of the wrong type, or missing a key, is replaced.
//! - Files (cert-manager, the chart's `helm` and `secret` sources): the files rewritten as kubelet does
//!   (a symlink swap) are served without a restart, the new `ca.crt` is injected into the caBundle, and the
//!   API server keeps calling the webhook through the new certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use base64::Engine;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use lazyscale::cert::{CA_KEY, CERT_KEY, SECRET_NAME};
use lazyscale_testenv::fixtures::{dpa_api, webhook_configuration};
use lazyscale_testenv::rbac::AGENT_NAMESPACE;
use lazyscale_testenv::wait::wait_for;
use lazyscale_testenv::{Simulated, TestEnv, constant_load, install_crds};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;

use common::start_agent;

/// The tests of this file share the Secret and the webhook configuration's name: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// Every certificate of a PEM bundle (DER), in order.
fn ders(pem: &str) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap().to_vec())
        .collect()
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
    let _one = ONE_AT_A_TIME.lock().await;
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
    let sim = Simulated::start(&client, &ns).await.unwrap();
    sim.deployment(&deployment("web"), constant_load(1.0, 200.0))
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
    pods.delete_collection(&DeleteParams::default(), &ListParams::default().labels("app=web"))
        .await
        .unwrap();
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

/// Admission requests the agent answered (every path but `Malformed`).
fn answered(agent: &lazyscale_testenv::Agent) -> f64 {
    ["Fast", "Allowed", "Patched", "FailOpen"]
        .iter()
        .map(|p| agent.metric(&format!("lazyscale_webhook_requests_total{{path=\"{p}\"}}")))
        .sum()
}

/// A bare pod `name` in `ns` (the API server calls the webhook for it when the namespace is selected).
async fn create_pod(client: &kube::Client, ns: &str, name: &str) {
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "x"}]}}))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

/// Writes `cert` as a Secret volume does: the files in a timestamped folder, `..data` pointing to it,
/// `tls.crt`, `tls.key` and `ca.crt` links through `..data`; a later call swaps `..data` atomically.
fn write_secret_volume(dir: &std::path::Path, generation: u32, cert: &lazyscale::webhook::Certificate) {
    use std::os::unix::fs::symlink;
    let folder = format!("..gen_{generation}");
    std::fs::create_dir_all(dir.join(&folder)).unwrap();
    std::fs::write(dir.join(&folder).join("tls.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join(&folder).join("tls.key"), &cert.key_pem).unwrap();
    std::fs::write(dir.join(&folder).join("ca.crt"), &cert.ca_pem).unwrap();
    symlink(&folder, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        if std::fs::symlink_metadata(dir.join(key)).is_err() {
            symlink(format!("..data/{key}"), dir.join(key)).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rewritten_certificate_files_are_served_and_their_ca_injected_without_a_restart() {
    let _one = ONE_AT_A_TIME.lock().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = TestEnv::shared();
    let client = env.client().await;
    install_crds(&client).await.unwrap();

    // a CA and a certificate for 127.0.0.1 as cert-manager writes them: tls.crt holds the leaf only, the
    // CA is in ca.crt
    let names = ["127.0.0.1".to_string()].into();
    let policy = lazyscale::cert::CertPolicy::default();
    let now = k8s_openapi::jiff::Timestamp::now();
    let first = lazyscale::cert::generate(&names, now, &policy, None).unwrap();
    let second = lazyscale::cert::generate(&names, now, &policy, None).unwrap();
    // one CA each (no previous bundle)
    let (first_ca, second_ca) = (first.ca_pem.clone(), second.ca_pem.clone());
    assert_eq!((ders(&first_ca).len(), ders(&second_ca).len()), (1, 1));
    let volume = tempfile::tempdir().unwrap();
    write_secret_volume(volume.path(), 1, &first);
    let cert_file = format!("--webhook-cert-file={}", volume.path().join("tls.crt").display());
    let key_file = format!("--webhook-key-file={}", volume.path().join("tls.key").display());
    let mut agent = start_agent(
        env.server(),
        &[
            "--webhook-certificate-mode=files",
            &cert_file,
            &key_file,
            "--grace-period-seconds=2",
        ],
    );
    let pid = agent.pid();
    assert_eq!(
        served_leaf(agent.webhook_port, &first_ca).await,
        Some(der_of(&first.cert_pem))
    );

    // an autoscaler starts the stack: the webhook is registered with the CA of ca.crt (not the last
    // certificate of tls.crt, which is the leaf)
    let ns = env.namespace().await;
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment("web"))
        .await
        .unwrap();
    let dpas = dpa_api(client.clone(), &ns);
    let dpa = json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler", "metadata": {"name": "web"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "owner": "Local",
            "constraints": {"minReplicas": 2, "maxReplicas": 2}}});
    dpas.patch("web", &PatchParams::apply("test"), &Patch::Apply(dpa))
        .await
        .unwrap();
    wait_for(30, "the webhook configuration trusting ca.crt", || async {
        (ders(&registered_ca(&client).await?) == ders(&first_ca)).then_some(())
    })
    .await;
    let before = answered(&agent);
    create_pod(&client, &ns, "before").await;
    wait_for(20, "the API server calling the webhook", || async {
        (answered(&agent) > before).then_some(())
    })
    .await;

    // the files are rewritten (a new CA and certificate, as after a CA rotation): served without a
    // restart, the new CA injected (the previous one kept while valid, for the other replicas)
    write_secret_volume(volume.path(), 2, &second);
    wait_for(40, "the new certificate served", || async {
        (served_leaf(agent.webhook_port, &second_ca).await? == der_of(&second.cert_pem)).then_some(())
    })
    .await;
    let bundle = wait_for(20, "the new CA in the caBundle", || async {
        let ca = ders(&registered_ca(&client).await?);
        (ca.first() == ders(&second_ca).first()).then_some(ca)
    })
    .await;
    assert_eq!(
        bundle,
        [ders(&second_ca), ders(&first_ca)].concat(),
        "the new CA, then the previous one (kept while valid)"
    );
    // the API server reaches the webhook through the new certificate: without the new CA in the
    // caBundle its TLS check would fail and (failurePolicy Ignore) the pod would be created uncalled
    let before = answered(&agent);
    create_pod(&client, &ns, "after").await;
    wait_for(
        20,
        "the API server calling the webhook after the rotation",
        || async { (answered(&agent) > before).then_some(()) },
    )
    .await;
    assert!(agent.try_wait().unwrap().is_none());
    assert_eq!(agent.pid(), pid, "no restart");

    dpas.delete("web", &DeleteParams::default()).await.unwrap();
    agent.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_of_the_wrong_type_or_missing_a_key_is_replaced() {
    let _one = ONE_AT_A_TIME.lock().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = TestEnv::shared();
    let client = env.client().await;
    install_crds(&client).await.unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), AGENT_NAMESPACE);
    let _ = secrets.delete(SECRET_NAME, &DeleteParams::default()).await;
    wait_for(20, "no Secret", || async {
        secrets.get_opt(SECRET_NAME).await.ok()?.is_none().then_some(())
    })
    .await;
    // an Opaque Secret of that name (a Secret's type cannot be changed: it must be deleted)
    let opaque: Secret = serde_json::from_value(json!({"metadata": {"name": SECRET_NAME},
        "type": "Opaque", "stringData": {"tls.crt": "not a certificate"}}))
    .unwrap();
    let opaque = secrets.create(&PostParams::default(), &opaque).await.unwrap();

    let mut agent = start_agent(env.server(), &["--webhook-certificate-mode=agent"]);
    let pid = agent.pid();
    let replaced = wait_for(30, "the Secret replaced by a kubernetes.io/tls one", || async {
        let s = secrets.get_opt(SECRET_NAME).await.ok()??;
        (s.type_.as_deref() == Some("kubernetes.io/tls")).then_some(s)
    })
    .await;
    assert_ne!(replaced.metadata.uid, opaque.metadata.uid, "a new Secret");
    for key in [CERT_KEY, lazyscale::cert::KEY_KEY, CA_KEY] {
        assert!(replaced.data.as_ref().unwrap().contains_key(key), "{key}");
    }
    wait_for(20, "the agent serving the Secret's certificate", || async {
        let s = secrets.get(SECRET_NAME).await.ok()?;
        (served_leaf(agent.webhook_port, &text(&s, CA_KEY)).await? == der_of(&text(&s, CERT_KEY)))
            .then_some(())
    })
    .await;

    // while it runs: a key removed from the Secret (the type is right) is written again
    let remove: json_patch::Patch =
        serde_json::from_value(json!([{"op": "remove", "path": "/data/ca.crt"}])).unwrap();
    secrets
        .patch(SECRET_NAME, &PatchParams::default(), &Patch::<()>::Json(remove))
        .await
        .unwrap();
    wait_for(30, "ca.crt written again", || async {
        let s = secrets.get(SECRET_NAME).await.ok()?;
        s.data.as_ref()?.contains_key(CA_KEY).then_some(())
    })
    .await;
    wait_for(
        20,
        "the agent serving the rewritten Secret's certificate",
        || async {
            let s = secrets.get(SECRET_NAME).await.ok()?;
            (served_leaf(agent.webhook_port, &text(&s, CA_KEY)).await? == der_of(&text(&s, CERT_KEY)))
                .then_some(())
        },
    )
    .await;
    assert!(agent.try_wait().unwrap().is_none());
    assert_eq!(agent.pid(), pid, "no restart");
    agent.stop().unwrap();
    let _ = secrets.delete(SECRET_NAME, &DeleteParams::default()).await;
}
