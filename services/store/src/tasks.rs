//! Task rows: reading them back as the core's [`Task`]s.

use std::collections::{HashMap, HashSet};

use collections_core::Task;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::{ts::Ts, StoreError};

/// A claim older than this is presumed dead (its scheduler died between claim and
/// confirm): the rescuer, or a worker that needs the task, returns it to `scheduled`.
pub const CLAIM_TIMEOUT_SECS: u64 = 15;

/// Loads the accounts' tasks still waiting to fire.
pub(crate) async fn load_open_tasks(
    tx: &mut Transaction<'_, Postgres>,
    accounts: &[&str],
) -> Result<(HashMap<String, Vec<Task>>, HashSet<Uuid>), StoreError> {
    let mut out: HashMap<String, Vec<Task>> = HashMap::new();
    let mut firing = HashSet::new();
    if accounts.is_empty() {
        return Ok((out, firing));
    }
    // The predicate matches `tasks_open_by_account` exactly, so the planner always takes
    // that index; with `status = 'scheduled'` alone it may prefer the scheduler's
    // `tasks_due` index and scan every scheduled task once history piles up. Rows another
    // firing has claimed are open (a call being fired elsewhere is the account's open
    // call) and also listed apart: the completion that reads them must not cancel or
    // re-rank them, and cannot wait for them (their batch may wait for this one). The
    // scheduled rows stay scheduled: the caller holds their accounts' locks, which claims
    // respect.
    let rows = sqlx::query(
        "SELECT task_id, account_id, kind, channel, due_at, priority, tone, reason, promise_id,
                cause_event_id, attempt, policy_version, status = 'claimed' AS firing
         FROM tasks WHERE account_id = ANY($1) AND status IN ('scheduled', 'claimed')
         ORDER BY created_at, task_id",
    )
    .bind(accounts)
    .fetch_all(&mut **tx)
    .await?;
    for r in &rows {
        let t = task_from_row(r)?;
        if r.try_get::<bool, _>("firing")? {
            firing.insert(t.task_id);
        }
        out.entry(t.account_id.clone()).or_default().push(t);
    }
    Ok((out, firing))
}

/// Reads a task row.
///
/// # Errors
/// When a stored enum value is unknown (a newer binary wrote it).
pub fn task_from_row(r: &sqlx::postgres::PgRow) -> Result<Task, StoreError> {
    let bad = |e: String| StoreError::Db(sqlx::Error::Decode(e.into()));
    let due: Ts = r.get("due_at");
    Ok(Task {
        task_id: r.get("task_id"),
        account_id: r.get("account_id"),
        kind: r.get::<String, _>("kind").parse().map_err(bad)?,
        channel: r.get::<String, _>("channel").parse().map_err(bad)?,
        due_at: due.0,
        priority: u8::try_from(r.get::<i16, _>("priority")).unwrap_or(9),
        tone: r.get::<String, _>("tone").parse().map_err(bad)?,
        reason: r.get("reason"),
        promise_id: r.get("promise_id"),
        cause_event_id: r.get("cause_event_id"),
        attempt: u32::try_from(r.get::<i32, _>("attempt")).unwrap_or(1),
        policy_version: r.get("policy_version"),
    })
}
