//! The committed `deploy/crds/lazyscale-crds.yaml` must be exactly what `crds_yaml()` generates.
//! Regenerate it with `LAZYSCALE_UPDATE_CRDS=1 cargo test -p lazyscale-api --test crd_drift`.

// Test helpers panic on broken fixtures: that is the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds/lazyscale-crds.yaml")
}

#[test]
fn committed_crds_are_up_to_date() {
    let generated = lazyscale_api::crds_yaml().expect("generate CRD YAML");
    let path = committed_path();
    if std::env::var_os("LAZYSCALE_UPDATE_CRDS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("write deploy/crds/lazyscale-crds.yaml");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let first_diff = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || {
                    format!(
                        "lengths differ ({} vs {} lines)",
                        committed.lines().count(),
                        generated.lines().count()
                    )
                },
                |i| format!("first difference at line {}", i + 1),
            );
        panic!(
            "deploy/crds/lazyscale-crds.yaml is stale or missing ({first_diff}).\n\
             Regenerate it with: LAZYSCALE_UPDATE_CRDS=1 cargo test -p lazyscale-api --test crd_drift"
        );
    }
}

#[test]
fn crds_yaml_is_deterministic_and_parses_back() {
    let a = lazyscale_api::crds_yaml().expect("generate");
    let b = lazyscale_api::crds_yaml().expect("generate");
    assert_eq!(a, b);
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&a).expect("parse generated YAML");
    let expected: Vec<serde_json::Value> = lazyscale_api::crds()
        .iter()
        .map(|c| serde_json::to_value(c).expect("crd to json"))
        .collect();
    assert_eq!(docs, expected, "the YAML does not parse back to the CRDs");
}
