//! Fuzzing of the admission decision with proptest: arbitrary bytes, arbitrary JSON, arbitrary
//! JSON-shaped AdmissionReviews (pods with odd shapes and values, autoscalers with random constraints),
//! and valid reviews with one random subtree replaced by arbitrary JSON.
//!
//! Properties: `mutate` never panics; every patch it returns applies cleanly (`json-patch`) to the pod it
//! was computed for; the patched pod carries the annotations and the requests and limits the plan asks
//! for (requests capped at untouched limits, removed limits gone, limits never below the requests set).
//!
//! `LAZYSCALE_FUZZ_CASES` sets the number of cases per generator (default 400, four generators); run
//! `LAZYSCALE_FUZZ_CASES=100000 cargo test -p lazyscale-vertical --release --test fuzz -- --nocapture` for
//! a longer campaign. The totals are printed at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lazyscale_vertical::{Autoscaler, LimitAction, Outcome, Resource, mutate};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

const DEFAULT_CASES: u32 = 400;

fn cases() -> u32 {
    std::env::var("LAZYSCALE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

#[derive(Default)]
struct Stats {
    inputs: AtomicU64,
    panics: AtomicU64,
    patched: AtomicU64,
    errors: AtomicU64,
    containers: AtomicU64,
}

const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "spec",
    "containers",
    "initContainers",
    "resources",
    "requests",
    "limits",
    "cpu",
    "memory",
    "name",
    "env",
    "annotations",
    "ownerReferences",
    "labels",
    "controller",
    "pod-template-hash",
    "rollouts-pod-template-hash",
    "restartPolicy",
    "request",
    "object",
    "operation",
    "namespace",
    "uid",
    "value",
    "subResource",
];

const WORDS: &[&str] = &[
    "CREATE",
    "Pod",
    "ReplicaSet",
    "Deployment",
    "StatefulSet",
    "Rollout",
    "apps/v1",
    "web",
    "web-7d4b9c8f5",
    "7d4b9c8f5",
    "app",
    "sidecar",
    "Always",
    "GOMEMLIMIT",
    "shop",
    "100m",
    "1Gi",
    "~1",
    "/",
    "~",
    "-",
    "0",
];

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        "[a-zA-Z0-9/~.\\- ]{0,12}".prop_map(Value::from),
        prop::sample::select(WORDS).prop_map(Value::from),
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(String::from),
        1 => "[a-z/~]{0,6}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(json_key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

// === Structured pods and autoscalers ===

fn quantity() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "100m", "250m", "1", "0.5", "2", "1500m", "50m", "64Mi", "128Mi", "1Gi", "300Mi", "1e3",
            "512M", "2Gi", "0", "1n",
        ])
        .prop_map(Value::from),
        1 => prop::sample::select(vec!["abc", "", "-1", "10Ei", "1.2.3", "Mi"]).prop_map(Value::from),
        1 => prop_oneof![Just(json!(1)), Just(json!(0.25)), Just(json!(3000000000u64))],
        1 => prop_oneof![Just(Value::Null), Just(json!({})), Just(json!([]))],
    ]
}

/// `{cpu?, memory?, extra?}`, or an odd shape.
fn resource_list() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        40 => (
            prop::option::of(quantity()),
            prop::option::of(quantity()),
            prop::option::of(quantity()),
        )
            .prop_map(|(c, m, e)| {
                let mut map = Map::new();
                if let Some(c) = c {
                    map.insert("cpu".into(), c);
                }
                if let Some(m) = m {
                    map.insert("memory".into(), m);
                }
                if let Some(e) = e {
                    map.insert("nvidia.com/gpu".into(), e);
                }
                Some(Value::Object(map))
            }),
        3 => Just(None),
        1 => Just(Some(Value::Null)),
        1 => prop_oneof![Just(json!("bad")), Just(json!([1]))].prop_map(Some),
    ]
}

fn resources() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        30 => (resource_list(), resource_list()).prop_map(|(r, l)| {
            let mut map = Map::new();
            if let Some(r) = r {
                map.insert("requests".into(), r);
            }
            if let Some(l) = l {
                map.insert("limits".into(), l);
            }
            Some(Value::Object(map))
        }),
        6 => Just(None),
        2 => Just(Some(Value::Null)),
        1 => Just(Some(json!("bad"))),
    ]
}

