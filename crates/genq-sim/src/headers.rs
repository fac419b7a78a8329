//! How the simulator tells clients about limits in HTTP headers: the retry hint of a 429 in
//! each [`RetryHeader`] form, and OpenAI's `x-ratelimit-*-requests` family. Values are
//! computed here as plain strings so their formatting is unit-tested without a server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::config::RetryHeader;
use super::limits::RequestWindow;

/// Formats a duration the way OpenAI's `x-ratelimit-reset-*` headers do (Go's
/// `time.Duration` style), rounded up to the millisecond: `20ms`, `1s`, `1.5s`, `6m0s`,
/// `1h0m0s`.
pub fn go_duration(d: Duration) -> String {
    let ms = ceil_millis(d);
    if ms == 0 {
        return "0s".to_string();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m) = (ms / 3_600_000, (ms / 60_000) % 60);
    let (s, frac) = ((ms / 1000) % 60, ms % 1000);
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        let digits = format!("{frac:03}");
        format!("{s}.{}s", digits.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// Milliseconds in `d`, rounded up.
pub fn ceil_millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Whole seconds in `d`, rounded up.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The header (name, value) a 429 carries to say "come back after `wait`", in `style`;
/// `now` anchors the HTTP-date form, which is rounded up to the next whole second.
pub fn retry_hint(
    style: RetryHeader,
    wait: Duration,
    now: SystemTime,
) -> Option<(&'static str, String)> {
    match style {
        RetryHeader::RetryAfterSeconds => Some(("retry-after", ceil_secs(wait).to_string())),
        RetryHeader::RetryAfterMs => Some(("retry-after-ms", ceil_millis(wait).to_string())),
        RetryHeader::RetryAfterHttpDate => {
            let at = now.duration_since(UNIX_EPOCH).unwrap_or_default() + wait;
            let date = UNIX_EPOCH + Duration::from_secs(ceil_secs(at));
            Some(("retry-after", httpdate::fmt_http_date(date)))
        }
        RetryHeader::ResetRequests => Some(("x-ratelimit-reset-requests", go_duration(wait))),
        RetryHeader::None => None,
    }
}

/// The `x-ratelimit-*-requests` headers describing `window`.
pub fn ratelimit_headers(window: &RequestWindow) -> [(&'static str, String); 3] {
    [
        ("x-ratelimit-limit-requests", window.limit.to_string()),
        (
            "x-ratelimit-remaining-requests",
            window.remaining.to_string(),
        ),
        ("x-ratelimit-reset-requests", go_duration(window.reset)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let table = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ms"),
            (Duration::from_millis(20), "20ms"),
            (Duration::from_micros(999_001), "1s"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(2250), "2.25s"),
            (Duration::from_millis(59_999), "59.999s"),
            (Duration::from_secs(360), "6m0s"),
            (Duration::from_millis(90_500), "1m30.5s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(3723), "1h2m3s"),
        ];
        for (d, want) in table {
            assert_eq!(go_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn each_retry_style() {
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let wait = Duration::from_millis(1_200);
        let hint = |style| retry_hint(style, wait, now);
        assert_eq!(
            hint(RetryHeader::RetryAfterSeconds),
            Some(("retry-after", "2".to_string()))
        );
        assert_eq!(
            hint(RetryHeader::RetryAfterMs),
            Some(("retry-after-ms", "1200".to_string()))
        );
        // 1_700_000_000.25 + 1.2 = 1_700_000_001.45 -> rounded up to ...002
        assert_eq!(
            hint(RetryHeader::RetryAfterHttpDate),
            Some(("retry-after", "Tue, 14 Nov 2023 22:13:22 GMT".to_string()))
        );
        assert_eq!(
            hint(RetryHeader::ResetRequests),
            Some(("x-ratelimit-reset-requests", "1.2s".to_string()))
        );
        assert_eq!(hint(RetryHeader::None), None);
        assert_eq!(
            retry_hint(RetryHeader::RetryAfterMs, Duration::from_micros(1), now),
            Some(("retry-after-ms", "1".to_string()))
        );
    }

    #[test]
    fn ratelimit_family() {
        let window = RequestWindow {
            limit: 60,
            remaining: 0,
            reset: Duration::from_millis(20),
        };
        let headers = ratelimit_headers(&window);
        assert_eq!(headers[0], ("x-ratelimit-limit-requests", "60".to_string()));
        assert_eq!(
            headers[1],
            ("x-ratelimit-remaining-requests", "0".to_string())
        );
        assert_eq!(
            headers[2],
            ("x-ratelimit-reset-requests", "20ms".to_string())
        );
    }
}
