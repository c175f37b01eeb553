//! Read queries for the dashboards' API (`collections-api`, issue 20): task pages, an
//! account with its open tasks, the journal, the task-event feed and the board's figures.
//!
//! Nothing here writes or locks: every statement runs on its own, outside any
//! transaction, so a read-only database role is enough. Task pages are ordered by
//! `(due_at, task_id)` and resume from the last pair returned: a row inserted or moved
//! behind the cursor meanwhile is not returned on a later page, one inserted ahead of it
//! is, and no row is returned twice by the same walk unless a move put it ahead again.
//! The feed is ordered by `(xact, id)` (migration 0012, ARCHITECTURE.md "Task-event
//! feed").

use collections_core::{
    outbound::{task_message_with_id, TaskState},
    AccountState,
};
use jiff::Timestamp;
use jiff_sqlx::{Timestamp as Ts, ToSqlx};
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use crate::{accounts::parse_state, tasks::TaskRow, Store, StoreError};

/// A task's life-cycle state as dashboards name it (task events' `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadState {
    /// Planned, not fired yet (stored `scheduled`, or `claimed` while a scheduler fires it).
    Scheduled,
    /// Fired (`task.due` published; stored `emitted`).
    Due,
    /// Cancelled.
    Cancelled,
}

impl ReadState {
    /// The three, in the board's order.
    pub const ALL: [ReadState; 3] = [ReadState::Scheduled, ReadState::Due, ReadState::Cancelled];

    /// The name in task events and in the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ReadState::Scheduled => "scheduled",
            ReadState::Due => "due",
            ReadState::Cancelled => "cancelled",
        }
    }

    /// The state of a stored status.
    #[must_use]
    pub fn of_status(status: &str) -> ReadState {
        match status {
            "emitted" => ReadState::Due,
            "cancelled" => ReadState::Cancelled,
            _ => ReadState::Scheduled,
        }
    }

    /// The SQL predicate on `t.status`; literal, so the planner can use the partial index
    /// of open tasks (`tasks_open_by_due`) for `scheduled`.
    fn predicate(self) -> &'static str {
        match self {
            ReadState::Scheduled => "t.status IN ('scheduled', 'claimed')",
            ReadState::Due => "t.status = 'emitted'",
            ReadState::Cancelled => "t.status = 'cancelled'",
        }
    }

    fn task_state(self) -> TaskState {
        match self {
            ReadState::Scheduled => TaskState::Scheduled,
            ReadState::Due => TaskState::Due,
            ReadState::Cancelled => TaskState::Cancelled,
        }
    }
}

impl std::str::FromStr for ReadState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        ReadState::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or(())
    }
}

/// Filters of a task page; `None` leaves a column free.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Life-cycle state.
    pub state: Option<ReadState>,
    /// Task kind (`collection_call`, ...).
    pub kind: Option<String>,
    /// Channel.
    pub channel: Option<String>,
    /// Priority.
    pub priority: Option<i16>,
    /// Tone.
    pub tone: Option<String>,
    /// Account.
    pub account_id: Option<String>,
    /// `due_at >= due_after`.
    pub due_after: Option<Timestamp>,
    /// `due_at < due_before`.
    pub due_before: Option<Timestamp>,
    /// Rows strictly after this `(due_at, task_id)`.
    pub after: Option<(Timestamp, Uuid)>,
}

/// One task as dashboards see it.
#[derive(Debug, Clone)]
pub struct TaskView {
    /// `data` as task events carry it, with the account summary as of now, plus `state`.
    pub data: serde_json::Value,
    /// The account's bucket now (`M0` .. `M3+`).
    pub bucket: Option<String>,
    /// The customer's zone (IANA name): the board shows due instants in it.
    pub timezone: String,
    /// The page position of the row.
    pub due_at: Timestamp,
    /// The page position of the row.
    pub task_id: Uuid,
}

/// An account's stored row.
#[derive(Debug, Clone)]
pub struct AccountView {
    /// Collection state, `None` for an account seen but never given state.
    pub state: Option<AccountState>,
    /// When the row last changed.
    pub updated_at: Timestamp,
    /// The policy version that wrote it last.
    pub policy_version: Option<String>,
}

