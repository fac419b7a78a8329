//! An independent witness for the limiter: it replays every admitted request through a plain
//! sliding 60-second window and flags any that breaks the limit the key was configured with.
//! The limiter and the witness use different maths, so a race or an off-by-one in either
//! shows up as `limit_exceeded > 0` in the stats instead of passing silently.
//!
//! The bound a GCRA bucket of rate `r`/min and capacity `C` guarantees is: in any window of
//! 60 s (half-open), the admitted cost is at most `r + max(C, c_max) - 1`, where `c_max` is the
//! largest single cost admitted in that window (see [`super::limits`] for the bucket). With
//! unit costs that is the familiar `rpm + burst - 1`.
//!
//! That witness only sees what the sim admitted, so it can catch the sim but never a client.
//! The arrival witness ([`early_arrivals`], [`max_in_window`], [`early_after_hints`]) looks at
//! EVERY request received instead - admitted or refused, whatever the status - because OpenAI
//! counts unsuccessful requests against the per-minute limits too, and a client that sends
//! too fast is wrong whether or not the provider let it through.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

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

/// Indices of the requests that arrived over the limit, among arrivals `times_ns`
/// (non-decreasing) judged against emission interval `T = interval_ns` and `burst` `b`.
///
/// Request `i` is early when some span `[t_j, t_i]` ending at it holds `m` requests (both
/// ends included) and is shorter than `(m - b) * T`: more requests than `b + span / T`.
/// Equivalently, a GCRA bucket of interval `T` and capacity `b`, charged for every request
/// received (not only the admitted ones), has no room for it; with no tolerance beyond the
/// burst. With `b = 1` a steady client is clean exactly when consecutive arrivals are at
/// least `T` apart. Once a client is early, the requests that follow at the plain rate are
/// early too, until it has slowed down enough to pay the excess back.
pub fn early_arrivals(times_ns: &[u64], interval_ns: u64, burst: u32) -> Vec<usize> {
    let tolerance = u64::from(burst.max(1) - 1).saturating_mul(interval_ns);
    let mut tat = 0u64;
    let mut early = Vec::new();
    for (i, &t) in times_ns.iter().enumerate() {
        if tat.saturating_sub(t) > tolerance {
            early.push(i);
        }
        tat = tat.max(t).saturating_add(interval_ns);
    }
    early
}

