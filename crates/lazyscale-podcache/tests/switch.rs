//! Switching pod watches (scoped ↔ cluster-wide) neither loses nor doubles pods, nor leaves one at an
//! older version: a model of the cluster's pod history, an old watch that lags behind and keeps
//! delivering until the new one has listed, and the new watch's list and events, interleaved in any
//! order; at the end the store holds exactly the live pods of interest, each in its latest state.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{Spec, pod};
use hashbrown::HashSet;
use lazyscale_podcache::plan::WatchScope;
use lazyscale_podcache::slim::{WorkloadKey, WorkloadKind};
use lazyscale_podcache::store::{Delivery, Interest, PodStore};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Created or modified, with its readiness.
    Put(u128, bool),
    Delete(u128),
}

/// Interprets raw choices as a valid history: a pod is created first, modified, deleted at most once.
fn history(raw: &[(u128, u8)]) -> Vec<Op> {
    let mut alive: BTreeMap<u128, bool> = BTreeMap::new();
    let mut gone = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for &(uid, op) in raw {
        if gone.contains(&uid) {
            continue;
        }
        if alive.contains_key(&uid) && op == 2 {
            alive.remove(&uid);
            gone.insert(uid);
            out.push(Op::Delete(uid));
        } else {
            alive.insert(uid, op == 1);
            out.push(Op::Put(uid, op == 1));
        }
    }
    out
}

/// Live pods (uid → ready) after the first `n` operations.
fn state(h: &[Op], n: usize) -> BTreeMap<u128, bool> {
    let mut s = BTreeMap::new();
    for op in &h[..n] {
        match *op {
            Op::Put(uid, ready) => {
                s.insert(uid, ready);
            }
            Op::Delete(uid) => {
                s.remove(&uid);
            }
        }
    }
    s
}

/// Odd uids belong to `web` (autoscaled), even ones to `api` (not).
fn wire(uid: u128, ready: bool) -> lazyscale_podcache::PodWire {
    let deployment = if uid % 2 == 1 { "web" } else { "api" };
    let suffix: &'static str = Box::leak(common::suffix(uid as usize).into_boxed_str());
    pod(&Spec {
        deployment,
        uid,
        ready,
        suffix,
        ..Spec::default()
    })
}

fn deliver(store: &PodStore, op: Op, from: Delivery) {
    match op {
        Op::Put(uid, ready) => {
            store.apply_from(&wire(uid, ready), from).unwrap();
        }
        Op::Delete(uid) => {
            store.delete_from(&wire(uid, false), from);
        }
    }
}

enum Step {
    Old(Op),
    NewList(u128, bool),
    NewDone,
    New(Op),
}

fn web() -> WorkloadKey {
    WorkloadKey::new("ns", WorkloadKind::Deployment, "web")
}

/// Runs one switch: the old watch had delivered `a0` operations when the switch began, keeps going
/// up to `a_end`; the new one lists at `s` and then delivers the rest; `order` interleaves them.
fn run_switch(h: &[Op], a0: usize, a_end: usize, s: usize, order: &[bool], new_cluster: bool) {
    let store = Arc::new(PodStore::new());
    store.set_interest(Interest::new().with_workload(web(), Some("app=web".into())));
    for op in &h[..a0] {
        deliver(&store, *op, Delivery::Current);
    }
    let new_scope = if new_cluster {
        WatchScope::Cluster
    } else {
        WatchScope::namespace("ns", Some("app=web"))
    };
    let mut guard = Some(store.begin_switch());
    let mut old: std::collections::VecDeque<Step> = h[a0..a_end].iter().map(|o| Step::Old(*o)).collect();
    let mut new: std::collections::VecDeque<Step> = state(h, s)
        .into_iter()
        .map(|(u, r)| Step::NewList(u, r))
        .chain([Step::NewDone])
        .chain(h[s..].iter().map(|o| Step::New(*o)))
        .collect();
    let mut seen: HashSet<u128> = HashSet::new();
    let mut listed = false;
    if new_cluster {
        store.begin_relist();
    }
    let mut order = order.iter().copied().cycle();
    loop {
        // The old watch stops once the new one has listed and it has nothing more: the switch ends.
        if old.is_empty() && listed {
            guard = None;
        }
        let take_old = !old.is_empty() && (new.is_empty() || order.next().unwrap_or(true));
        let step = if take_old {
            old.pop_front()
        } else {
            new.pop_front()
        };
        let Some(step) = step else { break };
        match step {
            Step::Old(op) => deliver(&store, op, Delivery::Retiring),
            Step::NewList(uid, ready) => {
                seen.insert(uid);
                store.apply_from(&wire(uid, ready), Delivery::Current).unwrap();
            }
            Step::NewDone => {
                if new_cluster {
                    store.finish_relist();
                } else {
                    store.sweep_scope(&new_scope, &seen);
                }
                listed = true;
            }
            Step::New(op) => deliver(&store, op, Delivery::Current),
        }
    }
    drop(guard);
    let want: BTreeMap<u128, bool> = state(h, h.len())
        .into_iter()
        .filter(|(u, _)| u % 2 == 1)
        .collect();
    let mut got = BTreeMap::new();
    store.for_each_pod_of(&web(), |p| {
        assert!(
            got.insert(p.uid(), p.is_ready()).is_none(),
            "pod {} twice",
            p.uid()
        );
    });
    assert_eq!(got, want, "history {h:?}, a0 {a0}, a_end {a_end}, s {s}");
    assert_eq!(store.len(), want.len(), "only pods of interest are cached");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn switching_neither_loses_nor_doubles_nor_rolls_back(
        raw in prop::collection::vec((1..7u128, 0..3u8), 0..30),
        cuts in (0..=100usize, 0..=100usize, 0..=100usize),
        order in prop::collection::vec(any::<bool>(), 1..40),
        new_cluster in any::<bool>(),
    ) {
        let h = history(&raw);
        let n = h.len();
        // The old watch lags: it had delivered a0 ≤ s when the new one listed at s; it delivers up to
        // a_end ≥ a0 before it stops (it may be ahead of s or behind it).
        let s = cuts.0 * n / 100;
        let a0 = cuts.1 * s / 100;
        let a_end = a0 + cuts.2 * (n - a0) / 100;
        run_switch(&h, a0, a_end, s, &order, new_cluster);
    }
}

/// The case the claim rule exists for: the old watch delivers an older version after the new watch
/// listed the newer one, then stops.
#[test]
fn a_lagging_old_watch_cannot_roll_a_pod_back() {
    let h = vec![Op::Put(1, false), Op::Put(1, true), Op::Put(1, false)];
    // old had delivered 1 op, lists nothing new; new lists at 3 (ready=false); old then delivers op 2
    // (ready=true) and stops.
    run_switch(&h, 1, 2, 3, &[false, false, true], false);
    run_switch(&h, 1, 2, 3, &[false, false, true], true);
}
