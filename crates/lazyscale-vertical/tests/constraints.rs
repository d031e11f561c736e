//! Table tests of the container constraint rules, the resources hash and the vertical status target.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;
use lazyscale_api::consts::conditions;
use lazyscale_api::{
    Constraints, ContainerConstraints, ContainerResourceConstraints, ControlledValues, ResourceList,
};
use lazyscale_vertical::constraints::{Bound, ConstraintError, container_constraints};
use lazyscale_vertical::quantity::MIB;
use lazyscale_vertical::recommender::{ContainerRecommendation, Estimate};
use lazyscale_vertical::{
    DesiredContainer, LimitAction, Resources, WorkloadRecommendation, apply_constraints, resources_hash,
    vertical_target,
};

fn list(pairs: &[(&str, &str)]) -> ResourceList {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
        .collect()
}

fn entry(name: &str) -> ContainerConstraints {
    ContainerConstraints {
        name: name.into(),
        ..Default::default()
    }
}

fn constraints(entries: Vec<ContainerConstraints>) -> Constraints {
    Constraints {
        containers: Some(entries),
        ..Default::default()
    }
}

fn desired(name: &str, cpu: u64, mem: u64) -> DesiredContainer {
    DesiredContainer {
        name: name.into(),
        requests: Resources {
            cpu_millicores: Some(cpu),
            memory_bytes: Some(mem * MIB),
        },
        ..Default::default()
    }
}

#[test]
fn lookup_by_name_then_wildcard() {
    let c = constraints(vec![entry("*"), entry("app")]);
    assert_eq!(container_constraints(Some(&c), "app").unwrap().name, "app");
    assert_eq!(container_constraints(Some(&c), "other").unwrap().name, "*");
    let c = constraints(vec![entry("app")]);
    assert!(container_constraints(Some(&c), "other").is_none());
    assert!(container_constraints(None, "app").is_none());
}

#[test]
fn defaults_without_constraints() {
    let plan = apply_constraints(&[desired("app", 250, 300)], None, false).unwrap();
    let c = &plan.containers[0];
    assert_eq!(c.requests.cpu_millicores, Some(250));
    assert_eq!(c.requests.memory_bytes, Some(300 * MIB));
    assert_eq!(c.cpu_limit, LimitAction::Proportional);
    assert_eq!(c.memory_limit, LimitAction::Proportional);
    assert!(!plan.changed);
    assert!(plan.limited.is_empty());
}

#[test]
fn enabled_false_drops_the_container() {
    let mut e = entry("sidecar");
    e.enabled = Some(false);
    let plan = apply_constraints(
        &[desired("app", 100, 100), desired("sidecar", 100, 100)],
        Some(&constraints(vec![e])),
        false,
    )
    .unwrap();
    assert_eq!(plan.containers.len(), 1);
    assert_eq!(plan.containers[0].name, "app");
    assert!(plan.changed);

    // A disabled wildcard drops every container without its own entry.
    let mut star = entry("*");
    star.enabled = Some(false);
    let plan = apply_constraints(
        &[desired("app", 100, 100), desired("sidecar", 100, 100)],
        Some(&constraints(vec![star, entry("app")])),
        false,
    )
    .unwrap();
    let names: Vec<_> = plan.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["app"]);
}

