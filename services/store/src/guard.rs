//! Connections abandoned mid-transaction are closed, never returned to the pool.

use sqlx::{pool::PoolConnection, PgConnection, PgPool, Postgres};

use crate::StoreError;

/// A pooled connection that goes back to the pool only when released: dropped while still
/// held (its work abandoned mid-statement), it is closed instead. Every multi-statement
/// transaction of the store runs on one, so no `BEGIN` outlives the work that sent it.
pub(crate) struct AbandonGuard(Option<PoolConnection<Postgres>>);

impl AbandonGuard {
    pub(crate) async fn acquire(pool: &PgPool) -> Result<Self, StoreError> {
        Ok(Self(Some(pool.acquire().await?)))
    }

    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        match self.0.as_deref_mut() {
            Some(c) => c,
            None => unreachable!("the guard holds its connection until released"),
        }
    }

    pub(crate) fn release(mut self) {
        drop(self.0.take());
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}
