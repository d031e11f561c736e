//! Which pod watches to run for an interest set: scoped watches while few workloads are autoscaled, one
//! cluster-wide watch once that is cheaper.
//!
//! A pure function of the [`Interest`] (the autoscaled workloads with their pod label selectors, and the
//! namespaces included whole) and what is known of the cluster's pod counts:
//!
//! - a namespace included whole, or holding a workload whose selector is unknown, is one watch of that
//!   namespace without a label selector;
//! - every other workload is covered by a watch of its namespace narrowed by its selector (workloads with
//!   the same selector in one namespace share it);
//! - the plan is one cluster-wide watch when it would take more than [`Limits::max_scoped_watches`]
//!   scoped watches, or when the pods of the namespaces watched whole are known to be at least
//!   [`Limits::cluster_percent`] of the cluster's (the scoped watches would decode about as much as the
//!   cluster-wide one, over more connections).
//!
//! The crossover: each scoped watch is one long-running request (the agent's client speaks HTTP/1.1 to
//! the API server, so one connection and its TLS buffers each) and one relist of its own after a
//! `410 Gone`; the cluster-wide watch decodes every pod event of the cluster and lists every pod. At the
//! measured costs (README, `cargo xtask bench lazy`) a scoped watch costs the agent about as much memory
//! as decoding a few hundred pods' churn, so [`Limits::default`] switches at 64 scoped watches.

use std::collections::{BTreeMap, BTreeSet};

use arcstr::ArcStr;

use crate::slim::WorkloadRef;
use crate::store::{BackfillTarget, Interest};

/// One pod watch (and its initial list).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WatchScope {
    /// Every pod of the cluster.
    Cluster,
    /// The pods of one namespace, narrowed by a label selector when there is one.
    Namespace {
        /// The namespace.
        namespace: ArcStr,
        /// The label selector (`None`: every pod of the namespace).
        label_selector: Option<String>,
    },
}

impl WatchScope {
    /// A namespace scope.
    pub fn namespace(namespace: &str, label_selector: Option<&str>) -> Self {
        WatchScope::Namespace {
            namespace: ArcStr::from(namespace),
            label_selector: label_selector.map(str::to_owned),
        }
    }

    /// Whether this scope's list and watch deliver the pods of `workload`, whose pod selector is
    /// `selector` (when known).
    pub fn covers(&self, workload: &WorkloadRef<'_>, selector: Option<&str>) -> bool {
        match self {
            WatchScope::Cluster => true,
            WatchScope::Namespace {
                namespace,
                label_selector,
            } => {
                namespace.as_str() == workload.namespace
                    && label_selector.as_deref().is_none_or(|s| selector == Some(s))
            }
        }
    }

    /// Whether this scope's pods include every pod `other` delivers.
    pub fn includes(&self, other: &WatchScope) -> bool {
        match (self, other) {
            (WatchScope::Cluster, _) => true,
            (WatchScope::Namespace { .. }, WatchScope::Cluster) => false,
            (
                WatchScope::Namespace {
                    namespace: a,
                    label_selector: sa,
                },
                WatchScope::Namespace {
                    namespace: b,
                    label_selector: sb,
                },
            ) => a == b && (sa.is_none() || sa == sb),
        }
    }
}

/// The crossover between scoped watches and one cluster-wide watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// At most this many scoped watches; beyond, one cluster-wide watch.
    pub max_scoped_watches: usize,
    /// Watch the cluster once the namespaces watched whole hold at least this percentage of its pods.
    pub cluster_percent: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_scoped_watches: 64,
            cluster_percent: 50,
        }
    }
}

/// What is known of the cluster's pods (all optional: unknown counts never force a cluster-wide watch).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodCounts {
    /// Pods per namespace.
    pub namespaces: BTreeMap<String, u64>,
    /// Pods in the cluster.
    pub cluster: Option<u64>,
}

