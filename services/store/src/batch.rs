//! The per-batch transaction ([`Store::apply_batch`]): its read half
//! ([`crate::open::open_batch`]), the rules (in `collections_core`), and its write half,
//! one statement ([`WRITE_BATCH_SQL`]).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::LazyLock,
};

use collections_core::{
    contact::{Attempt, Ledger},
    decide,
    decide::reflow,
    netting::Netted,
    outbound::OutboundMessage,
    AccountState, DomainError, Event, EventBody, Policy, Task,
};
use jiff::Timestamp;
use jiff_sqlx::{Timestamp as Ts, ToSqlx};
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::{
    guard::AbandonGuard,
    open::open_batch,
    outbox::{bind_outbox, outbox_ctes, sent_ids, OutboxRow},
    Leases, Store, StoreError,
};

/// What happened to one event of a batch.
#[derive(Debug)]
pub enum Outcome {
    /// Applied; these outbox rows were committed with it.
    Applied(Vec<OutboxRow>),
    /// Its id was applied before: nothing changed.
    Duplicate,
    /// The rules refused it; nothing changed (dead-letter it).
    Rejected(DomainError),
    /// Not applied, nothing changed: its rules would cancel or re-rank this task, which a
    /// scheduler is firing at this moment (claimed, not yet confirmed). Apply it again
    /// shortly, once the firing has settled (the task emitted, or its claim returned; a
    /// claim older than the claim timeout is returned by the next attempt itself). The
    /// batch's events of other accounts are applied as usual.
    Deferred(Uuid),
}

/// The result of [`Store::apply_batch`].
#[derive(Debug)]
pub struct Batch {
    /// One outcome per input event, in input order.
    pub outcomes: Vec<Outcome>,
    /// Earliest `due_at` among the tasks planned (to decide whether to wake the scheduler).
    pub earliest_due: Option<Timestamp>,
    /// Where the transaction's time went.
    pub steps: BatchSteps,
}

/// Wall time of each step of a batch transaction, as its caller saw it (round trips
/// included): what an operator needs to tell a slow database from a busy machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchSteps {
    /// `BEGIN`.
    pub begin: std::time::Duration,
    /// The read half: inbox rows, account locks, open tasks.
    pub read: std::time::Duration,
    /// The rules, in this process.
    pub decide: std::time::Duration,
    /// The write half, one statement.
    pub write: std::time::Duration,
    /// `COMMIT`, the WAL flush included.
    pub commit: std::time::Duration,
}

