//! Prometheus metrics of the agent (prometheus-client, one registry, bounded label values only).
//!
//! Every name is listed in the README's "Metrics" section.

use lazyscale_api::consts;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
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

/// A part of the agent's per-DPA memory (`lazyscale_memory_bytes`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum MemoryComponent {
    /// The parsed DPAs of the one DPA index (the objects, their keys, the maps).
    DpaIndex,
    /// What the horizontal controller keeps per DPA (histories, the limit set, explanations, statuses
    /// written).
    ControllerState,
    /// What the vertical loop keeps per DPA beside the histograms (statuses written, explain decisions).
    VerticalState,
    /// The vertical recommender's history (histograms and their keys).
    VerticalHistograms,
    /// Indexes outside the pod cache: the webhook's lookup of autoscalers by target. The pod cache's
    /// uid, owner and interest indexes are in `lazyscale_podcache_bytes`.
    Indexes,
}

impl MemoryComponent {
    /// Every component.
    pub const ALL: [MemoryComponent; 5] = [
        MemoryComponent::DpaIndex,
        MemoryComponent::ControllerState,
        MemoryComponent::VerticalState,
        MemoryComponent::VerticalHistograms,
        MemoryComponent::Indexes,
    ];
}

/// Label set of the memory breakdown.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemoryLabels {
    /// The component.
    pub component: MemoryComponent,
}

/// A part of the horizontal controller's per-DPA state (`lazyscale_controller_state_bytes`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ControllerStatePart {
    /// The table's slots and keys.
    Slots,
    /// The recommendation histories.
    Histories,
    /// The last explanation of each DPA.
    Explanations,
    /// The statuses written and not yet seen back by the DPA watch.
    Written,
}

/// Label set of the controller-state breakdown.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerStateLabels {
    /// The part.
    pub part: ControllerStatePart,
}

/// A part of the allocator's accounting (`lazyscale_process_allocator_bytes`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum AllocatorPart {
    /// Bytes in the pages of active allocations (jemalloc `stats.active`).
    Active,
    /// The allocator's metadata (`stats.metadata`).
    Metadata,
    /// Resident pages the allocator maps, dirty ones included (`stats.resident`).
    Resident,
    /// The allocator's active extents (`stats.mapped`).
    Mapped,
    /// Virtual memory retained and not resident (`stats.retained`).
    Retained,
}

/// Label set of the allocator breakdown.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AllocatorLabels {
    /// The part.
    pub part: AllocatorPart,
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

/// Buckets of the webhook latency histogram: 100 µs to about 3.3 s, doubling.
pub fn webhook_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 16)
}

/// Histograms of admission latency, by path.
pub type WebhookDurations = Family<WebhookLabels, Histogram, fn() -> Histogram>;

fn webhook_histogram() -> Histogram {
    Histogram::new(webhook_buckets())
}

/// The verb of a request the API server refused.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ApiVerb {
    /// GET of one object.
    Get,
    /// GET of a collection.
    List,
    /// A watch.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH (server-side apply included).
    Patch,
    /// DELETE.
    Delete,
    /// Anything else.
    Other,
}

/// The resource of a request the API server refused (a fixed set: what the chart's RBAC names).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ApiResourceKind {
    /// `pods`.
    Pods,
    /// `pods/resize`.
    PodsResize,
    /// `pods/eviction`.
    PodsEviction,
    /// `deployments`.
    Deployments,
    /// `statefulsets`.
    StatefulSets,
    /// `replicasets`.
    ReplicaSets,
    /// Argo `rollouts`.
    Rollouts,
    /// `scale` of any workload.
    Scale,
    /// `datadogpodautoscalers`.
    Dpas,
    /// `datadogpodautoscalers/status`.
    DpaStatus,
    /// `datadogpodautoscalerclusterprofiles` and their status.
    ClusterProfiles,
    /// `namespaces`.
    Namespaces,
    /// `metrics.k8s.io` pods.
    PodMetrics,
    /// `configmaps` (checkpoints).
    ConfigMaps,
    /// `secrets` (the webhook certificate).
    Secrets,
    /// `events`.
    Events,
    /// `leases`.
    Leases,
    /// `mutatingwebhookconfigurations`.
    WebhookConfigurations,
    /// Anything else.
    Other,
}

