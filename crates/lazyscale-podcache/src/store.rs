//! The pod store: [`SlimPod`]s of the autoscaled workloads only, indexed by uid and by workload.
//!
//! **Interest filter.** The store caches the pods of an *interest set* ([`Interest`]: workloads, plus
//! whole namespaces) and drops every other decoded pod on arrival, so memory follows what is autoscaled,
//! not the size of the cluster. [`PodStore::set_interest`] evicts the pods of workloads that left the set
//! and reports the workloads that joined it; their pods were dropped earlier, so the watch layer backfills
//! them with a list scoped to the workload (see [`crate::watch::backfill`]) instead of relisting the
//! cluster. While a backfill runs, deletions are remembered (tombstones) and pods the watch already
//! delivered are not overwritten, so a backfill can never resurrect or roll back a pod.
//!
//! **Relists without a second buffer.** kube's reflector store swaps in a fresh map on every relist, which
//! doubles memory at the worst moment. Here every pod carries a generation tag: [`PodStore::begin_relist`]
//! bumps the generation, pods seen during the relist are updated in place and re-tagged, and
//! [`PodStore::finish_relist`] sweeps the pods whose tag is stale (they vanished while the watch was
//! down). Peak memory during a relist is the steady state plus whatever pods were added.
//!
//! **Layout.** Pods live in a chunked slab (256 slots per chunk, so growth never over-allocates by more
//! than a chunk) and are found through a hash table of 4-byte slot indices keyed by uid, and through
//! per-workload slot lists that also keep a ready count. The slab is compacted when it is less than half
//! full. Shared parts of pods are interned ([`crate::intern`]) and swept as pods go away.
//!
//! **Concurrency.** One `parking_lot` read-write lock: the watch task writes one pod at a time (decoding
//! happens outside the lock), and readers (controller, webhook) take short read locks.

use std::mem::size_of;
use std::sync::Arc;

use arcstr::ArcStr;
use hashbrown::{HashMap, HashSet, HashTable};
use parking_lot::RwLock;
use thiserror::Error;

use crate::intern::{Interner, InternerStats};
use crate::plan::WatchScope;
use crate::slim::{SlimError, SlimPod, WorkloadKey, WorkloadRef, wire_uid, wire_workload};
use crate::wire::PodWire;

/// Errors of store updates.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The pod cannot be cached (missing name or namespace).
    #[error("invalid pod: {0}")]
    Invalid(#[from] SlimError),
}

/// What an update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// A new pod was cached.
    Inserted,
    /// A cached pod was replaced.
    Updated,
    /// A cached pod was removed (deleted, or no longer of interest).
    Removed,
    /// Not of interest (or unknown, for deletes): nothing cached.
    Dropped,
    /// A backfill skipped the pod because the watch already delivered it or it was deleted meanwhile.
    Skipped,
}

/// The workloads (and whole namespaces) whose pods the store keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    workloads: HashMap<WorkloadKey, Option<String>>,
    namespaces: HashSet<ArcStr>,
}

impl Interest {
    /// An empty interest set: nothing is cached.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a workload, with the label selector of its pods if known (used to scope its backfill).
    pub fn add_workload(&mut self, key: WorkloadKey, label_selector: Option<String>) {
        self.workloads.insert(key, label_selector);
    }

    /// Adds every workload of a namespace.
    pub fn add_namespace(&mut self, namespace: &str) {
        self.namespaces.insert(ArcStr::from(namespace));
    }

    /// Builder form of [`Interest::add_workload`].
    #[must_use]
    pub fn with_workload(mut self, key: WorkloadKey, label_selector: Option<String>) -> Self {
        self.add_workload(key, label_selector);
        self
    }

    /// Builder form of [`Interest::add_namespace`].
    #[must_use]
    pub fn with_namespace(mut self, namespace: &str) -> Self {
        self.add_namespace(namespace);
        self
    }

    /// Whether pods of `workload` are kept.
    pub fn contains(&self, workload: &WorkloadRef<'_>) -> bool {
        self.namespaces.contains(workload.namespace) || self.workloads.contains_key(workload)
    }

