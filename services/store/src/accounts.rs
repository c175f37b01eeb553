//! Account rows: created when first seen, locked in account-id order, their state read.

use std::collections::{HashMap, HashSet};

use collections_core::AccountState;
use sqlx::{Postgres, Transaction};

use crate::StoreError;

/// Creates missing account rows and locks all of them, in account-id order (no deadlocks
/// between batches). Returns each account's state (`None` for a new account).
pub(crate) async fn lock_accounts(
    tx: &mut Transaction<'_, Postgres>,
    accounts: &[&str],
) -> Result<HashMap<String, Option<AccountState>>, StoreError> {
    if accounts.is_empty() {
        return Ok(HashMap::new());
    }
    // Existing accounts (the common case) are locked in one round trip.
    let mut rows = select_for_update(tx, accounts).await?;
    if rows.len() < accounts.len() {
        let found: HashSet<String> = rows.iter().map(|r| r.0.clone()).collect();
        let missing: Vec<&str> = accounts
            .iter()
            .copied()
            .filter(|a| !found.contains(*a))
            .collect();
        let inserted: Vec<String> = sqlx::query_scalar!(
            "INSERT INTO accounts (account_id) SELECT unnest($1::text[])
             ON CONFLICT DO NOTHING RETURNING account_id",
            &missing as &[&str],
        )
        .fetch_all(&mut **tx)
        .await?;
        // Rows we inserted are ours (locked, no state yet); rows another transaction
        // created meanwhile are locked now.
        let inserted: HashSet<String> = inserted.into_iter().collect();
        let raced: Vec<&str> = missing
            .into_iter()
            .filter(|a| !inserted.contains(*a))
            .collect();
        if !raced.is_empty() {
            rows.extend(select_for_update(tx, &raced).await?);
        }
    }
    let mut out = HashMap::with_capacity(rows.len());
    for (id, state) in rows {
        let state = parse_state(&id, state.as_deref())?;
        out.insert(id, state);
    }
    Ok(out)
}

/// Locks the accounts' rows, in account-id order; returns each id with its state
/// document as text.
async fn select_for_update(
    tx: &mut Transaction<'_, Postgres>,
    accounts: &[&str],
) -> Result<Vec<(String, Option<String>)>, StoreError> {
    Ok(sqlx::query!(
        r#"SELECT account_id, state::text AS "state?" FROM accounts WHERE account_id = ANY($1)
         ORDER BY account_id FOR UPDATE"#,
        accounts as &[&str],
    )
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|r| (r.account_id, r.state))
    .collect())
}

/// An account's stored state document, read back as the core's [`AccountState`].
///
/// # Errors
/// [`StoreError::State`] when the document does not parse, or names a zone the tz
/// database no longer resolves (the core would otherwise plan in UTC, outside the
/// customer's hours). The detail names the account, never the document's content.
pub(crate) fn parse_state(
    id: &str,
    state: Option<&str>,
) -> Result<Option<AccountState>, StoreError> {
    let Some(text) = state else {
        return Ok(None);
    };
    let state = serde_json::from_str::<AccountState>(text).map_err(|e| {
        StoreError::state(format!("account {id}: stored state does not parse: {e}"))
    })?;
    if jiff::tz::TimeZone::get(&state.timezone).is_err() {
        return Err(StoreError::state(format!(
            "account {id}: stored state names a time zone the tz database does not resolve"
        )));
    }
    Ok(Some(state))
}
