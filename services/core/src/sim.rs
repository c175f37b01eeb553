//! The simulator: replays a scenario of timestamped inbound events through the same rules
//! and policy on a virtual clock, firing due tasks in time order as the scheduler does,
//! with no broker and no database.
//!
//! Every rule is the service's own: events go through [`parse_event`] and [`decide`],
//! firing through [`fire`], fired calls through [`on_call_fired`], and an expired promise
//! comes back as the `promise.broken` event the scheduler would publish.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{
    contact::Ledger,
    decide::{decide, on_call_fired, reflow, Decision},
    event::{parse_event, Event},
    fire::{fire, FireOutcome},
    outbound::{OutboundMessage, TASKS_EXCHANGE},
    policy::Policy,
    state::AccountState,
    task::Task,
};

/// Namespace of the ids the simulator gives events that name none.
const SCENARIO_NS: Uuid = Uuid::from_u128(0x6c0f_3c1e_9a2b_4d5e_8f70_1a2b_3c4d_5e6f);

/// Most steps one simulation takes (a guard against a policy that loops).
const MAX_STEPS: usize = 100_000;

/// A refused scenario file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("scenario: {0}")]
pub struct ScenarioError(pub String);

/// One inbound event at the instant it is delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    /// Delivery instant (the virtual clock's `now` when it is decided).
    pub at: Timestamp,
    /// The event.
    pub event: Event,
}

/// A scenario: events in delivery order and how long to keep the clock running after.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// Policy file named by the scenario (relative to the scenario file), if any.
    pub policy: Option<String>,
    /// How long after the last event tasks keep firing.
    pub horizon: SignedDuration,
    /// The events, ordered by `at` (stable for equal instants).
    pub events: Vec<Timed>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    horizon: Option<String>,
    events: Vec<RawEvent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    id: Option<Uuid>,
    data: Value,
}

impl Scenario {
    /// A scenario from events already parsed (e.g. recorded as they were published).
    #[must_use]
    pub fn from_events(name: &str, events: Vec<Timed>, horizon: SignedDuration) -> Self {
        let mut events = events;
        events.sort_by_key(|e| e.at);
        Self {
            name: name.to_owned(),
            description: String::new(),
            policy: None,
            horizon,
            events,
        }
    }

    /// Parses a scenario file (TOML; see `deploy/scenarios/README.md`). Each event is
    /// wrapped in a CloudEvents envelope (`time` = `at`, `subject` = `data.account_id`)
    /// and parsed exactly as the workers parse what they consume.
    ///
    /// # Errors
    /// A [`ScenarioError`] naming the event and what is wrong with it.
    pub fn from_toml_str(text: &str) -> Result<Self, ScenarioError> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| ScenarioError(e.to_string()))?;
        let horizon = match &raw.horizon {
            Some(h) => parse_horizon(h)
                .ok_or_else(|| ScenarioError(format!("horizon {h:?} is not a duration")))?,
            None => SignedDuration::ZERO,
        };
        let mut events = Vec::with_capacity(raw.events.len());
        for (i, r) in raw.events.into_iter().enumerate() {
            let at: Timestamp = r.at.parse().map_err(|e| {
                ScenarioError(format!("events[{i}].at {:?} is not an instant: {e}", r.at))
            })?;
            let id = r.id.unwrap_or_else(|| {
                Uuid::new_v5(&SCENARIO_NS, format!("{}:{i}", raw.name).as_bytes())
            });
            let body = json!({
                "specversion": "1.0",
                "id": id,
                "source": "simulator",
                "type": r.ty,
                "time": at,
                "subject": r.data.get("account_id").cloned().unwrap_or(Value::Null),
                "datacontenttype": "application/json",
                "data": r.data,
            });
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            let event = parse_event(&bytes, None)
                .map_err(|e| ScenarioError(format!("events[{i}] ({}): {e}", r.ty)))?;
            events.push(Timed { at, event });
        }
        let mut s = Self::from_events(&raw.name, events, horizon);
        s.description = raw.description;
        s.policy = raw.policy;
        Ok(s)
    }

    /// When the clock stops: the last event plus the horizon.
    #[must_use]
    pub fn end(&self) -> Option<Timestamp> {
        self.events
            .last()
            .map(|e| e.at.checked_add(self.horizon).unwrap_or(e.at))
    }
}

