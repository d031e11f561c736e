//! The cached pod, [`SlimPod`], and owner resolution to the autoscaled workload ([`WorkloadKey`]).
//!
//! A [`SlimPod`] is 80 bytes inline with, normally, nothing of its own on the heap:
//!
//! - the uid as a 128-bit integer, the name as a [`CompactString`] — and when the name is the usual
//!   `<controller name>-<suffix>`, only the suffix is stored, which always fits inline;
//! - one 8-byte pointer to an interned [`Shape`], which holds what pods of one ReplicaSet have in common:
//!   the [`Owner`] record (namespace, controller reference, resolved workload, template hash), the
//!   [`Containers`] set (names, requests and limits, and the resources the kubelet reports; native
//!   sidecars after the containers), the
//!   per-container ready / restart count / last-OOM states (a `u32` each), and the kept labels and
//!   annotations — all pods of a ReplicaSet in the same state share one shape;
//! - the node name (an interned `ArcStr`), the start time as seconds, and phase, readiness, resize and
//!   OOM flags in a 16-bit field.
//!
//! Owner resolution ([`resolve_workload`]) follows what the autoscaler targets: a ReplicaSet whose pods carry
//! `rollouts-pod-template-hash` and whose name is `<rollout>-<hash>` belongs to an Argo `Rollout`; a
//! ReplicaSet whose pods carry `pod-template-hash` and whose name is `<deployment>-<hash>` belongs to a
//! `Deployment`; any other ReplicaSet stands for itself; StatefulSets, DaemonSets and Jobs are their own
//! workloads.

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::mem::size_of;
use std::ops::Deref;
use std::sync::Arc;

use arcstr::ArcStr;
use compact_str::CompactString;
use thiserror::Error;

use crate::intern::Interner;
use crate::wire::{
    AUTOSCALING_PREFIX, CONTROLLER_REVISION_HASH, ConditionKind, ConditionReason, ConditionStatus,
    POD_TEMPLATE_HASH, PodPhase, PodWire, ROLLOUTS_POD_TEMPLATE_HASH, ResourceRequirements,
};

/// Why a decoded pod cannot be cached.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SlimError {
    /// `metadata.name` is missing or empty.
    #[error("pod has no metadata.name")]
    MissingName,
    /// `metadata.namespace` is missing or empty.
    #[error("pod {name} has no metadata.namespace")]
    MissingNamespace {
        /// The pod's name.
        name: String,
    },
}

// === WorkloadKind / WorkloadKey ===

// The one workload vocabulary of lazyscale. The pod cache keeps one key per interned `Owner` record,
// shared by all pods of a ReplicaSet; the key's strings are `ArcStr`s, so a pod costs no key bytes.
pub use lazyscale_api::workload::{WorkloadKey, WorkloadKind, WorkloadRef};

/// Resolves a pod's controller reference to the workload the autoscaler targets.
///
/// `api_version`, `kind` and `name` are the controller owner reference's; `pod_template_hash` and
/// `rollouts_hash` are the pod's `pod-template-hash` and `rollouts-pod-template-hash` labels.
pub fn resolve_workload<'a>(
    api_version: &str,
    kind: &str,
    name: &'a str,
    pod_template_hash: Option<&str>,
    rollouts_hash: Option<&str>,
) -> (WorkloadKind, &'a str) {
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    match (group, kind) {
        ("apps", "ReplicaSet") => {
            if let Some(base) = rollouts_hash.and_then(|h| strip_hash(name, h)) {
                (WorkloadKind::Rollout, base)
            } else if let Some(base) = pod_template_hash.and_then(|h| strip_hash(name, h)) {
                (WorkloadKind::Deployment, base)
            } else {
                (WorkloadKind::ReplicaSet, name)
            }
        }
        ("apps", "StatefulSet") => (WorkloadKind::StatefulSet, name),
        ("apps", "DaemonSet") => (WorkloadKind::DaemonSet, name),
        ("batch", "Job") => (WorkloadKind::Job, name),
        _ => (WorkloadKind::Other, name),
    }
}

