//! Human durations (`30s`, `15m`, `1h`, `7d`) for `--since` and `?since=`.
//!
//! Pure functions, so the CLI and the HTTP API accept exactly the same forms.

use chrono::{DateTime, Utc};
use std::time::Duration;

/// A duration or time that could not be read. The text lists the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {0:?}: use a whole number followed by s, m, h or d (e.g. 30s, 15m, 1h, 7d)"
)]
pub struct InvalidDuration(pub String);

/// Parses `<n><unit>` with `n` a whole number and unit `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<Duration, InvalidDuration> {
    let bad = || InvalidDuration(text.to_string());
    let s = text.trim();
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = s.split_at(unit_at);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let secs_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    // More than ~100 years is surely a typo; refusing it also keeps chrono in range.
    let secs = n
        .checked_mul(secs_per)
        .filter(|&s| s <= 100 * 365 * 86_400)
        .ok_or_else(bad)?;
    Ok(Duration::from_secs(secs))
}

/// Reads `--since` / `?since=`: a duration back from `now` (`1h`) or an
/// RFC 3339 time (`2026-01-01T00:00:00Z`).
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, InvalidDuration> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(at.with_timezone(&Utc));
    }
    let ago = parse_duration(text)?;
    let ago = chrono::Duration::from_std(ago).map_err(|_| InvalidDuration(text.to_string()))?;
    Ok(now - ago)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_unit() {
        let cases = [
            ("30s", 30),
            ("15m", 900),
            ("1h", 3600),
            ("7d", 604_800),
            ("0s", 0),
            (" 2h ", 7200),
        ];
        for (text, secs) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_other_forms_and_names_the_accepted_ones() {
        for text in [
            "",
            "h",
            "1",
            "1w",
            "1.5h",
            "-1h",
            "1 h",
            "1hm",
            "99999999999999999999d",
            "40000d",
        ] {
            let err = parse_duration(text).unwrap_err().to_string();
            assert!(err.contains("30s, 15m, 1h, 7d"), "{text}: {err}");
        }
    }

    #[test]
    fn since_takes_a_duration_back_or_a_timestamp() {
        let now = DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let hour_ago = DateTime::parse_from_rfc3339("2026-05-01T11:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_since("1h", now), Ok(hour_ago));
        assert_eq!(parse_since("2026-05-01T11:00:00Z", now), Ok(hour_ago));
        assert!(parse_since("yesterday", now).is_err());
    }
}
