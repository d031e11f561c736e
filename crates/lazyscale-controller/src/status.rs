//! Status assembly: conditions with a stable `lastTransitionTime`, the recommendation history as
//! change points, and the action list (10 kept).
//!
//! Everything here is pure. The controller builds the complete new status and writes it only when
//! it differs from the stored one (`PartialEq` on the typed status, after the times were truncated
//! to whole seconds as the API stores them).

use lazyscale_api::consts::conditions::{self, DPA_CONDITION_TYPES};
use lazyscale_api::consts::value_sources;
use lazyscale_api::{DatadogPodAutoscalerCondition, HorizontalAction, HorizontalRecommendation};

use crate::policy::{PastAction, PastRecommendation, Policy};
use crate::time::{Millis, from_time, to_time, truncate};

/// Actions kept in `status.horizontal.lastActions`.
pub const MAX_ACTIONS: usize = 10;
/// Change points kept in `status.horizontal.lastRecommendations` at most.
pub const MAX_RECOMMENDATIONS: usize = 60;

/// The condition types this controller owns; others (vertical) are carried over untouched.
pub const OWNED: [&str; 5] = [
    conditions::ERROR,
    conditions::ACTIVE,
    conditions::HORIZONTAL_ABLE_TO_RECOMMEND,
    conditions::HORIZONTAL_ABLE_TO_SCALE,
    conditions::HORIZONTAL_SCALING_LIMITED,
];

/// A condition as computed, before its transition time is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    /// Condition type.
    pub type_: &'static str,
    /// `True`/`False`/`Unknown`.
    pub status: &'static str,
    /// Reason, when any.
    pub reason: Option<&'static str>,
    /// Message, when any.
    pub message: Option<String>,
}

impl Cond {
    /// A `True` condition.
    pub fn yes(type_: &'static str) -> Self {
        Self {
            type_,
            status: conditions::STATUS_TRUE,
            reason: None,
            message: None,
        }
    }

    /// A `False` condition.
    pub fn no(type_: &'static str) -> Self {
        Self {
            type_,
            status: conditions::STATUS_FALSE,
            reason: None,
            message: None,
        }
    }

    /// With a reason and message.
    pub fn because(mut self, reason: &'static str, message: impl Into<String>) -> Self {
        self.reason = Some(reason);
        self.message = Some(message.into());
        self
    }
}

/// The new condition list: owned types from `new` (absent ones removed), other types from `old`;
/// `lastTransitionTime` is kept from `old` while the status stays the same. Known types come in the
/// API's order, unknown ones after.
pub fn merge_conditions(
    old: &[DatadogPodAutoscalerCondition],
    new: &[Cond],
    now: Millis,
) -> Vec<DatadogPodAutoscalerCondition> {
    let build = |c: &Cond| {
        let prev = old.iter().find(|o| o.type_ == c.type_);
        let last_transition_time = match prev {
            Some(p) if p.status == c.status && p.last_transition_time.is_some() => {
                p.last_transition_time.clone()
            }
            _ => Some(to_time(now)),
        };
        DatadogPodAutoscalerCondition {
            type_: c.type_.to_owned(),
            status: c.status.to_owned(),
            last_transition_time,
            reason: c.reason.map(str::to_owned),
            message: c.message.clone(),
        }
    };
    let mut out = Vec::new();
    for t in DPA_CONDITION_TYPES {
        if let Some(c) = new.iter().find(|c| c.type_ == t) {
            out.push(build(c));
        } else if !OWNED.contains(&t)
            && let Some(o) = old.iter().find(|o| o.type_ == t)
        {
            out.push(o.clone());
        }
    }
    out.extend(
        old.iter()
            .filter(|o| !DPA_CONDITION_TYPES.contains(&o.type_.as_str()))
            .cloned(),
    );
    out
}

/// The recommendation history stored in the status, oldest first.
pub fn history(stored: Option<&[HorizontalRecommendation]>) -> Vec<PastRecommendation> {
    let mut h: Vec<PastRecommendation> = stored
        .unwrap_or_default()
        .iter()
        .filter_map(|r| {
            Some(PastRecommendation {
                time: from_time(r.generated_at.as_ref()?),
                replicas: r.desired_replicas,
            })
        })
        .collect();
    h.sort_by_key(|r| r.time);
    h
}

/// The actions stored in the status.
pub fn actions(stored: Option<&[HorizontalAction]>) -> Vec<PastAction> {
    stored
        .unwrap_or_default()
        .iter()
        .map(|a| PastAction {
            time: from_time(&a.time),
            from: a.from_replicas,
            to: a.to_replicas,
        })
        .collect()
}

