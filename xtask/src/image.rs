//! `cargo xtask image`: the agent's container image without a container engine.
//!
//! It builds the agent as one static binary (glibc with `+crt-static`, release profile, stripped, in its own
//! target folder `target/image-build`; the machine has no musl target and no way to download one), checks
//! that the ELF file has no interpreter and needs no shared library, runs it once (`lazyscale version`),
//! and writes the image ourselves as an OCI image layout in `target/image/oci` (one gzip layer holding
//! `/lazyscale`, owned by 65532:65532, a config with `User`, `Entrypoint`, `Cmd`, ports and labels, a
//! manifest and `index.json`, every blob addressed by its sha256) plus the same layout as an `oci-archive`
//! tarball. Timestamps come from `SOURCE_DATE_EPOCH` or the commit time of `HEAD`, so the same binary
//! always gives the same digests.
//!
//! `deploy/image/Containerfile` describes the same image for machines with an engine; a unit test keeps
//! the two in agreement (user, entry point, command, ports, path and mode of the binary, labels).
//! `--check` validates a written layout (every digest and size, the diff id, the binary's mode and
//! owner); `--smoke` runs the image's binary as the agent against a private test control plane.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::workspace_root;

/// Path of the binary inside the image (the Containerfile's `COPY` destination).
pub const BINARY_PATH: &str = "/lazyscale";
/// Numeric user and group of the image (no passwd file on an empty base).
pub const UID: u32 = 65532;
/// Numeric group of the image.
pub const GID: u32 = 65532;
/// Mode of the binary in the layer: read and execute, never written (the root filesystem is read-only).
pub const BINARY_MODE: u32 = 0o555;
/// The image's entry point and default command.
pub const ENTRYPOINT: &[&str] = &[BINARY_PATH];
/// Default arguments of the entry point.
pub const CMD: &[&str] = &["run"];
/// Ports the agent listens on: admin (`/metrics`, probes) and the webhook.
pub const PORTS: &[u16] = &[8080, 8443];
/// The Rust target of the static build.
const TARGET: &str = "x86_64-unknown-linux-gnu";

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CREATED: &str = "org.opencontainers.image.created";

/// `cargo xtask image` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only validate the layout already in target/image/oci (no build).
    #[arg(long)]
    check: bool,
    /// After writing (or with --check, after validating) the layout, run the image's binary as the
    /// agent against a private test control plane until it is ready (TLS to the API server, watches).
    #[arg(long)]
    smoke: bool,
}

