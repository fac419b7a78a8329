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
    /// For a 429: the wait its retry hint announced, in milliseconds, as a
    /// client reads it (rounded up as sent); the sim expects nothing from
    /// this key (or its project) before `at` + this.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
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

/// The id under which a secret appears in logs: `key-` + 8 hex digits of its sha256.
pub fn key_id(secret: &str) -> String {
    crate::secret::ApiSecret::new(secret).key_id()
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
}
