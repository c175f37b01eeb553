//! The read half of the per-batch transaction ([`open_batch`]): the inbox insert, the
//! accounts locked in id order, their states and open tasks, and stale claims taken back.

use std::collections::{HashMap, HashSet};

use collections_core::{
    contact::{Attempt, Ledger, LEDGER_DAYS},
    AccountState, Event, EventBody, Task,
};
use jiff_sqlx::Timestamp as Ts;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::{
    accounts::parse_state,
    tasks::{TaskRow, TaskStatus},
    StoreError,
};

/// A column of a `collections_open_batch` row that the row's kind sets (every column of
/// a function's result is nullable to the query macros).
fn need<T>(v: Option<T>, col: &str) -> Result<T, StoreError> {
    v.ok_or_else(|| StoreError::state(format!("collections_open_batch: a row without {col}")))
}

/// What [`open_batch`] read: the new event ids, the locked accounts' states and their
/// open tasks.
pub(crate) struct Opened {
    /// The new events, by id and source.
    pub(crate) fresh: HashSet<(Uuid, String)>,
    pub(crate) states: HashMap<String, Option<AccountState>>,
    pub(crate) open: HashMap<String, Vec<Task>>,
    /// Open tasks a scheduler is firing right now (claimed within the claim timeout).
    pub(crate) firing: HashSet<Uuid>,
    /// The contact ledgers of the debtors concerned (named by a contact attempt of the
    /// batch, or by a locked account's state), by debtor.
    pub(crate) ledgers: HashMap<String, Ledger>,
}

