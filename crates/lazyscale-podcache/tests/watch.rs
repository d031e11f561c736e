//! The pod collection against the real control plane (`lazyscale-testenv`): the cache sees adds,
//! modifications and deletions, filters to the interest set, backfills workloads that join it, evicts
//! those that leave, and clears itself when stopped. The pods here are written by the test, owned by
//! ReplicaSets that do not exist, so this control plane runs without the garbage collector (which would
//! delete them).

// The scenario lives in a helper shared by two `#[tokio::test]`s; a failed call there fails the test.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use lazyscale_podcache::slim::{WorkloadKey, WorkloadKind};
use lazyscale_podcache::store::{Interest, WorkloadCounts};
use lazyscale_podcache::watch::{Config, PodCollection};
use lazyscale_testenv::TestEnv;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A pod as the ReplicaSet controller of Deployment `deployment` would create it.
fn pod(deployment: &str, hash: &str, suffix: &str) -> Pod {
    let rs = format!("{deployment}-{hash}");
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("{rs}-{suffix}"),
            "labels": {"app": deployment, "pod-template-hash": hash, "team": "x"},
            "annotations": {"autoscaling.datadoghq.com/rec-id": "r1", "other": "y"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                "uid": "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d", "controller": true}]
        },
        // No scheduler serves this name: the pod stays unbound, so kwok leaves its status to the test.
        "spec": {"schedulerName": "lazyscale-test-unscheduled", "containers": [{"name": "app", "image": "nginx",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}}]}
    }))
    .unwrap()
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn without_gc() -> lazyscale_testenv::ServerOptions {
    lazyscale_testenv::ServerOptions {
        disabled_controllers: vec!["garbage-collector-controller".to_string()],
        ..Default::default()
    }
}

/// A fresh namespace of the shared control plane, its pod API, and the two workloads the tests use.
struct Fixture {
    client: kube::Client,
    ns: String,
    pods: Api<Pod>,
    web: WorkloadKey,
    api: WorkloadKey,
}

async fn fixture() -> Fixture {
    let env = TestEnv::shared_with(without_gc);
    let client = env.client().await;
    let ns = env.namespace().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let web = WorkloadKey::new(&ns, WorkloadKind::Deployment, "web");
    let api = WorkloadKey::new(&ns, WorkloadKind::Deployment, "api");
    Fixture {
        client,
        ns,
        pods,
        web,
        api,
    }
}

