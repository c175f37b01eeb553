//! A collection call fired: the attempt is counted (daily count, frequency caps) and,
//! while the account is delinquent with no open promise and no other call, the next
//! attempt is planned by the cadence, the daily cap and the DPD bucket's spacing.

use jiff::Timestamp;
use uuid::Uuid;

use super::{channel_for_attempt, Decision, JournalEntry, Planner};
use crate::{
    policy::Policy,
    state::{bucket, AccountState, Status},
    task::{Task, TaskKind},
};

/// What happens when a collection call fires (its `task.due` is out): the attempt is
/// counted and, while the account is still delinquent with no open promise, the next
/// attempt is planned at the next cadence hour not yet tried today (else tomorrow's
/// first), through the channel the mix gives that attempt number, within the daily cap.
///
/// A fired `callback` plans the next collection call the same way (it replaced the one
/// that was open), from attempt 1, and is not counted by the frequency caps (the debtor
/// consented to it). Any other task on a phone channel is only recorded as a call attempt
/// (for the frequency caps); see [`crate::fire::FireOutcome::Due`] for which fired tasks come here.
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
    let mut p = Planner::new(due_event_id, due_event_id, policy, now, state.clone(), open);
    p.call_fired(fired);
    p.finish()
}

impl Planner<'_> {
    pub(super) fn call_fired(&mut self, fired: &Task) {
        let tz = self.state.zone();
        let local = self.now.to_zoned(tz.clone());
        let today = local.date();
        // A callback the debtor asked for is placed with their consent: Regulation F does
        // not count it (12 CFR 1006.14(b)(3)(i)), and it replaced the next collection
        // call, so the cadence resumes after it from its first attempt.
        let callback = fired.kind == TaskKind::Callback;
        if fired.channel.is_phone() && !callback {
            crate::caps::record_call(&mut self.state, self.now);
        }
        if callback {
            self.journal.push(JournalEntry {
                kind: "call_fired",
                detail: format!("callback due via {}", fired.channel),
                task_id: Some(fired.task_id),
            });
        } else if fired.kind != TaskKind::CollectionCall {
            self.journal.push(JournalEntry {
                kind: "call_fired",
                detail: format!("{} due via {}", fired.kind, fired.channel),
                task_id: Some(fired.task_id),
            });
            return;
        } else {
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
        }
        if self.state.status != Status::Delinquent {
            self.note("decision", "no next attempt: the account is not delinquent");
            return;
        }
        if let Some(p) = self.state.open_promise() {
            let detail = format!("no next attempt: promise {} is open", p.promise_id);
            self.note("decision", detail);
            return;
        }
        if let Some(a) = self
            .state
            .open_arrangement()
            .filter(|_| self.state.plan_on_time())
        {
            let detail = format!(
                "no next attempt: arrangement {} is being paid on time",
                a.arrangement_id
            );
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
        let (due, hour, why) = self.next_cadence_slot();
        let attempt = if callback { 1 } else { fired.attempt + 1 };
        let channel = channel_for_attempt(attempt, &self.policy.channel_mix);
        if self.plan(
            TaskKind::CollectionCall,
            channel,
            due,
            format!(
                "{}attempt {attempt}: {why}; vary the hour ({} local) and the phone",
                if callback { "after the callback, " } else { "" },
                hour.strftime("%H:%M")
            ),
            None,
        ) {
            if let Some(t) = self.schedule.last_mut() {
                t.attempt = attempt;
            }
        }
        self.open_bucket_escalations();
    }

    /// The next call by the cadence: the next cadence hour not yet tried today, else the
    /// first hour of the next calling day (the DPD bucket's spacing), within the daily
    /// attempt cap and the contact window. Returns the instant, the cadence hour and why.
    pub(super) fn next_cadence_slot(&self) -> (Timestamp, jiff::civil::Time, String) {
        let tz = self.state.zone();
        let local = self.now.to_zoned(tz.clone());
        let today = local.date();
        let cadence = &self.policy.cadence;
        let first = cadence.hours[0];
        let bucket = bucket(self.state.dpd(self.now));
        let gap = *cadence.days_between_attempts.get(bucket);
        let next_day = today
            .checked_add(jiff::Span::new().days(gap))
            .unwrap_or(today);
        let calls_today = if self.state.calls_day == Some(today) {
            self.state.calls_today
        } else {
            0
        };
        let (day, hour, why) = if calls_today >= cadence.attempts_per_day {
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
        (self.next_allowed(at.max(self.now)), hour, why)
    }
}
