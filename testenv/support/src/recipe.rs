//! The cached build of the test control plane.
//!
//! The build (`testenv/build.sh`) is keyed by the recipe: the script and the Go module that pins every
//! component (`testenv/k8s/go.mod` and `go.sum`), embedded here at compile time, plus the version of the
//! Go toolchain found at run time. The output lives in `<cache>/builds/<key>/`
//! (`bin/{etcd,kube-apiserver,kube-controller-manager,kube-scheduler,kwok}`, `versions.txt`), where `<cache>` is `$LAZYSCALE_TESTENV_CACHE`, else
//! `$XDG_CACHE_HOME/lazyscale/testenv`, else `~/.cache/lazyscale/testenv` — outside `target/`, so
//! `cargo clean` keeps it. A changed recipe gets a new key and is rebuilt; Go's own module and build
//! caches are shared between keys, so a rebuild after a version bump recompiles only what changed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The files that make up the recipe, as (name, content).
const RECIPE: &[(&str, &str)] = &[
    ("build.sh", include_str!("../../build.sh")),
    ("k8s/go.mod", include_str!("../../k8s/go.mod")),
    ("k8s/go.sum", include_str!("../../k8s/go.sum")),
];

/// kwok's stages (what its fake kubelet does), `testenv/kwok-stages.yaml`. They are configuration, not a
/// build input: each server writes them into its own folder, so changing them never rebuilds the binaries.
pub const KWOK_STAGES: &str = include_str!("../../kwok-stages.yaml");

/// The go command the build uses: `$GO`, else `go` on `PATH`, else `/usr/local/go/bin/go`.
pub fn go_command() -> PathBuf {
    if let Some(g) = std::env::var_os("GO").filter(|g| !g.is_empty()) {
        return PathBuf::from(g);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let c = d.join("go");
            if c.is_file() {
                return c;
            }
        }
    }
    PathBuf::from("/usr/local/go/bin/go")
}

/// The Go toolchain version (`go1.26.8`), or `none` when there is no go command.
pub fn go_version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        Command::new(go_command())
            .args(["env", "GOVERSION"])
            .env("GOTOOLCHAIN", "local")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "none".to_string())
    })
}

/// The environment variable that relocates the cache folder.
pub const CACHE_ENV: &str = "LAZYSCALE_TESTENV_CACHE";

/// A cached build from Go modules: a script under `testenv/` and the files that make up its inputs,
/// embedded at compile time. Its key covers the Go version and every input, so a changed input gets a
/// new build folder (`<cache>/<folder>/<key>/`) and an unchanged one is reused. The control plane
/// ([`CONTROL_PLANE`]) and helm ([`crate::helm::HELM`]) are the two recipes; each has its own key, so
/// bumping one never rebuilds the other.
#[derive(Debug, Clone, Copy)]
pub struct Recipe {
    /// Name in messages.
    pub name: &'static str,
    /// Folder under the cache folder that holds this recipe's builds.
    pub folder: &'static str,
    /// The inputs, as (path under `testenv/`, content).
    pub files: &'static [(&'static str, &'static str)],
    /// The build script, a path under `testenv/` (one of `files`); it gets `GO` and `OUT`.
    pub script: &'static str,
    /// Files a finished build holds, as paths under its folder.
    pub outputs: &'static [&'static str],
}

