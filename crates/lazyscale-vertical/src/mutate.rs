//! The pod admission decision as a pure function: AdmissionReview bytes in, an [`Outcome`] (with an
//! RFC 6902 JSON patch when the pod is patched) out. No I/O, no panics: any input that cannot be handled
//! is a [`MutateError`], which the webhook turns into "allowed without a patch".
//!
//! Steps:
//! 1. Decode the review; only `CREATE` of a `Pod` (no subresource) is handled, anything else is
//!    [`Outcome::Skipped`].
//! 2. Resolve the pod's owner ([`resolve_owner`]): the controller owner reference (else the first one);
//!    a ReplicaSet becomes its Argo `Rollout` when the pod has `rollouts-pod-template-hash` and the
//!    ReplicaSet name ends with `-<hash>`, else its `Deployment` when the pod has `pod-template-hash` and
//!    the name ends with `-<hash>`; other owners (StatefulSet, ...) are used as they are.
//! 3. Find the autoscalers of that target in the pod's namespace ([`AutoscalerLookup`]), ignoring those in
//!    `Preview` mode. None → [`Outcome::NoAutoscaler`]; more than one → [`Outcome::Conflict`] (no patch;
//!    the caller emits an event).
//! 4. Patch: the `autoscaler-id` annotation always; with a vertical plan, the `rec-id` annotation and, for
//!    every container (and sidecar init container, `restartPolicy: Always`) the plan names, its requests
//!    and limits per the plan's [`LimitAction`]s; `GOMEMLIMIT` and the `runtime-rec-id` annotation for
//!    containers with a `runtime.gomemlimit`.
//!
//! The patch is built against the pod as received: objects that do not exist (`/metadata/annotations`,
//! `resources`, `resources.limits`, `env`) are created whole, members are added or replaced one by one,
//! limits are removed only when present, and annotation keys are escaped as JSON pointer tokens (`/` →
//! `~1`, `~` → `~0`). A request is never set above a limit the plan leaves in place, so a valid pod stays
//! valid.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;

use lazyscale_api::consts::annotations;
use lazyscale_api::{ApplyMode, DatadogPodAutoscaler};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::apply::mul_div_ceil;
use crate::constraints::{
    ContainerPlan, DesiredContainer, LimitAction, Resource, VerticalPlan, apply_constraints,
    effective_burstable,
};

/// Label the Deployment controller puts on its pods (suffix of the ReplicaSet name).
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// Label Argo Rollouts puts on its pods (suffix of the ReplicaSet name).
pub const ROLLOUTS_POD_TEMPLATE_HASH_LABEL: &str = "rollouts-pod-template-hash";
/// API group of Argo Rollouts.
pub const ARGO_ROLLOUTS_GROUP: &str = "argoproj.io";
/// Name of the environment variable set from `runtime.gomemlimit`.
pub const GOMEMLIMIT_ENV: &str = "GOMEMLIMIT";

/// The workload a pod belongs to: API group (without version, `""` for the core group), kind, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetRef {
    /// API group (`apps`, `argoproj.io`, ...).
    pub group: String,
    /// Kind (`Deployment`, `StatefulSet`, `Rollout`, ...).
    pub kind: String,
    /// Name.
    pub name: String,
}

impl TargetRef {
    /// A reference from an `apiVersion` (`apps/v1`), a kind and a name.
    pub fn from_api_version(api_version: &str, kind: &str, name: &str) -> Self {
        Self {
            group: group_of(api_version).to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
        }
    }
}

fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(g, _)| g)
}

/// The vertical part of an autoscaler's patch: the plan after constraints and the rec-id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerticalPatch {
    /// Per-container resources.
    pub plan: VerticalPlan,
    /// Value of the `rec-id` annotation: the target's `version` when the constraints changed nothing,
    /// else the hash of the constrained plan.
    pub rec_id: String,
}

