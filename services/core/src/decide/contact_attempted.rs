//! `contact.attempted`: the attempt goes into the debtor's ledger (a correction replaces
//! the earlier report), and what it came to changes the plan: a conversation without a
//! promise puts the next call on a later day, a requested callback replaces the next
//! call, a claim of payment holds calls while it is verified, a refusal escalates the
//! tone, a wrong number retires the point, and a run of attempts that reach nobody makes
//! the account `lost_contact`. Whatever the attempt, open calls that now break a cap (the
//! debtor's conversations today, the point's unanswered attempts) move to the first
//! allowed minute; [`reflow`] does the same for the debtor's other accounts.

use jiff::{Timestamp, ToSpan};
use uuid::Uuid;

use super::{channel_for_attempt, Decision, Planner};
use crate::{
    caps::Call,
    contact::{local_day, ordinal, Attempt},
    event::{
        ContactAttempted, ContactChannel, Direction, Disposition, HoldPlaced, HoldReason, HoldScope,
    },
    policy::Policy,
    state::{bucket, AccountState, Status},
    task::{Channel, Task, TaskKind},
};

/// Moves the open calls of `state`'s account that break a cap or use a retired contact
/// point, after a contact with the same debtor on another account (`cause`) changed the
/// debtor's ledger (which `state.ledger` already holds).
#[must_use]
pub fn reflow(
    state: &AccountState,
    open: &[Task],
    cause: Uuid,
    policy: &Policy,
    now: Timestamp,
) -> Decision {
    let ids = Uuid::new_v5(&cause, format!("reflow:{}", state.account_id).as_bytes());
    let mut p = Planner::new(cause, ids, policy, now, state.clone(), open);
    p.reflow_calls("after a contact with the debtor on another account");
    p.finish()
}

/// A task's reason without the notes of earlier moves.
fn base_reason(reason: &str) -> &str {
    reason
        .find(" (moved from ")
        .map_or(reason, |i| &reason[..i])
}

