//! Pure planning of the DPAs generated from ClusterProfiles: from what exists (labelled workloads and
//! namespaces, profiles, every DPA) to what must be written (create, update, delete), the events to
//! emit and the profile statuses. No I/O: [`plan`] is a function of its [`Inputs`].
//!
//! The rules, in order, for each Deployment or StatefulSet seen:
//! 1. Its own `autoscaling.datadoghq.com/profile` label wins over its namespace's; `excluded` opts it
//!    out; an empty value is no label.
//! 2. A label value that is not a valid profile name (a DNS-1123 subdomain short enough for the
//!    generated name) is ignored with an [`events::INVALID_PROFILE_LABEL`] notice.
//! 3. An unknown profile is ignored silently (picked up once it exists).
//! 4. A DPA of the user (not generated) targeting the workload wins: nothing is generated and a
//!    [`events::PROFILE_SKIPPED`] notice says why; a generated DPA already there is deleted.
//! 5. An invalid profile template is never applied: a generated DPA already there is kept as it is.
//! 6. Otherwise the DPA `<profile>-<first 4 bytes of sha256("<Kind>.apps/<ns>/<name>") in hex>` is
//!    wanted, with the template, the `targetRef`, `owner: Local`, the
//!    [`annotations::PROFILE_HASH`] annotation and the profile label.
//!
//! Every generated DPA (one with the profile-hash annotation) that is not wanted is deleted; a wanted
//! one whose spec, hash or label differs from the wanted one is written again (template change or
//! drift). When nothing changed the plan is empty.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::autoscaling::v2::CrossVersionObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use lazyscale_api::consts::conditions::reasons;
use lazyscale_api::consts::{annotations, events, labels};
use lazyscale_api::{
    DatadogPodAutoscaler, DatadogPodAutoscalerOwner, DatadogPodAutoscalerSpec, DatadogPodAutoscalerTemplate,
    is_generated,
};
use sha2::{Digest, Sha256};

use crate::validate::{self, Invalid};

/// A DPA key: namespace and name.
pub type Key = (String, String);

pub use lazyscale_api::workload::WorkloadKind;

/// The workload kinds a profile label activates.
pub const PROFILE_KINDS: [WorkloadKind; 2] = [WorkloadKind::Deployment, WorkloadKind::StatefulSet];

/// `apiVersion` of the [`PROFILE_KINDS`].
pub const PROFILE_API_VERSION: &str = "apps/v1";

/// A Deployment or StatefulSet: labelled itself, or in a labelled namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Kind.
    pub kind: WorkloadKind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (for the generated DPA's owner reference, so that deleting the workload deletes it).
    pub uid: Option<String>,
    /// Value of its own profile label.
    pub label: Option<String>,
}

impl Workload {
    fn id(&self) -> (WorkloadKind, &str, &str) {
        (self.kind, &self.namespace, &self.name)
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// A ClusterProfile as the planner needs it: its decoded and validated template.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The template, or why it cannot be used (it is then never applied).
    pub template: Result<DatadogPodAutoscalerTemplate, Invalid>,
}

impl Profile {
    /// A profile from its template, validated as the controller validates a DPA
    /// ([`validate::validate`] on a DPA built from it).
    pub fn new(template: DatadogPodAutoscalerTemplate) -> Profile {
        let probe = DatadogPodAutoscaler::new(
            "probe",
            DatadogPodAutoscalerSpec::from_template(
                target_ref(WorkloadKind::Deployment, "probe"),
                DatadogPodAutoscalerOwner::Local,
                template.clone(),
            ),
        );
        Profile {
            template: validate::validate(&probe, None).map(|()| template),
        }
    }

    /// A profile whose template could not be decoded (an unknown objective, a wrong type).
    pub fn undecodable(message: impl Into<String>) -> Profile {
        Profile {
            template: Err(Invalid {
                reason: reasons::INVALID_SPEC,
                message: message.into(),
            }),
        }
    }
}

/// What the planner reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Workloads with a profile label (any value, `excluded` included) or in a labelled namespace.
    pub workloads: &'a [Workload],
    /// Labelled namespaces and their label values.
    pub namespaces: &'a BTreeMap<String, String>,
    /// Profiles by name.
    pub profiles: &'a BTreeMap<String, Profile>,
    /// Every DPA of the cluster (generated or not).
    pub dpas: &'a [Arc<DatadogPodAutoscaler>],
}

