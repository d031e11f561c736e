//! The lazy-stack gate: when the autoscaling stack (pod collection, controller, webhook) runs.
//!
//! The stack costs memory in proportion to the cluster's pods, so it starts only once an autoscaler
//! exists ([`crate::demand`]) and stops again when the last one has been gone for a grace period (10
//! minutes by default; [`Duration::ZERO`] means "never stop once started", the behaviour of the Datadog
//! Cluster Agent's close-once gate).
//!
//! Two layers:
//!
//! - [`Machine`] is the pure state machine. It is fed "is there demand?" and the current time, and
//!   answers with an [`Action`] (start the stack, stop it, or nothing) and the next deadline at which it
//!   wants to be woken. States: [`State::Closed`], [`State::Open`], [`State::Draining`] (the last
//!   autoscaler went away, the grace period is running) and [`State::ShuttingDown`] (terminal).
//! - [`Gate`] is the async handle around it, shared by the demand watches (which call
//!   [`Gate::set_demand`]), the timer task ([`Gate::driver`]) and the dependants, which wait through a
//!   [`GateWatcher`] (a `tokio::sync::watch` receiver): [`GateWatcher::wait_open`] tells "opened, epoch
//!   N" from "the agent is shutting down", [`GateWatcher::wait_pod_collection_synced`] waits for the
//!   second signal of an epoch, and [`GateWatcher::wait_closed`] for its end. Every wait is
//!   cancellation-safe (all state lives in the channel), and a dropped watcher leaves nothing behind.
//!
//! The gate opens and closes any number of times. Each opening starts a new epoch (1, 2, ...); the
//! "pod collection synced" signal belongs to one epoch and is reset when it ends, so a collector of an
//! old epoch cannot mark a new one as synced.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The default grace period between the last autoscaler going away and the stack stopping: long enough
/// to ride out a delete-and-recreate (`kubectl replace`, a GitOps sync, a Remote Config update).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);

/// The states of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The stack is not running.
    Closed,
    /// The stack is running; autoscalers exist (or existed, with a zero grace period).
    Open,
    /// The stack is running; the last autoscaler went away at `since` and the grace period is running.
    Draining {
        /// When the demand disappeared.
        since: Instant,
    },
    /// The agent is shutting down; terminal.
    ShuttingDown,
}

/// What the owner of the stack must do after an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the stack must be started or stopped as told"]
pub enum Action {
    /// Nothing changes for the stack.
    None,
    /// Start the stack (a new epoch begins).
    StartStack,
    /// Stop the stack (the epoch ends).
    StopStack,
}

/// The answer to one input of the [`Machine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the stack must be started or stopped as told"]
pub struct Output {
    /// What to do now.
    pub action: Action,
    /// When to call [`Machine::advance`] next (the end of the grace period), if ever.
    pub deadline: Option<Instant>,
}

/// How many times each transition happened (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transitions {
    /// Closed → Open: the stack started.
    pub opened: u64,
    /// Open → Draining: the last autoscaler went away and the grace period started.
    pub drained: u64,
    /// Draining → Open: an autoscaler came back during the grace period.
    pub resumed: u64,
    /// Draining → Closed: the grace period ended and the stack stopped.
    pub closed: u64,
    /// Any state → ShuttingDown.
    pub shut_down: u64,
}

/// The pure gate state machine.
#[derive(Debug, Clone)]
pub struct Machine {
    state: State,
    grace: Duration,
    demand: bool,
    epoch: u64,
    transitions: Transitions,
}

// === impl Machine ===

