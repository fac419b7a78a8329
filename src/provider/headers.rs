//! What the provider said about waiting, read from response headers and
//! from the error message.
//!
//! Every hint present is read and the LONGEST one wins: `retry-after-ms`,
//! `Retry-After` (seconds, fractions allowed, or an HTTP date),
//! `x-ratelimit-reset-requests` and `x-ratelimit-reset-tokens` (durations
//! such as `1s`, `6m0s`, `20ms`, `1h2m3.5s`), and, through [`wait_hint`],
//! OpenAI's `... Please try again in 7m12s.` in the error message. Each
//! hint tells of one limit; waiting for the longest is the only wait after
//! which none of them still refuses the call.
//!
//! A `Retry-After` HTTP date is turned into a wait by the server's clock:
//! `retry_at - Date`, with the response's own `Date` header when it is
//! present and valid, else `retry_at - now` by the local clock. Both dates
//! come from the same server, so a worker whose clock runs seconds behind
//! does not come back before the provider's moment (nor, ahead, wait too
//! little).
//!
//! A zero, negative, non-finite or malformed value, or a date in the past,
//! is no usable hint and is ignored; with no usable hint at all the answer
//! is None, so the caller falls back to its own backoff. Huge values are
//! capped at [`MAX_WAIT`], not refused: the caller turns a long wait into a
//! later `run_at`, never a sleeping worker.

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use std::time::Duration;

/// The longest wait taken from a hint.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// How long the provider's headers asked us to wait: the longest of the
/// usable hints, if any. `now` is the local clock, used for an HTTP date
/// only when the response has no valid `Date` header.
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let retry_after_ms = get("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| from_secs(ms / 1000.0));
    let retry_after = get("retry-after").and_then(|value| match value.parse::<f64>() {
        Ok(secs) => from_secs(secs),
        Err(_) => {
            let at: DateTime<Utc> = httpdate::parse_http_date(value).ok()?.into();
            let server_now = get("date")
                .and_then(|d| httpdate::parse_http_date(d).ok())
                .map(DateTime::<Utc>::from)
                .unwrap_or(now);
            let wait = (at - server_now).to_std().ok()?;
            from_secs(wait.as_secs_f64())
        }
    });
    let reset = |name: &str| {
        get(name)
            .and_then(parse_duration)
            .and_then(|d| from_secs(d.as_secs_f64()))
    };
    [
        retry_after_ms,
        retry_after,
        reset("x-ratelimit-reset-requests"),
        reset("x-ratelimit-reset-tokens"),
    ]
    .into_iter()
    .flatten()
    .max()
}

/// The wait OpenAI names in an error message: `... Please try again in
/// 7m12s.`, `try again in 20ms`, `try again in 1.5s` (case ignored). With
/// several, the longest. None when there is none, or it is zero or
/// malformed; capped at [`MAX_WAIT`].
pub fn hint_in_message(message: &str) -> Option<Duration> {
    const PHRASE: &str = "try again in ";
    // ASCII lowercasing keeps every byte offset valid in `message`.
    let lower = message.to_ascii_lowercase();
    let mut longest = None;
    let mut from = 0;
    while let Some(i) = lower[from..].find(PHRASE) {
        let start = from + i + PHRASE.len();
        let rest = &message[start..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == 'µ'))
            .unwrap_or(rest.len());
        // A sentence's full stop is not part of the duration.
        let token = rest[..end].trim_end_matches('.');
        let wait = parse_duration(token).and_then(|d| from_secs(d.as_secs_f64()));
        longest = longest.max(wait);
        from = start;
    }
    longest
}

