//! Store behaviour: interest filtering, eviction on interest changes, mark-and-sweep relists, backfill
//! safety, counters.

mod common;

use std::sync::Arc;

use common::{Spec, pod};
use lazyscale_podcache::slim::{WorkloadKey, WorkloadKind};
use lazyscale_podcache::store::{ApplyOutcome, BackfillTarget, Interest, PodStore, WorkloadCounts};

fn web() -> WorkloadKey {
    WorkloadKey::new("ns", WorkloadKind::Deployment, "web")
}
fn api() -> WorkloadKey {
    WorkloadKey::new("ns", WorkloadKind::Deployment, "api")
}

fn spec(deployment: &'static str, uid: u128, ready: bool) -> Spec<'static> {
    Spec {
        deployment,
        uid,
        ready,
        suffix: Box::leak(common::suffix(uid as usize).into_boxed_str()),
        ..Spec::default()
    }
}

#[test]
fn interest_filter_drops_other_workloads() {
    let store = PodStore::new();
    assert_eq!(
        store.apply(&pod(&spec("web", 1, true))).unwrap(),
        ApplyOutcome::Dropped
    );
    assert!(store.is_empty());

    store.set_interest(Interest::new().with_workload(web(), None));
    assert_eq!(
        store.apply(&pod(&spec("web", 1, true))).unwrap(),
        ApplyOutcome::Inserted
    );
    assert_eq!(
        store.apply(&pod(&spec("web", 2, false))).unwrap(),
        ApplyOutcome::Inserted
    );
    assert_eq!(
        store.apply(&pod(&spec("api", 3, true))).unwrap(),
        ApplyOutcome::Dropped
    );
    assert_eq!(store.len(), 2);
    assert_eq!(store.counts(&web()), WorkloadCounts { pods: 2, ready: 1 });
    assert_eq!(store.counts(&api()), WorkloadCounts::default());
    let s = store.stats();
    assert_eq!((s.pods, s.workloads, s.dropped), (2, 1, 2));
    assert!(s.heap_bytes > 0);

    // Same workload name in another namespace or kind is a different workload.
    let other_ns = Spec {
        namespace: "other",
        ..spec("web", 4, true)
    };
    assert_eq!(store.apply(&pod(&other_ns)).unwrap(), ApplyOutcome::Dropped);
}

#[test]
fn namespace_interest() {
    let store = PodStore::new();
    store.set_interest(Interest::new().with_namespace("ns"));
    store.apply(&pod(&spec("web", 1, true))).unwrap();
    store.apply(&pod(&spec("api", 2, true))).unwrap();
    store
        .apply(&pod(&Spec {
            namespace: "else",
            ..spec("api", 3, true)
        }))
        .unwrap();
    assert_eq!(store.len(), 2);
    assert_eq!(store.workloads().len(), 2);
}

#[test]
fn updates_and_deletes_keep_counts() {
    let store = PodStore::new();
    store.set_interest(Interest::new().with_workload(web(), None));
    store.apply(&pod(&spec("web", 1, false))).unwrap();
    assert_eq!(store.counts(&web()), WorkloadCounts { pods: 1, ready: 0 });
    assert_eq!(
        store.apply(&pod(&spec("web", 1, true))).unwrap(),
        ApplyOutcome::Updated
    );
    assert_eq!(store.counts(&web()), WorkloadCounts { pods: 1, ready: 1 });
    let got = store.get(1).unwrap();
    assert!(got.is_ready());
    assert!(store.find("ns", &got.name()).is_some());
    assert!(store.find("ns", "web-5d8f7c9b6a-nope").is_none());
    drop(got); // copies handed out keep their interned parts alive
    assert_eq!(store.delete(&pod(&spec("web", 1, true))), ApplyOutcome::Removed);
    assert_eq!(store.delete(&pod(&spec("web", 1, true))), ApplyOutcome::Dropped);
    assert_eq!(store.counts(&web()), WorkloadCounts::default());
    assert!(store.workloads().is_empty());
    assert_eq!(
        store.stats().interned.strings,
        0,
        "interner swept once the last pod is gone"
    );
}

#[test]
fn resize_updates_shared_containers() {
    let store = PodStore::new();
    store.set_interest(Interest::new().with_workload(web(), None));
    store.apply(&pod(&spec("web", 1, true))).unwrap();
    store.apply(&pod(&spec("web", 2, true))).unwrap();
    assert_eq!(
        store.stats().interned.container_sets,
        1,
        "pods of a ReplicaSet share their containers"
    );
    store
        .apply(&pod(&Spec {
            cpu: "500m",
            ..spec("web", 2, true)
        }))
        .unwrap();
    let pods = store.pods_of(&web());
    let mut cpus: Vec<_> = pods
        .iter()
        .map(|p| p.containers()[0].resources.requests.cpu_millis)
        .collect();
    cpus.sort();
    assert_eq!(cpus, [Some(250), Some(500)]);
}

#[test]
fn set_interest_evicts_and_requests_backfill() {
    let store = PodStore::new();
    store.set_interest(
        Interest::new()
            .with_workload(web(), None)
            .with_workload(api(), None),
    );
    for uid in 1..=3 {
        store.apply(&pod(&spec("web", uid, true))).unwrap();
    }
    for uid in 10..=11 {
        store.apply(&pod(&spec("api", uid, true))).unwrap();
    }
    assert_eq!(store.len(), 5);

    let update = store.set_interest(Interest::new().with_workload(api(), None));
    assert_eq!(update.evicted, 3);
    assert!(update.backfill.is_empty(), "api was already of interest");
    assert_eq!(store.len(), 2);
    assert_eq!(store.counts(&web()).pods, 0);
    assert_eq!(store.stats().evicted, 3);

    let db = WorkloadKey::new("ns", WorkloadKind::StatefulSet, "db");
    let other = WorkloadKey::new("prod", WorkloadKind::Deployment, "x");
    let update = store.set_interest(
        Interest::new()
            .with_workload(api(), None)
            .with_workload(db, Some("app=db".into()))
            .with_workload(other, None),
    );
    assert_eq!(update.evicted, 0);
    assert_eq!(
        update.backfill,
        [
            BackfillTarget::Namespace {
                namespace: "ns".into(),
                label_selector: Some("app=db".into())
            },
            BackfillTarget::Namespace {
                namespace: "prod".into(),
                label_selector: None
            },
        ]
    );
}

#[test]
fn relist_sweeps_vanished_pods() {
    let store = PodStore::new();
    store.set_interest(Interest::new().with_workload(web(), None));
    store.begin_relist();
    for uid in 1..=10 {
        store.apply(&pod(&spec("web", uid, true))).unwrap();
    }
    assert_eq!(store.finish_relist(), 0);
    assert_eq!(store.len(), 10);

    // The watch was down: pods 1..=3 vanished, 4 became unready, 11 appeared.
    store.begin_relist();
    assert!(store.is_relisting());
    for uid in 4..=11 {
        store.apply(&pod(&spec("web", uid, uid != 4))).unwrap();
    }
    assert_eq!(store.len(), 11, "in place: no second buffer");
    assert_eq!(store.finish_relist(), 3);
    assert_eq!(store.len(), 8);
    assert!(store.get(1).is_none() && store.get(11).is_some());
    assert_eq!(store.counts(&web()), WorkloadCounts { pods: 8, ready: 7 });
    assert_eq!(store.stats().swept, 3);

    // An interrupted relist followed by a complete one sweeps what the complete one did not list.
    store.begin_relist();
    store.apply(&pod(&spec("web", 5, true))).unwrap();
    store.begin_relist();
    store.apply(&pod(&spec("web", 6, true))).unwrap();
    assert_eq!(store.finish_relist(), 7);
    assert_eq!(store.len(), 1);
}

#[test]
fn backfill_never_resurrects_or_rolls_back() {
    let store = Arc::new(PodStore::new());
    store.set_interest(Interest::new().with_workload(web(), None));
    let backfill = store.begin_backfill();
    // The watch delivers a newer version of pod 1 and deletes pod 2 while the list is in flight.
    store.apply(&pod(&spec("web", 1, true))).unwrap();
    store.delete(&pod(&spec("web", 2, true)));
    // The (older) listed versions arrive.
    assert_eq!(
        backfill.apply(&pod(&spec("web", 1, false))).unwrap(),
        ApplyOutcome::Skipped
    );
    assert_eq!(
        backfill.apply(&pod(&spec("web", 2, true))).unwrap(),
        ApplyOutcome::Skipped
    );
    assert_eq!(
        backfill.apply(&pod(&spec("web", 3, true))).unwrap(),
        ApplyOutcome::Inserted
    );
    assert_eq!(
        backfill.apply(&pod(&spec("api", 4, true))).unwrap(),
        ApplyOutcome::Dropped
    );
    drop(backfill);
    assert!(store.get(1).unwrap().is_ready());
    assert!(store.get(2).is_none());
    assert_eq!(store.len(), 2);
}

#[test]
fn compaction_after_mass_eviction() {
    let store = PodStore::new();
    store.set_interest(Interest::new().with_namespace("ns"));
    for uid in 0..2000u128 {
        let dep = if uid % 10 == 0 { "web" } else { "api" };
        store.apply(&pod(&spec(dep, uid, true))).unwrap();
    }
    let full = store.stats().heap_bytes;
    store.set_interest(Interest::new().with_workload(web(), None));
    assert_eq!(store.len(), 200);
    let after = store.stats().heap_bytes;
    assert!(after * 4 < full, "memory follows interest: {after} vs {full}");
    // Indexes survive compaction.
    assert_eq!(
        store.counts(&web()),
        WorkloadCounts {
            pods: 200,
            ready: 200
        }
    );
    for uid in (0..2000u128).step_by(10) {
        assert!(store.get(uid).is_some(), "{uid}");
    }
    store.clear();
    assert!(store.is_empty());
    assert_eq!(store.stats().interned.strings, 0);
}

#[test]
fn unfiltered_store_keeps_bare_pods() {
    let store = PodStore::unfiltered();
    let mut v = common::pod_json(&spec("web", 1, true));
    v["metadata"].as_object_mut().unwrap().remove("ownerReferences");
    let bare: lazyscale_podcache::PodWire = serde_json::from_value(v).unwrap();
    assert_eq!(store.apply(&bare).unwrap(), ApplyOutcome::Inserted);
    assert!(store.get(1).unwrap().workload().is_none());
    assert_eq!(store.get(1).unwrap().name(), "web-5d8f7c9b6a-cbbbb");
    // Turning filtering on evicts it.
    assert_eq!(
        store.set_interest(Interest::new().with_namespace("ns")).evicted,
        1
    );
}

#[test]
fn concurrent_readers_and_writer() {
    let store = Arc::new(PodStore::new());
    store.set_interest(Interest::new().with_workload(web(), None));
    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            for uid in 0..500u128 {
                store.apply(&pod(&spec("web", uid, uid % 2 == 0))).unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let c = store.counts(&web());
                    assert!(c.ready <= c.pods);
                    store.for_each_pod_of(&web(), |p| assert_eq!(p.namespace().as_str(), "ns"));
                }
            })
        })
        .collect();
    writer.join().unwrap();
    readers.into_iter().for_each(|r| r.join().unwrap());
    assert_eq!(
        store.counts(&web()),
        WorkloadCounts {
            pods: 500,
            ready: 250
        }
    );
}

#[test]
fn index_bytes_grow_with_workloads_and_selectors() {
    let store = PodStore::new();
    let interest = |n: usize| {
        (0..n).fold(Interest::new(), |i, w| {
            i.with_workload(
                WorkloadKey::new("ns", WorkloadKind::Deployment, &format!("w{w:04}")),
                Some(format!("app=w{w:04},tier=frontend-and-some-more")),
            )
        })
    };
    store.set_interest(interest(100));
    let hundred = store.stats().index_bytes;
    store.set_interest(interest(1_000));
    let s = store.stats();
    assert!(s.index_bytes <= s.heap_bytes, "a share of the store");
    // per workload: its interest slot (key and selector: 48 bytes and more) and its 36-byte selector
    let per = (s.index_bytes - hundred) as f64 / 900.0;
    assert!((60.0..=300.0).contains(&per), "{per} bytes per workload");
}
