//! Rates learned at run time, for keys whose limits nobody configured.
//!
//! The budget itself is a GCRA bucket in Postgres (`store::buckets`). Its rate
//! comes from the keys file, else from the provider's
//! `x-ratelimit-limit-requests`, else from AIMD: a 429 cuts the rate
//! multiplicatively; a run of successes adds a little, so a wrongly guessed
//! or changed limit corrects itself from both sides.

use crate::provider::headers::RateLimitInfo;

/// Lowest rate AIMD will go to, per minute.
pub const MIN_RPM: f64 = 1.0;
/// Factor applied on a 429.
pub const DECREASE: f64 = 0.7;
/// Successes in a row before the rate goes up.
pub const SUCCESSES_PER_STEP: u32 = 10;
/// Increase per step, as a share of the rate (at least 1 per minute).
pub const INCREASE: f64 = 0.05;

/// Additive-increase / multiplicative-decrease state of one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Aimd {
    successes: u32,
}

impl Aimd {
    /// The rate to use after a 429 at `current` requests per minute.
    pub fn on_rate_limited(&mut self, current: f64) -> f64 {
        self.successes = 0;
        (current * DECREASE).max(MIN_RPM)
    }

    /// The rate to use after a success; rises every [`SUCCESSES_PER_STEP`]
    /// successes, never above `ceiling` when the real limit is known.
    pub fn on_success(&mut self, current: f64, ceiling: Option<f64>) -> f64 {
        self.successes += 1;
        if self.successes < SUCCESSES_PER_STEP {
            return current;
        }
        self.successes = 0;
        let next = current + (current * INCREASE).max(1.0);
        ceiling.map_or(next, |c| next.min(c))
    }
}

/// The requests-per-minute limit the provider announced, if any.
pub fn learned_rate(info: &RateLimitInfo) -> Option<f64> {
    info.limit_requests.filter(|&l| l > 0).map(f64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_429_cuts_the_rate_down_to_a_floor() {
        let mut aimd = Aimd::default();
        assert_eq!(aimd.on_rate_limited(100.0), 70.0);
        assert_eq!(aimd.on_rate_limited(1.2), MIN_RPM);
    }

    #[test]
    fn successes_raise_it_slowly_up_to_a_known_ceiling() {
        let mut aimd = Aimd::default();
        let mut rate = 60.0;
        for _ in 0..SUCCESSES_PER_STEP - 1 {
            rate = aimd.on_success(rate, None);
        }
        assert_eq!(rate, 60.0, "no change before a full step");
        rate = aimd.on_success(rate, None);
        assert_eq!(rate, 63.0);
        let mut capped = 0.0;
        for _ in 0..SUCCESSES_PER_STEP {
            capped = aimd.on_success(63.0, Some(64.0));
        }
        assert_eq!(capped, 64.0);
        // Small rates still grow by at least one per minute.
        let mut small = Aimd::default();
        let mut r = 2.0;
        for _ in 0..SUCCESSES_PER_STEP {
            r = small.on_success(r, None);
        }
        assert_eq!(r, 3.0);
    }

    #[test]
    fn a_429_resets_the_success_run() {
        let mut aimd = Aimd::default();
        for _ in 0..SUCCESSES_PER_STEP - 1 {
            aimd.on_success(10.0, None);
        }
        let r = aimd.on_rate_limited(10.0);
        assert_eq!(aimd.on_success(r, None), r);
    }

    #[test]
    fn learned_rate_comes_from_the_limit_header() {
        let info = RateLimitInfo {
            limit_requests: Some(50),
            ..RateLimitInfo::default()
        };
        assert_eq!(learned_rate(&info), Some(50.0));
        assert_eq!(
            learned_rate(&RateLimitInfo {
                limit_requests: Some(0),
                ..info
            }),
            None
        );
        assert_eq!(learned_rate(&RateLimitInfo::default()), None);
    }
}
