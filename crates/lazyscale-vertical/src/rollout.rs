//! When to roll a workload out to apply a vertical recommendation, decided without I/O.
//!
//! A rollout patches the pod template's `autoscaling.datadoghq.com/rolloutAt` and `rec-id` annotations;
//! the workload's controller replaces the pods and the admission webhook gives the new ones the
//! recommendation. [`decide`]:
//!
//! - every live pod carries the current rec-id (or there is none) → [`RolloutDecision::Done`];
//! - the template already carries this rec-id (we triggered it): wait, and once [`STALL_CHECK`] has passed
//!   since the trigger without a rollout in progress while pods still lack the rec-id, re-trigger
//!   ([`RolloutDecision::Retrigger`]);
//! - a rollout is in progress (live pods of more than one revision: `pod-template-hash` for Deployments
//!   and Argo Rollouts, `controller-revision-hash` for StatefulSets) → wait, except when the new values
//!   raise or remove a limit and the last vertical action is at least [`LIMIT_RAISE_WAIT`] old;
//! - else trigger.

use std::collections::BTreeSet;
use std::time::Duration;

/// How often a triggered rollout is checked for a stall.
pub const STALL_CHECK: Duration = Duration::from_secs(120);
/// How old the last action must be before a limit raise may start during another rollout.
pub const LIMIT_RAISE_WAIT: Duration = Duration::from_secs(600);

/// One pod of the workload as the rollout decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodRevision<'a> {
    /// Its `rec-id` annotation.
    pub rec_id: Option<&'a str>,
    /// Its template revision (`pod-template-hash` / `controller-revision-hash`).
    pub revision: Option<&'a str>,
    /// Being deleted.
    pub terminating: bool,
}

/// What the rollout decision reads.
#[derive(Debug, Clone, Copy)]
pub struct RolloutInputs<'a> {
    /// The rec-id to reach.
    pub rec_id: &'a str,
    /// The `rec-id` annotation of the workload's pod template (what was last triggered).
    pub template_rec_id: Option<&'a str>,
    /// How long ago the template's `rolloutAt` was set (`None` when unset or unreadable).
    pub triggered_ago: Option<Duration>,
    /// The workload's pods.
    pub pods: &'a [PodRevision<'a>],
    /// Whether the new values raise or remove a limit.
    pub raises_or_removes_limit: bool,
    /// How long ago the last vertical action happened (`None`: never).
    pub last_action_ago: Option<Duration>,
}

/// Why a rollout waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wait {
    /// Our own rollout for this rec-id is under way.
    Ours,
    /// Another rollout is in progress.
    InProgress,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RolloutDecision {
    /// Every live pod runs the rec-id.
    Done {
        /// Live pods with the rec-id.
        scaled: usize,
    },
    /// Patch the template (first time for this rec-id).
    Trigger,
    /// Patch `rolloutAt` again: the rollout for this rec-id stalled.
    Retrigger,
    /// Nothing now.
    Wait {
        /// Why.
        why: Wait,
        /// Live pods with the rec-id.
        scaled: usize,
    },
}