/// What the webhook needs to know about one DatadogPodAutoscaler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Autoscaler {
    /// Namespace of the DPA (and of its target).
    pub namespace: String,
    /// Name of the DPA.
    pub name: String,
    /// The target workload.
    pub target: TargetRef,
    /// `applyPolicy.mode: Preview`: never applied by the webhook.
    pub preview: bool,
    /// The resources to apply, when the DPA has a vertical target and vertical updates are not disabled.
    pub vertical: Option<VerticalPatch>,
    /// Why `vertical` is `None` although the DPA has a vertical target (invalid constraints or values).
    pub error: Option<String>,
}

impl Autoscaler {
    /// Approximate heap bytes of one autoscaler in its `Arc`: the allocation itself, its strings, and
    /// its vertical plan's containers, limitations and strings (the plan's quantities are not counted).
    pub fn approx_heap_bytes(&self) -> usize {
        use lazyscale_api::heap::{alloc_bytes, arc_bytes, string_bytes};
        use std::mem::size_of;
        let plan = self.vertical.as_ref().map_or(0, |v| {
            string_bytes(&v.rec_id)
                + string_bytes(&v.plan.version)
                + alloc_bytes(v.plan.containers.capacity() * size_of::<crate::constraints::ContainerPlan>())
                + alloc_bytes(v.plan.limited.capacity() * size_of::<crate::constraints::Limitation>())
                + v.plan
                    .containers
                    .iter()
                    .map(|c| string_bytes(&c.name) + c.gomemlimit.as_deref().map_or(0, string_bytes))
                    .sum::<usize>()
        });
        arc_bytes::<Autoscaler>()
            + string_bytes(&self.namespace)
            + string_bytes(&self.name)
            + string_bytes(&self.target.group)
            + string_bytes(&self.target.kind)
            + string_bytes(&self.target.name)
            + self.error.as_deref().map_or(0, string_bytes)
            + plan
    }

    /// `<namespace>/<name>`, the value of the `autoscaler-id` annotation.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Builds the webhook's view of a DPA: its target, its mode, and its `status.vertical.target` with
    /// the constraints re-applied (so a constraint changed after the target was computed applies at
    /// once). Vertical values are ignored unless the mode matrix gives the DPA a vertical part
    /// (`applyPolicy.update.strategy` `Auto` or `TriggerRollout`, see [`crate::apply::mode`]) and it does
    /// not carry the `pause` annotation set to `true`. `agent_burstable` is the agent-wide default of
    /// `options.burstable`.
    pub fn from_dpa(dpa: &DatadogPodAutoscaler, agent_burstable: bool) -> Self {
        let spec = &dpa.spec;
        let target = TargetRef::from_api_version(
            spec.target_ref.api_version.as_deref().unwrap_or_default(),
            &spec.target_ref.kind,
            &spec.target_ref.name,
        );
        let disabled = !spec.scaling().vertical() || crate::apply::paused(dpa);
        let status_target = dpa
            .status
            .as_ref()
            .and_then(|s| s.vertical.as_ref())
            .and_then(|v| v.target.as_ref());
        let mut error = None;
        let vertical = match status_target {
            Some(t) if !disabled => {
                let plan = DesiredContainer::from_status(&t.desired_resources).and_then(|d| {
                    apply_constraints(
                        &d,
                        crate::apply::effective_constraints(dpa).as_ref(),
                        effective_burstable(dpa, agent_burstable),
                    )
                });
                match plan {
                    Ok(plan) => {
                        let rec_id = if plan.changed || t.version.is_empty() {
                            plan.version.clone()
                        } else {
                            t.version.clone()
                        };
                        Some(VerticalPatch { plan, rec_id })
                    }
                    Err(e) => {
                        error = Some(e.to_string());
                        None
                    }
                }
            }
            _ => None,
        };
        Self {
            namespace: dpa.metadata.namespace.clone().unwrap_or_default(),
            name: dpa.metadata.name.clone().unwrap_or_default(),
            target,
            preview: spec.apply_policy.mode == ApplyMode::Preview,
            vertical,
            error,
        }
    }
}

/// Finds the autoscalers whose target is `kind`/`name` in `namespace` (any mode; the decision filters).
pub trait AutoscalerLookup {
    /// The autoscalers targeting `kind`/`name` in `namespace`.
    fn autoscalers_for(&self, namespace: &str, kind: &str, name: &str) -> Vec<Arc<Autoscaler>>;
}

