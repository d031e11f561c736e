//! `cargo xtask`: the project's own tasks — the test environment, the full test run, the demo and the
//! benchmarks. Everything a fresh machine needs is installed or built from here.

mod agent;
mod bench;
mod bench_vertical;
mod cluster;
mod demo;
mod faults;
mod fuzz;
mod helm;
mod image;
mod profile_bench;
mod reconcile_bench;
mod supply;
mod webhook_bench;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use lazyscale_testenv::recipe::{self, BuildOutcome};
use lazyscale_testenv::{Server, ServerOptions};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "lazyscale project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The test environment: a real Kubernetes control plane on loopback.
    Testenv {
        #[command(subcommand)]
        cmd: TestenvCmd,
    },
    /// Everything a fresh machine needs, then fmt check, clippy -D warnings, and all tests.
    Test {
        /// Skip fmt and clippy (quicker local runs).
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The main demo: test environment, simulated cluster, the agent, the lazy stack at work.
    Demo(demo::Args),
    /// Benchmarks (JSON on stdout).
    Bench(bench::Args),
    /// The libFuzzer targets of `fuzz/` (cargo-fuzz, installed pinned); JSON on stdout.
    Fuzz(fuzz::Args),
    /// The dependency check of `cargo xtask test`: cargo-deny licences, bans and sources (offline).
    Deny,
    /// The agent's container image without an engine: a static binary in an OCI image layout
    /// (target/image/oci) and an oci-archive tarball; JSON on stdout. `--check` validates the layout.
    Image(image::Args),
    /// The fault suite (and with --soak-seconds the soak) on a private control plane (JSON on stdout).
    Faults(faults::Args),
    /// helm built from Go modules (`testenv/helm`): `cargo xtask helm -- template x deploy/helm/lazyscale`;
    /// without arguments, the chart checks of `cargo xtask test` (lint and template).
    Helm {
        /// Arguments for helm.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum TestenvCmd {
    /// Fetch and build everything once into the cache folder (no-op when the recipe is unchanged).
    Build,
    /// Start the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok) in
    /// the background; prints the kubeconfig.
    Up,
    /// Stop exactly what `up` started.
    Down,
    /// Print `export KUBECONFIG=...` for the running server.
    Env,
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The folder of the server started by `testenv up`.
fn up_dir() -> PathBuf {
    workspace_root().join(".testenv")
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Testenv { cmd } => match cmd {
            TestenvCmd::Build => testenv_build().and_then(|_| helm::build()).map(|_| ()),
            TestenvCmd::Up => testenv_up(),
            TestenvCmd::Down => {
                let n = Server::stop_recorded(&up_dir())?;
                println!("stopped {n} process(es)");
                Ok(())
            }
            TestenvCmd::Env => {
                let kc = up_dir().join("kubeconfig");
                if !up_dir().join("pids").exists() {
                    bail!("no test environment is up; run `cargo xtask testenv up`");
                }
                println!("export KUBECONFIG={}", kc.display());
                Ok(())
            }
        },
        Cmd::Test { no_lint, args } => test(no_lint, &args),
        Cmd::Demo(args) => demo::run(args),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Fuzz(args) => fuzz::main(args),
        Cmd::Deny => supply::deny(),
        Cmd::Faults(args) => faults::run(args),
        Cmd::Image(args) => image::run(args),
        Cmd::Helm { args } if args.is_empty() => helm::check(),
        Cmd::Helm { args } => helm::passthrough(&args),
    }
}

/// Builds the test environment when the recipe changed; prints the time it took.
pub fn testenv_build() -> Result<recipe::Binaries> {
    let t = Instant::now();
    preflight()?;
    let (bins, outcome) = recipe::ensure_built(&workspace_root().join("testenv"))
        .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    let versions = std::fs::read_to_string(&bins.versions).unwrap_or_default();
    eprintln!(
        "testenv {} in {:.1}s: key {} ({})",
        match outcome {
            BuildOutcome::Cached => "up to date",
            BuildOutcome::Built => "built",
        },
        t.elapsed().as_secs_f64(),
        recipe::key(),
        versions.lines().collect::<Vec<_>>().join("; "),
    );
    Ok(bins)
}

/// What the build needs from the machine: a Go toolchain (1.26 or newer; the build script checks the
/// version) and bash.
fn preflight() -> Result<()> {
    let go = recipe::go_command();
    if recipe::go_version() == "none" {
        bail!(
            "the test control plane is built from Go modules and needs Go >= 1.26: no go command at {} \
             (install Go, put it on PATH or set GO=/path/to/go)",
            go.display()
        );
    }
    Ok(())
}

fn testenv_up() -> Result<()> {
    testenv_build()?;
    let dir = up_dir();
    if Server::stop_recorded(&dir)? > 0 {
        eprintln!("stopped the previous test environment");
    }
    let t = Instant::now();
    let server = Server::start(ServerOptions {
        dir: Some(dir.clone()),
        detached: true,
        ..ServerOptions::default()
    })
    .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    eprintln!(
        "test control plane ready in {:.2}s on https://127.0.0.1:{} (logs in {})",
        t.elapsed().as_secs_f64(),
        server.port(),
        dir.display()
    );
    println!("export KUBECONFIG={}", server.kubeconfig_path().display());
    server.detach();
    Ok(())
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

fn test(no_lint: bool, extra: &[String]) -> Result<()> {
    let t = Instant::now();
    // The control plane and helm are Go builds: minutes on a cold Go cache, a no-op on a warm one. The
    // Rust side (fmt, clippy, deny, compiling the tests) needs neither, so the two run side by side: each
    // has single-threaded stretches (Go's links, rustc's largest crates) the other fills. Both finish
    // before any test starts, and an early failure still waits for the Go build (nothing left running).
    let go = std::thread::spawn(|| -> Result<()> {
        testenv_build()?;
        helm::build()?;
        Ok(())
    });
    let rust = compile_and_lint(no_lint);
    let go = go
        .join()
        .map_err(|_| anyhow::anyhow!("the testenv build thread panicked"))?;
    rust?;
    go?;
    eprintln!(
        "== test environment and tests compiled in {:.0}s",
        t.elapsed().as_secs_f64()
    );
    eprintln!("== helm lint and helm template (deploy/helm/lazyscale)");
    helm::check()?;
    eprintln!(
        "== cargo test (unit, property, integration on the test control plane, CRD drift, chart dry run)"
    );
    let mut c = cargo();
    c.args(["test", "--workspace", "--locked"]);
    if !extra.is_empty() {
        c.arg("--").args(extra);
    }
    run(&mut c)?;
    eprintln!(
        "== fault suite, short (API server killed, 410 Gone, connections cut: nothing lost or duplicated), then a \
         short soak on the same control plane (30 gate cycles: RSS, heap, watches, tasks must not grow)"
    );
    faults::run(faults::Args::short())?;
    eprintln!("== fuzz smoke (every target for a few seconds)");
    fuzz::smoke()?;
    eprintln!("all checks passed in {:.0}s", t.elapsed().as_secs_f64());
    Ok(())
}

/// The Rust half of `cargo xtask test` before any test runs: fmt, clippy and the dependency check
/// (unless `no_lint`), then every test binary compiled (`cargo test --no-run`).
fn compile_and_lint(no_lint: bool) -> Result<()> {
    if !no_lint {
        eprintln!("== cargo fmt --check");
        run(cargo().args(["fmt", "--all", "--check"]))?;
        eprintln!("== cargo clippy -D warnings");
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]))?;
        eprintln!("== cargo deny (licences, bans, sources)");
        supply::deny()?;
    }
    eprintln!("== cargo test --no-run (compile every test binary)");
    run(cargo().args(["test", "--workspace", "--locked", "--no-run"]))
}
