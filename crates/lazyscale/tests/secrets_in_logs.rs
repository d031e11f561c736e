//! No secrets in the agent's log: the agent runs with a ServiceAccount token kubeconfig (a
//! TokenRequest token, as in a cluster) and a webhook key from files, at `RUST_LOG=trace` (every
//! crate, kube's and hyper's included), while it does real work on the real control plane: the stack
//! starts for a DPA, the webhook is registered and answers the API server's admission calls over TLS
//! with that key, the DPA's status is written. The log must hold none of the token, any of its three
//! JWT parts, or any line of the key's PEM body.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use lazyscale_api::DatadogPodAutoscaler;
use lazyscale_api::consts::conditions;
use lazyscale_testenv::fixtures::{app_deployment, condition, dpa_api, dpa_object, horizontal_spec};
use lazyscale_testenv::wait::wait_for;
use lazyscale_testenv::{Agent, AgentOptions, TestEnv, install_crds};
use serde_json::Value;

/// The bearer token of a kubeconfig's first user (inline, or its `tokenFile`).
fn token_of(kubeconfig: &std::path::Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let kc: Value = serde_saphyr::from_str(&text).unwrap();
    let user = kc.pointer("/users/0/user").expect("a user");
    match (
        user.get("token").and_then(Value::as_str),
        user.get("tokenFile").and_then(Value::as_str),
    ) {
        (Some(t), _) => t.to_owned(),
        (None, Some(f)) => std::fs::read_to_string(f).unwrap().trim().to_owned(),
        _ => panic!("the agent's kubeconfig authenticates with a token"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_and_the_webhook_key_never_reach_the_log_at_trace_level() {
    let env = TestEnv::shared();
    let client = env.client().await;
    install_crds(&client).await.unwrap();
    let ns = env.namespace().await;
    let token = token_of(env.agent_kubeconfig_path());
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a ServiceAccount token is a JWT");

    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let key_pem = cert.signing_key.serialize_pem();
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, &key_pem).unwrap();
    let log = dir.path().join("agent.log");

    let mut opts = AgentOptions::new(env!("CARGO_BIN_EXE_lazyscale"), env.agent_kubeconfig_path())
        .args([
            format!("--webhook-cert-file={}", cert_file.display()),
            format!("--webhook-key-file={}", key_file.display()),
            "--lease-namespace=default".to_owned(),
            "--horizontal-period-seconds=1".to_owned(),
        ])
        .log_to(&log);
    opts.rust_log = "trace".to_owned();
    let agent = Agent::start(opts).unwrap();

    // Work that authenticates, serves TLS and writes status.
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let mut d = app_deployment("web", 1, "100m", "64Mi");
    d.metadata.namespace = Some(ns.clone());
    deployments.create(&PostParams::default(), &d).await.unwrap();
    dpa_api(client.clone(), &ns)
        .patch(
            "web",
            &PatchParams::apply("secrets-test"),
            &Patch::Apply(&dpa_object(&ns, "web", horizontal_spec("web", 50, 1, 3))),
        )
        .await
        .unwrap();
    let typed: Api<DatadogPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    wait_for(60, "the DPA's Active condition", || async {
        condition(&typed.get("web").await.ok()?, conditions::ACTIVE).map(|_| ())
    })
    .await;
    wait_for(60, "the webhook registered", || async {
        lazyscale_testenv::fixtures::webhook_configuration(&client)
            .await
            .ok()
            .flatten()
            .map(|_| ())
    })
    .await;
    // New pods go through the webhook (TLS with the key above).
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    wait_for(60, "2 pods of web", || async {
        (pods.list(&ListParams::default()).await.ok()?.items.len() >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let served = agent.metrics().unwrap();
    agent.stop().unwrap();

    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.lines().count();
    assert!(
        lines > 200,
        "a trace-level log of real work has more than {lines} lines"
    );
    assert!(
        text.contains("TRACE") || text.contains("\"level\":\"TRACE\""),
        "the log is at trace level"
    );
    let webhook_requests: f64 = served
        .iter()
        .filter(|(k, _)| k.starts_with("lazyscale_webhook_requests"))
        .map(|(_, v)| v)
        .sum();
    assert!(webhook_requests > 0.0, "the webhook was called: {served:?}");
    assert!(!text.contains(&token), "the bearer token is in the log");
    for (i, part) in parts.iter().enumerate() {
        assert!(!text.contains(part), "part {i} of the token's JWT is in the log");
    }
    for line in key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
    {
        assert!(!text.contains(line), "a line of the webhook key is in the log");
    }
    eprintln!("{lines} log lines at trace level, {webhook_requests} webhook requests: no token, no key");
}