impl BatchSteps {
    /// The steps with their names, in order.
    #[must_use]
    pub fn named(&self) -> [(&'static str, std::time::Duration); 5] {
        [
            ("begin", self.begin),
            ("read", self.read),
            ("decide", self.decide),
            ("write", self.write),
            ("commit", self.commit),
        ]
    }
}

impl Store {
    /// Applies a batch of events in one transaction and returns one outcome per event, in
    /// input order. Events of one account are applied in input order.
    ///
    /// Four round trips whatever the batch holds: `BEGIN`, the read half
    /// (`collections_open_batch`: inbox, account locks, open tasks), the write half (one
    /// statement, see [`Writes::write`]) and `COMMIT`.
    ///
    /// # Errors
    /// A database error: nothing was committed; retry the whole batch.
    ///
    /// Cancel-safe: a caller that gives up on it (a timeout) leaves no transaction behind.
    /// The connection of abandoned work is closed, not returned to the pool, because the
    /// server may still be running a statement of it, `BEGIN` included (sqlx does not roll
    /// back a `BEGIN` it was cancelled while sending).
    pub async fn apply_batch(
        &self,
        events: &[Event],
        policy: &Policy,
        now: Timestamp,
    ) -> Result<Batch, StoreError> {
        let mut conn = AbandonGuard::acquire(&self.pool).await?;
        let result = apply_batch_on(conn.conn(), events, policy, now, self.leases).await;
        conn.release();
        result
    }
}

/// The batch's write statement ([`Writes::write`]): parameters `$1`–`$31` (the tasks'
/// revisions last, `$29`–`$31`), then the outbox's six from `$32` ([`outbox_ctes`]), then
/// the tasks' contact points (`$38`) and the contact ledger's attempts (`$39`–`$44`). Updates keyed by task ids guard with
/// `(status = …) IS TRUE` rather than `status = …`: the latter matches the partial
/// indexes' predicates, and the generic plan then hash-joins the ids against a scan of
/// every scheduled task instead of probing the primary key (BENCHMARKS.md, "Where the
/// time goes").
pub(crate) static WRITE_BATCH_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH
             acc AS (
                 UPDATE accounts a SET state = u.state::jsonb, status = u.status,
                        overdue_minor = u.overdue, policy_version = $5, updated_at = now()
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
                      AS u(id, state, status, overdue)
                 WHERE a.account_id = u.id),
             new_tasks AS (
                 INSERT INTO tasks (task_id, account_id, kind, channel, due_at, priority, tone,
                                    reason, promise_id, cause_event_id, attempt, policy_version,
                                    status, cancelled_at, cancel_reason, revision,
                                    contact_point_id)
                 SELECT id, acct, kind, ch, due, prio, tone, why, promise, cause, att, ver,
                        CASE WHEN cancel IS NULL THEN 'scheduled' ELSE 'cancelled' END,
                        CASE WHEN cancel IS NULL THEN NULL ELSE now() END, cancel, rev, point
                 FROM unnest($6::uuid[], $7::text[], $8::text[], $9::text[],
                             $10::timestamptz[], $11::smallint[], $12::text[], $13::text[],
                             $14::text[], $15::uuid[], $16::int[], $17::text[], $18::text[],
                             $29::int[], $38::text[])
                      AS t(id, acct, kind, ch, due, prio, tone, why, promise, cause, att, ver,
                           cancel, rev, point)
                 ON CONFLICT (task_id) DO NOTHING),
             ledgered AS (
                 INSERT INTO contact_attempts (debtor_id, attempt_id, account_id, attempt,
                                               started_at, recorded_at, event_id)
                 SELECT d, a, acct, doc::jsonb, started, $28, ev
                 FROM unnest($39::text[], $40::text[], $41::text[], $42::text[],
                             $43::timestamptz[], $44::uuid[])
                      AS l(d, a, acct, doc, started, ev)
                 ON CONFLICT (debtor_id, attempt_id) DO UPDATE
                     SET account_id = EXCLUDED.account_id, attempt = EXCLUDED.attempt,
                         started_at = EXCLUDED.started_at, recorded_at = EXCLUDED.recorded_at,
                         event_id = EXCLUDED.event_id),
             linked AS (
                 INSERT INTO debtor_accounts (debtor_id, account_id)
                 SELECT DISTINCT d, acct FROM unnest($39::text[], $41::text[]) AS l(d, acct)
                 ON CONFLICT DO NOTHING),
             cancelled AS (
                 UPDATE tasks t SET status = 'cancelled', cancelled_at = now(),
                        cancel_reason = c.reason, revision = c.rev
                 FROM unnest($19::uuid[], $20::text[], $30::int[]) AS c(id, reason, rev)
                 WHERE t.task_id = c.id AND (t.status = 'scheduled') IS TRUE),
             reranked AS (
                 UPDATE tasks t SET priority = r.p, revision = r.rev
                 FROM unnest($21::uuid[], $22::smallint[], $31::int[]) AS r(id, p, rev)
                 WHERE t.task_id = r.id AND (t.status = 'scheduled') IS TRUE),
             noted AS (
                 INSERT INTO journal (account_id, event_id, kind, detail, task_id,
                                      policy_version, decided_at)
                 SELECT a, e, k, d, t, $5, $28
                 FROM unnest($23::text[], $24::uuid[], $25::text[], $26::text[], $27::uuid[])
                      WITH ORDINALITY AS j(a, e, k, d, t, n)
                 ORDER BY n),
             {}
         SELECT id, event_id FROM sent",
        outbox_ctes(32)
    )
});

