//! The slim wire type: pod list and watch JSON decoded straight into [`PodWire`], never into a
//! k8s-openapi `Pod`.
//!
//! A real pod is 4–7 KB of JSON, half of it `managedFields`; decoding it into `Pod` costs 30–45 KB of heap
//! per object while the cache needs about a hundred bytes. [`PodWire`] keeps only what the autoscaler reads:
//!
//! - metadata: namespace, name, uid, resourceVersion, the controller owner reference, deletionTimestamp,
//!   the labels `pod-template-hash`, `controller-revision-hash`, `rollouts-pod-template-hash` and
//!   `autoscaling.datadoghq.com/*`, and the annotations `autoscaling.datadoghq.com/*`;
//! - spec: nodeName and each container's name and cpu/memory requests and limits;
//! - status: phase, the `Ready`, `PodResizePending` and `PodResizeInProgress` conditions (status and a
//!   classified reason), startTime, and per container ready, restartCount, whether the last termination
//!   was `OOMKilled`, and the resources the kubelet reports.
//!
//! Everything else is skipped with [`IgnoredAny`], which allocates nothing: unknown fields, `managedFields`,
//! and the keys and values of labels and annotations that are not kept (keys are inspected as borrowed
//! `&str` and only copied when kept). Quantities are parsed during decoding into integers (see
//! [`crate::quantity`]); a malformed quantity becomes `None` instead of failing the pod. Enumerated strings
//! (phase, condition types and reasons) decode into small enums with an `Other` variant, so unknown values
//! never fail either. Explicit JSON `null` is accepted wherever Kubernetes may omit a field.
//!
//! [`PodWire`] implements [`kube::Resource`] (`DynamicType = ()`, namespaced, core `v1` `Pod`), so
//! `kube::Api<PodWire>` and `kube::runtime::watcher` list and watch it directly.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use thiserror::Error;

use crate::quantity;

/// Label holding the ReplicaSet template hash that the Deployment controller stamps on pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Label holding the StatefulSet (or DaemonSet) revision of a pod.
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";
/// Label that Argo Rollouts puts on pods of its ReplicaSets.
pub const ROLLOUTS_POD_TEMPLATE_HASH: &str = "rollouts-pod-template-hash";
/// Prefix of the autoscaler's own labels and annotations.
pub const AUTOSCALING_PREFIX: &str = "autoscaling.datadoghq.com/";

/// Whether a label is kept by the decoder.
pub fn keep_label(key: &str) -> bool {
    key == POD_TEMPLATE_HASH
        || key == CONTROLLER_REVISION_HASH
        || key == ROLLOUTS_POD_TEMPLATE_HASH
        || key.starts_with(AUTOSCALING_PREFIX)
}

/// Whether an annotation is kept by the decoder: the autoscaler's own, and the two that forbid evicting
/// the pod (`cluster-autoscaler.kubernetes.io/safe-to-evict`, `karpenter.sh/do-not-disrupt`), which the
/// vertical apply path honours.
pub fn keep_annotation(key: &str) -> bool {
    key.starts_with(AUTOSCALING_PREFIX)
        || key == lazyscale_api::consts::annotations::SAFE_TO_EVICT
        || key == lazyscale_api::consts::annotations::DO_NOT_DISRUPT
}

/// Errors of the convenience decoders [`decode_pod`] and [`decode_pod_list`].
#[derive(Debug, Error)]
pub enum WireError {
    /// The bytes are not JSON of the expected shape.
    #[error("invalid pod JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Decodes one pod object from JSON bytes.
pub fn decode_pod(bytes: &[u8]) -> Result<PodWire, WireError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Decodes the `items` of a pod list (`GET /api/v1/pods`) from JSON bytes.
pub fn decode_pod_list(bytes: &[u8]) -> Result<Vec<PodWire>, WireError> {
    #[derive(Deserialize)]
    struct List {
        #[serde(default, deserialize_with = "nullable")]
        items: Vec<PodWire>,
    }
    let list: List = serde_json::from_slice(bytes)?;
    Ok(list.items)
}

// === PodWire ===

/// A pod as decoded from the API server, reduced to what the cache keeps.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodWire {
    /// Metadata with only name, namespace, uid, resourceVersion, deletionTimestamp, the controller owner
    /// reference and the kept labels and annotations filled in.
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    /// The slice of the pod spec the cache reads.
    #[serde(default, deserialize_with = "nullable")]
    pub spec: PodSpecWire,
    /// The slice of the pod status the cache reads.
    #[serde(default, deserialize_with = "nullable")]
    pub status: PodStatusWire,
}