/// A duration such as `"36h"` or `"8d"` (days of 24 hours).
#[must_use]
pub fn parse_horizon(text: &str) -> Option<SignedDuration> {
    if let Ok(d) = text.parse::<SignedDuration>() {
        return Some(d);
    }
    let span: jiff::Span = text.parse().ok()?;
    span.to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .ok()
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// Virtual instant it happened.
    pub at: Timestamp,
    /// Account.
    pub account_id: String,
    /// The customer's zone (for display in local time).
    pub timezone: String,
    /// `event` (an inbound event applied), `rejected`, or a task state: `scheduled`,
    /// `due`, `cancelled`.
    pub state: String,
    /// Event type or task kind.
    pub kind: String,
    /// Task channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Task tone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tone: Option<String>,
    /// Task priority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Task due instant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Timestamp>,
    /// Why (the task's reason, the cancel reason, or what the event was).
    pub reason: String,
    /// Task id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<Uuid>,
    /// Call attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The account's days past due when the task event was published (net of days
    /// paused by a hold), so a timeline shows whether the delinquency clock ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dpd: Option<i64>,
    /// The account's bucket then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
}

impl Entry {
    /// Whether this line is a task event (what dashboards receive).
    #[must_use]
    pub fn is_task(&self) -> bool {
        matches!(self.state.as_str(), "scheduled" | "due" | "cancelled")
    }

    /// A timeline line from a published task event.
    #[must_use]
    pub fn from_task_event(body: &Value, timezone: &str) -> Option<Self> {
        let d = &body["data"];
        let state = body["type"].as_str()?.strip_prefix("task.")?.to_owned();
        let reason = d["cancel_reason"]
            .as_str()
            .or_else(|| d["reason"].as_str())
            .unwrap_or("")
            .to_owned();
        Some(Self {
            at: body["time"].as_str()?.parse().ok()?,
            account_id: d["account_id"].as_str()?.to_owned(),
            timezone: timezone.to_owned(),
            state,
            kind: d["kind"].as_str()?.to_owned(),
            channel: d["channel"].as_str().map(str::to_owned),
            tone: d["tone"].as_str().map(str::to_owned),
            priority: d["priority"].as_u64().and_then(|p| u8::try_from(p).ok()),
            due_at: d["due_at"].as_str().and_then(|s| s.parse().ok()),
            reason,
            task_id: d["task_id"].as_str().and_then(|s| s.parse().ok()),
            attempt: d["attempt"].as_u64().and_then(|a| u32::try_from(a).ok()),
            dpd: d["account"]["dpd"].as_i64(),
            bucket: d["account"]["bucket"].as_str().map(str::to_owned),
        })
    }
}

/// The result of a simulation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    /// Scenario name.
    pub scenario: String,
    /// Version of the policy simulated.
    pub policy_version: String,
    /// Where the clock stopped.
    pub until: Option<Timestamp>,
    /// Every applied event and task event, in order.
    pub entries: Vec<Entry>,
}

impl Timeline {
    /// Only the task events (what dashboards receive).
    #[must_use]
    pub fn tasks(&self) -> Vec<&Entry> {
        self.entries.iter().filter(|e| e.is_task()).collect()
    }
}

/// An open task with the instant it was planned (the store orders open tasks by that).
struct Open {
    created: Timestamp,
    task: Task,
}

struct World<'a> {
    policy: &'a Policy,
    states: BTreeMap<String, AccountState>,
    /// Contact ledgers by debtor (the store keeps them in `contact_attempts`).
    ledgers: BTreeMap<String, Ledger>,
    open: Vec<Open>,
    entries: Vec<Entry>,
}

