//! Applying one batch: parse, one transaction (retried while the database fails,
//! isolated event by event when it refuses the data), settle each outcome, one
//! multiple-ack after commit, then hand the committed task events to the publisher task.

use std::{sync::atomic::Ordering, time::Duration};

use anyhow::Context;
use collections_bus::lapin::{message::Delivery, options::BasicAckOptions};
use collections_core::{parse_event, Event, ParseError, RejectCode};
use collections_store::{Outcome, StoreError};
use jiff::Timestamp;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Applied, Item, Pipeline, RELEASE_AFTER_OUTAGE};
use crate::{config::NOTIFY_HORIZON, supervisor::backoff, telemetry::metrics};

impl Pipeline {
    fn parse(&self, d: Delivery) -> Item {
        if d.data.len() > self.ctx.config.max_message_bytes {
            let e = ParseError {
                code: RejectCode::TooLarge,
                detail: format!(
                    "body of {} bytes exceeds the {} byte limit",
                    d.data.len(),
                    self.ctx.config.max_message_bytes
                ),
            };
            return Item::Reject(e, d);
        }
        match parse_event(&d.data, Some(self.ctx.event_type)) {
            Ok(e) => Item::Event(e, d),
            Err(e) => Item::Reject(e, d),
        }
    }

    /// Applies a batch and acks what it settled: committed, duplicate or dead-lettered.
    /// Returns the deliveries it deferred (their events would change a task a scheduler is
    /// firing), unacked: the caller applies them again with its next batch, shortly.
    /// `alone`: no delivery of this channel older than the batch is still unacked (else
    /// a multiple-ack would cover it).
    pub(super) async fn apply_and_ack(
        &self,
        batch: Vec<Delivery>,
        alone: bool,
        token: &CancellationToken,
    ) -> anyhow::Result<Vec<Delivery>> {
        let ackers: Vec<(u64, collections_bus::lapin::Acker)> = batch
            .iter()
            .map(|d| (d.delivery_tag, d.acker.clone()))
            .collect();
        let items: Vec<Item> = batch.into_iter().map(|d| self.parse(d)).collect();
        let mut events = Vec::new();
        let mut deliveries = Vec::new();
        for item in items {
            match item {
                Item::Event(e, d) => {
                    events.push(e);
                    deliveries.push(d);
                }
                Item::Reject(e, d) => {
                    // Not an event we could read: the span names the message as the broker
                    // knows it (its id property, if the publisher set one).
                    let span = tracing::info_span!(
                        "message",
                        message_id = d
                            .properties
                            .message_id()
                            .as_ref()
                            .map_or("", |m| m.as_str()),
                        routing_key = d.routing_key.as_str(),
                        delivery_tag = d.delivery_tag,
                    );
                    self.dead_letter(&d, e.code.as_str(), &e.detail)
                        .instrument(span)
                        .await?;
                }
            }
        }
        let mut to_publish = Vec::new();
        let mut deferred = Vec::new();
        if !events.is_empty() {
            let all: Vec<&Delivery> = deliveries.iter().collect();
            deferred = self
                .apply_events(&events, &all, &mut to_publish, token)
                .await?;
        }
        let carried: Vec<Delivery> = if deferred.is_empty() {
            Vec::new()
        } else {
            // Events of accounts whose tasks a scheduler is firing wait for the firing to
            // settle (a publish confirm; a dead scheduler's claim is taken back by the next
            // attempt once it is older than the claim timeout), without holding up the
            // pipeline: they go with its next batch.
            tracing::debug!(
                deferred = deferred.len(),
                "events wait for a task being fired; the rest of the batch is committed"
            );
            metrics::inc(
                "collections_batch_retries_total",
                &[("reason", "task_firing")],
                1,
            );
            let keep: std::collections::HashSet<usize> = deferred.into_iter().collect();
            deliveries
                .into_iter()
                .enumerate()
                .filter_map(|(i, d)| keep.contains(&i).then_some(d))
                .collect()
        };
        self.ack_settled(&ackers, &carried, alone).await?;
        self.hand_over(to_publish).await?;
        Ok(carried)
    }

    /// Acks every delivery of a batch but the `carried` ones: committed, duplicate or
    /// dead-lettered with a confirm. Without carried deliveries, here or older (`alone`),
    /// one multiple-ack covers the batch (safe because this channel runs one batch at a
    /// time); otherwise each settled delivery is acked alone, so that no ack covers a
    /// carried one (acking it twice would close the channel).
    async fn ack_settled(
        &self,
        ackers: &[(u64, collections_bus::lapin::Acker)],
        carried: &[Delivery],
        alone: bool,
    ) -> anyhow::Result<()> {
        let kind = self.ctx.event_type.as_str();
        if carried.is_empty() && alone {
            if let Some((_, acker)) = ackers.last() {
                acker
                    .ack(BasicAckOptions { multiple: true })
                    .await
                    .context("ack")?;
                let n = u64::try_from(ackers.len()).unwrap_or(u64::MAX);
                metrics::inc("collections_events_acked_total", &[("type", kind)], n);
            }
            return Ok(());
        }
        let held: std::collections::HashSet<u64> = carried.iter().map(|d| d.delivery_tag).collect();
        let mut n = 0;
        for (tag, acker) in ackers {
            if !held.contains(tag) {
                acker
                    .ack(BasicAckOptions { multiple: false })
                    .await
                    .context("ack")?;
                n += 1;
            }
        }
        metrics::inc("collections_events_acked_total", &[("type", kind)], n);
        Ok(())
    }

