//! The peers `cargo xtask bench lazy` measures beside lazyscale on the same cluster in the same run:
//! a client-go pod informer of ours (what a Go cluster agent holds) and the VPA recommender and admission
//! controller, built from Go modules, and the processes that run them.
//!
//! Their recipe (`testenv/peers/`: `build.sh`, `go.mod`, `go.sum`, `informer/main.go`, embedded here at
//! compile time, plus the Go version) is a third [`Recipe`] beside the control plane's and helm's, with
//! its own key: `<cache>/peers/<key>/` holds `bin/{informer,vpa-recommender,vpa-admission-controller}`,
//! `vpa-crds.yaml` (the VPA module's own `deploy/vpa-v1-crd-gen.yaml`) and `versions.txt`. Every peer
//! links client-go v0.37.2, the control plane's.
//!
//! Each peer runs as a child process ([`Peer`]) with its output in a log file, observed from outside
//! like the agent ([`crate::agent::proc_rss`]); its API requests are counted from the audit log by its
//! own user (a client certificate in [`crate::pki::MEASURED_GROUP`], see
//! [`crate::Server::user_kubeconfig`]).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::ApiResource;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use serde::Deserialize;

use crate::recipe::{BuildOutcome, Recipe};
use crate::{Error, Result};

/// The files of the peers' recipe, as (name under `testenv/`, content).
const RECIPE: &[(&str, &str)] = &[
    ("peers/build.sh", include_str!("../../peers/build.sh")),
    ("peers/go.mod", include_str!("../../peers/go.mod")),
    ("peers/go.sum", include_str!("../../peers/go.sum")),
    (
        "peers/informer/main.go",
        include_str!("../../peers/informer/main.go"),
    ),
];

/// The peers' recipe.
pub const PEERS: Recipe = Recipe {
    name: "peers",
    folder: "peers",
    files: RECIPE,
    script: "peers/build.sh",
    outputs: &[
        "bin/informer",
        "bin/vpa-recommender",
        "bin/vpa-admission-controller",
        "vpa-crds.yaml",
        "versions.txt",
    ],
};

/// The files of a finished peers build.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// Our client-go pod informer (`testenv/peers/informer`).
    pub informer: PathBuf,
    /// The VPA recommender.
    pub vpa_recommender: PathBuf,
    /// The VPA admission controller.
    pub vpa_admission_controller: PathBuf,
    /// The VPA's CRDs, from its module.
    pub vpa_crds: PathBuf,
    /// `peer module@version` lines and the Go version.
    pub versions: PathBuf,
}

/// The peers of the current recipe, if built.
///
/// # Errors
/// When the current recipe is not built.
pub fn binaries() -> Result<Binaries> {
    let dir = PEERS.build_dir();
    if !PEERS.is_built() {
        return Err(Error::NotBuilt(dir.display().to_string()));
    }
    Ok(Binaries {
        informer: dir.join("bin/informer"),
        vpa_recommender: dir.join("bin/vpa-recommender"),
        vpa_admission_controller: dir.join("bin/vpa-admission-controller"),
        vpa_crds: dir.join("vpa-crds.yaml"),
        versions: dir.join("versions.txt"),
    })
}

/// Builds the peers unless the current recipe is already built. `recipe_dir` is the `testenv/` folder
/// of the source tree; its files must match what this crate was compiled with.
///
/// # Errors
/// When the build fails (its output names the module and the step).
pub fn ensure_built(recipe_dir: &Path) -> Result<(Binaries, BuildOutcome)> {
    let outcome = PEERS.ensure_built(recipe_dir)?;
    Ok((binaries()?, outcome))
}

