//! helm, built from Go modules, for the chart checks (`helm lint`, `helm template`, and the rendered
//! manifests' server-side dry run in `crates/lazyscale/tests/install.rs`).
//!
//! Its recipe (`testenv/helm/build.sh`, `go.mod`, `go.sum`, embedded here at compile time, plus the Go
//! version) has its own key, separate from the control plane's ([`crate::recipe`]), so bumping helm
//! never rebuilds Kubernetes. The output is `<cache>/helm/<key>/bin/helm` in the same cache folder as the
//! control plane ([`crate::recipe::cache_dir`]); both are a [`Recipe`]; Go's module and build caches are shared.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::recipe::{BuildOutcome, Recipe};
use crate::{Error, Result};

/// The files of the helm recipe, as (name under `testenv/`, content).
const RECIPE: &[(&str, &str)] = &[
    ("helm/build.sh", include_str!("../../helm/build.sh")),
    ("helm/go.mod", include_str!("../../helm/go.mod")),
    ("helm/go.sum", include_str!("../../helm/go.sum")),
];

/// helm's recipe.
pub const HELM: Recipe = Recipe {
    name: "helm",
    folder: "helm",
    files: RECIPE,
    script: "helm/build.sh",
    outputs: &["bin/helm", "version.txt"],
};

/// The recipe key ([`HELM`]).
pub fn key() -> String {
    HELM.key()
}

/// The build output folder of the current recipe.
pub fn build_dir() -> PathBuf {
    HELM.build_dir()
}

/// The helm binary of the current recipe, if built.
pub fn binary() -> Result<PathBuf> {
    if HELM.is_built() {
        Ok(build_dir().join("bin/helm"))
    } else {
        Err(Error::NotBuilt(build_dir().display().to_string()))
    }
}

/// `helm.sh/helm/v4@VERSION GOVERSION` of the built binary.
pub fn version() -> Result<String> {
    let path = build_dir().join("version.txt");
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|source| Error::Io {
            what: format!("read {}", path.display()),
            source,
        })
}

/// Builds helm unless the current recipe is already built. `recipe_dir` is the `testenv/` folder of
/// the source tree; its files must match what this crate was compiled with.
pub fn ensure_built(recipe_dir: &Path) -> Result<(PathBuf, BuildOutcome)> {
    let outcome = HELM.ensure_built(recipe_dir)?;
    Ok((binary()?, outcome))
}

/// The outcome of one helm command.
#[derive(Debug, Clone)]
pub struct Output {
    /// Whether helm exited with status 0.
    pub success: bool,
    /// Standard output (the rendered manifests of `helm template`).
    pub stdout: String,
    /// Standard error (lint findings, schema errors), without helm's note about symbolic links.
    pub stderr: String,
}

/// Runs the built helm with `args` (its caches and configuration in a private folder under the
/// build, so no user configuration is read).
pub fn run(args: &[&str]) -> Result<Output> {
    let bin = binary()?;
    let home = build_dir().join("home");
    let out = Command::new(&bin)
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .output()
        .map_err(|source| Error::Io {
            what: format!("run {}", bin.display()),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr)
        .lines()
        // The chart links the generated CRDs (files/crds.yaml); helm notes each link it follows.
        .filter(|l| !l.contains("found symbolic link in path"))
        .collect::<Vec<_>>()
        .join("\n");
    Ok(Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_hex() {
        let k = key();
        assert_eq!(k.len(), 16);
        assert!(k.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn recipe_embeds_every_input_of_the_build() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| format!("helm/{}", e.file_name().to_string_lossy()))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = RECIPE.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(
            on_disk, embedded,
            "a file of testenv/helm is not part of the helm recipe key"
        );
    }
}
