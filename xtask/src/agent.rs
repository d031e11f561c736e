//! Running the agent binary as a child process and reading what it reports (shared by the demo and the
//! benchmarks).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Builds the agent in release mode and returns the binary's path.
pub fn build_agent() -> Result<PathBuf> {
    let root = crate::workspace_root();
    crate::run(crate::cargo().args(["build", "--release", "--quiet", "-p", "lazyscale"]))?;
    Ok(root.join("target/release/lazyscale"))
}

/// A running agent.
pub struct Agent {
    child: Child,
    /// Admin port on 127.0.0.1.
    pub admin_port: u16,
    /// Webhook port on 127.0.0.1.
    pub webhook_port: u16,
    /// Log file.
    pub log: PathBuf,
}

/// Agent start options.
pub struct AgentOptions<'a> {
    /// The binary.
    pub binary: &'a Path,
    /// The kubeconfig.
    pub kubeconfig: &'a Path,
    /// Extra flags.
    pub args: Vec<String>,
    /// Where the log goes.
    pub log: PathBuf,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Agent {
    /// Starts the agent with an admin port and a self-signed webhook on free loopback ports.
    pub fn start(o: AgentOptions<'_>) -> Result<Agent> {
        let admin_port = free_port()?;
        let webhook_port = free_port()?;
        let log = std::fs::File::create(&o.log).with_context(|| format!("create {}", o.log.display()))?;
        let child = Command::new(o.binary)
            .arg("run")
            .arg("--kubeconfig")
            .arg(o.kubeconfig)
            .arg(format!("--admin-address=127.0.0.1:{admin_port}"))
            .arg(format!("--webhook-address=127.0.0.1:{webhook_port}"))
            .arg("--self-signed")
            .arg(format!("--webhook-url=https://127.0.0.1:{webhook_port}"))
            .args(&o.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", o.binary.display()))?;
        let mut agent = Agent {
            child,
            admin_port,
            webhook_port,
            log: o.log,
        };
        agent.wait_ready(Duration::from_secs(30))?;
        Ok(agent)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the agent exited ({status}); see {}", self.log.display());
            }
            if http_get(self.admin_port, "/readyz")
                .map(|(code, _)| code == 200)
                .unwrap_or(false)
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "the agent was not ready after {timeout:?}; see {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's metrics (name with labels → value).
    pub fn metrics(&self) -> Result<HashMap<String, f64>> {
        let (_, body) = http_get(self.admin_port, "/metrics")?;
        Ok(parse_metrics(&body))
    }

    /// One metric value (0 when absent).
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .ok()
            .and_then(|m| m.get(name).copied())
            .unwrap_or(0.0)
    }

    /// Resident set size and its peak, from /proc.
    pub fn rss(&self) -> (u64, u64) {
        proc_rss(self.child.id())
    }

    /// Waits until `cond` holds on the metrics, or fails after `timeout`.
    pub fn wait_for(
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
                bail!(
                    "timed out after {timeout:?} waiting for {what}; see {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the agent with SIGTERM (graceful), then SIGKILL after 10 s.
    pub fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// RSS and peak RSS (VmRSS, VmHWM) of a process, in bytes.
pub fn proc_rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak RSS of a process (Linux: write 5 to clear_refs).
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// A plain HTTP/1.0 GET on 127.0.0.1.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
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