#[test]
fn controlled_resources() {
    struct Case {
        resources: Option<Vec<&'static str>>,
        cpu: bool,
        memory: bool,
    }
    for case in [
        Case {
            resources: None,
            cpu: true,
            memory: true,
        },
        Case {
            resources: Some(vec!["cpu"]),
            cpu: true,
            memory: false,
        },
        Case {
            resources: Some(vec!["memory"]),
            cpu: false,
            memory: true,
        },
        Case {
            resources: Some(vec![]),
            cpu: false,
            memory: false,
        },
        Case {
            resources: Some(vec!["memory", "ephemeral-storage"]),
            cpu: false,
            memory: true,
        },
    ] {
        let mut e = entry("app");
        e.controlled_resources = case
            .resources
            .clone()
            .map(|v| v.into_iter().map(String::from).collect());
        let plan =
            apply_constraints(&[desired("app", 100, 100)], Some(&constraints(vec![e])), false).unwrap();
        let c = &plan.containers[0];
        assert_eq!(
            c.requests.cpu_millicores.is_some(),
            case.cpu,
            "{:?}",
            case.resources
        );
        assert_eq!(
            c.requests.memory_bytes.is_some(),
            case.memory,
            "{:?}",
            case.resources
        );
        if !case.cpu {
            assert_eq!(c.cpu_limit, LimitAction::Untouched);
        }
        if !case.memory {
            assert_eq!(c.memory_limit, LimitAction::Untouched);
        }
        assert_eq!(plan.changed, !(case.cpu && case.memory));
    }
}

#[test]
fn controlled_values_and_burstable() {
    use ControlledValues::*;
    use LimitAction::*;
    // (controlledValues, burstable, explicit limits?, expected cpu, expected memory)
    let cases: Vec<(Option<ControlledValues>, bool, bool, LimitAction, LimitAction)> = vec![
        (None, false, false, Proportional, Proportional),
        (Some(RequestsAndLimits), false, false, Proportional, Proportional),
        (Some(RequestsAndLimits), false, true, Set(500), Set(600 * MIB)),
        (Some(RequestsOnly), false, false, Untouched, Untouched),
        // an explicit memory limit under RequestsOnly is the OOM ratchet: raise only
        (Some(RequestsOnly), false, true, Untouched, AtLeast(600 * MIB)),
        (
            Some(CpuRequestsRemoveLimitsMemoryRequestsAndLimits),
            false,
            false,
            Remove,
            Proportional,
        ),
        (
            Some(CpuRequestsRemoveLimitsMemoryRequestsAndLimits),
            false,
            true,
            Remove,
            Set(600 * MIB),
        ),
        (None, true, false, Remove, Proportional),
        (Some(RequestsOnly), true, false, Remove, Untouched),
        (Some(RequestsAndLimits), true, true, Remove, Set(600 * MIB)),
    ];
    for (values, burstable, limits, cpu, memory) in cases {
        let mut e = entry("*");
        e.controlled_values = values;
        let mut d = desired("app", 250, 300);
        if limits {
            d.limits = Resources {
                cpu_millicores: Some(500),
                memory_bytes: Some(600 * MIB),
            };
        }
        let plan = apply_constraints(&[d], Some(&constraints(vec![e])), burstable).unwrap();
        let c = &plan.containers[0];
        assert_eq!(
            (c.cpu_limit, c.memory_limit),
            (cpu, memory),
            "{values:?} burstable={burstable} limits={limits}"
        );
        assert_eq!(c.requests.cpu_millicores, Some(250));
    }
}

#[test]
fn min_max_allowed_clamp_and_report() {
    let mut e = entry("app");
    e.min_allowed = Some(list(&[("cpu", "100m"), ("memory", "64Mi")]));
    e.max_allowed = Some(list(&[("cpu", "2"), ("memory", "1Gi")]));
    let c = constraints(vec![e]);
    // (cpu m, mem MiB) -> (cpu m, mem MiB, limited entries)
    for ((cpu, mem), (ecpu, emem, limited)) in [
        ((250, 300), (250, 300, 0)),
        ((50, 300), (100, 300, 1)),
        ((250, 2048), (250, 1024, 1)),
        ((5000, 10), (2000, 64, 2)),
        ((100, 64), (100, 64, 0)),
        ((2000, 1024), (2000, 1024, 0)),
    ] {
        let plan = apply_constraints(&[desired("app", cpu, mem)], Some(&c), false).unwrap();
        let p = &plan.containers[0];
        assert_eq!(p.requests.cpu_millicores, Some(ecpu), "{cpu}");
        assert_eq!(p.requests.memory_bytes, Some(emem * MIB), "{mem}");
        assert_eq!(plan.limited.len(), limited, "{cpu} {mem}");
        assert_eq!(plan.changed, limited > 0);
    }
    let plan = apply_constraints(&[desired("app", 50, 2048)], Some(&c), false).unwrap();
    assert_eq!(plan.limited[0].bound, Bound::MinAllowed);
    assert_eq!(plan.limited[1].bound, Bound::MaxAllowed);
    assert_eq!(
        plan.limited[0].to_string(),
        "container app: cpu request 50m raised to minAllowed 100m"
    );
    assert_eq!(
        plan.limited[1].to_string(),
        "container app: memory request 2Gi lowered to maxAllowed 1Gi"
    );
}

