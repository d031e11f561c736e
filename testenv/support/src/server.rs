//! Starting and stopping one etcd + API server pair on free loopback ports.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::recipe::{self, Binaries};
use crate::{Error, Result};

/// How to start a [`Server`].
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// The folder for data, certificates, logs and the kubeconfig. Emptied first. A fresh temporary
    /// folder (removed on drop) when `None`.
    pub dir: Option<PathBuf>,
    /// Leave the processes running when the [`Server`] is dropped or the process exits
    /// (`cargo xtask testenv up`); [`Server::stop_recorded`] stops them later.
    pub detached: bool,
    /// Start from a copy of this etcd data folder instead of an empty one (a saved, populated cluster).
    pub etcd_snapshot: Option<PathBuf>,
}

/// A running etcd + API server pair.
pub struct Server {
    dir: PathBuf,
    remove_dir: bool,
    port: u16,
    etcd_port: u16,
    kubeconfig: PathBuf,
    children: Vec<Child>,
    /// Held open while this value lives; the watchdog stops the servers when it closes.
    watchdog: Option<(Child, ChildStdin)>,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("bind a free loopback port"))?;
    Ok(l.local_addr().map_err(io("read the bound port"))?.port())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl Server {
    /// Starts etcd and the API server and waits until `/readyz` is ok (default namespaces and the
    /// metrics.k8s.io resources exist by then).
    pub fn start(opts: ServerOptions) -> Result<Server> {
        let bins = recipe::binaries()?;
        let (dir, remove_dir) = match &opts.dir {
            Some(d) => (d.clone(), false),
            None => {
                let base = std::env::temp_dir().join(format!(
                    "lazyscale-testenv-{}-{}",
                    std::process::id(),
                    free_port()?
                ));
                (base, true)
            }
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(format!("empty {}", dir.display())))?;
        }
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let mut server = Server {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            remove_dir,
            port: 0,
            etcd_port: 0,
            children: Vec::new(),
            watchdog: None,
        };
        if let Some(snap) = &opts.etcd_snapshot {
            copy_dir(snap, &server.dir.join("etcd"))?;
        }
        server.spawn(&bins, opts.detached)?;
        Ok(server)
    }

    fn spawn(&mut self, bins: &Binaries, detached: bool) -> Result<()> {
        let dir = self.dir.clone();
        // Retry on a port taken between probing and binding.
        let mut last = None;
        for _ in 0..3 {
            let (etcd_port, peer_port, port) = (free_port()?, free_port()?, free_port()?);
            let etcd = Command::new(&bins.etcd)
                .arg(format!("--data-dir={}", dir.join("etcd").display()))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
                ))
                .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"))
                // Test data is disposable: no fsync, and room for 100,000+ pods.
                .arg("--unsafe-no-fsync")
                .arg("--quota-backend-bytes=8589934592")
                .arg("--log-level=warn")
                .stdin(Stdio::null())
                .stdout(log_file(&dir, "etcd.log")?)
                .stderr(log_file(&dir, "etcd.log")?)
                .spawn()
                .map_err(io(format!("start {}", bins.etcd.display())))?;
            self.children.push(etcd);
            let apiserver = Command::new(&bins.apiserver)
                .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
                .arg(format!("--secure-port={port}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--cert-dir={}", dir.join("certs").display()))
                .arg("--enable-priority-and-fairness=false")
                // Bulk loads must be bounded by CPU, not by in-flight throttling (0 = no limit).
                .arg("--max-requests-inflight=0")
                .arg("--max-mutating-requests-inflight=0")
                .arg("-v=1")
                .stdin(Stdio::null())
                .stdout(log_file(&dir, "apiserver.log")?)
                .stderr(log_file(&dir, "apiserver.log")?)
                .spawn()
                .map_err(io(format!("start {}", bins.apiserver.display())))?;
            self.children.push(apiserver);
            self.port = port;
            self.etcd_port = etcd_port;
            std::fs::write(
                dir.join("pids"),
                self.children
                    .iter()
                    .map(|c| c.id().to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
            .map_err(io("write pids"))?;
            if !detached {
                self.start_watchdog()?;
            }
            match self.wait_ready(Duration::from_secs(60)) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.kill();
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::NotReady("no attempt made".into())))
    }

    /// A shell that waits for its stdin to close (this process exiting or dropping the server), then
    /// stops the servers.
    fn start_watchdog(&mut self) -> Result<()> {
        let pids: Vec<String> = self.children.iter().map(|c| c.id().to_string()).collect();
        let pids = pids.join(" ");
        let script = format!(
            "read -r _; kill -TERM {pids} 2>/dev/null; sleep 3; kill -KILL {pids} 2>/dev/null; {}",
            if self.remove_dir {
                format!("rm -rf '{}'", self.dir.display())
            } else {
                String::new()
            }
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("start the watchdog"))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| Error::NotReady("watchdog without stdin".into()))?;
        self.watchdog = Some((child, stdin));
        Ok(())
    }

    fn check_exited(&mut self) -> Result<()> {
        for (i, c) in self.children.iter_mut().enumerate() {
            if let Ok(Some(status)) = c.try_wait() {
                let (name, log) = if i == 0 {
                    ("etcd", "etcd.log")
                } else {
                    ("the API server", "apiserver.log")
                };
                return Err(Error::NotReady(format!(
                    "{name} exited ({status}); last lines of {}:\n{}",
                    self.dir.join(log).display(),
                    tail(&self.dir.join(log))
                )));
            }
        }
        Ok(())
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let ca = self.dir.join("certs/apiserver.crt");
        // The serving certificate is written early in start-up; readiness comes later.
        while !ca.exists() {
            self.check_exited()?;
            if Instant::now() > deadline {
                return Err(self.not_ready(timeout));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(20));
        self.write_kubeconfig()?;
        loop {
            self.check_exited()?;
            let step = (Instant::now() + Duration::from_millis(500)).min(deadline);
            if probe_ready(&self.kubeconfig, step)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.not_ready(timeout));
            }
        }
    }

    fn not_ready(&self, timeout: Duration) -> Error {
        Error::NotReady(format!(
            "the API server was not ready after {timeout:?}; last lines of {}:\n{}",
            self.dir.join("apiserver.log").display(),
            tail(&self.dir.join("apiserver.log"))
        ))
    }

    fn write_kubeconfig(&self) -> Result<()> {
        // The serving certificate file holds the serving certificate, then the CA that signed it.
        let pem = std::fs::read_to_string(self.dir.join("certs/apiserver.crt"))
            .map_err(io("read the serving certificate"))?;
        let start = pem
            .rfind("-----BEGIN CERTIFICATE-----")
            .ok_or_else(|| Error::NotReady("no certificate in certs/apiserver.crt".into()))?;
        let ca_path = self.dir.join("ca.crt");
        std::fs::write(&ca_path, &pem[start..]).map_err(io("write ca.crt"))?;
        let kubeconfig = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: lazyscale-testenv
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority: {ca}
users:
- name: lazyscale-testenv
  user: {{token: anonymous-requests-are-allowed}}
contexts:
- name: lazyscale-testenv
  context: {{cluster: lazyscale-testenv, user: lazyscale-testenv}}
current-context: lazyscale-testenv
",
            port = self.port,
            ca = ca_path.display()
        );
        std::fs::write(&self.kubeconfig, kubeconfig).map_err(io("write the kubeconfig"))
    }

    /// The kubeconfig of this server.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The folder with data, logs, certificates and the kubeconfig.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The API server's HTTPS port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The etcd data folder (copy it while the server is stopped to save a populated cluster).
    pub fn etcd_data_dir(&self) -> PathBuf {
        self.dir.join("etcd")
    }

    /// Process ids: etcd, then the API server.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// The client configuration of this server (to adjust before building a client).
    pub async fn config(&self) -> Result<kube::Config> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        Ok(kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?)
    }

    /// A client for the calling tokio runtime.
    pub async fn client(&self) -> Result<kube::Client> {
        Ok(kube::Client::try_from(self.config().await?)?)
    }

    /// The server's `/metrics` text.
    pub async fn metrics_text(&self, client: &kube::Client) -> Result<String> {
        let req = http_get("/metrics")?;
        Ok(client.request_text(req).await?)
    }

    fn kill(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        if let Some((mut child, stdin)) = self.watchdog.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Stops the processes and, for a temporary folder, removes it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.kill();
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Releases the processes without stopping them (for `testenv up`).
    pub fn detach(mut self) {
        self.children.clear();
        self.watchdog = None;
        self.remove_dir = false;
    }

    /// Stops the processes recorded in `dir/pids` by a detached server, if they are still ours (their
    /// command line mentions `dir`). Returns how many were stopped.
    pub fn stop_recorded(dir: &Path) -> Result<usize> {
        let Ok(pids) = std::fs::read_to_string(dir.join("pids")) else {
            return Ok(0);
        };
        let mut stopped = 0;
        let needle = dir.display().to_string();
        for pid in pids.lines().rev().filter_map(|l| l.trim().parse::<u32>().ok()) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if !cmdline.contains(&needle) {
                continue;
            }
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            for _ in 0..100 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            }
            stopped += 1;
        }
        let _ = std::fs::remove_file(dir.join("pids"));
        Ok(stopped)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.children.is_empty() {
            self.shutdown();
        }
    }
}

