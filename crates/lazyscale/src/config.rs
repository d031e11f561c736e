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
    /// Period of the horizontal controller.
    pub horizontal_period: Duration,
    /// Namespace of the leader-election Lease.
    pub lease_namespace: String,
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
        let bad = "autoscaling:\n  vertical:\n    recommender:\n      halfLife: 3600\n";
        assert!(FileConfig::parse(Path::new("c.yaml"), bad).is_err());
    }

    #[test]
    fn empty_file_is_the_default() {
        let c = FileConfig::parse(Path::new("c.yaml"), "\n").unwrap();
        assert_eq!(c.autoscaling.workload.enabled, None);
    }
}
