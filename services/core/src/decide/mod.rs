//! The rules: what an event does to an account and which tasks follow.
//!
//! [`decide`] applies one inbound event, [`on_call_fired`] completes a fired call. Both
//! run a `Planner` over the account's state and open tasks; this module holds the
//! decision types and the planner's shared steps (planning a task within the window and
//! the caps, cancelling, escalating, finishing into a [`Decision`]). The rule of each
//! event lives in its own module:
//!
//! - `payment_failed`: a failed debit opens a collection run;
//! - `promise_made`: a promise pauses calls and plans its reminder, check and expiry;
//! - `promise_broken`: a broken promise escalates the tone and calls again;
//! - `payment_received`: money keeps promises and cures;
//! - `call_fired`: a fired call counts and plans the next attempt;
//! - `contact_attempted`: the ledger, contact outcomes, caps reached, lost contact;
//! - `priority`: the work-order rank and the phone of each attempt.

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use crate::{
    caps::Call,
    contact::Attempt,
    event::{ContactChannel, Event, EventBody},
    outbound::{task_message, task_message_with_id, OutboundMessage, TaskState},
    policy::Policy,
    state::{bucket, AccountState, Status},
    task::{Channel, Task, TaskKind, Tone},
    window,
};

mod arrangements;
mod call_fired;
mod contact_attempted;
mod holds;
mod payment_failed;
mod payment_received;
mod priority;
mod promise_broken;
mod promise_made;

pub use arrangements::{instalment_due_cause, on_instalment_due};
pub use call_fired::on_call_fired;
pub use contact_attempted::reflow;
pub use priority::{channel_for_attempt, priority_at};

/// Journal kind of a call the backstop planned because no rule left the delinquent
/// account a next step (see `Planner::ensure_next_step`).
pub const NEXT_STEP_BACKSTOP: &str = "next_step_backstop";

/// The event cannot be applied to this account as it stands (goes to the dead-letter queue).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DomainError(pub String);

/// One line of the per-account collection note.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    /// Short machine-readable kind (`event_applied`, `task_planned`, ...).
    pub kind: &'static str,
    /// Human-readable line (no personal data).
    pub detail: String,
    /// Task concerned, if any.
    pub task_id: Option<Uuid>,
}

/// A task to cancel and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Cancellation {
    /// Task id.
    pub task_id: Uuid,
    /// Why.
    pub reason: String,
}

/// Everything the shell must write in one transaction.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Account state after the event.
    pub state: AccountState,
    /// New tasks.
    pub schedule: Vec<Task>,
    /// Open tasks to cancel.
    pub cancel: Vec<Cancellation>,
    /// Collection-note lines, in order.
    pub journal: Vec<JournalEntry>,
    /// Task events to publish through the outbox, in order.
    pub outbox: Vec<OutboundMessage>,
    /// Open tasks whose priority changed with the account: (task, new priority).
    pub reprioritise: Vec<(Uuid, u8)>,
    /// Contact attempts to record in the debtor's ledger (a correction replaces the
    /// attempt with the same id).
    pub ledger: Vec<Attempt>,
}

/// One decision in the making: the account as it stands, what is planned and cancelled so
/// far, and the journal. Each event's rule is a method in its own module.
struct Planner<'a> {
    /// Id of what caused this decision (an inbound event, or a fired task's `task.due`).
    cause: Uuid,
    /// The namespace of the ids of the tasks this decision plans: unique to the cause. For
    /// an inbound event its id and source together (CloudEvents' identity: two sources
    /// may use one id), for a fired task the id of its `task.due`.
    ids: Uuid,
    policy: &'a Policy,
    now: Timestamp,
    /// When the cause happened upstream (the event's `time`), never after `now`.
    event_time: Timestamp,
    state: AccountState,
    open: Vec<Task>,
    schedule: Vec<Task>,
    cancel: Vec<(Task, String)>,
    journal: Vec<JournalEntry>,
    /// Attempts to record in the debtor's ledger.
    ledger: Vec<Attempt>,
    /// Events the service publishes on `collections.events` (`arrangement.broken`,
    /// `arrangement.kept`), after the task events.
    outcomes: Vec<OutboundMessage>,
}

