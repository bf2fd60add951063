//! The dispatcher's configuration: defaults < `--config` file < `LONGSHORE_*` environment.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use longshore_contract::{
    ClusterName, nats::NatsConfig, settings::ConfigError, telemetry::TelemetryConfig,
};
use serde::{Deserialize, Serialize};

use crate::{hooks::mapping::MappingConfig, policy::PolicyConfig};

/// A configuration that passed [`Config::check`], with what checking it produced.
pub struct Checked {
    pub config: Config,
    pub clusters: BTreeSet<ClusterName>,
    pub auth: crate::auth::Auth,
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

/// Everything the dispatcher needs to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// NATS connection and JetStream layout (must match the workers').
    pub nats: NatsConfig,
    /// Clusters registered at start if the registry lacks them (DNS labels; the default
    /// pool, the kubeconfig context of the same name). The registry, changed at runtime
    /// through `/v1/clusters`, is what operations are checked against; this list only seeds
    /// it, and a cluster removed at runtime stays removed.
    pub clusters: Vec<String>,
    /// HTTP request handling.
    pub http: HttpConfig,
    /// Publishing to the work queue.
    pub publish: PublishConfig,
    /// Bearer tokens for the API, by name. With none configured the API is open (a warning
    /// is logged at start); with any, every `/v1/` request needs one.
    pub tokens: BTreeMap<String, TokenConfig>,
    /// Signed webhook sources (`POST /v1/hooks/{source}`), by name.
    pub hooks: BTreeMap<String, HookConfig>,
    /// Trace export (OTLP); see `docs/observability.md`.
    pub telemetry: TelemetryConfig,
    /// The web console (`/ui`); see `docs/console.md`.
    pub console: ConsoleConfig,
}

/// The web console the dispatcher serves under `/ui`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve it (its pages only: what they show is read through the API).
    pub enabled: bool,
    /// Where an operation's trace is shown, `{trace_id}` standing for its trace id:
    /// `https://jaeger.example.com/trace/{trace_id}`. Unset: no trace links.
    pub trace_url: Option<String>,
    /// Read-only access without a token: `GET` requests to the API that carry no
    /// `Authorization` header are served as an anonymous reader that sees these clusters
    /// (globs) and may change nothing. Unset: every request needs a token (when tokens are
    /// configured at all).
    pub anonymous_read: Option<AnonymousRead>,
}

/// What an anonymous reader may see.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnonymousRead {
    /// Clusters it may read (globs; empty: all).
    pub clusters: Vec<String>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            trace_url: None,
            anonymous_read: None,
        }
    }
}

impl ConsoleConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.trace_url
            && (!(url.starts_with("http://") || url.starts_with("https://"))
                || !url.contains(crate::console::TRACE_ID_PLACEHOLDER))
        {
            return Err(ConfigError(format!(
                "console.trace_url: must be an http:// or https:// URL with {} in it, got {url:?}",
                crate::console::TRACE_ID_PLACEHOLDER
            )));
        }
        if let Some(anonymous) = &self.anonymous_read {
            PolicyConfig {
                clusters: anonymous.clusters.clone(),
                ..Default::default()
            }
            .validate("console.anonymous_read")?;
        }
        Ok(())
    }
}

/// One bearer token: its secret, what it may do, and how often.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// File holding the token (one of `secret_file`, `secret_env`).
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the token.
    pub secret_env: Option<String>,
    pub policy: PolicyConfig,
    pub rate_limit: RateLimitConfig,
}

/// A webhook source: its shared secret, signature scheme, policy and payload mapping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HookConfig {
    /// File holding the HMAC secret (one of `secret_file`, `secret_env`).
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the HMAC secret.
    pub secret_env: Option<String>,
    /// `longshore` (`X-Longshore-Signature`, timestamped) or `github` (`X-Hub-Signature-256`).
    pub signature: SignatureScheme,
    /// How old (or how far in the future) a `longshore` signature's timestamp may be.
    #[serde(with = "longshore_contract::duration")]
    pub replay_window: Duration,
    pub policy: PolicyConfig,
    pub rate_limit: RateLimitConfig,
    /// How the payload becomes an operation; without it the payload is a submission as
    /// `POST /v1/operations` takes it.
    pub map: Option<MappingConfig>,
}

/// How a webhook request is signed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureScheme {
    /// `X-Longshore-Signature: t=<unix seconds>,sha256=<hex HMAC of "<t>.<body>">`.
    #[default]
    Longshore,
    /// `X-Hub-Signature-256: sha256=<hex HMAC of the body>`, as GitHub sends it.
    Github,
}

