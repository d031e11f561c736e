//! Decoding: a realistic pod decodes to the exact expected `SlimPod`, unknown fields are ignored, and no
//! input (arbitrary JSON, arbitrary bytes, mutated pods, arbitrary quantities) panics the decoder.

use lazyscale_podcache::intern::Interner;
use lazyscale_podcache::quantity;
use lazyscale_podcache::slim::{ContainerSpec, ResizePending, SlimPod, WorkloadKey, WorkloadKind};
use lazyscale_podcache::store::PodStore;
use lazyscale_podcache::wire::{
    ConditionKind, ConditionReason, ConditionStatus, PodPhase, PodWire, ResourceAmounts,
    ResourceRequirements, decode_pod, decode_pod_list,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const POD: &str = include_str!("fixtures/pod.json");

fn amounts(cpu: Option<u64>, mem: Option<u64>) -> ResourceAmounts {
    ResourceAmounts {
        cpu_millis: cpu,
        memory_bytes: mem,
    }
}

#[test]
fn realistic_pod_wire() {
    let w = decode_pod(POD.as_bytes()).unwrap();
    let m = &w.metadata;
    assert_eq!(m.name.as_deref(), Some("checkout-api-7d9f8b6c5d-x2x4z"));
    assert_eq!(m.namespace.as_deref(), Some("shop-prod-03"));
    assert_eq!(m.resource_version.as_deref(), Some("48213377"));
    assert!(m.managed_fields.is_none());
    assert!(m.creation_timestamp.is_none(), "not kept");
    let labels: Vec<_> = m.labels.as_ref().unwrap().keys().cloned().collect();
    assert_eq!(labels, ["autoscaling.datadoghq.com/profile", "pod-template-hash"]);
    let annotations: Vec<_> = m.annotations.as_ref().unwrap().keys().cloned().collect();
    assert_eq!(
        annotations,
        [
            "autoscaling.datadoghq.com/autoscaler-id",
            "autoscaling.datadoghq.com/rec-id"
        ]
    );
    assert_eq!(w.spec.containers.len(), 2);
    assert_eq!(
        w.spec.containers[0].resources,
        ResourceRequirements {
            requests: amounts(Some(250), Some(512 << 20)),
            limits: amounts(Some(1000), Some(1 << 30)),
        }
    );
    assert_eq!(w.status.phase, Some(PodPhase::Running));
    assert_eq!(
        w.status.conditions.len(),
        2,
        "only Ready and PodResizePending kept"
    );
    let pending = w.status.condition(ConditionKind::ResizePending).unwrap();
    assert_eq!(pending.status, ConditionStatus::True);
    assert_eq!(pending.reason, Some(ConditionReason::Deferred));
    assert_eq!(w.status.start_time, Some(1_795_166_043));
    assert_eq!(w.status.container_statuses.len(), 2);
}

/// The same pod with only the fields the cache keeps, written by hand.
fn minimal_equivalent() -> Value {
    json!({
        "metadata": {
            "name": "checkout-api-7d9f8b6c5d-x2x4z",
            "namespace": "shop-prod-03",
            "uid": "5f0c6a8e-2b1d-4c3e-9f7a-1d2e3f4a5b6c",
            "labels": {"pod-template-hash": "7d9f8b6c5d", "autoscaling.datadoghq.com/profile": "balanced"},
            "annotations": {
                "autoscaling.datadoghq.com/autoscaler-id": "shop-prod-03/checkout-api",
                "autoscaling.datadoghq.com/rec-id": "b3a1c9d2e4f5"
            },
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "checkout-api-7d9f8b6c5d", "uid": "x", "controller": true}]
        },
        "spec": {
            "nodeName": "ip-10-0-3-17.ec2.internal",
            "containers": [
                {"name": "app", "resources": {"requests": {"cpu": "0.25", "memory": "536870912"},
                    "limits": {"cpu": "1000m", "memory": "1Gi"}}},
                {"name": "envoy", "resources": {"requests": {"cpu": "100m", "memory": "64e6"},
                    "limits": {"memory": "128Mi"}}}
            ]
        },
        "status": {
            "phase": "Running",
            "startTime": "2026-11-20T09:14:03Z",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-20T09:14:31Z"},
                {"type": "PodResizePending", "status": "True", "reason": "Deferred"}],
            "containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 2,
                    "lastState": {"terminated": {"reason": "OOMKilled"}},
                    "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}},
                {"name": "envoy", "ready": true, "restartCount": 0,
                    "resources": {"requests": {"cpu": "100m", "memory": "64M"}, "limits": {"memory": "128Mi"}}}
            ]
        }
    })
}

