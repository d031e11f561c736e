//! Horizontal autoscaling: from pod usage to a replica count, and from a replica count to a scaling
//! action.
//!
//! - [`recommender`]: the local recommender. Utilization or absolute-value objectives, evaluated over
//!   per-pod usage samples with the watermark rule of the Datadog local fallback (target ± 5) and the
//!   Kubernetes HPA's conservative handling of unready pods and pods without metrics.
//! - [`policy`]: what happens to a recommendation before it reaches the scale subresource: bounds,
//!   stabilization windows, the fallback direction, the `scaleUp`/`scaleDown` rules and preview mode,
//!   with every step that changed the value recorded for `lazyscale explain`.
//!
//! Replica counts are `u32` here; the API uses `i32`, and the agent converts at the boundary.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod policy;
pub mod recommender;

/// Where a horizontal recommendation comes from (the DPA value sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValueSource {
    /// The Datadog backend's automatic recommendation.
    Autoscaling,
    /// A manual override.
    Manual,
    /// The local fallback recommender.
    Local,
    /// An external recommender.
    External,
}

impl fmt::Display for ValueSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueSource::Autoscaling => "Autoscaling",
            ValueSource::Manual => "Manual",
            ValueSource::Local => "Local",
            ValueSource::External => "External",
        })
    }
}

/// The direction of a replica change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// More replicas.
    Up,
    /// Fewer replicas.
    Down,
    /// No change.
    None,
}

impl Direction {
    /// The direction from `from` to `to`.
    pub fn of(from: u32, to: u32) -> Direction {
        match to.cmp(&from) {
            std::cmp::Ordering::Greater => Direction::Up,
            std::cmp::Ordering::Less => Direction::Down,
            std::cmp::Ordering::Equal => Direction::None,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::None => "none",
        })
    }
}
