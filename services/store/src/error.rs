//! What can fail in the store, and whether retrying can help: every database error is
//! transient except the data errors ([`StoreError::is_data_error`]).

use uuid::Uuid;

/// Store failures. Every database error is transient: the caller retries with backoff and
/// never dead-letters because of one. A schema mismatch is not: it stops the binary.
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
    /// (claimed, not yet confirmed). Nothing was committed: retry the batch shortly, once
    /// the firing has settled (the task emitted, or its claim returned).
    #[error("task {0} is being fired; retry once the firing settles")]
    TaskFiring(Uuid),
}

impl StoreError {
    /// The database refused the data itself (SQLSTATE class 22 "data exception" or 23
    /// "integrity constraint violation"): retrying the same input cannot succeed. Every
    /// other error (connection, pool, deadlock, serialisation) is worth retrying.
    #[must_use]
    pub fn is_data_error(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|c| c.starts_with("22") || c.starts_with("23")),
            _ => false,
        }
    }
}
