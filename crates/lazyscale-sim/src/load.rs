//! Load profiles: how much CPU a workload consumes over time and how much memory each of its pods
//! holds. Everything here is a pure function of (profile, time, seed) so runs are reproducible and
//! the shapes can be unit-tested without a cluster.
//!
//! CPU is a *workload total*, shared evenly by the ready replicas (so horizontal scaling changes
//! per-pod usage). Memory per pod is a base, plus a share proportional to the pod's CPU, plus an
//! optional leak that grows with the container's uptime (and restarts after an OOM kill).

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::hash::unit_noise;
use crate::units::{Bytes, Cpu, Dur};

/// The shape of a workload's total CPU demand over time (in cores).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CpuProfile {
    /// A constant demand.
    Constant {
        /// Total CPU of the workload.
        value: Cpu,
    },
    /// Piecewise-constant demand: each step holds from its `at` until the next one.
    Step {
        /// The steps, in any order; before the first one the demand is the first step's value.
        steps: Vec<Step>,
    },
    /// A linear change from `from` to `to` between `start` and `start + duration`.
    Ramp {
        /// Demand before the ramp.
        from: Cpu,
        /// Demand after the ramp.
        to: Cpu,
        /// When the ramp starts.
        #[serde(default)]
        start: Dur,
        /// How long the ramp lasts.
        duration: Dur,
    },
    /// `base + amplitude * sin(2π (t + phase) / period)`, never below zero.
    Sine {
        /// Mean demand.
        base: Cpu,
        /// Half the peak-to-peak swing.
        amplitude: Cpu,
        /// Length of one cycle.
        period: Dur,
        /// Shift of the cycle.
        #[serde(default)]
        phase: Dur,
    },
    /// A day/night cycle between `min` and `max`, peaking at `peak_hour` of a (possibly compressed)
    /// day of length `day`.
    Diurnal {
        /// Demand at the trough.
        min: Cpu,
        /// Demand at the peak.
        max: Cpu,
        /// Length of a simulated day (24h for real time, e.g. 10m for a demo).
        #[serde(default = "default_day")]
        day: Dur,
        /// Hour of the simulated day (0–24) at which the demand peaks.
        #[serde(default = "default_peak_hour")]
        peak_hour: f64,
    },
    /// A base demand with random spikes: each window of `duration` is, with `probability`, a spike
    /// adding `spike` cores. Which windows spike depends only on the seed.
    Spiky {
        /// Demand outside spikes.
        base: Cpu,
        /// Extra demand during a spike.
        spike: Cpu,
        /// Chance that a window is a spike (0–1).
        #[serde(default = "default_spike_probability")]
        probability: f64,
        /// Length of a window.
        #[serde(default = "default_spike_duration")]
        duration: Dur,
    },
}

/// One step of a [`CpuProfile::Step`] profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// When this value starts to hold.
    pub at: Dur,
    /// Total CPU of the workload from then on.
    pub value: Cpu,
}

fn default_day() -> Dur {
    Dur(std::time::Duration::from_secs(86_400))
}
fn default_peak_hour() -> f64 {
    14.0
}
fn default_spike_probability() -> f64 {
    0.1
}
fn default_spike_duration() -> Dur {
    Dur(std::time::Duration::from_secs(30))
}

impl Default for CpuProfile {
    fn default() -> Self {
        CpuProfile::Constant { value: Cpu(0.1) }
    }
}