impl<'a> Planner<'a> {
    fn new(
        cause: Uuid,
        ids: Uuid,
        policy: &'a Policy,
        now: Timestamp,
        state: AccountState,
        open: &[Task],
    ) -> Self {
        Planner {
            cause,
            ids,
            policy,
            now,
            event_time: now,
            state,
            open: open.to_vec(),
            schedule: Vec::new(),
            cancel: Vec::new(),
            journal: Vec::new(),
            ledger: Vec::new(),
            outcomes: Vec::new(),
        }
    }
}

/// Applies one event to one account.
///
/// `prev` is `None` for an account never seen; `open` are the account's tasks still
/// scheduled. `now` is the decision instant (the shell's clock).
///
/// # Errors
/// [`DomainError`] when the event contradicts the account (a currency other than the
/// account's); the event is then dead-lettered and nothing changes.
///
/// Tasks planned record the policy's [`Policy::version`], which the policy computes once.
pub fn decide(
    prev: Option<&AccountState>,
    open: &[Task],
    event: &Event,
    policy: &Policy,
    now: Timestamp,
) -> Result<Decision, DomainError> {
    let state = prev.cloned().unwrap_or_else(|| {
        let tz = match &event.body {
            EventBody::PaymentFailed(d) => d.customer.timezone.clone(),
            _ => None,
        };
        AccountState::new(
            &event.account_id,
            tz.as_deref().unwrap_or(&policy.default_timezone),
        )
    });
    let mut p = Planner::new(
        event.id,
        Uuid::new_v5(&event.id, format!("source:{}", event.source).as_bytes()),
        policy,
        now,
        state,
        open,
    );
    p.event_time = event.time.min(now);
    match &event.body {
        EventBody::PaymentFailed(d) => p.payment_failed(d)?,
        EventBody::PromiseMade(d) => p.promise_made(d)?,
        EventBody::PromiseBroken(d) => p.promise_broken(d),
        EventBody::PaymentReceived(d) => p.payment_received(d)?,
        EventBody::ContactAttempted(d) => p.contact_attempted(d, prev.is_some()),
        EventBody::HoldPlaced(d) => p.hold_placed(d),
        EventBody::HoldReleased(d) => p.hold_released(d),
        EventBody::ContactRestricted(d) => p.contact_restricted(d),
        EventBody::ContactUnrestricted(d) => p.contact_unrestricted(d),
        EventBody::ArrangementMade(d) => p.arrangement_made(d)?,
        EventBody::ArrangementCancelled(d) => p.arrangement_cancelled(d),
        EventBody::PaymentReversed(d) => p.payment_reversed(d)?,
    }
    Ok(p.finish())
}

