//! Per-account collection state, kept by the store as one JSON document per account.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{civil::Date, tz::TimeZone, Timestamp};
use serde::{Deserialize, Serialize};

use crate::{
    arrangement::{ArrangementRecord, ArrangementStatus, ReversalRecord},
    contact::Ledger,
    hold::{HoldRecord, RestrictionRecord},
    money::{Currency, Money},
};

/// Where the account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Nothing overdue and never delinquent here.
    Current,
    /// Something is overdue.
    Delinquent,
    /// Was delinquent, paid in full.
    Cured,
}

/// Where a promise stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromiseStatus {
    /// Waiting for the promised hour.
    Open,
    /// Paid in time.
    Kept,
    /// Not paid in time (reported or expired).
    Broken,
    /// Replaced by a later promise.
    Superseded,
}

/// One promise to pay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromiseRecord {
    /// Upstream id.
    pub promise_id: String,
    /// Amount promised (unknown when `promise.broken` came first).
    pub amount: Option<Money>,
    /// Promised instant (unknown when `promise.broken` came first).
    pub promised_at: Option<Timestamp>,
    /// State.
    pub status: PromiseStatus,
    /// Minor units paid towards it in time.
    pub paid_minor: i64,
    /// When the customer made it (the `promise.made` event's time, capped at the instant it
    /// was applied): orders promises applied out of order. Unknown in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_at: Option<Timestamp>,
    /// When money kept it (the payment's `received_at`, or the cure's): a promise made
    /// before that instant but applied after it superseded this one first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_at: Option<Timestamp>,
    /// When billing reported it broken (the `promise.broken` `time`): a cure reported
    /// before the break, applied after it, leaves what the break planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken_at: Option<Timestamp>,
}

impl PromiseRecord {
    /// Whether the promise was still open at `at`: open now, or kept by money that came
    /// after `at` (a promise made at `at` arriving late supersedes it).
    #[must_use]
    pub fn open_at(&self, at: Timestamp) -> bool {
        self.status == PromiseStatus::Open
            || (self.status == PromiseStatus::Kept && self.kept_at.is_some_and(|k| k > at))
    }
}

/// The last payment seen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LastPayment {
    /// Amount.
    pub amount: Money,
    /// When.
    pub received_at: Timestamp,
}

