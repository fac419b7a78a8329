//! An independent witness for the limiter: it replays every admitted request through a plain
//! sliding 60-second window and flags any that breaks the limit the key was configured with.
//! The limiter and the witness use different maths, so a race or an off-by-one in either
//! shows up as `limit_exceeded > 0` in the stats instead of passing silently.
//!
//! The bound a GCRA bucket of rate `r`/min and capacity `C` guarantees is: in any window of
//! 60 s (half-open), the admitted cost is at most `r + max(C, c_max) - 1`, where `c_max` is the
//! largest single cost admitted in that window (see [`super::limits`] for the bucket). With
//! unit costs that is the familiar `rpm + burst - 1`.

use std::collections::VecDeque;

const WINDOW_NS: u64 = 60_000_000_000;

/// Sliding-window check of one rate (requests or images) of one key.
#[derive(Debug, Clone, Default)]
pub struct WindowAudit {
    per_minute: u32,
    burst: u32,
    admitted: VecDeque<(u64, u32)>,
}

impl WindowAudit {
    /// A witness for `per_minute` with the key's `burst`.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            burst: burst.max(1),
            admitted: VecDeque::new(),
        }
    }

    /// Records an admission of `cost` at `now_ns` (non-decreasing); `true` if the window
    /// ending now holds more than the configured bound.
    pub fn admit(&mut self, now_ns: u64, cost: u32) -> bool {
        while let Some(&(t, _)) = self.admitted.front() {
            if t + WINDOW_NS <= now_ns {
                self.admitted.pop_front();
            } else {
                break;
            }
        }
        self.admitted.push_back((now_ns, cost));
        self.current() > self.bound()
    }

    /// Cost admitted in the window ending at the last admission.
    pub fn current(&self) -> u64 {
        self.admitted.iter().map(|&(_, c)| u64::from(c)).sum()
    }

    /// Cost admitted in the 60 s window ending at `now_ns`.
    pub fn current_at(&self, now_ns: u64) -> u64 {
        self.admitted
            .iter()
            .filter(|&&(t, _)| t + WINDOW_NS > now_ns)
            .map(|&(_, c)| u64::from(c))
            .sum()
    }

    fn bound(&self) -> u64 {
        let largest = self.admitted.iter().map(|&(_, c)| c).max().unwrap_or(1);
        u64::from(self.per_minute) + u64::from(self.burst.max(largest)) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::limits::{KeyLimiter, Verdict};

    const MS: u64 = 1_000_000;

    #[test]
    fn flags_a_window_over_the_bound() {
        let mut audit = WindowAudit::new(3, 1);
        assert!(!audit.admit(0, 1));
        assert!(!audit.admit(10 * MS, 1));
        assert!(!audit.admit(20 * MS, 1));
        assert!(audit.admit(30 * MS, 1));
        // once the window slides past the old ones, it is fine again
        assert!(!audit.admit(60_020 * MS, 1));
    }

    #[test]
    fn burst_and_big_costs_widen_the_bound() {
        let mut audit = WindowAudit::new(10, 3);
        for i in 0..12 {
            assert!(!audit.admit(i * MS, 1), "admission {i}");
        }
        assert!(audit.admit(12 * MS, 1));
        let mut big = WindowAudit::new(5, 1);
        assert!(!big.admit(0, 10)); // a single oversized request is what the limiter allows
        assert!(!big.admit(MS, 4));
        assert!(big.admit(2 * MS, 1));
    }

    #[test]
    fn limiter_never_trips_the_witness() {
        // hammer a limiter every 7 ms for 5 minutes with varying costs
        for (rpm, ipm, burst) in [(60, Some(120), 3), (7, None, 1), (100, Some(40), 5)] {
            let mut lim = KeyLimiter::new(rpm, ipm, burst);
            let mut req = WindowAudit::new(rpm, burst);
            let mut img = ipm.map(|i| WindowAudit::new(i, burst));
            let mut admitted = 0;
            for step in 0..(300_000 / 7) {
                let now = step * 7 * MS;
                let n = u32::try_from(step % 4 + 1).expect("small");
                if lim.try_acquire(now, n) == Verdict::Allowed {
                    admitted += 1;
                    assert!(!req.admit(now, 1), "rpm {rpm} at {now}");
                    if let Some(img) = img.as_mut() {
                        assert!(!img.admit(now, n), "ipm {ipm:?} at {now}");
                    }
                }
            }
            assert!(admitted > 0);
        }
    }
}
