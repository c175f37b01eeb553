//! Inbound CloudEvents: parse, don't validate.
//!
//! [`parse_event`] turns raw bytes into an [`Event`] whose fields can be trusted, or a
//! [`ParseError`] whose [`RejectCode`] goes into the dead-letter header.

use jiff::{civil::Date, tz::TimeZone, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::money::Money;

/// Largest accepted account id, in characters: the schema's `maxLength` counts characters,
/// so 128 Chinese characters (384 bytes of UTF-8) are a valid id.
pub const MAX_ACCOUNT_ID_LEN: usize = 128;

/// The four inbound event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// `payment.failed`
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    /// `promise.made`
    #[serde(rename = "promise.made")]
    PromiseMade,
    /// `promise.broken`
    #[serde(rename = "promise.broken")]
    PromiseBroken,
    /// `payment.received`
    #[serde(rename = "payment.received")]
    PaymentReceived,
}

impl EventType {
    /// Every inbound type, in contract order.
    pub const ALL: [EventType; 4] = [
        EventType::PaymentFailed,
        EventType::PromiseMade,
        EventType::PromiseBroken,
        EventType::PaymentReceived,
    ];

    /// The CloudEvents `type` and routing key.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PaymentFailed => "payment.failed",
            EventType::PromiseMade => "promise.made",
            EventType::PromiseBroken => "promise.broken",
            EventType::PaymentReceived => "payment.received",
        }
    }

    /// The quorum queue that carries this type.
    #[must_use]
    pub fn queue(self) -> &'static str {
        match self {
            EventType::PaymentFailed => "collections.payment-failed",
            EventType::PromiseMade => "collections.promise-made",
            EventType::PromiseBroken => "collections.promise-broken",
            EventType::PaymentReceived => "collections.payment-received",
        }
    }

    /// Parses a CloudEvents `type`.
    #[must_use]
    pub fn from_type(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Why a message was refused; the machine-readable code travels in the
/// `x-collections-error` header of the dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCode {
    /// Body larger than the configured limit.
    TooLarge,
    /// Body is not JSON.
    NotJson,
    /// JSON, but not a CloudEvents 1.0 structured event.
    NotCloudEvent,
    /// A CloudEvent of a type this queue does not carry.
    UnexpectedType,
    /// `data` does not match the type's schema.
    Schema,
    /// Well-formed, but a value is absurd (unknown zone, subject mismatch, zero amount).
    InvalidValue,
    /// The rules refused the event against the account's state (currency mismatch).
    Domain,
}

impl RejectCode {
    /// Header value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::TooLarge => "too_large",
            RejectCode::NotJson => "not_json",
            RejectCode::NotCloudEvent => "not_cloudevent",
            RejectCode::UnexpectedType => "unexpected_type",
            RejectCode::Schema => "schema",
            RejectCode::InvalidValue => "invalid_value",
            RejectCode::Domain => "domain",
        }
    }
}

/// A refused message: a code and a human-readable detail (never personal data).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {detail}", code.as_str())]
pub struct ParseError {
    /// Machine-readable reason.
    pub code: RejectCode,
    /// What exactly was wrong.
    pub detail: String,
}

impl ParseError {
    fn new(code: RejectCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

/// A parsed inbound event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// CloudEvents `id`: the idempotency key.
    pub id: Uuid,
    /// CloudEvents `source`.
    pub source: String,
    /// CloudEvents `time`.
    pub time: Timestamp,
    /// The account (CloudEvents `subject`, equal to `data.account_id`).
    pub account_id: String,
    /// The typed payload.
    pub body: EventBody,
}

impl Event {
    /// The event's type.
    #[must_use]
    pub fn event_type(&self) -> EventType {
        match self.body {
            EventBody::PaymentFailed(_) => EventType::PaymentFailed,
            EventBody::PromiseMade(_) => EventType::PromiseMade,
            EventBody::PromiseBroken(_) => EventType::PromiseBroken,
            EventBody::PaymentReceived(_) => EventType::PaymentReceived,
        }
    }
}

/// Typed payloads.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    /// An automatic debit failed.
    PaymentFailed(PaymentFailed),
    /// A customer promised to pay.
    PromiseMade(PromiseMade),
    /// Upstream (or the service itself) declared a promise broken.
    PromiseBroken(PromiseBroken),
    /// Money arrived.
    PaymentReceived(PaymentReceived),
}

