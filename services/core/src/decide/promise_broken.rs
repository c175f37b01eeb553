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
        // A broken promise means money is owed, as a promise made does: whichever of the
        // two arrives first, the account is delinquent after both.
        if self.state.status == Status::Current {
            self.state.status = Status::Delinquent;
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
}
