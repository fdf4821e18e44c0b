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
    /// The wall clock now (epoch milliseconds; 0 if the clock is before 1970).
    pub fn now() -> Timestamp {
        Timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        )
    }

    /// Parses RFC 3339 (`2026-01-01T00:00:00.250Z`, any offset) or a decimal
    /// string of epoch milliseconds.
    pub fn parse(s: &str) -> Result<Timestamp, TypesError> {
        if let Some(ms) = fast_rfc3339(s.as_bytes()) {
            return Ok(Timestamp(ms));
        }
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

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The common shape `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` for years
/// 1970–9999, without allocation; `None` sends anything else (and anything
/// unusual, such as a leap second) to chrono's full parser.
fn fast_rfc3339(b: &[u8]) -> Option<i64> {
    fn num(b: &[u8]) -> Option<i64> {
        let mut n = 0i64;
        for &c in b {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + (c - b'0') as i64;
        }
        Some(n)
    }
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (h, mi, sec) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    if y < 1970 || !(1..=12).contains(&mo) || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let dim = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d < 1 || d > dim[(mo - 1) as usize] {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                ms = ms * 10 + (b[i] - b'0') as i64;
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..3 {
            ms *= 10;
        }
    }
    let offset_min = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] => {
            let (oh, om) = (num(&[*oh1, *oh2])?, num(&[*om1, *om2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let m = oh * 60 + om;
            if *sign == b'-' { -m } else { m }
        }
        _ => return None,
    };
    // Days since the epoch of a proleptic Gregorian date (Hinnant's algorithm).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2 / 400;
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3_600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1_000 + ms)
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
    for (unit, m) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
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

    proptest::proptest! {
        #[test]
        fn fast_path_agrees_with_chrono(ms in 0i64..253_402_300_799_999, frac in 0usize..6, off in -1439i64..1440) {
            let d = DateTime::<Utc>::from_timestamp_millis(ms).unwrap();
            let tz = chrono::FixedOffset::east_opt(off as i32 * 60).unwrap();
            let local = d.with_timezone(&tz);
            let mut text = local.format("%Y-%m-%dT%H:%M:%S").to_string();
            if frac > 0 {
                let digits = format!("{:03}000", ms.rem_euclid(1000));
                text.push('.');
                text.push_str(&digits[..frac]);
            }
            text.push_str(&if off == 0 { "Z".to_string() } else { local.format("%:z").to_string() });
            let fast = fast_rfc3339(text.as_bytes());
            let slow = DateTime::parse_from_rfc3339(&text).ok().map(|d| d.timestamp_millis());
            // The fast path may decline, never disagree; and it takes every
            // UTC time of 1970 or later.
            if fast.is_some() {
                proptest::prop_assert_eq!(fast, slow, "{}", text);
            }
            if off == 0 {
                proptest::prop_assert!(fast.is_some(), "{}", text);
            }
        }
    }

    #[test]
    fn fast_path_refuses_what_it_does_not_know() {
        for s in [
            "2026-02-30T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:60Z",
            "1969-12-31T23:59:59Z",
            "2026-01-01 00:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00",
        ] {
            assert_eq!(fast_rfc3339(s.as_bytes()), None, "{s}");
        }
        assert_eq!(
            fast_rfc3339(b"2024-02-29T12:00:00.5+01:30"),
            Some(1_709_202_600_500)
        );
        assert_eq!(
            Timestamp::parse("2024-02-29T12:00:00.5+01:30").unwrap().0,
            1_709_202_600_500
        );
    }

    #[test]
    fn timestamps_round_trip() {
        let t = Timestamp::parse("2026-01-01T00:00:00.250Z").unwrap();
        assert_eq!(t.0, 1_767_225_600_250);
        assert_eq!(t.to_rfc3339(), "2026-01-01T00:00:00.250Z");
        assert_eq!(
            Timestamp::parse("2026-01-01T01:00:00.250+01:00").unwrap(),
            t
        );
        assert_eq!(Timestamp::parse("1767225600250").unwrap(), t);
        assert!(Timestamp::parse("yesterday").is_err());
    }
}
