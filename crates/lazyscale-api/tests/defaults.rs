//! Deserializing specs that leave defaulted fields out yields the defaults of the official schema:
//! `applyPolicy: {}` with `mode: Apply`; `fallback: {}` with `horizontal: {}`, `enabled: true`,
//! `direction: ScaleUp` and `triggers.staleRecommendationThresholdSeconds: 600`. Fields without an official
//! default stay unset.

// Test helpers panic on broken fixtures: that is the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use lazyscale_api::{
    ApplyMode, ApplyPolicy, DatadogPodAutoscalerClusterProfileSpec, DatadogPodAutoscalerOwner,
    DatadogPodAutoscalerSpec, DatadogPodAutoscalerTemplate, Fallback, FallbackDirection, FallbackTriggers,
    HorizontalFallback,
};
use serde_json::json;

fn assert_official_defaults(apply_policy: &ApplyPolicy, fallback: &Fallback) {
    assert_eq!(apply_policy.mode, ApplyMode::Apply);
    assert!(
        apply_policy.update.is_none() && apply_policy.scale_up.is_none() && apply_policy.scale_down.is_none()
    );
    let h = &fallback.horizontal;
    assert!(h.enabled);
    assert_eq!(h.direction, FallbackDirection::ScaleUp);
    assert_eq!(h.triggers.stale_recommendation_threshold_seconds, 600);
    assert!(h.objectives.is_none());
}

#[test]
fn dpa_spec_defaults() {
    let spec: DatadogPodAutoscalerSpec = serde_json::from_value(json!({
        "owner": "Local",
        "targetRef": {"kind": "Deployment", "name": "web"}
    }))
    .unwrap();
    assert_eq!(spec.owner, DatadogPodAutoscalerOwner::Local);
    assert_eq!(spec.target_ref.api_version, None);
    assert_eq!(spec.remote_version, None);
    assert_eq!(spec.objectives, None);
    assert_eq!(spec.constraints, None);
    assert_eq!(spec.options, None);
    assert_official_defaults(&spec.apply_policy, &spec.fallback);
}

#[test]
fn empty_template_and_nested_empty_objects_get_defaults() {
    let t: DatadogPodAutoscalerTemplate = serde_json::from_value(json!({})).unwrap();
    assert_official_defaults(&t.apply_policy, &t.fallback);
    assert_eq!(t, DatadogPodAutoscalerTemplate::default());

    let p: DatadogPodAutoscalerClusterProfileSpec = serde_json::from_value(json!({
        "template": {"applyPolicy": {}, "fallback": {"horizontal": {"triggers": {}}}}
    }))
    .unwrap();
    assert_official_defaults(&p.template.apply_policy, &p.template.fallback);

    let h: HorizontalFallback = serde_json::from_value(json!({})).unwrap();
    assert_eq!(h, HorizontalFallback::default());
    let tr: FallbackTriggers = serde_json::from_value(json!({})).unwrap();
    assert_eq!(tr.stale_recommendation_threshold_seconds, 600);
}

#[test]
fn explicit_values_win_over_defaults() {
    let f: Fallback = serde_json::from_value(json!({
        "horizontal": {"enabled": false, "direction": "All", "triggers": {"staleRecommendationThresholdSeconds": 120}}
    }))
    .unwrap();
    assert!(!f.horizontal.enabled);
    assert_eq!(f.horizontal.direction, FallbackDirection::All);
    assert_eq!(f.horizontal.triggers.stale_recommendation_threshold_seconds, 120);
    let a: ApplyPolicy = serde_json::from_value(json!({"mode": "Preview"})).unwrap();
    assert_eq!(a.mode, ApplyMode::Preview);
}

#[test]
fn unknown_enum_values_are_rejected() {
    assert!(serde_json::from_value::<ApplyPolicy>(json!({"mode": "Dry"})).is_err());
    assert!(serde_json::from_value::<Fallback>(json!({"horizontal": {"direction": "Up"}})).is_err());
}

#[test]
fn spec_and_template_convert_both_ways() {
    let spec: DatadogPodAutoscalerSpec = serde_json::from_value(json!({
        "owner": "Remote",
        "remoteVersion": 3,
        "targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"},
        "applyPolicy": {"mode": "Preview"},
        "constraints": {"minReplicas": 2, "maxReplicas": 4},
        "objectives": [{"type": "PodResource", "podResource": {"name": "cpu", "value": {"type": "Utilization", "utilization": 60}}}]
    }))
    .unwrap();
    let template = spec.template();
    let back = DatadogPodAutoscalerSpec::from_template(spec.target_ref.clone(), spec.owner, template);
    assert_eq!(back.remote_version, None);
    assert_eq!(
        DatadogPodAutoscalerSpec {
            remote_version: Some(3),
            ..back
        },
        spec
    );
}
