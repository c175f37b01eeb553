//! The pure core of the collections service.
//!
//! Everything here is deterministic: no I/O, no clock reads, no randomness. The shell
//! (store, bus, workers) parses a message with [`event::parse_event`], loads the account's
//! [`state::AccountState`] and open tasks, and asks [`decide::decide`] what to do at a given
//! instant under a given [`policy::Policy`]. When a planned task's instant comes,
//! [`fire::fire`] says what happens; [`sim::simulate`] replays a scenario through all of
//! it on a virtual clock.

pub mod caps;
pub mod completion;
pub mod decide;
pub mod event;
pub mod fire;
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
    channel_for_attempt, decide, decide_versioned, on_call_fired, on_call_fired_versioned,
    priority_at, Decision, DomainError, JournalEntry,
};
pub use event::{parse_event, Event, EventBody, EventType, ParseError, RejectCode};
pub use fire::{fire, FireOutcome};
pub use money::{Currency, Money};
pub use policy::Policy;
pub use state::AccountState;
pub use task::{Channel, Task, TaskKind, Tone};
pub use task_event::{parse_task_event, TaskEvent, TaskEventData};