/// `name` without its `-<hash>` suffix, if it has one and something remains.
fn strip_hash<'a>(name: &'a str, hash: &str) -> Option<&'a str> {
    if hash.is_empty() {
        return None;
    }
    let base = name.strip_suffix(hash)?.strip_suffix('-')?;
    (!base.is_empty()).then_some(base)
}

/// The workload of a decoded pod, borrowed from it (no allocation); `None` for pods without a controller
/// or without a namespace.
pub fn wire_workload(pod: &PodWire) -> Option<WorkloadRef<'_>> {
    let namespace = pod.metadata.namespace.as_deref().filter(|n| !n.is_empty())?;
    let c = pod.controller()?;
    let (kind, name) = resolve_workload(
        &c.api_version,
        &c.kind,
        &c.name,
        pod.label(POD_TEMPLATE_HASH),
        pod.label(ROLLOUTS_POD_TEMPLATE_HASH),
    );
    Some(WorkloadRef {
        namespace,
        kind,
        name,
    })
}

// === shared parts ===

/// The controller owner reference of a pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ControllerRef {
    /// Owner kind, e.g. `ReplicaSet`.
    pub kind: ArcStr,
    /// Owner name, e.g. `web-7d9f8b6c5d`.
    pub name: ArcStr,
}

/// Who owns a pod; interned, so all pods of one controller (and revision) share one record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The pod's namespace.
    pub namespace: ArcStr,
    /// The controller owner reference, if any.
    pub controller: Option<ControllerRef>,
    /// The resolved workload, if the pod has a controller.
    pub workload: Option<WorkloadKey>,
    /// The pod's template revision: `rollouts-pod-template-hash`, else `pod-template-hash`, else
    /// `controller-revision-hash`.
    pub template_hash: Option<ArcStr>,
}

/// One container's spec (and applied) resources; part of an interned [`Containers`] set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContainerSpec {
    /// Container name.
    pub name: ArcStr,
    /// Requests and limits from `spec.containers[].resources`.
    pub resources: ResourceRequirements,
    /// Requests and limits the kubelet reports in `status.containerStatuses[].resources`.
    pub status_resources: Option<ResourceRequirements>,
    /// A native sidecar: an init container with `restartPolicy: Always` (kept after the containers, see
    /// [`SlimPod::sidecars`]).
    pub sidecar: bool,
}

/// The containers of a pod, in spec order; interned and shared.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Containers(Box<[ContainerSpec]>);

impl Containers {
    /// A set from its containers.
    pub fn new(containers: Vec<ContainerSpec>) -> Self {
        Containers(containers.into_boxed_slice())
    }

    /// Heap bytes owned directly (not counting interned strings).
    pub fn heap_bytes(&self) -> usize {
        self.0.len() * size_of::<ContainerSpec>()
    }
}

impl Deref for Containers {
    type Target = [ContainerSpec];
    fn deref(&self) -> &[ContainerSpec] {
        &self.0
    }
}

/// Where a kept key/value pair came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetaSource {
    /// A label.
    Label,
    /// An annotation.
    Annotation,
}

/// The kept `autoscaling.datadoghq.com/*` labels and annotations of a pod; interned and shared.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Extras(Box<[(MetaSource, ArcStr, ArcStr)]>);

impl Extras {
    /// Heap bytes owned directly (not counting interned strings).
    pub fn heap_bytes(&self) -> usize {
        self.0.len() * size_of::<(MetaSource, ArcStr, ArcStr)>()
    }

    /// The value of `key` from `source`.
    pub fn get(&self, source: MetaSource, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(s, k, _)| *s == source && k == key)
            .map(|(_, _, v)| v.as_str())
    }

    /// All entries.
    pub fn iter(&self) -> impl Iterator<Item = (MetaSource, &str, &str)> {
        self.0.iter().map(|(s, k, v)| (*s, k.as_str(), v.as_str()))
    }
}