#[test]
fn realistic_pod_decodes_to_expected_slim_pod() {
    let mut interner = Interner::new();
    let w = decode_pod(POD.as_bytes()).unwrap();
    let pod = SlimPod::from_wire(&w, &mut interner).unwrap();

    assert_eq!(pod.uid(), 0x5f0c6a8e_2b1d_4c3e_9f7a_1d2e3f4a5b6c);
    assert_eq!(pod.name(), "checkout-api-7d9f8b6c5d-x2x4z");
    assert!(pod.name_eq("checkout-api-7d9f8b6c5d-x2x4z"));
    assert!(!pod.name_eq("checkout-api-7d9f8b6c5d-x2x4y"));
    assert_eq!(pod.namespace().as_str(), "shop-prod-03");
    assert_eq!(
        pod.workload(),
        Some(&WorkloadKey::new(
            "shop-prod-03",
            WorkloadKind::Deployment,
            "checkout-api"
        ))
    );
    let controller = pod.owner().controller.as_ref().unwrap();
    assert_eq!(
        (controller.kind.as_str(), controller.name.as_str()),
        ("ReplicaSet", "checkout-api-7d9f8b6c5d")
    );
    assert_eq!(pod.template_hash(), Some("7d9f8b6c5d"));
    assert_eq!(pod.node(), Some("ip-10-0-3-17.ec2.internal"));
    assert_eq!(pod.phase(), Some(PodPhase::Running));
    // Ready 28 s after the start: the HPA's CPU initialization rules need it.
    assert_eq!(pod.ready_changed_at(), Some(1_795_166_043 + 28));
    assert!(pod.is_ready());
    assert!(!pod.is_terminating());
    assert_eq!(pod.resize_pending(), Some(ResizePending::Deferred));
    assert_eq!(pod.resize_in_progress(), None);
    assert!(pod.oom_killed());
    assert_eq!(pod.start_time(), Some(1_795_166_043));
    assert_eq!(pod.label("autoscaling.datadoghq.com/profile"), Some("balanced"));
    assert_eq!(pod.label("app"), None);
    assert_eq!(
        pod.annotation("autoscaling.datadoghq.com/rec-id"),
        Some("b3a1c9d2e4f5")
    );
    assert_eq!(
        pod.annotation("autoscaling.datadoghq.com/autoscaler-id"),
        Some("shop-prod-03/checkout-api")
    );
    assert_eq!(pod.extras().unwrap().iter().count(), 3);

    let app = ResourceRequirements {
        requests: amounts(Some(250), Some(512 << 20)),
        limits: amounts(Some(1000), Some(1 << 30)),
    };
    let envoy = ResourceRequirements {
        requests: amounts(Some(100), Some(64_000_000)),
        limits: amounts(None, Some(128 << 20)),
    };
    let specs: Vec<(&str, ResourceRequirements, Option<ResourceRequirements>)> = pod
        .containers()
        .iter()
        .map(|c: &ContainerSpec| (c.name.as_str(), c.resources, c.status_resources))
        .collect();
    assert_eq!(specs, [("app", app, Some(app)), ("envoy", envoy, Some(envoy))]);
    let states: Vec<_> = pod
        .container_states()
        .iter()
        .map(|s| (s.reported(), s.ready(), s.restarts(), s.last_oom_killed()))
        .collect();
    assert_eq!(states, [(true, true, 2, true), (true, true, 0, false)]);
    let (spec, state) = pod.container("envoy").unwrap();
    assert_eq!(spec.resources, envoy);
    assert!(state.ready());
    // The name is stored as its suffix after the ReplicaSet name, everything else is shared.
    assert_eq!(pod.own_heap_bytes(), 0);

    // Field for field (PartialEq over every stored part) equal to the hand-written minimal pod.
    let minimal: PodWire = serde_json::from_value(minimal_equivalent()).unwrap();
    let expected = SlimPod::from_wire(&minimal, &mut interner).unwrap();
    assert_eq!(pod, expected);
}

