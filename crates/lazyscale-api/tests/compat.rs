//! Compatibility with the official `v1alpha2` CRDs (reduced copies in `tests/fixtures/official-*.yaml`):
//!
//! - every fixture object is valid under the official schema and under ours (a small structural validator:
//!   types, unknown fields, required, enums, ranges, lengths, item counts);
//! - every fixture deserializes into our types and serializes back to the same JSON (nothing lost or
//!   added); fixtures written without defaults come back with exactly the defaults the official schema
//!   declares, applied the way the API server applies them;
//! - our generated schemas have the same property tree as the official ones, with the same types,
//!   formats, enums, ranges, required lists, defaults and list types, and the same names, scope, printer
//!   columns and subresources.

// Test helpers panic on broken fixtures: that is the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use lazyscale_api::{DatadogPodAutoscaler, DatadogPodAutoscalerClusterProfile};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

// === Fixture loading ===

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parse {name}: {e}"))
}

fn official_crd(kind: Kind) -> Value {
    fixture(match kind {
        Kind::Dpa => "official-dpa-v1alpha2.yaml",
        Kind::Profile => "official-dpacp-v1alpha2.yaml",
    })
}

fn our_crd(kind: Kind) -> Value {
    let crds = lazyscale_api::crds();
    let crd = match kind {
        Kind::Dpa => &crds[0],
        Kind::Profile => &crds[1],
    };
    serde_json::to_value(crd).expect("CRD to JSON")
}

fn schema_of(crd: &Value) -> &Value {
    let versions = crd["spec"]["versions"].as_array().expect("versions");
    let v = versions
        .iter()
        .find(|v| v["name"] == "v1alpha2")
        .expect("a v1alpha2 version");
    &v["schema"]["openAPIV3Schema"]
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Dpa,
    Profile,
}

const STORED_FIXTURES: [(&str, Kind); 3] = [
    ("dpa-full.yaml", Kind::Dpa),
    ("dpa-optimize-cost.yaml", Kind::Dpa),
    ("dpacp-full.yaml", Kind::Profile),
];
const MINIMAL_FIXTURES: [(&str, Kind); 2] = [
    ("dpa-minimal.yaml", Kind::Dpa),
    ("dpacp-minimal.yaml", Kind::Profile),
];

fn all_fixtures() -> impl Iterator<Item = (&'static str, Kind)> {
    STORED_FIXTURES.into_iter().chain(MINIMAL_FIXTURES)
}

// === A small structural validator (the subset of OpenAPI the two CRDs use; `pattern` is not checked) ===

fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            errors.push(format!("{path}: expected integer or string, got {value}"));
        }
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    let count = |key: &str| schema.get(key).and_then(Value::as_u64).map(|n| n as usize);
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(obj) = value.as_object() else {
                errors.push(format!("{path}: expected object, got {value}"));
                return;
            };
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let req = req.as_str().expect("required entries are strings");
                if !obj.contains_key(req) {
                    errors.push(format!("{path}: missing required field {req}"));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (k, v) in obj {
                let child = format!("{path}.{k}");
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(s), _) => validate(s, v, &child, errors),
                    (None, Some(s)) => validate(s, v, &child, errors),
                    // An object schema without properties (metadata) accepts anything.
                    (None, None) if props.is_none() => {}
                    (None, None) => errors.push(format!("{child}: unknown field")),
                }
            }
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                errors.push(format!("{path}: expected array, got {value}"));
                return;
            };
            if let Some(min) = count("minItems")
                && items.len() < min
            {
                errors.push(format!("{path}: {} items, fewer than {min}", items.len()));
            }
            for (i, item) in items.iter().enumerate() {
                validate(&schema["items"], item, &format!("{path}[{i}]"), errors);
            }
        }
        Some("string") => match value.as_str() {
            None => errors.push(format!("{path}: expected string, got {value}")),
            Some(s) => {
                let len = s.chars().count();
                if count("minLength").is_some_and(|m| len < m) || count("maxLength").is_some_and(|m| len > m)
                {
                    errors.push(format!("{path}: length {len} out of bounds"));
                }
            }
        },
        Some("integer") => match value.as_i64() {
            None => errors.push(format!("{path}: expected integer, got {value}")),
            Some(n) => {
                let n = n as f64;
                if bound("minimum").is_some_and(|m| n < m) || bound("maximum").is_some_and(|m| n > m) {
                    errors.push(format!("{path}: {n} out of range"));
                }
            }
        },
        Some("boolean") if !value.is_boolean() => {
            errors.push(format!("{path}: expected boolean, got {value}"))
        }
        _ => {}
    }
}

