//! The price table: per model, rates per million tokens (to price an
//! answer's `usage`) and prices per image by quality and size (for an answer
//! without one). genq ships `prices/openai-images.toml`, with its source and
//! date; `GENQ_PRICES` names a file in the same format whose models replace
//! or add to the shipped ones.

use serde::Deserialize;
use std::collections::BTreeMap;

use super::{Cost, CostSource, Tokens, Usd};

/// The table genq ships.
pub const SHIPPED: &str = include_str!("../../prices/openai-images.toml");

/// The size a per-image price is scaled from, for sizes the table lacks.
const REFERENCE_SIZE: &str = "1024x1024";
const REFERENCE_PIXELS: u64 = 1024 * 1024;

/// A price file that cannot be used, saying what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PriceError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    source: String,
    as_of: String,
    #[serde(default)]
    models: BTreeMap<String, FileModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    #[serde(default)]
    aliases: Vec<String>,
    text_input_per_1m: Option<f64>,
    image_input_per_1m: Option<f64>,
    image_output_per_1m: Option<f64>,
    #[serde(default)]
    per_image: BTreeMap<String, BTreeMap<String, f64>>,
}

/// One model's prices, in nano-dollars.
#[derive(Debug, Clone, PartialEq)]
struct ModelPrices {
    /// Per token: text input, image input, image output.
    text_input: Option<i64>,
    image_input: Option<i64>,
    image_output: Option<i64>,
    /// Per image, by quality, then size.
    per_image: BTreeMap<String, BTreeMap<String, i64>>,
}

/// What an answer says about what it billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered<'a> {
    /// Its `usage`, if it had one.
    pub tokens: Option<Tokens>,
    /// The quality and size it says it made (else the job's params).
    pub quality: Option<&'a str>,
    pub size: Option<&'a str>,
    /// Images it returned.
    pub images: u32,
}

/// Prices per model, and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    models: BTreeMap<String, ModelPrices>,
    /// `source (as of date)` of the shipped table, then of the override.
    sources: Vec<String>,
}

impl PriceTable {
    /// The table genq ships.
    pub fn shipped() -> Self {
        Self::parse(SHIPPED, "the shipped price table").expect("the shipped price table is valid")
    }

    /// The shipped table with `overrides` (the text of a `GENQ_PRICES`
    /// file, named `name` in errors) on top: each model it lists replaces
    /// the shipped model of that name.
    pub fn with_overrides(overrides: &str, name: &str) -> Result<Self, PriceError> {
        let mut table = Self::shipped();
        let extra = Self::parse(overrides, name)?;
        table.models.extend(extra.models);
        table.sources.extend(extra.sources);
        Ok(table)
    }

    fn parse(text: &str, name: &str) -> Result<Self, PriceError> {
        let file: PriceFile =
            toml::from_str(text).map_err(|e| PriceError(format!("{name}: {e}")))?;
        let mut models = BTreeMap::new();
        for (model, prices) in file.models {
            let parsed = model_prices(&prices)
                .map_err(|e| PriceError(format!("{name}: model {model}: {e}")))?;
            for alias in &prices.aliases {
                models.insert(alias.clone(), parsed.clone());
            }
            models.insert(model, parsed);
        }
        Ok(PriceTable {
            models,
            sources: vec![format!(
                "{} (as of {})",
                file.source.trim(),
                file.as_of.trim()
            )],
        })
    }

    /// Where the prices came from, for logs and `genq keys list`.
    pub fn describe(&self) -> String {
        self.sources.join(", overridden by ")
    }

    /// Whether `model` has a price.
    pub fn prices(&self, model: &str) -> bool {
        self.models.contains_key(model)
    }

    /// What a call to `model` that `answer` describes cost: its usage priced
    /// per token when it has one and the model has rates, else the price per
    /// image; unpriced when the model has neither.
    pub fn cost(&self, model: &str, answer: &Answered<'_>) -> Cost {
        let priced = self.models.get(model).and_then(|prices| {
            let by_usage = answer
                .tokens
                .and_then(|t| prices.usage_cost(t))
                .map(|usd| (usd, CostSource::Usage));
            by_usage.or_else(|| {
                prices.image_cost(answer.quality, answer.size).map(|each| {
                    (
                        each.saturating_mul(i64::from(answer.images)),
                        CostSource::Table,
                    )
                })
            })
        });
        let (usd, source) = match priced {
            Some((nanos, source)) => (Some(Usd::from_nanos(nanos)), source),
            None => (None, CostSource::Unpriced),
        };
        Cost {
            model: model.to_string(),
            usd,
            source,
            tokens: answer.tokens,
        }
    }
}

