//! ClusterProfiles end to end: the agent binary on the real control plane. A labelled Deployment gets a
//! generated DPA and scales; a namespace label covers its Deployments and StatefulSets; `excluded`, a
//! user's own DPA, unknown profiles, invalid templates and invalid label values behave as documented;
//! profile edits and drift propagate; and neither profiles nor generated DPAs keep the lazy stack alive
//! (the API server's audit log counts the agent's pod requests).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use lazyscale_api::consts::{annotations, conditions, events, labels};
use lazyscale_api::{DatadogPodAutoscaler, DatadogPodAutoscalerClusterProfile};
use lazyscale_controller::profiles::plan::{WorkloadKind, generated_name};
use lazyscale_testenv::fixtures::{deployment, statefulset};
use lazyscale_testenv::{Server, ServerOptions, Simulated, constant_load, install_crds, wait_for};

use common::{pod_requests, start_agent};
use serde_json::json;

fn profile(name: &str, min: i32, max: i32) -> serde_json::Value {
    json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscalerClusterProfile",
        "metadata": {"name": name},
        "spec": {"template": {
            "constraints": {"minReplicas": min, "maxReplicas": max},
            "objectives": [{"type": "PodResource", "podResource": {"name": "cpu", "value": {"type": "Utilization", "utilization": 50}}}],
            "fallback": {"horizontal": {"direction": "All"}}}}})
}

async fn apply_profile(api: &Api<DatadogPodAutoscalerClusterProfile>, body: &serde_json::Value) {
    let name = body["metadata"]["name"].as_str().unwrap();
    api.patch(name, &PatchParams::apply("test").force(), &Patch::Apply(body))
        .await
        .unwrap();
}

fn label_patch(value: Option<&str>) -> Patch<serde_json::Value> {
    Patch::Merge(json!({"metadata": {"labels": {labels::PROFILE: value}}}))
}

async fn generated(client: &kube::Client, ns: &str) -> Vec<DatadogPodAutoscaler> {
    Api::<DatadogPodAutoscaler>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|d| lazyscale_api::is_generated(&d.metadata))
        .collect()
}

