//! Bad DatadogPodAutoscalers on the real control plane, next to a good one.
//!
//! The bad objects are generated from the CRD's own schema (`lazyscale_api::crds()`, the schema the
//! API server enforces): for every field of the spec, values of the wrong type, out of the declared
//! range, outside the enum, against the pattern, and every required field removed; then a table of
//! contradictions the schema cannot see (min > max, objectives without a body, unknown metric names,
//! targets that are missing, unscalable or malformed). Each one is created beside a good DPA whose
//! Deployment is under load. What the API server refuses is the schema's job and is only counted;
//! what it admits the agent must handle:
//! - every admitted DPA gets conditions (it was reconciled, not silently dropped);
//! - one that does not decode into our types (the test tells them apart with a plain typed decode of
//!   the stored object) is `InvalidSpec`, its message naming the field;
//! - a DPA the agent does not act on has `Active=False` and `Error=True` with a known reason and a
//!   message, and a Warning event with that reason;
//! - the contradictions end with the reason (or condition) the table names;
//! - a DPA that turns invalid (undecodable, then contradictory) and back gets a Warning when the
//!   agent stops acting on it and an `AutoscalerResumed` event when it acts again;
//! - the agent stays alive and ready, and the good DPA keeps scaling after all of it.
//!
//! The DPAs are read back as raw objects: a typed list of DPAs fails as a whole on one it cannot
//! decode.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use futures::StreamExt;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray,
};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use lazyscale_api::consts::conditions::{self, reasons};
use lazyscale_api::consts::events::AUTOSCALER_RESUMED;
use lazyscale_api::{DatadogPodAutoscaler, DatadogPodAutoscalerCondition};
use lazyscale_testenv::agent::http_get;
use lazyscale_testenv::fixtures::{app_deployment, dpa_api, dpa_object, horizontal_spec};
use lazyscale_testenv::wait::wait_for;
use lazyscale_testenv::{Simulated, TestEnv, constant_load, install_crds};
use serde_json::{Value, json};

use common::start_agent;

/// What a case must end with once the agent has seen it.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Anything the agent can explain: conditions present, and if inactive, a reason and an event.
    Explained,
    /// Not acted on, for this reason (`Active=False`, `Error=True`, a Warning event).
    Blocked(&'static str),
}

#[derive(Debug, Clone)]
struct Case {
    /// What was changed, for the report.
    what: String,
    spec: Value,
    expect: Expect,
}

/// A path in the spec: object keys and array indices.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn show(path: &[Seg]) -> String {
    let mut s = String::from("spec");
    for p in path {
        match p {
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// `base` with the value at `path` replaced (`None`: removed). Missing objects on the way are
/// created; a missing array element makes the case impossible (`None`).
fn with(base: &Value, path: &[Seg], value: Option<Value>) -> Option<Value> {
    let mut out = base.clone();
    let (last, parents) = path.split_last()?;
    let mut node = &mut out;
    for seg in parents {
        node = match seg {
            Seg::Key(k) => {
                let obj = node.as_object_mut()?;
                obj.entry(k.clone()).or_insert_with(|| json!({}))
            }
            Seg::Index(i) => node.as_array_mut()?.get_mut(*i)?,
        };
    }
    match (last, value) {
        (Seg::Key(k), Some(v)) => {
            node.as_object_mut()?.insert(k.clone(), v);
        }
        (Seg::Key(k), None) => {
            node.as_object_mut()?.remove(k)?;
        }
        (Seg::Index(i), Some(v)) => *node.as_array_mut()?.get_mut(*i)? = v,
        (Seg::Index(i), None) => {
            let a = node.as_array_mut()?;
            if *i >= a.len() {
                return None;
            }
            a.remove(*i);
        }
    }
    Some(out)
}

fn get<'a>(base: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    path.iter().try_fold(base, |node, seg| match seg {
        Seg::Key(k) => node.get(k),
        Seg::Index(i) => node.get(*i),
    })
}

