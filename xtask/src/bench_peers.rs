//! The peers of `cargo xtask bench lazy`, run one after another on the bench's cluster once lazyscale's
//! phases are over (2 cores: nothing else measured runs at the same time): the kube-rs full-Pod reflector,
//! the client-go pod informer and the VPA recommender and admission controller (built from Go modules by
//! [`lazyscale_testenv::peers`]). Each runs under a user of its own in the measured group, so its pod
//! LIST and WATCH requests come from the audit log by user; RSS is read from `/proc` like the agent's.
//!
//! Also here: the RSS [`Timeline`] of every measured process over the run, sampled every 250 ms, and
//! its chart (one self-contained HTML page with an inline SVG: a line per process, the phases marked).
//! The quality harness's chart writer (`lazyscale-quality` `report::chart_html`) draws usage traces
//! against recommendations and takes its own trace types, so it does not fit RSS over phases.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use lazyscale_testenv::agent::{free_port, proc_rss};
use lazyscale_testenv::peers::{self, Binaries, Informer, Peer};
use lazyscale_testenv::pki::MEASURED_GROUP;
use lazyscale_testenv::{Server, audit};
use serde_json::{Value, json};

use super::progress;

/// One RSS sample: seconds since the bench started, the process's series, bytes.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds since the timeline started.
    pub t: f64,
    /// The series (process) name.
    pub series: String,
    /// RSS in bytes.
    pub rss: u64,
}

#[derive(Default)]
struct TimelineData {
    current: Option<(String, u32)>,
    samples: Vec<Sample>,
    marks: Vec<(f64, String)>,
}

/// The RSS of the process being measured, sampled every 250 ms on a thread of its own.
pub struct Timeline {
    data: Arc<Mutex<TimelineData>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    start: Instant,
}

