//! Scenarios: YAML files describing namespaces, workloads (kind, replicas, containers,
//! requests/limits, labels), their load profiles and resize behaviour, and timed events (change
//! load, scale, edit a template, delete or evict pods, apply or delete any manifest such as a
//! DatadogPodAutoscaler). [`load`] parses one (errors name the file, line, column and field),
//! [`run`] plays it against a cluster with an in-process [`Simulator`].
//!
//! ```yaml
//! name: demo
//! seed: 7
//! namespaces: [shop]
//! workloads:
//!   - name: web
//!     namespace: shop
//!     replicas: 3
//!     containers:
//!       - name: app
//!         requests: {cpu: 200m, memory: 128Mi}
//!         limits: {memory: 256Mi}
//!     load:
//!       cpu: {type: sine, base: 600m, amplitude: 300m, period: 5m}
//! events:
//!   - at: 30s
//!     scale: {workload: shop/web, replicas: 5}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, Namespace, Pod, PodSpec, PodTemplateSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, DynamicObject, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use tracing::{info, warn};

use crate::load::LoadProfile;
use crate::units::{Dur, parse_quantity};
use crate::{Error, ResizeMode, Result, SimConfig, Simulator, WorkloadKind, WorkloadRef, WorkloadSettings};

/// Field manager of scenario writes.
pub const SCENARIO_MANAGER: &str = "lazyscale-sim";

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A name for logs.
    #[serde(default)]
    pub name: Option<String>,
    /// Seed of simulated randomness (default 1).
    #[serde(default)]
    pub seed: Option<u64>,
    /// kwok nodes to add (default none: the cluster's nodes).
    #[serde(default)]
    pub nodes: Option<u32>,
    /// Delay from scheduling to Running/Ready (kwok's; default none).
    #[serde(default)]
    pub ready_delay: Option<Dur>,
    /// Interval of PodMetrics writes (default 15s).
    #[serde(default)]
    pub metrics_interval: Option<Dur>,
    /// How long to run after setup; `None` runs until interrupted.
    #[serde(default)]
    pub duration: Option<Dur>,
    /// Namespaces to create (workload namespaces are created too).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Workloads to create.
    #[serde(default)]
    pub workloads: Vec<Spanned<Workload>>,
    /// Timed events.
    #[serde(default)]
    pub events: Vec<Spanned<TimedEvent>>,
}

/// A workload of a scenario.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// `Deployment` (default) or `StatefulSet`.
    #[serde(default)]
    pub kind: WorkloadKind,
    /// Name.
    pub name: String,
    /// Namespace (default `default`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Initial replicas (default 1).
    #[serde(default = "one")]
    pub replicas: i32,
    /// Labels of the workload and its pods (default `app: <name>`); they form the selector.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the pod template.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Containers.
    pub containers: Vec<ContainerDef>,
    /// Load profile.
    #[serde(default)]
    pub load: Option<LoadProfile>,
    /// How in-place resizes are answered (default immediate).
    #[serde(default)]
    pub resize: Option<ResizeMode>,
    /// Overrides the scenario's ready delay.
    #[serde(default)]
    pub ready_delay: Option<Dur>,
    /// Rolling update maxSurge (`25%`, `1`); Deployments only.
    #[serde(default)]
    pub max_surge: Option<IntOrPercent>,
    /// Rolling update maxUnavailable; Deployments only.
    #[serde(default)]
    pub max_unavailable: Option<IntOrPercent>,
    /// minReadySeconds.
    #[serde(default)]
    pub min_ready_seconds: Option<i32>,
    /// StatefulSet podManagementPolicy (`OrderedReady` or `Parallel`).
    #[serde(default)]
    pub pod_management_policy: Option<String>,
}

fn default_namespace() -> String {
    "default".to_string()
}
fn one() -> i32 {
    1
}

/// An integer or a percentage (`25%`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum IntOrPercent {
    /// An absolute number.
    Int(i32),
    /// A percentage such as `25%`.
    Str(String),
}

impl IntOrPercent {
    fn to_k8s(&self) -> IntOrString {
        match self {
            IntOrPercent::Int(i) => IntOrString::Int(*i),
            IntOrPercent::Str(s) => IntOrString::String(s.clone()),
        }
    }
}

