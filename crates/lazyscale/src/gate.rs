//! The demand gate: when the autoscaling stack runs.
//!
//! Pure parts: [`Demand`] (the set of autoscalers that keep the stack up) and [`Machine`] (the state
//! machine: closed → open on the first autoscaler; open → draining when the last one goes; draining →
//! closed after the grace period, or back to open if an autoscaler returns). [`Gate`] publishes the state
//! to dependants through a `tokio::sync::watch`, with a second signal, "pod collection synced", and an
//! explicit shutting-down state so waiters can tell "opened" from "the agent is stopping".

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// What kind of object an autoscaler demand comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    /// A DatadogPodAutoscaler (any origin).
    Dpa,
    /// A Deployment labelled with a profile.
    Deployment,
    /// A StatefulSet labelled with a profile.
    StatefulSet,
    /// A namespace labelled with a profile.
    Namespace,
}

/// One autoscaler demand.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    /// The kind of object.
    pub kind: SourceKind,
    /// Its namespace (for a namespace source: the namespace itself).
    pub namespace: String,
    /// Its name (empty for a namespace source).
    pub name: String,
}

impl Source {
    /// A namespaced source.
    pub fn new(kind: SourceKind, namespace: impl Into<String>, name: impl Into<String>) -> Source {
        Source {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A labelled namespace.
    pub fn namespace(name: impl Into<String>) -> Source {
        Source {
            kind: SourceKind::Namespace,
            namespace: name.into(),
            name: String::new(),
        }
    }
}

/// The autoscalers known to the agent. ClusterProfiles are never part of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Demand {
    sources: BTreeSet<Source>,
}

impl Demand {
    /// Adds (or keeps) one autoscaler.
    pub fn insert(&mut self, s: Source) {
        self.sources.insert(s);
    }

    /// Removes one autoscaler.
    pub fn remove(&mut self, s: &Source) {
        self.sources.remove(s);
    }

    /// Replaces every autoscaler of one kind (after a relist).
    pub fn replace_kind(&mut self, kind: SourceKind, set: BTreeSet<Source>) {
        self.sources.retain(|s| s.kind != kind);
        self.sources.extend(set.into_iter().filter(|s| s.kind == kind));
    }

    /// No autoscaler at all.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// How many autoscalers.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// How many autoscalers of one kind.
    pub fn count(&self, kind: SourceKind) -> usize {
        self.sources.iter().filter(|s| s.kind == kind).count()
    }

    /// The autoscalers of one kind.
    pub fn of_kind(&self, kind: SourceKind) -> impl Iterator<Item = &Source> {
        self.sources.iter().filter(move |s| s.kind == kind)
    }

    /// Namespaces that have at least one autoscaler (the webhook's namespace selector).
    pub fn namespaces(&self) -> BTreeSet<String> {
        self.sources.iter().map(|s| s.namespace.clone()).collect()
    }
}

/// The gate's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No stack.
    Closed,
    /// The stack runs and autoscalers exist.
    Open,
    /// The stack runs; the last autoscaler went away at `since`.
    Draining {
        /// When the demand disappeared.
        since: Instant,
    },
}

/// What the caller must do after an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing changes.
    None,
    /// Start the stack.
    Start,
    /// Stop the stack.
    Stop,
}

/// The gate state machine. `grace == 0` means the stack never stops once started.
#[derive(Debug, Clone)]
pub struct Machine {
    state: State,
    grace: Duration,
    opened: u64,
}

impl Machine {
    /// A closed gate.
    pub fn new(grace: Duration) -> Machine {
        Machine {
            state: State::Closed,
            grace,
            opened: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the stack should be running.
    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed)
    }

    /// How many times the gate opened.
    pub fn opened(&self) -> u64 {
        self.opened
    }

    /// When the next observation may stop the stack (the end of the grace period).
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Draining { since } => Some(since + self.grace),
            _ => None,
        }
    }

    /// Feeds the current demand and time; returns what to do.
    pub fn observe(&mut self, demand: bool, now: Instant) -> Action {
        match (self.state, demand) {
            (State::Closed, true) => {
                self.state = State::Open;
                self.opened += 1;
                Action::Start
            }
            (State::Closed, false) | (State::Open, true) => Action::None,
            (State::Open, false) => {
                if !self.grace.is_zero() {
                    self.state = State::Draining { since: now };
                }
                Action::None
            }
            (State::Draining { .. }, true) => {
                self.state = State::Open;
                Action::None
            }
            (State::Draining { since }, false) => {
                if now.saturating_duration_since(since) >= self.grace {
                    self.state = State::Closed;
                    Action::Stop
                } else {
                    Action::None
                }
            }
        }
    }
}