/// Label set of refused requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeniedLabels {
    /// The verb.
    pub verb: ApiVerb,
    /// The resource.
    pub resource: ApiResourceKind,
}

/// The verb and resource of an API request, from its method, path and query (pure).
pub fn classify(method: &str, path: &str, query: Option<&str>) -> DeniedLabels {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (group, rest): (&str, &[&str]) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (group, rest),
        _ => ("", &[]),
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, named, sub) = match rest {
        [r] => (*r, false, None),
        [r, _name] => (*r, true, None),
        [r, _name, sub, ..] => (*r, true, Some(*sub)),
        [] => ("", false, None),
    };
    use ApiResourceKind as R;
    let resource = match (group, resource, sub) {
        (_, _, Some("scale")) => R::Scale,
        ("", "pods", Some("resize")) => R::PodsResize,
        ("", "pods", Some("eviction")) => R::PodsEviction,
        ("", "pods", _) => R::Pods,
        ("apps", "deployments", _) => R::Deployments,
        ("apps", "statefulsets", _) => R::StatefulSets,
        ("apps", "replicasets", _) => R::ReplicaSets,
        ("argoproj.io", "rollouts", _) => R::Rollouts,
        (consts::GROUP, consts::DPA_PLURAL, Some("status")) => R::DpaStatus,
        (consts::GROUP, consts::DPA_PLURAL, _) => R::Dpas,
        (consts::GROUP, consts::CLUSTER_PROFILE_PLURAL, _) => R::ClusterProfiles,
        ("", "namespaces", _) => R::Namespaces,
        ("metrics.k8s.io", "pods", _) => R::PodMetrics,
        ("", "configmaps", _) => R::ConfigMaps,
        ("", "secrets", _) => R::Secrets,
        ("" | "events.k8s.io", "events", _) => R::Events,
        ("coordination.k8s.io", "leases", _) => R::Leases,
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", _) => R::WebhookConfigurations,
        _ => R::Other,
    };
    let watch = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match method {
        "GET" if named => ApiVerb::Get,
        "GET" if watch => ApiVerb::Watch,
        "GET" => ApiVerb::List,
        "POST" => ApiVerb::Create,
        "PUT" => ApiVerb::Update,
        "PATCH" => ApiVerb::Patch,
        "DELETE" => ApiVerb::Delete,
        _ => ApiVerb::Other,
    };
    DeniedLabels { verb, resource }
}

/// A tower layer for the agent's Kubernetes clients that counts every 403 the API server answers, by
/// verb and resource ([`Metrics::permission_denied`]) and logs it.
#[derive(Clone)]
pub struct DeniedLayer {
    counter: Family<DeniedLabels, Counter>,
}

/// The service of [`DeniedLayer`].
#[derive(Clone)]
pub struct DeniedService<S> {
    inner: S,
    counter: Family<DeniedLabels, Counter>,
}

impl<S> tower::Layer<S> for DeniedLayer {
    type Service = DeniedService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DeniedService {
            inner,
            counter: self.counter.clone(),
        }
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for DeniedService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let labels = classify(req.method().as_str(), req.uri().path(), req.uri().query());
        let counter = self.counter.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            if let Ok(r) = &res
                && r.status() == http::StatusCode::FORBIDDEN
            {
                counter.get_or_create(&labels).inc();
                tracing::warn!(verb = ?labels.verb, resource = ?labels.resource, "the API server refused a request (403): RBAC is missing a permission");
            }
            res
        })
    }
}

