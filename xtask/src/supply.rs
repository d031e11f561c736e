//! Supply chain: the cargo tools `cargo xtask` installs from the crate registry (pinned, cached under
//! `target/tools/<name>-<version>`), and the dependency check of `cargo xtask test`: cargo-deny with
//! `deny.toml` (licences, bans, sources).
//!
//! Advisories are not checked: cargo-deny reads the RustSec advisory database from a git host, which
//! this project's machines cannot reach, and none of the package registries they reach ships it. The
//! check says so on every run instead of passing silently.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::{cargo, run, workspace_root};

/// cargo-deny, pinned.
const CARGO_DENY_VERSION: &str = "0.20.2";

/// Cargo's release profile for tools that are compiled cold once per checkout and run for seconds (a
/// quick optimisation level, parallel codegen, no LTO), as profile environment variables.
pub const QUICK_RELEASE_PROFILE: &[(&str, &str)] = &[
    ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16"),
    ("CARGO_PROFILE_RELEASE_LTO", "false"),
    ("CARGO_PROFILE_RELEASE_DEBUG", "false"),
];

/// The checks that need nothing from outside.
const OFFLINE_CHECKS: &[&str] = &["licenses", "bans", "sources"];

/// The binary `bin` of crate `name` at `version`, installed once with `cargo install --locked` into
/// `target/tools/<name>-<version>`; prints the install time when it had to install.
pub fn install_tool(name: &str, version: &str, bin: &str) -> Result<PathBuf> {
    let root = workspace_root()
        .join("target/tools")
        .join(format!("{name}-{version}"));
    let path = root.join("bin").join(bin);
    if path.exists() {
        return Ok(path);
    }
    let t = Instant::now();
    eprintln!(
        "installing {name} {version} from the crate registry into {}",
        root.display()
    );
    // A tool is built once per checkout and runs for seconds: a quick optimisation level, parallel
    // codegen and no LTO cut a cold install to about half of the tools' own release profile.
    run(cargo()
        .args(["install", "--locked", "--version", version, "--root"])
        .arg(&root)
        .arg(name)
        .envs(QUICK_RELEASE_PROFILE.iter().copied()))?;
    eprintln!("{name} {version} installed in {:.0}s", t.elapsed().as_secs_f64());
    if !path.exists() {
        bail!("cargo install {name} did not produce {}", path.display());
    }
    Ok(path)
}

/// `cargo deny check licenses bans sources` of the workspace, offline. Advisories are reported as not
/// checked, with the reason.
pub fn deny() -> Result<()> {
    let deny = install_tool("cargo-deny", CARGO_DENY_VERSION, "cargo-deny")?;
    // cargo-deny reads `cargo metadata` for every platform, offline: the sources of crates only other
    // platforms build (windows-sys, ...) must be in the local registry cache, which a Linux build alone
    // does not download. `cargo fetch` downloads every package of the lock file (a no-op when present).
    run(cargo().args(["fetch", "--locked"]))?;
    let t = Instant::now();
    let mut cmd = Command::new(&deny);
    cmd.current_dir(workspace_root())
        .args(["deny", "--offline", "--locked", "check"])
        .args(OFFLINE_CHECKS);
    run(&mut cmd)?;
    eprintln!(
        "cargo deny: {} passed in {:.1}s; advisories NOT checked: cargo-deny fetches the RustSec advisory \
         database from a git host this machine cannot reach, and no reachable package registry ships it",
        OFFLINE_CHECKS.join(", "),
        t.elapsed().as_secs_f64(),
    );
    Ok(())
}
