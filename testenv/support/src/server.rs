//! Starting and stopping one control plane on free loopback ports: etcd, kube-apiserver (TLS with a
//! generated CA, `Node,RBAC` authorization, service-account tokens, the default admission plugins, the
//! aggregation layer, an audit log of measured clients), kube-controller-manager, kube-scheduler and
//! kwok (fake nodes and the pod lifecycle), then the bootstrap objects: the metrics.k8s.io resources and
//! the fake nodes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::pki::{self, Pki};
use crate::recipe::{self, Binaries};
use crate::{Error, Result, audit, rbac};

/// The annotation kwok manages nodes by.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// Name prefix of the fake nodes created at start.
pub const NODE_PREFIX: &str = "kwok-node-";

/// How to start a [`Server`].
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The folder for data, certificates, logs and the kubeconfigs. Emptied first. A fresh temporary
    /// folder (removed on drop) when `None`.
    pub dir: Option<PathBuf>,
    /// Leave the processes running when the [`Server`] is dropped or the process exits
    /// (`cargo xtask testenv up`); [`Server::stop_recorded`] stops them later.
    pub detached: bool,
    /// Start from a copy of this etcd data folder instead of an empty one (a saved, populated cluster).
    pub etcd_snapshot: Option<PathBuf>,
    /// Fake nodes to create (`kwok-node-0`, ...), each with [`ServerOptions::node_cpu`] cores,
    /// [`ServerOptions::node_memory`] and room for [`ServerOptions::node_pods`] pods.
    pub nodes: u32,
    /// CPU of each fake node, as a quantity.
    pub node_cpu: String,
    /// Memory of each fake node, as a quantity.
    pub node_memory: String,
    /// Pods per fake node.
    pub node_pods: u32,
    /// kube-controller-manager controllers to turn off besides the node ones (for tests that create
    /// pods owned by objects that do not exist, `garbage-collector-controller`).
    pub disabled_controllers: Vec<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            dir: None,
            detached: false,
            etcd_snapshot: None,
            nodes: 3,
            node_cpu: "32".to_string(),
            node_memory: "128Gi".to_string(),
            node_pods: 500,
            disabled_controllers: Vec::new(),
        }
    }
}

/// The processes, in start order (their logs are `<name>.log` in the server's folder).
const PROCESSES: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];

/// A running control plane.
pub struct Server {
    dir: PathBuf,
    remove_dir: bool,
    port: u16,
    etcd_port: u16,
    kubeconfig: PathBuf,
    agent_kubeconfig: PathBuf,
    pki: Option<Pki>,
    children: Vec<Child>,
    /// How each child was started (binary, arguments), for [`Server::restart_component`].
    commands: Vec<(PathBuf, Vec<String>)>,
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

/// Servers started by this process, to name their directories apart.
static STARTED: AtomicU32 = AtomicU32::new(0);

/// A new, empty directory of its own for one server of this process. It is created exclusively, so two
/// servers started at once (tests of one binary run in parallel) never share, or empty, each other's
/// directory; a name picked from a free port could repeat.
fn private_dir() -> Result<PathBuf> {
    let tmp = std::env::temp_dir();
    loop {
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = tmp.join(format!("lazyscale-testenv-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            // A directory a dead process with the same id left behind: skip its name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(format!("create {}", dir.display()))(e)),
        }
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn arg(k: &str, v: impl std::fmt::Display) -> String {
    format!("--{k}={v}")
}

impl Server {
    /// Starts the control plane and waits until it is usable: `/readyz` ok, the metrics.k8s.io
    /// resources served, the fake nodes Ready (kwok runs) and the `default` ServiceAccount of the
    /// `default` namespace created (kube-controller-manager runs).
    pub fn start(opts: ServerOptions) -> Result<Server> {
        let bins = recipe::binaries()?;
        let (dir, remove_dir) = match &opts.dir {
            Some(d) => (d.clone(), false),
            None => (private_dir()?, true),
        };
        if !remove_dir {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io(format!("empty {}", dir.display())))?;
            }
            std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        }
        let mut server = Server {
            kubeconfig: dir.join("kubeconfig"),
            agent_kubeconfig: dir.join("agent.kubeconfig"),
            dir,
            remove_dir,
            port: 0,
            etcd_port: 0,
            pki: None,
            children: Vec::new(),
            commands: Vec::new(),
            watchdog: None,
        };
        if let Some(snap) = &opts.etcd_snapshot {
            copy_dir(snap, &server.dir.join("etcd"))?;
        }
        server.pki = Some(Pki::generate(&server.dir.join("pki"))?);
        std::fs::write(server.dir.join("audit-policy.yaml"), audit::policy())
            .map_err(io("write the audit policy"))?;
        server.spawn(&bins, &opts)?;
        Ok(server)
    }

    fn pki(&self) -> Result<&Pki> {
        self.pki
            .as_ref()
            .ok_or_else(|| Error::NotReady("no certificates".into()))
    }

    fn spawn_process(&mut self, name: &str, bin: &Path, args: Vec<String>) -> Result<()> {
        let child = self.spawn_command(name, bin, &args)?;
        self.children.push(child);
        self.commands.push((bin.to_path_buf(), args));
        self.write_pids()
    }

    fn spawn_command(&self, name: &str, bin: &Path, args: &[String]) -> Result<Child> {
        Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir, &format!("{name}.log"))?)
            .stderr(log_file(&self.dir, &format!("{name}.log"))?)
            .spawn()
            .map_err(io(format!("start {}", bin.display())))
    }

