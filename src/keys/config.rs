//! The API keys a worker may use, from `OPENAI_API_KEYS`, `OPENAI_API_KEY`
//! and `GENQ_KEYS_FILE`, with their per-model limits.
//!
//! Keys file (TOML):
//! ```toml
//! [[keys]]
//! name = "team-a"              # optional; the id is the name, else key-<8 hex of sha256(secret)>
//! secret = "sk-..."            # or: secret_env = "TEAM_A_KEY" (read from the environment)
//! account = "org-1/proj-1"     # optional: keys of one account share one budget per model
//! models = ["gpt-image-2"]     # optional: the models this key may serve (default: any)
//! [keys.limits.gpt-image-2]    # per model; "*" applies to models not listed
//! requests_per_minute = 50
//! images_per_minute = 100      # optional
//! burst = 2                    # optional, default 1
//! requests_per_day = 200       # optional daily caps (some tiers have them)
//! images_per_day = 400
//! daily_window_secs = 86400    # optional: the provider's daily window
//! ```
//! A key named in both the environment and the file takes its limits from the file.
//! Limits left out are learned at run time from `x-ratelimit-*` headers and 429s.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

use crate::secret::ApiSecret;

/// Limits of one key (or account) for one model.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub requests_per_minute: f64,
    #[serde(default)]
    pub images_per_minute: Option<f64>,
    #[serde(default = "one")]
    pub burst: u32,
    /// A daily cap on requests (some tiers have one), counted per window.
    #[serde(default)]
    pub requests_per_day: Option<u32>,
    /// A daily cap on images.
    #[serde(default)]
    pub images_per_day: Option<u32>,
    /// The length of the provider's daily window, in seconds (86400 unless
    /// a provider counts otherwise).
    #[serde(default = "day_secs")]
    pub daily_window_secs: f64,
}

fn one() -> u32 {
    1
}

fn day_secs() -> f64 {
    86_400.0
}

fn positive(rate: f64) -> bool {
    rate.is_finite() && rate > 0.0
}

/// One usable key.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    pub secret: ApiSecret,
    /// Keys of one account share buckets; a key without one is its own account.
    pub account: Option<String>,
    /// Models this key may serve; None means any.
    pub models: Option<Vec<String>>,
    /// Limits per model name, `*` for the rest.
    pub limits: BTreeMap<String, Limits>,
}

impl ApiKey {
    /// The bucket scope: the account, else the key itself.
    pub fn scope(&self) -> &str {
        self.account.as_deref().unwrap_or(&self.id)
    }

    pub fn serves(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == model))
    }

    /// Configured limits for `model`, if any.
    pub fn limits_for(&self, model: &str) -> Option<Limits> {
        self.limits
            .get(model)
            .or_else(|| self.limits.get("*"))
            .copied()
    }
}

/// The key set is unusable; the text says what to fix. Never contains a secret.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct KeysError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<FileKey>,
    /// Spend caps may sit beside the keys; `crate::budget` reads them.
    #[serde(default, rename = "budget")]
    _budget: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    name: Option<String>,
    secret: Option<String>,
    secret_env: Option<String>,
    account: Option<String>,
    models: Option<Vec<String>>,
    #[serde(default)]
    limits: BTreeMap<String, Limits>,
}

/// Parses `OPENAI_API_KEYS` syntax: comma-separated `secret` or `name=secret`.
pub fn parse_env_keys(list: &str) -> Result<Vec<ApiKey>, KeysError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, entry)| {
            let (label, secret) = match split_entry(entry) {
                Entry::Bare(secret) => (None, secret),
                Entry::Named(label, secret) => (Some(label), secret),
                Entry::Empty => {
                    return Err(KeysError(format!(
                        "OPENAI_API_KEYS entry {} has nothing after its `=`; write name=secret \
                         (a secret that ends in `=` padding and is shorter than {MIN_PADDED_SECRET} \
                         characters needs a name in front: mykey=secret)",
                        i + 1
                    )));
                }
            };
            let (name, account) = match label {
                Some(label) => match label.split_once('@') {
                    Some((name, account)) => (Some(name.trim()), Some(account.trim())),
                    None => (Some(label), None),
                },
                None => (None, None),
            };
            if account.is_some_and(str::is_empty) {
                return Err(KeysError(format!(
                    "OPENAI_API_KEYS entry {} (named {:?}) names an empty account; write name@account=secret",
                    i + 1,
                    name.unwrap_or("")
                )));
            }
            let mut key = new_key(name.map(str::to_string), ApiSecret::new(secret));
            key.account = account.map(str::to_string);
            check_secret(&key.id, secret)?;
            Ok(key)
        })
        .collect()
}

