//! The transactional outbox's broker side: [`publish_rows`] publishes committed outbox
//! rows with confirms and marks them published (the workers' fast path and the
//! scheduler use it), and [`relay`] republishes rows whose writer did not.
//!
//! Uses only [`crate::telemetry`] below it.

pub mod relay;

use collections_bus::{OutMessage, Publisher};
use collections_store::{OutboxRow, Store};

pub use relay::run_relay;

use crate::telemetry::metrics;

/// Publishes rows with confirms and marks them published.
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
        metrics::count_task_event(&r.routing_key);
    }
    let row_ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    store.mark_published(&row_ids).await?;
    Ok(())
}
