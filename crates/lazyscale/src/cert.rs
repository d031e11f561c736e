//! The webhook's serving certificate, managed by the agent itself: no extra component is needed.
//!
//! The agent keeps a CA and a serving certificate signed by it in one Secret of its namespace
//! ([`SECRET_NAME`]: `tls.crt`, `tls.key`, and `ca.crt`, the CA bundle the API server must trust). At start
//! it reuses the Secret's certificate when it is valid for the webhook's names and not due for renewal, and
//! otherwise creates the Secret (create-if-absent: of two replicas starting together one creates, the other
//! gets `AlreadyExists` and reads the winner's) or replaces it (optimistic, on the `resourceVersion`: a
//! conflict re-reads and decides again). [`Manager::run`] then watches that one Secret and renews the
//! certificate `renewBefore` its expiry; every certificate it adopts — renewed here or by the other replica
//! — is published in this order: the CA bundle for the registration, the caBundle of the
//! MutatingWebhookConfiguration when it exists, then the rustls configuration of the running server (no
//! restart).
//!
//! Every renewal makes a new CA (its key is never stored) and a new serving certificate; the bundle keeps
//! the previous CA while it is valid, so a replica still serving the previous certificate stays trusted
//! until it adopts the new one. Certificates are backdated by [`BACKDATE`] so replicas with slightly
//! different clocks agree that a new one is valid.
//!
//! The pure part — which names the certificate needs ([`dns_names`]), whether a stored one can be reused
//! ([`verdict`]), which CAs the bundle keeps ([`bundle`]) — is unit-tested; [`inspect`] and [`generate`] do
//! the parsing and signing.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use lazyscale_api::consts::labels;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use tokio_util::sync::CancellationToken;

use crate::config::WebhookTarget;
use crate::webhook::Certificate;

/// Name of the Secret holding the agent-managed certificate (in the agent's namespace).
pub const SECRET_NAME: &str = lazyscale_api::consts::WEBHOOK_CERT_SECRET;
/// Secret key of the serving certificate (PEM).
pub const CERT_KEY: &str = "tls.crt";
/// Secret key of the serving certificate's private key (PEM).
pub const KEY_KEY: &str = "tls.key";
/// Secret key of the CA bundle (PEM, newest CA first).
pub const CA_KEY: &str = "ca.crt";
/// The type of the Secret (immutable: a Secret of another type is deleted and created again).
pub const SECRET_TYPE: &str = "kubernetes.io/tls";
/// Default validity of a certificate.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Default time before expiry at which a certificate is renewed.
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How far in the past a new certificate's validity starts (clock differences between replicas).
pub const BACKDATE: Duration = Duration::from_secs(300);
/// Attempts of [`Manager::ensure`] when the other replica keeps winning the races.
const ATTEMPTS: usize = 5;
/// Delay before retrying a failed renewal.
const RETRY: Duration = Duration::from_secs(10);
/// Longest sleep between two checks of the renewal time (so a wall-clock jump is noticed).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Errors of the certificate lifecycle.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The validity settings make no sense.
    #[error(
        "the webhook certificate's renewBefore ({renew_before:?}) must be shorter than its validity ({validity:?})"
    )]
    Policy {
        /// Validity.
        validity: Duration,
        /// Renew-before.
        renew_before: Duration,
    },
    /// A certificate could not be generated.
    #[error("cannot generate the webhook certificate")]
    Generate(#[from] rcgen::Error),
    /// A stored certificate is not usable.
    #[error("the stored webhook certificate is not usable: {0}")]
    Invalid(String),
    /// The Secret could not be read or written.
    #[error("cannot read or write the Secret {namespace}/{SECRET_NAME}")]
    Api {
        /// The agent's namespace.
        namespace: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// Every attempt lost a race with another writer of the Secret.
    #[error("the Secret {0}/{SECRET_NAME} kept changing while it was renewed")]
    Contended(String),
}

/// How long certificates are valid and when they are renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertPolicy {
    /// Validity of a new certificate (from its issue time).
    pub validity: Duration,
    /// Renew this long before the expiry.
    pub renew_before: Duration,
}

