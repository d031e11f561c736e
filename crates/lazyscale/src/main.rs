//! The `lazyscale` command: `run` (the agent), `crds`, `version`.

use lazyscale::{admin, config, stack, telemetry, webhook};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use config::{RunArgs, Settings, WebhookTarget};

// jemalloc unless built with `--features system-allocator`: a build for heap profilers that intercept
// the C allocator (heaptrack), which then sees every allocation.
#[cfg(not(feature = "system-allocator"))]
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
            let (code, body) = admin::get(admin_address, &format!("/explain/{ns}/{name}"))?;
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
            #[cfg(not(feature = "system-allocator"))]
            if !lazyscale::memory::purge_in_background() {
                tracing::warn!(
                    "jemalloc background purging unavailable: freed pages return to the system only on allocation"
                );
            }
            // Two worker threads: the agent is I/O bound, and fewer threads mean fewer allocator arenas.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(run(settings))
        }
    }
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
    tokio::spawn(shutdown_signal(stop.clone()).instrument(tracing::info_span!("signals")));
    let metrics = Arc::new(telemetry::Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let controller_handle: Arc<std::sync::RwLock<Option<lazyscale_controller::Handle>>> = Arc::default();
    let vertical_decisions: lazyscale::vertical::Decisions = Arc::default();

    let mut admin = tokio::spawn(
        admin::serve(
            settings.admin_addr,
            admin::AdminState {
                metrics: metrics.clone(),
                ready: ready.clone(),
                controller: controller_handle.clone(),
                vertical: vertical_decisions.clone(),
            },
            stop.clone(),
        )
        .instrument(tracing::info_span!("admin")),
    );

    let config = kube_config(&settings).await?;
    let client = telemetry::client(config.clone(), &metrics)?;
    let mutator: Arc<std::sync::RwLock<Option<Arc<dyn webhook::Mutator>>>> = Arc::default();
    // The CA bundle the registration injects: set once the serving certificate is known, and again on
    // every rotation of the agent-managed one.
    let (ca_tx, ca_rx) = tokio::sync::watch::channel(String::new());
    let webhook_task = match settings.webhook_addr {
        Some(addr) => {
            let listener = webhook::bind(addr)?;
            let state = webhook::WebhookState {
                metrics: metrics.clone(),
                mutator: mutator.clone(),
            };
            let source = certificate_source(&settings, &client)?;
            // files mode: the files are followed, and a new CA goes to the caBundle too
            let files = match settings.cert_mode {
                config::CertMode::Files => settings.webhook_tls.clone(),
                _ => None,
            };
            let registering = settings.webhook_target.as_ref().map(|_| client.clone());
            let stop2 = stop.clone();
            Some(tokio::spawn(
                async move {
                    let Some((cert, manager)) = source.obtain(&stop2).await? else {
                        return Ok(());
                    };
                    let tls = webhook::rustls_config(&cert)?;
                    ca_tx.send_replace(cert.ca_pem.clone());
                    let serving = lazyscale::cert::Serving {
                        tls: tls.clone(),
                        ca: ca_tx,
                        client: registering,
                    };
                    if let Some(m) = manager {
                        tokio::spawn(
                            m.run(cert, serving, stop2.clone())
                                .instrument(tracing::info_span!("certificate")),
                        );
                    } else if let Some((c, k)) = files {
                        tokio::spawn(
                            webhook::follow_files(c, k, cert, serving, stop2.clone())
                                .instrument(tracing::info_span!("certificate")),
                        );
                    }
                    webhook::serve(listener, tls, state, stop2).await
                }
                .instrument(tracing::info_span!("webhook")),
            ))
        }
        None => None,
    };

    let registration = match (&settings.webhook_target, &webhook_task) {
        (Some(target), Some(_)) => Some(webhook::Registration::with_ca_updates(
            client.clone(),
            target,
            ca_rx,
        )),
        _ => None,
    };

    let stack = stack::run(stack::Deps {
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
        vertical_decisions,
    })
    .instrument(tracing::info_span!("stack"));
    tokio::pin!(stack);
    let mut webhook_task = webhook_task;
    // Any of the three ending first ends the agent; an error is the agent's error (non-zero exit).
    let (mut stack_done, mut admin_done, mut webhook_done) = (false, false, webhook_task.is_none());
    let mut result = tokio::select! {
        r = &mut stack => { stack_done = true; r.map_err(anyhow::Error::from) }
        r = &mut admin => { admin_done = true; ended("admin server", r, &stop) }
        r = async { match webhook_task.as_mut() { Some(t) => t.await, None => std::future::pending().await } } => {
            webhook_done = true;
            ended("webhook server", r, &stop)
        }
    };
    if let Err(error) = &result {
        tracing::error!(error = format!("{error:#}"), "stopping the agent");
    }
    stop.cancel();
    ready.store(false, Ordering::Relaxed);
    // Stopping the stack awaits its tasks, so the Lease is released before the process exits.
    if !stack_done {
        let r = stack.await;
        result = result.and(r.map_err(anyhow::Error::from));
    }
    if !webhook_done && let Some(t) = webhook_task {
        result = result.and(ended("webhook server", t.await, &stop));
    }
    if !admin_done {
        result = result.and(ended("admin server", admin.await, &stop));
    }
    tracing::info!("stopped");
    result
}