    /// The workloads named explicitly, with their selectors.
    pub fn workloads(&self) -> impl Iterator<Item = (&WorkloadKey, Option<&str>)> {
        self.workloads.iter().map(|(k, s)| (k, s.as_deref()))
    }

    /// The pod label selector given for `workload`, if any.
    pub fn selector(&self, workload: &WorkloadKey) -> Option<&str> {
        self.workloads.get(workload)?.as_deref()
    }

    /// [`Interest::selector`] of a borrowed workload.
    pub fn selector_of(&self, workload: &WorkloadRef<'_>) -> Option<&str> {
        self.workloads.get(workload)?.as_deref()
    }

    /// The namespaces included whole.
    pub fn namespaces(&self) -> impl Iterator<Item = &ArcStr> {
        self.namespaces.iter()
    }

    /// Whether nothing is of interest.
    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty() && self.namespaces.is_empty()
    }
}

impl FromIterator<WorkloadKey> for Interest {
    fn from_iter<T: IntoIterator<Item = WorkloadKey>>(iter: T) -> Self {
        Interest {
            workloads: iter.into_iter().map(|k| (k, None)).collect(),
            namespaces: HashSet::new(),
        }
    }
}

/// A workload that joined the interest set and needs a backfill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackfillTarget {
    /// List the namespace, optionally narrowed by a label selector.
    Namespace {
        /// Namespace to list.
        namespace: ArcStr,
        /// Label selector, when every new workload in the namespace has one.
        label_selector: Option<String>,
    },
}

/// What [`PodStore::set_interest`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterestUpdate {
    /// Lists to run so the newly interesting workloads' pods are cached (one per namespace and selector;
    /// a namespace with any selector-less new workload is listed whole, once).
    pub backfill: Vec<BackfillTarget>,
    /// Pods evicted because their workload left the set.
    pub evicted: usize,
}

/// Pod and ready counts of one workload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkloadCounts {
    /// Cached pods.
    pub pods: usize,
    /// Cached pods whose `Ready` condition is `True`.
    pub ready: usize,
}

/// Store counters and sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Cached pods.
    pub pods: usize,
    /// Workloads with at least one cached pod.
    pub workloads: usize,
    /// Approximate heap bytes of the whole store, computed from the sizes of its parts.
    pub heap_bytes: usize,
    /// The indexes' share of `heap_bytes`: the uid index, the owner index (workload → slots) and the
    /// interest set (its tables and the pod selectors' text).
    pub index_bytes: usize,
    /// The interner's share of `heap_bytes`, and its counts.
    pub interned: InternerStats,
    /// Decoded pods dropped because they are not of interest.
    pub dropped: u64,
    /// Decoded pods that could not be cached (no name or namespace).
    pub invalid: u64,
    /// Pods evicted by interest changes.
    pub evicted: u64,
    /// Pods removed by relist sweeps (vanished while the watch was down).
    pub swept: u64,
}

// === Slab ===

/// Slots per slab chunk: growth over-allocates by at most one chunk.
const CHUNK: usize = 256;

#[derive(Default)]
struct Slab {
    chunks: Vec<Box<[Option<SlimPod>]>>,
    free: Vec<u32>,
    next: u32,
    len: usize,
}

impl Slab {
    fn slot(&self, i: u32) -> Option<&Option<SlimPod>> {
        let i = i as usize;
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    fn get(&self, i: u32) -> Option<&SlimPod> {
        self.slot(i)?.as_ref()
    }

    fn slot_mut(&mut self, i: u32) -> Option<&mut Option<SlimPod>> {
        let i = i as usize;
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }

    fn insert(&mut self, pod: SlimPod) -> u32 {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = self.next;
                if i as usize == self.chunks.len() * CHUNK {
                    self.chunks.push((0..CHUNK).map(|_| None).collect());
                }
                self.next += 1;
                i
            }
        };
        if let Some(slot) = self.slot_mut(i) {
            *slot = Some(pod);
            self.len += 1;
        }
        i
    }

    fn take(&mut self, i: u32) -> Option<SlimPod> {
        let pod = self.slot_mut(i)?.take()?;
        self.free.push(i);
        self.len -= 1;
        Some(pod)
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &SlimPod)> {
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .enumerate()
            .filter_map(|(i, p)| Some((i as u32, p.as_ref()?)))
    }

    fn capacity(&self) -> usize {
        self.chunks.len() * CHUNK
    }

    fn heap_bytes(&self) -> usize {
        self.capacity() * size_of::<Option<SlimPod>>()
            + self.chunks.capacity() * size_of::<Box<[Option<SlimPod>]>>()
            + self.free.capacity() * size_of::<u32>()
    }
}

