//! The in-place path, planned without I/O: which pods to resize now, which to evict (under the disruption
//! budget and the eviction rate limit), when to fall back to a rollout, and the memory of infeasible
//! attempts.
//!
//! [`plan`] over one workload's pods:
//!
//! - a live pod whose rec-id differs and that has no resize pending is resized through `pods/resize`
//!   (then its rec-id is patched), unless the new memory limit is below its current usage (it waits; never
//!   shrink a limit under a running container);
//! - pods whose resize is `Infeasible`, in `Error`, whose rec-id patch failed, or `Deferred` for at least
//!   `resizePendingPeriod` are eviction candidates, except pods annotated
//!   `cluster-autoscaler.kubernetes.io/safe-to-evict: "false"` or `karpenter.sh/do-not-disrupt: "true"`
//!   (never evicted);
//! - candidates are evicted at most `ceil(budget % × pods)` (at least 1) disrupted at once — pods not
//!   ready or terminating count as disrupted — and at most as many as the eviction rate limit allows;
//!   the caller stops at the first PDB refusal;
//! - `rolloutFallbackDelay` after the first resize of this rec-id without reaching every pod, fall back
//!   to a rollout.
//!
//! A pod counts as scaled once its rec-id matches, the kubelet reports the spec's resources and no resize
//! is pending or in progress.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::constraints::{Resource, Resources, VerticalPlan};

/// Default `resizePendingPeriod`.
pub const RESIZE_PENDING_PERIOD: Duration = Duration::from_secs(600);
/// Default `rolloutFallbackDelay`.
pub const ROLLOUT_FALLBACK_DELAY: Duration = Duration::from_secs(1200);
/// Default disruption budget: percent of a workload's pods disrupted at once.
pub const DISRUPTION_PERCENT: u32 = 15;

/// The resize state of a pod from its `PodResizePending` / `PodResizeInProgress` conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResizeState {
    /// No resize pending or in progress.
    Idle,
    /// `PodResizeInProgress` without error.
    InProgress,
    /// `PodResizeInProgress` with reason `Error`.
    Error,
    /// `PodResizePending` `Deferred`, for this long so far.
    Deferred(Duration),
    /// `PodResizePending` `Infeasible` (or another pending reason).
    Infeasible,
}

/// One pod as the in-place planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodInPlace {
    /// Its rec-id annotation is the current one.
    pub rec_id_matches: bool,
    /// The kubelet reports the spec's resources for every container.
    pub applied: bool,
    /// Resize conditions.
    pub state: ResizeState,
    /// Being deleted.
    pub terminating: bool,
    /// `Ready`.
    pub ready: bool,
    /// Must never be evicted (safe-to-evict false / do-not-disrupt true).
    pub protected: bool,
    /// The rec-id patch after its resize failed.
    pub patch_failed: bool,
    /// The plan's memory limit is below a container's current usage.
    pub below_usage: bool,
}

/// Timers and budget of the in-place path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InPlaceSettings {
    /// How long a `Deferred` resize may wait before the pod is evicted.
    pub resize_pending_period: Duration,
    /// How long after the first resize the path falls back to a rollout.
    pub rollout_fallback_delay: Duration,
    /// Percent of the pods that may be disrupted at once.
    pub disruption_percent: u32,
}

impl Default for InPlaceSettings {
    fn default() -> Self {
        Self {
            resize_pending_period: RESIZE_PENDING_PERIOD,
            rollout_fallback_delay: ROLLOUT_FALLBACK_DELAY,
            disruption_percent: DISRUPTION_PERCENT,
        }
    }
}

/// What the planner decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InPlacePlan {
    /// Indexes of the pods to resize now.
    pub resize: Vec<usize>,
    /// Indexes of the pods to evict now, in order (stop at the first refusal).
    pub evict: Vec<usize>,
    /// Live pods at the rec-id.
    pub scaled: usize,
    /// Live pods.
    pub live: usize,
    /// Fall back to a rollout now.
    pub fallback: bool,
    /// Eviction candidates left alone because they are protected.
    pub protected: usize,
    /// Pods left alone because the new memory limit is below their usage.
    pub below_usage: usize,
}

