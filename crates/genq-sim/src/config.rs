//! Configuration of the simulated provider: which API keys exist, how fast each may go, how
//! each behaves, and which faults to inject. Kept apart from the server so a TOML file (see
//! the module docs of [`crate`]) and Rust code build the very same values.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the simulated Images API needs to know; see [`crate`] for the TOML form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// The API keys the provider knows; any other bearer token gets a 401.
    pub keys: Vec<SimKey>,
    /// Probability (0..=1) that a request which passed every check fails with a 500 anyway.
    pub fail_rate_5xx: f64,
    /// Delay added before every answer (TOML: `latency_ms`).
    #[serde(rename = "latency_ms", with = "duration_ms")]
    pub latency: Duration,
    /// A prompt containing this word (case-insensitive) is refused as a content-policy violation.
    pub content_policy_marker: String,
    /// Seed for the injected-failure RNG; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// Length of the daily window of `requests_per_day` and `images_per_day` (fixed windows
    /// from the sim's start), in seconds; 86400 unless a test needs a short day.
    pub day_window_secs: u64,
    /// Send every image at the size asked (uncompressed: 6 MiB for
    /// 1536x1024), not 16x16: for measuring what large answers cost.
    pub full_size_images: bool,
}

/// One API key of the simulated provider and the limits and behaviour attached to it.
/// Its `Debug` shows the key's id, never the secret.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimKey {
    /// The bearer token clients send (`Authorization: Bearer <secret>`). Never logged.
    pub secret: String,
    /// Sustained request rate; one request is allowed every `60s / requests_per_minute`.
    pub requests_per_minute: u32,
    /// Sustained image rate where set; a request costs `n` images.
    pub images_per_minute: Option<u32>,
    /// How many requests (and images) may be spent at once from a rested key; `None` means
    /// 1: no early-send tolerance at all, a request is refused if it comes before one
    /// emission interval (`60 s / requests_per_minute`) has passed since the last one.
    pub burst: Option<u32>,
    /// Whether the key works or answers every call with `insufficient_quota`.
    pub behavior: KeyBehavior,
    /// How a rate-limited answer tells the client when to come back.
    pub retry_header: RetryHeader,
    /// Send `x-ratelimit-{limit,remaining,reset}-requests` on every answer for this key.
    pub send_ratelimit_headers: bool,
    /// A daily cap on requests, in fixed windows of `day_window_secs` (RPD).
    pub requests_per_day: Option<u32>,
    /// A daily cap on images (a request costs `n`), in the same windows (IPD).
    pub images_per_day: Option<u32>,
    /// Sent as `openai-organization` on every answer for this key.
    pub organization: Option<String>,
    /// Sent as `openai-project` on every answer. Keys naming the same project share one set
    /// of limits, as OpenAI counts limits per project: one limiter and one daily count, set
    /// by the first key naming it. [`SimConfig::validate`] rejects a later key of the project
    /// whose limit fields (`requests_per_minute`, `images_per_minute`, `burst`,
    /// `requests_per_day`, `images_per_day`) or `organization` differ from the first's.
    pub project: Option<String>,
    /// Models this key gets a 403 for (an organization not verified for them).
    pub forbidden_models: Vec<String>,
}

impl std::fmt::Debug for SimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimKey")
            .field("id", &super::key_id(&self.secret))
            .field("requests_per_minute", &self.requests_per_minute)
            .field("images_per_minute", &self.images_per_minute)
            .field("burst", &self.burst)
            .field("behavior", &self.behavior)
            .field("retry_header", &self.retry_header)
            .field("send_ratelimit_headers", &self.send_ratelimit_headers)
            .field("requests_per_day", &self.requests_per_day)
            .field("images_per_day", &self.images_per_day)
            .field("organization", &self.organization)
            .field("project", &self.project)
            .field("forbidden_models", &self.forbidden_models)
            .finish()
    }
}

/// What a key does regardless of limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyBehavior {
    /// Normal key: limits, validation and faults apply.
    #[default]
    Normal,
    /// Every call answers 429 `insufficient_quota` (a key whose billing ran out).
    InsufficientQuota,
}

