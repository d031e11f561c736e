//! `cargo xtask helm`: helm built from Go modules (`testenv/helm`), and the chart checks `cargo xtask
//! test` runs: `helm lint` and `helm template` of `deploy/helm/lazyscale`, with the defaults and with
//! every optional part switched on. The server-side dry run of the rendered manifests is an integration
//! test (`crates/lazyscale/tests/install.rs`) on the real control plane.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use lazyscale_testenv::helm;
use lazyscale_testenv::recipe::BuildOutcome;

use crate::workspace_root;

/// The chart's folder.
pub fn chart_dir() -> PathBuf {
    workspace_root().join("deploy/helm/lazyscale")
}

/// Value sets every check renders: the defaults, and every optional part on.
pub const VALUE_SETS: &[&[&str]] = &[
    &[],
    &[
        "--set",
        "serviceMonitor.enabled=true,prometheusRule.enabled=true,dashboard.enabled=true,webhook.certificate.source=certManager",
    ],
    &[
        "--set",
        "crds.install=false,webhook.enabled=false,podDisruptionBudget.enabled=false",
    ],
];

/// Builds helm when its recipe changed; prints the time it took and the version.
pub fn build() -> Result<PathBuf> {
    let t = Instant::now();
    let (bin, outcome) = helm::ensure_built(&workspace_root().join("testenv"))
        .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    eprintln!(
        "helm {} in {:.1}s: key {} ({})",
        match outcome {
            BuildOutcome::Cached => "up to date",
            BuildOutcome::Built => "built",
        },
        t.elapsed().as_secs_f64(),
        helm::key(),
        helm::version().unwrap_or_default(),
    );
    Ok(bin)
}

fn helm_ok(args: &[&str]) -> Result<String> {
    let out = helm::run(args).map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    if !out.success {
        bail!("helm {} failed:\n{}", args.join(" "), out.stderr);
    }
    Ok(out.stdout)
}

/// `helm lint --strict` and `helm template` of the chart for every value set.
pub fn check() -> Result<()> {
    build()?;
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    for values in VALUE_SETS {
        let mut lint = vec!["lint", "--strict", &chart];
        lint.extend_from_slice(values);
        helm_ok(&lint)?;
        let mut template = vec!["template", "lazyscale", &chart, "--namespace", "lazyscale"];
        template.extend_from_slice(values);
        let rendered = helm_ok(&template)?;
        let objects = rendered.lines().filter(|l| l.starts_with("kind: ")).count();
        eprintln!(
            "helm lint and template ({}): {objects} objects",
            if values.is_empty() {
                "defaults".to_string()
            } else {
                values.join(" ")
            }
        );
    }
    Ok(())
}

/// `cargo xtask helm ARGS`: the built helm with any arguments.
pub fn passthrough(args: &[String]) -> Result<()> {
    build()?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = helm::run(&args).map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    if !out.success {
        bail!("helm failed");
    }
    Ok(())
}
