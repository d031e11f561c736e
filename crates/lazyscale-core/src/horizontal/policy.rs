//! The horizontal scaling policy: from a recommended replica count to the count actually set.
//!
//! [`evaluate`] follows the DPA controller's horizontal path, in order:
//!
//! 1. A target at zero replicas is left alone ([`Restriction::ScalingDisabled`]).
//! 2. A current count outside `[minReplicas, maxReplicas]` is snapped to the nearest bound at once;
//!    stabilization and rules are skipped.
//! 3. Stabilization over the recommendation history, as the Kubernetes HPA does it: the scale-up bound
//!    is the *lowest* recommendation inside the scale-up window, the scale-down bound the *highest* inside
//!    the scale-down window (both including the new one), and the result is the current count clamped
//!    between them. "Inside" means strictly after `now − window`, so a recommendation made exactly at
//!    the window's edge no longer counts, and only recorded recommendations count: after a gap longer
//!    than the window only the new one is left (the HPA's `stabilizeRecommendation` and the DCA's
//!    `stabilizeRecommendations` agree on both). Windows are capped at one hour, the history kept.
//! 4. Clamping to `[minReplicas, maxReplicas]`.
//! 5. For recommendations of the local fallback, the direction must be allowed by
//!    `fallback.horizontal.direction` ([`Restriction::FallbackRestricted`]).
//! 6. The `scaleUp`/`scaleDown` rules. For each rule, the count at the start of its period is the current
//!    count minus the replicas added plus those removed by the actions in `lastActions` within the
//!    period; `Pods` allows that plus (minus) `value`, `Percent` allows `ceil(start·(1+value/100))`
//!    (`floor(start·(1−value/100))`). Strategy `Max` keeps the rule allowing the biggest change, `Min`
//!    the smallest, `Disabled` forbids the direction ([`Restriction::PolicyRestricted`]). The limit never
//!    goes back past the current count. When limited, the decision asks to be re-evaluated when the
//!    oldest action of a rule's period leaves it (a whole period for a rule without one), truncated
//!    to the second plus one second, as the DCA does.
//! 7. `Preview` mode: the decision is computed and recorded, but no action is ever produced.
//!
//! The [`Decision`] carries the final count, the `limitedReason` text, and every [`Step`] that changed
//! the value (raw → stabilized → constrained → rule-limited → mode) for `lazyscale explain`. The caller
//! owns the [`History`] (restored from and persisted to the DPA status) and records each decision in it.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use lazyscale_api::time::{self as wall, Timestamp};

use serde::{Deserialize, Serialize};

use super::{Direction, ValueSource};

/// The longest stabilization window (and so the age of the oldest recommendation kept).
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// How many scaling actions are kept (`status.horizontal.lastActions`). Rules only see these, so a rule
/// whose period holds more than ten actions under-counts; the DPA has the same limit.
pub const MAX_ACTIONS: usize = 10;

/// A bound on the recommendation history besides its age, against a caller evaluating in a tight loop.
pub const MAX_RECOMMENDATIONS: usize = 4096;

/// Whether recommendations are acted on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ApplyMode {
    /// Scale the target.
    #[default]
    Apply,
    /// Compute and record decisions, never act.
    Preview,
}

/// Which rule wins when several apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SelectPolicy {
    /// The rule allowing the biggest change (the default).
    #[default]
    Max,
    /// The rule allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// The unit of a rule's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RuleType {
    /// A number of pods.
    Pods,
    /// A percentage of the count at the start of the period.
    Percent,
}

/// A limit on the change of the replica count over a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRule {
    /// Pods or percent.
    #[serde(rename = "type")]
    pub kind: RuleType,
    /// The change allowed per period (0 forbids the direction for this rule).
    pub value: u32,
    /// The period in seconds (1 to 3600).
    pub period_seconds: u32,
}

impl ScalingRule {
    /// A `Pods` rule.
    pub fn pods(value: u32, period_seconds: u32) -> ScalingRule {
        ScalingRule {
            kind: RuleType::Pods,
            value,
            period_seconds,
        }
    }

    /// A `Percent` rule.
    pub fn percent(value: u32, period_seconds: u32) -> ScalingRule {
        ScalingRule {
            kind: RuleType::Percent,
            value,
            period_seconds,
        }
    }

    fn period(&self) -> Duration {
        Duration::from_secs(u64::from(self.period_seconds))
    }
}

impl fmt::Display for ScalingRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            RuleType::Pods => write!(f, "{} pods per {}s", self.value, self.period_seconds),
            RuleType::Percent => write!(f, "{}% per {}s", self.value, self.period_seconds),
        }
    }
}

/// The policy of one direction (`applyPolicy.scaleUp` or `scaleDown`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScalingPolicy {
    /// Which rule wins; `Max` by default.
    pub strategy: SelectPolicy,
    /// The rules; none means no rate limit.
    pub rules: Vec<ScalingRule>,
    /// The stabilization window in seconds (0 to 3600; 0 by default).
    pub stabilization_window_seconds: u32,
}

impl ScalingPolicy {
    /// The Kubernetes HPA's default scale-up: the larger of 100 % or 4 pods per 15 s, no window.
    pub fn hpa_default_scale_up() -> ScalingPolicy {
        ScalingPolicy {
            strategy: SelectPolicy::Max,
            rules: vec![ScalingRule::percent(100, 15), ScalingRule::pods(4, 15)],
            stabilization_window_seconds: 0,
        }
    }

    /// The Kubernetes HPA's default scale-down: 100 % per 15 s after a 300 s window.
    pub fn hpa_default_scale_down() -> ScalingPolicy {
        ScalingPolicy {
            strategy: SelectPolicy::Max,
            rules: vec![ScalingRule::percent(100, 15)],
            stabilization_window_seconds: 300,
        }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(u64::from(self.stabilization_window_seconds)).min(MAX_WINDOW)
    }
}

/// Directions in which recommendations of the local fallback may scale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FallbackDirection {
    /// Up only (the default).
    #[default]
    ScaleUp,
    /// Down only.
    ScaleDown,
    /// Both.
    All,
}

impl FallbackDirection {
    fn allows(self, d: Direction) -> bool {
        matches!(
            (self, d),
            (_, Direction::None)
                | (FallbackDirection::All, _)
                | (FallbackDirection::ScaleUp, Direction::Up)
                | (FallbackDirection::ScaleDown, Direction::Down)
        )
    }
}

