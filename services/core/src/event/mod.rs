//! Inbound CloudEvents: parse, don't validate.
//!
//! [`parse_event`] turns raw bytes into an [`Event`] whose fields can be trusted, or a
//! [`ParseError`] whose [`RejectCode`] goes into the dead-letter header.
//!
//! This module holds the types of a parsed event; `parse` reads and checks an envelope and
//! its data (the contract's values), and `shape` the lexical forms the JSON schemas
//! require of ids, instants, dates and zone names.

use jiff::{civil::Date, Timestamp};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Money;

mod parse;
mod shape;

pub use parse::{parse_event, MAX_INSTALMENTS};

/// Largest accepted account id, in characters: the schema's `maxLength` counts characters,
/// so 128 Chinese characters (384 bytes of UTF-8) are a valid id.
pub const MAX_ACCOUNT_ID_LEN: usize = 128;

/// The inbound event types.
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
    /// `contact.attempted`
    #[serde(rename = "contact.attempted")]
    ContactAttempted,
    /// `hold.placed`
    #[serde(rename = "hold.placed")]
    HoldPlaced,
    /// `hold.released`
    #[serde(rename = "hold.released")]
    HoldReleased,
    /// `contact.restricted`
    #[serde(rename = "contact.restricted")]
    ContactRestricted,
    /// `contact.unrestricted`
    #[serde(rename = "contact.unrestricted")]
    ContactUnrestricted,
    /// `arrangement.made`
    #[serde(rename = "arrangement.made")]
    ArrangementMade,
    /// `arrangement.cancelled`
    #[serde(rename = "arrangement.cancelled")]
    ArrangementCancelled,
    /// `payment.reversed`
    #[serde(rename = "payment.reversed")]
    PaymentReversed,
}

impl EventType {
    /// Every inbound type, in contract order.
    pub const ALL: [EventType; 12] = [
        EventType::PaymentFailed,
        EventType::PromiseMade,
        EventType::PromiseBroken,
        EventType::PaymentReceived,
        EventType::ContactAttempted,
        EventType::HoldPlaced,
        EventType::HoldReleased,
        EventType::ContactRestricted,
        EventType::ContactUnrestricted,
        EventType::ArrangementMade,
        EventType::ArrangementCancelled,
        EventType::PaymentReversed,
    ];

