//! End-to-end tests: the real worker binaries against real RabbitMQ and Postgres.
//!
//! Each test gets its own database and its own RabbitMQ virtual host, so tests run in
//! parallel and leave nothing behind. Scenarios read the way a collections manager would
//! describe them; they observe only what a dashboard or an operator could: `task.*`
//! events on `collections.tasks`, dead letters, and the database.

mod api;
mod arrangements;
mod board;
mod contacts;
mod fault_load;
mod fault_support;
mod faults;
mod faults_scheduler;
mod faults_workers;
mod harness;
mod holds;
mod invariants;
mod proxy;
mod scheduler;
mod schema;
mod simulator;
mod soak;
mod tls;
mod workers;