/// The shortest text taken for a bare secret ending in `=` padding rather
/// than for a name with its secret left out (`team=`): OpenAI secrets are
/// far longer, names rarely are.
const MIN_PADDED_SECRET: usize = 16;

/// How one `OPENAI_API_KEYS` entry reads.
#[derive(Debug, PartialEq)]
enum Entry<'a> {
    /// A secret alone (it may itself contain `=`).
    Bare(&'a str),
    /// `name=secret` or `name@account=secret`.
    Named(&'a str, &'a str),
    /// `name=` with nothing after (or only `=`s): the name is not echoed in
    /// the error, since it may be a short secret with base64 padding.
    Empty,
}

/// Splits `name=secret`, `name@account=secret` or a bare `secret`. A bare
/// secret may itself contain `=` (base64 padding): the text before the
/// first `=` is a name only if it looks like one (letters, digits, `-_.@/:`)
/// and not like a secret (`sk-…`), and something other than more `=` follows.
/// `QUJDREVGR0hJSktM==` is a bare secret; `team=` is refused; `team=sk-1` is named.
fn split_entry(entry: &str) -> Entry<'_> {
    let Some((label, rest)) = entry.split_once('=') else {
        return Entry::Bare(entry);
    };
    let label = label.trim();
    let looks_like_name = !label.is_empty()
        && !label.starts_with("sk-")
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@/:".contains(c));
    if !looks_like_name {
        return Entry::Bare(entry);
    }
    let rest = rest.trim();
    if rest.chars().all(|c| c == '=') {
        // Only padding follows: a secret like `QUJD…=`, or a name missing its secret.
        return if label.len() >= MIN_PADDED_SECRET && !label.contains('@') {
            Entry::Bare(entry)
        } else {
            Entry::Empty
        };
    }
    Entry::Named(label, rest)
}

/// An HTTP header can carry only visible ASCII; anything else is a paste error.
fn check_secret(label: &str, secret: &str) -> Result<(), KeysError> {
    if secret.chars().all(|c| c.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(KeysError(format!(
            "key {label}: the secret contains spaces, quotes or non-ASCII characters an HTTP header cannot carry; check the copy"
        )))
    }
}

fn new_key(name: Option<String>, secret: ApiSecret) -> ApiKey {
    ApiKey {
        id: name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| secret.key_id()),
        secret,
        account: None,
        models: None,
        limits: BTreeMap::new(),
    }
}

/// Parses a keys file's text. `env` looks up `secret_env` names.
pub fn parse_keys_file(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<ApiKey>, KeysError> {
    let file: KeysFile = toml::from_str(text)
        .map_err(|e| KeysError(format!("keys file: {}", without_quoted(e.message()))))?;
    file.keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| {
            let label = k.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
            let secret = match (k.secret, &k.secret_env) {
                (Some(s), None) if !s.trim().is_empty() => s.trim().to_string(),
                (None, Some(var)) if !is_env_name(var) => {
                    return Err(KeysError(format!(
                        "keys file: key {label}: secret_env must name an environment variable \
                         (letters, digits and _), not hold the secret; put a secret in secret"
                    )));
                }
                (None, Some(var)) => env(var).filter(|s| !s.trim().is_empty()).ok_or_else(|| {
                    KeysError(format!("keys file: key {label}: environment variable {var} is unset or empty"))
                })?,
                _ => {
                    return Err(KeysError(format!(
                        "keys file: key {label}: give exactly one of secret or secret_env"
                    )));
                }
            };
            for (model, l) in &k.limits {
                if !positive(l.requests_per_minute)
                    || l.images_per_minute.is_some_and(|v| !positive(v))
                    || l.burst == 0
                    || l.requests_per_day == Some(0)
                    || l.images_per_day == Some(0)
                    || !positive(l.daily_window_secs)
                {
                    return Err(KeysError(format!(
                        "keys file: key {label}, model {model}: limits must be positive (requests_per_minute > 0, images_per_minute > 0, burst >= 1, requests_per_day and images_per_day >= 1, daily_window_secs > 0)"
                    )));
                }
            }
            check_secret(&label, &secret)?;
            let mut key = new_key(k.name, ApiSecret::new(secret));
            key.account = k.account.filter(|a| !a.trim().is_empty());
            key.models = k.models;
            key.limits = k.limits;
            Ok(key)
        })
        .collect()
}

