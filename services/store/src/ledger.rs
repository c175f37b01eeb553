//! The contact ledger (`contact_attempts`, migration 0011): each debtor's recent contact
//! attempts, read with the accounts that need them and written with the batch.
//!
//! The batch reads ledgers inside `collections_open_batch_contacts` (see `open`); the
//! scheduler reads them here for the accounts of the calls it fires and completes, so the
//! caps it re-checks count the debtor's conversations and the contact points' unanswered
//! attempts as they stand.

use std::collections::HashMap;

use collections_core::{
    contact::{Attempt, Ledger, LEDGER_DAYS},
    AccountState,
};
use jiff::Timestamp;
use jiff_sqlx::ToSqlx;
use sqlx::PgExecutor;

use crate::StoreError;

/// The recent attempts of the debtors named by `states` (accounts a contact attempt has
/// linked to a debtor), put into each state's `ledger`. One query, none when no account
/// has a debtor.
pub(crate) async fn load_into<'e>(
    db: impl PgExecutor<'e>,
    states: &mut HashMap<String, Option<AccountState>>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut debtors: Vec<&str> = states
        .values()
        .flatten()
        .filter_map(|s| s.debtor_id.as_deref())
        .collect();
    if debtors.is_empty() {
        return Ok(());
    }
    debtors.sort_unstable();
    debtors.dedup();
    let since = now - jiff::SignedDuration::from_hours(24 * LEDGER_DAYS);
    let rows = sqlx::query!(
        "SELECT debtor_id, attempt::text AS \"attempt!\" FROM contact_attempts
         WHERE debtor_id = ANY($1) AND started_at > $2",
        &debtors as &[&str],
        since.to_sqlx() as _,
    )
    .fetch_all(db)
    .await?;
    let mut by_debtor: HashMap<String, Vec<Attempt>> = HashMap::new();
    for r in rows {
        let a: Attempt = serde_json::from_str(&r.attempt).map_err(|e| {
            StoreError::state(format!("a contact attempt of debtor {}: {e}", r.debtor_id))
        })?;
        by_debtor.entry(r.debtor_id).or_default().push(a);
    }
    let ledgers: HashMap<String, Ledger> = by_debtor
        .into_iter()
        .map(|(d, a)| (d, Ledger::of(a)))
        .collect();
    for s in states.values_mut().flatten() {
        if let Some(l) = s.debtor_id.as_ref().and_then(|d| ledgers.get(d)) {
            s.ledger = l.clone();
        }
    }
    Ok(())
}

/// The attempts to write, one per (debtor, attempt id): a correction in the same batch
/// as the report it corrects leaves only the later one (an upsert cannot touch a row
/// twice in one statement).
pub(crate) fn dedup(attempts: &[Attempt]) -> Vec<&Attempt> {
    let mut last: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, a) in attempts.iter().enumerate() {
        last.insert((a.debtor_id.as_str(), a.attempt_id.as_str()), i);
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    keep.into_iter().map(|i| &attempts[i]).collect()
}