/// A validated Kubernetes quantity string.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuantityStr(pub String);

impl<'de> Deserialize<'de> for QuantityStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
            F(f64),
        }
        let s = match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::I(i) => i.to_string(),
            Raw::F(f) => f.to_string(),
        };
        if parse_quantity(&s).is_none() {
            return Err(serde::de::Error::custom(format!(
                "invalid quantity {s:?} (expected e.g. 250m, 1.5, 128Mi, 1G)"
            )));
        }
        Ok(QuantityStr(s))
    }
}

/// CPU and memory amounts.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceAmounts {
    /// CPU (`250m`).
    #[serde(default)]
    pub cpu: Option<QuantityStr>,
    /// Memory (`128Mi`).
    #[serde(default)]
    pub memory: Option<QuantityStr>,
}

impl ResourceAmounts {
    fn to_map(&self) -> Option<BTreeMap<String, Quantity>> {
        let mut m = BTreeMap::new();
        if let Some(c) = &self.cpu {
            m.insert("cpu".to_string(), Quantity(c.0.clone()));
        }
        if let Some(c) = &self.memory {
            m.insert("memory".to_string(), Quantity(c.0.clone()));
        }
        (!m.is_empty()).then_some(m)
    }
}

/// A container of a scenario workload.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerDef {
    /// Name.
    pub name: String,
    /// Image (default `registry.k8s.io/pause:3.10`).
    #[serde(default)]
    pub image: Option<String>,
    /// Requests.
    #[serde(default)]
    pub requests: Option<ResourceAmounts>,
    /// Limits.
    #[serde(default)]
    pub limits: Option<ResourceAmounts>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl ContainerDef {
    fn to_k8s(&self) -> Container {
        Container {
            name: self.name.clone(),
            image: Some(
                self.image
                    .clone()
                    .unwrap_or_else(|| "registry.k8s.io/pause:3.10".to_string()),
            ),
            env: (!self.env.is_empty()).then(|| {
                self.env
                    .iter()
                    .map(|(k, v)| EnvVar {
                        name: k.clone(),
                        value: Some(v.clone()),
                        value_from: None,
                    })
                    .collect()
            }),
            resources: Some(ResourceRequirements {
                claims: None,
                limits: self.limits.as_ref().and_then(ResourceAmounts::to_map),
                requests: self.requests.as_ref().and_then(ResourceAmounts::to_map),
            }),
            ..Container::default()
        }
    }
}

/// A timed event: `at` plus exactly one action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimedEvent {
    /// When, relative to the end of setup.
    pub at: Dur,
    /// Replace a workload's load profile.
    #[serde(default)]
    pub set_load: Option<SetLoad>,
    /// Set replicas through the /scale subresource.
    #[serde(default)]
    pub scale: Option<ScaleEvent>,
    /// Edit a workload's pod template (triggers a rollout).
    #[serde(default)]
    pub edit_template: Option<EditTemplate>,
    /// Delete pods of a workload (they are replaced).
    #[serde(default)]
    pub delete_pod: Option<PodSelection>,
    /// Evict pods of a workload through pods/eviction.
    #[serde(default)]
    pub evict_pod: Option<PodSelection>,
    /// Server-side apply a manifest (inline or from a file next to the scenario).
    #[serde(default)]
    pub apply: Option<ManifestRef>,
    /// Delete the object a manifest names.
    #[serde(default)]
    pub delete: Option<ManifestRef>,
    /// Change how a workload's resizes are answered.
    #[serde(default)]
    pub set_resize: Option<SetResize>,
}

/// `set_load` event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetLoad {
    /// `namespace/name` (or `name` when unique).
    pub workload: String,
    /// The new profile.
    pub load: LoadProfile,
}

/// `scale` event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleEvent {
    /// `namespace/name` (or `name` when unique).
    pub workload: String,
    /// New replicas.
    pub replicas: i32,
}

