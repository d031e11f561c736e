//! The admission webhook server (HTTPS, rustls with the ring provider) and its registration.
//!
//! The server runs on every replica from startup. While the autoscaling stack is down it answers
//! "allowed" after reading only the request `uid` (the pod is skipped by the JSON scanner, never decoded).
//! While the stack is up, requests go to the installed [`Mutator`]. Any internal error fails open
//! (allowed, no patch, counted); a body that is not an AdmissionReview gets HTTP 400 with a message.
//!
//! The MutatingWebhookConfiguration exists only while the stack is up, and selects only namespaces that
//! have autoscalers ([`Registration`]); its caBundle follows the served certificate (see [`crate::cert`]
//! for the agent-managed one, [`follow_files`] for certificate files, [`inject_ca`]).
//!
//! The server is hardened against slow and large clients: TLS 1.2 and 1.3 only, a TLS handshake timeout,
//! a header read timeout and a first-request timeout (slowloris), a body size limit (HTTP 413) and a body
//! read timeout (HTTP 408).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum_server::tls_rustls::RustlsConfig;
use base64::Engine;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use lazyscale_api::consts::{field_managers, labels};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::telemetry::{Metrics, WebhookLabels, WebhookPath};

/// The name of the MutatingWebhookConfiguration the agent owns.
pub const CONFIGURATION_NAME: &str = lazyscale_api::consts::WEBHOOK_CONFIGURATION;
/// The webhook's name inside the configuration.
pub const WEBHOOK_NAME: &str = "pods.autoscaling.lazyscale.dev";
/// The path the webhook is served on.
pub const PATH: &str = "/mutate/pods";

/// What the stack installs to examine pods while it is up.
pub trait Mutator: Send + Sync {
    /// Returns the JSON patch for an admission request (already known to be a well-formed
    /// AdmissionReview), or `None` to allow unchanged.
    fn mutate(&self, review: &[u8]) -> Result<Option<serde_json::Value>, String>;
}

/// The part of an AdmissionReview the fast path reads: the request uid. `object` and everything else is
/// skipped without being built.
#[derive(Deserialize)]
struct ReviewHead {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    request: Option<Object<RequestHead>>,
}

/// A struct that must come as a JSON object. serde's derived structs also accept a JSON array of their
/// fields in order, so `["", ["u"]]` would pass as a review with the uid `u` (found by the
/// `admission_fast` fuzz target); the API server only ever sends objects, so anything else is malformed.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct RequestHead {
    uid: String,
    #[serde(default)]
    #[allow(dead_code)]
    object: Option<IgnoredAny>,
}

/// The outcome of one admission request, as a pure value.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Answer with this AdmissionReview.
    Respond {
        /// The response body.
        body: serde_json::Value,
        /// The path taken (for metrics).
        path: WebhookPath,
    },
    /// HTTP 400 with a message.
    BadRequest(String),
}

fn review_response(uid: &str, patch: Option<&serde_json::Value>, api_version: &str) -> serde_json::Value {
    let mut response = json!({"uid": uid, "allowed": true});
    if let Some(p) = patch {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(p.to_string()));
    }
    json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response})
}

/// Decides the answer to one admission request body. Pure apart from calling the mutator.
pub fn decide(body: &[u8], mutator: Option<&dyn Mutator>) -> Decision {
    let head: ReviewHead = match serde_json::from_slice::<Object<ReviewHead>>(body) {
        Ok(Object(h)) => h,
        Err(e) => return Decision::BadRequest(format!("the body is not an AdmissionReview: {e}")),
    };
    let Some(Object(request)) = head.request else {
        return Decision::BadRequest("the AdmissionReview has no request".into());
    };
    let api_version = head.api_version.unwrap_or_else(|| "admission.k8s.io/v1".into());
    let Some(m) = mutator else {
        return Decision::Respond {
            body: review_response(&request.uid, None, &api_version),
            path: WebhookPath::Fast,
        };
    };
    match m.mutate(body) {
        Ok(Some(patch)) => Decision::Respond {
            body: review_response(&request.uid, Some(&patch), &api_version),
            path: WebhookPath::Patched,
        },
        Ok(None) => Decision::Respond {
            body: review_response(&request.uid, None, &api_version),
            path: WebhookPath::Allowed,
        },
        Err(error) => {
            tracing::warn!(%error, uid = %request.uid, "admission failed open");
            Decision::Respond {
                body: review_response(&request.uid, None, &api_version),
                path: WebhookPath::FailOpen,
            }
        }
    }
}

