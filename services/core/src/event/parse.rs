//! [`parse_event`]: reads a message body as a CloudEvents 1.0 structured event of one of
//! the four inbound types, and checks its data against the contract (schema forms, then
//! values: ids, amounts, currencies, zones, plausible instants).

use jiff::{tz::TimeZone, Timestamp};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::{
    shape::{check_shapes, is_canonical_uuid, is_timezone_shape, parse_instant, INSTANT_FORM},
    Event, EventBody, EventType, ParseError, RejectCode, MAX_ACCOUNT_ID_LEN,
};

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
        EventType::ContactAttempted => EventBody::ContactAttempted(Box::new(
            serde_json::from_value(data).map_err(serde_schema)?,
        )),
        EventType::HoldPlaced => EventBody::HoldPlaced(Box::new(
            serde_json::from_value(data).map_err(serde_schema)?,
        )),
        EventType::HoldReleased => EventBody::HoldReleased(Box::new(
            serde_json::from_value(data).map_err(serde_schema)?,
        )),
        EventType::ContactRestricted => EventBody::ContactRestricted(Box::new(
            serde_json::from_value(data).map_err(serde_schema)?,
        )),
        EventType::ContactUnrestricted => EventBody::ContactUnrestricted(Box::new(
            serde_json::from_value(data).map_err(serde_schema)?,
        )),
        EventType::ArrangementMade => EventBody::ArrangementMade(Box::new(
            serde_json::from_value(data).map_err(serde_schema)?,
        )),
        EventType::ArrangementCancelled => EventBody::ArrangementCancelled(Box::new(
            serde_json::from_value(data).map_err(serde_schema)?,
        )),
        EventType::PaymentReversed => EventBody::PaymentReversed(Box::new(
            serde_json::from_value(data).map_err(serde_schema)?,
        )),
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
        EventBody::ContactAttempted(d) => &d.account_id,
        EventBody::HoldPlaced(d) => &d.account_id,
        EventBody::HoldReleased(d) => &d.account_id,
        EventBody::ContactRestricted(d) => &d.account_id,
        EventBody::ContactUnrestricted(d) => &d.account_id,
        EventBody::ArrangementMade(d) => &d.account_id,
        EventBody::ArrangementCancelled(d) => &d.account_id,
        EventBody::PaymentReversed(d) => &d.account_id,
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
        EventBody::ContactAttempted(d) => check_contact(d, early)?,
        EventBody::HoldPlaced(d) => {
            require_id("hold_id", &d.hold_id)?;
            require_id("placed_by", &d.placed_by)?;
            if let Some(case) = &d.case_ref {
                require_id("case_ref", case)?;
            }
            if d.placed_at < early {
                return Err(invalid("placed_at is before 2000"));
            }
            if let super::HoldScope::Channels(list) = &d.scope {
                if list.is_empty() {
                    return Err(invalid(
                        "scope is an empty list of channels (use \"all\" or name channels)",
                    ));
                }
            }
            if d.review_at.is_some_and(|r| r < d.placed_at) {
                return Err(invalid("review_at is before placed_at"));
            }
        }
        EventBody::HoldReleased(d) => {
            require_id("hold_id", &d.hold_id)?;
            require_id("released_by", &d.released_by)?;
            if d.released_at < early {
                return Err(invalid("released_at is before 2000"));
            }
        }
        EventBody::ContactRestricted(d) => check_restriction(d, early)?,
        EventBody::ContactUnrestricted(d) => {
            require_id("restriction_id", &d.restriction_id)?;
            if d.effective_at < early {
                return Err(invalid("effective_at is before 2000"));
            }
        }
        EventBody::ArrangementMade(d) => check_arrangement(d, early)?,
        EventBody::ArrangementCancelled(d) => {
            require_id("arrangement_id", &d.arrangement_id)?;
            require_text("reason", &d.reason)?;
        }
        EventBody::PaymentReversed(d) => {
            require_text("payment_id", &d.payment_id)?;
            require_text("reason", &d.reason)?;
            if d.amount.minor < 1 {
                return Err(invalid("reversed amount must be positive"));
            }
            if d.reversed_at < early {
                return Err(invalid("reversed_at is before 2000"));
            }
        }
    }
    Ok(())
}

/// Most instalments an arrangement may have (the contract: 1 to 36).
pub const MAX_INSTALMENTS: usize = 36;

