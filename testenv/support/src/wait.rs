//! Polling and test logging: the one `wait_for` of the project's tests, demo and benchmarks.
//!
//! Integration tests observe a real control plane, whose controllers act asynchronously; they poll
//! for the state they expect with a deadline instead of sleeping a fixed time.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`wait_for`] polls.
pub const POLL: Duration = Duration::from_millis(100);

/// Polls `f` every [`POLL`] until it returns `Some`, and returns that value.
///
/// # Panics
/// After `secs` seconds without a value, with a message naming `what`: in a test, a state that never
/// comes is the failure.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match try_wait_for(Duration::from_secs(secs), f).await {
        Some(v) => v,
        None => panic!("timed out after {secs}s waiting for {what}"),
    }
}

/// Polls `f` every [`POLL`] until it returns `Some` (that value) or `timeout` passes (`None`).
pub async fn try_wait_for<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Installs a `tracing` subscriber writing to the test's captured output (`RUST_LOG`, default
/// `warn`); calling it again is harmless.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_first_value() {
        let n = AtomicU32::new(0);
        let v = try_wait_for(Duration::from_secs(5), || {
            let k = n.fetch_add(1, Ordering::SeqCst);
            async move { (k == 2).then_some(k) }
        })
        .await;
        assert_eq!(v, Some(2));
    }

    #[tokio::test]
    async fn gives_up_after_the_timeout() {
        let v: Option<()> = try_wait_for(Duration::from_millis(250), || async { None }).await;
        assert_eq!(v, None);
    }
}