/// The watches to run for `interest` (empty for an empty interest: nothing to watch).
pub fn plan(interest: &Interest, counts: &PodCounts, limits: &Limits) -> BTreeSet<WatchScope> {
    let mut whole: BTreeSet<ArcStr> = interest.namespaces().cloned().collect();
    for (k, sel) in interest.workloads() {
        if sel.is_none_or(str::is_empty) {
            whole.insert(k.namespace.clone());
        }
    }
    let mut scopes: BTreeSet<WatchScope> = whole
        .iter()
        .map(|ns| WatchScope::Namespace {
            namespace: ns.clone(),
            label_selector: None,
        })
        .collect();
    for (k, sel) in interest.workloads() {
        if let Some(sel) = sel.filter(|s| !s.is_empty())
            && !whole.contains(k.namespace.as_str())
        {
            scopes.insert(WatchScope::Namespace {
                namespace: k.namespace.clone(),
                label_selector: Some(sel.to_owned()),
            });
        }
    }
    let whole_pods: Option<u64> = whole
        .iter()
        .map(|ns| counts.namespaces.get(ns.as_str()).copied())
        .sum();
    let mostly_cluster = match (whole_pods, counts.cluster) {
        (Some(w), Some(c)) if c > 0 => w.saturating_mul(100) >= limits.cluster_percent.saturating_mul(c),
        _ => false,
    };
    if scopes.len() > limits.max_scoped_watches || (mostly_cluster && !scopes.is_empty()) {
        return BTreeSet::from([WatchScope::Cluster]);
    }
    scopes
}

/// Whether replacing the running watches (`cluster_running`: the cluster-wide one among them) by the
/// `planned` ones is a narrowing: from the cluster-wide watch back to scoped ones. An empty plan (nothing left to watch) is not: it stops every watch and
/// lists nothing, so it needs no wait.
///
/// The collection delays a narrowing ([`crate::watch::Config::narrow_after`]) while it widens at once:
/// the interest set passes through the scoped band on its way down (the DPAs of a cluster deleted in
/// bulk), and narrowing there would start up to [`Limits::max_scoped_watches`] scoped lists and watches
/// only to stop them moments later, while the cluster-wide watch already delivers every pod needed.
pub fn narrows(cluster_running: bool, planned: &BTreeSet<WatchScope>) -> bool {
    cluster_running && !planned.is_empty() && !planned.contains(&WatchScope::Cluster)
}

/// Whether one of `scopes` delivers the pods of `workload` (with pod selector `selector`).
pub fn covered(scopes: &BTreeSet<WatchScope>, workload: &WorkloadRef<'_>, selector: Option<&str>) -> bool {
    scopes.iter().any(|s| s.covers(workload, selector))
}