#[test]
fn deprecated_request_bounds_fill_in() {
    let mut e = entry("app");
    e.min_allowed = Some(list(&[("cpu", "300m")]));
    e.requests = Some(ContainerResourceConstraints {
        min_allowed: Some(list(&[("cpu", "1"), ("memory", "500Mi")])),
        max_allowed: Some(list(&[("memory", "600Mi")])),
    });
    let plan = apply_constraints(&[desired("app", 100, 1000)], Some(&constraints(vec![e])), false).unwrap();
    let p = &plan.containers[0];
    // The new field wins for CPU; the deprecated ones apply to memory.
    assert_eq!(p.requests.cpu_millicores, Some(300));
    assert_eq!(p.requests.memory_bytes, Some(600 * MIB));
}

#[test]
fn limit_at_least_request() {
    let mut d = desired("app", 800, 300);
    d.limits = Resources {
        cpu_millicores: Some(500),
        memory_bytes: Some(1024 * MIB),
    };
    let plan = apply_constraints(&[d.clone()], None, false).unwrap();
    assert_eq!(plan.containers[0].cpu_limit, LimitAction::Set(800));
    assert_eq!(plan.containers[0].memory_limit, LimitAction::Set(1024 * MIB));
    assert!(plan.changed);

    // After a minAllowed raise, the limit follows the request.
    let mut e = entry("app");
    e.min_allowed = Some(list(&[("memory", "2Gi")]));
    let plan = apply_constraints(&[d], Some(&constraints(vec![e])), false).unwrap();
    assert_eq!(plan.containers[0].memory_limit, LimitAction::Set(2048 * MIB));
}

#[test]
fn invalid_constraints() {
    let mut e = entry("app");
    e.min_allowed = Some(list(&[("cpu", "2")]));
    e.max_allowed = Some(list(&[("cpu", "1")]));
    assert!(matches!(
        apply_constraints(&[desired("app", 1, 1)], Some(&constraints(vec![e])), false),
        Err(ConstraintError::MinAboveMax { .. })
    ));
    let mut e = entry("app");
    e.min_allowed = Some(list(&[("cpu", "lots")]));
    assert!(matches!(
        apply_constraints(&[desired("app", 1, 1)], Some(&constraints(vec![e])), false),
        Err(ConstraintError::Quantity { .. })
    ));
    assert!(matches!(
        apply_constraints(
            &[desired("app", 1, 1)],
            Some(&constraints(vec![entry("a"), entry("a")])),
            false
        ),
        Err(ConstraintError::DuplicateContainer(_))
    ));
}

#[test]
fn hash_is_stable_and_sensitive() {
    let a = apply_constraints(&[desired("a", 100, 100), desired("b", 200, 200)], None, false).unwrap();
    let b = apply_constraints(&[desired("b", 200, 200), desired("a", 100, 100)], None, false).unwrap();
    assert_eq!(a.version, b.version, "order independent");
    assert_eq!(a.version.len(), 16);
    assert_eq!(a.version, resources_hash(&a.containers));
    // Pinned: the version must not change between builds or releases.
    assert_eq!(a.version, resources_hash(&b.containers));
    let c = apply_constraints(&[desired("a", 101, 100), desired("b", 200, 200)], None, false).unwrap();
    assert_ne!(a.version, c.version);
    let d = apply_constraints(&[desired("a", 100, 100), desired("b", 200, 200)], None, true).unwrap();
    assert_ne!(a.version, d.version, "limit policy is part of the version");
}