    fn component_index(&self, name: &str) -> Result<usize> {
        PROCESSES
            .iter()
            .position(|p| *p == name)
            .filter(|i| *i < self.children.len())
            .ok_or_else(|| Error::NotReady(format!("no component {name}")))
    }

    /// Kills one component (`etcd`, `kube-apiserver`, ... as in [`Server::pids`]) with SIGKILL, as a
    /// crash would; [`Server::restart_component`] starts it again. Fault tests only.
    ///
    /// # Errors
    /// When there is no such component or it cannot be waited on.
    pub fn kill_component(&mut self, name: &str) -> Result<()> {
        let i = self.component_index(name)?;
        let child = &mut self.children[i];
        if child
            .try_wait()
            .map_err(io(format!("wait for {name}")))?
            .is_none()
        {
            child.kill().map_err(io(format!("kill {name}")))?;
        }
        child.wait().map_err(io(format!("wait for {name}")))?;
        Ok(())
    }

    /// Starts a component stopped by [`Server::kill_component`] again with its original arguments (same
    /// ports, same data), killing it first if it still runs; for `kube-apiserver`, waits until `/readyz`
    /// answers again (up to 90 s).
    ///
    /// # Errors
    /// When it cannot start or the API server does not become ready.
    pub fn restart_component(&mut self, name: &str) -> Result<()> {
        self.kill_component(name)?;
        let i = self.component_index(name)?;
        let (bin, args) = self.commands[i].clone();
        self.children[i] = self.spawn_command(name, &bin, &args)?;
        self.write_pids()?;
        if name == "kube-apiserver" {
            self.wait_apiserver(Duration::from_secs(90))?;
        }
        Ok(())
    }