impl Default for CertPolicy {
    fn default() -> Self {
        CertPolicy {
            validity: DEFAULT_VALIDITY,
            renew_before: DEFAULT_RENEW_BEFORE,
        }
    }
}

impl CertPolicy {
    /// A policy; `renew_before` must be shorter than `validity`.
    pub fn new(validity: Duration, renew_before: Duration) -> Result<CertPolicy, CertError> {
        if renew_before >= validity || validity.is_zero() {
            return Err(CertError::Policy {
                validity,
                renew_before,
            });
        }
        Ok(CertPolicy {
            validity,
            renew_before,
        })
    }
}

/// The names the serving certificate must hold for the API server to reach the webhook at `target`: the
/// Service's DNS names, or the URL's host (an IP address becomes an IP SAN). Without a target (nothing is
/// registered) `localhost`.
pub fn dns_names(target: Option<&WebhookTarget>) -> BTreeSet<String> {
    match target {
        Some(WebhookTarget::Service { name, namespace }) => [
            name.clone(),
            format!("{name}.{namespace}"),
            format!("{name}.{namespace}.svc"),
            format!("{name}.{namespace}.svc.cluster.local"),
        ]
        .into(),
        Some(WebhookTarget::Url(url)) => {
            let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let host = if let Some(v6) = authority.strip_prefix('[') {
                v6.split(']').next().unwrap_or_default()
            } else {
                authority.split(':').next().unwrap_or_default()
            };
            if host.is_empty() {
                ["localhost".to_string()].into()
            } else {
                [host.to_ascii_lowercase()].into()
            }
        }
        None => ["localhost".to_string()].into(),
    }
}

/// What [`inspect`] learned about a stored certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Start of the serving certificate's validity.
    pub not_before: Timestamp,
    /// End of the serving certificate's validity.
    pub not_after: Timestamp,
    /// Its DNS and IP names.
    pub names: BTreeSet<String>,
}

/// Why a certificate is (re)issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// There is none yet.
    Missing,
    /// The stored one cannot be used (unparsable, key mismatch, not signed by the bundle).
    Unusable(String),
    /// It lacks a name the webhook is reached by.
    NamesChanged,
    /// It is within `renewBefore` of its expiry (or past it).
    Due,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Missing => f.write_str("no certificate yet"),
            Reason::Unusable(why) => write!(f, "stored certificate unusable: {why}"),
            Reason::NamesChanged => f.write_str("the webhook's names changed"),
            Reason::Due => f.write_str("due for renewal"),
        }
    }
}

/// What to do with a stored certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it; renew it at `renew_at`.
    Reuse {
        /// When it becomes due.
        renew_at: Timestamp,
    },
    /// Issue a new one.
    Renew(Reason),
}

/// When a certificate valid from `not_before` to `not_after` is due: `renew_before` before its expiry, but
/// never before the middle of its life (a certificate issued under a longer `renewBefore` is not renewed
/// again at once).
pub fn renew_at(not_before: Timestamp, not_after: Timestamp, renew_before: Duration) -> Timestamp {
    let due = not_after.checked_sub(renew_before).unwrap_or(not_before);
    let half = not_after.duration_since(not_before) / 2;
    let middle = not_before.checked_add(half).unwrap_or(not_before);
    due.max(middle)
}

/// Decides whether the stored certificate (`None`: there is none; `Some(Err)`: it is unusable) serves
/// `names` at `now` under `policy`. Pure.
pub fn verdict(
    stored: Option<Result<&Inspection, String>>,
    names: &BTreeSet<String>,
    now: Timestamp,
    policy: &CertPolicy,
) -> Verdict {
    let inspection = match stored {
        None => return Verdict::Renew(Reason::Missing),
        Some(Err(why)) => return Verdict::Renew(Reason::Unusable(why)),
        Some(Ok(i)) => i,
    };
    if !names.is_subset(&inspection.names) {
        return Verdict::Renew(Reason::NamesChanged);
    }
    let at = renew_at(inspection.not_before, inspection.not_after, policy.renew_before);
    if now >= at {
        return Verdict::Renew(Reason::Due);
    }
    Verdict::Reuse { renew_at: at }
}

