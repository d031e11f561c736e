//! The reconcile benchmark on the test API server: a small run checks that an unchanged pass writes
//! nothing; the full run (1,000 DPAs over 10-pod Deployments) is ignored by default:
//! `cargo test -p lazyscale-controller --test bench -- --ignored --nocapture` (`BENCH_DPAS` to resize).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use lazyscale_controller::bench::{self, BenchOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_pass_writes_nothing() {
    common::init_tracing();
    let env = lazyscale_testenv::TestEnv::shared();
    let client = env.client().await;
    common::install_crds(&client).await;
    let opts = BenchOptions {
        dpas: 20,
        namespace: format!("bench-small-{}", std::process::id()),
        ..BenchOptions::default()
    };
    let r = bench::run(client, &opts).await.unwrap();
    println!("{}", serde_json::to_string(&r).unwrap());
    assert_eq!(r.dpas, 20);
    assert_eq!(r.errors, 0);
    assert_eq!(r.status_writes_first_pass, 20);
    assert_eq!(r.status_writes_unchanged_pass, 0);
    assert_eq!(r.scale_writes, 0);
    // one metrics list and one scale read per DPA
    assert_eq!(r.api_requests_per_pass, 1 + 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes a minute: creates 1,000 Deployments, DPAs and 10,000 PodMetrics"]
async fn reconcile_1000_dpas() {
    common::init_tracing();
    let env = lazyscale_testenv::TestEnv::shared();
    let client = env.client().await;
    common::install_crds(&client).await;
    let dpas = std::env::var("BENCH_DPAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let opts = BenchOptions {
        dpas,
        namespace: format!("bench-{}", std::process::id()),
        ..BenchOptions::default()
    };
    let r = bench::run(client, &opts).await.unwrap();
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
    assert_eq!(r.errors, 0);
    assert_eq!(r.status_writes_unchanged_pass, 0);
}
