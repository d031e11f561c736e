//! Memory per cached pod, measured with a counting global allocator: 20,000 pods of 200 Deployments in
//! 20 namespaces (the shape of the pod-cache anchors), decoded from JSON with managedFields, a dozen
//! labels and annotations, two containers and a full status.
//!
//! The target is ≤ 128 B per cached pod (see the benchmark note in the crate README); this test prints the
//! measured figure and asserts only a sane upper bound, the relist peak, and that pods outside the
//! interest set cost nothing.
//!
//! Everything runs in one `#[test]` so no other test thread allocates while measuring.

// A `GlobalAlloc` implementation is unsafe by definition; this one only forwards to `System` and counts.
#![allow(unsafe_code)]
// Helpers outside `#[test]` fns panic on broken fixtures, as the test itself would.
#![allow(clippy::expect_used)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use common::{Spec, pod_json};
use lazyscale_podcache::slim::{WorkloadKey, WorkloadKind};
use lazyscale_podcache::store::{Interest, PodStore};
use lazyscale_podcache::wire::decode_pod;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counters are
// plain atomics and never affect the returned memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        p
    }
}

fn add(delta: isize) {
    let now = LIVE.fetch_add(delta, Ordering::Relaxed) + delta;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const NAMESPACES: usize = 20;
const DEPLOYMENTS: usize = 200;
const PODS: usize = 20_000;

struct Names {
    namespaces: Vec<String>,
    deployments: Vec<String>,
    hashes: Vec<String>,
    suffixes: Vec<String>,
}

fn names(prefix: &str) -> Names {
    Names {
        namespaces: (0..NAMESPACES).map(|i| format!("shop-prod-{i:02}")).collect(),
        deployments: (0..DEPLOYMENTS)
            .map(|i| format!("{prefix}service-{i:03}"))
            .collect(),
        hashes: (0..DEPLOYMENTS)
            .map(|i| format!("{:010x}", 0x005d_8f7c_9b6a_u64 + i as u64))
            .collect(),
        suffixes: (0..PODS).map(common::suffix).collect(),
    }
}

/// Pod `i` as JSON bytes (generated on the fly so the test's own data is not resident).
fn pod_bytes(n: &Names, i: usize, uid_base: u128, ready: bool) -> Vec<u8> {
    let d = i % DEPLOYMENTS;
    let spec = Spec {
        namespace: &n.namespaces[d % NAMESPACES],
        deployment: &n.deployments[d],
        hash: &n.hashes[d],
        suffix: &n.suffixes[i],
        uid: uid_base.wrapping_add((i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
        ready,
        cpu: "250m",
    };
    serde_json::to_vec(&pod_json(&spec)).expect("serialise")
}

fn feed(store: &PodStore, n: &Names, uid_base: u128, ready: impl Fn(usize) -> bool) -> usize {
    let mut json_bytes = 0;
    for i in 0..PODS {
        let bytes = pod_bytes(n, i, uid_base, ready(i));
        json_bytes += bytes.len();
        let wire = decode_pod(&bytes).expect("decode");
        store.apply(&wire).expect("apply");
    }
    json_bytes
}

#[test]
fn bytes_per_cached_pod() {
    let n = names("");
    let before_store = live();
    let interest: Interest = n
        .deployments
        .iter()
        .enumerate()
        .map(|(d, name)| WorkloadKey::new(&n.namespaces[d % NAMESPACES], WorkloadKind::Deployment, name))
        .collect();

    let store = PodStore::new();
    store.set_interest(interest);
    let baseline = live();

    // Steady state: initial list.
    store.begin_relist();
    let json_bytes = feed(&store, &n, 1, |_| true);
    store.finish_relist();
    let steady = live();
    let stats = store.stats();
    assert_eq!(stats.pods, PODS);
    assert_eq!(stats.workloads, DEPLOYMENTS);
    let per_pod = (steady - baseline) as f64 / PODS as f64;
    let per_pod_with_interest = (steady - before_store) as f64 / PODS as f64;
    println!(
        "podcache memory: {PODS} pods / {DEPLOYMENTS} deployments, {:.0} B of JSON per pod: \
         {per_pod:.1} B per cached pod (allocator, requested sizes; {per_pod_with_interest:.1} B including \
         the interest set), store estimate {:.1} B per pod, {} interned strings, {} owner records, {} \
         container sets, {} shapes, slim pod {} B inline",
        json_bytes as f64 / PODS as f64,
        stats.heap_bytes as f64 / PODS as f64,
        stats.interned.strings,
        stats.interned.owners,
        stats.interned.container_sets,
        stats.interned.shapes,
        std::mem::size_of::<lazyscale_podcache::SlimPod>(),
    );
    assert!(per_pod < 1024.0, "{per_pod} B per pod");
    let estimate_error =
        (stats.heap_bytes as f64 - (steady - baseline) as f64).abs() / (steady - baseline) as f64;
    assert!(
        estimate_error < 0.25,
        "estimate {} vs measured {}",
        stats.heap_bytes,
        steady - baseline
    );

    // A relist (watch restarted after 410): every pod re-listed, half of them changed. Peak over the whole
    // relist, decoding included, stays within 1.2x of the steady state.
    PEAK.store(live(), Ordering::Relaxed);
    store.begin_relist();
    feed(&store, &n, 1, |i| (i / DEPLOYMENTS).is_multiple_of(2));
    store.finish_relist();
    let peak = PEAK.load(Ordering::Relaxed) - baseline;
    let ratio = peak as f64 / (steady - baseline) as f64;
    println!(
        "podcache relist peak: {ratio:.3}x steady state; after it {:.1} B per pod ({} shapes)",
        (live() - baseline) as f64 / PODS as f64,
        store.stats().interned.shapes
    );
    assert!(ratio <= 1.2, "relist peak {ratio:.3}x");
    assert_eq!(
        store
            .counts(&WorkloadKey::new(
                "shop-prod-00",
                WorkloadKind::Deployment,
                "service-000"
            ))
            .ready,
        50
    );

    // Pods of workloads outside the interest set are decoded and dropped: they cost nothing.
    let others = names("other-");
    let before_others = live();
    feed(&store, &others, 1 << 100, |_| true);
    let growth = live() - before_others;
    println!("podcache: {PODS} uninteresting pods added {growth} B");
    assert!(growth < 4096, "{growth}");
    assert_eq!(store.len(), PODS);

    // Clearing releases everything the store held.
    drop(others);
    store.clear();
    let left = live() - before_store;
    println!("podcache: {left} B left after clear (interest set and empty tables)");
    assert!(left < 64 * 1024, "{left}");
}
