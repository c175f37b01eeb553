//! What the check observed: the task rows, the task events received (classified by
//! transition), the summary the tests print; and how ids and fields are read from a task
//! event.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    time::Duration,
};

use jiff::Timestamp;
use serde_json::Value;
use uuid::Uuid;

/// What the check saw; printed by the tests.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub inputs: usize,
    pub expiries: usize,
    pub inbox: usize,
    pub outbox: usize,
    pub received_copies: usize,
    pub distinct_ids: usize,
    pub redelivered_copies: usize,
    pub planned: usize,
    pub moved: usize,
    pub reranked: usize,
    pub due: usize,
    pub cancelled: usize,
    /// Tasks whose `task.due` (from a scheduler that died mid-firing) was retracted by a
    /// later `task.cancelled`.
    pub retracted: usize,
    /// Expiries applied whose task was then cancelled (the same, for internal tasks).
    pub expiries_retracted: usize,
    pub tasks_by_status: BTreeMap<String, usize>,
    pub settled_after: Duration,
    /// Rows of the contact ledger, holds and restrictions recorded, phone firings judged
    /// against the caps.
    pub attempts: usize,
    pub holds: usize,
    pub restrictions: usize,
    pub phone_firings: usize,
    /// Arrangements judged (issue 22): how many, kept, broken; their instalments and the
    /// instalment expiries fired.
    pub arrangements: usize,
    pub arrangements_kept: usize,
    pub arrangements_broken: usize,
    pub instalments: usize,
    pub instalment_expiries: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} inputs + {} expiries = {} inbox rows; {} outbox rows; task events received: \
             {} copies of {} ids ({} redelivered copies): {} planned, {} moved, {} re-ranked, \
             {} due, {} cancelled ({} retracted after a firing cut short, and {} expiries); \
             tasks {:?}; contact attempts {}, holds {}, restrictions {}, phone firings {}; \
             arrangements {} ({} kept, {} broken) with {} instalments, {} instalment expiries \
             fired; settled after {:.1}s",
            self.inputs,
            self.expiries,
            self.inbox,
            self.outbox,
            self.received_copies,
            self.distinct_ids,
            self.redelivered_copies,
            self.planned,
            self.moved,
            self.reranked,
            self.due,
            self.cancelled,
            self.retracted,
            self.expiries_retracted,
            self.tasks_by_status,
            self.attempts,
            self.holds,
            self.restrictions,
            self.phone_firings,
            self.arrangements,
            self.arrangements_kept,
            self.arrangements_broken,
            self.instalments,
            self.instalment_expiries,
            self.settled_after.as_secs_f64(),
        )?;
        Ok(())
    }
}

/// A task row.
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub account: String,
    pub kind: String,
    pub status: String,
    pub due_at: Timestamp,
    pub attempt: i32,
}

/// How a received task event relates to its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// `task.scheduled` with the plan's id.
    Planned,
    /// `task.scheduled` re-announcing a task moved at firing time.
    Moved,
    /// `task.scheduled` re-announcing a new rank.
    Reranked,
    Due,
    Cancelled,
}

/// A received task event, one per distinct id.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: Uuid,
    pub task_id: Uuid,
    pub account: String,
    pub transition: Transition,
    pub due_at: Timestamp,
    /// The `time` of every copy (for `task.due`: each firing instant).
    pub times: Vec<Timestamp>,
    /// Position of its first copy among everything received.
    pub first_seen: usize,
}

/// Everything the check read, for tests that assert more.
pub struct Observed {
    pub summary: Summary,
    pub tasks: HashMap<Uuid, TaskRow>,
    pub received: Vec<Received>,
    pub zones: HashMap<String, String>,
}

impl Observed {
    /// Received events of one task, by transition.
    pub fn of_task(&self, task: Uuid) -> Vec<&Received> {
        self.received.iter().filter(|r| r.task_id == task).collect()
    }
}

pub fn ts(v: &Value) -> Option<Timestamp> {
    v.as_str()?.parse().ok()
}

pub fn uuid(v: &Value) -> Option<Uuid> {
    v.as_str()?.parse().ok()
}

/// The id `collections_core::outbound::task_event_id` gives a transition.
pub fn derived(state: &str, task: Uuid, due_at: Timestamp) -> Uuid {
    Uuid::new_v5(&task, format!("{state}:{due_at}").as_bytes())
}

/// The id of the `promise.broken` (expired) an expiry task fires (outbound.rs).
pub fn expiry_event_id(task: Uuid) -> Uuid {
    Uuid::new_v5(&task, b"expired")
}