impl AutoscalerLookup for [Arc<Autoscaler>] {
    fn autoscalers_for(&self, namespace: &str, kind: &str, name: &str) -> Vec<Arc<Autoscaler>> {
        self.iter()
            .filter(|a| a.namespace == namespace && a.target.kind == kind && a.target.name == name)
            .cloned()
            .collect()
    }
}

/// An index of autoscalers by (namespace, target kind, target name), O(1) per lookup.
///
/// Two hash tables over the same `Arc`s and no key strings: entries are found by a hash of the fields
/// and compared with the autoscaler's own strings. A table is shrunk once it is less than a quarter
/// full, so the memory of 10,000 deleted DPAs goes back (amortized O(1) per removal).
#[derive(Debug, Clone, Default)]
pub struct AutoscalerIndex {
    /// The autoscalers of one target, grouped (never an empty list).
    by_target: HashTable<Vec<Arc<Autoscaler>>>,
    /// Every autoscaler, by namespace and name.
    by_name: HashTable<Arc<Autoscaler>>,
    hasher: RandomState,
}

/// The hash of an autoscaler's (namespace, name): its place in `by_name`.
fn name_hash(h: &RandomState, namespace: &str, name: &str) -> u64 {
    h.hash_one((namespace, name))
}

/// The hash of a target (namespace, kind, name): its list's place in `by_target`.
fn target_hash(h: &RandomState, namespace: &str, kind: &str, name: &str) -> u64 {
    h.hash_one((namespace, kind, name))
}

/// The `by_target` hash of a list (every member has the same target).
fn list_hash(h: &RandomState, list: &[Arc<Autoscaler>]) -> u64 {
    list.first().map_or(0, |x| {
        target_hash(h, &x.namespace, &x.target.kind, &x.target.name)
    })
}

/// Whether `list` is the list of target `namespace`/`kind`/`name`.
fn is_list_of(list: &[Arc<Autoscaler>], namespace: &str, kind: &str, name: &str) -> bool {
    list.first()
        .is_some_and(|a| a.namespace == namespace && a.target.kind == kind && a.target.name == name)
}

/// Shrinks `table` by the one rule ([`lazyscale_api::heap::shrunk_capacity`], past 64 slots).
fn shrink_if_sparse<T>(table: &mut HashTable<T>, hash: impl Fn(&T) -> u64) {
    if let Some(c) = lazyscale_api::heap::shrunk_capacity(table.len(), table.capacity(), 64) {
        table.shrink_to(c, hash);
    }
}

