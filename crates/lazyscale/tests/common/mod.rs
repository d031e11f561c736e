//! Helpers shared by the agent's end-to-end tests: the agent binary as a child process, its metrics, and
//! cluster set-up.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use lazyscale_testenv::Server;

pub struct Agent {
    child: Child,
    pub admin: u16,
    pub webhook: u16,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf.split_once("\r\n\r\n")?.1.to_string()))
}

impl Agent {
    pub fn start(server: &Server, args: &[&str]) -> Agent {
        let admin = free_port();
        let webhook = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_lazyscale"))
            .arg("run")
            .arg("--kubeconfig")
            // The agent's own identity: its requests are counted from the audit log.
            .arg(server.agent_kubeconfig_path())
            .arg(format!("--admin-address=127.0.0.1:{admin}"))
            .arg(format!("--webhook-address=127.0.0.1:{webhook}"))
            .arg("--self-signed")
            .arg(format!("--webhook-url=https://127.0.0.1:{webhook}"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let agent = Agent {
            child,
            admin,
            webhook,
        };
        let start = Instant::now();
        while http_get(admin, "/readyz").map(|(c, _)| c) != Some(200) {
            assert!(start.elapsed() < Duration::from_secs(30), "agent not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    pub fn metrics(&self) -> HashMap<String, f64> {
        let (_, body) = http_get(self.admin, "/metrics").unwrap();
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }

    pub fn metric(&self, name: &str) -> f64 {
        self.metrics().get(name).copied().unwrap_or(0.0)
    }

    pub async fn wait_metric(&self, name: &str, value: f64, timeout: Duration) {
        let start = Instant::now();
        loop {
            let v = self.metric(name);
            if v == value {
                return;
            }
            assert!(start.elapsed() < timeout, "{name} stayed {v}, expected {value}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn dpa_api(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client,
        ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("datadoghq.com", "v1alpha2", "DatadogPodAutoscaler"),
            "datadogpodautoscalers",
        ),
    )
}

pub async fn install_crds(client: &kube::Client) {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in lazyscale_api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        api.create(&PostParams::default(), &crd).await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(20),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap()
        .unwrap();
    }
}

/// The agent's pod LIST and WATCH requests so far (kube-controller-manager, the scheduler and kwok
/// list and watch pods too; the audit log tells the agent's apart).
pub async fn pod_requests(server: &Server, _client: &kube::Client) -> (u64, u64) {
    (
        server.agent_requests("LIST", "pods"),
        server.agent_requests("WATCH", "pods"),
    )
}

pub async fn webhook_configuration(client: &kube::Client) -> Option<DynamicObject> {
    Api::<DynamicObject>::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(
                "admissionregistration.k8s.io",
                "v1",
                "MutatingWebhookConfiguration",
            ),
            "mutatingwebhookconfigurations",
        ),
    )
    .get_opt("lazyscale-pod-autoscaling")
    .await
    .unwrap()
}