/// One journal line.
#[derive(Debug, Clone)]
pub struct JournalLine {
    /// Its sequence (the journal cursor).
    pub id: i64,
    /// The inbound event (or task event) that led to it.
    pub event_id: Option<Uuid>,
    /// What happened (`event_applied`, `task_planned`, ...).
    pub kind: String,
    /// The line's text.
    pub detail: String,
    /// The task concerned.
    pub task_id: Option<Uuid>,
    /// The policy version that decided it.
    pub policy_version: String,
    /// When it was decided.
    pub decided_at: Timestamp,
}

/// One row of the task-event feed.
#[derive(Debug, Clone)]
pub struct FeedRow {
    /// The writing transaction (xid8, as text).
    pub xact: u64,
    /// The outbox sequence.
    pub id: i64,
    /// The CloudEvent exactly as published.
    pub body: String,
}

/// Dead letters of one queue and reason.
#[derive(Debug, Clone)]
pub struct DeadLetterReason {
    /// The inbound queue the message came from.
    pub queue: String,
    /// `x-collections-error`.
    pub reason: String,
    /// How many since the horizon asked for.
    pub count: i64,
    /// The latest one's `x-collections-error-detail` (masked).
    pub last_detail: String,
    /// When the latest was dead-lettered.
    pub last_at: Timestamp,
}

/// The board's figures.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// `(state, kind, count)`.
    pub counts: Vec<(ReadState, String, i64)>,
    /// `(hour start, count)` of open tasks due in the next 24 h (overdue ones in the
    /// current hour).
    pub due_per_hour: Vec<(Timestamp, i64)>,
    /// Outbox rows not yet published.
    pub outbox_backlog: i64,
}

/// The columns a task page selects.
const TASK_COLUMNS: &str = "t.task_id, t.account_id, t.kind, t.channel, t.due_at, t.priority, \
     t.tone, t.reason, t.promise_id, t.cause_event_id, t.attempt, t.policy_version, t.revision, \
     t.contact_point_id, t.status, t.cancel_reason, a.state::text AS state";

impl Store {
    /// Up to `limit` tasks matching `f`, ordered by `(due_at, task_id)`, each with its
    /// account's summary as of `now`. Promise expiries (the scheduler's own timers, never
    /// announced as task events) are left out.
    ///
    /// # Errors
    /// A database error, or a stored row that cannot be read.
    pub async fn read_tasks(
        &self,
        f: &TaskFilter,
        limit: i64,
        now: Timestamp,
    ) -> Result<Vec<TaskView>, StoreError> {
        // Built at runtime: only the filters given appear, so each combination gets a
        // plan that can use its index (a `$n IS NULL OR ...` predicate cannot).
        let mut q = QueryBuilder::new(format!(
            "SELECT {TASK_COLUMNS} FROM tasks t LEFT JOIN accounts a ON a.account_id = t.account_id \
             WHERE t.kind NOT IN ('promise_expiry', 'instalment_expiry')"
        ));
        if let Some(s) = f.state {
            q.push(" AND ").push(s.predicate());
        }
        if let Some(v) = &f.kind {
            q.push(" AND t.kind = ").push_bind(v.clone());
        }
        if let Some(v) = &f.channel {
            q.push(" AND t.channel = ").push_bind(v.clone());
        }
        if let Some(v) = f.priority {
            q.push(" AND t.priority = ").push_bind(v);
        }
        if let Some(v) = &f.tone {
            q.push(" AND t.tone = ").push_bind(v.clone());
        }
        if let Some(v) = &f.account_id {
            q.push(" AND t.account_id = ").push_bind(v.clone());
        }
        if let Some(v) = f.due_after {
            q.push(" AND t.due_at >= ").push_bind(v.to_sqlx());
        }
        if let Some(v) = f.due_before {
            q.push(" AND t.due_at < ").push_bind(v.to_sqlx());
        }
        if let Some((at, id)) = f.after {
            q.push(" AND (t.due_at, t.task_id) > (")
                .push_bind(at.to_sqlx())
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        q.push(" ORDER BY t.due_at, t.task_id LIMIT ")
            .push_bind(limit);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(|r| task_view(r, now)).collect()
    }

    /// An account's row; `None` when the service has never seen the account.
    ///
    /// # Errors
    /// A database error, or a state that does not parse.
    pub async fn read_account(&self, account_id: &str) -> Result<Option<AccountView>, StoreError> {
        let row = sqlx::query!(
            r#"SELECT state::text AS state, updated_at AS "updated_at: Ts", policy_version
               FROM accounts WHERE account_id = $1"#,
            account_id
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(AccountView {
                state: parse_state(account_id, r.state.as_deref())?,
                updated_at: r.updated_at.to_jiff(),
                policy_version: r.policy_version,
            })
        })
        .transpose()
    }