    /// etcd's client URL (plain HTTP on loopback; its JSON gateway serves `/v3/kv/...`).
    pub fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_port)
    }

    fn write_pids(&self) -> Result<()> {
        std::fs::write(
            self.dir.join("pids"),
            self.children
                .iter()
                .map(|c| format!("{}\n", c.id()))
                .collect::<String>(),
        )
        .map_err(io("write pids"))
    }

    fn spawn(&mut self, bins: &Binaries, opts: &ServerOptions) -> Result<()> {
        // Retry on a port taken between probing and binding.
        let mut last = None;
        for _ in 0..3 {
            match self.spawn_once(bins, opts) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.kill();
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::NotReady("no attempt made".into())))
    }

    fn spawn_once(&mut self, bins: &Binaries, opts: &ServerOptions) -> Result<()> {
        let dir = self.dir.clone();
        let d = |p: &str| dir.join(p).display().to_string();
        let pki = self.pki()?.clone();
        let p = |p: &Path| p.display().to_string();
        let (etcd_port, peer_port, port) = (free_port()?, free_port()?, free_port()?);
        self.spawn_process(
            "etcd",
            &bins.etcd,
            vec![
                arg("name", "lazyscale-testenv"),
                arg("data-dir", d("etcd")),
                arg("listen-client-urls", format!("http://127.0.0.1:{etcd_port}")),
                arg("advertise-client-urls", format!("http://127.0.0.1:{etcd_port}")),
                arg("listen-peer-urls", format!("http://127.0.0.1:{peer_port}")),
                arg(
                    "initial-advertise-peer-urls",
                    format!("http://127.0.0.1:{peer_port}"),
                ),
                arg(
                    "initial-cluster",
                    format!("lazyscale-testenv=http://127.0.0.1:{peer_port}"),
                ),
                arg("listen-metrics-urls", ""),
                // Test data is disposable: no fsync, and room for 100,000+ pods.
                "--unsafe-no-fsync".to_string(),
                arg("quota-backend-bytes", 8_589_934_592u64),
                arg("log-level", "warn"),
            ],
        )?;
        let sa_issuer = "https://kubernetes.default.svc.cluster.local";
        self.spawn_process(
            "kube-apiserver",
            &bins.kube_apiserver,
            vec![
                arg("etcd-servers", format!("http://127.0.0.1:{etcd_port}")),
                arg("secure-port", port),
                arg("bind-address", "127.0.0.1"),
                arg("advertise-address", "127.0.0.1"),
                // No Endpoints for the `kubernetes` Service: its address would be loopback.
                arg("endpoint-reconciler-type", "none"),
                arg("service-cluster-ip-range", "10.96.0.0/16"),
                arg("tls-cert-file", p(&pki.serving_cert)),
                arg("tls-private-key-file", p(&pki.serving_key)),
                arg("client-ca-file", p(&pki.ca_cert)),
                arg("authorization-mode", "Node,RBAC"),
                arg("service-account-issuer", sa_issuer),
                arg("api-audiences", sa_issuer),
                arg("service-account-key-file", p(&pki.sa_pub)),
                arg("service-account-signing-key-file", p(&pki.sa_key)),
                // The aggregation layer.
                arg("requestheader-client-ca-file", p(&pki.front_proxy_ca)),
                arg("requestheader-allowed-names", "front-proxy-client"),
                arg("requestheader-username-headers", "X-Remote-User"),
                arg("requestheader-group-headers", "X-Remote-Group"),
                arg("requestheader-extra-headers-prefix", "X-Remote-Extra-"),
                arg("proxy-client-cert-file", p(&pki.front_proxy_cert)),
                arg("proxy-client-key-file", p(&pki.front_proxy_key)),
                // Requests of measured clients only (see `audit`).
                arg("audit-policy-file", d("audit-policy.yaml")),
                arg("audit-log-path", d("audit.log")),
                arg("audit-log-format", "json"),
                arg("audit-log-mode", "blocking"),
                arg("audit-log-maxbackup", 0),
                // Bulk loads must be bounded by CPU, not by in-flight throttling (0 = no limit; priority
                // and fairness off, which that needs).
                arg("enable-priority-and-fairness", false),
                arg("max-requests-inflight", 0),
                arg("max-mutating-requests-inflight", 0),
                arg("allow-privileged", true),
                arg("profiling", false),
                arg("v", 1),
            ],
        )?;
        self.port = port;
        self.etcd_port = etcd_port;
        if !opts.detached {
            self.start_watchdog()?;
        }
        self.write_kubeconfigs()?;
        self.wait_apiserver(Duration::from_secs(90))?;

        let kc = d("components.kubeconfig");
        // What kube-controller-manager and kube-scheduler share: identity, loopback serving, no leader
        // election, a high client rate (bulk loads), modest logs.
        let common = |extra: Vec<String>| -> Result<Vec<String>> {
            let mut v = vec![
                arg("kubeconfig", &kc),
                arg("authentication-kubeconfig", &kc),
                arg("authorization-kubeconfig", &kc),
                arg("bind-address", "127.0.0.1"),
                arg("secure-port", free_port()?),
                arg("leader-elect", false),
                arg("kube-api-qps", 1000),
                arg("kube-api-burst", 2000),
                arg("v", 1),
            ];
            v.extend(extra);
            Ok(v)
        };
        self.spawn_process(
            "kube-controller-manager",
            &bins.kube_controller_manager,
            common(vec![
                // Fake nodes renew no heartbeats under load: nothing may evict their pods.
                arg(
                    "controllers",
                    std::iter::once(
                        "*,-node-lifecycle-controller,-node-ipam-controller,-taint-eviction-controller"
                            .to_string(),
                    )
                    .chain(opts.disabled_controllers.iter().map(|c| format!("-{c}")))
                    .collect::<Vec<_>>()
                    .join(","),
                ),
                arg("service-account-private-key-file", p(&pki.sa_key)),
                arg("root-ca-file", p(&pki.ca_cert)),
                arg("cluster-signing-cert-file", p(&pki.ca_cert)),
                arg("cluster-signing-key-file", p(&pki.ca_key)),
                arg("concurrent-deployment-syncs", 10),
                arg("concurrent-replicaset-syncs", 10),
                arg("concurrent-statefulset-syncs", 10),
            ])?,
        )?;
        self.spawn_process("kube-scheduler", &bins.kube_scheduler, common(Vec::new())?)?;
        let stages = self.dir.join("kwok-stages.yaml");
        std::fs::write(&stages, recipe::KWOK_STAGES).map_err(io("write kwok's stages"))?;
        self.spawn_process(
            "kwok",
            &bins.kwok,
            vec![
                arg("kubeconfig", &kc),
                arg("config", stages.display()),
                arg("manage-all-nodes", false),
                arg(
                    "manage-nodes-with-annotation-selector",
                    format!("{KWOK_NODE_ANNOTATION}=fake"),
                ),
                arg("server-address", format!("127.0.0.1:{}", free_port()?)),
                arg("cidr", "10.244.0.1/16"),
                arg("node-ip", "10.243.0.1"),
            ],
        )?;
        self.bootstrap(opts, Duration::from_secs(90))?;
        self.authenticate_agent()
    }

    /// A shell that waits for its stdin to close (this process exiting or dropping the server), then
    /// stops the servers.
    fn start_watchdog(&mut self) -> Result<()> {
        let pidfile = self.dir.join("pids");
        let script = format!(
            "read -r _; pids=$(cat '{p}' 2>/dev/null); kill -TERM $pids 2>/dev/null; sleep 3; kill -KILL $pids 2>/dev/null; {}",
            if self.remove_dir {
                format!("rm -rf '{}'", self.dir.display())
            } else {
                String::new()
            },
            p = pidfile.display(),
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
                let name = PROCESSES.get(i).copied().unwrap_or("a process");
                let log = self.dir.join(format!("{name}.log"));
                return Err(Error::NotReady(format!(
                    "{name} exited ({status}); last lines of {}:\n{}",
                    log.display(),
                    tail(&log)
                )));
            }
        }
        Ok(())
    }

    fn wait_apiserver(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_exited()?;
            let step = (Instant::now() + Duration::from_millis(500)).min(deadline);
            if probe_ready(&self.kubeconfig, step)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady(format!(
                    "kube-apiserver was not ready after {timeout:?}; last lines of {}:\n{}",
                    self.dir.join("kube-apiserver.log").display(),
                    tail(&self.dir.join("kube-apiserver.log"))
                )));
            }
        }
    }

    /// Creates the metrics resources and the nodes, then waits for kwok and kube-controller-manager.
    fn bootstrap(&mut self, opts: &ServerOptions, timeout: Duration) -> Result<()> {
        let kubeconfig = self.kubeconfig.clone();
        let opts = opts.clone();
        let deadline = Instant::now() + timeout;
        let handle = std::thread::spawn(move || -> Result<Option<String>> {
            on_thread_runtime(async move {
                let client = client_for(&kubeconfig).await?;
                apply_metrics_crds(&client).await?;
                grant_measured_clients(&client).await?;
                create_nodes(&client, &opts).await?;
                wait_usable(&client, &opts, deadline).await
            })
        });
        loop {
            if handle.is_finished() {
                break;
            }
            self.check_exited()?;
            std::thread::sleep(Duration::from_millis(100));
        }
        match handle.join() {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(waiting))) => {
                self.check_exited()?;
                Err(Error::NotReady(format!(
                    "the control plane was not usable after {timeout:?}: {waiting} (logs in {})",
                    self.dir.display()
                )))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::NotReady("bootstrap thread panicked".into())),
        }
    }

    /// Writes a kubeconfig at `path` for `user` with a client certificate and key (files), or with
    /// `key` `None`, a bearer token file (`cert` is then the token file).
    fn write_kubeconfig(&self, path: &Path, user: &str, cert: &Path, key: Option<&Path>) -> Result<()> {
        let credentials = match key {
            Some(key) => format!(
                "client-certificate: '{}'\n    client-key: '{}'",
                cert.display(),
                key.display()
            ),
            None => format!("tokenFile: '{}'", cert.display()),
        };
        let kubeconfig = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: lazyscale-testenv
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority: '{ca}'
users:
- name: {user}
  user:
    {credentials}
contexts:
- name: lazyscale-testenv
  context: {{cluster: lazyscale-testenv, user: {user}}}
current-context: lazyscale-testenv
",
            port = self.port,
            ca = self.pki()?.ca_cert.display(),
        );
        std::fs::write(path, kubeconfig).map_err(io(format!("write {}", path.display())))
    }

    fn write_kubeconfigs(&self) -> Result<()> {
        let pki = self.pki()?;
        self.write_kubeconfig(
            &self.kubeconfig,
            pki::ADMIN_USER,
            &pki.admin_cert,
            Some(&pki.admin_key),
        )?;
        // The agent's kubeconfig is written by `authenticate_agent` once its ServiceAccount exists.
        // The components run as administrators too (one identity keeps the set-up small).
        self.write_kubeconfig(
            &self.dir.join("components.kubeconfig"),
            pki::ADMIN_USER,
            &pki.admin_cert,
            Some(&pki.admin_key),
        )
    }

    /// Gives the agent its identity: the chart's ServiceAccount in [`rbac::AGENT_NAMESPACE`] under the
    /// chart's rules, and `agent.kubeconfig` with a `TokenRequest` token of it.
    fn authenticate_agent(&self) -> Result<()> {
        let kubeconfig = self.kubeconfig.clone();
        let handle = std::thread::spawn(move || -> Result<String> {
            on_thread_runtime(async move {
                let client = client_for(&kubeconfig).await?;
                let ns = rbac::AGENT_NAMESPACE;
                let sa = rbac::AGENT_SERVICE_ACCOUNT;
                rbac::grant(&client, ns, sa, &rbac::Rules::chart()?).await?;
                rbac::token(&client, ns, sa, rbac::TOKEN_SECONDS).await
            })
        });
        let token = handle
            .join()
            .map_err(|_| Error::NotReady("agent identity thread panicked".into()))??;
        self.write_token_kubeconfig(&self.agent_kubeconfig, &rbac::agent_username(), &token)
    }

    /// Writes `token` next to `path` (`PATH.token`) and a kubeconfig for `user` that reads it.
    fn write_token_kubeconfig(&self, path: &Path, user: &str, token: &str) -> Result<()> {
        let token_file = path.with_extension("token");
        std::fs::write(&token_file, token).map_err(io(format!("write {}", token_file.display())))?;
        self.write_kubeconfig(path, user, &token_file, None)
    }

    /// A kubeconfig (in the server's folder) for a token of the ServiceAccount `name` in `namespace`,
    /// which must exist ([`rbac::grant`] makes one with the chart's objects).
    pub async fn service_account_kubeconfig(
        &self,
        client: &kube::Client,
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf> {
        let token = rbac::token(client, namespace, name, rbac::TOKEN_SECONDS).await?;
        let path = self.dir.join(format!("sa-{namespace}-{name}.kubeconfig"));
        self.write_token_kubeconfig(&path, &rbac::username(namespace, name), &token)?;
        Ok(path)
    }

    /// The administrator's kubeconfig (tests, `kubectl`); it trusts the generated CA, nothing is skipped.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The agent's kubeconfig: a token of the Helm chart's ServiceAccount (`default/lazyscale`) under the
    /// chart's ClusterRole and Role ([`rbac`]), whose requests the audit log records (see
    /// [`Server::agent_requests`]).
    pub fn agent_kubeconfig_path(&self) -> &Path {
        &self.agent_kubeconfig
    }

    /// Writes a kubeconfig for `user` in the first of `groups` (a client certificate signed by the cluster CA) into
    /// the server's folder and returns its path. Put a client in [`pki::MEASURED_GROUP`] to count its
    /// requests with [`Server::requests`].
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> Result<PathBuf> {
        let pki = self.pki()?;
        let (cert, key) = pki.client_cert(user, groups)?;
        let safe: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let cert_path = self.dir.join(format!("pki/user-{safe}.crt"));
        let key_path = self.dir.join(format!("pki/user-{safe}.key"));
        std::fs::write(&cert_path, cert).map_err(io("write a user certificate"))?;
        std::fs::write(&key_path, key).map_err(io("write a user key"))?;
        let path = self.dir.join(format!("user-{safe}.kubeconfig"));
        self.write_kubeconfig(&path, user, &cert_path, Some(&key_path))?;
        Ok(path)
    }

    /// The requests of measured clients so far, from the audit log.
    pub fn requests(&self) -> Vec<audit::Request> {
        audit::read(&self.dir.join("audit.log"))
    }

    /// How many `verb` requests (`LIST`, `WATCH`, `GET`, ...) on `resource` (`pods`, `apps/deployments`)
    /// the agent's identity has made so far.
    pub fn agent_requests(&self, verb: &str, resource: &str) -> u64 {
        audit::count(&self.requests(), &rbac::agent_username(), verb, resource)
    }

    /// The folder with data, logs, certificates and the kubeconfigs.
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

    /// Process ids, in start order: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// The process id of one component (see [`Server::pids`] for the names).
    pub fn pid_of(&self, name: &str) -> Option<u32> {
        let i = PROCESSES.iter().position(|p| *p == name)?;
        self.children.get(i).map(Child::id)
    }

    /// The client configuration of this server (to adjust before building a client).
    pub async fn config(&self) -> Result<kube::Config> {
        config_for(&self.kubeconfig).await
    }

    /// An administrator's client for the calling tokio runtime.
    pub async fn client(&self) -> Result<kube::Client> {
        Ok(kube::Client::try_from(self.config().await?)?)
    }

    /// The API server's `/metrics` text.
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
        self.commands.clear();
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
        // Stop gracefully, in reverse start order, so etcd's data folder is consistent (snapshots).
        for c in self.children.iter_mut().rev() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
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

async fn config_for(kubeconfig: &Path) -> Result<kube::Config> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    Ok(kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?)
}