fn env() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        10 => Just(None),
        2 => Just(Some(Value::Null)),
        1 => Just(Some(json!("bad"))),
        10 => prop::collection::vec(
            prop_oneof![
                Just(json!({"name": "A", "value": "1"})),
                Just(json!({"name": "GOMEMLIMIT", "value": "1GiB"})),
                Just(json!({"name": "GOMEMLIMIT", "valueFrom": {"x": 1}})),
                Just(json!("odd")),
            ],
            0..4,
        )
        .prop_map(|v| Some(Value::Array(v))),
    ]
}

fn container() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            8 => prop::sample::select(vec!["app", "sidecar", "other"]).prop_map(Value::from),
            1 => Just(Value::Null),
            1 => Just(json!(7)),
        ],
        resources(),
        env(),
        prop::option::of(prop::sample::select(vec!["Always", "Never"])),
    )
        .prop_map(|(name, res, env, restart)| {
            let mut c = Map::new();
            c.insert("name".into(), name);
            c.insert("image".into(), json!("img"));
            if let Some(r) = res {
                c.insert("resources".into(), r);
            }
            if let Some(e) = env {
                c.insert("env".into(), e);
            }
            if let Some(p) = restart {
                c.insert("restartPolicy".into(), json!(p));
            }
            Value::Object(c)
        })
}

fn owner() -> impl Strategy<Value = (Option<Value>, Value)> {
    // (ownerReferences, labels)
    prop_oneof![
        12 => Just((
            Some(json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c8f5", "controller": true}])),
            json!({"pod-template-hash": "7d4b9c8f5"}),
        )),
        1 => Just((
            Some(json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-6f7c", "controller": true}])),
            json!({"rollouts-pod-template-hash": "6f7c"}),
        )),
        1 => Just((
            Some(json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}])),
            json!({}),
        )),
        1 => Just((Some(json!([{"kind": "ReplicaSet"}])), json!({}))),
        1 => Just((Some(json!("bad")), json!({"pod-template-hash": 5}))),
        1 => Just((None, json!({}))),
    ]
}

fn pod() -> impl Strategy<Value = Value> {
    (
        owner(),
        prop_oneof![
            3 => Just(None),
            1 => Just(Some(Value::Null)),
            4 => Just(Some(json!({"keep": "x", "autoscaling.datadoghq.com/rec-id": "old"}))),
            1 => Just(Some(json!("bad"))),
        ],
        prop::collection::vec(container(), 0..4),
        prop::option::of(prop::collection::vec(container(), 0..3)),
        0u8..40,
    )
        .prop_map(|((refs, labels), annotations, containers, init, shape)| {
            let mut meta = Map::new();
            meta.insert("labels".into(), labels);
            if let Some(r) = refs {
                meta.insert("ownerReferences".into(), r);
            }
            if let Some(a) = annotations {
                meta.insert("annotations".into(), a);
            }
            let mut spec = Map::new();
            spec.insert("containers".into(), Value::Array(containers));
            if let Some(i) = init {
                spec.insert("initContainers".into(), Value::Array(i));
            }
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec});
            match shape {
                0 => pod["spec"] = json!("bad"),
                1 => pod["spec"]["containers"] = json!({"not": "an array"}),
                2 => {
                    if let Some(o) = pod.as_object_mut() {
                        o.remove("spec");
                    }
                }
                _ => {}
            }
            pod
        })
}

fn constraint_entry() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["*", "app", "sidecar"]),
        prop::option::of(any::<bool>()),
        prop::option::of(prop::sample::subsequence(vec!["cpu", "memory", "gpu"], 0..=3)),
        prop::option::of(prop::sample::select(vec![
            "RequestsAndLimits",
            "RequestsOnly",
            "CPURequestsRemoveLimitsMemoryRequestsAndLimits",
        ])),
        prop::option::of(prop::sample::select(vec!["10m", "300m", "1", "bad"])),
        prop::option::of(prop::sample::select(vec!["500m", "2", "100m"])),
        prop::option::of(prop::sample::select(vec!["32Mi", "512Mi"])),
        prop::option::of(prop::sample::select(vec!["256Mi", "4Gi"])),
    )
        .prop_map(
            |(name, enabled, res, values, min_cpu, max_cpu, min_mem, max_mem)| {
                let mut e = json!({"name": name});
                if let Some(v) = enabled {
                    e["enabled"] = json!(v);
                }
                if let Some(r) = res {
                    e["controlledResources"] = json!(r);
                }
                if let Some(v) = values {
                    e["controlledValues"] = json!(v);
                }
                let mut min = Map::new();
                let mut max = Map::new();
                if let Some(v) = min_cpu {
                    min.insert("cpu".into(), json!(v));
                }
                if let Some(v) = min_mem {
                    min.insert("memory".into(), json!(v));
                }
                if let Some(v) = max_cpu {
                    max.insert("cpu".into(), json!(v));
                }
                if let Some(v) = max_mem {
                    max.insert("memory".into(), json!(v));
                }
                if !min.is_empty() {
                    e["minAllowed"] = Value::Object(min);
                }
                if !max.is_empty() {
                    e["maxAllowed"] = Value::Object(max);
                }
                e
            },
        )
}

