//! The admission decision: owner resolution, autoscaler selection, and the patch applied to real pod
//! shapes with the `json-patch` crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use lazyscale_api::DatadogPodAutoscaler;
use lazyscale_vertical::mutate::{escape_pointer_token, resolve_owner};
use lazyscale_vertical::{
    Autoscaler, AutoscalerIndex, AutoscalerLookup, MutateError, Outcome, TargetRef, mutate,
};
use serde_json::{Value, json};

fn dpa(v: Value) -> DatadogPodAutoscaler {
    serde_json::from_value(v).unwrap()
}

/// A vertical-only DPA (no objectives, `update.strategy: Auto` unless `extra_spec` sets `applyPolicy`) on
/// Deployment `web` with a vertical target for `app` (250m / 300Mi) and `sidecar`.
fn web_dpa(name: &str, extra_spec: Value) -> Value {
    let mut spec = json!({
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "owner": "Local",
        "applyPolicy": {"update": {"strategy": "Auto"}},
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "datadoghq.com/v1alpha2",
        "kind": "DatadogPodAutoscaler",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": spec,
        "status": {"vertical": {"target": {
            "source": "Local",
            "version": "v-from-status",
            "desiredResources": [
                {"name": "app", "requests": {"cpu": "250m", "memory": "300Mi"},
                 "runtime": {"gomemlimit": "270MiB"}},
                {"name": "sidecar", "requests": {"cpu": "50m", "memory": "64Mi"}}
            ],
            "podCPURequest": "300m",
            "podMemoryRequest": "364Mi"
        }}}
    })
}

fn index(dpas: &[Value]) -> AutoscalerIndex {
    let mut idx = AutoscalerIndex::new();
    for d in dpas {
        idx.upsert(Autoscaler::from_dpa(&dpa(d.clone()), false));
    }
    idx
}

fn pod(containers: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d4b9c8f5-",
            "labels": {"app": "web", "pod-template-hash": "7d4b9c8f5"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": "web-7d4b9c8f5", "controller": true, "uid": "x"}]
        },
        "spec": {"containers": containers}
    })
}

fn review(pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "shop",
            "object": pod
        }
    }))
    .unwrap()
}

fn apply(pod: &Value, outcome: &Outcome) -> Value {
    let mut doc = pod.clone();
    let patch: json_patch::Patch = serde_json::from_value(outcome.patch().unwrap().clone()).unwrap();
    json_patch::patch(&mut doc, &patch.0).unwrap();
    doc
}

fn run(idx: &AutoscalerIndex, pod: &Value) -> (Outcome, Value) {
    let out = mutate(&review(pod), idx).unwrap();
    let patched = if out.patch().is_some() {
        apply(pod, &out)
    } else {
        pod.clone()
    };
    (out, patched)
}

#[test]
fn owner_resolution() {
    let with =
        |labels: Value, owner: Value| json!({"metadata": {"labels": labels, "ownerReferences": [owner]}});
    let cases = [
        (
            with(
                json!({"pod-template-hash": "abc12"}),
                json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc12"}),
            ),
            Some(("apps", "Deployment", "web")),
        ),
        (
            with(
                json!({"rollouts-pod-template-hash": "f00d", "pod-template-hash": "zzz"}),
                json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "canary-api-f00d"}),
            ),
            Some(("argoproj.io", "Rollout", "canary-api")),
        ),
        (
            with(
                json!({}),
                json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "bare-rs"}),
            ),
            Some(("apps", "ReplicaSet", "bare-rs")),
        ),
        (
            // The hash label does not match the name: the ReplicaSet itself.
            with(
                json!({"pod-template-hash": "other"}),
                json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc12"}),
            ),
            Some(("apps", "ReplicaSet", "web-abc12")),
        ),
        (
            with(
                json!({"controller-revision-hash": "db-5f"}),
                json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"}),
            ),
            Some(("apps", "StatefulSet", "db")),
        ),
        (
            with(
                json!({}),
                json!({"apiVersion": "batch/v1", "kind": "Job", "name": "j"}),
            ),
            Some(("batch", "Job", "j")),
        ),
        (with(json!({}), json!({"kind": "ReplicaSet"})), None),
        (json!({"metadata": {}}), None),
        (json!({"metadata": {"ownerReferences": "x"}}), None),
    ];
    for (pod, expected) in cases {
        let got = resolve_owner(&pod);
        let expected = expected.map(|(g, k, n)| TargetRef {
            group: g.into(),
            kind: k.into(),
            name: n.into(),
        });
        assert_eq!(got, expected, "{pod}");
    }
    // The controller reference wins over the first one.
    let p = json!({"metadata": {"ownerReferences": [
        {"apiVersion": "v1", "kind": "Node", "name": "n"},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "controller": true}
    ]}});
    assert_eq!(resolve_owner(&p).unwrap().kind, "StatefulSet");
}

