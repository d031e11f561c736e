//! The vertical apply path end to end on the real control plane: kube-controller-manager's Deployment,
//! ReplicaSet, StatefulSet and disruption controllers, the API server's `pods/resize` and Eviction API,
//! kwok as the kubelet, and the simulator for load and resize outcomes (Deferred).
//!
//! The DPAs pin the CPU target with `minAllowed = maxAllowed = 300m` (CPU only), so the recommendation
//! is known as soon as the recommender has a sample and does not drift while pods are replaced.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, PostParams};
use lazyscale_sim::load::LoadProfile;
use lazyscale_testenv::{
    Server, ServerOptions, Simulated, constant_load, install_crds, try_wait_for, wait_for,
};
use serde_json::{Value, json};

const TARGET_CPU: &str = "300m";

fn template(name: &str, annotations: Value) -> Value {
    json!({"metadata": {"labels": {"app": name}, "annotations": annotations},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "app", "image": "x",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}}]}})
}

/// `resize`: the simulated kubelet's answer to resizes of its pods (`sim.lazyscale.io/resize`), if any.
fn deployment(name: &str, replicas: i32, resize: Option<&str>) -> Deployment {
    let notes = resize.map_or(json!({}), |r| json!({lazyscale_sim::RESIZE_ANNOTATION: r}));
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": template(name, notes)}}))
    .unwrap()
}

fn statefulset(name: &str, replicas: i32) -> StatefulSet {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"replicas": replicas, "serviceName": name, "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": name}}, "template": template(name, json!({}))}}))
    .unwrap()
}

/// A vertical-only DPA (no objectives). `replicas` pins the horizontal part (`minReplicas = maxReplicas`):
/// the horizontal controller applies its default 80 % CPU objective to DPAs without objectives.
fn dpa(kind: &str, name: &str, replicas: i32, mode: &str, strategy: Option<&str>) -> Value {
    let mut update = json!({"resizePendingPeriod": 2});
    if let Some(s) = strategy {
        update["strategy"] = json!(s);
    }
    json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler", "metadata": {"name": name},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": kind, "name": name}, "owner": "Local",
            "applyPolicy": {"mode": mode, "update": update},
            "constraints": {"minReplicas": replicas, "maxReplicas": replicas, "containers": [{"name": "*", "controlledResources": ["cpu"],
                "minAllowed": {"cpu": TARGET_CPU}, "maxAllowed": {"cpu": TARGET_CPU}}]}}})
}

fn load() -> LoadProfile {
    constant_load(0.4, 40.0)
}

/// The chart's rules (which the test control plane gives the agent) do not yet grant `patch` on `pods`,
/// which the in-place path needs for the pods' `rec-id` annotation after a resize; granted here on top.
async fn grant_pod_patch(client: &kube::Client) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let name = "lazyscale-vertical-apply-pods";
    let role: ClusterRole = serde_json::from_value(json!({"metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]}))
    .unwrap();
    Api::<ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({"metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": lazyscale_testenv::rbac::AGENT_SERVICE_ACCOUNT,
            "namespace": lazyscale_testenv::rbac::AGENT_NAMESPACE}]}))
    .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// The simulated namespace of one test, with this file's workloads and DPAs.
struct Env(Simulated);

impl std::ops::Deref for Env {
    type Target = Simulated;
    fn deref(&self) -> &Simulated {
        &self.0
    }
}

async fn setup(server: &Server, ns: &str) -> Env {
    let client = server.client().await.unwrap();
    install_crds(&client).await.unwrap();
    grant_pod_patch(&client).await;
    Env(Simulated::start_with(&client, ns, Duration::from_secs(1))
        .await
        .unwrap())
}

impl Env {
    async fn dpa(&self, body: Value) {
        self.apply_dpa(&body).await.unwrap();
    }

    /// Deployment `name` of this file's shape under [`load`].
    async fn app(&self, name: &str, replicas: i32, resize: Option<&str>) {
        self.deployment(&deployment(name, replicas, resize), load())
            .await
            .unwrap();
    }

