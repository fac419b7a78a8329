//! What a provider call cost: an amount in exact nano-dollars ([`Usd`]),
//! the tokens it was billed for ([`Tokens`]), and where the figure came from
//! ([`CostSource`]). The prices live in [`prices::PriceTable`]; the spend
//! caps that read these costs are in [`crate::budget`].

pub mod prices;

use serde::{Deserialize, Serialize};

pub use prices::{PriceError, PriceTable};

/// An amount of US dollars, exact to the nano-dollar: per-token prices such
/// as $2.50 per million tokens are whole nano-dollars, so sums never round.
///
/// JSON carries it as a number of dollars (`0.00817`); SQL as `numeric`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, sqlx::Type)]
#[sqlx(transparent)]
pub struct Usd(i64);

impl Serialize for Usd {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.as_f64())
    }
}

impl Usd {
    pub const ZERO: Usd = Usd(0);

    pub const fn from_nanos(nanos: i64) -> Self {
        Usd(nanos)
    }

    pub const fn nanos(self) -> i64 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    pub fn saturating_add(self, other: Usd) -> Usd {
        Usd(self.0.saturating_add(other.0))
    }
}

impl std::fmt::Display for Usd {
    /// `$0.053`, `$1.50`, `$0.000025`: at least two decimals, at most nine,
    /// no trailing zeros beyond two.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (whole, frac) = (abs / 1_000_000_000, abs % 1_000_000_000);
        let digits = format!("{frac:09}");
        let kept = digits.trim_end_matches('0');
        let kept = if kept.len() < 2 { &digits[..2] } else { kept };
        write!(f, "{sign}${whole}.{kept}")
    }
}

/// The tokens an answer's `usage` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub text_input: u32,
    pub image_input: u32,
    pub output: u32,
}

impl Tokens {
    pub fn input(self) -> u32 {
        self.text_input.saturating_add(self.image_input)
    }
}

/// Where a call's cost came from, as `genq.attempts.cost_source` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CostSource {
    /// The answer's `usage`, priced per token.
    Usage,
    /// The price table's price per image (the answer had no `usage`).
    Table,
    /// Billed, but the model has no price: the cost is unknown.
    Unpriced,
}

impl CostSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CostSource::Usage => "usage",
            CostSource::Table => "table",
            CostSource::Unpriced => "unpriced",
        }
    }
}

impl std::str::FromStr for CostSource {
    type Err = PriceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "usage" => Ok(CostSource::Usage),
            "table" => Ok(CostSource::Table),
            "unpriced" => Ok(CostSource::Unpriced),
            _ => Err(PriceError(format!("unknown cost source {s:?}"))),
        }
    }
}

crate::store::text_enum!(CostSource);

/// What one billed call cost: the model it ran on, the amount (`None` when
/// unpriced), its source and the tokens, if reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    pub model: String,
    pub usd: Option<Usd>,
    pub source: CostSource,
    pub tokens: Option<Tokens>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_read_as_people_write_them() {
        let cases = [
            (0, "$0.00"),
            (6_000_000, "$0.006"),
            (53_000_000, "$0.053"),
            (1_500_000_000, "$1.50"),
            (25_000, "$0.000025"),
            (2_500, "$0.0000025"),
            (12_345_678_901, "$12.345678901"),
            (-40_000_000, "-$0.04"),
        ];
        for (nanos, text) in cases {
            assert_eq!(Usd::from_nanos(nanos).to_string(), text, "{nanos}");
        }
    }
}