fn assert_valid(schema: &Value, value: &Value, what: &str) {
    let mut errors = Vec::new();
    validate(schema, value, "", &mut errors);
    assert!(errors.is_empty(), "{what}:\n  {}", errors.join("\n  "));
}

#[test]
fn validator_rejects_invalid_objects() {
    // Guards the validator itself: each mutation of a valid fixture must be reported.
    let schema_crd = official_crd(Kind::Dpa);
    let schema = schema_of(&schema_crd);
    let base = fixture("dpa-full.yaml");
    let mutations: [(&str, Value); 7] = [
        ("/spec/owner", json!("Nobody")),
        ("/spec/applyPolicy/scaleUp/rules/0/periodSeconds", json!(0)),
        (
            "/spec/objectives/1/containerResource/value/utilization",
            json!(101),
        ),
        (
            "/spec/fallback/horizontal/triggers/staleRecommendationThresholdSeconds",
            json!(99),
        ),
        ("/spec/objectives/2/customQuery/request/queries", json!([])),
        ("/spec/constraints/unknownField", json!(1)),
        ("/status/currentReplicas", json!("six")),
    ];
    for (pointer, bad) in mutations {
        let mut v = base.clone();
        let (parent, key) = pointer.rsplit_once('/').expect("pointer");
        let target = v.pointer_mut(parent).expect("parent exists");
        match target {
            Value::Object(m) => {
                m.insert(key.to_owned(), bad);
            }
            Value::Array(a) => a[key.parse::<usize>().expect("index")] = bad,
            _ => panic!("{parent} is a scalar"),
        }
        let mut errors = Vec::new();
        validate(schema, &v, "", &mut errors);
        assert!(!errors.is_empty(), "mutation {pointer} was not detected");
    }
}

#[test]
fn fixtures_are_valid_under_the_official_schemas() {
    for (name, kind) in all_fixtures() {
        let crd = official_crd(kind);
        assert_valid(
            schema_of(&crd),
            &fixture(name),
            &format!("{name} under the official CRD"),
        );
    }
}

#[test]
fn fixtures_are_valid_under_our_schemas() {
    for (name, kind) in all_fixtures() {
        let crd = our_crd(kind);
        assert_valid(schema_of(&crd), &fixture(name), &format!("{name} under our CRD"));
    }
}

// === Round trips ===

fn round_trip<T: DeserializeOwned + Serialize>(input: &Value, name: &str) -> Value {
    let typed: T =
        serde_json::from_value(input.clone()).unwrap_or_else(|e| panic!("{name}: deserialize: {e}"));
    serde_json::to_value(&typed).unwrap_or_else(|e| panic!("{name}: serialize: {e}"))
}

fn round_trip_kind(kind: Kind, input: &Value, name: &str) -> Value {
    match kind {
        Kind::Dpa => round_trip::<DatadogPodAutoscaler>(input, name),
        Kind::Profile => round_trip::<DatadogPodAutoscalerClusterProfile>(input, name),
    }
}

/// JSON pointers where two values differ (`+` only in `b`, `-` only in `a`, `~` different).
fn diff(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => diff(u, v, &p, out),
                    (Some(u), None) => out.push(format!("- {p}: {u}")),
                    (None, Some(v)) => out.push(format!("+ {p}: {v}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                diff(u, v, &format!("{path}/{i}"), out);
            }
        }
        _ if a != b => out.push(format!("~ {path}: {a} -> {b}")),
        _ => {}
    }
}