/// serde's messages quote the offending value (`invalid type: string "sk-…"`)
/// or key (``unknown field `sk-…` ``), which may be a secret in the wrong
/// place: quoted values are left out, and quoted keys unless they read as a
/// field name.
fn without_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(['"', '`']) {
        let quote = rest[start..].chars().next().unwrap_or('"');
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let (inner, next) = match after.find(quote) {
            Some(end) => (&after[..end], &after[end + 1..]),
            None => (after, ""),
        };
        let field_name = quote == '`'
            && inner.len() <= 32
            && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        out.push(quote);
        out.push_str(if field_name { inner } else { "(hidden)" });
        out.push(quote);
        rest = next;
    }
    out.push_str(rest);
    out
}

/// An environment variable's name, as `secret_env` must give.
fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Merges environment keys and file keys: the file's entry wins for a key
/// in both (same secret). Refuses two different secrets under one id.
pub fn merge(env_keys: Vec<ApiKey>, file_keys: Vec<ApiKey>) -> Result<Vec<ApiKey>, KeysError> {
    let mut out: Vec<ApiKey> = file_keys;
    for key in env_keys {
        if !out.iter().any(|k| k.secret == key.secret) {
            out.push(key);
        }
    }
    for (i, a) in out.iter().enumerate() {
        if out[..i].iter().any(|b| b.id == a.id) {
            return Err(KeysError(format!(
                "two different keys have the id {:?}; give them distinct names",
                a.id
            )));
        }
    }
    Ok(out)
}

/// Loads keys from the process environment and the keys file, if any.
pub fn from_env() -> Result<Vec<ApiKey>, KeysError> {
    let mut env_keys = match std::env::var("OPENAI_API_KEYS") {
        Ok(list) => parse_env_keys(&list)?,
        Err(_) => Vec::new(),
    };
    if let Ok(one) = std::env::var("OPENAI_API_KEY") {
        env_keys.extend(parse_env_keys(&one)?);
    }
    // Set but empty (as `.env.example` and the compose file leave it) means no file.
    let file_keys = match std::env::var_os("GENQ_KEYS_FILE") {
        Some(path) if !path.is_empty() => load_file(Path::new(&path))?,
        _ => Vec::new(),
    };
    merge(env_keys, file_keys)
}