/// The CA bundle after a renewal: the new CA first, then the newest CA of the `previous` bundle (`(PEM,
/// expiry)` pairs, newest first) if it is still valid at `now`. One previous CA is enough: a replica
/// serves at most the certificate before the current one. Pure.
pub fn bundle(new_ca: &str, previous: &[(String, Timestamp)], now: Timestamp) -> String {
    let mut out = new_ca.trim_end().to_string();
    out.push('\n');
    if let Some((pem, _)) = previous.first().filter(|(_, not_after)| *not_after > now)
        && pem.trim_end() != new_ca.trim_end()
    {
        out.push_str(pem.trim_end());
        out.push('\n');
    }
    out
}

fn ts(t: &x509_parser::time::ASN1Time) -> Timestamp {
    Timestamp::from_second(t.timestamp()).unwrap_or(Timestamp::MIN)
}

/// The certificates of a PEM bundle with their expiry, in order.
pub fn bundle_entries(pem: &str) -> Vec<(String, Timestamp)> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()).flatten() {
        if let Ok(cert) = block.parse_x509() {
            let text = format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                pem_base64_lines(&block.contents)
            );
            out.push((text, ts(&cert.validity().not_after)));
        }
    }
    out
}

fn pem_base64_lines(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    b64.as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses a stored certificate: the serving certificate's validity and names; it is an error when the key
/// does not belong to it or no CA of the bundle signed it.
pub fn inspect(cert: &Certificate) -> Result<Inspection, CertError> {
    let invalid = |what: String| CertError::Invalid(what);
    let (_, leaf_pem) = x509_parser::pem::parse_x509_pem(cert.cert_pem.as_bytes())
        .map_err(|e| invalid(format!("tls.crt is not PEM: {e}")))?;
    let leaf = leaf_pem
        .parse_x509()
        .map_err(|e| invalid(format!("tls.crt is not a certificate: {e}")))?;
    let key = KeyPair::from_pem(&cert.key_pem).map_err(|e| invalid(format!("tls.key: {e}")))?;
    if key.subject_public_key_info() != leaf.public_key().raw {
        return Err(invalid("tls.key does not belong to tls.crt".into()));
    }
    let signed = x509_parser::pem::Pem::iter_from_buffer(cert.ca_pem.as_bytes())
        .flatten()
        .any(|block| {
            block
                .parse_x509()
                .is_ok_and(|ca| leaf.verify_signature(Some(ca.public_key())).is_ok())
        });
    if !signed {
        return Err(invalid("no CA of ca.crt signed tls.crt".into()));
    }
    let mut names = BTreeSet::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => {
                    names.insert(d.to_ascii_lowercase());
                }
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    let addr = match ip.len() {
                        4 => <[u8; 4]>::try_from(*ip).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*ip).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(a) = addr {
                        names.insert(a.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Inspection {
        not_before: ts(&leaf.validity().not_before),
        not_after: ts(&leaf.validity().not_after),
        names,
    })
}

fn offset(t: Timestamp) -> Result<time::OffsetDateTime, CertError> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second())
        .map_err(|e| CertError::Invalid(format!("time out of range: {e}")))
}

