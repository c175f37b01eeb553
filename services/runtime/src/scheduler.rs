//! The task scheduler: fires planned tasks on the minute, breaks expired promises, plans
//! the next call attempt, rescues stuck claims and relays the outbox.
//!
//! Firing is claim -> publish with confirms -> mark emitted. A scheduler killed between
//! claim and mark leaves rows `claimed`; the rescuer returns them after
//! `CLAIM_TIMEOUT` and another scheduler fires them again with the same event ids.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use anyhow::Context;
use collections_bus::{OutMessage, Publisher};
use collections_core::{fire::FireOutcome, outbound::OutboundMessage, Policy};
use collections_store::{
    scheduler::{Claimed, Move, NOTIFY_CHANNEL},
    Store,
};
use jiff::Timestamp;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{backoff, config::Config, health::metrics, relay};

/// Claims older than this are presumed dead and returned to `scheduled`.
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(collections_store::CLAIM_TIMEOUT_SECS);

/// Scheduler settings from the environment.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Most tasks claimed per statement (`SCHEDULER_BATCH`, default 5000).
    pub batch: i64,
    /// Longest sleep without looking at the table (`SCHEDULER_POLL_MS`, default 1000).
    pub poll: Duration,
}

impl SchedulerSettings {
    /// Reads `SCHEDULER_BATCH` and `SCHEDULER_POLL_MS`.
    ///
    /// # Errors
    /// A variable that is not a number.
    pub fn from_env() -> anyhow::Result<Self> {
        let batch = std::env::var("SCHEDULER_BATCH")
            .ok()
            .map(|v| v.parse::<i64>())
            .transpose()
            .context("SCHEDULER_BATCH")?
            .unwrap_or(5000);
        let poll_ms = std::env::var("SCHEDULER_POLL_MS")
            .ok()
            .map(|v| v.parse::<u64>())
            .transpose()
            .context("SCHEDULER_POLL_MS")?
            .unwrap_or(1000);
        let poll = Duration::from_millis(poll_ms).min(crate::worker::NOTIFY_HORIZON);
        Ok(Self {
            batch: batch.max(1),
            poll,
        })
    }
}