fn assert_same(expected: &Value, actual: &Value, what: &str) {
    let mut d = Vec::new();
    diff(expected, actual, "", &mut d);
    assert!(d.is_empty(), "{what} differs:\n  {}", d.join("\n  "));
}

#[test]
fn stored_fixtures_round_trip_without_loss() {
    for (name, kind) in STORED_FIXTURES {
        let input = fixture(name);
        assert_same(&input, &round_trip_kind(kind, &input, name), name);
    }
}

/// Applies the `default`s of an OpenAPI schema to `value` as the API server does: a missing property
/// with a default gets it, then defaulting continues inside every present object and array item.
fn apply_schema_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(obj) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, s) in props {
                    if let Some(d) = s.get("default")
                        && !obj.contains_key(k)
                    {
                        obj.insert(k.clone(), d.clone());
                    }
                    if let Some(child) = obj.get_mut(k) {
                        apply_schema_defaults(s, child);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                items.iter_mut().for_each(|i| apply_schema_defaults(s, i));
            }
        }
        _ => {}
    }
}

#[test]
fn minimal_fixtures_get_exactly_the_official_defaults() {
    for (name, kind) in MINIMAL_FIXTURES {
        let input = fixture(name);
        let mut expected = input.clone();
        let crd = official_crd(kind);
        apply_schema_defaults(schema_of(&crd), &mut expected);
        assert_ne!(
            expected, input,
            "{name}: the official schema should default something"
        );
        assert_same(
            &expected,
            &round_trip_kind(kind, &input, name),
            &format!("{name} (with defaults)"),
        );
    }
}

#[test]
fn stored_fixtures_already_carry_every_default() {
    // The "stored" fixtures must look like what the API server returns: defaulting changes nothing.
    for (name, kind) in STORED_FIXTURES {
        let input = fixture(name);
        let mut defaulted = input.clone();
        let crd = official_crd(kind);
        apply_schema_defaults(schema_of(&crd), &mut defaulted);
        assert_same(&input, &defaulted, &format!("{name} after defaulting"));
    }
}

#[test]
fn integer_quantities_are_accepted() {
    // The official schema allows integers for quantities; they read back as the same number in a string.
    let mut v = fixture("dpa-full.yaml");
    v["spec"]["objectives"][0]["podResource"]["value"]["absoluteValue"] = json!(11);
    v["spec"]["constraints"]["containers"][0]["maxAllowed"]["cpu"] = json!(4);
    let out = round_trip::<DatadogPodAutoscaler>(&v, "integer quantities");
    assert_eq!(
        out["spec"]["objectives"][0]["podResource"]["value"]["absoluteValue"],
        json!("11")
    );
    assert_eq!(
        out["spec"]["constraints"]["containers"][0]["maxAllowed"]["cpu"],
        json!("4")
    );
}

// === Schema comparison ===

/// Keys compared on every schema node, besides the property tree itself.
const COMPARED_KEYS: [&str; 16] = [
    "type",
    "format",
    "enum",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "default",
    "anyOf",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
];

/// Differences we accept, with the reason (path, key).
const ACCEPTED_DIFFERENCES: [(&str, &str); 1] = [
    // Our Rust types cannot represent an object without `spec`, so our CRD requires it.
    ("", "required"),
];