/// Everything the rules need to know about one account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountState {
    /// Account id.
    pub account_id: String,
    /// Customer's IANA zone.
    pub timezone: String,
    /// Where the account stands.
    pub status: Status,
    /// Account currency, once known.
    pub currency: Option<Currency>,
    /// Overdue in minor units.
    pub overdue_minor: i64,
    /// Due dates of instalments that failed and are not yet cured.
    pub unpaid_due_dates: BTreeSet<Date>,
    /// Instalment 1 failed and is unpaid.
    pub first_installment_default: bool,
    /// Failed payments seen (past delinquencies).
    pub failed_payments: u32,
    /// Broken promises counted.
    pub broken_promises: u32,
    /// A partial payment arrived while delinquent.
    pub partial_payer: bool,
    /// Last payment.
    pub last_payment: Option<LastPayment>,
    /// Next due date from billing.
    pub next_due_date: Option<Date>,
    /// Promises, in the order they were applied.
    pub promises: Vec<PromiseRecord>,
    /// Collection-call attempts fired so far.
    #[serde(default)]
    pub calls_fired: u32,
    /// Attempts fired on `calls_day` (the customer's local day).
    #[serde(default)]
    pub calls_today: u32,
    /// Local day `calls_today` counts.
    #[serde(default)]
    pub calls_day: Option<Date>,
    /// Instants of recent telephone calls to the debtor that fired (any task kind on a
    /// phone channel), oldest first; kept for the frequency caps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_calls: Vec<Timestamp>,
    /// Last right-party conversation (a `promise.made` is captured in one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_conversation_at: Option<Timestamp>,
    /// Instalment numbers whose debit failed (kept after a cure: the payment history).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub failed_installments: BTreeSet<u32>,
    /// A partial payment arrived in the current billing period (reset when a payment
    /// announces the next due date).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial_this_period: bool,
    /// Bucket escalations already opened (`"M3:formal_letter"`), so each opens once.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub bucket_escalations: BTreeSet<String>,
    /// When billing stated the overdue in `overdue_minor` (the `time` of the
    /// `payment.failed` or the `payment.received` with `overdue_amount_after` it came
    /// from). A balance stated earlier than this, arriving late from another queue, does
    /// not overwrite it. Unknown in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_as_of: Option<Timestamp>,
    /// The latest instant billing stated the overdue as zero (a cure). Promises made and
    /// breaks reported before it, arriving late, are judged as they stood at the cure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<Timestamp>,
    /// The latest payments (at most [`RECENT_PAYMENTS`], by `received_at`), so a promise
    /// whose `promise.made` arrives after the money it was paid with is still kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_payments: Vec<RecentPayment>,
    /// When billing last reported each unpaid due date failed (the `payment.failed`
    /// `time`, keyed by the due date; instalment 1 also under [`FIRST_INSTALMENT_KEY`]):
    /// a cure reported before failures applied ahead of it clears only what failed
    /// before the cure.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_reported_at: BTreeMap<String, Timestamp>,
    /// The person who owes on the account, once a contact attempt named them (the account
    /// id when the attempt named nobody): the store loads their contact ledger with the
    /// state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debtor_id: Option<String>,
    /// No channel reaches the debtor (consecutive unanswered attempts, or every known
    /// contact point retired): the account needs contact repair, and only now may a
    /// third party be asked to pass a message (domain rule 8).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost_contact: bool,
    /// A contact person refused to pass messages: no third-party call again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub third_party_refused: bool,
    /// Refusals to pay in conversations: they escalate the tone like broken promises.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refusals: u32,
    /// No call to the debtor before this instant (they said the money was paid: it is
    /// being verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls_held_until: Option<Timestamp>,
    /// Holds placed on the account (and releases whose placement has not arrived yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<HoldRecord>,
    /// Contact restrictions (and lifts whose restriction has not arrived yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restrictions: Vec<RestrictionRecord>,
    /// Payment arrangements (and cancellations whose arrangement has not arrived yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arrangements: Vec<ArrangementRecord>,
    /// Payment reversals (and those whose payment has not arrived yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reversals: Vec<ReversalRecord>,
    /// The debtor's contact ledger, loaded by the store with the state (not part of the
    /// stored document: it is kept per debtor, across accounts).
    #[serde(skip)]
    pub ledger: Ledger,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The key of instalment 1's failure in [`AccountState::failed_reported_at`].
pub const FIRST_INSTALMENT_KEY: &str = "instalment-1";

/// A payment remembered for promises applied after it (see `recent_payments`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentPayment {
    /// When billing received it.
    pub received_at: Timestamp,
    /// Amount in minor units of the account's currency.
    pub minor: i64,
    /// Billing stated the overdue as zero after it (it cured the account).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub settled: bool,
    /// Billing's id of the payment (unknown in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
}

/// How many payments an account remembers for promises made before them that arrive
/// after them.
pub const RECENT_PAYMENTS: usize = 16;

/// The account summary every task carries (domain.md rule 10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountSummary {
    /// Days past due in the customer's calendar (may be negative before due).
    pub dpd: i64,
    /// DPD band.
    pub bucket: String,
    /// Overdue amount.
    pub overdue_amount: Money,
    /// Broken promises counted.
    pub broken_promises: u32,
    /// Instalment 1 unpaid.
    pub first_installment_default: bool,
    /// Failed payments seen.
    pub failed_payments: u32,
    /// Last payment, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_payment: Option<LastPayment>,
    /// No channel reaches the debtor.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost_contact: bool,
    /// Reasons of the holds in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<String>,
    /// Kinds of the contact restrictions in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restrictions: Vec<String>,
}

/// DPD band for a count of days past due.
#[must_use]
pub fn bucket(dpd: i64) -> &'static str {
    match dpd {
        i64::MIN..=0 => "M0",
        1..=30 => "M1",
        31..=60 => "M2",
        61..=90 => "M3",
        _ => "M3+",
    }
}

