//! metrics.k8s.io PodMetrics, listed per namespace.
//!
//! The metrics API cannot be watched, so the controller lists it once per recommendation period for
//! each namespace that has autoscalers. The list is decoded into a slim type (name, timestamp,
//! window, per-container CPU and memory) without going through `serde_json::Value`.

use std::collections::HashMap;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use serde::Deserialize;

use lazyscale_api::quantity;
use std::time::Duration;

/// Usage of one container in one sample.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerUsage {
    /// Container name.
    pub name: String,
    /// CPU in cores.
    pub cpu: f64,
    /// Memory in bytes.
    pub memory: f64,
}

/// One PodMetrics sample.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUsage {
    /// When the sample was taken: the end of its window.
    pub timestamp: Timestamp,
    /// The window the sample covers.
    pub window: Duration,
    /// Per-container usage.
    pub containers: Vec<ContainerUsage>,
}

/// Errors of the metrics client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request could not be built (a namespace name that is not a valid path segment).
    #[error("cannot build the PodMetrics request for namespace {namespace}")]
    Request {
        /// The namespace.
        namespace: String,
        /// The cause.
        #[source]
        source: http::Error,
    },
    /// The list call failed (metrics API not served, server error, ...).
    #[error("cannot list PodMetrics in namespace {namespace}")]
    List {
        /// The namespace.
        namespace: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// The PodMetrics of one namespace, by pod name.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceUsage {
    /// When the list was fetched.
    pub fetched_at: Timestamp,
    /// Samples by pod name.
    pub pods: HashMap<String, PodUsage>,
}

#[derive(Deserialize)]
struct List {
    #[serde(default)]
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    metadata: Meta,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    window: Option<String>,
    #[serde(default)]
    containers: Vec<Container>,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
}

#[derive(Deserialize)]
struct Container {
    name: String,
    #[serde(default)]
    usage: Usage,
}

#[derive(Deserialize, Default)]
struct Usage {
    #[serde(default)]
    cpu: Option<String>,
    #[serde(default)]
    memory: Option<String>,
}

/// Lists the PodMetrics of `namespace` (`GET /apis/metrics.k8s.io/v1beta1/namespaces/NS/pods`).
pub async fn list(client: &Client, namespace: &str, now: Timestamp) -> Result<NamespaceUsage, Error> {
    let req = http::Request::get(format!(
        "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"
    ))
    .body(Vec::new())
    .map_err(|source| Error::Request {
        namespace: namespace.into(),
        source,
    })?;
    let list: List = client.request(req).await.map_err(|source| Error::List {
        namespace: namespace.into(),
        source,
    })?;
    Ok(decode(list, now))
}

fn decode(list: List, now: Timestamp) -> NamespaceUsage {
    let pods = list
        .items
        .into_iter()
        .map(|i| {
            let usage = PodUsage {
                timestamp: i
                    .timestamp
                    .as_deref()
                    .and_then(|t| t.parse::<Timestamp>().ok())
                    .map_or(now, |t| t),
                window: i.window.as_deref().and_then(go_duration).unwrap_or_default(),
                containers: i
                    .containers
                    .into_iter()
                    .map(|c| ContainerUsage {
                        name: c.name,
                        cpu: c
                            .usage
                            .cpu
                            .as_deref()
                            .and_then(quantity::millis)
                            .map_or(0.0, |m| m as f64 / 1000.0),
                        memory: c
                            .usage
                            .memory
                            .as_deref()
                            .and_then(quantity::units)
                            .map_or(0.0, |b| b as f64),
                    })
                    .collect(),
            };
            (i.metadata.name, usage)
        })
        .collect();
    NamespaceUsage {
        fetched_at: now,
        pods,
    }
}

/// A Go duration (`15s`, `1m0.5s`, `250ms`) in milliseconds.
pub fn go_duration(s: &str) -> Option<Duration> {
    let mut total = 0.0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..u] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1000.0,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return None,
        };
        total += value * factor;
        rest = &rest[u..];
    }
    Some(Duration::from_millis(total.max(0.0).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_list() {
        let json = r#"{"kind":"PodMetricsList","items":[
            {"metadata":{"name":"a","namespace":"n","labels":{"x":"y"}},"timestamp":"2026-01-01T00:00:10Z",
             "window":"15s","containers":[{"name":"app","usage":{"cpu":"250000000n","memory":"64Mi"}}]},
            {"metadata":{"name":"b"},"containers":[]}]}"#;
        let list: List = serde_json::from_str(json).unwrap_or(List { items: vec![] });
        let now = lazyscale_api::time::from_unix_millis(7);
        let u = decode(list, now);
        let a = &u.pods["a"];
        assert_eq!(a.window, Duration::from_secs(15));
        assert_eq!(
            a.timestamp,
            lazyscale_api::time::from_unix_millis(1_767_225_610_000)
        );
        assert!((a.containers[0].cpu - 0.25).abs() < 1e-9);
        assert_eq!(a.containers[0].memory, 64.0 * 1024.0 * 1024.0);
        assert_eq!(u.pods["b"].timestamp, now);
    }

    #[test]
    fn parses_go_durations() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration("15s"), Some(ms(15_000)));
        assert_eq!(go_duration("1m0.5s"), Some(ms(60_500)));
        assert_eq!(go_duration("250ms"), Some(ms(250)));
        assert_eq!(go_duration("1h"), Some(ms(3_600_000)));
        assert_eq!(go_duration("x"), None);
    }
}