/// The labels both the Containerfile and the layout carry (the layout adds revision and created).
pub fn static_labels() -> BTreeMap<String, String> {
    [
        ("org.opencontainers.image.title", "lazyscale"),
        (
            "org.opencontainers.image.description",
            "lazyscale agent: workload autoscaling for the DatadogPodAutoscaler API",
        ),
        ("org.opencontainers.image.version", env!("CARGO_PKG_VERSION")),
        ("org.opencontainers.image.licenses", env!("CARGO_PKG_LICENSE")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Where the layout is written.
pub fn layout_dir() -> PathBuf {
    workspace_root().join("target/image/oci")
}

fn archive_path() -> PathBuf {
    workspace_root().join(format!(
        "target/image/lazyscale-{}.oci.tar",
        env!("CARGO_PKG_VERSION")
    ))
}

/// Entry point of `cargo xtask image`: builds and writes, or checks; prints a JSON report.
pub fn run(args: Args) -> Result<()> {
    let dir = layout_dir();
    let mut report = serde_json::Map::new();
    if !args.check {
        let started = Instant::now();
        let binary = build_binary()?;
        let build_seconds = started.elapsed().as_secs_f64();
        let linkage = elf_linkage(&std::fs::read(&binary)?)
            .with_context(|| format!("read the ELF headers of {}", binary.display()))?;
        ensure!(
            linkage.is_static(),
            "{} is not static: interpreter {:?}, {} needed libraries",
            binary.display(),
            linkage.interpreter,
            linkage.needed
        );
        let version = std::process::Command::new(&binary)
            .arg("version")
            .output()
            .with_context(|| format!("run {}", binary.display()))?;
        ensure!(
            version.status.success(),
            "{} version failed: {}",
            binary.display(),
            String::from_utf8_lossy(&version.stderr)
        );
        let written = Instant::now();
        let created = created_epoch()?;
        let image = Image {
            binary: std::fs::read(&binary)?,
            created,
            revision: git_head().unwrap_or_default(),
        };
        let summary = write_layout(&image, &dir)?;
        write_archive(&dir, &archive_path(), created)?;
        report.insert("build_seconds".into(), json!(round(build_seconds)));
        report.insert(
            "layout_seconds".into(),
            json!(round(written.elapsed().as_secs_f64())),
        );
        report.insert(
            "binary".into(),
            json!(binary.strip_prefix(workspace_root()).unwrap_or(&binary)),
        );
        report.insert("binary_bytes".into(), json!(image.binary.len()));
        report.insert(
            "binary_version".into(),
            json!(String::from_utf8_lossy(&version.stdout).trim()),
        );
        report.insert("static".into(), json!(true));
        report.insert("created".into(), json!(rfc3339(created)?));
        report.insert("summary".into(), serde_json::to_value(&summary)?);
        report.insert(
            "archive_bytes".into(),
            json!(std::fs::metadata(archive_path())?.len()),
        );
    }
    let checked = check_layout(&dir)?;
    report.insert("checked".into(), serde_json::to_value(&checked)?);
    report.insert(
        "layout".into(),
        json!(dir.strip_prefix(workspace_root()).unwrap_or(&dir)),
    );
    if args.smoke {
        report.insert("smoke_ready_seconds".into(), json!(round(smoke(&dir)?)));
    }
    println!("{}", serde_json::to_string_pretty(&Value::Object(report))?);
    Ok(())
}

fn round(s: f64) -> f64 {
    (s * 100.0).round() / 100.0
}

/// Builds the static release binary in `target/image-build`; returns its path.
fn build_binary() -> Result<PathBuf> {
    let root = workspace_root();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let (root_s, home_s) = (root.to_string_lossy(), cargo_home.to_string_lossy());
    ensure!(
        !root_s.contains(char::is_whitespace) && !home_s.contains(char::is_whitespace),
        "the workspace and cargo home paths must not contain spaces (RUSTFLAGS)"
    );
    // Static glibc; the build machine's paths are replaced so they do not end up in the binary (panic
    // locations), which also makes the binary independent of where the workspace is checked out.
    let rustflags = format!(
        "-C target-feature=+crt-static --remap-path-prefix={root_s}=/src --remap-path-prefix={home_s}=/cargo"
    );
    let target_dir = root.join("target/image-build");
    let mut c = crate::cargo();
    c.args([
        "build",
        "--release",
        "--locked",
        "--package",
        "lazyscale",
        "--bin",
        "lazyscale",
        "--target",
        TARGET,
    ])
    .env("CARGO_TARGET_DIR", &target_dir)
    .env("RUSTFLAGS", rustflags)
    .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
    .env("CARGO_PROFILE_RELEASE_DEBUG", "false");
    crate::run(&mut c)?;
    Ok(target_dir.join(TARGET).join("release/lazyscale"))
}

/// The image creation time (seconds since the epoch): `SOURCE_DATE_EPOCH`, else the commit time of HEAD.
fn created_epoch() -> Result<i64> {
    if let Ok(s) = std::env::var("SOURCE_DATE_EPOCH") {
        return s
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds"));
    }
    let out = std::process::Command::new("git")
        .args(["log", "-1", "--format=%ct", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .context("run git log (or set SOURCE_DATE_EPOCH)")?;
    ensure!(out.status.success(), "git log failed; set SOURCE_DATE_EPOCH");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("the commit time of HEAD")
}

fn git_head() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn rfc3339(epoch: i64) -> Result<String> {
    Ok(k8s_openapi::jiff::Timestamp::from_second(epoch)
        .with_context(|| format!("time {epoch} out of range"))?
        .to_string())
}

// === ELF ===

/// How an ELF executable is linked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linkage {
    /// The program interpreter (`PT_INTERP`), the dynamic loader of a dynamic executable.
    pub interpreter: Option<String>,
    /// How many shared libraries it needs (`DT_NEEDED`).
    pub needed: usize,
}

impl Linkage {
    /// No loader and no shared library: runs on an empty base image.
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed == 0
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The linkage of a 64-bit little-endian ELF file, from its program headers.
pub fn elf_linkage(elf: &[u8]) -> Result<Linkage> {
    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    const DT_NEEDED: u64 = 1;
    ensure!(elf.starts_with(b"\x7fELF"), "not an ELF file");
    ensure!(
        elf.get(4) == Some(&2) && elf.get(5) == Some(&1),
        "not a 64-bit little-endian ELF file"
    );
    let bad = || anyhow::anyhow!("truncated ELF headers");
    let phoff = usize::try_from(u64_at(elf, 0x20).ok_or_else(bad)?)?;
    let phentsize = usize::from(u16_at(elf, 0x36).ok_or_else(bad)?);
    let phnum = usize::from(u16_at(elf, 0x38).ok_or_else(bad)?);
    let mut linkage = Linkage {
        interpreter: None,
        needed: 0,
    };
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let kind = u32_at(elf, ph).ok_or_else(bad)?;
        let offset = usize::try_from(u64_at(elf, ph + 8).ok_or_else(bad)?)?;
        let size = usize::try_from(u64_at(elf, ph + 32).ok_or_else(bad)?)?;
        let segment = elf.get(offset..offset + size).ok_or_else(bad)?;
        match kind {
            PT_INTERP => {
                let path = segment.split(|b| *b == 0).next().unwrap_or_default();
                linkage.interpreter = Some(String::from_utf8_lossy(path).into_owned());
            }
            PT_DYNAMIC => {
                linkage.needed += segment
                    .chunks_exact(16)
                    .map(|e| u64_at(e, 0).unwrap_or(0))
                    .take_while(|tag| *tag != 0)
                    .filter(|tag| *tag == DT_NEEDED)
                    .count();
            }
            _ => {}
        }
    }
    Ok(linkage)
}

// === tar ===

/// One entry of a tar archive (regular files and directories only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// Path inside the archive (no leading `/`; directories end in `/`).
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: i64,
    /// Contents (empty for a directory).
    pub data: Vec<u8>,
}

impl TarEntry {
    fn is_dir(&self) -> bool {
        self.path.ends_with('/')
    }
}

fn octal(field: &mut [u8], value: u64) -> Result<()> {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    ensure!(
        text.len() == width,
        "{value} does not fit a tar field of {width} digits"
    );
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
    Ok(())
}

/// A POSIX ustar archive of `entries`, in order, with no user or group names (numeric ids only).
pub fn tar(entries: &[TarEntry]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for e in entries {
        ensure!(
            e.path.len() < 100 && !e.path.starts_with('/'),
            "tar path {:?} must be relative and shorter than 100 bytes",
            e.path
        );
        let mut h = [0u8; 512];
        h[..e.path.len()].copy_from_slice(e.path.as_bytes());
        octal(&mut h[100..108], u64::from(e.mode))?;
        octal(&mut h[108..116], u64::from(e.uid))?;
        octal(&mut h[116..124], u64::from(e.gid))?;
        octal(&mut h[124..136], e.data.len() as u64)?;
        octal(&mut h[136..148], u64::try_from(e.mtime).unwrap_or(0))?;
        h[156] = if e.is_dir() { b'5' } else { b'0' };
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        octal(&mut h[148..155], u64::from(sum))?;
        h[155] = b' ';
        out.extend_from_slice(&h);
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    // the end of the archive: two zero blocks
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

fn parse_octal(field: &[u8]) -> Result<u64> {
    let text = std::str::from_utf8(field)?.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Ok(0);
    }
    Ok(u64::from_str_radix(text, 8)?)
}

/// The entries of a ustar archive (checksums verified; only regular files and directories accepted).
pub fn untar(archive: &[u8]) -> Result<Vec<TarEntry>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= archive.len() {
        let h = &archive[at..at + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let mut blank = [0u8; 512];
        blank.copy_from_slice(h);
        blank[148..156].fill(b' ');
        let sum: u64 = blank.iter().map(|b| u64::from(*b)).sum();
        ensure!(
            parse_octal(&h[148..156])? == sum,
            "tar header at {at}: bad checksum"
        );
        let name_end = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let mut path = String::from_utf8(h[..name_end].to_vec())?;
        let prefix_end = h[345..500].iter().position(|b| *b == 0).unwrap_or(155);
        if prefix_end > 0 {
            path = format!("{}/{path}", std::str::from_utf8(&h[345..345 + prefix_end])?);
        }
        let size = usize::try_from(parse_octal(&h[124..136])?)?;
        match h[156] {
            b'0' | 0 | b'5' => {}
            other => bail!(
                "tar entry {path:?}: type {:?} is neither a file nor a directory",
                other as char
            ),
        }
        let data = archive
            .get(at + 512..at + 512 + size)
            .with_context(|| format!("tar entry {path:?} is truncated"))?
            .to_vec();
        out.push(TarEntry {
            path,
            mode: u32::try_from(parse_octal(&h[100..108])?)?,
            uid: u32::try_from(parse_octal(&h[108..116])?)?,
            gid: u32::try_from(parse_octal(&h[116..124])?)?,
            mtime: i64::try_from(parse_octal(&h[136..148])?)?,
            data,
        });
        at += 512 + size.div_ceil(512) * 512;
    }
    Ok(out)
}

// === the layout ===

/// What goes into the image.
pub struct Image {
    /// The static agent binary.
    pub binary: Vec<u8>,
    /// Creation time (seconds since the epoch): config `created`, the layer's mtimes.
    pub created: i64,
    /// The commit the binary was built from (label; empty when unknown).
    pub revision: String,
}

/// Digests and sizes of a written layout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// `sha256:...` of the manifest (the image's digest).
    pub manifest_digest: String,
    /// `sha256:...` of the config.
    pub config_digest: String,
    /// `sha256:...` of the compressed layer.
    pub layer_digest: String,
    /// The uncompressed layer's digest (the config's diff id).
    pub diff_id: String,
    /// Bytes of the compressed layer.
    pub layer_bytes: u64,
    /// Bytes of the uncompressed layer.
    pub layer_uncompressed_bytes: u64,
    /// Bytes of all blobs (manifest, config, layer): what a registry stores and a node pulls.
    pub total_bytes: u64,
    /// The reference name in `index.json` (the version): `oci:target/image/oci:<ref>`.
    pub reference: String,
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf> {
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("digest {digest:?} is not sha256"))?;
    ensure!(
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "digest {digest:?} is malformed"
    );
    Ok(dir.join("blobs/sha256").join(hex))
}

fn descriptor(media: &str, data: &[u8]) -> Value {
    json!({"mediaType": media, "digest": sha256(data), "size": data.len()})
}

/// The image config (OCI image spec) for a layer with diff id `diff_id`.
pub fn config(image: &Image, diff_id: &str) -> Result<Value> {
    let created = rfc3339(image.created)?;
    let mut labels = static_labels();
    labels.insert(CREATED.into(), created.clone());
    if !image.revision.is_empty() {
        labels.insert("org.opencontainers.image.revision".into(), image.revision.clone());
    }
    let ports: serde_json::Map<String, Value> =
        PORTS.iter().map(|p| (format!("{p}/tcp"), json!({}))).collect();
    Ok(json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": format!("{UID}:{GID}"),
            "Entrypoint": ENTRYPOINT,
            "Cmd": CMD,
            "ExposedPorts": ports,
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "cargo xtask image: the static agent binary at /lazyscale"}],
    }))
}

