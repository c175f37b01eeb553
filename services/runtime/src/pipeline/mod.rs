//! The batching consumer of one queue: each [`Pipeline`] owns a consumer channel, takes
//! deliveries in batches ([`batcher`]), applies each batch in one transaction and acks it
//! after commit ([`apply`]), dead-letters what cannot be applied ([`dead_letter`]), and
//! hands the committed task events to its publisher task.
//!
//! Uses [`crate::outbox`], [`crate::supervisor`], [`crate::config`] and
//! [`crate::telemetry`] below it.

mod apply;
mod batcher;
mod dead_letter;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use collections_bus::{
    lapin::{message::Delivery, Connection},
    Publisher,
};
use collections_core::{Event, EventType, ParseError, RejectCode};
use collections_store::Store;
use tokio_util::sync::CancellationToken;

use crate::{config::Config, outbox, telemetry::metrics};

/// How long a worker keeps retrying a batch against a failing database before it gives
/// the deliveries back to the broker and waits for the database without holding any.
const RELEASE_AFTER_OUTAGE: Duration = Duration::from_secs(5);

/// What every pipeline of a worker shares.
pub(crate) struct Ctx {
    pub(crate) config: Config,
    pub(crate) store: Store,
    pub(crate) event_type: EventType,
    pub(crate) binary: String,
}

pub(crate) struct Pipeline {
    ctx: Arc<Ctx>,
    consumer: collections_bus::lapin::Consumer,
    /// Dead letters are published inline (the ack waits for them).
    publisher: Publisher,
    /// Committed task events go to this pipeline's publisher task.
    outbox: tokio::sync::mpsc::Sender<(Vec<collections_store::OutboxRow>, bool)>,
    publishing: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// A task due within the notify horizon was planned: wake the scheduler.
    wake: std::sync::atomic::AtomicBool,
}

enum Applied {
    Batch(collections_store::Batch),
    /// Retrying cannot help: the database refused the data itself (SQLSTATE class 22 or
    /// 23: `invalid_value`), or what is stored for an account of the batch cannot be read
    /// (`state`). The reason and the error's text.
    DataRejected(RejectCode, String),
}

enum Item {
    Event(Event, Delivery),
    Reject(ParseError, Delivery),
}

impl Pipeline {
    pub(crate) async fn open(ctx: Arc<Ctx>, conn: &Connection, n: usize) -> anyhow::Result<Self> {
        let prefetch = u16::try_from(ctx.config.batch_max * 2).unwrap_or(u16::MAX);
        let tag = format!("{}-{}-{n}", ctx.binary, std::process::id());
        let (_ch, consumer) =
            collections_bus::consume(conn, ctx.event_type.queue(), prefetch, &tag).await?;
        // Publishes (task events, dead letters) go on their own confirm-mode channel.
        let confirms = ctx.config.common.confirm_timeout;
        let publisher = Publisher::open(conn).await?.with_confirm_timeout(confirms);
        let (outbox, mut rx) =
            tokio::sync::mpsc::channel::<(Vec<collections_store::OutboxRow>, bool)>(4);
        let task_publisher = Publisher::open(conn).await?.with_confirm_timeout(confirms);
        let store = ctx.store.clone();
        let publishing = tokio::spawn(async move {
            while let Some((mut rows, mut wake)) = rx.recv().await {
                // Batches committed meanwhile go out together: one round of confirms and
                // one mark for all of them.
                while let Ok((more, w)) = rx.try_recv() {
                    rows.extend(more);
                    wake |= w;
                }
                outbox::publish_rows(&store, &task_publisher, &rows)
                    .await
                    .context("publish task events")?;
                if wake {
                    if let Err(e) = store.notify_scheduler().await {
                        tracing::warn!(error = %e, "could not notify the scheduler (it polls anyway)");
                    }
                }
            }
            Ok(())
        });
        Ok(Self {
            ctx,
            consumer,
            publisher,
            outbox,
            publishing: Some(publishing),
            wake: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub(crate) async fn run(mut self, token: CancellationToken) -> anyhow::Result<()> {
        let publishing = self.publishing.take();
        let result = self.consume(&token).await;
        // Let the publisher finish what was committed, then report the first failure.
        drop(self);
        let published = match publishing {
            Some(h) => h
                .await
                .map_err(|e| anyhow::anyhow!("publisher panicked: {e}"))?,
            None => Ok(()),
        };
        published.and(result)
    }

    pub(super) fn count(&self, t: EventType, outcome: &str, reason: &str) {
        metrics::inc(
            "collections_events_total",
            &[
                ("type", t.as_str()),
                ("outcome", outcome),
                ("reason", reason),
            ],
            1,
        );
    }
}
