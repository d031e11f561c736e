//! Agent configuration: a YAML file, overridden by environment variables, overridden by flags.
//!
//! The file uses the keys of the system lazyscale re-implements where one exists
//! (`autoscaling.workload.enabled`), so an existing configuration reads naturally:
//!
//! ```yaml
//! autoscaling:
//!   workload:
//!     enabled: true          # false: the autoscaling stack never starts
//!     eager: false           # true: start the stack at startup (for comparison)
//!     gracePeriodSeconds: 600  # stop the stack this long after the last autoscaler is gone; 0 = never
//! admin:
//!   address: 0.0.0.0:8080
//! webhook:
//!   address: 0.0.0.0:8443
//!   certFile: /etc/lazyscale/tls/tls.crt
//!   keyFile: /etc/lazyscale/tls/tls.key
//!   selfSigned: false
//!   certificate:
//!     mode: agent            # agent (default: a Secret in the agent's namespace, rotated) | selfSigned | files
//!     validitySeconds: 7776000     # 90 days
//!     renewBeforeSeconds: 2592000  # 30 days
//!   url: ""                  # how the API server reaches the webhook (else serviceName/serviceNamespace)
//!   serviceName: lazyscale-webhook
//!   serviceNamespace: lazyscale
//! podCache:
//!   pageSize: 500
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The default grace period before an idle stack stops.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("invalid configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (with line and column).
        message: String,
    },
    /// A certificate file without its key, or a key without its certificate.
    #[error("the webhook needs both a certificate file and a key file")]
    HalfTls,
    /// The certificate mode needs files that are not configured, or the validity settings are invalid.
    #[error("webhook.certificate: {0}")]
    Certificate(String),
    /// The vertical recommender's tunables do not make a recommender.
    #[error("autoscaling.vertical.recommender: {0}")]
    Recommender(String),
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    /// Autoscaling settings.
    #[serde(default)]
    pub autoscaling: AutoscalingFile,
    /// Admin server settings.
    #[serde(default)]
    pub admin: AdminFile,
    /// Webhook settings.
    #[serde(default)]
    pub webhook: WebhookFile,
    /// Pod cache settings.
    #[serde(default)]
    pub pod_cache: PodCacheFile,
}

/// `autoscaling:`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoscalingFile {
    /// `autoscaling.workload:`.
    #[serde(default)]
    pub workload: WorkloadFile,
    /// `autoscaling.vertical:`.
    #[serde(default)]
    pub vertical: VerticalFile,
    /// `autoscaling.horizontal:`.
    #[serde(default)]
    pub horizontal: HorizontalFile,
}

/// `autoscaling.horizontal:`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HorizontalFile {
    /// Seconds between recommendation rounds.
    pub period_seconds: Option<u64>,
}

/// `autoscaling.vertical:`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerticalFile {
    /// Seconds between recommendation rounds.
    pub period_seconds: Option<u64>,
    /// The recommender's tunables (`lazyscale_vertical::Config`: halfLifeSeconds, cpuTargetPercentile,
    /// safetyMargin, oomBumpUpRatio, ...); every key is optional and defaults as documented there.
    #[serde(default)]
    pub recommender: lazyscale_vertical::Config,
    /// How recommendations reach running pods (`inPlace`, `disruptionBudgetPercent`,
    /// `evictionsPerMinute`, `evictionBurst`).
    #[serde(default)]
    pub apply: crate::vertical_apply::ApplySettings,
}

/// `autoscaling.workload:`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadFile {
    /// Whether workload autoscaling is enabled at all.
    pub enabled: Option<bool>,
    /// Start the stack at startup.
    pub eager: Option<bool>,
    /// Seconds before an idle stack stops; 0 = never.
    pub grace_period_seconds: Option<u64>,
}

/// `admin:`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminFile {
    /// Listen address.
    pub address: Option<SocketAddr>,
}