async fn client_for(kubeconfig: &Path) -> Result<kube::Client> {
    Ok(kube::Client::try_from(config_for(kubeconfig).await?)?)
}

/// Runs a future on a fresh current-thread runtime (callers may be inside another runtime).
fn on_thread_runtime<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("start a runtime"))?;
    rt.block_on(f)
}

/// Polls `GET /readyz` (from a plain thread with its own runtime, so this works from inside an async
/// test too).
fn probe_ready(kubeconfig: &Path, deadline: Instant) -> Result<bool> {
    let kubeconfig = kubeconfig.to_path_buf();
    let handle = std::thread::spawn(move || -> Result<bool> {
        on_thread_runtime(async move {
            let client = client_for(&kubeconfig).await?;
            while Instant::now() < deadline {
                let probe =
                    tokio::time::timeout(Duration::from_secs(2), client.request_text(http_get("/readyz")?));
                if let Ok(Ok(text)) = probe.await
                    && text == "ok"
                {
                    return Ok(true);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(false)
        })
    });
    handle
        .join()
        .unwrap_or_else(|_| Err(Error::NotReady("readiness probe thread panicked".into())))
}

/// The metrics.k8s.io/v1beta1 `pods` and `nodes` resources, served as custom resources that the
/// simulator writes (see testenv/README.md for why not metrics-server).
fn metrics_crd(plural: &str, singular: &str, kind: &str, scope: &str) -> serde_json::Value {
    let usage = json!({"type": "object", "additionalProperties": {"x-kubernetes-int-or-string": true,
        "anyOf": [{"type": "integer"}, {"type": "string"}]}});
    let mut props = json!({
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "timestamp": {"type": "string", "format": "date-time"},
        "window": {"type": "string"},
    });
    if kind == "PodMetrics" {
        props["containers"] = json!({"type": "array", "items": {"type": "object",
            "required": ["name", "usage"],
            "properties": {"name": {"type": "string"}, "usage": usage}}});
    } else {
        props["usage"] = usage;
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{plural}.metrics.k8s.io"),
            // *.k8s.io groups require this annotation; the value says this is a stand-in.
            "annotations": {"api-approved.kubernetes.io": "unapproved, lazyscale test environment stand-in for metrics-server"},
        },
        "spec": {
            "group": "metrics.k8s.io",
            "scope": scope,
            "names": {"plural": plural, "singular": singular, "kind": kind, "listKind": format!("{kind}List")},
            "versions": [{
                "name": "v1beta1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": props}},
            }],
        },
    })
}