    /// Up to `limit` journal lines of an account with ids above `after`, in order.
    ///
    /// # Errors
    /// A database error.
    pub async fn read_journal(
        &self,
        account_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<JournalLine>, StoreError> {
        Ok(sqlx::query!(
            r#"SELECT id, event_id, kind, detail, task_id, policy_version,
                      decided_at AS "decided_at: Ts"
               FROM journal WHERE account_id = $1 AND id > $2 ORDER BY id LIMIT $3"#,
            account_id,
            after,
            limit
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| JournalLine {
            id: r.id,
            event_id: r.event_id,
            kind: r.kind,
            detail: r.detail,
            task_id: r.task_id,
            policy_version: r.policy_version,
            decided_at: r.decided_at.to_jiff(),
        })
        .collect())
    }

    /// Up to `limit` task events after the cursor `(xact, id)`, in `(xact, id)` order,
    /// written by transactions that ended before this statement's snapshot (below its
    /// xmin): every row such a transaction wrote is visible, and no transaction still
    /// running can commit a row with a smaller cursor.
    ///
    /// # Errors
    /// A database error.
    pub async fn read_task_events(
        &self,
        after: (u64, i64),
        limit: i64,
    ) -> Result<Vec<FeedRow>, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT xact::text AS "xact!", id, body::text AS "body!" FROM outbox
               WHERE exchange = 'collections.tasks'
                 AND (xact, id) > ($1::text::xid8, $2)
                 AND xact < pg_snapshot_xmin(pg_current_snapshot())
               ORDER BY xact, id LIMIT $3"#,
            after.0.to_string(),
            after.1,
            limit
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(FeedRow {
                    xact: r
                        .xact
                        .parse()
                        .map_err(|_| StoreError::state(format!("outbox {}: xact", r.id)))?,
                    id: r.id,
                    body: r.body,
                })
            })
            .collect()
    }

    /// The newest cursor the feed serves now (`(0, 0)` when it is empty): where a
    /// subscriber without a cursor starts.
    ///
    /// # Errors
    /// A database error.
    pub async fn read_feed_head(&self) -> Result<(u64, i64), StoreError> {
        let row = sqlx::query!(
            r#"SELECT xact::text AS "xact!", id FROM outbox
               WHERE exchange = 'collections.tasks'
                 AND xact < pg_snapshot_xmin(pg_current_snapshot())
               ORDER BY xact DESC, id DESC LIMIT 1"#
        )
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok((0, 0)),
            Some(r) => Ok((
                r.xact
                    .parse()
                    .map_err(|_| StoreError::state(format!("outbox {}: xact", r.id)))?,
                r.id,
            )),
        }
    }

    /// A debtor's contact attempts recorded in the last day and the last 7 days.
    ///
    /// # Errors
    /// A database error.
    pub async fn read_contact_counts(&self, debtor_id: &str) -> Result<(i64, i64), StoreError> {
        let r = sqlx::query!(
            r#"SELECT count(*) FILTER (WHERE started_at > now() - interval '1 day') AS "day!",
                      count(*) AS "week!"
               FROM contact_attempts
               WHERE debtor_id = $1 AND started_at > now() - interval '7 days'"#,
            debtor_id
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((r.day, r.week))
    }

    /// Records a message a worker dead-lettered (after the broker confirmed it).
    ///
    /// # Errors
    /// A database error (the caller logs it: the record is best effort).
    pub async fn record_dead_letter(
        &self,
        queue: &str,
        reason: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO dead_letters (queue, reason, detail) VALUES ($1, $2, $3)",
            queue,
            reason,
            detail
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Dead letters recorded since `since`, by queue and reason, with the latest detail.
    ///
    /// # Errors
    /// A database error.
    pub async fn read_dead_letter_reasons(
        &self,
        since: Timestamp,
    ) -> Result<Vec<DeadLetterReason>, StoreError> {
        Ok(sqlx::query!(
            r#"SELECT DISTINCT ON (queue, reason) queue, reason,
                      count(*) OVER (PARTITION BY queue, reason) AS "count!",
                      detail, at AS "at: Ts"
               FROM dead_letters WHERE at >= $1
               ORDER BY queue, reason, at DESC, id DESC"#,
            since.to_sqlx() as _,
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| DeadLetterReason {
            queue: r.queue,
            reason: r.reason,
            count: r.count,
            last_detail: r.detail,
            last_at: r.at.to_jiff(),
        })
        .collect())
    }

    /// Counts by state and kind, open tasks due per hour for 24 h from `now`, and the
    /// outbox backlog.
    ///
    /// # Errors
    /// A database error.
    pub async fn read_figures(&self, now: Timestamp) -> Result<Figures, StoreError> {
        let counts = sqlx::query!(
            r#"SELECT status, kind, count(*) AS "n!" FROM tasks
               WHERE kind NOT IN ('promise_expiry', 'instalment_expiry') GROUP BY status, kind"#
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Figures::default();
        for r in counts {
            let state = ReadState::of_status(&r.status);
            match out
                .counts
                .iter_mut()
                .find(|(s, k, _)| *s == state && *k == r.kind)
            {
                Some(c) => c.2 += r.n,
                None => out.counts.push((state, r.kind, r.n)),
            }
        }
        out.counts
            .sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        let hours = sqlx::query!(
            r#"SELECT date_trunc('hour', greatest(due_at, $1)) AS "hour!: Ts", count(*) AS "n!"
               FROM tasks
               WHERE status IN ('scheduled', 'claimed') AND kind NOT IN ('promise_expiry', 'instalment_expiry')
                 AND due_at < date_trunc('hour', $1::timestamptz) + interval '24 hours'
               GROUP BY 1 ORDER BY 1"#,
            now.to_sqlx() as _,
        )
        .fetch_all(&self.pool)
        .await?;
        out.due_per_hour = hours.into_iter().map(|r| (r.hour.to_jiff(), r.n)).collect();
        out.outbox_backlog = self.outbox_backlog().await?;
        Ok(out)
    }
}

/// A page row: the task event's `data` (account summary as of `now`) plus `state`.
fn task_view(r: &sqlx::postgres::PgRow, now: Timestamp) -> Result<TaskView, StoreError> {
    let bad = |e: sqlx::Error| StoreError::state(format!("task row: {e}"));
    let status: String = r.try_get("status").map_err(bad)?;
    let cancel_reason: Option<String> = r.try_get("cancel_reason").map_err(bad)?;
    let state_doc: Option<String> = r.try_get("state").map_err(bad)?;
    let row = TaskRow {
        task_id: r.try_get("task_id").map_err(bad)?,
        account_id: r.try_get("account_id").map_err(bad)?,
        kind: r.try_get("kind").map_err(bad)?,
        channel: r.try_get("channel").map_err(bad)?,
        due_at: r.try_get("due_at").map_err(bad)?,
        priority: r.try_get("priority").map_err(bad)?,
        tone: r.try_get("tone").map_err(bad)?,
        reason: r.try_get("reason").map_err(bad)?,
        promise_id: r.try_get("promise_id").map_err(bad)?,
        cause_event_id: r.try_get("cause_event_id").map_err(bad)?,
        attempt: r.try_get("attempt").map_err(bad)?,
        policy_version: r.try_get("policy_version").map_err(bad)?,
        contact_point_id: r.try_get("contact_point_id").map_err(bad)?,
        revision: r.try_get("revision").map_err(bad)?,
    };
    let task = row.into_task()?;
    let account = parse_state(&task.account_id, state_doc.as_deref())?
        .unwrap_or_else(|| AccountState::new(&task.account_id, "UTC"));
    let summary = account.summary(now);
    let state = ReadState::of_status(&status);
    let msg = task_message_with_id(
        Uuid::nil(),
        state.task_state(),
        &task,
        &summary,
        now,
        cancel_reason.as_deref(),
    );
    let mut data = msg.json()["data"].take();
    data["state"] = serde_json::Value::from(state.as_str());
    let bucket = data["account"]["bucket"].as_str().map(str::to_owned);
    Ok(TaskView {
        data,
        bucket,
        timezone: account.timezone.clone(),
        due_at: task.due_at,
        task_id: task.task_id,
    })
}