impl Recipe {
    /// The key: 16 hex digits of a SHA-256 over the Go version and the recipe files.
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(go_version().as_bytes());
        h.update([0]);
        for (name, content) in self.files {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(content.len().to_le_bytes());
            h.update(content.as_bytes());
        }
        hex::encode(&h.finalize()[..8])
    }

    /// The build folder of the current inputs.
    pub fn build_dir(&self) -> PathBuf {
        cache_dir().join(self.folder).join(self.key())
    }

    /// Whether the current inputs are built (every output is there).
    pub fn is_built(&self) -> bool {
        let dir = self.build_dir();
        self.outputs.iter().all(|o| dir.join(o).is_file())
    }

    /// Builds unless the current inputs are already built. `recipe_dir` is the `testenv/` folder of the
    /// source tree; its files must match what this crate was compiled with.
    pub fn ensure_built(&self, recipe_dir: &Path) -> Result<BuildOutcome> {
        if self.is_built() {
            return Ok(BuildOutcome::Cached);
        }
        for (name, content) in self.files {
            let path = recipe_dir.join(name);
            let on_disk = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                what: format!("read {}", path.display()),
                source,
            })?;
            if on_disk != *content {
                return Err(Error::BuildFailed(format!(
                    "testenv/{name} changed since this tool was compiled; run it again"
                )));
            }
        }
        let status = Command::new("bash")
            .arg(recipe_dir.join(self.script))
            .env("GO", go_command())
            .env("OUT", self.build_dir())
            .status()
            .map_err(|source| Error::Io {
                what: format!("run testenv/{}", self.script),
                source,
            })?;
        if !status.success() {
            return Err(Error::BuildFailed(format!("{}: {status}", self.name)));
        }
        if !self.is_built() {
            return Err(Error::NotBuilt(self.build_dir().display().to_string()));
        }
        Ok(BuildOutcome::Built)
    }
}

/// The control plane: kube-apiserver, kube-controller-manager, kube-scheduler, kwok and etcd.
pub const CONTROL_PLANE: Recipe = Recipe {
    name: "testenv",
    folder: "builds",
    files: RECIPE,
    script: "build.sh",
    outputs: &[
        "bin/etcd",
        "bin/kube-apiserver",
        "bin/kube-controller-manager",
        "bin/kube-scheduler",
        "bin/kwok",
        "versions.txt",
    ],
};

/// The control plane's key ([`CONTROL_PLANE`]).
pub fn key() -> String {
    CONTROL_PLANE.key()
}

/// The cache folder.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("lazyscale/testenv");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/lazyscale/testenv")
}

/// The control plane's build folder for the current recipe.
pub fn build_dir() -> PathBuf {
    CONTROL_PLANE.build_dir()
}

/// The files of a finished build.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// etcd.
    pub etcd: PathBuf,
    /// kube-apiserver.
    pub kube_apiserver: PathBuf,
    /// kube-controller-manager.
    pub kube_controller_manager: PathBuf,
    /// kube-scheduler.
    pub kube_scheduler: PathBuf,
    /// kwok.
    pub kwok: PathBuf,
    /// `component module@version` lines, and the Go version.
    pub versions: PathBuf,
}

/// The binaries of the current recipe, if built.
pub fn binaries() -> Result<Binaries> {
    let dir = build_dir();
    if !CONTROL_PLANE.is_built() {
        return Err(Error::NotBuilt(dir.display().to_string()));
    }
    let bin = |n: &str| dir.join("bin").join(n);
    Ok(Binaries {
        etcd: bin("etcd"),
        kube_apiserver: bin("kube-apiserver"),
        kube_controller_manager: bin("kube-controller-manager"),
        kube_scheduler: bin("kube-scheduler"),
        kwok: bin("kwok"),
        versions: dir.join("versions.txt"),
    })
}

/// Whether the build ran or was already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildOutcome {
    /// The cached build matched the recipe.
    Cached,
    /// The build ran.
    Built,
}

/// Builds the test environment unless the current recipe is already built. `recipe_dir` is the
/// `testenv/` folder of the source tree (the script and the Go sources are read from there, and must
/// match what this crate was compiled with).
pub fn ensure_built(recipe_dir: &Path) -> Result<(Binaries, BuildOutcome)> {
    let outcome = CONTROL_PLANE.ensure_built(recipe_dir)?;
    Ok((binaries()?, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_stable_and_hex() {
        let k = key();
        assert_eq!(k.len(), 16);
        assert!(k.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(k, key());
    }

    #[test]
    fn recipe_embeds_every_input_of_the_build() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir.join("k8s"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| format!("k8s/{}", e.file_name().to_string_lossy()))
            .collect();
        on_disk.push("build.sh".to_string());
        on_disk.sort();
        let mut embedded: Vec<String> = RECIPE.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(
            on_disk, embedded,
            "a file of testenv/k8s is not part of the recipe key"
        );
    }
}
