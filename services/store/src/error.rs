//! What can fail in the store, and whether retrying can help: every database error is
//! transient except the data errors ([`StoreError::is_data_error`]).

use collections_core::RejectCode;
use uuid::Uuid;

/// Store failures. A database error is transient (the caller retries with backoff and
/// never dead-letters because of one) unless the database refused the data itself; data
/// the store finds stored but cannot read ([`StoreError::State`]) is never transient. A
/// schema mismatch is not either: it stops the binary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached; retry.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database's schema is not one this binary can run against: not transient, the
    /// operator must migrate or deploy another release.
    #[error("schema: {0}")]
    Schema(#[from] crate::schema::SchemaMismatch),
    /// The rules would cancel or re-rank a task a scheduler is firing at this moment
    /// (claimed, not yet confirmed) and the batch could not set the events concerned
    /// apart (they are deferred alone, `Outcome::Deferred`, whenever the task belongs to
    /// an account of the batch, which it always does). Nothing was committed: retry the
    /// batch shortly, once the firing has settled (the task emitted, or its claim
    /// returned).
    #[error("task {0} is being fired; retry once the firing settles")]
    TaskFiring(Uuid),
    /// Stored data this binary cannot read, or a value it cannot write back: an account
    /// state that does not parse (or names a zone that no longer resolves), a task column
    /// holding a value no status, kind, channel or tone has, a number out of its range, a
    /// row without a column the statement selects. Retrying reads the same row again, so
    /// the event that needs it is dead-lettered instead (reason `state`) and the row is
    /// left for an operator.
    #[error("stored data unreadable: {0}")]
    State(String),
}

impl StoreError {
    /// Retrying the same input cannot succeed: the database refused the data itself
    /// (SQLSTATE class 22 "data exception" or 23 "integrity constraint violation"), or the
    /// rows it needs cannot be read ([`StoreError::State`]). Every other error
    /// (connection, pool, deadlock, serialisation) is worth retrying.
    #[must_use]
    pub fn is_data_error(&self) -> bool {
        self.reject_reason().is_some()
    }

    /// The dead-letter reason of an event that meets this error, for data errors:
    /// `state` when stored data cannot be read, `invalid_value` when the database refuses
    /// what the event would write. `None` for errors worth retrying.
    #[must_use]
    pub fn reject_reason(&self) -> Option<RejectCode> {
        match self {
            StoreError::State(_) => Some(RejectCode::State),
            StoreError::Db(sqlx::Error::Database(db))
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("22") || c.starts_with("23")) =>
            {
                Some(RejectCode::InvalidValue)
            }
            _ => None,
        }
    }

    /// A [`StoreError::State`] naming what could not be read.
    pub(crate) fn state(detail: impl Into<String>) -> Self {
        StoreError::State(detail.into())
    }
}
