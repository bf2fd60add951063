//! Durations in configuration and on the wire, written the way people write them:
//! `"500ms"`, `"30s"`, `"2m"`, `"7d"`, `"1h 30m"` (or ISO 8601, `"PT30S"`).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parses a non-negative duration such as `"30s"` or `"2m 30s"`.
pub fn parse(s: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration = s.trim().parse().map_err(|e| {
        format!("invalid duration {s:?} (expected e.g. \"500ms\", \"30s\", \"2m\"): {e}")
    })?;
    Duration::try_from(signed).map_err(|_| format!("duration {s:?} must not be negative"))
}

/// Formats a duration in the same friendly form [`parse`] reads.
pub fn format(d: Duration) -> String {
    let signed = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    format!("{signed:#}")
}

/// `#[serde(with = "longshore_contract::duration")]` for a `Duration` field.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(serde::de::Error::custom)
}

/// See [`deserialize`].
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_friendly_and_iso() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2m 30s").unwrap(), Duration::from_secs(150));
        assert_eq!(parse("PT30S").unwrap(), Duration::from_secs(30));
        assert_eq!(
            parse(&format(Duration::from_secs(90))).unwrap(),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn rejects_garbage_and_negatives_with_the_input_named() {
        assert!(parse("soon").unwrap_err().contains("\"soon\""));
        assert!(parse("-5s").unwrap_err().contains("negative"));
    }
}