impl Timeline {
    /// Starts sampling (nothing is followed yet).
    pub fn start() -> Timeline {
        let data = Arc::new(Mutex::new(TimelineData::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let thread = {
            let (data, stop) = (data.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(mut d) = data.lock()
                        && let Some((series, pid)) = d.current.clone()
                    {
                        let (rss, _) = proc_rss(pid);
                        if rss > 0 {
                            d.samples.push(Sample {
                                t: start.elapsed().as_secs_f64(),
                                series,
                                rss,
                            });
                        }
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
        };
        Timeline {
            data,
            stop,
            thread: Some(thread),
            start,
        }
    }

    /// Samples `pid` as `series` from now on.
    pub fn follow(&self, series: &str, pid: u32) {
        if let Ok(mut d) = self.data.lock() {
            d.current = Some((series.to_string(), pid));
        }
    }

    /// Marks the start of a phase.
    pub fn mark(&self, label: &str) {
        if let Ok(mut d) = self.data.lock() {
            d.marks
                .push((self.start.elapsed().as_secs_f64(), label.to_string()));
        }
    }

    /// Stops sampling and returns the samples and the marks.
    pub fn finish(mut self) -> (Vec<Sample>, Vec<(f64, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut d = self
            .data
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        (std::mem::take(&mut d.samples), std::mem::take(&mut d.marks))
    }
}

const COLOURS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A self-contained HTML page: RSS (MiB) over the run's seconds, a line per series (a gap where a
/// series was not sampled for more than 2 s), a dashed line per mark, and a table of each series'
/// last and highest RSS.
pub fn chart_html(title: &str, samples: &[Sample], marks: &[(f64, String)]) -> String {
    let (w, h) = (1100.0_f64, 520.0_f64);
    let (left, right, top, bottom) = (70.0, 230.0, 30.0, 50.0);
    let t_max = samples
        .iter()
        .map(|s| s.t)
        .chain(marks.iter().map(|m| m.0))
        .fold(1.0_f64, f64::max);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let y_max = samples.iter().map(|s| mib(s.rss)).fold(16.0_f64, f64::max) * 1.1;
    let x = |t: f64| left + (w - left - right) * t / t_max;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v / y_max);
    let mut order: Vec<String> = Vec::new();
    let mut by_series: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        if !order.contains(&s.series) {
            order.push(s.series.clone());
        }
        by_series.entry(s.series.as_str()).or_default().push(s);
    }
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = write!(svg, "<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>");
    // axes and grid
    let y_step = [8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]
        .into_iter()
        .find(|s| y_max / s <= 8.0)
        .unwrap_or(2048.0);
    let mut v = 0.0;
    while v <= y_max {
        let yy = y(v);
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#eee\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text>",
            w - right,
            left - 6.0,
            yy + 4.0
        );
        v += y_step;
    }
    let t_step = [10.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|s| t_max / s <= 12.0)
        .unwrap_or(1200.0);
    let mut t = 0.0;
    while t <= t_max {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t:.0}</text>",
            x(t),
            h - bottom + 16.0
        );
        t += t_step;
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds since the bench started</text><text x=\"16\" y=\"{:.1}\" transform=\"rotate(-90 16 {:.1})\" text-anchor=\"middle\">RSS (MiB)</text>",
        left + (w - left - right) / 2.0,
        h - 12.0,
        top + (h - top - bottom) / 2.0,
        top + (h - top - bottom) / 2.0
    );
    let _ = write!(
        svg,
        "<line x1=\"{left}\" x2=\"{left}\" y1=\"{top}\" y2=\"{:.1}\" stroke=\"#333\"/><line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for (i, (mt, label)) in marks.iter().enumerate() {
        let xx = x(*mt);
        let ty = top + 10.0 + (i % 4) as f64 * 12.0;
        let _ = write!(
            svg,
            "<line x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{top}\" y2=\"{:.1}\" stroke=\"#999\" stroke-dasharray=\"4 3\"/><text x=\"{:.1}\" y=\"{ty:.1}\" fill=\"#555\">{}</text>",
            h - bottom,
            xx + 3.0,
            esc(label)
        );
    }
    for (i, name) in order.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points = by_series.get(name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let mut d = String::new();
        let mut last_t = f64::NEG_INFINITY;
        for p in points {
            let cmd = if p.t - last_t > 2.0 { 'M' } else { 'L' };
            let _ = write!(d, "{cmd}{:.1},{:.1} ", x(p.t), y(mib(p.rss)));
            last_t = p.t;
        }
        let _ = write!(
            svg,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.6\"/>"
        );
        let ly = top + 14.0 + i as f64 * 18.0;
        let lx = w - right + 14.0;
        let _ = write!(
            svg,
            "<line x1=\"{lx:.1}\" x2=\"{:.1}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"3\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
            esc(name)
        );
    }
    svg.push_str("</svg>");
    let mut table = String::from(
        "<table><tr><th>process</th><th>last RSS (MiB)</th><th>highest sampled RSS (MiB)</th><th>samples</th></tr>",
    );
    for name in &order {
        let points = by_series.get(name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let last = points.last().map_or(0, |p| p.rss);
        let max = points.iter().map(|p| p.rss).max().unwrap_or(0);
        let _ = write!(
            table,
            "<tr><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td></tr>",
            esc(name),
            mib(last),
            mib(max),
            points.len()
        );
    }
    table.push_str("</table>");
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>body{{font-family:sans-serif;margin:20px}}table{{border-collapse:collapse;margin-top:12px}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}</style></head><body><h2>{t}</h2>{svg}{table}</body></html>",
        t = esc(title)
    )
}

/// What the peers need from the bench.
pub struct Ctx<'a> {
    /// The populated control plane.
    pub server: &'a Server,
    /// The bench's runtime.
    pub rt: &'a tokio::runtime::Runtime,
    /// An administrator's client.
    pub client: kube::Client,
    /// Where logs go (`target/bench`).
    pub dir: PathBuf,
    /// The RSS timeline.
    pub timeline: &'a Timeline,
    /// How long a peer settles after its sync before it is measured.
    pub settle: Duration,
}

impl Ctx<'_> {
    /// A kubeconfig of `user` in the measured group (audited, cluster-admin).
    fn kubeconfig(&self, user: &str) -> Result<PathBuf> {
        self.server
            .user_kubeconfig(user, &[MEASURED_GROUP])
            .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))
    }

    /// (pod LISTs, pod WATCHes) of `user` so far.
    fn pod_requests(&self, user: &str) -> (u64, u64) {
        let r = self.server.requests();
        (
            audit::count(&r, user, "list", "pods"),
            audit::count(&r, user, "watch", "pods"),
        )
    }
}