impl kube::Resource for PodWire {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Pod")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn api_version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("pods")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl PodWire {
    /// The controller owner reference (the decoder keeps no other), if any.
    pub fn controller(&self) -> Option<&OwnerReference> {
        self.metadata
            .owner_references
            .as_deref()
            .and_then(|refs| refs.iter().find(|r| r.controller == Some(true)))
    }

    /// A kept label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.metadata.labels.as_ref()?.get(key).map(String::as_str)
    }

    /// A kept annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.annotations.as_ref()?.get(key).map(String::as_str)
    }

    /// `metadata.deletionTimestamp` in seconds since the Unix epoch.
    pub fn deletion_timestamp(&self) -> Option<i64> {
        self.metadata.deletion_timestamp.as_ref().map(|t| t.0.as_second())
    }
}

/// The slice of `PodSpec` the cache keeps.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecWire {
    /// `spec.nodeName`, set once the pod is scheduled.
    #[serde(default)]
    pub node_name: Option<String>,
    /// `spec.containers` (ephemeral containers are not kept).
    #[serde(default, deserialize_with = "nullable")]
    pub containers: Vec<ContainerWire>,
    /// `spec.initContainers`; the slim pod keeps only native sidecars (`restartPolicy: Always`).
    #[serde(default, deserialize_with = "nullable")]
    pub init_containers: Vec<ContainerWire>,
}

/// One container of the pod spec.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ContainerWire {
    /// Container name.
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// CPU and memory requests and limits.
    #[serde(default, deserialize_with = "nullable")]
    pub resources: ResourceRequirements,
    /// `restartPolicy` (init containers only: `Always` makes a native sidecar).
    #[serde(default, rename = "restartPolicy", deserialize_with = "nullable")]
    pub restart_policy: Option<String>,
}

impl ContainerWire {
    /// An init container with `restartPolicy: Always`: a native sidecar, running next to the containers.
    pub fn is_sidecar(&self) -> bool {
        self.restart_policy.as_deref() == Some("Always")
    }
}

/// CPU and memory amounts parsed into integers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResourceAmounts {
    /// CPU in millicores; `None` when absent or malformed.
    pub cpu_millis: Option<u64>,
    /// Memory in bytes; `None` when absent or malformed.
    pub memory_bytes: Option<u64>,
}

/// Requests and limits of one container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
pub struct ResourceRequirements {
    /// `resources.requests`.
    #[serde(default, deserialize_with = "nullable")]
    pub requests: ResourceAmounts,
    /// `resources.limits`.
    #[serde(default, deserialize_with = "nullable")]
    pub limits: ResourceAmounts,
}

