//! The rules: what an event does to an account and which tasks follow.
//!
//! One function, [`decide`], per event. It receives the account state before the event,
//! the account's open tasks, the policy and the instant to decide at, and returns the new
//! state, tasks to plan and cancel, journal lines and the messages to publish.

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use crate::{
    event::{Event, EventBody, PaymentFailed, PaymentReceived, PromiseBroken, PromiseMade},
    outbound::{task_message, task_message_with_id, OutboundMessage, TaskState},
    policy::{Policy, PriorityCriterion},
    state::{bucket, AccountState, PromiseRecord, PromiseStatus, Status},
    task::{Channel, Task, TaskKind, Tone},
    window,
};

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
}

struct Planner<'a> {
    /// Id of what caused this decision (an inbound event, or a fired task's `task.due`).
    cause: Uuid,
    policy: &'a Policy,
    now: Timestamp,
    /// When the cause happened upstream (the event's `time`), never after `now`.
    event_time: Timestamp,
    version: String,
    state: AccountState,
    open: Vec<Task>,
    schedule: Vec<Task>,
    cancel: Vec<(Task, String)>,
    journal: Vec<JournalEntry>,
}

/// Applies one event to one account.
///
/// `prev` is `None` for an account never seen; `open` are the account's tasks still
/// scheduled. `now` is the decision instant (the shell's clock).
///
/// # Errors
/// [`DomainError`] when the event contradicts the account (a currency other than the
/// account's); the event is then dead-lettered and nothing changes.
pub fn decide(
    prev: Option<&AccountState>,
    open: &[Task],
    event: &Event,
    policy: &Policy,
    now: Timestamp,
) -> Result<Decision, DomainError> {
    decide_versioned(prev, open, event, policy, &policy.version(), now)
}

/// [`decide`] with the policy's [`Policy::version`] computed by the caller, which hashes
/// the whole policy: a shell deciding a batch of events computes it once per batch.
///
/// # Errors
/// As [`decide`].
pub fn decide_versioned(
    prev: Option<&AccountState>,
    open: &[Task],
    event: &Event,
    policy: &Policy,
    version: &str,
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
    let mut p = Planner {
        cause: event.id,
        policy,
        now,
        event_time: event.time.min(now),
        version: version.to_owned(),
        state,
        open: open.to_vec(),
        schedule: Vec::new(),
        cancel: Vec::new(),
        journal: Vec::new(),
    };
    match &event.body {
        EventBody::PaymentFailed(d) => p.payment_failed(d)?,
        EventBody::PromiseMade(d) => p.promise_made(d)?,
        EventBody::PromiseBroken(d) => p.promise_broken(d),
        EventBody::PaymentReceived(d) => p.payment_received(d)?,
    }
    Ok(p.finish())
}

/// What happens when a collection call fires (its `task.due` is out): the attempt is
/// counted and, while the account is still delinquent with no open promise, the next
/// attempt is planned at the next cadence hour not yet tried today (else tomorrow's
/// first), through the channel the mix gives that attempt number, within the daily cap.
///
/// Any other task on a phone channel is only recorded as a call attempt (for the frequency
/// caps); see [`crate::fire::FireOutcome::Due`] for which fired tasks come here.
///
/// `due_event_id` (the fired task's `task.due` id) is the cause: planning again for the
/// same firing yields the same task id.
#[must_use]
pub fn on_call_fired(
    state: &AccountState,
    open: &[Task],
    fired: &Task,
    due_event_id: Uuid,
    policy: &Policy,
    now: Timestamp,
) -> Decision {
    on_call_fired_versioned(
        state,
        open,
        fired,
        due_event_id,
        policy,
        &policy.version(),
        now,
    )
}

/// [`on_call_fired`] with the policy's [`Policy::version`] computed by the caller (once
/// per firing batch rather than once per call).
#[must_use]
pub fn on_call_fired_versioned(
    state: &AccountState,
    open: &[Task],
    fired: &Task,
    due_event_id: Uuid,
    policy: &Policy,
    version: &str,
    now: Timestamp,
) -> Decision {
    let mut p = Planner {
        cause: due_event_id,
        policy,
        now,
        event_time: now,
        version: version.to_owned(),
        state: state.clone(),
        open: open.to_vec(),
        schedule: Vec::new(),
        cancel: Vec::new(),
        journal: Vec::new(),
    };
    p.call_fired(fired);
    p.finish()
}

