//! Inbound CloudEvents: parse, don't validate.
//!
//! [`parse_event`] turns raw bytes into an [`Event`] whose fields can be trusted, or a
//! [`ParseError`] whose [`RejectCode`] goes into the dead-letter header.

use jiff::{civil::Date, tz::TimeZone, Timestamp};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Money;

/// Largest accepted account id, in bytes.
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
    /// IANA zone name; the policy default when absent.
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
    /// The billing system's authoritative remaining overdue, when it sends one.
    #[serde(default)]
    pub overdue_amount_after: Option<Money>,
    /// Next due date, when known.
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
    time: Timestamp,
    subject: String,
    datacontenttype: String,
    data: serde_json::Value,
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
    let id = Uuid::parse_str(&env.id).map_err(|_| {
        ParseError::new(
            RejectCode::NotCloudEvent,
            format!("id {:?} is not a UUID", truncate(&env.id)),
        )
    })?;
    if env.source.is_empty() {
        return Err(ParseError::new(
            RejectCode::NotCloudEvent,
            "source is empty",
        ));
    }
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
    let schema = |e: serde_json::Error| {
        ParseError::new(RejectCode::Schema, format!("{} data: {e}", ty.as_str()))
    };
    let body = match ty {
        EventType::PaymentFailed => {
            EventBody::PaymentFailed(serde_json::from_value(env.data).map_err(schema)?)
        }
        EventType::PromiseMade => {
            EventBody::PromiseMade(serde_json::from_value(env.data).map_err(schema)?)
        }
        EventType::PromiseBroken => {
            EventBody::PromiseBroken(serde_json::from_value(env.data).map_err(schema)?)
        }
        EventType::PaymentReceived => {
            EventBody::PaymentReceived(serde_json::from_value(env.data).map_err(schema)?)
        }
    };
    let event = Event {
        id,
        source: env.source,
        time: env.time,
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

fn check_values(e: &Event) -> Result<(), ParseError> {
    if e.account_id.is_empty() || e.account_id.len() > MAX_ACCOUNT_ID_LEN {
        return Err(invalid("subject (account id) must be 1-128 bytes"));
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
            if let Some(tz) = &d.customer.timezone {
                TimeZone::get(tz)
                    .map_err(|_| invalid(format!("unknown time zone {:?}", truncate(tz))))?;
            }
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
            if d.promise_id.is_empty() {
                return Err(invalid("promise_id is empty"));
            }
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
            if d.promise_id.is_empty() {
                return Err(invalid("promise_id is empty"));
            }
        }
        EventBody::PaymentReceived(d) => {
            if d.payment_id.is_empty() {
                return Err(invalid("payment_id is empty"));
            }
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
        }
    }
    Ok(())
}
