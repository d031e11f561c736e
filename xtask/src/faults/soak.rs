//! The soak of `cargo xtask faults --soak-seconds N [--soak-cycles C]`: C gate open/close cycles (100 by
//! default) spread over at least N seconds. Each cycle: a Deployment and its DPA appear, the gate opens
//! and the pod collection syncs, the DPA is edited three times and a pod is deleted and recreated by its
//! ReplicaSet while the stack runs, then both go and the gate closes (the soak's agent has a 1 s grace
//! period; the faults' agents never stop their stack).
//!
//! The agent is sampled once before the first cycle and after every cycle, with the gate closed and
//! [`SETTLE`] later (jemalloc purges freed pages after 1 s; the API server logs a stopped stack's
//! watches as complete): RSS (`/proc`), heap (jemalloc `stats.allocated` through
//! `lazyscale_process_heap_bytes`) and live tasks (`lazyscale_runtime_alive_tasks`), each the minimum of
//! [`READS`] reads 200 ms apart (a leak raises the floor; the minimum drops transient allocations, such as
//! the scrape's own), and open watches: the agent user's watches that the API server's audit log shows
//! started (`ResponseStarted`) and not ended, read incrementally from a fresh agent's start on.
//!
//! The flatness rule ([`fit`]): a least-squares line over the cycle index, leaving out the first
//! [`warmup`] cycles (connection pools, interners and allocator arenas settle there). A series is
//! *growing* when its slope per cycle exceeds its tolerance by more than three standard errors of the
//! slope, and reports the smallest slope that would have tripped in that run (`detectable_per_cycle`).
//! A failed cycle or a growing series fails the soak. One live task or open watch leaked per 25 cycles
//! trips on 100 cycles (those series are exact integers), and `--soak-leak-watch-every 3` makes a
//! 30-cycle soak fail. Known limit: the idle debug agent's heap samples scatter by about 90 KB whatever
//! the minimum over reads, so the heap slope detectable on 100 cycles is 1.2–1.5 KiB per cycle (a
//! 1 KiB-per-cycle leak needs about 130 cycles) and 7–8 KiB on the 30 cycles of `cargo xtask test`;
//! the RSS tolerance (16 KiB per cycle) is coarse on purpose.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use lazyscale_testenv::fixtures::{app_deployment, dpa_api};
use lazyscale_testenv::rbac;
use serde_json::{Value, json};

use super::{Ctx, NS, dpa};

/// Gate cycles of one soak unless `--soak-cycles` says otherwise (issue 14).
pub(crate) const DEFAULT_CYCLES: u32 = 100;
/// Time between the gate closing and the sample.
const SETTLE: Duration = Duration::from_secs(2);
/// Reads per sample, 200 ms apart (the minimum is kept).
const READS: u32 = 5;
/// How long one cycle may wait for the gate to open or close.
const GATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Slope tolerances per cycle, in each series' unit: 16 KiB of RSS (pages and arenas make RSS coarse;
/// the heap series is the fine one), 256 bytes of heap, 1/50 of a watch or task.
const TOLERANCES: [(&str, f64); 4] = [
    ("rss_bytes", 16_384.0),
    ("heap_bytes", 256.0),
    ("open_watches", 0.02),
    ("live_tasks", 0.02),
];

/// What one soak does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SoakConfig {
    /// At least this long in all (cycles quicker than `duration / cycles` wait out their slot).
    pub(crate) duration: Duration,
    /// Gate cycles.
    pub(crate) cycles: u32,
    /// A check of the rule itself: every this many cycles (0: never) the soak opens one watch as the
    /// agent's user and keeps it, a leak the `open_watches` series must report as growing.
    pub(crate) leak_watch_every: u32,
}

/// Cycles left out of the fit: the first tenth, at least 5, at most half.
pub(crate) fn warmup(cycles: usize) -> usize {
    (cycles / 10).max(5).min(cycles / 2)
}

/// A least-squares line: its slope and the slope's standard error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fit {
    pub(crate) slope: f64,
    pub(crate) stderr: f64,
}

