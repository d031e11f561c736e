//! Leader election through a `coordination.k8s.io/v1` Lease.
//!
//! A small loop per replica: every `renew_period` it reads the Lease and
//! - creates it when it does not exist,
//! - renews it when it holds it,
//! - takes it over when the holder has not renewed within `leaseDurationSeconds` (or released it),
//!
//! always with the object's `resourceVersion`, so two replicas racing for it cannot both win (one
//! gets a conflict). The result is published on a `watch` channel: `true` while this replica leads.
//! Leadership is dropped at once when another holder is seen, and also when renewals have failed
//! for longer than `renew_deadline` (before the lease can expire for the others). On stop the lease
//! is released so a successor takes over without waiting for the expiry.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a lease is valid without renewal (15 s).
    pub duration: Duration,
    /// How long this replica keeps leading while renewals fail (10 s; less than `duration`).
    pub renew_deadline: Duration,
    /// How often the lease is renewed or tried (2 s).
    pub renew_period: Duration,
}

impl LeaseConfig {
    /// Settings with the usual timings (15 s / 10 s / 2 s).
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_period: Duration::from_secs(2),
        }
    }
}

/// Errors of one lease attempt (logged and retried by the loop).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("lease {0}")]
    Api(&'static str, #[source] kube::Error),
    /// An API call took too long.
    #[error("lease request timed out")]
    Timeout,
}

/// Starts the election loop; the receiver says whether this replica leads. The loop ends (releasing
/// the lease if held, and publishing `false`) when `stop` is cancelled.
pub fn spawn(
    client: Client,
    config: LeaseConfig,
    stop: CancellationToken,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let span = tracing::info_span!("lease", name = %config.name);
    let task = tokio::spawn(run(client, config, tx, stop).instrument(span));
    (rx, task)
}

async fn run(client: Client, cfg: LeaseConfig, tx: watch::Sender<bool>, stop: CancellationToken) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_renew: Option<Instant> = None;
    loop {
        let attempt = tokio::time::timeout(
            cfg.renew_period.max(Duration::from_millis(500)),
            try_acquire(&api, &cfg),
        );
        let result = tokio::select! {
            () = stop.cancelled() => break,
            r = attempt => r.unwrap_or(Err(Error::Timeout)),
        };
        let leading = match result {
            Ok(true) => {
                last_renew = Some(Instant::now());
                true
            }
            Ok(false) => {
                last_renew = None;
                false
            }
            Err(error) => {
                let within = last_renew.is_some_and(|t| t.elapsed() < cfg.renew_deadline);
                tracing::warn!(error = %error, still_leading = within, lease = %cfg.name, "lease renewal failed");
                if !within {
                    last_renew = None;
                }
                within
            }
        };
        tx.send_if_modified(|v| {
            let changed = *v != leading;
            if changed {
                tracing::info!(leader = leading, identity = %cfg.identity, lease = %cfg.name, "leadership changed");
            }
            *v = leading;
            changed
        });
        // While leading, also wake up at the renew deadline so leadership ends on time if renewals hang.
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(cfg.renew_period) => {}
        }
    }
    let was_leader = *tx.borrow();
    tx.send_replace(false);
    if was_leader && let Err(error) = release(&api, &cfg).await {
        tracing::warn!(%error, lease = %cfg.name, "cannot release the lease");
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// One attempt: `Ok(true)` when this replica holds the lease afterwards.
async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, Error> {
    let duration_s = i32::try_from(cfg.duration.as_secs()).unwrap_or(i32::MAX).max(1);
    let Some(mut lease) = api.get_opt(&cfg.name).await.map_err(|e| Error::Api("get", e))? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(duration_s),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(Error::Api("create", e)),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder != cfg.identity {
        let held_for = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(duration_s)).unwrap_or(0),
        );
        let expired = match &spec.renew_time {
            Some(t) => {
                let age = Timestamp::now().duration_since(t.0);
                age.is_positive() && age.unsigned_abs() > held_for
            }
            None => true,
        };
        if !holder.is_empty() && !expired {
            return Ok(false);
        }
        spec.holder_identity = Some(cfg.identity.clone());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(duration_s);
    // `replace` sends the resourceVersion read above: a concurrent writer makes this a conflict.
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(e) if is_conflict(&e) => Ok(false),
        Err(e) => Err(Error::Api("update", e)),
    }
}

async fn release(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<(), Error> {
    let Some(mut lease) = api.get_opt(&cfg.name).await.map_err(|e| Error::Api("get", e))? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(Error::Api("release", e)),
    }
}
