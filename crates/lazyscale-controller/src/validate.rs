//! Validation of a DPA before it is acted on (dpa-system §2.3), and the per-cluster limit.
//!
//! Validation is pure: it sees the object and the controller's own identity, and returns the
//! condition reason and message of the first problem. The per-cluster limit keeps the oldest
//! autoscalers (by creation time, then namespace and name) active and disables the rest.
//!
//! It starts with decoding ([`decode`]): the CRD schema admits objects our typed
//! [`DatadogPodAutoscaler`] cannot hold (an enum value in an old or newer spelling, a shape the
//! schema leaves open), and such an object must neither be dropped silently nor disturb the other
//! DPAs. It becomes an [`Undecodable`]: its metadata, its status and the field and error of the
//! decoder, which the controller reports as `InvalidSpec`. [`transition`] says when the agent
//! announces that it stops acting on a DPA, or acts on it again.

use std::collections::HashSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use lazyscale_api::consts::conditions::{self, reasons};
use lazyscale_api::{
    DatadogPodAutoscaler, DatadogPodAutoscalerCondition, DatadogPodAutoscalerStatus, Objective, ObjectiveType,
};

use crate::scale::split_api_version;
use lazyscale_api::quantity;

/// Why a DPA is not acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Condition reason (one of [`reasons`]).
    pub reason: &'static str,
    /// For humans.
    pub message: String,
}

impl Invalid {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// A DPA the API server stored but whose object does not decode into [`DatadogPodAutoscaler`].
#[derive(Debug, Clone, PartialEq)]
pub struct Undecodable {
    /// Its metadata (namespace, name, uid, resourceVersion), decoded on its own.
    pub metadata: ObjectMeta,
    /// Its status, when that part decodes on its own (the conditions the controller compares with).
    pub status: Option<DatadogPodAutoscalerStatus>,
    /// Where decoding failed, as a path from the object's root (`spec.applyPolicy.mode`).
    pub field: String,
    /// The decoder's error.
    pub error: String,
}

impl Undecodable {
    /// Why it is not acted on: `InvalidSpec`, naming the field and the error.
    pub fn invalid(&self) -> Invalid {
        Invalid::new(
            reasons::INVALID_SPEC,
            format!("{} cannot be read: {}", self.field, self.error),
        )
    }

    /// `namespace/name`, for logs.
    pub fn key(&self) -> (String, String) {
        (
            self.metadata.namespace.clone().unwrap_or_default(),
            self.metadata.name.clone().unwrap_or_default(),
        )
    }
}

/// Decodes one DPA object as the API server serves it (JSON). On failure the metadata and the status
/// are decoded on their own, and the error names the first field that does not fit.
pub fn decode(object: &serde_json::Value) -> Result<DatadogPodAutoscaler, Box<Undecodable>> {
    serde_path_to_error::deserialize::<_, DatadogPodAutoscaler>(object).map_err(|e| {
        let part = |name: &str| object.get(name).cloned().unwrap_or(serde_json::Value::Null);
        let path = e.path().to_string();
        Box::new(Undecodable {
            metadata: serde_json::from_value(part("metadata")).unwrap_or_default(),
            status: serde_json::from_value(part("status")).ok().flatten(),
            field: if path == "." {
                "the object".to_owned()
            } else {
                path
            },
            error: e.into_inner().to_string(),
        })
    })
}

/// What the agent announces when a DPA's `Active` condition moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// New, active until now, or blocked for another reason: it is not acted on (a Warning with the
    /// blocking reason and message).
    Stopped(Invalid),
    /// It was not acted on and is again; the reason it was blocked for.
    Resumed(String),
}

/// The announcement due when a DPA whose stored conditions are `old` is now blocked by `blocked`
/// (`None`: acted on). Nothing while it stays as it was, so a restart or a repeated reconcile
/// announces nothing again.
pub fn transition(old: &[DatadogPodAutoscalerCondition], blocked: Option<&Invalid>) -> Option<Transition> {
    let active = old.iter().find(|c| c.type_ == conditions::ACTIVE);
    let inactive = active.filter(|c| c.status == conditions::STATUS_FALSE);
    match (blocked, inactive) {
        (Some(b), Some(c))
            if c.reason.as_deref() == Some(b.reason) && c.message.as_deref() == Some(b.message.as_str()) =>
        {
            None
        }
        (Some(b), _) => Some(Transition::Stopped(b.clone())),
        (None, Some(c)) => Some(Transition::Resumed(
            c.reason.as_deref().unwrap_or_default().to_owned(),
        )),
        (None, None) => None,
    }
}

