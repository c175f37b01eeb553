//! The outbox relay: publishes committed messages whose writer did not (it crashed, or the
//! broker was away), oldest first, then marks them published.

use std::time::Duration;

use collections_bus::{OutMessage, Publisher};
use collections_store::{OutboxRow, Store};
use tokio_util::sync::CancellationToken;

/// Publishes rows with confirms and marks them published. Shared by the workers' fast path
/// and the relay.
///
/// # Errors
/// A broker or database failure; unmarked rows are published again later.
pub async fn publish_rows(
    store: &Store,
    publisher: &Publisher,
    rows: &[OutboxRow],
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = rows.iter().map(|r| r.event_id.to_string()).collect();
    let msgs: Vec<OutMessage<'_>> = rows
        .iter()
        .zip(&ids)
        .map(|(r, id)| OutMessage::cloudevent(&r.exchange, &r.routing_key, &r.body, id))
        .collect();
    publisher.publish_confirmed(&msgs).await?;
    for r in rows {
        crate::worker::count_task_event(&r.routing_key);
    }
    let row_ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    store.mark_published(&row_ids).await?;
    Ok(())
}

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
