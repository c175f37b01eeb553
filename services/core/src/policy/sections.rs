//! The policy's sections: contact window, promise timing, escalation ladders, priority
//! order, call cadence, channel mix, frequency caps, segments and pre-due reminders, each
//! as the policy file writes it, with the lookups the rules make in them.

use jiff::{
    civil::{Date, Time, Weekday},
    SignedDuration,
};
use serde::{Deserialize, Serialize};

use crate::task::{Channel, TaskKind, Tone};

/// A weekday name as written in the policy file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeekdayName {
    /// Monday.
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

impl WeekdayName {
    fn of(w: Weekday) -> Self {
        match w {
            Weekday::Monday => Self::Monday,
            Weekday::Tuesday => Self::Tuesday,
            Weekday::Wednesday => Self::Wednesday,
            Weekday::Thursday => Self::Thursday,
            Weekday::Friday => Self::Friday,
            Weekday::Saturday => Self::Saturday,
            Weekday::Sunday => Self::Sunday,
        }
    }
}

/// Local hours of one day: `start` allowed, `end` the first disallowed time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hours {
    /// First allowed local time.
    pub start: Time,
    /// First disallowed local time (exclusive end).
    pub end: Time,
}

/// Per-weekday hours that replace the daily `start`/`end`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct WeekdayHours {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monday: Option<Hours>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuesday: Option<Hours>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wednesday: Option<Hours>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thursday: Option<Hours>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friday: Option<Hours>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saturday: Option<Hours>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunday: Option<Hours>,
}

impl WeekdayHours {
    /// The override for a weekday, if any.
    #[must_use]
    pub fn get(&self, day: WeekdayName) -> Option<Hours> {
        match day {
            WeekdayName::Monday => self.monday,
            WeekdayName::Tuesday => self.tuesday,
            WeekdayName::Wednesday => self.wednesday,
            WeekdayName::Thursday => self.thursday,
            WeekdayName::Friday => self.friday,
            WeekdayName::Saturday => self.saturday,
            WeekdayName::Sunday => self.sunday,
        }
    }

    pub(super) fn all(&self) -> [(&'static str, Option<Hours>); 7] {
        [
            ("monday", self.monday),
            ("tuesday", self.tuesday),
            ("wednesday", self.wednesday),
            ("thursday", self.thursday),
            ("friday", self.friday),
            ("saturday", self.saturday),
            ("sunday", self.sunday),
        ]
    }
}

/// Local contact hours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactWindow {
    /// First allowed local time.
    pub start: Time,
    /// First disallowed local time (exclusive end).
    pub end: Time,
    /// Optional per-weekday hours replacing `start`/`end` on that weekday.
    #[serde(default)]
    pub weekdays: WeekdayHours,
    /// Optional weekdays with no contact at all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closed_weekdays: Vec<WeekdayName>,
    /// Optional dates (in the customer's calendar) with no contact at all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<Date>,
    /// Hours the debtor agreed to (an `agreed_hours` restriction): every day's hours are
    /// narrowed to them, and a day with no overlap is closed. Never read from a policy
    /// file: the rules set it on a copy of the window for one account.
    #[serde(skip)]
    pub narrowed_to: Option<Hours>,
}

impl ContactWindow {
    /// The same hours every day, no holidays.
    #[must_use]
    pub fn daily(start: Time, end: Time) -> Self {
        Self {
            start,
            end,
            weekdays: WeekdayHours::default(),
            closed_weekdays: Vec::new(),
            holidays: Vec::new(),
            narrowed_to: None,
        }
    }

    /// The allowed hours on a local date, `None` when the day is closed.
    #[must_use]
    pub fn hours_on(&self, date: Date) -> Option<Hours> {
        if self.holidays.contains(&date) {
            return None;
        }
        let day = WeekdayName::of(date.weekday());
        if self.closed_weekdays.contains(&day) {
            return None;
        }
        let h = self.weekdays.get(day).unwrap_or(Hours {
            start: self.start,
            end: self.end,
        });
        match self.narrowed_to {
            None => Some(h),
            Some(n) => {
                let (start, end) = (h.start.max(n.start), h.end.min(n.end));
                (start < end).then_some(Hours { start, end })
            }
        }
    }
}