    /// Hands committed task events to this pipeline's publisher task, which publishes
    /// them in batch order while the next batch is applied (and wakes the scheduler if a
    /// batch planned a task due soon). Committed rows it cannot publish stay in the outbox
    /// for the relay.
    async fn hand_over(&self, rows: Vec<collections_store::OutboxRow>) -> anyhow::Result<()> {
        let wake = self.wake.swap(false, Ordering::Relaxed);
        if !rows.is_empty() || wake {
            self.outbox
                .send((rows, wake))
                .await
                .map_err(|_| anyhow::anyhow!("the task-event publisher stopped"))?;
        }
        Ok(())
    }

    /// Applies `events` (in one transaction, or event by event when the batch cannot be
    /// applied as a whole), settles each outcome and adds the committed task events to
    /// `to_publish`. Returns the positions of the events deferred because a task they
    /// would change is being fired: not applied, not settled, to be applied again.
    async fn apply_events(
        &self,
        events: &[Event],
        deliveries: &[&Delivery],
        to_publish: &mut Vec<collections_store::OutboxRow>,
        token: &CancellationToken,
    ) -> anyhow::Result<Vec<usize>> {
        let mut deferred = Vec::new();
        match self.apply_with_retry(events, token).await? {
            Applied::Batch(batch) => {
                let (rows, later) = self.settle(events, deliveries, batch).await?;
                to_publish.extend(rows);
                deferred = later;
            }
            Applied::DataRejected(code, why) => {
                // Something in this batch cannot be applied for what it contains or what
                // is stored for it (not because the database is down): apply the events
                // one by one so that only the offending ones are dead-lettered and the
                // queue never blocks.
                tracing::warn!(error = %crate::telemetry::mask_pii(&why), reason = code.as_str(), batch = events.len(), "batch cannot be applied as a whole; isolating");
                for (i, (e, d)) in events.iter().zip(deliveries).enumerate() {
                    let one = std::slice::from_ref(e);
                    match self.apply_with_retry(one, token).await? {
                        Applied::Batch(batch) => {
                            let (rows, later) =
                                self.settle(one, std::slice::from_ref(d), batch).await?;
                            to_publish.extend(rows);
                            if !later.is_empty() {
                                deferred.push(i);
                            }
                        }
                        Applied::DataRejected(code, why) => {
                            self.dead_letter_data(e, d, code, &why).await?;
                        }
                    }
                }
            }
        }
        Ok(deferred)
    }

    /// Dead-letters an event the store cannot apply for what it contains (`invalid_value`)
    /// or what is stored for its account (`state`, also counted as an alert: rows need an
    /// operator).
    async fn dead_letter_data(
        &self,
        e: &Event,
        d: &Delivery,
        code: RejectCode,
        why: &str,
    ) -> anyhow::Result<()> {
        let detail = if code == RejectCode::State {
            metrics::inc(
                "collections_unreadable_data_total",
                &[("role", "worker"), ("type", self.ctx.event_type.as_str())],
                1,
            );
            format!("the account's stored data cannot be read: {why}")
        } else {
            format!("database refused the event: {why}")
        };
        let span = tracing::info_span!(
            "event",
            event_id = %e.id,
            event_type = e.event_type().as_str(),
            account_id = %e.account_id
        );
        self.dead_letter(d, code.as_str(), &detail)
            .instrument(span)
            .await
    }

