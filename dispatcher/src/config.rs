//! The dispatcher's configuration: defaults < `--config` file < `LONGSHORE_*` environment.

use std::{collections::BTreeSet, net::SocketAddr, path::Path, time::Duration};

use longshore_contract::{ClusterName, nats::NatsConfig, settings::ConfigError};
use serde::{Deserialize, Serialize};

/// Everything the dispatcher needs to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// NATS connection and JetStream layout (must match the workers').
    pub nats: NatsConfig,
    /// The clusters operations may target (DNS labels). A request naming any other cluster
    /// is refused with 400, so a typo never reaches the work queue.
    pub clusters: Vec<String>,
    /// HTTP request handling.
    pub http: HttpConfig,
    /// Publishing to the work queue.
    pub publish: PublishConfig,
}

/// HTTP request handling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub body_limit: usize,
    /// Bound on handling one request; slower requests get 503.
    #[serde(with = "longshore_contract::duration")]
    pub request_timeout: Duration,
    /// How long in-flight requests may take to finish after shutdown begins.
    #[serde(with = "longshore_contract::duration")]
    pub drain_grace: Duration,
}

/// Publishing to the work queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    /// Publish attempts (with the same `Nats-Msg-Id`) before answering 503. Covers a stream
    /// leader election, during which a publish finds no responders.
    pub attempts: u32,
    /// Pause between attempts.
    #[serde(with = "longshore_contract::duration")]
    pub retry_pause: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            nats: NatsConfig::default(),
            clusters: Vec::new(),
            http: HttpConfig::default(),
            publish: PublishConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            // Below the NATS server's default max_payload (1 MiB), leaving room for the envelope.
            body_limit: 960 * 1024,
            request_timeout: Duration::from_secs(30),
            drain_grace: Duration::from_secs(20),
        }
    }
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            attempts: 4,
            retry_pause: Duration::from_millis(250),
        }
    }
}

/// Environment keys that take comma-separated lists (`LONGSHORE_CLUSTERS=prod,staging`).
pub const LIST_KEYS: &[&str] = &["clusters"];

impl Config {
    /// Loads defaults, then the file, then `LONGSHORE_*` variables, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Self = longshore_contract::settings::load(file, "LONGSHORE", LIST_KEYS)?;
        config.cluster_names()?;
        Ok(config)
    }

    /// Validates the configuration and returns the set of known clusters. Errors name the key.
    pub fn cluster_names(&self) -> Result<BTreeSet<ClusterName>, ConfigError> {
        self.nats.validate("nats").map_err(ConfigError)?;
        if self.clusters.is_empty() {
            return Err(ConfigError(
                "clusters: at least one cluster name is required".into(),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            let name = ClusterName::new(c.trim())
                .map_err(|e| ConfigError(format!("clusters[{i}]: {e}")))?;
            names.insert(name);
        }
        if self.http.body_limit < 1024 {
            return Err(ConfigError(
                "http.body_limit: must be at least 1024 bytes".into(),
            ));
        }
        if self.http.request_timeout.is_zero() {
            return Err(ConfigError("http.request_timeout: must be positive".into()));
        }
        if self.publish.attempts == 0 {
            return Err(ConfigError("publish.attempts: must be at least 1".into()));
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_clusters(clusters: &[&str]) -> Config {
        Config {
            clusters: clusters.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_valid_config_yields_its_clusters() {
        let names = with_clusters(&["prod", "staging"]).cluster_names().unwrap();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn errors_name_the_key() {
        let err = with_clusters(&[]).cluster_names().unwrap_err().to_string();
        assert!(err.contains("clusters:"), "{err}");
        let err = with_clusters(&["prod", "Bad_Name"])
            .cluster_names()
            .unwrap_err()
            .to_string();
        assert!(err.contains("clusters[1]"), "{err}");
        let mut c = with_clusters(&["prod"]);
        c.publish.attempts = 0;
        assert!(
            c.cluster_names()
                .unwrap_err()
                .to_string()
                .contains("publish.attempts")
        );
    }

    #[test]
    fn file_values_override_defaults_and_unknown_keys_are_named() {
        let dir = std::env::temp_dir().join(format!("longshore-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, "clusters = [\"prod\"]\n[http]\nbody_limit = 2048\n[nats]\nurl = \"nats://10.0.0.1:4222\"\n").unwrap();
        let c = Config::load(Some(&good)).unwrap();
        assert_eq!(c.http.body_limit, 2048);
        assert_eq!(c.nats.url, "nats://10.0.0.1:4222");
        assert_eq!(c.publish, PublishConfig::default());

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "clusters = [\"prod\"]\n[http]\nbody_limt = 2048\n").unwrap();
        let err = Config::load(Some(&bad)).unwrap_err().to_string();
        assert!(err.contains("body_limt"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }
}
