//! The event worker: consume one queue, apply each batch of deliveries in one transaction,
//! ack after commit, publish the committed task events, dead-letter what cannot be applied.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use anyhow::Context;
use collections_bus::{
    dead_letter_headers, dlq_name,
    lapin::{message::Delivery, options::BasicAckOptions, Connection},
    OutMessage, Publisher, DEAD_LETTER_EXCHANGE,
};
use collections_core::{parse_event, Event, EventType, ParseError, RejectCode};
use collections_store::{Outcome, Store, StoreError};
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{backoff, config::Config, health::metrics, relay};

/// Counts a published task event by its routing key `task.<state>.<kind>`.
pub fn count_task_event(routing_key: &str) {
    let mut parts = routing_key.splitn(3, '.');
    if let (Some("task"), Some(state), Some(kind)) = (parts.next(), parts.next(), parts.next()) {
        metrics().inc(
            "collections_task_events_total",
            &[("state", state), ("kind", kind)],
            1,
        );
    }
}

/// Runs a worker for one event type until SIGTERM: migrations, topology, then supervised
/// consuming sessions that reconnect with capped backoff.
///
/// # Errors
/// Only start-up errors that retrying cannot fix (bad configuration).
pub async fn run_worker(event_type: EventType, binary: &str) -> anyhow::Result<()> {
    crate::telemetry::init(binary);
    let config = Config::from_env()?;
    tracing::info!(?config, queue = event_type.queue(), "configuration loaded");
    let token = crate::shutdown_token();
    crate::health::serve_from_env(&config.database_url, &token).await?;
    let store = connect_store(&config, &token).await?;
    let Some(store) = store else { return Ok(()) };
    let ctx = Arc::new(Ctx {
        config,
        store,
        event_type,
        binary: binary.to_owned(),
    });
    supervise(ctx.clone(), token).await;
    close_store(&ctx.store).await;
    Ok(())
}

/// Closes the pool's connections politely (a Terminate message each, so the server does
/// not log them as reset by peer), without waiting long for a database that does not answer.
pub(crate) async fn close_store(store: &Store) {
    if tokio::time::timeout(Duration::from_secs(2), store.pool().close())
        .await
        .is_err()
    {
        tracing::warn!("the database did not let the pool close in time; leaving");
    }
}

/// Connects to Postgres and migrates, retrying while the database is away.
/// Returns `None` when shut down before that succeeded.
///
/// # Errors
/// When the URL itself is malformed.
pub async fn connect_store(
    config: &Config,
    token: &CancellationToken,
) -> anyhow::Result<Option<Store>> {
    let mut attempt = 0;
    loop {
        let attempt_once = async {
            let store = Store::connect(&config.database_url, config.db_pool).await?;
            // A least-privilege role cannot run DDL: MIGRATIONS=off leaves it to the
            // migration role (see deploy/README.md).
            if std::env::var("MIGRATIONS").as_deref() != Ok("off") {
                store.migrate().await?;
            }
            Ok::<_, collections_store::StoreError>(store)
        };
        let result = tokio::select! {
            () = token.cancelled() => return Ok(None),
            r = attempt_once => r,
        };
        match result {
            Ok(store) => return Ok(Some(store)),
            Err(collections_store::StoreError::Db(sqlx::Error::Configuration(e))) => {
                return Err(anyhow::anyhow!("DATABASE_URL is invalid: {e}"));
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "database not ready; retrying");
                attempt += 1;
                tokio::select! {
                    () = token.cancelled() => return Ok(None),
                    () = tokio::time::sleep(backoff(attempt, Duration::from_secs(5))) => {}
                }
            }
        }
    }
}

/// How long a worker keeps retrying a batch against a failing database before it gives
/// the deliveries back to the broker and waits for the database without holding any.
const RELEASE_AFTER_OUTAGE: Duration = Duration::from_secs(5);

/// Tasks due sooner than this wake the scheduler at once; later ones it finds by polling
/// (its poll interval must not exceed this).
pub const NOTIFY_HORIZON: Duration = Duration::from_secs(1);

struct Ctx {
    config: Config,
    store: Store,
    event_type: EventType,
    binary: String,
}

