//! Fuzz target: the full admission decision (the stack is up): the AdmissionReview decoded, the pod's
//! owner resolved, autoscalers looked up and the JSON patch built ([`lazyscale_vertical::mutate`]), and
//! the webhook's answer around it ([`lazyscale::webhook::decide`]). Invariants: no panic, and every
//! patch applies cleanly to the pod it was built for (RFC 6902, as the API server applies it).
#![no_main]

use std::sync::LazyLock;

use lazyscale::webhook::{Decision, Mutator, decide};
use lazyscale_api::DatadogPodAutoscaler;
use lazyscale_vertical::{Autoscaler, AutoscalerIndex, Outcome, mutate};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// A DPA with a vertical recommendation for two containers of Deployment `web`.
fn dpa(name: &str, kind: &str, target: &str, mode: &str) -> DatadogPodAutoscaler {
    serde_json::from_value(json!({
        "apiVersion": "datadoghq.com/v1alpha2",
        "kind": "DatadogPodAutoscaler",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
            "owner": "Local",
            "applyPolicy": {"mode": mode},
            "constraints": {"containers": [
                {"name": "app", "minAllowed": {"cpu": "100m"}, "maxAllowed": {"memory": "2Gi"}}
            ]}
        },
        "status": {"vertical": {"target": {
            "source": "Local",
            "generatedAt": "2026-11-20T09:14:03Z",
            "version": "6b1d3e5c0f9a2b47",
            "desiredResources": [
                {"name": "app", "requests": {"cpu": "250m", "memory": "512Mi"},
                 "limits": {"memory": "1Gi"}, "runtime": {"gomemlimit": "966367641"}},
                {"name": "istio-proxy", "requests": {"cpu": "50m", "memory": "64Mi"}}
            ],
            "podCPURequest": "300m",
            "podMemoryRequest": "576Mi"
        }}}
    }))
    .expect("the harness's DPA decodes")
}

/// `web` patched, `db` targeted twice (a conflict), `preview` in Preview mode.
static INDEX: LazyLock<AutoscalerIndex> = LazyLock::new(|| {
    let mut index = AutoscalerIndex::new();
    for d in [
        dpa("web", "Deployment", "web", "Apply"),
        dpa("db-a", "StatefulSet", "db", "Apply"),
        dpa("db-b", "StatefulSet", "db", "Apply"),
        dpa("preview", "Deployment", "preview", "Preview"),
    ] {
        index.upsert(Autoscaler::from_dpa(&d, true));
    }
    index
});

struct Full;

impl Mutator for Full {
    fn mutate(&self, review: &[u8]) -> Result<Option<Value>, String> {
        mutate(review, &*INDEX)
            .map(Outcome::into_patch)
            .map_err(|e| e.to_string())
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Outcome::Patched { patch, .. }) = mutate(data, &*INDEX) {
        // serde_json does not validate UTF-8 inside fields the decoder skips, so a body the decision
        // accepts may not parse as a whole; the pod itself (`request.object`) is always parsed.
        let Ok(review) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        let mut pod = review
            .pointer("/request/object")
            .cloned()
            .expect("a patched review has a pod");
        let ops: json_patch::Patch = serde_json::from_value(patch.clone()).expect("the patch is RFC 6902");
        if let Err(e) = json_patch::patch(&mut pod, &ops) {
            panic!("the patch does not apply to its pod: {e}\npatch: {patch}");
        }
    }
    if let Decision::Respond { body, .. } = decide(data, Some(&Full)) {
        assert_eq!(
            body["response"]["allowed"],
            Value::Bool(true),
            "the webhook never denies"
        );
    }
});
