//! The soak of `cargo xtask faults --soak-seconds N`: 100 gate open/close cycles spread over N seconds
//! (each: a Deployment and its DPA appear, the gate opens, the DPA is edited and pods are deleted and
//! recreated while the stack runs, then both go and the gate closes after the one-second grace
//! period), sampling the agent after every cycle, with the gate closed: RSS (`/proc`), heap (jemalloc,
//! `lazyscale_process_heap_bytes`), open watches (watches started and not ended in the API server's
//! audit log) and live tasks (`lazyscale_runtime_alive_tasks`). Each series is reported with its least
//! squares slope per hour and flagged when the fitted change over the run is more than its tolerance.
//!
//! Known gap: written and unit-tested (slope, flatness), not yet run end to end; no slope has been
//! measured with it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use lazyscale_testenv::fixtures::{app_deployment, dpa_api};
use lazyscale_testenv::{audit, rbac};
use serde_json::{Value, json};

use super::{Ctx, NS, dpa};

/// Gate cycles of one soak.
const CYCLES: u32 = 100;

/// The least-squares slope of `ys` over `xs` (0 with fewer than two distinct x).
pub(crate) fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len().min(ys.len());
    if n < 2 {
        return 0.0;
    }
    let mx = xs[..n].iter().sum::<f64>() / n as f64;
    let my = ys[..n].iter().sum::<f64>() / n as f64;
    let sxx: f64 = xs[..n].iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = xs[..n]
        .iter()
        .zip(&ys[..n])
        .map(|(x, y)| (x - mx) * (y - my))
        .sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// One series: its samples' summary, slope per hour, and whether the fitted change over the run
/// exceeds `tolerance` (absolute, in the series' unit).
fn series(name: &str, hours: &[f64], ys: &[f64], tolerance: f64) -> Value {
    let per_hour = slope(hours, ys);
    let span = hours.last().copied().unwrap_or(0.0) - hours.first().copied().unwrap_or(0.0);
    let fitted_change = per_hour * span;
    let first = ys.first().copied().unwrap_or(0.0);
    let last = ys.last().copied().unwrap_or(0.0);
    let max = ys.iter().copied().fold(f64::MIN, f64::max);
    json!({
        "series": name,
        "first": first, "last": last, "max": max,
        "slope_per_hour": (per_hour * 1000.0).round() / 1000.0,
        "fitted_change_over_run": (fitted_change * 1000.0).round() / 1000.0,
        "tolerance": tolerance,
        "flat": fitted_change.abs() <= tolerance,
    })
}

