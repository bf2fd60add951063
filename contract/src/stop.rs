//! The signal both binaries stop on: SIGTERM (how Kubernetes stops a pod) or SIGINT.
//!
//! The handlers are installed when [`signal`] is called, not when its future is first
//! polled: a SIGTERM that arrives while a binary is still loading credentials or binding
//! its port is then a request to stop cleanly, not the default action (death by signal,
//! exit status 143), which Kubernetes and the tests would count as a failed stop.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal as listen};

/// Listens for SIGTERM and SIGINT from now on; the future resolves on the first of them,
/// or at once if one arrived after this call and before the first poll.
///
/// Call it first thing in `main`, inside the runtime.
pub fn signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut terminate = listen(SignalKind::terminate())?;
    let mut interrupt = listen(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutdown signal received");
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// A SIGTERM sent after `signal()` but before its future is polled is caught, not
    /// fatal: were the handler installed on first poll, this test's process would die.
    #[tokio::test]
    async fn a_sigterm_before_the_first_poll_is_a_request_to_stop() {
        let stop = super::signal().unwrap();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(10), stop)
            .await
            .expect("the SIGTERM sent before the first poll resolves the future");
    }
}