fn uid_hash(uid: u128) -> u64 {
    (((uid >> 64) as u64) ^ (uid as u64))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(26)
}

/// Pods of one workload.
#[derive(Default)]
struct WorkloadPods {
    slots: Vec<u32>,
    ready: u32,
}

/// Sweep the interner once this many shared values may have been released (plus the interner's size).
const SWEEP_AFTER: usize = 256;

#[derive(Default)]
struct Inner {
    interner: Interner,
    slab: Slab,
    by_uid: HashTable<u32>,
    by_workload: HashMap<WorkloadKey, WorkloadPods>,
    /// `None`: cache every pod.
    interest: Option<Interest>,
    generation: u8,
    relisting: bool,
    backfills: u32,
    tombstones: HashSet<u128>,
    /// Watch switches in progress ([`PodStore::begin_switch`]).
    switches: u32,
    /// While switching: the pods a current (not retiring) watch delivered since the switch began.
    claimed: HashSet<u128>,
    /// While switching: the current watches that have completed a list since the switch began.
    listed: Vec<WatchScope>,
    own_heap: usize,
    since_sweep: usize,
    dropped: u64,
    invalid: u64,
    evicted: u64,
    swept: u64,
}

/// The thread-safe pod store. See the [module docs](self).
pub struct PodStore {
    inner: RwLock<Inner>,
}

impl Default for PodStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PodStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.stats();
        f.debug_struct("PodStore")
            .field("pods", &s.pods)
            .field("workloads", &s.workloads)
            .field("heap_bytes", &s.heap_bytes)
            .finish()
    }
}

impl PodStore {
    /// A store filtering to an (initially empty) interest set: nothing is cached until
    /// [`PodStore::set_interest`] is called.
    pub fn new() -> Self {
        PodStore {
            inner: RwLock::new(Inner {
                interest: Some(Interest::new()),
                ..Inner::default()
            }),
        }
    }

    /// A store that caches every pod (tools and tests); [`PodStore::set_interest`] turns filtering on.
    pub fn unfiltered() -> Self {
        PodStore {
            inner: RwLock::new(Inner::default()),
        }
    }

    // --- interest ---

    /// Replaces the interest set: evicts pods no longer of interest and returns the backfills needed for
    /// workloads that joined.
    pub fn set_interest(&self, interest: Interest) -> InterestUpdate {
        let mut g = self.inner.write();
        let inner = &mut *g;
        let old = inner.interest.take();
        let backfill = backfill_targets(old.as_ref(), &interest);
        let doomed: Vec<u32> = inner
            .slab
            .iter()
            .filter(|(_, p)| !p.workload().is_some_and(|w| interest.contains(&w.as_ref())))
            .map(|(i, _)| i)
            .collect();
        for &i in &doomed {
            inner.remove_slot(i);
        }
        inner.evicted += doomed.len() as u64;
        inner.interest = Some(interest);
        inner.after_removals(true);
        InterestUpdate {
            backfill,
            evicted: doomed.len(),
        }
    }

    /// Whether pods of `workload` are kept.
    pub fn is_interesting(&self, workload: &WorkloadRef<'_>) -> bool {
        self.inner
            .read()
            .interest
            .as_ref()
            .is_none_or(|i| i.contains(workload))
    }

    /// The current interest set (`None` for an unfiltered store).
    pub fn interest(&self) -> Option<Interest> {
        self.inner.read().interest.clone()
    }

