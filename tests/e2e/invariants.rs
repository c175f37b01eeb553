//! The delivery invariants of the fault-injection tests, checked from the database and
//! from what reached `collections.tasks`:
//!
//! - every input event applied exactly once (its inbox row, one `event_applied` line);
//!   the only other inputs are the scheduler's own `promise.broken` (expired), one per
//!   emitted expiry task;
//! - every committed task event (outbox row) published and received;
//! - every emitted task announced due exactly once by CloudEvents id, and no `task.due`
//!   for a task that is not emitted;
//! - per task at most one distinct id per transition: `task.scheduled` (the plan),
//!   `task.due`, `task.cancelled`; re-announcements (a move at firing time, a new rank)
//!   carry ids of their own by design and must be derived from what caused them;
//! - no `task.due` fired outside 08:00-21:00 in the account's zone;
//! - no delinquent account without a next step: with no promise pending, a follow-up
//!   task is open;
//! - nothing dead-lettered, on any inbound queue;
//! - no phone task fired beyond a contact cap in force when it fired, and no contact task
//!   fired while a hold or restriction covering it was in force (`contacts`, issues 18
//!   and 19);
//! - each instalment's expiry fired once, nothing fired for a kept instalment, no
//!   instalment left unjudged, misses and outcomes counted once (`arrangements`, issue
//!   22).
//!
//! Delivery to the exchange is at-least-once with stable ids, so a copy of an id received
//! twice (a publish repeated after a crash) is counted and reported, never failed on.
//!
//! The types of what was observed are in `observed`, the database reads in `read`.

mod arrangements;
mod contacts;
mod observed;
mod read;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use jiff::{tz::TimeZone, Timestamp};
use serde_json::Value;
use uuid::Uuid;

use crate::harness::TestEnv;
pub use contacts::Caps;
use observed::{derived, expiry_event_id, ts, uuid};
pub use observed::{Observed, Received, Summary, Transition};
use read::{count, ids, internal, pending, tasks};

/// The inbound queues (each has a `<queue>.dlq`).
pub const QUEUES: [&str; 12] = [
    "collections.payment-failed",
    "collections.promise-made",
    "collections.promise-broken",
    "collections.payment-received",
    "collections.contact-attempted",
    "collections.hold-placed",
    "collections.hold-released",
    "collections.contact-restricted",
    "collections.contact-unrestricted",
    "collections.arrangement-made",
    "collections.arrangement-cancelled",
    "collections.payment-reversed",
];

/// The kind of a promise's expiry task.
const PROMISE_EXPIRY: &str = "promise_expiry";

/// The outbox rows bound for `collections.tasks`.
const TASK_OUTBOX: &str = "SELECT event_id FROM outbox WHERE exchange = 'collections.tasks'";

/// The contact window of the default policy (local wall-clock minutes, end exclusive).
const WINDOW_MINUTES: std::ops::Range<i32> = 8 * 60..21 * 60;

/// What a test did, for the check.
pub struct Expect<'a> {
    /// Ids of every input event the test published (and expects applied).
    pub inputs: &'a [Uuid],
    /// A scheduler ran to the end: every task that came due must have been fired or moved.
    pub scheduler: bool,
    /// How long to wait for the system to settle before judging.
    pub settle: Duration,
    /// A scheduler may have died (or lost its link) between publishing `task.due` and
    /// marking the task emitted. Such a claim is taken back after the claim timeout and the
    /// rules may cancel the task: its `task.due` then stands retracted by a later
    /// `task.cancelled` (ARCHITECTURE.md, "Tasks being fired"). Allowed only then, and
    /// only in that order.
    pub crashed_firings: bool,
    /// With a scheduler: the last instant at which the test's tasks come due (later ones
    /// are planned for another day). Settled means nothing due up to then is unfired.
    pub horizon: Option<Timestamp>,
    /// The contact caps of the policy the test runs with.
    pub caps: Caps,
}