/// The read half of the batch transaction (`collections_open_batch`, migration 0008):
/// records the event ids in the inbox, creates and locks the accounts of the new ones (in
/// account-id order: no deadlocks between batches) and loads their open tasks.
///
/// Tasks a scheduler claimed before the accounts were locked are open (a call being fired
/// still counts as the account's open call) and listed in [`Opened::firing`]. Claims older
/// that ran out (`claim_until`; for claims without one, taken by binaries older than
/// migration 0007, `claimed_at` older than `claim_secs`) belong to a scheduler presumed
/// dead: they are returned to `scheduled` here, as the rescuer would, so a worker never
/// waits on a dead scheduler.
pub(crate) async fn open_batch(
    tx: &mut Transaction<'_, Postgres>,
    events: &[Event],
    claim_secs: f64,
) -> Result<Opened, StoreError> {
    // Sorted in the inbox key's order (id, source) so that two batches sharing events
    // take the unique-index locks in one order.
    let mut rows: Vec<(Uuid, &str, &str, &str)> = events
        .iter()
        .map(|e| {
            let (ty, account) = (e.event_type().as_str(), e.account_id.as_str());
            (e.id, e.source.as_str(), ty, account)
        })
        .collect();
    rows.sort_by_key(|r| (r.0, r.1));
    rows.dedup_by_key(|r| (r.0, r.1));
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let sources: Vec<&str> = rows.iter().map(|r| r.1).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.2).collect();
    let accounts: Vec<&str> = rows.iter().map(|r| r.3).collect();
    // The debtors of the batch's contact attempts: their other accounts are locked too
    // (a cap reached on one account moves the calls of all of them).
    let mut debtors: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ContactAttempted(d) => Some(d.debtor()),
            _ => None,
        })
        .collect();
    debtors.sort_unstable();
    debtors.dedup();
    // collections_open_batch_contacts: live definition in migrations/0011_contact_ledger.sql
    // (0009's collections_open_batch_revised plus the debtors' accounts and ledgers, and
    // the tasks' contact points). Every column of a function's result may be NULL: the
    // four kinds of row tell apart by which are set (0004's comment).
    #[allow(clippy::cast_precision_loss)]
    let ledger_days = LEDGER_DAYS as f64;
    let result = sqlx::query!(
        r#"SELECT fresh, fresh_source, account_id, state, task_id, kind, channel,
                  due_at AS "due_at: Ts", priority, tone, reason, promise_id, cause_event_id,
                  attempt, policy_version, status, revision, contact_point_id, debtor_id,
                  contact
           FROM collections_open_batch_contacts($1, $2, $3, $4, $5, $6, $7)"#,
        &ids,
        &sources as &[&str],
        &types as &[&str],
        &accounts as &[&str],
        &debtors as &[&str],
        claim_secs,
        ledger_days,
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut opened = Opened {
        fresh: HashSet::new(),
        states: HashMap::new(),
        open: HashMap::new(),
        firing: HashSet::new(),
        ledgers: HashMap::new(),
    };
    let mut stale = Vec::new();
    let mut attempts: HashMap<String, Vec<Attempt>> = HashMap::new();
    for r in result {
        if let Some(text) = r.contact {
            let debtor = need(r.debtor_id, "debtor_id")?;
            let a: Attempt = serde_json::from_str(&text).map_err(|e| {
                StoreError::state(format!("a contact attempt of debtor {debtor}: {e}"))
            })?;
            attempts.entry(debtor).or_default().push(a);
        } else if let Some(id) = r.fresh {
            opened
                .fresh
                .insert((id, need(r.fresh_source, "fresh_source")?));
        } else if let Some(task_id) = r.task_id {
            let t = TaskRow {
                task_id,
                account_id: need(r.account_id, "account_id")?,
                kind: need(r.kind, "kind")?,
                channel: need(r.channel, "channel")?,
                due_at: need(r.due_at, "due_at")?,
                priority: need(r.priority, "priority")?,
                tone: need(r.tone, "tone")?,
                reason: need(r.reason, "reason")?,
                promise_id: r.promise_id,
                cause_event_id: need(r.cause_event_id, "cause_event_id")?,
                attempt: need(r.attempt, "attempt")?,
                policy_version: need(r.policy_version, "policy_version")?,
                revision: need(r.revision, "revision")?,
                contact_point_id: r.contact_point_id,
            }
            .into_task()?;
            // A status this binary does not know is an error, not `scheduled`: the rules
            // would cancel or re-rank a task whose life cycle they cannot tell.
            let status = need(r.status, "status")?
                .parse::<TaskStatus>()
                .map_err(|e| StoreError::state(format!("task {}: {e}", t.task_id)))?;
            match status {
                TaskStatus::Claimed => {
                    opened.firing.insert(t.task_id);
                }
                TaskStatus::Stale => stale.push(t.task_id),
                TaskStatus::Scheduled => {}
                TaskStatus::Emitted | TaskStatus::Cancelled => {
                    return Err(StoreError::state(format!(
                        "task {}: collections_open_batch listed it as open while {status}",
                        t.task_id
                    )))
                }
            }
            opened.open.entry(t.account_id.clone()).or_default().push(t);
        } else {
            let id = need(r.account_id, "account_id")?;
            let state = parse_state(&id, r.state.as_deref())?;
            opened.states.insert(id, state);
        }
    }
    opened.ledgers = attempts
        .into_iter()
        .map(|(debtor, a)| (debtor, Ledger::of(a)))
        .collect();
    if !stale.is_empty() {
        // Rare: a scheduler died holding these claims. The account locks keep new claims
        // off them; what the dead scheduler's completion or a rescuer did meanwhile is
        // read back after the update. The dead scheduler may have published the task's
        // `task.due` (with the next revision) before dying: the revision is advanced past
        // it, so a cancellation that follows (the retraction) outranks that `task.due`.
        sqlx::query!(
            "UPDATE tasks SET status = 'scheduled', claimed_at = NULL, claim_token = NULL,
                    claim_until = NULL, revision = revision + 1
             WHERE task_id = ANY($1) AND (status = 'claimed') IS TRUE
               AND coalesce(claim_until, claimed_at + make_interval(secs => $2)) < now()",
            &stale,
            claim_secs,
        )
        .execute(&mut **tx)
        .await?;
        let still_open: HashMap<Uuid, i32> = sqlx::query!(
            "SELECT task_id, revision FROM tasks
             WHERE task_id = ANY($1) AND (status = 'scheduled') IS TRUE",
            &stale,
        )
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|r| (r.task_id, r.revision))
        .collect();
        let stale: HashSet<Uuid> = stale.into_iter().collect();
        for tasks in opened.open.values_mut() {
            tasks.retain_mut(|t| {
                if !stale.contains(&t.task_id) {
                    return true;
                }
                let Some(&revision) = still_open.get(&t.task_id) else {
                    return false;
                };
                t.revision = u32::try_from(revision).unwrap_or(t.revision);
                true
            });
        }
    }
    Ok(opened)
}
