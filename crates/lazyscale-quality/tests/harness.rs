//! The harness can fail: known waste on a constant trace, OOM kills over the limit and under node
//! memory pressure, starved minutes, update cadence, deterministic generation, the CSV round trip and
//! the report's shape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lazyscale_quality::generate;
use lazyscale_quality::replay::{Method, NodeModel, Policy, Resources, replay};
use lazyscale_quality::report::{self, Row};
use lazyscale_quality::trace::{self, ContainerSpec, GIB, Series, Trace};
use lazyscale_vertical::Config;

/// Recommends a fixed value (or nothing), and counts OOMs reported to it.
struct Fixed {
    rec: Option<(f64, f64)>,
    ooms: usize,
}

impl Method for Fixed {
    fn name(&self) -> String {
        "fixed".into()
    }
    fn observe(&mut self, _: i64, _: &str, _: &str, _: f64, _: f64) {}
    fn record_oom(&mut self, _: i64, _: &str, _: &str, _: f64, _: &Resources) {
        self.ooms += 1;
    }
    fn recommend(&mut self, _: i64, spec: &ContainerSpec, _: usize) -> Option<Resources> {
        self.rec.map(|(c, m)| Resources::proportional(spec, c, m))
    }
}

fn constant(minutes: usize, cpu: f64, memory: f64, limit_ratio: Option<f64>) -> Trace {
    Trace {
        name: "constant".into(),
        description: "constant usage".into(),
        start: generate::START,
        minutes,
        containers: vec![ContainerSpec {
            name: "app".into(),
            cpu_request_cores: 1.0,
            memory_request_bytes: GIB,
            memory_limit_ratio: limit_ratio,
            cpu_limit_ratio: None,
        }],
        series: vec![Series {
            pod: "p-0".into(),
            container: "app".into(),
            cpu_cores: vec![cpu; minutes],
            memory_bytes: vec![memory; minutes],
        }],
        rollouts: vec![],
    }
}

fn never_full() -> NodeModel {
    NodeModel {
        seed: 1,
        cpu_threshold: 10.0,
        memory_threshold: 10.0,
    }
}

fn always_full() -> NodeModel {
    NodeModel {
        seed: 1,
        cpu_threshold: -10.0,
        memory_threshold: -10.0,
    }
}

fn all_scored() -> Policy {
    Policy {
        score_from_minutes: 0,
        ..Policy::default()
    }
}

#[test]
fn a_constant_trace_gives_a_known_waste() {
    let t = constant(600, 0.25, 0.5 * GIB, Some(1.5));
    let mut m = Fixed { rec: None, ooms: 0 };
    let s = replay(&t, &mut m, &all_scored(), &never_full()).score;
    assert!((s.cpu_waste_core_hours - 0.75 * 10.0).abs() < 1e-9, "{s:?}");
    assert!((s.cpu_requested_core_hours - 10.0).abs() < 1e-9);
    assert!((s.cpu_used_core_hours - 2.5).abs() < 1e-9);
    assert!((s.memory_waste_gib_hours - 5.0).abs() < 1e-9);
    assert_eq!((s.oom_kills, s.starved_minutes, s.changes), (0, 0, 0));
}

#[test]
fn usage_over_the_memory_limit_is_an_oom_kill() {
    // 1.6 GiB used, request 1 GiB, limit 1.5 GiB: every minute is a kill while nothing changes.
    let t = constant(100, 0.1, 1.6 * GIB, Some(1.5));
    let mut m = Fixed { rec: None, ooms: 0 };
    let r = replay(&t, &mut m, &all_scored(), &never_full());
    assert_eq!(r.score.oom_kills, 100);
    assert_eq!(m.ooms, 100);
    // Without a limit and with room on the node, nothing is killed.
    let t = constant(100, 0.1, 1.6 * GIB, None);
    assert_eq!(
        replay(
            &t,
            &mut Fixed { rec: None, ooms: 0 },
            &all_scored(),
            &never_full()
        )
        .score
        .oom_kills,
        0
    );
    // Under node memory pressure, usage above the request is killed even without a limit.
    assert_eq!(
        replay(
            &t,
            &mut Fixed { rec: None, ooms: 0 },
            &all_scored(),
            &always_full()
        )
        .score
        .oom_kills,
        100
    );
}