/// Why a generated DPA is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// It does not exist yet.
    Create,
    /// The profile's template changed (the hash differs).
    Update,
    /// Someone changed it (same hash, different spec or label): it is reset.
    Drift,
}

/// One generated DPA to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// The whole object as wanted (metadata name, namespace, labels, annotations, owner; spec).
    pub dpa: DatadogPodAutoscaler,
    /// Why.
    pub why: Why,
    /// For updates: the resource version read, for an optimistic replace.
    pub resource_version: Option<String>,
}

/// The object an event is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    /// A workload.
    Workload(WorkloadKind, String, String),
    /// A namespace.
    Namespace(String),
}

/// An event to emit (once per distinct notice, see the controller).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Notice {
    /// What it is about.
    pub subject: Subject,
    /// Event reason ([`events::PROFILE_SKIPPED`] or [`events::INVALID_PROFILE_LABEL`]).
    pub reason: &'static str,
    /// For humans.
    pub message: String,
}

/// The status a profile should have.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileStatus {
    /// `Ok` when the template is valid, else why not (the `Valid` condition).
    pub valid: Result<(), Invalid>,
    /// Hash of the valid template (`None` when invalid: the last applied hash is kept).
    pub template_hash: Option<String>,
    /// Generated DPAs of this profile once the plan is done.
    pub controlled_autoscalers: i32,
}

/// What to do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Generated DPAs to create or write again.
    pub writes: Vec<Write>,
    /// Generated DPAs to delete.
    pub deletes: Vec<Key>,
    /// Events, sorted.
    pub notices: Vec<Notice>,
    /// Status of every profile, by name.
    pub statuses: BTreeMap<String, ProfileStatus>,
}

impl Plan {
    /// Whether nothing is to be written or deleted.
    pub fn is_noop(&self) -> bool {
        self.writes.is_empty() && self.deletes.is_empty()
    }
}

/// The name of the DPA generated from `profile` for a workload:
/// `<profile>-<first 4 bytes of sha256("<GroupKind>/<namespace>/<name>") as hex>`.
pub fn generated_name(profile: &str, kind: WorkloadKind, namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{}/{namespace}/{name}", kind.group_kind()).as_bytes());
    format!("{profile}-{}", hex::encode(&digest[..4]))
}

/// Hash of a template: the first 8 bytes of the sha256 of its JSON, as hex. Equal templates (after
/// the API server's defaults) have equal hashes.
pub fn template_hash(template: &DatadogPodAutoscalerTemplate) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..8])
}

/// Longest object name (a DNS-1123 subdomain).
const MAX_NAME: usize = 253;
/// Length of the `-<8 hex>` suffix of generated names.
const SUFFIX: usize = 9;

/// Whether `value` can name a profile: a DNS-1123 subdomain (lowercase alphanumerics, `-` and `.`,
/// starting and ending with an alphanumeric) short enough for the generated DPA's name.
pub fn valid_profile_name(value: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !value.is_empty()
        && value.len() + SUFFIX <= MAX_NAME
        && value.chars().all(|c| alnum(c) || c == '-' || c == '.')
        && value.starts_with(alnum)
        && value.ends_with(alnum)
        && value.split('.').all(|part| !part.is_empty())
}

fn target_ref(kind: WorkloadKind, name: &str) -> CrossVersionObjectReference {
    CrossVersionObjectReference {
        api_version: Some(PROFILE_API_VERSION.to_owned()),
        kind: kind.as_str().to_owned(),
        name: name.to_owned(),
    }
}

