//! `genq keys list|enable|disable|reset`: each key's state, cooldown,
//! counters and limits, by id only. Secrets are never shown.

use anyhow::{Result, bail};
use sqlx::PgPool;

use crate::store::keys::{self, KeyStatus};

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
        "LIMITS",
        "LAST ERROR / REASON",
    ];
    let mut lines = Vec::with_capacity(rows.len());
    for k in rows {
        lines.push(vec![
            k.id.clone(),
            match (&k.account, k.account_source.as_deref()) {
                (Some(account), Some("provider headers")) => format!("{account} (from headers)"),
                (Some(account), _) => account.clone(),
                (None, _) => "-".into(),
            },
            k.state.clone(),
            k.cooldown_remaining_secs
                .map_or("-".into(), |s| format!("{s:.1}s")),
            k.ok_count.to_string(),
            k.rate_limited_count.to_string(),
            k.error_count.to_string(),
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

/// Applies `action` (enable, disable, reset) to key `id`.
pub async fn change(pool: &PgPool, action: &str, id: &str, reason: Option<&str>) -> Result<()> {
    let found = match action {
        "enable" => keys::enable(pool, id).await?,
        "disable" => keys::disable(pool, id, reason.unwrap_or("disabled by an operator")).await?,
        "reset" => keys::reset(pool, id).await?,
        other => bail!("unknown action {other}"),
    };
    if !found {
        bail!("no key with id {id:?}; `genq keys list` shows the ids");
    }
    eprintln!("key {id}: {action}d");
    Ok(())
}
