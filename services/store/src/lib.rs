//! Postgres persistence for the collections service: migrations, the per-batch
//! transaction, the scheduler's claims and the outbox.
//!
//! What the store owns: the schema (`migrations/`, never edited once shipped), every SQL
//! statement, the locks and their order (accounts first, then task rows), the transaction
//! boundaries, and the mapping between rows and the core's types.
//!
//! What it may not do: decide. Which tasks to plan, cancel or re-rank, what a fired call
//! leads to, and how the decisions of one batch net out are rules of `collections_core`;
//! the store reads, calls the core, and writes what the core returned. One function per
//! statement (or statement group), named after what it does.
//!
//! The heart is [`Store::apply_batch`]: one transaction that records the events in the
//! inbox, locks the accounts, runs the rules and writes state, tasks, journal and outbox
//! together.
//!
//! Modules: [`error`] (what failed, and whether retrying can help), [`batch`] (the
//! per-batch transaction), [`accounts`] (locking and reading account rows), [`tasks`]
//! (task rows and their statuses), [`outbox`] (outbound messages and their publication),
//! [`scheduler`] (claims, completion, moves), `journal` (the collection note), `guard`
//! (connections abandoned mid-transaction), [`schema`] (the migrations, and whether this
//! binary may run against the database's schema), `retention` (pruning history past its
//! horizon), [`read`] (the dashboards' read queries and the task-event feed). Timestamps cross as `jiff_sqlx::Timestamp`.
//!
//! Checked SQL: every static statement is a `sqlx::query!` (or `query_scalar!`), checked
//! at build time against the schema, so a renamed column fails the build. The macros read
//! the schema's description from the committed offline data (`.sqlx/` at the workspace
//! root; `.cargo/config.toml` sets `SQLX_OFFLINE=true`), so building needs no database.
//! Timestamp columns are typed by override (`due_at AS "due_at: Ts"`, parameters
//! `… as _`): the macros do not know jiff. After changing a query or a migration,
//! regenerate the offline data against a migrated scratch database and commit `.sqlx/`:
//!
//! ```text
//! createdb -h 127.0.0.1 -U postgres sqlx_prepare
//! sqlx migrate run --source services/store/migrations \
//!     --database-url postgres://postgres@127.0.0.1:5432/sqlx_prepare
//! SQLX_OFFLINE=false DATABASE_URL=postgres://postgres@127.0.0.1:5432/sqlx_prepare \
//!     cargo sqlx prepare --workspace
//! ```
//!
//! (`cargo install sqlx-cli --version '^0.8' --no-default-features --features
//! postgres,rustls --locked`; CI runs `cargo sqlx prepare --workspace --check`.) The two
//! statements built at runtime, `batch::WRITE_BATCH_SQL` and the outbox insert (both
//! share the outbox CTEs), stay unchecked `sqlx::query` calls.

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool,
};

pub mod accounts;
pub mod batch;
pub mod error;
mod guard;
mod journal;
mod ledger;
mod open;
pub mod outbox;
pub mod read;
mod retention;
pub mod scheduler;
pub mod schema;
pub mod tasks;

pub use batch::{Batch, BatchSteps, Outcome};
pub use error::StoreError;
pub use outbox::{insert_outbox, OutboxRow, OUTBOX_LEASE_SECS};
pub use schema::{SchemaCheck, SchemaMismatch};
pub use tasks::{TaskStatus, CLAIM_TIMEOUT_SECS};

/// How long the claims and leases this process takes last before another process may
/// take them over. Each must outlast the longest wait it covers (a publish awaiting its
/// confirms, then the database write that ends it): the runtime's configuration checks
/// that at start. The holder's completion is fenced by a token either way, so one that
/// runs late loses its rows instead of completing another's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Leases {
    /// A scheduler's claim on due tasks, in seconds ([`CLAIM_TIMEOUT_SECS`] by default).
    pub claim_secs: f64,
    /// A writer's or a relay's lease on unpublished outbox rows, in seconds
    /// ([`OUTBOX_LEASE_SECS`] by default).
    pub outbox_secs: f64,
}

impl Default for Leases {
    fn default() -> Self {
        Self {
            claim_secs: CLAIM_TIMEOUT_SECS as f64,
            outbox_secs: OUTBOX_LEASE_SECS as f64,
        }
    }
}

/// Handle on the database.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    leases: Leases,
}

impl Store {
    /// Connects a pool of at most `max_connections`.
    ///
    /// # Errors
    /// When the URL is malformed or the database unreachable.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let opts: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            // No ping before every checkout: it is a round trip per batch, and a
            // connection that died meanwhile fails its statement, which is retried anyway.
            .test_before_acquire(false)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        Ok(Self::from_pool(pool))
    }

    /// Wraps an existing pool.
    #[must_use]
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            leases: Leases::default(),
        }
    }

    /// The same store, taking claims and leases of these lengths.
    #[must_use]
    pub fn with_leases(mut self, leases: Leases) -> Self {
        self.leases = leases;
        self
    }

    /// The lengths of the claims and leases this store takes.
    #[must_use]
    pub fn leases(&self) -> Leases {
        self.leases
    }

    /// The pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Cheap liveness probe.
    ///
    /// # Errors
    /// When the database does not answer.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query_scalar!("SELECT 1 AS one")
            .fetch_one(&self.pool)
            .await?;
        Ok(())
    }
}