/// The batch transaction of [`Store::apply_batch`] on one connection.
async fn apply_batch_on(
    conn: &mut PgConnection,
    events: &[Event],
    policy: &Policy,
    now: Timestamp,
    leases: Leases,
) -> Result<Batch, StoreError> {
    let mut steps = BatchSteps::default();
    let mut lap = std::time::Instant::now();
    let mut step = |d: &mut std::time::Duration| {
        let now = std::time::Instant::now();
        *d = now - lap;
        lap = now;
    };
    let mut tx = conn.begin().await?;
    step(&mut steps.begin);
    let opened = open_batch(&mut tx, events, leases.claim_secs).await?;
    step(&mut steps.read);
    let (fresh, states, open, firing, ledgers) = (
        opened.fresh,
        opened.states,
        opened.open,
        opened.firing,
        opened.ledgers,
    );

    let version = policy.version();
    // A task being fired is neither cancelled nor re-ranked under the scheduler's feet.
    // The events of an account whose decisions would do so are deferred (not applied;
    // the caller retries them once the firing has settled, so their decision sees the
    // task emitted, or scheduled again); the rest of the batch is decided again without
    // them and committed. Accounts are decided independently, so this settles after as
    // many rounds as there are such accounts, one in practice.
    let decided = if firing.is_empty() {
        // The common case: decided once, on the states and tasks as read.
        decide_batch(
            events,
            &fresh,
            (states, open, &ledgers),
            &HashMap::new(),
            policy,
            now,
        )
    } else {
        let owner: HashMap<Uuid, &str> = open
            .values()
            .flatten()
            .filter(|t| firing.contains(&t.task_id))
            .map(|t| (t.task_id, t.account_id.as_str()))
            .collect();
        let mut deferred: HashMap<String, Uuid> = HashMap::new();
        loop {
            let d = decide_batch(
                events,
                &fresh,
                (states.clone(), open.clone(), &ledgers),
                &deferred,
                policy,
                now,
            );
            let hits: Vec<Uuid> = d.w.net.touched().filter(|id| firing.contains(id)).collect();
            if hits.is_empty() {
                break d;
            }
            let before = deferred.len();
            for id in hits {
                if let Some(account) = owner.get(&id) {
                    deferred.entry((*account).to_owned()).or_insert(id);
                }
            }
            if deferred.len() == before {
                // Not reached (every task being fired belongs to an account of the
                // batch); should it be, the whole batch is rolled back and retried.
                let id = d.w.net.touched().find(|id| firing.contains(id));
                return Err(StoreError::TaskFiring(id.unwrap_or_default()));
            }
        }
    };
    let Decided {
        w,
        outcomes,
        states,
    } = decided;
    let earliest_due = w.net.earliest_due();
    step(&mut steps.decide);
    let (rows, origins) = w
        .write(&mut tx, &states, version, now, leases.outbox_secs)
        .await?;
    step(&mut steps.write);
    tx.commit().await?;
    step(&mut steps.commit);

    let mut per_event: BTreeMap<usize, Vec<OutboxRow>> = BTreeMap::new();
    for (origin, row) in origins.into_iter().zip(rows) {
        if let Some(i) = origin {
            per_event.entry(i).or_default().push(row);
        }
    }
    let outcomes = outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            o.unwrap_or_else(|| Outcome::Applied(per_event.remove(&i).unwrap_or_default()))
        })
        .collect();
    Ok(Batch {
        outcomes,
        earliest_due,
        steps,
    })
}

/// The rules' decisions for a batch, before they are written.
struct Decided {
    w: Writes,
    /// One per event: `None` for an applied event (its outbox rows are known after the
    /// write).
    outcomes: Vec<Option<Outcome>>,
    /// Every locked account's state after the batch (deferred accounts left out: nothing
    /// of theirs is written).
    states: HashMap<String, Option<AccountState>>,
}

