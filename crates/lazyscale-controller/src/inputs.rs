//! Whether a reconcile's inputs agree enough to decide on, and whether a decision is still good when
//! it is about to be written. Pure; the reconcile ([`crate::reconcile`]) applies it.
//!
//! A horizontal decision combines three views taken at different times: the target's replicas (read
//! from `/scale` in the reconcile), its pods (the pod cache, fed by watches) and their usage (the
//! PodMetrics of the last list). The recommender spreads the measured pods' usage over the target's
//! replicas, so a pod view that lags the target counts the same load twice: after a scale-up from 3 to
//! 6 the three measured pods still run at 100 %, and if the three new pods are not in view the
//! recommender reads "6 replicas at 100 %" and asks for 11. That is what the fault suite found after a
//! `410 Gone` (the API server's pod watches delivered nothing for tens of seconds after the relist) and
//! after a black-hole (leadership moved, two reconciles 90 ms apart, the new pods not yet created).
//! So:
//!
//! - [`Hold::PodsSyncing`]: nothing is decided for a namespace whose pod watches have not listed
//!   since their last error or restart (the cache may miss any change made meanwhile);
//! - [`Hold::PodsBehindTarget`]: no scale-up is made while fewer live pods of the target are in view
//!   than its `/scale` replicas: the view has not caught up with the last scale (or the pods cannot be
//!   created, and more replicas would not be either). Scale-downs go on: the recommender counts pods it
//!   has no metrics for at 100 % on the way down, so a short view errs on the side of keeping replicas;
//! - [`Hold::SamplesPredateReadiness`]: no scale-up is made while a ready pod's usage sample was taken
//!   before the target's last pod became Ready. Until then the old pods' samples still carry the share
//!   of the load the new pod has since taken over: a PodMetrics list that mixes them with newer samples
//!   (a round of samples written pod by pod, or scraped node by node) reads 3 old pods at 100 % and a
//!   new one at 50 % as more load than there is, and scales 6 -> 7 when 6 is right. The HPA's rule for
//!   a new pod's own first samples ([`lazyscale_core::horizontal::recommender`]) does not cover the
//!   old pods. The hold ends when every such pod has a newer sample, or when its old sample goes stale
//!   (the recommender ignores it then), so it lasts at most one sample age;
//! - a decision is dropped, not written late ([`check_basis`]), when the replicas it was based on were
//!   read more than [`MAX_DECISION_AGE`] before the write (a held connection delivers its requests
//!   late) or a pod watch lost its sync since the pods were read; the `/scale` write itself is fenced
//!   by the resourceVersion that was read, so a target changed in between refuses it (409).
//!
//! Held and dropped decisions are retried after [`RETRY`]; a hold shows as `HorizontalAbleToScale=False`
//! with the reason [`reasons::INPUTS_SYNCING`] and in `lazyscale explain`.

use std::time::Duration;

use lazyscale_api::consts::conditions::reasons;
use lazyscale_api::time::{self, Timestamp};

/// Longest time from reading the target's replicas to writing a decision based on them. A reconcile
/// takes milliseconds (a few round trips); 5 s is far beyond a slow API server's answers and well
/// under a recommendation period, so only a request held on the way (a stalled connection, a paused
/// process) trips it.
pub const MAX_DECISION_AGE: Duration = Duration::from_secs(5);

/// How much later than the target's last Ready transition a ready pod's sample must have been taken to
/// count as measured after it: the transition time has whole seconds and a sample's time may be
/// rounded to the second, so a sample 1 s "after" may still predate the new pod in fact.
pub const SAMPLE_AFTER_READY: Duration = Duration::from_secs(2);

/// When a held or dropped decision is tried again.
pub const RETRY: Duration = Duration::from_secs(1);

/// The state of the pod view of one namespace, as the pod source reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodSync {
    /// Every watch delivering the namespace's pods listed since its last error or restart.
    Synced,
    /// A watch has not completed its first list yet (the namespace was just added).
    Listing,
    /// A watch failed or restarted and has not listed again yet.
    Relisting,
}

