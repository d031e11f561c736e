//! Recommendation quality for lazyscale's vertical recommender: seeded synthetic usage traces (or a
//! user's exported metrics in the documented CSV format), a pure replay harness that runs them minute by
//! minute through lazyscale's real recommender, the VPA's algorithm and the DPA's published method under
//! one update policy and one node model, and a report (JSON, plus an HTML chart per trace).
//!
//! - [`trace`]: the trace type and its CSV format;
//! - [`generate`]: the seeded generators and the standard trace set;
//! - [`vpa`], [`dpa`]: the two baselines;
//! - [`methods`]: every recommender behind [`replay::Method`];
//! - [`replay`]: update policy, node model, scores;
//! - [`report`]: the JSON report, the summary and the charts;
//! - [`horizontal`]: lazyscale's horizontal autoscaling against the real HPA on the test control plane
//!   (the only part that needs a cluster; `--horizontal`).
//!
//! The vertical replay is pure: no cluster, no I/O except what the binary does with files.

pub mod dpa;
pub mod generate;
pub mod horizontal;
pub mod methods;
pub mod replay;
pub mod report;
pub mod trace;
pub mod vpa;

use lazyscale_vertical::Config;
use lazyscale_vertical::apply::UpdateGate;

use crate::methods::{DpaPublished, Lazyscale, VpaMethod};
use crate::replay::{Method, NodeModel, Policy, Replay, replay};
use crate::report::Row;
use crate::trace::Trace;

/// Name of lazyscale with its VPA-compatible configuration in the report.
pub const LAZYSCALE_VPA_COMPATIBLE: &str = "lazyscale_vpa_compatible";

/// The recommenders of one run: lazyscale with `lazyscale` behind `gate` (reported as
/// [`report::LAZYSCALE`]), the same without a gate ([`report::LAZYSCALE_UNGATED`]; only when `gate` is
/// set), lazyscale with the VPA-compatible defaults behind `gate`, the VPA and the DPA method.
pub fn methods_gated(
    lazyscale: &Config,
    gate: Option<UpdateGate>,
) -> Result<Vec<Box<dyn Method>>, lazyscale_vertical::ConfigError> {
    let mut out: Vec<Box<dyn Method>> = vec![Box::new(Lazyscale::with_gate(
        report::LAZYSCALE,
        lazyscale.clone(),
        gate,
    )?)];
    if gate.is_some() {
        out.push(Box::new(Lazyscale::with_gate(
            report::LAZYSCALE_UNGATED,
            lazyscale.clone(),
            None,
        )?));
    }
    out.push(Box::new(Lazyscale::with_gate(
        LAZYSCALE_VPA_COMPATIBLE,
        Config::vpa_compatible(),
        gate,
    )?));
    out.push(Box::new(VpaMethod::new()));
    out.push(Box::new(DpaPublished::new()));
    Ok(out)
}

/// [`methods_gated`] with the agent's default update gate.
pub fn methods(lazyscale: &Config) -> Result<Vec<Box<dyn Method>>, lazyscale_vertical::ConfigError> {
    methods_gated(lazyscale, Some(UpdateGate::default()))
}

/// Replays `trace` through fresh instances of every recommender ([`methods`]); returns the replays by
/// name.
pub fn run_trace(
    trace: &Trace,
    lazyscale: &Config,
    policy: &Policy,
    node: &NodeModel,
) -> Result<Vec<(String, Replay)>, lazyscale_vertical::ConfigError> {
    run_trace_gated(trace, lazyscale, Some(UpdateGate::default()), policy, node)
}

/// [`run_trace`] with lazyscale behind `gate` ([`methods_gated`]).
pub fn run_trace_gated(
    trace: &Trace,
    lazyscale: &Config,
    gate: Option<UpdateGate>,
    policy: &Policy,
    node: &NodeModel,
) -> Result<Vec<(String, Replay)>, lazyscale_vertical::ConfigError> {
    Ok(methods_gated(lazyscale, gate)?
        .into_iter()
        .map(|mut m| {
            let r = replay(trace, m.as_mut(), policy, node);
            (m.name(), r)
        })
        .collect())
}

/// Report rows of `replays` on `trace`.
pub fn rows(trace: &Trace, replays: &[(String, Replay)]) -> Vec<Row> {
    replays
        .iter()
        .map(|(name, r)| Row {
            trace: trace.name.clone(),
            recommender: name.clone(),
            score: r.score.clone(),
        })
        .collect()
}
