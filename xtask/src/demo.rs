//! `cargo xtask demo`: the lazy stack at work on a local test API server.

use anyhow::Result;

/// Demo options.
#[derive(clap::Args)]
pub struct Args {}

/// Runs the demo.
pub fn run(_args: Args) -> Result<()> {
    anyhow::bail!("the demo is not wired yet")
}