/// `customer` block of `payment.failed`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Customer {
    /// IANA zone name; the policy default when absent (`parse_event` refuses `null`).
    #[serde(default)]
    pub timezone: Option<String>,
}

/// `installment` block of `payment.failed`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Installment {
    /// 1-based instalment number.
    pub number: u32,
    /// Due date in the customer's calendar.
    pub due_date: Date,
    /// Instalment amount.
    pub amount: Money,
}

/// `payment.failed` data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PaymentFailed {
    /// Account id.
    pub account_id: String,
    /// Customer facts.
    pub customer: Customer,
    /// The instalment that failed.
    pub installment: Installment,
    /// Total overdue after this failure (authoritative).
    pub overdue_amount: Money,
    /// Why the debit failed.
    pub failure_reason: String,
    /// When the debit was attempted.
    pub attempted_at: Timestamp,
}

/// `promise.made` data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PromiseMade {
    /// Account id.
    pub account_id: String,
    /// Upstream promise id.
    pub promise_id: String,
    /// Promised amount.
    pub amount: Money,
    /// Promised instant (a local wall-clock time resolved upstream).
    pub promised_at: Timestamp,
    /// Collector or system that captured it.
    pub captured_by: String,
    /// Channel the promise came through.
    pub channel: String,
}

/// `promise.broken` data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PromiseBroken {
    /// Account id.
    pub account_id: String,
    /// Upstream promise id.
    pub promise_id: String,
    /// Why it is broken (`no_payment`, `expired`, ...).
    pub reason: String,
}

/// `payment.received` data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PaymentReceived {
    /// Account id.
    pub account_id: String,
    /// Upstream payment id.
    pub payment_id: String,
    /// Amount received.
    pub amount: Money,
    /// When it was received.
    pub received_at: Timestamp,
    /// The billing system's authoritative remaining overdue, when it sends one (absent,
    /// never `null`: `parse_event` refuses it).
    #[serde(default)]
    pub overdue_amount_after: Option<Money>,
    /// Next due date, when known (absent, never `null`).
    #[serde(default)]
    pub next_due_date: Option<Date>,
}

#[derive(Deserialize)]
struct RawEnvelope {
    specversion: String,
    id: String,
    source: String,
    #[serde(rename = "type")]
    ty: String,
    // Text, not `Timestamp`: jiff reads forms RFC 3339 does not allow (see `parse_instant`).
    time: String,
    subject: String,
    datacontenttype: String,
    // CloudEvents makes `data` optional, so its absence (or `null`) is not an envelope
    // error: it breaks the event type's schema, and is reported as such.
    #[serde(default)]
    data: Option<Value>,
}

/// What the type's schema requires of a member of `data` that serde and jiff do not check
/// by themselves: serde reads a struct from a JSON array and an `Option` from `null`, and
/// jiff reads instants and dates in more forms than the schema's patterns allow.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// A JSON object (`money`, `customer`, `installment`).
    Object,
    /// The schema's `instant`: see [`is_instant_shape`].
    Instant,
    /// The schema's `date`: `YYYY-MM-DD`.
    Date,
    /// Anything but `null`; serde checks the type.
    NotNull,
}

/// Members of `data` with a [`Shape`] to check, as dotted paths; a parent comes before its
/// members. An absent member is left to serde, which knows whether it is required.
fn shapes(ty: EventType) -> &'static [(&'static str, Shape)] {
    match ty {
        EventType::PaymentFailed => &[
            ("customer", Shape::Object),
            ("customer.timezone", Shape::NotNull),
            ("installment", Shape::Object),
            ("installment.due_date", Shape::Date),
            ("installment.amount", Shape::Object),
            ("overdue_amount", Shape::Object),
            ("attempted_at", Shape::Instant),
        ],
        EventType::PromiseMade => &[("amount", Shape::Object), ("promised_at", Shape::Instant)],
        EventType::PromiseBroken => &[],
        EventType::PaymentReceived => &[
            ("amount", Shape::Object),
            ("received_at", Shape::Instant),
            ("overdue_amount_after", Shape::Object),
            ("next_due_date", Shape::Date),
        ],
    }
}

