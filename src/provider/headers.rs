//! What the provider said about waiting, read from response headers and
//! the error message.
//!
//! Every hint present is read: `retry-after-ms`, `Retry-After` (seconds,
//! fractions allowed, or an HTTP date), `x-ratelimit-reset-requests`,
//! `x-ratelimit-reset-tokens` (durations such as `1s`, `6m0s`, `20ms`,
//! `1h2m3.5s`), and "try again in 7m12s" in the message. **The longest
//! wins**: sending before any of them ends risks another 429 and a longer
//! penalty.
//!
//! An HTTP date is turned into a wait by the provider's own clock (the
//! answer's `Date` header) when it sent one, so a worker whose clock is off
//! neither sends early nor waits too long.
//!
//! A zero, negative, non-finite or malformed value, or a date in the past,
//! is no usable hint, so the caller falls back to its own backoff. Huge
//! values are capped at [`MAX_WAIT`], not refused.

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use std::time::Duration;

/// The longest wait taken from a header.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// How long the provider asked us to wait, if it said: the longest of the
/// header hints. `now` is the local clock, used for an HTTP date only when
/// the answer has no `Date` header.
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let server_now = get("date")
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .map(DateTime::<Utc>::from)
        .unwrap_or(now);
    let hints = [
        get("retry-after-ms")
            .and_then(|v| v.parse::<f64>().ok())
            .and_then(|ms| from_secs(ms / 1000.0)),
        get("retry-after").and_then(|value| match value.parse::<f64>() {
            Ok(secs) => from_secs(secs),
            Err(_) => httpdate::parse_http_date(value).ok().and_then(|at| {
                let at: DateTime<Utc> = at.into();
                (at - server_now)
                    .to_std()
                    .ok()
                    .and_then(|d| from_secs(d.as_secs_f64()))
            }),
        }),
        get("x-ratelimit-reset-requests").and_then(parse_duration),
        get("x-ratelimit-reset-tokens").and_then(parse_duration),
    ];
    hints
        .into_iter()
        .flatten()
        .filter_map(|d| from_secs(d.as_secs_f64()))
        .max()
}

/// A wait named in a provider's message: "Please try again in 7m12s",
/// "try again in 20ms", "try again in 1.5s".
pub fn hint_in_message(message: &str) -> Option<Duration> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find("try again in ")? + "try again in ".len();
    let rest = &message[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
        .unwrap_or(rest.len());
    let text = rest[..end].trim_end_matches('.');
    parse_duration(text).and_then(|d| from_secs(d.as_secs_f64()))
}

fn from_secs(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs > 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_WAIT.as_secs_f64())))
}

/// Parses OpenAI's reset durations: `1s`, `6m0s`, `20ms`, `1.5s`, `1h2m3s`, `0.5ms`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    total
        .is_finite()
        .then(|| Duration::from_secs_f64(total.min(MAX_WAIT.as_secs_f64())))
}

/// The rate-limit state the provider reported with an answer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimitInfo {
    /// Requests per minute allowed (`x-ratelimit-limit-requests`).
    pub limit_requests: Option<u32>,
    /// Requests left in the current window (`x-ratelimit-remaining-requests`).
    pub remaining_requests: Option<u32>,
    /// Until the window refills (`x-ratelimit-reset-requests`).
    pub reset_requests: Option<Duration>,
}