impl CpuProfile {
    /// Total CPU demand of the workload (cores) at `t` seconds after the simulation started.
    pub fn total_cores(&self, t: f64, seed: u64) -> f64 {
        let v = match self {
            CpuProfile::Constant { value } => value.0,
            CpuProfile::Step { steps } => {
                let mut sorted: Vec<&Step> = steps.iter().collect();
                sorted.sort_by_key(|s| s.at);
                let mut v = sorted.first().map_or(0.0, |s| s.value.0);
                for s in sorted {
                    if s.at.0.as_secs_f64() <= t {
                        v = s.value.0;
                    }
                }
                v
            }
            CpuProfile::Ramp {
                from,
                to,
                start,
                duration,
            } => {
                let d = duration.0.as_secs_f64();
                let x = if d <= 0.0 {
                    if t >= start.0.as_secs_f64() { 1.0 } else { 0.0 }
                } else {
                    ((t - start.0.as_secs_f64()) / d).clamp(0.0, 1.0)
                };
                from.0 + (to.0 - from.0) * x
            }
            CpuProfile::Sine {
                base,
                amplitude,
                period,
                phase,
            } => {
                let p = period.0.as_secs_f64().max(1e-9);
                base.0 + amplitude.0 * (2.0 * PI * (t + phase.0.as_secs_f64()) / p).sin()
            }
            CpuProfile::Diurnal {
                min,
                max,
                day,
                peak_hour,
            } => {
                let d = day.0.as_secs_f64().max(1e-9);
                let hour = (t / d * 24.0).rem_euclid(24.0);
                let x = (1.0 + (2.0 * PI * (hour - peak_hour) / 24.0).cos()) / 2.0;
                min.0 + (max.0 - min.0) * x
            }
            CpuProfile::Spiky {
                base,
                spike,
                probability,
                duration,
            } => {
                let w = duration.0.as_secs_f64().max(1e-3);
                let window = (t / w).floor().max(0.0) as u64;
                if unit_noise(seed, &[0x5b1c, window]) < *probability {
                    base.0 + spike.0
                } else {
                    base.0
                }
            }
        };
        v.max(0.0)
    }
}

/// Memory held by each pod of a workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryProfile {
    /// Memory of an idle pod.
    #[serde(default = "default_mem_base")]
    pub base: Bytes,
    /// Extra memory per core of the pod's CPU usage (the load share).
    #[serde(default)]
    pub per_cpu: Bytes,
    /// A leak: bytes added per second of container uptime (reset when the container restarts).
    #[serde(default)]
    pub leak: Bytes,
}

fn default_mem_base() -> Bytes {
    Bytes(64.0 * 1024.0 * 1024.0)
}

impl Default for MemoryProfile {
    fn default() -> Self {
        Self {
            base: default_mem_base(),
            per_cpu: Bytes(0.0),
            leak: Bytes(0.0),
        }
    }
}

/// The load profile of one workload.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadProfile {
    /// Total CPU demand over time.
    #[serde(default)]
    pub cpu: CpuProfile,
    /// Per-pod memory.
    #[serde(default)]
    pub memory: MemoryProfile,
    /// Relative per-pod, per-second jitter of CPU (0.05 = ±5 %), seeded.
    #[serde(default)]
    pub noise: f64,
}

/// Usage of one pod at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PodUsage {
    /// CPU in cores.
    pub cpu: f64,
    /// Memory in bytes.
    pub memory: f64,
}

impl LoadProfile {
    /// Usage of one pod at `t` seconds: the workload's CPU split over `ready` replicas (at least
    /// one), jittered by `noise` keyed on `pod_key`, and memory from base, CPU share and leak over
    /// `uptime` seconds.
    pub fn pod_usage(&self, t: f64, seed: u64, ready: u32, uptime: f64, pod_key: u64) -> PodUsage {
        let total = self.cpu.total_cores(t, seed);
        let mut cpu = total / f64::from(ready.max(1));
        if self.noise > 0.0 {
            let u = unit_noise(seed, &[pod_key, t.max(0.0) as u64]);
            cpu *= 1.0 + self.noise * (2.0 * u - 1.0);
        }
        let cpu = cpu.max(0.0);
        let memory = self.memory.base.0 + self.memory.per_cpu.0 * cpu + self.memory.leak.0 * uptime.max(0.0);
        PodUsage { cpu, memory }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MI: f64 = 1024.0 * 1024.0;

    fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }

    #[test]
    fn constant_and_step() {
        let c = CpuProfile::Constant { value: Cpu(0.5) };
        assert_eq!(c.total_cores(0.0, 1), 0.5);
        assert_eq!(c.total_cores(1e6, 1), 0.5);
        let s = CpuProfile::Step {
            steps: vec![
                Step {
                    at: secs(60),
                    value: Cpu(2.0),
                },
                Step {
                    at: secs(0),
                    value: Cpu(0.2),
                },
            ],
        };
        assert_eq!(s.total_cores(0.0, 1), 0.2);
        assert_eq!(s.total_cores(59.9, 1), 0.2);
        assert_eq!(s.total_cores(60.0, 1), 2.0);
    }

