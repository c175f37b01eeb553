//! Pruning history past its horizon ([`crate::config::Retention`]): one pass over the
//! inbox, the contact ledger, the outbox, the tasks and (when a horizon is set) the journal, in batches of a
//! bounded size with a pause between them, so that it runs beside full ingest.
//!
//! Safe with several pruners at once (two `collectionsctl prune` runs, or replicas of a
//! CronJob): each batch locks the rows it deletes `SKIP LOCKED`, so the pruners share the
//! rows and never wait on one another. What may be deleted, and what never, is the store's
//! (`collections_store` `retention`).

use std::{future::Future, time::Duration};

use collections_store::{Store, StoreError};
use jiff::{SignedDuration, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::{config::Retention, supervisor::backoff};

/// Rows deleted by one pass, per table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Inbox ids.
    pub inbox: u64,
    /// Published outbox rows.
    pub outbox: u64,
    /// Emitted and cancelled tasks.
    pub tasks: u64,
    /// Contact attempts.
    pub contacts: u64,
    /// Journal entries.
    pub journal: u64,
}

/// The instant `age` before `now`.
fn cutoff(now: Timestamp, age: Duration) -> Timestamp {
    let age = SignedDuration::from_secs(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
    now.checked_sub(age).unwrap_or(Timestamp::MIN)
}

/// One pruning pass with horizons counted back from `now`; stops early (with what it
/// deleted so far) when `token` is cancelled.
///
/// # Errors
/// A database error that persisted through a few retries.
pub async fn prune(
    store: &Store,
    retention: &Retention,
    now: Timestamp,
    token: &CancellationToken,
) -> Result<Pruned, StoreError> {
    let mut pruned = Pruned::default();
    let batch = retention.batch;
    let pace = Pace {
        pause: retention.pause,
        token,
    };

    let before = cutoff(now, retention.inbox);
    while let Some(n) = pace.step(|| store.prune_inbox(before, batch)).await? {
        pruned.inbox += n;
        if n < batch as u64 {
            break;
        }
    }

    let before = cutoff(now, retention.contacts);
    while let Some(n) = pace.step(|| store.prune_contacts(before, batch)).await? {
        pruned.contacts += n;
        if n < batch as u64 {
            break;
        }
    }

    let before = cutoff(now, retention.tasks);
    while let Some(n) = pace.step(|| store.prune_tasks(before, batch)).await? {
        pruned.tasks += n;
        if n < batch as u64 {
            break;
        }
    }

    // The outbox and the journal are walked along their ids, up to the first young row.
    let before = cutoff(now, retention.outbox);
    let upto = store.outbox_horizon(before).await?;
    let mut after = 0;
    while let Some((n, last)) = pace
        .step(|| store.prune_outbox(before, after, upto, batch))
        .await?
    {
        pruned.outbox += n;
        match last {
            Some(last) if n == batch as u64 => after = last,
            _ => break,
        }
    }

    if let Some(age) = retention.journal {
        let before = cutoff(now, age);
        let upto = store.journal_horizon(before).await?;
        let mut after = 0;
        while let Some((n, last)) = pace
            .step(|| store.prune_journal(before, after, upto, batch))
            .await?
        {
            pruned.journal += n;
            match last {
                Some(last) if n == batch as u64 => after = last,
                _ => break,
            }
        }
    }
    Ok(pruned)
}

/// Runs batches with a pause after each, retrying a failed one with backoff.
struct Pace<'a> {
    pause: Duration,
    token: &'a CancellationToken,
}

impl Pace<'_> {
    /// Runs one batch; `None` when cancelled.
    async fn step<T, F, Fut>(&self, mut batch: F) -> Result<Option<T>, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut attempt = 0;
        loop {
            if self.token.is_cancelled() {
                return Ok(None);
            }
            match batch().await {
                Ok(v) => {
                    tokio::select! {
                        () = self.token.cancelled() => {}
                        () = tokio::time::sleep(self.pause) => {}
                    }
                    return Ok(Some(v));
                }
                Err(e) if attempt < 5 => {
                    tracing::warn!(error = %e, attempt, "prune batch failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt, Duration::from_secs(5))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
