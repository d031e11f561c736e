//! `cargo xtask faults`: the fault suite. One private control plane on loopback, the simulator's load,
//! the agent (release build) talking to the API server through a TCP proxy of ours
//! ([`lazyscale_testenv::proxy`]), then one fault after another while a Deployment scales: the API
//! server killed with SIGKILL and restarted, etcd restarted, `410 Gone` forced on the agent's watches,
//! the agent's connections cut, black-holed and slowed, the leader of two agents killed, the webhook
//! stopped while pods are created, a flood of DPA changes, the agent killed and restarted.
//!
//! For each fault: the seconds from the end of the fault until the Deployment has the replicas the load
//! calls for, the `/scale` writes lost (the decided count never reached) and duplicated (successful
//! writes, counted from the API server's audit log, that changed nothing, plus any replica count above
//! the right one), and how the fault showed in the DPA's conditions, its events and the agent's metrics.
//! `--soak-seconds N` adds the soak ([`soak`]). One JSON object on stdout.

mod soak;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use lazyscale_sim::load::{CpuProfile, LoadProfile, MemoryProfile};
use lazyscale_sim::units::{Bytes, Cpu};
use lazyscale_sim::{SimConfig, Simulator, WorkloadRef};
use lazyscale_testenv::audit;
use lazyscale_testenv::fixtures::{app_deployment, dpa_api};
use lazyscale_testenv::proxy::{Mode, Proxy};
use lazyscale_testenv::{Server, ServerOptions, install_crds, rbac};
use serde_json::{Value, json};

use crate::agent::{Agent, AgentOptions};

/// Options.
#[derive(clap::Args)]
pub struct Args {
    /// Only the short set (API server killed, 410 Gone, connections cut), as `cargo xtask test` runs it.
    #[arg(long)]
    short: bool,
    /// Only the faults whose name contains one of these (comma-separated), in the suite's order.
    #[arg(long)]
    only: Option<String>,
    /// Soak after the faults, lasting at least this many seconds (0: as long as the cycles take; 3600
    /// for the hour-long run). Without it, no soak.
    #[arg(long)]
    soak_seconds: Option<u64>,
    /// Gate open/close cycles of the soak.
    #[arg(long, default_value_t = soak::DEFAULT_CYCLES)]
    soak_cycles: u32,
    /// A check of the soak's rule: open one watch as the agent's user every N cycles and keep it (the
    /// soak must then fail on its open_watches series). 0: never.
    #[arg(long, default_value_t = 0)]
    soak_leak_watch_every: u32,
    /// Skip the faults (with --soak-seconds: the soak alone).
    #[arg(long)]
    no_faults: bool,
    /// Run the debug build of the agent (already built by `cargo test`; quicker than a release build).
    #[arg(long)]
    debug_agent: bool,
    /// Run this agent binary as it is (no build).
    #[arg(long)]
    agent_binary: Option<PathBuf>,
    /// `RUST_LOG` of the agents (their logs go to `target/faults/<unix-time>/agent-N.log`, one folder a
    /// run, printed on stderr).
    #[arg(long, default_value = "info")]
    agent_log: String,
}

impl Args {
    /// The short set and a short soak ([`SHORT_SOAK_CYCLES`] cycles) on the debug agent `cargo test`
    /// just built, on one control plane (the step of `cargo xtask test`).
    pub fn short() -> Args {
        Args {
            short: true,
            only: None,
            soak_seconds: Some(0),
            soak_cycles: SHORT_SOAK_CYCLES,
            soak_leak_watch_every: 0,
            no_faults: false,
            debug_agent: true,
            agent_binary: None,
            agent_log: "info".into(),
        }
    }
}

/// Soak cycles of `cargo xtask test` (about 6 s each on the debug agent).
const SHORT_SOAK_CYCLES: u32 = 30;

/// The namespace every fault's objects live in.
pub(crate) const NS: &str = "faults";
/// CPU request of each pod; with [`TARGET_UTILIZATION`] a workload total of `n * 0.1` cores needs `n` pods.
const REQUEST_CPU: &str = "200m";
const TARGET_UTILIZATION: u32 = 50;
const PER_POD_CORES: f64 = 0.1;
/// Replicas before the fault, and the replicas the raised load calls for while it happens.
const BEFORE: i32 = 3;
const TARGET: i32 = 6;
const MAX_REPLICAS: i32 = 12;
/// How long the replica count must stay right after reaching it (three reconcile periods and more): a
/// late second write of a scale-up would show here.
const SETTLE: Duration = Duration::from_secs(8);
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// The agents' leader-election Lease.
const LEASE: &str = lazyscale_api::consts::LEASE_NAME;

