//! Scheduler statements: claim due tasks, rescue stuck claims, complete fired tasks (and
//! plan the next call attempt), move tasks that came due outside the contact window.

use std::collections::{HashMap, HashSet};

use collections_core::{
    completion::{complete_calls, completes_with_rules},
    outbound::OutboundMessage,
    AccountState, Policy, Task,
};
use jiff::Timestamp;
use jiff_sqlx::{Timestamp as Ts, ToSqlx};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::{
    accounts::{lock_accounts, parse_state},
    batch::Writes,
    guard::AbandonGuard,
    journal::insert_journal,
    outbox::{insert_outbox, OutboxRow},
    tasks::{load_open_tasks, task_row},
    Leases, Store, StoreError,
};

/// NOTIFY channel that wakes the scheduler when a task is planned due soon.
pub const NOTIFY_CHANNEL: &str = "collections_tasks";

/// A claimed task with its account's state (for the summary, zone and follow-ups).
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The task.
    pub task: Task,
    /// Its account's state, if the account row has one.
    pub state: Option<AccountState>,
}

/// Due tasks claimed by one statement, fenced by its token: only the holder of the token
/// may complete, move or renew them, and only until another process took them over
/// (after the claim ran out).
#[derive(Debug)]
pub struct Claim {
    /// The claim's fencing token, written on every row it claimed.
    pub token: Uuid,
    /// The tasks to fire, earliest due first.
    pub tasks: Vec<Claimed>,
    /// Claimed tasks whose row or account state cannot be read ([`StoreError::State`]).
    /// They are not fired (a call fired in the wrong zone could reach the customer at
    /// night) and stay claimed: the rescuer returns them once the claim runs out and the
    /// next claim reports them again, until an operator repairs the rows. The other tasks
    /// of the claim fire as usual.
    pub unreadable: Vec<(Uuid, StoreError)>,
}

/// What a completion or a move wrote, and the claims it found lost.
#[derive(Debug, Clone, Default)]
pub struct Settled {
    /// The outbox rows to publish (follow-ups, re-announcements): only for tasks whose
    /// claim the caller still held.
    pub rows: Vec<OutboxRow>,
    /// Tasks whose claim had run out and been taken over by another process (rescued,
    /// then maybe fired or moved by it): left as they are.
    pub lost: Vec<Uuid>,
}

/// A claimed task to put back at a later instant.
#[derive(Debug, Clone)]
pub struct Move {
    /// Task id.
    pub task_id: Uuid,
    /// New due instant.
    pub due_at: Timestamp,
    /// Its rank on the new day.
    pub priority: u8,
    /// Its revision after the move (that of its re-emitted `task.scheduled`).
    pub revision: u32,
    /// Journal line.
    pub why: String,
    /// Its re-emitted `task.scheduled` (its `task.cancelled` when `cancel` is set).
    pub message: OutboundMessage,
    /// Not moved but cancelled, for this reason (a hold or restriction in force at firing
    /// time): `due_at` and `priority` are then left as they were.
    pub cancel: Option<String>,
}

