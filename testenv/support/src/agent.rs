//! The lazyscale agent as a child process, as the end-to-end tests, the demo and the benchmarks run it:
//! started against a control plane with its admin server and a self-signed webhook on free loopback
//! ports, then observed from outside (readiness, `/metrics`, RSS from `/proc`) like an operator would.
//!
//! The binary is the caller's: integration tests of the agent crate pass `env!("CARGO_BIN_EXE_lazyscale")`,
//! the demo and benchmarks a release build.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How to start the agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The agent binary.
    pub binary: PathBuf,
    /// The kubeconfig it authenticates with (the measured agent identity in tests:
    /// [`crate::Server::agent_kubeconfig_path`]).
    pub kubeconfig: PathBuf,
    /// Flags after the ones this harness sets (`run`, `--kubeconfig`, admin and webhook addresses,
    /// `--self-signed`, `--webhook-url`).
    pub args: Vec<String>,
    /// Where stdout and stderr go; inherited (the test's output) when `None`.
    pub log: Option<PathBuf>,
    /// `RUST_LOG` of the agent.
    pub rust_log: String,
    /// How long to wait for `/readyz`.
    pub ready_timeout: Duration,
}

impl AgentOptions {
    /// Options with the defaults: inherited output, `RUST_LOG=info`, 30 s to become ready.
    pub fn new(binary: impl Into<PathBuf>, kubeconfig: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            kubeconfig: kubeconfig.into(),
            args: Vec::new(),
            log: None,
            rust_log: "info".into(),
            ready_timeout: Duration::from_secs(30),
        }
    }

    /// Adds flags.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sends the agent's output to a file.
    #[must_use]
    pub fn log_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }
}

/// A running agent; killed on drop ([`Agent::stop`] stops it gracefully).
pub struct Agent {
    child: Child,
    /// Admin port on 127.0.0.1 (`/metrics`, `/livez`, `/readyz`, explain).
    pub admin_port: u16,
    /// Webhook port on 127.0.0.1.
    pub webhook_port: u16,
    log: Option<PathBuf>,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// A free TCP port on 127.0.0.1 (bound and released: another process may take it, rarely).
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("bind a loopback port"))?;
    Ok(l.local_addr().map_err(io("read a bound port"))?.port())
}

impl Agent {
    /// Starts the agent and waits until `/readyz` answers 200.
    ///
    /// # Errors
    /// When the process cannot start, exits, or is not ready within the options' timeout; the error
    /// names the log file when there is one.
    pub fn start(o: AgentOptions) -> Result<Agent> {
        let admin_port = free_port()?;
        let webhook_port = free_port()?;
        let mut cmd = Command::new(&o.binary);
        cmd.arg("run")
            .arg("--kubeconfig")
            .arg(&o.kubeconfig)
            .arg(format!("--admin-address=127.0.0.1:{admin_port}"))
            .arg(format!("--webhook-address=127.0.0.1:{webhook_port}"))
            .arg("--self-signed")
            .arg(format!("--webhook-url=https://127.0.0.1:{webhook_port}"))
            .args(&o.args)
            .env("RUST_LOG", &o.rust_log)
            .stdin(Stdio::null());
        if let Some(path) = &o.log {
            let file = std::fs::File::create(path).map_err(io(format!("create {}", path.display())))?;
            let err = file
                .try_clone()
                .map_err(io(format!("reopen {}", path.display())))?;
            cmd.stdout(file).stderr(err);
        }
        let child = cmd.spawn().map_err(io(format!("start {}", o.binary.display())))?;
        let mut agent = Agent {
            child,
            admin_port,
            webhook_port,
            log: o.log,
        };
        agent.wait_ready(o.ready_timeout)?;
        Ok(agent)
    }