/// State of the webhook handler.
#[derive(Clone)]
pub struct WebhookState {
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The mutator while the stack is up.
    pub mutator: Arc<RwLock<Option<Arc<dyn Mutator>>>>,
}

fn count(s: &WebhookState, path: WebhookPath) {
    s.metrics
        .webhook_requests
        .get_or_create(&WebhookLabels { path })
        .inc();
}

async fn handle(State(s): State<WebhookState>, req: axum::extract::Request) -> Response {
    // the body under a size limit (DefaultBodyLimit: 413) and a deadline (a slow sender: 408)
    let body = match tokio::time::timeout(BODY_TIMEOUT, Bytes::from_request(req, &s)).await {
        Ok(Ok(body)) => body,
        Ok(Err(rejection)) => {
            count(&s, WebhookPath::Malformed);
            return rejection.into_response();
        }
        Err(_) => {
            count(&s, WebhookPath::Malformed);
            return (
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body was not received within {BODY_TIMEOUT:?}"),
            )
                .into_response();
        }
    };
    let started = std::time::Instant::now();
    let mutator = s.mutator.read().ok().and_then(|g| g.clone());
    match decide(&body, mutator.as_deref()) {
        Decision::Respond { body, path } => {
            let response = axum::Json(body).into_response();
            s.metrics
                .webhook_duration
                .get_or_create(&WebhookLabels { path: path.clone() })
                .observe(started.elapsed().as_secs_f64());
            count(&s, path);
            response
        }
        Decision::BadRequest(msg) => {
            count(&s, WebhookPath::Malformed);
            (StatusCode::BAD_REQUEST, msg).into_response()
        }
    }
}