/// Which header a 429 uses to say how long to wait (always the true wait until the request
/// would be allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryHeader {
    /// `retry-after: <whole seconds, rounded up>`.
    #[default]
    RetryAfterSeconds,
    /// `retry-after-ms: <milliseconds, rounded up>`.
    RetryAfterMs,
    /// `retry-after: <IMF-fixdate>`, rounded up to the next whole second.
    RetryAfterHttpDate,
    /// `x-ratelimit-reset-requests: <Go-style duration such as 1s, 6m0s, 20ms, 1.5s>`.
    ResetRequests,
    /// No hint at all: the client has to guess.
    None,
}

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SimConfigError {
    /// The file could not be read.
    #[error("cannot read sim config {path}: {source}")]
    Io {
        /// The file that was asked for.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`SimConfig`].
    #[error("invalid sim config TOML: {0}")]
    Toml(#[from] toml::de::Error),
    /// The values parse but make no sense (e.g. a zero rate or a duplicate secret).
    #[error("invalid sim config: {0}")]
    Invalid(String),
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            fail_rate_5xx: 0.0,
            latency: Duration::ZERO,
            content_policy_marker: "FORBIDDEN".to_string(),
            seed: None,
            day_window_secs: 86_400,
            full_size_images: false,
        }
    }
}

impl Default for SimKey {
    fn default() -> Self {
        Self {
            secret: String::new(),
            requests_per_minute: 60,
            images_per_minute: None,
            burst: None,
            behavior: KeyBehavior::Normal,
            retry_header: RetryHeader::RetryAfterSeconds,
            send_ratelimit_headers: true,
            requests_per_day: None,
            images_per_day: None,
            organization: None,
            project: None,
            forbidden_models: Vec::new(),
        }
    }
}

impl SimKey {
    /// A normal key with the given secret and request rate, everything else default.
    pub fn new(secret: impl Into<String>, requests_per_minute: u32) -> Self {
        Self {
            secret: secret.into(),
            requests_per_minute,
            ..Self::default()
        }
    }

    /// The limit fields, which keys of one project must agree on.
    fn limits(&self) -> (u32, Option<u32>, u32, Option<u32>, Option<u32>) {
        (
            self.requests_per_minute,
            self.images_per_minute,
            self.burst.unwrap_or(1),
            self.requests_per_day,
            self.images_per_day,
        )
    }
}

impl SimConfig {
    /// A configuration for demos: three working keys with small, different limits and retry
    /// styles, plus one key whose quota is exhausted. Light faults and latency, fixed seed.
    pub fn demo() -> Self {
        Self {
            keys: vec![
                SimKey {
                    images_per_minute: Some(10),
                    ..SimKey::new("sk-sim-demo-alpha", 6)
                },
                SimKey {
                    burst: Some(2),
                    retry_header: RetryHeader::RetryAfterMs,
                    ..SimKey::new("sk-sim-demo-bravo", 12)
                },
                SimKey {
                    retry_header: RetryHeader::ResetRequests,
                    ..SimKey::new("sk-sim-demo-charlie", 3)
                },
                SimKey {
                    behavior: KeyBehavior::InsufficientQuota,
                    ..SimKey::new("sk-sim-demo-broke", 60)
                },
            ],
            fail_rate_5xx: 0.05,
            latency: Duration::from_millis(300),
            seed: Some(7),
            ..Self::default()
        }
    }

    /// Checks the values a TOML file cannot rule out by type.
    pub fn validate(&self) -> Result<(), SimConfigError> {
        let bad = |msg: String| Err(SimConfigError::Invalid(msg));
        if self.day_window_secs == 0 {
            return bad("day_window_secs must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.fail_rate_5xx) {
            return bad(format!("fail_rate_5xx {} not in 0..=1", self.fail_rate_5xx));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, key) in self.keys.iter().enumerate() {
            if key.secret.is_empty() {
                return bad(format!("keys[{i}]: empty secret"));
            }
            if !seen.insert(key.secret.as_str()) {
                return bad(format!("keys[{i}]: duplicate secret"));
            }
            if key.requests_per_minute == 0 || key.images_per_minute == Some(0) {
                return bad(format!("keys[{i}]: rates must be at least 1 per minute"));
            }
            if key.burst == Some(0) {
                return bad(format!("keys[{i}]: burst must be at least 1"));
            }
            if key.requests_per_day == Some(0) || key.images_per_day == Some(0) {
                return bad(format!("keys[{i}]: daily caps must be at least 1"));
            }
        }
        let mut first_of_project: std::collections::HashMap<&str, &SimKey> =
            std::collections::HashMap::new();
        for (i, key) in self.keys.iter().enumerate() {
            let Some(project) = key.project.as_deref() else {
                continue;
            };
            let first = *first_of_project.entry(project).or_insert(key);
            if key.limits() != first.limits() {
                return bad(format!(
                    "keys[{i}]: project {project:?} has one set of limits; this key's \
                     differ from those of the project's first key"
                ));
            }
            if let (Some(a), Some(b)) = (&key.organization, &first.organization)
                && a != b
            {
                return bad(format!(
                    "keys[{i}]: project {project:?} belongs to organization {b:?}, not {a:?}"
                ));
            }
        }
        Ok(())
    }
}

/// Reads and validates a TOML configuration file (format in [`crate`]).
pub fn load_config(path: &Path) -> Result<SimConfig, SimConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| SimConfigError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let config: SimConfig = toml::from_str(&text)?;
    config.validate()?;
    Ok(config)
}

