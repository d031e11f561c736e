//! Read-your-writes caches: a kube-runtime reflector store plus the simulator's own recent writes,
//! so a reconcile that runs before the watch has delivered the simulator's last create, update or
//! delete does not act twice (client-go controllers use "expectations" for the same purpose).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Resource;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

/// How long a recent write shadows the store at most.
const RECENT_TTL: Duration = Duration::from_secs(30);

type Key = (String, String);
/// Recent writes by key: the written object (`None` for a delete) and when.
pub(crate) type Recent<K> = HashMap<Key, (Option<Arc<K>>, Instant)>;
/// Recent writes, shared between a cache and its watch event handler.
pub(crate) type SharedRecent<K> = Arc<Mutex<Recent<K>>>;

/// Called for a watch Delete event: forgets a recent write of that object, so a deleted object
/// does not live on in the cache.
pub(crate) fn forget_deleted<K: Resource>(recent: &SharedRecent<K>, obj: &K) {
    let mut r = recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let key = key_of(obj);
    let same = match r.get(&key) {
        Some((Some(o), _)) => o.meta().uid == obj.meta().uid,
        Some((None, _)) => true,
        None => false,
    };
    if same {
        r.remove(&key);
    }
}

/// A store plus recent writes.
pub(crate) struct Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    stores: Vec<Store<K>>,
    recent: SharedRecent<K>,
}

fn rv_num<K: Resource>(k: &K) -> Option<u64> {
    k.meta().resource_version.as_deref()?.parse().ok()
}

fn key_of<K: Resource>(k: &K) -> Key {
    (k.namespace().unwrap_or_default(), k.name_any())
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    pub(crate) fn new(stores: Vec<Store<K>>, recent: SharedRecent<K>) -> Self {
        Self { stores, recent }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent<K>> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records an object the simulator just created or updated (the server's answer).
    pub(crate) fn note_write(&self, obj: K) {
        let key = key_of(&obj);
        self.recent().insert(key, (Some(Arc::new(obj)), Instant::now()));
    }

    /// Resolves a store object against a recent write of the same key: the newer one wins.
    fn merge(stored: Option<Arc<K>>, recent: Option<&(Option<Arc<K>>, Instant)>) -> (Option<Arc<K>>, bool) {
        let Some((r, at)) = recent else {
            return (stored, false);
        };
        if at.elapsed() > RECENT_TTL {
            return (stored, true);
        }
        match (stored, r) {
            (None, None) => (None, true),
            // Deleted by us: hidden until the watch confirms (or the entry expires).
            (Some(_), None) => (None, false),
            (None, Some(r)) => (Some(r.clone()), false),
            // Resource versions are etcd revisions: the larger one is the newer state.
            (Some(s), Some(r)) => match (rv_num(s.as_ref()), rv_num(r.as_ref())) {
                (Some(a), Some(b)) if b > a => (Some(r.clone()), false),
                _ => (Some(s), true),
            },
        }
    }

    /// The object `namespace/name`, if it exists as far as the simulator knows.
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let mut oref = ObjectRef::new(name);
        if !namespace.is_empty() {
            oref = oref.within(namespace);
        }
        let stored = self.stores.iter().find_map(|s| s.get(&oref));
        let key = (namespace.to_string(), name.to_string());
        let mut recent = self.recent();
        let (obj, expired) = Self::merge(stored, recent.get(&key));
        if expired {
            recent.remove(&key);
        }
        obj
    }

    /// All objects matching `pred`, as far as the simulator knows.
    pub(crate) fn list(&self, pred: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        let mut recent = self.recent();
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut expired = Vec::new();
        for obj in self.stores.iter().flat_map(|s| s.state()) {
            let key = key_of(obj.as_ref());
            let r = recent.get(&key);
            let had_recent = r.is_some();
            let (o, exp) = Self::merge(Some(obj), r);
            if had_recent {
                seen.insert(key.clone());
                if exp {
                    expired.push(key);
                }
            }
            if let Some(o) = o
                && pred(o.as_ref())
            {
                out.push(o);
            }
        }
        for (key, (r, at)) in recent.iter() {
            if seen.contains(key) {
                continue;
            }
            if at.elapsed() > RECENT_TTL || r.is_none() {
                expired.push(key.clone());
                continue;
            }
            if let Some(r) = r
                && pred(r.as_ref())
            {
                out.push(r.clone());
            }
        }
        for k in expired {
            recent.remove(&k);
        }
        out
    }
}