/// Promise timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromiseRules {
    /// Promises further out are flagged for supervisor review.
    #[serde(with = "duration")]
    pub max_horizon: SignedDuration,
    /// Reminder lead time.
    #[serde(with = "duration")]
    pub reminder_before: SignedDuration,
    /// Check delay after the promised time.
    #[serde(with = "duration")]
    pub check_after: SignedDuration,
    /// Grace after the promised time before the promise counts as broken.
    #[serde(with = "duration")]
    pub grace: SignedDuration,
    /// How the reminder reaches the customer (a phone, or `sms`).
    pub reminder_channel: Channel,
    /// How the check reaches the customer (a phone, or `sms`).
    pub check_channel: Channel,
}

/// One step of the escalation ladder by count of broken promises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokenPromiseStep {
    /// The step applies from this many broken promises up to the next step.
    pub from: u32,
    /// Tone of every task planned while the step applies.
    pub tone: Tone,
    /// Extra tasks opened at each broken promise while the step applies (unless one of
    /// that kind is already open).
    #[serde(default)]
    pub open: Vec<TaskKind>,
}

/// One step of the escalation ladder by DPD bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketStep {
    /// The step applies from this bucket (`M0`, `M1`, `M2`, `M3`, `M3+`) up to the next step.
    pub from: String,
    /// The least tone of every task planned while the step applies.
    pub tone: Tone,
    /// Extra tasks opened once per bucket when a collection call is planned in it.
    #[serde(default)]
    pub open: Vec<TaskKind>,
}

/// Escalation ladder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    /// Steps by count of broken promises, increasing `from`; below the first step the
    /// tone is gentle and nothing extra opens.
    pub by_broken_promises: Vec<BrokenPromiseStep>,
    /// Optional steps by DPD bucket, increasing `from`; the tone is the firmer of the two
    /// ladders.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_bucket: Vec<BucketStep>,
}

/// The kinds an escalation step may open.
pub const ESCALATION_KINDS: [TaskKind; 4] = [
    TaskKind::ThirdPartyCall,
    TaskKind::FieldVisit,
    TaskKind::FormalLetter,
    TaskKind::SupervisorReview,
];

/// The DPD buckets, in order.
pub const BUCKETS: [&str; 5] = ["M0", "M1", "M2", "M3", "M3+"];

pub(super) fn bucket_rank(b: &str) -> Option<usize> {
    BUCKETS.iter().position(|x| *x == b)
}

impl Escalation {
    /// The step in force for a count of broken promises.
    #[must_use]
    pub fn broken_step(&self, broken: u32) -> Option<&BrokenPromiseStep> {
        self.by_broken_promises
            .iter()
            .rev()
            .find(|s| broken >= s.from)
    }

    /// The step in force for a bucket.
    #[must_use]
    pub fn bucket_step(&self, bucket: &str) -> Option<&BucketStep> {
        let rank = bucket_rank(bucket)?;
        self.by_bucket
            .iter()
            .rev()
            .find(|s| bucket_rank(&s.from).is_some_and(|r| rank >= r))
    }

    /// The tone for a count of broken promises in a bucket: the firmer of the two ladders.
    #[must_use]
    pub fn tone(&self, broken: u32, bucket: &str) -> Tone {
        let a = self.broken_step(broken).map_or(Tone::Gentle, |s| s.tone);
        let b = self.bucket_step(bucket).map_or(Tone::Gentle, |s| s.tone);
        if tone_rank(b) > tone_rank(a) {
            b
        } else {
            a
        }
    }
}

fn tone_rank(t: Tone) -> u8 {
    match t {
        Tone::Gentle => 0,
        Tone::Firm => 1,
        Tone::Serious => 2,
    }
}

/// What puts an account high in the work order (domain.md rule 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorityCriterion {
    /// Instalment 1 failed and is unpaid.
    FirstInstalmentDefault,
    /// The open promise falls due today (customer's calendar), or the task concerns it.
    PromiseDueToday,
    /// A partial payment arrived while delinquent.
    PartialPayer,
    /// Overdue at or above `large_balance_minor`.
    LargeBalance,
    /// No channel reaches the debtor (no upstream signal yet: never matches).
    LostContact,
}