/// Waits for the system to settle, then checks every invariant; panics listing every
/// violation (with the summary) when one fails.
pub async fn verify(env: &TestEnv, expect: &Expect<'_>) -> Observed {
    let started = Instant::now();
    let deadline = started + expect.settle;
    let mut still = pending(env, expect).await;
    while !still.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        still = pending(env, expect).await;
    }
    let settled_after = started.elapsed();
    // Let copies in flight (a repeated publish, a straggling confirm) arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut v = Violations::default();
    if !still.is_empty() {
        v.push(
            "settled",
            format!("not settled after {:?}: {still:?}", expect.settle),
        );
        // What may hold things up: sessions left inside a transaction (their locks make
        // `SKIP LOCKED` claims pass rows over), and the outbox rows still waiting.
        let stuck: Vec<(i32, String, String, f64, String)> = sqlx::query_as(
            "SELECT pid, coalesce(application_name, ''), coalesce(state, ''),
                    extract(epoch FROM now() - state_change)::float8, left(query, 160)
             FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND state LIKE 'idle in transaction%'",
        )
        .fetch_all(&env.db)
        .await
        .unwrap_or_default();
        for s in stuck {
            v.push("settled", format!("session left in a transaction: {s:?}"));
        }
        let waiting: Vec<(i64, Uuid, f64)> = sqlx::query_as(
            "SELECT o.id, o.event_id, extract(epoch FROM p.lease_until - now())::float8
             FROM outbox_pending p JOIN outbox o ON o.id = p.id ORDER BY p.id LIMIT 5",
        )
        .fetch_all(&env.db)
        .await
        .unwrap_or_default();
        for w in waiting {
            v.push(
                "settled",
                format!("unpublished outbox row (id, event id, lease left s): {w:?}"),
            );
        }
    }
    let mut observed = judge(env, expect, &mut v, settled_after).await;
    let world = contacts::read(env, &observed, expect.caps).await;
    observed.summary.attempts = world.attempts.len();
    observed.summary.holds = world.accounts.values().map(|a| a.holds.len()).sum();
    observed.summary.restrictions = world.accounts.values().map(|a| a.restrictions.len()).sum();
    observed.summary.phone_firings = world
        .firings
        .iter()
        .filter(|f| f.channel.starts_with("phone_"))
        .count();
    for x in contacts::cap_violations(&world) {
        v.push("no phone task fired beyond a cap in force", x);
    }
    for x in contacts::hold_violations(&world) {
        v.push(
            "no contact task fired under a hold or restriction in force",
            x,
        );
    }
    let (plans, broken) = arrangements::check(env).await;
    observed.summary.arrangements = plans.arrangements;
    observed.summary.arrangements_kept = plans.kept;
    observed.summary.arrangements_broken = plans.broken;
    observed.summary.instalments = plans.instalments;
    observed.summary.instalment_expiries = plans.expiries_fired;
    for (what, x) in broken {
        v.push(what, x);
    }
    if !v.0.is_empty() {
        let mut text = String::new();
        for (what, list) in &v.0 {
            text.push_str(&format!("\n  {what}: {} violation(s)", list.len()));
            for item in list.iter().take(12) {
                text.push_str(&format!("\n    - {item}"));
            }
        }
        panic!(
            "invariants violated (logs in {}):{text}\n  summary: {}",
            env.log_dir.display(),
            observed.summary
        );
    }
    observed
}