/// Runs the rules over the batch's new events, in input order, on copies of the accounts'
/// states and open tasks. The events of `deferred` accounts are not decided: their
/// outcome is [`Outcome::Deferred`] with the task being fired, and their inbox rows are
/// removed with the rejected events' (so the retry finds them new).
///
/// Each decision sees its debtor's contact ledger as the batch has left it; a contact
/// attempt's decision is followed by [`reflow`] of the debtor's other locked accounts
/// (their calls that now break a cap move too).
#[allow(clippy::type_complexity)]
fn decide_batch(
    events: &[Event],
    fresh: &HashSet<(Uuid, String)>,
    (mut states, mut open, ledgers): (
        HashMap<String, Option<AccountState>>,
        HashMap<String, Vec<Task>>,
        &HashMap<String, Ledger>,
    ),
    deferred: &HashMap<String, Uuid>,
    policy: &Policy,
    now: Timestamp,
) -> Decided {
    states.retain(|account, _| !deferred.contains_key(account));
    let mut ledgers = ledgers.clone();
    let mut w = Writes::default();
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(events.len());
    let mut seen = HashSet::new();
    for (i, e) in events.iter().enumerate() {
        // CloudEvents identify an event by source and id together.
        let key = (e.id, e.source.as_str());
        if !fresh.contains(&(e.id, e.source.clone())) || !seen.insert(key) {
            outcomes.push(Some(Outcome::Duplicate));
            continue;
        }
        if let Some(task) = deferred.get(&e.account_id) {
            w.rejected.push((e.id, e.source.clone()));
            outcomes.push(Some(Outcome::Deferred(*task)));
            continue;
        }
        let mut prev = states.get(&e.account_id).cloned().flatten();
        // The ledger of the debtor the event counts against: an attempt's own, else the
        // one the account's state names.
        let debtor = match &e.body {
            EventBody::ContactAttempted(d) => Some(d.debtor().to_owned()),
            _ => prev.as_ref().and_then(|s| s.debtor_id.clone()),
        };
        if let (Some(s), Some(l)) = (prev.as_mut(), debtor.as_ref().and_then(|d| ledgers.get(d))) {
            s.ledger = l.clone();
        }
        let tasks = open.entry(e.account_id.clone()).or_default();
        match decide(prev.as_ref(), tasks, e, policy, now) {
            Err(rejection) => {
                w.rejected.push((e.id, e.source.clone()));
                outcomes.push(Some(Outcome::Rejected(rejection)));
            }
            Ok(d) => {
                w.net.absorb(
                    tasks,
                    &e.account_id,
                    e.id,
                    Some(i),
                    d.schedule,
                    d.cancel,
                    &d.reprioritise,
                    d.journal,
                    d.outbox,
                );
                let contacted = !d.ledger.is_empty();
                let debtor = d.state.debtor().to_owned();
                states.insert(e.account_id.clone(), Some(d.state));
                outcomes.push(None);
                if contacted {
                    let ledger = ledgers.entry(debtor.clone()).or_default();
                    for a in &d.ledger {
                        ledger.upsert(a.clone());
                    }
                    w.ledger.extend(d.ledger);
                    reflow_siblings(
                        (&e.account_id, &debtor, e.id, i),
                        &mut states,
                        &mut open,
                        &ledgers,
                        &mut w,
                        (policy, now),
                    );
                }
            }
        }
    }
    Decided {
        w,
        outcomes,
        states,
    }
}

/// After a contact attempt on `account` (event `cause`, the batch's `i`-th): the debtor's
/// other locked accounts get their calls that now break a cap moved ([`reflow`]).
fn reflow_siblings(
    (account, debtor, cause, i): (&str, &str, Uuid, usize),
    states: &mut HashMap<String, Option<AccountState>>,
    open: &mut HashMap<String, Vec<Task>>,
    ledgers: &HashMap<String, Ledger>,
    w: &mut Writes,
    (policy, now): (&Policy, Timestamp),
) {
    let Some(ledger) = ledgers.get(debtor) else {
        return;
    };
    let mut siblings: Vec<String> = states
        .iter()
        .filter(|(id, s)| {
            id.as_str() != account
                && s.as_ref()
                    .is_some_and(|s| s.debtor_id.as_deref() == Some(debtor))
        })
        .map(|(id, _)| id.clone())
        .collect();
    siblings.sort_unstable();
    for sibling in siblings {
        let Some(Some(mut state)) = states.get(&sibling).cloned() else {
            continue;
        };
        state.ledger = ledger.clone();
        let tasks = open.entry(sibling.clone()).or_default();
        let d = reflow(&state, tasks, cause, policy, now);
        w.net.absorb(
            tasks,
            &sibling,
            cause,
            Some(i),
            d.schedule,
            d.cancel,
            &d.reprioritise,
            d.journal,
            d.outbox,
        );
        states.insert(sibling, Some(d.state));
    }
}

