//! The collections policy: every number the rules use, loaded from TOML and checked whole.
//!
//! `deploy/policy/README.md` documents every key with its default and where the default
//! comes from. A policy is parsed and validated completely before anything runs on it:
//! [`Policy::from_toml_str`] refuses a file naming the key and the problem.

use std::fmt::Write as _;

use jiff::{
    civil::{Date, Time, Weekday},
    tz::TimeZone,
    SignedDuration,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::task::{Channel, TaskKind, Tone};

/// The shipped default policy (`deploy/policy/default.toml`), compiled in so that running
/// without `POLICY_FILE` is exactly running with the shipped file.
pub const DEFAULT_POLICY_TOML: &str = include_str!("../../../deploy/policy/default.toml");

/// The shipped Regulation F profile (`deploy/policy/us-reg-f.toml`).
pub const US_REG_F_POLICY_TOML: &str = include_str!("../../../deploy/policy/us-reg-f.toml");

/// A refused policy file: which key and what is wrong with it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("policy key `{key}`: {problem}")]
pub struct PolicyError {
    /// Dotted key path, e.g. `contact_window.end`.
    pub key: String,
    /// The problem.
    pub problem: String,
}

fn err(key: &str, problem: impl Into<String>) -> PolicyError {
    PolicyError {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// The whole policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Zone for customers whose events name none.
    pub default_timezone: String,
    /// When contact is allowed.
    pub contact_window: ContactWindow,
    /// Promise timing.
    pub promise: PromiseRules,
    /// Escalation ladder.
    pub escalation: Escalation,
    /// Priority order and thresholds.
    pub priority: PriorityRules,
    /// Call cadence.
    pub cadence: Cadence,
    /// Phone channel mix.
    pub channel_mix: ChannelMix,
    /// Frequency caps (off by default).
    pub caps: Caps,
    /// Account segments.
    pub segments: Segments,
    /// Reminders before the next due date, by segment.
    pub pre_due: PreDue,
}

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

    fn all(&self) -> [(&'static str, Option<Hours>); 7] {
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
        Some(self.weekdays.get(day).unwrap_or(Hours {
            start: self.start,
            end: self.end,
        }))
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

fn bucket_rank(b: &str) -> Option<usize> {
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

    fn all(&self) -> [(&'static str, &T); 5] {
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

impl Default for Policy {
    fn default() -> Self {
        // The shipped file is checked by a unit test, so this cannot fail in a release.
        Self::from_toml_str(DEFAULT_POLICY_TOML).unwrap_or_else(|e| {
            panic!("the built-in default policy is invalid: {e}");
        })
    }
}

/// The dotted key at byte `offset` of a TOML text: the nearest `key =` at or before the
/// offset, prefixed with the table header it sits under.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    // The offset may sit on a key itself (an unknown key): end the head after its line's
    // `=` so that the key found is that line's.
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let offset = match text[line_start..line_end].find('=') {
        Some(eq) if line_start + eq >= offset => line_start + eq + 1,
        _ => offset,
    };
    let head = &text[..offset];
    let mut key = String::new();
    let mut section = String::new();
    for line in head.lines().rev() {
        let l = line.trim();
        if l.starts_with('[') {
            section = l.trim_matches(|c| c == '[' || c == ']').trim().to_owned();
            break;
        }
        if key.is_empty() {
            if let Some((lhs, _)) = l.split_once('=') {
                let lhs = lhs.trim().trim_matches('"');
                if !lhs.is_empty() && !lhs.starts_with('#') {
                    lhs.clone_into(&mut key);
                }
            }
        }
    }
    match (section.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => section,
        (false, false) => format!("{section}.{key}"),
    }
}

fn is_phone_or_sms(c: Channel) -> bool {
    c.is_phone() || c == Channel::Sms
}

impl Policy {
    /// Parses and checks a policy file.
    ///
    /// # Errors
    /// A [`PolicyError`] naming the first key that is missing, unknown or inconsistent.
    pub fn from_toml_str(text: &str) -> Result<Self, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| {
            let mut key = e.span().map(|s| key_at(text, s.start)).unwrap_or_default();
            let msg = e.message().to_owned();
            // "missing field `x`" points at the table: name the missing key.
            if let Some(field) = msg
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
            {
                let table = e
                    .span()
                    .map(|s| {
                        let l = text[s].lines().next().unwrap_or("").trim();
                        if l.starts_with('[') {
                            l.trim_matches(|c| c == '[' || c == ']').trim().to_owned()
                        } else {
                            String::new()
                        }
                    })
                    .unwrap_or_default();
                key = if table.is_empty() {
                    field.to_owned()
                } else {
                    format!("{table}.{field}")
                };
            }
            err(&key, msg)
        })?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks the relations between keys that the types cannot express.
    ///
    /// # Errors
    /// The first problem found.
    #[allow(clippy::too_many_lines)]
    pub fn validate(&self) -> Result<(), PolicyError> {
        TimeZone::get(&self.default_timezone).map_err(|_| {
            err(
                "default_timezone",
                format!("unknown IANA zone {:?}", self.default_timezone),
            )
        })?;
        let w = &self.contact_window;
        if w.end <= w.start {
            return Err(err(
                "contact_window.end",
                format!("end {} is not after start {}", w.end, w.start),
            ));
        }
        for (day, hours) in w.weekdays.all() {
            if let Some(h) = hours {
                if h.end <= h.start {
                    return Err(err(
                        &format!("contact_window.weekdays.{day}.end"),
                        format!("end {} is not after start {}", h.end, h.start),
                    ));
                }
            }
        }
        if w.closed_weekdays.len() >= 7
            && [
                WeekdayName::Monday,
                WeekdayName::Tuesday,
                WeekdayName::Wednesday,
                WeekdayName::Thursday,
                WeekdayName::Friday,
                WeekdayName::Saturday,
                WeekdayName::Sunday,
            ]
            .iter()
            .all(|d| w.closed_weekdays.contains(d))
        {
            return Err(err(
                "contact_window.closed_weekdays",
                "every weekday is closed: no contact would ever be allowed",
            ));
        }
        let p = &self.promise;
        for (key, d) in [
            ("promise.max_horizon", p.max_horizon),
            ("promise.reminder_before", p.reminder_before),
            ("promise.check_after", p.check_after),
            ("promise.grace", p.grace),
        ] {
            if d.is_negative() {
                return Err(err(key, "must not be negative"));
            }
        }
        for (key, c) in [
            ("promise.reminder_channel", p.reminder_channel),
            ("promise.check_channel", p.check_channel),
            ("pre_due.channel", self.pre_due.channel),
        ] {
            if !is_phone_or_sms(c) {
                return Err(err(
                    key,
                    format!("{c} is not one of phone_mobile, phone_work, phone_home, sms"),
                ));
            }
        }
        let e = &self.escalation;
        for (i, s) in e.by_broken_promises.iter().enumerate() {
            let key = format!("escalation.by_broken_promises[{i}]");
            if s.from == 0 {
                return Err(err(
                    &format!("{key}.from"),
                    "steps start at 1 broken promise",
                ));
            }
            if i > 0 && s.from <= e.by_broken_promises[i - 1].from {
                return Err(err(
                    &format!("{key}.from"),
                    "steps must have strictly increasing `from`",
                ));
            }
            check_open(&format!("{key}.open"), &s.open)?;
        }
        for (i, s) in e.by_bucket.iter().enumerate() {
            let key = format!("escalation.by_bucket[{i}]");
            let Some(rank) = bucket_rank(&s.from) else {
                return Err(err(
                    &format!("{key}.from"),
                    format!("unknown bucket {:?} (M0, M1, M2, M3, M3+)", s.from),
                ));
            };
            if i > 0 && bucket_rank(&e.by_bucket[i - 1].from).is_some_and(|r| rank <= r) {
                return Err(err(
                    &format!("{key}.from"),
                    "steps must have strictly increasing buckets",
                ));
            }
            check_open(&format!("{key}.open"), &s.open)?;
        }
        if self.priority.large_balance_minor < 0 {
            return Err(err("priority.large_balance_minor", "must not be negative"));
        }
        if self.priority.order.is_empty() {
            return Err(err("priority.order", "needs at least one criterion"));
        }
        for (i, c) in self.priority.order.iter().enumerate() {
            if self.priority.order[..i].contains(c) {
                return Err(err(
                    "priority.order",
                    format!("{c:?} is listed twice").to_lowercase(),
                ));
            }
        }
        let c = &self.cadence;
        if c.hours.is_empty() {
            return Err(err("cadence.hours", "needs at least one hour"));
        }
        for h in &c.hours {
            if *h < w.start || *h >= w.end {
                return Err(err(
                    "cadence.hours",
                    format!("{h} is outside the contact window {}-{}", w.start, w.end),
                ));
            }
        }
        if c.hours.windows(2).any(|p| p[1] <= p[0]) {
            return Err(err("cadence.hours", "hours must be strictly increasing"));
        }
        if c.attempts_per_day == 0 {
            return Err(err("cadence.attempts_per_day", "must be at least 1"));
        }
        for (b, d) in c.days_between_attempts.all() {
            if !(1..=31).contains(d) {
                return Err(err(
                    &format!("cadence.days_between_attempts.{b}"),
                    format!("{d} is not between 1 (every day) and 31"),
                ));
            }
        }
        let m = &self.channel_mix;
        for (key, v) in [
            ("channel_mix.phone_mobile", m.phone_mobile),
            ("channel_mix.phone_work", m.phone_work),
            ("channel_mix.phone_home", m.phone_home),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(err(key, format!("{v} is not a share between 0 and 1")));
            }
        }
        let sum = m.phone_mobile + m.phone_work + m.phone_home;
        if (sum - 1.0).abs() > 1e-9 {
            return Err(err("channel_mix", format!("shares sum to {sum}, not 1")));
        }
        let caps = &self.caps;
        if caps.max_call_attempts > 0 && caps.window_days == 0 {
            return Err(err(
                "caps.window_days",
                "must be at least 1 when max_call_attempts is set",
            ));
        }
        if caps.quiet_after_conversation.is_negative() {
            return Err(err("caps.quiet_after_conversation", "must not be negative"));
        }
        if caps.max_call_attempts > 0 && caps.max_call_attempts < c.attempts_per_day {
            return Err(err(
                "caps.max_call_attempts",
                format!(
                    "{} is below cadence.attempts_per_day {}: the cap would always bite first",
                    caps.max_call_attempts, c.attempts_per_day
                ),
            ));
        }
        let s = &self.segments;
        if s.habitual_late_min_failures == 0
            || s.habitual_late_min_failures > s.habitual_late_last_instalments
        {
            return Err(err(
                "segments.habitual_late_min_failures",
                "need 1 <= habitual_late_min_failures <= habitual_late_last_instalments",
            ));
        }
        let pd = &self.pre_due;
        for (key, d) in [
            (
                "pre_due.habitual_late_payer_days",
                pd.habitual_late_payer_days,
            ),
            (
                "pre_due.partial_payer_last_period_days",
                pd.partial_payer_last_period_days,
            ),
            ("pre_due.other_days", pd.other_days),
        ] {
            if d > 31 {
                return Err(err(key, format!("{d} days is more than a month ahead")));
            }
        }
        if pd.at < w.start || pd.at >= w.end {
            return Err(err(
                "pre_due.at",
                format!(
                    "{} is outside the contact window {}-{}",
                    pd.at, w.start, w.end
                ),
            ));
        }
        Ok(())
    }

    /// The policy's content hash: recorded with every decision so that one can tell which
    /// policy decided what. Stable across key order and comments.
    #[must_use]
    pub fn version(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        let mut out = String::from("p-");
        for b in &digest[..6] {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    /// The default zone, parsed.
    #[must_use]
    pub fn default_zone(&self) -> TimeZone {
        TimeZone::get(&self.default_timezone).unwrap_or(TimeZone::UTC)
    }
}

fn check_open(key: &str, open: &[TaskKind]) -> Result<(), PolicyError> {
    for k in open {
        if !ESCALATION_KINDS.contains(k) {
            return Err(err(
                key,
                format!(
                    "{k} cannot be opened by escalation (third_party_call, field_visit, formal_letter, supervisor_review)"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_is_valid_and_has_source_numbers() {
        let p = Policy::from_toml_str(DEFAULT_POLICY_TOML).expect("default policy valid");
        assert_eq!(p.contact_window.start, Time::constant(8, 0, 0, 0));
        assert_eq!(p.contact_window.end, Time::constant(21, 0, 0, 0));
        assert_eq!(p.promise.reminder_before, SignedDuration::from_hours(1));
        assert_eq!(p.promise.grace, SignedDuration::from_hours(2));
        assert_eq!(p.promise.max_horizon, SignedDuration::from_hours(48));
        assert!(!p.caps.active(), "caps are off by default");
        assert_eq!(p.pre_due.habitual_late_payer_days, 7);
        assert_eq!(p.pre_due.partial_payer_last_period_days, 1);
        assert_eq!(p.pre_due.other_days, 0);
    }

    #[test]
    fn shipped_reg_f_profile_is_valid_and_caps_calls() {
        let p = Policy::from_toml_str(US_REG_F_POLICY_TOML).expect("reg f policy valid");
        assert_eq!(p.caps.max_call_attempts, 7);
        assert_eq!(p.caps.window_days, 7);
        assert_eq!(
            p.caps.quiet_after_conversation,
            SignedDuration::from_hours(7 * 24)
        );
        assert_eq!(p.contact_window.start, Time::constant(8, 0, 0, 0));
        assert_eq!(p.contact_window.end, Time::constant(21, 0, 0, 0));
        assert_ne!(p.version(), Policy::default().version());
    }

    #[test]
    fn window_end_before_start_is_refused_naming_the_key() {
        let text = DEFAULT_POLICY_TOML.replace("end = \"21:00\"", "end = \"07:00\"");
        let e = Policy::from_toml_str(&text).expect_err("must refuse");
        assert_eq!(e.key, "contact_window.end");
    }

    #[test]
    fn unknown_zone_is_refused() {
        let text = DEFAULT_POLICY_TOML.replace("Asia/Shanghai", "Mars/Olympus");
        let e = Policy::from_toml_str(&text).expect_err("must refuse");
        assert_eq!(e.key, "default_timezone");
    }

    #[test]
    fn mix_not_summing_to_one_is_refused() {
        let text = DEFAULT_POLICY_TOML.replace("phone_home = 0.10", "phone_home = 0.20");
        let e = Policy::from_toml_str(&text).expect_err("must refuse");
        assert_eq!(e.key, "channel_mix");
    }

    #[test]
    fn version_changes_with_content_only() {
        let a = Policy::default();
        let b = Policy::from_toml_str(&format!("# comment\n{DEFAULT_POLICY_TOML}")).expect("valid");
        assert_eq!(a.version(), b.version());
        let c =
            Policy::from_toml_str(&DEFAULT_POLICY_TOML.replace("\"2h\"", "\"3h\"")).expect("valid");
        assert_ne!(a.version(), c.version());
    }

    #[test]
    fn key_at_names_section_and_key() {
        let text = "x = 1\n[cadence]\nhours = [\"10:00\",\n  \"25:00\"]\n";
        let off = text.find("\"25").expect("found");
        assert_eq!(key_at(text, off), "cadence.hours");
    }
}