/// The blobs and the index of an image whose one layer is `layer_tar`.
struct Blobs {
    layer_tar_digest: String,
    layer_tar_len: usize,
    layer: Vec<u8>,
    config: Vec<u8>,
    manifest: Vec<u8>,
    index: Vec<u8>,
}

fn assemble(layer_tar: &[u8], image: &Image) -> Result<Blobs> {
    let diff_id = sha256(layer_tar);
    // gzip without a file name or time in its header (flate2 writes neither unless asked): reproducible
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(layer_tar)?;
    let layer = gz.finish()?;
    let config = serde_json::to_vec(&config(image, &diff_id)?)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": descriptor(MEDIA_CONFIG, &config),
        "layers": [descriptor(MEDIA_LAYER, &layer)],
        "annotations": {CREATED: rfc3339(image.created)?},
    }))?;
    let mut manifest_descriptor = descriptor(MEDIA_MANIFEST, &manifest);
    manifest_descriptor["platform"] = json!({"architecture": "amd64", "os": "linux"});
    manifest_descriptor["annotations"] = json!({REF_NAME: env!("CARGO_PKG_VERSION")});
    let index = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [manifest_descriptor],
    }))?;
    Ok(Blobs {
        layer_tar_digest: diff_id,
        layer_tar_len: layer_tar.len(),
        layer,
        config,
        manifest,
        index,
    })
}

