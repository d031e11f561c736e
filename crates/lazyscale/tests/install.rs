//! The Helm chart (`deploy/helm/lazyscale`) against the real control plane: what `helm template` renders
//! is accepted by a server-side dry run, invalid values fail with the value named, every value is typed
//! and documented, the CRDs are the generated ones and the RBAC is `files/rbac.yaml`.
//!
//! helm is built from Go modules by `cargo xtask testenv build` (`lazyscale_testenv::helm`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use lazyscale_testenv::{TestEnv, error_chain, helm};
use serde_json::Value;

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/lazyscale")
}

fn helm(args: &[&str]) -> helm::Output {
    helm::run(args).unwrap_or_else(|e| panic!("helm: {}", error_chain(&e)))
}

/// `helm template lazyscale CHART --namespace NS EXTRA...`, as JSON objects.
fn render(namespace: &str, extra: &[&str]) -> Vec<Value> {
    render_release("lazyscale", namespace, extra)
}

/// `helm template RELEASE CHART --namespace NS EXTRA...`, as JSON objects.
fn render_release(release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
    ];
    args.extend_from_slice(extra);
    let out = helm(&args);
    assert!(out.success, "helm template failed: {}", out.stderr);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out.stdout).unwrap();
    docs.into_iter().filter(|d| d.is_object()).collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// Server-side dry run of every object (apply, dry-run All): admission, validation and RBAC
/// escalation checks run, nothing is stored.
async fn dry_run(client: &kube::Client, namespace: &str, objects: &[Value]) {
    for o in objects {
        let (group, version) = match o["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", o["apiVersion"].as_str().unwrap()),
        };
        let gvk = GroupVersionKind::gvk(group, version, o["kind"].as_str().unwrap());
        let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("{gvk:?} is not served: {e}"));
        let name = o["metadata"]["name"].as_str().unwrap();
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &ar),
            Scope::Cluster => Api::all_with(client.clone(), &ar),
        };
        api.patch(
            name,
            &PatchParams::apply("lazyscale-install-test").dry_run(),
            &Patch::Apply(o),
        )
        .await
        .unwrap_or_else(|e| panic!("the server refused {} {name}: {e}", gvk.kind));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rendered_manifests_pass_a_server_side_dry_run() {
    let env = TestEnv::shared();
    let ns = env.namespace().await;
    let client = env.client().await;
    // Another release name than the test control plane's own agent identity (`lazyscale`, the same
    // chart objects made by lazyscale_testenv::rbac), whose cluster-wide objects it would conflict with.
    let objects = render_release("dryrun", &ns, &[]);
    let kinds: BTreeSet<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    for k in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.contains(k), "the default release has no {k}: {kinds:?}");
    }
    // the default certificate is the agent's own (it makes its Secret at run time)
    assert!(of_kind(&objects, "Secret").is_empty());
    dry_run(&client, &ns, &objects).await;
    // the chart-generated certificate is a Secret of the release
    let helm_cert = render_release("dryrun", &ns, &["--set", "webhook.certificate.source=helm"]);
    assert_eq!(of_kind(&helm_cert, "Secret").len(), 1);
    dry_run(&client, &ns, &helm_cert).await;
    // Without CRDs, webhook and budget: what remains is still a valid release.
    let lean = render_release(
        "dryrun",
        &ns,
        &[
            "--set",
            "crds.install=false,webhook.enabled=false,podDisruptionBudget.enabled=false,dashboard.enabled=true",
        ],
    );
    assert!(of_kind(&lean, "CustomResourceDefinition").is_empty());
    assert!(of_kind(&lean, "Secret").is_empty());
    dry_run(&client, &ns, &lean).await;
}

