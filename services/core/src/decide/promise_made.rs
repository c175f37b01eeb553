//! `promise.made`: a promise supersedes any open one and pauses collection calls; its
//! reminder (before the promised time, inside the contact window), its check (after it)
//! and its expiry (after the grace) are planned, and a promise beyond the horizon goes to
//! supervisor review. A promise made before one already recorded is stale and plans
//! nothing.

use super::{DomainError, Planner};
use crate::caps::Call;
use crate::{
    event::PromiseMade,
    state::{PromiseRecord, PromiseStatus, Status},
    task::{Channel, TaskKind},
    window,
};

impl Planner<'_> {
    pub(super) fn promise_made(&mut self, d: &PromiseMade) -> Result<(), DomainError> {
        // A promise in another currency than the account's contradicts it: refused (to
        // the dead-letter queue) like a payment in another currency.
        self.check_currency(d.amount)?;
        if let Some(existing) = self.state.promise_mut(&d.promise_id) {
            let status = existing.status;
            let first_seen = existing.amount.is_none();
            if first_seen {
                existing.amount = Some(d.amount);
                existing.promised_at = Some(d.promised_at);
                existing.made_at = Some(self.event_time);
            }
            if first_seen && status == PromiseStatus::Broken {
                self.broken_promise_made_late(d);
                return Ok(());
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
        // While an arrangement is being paid, a promise is handled per policy.
        if self.promise_during_plan(&d.promise_id, d.amount, d.promised_at) {
            return Ok(());
        }
        // A payment billing reported after this promise, applied first from its queue,
        // settled the account: the promise was kept by it, nothing is planned (a failure
        // since then planned its own call).
        let settled_since = self
            .state
            .settled_at
            .is_some_and(|settled| settled > self.event_time);
        if settled_since {
            if self.state.status != Status::Delinquent {
                self.state.status = Status::Cured;
            }
            // Promises made before this one and still open when it was made were
            // superseded by it, whatever kept them since.
            let made = self.event_time;
            for p in &mut self.state.promises {
                if p.made_at.is_some_and(|m| m < made) && p.open_at(made) {
                    p.status = PromiseStatus::Superseded;
                    p.kept_at = None;
                }
            }
            self.state.promises.push(PromiseRecord {
                promise_id: d.promise_id.clone(),
                amount: Some(d.amount),
                promised_at: Some(d.promised_at),
                status: PromiseStatus::Kept,
                paid_minor: 0,
                made_at: Some(self.event_time),
                // Kept by the first cure after it was made.
                kept_at: self
                    .state
                    .recent_payments
                    .iter()
                    .filter(|p| p.settled && p.received_at > self.event_time)
                    .map(|p| p.received_at)
                    .min()
                    .or(self.state.settled_at),
                broken_at: None,
            });
            self.note(
                "event_applied",
                format!(
                    "promise.made: {} to pay {} by {}, made at {}; the overdue was paid in \
                     full since: recorded kept, nothing planned",
                    d.promise_id, d.amount, d.promised_at, self.event_time
                ),
            );
            return Ok(());
        }
        // A promise to pay means money is owed, on a cured account too (a new arrear the
        // failure of which is still on its way).
        self.state.status = Status::Delinquent;
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
                kept_at: None,
                broken_at: None,
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
        let made = self.event_time;
        let superseded: Vec<String> = self
            .state
            .promises
            .iter_mut()
            .filter(|p| p.open_at(made))
            .map(|p| {
                p.status = PromiseStatus::Superseded;
                p.kept_at = None;
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
        // Money received since the promise was made (applied first from its queue) counts
        // toward it, as it would have had the promise arrived first.
        let deadline = d.promised_at + self.policy.promise.grace;
        let paid: i64 = self
            .state
            .recent_payments
            .iter()
            .filter(|p| p.received_at >= made && p.received_at <= deadline)
            .map(|p| p.minor)
            .sum();
        let kept = paid >= d.amount.minor;
        let kept_at = self
            .state
            .recent_payments
            .iter()
            .filter(|p| p.received_at >= made && p.received_at <= deadline)
            .map(|p| p.received_at)
            .max();
        self.state.promises.push(PromiseRecord {
            promise_id: d.promise_id.clone(),
            amount: Some(d.amount),
            promised_at: Some(d.promised_at),
            status: if kept {
                PromiseStatus::Kept
            } else {
                PromiseStatus::Open
            },
            paid_minor: paid,
            made_at: Some(made),
            kept_at: kept_at.filter(|_| kept),
            broken_at: None,
        });
        if !kept {
            self.plan_promise_tasks(d);
            return Ok(());
        }
        self.note(
            "promise_kept",
            format!(
                "promise {} kept by {} received since it was made (applied before it)",
                d.promise_id,
                crate::Money {
                    minor: paid,
                    currency: d.amount.currency
                }
            ),
        );
        if self.state.status == Status::Delinquent && self.state.overdue_minor > 0 {
            let owing = self.state.overdue().to_string();
            self.follow_up_kept_promise(&d.promise_id, &owing, kept_at.unwrap_or(made));
        }
        Ok(())
    }

    /// The `promise.made` of a promise already reported broken (its queue was behind):
    /// it is recorded and plans nothing of its own, but as the customer's word at its
    /// time it supersedes the promises made before it, and if one of those was holding
    /// the calls back, the call the break would have planned is planned now.
    fn broken_promise_made_late(&mut self, d: &PromiseMade) {
        // (A cure reported at the very instant it was made is taken to follow it.)
        if self.state.settled_at.is_none_or(|s| s < self.event_time) {
            self.state.status = Status::Delinquent;
        } else if self.state.status == Status::Current {
            self.state.status = Status::Cured;
        }
        let made = self.event_time;
        let older: Vec<String> = self
            .state
            .promises
            .iter_mut()
            .filter(|p| p.open_at(made) && p.made_at.is_some_and(|m| m < made))
            .map(|p| {
                p.status = PromiseStatus::Superseded;
                p.kept_at = None;
                p.promise_id.clone()
            })
            .collect();
        self.note(
            "event_applied",
            format!(
                "promise.made for {} after its promise.broken: recorded, nothing planned",
                d.promise_id
            ),
        );
        if older.is_empty() {
            // Made after its break was reported (clocks of different systems), on an
            // account with no call: the break's call is planned now.
            if self.state.status == Status::Delinquent
                && self.state.open_promise().is_none()
                && self.has_open(TaskKind::CollectionCall).is_none()
            {
                self.call_after_break(&d.promise_id, "reported broken before it was made", false);
            }
            return;
        }
        for old in &older {
            self.note(
                "promise_superseded",
                format!(
                    "{old} superseded by {} (made later, since broken)",
                    d.promise_id
                ),
            );
            let reason = format!("promise {old} superseded by {}", d.promise_id);
            self.cancel_where(&reason, |t| t.promise_id.as_deref() == Some(old.as_str()));
        }
        self.call_after_break(&d.promise_id, "reported broken before it was made", false);
    }

    fn plan_promise_tasks(&mut self, d: &PromiseMade) {
        let tz = self.state.zone();
        let w = self
            .state
            .window(&self.policy.contact_window, self.now)
            .into_owned();
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
                    && self.capped(*due, Call::default()).0 >= d.promised_at)
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
}
