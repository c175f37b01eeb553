//! `payment.received`: the overdue falls, an open promise paid in full within its grace
//! is kept, a zero overdue cures the account (every open task cancelled), a partial
//! payment marks the account as able to pay part, and a new due date plans the pre-due
//! reminder its segment calls for (domain.md rule 9).

use super::{channel_for_attempt, DomainError, Planner};
use crate::{
    event::PaymentReceived,
    state::{PromiseStatus, Status},
    task::TaskKind,
};

impl Planner<'_> {
    pub(super) fn payment_received(&mut self, d: &PaymentReceived) -> Result<(), DomainError> {
        self.check_currency(d.amount)?;
        let before = self.state.overdue_minor;
        // With `overdue_amount_after`, billing states the balance: it stands unless a later
        // statement (a failure or a payment reported after this one, applied first from
        // another queue) is already known. Without it the payment is a delta on whatever
        // is known, which depends on arrival order (ARCHITECTURE.md, "Arrival order").
        let latest = match d.overdue_amount_after {
            Some(after) => self.state.state_balance(after.minor, self.event_time),
            None => {
                self.state.overdue_minor = (before - d.amount.minor).max(0);
                if self.state.overdue_minor == 0
                    && self.state.settled_at.is_none_or(|s| s < self.event_time)
                {
                    self.state.settled_at = Some(self.event_time);
                }
                true
            }
        };
        // What this payment left owing, by its own report.
        let left_owing = d
            .overdue_amount_after
            .map_or(self.state.overdue_minor, |a| a.minor);
        let became_delinquent = latest && left_owing > 0 && self.state.status != Status::Delinquent;
        if became_delinquent {
            // Billing says money is still overdue: the account is delinquent, whether or not
            // the failure that made it so has been applied yet.
            self.state.status = Status::Delinquent;
        }
        let recent = &mut self.state.recent_payments;
        recent.push(crate::state::RecentPayment {
            received_at: d.received_at,
            minor: d.amount.minor,
            settled: d.overdue_amount_after.is_some_and(|a| a.minor == 0),
            payment_id: Some(d.payment_id.clone()),
        });
        recent.sort_by_key(|p| p.received_at);
        if recent.len() > crate::state::RECENT_PAYMENTS {
            recent.remove(0);
        }
        if self
            .state
            .last_payment
            .as_ref()
            .is_none_or(|l| l.received_at <= d.received_at)
        {
            self.state.last_payment = Some(crate::state::LastPayment {
                amount: d.amount,
                received_at: d.received_at,
            });
        }
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
            .open_promise_at(d.received_at)
            .and_then(|i| self.state.promises.get_mut(i))
        {
            let deadline = p.promised_at.map(|t| t + grace);
            // Money received before the promise was made (applied late from its queue)
            // was not paid on it.
            let after_made = p.made_at.is_none_or(|made| d.received_at >= made);
            if after_made && deadline.is_some_and(|dl| d.received_at <= dl) {
                p.paid_minor += d.amount.minor;
                if p.amount.is_some_and(|a| p.paid_minor >= a.minor) {
                    p.status = PromiseStatus::Kept;
                    p.kept_at = Some(d.received_at);
                    kept = Some(p.promise_id.clone());
                }
            }
        }
        if let Some(id) = &kept {
            self.note("promise_kept", format!("promise {id} kept"));
            let reason = format!("promise {id} kept");
            self.cancel_where(&reason, |t| t.promise_id.as_deref() == Some(id.as_str()));
        }

        if latest && self.state.overdue_minor == 0 {
            // A promise made after this payment (applied first from its queue) is the
            // customer's later word: it stays open with its tasks, and the account with it.
            // Whatever followed from it (a break, the call after it) stands too, as does a
            // break reported after the payment.
            let later: Vec<String> = self
                .state
                .promises
                .iter()
                .filter(|p| {
                    p.made_at.is_some_and(|made| made > d.received_at)
                        || p.broken_at.is_some_and(|broken| broken > d.received_at)
                })
                .map(|p| p.promise_id.clone())
                .chain(self.arrangement_made_after(d.received_at))
                .collect();
            self.keep_promises_open_at(d.received_at);
            if self.state.status == Status::Delinquent && later.is_empty() {
                self.state.status = Status::Cured;
                self.note("account_cured", "overdue paid in full: account cured");
            }
            self.state.unpaid_due_dates.clear();
            self.state.failed_reported_at.clear();
            self.state.first_installment_default = false;
            self.state.partial_payer = false;
            // A hold's review stays: the hold is still in force, and the review decides
            // whether it may end (a cure does not settle a dispute).
            if later.is_empty() {
                self.cancel_where("account cured", |t| t.kind != TaskKind::HoldReview);
            } else {
                self.cancel_where("account cured", |t| {
                    t.kind != TaskKind::HoldReview
                        && t.promise_id.as_ref().is_some_and(|id| !later.contains(id))
                });
                // A break reported after the cure, applied before it while the promise
                // this payment kept still held the calls back, plans its call now.
                let received = d.received_at;
                let broken_after = self
                    .state
                    .promises
                    .iter()
                    .filter(|p| p.broken_at.is_some_and(|b| b > received))
                    .max_by_key(|p| p.broken_at)
                    .map(|p| p.promise_id.clone());
                if let Some(broken) = broken_after {
                    if self.state.open_promise().is_none()
                        && self.has_open(TaskKind::CollectionCall).is_none()
                    {
                        self.call_after_break(
                            &broken,
                            "reported after the payment, applied before it",
                            false,
                        );
                    }
                }
            }
        } else if !latest && left_owing == 0 {
            // A cure reported before failures already applied: what failed before it is
            // paid, what failed after it is still owed.
            self.state.settle_failures_before(self.event_time);
            // The cure ended the account's partial paying; a part paid since starts again.
            let cured_at = d.received_at;
            self.state.partial_payer = self
                .state
                .recent_payments
                .iter()
                .any(|p| p.received_at > cured_at && !p.settled);
            // Promises open at the cure were kept by it; the failure since then would
            // have planned a call, with no promise pending.
            let kept_by_cure = self.keep_promises_open_at(d.received_at);
            for id in &kept_by_cure {
                self.note("promise_kept", format!("promise {id} kept by the cure"));
                let reason = format!("promise {id} kept");
                self.cancel_where(&reason, |t| t.promise_id.as_deref() == Some(id.as_str()));
            }
            if !kept_by_cure.is_empty()
                && self.state.open_promise().is_none()
                && self.has_open(TaskKind::CollectionCall).is_none()
            {
                self.plan_collection_call(format!(
                    "promise(s) kept by the payment of {}, overdue {after} since",
                    d.received_at
                ));
            }
            self.note(
                "decision",
                format!(
                    "payment settled the overdue at {}, before failures reported since: \
                     those stand",
                    d.received_at
                ),
            );
        } else if left_owing > 0 && self.state.status == Status::Delinquent {
            self.state.partial_payer = true;
            self.state.partial_this_period = true;
            self.note(
                "decision",
                format!("partial payment: {after} still overdue, plan kept, account can pay part"),
            );
            if let Some(id) = &kept {
                self.follow_up_kept_promise(id, &after.to_string(), d.received_at);
            } else if became_delinquent
                && self.state.open_promise().is_none()
                && self.state.open_arrangement().is_none()
                && self.has_open(TaskKind::CollectionCall).is_none()
            {
                self.plan_collection_call(format!(
                    "payment {} received with {after} still overdue",
                    d.payment_id
                ));
            }
        }
        // Money on an arrangement goes to its earliest unmet instalment; a cure closes it.
        self.allocate_payment(&d.payment_id, d.received_at, d.amount.minor);
        if latest && self.state.overdue_minor == 0 {
            self.close_arrangement_on_cure(d.received_at);
        }
        self.reversal_waiting(&d.payment_id, d.amount.minor);
        if let Some(next) = new_period {
            self.plan_pre_due(next);
            // A new billing period starts with this announcement.
            self.state.partial_this_period = false;
        }
        Ok(())
    }

    /// A cure at `at`: the promises open at that instant are kept by it (returned), among
    /// them one a later promise superseded since (applied first from its queue).
    /// Promises made after it stand.
    fn keep_promises_open_at(&mut self, at: jiff::Timestamp) -> Vec<String> {
        let made: Vec<jiff::Timestamp> = self
            .state
            .promises
            .iter()
            .filter_map(|p| p.made_at)
            .collect();
        let mut kept = Vec::new();
        for p in &mut self.state.promises {
            if p.made_at.is_some_and(|m| m > at) {
                continue;
            }
            let superseded_after = p.status == PromiseStatus::Superseded
                && p.made_at.is_some_and(|mine| {
                    made.iter()
                        .filter(|m| **m > mine)
                        .min()
                        .is_some_and(|next| *next > at)
                });
            if p.status == PromiseStatus::Open || superseded_after {
                p.status = PromiseStatus::Kept;
                p.kept_at = Some(at);
                kept.push(p.promise_id.clone());
            }
        }
        kept
    }

    /// A promise smaller than the overdue was kept: its check is cancelled and the calls
    /// were cancelled when it was made, so without this the account would owe money with
    /// nothing planned. The next collection call follows the cadence, unless another
    /// promise is still open or a call is already planned.
    ///
    /// `kept_at` is when the money that kept it came: a break of another promise reported
    /// after that, applied before it while this promise still held the calls back, plans
    /// its escalated call now, as it would have.
    pub(super) fn follow_up_kept_promise(
        &mut self,
        promise_id: &str,
        still_overdue: &str,
        kept_at: jiff::Timestamp,
    ) {
        if let Some(p) = self.state.open_promise() {
            let detail = format!(
                "promise {promise_id} kept; no call: promise {} is open",
                p.promise_id
            );
            self.note("decision", detail);
            return;
        }
        if let Some(t) = self.has_open(TaskKind::CollectionCall) {
            let detail = format!(
                "promise {promise_id} kept; call {} is already open",
                t.task_id
            );
            self.note("decision", detail);
            return;
        }
        let broken_since = self
            .state
            .promises
            .iter()
            .filter(|p| p.broken_at.is_some_and(|b| b > kept_at))
            .max_by_key(|p| p.broken_at)
            .map(|p| p.promise_id.clone());
        if let Some(broken) = broken_since {
            self.call_after_break(
                &broken,
                "reported after the payment, applied before it",
                false,
            );
            return;
        }
        let (due, hour, why) = self.next_cadence_slot();
        let channel = channel_for_attempt(1, &self.policy.channel_mix);
        self.plan(
            TaskKind::CollectionCall,
            channel,
            due,
            format!(
                "promise {promise_id} kept, {still_overdue} still overdue: next call by the cadence ({why}, {} local)",
                hour.strftime("%H:%M")
            ),
            None,
        );
        self.open_bucket_escalations();
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
}
