//! The autoscaler watches that feed the demand gate.
//!
//! Four cheap watches run from startup, whatever the size of the cluster: DatadogPodAutoscalers (any
//! origin; whole objects, for their targets) and metadata-only watches of Deployments, StatefulSets and
//! namespaces labelled
//! `autoscaling.datadoghq.com/profile` (the label selector also excludes the value `excluded`, so the API
//! server filters them and a workload that switches to `excluded` arrives as a deletion). ClusterProfiles
//! are not watched: they never open the gate. DPAs generated from a profile are marked
//! ([`Target::generated`]) so that they do not count as demand. No pod is listed or watched here.

use std::fmt::Debug;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use lazyscale_core::demand::{Source, SourceKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use lazyscale_api::consts;

/// The label selector of profile-labelled objects that count as autoscalers.
pub const PROFILE_SELECTOR: &str =
    "autoscaling.datadoghq.com/profile,autoscaling.datadoghq.com/profile!=excluded";

/// The workload a DPA targets (`spec.targetRef`), and the DPA itself, decoded or why not.
#[derive(Debug, Clone)]
pub struct Target {
    /// Kind (`Deployment`, `StatefulSet`, `Rollout`, ...); as far as readable when the DPA does not
    /// decode.
    pub kind: String,
    /// Name, in the DPA's namespace (as `kind`).
    pub name: String,
    /// The DPA, typed, or why it does not decode (it is then reported, not acted on).
    pub dpa: crate::index::Entry,
    /// Whether the DPA was generated from a ClusterProfile ([`lazyscale_api::is_generated`]): it is
    /// indexed and reconciled, but it is not demand by itself.
    pub generated: bool,
}

/// A change to the set of autoscalers.
#[derive(Debug, Clone)]
pub enum Update {
    /// The complete set of one kind after a (re)list, with DPA targets.
    Snapshot(SourceKind, Vec<(Source, Option<Target>)>),
    /// One autoscaler appeared or changed.
    Present(Source, Option<Target>),
    /// One autoscaler is gone.
    Gone(Source),
}

/// Objects the demand watches see: metadata, plus a DPA's target.
pub trait Observed {
    /// The object's metadata.
    fn object_meta(&self) -> &kube::api::ObjectMeta;
    /// The DPA target, for DPAs.
    fn target(&self) -> Option<Target> {
        None
    }
}

impl<K> Observed for PartialObjectMeta<K> {
    fn object_meta(&self) -> &kube::api::ObjectMeta {
        &self.metadata
    }
}

impl Observed for DynamicObject {
    fn object_meta(&self) -> &kube::api::ObjectMeta {
        &self.metadata
    }
    fn target(&self) -> Option<Target> {
        let dpa = crate::index::decode(self);
        let (kind, name) = match &dpa {
            Ok(d) => (d.spec.target_ref.kind.clone(), d.spec.target_ref.name.clone()),
            Err(_) => {
                let t = self.data.get("spec").and_then(|s| s.get("targetRef"));
                let field = |f: &str| t.and_then(|t| t.get(f)?.as_str()).unwrap_or_default().to_owned();
                (field("kind"), field("name"))
            }
        };
        Some(Target {
            kind,
            name,
            dpa,
            generated: lazyscale_api::is_generated(&self.metadata),
        })
    }
}

/// The DatadogPodAutoscaler resource (watched as metadata only).
pub fn dpa_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(consts::GROUP, consts::VERSION, consts::DPA_KIND),
        consts::DPA_PLURAL,
    )
}

fn source_of(kind: SourceKind, meta: &kube::api::ObjectMeta) -> Option<Source> {
    let name = meta.name.clone()?;
    match kind {
        SourceKind::Namespace => Some(Source::namespace(name)),
        _ => Some(Source::new(
            kind,
            meta.namespace.clone().unwrap_or_default(),
            name,
        )),
    }
}