#[test]
fn patches_requests_limits_annotations_and_gomemlimit() {
    let idx = index(&[web_dpa("web-dpa", json!({}))]);
    let p = pod(json!([
        {"name": "app", "image": "x",
         "resources": {"requests": {"cpu": "100m", "memory": "100Mi"},
                       "limits": {"cpu": "200m", "memory": "400Mi"}},
         "env": [{"name": "A", "value": "1"}]},
        {"name": "sidecar", "image": "y"},
        {"name": "unknown", "image": "z", "resources": {"requests": {"cpu": "1"}}}
    ]));
    let (out, patched) = run(&idx, &p);
    let Outcome::Patched {
        autoscaler_id,
        rec_id,
        containers,
        ..
    } = &out
    else {
        panic!("{out:?}")
    };
    assert_eq!(autoscaler_id, "shop/web-dpa");
    assert_eq!(rec_id.as_deref(), Some("v-from-status"));
    assert_eq!(*containers, 2);
    let ann = &patched["metadata"]["annotations"];
    assert_eq!(ann["autoscaling.datadoghq.com/autoscaler-id"], "shop/web-dpa");
    assert_eq!(ann["autoscaling.datadoghq.com/rec-id"], "v-from-status");
    assert_eq!(ann["autoscaling.datadoghq.com/runtime-rec-id"], "v-from-status");
    let app = &patched["spec"]["containers"][0];
    assert_eq!(
        app["resources"]["requests"],
        json!({"cpu": "250m", "memory": "300Mi"})
    );
    // Ratio kept: 200m/100m × 250m = 500m; 400Mi/100Mi × 300Mi = 1200Mi.
    assert_eq!(
        app["resources"]["limits"],
        json!({"cpu": "500m", "memory": "1200Mi"})
    );
    assert_eq!(
        app["env"],
        json!([{"name": "A", "value": "1"}, {"name": "GOMEMLIMIT", "value": "270MiB"}])
    );
    let sidecar = &patched["spec"]["containers"][1];
    assert_eq!(
        sidecar["resources"],
        json!({"requests": {"cpu": "50m", "memory": "64Mi"}})
    );
    assert_eq!(patched["spec"]["containers"][2], p["spec"]["containers"][2]);
}

