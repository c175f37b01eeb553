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

/// Publishes rows with confirms and marks them published. Rows whose lease ran out
/// while the broker confirmed (a relay took them over, and publishes them too, with the
/// same ids) are left to the relay: logged and counted in
/// `collections_leases_lost_total{what="outbox"}`.
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
    let lost = store.mark_published(rows).await?;
    if lost > 0 {
        tracing::warn!(
            count = lost,
            "outbox rows were taken over by a relay while the broker confirmed them (lease \
             ran out): left to it"
        );
        metrics::inc("collections_leases_lost_total", &[("what", "outbox")], lost);
    }
    Ok(())
}