/// The generated DPA wanted for `workload` under `profile`.
pub fn desired_dpa(
    profile: &str,
    template: &DatadogPodAutoscalerTemplate,
    hash: &str,
    workload: &Workload,
) -> DatadogPodAutoscaler {
    let name = generated_name(profile, workload.kind, &workload.namespace, &workload.name);
    let spec = DatadogPodAutoscalerSpec::from_template(
        target_ref(workload.kind, &workload.name),
        DatadogPodAutoscalerOwner::Local,
        template.clone(),
    );
    let mut dpa = DatadogPodAutoscaler::new(&name, spec);
    dpa.metadata = ObjectMeta {
        name: Some(name),
        namespace: Some(workload.namespace.clone()),
        labels: Some(BTreeMap::from([(labels::PROFILE.to_owned(), profile.to_owned())])),
        annotations: Some(BTreeMap::from([(
            annotations::PROFILE_HASH.to_owned(),
            hash.to_owned(),
        )])),
        owner_references: workload.uid.as_ref().map(|uid| {
            vec![OwnerReference {
                api_version: PROFILE_API_VERSION.to_owned(),
                kind: workload.kind.as_str().to_owned(),
                name: workload.name.clone(),
                uid: uid.clone(),
                controller: None,
                block_owner_deletion: None,
            }]
        }),
        ..ObjectMeta::default()
    };
    dpa
}

fn label_of(meta: &ObjectMeta, key: &str) -> Option<String> {
    meta.labels.as_ref()?.get(key).cloned()
}

fn annotation_of(meta: &ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref()?.get(key).cloned()
}

/// The profile of a generated DPA: its profile label.
fn profile_of(dpa: &DatadogPodAutoscaler) -> Option<String> {
    label_of(&dpa.metadata, labels::PROFILE)
}

/// Where the profile of a workload comes from.
enum Choice<'a> {
    /// No profile applies.
    None,
    /// A profile name from the workload's own label, or from its namespace's.
    Named(&'a str, Subject),
}

fn choose<'a>(w: &'a Workload, namespaces: &'a BTreeMap<String, String>) -> Choice<'a> {
    let own = w.label.as_deref().filter(|v| !v.is_empty());
    match own {
        Some(labels::PROFILE_EXCLUDED) => Choice::None,
        Some(v) => Choice::Named(v, Subject::Workload(w.kind, w.namespace.clone(), w.name.clone())),
        None => match namespaces.get(&w.namespace).map(String::as_str) {
            None | Some("") | Some(labels::PROFILE_EXCLUDED) => Choice::None,
            Some(v) => Choice::Named(v, Subject::Namespace(w.namespace.clone())),
        },
    }
}

