//! Prometheus metrics of the agent (prometheus-client, one registry, bounded label values only).
//!
//! Every name is listed in the README's "Metrics" section.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Where a gate transition went.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum GateState {
    /// The stack started.
    Open,
    /// The stack stopped.
    Closed,
}

/// Label set of gate transitions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// The new state.
    pub to: GateState,
}

/// What an autoscaler demand came from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum DemandKind {
    /// A DatadogPodAutoscaler.
    Dpa,
    /// A profile-labelled Deployment or StatefulSet.
    Workload,
    /// A profile-labelled namespace.
    Namespace,
}

/// Label set of the autoscaler gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DemandLabels {
    /// The source.
    pub source: DemandKind,
}

/// The path an admission request took.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum WebhookPath {
    /// The stack is down: allowed without decoding the pod.
    Fast,
    /// The stack is up and the pod was examined; no patch.
    Allowed,
    /// A patch was returned.
    Patched,
    /// An internal error: allowed without a patch (fail open).
    FailOpen,
    /// The request was not a valid AdmissionReview (HTTP 400).
    Malformed,
}

/// Label set of webhook requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// The path taken.
    pub path: WebhookPath,
}

/// What the horizontal controller did.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ControllerOp {
    /// A reconcile ran.
    Reconcile,
    /// A reconcile failed (retried with backoff).
    ReconcileError,
    /// `/scale` was written.
    ScaleWrite,
    /// A `/scale` write failed.
    ScaleError,
    /// The horizontal status fields were applied.
    StatusWrite,
    /// An API request of a reconcile or a pass (watches aside).
    ApiRequest,
}

/// Label set of controller operations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// The operation.
    pub op: ControllerOp,
}

/// What the vertical loop did.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum VerticalOp {
    /// `status.vertical` and its conditions were applied.
    StatusWrite,
    /// Applying them failed.
    StatusError,
    /// A checkpoint ConfigMap was written.
    Checkpoint,
    /// An OOM kill was fed to the recommender.
    OomRecorded,
    /// A namespace's PodMetrics could not be listed.
    MetricsError,
    /// Two autoscalers on one workload were reported (event).
    Conflict,
    /// A rollout was triggered to apply a vertical recommendation.
    RolloutTriggered,
    /// A pod was resized in place (`pods/resize`).
    Resize,
    /// A pod was evicted because it could not be resized in place.
    Eviction,
    /// A rollout, resize or eviction failed.
    ApplyError,
}

/// Label set of vertical operations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerticalLabels {
    /// The operation.
    pub op: VerticalOp,
}