/// The webhook router (bodies over [`MAX_BODY_BYTES`] are refused with 413).
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route(PATH, post(handle))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Errors of the webhook server and its certificate.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A certificate or key file could not be read.
    #[error("cannot read the webhook {what} {path}")]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
    /// The self-signed certificate could not be generated.
    #[error("cannot generate a self-signed certificate")]
    Generate(#[source] rcgen::Error),
    /// The listener could not be bound or set up.
    #[error("cannot listen on the webhook address {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration was refused.
    #[error("invalid webhook TLS configuration")]
    Tls(#[source] std::io::Error),
    /// The server failed while serving.
    #[error("the webhook server failed")]
    Serve(#[source] std::io::Error),
}

/// The serving certificate: PEM chain, key, and the CA bundle to register.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    /// PEM certificate chain.
    pub cert_pem: String,
    /// PEM private key.
    pub key_pem: String,
    /// The CA the API server must trust (the last certificate of the chain).
    pub ca_pem: String,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the key
        f.debug_struct("Certificate")
            .field("cert_pem", &self.cert_pem)
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

/// The rustls server configuration of a certificate: TLS 1.3 and 1.2 only (ring), ALPN h2 and http/1.1.
pub fn server_config(cert: &Certificate) -> Result<Arc<rustls::ServerConfig>, WebhookError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |e: String| WebhookError::Tls(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(tls("no certificate in the PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).map_err(|e| tls(format!("key: {e}")))?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(TLS_VERSIONS)
            .map_err(|e| tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS versions the webhook accepts (1.3 and 1.2; rustls has nothing older).
pub const TLS_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A self-signed certificate for development, valid for localhost, 127.0.0.1 and the Service names.
pub fn self_signed(service: Option<(&str, &str)>) -> Result<Certificate, WebhookError> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Some((name, ns)) = service {
        names.push(format!("{name}.{ns}.svc"));
        names.push(format!("{name}.{ns}.svc.cluster.local"));
    }
    let c = rcgen::generate_simple_self_signed(names).map_err(WebhookError::Generate)?;
    let cert_pem = c.cert.pem();
    Ok(Certificate {
        ca_pem: cert_pem.clone(),
        cert_pem,
        key_pem: c.signing_key.serialize_pem(),
    })
}

/// The CA bundle file mounted beside a certificate file: the `ca.crt` key of a cert-manager or
/// `kubernetes.io/tls` Secret mounted as a folder.
pub fn ca_file_beside(cert: &Path) -> PathBuf {
    cert.with_file_name(CA_FILE)
}

/// File name of the CA bundle beside the certificate file.
pub const CA_FILE: &str = "ca.crt";

/// Loads the certificate and key files. The CA bundle is `ca.crt` beside the certificate file when it
/// exists and holds a certificate (cert-manager writes it; its `tls.crt` may lack the root), else the
/// last certificate of the chain.
pub fn from_files(cert: &PathBuf, key: &PathBuf) -> Result<Certificate, WebhookError> {
    let read = |what, path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|source| WebhookError::Read {
            what,
            path: path.clone(),
            source,
        })
    };
    let cert_pem = read("certificate", cert)?;
    let key_pem = read("key", key)?;
    let start = cert_pem
        .rfind("-----BEGIN CERTIFICATE-----")
        .ok_or_else(|| WebhookError::NoCertificate(cert.clone()))?;
    let ca_path = ca_file_beside(cert);
    let ca_pem = match std::fs::read_to_string(&ca_path) {
        Ok(ca) if ca_path != *cert && ca.contains("-----BEGIN CERTIFICATE-----") => ca,
        Ok(_) => cert_pem[start..].to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => cert_pem[start..].to_string(),
        Err(source) => {
            return Err(WebhookError::Read {
                what: "CA bundle",
                path: ca_path,
                source,
            });
        }
    };
    Ok(Certificate {
        cert_pem,
        key_pem,
        ca_pem,
    })
}

/// How often certificate files are re-read (polled, and compared by content: kubelet swaps Secret files
/// through symlinks, which file-event watchers can miss).
pub const FILE_POLL: Duration = Duration::from_secs(10);

/// Keeps the webhook on the certificate files until `stop`: every [`FILE_POLL`] the certificate, key and
/// CA files are read again, and a changed, consistent set (the key belongs to the certificate) is adopted
/// through `serving`: the CA bundle for the registration and the registered configuration's caBundle
/// first, then the served certificate. The bundle keeps the previous CA while it is valid (as the
/// agent-managed certificate does), so the replica that has not re-read its files yet stays trusted. A
/// half-written set (the certificate renewed, the key not yet) is retried at the next poll.
pub async fn follow_files(
    cert: PathBuf,
    key: PathBuf,
    initial: Certificate,
    serving: crate::cert::Serving,
    stop: CancellationToken,
) {
    // what the files held when last adopted, and the bundle published for it
    let mut seen = initial.clone();
    let mut published = initial;
    let mut refused: Option<Certificate> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(FILE_POLL) => {}
        }
        let files = match from_files(&cert, &key) {
            Ok(f) => f,
            Err(error) => {
                tracing::debug!(%error, "certificate files not readable; retrying");
                continue;
            }
        };
        if files == seen || refused.as_ref() == Some(&files) {
            continue;
        }
        let now = k8s_openapi::jiff::Timestamp::now();
        let next = Certificate {
            ca_pem: crate::cert::bundle(
                &files.ca_pem,
                &crate::cert::bundle_entries(&published.ca_pem),
                now,
            ),
            ..files.clone()
        };
        match serving.adopt(&next).await {
            Ok(()) => {
                tracing::info!(cert = %cert.display(), "webhook certificate reloaded from its files");
                seen = files;
                published = next;
                refused = None;
            }
            Err(error) => {
                tracing::warn!(%error, "the certificate files do not load; keeping the old certificate");
                refused = Some(files);
            }
        }
    }
}

/// The reloadable TLS configuration the server starts with ([`crate::cert::Serving`] reloads it).
pub fn rustls_config(cert: &Certificate) -> Result<RustlsConfig, WebhookError> {
    Ok(RustlsConfig::from_config(server_config(cert)?))
}

/// How long a client may take for the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to send the headers of a request (HTTP/1).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new connection may take to send its first complete request.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest AdmissionReview accepted (the API server's own request limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Serves the webhook until `stop` is cancelled, with the TLS configuration `tls` (reloaded in place by
/// [`crate::cert::Manager::run`] or [`follow_files`]).
pub async fn serve(
    listener: std::net::TcpListener,
    tls: RustlsConfig,
    state: WebhookState,
    stop: CancellationToken,
) -> Result<(), WebhookError> {
    let addr = listener.local_addr().map_err(WebhookError::Serve)?;
    tracing::info!(address = %addr, path = PATH, "webhook server listening");
    let handle = axum_server::Handle::new();
    let h2 = handle.clone();
    tokio::spawn(
        async move {
            stop.cancelled().await;
            h2.graceful_shutdown(Some(Duration::from_secs(5)));
        }
        .instrument(tracing::info_span!("webhook_shutdown")),
    );
    let mut server = axum_server::from_tcp_rustls(listener, tls)
        .map_err(WebhookError::Serve)?
        .map(|acceptor| acceptor.handshake_timeout(HANDSHAKE_TIMEOUT))
        .first_request_timeout(FIRST_REQUEST_TIMEOUT);
    server
        .http_builder()
        .http1()
        .header_read_timeout(HEADER_READ_TIMEOUT);
    server
        .handle(handle)
        .serve(router(state).into_make_service())
        .await
        .map_err(WebhookError::Serve)?;
    Ok(())
}

/// The agent's MutatingWebhookConfiguration: written while the stack is up, selecting only namespaces
/// with autoscalers, removed when the stack stops or no namespace has an autoscaler.
pub struct Registration {
    api: Api<DynamicObject>,
    target: crate::config::WebhookTarget,
    ca: tokio::sync::watch::Receiver<String>,
    /// The namespaces and the CA bundle last applied.
    current: Option<(BTreeSet<String>, String)>,
}

/// The `clientConfig` of the webhook reached at `target`, trusting `ca_pem`.
pub fn client_config(target: &crate::config::WebhookTarget, ca_pem: &str) -> serde_json::Value {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    match target {
        crate::config::WebhookTarget::Url(u) => {
            json!({"url": format!("{}{}", u.trim_end_matches('/'), PATH), "caBundle": ca})
        }
        crate::config::WebhookTarget::Service { name, namespace } => {
            json!({"service": {"name": name, "namespace": namespace, "path": PATH, "port": 443}, "caBundle": ca})
        }
    }
}

fn configurations(client: kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
        ),
        "mutatingwebhookconfigurations",
    );
    Api::all_with(client, &ar)
}