    // --- watch events ---

    /// A pod was added or modified (watch `Apply`, or `InitApply` during a relist).
    pub fn apply(&self, pod: &PodWire) -> Result<ApplyOutcome, StoreError> {
        self.apply_from(pod, Delivery::Current)
    }

    /// [`PodStore::apply`] from a watch in the given role (see [`PodStore::begin_switch`]).
    pub fn apply_from(&self, pod: &PodWire, from: Delivery) -> Result<ApplyOutcome, StoreError> {
        let mut g = self.inner.write();
        if g.switching_skips(pod, from) {
            return Ok(ApplyOutcome::Skipped);
        }
        g.upsert(pod, false, from == Delivery::Retiring)
    }

    /// A pod was deleted.
    pub fn delete(&self, pod: &PodWire) -> ApplyOutcome {
        self.delete_from(pod, Delivery::Current)
    }

    /// [`PodStore::delete`] from a watch in the given role (see [`PodStore::begin_switch`]).
    pub fn delete_from(&self, pod: &PodWire, from: Delivery) -> ApplyOutcome {
        let uid = wire_uid(pod);
        let mut g = self.inner.write();
        if g.switching_skips(pod, from) {
            return ApplyOutcome::Skipped;
        }
        if g.backfills > 0 {
            g.tombstones.insert(uid);
        }
        match g.find(uid) {
            Some(i) => {
                g.remove_slot(i);
                g.after_removals(false);
                ApplyOutcome::Removed
            }
            None => ApplyOutcome::Dropped,
        }
    }

    /// A relist starts (watch `Init`): pods not re-applied before [`PodStore::finish_relist`] will be swept.
    pub fn begin_relist(&self) {
        let mut g = self.inner.write();
        g.generation = g.generation.wrapping_add(1);
        g.relisting = true;
    }

    /// A relist is complete (watch `InitDone`): removes the pods it did not list; returns how many.
    pub fn finish_relist(&self) -> usize {
        let mut g = self.inner.write();
        let inner = &mut *g;
        let current = inner.generation;
        let stale: Vec<u32> = inner
            .slab
            .iter()
            .filter(|(_, p)| p.generation != current)
            .map(|(i, _)| i)
            .collect();
        for &i in &stale {
            inner.remove_slot(i);
        }
        inner.swept += stale.len() as u64;
        inner.relisting = false;
        if inner.switches > 0 {
            inner.listed.push(WatchScope::Cluster);
        }
        // A list fills the per-workload vectors by doubling; trim the slack once.
        for w in inner.by_workload.values_mut() {
            w.slots.shrink_to_fit();
        }
        inner.after_removals(true);
        stale.len()
    }

    /// A scoped watch finished its (re)list: removes the cached pods that `scope` delivers but that its
    /// list did not contain (`seen`: the uids listed); returns how many. Pods delivered by other scopes
    /// are left alone, so scoped watches relist independently of one another.
    pub fn sweep_scope(&self, scope: &WatchScope, seen: &HashSet<u128>) -> usize {
        let mut g = self.inner.write();
        let inner = &mut *g;
        let stale: Vec<u32> = inner
            .slab
            .iter()
            .filter(|(_, p)| !seen.contains(&p.uid()) && inner.delivers(scope, p))
            .map(|(i, _)| i)
            .collect();
        for &i in &stale {
            inner.remove_slot(i);
        }
        inner.swept += stale.len() as u64;
        if inner.switches > 0 {
            inner.listed.push(scope.clone());
        }
        for w in inner.by_workload.values_mut() {
            w.slots.shrink_to_fit();
        }
        inner.after_removals(true);
        stale.len()
    }

    /// The cluster-wide watch stopped in the middle of a relist: ends relist mode without sweeping (the
    /// list was incomplete, so its absences prove nothing).
    pub fn finish_relist_abandoned(&self) {
        self.inner.write().relisting = false;
    }

    /// Whether a relist is in progress.
    pub fn is_relisting(&self) -> bool {
        self.inner.read().relisting
    }