fn desired() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["app", "sidecar", "other", "app"]),
        prop::option::of(prop::sample::select(vec!["5m", "250m", "1", "3"])),
        prop::option::of(prop::sample::select(vec!["16Mi", "300Mi", "2Gi"])),
        prop::option::of(prop::sample::select(vec!["100m", "2"])),
        prop::option::of(prop::sample::select(vec!["128Mi", "3Gi"])),
        prop::option::of(prop::sample::select(vec!["270MiB", "1073741824"])),
    )
        .prop_map(|(name, rc, rm, lc, lm, gml)| {
            let mut d = json!({"name": name});
            let mut req = Map::new();
            if let Some(v) = rc {
                req.insert("cpu".into(), json!(v));
            }
            if let Some(v) = rm {
                req.insert("memory".into(), json!(v));
            }
            d["requests"] = Value::Object(req);
            let mut lim = Map::new();
            if let Some(v) = lc {
                lim.insert("cpu".into(), json!(v));
            }
            if let Some(v) = lm {
                lim.insert("memory".into(), json!(v));
            }
            if !lim.is_empty() {
                d["limits"] = Value::Object(lim);
            }
            if let Some(g) = gml {
                d["runtime"] = json!({"gomemlimit": g});
            }
            d
        })
}

fn autoscaler(name: &'static str) -> impl Strategy<Value = Autoscaler> {
    (
        prop_oneof![
            8 => Just(("apps/v1", "Deployment")),
            1 => Just(("argoproj.io/v1alpha1", "Rollout")),
            1 => Just(("apps/v1", "StatefulSet")),
        ],
        prop::option::of(prop::collection::vec(constraint_entry(), 0..3)),
        prop::option::of(any::<bool>()),
        prop_oneof![4 => Just("Apply"), 1 => Just("Preview")],
        prop_oneof![1 => Just(None), 6 => prop::collection::vec(desired(), 0..4).prop_map(Some)],
        any::<bool>(),
    )
        .prop_map(
            move |((api, kind), entries, burstable, mode, desired, agent_burstable)| {
                let mut spec = json!({
                    "targetRef": {"apiVersion": api, "kind": kind, "name": "web"},
                    "owner": "Local",
                    // vertical values reach pods only with a vertical opt-in (the mode matrix)
                    "applyPolicy": {"mode": mode, "update": {"strategy": "Auto"}},
                });
                if let Some(e) = entries {
                    spec["constraints"] = json!({"containers": e});
                }
                if let Some(b) = burstable {
                    spec["options"] = json!({"burstable": b});
                }
                let mut dpa = json!({
                    "apiVersion": "datadoghq.com/v1alpha2",
                    "kind": "DatadogPodAutoscaler",
                    "metadata": {"name": name, "namespace": "shop"},
                    "spec": spec,
                });
                if let Some(d) = desired {
                    dpa["status"] = json!({"vertical": {"target": {
                        "source": "Local", "version": "status-version", "desiredResources": d,
                        "podCPURequest": "0", "podMemoryRequest": "0"
                    }}});
                }
                Autoscaler::from_dpa(&serde_json::from_value(dpa).unwrap(), agent_burstable)
            },
        )
}

fn review(pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "shop",
            "object": pod,
        }
    }))
    .unwrap()
}

/// Every JSON pointer of `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(c, p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(c, p, out);
            }
        }
        _ => {}
    }
}

// === Checks ===