impl Machine {
    /// A closed gate with no demand. A zero `grace` means the stack never stops once started.
    pub fn new(grace: Duration) -> Machine {
        Machine {
            state: State::Closed,
            grace,
            demand: false,
            epoch: 0,
            transitions: Transitions::default(),
        }
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The last demand fed in.
    pub fn demand(&self) -> bool {
        self.demand
    }

    /// Whether the stack should be running (open or draining).
    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Open | State::Draining { .. })
    }

    /// How many times the gate opened; the current or last epoch (0 before the first opening).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The transition counts.
    pub fn transitions(&self) -> Transitions {
        self.transitions
    }

    /// When the grace period ends, if it is running. `None` when it would end beyond the range of
    /// [`Instant`] (a practically infinite grace period).
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Draining { since } => since.checked_add(self.grace),
            _ => None,
        }
    }

    /// Feeds whether any autoscaler exists, at `now`.
    pub fn set_demand(&mut self, demand: bool, now: Instant) -> Output {
        self.demand = demand;
        self.advance(now)
    }

    /// Re-evaluates the last demand at `now` (the timer firing).
    pub fn advance(&mut self, now: Instant) -> Output {
        let action = match (self.state, self.demand) {
            (State::ShuttingDown, _) | (State::Closed, false) | (State::Open, true) => Action::None,
            (State::Closed, true) => {
                self.state = State::Open;
                self.epoch += 1;
                self.transitions.opened += 1;
                Action::StartStack
            }
            (State::Open, false) => {
                if !self.grace.is_zero() {
                    self.state = State::Draining { since: now };
                    self.transitions.drained += 1;
                }
                Action::None
            }
            (State::Draining { .. }, true) => {
                self.state = State::Open;
                self.transitions.resumed += 1;
                Action::None
            }
            (State::Draining { .. }, false) => match self.deadline() {
                Some(deadline) if now >= deadline => {
                    self.state = State::Closed;
                    self.transitions.closed += 1;
                    Action::StopStack
                }
                _ => Action::None,
            },
        };
        Output {
            action,
            deadline: self.deadline(),
        }
    }

    /// Enters the terminal shutting-down state; the stack must stop if it was running.
    pub fn shutdown(&mut self) -> Action {
        if self.state == State::ShuttingDown {
            return Action::None;
        }
        let running = self.is_running();
        self.state = State::ShuttingDown;
        self.transitions.shut_down += 1;
        if running { Action::StopStack } else { Action::None }
    }
}

/// The phase dependants see (a [`State`] without its timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The stack is not running.
    Closed,
    /// The stack is running.
    Open,
    /// The stack is running; the grace period is counting down.
    Draining,
    /// The agent is shutting down.
    ShuttingDown,
}

impl Phase {
    fn of(state: State) -> Phase {
        match state {
            State::Closed => Phase::Closed,
            State::Open => Phase::Open,
            State::Draining { .. } => Phase::Draining,
            State::ShuttingDown => Phase::ShuttingDown,
        }
    }

    /// Whether the stack runs in this phase.
    pub fn is_running(self) -> bool {
        matches!(self, Phase::Open | Phase::Draining)
    }
}

/// What the gate publishes to its watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The phase.
    pub phase: Phase,
    /// The current (or last) epoch: how many times the gate opened.
    pub epoch: u64,
    /// Whether the pod collection of the current epoch finished its initial list.
    pub pod_collection_synced: bool,
}

/// How [`GateWatcher::wait_open`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenOutcome {
    /// The stack is running, in this epoch.
    Opened(u64),
    /// The agent is shutting down: stop waiting and exit.
    ShuttingDown,
}

/// How [`GateWatcher::wait_pod_collection_synced`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The pod collection of the epoch is synced.
    Synced,
    /// The epoch ended before its pod collection synced.
    EpochEnded,
    /// The agent is shutting down.
    ShuttingDown,
}

/// How [`GateWatcher::wait_closed`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseOutcome {
    /// The epoch is over: stop the stack.
    Closed,
    /// The agent is shutting down: stop the stack and exit.
    ShuttingDown,
}

#[derive(Debug)]
struct Shared {
    machine: Mutex<Inner>,
    tx: watch::Sender<Status>,
}

#[derive(Debug)]
struct Inner {
    machine: Machine,
    synced: bool,
}

/// The async gate handle: cheap to clone, all clones share one gate.
#[derive(Debug, Clone)]
pub struct Gate {
    shared: Arc<Shared>,
}

/// The time the gate runs on: tokio's clock, so paused-time tests drive the grace timer.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

// === impl Gate ===

