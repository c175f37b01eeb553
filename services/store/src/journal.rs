//! The collection note: journal lines written outside the batch statement.

use collections_core::JournalEntry;
use jiff::Timestamp;
use jiff_sqlx::ToSqlx;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::StoreError;

pub(crate) async fn insert_journal(
    tx: &mut Transaction<'_, Postgres>,
    entries: &[(String, Uuid, JournalEntry)],
    version: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let accounts: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    let events: Vec<Uuid> = entries.iter().map(|e| e.1).collect();
    let kinds: Vec<&str> = entries.iter().map(|e| e.2.kind).collect();
    let details: Vec<&str> = entries.iter().map(|e| e.2.detail.as_str()).collect();
    let tasks: Vec<Option<Uuid>> = entries.iter().map(|e| e.2.task_id).collect();
    sqlx::query!(
        "INSERT INTO journal (account_id, event_id, kind, detail, task_id, policy_version, decided_at)
         SELECT a, e, k, d, t, $6, $7
         FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::uuid[])
              WITH ORDINALITY AS j(a, e, k, d, t, n)
         ORDER BY n",
        &accounts as &[&str],
        &events,
        &kinds as &[&str],
        &details as &[&str],
        &tasks as &[Option<Uuid>],
        version,
        now.to_sqlx() as _,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