impl World<'_> {
    /// An account's state with its debtor's ledger, as the store loads it.
    fn state_of(&self, account: &str) -> Option<AccountState> {
        let mut s = self.states.get(account)?.clone();
        s.ledger = self.ledgers.get(s.debtor()).cloned().unwrap_or_default();
        Some(s)
    }

    /// An account's open tasks as the store loads them: by planning instant, then id.
    fn open_of(&self, account: &str, except: Option<Uuid>) -> Vec<Task> {
        let mut v: Vec<&Open> = self
            .open
            .iter()
            .filter(|o| o.task.account_id == account && Some(o.task.task_id) != except)
            .collect();
        v.sort_by_key(|o| (o.created, o.task.task_id));
        v.into_iter().map(|o| o.task.clone()).collect()
    }

    fn zone_of(&self, account: &str) -> String {
        self.states.get(account).map_or_else(
            || self.policy.default_timezone.clone(),
            |s| s.timezone.clone(),
        )
    }

    fn record(&mut self, m: &OutboundMessage) {
        if m.exchange != TASKS_EXCHANGE {
            // The service's own events (`arrangement.broken`, `arrangement.kept`) show as
            // `published` lines; an expiry's `promise.broken` shows when it is applied.
            if m.routing_key.starts_with("arrangement.") {
                let body = m.json();
                let d = &body["data"];
                let mut reason = format!(
                    "arrangement {} instalment {}",
                    d["arrangement_id"].as_str().unwrap_or_default(),
                    d["instalment_number"]
                );
                if let Some(r) = d["reason"].as_str() {
                    reason.push_str(&format!(": {r}"));
                }
                if d["settles_in_full"].as_bool() == Some(true) {
                    reason.push_str(" (settles in full)");
                }
                let tz = self.zone_of(&m.account_id);
                self.entries.push(Entry {
                    at: body["time"]
                        .as_str()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(Timestamp::UNIX_EPOCH),
                    account_id: m.account_id.clone(),
                    timezone: tz,
                    state: "published".to_owned(),
                    kind: m.routing_key.clone(),
                    channel: None,
                    tone: None,
                    priority: None,
                    due_at: None,
                    reason,
                    task_id: None,
                    attempt: None,
                    dpd: None,
                    bucket: None,
                });
            }
            return;
        }
        let tz = self.zone_of(&m.account_id);
        if let Some(e) = Entry::from_task_event(&m.json(), &tz) {
            self.entries.push(e);
        }
    }

    fn apply(&mut self, account: &str, d: Decision, now: Timestamp) {
        self.open
            .retain(|o| !d.cancel.iter().any(|c| c.task_id == o.task.task_id));
        let debtor = d.state.debtor().to_owned();
        let contacted = !d.ledger.is_empty();
        let cause = d.ledger.first().map(|a| a.event_id);
        if contacted {
            let ledger = self.ledgers.entry(debtor.clone()).or_default();
            for a in &d.ledger {
                ledger.upsert(a.clone());
            }
            ledger.forget_before(now);
        }
        self.states.insert(account.to_owned(), d.state);
        for (id, p) in &d.reprioritise {
            if let Some(o) = self.open.iter_mut().find(|o| o.task.task_id == *id) {
                o.task = Task {
                    priority: *p,
                    ..o.task.revised()
                };
            }
        }
        for t in d.schedule {
            self.open.push(Open {
                created: now,
                task: t,
            });
        }
        for m in &d.outbox {
            self.record(m);
        }
        // The debtor's other accounts: their calls that now break a cap move too.
        if let (true, Some(cause)) = (contacted, cause) {
            let siblings: Vec<String> = self
                .states
                .iter()
                .filter(|(id, s)| id.as_str() != account && s.debtor() == debtor)
                .map(|(id, _)| id.clone())
                .collect();
            for sibling in siblings {
                let Some(state) = self.state_of(&sibling) else {
                    continue;
                };
                let open = self.open_of(&sibling, None);
                let d = reflow(&state, &open, cause, self.policy, now);
                self.apply(&sibling, d, now);
            }
        }
    }

    fn event(&mut self, e: &Event, now: Timestamp) {
        let account = e.account_id.clone();
        let open = self.open_of(&account, None);
        let mut prev = self.state_of(&account);
        if let (Some(s), crate::EventBody::ContactAttempted(c)) = (prev.as_mut(), &e.body) {
            // The attempt's debtor, whose ledger it joins.
            s.ledger = self.ledgers.get(c.debtor()).cloned().unwrap_or_default();
        }
        let result = decide(prev.as_ref(), &open, e, self.policy, now);
        let tz = match &e.body {
            crate::EventBody::PaymentFailed(d) => d.customer.timezone.clone(),
            _ => None,
        }
        .unwrap_or_else(|| self.zone_of(&account));
        let mut line = Entry {
            at: now,
            account_id: account.clone(),
            timezone: tz,
            state: "event".to_owned(),
            kind: e.event_type().as_str().to_owned(),
            channel: None,
            tone: None,
            priority: None,
            due_at: None,
            reason: describe(e),
            task_id: None,
            attempt: None,
            dpd: None,
            bucket: None,
        };
        match result {
            Err(err) => {
                line.state = "rejected".to_owned();
                line.reason = format!("{}: {err}", line.reason);
                self.entries.push(line);
            }
            Ok(d) => {
                self.entries.push(line);
                self.apply(&account, d, now);
            }
        }
    }

    /// Fires the open task at `index` at `now`; returns an event to apply next, if any.
    fn fire(&mut self, index: usize, now: Timestamp) -> Option<Event> {
        let task = self.open[index].task.clone();
        let account = task.account_id.clone();
        match fire(&task, self.state_of(&account).as_ref(), self.policy, now) {
            FireOutcome::Expired { message } => {
                self.open.remove(index);
                parse_event(&message.body, None).ok()
            }
            FireOutcome::Cancelled { message, .. } => {
                self.open.remove(index);
                self.record(&message);
                None
            }
            FireOutcome::InstalmentDue { cause } => {
                self.open.remove(index);
                if let Some(state) = self.state_of(&account) {
                    let open = self.open_of(&account, Some(task.task_id));
                    let d = crate::on_instalment_due(&state, &open, &task, cause, self.policy, now);
                    self.apply(&account, d, now);
                }
                None
            }
            FireOutcome::Moved {
                task: moved,
                message,
                ..
            } => {
                self.open[index].task = *moved;
                self.record(&message);
                None
            }
            FireOutcome::Due { message, follow_up } => {
                self.open.remove(index);
                self.record(&message);
                if follow_up {
                    if let Some(state) = self.state_of(&account) {
                        let open = self.open_of(&account, Some(task.task_id));
                        let d =
                            on_call_fired(&state, &open, &task, message.event_id, self.policy, now);
                        self.apply(&account, d, now);
                    }
                }
                None
            }
        }
    }
}