/// Writes `blobs` as the layout `dir` (replaced whole: written beside it, then renamed).
fn store(blobs: &Blobs, dir: &Path) -> Result<()> {
    let parent = dir.parent().context("the layout folder has no parent")?;
    std::fs::create_dir_all(parent)?;
    let staging = parent.join(".oci.staging");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(staging.join("blobs/sha256"))?;
    for blob in [&blobs.layer, &blobs.config, &blobs.manifest] {
        std::fs::write(blob_path(&staging, &sha256(blob))?, blob)?;
    }
    std::fs::write(staging.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    std::fs::write(staging.join("index.json"), &blobs.index)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::rename(&staging, dir)?;
    Ok(())
}

/// The image's one layer: the binary at [`BINARY_PATH`], [`BINARY_MODE`], owned by [`UID`]:[`GID`].
fn layer_tar(image: &Image) -> Result<Vec<u8>> {
    tar(&[TarEntry {
        path: BINARY_PATH.trim_start_matches('/').into(),
        mode: BINARY_MODE,
        uid: UID,
        gid: GID,
        mtime: image.created,
        data: image.binary.clone(),
    }])
}

/// Writes the OCI image layout of `image` into `dir` (replaced whole).
pub fn write_layout(image: &Image, dir: &Path) -> Result<Summary> {
    let blobs = assemble(&layer_tar(image)?, image)?;
    store(&blobs, dir)?;
    Ok(Summary {
        manifest_digest: sha256(&blobs.manifest),
        config_digest: sha256(&blobs.config),
        layer_digest: sha256(&blobs.layer),
        diff_id: blobs.layer_tar_digest.clone(),
        layer_bytes: blobs.layer.len() as u64,
        layer_uncompressed_bytes: blobs.layer_tar_len as u64,
        total_bytes: (blobs.layer.len() + blobs.config.len() + blobs.manifest.len()) as u64,
        reference: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// Writes the layout folder `dir` as one tarball (`oci-archive`, for `podman load`, `skopeo copy
/// oci-archive:...`, `ctr images import`), with fixed owners and times.
pub fn write_archive(dir: &Path, out: &Path, mtime: i64) -> Result<()> {
    let index = std::fs::read(dir.join("index.json"))?;
    let entry = |path: &str, mode: u32, data: Vec<u8>| TarEntry {
        path: path.into(),
        mode,
        uid: 0,
        gid: 0,
        mtime,
        data,
    };
    let mut entries = vec![
        entry("oci-layout", 0o644, std::fs::read(dir.join("oci-layout"))?),
        entry("index.json", 0o644, index),
        entry("blobs/", 0o755, Vec::new()),
        entry("blobs/sha256/", 0o755, Vec::new()),
    ];
    let mut blobs: Vec<_> = std::fs::read_dir(dir.join("blobs/sha256"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    blobs.sort();
    for b in blobs {
        let name = b.file_name().context("blob name")?.to_string_lossy().into_owned();
        entries.push(entry(&format!("blobs/sha256/{name}"), 0o644, std::fs::read(&b)?));
    }
    std::fs::write(out, tar(&entries)?)?;
    Ok(())
}

/// What [`check_layout`] verified.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checked {
    /// The manifest's digest.
    pub manifest_digest: String,
    /// Blobs whose digest and size were verified.
    pub blobs: usize,
    /// Bytes of the binary in the layer.
    pub binary_bytes: u64,
    /// Whether the binary in the layer is static (no interpreter, no needed library).
    pub binary_static: bool,
}

fn read_blob(dir: &Path, d: &Value, media: &str) -> Result<Vec<u8>> {
    let digest = d["digest"].as_str().context("a descriptor without a digest")?;
    ensure!(
        d["mediaType"] == media,
        "descriptor {digest}: media type {} instead of {media}",
        d["mediaType"]
    );
    let path = blob_path(dir, digest)?;
    let data = std::fs::read(&path).with_context(|| format!("blob {digest} is missing"))?;
    ensure!(
        sha256(&data) == digest,
        "blob {digest}: its content hashes to {}",
        sha256(&data)
    );
    ensure!(
        d["size"].as_u64() == Some(data.len() as u64),
        "blob {digest}: {} bytes, the descriptor says {}",
        data.len(),
        d["size"]
    );
    Ok(data)
}

/// Validates the OCI layout in `dir`: `oci-layout`, `index.json`, every descriptor's digest and size
/// against its blob, the config's diff id against the uncompressed layer, and the layer's one entry: the
/// binary at [`BINARY_PATH`] with [`BINARY_MODE`], [`UID`] and [`GID`], as the config declares.
pub fn check_layout(dir: &Path) -> Result<Checked> {
    let layout: Value = serde_json::from_slice(
        &std::fs::read(dir.join("oci-layout"))
            .with_context(|| format!("{} is not an OCI layout", dir.display()))?,
    )?;
    ensure!(layout["imageLayoutVersion"] == "1.0.0", "oci-layout: {layout}");
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)?;
    ensure!(index["schemaVersion"] == 2, "index.json: schemaVersion");
    let manifests = index["manifests"]
        .as_array()
        .context("index.json: no manifests")?;
    ensure!(
        manifests.len() == 1,
        "index.json: {} manifests, expected 1",
        manifests.len()
    );
    let md = &manifests[0];
    ensure!(
        md["annotations"][REF_NAME] == env!("CARGO_PKG_VERSION"),
        "index.json: reference {} instead of the version",
        md["annotations"][REF_NAME]
    );
    let manifest: Value = serde_json::from_slice(&read_blob(dir, md, MEDIA_MANIFEST)?)?;
    ensure!(manifest["schemaVersion"] == 2, "manifest: schemaVersion");
    let config: Value = serde_json::from_slice(&read_blob(dir, &manifest["config"], MEDIA_CONFIG)?)?;
    let layers = manifest["layers"].as_array().context("manifest: no layers")?;
    ensure!(layers.len() == 1, "manifest: {} layers, expected 1", layers.len());
    let layer = read_blob(dir, &layers[0], MEDIA_LAYER)?;
    let mut layer_tar = Vec::new();
    flate2::read::GzDecoder::new(&layer[..])
        .read_to_end(&mut layer_tar)
        .context("the layer is not gzip")?;
    ensure!(
        config["rootfs"]["diff_ids"] == json!([sha256(&layer_tar)]),
        "config: diff_ids {} do not match the layer {}",
        config["rootfs"]["diff_ids"],
        sha256(&layer_tar)
    );
    ensure!(
        config["created"] == manifest["annotations"][CREATED],
        "config created {} differs from the manifest's annotation",
        config["created"]
    );
    let c = &config["config"];
    ensure!(c["User"] == format!("{UID}:{GID}"), "config: User {}", c["User"]);
    ensure!(
        c["Entrypoint"] == json!(ENTRYPOINT),
        "config: Entrypoint {}",
        c["Entrypoint"]
    );
    ensure!(c["Cmd"] == json!(CMD), "config: Cmd {}", c["Cmd"]);
    for (k, v) in static_labels() {
        ensure!(
            c["Labels"][&k] == v.as_str(),
            "config: label {k} is {}",
            c["Labels"][&k]
        );
    }
    let entries = untar(&layer_tar)?;
    ensure!(
        entries.len() == 1,
        "the layer holds {:?}, expected only the binary",
        entries.iter().map(|e| &e.path).collect::<Vec<_>>()
    );
    let bin = &entries[0];
    ensure!(
        bin.path == BINARY_PATH.trim_start_matches('/')
            && bin.mode == BINARY_MODE
            && bin.uid == UID
            && bin.gid == GID
            && !bin.is_dir(),
        "the layer's entry is {} mode {:o} owner {}:{}, expected {BINARY_PATH} mode {BINARY_MODE:o} owner {UID}:{GID}",
        bin.path,
        bin.mode,
        bin.uid,
        bin.gid
    );
    Ok(Checked {
        manifest_digest: md["digest"].as_str().unwrap_or_default().into(),
        blobs: 3,
        binary_bytes: bin.data.len() as u64,
        binary_static: elf_linkage(&bin.data).is_ok_and(|l| l.is_static()),
    })
}

/// Runs the layout's binary (extracted from the layer) as the agent against a private test control
/// plane, as its ServiceAccount, until `/readyz`; returns the seconds it took to become ready.
fn smoke(dir: &Path) -> Result<f64> {
    crate::testenv_build()?;
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)?;
    let manifest: Value = serde_json::from_slice(&read_blob(dir, &index["manifests"][0], MEDIA_MANIFEST)?)?;
    let layer = read_blob(dir, &manifest["layers"][0], MEDIA_LAYER)?;
    let mut layer_tar = Vec::new();
    flate2::read::GzDecoder::new(&layer[..]).read_to_end(&mut layer_tar)?;
    let entries = untar(&layer_tar)?;
    let bin = entries.first().context("an empty layer")?;
    let work = workspace_root().join("target/image/smoke");
    std::fs::create_dir_all(&work)?;
    let exe = work.join("lazyscale");
    std::fs::write(&exe, &bin.data)?;
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let server = lazyscale_testenv::Server::start(lazyscale_testenv::ServerOptions::default())
        .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let client = server.client().await?;
        lazyscale_testenv::install_crds(&client).await
    })
    .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    let started = Instant::now();
    let agent = crate::agent::Agent::start(
        crate::agent::AgentOptions::new(&exe, server.agent_kubeconfig_path()).log_to(work.join("agent.log")),
    )
    .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    let ready = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));
    agent
        .stop()
        .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    server.stop();
    Ok(ready)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn image() -> Image {
        Image {
            binary: b"\x7fELF not really a binary".repeat(100),
            created: 1_800_000_000,
            revision: "0123456789abcdef".into(),
        }
    }

    #[test]
    fn tar_round_trips_with_numeric_owners_and_modes() {
        let entries = vec![
            TarEntry {
                path: "dir/".into(),
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 5,
                data: vec![],
            },
            TarEntry {
                path: "dir/file".into(),
                mode: 0o555,
                uid: UID,
                gid: GID,
                mtime: 1_800_000_000,
                data: vec![7; 1000],
            },
        ];
        let t = tar(&entries).unwrap();
        assert_eq!(t.len() % 512, 0);
        assert_eq!(untar(&t).unwrap(), entries);
        // a flipped byte in a header is caught by the checksum
        let mut bad = t.clone();
        bad[110] ^= 1;
        assert!(untar(&bad).is_err());
        assert!(
            tar(&[TarEntry {
                path: "/abs".into(),
                ..entries[1].clone()
            }])
            .is_err()
        );
    }

    #[test]
    fn a_written_layout_checks_and_is_reproducible() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (da, db) = (a.path().join("oci"), b.path().join("oci"));
        let sa = write_layout(&image(), &da).unwrap();
        let sb = write_layout(&image(), &db).unwrap();
        assert_eq!(sa, sb, "same input, same digests");
        let checked = check_layout(&da).unwrap();
        assert_eq!(checked.manifest_digest, sa.manifest_digest);
        assert_eq!(checked.binary_bytes, image().binary.len() as u64);
        assert!(!checked.binary_static, "the fake binary is no ELF executable");
        // another time is another image
        let later = Image {
            created: 1_800_000_001,
            ..image()
        };
        assert_ne!(
            write_layout(&later, &db).unwrap().manifest_digest,
            sa.manifest_digest
        );
        // the archive holds the layout
        let archive = a.path().join("x.tar");
        write_archive(&da, &archive, 1_800_000_000).unwrap();
        let names: Vec<String> = untar(&std::fs::read(&archive).unwrap())
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert!(names.contains(&"index.json".to_string()) && names.contains(&"oci-layout".to_string()));
        assert_eq!(
            names
                .iter()
                .filter(|n| n.starts_with("blobs/sha256/") && n.len() > 13)
                .count(),
            3
        );
    }

    #[test]
    fn the_check_names_a_corrupt_or_missing_blob() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("oci");
        let s = write_layout(&image(), &dir).unwrap();
        let layer = blob_path(&dir, &s.layer_digest).unwrap();
        let mut data = std::fs::read(&layer).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        std::fs::write(&layer, &data).unwrap();
        let e = format!("{:#}", check_layout(&dir).unwrap_err());
        assert!(e.contains(&s.layer_digest), "{e}");
        std::fs::remove_file(&layer).unwrap();
        let e = format!("{:#}", check_layout(&dir).unwrap_err());
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn the_check_refuses_a_layer_with_the_wrong_owner() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("oci");
        // a layer owned by root, with consistent digests everywhere: only the owner is wrong
        let root_tar = tar(&[TarEntry {
            path: "lazyscale".into(),
            mode: BINARY_MODE,
            uid: 0,
            gid: 0,
            mtime: 0,
            data: image().binary,
        }])
        .unwrap();
        store(&assemble(&root_tar, &image()).unwrap(), &dir).unwrap();
        let e = format!("{:#}", check_layout(&dir).unwrap_err());
        assert!(e.contains("owner 0:0"), "{e}");
    }

    #[test]
    fn a_dynamic_executable_is_not_static() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        let l = elf_linkage(&me).unwrap();
        // this test binary is linked dynamically (the default): it names the loader and libc
        assert!(l.interpreter.is_some() && l.needed > 0, "{l:?}");
        assert!(!l.is_static());
        assert!(elf_linkage(b"#!/bin/sh\n").is_err());
    }

    #[test]
    fn the_containerfile_describes_the_same_image() {
        let text = std::fs::read_to_string(workspace_root().join("deploy/image/Containerfile")).unwrap();
        // the final stage: everything after the last FROM
        let last = text.rsplit_once("\nFROM ").map(|(_, s)| s).unwrap();
        let lines: Vec<&str> = last.lines().map(str::trim).collect();
        let one = |word: &str| -> String {
            let found: Vec<&&str> = lines.iter().filter(|l| l.starts_with(word)).collect();
            assert_eq!(found.len(), 1, "one {word} in the final stage");
            found[0][word.len()..].trim().to_string()
        };
        assert!(last.starts_with("scratch"), "an empty base");
        assert_eq!(one("USER "), format!("{UID}:{GID}"));
        assert_eq!(
            serde_json::from_str::<Vec<String>>(&one("ENTRYPOINT ")).unwrap(),
            ENTRYPOINT
        );
        assert_eq!(serde_json::from_str::<Vec<String>>(&one("CMD ")).unwrap(), CMD);
        let ports: Vec<u16> = one("EXPOSE ")
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(ports, PORTS);
        let copy = one("COPY ");
        assert!(copy.contains(&format!("--chown={UID}:{GID}")), "{copy}");
        assert!(copy.contains(&format!("--chmod={BINARY_MODE:04o}")), "{copy}");
        assert!(copy.ends_with(&format!(" {BINARY_PATH}")), "{copy}");
        // the labels of the Containerfile are the layout's fixed labels
        let labels: BTreeMap<String, String> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("LABEL "))
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_string(), serde_json::from_str::<String>(v).unwrap())
            })
            .collect();
        assert_eq!(labels, static_labels());
        // both build the same way: the static glibc release build of the agent
        let build = text.split_once("\nFROM scratch").unwrap().0;
        for flag in [
            "+crt-static",
            TARGET,
            "--release",
            "--locked",
            "CARGO_PROFILE_RELEASE_STRIP=symbols",
        ] {
            assert!(build.contains(flag), "the Containerfile's build lacks {flag}");
        }
    }
}