/// Fits `ys` over `xs` (slope 0, error 0 with fewer than two distinct x; error 0 with two points).
pub(crate) fn fit(xs: &[f64], ys: &[f64]) -> Fit {
    let n = xs.len().min(ys.len());
    let zero = Fit {
        slope: 0.0,
        stderr: 0.0,
    };
    if n < 2 {
        return zero;
    }
    let (xs, ys) = (&xs[..n], &ys[..n]);
    let nf = n as f64;
    let mx = xs.iter().sum::<f64>() / nf;
    let my = ys.iter().sum::<f64>() / nf;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx == 0.0 {
        return zero;
    }
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let slope = sxy / sxx;
    let stderr = if n > 2 {
        let rss: f64 = xs
            .iter()
            .zip(ys)
            .map(|(x, y)| (y - my - slope * (x - mx)).powi(2))
            .sum();
        (rss / (nf - 2.0) / sxx).sqrt()
    } else {
        0.0
    };
    Fit { slope, stderr }
}

fn round(v: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (v * p).round() / p
}

/// One series' summary: samples `ys` taken after cycles `cycles` (0: before the first), `hours` from
/// the start; fitted from cycle [`warmup`] on; growing when the slope per cycle exceeds `tolerance` by
/// more than three standard errors.
pub(crate) fn series(name: &str, cycles: &[f64], hours: &[f64], ys: &[f64], tolerance: f64) -> Value {
    let last_cycle = cycles.last().copied().unwrap_or(0.0);
    let skip = warmup(last_cycle as usize) as f64;
    let (fx, fy): (Vec<f64>, Vec<f64>) = cycles
        .iter()
        .zip(ys)
        .filter(|(c, _)| **c >= skip)
        .map(|(c, y)| (*c, *y))
        .unzip();
    let per_cycle = fit(&fx, &fy);
    let fh: Vec<f64> = cycles
        .iter()
        .zip(hours)
        .filter(|(c, _)| **c >= skip)
        .map(|(_, h)| *h)
        .collect();
    let per_hour = fit(&fh, &fy).slope;
    let detectable = tolerance + 3.0 * per_cycle.stderr;
    let min = ys.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    json!({
        "series": name,
        "samples": ys.len(),
        "fitted_from_cycle": skip,
        "first": ys.first().copied().unwrap_or(0.0),
        "last": ys.last().copied().unwrap_or(0.0),
        "min": if min.is_finite() { min } else { 0.0 },
        "max": if max.is_finite() { max } else { 0.0 },
        "slope_per_cycle": round(per_cycle.slope, 4),
        "slope_stderr_per_cycle": round(per_cycle.stderr, 4),
        "slope_per_hour": round(per_hour, 1),
        "fitted_change": round(per_cycle.slope * (last_cycle - skip).max(0.0), 2),
        "tolerance_per_cycle": tolerance,
        "detectable_per_cycle": round(detectable, 4),
        "growing": per_cycle.slope > detectable,
    })
}

/// The agent user's open watches, read incrementally from the audit log: watches that started
/// (`ResponseStarted`) since the tracker was made and have not ended (`ResponseComplete`, `Panic`).
struct Watches {
    path: PathBuf,
    user: String,
    offset: u64,
    /// audit ID → `resource` of the open watches.
    open: HashMap<String, String>,
}

impl Watches {
    /// A tracker that starts at the log's current end.
    fn from_end(path: PathBuf, user: String) -> Watches {
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Watches {
            path,
            user,
            offset,
            open: HashMap::new(),
        }
    }

    /// Reads the lines written since the last call; returns the open watches.
    fn update(&mut self) -> Result<u64> {
        let mut f =
            std::fs::File::open(&self.path).with_context(|| format!("open {}", self.path.display()))?;
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        // Only whole lines: the API server may be writing the last one.
        let end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        self.feed(&buf[..end]);
        self.offset += end as u64;
        Ok(self.open.len() as u64)
    }