/// `peer module@version` of each built peer, one per line, and the Go version.
///
/// # Errors
/// When the build's `versions.txt` cannot be read.
pub fn versions() -> Result<String> {
    let path = PEERS.build_dir().join("versions.txt");
    std::fs::read_to_string(&path).map_err(|source| Error::Io {
        what: format!("read {}", path.display()),
        source,
    })
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// A peer process: stdout and stderr to a log file (stdout piped instead for [`Informer`]), killed on
/// drop.
pub struct Peer {
    child: Child,
    started: Instant,
    log: PathBuf,
}

impl Peer {
    /// Starts `binary` with `args`, its output appended to `log`.
    ///
    /// # Errors
    /// When the log cannot be created or the process cannot start.
    pub fn start(binary: &Path, args: &[String], log: &Path) -> Result<Peer> {
        let file = std::fs::File::create(log).map_err(io(format!("create {}", log.display())))?;
        let err = file
            .try_clone()
            .map_err(io(format!("reopen {}", log.display())))?;
        let started = Instant::now();
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(io(format!("start {}", binary.display())))?;
        Ok(Peer {
            child,
            started,
            log: log.to_path_buf(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// RSS and peak RSS in bytes.
    pub fn rss(&self) -> (u64, u64) {
        crate::agent::proc_rss(self.child.id())
    }

    /// Seconds since the process was started.
    pub fn uptime(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Waits until the log has `count` lines for which `matches` holds and returns the last of them and
    /// the seconds since the start at which it was seen (polled every 20 ms); `what` names the wait.
    ///
    /// # Errors
    /// When the process exits or `timeout` passes first.
    pub fn wait_log(
        &mut self,
        what: &str,
        count: usize,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Result<(String, f64)> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let found: Vec<&str> = text.lines().filter(|l| matches(l)).collect();
            if found.len() >= count.max(1)
                && let Some(line) = found.last()
            {
                return Ok((line.to_string(), self.uptime()));
            }
            self.check_running()?;
            if Instant::now() > deadline {
                return Err(Error::NotReady(format!(
                    "{what}: not logged {count} time(s) after {timeout:?}; see {}",
                    self.log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `127.0.0.1:port` accepts a TCP connection; returns the seconds since the start.
    ///
    /// # Errors
    /// When the process exits or `timeout` passes first.
    pub fn wait_port(&mut self, port: u16, timeout: Duration) -> Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            if std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return Ok(self.uptime());
            }
            self.check_running()?;
            if Instant::now() > deadline {
                return Err(Error::NotReady(format!(
                    "127.0.0.1:{port} not accepting after {timeout:?}; see {}",
                    self.log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().map_err(io("wait for a peer"))? {
            return Err(Error::NotReady(format!(
                "the peer exited ({status}); see {}",
                self.log.display()
            )));
        }
        Ok(())
    }

    /// Stops the process (SIGTERM, then SIGKILL after 5 s).
    pub fn stop(mut self) {
        terminate(&mut self.child);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One line of the informer peer (see `testenv/peers/informer/main.go`).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct InformerReport {
    /// `synced` (the first line) or `stats`.
    pub event: String,
    /// Pods in the informer's store.
    pub pods: u64,
    /// Seconds from the start of the program to the informer's sync.
    pub sync_seconds: f64,
    /// `VmRSS`.
    pub rss_bytes: u64,
    /// `VmHWM`.
    pub peak_rss_bytes: u64,
    /// Go's `HeapAlloc`.
    pub heap_bytes: u64,
    /// Go's `HeapInuse`.
    pub heap_inuse_bytes: u64,
    /// Go's `HeapSys`.
    pub heap_sys_bytes: u64,
}

/// The client-go pod informer peer, running: cluster-wide shared informer on full Pods.
pub struct Informer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Informer {
    /// Starts the informer with `kubeconfig` and waits (at most `timeout`) for its `synced` line.
    ///
    /// # Errors
    /// When it cannot start, exits, prints something else or does not sync in time.
    pub fn start(
        binary: &Path,
        kubeconfig: &Path,
        log: &Path,
        timeout: Duration,
    ) -> Result<(Informer, InformerReport)> {
        let err = std::fs::File::create(log).map_err(io(format!("create {}", log.display())))?;
        let mut child = Command::new(binary)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .map_err(io(format!("start {}", binary.display())))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::NotReady("the informer's stdout is not piped".into()))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut informer = Informer { child, stdin, lines };
        let first = informer.next(timeout)?;
        Ok((informer, first))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn next(&mut self, timeout: Duration) -> Result<InformerReport> {
        let line = self.lines.recv_timeout(timeout).map_err(|_| {
            let status = self.child.try_wait().ok().flatten();
            Error::NotReady(format!(
                "the informer printed nothing in {timeout:?} (exit status: {status:?})"
            ))
        })?;
        serde_json::from_str(&line)
            .map_err(|e| Error::NotReady(format!("the informer printed {line:?}: {e}")))
    }

    /// Asks for one `stats` line (the informer keeps running).
    ///
    /// # Errors
    /// When the informer does not answer within 10 s.
    pub fn stats(&mut self) -> Result<InformerReport> {
        if let Some(stdin) = self.stdin.as_mut() {
            stdin
                .write_all(b"\n")
                .and_then(|()| stdin.flush())
                .map_err(io("ask the informer for stats"))?;
        }
        self.next(Duration::from_secs(10))
    }

    /// Ends the informer (end of its stdin, then SIGTERM).
    pub fn stop(mut self) {
        drop(self.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        terminate(&mut self.child);
    }
}

impl Drop for Informer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The field manager the peers' objects are applied with.
const MANAGER: &str = "lazyscale-bench-peers";

/// Applies the VPA's CRDs from the module's own file (`path`, multi-document YAML) and waits until
/// each is established.
///
/// # Errors
/// When the file cannot be read or parsed, the API server refuses a CRD, or one is not established
/// within 30 s.
pub async fn install_vpa_crds(client: &kube::Client, path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(io(format!("read {}", path.display())))?;
    let crds = yaml_documents(&text)
        .into_iter()
        .map(|doc| {
            serde_saphyr::from_str::<CustomResourceDefinition>(doc)
                .map_err(|e| Error::NotReady(format!("parse {}: {e}", path.display())))
        })
        .collect::<Result<Vec<_>>>()?;
    crate::crds::apply_crds(client, MANAGER, crds).await
}

/// The non-empty documents of a multi-document YAML text.
fn yaml_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    docs.push(&text[start..]);
    docs.into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

/// The `autoscaling.k8s.io/v1` VerticalPodAutoscaler resource.
pub fn vpa_resource() -> ApiResource {
    ApiResource {
        group: "autoscaling.k8s.io".into(),
        version: "v1".into(),
        api_version: "autoscaling.k8s.io/v1".into(),
        kind: "VerticalPodAutoscaler".into(),
        plural: "verticalpodautoscalers".into(),
    }
}

/// A VerticalPodAutoscaler named after the Deployment it targets, in `update_mode` (`Off`, `Initial`,
/// `Recreate`, `InPlaceOrRecreate`).
pub fn vpa_object(namespace: &str, deployment: &str, update_mode: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "autoscaling.k8s.io/v1",
        "kind": "VerticalPodAutoscaler",
        "metadata": {"name": deployment, "namespace": namespace},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "updatePolicy": {"updateMode": update_mode},
        },
    })
}

/// PEM files of a webhook serving certificate for `127.0.0.1`, signed by a CA of its own.
#[derive(Debug, Clone)]
pub struct ServingCert {
    /// The CA certificate (the webhook's caBundle).
    pub ca: PathBuf,
    /// The serving certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// Generates a CA and a serving certificate for `127.0.0.1` into `dir` (`<name>-ca.crt`,
/// `<name>.crt`, `<name>.key`).
///
/// # Errors
/// When generating or writing fails.
pub fn loopback_serving_cert(dir: &Path, name: &str) -> Result<ServingCert> {
    let gen_err =
        |what: &'static str| move |e: rcgen::Error| Error::NotReady(format!("generate {what}: {e}"));
    let ca_key = KeyPair::generate().map_err(gen_err("a CA key"))?;
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{name}-ca"));
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).map_err(gen_err("a CA certificate"))?;
    let issuer = Issuer::from_params(&ca, &ca_key);
    let key = KeyPair::generate().map_err(gen_err("a serving key"))?;
    let mut sp =
        CertificateParams::new(vec!["127.0.0.1".to_string()]).map_err(gen_err("a serving certificate"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    sp.distinguished_name = dn;
    sp.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = sp
        .signed_by(&key, &issuer)
        .map_err(gen_err("a serving certificate"))?;
    std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    let out = ServingCert {
        ca: dir.join(format!("{name}-ca.crt")),
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    let write = |p: &Path, s: &str| std::fs::write(p, s).map_err(io(format!("write {}", p.display())));
    write(&out.ca, &ca_cert.pem())?;
    write(&out.cert, &cert.pem())?;
    write(&out.key, &key.serialize_pem())?;
    Ok(out)
}

/// The VPA recommender's flags against `kubeconfig`: metrics on `127.0.0.1:metrics_port`, one
/// recommendation pass every `interval`, klog at `-v=3` (each pass logs the pods and VPAs it tracks),
/// everything else at the release's defaults (checkpoint storage, every pod tracked).
pub fn recommender_args(kubeconfig: &Path, metrics_port: u16, interval: Duration) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--address=127.0.0.1:{metrics_port}"),
        format!("--recommender-interval={}s", interval.as_secs().max(1)),
        "--v=3".to_string(),
    ]
}

/// The VPA admission controller's flags against `kubeconfig`: TLS from `cert` on `port`, registered
/// with the API server by URL (`https://127.0.0.1:port`, caBundle from `cert.ca`), metrics on
/// `127.0.0.1:metrics_port`. (The release listens on every interface of `port`: its server address
/// is `:port`, with no flag for the host.)
pub fn admission_args(kubeconfig: &Path, cert: &ServingCert, port: u16, metrics_port: u16) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--client-ca-file={}", cert.ca.display()),
        format!("--tls-cert-file={}", cert.cert.display()),
        format!("--tls-private-key={}", cert.key.display()),
        format!("--port={port}"),
        "--register-by-url=true".to_string(),
        "--webhook-address=https://127.0.0.1".to_string(),
        format!("--webhook-port={port}"),
        format!("--address=127.0.0.1:{metrics_port}"),
        "--v=2".to_string(),
    ]
}

/// The MutatingWebhookConfiguration the admission controller registers (delete it after the run).
pub const VPA_WEBHOOK_CONFIGURATION: &str = "vpa-webhook-config";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_embeds_every_input_of_the_build() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../peers");
        let mut on_disk = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().filter_map(|e| e.ok()) {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned();
                    on_disk.push(format!("peers/{rel}"));
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = RECIPE.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(
            on_disk, embedded,
            "a file of testenv/peers is not part of the peers recipe key"
        );
    }

    #[test]
    fn key_differs_from_the_other_recipes() {
        let k = PEERS.key();
        assert_eq!(k.len(), 16);
        assert_ne!(k, crate::recipe::CONTROL_PLANE.key());
        assert_ne!(k, crate::helm::HELM.key());
    }

    #[test]
    fn yaml_documents_split_on_separators_only() {
        let text = "---\na: 1\n---\n# only a comment\n---\nb: |\n  x --- y\nc: 2\n";
        let docs = yaml_documents(text);
        assert_eq!(docs, vec!["a: 1\n", "b: |\n  x --- y\nc: 2\n"]);
    }

    #[test]
    fn loopback_certificate_is_signed_for_127_0_0_1() {
        let dir = std::env::temp_dir().join(format!("peers-cert-{}", std::process::id()));
        let c = loopback_serving_cert(&dir, "vpa-webhook").unwrap();
        let cert = std::fs::read_to_string(&c.cert).unwrap();
        let ca = std::fs::read_to_string(&c.ca).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_ne!(cert, ca);
        // rustls verifies the chain and the IP address the API server will dial
        let mut roots = rustls::RootCertStore::empty();
        let ca_der = rustls_pemfile_der(&ca);
        roots.add(ca_der).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let leaf = rustls_pemfile_der(&cert);
        let ip = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        use rustls::client::danger::ServerCertVerifier;
        verifier
            .verify_server_cert(&leaf, &[], &ip, &[], rustls::pki_types::UnixTime::now())
            .unwrap();
        let other = rustls::pki_types::ServerName::try_from("example.invalid").unwrap();
        assert!(
            verifier
                .verify_server_cert(&leaf, &[], &other, &[], rustls::pki_types::UnixTime::now())
                .is_err()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn rustls_pemfile_der(pem: &str) -> rustls::pki_types::CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }
}
