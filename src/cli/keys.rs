//! `genq keys list|enable|disable|reset`: each key's state, cooldown,
//! counters and limits, by id only. Secrets are never shown.

use anyhow::{Result, bail};
use clap::Subcommand;
use sqlx::PgPool;

use genq::store::keys::{self, KeyStatus};

use super::db::{DbArgs, connect_migrated};

#[derive(Subcommand)]
pub enum KeysAction {
    /// Each key's state, cooldown remaining, counters and limits.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Use a disabled or cooling key again now.
    Enable { id: String },
    /// Stop using a key until it is enabled.
    Disable {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Enable a key and forget its counters and learned limits.
    Reset { id: String },
}

/// Runs one `genq keys` action.
pub async fn run(db: &DbArgs, action: KeysAction) -> Result<()> {
    let pool = connect_migrated(&db.database_url, 2).await?;
    match action {
        KeysAction::List { json } => list(&pool, json).await,
        KeysAction::Enable { id } => change(&pool, Change::Enable, &id).await,
        KeysAction::Disable { id, reason } => {
            let reason = reason.unwrap_or_else(|| "disabled by an operator".into());
            change(&pool, Change::Disable { reason }, &id).await
        }
        KeysAction::Reset { id } => change(&pool, Change::Reset, &id).await,
    }
}

/// Prints every key as a table, or as JSON.
pub async fn list(pool: &PgPool, json: bool) -> Result<()> {
    let rows = keys::list(pool).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    print!("{}", table(&rows));
    Ok(())
}

/// Renders keys as aligned columns.
pub fn table(rows: &[KeyStatus]) -> String {
    let headers = [
        "KEY",
        "ACCOUNT",
        "STATE",
        "COOLDOWN",
        "OK",
        "429",
        "ERRORS",
        "COST",
        "LIMITS",
        "LAST ERROR / REASON",
    ];
    let mut lines = Vec::with_capacity(rows.len());
    for k in rows {
        lines.push(vec![
            k.id.clone(),
            k.account_label().unwrap_or_else(|| "-".into()),
            k.state.to_string(),
            k.cooldown_remaining_secs
                .map_or("-".into(), |s| format!("{s:.1}s")),
            k.ok_count.to_string(),
            k.rate_limited_count.to_string(),
            k.error_count.to_string(),
            k.cost_usd.to_string(),
            if k.limits.is_empty() && k.blocked_models.is_empty() {
                "-".into()
            } else {
                let blocked = k.blocked_models.iter().map(|b| format!("blocked {b}"));
                k.limits
                    .iter()
                    .cloned()
                    .chain(blocked)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            super::table::clip(
                &k.disabled_reason
                    .clone()
                    .or_else(|| k.last_error.clone())
                    .unwrap_or_default(),
                100,
            ),
        ]);
    }
    super::table::render(&headers, &lines)
}

/// What an operator does to a key.
enum Change {
    Enable,
    Disable { reason: String },
    Reset,
}

/// Applies `change` to key `id`.
async fn change(pool: &PgPool, change: Change, id: &str) -> Result<()> {
    let (found, done) = match &change {
        Change::Enable => (keys::enable(pool, id).await?, "enabled"),
        Change::Disable { reason } => (keys::disable(pool, id, reason).await?, "disabled"),
        Change::Reset => (keys::reset(pool, id).await?, "reset"),
    };
    if !found {
        bail!("no key with id {id:?}; `genq keys list` shows the ids");
    }
    eprintln!("key {id}: {done}");
    Ok(())
}