impl InPlacePlan {
    /// Every live pod is at the rec-id.
    pub fn done(&self) -> bool {
        self.scaled == self.live
    }
}

/// The largest number of pods out of `pods` that may be disrupted at once under `percent`: at least 1.
pub fn disruption_budget(pods: usize, percent: u32) -> usize {
    (pods * percent as usize).div_ceil(100).max(1)
}

/// Plans one round (see the module documentation). `started_ago`: time since the first resize of this
/// rec-id (`None` before it); `eviction_tokens`: evictions the rate limit allows now.
pub fn plan(
    pods: &[PodInPlace],
    settings: &InPlaceSettings,
    started_ago: Option<Duration>,
    eviction_tokens: usize,
) -> InPlacePlan {
    let mut out = InPlacePlan::default();
    let mut candidates = Vec::new();
    let mut disrupted = 0;
    for (i, p) in pods.iter().enumerate() {
        if p.terminating {
            disrupted += 1;
            continue;
        }
        out.live += 1;
        if !p.ready {
            disrupted += 1;
        }
        if p.rec_id_matches && p.applied && p.state == ResizeState::Idle {
            out.scaled += 1;
            continue;
        }
        let evictable = match p.state {
            ResizeState::Infeasible | ResizeState::Error => true,
            ResizeState::Deferred(d) => d >= settings.resize_pending_period,
            ResizeState::Idle | ResizeState::InProgress => p.patch_failed,
        };
        if evictable {
            if p.protected {
                out.protected += 1;
            } else {
                candidates.push(i);
            }
            continue;
        }
        if !p.rec_id_matches && p.state == ResizeState::Idle {
            if p.below_usage {
                out.below_usage += 1;
            } else {
                out.resize.push(i);
            }
        }
    }
    let budget = disruption_budget(
        out.live + pods.iter().filter(|p| p.terminating).count(),
        settings.disruption_percent,
    );
    let allowed = budget.saturating_sub(disrupted).min(eviction_tokens);
    out.evict = candidates.into_iter().take(allowed).collect();
    out.fallback = !out.done() && started_ago.is_some_and(|a| a >= settings.rollout_fallback_delay);
    out
}

/// Requests found infeasible per container: a recommendation at or above one of them is not tried in place
/// again until the recommendation drops below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Infeasible(BTreeMap<String, Resources>);

impl Infeasible {
    /// Remembers the requests of `plan` as infeasible.
    pub fn record(&mut self, plan: &VerticalPlan) {
        for c in &plan.containers {
            let e = self.0.entry(c.name.clone()).or_default();
            for r in Resource::ALL {
                if let Some(v) = c.requests.get(r) {
                    e.set(r, Some(e.get(r).map_or(v, |old| old.min(v))));
                }
            }
        }
    }

    /// Forgets the attempts `plan` drops below, then tells whether it is still blocked (some request at or
    /// above a remembered infeasible one).
    pub fn check(&mut self, plan: &VerticalPlan) -> bool {
        let mut blocked = false;
        for c in &plan.containers {
            let Some(e) = self.0.get_mut(&c.name) else {
                continue;
            };
            for r in Resource::ALL {
                if let (Some(bad), Some(want)) = (e.get(r), c.requests.get(r)) {
                    if want < bad {
                        e.set(r, None);
                    } else {
                        blocked = true;
                    }
                }
            }
        }
        self.0.retain(|_, e| !e.is_empty());
        blocked
    }

    /// No attempt remembered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A token bucket: `burst` evictions at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    per_minute: f64,
    burst: f64,
    tokens: f64,
    at: Duration,
}