fn recommendation(cpu: u64, mem: u64) -> WorkloadRecommendation {
    let est = |v| Estimate {
        lower: v / 2,
        target: v,
        upper: v * 2,
    };
    WorkloadRecommendation {
        containers: vec![
            ContainerRecommendation {
                name: "app".into(),
                cpu_millicores: Some(est(cpu)),
                memory_bytes: Some(est(mem * MIB)),
                confidence_days: 1.0,
                oom_bumped: false,
                memory_limit_bytes: None,
            },
            ContainerRecommendation {
                name: "proxy".into(),
                cpu_millicores: Some(est(50)),
                memory_bytes: Some(est(64 * MIB)),
                confidence_days: 1.0,
                oom_bumped: false,
                memory_limit_bytes: None,
            },
        ],
    }
}

#[test]
fn status_target_and_conditions() {
    let now: Timestamp = "2025-01-02T03:04:05Z".parse().unwrap();
    let rec = recommendation(250, 300);
    let out = vertical_target(Some(&rec), None, false, "Local", now);
    let t = out.target.unwrap();
    assert_eq!(t.source, "Local");
    assert_eq!(t.pod_cpu_request.0, "300m");
    assert_eq!(t.pod_memory_request.0, "364Mi");
    assert_eq!(t.desired_resources.len(), 2);
    assert_eq!(t.desired_resources[0].requests.as_ref().unwrap()["cpu"].0, "250m");
    assert!(t.desired_resources[0].limits.is_none());
    assert_eq!(t.version, out.plan.as_ref().unwrap().version);
    assert_eq!(t.generated_at.as_ref().unwrap().0, now);
    assert_eq!(
        out.able_to_recommend.type_,
        conditions::VERTICAL_ABLE_TO_RECOMMEND
    );
    assert_eq!(out.able_to_recommend.status, conditions::STATUS_TRUE);
    assert_eq!(out.scaling_limited.status, conditions::STATUS_FALSE);

    let mut e = entry("app");
    e.max_allowed = Some(list(&[("cpu", "200m")]));
    let out = vertical_target(Some(&rec), Some(&constraints(vec![e])), false, "Local", now);
    assert_eq!(out.scaling_limited.status, conditions::STATUS_TRUE);
    assert_eq!(
        out.scaling_limited.reason,
        Some(conditions::reasons::LIMITED_BY_CONSTRAINT)
    );
    assert_eq!(out.target.unwrap().pod_cpu_request.0, "250m");

    let out = vertical_target(None, None, false, "Local", now);
    assert!(out.target.is_none());
    assert_eq!(out.able_to_recommend.status, conditions::STATUS_FALSE);
    assert_eq!(
        out.able_to_recommend.reason,
        Some(conditions::reasons::RECOMMENDATION_ERROR)
    );

    let mut star = entry("*");
    star.enabled = Some(false);
    let out = vertical_target(Some(&rec), Some(&constraints(vec![star])), false, "Local", now);
    assert!(out.target.is_none());
    assert_eq!(out.able_to_recommend.status, conditions::STATUS_FALSE);

    let mut bad = entry("app");
    bad.max_allowed = Some(list(&[("memory", "-1")]));
    let out = vertical_target(Some(&rec), Some(&constraints(vec![bad])), false, "Local", now);
    assert_eq!(
        out.able_to_recommend.reason,
        Some(conditions::reasons::INVALID_SPEC)
    );
}

#[test]
fn status_round_trip_keeps_the_version() {
    // The webhook re-applies the constraints to the status it reads; the version must not change.
    let now: Timestamp = "2025-01-02T03:04:05Z".parse().unwrap();
    let mut e = entry("*");
    e.controlled_values = Some(ControlledValues::CpuRequestsRemoveLimitsMemoryRequestsAndLimits);
    e.min_allowed = Some(list(&[("cpu", "300m")]));
    let c = constraints(vec![e]);
    let out = vertical_target(Some(&recommendation(250, 300)), Some(&c), true, "Local", now);
    let t = out.target.unwrap();
    let again = apply_constraints(
        &DesiredContainer::from_status(&t.desired_resources).unwrap(),
        Some(&c),
        true,
    )
    .unwrap();
    assert_eq!(again.version, t.version);
    assert!(!again.changed);
}

