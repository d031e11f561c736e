//! Validation of a DPA before it is acted on (dpa-system §2.3), and the per-cluster limit.
//!
//! Validation is pure: it sees the object and the controller's own identity, and returns the
//! condition reason and message of the first problem. The per-cluster limit keeps the oldest
//! autoscalers (by creation time, then namespace and name) active and disables the rest.

use std::collections::HashSet;

use lazyscale_api::consts::conditions::reasons;
use lazyscale_api::{DatadogPodAutoscaler, Objective, ObjectiveType};

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

/// The autoscalers within the limit: the `limit` oldest (ties broken by namespace and name).
pub fn within_limit(mut all: Vec<LimitKey>, limit: usize) -> HashSet<(String, String)> {
    all.sort_unstable();
    all.into_iter().take(limit).map(|(_, ns, n)| (ns, n)).collect()
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
    fn limit_keeps_the_oldest() {
        let all = vec![
            (30, "b".into(), "x".into()),
            (10, "a".into(), "y".into()),
            (20, "a".into(), "z".into()),
            (10, "a".into(), "a".into()),
        ];
        let ok = within_limit(all, 2);
        assert!(ok.contains(&("a".into(), "a".into())));
        assert!(ok.contains(&("a".into(), "y".into())));
        assert_eq!(ok.len(), 2);
    }
}
