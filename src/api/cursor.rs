//! The opaque `cursor` of `GET /v1/jobs` paging: the last listed job's
//! place in list order, `(created_at, id)`, so the next page starts right
//! after it whatever was inserted meanwhile. Clients pass `next_cursor`
//! back unchanged; its inside may change between versions.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The cursor after the job created at `created_at` with `id`.
pub fn encode(created_at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}.{id}", created_at.timestamp_micros()))
}

/// The place a cursor stands for, or why it is not one.
pub fn decode(cursor: &str) -> Result<(DateTime<Utc>, Uuid), String> {
    let bad = || {
        format!(
            "cursor {cursor:?} is not one this server gave; pass next_cursor from the previous page unchanged"
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (micros, id) = text.split_once('.').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    let id = Uuid::parse_str(id).map_err(|_| bad())?;
    Ok((at, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let at: DateTime<Utc> = "2026-11-24T18:00:00.123456Z".parse().unwrap();
        let id = Uuid::new_v4();
        let cursor = encode(at, id);
        assert!(
            cursor
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        );
        assert_eq!(decode(&cursor), Ok((at, id)));
        for bad in ["", "nope!", "MTIz", &URL_SAFE_NO_PAD.encode("x.y")] {
            let err = decode(bad).unwrap_err();
            assert!(err.contains("pass next_cursor"), "{bad}: {err}");
        }
    }
}
