//! Payment arrangements (issue 22), built on the promise machinery.
//!
//! - `arrangement.made`: a plan or settlement supersedes an open arrangement or promise,
//!   suspends collection calls, and plans for each instalment a reminder, a check and an
//!   internal expiry (at due + `arrangement.grace`), as a promise does. A settlement that
//!   settles in full for less than the overdue needs a supervisor's approval, else it is
//!   refused (`domain`).
//! - money received is allocated to the earliest unmet instalment; a shortfall within the
//!   tolerance counts as met; the last instalment met keeps the arrangement
//!   (`arrangement.kept`), and a kept settlement cures the account.
//! - an instalment expiry fired ([`on_instalment_due`]) with the instalment unmet: missed,
//!   counted as a broken promise; at `arrangement.misses_to_break` misses the plan breaks
//!   (`arrangement.broken`) and collection resumes at the next allowed minute.
//! - `arrangement.cancelled`: its tasks are cancelled and collection resumes.
//! - `payment.reversed`: what the payment settled is re-opened and a call planned.

use jiff::Timestamp;
use serde::Serialize;
use uuid::Uuid;

use super::{Decision, DomainError, Planner};
use crate::{
    arrangement::{
        instalment_key, parse_instalment_key, within_tolerance, Allocation, ArrangementRecord,
        ArrangementStatus, InstalmentRecord, InstalmentStatus, ReversalRecord,
    },
    event::{ArrangementCancelled, ArrangementKind, ArrangementMade, PaymentReversed},
    outbound::{OutboundMessage, EVENTS_EXCHANGE, SOURCE},
    policy::Policy,
    state::{AccountState, PromiseStatus, Status},
    task::{Channel, Task, TaskKind},
    window, Money,
};

/// What happens when an instalment's expiry fires (due + grace has come): unless the
/// instalment was met meanwhile, it is missed; see the module documentation.
///
/// `cause` (derived from the expiry task by the shell) names the decision: completing the
/// same firing again yields the same task ids.
#[must_use]
pub fn on_instalment_due(
    state: &AccountState,
    open: &[Task],
    fired: &Task,
    cause: Uuid,
    policy: &Policy,
    now: Timestamp,
) -> Decision {
    let mut p = Planner::new(cause, cause, policy, now, state.clone(), open);
    p.instalment_due(fired);
    p.finish()
}

/// The id of the decision an instalment expiry's firing causes.
#[must_use]
pub fn instalment_due_cause(expiry: &Task) -> Uuid {
    Uuid::new_v5(&expiry.task_id, b"instalment-due")
}

/// `data` of `arrangement.broken` and `arrangement.kept`.
#[derive(Serialize)]
struct OutcomeData<'a> {
    account_id: &'a str,
    arrangement_id: &'a str,
    instalment_number: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    settles_in_full: Option<bool>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    specversion: &'static str,
    id: Uuid,
    source: &'static str,
    #[serde(rename = "type")]
    kind: &'a str,
    time: Timestamp,
    subject: &'a str,
    datacontenttype: &'static str,
    data: OutcomeData<'a>,
}

