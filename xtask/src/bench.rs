//! `cargo xtask bench ...`: benchmarks that print one JSON object.

use anyhow::Result;

/// Benchmark options.
#[derive(clap::Args)]
pub struct Args {}

/// Runs a benchmark.
pub fn run(_args: Args) -> Result<()> {
    anyhow::bail!("no benchmark is wired yet")
}