    #[test]
    fn ramp_interpolates_and_clamps() {
        let r = CpuProfile::Ramp {
            from: Cpu(0.0),
            to: Cpu(1.0),
            start: secs(10),
            duration: secs(100),
        };
        assert_eq!(r.total_cores(0.0, 0), 0.0);
        assert!((r.total_cores(60.0, 0) - 0.5).abs() < 1e-9);
        assert_eq!(r.total_cores(500.0, 0), 1.0);
    }

    #[test]
    fn sine_and_diurnal() {
        let s = CpuProfile::Sine {
            base: Cpu(1.0),
            amplitude: Cpu(0.5),
            period: secs(100),
            phase: secs(0),
        };
        assert!((s.total_cores(0.0, 0) - 1.0).abs() < 1e-9);
        assert!((s.total_cores(25.0, 0) - 1.5).abs() < 1e-9);
        assert!((s.total_cores(75.0, 0) - 0.5).abs() < 1e-9);
        let d = CpuProfile::Diurnal {
            min: Cpu(0.1),
            max: Cpu(1.1),
            day: secs(2400),
            peak_hour: 12.0,
        };
        // 100 s per simulated hour: noon is t=1200, midnight t=0.
        assert!((d.total_cores(1200.0, 0) - 1.1).abs() < 1e-9);
        assert!((d.total_cores(0.0, 0) - 0.1).abs() < 1e-9);
    }

    #[test]
    fn spiky_is_seeded_and_has_the_right_rate() {
        let p = CpuProfile::Spiky {
            base: Cpu(0.2),
            spike: Cpu(1.0),
            probability: 0.25,
            duration: secs(10),
        };
        let a: Vec<f64> = (0..2000).map(|w| p.total_cores(w as f64 * 10.0, 42)).collect();
        let b: Vec<f64> = (0..2000).map(|w| p.total_cores(w as f64 * 10.0, 42)).collect();
        let c: Vec<f64> = (0..2000).map(|w| p.total_cores(w as f64 * 10.0, 43)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let spikes = a.iter().filter(|v| **v > 1.0).count();
        assert!((400..600).contains(&spikes), "{spikes}");
        assert!(a.iter().all(|v| *v == 0.2 || *v == 1.2));
    }

    #[test]
    fn cpu_is_shared_by_ready_replicas_and_memory_follows() {
        let p = LoadProfile {
            cpu: CpuProfile::Constant { value: Cpu(1.2) },
            memory: MemoryProfile {
                base: Bytes(100.0 * MI),
                per_cpu: Bytes(200.0 * MI),
                leak: Bytes(0.0),
            },
            noise: 0.0,
        };
        let u3 = p.pod_usage(0.0, 1, 3, 0.0, 7);
        let u6 = p.pod_usage(0.0, 1, 6, 0.0, 7);
        assert!((u3.cpu - 0.4).abs() < 1e-9);
        assert!((u6.cpu - 0.2).abs() < 1e-9);
        assert!((u3.memory - 180.0 * MI).abs() < 1.0);
        assert!((u6.memory - 140.0 * MI).abs() < 1.0);
        // No ready replica yet: the first one takes it all.
        assert!((p.pod_usage(0.0, 1, 0, 0.0, 7).cpu - 1.2).abs() < 1e-9);
    }

    #[test]
    fn leak_grows_with_uptime_and_noise_is_bounded() {
        let p = LoadProfile {
            cpu: CpuProfile::Constant { value: Cpu(1.0) },
            memory: MemoryProfile {
                base: Bytes(10.0 * MI),
                per_cpu: Bytes(0.0),
                leak: Bytes(MI),
            },
            noise: 0.1,
        };
        assert!((p.pod_usage(5.0, 1, 1, 60.0, 1).memory - 70.0 * MI).abs() < 1.0);
        for t in 0..200 {
            let u = p.pod_usage(t as f64, 9, 1, 0.0, 3);
            assert!(u.cpu >= 0.9 && u.cpu <= 1.1);
            assert_eq!(u, p.pod_usage(t as f64, 9, 1, 0.0, 3));
        }
    }
}