async fn run_collection(config: Config) {
    let cluster_wide = config.limits.max_scoped_watches == 0;
    let Fixture {
        client,
        ns,
        pods,
        web,
        api,
    } = fixture().await;

    // Pods that exist before the collection starts.
    for suffix in ["aaaaa", "bbbbb"] {
        pods.create(&PostParams::default(), &pod("web", "6c8f9d7b5a", suffix))
            .await
            .unwrap();
    }
    pods.create(&PostParams::default(), &pod("api", "7d9e0f1a2b", "ccccc"))
        .await
        .unwrap();

    let cancel = CancellationToken::new();
    let collection = PodCollection::start(client.clone(), config, cancel.clone());
    collection.set_interest(Interest::new().with_workload(web.clone(), None));
    assert!(
        tokio::time::timeout(Duration::from_secs(30), collection.synced())
            .await
            .unwrap()
    );
    assert!(collection.is_synced());

    let store = collection.store().clone();
    eventually("initial web pods", || async { store.counts(&web).pods == 2 }).await;
    assert_eq!(store.counts(&api).pods, 0, "api is not of interest");
    let cached = store.find(&ns, "web-6c8f9d7b5a-aaaaa").unwrap();
    assert_eq!(cached.containers()[0].resources.requests.cpu_millis, Some(100));
    assert_eq!(cached.annotation("autoscaling.datadoghq.com/rec-id"), Some("r1"));

    // Add.
    pods.create(&PostParams::default(), &pod("web", "6c8f9d7b5a", "ddddd"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("api", "7d9e0f1a2b", "eeeee"))
        .await
        .unwrap();
    eventually("added web pod", || async { store.counts(&web).pods == 3 }).await;

    // Modify (status written the way the kubelet does).
    let status = json!({"status": {"phase": "Running", "startTime": "2026-11-28T08:00:00Z",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 1, "image": "nginx", "imageID": "",
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}});
    pods.patch_status(
        "web-6c8f9d7b5a-aaaaa",
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await
    .unwrap();
    eventually("ready web pod", || async {
        store.counts(&web) == WorkloadCounts { pods: 3, ready: 1 }
    })
    .await;
    let modified = store.find(&ns, "web-6c8f9d7b5a-aaaaa").unwrap();
    assert!(modified.oom_killed());
    assert_eq!(modified.container_states()[0].restarts(), 1);

    // Delete.
    pods.delete("web-6c8f9d7b5a-bbbbb", &DeleteParams::default())
        .await
        .unwrap();
    eventually("deleted web pod", || async { store.counts(&web).pods == 2 }).await;
    assert!(store.find(&ns, "web-6c8f9d7b5a-bbbbb").is_none());

    // A workload joining the interest set is backfilled (its pods were dropped on arrival).
    let update = collection.set_interest(
        Interest::new()
            .with_workload(web.clone(), None)
            .with_workload(api.clone(), Some("app=api".into())),
    );
    assert_eq!(update.backfill.len(), 1);
    eventually("backfilled api pods", || async { store.counts(&api).pods == 2 }).await;
    // The watch started for web lists web itself (namespace or cluster-wide), so api, joining under a
    // watch that already runs, is the one backfill.
    eventually("backfills counted", || async {
        collection.stats().backfills == 1
    })
    .await;
    assert_eq!(collection.stats().cluster_wide, cluster_wide);
    assert_eq!(collection.stats().backfill_errors, 0);

    // A workload leaving it is evicted.
    let update = collection.set_interest(Interest::new().with_workload(api.clone(), None));
    assert_eq!(update.evicted, 2);
    assert_eq!(store.counts(&web).pods, 0);
    pods.create(&PostParams::default(), &pod("web", "6c8f9d7b5a", "fffff"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("api", "7d9e0f1a2b", "ggggg"))
        .await
        .unwrap();
    eventually("new api pod", || async { store.counts(&api).pods == 3 }).await;
    assert_eq!(store.counts(&web).pods, 0);

    let stats = collection.stats();
    assert_eq!(stats.pods, 3);
    assert!(stats.bytes > 0);
    assert!(stats.dropped > 0);

    // Stopping clears the cache.
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), collection.stopped())
        .await
        .unwrap();
    assert!(store.is_empty());
    assert!(!collection.is_synced());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_list_watch() {
    run_collection(Config {
        page_size: 1,
        ..Config::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_list_watch() {
    run_collection(Config {
        page_size: 1,
        limits: lazyscale_podcache::plan::Limits {
            max_scoped_watches: 0,
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watch() {
    run_collection(Config {
        streaming_lists: true,
        streaming_timeout: Duration::from_secs(20),
        ..Config::default()
    })
    .await;
}

/// The collection widens to the cluster-wide watch at once, narrows back only after the plan has stayed
/// scoped for `narrow_after`, and stops every watch at once when nothing is left to watch. Meanwhile the
/// cluster-wide watch keeps delivering the pods of the workloads still autoscaled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowing_waits_widening_does_not() {
    use lazyscale_podcache::plan::{Limits, WatchScope};
    use std::collections::BTreeSet;

    let Fixture {
        client,
        ns,
        pods,
        web,
        api,
    } = fixture().await;
    pods.create(&PostParams::default(), &pod("web", "6c8f9d7b5a", "aaaaa"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("api", "7d9e0f1a2b", "bbbbb"))
        .await
        .unwrap();

    let dwell = Duration::from_secs(2);
    let collection = PodCollection::start(
        client.clone(),
        Config {
            limits: Limits {
                max_scoped_watches: 1,
                ..Limits::default()
            },
            narrow_after: dwell,
            ..Config::default()
        },
        CancellationToken::new(),
    );
    let both = Interest::new()
        .with_workload(web.clone(), Some("app=web".into()))
        .with_workload(api.clone(), Some("app=api".into()));
    let web_only = Interest::new().with_workload(web.clone(), Some("app=web".into()));
    let cluster = BTreeSet::from([WatchScope::Cluster]);
    let scoped = BTreeSet::from([WatchScope::namespace(&ns, Some("app=web"))]);

    // Two selectors over a limit of one: the cluster-wide watch, at once.
    collection.set_interest(both.clone());
    assert_eq!(collection.scopes(), cluster);
    assert!(
        tokio::time::timeout(Duration::from_secs(30), collection.synced())
            .await
            .unwrap()
    );
    let store = collection.store().clone();
    eventually("both workloads cached", || async {
        store.counts(&web).pods == 1 && store.counts(&api).pods == 1
    })
    .await;

    // Down to one selector: the cluster-wide watch stays for now and still delivers web's pods.
    let narrowed_at = tokio::time::Instant::now();
    collection.set_interest(web_only.clone());
    assert_eq!(collection.scopes(), cluster, "narrowing waits");
    assert_eq!(store.counts(&api).pods, 0, "api left the interest set");
    pods.create(&PostParams::default(), &pod("web", "6c8f9d7b5a", "ccccc"))
        .await
        .unwrap();
    eventually("a new web pod under the held cluster watch", || async {
        store.counts(&web).pods == 2
    })
    .await;

    // Widening before the dwell ends cancels the narrowing; narrowing again restarts the wait.
    collection.set_interest(both.clone());
    assert_eq!(collection.scopes(), cluster);
    let restarted_at = tokio::time::Instant::now();
    collection.set_interest(web_only.clone());
    eventually("the scoped watch after the dwell", || async {
        collection.scopes() == scoped
    })
    .await;
    assert!(
        restarted_at.elapsed() >= dwell,
        "narrowed {:?} after the wait restarted ({:?} after the first narrowing), before the dwell of {dwell:?}",
        restarted_at.elapsed(),
        narrowed_at.elapsed()
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(30), collection.synced())
            .await
            .unwrap()
    );
    eventually("web's pods under the scoped watch", || async {
        store.counts(&web).pods == 2
    })
    .await;

    // Widening again is immediate; an empty interest stops every watch at once.
    collection.set_interest(both);
    assert_eq!(collection.scopes(), cluster);
    collection.set_interest(Interest::new());
    assert!(collection.scopes().is_empty(), "nothing to watch: no wait");
    collection.stop();
    collection.stopped().await;
}