/// Adds `"zz-unknown-<depth>": <junk>` to every object in `v`.
fn sprinkle_unknown(v: &mut Value, depth: usize) {
    match v {
        Value::Object(map) => {
            for (_, child) in map.iter_mut() {
                sprinkle_unknown(child, depth + 1);
            }
            map.insert(
                format!("zz-unknown-{depth}"),
                json!({"nested": [1, "two", null, {"three": 3.5}], "flag": true}),
            );
        }
        Value::Array(items) => items.iter_mut().for_each(|c| sprinkle_unknown(c, depth + 1)),
        _ => {}
    }
}

#[test]
fn unknown_fields_are_ignored() {
    let mut interner = Interner::new();
    let base = SlimPod::from_wire(&decode_pod(POD.as_bytes()).unwrap(), &mut interner).unwrap();
    let mut v: Value = serde_json::from_str(POD).unwrap();
    sprinkle_unknown(&mut v, 0);
    let noisy = decode_pod(&serde_json::to_vec(&v).unwrap()).unwrap();
    // Unknown keys in labels/annotations maps are not "fields": the prefix filter drops them.
    assert_eq!(SlimPod::from_wire(&noisy, &mut interner).unwrap(), base);
}

#[test]
fn list_and_watch_event_envelopes() {
    let pod: Value = serde_json::from_str(POD).unwrap();
    let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "9"},
        "items": [pod.clone(), pod.clone()]});
    assert_eq!(
        decode_pod_list(&serde_json::to_vec(&list).unwrap())
            .unwrap()
            .len(),
        2
    );
    let event = json!({"type": "MODIFIED", "object": pod});
    let ev: kube::api::WatchEvent<PodWire> = serde_json::from_value(event).unwrap();
    assert!(matches!(ev, kube::api::WatchEvent::Modified(p) if p.metadata.name.is_some()));
    let bookmark = json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
        "metadata": {"resourceVersion": "12", "annotations": {"k8s.io/initial-events-end": "true"}}}});
    let ev: kube::api::WatchEvent<PodWire> = serde_json::from_value(bookmark).unwrap();
    assert!(matches!(ev, kube::api::WatchEvent::Bookmark(_)));
}

// === properties ===

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "Running",
            "Ready",
            "True",
            "OOMKilled",
            "250m",
            "1Gi",
            "-1",
            "1e999",
            "apps/v1",
            "ReplicaSet",
            "pod-template-hash",
            "2026-11-20T09:14:03Z",
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    let keys = prop::sample::select(vec![
        "metadata",
        "spec",
        "status",
        "name",
        "namespace",
        "uid",
        "labels",
        "annotations",
        "ownerReferences",
        "controller",
        "kind",
        "apiVersion",
        "containers",
        "resources",
        "requests",
        "limits",
        "cpu",
        "memory",
        "phase",
        "conditions",
        "type",
        "reason",
        "containerStatuses",
        "restartCount",
        "lastState",
        "terminated",
        "startTime",
        "deletionTimestamp",
        "nodeName",
        "ready",
        "managedFields",
        "x",
    ]);
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// Every JSON pointer in `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => m.iter().for_each(|(k, c)| {
            pointers(
                c,
                format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                out,
            )
        }),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, c)| pointers(c, format!("{at}/{i}"), out)),
        _ => {}
    }
}

