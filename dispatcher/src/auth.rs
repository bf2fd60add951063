//! Who is calling: bearer tokens for the API, and the per-caller policy and rate limit.
//!
//! With no tokens configured the API is open and every operation's source is `api`. With
//! tokens, each `/v1/` request must carry `Authorization: Bearer <token>`; the token's name
//! becomes the operation's source, so idempotency keys are scoped per token. Tokens are
//! compared as SHA-256 digests in constant time, against every configured token, so the
//! time taken says nothing about which token (or how much of one) matched.

use std::{collections::BTreeMap, sync::Arc};

use axum::{extract::FromRequestParts, http::request::Parts};
use longshore_contract::{OperationSpec, secret, settings::ConfigError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    api::API_SOURCE,
    config::{Config, HookConfig},
    context::Context,
    error::{Error, Result},
    policy::PolicyConfig,
    ratelimit::RateLimiter,
};

/// The credentials and limits of every caller, read from the configuration at start.
pub struct Auth {
    tokens: Vec<Token>,
    pub hooks: BTreeMap<String, Hook>,
    /// The policy of `GET` requests without a token (`console.anonymous_read`), if allowed.
    anonymous: Option<PolicyConfig>,
}

/// The source an anonymous reader is named by (it submits nothing).
pub const ANONYMOUS_SOURCE: &str = "anonymous";

struct Token {
    name: String,
    digest: [u8; 32],
    policy: PolicyConfig,
    limiter: Option<RateLimiter>,
}

/// A webhook source with its secret read.
pub struct Hook {
    pub secret: secret::Secret,
    pub config: HookConfig,
    limiter: Option<RateLimiter>,
}

/// An authenticated caller: the source its operations are recorded under, and its policy.
#[derive(Debug, Clone)]
pub struct Caller {
    pub source: String,
    /// How refusals name the caller: `token "ci"`, `hook "github"`.
    pub who: String,
    policy: Option<PolicyConfig>,
    /// An anonymous reader: it may read what its policy allows, and change nothing.
    pub read_only: bool,
}

impl Auth {
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let mut tokens = Vec::new();
        for (name, t) in &config.tokens {
            let value = secret::read(
                &format!("tokens.{name}.secret"),
                t.secret_file.as_deref(),
                t.secret_env.as_deref(),
            )
            .map_err(ConfigError)?;
            tokens.push(Token {
                name: name.clone(),
                digest: Sha256::digest(value.expose().as_bytes()).into(),
                policy: t.policy.clone(),
                limiter: RateLimiter::new(&t.rate_limit),
            });
        }
        let mut hooks = BTreeMap::new();
        for (name, h) in &config.hooks {
            let secret = secret::read(
                &format!("hooks.{name}.secret"),
                h.secret_file.as_deref(),
                h.secret_env.as_deref(),
            )
            .map_err(ConfigError)?;
            let limiter = RateLimiter::new(&h.rate_limit);
            hooks.insert(
                name.clone(),
                Hook {
                    secret,
                    config: h.clone(),
                    limiter,
                },
            );
        }
        let anonymous = config
            .console
            .anonymous_read
            .as_ref()
            .map(|a| PolicyConfig {
                clusters: a.clusters.clone(),
                ..Default::default()
            });
        Ok(Self {
            tokens,
            hooks,
            anonymous,
        })
    }

    /// True when no tokens are configured and the plain API takes anyone.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The caller an `Authorization` header value names. `reading` says the request only
    /// reads (`GET`, `HEAD`): without a header, it is served as the anonymous reader when
    /// one is configured.
    pub fn authenticate(&self, authorization: Option<&[u8]>, reading: bool) -> Result<Caller> {
        if self.is_open() {
            return Ok(Caller {
                source: API_SOURCE.into(),
                who: "the open API".into(),
                policy: None,
                read_only: false,
            });
        }
        if authorization.is_none()
            && reading
            && let Some(policy) = &self.anonymous
        {
            return Ok(Caller {
                source: ANONYMOUS_SOURCE.into(),
                who: "an anonymous reader".into(),
                policy: Some(policy.clone()),
                read_only: true,
            });
        }
        let presented = authorization.and_then(bearer_token).ok_or_else(|| {
            Error::Unauthorized("an `Authorization: Bearer <token>` header is required".into())
        })?;
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.digest.ct_eq(&digest)) {
                found = Some(token);
            }
        }
        let token = found.ok_or_else(|| Error::Unauthorized("unknown bearer token".into()))?;
        if let Some(limiter) = &token.limiter {
            limiter.take().map_err(|wait| Error::RateLimited {
                who: format!("token {:?}", token.name),
                retry_after: wait,
            })?;
        }
        Ok(Caller {
            source: token.name.clone(),
            who: format!("token {:?}", token.name),
            policy: Some(token.policy.clone()),
            read_only: false,
        })
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme name is
/// case-insensitive (RFC 9110, section 11.1), and spaces may separate it from the token.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(value.iter().position(|b| *b == b' ')?)?;
    let token = token.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