fn requests_since(ctx: &Ctx<'_>, user: &str, base: (u64, u64)) -> (u64, u64) {
    let (l, w) = ctx.pod_requests(user);
    (l.saturating_sub(base.0), w.saturating_sub(base.1))
}

/// The kube-rs reflector of full Pods (`full-pod-reflector`, xtask's binary): it prints its figures
/// once synced (and 2 s later) and exits.
pub fn kube_rs_reflector(ctx: &Ctx<'_>, binary: &Path) -> Result<Value> {
    const USER: &str = "bench-kube-rs-reflector";
    let kubeconfig = ctx.kubeconfig(USER)?;
    let base = ctx.pod_requests(USER);
    ctx.timeline.mark("kube-rs reflector");
    let child = std::process::Command::new(binary)
        .env("KUBECONFIG", &kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("run the kube-rs reflector")?;
    ctx.timeline.follow("kube-rs full reflector", child.id());
    let out = child
        .wait_with_output()
        .context("wait for the kube-rs reflector")?;
    let line = String::from_utf8_lossy(&out.stdout);
    let mut v: Value = serde_json::from_str(line.trim()).with_context(|| {
        format!(
            "the kube-rs reflector printed {line:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let (lists, watches) = requests_since(ctx, USER, base);
    v["pod_list_requests"] = json!(lists);
    v["pod_watch_requests"] = json!(watches);
    v["user"] = json!(USER);
    progress(&format!("kube-rs full reflector: {v}"));
    Ok(v)
}

/// The client-go pod informer (ours, `testenv/peers/informer`): synced, then measured after the settle
/// time with the informer still live.
pub fn client_go_informer(ctx: &Ctx<'_>, bins: &Binaries) -> Result<Value> {
    const USER: &str = "bench-client-go-informer";
    let kubeconfig = ctx.kubeconfig(USER)?;
    let base = ctx.pod_requests(USER);
    ctx.timeline.mark("client-go informer");
    let (mut informer, synced) = Informer::start(
        &bins.informer,
        &kubeconfig,
        &ctx.dir.join("peer-informer.log"),
        Duration::from_secs(900),
    )
    .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    ctx.timeline.follow("client-go informer", informer.pid());
    std::thread::sleep(ctx.settle);
    let stats = informer
        .stats()
        .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    informer.stop();
    let (lists, watches) = requests_since(ctx, USER, base);
    let v = json!({
        "pods": stats.pods,
        "sync_seconds": synced.sync_seconds,
        "rss_bytes": stats.rss_bytes,
        "peak_rss_bytes": stats.peak_rss_bytes,
        "rss_at_sync_bytes": synced.rss_bytes,
        "heap_bytes": stats.heap_bytes,
        "heap_inuse_bytes": stats.heap_inuse_bytes,
        "heap_sys_bytes": stats.heap_sys_bytes,
        "bytes_per_pod": stats.heap_bytes.checked_div(stats.pods).unwrap_or(0),
        "pod_list_requests": lists,
        "pod_watch_requests": watches,
        "user": USER,
    });
    progress(&format!("client-go informer: {v}"));
    Ok(v)
}

/// The VPA recommender and admission controller, each started fresh with one VPA and again with a VPA
/// over every Deployment; PodMetrics come from the simulator (our metrics path) for every pod.
/// Returns (recommender, admission controller).
pub fn vpa(
    ctx: &Ctx<'_>,
    bins: &Binaries,
    targets: &[(String, String)],
    interval: Duration,
) -> Result<(Value, Value)> {
    let rt = ctx.rt;
    rt.block_on(peers::install_vpa_crds(&ctx.client, &bins.vpa_crds))
        .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    progress("VPA: the simulator writes PodMetrics for every pod (our metrics path)");
    let sim = rt.block_on(lazyscale_sim::Simulator::start(
        ctx.client.clone(),
        lazyscale_sim::SimConfig {
            include_bulk: true,
            metrics_interval: Duration::from_secs(15),
            ..Default::default()
        },
    ))?;
    let metrics_written = rt.block_on(sim.tick_metrics())?;
    progress(&format!("VPA: {metrics_written} PodMetrics written"));
    let apply = |items: &[(String, String)]| -> Result<()> {
        rt.block_on(async {
            use futures::StreamExt;
            futures::stream::iter(items.iter())
                .map(|(ns, d)| {
                    let api =
                        Api::<DynamicObject>::namespaced_with(ctx.client.clone(), ns, &peers::vpa_resource());
                    async move {
                        api.patch(
                            d,
                            &PatchParams::apply("bench"),
                            &Patch::Apply(peers::vpa_object(ns, d, "Initial")),
                        )
                        .await
                    }
                })
                .buffer_unordered(32)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
        })?;
        Ok(())
    };
    let first = targets.first().context("no Deployment to put a VPA on")?;
    apply(std::slice::from_ref(first))?;
    let rec_one = recommender(ctx, bins, 1, interval, "1 VPA")?;
    let adm_one = admission(ctx, bins, "1 VPA")?;
    let t = Instant::now();
    apply(targets.get(1..).unwrap_or_default())?;
    progress(&format!(
        "VPA: {} VPAs applied in {:.1}s",
        targets.len(),
        t.elapsed().as_secs_f64()
    ));
    let rec_all = recommender(ctx, bins, targets.len(), interval, "all VPAs")?;
    let adm_all = admission(ctx, bins, "all VPAs")?;
    for ns in targets
        .iter()
        .map(|(n, _)| n.clone())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let api = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &ns, &peers::vpa_resource());
        rt.block_on(api.delete_collection(&DeleteParams::default(), &ListParams::default()))?;
    }
    rt.block_on(sim.shutdown());
    let top = |one: Value, all: Value, note: &str| {
        let mut v = all.clone();
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "measured_with".into(),
                json!("a VPA over every Deployment (top-level figures)"),
            );
            o.insert("note".into(), json!(note));
            o.insert("one_vpa".into(), one);
            o.insert("all_vpas".into(), all);
        }
        v
    };
    Ok((
        top(
            rec_one,
            rec_all,
            "release defaults (checkpoint storage, every pod tracked, no memory saver) but --recommender-interval; sync_seconds: start to the VPA checkpoint cache synced (its pod informer syncs before it); measured after its second recommendation pass",
        ),
        top(
            adm_one,
            adm_all,
            "sync_seconds: start to its HTTPS port accepting (after every informer synced); it holds no pod informer",
        ),
    ))
}

