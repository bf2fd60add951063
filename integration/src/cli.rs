//! The real `longshore` CLI binary, run as a pipeline step runs it.

use std::{process::Output, time::Duration};

/// Runs `longshore` with `args` against the dispatcher at `server` (no token in the
/// environment), bounded to a minute.
pub async fn run(server: &str, args: &[&str]) -> Output {
    let bin = crate::process::binary("longshore").expect("the longshore binary is built");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args)
        .env("LONGSHORE_SERVER", server)
        .env_remove("LONGSHORE_TOKEN");
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the CLI finishes")
        .expect("the CLI runs")
}
