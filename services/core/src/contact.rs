//! The contact ledger: every contact attempt with a debtor, the counts the caps are kept
//! by, and what is known of the debtor's contact points.
//!
//! One [`Ledger`] per debtor (a person may owe on several accounts): the store keeps its
//! attempts in Postgres and hands the ledger to the rules with the account's state
//! ([`crate::AccountState::ledger`]); the simulator keeps one per debtor in memory. An
//! attempt is keyed by the publisher's `attempt_id`: a second report of the same attempt
//! replaces the first (a correction), so counts never double.
//!
//! Counts are by the debtor's local day (the account's zone).

use std::collections::BTreeMap;

use jiff::{civil::Date, tz::TimeZone, Timestamp};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{
    ContactAttempted, ContactChannel, ContactResult, Direction, Disposition, Party,
};

/// How long attempts are kept in a ledger handed to the rules: longer than any window the
/// caps and the lost-contact rule look at.
pub const LEDGER_DAYS: i64 = 35;

/// One contact attempt as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The publisher's id (the key: a later report with the same id replaces this one).
    pub attempt_id: String,
    /// The person.
    pub debtor_id: String,
    /// The account the attempt was about.
    pub account_id: String,
    /// The task it carried out, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<Uuid>,
    /// How.
    pub channel: ContactChannel,
    /// Who started it.
    pub direction: Direction,
    /// The number or address (opaque id), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_point_id: Option<String>,
    /// Who was reached.
    pub party: Party,
    /// How it ended.
    pub result: ContactResult,
    /// What a connected contact came to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<Disposition>,
    /// When it started.
    pub started_at: Timestamp,
    /// The event that reported it last.
    pub event_id: Uuid,
    /// When the service applied that report (what the scheduler knew when it fired).
    pub recorded_at: Timestamp,
}

impl Attempt {
    /// The ledger's record of a `contact.attempted` event applied at `now`.
    #[must_use]
    pub fn from_event(d: &ContactAttempted, event_id: Uuid, now: Timestamp) -> Self {
        Self {
            attempt_id: d.attempt_id.clone(),
            debtor_id: d.debtor().to_owned(),
            account_id: d.account_id.clone(),
            task_id: d.task_id,
            channel: d.channel,
            direction: d.direction,
            contact_point_id: d.contact_point_id.clone(),
            party: d.party,
            result: d.result,
            disposition: d.disposition,
            started_at: d.started_at,
            event_id,
            recorded_at: now,
        }
    }

    /// A conversation with the debtor (connected, the debtor on the line, either
    /// direction): what the daily conversation cap and Regulation F's quiet days count.
    #[must_use]
    pub fn is_conversation(&self) -> bool {
        self.result == ContactResult::Connected && self.party == Party::Debtor
    }

    /// A conversation with someone other than the debtor.
    #[must_use]
    pub fn is_third_party_conversation(&self) -> bool {
        self.result == ContactResult::Connected && self.party == Party::ThirdParty
    }

    /// A placed telephone call to one of the debtor's numbers (Regulation F counts them
    /// whether or not they connect).
    #[must_use]
    pub fn is_placed_call(&self) -> bool {
        self.direction == Direction::Outbound && self.channel.is_phone()
    }

    /// An outbound attempt that reached nobody (and did not show the point to be wrong).
    #[must_use]
    pub fn is_unanswered(&self) -> bool {
        self.direction == Direction::Outbound
            && !self.result.reached()
            && !self.result.retires_point()
    }

    /// The debtor was reached (a conversation, a message delivered, or they got in touch).
    #[must_use]
    pub fn reached_debtor(&self) -> bool {
        self.result.reached() && self.party != Party::ThirdParty
    }
}

/// What the ledger knows of one contact point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointView {
    /// Its channel (the last attempt's).
    pub channel: ContactChannel,
    /// The last attempt on it showed it is not the debtor's (wrong number, undeliverable);
    /// a later successful contact on it revives it.
    pub retired: bool,
    /// When it last reached the debtor.
    pub last_reached: Option<Timestamp>,
}

/// A debtor's recent contact attempts, oldest first (by `started_at`, then id).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The attempts.
    pub attempts: Vec<Attempt>,
}

impl Ledger {
    /// A ledger of these attempts (any order).
    #[must_use]
    pub fn of(mut attempts: Vec<Attempt>) -> Self {
        attempts.sort_by(|a, b| (a.started_at, &a.attempt_id).cmp(&(b.started_at, &b.attempt_id)));
        Self { attempts }
    }

    /// Records `a`, replacing the attempt with the same id; returns the one replaced.
    pub fn upsert(&mut self, a: Attempt) -> Option<Attempt> {
        let old = self
            .attempts
            .iter()
            .position(|x| x.attempt_id == a.attempt_id)
            .map(|i| self.attempts.remove(i));
        let at = self
            .attempts
            .partition_point(|x| (x.started_at, &x.attempt_id) < (a.started_at, &a.attempt_id));
        self.attempts.insert(at, a);
        old
    }

    /// Attempts known at `at` (recorded by then).
    fn known_at(&self, at: Timestamp) -> impl Iterator<Item = &Attempt> {
        self.attempts.iter().filter(move |a| a.recorded_at <= at)
    }