/// Why a decision is not taken now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// The pod cache of the namespace is (re)listing.
    PodsSyncing(PodSync),
    /// A scale-up, with fewer live pods of the target in view than its replicas.
    PodsBehindTarget {
        /// The target's replicas (`/scale` `spec.replicas`).
        replicas: u32,
        /// Live pods of the target in the pod cache.
        seen: u32,
    },
    /// A scale-up, with ready pods whose usage sample predates the target's last Ready transition.
    SamplesPredateReadiness {
        /// The last Ready transition among the target's ready pods.
        ready_at: Timestamp,
        /// Ready pods whose (non-stale) sample was taken before `ready_at` + [`SAMPLE_AFTER_READY`].
        pods: u32,
    },
}

impl Hold {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        reasons::INPUTS_SYNCING
    }

    /// The condition message (stable while the hold lasts, so it writes the status once).
    pub fn message(&self) -> String {
        match self {
            Hold::PodsSyncing(PodSync::Relisting) => {
                "the pod cache is relisting after a watch error or restart: \
                 horizontal decisions are held until it has listed"
                    .to_owned()
            }
            Hold::PodsSyncing(_) => {
                "the pod cache has not listed the target's pods yet: horizontal decisions are held".to_owned()
            }
            Hold::PodsBehindTarget { replicas, .. } => format!(
                "fewer pods of the target are in the pod cache than its {replicas} replicas: \
                 scale-ups are held until the cache has caught up"
            ),
            Hold::SamplesPredateReadiness { .. } => {
                "the pod metrics of some ready pods were taken before the target's last pod became Ready: \
                 scale-ups are held until every ready pod has a newer sample"
                    .to_owned()
            }
        }
    }

    /// Whether the hold shows in the status: a namespace listed for the first time holds silently, as
    /// every reconcile at startup would otherwise write a status twice.
    pub fn shows(&self) -> bool {
        !matches!(self, Hold::PodsSyncing(PodSync::Listing))
    }
}

/// Holds every decision of a namespace whose pods are not synced.
pub fn hold_for_pods(sync: PodSync) -> Option<Hold> {
    (sync != PodSync::Synced).then_some(Hold::PodsSyncing(sync))
}

/// Holds a scale-up from `current` to `desired` while fewer than `current` live pods are in view.
pub fn hold_scale_up(current: u32, desired: u32, live_pods: u32) -> Option<Hold> {
    (desired > current && live_pods < current).then_some(Hold::PodsBehindTarget {
        replicas: current,
        seen: live_pods,
    })
}

/// One live, ready pod of the target, as [`hold_for_samples`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyPod {
    /// When its `Ready` condition last changed (to `True`), when known.
    pub ready_since: Option<Timestamp>,
    /// When its usage sample was taken (the end of the sample's window), if it has one.
    pub sampled_at: Option<Timestamp>,
}

/// Holds a scale-up from `current` to `desired` while a ready pod's sample, not older than
/// `max_age` at `now` (older ones the recommender ignores), was taken before the last Ready
/// transition among `ready` + [`SAMPLE_AFTER_READY`]. Pods without a sample do not hold (the
/// recommender's rules for missing samples apply to them).
pub fn hold_for_samples(
    current: u32,
    desired: u32,
    ready: &[ReadyPod],
    now: Timestamp,
    max_age: Duration,
) -> Option<Hold> {
    if desired <= current {
        return None;
    }
    let ready_at = ready.iter().filter_map(|p| p.ready_since).max()?;
    let measured_after = time::add(ready_at, SAMPLE_AFTER_READY).unwrap_or(ready_at);
    let pods = ready
        .iter()
        .filter_map(|p| p.sampled_at)
        .filter(|at| time::since(now, *at) <= max_age && *at < measured_after)
        .count();
    (pods > 0).then(|| Hold::SamplesPredateReadiness {
        ready_at,
        pods: u32::try_from(pods).unwrap_or(u32::MAX),
    })
}

/// What a decision was based on, to check before it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Basis {
    /// When the request that read the target's replicas was sent.
    pub replicas_read_at: Timestamp,
    /// The pod source's count of sync losses when the pods were read.
    pub sync_losses: u64,
}

