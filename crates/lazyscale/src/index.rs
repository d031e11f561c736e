//! The agent's one DPA index: every DatadogPodAutoscaler the always-on DPA watch has seen, with the
//! webhook's lookup structure built from them, behind one lock. The webhook, the vertical loop and
//! the horizontal controller (as its `DpaSource`) read it; the gate is fed by the same watch.
//!
//! Readers take a [`Snapshot`] (an `Arc`, cheap to clone, never partial); writers change the index
//! copy-on-write, so a reader holding a snapshot keeps a consistent view while the index moves on. A
//! relist builds the new snapshot completely before swapping it in ([`DpaIndex::replace`]): the
//! webhook never sees an empty or half-filled index.
//!
//! The watch delivers raw objects ([`DynamicObject`]) and each is decoded on its own ([`decode`]): an
//! object the schema admits but our types cannot hold becomes an [`Undecodable`] entry beside the
//! others. It is in no reader's list of DPAs (the webhook, the vertical loop and the profile controller
//! do not act on it, and a DPA that changes into such an object replaces its old decoded self), but the
//! controller finds it ([`lazyscale_controller::DpaSource::undecodable`]) and reports it `InvalidSpec`.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use kube::api::{DynamicObject, ObjectMeta};
use lazyscale_api::DatadogPodAutoscaler;
use lazyscale_api::dpa::DatadogPodAutoscalerStatus;
use lazyscale_controller::validate::{self, Undecodable};
use lazyscale_vertical::{Autoscaler, AutoscalerIndex};

/// One DPA as the watch delivered it: decoded, or why not.
pub type Entry = Result<Arc<DatadogPodAutoscaler>, Arc<Undecodable>>;

/// Decodes one object of the DPA watch ([`validate::decode`]); the metadata of an undecodable one is
/// the object's own. Either keeps no server bookkeeping ([`lazyscale_api::dpa::strip_bookkeeping`]).
pub fn decode(object: &DynamicObject) -> Entry {
    let decoded = serde_json::to_value(object)
        .map(|mut v| {
            // Dropped before the typed decode, not after: the managed fields of a DPA written by
            // several managers (kubectl, the agent's status writers) are often larger than the rest.
            if let Some(m) = v.get_mut("metadata").and_then(serde_json::Value::as_object_mut) {
                m.remove("managedFields");
            }
            v
        })
        .map_err(|e| {
            Box::new(Undecodable {
                metadata: object.metadata.clone(),
                status: None,
                field: "the object".to_owned(),
                error: e.to_string(),
            })
        })
        .and_then(|v| validate::decode(&v));
    match decoded {
        Ok(mut d) => {
            lazyscale_api::dpa::strip_bookkeeping(&mut d.metadata);
            Ok(Arc::new(d))
        }
        Err(mut u) => {
            u.metadata = object.metadata.clone();
            lazyscale_api::dpa::strip_bookkeeping(&mut u.metadata);
            tracing::warn!(
                namespace = object.metadata.namespace.as_deref().unwrap_or_default(),
                name = object.metadata.name.as_deref().unwrap_or_default(),
                field = %u.field,
                error = %u.error,
                "DPA cannot be read: reported InvalidSpec, not acted on"
            );
            Err(Arc::from(u))
        }
    }
}

/// What the index's sets are ordered by and looked up with: a namespace and a name.
trait Keyed {
    fn key(&self) -> (&str, &str);
}

impl Keyed for (&str, &str) {
    fn key(&self) -> (&str, &str) {
        *self
    }
}

impl PartialEq for dyn Keyed + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn Keyed + '_ {}

impl PartialOrd for dyn Keyed + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn Keyed + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// What names an entry of the index.
trait Named {
    fn meta(&self) -> &ObjectMeta;
}

impl Named for DatadogPodAutoscaler {
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
}

impl Named for Undecodable {
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
}

/// An entry of the index, ordered by the namespace and name of its own metadata: the sets keep no copy
/// of them (a key per DPA would be two more strings, and a map slot six times larger). Only objects
/// with both are entered ([`Snapshot::set`]).
#[derive(Debug)]
struct ByName<T>(Arc<T>);

impl<T> Clone for ByName<T> {
    fn clone(&self) -> Self {
        ByName(Arc::clone(&self.0))
    }
}