impl Hook {
    /// The caller a verified webhook request acts as.
    pub fn caller(&self, name: &str) -> Result<Caller> {
        let who = format!("hook {name:?}");
        if let Some(limiter) = &self.limiter {
            limiter.take().map_err(|wait| Error::RateLimited {
                who: who.clone(),
                retry_after: wait,
            })?;
        }
        Ok(Caller {
            source: name.to_owned(),
            who,
            policy: Some(self.config.policy.clone()),
            read_only: false,
        })
    }
}

impl Caller {
    /// Refuses (403) what the caller's policy does not allow.
    pub fn check(&self, spec: &OperationSpec) -> Result<()> {
        self.check_writer()?;
        match &self.policy {
            Some(policy) => policy.check(&self.who, spec),
            None => Ok(()),
        }
    }

    /// Refuses (403) a cluster/action pair the policy does not allow (for retries, which
    /// have a record, not a spec).
    pub fn check_cluster_action(
        &self,
        cluster: &str,
        action: longshore_contract::Action,
    ) -> Result<()> {
        self.check_writer()?;
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        let scope = PolicyConfig {
            namespaces: Vec::new(),
            kinds: Vec::new(),
            ..policy.clone()
        };
        let spec = OperationSpec {
            cluster: longshore_contract::ClusterName::new(cluster.to_owned())
                .map_err(|e| Error::Conflict(format!("recorded cluster is invalid: {e}")))?,
            action,
            manifests: Vec::new(),
            targets: Vec::new(),
            patch: None,
            params: Default::default(),
            options: Default::default(),
            pipeline: None,
        };
        scope.check(&self.who, &spec)
    }
}

impl Caller {
    /// Refuses (403) an anonymous reader anything but reading. (It is only ever made for
    /// `GET` requests; this holds should a reading route ever change something.)
    fn check_writer(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::Forbidden(format!(
                "{} may only read: send a token to change anything",
                self.who
            )));
        }
        Ok(())
    }

    /// The controls of fleet rollouts the caller may use (on rollouts whose clusters it
    /// may all read).
    pub fn rollout_controls(&self) -> Vec<longshore_contract::rollout::state::ControlAction> {
        use longshore_contract::rollout::state::ControlAction;
        if self.read_only {
            return Vec::new();
        }
        match &self.policy {
            None => ControlAction::ALL.to_vec(),
            Some(p) => p.rollout_controls.clone(),
        }
    }

    /// Whether the caller may change the registry (clusters its policy allows).
    pub fn may_manage_clusters(&self) -> bool {
        !self.read_only && self.policy.as_ref().is_none_or(|p| p.manage_clusters)
    }

    /// The actions the caller may submit (and retry), on the clusters it may read.
    pub fn actions(&self) -> Vec<longshore_contract::Action> {
        if self.read_only {
            return Vec::new();
        }
        match &self.policy {
            Some(p) if !p.actions.is_empty() => p.actions.clone(),
            _ => longshore_contract::Action::ALL.to_vec(),
        }
    }

    /// Whether the caller may see `cluster` in the registry.
    pub fn may_read_cluster(&self, cluster: &str) -> bool {
        self.policy
            .as_ref()
            .is_none_or(|p| p.allows_cluster(cluster))
    }

    /// Refuses (403) reading a cluster the caller's policy does not allow.
    pub fn check_read_cluster(&self, cluster: &str) -> Result<()> {
        if self.may_read_cluster(cluster) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "cluster {cluster:?} is not allowed for {}",
                self.who
            )))
        }
    }

    /// Refuses (403) `action` on a rollout over `clusters` unless the policy names the
    /// control and allows every one of them.
    pub fn check_rollout_control(
        &self,
        action: longshore_contract::rollout::state::ControlAction,
        clusters: &[longshore_contract::ClusterName],
    ) -> Result<()> {
        self.check_writer()?;
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        if !policy.rollout_controls.contains(&action) {
            return Err(Error::Forbidden(format!(
                "{} may not {} fleet rollouts (policy.rollout_controls)",
                self.who,
                action.as_str()
            )));
        }
        self.check_read_clusters(clusters)
    }

    /// Refuses (403) unless the caller may see every one of `clusters`, naming the first
    /// it may not.
    pub fn check_read_clusters(&self, clusters: &[longshore_contract::ClusterName]) -> Result<()> {
        match clusters.iter().find(|c| !self.may_read_cluster(c.as_str())) {
            Some(c) => self.check_read_cluster(c.as_str()),
            None => Ok(()),
        }
    }

    /// Refuses (403) changing the registry entry of `cluster` unless the policy allows
    /// managing clusters, and this one.
    pub fn check_manage_cluster(&self, cluster: &str) -> Result<()> {
        self.check_writer()?;
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        if !policy.manage_clusters {
            return Err(Error::Forbidden(format!(
                "{} may not manage clusters (policy.manage_clusters)",
                self.who
            )));
        }
        self.check_read_cluster(cluster)
    }
}