/// Why a decision is dropped instead of written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The replicas were read this long before the write.
    Aged(Duration),
    /// A pod watch lost its sync after the pods were read.
    PodsResynced,
    /// The target changed between the read and the write (the fenced write was refused).
    TargetChanged,
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dropped::Aged(age) => write!(
                f,
                "its inputs were read {:.1}s ago (more than {}s)",
                age.as_secs_f64(),
                MAX_DECISION_AGE.as_secs()
            ),
            Dropped::PodsResynced => f.write_str("a pod watch lost its sync after the pods were read"),
            Dropped::TargetChanged => f.write_str("the target changed after its replicas were read"),
        }
    }
}

/// Whether a decision on `basis` may be written at `now`, with the pod source at `sync_losses`.
pub fn check_basis(
    basis: &Basis,
    now: Timestamp,
    sync_losses: u64,
    max_age: Duration,
) -> Result<(), Dropped> {
    if sync_losses != basis.sync_losses {
        return Err(Dropped::PodsResynced);
    }
    let age = time::since(now, basis.replicas_read_at);
    if age > max_age {
        return Err(Dropped::Aged(age));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(ms: u64) -> Timestamp {
        Timestamp::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
    }

    #[test]
    fn unsynced_pods_hold_everything_and_show_unless_first_listed() {
        assert_eq!(hold_for_pods(PodSync::Synced), None);
        let relisting = hold_for_pods(PodSync::Relisting);
        assert_eq!(relisting, Some(Hold::PodsSyncing(PodSync::Relisting)));
        assert!(relisting.as_ref().is_some_and(Hold::shows));
        assert!(hold_for_pods(PodSync::Listing).is_some_and(|h| !h.shows()));
        assert_eq!(relisting.map(|h| h.reason()), Some(reasons::INPUTS_SYNCING));
    }

    #[test]
    fn the_fault_suites_scale_ups_are_held() {
        // 3 -> 6 written, the cache still shows the 3 measured pods: no 6 -> 11.
        assert_eq!(
            hold_scale_up(6, 11, 3),
            Some(Hold::PodsBehindTarget { replicas: 6, seen: 3 })
        );
        // One new pod in view (the black-hole run's 6 -> 9).
        assert!(hold_scale_up(6, 9, 4).is_some());
        // The first scale-up, every pod in view.
        assert_eq!(hold_scale_up(3, 6, 3), None);
        // A scale-down goes on with a short view.
        assert_eq!(hold_scale_up(6, 4, 3), None);
        // Surge pods of a rollout in view.
        assert_eq!(hold_scale_up(6, 8, 8), None);
    }

    #[test]
    fn a_held_connection_ages_the_decision() {
        let basis = Basis {
            replicas_read_at: t(0),
            sync_losses: 4,
        };
        assert_eq!(check_basis(&basis, t(300), 4, MAX_DECISION_AGE), Ok(()));
        assert_eq!(
            check_basis(&basis, t(20_000), 4, MAX_DECISION_AGE),
            Err(Dropped::Aged(Duration::from_secs(20)))
        );
        assert_eq!(
            check_basis(&basis, t(300), 5, MAX_DECISION_AGE),
            Err(Dropped::PodsResynced)
        );
        // A clock that went back does not drop anything.
        assert_eq!(
            check_basis(&basis, Timestamp::UNIX_EPOCH, 4, MAX_DECISION_AGE),
            Ok(())
        );
    }

    #[test]
    fn a_scale_up_waits_for_samples_taken_after_the_last_pod_became_ready() {
        let max = Duration::from_secs(180);
        let pod = |ready: u64, sampled: Option<u64>| ReadyPod {
            ready_since: Some(t(ready)),
            sampled_at: sampled.map(t),
        };
        // The fault suite's 3 -> 6: the three old pods' samples are from before the new pods became
        // Ready (at 10 s), one new pod has a newer sample, two have none yet. 6 -> 7 is held.
        let mixed = [
            pod(0, Some(9_000)),
            pod(0, Some(9_000)),
            pod(0, Some(9_000)),
            pod(10_000, Some(15_000)),
            pod(10_000, None),
            pod(10_000, None),
        ];
        assert_eq!(
            hold_for_samples(6, 7, &mixed, t(15_500), max),
            Some(Hold::SamplesPredateReadiness {
                ready_at: t(10_000),
                pods: 3
            })
        );
        // A scale-down, or staying, goes on.
        assert_eq!(hold_for_samples(6, 5, &mixed, t(15_500), max), None);
        assert_eq!(hold_for_samples(6, 6, &mixed, t(15_500), max), None);
        // Within the margin of whole-second times a sample does not count as newer.
        let edge = [pod(0, Some(11_000)), pod(10_000, Some(11_000))];
        assert!(hold_for_samples(2, 3, &edge, t(11_500), max).is_some());
        // Every ready pod measured after: decided.
        let fresh = [pod(0, Some(12_000)), pod(10_000, Some(12_000)), pod(10_000, None)];
        assert_eq!(hold_for_samples(3, 6, &fresh, t(12_500), max), None);
        // An old sample the recommender ignores as stale holds nothing: the hold lasts at most max.
        assert_eq!(hold_for_samples(6, 7, &mixed, t(9_000 + 180_001), max), None);
        // No known transition: nothing to compare with.
        let unknown = [ReadyPod {
            ready_since: None,
            sampled_at: Some(t(0)),
        }];
        assert_eq!(hold_for_samples(1, 2, &unknown, t(1), max), None);
        assert!(
            hold_for_samples(6, 7, &mixed, t(15_500), max)
                .is_some_and(|h| h.shows() && h.reason() == reasons::INPUTS_SYNCING)
        );
    }

    proptest! {
        /// A scale-up is held by the samples exactly when a ready pod has a sample, not stale, taken
        /// before the last Ready transition plus the margin; nothing but a scale-up is ever held.
        #[test]
        fn sample_holds_are_exactly_the_predating_samples(
            current in 0u32..20,
            desired in 0u32..40,
            pods in proptest::collection::vec((0u64..60_000, proptest::option::of(0u64..60_000)), 0..12),
            now in 0u64..300_000,
        ) {
            let max = Duration::from_secs(180);
            let ready: Vec<ReadyPod> = pods
                .iter()
                .map(|(r, s)| ReadyPod { ready_since: Some(t(*r)), sampled_at: s.map(t) })
                .collect();
            let held = hold_for_samples(current, desired, &ready, t(now), max);
            let last = pods.iter().map(|(r, _)| *r).max();
            let predating = pods
                .iter()
                .filter_map(|(_, s)| *s)
                .filter(|s| now.saturating_sub(*s) <= 180_000 && last.is_some_and(|l| *s < l + 2_000))
                .count();
            prop_assert_eq!(held.is_some(), desired > current && predating > 0);
            if let Some(Hold::SamplesPredateReadiness { ready_at, pods: n }) = held {
                prop_assert_eq!(Some(ready_at), last.map(t));
                prop_assert_eq!(n as usize, predating);
            }
        }

        /// A scale-up is allowed exactly when every replica of the target is in view; nothing else
        /// is ever held by the view.
        #[test]
        fn scale_ups_need_the_whole_target_in_view(current in 0u32..200, desired in 0u32..400, seen in 0u32..400) {
            let held = hold_scale_up(current, desired, seen);
            prop_assert_eq!(held.is_some(), desired > current && seen < current);
            if let Some(Hold::PodsBehindTarget { replicas, seen: s }) = held {
                prop_assert_eq!((replicas, s), (current, seen));
            }
        }

        /// A decision passes exactly when the pods did not resync and it is at most `max` old.
        #[test]
        fn the_basis_check_is_age_and_resync(read in 0u64..100_000, after in 0u64..100_000, max_ms in 0u64..20_000,
                                             losses in 0u64..3, now_losses in 0u64..3) {
            let basis = Basis { replicas_read_at: t(read), sync_losses: losses };
            let max = Duration::from_millis(max_ms);
            let r = check_basis(&basis, t(read + after), now_losses, max);
            prop_assert_eq!(r.is_ok(), losses == now_losses && after <= max_ms);
            if losses != now_losses {
                prop_assert_eq!(r, Err(Dropped::PodsResynced));
            }
        }
    }
}
