//! Spend caps from the command line: the worker's `GENQ_BUDGETS` flag (and
//! `[[budget]]` entries in the keys file), written to `genq.budgets` at
//! start; and `genq budgets list|set|remove`.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use sqlx::PgPool;
use std::path::{Path, PathBuf};

use genq::budget::{self, Budget, Period, Scope};
use genq::store::budgets::{self, BudgetStatus};

use super::db::{DbArgs, connect_migrated};

#[derive(Args, Clone)]
pub struct BudgetArgs {
    /// A TOML file of [[budget]] entries (queue or account, daily_usd and/or
    /// monthly_usd), written to genq.budgets when the worker starts.
    #[arg(long, env = "GENQ_BUDGETS")]
    pub budgets: Option<PathBuf>,
}

impl BudgetArgs {
    /// Writes the caps of `--budgets` and of the keys file's `[[budget]]`
    /// entries (caps set otherwise are kept).
    pub async fn apply(&self, pool: &PgPool) -> Result<()> {
        let mut caps = Vec::new();
        if let Some(path) = &self.budgets {
            caps.extend(read(path, "GENQ_BUDGETS", &[])?);
        }
        if let Some(path) = std::env::var_os("GENQ_KEYS_FILE").filter(|p| !p.is_empty()) {
            caps.extend(read(Path::new(&path), "GENQ_KEYS_FILE", &["keys"])?);
        }
        if caps.is_empty() {
            return Ok(());
        }
        budgets::set(pool, &caps)
            .await
            .context("writing the budgets")?;
        for b in &caps {
            tracing::info!(scope = %b.scope, name = %b.name, period = %b.period, cap_usd = %b.cap, "budget set");
        }
        Ok(())
    }
}

fn read(path: &Path, what: &str, others: &[&str]) -> Result<Vec<Budget>> {
    let name = format!("{what} file {}", path.display());
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
    Ok(budget::parse(&text, &name, others)?)
}

#[derive(Subcommand)]
pub enum BudgetsAction {
    /// Each budget: its cap, what its window spent, whether work waits for it.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Sets (or raises, or lowers) a cap; work it stopped resumes at once if it now has room.
    Set {
        #[command(flatten)]
        target: Target,
        /// The cap per UTC day, in US dollars.
        #[arg(long)]
        daily: Option<f64>,
        /// The cap per calendar month (UTC), in US dollars.
        #[arg(long)]
        monthly: Option<f64>,
    },
    /// Removes a cap.
    Remove {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_parser = ["day", "month"])]
        period: String,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// The queue the cap is for.
    #[arg(long)]
    queue: Option<String>,
    /// The account (or key without one) the cap is for.
    #[arg(long)]
    account: Option<String>,
}

impl Target {
    fn scope_and_name(&self) -> (Scope, String) {
        match (&self.queue, &self.account) {
            (Some(q), _) => (Scope::Queue, q.trim().to_string()),
            (_, Some(a)) => (Scope::Account, a.trim().to_string()),
            (None, None) => unreachable!("clap requires one"),
        }
    }
}

/// Runs one `genq budgets` action.
pub async fn run(db: &DbArgs, action: BudgetsAction) -> Result<()> {
    let pool = connect_migrated(&db.database_url, 2).await?;
    match action {
        BudgetsAction::List { json } => {
            let rows = budgets::status(&pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", table(&rows));
            }
            Ok(())
        }
        BudgetsAction::Set {
            target,
            daily,
            monthly,
        } => {
            let (scope, name) = target.scope_and_name();
            if name.is_empty() {
                bail!("the {scope} name is empty");
            }
            let mut caps = Vec::new();
            for (period, flag, usd) in [
                (Period::Day, "--daily", daily),
                (Period::Month, "--monthly", monthly),
            ] {
                let Some(usd) = usd else { continue };
                let cap = budget::dollars(usd)
                    .with_context(|| format!("{flag} must be a number of dollars, 0 or more"))?;
                caps.push(Budget {
                    scope,
                    name: name.clone(),
                    period,
                    cap,
                });
            }
            if caps.is_empty() {
                bail!("give --daily, --monthly or both");
            }
            budgets::set(&pool, &caps).await?;
            for b in caps {
                eprintln!("{} {}: {} cap {}", b.scope, b.name, b.period, b.cap);
            }
            Ok(())
        }
        BudgetsAction::Remove { target, period } => {
            let (scope, name) = target.scope_and_name();
            let period: Period = period.parse()?;
            if !budgets::remove(&pool, scope, &name, period).await? {
                bail!("no {period} budget for {scope} {name:?}; `genq budgets list` shows them");
            }
            eprintln!("{scope} {name}: {period} cap removed");
            Ok(())
        }
    }
}

/// Renders budgets as aligned columns.
pub fn table(rows: &[BudgetStatus]) -> String {
    let headers = [
        "SCOPE",
        "NAME",
        "PERIOD",
        "CAP",
        "SPENT",
        "IN FLIGHT",
        "RESETS (UTC)",
        "STATE",
    ];
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|b| {
            vec![
                b.scope.to_string(),
                b.name.clone(),
                b.period.to_string(),
                b.cap_usd.to_string(),
                b.spent_usd.to_string(),
                b.in_flight_usd.to_string(),
                b.resets_at.format("%Y-%m-%d %H:%M").to_string(),
                if b.exhausted {
                    "used up: work waits"
                } else {
                    "ok"
                }
                .to_string(),
            ]
        })
        .collect();
    if lines.is_empty() {
        return "no budgets; set one with `genq budgets set --queue NAME --daily USD`\n".into();
    }
    super::table::render(&headers, &lines)
}