/// Replaces the caBundle of the registered configuration with `ca_pem` (a JSON patch guarded by the
/// webhook's name); `false` when no configuration is registered or it already trusts `ca_pem`.
pub async fn inject_ca(client: &kube::Client, ca_pem: &str) -> Result<bool, kube::Error> {
    let api = configurations(client.clone());
    let Some(existing) = api.get_opt(CONFIGURATION_NAME).await? else {
        return Ok(false);
    };
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    if existing.data["webhooks"][0]["clientConfig"]["caBundle"] == json!(ca) {
        return Ok(false);
    }
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/webhooks/0/name", "value": WEBHOOK_NAME},
        {"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": ca},
    ]))
    .map_err(kube::Error::SerdeError)?;
    match api
        .patch(
            CONFIGURATION_NAME,
            &PatchParams {
                field_manager: Some(field_managers::AGENT.into()),
                ..PatchParams::default()
            },
            &Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        // removed in the meantime (the stack stopped)
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// The configuration object for a set of namespaces (pure; `None` when the set is empty, because an
/// `In` selector needs at least one value and an idle cluster should pay nothing per pod).
pub fn configuration(
    namespaces: &BTreeSet<String>,
    client_config: &serde_json::Value,
) -> Option<serde_json::Value> {
    if namespaces.is_empty() {
        return None;
    }
    Some(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION_NAME, "labels": {labels::APP_MANAGED_BY: labels::MANAGED_BY_LAZYSCALE}},
        "webhooks": [{
            "name": WEBHOOK_NAME,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "timeoutSeconds": 2,
            "reinvocationPolicy": "IfNeeded",
            "matchPolicy": "Equivalent",
            "clientConfig": client_config,
            "namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "In",
                "values": namespaces.iter().collect::<Vec<_>>()}]},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}]
        }]
    }))
}