impl<'de> Deserialize<'de> for ResourceAmounts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ResourceAmounts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a resource list")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = ResourceAmounts::default();
                while let Some(key) = map.next_key::<ResourceName>()? {
                    match key {
                        ResourceName::Cpu => {
                            out.cpu_millis = map.next_value::<QuantityValue>()?.millis();
                        }
                        ResourceName::Memory => {
                            out.memory_bytes = map.next_value::<QuantityValue>()?.units();
                        }
                        ResourceName::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// A quantity as it appears in JSON: normally a string, leniently a number; anything else reads as absent.
#[derive(Default)]
struct QuantityValue {
    millis: Option<u64>,
    units: Option<u64>,
}

impl QuantityValue {
    fn millis(self) -> Option<u64> {
        self.millis
    }
    fn units(self) -> Option<u64> {
        self.units
    }
    fn from_str(s: &str) -> Self {
        QuantityValue {
            millis: quantity::millis(s),
            units: quantity::units(s),
        }
    }
}

impl<'de> Deserialize<'de> for QuantityValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = QuantityValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(QuantityValue::from_str(s))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(QuantityValue {
                    millis: v.checked_mul(1000),
                    units: Some(v),
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Ok(QuantityValue::default()),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                // Rare and lossy; go through the exact string parser.
                Ok(QuantityValue::from_str(&v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(QuantityValue::default())
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(QuantityValue::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(QuantityValue::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(QuantityValue::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// Defines a string enum that decodes from a borrowed `&str` without allocating, mapping unknown strings
/// to a fallback variant.
macro_rules! str_enum {
    ($ty:ident, $expect:literal, $other:expr, { $($s:literal => $v:expr),* $(,)? }) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expect)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                        Ok(match s {
                            $($s => $v,)*
                            _ => $other,
                        })
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

enum ResourceName {
    Cpu,
    Memory,
    Other,
}
str_enum!(ResourceName, "a resource name", ResourceName::Other, {
    "cpu" => ResourceName::Cpu,
    "memory" => ResourceName::Memory,
});

// === status ===

/// `status.phase`: the one pod phase type of lazyscale (unknown strings decode as `Unknown`).
pub use lazyscale_api::PodPhase;

/// The pod condition types the cache keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionKind {
    /// `Ready`.
    Ready,
    /// `PodResizePending` (reason `Deferred` or `Infeasible`).
    ResizePending,
    /// `PodResizeInProgress` (reason `Error` when the kubelet failed to actuate it).
    ResizeInProgress,
    /// Any other type; dropped by the decoder.
    Other,
}
str_enum!(ConditionKind, "a condition type", ConditionKind::Other, {
    "Ready" => ConditionKind::Ready,
    "PodResizePending" => ConditionKind::ResizePending,
    "PodResizeInProgress" => ConditionKind::ResizeInProgress,
});

/// A condition's `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`, absent or unrecognised.
    #[default]
    Unknown,
}
str_enum!(ConditionStatus, "a condition status", ConditionStatus::Unknown, {
    "True" => ConditionStatus::True,
    "False" => ConditionStatus::False,
});

/// A condition's `reason`, classified (the resize conditions use a fixed vocabulary).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionReason {
    /// `Deferred`: the resize is possible but not now.
    Deferred,
    /// `Infeasible`: the node can never fit the resize.
    Infeasible,
    /// `Error`: the kubelet failed to actuate the resize.
    Error,
    /// Any other reason.
    Other,
}
str_enum!(ConditionReason, "a condition reason", ConditionReason::Other, {
    "Deferred" => ConditionReason::Deferred,
    "Infeasible" => ConditionReason::Infeasible,
    "Error" => ConditionReason::Error,
});

/// A kept pod condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct ConditionWire {
    /// Condition type.
    #[serde(rename = "type")]
    pub kind: ConditionKind,
    /// Condition status.
    #[serde(default, deserialize_with = "nullable")]
    pub status: ConditionStatus,
    /// Classified reason, when present.
    #[serde(default)]
    pub reason: Option<ConditionReason>,
    /// `lastTransitionTime` in seconds since the Unix epoch; `None` when absent or unparsable.
    #[serde(default, rename = "lastTransitionTime", deserialize_with = "lenient_seconds")]
    pub last_transition_time: Option<i64>,
}

/// Why a container last terminated, classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TerminationReason {
    /// `OOMKilled`.
    OomKilled,
    /// Anything else.
    Other,
}
str_enum!(TerminationReason, "a termination reason", TerminationReason::Other, {
    "OOMKilled" => TerminationReason::OomKilled,
});

/// The slice of `PodStatus` the cache keeps.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodStatusWire {
    /// `status.phase`.
    #[serde(default)]
    pub phase: Option<PodPhase>,
    /// The `Ready`, `PodResizePending` and `PodResizeInProgress` conditions; others are dropped.
    #[serde(default, deserialize_with = "known_conditions")]
    pub conditions: Vec<ConditionWire>,
    /// `status.startTime` in seconds since the Unix epoch; `None` when absent or unparsable.
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub start_time: Option<i64>,
    /// `status.containerStatuses`.
    #[serde(default, deserialize_with = "nullable")]
    pub container_statuses: Vec<ContainerStatusWire>,
    /// `status.initContainerStatuses` (read for native sidecars' applied resources).
    #[serde(default, deserialize_with = "nullable")]
    pub init_container_statuses: Vec<ContainerStatusWire>,
}

impl PodStatusWire {
    /// The kept condition of `kind`, if reported.
    pub fn condition(&self, kind: ConditionKind) -> Option<&ConditionWire> {
        self.conditions.iter().find(|c| c.kind == kind)
    }
}

/// One entry of `status.containerStatuses`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatusWire {
    /// Container name.
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// Whether the container passes its readiness probe.
    #[serde(default, deserialize_with = "nullable")]
    pub ready: bool,
    /// Restart count (negative values read as 0, values beyond `u32` saturate).
    #[serde(default, deserialize_with = "lenient_u32")]
    pub restart_count: u32,
    /// `lastState` reduced to the termination reason.
    #[serde(default, deserialize_with = "nullable")]
    pub last_state: LastStateWire,
    /// Resources the kubelet reports as applied (in-place resize aware).
    #[serde(default)]
    pub resources: Option<ResourceRequirements>,
}

/// `containerStatuses[].lastState`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct LastStateWire {
    /// `lastState.terminated`.
    #[serde(default)]
    pub terminated: Option<TerminatedWire>,
}

/// `containerStatuses[].lastState.terminated`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct TerminatedWire {
    /// Classified termination reason.
    #[serde(default)]
    pub reason: Option<TerminationReason>,
}