    async fn target_version(&self, name: &str) -> String {
        let api = self.dpas();
        wait_for(90, &format!("{name}: a vertical target"), || async {
            let d = api.get(name).await.ok()?;
            d.data["status"]["vertical"]["target"]["version"]
                .as_str()
                .map(str::to_owned)
        })
        .await
    }

    async fn status(&self, name: &str) -> Value {
        self.dpas().get(name).await.unwrap().data["status"].clone()
    }

    async fn events(&self, reason: &str) -> Vec<Event> {
        Api::<Event>::namespaced(self.client().clone(), self.namespace())
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }
}

fn cpu_request(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.containers[0]
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("cpu")
        .map(|q| q.0.clone())
}

fn rec_id(p: &Pod) -> Option<&str> {
    p.metadata
        .annotations
        .as_ref()?
        .get(lazyscale_api::consts::annotations::REC_ID)
        .map(String::as_str)
}

fn at_target(p: &Pod, version: &str) -> bool {
    rec_id(p) == Some(version) && cpu_request(p).as_deref() == Some(TARGET_CPU)
}

fn uids(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter().filter_map(|p| p.metadata.uid.clone()).collect()
}

fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

#[tokio::test(flavor = "multi_thread")]
async fn deployments_reach_the_recommendation_by_rollout_and_in_place_and_held_dpas_change_nothing() {
    let server = Server::start(ServerOptions::default()).unwrap();
    let env = setup(&server, "apply").await;
    for name in ["roll", "inplace", "preview", "disabled"] {
        env.app(name, 3, None).await;
    }
    let before_inplace = wait_for(60, "inplace pods running", || env.running("inplace", 3)).await;
    let before_preview = wait_for(60, "preview pods running", || env.running("preview", 3)).await;
    let before_disabled = wait_for(60, "disabled pods running", || env.running("disabled", 3)).await;
    let _agent = common::start_agent(
        &server,
        &["--grace-period-seconds=0", "--vertical-period-seconds=1"],
    );
    env.dpa(dpa("Deployment", "roll", 3, "Apply", Some("TriggerRollout")))
        .await;
    env.dpa(dpa("Deployment", "inplace", 3, "Apply", Some("Auto")))
        .await;
    env.dpa(dpa("Deployment", "preview", 3, "Preview", Some("Auto")))
        .await;
    env.dpa(dpa("Deployment", "disabled", 3, "Apply", Some("Disabled")))
        .await;

    // rollout: the Deployment controller replaces every pod; the webhook gives the new ones the values
    let version = env.target_version("roll").await;
    let rolled = wait_for(120, "every roll pod at the recommendation", || async {
        let pods = env.running("roll", 3).await?;
        pods.iter().all(|p| at_target(p, &version)).then_some(pods)
    })
    .await;
    assert_eq!(rolled.len(), 3);
    let d = Api::<Deployment>::namespaced(env.client().clone(), env.namespace())
        .get("roll")
        .await
        .unwrap();
    let notes = d.spec.unwrap().template.metadata.unwrap().annotations.unwrap();
    assert_eq!(notes[lazyscale_api::consts::annotations::REC_ID], version);
    assert!(notes.contains_key(lazyscale_api::consts::annotations::ROLLOUT_AT));
    let status = wait_for(30, "roll: RolloutTriggered and Applied", || async {
        let s = env.status("roll").await;
        let applied = condition(&s, "VerticalAbleToApply").is_some_and(|c| c["reason"] == "Applied");
        (s["vertical"]["lastAction"]["type"] == "RolloutTriggered" && applied).then_some(s)
    })
    .await;
    assert_eq!(status["vertical"]["lastAction"]["version"], json!(version));
    assert_eq!(status["vertical"]["target"]["scaled"], json!(3), "{status}");
    assert!(!env.events("SuccessfulTriggerRollout").await.is_empty());

    // in place: the same pods (same uids, no container restart) with the new requests
    let version = env.target_version("inplace").await;
    let resized = wait_for(90, "every inplace pod resized", || async {
        let pods = env.running("inplace", 3).await?;
        pods.iter().all(|p| at_target(p, &version)).then_some(pods)
    })
    .await;
    assert_eq!(
        uids(&resized),
        uids(&before_inplace),
        "pods were replaced instead of resized"
    );
    for p in &resized {
        let cs = &p.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.restart_count, 0);
        // proportional limit: 500m × 300/100
        let limits = p.spec.as_ref().unwrap().containers[0]
            .resources
            .as_ref()
            .unwrap()
            .limits
            .clone()
            .unwrap();
        assert_eq!(
            lazyscale_vertical::quantity::parse_millis(&limits["cpu"].0).unwrap(),
            1500
        );
    }
    let status = wait_for(30, "inplace: ResizeCompleted", || async {
        let s = env.status("inplace").await;
        (s["vertical"]["lastAction"]["type"] == "ResizeCompleted").then_some(s)
    })
    .await;
    assert_eq!(status["vertical"]["target"]["scaled"], json!(3), "{status}");
    assert!(!env.events("ResizeSuccessful").await.is_empty());

    // Preview and Disabled: recommendations are written, nothing is applied
    for (name, before) in [("preview", &before_preview), ("disabled", &before_disabled)] {
        env.target_version(name).await;
        let s = wait_for(30, &format!("{name}: VerticalAbleToApply"), || async {
            let s = env.status(name).await;
            condition(&s, "VerticalAbleToApply").cloned()
        })
        .await;
        assert_eq!(s["status"], "False", "{s}");
        assert_eq!(s["reason"], "PolicyRestricted", "{s}");
        let now = env.running(name, 3).await.expect("still 3 running pods");
        assert_eq!(uids(&now), uids(before), "{name}: pods replaced");
        assert!(
            now.iter()
                .all(|p| cpu_request(p).as_deref() == Some("100m") && rec_id(p).is_none())
        );
        let d = Api::<Deployment>::namespaced(env.client().clone(), env.namespace())
            .get(name)
            .await
            .unwrap();
        let notes = d
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap_or_default();
        assert!(!notes.contains_key(lazyscale_api::consts::annotations::ROLLOUT_AT));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deferred_resizes_are_evicted_unless_a_pdb_blocks_and_statefulsets_roll_out() {
    let server = Server::start(ServerOptions::default()).unwrap();
    let env = setup(&server, "evict").await;
    env.app("deferred", 2, Some("deferred")).await;
    env.app("guarded", 2, Some("deferred")).await;
    env.statefulset(&statefulset("db", 2), load()).await.unwrap();
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({"metadata": {"name": "guarded"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "guarded"}}}}))
    .unwrap();
    Api::<PodDisruptionBudget>::namespaced(env.client().clone(), env.namespace())
        .create(&PostParams::default(), &pdb)
        .await
        .unwrap();
    let deferred_before = wait_for(60, "deferred pods running", || env.running("deferred", 2)).await;
    let guarded_before = wait_for(60, "guarded pods running", || env.running("guarded", 2)).await;
    wait_for(60, "db pods running", || env.running("db", 2)).await;
    let _agent = common::start_agent(
        &server,
        &["--grace-period-seconds=0", "--vertical-period-seconds=1"],
    );
    env.dpa(dpa("Deployment", "deferred", 2, "Apply", Some("Auto")))
        .await;
    env.dpa(dpa("Deployment", "guarded", 2, "Apply", Some("Auto")))
        .await;
    env.dpa(dpa("StatefulSet", "db", 2, "Apply", Some("TriggerRollout")))
        .await;

    // Deferred for longer than resizePendingPeriod (2 s): evicted one at a time, replaced with the values
    let version = env.target_version("deferred").await;
    let replaced = try_wait_for(Duration::from_secs(120), || async {
        let pods = env.running("deferred", 2).await?;
        // resized in the spec at once, but Deferred: done only once both pods are replacements
        let replaced = uids(&pods).is_disjoint(&uids(&deferred_before));
        (replaced && pods.iter().all(|p| at_target(p, &version))).then_some(pods)
    })
    .await;
    let Some(replaced) = replaced else {
        let pods: Vec<Value> = env
            .live_pods("deferred")
            .await
            .iter()
            .map(|p| json!({"uid": p.metadata.uid, "annotations": p.metadata.annotations,
                "cpu": cpu_request(p), "status": p.status.as_ref().map(|s| json!({"phase": s.phase, "conditions": s.conditions}))}))
            .collect();
        panic!(
            "deferred pods not replaced at {version}: {} {}",
            json!(pods),
            env.status("deferred").await
        );
    };
    assert!(
        uids(&replaced).is_disjoint(&uids(&deferred_before)),
        "not evicted"
    );
    assert!(!env.events("InPlaceEvicted").await.is_empty());
    let s = env.status("deferred").await;
    assert!(
        s["vertical"]["target"]["evicted"].as_i64().unwrap_or(0) >= 2,
        "{s}"
    );

    // a PDB that allows no disruption: the eviction is refused, reported, and the pods stay
    env.target_version("guarded").await;
    wait_for(60, "a FailedToEvict event", || async {
        let e = env.events("FailedToEvict").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    let later = try_wait_for(Duration::from_secs(5), || async {
        let pods = env.running("guarded", 2).await?;
        (uids(&pods) != uids(&guarded_before)).then_some(pods)
    })
    .await;
    assert!(later.is_none(), "a pod protected by its PDB was evicted");
    let pods = env.running("guarded", 2).await.unwrap();
    let pending = pods.iter().all(|p| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "PodResizePending"))
    });
    assert!(pending, "the guarded pods' resizes are still deferred");

    // StatefulSet rollout by the real StatefulSet controller
    let version = env.target_version("db").await;
    wait_for(120, "every db pod at the recommendation", || async {
        let pods = env.running("db", 2).await?;
        pods.iter().all(|p| at_target(p, &version)).then_some(pods)
    })
    .await;
    let s = env.status("db").await;
    assert_eq!(s["vertical"]["lastAction"]["type"], "RolloutTriggered", "{s}");
}

