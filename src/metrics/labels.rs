//! Label values users choose (queue and model names) are bounded before
//! they become Prometheus series: each value is cut to a safe alphabet and
//! length, and only so many distinct values get a series of their own; the
//! rest are folded into [`OTHER`]. A producer inventing a queue per request
//! can therefore not grow `/metrics` (or a Prometheus server) without bound.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// Longest label value exported, in characters.
pub const MAX_LABEL_LEN: usize = 64;
/// Most (queue, model) pairs with series of their own on `/metrics`.
pub const MAX_QUEUE_PAIRS: usize = 50;
/// Most distinct model names on the counters a process keeps.
pub const MAX_MODELS: usize = 50;
/// The label value that stands for everything past the caps.
pub const OTHER: &str = "other";

/// `value` in the alphabet label values keep (ASCII letters, digits and
/// `_.:/@+-`; anything else becomes `_`), at most [`MAX_LABEL_LEN`] long,
/// never empty.
pub fn sanitize(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(MAX_LABEL_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.:/@+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The `cap` heaviest items (ties broken by the item's order), those that
/// keep a series of their own.
pub fn heaviest<T: Ord + Clone, W: Ord>(weights: &[(T, W)], cap: usize) -> BTreeSet<T> {
    let mut sorted: Vec<&(T, W)> = weights.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    sorted
        .into_iter()
        .take(cap)
        .map(|(item, _)| item.clone())
        .collect()
}

/// (queue, model) `pairs` as exported: the `cap` heaviest by `weight`
/// keep their labels ([`heaviest`]), the rest are `add`ed into
/// (`other`, `other`).
pub fn fold_lightest<V: Default, W: Ord>(
    pairs: BTreeMap<(String, String), V>,
    cap: usize,
    weight: impl Fn(&V) -> W,
    add: impl Fn(&mut V, &V),
) -> BTreeMap<(String, String), V> {
    let weights: Vec<_> = pairs.iter().map(|(k, v)| (k.clone(), weight(v))).collect();
    let keep = heaviest(&weights, cap);
    let mut shown: BTreeMap<(String, String), V> = BTreeMap::new();
    for (key, value) in pairs {
        let key = if keep.contains(&key) {
            key
        } else {
            (OTHER.to_string(), OTHER.to_string())
        };
        add(shown.entry(key).or_default(), &value);
    }
    shown
}

/// First come, first served: the first `cap` distinct values a process
/// sees keep their (sanitized) name on counters, later ones count as
/// [`OTHER`]. Counters cannot move between labels once counted, so this
/// admits rather than ranks.
pub struct Admitted {
    cap: usize,
    seen: Mutex<BTreeSet<String>>,
}

impl Admitted {
    /// Admits at most `cap` distinct values.
    pub const fn new(cap: usize) -> Self {
        Admitted {
            cap,
            seen: Mutex::new(BTreeSet::new()),
        }
    }

    /// The label `value` is counted under.
    pub fn label(&self, value: &str) -> String {
        let value = sanitize(value);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(&value) {
            return value;
        }
        if seen.len() < self.cap {
            seen.insert(value.clone());
            return value;
        }
        OTHER.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_cut_to_a_safe_alphabet_and_length() {
        let long = "q".repeat(200);
        let rows = [
            ("default", "default".to_string()),
            ("gpt-image-2", "gpt-image-2".to_string()),
            ("org/proj:v1.2@x+y", "org/proj:v1.2@x+y".to_string()),
            ("a\"b\\c\nd", "a_b_c_d".to_string()),
            ("猫 queue", "__queue".to_string()),
            ("", "_".to_string()),
            (long.as_str(), "q".repeat(MAX_LABEL_LEN)),
        ];
        for (value, want) in rows {
            assert_eq!(sanitize(value), want, "{value:?}");
        }
    }

    #[test]
    fn the_heaviest_keep_their_names() {
        let weights = [("a", 1), ("b", 9), ("c", 5), ("d", 5), ("e", 0)];
        let rows: [(usize, &[&str]); 4] = [
            (0, &[]),
            (1, &["b"]),
            (3, &["b", "c", "d"]),
            (9, &["a", "b", "c", "d", "e"]),
        ];
        for (cap, want) in rows {
            let got: Vec<&str> = heaviest(&weights, cap).into_iter().collect();
            assert_eq!(got, want, "cap {cap}");
        }
    }

    #[test]
    fn admission_is_capped_and_stable() {
        let admitted = Admitted::new(2);
        let got: Vec<String> = ["m1", "m1", "m 2", "m3", "m1", "m_2", "m4"]
            .iter()
            .map(|v| admitted.label(v))
            .collect();
        assert_eq!(got, ["m1", "m1", "m_2", "other", "m1", "m_2", "other"]);
    }
}