/// How long an idle connection stays in the client's pool. The controller's and the vertical loop's
/// passes (every 30 s by default) open their connections again; a burst of requests within a pass
/// reuses them.
pub const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Idle connections kept in the pool; a burst of concurrent requests closes the rest when it ends.
pub const POOL_MAX_IDLE: usize = 4;

/// Largest read buffer of one connection. hyper grows a connection's read buffer up to 400 KiB while
/// it reads a large response (a page of 500 pods is several MB) and keeps it for the connection's
/// life; a heap profile at 2,000 DPAs found 3.9 MB in the buffers of 35 pooled connections. 64 KiB reads a
/// list in more, smaller reads and bounds each connection, the watches' included.
pub const READ_BUFFER_MAX: usize = 64 * 1024;

/// A Kubernetes client whose refused requests are counted in `metrics`, with a bounded connection pool
/// ([`POOL_IDLE_TIMEOUT`], [`POOL_MAX_IDLE`], [`READ_BUFFER_MAX`]). The rest is the stack of kube's own
/// client: the base URI, kube's retry of server errors, authentication and extra headers. A kubeconfig
/// with a proxy gets kube's client as it is (its proxy connectors), with the default pool.
pub fn client(config: kube::Config, metrics: &Metrics) -> Result<kube::Client, kube::Error> {
    use kube::client::ConfigExt;
    use tower::ServiceBuilder;

    let denied = DeniedLayer {
        counter: metrics.permission_denied.clone(),
    };
    if config.proxy_url.is_some() {
        return Ok(kube::client::ClientBuilder::try_from(config)?
            .with_layer(&denied)
            .build());
    }
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let tls = config.rustls_https_connector_with_connector(http)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(tls);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http_client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Builder::new(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .http1_max_buf_size(READ_BUFFER_MAX)
            .build(connector);
    let retry = config
        .default_retry
        .then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry()));
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http_client);
    Ok(
        kube::client::ClientBuilder::new(service, config.default_namespace.clone())
            .with_layer(&denied)
            .build(),
    )
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
    /// A decision held while the inputs re-sync (the pod cache relisting, or behind the target).
    Held,
    /// A decision dropped before its `/scale` write (inputs too old, a pod watch resynced, or the
    /// target changed since it was read).
    Dropped,
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
    /// Approximate heap bytes of the per-DPA state, by component (0 while the stack is stopped).
    pub memory: Family<MemoryLabels, Gauge>,
    /// The `ControllerState` component of `memory` by part (0 while the stack is stopped).
    pub controller_state: Family<ControllerStateLabels, Gauge>,
    /// Statuses the controller wrote and the DPA watch has not shown back yet.
    pub controller_pending_writes: Gauge,
    /// Pod watch restarts (relists and reconnects).
    pub watch_restarts: Gauge,
    /// Pod watch errors.
    pub watch_errors: Gauge,
    /// Pod objects decoded from the pod lists and watch events (summed over the stack's lifetimes).
    pub pods_decoded: Counter,
    /// Pod watches running.
    pub pod_watches: Gauge,
    /// Errors of the autoscaler (demand) watches.
    pub demand_watch_errors: Counter,
    /// Admission requests by path.
    pub webhook_requests: Family<WebhookLabels, Counter>,
    /// Admission latency (from the body received to the answer), by path.
    pub webhook_duration: WebhookDurations,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// Requests the API server refused (403), by verb and resource.
    pub permission_denied: Family<DeniedLabels, Counter>,
    /// Horizontal controller operations (summed over the stack's lifetimes).
    pub controller: Family<ControllerLabels, Counter>,
    /// Vertical loop operations.
    pub vertical: Family<VerticalLabels, Counter>,
    /// Allocator-reported heap bytes (jemalloc `stats.allocated`).
    pub heap_bytes: Gauge,
    /// Resident set size.
    pub resident_bytes: Gauge,
    /// The allocator's accounting beside the heap, by part.
    pub allocator: Family<AllocatorLabels, Gauge>,
    /// Threads of the process.
    pub threads: Gauge,
    /// Tasks alive in the tokio runtime (spawned and not finished).
    pub alive_tasks: Gauge,
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
            memory: Family::default(),
            controller_state: Family::default(),
            controller_pending_writes: Gauge::default(),
            watch_restarts: Gauge::default(),
            watch_errors: Gauge::default(),
            pods_decoded: Counter::default(),
            pod_watches: Gauge::default(),
            demand_watch_errors: Counter::default(),
            webhook_requests: Family::default(),
            webhook_duration: Family::new_with_constructor(webhook_histogram),
            leader: Gauge::default(),
            permission_denied: Family::default(),
            controller: Family::default(),
            vertical: Family::default(),
            heap_bytes: Gauge::default(),
            resident_bytes: Gauge::default(),
            allocator: Family::default(),
            threads: Gauge::default(),
            alive_tasks: Gauge::default(),
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
            "memory_bytes",
            "Approximate heap bytes of the per-DPA state while the stack runs, by component",
            m.memory.clone(),
        );
        registry.register(
            "controller_state_bytes",
            "The horizontal controller's share of memory_bytes, by part",
            m.controller_state.clone(),
        );
        registry.register(
            "controller_pending_writes",
            "Statuses written by the controller that the DPA watch has not shown back yet",
            m.controller_pending_writes.clone(),
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
            "podcache_decoded_pods",
            "Pod objects decoded from pod lists and watch events, summed over the stack's lifetimes",
            m.pods_decoded.clone(),
        );
        registry.register(
            "podcache_watches",
            "Pod watches running (scoped ones or the cluster-wide one, including ones being replaced)",
            m.pod_watches.clone(),
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
            "webhook_request_duration_seconds",
            "Admission latency from the request body received to the answer, by path",
            m.webhook_duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease (it writes scale, status and events)",
            m.leader.clone(),
        );
        registry.register(
            "permission_denied",
            "Requests the API server refused with 403, by verb and resource",
            m.permission_denied.clone(),
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
        registry.register(
            "process_allocator_bytes",
            "The allocator's accounting by part (jemalloc stats.active, metadata, resident, mapped, retained)",
            m.allocator.clone(),
        );
        registry.register("process_threads", "Threads of the agent", m.threads.clone());
        registry.register(
            "runtime_alive_tasks",
            "Tasks alive in the agent's tokio runtime",
            m.alive_tasks.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Refreshes the process memory gauges.
    pub fn refresh_memory(&self) {
        let mem = crate::memory::sample();
        self.heap_bytes.set(mem.heap_bytes as i64);
        self.resident_bytes.set(mem.resident_bytes as i64);
        for (part, v) in [
            (AllocatorPart::Active, mem.active_bytes),
            (AllocatorPart::Metadata, mem.metadata_bytes),
            (AllocatorPart::Resident, mem.allocator_resident_bytes),
            (AllocatorPart::Mapped, mem.mapped_bytes),
            (AllocatorPart::Retained, mem.retained_bytes),
        ] {
            self.allocator
                .get_or_create(&AllocatorLabels { part })
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        self.threads.set(i64::try_from(mem.threads).unwrap_or(i64::MAX));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.alive_tasks
                .set(i64::try_from(rt.metrics().num_alive_tasks()).unwrap_or(i64::MAX));
        }
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
            (ControllerOp::Held, d.held),
            (ControllerOp::Dropped, d.dropped),
        ] {
            if n > 0 {
                self.controller.get_or_create(&ControllerLabels { op }).inc_by(n);
            }
        }
    }

    /// Sets one component of the memory breakdown.
    pub fn set_memory(&self, component: MemoryComponent, bytes: usize) {
        self.memory
            .get_or_create(&MemoryLabels { component })
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Sets the controller-state breakdown (all zero: `None`, the stack stopped).
    pub fn set_controller_state(&self, b: Option<lazyscale_controller::StateBytes>) {
        let b = b.unwrap_or_default();
        for (part, bytes) in [
            (ControllerStatePart::Slots, b.slots_and_keys),
            (ControllerStatePart::Histories, b.histories),
            (ControllerStatePart::Explanations, b.explanations),
            (ControllerStatePart::Written, b.written),
        ] {
            self.controller_state
                .get_or_create(&ControllerStateLabels { part })
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        self.controller_pending_writes
            .set(i64::try_from(b.written_pending).unwrap_or(i64::MAX));
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
    fn requests_are_classified_by_verb_and_resource() {
        use ApiResourceKind as R;
        for (method, path, query, verb, resource) in [
            ("GET", "/api/v1/namespaces/a/pods", None, ApiVerb::List, R::Pods),
            (
                "GET",
                "/api/v1/pods",
                Some("watch=true&resourceVersion=1"),
                ApiVerb::Watch,
                R::Pods,
            ),
            (
                "PATCH",
                "/api/v1/namespaces/a/pods/p/resize",
                None,
                ApiVerb::Patch,
                R::PodsResize,
            ),
            (
                "POST",
                "/api/v1/namespaces/a/pods/p/eviction",
                None,
                ApiVerb::Create,
                R::PodsEviction,
            ),
            (
                "PUT",
                "/apis/apps/v1/namespaces/a/deployments/d/scale",
                None,
                ApiVerb::Update,
                R::Scale,
            ),
            (
                "GET",
                "/apis/apps/v1/namespaces/a/statefulsets/s",
                None,
                ApiVerb::Get,
                R::StatefulSets,
            ),
            (
                "PATCH",
                "/apis/datadoghq.com/v1alpha2/namespaces/a/datadogpodautoscalers/x/status",
                None,
                ApiVerb::Patch,
                R::DpaStatus,
            ),
            (
                "GET",
                "/apis/datadoghq.com/v1alpha2/datadogpodautoscalerclusterprofiles",
                None,
                ApiVerb::List,
                R::ClusterProfiles,
            ),
            ("GET", "/api/v1/namespaces", None, ApiVerb::List, R::Namespaces),
            ("GET", "/api/v1/namespaces/a", None, ApiVerb::Get, R::Namespaces),
            (
                "GET",
                "/apis/metrics.k8s.io/v1beta1/namespaces/a/pods",
                None,
                ApiVerb::List,
                R::PodMetrics,
            ),
            (
                "POST",
                "/api/v1/namespaces/a/secrets",
                None,
                ApiVerb::Create,
                R::Secrets,
            ),
            (
                "POST",
                "/apis/events.k8s.io/v1/namespaces/a/events",
                None,
                ApiVerb::Create,
                R::Events,
            ),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/l",
                None,
                ApiVerb::Update,
                R::Leases,
            ),
            (
                "DELETE",
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/w",
                None,
                ApiVerb::Delete,
                R::WebhookConfigurations,
            ),
            ("GET", "/version", None, ApiVerb::List, R::Other),
            ("OPTIONS", "/apis/x.io/v1/things", None, ApiVerb::Other, R::Other),
        ] {
            assert_eq!(
                classify(method, path, query),
                DeniedLabels { verb, resource },
                "{method} {path}"
            );
        }
    }

    #[test]
    fn webhook_latency_leader_and_refusals_are_exported() {
        let m = Metrics::new();
        m.webhook_duration
            .get_or_create(&WebhookLabels {
                path: WebhookPath::Fast,
            })
            .observe(0.0003);
        m.leader.set(1);
        m.permission_denied
            .get_or_create(&classify("POST", "/api/v1/namespaces/a/secrets", None))
            .inc();
        let text = m.encode();
        for want in [
            "lazyscale_webhook_request_duration_seconds_bucket{le=\"0.0004\",path=\"Fast\"} 1",
            "lazyscale_webhook_request_duration_seconds_count{path=\"Fast\"} 1",
            "lazyscale_leader 1",
            "lazyscale_permission_denied_total{verb=\"Create\",resource=\"Secrets\"} 1",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

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