#[test]
fn an_oom_restart_applies_the_recommendation() {
    let t = constant(100, 0.1, 1.6 * GIB, Some(1.5));
    let mut m = Fixed {
        rec: Some((0.2, 2.0 * GIB)),
        ooms: 0,
    };
    let policy = Policy {
        min_update_interval_minutes: 10_000,
        ..all_scored()
    };
    let r = replay(&t, &mut m, &policy, &never_full());
    assert_eq!(r.score.oom_kills, 1, "killed once, restarted with 2 GiB");
    assert_eq!(r.score.changes, 1);
    assert!((r.resources["app"][99].memory_request - 2.0 * GIB).abs() < 1.0);
}

#[test]
fn cpu_above_the_request_on_a_full_node_is_starved() {
    let t = constant(60, 1.5, 0.5 * GIB, Some(1.5));
    let starved = |node: &NodeModel| {
        replay(&t, &mut Fixed { rec: None, ooms: 0 }, &all_scored(), node)
            .score
            .starved_minutes
    };
    assert_eq!(starved(&always_full()), 60);
    assert_eq!(starved(&never_full()), 0);
    let mut limited = t.clone();
    limited.containers[0].cpu_limit_ratio = Some(1.2);
    let s = replay(
        &limited,
        &mut Fixed { rec: None, ooms: 0 },
        &all_scored(),
        &never_full(),
    )
    .score;
    assert_eq!(s.starved_minutes, 60, "throttled at the CPU limit");
}

#[test]
fn changes_respect_the_interval_and_threshold() {
    let t = constant(3 * 1440, 0.25, 0.5 * GIB, Some(1.5));
    let policy = Policy {
        min_update_interval_minutes: 720,
        change_threshold: 0.1,
        score_from_minutes: 0,
    };
    // 5 % away from the initial resources: never applied.
    let r = replay(
        &t,
        &mut Fixed {
            rec: Some((1.05, GIB)),
            ooms: 0,
        },
        &policy,
        &never_full(),
    );
    assert_eq!(r.score.changes, 0);
    // Far away: applied once at 12 h, then equal.
    let r = replay(
        &t,
        &mut Fixed {
            rec: Some((0.3, 0.6 * GIB)),
            ooms: 0,
        },
        &policy,
        &never_full(),
    );
    assert_eq!(r.score.changes, 1);
    assert!((r.resources["app"][719].cpu_request - 1.0).abs() < 1e-9);
    assert!((r.resources["app"][720].cpu_request - 0.3).abs() < 1e-9);
}

#[test]
fn the_generator_is_deterministic_for_a_seed() {
    let a = generate::standard_set(7, 2);
    let b = generate::standard_set(7, 2);
    let c = generate::standard_set(8, 2);
    // Traces hold NaN for absent pods: compare their printed form.
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    assert_ne!(format!("{a:?}"), format!("{c:?}"));
    assert_eq!(a.len(), generate::NAMES.len());
    for t in &a {
        assert_eq!(t.minutes, 2 * 1440);
        assert!(!t.series.is_empty(), "{}", t.name);
        assert!(
            t.series.iter().all(|s| s.cpu_cores.len() == t.minutes),
            "{}",
            t.name
        );
    }
    let multi = a.iter().find(|t| t.name == "multi-replica").unwrap();
    assert!(multi.series.len() > 3, "replicas come and go");
}

#[test]
fn csv_round_trip() {
    let t = generate::by_name("step-change", 3, 6).unwrap();
    let mut buf = Vec::new();
    trace::write_csv(&t, &mut buf).unwrap();
    let back = trace::read_csv(buf.as_slice(), "x").unwrap();
    assert_eq!(back.name, t.name);
    assert_eq!(back.minutes, t.minutes);
    assert_eq!(back.rollouts, t.rollouts);
    assert_eq!(back.containers, t.containers);
    for (a, b) in back.series[0].cpu_cores.iter().zip(&t.series[0].cpu_cores) {
        assert!((a - b).abs() < 1e-4);
    }
}

