//! Frequency caps on telephone calls to the debtor (Regulation F style): at most N call
//! attempts in any rolling window, and a quiet period after a right-party conversation.
//!
//! The planner defers a call to the first instant that keeps the caps (and lies in the
//! contact window); the scheduler checks again when the call comes due.

use jiff::{SignedDuration, Timestamp};

use crate::{policy::Policy, state::AccountState, window};

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

/// The first instant at or after `at` at which a call to the debtor keeps the policy's
/// caps and lies inside the contact window, with a note when it is later than `at`.
///
/// `planned` are the due instants of calls already planned; those before the candidate
/// count as attempts like the fired ones in `state.recent_calls`.
#[must_use]
pub fn first_allowed(
    at: Timestamp,
    state: &AccountState,
    planned: &[Timestamp],
    policy: &Policy,
) -> (Timestamp, Option<String>) {
    let caps = &policy.caps;
    if !caps.active() {
        return (at, None);
    }
    let tz = state.zone();
    let span = caps.window();
    let max = usize::try_from(caps.max_call_attempts).unwrap_or(usize::MAX);
    let mut t = at;
    let mut why: Option<String> = None;
    // Each pass can only move forward; a handful settles any real history.
    for _ in 0..32 {
        let mut moved = false;
        if let Some(c) = state.last_conversation_at {
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
            let mut attempts: Vec<Timestamp> = state
                .recent_calls
                .iter()
                .chain(planned.iter())
                .copied()
                .filter(|a| *a <= t && t.duration_since(*a) < span)
                .collect();
            if attempts.len() >= max {
                attempts.sort_unstable();
                // The window (t - span, t] must hold fewer than `max`: wait until enough
                // of the oldest attempts have left it.
                t = attempts[attempts.len() - max] + span;
                moved = true;
                why = Some(format!(
                    "deferred: at most {} call attempts in {} days",
                    caps.max_call_attempts, caps.window_days
                ));
            }
        }
        let inside = window::next_allowed(t, &tz, &policy.contact_window);
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
