//! The outbox relay: publishes committed messages whose writer did not (it crashed, or the
//! broker was away), oldest first, then marks them published.
//!
//! It shares its session's broker connection: a relay that fails ends the session, whose
//! supervisor starts a fresh one (with a fresh relay) after a backoff.

use std::time::Duration;

use collections_bus::Publisher;
use collections_store::Store;
use tokio_util::sync::CancellationToken;

use super::publish_rows;

/// Runs until cancelled or the publisher fails: every `every`, publishes stale rows.
///
/// # Errors
/// A broker failure (the session is restarted by its supervisor).
pub async fn run_relay(
    store: Store,
    publisher: Publisher,
    every: Duration,
    token: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        loop {
            let rows = match store.claim_stale_outbox(500).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay: database unavailable");
                    break;
                }
            };
            if rows.is_empty() {
                break;
            }
            tracing::info!(count = rows.len(), "outbox relay: publishing stale rows");
            publish_rows(&store, &publisher, &rows).await?;
        }
        tokio::select! {
            () = token.cancelled() => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
    }
}