/// A workload the controller must not scale (its own Deployment): namespace, kind, name.
pub type SelfTarget = (String, String, String);

/// Validates a DPA; `self_target` is the agent's own workload, if known.
pub fn validate(dpa: &DatadogPodAutoscaler, self_target: Option<&SelfTarget>) -> Result<(), Invalid> {
    let spec = &dpa.spec;
    let t = &spec.target_ref;
    if t.name.is_empty() {
        return Err(Invalid::new(
            reasons::INVALID_TARGET_REF,
            "targetRef.name is empty",
        ));
    }
    if t.kind.is_empty() {
        return Err(Invalid::new(
            reasons::INVALID_TARGET_REF,
            "targetRef.kind is empty",
        ));
    }
    let api_version = t.api_version.as_deref().unwrap_or_default();
    split_api_version(api_version).map_err(|e| Invalid::new(reasons::INVALID_TARGET_REF, e.to_string()))?;
    if let Some((ns, kind, name)) = self_target
        && dpa.metadata.namespace.as_deref() == Some(ns.as_str())
        && &t.kind == kind
        && &t.name == name
    {
        return Err(Invalid::new(
            reasons::INVALID_TARGET,
            "the autoscaler cannot scale its own workload",
        ));
    }
    if let Some(c) = &spec.constraints {
        let min = c.min_replicas.unwrap_or(1);
        if min < 1 {
            return Err(Invalid::new(
                reasons::INVALID_SPEC,
                format!("constraints.minReplicas {min} must be at least 1"),
            ));
        }
        if let Some(max) = c.max_replicas
            && max < min
        {
            return Err(Invalid::new(
                reasons::INVALID_SPEC,
                format!("constraints.maxReplicas {max} is below minReplicas {min}"),
            ));
        }
        let mut seen = HashSet::new();
        for cc in c.containers.iter().flatten() {
            if !seen.insert(cc.name.as_str()) {
                return Err(Invalid::new(
                    reasons::INVALID_SPEC,
                    format!("container constraint {:?} appears twice", cc.name),
                ));
            }
            let min = cc
                .min_allowed
                .as_ref()
                .or(cc.requests.as_ref().and_then(|r| r.min_allowed.as_ref()));
            let max = cc
                .max_allowed
                .as_ref()
                .or(cc.requests.as_ref().and_then(|r| r.max_allowed.as_ref()));
            if let (Some(min), Some(max)) = (min, max) {
                for (res, lo) in min {
                    let (Some(lo), Some(hi)) = (
                        quantity::millis(&lo.0),
                        max.get(res).and_then(|q| quantity::millis(&q.0)),
                    ) else {
                        continue;
                    };
                    if lo > hi {
                        return Err(Invalid::new(
                            reasons::INVALID_SPEC,
                            format!("container {:?}: minAllowed {res} is above maxAllowed", cc.name),
                        ));
                    }
                }
            }
        }
    }
    for o in spec.objectives.iter().flatten() {
        objective(o, "objectives")?;
    }
    for o in spec.fallback.horizontal.objectives.iter().flatten() {
        objective(o, "fallback.horizontal.objectives")?;
        if o.type_ == ObjectiveType::CustomQuery {
            return Err(Invalid::new(
                reasons::INVALID_SPEC,
                "fallback.horizontal.objectives cannot use CustomQuery",
            ));
        }
    }
    Ok(())
}

fn objective(o: &Objective, field: &str) -> Result<(), Invalid> {
    let present = match o.type_ {
        ObjectiveType::PodResource => o.pod_resource.is_some(),
        ObjectiveType::ContainerResource => o.container_resource.is_some(),
        ObjectiveType::CustomQuery => o.custom_query.is_some(),
    };
    if present {
        Ok(())
    } else {
        Err(Invalid::new(
            reasons::INVALID_SPEC,
            format!("{field}: objective of type {:?} has no body", o.type_),
        ))
    }
}

/// An autoscaler's place in the per-cluster limit: creation time (unix milliseconds), namespace, name.
pub type LimitKey = (i64, String, String);

/// Which autoscalers are within the per-cluster limit: the `limit` oldest (ties broken by namespace and
/// name). Kept as the last one admitted rather than as the set of admitted keys, so that it costs
/// nothing per autoscaler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cutoff {
    /// There are no more autoscalers than the limit.
    Everyone,
    /// The limit is 0 and there are autoscalers.
    Nobody,
    /// The `limit`-th oldest: it and every autoscaler that sorts before it are within the limit.
    UpTo(LimitKey),
}

