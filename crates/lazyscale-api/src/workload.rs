//! The autoscaled workload, named once for every part of lazyscale: its kind ([`WorkloadKind`]) and its
//! key ([`WorkloadKey`], with the borrowed [`WorkloadRef`] for allocation-free lookups).
//!
//! A *workload* is what a DPA targets and what owns the pods: the pod cache resolves each pod to one
//! (through its ReplicaSet to a Deployment or an Argo Rollout), the vertical recommender keeps its history
//! per workload, the profile controller generates DPAs for labelled workloads, and the simulator drives
//! workloads of the kinds it can create. The key holds its strings as [`ArcStr`]s: cloning it is two
//! reference-count increments, and the pod cache shares one key among all pods of a ReplicaSet.
//!
//! The serialized key is `{"namespace": ..., "kind": ..., "name": ...}` with the kind as its Kubernetes
//! name (`"Deployment"`), the shape the vertical recommender's key had when its kind was a string.

use std::fmt;
use std::hash::{Hash, Hasher};

use arcstr::ArcStr;
use serde::{Deserialize, Serialize};

/// The kind of a workload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment (its pods belong to its ReplicaSets).
    #[default]
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// Argo Rollouts `argoproj.io/v1alpha1` Rollout (its pods belong to its ReplicaSets).
    Rollout,
    /// `apps/v1` ReplicaSet with no recognised parent.
    ReplicaSet,
    /// `apps/v1` DaemonSet.
    DaemonSet,
    /// `batch/v1` Job.
    Job,
    /// Any other kind. [`WorkloadKind::from_kind`] maps every kind it does not know here, so the name of
    /// such a kind is not kept.
    Other,
}

impl WorkloadKind {
    /// The Kubernetes kind name (`"Other"` for [`WorkloadKind::Other`]).
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::Rollout => "Rollout",
            WorkloadKind::ReplicaSet => "ReplicaSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::Job => "Job",
            WorkloadKind::Other => "Other",
        }
    }

    /// The kind for a Kubernetes kind name as found in a DPA's `targetRef` or an owner reference
    /// (case-sensitive); [`WorkloadKind::Other`] for any other name.
    pub fn from_kind(kind: &str) -> WorkloadKind {
        match kind {
            "Deployment" => WorkloadKind::Deployment,
            "StatefulSet" => WorkloadKind::StatefulSet,
            "Rollout" => WorkloadKind::Rollout,
            "ReplicaSet" => WorkloadKind::ReplicaSet,
            "DaemonSet" => WorkloadKind::DaemonSet,
            "Job" => WorkloadKind::Job,
            _ => WorkloadKind::Other,
        }
    }

    /// The `apiVersion` the kind is served at; `None` for [`WorkloadKind::Other`].
    pub const fn api_version(self) -> Option<&'static str> {
        match self {
            WorkloadKind::Deployment
            | WorkloadKind::StatefulSet
            | WorkloadKind::ReplicaSet
            | WorkloadKind::DaemonSet => Some("apps/v1"),
            WorkloadKind::Rollout => Some("argoproj.io/v1alpha1"),
            WorkloadKind::Job => Some("batch/v1"),
            WorkloadKind::Other => None,
        }
    }

    /// The `GroupKind` string (`Deployment.apps`, `Rollout.argoproj.io`); `"Other"` for
    /// [`WorkloadKind::Other`], whose group is not known.
    pub const fn group_kind(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment.apps",
            WorkloadKind::StatefulSet => "StatefulSet.apps",
            WorkloadKind::Rollout => "Rollout.argoproj.io",
            WorkloadKind::ReplicaSet => "ReplicaSet.apps",
            WorkloadKind::DaemonSet => "DaemonSet.apps",
            WorkloadKind::Job => "Job.batch",
            WorkloadKind::Other => "Other",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for WorkloadKind {
    fn from(kind: &str) -> Self {
        WorkloadKind::from_kind(kind)
    }
}

impl From<&String> for WorkloadKind {
    fn from(kind: &String) -> Self {
        WorkloadKind::from_kind(kind)
    }
}

/// Identifies a workload: namespace, kind and name. Cheap to clone (two `ArcStr`s).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkloadKey {
    /// Namespace.
    pub namespace: ArcStr,
    /// Workload kind.
    pub kind: WorkloadKind,
    /// Workload name.
    pub name: ArcStr,
}

