//! Task rows: their statuses, and reading them back as the core's [`Task`]s.

use std::{
    collections::{HashMap, HashSet},
    str::FromStr,
};

use collections_core::Task;
use jiff_sqlx::Timestamp as Ts;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::StoreError;

/// A claim runs out this long after it was taken (unless its scheduler renews it); then
/// its scheduler is presumed dead (between claim and confirm) and the rescuer, or a
/// worker that needs the task, returns it to `scheduled`. The default of the scheduler's
/// `CLAIM_TIMEOUT_SECS`: longer than the broker's confirm timeout (30 s) plus a margin
/// for the completion, so a scheduler that waits on a slow broker keeps its claim.
/// Claims record when they run out (`claim_until`); this also judges claims taken by
/// binaries older than migration 0007, which do not.
pub const CLAIM_TIMEOUT_SECS: u64 = 40;

/// Where a task is in its life: the values of `tasks.status` (migration 0001's check),
/// and the one status `collections_open_batch` reports but never stores.
///
/// Rust code goes through [`TaskStatus::as_str`] and [`FromStr`]. The SQL text keeps the
/// literals: the partial indexes (`tasks_due`, `tasks_claimed`, `tasks_open_by_account`)
/// are chosen only when a statement's predicate names the status literally, not as a
/// parameter. The test below checks every status literal of the store's SQL is one of
/// these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// Waiting for its instant; the scheduler may claim it.
    Scheduled,
    /// A scheduler is firing it (claimed, the broker has not confirmed yet).
    Claimed,
    /// Fired: its `task.due` is published.
    Emitted,
    /// Will never fire.
    Cancelled,
    /// Never stored: `collections_open_batch` (migration 0007) reports a claim that ran
    /// out so (its scheduler is presumed dead).
    Stale,
}

impl TaskStatus {
    /// Every status, stored or reported.
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Scheduled,
        TaskStatus::Claimed,
        TaskStatus::Emitted,
        TaskStatus::Cancelled,
        TaskStatus::Stale,
    ];

    /// The status as the database spells it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Scheduled => "scheduled",
            TaskStatus::Claimed => "claimed",
            TaskStatus::Emitted => "emitted",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::Stale => "stale",
        }
    }
}

impl FromStr for TaskStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        TaskStatus::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown task status {s:?}"))
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    let rows = sqlx::query!(
        r#"SELECT task_id, account_id, kind, channel, due_at AS "due_at: Ts", priority, tone,
                reason, promise_id, cause_event_id, attempt, policy_version, revision,
                contact_point_id, status = 'claimed' AS "firing!"
         FROM tasks WHERE account_id = ANY($1) AND status IN ('scheduled', 'claimed')
         ORDER BY created_at, task_id"#,
        accounts as &[&str],
    )
    .fetch_all(&mut **tx)
    .await?;
    for r in rows {
        let is_firing = r.firing;
        let t = task_row!(r).into_task()?;
        if is_firing {
            firing.insert(t.task_id);
        }
        out.entry(t.account_id.clone()).or_default().push(t);
    }
    Ok((out, firing))
}

/// A task row as stored: the columns every statement that reads tasks selects, with the
/// names of `tasks`' columns (so [`task_row!`] builds one from any `query!` record that
/// selects them).
#[derive(Debug, Clone)]
pub(crate) struct TaskRow {
    pub(crate) task_id: Uuid,
    pub(crate) account_id: String,
    pub(crate) kind: String,
    pub(crate) channel: String,
    pub(crate) due_at: Ts,
    pub(crate) priority: i16,
    pub(crate) tone: String,
    pub(crate) reason: String,
    pub(crate) promise_id: Option<String>,
    pub(crate) cause_event_id: Uuid,
    pub(crate) attempt: i32,
    pub(crate) policy_version: String,
    /// The contact point the task is meant for (migration 0011).
    pub(crate) contact_point_id: Option<String>,
    pub(crate) revision: i32,
}

