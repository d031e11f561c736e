//! What the agent's end-to-end tests share beyond `lazyscale_testenv`: this crate's binary.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use lazyscale_testenv::{Agent, AgentOptions, Server};

/// Starts this crate's agent binary with the measured agent identity (its requests are counted from
/// the audit log) and `args`, and waits until it is ready.
pub fn start_agent(server: &Server, args: &[&str]) -> Agent {
    Agent::start(
        AgentOptions::new(env!("CARGO_BIN_EXE_lazyscale"), server.agent_kubeconfig_path())
            .args(args.iter().copied()),
    )
    .expect("agent starts")
}

/// The agent's pod LIST and WATCH requests so far (kube-controller-manager, the scheduler and kwok
/// list and watch pods too; the audit log tells the agent's apart).
pub fn pod_requests(server: &Server) -> (u64, u64) {
    (
        server.agent_requests("LIST", "pods"),
        server.agent_requests("WATCH", "pods"),
    )
}