/// The bad values for one schema node: wrong types, out of range, outside the enum, against the
/// pattern. Each comes with a short description.
fn bad_values(s: &JSONSchemaProps) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = Vec::new();
    if s.x_kubernetes_int_or_string == Some(true) {
        v.push(("a boolean for an int-or-string".into(), json!(true)));
        v.push(("an object for an int-or-string".into(), json!({"value": 1})));
        v.push(("a negative quantity".into(), json!("-1")));
        v.push((
            "a quantity too large for the agent (1e400)".into(),
            json!("1e400"),
        ));
        v.push(("a quantity with an unknown suffix".into(), json!("12Qi")));
        v.push(("zero".into(), json!(0)));
        v.push(("a quantity above 2^64".into(), json!("99999999999999999999999")));
        return v;
    }
    match s.type_.as_deref() {
        Some("integer") => {
            v.push(("a string for an integer".into(), json!("12")));
            v.push(("a fraction for an integer".into(), json!(1.5)));
            match s.minimum {
                Some(min) => v.push((format!("below the minimum {min}"), json!(min as i64 - 1))),
                None => {
                    v.push(("negative (no minimum)".into(), json!(-1)));
                    v.push(("zero (no minimum)".into(), json!(0)));
                }
            }
            match s.maximum {
                Some(max) => v.push((format!("above the maximum {max}"), json!(max as i64 + 1))),
                None => v.push(("the int32 maximum (no maximum)".into(), json!(i32::MAX))),
            }
            if s.format.as_deref() == Some("int32") {
                v.push(("beyond int32".into(), json!(i64::from(i32::MAX) + 1)));
            }
        }
        Some("number") => {
            v.push(("a string for a number".into(), json!("1.5")));
            v.push(("a negative number".into(), json!(-1.5)));
        }
        Some("string") => {
            v.push(("a number for a string".into(), json!(7)));
            v.push(("an empty string".into(), json!("")));
            if s.enum_.is_some() {
                v.push(("a value outside the enum".into(), json!("NotAValue")));
            }
            if s.pattern.is_some() {
                v.push(("a string against the pattern".into(), json!("not valid!")));
            }
            if s.format.as_deref() == Some("date-time") {
                v.push(("a malformed date-time".into(), json!("yesterday")));
            }
        }
        Some("boolean") => v.push(("a string for a boolean".into(), json!("yes"))),
        Some("array") => {
            v.push(("an object for an array".into(), json!({"a": 1})));
            v.push(("an empty array".into(), json!([])));
            v.push(("an array of one empty object".into(), json!([{}])));
        }
        Some("object") => {
            v.push(("a string for an object".into(), json!("x")));
            v.push(("an array for an object".into(), json!([1])));
            v.push(("an empty object".into(), json!({})));
        }
        _ => {}
    }
    v
}

