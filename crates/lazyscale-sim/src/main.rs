//! The `lazyscale-sim` binary: plays scenarios, runs the bare simulator, or bulk-populates a
//! cluster, against the cluster of a kubeconfig.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use kube::config::{KubeConfigOptions, Kubeconfig};
use lazyscale_sim::bulk::{self, BulkSpec};
use lazyscale_sim::scenario::{self, RunOptions};
use lazyscale_sim::{SimConfig, Simulator, units::parse_duration};

#[derive(Parser)]
#[command(
    name = "lazyscale-sim",
    about = "Kubernetes cluster simulator: controllers, kubelet, metrics, scenarios, bulk population"
)]
struct Cli {
    /// Kubeconfig to use (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Play a scenario file.
    Run {
        /// The scenario YAML.
        scenario: PathBuf,
        /// Stop after this long (overrides the scenario's `duration`), e.g. 10m.
        #[arg(long, value_parser = parse_dur)]
        duration: Option<Duration>,
    },
    /// Only check a scenario file.
    Check {
        /// The scenario YAML.
        scenario: PathBuf,
    },
    /// Run the simulator (load, metrics, resize outcomes, OOM kills) without a scenario until Ctrl-C.
    Sim {
        /// Namespaces to simulate (default: all).
        #[arg(long, value_delimiter = ',')]
        namespaces: Vec<String>,
        /// kwok nodes to add.
        #[arg(long, default_value_t = 0)]
        nodes: u32,
        /// PodMetrics interval.
        #[arg(long, value_parser = parse_dur, default_value = "15s")]
        metrics_interval: Duration,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Create many realistic pods fast (for benchmarks).
    Bulk {
        /// Number of pods.
        #[arg(long, default_value_t = 1000)]
        pods: usize,
        /// Number of namespaces.
        #[arg(long, default_value_t = 10)]
        namespaces: usize,
        /// Number of Deployments.
        #[arg(long, default_value_t = 100)]
        deployments: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 48)]
        concurrency: usize,
        /// Separate clients (connection pools).
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Namespace prefix.
        #[arg(long, default_value = "bulk-")]
        prefix: String,
        /// kwok nodes to add for the pods.
        #[arg(long, default_value_t = 4)]
        nodes: u32,
    },
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| format!("invalid duration {s:?}"))
}

async fn client(kubeconfig: Option<&PathBuf>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(p) => {
            let kc =
                Kubeconfig::read_from(p).with_context(|| format!("reading kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

fn rss_mib() -> f64 {
    memory_stats::memory_stats().map_or(0.0, |m| m.physical_mem as f64 / 1024.0 / 1024.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check { scenario } => {
            let sc = scenario::load(&scenario)?;
            println!(
                "{}: ok ({} workloads, {} events)",
                scenario.display(),
                sc.workloads.len(),
                sc.events.len()
            );
        }
        Cmd::Run { scenario, duration } => {
            let sc = scenario::load(&scenario)?;
            let c = client(cli.kubeconfig.as_ref()).await?;
            let opts = RunOptions {
                duration,
                base_dir: scenario.parent().map(PathBuf::from).unwrap_or_default(),
                config: None,
            };
            scenario::run(c, &sc, &opts).await?;
        }
        Cmd::Sim {
            namespaces,
            nodes,
            metrics_interval,
            seed,
        } => {
            let c = client(cli.kubeconfig.as_ref()).await?;
            let sim = Simulator::start(
                c,
                SimConfig {
                    namespaces,
                    nodes,
                    metrics_interval,
                    seed,
                    ..SimConfig::default()
                },
            )
            .await?;
            tokio::signal::ctrl_c().await?;
            sim.shutdown().await;
        }
        Cmd::Bulk {
            pods,
            namespaces,
            deployments,
            concurrency,
            clients,
            prefix,
            nodes,
        } => {
            let mut cs = Vec::new();
            for _ in 0..clients.max(1) {
                cs.push(client(cli.kubeconfig.as_ref()).await?);
            }
            let spec = BulkSpec {
                pods,
                namespaces,
                deployments,
                namespace_prefix: prefix,
                concurrency,
                nodes,
                ..BulkSpec::default()
            };
            let bar = Arc::new(ProgressBar::new(pods as u64));
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} pods  {per_sec}  eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let b = bar.clone();
            let report = bulk::populate_with(&cs, &spec, &move |n| b.set_position(n as u64)).await?;
            bar.finish();
            println!(
                "created {} pods in {} deployments over {} namespaces: {:.1}s for pods ({:.0} pods/s, create + status), {:.1}s total; mean pod {} bytes; simulator RSS {:.0} MiB",
                report.pods,
                report.deployments,
                report.namespaces,
                report.pod_elapsed.as_secs_f64(),
                report.pods_per_second,
                report.elapsed.as_secs_f64(),
                report.mean_pod_bytes,
                rss_mib()
            );
        }
    }
    Ok(())
}