    /// Starts a backfill: until the returned handle is dropped, deletions are remembered so that
    /// [`Backfill::apply`] never resurrects a deleted pod.
    pub fn begin_backfill(self: &Arc<Self>) -> Backfill {
        self.inner.write().backfills += 1;
        Backfill {
            store: Arc::clone(self),
        }
    }

    /// Starts a watch switch: until the returned handle is dropped, a pod delivered by a
    /// [`Delivery::Current`] watch is claimed by it, and [`Delivery::Retiring`] watches (the ones being
    /// replaced, still running until their successors have listed) no longer change it. A lagging old
    /// watch can then never roll a pod back to an older version or remove it early; it still keeps the
    /// pods the new watches have not delivered yet up to date. Deletions are remembered meanwhile, as
    /// during a backfill.
    pub fn begin_switch(self: &Arc<Self>) -> Switch {
        let mut g = self.inner.write();
        g.switches += 1;
        g.backfills += 1;
        drop(g);
        Switch {
            store: Arc::clone(self),
        }
    }

    /// Drops every pod and interned value and releases the memory (the interest set is kept).
    pub fn clear(&self) {
        let mut g = self.inner.write();
        let interest = g.interest.take();
        let (dropped, invalid, evicted, swept) = (g.dropped, g.invalid, g.evicted, g.swept);
        *g = Inner {
            interest,
            dropped,
            invalid,
            evicted,
            swept,
            ..Inner::default()
        };
    }

    // --- reads ---

    /// Number of cached pods.
    pub fn len(&self) -> usize {
        self.inner.read().slab.len
    }

    /// Whether no pod is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached pod with `uid`.
    pub fn get(&self, uid: u128) -> Option<SlimPod> {
        let g = self.inner.read();
        g.find(uid).and_then(|i| g.slab.get(i)).cloned()
    }

    /// The cached pod `namespace/name` (a scan over the cache; prefer [`PodStore::get`] or the
    /// per-workload reads).
    pub fn find(&self, namespace: &str, name: &str) -> Option<SlimPod> {
        let g = self.inner.read();
        g.slab
            .iter()
            .map(|(_, p)| p)
            .find(|p| p.namespace().as_str() == namespace && p.name_eq(name))
            .cloned()
    }

    /// Copies of the cached pods of a workload.
    pub fn pods_of(&self, workload: &WorkloadKey) -> Vec<SlimPod> {
        let mut out = Vec::new();
        self.for_each_pod_of(workload, |p| out.push(p.clone()));
        out
    }

    /// Calls `f` on each cached pod of a workload, under the read lock (keep `f` short).
    pub fn for_each_pod_of(&self, workload: &WorkloadKey, mut f: impl FnMut(&SlimPod)) {
        let g = self.inner.read();
        if let Some(w) = g.by_workload.get(workload) {
            for &i in &w.slots {
                if let Some(p) = g.slab.get(i) {
                    f(p);
                }
            }
        }
    }

    /// Pod and ready counts of a workload (zero when nothing is cached for it).
    pub fn counts(&self, workload: &WorkloadKey) -> WorkloadCounts {
        self.inner
            .read()
            .by_workload
            .get(workload)
            .map(|w| WorkloadCounts {
                pods: w.slots.len(),
                ready: w.ready as usize,
            })
            .unwrap_or_default()
    }

    /// Pod and ready counts of every workload with cached pods.
    pub fn workloads(&self) -> Vec<(WorkloadKey, WorkloadCounts)> {
        self.inner
            .read()
            .by_workload
            .iter()
            .map(|(k, w)| {
                (
                    k.clone(),
                    WorkloadCounts {
                        pods: w.slots.len(),
                        ready: w.ready as usize,
                    },
                )
            })
            .collect()
    }