/// The rank (1 first) of the account's task due at `at`, by the policy's order (domain.md
/// rule 2 by default: first-instalment default; promise due today; able to pay part; large
/// balance; lost contact): the position of the first criterion the account meets, else
/// one past the list. "Promise due today" is judged for the day the task is due, in the
/// customer's calendar: a reminder due tomorrow for tomorrow's promise ranks as one, a
/// call due today for a promise next week does not.
#[must_use]
pub fn priority_at(state: &AccountState, policy: &Policy, at: Timestamp) -> u8 {
    let order = &policy.priority.order;
    let hit = order.iter().position(|c| match c {
        PriorityCriterion::FirstInstalmentDefault => state.first_installment_default,
        PriorityCriterion::PromiseDueToday => promise_due_on(state, at),
        PriorityCriterion::PartialPayer => state.partial_payer,
        PriorityCriterion::LargeBalance => {
            state.overdue_minor >= policy.priority.large_balance_minor
        }
        // No upstream event says a debtor is unreachable yet.
        PriorityCriterion::LostContact => false,
    });
    u8::try_from(hit.unwrap_or(order.len()) + 1).unwrap_or(u8::MAX)
}

fn promise_due_on(state: &AccountState, at: Timestamp) -> bool {
    let tz = state.zone();
    let day = at.to_zoned(tz.clone()).date();
    state
        .open_promise()
        .and_then(|p| p.promised_at)
        .is_some_and(|promised| promised.to_zoned(tz).date() == day)
}

/// The phone for a call attempt (1-based): a golden-ratio sequence over the mix, so every
/// run of attempts follows the configured shares closely and tests can predict it.
#[must_use]
pub fn channel_for_attempt(attempt: u32, mix: &crate::policy::ChannelMix) -> Channel {
    const GOLDEN: f64 = 0.618_033_988_749_894_9;
    let x = (f64::from(attempt.saturating_sub(1)) * GOLDEN).fract();
    if x < mix.phone_mobile {
        Channel::PhoneMobile
    } else if x < mix.phone_mobile + mix.phone_work {
        Channel::PhoneWork
    } else {
        Channel::PhoneHome
    }
}