/// The lists that backfill `targets` (workloads that joined the interest set under a watch that already
/// runs), gathered into fewer requests: per namespace, the distinct selectors, or one list of the whole
/// namespace when a target asks for it or when `namespace_at` or more selectors wait there (the pods the
/// namespace list brings beyond them are dropped by the interest filter). In namespace order.
///
/// The trade: a DPA rollout of thousands of workloads under the cluster-wide watch would otherwise be
/// one list per workload (10,073 pod LISTs for 10,000 DPAs, measured), while the API server answers a
/// selector list by scanning the namespace's pods anyway.
pub fn coalesce_backfills(targets: Vec<BackfillTarget>, namespace_at: usize) -> Vec<BackfillTarget> {
    let mut by_namespace: BTreeMap<ArcStr, Option<BTreeSet<String>>> = BTreeMap::new();
    for BackfillTarget::Namespace {
        namespace,
        label_selector,
    } in targets
    {
        let entry = by_namespace
            .entry(namespace)
            .or_insert_with(|| Some(BTreeSet::new()));
        match (entry.as_mut(), label_selector) {
            (Some(selectors), Some(sel)) => {
                selectors.insert(sel);
            }
            (_, None) => *entry = None,
            (None, Some(_)) => {}
        }
    }
    let mut lists = Vec::new();
    for (namespace, selectors) in by_namespace {
        match selectors {
            Some(selectors) if selectors.len() < namespace_at.max(1) => {
                lists.extend(selectors.into_iter().map(|sel| BackfillTarget::Namespace {
                    namespace: namespace.clone(),
                    label_selector: Some(sel),
                }));
            }
            _ => lists.push(BackfillTarget::Namespace {
                namespace,
                label_selector: None,
            }),
        }
    }
    lists
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slim::{WorkloadKey, WorkloadKind};
    use proptest::prelude::*;

    fn key(ns: &str, name: &str) -> WorkloadKey {
        WorkloadKey::new(ns, WorkloadKind::Deployment, name)
    }

    fn target(ns: &str, sel: Option<&str>) -> BackfillTarget {
        BackfillTarget::Namespace {
            namespace: ArcStr::from(ns),
            label_selector: sel.map(str::to_owned),
        }
    }

    #[test]
    fn backfills_gather_by_namespace() {
        let targets = vec![
            target("b", Some("app=x")),
            target("a", Some("app=1")),
            target("a", Some("app=2")),
            target("b", Some("app=x")),
            target("c", Some("app=y")),
            target("c", None),
            target("a", Some("app=3")),
        ];
        assert_eq!(
            coalesce_backfills(targets.clone(), 3),
            vec![target("a", None), target("b", Some("app=x")), target("c", None)],
            "three selectors in a: the namespace; b's duplicate once; c asked for the whole namespace"
        );
        assert_eq!(
            coalesce_backfills(targets, 4),
            vec![
                target("a", Some("app=1")),
                target("a", Some("app=2")),
                target("a", Some("app=3")),
                target("b", Some("app=x")),
                target("c", None),
            ]
        );
        assert!(coalesce_backfills(Vec::new(), 3).is_empty());
    }

    proptest! {
        /// Whatever is gathered, every target's pods are still listed: by a list of its namespace with
        /// its selector, or of the whole namespace.
        #[test]
        fn gathered_backfills_cover_every_target(
            raw in prop::collection::vec((0..4u8, prop::option::of(0..5u8)), 0..30),
            at in 0..6usize,
        ) {
            let targets: Vec<BackfillTarget> = raw
                .iter()
                .map(|(ns, sel)| target(&format!("ns{ns}"), sel.map(|s| format!("app={s}")).as_deref()))
                .collect();
            let lists = coalesce_backfills(targets.clone(), at);
            let distinct: BTreeSet<_> = targets.iter().map(|t| format!("{t:?}")).collect();
            prop_assert!(lists.len() <= distinct.len());
            for t in &targets {
                let BackfillTarget::Namespace { namespace, label_selector } = t;
                prop_assert!(lists.iter().any(|l| {
                    let BackfillTarget::Namespace { namespace: n, label_selector: s } = l;
                    n == namespace && (s.is_none() || s == label_selector)
                }), "{t:?} not covered by {lists:?}");
            }
        }
    }

    #[test]
    fn one_workload_is_one_selector_watch() {
        let i = Interest::new().with_workload(key("a", "web"), Some("app=web".into()));
        assert_eq!(
            plan(&i, &PodCounts::default(), &Limits::default()),
            BTreeSet::from([WatchScope::namespace("a", Some("app=web"))])
        );
    }

    #[test]
    fn an_unknown_selector_or_a_whole_namespace_watches_the_namespace() {
        let i = Interest::new()
            .with_workload(key("a", "web"), Some("app=web".into()))
            .with_workload(key("a", "db"), None)
            .with_workload(key("b", "x"), Some("app=x".into()))
            .with_namespace("b");
        assert_eq!(
            plan(&i, &PodCounts::default(), &Limits::default()),
            BTreeSet::from([WatchScope::namespace("a", None), WatchScope::namespace("b", None)])
        );
    }

    #[test]
    fn only_leaving_the_cluster_watch_for_scoped_ones_narrows() {
        let cluster = BTreeSet::from([WatchScope::Cluster]);
        let scoped = BTreeSet::from([WatchScope::namespace("a", Some("app=web"))]);
        let none = BTreeSet::new();
        assert!(narrows(true, &scoped));
        assert!(!narrows(true, &cluster));
        assert!(!narrows(true, &none), "nothing to watch stops at once");
        assert!(!narrows(false, &cluster), "widening is immediate");
        assert!(
            !narrows(false, &scoped),
            "scoped to scoped is a change, not a narrowing"
        );
    }

    #[test]
    fn many_workloads_or_a_mostly_covered_cluster_is_one_cluster_watch() {
        let limits = Limits {
            max_scoped_watches: 2,
            ..Limits::default()
        };
        let mut i = Interest::new();
        for n in 0..3 {
            i.add_workload(key("a", &format!("w{n}")), Some(format!("app=w{n}")));
        }
        assert_eq!(
            plan(&i, &PodCounts::default(), &limits),
            BTreeSet::from([WatchScope::Cluster])
        );
        let i = Interest::new().with_namespace("big");
        let counts = PodCounts {
            namespaces: BTreeMap::from([("big".to_string(), 600)]),
            cluster: Some(1000),
        };
        assert_eq!(plan(&i, &counts, &limits), BTreeSet::from([WatchScope::Cluster]));
        let counts = PodCounts {
            namespaces: BTreeMap::from([("big".to_string(), 400)]),
            cluster: Some(1000),
        };
        assert_eq!(
            plan(&i, &counts, &limits),
            BTreeSet::from([WatchScope::namespace("big", None)])
        );
        assert!(plan(&Interest::new(), &counts, &limits).is_empty());
    }

    fn interest_strategy() -> impl Strategy<Value = Interest> {
        let workload = (0..4u8, 0..6u8, prop::option::of(0..3u8));
        (
            prop::collection::vec(workload, 0..24),
            prop::collection::btree_set(0..4u8, 0..2),
        )
            .prop_map(|(ws, nss)| {
                let mut i = Interest::new();
                for (ns, name, sel) in ws {
                    i.add_workload(
                        key(&format!("ns{ns}"), &format!("w{name}")),
                        sel.map(|s| format!("app=s{s}")),
                    );
                }
                for ns in nss {
                    i.add_namespace(&format!("ns{ns}"));
                }
                i
            })
    }

    fn counts_strategy() -> impl Strategy<Value = PodCounts> {
        (
            prop::collection::btree_map((0..4u8).prop_map(|n| format!("ns{n}")), 0..1000u64, 0..4),
            prop::option::of(0..4000u64),
        )
            .prop_map(|(namespaces, cluster)| PodCounts { namespaces, cluster })
    }

    proptest! {
        /// Every autoscaled workload's pods are delivered by a planned watch, whatever the counts.
        #[test]
        fn every_workload_is_covered(i in interest_strategy(), c in counts_strategy(), max in 0..12usize) {
            let limits = Limits { max_scoped_watches: max, cluster_percent: 50 };
            let p = plan(&i, &c, &limits);
            for (k, sel) in i.workloads() {
                prop_assert!(covered(&p, &k.as_ref(), sel), "{k} not covered by {p:?}");
            }
            for ns in i.namespaces() {
                let w = key(ns, "anything");
                prop_assert!(covered(&p, &w.as_ref(), None), "namespace {ns} not covered by {p:?}");
            }
        }

        /// No two watches deliver the same pods (no watch includes another), the scoped plan stays within
        /// the limit, and a cluster-wide plan is that one watch alone.
        #[test]
        fn watches_are_few_and_disjoint(i in interest_strategy(), c in counts_strategy(), max in 0..12usize) {
            let limits = Limits { max_scoped_watches: max, cluster_percent: 50 };
            let p = plan(&i, &c, &limits);
            if p.contains(&WatchScope::Cluster) {
                prop_assert_eq!(p.len(), 1);
            } else {
                prop_assert!(p.len() <= max);
            }
            for a in &p {
                for b in &p {
                    prop_assert!(a == b || !a.includes(b), "{a:?} includes {b:?}");
                }
            }
            prop_assert_eq!(p.is_empty(), i.is_empty());
        }

        /// Without pod counts only the number of watches decides; the plan never depends on the order the
        /// workloads were added in.
        #[test]
        fn deterministic(i in interest_strategy(), max in 0..12usize) {
            let limits = Limits { max_scoped_watches: max, cluster_percent: 50 };
            let mut reversed = Interest::new();
            let mut ws: Vec<_> = i.workloads().map(|(k, s)| (k.clone(), s.map(str::to_owned))).collect();
            ws.reverse();
            for (k, s) in ws { reversed.add_workload(k, s); }
            for ns in i.namespaces() { reversed.add_namespace(ns); }
            prop_assert_eq!(plan(&i, &PodCounts::default(), &limits), plan(&reversed, &PodCounts::default(), &limits));
        }
    }
}
