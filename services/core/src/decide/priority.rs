//! Priority: the rank of an account's task in the work order (domain.md rule 2), and the
//! phone each call attempt uses (the channel mix).

use jiff::Timestamp;

use crate::{
    policy::{Policy, PriorityCriterion},
    state::AccountState,
    task::Channel,
};

/// The rank (1 first) of the account's task due at `at`, by the policy's order (domain.md
/// rule 2 by default: first-instalment default; promise due today; able to pay part; large
/// balance; lost contact): the position of the first criterion the account meets, else
/// one past the list. "Promise due today" is judged for the day the task is due, in the
/// customer's calendar: a reminder due tomorrow for tomorrow's promise ranks as one, a
/// call due today for a promise next week does not.
#[must_use]
pub fn priority_at(state: &AccountState, policy: &Policy, at: Timestamp) -> u8 {
    let order = &policy.priority.order;
    let hit = order.iter().position(|c| match c {
        PriorityCriterion::FirstInstalmentDefault => state.first_installment_default,
        PriorityCriterion::PromiseDueToday => promise_due_on(state, at),
        PriorityCriterion::PartialPayer => state.partial_payer,
        PriorityCriterion::LargeBalance => {
            state.overdue_minor >= policy.priority.large_balance_minor
        }
        // Set by the contact outcomes (`contact.attempted`): no channel reaches the debtor.
        PriorityCriterion::LostContact => state.lost_contact,
    });
    u8::try_from(hit.unwrap_or(order.len()) + 1).unwrap_or(u8::MAX)
}

fn promise_due_on(state: &AccountState, at: Timestamp) -> bool {
    let tz = state.zone();
    let day = at.to_zoned(tz.clone()).date();
    state
        .open_promise()
        .and_then(|p| p.promised_at)
        .is_some_and(|promised| promised.to_zoned(tz).date() == day)
}

/// The phone for a call attempt (1-based): a golden-ratio sequence over the mix, so every
/// run of attempts follows the configured shares closely and tests can predict it.
#[must_use]
pub fn channel_for_attempt(attempt: u32, mix: &crate::policy::ChannelMix) -> Channel {
    const GOLDEN: f64 = 0.618_033_988_749_894_9;
    let x = (f64::from(attempt.saturating_sub(1)) * GOLDEN).fract();
    if x < mix.phone_mobile {
        Channel::PhoneMobile
    } else if x < mix.phone_mobile + mix.phone_work {
        Channel::PhoneWork
    } else {
        Channel::PhoneHome
    }
}