fn numeric_eq(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn compare_schemas(official: &Value, ours: &Value, path: &str, out: &mut Vec<String>) {
    let accepted = |key: &str| ACCEPTED_DIFFERENCES.contains(&(path, key));
    for key in COMPARED_KEYS {
        let (a, b) = (official.get(key), ours.get(key));
        let same = match (a, b) {
            (Some(x), Some(y)) => numeric_eq(x, y),
            (None, None) => true,
            _ => false,
        };
        if !same && !accepted(key) {
            out.push(format!("{path} {key}: official {a:?}, ours {b:?}"));
        }
    }
    let set = |s: &Value, key: &str| -> BTreeSet<String> {
        s.get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    if set(official, "required") != set(ours, "required") && !accepted("required") {
        out.push(format!(
            "{path} required: official {:?}, ours {:?}",
            set(official, "required"),
            set(ours, "required")
        ));
    }
    let empty = Map::new();
    let props = |s: &Value| {
        s.get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty)
            .clone()
    };
    let (po, pu) = (props(official), props(ours));
    for name in po.keys().filter(|k| !pu.contains_key(*k)) {
        out.push(format!("{path}.{name}: only in the official schema"));
    }
    for name in pu.keys().filter(|k| !po.contains_key(*k)) {
        out.push(format!("{path}.{name}: only in our schema"));
    }
    for (name, s) in &po {
        if let Some(t) = pu.get(name) {
            compare_schemas(s, t, &format!("{path}.{name}"), out);
        }
    }
    for (key, suffix) in [("items", "[]"), ("additionalProperties", "{}")] {
        match (official.get(key), ours.get(key)) {
            (Some(a), Some(b)) => compare_schemas(a, b, &format!("{path}{suffix}"), out),
            (None, None) => {}
            (a, b) => out.push(format!("{path} {key}: official {a:?}, ours {b:?}")),
        }
    }
}

#[test]
fn our_schemas_match_the_official_ones() {
    for kind in [Kind::Dpa, Kind::Profile] {
        let (official, ours) = (official_crd(kind), our_crd(kind));
        let mut out = Vec::new();
        compare_schemas(schema_of(&official), schema_of(&ours), "", &mut out);
        assert!(
            out.is_empty(),
            "{kind:?} schema differences:\n  {}",
            out.join("\n  ")
        );
    }
}

#[test]
fn schema_comparison_detects_differences() {
    // Guards the comparison itself: a changed enum, a changed range, a missing and an extra property.
    let official = official_crd(Kind::Dpa);
    let mut changed = schema_of(&official).clone();
    let spec = &mut changed["properties"]["spec"]["properties"];
    spec["owner"]["enum"] = json!(["Local"]);
    spec["constraints"]["properties"]["minReplicas"]["minimum"] = json!(0);
    spec.as_object_mut().expect("object").remove("options");
    spec["extra"] = json!({"type": "string"});
    let mut out = Vec::new();
    compare_schemas(schema_of(&official), &changed, "", &mut out);
    assert_eq!(out.len(), 4, "{out:#?}");
}

#[test]
fn names_scope_columns_and_subresources_match() {
    for kind in [Kind::Dpa, Kind::Profile] {
        let (official, ours) = (official_crd(kind), our_crd(kind));
        assert_eq!(official["metadata"]["name"], ours["metadata"]["name"]);
        for key in ["group", "names", "scope"] {
            assert_eq!(official["spec"][key], ours["spec"][key], "{kind:?} spec.{key}");
        }
        let version = |crd: &Value| {
            crd["spec"]["versions"].as_array().expect("versions")[0]
                .as_object()
                .expect("version")
                .clone()
        };
        let (vo, vu) = (version(&official), version(&ours));
        for key in [
            "name",
            "served",
            "storage",
            "subresources",
            "additionalPrinterColumns",
        ] {
            assert_eq!(vo.get(key), vu.get(key), "{kind:?} version {key}");
        }
        assert_eq!(ours["spec"]["versions"].as_array().map(Vec::len), Some(1));
    }
}

#[test]
fn template_schema_is_the_dpa_spec_without_target_owner_and_remote_version() {
    let (dpa, profile) = (our_crd(Kind::Dpa), our_crd(Kind::Profile));
    let mut spec = schema_of(&dpa)["properties"]["spec"].clone();
    let props = spec["properties"].as_object_mut().expect("spec properties");
    for k in ["targetRef", "owner", "remoteVersion"] {
        assert!(props.remove(k).is_some(), "{k}");
    }
    let template = &schema_of(&profile)["properties"]["spec"]["properties"]["template"];
    let mut out = Vec::new();
    compare_schemas(&spec, template, ".spec", &mut out);
    // The DPA spec requires targetRef and owner; the template requires nothing.
    assert_eq!(out.len(), 1, "{out:#?}");
    assert!(out[0].contains("required"), "{out:#?}");
}
