//! The horizontal comparison harness on the real control plane, shortened: a step load through
//! lazyscale's agent and through kube-controller-manager's HPA on identical Deployments; both scale up
//! on the step (so the HPA reads the simulator's PodMetrics), and the scores cover the run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use lazyscale_quality::horizontal::{self, HorizontalOptions, Scenario};

#[test]
fn both_autoscalers_scale_up_on_a_step() {
    // The agent binary of this workspace (dev profile), built if needed.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["build", "-q", "-p", "lazyscale", "--bin", "lazyscale"])
        .status()
        .unwrap();
    assert!(status.success(), "building the agent: {status}");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
    let mut o = HorizontalOptions::new(horizontal::agent_binary(&target, false));
    o.scenarios = vec![Scenario::Step];
    o.seconds = 75.0;
    let log = tempfile::NamedTempFile::new().unwrap();
    o.agent_log = Some(log.path().to_path_buf());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(horizontal::run(&o, &|m| eprintln!("{m}"))).unwrap();
    let s = &report.scenarios[0];
    eprintln!("lazyscale {:?}\nhpa {:?}", s.lazyscale, s.hpa);
    // 3 cores at the step on 0.5-core pods at 60 %: 10 replicas wanted; both must have moved well up.
    assert!(s.lazyscale.max_replicas >= 4, "lazyscale: {:?}", s.lazyscale);
    assert!(s.hpa.max_replicas >= 4, "hpa: {:?}", s.hpa);
    assert!(s.lazyscale.max_replicas <= o.max_replicas && s.hpa.max_replicas <= o.max_replicas);
    // Each sampled about once a second over the run.
    assert!(s.lazyscale.seconds > 60.0, "{:?}", s.lazyscale);
    assert!(s.samples.len() > 40, "{}", s.samples.len());
    assert!(s.lazyscale.replica_minutes > 0.0 && s.hpa.replica_minutes > 0.0);
}