fn http_get(path: &str) -> Result<http::Request<Vec<u8>>> {
    http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| Error::NotReady(format!("build request: {e}")))
}

fn log_file(dir: &Path, name: &str) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .map_err(io(format!("open {name}")))
}

/// Polls `GET /readyz` through a client that trusts the CA (from a plain thread with its own runtime, so
/// this works from inside an async test too).
fn probe_ready(kubeconfig: &Path, deadline: Instant) -> Result<bool> {
    let kubeconfig = kubeconfig.to_path_buf();
    let handle = std::thread::spawn(move || -> Result<bool> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("start a runtime for the readiness probe"))?;
        rt.block_on(async move {
            let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
            let config =
                kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
            let client = kube::Client::try_from(config)?;
            while Instant::now() < deadline {
                let probe =
                    tokio::time::timeout(Duration::from_secs(2), client.request_text(http_get("/readyz")?));
                if let Ok(Ok(text)) = probe.await
                    && text == "ok"
                {
                    return Ok(true);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(false)
        })
    });
    handle
        .join()
        .unwrap_or_else(|_| Err(Error::NotReady("readiness probe thread panicked".into())))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .map_err(io("copy the etcd snapshot"))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::NotReady(format!(
            "copying {} to {} failed",
            from.display(),
            to.display()
        )))
    }
}
