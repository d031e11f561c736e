//! End-to-end tests on the real test API server with the simulator: Deployments with pods and
//! PodMetrics driven by load profiles, the controller with a 2 s recommendation period.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{PERIOD, condition, spec, wait_for};
use kube::Api;
use kube::api::DeleteParams;
use lazyscale_api::DatadogPodAutoscaler;
use lazyscale_api::consts::conditions::{self, reasons};
use tokio::sync::watch;

/// Slack for the metrics interval (0.5 s), pod readiness (0.3 s) and the API round trips.
const SLACK: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_up_within_two_periods_respects_max_and_scales_down_after_the_window() {
    let c = common::cluster().await;
    c.deployment("web", 2).await;
    c.load("web", 0.5); // 0.25 cores per pod = 50 % of 500m: on target
    let mut s = spec("web", 50, 1, 6);
    s["applyPolicy"] = serde_json::json!({"scaleDown": {"stabilizationWindowSeconds": 8}});
    c.dpa("web", s).await;
    let (_tx, rx) = watch::channel(true);
    let ctl = c.controller(rx);
    // settled: active, able to recommend, 2 replicas kept
    wait_for(20, "DPA active and recommending", || async {
        let d = c.get_dpa("web").await;
        (condition(&d, conditions::HORIZONTAL_ABLE_TO_RECOMMEND).map(|c| c.0) == Some("True".into()))
            .then_some(())
    })
    .await;
    assert_eq!(c.replicas("web").await, 2);

    // load step up: 5 cores → wants 19 replicas, capped at 6
    let step = Instant::now();
    c.load("web", 5.0);
    wait_for(20, "scale-up", || async {
        (c.replicas("web").await > 2).then_some(())
    })
    .await;
    let rise = step.elapsed();
    println!("e2e: load step up -> replicas rose after {rise:?}");
    assert!(rise <= 2 * PERIOD + SLACK, "replicas rose after {rise:?}");
    wait_for(20, "6 replicas", || async {
        (c.replicas("web").await == 6).then_some(())
    })
    .await;
    for _ in 0..3 {
        tokio::time::sleep(PERIOD).await;
        assert_eq!(c.replicas("web").await, 6, "never above maxReplicas");
    }
    let d = c.get_dpa("web").await;
    assert_eq!(
        condition(&d, conditions::HORIZONTAL_SCALING_LIMITED),
        Some(("True".into(), Some(reasons::LIMITED_BY_CONSTRAINT.into())))
    );
    let st = d.status.unwrap();
    let h = st.horizontal.unwrap();
    assert!(h.target.unwrap().desired_replicas > 6);
    let actions = h.last_actions.unwrap();
    assert_eq!(actions.last().map(|a| a.to_replicas), Some(6));
    let text = ctl.handle.explain(&c.ns, "web").expect("explanation");
    assert!(text.contains("Constrained:"), "{text}");
    println!("{text}");

    // load drops: 0.3 cores → 1 replica wanted; only after the 8 s window
    let drop = Instant::now();
    c.load("web", 0.3);
    wait_for(40, "scale-down", || async {
        (c.replicas("web").await < 6).then_some(())
    })
    .await;
    let fell = drop.elapsed();
    println!("e2e: load drop -> replicas fell after {fell:?} (window 8 s)");
    // The window is counted from the last high recommendation, which the controller may have made up
    // to one period before the load changed.
    assert!(
        fell + PERIOD >= Duration::from_secs(8),
        "scaled down after {fell:?}, before the window"
    );
    assert!(
        fell <= Duration::from_secs(8) + 2 * PERIOD + SLACK + PERIOD,
        "scaled down after {fell:?}"
    );
    assert!(ctl.handle.counters().scale_writes >= 2);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_changes_nothing_but_status() {
    let c = common::cluster().await;
    c.deployment("pv", 2).await;
    c.load("pv", 4.0);
    let mut s = spec("pv", 50, 1, 10);
    s["applyPolicy"] = serde_json::json!({"mode": "Preview"});
    c.dpa("pv", s).await;
    let (_tx, rx) = watch::channel(true);
    let ctl = c.controller(rx);
    let d = wait_for(20, "preview recommendation in status", || async {
        let d = c.get_dpa("pv").await;
        let desired = d
            .status
            .as_ref()?
            .horizontal
            .as_ref()?
            .target
            .as_ref()?
            .desired_replicas;
        (desired > 2).then_some(d)
    })
    .await;
    assert_eq!(
        condition(&d, conditions::HORIZONTAL_ABLE_TO_SCALE),
        Some(("False".into(), Some(reasons::POLICY_RESTRICTED.into())))
    );
    tokio::time::sleep(2 * PERIOD).await;
    assert_eq!(c.replicas("pv").await, 2, "Preview never writes /scale");
    assert_eq!(ctl.handle.counters().scale_writes, 0);
    let d = c.get_dpa("pv").await;
    assert!(d.status.unwrap().horizontal.unwrap().last_actions.is_none());
    let text = ctl.handle.explain(&c.ns, "pv").unwrap();
    assert!(text.contains("Preview: would scale"), "{text}");
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_target_invalid_spec_and_deleted_dpa() {
    let c = common::cluster().await;
    c.deployment("app", 2).await;
    c.load("app", 0.5);
    c.dpa("ghost", spec("does-not-exist", 50, 1, 5)).await;
    c.dpa("bad", spec("app", 50, 5, 2)).await;
    c.dpa("app", spec("app", 50, 1, 8)).await;
    let (_tx, rx) = watch::channel(true);
    let ctl = c.controller(rx);
    let d = wait_for(20, "TargetNotFound", || async {
        let d = c.get_dpa("ghost").await;
        condition(&d, conditions::ACTIVE).is_some().then_some(d)
    })
    .await;
    assert_eq!(
        condition(&d, conditions::ACTIVE),
        Some(("False".into(), Some(reasons::TARGET_NOT_FOUND.into())))
    );
    assert_eq!(
        condition(&d, conditions::ERROR),
        Some(("True".into(), Some(reasons::TARGET_NOT_FOUND.into())))
    );
    let d = wait_for(20, "InvalidSpec", || async {
        let d = c.get_dpa("bad").await;
        condition(&d, conditions::ACTIVE).is_some().then_some(d)
    })
    .await;
    assert_eq!(
        condition(&d, conditions::ACTIVE),
        Some(("False".into(), Some(reasons::INVALID_SPEC.into())))
    );
    // the stable lastTransitionTime and no rewrite while nothing changes
    let t0 = d
        .status
        .as_ref()
        .unwrap()
        .condition(conditions::ACTIVE)
        .unwrap()
        .last_transition_time
        .clone();
    let rv0 = d.metadata.resource_version.clone();
    tokio::time::sleep(2 * PERIOD).await;
    let d = c.get_dpa("bad").await;
    assert_eq!(
        d.metadata.resource_version, rv0,
        "no status write without a change"
    );
    assert_eq!(
        d.status
            .unwrap()
            .condition(conditions::ACTIVE)
            .unwrap()
            .last_transition_time,
        t0
    );

    // deleting the DPA stops all scaling
    wait_for(20, "app active", || async {
        let d = c.get_dpa("app").await;
        (condition(&d, conditions::HORIZONTAL_ABLE_TO_RECOMMEND).map(|c| c.0) == Some("True".into()))
            .then_some(())
    })
    .await;
    Api::<DatadogPodAutoscaler>::namespaced(c.client.clone(), &c.ns)
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.load("app", 6.0);
    tokio::time::sleep(3 * PERIOD).await;
    assert_eq!(c.replicas("app").await, 2, "no scaling after the DPA is gone");
    assert!(ctl.handle.explain(&c.ns, "app").is_none());
    assert!(!ctl.task.is_finished(), "the controller is still running");
    ctl.stop().await;
}
