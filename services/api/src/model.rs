//! The JSON bodies the API answers with, described for the OpenAPI document.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A page of tasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskPage {
    /// Tasks ordered by `due_at`, then `task_id`: `data` as task events carry it (the
    /// account summary as of the request), plus `state` (`scheduled`, `due`,
    /// `cancelled`) and the customer's `timezone`.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Value>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// An account and its open tasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountBody {
    /// The account id.
    pub account_id: String,
    /// `current`, `delinquent` or `cured`; absent before the first event with state.
    pub status: Option<String>,
    /// The customer's zone (IANA name).
    pub timezone: String,
    /// The summary task events carry (DPD, bucket, overdue, broken promises, ...), as of
    /// the request.
    #[schema(value_type = Object)]
    pub summary: Value,
    /// The promise still open, if any.
    #[schema(value_type = Option<Object>)]
    pub open_promise: Option<Value>,
    /// Holds recorded (placed and released), as stored.
    #[schema(value_type = Vec<Object>)]
    pub holds: Vec<Value>,
    /// Contact restrictions recorded, as stored.
    #[schema(value_type = Vec<Object>)]
    pub restrictions: Vec<Value>,
    /// Contact attempts in the debtor's ledger: last 24 h and last 7 days.
    pub contacts_last_day: i64,
    /// See `contacts_last_day`.
    pub contacts_last_7_days: i64,
    /// The policy version that last wrote the account.
    pub policy_version: Option<String>,
    /// When the account last changed (RFC 3339).
    pub updated_at: String,
    /// Open tasks (scheduled, or being fired), by due instant.
    #[schema(value_type = Vec<Object>)]
    pub open_tasks: Vec<Value>,
}

/// One line of an account's journal.
#[derive(Debug, Serialize, ToSchema)]
pub struct JournalItem {
    /// Its sequence; the page cursor.
    pub id: i64,
    /// When it was decided (RFC 3339).
    pub at: String,
    /// What happened: `event_applied`, `task_planned`, `task_cancelled`, ...
    pub kind: String,
    /// The line's text.
    pub detail: String,
    /// The event that led to it.
    pub event_id: Option<String>,
    /// The task it concerns.
    pub task_id: Option<String>,
    /// The policy version that decided it.
    pub policy_version: String,
}

/// A page of an account's journal.
#[derive(Debug, Serialize, ToSchema)]
pub struct JournalPage {
    /// Lines in order.
    pub items: Vec<JournalItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One task event of the feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedItem {
    /// `<xact>-<id>`: pass as `after` (or SSE `Last-Event-ID`) to get what follows.
    pub cursor: String,
    /// The CloudEvent as published on `collections.tasks`.
    #[schema(value_type = Object)]
    pub event: Value,
}

/// A page of the task-event feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedPage {
    /// Events in feed order.
    pub items: Vec<FeedItem>,
    /// The cursor to continue from (the last item's, or the one given when nothing
    /// followed it yet).
    pub next_cursor: String,
}

/// Tasks of one state and kind.
#[derive(Debug, Serialize, ToSchema)]
pub struct KindCount {
    /// `scheduled`, `due` or `cancelled`.
    pub state: String,
    /// Task kind.
    pub kind: String,
    /// How many.
    pub count: i64,
}

/// Open tasks due in one hour.
#[derive(Debug, Serialize, ToSchema)]
pub struct HourCount {
    /// The hour's start (RFC 3339, UTC).
    pub hour: String,
    /// How many.
    pub count: i64,
}

/// Messages waiting in one holding queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueCount {
    /// The queue (`<queue>.dlq` or `collections.unrouted`).
    pub queue: String,
    /// Messages in it.
    pub count: u32,
}

/// Dead letters of one queue and reason, as the workers recorded them.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterReason {
    /// The inbound queue the message came from (its `.dlq` holds it).
    pub queue: String,
    /// `x-collections-error`: `not_json`, `schema`, `invalid_value`, `domain`, ...
    pub reason: String,
    /// Dead-lettered in the last 7 days.
    pub count: i64,
    /// The latest one's `x-collections-error-detail` (personal data masked).
    pub last_detail: String,
    /// When the latest was dead-lettered (RFC 3339).
    pub last_at: String,
}

/// The board's figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// Tasks by state and kind.
    pub counts: Vec<KindCount>,
    /// Tasks by state.
    #[schema(value_type = Object)]
    pub by_state: Value,
    /// Open tasks due per hour for the next 24 h (overdue ones in the current hour).
    pub due_per_hour: Vec<HourCount>,
    /// Outbox rows committed and not yet published.
    pub outbox_backlog: i64,
    /// Dead letters per queue; absent when the API has no `AMQP_URL` or the broker did
    /// not answer.
    pub dead_letters: Option<Vec<QueueCount>>,
    /// What the workers dead-lettered in the last 7 days, by queue and reason (from the
    /// database; replayed or discarded messages still count here).
    pub dead_letter_reasons: Vec<DeadLetterReason>,
}