fn describe(e: &Event) -> String {
    use crate::EventBody as B;
    match &e.body {
        B::PaymentFailed(d) => format!(
            "instalment {} due {} failed ({}), overdue {}",
            d.installment.number, d.installment.due_date, d.failure_reason, d.overdue_amount
        ),
        B::PromiseMade(d) => format!(
            "promise {} to pay {} by {}",
            d.promise_id, d.amount, d.promised_at
        ),
        B::PromiseBroken(d) => format!("promise {} broken ({})", d.promise_id, d.reason),
        B::HoldPlaced(d) => format!(
            "hold {} placed: {} ({}){}",
            d.hold_id,
            d.reason,
            match &d.scope {
                crate::event::HoldScope::All => "all contact".to_owned(),
                crate::event::HoldScope::Channels(c) =>
                    c.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(", "),
            },
            if d.pause_dpd { ", DPD paused" } else { "" }
        ),
        B::HoldReleased(d) => format!("hold {} released: {}", d.hold_id, d.outcome),
        B::ContactRestricted(d) => {
            let mut s = format!("restriction {}: {}", d.restriction_id, d.kind);
            if let Some(c) = d.channel {
                s.push_str(&format!(" on {c}"));
            }
            if let Some(h) = d.hours {
                s.push_str(&format!(
                    " {}-{}",
                    h.start.strftime("%H:%M"),
                    h.end.strftime("%H:%M")
                ));
            }
            s
        }
        B::ContactUnrestricted(d) => format!("restriction {} lifted", d.restriction_id),
        B::ArrangementMade(d) => format!(
            "arrangement {} ({}) of {} in {} instalment(s){}{}",
            d.arrangement_id,
            d.kind,
            d.total,
            d.instalments.len(),
            if d.settles_in_full {
                ", settles in full"
            } else {
                ""
            },
            d.discount_approved_by
                .as_deref()
                .map(|b| format!(", discount approved by {b}"))
                .unwrap_or_default()
        ),
        B::ArrangementCancelled(d) => {
            format!("arrangement {} cancelled ({})", d.arrangement_id, d.reason)
        }
        B::PaymentReversed(d) => format!(
            "payment {} of {} reversed at {} ({})",
            d.payment_id, d.amount, d.reversed_at, d.reason
        ),
        B::ContactAttempted(d) => {
            let mut s = format!(
                "{} {} attempt {}: {}, party {}",
                d.direction, d.channel, d.attempt_id, d.result, d.party
            );
            if let Some(x) = d.disposition {
                s.push_str(&format!(", {x}"));
            }
            if let Some(at) = d.callback_at {
                s.push_str(&format!(", call back at {at}"));
            }
            s
        }
        B::PaymentReceived(d) => {
            let mut s = format!("payment {} of {}", d.payment_id, d.amount);
            if let Some(a) = d.overdue_amount_after {
                s.push_str(&format!(", overdue after {a}"));
            }
            if let Some(n) = d.next_due_date {
                s.push_str(&format!(", next due {n}"));
            }
            s
        }
    }
}