#[test]
fn creates_annotations_and_metadata_and_escapes_keys() {
    assert_eq!(escape_pointer_token("a/b~c"), "a~1b~0c");
    let idx = index(&[web_dpa("web-dpa", json!({}))]);
    // Existing annotations: each key is added through an escaped pointer.
    let mut p = pod(json!([{"name": "app"}]));
    p["metadata"]["annotations"] = json!({"keep": "me", "autoscaling.datadoghq.com/rec-id": "old"});
    let (out, patched) = run(&idx, &p);
    let ops = out.patch().unwrap().as_array().unwrap().clone();
    assert!(
        ops.iter()
            .any(|o| o["path"] == "/metadata/annotations/autoscaling.datadoghq.com~1rec-id")
    );
    assert_eq!(patched["metadata"]["annotations"]["keep"], "me");
    assert_eq!(
        patched["metadata"]["annotations"]["autoscaling.datadoghq.com/rec-id"],
        "v-from-status"
    );
    // Null annotations are replaced by an object.
    p["metadata"]["annotations"] = Value::Null;
    let (_, patched) = run(&idx, &p);
    assert_eq!(
        patched["metadata"]["annotations"]["autoscaling.datadoghq.com/autoscaler-id"],
        "shop/web-dpa"
    );
    // A non-object annotations member is an error (allow without a patch).
    p["metadata"]["annotations"] = json!("nope");
    assert!(matches!(
        mutate(&review(&p), &idx),
        Err(MutateError::MalformedPod(_))
    ));
}

#[test]
fn limit_policies_at_admission() {
    let base = json!([
        {"name": "app",
         "resources": {"requests": {"cpu": "100m", "memory": "100Mi"},
                       "limits": {"cpu": "200m", "memory": "200Mi"}}}
    ]);
    let cases = [
        // (constraints entry, burstable option, expected requests, expected limits)
        (
            json!({"name": "*", "controlledValues": "RequestsOnly"}),
            None,
            json!({"cpu": "200m", "memory": "200Mi"}), // capped at the untouched limits
            json!({"cpu": "200m", "memory": "200Mi"}),
        ),
        (
            json!({"name": "*", "controlledValues": "CPURequestsRemoveLimitsMemoryRequestsAndLimits"}),
            None,
            json!({"cpu": "250m", "memory": "300Mi"}),
            json!({"memory": "600Mi"}),
        ),
        (
            json!({"name": "*"}),
            Some(true),
            json!({"cpu": "250m", "memory": "300Mi"}),
            json!({"memory": "600Mi"}),
        ),
        (
            json!({"name": "app", "controlledResources": ["memory"]}),
            None,
            json!({"cpu": "100m", "memory": "300Mi"}),
            json!({"cpu": "200m", "memory": "600Mi"}),
        ),
        (
            json!({"name": "app", "maxAllowed": {"cpu": "150m"}, "minAllowed": {"memory": "1Gi"}}),
            None,
            json!({"cpu": "150m", "memory": "1Gi"}),
            json!({"cpu": "300m", "memory": "2Gi"}),
        ),
    ];
    for (entry, burstable, requests, limits) in cases {
        let mut spec = json!({"constraints": {"containers": [entry.clone()]}});
        if let Some(b) = burstable {
            spec["options"] = json!({"burstable": b});
        }
        let idx = index(&[web_dpa("web-dpa", spec)]);
        let (out, patched) = run(&idx, &pod(base.clone()));
        assert!(out.patch().is_some(), "{entry}");
        let res = &patched["spec"]["containers"][0]["resources"];
        assert_eq!(res["requests"], requests, "{entry}");
        assert_eq!(res["limits"], limits, "{entry}");
    }
}

#[test]
fn disabled_container_is_untouched() {
    let idx = index(&[web_dpa(
        "web-dpa",
        json!({"constraints": {"containers": [{"name": "sidecar", "enabled": false}]}}),
    )]);
    let p = pod(json!([{"name": "app"}, {"name": "sidecar"}]));
    let (out, patched) = run(&idx, &p);
    assert_eq!(patched["spec"]["containers"][1], json!({"name": "sidecar"}));
    let Outcome::Patched { rec_id, .. } = out else {
        panic!()
    };
    // The constraints changed the plan: the rec-id is re-hashed.
    assert_ne!(rec_id.as_deref(), Some("v-from-status"));
}

