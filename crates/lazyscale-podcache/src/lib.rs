//! The compact pod cache of lazyscale.
//!
//! The autoscaler needs, for every autoscaled workload, its pods' readiness, resources, resize state and
//! annotations. A cluster-wide reflector of k8s-openapi `Pod`s costs 30–45 KB per pod; this crate keeps
//! about a hundred bytes per pod, and only for the pods of workloads that are actually autoscaled:
//!
//! - [`wire`] decodes list and watch JSON straight into a slim serde type, [`wire::PodWire`], skipping
//!   `managedFields` and unwanted labels and annotations without allocating, parsing quantities into
//!   integers ([`quantity`]). It implements `kube::Resource`, so kube's watcher can watch it.
//! - [`slim`] turns it into the cached [`slim::SlimPod`] (interned strings and shared owner/container
//!   records, see [`intern`]) and resolves the owning workload ([`slim::WorkloadKey`]).
//! - [`store`] holds the pods of an interest set of workloads, indexed by uid and by workload, with
//!   mark-and-sweep relists and scoped backfills.
//! - [`plan`] decides which pod watches an interest set needs: scoped to the autoscaled workloads' namespaces
//!   and selectors while they are few, one cluster-wide watch once that is cheaper.
//! - [`watch`] runs the lazily started collection ([`watch::PodCollection`]) that feeds the store.

pub mod intern;
pub use lazyscale_api::quantity;
pub mod plan;
pub mod slim;
pub mod store;
pub mod watch;
pub mod wire;

pub use slim::{SlimPod, WorkloadKey, WorkloadKind};
pub use store::{Interest, PodStore};
pub use watch::{Config, PodCollection};
pub use wire::PodWire;