    fn feed(&mut self, text: &[u8]) {
        for line in text.split(|b| *b == b'\n') {
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or_default();
            if s("/verb") != "watch" || s("/user/username") != self.user {
                continue;
            }
            match s("/stage") {
                "ResponseStarted" => {
                    let group = s("/objectRef/apiGroup");
                    let resource = s("/objectRef/resource");
                    let what = if group.is_empty() {
                        resource.to_string()
                    } else {
                        format!("{group}/{resource}")
                    };
                    self.open.insert(s("/auditID").to_string(), what);
                }
                "ResponseComplete" | "Panic" => {
                    self.open.remove(s("/auditID"));
                }
                _ => {}
            }
        }
    }

    /// Open watches by resource.
    fn by_resource(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for r in self.open.values() {
            *out.entry(r.clone()).or_insert(0) += 1;
        }
        out
    }
}

/// One sample of the agent.
struct Sample {
    cycle: f64,
    hours: f64,
    rss: f64,
    heap: f64,
    watches: f64,
    tasks: f64,
}

async fn sample(ctx: &Ctx, watches: &mut Watches, cycle: u32, start: Instant) -> Result<Sample> {
    let agent = ctx.agents.first().context("no agent")?;
    let (mut rss, mut heap, mut tasks) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
    for i in 0..READS {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let m = agent
            .metrics()
            .map_err(|e| anyhow!("the agent's metrics: {}", lazyscale_testenv::error_chain(&e)))?;
        let get = |k: &str| {
            m.get(k)
                .copied()
                .with_context(|| format!("no {k} in the agent's metrics"))
        };
        heap = heap.min(get("lazyscale_process_heap_bytes")?);
        tasks = tasks.min(get("lazyscale_runtime_alive_tasks")?);
        rss = rss.min(agent.rss().0 as f64);
    }
    Ok(Sample {
        cycle: f64::from(cycle),
        hours: start.elapsed().as_secs_f64() / 3600.0,
        rss,
        heap,
        watches: watches.update()? as f64,
        tasks,
    })
}

