//! Payment arrangements as account state: instalment plans and settlements, their
//! instalments, the payments allocated to them and the reversals seen.
//!
//! An arrangement (`arrangement.made` .. kept, broken, cancelled or superseded) is kept by
//! id whatever order its events arrive in: a cancellation applied before its arrangement
//! leaves a record the arrangement completes (and plans nothing), and an arrangement
//! applied twice changes nothing. Its instalments are followed like promises: each has a
//! reminder, a check and an internal expiry ([`crate::TaskKind::InstalmentExpiry`]); the
//! tasks name the instalment in `promise_id` as [`instalment_key`] gives it.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{event::ArrangementKind, money::Money};

/// Where an arrangement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArrangementStatus {
    /// Being paid.
    Open,
    /// Every instalment met.
    Kept,
    /// Missed (as many instalments as the policy allows), or reversed after it was kept.
    Broken,
    /// Called off upstream.
    Cancelled,
    /// Replaced by a later arrangement or promise.
    Superseded,
}

/// Where one instalment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstalmentStatus {
    /// Not yet paid (within the tolerance), and its grace has not passed.
    Pending,
    /// Paid within the tolerance.
    Met,
    /// Its grace passed unpaid (or short beyond the tolerance).
    Missed,
}

/// One instalment as the account keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalmentRecord {
    /// 1-based.
    pub number: u32,
    /// When it is due.
    pub due_at: Timestamp,
    /// Amount due, minor units.
    pub amount_minor: i64,
    /// Minor units allocated to it.
    pub paid_minor: i64,
    /// Where it stands.
    pub status: InstalmentStatus,
    /// Counted missed at least once (stays when it is paid later: the miss happened).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missed_once: bool,
}

/// Part of a payment allocated to an instalment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The payment.
    pub payment_id: String,
    /// When billing received it.
    pub received_at: Timestamp,
    /// The instalment it went to.
    pub number: u32,
    /// Minor units.
    pub minor: i64,
}

/// One arrangement as the account keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrangementRecord {
    /// The publisher's id.
    pub arrangement_id: String,
    /// Plan or settlement (unknown while only its cancellation has arrived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ArrangementKind>,
    /// Sum of the instalments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Money>,
    /// The instalments, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instalments: Vec<InstalmentRecord>,
    /// Kept, the account is cured.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub settles_in_full: bool,
    /// Who approved the discount (an id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount_approved_by: Option<String>,
    /// When it was made (the event's `time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_at: Option<Timestamp>,
    /// Where it stands.
    pub status: ArrangementStatus,
    /// Instalments missed so far.
    #[serde(default)]
    pub misses: u32,
    /// Payments allocated to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocations: Vec<Allocation>,
    /// The overdue a kept settlement cured (restored should its payment be reversed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cured_overdue_minor: Option<i64>,
    /// The unpaid due dates (and whether instalment 1 was among them) a kept
    /// settlement cleared, restored should its payment be reversed (the DPD runs again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cured_due_dates: Option<(std::collections::BTreeSet<jiff::civil::Date>, bool)>,
    /// When it was cancelled upstream (the event's `time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<Timestamp>,
}

impl ArrangementRecord {
    /// The first instalment not met (paid within the tolerance), if any.
    #[must_use]
    pub fn first_unmet(&self) -> Option<&InstalmentRecord> {
        self.instalments
            .iter()
            .find(|i| i.status != InstalmentStatus::Met)
    }

    /// An instalment by number.
    pub fn instalment_mut(&mut self, number: u32) -> Option<&mut InstalmentRecord> {
        self.instalments.iter_mut().find(|i| i.number == number)
    }

    /// Whether every instalment is met.
    #[must_use]
    pub fn all_met(&self) -> bool {
        !self.instalments.is_empty()
            && self
                .instalments
                .iter()
                .all(|i| i.status == InstalmentStatus::Met)
    }

    /// Whether an instalment is missed and not yet made good (the plan is behind).
    #[must_use]
    pub fn behind(&self) -> bool {
        self.instalments
            .iter()
            .any(|i| i.status == InstalmentStatus::Missed)
    }
}

/// A reversal as the account keeps it (also one whose payment has not arrived yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReversalRecord {
    /// The payment reversed.
    pub payment_id: String,
    /// Minor units.
    pub minor: i64,
    /// When.
    pub reversed_at: Timestamp,
    /// Applied to the payment (its `payment.received` was seen).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub applied: bool,
}

/// The `promise_id` the tasks of an instalment carry: `<arrangement_id>#<number>`.
#[must_use]
pub fn instalment_key(arrangement_id: &str, number: u32) -> String {
    format!("{arrangement_id}#{number}")
}

/// Reads an [`instalment_key`] back: the arrangement id and the instalment number.
#[must_use]
pub fn parse_instalment_key(key: &str) -> Option<(&str, u32)> {
    let (id, n) = key.rsplit_once('#')?;
    Some((id, n.parse().ok()?))
}

/// Whether a shortfall of `short` minor units on an instalment of `amount` counts as met:
/// within `percent` % of the amount, or within `min_minor`, whichever is larger.
#[must_use]
pub fn within_tolerance(amount: i64, short: i64, percent: u32, min_minor: i64) -> bool {
    if short <= 0 {
        return true;
    }
    let by_percent = amount.saturating_mul(i64::from(percent)) / 100;
    short <= by_percent.max(min_minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instalment_keys_read_back() {
        let k = instalment_key("arr#7", 12);
        assert_eq!(k, "arr#7#12");
        assert_eq!(parse_instalment_key(&k), Some(("arr#7", 12)));
        assert_eq!(parse_instalment_key("ptp-1"), None);
    }

    #[test]
    fn tolerance_is_the_larger_of_percent_and_minimum() {
        // 5 % of 10 000 is 500.
        assert!(within_tolerance(10_000, 500, 5, 100));
        assert!(!within_tolerance(10_000, 501, 5, 100));
        // 5 % of 1 000 is 50, below the 100 minimum.
        assert!(within_tolerance(1_000, 100, 5, 100));
        assert!(!within_tolerance(1_000, 101, 5, 100));
        assert!(within_tolerance(1_000, 0, 0, 0));
    }
}