impl Registration {
    /// A registration for a webhook reached at `target` with `ca_pem` as its CA bundle.
    pub fn new(client: kube::Client, target: &crate::config::WebhookTarget, ca_pem: &str) -> Registration {
        Registration::with_ca_updates(client, target, tokio::sync::watch::channel(ca_pem.to_string()).1)
    }

    /// A registration whose CA bundle follows `ca` (the agent-managed certificate's rotations).
    pub fn with_ca_updates(
        client: kube::Client,
        target: &crate::config::WebhookTarget,
        ca: tokio::sync::watch::Receiver<String>,
    ) -> Registration {
        Registration {
            api: configurations(client),
            target: target.clone(),
            ca,
            current: None,
        }
    }

    /// Whether the CA bundle changed since the configuration was last applied (or arrived after a sync
    /// that had to wait for it).
    pub fn ca_changed(&self) -> bool {
        let ca = self.ca.borrow();
        !ca.is_empty()
            && self
                .current
                .as_ref()
                .is_none_or(|(ns, applied)| !ns.is_empty() && *applied != *ca)
    }

    /// Makes the cluster match `namespaces` and the current CA bundle (no request when nothing changed;
    /// nothing is registered before the serving certificate is known).
    pub async fn sync(&mut self, namespaces: &BTreeSet<String>) -> Result<(), kube::Error> {
        let ca = self.ca.borrow().clone();
        if ca.is_empty() && !namespaces.is_empty() {
            tracing::debug!("no serving certificate yet: the webhook is registered once there is one");
            return Ok(());
        }
        if self
            .current
            .as_ref()
            .is_some_and(|(ns, applied)| ns == namespaces && (ns.is_empty() || *applied == ca))
        {
            return Ok(());
        }
        match configuration(namespaces, &client_config(&self.target, &ca)) {
            Some(obj) => {
                self.api
                    .patch(
                        CONFIGURATION_NAME,
                        &PatchParams::apply(field_managers::AGENT).force(),
                        &Patch::Apply(&obj),
                    )
                    .await?;
                tracing::info!(namespaces = namespaces.len(), "webhook configuration applied");
            }
            None => self.remove().await?,
        }
        self.current = Some((namespaces.clone(), ca));
        Ok(())
    }