#[test]
fn the_deployment_is_hardened_and_highly_available() {
    let objects = render("lazyscale", &[]);
    let d = of_kind(&objects, "Deployment")[0];
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert!(pod["affinity"]["podAntiAffinity"].is_object());
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["cpu"].is_string());
    let env = c["env"].as_array().unwrap();
    let pod_ns = env.iter().find(|e| e["name"] == "POD_NAMESPACE").unwrap();
    assert_eq!(pod_ns["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");
    assert_eq!(
        of_kind(&objects, "PodDisruptionBudget")[0]["spec"]["minAvailable"],
        1
    );
    // The agent's configuration names the webhook Service the chart creates.
    let config = of_kind(&objects, "ConfigMap")[0]["data"]["config.yaml"]
        .as_str()
        .unwrap();
    assert!(config.contains("serviceName: lazyscale-webhook"), "{config}");
    assert!(config.contains("serviceNamespace: lazyscale"), "{config}");
    // by default the agent manages its certificate: no mounted Secret, validity from the values
    assert!(
        config.contains("mode: agent") && config.contains("validitySeconds: 7776000"),
        "{config}"
    );
    assert!(!config.contains("certFile"), "{config}");
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["name"] != "tls")
    );
    let cm = render("lazyscale", &["--set", "webhook.certificate.source=certManager"]);
    let config = of_kind(&cm, "ConfigMap")[0]["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        config.contains("mode: files") && config.contains("certFile: /etc/lazyscale/tls/tls.crt"),
        "{config}"
    );
    assert_eq!(of_kind(&cm, "Certificate").len(), 1);
    let pod = &of_kind(&cm, "Deployment")[0]["spec"]["template"]["spec"];
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "tls")
    );
    let services: Vec<&str> = of_kind(&objects, "Service")
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(services.contains(&"lazyscale-webhook"), "{services:?}");
}

#[test]
fn invalid_values_fail_with_the_value_named() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    for (set, named) in [
        ("replicas=two", "/replicas"),
        ("webhook.port=70000", "/webhook/port"),
        ("webhook.certificate.source=vault", "/webhook/certificate/source"),
        ("logFormat=xml", "/logFormat"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("image.repository=", "/image/repository"),
        (
            "autoscaling.gracePeriodSeconds=-1",
            "/autoscaling/gracePeriodSeconds",
        ),
    ] {
        let out = helm(&["template", "lazyscale", chart, "--set", set]);
        assert!(!out.success, "--set {set} was accepted");
        assert!(
            out.stderr.contains("schema") && out.stderr.contains(named),
            "--set {set}: the error does not name {named}:\n{}",
            out.stderr
        );
    }
    // A misspelt key is refused too (additionalProperties: false).
    let out = helm(&["template", "lazyscale", chart, "--set", "replica=3"]);
    assert!(!out.success && out.stderr.contains("replica"), "{}", out.stderr);
}

/// Every leaf of `values.yaml` (maps are walked, lists and empty maps are leaves), as `a.b.c`.
fn leaves(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v.as_object() {
        Some(m) if !m.is_empty() && prefix != "resources" && !prefix.ends_with("labels") => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&p, v, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn every_value_is_typed_and_documented() {
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap()).unwrap();
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart().join("values.schema.json")).unwrap()).unwrap();
    let readme = std::fs::read_to_string(chart().join("README.md")).unwrap();
    let mut paths = Vec::new();
    leaves("", &values, &mut paths);
    assert!(paths.len() > 30, "{paths:?}");
    for p in &paths {
        assert!(
            readme.contains(&format!("| `{p}` |")),
            "{p} is not in the chart README"
        );
        let mut s = &schema;
        for part in p.split('.') {
            s = &s["properties"][part];
        }
        assert!(s.is_object(), "{p} is not in values.schema.json");
    }
}

fn numbers_as_f64(v: Value) -> Value {
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_f64).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, numbers_as_f64(v))).collect()),
        v => v,
    }
}

