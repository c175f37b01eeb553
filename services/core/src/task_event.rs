//! Task events as consumers receive them: the read side of `task.schema.json`.
//!
//! The core publishes `task.scheduled`, `task.due` and `task.cancelled` from private
//! `Serialize` structs in [`crate::outbound`]. Dashboards, `collectionsctl watch` and the
//! contract tests need the opposite direction, so this module gives them one owned type,
//! [`TaskEvent`], and one entry point, [`parse_task_event`].
//!
//! Deserializing a [`TaskEvent`] checks every rule `proto/schemas/task.schema.json` states
//! (required fields, enums, ranges, the exact UUID and RFC 3339 shapes, non-empty strings)
//! plus the one rule proto/README.md says is checked in code: `subject` equals
//! `data.account_id`. A value of this type therefore always satisfies the contract, however
//! it was deserialized. Unknown fields are ignored everywhere, because the contract lets
//! producers add fields and tells consumers to ignore them.

use std::fmt;

use jiff::Timestamp;
use serde::{de::Error as _, Deserialize, Deserializer};
use uuid::Uuid;

use crate::{
    event::{HoldReason, RestrictionKind},
    money::Money,
    outbound::TaskState,
    task::{Channel, TaskKind, Tone},
};

/// Longest account id (`subject`, `data.account_id`) the contract allows, in characters.
const MAX_ACCOUNT_ID_CHARS: usize = 128;

/// Highest (least urgent) task priority the contract allows; 1 is the most urgent.
const MAX_PRIORITY: u8 = 9;

/// A `task.*` CloudEvent (structured JSON mode) as published on `collections.tasks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    /// CloudEvents `specversion`: always `"1.0"`.
    pub specversion: String,
    /// CloudEvents `id`: the idempotency key; a redelivery or resend carries the same id.
    pub id: Uuid,
    /// CloudEvents `source`: always `"collections"`.
    pub source: String,
    /// The life-cycle state named by the CloudEvents `type` (`task.<state>`).
    pub state: TaskState,
    /// CloudEvents `time`: when the service produced the event.
    pub time: Timestamp,
    /// CloudEvents `subject`: the account id, equal to `data.account_id`.
    pub subject: String,
    /// CloudEvents `datacontenttype`: always `"application/json"`.
    pub datacontenttype: String,
    /// The task.
    pub data: TaskEventData,
}

impl TaskEvent {
    /// The CloudEvents `type`: `task.scheduled`, `task.due` or `task.cancelled`.
    #[must_use]
    pub fn event_type(&self) -> &'static str {
        match self.state {
            TaskState::Scheduled => "task.scheduled",
            TaskState::Due => "task.due",
            TaskState::Cancelled => "task.cancelled",
        }
    }

    /// The routing key the event travels under: `task.<state>.<kind>`.
    #[must_use]
    pub fn routing_key(&self) -> String {
        format!("{}.{}", self.event_type(), self.data.kind.as_str())
    }
}

/// `data` of a task event: the task and the account summary a collector needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskEventData {
    /// Stable task id; every event about the same task carries it.
    #[serde(deserialize_with = "canonical_uuid")]
    pub task_id: Uuid,
    /// The account (1-128 characters), equal to the envelope's `subject`.
    #[serde(deserialize_with = "account_id")]
    pub account_id: String,
    /// What the collector is asked to do. Never an internal kind such as
    /// `promise_expiry`: those are not published.
    #[serde(deserialize_with = "published_kind")]
    pub kind: TaskKind,
    /// How the task reaches the customer.
    pub channel: Channel,
    /// When the task should be worked.
    #[serde(deserialize_with = "instant")]
    pub due_at: Timestamp,
    /// 1 (most urgent) to 9.
    #[serde(deserialize_with = "priority")]
    pub priority: u8,
    /// How firm the conversation is.
    pub tone: Tone,
    /// Machine-readable why, e.g. `first_installment_default`; never empty.
    #[serde(deserialize_with = "non_empty")]
    pub reason: String,
    /// The promise concerned, if any; never empty when present.
    #[serde(default, deserialize_with = "optional_non_empty")]
    pub promise_id: Option<String>,
    /// The contact point (an opaque id of a number or address, 1-128 characters, never
    /// the number itself) the task is meant for, when it is meant for one known point.
    #[serde(default, deserialize_with = "optional_point_id")]
    pub contact_point_id: Option<String>,
    /// The inbound event (or scheduler tick) that caused this message.
    #[serde(deserialize_with = "canonical_uuid")]
    pub cause_event_id: Uuid,
    /// Attempt number (1-based), when the task is one of a series of calls.
    #[serde(default, deserialize_with = "optional_attempt")]
    pub attempt: Option<u32>,
    /// Content hash of the policy that planned the task; never empty.
    #[serde(deserialize_with = "non_empty")]
    pub policy_version: String,
    /// Why the task was cancelled; only meaningful on `task.cancelled`, never empty
    /// when present.
    #[serde(default, deserialize_with = "optional_non_empty")]
    pub cancel_reason: Option<String>,
    /// The account at the time of the event.
    pub account: TaskAccountSummary,
    /// The task's revision after this event: 1 for its first `task.scheduled`, one more
    /// with every later event about it. Per task, the event with the highest revision is
    /// the task as it stands; events may arrive out of that order (a relay republishing
    /// late, a scheduler firing while a worker's publish is in flight).
    #[serde(deserialize_with = "revision")]
    pub revision: u32,
}

