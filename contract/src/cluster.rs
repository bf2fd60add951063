//! Cluster names, and the work-queue subject each cluster's operations are published on.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The prefix of every operation subject: `longshore.ops.<cluster>`.
pub const SUBJECT_PREFIX: &str = "longshore.ops";

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

    /// The subject this cluster's operations are published on.
    pub fn subject(&self) -> String {
        format!("{SUBJECT_PREFIX}.{}", self.0)
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
        assert_eq!(c.subject(), "longshore.ops.prod-eu-1");
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