/// Priority order and thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityRules {
    /// Criteria, most urgent first: a task gets the 1-based position of the first
    /// criterion its account meets, else one more than the list's length.
    pub order: Vec<PriorityCriterion>,
    /// Overdue minor units from which an account is a large balance.
    pub large_balance_minor: i64,
}

/// A value per DPD bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ByBucket<T> {
    #[serde(rename = "M0")]
    pub m0: T,
    #[serde(rename = "M1")]
    pub m1: T,
    #[serde(rename = "M2")]
    pub m2: T,
    #[serde(rename = "M3")]
    pub m3: T,
    #[serde(rename = "M3+")]
    pub m3_plus: T,
}

impl<T> ByBucket<T> {
    /// The value for a bucket name (`M3+` for anything unknown).
    #[must_use]
    pub fn get(&self, bucket: &str) -> &T {
        match bucket {
            "M0" => &self.m0,
            "M1" => &self.m1,
            "M2" => &self.m2,
            "M3" => &self.m3,
            _ => &self.m3_plus,
        }
    }

    pub(super) fn all(&self) -> [(&'static str, &T); 5] {
        [
            ("M0", &self.m0),
            ("M1", &self.m1),
            ("M2", &self.m2),
            ("M3", &self.m3),
            ("M3+", &self.m3_plus),
        ]
    }
}

/// Call cadence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cadence {
    /// Local hours to try, in order.
    pub hours: Vec<Time>,
    /// Attempts per local day.
    pub attempts_per_day: u32,
    /// Calendar days from one calling day to the next by bucket (1 = every day).
    pub days_between_attempts: ByBucket<u32>,
}

/// Share of calls per phone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelMix {
    /// Mobile share.
    pub phone_mobile: f64,
    /// Work phone share.
    pub phone_work: f64,
    /// Home phone share.
    pub phone_home: f64,
}

/// Frequency caps on telephone calls to the debtor, per account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caps {
    /// At most this many call attempts in any `window_days` (rolling); 0 = no cap.
    pub max_call_attempts: u32,
    /// Length of the rolling window in days.
    pub window_days: u32,
    /// No call this long after a right-party conversation; `"0s"` = no quiet period.
    #[serde(with = "duration")]
    pub quiet_after_conversation: SignedDuration,
}

impl Caps {
    /// Whether any cap is active.
    #[must_use]
    pub fn active(&self) -> bool {
        self.max_call_attempts > 0 || self.quiet_after_conversation.is_positive()
    }

    /// The rolling window as a duration.
    #[must_use]
    pub fn window(&self) -> SignedDuration {
        SignedDuration::from_hours(24 * i64::from(self.window_days))
    }
}

/// What the contact ledger allows and what contact outcomes lead to (`[contacts]`,
/// optional: every key has the default documented in deploy/policy/README.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Contacts {
    /// At most this many conversations with the debtor per local day, across all of the
    /// debtor's accounts (China: 3); 0 = no cap.
    pub max_conversations_per_debtor_per_day: u32,
    /// At most this many unanswered attempts on one contact point per local day (China
    /// Banking Association: 6); 0 = no cap.
    pub max_unanswered_per_contact_point_per_day: u32,
    /// This many consecutive attempts without reaching the debtor make the account
    /// `lost_contact`...
    pub lost_contact_after: u32,
    /// ...when they span at least this many local days.
    pub lost_contact_min_days: u32,
    /// No call to the debtor this long after they say the money was paid
    /// (`claims_paid`), while the payment is verified.
    #[serde(with = "duration")]
    pub claims_paid_hold: SignedDuration,
    /// Plan a `third_party_call` when the account becomes `lost_contact` (domain rule 8:
    /// contacts only when the debtor is unreachable).
    pub third_party_when_lost: bool,
}

impl Default for Contacts {
    fn default() -> Self {
        Self {
            max_conversations_per_debtor_per_day: 3,
            max_unanswered_per_contact_point_per_day: 6,
            lost_contact_after: 6,
            lost_contact_min_days: 3,
            claims_paid_hold: SignedDuration::from_hours(24),
            third_party_when_lost: true,
        }
    }
}

