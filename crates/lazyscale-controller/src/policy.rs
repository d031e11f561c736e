//! The horizontal scaling policy: from a recommendation and the current replica count to the replica
//! count to apply, step by step, each step recorded for `explain`.
//!
//! In order (dpa-system §2.5):
//! 1. a current count outside `[minReplicas (default 1), maxReplicas]` snaps to the nearest bound at
//!    once (no stabilization, no rules);
//! 2. stabilization over the recommendation history, as in the Kubernetes HPA: `up` is the smallest
//!    recommendation in effect during the scale-up window, `down` the largest during the scale-down
//!    window (both including the new one), and the result is the current count clamped to `[up, down]`;
//! 3. the bounds `[min, max]` (`LimitedByConstraint`);
//! 4. for a local recommendation, `fallback.horizontal.direction` (`FallbackRestricted`);
//! 5. the scale-up / scale-down rules over the recent actions: per rule the count at the start of its
//!    period is `current − added + removed` (up) or `current + removed − added` (down), and the limit
//!    is `start + pods`, `ceil(start · (1 + percent/100))`, `start − pods` or
//!    `floor(start · (1 − percent/100))`; strategy `Max` takes the rule allowing the largest change,
//!    `Min` the smallest, `Disabled` forbids the direction (`PolicyRestricted`). A limit never goes
//!    tighter than the current count (`LimitedByScalingBehavior`, with a requeue when the oldest
//!    limiting action leaves its period);
//! 6. `Preview` mode acts on nothing (`PolicyRestricted`).
//!
//! The history is kept as change points: a recommendation is recorded only when it differs from the
//! previous one, and the value in effect at the start of a window is the last change point before it.
//! That gives the same windows as recording every recommendation, without a status write per period.

use std::fmt;

use lazyscale_api::consts::conditions::reasons;
use lazyscale_api::{
    ApplyMode, DatadogPodAutoscalerSpec, FallbackDirection, ScalingPolicy, ScalingRuleType,
    ScalingStrategySelect,
};

use crate::time::Millis;

/// Longest stabilization window taken into account (the CRD allows 3600 s).
pub const MAX_WINDOW: Millis = 3_600_000;

/// One scaling rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Pods or percent.
    pub kind: ScalingRuleType,
    /// Change allowed per period.
    pub value: i32,
    /// Period length.
    pub period: Millis,
}

/// The policy of one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectionPolicy {
    /// Which rule wins (`Max` when unset).
    pub select: ScalingStrategySelect,
    /// Rules; none means unlimited.
    pub rules: Vec<Rule>,
    /// Stabilization window.
    pub window: Millis,
}

impl Default for DirectionPolicy {
    fn default() -> Self {
        Self {
            select: ScalingStrategySelect::Max,
            rules: Vec::new(),
            window: 0,
        }
    }
}

impl DirectionPolicy {
    fn from_api(p: Option<&ScalingPolicy>) -> Self {
        let Some(p) = p else {
            return Self::default();
        };
        Self {
            select: p.strategy.unwrap_or(ScalingStrategySelect::Max),
            rules: p
                .rules
                .iter()
                .flatten()
                .map(|r| Rule {
                    kind: r.type_,
                    value: r.value.max(0),
                    period: Millis::from(r.period_seconds.max(1)) * 1000,
                })
                .collect(),
            window: (Millis::from(p.stabilization_window_seconds.unwrap_or(0).max(0)) * 1000).min(MAX_WINDOW),
        }
    }
}

/// Everything of a DPA spec the policy uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Lower bound (default 1).
    pub min: i32,
    /// Upper bound, when set.
    pub max: Option<i32>,
    /// Scale-up policy.
    pub up: DirectionPolicy,
    /// Scale-down policy.
    pub down: DirectionPolicy,
    /// `Apply` (act) or `Preview` (record only).
    pub mode: ApplyMode,
    /// Directions allowed to local recommendations.
    pub fallback: FallbackDirection,
}

impl Policy {
    /// The policy of a spec.
    pub fn from_spec(spec: &DatadogPodAutoscalerSpec) -> Self {
        let c = spec.constraints.as_ref();
        Self {
            min: c.and_then(|c| c.min_replicas).unwrap_or(1).max(1),
            max: c.and_then(|c| c.max_replicas),
            up: DirectionPolicy::from_api(spec.apply_policy.scale_up.as_ref()),
            down: DirectionPolicy::from_api(spec.apply_policy.scale_down.as_ref()),
            mode: spec.apply_policy.mode,
            fallback: spec.fallback.horizontal.direction,
        }
    }

