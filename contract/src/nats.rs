//! Connecting to NATS, with the settings both binaries share.

use std::time::Duration;

use async_nats::jetstream;
use serde::{Deserialize, Serialize};

use crate::jetstream::Settings;

/// How to reach NATS and how the JetStream resources are laid out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// One or more server URLs, comma-separated (`nats://a:4222,nats://b:4222`).
    pub url: String,
    /// Bound on a JetStream API request or publish acknowledgement.
    #[serde(with = "crate::duration")]
    pub request_timeout: Duration,
    /// Stream and bucket settings.
    pub jetstream: Settings,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            request_timeout: Duration::from_secs(5),
            jetstream: Settings::default(),
        }
    }
}

impl NatsConfig {
    /// Checks the settings, naming the offending key relative to `prefix` (e.g. `nats`).
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        if self.servers().is_empty() {
            return Err(format!("{prefix}.url: at least one server URL is required"));
        }
        if self.request_timeout.is_zero() {
            return Err(format!("{prefix}.request_timeout: must be positive"));
        }
        self.jetstream.validate(&format!("{prefix}.jetstream"))
    }

    fn servers(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Connects without waiting for the server: the client keeps retrying in the background,
    /// so a replica starts (and reports itself not ready) while NATS is away.
    pub async fn connect(
        &self,
        name: &str,
    ) -> Result<(async_nats::Client, jetstream::Context), async_nats::ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .request_timeout(Some(self.request_timeout))
            // Reconnect quickly: a restarted server should be back in use within a second.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64 * 100).min(1000))
            })
            .connect(self.servers())
            .await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(self.request_timeout)
            .build(client.clone());
        Ok((client, js))
    }
}
