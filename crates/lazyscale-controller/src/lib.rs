//! The DatadogPodAutoscaler controller of lazyscale: it makes DPAs scale their targets.
//!
//! For every DPA the leader replica, every recommendation period (30 s) and on every change:
//! checks the per-cluster limit and validates the spec ([`validate`]); resolves the target and
//! reads its scale subresource ([`scale`]); computes a local horizontal recommendation from
//! metrics.k8s.io PodMetrics against the container requests of the target's pods and runs the
//! scaling policy (bounds, stabilization, rules, fallback direction, Preview mode), both with the
//! horizontal engine of `lazyscale-core` ([`horizontal`] gathers its inputs: pods from a
//! [`PodSource`], metrics from [`usage`]); writes the new replica count through `/scale` with a
//! `SuccessfulScale` or `FailedScale` event; and applies the status fields it owns when they changed
//! ([`status`]). Each reconcile leaves an [`explain::Explanation`] that [`Handle::explain`] renders
//! from the engine's steps.
//!
//! The agent wires it like this:
//!
//! ```no_run
//! # async fn wire(client: kube::Client, pods: std::sync::Arc<dyn lazyscale_controller::PodSource>) {
//! use lazyscale_controller::{Config, Controller, lease};
//! let stop = tokio_util::sync::CancellationToken::new();
//! let (leader, _lease_task) = lease::spawn(
//!     client.clone(),
//!     lease::LeaseConfig::new("lazyscale", lazyscale_api::consts::LEASE_NAME, "pod-0"),
//!     stop.clone(),
//! );
//! let controller = Controller::new(client, Config::default(), pods);
//! let handle = controller.handle(); // handle.explain("ns", "name") -> Option<String>
//! controller.run(leader, stop).await;
//! # }
//! ```
//!
//! Decisions wait for consistent inputs and are dropped rather than written late ([`inputs`]).
//!
//! The pure parts ([`horizontal`], [`inputs`], [`status`], [`validate`], [`explain`]) have no I/O and are
//! tested on their own.

mod controller;
pub mod events;
pub mod explain;
pub mod horizontal;
pub mod inputs;
pub mod lease;
pub mod pods;
pub mod profiles;
mod reconcile;
pub mod scale;
pub mod status;
pub mod usage;
pub mod validate;

pub use controller::{
    Config, Controller, CounterSnapshot, Counters, DpaChange, DpaSource, Handle, Key, PassReport, StateBytes,
};
pub use pods::{PodSample, PodSource, StaticPods, WatchedPods};
pub use reconcile::Error as ReconcileError;
