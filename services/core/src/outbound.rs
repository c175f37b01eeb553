//! Outbound task events (CloudEvents) as they are written to the outbox.

use jiff::Timestamp;
use serde_json::json;
use uuid::Uuid;

use crate::{state::AccountSummary, task::Task};

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
    /// The CloudEvent, serialised.
    pub body: serde_json::Value,
}

/// Builds a `task.<state>` CloudEvent.
#[must_use]
pub fn task_message(
    state: TaskState,
    task: &Task,
    account: &AccountSummary,
    now: Timestamp,
    cancel_reason: Option<&str>,
) -> OutboundMessage {
    let event_id = Uuid::new_v5(
        &task.task_id,
        format!("{}:{}", state.as_str(), task.due_at).as_bytes(),
    );
    let mut data = json!({
        "task_id": task.task_id,
        "account_id": task.account_id,
        "kind": task.kind,
        "channel": task.channel,
        "due_at": task.due_at,
        "priority": task.priority,
        "tone": task.tone,
        "reason": task.reason,
        "cause_event_id": task.cause_event_id,
        "attempt": task.attempt,
        "policy_version": task.policy_version,
        "account": account,
    });
    if let Some(p) = &task.promise_id {
        data["promise_id"] = json!(p);
    }
    if let Some(r) = cancel_reason {
        data["cancel_reason"] = json!(r);
    }
    OutboundMessage {
        event_id,
        exchange: TASKS_EXCHANGE,
        routing_key: format!("task.{}.{}", state.as_str(), task.kind.as_str()),
        account_id: task.account_id.clone(),
        body: json!({
            "specversion": "1.0",
            "id": event_id,
            "source": SOURCE,
            "type": format!("task.{}", state.as_str()),
            "time": now,
            "subject": task.account_id,
            "datacontenttype": "application/json",
            "data": data,
        }),
    }
}

/// The `promise.broken` event (reason `expired`) the service publishes when a promise's
/// grace has passed unkept. Its id derives from the expiry task, so a re-fire after a
/// crash is a duplicate the promise-broken worker ignores.
#[must_use]
pub fn expiry_message(task: &Task, now: Timestamp) -> OutboundMessage {
    let event_id = Uuid::new_v5(&task.task_id, b"expired");
    OutboundMessage {
        event_id,
        exchange: EVENTS_EXCHANGE,
        routing_key: "promise.broken".to_owned(),
        account_id: task.account_id.clone(),
        body: json!({
            "specversion": "1.0",
            "id": event_id,
            "source": SOURCE,
            "type": "promise.broken",
            "time": now,
            "subject": task.account_id,
            "datacontenttype": "application/json",
            "data": {
                "account_id": task.account_id,
                "promise_id": task.promise_id,
                "reason": "expired",
            },
        }),
    }
}