impl Planner<'_> {
    fn call_fired(&mut self, fired: &Task) {
        let tz = self.state.zone();
        let local = self.now.to_zoned(tz.clone());
        let today = local.date();
        if fired.channel.is_phone() {
            crate::caps::record_call(&mut self.state, self.now);
        }
        if fired.kind != TaskKind::CollectionCall {
            self.journal.push(JournalEntry {
                kind: "call_fired",
                detail: format!("{} due via {}", fired.kind, fired.channel),
                task_id: Some(fired.task_id),
            });
            return;
        }
        self.state.calls_fired += 1;
        if self.state.calls_day == Some(today) {
            self.state.calls_today += 1;
        } else {
            self.state.calls_day = Some(today);
            self.state.calls_today = 1;
        }
        self.journal.push(JournalEntry {
            kind: "call_fired",
            detail: format!(
                "collection call attempt {} due via {} ({} today)",
                fired.attempt, fired.channel, self.state.calls_today
            ),
            task_id: Some(fired.task_id),
        });
        if self.state.status != Status::Delinquent {
            self.note("decision", "no next attempt: the account is not delinquent");
            return;
        }
        if let Some(p) = self.state.open_promise() {
            let detail = format!("no next attempt: promise {} is open", p.promise_id);
            self.note("decision", detail);
            return;
        }
        if let Some(t) = self
            .open
            .iter()
            .find(|t| t.kind == TaskKind::CollectionCall && t.task_id != fired.task_id)
        {
            let detail = format!("no next attempt: call {} is already open", t.task_id);
            self.note("decision", detail);
            return;
        }
        let cadence = self.policy.cadence.clone();
        let first = cadence.hours[0];
        let bucket = bucket(self.state.dpd(self.now));
        let gap = *cadence.days_between_attempts.get(bucket);
        let next_day = today
            .checked_add(jiff::Span::new().days(gap))
            .unwrap_or(today);
        let (day, hour, why) = if self.state.calls_today >= cadence.attempts_per_day {
            (next_day, first, "daily attempt cap reached")
        } else if let Some(h) = cadence.hours.iter().find(|h| **h > local.time()) {
            (today, *h, "next cadence hour today")
        } else {
            (next_day, first, "no cadence hour left today")
        };
        let why = if day == today || gap == 1 {
            why.to_owned()
        } else {
            format!("{why}; {bucket} calls every {gap} days")
        };
        let at = day
            .to_datetime(hour)
            .to_zoned(tz)
            .map(|z| z.timestamp())
            .unwrap_or(self.now);
        let due = self.next_allowed(at.max(self.now));
        let attempt = fired.attempt + 1;
        let channel = channel_for_attempt(attempt, &self.policy.channel_mix);
        self.plan(
            TaskKind::CollectionCall,
            channel,
            due,
            format!(
                "attempt {attempt}: {why}; vary the hour ({} local) and the phone",
                hour.strftime("%H:%M")
            ),
            None,
        );
        if let Some(t) = self.schedule.last_mut() {
            t.attempt = attempt;
        }
        self.open_bucket_escalations();
    }

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
        self.policy
            .escalation
            .tone(self.state.broken_promises, bucket)
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
    /// priority follows from the account and the day it is due.
    fn plan(
        &mut self,
        kind: TaskKind,
        channel: Channel,
        due_at: Timestamp,
        reason: String,
        promise_id: Option<&str>,
    ) {
        let n = self.schedule.len();
        let (due_at, reason) = if channel.is_phone() && self.policy.caps.active() {
            let (at, why) = self.capped(due_at);
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
        let task_id = Uuid::new_v5(&self.cause, format!("{kind}:{n}").as_bytes());
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
            policy_version: self.version.clone(),
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
    }

    fn next_allowed(&self, at: Timestamp) -> Timestamp {
        window::next_allowed(at, &self.state.zone(), &self.policy.contact_window)
    }

    /// The first instant at or after `at` (already inside the window) at which a call
    /// keeps the frequency caps, counting fired calls and the phone tasks already planned.
    fn capped(&self, at: Timestamp) -> (Timestamp, Option<String>) {
        let planned: Vec<Timestamp> = self
            .open
            .iter()
            .chain(self.schedule.iter())
            .filter(|t| t.channel.is_phone())
            .map(|t| t.due_at)
            .collect();
        crate::caps::first_allowed(at, &self.state, &planned, self.policy)
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
    fn plan_escalation(&mut self, kind: TaskKind, why: String) {
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

    fn plan_collection_call(&mut self, why: String) {
        let mut due = self.next_allowed(self.now);
        let mut moved = if due == self.now {
            String::new()
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

    /// The customer's zone became known (or changed) after tasks were planned in another:
    /// open tasks that contact the customer and now fall outside the window are cancelled
    /// and planned again inside it (a reminder still before its promise, or not at all).
    fn replan_for_zone(&mut self, previous: &str) {
        let tz = self.state.zone();
        let w = self.policy.contact_window.clone();
        let misplaced: Vec<Task> = self
            .open
            .iter()
            .filter(|t| t.kind.contacts_customer() && !window::is_allowed(t.due_at, &tz, &w))
            .cloned()
            .collect();
        if misplaced.is_empty() {
            return;
        }
        self.note(
            "decision",
            format!(
                "customer's zone is {} (tasks were planned in {previous}): {} open task(s) \
                 outside the contact window planned again",
                self.state.timezone,
                misplaced.len()
            ),
        );
        let ids: Vec<Uuid> = misplaced.iter().map(|t| t.task_id).collect();
        self.cancel_where("planned again in the customer's zone", |t| {
            ids.contains(&t.task_id)
        });
        for t in misplaced {
            let due = if t.kind == TaskKind::PromiseReminder {
                let promised = t
                    .promise_id
                    .as_deref()
                    .and_then(|id| self.state.promises.iter().find(|p| p.promise_id == id))
                    .and_then(|p| p.promised_at);
                let back = window::last_allowed_before(t.due_at, &tz, &w);
                let fwd = window::next_allowed(t.due_at.max(self.now), &tz, &w);
                if back > self.now {
                    Some(back)
                } else {
                    Some(fwd).filter(|f| promised.is_none_or(|p| *f < p))
                }
            } else {
                Some(window::next_allowed(t.due_at.max(self.now), &tz, &w))
            };
            let Some(due) = due else {
                self.note(
                    "decision",
                    format!(
                        "{} {} dropped: no allowed minute before the promise in the customer's zone",
                        t.kind, t.task_id
                    ),
                );
                continue;
            };
            self.plan(
                t.kind,
                t.channel,
                due,
                format!("{} (planned again in the customer's zone)", t.reason),
                t.promise_id.as_deref(),
            );
            if let Some(planned) = self.schedule.last_mut() {
                planned.attempt = t.attempt;
            }
        }
    }

    fn payment_failed(&mut self, d: &PaymentFailed) -> Result<(), DomainError> {
        self.check_currency(d.overdue_amount)?;
        if let Some(tz) = &d.customer.timezone {
            if *tz != self.state.timezone {
                let previous = std::mem::replace(&mut self.state.timezone, tz.clone());
                self.replan_for_zone(&previous);
            }
        }
        self.state.status = Status::Delinquent;
        self.state.overdue_minor = d.overdue_amount.minor;
        self.state.unpaid_due_dates.insert(d.installment.due_date);
        self.state.failed_payments += 1;
        self.state.failed_installments.insert(d.installment.number);
        self.cancel_where("the instalment it announced failed", |t| {
            t.kind == TaskKind::PreDueReminder
        });
        if d.installment.number == 1 {
            self.state.first_installment_default = true;
        }
        let dpd = self.state.dpd(self.now);
        self.note(
            "event_applied",
            format!(
                "payment.failed: instalment {} due {} failed ({}); overdue {}; DPD {dpd}",
                d.installment.number, d.installment.due_date, d.failure_reason, d.overdue_amount
            ),
        );
        if let Some(p) = self.state.open_promise() {
            let detail = format!(
                "no new call: promise {} is pending until {}",
                p.promise_id,
                p.promised_at.map(|t| t.to_string()).unwrap_or_default()
            );
            self.note("decision", detail);
            return Ok(());
        }
        if let Some(t) = self.has_open(TaskKind::CollectionCall) {
            let detail = format!("no new call: call {} is already open", t.task_id);
            self.note("decision", detail);
            return Ok(());
        }
        let fid = if d.installment.number == 1 {
            "first-instalment default: "
        } else {
            ""
        };
        self.plan_collection_call(format!(
            "{fid}instalment {} due {} failed ({}), overdue {}",
            d.installment.number, d.installment.due_date, d.failure_reason, d.overdue_amount
        ));
        Ok(())
    }

    fn promise_made(&mut self, d: &PromiseMade) -> Result<(), DomainError> {
        // A promise in another currency than the account's contradicts it: refused (to
        // the dead-letter queue) like a payment in another currency.
        self.check_currency(d.amount)?;
        if let Some(existing) = self.state.promise_mut(&d.promise_id) {
            let status = existing.status;
            if existing.amount.is_none() {
                existing.amount = Some(d.amount);
                existing.promised_at = Some(d.promised_at);
                existing.made_at = Some(self.event_time);
            }
            let detail = if status == PromiseStatus::Broken {
                format!(
                    "promise.made for {} after its promise.broken: recorded, nothing planned",
                    d.promise_id
                )
            } else {
                format!(
                    "promise.made for {} seen again (status {status:?}): no change",
                    d.promise_id
                )
            };
            self.note("event_applied", detail);
            return Ok(());
        }
        if self.state.status == Status::Current {
            self.state.status = Status::Delinquent;
        }
        // A promise is captured in a right-party conversation (frequency caps).
        if self
            .state
            .last_conversation_at
            .is_none_or(|c| c < self.event_time)
        {
            self.state.last_conversation_at = Some(self.event_time);
        }
        self.note(
            "event_applied",
            format!(
                "promise.made: {} to pay {} by {} (captured by {} via {})",
                d.promise_id, d.amount, d.promised_at, d.captured_by, d.channel
            ),
        );
        // Deliveries can be applied out of order: a promise made before one already
        // recorded (open, kept, broken or itself superseded) is stale on arrival, so the
        // customer's latest word stands and the late one plans nothing.
        let newer = self
            .state
            .promises
            .iter()
            .filter_map(|p| Some((p.promise_id.clone(), p.made_at?)))
            .filter(|(_, made_at)| *made_at > self.event_time)
            .max_by_key(|(_, made_at)| *made_at);
        if let Some((newer_id, newer_at)) = newer {
            self.state.promises.push(PromiseRecord {
                promise_id: d.promise_id.clone(),
                amount: Some(d.amount),
                promised_at: Some(d.promised_at),
                status: PromiseStatus::Superseded,
                paid_minor: 0,
                made_at: Some(self.event_time),
            });
            self.note(
                "promise_superseded",
                format!(
                    "{} (made at {}) arrived after the newer promise {newer_id} (made at \
                     {newer_at}): recorded superseded, nothing planned",
                    d.promise_id, self.event_time
                ),
            );
            return Ok(());
        }
        let superseded: Vec<String> = self
            .state
            .promises
            .iter_mut()
            .filter(|p| p.status == PromiseStatus::Open)
            .map(|p| {
                p.status = PromiseStatus::Superseded;
                p.promise_id.clone()
            })
            .collect();
        for old in superseded {
            self.note(
                "promise_superseded",
                format!("{old} superseded by {}", d.promise_id),
            );
            let reason = format!("promise {old} superseded by {}", d.promise_id);
            self.cancel_where(&reason, |t| t.promise_id.as_deref() == Some(old.as_str()));
        }
        let reason = format!("promise {} made", d.promise_id);
        self.cancel_where(&reason, |t| t.kind == TaskKind::CollectionCall);
        self.state.promises.push(PromiseRecord {
            promise_id: d.promise_id.clone(),
            amount: Some(d.amount),
            promised_at: Some(d.promised_at),
            status: PromiseStatus::Open,
            paid_minor: 0,
            made_at: Some(self.event_time),
        });
        self.plan_promise_tasks(d);
        Ok(())
    }

    fn plan_promise_tasks(&mut self, d: &PromiseMade) {
        let tz = self.state.zone();
        let w = self.policy.contact_window.clone();
        let rules = self.policy.promise.clone();
        let local = d.promised_at.to_zoned(tz.clone());
        let at_text = format!("{} {}", local.date(), local.time().strftime("%H:%M"));

        let remind_at = d.promised_at - rules.reminder_before;
        if remind_at <= self.now {
            self.note(
                "decision",
                format!("reminder skipped: its time {remind_at} has already passed"),
            );
        } else {
            // Prefer the last allowed minute before the ideal time, so the reminder still
            // precedes the promise; else the next allowed one if that is still before it.
            let back = window::last_allowed_before(remind_at, &tz, &w);
            let fwd = window::next_allowed(remind_at, &tz, &w);
            let due = if back == remind_at || back > self.now {
                Some(back)
            } else if fwd < d.promised_at {
                Some(fwd)
            } else {
                None
            };
            // A reminder call the caps would push past the promise is no reminder.
            let capped = due.filter(|due| {
                !(rules.reminder_channel.is_phone()
                    && self.policy.caps.active()
                    && self.capped(*due).0 >= d.promised_at)
            });
            if due.is_some() && capped.is_none() {
                self.note(
                    "decision",
                    "reminder skipped: the frequency caps allow no call before the promise",
                );
            }
            match capped {
                Some(due) => {
                    let moved = if due == remind_at {
                        ""
                    } else {
                        " (moved into the contact window)"
                    };
                    self.plan(
                        TaskKind::PromiseReminder,
                        rules.reminder_channel,
                        due,
                        format!(
                            "remind of promise {} to pay {} at {at_text} local{moved}",
                            d.promise_id, d.amount
                        ),
                        Some(&d.promise_id),
                    );
                }
                None if due.is_none() => self.note(
                    "decision",
                    "reminder skipped: no allowed minute between now and the promise",
                ),
                None => {}
            }
        }

        let check_at = d.promised_at + rules.check_after;
        let due = window::next_allowed(check_at, &tz, &w);
        let moved = if due == check_at {
            ""
        } else {
            " (moved into the contact window)"
        };
        self.plan(
            TaskKind::PromiseCheck,
            rules.check_channel,
            due,
            format!(
                "check that {} promised for {at_text} local arrived (promise {}){moved}",
                d.amount, d.promise_id
            ),
            Some(&d.promise_id),
        );

        // The service breaks an unkept promise itself once the grace has passed.
        self.plan(
            TaskKind::PromiseExpiry,
            Channel::None,
            d.promised_at + rules.grace,
            format!(
                "promise {} expires unless kept by promised time + {:#}",
                d.promise_id, rules.grace
            ),
            Some(&d.promise_id),
        );

        let ahead = d.promised_at.duration_since(self.now);
        if ahead > rules.max_horizon {
            let hours = ahead.as_secs() / 3600;
            self.plan(
                TaskKind::SupervisorReview,
                Channel::None,
                self.now,
                format!(
                    "promise {} is {hours} h ahead, beyond the {:#} horizon: possible delay tactic",
                    d.promise_id, rules.max_horizon
                ),
                Some(&d.promise_id),
            );
        }
    }

    fn promise_broken(&mut self, d: &PromiseBroken) {
        let status = self.state.promise_mut(&d.promise_id).map(|p| p.status);
        match status {
            Some(PromiseStatus::Broken) => {
                self.note(
                    "event_applied",
                    format!(
                        "promise.broken for {} again: already broken, no change",
                        d.promise_id
                    ),
                );
                return;
            }
            Some(s @ (PromiseStatus::Kept | PromiseStatus::Superseded)) => {
                self.note(
                    "event_applied",
                    format!(
                        "promise.broken for {} ({}) ignored: the promise is {s:?}",
                        d.promise_id, d.reason
                    ),
                );
                return;
            }
            Some(PromiseStatus::Open) => {
                if let Some(p) = self.state.promise_mut(&d.promise_id) {
                    p.status = PromiseStatus::Broken;
                }
            }
            None => {
                self.state.promises.push(PromiseRecord {
                    promise_id: d.promise_id.clone(),
                    amount: None,
                    promised_at: None,
                    status: PromiseStatus::Broken,
                    paid_minor: 0,
                    made_at: None,
                });
            }
        }
        self.state.broken_promises += 1;
        let n = self.state.broken_promises;
        let unknown = if status.is_none() {
            " (promise not seen before: recorded)"
        } else {
            ""
        };
        self.note(
            "event_applied",
            format!(
                "promise.broken: {} ({}){unknown}; {n} broken so far, tone now {}",
                d.promise_id,
                d.reason,
                self.tone()
            ),
        );
        let reason = format!("promise {} broken", d.promise_id);
        let pid = d.promise_id.clone();
        self.cancel_where(&reason, |t| t.promise_id.as_deref() == Some(pid.as_str()));
        if self.state.status == Status::Cured {
            self.note("decision", "account is cured: nothing planned");
            return;
        }
        if let Some(open) = self.state.open_promise() {
            let detail = format!("no new call: promise {} is pending", open.promise_id);
            self.note("decision", detail);
            return;
        }
        // Replace any open call by one in the escalated tone.
        self.cancel_where("replaced by an escalated call", |t| {
            t.kind == TaskKind::CollectionCall
        });
        self.plan_collection_call(format!(
            "promise {} broken ({}); {n} broken promise(s)",
            d.promise_id, d.reason
        ));
        let open = self
            .policy
            .escalation
            .broken_step(n)
            .map(|s| s.open.clone())
            .unwrap_or_default();
        for kind in open {
            if self.has_open(kind).is_none() {
                self.plan_escalation(kind, format!("{n} broken promises"));
            }
        }
    }

    fn payment_received(&mut self, d: &PaymentReceived) -> Result<(), DomainError> {
        self.check_currency(d.amount)?;
        let before = self.state.overdue_minor;
        self.state.overdue_minor = match d.overdue_amount_after {
            Some(after) => after.minor,
            None => (before - d.amount.minor).max(0),
        };
        self.state.last_payment = Some(crate::state::LastPayment {
            amount: d.amount,
            received_at: d.received_at,
        });
        let new_period = d
            .next_due_date
            .filter(|next| self.state.next_due_date != Some(*next));
        if let Some(next) = d.next_due_date {
            self.state.next_due_date = Some(next);
        }
        let after = self.state.overdue();
        self.note(
            "event_applied",
            format!(
                "payment.received: {} ({}) at {}; overdue now {after}",
                d.amount, d.payment_id, d.received_at
            ),
        );

        let grace = self.policy.promise.grace;
        let mut kept = None;
        if let Some(p) = self
            .state
            .promises
            .iter_mut()
            .find(|p| p.status == PromiseStatus::Open)
        {
            let deadline = p.promised_at.map(|t| t + grace);
            if deadline.is_some_and(|dl| d.received_at <= dl) {
                p.paid_minor += d.amount.minor;
                if p.amount.is_some_and(|a| p.paid_minor >= a.minor) {
                    p.status = PromiseStatus::Kept;
                    kept = Some(p.promise_id.clone());
                }
            }
        }
        if let Some(id) = &kept {
            self.note("promise_kept", format!("promise {id} kept"));
            let reason = format!("promise {id} kept");
            self.cancel_where(&reason, |t| t.promise_id.as_deref() == Some(id.as_str()));
        }

        if self.state.overdue_minor == 0 {
            if self.state.status == Status::Delinquent {
                self.state.status = Status::Cured;
                self.note("account_cured", "overdue paid in full: account cured");
            }
            for p in &mut self.state.promises {
                if p.status == PromiseStatus::Open {
                    p.status = PromiseStatus::Kept;
                }
            }
            self.state.unpaid_due_dates.clear();
            self.state.first_installment_default = false;
            self.state.partial_payer = false;
            self.cancel_where("account cured", |_| true);
        } else if self.state.status == Status::Delinquent {
            self.state.partial_payer = true;
            self.state.partial_this_period = true;
            self.note(
                "decision",
                format!("partial payment: {after} still overdue, plan kept, account can pay part"),
            );
        }
        if let Some(next) = new_period {
            self.plan_pre_due(next);
            // A new billing period starts with this announcement.
            self.state.partial_this_period = false;
        }
        Ok(())
    }

    /// Plans the reminder before the next due date that the account's segment calls for
    /// (domain.md rule 9), replacing an earlier one.
    fn plan_pre_due(&mut self, due_date: jiff::civil::Date) {
        let pd = self.policy.pre_due.clone();
        let seg = &self.policy.segments;
        let (segment, days) = if self.state.habitual_late_payer(
            seg.habitual_late_min_failures,
            seg.habitual_late_last_instalments,
        ) {
            (
                format!(
                    "habitual late payer (failed {} or more of the last {} instalments)",
                    seg.habitual_late_min_failures, seg.habitual_late_last_instalments
                ),
                pd.habitual_late_payer_days,
            )
        } else if self.state.partial_this_period {
            (
                "paid only part last period".to_owned(),
                pd.partial_payer_last_period_days,
            )
        } else {
            ("no risk segment".to_owned(), pd.other_days)
        };
        self.cancel_where("replaced by the reminder for the next due date", |t| {
            t.kind == TaskKind::PreDueReminder
        });
        if days == 0 {
            self.note(
                "decision",
                format!("no pre-due reminder for {due_date}: {segment}"),
            );
            return;
        }
        let tz = self.state.zone();
        let day = due_date
            .checked_sub(jiff::Span::new().days(days))
            .unwrap_or(due_date);
        let ideal = day
            .to_datetime(pd.at)
            .to_zoned(tz.clone())
            .map_or(self.now, |z| z.timestamp());
        let today = self.now.to_zoned(tz).date();
        let (at, late) = if ideal >= self.now {
            (ideal, "")
        } else if today < due_date {
            (self.now, " (late: its day has passed)")
        } else {
            self.note(
                "decision",
                format!("no pre-due reminder: due date {due_date} is not ahead"),
            );
            return;
        };
        let due = self.next_allowed(at);
        self.plan(
            TaskKind::PreDueReminder,
            pd.channel,
            due,
            format!("pre-due reminder {days} day(s) before {due_date}: {segment}{late}"),
            None,
        );
    }

    fn finish(self) -> Decision {
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
                    ..t.clone()
                })
            })
            .collect();
        let mut outbox = Vec::with_capacity(self.cancel.len() + self.schedule.len());
        for (t, reason) in self.cancel.iter().filter(|(t, _)| !t.kind.is_internal()) {
            outbox.push(task_message(
                TaskState::Cancelled,
                t,
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
        Decision {
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