impl AutoscalerIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces (by namespace and name) an autoscaler.
    pub fn upsert(&mut self, autoscaler: Autoscaler) {
        self.remove(&autoscaler.namespace, &autoscaler.name);
        let a = Arc::new(autoscaler);
        let h = &self.hasher;
        self.by_name
            .insert_unique(name_hash(h, &a.namespace, &a.name), Arc::clone(&a), |x| {
                name_hash(h, &x.namespace, &x.name)
            });
        let (ns, kind, name) = (&a.namespace, &a.target.kind, &a.target.name);
        match self.by_target.entry(
            target_hash(h, ns, kind, name),
            |list| is_list_of(list, ns, kind, name),
            |list| list_hash(h, list),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut e) => e.get_mut().push(Arc::clone(&a)),
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(vec![Arc::clone(&a)]);
            }
        }
    }

    /// Removes the autoscaler `namespace`/`name`. Returns whether it was present.
    pub fn remove(&mut self, namespace: &str, name: &str) -> bool {
        let h = &self.hasher;
        let Ok(entry) = self.by_name.find_entry(name_hash(h, namespace, name), |a| {
            a.namespace == namespace && a.name == name
        }) else {
            return false;
        };
        let (a, _) = entry.remove();
        let (kind, target) = (&a.target.kind, &a.target.name);
        if let Ok(mut e) = self
            .by_target
            .find_entry(target_hash(h, namespace, kind, target), |list| {
                is_list_of(list, namespace, kind, target)
            })
        {
            e.get_mut().retain(|x| !Arc::ptr_eq(x, &a));
            if e.get().is_empty() {
                e.remove();
            }
        }
        shrink_if_sparse(&mut self.by_name, |x| name_hash(h, &x.namespace, &x.name));
        shrink_if_sparse(&mut self.by_target, |list| list_hash(h, list));
        true
    }

    /// Number of autoscalers.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Approximate heap bytes of the index: both hash tables (slots from their capacities), the lists
    /// and every [`Autoscaler`] ([`Autoscaler::approx_heap_bytes`]).
    pub fn approx_heap_bytes(&self) -> usize {
        use lazyscale_api::heap::{alloc_bytes, hash_table_bytes};
        let lists: usize = self
            .by_target
            .iter()
            .map(|list| {
                alloc_bytes(list.capacity() * std::mem::size_of::<Arc<Autoscaler>>())
                    + list.iter().map(|a| a.approx_heap_bytes()).sum::<usize>()
            })
            .sum();
        hash_table_bytes::<Vec<Arc<Autoscaler>>>(self.by_target.capacity())
            + hash_table_bytes::<Arc<Autoscaler>>(self.by_name.capacity())
            + lists
    }

    /// True when there is no autoscaler.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl AutoscalerLookup for AutoscalerIndex {
    fn autoscalers_for(&self, namespace: &str, kind: &str, name: &str) -> Vec<Arc<Autoscaler>> {
        self.by_target
            .find(target_hash(&self.hasher, namespace, kind, name), |list| {
                is_list_of(list, namespace, kind, name)
            })
            .cloned()
            .unwrap_or_default()
    }
}

/// The decision for one admission request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Not a pod creation the webhook handles, or a pod without an owner; allow unchanged.
    Skipped(&'static str),
    /// No autoscaler (outside Preview) targets the pod's workload; allow unchanged.
    NoAutoscaler {
        /// Namespace of the pod.
        namespace: String,
        /// The pod's workload.
        target: TargetRef,
    },
    /// More than one autoscaler targets the pod's workload: allow unchanged and report an event.
    Conflict {
        /// Namespace of the pod.
        namespace: String,
        /// The pod's workload.
        target: TargetRef,
        /// `<namespace>/<name>` of the autoscalers, sorted.
        autoscalers: Vec<String>,
    },
    /// The pod is patched.
    Patched {
        /// `<namespace>/<name>` of the autoscaler.
        autoscaler_id: String,
        /// The rec-id set, when vertical values were applied.
        rec_id: Option<String>,
        /// Number of containers whose resources or environment changed.
        containers: usize,
        /// The RFC 6902 JSON patch (an array of operations).
        patch: Value,
    },
}

impl Outcome {
    /// The patch, if any.
    pub fn patch(&self) -> Option<&Value> {
        match self {
            Outcome::Patched { patch, .. } => Some(patch),
            _ => None,
        }
    }

    /// The patch, if any (what the webhook's `Mutator::mutate` returns).
    pub fn into_patch(self) -> Option<Value> {
        match self {
            Outcome::Patched { patch, .. } => Some(patch),
            _ => None,
        }
    }
}

/// Why a request cannot be decided (the webhook allows the pod unchanged and counts it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MutateError {
    /// The body is not an AdmissionReview.
    #[error("not an AdmissionReview: {0}")]
    Review(String),
    /// The AdmissionReview has no request.
    #[error("the AdmissionReview has no request")]
    NoRequest,
    /// The pod does not have the shape of a pod where the patch must go.
    #[error("malformed pod: {0}")]
    MalformedPod(String),
}

#[derive(Deserialize)]
struct Review {
    request: Option<Request>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    operation: Option<String>,
    kind: Option<Gvk>,
    sub_resource: Option<String>,
    namespace: Option<String>,
    object: Option<Value>,
}

#[derive(Deserialize)]
struct Gvk {
    kind: Option<String>,
}

