//! Idempotency keys, the operation ids derived from them, and request fingerprints.
//!
//! An operation id is a stable hash of the submitting source and its idempotency key, so
//! that any dispatcher replica maps a retried request to the same id without coordination,
//! and so the id is always safe as a KV key, a subject token and a `Nats-Msg-Id`, whatever
//! characters the key holds. Keys are scoped by source: two pipelines that happen to use
//! the same key do not collide. The key as given is kept in the record.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The longest idempotency key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// An idempotency key as a client gave it (or as the dispatcher generated it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Accepts 1 to 256 bytes of visible characters and spaces (no control characters).
    pub fn new(key: impl Into<String>) -> Result<Self, &'static str> {
        let key = key.into();
        if key.is_empty() {
            return Err("must not be empty");
        }
        if key.len() > MAX_KEY_LEN {
            return Err("must be at most 256 bytes");
        }
        if key.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Self(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<IdempotencyKey> for String {
    fn from(value: IdempotencyKey) -> Self {
        value.0
    }
}

/// An operation's id: `op-` and 32 lowercase base32 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OperationId(String);

const ID_PREFIX: &str = "op-";
const ID_HASH_LEN: usize = 32;

impl OperationId {
    /// The id for `key` as submitted by `source`.
    pub fn derive(source: &str, key: &IdempotencyKey) -> Self {
        let mut h = Sha256::new();
        h.update(source.as_bytes());
        h.update([0]);
        h.update(key.as_str().as_bytes());
        let digest = h.finalize();
        // 20 bytes = 160 bits = exactly 32 base32 characters.
        Self(format!("{ID_PREFIX}{}", base32_lower(&digest[..20])))
    }

    /// Parses an id from a URL or message, checking its shape.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let hash = s.strip_prefix(ID_PREFIX).ok_or("must start with \"op-\"")?;
        if hash.len() != ID_HASH_LEN
            || !hash
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        {
            return Err("must be \"op-\" followed by 32 base32 characters");
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OperationId {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<OperationId> for String {
    fn from(value: OperationId) -> Self {
        value.0
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 4648 base32, lowercase and unpadded: the alphabet of ids and fence keys (safe in
/// KV keys, subjects and message ids).
pub fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// A fingerprint of a request's meaning: equal for the same JSON whatever the key order,
/// different for any other content. Used to answer 422 when a key is reused with another body.
pub fn fingerprint(value: &Value) -> String {
    let mut h = Hashing(Sha256::new());
    feed_canonical(&mut h, value);
    let digest = h.0.finalize();
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The fingerprint of what an operation does. Pipeline context is left out: a pipeline that
/// retries a stage sends the same key with the next attempt number, and that is the same
/// request, not a different one.
pub fn intent_fingerprint(spec: &crate::OperationSpec) -> String {
    let mut value = serde_json::to_value(spec).unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        obj.remove("pipeline");
    }
    fingerprint(&value)
}

/// A hasher JSON is written into as it is serialized, without a string in between.
struct Hashing(Sha256);

impl std::io::Write for Hashing {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Feeds `value` in its canonical form: objects' keys sorted, every member and item
/// followed by a comma, keys and scalars as compact JSON.
fn feed_canonical(h: &mut Hashing, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by_key(|(k, _)| *k);
            h.0.update(b"{");
            for (k, v) in members {
                let _ = serde_json::to_writer(&mut *h, k);
                h.0.update(b":");
                feed_canonical(h, v);
                h.0.update(b",");
            }
            h.0.update(b"}");
        }
        Value::Array(items) => {
            h.0.update(b"[");
            for item in items {
                feed_canonical(h, item);
                h.0.update(b",");
            }
            h.0.update(b"]");
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *h, scalar);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(s: &str) -> IdempotencyKey {
        IdempotencyKey::new(s).unwrap()
    }

    #[test]
    fn ids_are_stable_kv_safe_and_scoped_by_source() {
        let a = OperationId::derive("api", &key("deploy/web #42 ✓"));
        assert_eq!(a, OperationId::derive("api", &key("deploy/web #42 ✓")));
        assert_ne!(a, OperationId::derive("github", &key("deploy/web #42 ✓")));
        assert_ne!(a, OperationId::derive("api", &key("deploy/web #43 ✓")));
        assert_eq!(a.as_str().len(), 3 + 32);
        assert_eq!(OperationId::parse(a.as_str()), Ok(a));
    }

    #[test]
    fn base32_matches_rfc4648() {
        // RFC 4648 test vector "foobar" -> MZXW6YTBOI (lowercased, unpadded).
        assert_eq!(base32_lower(b"foobar"), "mzxw6ytboi");
    }

    #[test]
    fn bad_keys_and_ids_are_refused_with_a_reason() {
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new("a\nb").is_err());
        assert!(IdempotencyKey::new("x".repeat(257)).is_err());
        assert!(OperationId::parse("op-short").is_err());
        assert!(OperationId::parse("../../etc/passwd").is_err());
    }

    #[test]
    fn fingerprint_ignores_key_order_but_not_content() {
        let a = json!({"a": 1, "b": {"c": [1, 2], "d": "x"}});
        let b = json!({"b": {"d": "x", "c": [1, 2]}, "a": 1});
        let c = json!({"b": {"d": "x", "c": [2, 1]}, "a": 1});
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }

    /// Fingerprints are kept in records and compared with those of requests that reuse a
    /// key, across versions: the value for a given body never changes.
    #[test]
    fn a_fingerprint_is_the_same_in_every_version() {
        let v = json!({"z": "é\"\n", "a": [true, null, 1.5, -2, {"k": "v"}], "m": {}});
        assert_eq!(fingerprint(&v), "5d7fa6709c531aa0c8312be1806c0cdc");
    }
}