impl RateLimit {
    /// A full bucket at time `now` (any monotonic origin).
    pub fn new(per_minute: u32, burst: u32, now: Duration) -> Self {
        Self {
            per_minute: f64::from(per_minute),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            at: now,
        }
    }

    fn refill(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_minute / 60.0).min(self.burst);
        self.at = self.at.max(now);
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Duration) -> usize {
        self.refill(now);
        self.tokens.floor() as usize
    }

    /// Takes one token at `now`; false when none is left.
    pub fn take(&mut self, now: Duration) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constraints::{ContainerPlan, LimitAction};
    use proptest::prelude::*;

    fn pod() -> PodInPlace {
        PodInPlace {
            rec_id_matches: false,
            applied: true,
            state: ResizeState::Idle,
            terminating: false,
            ready: true,
            protected: false,
            patch_failed: false,
            below_usage: false,
        }
    }

    #[test]
    fn resizes_what_differs_and_counts_what_is_done() {
        let done = PodInPlace {
            rec_id_matches: true,
            ..pod()
        };
        let resizing = PodInPlace {
            rec_id_matches: true,
            state: ResizeState::InProgress,
            ..pod()
        };
        let not_applied = PodInPlace {
            rec_id_matches: true,
            applied: false,
            ..pod()
        };
        let p = plan(
            &[pod(), done, resizing, not_applied],
            &InPlaceSettings::default(),
            None,
            10,
        );
        assert_eq!(p.resize, vec![0]);
        assert_eq!((p.scaled, p.live), (1, 4));
        assert!(p.evict.is_empty());
        assert!(!p.fallback);
    }

    #[test]
    fn evicts_infeasible_error_failed_and_long_deferred_pods() {
        let s = InPlaceSettings {
            disruption_percent: 100,
            ..InPlaceSettings::default()
        };
        let pods = [
            PodInPlace {
                state: ResizeState::Infeasible,
                ..pod()
            },
            PodInPlace {
                state: ResizeState::Error,
                ..pod()
            },
            PodInPlace {
                patch_failed: true,
                ..pod()
            },
            PodInPlace {
                state: ResizeState::Deferred(Duration::from_secs(599)),
                ..pod()
            },
            PodInPlace {
                state: ResizeState::Deferred(Duration::from_secs(600)),
                ..pod()
            },
            PodInPlace {
                state: ResizeState::Infeasible,
                protected: true,
                ..pod()
            },
        ];
        let p = plan(&pods, &s, None, 10);
        assert_eq!(p.evict, vec![0, 1, 2, 4]);
        assert_eq!(p.protected, 1);
        assert!(p.resize.is_empty(), "pending pods are not resized again: {p:?}");
    }

    #[test]
    fn the_budget_and_the_rate_limit_bound_evictions() {
        let bad = PodInPlace {
            state: ResizeState::Infeasible,
            ..pod()
        };
        let pods = vec![bad; 20];
        // 15 % of 20 = 3
        assert_eq!(plan(&pods, &InPlaceSettings::default(), None, 10).evict.len(), 3);
        assert_eq!(plan(&pods, &InPlaceSettings::default(), None, 2).evict.len(), 2);
        let mut busy = pods.clone();
        busy[19].ready = false;
        busy[18].terminating = true;
        assert_eq!(plan(&busy, &InPlaceSettings::default(), None, 10).evict.len(), 1);
        // a single pod can still be handled
        assert_eq!(
            plan(&pods[..1], &InPlaceSettings::default(), None, 10)
                .evict
                .len(),
            1
        );
        assert_eq!(disruption_budget(100, 15), 15);
        assert_eq!(disruption_budget(4, 15), 1);
    }

    #[test]
    fn never_shrinks_below_usage_and_falls_back_after_the_delay() {
        let low = PodInPlace {
            below_usage: true,
            ..pod()
        };
        let p = plan(
            &[low],
            &InPlaceSettings::default(),
            Some(Duration::from_secs(100)),
            1,
        );
        assert!(p.resize.is_empty());
        assert_eq!(p.below_usage, 1);
        assert!(!p.fallback);
        let p = plan(
            &[low],
            &InPlaceSettings::default(),
            Some(ROLLOUT_FALLBACK_DELAY),
            1,
        );
        assert!(p.fallback);
        let done = PodInPlace {
            rec_id_matches: true,
            ..pod()
        };
        assert!(
            !plan(
                &[done],
                &InPlaceSettings::default(),
                Some(ROLLOUT_FALLBACK_DELAY),
                1
            )
            .fallback
        );
    }

    fn plan_of(mem: u64) -> VerticalPlan {
        VerticalPlan {
            containers: vec![ContainerPlan {
                name: "app".into(),
                requests: Resources {
                    cpu_millicores: None,
                    memory_bytes: Some(mem),
                },
                cpu_limit: LimitAction::Untouched,
                memory_limit: LimitAction::Untouched,
                gomemlimit: None,
            }],
            limited: vec![],
            changed: false,
            version: format!("{mem}"),
        }
    }

    #[test]
    fn infeasible_attempts_are_retried_only_below_them() {
        let mut memory = Infeasible::default();
        assert!(!memory.check(&plan_of(100)));
        memory.record(&plan_of(100));
        assert!(memory.check(&plan_of(100)));
        assert!(memory.check(&plan_of(150)));
        assert!(!memory.check(&plan_of(99)));
        assert!(memory.is_empty());
        assert!(
            !memory.check(&plan_of(150)),
            "forgotten once the recommendation dropped below"
        );
    }

    #[test]
    fn rate_limit_refills() {
        let mut r = RateLimit::new(6, 2, Duration::ZERO);
        assert!(r.take(Duration::ZERO));
        assert!(r.take(Duration::ZERO));
        assert!(!r.take(Duration::ZERO));
        assert!(!r.take(Duration::from_secs(9)));
        assert!(r.take(Duration::from_secs(10)));
        assert_eq!(r.available(Duration::from_secs(1000)), 2);
    }

    fn state() -> impl Strategy<Value = ResizeState> {
        prop_oneof![
            Just(ResizeState::Idle),
            Just(ResizeState::InProgress),
            Just(ResizeState::Error),
            Just(ResizeState::Infeasible),
            (0u64..1200).prop_map(|s| ResizeState::Deferred(Duration::from_secs(s))),
        ]
    }

    fn arb_pod() -> impl Strategy<Value = PodInPlace> {
        (any::<[bool; 7]>(), state()).prop_map(|(b, state)| PodInPlace {
            rec_id_matches: b[0],
            applied: b[1],
            state,
            terminating: b[2],
            ready: b[3],
            protected: b[4],
            patch_failed: b[5],
            below_usage: b[6],
        })
    }

    proptest! {
        /// Protected, terminating and below-usage pods are never evicted or resized wrongly; evictions
        /// never exceed the budget or the tokens; a pod is never both resized and evicted.
        #[test]
        fn plans_are_safe(pods in proptest::collection::vec(arb_pod(), 0..40), percent in 1u32..100, tokens in 0usize..10) {
            let s = InPlaceSettings { disruption_percent: percent, ..InPlaceSettings::default() };
            let p = plan(&pods, &s, None, tokens);
            prop_assert!(p.evict.len() <= tokens);
            prop_assert!(p.evict.len() <= disruption_budget(pods.len(), percent));
            for &i in &p.evict {
                prop_assert!(!pods[i].protected && !pods[i].terminating);
                prop_assert!(!p.resize.contains(&i));
            }
            for &i in &p.resize {
                prop_assert!(!pods[i].below_usage && !pods[i].terminating && !pods[i].rec_id_matches);
            }
            prop_assert!(p.scaled <= p.live);
        }
    }
}
