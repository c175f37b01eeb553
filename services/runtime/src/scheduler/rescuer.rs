//! The rescuer: every few seconds, returns to `scheduled` the tasks whose claim ran out
//! (their scheduler died, or lost the database, between claim and mark).

use std::time::Duration;

use collections_store::Store;
use tokio_util::sync::CancellationToken;

/// Rescues stuck claims every 5 s until cancelled. A database that is away is logged and
/// tried again at the next round.
///
/// # Errors
/// None so far; the signature lets its supervisor restart it should one appear.
pub async fn run_rescuer(store: Store, token: CancellationToken) -> anyhow::Result<()> {
    loop {
        match store.rescue_stuck_claims().await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(count = n, "rescued tasks claimed by a scheduler that died");
            }
            Err(e) => tracing::warn!(error = %e, "rescuer: database unavailable"),
        }
        tokio::select! {
            () = token.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
