//! The pure core of lazyscale: decisions without I/O, so every rule is tested without a cluster.
//!
//! Nothing here knows about `kube` or `k8s-openapi`: inputs and outputs are plain Rust types, and the
//! agent converts its watched objects into them. The modules:
//!
//! - [`demand`]: the set of autoscalers (DatadogPodAutoscalers and profile-labelled workloads and
//!   namespaces) whose presence opens the lazy-stack gate, and the namespaces the webhook must see.
//! - [`gate`]: the lazy-stack gate, a pure state machine ([`gate::Machine`]: closed, open, draining
//!   during a grace period, shutting down) and an async handle around it ([`gate::Gate`]) that
//!   dependants wait on.
//! - [`horizontal`]: the local horizontal recommender (utilization watermarks, Kubernetes HPA pod
//!   handling) and the horizontal scaling policy (bounds, stabilization windows, scaling rules,
//!   preview mode) with a step-by-step explanation of every decision.

pub mod demand;
pub mod gate;
pub mod horizontal;