impl Store {
    /// Claims up to `limit` tasks due at or before `now`, earliest first, in one statement.
    /// Several schedulers may run this at once: `SKIP LOCKED` hands each row to one. The
    /// claim gets a fresh token and runs out after the store's claim timeout.
    ///
    /// Tasks whose account a worker (or a completion) holds locked are passed over until
    /// it commits: the lightest row lock on the account (`KEY SHARE`) still conflicts
    /// with their `FOR UPDATE`. So a task a worker read as scheduled cannot be claimed
    /// before the worker's cancellation or re-rank lands, and one claimed before is seen
    /// by the worker as being fired (its events are deferred: `Outcome::Deferred`).
    ///
    /// `task_id = ANY(ARRAY(SELECT …))` rather than `task_id IN (SELECT …)`: the array is
    /// computed once and the rows are fetched through the primary key. With `IN` the
    /// generic plan hash-joins the ids against a sequential scan of the whole table
    /// (580 ms instead of 125 ms per 5,000 tasks with 1.2 M rows).
    ///
    /// # Errors
    /// A database error. Rows that cannot be read are reported in [`Claim::unreadable`].
    pub async fn claim_due_tasks(&self, now: Timestamp, limit: i64) -> Result<Claim, StoreError> {
        let token = Uuid::new_v4();
        // The `!` restate the `tasks` columns' NOT NULL constraints, which sqlx's
        // nullability inference does not see through the CTE's `RETURNING *`.
        let rows = sqlx::query!(
            r#"WITH claimed AS (
                 UPDATE tasks SET status = 'claimed', claimed_at = now(), claim_token = $3,
                        claim_until = now() + make_interval(secs => $4)
                 WHERE task_id = ANY(ARRAY(
                     SELECT t.task_id FROM tasks t
                     JOIN accounts a ON a.account_id = t.account_id
                     WHERE t.status = 'scheduled' AND t.due_at <= $1
                     ORDER BY t.due_at
                     LIMIT $2
                     FOR UPDATE OF t SKIP LOCKED
                     FOR KEY SHARE OF a SKIP LOCKED))
                   AND (status = 'scheduled') IS TRUE
                 RETURNING *)
             SELECT c.task_id AS "task_id!", c.account_id AS "account_id!", c.kind AS "kind!",
                    c.channel AS "channel!", c.due_at AS "due_at!: Ts",
                    c.priority AS "priority!", c.tone AS "tone!", c.reason AS "reason!",
                    c.promise_id AS "promise_id?", c.cause_event_id AS "cause_event_id!",
                    c.attempt AS "attempt!", c.policy_version AS "policy_version!",
                    c.revision AS "revision!", c.contact_point_id AS "contact_point_id?",
                    a.state::text AS "state?"
             FROM claimed c LEFT JOIN accounts a ON a.account_id = c.account_id
             ORDER BY c.due_at"#,
            now.to_sqlx() as _,
            limit,
            token,
            self.leases.claim_secs,
        )
        .fetch_all(&self.pool)
        .await?;
        // An account with several tasks in the batch is parsed once.
        let mut states: HashMap<String, Option<AccountState>> = HashMap::new();
        let mut out = Claim {
            token,
            tasks: Vec::new(),
            unreadable: Vec::new(),
        };
        for r in rows {
            let (id, text) = (r.task_id, r.state);
            let task = match task_row!(r).into_task() {
                Ok(t) => t,
                Err(e) => {
                    out.unreadable.push((id, e));
                    continue;
                }
            };
            let state = match states.get(&task.account_id) {
                Some(s) => s.clone(),
                None => match parse_state(&task.account_id, text.as_deref()) {
                    Ok(s) => {
                        states.insert(task.account_id.clone(), s.clone());
                        s
                    }
                    Err(e) => {
                        out.unreadable.push((id, e));
                        continue;
                    }
                },
            };
            out.tasks.push(Claimed { task, state });
        }
        // The caps the firing re-checks count the debtor's contacts as they stand.
        crate::ledger::load_into(&self.pool, &mut states, now).await?;
        for c in &mut out.tasks {
            if let Some(Some(s)) = states.get(&c.task.account_id) {
                if let Some(state) = c.state.as_mut() {
                    state.ledger = s.ledger.clone();
                }
            }
        }
        Ok(out)
    }

    /// Extends a claim by the claim timeout from now, for the tasks of `ids` it still
    /// holds; returns those. A scheduler renews a claim that waited (behind the previous
    /// batch's firing) before publishing it, so the claim covers the publish and the
    /// completion in full, and it never publishes a task it has lost.
    ///
    /// # Errors
    /// A database error.
    pub async fn renew_claim(&self, token: Uuid, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        Ok(sqlx::query_scalar!(
            "UPDATE tasks SET claim_until = now() + make_interval(secs => $3)
             WHERE task_id = ANY($1) AND (status = 'claimed') IS TRUE AND claim_token = $2
             RETURNING task_id",
            ids,
            token,
            self.leases.claim_secs,
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The earliest due instant of any scheduled task.
    ///
    /// # Errors
    /// A database error.
    pub async fn next_due_at(&self) -> Result<Option<Timestamp>, StoreError> {
        let t = sqlx::query_scalar!(
            r#"SELECT min(due_at) AS "due_at: Ts" FROM tasks WHERE status = 'scheduled'"#
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(t.map(Ts::to_jiff))
    }

    /// Returns tasks whose claim ran out (their scheduler died, or lost the database,
    /// before completing them) to `scheduled`, so another scheduler fires them; their
    /// token is cleared, so the old holder can no longer complete or move them. Claims
    /// without `claim_until` (taken by binaries older than migration 0007) run out
    /// `claim_secs` after `claimed_at`.
    ///
    /// The dead scheduler may have published a `task.due` with the task's next revision:
    /// the revision is advanced past it, so whatever follows (a cancellation retracting
    /// it, or the firing again, with the same event id) carries a higher one.
    ///
    /// # Errors
    /// A database error.
    pub async fn rescue_stuck_claims(&self) -> Result<u64, StoreError> {
        let r = sqlx::query!(
            "UPDATE tasks SET status = 'scheduled', claimed_at = NULL, claim_token = NULL,
                    claim_until = NULL, revision = revision + 1
             WHERE status = 'claimed'
               AND coalesce(claim_until, claimed_at + make_interval(secs => $1)) < now()",
            self.leases.claim_secs,
        )
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// The committed outbox rows of `accounts` that no one has marked published yet,
    /// oldest (first committed) first. The scheduler publishes copies of them ahead of the
    /// `task.due` of those accounts, so that a task's `task.scheduled` held by a worker's
    /// publisher (or waiting for a relay) never arrives after its `task.due`. Reads
    /// `outbox_pending` (rows in flight) and fetches the outbox rows by id.
    ///
    /// # Errors
    /// A database error.
    pub async fn unpublished_of_accounts(
        &self,
        accounts: &[&str],
    ) -> Result<Vec<OutboxRow>, StoreError> {
        if accounts.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query!(
            r#"SELECT o.id, o.event_id, o.exchange, o.routing_key, o.body::text AS "body!",
                    p.lease
             FROM outbox_pending p JOIN outbox o ON o.id = p.id
             WHERE o.account_id = ANY($1)
             ORDER BY o.id"#,
            accounts as &[&str],
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| OutboxRow {
            id: r.id,
            event_id: r.event_id,
            exchange: r.exchange,
            routing_key: r.routing_key,
            body: r.body.into_bytes(),
            // Copies: the scheduler publishes them and never marks them.
            lease: r.lease,
        })
        .collect())
    }

    /// Wakes schedulers (outside any transaction: a NOTIFY inside one serialises commits).
    ///
    /// # Errors
    /// A database error.
    pub async fn notify_scheduler(&self) -> Result<(), StoreError> {
        sqlx::query!("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Puts claimed tasks back at later instants (they came due outside the contact
    /// window) and queues their re-emitted `task.scheduled` in the outbox, for the tasks
    /// the claim `token` still holds; the others are reported lost and neither moved,
    /// journaled nor announced.
    ///
    /// # Errors
    /// A database error: nothing changed; the claims are rescued later.
    pub async fn reschedule_claimed(
        &self,
        token: Uuid,
        moves: &[Move],
        version: &str,
        now: Timestamp,
    ) -> Result<Settled, StoreError> {
        if moves.is_empty() {
            return Ok(Settled::default());
        }
        let mut conn = AbandonGuard::acquire(&self.pool).await?;
        let result =
            reschedule_claimed_on(conn.conn(), token, moves, (version, now), self.leases).await;
        conn.release();
        result
    }

    /// Marks published tasks emitted and, for each fired collection call, counts the
    /// attempt and plans the next one (see `collections_core::on_call_fired`), all in one
    /// transaction, for the tasks the claim `token` still holds. Tasks whose claim was
    /// taken over are reported lost and get no follow-up: their new holder completes or
    /// moves them. Returns the outbox rows to publish.
    ///
    /// # Errors
    /// A database error: nothing changed; the claims are rescued and fired again (same
    /// event ids, so consumers see a duplicate at worst).
    pub async fn complete_fired(
        &self,
        token: Uuid,
        fired: &[(Task, Uuid)],
        policy: &Policy,
        now: Timestamp,
    ) -> Result<Settled, StoreError> {
        self.complete_fired_recorded(token, fired, &[], policy, now)
            .await
    }

    /// [`Store::complete_fired`], also recording the `task.due` messages just published
    /// (`published`, matched to the fired tasks by event id) as published outbox rows in
    /// the same transaction, for the tasks whose claim the caller still held: the
    /// task-event feed then serves them after the events that planned their tasks.
    ///
    /// # Errors
    /// As [`Store::complete_fired`].
    pub async fn complete_fired_recorded(
        &self,
        token: Uuid,
        fired: &[(Task, Uuid)],
        published: &[OutboundMessage],
        policy: &Policy,
        now: Timestamp,
    ) -> Result<Settled, StoreError> {
        if fired.is_empty() {
            return Ok(Settled::default());
        }
        let mut conn = AbandonGuard::acquire(&self.pool).await?;
        let result = complete_fired_on(
            conn.conn(),
            token,
            (fired, published),
            policy,
            now,
            self.leases,
        )
        .await;
        conn.release();
        result
    }
}

/// [`Store::reschedule_claimed`] on one connection.
async fn reschedule_claimed_on(
    conn: &mut PgConnection,
    token: Uuid,
    moves: &[Move],
    (version, now): (&str, Timestamp),
    leases: Leases,
) -> Result<Settled, StoreError> {
    let mut tx = conn.begin().await?;
    let (cancels, moves_only): (Vec<&Move>, Vec<&Move>) =
        moves.iter().partition(|m| m.cancel.is_some());
    let mut held: HashSet<Uuid> = if cancels.is_empty() {
        HashSet::new()
    } else {
        let ids: Vec<Uuid> = cancels.iter().map(|m| m.task_id).collect();
        let reasons: Vec<&str> = cancels
            .iter()
            .map(|m| m.cancel.as_deref().unwrap_or_default())
            .collect();
        let revision: Vec<i32> = cancels
            .iter()
            .map(|m| i32::try_from(m.revision).unwrap_or(i32::MAX))
            .collect();
        sqlx::query_scalar!(
            "UPDATE tasks t SET status = 'cancelled', cancelled_at = now(),
                    cancel_reason = c.reason, claimed_at = NULL, claim_token = NULL,
                    claim_until = NULL, revision = c.revision
             FROM unnest($1::uuid[], $2::text[], $3::int[]) AS c(id, reason, revision)
             WHERE t.task_id = c.id AND (t.status = 'claimed') IS TRUE AND t.claim_token = $4
             RETURNING t.task_id",
            &ids,
            &reasons as &[&str],
            &revision,
            token,
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect()
    };
    let ids: Vec<Uuid> = moves_only.iter().map(|m| m.task_id).collect();
    let due: Vec<Ts> = moves_only.iter().map(|m| m.due_at.to_sqlx()).collect();
    let priority: Vec<i16> = moves_only.iter().map(|m| i16::from(m.priority)).collect();
    let revision: Vec<i32> = moves_only
        .iter()
        .map(|m| i32::try_from(m.revision).unwrap_or(i32::MAX))
        .collect();
    let rescheduled: HashSet<Uuid> = sqlx::query_scalar!(
        "UPDATE tasks t SET status = 'scheduled', claimed_at = NULL, claim_token = NULL,
                    claim_until = NULL, due_at = m.due, priority = m.priority,
                    revision = m.revision
             FROM unnest($1::uuid[], $2::timestamptz[], $3::smallint[], $4::int[])
                  AS m(id, due, priority, revision)
             WHERE t.task_id = m.id AND (t.status = 'claimed') IS TRUE AND t.claim_token = $5
             RETURNING t.task_id",
        &ids,
        &due as &[Ts],
        &priority,
        &revision,
        token,
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    held.extend(rescheduled);
    let (moves, lost): (Vec<&Move>, Vec<&Move>) =
        moves.iter().partition(|m| held.contains(&m.task_id));
    let journal: Vec<_> = moves
        .iter()
        .map(|m| {
            (
                m.message.account_id.clone(),
                m.message.event_id,
                collections_core::JournalEntry {
                    kind: if m.cancel.is_some() {
                        "task_cancelled"
                    } else {
                        "task_moved"
                    },
                    detail: m.why.clone(),
                    task_id: Some(m.task_id),
                },
            )
        })
        .collect();
    insert_journal(&mut tx, &journal, version, now).await?;
    let rows = insert_outbox(
        &mut tx,
        moves.iter().map(|m| &m.message),
        leases.outbox_secs,
    )
    .await?;
    tx.commit().await?;
    Ok(Settled {
        rows,
        lost: lost.iter().map(|m| m.task_id).collect(),
    })
}

/// [`Store::complete_fired`] on one connection: locks the calls' accounts, marks the
/// fired tasks emitted, reads the accounts' open tasks, and writes what
/// `collections_core::completion::complete_calls` decides.
async fn complete_fired_on(
    conn: &mut PgConnection,
    token: Uuid,
    (fired, published): (&[(Task, Uuid)], &[OutboundMessage]),
    policy: &Policy,
    now: Timestamp,
    leases: Leases,
) -> Result<Settled, StoreError> {
    let mut tx = conn.begin().await?;
    let mut accounts: Vec<&str> = fired
        .iter()
        .filter(|(t, _)| completes_with_rules(t))
        .map(|(t, _)| t.account_id.as_str())
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    // Accounts first, then task rows: the same lock order as the workers.
    let mut states = lock_accounts(&mut tx, &accounts).await?;
    // The next call is planned within the debtor's caps.
    crate::ledger::load_into(&mut *tx, &mut states, now).await?;
    let ids: Vec<Uuid> = fired.iter().map(|(t, _)| t.task_id).collect();
    // Firing is a change: the row takes the revision its `task.due` carried (the claim
    // left the revision as it was, and nothing else changes a claimed task).
    let emitted: HashSet<Uuid> = sqlx::query_scalar!(
        "UPDATE tasks SET status = 'emitted', emitted_at = now(), revision = revision + 1
             WHERE task_id = ANY($1) AND (status = 'claimed') IS TRUE AND claim_token = $2
             RETURNING task_id",
        &ids,
        token,
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let due_events: HashSet<Uuid> = fired
        .iter()
        .filter(|(t, _)| emitted.contains(&t.task_id))
        .map(|(_, e)| *e)
        .collect();
    let record: Vec<&OutboundMessage> = published
        .iter()
        .filter(|m| {
            m.exchange == collections_core::outbound::TASKS_EXCHANGE
                && due_events.contains(&m.event_id)
        })
        .collect();
    crate::outbox::record_published(&mut tx, &record).await?;
    let (mut open, firing) = load_open_tasks(&mut tx, &accounts).await?;
    let version = policy.version();
    let net = complete_calls(
        fired,
        &emitted,
        &mut states,
        &mut open,
        &firing,
        policy,
        now,
    );
    let w = Writes {
        net,
        rejected: Vec::new(),
        ledger: Vec::new(),
    };
    let (rows, _) = w
        .write(&mut tx, &states, version, now, leases.outbox_secs)
        .await?;
    tx.commit().await?;
    let lost = ids.into_iter().filter(|id| !emitted.contains(id)).collect();
    Ok(Settled { rows, lost })
}