/// Everything of a DPA that shapes horizontal decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Policy {
    /// `constraints.minReplicas` (1 by default; 0 is read as 1).
    pub min_replicas: u32,
    /// `constraints.maxReplicas`, if set.
    pub max_replicas: Option<u32>,
    /// `applyPolicy.mode`.
    pub mode: ApplyMode,
    /// `applyPolicy.scaleUp`.
    pub scale_up: ScalingPolicy,
    /// `applyPolicy.scaleDown`.
    pub scale_down: ScalingPolicy,
    /// `fallback.horizontal.direction`: where local recommendations may go.
    pub fallback_direction: FallbackDirection,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_replicas: 1,
            max_replicas: None,
            mode: ApplyMode::Apply,
            scale_up: ScalingPolicy::default(),
            scale_down: ScalingPolicy::default(),
            fallback_direction: FallbackDirection::ScaleUp,
        }
    }
}

impl Policy {
    fn min(&self) -> u32 {
        self.min_replicas.max(1)
    }

    /// The upper bound; a max below the min is read as the min (validation reports it).
    fn max(&self) -> u32 {
        self.max_replicas.unwrap_or(u32::MAX).max(self.min())
    }
}

/// A recommendation as remembered for stabilization (`status.horizontal.lastRecommendations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimedRecommendation {
    /// When it was evaluated.
    pub at: Timestamp,
    /// The recommended count.
    pub replicas: u32,
}

/// A scaling action (`status.horizontal.lastActions[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingAction {
    /// When the target was scaled.
    pub time: Timestamp,
    /// The count before.
    pub from_replicas: u32,
    /// The count set.
    pub to_replicas: u32,
    /// The raw recommendation.
    pub recommended_replicas: u32,
    /// Why the count set differs from the recommendation, if it does.
    pub limited_reason: Option<String>,
}

/// The recommendations and actions of one autoscaler, bounded: recommendations for [`MAX_WINDOW`] (at
/// most [`MAX_RECOMMENDATIONS`]), the last [`MAX_ACTIONS`] actions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    recommendations: VecDeque<TimedRecommendation>,
    actions: VecDeque<ScalingAction>,
}

// === impl History ===

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// A history restored from the status (oldest first); bounds are enforced.
    pub fn restore(
        recommendations: impl IntoIterator<Item = TimedRecommendation>,
        actions: impl IntoIterator<Item = ScalingAction>,
    ) -> History {
        let mut h = History::new();
        for r in recommendations {
            h.push_recommendation(r);
        }
        for a in actions {
            h.record_action(a);
        }
        h
    }

    /// Remembers a recommendation, and forgets the ones older than [`MAX_WINDOW`] before it.
    pub fn record_recommendation(&mut self, at: Timestamp, replicas: u32) {
        self.push_recommendation(TimedRecommendation { at, replicas });
    }

    fn push_recommendation(&mut self, r: TimedRecommendation) {
        if let Some(cutoff) = wall::sub(r.at, MAX_WINDOW) {
            self.recommendations.retain(|old| old.at > cutoff);
        }
        // A run of one count keeps only its first and its last recommendation: the stabilization asks
        // whether any of a run is within a window (its last is, or none is) and the status shows a
        // run by its first. A DPA steady for the hour of [`MAX_WINDOW`] keeps two entries instead of
        // one per reconcile.
        let n = self.recommendations.len();
        if n >= 2
            && let (Some(before), Some(last)) =
                (self.recommendations.get(n - 2), self.recommendations.get(n - 1))
            && before.replicas == r.replicas
            && last.replicas == r.replicas
            && last.at <= r.at
        {
            self.recommendations[n - 1] = r;
            return;
        }
        if self.recommendations.len() >= MAX_RECOMMENDATIONS {
            self.recommendations.pop_front();
        }
        self.recommendations.push_back(r);
    }

    /// Remembers an action that was carried out, keeping the last [`MAX_ACTIONS`].
    pub fn record_action(&mut self, action: ScalingAction) {
        if self.actions.len() >= MAX_ACTIONS {
            self.actions.pop_front();
        }
        self.actions.push_back(action);
    }

    /// Records a decision once it has been carried out: its recommendation, and its action if any.
    pub fn record(&mut self, decision: &Decision) {
        self.record_recommendation(decision.evaluated_at, decision.recommended_replicas);
        if let Some(action) = &decision.action {
            self.record_action(action.clone());
        }
    }

    /// The remembered recommendations, oldest first.
    pub fn recommendations(&self) -> impl ExactSizeIterator<Item = &TimedRecommendation> {
        self.recommendations.iter()
    }

    /// The remembered actions, oldest first.
    pub fn actions(&self) -> impl ExactSizeIterator<Item = &ScalingAction> {
        self.actions.iter()
    }

    /// The last action.
    pub fn last_action(&self) -> Option<&ScalingAction> {
        self.actions.back()
    }

    /// Approximate heap bytes: both ring buffers at their capacities (in jemalloc size classes) and the
    /// actions' `limited_reason` strings.
    pub fn approx_heap_bytes(&self) -> usize {
        use lazyscale_api::heap::{alloc_bytes, string_bytes};
        alloc_bytes(self.recommendations.capacity() * std::mem::size_of::<TimedRecommendation>())
            + alloc_bytes(self.actions.capacity() * std::mem::size_of::<ScalingAction>())
            + self
                .actions
                .iter()
                .map(|a| a.limited_reason.as_deref().map_or(0, string_bytes))
                .sum::<usize>()
    }
}

/// What one decision is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input {
    /// The evaluation time.
    pub now: Timestamp,
    /// The target's current replica count (scale subresource).
    pub current_replicas: u32,
    /// The recommended count.
    pub recommended_replicas: u32,
    /// Where the recommendation comes from.
    pub source: ValueSource,
}

/// A stage of the decision, in the order they apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stage {
    /// The raw recommendation.
    Recommended,
    /// The stabilization windows.
    Stabilized,
    /// `minReplicas`/`maxReplicas` (including snapping a current count outside them).
    Constrained,
    /// The fallback direction.
    FallbackDirection,
    /// The `scaleUp`/`scaleDown` strategy and rules.
    RuleLimited,
    /// The apply mode (preview) or a target at zero.
    Mode,
}

/// One stage that set or changed the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// The stage.
    pub stage: Stage,
    /// The value after it.
    pub replicas: u32,
    /// Why, in words.
    pub detail: String,
}

/// Why the value was limited (the `HorizontalScalingLimited` condition reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Limit {
    /// By `minReplicas`/`maxReplicas`.
    LimitedByConstraint,
    /// By the scaling rules.
    LimitedByScalingBehavior,
}