async fn wait_gate(ctx: &Ctx, open: f64, timeout: Duration) -> Result<()> {
    let t = Instant::now();
    loop {
        if ctx.agents.iter().all(|a| a.metric("lazyscale_gate_open") == open) {
            return Ok(());
        }
        if t.elapsed() > timeout {
            anyhow::bail!("the gate did not become {open} within {timeout:?}");
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

async fn cycle(ctx: &Ctx, i: u32) -> Result<()> {
    let name = format!("soak-{}", i % 4);
    let deps = Api::<Deployment>::namespaced(ctx.client.clone(), NS);
    let dpas = dpa_api(ctx.client.clone(), NS);
    ctx.sim()?.set_load(&super::workload(&name), super::load(0.2));
    // A Deployment of the previous round with this name may still be going away.
    let mut d = app_deployment(&name, 2, "200m", "64Mi");
    d.metadata.resource_version = None;
    let created = Instant::now();
    loop {
        match deps.create(&PostParams::default(), &d).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 && created.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context("create the soak Deployment"),
        }
    }
    dpas.patch(&name, &PatchParams::apply("soak"), &Patch::Apply(&dpa(&name, 4)))
        .await?;
    wait_gate(ctx, 1.0, Duration::from_secs(30)).await?;
    // Churn while the stack runs: DPA edits and pods replaced by the ReplicaSet.
    for m in [5, 6, 4] {
        dpas.patch(&name, &PatchParams::apply("soak"), &Patch::Apply(&dpa(&name, m)))
            .await?;
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
        let _ = pods.delete(&n, &DeleteParams::default()).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    dpas.delete(&name, &DeleteParams::background()).await?;
    deps.delete(&name, &DeleteParams::background()).await?;
    wait_gate(ctx, 0.0, Duration::from_secs(30)).await?;
    Ok(())
}

/// Runs the soak for about `duration` (at least as long as [`CYCLES`] cycles take).
pub(crate) async fn run(ctx: &mut Ctx, duration: Duration) -> Result<Value> {
    ctx.ensure_agent().await?;
    clear(ctx).await?;
    wait_gate(ctx, 0.0, Duration::from_secs(60))
        .await
        .context("the gate did not close once the faults' objects were deleted")?;
    let agent_pid = ctx.agents.first().context("no agent")?.pid();
    let audit_path = ctx.server.dir().join("audit.log");
    // Watches are counted from here on: earlier ones cut by the faults' crashes never complete.
    let audit_offset = std::fs::metadata(&audit_path).map(|m| m.len()).unwrap_or(0);
    let user = rbac::agent_username();
    let start = Instant::now();
    let (mut hours, mut rss, mut heap, mut watches, mut tasks) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut sample = |ctx: &Ctx| {
        let agent = &ctx.agents[0];
        let text = std::fs::read(&audit_path).unwrap_or_default();
        let from = usize::try_from(audit_offset).unwrap_or(0).min(text.len());
        let text = String::from_utf8_lossy(&text[from..]);
        hours.push(start.elapsed().as_secs_f64() / 3600.0);
        rss.push(agent.rss().0 as f64 / 1_048_576.0);
        heap.push(agent.metric("lazyscale_process_heap_bytes") / 1_048_576.0);
        watches.push(audit::open_watches(&text, &user) as f64);
        tasks.push(agent.metric("lazyscale_runtime_alive_tasks"));
    };
    // The idle agent's four demand watches open before the first sample.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sample(ctx);
    let mut failures = Vec::new();
    let slot = duration / CYCLES;
    for i in 0..CYCLES {
        let t = Instant::now();
        if let Err(e) = cycle(ctx, i).await {
            failures.push(format!("cycle {i}: {e:#}"));
            if failures.len() > 5 {
                break;
            }
        }
        if ctx.agents.first().map(super::Agent::pid) != Some(agent_pid) {
            failures.push("the agent changed".into());
            break;
        }
        sample(ctx);
        if let Some(rest) = slot.checked_sub(t.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    let transitions = ctx.agents[0].metric("lazyscale_gate_transitions_total{to=\"Open\"}");
    Ok(json!({
        "seconds": (start.elapsed().as_secs_f64()).round(),
        "cycles": hours.len().saturating_sub(1),
        "gate_opened": transitions,
        "sampled": "after each cycle, with the gate closed",
        "failures": failures,
        "series": [
            series("rss_mib", &hours, &rss, 2.0),
            series("heap_mib", &hours, &heap, 1.0),
            series("open_watches", &hours, &watches, 0.5),
            series("live_tasks", &hours, &tasks, 0.5),
        ],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_a_flat_series() {
        let xs = [0.0, 1.0, 2.0, 3.0];
        assert!((slope(&xs, &[1.0, 3.0, 5.0, 7.0]) - 2.0).abs() < 1e-12);
        assert_eq!(slope(&xs, &[4.0, 4.0, 4.0, 4.0]), 0.0);
        assert_eq!(slope(&[1.0], &[2.0]), 0.0);
        assert_eq!(slope(&[1.0, 1.0], &[2.0, 3.0]), 0.0);
    }

    #[test]
    fn a_growing_series_is_not_flat() {
        let hours = [0.0, 0.5, 1.0];
        assert_eq!(series("x", &hours, &[1.0, 2.0, 3.0], 0.5)["flat"], false);
        assert_eq!(series("x", &hours, &[1.0, 1.1, 1.0], 0.5)["flat"], true);
    }
}
