//! The pure core of the collections service: the rules, and nothing but the rules.
//!
//! # What it owns
//!
//! - the inbound contract: [`event::parse_event`] turns a message body into a trusted
//!   [`Event`] or a [`ParseError`] whose [`RejectCode`] labels the dead letter;
//! - the [`Policy`]: every number the rules use, loaded from TOML, checked whole, and
//!   versioned by content hash ([`Policy::version`]);
//! - per-account state ([`AccountState`]) and tasks ([`Task`]), with the task ids each
//!   decision derives (UUIDv5 of its cause) and the collection-note lines it writes;
//! - the rules: [`decide()`] applies one event to one account, [`fire()`] says what happens
//!   when a planned task's instant comes, [`on_call_fired`] completes a fired call;
//!   contact windows ([`window`]) and frequency caps ([`caps`]) in the customer's zone;
//! - the outbound contract: the task events and promise expiries each decision publishes
//!   ([`outbound`]; [`task_event`] reads task events back);
//! - the simulator ([`sim::simulate`]), which replays a scenario through all of it on a
//!   virtual clock.
//!
//! # What it may not do
//!
//! Everything here is deterministic, a function of its arguments: no I/O (no files,
//! network or environment), no clock reads (the shell passes `now`), no randomness, no
//! database and no broker. The shell (store, bus, runtime, workers) parses a message,
//! loads the account's state and open tasks, asks [`decide()`] what to do at an instant of
//! its own clock, and writes and publishes the [`Decision`] in one transaction. The only
//! file read is the shipped default policy, compiled in with `include_str!`.

pub mod arrangement;
pub mod caps;
pub mod completion;
pub mod contact;
pub mod decide;
pub mod event;
pub mod fire;
pub mod hold;
pub mod money;
pub mod netting;
pub mod outbound;
pub mod policy;
pub mod sim;
pub mod state;
pub mod task;
pub mod task_event;
pub mod window;

pub use decide::{
    channel_for_attempt, decide, instalment_due_cause, on_call_fired, on_instalment_due,
    priority_at, Decision, DomainError, JournalEntry, NEXT_STEP_BACKSTOP,
};
pub use event::{parse_event, Event, EventBody, EventType, ParseError, RejectCode};
pub use fire::{fire, FireOutcome};
pub use money::{Currency, Money};
pub use policy::Policy;
pub use state::AccountState;
pub use task::{Channel, Task, TaskKind, Tone};
pub use task_event::{parse_task_event, TaskEvent, TaskEventData};
