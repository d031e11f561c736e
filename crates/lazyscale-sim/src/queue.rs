//! A de-duplicating work queue in the style of client-go's: a key is queued at most once, is never
//! processed by two workers at the same time, and a key added while it is being processed is
//! processed again afterwards.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

struct Inner<T> {
    queue: VecDeque<T>,
    queued: HashSet<T>,
    processing: HashSet<T>,
    dirty: HashSet<T>,
    closed: bool,
}

/// The work queue. Cloning shares it.
pub(crate) struct WorkQueue<T> {
    inner: Arc<Mutex<Inner<T>>>,
    notify: Arc<Notify>,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            notify: self.notify.clone(),
        }
    }
}

impl<T: Hash + Eq + Clone + Send + 'static> WorkQueue<T> {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                queue: VecDeque::new(),
                queued: HashSet::new(),
                processing: HashSet::new(),
                dirty: HashSet::new(),
                closed: false,
            })),
            notify: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `key` unless it is queued already.
    pub(crate) fn add(&self, key: T) {
        let mut g = self.lock();
        if g.closed || g.queued.contains(&key) {
            return;
        }
        if g.processing.contains(&key) {
            g.dirty.insert(key);
            return;
        }
        g.queued.insert(key.clone());
        g.queue.push_back(key);
        drop(g);
        self.notify.notify_one();
    }

    /// Queues `key` after `delay`.
    pub(crate) fn add_after(&self, key: T, delay: Duration) {
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    /// Waits for the next key; `None` once the queue is shut down.
    pub(crate) async fn get(&self) -> Option<T> {
        loop {
            let notified = self.notify.notified();
            {
                let mut g = self.lock();
                if g.closed {
                    return None;
                }
                if let Some(k) = g.queue.pop_front() {
                    g.queued.remove(&k);
                    g.processing.insert(k.clone());
                    let more = !g.queue.is_empty();
                    drop(g);
                    if more {
                        self.notify.notify_one();
                    }
                    return Some(k);
                }
            }
            notified.await;
        }
    }

    /// Marks `key` as processed; queues it again if it was added meanwhile.
    pub(crate) fn done(&self, key: &T) {
        let mut g = self.lock();
        g.processing.remove(key);
        if g.dirty.remove(key) && !g.closed && g.queued.insert(key.clone()) {
            g.queue.push_back(key.clone());
            drop(g);
            self.notify.notify_one();
        }
    }

    /// Stops the queue: waiting and future `get`s return `None`.
    pub(crate) fn shutdown(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }

    /// Number of queued keys.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedups_and_requeues_dirty_keys() {
        let q = WorkQueue::new();
        q.add(1);
        q.add(1);
        q.add(2);
        assert_eq!(q.len(), 2);
        let k = q.get().await;
        assert_eq!(k, Some(1));
        q.add(1); // while processing: dirty
        assert_eq!(q.len(), 1);
        q.done(&1);
        assert_eq!(q.len(), 2);
        assert_eq!(q.get().await, Some(2));
        assert_eq!(q.get().await, Some(1));
        q.shutdown();
        assert_eq!(q.get().await, None);
    }
}
