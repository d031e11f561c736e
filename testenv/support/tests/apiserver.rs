//! What the test control plane must do for lazyscale's tests, and proof that it is the real thing:
//! built-in validation, RBAC, service-account tokens, impersonation, the scheduler and kwok, the
//! garbage collector, evictions under PodDisruptionBudgets, in-place resize, admission webhooks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, EvictParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher::{self, Event};
use lazyscale_testenv::{Server, ServerOptions, TestEnv};
use serde_json::json;

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "nginx",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}}]}
    }))
    .unwrap()
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}
    }))
    .unwrap()
}

async fn timeout<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("timed out")
}

#[tokio::test(flavor = "multi_thread")]
async fn default_namespaces_exist() {
    let env = TestEnv::shared();
    let api = Api::<Namespace>::all(env.client().await);
    for ns in ["default", "kube-system", "kube-public"] {
        let got = api.get(ns).await.unwrap();
        assert_eq!(
            got.metadata.labels.unwrap()["kubernetes.io/metadata.name"],
            ns,
            "namespaces carry their name label, as kube-apiserver sets it"
        );
        assert_eq!(got.status.unwrap().phase.as_deref(), Some("Active"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn crd_established_then_custom_resource_create_patch_status() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "size": {"type": "integer", "minimum": 1, "maximum": 10},
                        "replicas": {"type": "integer"},
                        "color": {"type": "string", "default": "blue"}}},
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}, "replicas": {"type": "integer"}}}}}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    timeout(await_condition(
        crds,
        "widgets.example.com",
        conditions::is_crd_established(),
    ))
    .await
    .unwrap();

    let ns = env.namespace().await;
    let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let api = Api::<DynamicObject>::namespaced_with(client, &ns, &ar);
    // schema validation is real
    let bad: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "bad"}, "spec": {"size": 99}}),
    )
    .unwrap();
    let err = api.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(err.to_string().contains("spec.size"), "{err}");
    // defaulting is real
    let w: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3, "replicas": 1}}),
    )
    .unwrap();
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.data["spec"]["color"], "blue");
    let patched = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["size"], 4);
    let status = api
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(status.data["status"]["ready"], true);
    // the status subresource ignores spec changes, the main resource ignores status changes
    let again = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": false}})),
        )
        .await
        .unwrap();
    assert_eq!(again.data["status"]["ready"], true);
    // /scale on a custom resource
    let scale = api
        .patch_scale(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    assert_eq!(api.get("w").await.unwrap().data["spec"]["replicas"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_watch_sees_added_modified_deleted() {
    let env = TestEnv::shared();
    let ns = env.namespace().await;
    let api = Api::<Pod>::namespaced(env.client().await, &ns);
    let mut stream = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    // wait for the initial (empty) list
    loop {
        if let Event::InitDone = timeout(stream.try_next()).await.unwrap().unwrap() {
            break;
        }
    }
    api.create(&PostParams::default(), &pod("p", json!({"app": "w"})))
        .await
        .unwrap();
    let Event::Apply(p) = timeout(stream.try_next()).await.unwrap().unwrap() else {
        panic!("expected ADDED")
    };
    assert_eq!(p.metadata.name.as_deref(), Some("p"));
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));
    // kube-scheduler binds it, kwok runs it: MODIFIED events until Running.
    let node = loop {
        let Event::Apply(p) = timeout(stream.try_next()).await.unwrap().unwrap() else {
            panic!("expected MODIFIED")
        };
        if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
            break p.spec.and_then(|s| s.node_name);
        }
    };
    assert!(
        node.unwrap_or_default()
            .starts_with(lazyscale_testenv::NODE_PREFIX),
        "bound to a kwok node"
    );
    // Graceful deletion: a deletionTimestamp first, then kwok removes the pod.
    api.delete("p", &DeleteParams::default()).await.unwrap();
    loop {
        match timeout(stream.try_next()).await.unwrap().unwrap() {
            Event::Delete(p) => {
                assert_eq!(p.metadata.name.as_deref(), Some("p"));
                break;
            }
            Event::Apply(p) => assert!(p.metadata.deletion_timestamp.is_some()),
            _ => panic!("expected DELETED"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deployment_and_statefulset_scale_subresource() {
    let env = TestEnv::shared();
    let ns = env.namespace().await;
    let client = env.client().await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &deployment("web", 2))
        .await
        .unwrap();
    let scale = deployments.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=web"));
    deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 7}})),
        )
        .await
        .unwrap();
    let d = deployments.get("web").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(7));
    assert_eq!(
        d.metadata.generation,
        Some(2),
        "a scale change bumps the generation"
    );

    let sets = Api::<StatefulSet>::namespaced(client, &ns);
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"selector": {"matchLabels": {"app": "db"}}, "serviceName": "db",
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "postgres"}]}}}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &sts).await.unwrap();
    assert_eq!(
        sets.get_scale("db").await.unwrap().spec.unwrap().replicas,
        Some(1),
        "replicas default to 1"
    );
    sets.patch_scale(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    assert_eq!(sets.get("db").await.unwrap().spec.unwrap().replicas, Some(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn eviction_deletes_the_pod_and_honours_budgets() {
    let env = TestEnv::shared();
    let ns = env.namespace().await;
    // kube retries 429 by default (honouring Retry-After); the refusal itself is under test here
    let mut config = env.server().config().await.unwrap();
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &pod("a", json!({"app": "guarded"})))
        .await
        .unwrap();
    pods.patch_status(
        "a",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
        ),
    )
    .await
    .unwrap();
    let pdbs = Api::<DynamicObject>::namespaced_with(
        client,
        &ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("policy", "v1", "PodDisruptionBudget"),
            "poddisruptionbudgets",
        ),
    );
    let pdb: DynamicObject = serde_json::from_value(json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "keep-one"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}}))
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    let err = pods.evict("a", &EvictParams::default()).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 429),
        "a budget violation is 429: {err}"
    );
    assert!(pods.get_opt("a").await.unwrap().is_some());
    pdbs.delete("keep-one", &DeleteParams::default()).await.unwrap();
    // The disruption controller must have observed the budget's removal: retry the 429s for a while.
    let mut evicted = false;
    for _ in 0..100 {
        match pods.evict("a", &EvictParams::default()).await {
            Ok(_) => {
                evicted = true;
                break;
            }
            Err(kube::Error::Api(s)) if s.code == 429 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("evict: {e}"),
        }
    }
    assert!(evicted, "eviction allowed once the budget is gone");
    timeout(async {
        while pods.get_opt("a").await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resize_updates_only_container_resources() {
    let env = TestEnv::shared();
    let ns = env.namespace().await;
    let client = env.client().await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &pod("r", json!({"app": "r"})))
        .await
        .unwrap();
    let req = http::Request::patch(format!("/api/v1/namespaces/{ns}/pods/r/resize"))
        .header("Content-Type", "application/strategic-merge-patch+json")
        .body(
            serde_json::to_vec(&json!({
                "metadata": {"labels": {"sneaky": "yes"}},
                "spec": {"containers": [{"name": "app", "image": "other",
                    "resources": {"requests": {"cpu": "300m", "memory": "64Mi"}, "limits": {"cpu": "600m", "memory": "128Mi"}}}]}
            }))
            .unwrap(),
        )
        .unwrap();
    let resized: Pod = client.request(req).await.unwrap();
    let c = &resized.spec.as_ref().unwrap().containers[0];
    let requests = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert_eq!(requests["cpu"].0, "300m");
    assert_eq!(
        c.image.as_deref(),
        Some("nginx"),
        "resize changes nothing but resources"
    );
    assert!(!resized.metadata.labels.unwrap_or_default().contains_key("sneaky"));
    assert_eq!(resized.metadata.generation, Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn request_counter_counts_a_pod_list() {
    let env = TestEnv::shared();
    let ns = env.namespace().await;
    let before = env.request_count("LIST", "pods").await;
    Api::<Pod>::namespaced(env.client().await, &ns)
        .list(&Default::default())
        .await
        .unwrap();
    let after = env.request_count("LIST", "pods").await;
    // other tests of this binary may list pods concurrently: at least ours is there
    assert!(after > before, "before {before}, after {after}");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_side_apply_on_builtin_and_custom_resources() {
    let env = TestEnv::shared();
    let ns = env.namespace().await;
    let client = env.client().await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ssa"},
        "spec": {"selector": {"matchLabels": {"app": "ssa"}},
            "template": {"metadata": {"labels": {"app": "ssa"}}, "spec": {"containers": [{"name": "app", "image": "v1"}]}}}});
    deployments
        .patch("ssa", &PatchParams::apply("first"), &Patch::Apply(&d))
        .await
        .unwrap();
    let mut d2 = d.clone();
    d2["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v2");
    let err = deployments
        .patch("ssa", &PatchParams::apply("second"), &Patch::Apply(&d2))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "a field owned by another manager conflicts: {err}"
    );
    let got = deployments
        .patch("ssa", &PatchParams::apply("second").force(), &Patch::Apply(&d2))
        .await
        .unwrap();
    assert_eq!(
        got.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("v2")
    );

    // the metrics.k8s.io PodMetrics resource is a CRD: server-side apply on it
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics"),
        "pods",
    );
    let metrics = Api::<DynamicObject>::namespaced_with(client, &ns, &ar);
    let m = json!({"apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics", "metadata": {"name": "p"},
        "timestamp": "2026-01-01T00:00:00Z", "window": "15s", "containers": [{"name": "app", "usage": {"cpu": "50m", "memory": "10Mi"}}]});
    metrics
        .patch("p", &PatchParams::apply("sim"), &Patch::Apply(&m))
        .await
        .unwrap();
    let list = metrics.list(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].data["containers"][0]["usage"]["cpu"], "50m");
}