/// Decodes and, when that succeeds, converts and stores: none of it may panic.
fn exercise(bytes: &[u8]) {
    if let Ok(w) = decode_pod(bytes) {
        let _ = SlimPod::from_wire(&w, &mut Interner::new());
        let store = PodStore::unfiltered();
        let _ = store.apply(&w);
        let _ = store.delete(&w);
    }
    let _ = decode_pod_list(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        exercise(&serde_json::to_vec(&v).unwrap());
        exercise(&serde_json::to_vec(&json!({"metadata": v.clone(), "spec": v.clone(), "status": v})).unwrap());
    }

    #[test]
    fn mutated_pod_never_panics(pick in any::<prop::sample::Index>(), replacement in arb_json()) {
        let mut pod: Value = serde_json::from_str(POD).unwrap();
        let mut ptrs = Vec::new();
        pointers(&pod, String::new(), &mut ptrs);
        let ptr = pick.get(&ptrs);
        if let Some(slot) = pod.pointer_mut(ptr) {
            *slot = replacement;
        }
        exercise(&serde_json::to_vec(&pod).unwrap());
    }

    #[test]
    fn truncated_pod_never_panics(cut in 0usize..6274) {
        let compact = serde_json::to_vec(&serde_json::from_str::<Value>(POD).unwrap()).unwrap();
        exercise(&compact[..cut.min(compact.len())]);
    }

    #[test]
    fn arbitrary_quantities_never_panic(s in "\\PC{0,24}") {
        let _ = quantity::millis(&s);
        let _ = quantity::units(&s);
    }

    #[test]
    fn quantity_suffixes_scale_exactly(n in 0u64..1_000_000, i in 0usize..8) {
        let (suffix, factor): (&str, u128) =
            [("", 1), ("k", 1_000), ("M", 1_000_000), ("G", 1_000_000_000), ("Ki", 1 << 10), ("Mi", 1 << 20),
             ("Gi", 1 << 30), ("Ti", 1 << 40)][i];
        let want = u64::try_from(u128::from(n) * factor).ok();
        prop_assert_eq!(quantity::units(&format!("{n}{suffix}")), want);
        prop_assert_eq!(quantity::millis(&format!("{n}m")), Some(n));
        prop_assert_eq!(quantity::units(&format!("{n}e3")), Some(n * 1000));
    }
}

/// Native sidecars (init containers with `restartPolicy: Always`) are kept after the containers with their
/// resources and the applied ones from `initContainerStatuses`; other init containers are not kept, and
/// `containers()` and `container_states()` stay parallel.
#[test]
fn native_sidecars_are_kept_apart_from_the_containers() {
    let mut interner = Interner::new();
    let pod = json!({"metadata": {"name": "web-abc-x", "namespace": "ns", "uid": "5f0c6a8e-2b1d-4c3e-9f7a-1d2e3f4a5b6c"},
    "spec": {
        "initContainers": [
            {"name": "setup", "resources": {"requests": {"cpu": "1"}}},
            {"name": "proxy", "restartPolicy": "Always",
             "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}}},
            {"name": "once", "restartPolicy": "OnFailure"}
        ],
        "containers": [{"name": "app", "resources": {"requests": {"cpu": "250m"}}}]
    },
    "status": {
        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 2}],
        "initContainerStatuses": [{"name": "proxy", "ready": true, "restartCount": 0,
            "resources": {"requests": {"cpu": "40m", "memory": "32Mi"}}}]
    }});
    let w = decode_pod(&serde_json::to_vec(&pod).unwrap()).unwrap();
    let p = SlimPod::from_wire(&w, &mut interner).unwrap();
    let names = |cs: &[ContainerSpec]| cs.iter().map(|c| c.name.to_string()).collect::<Vec<_>>();
    assert_eq!(names(p.containers()), ["app"]);
    assert_eq!(p.container_states().len(), 1);
    assert_eq!(p.container_states()[0].restarts(), 2);
    assert_eq!(names(p.sidecars()), ["proxy"]);
    let proxy = &p.sidecars()[0];
    assert!(proxy.sidecar && !p.containers()[0].sidecar);
    assert_eq!(proxy.resources.requests, amounts(Some(50), Some(32 << 20)));
    assert_eq!(proxy.resources.limits, amounts(None, Some(64 << 20)));
    assert_eq!(
        proxy.status_resources.map(|r| r.requests),
        Some(amounts(Some(40), Some(32 << 20)))
    );
    assert!(p.container("proxy").is_some());
    // a pod without init containers has no sidecars
    let plain = decode_pod(POD.as_bytes()).unwrap();
    assert!(
        SlimPod::from_wire(&plain, &mut interner)
            .unwrap()
            .sidecars()
            .is_empty()
    );
}