/// The parts of a pod that pods of one ReplicaSet usually have in common: owner, containers, container
/// states and kept labels/annotations. Interned, so a pod holds one 8-byte pointer for all of them; pods
/// whose readiness or restart counts differ point at different shapes.
///
/// Equality and hashing compare the interned `Arc`s by pointer (they are unique per value while alive).
#[derive(Clone, Debug)]
pub struct Shape {
    /// Who owns the pod.
    pub owner: Arc<Owner>,
    /// The containers, in spec order.
    pub containers: Arc<Containers>,
    /// Container states, parallel to `containers`.
    pub states: Box<[ContainerState]>,
    /// Kept `autoscaling.datadoghq.com/*` labels and annotations.
    pub extras: Option<Arc<Extras>>,
}

impl PartialEq for Shape {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.owner, &other.owner)
            && Arc::ptr_eq(&self.containers, &other.containers)
            && self.states == other.states
            && match (&self.extras, &other.extras) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}
impl Eq for Shape {}

impl Hash for Shape {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.owner).hash(state);
        Arc::as_ptr(&self.containers).hash(state);
        self.states.hash(state);
        self.extras.as_ref().map(Arc::as_ptr).hash(state);
    }
}

impl Shape {
    /// Heap bytes owned directly (not counting the interned parts it points to).
    pub fn heap_bytes(&self) -> usize {
        self.states.len() * size_of::<ContainerState>()
    }
}

// === per-pod parts ===

/// A container's status packed into 32 bits: restart count (saturating at 2^28 − 1), whether a status
/// was reported, readiness, and whether its last termination was `OOMKilled`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ContainerState(u32);

impl ContainerState {
    const RESTARTS: u32 = (1 << 28) - 1;
    const REPORTED: u32 = 1 << 29;
    const READY: u32 = 1 << 30;
    const OOM: u32 = 1 << 31;

    /// A state from its parts.
    pub fn new(reported: bool, ready: bool, restarts: u32, last_oom: bool) -> Self {
        let mut v = restarts.min(Self::RESTARTS);
        if reported {
            v |= Self::REPORTED;
        }
        if ready {
            v |= Self::READY;
        }
        if last_oom {
            v |= Self::OOM;
        }
        ContainerState(v)
    }
    /// Whether the kubelet reported a status for this container.
    pub fn reported(self) -> bool {
        self.0 & Self::REPORTED != 0
    }
    /// Whether the container is ready.
    pub fn ready(self) -> bool {
        self.0 & Self::READY != 0
    }
    /// Restart count (saturating at 2^28 − 1).
    pub fn restarts(self) -> u32 {
        self.0 & Self::RESTARTS
    }
    /// Whether the container's previous run was `OOMKilled`.
    pub fn last_oom_killed(self) -> bool {
        self.0 & Self::OOM != 0
    }
}

impl fmt::Debug for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerState")
            .field("reported", &self.reported())
            .field("ready", &self.ready())
            .field("restarts", &self.restarts())
            .field("last_oom_killed", &self.last_oom_killed())
            .finish()
    }
}

/// Why a resize is pending (`PodResizePending` reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResizePending {
    /// `Deferred`: possible later.
    Deferred,
    /// `Infeasible`: the node can never fit it.
    Infeasible,
    /// No or another reason.
    Other,
}

/// Pod-level flags: phase (3 bits), readiness, termination, resize state, OOM and storage bits.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PodFlags(u16);

impl PodFlags {
    const PHASE: u16 = 0b111;
    /// The `Ready` condition is `True`.
    pub const READY: u16 = 1 << 3;
    /// `metadata.deletionTimestamp` is set.
    pub const TERMINATING: u16 = 1 << 4;
    /// `PodResizePending` is `True`.
    pub const RESIZE_PENDING: u16 = 1 << 5;
    /// ... with reason `Deferred`.
    pub const RESIZE_DEFERRED: u16 = 1 << 6;
    /// ... with reason `Infeasible`.
    pub const RESIZE_INFEASIBLE: u16 = 1 << 7;
    /// `PodResizeInProgress` is `True`.
    pub const RESIZE_IN_PROGRESS: u16 = 1 << 8;
    /// ... with reason `Error`.
    pub const RESIZE_ERROR: u16 = 1 << 9;
    /// Some container's last termination was `OOMKilled`.
    pub const OOM_KILLED: u16 = 1 << 10;
    /// Storage: the stored name is the suffix after `<controller name>-`.
    pub const NAME_SUFFIX: u16 = 1 << 11;
    /// Storage: the uid was missing or malformed and was derived from namespace and name.
    pub const SYNTHETIC_UID: u16 = 1 << 12;

