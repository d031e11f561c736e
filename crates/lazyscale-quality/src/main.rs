//! `lazyscale-quality`: replays usage traces through lazyscale's vertical recommender, the VPA's
//! algorithm and the DPA's published method, prints one JSON report on stdout, writes it to `--out` and
//! an HTML chart per trace next to it.
//!
//! ```text
//! lazyscale-quality                                  # the standard synthetic set, 14 days, seed 1
//! lazyscale-quality --trace exported.csv             # your own metrics (CSV format: see the README)
//! lazyscale-quality --export-traces traces/          # write the synthetic set as CSV
//! lazyscale-quality --horizontal --agent target/release/lazyscale   # + lazyscale vs the real HPA
//! ```
//!
//! With `--horizontal` the report also holds `horizontal`: lazyscale's horizontal autoscaling against
//! kube-controller-manager's HPA on a fresh test control plane (see `lazyscale_quality::horizontal`).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use lazyscale_quality::replay::{NodeModel, Policy};
use lazyscale_quality::{generate, report, trace};
use lazyscale_vertical::apply::UpdateGate;
use lazyscale_vertical::{Config, EstimationMethod};
use serde_json::json;

#[derive(Parser)]
#[command(version, about = "Score vertical recommenders on replayed usage traces")]
struct Args {
    /// Seed of the synthetic traces and of the node model.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Length of the synthetic traces, in days.
    #[arg(long, default_value_t = 14)]
    days: usize,
    /// Replay these CSV traces instead of the synthetic set (repeatable).
    #[arg(long)]
    trace: Vec<PathBuf>,
    /// Only these traces of the synthetic set (repeatable).
    #[arg(long)]
    only: Vec<String>,
    /// Write the traces replayed as CSV files into this folder.
    #[arg(long)]
    export_traces: Option<PathBuf>,
    /// JSON report file; the charts (`<trace>.html`) are written next to it.
    #[arg(long, default_value = "target/quality/quality.json")]
    out: PathBuf,
    /// Smallest interval between two periodic resource changes, in hours, for every recommender (1: an
    /// in-place resize at most every hour; 12: the VPA updater's pod lifetime gate).
    #[arg(long, default_value_t = 1.0)]
    min_update_interval_hours: f64,
    /// Smallest relative move of a request worth a periodic change.
    #[arg(long, default_value_t = 0.1)]
    change_threshold: f64,
    /// Hours replayed before scoring starts.
    #[arg(long, default_value_t = 24.0)]
    score_from_hours: f64,
    /// lazyscale's method under test: `adaptive` (its default configuration) or `vpa` (its
    /// VPA-compatible configuration).
    #[arg(long, default_value = "adaptive")]
    lazyscale_method: String,
    /// lazyscale's full recommender configuration as JSON (the agent's `autoscaling.vertical.recommender`
    /// keys, camelCase); overrides `--lazyscale-method`.
    #[arg(long)]
    lazyscale_config: Option<String>,
    /// Also compare lazyscale's horizontal autoscaling with the real HPA on a fresh test control plane
    /// (needs the control plane's binaries: `cargo xtask testenv build`).
    #[arg(long)]
    horizontal: bool,
    /// The agent binary for `--horizontal`.
    #[arg(long, default_value = "target/release/lazyscale")]
    agent: PathBuf,
    /// Length of each horizontal scenario, in seconds.
    #[arg(long, default_value_t = 240.0)]
    horizontal_seconds: f64,
    /// Replay lazyscale without its update gate (and no `lazyscale_ungated` row).
    #[arg(long)]
    no_update_gate: bool,
    /// The update gate's smallest relative change (default: the agent's).
    #[arg(long)]
    gate_min_change: Option<f64>,
    /// The update gate's smallest age of the target in force before a lowering, in hours.
    #[arg(long)]
    gate_min_age_to_lower_hours: Option<f64>,
    /// The update gate's age from which any change goes through, in hours.
    #[arg(long)]
    gate_max_age_hours: Option<f64>,
    /// Skip the HTML charts.
    #[arg(long)]
    no_charts: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let base = match args.lazyscale_method.as_str() {
        "adaptive" => Config::default(),
        "vpa" => Config::vpa_compatible(),
        other => bail!("--lazyscale-method: unknown method `{other}` (adaptive, vpa)"),
    };
    let minutes = |h: f64, flag: &str| -> Result<usize> {
        if !(h.is_finite() && h >= 0.0) {
            bail!("{flag} must be a non-negative number of hours");
        }
        Ok((h * 60.0).round() as usize)
    };
    let policy = Policy {
        min_update_interval_minutes: minutes(args.min_update_interval_hours, "--min-update-interval-hours")?,
        change_threshold: args.change_threshold,
        score_from_minutes: minutes(args.score_from_hours, "--score-from-hours")?,
    };
    // lazyscale's shipped defaults, with the horizon an applied request lives for set to the update
    // interval, as an operator sets `cpuHorizonSeconds` to their cadence (at the default 1 h interval this
    // is exactly `Config::default()`; 24 h or more: the whole day). Used by the adaptive method only.
    let horizon = policy.min_update_interval_minutes * 60;
    let config = match &args.lazyscale_config {
        Some(json) => serde_json::from_str::<Config>(json).context("--lazyscale-config")?,
        None if base.method == EstimationMethod::Adaptive => Config {
            cpu_horizon_seconds: if horizon < 24 * 3600 {
                u64::try_from(horizon).unwrap_or(0)
            } else {
                0
            },
            ..base
        },
        None => base,
    };
    let hours = |h: f64, flag: &str| -> Result<Duration> {
        Duration::try_from_secs_f64(h * 3600.0).with_context(|| format!("{flag}: {h} hours"))
    };
    let gate = if args.no_update_gate {
        None
    } else {
        let d = UpdateGate::default();
        Some(UpdateGate {
            min_change: args.gate_min_change.unwrap_or(d.min_change),
            min_age_to_lower: match args.gate_min_age_to_lower_hours {
                Some(h) => hours(h, "--gate-min-age-to-lower-hours")?,
                None => d.min_age_to_lower,
            },
            max_age: match args.gate_max_age_hours {
                Some(h) => hours(h, "--gate-max-age-hours")?,
                None => d.max_age,
            },
        })
    };
    let node = NodeModel {
        seed: args.seed,
        ..NodeModel::default()
    };
    let traces = if args.trace.is_empty() {
        let mut set = generate::standard_set(args.seed, args.days);
        if !args.only.is_empty() {
            set.retain(|t| args.only.contains(&t.name));
        }
        set
    } else {
        args.trace
            .iter()
            .map(|p| {
                let name = p
                    .file_stem()
                    .map_or_else(|| "trace".into(), |s| s.to_string_lossy().into_owned());
                let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
                trace::read_csv(BufReader::new(f), &name).with_context(|| format!("reading {}", p.display()))
            })
            .collect::<Result<Vec<_>>>()?
    };
    if traces.is_empty() {
        bail!("no trace to replay");
    }
    if let Some(dir) = &args.export_traces {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for t in &traces {
            let p = dir.join(format!("{}.csv", t.name));
            let f = File::create(&p).with_context(|| format!("creating {}", p.display()))?;
            trace::write_csv(t, BufWriter::new(f)).with_context(|| format!("writing {}", p.display()))?;
        }
    }
    let out_dir = args
        .out
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut rows = Vec::new();
    for t in &traces {
        eprintln!(
            "replaying {} ({} minutes, {} series)",
            t.name,
            t.minutes,
            t.series.len()
        );
        let replays = lazyscale_quality::run_trace_gated(t, &config, gate, &policy, &node)?;
        let these = lazyscale_quality::rows(t, &replays);
        if !args.no_charts {
            let refs: Vec<(String, &lazyscale_quality::replay::Replay)> =
                replays.iter().map(|(n, r)| (n.clone(), r)).collect();
            let html = report::chart_html(t, &refs, &these);
            let p = out_dir.join(format!("{}.html", t.name));
            std::fs::write(&p, html).with_context(|| format!("writing {}", p.display()))?;
        }
        rows.extend(these);
    }
    let settings = json!({
        "seed": args.seed,
        "days": args.days,
        "lazyscaleConfig": serde_json::to_value(&config)?,
        "updateGate": gate.map(|g| json!({
            "minChange": g.min_change,
            "minAgeToLowerHours": g.min_age_to_lower.as_secs_f64() / 3600.0,
            "maxAgeHours": g.max_age.as_secs_f64() / 3600.0,
        })),
        "traces": traces.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
    });
    let mut value = report::report(&rows, &policy, &node, settings);
    if args.horizontal {
        let mut o = lazyscale_quality::horizontal::HorizontalOptions::new(&args.agent);
        o.seconds = args.horizontal_seconds;
        o.agent_log = Some(out_dir.join("horizontal-agent.log"));
        let rt = tokio::runtime::Runtime::new().context("tokio runtime")?;
        let h = rt
            .block_on(lazyscale_quality::horizontal::run(&o, &|m| {
                eprintln!("horizontal: {m}")
            }))
            .context("horizontal comparison")?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("horizontal".into(), serde_json::to_value(&h)?);
        }
    }
    let text = serde_json::to_string_pretty(&value)?;
    std::fs::write(&args.out, format!("{text}\n"))
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("{text}");
    Ok(())
}