/// A new CA and a serving certificate for `names` signed by it, valid from `now - BACKDATE` for
/// `policy.validity`; the bundle is the new CA and the newest still-valid CA of `previous_bundle`.
pub fn generate(
    names: &BTreeSet<String>,
    now: Timestamp,
    policy: &CertPolicy,
    previous_bundle: Option<&str>,
) -> Result<Certificate, CertError> {
    let not_before = now.checked_sub(BACKDATE).unwrap_or(now);
    let not_after = now.checked_add(policy.validity).unwrap_or(Timestamp::MAX);
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "lazyscale webhook CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    ca.not_before = offset(not_before)?;
    ca.not_after = offset(not_after)?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(names.iter().cloned().collect::<Vec<_>>())?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        names.iter().next().map_or("lazyscale-webhook", String::as_str),
    );
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.not_before = offset(not_before)?;
    leaf.not_after = offset(not_after)?;
    let leaf_cert = leaf.signed_by(&key, &issuer)?;
    let previous = previous_bundle.map(bundle_entries).unwrap_or_default();
    Ok(Certificate {
        cert_pem: leaf_cert.pem(),
        key_pem: key.serialize_pem(),
        ca_pem: bundle(&ca_cert.pem(), &previous, now),
    })
}

/// The certificate a Secret holds (`None` when it is not of type [`SECRET_TYPE`], or a key is missing or
/// not UTF-8).
pub fn from_secret(s: &Secret) -> Option<Certificate> {
    if s.type_.as_deref() != Some(SECRET_TYPE) {
        return None;
    }
    let data = s.data.as_ref()?;
    let text = |k: &str| String::from_utf8(data.get(k)?.0.clone()).ok();
    Some(Certificate {
        cert_pem: text(CERT_KEY)?,
        key_pem: text(KEY_KEY)?,
        ca_pem: text(CA_KEY)?,
    })
}

