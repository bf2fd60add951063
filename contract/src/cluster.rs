//! Cluster and pool names, and the work-queue subject each cluster's operations are
//! published on: `longshore.ops.<pool>.<cluster>`, so each pool's consumer filters its own
//! subjects (`longshore.ops.<pool>.>`) and no two pools' filters overlap, as a work-queue
//! stream requires. Before the registry, subjects were `longshore.ops.<cluster>`; those
//! ([`legacy_subject`]) are still consumed, by the pool that served them, so an upgrade
//! loses nothing queued.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The prefix of every operation subject: `longshore.ops.<pool>.<cluster>`.
pub const SUBJECT_PREFIX: &str = "longshore.ops";

/// The header of an operation forwarded from one pool to another: the stream sequence it
/// was first queued with, which orders it among the operations on its objects.
pub const ORDER_HEADER: &str = "Longshore-Order";

/// The pool that serves clusters registered without one, and workers configured without one.
pub const DEFAULT_POOL: &str = "workers";

/// A cluster's name as pipelines, subjects and the worker's registry know it.
///
/// Restricted to a DNS label (RFC 1123: at most 63 lowercase letters, digits and `-`,
/// starting and ending with a letter or digit) so it is always a single, safe subject token.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterName(String);

/// Why a string is not a valid cluster name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cluster name {name:?}: {reason}")]
pub struct InvalidClusterName {
    pub name: String,
    pub reason: &'static str,
}

impl ClusterName {
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidClusterName> {
        let name = name.into();
        match dns_label_problem(&name) {
            None => Ok(Self(name)),
            Some(reason) => Err(InvalidClusterName { name, reason }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The subject of this cluster's operations when `pool` serves it.
    pub fn subject(&self, pool: &PoolName) -> String {
        format!("{SUBJECT_PREFIX}.{pool}.{}", self.0)
    }
}

/// The subject operations for `cluster` were published on before pools were in subjects.
pub fn legacy_subject(cluster: &ClusterName) -> String {
    format!("{SUBJECT_PREFIX}.{cluster}")
}

/// The pool and cluster an operation subject names: `longshore.ops.<pool>.<cluster>`, or
/// `longshore.ops.<cluster>` (legacy, no pool).
pub fn parse_subject(subject: &str) -> Option<(Option<PoolName>, ClusterName)> {
    let rest = subject.strip_prefix(SUBJECT_PREFIX)?.strip_prefix('.')?;
    match rest.split_once('.') {
        Some((pool, cluster)) => Some((
            Some(PoolName::new(pool).ok()?),
            ClusterName::new(cluster).ok()?,
        )),
        None => Some((None, ClusterName::new(rest).ok()?)),
    }
}

/// A worker pool's name: a subject token and the name of its durable consumer, so a DNS
/// label like cluster names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PoolName(String);

impl PoolName {
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidClusterName> {
        let name = name.into();
        match dns_label_problem(&name) {
            None => Ok(Self(name)),
            Some(reason) => Err(InvalidClusterName { name, reason }),
        }
    }

    /// The default pool, `workers`.
    pub fn default_pool() -> Self {
        Self(DEFAULT_POOL.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The filter of this pool's consumer: every cluster it serves.
    pub fn filter(&self) -> String {
        format!("{SUBJECT_PREFIX}.{}.>", self.0)
    }
}

impl Default for PoolName {
    fn default() -> Self {
        Self::default_pool()
    }
}

impl TryFrom<String> for PoolName {
    type Error = InvalidClusterName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<PoolName> for String {
    fn from(value: PoolName) -> Self {
        value.0
    }
}

impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Returns why `s` is not an RFC 1123 DNS label, or `None` if it is one.
pub fn dns_label_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("must not be empty");
    }
    if s.len() > 63 {
        return Some("must be at most 63 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("must consist of lowercase letters, digits and '-'");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("must start and end with a letter or digit");
    }
    None
}

impl TryFrom<String> for ClusterName {
    type Error = InvalidClusterName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<ClusterName> for String {
    fn from(value: ClusterName) -> Self {
        value.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels_and_builds_subjects() {
        let c = ClusterName::new("prod-eu-1").unwrap();
        let pool = PoolName::new("edge").unwrap();
        assert_eq!(c.subject(&pool), "longshore.ops.edge.prod-eu-1");
        assert_eq!(legacy_subject(&c), "longshore.ops.prod-eu-1");
        assert_eq!(pool.filter(), "longshore.ops.edge.>");
        assert_eq!(
            parse_subject("longshore.ops.edge.prod-eu-1"),
            Some((Some(pool), c.clone()))
        );
        assert_eq!(parse_subject("longshore.ops.prod-eu-1"), Some((None, c)));
        assert_eq!(parse_subject("longshore.dead.x.y"), None);
        assert_eq!(parse_subject("longshore.ops.a.b.c"), None);
    }

    #[test]
    fn rejects_what_would_break_a_subject() {
        for bad in ["", "Prod", "a.b", "a*", ">", "-a", "a-", &"x".repeat(64)] {
            let err = ClusterName::new(bad).unwrap_err();
            assert_eq!(err.name, bad);
        }
    }

    #[test]
    fn deserializing_validates() {
        let err = serde_json::from_str::<ClusterName>("\"a.b\"").unwrap_err();
        assert!(err.to_string().contains("lowercase"), "{err}");
    }
}
