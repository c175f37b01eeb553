//! The rescuer: every few seconds, returns to `scheduled` the tasks whose claim is older
//! than [`CLAIM_TIMEOUT`] (their scheduler died between claim and mark).

use std::time::Duration;

use collections_store::Store;
use tokio_util::sync::CancellationToken;

/// Claims older than this are presumed dead and returned to `scheduled`.
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(collections_store::CLAIM_TIMEOUT_SECS);

/// Rescues stuck claims every 5 s until cancelled. A database that is away is logged and
/// tried again at the next round.
///
/// # Errors
/// None so far; the signature lets its supervisor restart it should one appear.
pub async fn run_rescuer(store: Store, token: CancellationToken) -> anyhow::Result<()> {
    loop {
        match store.rescue_stuck_claims(CLAIM_TIMEOUT.as_secs_f64()).await {
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