impl ContainerStatusWire {
    /// Whether the previous run of this container was killed for running out of memory.
    pub fn last_oom_killed(&self) -> bool {
        matches!(
            self.last_state.terminated,
            Some(TerminatedWire {
                reason: Some(TerminationReason::OomKilled)
            })
        )
    }
}

// === field helpers ===

/// Reads `null` as the type's default.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn known_conditions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ConditionWire>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<ConditionWire>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of pod conditions")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(c) = seq.next_element::<ConditionWire>()? {
                if c.kind != ConditionKind::Other {
                    out.push(c);
                }
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

fn lenient_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = Option::<i64>::deserialize(d)?.unwrap_or(0);
    Ok(u32::try_from(v.max(0)).unwrap_or(u32::MAX))
}

/// An RFC 3339 timestamp string; unparsable strings and `null` read as `None`.
struct LenientTime(Option<Timestamp>);

impl<'de> Deserialize<'de> for LenientTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LenientTime;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(LenientTime(s.parse::<Timestamp>().ok()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(LenientTime(None))
            }
        }
        d.deserialize_any(V)
    }
}

fn lenient_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(LenientTime::deserialize(d)?.0.map(Timestamp::as_second))
}

// === metadata ===

enum MetaKey {
    Name,
    Namespace,
    Uid,
    ResourceVersion,
    Labels,
    Annotations,
    OwnerReferences,
    DeletionTimestamp,
    Other,
}
str_enum!(MetaKey, "a metadata field", MetaKey::Other, {
    "name" => MetaKey::Name,
    "namespace" => MetaKey::Namespace,
    "uid" => MetaKey::Uid,
    "resourceVersion" => MetaKey::ResourceVersion,
    "labels" => MetaKey::Labels,
    "annotations" => MetaKey::Annotations,
    "ownerReferences" => MetaKey::OwnerReferences,
    "deletionTimestamp" => MetaKey::DeletionTimestamp,
});

/// `ObjectMeta` with only the kept fields; `null` reads as empty metadata.
fn slim_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    Ok(Option::<SlimMeta>::deserialize(d)?
        .map(|m| m.0)
        .unwrap_or_default())
}

struct SlimMeta(ObjectMeta);

impl<'de> Deserialize<'de> for SlimMeta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SlimMeta;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("object metadata")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut m = ObjectMeta::default();
                while let Some(key) = map.next_key::<MetaKey>()? {
                    match key {
                        MetaKey::Name => m.name = map.next_value()?,
                        MetaKey::Namespace => m.namespace = map.next_value()?,
                        MetaKey::Uid => m.uid = map.next_value()?,
                        MetaKey::ResourceVersion => m.resource_version = map.next_value()?,
                        MetaKey::Labels => {
                            m.labels = map
                                .next_value::<Option<Filtered<LabelFilter>>>()?
                                .and_then(Filtered::into_map);
                        }
                        MetaKey::Annotations => {
                            m.annotations = map
                                .next_value::<Option<Filtered<AnnotationFilter>>>()?
                                .and_then(Filtered::into_map);
                        }
                        MetaKey::OwnerReferences => {
                            m.owner_references =
                                map.next_value::<Option<ControllerRefs>>()?.and_then(|r| r.0);
                        }
                        MetaKey::DeletionTimestamp => {
                            m.deletion_timestamp = map.next_value::<LenientTime>()?.0.map(Time);
                        }
                        MetaKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(SlimMeta(m))
            }
        }
        d.deserialize_map(V)
    }
}

/// Decides which keys of a string map are kept.
trait KeyFilter {
    fn keep(key: &str) -> bool;
}

struct LabelFilter;
impl KeyFilter for LabelFilter {
    fn keep(key: &str) -> bool {
        keep_label(key)
    }
}

struct AnnotationFilter;
impl KeyFilter for AnnotationFilter {
    fn keep(key: &str) -> bool {
        keep_annotation(key)
    }
}

/// A string map decoded through `F`: kept keys and values are copied, the rest are skipped unallocated.
struct Filtered<F>(BTreeMap<String, String>, PhantomData<F>);

