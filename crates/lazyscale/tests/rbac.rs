//! The agent under the Helm chart's RBAC on the real control plane: authenticated as the chart's
//! ServiceAccount with a `TokenRequest` token (`lazyscale_testenv::rbac`), its whole stack runs with no
//! request refused, and of two replicas exactly one reports `lazyscale_leader 1` (the Lease holder; the
//! other takes over when it stops); without one rule of the chart a named behaviour fails while the
//! agent keeps serving, logs the verb and resource and counts them in
//! `lazyscale_permission_denied_total`; and the in-cluster configuration path (token file, CA file,
//! `KUBERNETES_SERVICE_HOST`) works.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use lazyscale_testenv::{TestEnv, rbac};
use serde_json::{Value, json};

/// The agents of these tests share the webhook configuration's name and the Lease: one at a time.
static ONE_AGENT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Agent {
    child: Child,
    admin: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SIGTERM: the agent removes its webhook configuration and releases its Lease.
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf.split_once("\r\n\r\n")?.1.to_string()))
}

impl Agent {
    /// Starts `command` (which ends in the agent's `run`) with the admin and webhook flags, logging to
    /// a file, and waits for `/readyz`.
    fn start(mut command: Command, dir: tempfile::TempDir) -> Agent {
        let admin = free_port();
        let webhook = free_port();
        let log = dir.path().join("agent.log");
        command
            .arg(format!("--admin-address=127.0.0.1:{admin}"))
            .arg(format!("--webhook-address=127.0.0.1:{webhook}"))
            .arg("--self-signed")
            .arg(format!("--webhook-url=https://127.0.0.1:{webhook}"))
            .arg("--horizontal-period-seconds=2")
            .arg("--vertical-period-seconds=2")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = command.spawn().unwrap();
        let mut agent = Agent {
            child,
            admin,
            log,
            _dir: dir,
        };
        let start = Instant::now();
        while http_get(admin, "/readyz").map(|(c, _)| c) != Some(200) {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("the agent exited ({status}):\n{}", agent.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "agent not ready:\n{}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    /// The agent with `kubeconfig`.
    fn with_kubeconfig(kubeconfig: &Path) -> Agent {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lazyscale"));
        c.arg("run").arg("--kubeconfig").arg(kubeconfig);
        Agent::start(c, tempfile::tempdir().unwrap())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, body) = http_get(self.admin, "/metrics").unwrap();
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                (k == name).then(|| v.parse().ok()).flatten()
            })
            .unwrap_or(0.0)
    }
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The CRDs (server-side apply: idempotent across the tests of this process), established.
async fn install_crds(client: &kube::Client) {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in lazyscale_api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("rbac-test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
        let api = api.clone();
        wait_until("the CRD to be established", Duration::from_secs(20), || {
            let (api, name) = (api.clone(), name.clone());
            async move {
                api.get(&name).await.ok().and_then(|c| c.status).is_some_and(|s| {
                    s.conditions
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
            }
        })
        .await;
    }
}

/// A Deployment `web` with one pod and a DPA on it, in `ns`.
async fn autoscaled_workload(client: &kube::Client, ns: &str) {
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "nginx",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch("web", &PatchParams::apply("rbac-test"), &Patch::Apply(&d))
        .await
        .unwrap();
    let dpa = json!({"apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"owner": "Local", "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "objectives": [{"type": "PodResource", "podResource": {"name": "cpu",
                "value": {"type": "Utilization", "utilization": 70}}}]}});
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("datadoghq.com", "v1alpha2", "DatadogPodAutoscaler"),
        "datadogpodautoscalers",
    );
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
        .patch("web", &PatchParams::apply("rbac-test"), &Patch::Apply(&dpa))
        .await
        .unwrap();
}

async fn webhook_configuration(client: &kube::Client) -> Option<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
        ),
        "mutatingwebhookconfigurations",
    );
    Api::<DynamicObject>::all_with(client.clone(), &ar)
        .get_opt(lazyscale::webhook::CONFIGURATION_NAME)
        .await
        .unwrap()
}