    /// Conversations with the debtor on local day `day`, across the debtor's accounts.
    #[must_use]
    pub fn conversations_on(&self, day: Date, tz: &TimeZone) -> u32 {
        count(
            self.attempts
                .iter()
                .filter(|a| a.is_conversation() && local_day(a.started_at, tz) == day),
        )
    }

    /// Third-party conversations on local day `day`.
    #[must_use]
    pub fn third_party_conversations_on(&self, day: Date, tz: &TimeZone) -> u32 {
        count(
            self.attempts
                .iter()
                .filter(|a| a.is_third_party_conversation() && local_day(a.started_at, tz) == day),
        )
    }

    /// Attempts of any kind on local day `day` on `account`.
    #[must_use]
    pub fn attempts_on(&self, account: &str, day: Date, tz: &TimeZone) -> u32 {
        count(
            self.attempts
                .iter()
                .filter(|a| a.account_id == account && local_day(a.started_at, tz) == day),
        )
    }

    /// Unanswered attempts on contact point `point` on local day `day`.
    #[must_use]
    pub fn unanswered_on(&self, point: &str, day: Date, tz: &TimeZone) -> u32 {
        count(self.attempts.iter().filter(|a| {
            a.is_unanswered()
                && a.contact_point_id.as_deref() == Some(point)
                && local_day(a.started_at, tz) == day
        }))
    }

    /// Placed calls on `account` that no task of the service carried out (a collector's
    /// own dial): the service's fired calls are counted from the account's state.
    pub fn manual_calls<'a>(&'a self, account: &'a str) -> impl Iterator<Item = Timestamp> + 'a {
        self.attempts
            .iter()
            .filter(move |a| a.account_id == account && a.is_placed_call() && a.task_id.is_none())
            .map(|a| a.started_at)
    }

    /// The last conversation about `account` (Regulation F's quiet days are per debt).
    #[must_use]
    pub fn last_conversation(&self, account: &str) -> Option<Timestamp> {
        self.attempts
            .iter()
            .filter(|a| a.account_id == account && a.is_conversation())
            .map(|a| a.started_at)
            .max()
    }

    /// What is known of each contact point, by id.
    #[must_use]
    pub fn points(&self) -> BTreeMap<&str, PointView> {
        let mut out: BTreeMap<&str, PointView> = BTreeMap::new();
        for a in &self.attempts {
            let Some(id) = a.contact_point_id.as_deref() else {
                continue;
            };
            let v = out.entry(id).or_insert(PointView {
                channel: a.channel,
                retired: false,
                last_reached: None,
            });
            v.channel = a.channel;
            if a.result.retires_point() {
                v.retired = true;
            } else if a.result.reached() {
                v.retired = false;
                v.last_reached = Some(a.started_at);
            }
        }
        out
    }

    /// Whether contact point `point` is retired.
    #[must_use]
    pub fn point_retired(&self, point: &str) -> bool {
        self.points().get(point).is_some_and(|p| p.retired)
    }

    /// The run of outbound attempts to the debtor's own points (not to contact persons)
    /// since the debtor was last reached: how many, and the local days they span (first
    /// to last, inclusive).
    #[must_use]
    pub fn unreached_run(&self, tz: &TimeZone) -> (u32, i64) {
        let mut n = 0u32;
        let mut first: Option<Timestamp> = None;
        let mut last: Option<Timestamp> = None;
        for a in self.attempts.iter().rev() {
            if a.reached_debtor() {
                break;
            }
            // Every outbound attempt on the debtor's own points counts, a wrong number
            // answered by a stranger included; calls to contact persons do not.
            if a.direction == Direction::Outbound && a.channel != ContactChannel::ContactPerson {
                n += 1;
                first = Some(a.started_at);
                last = last.or(Some(a.started_at));
            }
        }
        let days = match (first, last) {
            (Some(f), Some(l)) => {
                local_day(l, tz)
                    .since(local_day(f, tz))
                    .map_or(0, |s| i64::from(s.get_days()))
                    + 1
            }
            _ => 0,
        };
        (n, days)
    }

    /// Whether every contact point the ledger knows of the debtor is retired (and it
    /// knows at least one).
    #[must_use]
    pub fn every_point_retired(&self) -> bool {
        let points = self.points();
        !points.is_empty()
            && points
                .iter()
                .filter(|(_, p)| p.channel != ContactChannel::ContactPerson)
                .all(|(_, p)| p.retired)
    }

    /// The ledger as it stood at `at` (attempts recorded by then): what a scheduler firing
    /// at `at` knew.
    #[must_use]
    pub fn as_known_at(&self, at: Timestamp) -> Ledger {
        Ledger {
            attempts: self.known_at(at).cloned().collect(),
        }
    }

    /// Forgets attempts that started more than [`LEDGER_DAYS`] before `now`.
    pub fn forget_before(&mut self, now: Timestamp) {
        let horizon = now - jiff::SignedDuration::from_hours(24 * LEDGER_DAYS);
        self.attempts.retain(|a| a.started_at >= horizon);
    }
}

/// The local calendar day of `t` in `tz`.
#[must_use]
pub fn local_day(t: Timestamp, tz: &TimeZone) -> Date {
    t.to_zoned(tz.clone()).date()
}

fn count<'a>(it: impl Iterator<Item = &'a Attempt>) -> u32 {
    u32::try_from(it.count()).unwrap_or(u32::MAX)
}

/// English ordinal ("1st", "2nd", "3rd", "4th", "11th") for task reasons.
#[must_use]
pub fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}
