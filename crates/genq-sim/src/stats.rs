//! What observers read back: the request log (one [`RequestRecord`] per request, never a
//! secret) and the per-key counts in [`SimStats`], derived from that log so the two cannot
//! disagree.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Key id used in the log for requests that carried no bearer token.
pub const ANONYMOUS: &str = "anonymous";

/// One request the simulator received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// When it arrived.
    pub at: DateTime<Utc>,
    /// `key-` + first 8 hex digits of sha256(secret) ([`key_id`]), or `anonymous`.
    pub key_id: String,
    /// Model named in the body (empty if none could be read).
    pub model: String,
    /// Images asked for (1 if absent, 0 if unreadable).
    pub n: u32,
    /// HTTP status answered.
    pub status: u16,
    /// OpenAI `error.code` answered, if any.
    pub error_code: Option<String>,
    /// For a 429: the wait it announced, in milliseconds, as a client reads it: the longest
    /// of its hints (the key's retry header, `x-ratelimit-reset-requests` if sent, and the
    /// message's "try again in"), each rounded up as sent, counted from the arrival.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
    /// When it arrived on the sim's own monotonic clock: nanoseconds since the sim was
    /// created, taken under the same lock (and the same reading) the limiter judged it by.
    #[serde(default)]
    pub arrived_ns: u64,
    /// When its answer was handed to the HTTP layer (after any configured delay), on the
    /// same clock; `None` until then (or if the client hung up first).
    #[serde(default)]
    pub sent_ns: Option<u64>,
    /// For a 429 with a wait: the instant, on the same clock, before which the client was
    /// told not to come back - relative hints counted from `sent_ns`, an HTTP date as the
    /// instant it names; the latest of them. Filled in when the answer is sent.
    #[serde(default)]
    pub retry_deadline_ns: Option<u64>,
    /// The project of the key, if it has one (its requests count against the project).
    #[serde(default)]
    pub project: Option<String>,
    /// An edit's file parts (images and mask), in the order sent; empty for a generation.
    #[serde(default)]
    pub parts: Vec<crate::edits::InputPart>,
    /// For a 200: the usage billed, as the answer reports it.
    #[serde(default)]
    pub usage: Option<crate::response::Usage>,
}

/// Counts for one key (or for all keys together).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStats {
    /// Requests received.
    pub requests: u64,
    /// 200 answers.
    pub ok: u64,
    /// 429 `rate_limit_exceeded` answers.
    pub rate_limited: u64,
    /// 429 `insufficient_quota` answers.
    pub insufficient_quota: u64,
    /// 401 answers.
    pub unauthorized: u64,
    /// 400 `content_policy_violation` answers.
    pub content_policy: u64,
    /// Other 400 answers (validation).
    pub bad_request: u64,
    /// 5xx answers (injected).
    pub server_errors: u64,
    /// Images delivered in 200 answers.
    pub images: u64,
    /// 200 answers that broke the key's configured limit in some 60 s window (should be 0).
    pub limit_exceeded: u64,
}

/// Everything counted so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Per key id (configured keys always appear, unknown ones once seen).
    pub keys: BTreeMap<String, KeyStats>,
    /// Sum over all keys.
    pub total: KeyStats,
    /// Sum of `limit_exceeded` over all keys.
    pub limit_exceeded: u64,
}

/// The arrival witness of one key or project: how its requests were spaced, judged over
/// EVERY request received for it (admitted or refused, any status - OpenAI counts refused
/// requests against per-minute limits too), against the limits it draws from (a project
/// key's: its project's). Requests only; images are not judged here.
///
/// With emission interval `T = 60 s / requests_per_minute` (rounded up to the nanosecond,
/// as the limiter does) and burst `b`:
/// * `early` counts requests for which some span `[t_j, t_i]` ending at the request holds
///   `m` requests and is shorter than `(m - b) * T`: sent when a GCRA bucket charged for
///   every request received had no room, with no tolerance beyond the burst. With the
///   default `b = 1`: a request less than `T` after the previous one, or after an earlier
///   excess not yet paid back. A client that respects the limit has `early == 0`.
/// * `max_in_window` is the most requests in any half-open window of length `W = b * T`;
///   a client with `early == 0` has at most `2b - 1` there (1 when `b = 1`).
/// * `early_after_429` counts requests that came before a wait an earlier, already sent
///   429 announced had passed (see [`crate::Sim::early_after_429`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrivalWitness {
    /// The emission interval `T`, in nanoseconds.
    pub interval_ns: u64,
    /// The burst `b` of the limits judged against.
    pub burst: u32,
    /// `W = b * T`, in nanoseconds.
    pub window_ns: u64,
    /// Requests received.
    pub received: u64,
    /// The most requests in any window `[s, s + W)`.
    pub max_in_window: u64,
    /// Requests over the limit (see above); 0 for a well-behaved client.
    pub early: u64,
    /// Requests that came back before an announced wait had passed.
    pub early_after_429: u64,
}

/// Arrival witnesses of every configured key (by key id) and every project (by name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrivalReport {
    /// Per key id.
    pub keys: BTreeMap<String, ArrivalWitness>,
    /// Per project name, over the requests of all its keys.
    pub projects: BTreeMap<String, ArrivalWitness>,
}