/// All metrics of the agent.
pub struct Metrics {
    /// The registry (encode it for `/metrics`).
    pub registry: Registry,
    /// 1 while the autoscaling stack runs.
    pub gate_open: Gauge,
    /// Gate transitions.
    pub gate_transitions: Family<TransitionLabels, Counter>,
    /// Autoscalers known, by source.
    pub autoscalers: Family<DemandLabels, Gauge>,
    /// 1 once the pod collection synced, 0 otherwise.
    pub pod_collection_synced: Gauge,
    /// Pods in the cache.
    pub cached_pods: Gauge,
    /// Approximate heap bytes of the pod cache.
    pub cache_bytes: Gauge,
    /// Pod watch restarts (relists and reconnects).
    pub watch_restarts: Gauge,
    /// Pod watch errors.
    pub watch_errors: Gauge,
    /// Errors of the autoscaler (demand) watches.
    pub demand_watch_errors: Counter,
    /// Admission requests by path.
    pub webhook_requests: Family<WebhookLabels, Counter>,
    /// Horizontal controller operations (summed over the stack's lifetimes).
    pub controller: Family<ControllerLabels, Counter>,
    /// Vertical loop operations.
    pub vertical: Family<VerticalLabels, Counter>,
    /// Allocator-reported heap bytes (jemalloc `stats.allocated`).
    pub heap_bytes: Gauge,
    /// Resident set size.
    pub resident_bytes: Gauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("lazyscale");
        let m = Metrics {
            gate_open: Gauge::default(),
            gate_transitions: Family::default(),
            autoscalers: Family::default(),
            pod_collection_synced: Gauge::default(),
            cached_pods: Gauge::default(),
            cache_bytes: Gauge::default(),
            watch_restarts: Gauge::default(),
            watch_errors: Gauge::default(),
            demand_watch_errors: Counter::default(),
            webhook_requests: Family::default(),
            controller: Family::default(),
            vertical: Family::default(),
            heap_bytes: Gauge::default(),
            resident_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "build",
            "Build information",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                (
                    "rustc",
                    option_env!("LAZYSCALE_RUSTC").unwrap_or("unknown").to_string(),
                ),
            ]),
        );
        registry.register(
            "gate_open",
            "1 while the autoscaling stack runs",
            m.gate_open.clone(),
        );
        registry.register(
            "gate_transitions",
            "Transitions of the lazy-stack gate",
            m.gate_transitions.clone(),
        );
        registry.register(
            "autoscalers",
            "Autoscalers known to the agent, by source",
            m.autoscalers.clone(),
        );
        registry.register(
            "pod_collection_synced",
            "1 once the pod collection finished its initial list",
            m.pod_collection_synced.clone(),
        );
        registry.register("podcache_pods", "Pods in the cache", m.cached_pods.clone());
        registry.register(
            "podcache_bytes",
            "Approximate heap bytes held by the pod cache",
            m.cache_bytes.clone(),
        );
        registry.register(
            "podcache_watch_restarts",
            "Restarts (relists, reconnects) of the pod watch since the stack started",
            m.watch_restarts.clone(),
        );
        registry.register(
            "podcache_watch_errors",
            "Errors of the pod watch since the stack started",
            m.watch_errors.clone(),
        );
        registry.register(
            "demand_watch_errors",
            "Errors of the autoscaler watches (DPAs, labelled workloads and namespaces)",
            m.demand_watch_errors.clone(),
        );
        registry.register(
            "webhook_requests",
            "Admission requests by the path they took",
            m.webhook_requests.clone(),
        );
        registry.register(
            "controller_operations",
            "Operations of the horizontal controller, by kind",
            m.controller.clone(),
        );
        registry.register(
            "vertical_operations",
            "Operations of the vertical loop, by kind",
            m.vertical.clone(),
        );
        registry.register(
            "process_heap_bytes",
            "Heap bytes allocated (jemalloc stats.allocated)",
            m.heap_bytes.clone(),
        );
        registry.register(
            "process_resident_bytes",
            "Resident set size of the agent",
            m.resident_bytes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Refreshes the process memory gauges.
    pub fn refresh_memory(&self) {
        let mem = crate::memory::sample();
        self.heap_bytes.set(mem.heap_bytes as i64);
        self.resident_bytes.set(mem.resident_bytes as i64);
    }

    /// Adds what the controller did since `last` (its counters start at zero with every stack).
    pub fn add_controller(
        &self,
        now: lazyscale_controller::CounterSnapshot,
        last: lazyscale_controller::CounterSnapshot,
    ) {
        let d = now - last;
        for (op, n) in [
            (ControllerOp::Reconcile, d.reconciles),
            (ControllerOp::ReconcileError, d.errors),
            (ControllerOp::ScaleWrite, d.scale_writes),
            (ControllerOp::ScaleError, d.scale_errors),
            (ControllerOp::StatusWrite, d.status_writes),
            (ControllerOp::ApiRequest, d.api_requests),
        ] {
            if n > 0 {
                self.controller.get_or_create(&ControllerLabels { op }).inc_by(n);
            }
        }
    }

    /// Counts one vertical operation.
    pub fn vertical(&self, op: VerticalOp) {
        self.vertical.get_or_create(&VerticalLabels { op }).inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        self.refresh_memory();
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_and_vertical_operations_are_exported() {
        let m = Metrics::new();
        let before = lazyscale_controller::CounterSnapshot::default();
        let now = lazyscale_controller::CounterSnapshot {
            reconciles: 3,
            scale_writes: 1,
            ..before
        };
        m.add_controller(now, before);
        m.add_controller(now, now);
        m.vertical(VerticalOp::StatusWrite);
        let text = m.encode();
        for want in [
            "lazyscale_controller_operations_total{op=\"Reconcile\"} 3",
            "lazyscale_controller_operations_total{op=\"ScaleWrite\"} 1",
            "lazyscale_vertical_operations_total{op=\"StatusWrite\"} 1",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