impl Planner<'_> {
    fn note(&mut self, kind: &'static str, detail: impl Into<String>) {
        self.journal.push(JournalEntry {
            kind,
            detail: detail.into(),
            task_id: None,
        });
    }

    fn check_currency(&mut self, m: crate::Money) -> Result<(), DomainError> {
        match self.state.currency {
            Some(c) if c != m.currency => Err(DomainError(format!(
                "amount in {} but the account is kept in {c}",
                m.currency
            ))),
            Some(_) => Ok(()),
            None => {
                self.state.currency = Some(m.currency);
                Ok(())
            }
        }
    }

    fn tone(&self) -> Tone {
        let bucket = bucket(self.state.dpd(self.now));
        // A refusal to pay escalates like a broken promise.
        self.policy.escalation.tone(
            self.state
                .broken_promises
                .saturating_add(self.state.refusals),
            bucket,
        )
    }

    fn priority(&self, at: Timestamp) -> u8 {
        priority_at(&self.state, self.policy, at)
    }

    fn has_open(&self, kind: TaskKind) -> Option<&Task> {
        self.open
            .iter()
            .chain(self.schedule.iter())
            .find(|t| t.kind == kind)
    }

    fn cancel_where(&mut self, reason: &str, pred: impl Fn(&Task) -> bool) {
        let (gone, keep): (Vec<Task>, Vec<Task>) =
            std::mem::take(&mut self.open).into_iter().partition(pred);
        self.open = keep;
        for t in gone {
            self.journal.push(JournalEntry {
                kind: "task_cancelled",
                detail: format!("{} {} cancelled: {reason}", t.kind, t.task_id),
                task_id: Some(t.task_id),
            });
            self.cancel.push((t, reason.to_owned()));
        }
    }

    /// Plans a task at `due_at` (moved by the frequency caps when they apply); its
    /// priority follows from the account and the day it is due. Returns whether it was
    /// planned: a contact task is not while a hold stopping all contact is in force at
    /// its instant, nor when every channel it could use is forbidden (the journal says
    /// so); a forbidden channel falls back to an allowed one, and agreed hours move it
    /// inside them.
    fn plan(
        &mut self,
        kind: TaskKind,
        channel: Channel,
        due_at: Timestamp,
        reason: String,
        promise_id: Option<&str>,
    ) -> bool {
        let (channel, due_at, reason) = if kind.contacts_customer() && !kind.is_internal() {
            match self.allowed_contact(kind, channel, due_at, reason) {
                Some(x) => x,
                None => return false,
            }
        } else {
            (channel, due_at, reason)
        };
        let n = self.schedule.len();
        // A call to the debtor goes to a contact point that can be reached (the channel
        // mix falls back to another phone when every known point of this one is retired
        // or has had its unanswered attempts for the day), within the caps.
        let (channel, point) = if channel.is_phone() {
            self.choose_phone(channel, due_at)
        } else {
            (channel, None)
        };
        let (due_at, reason) = if channel.is_phone() {
            let call = Call {
                point: point.as_deref(),
                consented: kind == TaskKind::Callback,
            };
            let (at, why) = self.capped(due_at, call);
            match why {
                Some(why) => (at, format!("{reason} ({why})")),
                None => (at, reason),
            }
        } else {
            (due_at, reason)
        };
        // Postgres keeps microseconds: plan at that precision so stored and simulated
        // timelines are identical.
        let due_at = due_at
            .round(
                jiff::TimestampRound::new()
                    .smallest(jiff::Unit::Microsecond)
                    .mode(jiff::RoundMode::Trunc),
            )
            .unwrap_or(due_at);
        let priority = self.priority(due_at);
        let task_id = Uuid::new_v5(&self.ids, format!("{kind}:{n}").as_bytes());
        let task = Task {
            task_id,
            account_id: self.state.account_id.clone(),
            kind,
            channel,
            due_at,
            priority,
            tone: self.tone(),
            reason,
            promise_id: promise_id.map(str::to_owned),
            cause_event_id: self.cause,
            attempt: 1,
            policy_version: self.policy.version().to_owned(),
            revision: Task::FIRST_REVISION,
            contact_point_id: point,
        };
        self.journal.push(JournalEntry {
            kind: "task_planned",
            detail: format!(
                "{kind} via {channel} at {due_at}, priority {priority}, tone {}: {}",
                task.tone, task.reason
            ),
            task_id: Some(task_id),
        });
        self.schedule.push(task);
        true
    }

    /// The channel, instant and reason a contact task may take under the holds and
    /// restrictions in force at `at`, or `None` (journaled) when it may not be planned.
    fn allowed_contact(
        &mut self,
        kind: TaskKind,
        channel: Channel,
        at: Timestamp,
        reason: String,
    ) -> Option<(Channel, Timestamp, String)> {
        if let Some(label) = self
            .state
            .full_hold_at(at)
            .map(crate::hold::HoldRecord::label)
        {
            self.note("decision", format!("{kind} not planned: {label} in force"));
            return None;
        }
        let mut channel = channel;
        let mut reason = reason;
        if let Some(label) = self.state.forbidden(kind, channel, None, at) {
            let phones = [Channel::PhoneMobile, Channel::PhoneWork, Channel::PhoneHome];
            let messages = matches!(
                kind,
                TaskKind::PromiseReminder | TaskKind::PromiseCheck | TaskKind::PreDueReminder
            );
            let candidates: Vec<Channel> = match channel {
                c if c.is_phone() => phones
                    .into_iter()
                    .filter(|p| *p != c)
                    .chain(messages.then_some(Channel::Sms))
                    .collect(),
                Channel::Sms => phones.to_vec(),
                _ => Vec::new(),
            };
            match candidates
                .into_iter()
                .find(|c| self.state.forbidden(kind, *c, None, at).is_none())
            {
                Some(c) => {
                    reason = format!("{reason} (by {c}: {label})");
                    channel = c;
                }
                None => {
                    self.note(
                        "decision",
                        format!("{kind} not planned: {label}, and no other channel is allowed"),
                    );
                    return None;
                }
            }
        }
        let w = self.state.window(&self.policy.contact_window, at);
        if w.narrowed_to.is_some() {
            let inside = window::next_allowed(at, &self.state.zone(), &w);
            if inside != at {
                reason = format!("{reason} (moved into the hours the debtor agreed to)");
            }
            return Some((channel, inside, reason));
        }
        Some((channel, at, reason))
    }

    fn next_allowed(&self, at: Timestamp) -> Timestamp {
        let w = self.state.window(&self.policy.contact_window, at);
        window::next_allowed(at, &self.state.zone(), &w)
    }

    /// The first instant at or after `at` (already inside the window) at which a call
    /// keeps the frequency caps, counting fired calls and the phone tasks already planned.
    fn capped(&self, at: Timestamp, call: Call<'_>) -> (Timestamp, Option<String>) {
        let planned: Vec<Timestamp> = self
            .open
            .iter()
            .chain(self.schedule.iter())
            .filter(|t| t.channel.is_phone() && t.kind != TaskKind::Callback)
            .map(|t| t.due_at)
            .collect();
        crate::caps::first_allowed(at, &self.state, &planned, self.policy, call)
    }

    /// The phone and contact point for a call to the debtor wanted on `channel` at `at`:
    /// the channel's point that last reached the debtor, else its first usable one; when
    /// every known point of the channel is retired or has had its unanswered attempts for
    /// the day, the next phone of the mix that has a usable point or none known yet. No
    /// point is named when the ledger knows none of the channel.
    fn choose_phone(&self, channel: Channel, at: Timestamp) -> (Channel, Option<String>) {
        let points = self.state.ledger.points();
        if points.is_empty() {
            return (channel, None);
        }
        let tz = self.state.zone();
        let day = crate::contact::local_day(at, &tz);
        let max = self
            .policy
            .contacts
            .max_unanswered_per_contact_point_per_day;
        let usable = |id: &str, p: &crate::contact::PointView| {
            !p.retired
                && (max == 0 || self.state.ledger.unanswered_on(id, day, &tz) < max)
                && self
                    .state
                    .forbidden(TaskKind::CollectionCall, channel, Some(id), at)
                    .is_none()
        };
        let phones = [Channel::PhoneMobile, Channel::PhoneWork, Channel::PhoneHome];
        for ch in std::iter::once(channel).chain(phones.into_iter().filter(|c| *c != channel)) {
            let cc = contact_channel(ch);
            let mut known: Vec<(&str, &crate::contact::PointView)> = points
                .iter()
                .filter(|(_, p)| Some(p.channel) == cc)
                .map(|(id, p)| (*id, p))
                .collect();
            if known.is_empty() {
                return (ch, None);
            }
            known.sort_by_key(|(id, p)| (std::cmp::Reverse(p.last_reached), *id));
            if let Some((id, _)) = known.iter().find(|(id, p)| usable(id, p)) {
                return (ch, Some((*id).to_owned()));
            }
        }
        // Nothing usable today: the wanted phone's first live point, which the caps move
        // to a day it can be tried (or, every point retired, no point at all).
        let live = points
            .iter()
            .find(|(_, p)| Some(p.channel) == contact_channel(channel) && !p.retired)
            .map(|(id, _)| (*id).to_owned());
        (channel, live)
    }

    /// Opens the tasks of the bucket escalation step in force, once per step.
    fn open_bucket_escalations(&mut self) {
        let bucket = bucket(self.state.dpd(self.now));
        let Some(step) = self.policy.escalation.bucket_step(bucket).cloned() else {
            return;
        };
        for kind in step.open {
            let key = format!("{}:{kind}", step.from);
            if self.state.bucket_escalations.contains(&key) || self.has_open(kind).is_some() {
                continue;
            }
            self.state.bucket_escalations.insert(key);
            self.plan_escalation(
                kind,
                format!("account in {bucket} (escalation from {})", step.from),
            );
        }
    }

    /// Plans one escalation task of `kind` (third-party call, visit, letter, review).
    /// A third party who refused is never called again (domain rule 8).
    fn plan_escalation(&mut self, kind: TaskKind, why: String) {
        if let Some(label) = self
            .state
            .full_hold_at(self.now)
            .map(crate::hold::HoldRecord::label)
        {
            self.note(
                "decision",
                format!("{why}: no {kind}, the escalation is frozen while {label} is in force"),
            );
            return;
        }
        if kind == TaskKind::ThirdPartyCall && self.state.third_party_refused {
            self.note(
                "decision",
                format!("{why}: no third-party call, a contact person refused"),
            );
            return;
        }
        let (channel, what) = match kind {
            TaskKind::ThirdPartyCall => (
                Channel::ContactPerson,
                "ask a contact person to pass a message (never disclose the debt)",
            ),
            TaskKind::FieldVisit => (Channel::Visit, "field visit"),
            TaskKind::FormalLetter => (Channel::Letter, "formal letter"),
            _ => (Channel::None, "supervisor review"),
        };
        let due = if kind.contacts_customer() {
            self.next_allowed(self.now)
        } else {
            self.now
        };
        self.plan(kind, channel, due, format!("{why}: {what}"), None);
    }

    /// A broken promise reported at `reported` was counted late (its queue was behind):
    /// the open tasks of promises made after it, and the open call when a later promise
    /// cancelled the calls before it, were planned in the tone of one broken promise
    /// fewer, so they are cancelled and planned again, at the same instants, in the tone
    /// in force.
    ///
    /// `calls`: whether the open call counts among them.
    fn replan_for_tone(&mut self, reported: Timestamp, calls: bool, why: &str) {
        let tone = self.tone();
        let later: Vec<&str> = self
            .state
            .promises
            .iter()
            .filter(|p| p.made_at.is_some_and(|m| m > reported))
            .map(|p| p.promise_id.as_str())
            .collect();
        let stale: Vec<Task> = self
            .open
            .iter()
            .filter(|t| {
                t.tone != tone
                    && ((calls && t.kind == TaskKind::CollectionCall)
                        || t.promise_id
                            .as_deref()
                            .is_some_and(|id| later.contains(&id)))
            })
            .cloned()
            .collect();
        if stale.is_empty() {
            return;
        }
        let ids: Vec<Uuid> = stale.iter().map(|t| t.task_id).collect();
        let reason = format!("{why}: planned again in the {tone} tone");
        self.cancel_where(&reason, |t| ids.contains(&t.task_id));
        for t in stale {
            if self.plan(
                t.kind,
                t.channel,
                t.due_at,
                format!("{} ({reason})", t.reason),
                t.promise_id.as_deref(),
            ) {
                if let Some(planned) = self.schedule.last_mut() {
                    planned.attempt = t.attempt;
                }
            }
        }
    }

    fn plan_collection_call(&mut self, why: String) {
        // Under a hold whose release is known, the call waits for its end.
        let from = self.state.contact_resumes_at(self.now).unwrap_or(self.now);
        let mut due = self.next_allowed(from);
        let mut moved = if due == self.now {
            String::new()
        } else if due == from {
            format!(" (when the hold ends at {from})")
        } else {
            " (moved into the contact window)".to_owned()
        };
        // The daily attempt cap holds for calls an event plans too, not only for the
        // cadence: over it, the call waits for tomorrow's first cadence hour.
        let tz = self.state.zone();
        let day = due.to_zoned(tz.clone()).date();
        if self.state.calls_day == Some(day)
            && self.state.calls_today >= self.policy.cadence.attempts_per_day
        {
            let first = self.policy.cadence.hours[0];
            if let Some(at) = day
                .tomorrow()
                .ok()
                .and_then(|d| d.to_datetime(first).to_zoned(tz).ok())
            {
                due = self.next_allowed(at.timestamp());
                moved = format!(
                    " (daily attempt cap of {} reached: tomorrow {} local)",
                    self.policy.cadence.attempts_per_day,
                    first.strftime("%H:%M")
                );
            }
        }
        // The first attempt of a run takes the phone the channel mix gives attempt 1.
        let channel = channel_for_attempt(1, &self.policy.channel_mix);
        self.plan(
            TaskKind::CollectionCall,
            channel,
            due,
            format!("{why}{moved}"),
            None,
        );
        self.open_bucket_escalations();
    }

    /// The backstop of domain rule "no delinquent account without a next step": when a
    /// decision leaves a delinquent account with no promise pending and no follow-up
    /// (a call, an escalation, a check, a review) open or planned, a collection call is
    /// planned, and the journal says the backstop did it (`next_step_backstop`), so a rule
    /// that forgot the next step shows in the notes and the property tests.
    fn ensure_next_step(&mut self) {
        if self.state.status != Status::Delinquent
            || self.state.open_promise().is_some()
            || self.state.open_arrangement().is_some()
            || self.state.contact_resumes_at(self.now).is_none()
        {
            // A hold that stops all contact with no known end has its review as the next
            // step; one whose release is known gets the call after it.
            return;
        }
        let follow_up = self
            .open
            .iter()
            .chain(self.schedule.iter())
            .any(|t| !matches!(t.kind, TaskKind::PreDueReminder | TaskKind::PromiseExpiry));
        if follow_up {
            return;
        }
        self.note(
            NEXT_STEP_BACKSTOP,
            "delinquent with no promise pending and no follow-up open: a call is planned",
        );
        self.plan_collection_call(
            "delinquent with no promise pending and no follow-up open".to_owned(),
        );
    }

    fn finish(mut self) -> Decision {
        self.ensure_next_step();
        let summary = self.state.summary(self.now);
        // Priority follows the account (domain.md rule 2): open tasks whose rank changed
        // with this decision are updated and re-announced.
        let reprioritised: Vec<Task> = self
            .open
            .iter()
            .filter(|t| !t.kind.is_internal())
            .filter_map(|t| {
                let p = self.priority(t.due_at);
                (p != t.priority).then(|| Task {
                    priority: p,
                    ..t.revised()
                })
            })
            .collect();
        let mut outbox = Vec::with_capacity(self.cancel.len() + self.schedule.len());
        for (t, reason) in self.cancel.iter().filter(|(t, _)| !t.kind.is_internal()) {
            outbox.push(task_message(
                TaskState::Cancelled,
                &t.revised(),
                &summary,
                self.now,
                Some(reason),
            ));
        }
        for t in self.schedule.iter().filter(|t| !t.kind.is_internal()) {
            outbox.push(task_message(
                TaskState::Scheduled,
                t,
                &summary,
                self.now,
                None,
            ));
        }
        for t in &reprioritised {
            // A new event for the same plan: its id names the new rank.
            let id = Uuid::new_v5(
                &t.task_id,
                format!("priority:{}:{}", t.priority, self.cause).as_bytes(),
            );
            outbox.push(task_message_with_id(
                id,
                TaskState::Scheduled,
                t,
                &summary,
                self.now,
                None,
            ));
        }
        outbox.append(&mut self.outcomes);
        Decision {
            ledger: self.ledger,
            reprioritise: reprioritised
                .iter()
                .map(|t| (t.task_id, t.priority))
                .collect(),
            state: self.state,
            schedule: self.schedule,
            cancel: self
                .cancel
                .into_iter()
                .map(|(t, reason)| Cancellation {
                    task_id: t.task_id,
                    reason,
                })
                .collect(),
            journal: self.journal,
            outbox,
        }
    }
}

/// Convenience for tests and the simulator: a duration in whole hours.
#[must_use]
pub fn hours(h: i64) -> SignedDuration {
    SignedDuration::from_hours(h)
}

/// The ledger's name for a task's phone channel.
fn contact_channel(c: Channel) -> Option<ContactChannel> {
    match c {
        Channel::PhoneMobile => Some(ContactChannel::PhoneMobile),
        Channel::PhoneWork => Some(ContactChannel::PhoneWork),
        Channel::PhoneHome => Some(ContactChannel::PhoneHome),
        Channel::Sms => Some(ContactChannel::Sms),
        Channel::ContactPerson => Some(ContactChannel::ContactPerson),
        Channel::Visit => Some(ContactChannel::Visit),
        Channel::Letter | Channel::None => None,
    }
}