    /// Counters and approximate heap bytes.
    pub fn stats(&self) -> StoreStats {
        let g = self.inner.read();
        let interned = g.interner.stats();
        let by_uid = table_bytes::<u32>(g.by_uid.capacity());
        let by_workload = table_bytes::<(WorkloadKey, WorkloadPods)>(g.by_workload.capacity())
            + g.by_workload
                .values()
                .map(|w| w.slots.capacity() * size_of::<u32>())
                .sum::<usize>();
        let tombstones =
            table_bytes::<u128>(g.tombstones.capacity()) + table_bytes::<u128>(g.claimed.capacity());
        let interest = g.interest.as_ref().map_or(0, |i| {
            table_bytes::<(WorkloadKey, Option<String>)>(i.workloads.capacity())
                + table_bytes::<ArcStr>(i.namespaces.capacity())
                + i.workloads
                    .values()
                    .map(|s| s.as_ref().map_or(0, String::capacity))
                    .sum::<usize>()
        });
        let index_bytes = by_uid + by_workload + interest;
        StoreStats {
            pods: g.slab.len,
            workloads: g.by_workload.len(),
            heap_bytes: g.slab.heap_bytes()
                + g.own_heap
                + by_uid
                + by_workload
                + tombstones
                + interest
                + interned.heap_bytes,
            index_bytes,
            interned,
            dropped: g.dropped,
            invalid: g.invalid,
            evicted: g.evicted,
            swept: g.swept,
        }
    }
}

/// Approximate bytes of a hashbrown table with `capacity` entries of `T` at the 7/8 load factor.
fn table_bytes<T>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    (capacity * 8 / 7).next_power_of_two() * (size_of::<T>() + 1)
}

/// Backfills for the workloads in `new` that `old` did not cover, grouped by namespace.
fn backfill_targets(old: Option<&Interest>, new: &Interest) -> Vec<BackfillTarget> {
    let covered = |w: &WorkloadRef<'_>| old.is_none_or(|o| o.contains(w));
    let mut out = Vec::new();
    let mut whole: HashSet<ArcStr> = HashSet::new();
    for ns in &new.namespaces {
        if old.is_some_and(|o| !o.namespaces.contains(ns.as_str())) {
            whole.insert(ns.clone());
        }
    }
    // Namespaces where some new workload has no selector are listed whole.
    for (k, sel) in &new.workloads {
        if sel.is_none() && !covered(&k.as_ref()) && !new.namespaces.contains(k.namespace.as_str()) {
            whole.insert(k.namespace.clone());
        }
    }
    for (k, sel) in &new.workloads {
        if let Some(sel) = sel
            && !covered(&k.as_ref())
            && !new.namespaces.contains(k.namespace.as_str())
            && !whole.contains(k.namespace.as_str())
        {
            out.push(BackfillTarget::Namespace {
                namespace: k.namespace.clone(),
                label_selector: Some(sel.clone()),
            });
        }
    }
    let mut whole: Vec<ArcStr> = whole.into_iter().collect();
    whole.sort();
    out.extend(whole.into_iter().map(|namespace| BackfillTarget::Namespace {
        namespace,
        label_selector: None,
    }));
    out.dedup();
    out
}

impl Inner {
    fn find(&self, uid: u128) -> Option<u32> {
        let slab = &self.slab;
        self.by_uid
            .find(uid_hash(uid), |&i| slab.get(i).is_some_and(|p| p.uid() == uid))
            .copied()
    }

    /// Whether `scope`'s list delivers the cached pod `p` (for a selector scope: its workload is of
    /// interest with that selector).
    fn delivers(&self, scope: &WatchScope, p: &SlimPod) -> bool {
        let Some(w) = p.workload() else { return false };
        let selector = self.interest.as_ref().and_then(|i| i.selector(w));
        scope.covers(&w.as_ref(), selector)
    }

    /// During a switch: whether a delivery must be skipped (a retiring watch reporting a pod a current
    /// watch has claimed); a current watch's delivery of a pod of interest claims it.
    fn switching_skips(&mut self, pod: &PodWire, from: Delivery) -> bool {
        if self.switches == 0 {
            return false;
        }
        let uid = wire_uid(pod);
        match from {
            // Once a current watch has listed a pod's scope, it reports everything after its list.
            Delivery::Retiring => {
                self.claimed.contains(&uid)
                    || wire_workload(pod).is_some_and(|w| {
                        let selector = self.interest.as_ref().and_then(|i| i.selector_of(&w));
                        self.listed.iter().any(|s| s.covers(&w, selector))
                    })
            }
            Delivery::Current => {
                if self.interesting(pod) {
                    self.claimed.insert(uid);
                }
                false
            }
        }
    }