/// A token bucket: `per_second` requests on average, up to `burst` at once. Off when
/// `per_second` is 0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for HookConfig {
    fn default() -> Self {
        Self {
            secret_file: None,
            secret_env: None,
            signature: SignatureScheme::default(),
            replay_window: Duration::from_secs(300),
            policy: PolicyConfig::default(),
            rate_limit: RateLimitConfig::default(),
            map: None,
        }
    }
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
    /// Longest `?wait=` a status request may ask for, and the longest an event stream
    /// stays open.
    #[serde(with = "longshore_contract::duration")]
    pub max_wait: Duration,
    /// Most `GET /v1/events` streams and operation watches open at once on this replica: each holds a consumer
    /// on the NATS server for as long as it is open. One more is refused with 503.
    pub max_event_streams: usize,
    /// The URL clients reach the dispatcher at (e.g. `https://longshore.example.com`). When
    /// set, `Location` and `statusUrl` are absolute, as some pipeline tools need.
    pub public_url: Option<String>,
    /// HTTPS: certificate and key files, and optionally a client CA for mutual TLS.
    pub tls: crate::tls::TlsConfig,
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
            tokens: BTreeMap::new(),
            hooks: BTreeMap::new(),
            telemetry: TelemetryConfig::default(),
            console: ConsoleConfig::default(),
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
            max_wait: Duration::from_secs(300),
            max_event_streams: 256,
            public_url: None,
            tls: crate::tls::TlsConfig::default(),
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
    /// Loads defaults, then the file, then `LONGSHORE_*` variables. [`Config::check`]
    /// validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        longshore_contract::settings::load(file, "LONGSHORE", LIST_KEYS)
    }

    /// Validates everything and reads every secret (tokens, webhook secrets, the TLS key),
    /// once: a problem stops the binary before it binds a port, naming the key.
    pub fn check(self) -> Result<Checked, ConfigError> {
        let clusters = self.cluster_names()?;
        let auth = crate::auth::Auth::from_config(&self)?;
        let tls = self.http.tls.server_config("http.tls")?;
        Ok(Checked {
            config: self,
            clusters,
            auth,
            tls,
        })
    }

    /// Validates the configuration and returns the set of known clusters. Errors name the key.
    pub fn cluster_names(&self) -> Result<BTreeSet<ClusterName>, ConfigError> {
        self.nats.validate("nats").map_err(ConfigError)?;
        self.telemetry.validate("telemetry").map_err(ConfigError)?;
        self.console.validate()?;
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
        if let Some(url) = &self.http.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError(
                "http.public_url: must start with http:// or https://".into(),
            ));
        }
        if self.http.max_wait.is_zero() {
            return Err(ConfigError("http.max_wait: must be positive".into()));
        }
        if self.http.max_event_streams == 0 {
            return Err(ConfigError(
                "http.max_event_streams: must be at least 1".into(),
            ));
        }
        for (name, token) in &self.tokens {
            let key = format!("tokens.{name}");
            check_source_name(&key, name)?;
            token.policy.validate(&format!("{key}.policy"))?;
            token.rate_limit.validate(&format!("{key}.rate_limit"))?;
        }
        for (name, hook) in &self.hooks {
            let key = format!("hooks.{name}");
            check_source_name(&key, name)?;
            if self.tokens.contains_key(name) {
                return Err(ConfigError(format!(
                    "{key}: a token has the same name; sources scope idempotency keys, so they must differ"
                )));
            }
            if hook.replay_window.is_zero() {
                return Err(ConfigError(format!(
                    "{key}.replay_window: must be positive"
                )));
            }
            hook.policy.validate(&format!("{key}.policy"))?;
            hook.rate_limit.validate(&format!("{key}.rate_limit"))?;
            if let Some(map) = &hook.map {
                map.validate(&format!("{key}.map"))?;
            }
        }
        Ok(names)
    }
}

/// Token and hook names become an operation's `source`: lowercase letters, digits, `-`.
fn check_source_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok || name == crate::api::API_SOURCE {
        return Err(ConfigError(format!(
            "{key}: the name must be 1-63 lowercase letters, digits or '-', and not \"{}\"",
            crate::api::API_SOURCE
        )));
    }
    Ok(())
}

impl RateLimitConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !self.per_second.is_finite() || self.per_second < 0.0 {
            return Err(ConfigError(format!(
                "{key}.per_second: must be 0 (off) or positive"
            )));
        }
        if self.per_second > 0.0 && self.burst == 0 {
            return Err(ConfigError(format!(
                "{key}.burst: must be at least 1 when per_second is set"
            )));
        }
        Ok(())
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
        // No cluster to seed is fine: the registry is filled at runtime.
        assert!(with_clusters(&[]).cluster_names().unwrap().is_empty());
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
