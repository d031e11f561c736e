//! lazyscale: a Kubernetes workload autoscaler for the DatadogPodAutoscaler API whose autoscaling stack
//! (pod cache, controller, webhook patcher) starts only when the first autoscaler exists and stops when
//! the last one is gone.
//!
//! The library holds the agent's parts; `main.rs` is the command line around them.

pub mod admin;
pub mod cert;
pub mod config;
pub mod demand;
pub mod horizontal;
pub mod index;
pub mod memory;
pub mod stack;
pub mod telemetry;
pub mod vertical;
pub mod vertical_apply;
pub mod webhook;
