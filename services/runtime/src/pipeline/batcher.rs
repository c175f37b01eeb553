//! Taking deliveries in batches: whatever is buffered, plus a short linger while
//! deliveries queue up; a batch holding redeliveries is applied message by message.

use std::time::Duration;

use collections_bus::lapin::message::Delivery;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::Pipeline;
use crate::telemetry::metrics;

/// How often the broker delivered this message before (quorum queues count returns in
/// `x-delivery-count`; a classic queue only says `redelivered`).
fn delivery_count(d: &Delivery) -> i64 {
    let counted = d
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned())
        .and_then(|v| match v {
            collections_bus::lapin::types::AMQPValue::LongLongInt(n) => Some(n),
            collections_bus::lapin::types::AMQPValue::LongInt(n) => Some(i64::from(n)),
            collections_bus::lapin::types::AMQPValue::ShortInt(n) => Some(i64::from(n)),
            collections_bus::lapin::types::AMQPValue::LongUInt(n) => Some(i64::from(n)),
            _ => None,
        });
    counted.unwrap_or(i64::from(d.redelivered))
}

impl Pipeline {
    pub(super) async fn consume(&mut self, token: &CancellationToken) -> anyhow::Result<()> {
        let token = token.clone();
        let mut loaded = false;
        // Deliveries deferred by the last batch (a task they change was being fired): they
        // lead the next batch, which comes after at most 20 ms even if nothing new arrives.
        let mut carried: Vec<Delivery> = Vec::new();
        loop {
            let first = if carried.is_empty() {
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    d = self.consumer.next() => Some(d),
                }
            } else {
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    d = self.consumer.next() => Some(d),
                    () = tokio::time::sleep(Duration::from_millis(20)) => None,
                }
            };
            let mut batch = std::mem::take(&mut carried);
            if let Some(first) = first {
                let Some(first) = first else {
                    return Err(anyhow::anyhow!("consumer cancelled by the broker"));
                };
                batch.push(first?);
            }
            // Take whatever else is already buffered. While deliveries queue up (the last
            // batch held more than one), also wait up to BATCH_LINGER_MS for more: a few
            // milliseconds buy batches large enough that the machine is not saturated by
            // per-transaction costs at moderate rates. A lone delivery never waits.
            let linger = if loaded {
                self.ctx.config.batch_linger
            } else {
                Duration::ZERO
            };
            let deadline = tokio::time::Instant::now() + linger;
            while batch.len() < self.ctx.config.batch_max {
                match self.consumer.next().now_or_never() {
                    Some(Some(d)) => batch.push(d?),
                    Some(None) => break,
                    None if linger.is_zero() => break,
                    None => match tokio::time::timeout_at(deadline, self.consumer.next()).await {
                        Ok(Some(d)) => batch.push(d?),
                        _ => break,
                    },
                }
            }
            loaded = batch.len() > 1;
            carried = self.handle_batch(batch, &token).await?;
        }
    }

    /// Applies one batch; returns the deliveries it deferred, unacked.
    async fn handle_batch(
        &self,
        batch: Vec<Delivery>,
        token: &CancellationToken,
    ) -> anyhow::Result<Vec<Delivery>> {
        let kind = self.ctx.event_type.as_str();
        let n = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        metrics::inc("collections_events_consumed_total", &[("type", kind)], n);
        // A batch holding a message delivered twice before may hold one that crashes its
        // consumer: apply it message by message, each acked as soon as it commits, so the
        // others are not redelivered with it until the delivery limit dead-letters them too.
        if batch.len() > 1 && batch.iter().any(|d| delivery_count(d) >= 2) {
            tracing::warn!(
                batch = batch.len(),
                "redelivered messages in the batch; applying them one by one"
            );
            let mut carried = Vec::new();
            for d in batch {
                let alone = carried.is_empty();
                carried.extend(self.apply_and_ack(vec![d], alone, token).await?);
            }
            return Ok(carried);
        }
        // Deliveries carried from the last batch lead this one: nothing older is unacked.
        self.apply_and_ack(batch, true, token).await
    }
}