/// Serde adapter: a [`Duration`] as whole milliseconds.
mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip_and_defaults() {
        let text = r#"
            fail_rate_5xx = 0.1
            latency_ms = 250
            seed = 3

            [[keys]]
            secret = "sk-a"
            requests_per_minute = 30
            images_per_minute = 40
            burst = 2
            retry_header = "reset_requests"

            [[keys]]
            secret = "sk-b"
            behavior = "insufficient_quota"
            retry_header = "none"
            send_ratelimit_headers = false
        "#;
        let config: SimConfig = toml::from_str(text).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.latency, Duration::from_millis(250));
        assert_eq!(config.content_policy_marker, "FORBIDDEN");
        assert_eq!(config.keys[0].retry_header, RetryHeader::ResetRequests);
        assert_eq!(config.keys[1].behavior, KeyBehavior::InsufficientQuota);
        assert_eq!(config.keys[1].requests_per_minute, 60);
        let again: SimConfig = toml::from_str(&toml::to_string(&config).expect("ser")).expect("de");
        assert_eq!(again, config);
    }

    #[test]
    fn load_config_reads_files() {
        let path = std::env::temp_dir().join(format!("genq-sim-{}.toml", std::process::id()));
        std::fs::write(&path, "[[keys]]\nsecret = \"sk-file\"\nburst = 3\n").expect("write");
        let loaded = load_config(&path);
        std::fs::remove_file(&path).expect("cleanup");
        assert_eq!(loaded.expect("loads").keys[0].burst, Some(3));
        let missing = load_config(Path::new("/nonexistent/sim.toml"));
        assert!(matches!(missing, Err(SimConfigError::Io { .. })));
    }

    #[test]
    fn rejects_nonsense() {
        assert!(toml::from_str::<SimConfig>("nope = 1").is_err());
        let mut config = SimConfig::demo();
        config.validate().expect("demo is valid");
        config.keys[1].secret = config.keys[0].secret.clone();
        assert!(config.validate().is_err());
        let zero = SimConfig {
            keys: vec![SimKey::new("sk-z", 0)],
            ..SimConfig::default()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn new_fields_parse_and_projects_must_agree() {
        let text = r#"
            day_window_secs = 30

            [[keys]]
            secret = "sk-p1"
            requests_per_minute = 6
            requests_per_day = 20
            images_per_day = 40
            organization = "org-sim"
            project = "proj_a"
            forbidden_models = ["gpt-image-1.5"]

            [[keys]]
            secret = "sk-p2"
            requests_per_minute = 6
            requests_per_day = 20
            images_per_day = 40
            project = "proj_a"
        "#;
        let config: SimConfig = toml::from_str(text).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.day_window_secs, 30);
        let p1 = &config.keys[0];
        assert_eq!(
            (p1.requests_per_day, p1.images_per_day),
            (Some(20), Some(40))
        );
        assert_eq!(p1.forbidden_models, ["gpt-image-1.5"]);
        assert_eq!(SimKey::default().burst, None, "burst defaults to 1 (None)");
        assert_eq!(SimKey::default().images_per_day, None);
        // (what to change on the second key, whether that is still valid)
        type Change = fn(&mut SimKey);
        let table: [(Change, bool); 6] = [
            (|k| k.requests_per_minute = 7, false),
            (|k| k.burst = Some(2), false),
            (|k| k.burst = Some(1), true),
            (|k| k.images_per_day = None, false),
            (|k| k.organization = Some("org-other".into()), false),
            (|k| k.project = Some("proj_b".into()), true),
        ];
        for (i, (change, valid)) in table.into_iter().enumerate() {
            let mut changed = config.clone();
            change(&mut changed.keys[1]);
            assert_eq!(changed.validate().is_ok(), valid, "change {i}");
        }
        let mut zero = config.clone();
        zero.keys[0].images_per_day = Some(0);
        assert!(zero.validate().is_err());
    }

    #[test]
    fn debug_shows_the_key_id_not_the_secret() {
        let key = SimKey::new("sk-sim-very-secret-1234", 60);
        let shown = format!(
            "{key:?} {:?}",
            SimConfig {
                keys: vec![key.clone()],
                ..SimConfig::default()
            }
        );
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains(&crate::key_id(&key.secret)), "{shown}");
    }
}
