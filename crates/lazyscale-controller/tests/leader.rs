//! Leader election: two controller instances with their own lease loops on one Lease; only the
//! leader writes; when the leader dies (no release) the other takes over within the lease duration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{spec, wait_for};
use lazyscale_controller::lease::{self, LeaseConfig};
use tokio_util::sync::CancellationToken;

fn lease_config(ns: &str, identity: &str) -> LeaseConfig {
    LeaseConfig {
        duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        renew_period: Duration::from_millis(300),
        ..LeaseConfig::new(ns, lazyscale_api::consts::LEASE_NAME, identity)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_and_a_follower_takes_over_within_the_lease_duration() {
    let c = common::cluster().await;
    c.deployment("web", 2).await;
    c.load("web", 0.5);
    c.dpa("web", spec("web", 50, 1, 6)).await;

    let stop_a = CancellationToken::new();
    let (leader_a, lease_a) = lease::spawn(c.client.clone(), lease_config(&c.ns, "a"), stop_a.clone());
    wait_for(10, "a leads", || async { (*leader_a.borrow()).then_some(()) }).await;
    let stop_b = CancellationToken::new();
    let (leader_b, lease_b) = lease::spawn(c.client.clone(), lease_config(&c.ns, "b"), stop_b.clone());
    let a = c.controller(leader_a.clone());
    let b = c.controller(leader_b.clone());
    wait_for(20, "status written by a", || async {
        let d = c.get_dpa("web").await;
        d.status.as_ref()?.current_replicas.filter(|n| *n == 2)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!*leader_b.borrow(), "b follows while a renews");
    assert!(a.handle.counters().status_writes > 0);
    assert_eq!(b.handle.counters().status_writes, 0, "followers never write");
    assert_eq!(b.handle.counters().scale_writes, 0);

    // a dies without releasing the lease
    let killed = Instant::now();
    lease_a.abort();
    a.task.abort();
    a.pods_task.abort();
    wait_for(10, "b leads", || async { (*leader_b.borrow()).then_some(()) }).await;
    let takeover = killed.elapsed();
    println!("leader: takeover after {takeover:?} (lease duration 3 s)");
    assert!(
        takeover <= Duration::from_secs(3) + Duration::from_millis(800),
        "took {takeover:?}"
    );

    // b now acts: a load step is scaled by b
    c.load("web", 5.0);
    wait_for(20, "b scales", || async {
        (c.replicas("web").await > 2).then_some(())
    })
    .await;
    assert!(b.handle.counters().scale_writes > 0);

    // graceful stop releases the lease: no holder left, so a successor need not wait for the expiry
    let stop = Instant::now();
    stop_b.cancel();
    lease_b.await.unwrap();
    assert!(!*leader_b.borrow());
    let released =
        kube::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(c.client.clone(), &c.ns)
            .get(lazyscale_api::consts::LEASE_NAME)
            .await
            .unwrap();
    assert_eq!(
        released.spec.and_then(|s| s.holder_identity),
        None,
        "the stopped leader released the lease"
    );
    let stop_c = CancellationToken::new();
    let (leader_c, lease_c) = lease::spawn(c.client.clone(), lease_config(&c.ns, "c"), stop_c.clone());
    wait_for(10, "c leads", || async { (*leader_c.borrow()).then_some(()) }).await;
    println!("leader: takeover after a release {:?}", stop.elapsed());
    stop_c.cancel();
    lease_c.await.unwrap();
    b.stop().await;
}
