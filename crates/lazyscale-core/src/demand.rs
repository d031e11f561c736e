//! The demand set: which autoscalers exist, and therefore whether the lazy stack must run.
//!
//! Three kinds of objects are demand: DatadogPodAutoscalers (local or remote; not those generated from a
//! profile, which the caller leaves out: their labelled workload or namespace is the demand, so they
//! never keep the stack alive by themselves), Deployments and StatefulSets labelled
//! `autoscaling.datadoghq.com/profile=<name>`, and namespaces labelled the same way. The label value
//! `excluded` opts an object out and an empty value names no profile, so neither counts. ClusterProfiles
//! are never demand: the built-in profiles are created by the stack itself, so counting them would keep
//! the gate open forever. There is no variant for them, and [`SourceKind::from_api_kind`] maps their kind
//! to `None`.
//!
//! [`Demand`] is updated one observation at a time ([`Demand::apply`], [`Demand::apply_labelled`]) or one
//! kind at a time after a relist ([`Demand::replace_kind`]); each update returns a [`Change`] that tells
//! the caller whether the set became empty or non-empty (feed the gate) and whether the set of
//! namespaces with autoscalers changed (re-register the webhook's namespace selector).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use lazyscale_api::consts;
use lazyscale_api::workload::WorkloadKind;

/// The label that attaches a workload or a namespace to a ClusterProfile.
pub const PROFILE_LABEL: &str = "autoscaling.datadoghq.com/profile";

/// The profile label value that opts a workload or a namespace out.
pub const EXCLUDED_PROFILE: &str = "excluded";

/// Whether a profile label value makes its object an autoscaler: any non-empty value but `excluded`.
pub fn profile_label_counts(value: Option<&str>) -> bool {
    matches!(value, Some(v) if !v.is_empty() && v != EXCLUDED_PROFILE)
}

/// The kinds of objects that are demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    /// A DatadogPodAutoscaler, whatever created it.
    Dpa,
    /// A Deployment labelled with a profile.
    Deployment,
    /// A StatefulSet labelled with a profile.
    StatefulSet,
    /// A namespace labelled with a profile.
    Namespace,
}

impl SourceKind {
    /// Every kind, in order.
    pub const ALL: [SourceKind; 4] = [
        SourceKind::Dpa,
        SourceKind::Deployment,
        SourceKind::StatefulSet,
        SourceKind::Namespace,
    ];

    /// The kind of a Kubernetes object kind name (`DatadogPodAutoscaler`, `Deployment`, `StatefulSet`,
    /// `Namespace`); `None` for anything else, ClusterProfiles included.
    pub fn from_api_kind(kind: &str) -> Option<SourceKind> {
        match kind {
            consts::DPA_KIND => Some(SourceKind::Dpa),
            consts::NAMESPACE_KIND => Some(SourceKind::Namespace),
            _ => match WorkloadKind::from_kind(kind) {
                WorkloadKind::Deployment => Some(SourceKind::Deployment),
                WorkloadKind::StatefulSet => Some(SourceKind::StatefulSet),
                _ => None,
            },
        }
    }

    /// The Kubernetes kind name.
    pub fn api_kind(self) -> &'static str {
        match self {
            SourceKind::Dpa => consts::DPA_KIND,
            SourceKind::Deployment => WorkloadKind::Deployment.as_str(),
            SourceKind::StatefulSet => WorkloadKind::StatefulSet.as_str(),
            SourceKind::Namespace => consts::NAMESPACE_KIND,
        }
    }

    /// Whether objects of this kind count only while they carry a profile label.
    pub fn is_labelled(self) -> bool {
        !matches!(self, SourceKind::Dpa)
    }
}

/// One object that is (or was) demand, identified by kind, namespace and name.
///
/// For a namespace source, `namespace` and `name` are both the namespace's name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    kind: SourceKind,
    namespace: String,
    name: String,
}

