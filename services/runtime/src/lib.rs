//! The runtime every binary shares: configuration, logging, the supervised AMQP session,
//! the batching consumer loop, the outbox relay, the scheduler loop, the health and
//! metrics routes and graceful shutdown.
//!
//! Modules, each using only those listed before it:
//! - [`telemetry`]: logging, PII masking, the process's metrics;
//! - [`config`]: the environment, read in one place;
//! - [`supervisor`]: backoff, shutdown, the session loop, restarted helpers, the database;
//! - [`retention`]: pruning history past its horizon (`collectionsctl prune`);
//! - [`outbox`]: publishing committed outbox rows, the relay;
//! - [`http`]: `/health/live`, `/health/ready`, `/metrics`;
//! - [`pipeline`]: the batching consumer (batch, apply, dead-letter);
//! - [`scheduler`]: the task scheduler (fire loop, rescuer);
//! - [`worker`]: an event worker binary's life (sessions of pipelines and a relay).
//!
//! It may not hold collections rules (they are `collections-core`'s) or SQL (it calls
//! `collections-store`, one function per statement).

pub mod telemetry;

pub mod config;

pub mod supervisor;

pub mod retention;

pub mod outbox;

pub mod http;

pub mod pipeline;

pub mod scheduler;

pub mod worker;

pub use config::Config;
pub use supervisor::{backoff, shutdown_token};
pub use worker::run_worker;