async fn supervise(ctx: Arc<Ctx>, token: CancellationToken) {
    let mut attempt = 0u32;
    let mut sessions = 0u64;
    while !token.is_cancelled() {
        let started = std::time::Instant::now();
        if sessions > 0 {
            metrics().reconnects.fetch_add(1, Ordering::Relaxed);
        }
        if sessions > 0 && !wait_for_database(&ctx.store, &token).await {
            break;
        }
        sessions += 1;
        let result = session(&ctx, &token).await;
        metrics().consuming.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => break,
            Err(e) => {
                if started.elapsed() > Duration::from_secs(30) {
                    attempt = 0;
                }
                attempt += 1;
                let wait = backoff(attempt, Duration::from_secs(5));
                tracing::warn!(
                    error = format!("{e:#}"),
                    ?wait,
                    "AMQP session ended; reconnecting"
                );
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    tracing::info!("stopped");
}

/// Waits until the database answers, so that no session takes deliveries it cannot
/// apply. Returns false when shut down meanwhile.
async fn wait_for_database(store: &Store, token: &CancellationToken) -> bool {
    let mut attempt = 0;
    loop {
        let ping = tokio::time::timeout(Duration::from_secs(5), store.ping());
        let result = tokio::select! {
            () = token.cancelled() => return false,
            r = ping => r,
        };
        if matches!(result, Ok(Ok(()))) {
            if attempt > 0 {
                tracing::info!("database answers again; consuming");
            }
            return true;
        }
        if attempt == 0 {
            tracing::warn!("database unavailable; not consuming until it answers");
        }
        attempt += 1;
        tokio::select! {
            () = token.cancelled() => return false,
            () = tokio::time::sleep(backoff(attempt, Duration::from_secs(2))) => {}
        }
    }
}

/// One connection's life: declare, consume with N pipelines, relay stale outbox rows.
async fn session(ctx: &Arc<Ctx>, token: &CancellationToken) -> anyhow::Result<()> {
    let session_token = token.child_token();
    // Setting up talks to the broker without a deadline of its own: shutdown must not
    // wait for a broker that is slow to answer.
    let setup = async {
        let conn = collections_bus::connect_with_ca(
            &ctx.config.amqp_url,
            &ctx.binary,
            ctx.config.amqp_ca.as_deref(),
        )
        .await
        .context("connect to broker")?;
        collections_bus::declare_topology_on(&conn)
            .await
            .context("declare topology")?;
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..ctx.config.concurrency {
            let pipeline = Pipeline::open(ctx.clone(), &conn, n).await?;
            let t = session_token.clone();
            tasks.spawn(async move { pipeline.run(t).await });
        }
        let relay_pub = Publisher::open(&conn).await?;
        let relay_token = session_token.clone();
        let relay_store = ctx.store.clone();
        tasks.spawn(async move {
            relay::run_relay(relay_store, relay_pub, Duration::from_secs(1), relay_token).await
        });
        Ok::<_, anyhow::Error>((conn, tasks))
    };
    let (conn, mut tasks) = tokio::select! {
        () = token.cancelled() => return Ok(()),
        r = setup => r?,
    };
    metrics().consuming.store(true, Ordering::Relaxed);
    crate::health::set_broker(Some(conn.status()));
    tracing::info!(
        queue = ctx.event_type.queue(),
        consumers = ctx.config.concurrency,
        "consuming"
    );

    // The first pipeline to stop ends the session: on shutdown all stop; on a broker
    // failure the others are stopped and the supervisor starts a fresh session. After
    // SIGTERM the in-flight batch has SHUTDOWN_TIMEOUT_SECS to finish; whatever is not
    // acked by then is redelivered to another consumer.
    let shutdown_deadline = async {
        token.cancelled().await;
        tokio::time::sleep(ctx.config.shutdown_timeout).await;
    };
    let first = tokio::select! {
        r = tasks.join_next() => r,
        () = shutdown_deadline => {
            tracing::warn!("in-flight work did not finish in time after SIGTERM; unacked messages will be redelivered");
            tasks.abort_all();
            None
        }
    };
    crate::health::set_broker(None);
    session_token.cancel();
    let drain = async {
        while let Some(r) = tasks.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::debug!(error = %e, "pipeline ended");
            }
        }
    };
    if tokio::time::timeout(ctx.config.shutdown_timeout, drain)
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight work did not finish in time; unacked messages will be redelivered"
        );
    }
    close(&conn).await;
    match first {
        Some(Ok(Ok(()))) if token.is_cancelled() => Ok(()),
        Some(Ok(Ok(()))) => Err(anyhow::anyhow!("consumer stream ended")),
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(anyhow::anyhow!("pipeline panicked: {e}")),
        None => Ok(()),
    }
}

