//! `cargo xtask fuzz`: the libFuzzer targets of `fuzz/` (a Cargo project of its own, see
//! `fuzz/README.md`), built with cargo-fuzz and run one after the other, each from a working copy of its
//! committed corpus. Prints one JSON object: `{"targets":[{"name","execs","crashes","seconds"}]}`.
//!
//! Only a stable toolchain is installed, so the build runs with `RUSTC_BOOTSTRAP=1` (cargo-fuzz passes
//! `-Z` flags to rustc for the coverage instrumentation) and without a sanitizer by default: every
//! crate of the workspace denies `unsafe`, and a sanitizer halves the executions per second.
//! `cargo xtask test` runs [`smoke`]: a few seconds per target.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::supply::install_tool;
use crate::{run, workspace_root};

/// cargo-fuzz, pinned.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The targets, in the order they run (the `[[bin]]`s of `fuzz/Cargo.toml`).
pub const TARGETS: &[&str] = &[
    "pod_decode",
    "admission_fast",
    "admission_full",
    "dpa",
    "cluster_profile",
    "quantity",
    "scenario",
];

/// The release profile of the smoke build, as profile environment variables: no optimisation, no debug
/// lines (debug assertions stay on: `--debug-assertions`).
const SMOKE_PROFILE: &[(&str, &str)] = &[
    ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0"),
    ("CARGO_PROFILE_RELEASE_DEBUG", "false"),
];

/// Seconds per target in `cargo xtask test`.
const SMOKE_SECONDS: u64 = 3;

/// Longest input libFuzzer generates: larger than any seed, small enough to keep runs fast.
const MAX_LEN: usize = 65_536;

/// Arguments of `cargo xtask fuzz`.
#[derive(Parser, Debug, Clone)]
pub struct Args {
    /// Run only these targets (repeatable; default all).
    #[arg(long = "target", value_name = "T")]
    pub targets: Vec<String>,
    /// Executions per target (libFuzzer `-runs`).
    #[arg(long, conflicts_with = "seconds")]
    pub runs: Option<u64>,
    /// Seconds per target (libFuzzer `-max_total_time`; default 10 without `--runs`).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Sanitizer for the build: `none` (default) or `address`.
    #[arg(long, default_value = "none")]
    pub sanitizer: String,
}

/// One target's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetRun {
    /// Target name.
    pub name: String,
    /// Inputs executed.
    pub execs: u64,
    /// Crashing inputs found (libFuzzer stops a target at the first one).
    pub crashes: usize,
    /// Wall time of the run.
    pub seconds: f64,
    /// Where the crashing inputs were written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
}

fn fuzz_dir() -> PathBuf {
    workspace_root().join("fuzz")
}

/// Build output of the fuzz project, under the workspace's `target/` (ignored by git).
fn target_dir() -> PathBuf {
    workspace_root().join("target/fuzz")
}

/// `cargo xtask fuzz`.
pub fn main(args: Args) -> Result<()> {
    let targets = select(&args.targets)?;
    let limit = match (args.runs, args.seconds) {
        (Some(n), _) => Limit::Runs(n),
        (None, Some(s)) => Limit::Seconds(s),
        (None, None) => Limit::Seconds(10),
    };
    let runs = fuzz(&targets, limit, &args.sanitizer, false)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({ "targets": runs }))?
    );
    let crashed: Vec<&str> = runs
        .iter()
        .filter(|r| r.crashes > 0)
        .map(|r| r.name.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!("crashes in {}", crashed.join(", "));
    }
    Ok(())
}

/// The short run of `cargo xtask test`: every target for a few seconds; fails on a crash.
pub fn smoke() -> Result<()> {
    let t = Instant::now();
    let targets: Vec<String> = TARGETS.iter().map(|s| (*s).to_owned()).collect();
    let runs = fuzz(&targets, Limit::Seconds(SMOKE_SECONDS), "none", true)?;
    for r in &runs {
        eprintln!(
            "fuzz {}: {} execs in {:.1}s, {} crash(es)",
            r.name, r.execs, r.seconds, r.crashes
        );
    }
    eprintln!("fuzz smoke in {:.0}s", t.elapsed().as_secs_f64());
    let crashed: Vec<String> = runs
        .iter()
        .filter(|r| r.crashes > 0)
        .map(|r| format!("{} ({})", r.name, r.artifacts.join(", ")))
        .collect();
    if !crashed.is_empty() {
        bail!("fuzz crashes: {}", crashed.join("; "));
    }
    Ok(())
}

fn select(wanted: &[String]) -> Result<Vec<String>> {
    if wanted.is_empty() {
        return Ok(TARGETS.iter().map(|s| (*s).to_owned()).collect());
    }
    for t in wanted {
        if !TARGETS.contains(&t.as_str()) {
            bail!("unknown fuzz target {t:?} (targets: {})", TARGETS.join(", "));
        }
    }
    Ok(wanted.to_vec())
}

#[derive(Debug, Clone, Copy)]
enum Limit {
    Runs(u64),
    Seconds(u64),
}