/// The account summary every task event carries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskAccountSummary {
    /// Days past due in the customer's calendar; negative before the due date.
    pub dpd: i64,
    /// Days-past-due band.
    pub bucket: Bucket,
    /// Overdue amount (may be zero).
    pub overdue_amount: Money,
    /// Broken promises counted.
    pub broken_promises: u32,
    /// Whether the first instalment is unpaid.
    pub first_installment_default: bool,
    /// Failed payments seen.
    pub failed_payments: u32,
    /// The last payment, when one is known.
    #[serde(default)]
    pub last_payment: Option<TaskLastPayment>,
    /// No channel reaches the debtor (a run of attempts reached nobody, or every known
    /// contact point is retired); absent means `false`.
    #[serde(default)]
    pub lost_contact: bool,
    /// Reasons of the holds in force (`dispute`, `hardship`, ...), each once; absent
    /// means none. While one that stops all contact is in force, only the hold's review
    /// is planned.
    #[serde(default, deserialize_with = "unique")]
    pub holds: Vec<HoldReason>,
    /// Kinds of the contact restrictions in force (`opt_out`, `agreed_hours`, ...), each
    /// once; absent means none.
    #[serde(default, deserialize_with = "unique")]
    pub restrictions: Vec<RestrictionKind>,
}

/// The last payment in a task event's account summary.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskLastPayment {
    /// Amount received (may be zero).
    pub amount: Money,
    /// When it was received.
    #[serde(deserialize_with = "instant")]
    pub received_at: Timestamp,
}

/// Days-past-due band of an account, as spelled in the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Bucket {
    /// Not yet past due, or due today.
    #[serde(rename = "M0")]
    M0,
    /// 1-30 days past due.
    #[serde(rename = "M1")]
    M1,
    /// 31-60 days past due.
    #[serde(rename = "M2")]
    M2,
    /// 61-90 days past due.
    #[serde(rename = "M3")]
    M3,
    /// More than 90 days past due.
    #[serde(rename = "M3+")]
    M3Plus,
}

impl Bucket {
    /// Contract spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::M0 => "M0",
            Bucket::M1 => "M1",
            Bucket::M2 => "M2",
            Bucket::M3 => "M3",
            Bucket::M3Plus => "M3+",
        }
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses one task event body and checks it against the task contract.
///
/// # Errors
/// A human-readable reason when the body is not JSON, not a `task.*` CloudEvent of this
/// service, or breaks a rule of `task.schema.json` or `subject == data.account_id`. The
/// reason never repeats the account id.
pub fn parse_task_event(bytes: &[u8]) -> Result<TaskEvent, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// The envelope as it arrives. `data` stays a JSON value until the envelope is known to
/// be a task event, so a stray message is reported as such rather than as a missing
/// `task_id`.
#[derive(Deserialize)]
struct WireEnvelope {
    specversion: String,
    id: String,
    source: String,
    #[serde(rename = "type")]
    ty: String,
    time: String,
    subject: String,
    datacontenttype: String,
    data: serde_json::Value,
}

impl<'de> Deserialize<'de> for TaskEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = WireEnvelope::deserialize(d)?;
        TaskEvent::from_wire(wire).map_err(D::Error::custom)
    }
}

