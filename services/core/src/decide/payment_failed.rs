//! `payment.failed`: the account becomes delinquent (learning the customer's zone, and
//! planning again the open tasks that zone puts outside the contact window), the failed
//! instalment is recorded, and a collection call is planned unless a promise is pending
//! or a call is already open.

use uuid::Uuid;

use super::{DomainError, Planner};
use crate::{
    event::PaymentFailed,
    state::Status,
    task::{Task, TaskKind},
    window,
};

impl Planner<'_> {
    /// The customer's zone became known (or changed) after tasks were planned in another:
    /// open tasks that contact the customer and now fall outside the window are cancelled
    /// and planned again inside it (a reminder still before its promise, or not at all).
    fn replan_for_zone(&mut self, previous: &str) {
        let tz = self.state.zone();
        let w = self
            .state
            .window(&self.policy.contact_window, self.now)
            .into_owned();
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
            if self.plan(
                t.kind,
                t.channel,
                due,
                format!("{} (planned again in the customer's zone)", t.reason),
                t.promise_id.as_deref(),
            ) {
                if let Some(planned) = self.schedule.last_mut() {
                    planned.attempt = t.attempt;
                }
            }
        }
    }

    pub(super) fn payment_failed(&mut self, d: &PaymentFailed) -> Result<(), DomainError> {
        self.check_currency(d.overdue_amount)?;
        if let Some(tz) = &d.customer.timezone {
            if *tz != self.state.timezone {
                let previous = std::mem::replace(&mut self.state.timezone, tz.clone());
                self.replan_for_zone(&previous);
                // The debtor's local days changed with the zone: calls planned under the
                // daily caps of the old days may fall on a day already over them.
                self.reflow_calls("after the customer's zone changed");
            }
        }
        self.state.failed_payments += 1;
        self.state.failed_installments.insert(d.installment.number);
        // Queues are independent: a payment billing reported after this failure may have
        // been applied first. Its balance is the later statement and stands.
        let latest = self
            .state
            .state_balance(d.overdue_amount.minor, self.event_time);
        let settled_since = self.state.settled_at.is_some_and(|s| s > self.event_time);
        if !latest && settled_since {
            if self.state.status != Status::Delinquent {
                self.state.status = Status::Cured;
            }
            self.note(
                "event_applied",
                format!(
                    "payment.failed: instalment {} due {} failed ({}), reported at {}; a later \
                     payment settled the overdue since: recorded, nothing planned",
                    d.installment.number, d.installment.due_date, d.failure_reason, self.event_time
                ),
            );
            return Ok(());
        }
        self.state.status = Status::Delinquent;
        self.state.unpaid_due_dates.insert(d.installment.due_date);
        let reported = self.event_time;
        let mut note_reported = |key: String| {
            let at = self.state.failed_reported_at.entry(key).or_insert(reported);
            *at = (*at).max(reported);
        };
        note_reported(d.installment.due_date.to_string());
        if d.installment.number == 1 {
            note_reported(crate::state::FIRST_INSTALMENT_KEY.to_owned());
        }
        if latest {
            // (A late failure says nothing about the reminder for a due date announced
            // since.)
            self.cancel_where("the instalment it announced failed", |t| {
                t.kind == TaskKind::PreDueReminder
            });
        }
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
        if let Some(a) = self
            .state
            .open_arrangement()
            .filter(|_| self.state.plan_on_time())
        {
            let detail = format!(
                "no new call: arrangement {} is being paid on time",
                a.arrangement_id
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
}