/// Reads the `x-ratelimit-*-requests` headers.
pub fn rate_limit_info(headers: &HeaderMap) -> RateLimitInfo {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    RateLimitInfo {
        limit_requests: get("x-ratelimit-limit-requests").and_then(|v| v.parse().ok()),
        remaining_requests: get("x-ratelimit-remaining-requests").and_then(|v| v.parse().ok()),
        reset_requests: get("x-ratelimit-reset-requests").and_then(parse_duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn retry_after_forms_and_edge_cases() {
        let now: DateTime<Utc> = "2026-11-23T10:00:00Z".parse().unwrap();
        let ms = Duration::from_millis;
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<Duration>);
        let cases: &[Case] = &[
            (&[("retry-after", "2")], Some(ms(2000))),
            (&[("retry-after", "0.5")], Some(ms(500))),
            (&[("retry-after", "0")], None),
            (&[("retry-after", "-3")], None),
            (&[("retry-after", "inf")], None),
            (&[("retry-after", "nan")], None),
            (&[("retry-after", "soon")], None),
            (&[("retry-after", "99999999")], Some(MAX_WAIT)),
            (
                &[("retry-after", "Mon, 23 Nov 2026 10:00:30 GMT")],
                Some(ms(30_000)),
            ),
            (
                &[("retry-after", "Monday, 23-Nov-26 10:00:05 GMT")],
                Some(ms(5000)),
            ),
            (
                &[("retry-after", "Mon Nov 23 10:00:07 2026")],
                Some(ms(7000)),
            ),
            (&[("retry-after", "Mon, 23 Nov 2026 09:59:00 GMT")], None),
            (
                &[("retry-after", "Fri, 01 Jan 2100 00:00:00 GMT")],
                Some(MAX_WAIT),
            ),
            (&[("retry-after-ms", "1500")], Some(ms(1500))),
            (
                &[("retry-after-ms", "12.5")],
                Some(Duration::from_micros(12_500)),
            ),
            // Every hint is read; the longest wins.
            (
                &[("retry-after-ms", "100"), ("retry-after", "9")],
                Some(ms(9000)),
            ),
            (
                &[("retry-after-ms", "9500"), ("retry-after", "9")],
                Some(ms(9500)),
            ),
            (
                &[
                    ("retry-after", "2"),
                    ("x-ratelimit-reset-requests", "27.876s"),
                ],
                Some(ms(27_876)),
            ),
            // An HTTP date counts from the provider's clock (its Date header).
            (
                &[
                    ("retry-after", "Mon, 23 Nov 2026 10:01:00 GMT"),
                    ("date", "Mon, 23 Nov 2026 10:00:45 GMT"),
                ],
                Some(ms(15_000)),
            ),
            (
                &[
                    ("retry-after", "Mon, 23 Nov 2026 09:59:30 GMT"),
                    ("date", "Mon, 23 Nov 2026 09:59:00 GMT"),
                ],
                Some(ms(30_000)),
            ),
            (
                &[("retry-after-ms", "nope"), ("retry-after", "9")],
                Some(ms(9000)),
            ),
            (&[("x-ratelimit-reset-requests", "6m0s")], Some(ms(360_000))),
            (&[("x-ratelimit-reset-requests", "20ms")], Some(ms(20))),
            (&[("x-ratelimit-reset-tokens", "1.5s")], Some(ms(1500))),
            (
                &[
                    ("x-ratelimit-reset-requests", "1s"),
                    ("x-ratelimit-reset-tokens", "9s"),
                ],
                Some(ms(9000)),
            ),
            (&[("x-ratelimit-reset-requests", "0s")], None),
            (&[], None),
        ];
        for (pairs, want) in cases {
            assert_eq!(retry_after(&headers(pairs), now), *want, "{pairs:?}");
        }
    }

    #[test]
    fn waits_named_in_messages() {
        let cases = [
            (
                "Rate limit reached ... Please try again in 7m12s.",
                Some(432_000),
            ),
            ("Please try again in 20ms.", Some(20)),
            ("please TRY AGAIN IN 1.5s", Some(1500)),
            (
                "Limit 200, Used 200. Please try again in 1h2m3s. Visit",
                Some(3_723_000),
            ),
            ("Please try again later.", None),
            ("try again in 0s", None),
            ("no hint here", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                hint_in_message(text).map(|d| d.as_millis() as u64),
                want,
                "{text}"
            );
        }
    }

    #[test]
    fn reset_durations() {
        let cases = [
            ("1s", Some(1000)),
            ("6m0s", Some(360_000)),
            ("1h2m3s", Some(3_723_000)),
            ("20ms", Some(20)),
            ("0.5ms", Some(0)),
            ("1.5s", Some(1500)),
            ("", None),
            ("5", None),
            ("5x", None),
            ("s", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_duration(text).map(|d| d.as_millis() as u64),
                want,
                "{text}"
            );
        }
    }

    #[test]
    fn rate_limit_info_reads_the_request_headers() {
        let h = headers(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "850ms"),
        ]);
        assert_eq!(
            rate_limit_info(&h),
            RateLimitInfo {
                limit_requests: Some(60),
                remaining_requests: Some(0),
                reset_requests: Some(Duration::from_millis(850))
            }
        );
        assert_eq!(
            rate_limit_info(&headers(&[("x-ratelimit-limit-requests", "lots")])),
            RateLimitInfo::default()
        );
    }
}