    /// The CloudEvents `type` and routing key.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PaymentFailed => "payment.failed",
            EventType::PromiseMade => "promise.made",
            EventType::PromiseBroken => "promise.broken",
            EventType::PaymentReceived => "payment.received",
            EventType::ContactAttempted => "contact.attempted",
            EventType::HoldPlaced => "hold.placed",
            EventType::HoldReleased => "hold.released",
            EventType::ContactRestricted => "contact.restricted",
            EventType::ContactUnrestricted => "contact.unrestricted",
            EventType::ArrangementMade => "arrangement.made",
            EventType::ArrangementCancelled => "arrangement.cancelled",
            EventType::PaymentReversed => "payment.reversed",
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
            EventType::ContactAttempted => "collections.contact-attempted",
            EventType::HoldPlaced => "collections.hold-placed",
            EventType::HoldReleased => "collections.hold-released",
            EventType::ContactRestricted => "collections.contact-restricted",
            EventType::ContactUnrestricted => "collections.contact-unrestricted",
            EventType::ArrangementMade => "collections.arrangement-made",
            EventType::ArrangementCancelled => "collections.arrangement-cancelled",
            EventType::PaymentReversed => "collections.payment-reversed",
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
    /// What is stored for the event's account cannot be read (a state document that does
    /// not parse, a task with a value this binary does not know): the event waits in the
    /// dead-letter queue while an operator repairs the rows, instead of blocking the queue.
    State,
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
            RejectCode::State => "state",
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
            EventBody::ContactAttempted(_) => EventType::ContactAttempted,
            EventBody::HoldPlaced(_) => EventType::HoldPlaced,
            EventBody::HoldReleased(_) => EventType::HoldReleased,
            EventBody::ContactRestricted(_) => EventType::ContactRestricted,
            EventBody::ContactUnrestricted(_) => EventType::ContactUnrestricted,
            EventBody::ArrangementMade(_) => EventType::ArrangementMade,
            EventBody::ArrangementCancelled(_) => EventType::ArrangementCancelled,
            EventBody::PaymentReversed(_) => EventType::PaymentReversed,
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
    /// A dialer, SMS gateway or collector desk reports a contact attempt and its result.
    ContactAttempted(Box<ContactAttempted>),
    /// Collection activity stops (a dispute, hardship, an attorney, ...).
    HoldPlaced(Box<HoldPlaced>),
    /// A hold ends.
    HoldReleased(Box<HoldReleased>),
    /// A channel, a contact point or the hours of contact are restricted.
    ContactRestricted(Box<ContactRestricted>),
    /// A restriction is lifted.
    ContactUnrestricted(Box<ContactUnrestricted>),
    /// A payment arrangement (instalment plan or settlement) was agreed.
    ArrangementMade(Box<ArrangementMade>),
    /// An arrangement was called off upstream.
    ArrangementCancelled(Box<ArrangementCancelled>),
    /// A payment came back (a returned debit, a chargeback).
    PaymentReversed(Box<PaymentReversed>),
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

crate::task::text_enum!(
    /// How a contact attempt reached (or tried to reach) the person.
    ContactChannel {
        /// Mobile phone.
        PhoneMobile = "phone_mobile",
        /// Work phone.
        PhoneWork = "phone_work",
        /// Home phone.
        PhoneHome = "phone_home",
        /// Text message.
        Sms = "sms",
        /// E-mail.
        Email = "email",
        /// In person.
        Visit = "visit",
        /// A contact person's phone.
        ContactPerson = "contact_person",
    }
);

crate::task::text_enum!(
    /// Who started the contact.
    Direction {
        /// The collector (or a dialer) contacted the person.
        Outbound = "outbound",
        /// The customer contacted the lender.
        Inbound = "inbound",
    }
);

crate::task::text_enum!(
    /// Who was reached.
    Party {
        /// The debtor themself (right-party contact).
        Debtor = "debtor",
        /// A relative, colleague or other contact person.
        ThirdParty = "third_party",
        /// Nobody, or not known.
        Unknown = "unknown",
    }
);

crate::task::text_enum!(
    /// How the attempt ended.
    ContactResult {
        /// Someone answered (a conversation).
        Connected = "connected",
        /// Rang out.
        NoAnswer = "no_answer",
        /// Engaged.
        Busy = "busy",
        /// Went to voicemail.
        Voicemail = "voicemail",
        /// Could not be placed (network, dialer).
        Failed = "failed",
        /// The number does not belong to the debtor or a contact of theirs.
        WrongNumber = "wrong_number",
        /// A message (SMS, e-mail) was delivered.
        Delivered = "delivered",
        /// A message could not be delivered (the address does not exist).
        Undeliverable = "undeliverable",
    }
);

crate::task::text_enum!(
    /// What a connected contact came to.
    Disposition {
        /// A promise to pay was captured (it still arrives as `promise.made`).
        PromiseMade = "promise_made",
        /// The customer asked to be called back at `callback_at`.
        CallbackRequested = "callback_requested",
        /// The customer says the money was paid already.
        ClaimsPaid = "claims_paid",
        /// The customer refuses to pay.
        Refused = "refused",
        /// The customer disputes the debt.
        Dispute = "dispute",
        /// The customer reports hardship.
        Hardship = "hardship",
        /// The customer asks not to be contacted again.
        CeaseRequest = "cease_request",
        /// A contact person refused to pass messages (never call them again).
        ThirdPartyRefused = "third_party_refused",
        /// Anything else.
        Other = "other",
    }
);

impl ContactChannel {
    /// A telephone call to one of the debtor's own numbers (what the caps count).
    #[must_use]
    pub fn is_phone(self) -> bool {
        matches!(
            self,
            ContactChannel::PhoneMobile | ContactChannel::PhoneWork | ContactChannel::PhoneHome
        )
    }

    /// Whether `result` can happen on this channel: messages are delivered or not, calls
    /// are answered or not, a visit finds the person or not.
    #[must_use]
    pub fn allows(self, result: ContactResult) -> bool {
        use ContactResult as R;
        match result {
            R::Connected | R::NoAnswer | R::Failed => true,
            R::Delivered | R::Undeliverable => {
                matches!(self, ContactChannel::Sms | ContactChannel::Email)
            }
            R::Busy | R::Voicemail | R::WrongNumber => {
                self.is_phone() || self == ContactChannel::ContactPerson
            }
        }
    }
}

impl ContactResult {
    /// Whether the attempt reached a person (a conversation, a message delivered).
    #[must_use]
    pub fn reached(self) -> bool {
        matches!(self, ContactResult::Connected | ContactResult::Delivered)
    }

