//! Webhook signatures: HMAC-SHA256 over the raw body, compared in constant time.
//!
//! - `longshore`: `X-Longshore-Signature: t=<unix seconds>,sha256=<hex>`, the HMAC of
//!   `"<t>.<body>"`. The timestamp is signed, so a captured request replays only within the
//!   replay window.
//! - `github`: `X-Hub-Signature-256: sha256=<hex>`, the HMAC of the body. GitHub signs no
//!   timestamp, and not its `X-GitHub-Delivery` id.
//!
//! Either way [`verify`] returns the digest of exactly what was signed ([`Signed`]): the
//! webhook's idempotency key comes from signed content only, so a replay, inside the
//! window or (for GitHub) at any time, finds the operation its original started, whatever
//! unsigned headers it changes.

use std::time::Duration;

use axum::http::HeaderMap;
use ring::hmac;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    config::SignatureScheme,
    error::{Error, Result},
};

pub const LONGSHORE_HEADER: &str = "x-longshore-signature";
pub const GITHUB_HEADER: &str = "x-hub-signature-256";

/// The `X-Longshore-Signature` value for `body` signed at unix time `t`.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!(
        "t={t},sha256={}",
        hex(mac(secret, &[t.to_string().as_bytes(), b".", body]).as_ref())
    )
}

/// The `X-Hub-Signature-256` value for `body`, as GitHub computes it.
pub fn sign_github(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex(mac(secret, &[body]).as_ref()))
}

/// What a verified signature covers.
#[derive(Debug, PartialEq, Eq)]
pub struct Signed {
    /// SHA-256 of the signed bytes (`"<t>.<body>"`, or the body), in hex.
    pub digest: String,
}

impl Signed {
    fn of(parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        for part in parts {
            h.update(part);
        }
        Self {
            digest: hex(&h.finalize()),
        }
    }
}

/// Checks the request's signature under `scheme` at unix time `now`.
pub fn verify(
    scheme: SignatureScheme,
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    window: Duration,
) -> Result<Signed> {
    let header = match scheme {
        SignatureScheme::Longshore => "X-Longshore-Signature",
        SignatureScheme::Github => "X-Hub-Signature-256",
    };
    let value = headers
        .get(header)
        .ok_or_else(|| Error::Unauthorized(format!("the {header} header is missing")))?
        .to_str()
        .map_err(|_| Error::Unauthorized(format!("{header}: not visible ASCII")))?;
    let (expected, given) = match scheme {
        SignatureScheme::Github => {
            let given = value
                .strip_prefix("sha256=")
                .and_then(unhex)
                .ok_or_else(|| Error::Unauthorized(format!("{header}: expected sha256=<hex>")))?;
            (mac(secret, &[body]), given)
        }
        SignatureScheme::Longshore => {
            let malformed =
                || Error::Unauthorized(format!("{header}: expected t=<unix seconds>,sha256=<hex>"));
            let (mut t, mut sig) = (None, None);
            for part in value.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", v)) => t = Some(v),
                    Some(("sha256", v)) => sig = Some(v),
                    _ => {}
                }
            }
            let (t_text, sig) = (t.ok_or_else(malformed)?, sig.ok_or_else(malformed)?);
            let t: i64 = t_text.parse().map_err(|_| malformed())?;
            let given = unhex(sig).ok_or_else(malformed)?;
            // Check the MAC before the time, so an unsigned request learns nothing of the clock.
            let expected = mac(secret, &[t_text.as_bytes(), b".", body]);
            if !equal(expected.as_ref(), &given) {
                return Err(Error::Unauthorized(format!(
                    "{header}: signature does not match"
                )));
            }
            let age = now.abs_diff(t);
            if age > window.as_secs() {
                return Err(Error::Unauthorized(format!(
                    "{header}: timestamp t={t} is {age}s from the server's clock, outside the {}s replay window",
                    window.as_secs()
                )));
            }
            return Ok(Signed::of(&[t_text.as_bytes(), b".", body]));
        }
    };
    if equal(expected.as_ref(), &given) {
        Ok(Signed::of(&[body]))
    } else {
        Err(Error::Unauthorized(format!(
            "{header}: signature does not match"
        )))
    }
}

fn mac(secret: &[u8], parts: &[&[u8]]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, secret));
    for part in parts {
        ctx.update(part);
    }
    ctx.sign()
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const WINDOW: Duration = Duration::from_secs(300);

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    fn reason(r: Result<Signed>) -> String {
        match r {
            Err(Error::Unauthorized(m)) => m,
            other => panic!("expected 401, got {other:?}"),
        }
    }

    #[test]
    fn github_vector() {
        // The example from GitHub's "Validating webhook deliveries".
        assert_eq!(
            sign_github(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn longshore_signatures_verify_within_the_window_only() {
        let body = br#"{"a":1}"#;
        let sig = sign(b"k", 1_000, body);
        let h = headers(LONGSHORE_HEADER, &sig);
        let signed = verify(SignatureScheme::Longshore, b"k", &h, body, 1_100, WINDOW).unwrap();
        let later = headers(LONGSHORE_HEADER, &sign(b"k", 1_001, body));
        let resigned = verify(
            SignatureScheme::Longshore,
            b"k",
            &later,
            body,
            1_100,
            WINDOW,
        );
        assert_ne!(
            resigned.unwrap(),
            signed,
            "a delivery signed at another time is another delivery"
        );
        let m = reason(verify(
            SignatureScheme::Longshore,
            b"k",
            &h,
            body,
            1_400,
            WINDOW,
        ));
        assert!(m.contains("replay window") && m.contains("t=1000"), "{m}");
        let m = reason(verify(
            SignatureScheme::Longshore,
            b"other",
            &h,
            body,
            1_100,
            WINDOW,
        ));
        assert!(m.contains("does not match"), "{m}");
        let m = reason(verify(
            SignatureScheme::Longshore,
            b"k",
            &h,
            b"{\"a\":2}",
            1_100,
            WINDOW,
        ));
        assert!(m.contains("does not match"), "{m}");
        let m = reason(verify(
            SignatureScheme::Longshore,
            b"k",
            &HeaderMap::new(),
            body,
            1_100,
            WINDOW,
        ));
        assert!(m.contains("missing"), "{m}");
        let h = headers(LONGSHORE_HEADER, "sha256=00");
        assert!(
            reason(verify(
                SignatureScheme::Longshore,
                b"k",
                &h,
                body,
                0,
                WINDOW
            ))
            .contains("expected t=")
        );
    }

    #[test]
    fn github_signatures_verify() {
        let h = headers(GITHUB_HEADER, &sign_github(b"k", b"body"));
        verify(SignatureScheme::Github, b"k", &h, b"body", 0, WINDOW).unwrap();
        assert!(verify(SignatureScheme::Github, b"k", &h, b"bodz", 0, WINDOW).is_err());
        let h = headers(GITHUB_HEADER, "sha256=zz");
        assert!(verify(SignatureScheme::Github, b"k", &h, b"body", 0, WINDOW).is_err());
    }
}