    /// The longest stabilization window of both directions.
    pub fn longest_window(&self) -> Millis {
        self.up.window.max(self.down.window)
    }
}

/// A past recommendation (a change point of the history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PastRecommendation {
    /// When it was made.
    pub time: Millis,
    /// Replicas recommended.
    pub replicas: i32,
}

/// A past scaling action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PastAction {
    /// When it happened.
    pub time: Millis,
    /// Replicas before.
    pub from: i32,
    /// Replicas after.
    pub to: i32,
}

/// Why a decision is limited or restricted: a condition reason and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// One of [`reasons`].
    pub reason: &'static str,
    /// For humans (stable for the same inputs: no times).
    pub message: String,
}

/// One policy step that changed the replica count (or stopped the action).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Step name: `bounds`, `stabilization`, `constraints`, `fallback`, `rules`, `mode`.
    pub name: &'static str,
    /// Count before the step.
    pub before: i32,
    /// Count after the step.
    pub after: i32,
    /// What happened.
    pub detail: String,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} -> {} ({})",
            self.name, self.before, self.after, self.detail
        )
    }
}

/// The outcome of the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Current replica count.
    pub current: i32,
    /// The recommendation the policy started from.
    pub recommended: i32,
    /// Replica count the policy arrives at (before the mode and direction restrictions: what Preview
    /// would apply).
    pub desired: i32,
    /// Whether to write `desired` to the target now.
    pub scale: bool,
    /// Set when bounds or rules changed the count.
    pub limited: Option<Limit>,
    /// Set when the mode, a `Disabled` strategy or the fallback direction stops the action.
    pub restricted: Option<Limit>,
    /// Steps that changed something.
    pub steps: Vec<Step>,
    /// When rules limited the count: come back after this long.
    pub requeue_after: Option<Millis>,
}

/// Applies the policy. `history` are past recommendations (oldest first, not including this one),
/// `actions` past scaling actions; `local` says the recommendation comes from the local recommender.
pub fn decide(
    now: Millis,
    current: i32,
    recommended: i32,
    local: bool,
    policy: &Policy,
    history: &[PastRecommendation],
    actions: &[PastAction],
) -> Decision {
    let mut d = Decision {
        current,
        recommended,
        desired: recommended,
        scale: false,
        limited: None,
        restricted: None,
        steps: Vec::new(),
        requeue_after: None,
    };
    let max = policy.max.unwrap_or(i32::MAX).max(policy.min);
    let bounds = |v: i32| v.clamp(policy.min, max);

    if current < policy.min || current > max {
        // 1. out of bounds: snap at once
        let to = bounds(current);
        d.desired = to;
        d.steps.push(Step {
            name: "bounds",
            before: recommended,
            after: to,
            detail: format!(
                "current {current} outside [{}, {}]: snap to the bound",
                policy.min,
                fmt_max(policy.max)
            ),
        });
        d.limited = Some(Limit {
            reason: reasons::LIMITED_BY_CONSTRAINT,
            message: format!(
                "current replicas {current} outside [{}, {}]",
                policy.min,
                fmt_max(policy.max)
            ),
        });
    } else {
        // 2. stabilization
        let up = in_window(now, policy.up.window, history)
            .chain([recommended])
            .min()
            .unwrap_or(recommended);
        let down = in_window(now, policy.down.window, history)
            .chain([recommended])
            .max()
            .unwrap_or(recommended);
        let stabilized = current.max(up).min(down);
        if stabilized != recommended {
            d.steps.push(Step {
                name: "stabilization",
                before: recommended,
                after: stabilized,
                detail: format!(
                    "recommendations in the windows (up {} s, down {} s) range over [{up}, {down}]",
                    policy.up.window / 1000,
                    policy.down.window / 1000
                ),
            });
        }
        d.desired = stabilized;
        // 3. constraints
        let bounded = bounds(stabilized);
        if bounded != stabilized {
            d.steps.push(Step {
                name: "constraints",
                before: stabilized,
                after: bounded,
                detail: format!("bounds [{}, {}]", policy.min, fmt_max(policy.max)),
            });
            d.limited = Some(Limit {
                reason: reasons::LIMITED_BY_CONSTRAINT,
                message: format!(
                    "desired replicas {stabilized} limited to {bounded} by [{}, {}]",
                    policy.min,
                    fmt_max(policy.max)
                ),
            });
        }
        d.desired = bounded;
        // 4. fallback direction
        if local && d.desired != current {
            let up = d.desired > current;
            let allowed = match policy.fallback {
                FallbackDirection::All => true,
                FallbackDirection::ScaleUp => up,
                FallbackDirection::ScaleDown => !up,
            };
            if !allowed {
                d.steps.push(Step {
                    name: "fallback",
                    before: d.desired,
                    after: current,
                    detail: format!("local recommendations may only {:?}", policy.fallback),
                });
                d.restricted = Some(Limit {
                    reason: reasons::FALLBACK_RESTRICTED,
                    message: format!(
                        "fallback direction {:?} does not allow scaling {} to {}",
                        policy.fallback,
                        if up { "up" } else { "down" },
                        d.desired
                    ),
                });
                d.desired = current;
            }
        }
        // 5. rules
        if d.desired != current {
            rules(now, current, policy, actions, &mut d);
        }
    }
    // 6. mode
    if d.desired != current && d.restricted.is_none() && policy.mode == ApplyMode::Preview {
        d.steps.push(Step {
            name: "mode",
            before: d.desired,
            after: current,
            detail: "Preview: recorded, not applied".into(),
        });
        d.restricted = Some(Limit {
            reason: reasons::POLICY_RESTRICTED,
            message: "apply mode is Preview".into(),
        });
    }
    d.scale = d.desired != current && d.restricted.is_none();
    d
}