impl<F> Filtered<F> {
    fn into_map(self) -> Option<BTreeMap<String, String>> {
        (!self.0.is_empty()).then_some(self.0)
    }
}

/// A map key that is only copied when `F` keeps it.
struct FilteredKey<F>(Option<String>, PhantomData<F>);

impl<'de, F: KeyFilter> Deserialize<'de> for FilteredKey<F> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<F>(PhantomData<F>);
        impl<'de, F: KeyFilter> Visitor<'de> for V<F> {
            type Value = FilteredKey<F>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(FilteredKey(F::keep(s).then(|| s.to_owned()), PhantomData))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

impl<'de, F: KeyFilter> Deserialize<'de> for Filtered<F> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<F>(PhantomData<F>);
        impl<'de, F: KeyFilter> Visitor<'de> for V<F> {
            type Value = Filtered<F>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(FilteredKey(key, _)) = map.next_key::<FilteredKey<F>>()? {
                    match key {
                        Some(k) => {
                            if let Some(v) = map.next_value::<Option<String>>()? {
                                out.insert(k, v);
                            }
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Filtered(out, PhantomData))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// `ownerReferences` reduced to the controller reference.
struct ControllerRefs(Option<Vec<OwnerReference>>);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OwnerRefWire {
    #[serde(default, deserialize_with = "nullable")]
    api_version: String,
    #[serde(default, deserialize_with = "nullable")]
    kind: String,
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    uid: String,
    #[serde(default)]
    controller: Option<bool>,
}

impl<'de> Deserialize<'de> for ControllerRefs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ControllerRefs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of owner references")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut found = None;
                while let Some(r) = seq.next_element::<OwnerRefWire>()? {
                    if r.controller == Some(true) && found.is_none() {
                        found = Some(OwnerReference {
                            api_version: r.api_version,
                            kind: r.kind,
                            name: r.name,
                            uid: r.uid,
                            controller: Some(true),
                            block_owner_deletion: None,
                        });
                    }
                }
                Ok(ControllerRefs(found.map(|r| vec![r])))
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn resource_identity() {
        assert_eq!(PodWire::kind(&()), "Pod");
        assert_eq!(PodWire::api_version(&()), "v1");
        assert_eq!(PodWire::url_path(&(), Some("ns")), "/api/v1/namespaces/ns/pods");
        assert_eq!(PodWire::url_path(&(), None), "/api/v1/pods");
    }

    #[test]
    fn filters_and_nulls() {
        let p = decode_pod(
            br#"{"kind":"Pod","metadata":{"name":"a","namespace":"n","uid":"u","labels":{"app":"x",
            "pod-template-hash":"h","autoscaling.datadoghq.com/x":"1"},"annotations":{"a":"b",
            "autoscaling.datadoghq.com/rec-id":"r"},"ownerReferences":[{"apiVersion":"v1","kind":"X",
            "name":"other","uid":"1"},{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"rs","uid":"2",
            "controller":true}],"managedFields":[{"manager":"m","fieldsV1":{"f:x":{}}}],"bogus":null},
            "spec":{"nodeName":null,"containers":null},"status":{"conditions":null,"phase":"Weird",
            "startTime":"not a time","containerStatuses":[{"name":"c","restartCount":-3}]}}"#,
        )
        .unwrap();
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels.len(), 2);
        assert_eq!(p.label("pod-template-hash"), Some("h"));
        assert_eq!(p.annotation("autoscaling.datadoghq.com/rec-id"), Some("r"));
        assert_eq!(p.metadata.annotations.as_ref().unwrap().len(), 1);
        let refs = p.metadata.owner_references.as_ref().unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(p.controller().unwrap().name, "rs");
        assert_eq!(p.status.phase, Some(PodPhase::Unknown));
        assert_eq!(p.status.start_time, None);
        assert_eq!(p.status.container_statuses[0].restart_count, 0);
        assert!(p.spec.containers.is_empty());
    }

    #[test]
    fn quantity_leniency() {
        let p = decode_pod(
            br#"{"spec":{"containers":[{"name":"c","resources":{"requests":{"cpu":"abc","memory":2,
            "nvidia.com/gpu":"1"},"limits":{"cpu":{"x":1},"memory":[1]}}}]}}"#,
        )
        .unwrap();
        let r = p.spec.containers[0].resources;
        assert_eq!(r.requests.cpu_millis, None);
        assert_eq!(r.requests.memory_bytes, Some(2));
        assert_eq!(r.limits, ResourceAmounts::default());
    }
}