impl ModelPrices {
    /// Tokens times rates; `None` if a kind of token it has has no rate.
    fn usage_cost(&self, t: Tokens) -> Option<i64> {
        let part = |tokens: u32, rate: Option<i64>| match (tokens, rate) {
            (0, _) => Some(0),
            (n, Some(rate)) => Some(i64::from(n).saturating_mul(rate)),
            (_, None) => None,
        };
        Some(
            part(t.text_input, self.text_input)?
                .saturating_add(part(t.image_input, self.image_input)?)
                .saturating_add(part(t.output, self.image_output)?),
        )
    }

    /// One image of `quality` and `size`: the listed price; a size not
    /// listed in proportion to its pixels; `auto`, unreadable or unlisted
    /// qualities and sizes at the dearest listed price.
    fn image_cost(&self, quality: Option<&str>, size: Option<&str>) -> Option<i64> {
        let dearest = |row: &BTreeMap<String, i64>| row.values().copied().max().unwrap_or(0);
        let row = quality
            .and_then(|q| self.per_image.get(q))
            .or_else(|| self.per_image.values().max_by_key(|row| dearest(row)))?;
        let size = size.unwrap_or("auto");
        if let Some(&price) = row.get(size) {
            return Some(price);
        }
        let scaled = pixels(size)
            .zip(row.get(REFERENCE_SIZE))
            .map(|(px, &reference)| {
                let nanos =
                    u128::from(px) * reference.max(0) as u128 / u128::from(REFERENCE_PIXELS);
                i64::try_from(nanos).unwrap_or(i64::MAX)
            });
        Some(scaled.unwrap_or_else(|| dearest(row)))
    }
}

fn model_prices(file: &FileModel) -> Result<ModelPrices, String> {
    let per_token = |what: &str, per_1m: Option<f64>| {
        per_1m
            .map(|usd| {
                nanos(usd, 1e3).ok_or(format!("{what} must be a price of 0 or more dollars"))
            })
            .transpose()
    };
    let mut per_image = BTreeMap::new();
    for (quality, sizes) in &file.per_image {
        let mut row = BTreeMap::new();
        for (size, &usd) in sizes {
            if pixels(size).is_none() {
                return Err(format!(
                    "per_image.{quality}: {size:?} is not a size; write WIDTHxHEIGHT, like \"1024x1024\""
                ));
            }
            let price = nanos(usd, 1e9).ok_or(format!(
                "per_image.{quality}.{size} must be a price of 0 or more dollars"
            ))?;
            row.insert(size.clone(), price);
        }
        per_image.insert(quality.clone(), row);
    }
    let prices = ModelPrices {
        text_input: per_token("text_input_per_1m", file.text_input_per_1m)?,
        image_input: per_token("image_input_per_1m", file.image_input_per_1m)?,
        image_output: per_token("image_output_per_1m", file.image_output_per_1m)?,
        per_image,
    };
    if prices.image_output.is_none() && prices.per_image.is_empty() {
        return Err("give image_output_per_1m or a per_image table".into());
    }
    Ok(prices)
}

/// `usd` dollars times `scale`, as whole nano-dollars; `None` if negative,
/// not finite or absurd (over a million dollars).
fn nanos(usd: f64, scale: f64) -> Option<i64> {
    (usd.is_finite() && (0.0..=1e6).contains(&usd)).then(|| (usd * scale).round() as i64)
}

