//! Per-key rate accounting with GCRA (the generic cell rate algorithm, a token bucket kept as
//! one timestamp). Pure: time comes in as nanoseconds since an arbitrary origin, so the maths
//! can be table-tested without clocks.
//!
//! A bucket of rate `r` per minute and capacity `C` has an emission interval
//! `T = ceil(60s / r)` (rounded up so the bucket never allows more than `r` per minute) and a
//! "theoretical arrival time" `tat`: the instant at which it is empty again. At time `now` its
//! debt is `max(tat - now, 0)`. A request of cost `c` is allowed when
//! `debt <= max(C - c, 0) * T`; a request larger than the whole bucket therefore needs a
//! rested bucket rather than being refused forever. Allowing it sets `tat = max(tat, now) + c*T`;
//! refusing it changes nothing, and the true wait is `debt - max(C - c, 0) * T`.
//!
//! Daily caps ([`DailyCap`]) are plain counters in fixed windows: window `k` covers
//! `[k * day, (k + 1) * day)` from the sim's start, and everything resets when the next one
//! opens (OpenAI's RPD/IPD limits behave like this from a client's point of view: a spent
//! day answers 429 until it rolls over).

use std::time::Duration;

const MINUTE_NS: u64 = 60_000_000_000;

/// The emission interval of a rate of `per_minute` (clamped to at least 1): `60 s / rate`,
/// rounded up to the nanosecond so the bucket never allows more than the rate.
pub fn emission_interval(per_minute: u32) -> Duration {
    Duration::from_nanos(MINUTE_NS.div_ceil(u64::from(per_minute.max(1))))
}

/// One GCRA bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gcra {
    interval_ns: u64,
    capacity: u32,
    tat_ns: u64,
}

impl Gcra {
    /// A rested bucket allowing `per_minute` units per minute and `capacity` units at once
    /// (both clamped to at least 1).
    pub fn per_minute(per_minute: u32, capacity: u32) -> Self {
        Self {
            interval_ns: MINUTE_NS.div_ceil(u64::from(per_minute.max(1))),
            capacity: capacity.max(1),
            tat_ns: 0,
        }
    }

    fn debt(&self, now_ns: u64) -> u64 {
        self.tat_ns.saturating_sub(now_ns)
    }

    /// `Ok` if `cost` units may be spent at `now_ns`, else the time until they may.
    pub fn check(&self, now_ns: u64, cost: u32) -> Result<(), Duration> {
        let tolerance = u64::from(self.capacity.saturating_sub(cost)) * self.interval_ns;
        match self.debt(now_ns).checked_sub(tolerance) {
            Some(wait) if wait > 0 => Err(Duration::from_nanos(wait)),
            _ => Ok(()),
        }
    }

    /// Spends `cost` units at `now_ns` (call only after [`Gcra::check`] said `Ok`).
    pub fn commit(&mut self, now_ns: u64, cost: u32) {
        self.tat_ns = self.tat_ns.max(now_ns) + u64::from(cost) * self.interval_ns;
    }

    /// How many single units could be spent right now.
    pub fn remaining(&self, now_ns: u64) -> u32 {
        let room = (u64::from(self.capacity) * self.interval_ns).saturating_sub(self.debt(now_ns));
        u32::try_from(room / self.interval_ns).unwrap_or(u32::MAX)
    }

    /// Time until the bucket is fully rested.
    pub fn reset_after(&self, now_ns: u64) -> Duration {
        Duration::from_nanos(self.debt(now_ns))
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Requests per minute.
    Requests,
    /// Images per minute.
    Images,
}

/// The answer of [`KeyLimiter::try_acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Budget spent; go ahead.
    Allowed,
    /// Refused; nothing spent. `wait` is the true time until the same request would pass.
    Limited {
        /// Time until the same request would be allowed.
        wait: Duration,
        /// The limit that binds the longest.
        by: LimitKind,
    },
}

/// Request-rate view for `x-ratelimit-*-requests` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestWindow {
    /// Configured requests per minute.
    pub limit: u32,
    /// Requests that would be allowed right now.
    pub remaining: u32,
    /// Time until the request bucket is fully rested.
    pub reset: Duration,
}

/// The limits of one key: requests per minute and, optionally, images per minute (cost `n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLimiter {
    requests_per_minute: u32,
    requests: Gcra,
    images: Option<Gcra>,
}

impl KeyLimiter {
    /// Limits with the given rates and burst (the burst is the capacity of both buckets).
    pub fn new(requests_per_minute: u32, images_per_minute: Option<u32>, burst: u32) -> Self {
        Self {
            requests_per_minute: requests_per_minute.max(1),
            requests: Gcra::per_minute(requests_per_minute, burst),
            images: images_per_minute.map(|ipm| Gcra::per_minute(ipm, burst)),
        }
    }