impl Planner<'_> {
    /// Queues `arrangement.<what>` for `collections.events` (through the outbox).
    fn publish_outcome(
        &mut self,
        what: &str,
        arrangement_id: &str,
        instalment_number: u32,
        reason: Option<&str>,
        settles_in_full: Option<bool>,
    ) {
        let kind = format!("arrangement.{what}");
        let id = Uuid::new_v5(
            &self.ids,
            format!("{kind}:{arrangement_id}:{instalment_number}").as_bytes(),
        );
        let body = Envelope {
            specversion: "1.0",
            id,
            source: SOURCE,
            kind: &kind,
            time: self.now,
            subject: &self.state.account_id,
            datacontenttype: "application/json",
            data: OutcomeData {
                account_id: &self.state.account_id,
                arrangement_id,
                instalment_number,
                reason,
                settles_in_full,
            },
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let msg = OutboundMessage {
            event_id: id,
            exchange: EVENTS_EXCHANGE,
            routing_key: kind,
            account_id: self.state.account_id.clone(),
            body: bytes,
        };
        self.outcomes.push(msg);
    }

    /// Cancels the open tasks of one instalment (or of every instalment when `number` is
    /// `None`) of `arrangement_id`.
    fn cancel_instalment_tasks(&mut self, arrangement_id: &str, number: Option<u32>, why: &str) {
        let id = arrangement_id.to_owned();
        self.cancel_where(why, |t| {
            t.promise_id
                .as_deref()
                .and_then(parse_instalment_key)
                .is_some_and(|(a, n)| a == id && number.is_none_or(|x| x == n))
        });
        // Planned by this very decision: dropped before they are written.
        let before = self.schedule.len();
        self.schedule.retain(|t| {
            !t.promise_id
                .as_deref()
                .and_then(parse_instalment_key)
                .is_some_and(|(a, n)| a == id && number.is_none_or(|x| x == n))
        });
        if self.schedule.len() != before {
            self.note(
                "decision",
                format!(
                    "{} task(s) planned by this decision dropped: {why}",
                    before - self.schedule.len()
                ),
            );
        }
    }

    pub(super) fn arrangement_made(&mut self, d: &ArrangementMade) -> Result<(), DomainError> {
        self.check_currency(d.total)?;
        if d.settles_in_full
            && d.discount_approved_by.is_none()
            && d.total.minor < self.state.overdue_minor
        {
            // Domain rule 12: a collector never waives principal or interest alone.
            return Err(DomainError(format!(
                "arrangement {} settles in full for {} below the overdue {} without \
                 discount_approved_by: a discount needs a supervisor's approval",
                d.arrangement_id,
                d.total,
                self.state.overdue()
            )));
        }
        let made = self.event_time;
        let instalments: Vec<InstalmentRecord> = d
            .instalments
            .iter()
            .map(|i| InstalmentRecord {
                number: i.number,
                due_at: i.due_at,
                amount_minor: i.amount.minor,
                paid_minor: 0,
                status: InstalmentStatus::Pending,
                missed_once: false,
            })
            .collect();
        let record = ArrangementRecord {
            arrangement_id: d.arrangement_id.clone(),
            kind: Some(d.kind),
            total: Some(d.total),
            instalments,
            settles_in_full: d.settles_in_full,
            discount_approved_by: d.discount_approved_by.clone(),
            made_at: Some(made),
            status: ArrangementStatus::Open,
            misses: 0,
            allocations: Vec::new(),
            cured_overdue_minor: None,
            cured_due_dates: None,
            cancelled_at: None,
        };
        if let Some(existing) = self.state.arrangement_mut(&d.arrangement_id) {
            if existing.kind.is_none() {
                // Its cancellation came first (another queue): recorded, nothing planned.
                let cancelled_at = existing.cancelled_at;
                *existing = ArrangementRecord {
                    status: ArrangementStatus::Cancelled,
                    cancelled_at,
                    ..record
                };
                self.note(
                    "event_applied",
                    format!(
                        "arrangement.made for {} after its arrangement.cancelled: recorded \
                         cancelled, nothing planned",
                        d.arrangement_id
                    ),
                );
            } else {
                self.note(
                    "event_applied",
                    format!(
                        "arrangement.made for {} seen again: no change",
                        d.arrangement_id
                    ),
                );
            }
            return Ok(());
        }
        let summary = format!(
            "arrangement.made: {} {} of {} in {} instalment(s) from {} to {}{}{} (captured by \
             {} via {})",
            d.arrangement_id,
            d.kind,
            d.total,
            d.instalments.len(),
            d.instalments.first().map(|i| i.due_at).unwrap_or(made),
            d.instalments.last().map(|i| i.due_at).unwrap_or(made),
            if d.settles_in_full {
                ", settles in full"
            } else {
                ""
            },
            d.discount_approved_by
                .as_deref()
                .map(|by| format!(", discount approved by {by}"))
                .unwrap_or_default(),
            d.captured_by,
            d.channel
        );
        // Out of order: an arrangement (or, under `supersede`, a promise) made after this
        // one is already recorded; the customer's latest word stands.
        let newer = self
            .state
            .arrangements
            .iter()
            .filter(|a| a.made_at.is_some_and(|m| m > made))
            .map(|a| a.arrangement_id.clone())
            .next()
            .or_else(|| {
                (self.policy.arrangement.promise_during_plan
                    == crate::policy::PromiseDuringPlan::Supersede)
                    .then(|| {
                        self.state
                            .promises
                            .iter()
                            .filter(|p| p.made_at.is_some_and(|m| m > made))
                            .map(|p| format!("promise {}", p.promise_id))
                            .next()
                    })
                    .flatten()
            });
        if let Some(newer) = newer {
            self.state.arrangements.push(ArrangementRecord {
                status: ArrangementStatus::Superseded,
                ..record
            });
            self.note("event_applied", summary);
            self.note(
                "arrangement_superseded",
                format!(
                    "{} arrived after the newer {newer}: recorded superseded, nothing planned",
                    d.arrangement_id
                ),
            );
            return Ok(());
        }
        self.state.status = Status::Delinquent;
        if self
            .state
            .last_conversation_at
            .is_none_or(|c| c < self.event_time)
        {
            self.state.last_conversation_at = Some(self.event_time);
        }
        self.note("event_applied", summary);
        let superseded: Vec<String> = self
            .state
            .arrangements
            .iter_mut()
            .filter(|a| a.status == ArrangementStatus::Open)
            .map(|a| {
                a.status = ArrangementStatus::Superseded;
                a.arrangement_id.clone()
            })
            .collect();
        for old in superseded {
            self.note(
                "arrangement_superseded",
                format!("arrangement {old} superseded by {}", d.arrangement_id),
            );
            self.cancel_instalment_tasks(
                &old,
                None,
                &format!("arrangement {old} superseded by {}", d.arrangement_id),
            );
        }
        let promises: Vec<String> = self
            .state
            .promises
            .iter_mut()
            .filter(|p| p.open_at(made) || p.status == PromiseStatus::Open)
            .map(|p| {
                p.status = PromiseStatus::Superseded;
                p.kept_at = None;
                p.promise_id.clone()
            })
            .collect();
        for old in promises {
            self.note(
                "promise_superseded",
                format!(
                    "promise {old} superseded by arrangement {}",
                    d.arrangement_id
                ),
            );
            let reason = format!(
                "promise {old} superseded by arrangement {}",
                d.arrangement_id
            );
            self.cancel_where(&reason, |t| t.promise_id.as_deref() == Some(old.as_str()));
        }
        let reason = format!(
            "arrangement {} made: calls suspended while it is paid on time",
            d.arrangement_id
        );
        self.cancel_where(&reason, |t| t.kind == TaskKind::CollectionCall);
        self.state.arrangements.push(record);
        // Money received since it was made (applied first from its queue) counts towards
        // it, as it would have had the arrangement arrived first.
        let mut since: Vec<(Timestamp, i64, Option<String>)> = self
            .state
            .recent_payments
            .iter()
            .filter(|p| p.received_at >= made)
            .map(|p| (p.received_at, p.minor, p.payment_id.clone()))
            .collect();
        since.sort_by_key(|p| p.0);
        let mut met_early = Vec::new();
        for (at, minor, id) in since {
            let reversed: i64 = self
                .state
                .reversals
                .iter()
                .filter(|r| id.as_deref() == Some(r.payment_id.as_str()))
                .map(|r| r.minor)
                .sum();
            let minor = minor - reversed.min(minor);
            if minor > 0 {
                let pid = id.unwrap_or_else(|| format!("payment received at {at}"));
                met_early.extend(self.allocate(&d.arrangement_id, &pid, at, minor));
            }
        }
        let zone = self.state.zone();
        for inst in &d.instalments {
            if met_early.contains(&inst.number) {
                continue;
            }
            self.plan_instalment_tasks(
                &d.arrangement_id,
                inst.number,
                inst.due_at,
                inst.amount,
                &zone,
            );
        }
        if !met_early.is_empty() {
            self.after_allocation(&d.arrangement_id, &met_early, made);
        }
        Ok(())
    }

    /// The reminder (before the due instant, inside the window), the check (after it) and
    /// the internal expiry (at due + grace) of one instalment.
    fn plan_instalment_tasks(
        &mut self,
        arrangement_id: &str,
        number: u32,
        due_at: Timestamp,
        amount: Money,
        tz: &jiff::tz::TimeZone,
    ) {
        let key = instalment_key(arrangement_id, number);
        let rules = self.policy.promise.clone();
        let grace = self.policy.arrangement.grace;
        let w = self
            .state
            .window(&self.policy.contact_window, due_at)
            .into_owned();
        let local = due_at.to_zoned(tz.clone());
        let at_text = format!("{} {}", local.date(), local.time().strftime("%H:%M"));
        let remind_at = due_at - rules.reminder_before;
        if remind_at > self.now {
            let back = window::last_allowed_before(remind_at, tz, &w);
            let fwd = window::next_allowed(remind_at, tz, &w);
            let due = if back == remind_at || back > self.now {
                Some(back)
            } else if fwd < due_at {
                Some(fwd)
            } else {
                None
            };
            if let Some(due) = due {
                self.plan(
                    TaskKind::PromiseReminder,
                    rules.reminder_channel,
                    due,
                    format!(
                        "remind of instalment {number} of arrangement {arrangement_id}: {amount} \
                         due {at_text} local"
                    ),
                    Some(&key),
                );
            }
        }
        let check_at = due_at + rules.check_after;
        if check_at > self.now {
            let due = window::next_allowed(check_at, tz, &w);
            self.plan(
                TaskKind::PromiseCheck,
                rules.check_channel,
                due,
                format!(
                    "check that instalment {number} of arrangement {arrangement_id} ({amount}, \
                     due {at_text} local) arrived"
                ),
                Some(&key),
            );
        }
        self.plan(
            TaskKind::InstalmentExpiry,
            Channel::None,
            due_at + grace,
            format!(
                "instalment {number} of arrangement {arrangement_id} is missed unless met by \
                 due + {grace:#}"
            ),
            Some(&key),
        );
    }

    /// Allocates `minor` of a payment to the earliest unmet instalments of
    /// `arrangement_id`; returns the instalments it met (within the tolerance).
    fn allocate(
        &mut self,
        arrangement_id: &str,
        payment_id: &str,
        received_at: Timestamp,
        minor: i64,
    ) -> Vec<u32> {
        let rules = self.policy.arrangement.clone();
        let open = self
            .state
            .arrangements
            .iter()
            .any(|a| a.arrangement_id == arrangement_id && a.status == ArrangementStatus::Open);
        let Some(a) = self.state.arrangement_mut(arrangement_id) else {
            return Vec::new();
        };
        let mut left = minor;
        let mut met = Vec::new();
        let mut lines = Vec::new();
        let mut withdrawn = 0u32;
        for inst in a
            .instalments
            .iter_mut()
            .filter(|i| i.status != InstalmentStatus::Met)
        {
            if left == 0 {
                break;
            }
            let take = left.min(inst.amount_minor - inst.paid_minor).max(0);
            if take == 0 {
                continue;
            }
            inst.paid_minor += take;
            left -= take;
            a.allocations.push(Allocation {
                payment_id: payment_id.to_owned(),
                received_at,
                number: inst.number,
                minor: take,
            });
            let short = inst.amount_minor - inst.paid_minor;
            if within_tolerance(
                inst.amount_minor,
                short,
                rules.tolerance_percent,
                rules.tolerance_min_minor,
            ) {
                if inst.status == InstalmentStatus::Missed
                    && open
                    && received_at <= inst.due_at + rules.grace
                {
                    // Paid in time, applied after its expiry fired (its queue was behind):
                    // the miss is withdrawn, as if the payment had come first.
                    inst.missed_once = false;
                    withdrawn += 1;
                    lines.push(format!(
                        "instalment {} was paid in time (at {received_at}): its miss is \
                         withdrawn",
                        inst.number
                    ));
                }
                inst.status = InstalmentStatus::Met;
                met.push(inst.number);
                lines.push(if short > 0 {
                    format!(
                        "instalment {} met: {take} minor units of {payment_id}, {short} short \
                         within the tolerance",
                        inst.number
                    )
                } else {
                    format!(
                        "instalment {} met: {take} minor units of {payment_id}",
                        inst.number
                    )
                });
            } else {
                lines.push(format!(
                    "instalment {}: {take} minor units of {payment_id}, {short} still due",
                    inst.number
                ));
                // The payment is spent (a shortfall beyond the tolerance takes it all).
                break;
            }
        }
        if left > 0
            && a.instalments
                .iter()
                .all(|i| i.status == InstalmentStatus::Met)
        {
            lines.push(format!(
                "{left} minor units of {payment_id} beyond the arrangement's instalments"
            ));
        }
        a.misses = a.misses.saturating_sub(withdrawn);
        self.state.broken_promises = self.state.broken_promises.saturating_sub(withdrawn);
        for l in lines {
            self.note(
                "instalment_allocated",
                format!("arrangement {arrangement_id}: {l}"),
            );
        }
        met
    }

    /// After instalments of `arrangement_id` were met: their tasks go, the arrangement is
    /// kept when the last one is met, and a plan back on time suspends calls again.
    fn after_allocation(&mut self, arrangement_id: &str, met: &[u32], at: Timestamp) {
        for n in met {
            self.cancel_instalment_tasks(
                arrangement_id,
                Some(*n),
                &format!("instalment {n} of arrangement {arrangement_id} met"),
            );
        }
        let Some(a) = self
            .state
            .arrangements
            .iter()
            .find(|a| a.arrangement_id == arrangement_id)
            .cloned()
        else {
            return;
        };
        if a.status != ArrangementStatus::Open {
            return;
        }
        if a.all_met() {
            self.keep_arrangement(&a, at);
        } else if !a.behind() {
            self.cancel_where(
                &format!("arrangement {arrangement_id} paid on time again: calls suspended"),
                |t| t.kind == TaskKind::CollectionCall,
            );
        }
    }

    /// The last instalment met: `arrangement.kept`; a settlement in full cures the
    /// account (the journal names the approval); otherwise what is still overdue is
    /// collected again.
    fn keep_arrangement(&mut self, a: &ArrangementRecord, at: Timestamp) {
        let last = a.instalments.last().map_or(0, |i| i.number);
        if let Some(r) = self.state.arrangement_mut(&a.arrangement_id) {
            r.status = ArrangementStatus::Kept;
        }
        self.note(
            "arrangement_kept",
            format!(
                "arrangement {} kept: every instalment met",
                a.arrangement_id
            ),
        );
        self.publish_outcome(
            "kept",
            &a.arrangement_id,
            last,
            None,
            Some(a.settles_in_full),
        );
        self.cancel_instalment_tasks(&a.arrangement_id, None, "arrangement kept");
        if a.settles_in_full {
            let cured = self.state.overdue_minor;
            let dates = (
                self.state.unpaid_due_dates.clone(),
                self.state.first_installment_default,
            );
            if let Some(r) = self.state.arrangement_mut(&a.arrangement_id) {
                r.cured_overdue_minor = Some(cured);
                r.cured_due_dates = Some(dates);
            }
            self.state.overdue_minor = 0;
            if self.state.settled_at.is_none_or(|s| s < at) {
                self.state.settled_at = Some(at);
            }
            self.state.unpaid_due_dates.clear();
            self.state.failed_reported_at.clear();
            self.state.first_installment_default = false;
            self.state.partial_payer = false;
            self.state.status = Status::Cured;
            let approval = a.discount_approved_by.as_deref().map_or_else(
                || "no discount to approve".to_owned(),
                |by| format!("discount approved by {by}"),
            );
            let kind = a.kind.map_or("arrangement", |k| match k {
                ArrangementKind::Settlement => "settlement",
                ArrangementKind::InstalmentPlan => "instalment plan",
            });
            self.note(
                "account_cured",
                format!(
                    "overdue considered settled by {kind} {} ({approval}; {} minor units \
                     were overdue)",
                    a.arrangement_id, cured
                ),
            );
            self.cancel_where("account cured", |t| t.kind != TaskKind::HoldReview);
            self.schedule.retain(|t| t.kind == TaskKind::HoldReview);
        } else if self.state.status == Status::Delinquent
            && self.state.overdue_minor > 0
            && self.has_open(TaskKind::CollectionCall).is_none()
        {
            let owing = self.state.overdue();
            self.plan_collection_call(format!(
                "arrangement {} kept, {owing} still overdue",
                a.arrangement_id
            ));
        }
    }

    /// Money received while an arrangement is open (`payment.received`): allocated to it.
    pub(super) fn allocate_payment(
        &mut self,
        payment_id: &str,
        received_at: Timestamp,
        minor: i64,
    ) {
        let Some(a) = self.state.open_arrangement() else {
            return;
        };
        if a.made_at.is_some_and(|m| received_at < m) {
            // Paid before the arrangement was made: not on it.
            return;
        }
        let id = a.arrangement_id.clone();
        let reversed: i64 = self
            .state
            .reversals
            .iter()
            .filter(|r| r.payment_id == payment_id && !r.applied)
            .map(|r| r.minor)
            .sum();
        let minor = minor - reversed.min(minor);
        if minor == 0 {
            return;
        }
        let met = self.allocate(&id, payment_id, received_at, minor);
        if !met.is_empty() {
            self.after_allocation(&id, &met, received_at);
        }
    }

    /// The instalment keys of an open arrangement made after `at`: a cure at `at`
    /// (applied late from its queue) leaves them and their tasks standing.
    pub(super) fn arrangement_made_after(&self, at: Timestamp) -> Vec<String> {
        self.state
            .open_arrangement()
            .filter(|a| a.made_at.is_some_and(|m| m > at))
            .map(|a| {
                a.instalments
                    .iter()
                    .map(|i| instalment_key(&a.arrangement_id, i.number))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The cure of the account by billing (`overdue_amount_after` zero) closes an open
    /// arrangement as kept.
    pub(super) fn close_arrangement_on_cure(&mut self, at: Timestamp) {
        let Some(a) = self.state.open_arrangement().cloned() else {
            return;
        };
        if a.made_at.is_some_and(|m| m > at) {
            return;
        }
        self.note(
            "decision",
            format!(
                "overdue paid in full: arrangement {} closes",
                a.arrangement_id
            ),
        );
        self.keep_arrangement(&a, at);
    }

    pub(super) fn instalment_due(&mut self, fired: &Task) {
        let Some((arrangement_id, number)) = fired
            .promise_id
            .as_deref()
            .and_then(parse_instalment_key)
            .map(|(a, n)| (a.to_owned(), n))
        else {
            self.note(
                "decision",
                "instalment expiry names no instalment: nothing to do",
            );
            return;
        };
        let Some(a) = self
            .state
            .arrangements
            .iter()
            .find(|a| a.arrangement_id == arrangement_id)
        else {
            self.note(
                "decision",
                format!("instalment expiry of unknown arrangement {arrangement_id}"),
            );
            return;
        };
        if a.status != ArrangementStatus::Open {
            let detail = format!(
                "instalment {number} of arrangement {arrangement_id} came due: the \
                 arrangement is {:?}, nothing to do",
                a.status
            );
            self.note("decision", detail);
            return;
        }
        let Some(inst) = a.instalments.iter().find(|i| i.number == number) else {
            return;
        };
        if inst.status != InstalmentStatus::Pending {
            let detail = format!(
                "instalment {number} of arrangement {arrangement_id} came due: {:?}, nothing \
                 to do",
                inst.status
            );
            self.note("decision", detail);
            return;
        }
        let reason = if inst.paid_minor > 0 {
            "short_paid"
        } else {
            "missed"
        };
        self.instalment_missed(&arrangement_id, number, reason);
    }

    /// An instalment of an open arrangement is missed (`reason`: `missed`, `short_paid`,
    /// `reversed`): counted as a broken promise; the plan breaks at the policy's count of
    /// misses, else collection resumes for the missed instalment while the plan stands.
    fn instalment_missed(&mut self, arrangement_id: &str, number: u32, reason: &str) {
        let limit = self.policy.arrangement.misses_to_break;
        let Some(a) = self.state.arrangement_mut(arrangement_id) else {
            return;
        };
        let Some(inst) = a.instalment_mut(number) else {
            return;
        };
        let (paid, amount) = (inst.paid_minor, inst.amount_minor);
        inst.status = InstalmentStatus::Missed;
        inst.missed_once = true;
        a.misses += 1;
        let misses = a.misses;
        self.state.broken_promises += 1;
        if self.state.settled_at.is_none_or(|s| s < self.event_time) {
            self.state.status = Status::Delinquent;
        }
        self.note(
            "instalment_missed",
            format!(
                "instalment {number} of arrangement {arrangement_id} {reason} ({paid} of \
                 {amount} minor units paid); {misses} of {limit} miss(es) that break it; \
                 {} broken promise(s), tone now {}",
                self.state.broken_promises,
                self.tone()
            ),
        );
        self.cancel_instalment_tasks(
            arrangement_id,
            Some(number),
            &format!("instalment {number} of arrangement {arrangement_id} {reason}"),
        );
        if misses >= limit {
            if let Some(a) = self.state.arrangement_mut(arrangement_id) {
                a.status = ArrangementStatus::Broken;
            }
            self.note(
                "arrangement_broken",
                format!("arrangement {arrangement_id} broken at instalment {number} ({reason})"),
            );
            self.publish_outcome("broken", arrangement_id, number, Some(reason), None);
            self.cancel_instalment_tasks(
                arrangement_id,
                None,
                &format!("arrangement {arrangement_id} broken"),
            );
        }
        if self.state.status != Status::Delinquent {
            return;
        }
        // Collection resumes at the next allowed minute, in the escalated tone.
        self.cancel_where("replaced by an escalated call", |t| {
            t.kind == TaskKind::CollectionCall
        });
        self.plan_collection_call(format!(
            "instalment {number} of arrangement {arrangement_id} {reason}; {} broken \
             promise(s)",
            self.state.broken_promises
        ));
        self.open_broken_escalations();
    }

    pub(super) fn arrangement_cancelled(&mut self, d: &ArrangementCancelled) {
        let at = self.event_time;
        match self.state.arrangement_mut(&d.arrangement_id) {
            None => {
                self.state.arrangements.push(ArrangementRecord {
                    arrangement_id: d.arrangement_id.clone(),
                    kind: None,
                    total: None,
                    instalments: Vec::new(),
                    settles_in_full: false,
                    discount_approved_by: None,
                    made_at: None,
                    status: ArrangementStatus::Cancelled,
                    misses: 0,
                    allocations: Vec::new(),
                    cured_overdue_minor: None,
                    cured_due_dates: None,
                    cancelled_at: Some(at),
                });
                self.note(
                    "event_applied",
                    format!(
                        "arrangement.cancelled for {} ({}) before its arrangement.made: \
                         recorded",
                        d.arrangement_id, d.reason
                    ),
                );
                return;
            }
            Some(a) if a.status != ArrangementStatus::Open => {
                let status = a.status;
                self.note(
                    "event_applied",
                    format!(
                        "arrangement.cancelled for {} ({}): it is {status:?}, no change",
                        d.arrangement_id, d.reason
                    ),
                );
                return;
            }
            Some(a) => {
                a.status = ArrangementStatus::Cancelled;
                a.cancelled_at = Some(at);
            }
        }
        self.note(
            "event_applied",
            format!("arrangement.cancelled: {} ({})", d.arrangement_id, d.reason),
        );
        self.cancel_instalment_tasks(
            &d.arrangement_id,
            None,
            &format!("arrangement {} cancelled", d.arrangement_id),
        );
        if self.state.status == Status::Delinquent
            && self.state.open_promise().is_none()
            && self.has_open(TaskKind::CollectionCall).is_none()
        {
            self.plan_collection_call(format!(
                "arrangement {} cancelled ({}): collection resumes",
                d.arrangement_id, d.reason
            ));
        }
    }

    pub(super) fn payment_reversed(&mut self, d: &PaymentReversed) -> Result<(), DomainError> {
        self.check_currency(d.amount)?;
        if self
            .state
            .reversals
            .iter()
            .any(|r| r.payment_id == d.payment_id)
        {
            self.note(
                "event_applied",
                format!("payment.reversed for {} again: no change", d.payment_id),
            );
            return Ok(());
        }
        let known = self
            .state
            .recent_payments
            .iter()
            .find(|p| p.payment_id.as_deref() == Some(d.payment_id.as_str()))
            .map(|p| (p.received_at, p.settled));
        self.state.reversals.push(ReversalRecord {
            payment_id: d.payment_id.clone(),
            minor: d.amount.minor,
            reversed_at: d.reversed_at,
            applied: known.is_some(),
        });
        let Some((received_at, settled)) = known else {
            self.note(
                "event_applied",
                format!(
                    "payment.reversed: {} of {} ({}) before its payment.received: recorded; \
                     the payment will count for nothing",
                    d.payment_id, d.amount, d.reason
                ),
            );
            return Ok(());
        };
        self.state.overdue_minor += d.amount.minor;
        self.note(
            "event_applied",
            format!(
                "payment.reversed: {} of {} received at {received_at} ({}); overdue now {}",
                d.payment_id,
                d.amount,
                d.reason,
                self.state.overdue()
            ),
        );
        self.reverse_payment(&d.payment_id, d.amount.minor, settled);
        Ok(())
    }

    /// Re-opens what the payment `payment_id` settled: its allocations to instalments
    /// (a kept arrangement is broken, `reversed`; an instalment past its grace is missed;
    /// one still ahead is followed again), a cure; then a call is planned.
    fn reverse_payment(&mut self, payment_id: &str, minor: i64, settled: bool) {
        let mut reopened_cure = false;
        let mut touched: Vec<(String, u32, ArrangementStatus)> = Vec::new();
        let mut left = minor;
        for a in &mut self.state.arrangements {
            let mut undone = Vec::new();
            for al in a
                .allocations
                .iter_mut()
                .filter(|al| al.payment_id == payment_id)
            {
                let take = al.minor.min(left);
                if take == 0 {
                    continue;
                }
                al.minor -= take;
                left -= take;
                undone.push((al.number, take));
            }
            a.allocations.retain(|al| al.minor > 0);
            for (n, take) in undone {
                let rules = &self.policy.arrangement;
                if let Some(inst) = a.instalment_mut(n) {
                    inst.paid_minor -= take;
                    let short = inst.amount_minor - inst.paid_minor;
                    if inst.status == InstalmentStatus::Met
                        && !within_tolerance(
                            inst.amount_minor,
                            short,
                            rules.tolerance_percent,
                            rules.tolerance_min_minor,
                        )
                    {
                        inst.status = InstalmentStatus::Pending;
                        touched.push((a.arrangement_id.clone(), n, a.status));
                    }
                }
            }
        }
        for (id, n, status) in touched {
            match status {
                ArrangementStatus::Kept => {
                    let (cured, dates) = self
                        .state
                        .arrangements
                        .iter()
                        .find(|a| a.arrangement_id == id)
                        .map(|a| (a.cured_overdue_minor, a.cured_due_dates.clone()))
                        .unwrap_or_default();
                    if let Some((dates, first)) = dates {
                        // The DPD runs again from the due dates the cure had cleared.
                        self.state.unpaid_due_dates.extend(dates);
                        self.state.first_installment_default |= first;
                    }
                    if let Some(a) = self.state.arrangement_mut(&id) {
                        a.status = ArrangementStatus::Broken;
                        a.cured_overdue_minor = None;
                        a.cured_due_dates = None;
                        if let Some(i) = a.instalment_mut(n) {
                            i.status = InstalmentStatus::Missed;
                            i.missed_once = true;
                        }
                        a.misses += 1;
                    }
                    if let Some(before) = cured {
                        // The settlement's cure is undone: the overdue it settled is owed.
                        self.state.overdue_minor += before;
                        reopened_cure = true;
                    }
                    self.state.broken_promises += 1;
                    self.note(
                        "arrangement_broken",
                        format!("arrangement {id} re-opened and broken: instalment {n} reversed"),
                    );
                    self.publish_outcome("broken", &id, n, Some("reversed"), None);
                }
                ArrangementStatus::Open => {
                    let due = self
                        .state
                        .arrangements
                        .iter()
                        .find(|a| a.arrangement_id == id)
                        .and_then(|a| a.instalments.iter().find(|i| i.number == n))
                        .map(|i| {
                            (
                                i.due_at,
                                Money {
                                    minor: i.amount_minor,
                                    currency: self.state.overdue().currency,
                                },
                            )
                        });
                    let Some((due_at, amount)) = due else {
                        continue;
                    };
                    if due_at + self.policy.arrangement.grace <= self.now {
                        self.instalment_missed(&id, n, "reversed");
                    } else {
                        self.note(
                            "decision",
                            format!(
                                "instalment {n} of arrangement {id} re-opened by the reversal: \
                                 followed again"
                            ),
                        );
                        let zone = self.state.zone();
                        self.plan_instalment_tasks(&id, n, due_at, amount, &zone);
                    }
                }
                _ => {}
            }
        }
        if settled && self.state.status == Status::Cured {
            reopened_cure = true;
        }
        if reopened_cure || self.state.overdue_minor > 0 {
            if self.state.status != Status::Delinquent {
                self.note(
                    "account_reopened",
                    format!("payment {payment_id} reversed: the account is delinquent again"),
                );
            }
            self.state.status = Status::Delinquent;
            self.state.settled_at = None;
        }
        if self.state.status == Status::Delinquent
            && !self.state.plan_on_time()
            && self.state.open_promise().is_none()
            && self.has_open(TaskKind::CollectionCall).is_none()
        {
            self.plan_collection_call(format!(
                "payment {payment_id} reversed: {} overdue",
                self.state.overdue()
            ));
        }
    }

    /// A `promise.made` while an arrangement is open, under `promise_during_plan =
    /// "record"`: recorded in the collection note, nothing planned. Returns whether it
    /// was handled so.
    pub(super) fn promise_during_plan(
        &mut self,
        promise_id: &str,
        amount: Money,
        at: Timestamp,
    ) -> bool {
        use crate::policy::PromiseDuringPlan as P;
        let Some(a) = self.state.open_arrangement() else {
            return false;
        };
        if a.made_at.is_some_and(|m| m > self.event_time) {
            // Made before the plan (applied late): the plan superseded it already.
            let id = a.arrangement_id.clone();
            self.record_promise_beside_plan(promise_id, amount, at, &id, "made before it");
            return true;
        }
        match self.policy.arrangement.promise_during_plan {
            P::Record => {
                let id = a.arrangement_id.clone();
                self.record_promise_beside_plan(promise_id, amount, at, &id, "policy: record");
                true
            }
            P::Supersede => {
                let id = a.arrangement_id.clone();
                if let Some(r) = self.state.arrangement_mut(&id) {
                    r.status = ArrangementStatus::Superseded;
                }
                self.note(
                    "arrangement_superseded",
                    format!("arrangement {id} superseded by promise {promise_id}"),
                );
                self.cancel_instalment_tasks(
                    &id,
                    None,
                    &format!("arrangement {id} superseded by promise {promise_id}"),
                );
                false
            }
        }
    }

    fn record_promise_beside_plan(
        &mut self,
        promise_id: &str,
        amount: Money,
        at: Timestamp,
        arrangement_id: &str,
        why: &str,
    ) {
        // Recorded in the collection note only: as a promise record it would take part
        // in the promise rules (keeping, breaking, cures applied late), which the plan
        // governs while it is open. Applied like every event (its `event_applied` line),
        // with a line of its own saying what became of it.
        self.note(
            "event_applied",
            format!("promise.made: {promise_id} to pay {amount} by {at}"),
        );
        self.note(
            "promise_recorded",
            format!(
                "promise {promise_id} made while arrangement {arrangement_id} is open \
                 ({why}): recorded, the plan and its tasks stand"
            ),
        );
    }

    /// The `payment.received` of a payment whose reversal was applied first (another
    /// queue): the reversal takes effect now.
    pub(super) fn reversal_waiting(&mut self, payment_id: &str, minor: i64) {
        let Some(r) = self
            .state
            .reversals
            .iter_mut()
            .find(|r| r.payment_id == payment_id && !r.applied)
        else {
            return;
        };
        r.applied = true;
        let reversed = r.minor.min(minor);
        self.state.overdue_minor += reversed;
        let settled = self
            .state
            .recent_payments
            .iter()
            .any(|p| p.payment_id.as_deref() == Some(payment_id) && p.settled);
        self.note(
            "decision",
            format!(
                "payment {payment_id} was reversed before it arrived: the reversal of \
                 {reversed} minor units takes effect; overdue now {}",
                self.state.overdue()
            ),
        );
        self.reverse_payment(payment_id, reversed, settled);
    }
}