    /// Deletes the configuration (absent is fine).
    pub async fn remove(&mut self) -> Result<(), kube::Error> {
        match self
            .api
            .delete(CONFIGURATION_NAME, &DeleteParams::default())
            .await
        {
            Ok(_) => tracing::info!("webhook configuration removed"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
        self.current = Some((BTreeSet::new(), self.ca.borrow().clone()));
        Ok(())
    }
}

/// Binds the webhook listener now (so a port conflict fails start-up, and tests can use port 0).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, WebhookError> {
    let err = |source| WebhookError::Bind {
        addr: addr.to_string(),
        source,
    };
    let l = std::net::TcpListener::bind(addr).map_err(err)?;
    l.set_nonblocking(true).map_err(err)?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Result<Option<serde_json::Value>, String>);
    impl Mutator for Fixed {
        fn mutate(&self, _: &[u8]) -> Result<Option<serde_json::Value>, String> {
            self.0.clone()
        }
    }

    const REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","operation":"CREATE","object":{"metadata":{"name":"p"},"spec":{"containers":[]}}}}"#;

    #[test]
    fn fast_path_allows_with_the_request_uid() {
        let Decision::Respond { body, path } = decide(REVIEW.as_bytes(), None) else {
            panic!("expected a response")
        };
        assert_eq!(path, WebhookPath::Fast);
        assert_eq!(body["response"]["uid"], "u-1");
        assert_eq!(body["response"]["allowed"], true);
        assert!(body["response"].get("patch").is_none());
    }

    #[test]
    fn fast_path_does_not_need_a_valid_pod() {
        // the object is skipped, not decoded: a pod of the wrong shape does not matter
        let review = r#"{"request":{"uid":"u","object":{"spec":42,"metadata":[1,2]}}}"#;
        assert!(matches!(
            decide(review.as_bytes(), None),
            Decision::Respond {
                path: WebhookPath::Fast,
                ..
            }
        ));
    }

    #[test]
    fn malformed_reviews_are_bad_requests() {
        for body in [
            "",
            "{",
            "[]",
            "{\"request\":{}}",
            "{\"kind\":\"AdmissionReview\"}",
            "\u{0}",
            // arrays in place of objects (serde would take them as the fields in order)
            r#"["",["0"]]"#,
            r#"{"request":["0"]}"#,
            r#"["admission.k8s.io/v1",{"uid":"u"}]"#,
        ] {
            assert!(
                matches!(decide(body.as_bytes(), None), Decision::BadRequest(_)),
                "{body:?}"
            );
        }
    }

    #[test]
    fn a_patch_is_base64_json_patch() {
        let patch = json!([{"op": "add", "path": "/metadata/annotations", "value": {}}]);
        let m = Fixed(Ok(Some(patch.clone())));
        let Decision::Respond { body, path } = decide(REVIEW.as_bytes(), Some(&m)) else {
            panic!()
        };
        assert_eq!(path, WebhookPath::Patched);
        assert_eq!(body["response"]["patchType"], "JSONPatch");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(body["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&raw).unwrap(), patch);
    }

    #[test]
    fn mutator_errors_fail_open() {
        let m = Fixed(Err("boom".into()));
        let Decision::Respond { body, path } = decide(REVIEW.as_bytes(), Some(&m)) else {
            panic!()
        };
        assert_eq!(path, WebhookPath::FailOpen);
        assert_eq!(body["response"]["allowed"], true);
        assert!(body["response"].get("patch").is_none());
    }

    #[test]
    fn configuration_selects_only_autoscaled_namespaces() {
        let cc = json!({"url": "https://127.0.0.1:1/mutate/pods", "caBundle": "Zm9v"});
        assert!(configuration(&BTreeSet::new(), &cc).is_none());
        let ns: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        let c = configuration(&ns, &cc).unwrap();
        let w = &c["webhooks"][0];
        assert_eq!(w["failurePolicy"], "Ignore");
        assert_eq!(w["sideEffects"], "None");
        assert!(w["timeoutSeconds"].as_i64().unwrap() <= 2);
        assert_eq!(
            w["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["a", "b"])
        );
    }
}