/// `edit_template` event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditTemplate {
    /// `namespace/name` (or `name` when unique).
    pub workload: String,
    /// Container to edit (default: the first).
    #[serde(default)]
    pub container: Option<String>,
    /// New image.
    #[serde(default)]
    pub image: Option<String>,
    /// New requests (merged).
    #[serde(default)]
    pub requests: Option<ResourceAmounts>,
    /// New limits (merged).
    #[serde(default)]
    pub limits: Option<ResourceAmounts>,
    /// Environment variables to set.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Pod template annotations to set.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// `delete_pod` / `evict_pod` event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSelection {
    /// `namespace/name` (or `name` when unique).
    pub workload: String,
    /// How many pods (default 1).
    #[serde(default = "one_u32")]
    pub count: u32,
}

fn one_u32() -> u32 {
    1
}

/// `set_resize` event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetResize {
    /// `namespace/name` (or `name` when unique).
    pub workload: String,
    /// The new mode.
    pub resize: ResizeMode,
}

/// A manifest: inline, or a file relative to the scenario file (may hold several documents).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestRef {
    /// Inline object.
    #[serde(default)]
    pub manifest: Option<serde_json::Value>,
    /// File path.
    #[serde(default)]
    pub file: Option<String>,
}

fn loc_err(path: &str, loc: &serde_saphyr::Location, message: String) -> Error {
    Error::Scenario {
        path: path.to_string(),
        line: loc.line(),
        column: loc.column(),
        message,
    }
}

/// Parses scenario text; `path` names it in errors.
pub fn parse(text: &str, path: &str) -> Result<Scenario> {
    let sc: Scenario = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        Error::Scenario {
            path: path.to_string(),
            line,
            column,
            message: first_line(&e.to_string()),
        }
    })?;
    validate(&sc, path)?;
    Ok(sc)
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string()
}

fn validate(sc: &Scenario, path: &str) -> Result<()> {
    for w in &sc.workloads {
        if !matches!(w.value.kind, WorkloadKind::Deployment | WorkloadKind::StatefulSet) {
            return Err(loc_err(
                path,
                &w.referenced,
                format!(
                    "workloads: `kind` of {} must be Deployment or StatefulSet, not {}",
                    w.value.name, w.value.kind
                ),
            ));
        }
        if w.value.containers.is_empty() {
            return Err(loc_err(
                path,
                &w.referenced,
                format!("workloads: `containers` of {} must not be empty", w.value.name),
            ));
        }
        if w.value.replicas < 0 {
            return Err(loc_err(
                path,
                &w.referenced,
                "workloads: `replicas` must be >= 0".into(),
            ));
        }
    }
    for ev in &sc.events {
        let e = &ev.value;
        let actions = [
            e.set_load.as_ref().map(|a| a.workload.as_str()),
            e.scale.as_ref().map(|a| a.workload.as_str()),
            e.edit_template.as_ref().map(|a| a.workload.as_str()),
            e.delete_pod.as_ref().map(|a| a.workload.as_str()),
            e.evict_pod.as_ref().map(|a| a.workload.as_str()),
            e.set_resize.as_ref().map(|a| a.workload.as_str()),
        ];
        let manifests = [e.apply.as_ref(), e.delete.as_ref()];
        let n =
            actions.iter().filter(|a| a.is_some()).count() + manifests.iter().filter(|m| m.is_some()).count();
        if n != 1 {
            return Err(loc_err(
                path,
                &ev.referenced,
                format!(
                    "events: an event needs exactly one action (set_load, scale, edit_template, delete_pod, evict_pod, apply, delete, set_resize), found {n}"
                ),
            ));
        }
        for m in manifests.into_iter().flatten() {
            if m.manifest.is_some() == m.file.is_some() {
                return Err(loc_err(
                    path,
                    &ev.referenced,
                    "events: apply/delete needs exactly one of `manifest` or `file`".into(),
                ));
            }
        }
        for w in actions.into_iter().flatten() {
            resolve_workload(sc, w)
                .map_err(|m| loc_err(path, &ev.referenced, format!("events: workload: {m}")))?;
        }
    }
    Ok(())
}

