//! Connecting to NATS, with the settings both binaries share.

use std::{path::PathBuf, time::Duration};

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
    /// How to authenticate; none by default.
    pub auth: NatsAuth,
    /// TLS towards the servers; off unless a URL says `tls://` or `tls.required` is set.
    pub tls: NatsTls,
    /// The prefix of this replica's reply subjects (`_INBOX` by default). An agent sets
    /// its own (`_INBOX_<pool>`), so the hub can let its leaf node receive replies to it
    /// and to nobody else (`docs/agents.md`).
    pub inbox_prefix: Option<String>,
}

/// NATS authentication. At most one method; secrets are read from files or environment
/// variables when connecting, so the configuration itself never holds one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsAuth {
    /// User name, with `password_file` or `password_env`.
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    /// A token, from a file or an environment variable.
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    /// A file holding an nkey seed (`SU...`).
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (user JWT and nkey seed), as `nsc` writes them.
    pub creds_file: Option<PathBuf>,
}

/// TLS towards the NATS servers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsTls {
    /// Require TLS even when the URLs say `nats://`.
    pub required: bool,
    /// PEM file of the CA(s) that signed the servers' certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS; both or neither.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            request_timeout: Duration::from_secs(5),
            jetstream: Settings::default(),
            auth: NatsAuth::default(),
            tls: NatsTls::default(),
            inbox_prefix: None,
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
        self.auth.validate(&format!("{prefix}.auth"))?;
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(format!(
                "{prefix}.tls.cert_file and {prefix}.tls.key_file: give both or neither"
            ));
        }
        if let Some(inbox) = &self.inbox_prefix
            && (inbox.is_empty()
                || inbox.split('.').any(|t| {
                    t.is_empty()
                        || !t
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '$'))
                }))
        {
            return Err(format!(
                "{prefix}.inbox_prefix: {inbox:?} is not a subject prefix (dot-separated tokens of letters, digits, -, _ and $; no wildcards)"
            ));
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
        let options = self
            .auth
            .options(async_nats::ConnectOptions::new())
            .await
            .map_err(|e| {
                async_nats::ConnectError::with_source(
                    async_nats::ConnectErrorKind::Authentication,
                    e,
                )
            })?;
        let mut options = self.tls.options(options);
        if let Some(inbox) = &self.inbox_prefix {
            options = options.custom_inbox_prefix(inbox.clone());
        }
        let client = options
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
            .api_prefix(self.jetstream.api_prefix())
            .build(client.clone());
        Ok((client, js))
    }
}

impl NatsAuth {
    fn validate(&self, prefix: &str) -> Result<(), String> {
        let methods = [
            self.user.is_some() || self.password_file.is_some() || self.password_env.is_some(),
            self.token_file.is_some() || self.token_env.is_some(),
            self.nkey_seed_file.is_some(),
            self.creds_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(format!(
                "{prefix}: give one of user/password, token, nkey_seed_file or creds_file"
            ));
        }
        let has_password = self.password_file.is_some() || self.password_env.is_some();
        if self.user.is_some() != has_password {
            return Err(format!(
                "{prefix}.user and {prefix}.password_file/password_env: give both or neither"
            ));
        }
        Ok(())
    }

    /// Adds the configured method to `options`, reading its secret now.
    async fn options(
        &self,
        options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, String> {
        use crate::secret::read;
        if let Some(user) = &self.user {
            let password = read(
                "nats.auth.password",
                self.password_file.as_deref(),
                self.password_env.as_deref(),
            )?;
            return Ok(options.user_and_password(user.clone(), password.expose().to_owned()));
        }
        if self.token_file.is_some() || self.token_env.is_some() {
            let token = read(
                "nats.auth.token",
                self.token_file.as_deref(),
                self.token_env.as_deref(),
            )?;
            return Ok(options.token(token.expose().to_owned()));
        }
        if let Some(path) = &self.nkey_seed_file {
            let seed = read("nats.auth.nkey_seed", Some(path), None)?;
            return Ok(options.nkey(seed.expose().to_owned()));
        }
        if let Some(path) = &self.creds_file {
            return options
                .credentials_file(path)
                .await
                .map_err(|e| format!("nats.auth.creds_file: cannot read {}: {e}", path.display()));
        }
        Ok(options)
    }
}

impl NatsTls {
    fn options(&self, mut options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        if self.required {
            options = options.require_tls(true);
        }
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_methods_are_exclusive_and_named() {
        let mut c = NatsConfig::default();
        assert!(c.validate("nats").is_ok());
        c.auth.user = Some("longshore".into());
        let err = c.validate("nats").unwrap_err();
        assert!(err.contains("nats.auth.user"), "{err}");
        c.auth.password_env = Some("NATS_PASSWORD".into());
        assert!(c.validate("nats").is_ok());
        c.auth.token_env = Some("NATS_TOKEN".into());
        assert!(c.validate("nats").unwrap_err().starts_with("nats.auth:"));
    }

    #[test]
    fn debug_shows_where_secrets_come_from_not_what_they_are() {
        let mut c = NatsConfig::default();
        c.auth.token_env = Some("NATS_TOKEN".into());
        let debug = format!("{c:?}");
        assert!(debug.contains("NATS_TOKEN"), "{debug}");
    }
}