/// A borrowed [`WorkloadKey`], to look keys up in hash maps without allocating: it hashes as the key
/// it stands for and is `hashbrown::Equivalent` to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadRef<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Workload kind.
    pub kind: WorkloadKind,
    /// Workload name.
    pub name: &'a str,
}

/// The one hash of a workload, shared by [`WorkloadKey`] and [`WorkloadRef`].
fn hash_workload<H: Hasher>(namespace: &str, kind: WorkloadKind, name: &str, state: &mut H) {
    namespace.hash(state);
    (kind as u8).hash(state);
    name.hash(state);
}

impl Hash for WorkloadKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_workload(&self.namespace, self.kind, &self.name, state);
    }
}

impl Hash for WorkloadRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_workload(self.namespace, self.kind, self.name, state);
    }
}

impl hashbrown::Equivalent<WorkloadKey> for WorkloadRef<'_> {
    fn equivalent(&self, key: &WorkloadKey) -> bool {
        self.kind == key.kind && self.name == &*key.name && self.namespace == &*key.namespace
    }
}

impl WorkloadKey {
    /// A key from its parts; the kind as a [`WorkloadKind`] or its Kubernetes name.
    pub fn new(namespace: &str, kind: impl Into<WorkloadKind>, name: &str) -> Self {
        WorkloadKey {
            namespace: ArcStr::from(namespace),
            kind: kind.into(),
            name: ArcStr::from(name),
        }
    }

    /// The borrowed form.
    pub fn as_ref(&self) -> WorkloadRef<'_> {
        WorkloadRef {
            namespace: &self.namespace,
            kind: self.kind,
            name: &self.name,
        }
    }
}

impl WorkloadRef<'_> {
    /// An owned key.
    pub fn to_key(&self) -> WorkloadKey {
        WorkloadKey::new(self.namespace, self.kind, self.name)
    }
}

impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.kind, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [WorkloadKind; 7] = [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::Rollout,
        WorkloadKind::ReplicaSet,
        WorkloadKind::DaemonSet,
        WorkloadKind::Job,
        WorkloadKind::Other,
    ];

    #[test]
    fn kind_names_round_trip_and_unknown_kinds_are_other() {
        for k in ALL {
            assert_eq!(WorkloadKind::from_kind(k.as_str()), k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert_eq!(WorkloadKind::from_kind("CronJob"), WorkloadKind::Other);
        assert_eq!(WorkloadKind::from_kind("deployment"), WorkloadKind::Other);
        assert_eq!(WorkloadKind::Rollout.api_version(), Some("argoproj.io/v1alpha1"));
        assert_eq!(WorkloadKind::StatefulSet.group_kind(), "StatefulSet.apps");
        assert_eq!(WorkloadKind::Other.api_version(), None);
    }

    /// The JSON the vertical recommender's key serialized to when its kind was a `String` (namespace,
    /// kind, name, in that order) decodes into this key and is written back byte for byte.
    #[test]
    fn the_old_string_keyed_json_decodes_and_is_written_back_unchanged() {
        let old = r#"{"namespace":"shop","kind":"StatefulSet","name":"db"}"#;
        let key: WorkloadKey = serde_json::from_str(old).unwrap();
        assert_eq!(key, WorkloadKey::new("shop", WorkloadKind::StatefulSet, "db"));
        assert_eq!(serde_json::to_string(&key).unwrap(), old);
    }

    #[test]
    fn a_ref_hashes_and_compares_as_its_key() {
        let mut set = hashbrown::HashSet::new();
        set.insert(WorkloadKey::new("ns", WorkloadKind::Deployment, "web"));
        let hit = WorkloadRef {
            namespace: "ns",
            kind: WorkloadKind::Deployment,
            name: "web",
        };
        let miss = WorkloadRef {
            kind: WorkloadKind::StatefulSet,
            ..hit
        };
        assert!(set.contains(&hit));
        assert!(!set.contains(&miss));
        assert_eq!(hit.to_key().as_ref(), hit);
        assert_eq!(
            WorkloadKey::new("ns", "Deployment", "web").to_string(),
            "ns/Deployment/web"
        );
    }
}