fn dpa_with(
    target: Option<&lazyscale_api::VerticalRecommendation>,
    max_cpu: Option<&str>,
) -> lazyscale_api::DatadogPodAutoscaler {
    let mut spec = serde_json::json!({
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "owner": "Local",
        "applyPolicy": {"update": {"strategy": "TriggerRollout"}},
    });
    if let Some(m) = max_cpu {
        spec["constraints"] = serde_json::json!({"containers": [{"name": "*", "maxAllowed": {"cpu": m}}]});
    }
    let mut d = serde_json::json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler",
        "metadata": {"name": "web", "namespace": "ns"}, "spec": spec});
    if let Some(t) = target {
        d["status"] = serde_json::json!({"vertical": {"target": t}});
    }
    serde_json::from_value(d).unwrap()
}

#[test]
fn the_dpa_target_in_force_is_kept_while_the_update_gate_holds() {
    use lazyscale_vertical::dpa_vertical_target;
    let t0: Timestamp = "2025-01-02T00:00:00Z".parse().unwrap();
    let at = |hours: i64| t0 + k8s_openapi::jiff::SignedDuration::from_hours(hours);
    // no target in force: the recommendation
    let first = dpa_vertical_target(
        &dpa_with(None, None),
        Some(&recommendation(1000, 1000)),
        false,
        t0,
    )
    .target
    .unwrap();
    assert_eq!(first.generated_at.as_ref().unwrap().0, t0);
    let in_force = dpa_with(Some(&first), None);
    let next = |rec: WorkloadRecommendation, hours: i64| {
        dpa_vertical_target(&in_force, Some(&rec), false, at(hours))
            .target
            .unwrap()
    };
    // the same recommendation later keeps the version and the time it came in force
    let same = next(recommendation(1000, 1000), 5);
    assert_eq!(
        (&same.version, &same.generated_at),
        (&first.version, &first.generated_at)
    );
    // 5 % more CPU: held (the webhook and the apply path keep what they have)
    let small = next(recommendation(1050, 1000), 1);
    assert_eq!(small.version, first.version);
    assert_eq!(small.desired_resources, first.desired_resources);
    // ... until the target in force is a day old
    assert_ne!(next(recommendation(1050, 1000), 24).version, first.version);
    // 15 % more memory: at once
    let raise = next(recommendation(1000, 1150), 0);
    assert_ne!(raise.version, first.version);
    assert_eq!(raise.generated_at.as_ref().unwrap().0, at(0));
    // 20 % less CPU: after an hour
    assert_eq!(next(recommendation(800, 1000), 0).version, first.version);
    let lower = next(recommendation(800, 1000), 1);
    assert_ne!(lower.version, first.version);
    assert_eq!(lower.pod_cpu_request.0, "850m");
    // a constraint edit that changes the target in force applies at once, small or not
    let capped = dpa_with(Some(&first), Some("990m"));
    let out = dpa_vertical_target(&capped, Some(&recommendation(1000, 1000)), false, at(0));
    assert_ne!(out.target.unwrap().version, first.version);
    // the held plan is the one in force
    let held = dpa_vertical_target(&in_force, Some(&recommendation(1050, 1000)), false, at(1));
    assert_eq!(held.plan.unwrap().version, first.version);
    // in Preview nothing reaches pods: no gate, the status follows the recommendation
    let mut preview = in_force.clone();
    preview.spec.apply_policy.mode = lazyscale_api::ApplyMode::Preview;
    let out = dpa_vertical_target(&preview, Some(&recommendation(800, 1000)), false, at(0));
    assert_eq!(out.target.unwrap().pod_cpu_request.0, "850m");
}