/// One fault's row.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct FaultReport {
    name: String,
    recovery_seconds: f64,
    lost: u64,
    duplicated: u64,
    notes: String,
}

/// What the faults share: the control plane, the proxy, the simulator and the running agents.
pub(crate) struct Ctx {
    pub(crate) server: Server,
    pub(crate) proxy: Proxy,
    pub(crate) client: kube::Client,
    pub(crate) sim: Option<Simulator>,
    pub(crate) agents: Vec<Agent>,
    binary: PathBuf,
    proxied_kubeconfig: PathBuf,
    logs: PathBuf,
    agent_log: String,
    /// `--grace-period-seconds` of the agents started from now on (0: the stack never stops).
    pub(crate) grace_seconds: u64,
    started: usize,
}

pub fn run(args: Args) -> Result<()> {
    let binary = if let Some(b) = args.agent_binary.clone() {
        b
    } else if args.debug_agent {
        crate::run(crate::cargo().args(["build", "--quiet", "-p", "lazyscale"]))?;
        crate::workspace_root().join("target/debug/lazyscale")
    } else {
        crate::agent::build_agent()?
    };
    crate::testenv_build()?;
    let server = Server::start(ServerOptions::default())
        .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let out = rt.block_on(async move {
        let mut ctx = Ctx::start(server, binary, args.agent_log).await?;
        let faults = if args.no_faults {
            Vec::new()
        } else {
            run_faults(&mut ctx, args.short, args.only.as_deref()).await?
        };
        let soak = match args.soak_seconds {
            Some(s) => {
                let cfg = soak::SoakConfig {
                    duration: Duration::from_secs(s),
                    cycles: args.soak_cycles,
                    leak_watch_every: args.soak_leak_watch_every,
                };
                soak::run(&mut ctx, cfg).await?
            }
            None => json!({"skipped": "run with --soak-seconds N"}),
        };
        ctx.shutdown().await;
        anyhow::Ok(json!({"faults": faults, "soak": soak}))
    })?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    let bad: Vec<&Value> = out["faults"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|f| {
                    f["lost"] != 0 || f["duplicated"] != 0 || f["recovery_seconds"].as_f64() < Some(0.0)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut why = Vec::new();
    if !bad.is_empty() {
        why.push(format!(
            "{} fault(s) lost or duplicated /scale writes or did not recover",
            bad.len()
        ));
    }
    if out["soak"]["pass"] == false {
        why.push(format!(
            "the soak failed (growing: {}, failures: {})",
            out["soak"]["growing"], out["soak"]["failures"]
        ));
    }
    if !why.is_empty() {
        bail!("{}", why.join("; "));
    }
    Ok(())
}

type FaultFn = for<'a> fn(&'a mut Ctx) -> futures::future::BoxFuture<'a, Result<FaultReport>>;

async fn run_faults(ctx: &mut Ctx, short: bool, only: Option<&str>) -> Result<Vec<FaultReport>> {
    let all: [(&str, bool, FaultFn); 11] = [
        ("apiserver-kill9-restart", true, |c| Box::pin(apiserver_kill(c))),
        ("etcd-restart", false, |c| Box::pin(etcd_restart(c))),
        // In the short set since the horizontal controller's inputs fix: 4 runs of 4 recovered in
        // 4.1-4.3 s, nothing lost or duplicated.
        ("watch-410-gone", true, |c| Box::pin(watch_gone(c))),
        ("connections-cut", true, |c| Box::pin(connections_cut(c))),
        ("connections-black-hole", false, |c| Box::pin(black_hole(c))),
        ("latency-300ms", false, |c| Box::pin(latency(c))),
        ("leader-kill9-of-two", false, |c| Box::pin(leader_kill(c))),
        ("agent-kill9-restart", false, |c| Box::pin(agent_kill_restart(c))),
        ("webhook-stopped-pods-created", false, |c| {
            Box::pin(webhook_stopped(c))
        }),
        ("dpa-change-flood", false, |c| Box::pin(dpa_flood(c))),
        ("apiserver-kill9-two-agents", false, |c| {
            Box::pin(apiserver_kill_two(c))
        }),
    ];
    let mut out = Vec::new();
    for (name, in_short, f) in all {
        if (short && !in_short) || only.is_some_and(|o| !o.split(',').any(|o| name.contains(o.trim()))) {
            continue;
        }
        eprintln!("== fault {name}");
        let t = Instant::now();
        let r = match f(ctx).await {
            Ok(r) => r,
            Err(e) => FaultReport {
                name: name.to_string(),
                recovery_seconds: -1.0,
                lost: 0,
                duplicated: 0,
                notes: format!("the fault run failed: {e:#}"),
            },
        };
        eprintln!(
            "   {} in {:.0}s: recovered {:.1}s, lost {}, duplicated {}; {}",
            r.name,
            t.elapsed().as_secs_f64(),
            r.recovery_seconds,
            r.lost,
            r.duplicated,
            r.notes
        );
        out.push(FaultReport {
            name: name.to_string(),
            ..r
        });
        ctx.ensure_agent().await?;
    }
    Ok(out)
}

pub(crate) fn load(cores: f64) -> LoadProfile {
    LoadProfile {
        cpu: CpuProfile::Constant { value: Cpu(cores) },
        memory: MemoryProfile {
            base: Bytes(64.0 * 1024.0 * 1024.0),
            per_cpu: Bytes(0.0),
            leak: Bytes(0.0),
        },
        noise: 0.0,
    }
}

pub(crate) fn dpa(name: &str, max: i32) -> Value {
    json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler", "metadata": {"name": name},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, "owner": "Local",
            "fallback": {"horizontal": {"direction": "All"}},
            "constraints": {"minReplicas": 1, "maxReplicas": max},
            "objectives": [{"type": "PodResource", "podResource": {"name": "cpu",
                "value": {"type": "Utilization", "utilization": TARGET_UTILIZATION}}}]}})
}

