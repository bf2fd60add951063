//! Fault injection, per cluster: latency, error statuses, connection resets before or after
//! a write is committed, and a cluster that is unavailable.
//!
//! A [`Trigger`] fires for the next `next` matching requests (counting down), otherwise with
//! `probability`, otherwise always. Admin and debug endpoints are never faulted.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which requests latency and error faults apply to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultScope {
    #[default]
    All,
    Writes,
}

/// When a fault fires.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Trigger {
    /// Fire for this many more matching requests, then stop.
    pub next: Option<u32>,
    /// Fire with this probability (0.0 to 1.0); ignored when `next` is set.
    pub probability: Option<f64>,
}

impl Trigger {
    /// Fires for the next `n` requests.
    pub fn next(n: u32) -> Self {
        Trigger {
            next: Some(n),
            probability: None,
        }
    }

    /// Fires with probability `p`.
    pub fn probability(p: f64) -> Self {
        Trigger {
            next: None,
            probability: Some(p),
        }
    }

    fn fire(&mut self) -> bool {
        match (&mut self.next, self.probability) {
            (Some(0), _) => false,
            (Some(n), _) => {
                *n -= 1;
                true
            }
            (None, Some(p)) => rand::random::<f64>() < p,
            (None, None) => true,
        }
    }
}

/// Latency added before the request is handled: fixed (`min_ms` only) or uniform in a range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Latency {
    pub min_ms: u64,
    pub max_ms: Option<u64>,
}

/// An error status answered instead of handling the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorFault {
    /// HTTP status: 429, 500, 503, 504 (any 4xx/5xx is accepted).
    pub status: u16,
    /// Sent as `Retry-After` and `details.retryAfterSeconds`.
    #[serde(default)]
    pub retry_after_seconds: Option<u64>,
    #[serde(default)]
    pub when: Trigger,
}

/// The faults of one cluster. JSON example:
/// `{"scope":"writes","latency":{"min_ms":50,"max_ms":100},"errors":[{"status":503,"when":{"next":2}}],
///   "reset_after_commit":{"next":1},"unavailable":false}`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    pub scope: FaultScope,
    pub latency: Option<Latency>,
    /// Checked in order; the first that fires answers the request.
    pub errors: Vec<ErrorFault>,
    /// Writes only: the connection is reset before the write is handled.
    pub reset_before_write: Option<Trigger>,
    /// Writes only: the write is handled and committed, then the connection is reset
    /// instead of answering.
    pub reset_after_commit: Option<Trigger>,
    /// Every request to the cluster has its connection reset.
    pub unavailable: bool,
}

impl Faults {
    /// Every write answered with `status` (e.g. 422: a permanent refusal; 503: a transient
    /// one, until cleared); reads are served.
    pub fn writes_answered(status: u16) -> Self {
        Self {
            scope: FaultScope::Writes,
            errors: vec![ErrorFault {
                status,
                retry_after_seconds: None,
                when: Trigger::default(),
            }],
            ..Default::default()
        }
    }

    /// Checks the values, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        for (i, e) in self.errors.iter().enumerate() {
            if !(400..=599).contains(&e.status) {
                return Err(format!(
                    "errors[{i}].status: must be a 4xx or 5xx code, got {}",
                    e.status
                ));
            }
        }
        if let Some(l) = &self.latency
            && l.max_ms.is_some_and(|m| m < l.min_ms)
        {
            return Err("latency.max_ms: must not be below latency.min_ms".into());
        }
        let triggers = self
            .errors
            .iter()
            .map(|e| ("errors[].when", &e.when))
            .chain(
                [
                    ("reset_before_write", &self.reset_before_write),
                    ("reset_after_commit", &self.reset_after_commit),
                ]
                .into_iter()
                .filter_map(|(n, t)| t.as_ref().map(|t| (n, t))),
            );
        for (name, t) in triggers {
            if t.probability.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
                return Err(format!("{name}.probability: must be between 0 and 1"));
            }
        }
        Ok(())
    }

    /// Decides the faults for one request, counting down `next` triggers.
    pub fn decide(&mut self, is_write: bool) -> Decision {
        let mut d = Decision {
            unavailable: self.unavailable,
            ..Decision::default()
        };
        let in_scope = is_write || self.scope == FaultScope::All;
        if in_scope {
            if let Some(l) = &self.latency {
                let ms = match l.max_ms {
                    Some(max) if max > l.min_ms => rand::random_range(l.min_ms..=max),
                    _ => l.min_ms,
                };
                d.latency = Some(Duration::from_millis(ms));
            }
            d.error = self
                .errors
                .iter_mut()
                .find_map(|e| e.when.fire().then_some((e.status, e.retry_after_seconds)));
        }
        if is_write && d.error.is_none() {
            d.reset_before_write = self.reset_before_write.as_mut().is_some_and(Trigger::fire);
            if !d.reset_before_write {
                d.reset_after_commit = self.reset_after_commit.as_mut().is_some_and(Trigger::fire);
            }
        }
        d
    }
}

/// What to do to one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub unavailable: bool,
    pub latency: Option<Duration>,
    pub error: Option<(u16, Option<u64>)>,
    pub reset_before_write: bool,
    pub reset_after_commit: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_n_counts_down_and_scope_limits_to_writes() {
        let mut f = Faults {
            scope: FaultScope::Writes,
            errors: vec![ErrorFault {
                status: 503,
                retry_after_seconds: None,
                when: Trigger::next(2),
            }],
            ..Faults::default()
        };
        assert_eq!(f.decide(false).error, None, "reads are out of scope");
        assert_eq!(f.decide(true).error, Some((503, None)));
        assert_eq!(f.decide(true).error, Some((503, None)));
        assert_eq!(f.decide(true).error, None);
        assert_eq!(f.errors[0].when.next, Some(0));
    }

    #[test]
    fn resets_only_for_writes() {
        let mut f = Faults {
            reset_after_commit: Some(Trigger::next(1)),
            ..Faults::default()
        };
        assert!(!f.decide(false).reset_after_commit);
        assert!(f.decide(true).reset_after_commit);
        assert!(!f.decide(true).reset_after_commit);
    }

    #[test]
    fn json_format_and_validation() {
        let f: Faults = serde_json::from_str(
            r#"{"latency":{"min_ms":5,"max_ms":10},"errors":[{"status":429,"retry_after_seconds":1,"when":{"probability":0.5}}]}"#,
        )
        .unwrap();
        assert!(f.validate().is_ok());
        let bad = Faults {
            errors: vec![ErrorFault {
                status: 200,
                retry_after_seconds: None,
                when: Trigger::default(),
            }],
            ..f
        };
        assert!(bad.validate().unwrap_err().contains("errors[0].status"));
        assert!(serde_json::from_str::<Faults>(r#"{"nope":1}"#).is_err());
    }
}