/// The pixels of a `WIDTHxHEIGHT` size.
fn pixels(size: &str) -> Option<u64> {
    let (w, h) = size.split_once('x')?;
    let side = |s: &str| {
        (!s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
            .filter(|&n| n > 0)
    };
    Some(side(w)? * side(h)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(
        tokens: Option<(u32, u32, u32)>,
        quality: &str,
        size: &str,
        images: u32,
    ) -> Answered<'static> {
        let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
        Answered {
            tokens: tokens.map(|(text_input, image_input, output)| Tokens {
                text_input,
                image_input,
                output,
            }),
            quality: (!quality.is_empty()).then(|| leak(quality)),
            size: (!size.is_empty()).then(|| leak(size)),
            images,
        }
    }

    #[test]
    fn the_shipped_table_prices_usage_and_images() {
        let table = PriceTable::shipped();
        assert!(
            table.describe().contains("developers.openai.com"),
            "{}",
            table.describe()
        );
        #[rustfmt::skip]
        let cases = [
            // model, answer, nano-dollars, source
            // gpt-image-2: $5 text, $8 image in, $30 out per 1M tokens
            ("gpt-image-2", answer(Some((10, 0, 1056)), "medium", "1024x1024", 1), Some(10 * 5_000 + 1056 * 30_000), CostSource::Usage),
            ("gpt-image-2-2026-04-21", answer(Some((5, 646, 272)), "low", "1024x1024", 1), Some(5 * 5_000 + 646 * 8_000 + 272 * 30_000), CostSource::Usage),
            // gpt-image-1-mini: $2.50 per 1M image input tokens is 2,500 nano-dollars each
            ("gpt-image-1-mini", answer(Some((0, 3, 0)), "low", "1024x1024", 1), Some(7_500), CostSource::Usage),
            // no usage: the price per image, times the images
            ("gpt-image-2", answer(None, "high", "1024x1024", 2), Some(2 * 211_000_000), CostSource::Table),
            ("gpt-image-1.5", answer(None, "low", "1536x1024", 1), Some(13_000_000), CostSource::Table),
            // a size not listed: in proportion to 1024x1024's pixels (four times as many)
            ("gpt-image-2", answer(None, "medium", "2048x2048", 1), Some(4 * 53_000_000), CostSource::Table),
            // auto quality and size: the dearest listed
            ("gpt-image-2", answer(None, "auto", "auto", 1), Some(211_000_000), CostSource::Table),
            ("gpt-image-2", answer(None, "", "", 1), Some(211_000_000), CostSource::Table),
            // models without a price
            ("gpt-image-2.5-flare", answer(Some((5, 0, 272)), "low", "1024x1024", 1), None, CostSource::Unpriced),
            ("my-local-model", answer(None, "low", "1024x1024", 1), None, CostSource::Unpriced),
        ];
        for (model, answer, nanos, source) in cases {
            let cost = table.cost(model, &answer);
            assert_eq!(
                (cost.usd.map(Usd::nanos), cost.source),
                (nanos, source),
                "{model} {answer:?}"
            );
            assert_eq!((cost.model.as_str(), cost.tokens), (model, answer.tokens));
        }
    }

    #[test]
    fn overrides_replace_and_add_models() {
        let table = PriceTable::with_overrides(
            r#"
            source = "our contract"
            as_of = "2026-12-01"
            [models.gpt-image-2]
            image_output_per_1m = 20.0
            [models."gpt-image-2.5-flare"]
            per_image.low = { "1024x1024" = 0.01 }
            "#,
            "GENQ_PRICES",
        )
        .expect("valid");
        assert_eq!(
            table.describe(),
            "https://developers.openai.com/api/docs/pricing (as of 2026-12-05), overridden by our contract (as of 2026-12-01)"
        );
        let cost = table.cost(
            "gpt-image-2",
            &answer(Some((0, 0, 100)), "low", "1024x1024", 1),
        );
        assert_eq!(cost.usd, Some(Usd::from_nanos(100 * 20_000)));
        // the override has no input rates: usage with text input falls back to the image price
        let cost = table.cost(
            "gpt-image-2",
            &answer(Some((5, 0, 100)), "low", "1024x1024", 1),
        );
        assert_eq!(cost.source, CostSource::Unpriced);
        let cost = table.cost("gpt-image-2.5-flare", &answer(None, "low", "1024x1024", 3));
        assert_eq!(
            (cost.usd, cost.source),
            (Some(Usd::from_nanos(30_000_000)), CostSource::Table)
        );
        // the alias keeps its shipped price
        assert!(table.prices("gpt-image-2-2026-04-21"));
    }

    #[test]
    fn a_bad_price_file_says_what_to_fix() {
        let cases = [
            ("source = \"x\"", "missing field `as_of`"),
            (
                "source = \"x\"\nas_of = \"y\"\n[models.m]\nimage_output_per_1m = -1.0",
                "model m: image_output_per_1m must be a price of 0 or more dollars",
            ),
            (
                "source = \"x\"\nas_of = \"y\"\n[models.m]\nper_image.low = { \"big\" = 0.1 }",
                "model m: per_image.low: \"big\" is not a size; write WIDTHxHEIGHT",
            ),
            (
                "source = \"x\"\nas_of = \"y\"\n[models.m]\naliases = []",
                "model m: give image_output_per_1m or a per_image table",
            ),
            (
                "source = \"x\"\nas_of = \"y\"\ncurrency = \"EUR\"",
                "unknown field `currency`",
            ),
        ];
        for (text, expected) in cases {
            let err = PriceTable::with_overrides(text, "prices.toml").expect_err(text);
            assert!(err.0.starts_with("prices.toml"), "{err}");
            assert!(err.0.contains(expected), "{text}: {err}");
        }
    }
}