/// `webhook:`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookFile {
    /// Listen address.
    pub address: Option<SocketAddr>,
    /// PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    pub key_file: Option<PathBuf>,
    /// Generate a self-signed certificate (development).
    pub self_signed: Option<bool>,
    /// The serving certificate: `mode` (`agent`, `selfSigned`, `files`), validity and renewal.
    #[serde(default)]
    pub certificate: CertificateFile,
    /// The URL the API server calls.
    pub url: Option<String>,
    /// The Service in front of the agent.
    pub service_name: Option<String>,
    /// The Service's namespace.
    pub service_namespace: Option<String>,
}

/// `podCache:`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodCacheFile {
    /// Page size of the initial pod list.
    pub page_size: Option<u32>,
}

impl FileConfig {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses configuration text (`path` only names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
        if text.trim().is_empty() {
            return Ok(FileConfig::default());
        }
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// `webhook.certificate:`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateFile {
    /// Where the serving certificate comes from; unset: `files` when certificate files are given, else
    /// `selfSigned` when `selfSigned` is true, else `agent`.
    pub mode: Option<CertMode>,
    /// Validity of an agent-managed certificate, in seconds (default 90 days).
    pub validity_seconds: Option<u64>,
    /// Renew an agent-managed certificate this many seconds before it expires (default 30 days).
    pub renew_before_seconds: Option<u64>,
}

/// Where the webhook's serving certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "camelCase")]
pub enum CertMode {
    /// The agent creates, stores (a Secret in its namespace) and rotates it ([`crate::cert`]).
    Agent,
    /// A certificate generated at start and never stored (development).
    SelfSigned,
    /// PEM files (cert-manager, the chart's generated Secret, your own), re-read when they change.
    Files,
}

/// How the webhook is reached by the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookTarget {
    /// A URL (out-of-cluster agents, tests).
    Url(String),
    /// A Service (in-cluster).
    Service {
        /// Service name.
        name: String,
        /// Service namespace.
        namespace: String,
    },
}

/// The effective configuration of `lazyscale run`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Whether the autoscaling stack may start at all.
    pub enabled: bool,
    /// Start the stack at startup, without waiting for an autoscaler.
    pub eager: bool,
    /// How long an idle stack keeps running; zero = never stop.
    pub grace: Duration,
    /// Admin server address.
    pub admin_addr: SocketAddr,
    /// Webhook server address; `None` = no webhook server.
    pub webhook_addr: Option<SocketAddr>,
    /// Webhook certificate and key files.
    pub webhook_tls: Option<(PathBuf, PathBuf)>,
    /// Generate a self-signed webhook certificate.
    pub self_signed: bool,
    /// Where the serving certificate comes from.
    pub cert_mode: CertMode,
    /// Validity and renewal of the agent-managed certificate.
    pub cert_policy: crate::cert::CertPolicy,
    /// How the API server reaches the webhook; `None` = never register a webhook configuration.
    pub webhook_target: Option<WebhookTarget>,
    /// Page size of the initial pod list.
    pub page_size: u32,
    /// Explicit kubeconfig path.
    pub kubeconfig: Option<PathBuf>,
    /// Period of the vertical recommendation loop.
    pub vertical_period: Duration,
    /// The vertical recommender's tunables.
    pub vertical_recommender: lazyscale_vertical::Config,
    /// How vertical recommendations reach running pods.
    pub vertical_apply: crate::vertical_apply::ApplySettings,
    /// Period of the horizontal controller.
    pub horizontal_period: Duration,
    /// Namespace of the leader-election Lease.
    pub lease_namespace: String,
}