impl Planner<'_> {
    pub(super) fn contact_attempted(&mut self, d: &ContactAttempted, seen: bool) {
        let attempt = Attempt::from_event(d, self.cause, self.now);
        self.state.debtor_id = Some(d.debtor().to_owned());
        let old = self.state.ledger.upsert(attempt.clone());
        self.ledger.push(attempt.clone());
        let tz = self.state.zone();
        let day = local_day(d.started_at, &tz);
        let talks = self.state.ledger.conversations_on(day, &tz);
        let third = self.state.ledger.third_party_conversations_on(day, &tz);
        let tries = self
            .state
            .ledger
            .attempts_on(&self.state.account_id, day, &tz);
        let disposition = d.disposition.map(|x| format!(", {x}")).unwrap_or_default();
        let correction = match &old {
            Some(o) => format!(
                " (a correction of the report of {}: {} {}, counted once)",
                o.started_at, o.result, o.party
            ),
            None => String::new(),
        };
        self.note(
            "contact_attempted",
            format!(
                "{} {} attempt {}: {}, party {}{disposition}{correction}; on {day}: {} \
                 conversation(s) with the debtor, {third} with third parties, {tries} \
                 attempt(s) on this account",
                d.direction, d.channel, d.attempt_id, d.result, d.party, talks
            ),
        );
        // Unknown to collections: no billing event has been applied to it.
        let known = seen
            && (self.state.currency.is_some()
                || self.state.failed_payments > 0
                || !self.state.promises.is_empty());
        if !known {
            self.note(
                "decision",
                "contact attempt for an account collections does not know: recorded, nothing \
                 planned",
            );
            return;
        }
        if attempt.reached_debtor() && self.state.lost_contact {
            self.state.lost_contact = false;
            self.note("decision", "the debtor was reached again: contact regained");
            self.cancel_where("the debtor was reached again", |t| {
                matches!(t.kind, TaskKind::ContactRepair | TaskKind::ThirdPartyCall)
            });
        }
        self.record_disposition(d, old.as_ref());
        if self.state.status == Status::Delinquent {
            match (d.disposition, d.callback_at) {
                (Some(Disposition::CallbackRequested), Some(at)) => self.plan_callback(d, at),
                _ if attempt.is_conversation()
                    && self.state.open_promise().is_none()
                    && !self.state.plan_on_time()
                    && !matches!(
                        d.disposition,
                        Some(Disposition::PromiseMade | Disposition::ClaimsPaid)
                    ) =>
                {
                    self.call_on_a_later_day(d.started_at, talks);
                }
                _ => {}
            }
            if d.result.retires_point() {
                if let Some(point) = &d.contact_point_id {
                    self.note(
                        "decision",
                        format!("contact point {point} retired: {}", d.result),
                    );
                }
            }
            if !attempt.reached_debtor() && d.direction == Direction::Outbound {
                self.check_lost_contact();
            }
        }
        let why = if attempt.is_conversation() {
            format!("{} conversation with the debtor on {day}", ordinal(talks))
        } else {
            format!("{} attempt {}", d.channel, d.result)
        };
        self.reflow_calls(&format!("after the {why}"));
    }

    /// What a connected contact came to, beyond the plan.
    fn record_disposition(&mut self, d: &ContactAttempted, old: Option<&Attempt>) {
        // A correction replaces the earlier report: a refusal it withdraws is no longer
        // counted, and one it repeats is not counted twice.
        let was_refused = old.is_some_and(|o| o.disposition == Some(Disposition::Refused));
        if was_refused && d.disposition != Some(Disposition::Refused) {
            self.state.refusals = self.state.refusals.saturating_sub(1);
            self.note(
                "decision",
                format!(
                    "the correction withdraws a refusal ({} refusal(s))",
                    self.state.refusals
                ),
            );
        }
        let Some(disposition) = d.disposition else {
            return;
        };
        match disposition {
            Disposition::ThirdPartyRefused => {
                self.state.third_party_refused = true;
                self.note(
                    "decision",
                    "a contact person refused: no third-party call for this account again",
                );
                self.cancel_where("a contact person refused to pass messages", |t| {
                    t.kind == TaskKind::ThirdPartyCall
                });
            }
            Disposition::Refused if was_refused => {}
            Disposition::Refused => {
                self.state.refusals = self.state.refusals.saturating_add(1);
                self.note(
                    "decision",
                    format!(
                        "the debtor refused to pay ({} refusal(s)): the tone is now {}",
                        self.state.refusals,
                        self.tone()
                    ),
                );
            }
            Disposition::ClaimsPaid => {
                let until = d.started_at + self.policy.contacts.claims_paid_hold;
                if until > self.now && self.state.calls_held_until.is_none_or(|h| h < until) {
                    self.state.calls_held_until = Some(until);
                }
                if self.state.status == Status::Delinquent
                    && self.has_open(TaskKind::PaymentVerification).is_none()
                {
                    self.plan(
                        TaskKind::PaymentVerification,
                        Channel::None,
                        self.now,
                        format!(
                            "the debtor says the money was paid: verify the payment (calls \
                             held until {until})"
                        ),
                        None,
                    );
                }
            }
            Disposition::Dispute | Disposition::Hardship | Disposition::CeaseRequest => {
                // The matching hold, as if placed by the desk: scope all, reviewed by the
                // policy's default for its reason, released by a `hold.released` naming
                // `contact:<attempt_id>`.
                let reason = match disposition {
                    Disposition::Dispute => HoldReason::Dispute,
                    Disposition::Hardship => HoldReason::Hardship,
                    _ => HoldReason::CeaseCommunication,
                };
                self.note(
                    "decision",
                    format!("the debtor raised {disposition}: a {reason} hold is placed"),
                );
                self.hold_placed(&HoldPlaced {
                    account_id: d.account_id.clone(),
                    hold_id: format!("contact:{}", d.attempt_id),
                    reason,
                    scope: HoldScope::All,
                    placed_at: d.started_at,
                    review_at: None,
                    pause_dpd: false,
                    placed_by: d.agent_id.clone().unwrap_or_else(|| "contact".to_owned()),
                    case_ref: None,
                });
            }
            Disposition::PromiseMade => self.note(
                "decision",
                "recorded: a promise was made (its terms arrive as promise.made)",
            ),
            Disposition::CallbackRequested | Disposition::Other => {}
        }
    }

    /// The debtor asked to be called back at `at`: the callback replaces the next
    /// collection call (and an earlier callback), at that minute moved into the window
    /// and the daily caps.
    fn plan_callback(&mut self, d: &ContactAttempted, at: Timestamp) {
        self.cancel_where(
            &format!("replaced by the callback the debtor asked for at {at}"),
            |t| matches!(t.kind, TaskKind::CollectionCall | TaskKind::Callback),
        );
        let channel = match d.channel {
            ContactChannel::PhoneWork => Channel::PhoneWork,
            ContactChannel::PhoneHome => Channel::PhoneHome,
            _ => Channel::PhoneMobile,
        };
        let due = self.next_allowed(at.max(self.now));
        let moved = if due == at {
            String::new()
        } else {
            " (moved into the contact window)".to_owned()
        };
        self.plan(
            TaskKind::Callback,
            channel,
            due,
            format!("the debtor asked to be called back at {at}{moved}"),
            None,
        );
    }

    /// A conversation without a promise: the next collection call is on the next calling
    /// day (by the bucket's spacing), at the hour the debtor was reached, and the cadence
    /// starts again from its first attempt.
    fn call_on_a_later_day(&mut self, started_at: Timestamp, talks: u32) {
        let tz = self.state.zone();
        let local = started_at.to_zoned(tz.clone());
        let gap = (*self
            .policy
            .cadence
            .days_between_attempts
            .get(bucket(self.state.dpd(self.now))))
        .max(1);
        let Ok(next) = local
            .date()
            .checked_add(i64::from(gap).days())
            .and_then(|d| d.to_datetime(local.time()).to_zoned(tz))
        else {
            return;
        };
        let due = self.next_allowed(next.timestamp().max(self.now));
        self.cancel_where(
            "the debtor was reached: the next call is on a later day",
            |t| t.kind == TaskKind::CollectionCall,
        );
        let channel = channel_for_attempt(1, &self.policy.channel_mix);
        self.plan(
            TaskKind::CollectionCall,
            channel,
            due,
            format!(
                "{} conversation with the debtor on {} without a promise: next call on a \
                 later day",
                ordinal(talks),
                local.date()
            ),
            None,
        );
    }

    /// After an attempt that reached nobody: `lost_contact_after` attempts in a row over
    /// at least `lost_contact_min_days` days, or every known contact point retired, make
    /// the account `lost_contact`: a `contact_repair` task and, as domain rule 8 allows
    /// only now, a third-party call.
    fn check_lost_contact(&mut self) {
        if self.state.lost_contact {
            return;
        }
        let c = &self.policy.contacts;
        let (n, days) = self.state.ledger.unreached_run(&self.state.zone());
        let by_run = c.lost_contact_after > 0
            && n >= c.lost_contact_after
            && days >= i64::from(c.lost_contact_min_days);
        let by_points = self.state.ledger.every_point_retired();
        if !by_run && !by_points {
            return;
        }
        let why = if by_points {
            "every known contact point of the debtor is retired".to_owned()
        } else {
            format!("{n} attempts in a row over {days} days reached nobody")
        };
        self.state.lost_contact = true;
        self.note("lost_contact", format!("lost contact: {why}"));
        if self.has_open(TaskKind::ContactRepair).is_none() {
            self.plan(
                TaskKind::ContactRepair,
                Channel::None,
                self.now,
                format!("lost contact ({why}): find a way to reach the debtor"),
                None,
            );
        }
        if self.policy.contacts.third_party_when_lost
            && self.has_open(TaskKind::ThirdPartyCall).is_none()
        {
            self.plan_escalation(TaskKind::ThirdPartyCall, format!("lost contact ({why})"));
        }
    }

    /// Moves every open call to the debtor that now breaks a cap (or goes to a retired
    /// contact point) to the first allowed minute, through another point or phone where
    /// the mix has one: cancelled and planned again, with the cap in the reason.
    pub(super) fn reflow_calls(&mut self, after: &str) {
        let calls: Vec<Task> = self
            .open
            .iter()
            .filter(|t| t.channel.is_phone() && !t.kind.is_internal())
            .cloned()
            .collect();
        for t in calls {
            let retired = t
                .contact_point_id
                .as_deref()
                .is_some_and(|p| self.state.ledger.point_retired(p));
            let from = t.due_at.max(self.now);
            let planned: Vec<Timestamp> = self
                .open
                .iter()
                .chain(self.schedule.iter())
                .filter(|o| {
                    o.task_id != t.task_id && o.channel.is_phone() && o.kind != TaskKind::Callback
                })
                .map(|o| o.due_at)
                .collect();
            let (at, why) =
                crate::caps::first_allowed(from, &self.state, &planned, self.policy, Call::of(&t));
            // Compared with `from`, not the due instant: a call already due but not yet
            // fired (the scheduler is behind) is not over a cap just because it is late.
            if at <= from && !retired {
                continue;
            }
            let why = if retired {
                "its contact point was retired".to_owned()
            } else {
                why.unwrap_or_else(|| "over a cap".to_owned())
            };
            let id = t.task_id;
            self.cancel_where(&format!("moved {after}: {why}"), |o| o.task_id == id);
            // The caps' note is added by `plan`; a retired point is said here.
            let retired_note = if retired {
                ": its contact point was retired"
            } else {
                ""
            };
            self.plan(
                t.kind,
                t.channel,
                from,
                format!(
                    "{} (moved from {} {after}{retired_note})",
                    base_reason(&t.reason),
                    t.due_at
                ),
                t.promise_id.as_deref(),
            );
            if let Some(planned) = self.schedule.last_mut() {
                planned.attempt = t.attempt;
            }
        }
    }
}