async fn watch_kind<K>(
    api: Api<K>,
    kind: SourceKind,
    config: watcher::Config,
    tx: mpsc::Sender<Update>,
    errors: prometheus_client::metrics::counter::Counter,
    stop: CancellationToken,
) where
    K: kube::Resource + Observed + serde::de::DeserializeOwned + Clone + Debug + Send + 'static,
{
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut pending: Vec<(Source, Option<Target>)> = Vec::new();
    let mut warned = false;
    let mut reported_absent = false;
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            n = stream.next() => n,
        };
        let Some(item) = next else { return };
        let update = match item {
            Ok(Event::Init) => {
                pending.clear();
                None
            }
            Ok(Event::InitApply(o)) => {
                pending.extend(source_of(kind, Observed::object_meta(&o)).map(|s| (s, o.target())));
                None
            }
            Ok(Event::InitDone) => {
                warned = false;
                Some(Update::Snapshot(kind, std::mem::take(&mut pending)))
            }
            Ok(Event::Apply(o)) => {
                source_of(kind, Observed::object_meta(&o)).map(|s| Update::Present(s, o.target()))
            }
            Ok(Event::Delete(o)) => source_of(kind, Observed::object_meta(&o)).map(Update::Gone),
            Err(error) => {
                errors.inc();
                // The resource is not served (no CRD): there are none of it, which is a complete
                // list for readiness and the gate; the watch keeps retrying and lists for real once
                // the CRD appears.
                let unserved = matches!(
                    &error,
                    watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404
                );
                if unserved && !reported_absent {
                    reported_absent = true;
                    if tx.send(Update::Snapshot(kind, Vec::new())).await.is_err() {
                        return;
                    }
                }
                // A missing CRD is normal on a cluster without DatadogPodAutoscalers: say it once.
                if !warned {
                    tracing::warn!(?kind, error = %error, "autoscaler watch failed; retrying with backoff");
                    warned = true;
                } else {
                    tracing::debug!(?kind, error = %error, "autoscaler watch failed again");
                }
                None
            }
        };
        if let Some(u) = update
            && tx.send(u).await.is_err()
        {
            return;
        }
    }
}

/// What every watch task shares: where updates go, the error counter, the stop signal.
#[derive(Clone)]
struct WatchContext {
    tx: mpsc::Sender<Update>,
    errors: prometheus_client::metrics::counter::Counter,
    stop: CancellationToken,
}

/// Spawns the watch of one kind, in a span naming it.
fn spawn_watch<K>(api: Api<K>, kind: SourceKind, config: watcher::Config, ctx: &WatchContext)
where
    K: kube::Resource + Observed + serde::de::DeserializeOwned + Clone + Debug + Send + 'static,
{
    let WatchContext { tx, errors, stop } = ctx.clone();
    tokio::spawn(
        watch_kind(api, kind, config, tx, errors, stop).instrument(tracing::info_span!("watch", ?kind)),
    );
}

/// Starts the four watches; updates arrive on the returned channel until `stop` is cancelled.
pub fn spawn(
    client: kube::Client,
    errors: prometheus_client::metrics::counter::Counter,
    stop: CancellationToken,
) -> mpsc::Receiver<Update> {
    let (tx, rx) = mpsc::channel(256);
    let ctx = WatchContext { tx, errors, stop };
    let labelled = watcher::Config::default().labels(PROFILE_SELECTOR);
    // Bookmarks keep resumption cheap; the idle watches carry almost no traffic.
    let plain = watcher::Config::default();
    // DPAs are read whole (they are few and small): the stack needs their targets for the pod cache's
    // interest set. Any version the server serves works; v1alpha2 is the storage version.
    let dpas: Api<DynamicObject> = Api::all_with(client.clone(), &dpa_resource());
    spawn_watch(dpas, SourceKind::Dpa, plain, &ctx);
    let deployments = Api::<PartialObjectMeta<Deployment>>::all(client.clone());
    spawn_watch(deployments, SourceKind::Deployment, labelled.clone(), &ctx);
    let statefulsets = Api::<PartialObjectMeta<StatefulSet>>::all(client.clone());
    spawn_watch(statefulsets, SourceKind::StatefulSet, labelled.clone(), &ctx);
    spawn_watch(
        Api::<PartialObjectMeta<Namespace>>::all(client),
        SourceKind::Namespace,
        labelled,
        &ctx,
    );
    rx
}

/// How long a workload whose pod selector could not be read waits before it is read again.
pub const SELECTOR_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads of workload selectors in flight at once.
const SELECTOR_READS: usize = 16;