/// Runs `scenario` under `policy` on a virtual clock until the scenario's end (its last
/// event plus its horizon) or `until` when given.
///
/// Tasks due at or before an event's instant fire before it, as the scheduler would have
/// fired them by then; tasks due at the same instant fire in the order they were planned.
#[must_use]
pub fn simulate(policy: &Policy, scenario: &Scenario, until: Option<Timestamp>) -> Timeline {
    let end = until.or_else(|| scenario.end());
    let mut w = World {
        policy,
        states: BTreeMap::new(),
        ledgers: BTreeMap::new(),
        open: Vec::new(),
        entries: Vec::new(),
    };
    let mut next_event = 0;
    let mut clock = scenario
        .events
        .first()
        .map_or(Timestamp::UNIX_EPOCH, |e| e.at);
    for _ in 0..MAX_STEPS {
        let due = w
            .open
            .iter()
            .enumerate()
            .min_by_key(|(i, o)| (o.task.due_at, *i))
            .map(|(i, o)| (i, o.task.due_at));
        let ev = scenario.events.get(next_event);
        let fire_now = match (due, ev) {
            (Some((_, at)), Some(e)) => at <= e.at,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if fire_now {
            let Some((i, at)) = due else { break };
            if end.is_some_and(|end| at > end) {
                if ev.is_none() {
                    break;
                }
            } else {
                clock = clock.max(at);
                if let Some(follow) = w.fire(i, clock) {
                    w.event(&follow, clock);
                }
                continue;
            }
        }
        let Some(e) = ev else { break };
        if end.is_some_and(|end| e.at > end) {
            break;
        }
        clock = clock.max(e.at);
        next_event += 1;
        w.event(&e.event, clock);
    }
    Timeline {
        scenario: scenario.name.clone(),
        policy_version: policy.version().to_owned(),
        until: end,
        entries: w.entries,
    }
}
