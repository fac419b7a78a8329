//! The spend series `/metrics` reads from the database at scrape time:
//!
//! - `genq_cost_usd_total{queue,model}`: what billed calls cost. A counter:
//!   it is summed from `genq.spend`, whose rows outlive job retention, so it
//!   only grows. Past [`labels::MAX_QUEUE_PAIRS`] pairs the cheapest are
//!   summed into `queue="other",model="other"`.
//! - `genq_budget_cap_usd`, `genq_budget_spent_usd` and
//!   `genq_budget_exhausted` (1 while work waits for it), per
//!   `{scope,name,period}`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sqlx::PgPool;

use super::labels::{self, sanitize};
use crate::cost::Usd;
use crate::store::StoreError;
use crate::store::budgets::BudgetStatus;
use crate::store::costs::CostTotal;

/// The spend series as Prometheus text.
pub(crate) async fn render(pool: &PgPool) -> Result<String, StoreError> {
    let totals = crate::store::costs::totals(pool).await?;
    let budgets = crate::store::budgets::status(pool).await?;
    Ok(text(&totals, &budgets, labels::MAX_QUEUE_PAIRS))
}

/// A budget gauge: its name, help and value.
type BudgetSeries = (&'static str, &'static str, fn(&BudgetStatus) -> f64);

fn text(totals: &[CostTotal], budgets: &[BudgetStatus], cap: usize) -> String {
    let mut pairs: BTreeMap<(String, String), Usd> = BTreeMap::new();
    for t in totals {
        let pair = pairs
            .entry((sanitize(&t.queue), sanitize(&t.model)))
            .or_default();
        *pair = pair.saturating_add(t.cost_usd);
    }
    let shown = labels::fold_lightest(
        pairs,
        cap,
        |usd| *usd,
        |sum, usd| *sum = sum.saturating_add(*usd),
    );
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# HELP genq_cost_usd_total US dollars billed for provider calls, per queue and model\n# TYPE genq_cost_usd_total counter"
    );
    for ((queue, model), usd) in &shown {
        let _ = writeln!(
            text,
            "genq_cost_usd_total{{queue=\"{queue}\",model=\"{model}\"}} {}",
            usd.as_f64()
        );
    }
    let series: [BudgetSeries; 3] = [
        (
            "genq_budget_cap_usd",
            "Each budget's cap in US dollars",
            |b| b.cap_usd.as_f64(),
        ),
        (
            "genq_budget_spent_usd",
            "US dollars spent in each budget's current window",
            |b| b.spent_usd.as_f64(),
        ),
        (
            "genq_budget_exhausted",
            "1 while a budget is used up and the work it caps waits",
            |b| f64::from(u8::from(b.exhausted)),
        ),
    ];
    for (name, help, value) in series {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
        for b in budgets {
            let _ = writeln!(
                text,
                "{name}{{scope=\"{}\",name=\"{}\",period=\"{}\"}} {}",
                b.scope,
                sanitize(&b.name),
                b.period,
                value(b)
            );
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{Period, Scope};

    fn total(queue: &str, model: &str, key: &str, nanos: i64) -> CostTotal {
        CostTotal {
            queue: queue.into(),
            model: model.into(),
            key_id: key.into(),
            requests: 1,
            unpriced_requests: 0,
            cost_usd: Usd::from_nanos(nanos),
        }
    }

    #[test]
    fn costs_sum_over_keys_and_budgets_show_their_state() {
        let totals = [
            total("sprites", "gpt-image-2", "k1", 6_000_000),
            total("sprites", "gpt-image-2", "k2", 53_000_000),
            total("thumbs", "gpt-image-1-mini", "k1", 5_000_000),
            total("bulk", "gpt-image-2", "k1", 1_000),
        ];
        let now = chrono::Utc::now();
        let budget = BudgetStatus {
            scope: Scope::Queue,
            name: "sprites\"x".into(),
            period: Period::Day,
            cap_usd: Usd::from_nanos(50_000_000),
            spent_usd: Usd::from_nanos(59_000_000),
            in_flight_usd: Usd::ZERO,
            window_start: now,
            resets_at: now,
            resets_in_secs: 10.0,
            exhausted: true,
            reason: String::new(),
        };
        let text = text(&totals, &[budget], 2);
        for line in [
            "# TYPE genq_cost_usd_total counter",
            "genq_cost_usd_total{queue=\"sprites\",model=\"gpt-image-2\"} 0.059",
            "genq_cost_usd_total{queue=\"thumbs\",model=\"gpt-image-1-mini\"} 0.005",
            // past the cap, the cheapest pair is summed into other
            "genq_cost_usd_total{queue=\"other\",model=\"other\"} 0.000001",
            "genq_budget_cap_usd{scope=\"queue\",name=\"sprites_x\",period=\"day\"} 0.05",
            "genq_budget_spent_usd{scope=\"queue\",name=\"sprites_x\",period=\"day\"} 0.059",
            "genq_budget_exhausted{scope=\"queue\",name=\"sprites_x\",period=\"day\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