/// Holds (`[holds]`, optional): when a hold placed without `review_at` is reviewed, by
/// reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Holds {
    /// Review a dispute after this long.
    #[serde(with = "duration")]
    pub review_dispute: SignedDuration,
    /// ...a complaint.
    #[serde(with = "duration")]
    pub review_complaint: SignedDuration,
    /// ...hardship.
    #[serde(with = "duration")]
    pub review_hardship: SignedDuration,
    /// ...a request to cease communication.
    #[serde(with = "duration")]
    pub review_cease_communication: SignedDuration,
    /// ...attorney representation.
    #[serde(with = "duration")]
    pub review_attorney_represented: SignedDuration,
    /// ...bankruptcy.
    #[serde(with = "duration")]
    pub review_bankruptcy: SignedDuration,
    /// ...a death.
    #[serde(with = "duration")]
    pub review_deceased: SignedDuration,
    /// ...a fraud claim.
    #[serde(with = "duration")]
    pub review_fraud_claim: SignedDuration,
    /// ...anything else.
    #[serde(with = "duration")]
    pub review_other: SignedDuration,
}

impl Default for Holds {
    fn default() -> Self {
        let days = |d: i64| SignedDuration::from_hours(24 * d);
        Self {
            review_dispute: days(30),
            review_complaint: days(14),
            review_hardship: days(14),
            review_cease_communication: days(90),
            review_attorney_represented: days(30),
            review_bankruptcy: days(90),
            review_deceased: days(90),
            review_fraud_claim: days(30),
            review_other: days(14),
        }
    }
}

impl Holds {
    /// How long after placement a hold of `reason` is reviewed.
    #[must_use]
    pub fn review_after(&self, reason: crate::event::HoldReason) -> SignedDuration {
        use crate::event::HoldReason as R;
        match reason {
            R::Dispute => self.review_dispute,
            R::Complaint => self.review_complaint,
            R::Hardship => self.review_hardship,
            R::CeaseCommunication => self.review_cease_communication,
            R::AttorneyRepresented => self.review_attorney_represented,
            R::Bankruptcy => self.review_bankruptcy,
            R::Deceased => self.review_deceased,
            R::FraudClaim => self.review_fraud_claim,
            R::Other => self.review_other,
        }
    }
}

/// What a `promise.made` does while an arrangement is being paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromiseDuringPlan {
    /// The promise is recorded in the note; the plan and its tasks stand.
    Record,
    /// The promise supersedes the plan (its tasks are cancelled), as it would a promise.
    Supersede,
}

/// Payment arrangements (`[arrangement]`, optional): instalment plans and settlements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Arrangement {
    /// An instalment not met this long after its due instant is missed.
    #[serde(with = "duration")]
    pub grace: SignedDuration,
    /// A shortfall within this percentage of the instalment counts as met...
    pub tolerance_percent: u32,
    /// ...or within this many minor units, whichever is larger.
    pub tolerance_min_minor: i64,
    /// The plan breaks at this many missed instalments (1: the first miss breaks it).
    pub misses_to_break: u32,
    /// What a promise made while a plan is being paid does.
    pub promise_during_plan: PromiseDuringPlan,
}

impl Arrangement {
    /// Whether every key holds its default.
    #[must_use]
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for Arrangement {
    fn default() -> Self {
        Self {
            grace: SignedDuration::from_hours(2),
            tolerance_percent: 5,
            tolerance_min_minor: 100,
            misses_to_break: 1,
            promise_during_plan: PromiseDuringPlan::Record,
        }
    }
}

/// Account segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segments {
    /// A habitual late payer failed at least this many of the last instalments...
    pub habitual_late_min_failures: u32,
    /// ...out of this many (counted back from the latest instalment seen).
    pub habitual_late_last_instalments: u32,
}

/// Reminders before the next due date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreDue {
    /// Days before the due date for habitual late payers; 0 = none.
    pub habitual_late_payer_days: u32,
    /// Days before the due date for accounts that paid only part last period; 0 = none.
    pub partial_payer_last_period_days: u32,
    /// Days before the due date for every other account; 0 = none.
    pub other_days: u32,
    /// Local time of day of the reminder.
    pub at: Time,
    /// How the reminder reaches the customer (a phone, or `sms`).
    pub channel: Channel,
}

mod duration {
    use jiff::SignedDuration;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &SignedDuration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{d:#}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SignedDuration, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<SignedDuration>()
            .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration: {e}")))
    }
}