/// Plans the generated DPA set; see the module docs.
pub fn plan(inputs: Inputs<'_>) -> Plan {
    let mut out = Plan::default();
    let hashes: BTreeMap<&str, Option<String>> = inputs
        .profiles
        .iter()
        .map(|(n, p)| (n.as_str(), p.template.as_ref().ok().map(template_hash)))
        .collect();

    // DPAs of the user by target, and every generated DPA by key.
    let mut user_targets: BTreeMap<(&str, &str, &str), Key> = BTreeMap::new();
    let mut user_names: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut generated: BTreeMap<(&str, &str), &DatadogPodAutoscaler> = BTreeMap::new();
    for d in inputs.dpas {
        let (Some(ns), Some(name)) = (d.metadata.namespace.as_deref(), d.metadata.name.as_deref()) else {
            continue;
        };
        if is_generated(&d.metadata) {
            generated.insert((ns, name), d);
        } else {
            let t = &d.spec.target_ref;
            user_targets
                .entry((ns, t.kind.as_str(), t.name.as_str()))
                .or_insert_with(|| (ns.to_owned(), name.to_owned()));
            user_names.insert((ns, name));
        }
    }

    let mut seen: BTreeSet<(WorkloadKind, &str, &str)> = BTreeSet::new();
    let mut wanted: BTreeSet<Key> = BTreeSet::new();
    let mut controlled: BTreeMap<&str, i32> = BTreeMap::new();
    let mut notices: BTreeSet<Notice> = BTreeSet::new();
    for w in inputs.workloads {
        if !seen.insert(w.id()) {
            continue;
        }
        let Choice::Named(profile, subject) = choose(w, inputs.namespaces) else {
            continue;
        };
        if !valid_profile_name(profile) {
            let message = format!(
                "the label {}={profile:?} does not name a valid ClusterProfile; ignored",
                labels::PROFILE
            );
            notices.insert(Notice {
                subject,
                reason: events::INVALID_PROFILE_LABEL,
                message,
            });
            continue;
        }
        let (Some(p), Some(hash)) = (inputs.profiles.get(profile), hashes.get(profile)) else {
            continue; // unknown profile: picked up once it exists
        };
        let name = generated_name(profile, w.kind, &w.namespace, &w.name);
        let key = (w.namespace.clone(), name);
        let here = (w.namespace.as_str(), key.1.as_str());
        if let Some((uns, uname)) =
            user_targets.get(&(w.namespace.as_str(), w.kind.as_str(), w.name.as_str()))
        {
            notices.insert(Notice {
                subject: Subject::Workload(w.kind, w.namespace.clone(), w.name.clone()),
                reason: events::PROFILE_SKIPPED,
                message: format!(
                    "DatadogPodAutoscaler {uns}/{uname} already targets {w}: no DPA is generated from profile {profile}"
                ),
            });
            continue;
        }
        if user_names.contains(&here) {
            notices.insert(Notice {
                subject: Subject::Workload(w.kind, w.namespace.clone(), w.name.clone()),
                reason: events::PROFILE_SKIPPED,
                message: format!(
                    "a DatadogPodAutoscaler of the user is named {}/{}: no DPA is generated from profile {profile}",
                    key.0, key.1
                ),
            });
            continue;
        }
        let existing = generated.get(&here).copied();
        match (&p.template, hash) {
            (Ok(template), Some(hash)) => {
                let want = desired_dpa(profile, template, hash, w);
                let why = match existing {
                    None => Some(Why::Create),
                    Some(d)
                        if annotation_of(&d.metadata, annotations::PROFILE_HASH).as_deref()
                            != Some(hash.as_str()) =>
                    {
                        Some(Why::Update)
                    }
                    Some(d) if d.spec != want.spec || profile_of(d).as_deref() != Some(profile) => {
                        Some(Why::Drift)
                    }
                    Some(_) => None,
                };
                if let Some(why) = why {
                    out.writes.push(Write {
                        dpa: want,
                        why,
                        resource_version: existing.and_then(|d| d.metadata.resource_version.clone()),
                    });
                }
            }
            // An invalid template is never applied: what exists stays as it is.
            _ if existing.is_none() => continue,
            _ => {}
        }
        *controlled.entry(profile).or_default() += 1;
        wanted.insert(key);
    }
    for (ns, name) in generated.keys() {
        if !wanted.contains(&((*ns).to_owned(), (*name).to_owned())) {
            out.deletes.push(((*ns).to_owned(), (*name).to_owned()));
        }
    }
    for (name, p) in inputs.profiles {
        out.statuses.insert(
            name.clone(),
            ProfileStatus {
                valid: p.template.as_ref().map(|_| ()).map_err(Clone::clone),
                template_hash: hashes.get(name.as_str()).cloned().flatten(),
                controlled_autoscalers: controlled.get(name.as_str()).copied().unwrap_or(0),
            },
        );
    }
    out.notices = notices.into_iter().collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazyscale_api::{Constraints, builtin_profiles};
    use proptest::prelude::*;

    fn cost() -> DatadogPodAutoscalerTemplate {
        builtin_profiles()[0].spec.template.clone()
    }

    fn deployment(ns: &str, name: &str, label: Option<&str>) -> Workload {
        Workload {
            kind: WorkloadKind::Deployment,
            namespace: ns.into(),
            name: name.into(),
            uid: Some(format!("uid-{ns}-{name}")),
            label: label.map(Into::into),
        }
    }

    fn profiles(list: &[(&str, DatadogPodAutoscalerTemplate)]) -> BTreeMap<String, Profile> {
        list.iter()
            .map(|(n, t)| ((*n).to_owned(), Profile::new(t.clone())))
            .collect()
    }

    fn run(
        workloads: &[Workload],
        namespaces: &BTreeMap<String, String>,
        profiles: &BTreeMap<String, Profile>,
        dpas: &[Arc<DatadogPodAutoscaler>],
    ) -> Plan {
        plan(Inputs {
            workloads,
            namespaces,
            profiles,
            dpas,
        })
    }

    /// The DPAs after the plan is carried out (writes replace, deletes remove).
    fn carry_out(dpas: &[Arc<DatadogPodAutoscaler>], p: &Plan) -> Vec<Arc<DatadogPodAutoscaler>> {
        let key = |d: &DatadogPodAutoscaler| {
            (
                d.metadata.namespace.clone().unwrap_or_default(),
                d.metadata.name.clone().unwrap_or_default(),
            )
        };
        let mut all: BTreeMap<Key, Arc<DatadogPodAutoscaler>> =
            dpas.iter().map(|d| (key(d), d.clone())).collect();
        for k in &p.deletes {
            all.remove(k);
        }
        for w in &p.writes {
            all.insert(key(&w.dpa), Arc::new(w.dpa.clone()));
        }
        all.into_values().collect()
    }

    fn user_dpa(ns: &str, name: &str, target: &str) -> Arc<DatadogPodAutoscaler> {
        let mut d = DatadogPodAutoscaler::new(
            name,
            DatadogPodAutoscalerSpec::from_template(
                target_ref(WorkloadKind::Deployment, target),
                DatadogPodAutoscalerOwner::Local,
                cost(),
            ),
        );
        d.metadata.namespace = Some(ns.into());
        Arc::new(d)
    }

    #[test]
    fn names_follow_the_cluster_agent_format() {
        let n = generated_name(
            "datadog-optimize-cost",
            WorkloadKind::Deployment,
            "default",
            "web",
        );
        let digest = Sha256::digest(b"Deployment.apps/default/web");
        assert_eq!(n, format!("datadog-optimize-cost-{}", hex::encode(&digest[..4])));
        assert_eq!(n.len(), "datadog-optimize-cost-".len() + 8);
        assert_ne!(
            n,
            generated_name(
                "datadog-optimize-cost",
                WorkloadKind::StatefulSet,
                "default",
                "web"
            )
        );
    }

    #[test]
    fn profile_names() {
        for ok in ["a", "datadog-optimize-cost", "a.b", "0x"] {
            assert!(valid_profile_name(ok), "{ok}");
        }
        let long = "a".repeat(245);
        for bad in ["", "A", "a_b", "-a", "a-", "a..b", ".a", "Foo", long.as_str()] {
            assert!(!valid_profile_name(bad), "{bad}");
        }
        assert!(valid_profile_name(&"a".repeat(244)));
    }

    #[test]
    fn a_labelled_workload_gets_one_dpa_and_a_second_pass_writes_nothing() {
        let ps = profiles(&[("p", cost())]);
        let ws = [deployment("ns", "web", Some("p"))];
        let ns = BTreeMap::new();
        let p = run(&ws, &ns, &ps, &[]);
        assert_eq!(p.writes.len(), 1);
        let w = &p.writes[0];
        assert_eq!(w.why, Why::Create);
        assert_eq!(
            w.dpa.metadata.name.as_deref(),
            Some(generated_name("p", WorkloadKind::Deployment, "ns", "web").as_str())
        );
        assert_eq!(w.dpa.spec.target_ref.name, "web");
        assert_eq!(w.dpa.spec.owner, DatadogPodAutoscalerOwner::Local);
        assert_eq!(w.dpa.spec.template(), cost());
        assert!(is_generated(&w.dpa.metadata));
        assert_eq!(
            w.dpa.metadata.owner_references.as_ref().map(|o| o[0].uid.clone()),
            Some("uid-ns-web".to_owned())
        );
        assert_eq!(p.statuses["p"].controlled_autoscalers, 1);
        assert_eq!(p.statuses["p"].template_hash, Some(template_hash(&cost())));
        let after = carry_out(&[], &p);
        let again = run(&ws, &ns, &ps, &after);
        assert!(again.is_noop(), "{again:?}");
        assert_eq!(again.statuses, p.statuses);
    }

    /// Generated names hash the `GroupKind`: the values the plan's own kind type produced before the
    /// kind moved into `lazyscale_api`, so the DPAs already generated keep their names.
    #[test]
    fn generated_names_are_the_documented_hash() {
        assert_eq!(
            generated_name("p", WorkloadKind::Deployment, "ns", "web"),
            "p-b71089e6"
        );
        assert_eq!(
            generated_name("p", WorkloadKind::StatefulSet, "team", "db"),
            "p-e52d4d93"
        );
    }

    #[test]
    fn template_change_updates_and_drift_resets() {
        let ws = [deployment("ns", "web", Some("p"))];
        let ns = BTreeMap::new();
        let before = carry_out(&[], &run(&ws, &ns, &profiles(&[("p", cost())]), &[]));
        let mut edited = cost();
        edited.constraints = Some(Constraints {
            min_replicas: Some(4),
            max_replicas: Some(9),
            containers: None,
        });
        let p = run(&ws, &ns, &profiles(&[("p", edited.clone())]), &before);
        assert_eq!(p.writes.len(), 1);
        assert_eq!(p.writes[0].why, Why::Update);
        assert_eq!(p.writes[0].dpa.spec.template(), edited);
        // someone edits the generated DPA: it is reset to the template
        let mut drifted = (*before[0]).clone();
        drifted.spec.constraints = None;
        let p = run(&ws, &ns, &profiles(&[("p", cost())]), &[Arc::new(drifted)]);
        assert_eq!(p.writes.len(), 1);
        assert_eq!(p.writes[0].why, Why::Drift);
        assert_eq!(p.writes[0].dpa.spec, before[0].spec);
    }

    #[test]
    fn precedence_exclusion_and_unknown_profiles() {
        let ps = profiles(&[("p", cost()), ("q", cost())]);
        let ns = BTreeMap::from([("team".to_owned(), "p".to_owned())]);
        let ws = [
            deployment("team", "plain", None),              // namespace's p
            deployment("team", "own", Some("q")),           // own label wins
            deployment("team", "out", Some("excluded")),    // opted out
            deployment("team", "mine", None),               // user DPA wins
            deployment("team", "later", Some("unknown")),   // unknown profile: nothing, silently
            deployment("other", "bad", Some("Not_A_Name")), // invalid label value
            deployment("team", "plain", None),              // duplicate observation
        ];
        let dpas = [user_dpa("team", "users-own", "mine")];
        let p = run(&ws, &ns, &ps, &dpas);
        let made: Vec<(String, String)> = p
            .writes
            .iter()
            .map(|w| {
                (
                    w.dpa.spec.target_ref.name.clone(),
                    profile_of(&w.dpa).unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            made,
            [
                ("plain".to_owned(), "p".to_owned()),
                ("own".to_owned(), "q".to_owned())
            ]
        );
        let reasons: Vec<(&str, &Subject)> = p.notices.iter().map(|n| (n.reason, &n.subject)).collect();
        assert_eq!(
            reasons,
            [
                (
                    events::INVALID_PROFILE_LABEL,
                    &Subject::Workload(WorkloadKind::Deployment, "other".into(), "bad".into())
                ),
                (
                    events::PROFILE_SKIPPED,
                    &Subject::Workload(WorkloadKind::Deployment, "team".into(), "mine".into())
                ),
            ]
        );
        assert!(p.notices[1].message.contains("team/users-own"));
        // the unknown profile appears: picked up
        let mut more = ps.clone();
        more.insert("unknown".into(), Profile::new(cost()));
        let after = carry_out(&dpas, &p);
        let p = run(&ws, &ns, &more, &after);
        assert_eq!(p.writes.len(), 1);
        assert_eq!(p.writes[0].dpa.spec.target_ref.name, "later");
    }

    #[test]
    fn a_user_dpa_created_later_replaces_the_generated_one() {
        let ps = profiles(&[("p", cost())]);
        let ws = [deployment("ns", "web", Some("p"))];
        let ns = BTreeMap::new();
        let mut dpas = carry_out(&[], &run(&ws, &ns, &ps, &[]));
        dpas.push(user_dpa("ns", "hand-made", "web"));
        let p = run(&ws, &ns, &ps, &dpas);
        assert!(p.writes.is_empty());
        assert_eq!(
            p.deletes,
            [(
                "ns".to_owned(),
                generated_name("p", WorkloadKind::Deployment, "ns", "web")
            )]
        );
        assert_eq!(p.statuses["p"].controlled_autoscalers, 0);
    }

    #[test]
    fn invalid_templates_are_reported_and_never_applied() {
        let mut bad = cost();
        bad.constraints = Some(Constraints {
            min_replicas: Some(5),
            max_replicas: Some(2),
            containers: None,
        });
        let ws = [
            deployment("ns", "web", Some("p")),
            deployment("ns", "api", Some("p")),
        ];
        let ns = BTreeMap::new();
        let p = run(&ws, &ns, &profiles(&[("p", bad.clone())]), &[]);
        assert!(p.is_noop());
        let s = &p.statuses["p"];
        assert_eq!(s.valid.as_ref().map_err(|e| e.reason), Err(reasons::INVALID_SPEC));
        assert!(
            s.valid
                .as_ref()
                .err()
                .is_some_and(|e| e.message.contains("maxReplicas"))
        );
        assert_eq!((s.template_hash.clone(), s.controlled_autoscalers), (None, 0));
        // a valid profile that becomes invalid keeps what it generated, untouched
        let made = carry_out(&[], &run(&ws[..1], &ns, &profiles(&[("p", cost())]), &[]));
        let p = run(&ws, &ns, &profiles(&[("p", bad)]), &made);
        assert!(p.is_noop(), "{p:?}");
        assert_eq!(p.statuses["p"].controlled_autoscalers, 1);
        let undecodable = BTreeMap::from([("p".to_owned(), Profile::undecodable("unknown variant `Foo`"))]);
        let p = run(&ws, &ns, &undecodable, &[]);
        assert!(p.is_noop());
        assert!(p.statuses["p"].valid.is_err());
    }

    #[test]
    fn unlabelled_excluded_or_deleted_profile_deletes() {
        let ps = profiles(&[("p", cost())]);
        let ns = BTreeMap::new();
        let made = carry_out(&[], &run(&[deployment("ns", "web", Some("p"))], &ns, &ps, &[]));
        let name = made[0].metadata.name.clone().unwrap_or_default();
        for (ws, ps) in [
            (vec![], ps.clone()),
            (vec![deployment("ns", "web", Some("excluded"))], ps.clone()),
            (vec![deployment("ns", "web", Some("p"))], BTreeMap::new()),
        ] {
            let p = run(&ws, &ns, &ps, &made);
            assert_eq!(p.deletes, [("ns".to_owned(), name.clone())]);
            assert!(p.writes.is_empty());
        }
    }

    fn arb_label() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some("excluded".to_owned())),
            Just(Some(String::new())),
            Just(Some("p".to_owned())),
            Just(Some("q".to_owned())),
            Just(Some("missing".to_owned())),
            Just(Some("Bad_Name".to_owned())),
        ]
    }

    /// Workloads, namespace labels, profiles and the user's DPAs.
    type World = (
        Vec<Workload>,
        BTreeMap<String, String>,
        BTreeMap<String, Profile>,
        Vec<Arc<DatadogPodAutoscaler>>,
    );

    fn arb_world() -> impl Strategy<Value = World> {
        let workloads =
            proptest::collection::vec((0u8..2, 0u8..3, 0u8..4, arb_label()), 0..20).prop_map(|v| {
                v.into_iter()
                    .map(|(k, ns, n, label)| Workload {
                        kind: PROFILE_KINDS[k as usize],
                        namespace: format!("ns{ns}"),
                        name: format!("w{n}"),
                        uid: Some(format!("u{k}{ns}{n}")),
                        label,
                    })
                    .collect::<Vec<_>>()
            });
        let namespaces = proptest::collection::btree_map(
            (0u8..3).prop_map(|n| format!("ns{n}")),
            arb_label().prop_map(Option::unwrap_or_default),
            0..3,
        );
        let profile_set = (any::<bool>(), any::<bool>(), 1i32..4).prop_map(|(p, q_valid, min)| {
            let mut m = BTreeMap::new();
            let mut t = cost();
            t.constraints = Some(Constraints {
                min_replicas: Some(min),
                max_replicas: None,
                containers: None,
            });
            if p {
                m.insert("p".to_owned(), Profile::new(t.clone()));
            }
            let mut q = t;
            if !q_valid {
                q.constraints = Some(Constraints {
                    min_replicas: Some(3),
                    max_replicas: Some(1),
                    containers: None,
                });
            }
            m.insert("q".to_owned(), Profile::new(q));
            m
        });
        let users = proptest::collection::vec((0u8..3, 0u8..4), 0..4).prop_map(|v| {
            v.into_iter()
                .map(|(ns, n)| user_dpa(&format!("ns{ns}"), &format!("user-{n}"), &format!("w{n}")))
                .collect::<Vec<_>>()
        });
        (workloads, namespaces, profile_set, users)
    }

    proptest! {
        /// Carrying out a plan leaves nothing to do: a second pass writes nothing.
        #[test]
        fn planning_converges((ws, ns, ps, users) in arb_world(), (ws2, ps2) in (proptest::collection::vec(any::<bool>(), 20), any::<bool>())) {
            // some history: a first world, then a changed one (labels dropped, a profile removed)
            let first = carry_out(&users, &run(&ws, &ns, &ps, &users));
            let ws_b: Vec<Workload> = ws.iter().zip(ws2.iter()).filter(|(_, keep)| **keep).map(|(w, _)| w.clone()).collect();
            let mut ps_b = ps.clone();
            if ps2 { ps_b.remove("p"); }
            let p = run(&ws_b, &ns, &ps_b, &first);
            let second = carry_out(&first, &p);
            let again = run(&ws_b, &ns, &ps_b, &second);
            prop_assert!(again.is_noop(), "{:?}", again);
            prop_assert_eq!(&again.statuses, &p.statuses);
            // every generated DPA left is wanted by a workload of its namespace, of its profile, with no user DPA
            for d in second.iter().filter(|d| is_generated(&d.metadata)) {
                let ns_name = d.metadata.namespace.clone().unwrap_or_default();
                let target = &d.spec.target_ref;
                prop_assert!(!users.iter().any(|u| u.metadata.namespace.as_deref() == Some(ns_name.as_str()) && u.spec.target_ref.name == target.name && u.spec.target_ref.kind == target.kind));
                let w = ws_b.iter().find(|w| w.namespace == ns_name && w.kind.as_str() == target.kind && w.name == target.name);
                prop_assert!(w.is_some(), "a generated DPA without its workload");
                let profile = profile_of(d).unwrap_or_default();
                let w = w.map(|w| w.label.clone().filter(|l| !l.is_empty()).or_else(|| ns.get(&w.namespace).cloned()));
                prop_assert_eq!(w.flatten(), Some(profile.clone()), "the workload's own label wins over its namespace's");
                prop_assert!(profile != labels::PROFILE_EXCLUDED);
                prop_assert!(ps_b.contains_key(&profile));
            }
            // controlled counts match what exists
            for (name, s) in &again.statuses {
                let n = second.iter().filter(|d| is_generated(&d.metadata) && profile_of(d).as_deref() == Some(name.as_str())).count();
                prop_assert_eq!(s.controlled_autoscalers as usize, n);
            }
        }

        #[test]
        fn generated_names_are_valid_object_names(profile in "[a-z][a-z0-9-]{0,40}[a-z0-9]", ns in "[a-z]{1,10}", name in "[a-z]{1,10}", k in 0usize..2) {
            let n = generated_name(&profile, PROFILE_KINDS[k], &ns, &name);
            let prefix = format!("{profile}-");
            prop_assert!(n.starts_with(&prefix));
            let suffix = &n[profile.len() + 1..];
            prop_assert_eq!(suffix.len(), 8);
            prop_assert!(suffix.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            prop_assert!(valid_profile_name(&profile) && n.len() <= MAX_NAME);
        }
    }
}