    /// Spends one request and `n` images at `now_ns` if both buckets allow it; otherwise
    /// spends nothing and reports the longest wait.
    pub fn try_acquire(&mut self, now_ns: u64, n: u32) -> Verdict {
        let by_requests = self.requests.check(now_ns, 1).err();
        let by_images = self.images.as_ref().and_then(|g| g.check(now_ns, n).err());
        let limited = match (by_requests, by_images) {
            (None, None) => None,
            (Some(w), None) => Some((w, LimitKind::Requests)),
            (None, Some(w)) => Some((w, LimitKind::Images)),
            (Some(r), Some(i)) if i > r => Some((i, LimitKind::Images)),
            (Some(r), Some(_)) => Some((r, LimitKind::Requests)),
        };
        if let Some((wait, by)) = limited {
            return Verdict::Limited { wait, by };
        }
        self.requests.commit(now_ns, 1);
        if let Some(images) = self.images.as_mut() {
            images.commit(now_ns, n);
        }
        Verdict::Allowed
    }

    /// The request bucket as `x-ratelimit-*-requests` headers describe it.
    pub fn request_window(&self, now_ns: u64) -> RequestWindow {
        RequestWindow {
            limit: self.requests_per_minute,
            remaining: self.requests.remaining(now_ns),
            reset: self.requests.reset_after(now_ns),
        }
    }
}

/// A refusal by a [`DailyCap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyRefusal {
    /// Which daily cap refused: requests (RPD) or images (IPD).
    pub by: LimitKind,
    /// The cap.
    pub limit: u32,
    /// Already admitted in the current window.
    pub used: u32,
    /// What this request asked for (1 request, or `n` images).
    pub requested: u32,
    /// Time until the current window ends.
    pub wait: Duration,
}

/// Daily caps on requests and images in fixed windows of `window` (see the module docs).
/// Only admitted requests count ([`DailyCap::commit`]); a request for more images than the
/// whole cap is never admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyCap {
    requests: Option<u32>,
    images: Option<u32>,
    window_ns: u64,
    /// Index of the window the counters belong to.
    index: u64,
    used_requests: u32,
    used_images: u32,
}

