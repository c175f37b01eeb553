//! Frequency caps on telephone calls to the debtor: Regulation F's at most N call attempts
//! in any rolling window and quiet period after a conversation (per account), China's
//! conversations per debtor per day (across the debtor's accounts) and unanswered attempts
//! per contact point per day, and the hold while a claimed payment is verified.
//!
//! The planner defers a call to the first instant that keeps the caps (and lies in the
//! contact window); the scheduler checks again when the call comes due.

use jiff::{civil::Date, tz::TimeZone, SignedDuration, Timestamp};

use crate::{
    contact::{local_day, ordinal},
    policy::Policy,
    state::AccountState,
    window,
};

/// How long fired calls are remembered (longer than any sensible rolling window).
const HISTORY: SignedDuration = SignedDuration::from_hours(31 * 24);

/// Records a fired call at `now` and forgets calls older than the history kept.
pub fn record_call(state: &mut AccountState, now: Timestamp) {
    state
        .recent_calls
        .retain(|t| now.duration_since(*t) < HISTORY);
    state.recent_calls.push(now);
    state.recent_calls.sort_unstable();
}

/// What the caps need to know of the call being placed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Call<'a> {
    /// The contact point it is meant for, when one is known.
    pub point: Option<&'a str>,
    /// The debtor asked for it (a `callback`): Regulation F does not count calls made with
    /// the person's prior consent, neither towards the attempts nor against the quiet days
    /// (12 CFR 1006.14(b)(3)(i)); the daily conversation cap still holds.
    pub consented: bool,
}

impl<'a> Call<'a> {
    /// The call a task places.
    #[must_use]
    pub fn of(task: &'a crate::Task) -> Self {
        Self {
            point: task.contact_point_id.as_deref(),
            consented: task.kind == crate::TaskKind::Callback,
        }
    }
}

/// The first instant at or after `at` at which a call to the debtor keeps the policy's
/// caps and lies inside the contact window, with a note when it is later than `at`.
///
/// The caps: no call while the debtor's claim of a payment is verified
/// (`calls_held_until`); Regulation F's quiet period after a conversation about the debt
/// and its attempts in a rolling window (per account; `planned` are the due instants of
/// calls already planned, and those before the candidate count as attempts like the fired
/// ones in `state.recent_calls` and the collector's own dials in the ledger); the
/// conversations with the debtor per local day, across the debtor's accounts; the
/// unanswered attempts on the call's contact point per local day.
#[must_use]
pub fn first_allowed(
    at: Timestamp,
    state: &AccountState,
    planned: &[Timestamp],
    policy: &Policy,
    call: Call<'_>,
) -> (Timestamp, Option<String>) {
    let caps = &policy.caps;
    let contacts = &policy.contacts;
    let tz = state.zone();
    let span = caps.window();
    let max = usize::try_from(caps.max_call_attempts).unwrap_or(usize::MAX);
    let ledger = &state.ledger;
    let last_conversation = state
        .last_conversation_at
        .into_iter()
        .chain(ledger.last_conversation(&state.account_id))
        .max();
    let fired: Vec<Timestamp> = if max > 0 && !call.consented {
        state
            .recent_calls
            .iter()
            .copied()
            .chain(ledger.manual_calls(&state.account_id))
            .chain(planned.iter().copied())
            .collect()
    } else {
        Vec::new()
    };
    let mut t = at;
    let mut why: Option<String> = None;
    // Each pass can only move forward; a handful settles any real history.
    for _ in 0..64 {
        let mut moved = false;
        if let Some(held) = state.calls_held_until {
            if t < held {
                t = held;
                moved = true;
                why = Some(format!(
                    "held until {held}: the debtor says the money was paid, being verified"
                ));
            }
        }
        if !call.consented {
            if let Some(c) = last_conversation {
                let quiet_end = c + caps.quiet_after_conversation;
                if caps.quiet_after_conversation.is_positive() && t < quiet_end {
                    t = quiet_end;
                    moved = true;
                    why = Some(format!(
                        "deferred: quiet period of {:#} after the conversation at {c}",
                        caps.quiet_after_conversation
                    ));
                }
            }
            if max > 0 {
                let mut attempts: Vec<Timestamp> = fired
                    .iter()
                    .copied()
                    .filter(|a| *a <= t && t.duration_since(*a) < span)
                    .collect();
                if attempts.len() >= max {
                    attempts.sort_unstable();
                    // The window (t - span, t] must hold fewer than `max`: wait until
                    // enough of the oldest attempts have left it.
                    t = attempts[attempts.len() - max] + span;
                    moved = true;
                    why = Some(format!(
                        "deferred: at most {} call attempts in {} days",
                        caps.max_call_attempts, caps.window_days
                    ));
                }
            }
        }
        let day = local_day(t, &tz);
        let max_talks = contacts.max_conversations_per_debtor_per_day;
        if max_talks > 0 {
            let n = ledger.conversations_on(day, &tz);
            if n >= max_talks {
                t = start_of_next_day(day, &tz, t);
                moved = true;
                why = Some(format!(
                    "deferred: {} conversation with the debtor on {day}, at most {max_talks} a day",
                    ordinal(n)
                ));
            }
        }
        let max_unanswered = contacts.max_unanswered_per_contact_point_per_day;
        if let (Some(point), true) = (call.point, max_unanswered > 0) {
            let day = local_day(t, &tz);
            let n = ledger.unanswered_on(point, day, &tz);
            if n >= max_unanswered {
                t = start_of_next_day(day, &tz, t);
                moved = true;
                why = Some(format!(
                    "deferred: {n} unanswered attempts on its contact point on {day}, at most \
                     {max_unanswered} a day"
                ));
            }
        }
        let inside = window::next_allowed(t, &tz, &state.window(&policy.contact_window, t));
        if inside != t {
            t = inside;
            moved = true;
        }
        if !moved {
            break;
        }
    }
    (t, why)
}

/// The first instant of the local day after `day` (never before `floor`).
fn start_of_next_day(day: Date, tz: &TimeZone, floor: Timestamp) -> Timestamp {
    day.tomorrow()
        .ok()
        .and_then(|d| d.to_zoned(tz.clone()).ok())
        .map_or(floor, |z| z.timestamp().max(floor))
}