#[test]
fn sidecar_init_containers_only() {
    let idx = index(&[web_dpa("web-dpa", json!({}))]);
    let mut p = pod(json!([{"name": "app"}]));
    p["spec"]["initContainers"] = json!([
        {"name": "sidecar", "restartPolicy": "Always"},
        {"name": "app"}
    ]);
    let (_, patched) = run(&idx, &p);
    assert_eq!(
        patched["spec"]["initContainers"][0]["resources"]["requests"]["cpu"],
        "50m"
    );
    assert_eq!(patched["spec"]["initContainers"][1], json!({"name": "app"}));
}

#[test]
fn replaces_an_existing_gomemlimit() {
    let idx = index(&[web_dpa("web-dpa", json!({}))]);
    let p = pod(
        json!([{"name": "app", "env": [{"name": "GOMEMLIMIT", "value": "1GiB"}, {"name": "B", "value": "2"}]}]),
    );
    let (_, patched) = run(&idx, &p);
    assert_eq!(
        patched["spec"]["containers"][0]["env"],
        json!([{"name": "GOMEMLIMIT", "value": "270MiB"}, {"name": "B", "value": "2"}])
    );
}

#[test]
fn selection_preview_conflict_and_skips() {
    let preview = web_dpa("preview", json!({"applyPolicy": {"mode": "Preview"}}));
    let p = pod(json!([{"name": "app"}]));

    let idx = index(std::slice::from_ref(&preview));
    assert!(matches!(run(&idx, &p).0, Outcome::NoAutoscaler { .. }));

    let idx = index(&[preview, web_dpa("one", json!({}))]);
    assert!(run(&idx, &p).0.patch().is_some());

    let idx = index(&[web_dpa("one", json!({})), web_dpa("two", json!({}))]);
    match run(&idx, &p).0 {
        Outcome::Conflict { autoscalers, .. } => assert_eq!(autoscalers, ["shop/one", "shop/two"]),
        other => panic!("{other:?}"),
    }

    // update.strategy Disabled: only the autoscaler-id annotation.
    let idx = index(&[web_dpa(
        "one",
        json!({"applyPolicy": {"update": {"strategy": "Disabled"}}}),
    )]);
    let (out, patched) = run(&idx, &p);
    assert_eq!(out.patch().unwrap().as_array().unwrap().len(), 1);
    assert!(
        patched["metadata"]["annotations"]
            .get("autoscaling.datadoghq.com/rec-id")
            .is_none()
    );

    // The mode matrix: without a vertical opt-in (an unset strategy, with or without objectives) the
    // DPA is horizontal only: the autoscaler-id annotation, no vertical values. With objectives and Auto
    // (H+V) the values come.
    let objectives = json!([{"type": "PodResource", "podResource": {"name": "cpu",
        "value": {"type": "Utilization", "utilization": 70}}}]);
    for extra in [
        json!({"applyPolicy": {}, "objectives": objectives}),
        json!({"applyPolicy": {}}),
    ] {
        let a = Autoscaler::from_dpa(&dpa(web_dpa("one", extra.clone())), false);
        assert_eq!(a.vertical, None, "{extra}");
        let (out, patched) = run(&index(&[web_dpa("one", extra.clone())]), &p);
        assert_eq!(out.patch().unwrap().as_array().unwrap().len(), 1, "{extra}");
        assert!(
            patched["metadata"]["annotations"]
                .get("autoscaling.datadoghq.com/rec-id")
                .is_none()
        );
    }
    let hv = web_dpa("one", json!({"objectives": objectives}));
    assert!(Autoscaler::from_dpa(&dpa(hv), false).vertical.is_some());

    // Another namespace, another kind, or a different group: no autoscaler.
    let idx = index(&[web_dpa("one", json!({}))]);
    let mut r: Value = serde_json::from_slice(&review(&p)).unwrap();
    r["request"]["namespace"] = json!("other");
    assert!(matches!(
        mutate(&serde_json::to_vec(&r).unwrap(), &idx).unwrap(),
        Outcome::NoAutoscaler { .. }
    ));
    let rollout_dpa = web_dpa(
        "one",
        json!({"targetRef": {"apiVersion": "other.io/v1", "kind": "Deployment", "name": "web"}}),
    );
    assert!(matches!(
        run(&index(&[rollout_dpa]), &p).0,
        Outcome::NoAutoscaler { .. }
    ));

    // Not a CREATE, not a Pod, a subresource.
    for (path, value) in [
        ("operation", json!("UPDATE")),
        ("kind", json!({"kind": "Deployment"})),
        ("subResource", json!("status")),
    ] {
        let mut r: Value = serde_json::from_slice(&review(&p)).unwrap();
        r["request"][path] = value;
        assert!(matches!(
            mutate(&serde_json::to_vec(&r).unwrap(), &idx).unwrap(),
            Outcome::Skipped(_)
        ));
    }
    assert!(matches!(mutate(b"{}", &idx), Err(MutateError::NoRequest)));
    assert!(matches!(mutate(b"nope", &idx), Err(MutateError::Review(_))));
}