impl Source {
    /// A DatadogPodAutoscaler `namespace/name`.
    pub fn dpa(namespace: impl Into<String>, name: impl Into<String>) -> Source {
        Source {
            kind: SourceKind::Dpa,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A labelled Deployment `namespace/name`.
    pub fn deployment(namespace: impl Into<String>, name: impl Into<String>) -> Source {
        Source {
            kind: SourceKind::Deployment,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A labelled StatefulSet `namespace/name`.
    pub fn stateful_set(namespace: impl Into<String>, name: impl Into<String>) -> Source {
        Source {
            kind: SourceKind::StatefulSet,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A labelled namespace.
    pub fn namespace(name: impl Into<String>) -> Source {
        let name = name.into();
        Source {
            kind: SourceKind::Namespace,
            namespace: name.clone(),
            name,
        }
    }

    /// A source of any kind; for [`SourceKind::Namespace`] the `namespace` argument is ignored.
    pub fn new(kind: SourceKind, namespace: impl Into<String>, name: impl Into<String>) -> Source {
        match kind {
            SourceKind::Namespace => Source::namespace(name),
            _ => Source {
                kind,
                namespace: namespace.into(),
                name: name.into(),
            },
        }
    }

    /// The kind of object.
    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    /// The namespace the source belongs to (a namespace source belongs to itself).
    pub fn namespace_name(&self) -> &str {
        &self.namespace
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SourceKind::Namespace => write!(f, "Namespace/{}", self.name),
            kind => write!(f, "{}/{}/{}", kind.api_kind(), self.namespace, self.name),
        }
    }
}

/// What an update did to a [`Demand`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a change may need to reach the gate or the webhook"]
pub struct Change {
    was_empty: bool,
    is_empty: bool,
    members: bool,
    namespaces: bool,
}

impl Change {
    fn none(empty: bool) -> Change {
        Change {
            was_empty: empty,
            is_empty: empty,
            members: false,
            namespaces: false,
        }
    }

    /// Whether any source was added or removed.
    pub fn changed(&self) -> bool {
        self.members
    }

    /// Whether the set of namespaces with autoscalers changed.
    pub fn namespaces_changed(&self) -> bool {
        self.namespaces
    }

    /// Whether the first autoscaler appeared.
    pub fn became_non_empty(&self) -> bool {
        self.was_empty && !self.is_empty
    }

    /// Whether the last autoscaler went away.
    pub fn became_empty(&self) -> bool {
        !self.was_empty && self.is_empty
    }

    /// Whether the demand is empty after the update.
    pub fn is_empty(&self) -> bool {
        self.is_empty
    }

    /// The combined effect of `self` followed by `next`.
    pub fn then(self, next: Change) -> Change {
        Change {
            was_empty: self.was_empty,
            is_empty: next.is_empty,
            members: self.members || next.members,
            namespaces: self.namespaces || next.namespaces,
        }
    }
}

/// The set of autoscalers known to the agent.
///
/// Besides the members it keeps a reference count per namespace, so that
/// [`Demand::namespaces_with_autoscalers`] is cheap and [`Change::namespaces_changed`] is exact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Demand {
    sources: BTreeSet<Source>,
    namespaces: BTreeMap<String, usize>,
}

impl Demand {
    /// An empty demand.
    pub fn new() -> Demand {
        Demand::default()
    }

    /// Records that `source` exists (`present`) or does not (deleted, or no longer labelled).
    pub fn apply(&mut self, source: Source, present: bool) -> Change {
        let was_empty = self.is_empty();
        let mut change = Change::none(was_empty);
        if present {
            if !self.sources.contains(&source) {
                change.namespaces = self.add_namespace(&source.namespace);
                self.sources.insert(source);
                change.members = true;
            }
        } else if self.sources.remove(&source) {
            change.namespaces = self.remove_namespace(&source.namespace);
            change.members = true;
        }
        change.is_empty = self.is_empty();
        change
    }

    /// Records an observation of a labelled object with the value of its profile label (`None` when
    /// unlabelled, or when the object was deleted). DPAs count whatever their labels, so for a DPA source
    /// any label value means "present".
    pub fn apply_labelled(&mut self, source: Source, profile_label: Option<&str>) -> Change {
        let present = if source.kind.is_labelled() {
            profile_label_counts(profile_label)
        } else {
            true
        };
        self.apply(source, present)
    }

    /// Replaces every source of `kind` with `present` (after a relist). Sources of other kinds in
    /// `present` are ignored.
    pub fn replace_kind(&mut self, kind: SourceKind, present: impl IntoIterator<Item = Source>) -> Change {
        let wanted: BTreeSet<Source> = present.into_iter().filter(|s| s.kind == kind).collect();
        let stale: Vec<Source> = self
            .sources
            .iter()
            .filter(|s| s.kind == kind && !wanted.contains(*s))
            .cloned()
            .collect();
        let mut change = Change::none(self.is_empty());
        for s in stale {
            change = change.then(self.apply(s, false));
        }
        for s in wanted {
            change = change.then(self.apply(s, true));
        }
        change
    }

    /// Removes every source (the watches are gone).
    pub fn clear(&mut self) -> Change {
        let mut change = Change::none(self.is_empty());
        change.members = !self.sources.is_empty();
        change.namespaces = !self.namespaces.is_empty();
        self.sources.clear();
        self.namespaces.clear();
        change.is_empty = true;
        change
    }

    /// Whether there is no autoscaler at all (the gate may close).
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// How many sources.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// How many sources of one kind.
    pub fn count(&self, kind: SourceKind) -> usize {
        self.sources.iter().filter(|s| s.kind == kind).count()
    }

    /// Whether `source` is part of the demand.
    pub fn contains(&self, source: &Source) -> bool {
        self.sources.contains(source)
    }

    /// Every source, ordered by kind, namespace and name.
    pub fn iter(&self) -> impl Iterator<Item = &Source> {
        self.sources.iter()
    }

    /// The sources of one kind.
    pub fn of_kind(&self, kind: SourceKind) -> impl Iterator<Item = &Source> {
        self.sources.iter().filter(move |s| s.kind == kind)
    }

    /// The namespaces that hold at least one autoscaler, sorted: the values of the webhook's
    /// `namespaceSelector` (`kubernetes.io/metadata.name In [...]`).
    pub fn namespaces_with_autoscalers(&self) -> impl Iterator<Item = &str> {
        self.namespaces.keys().map(String::as_str)
    }

    /// Whether `namespace` holds at least one autoscaler.
    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.namespaces.contains_key(namespace)
    }

    fn add_namespace(&mut self, namespace: &str) -> bool {
        match self.namespaces.get_mut(namespace) {
            Some(n) => {
                *n += 1;
                false
            }
            None => {
                self.namespaces.insert(namespace.to_owned(), 1);
                true
            }
        }
    }

    fn remove_namespace(&mut self, namespace: &str) -> bool {
        match self.namespaces.get_mut(namespace) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.namespaces.remove(namespace);
                true
            }
            None => false,
        }
    }
}

impl<'a> IntoIterator for &'a Demand {
    type Item = &'a Source;
    type IntoIter = std::collections::btree_set::Iter<'a, Source>;

