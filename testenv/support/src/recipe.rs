//! The cached build of the test environment.
//!
//! The build (`testenv/build.sh`) is keyed by the recipe: the script, the pinned package list and the Go
//! sources of the API server, all embedded here at compile time. The output lives in
//! `<cache>/builds/<key>/` (`bin/lazyscale-testenv-apiserver`, `bin/etcd`, `versions.txt`), where `<cache>`
//! is `$LAZYSCALE_TESTENV_CACHE`, else `$XDG_CACHE_HOME/lazyscale/testenv`, else
//! `~/.cache/lazyscale/testenv` — outside `target/`, so `cargo clean` keeps it. A changed recipe gets a
//! new key and is rebuilt; the Go build cache is shared between keys, so rebuilds after a Go edit take
//! seconds.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The files that make up the recipe, as (name, content).
const RECIPE: &[(&str, &str)] = &[
    ("build.sh", include_str!("../../build.sh")),
    ("packages.txt", include_str!("../../packages.txt")),
    ("apiserver/main.go", include_str!("../../apiserver/main.go")),
    (
        "apiserver/registry.go",
        include_str!("../../apiserver/registry.go"),
    ),
    (
        "apiserver/eviction.go",
        include_str!("../../apiserver/eviction.go"),
    ),
    (
        "apiserver/discovery.go",
        include_str!("../../apiserver/discovery.go"),
    ),
    (
        "apiserver/defaults.go",
        include_str!("../../apiserver/defaults.go"),
    ),
    (
        "apiserver/bootstrap.go",
        include_str!("../../apiserver/bootstrap.go"),
    ),
];

/// The environment variable that relocates the cache folder.
pub const CACHE_ENV: &str = "LAZYSCALE_TESTENV_CACHE";

/// The recipe key: 16 hex digits of a SHA-256 over the recipe files.
pub fn key() -> String {
    let mut h = Sha256::new();
    for (name, content) in RECIPE {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(content.len().to_le_bytes());
        h.update(content.as_bytes());
    }
    hex::encode(&h.finalize()[..8])
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

/// The build output folder for the current recipe.
pub fn build_dir() -> PathBuf {
    cache_dir().join("builds").join(key())
}

/// The two binaries of a finished build.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The API server.
    pub apiserver: PathBuf,
    /// etcd.
    pub etcd: PathBuf,
    /// `name version` lines of the Debian packages used, and the Go version.
    pub versions: PathBuf,
}

/// The binaries of the current recipe, if built.
pub fn binaries() -> Result<Binaries> {
    let dir = build_dir();
    let b = Binaries {
        apiserver: dir.join("bin/lazyscale-testenv-apiserver"),
        etcd: dir.join("bin/etcd"),
        versions: dir.join("versions.txt"),
    };
    if b.apiserver.is_file() && b.etcd.is_file() {
        Ok(b)
    } else {
        Err(Error::NotBuilt(dir.display().to_string()))
    }
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
    if let Ok(b) = binaries() {
        return Ok((b, BuildOutcome::Cached));
    }
    for (name, content) in RECIPE {
        let on_disk = std::fs::read_to_string(recipe_dir.join(name)).map_err(|source| Error::Io {
            what: format!("read {}", recipe_dir.join(name).display()),
            source,
        })?;
        if on_disk != *content {
            return Err(Error::BuildFailed(format!(
                "testenv/{name} changed since this tool was compiled; run it again"
            )));
        }
    }
    let status = Command::new("bash")
        .arg(recipe_dir.join("build.sh"))
        .env("CACHE", cache_dir())
        .env("OUT", build_dir())
        .status()
        .map_err(|source| Error::Io {
            what: "run testenv/build.sh".into(),
            source,
        })?;
    if !status.success() {
        return Err(Error::BuildFailed(status.to_string()));
    }
    Ok((binaries()?, BuildOutcome::Built))
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
    fn recipe_embeds_every_go_source() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../apiserver");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".go"))
            .map(|n| format!("apiserver/{n}"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = RECIPE
            .iter()
            .map(|(n, _)| n.to_string())
            .filter(|n| n.ends_with(".go"))
            .collect();
        embedded.sort();
        assert_eq!(
            on_disk, embedded,
            "a Go source of the test API server is not part of the recipe key"
        );
    }
}