    /// The raw bits.
    pub fn bits(self) -> u16 {
        self.0
    }
    /// Whether all of `bits` are set.
    pub fn contains(self, bits: u16) -> bool {
        self.0 & bits == bits
    }
    fn set(&mut self, bits: u16, on: bool) {
        if on {
            self.0 |= bits;
        }
    }
    fn phase(self) -> Option<PodPhase> {
        match self.0 & Self::PHASE {
            1 => Some(PodPhase::Pending),
            2 => Some(PodPhase::Running),
            3 => Some(PodPhase::Succeeded),
            4 => Some(PodPhase::Failed),
            5 => Some(PodPhase::Unknown),
            _ => None,
        }
    }
    fn set_phase(&mut self, phase: Option<PodPhase>) {
        let v = match phase {
            None => 0,
            Some(PodPhase::Pending) => 1,
            Some(PodPhase::Running) => 2,
            Some(PodPhase::Succeeded) => 3,
            Some(PodPhase::Failed) => 4,
            Some(PodPhase::Unknown) => 5,
        };
        self.0 = (self.0 & !Self::PHASE) | v;
    }
}

impl fmt::Debug for PodFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PodFlags({:?}, {:#06x})", self.phase(), self.0 & !Self::PHASE)
    }
}

/// Start time value meaning "not reported".
const NO_START: i64 = i64::MIN;

/// Ready-transition offset meaning "not known".
const NO_READY_SINCE: i32 = i32::MIN;

/// A cached pod. See the [module docs](self) for the layout.
#[derive(Clone)]
pub struct SlimPod {
    uid_hi: u64,
    uid_lo: u64,
    name: CompactString,
    shape: Arc<Shape>,
    node: Option<ArcStr>,
    start_time: i64,
    /// The `Ready` condition's last transition, in seconds after `start_time` (it fits the padding
    /// after the flags: the pod stays 72 bytes).
    ready_since: i32,
    flags: PodFlags,
    /// Relist generation tag, owned by the store.
    pub(crate) generation: u8,
}

impl PartialEq for SlimPod {
    fn eq(&self, other: &Self) -> bool {
        // The generation tag is store bookkeeping, not pod state.
        self.uid_hi == other.uid_hi
            && self.uid_lo == other.uid_lo
            && self.name == other.name
            && self.shape == other.shape
            && self.node == other.node
            && self.start_time == other.start_time
            && self.ready_since == other.ready_since
            && self.flags == other.flags
    }
}
impl Eq for SlimPod {}

impl fmt::Debug for SlimPod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlimPod")
            .field("uid", &format_args!("{:032x}", self.uid()))
            .field("namespace", &self.namespace())
            .field("name", &self.name())
            .field("workload", &self.workload())
            .field("node", &self.node())
            .field("flags", &self.flags)
            .field("start_time", &self.start_time())
            .field("containers", &self.shape.containers)
            .field("states", &self.shape.states)
            .field("extras", &self.shape.extras)
            .finish()
    }
}

/// Parses a Kubernetes UID (a UUID: 32 hex digits, dashes ignored).
pub fn parse_uid(s: &str) -> Option<u128> {
    let mut v: u128 = 0;
    let mut n = 0;
    for b in s.bytes() {
        if b == b'-' {
            continue;
        }
        let d = (b as char).to_digit(16)?;
        n += 1;
        if n > 32 {
            return None;
        }
        v = (v << 4) | u128::from(d);
    }
    (n == 32).then_some(v)
}

