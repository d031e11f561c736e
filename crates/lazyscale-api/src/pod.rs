//! Pod vocabulary shared by every part of lazyscale: the pod phase ([`PodPhase`]), decoded by the pod
//! cache straight from `status.phase` and read by the horizontal engine and the controller.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A pod's lifecycle phase (`status.phase`). An unrecognised string decodes as
/// [`PodPhase::Unknown`] instead of failing, as Kubernetes clients treat phases they do not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PodPhase {
    /// Accepted, not all containers running yet.
    Pending,
    /// Bound to a node, at least one container running.
    #[default]
    Running,
    /// All containers terminated successfully.
    Succeeded,
    /// All containers terminated, at least one in failure.
    Failed,
    /// `Unknown`, or a string this version does not know.
    Unknown,
}

impl PodPhase {
    /// Parses `status.phase`; unknown values are [`PodPhase::Unknown`].
    pub fn parse(s: &str) -> PodPhase {
        match s {
            "Pending" => PodPhase::Pending,
            "Running" => PodPhase::Running,
            "Succeeded" => PodPhase::Succeeded,
            "Failed" => PodPhase::Failed,
            _ => PodPhase::Unknown,
        }
    }

    /// The phase as Kubernetes writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
            PodPhase::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for PodPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for PodPhase {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PodPhase {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PodPhase;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a pod phase")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<PodPhase, E> {
                Ok(PodPhase::parse(s))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tolerates_unknown_phases() {
        for p in [
            PodPhase::Pending,
            PodPhase::Running,
            PodPhase::Succeeded,
            PodPhase::Failed,
            PodPhase::Unknown,
        ] {
            let json = serde_json::to_string(&p).unwrap_or_default();
            assert_eq!(serde_json::from_str::<PodPhase>(&json).ok(), Some(p));
            assert_eq!(PodPhase::parse(p.as_str()), p);
        }
        assert_eq!(
            serde_json::from_str::<PodPhase>("\"Evicted\"").ok(),
            Some(PodPhase::Unknown)
        );
        assert!(serde_json::from_str::<PodPhase>("7").is_err());
    }
}