    fn see_log(&self) -> String {
        self.log
            .as_ref()
            .map(|p| format!("; see {}", p.display()))
            .unwrap_or_default()
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().map_err(io("wait for the agent"))? {
                return Err(Error::NotReady(format!(
                    "the agent exited ({status}){}",
                    self.see_log()
                )));
            }
            if http_get(self.admin_port, "/readyz").is_ok_and(|(code, _)| code == 200) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::NotReady(format!(
                    "the agent was not ready after {timeout:?}{}",
                    self.see_log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (`Some(status)` once it exited).
    ///
    /// # Errors
    /// When the process cannot be waited on.
    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        self.child.try_wait().map_err(io("wait for the agent"))
    }

    /// The agent's metrics (`name{labels}` → value).
    ///
    /// # Errors
    /// When the admin server does not answer.
    pub fn metrics(&self) -> Result<HashMap<String, f64>> {
        let (_, body) = http_get(self.admin_port, "/metrics")?;
        Ok(parse_metrics(&body))
    }

    /// One metric value (0 when absent or unreachable).
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .ok()
            .and_then(|m| m.get(name).copied())
            .unwrap_or(0.0)
    }

    /// Resident set size and its peak (bytes), from `/proc`.
    pub fn rss(&self) -> (u64, u64) {
        proc_rss(self.child.id())
    }

    /// The resident set split by kind, see [`proc_rss_parts`].
    pub fn rss_parts(&self) -> (u64, u64, u64) {
        proc_rss_parts(self.child.id())
    }

    /// Waits until `cond` holds on the metrics.
    ///
    /// # Errors
    /// After `timeout`, naming `what`.
    pub fn wait_metrics(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&HashMap<String, f64>) -> bool,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Ok(m) = self.metrics()
                && cond(&m)
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::NotReady(format!(
                    "timed out after {timeout:?} waiting for {what}{}",
                    self.see_log()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (asynchronously) until metric `name` equals `value`.
    ///
    /// # Panics
    /// After `timeout`, with the last value seen: a test helper, for which a state that never comes
    /// is the failure.
    pub async fn wait_metric(&self, name: &str, value: f64, timeout: Duration) {
        let start = Instant::now();
        loop {
            let v = self.metric(name);
            if v == value {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "{name} stayed {v}, expected {value}{}",
                self.see_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the agent with SIGTERM (graceful: it releases its Lease), then SIGKILL after 10 s.
    ///
    /// # Errors
    /// When the process cannot be signalled or waited on.
    pub fn stop(mut self) -> Result<Option<std::process::ExitStatus>> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill().map_err(io("kill the agent"))?;
        self.child.wait().map_err(io("wait for the agent"))?;
        Ok(None)
    }

    /// The log file, when the output goes to one.
    pub fn log(&self) -> Option<&Path> {
        self.log.as_deref()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// RSS and peak RSS (`VmRSS`, `VmHWM`) of a process, in bytes (0 when unknown).
pub fn proc_rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| status_bytes(&status, name);
    (field("VmRSS:"), field("VmHWM:"))
}

/// The resident set of a process split by kind (bytes): `(anonymous, file-backed, shared memory)`, from
/// `RssAnon`, `RssFile` and `RssShmem` of `/proc/PID/status`. File-backed pages are mostly the binary's
/// own code and data paged in as code runs: they stay resident after the code stops running (until memory
/// pressure), so they explain RSS a stopped stack leaves behind that no allocator holds.
pub fn proc_rss_parts(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| status_bytes(&status, name);
    (field("RssAnon:"), field("RssFile:"), field("RssShmem:"))
}

/// A `kB` field of `/proc/PID/status` (such as `VmRSS:`) in bytes, 0 when absent.
fn status_bytes(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets the peak RSS of a process (Linux: `5` to `clear_refs`).
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// A plain HTTP/1.0 GET on 127.0.0.1: (status code, body).
///
/// # Errors
/// When the connection fails or times out (5 s).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let what = || format!("GET 127.0.0.1:{port}{path}");
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(io(what()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io(what()))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(io(what()))?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(io(what()))?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Parses Prometheus/OpenMetrics text into `name{labels}` → value.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_with_labels_and_skips_comments() {
        let m = parse_metrics("# HELP a x\n# TYPE a gauge\na 1\nb{kind=\"pod\"} 2.5\n\nc_total 3\n# EOF\n");
        assert_eq!(m.len(), 3);
        assert_eq!(m["a"], 1.0);
        assert_eq!(m["b{kind=\"pod\"}"], 2.5);
        assert_eq!(m["c_total"], 3.0);
    }

    #[test]
    fn reads_own_rss() {
        let (rss, peak) = proc_rss(std::process::id());
        assert!(rss > 0 && peak >= rss, "rss {rss} peak {peak}");
    }
}