/// Live pods with the rec-id, live pods, and whether live pods of more than one revision exist.
pub fn progress(rec_id: &str, pods: &[PodRevision<'_>]) -> (usize, usize, bool) {
    let live: Vec<&PodRevision<'_>> = pods.iter().filter(|p| !p.terminating).collect();
    let scaled = live.iter().filter(|p| p.rec_id == Some(rec_id)).count();
    let revisions: BTreeSet<Option<&str>> = live.iter().map(|p| p.revision).collect();
    (scaled, live.len(), revisions.len() > 1)
}

/// The decision (see the module documentation).
pub fn decide(i: &RolloutInputs<'_>) -> RolloutDecision {
    let (scaled, live, in_progress) = progress(i.rec_id, i.pods);
    if scaled == live {
        return RolloutDecision::Done { scaled };
    }
    if i.template_rec_id == Some(i.rec_id) {
        let stalled = !in_progress && i.triggered_ago.is_none_or(|a| a >= STALL_CHECK);
        return if stalled {
            RolloutDecision::Retrigger
        } else {
            RolloutDecision::Wait {
                why: Wait::Ours,
                scaled,
            }
        };
    }
    if in_progress {
        let may = i.raises_or_removes_limit && i.last_action_ago.is_none_or(|a| a >= LIMIT_RAISE_WAIT);
        if !may {
            return RolloutDecision::Wait {
                why: Wait::InProgress,
                scaled,
            };
        }
    }
    RolloutDecision::Trigger
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pod<'a>(rec: Option<&'a str>, rev: &'a str) -> PodRevision<'a> {
        PodRevision {
            rec_id: rec,
            revision: Some(rev),
            terminating: false,
        }
    }

    fn inputs<'a>(pods: &'a [PodRevision<'a>]) -> RolloutInputs<'a> {
        RolloutInputs {
            rec_id: "new",
            template_rec_id: None,
            triggered_ago: None,
            pods,
            raises_or_removes_limit: false,
            last_action_ago: None,
        }
    }

    #[test]
    fn done_when_every_live_pod_has_the_rec_id() {
        let mut old = pod(Some("old"), "a");
        old.terminating = true;
        let pods = [pod(Some("new"), "b"), pod(Some("new"), "b"), old];
        assert_eq!(decide(&inputs(&pods)), RolloutDecision::Done { scaled: 2 });
        assert_eq!(decide(&inputs(&[])), RolloutDecision::Done { scaled: 0 });
    }

    #[test]
    fn triggers_once_then_waits_then_retriggers_a_stall() {
        let pods = [pod(Some("old"), "a"), pod(None, "a")];
        assert_eq!(decide(&inputs(&pods)), RolloutDecision::Trigger);
        let mut i = inputs(&pods);
        i.template_rec_id = Some("new");
        i.triggered_ago = Some(Duration::from_secs(30));
        assert_eq!(
            decide(&i),
            RolloutDecision::Wait {
                why: Wait::Ours,
                scaled: 0
            }
        );
        i.triggered_ago = Some(STALL_CHECK);
        assert_eq!(decide(&i), RolloutDecision::Retrigger);
        // still rolling (two revisions): not a stall
        let rolling = [pod(Some("old"), "a"), pod(Some("new"), "b")];
        let mut i = inputs(&rolling);
        i.template_rec_id = Some("new");
        i.triggered_ago = Some(Duration::from_secs(600));
        assert_eq!(
            decide(&i),
            RolloutDecision::Wait {
                why: Wait::Ours,
                scaled: 1
            }
        );
    }

    #[test]
    fn another_rollout_blocks_unless_a_limit_rises_and_the_last_action_is_old() {
        let rolling = [pod(Some("old"), "a"), pod(Some("older"), "b")];
        let mut i = inputs(&rolling);
        i.template_rec_id = Some("old");
        assert_eq!(
            decide(&i),
            RolloutDecision::Wait {
                why: Wait::InProgress,
                scaled: 0
            }
        );
        i.raises_or_removes_limit = true;
        i.last_action_ago = Some(Duration::from_secs(60));
        assert_eq!(
            decide(&i),
            RolloutDecision::Wait {
                why: Wait::InProgress,
                scaled: 0
            }
        );
        i.last_action_ago = Some(LIMIT_RAISE_WAIT);
        assert_eq!(decide(&i), RolloutDecision::Trigger);
    }

    fn pods_strategy() -> impl Strategy<Value = Vec<(u8, u8, bool)>> {
        proptest::collection::vec((0u8..3, 0u8..3, any::<bool>()), 0..12)
    }

    proptest! {
        /// Done exactly when every live pod has the rec-id; a trigger never happens while our own
        /// rollout of this rec-id is in progress; scaled never exceeds the live pods.
        #[test]
        fn decisions_are_consistent(pods in pods_strategy(), ours in any::<bool>(), ago in 0u64..1000, raises in any::<bool>(), last in proptest::option::of(0u64..2000)) {
            let recs = ["new", "old", "older"];
            let revs = ["a", "b", "c"];
            let list: Vec<PodRevision<'_>> = pods.iter().map(|(r, v, t)| PodRevision { rec_id: Some(recs[*r as usize]), revision: Some(revs[*v as usize]), terminating: *t }).collect();
            let i = RolloutInputs {
                rec_id: "new",
                template_rec_id: ours.then_some("new"),
                triggered_ago: Some(Duration::from_secs(ago)),
                pods: &list,
                raises_or_removes_limit: raises,
                last_action_ago: last.map(Duration::from_secs),
            };
            let (scaled, live, in_progress) = progress("new", &list);
            let d = decide(&i);
            prop_assert!(scaled <= live);
            prop_assert_eq!(matches!(d, RolloutDecision::Done { .. }), scaled == live);
            if ours {
                prop_assert!(!matches!(d, RolloutDecision::Trigger));
                if in_progress { prop_assert!(!matches!(d, RolloutDecision::Retrigger)); }
            } else {
                prop_assert!(!matches!(d, RolloutDecision::Retrigger));
            }
        }
    }
}