fn fmt_max(max: Option<i32>) -> String {
    max.map_or_else(|| "unbounded".into(), |m| m.to_string())
}

/// Recommendations in effect during `[now − window, now]`: those made in the window and the last one
/// before it. Nothing when the window is 0.
fn in_window(now: Millis, window: Millis, history: &[PastRecommendation]) -> impl Iterator<Item = i32> + '_ {
    let start = now - window;
    let first_inside = history.partition_point(|r| r.time < start);
    let from = first_inside.saturating_sub(1);
    history[from..]
        .iter()
        .filter(move |_| window > 0)
        .map(|r| r.replicas)
}

fn rules(now: Millis, current: i32, policy: &Policy, actions: &[PastAction], d: &mut Decision) {
    let up = d.desired > current;
    let p = if up { &policy.up } else { &policy.down };
    if p.select == ScalingStrategySelect::Disabled {
        d.steps.push(Step {
            name: "rules",
            before: d.desired,
            after: current,
            detail: format!("scale-{} strategy is Disabled", if up { "up" } else { "down" }),
        });
        d.restricted = Some(Limit {
            reason: reasons::POLICY_RESTRICTED,
            message: format!(
                "scale-{} is disabled by the apply policy",
                if up { "up" } else { "down" }
            ),
        });
        d.desired = current;
        return;
    }
    if p.rules.is_empty() {
        return;
    }
    let mut limit: Option<i64> = None;
    let mut expiry: Option<Millis> = None;
    for r in &p.rules {
        let cutoff = now - r.period;
        let (mut added, mut removed) = (0i64, 0i64);
        for a in actions.iter().filter(|a| a.time > cutoff) {
            let change = i64::from(a.to) - i64::from(a.from);
            if change > 0 {
                added += change;
            } else {
                removed -= change;
            }
            if (up && change > 0) || (!up && change < 0) {
                let e = a.time + r.period;
                expiry = Some(expiry.map_or(e, |x: Millis| x.min(e)));
            }
        }
        let v = i64::from(r.value);
        let proposed = if up {
            let start = i64::from(current) - added + removed;
            match r.kind {
                ScalingRuleType::Pods => start + v,
                ScalingRuleType::Percent => (start as f64 * (1.0 + v as f64 / 100.0)).ceil() as i64,
            }
        } else {
            let start = i64::from(current) + removed - added;
            match r.kind {
                ScalingRuleType::Pods => start - v,
                ScalingRuleType::Percent => (start as f64 * (1.0 - v as f64 / 100.0)).floor() as i64,
            }
        };
        // Max picks the largest change: the highest limit up, the lowest down.
        let take_higher = up == (p.select == ScalingStrategySelect::Max);
        limit = Some(match limit {
            None => proposed,
            Some(l) if take_higher => l.max(proposed),
            Some(l) => l.min(proposed),
        });
    }
    let Some(limit) = limit else { return };
    let c = i64::from(current);
    let limit = if up { limit.max(c) } else { limit.min(c) };
    let limited = if up {
        i64::from(d.desired) > limit
    } else {
        i64::from(d.desired) < limit
    };
    if limited {
        let to = limit.clamp(0, i64::from(i32::MAX)) as i32;
        d.steps.push(Step {
            name: "rules",
            before: d.desired,
            after: to,
            detail: format!(
                "scale-{} rules ({:?}) allow at most {}",
                if up { "up" } else { "down" },
                p.select,
                to
            ),
        });
        d.limited = Some(Limit {
            reason: reasons::LIMITED_BY_SCALING_BEHAVIOR,
            message: format!(
                "desired replicas {} limited to {to} by the scale-{} rules",
                d.desired,
                if up { "up" } else { "down" }
            ),
        });
        d.desired = to;
        // Come back when the oldest limiting action leaves its period, rounded up to the second.
        d.requeue_after = Some(expiry.map_or(1000, |e| {
            let wait = (e - now).max(1);
            (wait + 999) / 1000 * 1000
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_000_000_000;

    fn policy() -> Policy {
        Policy {
            min: 1,
            max: Some(100),
            up: DirectionPolicy::default(),
            down: DirectionPolicy::default(),
            mode: ApplyMode::Apply,
            fallback: FallbackDirection::All,
        }
    }

    fn rule(kind: ScalingRuleType, value: i32, period_s: i64) -> Rule {
        Rule {
            kind,
            value,
            period: period_s * 1000,
        }
    }

    fn rec(ago_s: i64, replicas: i32) -> PastRecommendation {
        PastRecommendation {
            time: NOW - ago_s * 1000,
            replicas,
        }
    }

    fn act(ago_s: i64, from: i32, to: i32) -> PastAction {
        PastAction {
            time: NOW - ago_s * 1000,
            from,
            to,
        }
    }

    #[test]
    fn unlimited_policy_applies_the_recommendation() {
        let d = decide(NOW, 3, 7, false, &policy(), &[], &[]);
        assert_eq!((d.desired, d.scale), (7, true));
        assert!(d.steps.is_empty() && d.limited.is_none());
        let d = decide(NOW, 3, 3, false, &policy(), &[], &[]);
        assert_eq!((d.desired, d.scale), (3, false));
    }

    /// Kubernetes HPA documentation: scale-up with `Pods 4/60s` and `Percent 100/60s`.
    #[test]
    fn hpa_scale_up_rules_table() {
        let mut p = policy();
        p.up.rules = vec![
            rule(ScalingRuleType::Pods, 4, 60),
            rule(ScalingRuleType::Percent, 100, 60),
        ];
        // (current, recommended, select, actions, want)
        let cases: Vec<(i32, i32, ScalingStrategySelect, Vec<PastAction>, i32)> = vec![
            (3, 50, ScalingStrategySelect::Max, vec![], 7),   // max(3+4, 6)
            (10, 50, ScalingStrategySelect::Max, vec![], 20), // max(14, 20)
            (10, 50, ScalingStrategySelect::Min, vec![], 14), // min(14, 20)
            (3, 5, ScalingStrategySelect::Max, vec![], 5),    // within limits
            // an action 30 s ago used the budget: start = 7 − 4 = 3 → max(7, 6) = 7 = current
            (7, 50, ScalingStrategySelect::Max, vec![act(30, 3, 7)], 7),
            // the action 90 s ago is out of the period
            (7, 50, ScalingStrategySelect::Max, vec![act(90, 3, 7)], 14),
        ];
        for (current, recommended, select, actions, want) in cases {
            p.up.select = select;
            let d = decide(NOW, current, recommended, false, &p, &[], &actions);
            assert_eq!(d.desired, want, "{current} {recommended} {select:?} {actions:?}");
            if want < recommended {
                assert_eq!(
                    d.limited.as_ref().map(|l| l.reason),
                    Some(reasons::LIMITED_BY_SCALING_BEHAVIOR)
                );
                assert!(d.requeue_after.is_some());
            }
        }
    }

    /// Kubernetes HPA documentation: scale-down with `Percent 10/60s` and `Pods 5/60s`.
    #[test]
    fn hpa_scale_down_rules_table() {
        let mut p = policy();
        p.down.rules = vec![
            rule(ScalingRuleType::Percent, 10, 60),
            rule(ScalingRuleType::Pods, 5, 60),
        ];
        let cases: Vec<(i32, i32, ScalingStrategySelect, Vec<PastAction>, i32)> = vec![
            (40, 1, ScalingStrategySelect::Max, vec![], 35), // min(36, 35): largest change
            (40, 1, ScalingStrategySelect::Min, vec![], 36), // smallest change
            (40, 38, ScalingStrategySelect::Max, vec![], 38),
            // removed 5 in the period: start 40 → limit 35 = current → no change
            (35, 1, ScalingStrategySelect::Max, vec![act(10, 40, 35)], 35),
        ];
        for (current, recommended, select, actions, want) in cases {
            p.down.select = select;
            let d = decide(NOW, current, recommended, false, &p, &[], &actions);
            assert_eq!(d.desired, want, "{current} {recommended} {select:?}");
        }
    }

    #[test]
    fn requeue_rounds_up_to_the_second() {
        let mut p = policy();
        p.up.rules = vec![rule(ScalingRuleType::Pods, 1, 60)];
        let actions = [PastAction {
            time: NOW - 30_500,
            from: 1,
            to: 2,
        }];
        let d = decide(NOW, 2, 10, false, &p, &[], &actions);
        assert_eq!(d.desired, 2);
        assert_eq!(d.requeue_after, Some(30_000));
    }

    /// Kubernetes HPA documentation: a scale-down window keeps the highest recommendation of the window.
    #[test]
    fn stabilization_windows() {
        let mut p = policy();
        p.down.window = 300_000;
        let history = [rec(400, 9), rec(200, 5), rec(100, 8)];
        // in effect during the last 300 s: 9 (from before the window), 5, 8 → down = 9
        let d = decide(NOW, 8, 3, false, &p, &history, &[]);
        assert_eq!(d.desired, 8, "kept at current: the window still holds 9");
        assert_eq!(d.steps[0].name, "stabilization");
        // once 9 has left the window (history of change points older than the window but one)
        let history = [rec(900, 9), rec(800, 5), rec(700, 4)];
        let d = decide(NOW, 8, 3, false, &p, &history, &[]);
        assert_eq!(d.desired, 4, "the value in effect at the window start is 4");
        // scale-up window: the lowest recommendation of the window
        let mut p = policy();
        p.up.window = 60_000;
        let d = decide(NOW, 2, 10, false, &p, &[rec(30, 4)], &[]);
        assert_eq!(d.desired, 4);
        let d = decide(NOW, 2, 10, false, &p, &[rec(90, 4)], &[]);
        assert_eq!(d.desired, 4, "4 was in effect at the window start");
        let d = decide(NOW, 2, 10, false, &p, &[rec(90, 4), rec(70, 12)], &[]);
        assert_eq!(d.desired, 10);
    }

    #[test]
    fn bounds_constraints_fallback_and_mode() {
        let mut p = policy();
        p.min = 2;
        p.max = Some(5);
        // out of bounds: snap, rules ignored
        p.down.rules = vec![rule(ScalingRuleType::Pods, 1, 60)];
        let d = decide(NOW, 9, 1, false, &p, &[], &[]);
        assert_eq!((d.desired, d.scale), (5, true));
        assert_eq!(d.limited.map(|l| l.reason), Some(reasons::LIMITED_BY_CONSTRAINT));
        // recommendation above max
        let d = decide(NOW, 3, 12, false, &p, &[], &[]);
        assert_eq!(d.desired, 5);
        assert_eq!(d.limited.map(|l| l.reason), Some(reasons::LIMITED_BY_CONSTRAINT));
        // local recommendation, fallback ScaleUp only
        p.fallback = FallbackDirection::ScaleUp;
        let d = decide(NOW, 4, 3, true, &p, &[], &[]);
        assert_eq!((d.desired, d.scale), (4, false));
        assert_eq!(d.restricted.map(|l| l.reason), Some(reasons::FALLBACK_RESTRICTED));
        let d = decide(NOW, 3, 4, true, &p, &[], &[]);
        assert!(d.scale);
        // Preview
        p.mode = ApplyMode::Preview;
        let d = decide(NOW, 3, 4, true, &p, &[], &[]);
        assert_eq!((d.desired, d.scale), (4, false));
        assert_eq!(d.restricted.map(|l| l.reason), Some(reasons::POLICY_RESTRICTED));
        // Disabled strategy
        p.mode = ApplyMode::Apply;
        p.up.select = ScalingStrategySelect::Disabled;
        let d = decide(NOW, 3, 4, false, &p, &[], &[]);
        assert!(!d.scale);
        assert_eq!(d.restricted.map(|l| l.reason), Some(reasons::POLICY_RESTRICTED));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn arb_rule() -> impl Strategy<Value = Rule> {
            (
                prop_oneof![Just(ScalingRuleType::Pods), Just(ScalingRuleType::Percent)],
                0..200i32,
                1..600i64,
            )
                .prop_map(|(kind, value, p)| rule(kind, value, p))
        }

        fn arb_policy() -> impl Strategy<Value = Policy> {
            (
                1..20i32,
                0..100i32,
                proptest::collection::vec(arb_rule(), 0..3),
                proptest::collection::vec(arb_rule(), 0..3),
                0..600i64,
                0..600i64,
                prop_oneof![
                    Just(ScalingStrategySelect::Max),
                    Just(ScalingStrategySelect::Min),
                    Just(ScalingStrategySelect::Disabled)
                ],
                any::<bool>(),
            )
                .prop_map(|(min, span, up, down, wu, wd, sel, preview)| Policy {
                    min,
                    max: Some(min + span),
                    up: DirectionPolicy {
                        select: sel,
                        rules: up,
                        window: wu * 1000,
                    },
                    down: DirectionPolicy {
                        select: ScalingStrategySelect::Max,
                        rules: down,
                        window: wd * 1000,
                    },
                    mode: if preview {
                        ApplyMode::Preview
                    } else {
                        ApplyMode::Apply
                    },
                    fallback: FallbackDirection::All,
                })
        }

        proptest! {
            #[test]
            fn never_outside_bounds_once_inside(
                p in arb_policy(),
                current in 1..150i32,
                recommended in 0..300i32,
                hist in proptest::collection::vec((0..900i64, 0..300i32), 0..6),
            ) {
                let mut history: Vec<_> = hist.into_iter().map(|(a, r)| rec(a, r)).collect();
                history.sort_by_key(|r| r.time);
                let d = decide(NOW, current, recommended, false, &p, &history, &[]);
                let max = p.max.unwrap_or(i32::MAX);
                if d.scale {
                    prop_assert!(d.desired >= p.min && d.desired <= max, "{d:?}");
                }
                if current >= p.min && current <= max {
                    prop_assert!(d.desired >= p.min && d.desired <= max, "{d:?}");
                }
            }

            #[test]
            fn never_faster_than_the_rules(
                p in arb_policy(),
                current in 1..150i32,
                recommended in 0..300i32,
                past in proptest::collection::vec((1..600i64, 1..150i32, 1..150i32), 0..4),
            ) {
                let actions: Vec<_> = past.into_iter().map(|(a, f, t)| act(a, f, t)).collect();
                let d = decide(NOW, current, recommended, false, &p, &[], &actions);
                let max = p.max.unwrap_or(i32::MAX);
                let inside = current >= p.min && current <= max;
                if d.scale && inside {
                    let dp = if d.desired > current { &p.up } else { &p.down };
                    prop_assert!(dp.select != ScalingStrategySelect::Disabled);
                    // every rule's limit, with the selection, bounds the change
                    let limits: Vec<i64> = dp.rules.iter().map(|r| {
                        let cutoff = NOW - r.period;
                        let (mut add, mut rem) = (0i64, 0i64);
                        for a in actions.iter().filter(|a| a.time > cutoff) {
                            let c = i64::from(a.to - a.from);
                            if c > 0 { add += c } else { rem -= c }
                        }
                        let v = f64::from(r.value);
                        if d.desired > current {
                            let s = i64::from(current) - add + rem;
                            match r.kind {
                                ScalingRuleType::Pods => s + i64::from(r.value),
                                ScalingRuleType::Percent => (s as f64 * (1.0 + v / 100.0)).ceil() as i64,
                            }
                        } else {
                            let s = i64::from(current) + rem - add;
                            match r.kind {
                                ScalingRuleType::Pods => s - i64::from(r.value),
                                ScalingRuleType::Percent => (s as f64 * (1.0 - v / 100.0)).floor() as i64,
                            }
                        }
                    }).collect();
                    if !limits.is_empty() {
                        let loosest_up = limits.iter().copied().max().unwrap_or(0);
                        let loosest_down = limits.iter().copied().min().unwrap_or(0);
                        if d.desired > current {
                            prop_assert!(i64::from(d.desired) <= loosest_up.max(i64::from(current)));
                        } else {
                            prop_assert!(i64::from(d.desired) >= loosest_down.min(i64::from(current)));
                        }
                    }
                }
            }

            #[test]
            fn preview_never_scales(
                mut p in arb_policy(),
                current in 1..150i32,
                recommended in 0..300i32,
            ) {
                p.mode = ApplyMode::Preview;
                let d = decide(NOW, current, recommended, false, &p, &[], &[]);
                prop_assert!(!d.scale);
            }
        }
    }
}
