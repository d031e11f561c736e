//! `cargo xtask bench quality`: recommendation quality of lazyscale's vertical recommender against the
//! VPA's algorithm and the DPA's published method on replayed usage traces (`lazyscale-quality`). Runs
//! the crate's binary (release build by default) with the arguments given after `--`; it prints one JSON
//! object and writes it with an HTML chart per trace under `target/quality/`.
//!
//! `--horizontal` also builds the agent (release) and the control plane, and adds the comparison of
//! lazyscale's horizontal autoscaling with kube-controller-manager's HPA (`horizontal` in the JSON).

use std::process::Command;

use anyhow::{Result, bail};

/// Options of `bench quality`.
#[derive(clap::Args)]
pub struct QualityArgs {
    /// Use the dev build instead of the release build (faster to build, slower to run).
    #[arg(long)]
    dev: bool,
    /// Also compare lazyscale's horizontal autoscaling with the real HPA on the test control plane
    /// (a few minutes).
    #[arg(long)]
    horizontal: bool,
    /// Arguments for `lazyscale-quality` (e.g. `-- --days 7 --trace mine.csv`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

/// Runs the quality benchmark.
pub fn run(args: QualityArgs) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut extra = Vec::new();
    if args.horizontal {
        crate::testenv_build()?;
        let agent = crate::agent::build_agent()?;
        extra.push("--horizontal".to_string());
        extra.push("--agent".to_string());
        extra.push(agent.display().to_string());
    }
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).arg("run");
    if !args.dev {
        cmd.arg("--release");
    }
    cmd.args(["-q", "-p", "lazyscale-quality", "--"])
        .args(&extra)
        .args(&args.rest);
    let status = cmd.status()?;
    if !status.success() {
        bail!("lazyscale-quality failed: {status}");
    }
    Ok(())
}