/// Decides an admission request from the raw AdmissionReview body.
pub fn mutate<L: AutoscalerLookup + ?Sized>(review: &[u8], lookup: &L) -> Result<Outcome, MutateError> {
    let review: Review = serde_json::from_slice(review).map_err(|e| MutateError::Review(e.to_string()))?;
    let request = review.request.ok_or(MutateError::NoRequest)?;
    if request.operation.as_deref().is_some_and(|o| o != "CREATE") {
        return Ok(Outcome::Skipped("not a CREATE"));
    }
    if request
        .kind
        .as_ref()
        .and_then(|k| k.kind.as_deref())
        .is_some_and(|k| k != "Pod")
    {
        return Ok(Outcome::Skipped("not a Pod"));
    }
    if request.sub_resource.as_deref().is_some_and(|s| !s.is_empty()) {
        return Ok(Outcome::Skipped("a subresource"));
    }
    let Some(pod) = request.object else {
        return Ok(Outcome::Skipped("no object"));
    };
    let namespace = match request.namespace.filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => match pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(n) => n.to_owned(),
            None => return Ok(Outcome::Skipped("no namespace")),
        },
    };
    mutate_pod(&namespace, &pod, lookup)
}

/// Decides the admission of `pod` (the AdmissionReview's `request.object`) in `namespace`.
pub fn mutate_pod<L: AutoscalerLookup + ?Sized>(
    namespace: &str,
    pod: &Value,
    lookup: &L,
) -> Result<Outcome, MutateError> {
    if !pod.is_object() {
        return Err(MutateError::MalformedPod(
            "the object is not a JSON object".into(),
        ));
    }
    let Some(target) = resolve_owner(pod) else {
        return Ok(Outcome::Skipped("no owner"));
    };
    let mut found: Vec<Arc<Autoscaler>> = lookup
        .autoscalers_for(namespace, &target.kind, &target.name)
        .into_iter()
        .filter(|a| {
            !a.preview
                && a.namespace == namespace
                && a.target.kind == target.kind
                && a.target.name == target.name
                // A targetRef without apiVersion matches any group.
                && (a.target.group.is_empty() || a.target.group == target.group)
        })
        .collect();
    match found.len() {
        0 => Ok(Outcome::NoAutoscaler {
            namespace: namespace.to_owned(),
            target,
        }),
        1 => match found.pop() {
            Some(a) => patch_pod(pod, &a),
            None => Ok(Outcome::NoAutoscaler {
                namespace: namespace.to_owned(),
                target,
            }),
        },
        _ => {
            let mut autoscalers: Vec<String> = found.iter().map(|a| a.id()).collect();
            autoscalers.sort();
            Ok(Outcome::Conflict {
                namespace: namespace.to_owned(),
                target,
                autoscalers,
            })
        }
    }
}

/// The workload owning `pod` (see the module documentation), or `None` without a usable owner reference.
pub fn resolve_owner(pod: &Value) -> Option<TargetRef> {
    let refs = pod.pointer("/metadata/ownerReferences")?.as_array()?;
    let owner = refs
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .or_else(|| refs.first())?;
    let kind = owner.get("kind")?.as_str().filter(|k| !k.is_empty())?;
    let name = owner.get("name")?.as_str().filter(|n| !n.is_empty())?;
    let api_version = owner
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind == "ReplicaSet" {
        let label = |key: &str| {
            pod.get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(|l| l.get(key))
                .and_then(Value::as_str)
                .filter(|h| !h.is_empty())
        };
        let strip = |hash: &str| {
            name.strip_suffix(hash)
                .and_then(|n| n.strip_suffix('-'))
                .filter(|n| !n.is_empty())
        };
        if let Some(base) = label(ROLLOUTS_POD_TEMPLATE_HASH_LABEL).and_then(strip) {
            return Some(TargetRef {
                group: ARGO_ROLLOUTS_GROUP.into(),
                kind: "Rollout".into(),
                name: base.into(),
            });
        }
        if let Some(base) = label(POD_TEMPLATE_HASH_LABEL).and_then(strip) {
            return Some(TargetRef {
                group: "apps".into(),
                kind: "Deployment".into(),
                name: base.into(),
            });
        }
    }
    Some(TargetRef::from_api_version(api_version, kind, name))
}