/// Runs `mutate`, counting; a panic is a test failure (proptest then shrinks the input).
fn run_mutate(
    stats: &Stats,
    bytes: &[u8],
    list: &[Arc<Autoscaler>],
) -> Result<Result<Outcome, lazyscale_vertical::MutateError>, TestCaseError> {
    stats.inputs.fetch_add(1, Ordering::Relaxed);
    match catch_unwind(AssertUnwindSafe(|| mutate(bytes, list))) {
        Ok(r) => {
            match &r {
                Ok(Outcome::Patched { .. }) => stats.patched.fetch_add(1, Ordering::Relaxed),
                Ok(_) => 0,
                Err(_) => stats.errors.fetch_add(1, Ordering::Relaxed),
            };
            Ok(r)
        }
        Err(_) => {
            stats.panics.fetch_add(1, Ordering::Relaxed);
            Err(TestCaseError::fail("mutate panicked"))
        }
    }
}

fn parse(r: Resource, v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::String(s) => r.parse(s).ok(),
        Value::Number(n) => r.parse(&n.to_string()).ok(),
        _ => None,
    }
}

/// Applies the patch of `outcome` to `pod` and checks the result against the autoscaler's plan.
fn check_patch(
    stats: &Stats,
    pod: &Value,
    outcome: &Outcome,
    list: &[Arc<Autoscaler>],
) -> Result<(), TestCaseError> {
    let Outcome::Patched {
        autoscaler_id,
        rec_id,
        patch,
        ..
    } = outcome
    else {
        return Ok(());
    };
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| TestCaseError::fail(format!("not an RFC 6902 patch: {e}")))?;
    let mut doc = pod.clone();
    json_patch::patch(&mut doc, &ops.0)
        .map_err(|e| TestCaseError::fail(format!("patch does not apply: {e}\n{patch}\n{pod}")))?;
    let ann = &doc["metadata"]["annotations"];
    prop_assert_eq!(
        &ann["autoscaling.datadoghq.com/autoscaler-id"],
        &json!(autoscaler_id)
    );
    let a = list.iter().find(|a| &a.id() == autoscaler_id).unwrap();
    prop_assert!(!a.preview);
    let Some(vertical) = &a.vertical else {
        prop_assert!(rec_id.is_none());
        return Ok(());
    };
    prop_assert_eq!(&ann["autoscaling.datadoghq.com/rec-id"], &json!(vertical.rec_id));
    for (field, sidecars_only) in [("containers", false), ("initContainers", true)] {
        let Some(before) = pod["spec"][field].as_array() else {
            continue;
        };
        for (i, old) in before.iter().enumerate() {
            let new = &doc["spec"][field][i];
            let plan = old["name"].as_str().and_then(|n| vertical.plan.container(n));
            let plan = match plan {
                Some(p) if !sidecars_only || old["restartPolicy"] == "Always" => p,
                _ => {
                    prop_assert_eq!(old, new);
                    continue;
                }
            };
            stats.containers.fetch_add(1, Ordering::Relaxed);
            for r in Resource::ALL {
                let old_req = &old["resources"]["requests"][r.name()];
                let old_lim = &old["resources"]["limits"][r.name()];
                let new_req = &new["resources"]["requests"][r.name()];
                let new_lim = &new["resources"]["limits"][r.name()];
                let lim = parse(r, Some(old_lim));
                let Some(want) = plan.requests.get(r) else {
                    // No request in the plan: the request stays, and the limit follows its action as it
                    // does with one (a set limit or a raised floor applies without a request too).
                    prop_assert_eq!(old_req, new_req);
                    match plan.limit(r) {
                        LimitAction::Untouched | LimitAction::Proportional => {
                            prop_assert_eq!(old_lim, new_lim)
                        }
                        LimitAction::Remove => prop_assert!(new_lim.is_null(), "{}", new),
                        LimitAction::Set(l) => prop_assert_eq!(new_lim, &json!(r.format(l))),
                        LimitAction::AtLeast(f) => match lim {
                            Some(l) if f > l => prop_assert_eq!(new_lim, &json!(r.format(f))),
                            _ => prop_assert_eq!(old_lim, new_lim),
                        },
                    }
                    continue;
                };
                let want = match plan.limit(r) {
                    LimitAction::Untouched => lim.map_or(want, |l| want.min(l)),
                    LimitAction::AtLeast(f) => lim.map_or(want, |l| want.min(l.max(f))),
                    _ => want,
                };
                prop_assert_eq!(new_req, &json!(r.format(want)), "{} {}", r.name(), new);
                match plan.limit(r) {
                    LimitAction::Untouched => prop_assert_eq!(old_lim, new_lim),
                    LimitAction::Remove => prop_assert!(new_lim.is_null(), "{}", new),
                    LimitAction::Set(l) => {
                        prop_assert_eq!(new_lim, &json!(r.format(l.max(want))))
                    }
                    LimitAction::AtLeast(f) => match lim {
                        Some(l) if f > l => prop_assert_eq!(new_lim, &json!(r.format(f))),
                        Some(_) => prop_assert_eq!(old_lim, new_lim),
                        None => prop_assert!(new_lim.is_null(), "{}", new),
                    },
                    LimitAction::Proportional => match lim {
                        Some(_) => prop_assert!(parse(r, Some(new_lim)).unwrap() >= want),
                        None => prop_assert_eq!(old_lim, new_lim),
                    },
                }
            }
            if let Some(g) = &plan.gomemlimit {
                let env = new["env"].as_array().unwrap();
                let entry = json!({"name": "GOMEMLIMIT", "value": g});
                prop_assert!(env.iter().any(|e| e == &entry), "{}", new);
            }
        }
    }
    Ok(())
}