    fn into_iter(self) -> Self::IntoIter {
        self.sources.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_and_last_autoscaler_are_reported() {
        let mut d = Demand::new();
        let c = d.apply(Source::dpa("a", "web"), true);
        assert!(c.became_non_empty() && c.changed() && c.namespaces_changed());
        let c = d.apply(Source::dpa("a", "web"), true);
        assert!(!c.changed() && !c.became_non_empty());
        let c = d.apply(Source::deployment("a", "api"), true);
        assert!(c.changed() && !c.namespaces_changed() && !c.became_non_empty());
        let c = d.apply(Source::dpa("a", "web"), false);
        assert!(c.changed() && !c.became_empty() && !c.namespaces_changed());
        let c = d.apply(Source::deployment("a", "api"), false);
        assert!(c.became_empty() && c.namespaces_changed());
        assert!(d.is_empty());
        let c = d.apply(Source::deployment("a", "api"), false);
        assert!(!c.changed() && c.is_empty() && !c.became_empty());
    }

    #[test]
    fn labels_decide_for_workloads_and_namespaces_only() {
        let mut d = Demand::new();
        assert!(
            !d.apply_labelled(Source::deployment("a", "x"), Some("excluded"))
                .changed()
        );
        assert!(
            !d.apply_labelled(Source::stateful_set("a", "x"), Some(""))
                .changed()
        );
        assert!(!d.apply_labelled(Source::namespace("b"), None).changed());
        assert!(d.is_empty());
        assert!(
            d.apply_labelled(Source::namespace("b"), Some("datadog-optimize-cost"))
                .became_non_empty()
        );
        // Relabelling to `excluded` removes it.
        assert!(
            d.apply_labelled(Source::namespace("b"), Some("excluded"))
                .became_empty()
        );
        // A DPA counts even without a label, or with `excluded`.
        assert!(d.apply_labelled(Source::dpa("c", "x"), None).became_non_empty());
        assert!(
            !d.apply_labelled(Source::dpa("c", "x"), Some("excluded"))
                .changed()
        );
    }

    #[test]
    fn cluster_profiles_are_never_a_source() {
        assert_eq!(
            SourceKind::from_api_kind("DatadogPodAutoscalerClusterProfile"),
            None
        );
        assert_eq!(SourceKind::from_api_kind("ReplicaSet"), None);
        for k in SourceKind::ALL {
            assert_eq!(SourceKind::from_api_kind(k.api_kind()), Some(k));
        }
    }

    #[test]
    fn namespaces_for_the_webhook() {
        let mut d = Demand::new();
        let _ = d.apply(Source::dpa("b", "x"), true);
        let _ = d.apply(Source::stateful_set("a", "db"), true);
        let _ = d.apply(Source::namespace("c"), true);
        let _ = d.apply(Source::dpa("a", "y"), true);
        assert_eq!(
            d.namespaces_with_autoscalers().collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert!(d.has_namespace("c") && !d.has_namespace("d"));
        assert_eq!(Source::namespace("c").to_string(), "Namespace/c");
        assert_eq!(Source::dpa("a", "y").to_string(), "DatadogPodAutoscaler/a/y");
    }

    #[test]
    fn relist_replaces_one_kind() {
        let mut d = Demand::new();
        let _ = d.apply(Source::dpa("a", "x"), true);
        let _ = d.apply(Source::dpa("b", "y"), true);
        let _ = d.apply(Source::deployment("b", "z"), true);
        let c = d.replace_kind(
            SourceKind::Dpa,
            [
                Source::dpa("b", "y"),
                Source::dpa("c", "w"),
                Source::namespace("ignored"),
            ],
        );
        assert!(c.changed() && c.namespaces_changed() && !c.became_empty());
        let dpas: Vec<_> = d.of_kind(SourceKind::Dpa).map(Source::to_string).collect();
        assert_eq!(dpas, ["DatadogPodAutoscaler/b/y", "DatadogPodAutoscaler/c/w"]);
        assert_eq!(d.count(SourceKind::Deployment), 1);
        assert_eq!(d.len(), 3);
        let c = d
            .replace_kind(SourceKind::Dpa, [])
            .then(d.replace_kind(SourceKind::Deployment, []));
        assert!(c.became_empty());
        assert!(d.clear().is_empty());
    }

    fn source() -> impl Strategy<Value = Source> {
        (0usize..4, 0u8..3, 0u8..3)
            .prop_map(|(k, ns, n)| Source::new(SourceKind::ALL[k], format!("ns{ns}"), format!("o{n}")))
    }

    proptest! {
        #[test]
        fn namespace_counts_match_members(ops in proptest::collection::vec((source(), any::<bool>()), 0..100)) {
            let mut d = Demand::new();
            let mut model = BTreeSet::new();
            for (s, present) in ops {
                let was_empty = model.is_empty();
                let before: BTreeSet<String> = model.iter().map(|s: &Source| s.namespace.clone()).collect();
                if present { model.insert(s.clone()); } else { model.remove(&s); }
                let c = d.apply(s, present);
                let after: BTreeSet<String> = model.iter().map(|s| s.namespace.clone()).collect();
                prop_assert_eq!(c.namespaces_changed(), before != after);
                prop_assert_eq!(c.became_empty(), !was_empty && model.is_empty());
                prop_assert_eq!(c.became_non_empty(), was_empty && !model.is_empty());
                let got: Vec<&str> = d.namespaces_with_autoscalers().collect();
                let want: Vec<&str> = after.iter().map(String::as_str).collect();
                prop_assert_eq!(got, want);
                prop_assert_eq!(d.len(), model.len());
            }
        }
    }
}