    fn interesting(&self, pod: &PodWire) -> bool {
        match &self.interest {
            None => true,
            Some(i) => wire_workload(pod).is_some_and(|w| i.contains(&w)),
        }
    }

    /// `retiring`: from a watch being replaced, whose deliveries do not count as seen by a relist in
    /// progress (the relist of the new watch decides what still exists).
    fn upsert(&mut self, pod: &PodWire, backfill: bool, retiring: bool) -> Result<ApplyOutcome, StoreError> {
        let uid = wire_uid(pod);
        let existing = self.find(uid);
        if !self.interesting(pod) {
            self.dropped += 1;
            if let Some(i) = existing {
                self.remove_slot(i);
                self.after_removals(false);
                return Ok(ApplyOutcome::Removed);
            }
            return Ok(ApplyOutcome::Dropped);
        }
        // A uid is never reused: a tombstoned pod is gone, whichever watch still reports it.
        if (backfill && existing.is_some()) || (!self.tombstones.is_empty() && self.tombstones.contains(&uid))
        {
            return Ok(ApplyOutcome::Skipped);
        }
        let mut slim = match SlimPod::from_wire(pod, &mut self.interner) {
            Ok(s) => s,
            Err(e) => {
                self.invalid += 1;
                return Err(e.into());
            }
        };
        slim.generation = match (retiring && self.relisting, existing) {
            (false, _) => self.generation,
            (true, Some(i)) => self
                .slab
                .get(i)
                .map_or(self.generation.wrapping_sub(1), |p| p.generation),
            (true, None) => self.generation.wrapping_sub(1),
        };
        match existing {
            Some(i) => {
                let new_ready = slim.is_ready();
                let new_heap = slim.own_heap_bytes();
                let new_workload = slim.workload().cloned();
                let Some(slot) = self.slab.slot_mut(i) else {
                    return Ok(ApplyOutcome::Skipped);
                };
                let Some(old) = slot.replace(slim) else {
                    return Ok(ApplyOutcome::Skipped);
                };
                self.own_heap = self.own_heap - old.own_heap_bytes() + new_heap;
                if old.workload() != new_workload.as_ref() {
                    self.unindex(i, old.workload(), old.is_ready());
                    self.index(i, new_workload, new_ready);
                } else if old.is_ready() != new_ready
                    && let Some(w) = new_workload.as_ref().and_then(|k| self.by_workload.get_mut(k))
                {
                    if new_ready {
                        w.ready += 1;
                    } else {
                        w.ready = w.ready.saturating_sub(1);
                    }
                }
                self.since_sweep += 1;
                if self.since_sweep > SWEEP_AFTER + self.interner.len() {
                    self.sweep();
                }
                Ok(ApplyOutcome::Updated)
            }
            None => {
                let ready = slim.is_ready();
                let workload = slim.workload().cloned();
                self.own_heap += slim.own_heap_bytes();
                let i = self.slab.insert(slim);
                let slab = &self.slab;
                self.by_uid.insert_unique(uid_hash(uid), i, |&j| {
                    slab.get(j).map_or(0, |p| uid_hash(p.uid()))
                });
                self.index(i, workload, ready);
                Ok(ApplyOutcome::Inserted)
            }
        }
    }

    fn index(&mut self, i: u32, workload: Option<WorkloadKey>, ready: bool) {
        if let Some(k) = workload {
            let w = self.by_workload.entry(k).or_default();
            w.slots.push(i);
            w.ready += u32::from(ready);
        }
    }