    /// Whether it shows the contact point is not the debtor's (retires the point).
    #[must_use]
    pub fn retires_point(self) -> bool {
        matches!(
            self,
            ContactResult::WrongNumber | ContactResult::Undeliverable
        )
    }
}

/// `contact.attempted` data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ContactAttempted {
    /// Account id.
    pub account_id: String,
    /// The person who owes (one person may owe on several accounts); the account id when
    /// absent.
    #[serde(default)]
    pub debtor_id: Option<String>,
    /// The publisher's id of the attempt: a second event with the same id is a correction.
    pub attempt_id: String,
    /// The task the attempt carries out, when it does.
    #[serde(default)]
    pub task_id: Option<Uuid>,
    /// How.
    pub channel: ContactChannel,
    /// Who started it.
    pub direction: Direction,
    /// Opaque id of the number or address used (never the number itself).
    #[serde(default)]
    pub contact_point_id: Option<String>,
    /// Who was reached.
    pub party: Party,
    /// How it ended.
    pub result: ContactResult,
    /// What a connected contact came to.
    #[serde(default)]
    pub disposition: Option<Disposition>,
    /// When the customer asked to be called back (with `callback_requested`).
    #[serde(default)]
    pub callback_at: Option<Timestamp>,
    /// When the attempt started.
    pub started_at: Timestamp,
    /// The collector or dialer (an id, never a name).
    #[serde(default)]
    pub agent_id: Option<String>,
}

impl ContactAttempted {
    /// The debtor the attempt counts against.
    #[must_use]
    pub fn debtor(&self) -> &str {
        self.debtor_id.as_deref().unwrap_or(&self.account_id)
    }
}

crate::task::text_enum!(
    /// Why collection activity is held.
    HoldReason {
        /// The customer disputes the debt.
        Dispute = "dispute",
        /// A complaint is being handled.
        Complaint = "complaint",
        /// The customer is in hardship.
        Hardship = "hardship",
        /// A request to cease communication (FDCPA 805(c)).
        CeaseCommunication = "cease_communication",
        /// The customer is represented by an attorney.
        AttorneyRepresented = "attorney_represented",
        /// Bankruptcy.
        Bankruptcy = "bankruptcy",
        /// The customer died.
        Deceased = "deceased",
        /// The customer says the account is fraud.
        FraudClaim = "fraud_claim",
        /// Anything else.
        Other = "other",
    }
);

impl HoldReason {
    /// Reasons that stop all contact whatever the hold's scope says.
    #[must_use]
    pub fn stops_all_contact(self) -> bool {
        matches!(
            self,
            HoldReason::CeaseCommunication
                | HoldReason::AttorneyRepresented
                | HoldReason::Bankruptcy
                | HoldReason::Deceased
        )
    }
}

crate::task::text_enum!(
    /// How a hold ended.
    HoldOutcome {
        /// The matter was resolved.
        Resolved = "resolved",
        /// The customer's claim was upheld.
        Upheld = "upheld",
        /// The customer withdrew it.
        Withdrawn = "withdrawn",
        /// It ran out.
        Expired = "expired",
    }
);

crate::task::text_enum!(
    /// A channel a hold or a restriction names.
    HoldChannel {
        /// Mobile phone.
        PhoneMobile = "phone_mobile",
        /// Work phone.
        PhoneWork = "phone_work",
        /// Home phone.
        PhoneHome = "phone_home",
        /// Text message.
        Sms = "sms",
        /// E-mail.
        Email = "email",
        /// In person.
        Visit = "visit",
        /// A contact person.
        ContactPerson = "contact_person",
        /// Post.
        Letter = "letter",
    }
);

impl HoldChannel {
    /// The task channel of this name, if tasks use it.
    #[must_use]
    pub fn task_channel(self) -> Option<crate::task::Channel> {
        use crate::task::Channel as C;
        match self {
            HoldChannel::PhoneMobile => Some(C::PhoneMobile),
            HoldChannel::PhoneWork => Some(C::PhoneWork),
            HoldChannel::PhoneHome => Some(C::PhoneHome),
            HoldChannel::Sms => Some(C::Sms),
            HoldChannel::Visit => Some(C::Visit),
            HoldChannel::ContactPerson => Some(C::ContactPerson),
            HoldChannel::Letter => Some(C::Letter),
            HoldChannel::Email => None,
        }
    }
}

/// What a hold covers: every contact, or some channels. Written as in the event: the
/// word `"all"` or the list (a derived untagged form would write `All` as `null`, which
/// reads back as no scope at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldScope {
    /// `"all"`.
    All,
    /// A non-empty list of channels.
    Channels(Vec<HoldChannel>),
}

impl Serialize for HoldScope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HoldScope::All => s.serialize_str("all"),
            HoldScope::Channels(list) => list.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for HoldScope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            List(Vec<HoldChannel>),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("scope is neither \"all\" nor a list of channels")
        })? {
            Raw::Word(w) if w == "all" => Ok(HoldScope::All),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "scope {w:?} is neither \"all\" nor a list of channels"
            ))),
            Raw::List(l) => Ok(HoldScope::Channels(l)),
        }
    }
}