/// The most arrivals (non-decreasing `times_ns`) in any half-open window `[s, s + window)`.
/// A client [`early_arrivals`] finds clean has at most `2b - 1` in a window of `b * T`
/// (`b` at its start from a rested bucket, then one per `T`); with `b = 1`, at most 1.
pub fn max_in_window(times_ns: &[u64], window_ns: u64) -> u64 {
    let window_ns = window_ns.max(1);
    let mut best = 0;
    let mut start = 0;
    for (end, &t) in times_ns.iter().enumerate() {
        while times_ns[start].saturating_add(window_ns) <= t {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    u64::try_from(best).unwrap_or(u64::MAX)
}

/// How early each too-early request was, after hints to wait.
///
/// `requests` lists `(arrived_ns, hint)` in arrival order, where `hint` is
/// `Some((sent_ns, deadline_ns))` for an answer that said "not before `deadline_ns`" and was
/// sent at `sent_ns`. A request is too early when it arrived before the deadline of some
/// earlier answer that had already been sent when it arrived (a request already on its way
/// when the hint went out cannot be blamed); it is listed with how much too early it came.
pub fn early_after_hints(requests: &[(u64, Option<(u64, u64)>)]) -> Vec<Duration> {
    // hints not yet seen by the arriving requests, soonest sent first
    let mut pending: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut deadline = 0u64;
    let mut early = Vec::new();
    for &(arrived, hint) in requests {
        while let Some(&Reverse((sent, until))) = pending.peek() {
            if sent > arrived {
                break;
            }
            pending.pop();
            deadline = deadline.max(until);
        }
        if arrived < deadline {
            early.push(Duration::from_nanos(deadline - arrived));
        }
        if let Some(hint) = hint {
            pending.push(Reverse(hint));
        }
    }
    early
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{KeyLimiter, Verdict};

    #[test]
    fn early_arrivals_table() {
        // (interval ms, burst, arrivals ms, indices of the early ones, max in a b*T window)
        type Case = (u64, u32, &'static [u64], &'static [usize], u64);
        let cases: &[Case] = &[
            // one a second, exactly on time: clean
            (1_000, 1, &[0, 1_000, 2_000, 3_000], &[], 1),
            // 1 ms too soon is too soon: no tolerance
            (1_000, 1, &[0, 999], &[1], 2),
            // an early one pushes the next on-time-looking one over as well, then it heals
            (1_000, 1, &[0, 500, 1_500, 3_000], &[1, 2], 2),
            // burst 2: two at once from rest, then one per interval, is clean
            (1_000, 2, &[0, 0, 1_000, 2_000, 3_000], &[], 3),
            // a third at once is not
            (1_000, 2, &[0, 0, 0, 1_000], &[2, 3], 4),
            // a rested bucket takes the whole burst again
            (1_000, 2, &[0, 0, 10_000, 10_000, 11_000], &[], 3),
            // burst 3 at 6 s: 4 inside 18 s is over
            (6_000, 3, &[0, 1, 2, 3], &[3], 4),
            (6_000, 3, &[0, 1, 2, 6_002], &[], 4),
            // arrivals at one instant, no gaps
            (10, 1, &[5, 5, 5], &[1, 2], 3),
            (10, 1, &[], &[], 0),
        ];
        const MS: u64 = 1_000_000;
        for (interval, burst, times, want, want_max) in cases {
            let ns: Vec<u64> = times.iter().map(|t| t * MS).collect();
            assert_eq!(
                early_arrivals(&ns, interval * MS, *burst),
                *want,
                "T={interval}ms b={burst} {times:?}"
            );
            let window = u64::from(*burst) * interval * MS;
            assert_eq!(
                max_in_window(&ns, window),
                *want_max,
                "T={interval}ms b={burst} {times:?}"
            );
        }
    }

    #[test]
    fn early_after_hints_table() {
        const MS: u64 = 1_000_000;
        let hint = |sent: u64, until: u64| Some((sent * MS, until * MS));
        // (requests: arrived ms and hint, how early (ms) each too-early request was)
        type Case = (Vec<(u64, Option<(u64, u64)>)>, Vec<u64>);
        let cases: Vec<Case> = vec![
            // back exactly at the deadline: fine
            (vec![(0, hint(10, 1_010)), (1_010, None)], vec![]),
            // 1 ms early, then on time
            (
                vec![(0, hint(10, 1_010)), (1_009, None), (1_010, None)],
                vec![1],
            ),
            // already on its way when the 429 went out: not blamed; the next one is
            (
                vec![(0, hint(50, 1_050)), (20, None), (60, None)],
                vec![990],
            ),
            // the longest outstanding deadline counts, not the latest
            (
                vec![
                    (0, hint(1, 5_001)),
                    (10, hint(11, 1_011)),
                    (2_000, None),
                    (5_001, None),
                ],
                vec![4_991, 3_001],
            ),
            // a longer wait announced to an on-time retry binds the next one
            (
                vec![
                    (0, hint(1, 1_001)),
                    (1_001, hint(1_002, 5_002)),
                    (2_000, None),
                ],
                vec![3_002],
            ),
            // an early request that got a 429 itself sets a new deadline
            (
                vec![(0, hint(1, 1_001)), (500, hint(501, 2_001)), (1_500, None)],
                vec![501, 501],
            ),
        ];
        for (requests, want) in cases {
            let requests: Vec<(u64, Option<(u64, u64)>)> =
                requests.iter().map(|&(t, h)| (t * MS, h)).collect();
            let got: Vec<u64> = early_after_hints(&requests)
                .iter()
                .map(|d| u64::try_from(d.as_millis()).expect("small"))
                .collect();
            assert_eq!(got, want, "{requests:?}");
        }
    }

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