/// Where the webhook's serving certificate comes from (settled before the server starts).
enum CertificateSource {
    Ready(webhook::Certificate),
    Agent(Box<lazyscale::cert::Manager>),
}

fn certificate_source(settings: &Settings, client: &kube::Client) -> Result<CertificateSource> {
    Ok(match settings.cert_mode {
        config::CertMode::Files => {
            let (c, k) = settings
                .webhook_tls
                .as_ref()
                .context("the files certificate mode needs --webhook-cert-file and --webhook-key-file")?;
            CertificateSource::Ready(webhook::from_files(c, k)?)
        }
        config::CertMode::SelfSigned => {
            CertificateSource::Ready(webhook::self_signed(match &settings.webhook_target {
                Some(WebhookTarget::Service { name, namespace }) => Some((name.as_str(), namespace.as_str())),
                _ => None,
            })?)
        }
        config::CertMode::Agent => CertificateSource::Agent(Box::new(lazyscale::cert::Manager::new(
            client.clone(),
            &settings.lease_namespace,
            lazyscale::cert::dns_names(settings.webhook_target.as_ref()),
            settings.cert_policy,
        ))),
    })
}

impl CertificateSource {
    /// The certificate to serve, and the manager that keeps it fresh (agent mode). The agent-managed one
    /// is retried with backoff while the API server is unreachable or refuses; `None` when the agent
    /// stops first.
    async fn obtain(
        self,
        stop: &CancellationToken,
    ) -> Result<Option<(webhook::Certificate, Option<lazyscale::cert::Manager>)>, webhook::WebhookError> {
        let m = match self {
            CertificateSource::Ready(c) => return Ok(Some((c, None))),
            CertificateSource::Agent(m) => m,
        };
        let mut delay = std::time::Duration::from_millis(500);
        loop {
            match m.ensure().await {
                Ok(c) => return Ok(Some((c, Some(*m)))),
                Err(error) => tracing::warn!(
                    error = format!("{:#}", anyhow::Error::from(error)),
                    "cannot obtain the webhook certificate yet; retrying"
                ),
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(None),
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(std::time::Duration::from_secs(30));
        }
    }
}

/// The outcome of a server task: an error, a panic, or an end before the agent was asked to stop.
fn ended<E>(what: &str, r: Result<Result<(), E>, JoinError>, stop: &CancellationToken) -> Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match r {
        Ok(Ok(())) if stop.is_cancelled() => Ok(()),
        Ok(Ok(())) => anyhow::bail!("the {what} stopped on its own"),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!("the {what} failed"))),
        Err(e) => anyhow::bail!("the {what} task failed: {e}"),
    }
}
