//! The CRDs and fixtures against a real API server (the test environment's apiextensions machinery):
//!
//! - our generated CRDs are accepted (structural schema) and become Established;
//! - every fixture is accepted under our CRDs and under the official ones, the server's defaulting gives
//!   exactly the spec our types produce when they read the fixture, the status is stored unchanged, and
//!   the stored objects read back into our types;
//! - our CRDs reject what the official ones reject (out-of-range values, malformed quantities).

// Test helpers panic on broken fixtures: that is the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, CustomResourceExt};
use lazyscale_api::{DatadogPodAutoscaler, DatadogPodAutoscalerClusterProfile};
use lazyscale_testenv::{Server, ServerOptions, TestEnv};
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

const FIXTURES: [&str; 5] = [
    "dpa-minimal.yaml",
    "dpa-optimize-cost.yaml",
    "dpa-full.yaml",
    "dpacp-minimal.yaml",
    "dpacp-full.yaml",
];

async fn install(client: &Client, crds: Vec<CustomResourceDefinition>) {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap();
        api.create(&PostParams::default(), &crd)
            .await
            .unwrap_or_else(|e| panic!("create CRD {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not established"))
        .unwrap();
    }
}

async fn namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

fn dynamic_api(client: &Client, obj: &Value, ns: &str) -> Api<DynamicObject> {
    if obj["kind"] == "DatadogPodAutoscaler" {
        Api::namespaced_with(client.clone(), ns, &DatadogPodAutoscaler::api_resource())
    } else {
        Api::all_with(
            client.clone(),
            &DatadogPodAutoscalerClusterProfile::api_resource(),
        )
    }
}

/// What our types make of `input` (read, then written back).
fn through_our_types(input: &Value) -> Value {
    if input["kind"] == "DatadogPodAutoscaler" {
        serde_json::to_value(serde_json::from_value::<DatadogPodAutoscaler>(input.clone()).unwrap()).unwrap()
    } else {
        serde_json::to_value(
            serde_json::from_value::<DatadogPodAutoscalerClusterProfile>(input.clone()).unwrap(),
        )
        .unwrap()
    }
}

/// Creates every fixture (then its status) and checks what the server stored. `suffix` keeps object
/// names unique when several checks share a server.
async fn check_fixtures(client: &Client, ns: &str, suffix: &str) {
    for name in FIXTURES {
        let mut input = fixture(name);
        let obj_name = format!("{}-{suffix}", input["metadata"]["name"].as_str().unwrap());
        input["metadata"]["name"] = json!(obj_name);
        if input["kind"] == "DatadogPodAutoscaler" {
            input["metadata"]["namespace"] = json!(ns);
        }
        let api = dynamic_api(client, &input, ns);
        let mut create = input.clone();
        let status = create.as_object_mut().unwrap().remove("status");
        let obj: DynamicObject = serde_json::from_value(create).unwrap();
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("{name}: create: {e}"));
        if let Some(status) = &status {
            api.patch_status(
                &obj_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: status: {e}"));
        }
        let stored = serde_json::to_value(api.get(&obj_name).await.unwrap()).unwrap();
        let ours = through_our_types(&input);
        assert_eq!(
            stored["spec"], ours["spec"],
            "{name}: server defaulting differs from our types"
        );
        if let Some(status) = status {
            assert_eq!(stored["status"], status, "{name}: stored status differs");
        }
        // The stored object reads into our types and writes back the same spec and status.
        let again = through_our_types(&stored);
        assert_eq!(
            again["spec"], stored["spec"],
            "{name}: stored spec does not round-trip"
        );
        assert_eq!(
            again["status"], stored["status"],
            "{name}: stored status does not round-trip"
        );
    }
}

async fn expect_rejected(client: &Client, ns: &str, pointer: &str, bad: Value) {
    let mut input = fixture("dpa-full.yaml");
    input.as_object_mut().unwrap().remove("status");
    input["metadata"]["name"] = json!(format!("bad-{}", pointer.len()));
    input["metadata"]["namespace"] = json!(ns);
    *input.pointer_mut(pointer).unwrap() = bad;
    let obj: DynamicObject = serde_json::from_value(input.clone()).unwrap();
    let err = dynamic_api(client, &input, ns)
        .create(&PostParams::default(), &obj)
        .await
        .expect_err(pointer);
    assert!(err.to_string().contains("Invalid"), "{pointer}: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn our_crds_are_accepted_and_store_the_fixtures() {
    let env = TestEnv::shared();
    let client = env.client().await;
    install(&client, lazyscale_api::crds()).await;
    let ns = env.namespace().await;
    check_fixtures(&client, &ns, "ours").await;
    for (pointer, bad) in [
        (
            "/spec/objectives/1/containerResource/value/utilization",
            json!(101),
        ),
        (
            "/spec/objectives/0/podResource/value/absoluteValue",
            json!("12 apples"),
        ),
        ("/spec/constraints/containers/0/minAllowed/cpu", json!("1.5.5")),
        ("/spec/applyPolicy/mode", json!("Dry")),
        ("/spec/objectives/2/customQuery/request/queries", json!([])),
    ] {
        expect_rejected(&client, &ns, pointer, bad).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fixtures_behave_the_same_under_the_official_crds() {
    // A private server: the official CRDs have the same names as ours.
    let server = std::thread::spawn(|| Server::start(ServerOptions::default()))
        .join()
        .unwrap()
        .unwrap();
    let client = server.client().await.unwrap();
    let official: Vec<CustomResourceDefinition> =
        ["official-dpa-v1alpha2.yaml", "official-dpacp-v1alpha2.yaml"]
            .into_iter()
            .map(|f| serde_json::from_value(fixture(f)).unwrap())
            .collect();
    install(&client, official).await;
    namespace(&client, "compat").await;
    check_fixtures(&client, "compat", "official").await;
    drop(client);
    std::thread::spawn(move || drop(server)).join().unwrap();
}
