//! Synthetic pods for the store and memory tests.

#![allow(dead_code)]
// Test fixtures: a fixture that does not decode is a broken test, and panicking says so.
#![allow(clippy::expect_used)]

use lazyscale_podcache::wire::PodWire;
use serde_json::{Value, json};

/// What a synthetic pod looks like.
#[derive(Clone, Debug)]
pub struct Spec<'a> {
    pub namespace: &'a str,
    pub deployment: &'a str,
    pub hash: &'a str,
    pub suffix: &'a str,
    pub uid: u128,
    pub ready: bool,
    pub cpu: &'a str,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Spec {
            namespace: "ns",
            deployment: "web",
            hash: "5d8f7c9b6a",
            suffix: "abcde",
            uid: 1,
            ready: true,
            cpu: "250m",
        }
    }
}

pub fn uid_string(uid: u128) -> String {
    let h = format!("{uid:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A pod of roughly the anchors' shape (labels, annotations, managedFields, two containers, status).
pub fn pod_json(s: &Spec<'_>) -> Value {
    let rs = format!("{}-{}", s.deployment, s.hash);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{rs}-{}", s.suffix),
            "generateName": format!("{rs}-"),
            "namespace": s.namespace,
            "uid": uid_string(s.uid),
            "resourceVersion": "100",
            "creationTimestamp": "2026-11-20T09:14:03Z",
            "labels": {
                "app": s.deployment, "pod-template-hash": s.hash,
                "app.kubernetes.io/name": s.deployment, "app.kubernetes.io/instance": s.deployment,
                "app.kubernetes.io/version": "1.2.3", "app.kubernetes.io/component": "api",
                "app.kubernetes.io/part-of": "shop", "app.kubernetes.io/managed-by": "Helm",
                "team": "payments", "tier": "backend", "env": "prod", "region": "eu-west-1"
            },
            "annotations": {
                "checksum/config": "9a1f4e2b7c3d8e5f6a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f",
                "checksum/secret": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
                "prometheus.io/scrape": "true", "prometheus.io/port": "9090",
                "kubectl.kubernetes.io/restartedAt": "2026-11-20T09:13:58Z",
                "owner": "payments", "runbook": "https://runbooks.example.com/web",
                "autoscaling.datadoghq.com/rec-id": "r1"
            },
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                "uid": "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}, "f:team": {}}},
                 "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {"f:image": {}, "f:resources": {}}}}}},
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "subresource": "status",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": {}, "f:phase": {}}}}
            ]
        },
        "spec": {
            "nodeName": format!("node-{}", s.uid % 50),
            "serviceAccountName": "default", "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
            "containers": [
                {"name": "app", "image": "registry.example.com/app:1.2.3",
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                 "resources": {"requests": {"cpu": s.cpu, "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}},
                {"name": "envoy", "image": "envoyproxy/envoy:v1.31.2",
                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}}
            ]
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": if s.ready { "True" } else { "False" }},
                {"type": "ContainersReady", "status": if s.ready { "True" } else { "False" }},
                {"type": "PodScheduled", "status": "True"}
            ],
            "hostIP": "10.0.0.1", "podIP": "10.244.0.2", "startTime": "2026-11-20T09:14:03Z", "qosClass": "Burstable",
            "containerStatuses": [
                {"name": "app", "ready": s.ready, "restartCount": 0, "image": "registry.example.com/app:1.2.3",
                 "containerID": "containerd://abc", "state": {"running": {"startedAt": "2026-11-20T09:14:06Z"}}},
                {"name": "envoy", "ready": s.ready, "restartCount": 0, "image": "envoyproxy/envoy:v1.31.2",
                 "containerID": "containerd://def", "state": {"running": {"startedAt": "2026-11-20T09:14:06Z"}}}
            ]
        }
    })
}

pub fn pod(s: &Spec<'_>) -> PodWire {
    serde_json::from_value(pod_json(s)).expect("synthetic pod decodes")
}

/// Deterministic 5-character pod suffix.
pub fn suffix(i: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = i;
    (0..5)
        .map(|_| {
            let c = ALPHABET[n % ALPHABET.len()] as char;
            n /= ALPHABET.len();
            c
        })
        .collect()
}