/// The history after recommendation `replicas` at `now`: a new change point only when the value
/// differs from the last one, pruned to what the policy's windows can still see (the last point
/// before the longest window is kept: it was in effect at the window start).
pub fn record(
    mut history: Vec<PastRecommendation>,
    now: Millis,
    replicas: i32,
    policy: &Policy,
) -> Vec<PastRecommendation> {
    if history.last().map(|r| r.replicas) != Some(replicas) {
        history.push(PastRecommendation {
            time: truncate(now),
            replicas,
        });
    }
    let start = now - policy.longest_window();
    let first_inside = history.partition_point(|r| r.time < start);
    let keep_from = first_inside.saturating_sub(1);
    let mut h: Vec<_> = history.split_off(keep_from);
    if h.len() > MAX_RECOMMENDATIONS {
        h.drain(..h.len() - MAX_RECOMMENDATIONS);
    }
    h
}

/// The history as status entries (source `Local`).
pub fn history_to_status(history: &[PastRecommendation]) -> Vec<HorizontalRecommendation> {
    history
        .iter()
        .map(|r| HorizontalRecommendation {
            source: Some(value_sources::LOCAL.to_owned()),
            generated_at: Some(to_time(r.time)),
            desired_replicas: r.replicas,
        })
        .collect()
}

/// The action list with `action` appended, the oldest dropped beyond [`MAX_ACTIONS`].
pub fn push_action(stored: Option<&[HorizontalAction]>, action: HorizontalAction) -> Vec<HorizontalAction> {
    let mut v: Vec<HorizontalAction> = stored.unwrap_or_default().to_vec();
    v.push(action);
    if v.len() > MAX_ACTIONS {
        v.drain(..v.len() - MAX_ACTIONS);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DirectionPolicy;
    use lazyscale_api::{ApplyMode, FallbackDirection};

    #[test]
    fn transition_time_is_stable_while_status_holds() {
        let first = merge_conditions(&[], &[Cond::yes(conditions::ACTIVE)], 10_000);
        let again = merge_conditions(
            &first,
            &[Cond::yes(conditions::ACTIVE).because("X", "message changed")],
            99_000,
        );
        assert_eq!(first[0].last_transition_time, again[0].last_transition_time);
        let flipped = merge_conditions(&again, &[Cond::no(conditions::ACTIVE)], 99_000);
        assert_eq!(flipped[0].last_transition_time, Some(to_time(99_000)));
    }

    #[test]
    fn foreign_conditions_are_kept_and_owned_ones_dropped() {
        let old = merge_conditions(
            &[],
            &[
                Cond::yes(conditions::HORIZONTAL_ABLE_TO_SCALE),
                Cond::yes(conditions::VERTICAL_ABLE_TO_APPLY),
            ],
            0,
        );
        let new = merge_conditions(&old, &[Cond::no(conditions::ACTIVE)], 0);
        let types: Vec<&str> = new.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [conditions::ACTIVE, conditions::VERTICAL_ABLE_TO_APPLY]);
    }

    #[test]
    fn history_keeps_change_points_within_the_window() {
        let policy = Policy {
            min: 1,
            max: None,
            up: DirectionPolicy::default(),
            down: DirectionPolicy {
                window: 300_000,
                ..DirectionPolicy::default()
            },
            mode: ApplyMode::Apply,
            fallback: FallbackDirection::All,
        };
        let h = record(Vec::new(), 1_000_000, 3, &policy);
        let h = record(h, 1_030_000, 3, &policy);
        assert_eq!(h.len(), 1, "unchanged value: no new point");
        let h = record(h, 1_060_000, 5, &policy);
        let h = record(h, 1_400_000, 4, &policy);
        let h = record(h, 1_500_000, 6, &policy);
        // window start 1_200_000: 5 (before, kept), 4, 6; 3 dropped
        let v: Vec<i32> = h.iter().map(|r| r.replicas).collect();
        assert_eq!(v, [5, 4, 6]);
    }

    #[test]
    fn actions_are_capped() {
        let mut v = Vec::new();
        for i in 0..15 {
            v = push_action(
                Some(&v),
                HorizontalAction {
                    time: to_time(i * 1000),
                    from_replicas: i as i32,
                    to_replicas: i as i32 + 1,
                    recommended_replicas: None,
                    limited_reason: None,
                },
            );
        }
        assert_eq!(v.len(), MAX_ACTIONS);
        assert_eq!(v[0].from_replicas, 5);
    }
}