fn recommender(
    ctx: &Ctx<'_>,
    bins: &Binaries,
    vpas: usize,
    interval: Duration,
    label: &str,
) -> Result<Value> {
    const USER: &str = "bench-vpa-recommender";
    let kubeconfig = ctx.kubeconfig(USER)?;
    let base = ctx.pod_requests(USER);
    let port = free_port().map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    ctx.timeline.mark(&format!("VPA recommender, {label}"));
    let log = ctx
        .dir
        .join(format!("peer-vpa-recommender-{}.log", label.replace(' ', "-")));
    let mut peer = Peer::start(
        &bins.vpa_recommender,
        &peers::recommender_args(&kubeconfig, port, interval),
        &log,
    )
    .map_err(|e| anyhow::anyhow!(lazyscale_testenv::error_chain(&e)))?;
    let series = format!("vpa-recommender ({label})");
    ctx.timeline.follow(&series, peer.pid());
    let err = |e: lazyscale_testenv::Error| anyhow::anyhow!(lazyscale_testenv::error_chain(&e));
    let (_, sync) = peer
        .wait_log(
            "the VPA checkpoint cache synced",
            1,
            Duration::from_secs(900),
            |l| l.contains("Initial VPA checkpoint synced successfully"),
        )
        .map_err(err)?;
    let (rss_at_sync, _) = peer.rss();
    let tracking = format!("vpas={vpas}");
    let pass =
        |l: &str| l.contains("\"ClusterState is tracking\" pods=") && l.trim_end().ends_with(&tracking);
    let timeout = interval * 3 + Duration::from_secs(600);
    let (_, first_pass) = peer
        .wait_log("the first recommendation pass", 1, timeout, pass)
        .map_err(err)?;
    let (line2, second_pass) = peer
        .wait_log("the second recommendation pass", 2, timeout, pass)
        .map_err(err)?;
    let (rss, peak) = peer.rss();
    let pods_tracked = line2
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pods=")?.parse::<u64>().ok())
        .unwrap_or(0);
    let with_recommendation = ctx
        .rt
        .block_on(
            Api::<DynamicObject>::all_with(ctx.client.clone(), &peers::vpa_resource())
                .list(&ListParams::default()),
        )?
        .items
        .iter()
        .filter(|v| {
            v.data
                .pointer("/status/recommendation/containerRecommendations")
                .is_some()
        })
        .count();
    peer.stop();
    let (lists, watches) = requests_since(ctx, USER, base);
    let v = json!({
        "vpas": vpas,
        "pods_tracked": pods_tracked,
        "vpas_with_recommendation": with_recommendation,
        "sync_seconds": sync,
        "first_pass_seconds": first_pass,
        "measured_at_seconds": second_pass,
        "rss_at_sync_bytes": rss_at_sync,
        "rss_bytes": rss,
        "peak_rss_bytes": peak,
        "pod_list_requests": lists,
        "pod_watch_requests": watches,
        "user": USER,
        "log": log.file_name().map(|f| f.to_string_lossy().into_owned()),
    });
    progress(&format!("VPA recommender ({label}): {v}"));
    Ok(v)
}