#[test]
fn the_chart_crds_are_the_generated_ones() {
    // files/crds.yaml links to deploy/crds/lazyscale-crds.yaml, which crates/lazyscale-api checks
    // against the types; here: the link resolves to it, and the rendered CRDs have the generated specs.
    let linked = std::fs::read_to_string(chart().join("files/crds.yaml")).unwrap();
    assert_eq!(
        linked,
        lazyscale_api::crds_yaml().unwrap(),
        "files/crds.yaml is stale"
    );
    let objects = render("lazyscale", &[]);
    let rendered = of_kind(&objects, "CustomResourceDefinition");
    // Compared as parsed YAML, numbers as numbers (the generated file says `100.0`, helm's `toYaml` `100`).
    let generated: Vec<Value> = serde_saphyr::from_multiple(&linked).unwrap();
    assert_eq!(rendered.len(), generated.len());
    for want in generated {
        let got = rendered
            .iter()
            .find(|r| r["metadata"]["name"] == want["metadata"]["name"])
            .unwrap();
        assert_eq!(
            numbers_as_f64(got["spec"].clone()),
            numbers_as_f64(want["spec"].clone()),
            "{}",
            want["metadata"]["name"]
        );
        assert_eq!(
            got["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "CRDs are kept on uninstall by default"
        );
    }
    let out = render("lazyscale", &["--set", "crds.keep=false"]);
    assert!(of_kind(&out, "CustomResourceDefinition")[0]["metadata"]["annotations"].is_null());
}

#[test]
fn the_rbac_is_the_rules_file() {
    let rules: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart().join("files/rbac.yaml")).unwrap()).unwrap();
    let objects = render("lazyscale", &[]);
    assert_eq!(of_kind(&objects, "ClusterRole")[0]["rules"], rules["cluster"]);
    assert_eq!(of_kind(&objects, "Role")[0]["rules"], rules["namespace"]);
    // No wildcard anywhere.
    for r in rules["cluster"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rules["namespace"].as_array().unwrap())
    {
        for key in ["apiGroups", "resources", "verbs"] {
            assert!(
                !r[key].as_array().unwrap().iter().any(|v| v == "*"),
                "wildcard in {r}"
            );
        }
    }
}

/// The `lazyscale_*` metric names in `text` (base names: `_total` and label sets stripped).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("lazyscale_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.insert(name.clone());
        rest = &rest[i + name.len()..];
    }
    out
}

#[test]
fn the_dashboard_and_alerts_query_only_metrics_the_agent_exports() {
    let readme = std::fs::read_to_string(chart().join("../../../README.md")).unwrap();
    let documented: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `lazyscale_"))
        .filter_map(|l| l.split('`').next())
        .map(|n| format!("lazyscale_{n}"))
        .collect();
    assert!(documented.len() > 10, "{documented:?}");
    let dashboard = std::fs::read_to_string(chart().join("files/dashboard.json")).unwrap();
    let parsed: Value = serde_json::from_str(&dashboard).unwrap();
    assert!(parsed["panels"].as_array().unwrap().len() >= 8);
    let objects = render(
        "lazyscale",
        &["--set", "dashboard.enabled=true,prometheusRule.enabled=true"],
    );
    let cm = of_kind(&objects, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "lazyscale-dashboard")
        .unwrap();
    let shipped: Value = serde_json::from_str(cm["data"]["lazyscale.json"].as_str().unwrap()).unwrap();
    assert_eq!(
        shipped, parsed,
        "the ConfigMap holds deploy/dashboards/lazyscale.json"
    );
    let rules = serde_json::to_string(&of_kind(&objects, "PrometheusRule")[0]["spec"]).unwrap();
    for (what, text) in [("dashboard", dashboard.as_str()), ("alerts", rules.as_str())] {
        let used = metric_names(text);
        assert!(used.len() >= 4, "{what}: {used:?}");
        for name in used {
            // counters end in _total, histograms are queried through _bucket, _sum and _count
            let base = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(
                documented.contains(&name) || documented.contains(base),
                "the {what} queries {name}, which the README's metric table does not list"
            );
        }
    }
}