/// How the schema's `instant` is described in error details.
const INSTANT_FORM: &str =
    "an RFC 3339 date-time with seconds and an offset (YYYY-MM-DDThh:mm:ss[.f]Z or ±hh:mm)";

/// Checks a `data` object against the [`shapes`] of its type. The detail names the member
/// and what is wrong with it, never its value.
fn check_shapes(ty: EventType, data: &Value) -> Result<(), String> {
    for &(path, shape) in shapes(ty) {
        let Some(v) = path.split('.').try_fold(data, |v, key| v.get(key)) else {
            continue;
        };
        if v.is_null() {
            return Err(format!(
                "{path} is null, which its schema type does not allow (leave an optional \
                 member out instead)"
            ));
        }
        let problem = match shape {
            Shape::Object => (!v.is_object()).then(|| format!("{path} is not a JSON object")),
            Shape::Instant => (!v.as_str().is_some_and(is_instant_shape))
                .then(|| format!("{path} is not {INSTANT_FORM}")),
            Shape::Date => (!v.as_str().is_some_and(|s| is_date_shape(s.as_bytes())))
                .then(|| format!("{path} is not a date of the form YYYY-MM-DD")),
            Shape::NotNull => None,
        };
        if let Some(problem) = problem {
            return Err(problem);
        }
    }
    Ok(())
}

/// The schema's `uuid` pattern: 8-4-4-4-12 hex digits, either case. `Uuid::parse_str`
/// alone would also take the simple, braced and `urn:uuid:` forms, which the schema
/// refuses.
fn is_canonical_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn all_digits(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_digit)
}

/// The schema's `date` pattern, `^[0-9]{4}-[0-9]{2}-[0-9]{2}$`. jiff also reads
/// `20261203`, `+002026-12-03` and a date followed by a time, offset or `[zone]`.
fn is_date_shape(b: &[u8]) -> bool {
    match b {
        [y @ .., b'-', m1, m2, b'-', d1, d2] => {
            y.len() == 4 && all_digits(y) && all_digits(&[*m1, *m2, *d1, *d2])
        }
        _ => false,
    }
}

/// The schema's `instant`: `YYYY-MM-DDThh:mm:ss`, an optional fraction, then `Z` or
/// `±hh:mm` (`T` and `Z` in either case), as its pattern says; the offset is also bounded
/// to 23:59 as `format: date-time` requires. jiff alone would take a space for the `T`,
/// `+0800`, a missing `:ss`, a `[Asia/Shanghai]` suffix and offsets up to ±25:59.
fn is_instant_shape(s: &str) -> bool {
    let Some((date, rest)) = s.as_bytes().split_at_checked(10) else {
        return false;
    };
    let [b'T' | b't', h1, h2, b':', m1, m2, b':', s1, s2, rest @ ..] = rest else {
        return false;
    };
    if !is_date_shape(date) || !all_digits(&[*h1, *h2, *m1, *m2, *s1, *s2]) {
        return false;
    }
    let offset = match rest {
        [b'.', fraction @ ..] => {
            let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return false;
            }
            &fraction[n..]
        }
        _ => rest,
    };
    match offset {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            all_digits(&[*h1, *h2, *m1, *m2])
                && (h1 - b'0') * 10 + (h2 - b'0') <= 23
                && (m1 - b'0') * 10 + (m2 - b'0') <= 59
        }
        _ => false,
    }
}

/// An instant of the schema's shape that is also a real date and time (jiff refuses
/// 2026-02-30 and 25:00).
fn parse_instant(s: &str) -> Option<Timestamp> {
    if is_instant_shape(s) {
        s.parse().ok()
    } else {
        None
    }
}