impl TaskEvent {
    fn from_wire(w: WireEnvelope) -> Result<Self, String> {
        if w.specversion != "1.0" {
            return Err(format!(
                "specversion {:?} is not \"1.0\"",
                shown(&w.specversion)
            ));
        }
        let Some(state_name) = w.ty.strip_prefix("task.") else {
            return Err(format!("type {:?} is not a task event", shown(&w.ty)));
        };
        let state = match state_name {
            "scheduled" => TaskState::Scheduled,
            "due" => TaskState::Due,
            "cancelled" => TaskState::Cancelled,
            _ => return Err(format!("type {:?} is not a known task state", shown(&w.ty))),
        };
        let id = parse_canonical_uuid(&w.id).map_err(|e| format!("id: {e}"))?;
        // Only this service publishes task events; another source is a misrouted message.
        if w.source != crate::outbound::SOURCE {
            return Err(format!(
                "source {:?} is not {:?}",
                shown(&w.source),
                crate::outbound::SOURCE
            ));
        }
        let time = parse_instant(&w.time).map_err(|e| format!("time: {e}"))?;
        check_account_id(&w.subject).map_err(|e| format!("subject: {e}"))?;
        if w.datacontenttype != "application/json" {
            return Err(format!(
                "datacontenttype {:?} is not \"application/json\"",
                shown(&w.datacontenttype)
            ));
        }
        let data = TaskEventData::deserialize(w.data).map_err(|e| format!("data: {e}"))?;
        if data.account_id != w.subject {
            return Err("data.account_id differs from subject".to_owned());
        }
        Ok(Self {
            specversion: w.specversion,
            id,
            source: w.source,
            state,
            time,
            subject: w.subject,
            datacontenttype: w.datacontenttype,
            data,
        })
    }
}

/// At most 64 characters of a value for an error message, so a huge field cannot blow up
/// a log line.
fn shown(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The schema's `uuid`: the canonical 8-4-4-4-12 hex form only. `Uuid::parse_str` alone
/// would also take the simple, braced and URN forms, which the schema rejects.
fn parse_canonical_uuid(s: &str) -> Result<Uuid, String> {
    let b = s.as_bytes();
    let shaped = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    if !shaped {
        return Err(format!(
            "{:?} is not a UUID in 8-4-4-4-12 hex form",
            shown(s)
        ));
    }
    Uuid::parse_str(s).map_err(|e| format!("{:?} is not a UUID: {e}", shown(s)))
}

/// The schema's `instant`: RFC 3339 with a mandatory offset, matching its pattern
/// `YYYY-MM-DDThh:mm:ss[.f+](Z|±hh:mm)` (`T` and `Z` in either case). jiff's parser alone
/// is more liberal (a space for `T`, `+0800`, a bracketed zone, missing seconds), so the
/// shape is checked first and jiff then rejects impossible dates and times.
fn parse_instant(s: &str) -> Result<Timestamp, String> {
    if !is_rfc3339_shape(s) {
        return Err(format!(
            "{:?} is not an RFC 3339 date-time with an offset",
            shown(s)
        ));
    }
    s.parse::<Timestamp>()
        .map_err(|e| format!("{:?} is not a valid date-time: {e}", shown(s)))
}

fn is_rfc3339_shape(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    let head = digits(0..4)
        && at(4, b"-")
        && digits(5..7)
        && at(7, b"-")
        && digits(8..10)
        && at(10, b"Tt")
        && digits(11..13)
        && at(13, b":")
        && digits(14..16)
        && at(16, b":")
        && digits(17..19);
    if !head {
        return false;
    }
    let mut i = 19;
    if at(i, b".") {
        let start = i + 1;
        i = start;
        while at(i, b"0123456789") {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') => b.len() == i + 1,
        Some(b'+' | b'-') => {
            // `format: date-time` also bounds the offset; jiff would accept up to ±25:59.
            let hours = s.get(i + 1..i + 3).and_then(|h| h.parse::<u8>().ok());
            let minutes = s.get(i + 4..i + 6).and_then(|m| m.parse::<u8>().ok());
            b.len() == i + 6
                && digits(i + 1..i + 3)
                && at(i + 3, b":")
                && digits(i + 4..i + 6)
                && hours.is_some_and(|h| h <= 23)
                && minutes.is_some_and(|m| m <= 59)
        }
        _ => false,
    }
}

/// The schema's `accountId`: 1-128 characters (JSON Schema counts characters, not bytes).
fn check_account_id(s: &str) -> Result<(), String> {
    let n = s.chars().count();
    if (1..=MAX_ACCOUNT_ID_CHARS).contains(&n) {
        Ok(())
    } else {
        // The id itself is left out: it identifies a debtor.
        Err(format!(
            "an account id must be 1-{MAX_ACCOUNT_ID_CHARS} characters, not {n}"
        ))
    }
}

fn canonical_uuid<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
    let s = String::deserialize(d)?;
    parse_canonical_uuid(&s).map_err(D::Error::custom)
}

fn instant<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
    let s = String::deserialize(d)?;
    parse_instant(&s).map_err(D::Error::custom)
}

