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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
