//! Field ownership of the DPA status on the real API server: the horizontal writer (the controller,
//! field manager `lazyscale-horizontal`) and the vertical writer (field manager `lazyscale-vertical`,
//! the body the agent's vertical loop applies) each apply only their own fields, so neither reverts
//! what the other wrote.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{condition, wait_for};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use lazyscale_api::DatadogPodAutoscaler;
use lazyscale_api::consts::conditions::{self, reasons};
use lazyscale_api::consts::{API_VERSION, DPA_KIND, field_managers};
use lazyscale_controller::{Config, Controller, StaticPods};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn vertical_version(d: &DatadogPodAutoscaler) -> Option<String> {
    Some(
        d.status
            .as_ref()?
            .vertical
            .as_ref()?
            .target
            .as_ref()?
            .version
            .clone(),
    )
}

/// The vertical writer's fields are as it last wrote them.
fn assert_vertical(d: &DatadogPodAutoscaler, version: &str, able: &str) {
    assert_eq!(
        vertical_version(d).as_deref(),
        Some(version),
        "horizontal reverted vertical"
    );
    assert_eq!(
        condition(d, conditions::VERTICAL_ABLE_TO_RECOMMEND).map(|c| c.0),
        Some(able.into())
    );
}

/// What the vertical loop applies: `status.vertical.target` and its conditions.
async fn apply_vertical(api: &Api<DatadogPodAutoscaler>, ns: &str, version: &str, able: &str) {
    let body = json!({
        "apiVersion": API_VERSION, "kind": DPA_KIND,
        "metadata": {"name": "web", "namespace": ns},
        "status": {
            "vertical": {"target": {
                "source": "Local", "version": version,
                "desiredResources": [{"name": "app", "requests": {"cpu": "250m", "memory": "128Mi"}}],
                "podCPURequest": "250m", "podMemoryRequest": "128Mi",
            }},
            "conditions": [{"type": conditions::VERTICAL_ABLE_TO_RECOMMEND, "status": able,
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        },
    });
    api.patch_status(
        "web",
        &PatchParams::apply(field_managers::VERTICAL).force(),
        &Patch::Apply(&body),
    )
    .await
    .expect("vertical apply");
}

async fn namespace(client: &Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create namespace: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn horizontal_and_vertical_writers_never_revert_each_other() {
    common::init_tracing();
    let env = lazyscale_testenv::TestEnv::shared();
    let client = env.client().await;
    lazyscale_testenv::install_crds(&client).await.unwrap();
    let ns = format!("ownership-{}", std::process::id());
    namespace(&client, &ns).await;
    let api: Api<DatadogPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    let dpa = |target: &str| {
        json!({
            "apiVersion": API_VERSION, "kind": DPA_KIND,
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "owner": "Local"},
        })
    };
    let apply_dpa = |target: &str| {
        let (api, body) = (api.clone(), dpa(target));
        async move {
            api.patch("web", &PatchParams::apply("test").force(), &Patch::Apply(body))
                .await
                .expect("apply DPA");
        }
    };
    apply_dpa("absent").await;

    // The vertical writer first.
    apply_vertical(&api, &ns, "v1", "True").await;

    // The horizontal writer: the target does not exist, so it writes Active=False / Error=True.
    let config = Config {
        namespace: Some(ns.clone()),
        recommendation_period: Duration::from_secs(1),
        ..Config::default()
    };
    let controller = Controller::new(client.clone(), config, Arc::new(StaticPods::new()));
    let (_leader_tx, leader) = watch::channel(true);
    let stop = CancellationToken::new();
    let task = tokio::spawn(controller.run(leader, stop.clone()));
    let d = wait_for(20, "horizontal conditions written", || async {
        let d = api.get("web").await.ok()?;
        (condition(&d, conditions::ACTIVE).map(|c| c.0) == Some("False".into())).then_some(d)
    })
    .await;
    assert_eq!(
        condition(&d, conditions::ERROR),
        Some(("True".into(), Some(reasons::TARGET_NOT_FOUND.into())))
    );
    assert_vertical(&d, "v1", "True");

    // The vertical writer again: the horizontal fields stay.
    apply_vertical(&api, &ns, "v2", "False").await;
    let d = api.get("web").await.expect("get");
    assert_eq!(vertical_version(&d).as_deref(), Some("v2"));
    assert_eq!(
        condition(&d, conditions::ACTIVE).map(|c| c.0),
        Some("False".into()),
        "vertical reverted horizontal"
    );
    assert_eq!(
        condition(&d, conditions::ERROR).map(|c| c.1),
        Some(Some(reasons::TARGET_NOT_FOUND.into()))
    );

    // A new horizontal write (another missing target changes its message) keeps the vertical v2.
    apply_dpa("gone").await;
    let d = wait_for(20, "horizontal rewrite", || async {
        let d = api.get("web").await.ok()?;
        let s = d.status.as_ref()?.conditions.as_ref()?;
        s.iter()
            .any(|c| {
                c.type_ == conditions::ACTIVE && c.message.as_deref().is_some_and(|m| m.contains("gone"))
            })
            .then_some(d)
    })
    .await;
    assert_vertical(&d, "v2", "False");

    // Each writer owns only its fields.
    let managers: Vec<(String, String)> = d
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.fields_v1.as_ref().map(|f| f.0.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    let fields_of = |manager: &str| {
        managers
            .iter()
            .find(|(m, _)| m == manager)
            .map(|(_, f)| f.clone())
            .unwrap_or_default()
    };
    let horizontal = fields_of(field_managers::HORIZONTAL);
    let vertical = fields_of(field_managers::VERTICAL);
    assert!(!horizontal.contains("f:vertical"), "{horizontal}");
    assert!(
        !horizontal.contains(conditions::VERTICAL_ABLE_TO_RECOMMEND),
        "{horizontal}"
    );
    assert!(vertical.contains("f:vertical"), "{vertical}");
    assert!(!vertical.contains(conditions::ACTIVE), "{vertical}");

    stop.cancel();
    let _ = task.await;
}