/// The schema's `timezone` pattern and length: a first part of letters and `_`, then
/// `/`-separated parts that may also hold digits, `+` and `-`. A few legacy names of the
/// tz database fall outside it (`EST5EDT`, `GMT+0`, `GMT0`, `W-SU`, `NZ-CHAT`).
fn is_timezone_shape(s: &str) -> bool {
    let mut parts = s.split('/');
    let first = parts.next().unwrap_or_default();
    // Every accepted byte is ASCII, so the byte length is the character count here.
    s.len() <= 64
        && !first.is_empty()
        && first.bytes().all(|c| c.is_ascii_alphabetic() || c == b'_')
        && parts.all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'+' | b'-'))
        })
}

/// Earliest instant accepted anywhere in an event; older values are absurd.
fn earliest_plausible() -> Timestamp {
    Timestamp::from_second(946_684_800).unwrap_or(Timestamp::UNIX_EPOCH) // 2000-01-01
}

/// Parses and checks one message body.
///
/// `expected` is the type the consuming queue carries (`None` accepts any of the four).
///
/// # Errors
/// A [`ParseError`] naming what is wrong; the message belongs in the dead-letter queue.
pub fn parse_event(body: &[u8], expected: Option<EventType>) -> Result<Event, ParseError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ParseError::new(RejectCode::NotJson, format!("body is not JSON: {e}")))?;
    let env: RawEnvelope = serde_json::from_value(value).map_err(|e| {
        ParseError::new(
            RejectCode::NotCloudEvent,
            format!("not a CloudEvents 1.0 structured event: {e}"),
        )
    })?;
    if env.specversion != "1.0" {
        return Err(ParseError::new(
            RejectCode::NotCloudEvent,
            format!("specversion {:?} is not \"1.0\"", env.specversion),
        ));
    }
    // The schema's UUID form is part of the envelope check, like "not a UUID at all". The
    // value is not repeated: a malformed id may hold anything.
    let id = Some(env.id.as_str())
        .filter(|s| is_canonical_uuid(s))
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| {
            ParseError::new(
                RejectCode::NotCloudEvent,
                "id is not a UUID in the canonical 8-4-4-4-12 hex form",
            )
        })?;
    if env.source.is_empty() {
        return Err(ParseError::new(
            RejectCode::NotCloudEvent,
            "source is empty",
        ));
    }
    // CloudEvents requires `time` to be RFC 3339, so a malformed one is an envelope error.
    let time = parse_instant(&env.time).ok_or_else(|| {
        ParseError::new(
            RejectCode::NotCloudEvent,
            format!("time is not {INSTANT_FORM}"),
        )
    })?;
    if env.datacontenttype != "application/json" {
        return Err(ParseError::new(
            RejectCode::NotCloudEvent,
            format!(
                "datacontenttype {:?} is not application/json",
                truncate(&env.datacontenttype)
            ),
        ));
    }
    let Some(ty) = EventType::from_type(&env.ty) else {
        return Err(ParseError::new(
            RejectCode::UnexpectedType,
            format!("unknown event type {:?}", truncate(&env.ty)),
        ));
    };
    if let Some(exp) = expected {
        if exp != ty {
            return Err(ParseError::new(
                RejectCode::UnexpectedType,
                format!("type {} arrived on the {} queue", ty.as_str(), exp.queue()),
            ));
        }
    }
    let schema = |detail: String| {
        ParseError::new(
            RejectCode::Schema,
            format!("{} data: {detail}", ty.as_str()),
        )
    };
    let data = match env.data {
        Some(data @ Value::Object(_)) => data,
        None => {
            return Err(ParseError::new(
                RejectCode::Schema,
                format!(
                    "{} data is missing or null; its schema requires an object",
                    ty.as_str()
                ),
            ))
        }
        Some(_) => {
            return Err(ParseError::new(
                RejectCode::Schema,
                format!("{} data is not a JSON object", ty.as_str()),
            ))
        }
    };
    check_shapes(ty, &data).map_err(schema)?;
    let serde_schema = |e: serde_json::Error| schema(e.to_string());
    let body = match ty {
        EventType::PaymentFailed => {
            EventBody::PaymentFailed(serde_json::from_value(data).map_err(serde_schema)?)
        }
        EventType::PromiseMade => {
            EventBody::PromiseMade(serde_json::from_value(data).map_err(serde_schema)?)
        }
        EventType::PromiseBroken => {
            EventBody::PromiseBroken(serde_json::from_value(data).map_err(serde_schema)?)
        }
        EventType::PaymentReceived => {
            EventBody::PaymentReceived(serde_json::from_value(data).map_err(serde_schema)?)
        }
    };
    let event = Event {
        id,
        source: env.source,
        time,
        account_id: env.subject,
        body,
    };
    check_values(&event)?;
    Ok(event)
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn invalid(detail: impl Into<String>) -> ParseError {
    ParseError::new(RejectCode::InvalidValue, detail)
}