async fn events_with(client: &kube::Client, ns: &str, reason: &str, about: &str) -> bool {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(about)
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_labelled_deployment_is_autoscaled_follows_its_profile_and_unlabelling_returns_to_idle() {
    let server = Server::start(ServerOptions::default()).unwrap();
    let client = server.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = "default";
    let agent = start_agent(
        &server,
        &[
            "--grace-period-seconds=2",
            "--horizontal-period-seconds=2",
            "--lease-namespace=default",
        ],
    );
    let profiles = Api::<DatadogPodAutoscalerClusterProfile>::all(client.clone());

    // Idle: the built-in profiles appear, a profile of our own does not open the gate, no pod request.
    let builtin = wait_for(20, "the built-in profiles", || {
        let profiles = profiles.clone();
        async move {
            let p = profiles.get_opt("datadog-optimize-balance").await.ok()??;
            Some(p)
        }
    })
    .await;
    assert_eq!(
        builtin.spec.template.constraints.and_then(|c| c.min_replicas),
        Some(2)
    );
    assert_eq!(
        builtin
            .metadata
            .labels
            .unwrap_or_default()
            .get(labels::MANAGED_BY)
            .map(String::as_str),
        Some(labels::MANAGED_BY_DATADOG)
    );
    apply_profile(&profiles, &profile("web", 1, 3)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        agent.metric("lazyscale_gate_open"),
        0.0,
        "profiles never open the gate"
    );
    assert_eq!(pod_requests(&server), (0, 0), "only profiles: no pod LIST/WATCH");

    // Label a Deployment: the gate opens, the DPA is generated with the documented name and the
    // workload scales under load.
    let scene = Simulated::start(&client, ns).await.unwrap();
    let deployments = scene.deployments();
    let mut d = deployment(ns, "api", 1, "").unwrap();
    d.metadata.labels = Some([(labels::PROFILE.to_owned(), "web".to_owned())].into());
    scene.deployment(&d, constant_load(2.0, 32.0)).await.unwrap();
    let name = generated_name("web", WorkloadKind::Deployment, ns, "api");
    let dpas = Api::<DatadogPodAutoscaler>::namespaced(client.clone(), ns);
    let dpa = wait_for(30, "the generated DPA", || {
        let dpas = dpas.clone();
        let name = name.clone();
        async move { dpas.get_opt(&name).await.ok()? }
    })
    .await;
    agent
        .wait_metric("lazyscale_gate_open", 1.0, Duration::from_secs(5))
        .await;
    assert_eq!(dpa.spec.target_ref.name, "api");
    assert_eq!(dpa.spec.target_ref.kind, "Deployment");
    assert_eq!(
        dpa.spec.constraints.as_ref().and_then(|c| c.max_replicas),
        Some(3)
    );
    assert!(dpa.annotations().contains_key(annotations::PROFILE_HASH));
    assert_eq!(
        dpa.metadata.owner_references.as_ref().map(|o| o[0].name.as_str()),
        Some("api"),
        "owned by its workload: deleting the workload deletes it"
    );
    wait_for(90, "the labelled Deployment to scale to maxReplicas 3", || {
        let deployments = deployments.clone();
        async move {
            let r = deployments.get("api").await.ok()?.spec?.replicas?;
            (r == 3).then_some(())
        }
    })
    .await;
    let status = wait_for(20, "the profile status", || {
        let profiles = profiles.clone();
        async move {
            let s = profiles.get("web").await.ok()?.status?;
            (s.controlled_autoscalers == Some(1)).then_some(s)
        }
    })
    .await;
    let valid = status.condition(conditions::VALID).unwrap();
    assert_eq!(valid.status, conditions::STATUS_TRUE);
    assert_eq!(
        status.template_hash.as_deref(),
        dpa.annotations()
            .get(annotations::PROFILE_HASH)
            .map(String::as_str)
    );

    // A profile edit propagates to the generated DPA; a hand edit of the generated DPA is reset.
    apply_profile(&profiles, &profile("web", 1, 2)).await;
    wait_for(10, "the profile edit on the generated DPA", || {
        let dpas = dpas.clone();
        let name = name.clone();
        async move {
            let d = dpas.get(&name).await.ok()?;
            (d.spec.constraints?.max_replicas == Some(2)).then_some(())
        }
    })
    .await;
    dpas.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"constraints": {"maxReplicas": 9}}})),
    )
    .await
    .unwrap();
    wait_for(10, "the drifted DPA to be reset", || {
        let dpas = dpas.clone();
        let name = name.clone();
        async move {
            let d = dpas.get(&name).await.ok()?;
            (d.spec.constraints?.max_replicas == Some(2)).then_some(())
        }
    })
    .await;

    // Unlabel: the generated DPA goes, the stack stops after the grace period, and stays stopped.
    deployments
        .patch("api", &PatchParams::default(), &label_patch(None))
        .await
        .unwrap();
    wait_for(10, "the generated DPA to be deleted", || {
        let dpas = dpas.clone();
        let name = name.clone();
        async move { dpas.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await;
    agent
        .wait_metric("lazyscale_gate_open", 0.0, Duration::from_secs(20))
        .await;
    let closed = pod_requests(&server);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(pod_requests(&server), closed, "idle again: no pod request");
    assert_eq!(
        agent.metric("lazyscale_gate_open"),
        0.0,
        "generated DPAs do not reopen the gate"
    );
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_label_covers_its_workloads_with_exclusions_precedence_and_bad_input() {
    let server = Server::start(ServerOptions::default()).unwrap();
    let client = server.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let agent = start_agent(
        &server,
        &["--grace-period-seconds=1", "--lease-namespace=default"],
    );
    let profiles = Api::<DatadogPodAutoscalerClusterProfile>::all(client.clone());
    let ns = "team";
    let namespaces = Api::<Namespace>::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns, "labels": {labels::PROFILE: "later"}}}))
                .unwrap(),
        )
        .await
        .unwrap();
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    for name in ["a", "b", "out", "mine"] {
        let mut d = deployment(ns, name, 1, "").unwrap();
        if name == "out" {
            d.metadata.labels = Some([(labels::PROFILE.to_owned(), "excluded".to_owned())].into());
        }
        deployments.create(&PostParams::default(), &d).await.unwrap();
    }
    Api::<StatefulSet>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &statefulset(ns, "db", 1).unwrap())
        .await
        .unwrap();
    // the user's own DPA on `mine`
    let user = json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler",
        "metadata": {"name": "by-hand", "namespace": ns},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "mine"}, "owner": "Local"}});
    Api::<DatadogPodAutoscaler>::namespaced(client.clone(), ns)
        .patch("by-hand", &PatchParams::apply("test"), &Patch::Apply(&user))
        .await
        .unwrap();
    agent
        .wait_metric("lazyscale_gate_open", 1.0, Duration::from_secs(20))
        .await;

    // the profile `later` does not exist: nothing is generated
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        generated(&client, ns).await.is_empty(),
        "unknown profile: nothing"
    );

    // once it exists: one DPA for a, b and db; none for `out` (excluded) or `mine` (the user's DPA wins)
    apply_profile(&profiles, &profile("later", 1, 4)).await;
    let made = wait_for(20, "three generated DPAs", || {
        let client = client.clone();
        async move {
            let g = generated(&client, ns).await;
            (g.len() == 3).then_some(g)
        }
    })
    .await;
    let mut targets: Vec<(String, String)> = made
        .iter()
        .map(|d| (d.spec.target_ref.kind.clone(), d.spec.target_ref.name.clone()))
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        [
            ("Deployment".to_owned(), "a".to_owned()),
            ("Deployment".to_owned(), "b".to_owned()),
            ("StatefulSet".to_owned(), "db".to_owned()),
        ]
    );
    for d in &made {
        let kind = if d.spec.target_ref.kind == "StatefulSet" {
            WorkloadKind::StatefulSet
        } else {
            WorkloadKind::Deployment
        };
        assert_eq!(
            d.metadata.name.clone().unwrap(),
            generated_name("later", kind, ns, &d.spec.target_ref.name)
        );
    }
    wait_for(20, "the ProfileSkipped event on the user's workload", || {
        let client = client.clone();
        async move {
            events_with(&client, ns, events::PROFILE_SKIPPED, "mine")
                .await
                .then_some(())
        }
    })
    .await;

    // a workload label wins over the namespace's; an invalid template is reported and not applied
    let mut broken = profile("broken", 5, 2);
    apply_profile(&profiles, &broken).await;
    deployments
        .patch("b", &PatchParams::default(), &label_patch(Some("broken")))
        .await
        .unwrap();
    let status = wait_for(20, "Valid=False on the invalid profile", || {
        let profiles = profiles.clone();
        async move {
            let s = profiles.get("broken").await.ok()?.status?;
            let c = s.condition(conditions::VALID)?.clone();
            (c.status == conditions::STATUS_FALSE).then_some(c)
        }
    })
    .await;
    assert_eq!(status.reason, conditions::reasons::INVALID_SPEC);
    assert!(status.message.contains("maxReplicas"), "{}", status.message);
    // b now points at the invalid profile: its `later` DPA goes and no `broken` DPA comes
    wait_for(20, "b's DPA to go", || {
        let client = client.clone();
        async move {
            let g = generated(&client, ns).await;
            (g.len() == 2 && g.iter().all(|d| d.spec.target_ref.name != "b")).then_some(())
        }
    })
    .await;
    // an objective without its body is invalid too
    broken["spec"]["template"] = json!({"objectives": [{"type": "PodResource"}]});
    apply_profile(&profiles, &broken).await;
    wait_for(20, "the new reason", || {
        let profiles = profiles.clone();
        async move {
            let s = profiles.get("broken").await.ok()?.status?;
            s.condition(conditions::VALID)?
                .message
                .contains("no body")
                .then_some(())
        }
    })
    .await;
    assert_eq!(generated(&client, ns).await.len(), 2);

    // a label value that is not a profile name: ignored, with an event on the workload
    deployments
        .patch("a", &PatchParams::default(), &label_patch(Some("Not_A_Profile")))
        .await
        .unwrap();
    wait_for(20, "the InvalidProfileLabel event", || {
        let client = client.clone();
        async move {
            events_with(&client, ns, events::INVALID_PROFILE_LABEL, "a")
                .await
                .then_some(())
        }
    })
    .await;
    wait_for(20, "a's DPA to go", || {
        let client = client.clone();
        async move {
            let g = generated(&client, ns).await;
            (g.len() == 1 && g[0].spec.target_ref.name == "db").then_some(())
        }
    })
    .await;

    // the profile is deleted: its DPAs go; the labels go: the stack stops
    profiles.delete("later", &DeleteParams::default()).await.unwrap();
    wait_for(20, "every generated DPA to go", || {
        let client = client.clone();
        async move { generated(&client, ns).await.is_empty().then_some(()) }
    })
    .await;
    namespaces
        .patch(ns, &PatchParams::default(), &label_patch(None))
        .await
        .unwrap();
    for name in ["a", "b", "out"] {
        deployments
            .patch(name, &PatchParams::default(), &label_patch(None))
            .await
            .unwrap();
    }
    Api::<DatadogPodAutoscaler>::namespaced(client.clone(), ns)
        .delete("by-hand", &DeleteParams::default())
        .await
        .unwrap();
    agent
        .wait_metric("lazyscale_gate_open", 0.0, Duration::from_secs(20))
        .await;
}
