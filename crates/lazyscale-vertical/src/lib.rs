//! Vertical autoscaling for lazyscale, the pure half: everything here is computation without I/O, so it is
//! tested without a cluster or a socket, and the agent binary wires it to the pod cache, the metrics API,
//! the DPA status writer and the admission webhook.
//!
//! - [`histogram`]: decaying histograms with exponential buckets (fixed size, ~1 KB each), percentiles,
//!   merging and compact serializable checkpoints.
//! - [`recommender`]: per (workload, container) CPU samples and memory peaks, turned into a target and
//!   lower/upper bounds per resource ([`Recommender`], tuned by [`Config`]), with OOM bump-up, minimums,
//!   forgetting and checkpoints.
//! - [`adaptive`]: the adaptive estimation method (exact recent memory peaks with a spread-sized margin
//!   and a trend, a high CPU percentile without margin, faster reaction to a step down).
//! - [`constraints`]: the DPA's `constraints.containers[]` and `options.burstable` applied to desired
//!   resources, the resources hash (version / rec-id), and `status.vertical.target` with the
//!   `VerticalAbleToRecommend` and `VerticalScalingLimited` conditions.
//! - [`mutate`]: the pod admission decision: AdmissionReview bytes and a lookup of autoscalers in, an
//!   [`Outcome`] with an RFC 6902 JSON patch out; never panics.
//! - [`apply`]: what reaches running pods: the mode matrix, the H+V memory-only default, the CPU coupling
//!   rule, the update gate (when a new target replaces the one in force), a container's resources under
//!   a plan and the in-place resize body.
//! - [`oom`]: the OOM ratchet of memory limits (raised by the bump ratio on each OOM kill, also under
//!   `RequestsOnly`).
//! - [`rollout`]: when to trigger, wait for or re-trigger a rollout of the workload.
//! - [`resize`]: the in-place path: pods to resize or evict under the disruption budget and the eviction
//!   rate limit, the rollout fallback, infeasible attempts.
//! - [`quantity`]: exact parsing and formatting of Kubernetes quantities (`lazyscale-api`'s).

pub mod adaptive;
pub mod apply;
pub mod constraints;
pub mod histogram;
pub mod mutate;
pub mod oom;
pub use lazyscale_api::quantity;
pub mod recommender;
pub mod resize;
pub mod rollout;

pub use constraints::{
    ConditionInput, ConstraintError, ContainerPlan, DesiredContainer, LimitAction, Resource, Resources,
    VerticalPlan, VerticalTargetOutcome, apply_constraints, dpa_vertical_target, dpa_vertical_target_gated,
    resources_hash, vertical_target,
};
pub use histogram::{BucketLayout, DecayingHistogram, HistogramCheckpoint, HistogramError};
pub use mutate::{
    Autoscaler, AutoscalerIndex, AutoscalerLookup, MutateError, Outcome, TargetRef, VerticalPatch, mutate,
    mutate_pod, resolve_owner,
};
pub use recommender::{
    CheckpointError, Config, ConfigError, ContainerRecommendation, Estimate, EstimationMethod, Recommender,
    WorkloadCheckpoint, WorkloadKey, WorkloadRecommendation,
};
