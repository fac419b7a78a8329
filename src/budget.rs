//! Spend caps: a daily or monthly budget per queue or per account (a key
//! without an account is its own). Budgets live in `genq.budgets`, so every
//! replica, view and operator reads the same caps; `GENQ_BUDGETS` (a TOML
//! file) or `[[budget]]` entries in the keys file set them when a worker
//! starts, and plain SQL or `genq budgets set` changes them at any time.
//!
//! A queue at its cap is not claimed: its jobs wait in place, nothing is
//! written and nothing fails. An account at its cap has its keys left
//! unused. Both resume when the window rolls over (UTC midnight, or the
//! first of the month) or the cap is raised. `genq.budget_status` says what
//! was spent and why a budget stops work.

use serde::{Deserialize, Serialize};

use crate::cost::Usd;

/// What a budget caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Jobs of one queue, on any key.
    Queue,
    /// Calls on the keys of one account (or one key without an account).
    Account,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Queue => "queue",
            Scope::Account => "account",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = BudgetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "queue" => Ok(Scope::Queue),
            "account" => Ok(Scope::Account),
            _ => Err(BudgetError(format!(
                "unknown budget scope {s:?}; use queue or account"
            ))),
        }
    }
}

crate::store::text_enum!(Scope);

/// The window a budget counts spend over, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }
}

impl std::str::FromStr for Period {
    type Err = BudgetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" => Ok(Period::Day),
            "month" => Ok(Period::Month),
            _ => Err(BudgetError(format!(
                "unknown budget period {s:?}; use day or month"
            ))),
        }
    }
}

crate::store::text_enum!(Period);

/// One cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub scope: Scope,
    pub name: String,
    pub period: Period,
    pub cap: Usd,
}

/// A budget file or entry that cannot be used, saying what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BudgetError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    queue: Option<String>,
    account: Option<String>,
    daily_usd: Option<f64>,
    monthly_usd: Option<f64>,
}

/// The `[[budget]]` entries of `text`, a TOML file named `name` in errors.
/// `others` are the other top-level tables the file may have (`keys` in a
/// keys file); anything else is refused, so a misspelt `[[budgets]]` is
/// not silently ignored.
pub fn parse(text: &str, name: &str, others: &[&str]) -> Result<Vec<Budget>, BudgetError> {
    let fail = |what: String| BudgetError(format!("{name}: {what}"));
    let table: toml::Table = toml::from_str(text).map_err(|e| fail(e.to_string()))?;
    if let Some(stray) = table
        .keys()
        .find(|k| k.as_str() != "budget" && !others.contains(&k.as_str()))
    {
        return Err(fail(format!(
            "unknown table {stray:?}; budgets are [[budget]] entries"
        )));
    }
    let Some(entries) = table.get("budget") else {
        return Ok(Vec::new());
    };
    let entries: Vec<Entry> = entries
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| fail(format!("[[budget]]: {e}")))?;
    let mut budgets = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let at = |what: String| fail(format!("budget {}: {what}", i + 1));
        let (scope, who) = match (entry.queue, entry.account) {
            (Some(q), None) => (Scope::Queue, q),
            (None, Some(a)) => (Scope::Account, a),
            _ => return Err(at("give exactly one of queue or account".into())),
        };
        let who = who.trim().to_string();
        if who.is_empty() {
            return Err(at(format!("the {} name is empty", scope.as_str())));
        }
        let caps = [
            (Period::Day, "daily_usd", entry.daily_usd),
            (Period::Month, "monthly_usd", entry.monthly_usd),
        ];
        if caps.iter().all(|(_, _, cap)| cap.is_none()) {
            return Err(at("give daily_usd, monthly_usd or both".into()));
        }
        for (period, field, cap) in caps {
            let Some(usd) = cap else { continue };
            let cap = dollars(usd)
                .ok_or_else(|| at(format!("{field} must be a number of dollars, 0 or more")))?;
            budgets.push(Budget {
                scope,
                name: who.clone(),
                period,
                cap,
            });
        }
    }
    Ok(budgets)
}

/// `usd` as an exact amount; `None` if negative, not finite or absurd.
pub fn dollars(usd: f64) -> Option<Usd> {
    (usd.is_finite() && (0.0..=1e9).contains(&usd))
        .then(|| Usd::from_nanos((usd * 1e9).round() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_one_cap_per_period() {
        let text = r#"
            [[budget]]
            queue = "sprites"
            daily_usd = 5
            [[budget]]
            account = " org-1/proj-1 "
            daily_usd = 0.25
            monthly_usd = 200.0
        "#;
        let budgets = parse(text, "GENQ_BUDGETS", &[]).expect("valid");
        let caps: Vec<_> = budgets
            .iter()
            .map(|b| (b.scope, b.name.as_str(), b.period, b.cap.nanos()))
            .collect();
        assert_eq!(
            caps,
            [
                (Scope::Queue, "sprites", Period::Day, 5_000_000_000),
                (Scope::Account, "org-1/proj-1", Period::Day, 250_000_000),
                (
                    Scope::Account,
                    "org-1/proj-1",
                    Period::Month,
                    200_000_000_000
                ),
            ]
        );
        assert_eq!(parse("", "f", &[]).expect("empty is fine"), []);
        // A keys file may carry budgets beside its keys.
        let keys_file = "[[keys]]\nname = \"a\"\n[[budget]]\nqueue = \"q\"\nmonthly_usd = 1\n";
        assert_eq!(
            parse(keys_file, "GENQ_KEYS_FILE", &["keys"])
                .expect("valid")
                .len(),
            1
        );
    }

    #[test]
    fn a_bad_entry_says_what_to_fix() {
        let cases = [
            (
                "[[budgets]]\nqueue = \"q\"",
                "unknown table \"budgets\"; budgets are [[budget]] entries",
            ),
            (
                "[[budget]]\nqueue = \"q\"",
                "budget 1: give daily_usd, monthly_usd or both",
            ),
            (
                "[[budget]]\ndaily_usd = 1",
                "budget 1: give exactly one of queue or account",
            ),
            (
                "[[budget]]\nqueue = \"q\"\naccount = \"a\"\ndaily_usd = 1",
                "give exactly one of queue or account",
            ),
            (
                "[[budget]]\nqueue = \" \"\ndaily_usd = 1",
                "budget 1: the queue name is empty",
            ),
            (
                "[[budget]]\nqueue = \"q\"\ndaily_usd = -1",
                "daily_usd must be a number of dollars, 0 or more",
            ),
            (
                "[[budget]]\nqueue = \"q\"\nweekly_usd = 1",
                "unknown field `weekly_usd`",
            ),
            ("[[budget]]\nqueue = \"q\"\ndaily_usd = \"5\"", "[[budget]]"),
            ("budget = 3", "[[budget]]"),
        ];
        for (text, expected) in cases {
            let err = parse(text, "budgets.toml", &[]).expect_err(text);
            assert!(err.0.starts_with("budgets.toml: "), "{err}");
            assert!(err.0.contains(expected), "{text}: {err}");
        }
    }
}