impl FromRequestParts<Arc<Context>> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<Context>) -> Result<Self> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let reading = matches!(
            parts.method,
            axum::http::Method::GET | axum::http::Method::HEAD
        );
        ctx.auth.authenticate(header, reading)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RateLimitConfig, TokenConfig};

    fn auth(rate: f64) -> Auth {
        let dir =
            std::env::temp_dir().join(format!("longshore-auth-{}-{rate}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ci");
        std::fs::write(&file, "ci-token\n").unwrap();
        let mut config = Config::default();
        config.tokens.insert(
            "ci".into(),
            TokenConfig {
                secret_file: Some(file),
                rate_limit: RateLimitConfig {
                    per_second: rate,
                    burst: 1,
                },
                ..Default::default()
            },
        );
        let auth = Auth::from_config(&config).unwrap();
        std::fs::remove_dir_all(dir).ok();
        auth
    }

    #[test]
    fn a_known_token_names_the_source() {
        let a = auth(0.0);
        assert_eq!(
            a.authenticate(Some(b"Bearer ci-token"), false)
                .unwrap()
                .source,
            "ci"
        );
        assert!(matches!(
            a.authenticate(Some(b"Bearer ci-tokeN"), false),
            Err(Error::Unauthorized(_))
        ));
        assert!(matches!(
            a.authenticate(Some(b"ci-token"), false),
            Err(Error::Unauthorized(_))
        ));
        assert!(matches!(
            a.authenticate(None, false),
            Err(Error::Unauthorized(_))
        ));
    }

    #[test]
    fn the_scheme_name_is_case_insensitive() {
        // RFC 9110 section 11.1: the authentication scheme is a case-insensitive token.
        let a = auth(0.0);
        for header in [
            &b"bearer ci-token"[..],
            b"BEARER ci-token",
            b"BeArEr   ci-token",
        ] {
            let caller = a.authenticate(Some(header), false);
            assert_eq!(
                caller.map(|c| c.source).ok().as_deref(),
                Some("ci"),
                "{}",
                String::from_utf8_lossy(header)
            );
        }
        for header in [&b"Basic ci-token"[..], b"Bearerci-token", b"Bearer"] {
            assert!(
                matches!(
                    a.authenticate(Some(header), false),
                    Err(Error::Unauthorized(_))
                ),
                "{}",
                String::from_utf8_lossy(header)
            );
        }
    }

    #[test]
    fn the_rate_limit_answers_with_a_wait() {
        let a = auth(0.5);
        a.authenticate(Some(b"Bearer ci-token"), false).unwrap();
        match a.authenticate(Some(b"Bearer ci-token"), false) {
            Err(Error::RateLimited { retry_after, .. }) => {
                assert!(retry_after > std::time::Duration::from_secs(1))
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
    }

    #[test]
    fn without_tokens_the_api_is_open() {
        let a = Auth::from_config(&Config::default()).unwrap();
        assert!(a.is_open());
        assert_eq!(a.authenticate(None, false).unwrap().source, API_SOURCE);
    }
}
