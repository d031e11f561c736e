//! The agent's one DPA index: every DatadogPodAutoscaler the always-on DPA watch has seen, with the
//! webhook's lookup structure built from them, behind one lock. The webhook, the vertical loop and
//! the horizontal controller (as its `DpaSource`) read it; the gate is fed by the same watch.
//!
//! Readers take a [`Snapshot`] (an `Arc`, cheap to clone, never partial); writers change the index
//! copy-on-write, so a reader holding a snapshot keeps a consistent view while the index moves on. A
//! relist builds the new snapshot completely before swapping it in ([`DpaIndex::replace`]): the
//! webhook never sees an empty or half-filled index.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use lazyscale_api::DatadogPodAutoscaler;
use lazyscale_vertical::{Autoscaler, AutoscalerIndex};

/// A DPA key: namespace and name.
pub type DpaKey = (String, String);

/// One consistent view of the index.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    dpas: BTreeMap<DpaKey, Arc<DatadogPodAutoscaler>>,
    autoscalers: AutoscalerIndex,
}

impl Snapshot {
    fn upsert(&mut self, dpa: Arc<DatadogPodAutoscaler>) {
        let (Some(ns), Some(name)) = (dpa.metadata.namespace.clone(), dpa.metadata.name.clone()) else {
            return;
        };
        self.autoscalers.upsert(Autoscaler::from_dpa(&dpa, false));
        self.dpas.insert((ns, name), dpa);
    }

    fn remove(&mut self, namespace: &str, name: &str) {
        self.autoscalers.remove(namespace, name);
        self.dpas.remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// The DPAs, ordered by namespace and name.
    pub fn dpas(&self) -> impl ExactSizeIterator<Item = &Arc<DatadogPodAutoscaler>> {
        self.dpas.values()
    }

    /// One DPA.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<DatadogPodAutoscaler>> {
        self.dpas.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// The webhook's lookup of autoscalers by target.
    pub fn autoscalers(&self) -> &AutoscalerIndex {
        &self.autoscalers
    }
}

/// The index; see the module docs.
#[derive(Debug, Default)]
pub struct DpaIndex {
    current: RwLock<Arc<Snapshot>>,
}

impl DpaIndex {
    /// The current view.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn change(&self, f: impl FnOnce(&mut Snapshot)) {
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(Arc::make_mut(&mut guard));
    }

    /// Records a DPA (added or changed).
    pub fn upsert(&self, dpa: Arc<DatadogPodAutoscaler>) {
        self.change(|s| s.upsert(dpa));
    }

    /// Forgets a DPA.
    pub fn remove(&self, namespace: &str, name: &str) {
        self.change(|s| s.remove(namespace, name));
    }

    /// Replaces every DPA (after a relist), in one swap.
    pub fn replace(&self, all: Vec<Arc<DatadogPodAutoscaler>>) {
        let mut next = Snapshot::default();
        for d in all {
            next.upsert(d);
        }
        let next = Arc::new(next);
        match self.current.write() {
            Ok(mut g) => *g = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    /// How many DPAs are known.
    pub fn len(&self) -> usize {
        self.snapshot().dpas.len()
    }

    /// Whether no DPA is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The controller reads DPAs from the index.
impl lazyscale_controller::DpaSource for DpaIndex {
    fn get(&self, namespace: &str, name: &str) -> Option<Arc<DatadogPodAutoscaler>> {
        self.snapshot().get(namespace, name).cloned()
    }

    fn list(&self) -> Vec<Arc<DatadogPodAutoscaler>> {
        self.snapshot().dpas().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dpa(ns: &str, name: &str, target: &str) -> Arc<DatadogPodAutoscaler> {
        let v = serde_json::json!({
            "apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "owner": "Local"},
        });
        Arc::new(serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn a_snapshot_stays_whole_while_the_index_changes() {
        let index = DpaIndex::default();
        index.replace(vec![dpa("a", "x", "web"), dpa("a", "y", "api")]);
        let before = index.snapshot();
        index.remove("a", "x");
        index.upsert(dpa("b", "z", "db"));
        assert_eq!(before.dpas().len(), 2, "the old view is untouched");
        assert!(before.get("a", "x").is_some());
        let now = index.snapshot();
        assert!(now.get("a", "x").is_none());
        assert!(now.get("b", "z").is_some());
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn a_relist_swaps_in_a_complete_index() {
        let index = Arc::new(DpaIndex::default());
        index.replace((0..50).map(|i| dpa("a", &format!("d{i}"), "web")).collect());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (index, stop) = (index.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let n = index.snapshot().dpas().len();
                    assert!(n == 50 || n == 60, "a partial index: {n}");
                    seen += 1;
                }
                seen
            })
        };
        for round in 0..200 {
            let n = if round % 2 == 0 { 60 } else { 50 };
            index.replace((0..n).map(|i| dpa("a", &format!("d{i}"), "web")).collect());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap_or(0) > 0);
    }
}
