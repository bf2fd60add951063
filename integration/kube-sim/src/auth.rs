//! Bearer-token authentication, per cluster and per request.
//!
//! With [`crate::SimOptions::auth_tokens`] each cluster has one random token, which every
//! request must present as `Authorization: Bearer <token>`; rotating it refuses the old one
//! from the next request on, on connections already open too. This is the behaviour of a
//! kube-apiserver with a token authenticator and anonymous access limited to the public
//! health and version paths (`AuthenticationConfiguration` `anonymous.conditions`, 1.32+):
//!
//! - no credentials (no `Authorization` header, another scheme, an empty token): anonymous,
//!   which may read only `/version`, `/healthz`, `/livez` and `/readyz`; anything else 401;
//! - a bearer token that is not the cluster's: 401 on every path, since a bad token is never
//!   taken for anonymous.
//!
//! A 401 carries the real server's `Status` (`reason: Unauthorized`, `message: Unauthorized`).
//! Authentication comes before faults and the write log, as it does before everything on a
//! real server: a refused request consumes no fault trigger and is not logged. Tokens are
//! compared in constant time and never logged (`Debug` redacts them). A cluster without a
//! token accepts any request, as before.

use std::sync::RwLock;

use http::{HeaderMap, header};

use crate::status::Error;

/// Paths below a cluster's URL that anonymous requests may read.
const PUBLIC_PATHS: &[&str] = &["version", "version/", "healthz", "livez", "readyz"];

/// A cluster's token, if it has one.
#[derive(Default)]
pub(crate) struct Credentials {
    token: RwLock<Option<String>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.read().is_some();
        f.debug_struct("Credentials")
            .field("token", &if set { "<redacted>" } else { "<none>" })
            .finish()
    }
}

impl Credentials {
    /// With a random token, or none (then every request is accepted).
    pub fn new(with_token: bool) -> Self {
        Credentials {
            token: RwLock::new(with_token.then(random_token)),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<String>> {
        self.token.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn token(&self) -> Option<String> {
        self.read().clone()
    }

    /// Replaces the token (giving the cluster one if it had none) and returns the new one.
    pub fn rotate(&self) -> String {
        let token = random_token();
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = Some(token.clone());
        token
    }

    /// Whether a request for `sub_path` (below the cluster's URL) with these headers may
    /// proceed; `Err(Unauthorized)` otherwise.
    pub fn authenticate(&self, headers: &HeaderMap, sub_path: &str) -> Result<(), Error> {
        let guard = self.read();
        let Some(expected) = guard.as_deref() else {
            return Ok(());
        };
        match bearer(headers) {
            Some(presented) if constant_time_eq(presented.as_bytes(), expected.as_bytes()) => {
                Ok(())
            }
            Some(_) => Err(Error::Unauthorized),
            None if PUBLIC_PATHS.contains(&sub_path) => Ok(()),
            None => Err(Error::Unauthorized),
        }
    }
}

/// The bearer token of a request, parsed as kube-apiserver does: the first `Authorization`
/// header, scheme `Bearer` in any case, a non-empty token.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let token = rest.split(' ').next().unwrap_or_default();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// 32 random bytes from the thread's CSPRNG, as hex.
fn random_token() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes: [u8; 32] = rand::random();
    let mut token = String::with_capacity(64);
    for b in bytes {
        token.push(char::from(HEX[usize::from(b >> 4)]));
        token.push(char::from(HEX[usize::from(b & 15)]));
    }
    token
}

/// Equality whose time depends only on the lengths (tokens all have the same length).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }

    #[test]
    fn only_the_current_token_passes() {
        let creds = Credentials::new(true);
        let token = creds.token().unwrap();
        let ok = with_auth(&format!("Bearer {token}"));
        assert!(creds.authenticate(&ok, "api").is_ok());
        assert!(
            creds
                .authenticate(&with_auth(&format!("bearer  {token}")), "api")
                .is_err(),
            "a token after two spaces is empty, then anonymous"
        );
        assert!(
            creds
                .authenticate(&with_auth(&format!("bearer {token}")), "api")
                .is_ok()
        );
        let rotated = creds.rotate();
        assert_ne!(rotated, token);
        assert!(matches!(
            creds.authenticate(&ok, "api"),
            Err(Error::Unauthorized)
        ));
        assert!(
            creds
                .authenticate(&with_auth(&format!("Bearer {rotated}")), "api")
                .is_ok()
        );
    }

    #[test]
    fn anonymous_reads_only_public_paths_and_a_bad_token_nothing() {
        let creds = Credentials::new(true);
        let none = HeaderMap::new();
        for path in ["version", "healthz", "livez", "readyz"] {
            assert!(creds.authenticate(&none, path).is_ok(), "{path}");
            assert!(
                creds
                    .authenticate(&with_auth("Bearer wrong"), path)
                    .is_err(),
                "{path}"
            );
        }
        for path in ["", "api", "apis", "api/v1/namespaces", "openapi/v3"] {
            assert!(creds.authenticate(&none, path).is_err(), "{path:?}");
        }
        assert!(
            creds
                .authenticate(&with_auth("Basic dXNlcjpwdw=="), "version")
                .is_ok()
        );
        assert!(
            creds
                .authenticate(&with_auth("Basic dXNlcjpwdw=="), "api")
                .is_err()
        );
    }

    #[test]
    fn without_a_token_everything_passes() {
        let creds = Credentials::new(false);
        assert!(creds.authenticate(&HeaderMap::new(), "api").is_ok());
        assert!(creds.authenticate(&with_auth("Bearer x"), "api").is_ok());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let creds = Credentials::new(true);
        let token = creds.token().unwrap();
        assert!(!format!("{creds:?}").contains(&token));
    }
}
