//! Event time: milliseconds since the Unix epoch, parsed from RFC 3339 or
//! epoch milliseconds, and durations written as `500ms`, `30s`, `5m`, `1h`, `7d`.

use crate::error::TypesError;
use chrono::{DateTime, SecondsFormat, Utc};

/// A point in event time, in milliseconds since the Unix epoch (UTC).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Parses RFC 3339 (`2026-01-01T00:00:00.250Z`, any offset) or a decimal
    /// string of epoch milliseconds.
    pub fn parse(s: &str) -> Result<Timestamp, TypesError> {
        if let Ok(ms) = s.parse::<i64>() {
            return Ok(Timestamp(ms));
        }
        DateTime::parse_from_rfc3339(s)
            .map(|d| Timestamp(d.timestamp_millis()))
            .map_err(|_| TypesError::Timestamp(s.to_string()))
    }

    /// RFC 3339 in UTC with millisecond precision.
    pub fn to_rfc3339(self) -> String {
        match DateTime::<Utc>::from_timestamp_millis(self.0) {
            Some(d) => d.to_rfc3339_opts(SecondsFormat::Millis, true),
            None => self.0.to_string(),
        }
    }

    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Parses a duration such as `5m` or `24h` into milliseconds. Units: `ms`,
/// `s`, `m`, `h`, `d`. The number must be a positive integer.
pub fn parse_duration_ms(s: &str) -> Result<i64, TypesError> {
    let err = || TypesError::Duration(s.to_string());
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (num, unit) = t.split_at(split);
    let n: i64 = num.parse().map_err(|_| err())?;
    let mult = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(err()),
    };
    if n <= 0 {
        return Err(err());
    }
    n.checked_mul(mult).ok_or_else(err)
}

/// Writes milliseconds back in the largest unit that divides them exactly.
pub fn format_duration_ms(ms: i64) -> String {
    for (unit, m) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms % m == 0 && ms != 0 {
            return format!("{}{unit}", ms / m);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_reject() {
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("24h"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("7d"), Ok(604_800_000));
        for bad in ["", "5", "m", "5x", "-5m", "0s", "1.5h"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration_ms(86_400_000), "1d");
        assert_eq!(format_duration_ms(300_000), "5m");
        assert_eq!(format_duration_ms(1_500), "1500ms");
    }

    #[test]
    fn timestamps_round_trip() {
        let t = Timestamp::parse("2026-01-01T00:00:00.250Z").unwrap();
        assert_eq!(t.0, 1_767_225_600_250);
        assert_eq!(t.to_rfc3339(), "2026-01-01T00:00:00.250Z");
        assert_eq!(Timestamp::parse("2026-01-01T01:00:00.250+01:00").unwrap(), t);
        assert_eq!(Timestamp::parse("1767225600250").unwrap(), t);
        assert!(Timestamp::parse("yesterday").is_err());
    }
}