/// Why the target is not scaled at all (the `HorizontalAbleToScale` condition reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Restriction {
    /// The target is at zero replicas.
    ScalingDisabled,
    /// A local recommendation in a direction the fallback does not allow.
    FallbackRestricted,
    /// Preview mode, or the direction's strategy is `Disabled`.
    PolicyRestricted,
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// The evaluation time.
    pub evaluated_at: Timestamp,
    /// The current count.
    pub current_replicas: u32,
    /// The raw recommendation.
    pub recommended_replicas: u32,
    /// Where it came from.
    pub source: ValueSource,
    /// The count the policy arrives at before the mode (what preview shows).
    pub desired_replicas: u32,
    /// The count to set: `desired_replicas`, or the current count in preview mode.
    pub final_replicas: u32,
    /// The action to carry out, if the count changes (never in preview mode).
    pub action: Option<ScalingAction>,
    /// Why the desired count differs from the recommendation (`limitedReason`).
    pub limited_reason: Option<String>,
    /// The last limit that applied.
    pub limit: Option<Limit>,
    /// Why the target is not scaled, if it is not.
    pub restriction: Option<Restriction>,
    /// Every stage that set or changed the value, starting with the recommendation.
    pub steps: Vec<Step>,
    /// When to evaluate again because a rule's period frees up.
    pub requeue_after: Option<Duration>,
}

struct Builder {
    value: u32,
    steps: Vec<Step>,
    reasons: Vec<String>,
    limit: Option<Limit>,
    restriction: Option<Restriction>,
    requeue_after: Option<Duration>,
}

impl Builder {
    fn step(&mut self, stage: Stage, replicas: u32, detail: String) {
        if replicas != self.value || stage == Stage::Recommended {
            self.value = replicas;
            self.steps.push(Step {
                stage,
                replicas,
                detail,
            });
        }
    }

    fn limited(&mut self, stage: Stage, replicas: u32, limit: Limit, reason: String) {
        if replicas != self.value {
            self.limit = Some(limit);
            self.reasons.push(reason.clone());
            self.step(stage, replicas, reason);
        }
    }

    fn restricted(&mut self, stage: Stage, replicas: u32, r: Restriction, detail: String) {
        if replicas != self.value {
            self.restriction = Some(r);
            self.step(stage, replicas, detail);
        }
    }
}

/// Decides the replica count for one recommendation.
pub fn evaluate(policy: &Policy, history: &History, input: &Input) -> Decision {
    let current = input.current_replicas;
    let rec = input.recommended_replicas;
    let now = input.now;
    let (min, max) = (policy.min(), policy.max());
    let mut b = Builder {
        value: rec,
        steps: Vec::new(),
        reasons: Vec::new(),
        limit: None,
        restriction: None,
        requeue_after: None,
    };
    b.step(
        Stage::Recommended,
        rec,
        format!("recommended by {}", input.source),
    );

    if current == 0 {
        b.restriction = Some(Restriction::ScalingDisabled);
        b.step(
            Stage::Mode,
            0,
            "the target is scaled to zero: autoscaling is disabled".into(),
        );
    } else if current < min || current > max {
        let bound = current.clamp(min, max);
        let which = if current < min {
            "minReplicas"
        } else {
            "maxReplicas"
        };
        b.limit = Some(Limit::LimitedByConstraint);
        let reason = format!("current replicas {current} outside the bounds: set to {which} {bound}");
        b.reasons.push(reason.clone());
        // Force a step even if the recommendation happened to equal the bound.
        b.value = bound;
        b.steps.push(Step {
            stage: Stage::Constrained,
            replicas: bound,
            detail: reason,
        });
    } else {
        let stabilized = stabilize(policy, history, now, current, rec);
        b.step(Stage::Stabilized, stabilized.0, stabilized.1);

        let v = b.value;
        if v > max {
            b.limited(
                Stage::Constrained,
                max,
                Limit::LimitedByConstraint,
                format!("desired replica count {v} limited by maxReplicas {max}"),
            );
        } else if v < min {
            b.limited(
                Stage::Constrained,
                min,
                Limit::LimitedByConstraint,
                format!("desired replica count {v} limited by minReplicas {min}"),
            );
        }

        let direction = Direction::of(current, b.value);
        if input.source == ValueSource::Local && !policy.fallback_direction.allows(direction) {
            b.restricted(
                Stage::FallbackDirection,
                current,
                Restriction::FallbackRestricted,
                format!(
                    "local fallback recommendations may not scale {direction} (direction {:?})",
                    policy.fallback_direction
                ),
            );
        }

        apply_rules(policy, history, now, current, &mut b);
    }

    let desired = b.value;
    if policy.mode == ApplyMode::Preview && current != 0 {
        b.restricted(
            Stage::Mode,
            current,
            Restriction::PolicyRestricted,
            format!("preview mode: would scale {current} -> {desired}, not applied"),
        );
        if desired == current {
            b.restriction = Some(Restriction::PolicyRestricted);
        }
    }
    let final_replicas = b.value;
    let limited_reason = (!b.reasons.is_empty()).then(|| b.reasons.join("; "));
    let action = (policy.mode == ApplyMode::Apply && current != 0 && final_replicas != current).then(|| {
        ScalingAction {
            time: now,
            from_replicas: current,
            to_replicas: final_replicas,
            recommended_replicas: rec,
            limited_reason: limited_reason.clone(),
        }
    });
    Decision {
        evaluated_at: now,
        current_replicas: current,
        recommended_replicas: rec,
        source: input.source,
        desired_replicas: desired,
        final_replicas,
        action,
        limited_reason,
        limit: b.limit,
        restriction: b.restriction,
        steps: b.steps,
        requeue_after: b.requeue_after,
    }
}

/// Whether a remembered time is inside a window ending now: strictly after `now − window`.
fn within(at: Timestamp, now: Timestamp, window: Duration) -> bool {
    match wall::sub(now, window) {
        Some(cutoff) => at > cutoff,
        None => true,
    }
}

/// The HPA stabilization: the current count clamped between the lowest recommendation of the scale-up
/// window and the highest of the scale-down window.
fn stabilize(policy: &Policy, history: &History, now: Timestamp, current: u32, rec: u32) -> (u32, String) {
    let up_window = policy.scale_up.window();
    let down_window = policy.scale_down.window();
    let mut up = rec;
    let mut down = rec;
    for r in history.recommendations() {
        if !up_window.is_zero() && within(r.at, now, up_window) {
            up = up.min(r.replicas);
        }
        if !down_window.is_zero() && within(r.at, now, down_window) {
            down = down.max(r.replicas);
        }
    }
    let value = current.clamp(up, down);
    let detail = if value > rec {
        format!(
            "scale-down stabilization ({}s): highest recent recommendation {down}",
            down_window.as_secs()
        )
    } else {
        format!(
            "scale-up stabilization ({}s): lowest recent recommendation {up}",
            up_window.as_secs()
        )
    };
    (value, detail)
}

