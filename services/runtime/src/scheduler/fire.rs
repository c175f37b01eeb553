//! Firing: claim due tasks, publish them with confirms, mark them emitted (or move them
//! when they came due outside the contact window), publish the follow-ups; sleeps until
//! the next due task, a notification or the poll interval.
//!
//! A claim must outlast the firing of its batch: the publish (up to the confirm timeout)
//! and the completion. A batch claimed while the previous one was being fired may have
//! waited for it; when that wait ate into the claim's margin, the claim is renewed before
//! publishing, and tasks it lost meanwhile are not published. Completion and moves are
//! fenced by the claim's token: tasks another scheduler took over are left to it.

use std::time::{Duration, Instant};

use anyhow::Context;
use collections_bus::{OutMessage, Publisher};
use collections_core::{fire::FireOutcome, outbound::OutboundMessage, Policy};
use collections_store::{
    scheduler::{Claim, Move},
    OutboxRow, Store,
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
            // Before the statement: the claim's age is never underestimated.
            let claimed_at = Instant::now();
            let claim = match store
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
            let taken = claim.tasks.len() + claim.unreadable.len();
            let full = i64::try_from(taken).unwrap_or(i64::MAX) >= settings.batch;
            if !claim.tasks.is_empty() {
                let (store, policy, publisher) = (store.clone(), policy.clone(), publisher.clone());
                let token = token.clone();
                let renew_after = renew_after(settings);
                firing = Some(tokio::spawn(async move {
                    let age = claimed_at.elapsed();
                    let claim = if age > renew_after {
                        match renew(&store, claim, age).await {
                            Some(claim) => claim,
                            None => return Ok(()),
                        }
                    } else {
                        claim
                    };
                    fire(&store, &policy, &publisher, claim, &token).await
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

/// How old a claim may be when its batch starts firing without being renewed: half the
/// claim's margin over the confirm wait, so that the rest covers the completion.
fn renew_after(settings: &SchedulerConfig) -> Duration {
    settings
        .claim_timeout
        .saturating_sub(settings.common.confirm_timeout)
        / 2
}

/// Renews a claim that waited `age` before firing; keeps the tasks it still holds. `None`
/// when the database failed: the batch is left to run out and be rescued.
async fn renew(store: &Store, mut claim: Claim, age: Duration) -> Option<Claim> {
    let ids: Vec<_> = claim.tasks.iter().map(|c| c.task.task_id).collect();
    match store.renew_claim(claim.token, &ids).await {
        Ok(held) => {
            let before = claim.tasks.len();
            claim.tasks.retain(|c| held.contains(&c.task.task_id));
            let lost = before - claim.tasks.len();
            tracing::info!(
                ?age,
                tasks = before,
                lost,
                "claim waited before firing: renewed"
            );
            count_lost(lost, "before publishing");
            Some(claim)
        }
        Err(e) => {
            tracing::warn!(error = %crate::telemetry::mask_pii(&e.to_string()), tasks = ids.len(), "could not renew a claim that waited; left to run out and be rescued");
            None
        }
    }
}

/// Logs and counts tasks whose claim this scheduler lost (it ran out and another process
/// took the tasks over), found `when`.
fn count_lost(lost: usize, when: &str) {
    if lost == 0 {
        return;
    }
    tracing::warn!(
        count = lost,
        when,
        "claims ran out and were taken over by another scheduler: their tasks are left to it"
    );
    metrics::inc(
        "collections_leases_lost_total",
        &[("what", "claim")],
        u64::try_from(lost).unwrap_or(u64::MAX),
    );
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
    claim: Claim,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    let span = tracing::info_span!("fire", tasks = claim.tasks.len());
    fire_batch(store, policy, publisher, claim, token)
        .instrument(span)
        .await
}

async fn fire_batch(
    store: &Store,
    policy: &Policy,
    publisher: &Publisher,
    claim: Claim,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    if claim.tasks.is_empty() {
        return Ok(());
    }
    let now = Timestamp::now();
    let mut publish: Vec<OutboundMessage> = Vec::with_capacity(claim.tasks.len());
    let mut fired = Vec::with_capacity(claim.tasks.len());
    let mut moves = Vec::new();
    for c in claim.tasks {
        // One firing rule for the service and the simulator (collections_core::fire).
        match collections_core::fire(&c.task, c.state.as_ref(), policy, now) {
            FireOutcome::Due { message, .. } | FireOutcome::Expired { message } => {
                fired.push((c.task, message.event_id));
                publish.push(message);
            }
            // Nothing to publish: the completion applies the instalment's rules, and any
            // `arrangement.broken` goes out through the outbox.
            FireOutcome::InstalmentDue { cause } => fired.push((c.task, cause)),
            FireOutcome::Moved {
                task,
                message,
                journal,
            } => moves.push(Move {
                task_id: task.task_id,
                due_at: task.due_at,
                priority: task.priority,
                revision: task.revision,
                why: journal.detail,
                message,
                cancel: None,
            }),
            FireOutcome::Cancelled {
                task,
                message,
                journal,
                reason,
            } => moves.push(Move {
                task_id: task.task_id,
                due_at: task.due_at,
                priority: task.priority,
                revision: task.revision,
                why: journal.detail,
                message,
                cancel: Some(reason),
            }),
        }
    }
    // Per account in commit order: what the accounts' workers committed before and have
    // not published yet goes out first, on this channel, so that no `task.due` overtakes
    // its task's `task.scheduled` (or a re-rank). They are copies (same event ids):
    // their writers or the relays still publish and mark them.
    let earlier = earlier_events(store, &publish).await;
    let ids: Vec<String> = earlier
        .iter()
        .map(|r| r.event_id.to_string())
        .chain(publish.iter().map(|m| m.event_id.to_string()))
        .collect();
    let msgs: Vec<OutMessage<'_>> = earlier
        .iter()
        .map(|r| (r.exchange.as_str(), &r.routing_key, &r.body))
        .chain(
            publish
                .iter()
                .map(|m| (m.exchange, &m.routing_key, &m.body)),
        )
        .zip(&ids)
        .map(|((exchange, rk, body), id)| OutMessage::cloudevent(exchange, rk, body, id))
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
    let completed = with_retry(token, || {
        store.complete_fired_recorded(claim.token, &fired, &publish, policy, now)
    })
    .await?;
    let moved = with_retry(token, || {
        store.reschedule_claimed(claim.token, &moves, version, now)
    })
    .await?;
    // Tasks taken over get no follow-up from here: their new holder completes them.
    count_lost(completed.lost.len() + moved.lost.len(), "at completion");
    let mut follow_ups = completed.rows;
    follow_ups.extend(moved.rows);
    if moves.len() > moved.lost.len() {
        tracing::info!(
            count = moves.len() - moved.lost.len(),
            "tasks came due outside the contact window: moved"
        );
    }
    tracing::debug!(fired = fired.len(), "fired");
    outbox::publish_rows(store, publisher, &follow_ups).await?;
    Ok(())
}

/// The unpublished outbox rows of the accounts whose tasks are about to fire, oldest
/// first. Best effort: without the database the firing goes ahead (consumers still order
/// a task's events by their revision).
async fn earlier_events(store: &Store, publish: &[OutboundMessage]) -> Vec<OutboxRow> {
    let mut accounts: Vec<&str> = publish
        .iter()
        .filter(|m| m.exchange == collections_core::outbound::TASKS_EXCHANGE)
        .map(|m| m.account_id.as_str())
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    match store.unpublished_of_accounts(&accounts).await {
        Ok(rows) => {
            if !rows.is_empty() {
                tracing::debug!(
                    count = rows.len(),
                    "publishing the accounts' unpublished events ahead of their task.due"
                );
            }
            rows
        }
        Err(e) => {
            tracing::warn!(error = %crate::telemetry::mask_pii(&e.to_string()), "cannot read the accounts' unpublished events; firing without them");
            Vec::new()
        }
    }
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