#[tokio::test(flavor = "multi_thread")]
async fn mutating_webhook_is_called_on_pod_create_and_its_patch_lands() {
    use axum::{Json, Router, routing::post};
    use base64::Engine;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = TestEnv::shared();
    let ns = env.namespace().await;
    let client = env.client().await;

    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert_pem = cert.cert.pem();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert_pem.clone().into_bytes(),
        cert.signing_key.serialize_pem().into_bytes(),
    )
    .await
    .unwrap();
    let app = Router::new().route(
        "/mutate",
        post(|Json(review): Json<serde_json::Value>| async move {
            let patch = json!([{"op": "add", "path": "/metadata/labels/mutated-by", "value": "test-webhook"}]);
            let patch = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
            Json(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": review["request"]["uid"], "allowed": true, "patchType": "JSONPatch", "patch": patch}}))
        }),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(
        axum_server::from_tcp_rustls(listener, tls)
            .unwrap()
            .serve(app.into_make_service()),
    );

    let hooks = Api::<DynamicObject>::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(
                "admissionregistration.k8s.io",
                "v1",
                "MutatingWebhookConfiguration",
            ),
            "mutatingwebhookconfigurations",
        ),
    );
    let name = format!("test-{ns}");
    let cfg: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": {"name": name},
        "webhooks": [{"name": "test.lazyscale.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": "Fail", "timeoutSeconds": 5,
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "clientConfig": {"url": format!("https://{addr}/mutate"),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&cert_pem)},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}]
    }))
    .unwrap();
    hooks.create(&PostParams::default(), &cfg).await.unwrap();
    let pods = Api::<Pod>::namespaced(client, &ns);
    // the webhook informer of the API server picks the configuration up asynchronously
    let mut mutated = None;
    for i in 0..100 {
        let p = pods
            .create(
                &PostParams::default(),
                &pod(&format!("m{i}"), json!({"app": "m"})),
            )
            .await
            .unwrap();
        if p.metadata.labels.unwrap_or_default().contains_key("mutated-by") {
            mutated = Some(i);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(mutated.is_some(), "the webhook's patch never landed");
    hooks.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[test]
fn dropping_a_server_stops_its_processes() {
    let server = Server::start(ServerOptions::default()).unwrap();
    let pids = server.pids();
    let dir = server.dir().to_path_buf();
    assert_eq!(
        pids.len(),
        5,
        "etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok"
    );
    for pid in &pids {
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
    drop(server);
    for pid in &pids {
        // a zombie would still have the folder until reaped; the server waits on its children
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} survived the drop"
        );
    }
    assert!(!dir.exists(), "the temporary folder is removed");
}

#[test]
fn a_panicking_owner_does_not_leak_processes() {
    // The server is owned by a thread that panics; unwinding drops it.
    let pids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let p2 = pids.clone();
    let r = std::thread::spawn(move || {
        let server = Server::start(ServerOptions::default()).unwrap();
        *p2.lock().unwrap() = server.pids();
        panic!("test failure while the server runs");
    })
    .join();
    assert!(r.is_err());
    for pid in pids.lock().unwrap().iter() {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} survived the panic"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn built_in_validation_rejects_an_invalid_pod() {
    let env = TestEnv::shared();
    let ns = env.namespace().await;
    let pods = Api::<Pod>::namespaced(env.client().await, &ns);
    let bad: Pod = serde_json::from_value(json!({
        "metadata": {"name": "Bad_Name"},
        "spec": {"containers": []}
    }))
    .unwrap();
    let err = pods.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422 && s.reason == "Invalid"),
        "{err}"
    );
    let negative = deployment("neg", -3);
    let err = Api::<Deployment>::namespaced(env.client().await, &ns)
        .create(&PostParams::default(), &negative)
        .await
        .unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 422), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_forbids_an_unprivileged_service_account_and_impersonation_works() {
    let env = TestEnv::shared();
    let ns = env.namespace().await;
    let admin = env.client().await;
    let sas = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin.clone(), &ns);
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "nobody"}})).unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();

    // A token for the ServiceAccount (TokenRequest, signed by the API server's key).
    let tr: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": []}})).unwrap();
    let token = sas
        .create_token_request("nobody", &PostParams::default(), &tr)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let mut config = env.server().config().await.unwrap();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    let as_sa = kube::Client::try_from(config).unwrap();
    let err = Api::<Pod>::namespaced(as_sa.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "an unprivileged ServiceAccount is forbidden: {err}"
    );

    // Granted a Role, the same token may list pods.
    let roles = Api::<DynamicObject>::namespaced_with(
        admin.clone(),
        &ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "Role")),
    );
    let bindings = Api::<DynamicObject>::namespaced_with(
        admin.clone(),
        &ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
        )),
    );
    let role: DynamicObject = serde_json::from_value(json!({"apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role", "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]}))
    .unwrap();
    roles.create(&PostParams::default(), &role).await.unwrap();
    let rb: DynamicObject = serde_json::from_value(json!({"apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding", "metadata": {"name": "nobody-reads"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": ns}]}))
    .unwrap();
    bindings.create(&PostParams::default(), &rb).await.unwrap();
    timeout(async {
        while Api::<Pod>::namespaced(as_sa.clone(), &ns)
            .list(&Default::default())
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    // Impersonation by the administrator is subject to the impersonated user's rights.
    let mut config = env.server().config().await.unwrap();
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{ns}:nobody"));
    let impersonating = kube::Client::try_from(config).unwrap();
    Api::<Pod>::namespaced(impersonating.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    let err = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(impersonating, &ns)
        .list(&Default::default())
        .await
        .unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 403), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_owner_garbage_collects_what_it_owns() {
    let env = TestEnv::shared();
    let ns = env.namespace().await;
    let client = env.client().await;
    let owners = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns);
    let owner: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap();
    let owner = owners.create(&PostParams::default(), &owner).await.unwrap();
    let owned: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "owned", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
            "name": "owner", "uid": owner.metadata.uid.unwrap()}]}
    }))
    .unwrap();
    owners.create(&PostParams::default(), &owned).await.unwrap();
    owners.delete("owner", &DeleteParams::default()).await.unwrap();
    // kube-controller-manager's garbage collector removes the dependent.
    tokio::time::timeout(Duration::from_secs(60), async {
        while owners.get_opt("owned").await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the garbage collector did not delete the dependent in 60 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_counts_only_the_agent_identity() {
    let env = TestEnv::shared();
    let ns = env.namespace().await;
    let before = env.agent_requests("LIST", "pods");
    let kc = kube::config::Kubeconfig::read_from(env.agent_kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let agent = kube::Client::try_from(config).unwrap();
    Api::<Pod>::namespaced(agent, &ns)
        .list(&Default::default())
        .await
        .unwrap();
    // The administrator's requests are not audited.
    Api::<Pod>::namespaced(env.client().await, &ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(env.agent_requests("LIST", "pods"), before + 1);
}

/// The owner process exits without dropping its server (as a test binary does with `TestEnv::shared()`):
/// the watchdog stops all five processes.
#[test]
fn an_owner_that_exits_without_dropping_leaks_nothing() {
    if std::env::var_os("LAZYSCALE_TESTENV_WATCHDOG_CHILD").is_some() {
        let server = Server::start(ServerOptions::default()).unwrap();
        let pids: Vec<String> = server.pids().iter().map(u32::to_string).collect();
        println!("PIDS {}", pids.join(" "));
        std::mem::forget(server);
        #[allow(clippy::exit)]
        std::process::exit(0);
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "an_owner_that_exits_without_dropping_leaks_nothing",
            "--nocapture",
        ])
        .env("LAZYSCALE_TESTENV_WATCHDOG_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<u32> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PIDS "))
        .expect("the child printed its pids")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 5);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let alive = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    };
    while pids.iter().any(alive) {
        assert!(
            std::time::Instant::now() < deadline,
            "processes {:?} survived their owner",
            pids.iter().filter(|p| alive(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