/// A vertical-only DPA on Deployment `name` pinning the CPU request at `cpu` with these `update` settings.
fn pinned(name: &str, cpu: &str, update: Value) -> Value {
    json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler", "metadata": {"name": name},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, "owner": "Local",
            "applyPolicy": {"update": update},
            "constraints": {"containers": [{"name": "*", "controlledResources": ["cpu"],
                "minAllowed": {"cpu": cpu}, "maxAllowed": {"cpu": cpu}}]}}})
}

#[tokio::test(flavor = "multi_thread")]
async fn error_and_infeasible_resizes_are_evicted_a_slow_resize_falls_back_to_a_rollout_and_refused_values_wait_for_a_lower_recommendation()
 {
    let server = Server::start(ServerOptions::default()).unwrap();
    let env = setup(&server, "outcomes").await;
    // the simulated kubelet answers every resize of these pods with Error / Infeasible / Deferred
    env.app("failing", 2, Some("error")).await;
    env.app("toobig", 2, Some("infeasible")).await;
    env.app("slow", 2, Some("deferred")).await;
    env.app("refused", 2, None).await;
    let mut before = std::collections::BTreeMap::new();
    for name in ["failing", "toobig", "slow", "refused"] {
        let pods = wait_for(60, &format!("{name} pods running"), || env.running(name, 2)).await;
        before.insert(name, uids(&pods));
    }
    let _agent = common::start_agent(
        &server,
        &["--grace-period-seconds=0", "--vertical-period-seconds=1"],
    );
    let quick = json!({"strategy": "Auto", "resizePendingPeriod": 2});
    env.dpa(pinned("failing", TARGET_CPU, quick.clone())).await;
    env.dpa(pinned("toobig", TARGET_CPU, quick)).await;
    // Deferred far longer than the fallback delay: no eviction, a rollout after 2 s
    env.dpa(pinned(
        "slow",
        TARGET_CPU,
        json!({"strategy": "Auto", "resizePendingPeriod": 3600, "rolloutFallbackDelay": 2}),
    ))
    .await;
    // 40 cores on 32-core nodes: the API server refuses the resize (403)
    env.dpa(pinned("refused", "40", json!({"strategy": "Auto"})))
        .await;

    // Error and Infeasible: evicted, the replacements get the values at admission
    for name in ["failing", "toobig"] {
        let version = env.target_version(name).await;
        let replaced = try_wait_for(Duration::from_secs(120), || async {
            let pods = env.running(name, 2).await?;
            (uids(&pods).is_disjoint(&before[name]) && pods.iter().all(|p| at_target(p, &version)))
                .then_some(pods)
        })
        .await;
        assert!(
            replaced.is_some(),
            "{name}: pods not replaced at {version}: {}",
            env.status(name).await
        );
        let s = env.status(name).await;
        assert!(
            s["vertical"]["target"]["evicted"].as_i64().unwrap_or(0) >= 2,
            "{name}: {s}"
        );
    }
    let evicted = env.events("InPlaceEvicted").await;
    for name in ["failing", "toobig"] {
        assert!(
            evicted
                .iter()
                .any(|e| e.involved_object.name.as_deref() == Some(name)),
            "{name}: no InPlaceEvicted event"
        );
    }

    // the fallback timer: a rollout of the workload by the Deployment controller
    let version = env.target_version("slow").await;
    let rolled = try_wait_for(Duration::from_secs(120), || async {
        let pods = env.running("slow", 2).await?;
        (uids(&pods).is_disjoint(&before["slow"]) && pods.iter().all(|p| at_target(p, &version)))
            .then_some(pods)
    })
    .await;
    assert!(
        rolled.is_some(),
        "slow: no rollout after the fallback delay: {}",
        env.status("slow").await
    );
    let d = Api::<Deployment>::namespaced(env.client().clone(), env.namespace())
        .get("slow")
        .await
        .unwrap();
    let notes = d.spec.unwrap().template.metadata.unwrap().annotations.unwrap();
    assert_eq!(notes[lazyscale_api::consts::annotations::REC_ID], version);
    let s = env.status("slow").await;
    assert_eq!(s["vertical"]["lastAction"]["type"], "RolloutTriggered", "{s}");
    assert_eq!(s["vertical"]["target"]["evicted"].as_i64().unwrap_or(0), 0, "{s}");

    // refused as infeasible: remembered, reported once, not retried while the recommendation stays
    let refused = wait_for(60, "refused: RecommendationInfeasible", || async {
        let s = env.status("refused").await;
        condition(&s, "VerticalAbleToApply")
            .filter(|c| c["reason"] == "RecommendationInfeasible")
            .cloned()
    })
    .await;
    assert_eq!(refused["status"], "False", "{refused}");
    let warned = |events: Vec<Event>| {
        events
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some("refused"))
            .count()
    };
    let first = warned(env.events("FailedResize").await);
    assert_eq!(first, 1, "one FailedResize event per rec-id");
    // the agent's pods/resize calls on the refused pods, from the audit log
    let resizes = || {
        let agent = lazyscale_testenv::rbac::agent_username();
        server
            .requests()
            .iter()
            .filter(|r| {
                r.user == agent
                    && r.verb == "patch"
                    && r.resource == "pods"
                    && r.subresource == "resize"
                    && r.name.starts_with("refused-")
            })
            .count()
    };
    let tried = resizes();
    assert!(tried >= 1, "no resize was tried");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(warned(env.events("FailedResize").await), 1);
    assert_eq!(resizes(), tried, "the refused values were tried again");
    let pods = env.running("refused", 2).await.unwrap();
    assert_eq!(uids(&pods), before["refused"]);
    assert!(pods.iter().all(|p| cpu_request(p).as_deref() == Some("100m")));
    // a recommendation below the refused one is tried, in place
    env.dpa(pinned("refused", TARGET_CPU, json!({"strategy": "Auto"})))
        .await;
    let version = wait_for(60, "refused: a lower target", || async {
        let s = env.status("refused").await;
        let t = &s["vertical"]["target"];
        (t["desiredResources"][0]["requests"]["cpu"] == TARGET_CPU)
            .then(|| t["version"].as_str().map(str::to_owned))
            .flatten()
    })
    .await;
    let resized = wait_for(90, "refused pods resized to the lower values", || async {
        let pods = env.running("refused", 2).await?;
        pods.iter().all(|p| at_target(p, &version)).then_some(pods)
    })
    .await;
    assert_eq!(
        uids(&resized),
        before["refused"],
        "resized in place, not replaced"
    );
}