#[test]
fn fuzz_admission() {
    let n = cases();
    let stats = Stats::default();
    let config = Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    };
    let fixed: Vec<Arc<Autoscaler>> = Vec::new();

    // 1. Arbitrary bytes, and arbitrary bytes after a valid prefix.
    let mut runner = TestRunner::new(config.clone());
    runner
        .run(
            &prop_oneof![
                prop::collection::vec(any::<u8>(), 0..512),
                prop::collection::vec(any::<u8>(), 0..256).prop_map(|b| {
                    let mut v = br#"{"request":{"operation":"CREATE","namespace":"shop","object":"#.to_vec();
                    v.extend(b);
                    v
                }),
            ],
            |bytes| run_mutate(&stats, &bytes, &fixed).map(|_| ()),
        )
        .unwrap();

    // 2. Arbitrary JSON, bare and inside a review.
    let mut runner = TestRunner::new(config.clone());
    runner
        .run(
            &(
                json_value(),
                any::<bool>(),
                prop::collection::vec(autoscaler("a"), 0..2),
            ),
            |(v, wrap, list)| {
                let list: Vec<_> = list.into_iter().map(Arc::new).collect();
                let body = if wrap {
                    review(&v)
                } else {
                    serde_json::to_vec(&v).unwrap()
                };
                let out = run_mutate(&stats, &body, &list)?;
                if let Ok(o) = out {
                    check_patch(&stats, &v, &o, &list)?;
                }
                Ok(())
            },
        )
        .unwrap();

    // 3. Structured pods and autoscalers: patches must apply and be right.
    let mut runner = TestRunner::new(config.clone());
    runner
        .run(
            &(pod(), autoscaler("one"), prop::option::of(autoscaler("two"))),
            |(pod, a, b)| {
                let mut list = vec![Arc::new(a)];
                list.extend(b.map(Arc::new));
                let out = run_mutate(&stats, &review(&pod), &list)?;
                if let Ok(o) = out {
                    check_patch(&stats, &pod, &o, &list)?;
                }
                Ok(())
            },
        )
        .unwrap();

    // 4. Structured pods with one subtree replaced by arbitrary JSON.
    let mut runner = TestRunner::new(config);
    runner
        .run(
            &(
                pod(),
                autoscaler("one"),
                any::<prop::sample::Index>(),
                json_value(),
            ),
            |(mut pod, a, at, replacement)| {
                let mut ptrs = Vec::new();
                pointers(&pod, String::new(), &mut ptrs);
                if !ptrs.is_empty() {
                    let p = &ptrs[at.index(ptrs.len())];
                    if let Some(slot) = pod.pointer_mut(p) {
                        *slot = replacement;
                    }
                }
                let list = vec![Arc::new(a)];
                let out = run_mutate(&stats, &review(&pod), &list)?;
                if let Ok(o) = out {
                    check_patch(&stats, &pod, &o, &list)?;
                }
                Ok(())
            },
        )
        .unwrap();

    let inputs = stats.inputs.load(Ordering::Relaxed);
    let panics = stats.panics.load(Ordering::Relaxed);
    println!(
        "fuzz: {inputs} inputs run ({n} cases per generator), {panics} panics, {} patched and verified \
         ({} containers checked), {} errors (allowed without a patch)",
        stats.patched.load(Ordering::Relaxed),
        stats.containers.load(Ordering::Relaxed),
        stats.errors.load(Ordering::Relaxed),
    );
    assert_eq!(panics, 0);
    assert!(inputs >= u64::from(n) * 4);
}
