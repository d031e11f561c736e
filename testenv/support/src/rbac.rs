//! The agent's identity on the test control plane: the Helm chart's ServiceAccount under the chart's own
//! RBAC (`deploy/helm/lazyscale/files/rbac.yaml`, embedded at compile time), authenticated with a
//! `TokenRequest` token, so every end-to-end test proves that what the chart grants is enough.
//!
//! [`grant`] makes a ServiceAccount, a ClusterRole and a Role from a [`Rules`] and binds them (the
//! chart's objects, with the chart's rules); [`token`] asks the API server for a token of it. Tests that
//! prove a rule is needed grant [`Rules::without`] it to a second ServiceAccount.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::json;

use crate::{Error, Result};

/// The chart's rules file.
pub const RULES_FILE: &str = include_str!("../../../deploy/helm/lazyscale/files/rbac.yaml");

/// The namespace the agent runs in on the test control plane (its Lease lives there: the agent's
/// default lease namespace outside a pod is `default`).
pub const AGENT_NAMESPACE: &str = "default";

/// The agent's ServiceAccount (the chart's name for a release called `lazyscale`).
pub const AGENT_SERVICE_ACCOUNT: &str = "lazyscale";

/// How long the agent's token is valid: longer than any test run or `testenv up` session.
pub const TOKEN_SECONDS: i64 = 7 * 24 * 3600;

/// The user name the API server gives a ServiceAccount's token.
pub fn username(namespace: &str, service_account: &str) -> String {
    format!("system:serviceaccount:{namespace}:{service_account}")
}

/// The user name of the agent's identity (what the audit log records).
pub fn agent_username() -> String {
    username(AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT)
}

/// The chart's rules: cluster-wide (ClusterRole) and in the agent's namespace (Role).
#[derive(Debug, Clone, Deserialize)]
pub struct Rules {
    /// The ClusterRole's rules.
    pub cluster: Vec<PolicyRule>,
    /// The Role's rules.
    pub namespace: Vec<PolicyRule>,
}

impl Rules {
    /// The chart's rules, from `files/rbac.yaml`.
    pub fn chart() -> Result<Rules> {
        serde_saphyr::from_str(RULES_FILE).map_err(|e| {
            Error::NotReady(format!(
                "deploy/helm/lazyscale/files/rbac.yaml is not a rules file: {e}"
            ))
        })
    }

    /// These rules without every rule that names `resource` (`mutatingwebhookconfigurations`,
    /// `deployments/scale`, `leases`, ...); the count of rules removed is returned too.
    pub fn without(&self, resource: &str) -> (Rules, usize) {
        let keep = |r: &PolicyRule| {
            !r.resources
                .as_ref()
                .is_some_and(|rs| rs.iter().any(|x| x == resource))
        };
        let cluster: Vec<PolicyRule> = self.cluster.iter().filter(|r| keep(r)).cloned().collect();
        let namespace: Vec<PolicyRule> = self.namespace.iter().filter(|r| keep(r)).cloned().collect();
        let removed = self.cluster.len() + self.namespace.len() - cluster.len() - namespace.len();
        (Rules { cluster, namespace }, removed)
    }
}

/// Creates (server-side apply, idempotent) the ServiceAccount `name` in `namespace`, a ClusterRole and a
/// Role named `name` with `rules`, and their bindings to it — what the chart installs.
pub async fn grant(client: &kube::Client, namespace: &str, name: &str, rules: &Rules) -> Result<()> {
    let pp = PatchParams::apply("lazyscale-testenv").force();
    let labels = json!({"app.kubernetes.io/name": "lazyscale"});
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace, "labels": labels}});
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .patch(name, &pp, &Patch::Apply(&sa))
        .await?;
    let subject = json!([{"kind": "ServiceAccount", "name": name, "namespace": namespace}]);
    let role_ref = |kind: &str| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name});
    let cluster_role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels}, "rules": rules.cluster});
    let cluster_binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": labels}, "roleRef": role_ref("ClusterRole"), "subjects": subject});
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": name, "namespace": namespace, "labels": labels}, "rules": rules.namespace});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "roleRef": role_ref("Role"), "subjects": subject});
    use k8s_openapi::api::rbac::v1 as rbac;
    Api::<rbac::ClusterRole>::all(client.clone())
        .patch(name, &pp, &Patch::Apply(&cluster_role))
        .await?;
    Api::<rbac::ClusterRoleBinding>::all(client.clone())
        .patch(name, &pp, &Patch::Apply(&cluster_binding))
        .await?;
    Api::<rbac::Role>::namespaced(client.clone(), namespace)
        .patch(name, &pp, &Patch::Apply(&role))
        .await?;
    Api::<rbac::RoleBinding>::namespaced(client.clone(), namespace)
        .patch(name, &pp, &Patch::Apply(&binding))
        .await?;
    Ok(())
}

/// A token of the ServiceAccount `name` in `namespace` (`TokenRequest`), valid `seconds`.
pub async fn token(client: &kube::Client, namespace: &str, name: &str, seconds: i64) -> Result<String> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(seconds),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let api = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    let issued: TokenRequest = api
        .create_subresource("token", name, &PostParams::default(), &request)
        .await?;
    issued
        .status
        .map(|s| s.token)
        .ok_or_else(|| Error::NotReady(format!("the TokenRequest for {namespace}/{name} has no status")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_rules_parse_and_one_can_be_removed() {
        let rules = Rules::chart().unwrap();
        assert!(rules.cluster.len() > 10);
        assert!(
            rules
                .namespace
                .iter()
                .any(|r| r.resources.as_ref().unwrap().contains(&"leases".to_string()))
        );
        let (without, removed) = rules.without("mutatingwebhookconfigurations");
        assert_eq!(removed, 1);
        assert_eq!(without.cluster.len(), rules.cluster.len() - 1);
        assert_eq!(rules.without("no-such-resource").1, 0);
    }
}
