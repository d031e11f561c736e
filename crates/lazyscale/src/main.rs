//! The `lazyscale` command: `run` (the agent), `crds`, `version`.

use lazyscale::{admin, config, stack, telemetry, webhook};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use config::{DEFAULT_GRACE, FileConfig, Settings, WebhookTarget};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "lazyscale",
    version,
    about = "Workload autoscaling that costs nothing until it is used"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent.
    Run(Box<RunArgs>),
    /// Print the CRDs (DatadogPodAutoscaler, DatadogPodAutoscalerClusterProfile) as YAML.
    Crds,
    /// Print the version.
    Version,
    /// Explain the last decision for one DPA: inputs, raw recommendation, every policy step, the result.
    Explain {
        /// `NAMESPACE/NAME` of the DatadogPodAutoscaler.
        target: String,
        /// Admin address of a running agent.
        #[arg(long, env = "LAZYSCALE_ADMIN_ADDRESS", default_value = "127.0.0.1:8080")]
        admin_address: SocketAddr,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// YAML configuration file (flags and environment variables override it).
    #[arg(long, env = "LAZYSCALE_CONFIG")]
    config: Option<PathBuf>,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then the in-cluster configuration).
    #[arg(long, env = "LAZYSCALE_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// autoscaling.workload.enabled: false = the autoscaling stack never starts.
    #[arg(long, env = "LAZYSCALE_AUTOSCALING_WORKLOAD_ENABLED")]
    workload_autoscaling_enabled: Option<bool>,
    /// Start the stack at startup instead of on the first autoscaler (for comparison).
    #[arg(long, env = "LAZYSCALE_EAGER")]
    eager: bool,
    /// Seconds the stack keeps running after the last autoscaler is gone; 0 = never stop.
    #[arg(long, env = "LAZYSCALE_GRACE_PERIOD_SECONDS")]
    grace_period_seconds: Option<u64>,
    /// Admin server address (/livez, /readyz, /metrics).
    #[arg(long, env = "LAZYSCALE_ADMIN_ADDRESS")]
    admin_address: Option<SocketAddr>,
    /// Webhook server address.
    #[arg(long, env = "LAZYSCALE_WEBHOOK_ADDRESS")]
    webhook_address: Option<SocketAddr>,
    /// Disable the webhook server.
    #[arg(long)]
    no_webhook: bool,
    /// Webhook certificate chain (PEM); reloaded when it changes.
    #[arg(long, env = "LAZYSCALE_WEBHOOK_CERT_FILE")]
    webhook_cert_file: Option<PathBuf>,
    /// Webhook private key (PEM).
    #[arg(long, env = "LAZYSCALE_WEBHOOK_KEY_FILE")]
    webhook_key_file: Option<PathBuf>,
    /// Generate a self-signed webhook certificate (development).
    #[arg(long, env = "LAZYSCALE_SELF_SIGNED")]
    self_signed: bool,
    /// URL the API server uses to call the webhook (out-of-cluster agents).
    #[arg(long, env = "LAZYSCALE_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// Page size of the initial pod list.
    #[arg(long, env = "LAZYSCALE_POD_PAGE_SIZE")]
    pod_page_size: Option<u32>,
    /// Seconds between vertical recommendation rounds (reading PodMetrics).
    #[arg(long, env = "LAZYSCALE_VERTICAL_PERIOD_SECONDS")]
    vertical_period_seconds: Option<u64>,
    /// Seconds between horizontal recommendation rounds.
    #[arg(long, env = "LAZYSCALE_HORIZONTAL_PERIOD_SECONDS")]
    horizontal_period_seconds: Option<u64>,
    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long, env = "LAZYSCALE_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Log format.
    #[arg(long, env = "LAZYSCALE_LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    log_format: String,
}