/// Builds `targets` and runs each within `limit`. `quick` builds without optimisation
/// ([`SMOKE_PROFILE`]): a smoke run of seconds does not repay an optimised build of every dependency with
/// coverage instrumentation (about 11 minutes cold here); runs that count executions use the release one.
fn fuzz(targets: &[String], limit: Limit, sanitizer: &str, quick: bool) -> Result<Vec<TargetRun>> {
    let cargo_fuzz = install_tool("cargo-fuzz", CARGO_FUZZ_VERSION, "cargo-fuzz")?;
    let t = Instant::now();
    let mut build = Command::new(&cargo_fuzz);
    build
        .current_dir(workspace_root())
        // cargo-fuzz passes `-Z` flags (sanitizer coverage) that a stable rustc accepts only so.
        .env("RUSTC_BOOTSTRAP", "1")
        .args([
            "fuzz",
            "build",
            "--release",
            "--debug-assertions",
            "--sanitizer",
            sanitizer,
        ])
        .arg("--target-dir")
        .arg(target_dir());
    if quick {
        build.envs(SMOKE_PROFILE.iter().copied());
    }
    // cargo-fuzz builds one named target, or all of them.
    if let [one] = targets {
        build.arg(one);
    }
    run(&mut build)?;
    eprintln!("fuzz targets built in {:.1}s", t.elapsed().as_secs_f64());
    targets.iter().map(|name| run_target(name, limit)).collect()
}

fn run_target(name: &str, limit: Limit) -> Result<TargetRun> {
    let binary = target_dir().join(host_triple()).join("release").join(name);
    if !binary.exists() {
        bail!(
            "fuzz target {name} was not built ({} is missing)",
            binary.display()
        );
    }
    let seeds = fuzz_dir().join("corpus").join(name);
    // libFuzzer adds what it finds to the first corpus folder: a working copy, never the committed one.
    let work = workspace_root().join("target/fuzz-corpus").join(name);
    let artifacts = workspace_root().join("target/fuzz-artifacts").join(name);
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    std::fs::create_dir_all(&artifacts).with_context(|| format!("create {}", artifacts.display()))?;
    let before = list(&artifacts)?;
    let mut cmd = Command::new(&binary);
    cmd.arg(&work)
        .arg(&seeds)
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(format!("-max_len={MAX_LEN}"))
        .arg("-print_final_stats=1")
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048");
    match limit {
        Limit::Runs(n) => cmd.arg(format!("-runs={n}")),
        Limit::Seconds(s) => cmd.arg(format!("-max_total_time={s}")),
    };
    let t = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("run {}", binary.display()))?;
    let seconds = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let found: Vec<String> = list(&artifacts)?
        .into_iter()
        .filter(|a| !before.contains(a))
        .map(|a| a.display().to_string())
        .collect();
    let execs = final_stat(&stderr, "stat::number_of_executed_units").unwrap_or(0);
    if !out.status.success() && found.is_empty() {
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        bail!(
            "fuzz target {name} failed without an artifact ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    if !found.is_empty() {
        let log = artifacts.join("last-crash.log");
        std::fs::write(&log, stderr.as_bytes()).with_context(|| format!("write {}", log.display()))?;
        eprintln!("fuzz target {name}: crash, libFuzzer output in {}", log.display());
    }
    Ok(TargetRun {
        name: name.to_owned(),
        execs,
        crashes: found.len(),
        seconds,
        artifacts: found,
    })
}

/// The files in `dir` (crash, oom, timeout and leak inputs).
fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let crash = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            ["crash-", "oom-", "timeout-", "leak-"]
                .iter()
                .any(|p| n.starts_with(p))
        });
        if crash {
            files.push(path);
        }
    }
    Ok(files)
}

/// A `stat::name: value` line of libFuzzer's final statistics.
fn final_stat(stderr: &str, name: &str) -> Option<u64> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.trim_start_matches(':').trim().parse().ok())
        .next_back()
}

/// The host target triple cargo-fuzz builds for (its default `--target`).
fn host_triple() -> &'static str {
    if cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        "x86_64-unknown-linux-gnu"
    } else if cfg!(all(target_arch = "aarch64", target_os = "linux")) {
        "aarch64-unknown-linux-gnu"
    } else if cfg!(all(target_arch = "aarch64", target_os = "macos")) {
        "aarch64-apple-darwin"
    } else {
        "x86_64-apple-darwin"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_final_stats() {
        let err =
            "INFO: Seed: 1\n#2 DONE cov: 10\nstat::number_of_executed_units: 123456\nstat::peak_rss_mb: 40\n";
        assert_eq!(final_stat(err, "stat::number_of_executed_units"), Some(123_456));
        assert_eq!(final_stat(err, "stat::peak_rss_mb"), Some(40));
        assert_eq!(final_stat("no stats", "stat::number_of_executed_units"), None);
    }

    #[test]
    fn every_target_has_a_corpus_and_a_bin() {
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap_or_default();
        for t in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{t}\"")),
                "{t} is a [[bin]] of fuzz/Cargo.toml"
            );
            let seeds = std::fs::read_dir(fuzz_dir().join("corpus").join(t))
                .map(|d| d.count())
                .unwrap_or(0);
            assert!(seeds > 0, "{t} has a committed corpus");
        }
    }

    #[test]
    fn unknown_targets_are_refused() {
        assert!(select(&["nope".to_owned()]).is_err());
        assert_eq!(select(&[]).map(|v| v.len()).ok(), Some(TARGETS.len()));
    }
}