/// `hold.placed` data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HoldPlaced {
    /// Account id.
    pub account_id: String,
    /// The publisher's id of the hold.
    pub hold_id: String,
    /// Why.
    pub reason: HoldReason,
    /// What it covers.
    pub scope: HoldScope,
    /// When it took effect.
    pub placed_at: Timestamp,
    /// When to review it (a default by reason from policy when absent).
    #[serde(default)]
    pub review_at: Option<Timestamp>,
    /// DPD and bucket do not advance while it is in force.
    #[serde(default)]
    pub pause_dpd: bool,
    /// Who placed it (an id, never a name).
    pub placed_by: String,
    /// The case it belongs to.
    #[serde(default)]
    pub case_ref: Option<String>,
}

/// `hold.released` data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HoldReleased {
    /// Account id.
    pub account_id: String,
    /// The hold.
    pub hold_id: String,
    /// How it ended.
    pub outcome: HoldOutcome,
    /// When.
    pub released_at: Timestamp,
    /// Who released it (an id).
    pub released_by: String,
}

crate::task::text_enum!(
    /// What a restriction forbids.
    RestrictionKind {
        /// The debtor opted out of a channel or a contact point (Regulation F 1006.6(e)).
        OptOut = "opt_out",
        /// Do not call (a channel or a number; all phones when neither is named).
        DoNotCall = "do_not_call",
        /// No calls at work.
        WorkplaceProhibited = "workplace_prohibited",
        /// A contact person refused: no third-party calls.
        ThirdPartyRefused = "third_party_refused",
        /// Contact only within these local hours.
        AgreedHours = "agreed_hours",
    }
);

/// Local hours, `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalHours {
    /// First allowed local time.
    pub start: jiff::civil::Time,
    /// First disallowed local time.
    pub end: jiff::civil::Time,
}

/// `contact.restricted` data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ContactRestricted {
    /// Account id.
    pub account_id: String,
    /// The person, when the restriction is theirs across accounts (recorded).
    #[serde(default)]
    pub debtor_id: Option<String>,
    /// The publisher's id of the restriction.
    pub restriction_id: String,
    /// What it forbids.
    pub kind: RestrictionKind,
    /// The channel it concerns.
    #[serde(default)]
    pub channel: Option<HoldChannel>,
    /// The contact point it concerns.
    #[serde(default)]
    pub contact_point_id: Option<String>,
    /// The agreed hours (with `agreed_hours`).
    #[serde(default)]
    pub hours: Option<LocalHours>,
    /// From when.
    pub effective_at: Timestamp,
    /// Until when (it lapses by itself).
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// Who reported it (a system or desk id).
    pub source: String,
}

/// `contact.unrestricted` data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ContactUnrestricted {
    /// Account id.
    pub account_id: String,
    /// The restriction lifted.
    pub restriction_id: String,
    /// From when.
    pub effective_at: Timestamp,
}

crate::task::text_enum!(
    /// What kind of arrangement was agreed.
    ArrangementKind {
        /// Several dated payments of the amount owed.
        InstalmentPlan = "instalment_plan",
        /// A payment (or payments) for less than the balance, approved by a supervisor.
        Settlement = "settlement",
    }
);

/// One dated payment of an arrangement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrangementInstalment {
    /// 1-based, in order.
    pub number: u32,
    /// When it is due (a local wall-clock time resolved upstream).
    pub due_at: Timestamp,
    /// How much.
    pub amount: Money,
}

/// `arrangement.made` data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ArrangementMade {
    /// Account id.
    pub account_id: String,
    /// The publisher's id of the arrangement.
    pub arrangement_id: String,
    /// Plan or settlement.
    pub kind: ArrangementKind,
    /// Sum of the instalments.
    pub total: Money,
    /// 1 to 36 instalments, `due_at` increasing, amounts summing to `total`.
    pub instalments: Vec<ArrangementInstalment>,
    /// Kept, the account is cured even if `total` is below the overdue.
    pub settles_in_full: bool,
    /// The supervisor who approved a discount (an id, never a name).
    #[serde(default)]
    pub discount_approved_by: Option<String>,
    /// Collector or system that captured it.
    pub captured_by: String,
    /// Channel it came through.
    pub channel: String,
}

/// `arrangement.cancelled` data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ArrangementCancelled {
    /// Account id.
    pub account_id: String,
    /// The arrangement.
    pub arrangement_id: String,
    /// Why.
    pub reason: String,
}

/// `payment.reversed` data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PaymentReversed {
    /// Account id.
    pub account_id: String,
    /// The payment that came back (its `payment.received` id).
    pub payment_id: String,
    /// Amount reversed.
    pub amount: Money,
    /// When it was reversed.
    pub reversed_at: Timestamp,
    /// Why (`returned_debit`, `chargeback`, ...).
    pub reason: String,
}