impl RunArgs {
    fn settings(&self) -> Result<Settings> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let w = &file.autoscaling.workload;
        let wh = &file.webhook;
        let webhook_tls = match (
            self.webhook_cert_file.clone().or_else(|| wh.cert_file.clone()),
            self.webhook_key_file.clone().or_else(|| wh.key_file.clone()),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => anyhow::bail!("the webhook needs both a certificate file and a key file"),
        };
        let self_signed = self.self_signed || wh.self_signed.unwrap_or(false);
        // a bad recommender configuration is a start-up error, not a silent loss of vertical autoscaling
        lazyscale_vertical::Recommender::new(file.autoscaling.vertical.recommender.clone())
            .map_err(|e| anyhow::anyhow!("autoscaling.vertical.recommender: {e}"))?;
        let webhook_addr = if self.no_webhook {
            None
        } else {
            Some(
                self.webhook_address
                    .or(wh.address)
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8443))),
            )
        };
        let webhook_target = match (
            self.webhook_url.clone().or_else(|| wh.url.clone()),
            &wh.service_name,
        ) {
            (Some(u), _) if !u.is_empty() => Some(WebhookTarget::Url(u)),
            (_, Some(name)) => Some(WebhookTarget::Service {
                name: name.clone(),
                namespace: wh.service_namespace.clone().unwrap_or_else(|| "lazyscale".into()),
            }),
            _ => None,
        };
        Ok(Settings {
            enabled: self.workload_autoscaling_enabled.or(w.enabled).unwrap_or(true),
            eager: self.eager || w.eager.unwrap_or(false),
            grace: self
                .grace_period_seconds
                .or(w.grace_period_seconds)
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_GRACE),
            admin_addr: self
                .admin_address
                .or(file.admin.address)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080))),
            webhook_addr,
            webhook_tls,
            self_signed,
            webhook_target,
            page_size: self.pod_page_size.or(file.pod_cache.page_size).unwrap_or(500),
            kubeconfig: self.kubeconfig.clone(),
            horizontal_period: Duration::from_secs(
                self.horizontal_period_seconds
                    .or(file.autoscaling.horizontal.period_seconds)
                    .unwrap_or(30)
                    .max(1),
            ),
            lease_namespace: self
                .lease_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok().filter(|s| !s.is_empty()))
                .unwrap_or_else(|| "default".into()),
            vertical_recommender: file.autoscaling.vertical.recommender.clone(),
            vertical_period: Duration::from_secs(
                self.vertical_period_seconds
                    .or(file.autoscaling.vertical.period_seconds)
                    .unwrap_or(30)
                    .max(1),
            ),
        })
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Version => {
            println!("lazyscale {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Cmd::Crds => {
            print!("{}", lazyscale_api::crds_yaml()?);
            Ok(())
        }
        Cmd::Explain {
            target,
            admin_address,
        } => {
            let (ns, name) = target
                .split_once('/')
                .ok_or_else(|| anyhow::anyhow!("expected NAMESPACE/NAME, got {target}"))?;
            let (code, body) = admin_get(admin_address, &format!("/explain/{ns}/{name}"))?;
            if code == 200 {
                print!("{body}");
                Ok(())
            } else {
                anyhow::bail!("{body}")
            }
        }
        Cmd::Run(args) => {
            init_tracing(&args.log_format);
            let settings = args.settings()?;
            // Two worker threads: the agent is I/O bound, and fewer threads mean fewer allocator arenas.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(run(settings))
        }
    }
}

/// A plain HTTP GET to the admin server.
fn admin_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)
        .with_context(|| format!("connect to the agent's admin server at {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
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

async fn kube_config(settings: &Settings) -> Result<kube::Config> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(config)
}

async fn shutdown_signal(stop: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("interrupted, shutting down"),
        () = term => tracing::info!("SIGTERM, shutting down"),
    }
    stop.cancel();
}

async fn run(settings: Settings) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stop = CancellationToken::new();
    tokio::spawn(shutdown_signal(stop.clone()));
    let metrics = Arc::new(telemetry::Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let controller_handle: Arc<std::sync::RwLock<Option<lazyscale_controller::Handle>>> = Arc::default();

    let admin = tokio::spawn(admin::serve(
        settings.admin_addr,
        admin::AdminState {
            metrics: metrics.clone(),
            ready: ready.clone(),
            controller: controller_handle.clone(),
        },
        stop.clone(),
    ));

    let config = kube_config(&settings).await?;
    let client = kube::Client::try_from(config.clone())?;
    let mutator: Arc<std::sync::RwLock<Option<Arc<dyn webhook::Mutator>>>> = Arc::default();
    let mut certificate = None;
    let webhook_task = match settings.webhook_addr {
        Some(addr) => {
            let cert = match (&settings.webhook_tls, settings.self_signed) {
                (Some((c, k)), _) => webhook::from_files(c, k)?,
                (None, true) => webhook::self_signed(match &settings.webhook_target {
                    Some(WebhookTarget::Service { name, namespace }) => {
                        Some((name.as_str(), namespace.as_str()))
                    }
                    _ => None,
                })?,
                (None, false) => anyhow::bail!(
                    "the webhook needs --webhook-cert-file and --webhook-key-file, or --self-signed (or --no-webhook)"
                ),
            };
            let listener = webhook::bind(addr)?;
            let state = webhook::WebhookState {
                metrics: metrics.clone(),
                mutator: mutator.clone(),
            };
            let files = settings.webhook_tls.clone();
            let stop2 = stop.clone();
            let task_cert = webhook::Certificate {
                cert_pem: cert.cert_pem.clone(),
                key_pem: cert.key_pem.clone(),
                ca_pem: cert.ca_pem.clone(),
            };
            certificate = Some(cert);
            Some(tokio::spawn(async move {
                webhook::serve(listener, &task_cert, files, state, stop2).await
            }))
        }
        None => None,
    };

    let registration = match (&settings.webhook_target, &certificate) {
        (Some(target), Some(cert)) => Some(webhook::Registration::new(client.clone(), target, &cert.ca_pem)),
        _ => None,
    };

    let result = stack::run(stack::Deps {
        client,
        config,
        settings: settings.clone(),
        metrics,
        ready: ready.clone(),
        mutator,
        registration,
        stop: stop.clone(),
        gate: lazyscale_core::gate::Gate::new(settings.grace),
        vertical: Arc::default(),
        vertical_period: settings.vertical_period,
        vertical_recommender: settings.vertical_recommender.clone(),
        horizontal_period: settings.horizontal_period,
        lease_namespace: settings.lease_namespace.clone(),
        controller: controller_handle.clone(),
    })
    .await;
    stop.cancel();
    ready.store(false, Ordering::Relaxed);
    if let Some(t) = webhook_task {
        let _ = t.await;
    }
    let _ = admin.await;
    tracing::info!("stopped");
    result
}