fn check_arrangement(d: &super::ArrangementMade, early: Timestamp) -> Result<(), ParseError> {
    require_id("arrangement_id", &d.arrangement_id)?;
    require_text("captured_by", &d.captured_by)?;
    require_text("channel", &d.channel)?;
    if let Some(by) = &d.discount_approved_by {
        require_id("discount_approved_by", by)?;
    }
    if d.total.minor < 1 {
        return Err(invalid("total must be positive"));
    }
    let n = d.instalments.len();
    if !(1..=MAX_INSTALMENTS).contains(&n) {
        return Err(invalid(format!(
            "an arrangement has 1-{MAX_INSTALMENTS} instalments, not {n}"
        )));
    }
    let mut sum: i64 = 0;
    let mut previous: Option<Timestamp> = None;
    for (i, inst) in d.instalments.iter().enumerate() {
        let expected = u32::try_from(i + 1).unwrap_or(u32::MAX);
        if inst.number != expected {
            return Err(invalid(format!(
                "instalment {} is numbered {}: instalments are numbered 1, 2, ... in order",
                i + 1,
                inst.number
            )));
        }
        if inst.amount.minor < 1 {
            return Err(invalid(format!(
                "instalment {expected} amount must be positive"
            )));
        }
        if inst.amount.currency != d.total.currency {
            return Err(invalid(format!(
                "instalment {expected} amount differs in currency from total"
            )));
        }
        if inst.due_at < early {
            return Err(invalid(format!(
                "instalment {expected} due_at is before 2000"
            )));
        }
        if previous.is_some_and(|p| inst.due_at <= p) {
            return Err(invalid(format!(
                "instalment {expected} is not due after instalment {}",
                i
            )));
        }
        previous = Some(inst.due_at);
        sum = sum.saturating_add(inst.amount.minor);
    }
    if sum != d.total.minor {
        return Err(invalid(format!(
            "instalment amounts sum to {sum} minor units, not the total {}",
            d.total.minor
        )));
    }
    Ok(())
}

/// Longest publisher id (`attempt_id`, `debtor_id`, `contact_point_id`, `agent_id`), in
/// characters, as the schema's `maxLength`.
const MAX_ID_LEN: usize = 128;

fn require_id(field: &str, value: &str) -> Result<(), ParseError> {
    require_text(field, value)?;
    let chars = value.chars().count();
    if chars > MAX_ID_LEN {
        return Err(invalid(format!(
            "{field} must be 1-{MAX_ID_LEN} characters, not {chars}"
        )));
    }
    Ok(())
}

fn check_contact(d: &super::ContactAttempted, early: Timestamp) -> Result<(), ParseError> {
    use super::{ContactResult, Direction, Disposition};
    require_id("attempt_id", &d.attempt_id)?;
    if let Some(debtor) = &d.debtor_id {
        require_id("debtor_id", debtor)?;
    }
    if let Some(point) = &d.contact_point_id {
        require_id("contact_point_id", point)?;
    }
    if let Some(agent) = &d.agent_id {
        require_id("agent_id", agent)?;
    }
    if d.started_at < early {
        return Err(invalid("started_at is before 2000"));
    }
    if !d.channel.allows(d.result) {
        return Err(invalid(format!(
            "result {} cannot happen on channel {}",
            d.result, d.channel
        )));
    }
    if d.direction == Direction::Inbound && !d.result.reached() {
        return Err(invalid(format!(
            "an inbound contact reached the lender: its result is connected or delivered, \
             not {}",
            d.result
        )));
    }
    if let Some(disposition) = d.disposition {
        if d.result != ContactResult::Connected {
            return Err(invalid(format!(
                "disposition {disposition} needs result connected, not {}",
                d.result
            )));
        }
    }
    match (d.disposition, d.callback_at) {
        (Some(Disposition::CallbackRequested), None) => {
            return Err(invalid("disposition callback_requested needs callback_at"))
        }
        (Some(Disposition::CallbackRequested), Some(at)) if at < d.started_at => {
            return Err(invalid("callback_at is before started_at"))
        }
        (Some(Disposition::CallbackRequested), Some(_)) | (_, None) => {}
        (_, Some(_)) => {
            return Err(invalid(
                "callback_at is given without disposition callback_requested",
            ))
        }
    }
    Ok(())
}

fn check_restriction(d: &super::ContactRestricted, early: Timestamp) -> Result<(), ParseError> {
    use super::RestrictionKind as K;
    require_id("restriction_id", &d.restriction_id)?;
    require_id("source", &d.source)?;
    if let Some(debtor) = &d.debtor_id {
        require_id("debtor_id", debtor)?;
    }
    if let Some(point) = &d.contact_point_id {
        require_id("contact_point_id", point)?;
    }
    if d.effective_at < early {
        return Err(invalid("effective_at is before 2000"));
    }
    if d.expires_at.is_some_and(|e| e <= d.effective_at) {
        return Err(invalid("expires_at is not after effective_at"));
    }
    match (d.kind, d.hours) {
        (K::AgreedHours, None) => return Err(invalid("kind agreed_hours needs hours")),
        (K::AgreedHours, Some(h)) if h.start >= h.end => {
            return Err(invalid("hours.start is not before hours.end"))
        }
        (K::AgreedHours, Some(_)) | (_, None) => {}
        (kind, Some(_)) => {
            return Err(invalid(format!(
                "hours are given with kind {kind}, not agreed_hours"
            )))
        }
    }
    Ok(())
}