impl<T: Named> Keyed for ByName<T> {
    fn key(&self) -> (&str, &str) {
        let m = self.0.meta();
        (
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default(),
        )
    }
}

impl<'a, T: Named + 'a> Borrow<dyn Keyed + 'a> for ByName<T> {
    fn borrow(&self) -> &(dyn Keyed + 'a) {
        self
    }
}

impl<T: Named> PartialEq for ByName<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl<T: Named> Eq for ByName<T> {}

impl<T: Named> PartialOrd for ByName<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T: Named> Ord for ByName<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// One consistent view of the index.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    dpas: BTreeSet<ByName<DatadogPodAutoscaler>>,
    undecodable: BTreeSet<ByName<Undecodable>>,
    autoscalers: AutoscalerIndex,
    /// What the entries own ([`entry_bytes`] summed), kept up to date by [`Snapshot::set`] and
    /// [`Snapshot::remove`] so reading it costs nothing.
    entry_bytes: usize,
}

/// Approximate heap bytes of one entry in its `Arc` (the decoded DPA or the undecodable record, and
/// what it owns: the metadata and the spec by [`lazyscale_api::heap::approx_heap_bytes`], the status by
/// [`DatadogPodAutoscalerStatus::heap_bytes`]).
fn entry_bytes(entry: &Entry) -> usize {
    use lazyscale_api::heap::{approx_heap_bytes, arc_bytes, string_bytes};
    match entry {
        Ok(d) => {
            arc_bytes::<DatadogPodAutoscaler>()
                + approx_heap_bytes(&d.metadata)
                + approx_heap_bytes(&d.spec)
                + d.status
                    .as_ref()
                    .map_or(0, DatadogPodAutoscalerStatus::heap_bytes)
        }
        Err(u) => {
            arc_bytes::<Undecodable>()
                + approx_heap_bytes(&u.metadata)
                + u.status
                    .as_ref()
                    .map_or(0, DatadogPodAutoscalerStatus::heap_bytes)
                + string_bytes(&u.field)
                + string_bytes(&u.error)
        }
    }
}