fn admission(ctx: &Ctx<'_>, bins: &Binaries, label: &str) -> Result<Value> {
    const USER: &str = "bench-vpa-admission";
    let err = |e: lazyscale_testenv::Error| anyhow::anyhow!(lazyscale_testenv::error_chain(&e));
    let kubeconfig = ctx.kubeconfig(USER)?;
    let base = ctx.pod_requests(USER);
    let cert = peers::loopback_serving_cert(&ctx.dir.join("vpa-webhook"), "vpa-webhook").map_err(err)?;
    let port = free_port().map_err(err)?;
    let metrics_port = free_port().map_err(err)?;
    ctx.timeline.mark(&format!("VPA admission, {label}"));
    let log = ctx
        .dir
        .join(format!("peer-vpa-admission-{}.log", label.replace(' ', "-")));
    let mut peer = Peer::start(
        &bins.vpa_admission_controller,
        &peers::admission_args(&kubeconfig, &cert, port, metrics_port),
        &log,
    )
    .map_err(err)?;
    ctx.timeline
        .follow(&format!("vpa-admission ({label})"), peer.pid());
    let sync = peer.wait_port(port, Duration::from_secs(900)).map_err(err)?;
    let webhooks = Api::<MutatingWebhookConfiguration>::all(ctx.client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let registered = loop {
        if ctx
            .rt
            .block_on(webhooks.get_opt(peers::VPA_WEBHOOK_CONFIGURATION))?
            .is_some()
        {
            break Some(peer.uptime());
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(ctx.settle);
    let (rss, peak) = peer.rss();
    peer.stop();
    let _ = ctx
        .rt
        .block_on(webhooks.delete(peers::VPA_WEBHOOK_CONFIGURATION, &DeleteParams::default()));
    let (lists, watches) = requests_since(ctx, USER, base);
    let v = json!({
        "sync_seconds": sync,
        "webhook_registered_seconds": registered,
        "rss_bytes": rss,
        "peak_rss_bytes": peak,
        "pod_list_requests": lists,
        "pod_watch_requests": watches,
        "user": USER,
        "log": log.file_name().map(|f| f.to_string_lossy().into_owned()),
    });
    progress(&format!("VPA admission controller ({label}): {v}"));
    Ok(v)
}

/// `peer / lazyscale` for each figure both have (null where lazyscale's is 0).
pub fn ratios(peer: &Value, lazyscale: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in [
        "rss_bytes",
        "peak_rss_bytes",
        "sync_seconds",
        "pod_list_requests",
        "pod_watch_requests",
    ] {
        let (Some(p), Some(l)) = (
            peer.get(k).and_then(Value::as_f64),
            lazyscale.get(k).and_then(Value::as_f64),
        ) else {
            continue;
        };
        let r = if l > 0.0 {
            json!((p / l * 1000.0).round() / 1000.0)
        } else {
            Value::Null
        };
        out.insert(k.trim_end_matches("_bytes").to_string(), r);
    }
    Value::Object(out)
}