impl Cutoff {
    /// Whether the autoscaler created at `created` (unix milliseconds) named `namespace/name` is within
    /// the limit.
    pub fn admits(&self, created: i64, namespace: &str, name: &str) -> bool {
        match self {
            Cutoff::Everyone => true,
            Cutoff::Nobody => false,
            Cutoff::UpTo((c, ns, n)) => (created, namespace, name) <= (*c, ns.as_str(), n.as_str()),
        }
    }
}

/// The cutoff of the limit over `all` autoscalers (in linear time: one selection, no sort).
pub fn limit_cutoff(mut all: Vec<LimitKey>, limit: usize) -> Cutoff {
    if all.len() <= limit {
        return Cutoff::Everyone;
    }
    let Some(last) = limit.checked_sub(1) else {
        return Cutoff::Nobody;
    };
    let (_, nth, _) = all.select_nth_unstable(last);
    Cutoff::UpTo(std::mem::take(nth))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazyscale_api::{Constraints, DatadogPodAutoscalerSpec};

    fn dpa(yaml: &str) -> DatadogPodAutoscaler {
        let spec: DatadogPodAutoscalerSpec = serde_saphyr_free(yaml);
        let mut d = DatadogPodAutoscaler::new("a", spec);
        d.metadata.namespace = Some("ns".into());
        d
    }

    // Specs are written as JSON to avoid a YAML dependency.
    fn serde_saphyr_free(json: &str) -> DatadogPodAutoscalerSpec {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
    }

    const BASE: &str =
        r#"{"targetRef":{"apiVersion":"apps/v1","kind":"Deployment","name":"web"},"owner":"Local"}"#;

    #[test]
    fn valid_and_invalid_specs() {
        assert_eq!(validate(&dpa(BASE), None), Ok(()));
        let mut d = dpa(BASE);
        d.spec.constraints = Some(Constraints {
            min_replicas: Some(5),
            max_replicas: Some(2),
            containers: None,
        });
        assert_eq!(
            validate(&d, None).map_err(|e| e.reason),
            Err(reasons::INVALID_SPEC)
        );
        let mut d = dpa(BASE);
        d.spec.target_ref.api_version = Some("a/b/c".into());
        assert_eq!(
            validate(&d, None).map_err(|e| e.reason),
            Err(reasons::INVALID_TARGET_REF)
        );
        let mut d = dpa(BASE);
        d.spec.target_ref.name = String::new();
        assert_eq!(
            validate(&d, None).map_err(|e| e.reason),
            Err(reasons::INVALID_TARGET_REF)
        );
        let me = ("ns".to_owned(), "Deployment".to_owned(), "web".to_owned());
        assert_eq!(
            validate(&dpa(BASE), Some(&me)).map_err(|e| e.reason),
            Err(reasons::INVALID_TARGET)
        );
        let d = dpa(
            r#"{"targetRef":{"apiVersion":"apps/v1","kind":"Deployment","name":"web"},"owner":"Local",
               "objectives":[{"type":"PodResource"}]}"#,
        );
        assert_eq!(
            validate(&d, None).map_err(|e| e.reason),
            Err(reasons::INVALID_SPEC)
        );
        let d = dpa(
            r#"{"targetRef":{"apiVersion":"apps/v1","kind":"Deployment","name":"web"},"owner":"Local",
               "constraints":{"containers":[{"name":"a","minAllowed":{"cpu":"2"},"maxAllowed":{"cpu":"1"}}]}}"#,
        );
        assert_eq!(
            validate(&d, None).map_err(|e| e.reason),
            Err(reasons::INVALID_SPEC)
        );
        let d = dpa(
            r#"{"targetRef":{"apiVersion":"apps/v1","kind":"Deployment","name":"web"},"owner":"Local",
               "constraints":{"containers":[{"name":"a"},{"name":"a"}]}}"#,
        );
        assert_eq!(
            validate(&d, None).map_err(|e| e.reason),
            Err(reasons::INVALID_SPEC)
        );
    }

    #[test]
    fn decode_names_the_field_and_keeps_metadata_and_status() {
        let object = serde_json::json!({
            "apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "owner": "Local",
                "objectives": [{"type": "PodResource", "podResource": {"name": "cpu",
                    "value": {"type": "Utilization", "utilization": "high"}}}]},
            "status": {"conditions": [{"type": "Active", "status": "True"}]},
        });
        let u = decode(&object)
            .err()
            .unwrap_or_else(|| panic!("a string utilization decodes"));
        assert_eq!(u.field, "spec.objectives[0].podResource.value.utilization");
        assert_eq!(u.metadata.uid.as_deref(), Some("u"));
        assert_eq!(
            u.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .map(Vec::len),
            Some(1)
        );
        let i = u.invalid();
        assert_eq!(i.reason, reasons::INVALID_SPEC);
        assert!(
            i.message
                .starts_with("spec.objectives[0].podResource.value.utilization cannot be read: "),
            "{}",
            i.message
        );
        let mut good = object.clone();
        good["spec"]["objectives"][0]["podResource"]["value"]["utilization"] = serde_json::json!(60);
        assert!(decode(&good).is_ok());
        // A status that does not decode does not hide the spec's error.
        let mut both = object;
        both["status"] = serde_json::json!("broken");
        assert_eq!(decode(&both).err().map(|u| u.status), Some(None));
    }

    #[test]
    fn transitions_announce_a_stop_and_a_resume_once() {
        let cond =
            |status: &str, reason: Option<&str>, message: Option<&str>| DatadogPodAutoscalerCondition {
                type_: conditions::ACTIVE.into(),
                status: lazyscale_api::Word::new(status),
                last_transition_time: None,
                reason: reason.map(lazyscale_api::Word::new),
                message: message.map(Box::from),
            };
        let bad = Invalid::new(
            reasons::INVALID_SPEC,
            "constraints.maxReplicas 2 is below minReplicas 5",
        );
        // A new DPA, or one that was active, stops.
        assert_eq!(
            transition(&[], Some(&bad)),
            Some(Transition::Stopped(bad.clone()))
        );
        let active = [cond(conditions::STATUS_TRUE, None, None)];
        assert_eq!(
            transition(&active, Some(&bad)),
            Some(Transition::Stopped(bad.clone()))
        );
        // Blocked as before: nothing again.
        let blocked = [cond(
            conditions::STATUS_FALSE,
            Some(bad.reason),
            Some(&bad.message),
        )];
        assert_eq!(transition(&blocked, Some(&bad)), None);
        // Blocked for another reason or another field: a new stop.
        let other = Invalid::new(reasons::TARGET_NOT_FOUND, "Deployment web not found");
        assert_eq!(
            transition(&blocked, Some(&other)),
            Some(Transition::Stopped(other))
        );
        let field = Invalid::new(reasons::INVALID_SPEC, "another field");
        assert_eq!(
            transition(&blocked, Some(&field)),
            Some(Transition::Stopped(field))
        );
        // Acted on again: resumed, once.
        assert_eq!(
            transition(&blocked, None),
            Some(Transition::Resumed(reasons::INVALID_SPEC.to_owned()))
        );
        assert_eq!(transition(&active, None), None);
        assert_eq!(transition(&[], None), None);
    }

    #[test]
    fn limit_keeps_the_oldest() {
        let all = vec![
            (30, "b".into(), "x".into()),
            (10, "a".into(), "y".into()),
            (20, "a".into(), "z".into()),
            (10, "a".into(), "a".into()),
        ];
        let c = limit_cutoff(all.clone(), 2);
        assert_eq!(c, Cutoff::UpTo((10, "a".into(), "y".into())));
        let admitted: Vec<&str> = all
            .iter()
            .filter(|(t, ns, n)| c.admits(*t, ns, n))
            .map(|(_, _, n)| n.as_str())
            .collect();
        assert_eq!(admitted, ["y", "a"]);
        assert_eq!(limit_cutoff(all.clone(), 4), Cutoff::Everyone);
        assert_eq!(limit_cutoff(all.clone(), 0), Cutoff::Nobody);
        assert!(!Cutoff::Nobody.admits(0, "a", "a"));
        assert_eq!(limit_cutoff(Vec::new(), 0), Cutoff::Everyone);
    }

    proptest::proptest! {
        /// The cutoff admits exactly the `limit` oldest (by creation, namespace, name) of distinct
        /// autoscalers, as sorting them all and taking the first `limit` would.
        #[test]
        fn the_cutoff_admits_the_limit_oldest(
            all in proptest::collection::btree_set((0i64..5, "[ab]", "[a-d]"), 0..20),
            limit in 0usize..25,
        ) {
            let all: Vec<LimitKey> = all.into_iter().collect();
            let mut sorted = all.clone();
            sorted.sort();
            let oldest: HashSet<&LimitKey> = sorted.iter().take(limit).collect();
            let mut shuffled = all.clone();
            shuffled.reverse();
            let c = limit_cutoff(shuffled, limit);
            for k in &all {
                proptest::prop_assert_eq!(c.admits(k.0, &k.1, &k.2), oldest.contains(k), "{:?} {:?}", k, c);
            }
        }
    }
}