fn workload(name: &str) -> WorkloadRef {
    WorkloadRef::deployment(NS, name)
}

/// This run's own log folder, `target/faults/<unix-time>` (`-2`, `-3`, ... when two runs start in the
/// same second), so that concurrent or consecutive runs never overwrite each other's agent logs.
fn run_log_dir() -> Result<PathBuf> {
    let root = crate::workspace_root().join("target/faults");
    std::fs::create_dir_all(&root)?;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for n in 1..1000u32 {
        let dir = if n == 1 {
            root.join(secs.to_string())
        } else {
            root.join(format!("{secs}-{n}"))
        };
        // create_dir (not create_dir_all) fails if the folder exists: the run that made it owns it.
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("create {}", dir.display())),
        }
    }
    bail!("no free log folder under {}", root.display())
}

/// What is counted before a fault, to compare with after.
struct Before {
    generation: i64,
    ok_writes: u64,
    failed_writes: u64,
    metrics: BTreeMap<String, f64>,
    lists: (u64, u64),
    since: k8s_openapi::jiff::Timestamp,
}

impl Ctx {
    async fn start(server: Server, binary: PathBuf, agent_log: String) -> Result<Ctx> {
        let client = server.client().await?;
        install_crds(&client).await?;
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .patch(NS, &PatchParams::apply("faults"), &Patch::Apply(&ns))
            .await?;
        let sas = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), NS);
        lazyscale_testenv::try_wait_for(Duration::from_secs(30), || {
            let sas = sas.clone();
            async move { sas.get_opt("default").await.ok().flatten() }
        })
        .await
        .context("no default ServiceAccount in the faults namespace")?;
        let sim = Simulator::start(
            client.clone(),
            SimConfig {
                namespaces: vec![NS.to_string()],
                metrics_interval: Duration::from_secs(1),
                resync: Duration::from_secs(2),
                ..SimConfig::default()
            },
        )
        .await?;
        let proxy = Proxy::start(([127, 0, 0, 1], server.port()).into())?;
        let proxied_kubeconfig = server.dir().join("agent-proxied.kubeconfig");
        let kc = std::fs::read_to_string(server.agent_kubeconfig_path())?;
        let direct = format!("https://127.0.0.1:{}", server.port());
        if !kc.contains(&direct) {
            bail!("the agent kubeconfig does not name {direct}");
        }
        std::fs::write(
            &proxied_kubeconfig,
            kc.replace(&direct, &format!("https://127.0.0.1:{}", proxy.port())),
        )?;
        let logs = run_log_dir()?;
        eprintln!("agent logs: {}", logs.display());
        let mut ctx = Ctx {
            server,
            proxy,
            client,
            sim: Some(sim),
            agents: Vec::new(),
            binary,
            proxied_kubeconfig,
            logs,
            agent_log,
            grace_seconds: 0,
            started: 0,
        };
        ctx.start_agent().await?;
        Ok(ctx)
    }

    /// Starts one more agent through the proxy (its log in `target/faults/<run>/agent-N.log`).
    pub(crate) async fn start_agent(&mut self) -> Result<()> {
        self.started += 1;
        let log = self.logs.join(format!("agent-{}.log", self.started));
        let mut opts = AgentOptions::new(&self.binary, &self.proxied_kubeconfig)
            .args([
                "--horizontal-period-seconds=2",
                "--vertical-period-seconds=5",
                // The chart's Role grants Leases in the agent's own namespace only.
                &format!("--lease-namespace={}", rbac::AGENT_NAMESPACE),
                &format!("--grace-period-seconds={}", self.grace_seconds),
            ])
            .log_to(log);
        opts.rust_log = self.agent_log.clone();
        let agent = tokio::task::block_in_place(|| Agent::start(opts))
            .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
        self.agents.push(agent);
        Ok(())
    }

    /// Back to one running agent after a fault that killed or added some.
    async fn ensure_agent(&mut self) -> Result<()> {
        let mut alive = Vec::new();
        for mut a in std::mem::take(&mut self.agents) {
            if matches!(a.try_wait(), Ok(None)) {
                alive.push(a);
            }
        }
        self.agents = alive;
        while self.agents.len() > 1 {
            if let Some(a) = self.agents.pop() {
                let _ = tokio::task::block_in_place(|| a.stop());
            }
        }
        if self.agents.is_empty() {
            self.start_agent().await?;
        }
        Ok(())
    }

    fn sim(&self) -> Result<&Simulator> {
        self.sim.as_ref().context("the simulator stopped")
    }

    async fn shutdown(&mut self) {
        for a in std::mem::take(&mut self.agents) {
            let _ = tokio::task::block_in_place(|| a.stop());
        }
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
        }
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// A Deployment `name` with [`BEFORE`] pods' worth of load and its DPA, scaled by the agent from 1 to
    /// [`BEFORE`] replicas (the fault comes on top of a working autoscaler).
    async fn workload(&self, name: &str) -> Result<()> {
        self.sim()?
            .set_load(&workload(name), load(PER_POD_CORES * f64::from(BEFORE)));
        self.deployments()
            .create(
                &PostParams::default(),
                &app_deployment(name, 1, REQUEST_CPU, "64Mi"),
            )
            .await?;
        dpa_api(self.client.clone(), NS)
            .patch(
                name,
                &PatchParams::apply("faults"),
                &Patch::Apply(&dpa(name, MAX_REPLICAS)),
            )
            .await?;
        self.wait_replicas(name, BEFORE, RECOVERY_TIMEOUT, &mut BTreeSet::new())
            .await
            .with_context(|| format!("{name}: the agent did not scale 1 -> {BEFORE} before the fault"))?;
        // Let the pods become ready and the agent settle on them.
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(())
    }

    /// Raises the load so that `name` needs [`TARGET`] replicas.
    fn raise(&self, name: &str) -> Result<()> {
        self.sim()?
            .set_load(&workload(name), load(PER_POD_CORES * f64::from(TARGET)));
        Ok(())
    }

    async fn replicas(&self, name: &str) -> Option<(i32, i64)> {
        let d = self.deployments().get(name).await.ok()?;
        Some((d.spec?.replicas?, d.metadata.generation?))
    }

    /// Waits until `name` has `want` replicas, recording every count above `want` into `over`.
    async fn wait_replicas(
        &self,
        name: &str,
        want: i32,
        timeout: Duration,
        over: &mut BTreeSet<i32>,
    ) -> Result<()> {
        let t = Instant::now();
        loop {
            if let Some((r, _)) = self.replicas(name).await {
                if r > want {
                    over.insert(r);
                }
                if r == want {
                    return Ok(());
                }
            }
            if t.elapsed() > timeout {
                bail!("{name} did not reach {want} replicas in {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The agent's successful and failed `/scale` writes on `name` so far (audit log).
    fn scale_writes(&self, name: &str) -> (u64, u64) {
        let user = rbac::agent_username();
        let writes: Vec<audit::Request> = self
            .server
            .requests()
            .into_iter()
            .filter(|r| {
                r.user == user
                    && matches!(r.verb.as_str(), "update" | "patch")
                    && r.resource == "apps/deployments"
                    && r.subresource == "scale"
                    && r.namespace == NS
                    && r.name == name
            })
            .collect();
        let ok = writes.iter().filter(|r| r.succeeded()).count() as u64;
        (ok, writes.len() as u64 - ok)
    }

    /// The agents' metrics summed (counters of agents killed during a fault are gone with them).
    fn metrics(&self) -> BTreeMap<String, f64> {
        let mut sum = BTreeMap::new();
        for a in &self.agents {
            for (k, v) in a.metrics().unwrap_or_default() {
                *sum.entry(k).or_insert(0.0) += v;
            }
        }
        sum
    }

    async fn before(&self, name: &str) -> Result<Before> {
        let (_, generation) = self.replicas(name).await.context("read the Deployment")?;
        let (ok_writes, failed_writes) = self.scale_writes(name);
        Ok(Before {
            generation,
            ok_writes,
            failed_writes,
            metrics: self.metrics(),
            lists: (
                self.server.agent_requests("LIST", "pods"),
                self.server
                    .agent_requests("LIST", "datadoghq.com/datadogpodautoscalers"),
            ),
            since: k8s_openapi::jiff::Timestamp::now(),
        })
    }

    /// Waits for [`TARGET`] replicas, holds [`SETTLE`], then counts and describes.
    async fn finish(
        &self,
        name: &str,
        b: &Before,
        restored: Instant,
        mut notes: Vec<String>,
        baseline: &BTreeMap<String, f64>,
    ) -> Result<FaultReport> {
        let mut over = BTreeSet::new();
        let reached = self
            .wait_replicas(name, TARGET, RECOVERY_TIMEOUT, &mut over)
            .await;
        let recovery = restored.elapsed().as_secs_f64();
        let settle_end = Instant::now() + SETTLE;
        while Instant::now() < settle_end {
            if let Some((r, _)) = self.replicas(name).await
                && r > TARGET
            {
                over.insert(r);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (replicas, generation) = self.replicas(name).await.context("read the Deployment")?;
        let (ok, failed) = self.scale_writes(name);
        let ok_writes = ok - b.ok_writes;
        let bumps = u64::try_from(generation - b.generation).unwrap_or(0);
        let redundant = ok_writes.saturating_sub(bumps);
        let lost = u64::from(reached.is_err() || replicas != TARGET);
        notes.insert(
            0,
            format!(
                "/scale writes {ok_writes} ok (Deployment generation +{bumps}), {} refused or failed; replicas {BEFORE} -> {replicas}{}",
                failed - b.failed_writes,
                if over.is_empty() {
                    String::new()
                } else {
                    format!(", above {TARGET}: {over:?}")
                }
            ),
        );
        let lists = (
            self.server.agent_requests("LIST", "pods") - b.lists.0,
            self.server
                .agent_requests("LIST", "datadoghq.com/datadogpodautoscalers")
                - b.lists.1,
        );
        if lists != (0, 0) {
            notes.push(format!("relists: pods {}, DPAs {}", lists.0, lists.1));
        }
        notes.push(metric_deltas(baseline, &self.metrics()));
        notes.push(self.conditions(name).await);
        notes.push(self.events(name, b.since).await);
        if let Err(e) = reached {
            notes.push(format!("{e:#}"));
        }
        Ok(FaultReport {
            name: String::new(),
            recovery_seconds: (recovery * 10.0).round() / 10.0,
            lost,
            duplicated: redundant + over.len() as u64,
            notes: notes
                .into_iter()
                .filter(|n| !n.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
        })
    }

    /// The DPA's conditions that are not `True` now.
    async fn conditions(&self, name: &str) -> String {
        let Ok(d) = dpa_api(self.client.clone(), NS).get(name).await else {
            return "DPA unreadable".into();
        };
        let conds: Vec<String> = d.data["status"]["conditions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|c| c["status"] != "True")
                    .map(|c| {
                        format!(
                            "{}={}({})",
                            c["type"].as_str().unwrap_or("?"),
                            c["status"].as_str().unwrap_or("?"),
                            c["reason"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if conds.is_empty() {
            "conditions after: all True".into()
        } else {
            format!("conditions after: {}", conds.join(", "))
        }
    }

    /// Events about the DPA since `since`, by reason.
    async fn events(&self, name: &str, since: k8s_openapi::jiff::Timestamp) -> String {
        let events = Api::<Event>::namespaced(self.client.clone(), NS)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let mut by_reason: BTreeMap<String, u32> = BTreeMap::new();
        for e in events {
            let about = e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name);
            let when = e
                .event_time
                .as_ref()
                .map(|t| t.0)
                .or_else(|| e.deprecated_last_timestamp.as_ref().map(|t| t.0));
            if about && when.is_some_and(|t| t >= since) {
                *by_reason.entry(e.reason.unwrap_or_default()).or_insert(0) +=
                    e.deprecated_count.unwrap_or(1).max(1) as u32;
            }
        }
        if by_reason.is_empty() {
            return "events: none".into();
        }
        format!(
            "events: {}",
            by_reason
                .iter()
                .map(|(r, n)| format!("{r}x{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// The holder of the agents' Lease, as an index into [`Ctx::agents`].
    async fn leader(&self) -> Option<usize> {
        let lease = Api::<Lease>::namespaced(self.client.clone(), rbac::AGENT_NAMESPACE)
            .get(LEASE)
            .await
            .ok()?;
        let holder = lease.spec?.holder_identity?;
        self.agents
            .iter()
            .position(|a| holder.ends_with(&format!("-{}", a.pid())))
    }

    fn kill_agent(&mut self, i: usize) {
        if i < self.agents.len() {
            let a = self.agents.remove(i);
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &a.pid().to_string()])
                .status();
            drop(a);
        }
    }
}

/// Counters and gauges of the agent that moved, among the ones a fault shows in.
fn metric_deltas(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> String {
    const SHOWN: [&str; 9] = [
        "Error",
        "error",
        "restarts",
        "FailOpen",
        "ScaleWrite",
        "gate_transitions",
        "Conflict",
        "Held",
        "Dropped",
    ];
    let moved: Vec<String> = after
        .iter()
        .filter(|(k, _)| SHOWN.iter().any(|s| k.contains(s)))
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d != 0.0).then(|| format!("{}{d:+}", k.trim_start_matches("lazyscale_")))
        })
        .collect();
    if moved.is_empty() {
        "metrics: no error or restart counter moved".into()
    } else {
        format!("metrics: {}", moved.join(", "))
    }
}

/// A JSON POST to etcd's gateway (plain HTTP on loopback).
fn etcd_post(url: &str, path: &str, body: &Value) -> Result<Value> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).with_context(|| format!("connect to etcd at {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.to_string();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").context("etcd answered no body")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("etcd {path}: {head}");
    }
    Ok(serde_json::from_str(body)?)
}

/// Compacts etcd's history up to its current revision; returns the revision.
fn compact_etcd(url: &str) -> Result<i64> {
    // The key "/" base64-encoded: any range returns the header with the store's revision.
    let r = etcd_post(url, "/v3/kv/range", &json!({"key": "Lw==", "limit": 1}))?;
    let rev: i64 = r["header"]["revision"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| r["header"]["revision"].as_i64())
        .context("etcd revision")?;
    etcd_post(
        url,
        "/v3/kv/compaction",
        &json!({"revision": rev, "physical": true}),
    )?;
    Ok(rev)
}

fn restart(server: &mut Server, name: &str) -> Result<()> {
    tokio::task::block_in_place(|| server.restart_component(name))
        .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))
}

fn kill(server: &mut Server, name: &str) -> Result<()> {
    server
        .kill_component(name)
        .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))
}

async fn apiserver_kill(ctx: &mut Ctx) -> Result<FaultReport> {
    apiserver_kill_named(ctx, "f-apiserver").await
}

async fn apiserver_kill_two(ctx: &mut Ctx) -> Result<FaultReport> {
    ctx.start_agent().await?;
    apiserver_kill_named(ctx, "f-apiserver-two").await
}

/// The load rises, the API server is killed with SIGKILL at once (before the agent's next reconcile),
/// stays down 5 s and comes back with the same data.
async fn apiserver_kill_named(ctx: &mut Ctx, name: &str) -> Result<FaultReport> {
    ctx.workload(name).await?;
    let b = ctx.before(name).await?;
    let baseline = b.metrics.clone();
    ctx.raise(name)?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let down = Instant::now();
    kill(&mut ctx.server, "kube-apiserver")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mid = ctx.metrics();
    restart(&mut ctx.server, "kube-apiserver")?;
    let restored = Instant::now();
    let notes = vec![format!(
        "down {:.1}s (restart to ready included); agent readyz {} during",
        restored.duration_since(down).as_secs_f64(),
        if mid.is_empty() { "unreachable" } else { "served" }
    )];
    ctx.finish(name, &b, restored, notes, &baseline).await
}

async fn etcd_restart(ctx: &mut Ctx) -> Result<FaultReport> {
    let name = "f-etcd";
    ctx.workload(name).await?;
    let b = ctx.before(name).await?;
    let baseline = b.metrics.clone();
    ctx.raise(name)?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kill(&mut ctx.server, "etcd")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    restart(&mut ctx.server, "etcd")?;
    let restored = Instant::now();
    ctx.finish(
        name,
        &b,
        restored,
        vec!["etcd down 5 s (SIGKILL)".into()],
        &baseline,
    )
    .await
}

/// etcd's history is compacted to its head and the API server restarted: its new watch cache starts
/// at the head, so every watch the agent resumes from an older resourceVersion gets `410 Gone` and
/// must relist (the relists are counted from the audit log).
async fn watch_gone(ctx: &mut Ctx) -> Result<FaultReport> {
    let name = "f-gone";
    ctx.workload(name).await?;
    let b = ctx.before(name).await?;
    let baseline = b.metrics.clone();
    // Writes the agent's watches have not seen, so their resourceVersions fall behind the head.
    for i in 0..20 {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("churn-{i}")}});
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(ctx.client.clone(), NS)
            .patch(
                &format!("churn-{i}"),
                &PatchParams::apply("faults"),
                &Patch::Apply(&cm),
            )
            .await?;
    }
    ctx.raise(name)?;
    kill(&mut ctx.server, "kube-apiserver")?;
    let rev = compact_etcd(&ctx.server.etcd_url())?;
    restart(&mut ctx.server, "kube-apiserver")?;
    let restored = Instant::now();
    ctx.finish(
        name,
        &b,
        restored,
        vec![format!(
            "etcd compacted at revision {rev} while the API server was down"
        )],
        &baseline,
    )
    .await
}

async fn connections_cut(ctx: &mut Ctx) -> Result<FaultReport> {
    let name = "f-cut";
    ctx.workload(name).await?;
    let b = ctx.before(name).await?;
    let baseline = b.metrics.clone();
    ctx.raise(name)?;
    let open = ctx.proxy.open_connections();
    ctx.proxy.set_mode(Mode::Cut);
    tokio::time::sleep(Duration::from_secs(5)).await;
    ctx.proxy.set_mode(Mode::Pass);
    let restored = Instant::now();
    let notes = vec![format!(
        "{open} open connections cut, {} new ones refused over 5 s",
        ctx.proxy.refused()
    )];
    ctx.finish(name, &b, restored, notes, &baseline).await
}

async fn black_hole(ctx: &mut Ctx) -> Result<FaultReport> {
    let name = "f-blackhole";
    ctx.workload(name).await?;
    let b = ctx.before(name).await?;
    let baseline = b.metrics.clone();
    ctx.raise(name)?;
    let accepted = ctx.proxy.accepted();
    ctx.proxy.set_mode(Mode::BlackHole);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let mid = ctx.metrics();
    ctx.proxy.set_mode(Mode::Pass);
    let restored = Instant::now();
    let notes = vec![format!(
        "every byte held 20 s (then delivered); {} connections opened meanwhile; agent {} during",
        ctx.proxy.accepted() - accepted,
        if mid.is_empty() {
            "admin unreachable"
        } else {
            "admin served"
        }
    )];
    ctx.finish(name, &b, restored, notes, &baseline).await
}

async fn latency(ctx: &mut Ctx) -> Result<FaultReport> {
    let name = "f-latency";
    ctx.workload(name).await?;
    let b = ctx.before(name).await?;
    let baseline = b.metrics.clone();
    let start = Instant::now();
    ctx.proxy.set_mode(Mode::Latency(Duration::from_millis(150)));
    ctx.raise(name)?;
    let mut over = BTreeSet::new();
    let during = ctx
        .wait_replicas(name, TARGET, Duration::from_secs(60), &mut over)
        .await;
    let scaled_in = start.elapsed().as_secs_f64();
    ctx.proxy.set_mode(Mode::Pass);
    let restored = Instant::now();
    let notes = vec![format!(
        "150 ms per chunk each way (300 ms round trip); scaled under latency {}",
        match during {
            Ok(()) => format!("in {scaled_in:.1}s"),
            Err(_) => "not within 60 s".into(),
        }
    )];
    ctx.finish(name, &b, restored, notes, &baseline).await
}

/// Two agents; the Lease holder is killed with SIGKILL right after the load rose: the other takes over
/// after the lease duration and must finish the scale-up once, not repeat it.
async fn leader_kill(ctx: &mut Ctx) -> Result<FaultReport> {
    let name = "f-leader";
    ctx.start_agent().await?;
    ctx.workload(name).await?;
    let b = ctx.before(name).await?;
    let baseline = b.metrics.clone();
    let leader = ctx.leader().await.context("no agent holds the Lease")?;
    ctx.raise(name)?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = ctx.agents[leader].pid();
    ctx.kill_agent(leader);
    let killed = Instant::now();
    let mut notes = vec![format!("leader (pid {pid}) killed 1.5 s after the load rose")];
    let taken = lazyscale_testenv::try_wait_for(Duration::from_secs(60), || {
        let c = &*ctx;
        async move { c.leader().await }
    })
    .await;
    notes.push(match taken {
        Some(_) => format!("Lease taken over after {:.1}s", killed.elapsed().as_secs_f64()),
        None => "no agent took the Lease within 60 s".into(),
    });
    ctx.finish(name, &b, killed, notes, &baseline).await
}

/// The agent is killed with SIGKILL right after the load rose and started again: it must pick the
/// scale-up up from the DPA's status and the target, once.
async fn agent_kill_restart(ctx: &mut Ctx) -> Result<FaultReport> {
    let name = "f-agent";
    ctx.workload(name).await?;
    let b = ctx.before(name).await?;
    let baseline = b.metrics.clone();
    ctx.raise(name)?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n = ctx.agents.len();
    for _ in 0..n {
        ctx.kill_agent(0);
    }
    let t = Instant::now();
    ctx.start_agent().await?;
    let notes = vec![format!(
        "killed 1.5 s after the load rose; restarted and ready in {:.1}s (a fresh agent's counters)",
        t.elapsed().as_secs_f64()
    )];
    ctx.finish(name, &b, t, notes, &baseline).await
}

/// Every agent is stopped with SIGSTOP (its webhook accepts connections and never answers) while a
/// Deployment of the autoscaled namespace creates 6 pods: the API server must give up on the webhook
/// after its timeout and create them (`failurePolicy: Ignore`). Then SIGCONT, and the autoscaler must
/// still work.
async fn webhook_stopped(ctx: &mut Ctx) -> Result<FaultReport> {
    let name = "f-webhook";
    ctx.workload(name).await?;
    let cfg = lazyscale_testenv::fixtures::webhook_configuration(&ctx.client)
        .await?
        .context("no webhook configuration registered")?;
    let hook = &cfg.data["webhooks"][0];
    let (policy, timeout) = (
        hook["failurePolicy"].as_str().unwrap_or("?").to_string(),
        hook["timeoutSeconds"].as_i64().unwrap_or(-1),
    );
    let b = ctx.before(name).await?;
    let baseline = b.metrics.clone();
    for a in &ctx.agents {
        let _ = std::process::Command::new("kill")
            .args(["-STOP", &a.pid().to_string()])
            .status();
    }
    let stopped = Instant::now();
    let plain = "f-webhook-pods";
    ctx.deployments()
        .create(&PostParams::default(), &app_deployment(plain, 6, "100m", "64Mi"))
        .await?;
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), NS);
    let created = lazyscale_testenv::try_wait_for(Duration::from_secs(60), || {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default().labels(&format!("app={plain}")))
                .await
                .ok()
                .filter(|l| l.items.len() == 6)
        }
    })
    .await;
    let created_s = stopped.elapsed().as_secs_f64();
    for a in &ctx.agents {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &a.pid().to_string()])
            .status();
    }
    let restored = Instant::now();
    ctx.raise(name)?;
    let mut notes = vec![format!(
        "webhook failurePolicy {policy}, timeoutSeconds {timeout}; agent stopped (SIGSTOP) {:.1}s; 6 pods {}",
        restored.duration_since(stopped).as_secs_f64(),
        match created {
            Some(_) => format!("created {created_s:.1}s after the stop"),
            None => "NOT created within 60 s".into(),
        }
    )];
    if created.is_none() {
        notes.push("pods were not created: the webhook blocks pod creation".into());
    }
    let mut r = ctx.finish(name, &b, restored, notes, &baseline).await?;
    if created.is_none() {
        r.lost += 1;
    }
    Ok(r)
}

