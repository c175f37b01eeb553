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
            if let Some(id) = &kept {
                self.follow_up_kept_promise(id, &after.to_string());
            }
        }
        if let Some(next) = new_period {
            self.plan_pre_due(next);
            // A new billing period starts with this announcement.
            self.state.partial_this_period = false;
        }
        Ok(())
    }

    /// A promise smaller than the overdue was kept: its check is cancelled and the calls
    /// were cancelled when it was made, so without this the account would owe money with
    /// nothing planned. The next collection call follows the cadence, unless another
    /// promise is still open or a call is already planned.
    fn follow_up_kept_promise(&mut self, promise_id: &str, still_overdue: &str) {
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
