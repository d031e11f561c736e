//! The adaptive estimation method through the public recommender API: it is the default (the
//! VPA-compatible settings stay available), keeps the bounds ordered and the minimums, requests less
//! memory than the VPA-compatible method on a steady workload, reacts to a step down faster, keeps the
//! OOM floor, and survives a checkpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::jiff::Timestamp;
use lazyscale_vertical::quantity::MIB;
use lazyscale_vertical::{Config, EstimationMethod, Recommender, WorkloadKey};
use proptest::prelude::*;

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).unwrap()
}

fn key() -> WorkloadKey {
    WorkloadKey::new("ns", "Deployment", "web")
}

fn feed(
    r: &mut Recommender,
    from_min: i64,
    minutes: i64,
    cpu: impl Fn(i64) -> f64,
    mem: impl Fn(i64) -> u64,
) {
    for m in from_min..from_min + minutes {
        r.add_cpu_sample(&key(), "app", cpu(m), ts(m * 60));
        r.add_memory_sample(&key(), "app", mem(m), ts(m * 60));
    }
}

fn targets(r: &Recommender) -> (u64, u64) {
    let c = r.recommend(&key()).unwrap().containers[0].clone();
    (c.cpu_millicores.unwrap().target, c.memory_bytes.unwrap().target)
}

/// The adaptive method without the hours of the day (a request that may stay for days).
fn whole_day() -> Config {
    Config {
        cpu_horizon_seconds: 0,
        ..Config::adaptive()
    }
}