#[derive(Default)]
struct Violations(BTreeMap<&'static str, Vec<String>>);

impl Violations {
    fn push(&mut self, what: &'static str, detail: String) {
        self.0.entry(what).or_default().push(detail);
    }
}

#[allow(clippy::too_many_lines)]
async fn judge(
    env: &TestEnv,
    expect: &Expect<'_>,
    v: &mut Violations,
    settled_after: Duration,
) -> Observed {
    let mut s = Summary {
        inputs: expect.inputs.len(),
        settled_after,
        ..Summary::default()
    };
    let tasks = tasks(env).await;
    for t in tasks.values() {
        *s.tasks_by_status.entry(t.status.clone()).or_default() += 1;
    }

    // Inputs: applied exactly once; the only other inbox rows are emitted expiries.
    let inbox_rows: Vec<(Uuid, String)> = sqlx::query_as("SELECT event_id, account_id FROM inbox")
        .fetch_all(&env.db)
        .await
        .expect("inbox");
    s.inbox = inbox_rows.len();
    let inbox: HashSet<Uuid> = inbox_rows.iter().map(|r| r.0).collect();
    let inputs: HashSet<Uuid> = expect.inputs.iter().copied().collect();
    for id in inputs.difference(&inbox) {
        v.push("every input applied", format!("{id} has no inbox row"));
    }
    // A promise's expiry is applied as a `promise.broken` of its own (an inbox row); an
    // instalment's is applied by the scheduler in the transaction that marks it emitted.
    let expiries: HashSet<Uuid> = tasks
        .iter()
        .filter(|(_, t)| t.kind == PROMISE_EXPIRY && t.status == "emitted")
        .map(|(id, _)| expiry_event_id(*id))
        .collect();
    s.expiries = expiries.len();
    for id in expiries.difference(&inbox) {
        v.push(
            "every expiry applied",
            format!("promise.broken (expired) {id} of an emitted expiry task was not applied"),
        );
    }
    // An expiry whose firing was cut short (its `promise.broken` published, the task not
    // yet marked emitted) may be taken back after the claim timeout and then cancelled by
    // a payment: the internal counterpart of a retracted `task.due`.
    let expiry_tasks: HashMap<Uuid, &str> = tasks
        .iter()
        .filter(|(_, t)| t.kind == PROMISE_EXPIRY)
        .map(|(id, t)| (expiry_event_id(*id), t.status.as_str()))
        .collect();
    for id in inbox.difference(&inputs) {
        if expiries.contains(id) {
            continue;
        }
        match expiry_tasks.get(id) {
            Some(&"cancelled") if expect.crashed_firings => s.expiries_retracted += 1,
            Some(status) => v.push(
                "no unexpected input",
                format!("inbox row {id} is the expiry of a task that is {status}, not emitted"),
            ),
            None => v.push(
                "no unexpected input",
                format!("inbox row {id} is neither a published input nor an expiry"),
            ),
        }
    }
    // The line that applies an event: `event_applied`, or for the events of issues 18 and
    // 19 the line named after the event (`contact_attempted`, `hold_placed`, ...) when it
    // changed something (a disposition's hold adds a `hold_placed` line to its
    // `contact.attempted`, which is not a second application).
    let applied: Vec<(Uuid, i64, String, String, String)> = sqlx::query_as(
        "SELECT i.event_id, count(j.id), i.event_type, i.account_id,
                coalesce((SELECT string_agg(k.kind, ',' ORDER BY k.id) FROM journal k
                          WHERE k.event_id = i.event_id), '')
         FROM inbox i
         LEFT JOIN journal j ON j.event_id = i.event_id
              AND (j.kind = 'event_applied'
                   OR (j.kind = replace(i.event_type, '.', '_')
                       AND i.event_type IN ('contact.attempted', 'hold.placed', 'hold.released',
                                            'contact.restricted', 'contact.unrestricted')))
         GROUP BY i.event_id, i.event_type, i.account_id HAVING count(j.id) <> 1",
    )
    .fetch_all(&env.db)
    .await
    .expect("journal");
    for (id, n, ty, account, lines) in applied {
        v.push(
            "each input applied exactly once",
            format!(
                "{ty} {id} on {account}: {n} event_applied journal lines (its lines: [{lines}])"
            ),
        );
    }
    let orphans = count(
        env,
        "SELECT count(*) FROM journal j WHERE kind = 'event_applied'
         AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.event_id = j.event_id)",
    )
    .await;
    if orphans > 0 {
        v.push(
            "each input applied exactly once",
            format!("{orphans} event_applied journal lines without an inbox row"),
        );
    }

    // What reached the exchange, by id.
    let all = env.tasks.all();
    s.received_copies = all.len();
    let mut by_id: HashMap<Uuid, Vec<&Value>> = HashMap::new();
    let mut first_seen: HashMap<Uuid, usize> = HashMap::new();
    for (n, e) in all.iter().enumerate() {
        match uuid(&e["id"]) {
            Some(id) => {
                first_seen.entry(id).or_insert(n);
                by_id.entry(id).or_default().push(e);
            }
            None => v.push("well-formed", format!("task event without a UUID id: {e}")),
        }
    }
    s.distinct_ids = by_id.len();
    s.redelivered_copies = by_id.values().map(|c| c.len() - 1).sum();

    // Outbox: every committed row published and received; everything received that is
    // not a task.due came through the outbox. (The outbox also carries the arrangements'
    // outcomes to `collections.events`: published, judged by `arrangements`.)
    let outbox = ids(env, TASK_OUTBOX).await;
    s.outbox = outbox.len();
    let unpublished = count(env, "SELECT count(*) FROM outbox_pending").await;
    if unpublished > 0 {
        v.push(
            "every outbox row published",
            format!("{unpublished} rows unpublished"),
        );
    }
    for id in &outbox {
        if !by_id.contains_key(id) {
            v.push(
                "every outbox row received",
                format!("{id} never reached collections.tasks"),
            );
        }
    }

    // Causes an account's re-ranks may name: its inputs and its tasks' firings.
    let mut causes: HashMap<&str, Vec<Uuid>> = HashMap::new();
    for (id, account) in &inbox_rows {
        causes.entry(account.as_str()).or_default().push(*id);
    }
    for (id, copies) in &by_id {
        if copies[0]["type"] == "task.due" {
            if let Some(a) = copies[0]["subject"].as_str() {
                causes.entry(a).or_default().push(*id);
            }
        }
    }
    let moves: HashMap<Uuid, HashSet<Uuid>> = {
        let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT task_id, event_id FROM journal
             WHERE kind = 'task_moved' AND task_id IS NOT NULL AND event_id IS NOT NULL",
        )
        .fetch_all(&env.db)
        .await
        .expect("moves");
        let mut m: HashMap<Uuid, HashSet<Uuid>> = HashMap::new();
        for (task, event) in rows {
            m.entry(task).or_default().insert(event);
        }
        m
    };

    // Classify each distinct id.
    let mut received = Vec::with_capacity(by_id.len());
    for (id, copies) in &by_id {
        let first = copies[0];
        let ty = first["type"].as_str().unwrap_or_default().to_owned();
        let (Some(task_id), Some(due_at)) = (
            uuid(&first["data"]["task_id"]),
            ts(&first["data"]["due_at"]),
        ) else {
            v.push(
                "well-formed",
                format!("{id}: no task_id or due_at: {first}"),
            );
            continue;
        };
        for c in &copies[1..] {
            if c["type"] != first["type"]
                || c["data"]["task_id"] != first["data"]["task_id"]
                || c["data"]["due_at"] != first["data"]["due_at"]
            {
                v.push(
                    "one id, one event",
                    format!("{id} names two different events: {first} and {c}"),
                );
            }
        }
        let account = first["subject"].as_str().unwrap_or_default().to_owned();
        let priority = first["data"]["priority"].as_i64().unwrap_or(-1);
        let transition = match ty.as_str() {
            "task.due" => {
                if *id != derived("due", task_id, due_at) {
                    v.push(
                        "stable ids",
                        format!(
                            "task.due {id} of {task_id} is not derived from its task and due time"
                        ),
                    );
                }
                Transition::Due
            }
            "task.cancelled" => {
                if *id != derived("cancelled", task_id, due_at) {
                    v.push(
                        "stable ids",
                        format!("task.cancelled {id} of {task_id} is not derived from its task and due time"),
                    );
                }
                Transition::Cancelled
            }
            "task.scheduled" if *id == derived("scheduled", task_id, due_at) => Transition::Planned,
            "task.scheduled" if moves.get(&task_id).is_some_and(|m| m.contains(id)) => {
                Transition::Moved
            }
            "task.scheduled"
                if causes.get(account.as_str()).is_some_and(|cs| {
                    cs.iter().any(|c| {
                        *id == Uuid::new_v5(&task_id, format!("priority:{priority}:{c}").as_bytes())
                    })
                }) =>
            {
                Transition::Reranked
            }
            "task.scheduled" => {
                v.push(
                    "stable ids",
                    format!(
                        "task.scheduled {id} of {task_id} is neither its plan, a move journaled \
                         by the scheduler, nor a re-rank caused by one of its account's events: \
                         a duplicate announcement with a fresh id?"
                    ),
                );
                continue;
            }
            other => {
                v.push("well-formed", format!("{id}: unexpected type {other}"));
                continue;
            }
        };
        match transition {
            Transition::Planned => s.planned += 1,
            Transition::Moved => s.moved += 1,
            Transition::Reranked => s.reranked += 1,
            Transition::Due => s.due += 1,
            Transition::Cancelled => s.cancelled += 1,
        }
        received.push(Received {
            id: *id,
            task_id,
            account,
            transition,
            due_at,
            times: copies.iter().filter_map(|c| ts(&c["time"])).collect(),
            first_seen: first_seen.get(id).copied().unwrap_or(usize::MAX),
        });
    }

    // Per task: at most one distinct id per transition; due exactly once iff emitted.
    let mut per_task: HashMap<(Uuid, Transition), Vec<Uuid>> = HashMap::new();
    for r in &received {
        per_task
            .entry((r.task_id, r.transition))
            .or_default()
            .push(r.id);
    }
    for ((task, transition), list) in &per_task {
        let unique = matches!(
            transition,
            Transition::Planned | Transition::Due | Transition::Cancelled
        );
        if unique && list.len() > 1 {
            v.push(
                "one id per transition",
                format!(
                    "task {task}: {} distinct {transition:?} ids {list:?}",
                    list.len()
                ),
            );
        }
        if !tasks.contains_key(task) {
            v.push(
                "events name known tasks",
                format!("{transition:?} {list:?} names task {task}, which has no row"),
            );
        }
    }
    for (id, t) in &tasks {
        let due = per_task.get(&(*id, Transition::Due)).map_or(0, Vec::len);
        if internal(&t.kind) {
            if per_task.keys().any(|(task, _)| task == id) {
                v.push(
                    "internal tasks stay internal",
                    format!("{} {id} was published on collections.tasks", t.kind),
                );
            }
            continue;
        }
        if t.status == "emitted" && due != 1 && expect.scheduler {
            v.push(
                "every emitted task fired exactly once",
                format!(
                    "{} {id} (account {}, attempt {}) is emitted; {due} distinct task.due ids received",
                    t.kind, t.account, t.attempt
                ),
            );
        }
        let cancelled = per_task.contains_key(&(*id, Transition::Cancelled));
        // A firing cut short, then a cancellation: the due first, the cancellation last.
        let retracted =
            expect.crashed_firings && cancelled && due > 0 && t.status == "cancelled" && {
                let first = |tr| {
                    received
                        .iter()
                        .filter(|r| r.task_id == *id && r.transition == tr)
                        .map(|r| r.first_seen)
                        .min()
                        .unwrap_or(usize::MAX)
                };
                first(Transition::Due) < first(Transition::Cancelled)
            };
        if retracted {
            s.retracted += 1;
        }
        if t.status != "emitted" && due > 0 && !retracted {
            v.push(
                "nothing fired that is not emitted",
                format!(
                    "{} {id} (account {}) is {} but task.due was received",
                    t.kind, t.account, t.status
                ),
            );
        }
        if cancelled && due > 0 && !retracted {
            v.push(
                "never both fired and cancelled",
                format!(
                    "{} {id} (account {}, now {}): task.cancelled and task.due both received",
                    t.kind, t.account, t.status
                ),
            );
        }
        if cancelled && t.status != "cancelled" {
            v.push(
                "a cancellation announced is a cancellation made",
                format!(
                    "{} {id} (account {}): task.cancelled received but the row is {}",
                    t.kind, t.account, t.status
                ),
            );
        }
        if expect.scheduler && t.status == "claimed" {
            v.push(
                "no claim left behind",
                format!("{} {id} is still claimed", t.kind),
            );
        }
    }

    // The journal's cancellations happened.
    let unmade: Vec<(Uuid, String, String, String)> = sqlx::query_as(
        "SELECT t.task_id, t.kind, t.account_id, t.status FROM journal j
         JOIN tasks t ON t.task_id = j.task_id
         WHERE j.kind = 'task_cancelled' AND t.status <> 'cancelled'",
    )
    .fetch_all(&env.db)
    .await
    .expect("journal cancellations");
    for (id, kind, account, status) in unmade {
        v.push(
            "a cancellation announced is a cancellation made",
            format!("{kind} {id} (account {account}): journal says cancelled, the row is {status}"),
        );
    }

    // Calls: never two open per account; one call at most per cause (an event, a firing)
    // and account (a contact moves the calls of every account of its debtor).
    let doubled: Vec<(String, i64)> = sqlx::query_as(
        "SELECT account_id, count(*) FROM tasks
         WHERE kind = 'collection_call' AND status IN ('scheduled', 'claimed')
         GROUP BY account_id HAVING count(*) > 1",
    )
    .fetch_all(&env.db)
    .await
    .expect("q");
    for (account, n) in doubled {
        v.push(
            "never a second open call",
            format!("account {account} has {n} open calls"),
        );
    }
    let twice: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT cause_event_id, count(*) FROM tasks WHERE kind = 'collection_call'
         GROUP BY cause_event_id, account_id HAVING count(*) > 1",
    )
    .fetch_all(&env.db)
    .await
    .expect("q");
    for (cause, n) in twice {
        v.push(
            "one call per cause",
            format!("{n} collection calls planned from cause {cause}"),
        );
    }

    // The contact window at every firing, in the account's zone.
    let zones: HashMap<String, String> = sqlx::query_as::<_, (String, Option<String>)>(
        "SELECT account_id, state->>'timezone' FROM accounts",
    )
    .fetch_all(&env.db)
    .await
    .expect("zones")
    .into_iter()
    .filter_map(|(a, z)| Some((a, z?)))
    .collect();
    for r in received.iter().filter(|r| r.transition == Transition::Due) {
        let Some(zone) = zones.get(&r.account) else {
            v.push(
                "fired inside the contact window",
                format!("task.due {} for account {} without a zone", r.id, r.account),
            );
            continue;
        };
        let tz = TimeZone::get(zone).expect("zone");
        for t in &r.times {
            let local = t.to_zoned(tz.clone());
            let minute = i32::from(local.hour()) * 60 + i32::from(local.minute());
            if !WINDOW_MINUTES.contains(&minute) {
                v.push(
                    "fired inside the contact window",
                    format!(
                        "task.due {} (task {}, account {}) fired at {} local ({zone})",
                        r.id,
                        r.task_id,
                        r.account,
                        local.strftime("%F %T")
                    ),
                );
            }
        }
    }

    // No delinquent account without a next step: with no promise pending, some follow-up
    // (a call, an escalation, a check, a review) is open. Judged once settled, so a
    // firing in progress (`claimed`) counts as open.
    let stranded: Vec<String> = sqlx::query_scalar(
        "SELECT a.account_id FROM accounts a
         WHERE a.state->>'status' = 'delinquent'
           AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(a.state->'promises') p
                           WHERE p->>'status' = 'open')
           AND NOT EXISTS (SELECT 1 FROM tasks t
                           WHERE t.account_id = a.account_id
                             AND t.status IN ('scheduled', 'claimed')
                             AND t.kind NOT IN ('pre_due_reminder', 'promise_expiry'))
         ORDER BY 1",
    )
    .fetch_all(&env.db)
    .await
    .expect("accounts");
    for account in stranded {
        v.push(
            "no delinquent account without a next step",
            format!("{account}: delinquent, no promise pending, no follow-up open"),
        );
    }

    // Dead letters: none, on any queue.
    for q in QUEUES {
        let ch = env.amqp.create_channel().await.expect("channel");
        let dlq = format!("{q}.dlq");
        let n = ch
            .queue_declare(
                dlq.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .map_or(u32::MAX, |q| q.message_count());
        if n != 0 {
            v.push("nothing dead-lettered", format!("{dlq} holds {n} messages"));
        }
        let _ = ch.close(200, "done".into()).await;
    }

    Observed {
        summary: s,
        tasks,
        received,
        zones,
    }
}