/// The flags of `lazyscale run` (each with its environment variable); they win over the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// YAML configuration file (flags and environment variables override it).
    #[arg(long, env = "LAZYSCALE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then the in-cluster configuration).
    #[arg(long, env = "LAZYSCALE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// autoscaling.workload.enabled: false = the autoscaling stack never starts.
    #[arg(long, env = "LAZYSCALE_AUTOSCALING_WORKLOAD_ENABLED")]
    pub workload_autoscaling_enabled: Option<bool>,
    /// Start the stack at startup instead of on the first autoscaler (for comparison).
    #[arg(long, env = "LAZYSCALE_EAGER")]
    pub eager: bool,
    /// Seconds the stack keeps running after the last autoscaler is gone; 0 = never stop.
    #[arg(long, env = "LAZYSCALE_GRACE_PERIOD_SECONDS")]
    pub grace_period_seconds: Option<u64>,
    /// Admin server address (/livez, /readyz, /metrics).
    #[arg(long, env = "LAZYSCALE_ADMIN_ADDRESS")]
    pub admin_address: Option<SocketAddr>,
    /// Webhook server address.
    #[arg(long, env = "LAZYSCALE_WEBHOOK_ADDRESS")]
    pub webhook_address: Option<SocketAddr>,
    /// Disable the webhook server.
    #[arg(long)]
    pub no_webhook: bool,
    /// Webhook certificate chain (PEM); reloaded when it changes.
    #[arg(long, env = "LAZYSCALE_WEBHOOK_CERT_FILE")]
    pub webhook_cert_file: Option<PathBuf>,
    /// Webhook private key (PEM).
    #[arg(long, env = "LAZYSCALE_WEBHOOK_KEY_FILE")]
    pub webhook_key_file: Option<PathBuf>,
    /// Generate a self-signed webhook certificate (development).
    #[arg(long, env = "LAZYSCALE_SELF_SIGNED")]
    pub self_signed: bool,
    /// Where the serving certificate comes from (default: files when given, else self-signed with
    /// --self-signed, else agent: a Secret in the agent's namespace, rotated by the agent).
    #[arg(long, env = "LAZYSCALE_WEBHOOK_CERTIFICATE_MODE", value_enum)]
    pub webhook_certificate_mode: Option<CertMode>,
    /// Validity in seconds of the agent-managed certificate.
    #[arg(long, env = "LAZYSCALE_WEBHOOK_CERTIFICATE_VALIDITY_SECONDS")]
    pub webhook_certificate_validity_seconds: Option<u64>,
    /// Renew the agent-managed certificate this many seconds before it expires.
    #[arg(long, env = "LAZYSCALE_WEBHOOK_CERTIFICATE_RENEW_BEFORE_SECONDS")]
    pub webhook_certificate_renew_before_seconds: Option<u64>,
    /// URL the API server uses to call the webhook (out-of-cluster agents).
    #[arg(long, env = "LAZYSCALE_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// Page size of the initial pod list.
    #[arg(long, env = "LAZYSCALE_POD_PAGE_SIZE")]
    pub pod_page_size: Option<u32>,
    /// Seconds between vertical recommendation rounds (reading PodMetrics).
    #[arg(long, env = "LAZYSCALE_VERTICAL_PERIOD_SECONDS")]
    pub vertical_period_seconds: Option<u64>,
    /// autoscaling.vertical.apply.inPlace: `false` = rollouts only; `true` or unset = in-place resizes
    /// wherever the API server serves `pods/resize`.
    #[arg(long, env = "LAZYSCALE_VERTICAL_IN_PLACE")]
    pub vertical_in_place: Option<bool>,
    /// Seconds between horizontal recommendation rounds.
    #[arg(long, env = "LAZYSCALE_HORIZONTAL_PERIOD_SECONDS")]
    pub horizontal_period_seconds: Option<u64>,
    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long, env = "LAZYSCALE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Log format.
    #[arg(long, env = "LAZYSCALE_LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    pub log_format: String,
}

/// Default admin address.
pub const DEFAULT_ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8080);
/// Default webhook address.
pub const DEFAULT_WEBHOOK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8443);
/// Default page size of the initial pod list.
pub const DEFAULT_PAGE_SIZE: u32 = 500;
/// Default period of both recommendation loops, in seconds.
pub const DEFAULT_PERIOD_SECONDS: u64 = 30;
/// Namespace of the webhook Service when only its name is configured.
pub const DEFAULT_SERVICE_NAMESPACE: &str = "lazyscale";

impl RunArgs {
    /// The effective settings: the file named by `--config` (if any), merged with the flags.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let pod_namespace = std::env::var("POD_NAMESPACE").ok();
        merge(self, &file, pod_namespace.as_deref())
    }
}