impl DailyCap {
    /// Caps of `requests` and `images` per `window`; `None` when neither is set.
    pub fn new(requests: Option<u32>, images: Option<u32>, window: Duration) -> Option<Self> {
        (requests.is_some() || images.is_some()).then(|| Self {
            requests,
            images,
            window_ns: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX).max(1),
            index: 0,
            used_requests: 0,
            used_images: 0,
        })
    }

    fn roll(&mut self, now_ns: u64) {
        let index = now_ns / self.window_ns;
        if index != self.index {
            (self.index, self.used_requests, self.used_images) = (index, 0, 0);
        }
    }

    /// `Ok` if one request of `n` images fits into the window holding `now_ns`; nothing is
    /// spent either way. The request cap is checked first.
    pub fn check(&mut self, now_ns: u64, n: u32) -> Result<(), DailyRefusal> {
        self.roll(now_ns);
        let wait = Duration::from_nanos((self.index + 1) * self.window_ns - now_ns);
        if let Some(limit) = self.requests
            && self.used_requests >= limit
        {
            return Err(DailyRefusal {
                by: LimitKind::Requests,
                limit,
                used: self.used_requests,
                requested: 1,
                wait,
            });
        }
        if let Some(limit) = self.images
            && u64::from(self.used_images) + u64::from(n) > u64::from(limit)
        {
            return Err(DailyRefusal {
                by: LimitKind::Images,
                limit,
                used: self.used_images,
                requested: n,
                wait,
            });
        }
        Ok(())
    }

    /// Counts one admitted request of `n` images at `now_ns`.
    pub fn commit(&mut self, now_ns: u64, n: u32) {
        self.roll(now_ns);
        self.used_requests = self.used_requests.saturating_add(1);
        self.used_images = self.used_images.saturating_add(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    #[test]
    fn request_bucket_table() {
        // (rpm, burst, arrival times in ms, expected: None = allowed / Some(wait ms))
        type Case = (u32, u32, &'static [u64], &'static [Option<u64>]);
        let cases: &[Case] = &[
            (
                60,
                1,
                &[0, 0, 999, 1000],
                &[None, Some(1000), Some(1), None],
            ),
            (
                60,
                2,
                &[0, 0, 0, 500, 1000],
                &[None, None, Some(1000), Some(500), None],
            ),
            (30, 1, &[0, 1000, 2000], &[None, Some(1000), None]),
            (6, 3, &[0, 1, 2, 3], &[None, None, None, Some(9997)]),
            // refused requests spend nothing: the retry at the announced time passes
            (
                60,
                1,
                &[0, 400, 1000, 1000],
                &[None, Some(600), None, Some(1000)],
            ),
        ];
        for (rpm, burst, times, expected) in cases {
            let mut lim = KeyLimiter::new(*rpm, None, *burst);
            for (t, want) in times.iter().zip(expected.iter()) {
                let got = match lim.try_acquire(t * MS, 1) {
                    Verdict::Allowed => None,
                    Verdict::Limited { wait, by } => {
                        assert_eq!(by, LimitKind::Requests);
                        Some(u64::try_from(wait.as_millis()).expect("small"))
                    }
                };
                assert_eq!(got, *want, "rpm={rpm} burst={burst} t={t}ms");
            }
        }
    }

    #[test]
    fn image_bucket_costs_n() {
        // 60 rpm, 10 images/min (one image per 6s), burst 2
        let mut lim = KeyLimiter::new(60, Some(10), 2);
        assert_eq!(lim.try_acquire(0, 2), Verdict::Allowed);
        match lim.try_acquire(S, 1) {
            Verdict::Limited { wait, by } => {
                assert_eq!(by, LimitKind::Images);
                assert_eq!(wait, Duration::from_secs(5)); // debt 11s - tolerance 6s
            }
            other => panic!("expected a limit, got {other:?}"),
        }
        assert_eq!(lim.try_acquire(6 * S, 1), Verdict::Allowed);
        // a request bigger than the bucket waits for a rested bucket, then passes
        let mut big = KeyLimiter::new(60, Some(10), 1);
        assert_eq!(big.try_acquire(0, 4), Verdict::Allowed);
        assert!(matches!(
            big.try_acquire(23 * S, 4),
            Verdict::Limited { .. }
        ));
        assert_eq!(big.try_acquire(24 * S, 4), Verdict::Allowed);
    }

    #[test]
    fn longest_wait_wins() {
        let mut lim = KeyLimiter::new(60, Some(60), 1);
        assert_eq!(lim.try_acquire(0, 5), Verdict::Allowed);
        assert_eq!(
            lim.try_acquire(0, 1),
            Verdict::Limited {
                wait: Duration::from_secs(5),
                by: LimitKind::Images
            }
        );
    }

    #[test]
    fn window_view() {
        let mut lim = KeyLimiter::new(60, None, 3);
        let rested = lim.request_window(0);
        assert_eq!(
            (rested.limit, rested.remaining, rested.reset),
            (60, 3, Duration::ZERO)
        );
        assert_eq!(lim.try_acquire(0, 1), Verdict::Allowed);
        assert_eq!(lim.try_acquire(0, 1), Verdict::Allowed);
        let used = lim.request_window(500 * MS);
        assert_eq!(used.remaining, 1);
        assert_eq!(used.reset, Duration::from_millis(1500));
        assert_eq!(lim.request_window(2 * S).remaining, 3);
    }

    #[test]
    fn interval_rounds_up() {
        // 7/min does not divide 60s evenly; 8 requests must never fit in one minute
        let g = Gcra::per_minute(7, 1);
        assert!(g.interval_ns * 7 >= MINUTE_NS);
    }

    #[test]
    fn daily_cap_table() {
        // (requests/day, images/day, window s, [(t ms, n, admitted if Ok)], expected)
        // expected: None = admitted, Some((kind, used, wait ms)) = refused
        type Step = (u64, u32, Option<(LimitKind, u32, u64)>);
        type Case = (Option<u32>, Option<u32>, u64, &'static [Step]);
        let cases: &[Case] = &[
            (
                Some(2),
                None,
                30,
                &[
                    (0, 1, None),
                    (1_000, 5, None),
                    (2_000, 1, Some((LimitKind::Requests, 2, 28_000))),
                    (29_999, 1, Some((LimitKind::Requests, 2, 1))),
                    // the next window opens at 30 s
                    (30_000, 1, None),
                    (30_001, 1, None),
                    (59_000, 1, Some((LimitKind::Requests, 2, 1_000))),
                    // a skipped window changes nothing
                    (95_000, 1, None),
                ],
            ),
            (
                None,
                Some(5),
                10,
                &[
                    (0, 3, None),
                    (1, 3, Some((LimitKind::Images, 3, 9_999))),
                    (2, 2, None),
                    (3, 1, Some((LimitKind::Images, 5, 9_997))),
                    (10_000, 6, Some((LimitKind::Images, 0, 10_000))),
                    (10_000, 5, None),
                ],
            ),
            (
                Some(1),
                Some(100),
                10,
                &[(0, 4, None), (5, 1, Some((LimitKind::Requests, 1, 9_995)))],
            ),
        ];
        for (rpd, ipd, secs, steps) in cases {
            let mut cap = DailyCap::new(*rpd, *ipd, Duration::from_secs(*secs)).expect("a cap");
            for &(t, n, want) in steps.iter() {
                let got = match cap.check(t * MS, n) {
                    Ok(()) => {
                        cap.commit(t * MS, n);
                        None
                    }
                    Err(refusal) => {
                        let requested = if refusal.by == LimitKind::Images {
                            n
                        } else {
                            1
                        };
                        assert_eq!(refusal.requested, requested);
                        let wait = u64::try_from(refusal.wait.as_millis()).expect("small");
                        Some((refusal.by, refusal.used, wait))
                    }
                };
                assert_eq!(got, want, "rpd={rpd:?} ipd={ipd:?} t={t}ms n={n}");
            }
        }
        assert_eq!(DailyCap::new(None, None, Duration::from_secs(1)), None);
    }
}