/// Resolves `namespace/name` or a unique `name` against the scenario's workloads (undeclared
/// `namespace/name` references are taken as Deployments).
pub fn resolve_workload(sc: &Scenario, w: &str) -> std::result::Result<WorkloadRef, String> {
    let (ns, name) = match w.split_once('/') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, w),
    };
    let matches: Vec<&Workload> = sc
        .workloads
        .iter()
        .map(|s| &s.value)
        .filter(|d| d.name == name && ns.is_none_or(|ns| d.namespace == ns))
        .collect();
    match (matches.as_slice(), ns) {
        ([one], _) => Ok(WorkloadRef {
            namespace: one.namespace.clone(),
            kind: one.kind,
            name: one.name.clone(),
        }),
        ([], Some(ns)) => Ok(WorkloadRef::deployment(ns, name)),
        ([], None) => Err(format!("no workload named {name:?}")),
        _ => Err(format!("{name:?} is ambiguous; write namespace/name")),
    }
}

/// Reads and parses a scenario file.
pub fn load(path: &Path) -> Result<Scenario> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

impl Scenario {
    /// All namespaces the scenario uses.
    pub fn all_namespaces(&self) -> Vec<String> {
        let mut v = self.namespaces.clone();
        for w in &self.workloads {
            if !v.contains(&w.value.namespace) {
                v.push(w.value.namespace.clone());
            }
        }
        v
    }

    /// The simulator configuration the scenario asks for (scoped to its namespaces).
    pub fn sim_config(&self) -> SimConfig {
        let d = SimConfig::default();
        SimConfig {
            namespaces: self.all_namespaces(),
            nodes: self.nodes.unwrap_or(d.nodes),
            metrics_interval: self.metrics_interval.map_or(d.metrics_interval, |x| x.0),
            seed: self.seed.unwrap_or(d.seed),
            ..d
        }
    }
}

fn labels_of(w: &Workload) -> BTreeMap<String, String> {
    if w.labels.is_empty() {
        [("app".to_string(), w.name.clone())].into()
    } else {
        w.labels.clone()
    }
}

fn template_of(w: &Workload) -> PodTemplateSpec {
    let mut annotations = w.annotations.clone();
    if let Some(d) = w.ready_delay {
        // kwok delays Running/Ready by this (see the test environment's kwok stages).
        annotations.insert(
            crate::READY_DELAY_ANNOTATION.to_string(),
            format!("{}ms", d.0.as_millis()),
        );
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels_of(w)),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: w.containers.iter().map(ContainerDef::to_k8s).collect(),
            ..PodSpec::default()
        }),
    }
}