/// The scale events of one direction inside a period: total change and the earliest expiry.
fn changes_within(history: &History, now: Timestamp, period: Duration) -> (u64, u64, Option<Timestamp>) {
    let mut added = 0u64;
    let mut removed = 0u64;
    let mut expiry: Option<Timestamp> = None;
    for a in history.actions() {
        if !within(a.time, now, period) || a.to_replicas == a.from_replicas {
            continue;
        }
        if a.to_replicas > a.from_replicas {
            added += u64::from(a.to_replicas - a.from_replicas);
        } else {
            removed += u64::from(a.from_replicas - a.to_replicas);
        }
        if let Some(e) = wall::add(a.time, period) {
            expiry = Some(expiry.map_or(e, |x| x.min(e)));
        }
    }
    (added, removed, expiry)
}

fn apply_rules(policy: &Policy, history: &History, now: Timestamp, current: u32, b: &mut Builder) {
    let direction = Direction::of(current, b.value);
    let (rules, label) = match direction {
        Direction::None => return,
        Direction::Up => (&policy.scale_up, "scale-up"),
        Direction::Down => (&policy.scale_down, "scale-down"),
    };
    if rules.strategy == SelectPolicy::Disabled {
        b.restricted(
            Stage::RuleLimited,
            current,
            Restriction::PolicyRestricted,
            format!("{label} is disabled by the policy"),
        );
        return;
    }
    if rules.rules.is_empty() {
        return;
    }
    let mut limit: Option<(u64, &ScalingRule)> = None;
    let mut expiry: Option<Timestamp> = None;
    for rule in &rules.rules {
        let (added, removed, e) = changes_within(history, now, rule.period());
        let start = (u64::from(current) + removed).saturating_sub(added);
        let v = u64::from(rule.value);
        let proposed = match (direction, rule.kind) {
            (Direction::Up, RuleType::Pods) => start + v,
            (Direction::Up, RuleType::Percent) => (start * (100 + v)).div_ceil(100),
            (_, RuleType::Pods) => start.saturating_sub(v),
            (_, RuleType::Percent) => start * 100u64.saturating_sub(v) / 100,
        };
        // Max means "the biggest change": the highest limit up, the lowest down; Min the opposite.
        let better = match limit {
            None => true,
            Some((l, _)) => {
                let bigger = if direction == Direction::Up {
                    proposed > l
                } else {
                    proposed < l
                };
                bigger == (rules.strategy == SelectPolicy::Max) && proposed != l
            }
        };
        if better {
            limit = Some((proposed, rule));
        }
        // A rule without an action in its period frees up after a whole period (as the DCA counts it).
        if let Some(e) = e.or_else(|| wall::add(now, rule.period())) {
            expiry = Some(expiry.map_or(e, |x| x.min(e)));
        }
    }
    let Some((limit, rule)) = limit else { return };
    let limit = u32::try_from(limit).unwrap_or(u32::MAX);
    let v = b.value;
    let limited = match direction {
        Direction::Up => limit.max(current).min(v),
        _ => limit.min(current).max(v),
    };
    if limited != v {
        b.limited(
            Stage::RuleLimited,
            limited,
            Limit::LimitedByScalingBehavior,
            format!(
                "{label} from {current} to {v} limited to {limited} by rule {rule} ({:?})",
                rules.strategy
            ),
        );
        b.requeue_after = expiry.map(|e| {
            let wait = wall::since(e, now);
            // Truncated to the second plus one, as the DCA does, so the action has left the period.
            Duration::from_secs(wait.as_secs() + 1)
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn history_bytes_grow_with_the_recommendations_kept() {
        assert_eq!(History::new().approx_heap_bytes(), 0);
        // counts that change every time: each one is kept
        let mut h = History::new();
        for i in 0..100 {
            h.record_recommendation(t(i), 3 + (i % 2) as u32);
        }
        let hundred = h.approx_heap_bytes();
        for i in 100..1000 {
            h.record_recommendation(t(i), 3 + (i % 2) as u32);
        }
        let thousand = h.approx_heap_bytes();
        let per = (thousand - hundred) as f64 / 900.0;
        let slot = std::mem::size_of::<TimedRecommendation>() as f64;
        // a growing ring buffer: between one slot and about two (spare capacity) per recommendation
        assert!(
            per >= slot * 0.9 && per <= slot * 2.5,
            "{per} bytes per recommendation"
        );
    }

    #[test]
    fn a_run_of_one_count_keeps_its_first_and_its_last() {
        let mut h = History::new();
        for i in 0..500 {
            h.record_recommendation(t(i * 5), 4);
        }
        let kept: Vec<_> = h.recommendations().map(|r| (r.at, r.replicas)).collect();
        assert_eq!(kept, vec![(t(0), 4), (t(499 * 5), 4)]);
        h.record_recommendation(t(500 * 5), 6);
        h.record_recommendation(t(501 * 5), 6);
        h.record_recommendation(t(502 * 5), 6);
        let kept: Vec<_> = h.recommendations().map(|r| (r.at, r.replicas)).collect();
        assert_eq!(
            kept,
            vec![(t(0), 4), (t(499 * 5), 4), (t(500 * 5), 6), (t(502 * 5), 6)]
        );
        assert!(h.approx_heap_bytes() <= 4 * 2 * std::mem::size_of::<TimedRecommendation>());
        // an earlier time than the last is kept as it came, not merged
        h.record_recommendation(t(400 * 5), 6);
        assert_eq!(h.recommendations().len(), 5);
    }

    use super::*;
    use proptest::prelude::*;

    fn t(s: u64) -> Timestamp {
        Timestamp::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    fn input(now: u64, current: u32, rec: u32) -> Input {
        Input {
            now: t(now),
            current_replicas: current,
            recommended_replicas: rec,
            source: ValueSource::Autoscaling,
        }
    }

    /// Runs a scenario: `(seconds, recommendation)` pairs starting from `start` replicas; the target
    /// follows every action. Returns the replica count after each step.
    fn simulate(policy: &Policy, start: u32, recs: &[(u64, u32)]) -> Vec<u32> {
        let mut h = History::new();
        let mut current = start;
        let mut out = Vec::new();
        for &(at, rec) in recs {
            let d = evaluate(policy, &h, &input(at, current, rec));
            h.record(&d);
            if let Some(a) = &d.action {
                current = a.to_replicas;
            }
            out.push(current);
        }
        out
    }

    fn policy(up: ScalingPolicy, down: ScalingPolicy) -> Policy {
        Policy {
            scale_up: up,
            scale_down: down,
            max_replicas: Some(1000),
            ..Policy::default()
        }
    }

    #[test]
    fn hpa_default_scale_up_is_the_larger_of_100_percent_or_4_pods_per_15s() {
        let p = policy(
            ScalingPolicy::hpa_default_scale_up(),
            ScalingPolicy::hpa_default_scale_down(),
        );
        // 1 → +4 pods beats +100 %; 5 → 10 (100 %) beats 9; 10 → 20; then 40.
        let r = simulate(&p, 1, &[(0, 100), (15, 100), (30, 100), (45, 100), (60, 100)]);
        assert_eq!(r, [5, 10, 20, 40, 80]);
        // Within the same 15 s period, nothing more is allowed.
        let r = simulate(&p, 1, &[(0, 100), (5, 100), (14, 100), (15, 100)]);
        assert_eq!(r, [5, 5, 5, 10]);
    }

    #[test]
    fn percent_and_pods_per_60s_with_max_and_min() {
        let rules = vec![ScalingRule::percent(100, 60), ScalingRule::pods(4, 60)];
        let max = policy(
            ScalingPolicy {
                strategy: SelectPolicy::Max,
                rules: rules.clone(),
                stabilization_window_seconds: 0,
            },
            ScalingPolicy::default(),
        );
        let min = policy(
            ScalingPolicy {
                strategy: SelectPolicy::Min,
                rules,
                stabilization_window_seconds: 0,
            },
            ScalingPolicy::default(),
        );
        // Max: 10 → 20; Min: 10 → 14.
        assert_eq!(simulate(&max, 10, &[(0, 50)]), [20]);
        assert_eq!(simulate(&min, 10, &[(0, 50)]), [14]);
        // Min, over time: 2 → 4 (100 % < 4 pods), then nothing until the period ends at 60 s (the
        // event at 0 leaves the window strictly after 60 s have passed).
        let r = simulate(&min, 2, &[(0, 50), (30, 50), (59, 50), (60, 50), (120, 50)]);
        assert_eq!(r, [4, 4, 4, 8, 12]);
    }

    #[test]
    fn scale_down_10_percent_or_4_pods_per_minute_from_the_kubernetes_docs() {
        // "scaleDown: policies: Pods 4 per 60s, Percent 10 per 60s" with the default Max: 80 replicas
        // lose 8 in the first minute; at 72, 10 % is 7.2, rounded to 8 removed; at 64, 6.4 → 7 removed.
        let down = ScalingPolicy {
            strategy: SelectPolicy::Max,
            rules: vec![ScalingRule::pods(4, 60), ScalingRule::percent(10, 60)],
            stabilization_window_seconds: 0,
        };
        let p = policy(ScalingPolicy::default(), down);
        let r = simulate(&p, 80, &[(0, 10), (30, 10), (61, 10), (122, 10)]);
        assert_eq!(r, [72, 72, 64, 57]);
        // Down to the point where 4 pods beat 10 %: 40 → 36 → 32 (10 % would be 3.2 → 3).
        let r = simulate(&p, 40, &[(0, 10), (61, 10)]);
        assert_eq!(r, [36, 32]);
    }

    #[test]
    fn scale_down_stabilization_of_300s() {
        let p = policy(
            ScalingPolicy::hpa_default_scale_up(),
            ScalingPolicy::hpa_default_scale_down(),
        );
        // A dip in the recommendation does not scale down until the high one leaves the window.
        let recs = [
            (0, 10),
            (60, 5),
            (120, 4),
            (299, 4),
            (300, 4),
            (301, 3),
            (361, 3),
            (421, 3),
            (601, 3),
        ];
        let r = simulate(&p, 10, &recs);
        assert_eq!(r, [10, 10, 10, 10, 5, 5, 4, 4, 3]);
    }

    #[test]
    fn scale_up_stabilization_takes_the_lowest() {
        let up = ScalingPolicy {
            stabilization_window_seconds: 60,
            ..ScalingPolicy::default()
        };
        let p = policy(up, ScalingPolicy::default());
        let r = simulate(&p, 2, &[(0, 2), (10, 8), (20, 6), (61, 6), (71, 9), (81, 9)]);
        // At 61 the 2 left the window: the lowest is 6. At 71 the 8 and the 6 are still in: min(6,8,9)=6.
        assert_eq!(r, [2, 2, 2, 6, 6, 6]);
    }

    #[test]
    fn disabled_directions() {
        let disabled = ScalingPolicy {
            strategy: SelectPolicy::Disabled,
            ..ScalingPolicy::default()
        };
        let p = policy(ScalingPolicy::hpa_default_scale_up(), disabled.clone());
        let d = evaluate(&p, &History::new(), &input(0, 10, 2));
        assert_eq!(d.final_replicas, 10);
        assert_eq!(d.action, None);
        assert_eq!(d.restriction, Some(Restriction::PolicyRestricted));
        // Up still works.
        assert_eq!(
            evaluate(&p, &History::new(), &input(0, 10, 12)).final_replicas,
            12
        );
        let p = policy(disabled, ScalingPolicy::default());
        let d = evaluate(&p, &History::new(), &input(0, 10, 12));
        assert_eq!(
            (d.final_replicas, d.restriction),
            (10, Some(Restriction::PolicyRestricted))
        );
    }

    #[test]
    fn bounds_and_snapping() {
        let p = Policy {
            min_replicas: 2,
            max_replicas: Some(10),
            ..Policy::default()
        };
        let d = evaluate(&p, &History::new(), &input(0, 5, 30));
        assert_eq!(d.final_replicas, 10);
        assert_eq!(d.limit, Some(Limit::LimitedByConstraint));
        assert_eq!(
            d.limited_reason.as_deref(),
            Some("desired replica count 30 limited by maxReplicas 10")
        );
        assert_eq!(evaluate(&p, &History::new(), &input(0, 5, 1)).final_replicas, 2);
        // Current outside the bounds: snapped at once, rules ignored.
        let strict = Policy {
            scale_up: ScalingPolicy {
                rules: vec![ScalingRule::pods(0, 60)],
                ..ScalingPolicy::default()
            },
            ..p.clone()
        };
        let d = evaluate(&strict, &History::new(), &input(0, 1, 1));
        assert_eq!(d.final_replicas, 2);
        assert_eq!(d.steps.last().map(|s| s.stage), Some(Stage::Constrained));
        let d = evaluate(&strict, &History::new(), &input(0, 15, 12));
        assert_eq!(d.final_replicas, 10);
        // Scaled to zero: disabled.
        let d = evaluate(&p, &History::new(), &input(0, 0, 4));
        assert_eq!(
            (d.final_replicas, d.action, d.restriction),
            (0, None, Some(Restriction::ScalingDisabled))
        );
    }

    #[test]
    fn fallback_direction() {
        let p = Policy::default();
        let local = |current, rec| Input {
            source: ValueSource::Local,
            ..input(0, current, rec)
        };
        let d = evaluate(&p, &History::new(), &local(5, 3));
        assert_eq!(
            (d.final_replicas, d.restriction),
            (5, Some(Restriction::FallbackRestricted))
        );
        assert_eq!(evaluate(&p, &History::new(), &local(5, 7)).final_replicas, 7);
        let all = Policy {
            fallback_direction: FallbackDirection::All,
            ..Policy::default()
        };
        assert_eq!(evaluate(&all, &History::new(), &local(5, 3)).final_replicas, 3);
        // Other sources are not restricted.
        assert_eq!(evaluate(&p, &History::new(), &input(0, 5, 3)).final_replicas, 3);
    }

    #[test]
    fn preview_records_but_never_acts() {
        let p = Policy {
            mode: ApplyMode::Preview,
            max_replicas: Some(8),
            ..Policy::default()
        };
        let d = evaluate(&p, &History::new(), &input(0, 4, 10));
        assert_eq!(
            (d.desired_replicas, d.final_replicas, d.action.is_none()),
            (8, 4, true)
        );
        assert_eq!(d.restriction, Some(Restriction::PolicyRestricted));
        let stages: Vec<_> = d.steps.iter().map(|s| (s.stage, s.replicas)).collect();
        assert_eq!(
            stages,
            [
                (Stage::Recommended, 10),
                (Stage::Constrained, 8),
                (Stage::Mode, 4)
            ]
        );
        let mut h = History::new();
        h.record(&d);
        assert_eq!(h.recommendations().len(), 1);
        assert_eq!(h.actions().len(), 0);
    }

    fn windows(up: u32, down: u32) -> Policy {
        Policy {
            scale_up: ScalingPolicy {
                stabilization_window_seconds: up,
                ..ScalingPolicy::default()
            },
            scale_down: ScalingPolicy {
                stabilization_window_seconds: down,
                ..ScalingPolicy::default()
            },
            ..Policy::default()
        }
    }

    /// The stabilization table of the Datadog Cluster Agent, restated: DataDog/datadog-agent
    /// `pkg/clusteragent/autoscaling/workload/controller_horizontal_test.go`, `TestStabilizeRecommendations`
    /// (the revision of the file that has the v1alpha2 `ApplyPolicy`; the stored revision
    /// 32d839a96a3121243c210ef7dca19fb0a5b08703 predates that test).
    #[test]
    fn dca_stabilization_table() {
        // (case, [(seconds ago, replicas)], current, recommended, up window, down window, expected)
        type Row<'a> = (&'a str, &'a [(u64, u32)], u32, u32, u32, u32, u32);
        let cases: &[Row<'_>] = &[
            (
                "steady scale-up, no up window",
                &[(60, 6), (30, 4)],
                4,
                8,
                0,
                300,
                8,
            ),
            (
                "scale-down held by the window",
                &[(60, 6), (30, 5)],
                5,
                4,
                0,
                300,
                5,
            ),
            (
                "scale-down, flapping history",
                &[(90, 6), (60, 9), (30, 7)],
                7,
                5,
                0,
                300,
                7,
            ),
            (
                "scale-up held by the window",
                &[(60, 6), (30, 8)],
                8,
                12,
                300,
                0,
                8,
            ),
            (
                "scale-up, flapping history",
                &[(90, 8), (60, 7), (30, 9)],
                9,
                12,
                300,
                0,
                9,
            ),
        ];
        let now = 10_000;
        for &(case, past, current, rec, up, down, want) in cases {
            let h = History::restore(
                past.iter().map(|&(ago, replicas)| TimedRecommendation {
                    at: t(now - ago),
                    replicas,
                }),
                [],
            );
            let d = evaluate(&windows(up, down), &h, &input(now, current, rec));
            assert_eq!(d.final_replicas, want, "{case}");
            if want != rec {
                assert!(
                    d.steps.iter().any(|s| s.stage == Stage::Stabilized),
                    "{case}: {:?}",
                    d.steps
                );
            }
        }
    }

    /// The window's edge and gaps, where the previous controller policy (change points "in effect")
    /// differed from both peers: only recommendations strictly after `now − window` count.
    #[test]
    fn stabilization_edge_and_gap() {
        let p = windows(0, 300);
        let now = 10_000;
        let at = |ago: u64, replicas| TimedRecommendation {
            at: t(now - ago),
            replicas,
        };
        // Exactly at now − window: out.
        let h = History::restore([at(300, 9)], []);
        assert_eq!(evaluate(&p, &h, &input(now, 8, 3)).final_replicas, 3);
        // One second later: in.
        let h = History::restore([at(299, 9)], []);
        assert_eq!(evaluate(&p, &h, &input(now, 8, 3)).final_replicas, 8);
        // A gap longer than the window: the old values do not count, whatever they were.
        let h = History::restore([at(900, 9), at(800, 5), at(700, 4)], []);
        assert_eq!(evaluate(&p, &h, &input(now, 8, 3)).final_replicas, 3);
        // The same for the scale-up window.
        let p = windows(60, 0);
        let h = History::restore([at(60, 4)], []);
        assert_eq!(evaluate(&p, &h, &input(now, 2, 10)).final_replicas, 10);
        let h = History::restore([at(59, 4)], []);
        assert_eq!(evaluate(&p, &h, &input(now, 2, 10)).final_replicas, 4);
    }

    /// The rules sequence of the Datadog Cluster Agent, restated: DataDog/datadog-agent
    /// `pkg/clusteragent/autoscaling/workload/controller_horizontal_test.go` at
    /// 32d839a96a3121243c210ef7dca19fb0a5b08703, `TestHorizontalControllerSyncScaleDecisionsWithRules`:
    /// bounds [90, 120], 5 pods per 300 s both ways, one evaluation every 30 s, the target following
    /// every action (or moved by hand where the table says so).
    #[test]
    fn dca_rules_sequence() {
        let mut p = Policy {
            min_replicas: 90,
            max_replicas: Some(120),
            scale_up: ScalingPolicy {
                rules: vec![ScalingRule::pods(5, 300)],
                ..ScalingPolicy::default()
            },
            scale_down: ScalingPolicy {
                rules: vec![ScalingRule::pods(5, 300)],
                ..ScalingPolicy::default()
            },
            ..Policy::default()
        };
        let mut h = History::new();
        // (seconds, current, recommended, expected, requeue seconds, restriction)
        type Row = (u64, u32, u32, u32, Option<u64>, Option<Restriction>);
        let mut run = |p: &Policy, rows: &[Row]| {
            for &(at, current, rec, want, requeue, restriction) in rows {
                let d = evaluate(p, &h, &input(at, current, rec));
                assert_eq!(d.final_replicas, want, "at {at}s: {:?}", d.steps);
                assert_eq!(d.requeue_after.map(|r| r.as_secs()), requeue, "at {at}s");
                assert_eq!(d.restriction, restriction, "at {at}s");
                h.record(&d);
            }
        };
        run(
            &p,
            &[
                (30, 100, 103, 103, None, None),
                (60, 103, 97, 97, None, None),
                // 6 removed and 3 added in the period: it started at 100, so 95 at the least.
                (90, 97, 92, 95, Some(241), None),
                (120, 95, 110, 105, Some(211), None),
                // Outside the bounds (moved by hand): straight back to the bound, rules ignored.
                (720, 130, 140, 120, None, None),
            ],
        );
        p.scale_up.strategy = SelectPolicy::Disabled;
        run(
            &p,
            &[
                (1320, 100, 120, 100, None, Some(Restriction::PolicyRestricted)),
                (1350, 100, 95, 95, None, None),
            ],
        );
        p.scale_up.strategy = SelectPolicy::Max;
        p.scale_down.strategy = SelectPolicy::Disabled;
        run(
            &p,
            &[(1950, 95, 90, 95, None, Some(Restriction::PolicyRestricted))],
        );
    }

    #[test]
    fn explain_steps_and_requeue() {
        let p = Policy {
            max_replicas: Some(20),
            scale_up: ScalingPolicy {
                rules: vec![ScalingRule::pods(4, 60)],
                ..ScalingPolicy::default()
            },
            scale_down: ScalingPolicy {
                stabilization_window_seconds: 300,
                ..ScalingPolicy::default()
            },
            ..Policy::default()
        };
        let mut h = History::new();
        let d = evaluate(&p, &h, &input(0, 2, 30));
        let stages: Vec<_> = d.steps.iter().map(|s| (s.stage, s.replicas)).collect();
        assert_eq!(
            stages,
            [
                (Stage::Recommended, 30),
                (Stage::Constrained, 20),
                (Stage::RuleLimited, 6)
            ]
        );
        assert_eq!(d.limit, Some(Limit::LimitedByScalingBehavior));
        assert_eq!(
            d.requeue_after,
            Some(Duration::from_secs(61)),
            "no earlier action: a whole period, plus one second"
        );
        let action = d.action.clone().unwrap();
        assert_eq!(
            (
                action.from_replicas,
                action.to_replicas,
                action.recommended_replicas
            ),
            (2, 6, 30)
        );
        assert!(
            action
                .limited_reason
                .unwrap()
                .contains("limited to 6 by rule 4 pods per 60s")
        );
        h.record(&d);
        let d = evaluate(&p, &h, &input(15, 6, 30));
        assert_eq!(d.final_replicas, 6);
        assert_eq!(d.action, None);
        assert_eq!(d.requeue_after, Some(Duration::from_secs(46)));
        let d = evaluate(
            &p,
            &h,
            &Input {
                now: t(15) + Duration::from_millis(500),
                ..input(0, 6, 30)
            },
        );
        assert_eq!(
            d.requeue_after,
            Some(Duration::from_secs(45)),
            "truncated, plus one second"
        );
    }

    #[test]
    fn history_is_bounded() {
        let mut h = History::new();
        for i in 0..25u32 {
            h.record_action(ScalingAction {
                time: t(u64::from(i)),
                from_replicas: i,
                to_replicas: i + 1,
                recommended_replicas: i + 1,
                limited_reason: None,
            });
        }
        assert_eq!(h.actions().len(), MAX_ACTIONS);
        assert_eq!(h.actions().next().map(|a| a.from_replicas), Some(15));
        for i in 0..10_000u64 {
            h.record_recommendation(t(i), 1);
        }
        assert!(h.recommendations().len() <= MAX_RECOMMENDATIONS);
        assert!(h.recommendations().all(|r| r.at > t(10_000 - 1 - 3600)));
        let restored = History::restore(h.recommendations().copied(), h.actions().cloned());
        assert_eq!(restored, h);
    }

    #[test]
    fn config_types_deserialize_from_dpa_shapes() {
        let json = r#"{"strategy":"Min","rules":[{"type":"Percent","value":50,"periodSeconds":120}],
                       "stabilizationWindowSeconds":300}"#;
        let p: ScalingPolicy = serde_json::from_str(json).unwrap();
        assert_eq!(p.strategy, SelectPolicy::Min);
        assert_eq!(p.rules, [ScalingRule::percent(50, 120)]);
        assert_eq!(p.stabilization_window_seconds, 300);
        let p: ScalingPolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(p, ScalingPolicy::default());
        let p: Policy = serde_json::from_str(r#"{"maxReplicas":5,"mode":"Preview"}"#).unwrap();
        assert_eq!(
            (p.min_replicas, p.max_replicas, p.mode),
            (1, Some(5), ApplyMode::Preview)
        );
    }

    // === properties ===

    fn rule() -> impl Strategy<Value = ScalingRule> {
        (
            prop_oneof![Just(RuleType::Pods), Just(RuleType::Percent)],
            0u32..200,
            1u32..=150,
        )
            .prop_map(|(kind, value, period_seconds)| ScalingRule {
                kind,
                value,
                period_seconds,
            })
    }

    fn scaling_policy() -> impl Strategy<Value = ScalingPolicy> {
        (
            prop_oneof![
                Just(SelectPolicy::Max),
                Just(SelectPolicy::Min),
                Just(SelectPolicy::Disabled)
            ],
            proptest::collection::vec(rule(), 0..3),
            prop_oneof![Just(0u32), 1u32..600],
        )
            .prop_map(|(strategy, rules, stabilization_window_seconds)| ScalingPolicy {
                strategy,
                rules,
                stabilization_window_seconds,
            })
    }

    fn any_policy() -> impl Strategy<Value = Policy> {
        (
            1u32..10,
            0u32..40,
            prop_oneof![Just(ApplyMode::Apply), Just(ApplyMode::Preview)],
            scaling_policy(),
            scaling_policy(),
            prop_oneof![
                Just(FallbackDirection::ScaleUp),
                Just(FallbackDirection::ScaleDown),
                Just(FallbackDirection::All)
            ],
        )
            .prop_map(
                |(min, extra, mode, scale_up, scale_down, fallback_direction)| Policy {
                    min_replicas: min,
                    max_replicas: Some(min + extra),
                    mode,
                    scale_up,
                    scale_down,
                    fallback_direction,
                },
            )
    }

    fn source() -> impl Strategy<Value = ValueSource> {
        prop_oneof![
            Just(ValueSource::Autoscaling),
            Just(ValueSource::Local),
            Just(ValueSource::Manual)
        ]
    }

    /// The log of every action, unbounded: an independent model of what the rules allow.
    fn allowed_by_rules(
        rules: &ScalingPolicy,
        log: &[ScalingAction],
        now: Timestamp,
        current: u32,
        up: bool,
    ) -> Option<u64> {
        if rules.rules.is_empty() {
            return None;
        }
        let proposals = rules.rules.iter().map(|r| {
            let cutoff = wall::saturating_sub(now, r.period());
            let mut start = i64::from(current);
            for a in log.iter().filter(|a| a.time > cutoff) {
                start -= i64::from(a.to_replicas) - i64::from(a.from_replicas);
            }
            let start = start.max(0) as u64;
            let v = u64::from(r.value);
            match (up, r.kind) {
                (true, RuleType::Pods) => start + v,
                (true, RuleType::Percent) => (start * (100 + v)).div_ceil(100),
                (false, RuleType::Pods) => start.saturating_sub(v),
                (false, RuleType::Percent) => start * 100u64.saturating_sub(v) / 100,
            }
        });
        let biggest = rules.strategy == SelectPolicy::Max;
        Some(if up == biggest {
            proposals.max()?
        } else {
            proposals.min()?
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn a_compacted_history_has_the_extremes_of_every_window_and_the_runs_first_times(
            steps in proptest::collection::vec((1u64..30, 0u32..3), 1..200),
            window in 1u64..4000,
        ) {
            let mut h = History::new();
            let mut all: Vec<(Timestamp, u32)> = Vec::new();
            let mut now = t(0);
            for (dt, rec) in steps {
                now += Duration::from_secs(dt);
                h.record_recommendation(now, rec);
                all.push((now, rec));
                all.retain(|(at, _)| within(*at, now, MAX_WINDOW));
                let w = Duration::from_secs(window);
                let extremes = |it: &mut dyn Iterator<Item = (Timestamp, u32)>| {
                    it.filter(|(at, _)| within(*at, now, w))
                        .fold(None, |acc: Option<(u32, u32)>, (_, r)| {
                            Some(acc.map_or((r, r), |(lo, hi)| (lo.min(r), hi.max(r))))
                        })
                };
                let kept = extremes(&mut h.recommendations().map(|r| (r.at, r.replicas)));
                prop_assert_eq!(kept, extremes(&mut all.iter().copied()));
                // every run's first recommendation is kept (the status shows runs by it)
                let firsts: Vec<_> = all
                    .iter()
                    .enumerate()
                    .filter(|(i, (_, r))| *i == 0 || all[*i - 1].1 != *r)
                    .map(|(_, x)| *x)
                    .collect();
                for f in firsts.iter().skip(1) {
                    prop_assert!(h.recommendations().any(|r| (r.at, r.replicas) == *f));
                }
            }
        }

        #[test]
        fn decisions_respect_bounds_rules_preview_and_windows(
            policy in any_policy(),
            start in 0u32..60,
            steps in proptest::collection::vec((1u64..40, 0u32..80, source()), 1..60),
        ) {
            let mut h = History::new();
            let mut log: Vec<ScalingAction> = Vec::new();
            let mut recs: Vec<(Timestamp, u32)> = Vec::new();
            let mut current = start;
            let mut now = t(0);
            let (min, max) = (policy.min(), policy.max());
            for (dt, rec, src) in steps {
                // Every step is at least 15 s apart and periods are at most 150 s, so no period holds
                // more than the ten remembered actions.
                now += Duration::from_secs(14 + dt);
                let d = evaluate(&policy, &h, &Input { now, current_replicas: current, recommended_replicas: rec, source: src });
                prop_assert_eq!(d.steps.first().map(|s| s.replicas), Some(rec));
                prop_assert_eq!(d.steps.last().map(|s| s.replicas), Some(d.final_replicas));

                if policy.mode == ApplyMode::Preview {
                    prop_assert!(d.action.is_none(), "preview acted");
                    prop_assert_eq!(d.final_replicas, current);
                }
                if current == 0 {
                    prop_assert!(d.action.is_none());
                }
                if let Some(a) = &d.action {
                    prop_assert_eq!(a.from_replicas, current);
                    prop_assert!(a.to_replicas != current);
                    // Never outside the bounds.
                    prop_assert!(a.to_replicas >= min && a.to_replicas <= max, "{} not in [{}, {}]", a.to_replicas, min, max);
                    let snapped = current < min || current > max;
                    if !snapped {
                        let up = a.to_replicas > current;
                        let rules = if up { &policy.scale_up } else { &policy.scale_down };
                        prop_assert!(rules.strategy != SelectPolicy::Disabled, "disabled direction scaled");
                        // Never faster than the rules allow.
                        if let Some(limit) = allowed_by_rules(rules, &log, now, current, up) {
                            if up {
                                prop_assert!(u64::from(a.to_replicas) <= limit.max(u64::from(current)));
                            } else {
                                prop_assert!(u64::from(a.to_replicas) >= limit.min(u64::from(current)));
                            }
                        }
                        // Stabilization: a scale-up never exceeds a recommendation of the up window,
                        // a scale-down never goes under one of the down window.
                        let within_w = |w: u32, at: Timestamp| w > 0 && within(at, now, Duration::from_secs(u64::from(w)));
                        for &(at, r) in &recs {
                            if up && within_w(policy.scale_up.stabilization_window_seconds, at) {
                                prop_assert!(a.to_replicas <= r, "up to {} past a recent {}", a.to_replicas, r);
                            }
                            if !up && within_w(policy.scale_down.stabilization_window_seconds, at) {
                                prop_assert!(a.to_replicas >= r, "down to {} past a recent {}", a.to_replicas, r);
                            }
                        }
                        if src == ValueSource::Local {
                            let dir = if up { Direction::Up } else { Direction::Down };
                            prop_assert!(policy.fallback_direction.allows(dir));
                        }
                    }
                    log.push(a.clone());
                    current = a.to_replicas;
                }
                h.record(&d);
                recs.push((now, rec));
            }
        }

        #[test]
        fn no_scale_down_below_a_scale_up_within_the_down_window(
            window in 30u32..600,
            steps in proptest::collection::vec((1u64..60, 1u32..50), 1..60),
        ) {
            let policy = Policy {
                max_replicas: Some(100),
                scale_down: ScalingPolicy { stabilization_window_seconds: window, ..ScalingPolicy::default() },
                ..Policy::default()
            };
            let mut h = History::new();
            let mut current = 10;
            let mut now = t(0);
            let mut ups: Vec<(Timestamp, u32)> = Vec::new();
            for (dt, rec) in steps {
                now += Duration::from_secs(dt);
                let d = evaluate(&policy, &h, &input_at(now, current, rec));
                if let Some(a) = &d.action {
                    if a.to_replicas > current {
                        ups.push((now, a.to_replicas));
                    } else {
                        for &(at, r) in &ups {
                            if within(at, now, Duration::from_secs(u64::from(window))) {
                                prop_assert!(a.to_replicas >= r, "flapped: up to {} then down to {}", r, a.to_replicas);
                            }
                        }
                    }
                    current = a.to_replicas;
                }
                h.record(&d);
            }
        }
    }

    fn input_at(now: Timestamp, current: u32, rec: u32) -> Input {
        Input {
            now,
            current_replicas: current,
            recommended_replicas: rec,
            source: ValueSource::Autoscaling,
        }
    }
}