/// The Secret holding `cert`.
pub fn to_secret(namespace: &str, cert: &Certificate, resource_version: Option<String>) -> Secret {
    let mut s = Secret {
        type_: Some(SECRET_TYPE.into()),
        ..Secret::default()
    };
    s.metadata.name = Some(SECRET_NAME.into());
    s.metadata.namespace = Some(namespace.into());
    s.metadata.resource_version = resource_version;
    s.metadata.labels = Some(
        [(
            labels::APP_MANAGED_BY.to_string(),
            labels::MANAGED_BY_LAZYSCALE.to_string(),
        )]
        .into(),
    );
    s.data = Some(
        [
            (CERT_KEY, &cert.cert_pem),
            (KEY_KEY, &cert.key_pem),
            (CA_KEY, &cert.ca_pem),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
        .collect(),
    );
    s
}

/// Where an adopted certificate goes: the CA bundle for the registration, the live webhook
/// configuration, the running server's TLS configuration.
pub struct Serving {
    /// The running server's TLS configuration (reloaded in place).
    pub tls: axum_server::tls_rustls::RustlsConfig,
    /// The CA bundle the registration injects.
    pub ca: tokio::sync::watch::Sender<String>,
    /// Client for re-injecting the caBundle into the registered configuration (`None`: nothing is
    /// registered by this agent).
    pub client: Option<kube::Client>,
}

impl Serving {
    /// Publishes `cert`: bundle first, then the configuration's caBundle, then the served certificate, so
    /// the API server trusts the new CA before it is served.
    pub async fn adopt(&self, cert: &Certificate) -> Result<(), crate::webhook::WebhookError> {
        self.ca.send_replace(cert.ca_pem.clone());
        if let Some(client) = &self.client {
            match crate::webhook::inject_ca(client, &cert.ca_pem).await {
                Ok(true) => tracing::info!("webhook configuration caBundle updated"),
                Ok(false) => {}
                Err(error) => tracing::warn!(
                    %error,
                    "could not update the webhook configuration's caBundle; the registration retries"
                ),
            }
        }
        self.tls.reload_from_config(crate::webhook::server_config(cert)?);
        Ok(())
    }
}

/// The certificate lifecycle of one agent: reads, creates and renews the Secret.
#[derive(Clone)]
pub struct Manager {
    api: Api<Secret>,
    namespace: String,
    names: BTreeSet<String>,
    policy: CertPolicy,
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

impl Manager {
    /// A manager of the Secret in `namespace` for a webhook reached by `names`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        names: BTreeSet<String>,
        policy: CertPolicy,
    ) -> Manager {
        Manager {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            names,
            policy,
        }
    }

    fn api_error(&self, source: kube::Error) -> CertError {
        CertError::Api {
            namespace: self.namespace.clone(),
            source,
        }
    }

    /// The verdict on a stored certificate at `now`.
    pub fn judge(&self, stored: Option<&Certificate>, now: Timestamp) -> Verdict {
        let inspection = stored.map(|c| inspect(c).map_err(|e| e.to_string()));
        verdict(
            inspection.as_ref().map(|r| r.as_ref().map_err(Clone::clone)),
            &self.names,
            now,
            &self.policy,
        )
    }

    /// The certificate to serve: the Secret's when it can be reused, else a new one written to the Secret
    /// (created if absent; replaced on its `resourceVersion`). A lost race re-reads the winner's.
    pub async fn ensure(&self) -> Result<Certificate, CertError> {
        for _ in 0..ATTEMPTS {
            let now = Timestamp::now();
            let existing = self
                .api
                .get_opt(SECRET_NAME)
                .await
                .map_err(|e| self.api_error(e))?;
            let stored = existing.as_ref().and_then(from_secret);
            let reason = match (self.judge(stored.as_ref(), now), stored) {
                (Verdict::Reuse { .. }, Some(c)) => return Ok(c),
                (Verdict::Reuse { .. }, None) => Reason::Missing,
                (Verdict::Renew(Reason::Missing), None) if existing.is_some() => Reason::Unusable(format!(
                    "not a {SECRET_TYPE} Secret with {CERT_KEY}, {KEY_KEY} and {CA_KEY}"
                )),
                (Verdict::Renew(r), _) => r,
            };
            let previous = existing.as_ref().and_then(from_secret).map(|c| c.ca_pem);
            let fresh = generate(&self.names, now, &self.policy, previous.as_deref())?;
            let written = match &existing {
                None => {
                    self.api
                        .create(&PostParams::default(), &to_secret(&self.namespace, &fresh, None))
                        .await
                }
                // a Secret's type cannot change: delete exactly this one, then create ours
                Some(s) if s.type_.as_deref() != Some(SECRET_TYPE) => {
                    tracing::warn!(
                        secret = SECRET_NAME,
                        namespace = %self.namespace,
                        found = s.type_.as_deref().unwrap_or(""),
                        "the webhook certificate Secret has the wrong type; replacing it"
                    );
                    let only_this = DeleteParams {
                        preconditions: Some(Preconditions {
                            resource_version: s.metadata.resource_version.clone(),
                            uid: s.metadata.uid.clone(),
                        }),
                        ..DeleteParams::default()
                    };
                    match self.api.delete(SECRET_NAME, &only_this).await {
                        Ok(_) => {}
                        // gone or changed meanwhile: decide again on what is there now
                        Err(e) if matches!(code(&e), Some(404 | 409)) => continue,
                        Err(e) => return Err(self.api_error(e)),
                    }
                    self.api
                        .create(&PostParams::default(), &to_secret(&self.namespace, &fresh, None))
                        .await
                }
                Some(s) => {
                    self.api
                        .replace(
                            SECRET_NAME,
                            &PostParams::default(),
                            &to_secret(&self.namespace, &fresh, s.metadata.resource_version.clone()),
                        )
                        .await
                }
            };
            match written {
                Ok(_) => {
                    tracing::info!(%reason, secret = SECRET_NAME, namespace = %self.namespace, "webhook certificate issued");
                    return Ok(fresh);
                }
                // the other replica wrote first: read and judge its certificate
                Err(e) if code(&e) == Some(409) => {
                    tracing::debug!("the webhook certificate Secret changed under us; re-reading");
                }
                Err(e) => return Err(self.api_error(e)),
            }
        }
        Err(CertError::Contended(self.namespace.clone()))
    }

    fn renew_time(&self, cert: &Certificate) -> Timestamp {
        match self.judge(Some(cert), Timestamp::now()) {
            Verdict::Reuse { renew_at } => renew_at,
            Verdict::Renew(_) => Timestamp::now(),
        }
    }

    /// Keeps `current` fresh until `stop`: renews it when due and adopts what the other replica writes
    /// (a watch of the one Secret), publishing every new certificate through `serving`. A deleted Secret is
    /// written again with the certificate being served.
    pub async fn run(self, mut current: Certificate, serving: Serving, stop: CancellationToken) {
        let mut renew_at = self.renew_time(&current);
        let config = watcher::Config::default().fields(&format!("metadata.name={SECRET_NAME}"));
        let mut events = watcher::watcher(self.api.clone(), config)
            .default_backoff()
            .boxed();
        loop {
            let wait = Duration::try_from(renew_at.duration_since(Timestamp::now()))
                .unwrap_or(Duration::ZERO)
                .min(MAX_SLEEP);
            let next = tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => None,
                ev = events.next() => match ev {
                    None => return,
                    Some(ev) => Some(ev),
                },
            };
            let candidate = match next {
                // the renewal time came (or a wall-clock check): renew if due
                None => {
                    if Timestamp::now() < renew_at {
                        continue;
                    }
                    match self.ensure().await {
                        Ok(c) => Some(c),
                        Err(error) => {
                            tracing::warn!(%error, "webhook certificate renewal failed; retrying");
                            renew_at = Timestamp::now().checked_add(RETRY).unwrap_or(Timestamp::MAX);
                            continue;
                        }
                    }
                }
                Some(Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s))) => {
                    match from_secret(&s) {
                        Some(c)
                            if matches!(self.judge(Some(&c), Timestamp::now()), Verdict::Reuse { .. }) =>
                        {
                            Some(c)
                        }
                        // unusable or due: renew (or adopt what another writer just made)
                        _ => self.ensure().await.ok(),
                    }
                }
                Some(Ok(watcher::Event::Delete(_))) => {
                    let s = to_secret(&self.namespace, &current, None);
                    match self.api.create(&PostParams::default(), &s).await {
                        Ok(_) => tracing::info!("webhook certificate Secret was deleted: written again"),
                        Err(e) if code(&e) == Some(409) => {}
                        Err(error) => {
                            tracing::warn!(%error, "could not write the webhook certificate Secret again")
                        }
                    }
                    None
                }
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => None,
                Some(Err(error)) => {
                    tracing::warn!(%error, "watch of the webhook certificate Secret failed; retrying");
                    None
                }
            };
            if let Some(c) = candidate
                && c != current
            {
                match serving.adopt(&c).await {
                    Ok(()) => {
                        tracing::info!("webhook serving certificate reloaded");
                        current = c;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not load the new webhook certificate; keeping the old one")
                    }
                }
            }
            renew_at = self.renew_time(&current);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_of_a_service_and_of_urls() {
        let svc = WebhookTarget::Service {
            name: "hook".into(),
            namespace: "ops".into(),
        };
        assert_eq!(
            dns_names(Some(&svc)),
            names(&["hook", "hook.ops", "hook.ops.svc", "hook.ops.svc.cluster.local"])
        );
        for (url, host) in [
            ("https://127.0.0.1:8443", "127.0.0.1"),
            ("https://Agent.Example:8443/x", "agent.example"),
            ("https://[::1]:9443", "::1"),
            ("https://h", "h"),
            ("https://u@h:1?q", "h"),
        ] {
            assert_eq!(
                dns_names(Some(&WebhookTarget::Url(url.into()))),
                names(&[host]),
                "{url}"
            );
        }
        assert_eq!(dns_names(None), names(&["localhost"]));
    }

    #[test]
    fn policy_needs_renew_before_shorter_than_validity() {
        assert!(CertPolicy::new(Duration::from_secs(10), Duration::from_secs(10)).is_err());
        assert!(CertPolicy::new(Duration::ZERO, Duration::ZERO).is_err());
        assert!(CertPolicy::new(Duration::from_secs(10), Duration::from_secs(3)).is_ok());
    }

    #[test]
    fn renewal_is_due_renew_before_expiry_but_not_before_mid_life() {
        assert_eq!(renew_at(t(0), t(100), Duration::from_secs(30)), t(70));
        // a renewBefore longer than half the life: renewed at mid-life, not at once
        assert_eq!(renew_at(t(0), t(100), Duration::from_secs(90)), t(50));
        let policy = CertPolicy::new(Duration::from_secs(100), Duration::from_secs(30)).unwrap();
        let want = names(&["a"]);
        let i = Inspection {
            not_before: t(0),
            not_after: t(100),
            names: names(&["a", "b"]),
        };
        assert_eq!(
            verdict(Some(Ok(&i)), &want, t(69), &policy),
            Verdict::Reuse { renew_at: t(70) }
        );
        assert_eq!(
            verdict(Some(Ok(&i)), &want, t(70), &policy),
            Verdict::Renew(Reason::Due)
        );
        assert_eq!(
            verdict(Some(Ok(&i)), &want, t(500), &policy),
            Verdict::Renew(Reason::Due)
        );
        assert_eq!(
            verdict(Some(Ok(&i)), &names(&["c"]), t(1), &policy),
            Verdict::Renew(Reason::NamesChanged)
        );
        assert_eq!(
            verdict(None, &want, t(1), &policy),
            Verdict::Renew(Reason::Missing)
        );
        assert!(matches!(
            verdict(Some(Err("x".into())), &want, t(1), &policy),
            Verdict::Renew(Reason::Unusable(_))
        ));
    }

    #[test]
    fn the_bundle_keeps_one_valid_previous_ca() {
        let prev = vec![("OLD\n".to_string(), t(100)), ("OLDER\n".to_string(), t(200))];
        assert_eq!(bundle("NEW\n", &prev, t(50)), "NEW\nOLD\n");
        // the previous CA expired: only the new one (the older is never kept)
        assert_eq!(bundle("NEW", &prev, t(150)), "NEW\n");
        assert_eq!(bundle("NEW", &[], t(0)), "NEW\n");
        assert_eq!(bundle("NEW", &[("NEW".into(), t(100))], t(0)), "NEW\n");
    }

    #[test]
    fn generated_certificates_inspect_and_rotate_with_the_previous_ca_kept() {
        let policy = CertPolicy::new(Duration::from_secs(3600), Duration::from_secs(600)).unwrap();
        let want = names(&["127.0.0.1", "hook.ops.svc"]);
        let now = Timestamp::now();
        let first = generate(&want, now, &policy, None).unwrap();
        let i = inspect(&first).unwrap();
        assert_eq!(i.names, want);
        assert!(i.not_before < now && i.not_after > now);
        assert!(matches!(
            verdict(Some(Ok(&i)), &want, now, &policy),
            Verdict::Reuse { .. }
        ));
        assert_eq!(bundle_entries(&first.ca_pem).len(), 1);
        let second = generate(&want, now, &policy, Some(&first.ca_pem)).unwrap();
        assert_ne!(second.cert_pem, first.cert_pem);
        let cas = bundle_entries(&second.ca_pem);
        assert_eq!(cas.len(), 2, "new CA + previous CA");
        // the previous certificate is still trusted by the new bundle; a mixed pair is not usable
        let old_with_new_bundle = Certificate {
            ca_pem: second.ca_pem.clone(),
            ..first.clone()
        };
        assert!(inspect(&old_with_new_bundle).is_ok());
        let wrong_key = Certificate {
            key_pem: second.key_pem.clone(),
            ..first.clone()
        };
        assert!(inspect(&wrong_key).is_err());
        let foreign_ca = Certificate {
            ca_pem: bundle_entries(&second.ca_pem)[0].0.clone(),
            ..first.clone()
        };
        assert!(inspect(&foreign_ca).is_err());
        // a Secret round trip keeps every key
        let s = to_secret("ops", &second, None);
        assert_eq!(from_secret(&s), Some(second));
    }
}