/// Runs the scheduler until SIGTERM.
///
/// # Errors
/// Start-up errors retrying cannot fix.
pub async fn run_scheduler() -> anyhow::Result<()> {
    crate::telemetry::init("task-scheduler");
    let config = Config::from_env()?;
    let settings = SchedulerSettings::from_env()?;
    tracing::info!(?config, ?settings, "configuration loaded");
    let token = crate::shutdown_token();
    crate::health::serve_from_env(&config.database_url, &token).await?;
    let Some(store) = crate::worker::connect_store(&config, &token).await? else {
        return Ok(());
    };
    let ctx = Arc::new((config, settings, store));
    let mut attempt = 0;
    let mut sessions = 0u64;
    while !token.is_cancelled() {
        let started = std::time::Instant::now();
        if sessions > 0 {
            metrics().reconnects.fetch_add(1, Ordering::Relaxed);
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
                    "scheduler session ended; reconnecting"
                );
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    crate::worker::close_store(&ctx.2).await;
    tracing::info!("stopped");
    Ok(())
}

async fn session(
    ctx: &Arc<(Config, SchedulerSettings, Store)>,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    let (config, settings, store) = &**ctx;
    // Shutdown must not wait for a broker or database that is slow to answer set-up.
    let setup = async {
        let conn = collections_bus::connect_with_ca(
            &config.amqp_url,
            "task-scheduler",
            config.amqp_ca.as_deref(),
        )
        .await
        .context("connect to broker")?;
        collections_bus::declare_topology_on(&conn)
            .await
            .context("declare topology")?;
        let publisher = Publisher::open(&conn).await?;
        let relay_publisher = Publisher::open(&conn).await?;
        let mut listener = PgListener::connect(&config.database_url).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        Ok::<_, anyhow::Error>((conn, publisher, relay_publisher, listener))
    };
    let (conn, publisher, relay_publisher, mut listener) = tokio::select! {
        () = token.cancelled() => return Ok(()),
        r = setup => r?,
    };
    let session_token = token.child_token();

    let relay = tokio::spawn(relay::run_relay(
        store.clone(),
        relay_publisher,
        Duration::from_secs(1),
        session_token.clone(),
    ));
    let rescuer_store = store.clone();
    let rescuer_token = session_token.clone();
    let rescuer = tokio::spawn(async move {
        loop {
            match rescuer_store
                .rescue_stuck_claims(CLAIM_TIMEOUT.as_secs_f64())
                .await
            {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(count = n, "rescued tasks claimed by a scheduler that died")
                }
                Err(e) => tracing::warn!(error = %e, "rescuer: database unavailable"),
            }
            tokio::select! {
                () = rescuer_token.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    });

    metrics().consuming.store(true, Ordering::Relaxed);
    crate::health::set_broker(Some(conn.status()));
    tracing::info!("scheduling");
    // After SIGTERM the batch being fired has SHUTDOWN_TIMEOUT_SECS to finish; claims
    // left behind are rescued and fired again (same event ids).
    let shutdown_deadline = async {
        token.cancelled().await;
        tokio::time::sleep(config.shutdown_timeout).await;
    };
    let result = tokio::select! {
        r = fire_loop(store, &config.policy, settings, &publisher, &mut listener, token) => r,
        () = shutdown_deadline => {
            tracing::warn!("the batch being fired did not finish in time after SIGTERM; its claims will be rescued");
            Ok(())
        }
    };
    crate::health::set_broker(None);
    session_token.cancel();
    let _ = relay.await;
    let _ = rescuer.await;
    crate::worker::close(&conn).await;
    result
}

async fn fire_loop(
    store: &Store,
    policy: &Policy,
    settings: &SchedulerSettings,
    publisher: &Publisher,
    listener: &mut PgListener,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    let mut claim_failures = 0u32;
    loop {
        // Drain everything due. Claiming the next batch overlaps firing the previous one
        // (publish, confirms, completion), which roughly doubles the drain rate.
        let mut firing: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = None;
        loop {
            if token.is_cancelled() {
                break;
            }
            let claimed = match store
                .claim_due_tasks(Timestamp::now(), settings.batch)
                .await
            {
                Ok(c) => {
                    if claim_failures > 0 {
                        tracing::info!(attempts = claim_failures, "database back; claiming again");
                    }
                    claim_failures = 0;
                    c
                }
                Err(e) => {
                    claim_failures += 1;
                    let wait = backoff(claim_failures, Duration::from_secs(5));
                    // One line when the outage starts, then one every ten attempts.
                    if claim_failures == 1 || claim_failures.is_multiple_of(10) {
                        tracing::warn!(error = %crate::telemetry::mask_pii(&e.to_string()), attempts = claim_failures, ?wait, "claim failed; retrying");
                    }
                    tokio::select! {
                        () = token.cancelled() => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                    break;
                }
            };
            if let Some(previous) = firing.take() {
                previous.await??;
            }
            let full = i64::try_from(claimed.len()).unwrap_or(i64::MAX) >= settings.batch;
            if !claimed.is_empty() {
                let (store, policy, publisher) = (store.clone(), policy.clone(), publisher.clone());
                let token = token.clone();
                firing = Some(tokio::spawn(async move {
                    fire(&store, &policy, &publisher, claimed, &token).await
                }));
            }
            if !full {
                break;
            }
        }
        if let Some(previous) = firing.take() {
            previous.await??;
        }
        if token.is_cancelled() {
            return Ok(());
        }
        // Sleep until the next due task, a notification, or the poll interval.
        let next = store.next_due_at().await.ok().flatten();
        let now = Timestamp::now();
        let mut wait = settings.poll;
        if let Some(next) = next {
            let until = Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO);
            wait = wait.min(until);
        }
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            () = token.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
            n = listener.recv() => {
                if let Err(e) = n {
                    // PgListener reconnects by itself; notifications in the gap are lost,
                    // which the poll interval covers.
                    tracing::warn!(error = %e, "notification listener interrupted");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// Fires one claimed batch.
async fn fire(
    store: &Store,
    policy: &Policy,
    publisher: &Publisher,
    claimed: Vec<Claimed>,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    let span = tracing::info_span!("fire", tasks = claimed.len());
    fire_batch(store, policy, publisher, claimed, token)
        .instrument(span)
        .await
}

async fn fire_batch(
    store: &Store,
    policy: &Policy,
    publisher: &Publisher,
    claimed: Vec<Claimed>,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    let now = Timestamp::now();
    let mut publish: Vec<OutboundMessage> = Vec::with_capacity(claimed.len());
    let mut fired = Vec::with_capacity(claimed.len());
    let mut moves = Vec::new();
    for c in claimed {
        // One firing rule for the service and the simulator (collections_core::fire).
        match collections_core::fire(&c.task, c.state.as_ref(), policy, now) {
            FireOutcome::Due { message, .. } | FireOutcome::Expired { message } => {
                fired.push((c.task, message.event_id));
                publish.push(message);
            }
            FireOutcome::Moved {
                task,
                message,
                journal,
            } => moves.push(Move {
                task_id: task.task_id,
                due_at: task.due_at,
                priority: task.priority,
                why: journal.detail,
                message,
            }),
        }
    }
    let ids: Vec<String> = publish.iter().map(|m| m.event_id.to_string()).collect();
    let msgs: Vec<OutMessage<'_>> = publish
        .iter()
        .zip(&ids)
        .map(|(m, id)| OutMessage::cloudevent(m.exchange, &m.routing_key, &m.body, id))
        .collect();
    publisher
        .publish_confirmed(&msgs)
        .await
        .context("publish task.due")?;
    let confirmed = Timestamp::now();
    for (t, _) in &fired {
        let late = confirmed.duration_since(t.due_at).as_secs_f64().max(0.0);
        metrics().observe("collections_scheduler_lateness_seconds", &[], late);
    }
    for m in &publish {
        if m.exchange == collections_core::outbound::TASKS_EXCHANGE {
            crate::worker::count_task_event(&m.routing_key);
        } else {
            metrics().inc("collections_promises_expired_total", &[], 1);
        }
    }
    let version = policy.version();
    let mut follow_ups = with_retry(token, || store.complete_fired(&fired, policy, now)).await?;
    follow_ups.extend(with_retry(token, || store.reschedule_claimed(&moves, version, now)).await?);
    if !moves.is_empty() {
        tracing::info!(
            count = moves.len(),
            "tasks came due outside the contact window: moved"
        );
    }
    tracing::debug!(fired = fired.len(), "fired");
    relay::publish_rows(store, publisher, &follow_ups).await?;
    Ok(())
}

/// Retries a completion until it succeeds or the scheduler shuts down. The batch is
/// published already: giving up would leave its claims to the rescuer, which fires them
/// again, so a database outage is waited out instead (with capped backoff).
async fn with_retry<T, F, Fut>(token: &CancellationToken, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, collections_store::StoreError>>,
{
    let mut attempt = 0u32;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                attempt += 1;
                let wait = backoff(attempt, Duration::from_secs(5));
                if attempt == 1 || attempt.is_multiple_of(10) {
                    tracing::warn!(error = %crate::telemetry::mask_pii(&e.to_string()), attempt, ?wait, "database failed while completing fired tasks; retrying");
                }
                tokio::select! {
                    // Shutting down: the claims are rescued and fired again (same ids).
                    () = token.cancelled() => return Err(e.into()),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}