/// Reads and parses a keys file.
pub fn load_file(path: &Path) -> Result<Vec<ApiKey>, KeysError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        KeysError(format!(
            "cannot read GENQ_KEYS_FILE {}: {e}",
            path.display()
        ))
    })?;
    parse_keys_file(&text, |var| std::env::var(var).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_keys_get_names_or_hashed_ids() {
        let keys = parse_env_keys("sk-one, team=sk-two ,").unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].id, ApiSecret::new("sk-one").key_id());
        assert!(keys[0].id.starts_with("key-") && keys[0].id.len() == 12);
        assert_eq!(
            (keys[1].id.as_str(), keys[1].secret.expose()),
            ("team", "sk-two")
        );
        assert!(
            parse_env_keys("team=").unwrap_err().0.starts_with(
                "OPENAI_API_KEYS entry 1 has nothing after its `=`; write name=secret"
            )
        );
    }

    #[test]
    fn env_keys_take_accounts_and_secrets_with_equals_signs() {
        // (entry, id, account, secret)
        let rows = [
            ("a@org-1/proj-1=sk-x", "a", Some("org-1/proj-1"), "sk-x"),
            ("b=sk-pad==", "b", None, "sk-pad=="),
            ("sk-bare==", "", None, "sk-bare=="),
            ("sk-looks=like-a-name", "", None, "sk-looks=like-a-name"),
            ("c@acct=sk-y=", "c", Some("acct"), "sk-y="),
        ];
        for (entry, id, account, secret) in rows {
            let key = &parse_env_keys(entry).unwrap()[0];
            let id = if id.is_empty() {
                ApiSecret::new(secret).key_id()
            } else {
                id.to_string()
            };
            assert_eq!(
                (key.id.as_str(), key.account.as_deref(), key.secret.expose()),
                (id.as_str(), account, secret),
                "{entry}"
            );
        }
        let err = parse_env_keys("ok=sk-1,a@=sk-2").unwrap_err().0;
        assert_eq!(
            err,
            "OPENAI_API_KEYS entry 2 (named \"a\") names an empty account; write name@account=secret"
        );
        assert!(
            !err.contains("sk-2"),
            "a refused entry never shows its secret"
        );
    }

    #[test]
    fn base64_secrets_are_never_read_as_names() {
        // (entry, how it reads)
        let rows = [
            ("sk-abc==", Entry::Bare("sk-abc==")),
            (
                "QUJDREVGR0hJSktMTU5P==",
                Entry::Bare("QUJDREVGR0hJSktMTU5P=="),
            ),
            (
                "QUJDREVGR0hJSktMTU5PUA=",
                Entry::Bare("QUJDREVGR0hJSktMTU5PUA="),
            ),
            ("YWJj+ZGVm/Z2hp=", Entry::Bare("YWJj+ZGVm/Z2hp=")),
            ("team=sk-abc==", Entry::Named("team", "sk-abc==")),
            ("a@org=QUJD==", Entry::Named("a@org", "QUJD==")),
            ("QUJD=", Entry::Empty),
            ("team=", Entry::Empty),
            ("team= == ", Entry::Empty),
            ("a@acct-with-a-long-name=", Entry::Empty),
        ];
        for (entry, want) in rows {
            assert_eq!(split_entry(entry), want, "{entry}");
        }
        let key = &parse_env_keys("QUJDREVGR0hJSktMTU5P==").unwrap()[0];
        assert_eq!(key.secret.expose(), "QUJDREVGR0hJSktMTU5P==");
        assert_eq!(key.id, ApiSecret::new("QUJDREVGR0hJSktMTU5P==").key_id());
    }

    #[test]
    fn refused_env_entries_never_show_the_secret() {
        // (list, a secret or secret-like part that must not appear, expected text)
        let rows = [
            ("ok=sk-1,QUJD=", "QUJD", "entry 2 has nothing after its `=`"),
            ("QUJDRA==", "QUJDRA", "entry 1 has nothing after its `=`"),
            ("t@acct=", "acct", "entry 1 has nothing after its `=`"),
            ("sk-abc== x", "sk-abc", "the secret contains spaces"),
            (
                "team=sk-abc==\u{7f}",
                "sk-abc",
                "key team: the secret contains",
            ),
            ("sk-abc==é", "sk-abc", "the secret contains"),
        ];
        for (list, secret, want) in rows {
            let err = parse_env_keys(list).unwrap_err().0;
            assert!(err.contains(want), "{list:?}: {err}");
            assert!(!err.contains(secret), "{list:?}: secret in {err}");
        }
    }

    #[test]
    fn malformed_keys_files_never_show_the_secret() {
        let texts = [
            "[[keys]]\nsecret = \"sk-abc==\"\nsecret_env = \"X\"\n",
            "[[keys]]\nsecret = sk-abc==\n",
            "[[keys]]\nsecret = \"sk-abc==\n",
            "[[keys]]\nsecret = [\"sk-abc==\"]\n",
            "[[keys]]\nname = \"n\"\nsecret = \"sk-abc==\"\nmodels = \"sk-abc==\"\n",
            "[[keys]]\nsecret = \"sk-abc==\"\n[keys.limits.m]\nburst = \"sk-abc==\"\n",
            "[[keys]]\nsecret = \"sk-abc==\"\nsk-abc== = 1\n",
            "[[keys]]\n\"sk-abc==\" = \"x\"\n",
            "[[keys]]\nsecret_env = \"sk-abc==\"\n",
            "[[keys]]\nname = \"a\"\nsecret_env = \"sk-abc\"\n",
        ];
        for text in texts {
            match parse_keys_file(text, |_| None) {
                Ok(keys) => panic!("{text:?} was accepted: {keys:?}"),
                Err(err) => assert!(!err.0.contains("sk-abc"), "{text:?}: secret in {err}"),
            }
        }
    }

    #[test]
    fn quoted_values_are_hidden_from_parse_errors() {
        let rows = [
            (
                "invalid type: string \"sk-abc==\", expected a sequence",
                "invalid type: string \"(hidden)\", expected a sequence",
            ),
            (
                "unknown field `bogus`, expected `name`",
                "unknown field `bogus`, expected `name`",
            ),
            ("unknown field `sk-abc==`", "unknown field `(hidden)`"),
            ("unterminated \"sk-abc", "unterminated \"(hidden)\""),
            ("no quotes", "no quotes"),
        ];
        for (message, want) in rows {
            assert_eq!(without_quoted(message), want);
        }
    }

    #[test]
    fn keys_file_limits_accounts_and_secret_env() {
        let text = r#"
            [[keys]]
            name = "a"
            secret = "sk-a"
            account = "org-1"
            models = ["gpt-image-2"]
            [keys.limits.gpt-image-2]
            requests_per_minute = 50
            images_per_minute = 100
            burst = 2
            [keys.limits."*"]
            requests_per_minute = 5

            [[keys]]
            secret_env = "B_KEY"
        "#;
        let keys = parse_keys_file(text, |v| (v == "B_KEY").then(|| "sk-b".to_string())).unwrap();
        assert_eq!(keys[0].scope(), "org-1");
        assert!(keys[0].serves("gpt-image-2") && !keys[0].serves("gpt-image-1"));
        assert_eq!(
            keys[0].limits_for("gpt-image-2"),
            Some(Limits {
                requests_per_minute: 50.0,
                images_per_minute: Some(100.0),
                burst: 2,
                requests_per_day: None,
                images_per_day: None,
                daily_window_secs: 86_400.0,
            })
        );
        assert_eq!(
            keys[0].limits_for("other").map(|l| l.requests_per_minute),
            Some(5.0)
        );
        assert_eq!(keys[1].id, ApiSecret::new("sk-b").key_id());
        assert_eq!(keys[1].scope(), keys[1].id);
        assert!(keys[1].serves("anything") && keys[1].limits_for("x").is_none());
    }

    #[test]
    fn keys_file_errors_say_what_to_fix_without_secrets() {
        let cases = [
            (
                "[[keys]]\nname = \"a\"\n",
                "key a: give exactly one of secret or secret_env",
            ),
            (
                "[[keys]]\nsecret_env = \"NOPE\"\n",
                "environment variable NOPE is unset or empty",
            ),
            (
                "[[keys]]\nsecret = \"sk-zz\"\n[keys.limits.m]\nrequests_per_minute = 0\n",
                "limits must be positive",
            ),
            (
                "[[keys]]\nsecret = \"sk-zz\"\nbogus = 1\n",
                "unknown field `bogus`",
            ),
        ];
        for (text, want) in cases {
            let err = parse_keys_file(text, |_| None).unwrap_err();
            assert!(err.0.contains(want), "{text}: {err}");
            assert!(!err.0.contains("sk-zz"), "secret leaked: {err}");
        }
    }

    #[test]
    fn merge_prefers_the_file_and_refuses_clashing_ids() {
        let file = parse_keys_file(
            "[[keys]]\nname = \"a\"\nsecret = \"sk-a\"\naccount = \"o\"\n",
            |_| None,
        )
        .unwrap();
        let env = parse_env_keys("sk-a,sk-b").unwrap();
        let merged = merge(env, file).unwrap();
        assert_eq!(
            merged.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            ["a", ApiSecret::new("sk-b").key_id().as_str()]
        );
        let clash = merge(parse_env_keys("x=sk-1,x=sk-2").unwrap(), vec![]).unwrap_err();
        assert!(clash.0.contains("two different keys have the id \"x\""));
    }

    #[test]
    fn secrets_a_header_cannot_carry_are_refused_by_id() {
        let err = parse_env_keys("team=sk-abc déf").unwrap_err();
        assert!(err.0.starts_with("key team: the secret contains"), "{err}");
        assert!(!err.0.contains("sk-abc"));
        let err = parse_keys_file("[[keys]]\nname = \"x\"\nsecret = \"sk-a\\nb\"\n", |_| None)
            .unwrap_err();
        assert!(err.0.starts_with("key x: the secret contains"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let keys = parse_env_keys("team=sk-very-secret").unwrap();
        assert!(!format!("{keys:?}").contains("sk-very-secret"));
    }
}