    fn unindex(&mut self, i: u32, workload: Option<&WorkloadKey>, ready: bool) {
        let Some(k) = workload else { return };
        let Some(w) = self.by_workload.get_mut(k) else {
            return;
        };
        if let Some(pos) = w.slots.iter().position(|&s| s == i) {
            w.slots.swap_remove(pos);
            if ready {
                w.ready = w.ready.saturating_sub(1);
            }
        }
        if w.slots.is_empty() {
            self.by_workload.remove(k);
        } else if let Some(c) = lazyscale_api::heap::shrunk_capacity(w.slots.len(), w.slots.capacity(), 0) {
            w.slots.shrink_to(c);
        }
    }

    fn remove_slot(&mut self, i: u32) {
        let Some(pod) = self.slab.take(i) else { return };
        let uid = pod.uid();
        if let Ok(entry) = self.by_uid.find_entry(uid_hash(uid), |&j| j == i) {
            entry.remove();
        }
        self.unindex(i, pod.workload(), pod.is_ready());
        self.own_heap -= pod.own_heap_bytes();
        self.since_sweep += 1;
    }

    /// Housekeeping after removals: sweep the interner when due (or when `force`), compact the slab when
    /// it is less than half full.
    fn after_removals(&mut self, force: bool) {
        if force || self.slab.len == 0 || self.since_sweep > SWEEP_AFTER + self.interner.len() {
            self.sweep();
        }
        let cap = self.slab.capacity();
        if cap > CHUNK && self.slab.len * 2 < cap {
            self.compact();
        }
    }

    fn sweep(&mut self) {
        self.interner.sweep();
        self.since_sweep = 0;
    }

    /// Rebuilds the slab densely (one chunk at a time, so the old and new slabs never coexist in full)
    /// and the indexes that point into it.
    fn compact(&mut self) {
        let old = std::mem::take(&mut self.slab);
        self.by_uid = HashTable::with_capacity(old.len);
        for w in self.by_workload.values_mut() {
            w.slots.clear();
            w.ready = 0;
        }
        for chunk in old.chunks {
            for pod in Vec::from(chunk).into_iter().flatten() {
                let uid = pod.uid();
                let ready = pod.is_ready();
                let workload = pod.workload().cloned();
                let i = self.slab.insert(pod);
                let slab = &self.slab;
                self.by_uid.insert_unique(uid_hash(uid), i, |&j| {
                    slab.get(j).map_or(0, |p| uid_hash(p.uid()))
                });
                self.index(i, workload, ready);
            }
        }
        self.by_workload.retain(|_, w| !w.slots.is_empty());
        for w in self.by_workload.values_mut() {
            w.slots.shrink_to_fit();
        }
        self.by_workload.shrink_to_fit();
        self.tombstones.shrink_to_fit();
    }
}

/// Which watch delivers a pod event, while the watches are being switched ([`PodStore::begin_switch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A watch of the current plan.
    Current,
    /// A watch being replaced.
    Retiring,
}

/// A watch switch in progress (see [`PodStore::begin_switch`]).
pub struct Switch {
    store: Arc<PodStore>,
}

impl Drop for Switch {
    fn drop(&mut self) {
        let mut g = self.store.inner.write();
        g.switches = g.switches.saturating_sub(1);
        if g.switches == 0 {
            g.claimed = HashSet::new();
            g.listed = Vec::new();
        }
        g.backfills = g.backfills.saturating_sub(1);
        if g.backfills == 0 {
            g.tombstones = HashSet::new();
        }
    }
}

/// A running backfill (see [`PodStore::begin_backfill`]).
pub struct Backfill {
    store: Arc<PodStore>,
}

impl Backfill {
    /// Caches a listed pod unless it is not of interest, already cached (the watch has a version at least
    /// as new) or was deleted since the backfill began.
    pub fn apply(&self, pod: &PodWire) -> Result<ApplyOutcome, StoreError> {
        self.store.inner.write().upsert(pod, true, false)
    }
}

impl Drop for Backfill {
    fn drop(&mut self) {
        let mut g = self.store.inner.write();
        g.backfills = g.backfills.saturating_sub(1);
        if g.backfills == 0 {
            g.tombstones = HashSet::new();
        }
    }
}