/// Every wait the provider asked for, in the headers ([`retry_after`]) and
/// in the error message ([`hint_in_message`]): the longest, if any.
pub fn wait_hint(headers: &HeaderMap, message: &str, now: DateTime<Utc>) -> Option<Duration> {
    retry_after(headers, now).max(hint_in_message(message))
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
            (
                &[("retry-after-ms", "nope"), ("retry-after", "9")],
                Some(ms(9000)),
            ),
            (&[("x-ratelimit-reset-requests", "6m0s")], Some(ms(360_000))),
            (&[("x-ratelimit-reset-requests", "20ms")], Some(ms(20))),
            (&[("x-ratelimit-reset-tokens", "1.5s")], Some(ms(1500))),
            (&[("x-ratelimit-reset-requests", "0s")], None),
            (&[], None),
        ];
        for (pairs, want) in cases {
            assert_eq!(retry_after(&headers(pairs), now), *want, "{pairs:?}");
        }
    }

    #[test]
    fn the_longest_header_hint_wins() {
        let now: DateTime<Utc> = "2026-11-23T10:00:00Z".parse().unwrap();
        let ms = Duration::from_millis;
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<Duration>);
        let cases: &[Case] = &[
            // Each later header longer than the one its SDK reads first.
            (
                &[("retry-after-ms", "100"), ("retry-after", "9")],
                Some(ms(9000)),
            ),
            (
                &[("retry-after-ms", "9000.5"), ("retry-after", "2")],
                Some(Duration::from_micros(9_000_500)),
            ),
            (
                &[
                    ("x-ratelimit-reset-requests", "1s"),
                    ("x-ratelimit-reset-tokens", "9s"),
                ],
                Some(ms(9000)),
            ),
            (
                &[
                    ("x-ratelimit-reset-requests", "6m0s"),
                    ("x-ratelimit-reset-tokens", "9s"),
                ],
                Some(ms(360_000)),
            ),
            (
                &[
                    ("retry-after-ms", "1500"),
                    ("retry-after", "2"),
                    ("x-ratelimit-reset-requests", "1m"),
                    ("x-ratelimit-reset-tokens", "20ms"),
                ],
                Some(ms(60_000)),
            ),
            (
                &[
                    ("retry-after", "Mon, 23 Nov 2026 10:01:00 GMT"),
                    ("x-ratelimit-reset-requests", "30s"),
                ],
                Some(ms(60_000)),
            ),
            // Malformed, zero, negative and past values never win.
            (
                &[
                    ("retry-after-ms", "-5000"),
                    ("retry-after", "soon"),
                    ("x-ratelimit-reset-requests", "0s"),
                    ("x-ratelimit-reset-tokens", "250ms"),
                ],
                Some(ms(250)),
            ),
            (
                &[
                    ("retry-after", "Mon, 23 Nov 2026 09:00:00 GMT"),
                    ("retry-after-ms", "inf"),
                    ("x-ratelimit-reset-tokens", "-1s"),
                ],
                None,
            ),
            // The cap still holds for the longest.
            (
                &[("retry-after-ms", "5"), ("retry-after", "99999999")],
                Some(MAX_WAIT),
            ),
            (
                &[("retry-after", "3"), ("x-ratelimit-reset-requests", "100h")],
                Some(MAX_WAIT),
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(retry_after(&headers(pairs), now), *want, "{pairs:?}");
        }
    }

    #[test]
    fn http_dates_are_read_by_the_server_clock() {
        let ms = Duration::from_millis;
        let retry_at = "Mon, 23 Nov 2026 10:00:30 GMT";
        // (local now, the response's Date header, wanted wait)
        let cases: &[(&str, Option<&str>, Option<Duration>)] = &[
            // Clocks agree.
            (
                "2026-11-23T10:00:00Z",
                Some("Mon, 23 Nov 2026 10:00:00 GMT"),
                Some(ms(30_000)),
            ),
            // The worker runs 10 s behind: the local clock would say 40 s.
            (
                "2026-11-23T09:59:50Z",
                Some("Mon, 23 Nov 2026 10:00:00 GMT"),
                Some(ms(30_000)),
            ),
            // The worker runs 10 s ahead: the local clock would say 20 s,
            // and the call would go out early.
            (
                "2026-11-23T10:00:10Z",
                Some("Mon, 23 Nov 2026 10:00:00 GMT"),
                Some(ms(30_000)),
            ),
            // Other date forms for Date.
            (
                "2026-11-23T10:00:10Z",
                Some("Monday, 23-Nov-26 10:00:20 GMT"),
                Some(ms(10_000)),
            ),
            (
                "2026-11-23T10:00:10Z",
                Some("Mon Nov 23 10:00:25 2026"),
                Some(ms(5000)),
            ),
            // By the server the moment has passed, though not by the worker.
            (
                "2026-11-23T10:00:00Z",
                Some("Mon, 23 Nov 2026 10:00:30 GMT"),
                None,
            ),
            (
                "2026-11-23T10:00:00Z",
                Some("Mon, 23 Nov 2026 10:01:00 GMT"),
                None,
            ),
            // No or an invalid Date: the local clock.
            ("2026-11-23T10:00:10Z", None, Some(ms(20_000))),
            (
                "2026-11-23T10:00:10Z",
                Some("yesterday-ish"),
                Some(ms(20_000)),
            ),
            ("2026-11-23T10:00:10Z", Some(""), Some(ms(20_000))),
        ];
        for (now, date, want) in cases {
            let now: DateTime<Utc> = now.parse().unwrap();
            let mut pairs = vec![("retry-after", retry_at)];
            pairs.extend(date.map(|d| ("date", d)));
            assert_eq!(retry_after(&headers(&pairs), now), *want, "{now} {date:?}");
        }
        // The Date header only dates an HTTP-date Retry-After.
        let now: DateTime<Utc> = "2026-11-23T10:00:00Z".parse().unwrap();
        let h = headers(&[
            ("retry-after", "4"),
            ("date", "Mon, 23 Nov 2026 09:00:00 GMT"),
        ]);
        assert_eq!(retry_after(&h, now), Some(ms(4000)));
    }

    #[test]
    fn hints_in_the_message() {
        let ms = Duration::from_millis;
        let cases: &[(&str, Option<Duration>)] = &[
            (
                "Rate limit reached for gpt-image-1 in organization org-x on requests per day (RPD): Limit 200, Used 200, Requested 1. Please try again in 7m12s. Visit https://platform.openai.com/account/rate-limits to learn more.",
                Some(ms(432_000)),
            ),
            ("Please try again in 20ms.", Some(ms(20))),
            ("Please try again in 1.5s.", Some(ms(1500))),
            ("Please try again in 12s", Some(ms(12_000))),
            ("Please try again in 2h", Some(ms(7_200_000))),
            ("Please try again in 1h2m3.5s.", Some(ms(3_723_500))),
            ("please TRY AGAIN IN 3s.", Some(ms(3000))),
            (
                "Please try again in 250us.",
                Some(Duration::from_micros(250)),
            ),
            // Several: the longest.
            ("try again in 2s; or try again in 5s.", Some(ms(5000))),
            // The cap.
            ("Please try again in 100h.", Some(MAX_WAIT)),
            // No usable hint.
            ("Please try again in 0s.", None),
            ("Please try again in a moment.", None),
            ("Please try again in 5 seconds.", None),
            ("Please try again in -5s.", None),
            ("Please try again later.", None),
            ("Please try again in", None),
            ("Rate limit reached for images per min.", None),
            ("", None),
        ];
        for (message, want) in cases {
            assert_eq!(hint_in_message(message), *want, "{message}");
        }
    }

    #[test]
    fn wait_hint_takes_the_longest_of_headers_and_message() {
        let now: DateTime<Utc> = "2026-11-23T10:00:00Z".parse().unwrap();
        let ms = Duration::from_millis;
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, Option<Duration>);
        let cases: &[Case] = &[
            (
                &[("retry-after", "1")],
                "Please try again in 7m12s.",
                Some(ms(432_000)),
            ),
            (
                &[("retry-after", "60")],
                "Please try again in 20ms.",
                Some(ms(60_000)),
            ),
            (&[], "Please try again in 1.5s.", Some(ms(1500))),
            (&[("retry-after-ms", "800")], "no hint here", Some(ms(800))),
            (&[("retry-after", "0")], "Please try again in 0s.", None),
            (&[], "", None),
        ];
        for (pairs, message, want) in cases {
            assert_eq!(
                wait_hint(&headers(pairs), message, now),
                *want,
                "{pairs:?} {message}"
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