/// The agent's requests the API server refused (403), from the audit log: `verb resource/sub`.
fn refused(env: &TestEnv) -> Vec<String> {
    let text = std::fs::read_to_string(env.server().dir().join("audit.log")).unwrap_or_default();
    let user = rbac::agent_username();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["user"]["username"] == user.as_str() && v["responseStatus"]["code"] == 403)
        .map(|v| {
            format!(
                "{} {}/{}/{}",
                v["verb"].as_str().unwrap_or_default(),
                v["objectRef"]["apiGroup"].as_str().unwrap_or_default(),
                v["objectRef"]["resource"].as_str().unwrap_or_default(),
                v["objectRef"]["subresource"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_stack_runs_under_the_chart_rbac_with_no_request_refused() {
    let _one = ONE_AGENT.lock().await;
    let env = TestEnv::shared();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = env.namespace().await;
    let agent = Agent::with_kubeconfig(env.agent_kubeconfig_path());
    let other = Agent::with_kubeconfig(env.agent_kubeconfig_path());
    autoscaled_workload(&client, &ns).await;
    // The stack: pod cache, webhook registration, Lease, controller, vertical loop, profiles.
    wait_until("the webhook configuration", Duration::from_secs(30), || async {
        webhook_configuration(&client).await.is_some()
    })
    .await;
    let leases = Api::<Lease>::namespaced(client.clone(), rbac::AGENT_NAMESPACE);
    wait_until("the Lease", Duration::from_secs(30), || {
        let leases = leases.clone();
        async move {
            leases
                .get_opt(lazyscale_api::consts::LEASE_NAME)
                .await
                .ok()
                .flatten()
                .and_then(|l| l.spec?.holder_identity)
                .is_some()
        }
    })
    .await;
    assert!(env.agent_requests("LIST", "pods") + env.agent_requests("WATCH", "pods") > 0);
    // Two replicas: exactly one reports lazyscale_leader 1, the holder of the Lease.
    let holder = || {
        let leases = leases.clone();
        async move {
            leases
                .get_opt(lazyscale_api::consts::LEASE_NAME)
                .await
                .ok()
                .flatten()
                .and_then(|l| l.spec?.holder_identity)
                .unwrap_or_default()
        }
    };
    wait_until(
        "exactly one lazyscale_leader 1",
        Duration::from_secs(30),
        || async {
            let (a, b) = (agent.metric("lazyscale_leader"), other.metric("lazyscale_leader"));
            (a, b) == (1.0, 0.0) || (a, b) == (0.0, 1.0)
        },
    )
    .await;
    let (leader, follower) = if agent.metric("lazyscale_leader") == 1.0 {
        (agent, other)
    } else {
        (other, agent)
    };
    wait_until("a reconcile by the leader", Duration::from_secs(30), || async {
        leader.metric("lazyscale_controller_operations_total{op=\"Reconcile\"}") > 0.0
    })
    .await;
    let identity = holder().await;
    assert!(
        identity.ends_with(&format!("-{}", leader.child.id())),
        "the Lease holder {identity} is the replica reporting lazyscale_leader 1 (pid {})",
        leader.child.id()
    );
    // The leader stops (releasing the Lease): the other replica takes over and says so.
    drop(leader);
    wait_until("the other replica leading", Duration::from_secs(30), || async {
        follower.metric("lazyscale_leader") == 1.0
            && holder().await.ends_with(&format!("-{}", follower.child.id()))
    })
    .await;
    let agent = follower;
    let refused = refused(env);
    assert!(
        refused.is_empty(),
        "the chart's RBAC refused the agent: {refused:?}\n{}",
        agent.log_text()
    );
    drop(agent);
    wait_until(
        "the webhook configuration to go",
        Duration::from_secs(20),
        || async { webhook_configuration(&client).await.is_none() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_webhook_rule_no_pod_is_mutated_and_the_agent_says_why() {
    let _one = ONE_AGENT.lock().await;
    let env = TestEnv::shared();
    let client = env.client().await;
    install_crds(&client).await;
    let (rules, removed) = rbac::Rules::chart()
        .unwrap()
        .without("mutatingwebhookconfigurations");
    assert_eq!(removed, 1);
    let name = "lazyscale-no-webhook-rule";
    rbac::grant(&client, rbac::AGENT_NAMESPACE, name, &rules)
        .await
        .unwrap();
    let kubeconfig = env
        .server()
        .service_account_kubeconfig(&client, rbac::AGENT_NAMESPACE, name)
        .await
        .unwrap();
    let agent = Agent::with_kubeconfig(&kubeconfig);
    let ns = env.namespace().await;
    autoscaled_workload(&client, &ns).await;
    wait_until("the stack", Duration::from_secs(30), || async {
        agent.metric("lazyscale_gate_open") == 1.0
    })
    .await;
    // The log names the verb and the resource the API server refused.
    let refusal = "cannot patch resource \"mutatingwebhookconfigurations\" in API group \"admissionregistration.k8s.io\"";
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agent.log_text().contains(refusal) {
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The agent's own log line and counter name the verb and the resource, and nothing else was
    // refused: only the one rule is missing.
    wait_until(
        "the refusal in the agent's log",
        Duration::from_secs(10),
        || async {
            agent.log_text().lines().any(|l| {
                l.contains("RBAC is missing a permission")
                    && l.contains("verb=Patch")
                    && l.contains("resource=WebhookConfigurations")
            })
        },
    )
    .await;
    assert!(
        agent.metric("lazyscale_permission_denied_total{verb=\"Patch\",resource=\"WebhookConfigurations\"}")
            >= 1.0
    );
    let denied: Vec<String> = http_get(agent.admin, "/metrics")
        .unwrap()
        .1
        .lines()
        .filter(|l| l.starts_with("lazyscale_permission_denied_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
        .collect();
    assert!(
        denied
            .iter()
            .all(|series| series.contains("resource=\"WebhookConfigurations\"")),
        "refusals beyond the removed rule: {denied:?}"
    );
    // The named behaviour that fails: the webhook is never registered, so new pods are not right-sized.
    assert!(webhook_configuration(&client).await.is_none());
    // Everything else keeps serving.
    assert_eq!(http_get(agent.admin, "/readyz").map(|(c, _)| c), Some(200));
    wait_until("a reconcile", Duration::from_secs(30), || async {
        agent.metric("lazyscale_controller_operations_total{op=\"Reconcile\"}") > 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_runs_with_the_in_cluster_configuration() {
    let _one = ONE_AGENT.lock().await;
    let env = TestEnv::shared();
    let client = env.client().await;
    install_crds(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let token = rbac::token(&client, rbac::AGENT_NAMESPACE, rbac::AGENT_SERVICE_ACCOUNT, 3600)
        .await
        .unwrap();
    std::fs::write(dir.path().join("token"), token).unwrap();
    let kc = kube::config::Kubeconfig::read_from(env.kubeconfig_path()).unwrap();
    let ca = kc.clusters[0]
        .cluster
        .as_ref()
        .unwrap()
        .certificate_authority
        .clone()
        .unwrap();
    std::fs::copy(ca, dir.path().join("ca.crt")).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    // The kubelet's projected volume is at a fixed path: in a private mount namespace a tmpfs on /run
    // (= /var/run) holds the token and the CA there, seen by the agent only.
    let script = format!(
        "set -e; mount -t tmpfs lazyscale-test /run; d=/run/secrets/kubernetes.io/serviceaccount; \
         mkdir -p $d; cp '{0}/token' '{0}/ca.crt' $d/; printf default > $d/namespace; exec \"$@\"",
        dir.path().display()
    );
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "agent",
    ])
    .arg(env!("CARGO_BIN_EXE_lazyscale"))
    .arg("run")
    .env_remove("KUBECONFIG")
    .env_remove("LAZYSCALE_KUBECONFIG")
    .env("HOME", &home)
    .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    .env("KUBERNETES_SERVICE_PORT", env.server().port().to_string())
    .env("POD_NAMESPACE", rbac::AGENT_NAMESPACE);
    let before = env.agent_requests("LIST", "datadoghq.com/datadogpodautoscalers");
    let agent = Agent::start(c, dir);
    // Ready means every autoscaler watch has listed, as the ServiceAccount (the audit log says who).
    assert!(env.agent_requests("LIST", "datadoghq.com/datadogpodautoscalers") > before);
    assert!(
        agent.log_text().contains("connected to the API server"),
        "{}",
        agent.log_text()
    );
}
