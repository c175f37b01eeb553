//! `promise.broken`: the promise's tasks are cancelled, the broken count raises the tone,
//! and unless the account is cured or another promise is pending, the open call is
//! replaced by one in the escalated tone, with the escalation step's extra tasks.

use super::Planner;
use crate::{
    event::PromiseBroken,
    state::{PromiseRecord, PromiseStatus, Status},
    task::TaskKind,
};

impl Planner<'_> {
    pub(super) fn promise_broken(&mut self, d: &PromiseBroken) {
        let mut status = self.state.promise_mut(&d.promise_id).map(|p| p.status);
        // A break reported before the money that kept the promise (a payment or a cure,
        // applied first from its queue) came first: the promise was broken, and the
        // money came after it.
        let reported = self.event_time;
        // Likewise a break reported before the promise that superseded it was made (that
        // `promise.made` applied first): broken first, then the new promise.
        let made_at = self
            .state
            .promises
            .iter()
            .find(|p| p.promise_id == d.promise_id)
            .and_then(|p| p.made_at);
        let superseded_at = self
            .state
            .promises
            .iter()
            .filter_map(|q| q.made_at)
            .filter(|m| made_at.is_some_and(|mine| *m > mine))
            .min();
        // `late`: events after the break were applied before it. `superseded_late`: among
        // them the newer promise, which cancelled the calls before it, so a call open now
        // was planned after the break. (Money that "kept" the promise after the break
        // kept nothing: the call it planned is replaced as any call is.)
        let mut late = false;
        let mut superseded_late = false;
        if let Some(p) = self.state.promise_mut(&d.promise_id) {
            if p.status == PromiseStatus::Kept && p.kept_at.is_some_and(|k| k > reported) {
                p.status = PromiseStatus::Open;
                p.kept_at = None;
                status = Some(PromiseStatus::Open);
                late = true;
            } else if p.status == PromiseStatus::Superseded
                && superseded_at.is_some_and(|s| s > reported)
            {
                status = Some(PromiseStatus::Open);
                late = true;
                superseded_late = true;
            }
        }
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
                    p.broken_at = Some(reported);
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
                    kept_at: None,
                    broken_at: Some(reported),
                });
            }
        }
        // A broken promise means money is owed (a cure reported after the break aside):
        // on a current or cured account too, whichever report comes first.
        let cured_since = self.state.settled_at.is_some_and(|s| s > self.event_time);
        if !cured_since {
            self.state.status = Status::Delinquent;
        } else if self.state.status == Status::Current {
            // Owed at the break, paid since: cured, nothing to call about.
            self.state.status = Status::Cured;
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
        if late {
            // What was planned since (the newer promise's tasks) was planned in the tone of
            // one broken promise fewer.
            self.replan_for_tone(
                reported,
                superseded_late,
                &format!("promise {} broken, reported late", d.promise_id),
            );
            // The break came with no promise pending: its escalation step stands, though
            // the newer promise holds the call back.
            if !cured_since {
                self.open_broken_escalations();
            }
        }
        self.call_after_break(&d.promise_id, &d.reason, superseded_late);
    }

    /// After a broken promise: unless the account is cured or another promise is pending,
    /// the open call is replaced by one in the escalated tone, with the escalation step's
    /// extra tasks. Also run when a broken promise's `promise.made` arrives late and
    /// supersedes an older promise that held the calls back.
    ///
    /// `late`: the break is applied after a newer promise that superseded it (its queue
    /// was behind): an open call was planned after the break and stays; the escalation
    /// step was opened by the caller, unless a cure came since.
    pub(super) fn call_after_break(&mut self, promise_id: &str, why: &str, late: bool) {
        let n = self.state.broken_promises;
        if self.state.status == Status::Cured {
            self.note("decision", "account is cured: nothing planned");
            return;
        }
        if let Some(open) = self.state.open_promise() {
            let detail = format!("no new call: promise {} is pending", open.promise_id);
            self.note("decision", detail);
            return;
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
            return;
        }
        if late {
            // A call open now was planned after the break (the later promise cancelled the
            // calls before it): it keeps its instant, in the escalated tone (re-planned
            // above); only a missing one is planned.
            if self.has_open(TaskKind::CollectionCall).is_some() {
                return;
            }
        } else {
            // Replace any open call by one in the escalated tone.
            self.cancel_where("replaced by an escalated call", |t| {
                t.kind == TaskKind::CollectionCall
            });
        }
        self.plan_collection_call(format!(
            "promise {promise_id} broken ({why}); {n} broken promise(s)"
        ));
        if !late {
            self.open_broken_escalations();
        }
    }

    /// Opens the tasks the escalation step of the broken-promise count calls for (once).
    pub(super) fn open_broken_escalations(&mut self) {
        let n = self.state.broken_promises;
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
}
