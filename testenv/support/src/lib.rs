//! Test support for lazyscale: a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok, built from Go modules by `testenv/build.sh`) started
//! on loopback ports with a fresh data directory.
//!
//! - [`recipe`] knows where the cached build lives and builds it when the recipe changed.
//! - [`Server`] starts the control plane, writes kubeconfigs that trust the generated CA (an
//!   administrator's and the agent's, whose requests [`audit`] counts), and stops every process on drop. A watchdog process stops them too when the owning process dies without
//!   dropping it (a panic that aborts, `SIGKILL`, or simply a `static` that is never dropped).
//! - [`TestEnv`] is the per-test-process shared server: [`TestEnv::shared`] starts it once, hands out
//!   clients bound to the caller's runtime and a fresh namespace per test.

pub mod agent;
pub mod audit;
pub mod crds;
pub mod fixtures;
pub mod helm;
pub mod metrics;
pub mod peers;
pub mod pki;
pub mod proxy;
pub mod rbac;
pub mod recipe;
mod server;
pub mod simulated;
pub mod tls;
pub mod wait;

pub use agent::{Agent, AgentOptions};
pub use crds::install_crds;
pub use server::{KWOK_NODE_ANNOTATION, NODE_PREFIX, Server, ServerOptions, node_json};
pub use simulated::{Simulated, constant_load};
pub use wait::{init_tracing, try_wait_for, wait_for};

use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Errors of the test environment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The build output for the current recipe does not exist.
    #[error(
        "the test API server is not built for this recipe (looked in {0}); run `cargo xtask testenv build`"
    )]
    NotBuilt(String),
    /// `testenv/build.sh` failed.
    #[error("testenv build failed (exit status {0}); its output above names the failing step")]
    BuildFailed(String),
    /// A process could not be started or waited on.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The server did not become ready in time.
    #[error("{0}")]
    NotReady(String),
    /// A Kubernetes client error.
    #[error("kubernetes client")]
    Kube(#[from] kube::Error),
    /// The kubeconfig could not be loaded.
    #[error("kubeconfig")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The API server shared by all tests of one test process.
pub struct TestEnv {
    server: Server,
}

static SHARED: OnceLock<TestEnv> = OnceLock::new();
static NAMESPACES: AtomicU32 = AtomicU32::new(0);

impl TestEnv {
    /// The shared server of this process, started on first use (under 2 s once built).
    ///
    /// # Panics
    /// When the server is not built or cannot start: tests cannot run without it, and the message says
    /// what to do.
    pub fn shared() -> &'static TestEnv {
        Self::shared_with(ServerOptions::default)
    }

    /// As [`TestEnv::shared`], started with the options `opts` returns (the first call of the process
    /// decides them).
    ///
    /// # Panics
    /// As [`TestEnv::shared`].
    pub fn shared_with(opts: fn() -> ServerOptions) -> &'static TestEnv {
        SHARED.get_or_init(|| {
            // Started on a plain thread: callers are usually inside a tokio runtime, where blocking
            // on another runtime is not allowed.
            let server = std::thread::spawn(move || Server::start(opts()))
                .join()
                .unwrap_or_else(|_| panic!("test environment start-up thread panicked"))
                .unwrap_or_else(|e| panic!("cannot start the test API server: {}", error_chain(&e)));
            TestEnv { server }
        })
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The kubeconfig path (it trusts the server's CA; no TLS verification is skipped).
    pub fn kubeconfig_path(&self) -> &Path {
        self.server.kubeconfig_path()
    }

    /// A new client for the calling runtime (kube clients must not outlive the runtime they were made on,
    /// and every `#[tokio::test]` has its own).
    ///
    /// # Panics
    /// When the kubeconfig cannot be loaded.
    pub async fn client(&self) -> kube::Client {
        self.server
            .client()
            .await
            .unwrap_or_else(|e| panic!("test client: {}", error_chain(&e)))
    }

    /// Creates a fresh namespace for one test and returns its name.
    ///
    /// # Panics
    /// When the namespace cannot be created.
    pub async fn namespace(&self) -> String {
        let n = NAMESPACES.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}-{}", std::process::id(), n);
        fixtures::ensure_namespace(&self.client().await, &name)
            .await
            .unwrap_or_else(|e| panic!("namespace {name}: {}", error_chain(&e)));
        name
    }

    /// Requests the server has counted (`apiserver_request_total`, plus watches still open) for a verb
    /// (`LIST`, `WATCH`, `GET`, `POST`, ...) and a resource: `pods` for the core group, `apps/deployments`
    /// for another group.
    ///
    /// # Panics
    /// When the metrics cannot be read.
    pub async fn request_count(&self, verb: &str, resource: &str) -> u64 {
        let text = self
            .server
            .metrics_text(&self.client().await)
            .await
            .unwrap_or_else(|e| panic!("read /metrics: {}", error_chain(&e)));
        metrics::request_count(&text, verb, resource)
    }

    /// How many `verb` requests on `resource` the agent's identity has made (from the audit log; see
    /// [`Server::agent_requests`]).
    pub fn agent_requests(&self, verb: &str, resource: &str) -> u64 {
        self.server.agent_requests(verb, resource)
    }

    /// The agent's kubeconfig (see [`Server::agent_kubeconfig_path`]).
    pub fn agent_kubeconfig_path(&self) -> &Path {
        self.server.agent_kubeconfig_path()
    }
}

/// Formats an error with its sources, one per `: `.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