/// Walks the schema under `path`, generating cases against `base`.
fn schema_cases(base: &Value, s: &JSONSchemaProps, path: &mut Vec<Seg>, out: &mut Vec<Case>) {
    if !path.is_empty() {
        for (what, value) in bad_values(s) {
            if let Some(spec) = with(base, path, Some(value)) {
                out.push(Case {
                    what: format!("{}: {what}", show(path)),
                    spec,
                    expect: Expect::Explained,
                });
            }
        }
    }
    let here = get(base, path);
    for r in s.required.iter().flatten() {
        path.push(Seg::Key(r.clone()));
        if get(base, path).is_some()
            && let Some(spec) = with(base, path, None)
        {
            out.push(Case {
                what: format!("{}: required field removed", show(path)),
                spec,
                expect: Expect::Explained,
            });
        }
        path.pop();
    }
    for (k, sub) in s.properties.iter().flatten() {
        // Fields absent from the base are set one level deep (their own bad values), not walked.
        path.push(Seg::Key(k.clone()));
        if here.is_some_and(|h| h.get(k).is_some()) {
            schema_cases(base, sub, path, out);
        } else {
            for (what, value) in bad_values(sub) {
                if let Some(spec) = with(base, path, Some(value)) {
                    out.push(Case {
                        what: format!("{}: {what}", show(path)),
                        spec,
                        expect: Expect::Explained,
                    });
                }
            }
        }
        path.pop();
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &s.items
        && here.and_then(Value::as_array).is_some_and(|a| !a.is_empty())
    {
        path.push(Seg::Index(0));
        schema_cases(base, items, path, out);
        path.pop();
    }
}

/// A spec that uses most of the schema, valid, over Deployment `target`.
fn base_spec(target: &str) -> Value {
    json!({
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
        "owner": "Local",
        "applyPolicy": {
            "mode": "Apply",
            "update": {"strategy": "Disabled"},
            "scaleUp": {"strategy": "Max", "stabilizationWindowSeconds": 0,
                "rules": [{"type": "Pods", "value": 2, "periodSeconds": 60}]},
            "scaleDown": {"strategy": "Min", "stabilizationWindowSeconds": 60,
                "rules": [{"type": "Percent", "value": 50, "periodSeconds": 60}]}
        },
        "constraints": {"minReplicas": 1, "maxReplicas": 3,
            "containers": [{"name": "app", "enabled": true,
                "minAllowed": {"cpu": "50m", "memory": "32Mi"}, "maxAllowed": {"cpu": "2", "memory": "1Gi"}}]},
        "objectives": [{"type": "PodResource",
            "podResource": {"name": "cpu", "value": {"type": "Utilization", "utilization": 60}}}],
        "fallback": {"horizontal": {"enabled": true, "direction": "All",
            "triggers": {"staleRecommendationThresholdSeconds": 600},
            "objectives": [{"type": "ContainerResource", "containerResource":
                {"name": "cpu", "container": "app", "value": {"type": "Utilization", "utilization": 70}}}]}}
    })
}

/// Contradictions and references the schema cannot judge, with what each must end with.
fn semantic_cases(base: &Value) -> Vec<Case> {
    let k = |s: &str| Seg::Key(s.to_owned());
    let case = |what: &str, path: Vec<Seg>, value: Option<Value>, expect: Expect| Case {
        what: what.to_owned(),
        spec: with(base, &path, value).expect("semantic case applies to the base"),
        expect,
    };
    let mut out = vec![
        case(
            "minReplicas above maxReplicas",
            vec![k("constraints")],
            Some(json!({"minReplicas": 5, "maxReplicas": 2})),
            Expect::Blocked(reasons::INVALID_SPEC),
        ),
        case(
            "container minAllowed above maxAllowed",
            vec![k("constraints"), k("containers")],
            Some(json!([{"name": "app", "minAllowed": {"cpu": "2"}, "maxAllowed": {"cpu": "1"}}])),
            Expect::Blocked(reasons::INVALID_SPEC),
        ),
        case(
            "one container constrained twice",
            vec![k("constraints"), k("containers")],
            Some(json!([{"name": "app"}, {"name": "app"}])),
            Expect::Blocked(reasons::INVALID_SPEC),
        ),
        case(
            "a CustomQuery objective in the local fallback",
            vec![k("fallback"), k("horizontal"), k("objectives")],
            Some(
                json!([{"type": "CustomQuery", "customQuery": {"request": {"formula": "a",
                "queries": [{"name": "a", "source": "Metrics", "metrics": {"query": "avg:x{*}"}}]}, "window": "5m",
                "value": {"type": "AbsoluteValue", "absoluteValue": "1"}}}]),
            ),
            Expect::Blocked(reasons::INVALID_SPEC),
        ),
        case(
            "a malformed targetRef.apiVersion",
            vec![k("targetRef"), k("apiVersion")],
            Some(json!("a/b/c")),
            Expect::Blocked(reasons::INVALID_TARGET_REF),
        ),
        case(
            "an empty targetRef.name",
            vec![k("targetRef"), k("name")],
            Some(json!("")),
            Expect::Blocked(reasons::INVALID_TARGET_REF),
        ),
        case(
            "a target that does not exist",
            vec![k("targetRef"), k("name")],
            Some(json!("no-such-deployment")),
            Expect::Blocked(reasons::TARGET_NOT_FOUND),
        ),
        case(
            "a target kind without a scale subresource",
            vec![k("targetRef")],
            Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "kube-root-ca.crt"})),
            Expect::Blocked(reasons::UNSUPPORTED_TARGET_KIND),
        ),
        case(
            "an unknown metric name",
            vec![k("objectives")],
            Some(json!([{"type": "PodResource", "podResource": {"name": "gpu",
                "value": {"type": "Utilization", "utilization": 60}}}])),
            // The CRD's enum refuses it; kept to prove the schema does.
            Expect::Explained,
        ),
        case(
            "a container objective naming no container of the target",
            vec![k("objectives")],
            Some(
                json!([{"type": "ContainerResource", "containerResource": {"name": "cpu",
                "container": "", "value": {"type": "Utilization", "utilization": 60}}}]),
            ),
            Expect::Explained,
        ),
    ];
    // Every objective type without its body, in both objective lists.
    for (list, types) in [
        (
            "objectives",
            &["PodResource", "ContainerResource", "CustomQuery"][..],
        ),
        (
            "fallback.horizontal.objectives",
            &["PodResource", "ContainerResource"][..],
        ),
    ] {
        for t in types {
            let path: Vec<Seg> = list.split('.').map(k).collect();
            out.push(case(
                &format!("{list}: a {t} objective without its body"),
                path,
                Some(json!([{"type": t}])),
                Expect::Blocked(reasons::INVALID_SPEC),
            ));
        }
    }
    out
}

