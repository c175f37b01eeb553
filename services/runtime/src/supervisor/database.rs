//! The database side of supervision: connect (and check the schema) while the database is away,
//! wait until it answers again, close the pool politely.

use std::time::Duration;

use collections_store::{SchemaCheck, Store, StoreError};
use tokio_util::sync::CancellationToken;

use super::backoff;

/// Connects to Postgres, applies the migrations when `migrate` (`MIGRATIONS=auto`), and
/// checks that the schema is one this binary can run against, retrying while the database
/// is away. Returns `None` when shut down before that succeeded.
///
/// # Errors
/// When the URL itself is malformed, or the schema is older than the binary or newer and
/// incompatible (the message says which, and what to do): retrying cannot fix either.
pub async fn connect_store(
    database_url: &str,
    pool: u32,
    migrate: bool,
    token: &CancellationToken,
) -> anyhow::Result<Option<Store>> {
    let mut attempt = 0;
    loop {
        let attempt_once = async {
            let store = Store::connect(database_url, pool).await?;
            // Migrations are a release step (collectionsctl migrate): applying them here,
            // in every replica, breaks rolling upgrades (see deploy/README.md).
            if migrate {
                store.migrate().await?;
            }
            match store.check_schema().await? {
                SchemaCheck::Current { version } => {
                    tracing::info!(version, "database schema checked");
                }
                SchemaCheck::NewerCompatible { applied, known } => tracing::info!(
                    applied,
                    known,
                    "database schema is newer than this binary and compatible with it"
                ),
            }
            Ok::<_, StoreError>(store)
        };
        let result = tokio::select! {
            () = token.cancelled() => return Ok(None),
            r = attempt_once => r,
        };
        match result {
            Ok(store) => return Ok(Some(store)),
            Err(StoreError::Db(sqlx::Error::Configuration(e))) => {
                return Err(anyhow::anyhow!("DATABASE_URL is invalid: {e}"));
            }
            Err(StoreError::Schema(e)) => {
                tracing::error!(error = %e, "refusing to start");
                return Err(anyhow::anyhow!("refusing to start: {e}"));
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "database not ready; retrying");
                attempt += 1;
                tokio::select! {
                    () = token.cancelled() => return Ok(None),
                    () = tokio::time::sleep(backoff(attempt, Duration::from_secs(5))) => {}
                }
            }
        }
    }
}

/// Waits until the database answers, so that no session takes deliveries it cannot
/// apply. Returns false when shut down meanwhile.
pub async fn wait_for_database(store: &Store, token: &CancellationToken) -> bool {
    let mut attempt = 0;
    loop {
        let ping = tokio::time::timeout(Duration::from_secs(5), store.ping());
        let result = tokio::select! {
            () = token.cancelled() => return false,
            r = ping => r,
        };
        if matches!(result, Ok(Ok(()))) {
            if attempt > 0 {
                tracing::info!("database answers again; consuming");
            }
            return true;
        }
        if attempt == 0 {
            tracing::warn!("database unavailable; not consuming until it answers");
        }
        attempt += 1;
        tokio::select! {
            () = token.cancelled() => return false,
            () = tokio::time::sleep(backoff(attempt, Duration::from_secs(2))) => {}
        }
    }
}

/// Closes the pool's connections politely (a Terminate message each, so the server does
/// not log them as reset by peer), without waiting long for a database that does not answer.
pub async fn close_store(store: &Store) {
    if tokio::time::timeout(Duration::from_secs(2), store.pool().close())
        .await
        .is_err()
    {
        tracing::warn!("the database did not let the pool close in time; leaving");
    }
}