/// A stable stand-in uid for a pod without a valid one (FNV-1a, 128-bit, over `namespace/name`).
fn synthetic_uid(namespace: &str, name: &str) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h = OFFSET;
    for b in namespace.bytes().chain([b'/']).chain(name.bytes()) {
        h ^= u128::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// The uid a decoded pod is keyed by: its own, or the synthetic one when missing or malformed.
pub fn wire_uid(pod: &PodWire) -> u128 {
    pod.metadata
        .uid
        .as_deref()
        .and_then(parse_uid)
        .unwrap_or_else(|| {
            synthetic_uid(
                pod.metadata.namespace.as_deref().unwrap_or(""),
                pod.metadata.name.as_deref().unwrap_or(""),
            )
        })
}

impl SlimPod {
    /// Builds the cached form of a decoded pod, interning its shared parts.
    pub fn from_wire(pod: &PodWire, interner: &mut Interner) -> Result<SlimPod, SlimError> {
        let meta = &pod.metadata;
        let name = meta
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or(SlimError::MissingName)?;
        let namespace = meta
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| SlimError::MissingNamespace {
                name: name.to_owned(),
            })?;
        let mut flags = PodFlags::default();
        let (uid, synthetic) = match meta.uid.as_deref().and_then(parse_uid) {
            Some(u) => (u, false),
            None => (synthetic_uid(namespace, name), true),
        };
        flags.set(PodFlags::SYNTHETIC_UID, synthetic);

        // Owner.
        let ns = interner.str(namespace);
        let controller = pod.controller();
        let workload = wire_workload(pod).map(|w| WorkloadKey {
            namespace: ns.clone(),
            kind: w.kind,
            name: interner.str(w.name),
        });
        let template_hash = pod
            .label(ROLLOUTS_POD_TEMPLATE_HASH)
            .or_else(|| pod.label(POD_TEMPLATE_HASH))
            .or_else(|| pod.label(CONTROLLER_REVISION_HASH))
            .map(|h| interner.str(h));
        let controller_ref = controller.map(|c| ControllerRef {
            kind: interner.str(&c.kind),
            name: interner.str(&c.name),
        });
        let stored_name = match controller_ref.as_ref().and_then(|c| {
            name.strip_prefix(c.name.as_str())
                .and_then(|r| r.strip_prefix('-'))
                .filter(|r| !r.is_empty())
        }) {
            Some(suffix) => {
                flags.set(PodFlags::NAME_SUFFIX, true);
                CompactString::new(suffix)
            }
            None => CompactString::new(name),
        };
        let owner = interner.owner(Owner {
            namespace: ns,
            controller: controller_ref,
            workload,
            template_hash,
        });

        // Containers and their states.
        let statuses = &pod.status.container_statuses;
        let mut specs = Vec::with_capacity(pod.spec.containers.len());
        let mut states = Vec::with_capacity(pod.spec.containers.len());
        let mut any_oom = false;
        for c in &pod.spec.containers {
            let status = statuses.iter().find(|s| s.name == c.name);
            specs.push(ContainerSpec {
                name: interner.str(&c.name),
                resources: c.resources,
                status_resources: status.and_then(|s| s.resources),
                sidecar: false,
            });
            let state = match status {
                Some(s) => {
                    any_oom |= s.last_oom_killed();
                    ContainerState::new(true, s.ready, s.restart_count, s.last_oom_killed())
                }
                None => ContainerState::default(),
            };
            states.push(state);
        }
        // Native sidecars after the containers (no states: `container_states` stays parallel to them).
        for c in pod.spec.init_containers.iter().filter(|c| c.is_sidecar()) {
            let status = pod
                .status
                .init_container_statuses
                .iter()
                .find(|s| s.name == c.name);
            specs.push(ContainerSpec {
                name: interner.str(&c.name),
                resources: c.resources,
                status_resources: status.and_then(|s| s.resources),
                sidecar: true,
            });
        }
        let containers = interner.containers(Containers::new(specs));

        // Kept labels and annotations (the revision labels live in the owner record).
        let mut extras = Vec::new();
        for (source, map) in [
            (MetaSource::Label, meta.labels.as_ref()),
            (MetaSource::Annotation, meta.annotations.as_ref()),
        ] {
            for (k, v) in map.into_iter().flatten() {
                let keep = match source {
                    MetaSource::Label => k.starts_with(AUTOSCALING_PREFIX),
                    MetaSource::Annotation => crate::wire::keep_annotation(k),
                };
                if keep {
                    extras.push((source, interner.str(k), interner.str(v)));
                }
            }
        }
        let extras = (!extras.is_empty()).then(|| interner.extras(Extras(extras.into_boxed_slice())));

        // Flags.
        flags.set_phase(pod.status.phase);
        let cond = |k| pod.status.condition(k);
        let is_true = |k| cond(k).is_some_and(|c| c.status == ConditionStatus::True);
        flags.set(PodFlags::READY, is_true(ConditionKind::Ready));
        flags.set(PodFlags::TERMINATING, meta.deletion_timestamp.is_some());
        if is_true(ConditionKind::ResizePending) {
            flags.set(PodFlags::RESIZE_PENDING, true);
            match cond(ConditionKind::ResizePending).and_then(|c| c.reason) {
                Some(ConditionReason::Deferred) => flags.set(PodFlags::RESIZE_DEFERRED, true),
                Some(ConditionReason::Infeasible) => flags.set(PodFlags::RESIZE_INFEASIBLE, true),
                _ => {}
            }
        }
        if is_true(ConditionKind::ResizeInProgress) {
            flags.set(PodFlags::RESIZE_IN_PROGRESS, true);
            let error = cond(ConditionKind::ResizeInProgress)
                .is_some_and(|c| c.reason == Some(ConditionReason::Error));
            flags.set(PodFlags::RESIZE_ERROR, error);
        }
        flags.set(PodFlags::OOM_KILLED, any_oom);

        let shape = interner.shape(Shape {
            owner,
            containers,
            states: states.into_boxed_slice(),
            extras,
        });

        Ok(SlimPod {
            uid_hi: (uid >> 64) as u64,
            uid_lo: uid as u64,
            name: stored_name,
            shape,
            node: pod
                .spec
                .node_name
                .as_deref()
                .filter(|n| !n.is_empty())
                .map(|n| interner.str(n)),
            start_time: pod.status.start_time.unwrap_or(NO_START),
            ready_since: match (
                pod.status.start_time,
                cond(ConditionKind::Ready).and_then(|c| c.last_transition_time),
            ) {
                (Some(start), Some(t)) => i32::try_from(t.saturating_sub(start)).unwrap_or(NO_READY_SINCE),
                _ => NO_READY_SINCE,
            },
            flags,
            generation: 0,
        })
    }

    /// The pod's uid.
    pub fn uid(&self) -> u128 {
        (u128::from(self.uid_hi) << 64) | u128::from(self.uid_lo)
    }

    /// The pod's name (rebuilt from the controller name when only the suffix is stored).
    pub fn name(&self) -> Cow<'_, str> {
        match self.suffix_base() {
            Some(base) => Cow::Owned(format!("{base}-{}", self.name)),
            None => Cow::Borrowed(self.name.as_str()),
        }
    }

    /// Whether the pod is called `name`, without building the name.
    pub fn name_eq(&self, name: &str) -> bool {
        match self.suffix_base() {
            Some(base) => name
                .strip_prefix(base)
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|r| r == self.name.as_str()),
            None => name == self.name.as_str(),
        }
    }

    fn suffix_base(&self) -> Option<&str> {
        if !self.flags.contains(PodFlags::NAME_SUFFIX) {
            return None;
        }
        self.shape.owner.controller.as_ref().map(|c| c.name.as_str())
    }

    /// The pod's namespace.
    pub fn namespace(&self) -> &ArcStr {
        &self.shape.owner.namespace
    }

    /// The shared owner record.
    pub fn owner(&self) -> &Owner {
        &self.shape.owner
    }

    /// The shared shape (owner, containers, states, kept labels and annotations).
    pub fn shape(&self) -> &Arc<Shape> {
        &self.shape
    }

    /// The workload the pod belongs to, if it has a controller.
    pub fn workload(&self) -> Option<&WorkloadKey> {
        self.shape.owner.workload.as_ref()
    }

    /// The pod's template revision (see [`Owner::template_hash`]).
    pub fn template_hash(&self) -> Option<&str> {
        self.shape.owner.template_hash.as_deref()
    }

    /// `spec.nodeName`.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// The containers, in spec order (native sidecars not included: [`SlimPod::sidecars`]).
    pub fn containers(&self) -> &[ContainerSpec] {
        let all: &[ContainerSpec] = &self.shape.containers;
        &all[..all.partition_point(|c| !c.sidecar)]
    }

    /// The native sidecars (init containers with `restartPolicy: Always`), in spec order: the vertical
    /// path resizes them in place like containers.
    pub fn sidecars(&self) -> &[ContainerSpec] {
        let all: &[ContainerSpec] = &self.shape.containers;
        &all[all.partition_point(|c| !c.sidecar)..]
    }

    /// The container states, parallel to [`SlimPod::containers`].
    pub fn container_states(&self) -> &[ContainerState] {
        &self.shape.states
    }

    /// A container's (or native sidecar's: no state is kept for those, the default is returned) spec and
    /// state by name.
    pub fn container(&self, name: &str) -> Option<(&ContainerSpec, ContainerState)> {
        let shape = &self.shape;
        let i = shape.containers.iter().position(|c| c.name == name)?;
        Some((
            &shape.containers[i],
            shape.states.get(i).copied().unwrap_or_default(),
        ))
    }

    /// `status.phase`, if reported.
    pub fn phase(&self) -> Option<PodPhase> {
        self.flags.phase()
    }

    /// Whether the `Ready` condition is `True`.
    pub fn is_ready(&self) -> bool {
        self.flags.contains(PodFlags::READY)
    }

    /// Whether the pod is being deleted.
    pub fn is_terminating(&self) -> bool {
        self.flags.contains(PodFlags::TERMINATING)
    }

    /// The pending resize, if `PodResizePending` is `True`.
    pub fn resize_pending(&self) -> Option<ResizePending> {
        if !self.flags.contains(PodFlags::RESIZE_PENDING) {
            None
        } else if self.flags.contains(PodFlags::RESIZE_DEFERRED) {
            Some(ResizePending::Deferred)
        } else if self.flags.contains(PodFlags::RESIZE_INFEASIBLE) {
            Some(ResizePending::Infeasible)
        } else {
            Some(ResizePending::Other)
        }
    }

    /// `Some(errored)` if `PodResizeInProgress` is `True`; `errored` when its reason is `Error`.
    pub fn resize_in_progress(&self) -> Option<bool> {
        self.flags
            .contains(PodFlags::RESIZE_IN_PROGRESS)
            .then(|| self.flags.contains(PodFlags::RESIZE_ERROR))
    }

    /// Whether some container's last termination was `OOMKilled`.
    pub fn oom_killed(&self) -> bool {
        self.flags.contains(PodFlags::OOM_KILLED)
    }

    /// All flags.
    pub fn flags(&self) -> PodFlags {
        self.flags
    }

    /// `status.startTime` in seconds since the Unix epoch.
    pub fn start_time(&self) -> Option<i64> {
        (self.start_time != NO_START).then_some(self.start_time)
    }

    /// When the `Ready` condition last changed, in seconds since the Unix epoch (known only with a
    /// start time).
    pub fn ready_changed_at(&self) -> Option<i64> {
        let start = self.start_time()?;
        (self.ready_since != NO_READY_SINCE).then(|| start + i64::from(self.ready_since))
    }

    /// A kept `autoscaling.datadoghq.com/*` label.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.shape.extras.as_ref()?.get(MetaSource::Label, key)
    }

    /// A kept annotation (`autoscaling.datadoghq.com/*`, or one of the two that forbid eviction, see
    /// [`crate::wire::keep_annotation`]).
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.shape.extras.as_ref()?.get(MetaSource::Annotation, key)
    }

    /// The kept labels and annotations.
    pub fn extras(&self) -> Option<&Extras> {
        self.shape.extras.as_deref()
    }

    /// Heap bytes this pod owns alone (shared, interned parts are accounted by the interner).
    pub fn own_heap_bytes(&self) -> usize {
        if self.name.is_heap_allocated() {
            self.name.capacity()
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_resolution_table() {
        type Row<'a> = (
            &'a str,
            &'a str,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            WorkloadKind,
            &'a str,
        );
        let rows: &[Row<'_>] = &[
            (
                "apps/v1",
                "ReplicaSet",
                "web-7d9f8b6c5d",
                Some("7d9f8b6c5d"),
                None,
                WorkloadKind::Deployment,
                "web",
            ),
            (
                "apps/v1",
                "ReplicaSet",
                "my-app-v2-abc",
                Some("abc"),
                None,
                WorkloadKind::Deployment,
                "my-app-v2",
            ),
            (
                "apps/v1",
                "ReplicaSet",
                "web-7d9f8b6c5d",
                Some("other"),
                None,
                WorkloadKind::ReplicaSet,
                "web-7d9f8b6c5d",
            ),
            (
                "apps/v1",
                "ReplicaSet",
                "standalone",
                None,
                None,
                WorkloadKind::ReplicaSet,
                "standalone",
            ),
            (
                "apps/v1",
                "ReplicaSet",
                "-abc",
                Some("abc"),
                None,
                WorkloadKind::ReplicaSet,
                "-abc",
            ),
            (
                "apps/v1",
                "ReplicaSet",
                "abc",
                Some("abc"),
                None,
                WorkloadKind::ReplicaSet,
                "abc",
            ),
            (
                "apps/v1",
                "ReplicaSet",
                "web-abc",
                Some(""),
                None,
                WorkloadKind::ReplicaSet,
                "web-abc",
            ),
            (
                "apps/v1",
                "ReplicaSet",
                "ro-5f6c",
                Some("5f6c"),
                Some("5f6c"),
                WorkloadKind::Rollout,
                "ro",
            ),
            (
                "apps/v1",
                "ReplicaSet",
                "ro-5f6c",
                None,
                Some("5f6c"),
                WorkloadKind::Rollout,
                "ro",
            ),
            (
                "apps/v1",
                "ReplicaSet",
                "ro-5f6c",
                Some("5f6c"),
                Some("zzz"),
                WorkloadKind::Deployment,
                "ro",
            ),
            (
                "apps/v1",
                "StatefulSet",
                "db",
                None,
                None,
                WorkloadKind::StatefulSet,
                "db",
            ),
            (
                "apps/v1",
                "DaemonSet",
                "agent",
                None,
                None,
                WorkloadKind::DaemonSet,
                "agent",
            ),
            (
                "batch/v1",
                "Job",
                "backup-123",
                None,
                None,
                WorkloadKind::Job,
                "backup-123",
            ),
            (
                "example.com/v1",
                "ReplicaSet",
                "x-abc",
                Some("abc"),
                None,
                WorkloadKind::Other,
                "x-abc",
            ),
            ("v1", "Node", "n1", None, None, WorkloadKind::Other, "n1"),
            (
                "argoproj.io/v1alpha1",
                "Rollout",
                "r",
                None,
                None,
                WorkloadKind::Other,
                "r",
            ),
        ];
        for &(av, kind, name, pth, rth, want_kind, want_name) in rows {
            assert_eq!(
                resolve_workload(av, kind, name, pth, rth),
                (want_kind, want_name),
                "{av} {kind} {name} {pth:?} {rth:?}"
            );
        }
    }

    #[test]
    fn uid_parsing() {
        assert_eq!(
            parse_uid("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
            Some(0x0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0)
        );
        assert_eq!(parse_uid("xyz"), None);
        assert_eq!(parse_uid("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0ff"), None);
        assert_eq!(parse_uid(""), None);
        assert_ne!(synthetic_uid("a", "bc"), synthetic_uid("ab", "c"));
    }

    #[test]
    fn layout_is_compact() {
        assert!(size_of::<SlimPod>() <= 80, "{}", size_of::<SlimPod>());
        assert_eq!(size_of::<Option<SlimPod>>(), size_of::<SlimPod>());
        assert_eq!(size_of::<ContainerState>(), 4);
        // the shared workload key stays two shared strings and a byte
        assert_eq!(size_of::<WorkloadKey>(), 24);
    }
}