/// What dependants of the stack see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The stack is down.
    Closed,
    /// The stack is up (its epoch: how many times it opened); the pod collection may still be listing.
    Open(u64),
    /// The stack is up and the pod collection finished its initial list.
    Synced(u64),
    /// The agent is shutting down: stop waiting.
    ShuttingDown,
}

/// Why a wait ended without the signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The agent is shutting down.
    #[error("the agent is shutting down")]
    ShuttingDown,
}

/// The publishing side of the gate.
#[derive(Debug)]
pub struct Gate {
    tx: watch::Sender<Signal>,
}

/// A waiting side of the gate (cheap to clone; dropping it leaks nothing).
#[derive(Debug, Clone)]
pub struct GateWaiter {
    rx: watch::Receiver<Signal>,
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate {
            tx: watch::channel(Signal::Closed).0,
        }
    }

    /// A new waiter.
    pub fn waiter(&self) -> GateWaiter {
        GateWaiter {
            rx: self.tx.subscribe(),
        }
    }

    /// Publishes a signal (a shut-down gate stays shut down).
    pub fn publish(&self, s: Signal) {
        self.tx.send_if_modified(|cur| {
            if *cur == Signal::ShuttingDown || *cur == s {
                false
            } else {
                *cur = s;
                true
            }
        });
    }

    /// The current signal.
    pub fn current(&self) -> Signal {
        *self.tx.borrow()
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl GateWaiter {
    /// Waits until the stack is up; returns its epoch.
    pub async fn opened(&mut self) -> Result<u64, WaitError> {
        self.wait(|s| match s {
            Signal::Open(e) | Signal::Synced(e) => Some(e),
            _ => None,
        })
        .await
    }

    /// Waits until the pod collection of the running stack synced; returns the stack's epoch.
    pub async fn synced(&mut self) -> Result<u64, WaitError> {
        self.wait(|s| match s {
            Signal::Synced(e) => Some(e),
            _ => None,
        })
        .await
    }

    /// Waits until the stack is down.
    pub async fn closed(&mut self) -> Result<(), WaitError> {
        self.wait(|s| (s == Signal::Closed).then_some(())).await
    }

    async fn wait<T>(&mut self, f: impl Fn(Signal) -> Option<T>) -> Result<T, WaitError> {
        loop {
            let s = *self.rx.borrow_and_update();
            if s == Signal::ShuttingDown {
                return Err(WaitError::ShuttingDown);
            }
            if let Some(v) = f(s) {
                return Ok(v);
            }
            if self.rx.changed().await.is_err() {
                return Err(WaitError::ShuttingDown);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GRACE: Duration = Duration::from_secs(600);

    #[test]
    fn opens_on_first_demand_and_closes_after_grace() {
        let t0 = Instant::now();
        let mut m = Machine::new(GRACE);
        assert_eq!(m.observe(false, t0), Action::None);
        assert_eq!(m.observe(true, t0), Action::Start);
        assert_eq!(m.observe(true, t0), Action::None);
        assert_eq!(m.observe(false, t0 + Duration::from_secs(1)), Action::None);
        assert_eq!(m.deadline(), Some(t0 + Duration::from_secs(601)));
        assert_eq!(m.observe(false, t0 + Duration::from_secs(600)), Action::None);
        assert_eq!(m.observe(false, t0 + Duration::from_secs(601)), Action::Stop);
        assert!(!m.is_open());
        assert_eq!(m.observe(true, t0 + Duration::from_secs(700)), Action::Start);
        assert_eq!(m.opened(), 2);
    }

    #[test]
    fn demand_returning_during_grace_keeps_the_stack() {
        let t0 = Instant::now();
        let mut m = Machine::new(GRACE);
        m.observe(true, t0);
        m.observe(false, t0);
        assert_eq!(m.observe(true, t0 + Duration::from_secs(10)), Action::None);
        assert_eq!(m.state(), State::Open);
        // the grace period restarts from the next disappearance
        m.observe(false, t0 + Duration::from_secs(20));
        assert_eq!(m.observe(false, t0 + Duration::from_secs(610)), Action::None);
        assert_eq!(m.observe(false, t0 + Duration::from_secs(620)), Action::Stop);
    }

    #[test]
    fn zero_grace_never_stops() {
        let t0 = Instant::now();
        let mut m = Machine::new(Duration::ZERO);
        m.observe(true, t0);
        for s in 0..100 {
            assert_eq!(m.observe(false, t0 + Duration::from_secs(s * 3600)), Action::None);
        }
        assert!(m.is_open());
    }

    #[test]
    fn demand_counts_kinds_and_namespaces() {
        let mut d = Demand::default();
        d.insert(Source::new(SourceKind::Dpa, "a", "web"));
        d.insert(Source::new(SourceKind::Deployment, "b", "api"));
        d.insert(Source::namespace("c"));
        assert_eq!(d.len(), 3);
        assert_eq!(d.count(SourceKind::Dpa), 1);
        assert_eq!(d.namespaces().into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
        d.replace_kind(SourceKind::Dpa, BTreeSet::new());
        assert_eq!(d.count(SourceKind::Dpa), 0);
        d.remove(&Source::new(SourceKind::Deployment, "b", "api"));
        d.remove(&Source::namespace("c"));
        assert!(d.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Step {
        Demand(bool),
        Advance(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            any::<bool>().prop_map(Step::Demand),
            (0u64..2000).prop_map(Step::Advance)
        ]
    }

    proptest! {
        #[test]
        fn start_and_stop_alternate_and_respect_demand_and_grace(
            grace in 0u64..1000,
            steps in proptest::collection::vec(step(), 0..200),
        ) {
            let t0 = Instant::now();
            let grace = Duration::from_secs(grace);
            let mut m = Machine::new(grace);
            let mut now = t0;
            let mut demand = false;
            let mut running = false;
            let mut last_demand_at: Option<Instant> = None;
            for s in steps {
                match s {
                    Step::Demand(d) => demand = d,
                    Step::Advance(secs) => now += Duration::from_secs(secs),
                }
                if demand {
                    last_demand_at = Some(now);
                }
                match m.observe(demand, now) {
                    Action::Start => {
                        prop_assert!(!running, "started twice");
                        prop_assert!(demand, "started without demand");
                        running = true;
                    }
                    Action::Stop => {
                        prop_assert!(running, "stopped while not running");
                        prop_assert!(!demand, "stopped while demand is present");
                        prop_assert!(!grace.is_zero(), "zero grace never stops");
                        let since = last_demand_at.map(|t| now.saturating_duration_since(t));
                        prop_assert!(since.is_none_or(|d| d >= grace), "stopped before the grace period");
                        running = false;
                    }
                    Action::None => {}
                }
                prop_assert_eq!(running, m.is_open());
                if demand {
                    prop_assert!(running, "demand present but the stack is down");
                }
            }
        }
    }

    #[tokio::test]
    async fn concurrent_waiters_all_wake_and_tell_open_from_shutdown() {
        let gate = Gate::new();
        let mut handles = Vec::new();
        for _ in 0..10 {
            let mut w = gate.waiter();
            handles.push(tokio::spawn(async move { w.synced().await }));
        }
        gate.publish(Signal::Open(1));
        tokio::task::yield_now().await;
        gate.publish(Signal::Synced(1));
        for h in handles {
            assert_eq!(h.await.unwrap(), Ok(1));
        }
        let mut w = gate.waiter();
        let closed = tokio::spawn(async move { w.closed().await });
        gate.publish(Signal::ShuttingDown);
        assert_eq!(closed.await.unwrap(), Err(WaitError::ShuttingDown));
        // a shut-down gate stays shut down
        gate.publish(Signal::Open(2));
        assert_eq!(gate.current(), Signal::ShuttingDown);
        assert_eq!(gate.waiter().opened().await, Err(WaitError::ShuttingDown));
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaks_nothing() {
        let gate = Gate::new();
        let mut w = gate.waiter();
        let r = tokio::time::timeout(Duration::from_millis(10), w.opened()).await;
        assert!(r.is_err(), "nothing opened");
        drop(w);
        assert_eq!(gate.tx.receiver_count(), 0, "the dropped waiter is gone");
        gate.publish(Signal::Open(1));
        assert_eq!(gate.waiter().opened().await, Ok(1));
    }
}