/// Escapes a JSON pointer reference token (RFC 6901): `~` → `~0`, `/` → `~1`.
pub fn escape_pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn malformed(what: String) -> MutateError {
    MutateError::MalformedPod(what)
}

fn patch_pod(pod: &Value, autoscaler: &Autoscaler) -> Result<Outcome, MutateError> {
    let mut container_ops = Vec::new();
    let mut containers = 0;
    let mut runtime_applied = false;
    if let Some(vertical) = &autoscaler.vertical
        && !vertical.plan.containers.is_empty()
    {
        let spec = pod
            .get("spec")
            .and_then(Value::as_object)
            .ok_or_else(|| malformed("no spec object".into()))?;
        for (field, sidecars_only) in [("containers", false), ("initContainers", true)] {
            let list = match spec.get(field) {
                None | Some(Value::Null) => continue,
                Some(Value::Array(list)) => list,
                Some(_) => return Err(malformed(format!("spec.{field} is not an array"))),
            };
            for (i, c) in list.iter().enumerate() {
                let c = c
                    .as_object()
                    .ok_or_else(|| malformed(format!("spec.{field}[{i}] is not an object")))?;
                if sidecars_only && c.get("restartPolicy").and_then(Value::as_str) != Some("Always") {
                    continue;
                }
                let Some(plan) = c
                    .get("name")
                    .and_then(Value::as_str)
                    .and_then(|n| vertical.plan.container(n))
                else {
                    continue;
                };
                let base = format!("/spec/{field}/{i}");
                let before = container_ops.len();
                runtime_applied |= patch_container(&mut container_ops, &base, c, plan)?;
                if container_ops.len() > before {
                    containers += 1;
                }
            }
        }
    }

    let id = autoscaler.id();
    let mut notes: Vec<(&str, &str)> = vec![(annotations::AUTOSCALER_ID, id.as_str())];
    let rec_id = autoscaler.vertical.as_ref().map(|v| v.rec_id.clone());
    if let Some(r) = &rec_id {
        notes.push((annotations::REC_ID, r));
        if runtime_applied {
            notes.push((annotations::RUNTIME_REC_ID, r));
        }
    }
    let mut ops = annotation_ops(pod, &notes)?;
    ops.extend(container_ops);
    Ok(Outcome::Patched {
        autoscaler_id: id.clone(),
        rec_id,
        containers,
        patch: Value::Array(ops),
    })
}

fn annotation_ops(pod: &Value, notes: &[(&str, &str)]) -> Result<Vec<Value>, MutateError> {
    let object = || {
        Value::Object(
            notes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                .collect(),
        )
    };
    match pod.get("metadata") {
        None | Some(Value::Null) => Ok(vec![json!({
            "op": "add", "path": "/metadata", "value": {"annotations": object()}
        })]),
        Some(Value::Object(m)) => match m.get("annotations") {
            None | Some(Value::Null) => Ok(vec![json!({
                "op": "add", "path": "/metadata/annotations", "value": object()
            })]),
            Some(Value::Object(_)) => Ok(notes
                .iter()
                .map(|(k, v)| {
                    json!({
                        "op": "add",
                        "path": format!("/metadata/annotations/{}", escape_pointer_token(k)),
                        "value": v,
                    })
                })
                .collect()),
            Some(_) => Err(malformed("metadata.annotations is not an object".into())),
        },
        Some(_) => Err(malformed("metadata is not an object".into())),
    }
}

/// A quantity of the pod (string or number), parsed; `None` when absent or unparseable.
fn pod_quantity(map: Option<&Map<String, Value>>, r: Resource) -> Option<u64> {
    match map?.get(r.name())? {
        Value::String(s) => r.parse(s).ok(),
        Value::Number(n) => r.parse(&n.to_string()).ok(),
        _ => None,
    }
}

fn object_member<'a>(
    map: Option<&'a Map<String, Value>>,
    key: &str,
    base: &str,
) -> Result<Option<&'a Map<String, Value>>, MutateError> {
    match map.and_then(|m| m.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(malformed(format!("{base}/{key} is not an object"))),
    }
}