    /// Logs, counts and dead-letters by outcome; returns the outbox rows to publish and
    /// the positions of the deferred events.
    async fn settle(
        &self,
        events: &[Event],
        deliveries: &[&Delivery],
        batch: collections_store::Batch,
    ) -> anyhow::Result<(Vec<collections_store::OutboxRow>, Vec<usize>)> {
        // Wake the scheduler only for tasks due before its next poll would find them.
        if batch.earliest_due.is_some_and(|d| {
            d <= Timestamp::now()
                + jiff::SignedDuration::try_from(NOTIFY_HORIZON).unwrap_or_default()
        }) {
            self.wake.store(true, Ordering::Relaxed);
        }
        let mut to_publish = Vec::new();
        let mut deferred = Vec::new();
        for (i, ((event, d), outcome)) in events
            .iter()
            .zip(deliveries)
            .zip(batch.outcomes)
            .enumerate()
        {
            let span = tracing::info_span!(
                "event",
                event_id = %event.id,
                event_type = event.event_type().as_str(),
                account_id = %event.account_id
            );
            match outcome {
                Outcome::Applied(rows) => {
                    span.in_scope(|| tracing::debug!(task_events = rows.len(), "applied"));
                    self.count(event.event_type(), "applied", "");
                    to_publish.extend(rows);
                }
                Outcome::Duplicate => {
                    span.in_scope(|| tracing::info!("duplicate event id: no change"));
                    self.count(event.event_type(), "duplicate", "");
                }
                Outcome::Rejected(r) => {
                    self.dead_letter(d, RejectCode::Domain.as_str(), &r.0)
                        .instrument(span.clone())
                        .await?;
                }
                Outcome::Deferred(task) => {
                    span.in_scope(
                        || tracing::debug!(%task, "deferred: a task it changes is being fired"),
                    );
                    deferred.push(i);
                }
            }
        }
        Ok((to_publish, deferred))
    }

    async fn apply_with_retry(
        &self,
        events: &[Event],
        token: &CancellationToken,
    ) -> anyhow::Result<Applied> {
        let mut attempt = 0;
        let mut waiting_for_firing = false;
        let mut failing_since: Option<std::time::Instant> = None;
        loop {
            let started = std::time::Instant::now();
            // Abandoned on timeout, the batch's connection is closed rather than reused
            // (`Store::apply_batch`), so nothing it began outlives it.
            let result = tokio::time::timeout(
                self.ctx.config.db_timeout,
                self.ctx.store.apply_batch(
                    events,
                    &self.ctx.config.common.policy,
                    Timestamp::now(),
                ),
            )
            .await;
            metrics::observe(
                "collections_batch_apply_seconds",
                &[("type", self.ctx.event_type.as_str())],
                started.elapsed().as_secs_f64(),
            );
            // `refused`: the database answered with an error (or the link to it failed);
            // otherwise it did not answer in time.
            let (error, refused) = match result {
                Ok(Ok(o)) => {
                    for (step, d) in o.steps.named() {
                        metrics::observe(
                            "collections_batch_step_seconds",
                            &[("type", self.ctx.event_type.as_str()), ("step", step)],
                            d.as_secs_f64(),
                        );
                    }
                    return Ok(Applied::Batch(o));
                }
                Ok(Err(e)) if e.is_data_error() => {
                    let code = e.reject_reason().unwrap_or(RejectCode::InvalidValue);
                    return Ok(Applied::DataRejected(code, e.to_string()));
                }
                Ok(Err(StoreError::TaskFiring(task))) => {
                    // A scheduler is firing a task this batch would cancel or re-rank: it
                    // settles within a publish confirm, or its claim goes stale within
                    // the claim timeout and the next attempt takes the task back.
                    if !waiting_for_firing {
                        tracing::debug!(%task, "a task of this batch is being fired; retrying shortly");
                        waiting_for_firing = true;
                    }
                    metrics::inc(
                        "collections_batch_retries_total",
                        &[("reason", "task_firing")],
                        1,
                    );
                    let wait = Duration::from_millis(20);
                    tokio::select! {
                        () = token.cancelled() => return Err(anyhow::anyhow!("shutdown while waiting for a task being fired")),
                        () = tokio::time::sleep(wait) => {}
                    }
                    continue;
                }
                Ok(Err(e)) => (e.to_string(), true),
                Err(_) => (
                    format!(
                        "no answer within {:?} (DB_TIMEOUT_SECS)",
                        self.ctx.config.db_timeout
                    ),
                    false,
                ),
            };
            // Only a database that refuses us has its deliveries given back: one that
            // stops answering keeps them, because ending the session would abandon
            // statements in flight on the stalled link (the relay's), which can leave a
            // server-side transaction holding row locks on a pooled connection.
            if refused {
                let down_for = failing_since.get_or_insert(started).elapsed();
                if down_for >= RELEASE_AFTER_OUTAGE {
                    // Held deliveries count one more delivery each time the broker link
                    // drops meanwhile, and the queue's delivery limit would dead-letter
                    // valid messages during a long outage. Give them back (one count) and
                    // consume again once the database answers (see `supervise`).
                    return Err(anyhow::anyhow!(
                        "database unavailable for {down_for:?}: releasing {} deliveries until it answers ({error})",
                        events.len()
                    ));
                }
            } else {
                failing_since = None;
            }
            attempt += 1;
            let wait = backoff(attempt, Duration::from_secs(5));
            tracing::warn!(error = %error, attempt, ?wait, batch = events.len(), "database failed; retrying batch (not acked)");
            tokio::select! {
                // Not acked: the broker redelivers after we close the channel.
                () = token.cancelled() => return Err(anyhow::anyhow!("shutdown while the database was failing")),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
