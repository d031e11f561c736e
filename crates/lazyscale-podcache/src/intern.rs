//! Value interning for the cache: one shared copy of every namespace, node name, container name, owner
//! record, container-spec set, annotation set and pod shape, however many pods refer to it.
//!
//! Pods of one ReplicaSet share nearly everything but their name, uid, node and status bits, so the cache
//! stores an 8-byte pointer to a shared [`Shape`] (owner, containers, container
//! states, kept labels and annotations) instead of a copy. Strings are [`ArcStr`] (an 8-byte pointer);
//! composite values are `Arc`s. Unlike a never-freeing interner, [`Interner::sweep`] drops every entry
//! whose only remaining reference is the interner's own, so memory follows the pods actually cached.

use std::hash::Hash;
use std::mem::size_of;
use std::sync::Arc;

use arcstr::ArcStr;
use hashbrown::HashSet;

use crate::slim::{Containers, Extras, Owner, Shape};

/// Bytes of bookkeeping in front of an `Arc`'s value (strong and weak counts).
const ARC_HEADER: usize = 2 * size_of::<usize>();

/// Bytes of bookkeeping in front of an `ArcStr`'s text (length/flags and count).
const ARCSTR_HEADER: usize = 2 * size_of::<usize>();

/// Counts of interned values and their approximate heap footprint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InternerStats {
    /// Distinct strings.
    pub strings: usize,
    /// Distinct owner records.
    pub owners: usize,
    /// Distinct container-spec sets.
    pub container_sets: usize,
    /// Distinct label/annotation sets.
    pub extras: usize,
    /// Distinct pod shapes.
    pub shapes: usize,
    /// Approximate heap bytes: the values plus the hash-set slots.
    pub heap_bytes: usize,
}

/// Interns strings and the cache's shared composite values. Not synchronised: the store keeps it under
/// its write lock.
#[derive(Debug, Default)]
pub struct Interner {
    strings: HashSet<ArcStr>,
    owners: HashSet<Arc<Owner>>,
    containers: HashSet<Arc<Containers>>,
    extras: HashSet<Arc<Extras>>,
    shapes: HashSet<Arc<Shape>>,
}

fn intern_arc<T: Hash + Eq>(set: &mut HashSet<Arc<T>>, value: T) -> Arc<T> {
    if let Some(found) = set.get(&value) {
        return Arc::clone(found);
    }
    let arc = Arc::new(value);
    set.insert(Arc::clone(&arc));
    arc
}

/// Approximate bytes of a hashbrown table holding `capacity` entries of `T` (slots plus control bytes,
/// at the 7/8 maximum load factor).
fn table_bytes<T>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).next_power_of_two();
    buckets * (size_of::<T>() + 1)
}

impl Interner {
    /// An empty interner.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared copy of `s`.
    pub fn str(&mut self, s: &str) -> ArcStr {
        if let Some(found) = self.strings.get(s) {
            return found.clone();
        }
        let a = ArcStr::from(s);
        self.strings.insert(a.clone());
        a
    }

    /// The shared copy of an owner record.
    pub fn owner(&mut self, owner: Owner) -> Arc<Owner> {
        intern_arc(&mut self.owners, owner)
    }

    /// The shared copy of a container-spec set.
    pub fn containers(&mut self, containers: Containers) -> Arc<Containers> {
        intern_arc(&mut self.containers, containers)
    }

    /// The shared copy of a label/annotation set.
    pub fn extras(&mut self, extras: Extras) -> Arc<Extras> {
        intern_arc(&mut self.extras, extras)
    }

    /// The shared copy of a pod shape.
    pub fn shape(&mut self, shape: Shape) -> Arc<Shape> {
        intern_arc(&mut self.shapes, shape)
    }

    /// Drops every entry nobody but the interner references; returns how many were dropped.
    ///
    /// Shapes go first (they hold the other composites), then composites (they hold strings).
    pub fn sweep(&mut self) -> usize {
        let before = self.len();
        self.shapes.retain(|a| Arc::strong_count(a) > 1);
        self.owners.retain(|a| Arc::strong_count(a) > 1);
        self.containers.retain(|a| Arc::strong_count(a) > 1);
        self.extras.retain(|a| Arc::strong_count(a) > 1);
        // `strong_count` is `None` only for static literals, which are never freed anyway.
        self.strings
            .retain(|s| ArcStr::strong_count(s).is_none_or(|n| n > 1));
        let dropped = before - self.len();
        if lazyscale_api::heap::shrunk_capacity(self.len(), self.capacity(), 0).is_some() {
            self.shrink();
        }
        dropped
    }

    /// Drops everything and releases the tables' memory.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Total number of interned values.
    pub fn len(&self) -> usize {
        self.strings.len() + self.owners.len() + self.containers.len() + self.extras.len() + self.shapes.len()
    }

    /// Whether nothing is interned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn capacity(&self) -> usize {
        self.strings.capacity()
            + self.owners.capacity()
            + self.containers.capacity()
            + self.extras.capacity()
            + self.shapes.capacity()
    }

    fn shrink(&mut self) {
        self.strings.shrink_to_fit();
        self.owners.shrink_to_fit();
        self.containers.shrink_to_fit();
        self.extras.shrink_to_fit();
        self.shapes.shrink_to_fit();
    }

    /// Counts and approximate heap bytes.
    pub fn stats(&self) -> InternerStats {
        let strings: usize = self.strings.iter().map(|s| ARCSTR_HEADER + s.len()).sum();
        let owners = self.owners.len() * (ARC_HEADER + size_of::<Owner>());
        let containers: usize = self
            .containers
            .iter()
            .map(|c| ARC_HEADER + size_of::<Containers>() + c.heap_bytes())
            .sum();
        let extras: usize = self
            .extras
            .iter()
            .map(|e| ARC_HEADER + size_of::<Extras>() + e.heap_bytes())
            .sum();
        let shapes: usize = self
            .shapes
            .iter()
            .map(|s| ARC_HEADER + size_of::<Shape>() + s.heap_bytes())
            .sum();
        InternerStats {
            strings: self.strings.len(),
            owners: self.owners.len(),
            container_sets: self.containers.len(),
            extras: self.extras.len(),
            shapes: self.shapes.len(),
            heap_bytes: strings
                + shapes
                + owners
                + containers
                + extras
                + table_bytes::<ArcStr>(self.strings.capacity())
                + table_bytes::<Arc<Owner>>(self.owners.capacity())
                + table_bytes::<Arc<Containers>>(self.containers.capacity())
                + table_bytes::<Arc<Extras>>(self.extras.capacity())
                + table_bytes::<Arc<Shape>>(self.shapes.capacity()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedups_and_sweeps() {
        let mut i = Interner::new();
        let a = i.str("default");
        let b = i.str("default");
        assert!(ArcStr::ptr_eq(&a, &b));
        assert_eq!(i.len(), 1);
        assert_eq!(i.sweep(), 0);
        drop(a);
        drop(b);
        assert_eq!(i.sweep(), 1);
        assert!(i.is_empty());
    }
}
