//! Text and JSON from outside (provider messages, `revised_prompt`, usage)
//! made storable before any statement carries them.
//!
//! PostgreSQL refuses a NUL in `text` (`invalid byte sequence for encoding
//! "UTF8": 0x00`) and `\u0000` in `jsonb`; one such character would make
//! the whole statement fail, and with it every other row of its batch. So
//! NUL and the other control characters (except tab and newline) are
//! dropped, and lengths are bounded so one answer cannot bloat a row.
//! Invalid UTF-8 never gets this far: bytes become text only through
//! `String::from_utf8_lossy` (the provider's body) or are ignored (a header
//! that is not visible ASCII).

use serde_json::Value;

/// Most characters kept of a message (`last_error`, an attempt's `error`).
pub const MAX_MESSAGE_CHARS: usize = 2_000;
/// Most characters kept of one string inside stored JSON (a result's
/// `revised_prompt` is at most a prompt long: 32,000).
pub const MAX_JSON_STRING_CHARS: usize = 32_000;

/// `text` without NUL or control characters, cut to [`MAX_MESSAGE_CHARS`].
pub fn message(text: &str) -> String {
    bounded(text, MAX_MESSAGE_CHARS)
}

/// `value` with every string and key cleaned as [`message`] does, strings
/// cut to [`MAX_JSON_STRING_CHARS`].
pub fn json(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(bounded(&s, MAX_JSON_STRING_CHARS)),
        Value::Array(items) => Value::Array(items.into_iter().map(json).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (bounded(&k, MAX_JSON_STRING_CHARS), json(v)))
                .collect(),
        ),
        other => other,
    }
}

fn bounded(text: &str, max_chars: usize) -> String {
    let kept = |c: &char| !c.is_control() || matches!(c, '\n' | '\t');
    let mut out = String::with_capacity(text.len().min(max_chars * 4));
    let mut chars = text.chars().filter(kept);
    for c in chars.by_ref().take(max_chars) {
        out.push(c);
    }
    if chars.next().is_some() {
        out.pop();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_lose_control_characters_and_keep_the_rest() {
        let long = "é".repeat(MAX_MESSAGE_CHARS + 5);
        let cut = format!("{}…", "é".repeat(MAX_MESSAGE_CHARS - 1));
        let cases: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("nul\0inside", "nulinside"),
            ("bell\u{7}and\u{1b}[31mescape", "belland[31mescape"),
            ("lines\nand\ttabs stay", "lines\nand\ttabs stay"),
            ("猫 and emoji 🦊 stay", "猫 and emoji 🦊 stay"),
            (&long, &cut),
        ];
        for (input, want) in cases {
            assert_eq!(&message(input), want, "{input:?}");
        }
        assert_eq!(message(&long).chars().count(), MAX_MESSAGE_CHARS);
    }

    #[test]
    fn json_strings_and_keys_are_cleaned_at_every_depth() {
        let dirty = json!({
            "revised_prompt": "a fox\u{0}",
            "key\u{0}": [1, "x\u{0}y", {"deep": "\u{0}"}],
            "n": 2, "ok": true, "none": null
        });
        let clean = json!({
            "revised_prompt": "a fox",
            "key": [1, "xy", {"deep": ""}],
            "n": 2, "ok": true, "none": null
        });
        assert_eq!(json(dirty), clean);
        let long = Value::String("a".repeat(MAX_JSON_STRING_CHARS + 1));
        let Value::String(cut) = json(long) else {
            panic!()
        };
        assert_eq!(cut.chars().count(), MAX_JSON_STRING_CHARS);
        assert!(cut.ends_with('…'));
    }
}