/// Closes a connection politely, without waiting long for a broker that does not answer.
pub(crate) async fn close(conn: &Connection) {
    if tokio::time::timeout(Duration::from_secs(2), conn.close(200, "bye".into()))
        .await
        .is_err()
    {
        tracing::warn!("the broker did not confirm closing the connection; leaving");
    }
}

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

struct Pipeline {
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
    /// The database refused the data itself (SQLSTATE class 22 or 23): retrying cannot help.
    DataRejected(String),
}

enum Item {
    Event(Event, Delivery),
    Reject(ParseError, Delivery),
}

impl Pipeline {
    async fn open(ctx: Arc<Ctx>, conn: &Connection, n: usize) -> anyhow::Result<Self> {
        let prefetch = u16::try_from(ctx.config.batch_max * 2).unwrap_or(u16::MAX);
        let tag = format!("{}-{}-{n}", ctx.binary, std::process::id());
        let (_ch, consumer) =
            collections_bus::consume(conn, ctx.event_type.queue(), prefetch, &tag).await?;
        // Publishes (task events, dead letters) go on their own confirm-mode channel.
        let publisher = Publisher::open(conn).await?;
        let (outbox, mut rx) =
            tokio::sync::mpsc::channel::<(Vec<collections_store::OutboxRow>, bool)>(4);
        let (store, task_publisher) = (ctx.store.clone(), Publisher::open(conn).await?);
        let publishing = tokio::spawn(async move {
            while let Some((mut rows, mut wake)) = rx.recv().await {
                // Batches committed meanwhile go out together: one round of confirms and
                // one mark for all of them.
                while let Ok((more, w)) = rx.try_recv() {
                    rows.extend(more);
                    wake |= w;
                }
                relay::publish_rows(&store, &task_publisher, &rows)
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

    async fn run(mut self, token: CancellationToken) -> anyhow::Result<()> {
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

    async fn consume(&mut self, token: &CancellationToken) -> anyhow::Result<()> {
        let token = token.clone();
        let mut loaded = false;
        loop {
            let first = tokio::select! {
                () = token.cancelled() => return Ok(()),
                d = self.consumer.next() => d,
            };
            let Some(first) = first else {
                return Err(anyhow::anyhow!("consumer cancelled by the broker"));
            };
            let mut batch = vec![first?];
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
            self.handle_batch(batch, &token).await?;
        }
    }

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

    async fn handle_batch(
        &self,
        batch: Vec<Delivery>,
        token: &CancellationToken,
    ) -> anyhow::Result<()> {
        let kind = self.ctx.event_type.as_str();
        let n = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        metrics().inc("collections_events_consumed_total", &[("type", kind)], n);
        // A batch holding a message delivered twice before may hold one that crashes its
        // consumer: apply it message by message, each acked as soon as it commits, so the
        // others are not redelivered with it until the delivery limit dead-letters them too.
        if batch.len() > 1 && batch.iter().any(|d| delivery_count(d) >= 2) {
            tracing::warn!(
                batch = batch.len(),
                "redelivered messages in the batch; applying them one by one"
            );
            for d in batch {
                self.apply_and_ack(vec![d], token).await?;
            }
            return Ok(());
        }
        self.apply_and_ack(batch, token).await
    }

    async fn apply_and_ack(
        &self,
        batch: Vec<Delivery>,
        token: &CancellationToken,
    ) -> anyhow::Result<()> {
        let n = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        let last_tag = batch.last().map(|d| d.acker.clone());
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
        if !events.is_empty() {
            match self.apply_with_retry(&events, token).await? {
                Applied::Batch(batch) => {
                    to_publish = self.settle(&events, &deliveries, batch).await?;
                }
                Applied::DataRejected(why) => {
                    // The database refuses something in this batch for what it contains
                    // (not for being down): apply the events one by one so that only the
                    // offending one is dead-lettered and the queue never blocks.
                    tracing::warn!(error = %crate::telemetry::mask_pii(&why), batch = events.len(), "database refused the batch's data; isolating");
                    for (e, d) in events.iter().zip(&deliveries) {
                        let one = std::slice::from_ref(e);
                        match self.apply_with_retry(one, token).await? {
                            Applied::Batch(batch) => {
                                let rows = self.settle(one, std::slice::from_ref(d), batch).await?;
                                to_publish.extend(rows);
                            }
                            Applied::DataRejected(why) => {
                                self.dead_letter(
                                    d,
                                    RejectCode::InvalidValue.as_str(),
                                    &format!("database refused the event: {why}"),
                                )
                                .await?;
                            }
                        }
                    }
                }
            }
        }
        // Everything in the batch is committed (or dead-lettered with a confirm): one
        // multiple-ack covers it. Safe because this channel runs one batch at a time.
        if let Some(acker) = last_tag {
            acker
                .ack(BasicAckOptions { multiple: true })
                .await
                .context("ack")?;
            metrics().inc(
                "collections_events_acked_total",
                &[("type", self.ctx.event_type.as_str())],
                n,
            );
        }
        // Published by this pipeline's publisher task, in batch order, while the next
        // batch is applied. Committed rows it cannot publish stay in the outbox for the relay.
        let wake = self.wake.swap(false, Ordering::Relaxed);
        if !to_publish.is_empty() || wake {
            self.outbox
                .send((to_publish, wake))
                .await
                .map_err(|_| anyhow::anyhow!("the task-event publisher stopped"))?;
        }
        Ok(())
    }

    /// Logs, counts and dead-letters by outcome; returns the outbox rows to publish.
    async fn settle(
        &self,
        events: &[Event],
        deliveries: &[Delivery],
        batch: collections_store::Batch,
    ) -> anyhow::Result<Vec<collections_store::OutboxRow>> {
        // Wake the scheduler only for tasks due before its next poll would find them.
        if batch.earliest_due.is_some_and(|d| {
            d <= Timestamp::now()
                + jiff::SignedDuration::try_from(NOTIFY_HORIZON).unwrap_or_default()
        }) {
            self.wake.store(true, Ordering::Relaxed);
        }
        let mut to_publish = Vec::new();
        for ((event, d), outcome) in events.iter().zip(deliveries).zip(batch.outcomes) {
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
            }
        }
        Ok(to_publish)
    }

    fn count(&self, t: EventType, outcome: &str, reason: &str) {
        metrics().inc(
            "collections_events_total",
            &[
                ("type", t.as_str()),
                ("outcome", outcome),
                ("reason", reason),
            ],
            1,
        );
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
                self.ctx
                    .store
                    .apply_batch(events, &self.ctx.config.policy, Timestamp::now()),
            )
            .await;
            metrics().observe(
                "collections_batch_apply_seconds",
                &[("type", self.ctx.event_type.as_str())],
                started.elapsed().as_secs_f64(),
            );
            // `refused`: the database answered with an error (or the link to it failed);
            // otherwise it did not answer in time.
            let (error, refused) = match result {
                Ok(Ok(o)) => {
                    for (step, d) in o.steps.named() {
                        metrics().observe(
                            "collections_batch_step_seconds",
                            &[("type", self.ctx.event_type.as_str()), ("step", step)],
                            d.as_secs_f64(),
                        );
                    }
                    return Ok(Applied::Batch(o));
                }
                Ok(Err(e)) if e.is_data_error() => return Ok(Applied::DataRejected(e.to_string())),
                Ok(Err(StoreError::TaskFiring(task))) => {
                    // A scheduler is firing a task this batch would cancel or re-rank: it
                    // settles within a publish confirm, or its claim goes stale within
                    // the claim timeout and the next attempt takes the task back.
                    if !waiting_for_firing {
                        tracing::debug!(%task, "a task of this batch is being fired; retrying shortly");
                        waiting_for_firing = true;
                    }
                    metrics().inc(
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

    /// Publishes the original message to the dead-letter exchange with the reason in
    /// headers, waits for the confirm (then the caller acks the original).
    async fn dead_letter(&self, d: &Delivery, code: &str, detail: &str) -> anyhow::Result<()> {
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
        };
        self.publisher
            .publish_confirmed(&[msg])
            .await
            .context("publish dead letter")?;
        self.count(self.ctx.event_type, "dead_lettered", code);
        Ok(())
    }
}