/// Everything one transaction writes once the rules have run: the decisions netted by
/// `collections_core::netting` (every row written by exactly one part of one statement),
/// and the events the rules refused.
#[derive(Default)]
pub(crate) struct Writes {
    /// The decisions, netted.
    pub(crate) net: Netted,
    /// Events refused by the rules or deferred, by id and source: their inbox rows are
    /// removed so a replay (or the retry) applies them.
    pub(crate) rejected: Vec<(Uuid, String)>,
    /// Contact attempts to record in the ledger.
    pub(crate) ledger: Vec<Attempt>,
}

impl Writes {
    /// Writes accounts, tasks (new, cancelled, re-ranked), journal and outbox in one
    /// statement of data-modifying CTEs, and removes the inbox rows of refused events.
    /// Returns the outbox rows in input order, with the origin of each.
    pub(crate) async fn write(
        self,
        tx: &mut Transaction<'_, Postgres>,
        states: &HashMap<String, Option<AccountState>>,
        version: &str,
        now: Timestamp,
        lease_secs: f64,
    ) -> Result<(Vec<OutboxRow>, Vec<Option<usize>>), StoreError> {
        let mut acc_ids = Vec::new();
        let mut docs = Vec::new();
        let mut statuses = Vec::new();
        let mut overdue = Vec::new();
        for (id, s) in states {
            let Some(s) = s else { continue };
            acc_ids.push(id.as_str());
            // Never an empty document or status in place of one that failed to serialise:
            // the row would be unreadable on its next use.
            let unwritable =
                |e: &dyn std::fmt::Display| StoreError::state(format!("account {id}: {e}"));
            docs.push(serde_json::to_string(s).map_err(|e| unwritable(&e))?);
            statuses.push(
                serde_json::to_value(s.status)
                    .map_err(|e| unwritable(&e))?
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| unwritable(&"status does not serialise as text"))?,
            );
            overdue.push(s.overdue_minor);
        }
        if acc_ids.is_empty() && self.rejected.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let tasks = self.net.new_tasks();
        let strings =
            |f: &dyn Fn(&Task) -> String| tasks.iter().map(|(t, _)| f(t)).collect::<Vec<String>>();
        let t_ids: Vec<Uuid> = tasks.iter().map(|(t, _)| t.task_id).collect();
        let t_due: Vec<Ts> = tasks.iter().map(|(t, _)| t.due_at.to_sqlx()).collect();
        let t_prio: Vec<i16> = tasks.iter().map(|(t, _)| i16::from(t.priority)).collect();
        let t_promise: Vec<Option<&str>> =
            tasks.iter().map(|(t, _)| t.promise_id.as_deref()).collect();
        let t_cause: Vec<Uuid> = tasks.iter().map(|(t, _)| t.cause_event_id).collect();
        let t_attempt: Vec<i32> = tasks
            .iter()
            .map(|(t, _)| i32::try_from(t.attempt).unwrap_or(i32::MAX))
            .collect();
        let t_cancel: Vec<Option<&str>> = tasks.iter().map(|(_, c)| c.as_deref()).collect();
        let revision = |r: u32| i32::try_from(r).unwrap_or(i32::MAX);
        let t_revision: Vec<i32> = tasks.iter().map(|(t, _)| revision(t.revision)).collect();
        let c_ids: Vec<Uuid> = self.net.cancellations().iter().map(|c| c.0).collect();
        let c_reasons: Vec<&str> = self
            .net
            .cancellations()
            .iter()
            .map(|c| c.1.change.as_str())
            .collect();
        let c_revision: Vec<i32> = self
            .net
            .cancellations()
            .iter()
            .map(|c| revision(c.1.revision))
            .collect();
        let r_ids: Vec<Uuid> = self.net.reranks().keys().copied().collect();
        let r_prio: Vec<i16> = self
            .net
            .reranks()
            .values()
            .map(|r| i16::from(r.change))
            .collect();
        let r_revision: Vec<i32> = self
            .net
            .reranks()
            .values()
            .map(|r| revision(r.revision))
            .collect();
        let j = self.net.journal();
        let j_accounts: Vec<&str> = j.iter().map(|e| e.0.as_str()).collect();
        let j_events: Vec<Uuid> = j.iter().map(|e| e.1).collect();
        let j_kinds: Vec<&str> = j.iter().map(|e| e.2.kind).collect();
        let j_details: Vec<&str> = j.iter().map(|e| e.2.detail.as_str()).collect();
        let j_tasks: Vec<Option<Uuid>> = j.iter().map(|e| e.2.task_id).collect();
        let outbox: Vec<&OutboundMessage> = self.net.outbox().iter().map(|m| &m.1).collect();
        let t_point: Vec<Option<&str>> = tasks
            .iter()
            .map(|(t, _)| t.contact_point_id.as_deref())
            .collect();
        let attempts = crate::ledger::dedup(&self.ledger);
        let l_docs = attempts
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| StoreError::state(format!("a contact attempt: {e}")))?;
        // Built at runtime (the outbox CTEs are shared): not checked at build time.
        let q = sqlx::query(WRITE_BATCH_SQL.as_str())
            .bind(&acc_ids)
            .bind(&docs)
            .bind(&statuses)
            .bind(&overdue)
            .bind(version)
            .bind(&t_ids)
            .bind(strings(&|t| t.account_id.clone()))
            .bind(strings(&|t| t.kind.as_str().to_owned()))
            .bind(strings(&|t| t.channel.as_str().to_owned()))
            .bind(&t_due)
            .bind(&t_prio)
            .bind(strings(&|t| t.tone.as_str().to_owned()))
            .bind(strings(&|t| t.reason.clone()))
            .bind(&t_promise)
            .bind(&t_cause)
            .bind(&t_attempt)
            .bind(strings(&|t| t.policy_version.clone()))
            .bind(&t_cancel)
            .bind(&c_ids)
            .bind(&c_reasons)
            .bind(&r_ids)
            .bind(&r_prio)
            .bind(&j_accounts)
            .bind(&j_events)
            .bind(&j_kinds)
            .bind(&j_details)
            .bind(&j_tasks)
            .bind(now.to_sqlx())
            .bind(&t_revision)
            .bind(&c_revision)
            .bind(&r_revision);
        let rows = bind_outbox(q, &outbox, lease_secs)?
            .bind(&t_point)
            .bind(
                attempts
                    .iter()
                    .map(|a| a.debtor_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                attempts
                    .iter()
                    .map(|a| a.attempt_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                attempts
                    .iter()
                    .map(|a| a.account_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(&l_docs)
            .bind(
                attempts
                    .iter()
                    .map(|a| a.started_at.to_sqlx())
                    .collect::<Vec<Ts>>(),
            )
            .bind(attempts.iter().map(|a| a.event_id).collect::<Vec<Uuid>>())
            .fetch_all(&mut **tx)
            .await?;
        if !self.rejected.is_empty() {
            // Rare (the rules refused an event), so a statement of its own: inside the
            // one above, a generic plan may scan the whole inbox on every batch.
            let (ids, sources): (Vec<Uuid>, Vec<String>) = self.rejected.into_iter().unzip();
            sqlx::query!(
                "DELETE FROM inbox WHERE (event_id, source) IN
                     (SELECT * FROM unnest($1::uuid[], $2::text[]))",
                &ids,
                &sources,
            )
            .execute(&mut **tx)
            .await?;
        }
        let by_event = sent_ids(&rows)?;
        let mut out = Vec::with_capacity(rows.len());
        let mut origins = Vec::with_capacity(rows.len());
        for (origin, m) in self.net.outbox() {
            if let Some(id) = by_event.get(&m.event_id) {
                out.push(OutboxRow {
                    id: *id,
                    event_id: m.event_id,
                    exchange: m.exchange.to_owned(),
                    routing_key: m.routing_key.clone(),
                    body: m.body.clone(),
                    lease: 0,
                });
                origins.push(*origin);
            }
        }
        Ok((out, origins))
    }
}