/// A [`TaskRow`] from a `query!` record (a variable) whose fields are named after
/// `tasks`' columns. Moves only those fields: the record's others stay usable.
macro_rules! task_row {
    ($r:ident) => {
        $crate::tasks::TaskRow {
            task_id: $r.task_id,
            account_id: $r.account_id,
            kind: $r.kind,
            channel: $r.channel,
            due_at: $r.due_at,
            priority: $r.priority,
            tone: $r.tone,
            reason: $r.reason,
            promise_id: $r.promise_id,
            cause_event_id: $r.cause_event_id,
            attempt: $r.attempt,
            policy_version: $r.policy_version,
            revision: $r.revision,
            contact_point_id: $r.contact_point_id,
        }
    };
}
pub(crate) use task_row;

impl TaskRow {
    /// The core's task.
    ///
    /// # Errors
    /// [`StoreError::State`] when a stored value is one this binary cannot hold: an
    /// unknown kind, channel or tone (a newer binary wrote it, or a hand edit), a priority
    /// outside 0-255 or an attempt below 0. Never a default in its place: a task read
    /// wrongly would be fired, cancelled or ranked wrongly.
    pub(crate) fn into_task(self) -> Result<Task, StoreError> {
        let id = self.task_id;
        let bad = |e: String| StoreError::state(format!("task {id}: {e}"));
        Ok(Task {
            task_id: self.task_id,
            kind: self.kind.parse().map_err(bad)?,
            channel: self.channel.parse().map_err(bad)?,
            due_at: self.due_at.to_jiff(),
            priority: u8::try_from(self.priority)
                .map_err(|_| bad(format!("priority {} out of range", self.priority)))?,
            tone: self.tone.parse().map_err(bad)?,
            attempt: u32::try_from(self.attempt)
                .map_err(|_| bad(format!("attempt {} out of range", self.attempt)))?,
            account_id: self.account_id,
            reason: self.reason,
            promise_id: self.promise_id,
            cause_event_id: self.cause_event_id,
            policy_version: self.policy_version,
            revision: u32::try_from(self.revision).unwrap_or(Task::FIRST_REVISION),
            contact_point_id: self.contact_point_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::TaskStatus;

    #[test]
    fn as_str_and_from_str_round_trip() {
        for s in TaskStatus::ALL {
            assert_eq!(s.as_str().parse::<TaskStatus>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert!("done".parse::<TaskStatus>().is_err());
    }

    /// The SQL of the store and of its migrations knows no status that [`TaskStatus`] does
    /// not: every literal compared with, assigned to or listed for a status, and every
    /// literal a `CASE` yields (those are statuses in these files), parses.
    #[test]
    fn every_status_literal_in_the_sql_is_a_task_status() {
        let sources = [
            include_str!("batch.rs"),
            include_str!("open.rs"),
            include_str!("scheduler.rs"),
            include_str!("tasks.rs"),
            include_str!("../migrations/0001_init.sql"),
            include_str!("../migrations/0002_claimed_index.sql"),
            include_str!("../migrations/0003_batch_round_trips.sql"),
            include_str!("../migrations/0004_tasks_being_fired.sql"),
            include_str!("../migrations/0005_outbox_pending.sql"),
            include_str!("../migrations/0006_accounts_fillfactor.sql"),
            include_str!("../migrations/0007_fencing_tokens.sql"),
            include_str!("../migrations/0008_inbox_source.sql"),
            include_str!("../migrations/0009_task_revisions.sql"),
        ];
        let mut seen = 0;
        for text in sources {
            // Not this test's own markers.
            let text = text.split("#[cfg(test)]").next().unwrap_or(text);
            for marker in ["status = '", "status IN ('", "THEN '", "ELSE '"] {
                for (at, _) in text.match_indices(marker) {
                    // The literals up to the end of the list, or the single one.
                    let rest = &text[at + marker.len() - 1..];
                    let literals: Vec<&str> = if marker.ends_with("('") {
                        let list = &rest[..rest.find(')').unwrap_or(rest.len())];
                        list.split('\'').skip(1).step_by(2).collect()
                    } else {
                        rest.split('\'').nth(1).into_iter().collect()
                    };
                    for lit in literals {
                        assert!(
                            lit.parse::<TaskStatus>().is_ok(),
                            "{lit:?} after {marker:?} is not a TaskStatus"
                        );
                        seen += 1;
                    }
                }
            }
        }
        assert!(seen > 20, "the scan found the statuses ({seen})");
    }
}