async fn wait_metric(ctx: &Ctx, name: &str, want: f64, timeout: Duration) -> Result<()> {
    let t = Instant::now();
    loop {
        if ctx.agents.iter().all(|a| a.metric(name) == want) {
            return Ok(());
        }
        if t.elapsed() > timeout {
            anyhow::bail!("{name} did not become {want} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes every Deployment and DPA the faults left, so the gate can close.
async fn clear(ctx: &Ctx) -> Result<()> {
    let dp = DeleteParams::background();
    let dpas = dpa_api(ctx.client.clone(), NS);
    for d in dpas.list(&ListParams::default()).await?.items {
        if let Some(n) = d.metadata.name {
            let _ = dpas.delete(&n, &dp).await;
        }
    }
    let deps = Api::<Deployment>::namespaced(ctx.client.clone(), NS);
    for d in deps.list(&ListParams::default()).await?.items {
        if let Some(n) = d.metadata.name {
            let _ = deps.delete(&n, &dp).await;
        }
    }
    Ok(())
}

/// One gate cycle; returns whether the horizontal controller reconciled during it.
async fn cycle(ctx: &Ctx, i: u32) -> Result<bool> {
    let name = format!("soak-{}", i % 4);
    let deps = Api::<Deployment>::namespaced(ctx.client.clone(), NS);
    let dpas = dpa_api(ctx.client.clone(), NS);
    ctx.sim()?.set_load(&super::workload(&name), super::load(0.2));
    let d = app_deployment(&name, 2, "200m", "64Mi");
    // A Deployment of the same name four cycles ago may still be going away.
    let created = Instant::now();
    loop {
        match deps.create(&PostParams::default(), &d).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 && created.elapsed() < GATE_TIMEOUT => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context("create the soak Deployment"),
        }
    }
    let reconciles = |ctx: &Ctx| {
        ctx.agents
            .first()
            .map(|a| a.metric("lazyscale_controller_operations_total{op=\"Reconcile\"}"))
            .unwrap_or(0.0)
    };
    let before = reconciles(ctx);
    let apply = PatchParams::apply("soak");
    dpas.patch(&name, &apply, &Patch::Apply(&dpa(&name, 4))).await?;
    wait_metric(ctx, "lazyscale_gate_open", 1.0, GATE_TIMEOUT)
        .await
        .context("the gate did not open")?;
    wait_metric(ctx, "lazyscale_pod_collection_synced", 1.0, GATE_TIMEOUT)
        .await
        .context("the pod collection did not sync")?;
    // Churn while the stack runs: DPA edits and a pod replaced by the ReplicaSet.
    for m in [5, 6, 4] {
        dpas.patch(&name, &apply, &Patch::Apply(&dpa(&name, m))).await?;
    }
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), NS);
    if let Some(p) = pods
        .list(&ListParams::default().labels(&format!("app={name}")))
        .await?
        .items
        .into_iter()
        .next()
        && let Some(n) = p.metadata.name
    {
        pods.delete(&n, &DeleteParams::default())
            .await
            .context("delete a soak pod")?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reconciled = reconciles(ctx) > before;
    dpas.delete(&name, &DeleteParams::background()).await?;
    deps.delete(&name, &DeleteParams::background()).await?;
    wait_metric(ctx, "lazyscale_gate_open", 0.0, GATE_TIMEOUT)
        .await
        .context("the gate did not close")?;
    Ok(reconciled)
}

/// A client with the agent's own identity (for the watch-leak check).
async fn agent_identity(ctx: &Ctx) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(ctx.server.agent_kubeconfig_path())?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// Runs the soak; its JSON has `"pass": false` when a cycle failed or a series grew.
pub(crate) async fn run(ctx: &mut Ctx, cfg: SoakConfig) -> Result<Value> {
    ctx.ensure_agent().await?;
    clear(ctx).await?;
    // A fresh agent, with the tracker started before it: every watch it opens is in the tracked part of
    // the log (the previous agent's, and the ones a fault's API server crash cut, are not).
    let audit_path = ctx.server.dir().join("audit.log");
    let mut watches = Watches::from_end(audit_path, rbac::agent_username());
    if let Some(a) = ctx.agents.pop() {
        tokio::task::block_in_place(|| a.stop())
            .map_err(|e| anyhow!("stop the agent: {}", lazyscale_testenv::error_chain(&e)))?;
    }
    // The faults' agents never stop their stack (grace 0); the soak's stops it 1 s after the last
    // autoscaler went.
    ctx.grace_seconds = 1;
    ctx.start_agent().await?;
    wait_metric(ctx, "lazyscale_gate_open", 0.0, Duration::from_secs(60))
        .await
        .context("the gate did not close once the faults' objects were deleted")?;
    let agent_pid = ctx.agents.first().context("no agent")?.pid();
    let leak_client = if cfg.leak_watch_every > 0 {
        Some(agent_identity(ctx).await?)
    } else {
        None
    };
    let mut leaked: Vec<BoxStream<'static, kube::Result<kube::core::WatchEvent<Pod>>>> = Vec::new();
    // The idle agent's demand watches open before the first sample.
    tokio::time::sleep(SETTLE).await;
    let start = Instant::now();
    let mut samples = vec![sample(ctx, &mut watches, 0, start).await?];
    let mut failures = Vec::new();
    let mut reconciled = 0u32;
    let slot = cfg.duration / cfg.cycles.max(1);
    for i in 1..=cfg.cycles {
        let t = Instant::now();
        match cycle(ctx, i).await {
            Ok(r) => reconciled += u32::from(r),
            Err(e) => {
                failures.push(format!("cycle {i}: {e:#}"));
                // Whatever the cycle left must go before the next one can close the gate.
                let _ = clear(ctx).await;
                let _ = wait_metric(ctx, "lazyscale_gate_open", 0.0, GATE_TIMEOUT).await;
            }
        }
        if let (Some(c), true) = (&leak_client, i % cfg.leak_watch_every.max(1) == 0) {
            let w = Api::<Pod>::namespaced(c.clone(), NS)
                .watch(&WatchParams::default(), "0")
                .await
                .context("open the leaked watch")?;
            leaked.push(Box::pin(w));
        }
        let alive = match ctx.agents.first_mut() {
            Some(a) => a.pid() == agent_pid && matches!(a.try_wait(), Ok(None)),
            None => false,
        };
        if !alive {
            failures.push(format!("the agent exited during cycle {i}"));
            break;
        }
        tokio::time::sleep(slot.saturating_sub(t.elapsed()).max(SETTLE)).await;
        match sample(ctx, &mut watches, i, start).await {
            Ok(s) => samples.push(s),
            Err(e) => failures.push(format!("sample after cycle {i}: {e:#}")),
        }
        if failures.len() > 5 {
            failures.push("more than 5 failures: soak stopped".into());
            break;
        }
    }
    let col = |f: fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
    let (cycles, hours) = (col(|s| s.cycle), col(|s| s.hours));
    let values = [
        col(|s| s.rss),
        col(|s| s.heap),
        col(|s| s.watches),
        col(|s| s.tasks),
    ];
    let series: Vec<Value> = TOLERANCES
        .iter()
        .zip(&values)
        .map(|((name, tol), ys)| series(name, &cycles, &hours, ys, *tol))
        .collect();
    let growing: Vec<&str> = series
        .iter()
        .filter(|s| s["growing"] == true)
        .filter_map(|s| s["series"].as_str())
        .collect();
    let opened = ctx
        .agents
        .first()
        .map(|a| a.metric("lazyscale_gate_transitions_total{to=\"Open\"}"))
        .unwrap_or(0.0);
    let pass = failures.is_empty() && growing.is_empty() && samples.len() > warmup(cfg.cycles as usize) + 2;
    let out = json!({
        "pass": pass,
        "seconds": start.elapsed().as_secs_f64().round(),
        "cycles": cfg.cycles,
        "cycles_sampled": samples.len().saturating_sub(1),
        "gate_opened": opened,
        "cycles_with_a_reconcile": reconciled,
        "leaked_watches_injected": leaked.len(),
        "sampled": "before the first cycle and after each, gate closed, 2 s settled; min of 5 reads 200 ms apart",
        "growing": growing,
        "failures": failures,
        "open_watches_at_end": watches.by_resource(),
        "series": series,
        "samples": {
            "cycle": cycles,
            "seconds": hours.iter().map(|h| (h * 3600.0).round()).collect::<Vec<f64>>(),
            "rss_bytes": values[0],
            "heap_bytes": values[1],
            "open_watches": values[2],
            "live_tasks": values[3],
        },
    });
    drop(leaked);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noise in [-1, 1] (a small LCG: no dependency, same sequence every run).
    fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    fn run_series(ys: &[f64], tol: f64) -> Value {
        let cycles: Vec<f64> = (0..ys.len()).map(|i| i as f64).collect();
        let hours: Vec<f64> = cycles.iter().map(|c| c * 3.0 / 3600.0).collect();
        series("x", &cycles, &hours, ys, tol)
    }

    #[test]
    fn fit_of_a_line_a_flat_series_and_degenerate_input() {
        let xs = [0.0, 1.0, 2.0, 3.0];
        let f = fit(&xs, &[1.0, 3.0, 5.0, 7.0]);
        assert!((f.slope - 2.0).abs() < 1e-12 && f.stderr < 1e-9);
        assert_eq!(fit(&xs, &[4.0, 4.0, 4.0, 4.0]).slope, 0.0);
        assert_eq!(fit(&[1.0], &[2.0]).slope, 0.0);
        assert_eq!(fit(&[1.0, 1.0], &[2.0, 3.0]).slope, 0.0);
        assert!(fit(&xs, &[1.0, 3.0, 4.0, 7.0]).stderr > 0.0);
    }

    #[test]
    fn warmup_is_a_tenth_with_bounds() {
        assert_eq!(warmup(100), 10);
        assert_eq!(warmup(30), 5);
        assert_eq!(warmup(6), 3);
    }

    /// A heap as noisy as the agent's (±8 KiB) over 100 cycles: flat passes, 1 KiB per cycle trips.
    #[test]
    fn a_heap_leak_of_one_kib_per_cycle_trips_and_noise_does_not() {
        let base = 40.0 * 1_048_576.0;
        let n = noise(101, 7);
        let flat: Vec<f64> = n.iter().map(|e| base + 8192.0 * e).collect();
        let leak: Vec<f64> = flat
            .iter()
            .enumerate()
            .map(|(i, y)| y + 1024.0 * i as f64)
            .collect();
        let s = run_series(&flat, 256.0);
        assert_eq!(s["growing"], false, "{s}");
        assert!(s["detectable_per_cycle"].as_f64() < Some(1024.0), "{s}");
        let s = run_series(&leak, 256.0);
        assert_eq!(s["growing"], true, "{s}");
    }

    /// Growth during the warm-up (a pool filling) is not a leak; growth after it is.
    #[test]
    fn warmup_growth_is_left_out() {
        let ys: Vec<f64> = (0..=100).map(|i| f64::from(i.min(8)) * 100_000.0).collect();
        assert_eq!(run_series(&ys, 256.0)["growing"], false);
        let ys: Vec<f64> = (0..=100).map(|i| f64::from(i.min(30)) * 100_000.0).collect();
        assert_eq!(run_series(&ys, 256.0)["growing"], true);
    }

    /// Open watches or tasks: one leaked every 25 cycles trips; a transient extra one in some samples
    /// (a watch not yet logged complete) does not.
    #[test]
    fn one_leaked_watch_per_25_cycles_trips_and_transients_do_not() {
        let leak: Vec<f64> = (0..=100).map(|i| 4.0 + f64::from(i / 25)).collect();
        assert_eq!(run_series(&leak, 0.02)["growing"], true);
        let transient: Vec<f64> = (0..=100)
            .map(|i| if i % 7 == 3 || i == 100 { 5.0 } else { 4.0 })
            .collect();
        assert_eq!(run_series(&transient, 0.02)["growing"], false);
        // And over a short run (30 cycles), one leaked every 5 cycles.
        let short: Vec<f64> = (0..=30).map(|i| 4.0 + f64::from(i / 5)).collect();
        assert_eq!(run_series(&short, 0.02)["growing"], true);
    }

    #[test]
    fn watches_are_counted_by_audit_id_across_reads() {
        let user = "system:serviceaccount:lazyscale:lazyscale";
        let line = |id: &str, stage: &str, user: &str, verb: &str| {
            format!(
                r#"{{"auditID":"{id}","stage":"{stage}","verb":"{verb}","user":{{"username":"{user}"}},"objectRef":{{"resource":"pods","apiVersion":"v1"}}}}"#
            )
        };
        let mut w = Watches {
            path: PathBuf::new(),
            user: user.into(),
            offset: 0,
            open: HashMap::new(),
        };
        let first = [
            line("a", "ResponseStarted", user, "watch"),
            line("b", "ResponseStarted", user, "watch"),
            line("c", "ResponseStarted", "other", "watch"),
            line("d", "ResponseComplete", user, "list"),
            // Started before the tracker: its end is ignored.
            line("z", "ResponseComplete", user, "watch"),
        ]
        .join("\n");
        w.feed(first.as_bytes());
        assert_eq!(w.open.len(), 2);
        w.feed(line("a", "ResponseComplete", user, "watch").as_bytes());
        assert_eq!(w.open.len(), 1);
        assert_eq!(w.by_resource().get("pods"), Some(&1));
    }

    #[test]
    fn update_reads_only_whole_lines_once() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("audit.log");
        let user = "u";
        let started = r#"{"auditID":"a","stage":"ResponseStarted","verb":"watch","user":{"username":"u"},"objectRef":{"resource":"pods"}}"#;
        std::fs::write(&path, "")?;
        let mut w = Watches::from_end(path.clone(), user.into());
        std::fs::write(&path, format!("{started}\n{}", &started[..20]))?;
        assert_eq!(w.update()?, 1);
        assert_eq!(w.offset, started.len() as u64 + 1);
        assert_eq!(w.update()?, 1);
        Ok(())
    }
}
