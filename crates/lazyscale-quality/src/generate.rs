//! A seeded generator of synthetic usage traces: the same seed always gives the same traces (on the same
//! `rand` version), so a measured table can be reproduced.
//!
//! [`standard_set`] is the trace set the `lazyscale-quality` binary scores by default: diurnal web
//! traffic, step changes, short spikes, a slow memory leak, a JVM-like heap growing to a plateau, batch
//! bursts and a multi-replica service whose load spreads over a changing number of replicas. Every
//! generator takes the number of days; minute 0 is a Monday 00:00 UTC, traffic peaks at 16:00 UTC and
//! weekends carry less traffic.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::trace::{ContainerSpec, GIB, MIB, Series, Trace};

/// Monday 2026-01-05 00:00:00 UTC.
pub const START: i64 = 1_767_571_200;

const DAY_MIN: usize = 24 * 60;

/// The names of the traces of [`standard_set`], in order.
pub const NAMES: [&str; 7] = [
    "diurnal-web",
    "step-change",
    "spiky",
    "memory-leak",
    "jvm-heap",
    "batch",
    "multi-replica",
];

/// The default trace set: every generator of this module, `days` long, seeded from `seed`.
pub fn standard_set(seed: u64, days: usize) -> Vec<Trace> {
    NAMES.iter().filter_map(|n| by_name(n, seed, days)).collect()
}

/// One trace of the standard set by name.
pub fn by_name(name: &str, seed: u64, days: usize) -> Option<Trace> {
    let minutes = days.max(1) * DAY_MIN;
    // Each trace gets its own stream, so adding a trace does not change the others.
    let salt = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let rng = &mut StdRng::seed_from_u64(seed ^ salt);
    Some(match name {
        "diurnal-web" => diurnal_web(rng, minutes),
        "step-change" => step_change(rng, minutes),
        "spiky" => spiky(rng, minutes),
        "memory-leak" => memory_leak(rng, minutes),
        "jvm-heap" => jvm_heap(rng, minutes),
        "batch" => batch(rng, minutes),
        "multi-replica" => multi_replica(rng, minutes),
        _ => return None,
    })
}

/// Traffic shape of minute `i`: 0 at 04:00 UTC, 1 at 16:00 UTC, scaled by 0.7 on weekends.
pub fn diurnal(i: usize) -> f64 {
    let hour = (i % DAY_MIN) as f64 / 60.0;
    let d = 0.5 - 0.5 * (std::f64::consts::TAU * (hour - 4.0) / 24.0).cos();
    d * weekday_factor(i)
}