/// The Deployment a scenario workload describes.
pub fn deployment_of(w: &Workload) -> Deployment {
    let rolling = (w.max_surge.is_some() || w.max_unavailable.is_some()).then(|| DeploymentStrategy {
        type_: Some("RollingUpdate".to_string()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: w.max_surge.as_ref().map(IntOrPercent::to_k8s),
            max_unavailable: w.max_unavailable.as_ref().map(IntOrPercent::to_k8s),
        }),
    });
    Deployment {
        metadata: ObjectMeta {
            name: Some(w.name.clone()),
            namespace: Some(w.namespace.clone()),
            labels: Some(labels_of(w)),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(w.replicas),
            selector: LabelSelector {
                match_labels: Some(labels_of(w)),
                match_expressions: None,
            },
            template: template_of(w),
            strategy: rolling,
            min_ready_seconds: w.min_ready_seconds,
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The StatefulSet a scenario workload describes.
pub fn statefulset_of(w: &Workload) -> StatefulSet {
    StatefulSet {
        metadata: ObjectMeta {
            name: Some(w.name.clone()),
            namespace: Some(w.namespace.clone()),
            labels: Some(labels_of(w)),
            ..ObjectMeta::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(w.replicas),
            selector: LabelSelector {
                match_labels: Some(labels_of(w)),
                match_expressions: None,
            },
            service_name: Some(w.name.clone()),
            template: template_of(w),
            pod_management_policy: w.pod_management_policy.clone(),
            min_ready_seconds: w.min_ready_seconds,
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// Creates the scenario's namespaces and workloads (server-side apply; re-running is harmless).
pub async fn setup(client: &Client, sc: &Scenario) -> Result<()> {
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for ns in sc.all_namespaces() {
        let obj = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        match ns_api.create(&PostParams::default(), &obj).await {
            Ok(_) => info!(namespace = %ns, "created namespace"),
            Err(e) if crate::objects::is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let pp = PatchParams::apply(SCENARIO_MANAGER).force();
    for w in &sc.workloads {
        let mut w = w.value.clone();
        w.ready_delay = w.ready_delay.or(sc.ready_delay);
        let w = &w;
        match w.kind {
            WorkloadKind::StatefulSet => {
                Api::<StatefulSet>::namespaced(client.clone(), &w.namespace)
                    .patch(&w.name, &pp, &Patch::Apply(&statefulset_of(w)))
                    .await?;
            }
            _ => {
                Api::<Deployment>::namespaced(client.clone(), &w.namespace)
                    .patch(&w.name, &pp, &Patch::Apply(&deployment_of(w)))
                    .await?;
            }
        }
        info!(kind = ?w.kind, namespace = %w.namespace, name = %w.name, replicas = w.replicas, "applied workload");
    }
    Ok(())
}

/// Registers the scenario's per-workload settings (load, resize, ready delay) on a simulator.
pub fn register(sim: &Simulator, sc: &Scenario) {
    for w in &sc.workloads {
        let w = &w.value;
        sim.set_workload(
            WorkloadRef {
                namespace: w.namespace.clone(),
                kind: w.kind,
                name: w.name.clone(),
            },
            WorkloadSettings {
                load: w.load.clone(),
                resize: w.resize.clone().unwrap_or_default(),
            },
        );
    }
}

/// Options of [`run`].
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Overrides the scenario's `duration`; `None` in both runs until the events are done and
    /// then until interrupted (Ctrl-C).
    pub duration: Option<Duration>,
    /// Directory that `file:` manifests are relative to.
    pub base_dir: PathBuf,
    /// Overrides the simulator configuration derived from the scenario.
    pub config: Option<SimConfig>,
}

/// Plays a scenario: setup, an in-process simulator, the timed events, then waits for the duration
/// (or Ctrl-C) and stops the simulator.
pub async fn run(client: Client, sc: &Scenario, opts: &RunOptions) -> Result<()> {
    setup(&client, sc).await?;
    let sim = Simulator::start(
        client.clone(),
        opts.config.clone().unwrap_or_else(|| sc.sim_config()),
    )
    .await?;
    register(&sim, sc);
    info!(
        scenario = sc.name.as_deref().unwrap_or("unnamed"),
        "scenario started"
    );
    let duration = opts.duration.or(sc.duration.map(|d| d.0));
    let play = play(&sim, sc, &opts.base_dir);
    let res = match duration {
        Some(d) => {
            tokio::select! {
                r = play => { if r.is_ok() { tokio::time::sleep_until(start_plus(&sim, d)).await; } r }
                _ = tokio::time::sleep(d) => Ok(()),
            }
        }
        None => {
            let r = play.await;
            if r.is_ok() {
                info!("all events played; running until interrupted");
                let _ = tokio::signal::ctrl_c().await;
            }
            r
        }
    };
    sim.shutdown().await;
    res
}

fn start_plus(sim: &Simulator, d: Duration) -> tokio::time::Instant {
    let elapsed = Duration::from_secs_f64(sim.elapsed());
    tokio::time::Instant::now() + d.saturating_sub(elapsed)
}

/// Plays the timed events of a scenario on a running simulator (times are relative to now).
pub async fn play(sim: &Simulator, sc: &Scenario, base_dir: &Path) -> Result<()> {
    let start = tokio::time::Instant::now();
    let mut events: Vec<&TimedEvent> = sc.events.iter().map(|e| &e.value).collect();
    events.sort_by_key(|e| e.at);
    for ev in events {
        tokio::time::sleep_until(start + ev.at.0).await;
        if let Err(e) = apply_event(sim, sc, ev, base_dir).await {
            warn!(at = ?ev.at.0, error = %e, "event failed");
            return Err(e);
        }
    }
    Ok(())
}

fn wref(sc: &Scenario, w: &str) -> Result<WorkloadRef> {
    resolve_workload(sc, w).map_err(|message| Error::Invalid {
        path: sc.name.clone().unwrap_or_default(),
        message,
    })
}

/// Executes one event now.
pub async fn apply_event(sim: &Simulator, sc: &Scenario, ev: &TimedEvent, base_dir: &Path) -> Result<()> {
    let client = sim.client().clone();
    if let Some(a) = &ev.set_load {
        let w = wref(sc, &a.workload)?;
        info!(workload = %a.workload, "event: set load");
        sim.set_load(&w, a.load.clone());
    }
    if let Some(a) = &ev.set_resize {
        let w = wref(sc, &a.workload)?;
        info!(workload = %a.workload, mode = ?a.resize, "event: set resize mode");
        sim.set_resize(&w, a.resize.clone());
    }
    if let Some(a) = &ev.scale {
        let w = wref(sc, &a.workload)?;
        info!(workload = %a.workload, replicas = a.replicas, "event: scale");
        scale(&client, &w, a.replicas).await?;
    }
    if let Some(a) = &ev.edit_template {
        let w = wref(sc, &a.workload)?;
        info!(workload = %a.workload, "event: edit template");
        edit_template(&client, &w, a).await?;
    }
    if let Some(a) = ev.delete_pod.as_ref().or(ev.evict_pod.as_ref()) {
        let w = wref(sc, &a.workload)?;
        let evict = ev.evict_pod.is_some();
        info!(workload = %a.workload, count = a.count, evict, "event: remove pods");
        remove_pods(&client, sc, &w, a.count, evict).await?;
    }
    if let Some(m) = &ev.apply {
        for obj in manifests(m, base_dir)? {
            apply_manifest(&client, &obj).await?;
        }
    }
    if let Some(m) = &ev.delete {
        for obj in manifests(m, base_dir)? {
            delete_manifest(&client, &obj).await?;
        }
    }
    Ok(())
}

/// Sets replicas through the /scale subresource.
pub async fn scale(client: &Client, w: &WorkloadRef, replicas: i32) -> Result<()> {
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    let pp = PatchParams::default();
    match w.kind {
        WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), &w.namespace)
                .patch_scale(&w.name, &pp, &Patch::Merge(&patch))
                .await?;
        }
        _ => {
            Api::<Deployment>::namespaced(client.clone(), &w.namespace)
                .patch_scale(&w.name, &pp, &Patch::Merge(&patch))
                .await?;
        }
    }
    Ok(())
}

fn edit_spec(t: &mut PodTemplateSpec, e: &EditTemplate) {
    if !e.annotations.is_empty() {
        let m = t.metadata.get_or_insert_with(ObjectMeta::default);
        m.annotations
            .get_or_insert_with(BTreeMap::new)
            .extend(e.annotations.clone());
    }
    let Some(spec) = t.spec.as_mut() else {
        return;
    };
    let idx = match &e.container {
        Some(n) => spec.containers.iter().position(|c| &c.name == n),
        None => (!spec.containers.is_empty()).then_some(0),
    };
    let Some(c) = idx.and_then(|i| spec.containers.get_mut(i)) else {
        return;
    };
    if let Some(img) = &e.image {
        c.image = Some(img.clone());
    }
    let r = c.resources.get_or_insert_with(ResourceRequirements::default);
    if let Some(m) = e.requests.as_ref().and_then(ResourceAmounts::to_map) {
        r.requests.get_or_insert_with(BTreeMap::new).extend(m);
    }
    if let Some(m) = e.limits.as_ref().and_then(ResourceAmounts::to_map) {
        r.limits.get_or_insert_with(BTreeMap::new).extend(m);
    }
    for (k, v) in &e.env {
        let env = c.env.get_or_insert_with(Vec::new);
        env.retain(|x| &x.name != k);
        env.push(EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            value_from: None,
        });
    }
}

/// Edits a workload's pod template (read, modify, replace; retried on conflicts).
pub async fn edit_template(client: &Client, w: &WorkloadRef, e: &EditTemplate) -> Result<()> {
    for attempt in 0..5 {
        let res = match w.kind {
            WorkloadKind::StatefulSet => {
                let api = Api::<StatefulSet>::namespaced(client.clone(), &w.namespace);
                let mut o = api.get(&w.name).await?;
                if let Some(s) = o.spec.as_mut() {
                    edit_spec(&mut s.template, e);
                }
                api.replace(&w.name, &PostParams::default(), &o).await.map(|_| ())
            }
            _ => {
                let api = Api::<Deployment>::namespaced(client.clone(), &w.namespace);
                let mut o = api.get(&w.name).await?;
                if let Some(s) = o.spec.as_mut() {
                    edit_spec(&mut s.template, e);
                }
                api.replace(&w.name, &PostParams::default(), &o).await.map(|_| ())
            }
        };
        match res {
            Ok(()) => return Ok(()),
            Err(err) if crate::objects::is_conflict(&err) && attempt < 4 => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

async fn remove_pods(client: &Client, sc: &Scenario, w: &WorkloadRef, count: u32, evict: bool) -> Result<()> {
    let labels = sc
        .workloads
        .iter()
        .find(|d| d.value.name == w.name && d.value.namespace == w.namespace)
        .map(|d| labels_of(&d.value))
        .unwrap_or_else(|| [("app".to_string(), w.name.clone())].into());
    let selector = labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let api: Api<Pod> = Api::namespaced(client.clone(), &w.namespace);
    let mut pods = api.list(&ListParams::default().labels(&selector)).await?.items;
    pods.retain(|p| p.metadata.deletion_timestamp.is_none());
    pods.sort_by_key(|p| p.name_any());
    for p in pods.into_iter().take(count as usize) {
        if evict {
            api.evict(&p.name_any(), &EvictParams::default()).await?;
        } else {
            api.delete(&p.name_any(), &DeleteParams::default()).await?;
        }
    }
    Ok(())
}

fn manifests(m: &ManifestRef, base_dir: &Path) -> Result<Vec<serde_json::Value>> {
    if let Some(v) = &m.manifest {
        return Ok(vec![v.clone()]);
    }
    let Some(f) = &m.file else {
        return Ok(Vec::new());
    };
    let path = base_dir.join(f);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        Error::Scenario {
            path: path.display().to_string(),
            line,
            column,
            message: first_line(&e.to_string()),
        }
    })?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

async fn dynamic_api(client: &Client, obj: &serde_json::Value) -> Result<(Api<DynamicObject>, String)> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
    if kind.is_empty() || name.is_empty() {
        return Err(Error::Missing(
            "manifest needs apiVersion, kind and metadata.name".into(),
        ));
    }
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|_| Error::UnknownKind(format!("{api_version}/{kind}")))?;
    let api = match caps.scope {
        Scope::Namespaced => {
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
            Api::namespaced_with(client.clone(), ns, &ar)
        }
        Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    Ok((api, name))
}

/// Server-side applies an arbitrary manifest (resolved through discovery).
pub async fn apply_manifest(client: &Client, obj: &serde_json::Value) -> Result<()> {
    let (api, name) = dynamic_api(client, obj).await?;
    info!(kind = obj["kind"].as_str().unwrap_or_default(), name = %name, "event: apply manifest");
    api.patch(
        &name,
        &PatchParams::apply(SCENARIO_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await?;
    Ok(())
}

/// Deletes the object an arbitrary manifest names (absent objects are fine).
pub async fn delete_manifest(client: &Client, obj: &serde_json::Value) -> Result<()> {
    let (api, name) = dynamic_api(client, obj).await?;
    info!(kind = obj["kind"].as_str().unwrap_or_default(), name = %name, "event: delete manifest");
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if crate::objects::is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: t
seed: 3
namespaces: [a]
workloads:
  - name: web
    namespace: a
    replicas: 2
    containers:
      - name: app
        requests: {cpu: 100m, memory: 64Mi}
        limits: {memory: 128Mi}
    load:
      cpu: {type: step, steps: [{at: 0s, value: 200m}, {at: 1m, value: 1}]}
      memory: {base: 32Mi, per_cpu: 64Mi, leak: 10Ki}
    resize: {mode: in-progress, duration: 3s}
  - kind: StatefulSet
    name: db
    namespace: b
    containers: [{name: db}]
events:
  - at: 10s
    scale: {workload: a/web, replicas: 4}
  - at: 20s
    set_load: {workload: web, load: {cpu: {type: constant, value: 2}}}
  - at: 30s
    apply:
      manifest: {apiVersion: v1, kind: ConfigMap, metadata: {name: x, namespace: a}, data: {k: v}}
"#;

    #[test]
    fn parses_a_good_scenario() {
        let sc = parse(GOOD, "good.yaml").unwrap();
        assert_eq!(sc.workloads.len(), 2);
        assert_eq!(sc.all_namespaces(), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(sc.events[0].value.at.0, Duration::from_secs(10));
        let w = &sc.workloads[0].value;
        assert_eq!(
            w.resize,
            Some(ResizeMode::InProgress {
                duration: Dur(Duration::from_secs(3))
            })
        );
        let d = deployment_of(w);
        assert_eq!(d.spec.unwrap().replicas, Some(2));
        assert_eq!(
            resolve_workload(&sc, "db").unwrap().kind,
            WorkloadKind::StatefulSet
        );
        let cfg = sc.sim_config();
        assert_eq!(cfg.seed, 3);
        assert_eq!(cfg.namespaces.len(), 2);
    }

    fn err_of(text: &str) -> (u64, String) {
        match parse(text, "bad.yaml") {
            Err(Error::Scenario {
                path, line, message, ..
            }) => {
                assert_eq!(path, "bad.yaml");
                (line, message)
            }
            other => panic!("expected a located error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_field_is_located_and_named() {
        let text = "workloads:\n  - name: web\n    replicsa: 3\n    containers: [{name: a}]\n";
        let (line, msg) = err_of(text);
        assert_eq!(line, 3, "{msg}");
        assert!(msg.contains("replicsa"), "{msg}");
    }

    #[test]
    fn bad_quantity_and_duration_are_located() {
        let text =
            "workloads:\n  - name: web\n    containers:\n      - name: a\n        requests: {cpu: lots}\n";
        let (line, msg) = err_of(text);
        assert_eq!(line, 5, "{msg}");
        assert!(msg.contains("lots"), "{msg}");
        let text = "events:\n  - at: soon\n    scale: {workload: a/b, replicas: 1}\n";
        let (line, msg) = err_of(text);
        assert_eq!(line, 2, "{msg}");
        assert!(msg.contains("soon") || msg.contains("duration"), "{msg}");
    }

    #[test]
    fn missing_field_and_bad_profile_type() {
        let text = "workloads:\n  - namespace: x\n    containers: [{name: a}]\n";
        let (_, msg) = err_of(text);
        assert!(msg.contains("name"), "{msg}");
        let text = "workloads:\n  - name: w\n    containers: [{name: a}]\n    load:\n      cpu: {type: wobbly, value: 1}\n";
        let (line, msg) = err_of(text);
        assert_eq!(line, 5, "{msg}");
        assert!(msg.contains("wobbly"), "{msg}");
    }

    /// A scenario declares only what it can create: a Deployment or a StatefulSet. Other workload kinds
    /// (a known name such as `Rollout`, or an unknown one) are refused where they are written.
    #[test]
    fn workload_kinds_other_than_deployment_and_statefulset_are_refused() {
        let text = "workloads:\n  - name: w\n    containers: [{name: a}]\n  - kind: Rollout\n    name: r\n    containers: [{name: a}]\n";
        let (line, msg) = err_of(text);
        assert_eq!(line, 4, "{msg}");
        assert!(
            msg.contains("Deployment or StatefulSet") && msg.contains("Rollout"),
            "{msg}"
        );
        let text = "workloads:\n  - kind: CronJob\n    name: c\n    containers: [{name: a}]\n";
        let (line, msg) = err_of(text);
        assert_eq!(line, 2, "{msg}");
        assert!(msg.contains("CronJob"), "{msg}");
    }

    #[test]
    fn event_validation_is_located() {
        let text = "events:\n  - at: 1s\n  - at: 2s\n    scale: {workload: nope, replicas: 1}\n";
        let (line, msg) = err_of(text);
        assert_eq!(line, 2, "{msg}");
        assert!(msg.contains("exactly one action"), "{msg}");
        let text = "events:\n  - at: 2s\n    scale: {workload: nope, replicas: 1}\n";
        let (line, msg) = err_of(text);
        assert_eq!(line, 2, "{msg}");
        assert!(msg.contains("nope"), "{msg}");
    }

    #[test]
    fn shipped_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 2);
    }
}