impl Gate {
    /// A closed gate with the given grace period ([`DEFAULT_GRACE`] is the usual value; zero means the
    /// stack never stops once started). Spawn [`Gate::driver`] to fire the grace timer.
    pub fn new(grace: Duration) -> Gate {
        let machine = Machine::new(grace);
        let (tx, _) = watch::channel(Status {
            phase: Phase::Closed,
            epoch: 0,
            pod_collection_synced: false,
        });
        Gate {
            shared: Arc::new(Shared {
                machine: Mutex::new(Inner {
                    machine,
                    synced: false,
                }),
                tx,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The critical sections never panic half-way; a poisoned lock still holds a consistent state.
        self.shared.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `f` to the machine and publishes the resulting status (under the lock, so statuses are
    /// published in order).
    fn update<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.lock();
        let out = f(&mut inner);
        if !inner.machine.is_running() {
            inner.synced = false;
        }
        let status = Status {
            phase: Phase::of(inner.machine.state()),
            epoch: inner.machine.epoch(),
            pod_collection_synced: inner.synced,
        };
        self.shared.tx.send_if_modified(|cur| {
            let changed = *cur != status;
            *cur = status;
            changed
        });
        out
    }

    /// Sets whether any autoscaler exists. Returns what the stack owner must do (the same information
    /// reaches watchers through the status).
    pub fn set_demand(&self, present: bool) -> Action {
        let now = now();
        self.update(|inner| inner.machine.set_demand(present, now).action)
    }

    /// Re-evaluates the gate at the current time; the driver calls this when the grace period ends.
    pub fn advance(&self) -> Action {
        let now = now();
        self.update(|inner| inner.machine.advance(now).action)
    }

    /// Shuts the gate down for good: every watcher sees [`Phase::ShuttingDown`], and the driver exits.
    pub fn shutdown(&self) -> Action {
        self.update(|inner| inner.machine.shutdown())
    }

    /// Marks the pod collection of `epoch` as synced. Returns false (and changes nothing) if that epoch
    /// is not the running one.
    pub fn mark_pod_collection_synced(&self, epoch: u64) -> bool {
        self.update(|inner| {
            let current = inner.machine.is_running() && inner.machine.epoch() == epoch;
            if current {
                inner.synced = true;
            }
            current
        })
    }

    /// The current status.
    pub fn status(&self) -> Status {
        *self.shared.tx.borrow()
    }

    /// The current state of the machine.
    pub fn state(&self) -> State {
        self.lock().machine.state()
    }

    /// The current (or last) epoch.
    pub fn epoch(&self) -> u64 {
        self.lock().machine.epoch()
    }

    /// The transition counts.
    pub fn transitions(&self) -> Transitions {
        self.lock().machine.transitions()
    }

    /// When the grace period ends, if it is running.
    pub fn deadline(&self) -> Option<Instant> {
        self.lock().machine.deadline()
    }

    /// A new watcher.
    pub fn watcher(&self) -> GateWatcher {
        GateWatcher {
            rx: self.shared.tx.subscribe(),
        }
    }

    /// Waits until the stack runs, with a fresh watcher; see [`GateWatcher::wait_open`].
    pub async fn wait_open(&self) -> OpenOutcome {
        self.watcher().wait_open().await
    }

    /// Waits until the pod collection of `epoch` synced, with a fresh watcher; see
    /// [`GateWatcher::wait_pod_collection_synced`].
    pub async fn wait_pod_collection_synced(&self, epoch: u64) -> SyncOutcome {
        self.watcher().wait_pod_collection_synced(epoch).await
    }

    /// The timer task: sleeps until the grace period ends and then closes the gate. Spawn it once. It
    /// returns when the gate shuts down or every [`Gate`] handle is dropped (it holds only a weak
    /// reference, so it keeps nothing alive).
    pub fn driver(&self) -> impl Future<Output = ()> + Send + 'static {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        let mut rx = self.shared.tx.subscribe();
        async move {
            loop {
                let phase = rx.borrow_and_update().phase;
                if phase == Phase::ShuttingDown {
                    return;
                }
                let deadline = match weak.upgrade() {
                    Some(shared) => Gate { shared }.deadline(),
                    None => return,
                };
                match deadline {
                    Some(deadline) => {
                        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
                        tokio::select! {
                            () = sleep => match weak.upgrade() {
                                Some(shared) => {
                                    // The action is published to watchers; the owner of the stack acts
                                    // on the status.
                                    let _ = Gate { shared }.advance();
                                }
                                None => return,
                            },
                            changed = rx.changed() => if changed.is_err() { return },
                        }
                    }
                    None => {
                        if rx.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// A waiting side of the gate. Cloning is cheap; dropping one (or cancelling any of its waits) leaks
/// nothing.
#[derive(Debug, Clone)]
pub struct GateWatcher {
    rx: watch::Receiver<Status>,
}

// === impl GateWatcher ===

impl GateWatcher {
    /// The current status.
    pub fn status(&self) -> Status {
        *self.rx.borrow()
    }

    /// Waits until `f` returns `Some` for the status; a gone gate reads as shutting down.
    async fn wait<T>(&mut self, f: impl Fn(Status) -> Option<T>, gone: T) -> T {
        loop {
            let status = *self.rx.borrow_and_update();
            if let Some(v) = f(status) {
                return v;
            }
            if self.rx.changed().await.is_err() {
                return gone;
            }
        }
    }

    /// Waits until the stack runs, and returns its epoch, or until the agent shuts down.
    pub async fn wait_open(&mut self) -> OpenOutcome {
        self.wait(
            |s| match s.phase {
                Phase::ShuttingDown => Some(OpenOutcome::ShuttingDown),
                p if p.is_running() => Some(OpenOutcome::Opened(s.epoch)),
                _ => None,
            },
            OpenOutcome::ShuttingDown,
        )
        .await
    }

    /// Waits until the pod collection of `epoch` is synced, or the epoch ends, or the agent shuts down.
    pub async fn wait_pod_collection_synced(&mut self, epoch: u64) -> SyncOutcome {
        self.wait(
            |s| match s.phase {
                Phase::ShuttingDown => Some(SyncOutcome::ShuttingDown),
                p if !p.is_running() || s.epoch != epoch => Some(SyncOutcome::EpochEnded),
                _ if s.pod_collection_synced => Some(SyncOutcome::Synced),
                _ => None,
            },
            SyncOutcome::ShuttingDown,
        )
        .await
    }

    /// Waits until `epoch` is over (the gate closed, possibly reopened since), or the agent shuts down.
    pub async fn wait_closed(&mut self, epoch: u64) -> CloseOutcome {
        self.wait(
            |s| match s.phase {
                Phase::ShuttingDown => Some(CloseOutcome::ShuttingDown),
                p if !p.is_running() || s.epoch != epoch => Some(CloseOutcome::Closed),
                _ => None,
            },
            CloseOutcome::ShuttingDown,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GRACE: Duration = DEFAULT_GRACE;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn opens_drains_closes_and_reopens() {
        let t0 = Instant::now();
        let mut m = Machine::new(GRACE);
        assert_eq!(m.set_demand(false, t0).action, Action::None);
        assert_eq!(m.state(), State::Closed);
        let out = m.set_demand(true, t0);
        assert_eq!(
            out,
            Output {
                action: Action::StartStack,
                deadline: None
            }
        );
        assert_eq!(m.epoch(), 1);
        assert_eq!(m.set_demand(true, t0).action, Action::None);
        let out = m.set_demand(false, t0 + secs(1));
        assert_eq!(
            out,
            Output {
                action: Action::None,
                deadline: Some(t0 + secs(601))
            }
        );
        assert_eq!(m.state(), State::Draining { since: t0 + secs(1) });
        assert_eq!(m.advance(t0 + secs(600)).action, Action::None);
        assert_eq!(
            m.advance(t0 + secs(601)),
            Output {
                action: Action::StopStack,
                deadline: None
            }
        );
        assert_eq!(m.state(), State::Closed);
        assert_eq!(m.set_demand(true, t0 + secs(700)).action, Action::StartStack);
        assert_eq!(m.epoch(), 2);
        assert_eq!(
            m.transitions(),
            Transitions {
                opened: 2,
                drained: 1,
                resumed: 0,
                closed: 1,
                shut_down: 0
            }
        );
    }

    #[test]
    fn demand_returning_during_grace_resumes_and_restarts_the_grace_later() {
        let t0 = Instant::now();
        let mut m = Machine::new(GRACE);
        let _ = m.set_demand(true, t0);
        let _ = m.set_demand(false, t0);
        assert_eq!(m.set_demand(true, t0 + secs(10)).action, Action::None);
        assert_eq!(m.state(), State::Open);
        assert_eq!(m.deadline(), None);
        let _ = m.set_demand(false, t0 + secs(20));
        assert_eq!(m.advance(t0 + secs(610)).action, Action::None);
        assert_eq!(m.advance(t0 + secs(620)).action, Action::StopStack);
        assert_eq!(m.epoch(), 1);
        assert_eq!(m.transitions().resumed, 1);
    }

    #[test]
    fn zero_grace_never_stops() {
        let t0 = Instant::now();
        let mut m = Machine::new(Duration::ZERO);
        let _ = m.set_demand(true, t0);
        for s in 0..100 {
            let out = m.set_demand(false, t0 + secs(s * 3600));
            assert_eq!(
                out,
                Output {
                    action: Action::None,
                    deadline: None
                }
            );
        }
        assert_eq!(m.state(), State::Open);
    }

    #[test]
    fn shutdown_is_terminal_and_stops_a_running_stack() {
        let t0 = Instant::now();
        let mut m = Machine::new(GRACE);
        assert_eq!(m.shutdown(), Action::None);
        assert_eq!(m.set_demand(true, t0).action, Action::None);
        let mut m = Machine::new(GRACE);
        let _ = m.set_demand(true, t0);
        assert_eq!(m.shutdown(), Action::StopStack);
        assert_eq!(m.shutdown(), Action::None);
        assert_eq!(m.set_demand(true, t0).action, Action::None);
        assert_eq!(m.state(), State::ShuttingDown);
    }

    #[test]
    fn huge_grace_has_no_deadline() {
        let t0 = Instant::now();
        let mut m = Machine::new(Duration::MAX);
        let _ = m.set_demand(true, t0);
        assert_eq!(m.set_demand(false, t0).deadline, None);
        assert_eq!(m.advance(t0 + secs(1 << 40)).action, Action::None);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Demand(bool),
        Advance(u64),
        Tick,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            any::<bool>().prop_map(Step::Demand),
            (0u64..2000).prop_map(Step::Advance),
            Just(Step::Tick),
        ]
    }

    proptest! {
        #[test]
        fn starts_and_stops_alternate_respecting_demand_and_grace(
            grace in prop_oneof![Just(0u64), 1u64..1500],
            steps in proptest::collection::vec(step(), 0..200),
        ) {
            let t0 = Instant::now();
            let grace = secs(grace);
            let mut m = Machine::new(grace);
            let mut now = t0;
            let mut demand = false;
            let mut running = false;
            let mut last_demand_at: Option<Instant> = None;
            let mut starts = 0;
            for s in steps {
                let out = match s {
                    Step::Demand(d) => {
                        demand = d;
                        m.set_demand(d, now)
                    }
                    Step::Advance(n) => {
                        now += secs(n);
                        m.advance(now)
                    }
                    Step::Tick => m.advance(now),
                };
                if demand {
                    last_demand_at = Some(now);
                }
                match out.action {
                    Action::StartStack => {
                        prop_assert!(!running, "started twice without a stop");
                        prop_assert!(demand, "started without demand");
                        running = true;
                        starts += 1;
                    }
                    Action::StopStack => {
                        prop_assert!(running, "stopped while not running");
                        prop_assert!(!demand, "stopped while demand is present");
                        prop_assert!(!grace.is_zero(), "zero grace never stops");
                        let quiet = last_demand_at.map(|t| now.saturating_duration_since(t));
                        prop_assert!(quiet.is_none_or(|d| d >= grace), "stopped before the grace period");
                        running = false;
                    }
                    Action::None => {}
                }
                prop_assert_eq!(running, m.is_running());
                prop_assert_eq!(m.epoch(), starts);
                if demand {
                    prop_assert!(running, "demand present but the stack is down");
                }
                if let Some(d) = out.deadline {
                    prop_assert!(d > now, "a deadline in the past was not acted on");
                }
            }
        }
    }

    // === async handle ===

    #[tokio::test(start_paused = true)]
    async fn driver_closes_after_the_grace_period() {
        let gate = Gate::new(GRACE);
        let driver = tokio::spawn(gate.driver());
        let mut w = gate.watcher();
        assert_eq!(gate.set_demand(true), Action::StartStack);
        assert_eq!(w.wait_open().await, OpenOutcome::Opened(1));
        assert_eq!(gate.set_demand(false), Action::None);
        assert_eq!(gate.status().phase, Phase::Draining);

        let start = tokio::time::Instant::now();
        assert_eq!(w.wait_closed(1).await, CloseOutcome::Closed);
        assert_eq!(start.elapsed(), GRACE);
        assert_eq!(gate.status().phase, Phase::Closed);

        // Reopen: a new epoch.
        assert_eq!(gate.set_demand(true), Action::StartStack);
        assert_eq!(w.wait_open().await, OpenOutcome::Opened(2));
        assert_eq!(gate.transitions().closed, 1);

        assert_eq!(gate.shutdown(), Action::StopStack);
        driver.await.unwrap();
        assert_eq!(w.wait_open().await, OpenOutcome::ShuttingDown);
    }

    #[tokio::test(start_paused = true)]
    async fn demand_back_during_grace_cancels_the_timer() {
        let gate = Gate::new(GRACE);
        tokio::spawn(gate.driver());
        let _ = gate.set_demand(true);
        let _ = gate.set_demand(false);
        tokio::time::sleep(secs(300)).await;
        let _ = gate.set_demand(true);
        tokio::time::sleep(secs(3600)).await;
        assert_eq!(gate.status().phase, Phase::Open);
        let _ = gate.set_demand(false);
        tokio::time::sleep(secs(599)).await;
        assert_eq!(gate.status().phase, Phase::Draining);
        tokio::time::sleep(secs(2)).await;
        assert_eq!(gate.status().phase, Phase::Closed);
        assert_eq!(gate.epoch(), 1);
        let _ = gate.shutdown();
    }

    #[tokio::test(start_paused = true)]
    async fn zero_grace_gate_never_closes() {
        let gate = Gate::new(Duration::ZERO);
        tokio::spawn(gate.driver());
        let _ = gate.set_demand(true);
        let _ = gate.set_demand(false);
        tokio::time::sleep(secs(100 * 3600)).await;
        assert_eq!(gate.status().phase, Phase::Open);
        let _ = gate.shutdown();
    }

    #[tokio::test]
    async fn concurrent_waiters_all_wake() {
        let gate = Gate::new(GRACE);
        let mut handles = Vec::new();
        for _ in 0..16 {
            let g = gate.clone();
            handles.push(tokio::spawn(async move {
                let OpenOutcome::Opened(epoch) = g.wait_open().await else {
                    return None;
                };
                Some((epoch, g.wait_pod_collection_synced(epoch).await))
            }));
        }
        tokio::task::yield_now().await;
        let _ = gate.set_demand(true);
        assert!(!gate.mark_pod_collection_synced(7), "not the running epoch");
        assert!(gate.mark_pod_collection_synced(1));
        for h in handles {
            assert_eq!(h.await.unwrap(), Some((1, SyncOutcome::Synced)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn synced_belongs_to_one_epoch() {
        let gate = Gate::new(secs(1));
        tokio::spawn(gate.driver());
        let _ = gate.set_demand(true);
        assert!(gate.mark_pod_collection_synced(1));
        assert!(gate.status().pod_collection_synced);
        let mut w = gate.watcher();
        let _ = gate.set_demand(false);
        assert_eq!(w.wait_closed(1).await, CloseOutcome::Closed);
        assert!(!gate.status().pod_collection_synced, "reset on close");
        assert!(!gate.mark_pod_collection_synced(1), "a stale epoch cannot mark");

        let _ = gate.set_demand(true);
        let waiter = tokio::spawn({
            let g = gate.clone();
            async move { g.wait_pod_collection_synced(2).await }
        });
        // The epoch ends before the collection synced.
        let _ = gate.set_demand(false);
        assert_eq!(waiter.await.unwrap(), SyncOutcome::EpochEnded);
        let _ = gate.shutdown();
        assert_eq!(
            gate.wait_pod_collection_synced(2).await,
            SyncOutcome::ShuttingDown
        );
    }

    #[tokio::test]
    async fn shutdown_is_distinguishable_from_opening() {
        let gate = Gate::new(GRACE);
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let g = gate.clone();
                tokio::spawn(async move { g.wait_open().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(gate.shutdown(), Action::None);
        for w in waiters {
            assert_eq!(w.await.unwrap(), OpenOutcome::ShuttingDown);
        }
        // A shut-down gate stays shut down.
        assert_eq!(gate.set_demand(true), Action::None);
        assert_eq!(gate.wait_open().await, OpenOutcome::ShuttingDown);
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_and_cancelled_waiters_leak_nothing() {
        let gate = Gate::new(GRACE);
        let base = gate.shared.tx.receiver_count();
        {
            let mut w = gate.watcher();
            let r = tokio::time::timeout(secs(10), w.wait_open()).await;
            assert!(r.is_err(), "nothing opened");
            // The watcher is still usable after a cancelled wait.
            let _ = gate.set_demand(true);
            assert_eq!(w.wait_open().await, OpenOutcome::Opened(1));
            let r = tokio::time::timeout(secs(10), gate.wait_pod_collection_synced(1)).await;
            assert!(r.is_err());
        }
        assert_eq!(gate.shared.tx.receiver_count(), base, "dropped watchers are gone");
        assert_eq!(Arc::strong_count(&gate.shared), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn driver_exits_when_the_gate_is_dropped() {
        let gate = Gate::new(GRACE);
        let driver = tokio::spawn(gate.driver());
        let _ = gate.set_demand(true);
        let _ = gate.set_demand(false);
        tokio::task::yield_now().await;
        drop(gate);
        tokio::time::timeout(secs(1), driver).await.unwrap().unwrap();
    }
}