impl ArrivalReport {
    /// The subjects with `early > 0`: key ids, and `project:<name>` for projects.
    pub fn over_limit(&self) -> BTreeMap<String, u64> {
        let keys = self.keys.iter().map(|(id, w)| (id.clone(), w.early));
        let projects = self
            .projects
            .iter()
            .map(|(name, w)| (format!("project:{name}"), w.early));
        keys.chain(projects)
            .filter(|&(_, early)| early > 0)
            .collect()
    }
}

/// The id under which genq shows a key with no name: `key-` + the first 8
/// hex digits of sha256(secret). The formula is part of genq's documented
/// contract (DESIGN.md, `OPENAI_API_KEYS`); the sim computes it itself so it
/// need not depend on genq, and an integration test holds the two equal.
pub fn key_id(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(secret.as_bytes());
    format!("key-{}", &hex::encode(digest)[..8])
}

impl KeyStats {
    fn count(&mut self, record: &RequestRecord) {
        self.requests += 1;
        let code = record.error_code.as_deref();
        match (record.status, code) {
            (200, _) => {
                self.ok += 1;
                self.images += u64::from(record.n);
            }
            (429, Some("insufficient_quota")) => self.insufficient_quota += 1,
            (429, _) => self.rate_limited += 1,
            (401, _) => self.unauthorized += 1,
            (400, Some("content_policy_violation")) => self.content_policy += 1,
            (400, _) => self.bad_request += 1,
            (s, _) if s >= 500 => self.server_errors += 1,
            _ => {}
        }
    }

    fn add(&mut self, other: &KeyStats) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.rate_limited += other.rate_limited;
        self.insufficient_quota += other.insufficient_quota;
        self.unauthorized += other.unauthorized;
        self.content_policy += other.content_policy;
        self.bad_request += other.bad_request;
        self.server_errors += other.server_errors;
        self.images += other.images;
        self.limit_exceeded += other.limit_exceeded;
    }
}

impl SimStats {
    /// Stats from the log, the configured keys' ids and their over-limit counts.
    pub fn from_log<'a>(
        log: &[RequestRecord],
        exceeded: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Self {
        let mut keys: BTreeMap<String, KeyStats> = BTreeMap::new();
        for (id, over) in exceeded {
            keys.entry(id.to_string()).or_default().limit_exceeded += over;
        }
        for record in log {
            keys.entry(record.key_id.clone()).or_default().count(record);
        }
        let mut total = KeyStats::default();
        for stats in keys.values() {
            total.add(stats);
        }
        let limit_exceeded = total.limit_exceeded;
        Self {
            keys,
            total,
            limit_exceeded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, n: u32, status: u16, code: Option<&str>) -> RequestRecord {
        RequestRecord {
            at: Utc::now(),
            key_id: key.to_string(),
            model: "gpt-image-1".to_string(),
            n,
            status,
            error_code: code.map(str::to_string),
            retry_after_ms: None,
            arrived_ns: 0,
            sent_ns: None,
            retry_deadline_ns: None,
            project: None,
            parts: Vec::new(),
            usage: None,
        }
    }

    #[test]
    fn key_ids_hide_secrets() {
        let id = key_id("sk-secret");
        assert_eq!(id.len(), 12);
        assert!(id.starts_with("key-"));
        assert_eq!(id, key_id("sk-secret"));
        assert_ne!(id, key_id("sk-other"));
    }

    #[test]
    fn counts_by_outcome() {
        let log = [
            record("key-a", 2, 200, None),
            record("key-a", 1, 429, Some("rate_limit_exceeded")),
            record("key-a", 1, 429, Some("insufficient_quota")),
            record("key-b", 1, 401, Some("invalid_api_key")),
            record("key-b", 3, 400, Some("content_policy_violation")),
            record("key-b", 0, 400, Some("invalid_value")),
            record("key-b", 1, 503, None),
        ];
        let stats = SimStats::from_log(&log, [("key-a", 1), ("key-c", 0)]);
        let a = &stats.keys["key-a"];
        assert_eq!((a.requests, a.ok, a.images, a.limit_exceeded), (3, 1, 2, 1));
        assert_eq!((a.rate_limited, a.insufficient_quota), (1, 1));
        let b = &stats.keys["key-b"];
        assert_eq!((b.unauthorized, b.content_policy, b.bad_request), (1, 1, 1));
        assert_eq!(b.server_errors, 1);
        assert_eq!(stats.keys["key-c"], KeyStats::default());
        assert_eq!((stats.total.requests, stats.limit_exceeded), (7, 1));
    }

    #[test]
    fn over_limit_lists_only_early_subjects() {
        let witness = |early| ArrivalWitness {
            early,
            ..ArrivalWitness::default()
        };
        let report = ArrivalReport {
            keys: [
                ("key-a".to_string(), witness(0)),
                ("key-b".to_string(), witness(3)),
            ]
            .into_iter()
            .collect(),
            projects: [("p".to_string(), witness(1)), ("q".to_string(), witness(0))]
                .into_iter()
                .collect(),
        };
        let over: Vec<(String, u64)> = report.over_limit().into_iter().collect();
        assert_eq!(
            over,
            [("key-b".to_string(), 3), ("project:p".to_string(), 1)]
        );
        assert!(ArrivalReport::default().over_limit().is_empty());
    }
}
