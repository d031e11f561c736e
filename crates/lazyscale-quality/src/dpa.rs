//! The Datadog Pod Autoscaler's published vertical method (DataDog/documentation
//! `containers/autoscaling/_index.md`, as summarized in the project's DPA system notes §8), implemented
//! for this harness:
//!
//! | resource | Burstable request | Burstable limit | Guaranteed (request = limit) |
//! |---|---|---|---|
//! | memory | p95 + 10 % | max peak + 5 % | max peak + 5 %, +20 % after an OOM kill |
//! | CPU | p90 + 10 % | p95 + 5 % (only if the container has a CPU limit) | p95 + 5 % |
//!
//! History: the last 8 days of samples of every pod; percentiles use decaying weights. The half-life
//! is not published: 24 h (the VPA's) is assumed. After each OOM kill the memory limit is raised by a
//! further 20 % (the ratchet). The documentation computes the CPU percentile "relative to the current
//! request"; with a stable request that is the percentile of usage, which is what is used here.
//!
//! Percentiles come from 1 % buckets kept per 6-hour slot, so the window slides in 6-hour steps and the
//! value is known within 1 %.

use std::collections::BTreeMap;

const WINDOW_SECS: i64 = 8 * 86_400;
const SLOT_SECS: i64 = 6 * 3600;
const SLOTS: usize = (WINDOW_SECS / SLOT_SECS) as usize + 1;
const HALF_LIFE_SECS: f64 = 86_400.0;
const RATIO: f64 = 1.01;

/// Bucketed, decaying, windowed samples of one resource.
#[derive(Debug, Clone)]
struct Window {
    first: f64,
    count: usize,
    /// Ring of slots: (slot number, weights, max value).
    slots: Vec<(i64, Vec<f64>, f64)>,
    totals: Vec<f64>,
    origin: Option<i64>,
}

impl Window {
    fn new(first: f64, max: f64) -> Self {
        let count = ((max / first).ln() / RATIO.ln()).ceil() as usize + 2;
        Self {
            first,
            count,
            slots: Vec::new(),
            totals: vec![0.0; count],
            origin: None,
        }
    }

    fn bucket(&self, v: f64) -> usize {
        if !(v.is_finite() && v > self.first) {
            return 0;
        }
        (((v / self.first).ln() / RATIO.ln()).floor() as usize + 1).min(self.count - 1)
    }

    fn upper(&self, i: usize) -> f64 {
        self.first * RATIO.powi(i32::try_from(i).unwrap_or(i32::MAX))
    }

    fn add(&mut self, v: f64, at: i64) {
        let origin = *self.origin.get_or_insert(at);
        let slot = at.div_euclid(SLOT_SECS);
        self.expire(at);
        let w = ((at - origin) as f64 / HALF_LIFE_SECS).exp2();
        let i = self.bucket(v);
        let count = self.count;
        let s = match self.slots.iter_mut().position(|s| s.0 == slot) {
            Some(p) => &mut self.slots[p],
            None => {
                self.slots.push((slot, vec![0.0; count], 0.0));
                let last = self.slots.len() - 1;
                &mut self.slots[last]
            }
        };
        s.1[i] += w;
        s.2 = s.2.max(v);
        self.totals[i] += w;
    }

    /// Drops slots entirely older than the window.
    fn expire(&mut self, at: i64) {
        let oldest = (at - WINDOW_SECS).div_euclid(SLOT_SECS);
        let before = self.slots.len();
        self.slots.retain(|s| s.0 >= oldest);
        if self.slots.len() != before || self.slots.len() > SLOTS {
            self.totals.iter_mut().for_each(|t| *t = 0.0);
            for s in &self.slots {
                for (t, w) in self.totals.iter_mut().zip(&s.1) {
                    *t += w;
                }
            }
        }
    }

    fn percentile(&self, p: f64) -> Option<f64> {
        let total: f64 = self.totals.iter().sum();
        if total <= 0.0 {
            return None;
        }
        let mut sum = 0.0;
        for (i, w) in self.totals.iter().enumerate() {
            sum += w;
            if sum >= p * total {
                return Some(self.upper(i));
            }
        }
        Some(self.upper(self.count - 1))
    }

