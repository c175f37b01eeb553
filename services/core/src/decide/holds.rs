//! `hold.placed`, `hold.released`, `contact.restricted`, `contact.unrestricted`: holds
//! and restrictions are recorded by id (in any arrival order, idempotently), and the open
//! tasks they forbid are cancelled (`hold:<reason>`, `restriction:<kind>[:<channel>]`)
//! and, where another channel or time is allowed, planned again there. While a hold that
//! stops all contact is in force no contact task is planned (`Planner::plan` refuses)
//! and the escalation ladder is frozen; a `hold_review` is the account's next step. On
//! release a delinquent account gets a collection call at the next allowed minute.

use super::Planner;
use crate::{
    event::{ContactRestricted, ContactUnrestricted, HoldPlaced, HoldReleased, HoldScope},
    hold::{HoldRecord, RestrictionRecord},
    state::Status,
    task::{Channel, Task, TaskKind},
    window,
};

fn scope_text(scope: &HoldScope) -> String {
    match scope {
        HoldScope::All => "all contact".to_owned(),
        HoldScope::Channels(list) => list
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The reason of a hold's review task names the hold, so its release finds it.
fn review_marker(hold_id: &str) -> String {
    format!("review of hold {hold_id} ")
}

impl Planner<'_> {
    pub(super) fn hold_placed(&mut self, d: &HoldPlaced) {
        let review_at = d
            .review_at
            .unwrap_or_else(|| d.placed_at + self.policy.holds.review_after(d.reason));
        match self.state.holds.iter_mut().find(|h| h.hold_id == d.hold_id) {
            Some(h) if h.placed_at.is_some() => {
                let id = h.hold_id.clone();
                self.note(
                    "event_applied",
                    format!("hold.placed for hold {id} again: already recorded, no change"),
                );
                return;
            }
            Some(h) => {
                // Its release arrived first (another queue): the hold is complete now,
                // and in force only between the two instants.
                h.reason = Some(d.reason);
                h.scope = Some(d.scope.clone());
                h.placed_at = Some(d.placed_at);
                h.review_at = Some(review_at);
                h.pause_dpd = d.pause_dpd;
            }
            None => self.state.holds.push(HoldRecord {
                hold_id: d.hold_id.clone(),
                reason: Some(d.reason),
                scope: Some(d.scope.clone()),
                placed_at: Some(d.placed_at),
                review_at: Some(review_at),
                pause_dpd: d.pause_dpd,
                released_at: None,
                outcome: None,
            }),
        }
        let record = self
            .state
            .holds
            .iter()
            .find(|h| h.hold_id == d.hold_id)
            .cloned();
        let Some(record) = record else { return };
        let stops_all = if record.stops_all() {
            " (stops all contact)"
        } else {
            ""
        };
        let pause = if d.pause_dpd { ", DPD paused" } else { "" };
        let released = match record.released_at {
            Some(r) => format!("; released at {r} (the release arrived first)"),
            None => String::new(),
        };
        self.note(
            "hold_placed",
            format!(
                "hold {}: {} on {}{stops_all}, placed at {}, review at {review_at}{pause}{released}",
                d.hold_id,
                d.reason,
                scope_text(&d.scope),
                d.placed_at
            ),
        );
        self.enforce_holds_and_restrictions();
        if record.released_at.is_some() {
            // Its release was applied first: what the release would have done in published
            // order (collection resumes when the hold ends) is done now.
            self.resume_after_hold(&format!(
                "hold {} placed after its release was applied",
                d.hold_id
            ));
        }
        if record.released_at.is_none()
            && !self.open.iter().chain(self.schedule.iter()).any(|t| {
                t.kind == TaskKind::HoldReview && t.reason.starts_with(&review_marker(&d.hold_id))
            })
        {
            let due = review_at.max(self.now);
            self.plan(
                TaskKind::HoldReview,
                Channel::None,
                due,
                format!(
                    "{}({}): decide whether collection may resume",
                    review_marker(&d.hold_id),
                    d.reason
                ),
                None,
            );
        }
    }

    pub(super) fn hold_released(&mut self, d: &HoldReleased) {
        match self.state.holds.iter_mut().find(|h| h.hold_id == d.hold_id) {
            None => {
                self.state.holds.push(HoldRecord {
                    hold_id: d.hold_id.clone(),
                    reason: None,
                    scope: None,
                    placed_at: None,
                    review_at: None,
                    pause_dpd: false,
                    released_at: Some(d.released_at),
                    outcome: Some(d.outcome),
                });
                self.note(
                    "event_applied",
                    format!(
                        "hold.released for hold {}, which is not known (yet): recorded; a \
                         placement arriving later is not in force after {}",
                        d.hold_id, d.released_at
                    ),
                );
                return;
            }
            Some(h) if h.released_at.is_some() => {
                let id = h.hold_id.clone();
                self.note(
                    "event_applied",
                    format!("hold.released for hold {id} again: already released, no change"),
                );
                return;
            }
            Some(h) => {
                h.released_at = Some(d.released_at);
                h.outcome = Some(d.outcome);
            }
        }
        self.note(
            "hold_released",
            format!(
                "hold {} released at {}: {}",
                d.hold_id, d.released_at, d.outcome
            ),
        );
        let marker = review_marker(&d.hold_id);
        self.cancel_where(&format!("hold {} released", d.hold_id), |t| {
            t.kind == TaskKind::HoldReview && t.reason.starts_with(&marker)
        });
        self.resume_after_hold(&format!("hold {} released ({})", d.hold_id, d.outcome));
    }

    /// Once no hold stops all contact, or when the end of those in force is known: a
    /// delinquent account with no promise pending and no call open gets a collection call
    /// at the next allowed minute after the holds end.
    fn resume_after_hold(&mut self, why: &str) {
        if self.state.contact_resumes_at(self.now).is_none()
            || self.state.status != Status::Delinquent
            || self.state.open_promise().is_some()
            || self.state.plan_on_time()
        {
            return;
        }
        let calling = self
            .open
            .iter()
            .chain(self.schedule.iter())
            .any(|t| matches!(t.kind, TaskKind::CollectionCall | TaskKind::Callback));
        if !calling {
            self.plan_collection_call(format!("{why}: collection resumes"));
        }
    }

    pub(super) fn contact_restricted(&mut self, d: &ContactRestricted) {
        match self
            .state
            .restrictions
            .iter_mut()
            .find(|r| r.restriction_id == d.restriction_id)
        {
            Some(r) if r.kind.is_some() => {
                let id = r.restriction_id.clone();
                self.note(
                    "event_applied",
                    format!("contact.restricted for {id} again: already recorded, no change"),
                );
                return;
            }
            Some(r) => {
                r.kind = Some(d.kind);
                r.channel = d.channel;
                r.contact_point_id.clone_from(&d.contact_point_id);
                r.hours = d.hours;
                r.effective_at = Some(d.effective_at);
                r.expires_at = d.expires_at;
            }
            None => self.state.restrictions.push(RestrictionRecord {
                restriction_id: d.restriction_id.clone(),
                kind: Some(d.kind),
                channel: d.channel,
                contact_point_id: d.contact_point_id.clone(),
                hours: d.hours,
                effective_at: Some(d.effective_at),
                expires_at: d.expires_at,
                lifted_at: None,
            }),
        }
        // A `third_party_refused` restriction is kept as a record, not as the account's
        // `third_party_refused` flag (a refusal heard in a conversation, for ever): the
        // record lapses at `expires_at` and is lifted by `contact.unrestricted`.
        let what = match (d.channel, &d.contact_point_id, d.hours) {
            (_, _, Some(h)) => format!(
                " to {}-{} local",
                h.start.strftime("%H:%M"),
                h.end.strftime("%H:%M")
            ),
            (Some(c), _, _) => format!(" on {c}"),
            (None, Some(p), _) => format!(" on contact point {p}"),
            (None, None, None) => String::new(),
        };
        let until = d
            .expires_at
            .map(|e| format!(" until {e}"))
            .unwrap_or_default();
        self.note(
            "contact_restricted",
            format!(
                "restriction {}: {}{what} from {}{until} (source {})",
                d.restriction_id, d.kind, d.effective_at, d.source
            ),
        );
        self.enforce_holds_and_restrictions();
    }

    pub(super) fn contact_unrestricted(&mut self, d: &ContactUnrestricted) {
        match self
            .state
            .restrictions
            .iter_mut()
            .find(|r| r.restriction_id == d.restriction_id)
        {
            None => {
                self.state.restrictions.push(RestrictionRecord {
                    restriction_id: d.restriction_id.clone(),
                    kind: None,
                    channel: None,
                    contact_point_id: None,
                    hours: None,
                    effective_at: None,
                    expires_at: None,
                    lifted_at: Some(d.effective_at),
                });
                self.note(
                    "event_applied",
                    format!(
                        "contact.unrestricted for {}, which is not known (yet): recorded",
                        d.restriction_id
                    ),
                );
            }
            Some(r) if r.lifted_at.is_some() => {
                let id = r.restriction_id.clone();
                self.note(
                    "event_applied",
                    format!("contact.unrestricted for {id} again: no change"),
                );
            }
            Some(r) => {
                r.lifted_at = Some(d.effective_at);
                let id = r.restriction_id.clone();
                self.note(
                    "contact_unrestricted",
                    format!("restriction {id} lifted from {}", d.effective_at),
                );
            }
        }
    }

    /// Open contact tasks that a hold or restriction in force at their instant forbids
    /// are cancelled with its label and, unless a hold stops all contact then, planned
    /// again (another channel, or inside the hours the debtor agreed to); `plan` refuses
    /// what is still forbidden.
    pub(super) fn enforce_holds_and_restrictions(&mut self) {
        let tz = self.state.zone();
        let broken: Vec<(Task, String)> = self
            .open
            .iter()
            .filter(|t| t.kind.contacts_customer() && !t.kind.is_internal())
            .filter_map(|t| {
                let at = t.due_at.max(self.now);
                if let Some(label) =
                    self.state
                        .forbidden(t.kind, t.channel, t.contact_point_id.as_deref(), at)
                {
                    return Some((t.clone(), label));
                }
                let w = self.state.window(&self.policy.contact_window, at);
                (w.narrowed_to.is_some() && !window::is_allowed(at, &tz, &w))
                    .then(|| (t.clone(), "restriction:agreed_hours".to_owned()))
            })
            .collect();
        for (t, label) in broken {
            let id = t.task_id;
            self.cancel_where(&label, |o| o.task_id == id);
            let mut at = t.due_at.max(self.now);
            if self.state.full_hold_at(at).is_some() {
                continue;
            }
            if t.kind == TaskKind::PromiseReminder {
                // Moved forward into agreed hours, a reminder could land after its promise:
                // as when it is first planned, it takes the last allowed minute before its
                // instant, else the next one if that still precedes the promise, else none.
                let w = self.state.window(&self.policy.contact_window, at);
                if !window::is_allowed(at, &tz, &w) {
                    let promised_at = self
                        .state
                        .promises
                        .iter()
                        .find(|p| Some(p.promise_id.as_str()) == t.promise_id.as_deref())
                        .and_then(|p| p.promised_at);
                    let back = window::last_allowed_before(at, &tz, &w);
                    let fwd = window::next_allowed(at, &tz, &w);
                    if back > self.now {
                        at = back;
                    } else if promised_at.is_some_and(|p| fwd < p) {
                        at = fwd;
                    } else {
                        self.note(
                            "decision",
                            format!(
                                "reminder {} not planned again: no allowed minute between now \
                                 and the promise ({label})",
                                t.task_id
                            ),
                        );
                        continue;
                    }
                }
            }
            if self.plan(
                t.kind,
                t.channel,
                at,
                format!("{} (planned again: {label})", t.reason),
                t.promise_id.as_deref(),
            ) {
                if let Some(planned) = self.schedule.last_mut() {
                    planned.attempt = t.attempt;
                }
            }
        }
    }
}
