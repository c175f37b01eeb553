//! What happens when a planned task's instant comes: the one rule the scheduler and the
//! simulator both apply, so that the simulator's timeline is the service's.

use jiff::Timestamp;
use uuid::Uuid;

use crate::{
    decide::JournalEntry,
    outbound::{expiry_message, task_message, task_message_with_id, OutboundMessage, TaskState},
    policy::Policy,
    state::AccountState,
    task::{Task, TaskKind},
    window,
};

/// The outcome of firing one task at `now`.
#[derive(Debug, Clone)]
pub enum FireOutcome {
    /// Publish `task.due`. When `follow_up` is set the task was a call to the debtor: the
    /// shell completes it through [`crate::on_call_fired`] with `message.event_id` as the
    /// cause (counting the attempt, and for a collection call planning the next one).
    Due {
        /// The `task.due` event.
        message: OutboundMessage,
        /// Whether [`crate::on_call_fired`] must follow.
        follow_up: bool,
    },
    /// An internal promise expiry: publish this `promise.broken` (reason `expired`) to the
    /// events exchange; the promise-broken rules take it from there.
    Expired {
        /// The `promise.broken` event.
        message: OutboundMessage,
    },
    /// An arrangement's instalment expiry: nothing is published at firing; the shell
    /// completes it through [`crate::on_instalment_due`] with `cause` (which may publish
    /// `arrangement.broken` through the outbox).
    InstalmentDue {
        /// The id of the decision it causes ([`crate::instalment_due_cause`]).
        cause: Uuid,
    },
    /// Forbidden now by a hold or a restriction in force: cancel the task (its label is
    /// the cancel reason) and publish its `task.cancelled`.
    Cancelled {
        /// The task with its revision advanced.
        task: Box<Task>,
        /// Its `task.cancelled` event.
        message: OutboundMessage,
        /// The journal line.
        journal: JournalEntry,
        /// `hold:<reason>` or `restriction:<kind>[:<channel>]`.
        reason: String,
    },
    /// Not allowed now (outside the contact window, or over a frequency cap): put the
    /// task back at `task.due_at` and publish the re-emitted `task.scheduled`.
    Moved {
        /// The task with its new instant and reason.
        task: Box<Task>,
        /// Its `task.scheduled` event (a new id naming the move).
        message: OutboundMessage,
        /// The journal line.
        journal: JournalEntry,
    },
}

/// Fires `task` at `now` for an account in `state` (`None` when the account has none).
#[must_use]
pub fn fire(
    task: &Task,
    state: Option<&AccountState>,
    policy: &Policy,
    now: Timestamp,
) -> FireOutcome {
    let state = state
        .cloned()
        .unwrap_or_else(|| AccountState::new(&task.account_id, &policy.default_timezone));
    let summary = state.summary(now);
    if task.kind == TaskKind::InstalmentExpiry {
        return FireOutcome::InstalmentDue {
            cause: crate::instalment_due_cause(task),
        };
    }
    if task.kind.is_internal() {
        return FireOutcome::Expired {
            message: expiry_message(task, now),
        };
    }
    let tz = state.zone();
    if let Some(label) = state.forbidden(
        task.kind,
        task.channel,
        task.contact_point_id.as_deref(),
        now,
    ) {
        // A hold or restriction in force now forbids it (its event was applied after
        // the plan): never fired; cancelled with the hold's or restriction's label.
        let cancelled = task.revised();
        return FireOutcome::Cancelled {
            message: task_message(
                TaskState::Cancelled,
                &cancelled,
                &summary,
                now,
                Some(&label),
            ),
            journal: JournalEntry {
                kind: "task_cancelled",
                detail: format!(
                    "{} {} cancelled at firing time: {label}",
                    task.kind, task.task_id
                ),
                task_id: Some(task.task_id),
            },
            task: Box::new(cancelled),
            reason: label,
        };
    }
    let w = state.window(&policy.contact_window, now);
    if task.kind.contacts_customer() && !window::is_allowed(now, &tz, &w) {
        // Late (an outage, a backlog) and now outside the window: never fire; move it.
        let due_at = window::next_allowed(now, &tz, &w);
        return moved(
            task,
            due_at,
            "moved: came due outside the contact window",
            "outside the contact window at firing time",
            (&state, policy),
            now,
        );
    }
    if task.channel.is_phone() {
        // Calls fired and contacts reported since the plan may have used up the caps (the
        // debtor's conversations today, the contact point's unanswered attempts).
        let (due_at, why) =
            crate::caps::first_allowed(now, &state, &[], policy, crate::caps::Call::of(task));
        if due_at > now {
            // Up, not down: the stored instant keeps whole microseconds, and one rounded
            // down could be the very instant being fired, moved to itself for ever.
            let due_at = ceil_micros(due_at);
            let why = why.unwrap_or_else(|| "deferred by the frequency caps".to_owned());
            return moved(
                task,
                due_at,
                &format!("moved at firing time: {why}"),
                "over a frequency cap at firing time",
                (&state, policy),
                now,
            );
        }
    }
    FireOutcome::Due {
        // Firing is a change: the stored row takes this revision when it is marked emitted.
        message: task_message(TaskState::Due, &task.revised(), &summary, now, None),
        follow_up: task.channel.is_phone() || task.kind == TaskKind::CollectionCall,
    }
}

fn ceil_micros(t: Timestamp) -> Timestamp {
    t.round(
        jiff::TimestampRound::new()
            .smallest(jiff::Unit::Microsecond)
            .mode(jiff::RoundMode::Ceil),
    )
    .unwrap_or(t)
}

fn moved(
    old: &Task,
    due_at: Timestamp,
    suffix: &str,
    journal_why: &str,
    (state, policy): (&AccountState, &Policy),
    now: Timestamp,
) -> FireOutcome {
    let mut task = old.revised();
    task.due_at = due_at;
    task.reason = format!("{} ({suffix})", task.reason);
    // The rank follows the day the task is now due ("promise due today" is judged for
    // that day), as it does when a task is planned.
    task.priority = crate::decide::priority_at(state, policy, due_at);
    // A new event, even if the new time equals an earlier plan: its id names the move.
    let id = Uuid::new_v5(
        &task.task_id,
        format!("moved-from:{}", old.due_at).as_bytes(),
    );
    let message = task_message_with_id(
        id,
        TaskState::Scheduled,
        &task,
        &state.summary(now),
        now,
        None,
    );
    let rank = if task.priority == old.priority {
        String::new()
    } else {
        format!(", priority {} -> {}", old.priority, task.priority)
    };
    let journal = JournalEntry {
        kind: "task_moved",
        detail: format!(
            "{} {} moved to {due_at}{rank}: {journal_why}",
            task.kind, task.task_id
        ),
        task_id: Some(task.task_id),
    };
    FireOutcome::Moved {
        task: Box::new(task),
        message,
        journal,
    }
}