/// Merges flags (and their environment variables) over the file over the defaults. `pod_namespace`
/// is `$POD_NAMESPACE`, the Lease's namespace when neither names one. Pure: the tests call it.
pub fn merge(
    flags: &RunArgs,
    file: &FileConfig,
    pod_namespace: Option<&str>,
) -> Result<Settings, ConfigError> {
    let w = &file.autoscaling.workload;
    let wh = &file.webhook;
    let webhook_tls = match (
        flags.webhook_cert_file.clone().or_else(|| wh.cert_file.clone()),
        flags.webhook_key_file.clone().or_else(|| wh.key_file.clone()),
    ) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err(ConfigError::HalfTls),
    };
    // A bad recommender configuration is a start-up error, not a silent loss of vertical autoscaling.
    lazyscale_vertical::Recommender::new(file.autoscaling.vertical.recommender.clone())
        .map_err(|e| ConfigError::Recommender(e.to_string()))?;
    let self_signed = flags.self_signed || wh.self_signed.unwrap_or(false);
    let cert_mode = match flags.webhook_certificate_mode.or(wh.certificate.mode) {
        Some(m) => m,
        None if webhook_tls.is_some() => CertMode::Files,
        None if self_signed => CertMode::SelfSigned,
        None => CertMode::Agent,
    };
    if cert_mode == CertMode::Files && webhook_tls.is_none() {
        return Err(ConfigError::Certificate(
            "mode files needs certFile and keyFile".into(),
        ));
    }
    let default_policy = crate::cert::CertPolicy::default();
    let cert_policy = crate::cert::CertPolicy::new(
        Duration::from_secs(
            flags
                .webhook_certificate_validity_seconds
                .or(wh.certificate.validity_seconds)
                .unwrap_or(default_policy.validity.as_secs()),
        ),
        Duration::from_secs(
            flags
                .webhook_certificate_renew_before_seconds
                .or(wh.certificate.renew_before_seconds)
                .unwrap_or(default_policy.renew_before.as_secs()),
        ),
    )
    .map_err(|e| ConfigError::Certificate(e.to_string()))?;
    let webhook_addr =
        (!flags.no_webhook).then(|| flags.webhook_address.or(wh.address).unwrap_or(DEFAULT_WEBHOOK));
    let webhook_target = match (
        flags.webhook_url.clone().or_else(|| wh.url.clone()),
        &wh.service_name,
    ) {
        (Some(u), _) if !u.is_empty() => Some(WebhookTarget::Url(u)),
        (_, Some(name)) => Some(WebhookTarget::Service {
            name: name.clone(),
            namespace: wh
                .service_namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_SERVICE_NAMESPACE.into()),
        }),
        _ => None,
    };
    let period = |flag: Option<u64>, file: Option<u64>| {
        Duration::from_secs(flag.or(file).unwrap_or(DEFAULT_PERIOD_SECONDS).max(1))
    };
    Ok(Settings {
        enabled: flags.workload_autoscaling_enabled.or(w.enabled).unwrap_or(true),
        eager: flags.eager || w.eager.unwrap_or(false),
        grace: flags
            .grace_period_seconds
            .or(w.grace_period_seconds)
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_GRACE),
        admin_addr: flags
            .admin_address
            .or(file.admin.address)
            .unwrap_or(DEFAULT_ADMIN),
        webhook_addr,
        webhook_tls,
        self_signed,
        cert_mode,
        cert_policy,
        webhook_target,
        page_size: flags
            .pod_page_size
            .or(file.pod_cache.page_size)
            .unwrap_or(DEFAULT_PAGE_SIZE),
        kubeconfig: flags.kubeconfig.clone(),
        horizontal_period: period(
            flags.horizontal_period_seconds,
            file.autoscaling.horizontal.period_seconds,
        ),
        lease_namespace: flags
            .lease_namespace
            .clone()
            .or_else(|| pod_namespace.filter(|s| !s.is_empty()).map(str::to_owned))
            .unwrap_or_else(|| "default".into()),
        vertical_recommender: file.autoscaling.vertical.recommender.clone(),
        vertical_apply: crate::vertical_apply::ApplySettings {
            in_place: flags
                .vertical_in_place
                .or(file.autoscaling.vertical.apply.in_place),
            ..file.autoscaling.vertical.apply.clone()
        },
        vertical_period: period(
            flags.vertical_period_seconds,
            file.autoscaling.vertical.period_seconds,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_file() {
        let text = "autoscaling:\n  workload:\n    enabled: false\n    gracePeriodSeconds: 30\nadmin:\n  address: 127.0.0.1:9000\n";
        let c = FileConfig::parse(Path::new("c.yaml"), text).unwrap();
        assert_eq!(c.autoscaling.workload.enabled, Some(false));
        assert_eq!(c.autoscaling.workload.grace_period_seconds, Some(30));
        assert_eq!(c.admin.address, Some("127.0.0.1:9000".parse().unwrap()));
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_file_and_place() {
        let err = FileConfig::parse(
            Path::new("c.yaml"),
            "autoscaling:\n  workload:\n    enabeld: true\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("c.yaml"), "{msg}");
        assert!(msg.contains("enabeld"), "{msg}");
    }

    #[test]
    fn recommender_tunables_are_read_and_checked() {
        let text = "autoscaling:\n  vertical:\n    recommender:\n      halfLifeSeconds: 3600\n      safetyMargin: 0.3\n";
        let c = FileConfig::parse(Path::new("c.yaml"), text).unwrap();
        assert_eq!(c.autoscaling.vertical.recommender.half_life_seconds, 3600);
        assert!((c.autoscaling.vertical.recommender.safety_margin - 0.3).abs() < 1e-9);
        let apply = "autoscaling:\n  vertical:\n    apply:\n      inPlace: false\n      disruptionBudgetPercent: 25\n";
        let c = FileConfig::parse(Path::new("c.yaml"), apply).unwrap();
        assert_eq!(c.autoscaling.vertical.apply.in_place, Some(false));
        assert_eq!(c.autoscaling.vertical.apply.disruption_budget_percent, 25);
        assert_eq!(c.autoscaling.vertical.apply.evictions_per_minute, 10);
        let bad = "autoscaling:\n  vertical:\n    recommender:\n      halfLife: 3600\n";
        assert!(FileConfig::parse(Path::new("c.yaml"), bad).is_err());
    }

    fn file(text: &str) -> FileConfig {
        FileConfig::parse(Path::new("c.yaml"), text).unwrap()
    }

    #[test]
    fn defaults_without_flags_or_file() {
        let s = merge(&RunArgs::default(), &FileConfig::default(), None).unwrap();
        assert!(s.enabled && !s.eager && !s.self_signed);
        assert_eq!(
            s.cert_mode,
            CertMode::Agent,
            "the agent manages its certificate by default"
        );
        assert_eq!(s.cert_policy, crate::cert::CertPolicy::default());
        assert_eq!(s.grace, DEFAULT_GRACE);
        assert_eq!(s.admin_addr, DEFAULT_ADMIN);
        assert_eq!(s.webhook_addr, Some(DEFAULT_WEBHOOK));
        assert_eq!((s.webhook_tls, s.webhook_target), (None, None));
        assert_eq!(s.page_size, DEFAULT_PAGE_SIZE);
        assert_eq!(s.horizontal_period, Duration::from_secs(30));
        assert_eq!(s.vertical_period, Duration::from_secs(30));
        assert_eq!(s.lease_namespace, "default");
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let f = file(
            "autoscaling:\n  workload:\n    enabled: false\n    gracePeriodSeconds: 30\n  horizontal:\n    periodSeconds: 10\nadmin:\n  address: 127.0.0.1:9000\nwebhook:\n  serviceName: hook\npodCache:\n  pageSize: 50\n",
        );
        let s = merge(&RunArgs::default(), &f, Some("agents")).unwrap();
        assert!(!s.enabled);
        assert_eq!(s.grace, Duration::from_secs(30));
        assert_eq!(s.horizontal_period, Duration::from_secs(10));
        assert_eq!(s.admin_addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(s.page_size, 50);
        assert_eq!(s.lease_namespace, "agents", "from $POD_NAMESPACE");
        assert_eq!(
            s.webhook_target,
            Some(WebhookTarget::Service {
                name: "hook".into(),
                namespace: DEFAULT_SERVICE_NAMESPACE.into()
            })
        );
        let flags = RunArgs {
            workload_autoscaling_enabled: Some(true),
            grace_period_seconds: Some(0),
            horizontal_period_seconds: Some(0),
            admin_address: Some("127.0.0.1:9100".parse().unwrap()),
            webhook_url: Some("https://h:8443".into()),
            lease_namespace: Some("leases".into()),
            no_webhook: true,
            ..RunArgs::default()
        };
        let s = merge(&flags, &f, Some("agents")).unwrap();
        assert!(s.enabled);
        assert_eq!(s.grace, Duration::ZERO, "0 = never stop");
        assert_eq!(s.horizontal_period, Duration::from_secs(1), "at least a second");
        assert_eq!(s.admin_addr, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(
            s.webhook_target,
            Some(WebhookTarget::Url("https://h:8443".into()))
        );
        assert_eq!(s.webhook_addr, None);
        assert_eq!(s.lease_namespace, "leases");
    }

    #[test]
    fn tls_needs_both_files_and_the_recommender_is_checked() {
        let flags = RunArgs {
            webhook_cert_file: Some("c.pem".into()),
            ..RunArgs::default()
        };
        assert!(matches!(
            merge(&flags, &FileConfig::default(), None),
            Err(ConfigError::HalfTls)
        ));
        let f = file("webhook:\n  keyFile: k.pem\n");
        let s = merge(&flags, &f, None).unwrap();
        assert_eq!(s.webhook_tls, Some(("c.pem".into(), "k.pem".into())));
        let bad = file("autoscaling:\n  vertical:\n    recommender:\n      safetyMargin: -1\n");
        assert!(matches!(
            merge(&RunArgs::default(), &bad, None),
            Err(ConfigError::Recommender(_))
        ));
    }

    #[test]
    fn the_certificate_mode_follows_what_is_configured() {
        let files = RunArgs {
            webhook_cert_file: Some("c.pem".into()),
            webhook_key_file: Some("k.pem".into()),
            ..RunArgs::default()
        };
        let s = merge(&files, &FileConfig::default(), None).unwrap();
        assert_eq!(s.cert_mode, CertMode::Files);
        let dev = RunArgs {
            self_signed: true,
            ..RunArgs::default()
        };
        assert_eq!(
            merge(&dev, &FileConfig::default(), None).unwrap().cert_mode,
            CertMode::SelfSigned
        );
        let f = file(
            "webhook:\n  selfSigned: true\n  certificate:\n    mode: agent\n    validitySeconds: 60\n    renewBeforeSeconds: 20\n",
        );
        let s = merge(&RunArgs::default(), &f, None).unwrap();
        assert_eq!(s.cert_mode, CertMode::Agent, "an explicit mode wins");
        assert_eq!(s.cert_policy.validity, Duration::from_secs(60));
        assert_eq!(s.cert_policy.renew_before, Duration::from_secs(20));
        let flags = RunArgs {
            webhook_certificate_renew_before_seconds: Some(60),
            ..RunArgs::default()
        };
        assert!(
            matches!(merge(&flags, &f, None), Err(ConfigError::Certificate(_))),
            "renewBefore ≥ validity"
        );
        let f = file("webhook:\n  certificate:\n    mode: files\n");
        assert!(matches!(
            merge(&RunArgs::default(), &f, None),
            Err(ConfigError::Certificate(_))
        ));
    }

    #[test]
    fn empty_file_is_the_default() {
        let c = FileConfig::parse(Path::new("c.yaml"), "\n").unwrap();
        assert_eq!(c.autoscaling.workload.enabled, None);
    }
}