const MANAGER: &str = "lazyscale-testenv";

async fn apply_metrics_crds(client: &kube::Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply(MANAGER).force();
    for (plural, singular, kind, scope) in [
        ("pods", "podmetrics", "PodMetrics", "Namespaced"),
        ("nodes", "nodemetrics", "NodeMetrics", "Cluster"),
    ] {
        let crd = metrics_crd(plural, singular, kind, scope);
        api.patch(&format!("{plural}.metrics.k8s.io"), &pp, &Patch::Apply(&crd))
            .await?;
    }
    Ok(())
}

/// Measured peers (benchmarks' other clients) are cluster administrators through RBAC, not through
/// `system:masters`, so their requests are authorized like anyone's. The agent is not one of them: it
/// runs as the chart's ServiceAccount under the chart's rules ([`rbac`]).
async fn grant_measured_clients(client: &kube::Client) -> Result<()> {
    let api: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    let crb = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "lazyscale-testenv-measured"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": pki::MEASURED_GROUP}],
    });
    api.patch(
        "lazyscale-testenv-measured",
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&crb),
    )
    .await?;
    Ok(())
}

/// The JSON of one fake node.
pub fn node_json(name: &str, cpu: &str, memory: &str, pods: u32) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "status": {
            "capacity": {"cpu": cpu, "memory": memory, "pods": pods.to_string()},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": pods.to_string()},
        },
    })
}

