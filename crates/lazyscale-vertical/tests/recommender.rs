//! Properties of the recommender: bounds ordering, narrowing with history, OOM bump-up, minimums,
//! forgetting, checkpoints and configuration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::jiff::Timestamp;
use lazyscale_vertical::quantity::MIB;
use lazyscale_vertical::{Config, Recommender, WorkloadCheckpoint, WorkloadKey};
use proptest::prelude::*;

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).unwrap()
}

fn key() -> WorkloadKey {
    WorkloadKey::new("ns", "Deployment", "web")
}

/// Feeds `minutes` of samples: CPU cycling through `cpu` values, memory through `mem` (MiB).
fn feed(r: &mut Recommender, k: &WorkloadKey, minutes: i64, cpu: &[f64], mem: &[u64]) {
    for m in 0..minutes {
        let i = usize::try_from(m).unwrap();
        r.add_cpu_sample(k, "app", cpu[i % cpu.len()], ts(m * 60));
        r.add_memory_sample(k, "app", mem[i % mem.len()] * MIB, ts(m * 60));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn target_within_bounds(
        cpu in prop::collection::vec(0.0f64..50_000.0, 1..50),
        mem in prop::collection::vec(0u64..20_000, 1..50),
        minutes in 1i64..3000,
        oom in prop::option::of(0u64..30_000),
    ) {
        let mut r = Recommender::new(Config::vpa_compatible()).unwrap();
        let k = key();
        feed(&mut r, &k, minutes, &cpu, &mem);
        if let Some(o) = oom {
            r.record_oom(&k, "app", o * MIB, ts(minutes * 30), None);
        }
        let rec = r.recommend(&k).unwrap();
        let c = &rec.containers[0];
        for e in [c.cpu_millicores.unwrap(), c.memory_bytes.unwrap()] {
            prop_assert!(e.lower <= e.target && e.target <= e.upper, "{e:?}");
        }
        let cpu_e = c.cpu_millicores.unwrap();
        prop_assert!(cpu_e.lower >= 10);
        let mem_e = c.memory_bytes.unwrap();
        prop_assert!(mem_e.lower >= 10 * MIB);
        prop_assert_eq!(mem_e.target % MIB, 0);
        // The CPU target covers the 90th percentile plus the margin (within a bucket).
        let mut sorted = cpu.clone();
        let n = usize::try_from(minutes).unwrap().min(sorted.len());
        sorted.truncate(n);
        sorted.sort_by(f64::total_cmp);
        let max = sorted.last().copied().unwrap_or(0.0);
        prop_assert!(cpu_e.target as f64 <= max.max(10.0) * 1.15 * 1.06 + 1.0);
        if let Some(o) = oom {
            prop_assert!(mem_e.target >= (o * MIB + 100 * MIB).max((o as f64 * 1.2) as u64 * MIB));
        }
    }

    #[test]
    fn garbage_input_is_ignored(v in prop::num::f64::ANY) {
        let mut r = Recommender::new(Config::vpa_compatible()).unwrap();
        let accepted = r.add_cpu_sample(&key(), "app", v, ts(0));
        prop_assert_eq!(accepted, v.is_finite() && v >= 0.0);
        if let Some(rec) = r.recommend(&key()) {
            let e = rec.containers[0].cpu_millicores.unwrap();
            prop_assert!(e.lower <= e.target && e.target <= e.upper);
        }
    }
}

#[test]
fn more_history_narrows_the_bounds() {
    let cpu = [100.0, 200.0, 300.0, 400.0, 500.0];
    let mem = [200, 250, 300];
    let mut widths = Vec::new();
    for hours in [1, 6, 24, 72, 168] {
        let mut r = Recommender::new(Config::vpa_compatible()).unwrap();
        feed(&mut r, &key(), hours * 60, &cpu, &mem);
        let c = r.recommend(&key()).unwrap().containers[0].clone();
        let e = c.cpu_millicores.unwrap();
        widths.push((hours, e.upper - e.lower, c.confidence_days));
    }
    for w in widths.windows(2) {
        assert!(w[1].1 < w[0].1, "{widths:?}");
        assert!(w[1].2 > w[0].2, "{widths:?}");
    }
}

#[test]
fn targets_follow_percentiles_with_margin() {
    let mut r = Recommender::new(Config::vpa_compatible()).unwrap();
    // CPU: 90 % of the time 100m, 10 % 1000m → p90 is 100m (the 90th sample is still 100m).
    let cpu: Vec<f64> = (0..100).map(|i| if i < 85 { 100.0 } else { 1000.0 }).collect();
    feed(&mut r, &key(), 24 * 60, &cpu, &[500]);
    let c = r.recommend(&key()).unwrap().containers[0].clone();
    let e = c.cpu_millicores.unwrap();
    // p90 falls in the 1000m bucket (15 % of samples are above p85): 1000 × 1.15, within a bucket.
    assert!((1150..=1210).contains(&e.target), "{e:?}");
    let m = c.memory_bytes.unwrap();
    // One peak of 500 MiB: 500 × 1.15 = 575 MiB, within a bucket, rounded to MiB.
    assert!((575 * MIB..=605 * MIB).contains(&m.target), "{m:?}");
}

#[test]
fn memory_uses_peaks_per_interval() {
    let mut r = Recommender::new(Config::vpa_compatible()).unwrap();
    let k = key();
    // Each day: a single 1 GiB spike among many 100 MiB samples.
    for day in 0..7 {
        for m in 0..1440 {
            let v = if m == 700 { 1024 } else { 100 };
            r.add_memory_sample(&k, "app", v * MIB, ts(day * 86_400 + m * 60));
            r.add_cpu_sample(&k, "app", 100.0, ts(day * 86_400 + m * 60));
        }
    }
    let m = r.recommend(&k).unwrap().containers[0].memory_bytes.unwrap();
    assert!(m.target >= 1024 * MIB, "the daily peak drives memory: {m:?}");
}

#[test]
fn oom_bump_raises_memory() {
    let mut r = Recommender::new(Config::vpa_compatible()).unwrap();
    let k = key();
    feed(&mut r, &k, 600, &[100.0], &[200]);
    let before = r.recommend(&k).unwrap().containers[0].memory_bytes.unwrap();
    r.record_oom(&k, "app", 256 * MIB, ts(600 * 60), None);
    let c = r.recommend(&k).unwrap().containers[0].clone();
    let after = c.memory_bytes.unwrap();
    assert!(c.oom_bumped);
    assert!(after.target > before.target);
    // max(256 × 1.2, 256 + 100) = 356 MiB.
    assert!(after.target >= 356 * MIB, "{after:?}");

    // A DPA ratio of 2 wins over +100 MiB.
    let mut r2 = Recommender::new(Config::vpa_compatible()).unwrap();
    feed(&mut r2, &k, 600, &[100.0], &[200]);
    r2.record_oom(&k, "app", 1024 * MIB, ts(600 * 60), Some(2.0));
    let m = r2.recommend(&k).unwrap().containers[0].memory_bytes.unwrap();
    assert!(m.target >= 2048 * MIB, "{m:?}");

    // An OOM of a container without samples yet still yields a memory recommendation.
    let mut r3 = Recommender::new(Config::vpa_compatible()).unwrap();
    r3.record_oom(&k, "job", 50 * MIB, ts(0), None);
    let c = r3.recommend(&k).unwrap().containers[0].clone();
    assert!(c.cpu_millicores.is_none());
    // The bump (50 + 100 MiB) is a peak of the history, so the margin applies on top of it.
    let m = c.memory_bytes.unwrap();
    assert!((150 * MIB..=182 * MIB).contains(&m.target), "{m:?}");

    // The floor expires after oomFloorSeconds of further history.
    let mut r4 = Recommender::new(Config {
        oom_floor_seconds: 3600,
        ..Config::vpa_compatible()
    })
    .unwrap();
    r4.record_oom(&k, "app", 4096 * MIB, ts(0), None);
    feed(&mut r4, &k, 10 * 24 * 60, &[100.0], &[100]);
    assert!(!r4.recommend(&k).unwrap().containers[0].oom_bumped);
}

/// The OOM ratchet end to end in the pure half: kills raise the recommended memory limit by the ratio,
/// again at the raised limit; the limit reaches the plan as an explicit memory limit that `RequestsOnly`
/// keeps (raise only) and `RequestsAndLimits` sets; it survives a checkpoint and expires with the floor.
#[test]
fn oom_kills_ratchet_the_memory_limit_under_every_controlled_values() {
    use lazyscale_api::{Constraints, ContainerConstraints, ControlledValues};
    use lazyscale_vertical::apply::{CurrentResources, container_resources};
    use lazyscale_vertical::{DesiredContainer, LimitAction, Resources, apply_constraints};

    let mut r = Recommender::new(Config::vpa_compatible()).unwrap();
    let k = key();
    feed(&mut r, &k, 60, &[100.0], &[200]);
    assert_eq!(r.recommend(&k).unwrap().containers[0].memory_limit_bytes, None);
    // killed at a 256 MiB limit: 256 × 1.2 = 307.2 → 308 MiB
    r.record_oom(&k, "app", 256 * MIB, ts(60 * 60), None);
    r.record_oom_limit(&k, "app", 256 * MIB, ts(60 * 60), None);
    let first = r.recommend(&k).unwrap().containers[0].memory_limit_bytes.unwrap();
    assert_eq!(first, 308 * MIB);
    // another pod still at 256 MiB killed: the same limit, no double raise
    r.record_oom_limit(&k, "app", 256 * MIB, ts(61 * 60), None);
    assert_eq!(
        r.recommend(&k).unwrap().containers[0].memory_limit_bytes,
        Some(first)
    );
    // killed again at the raised limit: raised again (the DPA's ratio wins)
    r.record_oom_limit(&k, "app", first, ts(62 * 60), Some(1.5));
    let second = r.recommend(&k).unwrap().containers[0].memory_limit_bytes.unwrap();
    assert_eq!(second, 462 * MIB);

    // through a checkpoint
    let cp = WorkloadCheckpoint::from_json(&r.checkpoint(&k).unwrap().to_json().unwrap()).unwrap();
    let mut restored = Recommender::new(Config::vpa_compatible()).unwrap();
    restored.restore(&k, &cp).unwrap();
    assert_eq!(
        restored.recommend(&k).unwrap().containers[0].memory_limit_bytes,
        Some(second)
    );

    // into the plan: RequestsOnly raises an existing limit only, RequestsAndLimits sets it
    let rec = r.recommend(&k).unwrap();
    let desired = DesiredContainer::from_recommendation(&rec);
    assert_eq!(desired[0].limits.memory_bytes, Some(second));
    let constraints = |values| Constraints {
        containers: Some(vec![ContainerConstraints {
            name: "*".into(),
            enabled: None,
            controlled_resources: None,
            controlled_values: Some(values),
            min_allowed: None,
            max_allowed: None,
            requests: None,
        }]),
        ..Constraints::default()
    };
    let pod = |limit: Option<u64>| CurrentResources {
        requests: Resources {
            cpu_millicores: Some(100),
            memory_bytes: Some(128 * MIB),
        },
        limits: Resources {
            cpu_millicores: None,
            memory_bytes: limit,
        },
    };
    let only = apply_constraints(
        &desired,
        Some(&constraints(ControlledValues::RequestsOnly)),
        false,
    )
    .unwrap();
    let c = &only.containers[0];
    assert_eq!(c.memory_limit, LimitAction::AtLeast(second));
    let killed = container_resources(c, &pod(Some(256 * MIB)));
    assert_eq!(killed.limits.memory_bytes, Some(second));
    assert!(killed.requests.memory_bytes.unwrap() <= second);
    // a pod already above the ratchet keeps its limit; a pod without a limit gets none
    let roomy = container_resources(c, &pod(Some(4096 * MIB)));
    assert_eq!(roomy.limits.memory_bytes, Some(4096 * MIB));
    assert_eq!(container_resources(c, &pod(None)).limits.memory_bytes, None);
    let both = apply_constraints(
        &desired,
        Some(&constraints(ControlledValues::RequestsAndLimits)),
        false,
    )
    .unwrap();
    let m = both.containers[0].memory_limit;
    let want = second.max(both.containers[0].requests.memory_bytes.unwrap());
    assert_eq!(m, LimitAction::Set(want));
    assert_eq!(
        container_resources(&both.containers[0], &pod(Some(256 * MIB)))
            .limits
            .memory_bytes,
        Some(want)
    );

    // the ratchet expires with the OOM floor
    let mut short = Recommender::new(Config {
        oom_floor_seconds: 3600,
        ..Config::vpa_compatible()
    })
    .unwrap();
    short.record_oom_limit(&k, "app", 256 * MIB, ts(0), None);
    feed(&mut short, &k, 3 * 60, &[100.0], &[100]);
    assert_eq!(
        short.recommend(&k).unwrap().containers[0].memory_limit_bytes,
        None
    );
    // and starts again from the limit of the next kill
    short.record_oom_limit(&k, "app", 200 * MIB, ts(3 * 3600), None);
    assert_eq!(
        short.recommend(&k).unwrap().containers[0].memory_limit_bytes,
        Some(240 * MIB)
    );
}

#[test]
fn minimums_apply() {
    let mut r = Recommender::new(Config::vpa_compatible()).unwrap();
    let k = key();
    feed(&mut r, &k, 100, &[0.0], &[0]);
    let c = r.recommend(&k).unwrap().containers[0].clone();
    // Idle usage falls in the first bucket ([0, 10m) / [0, 10 MiB)), whose bound plus the margin is used.
    assert_eq!(c.cpu_millicores.unwrap().target, 12);
    assert_eq!(c.memory_bytes.unwrap().target, 12 * MIB);
    assert_eq!(c.cpu_millicores.unwrap().lower, 10);

    let mut r = Recommender::new(Config {
        min_cpu_millicores: 50,
        min_memory_bytes: 64 * MIB,
        ..Config::vpa_compatible()
    })
    .unwrap();
    feed(&mut r, &k, 100, &[0.0], &[0]);
    let c = r.recommend(&k).unwrap().containers[0].clone();
    assert_eq!(c.cpu_millicores.unwrap().target, 50);
    assert_eq!(c.memory_bytes.unwrap().target, 64 * MIB);
}

#[test]
fn forget_and_garbage_collect() {
    let mut r = Recommender::new(Config::vpa_compatible()).unwrap();
    let a = key();
    let b = WorkloadKey::new("ns", "StatefulSet", "db");
    feed(&mut r, &a, 10, &[100.0], &[100]);
    r.add_cpu_sample(&b, "db", 100.0, ts(0));
    r.add_cpu_sample(&b, "old", 100.0, ts(-30 * 86_400));
    assert_eq!(r.len(), 2);
    assert_eq!(r.container_count(), 3);
    let bytes = r.approx_heap_bytes();
    assert!(bytes > 3 * 1800 && bytes < 3 * 4000, "{bytes}");
    assert!(r.forget(&a));
    assert!(!r.forget(&a));
    assert!(r.recommend(&a).is_none());
    assert_eq!(r.garbage_collect(ts(0)), 1);
    assert_eq!(r.container_count(), 1);
    assert!(r.forget_container(&b, "db"));
    assert!(r.is_empty());
}

#[test]
fn checkpoints_round_trip_and_throttle() {
    let mut r = Recommender::new(Config::vpa_compatible()).unwrap();
    let k = key();
    feed(&mut r, &k, 3 * 24 * 60, &[100.0, 300.0, 900.0], &[100, 400]);
    r.record_oom(&k, "app", 500 * MIB, ts(100), None);
    let cp = r.checkpoint_if_due(&k, ts(0)).unwrap();
    assert!(r.checkpoint_if_due(&k, ts(599)).is_none());
    assert!(r.checkpoint_if_due(&k, ts(600)).is_some());
    let json = cp.to_json().unwrap();
    assert!(json.len() < 8 * 1024, "{} bytes", json.len());

    let mut fresh = Recommender::new(Config::vpa_compatible()).unwrap();
    fresh
        .restore(&k, &WorkloadCheckpoint::from_json(&json).unwrap())
        .unwrap();
    assert_eq!(fresh.recommend(&k), r.recommend(&k));

    // Restoring into a recommender that already saw new samples merges both.
    let mut merged = Recommender::new(Config::vpa_compatible()).unwrap();
    merged.add_cpu_sample(&k, "app", 5000.0, ts(3 * 86_400 + 60));
    merged.restore(&k, &cp).unwrap();
    let c = merged.recommend(&k).unwrap().containers[0].clone();
    assert!(c.cpu_millicores.unwrap().target < 5000);

    // Another layout is refused.
    let mut other = Recommender::new(Config {
        bucket_ratio: 1.1,
        ..Config::vpa_compatible()
    })
    .unwrap();
    assert!(other.restore(&k, &cp).is_err());
    assert!(other.is_empty());
}

#[test]
fn config_from_yaml_like_json() {
    let c: Config = serde_json::from_str(r#"{"halfLifeSeconds": 3600, "safetyMargin": 0.3}"#).unwrap();
    assert_eq!(c.half_life_seconds, 3600);
    assert_eq!(c.safety_margin, 0.3);
    assert_eq!(c.cpu_target_percentile, 0.9);
    assert!(serde_json::from_str::<Config>(r#"{"halfLife": 1}"#).is_err());
    assert!(
        Recommender::new(Config {
            cpu_target_percentile: 1.5,
            ..Config::vpa_compatible()
        })
        .is_err()
    );
    assert!(
        Recommender::new(Config {
            half_life_seconds: 0,
            ..Config::vpa_compatible()
        })
        .is_err()
    );
    assert!(
        Recommender::new(Config {
            lower_bound_percentile: 0.95,
            ..Config::vpa_compatible()
        })
        .is_err()
    );
}
