//! Status conditions with a stable `lastTransitionTime`, and which of them the horizontal writer
//! owns.
//!
//! Everything here is pure. The controller builds the fields it owns and applies them only when
//! they differ from the stored ones (`PartialEq` on the typed status, after the times were truncated
//! to whole seconds as the API stores them); the history lives in [`crate::horizontal`].

use lazyscale_api::consts::conditions::{self, DPA_CONDITION_TYPES};
use lazyscale_api::{DatadogPodAutoscalerCondition, Word};

use lazyscale_api::time::{Timestamp, to_time};

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
    now: Timestamp,
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
            type_: Word::from_static(c.type_),
            status: Word::from_static(c.status),
            last_transition_time,
            reason: c.reason.map(Word::from_static),
            message: c.message.as_deref().map(Box::from),
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

/// The conditions of `all` this writer owns ([`OWNED`]), in the order given.
pub fn owned_conditions(all: &[DatadogPodAutoscalerCondition]) -> Vec<DatadogPodAutoscalerCondition> {
    all.iter()
        .filter(|c| OWNED.contains(&c.type_.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_is_stable_while_status_holds() {
        let first = merge_conditions(
            &[],
            &[Cond::yes(conditions::ACTIVE)],
            lazyscale_api::time::from_unix_millis(10_000),
        );
        let again = merge_conditions(
            &first,
            &[Cond::yes(conditions::ACTIVE).because("X", "message changed")],
            lazyscale_api::time::from_unix_millis(99_000),
        );
        assert_eq!(first[0].last_transition_time, again[0].last_transition_time);
        let flipped = merge_conditions(
            &again,
            &[Cond::no(conditions::ACTIVE)],
            lazyscale_api::time::from_unix_millis(99_000),
        );
        assert_eq!(
            flipped[0].last_transition_time,
            Some(to_time(lazyscale_api::time::from_unix_millis(99_000)))
        );
    }

    #[test]
    fn foreign_conditions_are_kept_and_owned_ones_dropped() {
        let old = merge_conditions(
            &[],
            &[
                Cond::yes(conditions::HORIZONTAL_ABLE_TO_SCALE),
                Cond::yes(conditions::VERTICAL_ABLE_TO_APPLY),
            ],
            lazyscale_api::time::from_unix_millis(0),
        );
        let new = merge_conditions(
            &old,
            &[Cond::no(conditions::ACTIVE)],
            lazyscale_api::time::from_unix_millis(0),
        );
        let types: Vec<&str> = new.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [conditions::ACTIVE, conditions::VERTICAL_ABLE_TO_APPLY]);
    }

    #[test]
    fn owned_conditions_leave_the_vertical_ones_out() {
        let all = merge_conditions(
            &[],
            &[
                Cond::yes(conditions::ACTIVE),
                Cond::yes(conditions::VERTICAL_ABLE_TO_RECOMMEND),
                Cond::no(conditions::HORIZONTAL_SCALING_LIMITED),
            ],
            lazyscale_api::time::from_unix_millis(0),
        );
        let types: Vec<String> = owned_conditions(&all)
            .into_iter()
            .map(|c| c.type_.to_string())
            .collect();
        assert_eq!(
            types,
            [conditions::ACTIVE, conditions::HORIZONTAL_SCALING_LIMITED]
        );
    }
}
