//! Firing: claim due tasks, publish them with confirms, mark them emitted (or move them
//! when they came due outside the contact window), publish the follow-ups; sleeps until
//! the next due task, a notification or the poll interval.

use std::time::Duration;

use anyhow::Context;
use collections_bus::{OutMessage, Publisher};
use collections_core::{fire::FireOutcome, outbound::OutboundMessage, Policy};
use collections_store::{
    scheduler::{Claimed, Move},
    Store,
};
use jiff::Timestamp;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{config::SchedulerConfig, outbox, supervisor::backoff, telemetry::metrics};

pub(super) async fn fire_loop(
    store: &Store,
    policy: &Policy,
    settings: &SchedulerConfig,
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
                    report_unreadable(&c.unreadable);
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
            let taken = claimed.tasks.len() + claimed.unreadable.len();
            let full = i64::try_from(taken).unwrap_or(i64::MAX) >= settings.batch;
            let claimed = claimed.tasks;
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

/// Claimed tasks the store cannot read are not fired; they stay claimed until the
/// rescuer returns them, and are reported (an error line and the alert metric
/// `collections_unreadable_data_total`) each time a claim takes them again.
fn report_unreadable(unreadable: &[(sqlx::types::Uuid, collections_store::StoreError)]) {
    for (task, e) in unreadable {
        tracing::error!(%task, error = %crate::telemetry::mask_pii(&e.to_string()), "claimed task cannot be read; not fired (repair its row or its account's state)");
    }
    if !unreadable.is_empty() {
        let n = u64::try_from(unreadable.len()).unwrap_or(u64::MAX);
        metrics::inc(
            "collections_unreadable_data_total",
            &[("role", "scheduler")],
            n,
        );
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
        metrics::observe("collections_scheduler_lateness_seconds", &[], late);
    }
    for m in &publish {
        if m.exchange == collections_core::outbound::TASKS_EXCHANGE {
            metrics::count_task_event(&m.routing_key);
        } else {
            metrics::inc("collections_promises_expired_total", &[], 1);
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
    outbox::publish_rows(store, publisher, &follow_ups).await?;
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
