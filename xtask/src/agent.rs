//! The agent binary the demo and the benchmarks run: a release build, started through the test support's
//! process harness ([`lazyscale_testenv::agent`], the same one the end-to-end tests use).

use std::path::PathBuf;

use anyhow::Result;
pub use lazyscale_testenv::agent::{Agent, AgentOptions, reset_peak};

/// Builds the agent in release mode and returns the binary's path.
pub fn build_agent() -> Result<PathBuf> {
    let root = crate::workspace_root();
    crate::run(crate::cargo().args(["build", "--release", "--quiet", "-p", "lazyscale"]))?;
    Ok(root.join("target/release/lazyscale"))
}
