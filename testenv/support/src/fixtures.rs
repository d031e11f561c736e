//! Objects the tests, the demo and the benchmarks create: Deployments and StatefulSets of the shape the
//! simulator drives, DPA specs, and typed handles on lazyscale's resources.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DynamicObject, ObjectMeta, PostParams};
use kube::core::ApiResource;
use lazyscale_api::DatadogPodAutoscaler;

use crate::{Error, Result, try_wait_for};

/// The DatadogPodAutoscaler resource, for dynamic clients.
pub fn dpa_resource() -> ApiResource {
    ApiResource::erase::<DatadogPodAutoscaler>(&())
}

/// DPAs of a namespace through a dynamic client (tests that write fields the typed struct would drop).
pub fn dpa_api(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, ns, &dpa_resource())
}

/// The agent's MutatingWebhookConfiguration, if registered.
///
/// # Errors
/// When the API server cannot be read.
pub async fn webhook_configuration(client: &kube::Client) -> Result<Option<DynamicObject>> {
    let api = Api::<DynamicObject>::all_with(
        client.clone(),
        &ApiResource::erase::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>(&()),
    );
    Ok(api.get_opt(lazyscale_api::consts::WEBHOOK_CONFIGURATION).await?)
}

fn from_yaml<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_saphyr::from_str(text).map_err(|e| Error::NotReady(format!("fixture {what}: {e}")))
}

/// A Deployment `name` in `ns` with `replicas` pods of one container `app` (requests 100m / 64Mi,
/// limits 500m / 128Mi), selected by `app: <name>`. `template_metadata` is inserted under the pod
/// template's `metadata:` (YAML indented by 6 spaces, e.g. `"      annotations: {a: b}"`), or empty.
///
/// # Errors
/// When `template_metadata` makes the YAML invalid.
pub fn deployment(ns: &str, name: &str, replicas: i32, template_metadata: &str) -> Result<Deployment> {
    from_yaml(
        "deployment",
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
{template_metadata}
    spec:
      containers:
        - name: app
          image: example/app:1
          resources:
            requests: {{cpu: 100m, memory: 64Mi}}
            limits: {{cpu: 500m, memory: 128Mi}}
"#
        ),
    )
}

/// A Deployment `name` (namespace left to the API handle) with `replicas` pods of one container `app`
/// requesting `cpu` and `memory` (no limits), selected by `app: <name>`: the shape the horizontal and
/// vertical tests and the reconcile benchmark autoscale.
pub fn app_deployment(name: &str, replicas: i32, cpu: &str, memory: &str) -> Deployment {
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    let labels: std::collections::BTreeMap<String, String> = [("app".to_owned(), name.to_owned())].into();
    let requests = [
        ("cpu".to_owned(), Quantity(cpu.to_owned())),
        ("memory".to_owned(), Quantity(memory.to_owned())),
    ];
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".into(),
                        image: Some("registry.k8s.io/pause:3.10".into()),
                        resources: Some(ResourceRequirements {
                            requests: Some(requests.into()),
                            ..ResourceRequirements::default()
                        }),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// A StatefulSet `name` in `ns` with `replicas` pods of one container `db` (requests 100m / 64Mi).
///
/// # Errors
/// Never for valid names; the YAML is fixed.
pub fn statefulset(ns: &str, name: &str, replicas: i32) -> Result<StatefulSet> {
    from_yaml(
        "statefulset",
        &format!(
            r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  serviceName: {name}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: db
          image: example/db:1
          resources:
            requests: {{cpu: 100m, memory: 64Mi}}
"#
        ),
    )
}

/// A horizontal DPA spec over Deployment `target`: CPU utilization `utilization` %, between `min` and
/// `max` replicas, recommendations computed locally.
pub fn horizontal_spec(target: &str, utilization: i32, min: i32, max: i32) -> serde_json::Value {
    serde_json::json!({
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
        "owner": "Local",
        "constraints": {"minReplicas": min, "maxReplicas": max},
        "objectives": [{"type": "PodResource", "podResource": {"name": "cpu", "value": {"type": "Utilization", "utilization": utilization}}}],
        "fallback": {"horizontal": {"direction": "All"}},
    })
}

/// A whole DPA object (`apiVersion`, `kind`, `metadata`, `spec`) for server-side apply.
pub fn dpa_object(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": lazyscale_api::consts::API_VERSION,
        "kind": lazyscale_api::consts::DPA_KIND,
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    })
}

/// The condition `type_` of a DPA: (status, reason).
pub fn condition(d: &DatadogPodAutoscaler, type_: &str) -> Option<(String, Option<String>)> {
    d.status
        .as_ref()?
        .condition(type_)
        .map(|c| (c.status.to_string(), c.reason.as_ref().map(ToString::to_string)))
}

/// How long [`ensure_namespace`] waits for the namespace's `default` ServiceAccount.
const SERVICE_ACCOUNT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Creates `namespace` unless it exists and waits for its `default` ServiceAccount (the ServiceAccount
/// admission plugin refuses pods until kube-controller-manager has made it).
///
/// # Errors
/// When the namespace cannot be read or created, or its ServiceAccount does not appear within 30 s.
pub async fn ensure_namespace(client: &kube::Client, namespace: &str) -> Result<()> {
    let namespaces = Api::<Namespace>::all(client.clone());
    if namespaces.get_opt(namespace).await?.is_none() {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        match namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            // another test of the process made it meanwhile
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    try_wait_for(SERVICE_ACCOUNT_WAIT, || async {
        sas.get_opt("default").await.ok().flatten()
    })
    .await
    .map(drop)
    .ok_or_else(|| {
        Error::NotReady(format!(
            "no default ServiceAccount in {namespace} after {}s (is kube-controller-manager running?)",
            SERVICE_ACCOUNT_WAIT.as_secs()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_fixture_decodes_with_template_metadata() {
        let d = deployment("ns", "web", 3, "      annotations: {a: b}").unwrap();
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        let meta = spec.template.metadata.unwrap();
        assert_eq!(meta.annotations.unwrap()["a"], "b");
        assert_eq!(meta.labels.unwrap()["app"], "web");
    }

    #[test]
    fn app_deployment_requests_what_it_is_told() {
        let d = app_deployment("api", 2, "200m", "64Mi");
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let c = &spec.template.spec.unwrap().containers[0];
        let req = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
        assert_eq!(req["cpu"].0, "200m");
        assert_eq!(req["memory"].0, "64Mi");
        assert_eq!(spec.selector.match_labels.unwrap()["app"], "api");
    }

    #[test]
    fn statefulset_fixture_decodes() {
        let s = statefulset("ns", "db", 2).unwrap();
        assert_eq!(s.spec.unwrap().service_name.as_deref(), Some("db"));
    }

    #[test]
    fn dpa_object_parses_as_a_dpa() {
        let obj = dpa_object("ns", "web", horizontal_spec("web", 60, 1, 5));
        let d: DatadogPodAutoscaler = serde_json::from_value(obj).unwrap();
        assert_eq!(d.metadata.name.as_deref(), Some("web"));
    }
}
