//! The heap estimate of [`lazyscale_api::heap`] against a counting global allocator: a DPA as the API
//! server returns it (managed fields, labels, annotations, a full status), decoded from JSON, and the
//! same DPA with more labels and conditions. The estimate must be within a third of what the decoded
//! value holds (counted in jemalloc's size classes, as the agent's allocator hands them out) and grow
//! by about what the allocator sees.
//!
//! Everything runs in one `#[test]` so no other test thread allocates while measuring.

// A `GlobalAlloc` implementation is unsafe by definition; this one only forwards to `System` and counts.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use lazyscale_api::DatadogPodAutoscaler;
use lazyscale_api::heap::{alloc_bytes, approx_heap_bytes};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

fn add(layout_size: usize, sign: isize) {
    LIVE.fetch_add(sign * alloc_bytes(layout_size) as isize, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counter is a
// plain atomic and never affects the returned memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size(), 1);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        add(layout.size(), -1);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(layout.size(), -1);
            add(new_size, 1);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn dpa_json(extra: usize) -> String {
    let mut labels = serde_json::Map::new();
    for i in 0..3 + extra {
        labels.insert(
            format!("app.kubernetes.io/label-{i}"),
            format!("value-{i}").into(),
        );
    }
    let mut conditions = vec![];
    for (i, t) in [
        "Active",
        "HorizontalAbleToRecommend",
        "VerticalAbleToRecommend",
        "HorizontalAbleToScale",
    ]
    .iter()
    .map(|t| t.to_string())
    .chain((0..extra).map(|i| format!("Extra{i}")))
    .enumerate()
    {
        conditions.push(serde_json::json!({"type": t, "status": "True",
            "lastTransitionTime": "2026-12-03T06:00:00Z", "reason": format!("Reason{i}"),
            "message": "the autoscaler recommends and applies as configured"}));
    }
    serde_json::json!({
        "apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler",
        "metadata": {"name": "web-frontend", "namespace": "team-a", "uid": "0b7a1c52-7d8e-4b1f-9a61-2f0c8e4d5a19",
            "resourceVersion": "123456", "generation": 3, "creationTimestamp": "2026-12-01T10:00:00Z",
            "labels": labels,
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"spec\":{}}"},
            "managedFields": [
                {"manager": "kubectl", "operation": "Apply", "apiVersion": "datadoghq.com/v1alpha2",
                 "time": "2026-12-01T10:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:spec": {"f:targetRef": {"f:apiVersion": {}, "f:kind": {}, "f:name": {}},
                   "f:owner": {}, "f:constraints": {"f:minReplicas": {}, "f:maxReplicas": {}}}}},
                {"manager": "lazyscale", "operation": "Update", "apiVersion": "datadoghq.com/v1alpha2",
                 "time": "2026-12-02T10:00:00Z", "fieldsType": "FieldsV1", "subresource": "status",
                 "fieldsV1": {"f:status": {"f:conditions": {}, "f:currentReplicas": {}, "f:horizontal": {}}}}
            ]},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web-frontend"},
            "owner": "Local", "applyPolicy": {"mode": "Apply"},
            "constraints": {"minReplicas": 2, "maxReplicas": 20},
            "objectives": [{"type": "PodResource", "podResource": {"name": "cpu",
                "value": {"type": "Utilization", "utilization": 70}}}]},
        "status": {"currentReplicas": 4, "conditions": conditions,
            "horizontal": {"target": {"source": "Local", "generatedAt": "2026-12-03T06:00:00Z", "desiredReplicas": 4},
                "lastRecommendations": [{"source": "Local", "generatedAt": "2026-12-03T06:00:00Z", "desiredReplicas": 4}]}}
    })
    .to_string()
}

/// The bytes the decoded value keeps, and its estimate.
fn measure(text: &str) -> (isize, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    let dpa: DatadogPodAutoscaler = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
    let kept = LIVE.load(Ordering::Relaxed) - before;
    let estimate = approx_heap_bytes(&dpa);
    drop(dpa);
    (kept, estimate)
}

#[test]
fn the_estimate_follows_the_allocator() {
    let (small, big) = (dpa_json(0), dpa_json(40));
    let (kept, estimate) = measure(&small);
    let (kept_big, estimate_big) = measure(&big);
    eprintln!(
        "one DPA: {kept} bytes kept, {estimate} estimated; with 40 more labels and conditions: {kept_big} kept, {estimate_big} estimated"
    );
    for (k, e) in [(kept, estimate), (kept_big, estimate_big)] {
        let ratio = e as f64 / k as f64;
        assert!((0.67..=1.5).contains(&ratio), "estimate {e} vs {k} kept");
    }
    let growth = (estimate_big - estimate) as f64 / (kept_big - kept) as f64;
    assert!(
        (0.67..=1.5).contains(&growth),
        "the estimate grows {growth} × as fast"
    );
}