#[test]
fn argo_rollout_and_statefulset() {
    let mut rollout = web_dpa("r", json!({}));
    rollout["spec"]["targetRef"] =
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "api"});
    let mut sts = web_dpa("s", json!({}));
    sts["spec"]["targetRef"] = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"});
    let idx = index(&[rollout, sts]);

    let mut p = pod(json!([{"name": "app"}]));
    p["metadata"]["labels"] = json!({"rollouts-pod-template-hash": "6f7c"});
    p["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-6f7c", "controller": true}]);
    let Outcome::Patched { autoscaler_id, .. } = run(&idx, &p).0 else {
        panic!()
    };
    assert_eq!(autoscaler_id, "shop/r");

    p["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "controller": true}]);
    let Outcome::Patched { autoscaler_id, .. } = run(&idx, &p).0 else {
        panic!()
    };
    assert_eq!(autoscaler_id, "shop/s");
}

#[test]
fn index_upsert_and_remove() {
    let mut idx = index(&[web_dpa("one", json!({}))]);
    assert_eq!(idx.len(), 1);
    // Re-targeting a DPA moves it.
    let mut moved = web_dpa("one", json!({}));
    moved["spec"]["targetRef"]["name"] = json!("api");
    idx.upsert(Autoscaler::from_dpa(&dpa(moved), false));
    assert_eq!(idx.len(), 1);
    assert!(idx.autoscalers_for("shop", "Deployment", "web").is_empty());
    assert_eq!(idx.autoscalers_for("shop", "Deployment", "api").len(), 1);
    assert!(idx.remove("shop", "one"));
    assert!(idx.is_empty());
    // The slice lookup behaves the same.
    let list = vec![Arc::new(Autoscaler::from_dpa(
        &dpa(web_dpa("one", json!({}))),
        false,
    ))];
    assert_eq!(
        list.as_slice().autoscalers_for("shop", "Deployment", "web").len(),
        1
    );
}

#[test]
fn invalid_status_values_only_annotate() {
    let mut d = web_dpa("one", json!({}));
    d["status"]["vertical"]["target"]["desiredResources"][0]["requests"]["cpu"] = json!("lots");
    let a = Autoscaler::from_dpa(&dpa(d.clone()), false);
    assert!(a.vertical.is_none());
    assert!(a.error.is_some());
    let (out, patched) = run(&index(&[d]), &pod(json!([{"name": "app"}])));
    assert_eq!(out.patch().unwrap().as_array().unwrap().len(), 1);
    assert_eq!(patched["spec"]["containers"][0], json!({"name": "app"}));
}