/// Appends the operations for one container; returns whether `GOMEMLIMIT` was set.
fn patch_container(
    ops: &mut Vec<Value>,
    base: &str,
    container: &Map<String, Value>,
    plan: &ContainerPlan,
) -> Result<bool, MutateError> {
    let resources = object_member(Some(container), "resources", base)?;
    let res_path = format!("{base}/resources");
    let requests = object_member(resources, "requests", &res_path)?;
    let limits = object_member(resources, "limits", &res_path)?;

    let mut set_requests = Map::new();
    let mut set_limits = Map::new();
    let mut remove_limits = Vec::new();
    for r in Resource::ALL {
        let old_request = pod_quantity(requests, r);
        let old_limit = pod_quantity(limits, r);
        let mut request = plan.requests.get(r);
        match plan.limit(r) {
            LimitAction::Untouched => {
                if let (Some(req), Some(lim)) = (request, old_limit) {
                    request = Some(req.min(lim));
                }
            }
            LimitAction::Remove => {
                if limits.is_some_and(|l| l.contains_key(r.name())) {
                    remove_limits.push(r.name());
                }
            }
            LimitAction::Set(lim) => {
                set_limits.insert(
                    r.name().to_owned(),
                    Value::String(r.format(lim.max(request.unwrap_or(0)))),
                );
            }
            LimitAction::AtLeast(floor) => {
                if let Some(lim) = old_limit {
                    request = request.map(|req| req.min(lim.max(floor)));
                    if floor > lim {
                        set_limits.insert(r.name().to_owned(), Value::String(r.format(floor)));
                    }
                }
            }
            LimitAction::Proportional => {
                if let (Some(req), Some(lim)) = (request, old_limit) {
                    let base_request = old_request.unwrap_or(lim);
                    let scaled = if base_request == 0 {
                        lim
                    } else {
                        mul_div_ceil(lim, req, base_request)
                    };
                    set_limits.insert(r.name().to_owned(), Value::String(r.format(scaled.max(req))));
                }
            }
        }
        if let Some(req) = request {
            set_requests.insert(r.name().to_owned(), Value::String(r.format(req)));
        }
    }

    if resources.is_none() {
        let mut value = Map::new();
        if !set_requests.is_empty() {
            value.insert("requests".into(), Value::Object(set_requests));
        }
        if !set_limits.is_empty() {
            value.insert("limits".into(), Value::Object(set_limits));
        }
        if !value.is_empty() {
            ops.push(json!({"op": "add", "path": res_path, "value": value}));
        }
    } else {
        for (key, current, sets, removes) in [
            ("requests", requests, set_requests, Vec::new()),
            ("limits", limits, set_limits, remove_limits),
        ] {
            let path = format!("{res_path}/{key}");
            match current {
                None => {
                    if !sets.is_empty() {
                        ops.push(json!({"op": "add", "path": path, "value": sets}));
                    }
                }
                Some(_) => {
                    for (name, value) in sets {
                        ops.push(json!({"op": "add", "path": format!("{path}/{name}"), "value": value}));
                    }
                    for name in removes {
                        ops.push(json!({"op": "remove", "path": format!("{path}/{name}")}));
                    }
                }
            }
        }
    }

    let Some(gomemlimit) = &plan.gomemlimit else {
        return Ok(false);
    };
    let entry = json!({"name": GOMEMLIMIT_ENV, "value": gomemlimit});
    match container.get("env") {
        None | Some(Value::Null) => {
            ops.push(json!({"op": "add", "path": format!("{base}/env"), "value": [entry]}));
        }
        Some(Value::Array(env)) => {
            let existing = env
                .iter()
                .position(|e| e.get("name").and_then(Value::as_str) == Some(GOMEMLIMIT_ENV));
            match existing {
                Some(j) => {
                    ops.push(json!({"op": "replace", "path": format!("{base}/env/{j}"), "value": entry}))
                }
                None => ops.push(json!({"op": "add", "path": format!("{base}/env/-"), "value": entry})),
            }
        }
        Some(_) => return Err(malformed(format!("{base}/env is not an array"))),
    }
    Ok(true)
}