impl AccountState {
    /// Takes billing's statement of the overdue at `as_of` unless a later one is already
    /// known; returns whether it was taken.
    pub fn state_balance(&mut self, minor: i64, as_of: Timestamp) -> bool {
        if minor == 0 && self.settled_at.is_none_or(|s| s < as_of) {
            self.settled_at = Some(as_of);
        }
        if self.balance_as_of.is_some_and(|known| known > as_of) {
            return false;
        }
        self.overdue_minor = minor;
        self.balance_as_of = Some(as_of);
        true
    }

    /// A cure billing reported at `at`, applied after failures reported later: what
    /// failed before it is paid (its due dates, the first-instalment default); what failed
    /// after it stays.
    pub fn settle_failures_before(&mut self, at: Timestamp) {
        let before: Vec<String> = self
            .failed_reported_at
            .iter()
            .filter(|(_, reported)| **reported < at)
            .map(|(k, _)| k.clone())
            .collect();
        for key in before {
            self.failed_reported_at.remove(&key);
            if key == FIRST_INSTALMENT_KEY {
                self.first_installment_default = false;
            } else if let Ok(date) = key.parse::<Date>() {
                self.unpaid_due_dates.remove(&date);
            }
        }
    }

    /// The promise that was open at `at` (index into `promises`): made by then, and open
    /// now or superseded only by a promise made after `at` (applied first from its queue).
    #[must_use]
    pub fn open_promise_at(&self, at: Timestamp) -> Option<usize> {
        let next_made = |mine: Timestamp| {
            self.promises
                .iter()
                .filter_map(|q| q.made_at)
                .filter(|m| *m > mine)
                .min()
        };
        self.promises
            .iter()
            .enumerate()
            .filter(|(_, p)| p.made_at.is_none_or(|m| m <= at))
            .filter(|(_, p)| {
                p.status == PromiseStatus::Open
                    || (p.status == PromiseStatus::Superseded
                        && p.made_at.and_then(next_made).is_some_and(|next| next > at))
            })
            .max_by_key(|(_, p)| p.made_at)
            .map(|(i, _)| i)
    }

    /// The debtor whose ledger counts for this account.
    #[must_use]
    pub fn debtor(&self) -> &str {
        self.debtor_id.as_deref().unwrap_or(&self.account_id)
    }

    /// A fresh account.
    #[must_use]
    pub fn new(account_id: &str, timezone: &str) -> Self {
        Self {
            account_id: account_id.to_owned(),
            timezone: timezone.to_owned(),
            status: Status::Current,
            currency: None,
            overdue_minor: 0,
            unpaid_due_dates: BTreeSet::new(),
            first_installment_default: false,
            failed_payments: 0,
            broken_promises: 0,
            partial_payer: false,
            last_payment: None,
            next_due_date: None,
            promises: Vec::new(),
            calls_fired: 0,
            calls_today: 0,
            calls_day: None,
            recent_calls: Vec::new(),
            last_conversation_at: None,
            failed_installments: BTreeSet::new(),
            partial_this_period: false,
            bucket_escalations: BTreeSet::new(),
            balance_as_of: None,
            settled_at: None,
            recent_payments: Vec::new(),
            failed_reported_at: BTreeMap::new(),
            debtor_id: None,
            lost_contact: false,
            third_party_refused: false,
            refusals: 0,
            calls_held_until: None,
            ledger: Ledger::default(),
            holds: Vec::new(),
            restrictions: Vec::new(),
            arrangements: Vec::new(),
            reversals: Vec::new(),
        }
    }

    /// The customer's zone (falls back to UTC only if a stored name stopped resolving).
    #[must_use]
    pub fn zone(&self) -> TimeZone {
        TimeZone::get(&self.timezone).unwrap_or(TimeZone::UTC)
    }

    /// Overdue as money ("XXX", ISO 4217's no-currency code, before any amount is seen).
    #[must_use]
    pub fn overdue(&self) -> Money {
        Money {
            minor: self.overdue_minor,
            currency: self
                .currency
                .unwrap_or_else(|| Currency::parse("XXX").unwrap_or_else(|_| unreachable!())),
        }
    }