    fn max(&self) -> Option<f64> {
        self.slots.iter().map(|s| s.2).reduce(f64::max)
    }
}

#[derive(Debug, Clone)]
struct ContainerHistory {
    cpu: Window,
    memory: Window,
    oom_ratchet: f64,
}

/// The DPA method's recommendation for one container: CPU in cores, memory in bytes; `None` limit = no
/// limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpaRecommendation {
    /// CPU request.
    pub cpu_request: f64,
    /// CPU limit.
    pub cpu_limit: Option<f64>,
    /// Memory request.
    pub memory_request: f64,
    /// Memory limit.
    pub memory_limit: f64,
}

/// The DPA method for one workload.
#[derive(Debug, Clone, Default)]
pub struct DpaMethod {
    containers: BTreeMap<String, ContainerHistory>,
}

impl DpaMethod {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    fn history(&mut self, container: &str) -> &mut ContainerHistory {
        self.containers
            .entry(container.to_owned())
            .or_insert_with(|| ContainerHistory {
                cpu: Window::new(0.001, 1000.0),
                memory: Window::new(1024.0 * 1024.0, 1024f64.powi(4)),
                oom_ratchet: 1.0,
            })
    }

    /// A usage sample of `container` (any pod): CPU in cores, memory in bytes.
    pub fn add(&mut self, container: &str, cpu_cores: f64, memory_bytes: f64, at: i64) {
        let h = self.history(container);
        h.cpu.add(cpu_cores, at);
        h.memory.add(memory_bytes, at);
    }

    /// An OOM kill of `container`: the memory limit ratchets up by 20 %.
    pub fn record_oom(&mut self, container: &str) {
        self.history(container).oom_ratchet *= 1.2;
    }

    /// The recommendation for `container`. `guaranteed`: request = limit for both resources;
    /// `cpu_limited`: the container has a CPU limit (else a Burstable container gets none).
    pub fn recommend(
        &self,
        container: &str,
        guaranteed: bool,
        cpu_limited: bool,
    ) -> Option<DpaRecommendation> {
        let h = self.containers.get(container)?;
        let mem_peak = h.memory.max()? * 1.05 * h.oom_ratchet;
        let cpu_p95 = h.cpu.percentile(0.95)? * 1.05;
        if guaranteed {
            return Some(DpaRecommendation {
                cpu_request: cpu_p95,
                cpu_limit: Some(cpu_p95),
                memory_request: mem_peak,
                memory_limit: mem_peak,
            });
        }
        let cpu_request = h.cpu.percentile(0.9)? * 1.10;
        let memory_request = (h.memory.percentile(0.95)? * 1.10).min(mem_peak);
        Some(DpaRecommendation {
            cpu_request,
            // "request > limit → request for both".
            cpu_limit: cpu_limited.then_some(cpu_p95.max(cpu_request)),
            memory_request,
            memory_limit: mem_peak,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_forgets_after_eight_days() {
        let mut d = DpaMethod::new();
        for m in 0..(2 * 1440) {
            d.add("app", 2.0, 2e9, m * 60);
        }
        for m in (2 * 1440)..(11 * 1440) {
            d.add("app", 0.5, 1e9, m * 60);
        }
        let r = d.recommend("app", false, false).unwrap_or_else(|| panic!("none"));
        assert!((r.cpu_request - 0.55).abs() < 0.55 * 0.02, "{r:?}");
        assert!((r.memory_limit - 1.05e9).abs() < 1.05e9 * 0.02, "{r:?}");
        assert!((r.memory_request - 1.1e9).abs() < 1.1e9 * 0.02 || r.memory_request <= r.memory_limit);
    }

    #[test]
    fn oom_ratchets_the_limit() {
        let mut d = DpaMethod::new();
        d.add("app", 1.0, 1e9, 0);
        let before = d.recommend("app", true, true).unwrap_or_else(|| panic!("none"));
        d.record_oom("app");
        let after = d.recommend("app", true, true).unwrap_or_else(|| panic!("none"));
        assert!((after.memory_limit / before.memory_limit - 1.2).abs() < 1e-9);
        assert_eq!(after.memory_request, after.memory_limit);
    }
}
