//! Cluster tests: the real binaries on a 3-node RabbitMQ cluster and on a Postgres primary
//! with a synchronous standby behind one address, nodes killed with SIGKILL under load,
//! then the fault suite's invariants (`tests/e2e/invariants.rs`).
//!
//! Each test starts its cluster from Debian packages with the scripts operators use
//! (`deploy/cluster/*.sh`, with node names, ports and directories of its own) and tears it
//! down; the machine's own RabbitMQ and Postgres are not touched (the RabbitMQ test keeps
//! its database there). The tests run one at a time.

#[path = "../e2e"]
#[allow(dead_code)]
mod e2e {
    pub mod harness;
    pub mod invariants;
}

mod postgres;
mod rabbitmq;
mod support;

// The shared modules name each other from the crate root (`crate::harness`).
use e2e::{harness, invariants};

/// One cluster test at a time: each brings up several nodes on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
