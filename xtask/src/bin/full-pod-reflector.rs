//! The reference of `cargo xtask bench lazy`: a plain kube-rs reflector of full `Pod` objects over the
//! whole cluster, the way a cluster agent caches pods today. Prints one JSON line once synced:
//! `{"pods", "sync_seconds", "rss_bytes", "peak_rss_bytes", "heap_bytes", "bytes_per_pod"}`.

use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, reflector, watcher};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn heap() -> u64 {
    let _ = tikv_jemalloc_ctl::epoch::advance();
    tikv_jemalloc_ctl::stats::allocated::read().unwrap_or(0) as u64
}

fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::main(worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    let heap0 = heap();
    let (store, writer) = reflector::store::<Pod>();
    let start = Instant::now();
    let stream = watcher(kube::Api::<Pod>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let driver = tokio::spawn(stream.for_each(|_| async {}));
    store.wait_until_ready().await?;
    let sync = start.elapsed().as_secs_f64();
    // let allocator statistics settle
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let pods = store.len() as u64;
    let heap = heap().saturating_sub(heap0);
    let (rss, peak) = rss();
    println!(
        "{}",
        serde_json::json!({"pods": pods, "sync_seconds": sync, "rss_bytes": rss, "peak_rss_bytes": peak,
            "heap_bytes": heap, "bytes_per_pod": heap.checked_div(pods).unwrap_or(0)})
    );
    driver.abort();
    Ok(())
}
