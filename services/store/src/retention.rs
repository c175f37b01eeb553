//! Retention: deleting history past its horizon, one bounded batch per statement.
//!
//! Each function deletes at most `limit` rows older than `before` in one short
//! transaction of its own, oldest first, and returns how many it deleted; the caller
//! repeats with a pause (`collections_runtime::retention`). Rows are chosen `FOR UPDATE
//! SKIP LOCKED`, so several pruners at once share the work instead of waiting on each
//! other, and deleted by their physical address (`ctid`) while still locked by the same
//! statement.
//!
//! What may go: contact attempts older than the ledger the rules read, outbox rows
//! already published (no `outbox_pending` row), inbox ids
//! applied before the dedupe horizon, tasks emitted or cancelled before the horizon,
//! journal entries decided before it. Never an unpublished outbox row, never an open task
//! (scheduled or claimed), whatever its age. No rule reads closed tasks, published outbox
//! rows or the journal back; the inbox is read only to spot a duplicate delivery, which is
//! why its horizon must outlast any redelivery or dead-letter replay.

use jiff::Timestamp;
use jiff_sqlx::ToSqlx;

use crate::{Store, StoreError};

impl Store {
    /// Deletes up to `limit` inbox ids applied before `before`. A duplicate of a deleted id
    /// arriving afterwards would be applied again: `before` must lie beyond any
    /// redelivery or dead-letter replay (deploy/README.md, "Retention").
    ///
    /// # Errors
    /// Database errors (transient).
    pub async fn prune_inbox(&self, before: Timestamp, limit: i64) -> Result<u64, StoreError> {
        let done = sqlx::query!(
            "DELETE FROM inbox WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM inbox WHERE applied_at < $1
                 ORDER BY applied_at LIMIT $2 FOR UPDATE SKIP LOCKED))",
            before.to_sqlx() as _,
            limit,
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes up to `limit` tasks emitted or cancelled before `before` (index
    /// `tasks_closed`). Scheduled and claimed tasks are never touched.
    ///
    /// # Errors
    /// Database errors (transient).
    pub async fn prune_tasks(&self, before: Timestamp, limit: i64) -> Result<u64, StoreError> {
        let done = sqlx::query!(
            "DELETE FROM tasks WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM tasks
                 WHERE status IN ('emitted', 'cancelled')
                   AND coalesce(emitted_at, cancelled_at) < $1
                 ORDER BY coalesce(emitted_at, cancelled_at) LIMIT $2
                 FOR UPDATE SKIP LOCKED))",
            before.to_sqlx() as _,
            limit,
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes up to `limit` contact attempts that started before `before` (index
    /// `contact_attempts_started`). The rules read a debtor's last
    /// [`collections_core::contact::LEDGER_DAYS`] days: `before` must lie further back.
    ///
    /// # Errors
    /// Database errors (transient).
    pub async fn prune_contacts(&self, before: Timestamp, limit: i64) -> Result<u64, StoreError> {
        let done = sqlx::query!(
            "DELETE FROM contact_attempts WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM contact_attempts WHERE started_at < $1
                 ORDER BY started_at LIMIT $2 FOR UPDATE SKIP LOCKED))",
            before.to_sqlx() as _,
            limit,
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The first outbox id at or past `before`: the end of a pruning pass over the outbox
    /// (`i64::MAX` when every row is older). Reads the old rows once, in id order.
    ///
    /// # Errors
    /// Database errors (transient).
    pub async fn outbox_horizon(&self, before: Timestamp) -> Result<i64, StoreError> {
        let id = sqlx::query_scalar!(
            "SELECT min(id) FROM outbox WHERE created_at >= $1",
            before.to_sqlx() as _,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(id.unwrap_or(i64::MAX))
    }

    /// Deletes up to `limit` published outbox rows created before `before`, with ids
    /// in `(after, upto)`, walking the primary key from `after`; returns how many it
    /// deleted and the highest id it looked at (the next call's `after`), `None` when it
    /// found nothing more. An unpublished row (one with an `outbox_pending` row) stays,
    /// whatever its age.
    ///
    /// # Errors
    /// Database errors (transient).
    pub async fn prune_outbox(
        &self,
        before: Timestamp,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<(u64, Option<i64>), StoreError> {
        let ids = sqlx::query_scalar!(
            "DELETE FROM outbox WHERE ctid = ANY(ARRAY(
                 SELECT o.ctid FROM outbox o
                 WHERE o.id > $2 AND o.id < $3 AND o.created_at < $1
                   AND NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.id = o.id)
                 ORDER BY o.id LIMIT $4 FOR UPDATE OF o SKIP LOCKED))
             RETURNING id",
            before.to_sqlx() as _,
            after,
            upto,
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok((ids.len() as u64, ids.into_iter().max()))
    }

    /// The first journal id at or past `before` ([`Store::outbox_horizon`] for the
    /// journal).
    ///
    /// # Errors
    /// Database errors (transient).
    pub async fn journal_horizon(&self, before: Timestamp) -> Result<i64, StoreError> {
        let id = sqlx::query_scalar!(
            "SELECT min(id) FROM journal WHERE decided_at >= $1",
            before.to_sqlx() as _,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(id.unwrap_or(i64::MAX))
    }

    /// Deletes up to `limit` journal entries decided before `before`, with ids in
    /// `(after, upto)` ([`Store::prune_outbox`] for the journal).
    ///
    /// # Errors
    /// Database errors (transient).
    pub async fn prune_journal(
        &self,
        before: Timestamp,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<(u64, Option<i64>), StoreError> {
        let ids = sqlx::query_scalar!(
            "DELETE FROM journal WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM journal
                 WHERE id > $2 AND id < $3 AND decided_at < $1
                 ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED))
             RETURNING id",
            before.to_sqlx() as _,
            after,
            upto,
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok((ids.len() as u64, ids.into_iter().max()))
    }
}