#[test]
fn csv_without_metadata_and_with_rfc3339_times() {
    let text = "timestamp,container,cpu_cores,memory_bytes\n\
                2026-01-05T00:00:00Z,app,0.5,1000000\n\
                2026-01-05T00:01:00Z,app,0.7,2000000\n\
                2026-01-05T00:03:00Z,app,0.6,1500000\n";
    let t = trace::read_csv(text.as_bytes(), "mine").unwrap();
    assert_eq!((t.name.as_str(), t.minutes, t.series.len()), ("mine", 4, 1));
    assert!(
        t.series[0].cpu_cores[2].is_nan(),
        "a missing minute stays missing"
    );
    assert!((t.containers[0].cpu_request_cores - 0.84).abs() < 1e-9);
    assert!(trace::read_csv("timestamp,cpu_cores\n".as_bytes(), "x").is_err());
    assert!(
        trace::read_csv(
            "timestamp,container,cpu_cores,memory_bytes\n0,app,-1,5\n".as_bytes(),
            "x"
        )
        .is_err()
    );
}

#[test]
fn the_report_compares_lazyscale_with_both_baselines() {
    let row = |rec: &str, cpu: f64, oom: u64| Row {
        trace: "t".into(),
        recommender: rec.into(),
        score: lazyscale_quality::replay::Score {
            cpu_waste_core_hours: cpu,
            memory_waste_gib_hours: 2.0 * cpu,
            oom_kills: oom,
            ..Default::default()
        },
    };
    let rows = vec![
        row(report::LAZYSCALE, 8.0, 1),
        row(report::VPA, 10.0, 3),
        row(report::DPA, 4.0, 0),
    ];
    let v = report::report(
        &rows,
        &Policy::default(),
        &NodeModel::default(),
        serde_json::json!({}),
    );
    let s = &v["summary"];
    assert_eq!(s["lazyscale_vs_vpa"]["cpu_waste_ratio"], 0.8);
    assert_eq!(s["lazyscale_vs_vpa"]["memory_waste_ratio"], 0.8);
    assert_eq!(s["lazyscale_vs_vpa"]["oom_kills_delta"], -2);
    assert_eq!(s["lazyscale_vs_dpa_method"]["cpu_waste_ratio"], 2.0);
    assert_eq!(s["lazyscale_vs_dpa_method"]["oom_kills_delta"], 1);
    assert_eq!(v["traces"].as_array().unwrap().len(), 3);
}

#[test]
fn every_recommender_replays_a_short_set() {
    let traces = generate::standard_set(1, 3);
    let policy = Policy::default();
    let node = NodeModel::default();
    for t in traces.iter().take(2) {
        let replays = lazyscale_quality::run_trace(t, &Config::adaptive(), &policy, &node).unwrap();
        let names: Vec<&str> = replays.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "lazyscale",
                "lazyscale_ungated",
                "lazyscale_vpa_compatible",
                "vpa",
                "dpa_method"
            ]
        );
        for (_, r) in &replays {
            assert!(r.score.cpu_used_core_hours > 0.0);
            assert_eq!(r.resources["app"].len(), t.minutes);
        }
        let rows = lazyscale_quality::rows(t, &replays);
        let refs: Vec<_> = replays.iter().map(|(n, r)| (n.clone(), r)).collect();
        let html = report::chart_html(t, &refs, &rows);
        assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg"));
    }
}

/// Applied every minute any change (the agent's loop without the harness's cadence), the update gate
/// cuts lazyscale's changes on a diurnal trace and a leak to a fraction while wasting about as much.
#[test]
fn the_update_gate_cuts_changes_at_the_agents_cadence() {
    let policy = Policy {
        min_update_interval_minutes: 0,
        change_threshold: 0.0,
        score_from_minutes: 24 * 60,
    };
    let node = NodeModel::default();
    let set = generate::standard_set(1, 4);
    for name in ["diurnal-web", "memory-leak"] {
        let t = set.iter().find(|t| t.name == name).unwrap();
        let replays = lazyscale_quality::run_trace(t, &Config::default(), &policy, &node).unwrap();
        let score = |n: &str| replays.iter().find(|(m, _)| m == n).unwrap().1.score.clone();
        let (gated, ungated) = (score(report::LAZYSCALE), score(report::LAZYSCALE_UNGATED));
        assert!(
            gated.changes * 3 <= ungated.changes,
            "{name}: {} vs {} changes",
            gated.changes,
            ungated.changes
        );
        assert!(
            gated.cpu_waste_core_hours <= ungated.cpu_waste_core_hours * 1.1
                && gated.memory_waste_gib_hours <= ungated.memory_waste_gib_hours * 1.1,
            "{name}: {gated:?} vs {ungated:?}"
        );
        assert_eq!(gated.oom_kills, ungated.oom_kills, "{name}");
    }
}