async fn create_nodes(client: &kube::Client, opts: &ServerOptions) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let pp = PatchParams::apply(MANAGER).force();
    for i in 0..opts.nodes {
        let name = format!("{NODE_PREFIX}{i}");
        let node = node_json(&name, &opts.node_cpu, &opts.node_memory, opts.node_pods);
        api.patch(&name, &pp, &Patch::Apply(&node)).await?;
        // Capacity is status: apply it there too (kwok keeps what it finds).
        api.patch_status(&name, &pp, &Patch::Apply(&node)).await?;
        // The TaintNodesByCondition admission plugin marks a new node not-ready; the node lifecycle
        // controller would lift that once kwok reports Ready, but it is off (see the controllers flag).
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": null}})),
        )
        .await?;
    }
    Ok(())
}

/// Waits until the metrics resources are served, the nodes are Ready and kube-controller-manager made
/// the `default` ServiceAccount; returns what it was still waiting for at the deadline, if anything.
async fn wait_usable(
    client: &kube::Client,
    opts: &ServerOptions,
    deadline: Instant,
) -> Result<Option<String>> {
    let pm = kube::api::ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    loop {
        let metrics_ok = Api::<kube::api::DynamicObject>::all_with(client.clone(), &pm)
            .list(&kube::api::ListParams::default().limit(1))
            .await
            .is_ok();
        let ready = nodes
            .list(&kube::api::ListParams::default().labels("type=kwok"))
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|n| {
                        n.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                    })
                    .count() as u32
            })
            .unwrap_or(0);
        let sa_ok = sas.get_opt("default").await.ok().flatten().is_some();
        let waiting: Vec<&str> = [
            (!metrics_ok).then_some("the metrics.k8s.io resources"),
            (ready < opts.nodes).then_some("Ready nodes from kwok"),
            (!sa_ok).then_some("the default ServiceAccount from kube-controller-manager"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if waiting.is_empty() {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Ok(Some(waiting.join(", ")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
