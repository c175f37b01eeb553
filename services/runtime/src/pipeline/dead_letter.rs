//! Dead-lettering: the original message goes to the dead-letter exchange with the
//! reason in its headers, mandatory and confirmed before the original is acked.

use anyhow::Context;
use collections_bus::{
    dead_letter_headers, dlq_name, lapin::message::Delivery, OutMessage, DEAD_LETTER_EXCHANGE,
};

use super::Pipeline;

impl Pipeline {
    /// Publishes the original message to the dead-letter exchange with the reason in
    /// headers, waits for the confirm (then the caller acks the original).
    pub(super) async fn dead_letter(
        &self,
        d: &Delivery,
        code: &str,
        detail: &str,
    ) -> anyhow::Result<()> {
        let queue = self.ctx.event_type.queue();
        let dlq = dlq_name(queue);
        let detail = crate::telemetry::mask_pii(detail);
        tracing::warn!(
            reason = code,
            detail = %detail,
            queue,
            bytes = d.data.len(),
            "dead-lettering message"
        );
        let headers = dead_letter_headers(
            d.properties.headers().as_ref(),
            code,
            &detail,
            queue,
            d.routing_key.as_str(),
        );
        let msg = OutMessage {
            exchange: DEAD_LETTER_EXCHANGE,
            routing_key: &dlq,
            body: &d.data,
            message_id: d.properties.message_id().as_ref().map(|s| s.as_str()),
            headers: Some(headers),
            content_type: d
                .properties
                .content_type()
                .as_ref()
                .map_or("application/octet-stream", |s| s.as_str()),
            // A missing `.dlq` or binding must not drop the message while the original is
            // acked: the publish fails instead, the original stays unacked, and the
            // session that follows declares the topology again before it is redelivered.
            mandatory: true,
        };
        self.publisher
            .publish_confirmed(&[msg])
            .await
            .context("publish dead letter")?;
        self.count(self.ctx.event_type, "dead_lettered", code);
        // For the board's dead-letters view. Best effort, briefly: the dead letter is
        // safe in its queue, and a database that does not answer must not hold the ack.
        let record = self.ctx.store.record_dead_letter(queue, code, &detail);
        match tokio::time::timeout(std::time::Duration::from_secs(2), record).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::telemetry::mask_pii(&e.to_string()), "dead letter not recorded in the database")
            }
            Err(_) => tracing::warn!("dead letter not recorded in the database (timeout)"),
        }
        Ok(())
    }
}