    /// Days past due at `now` in the customer's calendar (0 when nothing is unpaid).
    #[must_use]
    pub fn dpd(&self, now: Timestamp) -> i64 {
        let Some(first) = self.unpaid_due_dates.first() else {
            return 0;
        };
        let today = now.to_zoned(self.zone()).date();
        let raw = today
            .since(*first)
            .map(|s| i64::from(s.get_days()))
            .unwrap_or(0);
        if self.holds.iter().any(|h| h.pause_dpd) {
            // Days held with `pause_dpd` do not count.
            raw - self.paused_days(*first, now)
        } else {
            raw
        }
    }

    /// The summary tasks carry.
    #[must_use]
    pub fn summary(&self, now: Timestamp) -> AccountSummary {
        let dpd = self.dpd(now);
        let (holds, restrictions) = self.in_force_labels(now);
        AccountSummary {
            dpd,
            bucket: bucket(dpd).to_owned(),
            overdue_amount: self.overdue(),
            broken_promises: self.broken_promises,
            first_installment_default: self.first_installment_default,
            failed_payments: self.failed_payments,
            last_payment: self.last_payment,
            lost_contact: self.lost_contact,
            holds,
            restrictions,
        }
    }

    /// Whether the account is a habitual late payer: failed payments in at least
    /// `min_failures` of the last `last_instalments` instalments, counted back from the
    /// latest instalment number seen.
    #[must_use]
    pub fn habitual_late_payer(&self, min_failures: u32, last_instalments: u32) -> bool {
        let Some(&latest) = self.failed_installments.last() else {
            return false;
        };
        let from = latest.saturating_sub(last_instalments.saturating_sub(1));
        let n = self.failed_installments.range(from..=latest).count();
        u32::try_from(n).unwrap_or(u32::MAX) >= min_failures
    }

    /// The open promise, if any (at most one is open at a time).
    #[must_use]
    pub fn open_promise(&self) -> Option<&PromiseRecord> {
        self.promises
            .iter()
            .find(|p| p.status == PromiseStatus::Open)
    }

    /// The arrangement being paid, if any (at most one is open at a time).
    #[must_use]
    pub fn open_arrangement(&self) -> Option<&ArrangementRecord> {
        self.arrangements
            .iter()
            .find(|a| a.status == ArrangementStatus::Open)
    }

    /// Whether an open arrangement is being paid on time (no instalment missed and not
    /// made good): collection calls stay suspended.
    #[must_use]
    pub fn plan_on_time(&self) -> bool {
        self.open_arrangement().is_some_and(|a| !a.behind())
    }

    /// An arrangement by id.
    pub fn arrangement_mut(&mut self, id: &str) -> Option<&mut ArrangementRecord> {
        self.arrangements
            .iter_mut()
            .find(|a| a.arrangement_id == id)
    }

    /// A promise by id.
    pub fn promise_mut(&mut self, id: &str) -> Option<&mut PromiseRecord> {
        self.promises.iter_mut().find(|p| p.promise_id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_the_dpd_bands() {
        assert_eq!(bucket(0), "M0");
        assert_eq!(bucket(1), "M1");
        assert_eq!(bucket(30), "M1");
        assert_eq!(bucket(31), "M2");
        assert_eq!(bucket(61), "M3");
        assert_eq!(bucket(91), "M3+");
    }

    #[test]
    fn promise_records_stored_without_made_at_still_load() {
        let old = r#"{"promise_id":"ptp-1","amount":null,"promised_at":null,"status":"open","paid_minor":0}"#;
        let p: PromiseRecord = serde_json::from_str(old).expect("old record");
        assert_eq!(p.made_at, None);
        // Unknown stays absent, so older readers see the same document.
        assert_eq!(serde_json::to_string(&p).expect("json"), old);
    }

    #[test]
    fn dpd_counts_in_the_customers_calendar() {
        let mut s = AccountState::new("acc-1", "Asia/Shanghai");
        s.unpaid_due_dates
            .insert("2026-11-01".parse().expect("date"));
        // 2026-11-10T17:00Z is already 2026-11-11 in Shanghai.
        let now: Timestamp = "2026-11-10T17:00:00Z".parse().expect("ts");
        assert_eq!(s.dpd(now), 10);
    }
}
