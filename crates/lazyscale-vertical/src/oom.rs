//! The OOM ratchet of memory limits (`dpa-system.md` §8): after an OOM kill of a container that has a
//! memory limit, the limit is raised by the bump ratio (the DPA's `options.outOfMemory.bumpUpRatio`,
//! else the recommender's `oomBumpUpRatio`, default 1.2), and again on each later OOM kill, whatever
//! `controlledValues` says: under `RequestsOnly` the ratchet reaches pods as
//! [`LimitAction::AtLeast`](crate::LimitAction::AtLeast), which only ever raises a limit.
//!
//! The raise is computed from the limit the container had when it was killed. A kill at a limit the
//! ratchet already raised raises it again; another kill of a pod that still runs the old limit (the new
//! one has not reached it yet) asks for the same value and changes nothing. So a container whose memory
//! keeps growing past its limit climbs by the ratio once per limit it is killed at, and stops as soon as
//! it fits. The value never goes down while the ratchet is active (the recommender keeps it as long as
//! its OOM floor, `oomFloorSeconds`).
//!
//! The request bump after an OOM kill is the recommender's ([`crate::Recommender::record_oom`]); this
//! module is only the limit.

/// Granularity of ratcheted limits.
pub const GRANULARITY: u64 = 1 << 20;

/// The ratcheted memory limit after an OOM kill of a container whose memory limit was `killed_at`
/// bytes: `killed_at × ratio` rounded up to a MiB, at least one MiB above `killed_at`, never below
/// `previous` (the ratchet so far). A `ratio` that is not finite or below 1 counts as 1.
pub fn ratchet(previous: Option<u64>, killed_at: u64, ratio: f64) -> u64 {
    let ratio = if ratio.is_finite() && ratio >= 1.0 {
        ratio
    } else {
        1.0
    };
    let scaled = killed_at as f64 * ratio;
    // `as` saturates: too large → u64::MAX
    let raised = if scaled.is_finite() {
        scaled.ceil() as u64
    } else {
        u64::MAX
    };
    let raised = raised
        .checked_next_multiple_of(GRANULARITY)
        .unwrap_or(u64::MAX)
        .max(killed_at.saturating_add(GRANULARITY));
    previous.map_or(raised, |p| p.max(raised))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn raises_by_the_ratio_again_on_each_kill_at_the_raised_limit() {
        // 256 MiB × 1.2 = 307.2 MiB → 308 MiB
        let first = ratchet(None, 256 * MIB, 1.2);
        assert_eq!(first, 308 * MIB);
        // killed again at the raised limit: raised again
        let second = ratchet(Some(first), first, 1.2);
        assert_eq!(second, (308 * MIB * 6).div_ceil(5).next_multiple_of(MIB));
        assert!(second > first);
        // a pod still at the old limit killed again: no second raise
        assert_eq!(ratchet(Some(second), 256 * MIB, 1.2), second);
        // a ratio of 1 (or nonsense) still moves the limit: at least a MiB
        assert_eq!(ratchet(None, 256 * MIB, 1.0), 257 * MIB);
        assert_eq!(ratchet(None, 256 * MIB, f64::NAN), 257 * MIB);
        assert_eq!(ratchet(None, 256 * MIB, 0.5), 257 * MIB);
        assert_eq!(ratchet(None, u64::MAX, 2.0), u64::MAX);
    }

    proptest! {
        /// The ratchet never goes down, always ends above the limit the container was killed at, and
        /// is at least `killed_at × ratio`.
        #[test]
        fn monotone_and_above_the_kill(
            previous in proptest::option::of(0u64..1 << 40),
            killed_at in 1u64..1 << 40,
            ratio in 1.0f64..4.0,
        ) {
            let r = ratchet(previous, killed_at, ratio);
            prop_assert!(r > killed_at);
            prop_assert!(r as f64 >= killed_at as f64 * ratio - 1.0);
            if let Some(p) = previous {
                prop_assert!(r >= p);
            }
            // the same kill again changes nothing
            prop_assert_eq!(ratchet(Some(r), killed_at, ratio), r);
        }

        /// Repeated kills at the ratcheted limit grow at least geometrically: n kills give at least
        /// `start × ratio^n`.
        #[test]
        fn repeated_kills_compound(start in 1u64..1 << 30, ratio in 1.05f64..2.0, n in 1usize..8) {
            let mut limit = start;
            let mut ratcheted = None;
            for _ in 0..n {
                let r = ratchet(ratcheted, limit, ratio);
                ratcheted = Some(r);
                limit = r;
            }
            prop_assert!(limit as f64 >= start as f64 * ratio.powi(n as i32) - 1.0);
        }
    }
}
