//! lazyscale-sim: load for a real cluster. The control plane (kube-controller-manager's workload
//! controllers and garbage collector, kube-scheduler, and kwok for nodes and the pod lifecycle) runs
//! the workloads; the simulator plays only what no real component does here:
//!
//! - [`kubelet`]: the outcomes of in-place resizes that a real kubelet decides (applied,
//!   `PodResizeInProgress` with or without `Error`, or `PodResizePending` Deferred/Infeasible) and OOM
//!   kills from simulated memory usage;
//! - [`metrics`]: metrics.k8s.io PodMetrics/NodeMetrics written every interval from per-workload
//!   [`load`] profiles;
//! - [`scenario`]: YAML scenarios (namespaces, workloads, load profiles, timed events);
//! - [`bulk`]: fast population of a cluster with many realistic pods for benchmarks.
//!
//! Start it in-process with [`Simulator::start`]; play a scenario with [`scenario::run`].

pub mod bulk;
mod cache;
pub mod hash;
pub mod kubelet;
pub mod load;
pub mod metrics;
pub mod objects;
mod queue;
pub mod scenario;
mod sim;
pub mod units;

pub use sim::{ResizeMode, SimConfig, Simulator, WorkloadKind, WorkloadRef, WorkloadSettings};

/// Label on objects created by [`bulk`]; the simulator ignores them unless
/// [`SimConfig::include_bulk`] is set.
pub const BULK_LABEL: &str = "sim.lazyscale.io/bulk";
/// Pod (template) annotation overriding the workload's [`ResizeMode`]:
/// `immediate`, `in-progress`, `deferred`, `infeasible` or `error`.
pub const RESIZE_ANNOTATION: &str = "sim.lazyscale.io/resize";
/// Pod (template) annotation delaying Running/Ready (a Go duration such as `2s`); kwok reads it (see
/// the test environment's kwok stages).
pub const READY_DELAY_ANNOTATION: &str = "sim.lazyscale.io/ready-delay";
/// The annotation by which kwok manages a node.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// Pod (template) annotation with the duration of an `in-progress` resize (e.g. `5s`).
pub const RESIZE_DURATION_ANNOTATION: &str = "sim.lazyscale.io/resize-duration";

/// Errors of the simulator library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A watch failed.
    #[error("watch: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),
    /// A scenario file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A scenario file is not valid: names the file, line, column and field.
    #[error("{path}:{line}:{column}: {message}")]
    Scenario {
        /// The file.
        path: String,
        /// 1-based line (0 when unknown).
        line: u64,
        /// 1-based column (0 when unknown).
        column: u64,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A scenario is well-formed but inconsistent (e.g. an event names an unknown workload).
    #[error("scenario {path}: {message}")]
    Invalid {
        /// The file (or `<string>`).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An object lacks a field the simulator needs (e.g. metadata.uid).
    #[error("{0}")]
    Missing(String),
    /// JSON (de)serialization.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Discovery could not resolve a manifest's kind.
    #[error("unknown kind {0}")]
    UnknownKind(String),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
