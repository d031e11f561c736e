//! Targets and their scale subresource.
//!
//! A DPA's `targetRef` (`apiVersion`, `kind`) is resolved to an API resource: Deployments and
//! StatefulSets directly, anything else through discovery, which must show a `scale` subresource
//! (else the kind is unsupported). Results are cached (successes for 10 minutes, failures for one) so
//! a pass over many DPAs does not repeat discovery. Replicas are read and written through `/scale`; a
//! write carries the resourceVersion that was read, so it lands only on the target the decision saw
//! (the HPA updates `/scale` the same way).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use parking_lot::Mutex;
use serde_json::json;

/// How long a successful resolution is kept.
const RESOLVED_TTL: Duration = Duration::from_secs(600);
/// How long a failed resolution is kept (a CRD may be installed soon after the DPA).
const FAILED_TTL: Duration = Duration::from_secs(60);

/// Why a target cannot be resolved.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// `apiVersion`, `kind` or `name` is malformed.
    #[error("invalid targetRef: {0}")]
    InvalidRef(String),
    /// The kind does not exist or has no scale subresource.
    #[error("{0}")]
    Unsupported(String),
    /// Discovery failed (transient).
    #[error("discovery of {0} failed: {1}")]
    Discovery(String, String),
}

/// The replica counts of a target, from its scale subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleState {
    /// `spec.replicas`.
    pub spec_replicas: i32,
    /// `status.replicas`.
    pub status_replicas: i32,
    /// `metadata.resourceVersion` (the target's), which fences the write ([`set`]).
    pub resource_version: Option<String>,
}

/// Splits an `apiVersion` into group and version (`apps/v1` → (`apps`, `v1`), `v1` → (``, `v1`)).
pub fn split_api_version(api_version: &str) -> Result<(&str, &str), TargetError> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    };
    if !ok(version) || (!group.is_empty() && !ok(group)) || version.contains('/') {
        return Err(TargetError::InvalidRef(format!(
            "apiVersion {api_version:?} is not GROUP/VERSION"
        )));
    }
    Ok((group, version))
}

/// A cached resolution: when it was made and its result, by (apiVersion, kind).
type Cache = HashMap<(String, String), (Instant, Result<ApiResource, TargetError>)>;

/// Resolves targets to API resources, with a cache.
pub struct Resolver {
    client: Client,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("cached", &self.cache.lock().len())
            .finish()
    }
}

impl Resolver {
    /// A resolver using `client` for discovery.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The API resource of `apiVersion`/`kind`; `discovered` is set when a discovery request was made.
    pub async fn resolve(
        &self,
        api_version: &str,
        kind: &str,
        discovered: &mut bool,
    ) -> Result<ApiResource, TargetError> {
        let (group, version) = split_api_version(api_version)?;
        if kind.is_empty() {
            return Err(TargetError::InvalidRef("kind is empty".into()));
        }
        match (group, version, kind) {
            ("apps", "v1", "Deployment") => return Ok(ApiResource::erase::<Deployment>(&())),
            ("apps", "v1", "StatefulSet") => return Ok(ApiResource::erase::<StatefulSet>(&())),
            _ => {}
        }
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some((at, r)) = self.cache.lock().get(&key) {
            let ttl = if r.is_ok() { RESOLVED_TTL } else { FAILED_TTL };
            if at.elapsed() < ttl {
                return r.clone();
            }
        }
        *discovered = true;
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let r = match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok((ar, caps)) => {
                if caps.subresources.iter().any(|(s, _)| s.plural == "scale") {
                    Ok(ar)
                } else {
                    Err(TargetError::Unsupported(format!(
                        "{kind}.{group} has no scale subresource"
                    )))
                }
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Err(TargetError::Unsupported(format!(
                "{kind} is not served by {api_version}"
            ))),
            Err(kube::Error::Discovery(e)) => {
                Err(TargetError::Unsupported(format!("{kind} in {api_version}: {e}")))
            }
            Err(e) => {
                // transient: not cached
                return Err(TargetError::Discovery(
                    format!("{kind}.{api_version}"),
                    e.to_string(),
                ));
            }
        };
        self.cache.lock().insert(key, (Instant::now(), r.clone()));
        r
    }
}

/// Reads the scale subresource; `None` when the target does not exist.
pub async fn get(
    client: &Client,
    ar: &ApiResource,
    namespace: &str,
    name: &str,
) -> Result<Option<ScaleState>, kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
    match api.get_scale(name).await {
        Ok(s) => Ok(Some(ScaleState {
            spec_replicas: s.spec.and_then(|s| s.replicas).unwrap_or(0),
            status_replicas: s.status.map_or(0, |s| s.replicas),
            resource_version: s.metadata.resource_version,
        })),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets `spec.replicas` through the scale subresource: with the `resource_version` that was read, a
/// replace that the API server refuses with 409 Conflict ([`is_conflict`]) if the target changed
/// since; without one, a merge patch.
pub async fn set(
    client: &Client,
    ar: &ApiResource,
    namespace: &str,
    name: &str,
    replicas: i32,
    resource_version: Option<&str>,
) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
    match resource_version {
        Some(rv) => {
            let scale = Scale {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    resource_version: Some(rv.to_owned()),
                    ..ObjectMeta::default()
                },
                spec: Some(ScaleSpec {
                    replicas: Some(replicas),
                }),
                status: None,
            };
            api.replace_scale(name, &PostParams::default(), &scale)
                .await
                .map(|_| ())
        }
        None => {
            let patch = json!({"spec": {"replicas": replicas}});
            api.patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
    }
}

/// Whether a write was refused because the object changed since it was read.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_api_versions() {
        assert_eq!(split_api_version("apps/v1"), Ok(("apps", "v1")));
        assert_eq!(split_api_version("v1"), Ok(("", "v1")));
        assert_eq!(
            split_api_version("argoproj.io/v1alpha1"),
            Ok(("argoproj.io", "v1alpha1"))
        );
        assert!(split_api_version("").is_err());
        assert!(split_api_version("apps/").is_err());
        assert!(split_api_version("a/b/c").is_err());
        assert!(split_api_version("apps v1").is_err());
    }
}
