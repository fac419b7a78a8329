//! The key of a stored image: `<job id>/<attempt>/<n>.<ext>`, the same under
//! a local directory and under an object-store prefix. Only keys of exactly
//! this shape are read back, so a stored result can never name anything
//! else.

use uuid::Uuid;

/// The key of image `index` of `attempt` of `job_id`.
pub fn image(job_id: Uuid, attempt: i32, index: usize, ext: &str) -> String {
    format!("{job_id}/{attempt}/{index}.{ext}")
}

/// Whether `key` is one genq writes.
pub fn is_valid(key: &str) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    matches!(parts.as_slice(), [job, attempt, file]
    if Uuid::parse_str(job).is_ok()
        && attempt.parse::<u32>().is_ok()
        && file.split_once('.').is_some_and(|(n, ext)| {
            n.parse::<u32>().is_ok() && ["png", "jpeg", "webp"].contains(&ext)
        }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_keys_genq_writes_are_valid() {
        let job = uuid::Uuid::nil();
        let cases = [
            (super::image(job, 1, 0, "png"), true),
            (format!("{job}/2/9.webp"), true),
            (format!("{job}/1/0.gif"), false),
            (format!("{job}/../0.png"), false),
            (format!("{job}/1/0.png/x"), false),
            ("../../etc/passwd".to_string(), false),
            (format!("/{job}/1/0.png"), false),
        ];
        for (key, want) in cases {
            assert_eq!(super::is_valid(&key), want, "{key}");
        }
    }
}