#[test]
fn the_index_estimate_grows_with_every_autoscaler() {
    let named = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| {
                let mut d = web_dpa(&format!("dpa-{i:04}"), json!({}));
                d["spec"]["targetRef"]["name"] = json!(format!("web-{i:04}"));
                d
            })
            .collect()
    };
    assert_eq!(AutoscalerIndex::new().approx_heap_bytes(), 0);
    let one = index(&named(1)).approx_heap_bytes();
    let (a, b) = (
        index(&named(100)).approx_heap_bytes(),
        index(&named(200)).approx_heap_bytes(),
    );
    assert!(one > std::mem::size_of::<Autoscaler>(), "{one}");
    let per = (b - a) as f64 / 100.0;
    // each: the Arc'd autoscaler with its vertical plan, its strings, two hash-table slots
    assert!(
        per > std::mem::size_of::<Autoscaler>() as f64 && per < 4096.0,
        "{per} bytes per autoscaler"
    );
}

/// An autoscaler `name` in `namespace` over Deployment `target`, built directly (no DPA).
fn plain(namespace: &str, name: &str, target: &str) -> Autoscaler {
    Autoscaler {
        namespace: namespace.into(),
        name: name.into(),
        target: TargetRef {
            group: "apps".into(),
            kind: "Deployment".into(),
            name: target.into(),
        },
        preview: false,
        vertical: None,
        error: None,
    }
}

#[test]
fn the_index_gives_its_memory_back_when_emptied() {
    let mut idx = AutoscalerIndex::new();
    let few = {
        for i in 0..10 {
            idx.upsert(plain("ns", &format!("d{i}"), &format!("w{i}")));
        }
        idx.approx_heap_bytes()
    };
    for i in 10..10_000 {
        idx.upsert(plain("ns", &format!("d{i}"), &format!("w{i}")));
    }
    let full = idx.approx_heap_bytes();
    for i in 10..10_000 {
        assert!(idx.remove("ns", &format!("d{i}")));
    }
    assert_eq!(idx.len(), 10);
    let after = idx.approx_heap_bytes();
    assert!(full > 100 * few, "{full} bytes full, {few} with ten");
    // back within a small factor of the ten-entry index (tables shrink to about twice their length)
    assert!(after <= 4 * few, "{after} bytes after removals, {few} with ten");
    assert_eq!(idx.autoscalers_for("ns", "Deployment", "w3").len(), 1);
}

mod model {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Upsert { ns: u8, name: u8, target: u8 },
        Remove { ns: u8, name: u8 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..3u8, 0..12u8, 0..4u8).prop_map(|(ns, name, target)| Op::Upsert { ns, name, target }),
            2 => (0..3u8, 0..12u8).prop_map(|(ns, name)| Op::Remove { ns, name }),
        ]
    }

    proptest! {
        /// The index answers every lookup like a plain map of (namespace, name) → target does, through
        /// upserts that move DPAs between targets, several DPAs on one target, removals and shrinks.
        #[test]
        fn the_index_agrees_with_a_map(ops in proptest::collection::vec(op(), 0..200)) {
            let mut idx = AutoscalerIndex::new();
            let mut model: BTreeMap<(u8, u8), u8> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Upsert { ns, name, target } => {
                        idx.upsert(plain(&format!("n{ns}"), &format!("d{name}"), &format!("w{target}")));
                        model.insert((ns, name), target);
                    }
                    Op::Remove { ns, name } => {
                        let removed = idx.remove(&format!("n{ns}"), &format!("d{name}"));
                        prop_assert_eq!(removed, model.remove(&(ns, name)).is_some());
                    }
                }
                prop_assert_eq!(idx.len(), model.len());
            }
            for ns in 0..3u8 {
                for target in 0..4u8 {
                    let mut got: Vec<String> = idx
                        .autoscalers_for(&format!("n{ns}"), "Deployment", &format!("w{target}"))
                        .iter()
                        .map(|a| a.name.clone())
                        .collect();
                    got.sort();
                    let want: Vec<String> = model
                        .iter()
                        .filter(|((n, _), t)| *n == ns && **t == target)
                        .map(|((_, d), _)| format!("d{d}"))
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    prop_assert_eq!(got, want);
                }
            }
        }
    }
}