/// The schema's `minLength: 1`. Like an empty id, an empty text is well-formed JSON but
/// says nothing, hence `invalid_value`.
fn require_text(field: &str, value: &str) -> Result<(), ParseError> {
    if value.is_empty() {
        Err(invalid(format!("{field} is empty")))
    } else {
        Ok(())
    }
}

fn check_values(e: &Event) -> Result<(), ParseError> {
    // Characters, as JSON Schema's `maxLength` counts them; the id itself is not repeated.
    let chars = e.account_id.chars().count();
    if !(1..=MAX_ACCOUNT_ID_LEN).contains(&chars) {
        return Err(invalid(format!(
            "subject (account id) must be 1-{MAX_ACCOUNT_ID_LEN} characters, not {chars}"
        )));
    }
    let data_account = match &e.body {
        EventBody::PaymentFailed(d) => &d.account_id,
        EventBody::PromiseMade(d) => &d.account_id,
        EventBody::PromiseBroken(d) => &d.account_id,
        EventBody::PaymentReceived(d) => &d.account_id,
    };
    if data_account != &e.account_id {
        return Err(invalid("data.account_id differs from subject"));
    }
    let early = earliest_plausible();
    if e.time < early {
        return Err(invalid(format!("time {} is before 2000", e.time)));
    }
    match &e.body {
        EventBody::PaymentFailed(d) => {
            // Where the debtor lives is personal: the details leave the name out.
            if let Some(tz) = &d.customer.timezone {
                if !is_timezone_shape(tz) {
                    return Err(invalid(
                        "customer.timezone is not an IANA time zone name of the shape the \
                         contract allows (legacy names such as EST5EDT are refused)",
                    ));
                }
                TimeZone::get(tz).map_err(|_| {
                    invalid("customer.timezone names no time zone of the tz database")
                })?;
            }
            require_text("failure_reason", &d.failure_reason)?;
            if d.installment.number == 0 {
                return Err(invalid("installment.number must be at least 1"));
            }
            if d.installment.amount.minor < 1 {
                return Err(invalid("installment.amount must be positive"));
            }
            if d.installment.amount.currency != d.overdue_amount.currency {
                return Err(invalid(
                    "installment.amount and overdue_amount differ in currency",
                ));
            }
            if d.attempted_at < early {
                return Err(invalid("attempted_at is before 2000"));
            }
            if d.installment.due_date.year() < 2000 {
                return Err(invalid("installment.due_date is before 2000"));
            }
        }
        EventBody::PromiseMade(d) => {
            require_text("promise_id", &d.promise_id)?;
            require_text("captured_by", &d.captured_by)?;
            require_text("channel", &d.channel)?;
            if d.amount.minor < 1 {
                return Err(invalid("promise amount must be positive"));
            }
            if d.promised_at < early {
                return Err(invalid(format!(
                    "promised_at {} is before 2000",
                    d.promised_at
                )));
            }
        }
        EventBody::PromiseBroken(d) => {
            require_text("promise_id", &d.promise_id)?;
            require_text("reason", &d.reason)?;
        }
        EventBody::PaymentReceived(d) => {
            require_text("payment_id", &d.payment_id)?;
            if d.amount.minor < 1 {
                return Err(invalid("payment amount must be positive"));
            }
            if let Some(after) = d.overdue_amount_after {
                if after.currency != d.amount.currency {
                    return Err(invalid("overdue_amount_after differs in currency"));
                }
            }
            if d.received_at < early {
                return Err(invalid("received_at is before 2000"));
            }
            if d.next_due_date.is_some_and(|date| date.year() < 2000) {
                return Err(invalid("next_due_date is before 2000"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_must_have_the_schema_shape() {
        for ok in [
            "2026-11-04T15:00:00+08:00",
            "2026-11-04t15:00:00z",
            "2026-11-04T15:00:00.5Z",
            "2026-11-04T15:00:00.123456789-05:00",
            "2026-11-04T15:00:00-00:00",
            "2026-11-04T15:00:00+23:59",
        ] {
            assert!(parse_instant(ok).is_some(), "{ok} should pass");
        }
        for bad in [
            "2026-11-04 15:00:00+08:00",
            "2026-11-04T15:00:00+0800",
            "2026-11-04T15:00+08:00",
            "2026-11-04T15:00:00+08:00[Asia/Shanghai]",
            "2026-11-04T15:00:00",
            "2026-11-04T15:00:00+08",
            "2026-11-04T15:00:00.Z",
            "2026-11-04T15:00:00+24:00",
            "2026-11-04T15:00:00+08:60",
            "20261104T150000Z",
            "2026-11-04T15Z",
            "2026-02-30T15:00:00Z",
            "2026-11-04T25:00:00Z",
            "+002026-11-04T15:00:00Z",
            "2026-11-04T15:00:00Z ",
            "２０２６-11-04T15:00:00Z",
            "",
        ] {
            assert!(parse_instant(bad).is_none(), "{bad:?} should fail");
        }
    }

    #[test]
    fn dates_must_be_yyyy_mm_dd() {
        assert!(is_date_shape(b"2026-11-03"));
        for bad in [
            "20261103",
            "+002026-11-03",
            "2026-11-3",
            "2026/11/03",
            "2026-11-03T00:00",
            "2026-11-03[Asia/Shanghai]",
            " 2026-11-03",
            "",
        ] {
            assert!(!is_date_shape(bad.as_bytes()), "{bad:?} should fail");
        }
    }

    #[test]
    fn only_the_hyphenated_uuid_form_is_canonical() {
        let id = "5b0f3c1e-8d2a-4c47-9f61-2e7a1d9b4c01";
        assert!(is_canonical_uuid(id));
        assert!(is_canonical_uuid(&id.to_uppercase()));
        for bad in [
            id.replace('-', ""),
            format!("{{{id}}}"),
            format!("urn:uuid:{id}"),
            id.replace('1', "g"),
            format!("{id} "),
        ] {
            assert!(!is_canonical_uuid(&bad), "{bad} should fail");
        }
    }

    #[test]
    fn every_zone_of_the_tz_database_but_a_few_legacy_names_has_the_schema_shape() {
        // jiff may read the system's tz database, whose names vary a little by release. A
        // name outside the schema's pattern that is not one of these legacy names needs a
        // decision: refuse it too, or widen the pattern in proto/schemas.
        let legacy = [
            "CST6CDT", "EST5EDT", "GB-Eire", "GMT+0", "GMT-0", "GMT0", "MST7MDT", "NZ-CHAT",
            "PST8PDT", "W-SU",
        ];
        let outside: Vec<String> = jiff::tz::db()
            .available()
            .map(|name| name.as_str().to_owned())
            .filter(|name| !is_timezone_shape(name) && !legacy.contains(&name.as_str()))
            .collect();
        assert!(
            outside.is_empty(),
            "outside the schema's pattern: {outside:?}"
        );
        for zone in ["Asia/Shanghai", "America/New_York", "UTC", "Etc/GMT+8"] {
            assert!(is_timezone_shape(zone), "{zone} should pass");
        }
        for bad in [
            "",
            "Asia/Shang hai",
            "Asia//Shanghai",
            "Asia/Shanghai/",
            "/UTC",
        ] {
            assert!(!is_timezone_shape(bad), "{bad:?} should fail");
        }
        assert!(!is_timezone_shape(&format!("A/{}", "b".repeat(63))));
        assert!(is_timezone_shape(&format!("A/{}", "b".repeat(62))));
    }
}