/// 300 DPA spec changes as fast as the API server takes them (maxReplicas between 10 and 11, above what
/// the load needs) while the scale-up happens: the agent must end at the right count, once.
async fn dpa_flood(ctx: &mut Ctx) -> Result<FaultReport> {
    let name = "f-flood";
    ctx.workload(name).await?;
    let b = ctx.before(name).await?;
    let baseline = b.metrics.clone();
    let requests_before = ctx
        .server
        .requests()
        .iter()
        .filter(|r| r.user == rbac::agent_username())
        .count();
    ctx.raise(name)?;
    let start = Instant::now();
    let api = dpa_api(ctx.client.clone(), NS);
    for i in 0..300 {
        api.patch(
            name,
            &PatchParams::apply("faults"),
            &Patch::Apply(&dpa(name, 10 + (i % 2))),
        )
        .await?;
    }
    let flood_s = start.elapsed().as_secs_f64();
    let restored = Instant::now();
    let mut r = ctx
        .finish(
            name,
            &b,
            restored,
            vec![format!("300 changes in {flood_s:.1}s")],
            &baseline,
        )
        .await?;
    let agent_requests = ctx
        .server
        .requests()
        .iter()
        .filter(|r| r.user == rbac::agent_username())
        .count()
        - requests_before;
    r.notes.push_str(&format!(
        "; agent API requests during flood and settle: {agent_requests}"
    ));
    Ok(r)
}