fn account_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_account_id(&s).map_err(D::Error::custom)?;
    Ok(s)
}

fn published_kind<'de, D: Deserializer<'de>>(d: D) -> Result<TaskKind, D::Error> {
    let kind = TaskKind::deserialize(d)?;
    if kind.is_internal() {
        return Err(D::Error::custom(format!(
            "kind {:?} is internal and never published",
            kind.as_str()
        )));
    }
    Ok(kind)
}

fn priority<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let p = u8::deserialize(d)?;
    if (1..=MAX_PRIORITY).contains(&p) {
        Ok(p)
    } else {
        Err(D::Error::custom(format!(
            "priority {p} is outside 1-{MAX_PRIORITY}"
        )))
    }
}

fn revision<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(D::Error::custom("revision 0: revisions count from 1")),
        r => Ok(r),
    }
}

fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Err(D::Error::custom("an empty string where text is required"));
    }
    Ok(s)
}

// `deserialize_with` on an `Option` field turns off serde's "absent means None", hence
// the `#[serde(default)]` next to each use; `null` arrives here as `None`.
fn optional_non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(s) if s.is_empty() => Err(D::Error::custom(
            "an empty string where text or null is required",
        )),
        other => Ok(other),
    }
}

/// Longest contact point id the contract allows, in characters (as `contact.attempted`).
const MAX_POINT_ID_CHARS: usize = 128;

fn optional_point_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let id = optional_non_empty(d)?;
    if let Some(n) = id.as_deref().map(|s| s.chars().count()) {
        if n > MAX_POINT_ID_CHARS {
            return Err(D::Error::custom(format!(
                "contact_point_id must be 1-{MAX_POINT_ID_CHARS} characters, not {n}"
            )));
        }
    }
    Ok(id)
}

/// The schema's `uniqueItems`: a list in which no value appears twice (the summary's
/// `holds` and `restrictions` name each reason or kind once, however many holds share it).
/// `null` is refused like any non-array, as the schema's `type: array` does.
fn unique<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + PartialEq + fmt::Display,
{
    let items = Vec::<T>::deserialize(d)?;
    for (i, item) in items.iter().enumerate() {
        if items[..i].contains(item) {
            return Err(D::Error::custom(format!("{item} is listed twice")));
        }
    }
    Ok(items)
}

fn optional_attempt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match Option::<u32>::deserialize(d)? {
        Some(0) => Err(D::Error::custom("attempt 0: attempts count from 1")),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_shape_follows_the_schema_pattern() {
        for ok in [
            "2026-11-04T15:00:00+08:00",
            "2026-11-04t15:00:00z",
            "2026-11-04T15:00:00.123456Z",
            "2026-11-04T15:00:00-00:00",
            "2026-11-04T15:00:00+23:59",
        ] {
            assert!(parse_instant(ok).is_ok(), "{ok} should pass");
        }
        for bad in [
            "2026-11-04T15:00:00",
            "2026-11-04 15:00:00+08:00",
            "2026-11-04T15:00+08:00",
            "2026-11-04T15:00:00+0800",
            "2026-11-04T15:00:00+08",
            "2026-11-04T15:00:00+08:00[Asia/Shanghai]",
            "2026-11-04T15:00:00.Z",
            "2026-11-04T15:00:00+24:00",
            "2026-13-45T25:61:00+08:00",
            "2026-11-04T15:00:00Z ",
            "",
        ] {
            assert!(parse_instant(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn only_the_canonical_uuid_form_is_accepted() {
        assert!(parse_canonical_uuid("5b0f3c1e-8d2a-4c47-9f61-2e7a1d9b4c01").is_ok());
        assert!(parse_canonical_uuid("5B0F3C1E-8D2A-4C47-9F61-2E7A1D9B4C01").is_ok());
        for bad in [
            "5b0f3c1e8d2a4c479f612e7a1d9b4c01",
            "{5b0f3c1e-8d2a-4c47-9f61-2e7a1d9b4c01}",
            "urn:uuid:5b0f3c1e-8d2a-4c47-9f61-2e7a1d9b4c01",
            "5b0f3c1e-8d2a-4c47-9f61-2e7a1d9b4c0g",
        ] {
            assert!(parse_canonical_uuid(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn account_ids_are_counted_in_characters() {
        assert!(check_account_id(&"账".repeat(128)).is_ok());
        assert!(check_account_id(&"a".repeat(129)).is_err());
        assert!(check_account_id("").is_err());
    }
}