/// The DPA's conditions (read from the raw object): type -> (status, reason, message).
fn conditions_of(d: &DynamicObject) -> BTreeMap<String, (String, String, String)> {
    let list: Vec<DatadogPodAutoscalerCondition> = d
        .data
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    list.into_iter()
        .map(|c| {
            (
                c.type_.to_string(),
                (
                    c.status.to_string(),
                    c.reason.as_deref().unwrap_or_default().to_owned(),
                    c.message.as_deref().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect()
}

async fn replicas(deployments: &Api<Deployment>, name: &str) -> i32 {
    deployments
        .get(name)
        .await
        .ok()
        .and_then(|d| d.spec?.replicas)
        .unwrap_or(0)
}

/// Whether the stored object decodes into our typed DPA (a plain serde decode, not the agent's).
fn decodes(d: &DynamicObject) -> bool {
    serde_json::to_value(d)
        .ok()
        .and_then(|v| serde_json::from_value::<DatadogPodAutoscaler>(v).ok())
        .is_some()
}

/// Whether an event about DPA `name` with `reason` and `type_`, its note containing `note`, exists.
async fn has_event(events: &Api<Event>, name: &str, reason: &str, type_: &str, note: &str) -> bool {
    events
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items.iter().any(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    && e.reason.as_deref() == Some(reason)
                    && e.type_.as_deref() == Some(type_)
                    && e.note.as_deref().is_some_and(|n| n.contains(note))
            })
        })
        .unwrap_or(false)
}

/// Waits until DPA `name` has `Active` = `status` (and, if given, that reason); returns its message.
async fn wait_active(dpas: &Api<DynamicObject>, name: &str, status: &str, reason: Option<&str>) -> String {
    wait_for(60, &format!("{name}: Active={status} {reason:?}"), || async {
        let d = dpas.get(name).await.ok()?;
        let (s, r, m) = conditions_of(&d).get(conditions::ACTIVE)?.clone();
        (s == status && reason.is_none_or(|want| r == want)).then_some(m)
    })
    .await
}

fn assert_alive(agent: &mut lazyscale_testenv::Agent) {
    assert!(agent.try_wait().unwrap().is_none(), "the agent exited");
    let (code, body) = http_get(agent.admin_port, "/readyz").unwrap();
    assert_eq!(code, 200, "/readyz: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_dpas_are_explained_and_the_good_one_keeps_scaling() {
    let env = TestEnv::shared();
    let client = env.client().await;
    install_crds(&client).await.unwrap();
    let ns = env.namespace().await;
    let sim = Simulated::start(&client, &ns).await.unwrap();
    sim.deployment(
        &app_deployment("good", 1, "200m", "64Mi"),
        constant_load(2.0, 64.0),
    )
    .await
    .unwrap();
    let deployments = sim.deployments();
    for name in ["victim", "flip"] {
        let d = app_deployment(name, 1, "200m", "64Mi");
        sim.deployments()
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
    }
    let mut agent = start_agent(
        env.server(),
        &["--horizontal-period-seconds=2", "--lease-namespace=default"],
    );
    let dpas = dpa_api(client.clone(), &ns);
    let ssa = PatchParams::apply("bad-dpas-test");
    dpas.patch(
        "good",
        &ssa,
        &Patch::Apply(&dpa_object(&ns, "good", horizontal_spec("good", 50, 1, 2))),
    )
    .await
    .unwrap();
    wait_for(90, "the good DPA scales to 2", || async {
        (replicas(&deployments, "good").await == 2).then_some(())
    })
    .await;

    // The cases: from the schema, then the contradictions.
    let crd = lazyscale_api::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == lazyscale_api::consts::DPA_KIND)
        .expect("the DPA CRD");
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .expect("a storage version");
    let spec_schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| s.properties.as_ref()?.get("spec"))
        .expect("the spec schema")
        .clone();
    let base = base_spec("victim");
    let mut cases = Vec::new();
    schema_cases(&base, &spec_schema, &mut Vec::new(), &mut cases);
    let from_schema = cases.len();
    cases.extend(semantic_cases(&base));
    assert!(from_schema > 100, "the schema gave only {from_schema} cases");

    // Create them all (16 at once); the API server refuses what its schema forbids.
    let t = Instant::now();
    let mut admitted: Vec<(String, Case)> = Vec::new();
    let mut refused = 0usize;
    let results: Vec<(String, &Case, Result<DynamicObject, kube::Error>)> =
        futures::stream::iter(cases.iter().enumerate())
            .map(|(n, case)| {
                let (dpas, ssa, ns) = (&dpas, &ssa, &ns);
                async move {
                    let name = format!("bad-{n:03}");
                    let r = dpas
                        .patch(
                            &name,
                            ssa,
                            &Patch::Apply(&dpa_object(ns, &name, case.spec.clone())),
                        )
                        .await;
                    (name, case, r)
                }
            })
            .buffered(16)
            .collect()
            .await;
    for (name, case, result) in results {
        match result {
            Ok(_) => {
                eprintln!("admitted {name}: {}", case.what);
                admitted.push((name, case.clone()))
            }
            // Server-side apply refuses a value of the wrong type while building the typed patch (500).
            Err(kube::Error::Api(e))
                if e.code == 422 || e.code == 400 || (e.code == 500 && e.message.contains("typed patch")) =>
            {
                assert!(
                    case.expect == Expect::Explained,
                    "the API server refused a contradiction it cannot see: {} ({})",
                    case.what,
                    e.message
                );
                refused += 1;
            }
            Err(e) => panic!("{}: unexpected error {e}", case.what),
        }
    }
    eprintln!(
        "{} cases ({from_schema} from the schema, {} contradictions): {refused} refused by the API server, {} admitted, in {:.1}s",
        cases.len(),
        cases.len() - from_schema,
        admitted.len(),
        t.elapsed().as_secs_f64()
    );
    assert_alive(&mut agent);

    // Every admitted one is reconciled and explained.
    let names: Vec<String> = admitted.iter().map(|(n, _)| n.clone()).collect();
    let seen = wait_for(120, "conditions on every admitted bad DPA", || {
        let dpas = dpas.clone();
        let names = names.clone();
        async move {
            let list = dpas.list(&ListParams::default()).await.ok()?;
            let by_name: BTreeMap<String, DynamicObject> = list
                .items
                .into_iter()
                .filter_map(|d| Some((d.metadata.name.clone()?, d)))
                .collect();
            let all = names.iter().all(|n| {
                by_name
                    .get(n)
                    .is_some_and(|d| conditions_of(d).contains_key(conditions::ACTIVE))
            });
            if !all {
                let missing: Vec<&String> = names
                    .iter()
                    .filter(|n| {
                        !by_name
                            .get(*n)
                            .is_some_and(|d| conditions_of(d).contains_key(conditions::ACTIVE))
                    })
                    .collect();
                eprintln!("without an Active condition yet: {missing:?}");
            }
            all.then_some(by_name)
        }
    })
    .await;
    let events = Api::<Event>::namespaced(client.clone(), &ns);
    let warnings = wait_for(30, "events", || async {
        Some(events.list(&ListParams::default()).await.ok()?.items)
    })
    .await;
    eprintln!(
        "every admitted DPA has conditions {:.1}s after the first creation",
        t.elapsed().as_secs_f64()
    );
    let mut table = Vec::new();
    let mut blocked_names = Vec::new();
    let mut undecodable = 0usize;
    for (name, case) in &admitted {
        let conds = conditions_of(&seen[name]);
        if !decodes(&seen[name]) {
            // Admitted by the schema, not by our types: reported, naming the field.
            undecodable += 1;
            let (active, reason, message) = conds[conditions::ACTIVE].clone();
            assert!(
                active == conditions::STATUS_FALSE && reason == reasons::INVALID_SPEC,
                "{name} ({}) does not decode: expected Active=False InvalidSpec, got {active} {reason}",
                case.what
            );
            assert!(
                message.starts_with("spec.") && message.contains(" cannot be read: "),
                "{name} ({}): the message names the field: {message}",
                case.what
            );
        }
        let (active, active_reason, _) = conds[conditions::ACTIVE].clone();
        let outcome = if active == conditions::STATUS_FALSE {
            let (error, reason, message) = conds
                .get(conditions::ERROR)
                .cloned()
                .unwrap_or_else(|| panic!("{name} ({}): inactive without an Error condition", case.what));
            assert_eq!(
                error,
                conditions::STATUS_TRUE,
                "{name} ({}): Error condition",
                case.what
            );
            assert!(
                reasons::ALL.contains(&reason.as_str()),
                "{name}: unknown reason {reason}"
            );
            assert!(!message.is_empty(), "{name} ({}): no message", case.what);
            assert_eq!(active_reason, reason);
            blocked_names.push((name.clone(), reason.clone()));
            format!("not active: {reason}: {message}")
        } else {
            let falses: Vec<String> = conds
                .iter()
                .filter(|(_, (s, _, _))| s == conditions::STATUS_FALSE)
                .map(|(t, (_, r, _))| format!("{t}={r}"))
                .collect();
            format!("active; false: [{}]", falses.join(", "))
        };
        match &case.expect {
            Expect::Explained => {}
            Expect::Blocked(reason) => assert!(
                active == conditions::STATUS_FALSE && conds[conditions::ERROR].1 == *reason,
                "{name} ({}): expected {reason}, got {outcome}",
                case.what
            ),
        }
        table.push(format!("{name}  {:<70}  {outcome}", case.what));
    }
    eprintln!(
        "admitted bad DPAs and what the agent made of them ({undecodable} do not decode):\n{}",
        table.join("\n")
    );
    // A Warning event for each DPA not acted on, with the condition's reason.
    for (name, reason) in &blocked_names {
        let found = warnings.iter().any(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str())
                && e.reason.as_deref() == Some(reason.as_str())
                && e.type_.as_deref() == Some("Warning")
        });
        if !found {
            // Events are written after the status; give the last ones a moment.
            wait_for(30, &format!("a {reason} event for {name}"), || async {
                let items = events.list(&ListParams::default()).await.ok()?.items;
                items
                    .iter()
                    .any(|e| {
                        e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str())
                            && e.reason.as_deref() == Some(reason.as_str())
                    })
                    .then_some(())
            })
            .await;
        }
    }
    let contradictions = admitted
        .iter()
        .filter(|(_, c)| c.expect != Expect::Explained)
        .count();
    assert_eq!(
        contradictions,
        cases[from_schema..]
            .iter()
            .filter(|c| c.expect != Expect::Explained)
            .count(),
        "every contradiction is admitted by the schema and judged by the agent"
    );
    assert!(
        undecodable > 0,
        "the schema admits objects our types cannot hold (a negative remoteVersion at least)"
    );
    assert_alive(&mut agent);

    // One DPA turns invalid and back: a Warning when the agent stops acting on it, an
    // AutoscalerResumed event when it acts again.
    let flip = |spec: Value| Patch::Apply(dpa_object(&ns, "flip", spec));
    let valid = horizontal_spec("flip", 50, 1, 2);
    dpas.patch("flip", &ssa, &flip(valid.clone())).await.unwrap();
    wait_active(&dpas, "flip", conditions::STATUS_TRUE, None).await;
    let mut negative = valid.clone();
    negative["remoteVersion"] = json!(-1);
    dpas.patch("flip", &ssa, &flip(negative)).await.unwrap();
    let message = wait_active(
        &dpas,
        "flip",
        conditions::STATUS_FALSE,
        Some(reasons::INVALID_SPEC),
    )
    .await;
    assert!(
        message.starts_with("spec.remoteVersion cannot be read: "),
        "{message}"
    );
    wait_for(30, "a Warning InvalidSpec event on flip", || async {
        has_event(
            &events,
            "flip",
            reasons::INVALID_SPEC,
            "Warning",
            "spec.remoteVersion",
        )
        .await
        .then_some(())
    })
    .await;
    dpas.patch("flip", &ssa, &flip(valid.clone())).await.unwrap();
    wait_active(&dpas, "flip", conditions::STATUS_TRUE, None).await;
    wait_for(30, "an AutoscalerResumed event on flip", || async {
        has_event(&events, "flip", AUTOSCALER_RESUMED, "Normal", "")
            .await
            .then_some(())
    })
    .await;
    let mut contradiction = valid.clone();
    contradiction["constraints"] = json!({"minReplicas": 5, "maxReplicas": 2});
    dpas.patch("flip", &ssa, &flip(contradiction)).await.unwrap();
    let message = wait_active(
        &dpas,
        "flip",
        conditions::STATUS_FALSE,
        Some(reasons::INVALID_SPEC),
    )
    .await;
    assert!(message.contains("maxReplicas"), "{message}");
    wait_for(30, "a Warning event on flip for its contradiction", || async {
        has_event(&events, "flip", reasons::INVALID_SPEC, "Warning", "maxReplicas")
            .await
            .then_some(())
    })
    .await;
    assert_alive(&mut agent);

    // The good DPA keeps scaling: raise its maximum, it follows.
    dpas.patch(
        "good",
        &ssa,
        &Patch::Apply(&dpa_object(&ns, "good", horizontal_spec("good", 50, 1, 4))),
    )
    .await
    .unwrap();
    wait_for(90, "the good DPA scales to 4 beside the bad ones", || async {
        (replicas(&deployments, "good").await == 4).then_some(())
    })
    .await;
    assert_alive(&mut agent);
    agent.stop().unwrap();
    sim.shutdown().await;
}