#[test]
fn adaptive_with_a_one_hour_horizon_is_the_default_and_vpa_parses() {
    assert_eq!(Config::default().method, EstimationMethod::Adaptive);
    assert_eq!(Config::default().cpu_horizon_seconds, 3600);
    assert_eq!(Config::adaptive(), Config::default());
    let vpa = Config::vpa_compatible();
    assert_eq!((vpa.method, vpa.cpu_horizon_seconds), (EstimationMethod::Vpa, 0));
    assert!((vpa.safety_margin - 0.15).abs() < 1e-12 && (vpa.cpu_target_percentile - 0.9).abs() < 1e-12);
    let c: Config = serde_json::from_str(r#"{"method":"vpa","cpuHorizonSeconds":0}"#).unwrap();
    assert_eq!(c, vpa);
    assert!(serde_json::from_str::<Config>(r#"{"method":"magic"}"#).is_err());
    let negative = Config {
        cpu_horizon_margin: -0.1,
        ..Config::default()
    };
    assert!(Recommender::new(negative).is_err());
}

#[test]
fn the_hourly_history_survives_a_checkpoint() {
    let mut r = Recommender::new(Config::adaptive()).unwrap();
    let day = |m: i64| if hour_of_day(m) < 12 { 150.0 } else { 900.0 };
    feed(&mut r, 0, 3 * 1440 + 200, day, |m| (400 + (m % 13) as u64) * MIB);
    let before = targets(&r);
    let cp = r.checkpoint(&key()).unwrap();
    assert!(!cp.containers[0].hours.is_empty());
    let json = cp.to_json().unwrap();
    assert!(json.len() < 16 * 1024, "{} bytes", json.len());
    let mut restored = Recommender::new(Config::adaptive()).unwrap();
    restored
        .restore(
            &key(),
            &lazyscale_vertical::WorkloadCheckpoint::from_json(&json).unwrap(),
        )
        .unwrap();
    assert_eq!(targets(&restored), before);
    // Without the hourly history (an older checkpoint) memory is not below the histogram's target.
    let mut old = cp.clone();
    old.containers[0].hours.clear();
    let mut vpa = Recommender::new(Config::vpa_compatible()).unwrap();
    vpa.restore(&key(), &old).unwrap();
    let mut young = Recommender::new(Config::adaptive()).unwrap();
    young.restore(&key(), &old).unwrap();
    feed(&mut young, 3 * 1440 + 200, 30, day, |_| 400 * MIB);
    feed(&mut vpa, 3 * 1440 + 200, 30, day, |_| 400 * MIB);
    assert!(
        targets(&young).1 >= targets(&vpa).1,
        "{:?} {:?}",
        targets(&young),
        targets(&vpa)
    );
}

#[test]
fn steady_memory_costs_less_than_with_the_vpa_method() {
    let mut vpa = Recommender::new(Config::vpa_compatible()).unwrap();
    let mut adaptive = Recommender::new(Config::adaptive()).unwrap();
    for r in [&mut vpa, &mut adaptive] {
        feed(r, 0, 4 * 1440, |_| 300.0, |m| (800 + (m % 7) as u64) * MIB);
    }
    let (_, vpa_mem) = targets(&vpa);
    let (_, ad_mem) = targets(&adaptive);
    assert!(ad_mem >= 806 * MIB, "covers the peak: {}", ad_mem / MIB);
    assert!(
        ad_mem <= 806 * MIB * 106 / 100 + MIB,
        "peak + 3 %, within 6 %: {}",
        ad_mem / MIB
    );
    assert!(ad_mem < vpa_mem, "{} vs {}", ad_mem / MIB, vpa_mem / MIB);
}

#[test]
fn a_cpu_step_down_is_followed_within_three_days() {
    let mut vpa = Recommender::new(Config::vpa_compatible()).unwrap();
    let mut adaptive = Recommender::new(Config::adaptive()).unwrap();
    for r in [&mut vpa, &mut adaptive] {
        feed(r, 0, 5 * 1440, |_| 1000.0, |_| 500 * MIB);
        feed(r, 5 * 1440, 50 * 60, |_| 300.0, |_| 500 * MIB);
    }
    let (vpa_cpu, _) = targets(&vpa);
    let (ad_cpu, _) = targets(&adaptive);
    assert!(
        vpa_cpu > 1000,
        "the VPA method still holds the old level: {vpa_cpu}"
    );
    assert!((300..=340).contains(&ad_cpu), "{ad_cpu}");
}

#[test]
fn the_oom_floor_still_applies() {
    let mut r = Recommender::new(Config::adaptive()).unwrap();
    feed(&mut r, 0, 600, |_| 100.0, |_| 300 * MIB);
    r.record_oom(&key(), "app", 400 * MIB, ts(600 * 60), None);
    let (_, mem) = targets(&r);
    assert!(mem >= 500 * MIB, "{}", mem / MIB);
}

/// Hour of the day (UTC) of minute `m` as [`feed`] stamps it.
fn hour_of_day(m: i64) -> usize {
    usize::try_from((1_700_000_000 + m * 60) / 3600 % 24).unwrap()
}

/// The first minute from `from` whose hour of the day is `hour`.
fn next_hour(from: i64, hour: usize) -> i64 {
    (from..).find(|m| hour_of_day(*m) == hour).unwrap()
}

#[test]
fn with_a_horizon_the_night_request_is_lower_and_the_afternoon_one_covers_the_peak() {
    let night_day = |m: i64| if hour_of_day(m) < 12 { 150.0 } else { 900.0 };
    let mut whole = Recommender::new(whole_day()).unwrap();
    let mut horizon = Recommender::new(Config {
        cpu_horizon_seconds: 11 * 3600,
        ..Config::adaptive()
    })
    .unwrap();
    // Three days, ending within the hour 00:00-00:59: the hour under way and the next 11 are the night.
    let end = next_hour(3 * 1440, 0) + 30;
    for r in [&mut whole, &mut horizon] {
        feed(r, 0, end, night_day, |_| 500 * MIB);
    }
    let (whole_cpu, _) = targets(&whole);
    let (night_cpu, _) = targets(&horizon);
    assert!(whole_cpu >= 900, "{whole_cpu}");
    // The night's level and the margin (12 %).
    assert!((168..=190).contains(&night_cpu), "{night_cpu}");
    // Twelve hours later the next hours are the afternoon: the whole day's target and the margin.
    for r in [&mut whole, &mut horizon] {
        feed(r, end, 12 * 60, night_day, |_| 500 * MIB);
    }
    let (day_cpu, _) = targets(&horizon);
    assert!(
        day_cpu >= 1000 && day_cpu as f64 <= targets(&whole).0 as f64 * 1.12 + 1.0,
        "{day_cpu}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The hours of the day never raise the CPU target above the whole day's and the margin, and never
    /// go below what the hour under way and the next hours used on the latest day.
    #[test]
    fn the_horizon_never_raises_cpu_and_covers_the_latest_day(
        levels in prop::collection::vec(0.0f64..4000.0, 24),
        days in 2i64..6,
        extra in 0i64..24,
        horizon_hours in 1u64..24,
    ) {
        let mut whole = Recommender::new(whole_day()).unwrap();
        let mut shaped = Recommender::new(Config { cpu_horizon_seconds: horizon_hours * 3600, ..Config::adaptive() }).unwrap();
        let minutes = days * 1440 + extra * 60;
        let cpu = |m: i64| levels[hour_of_day(m)] + (m % 3) as f64;
        for r in [&mut whole, &mut shaped] {
            feed(r, 0, minutes, cpu, |_| 300 * MIB);
        }
        let (w, _) = targets(&whole);
        let (s, _) = targets(&shaped);
        let margin = Config::default().cpu_horizon_margin;
        prop_assert!(s as f64 <= w as f64 * (1.0 + margin) + 1.0, "{s} > {w}");
        // The latest day's largest level over the hours the horizon spans (the current hour first).
        let now_hour = hour_of_day(minutes - 1);
        let needed = (0..=usize::try_from(horizon_hours).unwrap())
            .map(|k| levels[(now_hour + k) % 24])
            .fold(0.0f64, f64::max);
        prop_assert!(s as f64 >= needed.min(w as f64) - 1.0, "{s} < {needed}");
    }

    #[test]
    fn bounds_stay_ordered_and_minimums_hold(
        cpu in prop::collection::vec(0.0f64..20_000.0, 1..40),
        mem in prop::collection::vec(0u64..8_000, 1..40),
        minutes in 1i64..6000,
    ) {
        let mut r = Recommender::new(Config::adaptive()).unwrap();
        feed(&mut r, 0, minutes, |m| cpu[(m as usize) % cpu.len()], |m| mem[(m as usize) % mem.len()] * MIB);
        let c = r.recommend(&key()).unwrap().containers[0].clone();
        for e in [c.cpu_millicores.unwrap(), c.memory_bytes.unwrap()] {
            prop_assert!(e.lower <= e.target && e.target <= e.upper, "{e:?}");
        }
        let m = c.memory_bytes.unwrap();
        prop_assert!(m.target >= 10 * MIB);
        prop_assert_eq!(m.target % MIB, 0);
        // Memory always covers the largest sample of the last 36 hours.
        let n = usize::try_from(minutes).unwrap();
        let recent_from = n.saturating_sub(36 * 60);
        let max_recent = (recent_from..n).map(|i| mem[i % mem.len()]).max().unwrap_or(0) * MIB;
        prop_assert!(m.target >= max_recent, "{} < {}", m.target, max_recent);
        prop_assert!(c.cpu_millicores.unwrap().target >= 10);
    }
}