impl Snapshot {
    /// Approximate heap bytes of the parsed DPAs: every entry ([`entry_bytes`]) and the nodes of the
    /// two maps. Counted once per watch event, not per call. The webhook's lookup structure is apart:
    /// [`Snapshot::autoscalers_heap_bytes`].
    pub fn dpa_heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<ByName<DatadogPodAutoscaler>>();
        self.entry_bytes
            + lazyscale_api::heap::btree_bytes(self.dpas.len(), slot)
            + lazyscale_api::heap::btree_bytes(self.undecodable.len(), slot)
    }

    /// Approximate heap bytes of the webhook's lookup of autoscalers by target (an index derived from
    /// the DPAs; [`AutoscalerIndex::approx_heap_bytes`], walked on each call).
    pub fn autoscalers_heap_bytes(&self) -> usize {
        self.autoscalers.approx_heap_bytes()
    }

    fn set(&mut self, entry: Entry) {
        let meta = match &entry {
            Ok(d) => &d.metadata,
            Err(u) => &u.metadata,
        };
        let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
            return;
        };
        self.remove(ns, name);
        self.entry_bytes += entry_bytes(&entry);
        match entry {
            Ok(dpa) => {
                self.autoscalers.upsert(Autoscaler::from_dpa(&dpa, false));
                self.dpas.insert(ByName(dpa));
            }
            Err(u) => {
                self.undecodable.insert(ByName(u));
            }
        }
    }

    fn remove(&mut self, namespace: &str, name: &str) {
        let key: &dyn Keyed = &(namespace, name);
        if let Some(ByName(d)) = self.dpas.take(key) {
            self.entry_bytes = self.entry_bytes.saturating_sub(entry_bytes(&Ok(d)));
            self.autoscalers.remove(namespace, name);
        }
        if let Some(ByName(u)) = self.undecodable.take(key) {
            self.entry_bytes = self.entry_bytes.saturating_sub(entry_bytes(&Err(u)));
        }
    }

    /// Every DPA known, decoded or not, ordered by namespace and name.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut all: Vec<(&str, &str)> = (self.dpas.iter().map(Keyed::key))
            .chain(self.undecodable.iter().map(Keyed::key))
            .collect();
        all.sort_unstable();
        all.into_iter()
    }

    /// The DPAs that could not be decoded.
    pub fn undecodable(&self) -> impl ExactSizeIterator<Item = &Arc<Undecodable>> {
        self.undecodable.iter().map(|b| &b.0)
    }

    /// The DPAs, ordered by namespace and name.
    pub fn dpas(&self) -> impl ExactSizeIterator<Item = &Arc<DatadogPodAutoscaler>> {
        self.dpas.iter().map(|b| &b.0)
    }

    /// One DPA.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<DatadogPodAutoscaler>> {
        let key: &dyn Keyed = &(namespace, name);
        self.dpas.get(key).map(|b| &b.0)
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
        self.set(Ok(dpa));
    }

    /// Records a DPA as the watch delivered it (added or changed), decoded or not.
    pub fn set(&self, entry: Entry) {
        self.change(|s| s.set(entry));
    }

    /// Forgets a DPA.
    pub fn remove(&self, namespace: &str, name: &str) {
        self.change(|s| s.remove(namespace, name));
    }

    /// Replaces every DPA (after a relist), in one swap.
    pub fn replace(&self, all: impl IntoIterator<Item = Entry>) {
        let mut next = Snapshot::default();
        for d in all {
            next.set(d);
        }
        let next = Arc::new(next);
        match self.current.write() {
            Ok(mut g) => *g = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    /// How many DPAs are known decoded.
    pub fn len(&self) -> usize {
        self.snapshot().dpas.len()
    }

    /// Approximate heap bytes of the parsed DPAs of the current view ([`Snapshot::dpa_heap_bytes`]).
    pub fn dpa_heap_bytes(&self) -> usize {
        self.snapshot().dpa_heap_bytes()
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

    fn undecodable(&self, namespace: &str, name: &str) -> Option<Arc<Undecodable>> {
        let key: &dyn Keyed = &(namespace, name);
        self.snapshot().undecodable.get(key).map(|b| Arc::clone(&b.0))
    }

    fn undecodables(&self) -> Vec<Arc<Undecodable>> {
        self.snapshot().undecodable().cloned().collect()
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

    fn raw(ns: &str, name: &str, spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler",
            "metadata": {"name": name, "namespace": ns, "uid": "u-1", "resourceVersion": "7"},
            "spec": spec,
            "status": {"conditions": [{"type": "Active", "status": "True"}]},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn good_spec() -> serde_json::Value {
        serde_json::json!({"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "owner": "Local"})
    }

    #[test]
    fn an_undecodable_object_is_kept_apart_with_the_field_and_the_others_stay() {
        let mut bad = good_spec();
        bad["applyPolicy"] = serde_json::json!({"mode": "Sometimes"});
        let Err(u) = decode(&raw("a", "bad", bad.clone())) else {
            panic!("an unknown mode decodes")
        };
        assert_eq!(u.field, "spec.applyPolicy.mode");
        assert!(u.error.contains("Sometimes"), "{}", u.error);
        assert_eq!(u.metadata.uid.as_deref(), Some("u-1"));
        assert!(u.status.is_some(), "the status decodes on its own");
        let index = DpaIndex::default();
        index.replace([decode(&raw("a", "good", good_spec())), Err(u)]);
        let s = index.snapshot();
        assert_eq!(s.dpas().len(), 1);
        assert_eq!(s.undecodable().len(), 1);
        let keys: Vec<(&str, &str)> = s.keys().collect();
        assert_eq!(keys, [("a", "bad"), ("a", "good")]);
        use lazyscale_controller::DpaSource;
        assert!(index.undecodable("a", "bad").is_some());
        assert!(DpaSource::get(&index, "a", "bad").is_none());

        // A good DPA that turns undecodable is no longer acted on (not in the list, not in the
        // webhook's index), and comes back when it is repaired.
        index.set(decode(&raw("a", "good", bad)));
        let s = index.snapshot();
        assert_eq!(s.dpas().len(), 0, "the stale decoded DPA is gone");
        assert!(s.autoscalers().is_empty(), "the webhook forgets it");
        assert_eq!(s.undecodable().len(), 2);
        index.set(decode(&raw("a", "good", good_spec())));
        let s = index.snapshot();
        assert!(s.get("a", "good").is_some());
        assert_eq!(s.undecodable().len(), 1);
        assert!(!s.autoscalers().is_empty());
        index.remove("a", "bad");
        assert!(index.undecodable("a", "bad").is_none());
    }

    #[test]
    fn the_dpa_bytes_follow_the_dpas_added_and_removed() {
        let index = DpaIndex::default();
        assert_eq!(index.dpa_heap_bytes(), 0);
        index.replace((0..100).map(|i| Ok(dpa("a", &format!("d{i:03}"), "web"))));
        let hundred = index.dpa_heap_bytes();
        index.replace((0..200).map(|i| Ok(dpa("a", &format!("d{i:03}"), "web"))));
        let two_hundred = index.dpa_heap_bytes();
        let per = (two_hundred - hundred) as f64 / 100.0;
        // the Arc'd DPA (its inline size alone is several hundred bytes), its strings and a map slot
        let inline = std::mem::size_of::<DatadogPodAutoscaler>() as f64;
        assert!(per > inline && per < inline + 2048.0, "{per} bytes per DPA");
        // a replaced DPA is not counted twice; removed ones are no longer counted
        index.upsert(dpa("a", "d000", "web"));
        assert_eq!(index.dpa_heap_bytes(), two_hundred);
        for i in 100..200 {
            index.remove("a", &format!("d{i:03}"));
        }
        assert_eq!(index.dpa_heap_bytes(), hundred);
        let mut bad = good_spec();
        bad["applyPolicy"] = serde_json::json!({"mode": "Sometimes"});
        index.set(decode(&raw("a", "bad", bad)));
        assert!(
            index.dpa_heap_bytes() > hundred,
            "an undecodable entry counts too"
        );
        index.remove("a", "bad");
        assert_eq!(index.dpa_heap_bytes(), hundred);
        assert!(index.snapshot().autoscalers_heap_bytes() > 0);
    }

    #[test]
    fn the_index_keeps_no_managed_fields_nor_last_applied_copy() {
        let stored = |spec: serde_json::Value| -> DynamicObject {
            let mut o = raw("a", "web", spec.clone());
            o.metadata.annotations = Some(
                [
                    (
                        lazyscale_api::consts::annotations::LAST_APPLIED_CONFIGURATION.to_owned(),
                        serde_json::json!({"spec": spec}).to_string(),
                    ),
                    ("team".to_owned(), "payments".to_owned()),
                ]
                .into(),
            );
            o.metadata.managed_fields = Some(
                ["kubectl", "lazyscale-horizontal", "lazyscale-vertical"]
                    .iter()
                    .map(|m| {
                        serde_json::from_value(serde_json::json!({
                            "manager": m, "operation": "Apply", "apiVersion": "datadoghq.com/v1alpha2",
                            "fieldsType": "FieldsV1",
                            "fieldsV1": {"f:status": {"f:conditions": {"k:{\"type\":\"Active\"}": {
                                ".": {}, "f:status": {}, "f:type": {}, "f:reason": {}, "f:message": {}}}}},
                        }))
                        .unwrap_or_else(|e| panic!("{e}"))
                    })
                    .collect(),
            );
            o
        };
        let Ok(d) = decode(&stored(good_spec())) else {
            panic!("a good DPA decodes")
        };
        assert!(d.metadata.managed_fields.is_none());
        let annotations = d.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            ["team"],
            "other annotations stay"
        );
        assert!(d.status.is_some(), "the status stays");
        let mut bad = good_spec();
        bad["applyPolicy"] = serde_json::json!({"mode": "Sometimes"});
        let Err(u) = decode(&stored(bad)) else {
            panic!("an unknown mode decodes")
        };
        assert!(u.metadata.managed_fields.is_none());
        assert_eq!(u.metadata.uid.as_deref(), Some("u-1"));
        let slim = entry_bytes(&Ok(d.clone()));
        let mut full = (*d).clone();
        full.metadata = stored(good_spec()).metadata;
        let whole = entry_bytes(&Ok(Arc::new(full)));
        assert!(slim * 2 < whole, "slim {slim} B, with the bookkeeping {whole} B");
    }

    #[test]
    fn a_snapshot_stays_whole_while_the_index_changes() {
        let index = DpaIndex::default();
        index.replace([Ok(dpa("a", "x", "web")), Ok(dpa("a", "y", "api"))]);
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
        index.replace((0..50).map(|i| Ok(dpa("a", &format!("d{i}"), "web"))));
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
            index.replace((0..n).map(|i| Ok(dpa("a", &format!("d{i}"), "web"))));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap_or(0) > 0);
    }
}