fn weekday_factor(i: usize) -> f64 {
    // Minute 0 is a Monday: days 5 and 6 of each week are the weekend.
    if (i / DAY_MIN) % 7 >= 5 { 0.7 } else { 1.0 }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `1 + sd·N(0,1)`, kept within `[0.5, 1.5]`.
fn jitter(rng: &mut StdRng, sd: f64) -> f64 {
    (1.0 + sd * normal(rng)).clamp(0.5, 1.5)
}

fn series(pod: &str, container: &str, minutes: usize) -> Series {
    Series {
        pod: pod.to_owned(),
        container: container.to_owned(),
        cpu_cores: vec![f64::NAN; minutes],
        memory_bytes: vec![f64::NAN; minutes],
    }
}

fn spec(name: &str, cpu: f64, memory: f64, memory_limit_ratio: Option<f64>) -> ContainerSpec {
    ContainerSpec {
        name: name.to_owned(),
        cpu_request_cores: cpu,
        memory_request_bytes: memory,
        memory_limit_ratio,
        cpu_limit_ratio: None,
    }
}

fn trace(name: &str, description: &str, minutes: usize) -> Trace {
    Trace {
        name: name.to_owned(),
        description: description.to_owned(),
        start: START,
        minutes,
        containers: Vec::new(),
        series: Vec::new(),
        rollouts: Vec::new(),
    }
}

fn diurnal_web(rng: &mut StdRng, minutes: usize) -> Trace {
    let mut t = trace(
        "diurnal-web",
        "two web replicas with daily traffic (peak 16:00 UTC, quieter weekends); memory follows load",
        minutes,
    );
    t.containers.push(spec("app", 1.0, GIB, Some(1.5)));
    for pod in ["web-0", "web-1"] {
        let mut s = series(pod, "app", minutes);
        for i in 0..minutes {
            let d = diurnal(i);
            s.cpu_cores[i] = (0.15 + 0.65 * d) * jitter(rng, 0.06);
            s.memory_bytes[i] = (550.0 + 250.0 * d) * MIB * jitter(rng, 0.01);
        }
        t.series.push(s);
    }
    t
}

fn step_change(rng: &mut StdRng, minutes: usize) -> Trace {
    let mut t = trace(
        "step-change",
        "an API whose usage steps down on day 5 (a fixed hot loop) and partly back up on day 10, rolled out at each step",
        minutes,
    );
    t.containers.push(spec("app", 1.5, 2.0 * GIB, Some(1.5)));
    let mut s = series("api-0", "app", minutes);
    for i in 0..minutes {
        let day = i / DAY_MIN;
        let (cpu, mem) = match day {
            0..5 => (1.2, 1.6 * GIB),
            5..10 => (0.45, 0.9 * GIB),
            _ => (0.8, 1.2 * GIB),
        };
        let d = diurnal(i);
        s.cpu_cores[i] = cpu * (0.85 + 0.3 * d) * jitter(rng, 0.05);
        s.memory_bytes[i] = mem * (0.95 + 0.05 * d) * jitter(rng, 0.01);
    }
    t.series.push(s);
    t.rollouts = [5 * DAY_MIN, 10 * DAY_MIN]
        .into_iter()
        .filter(|&m| m < minutes)
        .collect();
    t
}

fn spiky(rng: &mut StdRng, minutes: usize) -> Trace {
    let mut t = trace(
        "spiky",
        "a steady worker with short CPU spikes (1-3 min, 3-5x, about 10 a day) and rare memory spikes",
        minutes,
    );
    t.containers.push(spec("app", 1.0, 1.5 * GIB, Some(1.5)));
    let mut s = series("worker-0", "app", minutes);
    let (mut cpu_spike, mut cpu_factor, mut mem_spike) = (0u32, 1.0, 0u32);
    for i in 0..minutes {
        if cpu_spike == 0 && rng.random_bool(1.0 / 150.0) {
            cpu_spike = rng.random_range(1..=3);
            cpu_factor = rng.random_range(3.0..5.0);
        }
        if mem_spike == 0 && rng.random_bool(1.0 / 1440.0) {
            mem_spike = rng.random_range(1..=2);
        }
        let factor = if cpu_spike > 0 { cpu_factor } else { 1.0 };
        s.cpu_cores[i] = 0.3 * factor * jitter(rng, 0.05);
        let extra = if mem_spike > 0 { 250.0 } else { 0.0 };
        s.memory_bytes[i] = (700.0 + extra) * MIB * jitter(rng, 0.01);
        cpu_spike = cpu_spike.saturating_sub(1);
        mem_spike = mem_spike.saturating_sub(1);
    }
    t.series.push(s);
    t
}

fn memory_leak(rng: &mut StdRng, minutes: usize) -> Trace {
    let mut t = trace(
        "memory-leak",
        "a cache leaking 55 MiB a day from 450 MiB, reset by the weekly rollout on day 7",
        minutes,
    );
    t.containers.push(spec("app", 0.5, GIB, Some(1.25)));
    let mut s = series("cache-0", "app", minutes);
    let rollout = 7 * DAY_MIN;
    for i in 0..minutes {
        let since = if i >= rollout { i - rollout } else { i };
        let days = since as f64 / DAY_MIN as f64;
        // A GC-like sawtooth of 3 % every 30 minutes on top of the leak.
        let saw = 0.97 + 0.03 * ((i % 30) as f64 / 30.0);
        s.cpu_cores[i] = 0.25 * (0.8 + 0.4 * diurnal(i)) * jitter(rng, 0.05);
        s.memory_bytes[i] = (450.0 + 55.0 * days) * MIB * saw * jitter(rng, 0.005);
    }
    t.series.push(s);
    t.rollouts = [rollout].into_iter().filter(|&m| m < minutes).collect();
    t
}

fn jvm_heap(rng: &mut StdRng, minutes: usize) -> Trace {
    let mut t = trace(
        "jvm-heap",
        "a JVM whose heap grows to a 2 GiB plateau within hours of each start (restarts on days 4 and 9), memory limit = request",
        minutes,
    );
    t.containers.push(spec("app", 2.0, 3.0 * GIB, Some(1.0)));
    let mut s = series("jvm-0", "app", minutes);
    let restarts: Vec<usize> = [4 * DAY_MIN, 9 * DAY_MIN]
        .into_iter()
        .filter(|&m| m < minutes)
        .collect();
    for i in 0..minutes {
        let started = restarts.iter().copied().filter(|&r| r <= i).max().unwrap_or(0);
        let up = (i - started) as f64;
        let heap = 250.0 * MIB + 1.8 * GIB * (1.0 - (-up / 180.0).exp());
        let saw = 0.96 + 0.04 * ((i % 20) as f64 / 20.0);
        let jit = if up < 10.0 { 1.5 } else { 0.0 };
        s.cpu_cores[i] = (0.6 * (0.7 + 0.3 * diurnal(i)) + jit) * jitter(rng, 0.05);
        s.memory_bytes[i] = heap * saw * jitter(rng, 0.003);
    }
    t.series.push(s);
    t.rollouts = restarts;
    t
}

fn batch(rng: &mut StdRng, minutes: usize) -> Trace {
    let mut t = trace(
        "batch",
        "a mostly idle worker running a 40-minute batch every 6 hours (01:00, 07:00, 13:00, 19:00 UTC)",
        minutes,
    );
    t.containers.push(spec("app", 2.0, 2.0 * GIB, Some(1.5)));
    let mut s = series("batch-0", "app", minutes);
    for i in 0..minutes {
        let in_cycle = (i + 5 * 60) % (6 * 60); // bursts start at 01:00, 07:00, ...
        if in_cycle < 40 {
            let ramp = (in_cycle as f64 + 1.0) / 40.0;
            s.cpu_cores[i] = 1.6 * jitter(rng, 0.05);
            s.memory_bytes[i] = (350.0 * MIB + 1.05 * GIB * ramp) * jitter(rng, 0.01);
        } else {
            s.cpu_cores[i] = 0.04 * jitter(rng, 0.1);
            s.memory_bytes[i] = 350.0 * MIB * jitter(rng, 0.01);
        }
    }
    t.series.push(s);
    t
}

fn multi_replica(rng: &mut StdRng, minutes: usize) -> Trace {
    let mut t = trace(
        "multi-replica",
        "a service of 3-16 replicas whose daily load (1.5-10 cores) is spread over replicas added and removed by a horizontal autoscaler",
        minutes,
    );
    t.containers.push(spec("app", 1.0, GIB, Some(1.5)));
    const PER_POD: f64 = 0.6;
    let mut pods: Vec<Series> = Vec::new();
    let mut live: Vec<usize> = Vec::new();
    let mut slow = 1.0f64;
    let mut below_since: Option<usize> = None;
    for i in 0..minutes {
        // A slowly wandering load level (AR(1)) on top of the daily shape.
        slow = 1.0 + 0.97 * (slow - 1.0) + 0.01 * normal(rng);
        let total = (1.5 + 8.5 * diurnal(i)) * slow.clamp(0.8, 1.2);
        let desired = ((total / PER_POD).ceil() as usize).clamp(3, 16);
        if desired > live.len() {
            below_since = None;
            while live.len() < desired {
                let n = pods.len();
                pods.push(series(&format!("shop-{n}"), "app", minutes));
                live.push(n);
            }
        } else if desired < live.len() {
            // Scale-down stabilization: 10 minutes below the current count.
            let since = *below_since.get_or_insert(i);
            if i - since >= 10 {
                live.truncate(desired);
                below_since = None;
            }
        } else {
            below_since = None;
        }
        let per_pod = total / live.len() as f64;
        for &p in &live {
            let cpu = per_pod * jitter(rng, 0.08);
            if let Some(s) = pods.get_mut(p) {
                s.cpu_cores[i] = cpu;
                s.memory_bytes[i] = (380.0 + 120.0 * cpu / PER_POD) * MIB * jitter(rng, 0.01);
            }
        }
    }
    t.series = pods;
    t
}
