//! Follow-up tasks: what the dashboards receive.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A `Copy` enum spelled in the contract's snake case: serde, `as_str`, `FromStr`, `Display`.
macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name { $($(#[$vm])* #[serde(rename = $s)] $var),+ }

        impl $name {
            /// Contract spelling.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok($name::$var),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use text_enum;

text_enum!(
    /// What the collector is asked to do.
    TaskKind {
        /// Call the debtor.
        CollectionCall = "collection_call",
        /// Remind before the promised hour.
        PromiseReminder = "promise_reminder",
        /// Check the money arrived after the promised hour.
        PromiseCheck = "promise_check",
        /// Contact a third party (message only, never the debt).
        ThirdPartyCall = "third_party_call",
        /// Visit in person.
        FieldVisit = "field_visit",
        /// A supervisor looks at the account.
        SupervisorReview = "supervisor_review",
        /// A formal (lawyer's) letter.
        FormalLetter = "formal_letter",
        /// A reminder before the next due date.
        PreDueReminder = "pre_due_reminder",
        /// Internal: when it fires, an unkept promise is broken by the service itself
        /// (`promise.broken`, reason `expired`). Never published as a task event.
        PromiseExpiry = "promise_expiry",
        /// Call the debtor back at the minute they asked for.
        Callback = "callback",
        /// Find a way to reach the debtor again (no channel does).
        ContactRepair = "contact_repair",
        /// Check whether a payment the debtor says they made arrived.
        PaymentVerification = "payment_verification",
        /// Review a hold (dispute, hardship, ...) at its review date.
        HoldReview = "hold_review",
        /// Internal: when it fires, an arrangement's instalment not met by due + grace is
        /// missed (`arrangement.broken` when the plan breaks). Never published as a task
        /// event.
        InstalmentExpiry = "instalment_expiry",
    }
);

text_enum!(
    /// How the task reaches the customer.
    Channel {
        /// Mobile phone.
        PhoneMobile = "phone_mobile",
        /// Work phone.
        PhoneWork = "phone_work",
        /// Home phone.
        PhoneHome = "phone_home",
        /// Text message.
        Sms = "sms",
        /// A contact person's phone.
        ContactPerson = "contact_person",
        /// In person.
        Visit = "visit",
        /// Post.
        Letter = "letter",
        /// Internal work, no customer contact.
        None = "none",
    }
);

text_enum!(
    /// How firm the conversation is.
    Tone {
        /// No broken promise yet.
        Gentle = "gentle",
        /// One broken promise.
        Firm = "firm",
        /// Two or more.
        Serious = "serious",
    }
);

impl Channel {
    /// A telephone call to the debtor (what frequency caps count).
    #[must_use]
    pub fn is_phone(self) -> bool {
        matches!(
            self,
            Channel::PhoneMobile | Channel::PhoneWork | Channel::PhoneHome
        )
    }
}

impl TaskKind {
    /// Whether this kind contacts the customer (and so obeys the contact window).
    #[must_use]
    pub fn contacts_customer(self) -> bool {
        !matches!(
            self,
            TaskKind::SupervisorReview
                | TaskKind::PromiseExpiry
                | TaskKind::InstalmentExpiry
                | TaskKind::ContactRepair
                | TaskKind::PaymentVerification
                | TaskKind::HoldReview
        )
    }

    /// Internal bookkeeping tasks that dashboards never see.
    #[must_use]
    pub fn is_internal(self) -> bool {
        matches!(self, TaskKind::PromiseExpiry | TaskKind::InstalmentExpiry)
    }
}

/// A planned task as stored and published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Stable id (derived from the cause event, so replays plan the same ids).
    pub task_id: Uuid,
    /// Account.
    pub account_id: String,
    /// What to do.
    pub kind: TaskKind,
    /// How.
    pub channel: Channel,
    /// When.
    pub due_at: Timestamp,
    /// 1 = most urgent (domain.md rule 2).
    pub priority: u8,
    /// Tone of the conversation.
    pub tone: Tone,
    /// Why, for the collector.
    pub reason: String,
    /// The promise concerned.
    pub promise_id: Option<String>,
    /// The event that caused the plan.
    pub cause_event_id: Uuid,
    /// Attempt number for calls (1-based).
    pub attempt: u32,
    /// Content hash of the policy that planned it.
    pub policy_version: String,
    /// How many times the task has been announced: 1 when planned, one more with every
    /// change (a re-rank, a move, the firing, the cancellation). Every task event carries
    /// the revision the task has after it, so a consumer keeps, per task, the event with
    /// the highest revision, whatever order events arrive in. The store keeps it with the
    /// task, so a replay of the same change yields the same revision.
    #[serde(default = "first_revision")]
    pub revision: u32,
    /// The contact point (opaque id of a number or address) the task is meant for, when
    /// it is meant for one known point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_point_id: Option<String>,
}

fn first_revision() -> u32 {
    Task::FIRST_REVISION
}

impl Task {
    /// The revision of a task just planned (its first `task.scheduled`).
    pub const FIRST_REVISION: u32 = 1;

    /// The task as it is after one more change: its revision advanced by one (the caller
    /// changes the rest). Every change to a task goes through here, in the rules and in
    /// the netting of a batch, so that a task event and the stored row agree.
    #[must_use]
    pub fn revised(&self) -> Task {
        Task {
            revision: self.revision.saturating_add(1),
            ..self.clone()
        }
    }
}