/// What is known of one workload's pod selector.
#[derive(Debug, Clone)]
enum Known {
    /// `status.selector` of its scale subresource.
    Found(String),
    /// Not readable (missing workload, no selector reported yet, refused) at this time.
    Unknown(tokio::time::Instant),
}

/// The pod label selectors of autoscaled workloads, so the pod cache lists and watches only their pods.
///
/// A selector is read once per workload from its `/scale` subresource (`status.selector`: the serialized
/// `spec.selector` of a Deployment, a StatefulSet or an Argo Rollout; one GET, allowed by the chart's
/// scale rules), the target resolved by the controller's [`lazyscale_controller::scale::Resolver`]. A
/// workload that does not exist yet or reports no selector yet has none for [`SELECTOR_RETRY`] (the pod
/// cache then watches its namespace whole) and is read again after that.
pub struct Selectors {
    client: kube::Client,
    resolver: lazyscale_controller::scale::Resolver,
    known: std::collections::HashMap<lazyscale_podcache::WorkloadKey, Known>,
}

/// A workload whose pods are autoscaled: its key, and the `apiVersion` and kind of its `targetRef`.
pub type Wanted = (lazyscale_podcache::WorkloadKey, String, String);

impl Selectors {
    /// Selectors read with `client`.
    pub fn new(client: kube::Client) -> Self {
        Selectors {
            resolver: lazyscale_controller::scale::Resolver::new(client.clone()),
            client,
            known: std::collections::HashMap::new(),
        }
    }

    /// The pod selector of `workload`, when known.
    pub fn get(&self, workload: &lazyscale_podcache::WorkloadKey) -> Option<&str> {
        match self.known.get(workload)? {
            Known::Found(s) => Some(s),
            Known::Unknown(_) => None,
        }
    }

    /// Whether a selector that could not be read is due to be read again.
    pub fn retry_due(&self) -> bool {
        let now = tokio::time::Instant::now();
        self.known
            .values()
            .any(|k| matches!(k, Known::Unknown(at) if now.duration_since(*at) >= SELECTOR_RETRY))
    }

    /// Reads the selectors of the `wanted` workloads not known yet (or due again), forgets those no longer
    /// wanted; returns how many were read.
    pub async fn refresh(&mut self, wanted: &[Wanted]) -> usize {
        let now = tokio::time::Instant::now();
        let keep: std::collections::HashSet<&lazyscale_podcache::WorkloadKey> =
            wanted.iter().map(|(k, _, _)| k).collect();
        self.known.retain(|k, _| keep.contains(k));
        let due: Vec<&Wanted> = wanted
            .iter()
            .filter(|(k, _, _)| match self.known.get(k) {
                None => true,
                Some(Known::Found(_)) => false,
                Some(Known::Unknown(at)) => now.duration_since(*at) >= SELECTOR_RETRY,
            })
            .collect();
        let (client, resolver) = (&self.client, &self.resolver);
        let read: Vec<(lazyscale_podcache::WorkloadKey, Known)> = futures::stream::iter(due)
            .map(|(key, api_version, kind)| async move {
                let known = match read_selector(client, resolver, key, api_version, kind).await {
                    Ok(Some(s)) => Known::Found(s),
                    Ok(None) => Known::Unknown(tokio::time::Instant::now()),
                    Err(error) => {
                        tracing::debug!(%key, error = %error, "pod selector not readable; watching the namespace");
                        Known::Unknown(tokio::time::Instant::now())
                    }
                };
                (key.clone(), known)
            })
            .buffer_unordered(SELECTOR_READS)
            .collect()
            .await;
        let n = read.len();
        self.known.extend(read);
        n
    }
}

/// `status.selector` of the workload's scale subresource (`None`: missing workload or no selector yet).
async fn read_selector(
    client: &kube::Client,
    resolver: &lazyscale_controller::scale::Resolver,
    key: &lazyscale_podcache::WorkloadKey,
    api_version: &str,
    kind: &str,
) -> Result<Option<String>, String> {
    let mut discovered = false;
    let ar = resolver
        .resolve(api_version, kind, &mut discovered)
        .await
        .map_err(|e| e.to_string())?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &key.namespace, &ar);
    match api.get_scale(&key.name).await {
        Ok(scale) => Ok(scale.status.and_then(|s| s.selector).filter(|s| !s.is_empty())),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}
