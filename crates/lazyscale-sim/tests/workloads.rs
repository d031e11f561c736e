//! The control plane is real: kube-controller-manager creates ReplicaSets and pods (names, labels, owner
//! references, rollouts, /scale, replacement of deleted pods, StatefulSet ordinals), kube-scheduler binds
//! them to kwok nodes and kwok runs them; the simulator only adds load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use lazyscale_sim::hash::ALPHANUMS;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn deployment_creates_replicaset_and_pods_then_rolls_out() {
    let env = lazyscale_testenv::TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace().await;
    let sim = start(&client, &ns).await;
    let d = create_deployment(&client, &deployment(&ns, "web", 3, "").unwrap()).await;
    let duid = d.metadata.uid.clone().unwrap();

    let ready = wait_for(30, "3 ready pods", || async {
        let p = pods(&client, &ns, "app=web").await;
        (p.len() == 3 && p.iter().all(running_ready)).then_some(p)
    })
    .await;
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let rss = rs_api.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(rss.len(), 1);
    let rs = &rss[0];
    let hash = rs.labels().get("pod-template-hash").cloned().unwrap();
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    assert!(hash.bytes().all(|b| ALPHANUMS.contains(&b)));
    let o = &rs.owner_references()[0];
    assert_eq!((o.kind.as_str(), o.uid.as_str()), ("Deployment", duid.as_str()));
    assert_eq!((o.controller, o.block_owner_deletion), (Some(true), Some(true)));
    assert_eq!(
        rs.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    for p in &ready {
        let name = p.name_any();
        let suffix = name
            .strip_prefix(&format!("{}-", rs.name_any()))
            .expect("pod named after its RS");
        assert_eq!(suffix.len(), 5, "{name}");
        assert!(suffix.bytes().all(|b| ALPHANUMS.contains(&b)), "{name}");
        assert_eq!(p.labels().get("pod-template-hash"), Some(&hash));
        let o = &p.owner_references()[0];
        assert_eq!(
            (o.kind.as_str(), o.name.as_str()),
            ("ReplicaSet", rs.name_any().as_str())
        );
        assert_eq!(o.block_owner_deletion, Some(true));
        let spec = p.spec.as_ref().unwrap();
        // Bound by kube-scheduler to a kwok node.
        assert!(
            spec.node_name
                .as_deref()
                .unwrap()
                .starts_with(lazyscale_testenv::NODE_PREFIX)
        );
        let cs = &p.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
        let r = cs.resources.as_ref().unwrap();
        assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "128Mi");
        assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "100m");
    }
    let d_api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait_for(20, "deployment status", || async {
        let d = d_api.get("web").await.unwrap();
        let s = d.status.clone().unwrap_or_default();
        let available = s.conditions.as_ref().is_some_and(|c| {
            c.iter().any(|c| c.type_ == "Available" && c.status == "True")
                && c.iter().any(|c| {
                    c.type_ == "Progressing" && c.reason.as_deref() == Some("NewReplicaSetAvailable")
                })
        });
        (s.replicas == Some(3)
            && s.ready_replicas == Some(3)
            && s.available_replicas == Some(3)
            && s.updated_replicas == Some(3)
            && s.observed_generation == Some(1)
            && available)
            .then_some(())
    })
    .await;

    // Rollout: new template -> new ReplicaSet, new pods, old ReplicaSet scaled to 0.
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "example/app:2"}]}}}});
    d_api
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let new_pods = wait_for(60, "rollout to image 2", || async {
        let p = pods(&client, &ns, "app=web").await;
        let all_new = p
            .iter()
            .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("example/app:2"));
        (p.len() == 3 && all_new && p.iter().all(running_ready)).then_some(p)
    })
    .await;
    let new_hash = new_pods[0].labels().get("pod-template-hash").cloned().unwrap();
    assert_ne!(new_hash, hash);
    let d = wait_for(30, "rollout complete status", || async {
        let d = d_api.get("web").await.unwrap();
        let s = d.status.clone().unwrap_or_default();
        (s.updated_replicas == Some(3)
            && s.available_replicas == Some(3)
            && s.replicas == Some(3)
            && s.observed_generation == Some(2))
        .then_some(d)
    })
    .await;
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("2")
    );
    let rss = rs_api.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(rss.len(), 2);
    let old = rss
        .iter()
        .find(|r| r.name_any() == format!("web-{hash}"))
        .unwrap();
    assert_eq!(old.spec.as_ref().unwrap().replicas, Some(0));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_subresource_and_deleted_pods_are_replaced() {
    let env = lazyscale_testenv::TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace().await;
    let sim = start(&client, &ns).await;
    create_deployment(&client, &deployment(&ns, "api", 2, "").unwrap()).await;
    let d_api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait_for(30, "2 pods", || async {
        (pods(&client, &ns, "app=api").await.len() == 2).then_some(())
    })
    .await;

    d_api
        .patch_scale(
            "api",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    wait_for(30, "5 ready pods", || async {
        let p = pods(&client, &ns, "app=api").await;
        (p.len() == 5 && p.iter().all(running_ready)).then_some(())
    })
    .await;
    d_api
        .patch_scale(
            "api",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    let left = wait_for(30, "1 pod", || async {
        let p = pods(&client, &ns, "app=api").await;
        (p.len() == 1).then_some(p)
    })
    .await;
    // A deleted (or evicted) pod is replaced by a new one.
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let victim = left[0].name_any();
    pod_api.delete(&victim, &DeleteParams::default()).await.unwrap();
    wait_for(30, "replacement pod", || async {
        let p = pods(&client, &ns, "app=api").await;
        (p.len() == 1 && p[0].name_any() != victim && running_ready(&p[0])).then_some(())
    })
    .await;
    let s = wait_for(20, "status replicas 1", || async {
        let d = d_api.get("api").await.unwrap();
        let s = d.status.clone().unwrap_or_default();
        (s.ready_replicas == Some(1) && s.replicas == Some(1)).then_some(s)
    })
    .await;
    assert_eq!(s.available_replicas, Some(1));
    // Deleting the Deployment removes its ReplicaSets and pods (garbage collection).
    d_api.delete("api", &DeleteParams::default()).await.unwrap();
    wait_for(30, "garbage collection", || async {
        let rs = Api::<ReplicaSet>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .unwrap();
        (rs.items.is_empty() && pods(&client, &ns, "app=api").await.is_empty()).then_some(())
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn statefulset_ordinals_scale_and_rolling_update() {
    let env = lazyscale_testenv::TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace().await;
    let sim = start(&client, &ns).await;
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &statefulset(&ns, "db", 3).unwrap())
        .await
        .unwrap();
    let p = wait_for(40, "db-0..2 ready", || async {
        let mut p = pods(&client, &ns, "app=db").await;
        p.sort_by_key(|p| p.name_any());
        (p.len() == 3 && p.iter().all(running_ready)).then_some(p)
    })
    .await;
    let rev = p[0].labels().get("controller-revision-hash").cloned().unwrap();
    assert!(rev.starts_with("db-"));
    for (i, p) in p.iter().enumerate() {
        assert_eq!(p.name_any(), format!("db-{i}"));
        assert_eq!(
            p.labels().get("statefulset.kubernetes.io/pod-name"),
            Some(&format!("db-{i}"))
        );
        assert_eq!(
            p.labels().get("apps.kubernetes.io/pod-index"),
            Some(&i.to_string())
        );
        assert_eq!(p.labels().get("controller-revision-hash"), Some(&rev));
        assert_eq!(p.owner_references()[0].kind, "StatefulSet");
    }
    // Rolling update: every pod gets the new revision, highest ordinal first.
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "db", "image": "example/db:2"}]}}}});
    api.patch("db", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let first_replaced = wait_for(30, "db-2 replaced first", || async {
        let p = pods(&client, &ns, "app=db").await;
        let new: Vec<String> = p
            .iter()
            .filter(|p| p.labels().get("controller-revision-hash") != Some(&rev))
            .map(|p| p.name_any())
            .collect();
        (!new.is_empty()).then_some(new)
    })
    .await;
    // kwok makes pods Ready at once, so more than one may be replaced by the first look; the highest
    // ordinal always goes first.
    assert!(first_replaced.contains(&"db-2".to_string()), "{first_replaced:?}");
    assert!(
        !first_replaced.contains(&"db-0".to_string()) || first_replaced.len() == 3,
        "{first_replaced:?}"
    );
    let st = wait_for(60, "rolled", || async {
        let p = pods(&client, &ns, "app=db").await;
        let s = api.get("db").await.unwrap().status.unwrap_or_default();
        (p.len() == 3
            && p.iter()
                .all(|p| p.labels().get("controller-revision-hash") != Some(&rev) && running_ready(p))
            && s.updated_replicas == Some(3)
            && s.current_revision == s.update_revision)
            .then_some(s)
    })
    .await;
    assert_eq!(st.ready_replicas, Some(3));
    // Scale down through /scale: highest ordinals go.
    api.patch_scale(
        "db",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    wait_for(30, "only db-0", || async {
        let p = pods(&client, &ns, "app=db").await;
        (p.len() == 1 && p[0].name_any() == "db-0").then_some(())
    })
    .await;
    sim.shutdown().await;
}
