//! Outbound task events (CloudEvents) as they are written to the outbox.

use jiff::Timestamp;
use serde::Serialize;
use uuid::Uuid;

use crate::{
    state::AccountSummary,
    task::{Channel, Task, TaskKind, Tone},
};

/// Exchange that carries task events.
pub const TASKS_EXCHANGE: &str = "collections.tasks";
/// Exchange that carries inbound events (the scheduler publishes expiries here).
pub const EVENTS_EXCHANGE: &str = "collections.events";
/// CloudEvents `source` of everything this service publishes.
pub const SOURCE: &str = "collections";

/// Life-cycle state named in the routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Planned.
    Scheduled,
    /// Its time has come.
    Due,
    /// No longer needed.
    Cancelled,
}

impl TaskState {
    /// Contract spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Scheduled => "scheduled",
            TaskState::Due => "due",
            TaskState::Cancelled => "cancelled",
        }
    }
}

/// One message to publish after commit.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage {
    /// CloudEvents id (stable: derived from the task and its transition).
    pub event_id: Uuid,
    /// Target exchange.
    pub exchange: &'static str,
    /// Routing key.
    pub routing_key: String,
    /// Account (for per-account ordering in the relay).
    pub account_id: String,
    /// The CloudEvent, serialised as JSON once, here: the store and the broker take these
    /// bytes as they are.
    pub body: Vec<u8>,
}

impl OutboundMessage {
    /// The body as a JSON value (for tests and the simulator's timeline).
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A CloudEvents 1.0 envelope in structured JSON mode.
#[derive(Serialize)]
struct CloudEvent<'a, D> {
    specversion: &'static str,
    id: Uuid,
    source: &'static str,
    #[serde(rename = "type")]
    kind: &'a str,
    time: Timestamp,
    subject: &'a str,
    datacontenttype: &'static str,
    data: D,
}

impl<'a, D: Serialize> CloudEvent<'a, D> {
    fn new(id: Uuid, kind: &'a str, time: Timestamp, subject: &'a str, data: D) -> Self {
        Self {
            specversion: "1.0",
            id,
            source: SOURCE,
            kind,
            time,
            subject,
            datacontenttype: "application/json",
            data,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        // Plain data with string keys: serialisation cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// `data` of a `task.*` event (the contract in proto/).
#[derive(Serialize)]
struct TaskData<'a> {
    task_id: Uuid,
    account_id: &'a str,
    kind: TaskKind,
    channel: Channel,
    due_at: Timestamp,
    priority: u8,
    tone: Tone,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    promise_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contact_point_id: Option<&'a str>,
    cause_event_id: Uuid,
    attempt: u32,
    policy_version: &'a str,
    account: &'a AccountSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    cancel_reason: Option<&'a str>,
    revision: u32,
}

/// The id a task event gets unless its caller names another: derived from the task, the
/// transition and the due instant, so a replay yields the same id.
#[must_use]
pub fn task_event_id(state: TaskState, task: &Task) -> Uuid {
    Uuid::new_v5(
        &task.task_id,
        format!("{}:{}", state.as_str(), task.due_at).as_bytes(),
    )
}

/// Builds a `task.<state>` CloudEvent with the id [`task_event_id`] gives. `task` is the
/// task as it is after the change the event announces (its `revision` included: see
/// [`Task::revised`]).
#[must_use]
pub fn task_message(
    state: TaskState,
    task: &Task,
    account: &AccountSummary,
    now: Timestamp,
    cancel_reason: Option<&str>,
) -> OutboundMessage {
    task_message_with_id(
        task_event_id(state, task),
        state,
        task,
        account,
        now,
        cancel_reason,
    )
}

/// Builds a `task.<state>` CloudEvent with the given id (a re-announcement of the same
/// task: a new rank, a move).
#[must_use]
pub fn task_message_with_id(
    event_id: Uuid,
    state: TaskState,
    task: &Task,
    account: &AccountSummary,
    now: Timestamp,
    cancel_reason: Option<&str>,
) -> OutboundMessage {
    let kind = format!("task.{}", state.as_str());
    let data = TaskData {
        task_id: task.task_id,
        account_id: &task.account_id,
        kind: task.kind,
        channel: task.channel,
        due_at: task.due_at,
        priority: task.priority,
        tone: task.tone,
        reason: &task.reason,
        promise_id: task.promise_id.as_deref(),
        contact_point_id: task.contact_point_id.as_deref(),
        cause_event_id: task.cause_event_id,
        attempt: task.attempt,
        policy_version: &task.policy_version,
        account,
        cancel_reason,
        revision: task.revision,
    };
    OutboundMessage {
        event_id,
        exchange: TASKS_EXCHANGE,
        routing_key: format!("{kind}.{}", task.kind.as_str()),
        account_id: task.account_id.clone(),
        body: CloudEvent::new(event_id, &kind, now, &task.account_id, data).to_bytes(),
    }
}

/// `data` of the `promise.broken` the service publishes itself.
#[derive(Serialize)]
struct ExpiredData<'a> {
    account_id: &'a str,
    promise_id: Option<&'a str>,
    reason: &'static str,
}

/// The `promise.broken` event (reason `expired`) the service publishes when a promise's
/// grace has passed unkept. Its id derives from the expiry task, so a re-fire after a
/// crash is a duplicate the promise-broken worker ignores.
#[must_use]
pub fn expiry_message(task: &Task, now: Timestamp) -> OutboundMessage {
    let event_id = Uuid::new_v5(&task.task_id, b"expired");
    let data = ExpiredData {
        account_id: &task.account_id,
        promise_id: task.promise_id.as_deref(),
        reason: "expired",
    };
    OutboundMessage {
        event_id,
        exchange: EVENTS_EXCHANGE,
        routing_key: "promise.broken".to_owned(),
        account_id: task.account_id.clone(),
        body: CloudEvent::new(event_id, "promise.broken", now, &task.account_id, data).to_bytes(),
    }
}
