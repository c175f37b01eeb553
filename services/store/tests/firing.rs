//! A task the scheduler is firing and a worker that would cancel it, on a real Postgres
//! (its own database per test). The end-to-end race is in `tests/e2e/faults.rs`
//! (`a_task_cancelled_as_it_comes_due_is_never_also_fired`); these pin each rule down.

use collections_core::{outbound::OutboundMessage, parse_event, Event, Policy};
use collections_store::{
    scheduler::{Claim, Move},
    Outcome, Store,
};
use jiff::Timestamp;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

mod common;
use common::{drop_store, store, test_url};

fn event(ty: &str, account: &str, data: serde_json::Value) -> Event {
    let body = serde_json::json!({
        "specversion": "1.0",
        "id": Uuid::new_v4().to_string(),
        "source": "/tests",
        "type": ty,
        "time": Timestamp::now().to_string(),
        "subject": account,
        "datacontenttype": "application/json",
        "data": data,
    });
    parse_event(body.to_string().as_bytes(), None).expect("valid event")
}

fn failed(account: &str) -> Event {
    event(
        "payment.failed",
        account,
        serde_json::json!({
            "account_id": account,
            "customer": {"timezone": "Asia/Shanghai"},
            "installment": {"number": 2, "due_date": "2026-11-03",
                            "amount": {"minor": 125_000, "currency": "CNY"}},
            "overdue_amount": {"minor": 125_000, "currency": "CNY"},
            "failure_reason": "insufficient_funds",
            "attempted_at": Timestamp::now().to_string(),
        }),
    )
}

fn paid_in_full(account: &str) -> Event {
    event(
        "payment.received",
        account,
        serde_json::json!({
            "account_id": account,
            "payment_id": format!("pay-{}", Uuid::new_v4()),
            "amount": {"minor": 125_000, "currency": "CNY"},
            "received_at": Timestamp::now().to_string(),
        }),
    )
}

/// Plans the account's first call and makes it due now; returns its id.
async fn due_call(store: &Store, policy: &Policy, account: &str) -> Uuid {
    let batch = store
        .apply_batch(&[failed(account)], policy, Timestamp::now())
        .await
        .expect("applied");
    assert!(matches!(batch.outcomes[0], Outcome::Applied(_)));
    let id: Uuid = sqlx::query_scalar(
        "UPDATE tasks SET due_at = now() - interval '1 minute'
         WHERE account_id = $1 AND kind = 'collection_call' RETURNING task_id",
    )
    .bind(account)
    .fetch_one(store.pool())
    .await
    .expect("one call");
    id
}

/// Claims what is due now, as a scheduler does.
async fn claim(store: &Store) -> Claim {
    store
        .claim_due_tasks(Timestamp::now(), 10)
        .await
        .expect("claim")
}

async fn status(store: &Store, task: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM tasks WHERE task_id = $1")
        .bind(task)
        .fetch_one(store.pool())
        .await
        .expect("task")
}

async fn cancellations_announced(store: &Store, task: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM outbox
         WHERE routing_key LIKE 'task.cancelled.%' AND body->'data'->>'task_id' = $1",
    )
    .bind(task.to_string())
    .fetch_one(store.pool())
    .await
    .expect("count")
}

#[tokio::test]
async fn a_payment_for_a_call_being_fired_waits_alone_and_leaves_it_fired() {
    let store = store("waits_for_firing", 4).await;
    let policy = Policy::default();
    let call = due_call(&store, &policy, "acc-f1").await;
    let claimed = claim(&store).await;
    assert_eq!(claimed.tasks.len(), 1);

    // In the same batch, an event of an account nobody is firing for.
    let payment = paid_in_full("acc-f1");
    let other = failed("acc-other");
    let r = store
        .apply_batch(&[payment.clone(), other.clone()], &policy, Timestamp::now())
        .await
        .expect("the batch commits");
    assert!(
        matches!(r.outcomes[0], Outcome::Deferred(id) if id == call),
        "the payment would cancel the call being fired: deferred, {:?}",
        r.outcomes[0]
    );
    assert!(
        matches!(r.outcomes[1], Outcome::Applied(ref rows) if !rows.is_empty()),
        "the other account's event is applied at once: {:?}",
        r.outcomes[1]
    );
    let inbox = |id: Uuid| {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM inbox WHERE event_id = $1")
            .bind(id)
            .fetch_one(store.pool())
    };
    assert_eq!(
        inbox(payment.id).await.expect("inbox"),
        0,
        "nothing of the deferred payment was committed"
    );
    assert_eq!(
        inbox(other.id).await.expect("inbox"),
        1,
        "the other event is committed"
    );
    let planned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE account_id = 'acc-other' AND status = 'scheduled'",
    )
    .fetch_one(store.pool())
    .await
    .expect("planned");
    assert!(planned >= 1, "the other account's call is planned");
    assert_eq!(status(&store, call).await, "claimed");

    // The firing settles (confirmed, marked emitted); the retried payment cures the
    // account and leaves the fired call alone.
    let task = claimed.tasks[0].task.clone();
    store
        .complete_fired(
            claimed.token,
            &[(task, Uuid::new_v4())],
            &policy,
            Timestamp::now(),
        )
        .await
        .expect("complete");
    let batch = store
        .apply_batch(&[payment], &policy, Timestamp::now())
        .await
        .expect("applied after the firing");
    assert!(matches!(batch.outcomes[0], Outcome::Applied(_)));
    assert_eq!(status(&store, call).await, "emitted");
    assert_eq!(cancellations_announced(&store, call).await, 0);
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE account_id = 'acc-f1' AND status = 'scheduled'",
    )
    .fetch_one(store.pool())
    .await
    .expect("open");
    assert_eq!(
        open, 0,
        "the next attempt the firing planned is cancelled by the cure"
    );
    drop_store(store, "waits_for_firing").await;
}

#[tokio::test]
async fn a_claim_older_than_the_timeout_is_taken_back_and_cancelled() {
    let store = store("stale_claim", 4).await;
    let policy = Policy::default();
    let call = due_call(&store, &policy, "acc-f2").await;
    assert_eq!(claim(&store).await.tasks.len(), 1);
    // Its scheduler died before the confirm, the claim ran out, and no rescuer ran since.
    sqlx::query("UPDATE tasks SET claim_until = now() - interval '1 second' WHERE task_id = $1")
        .bind(call)
        .execute(store.pool())
        .await
        .expect("age the claim");
    let batch = store
        .apply_batch(&[paid_in_full("acc-f2")], &policy, Timestamp::now())
        .await
        .expect("a dead scheduler's claim does not hold the payment up");
    assert!(matches!(batch.outcomes[0], Outcome::Applied(_)));
    assert_eq!(status(&store, call).await, "cancelled");
    assert_eq!(cancellations_announced(&store, call).await, 1);
    // The dead scheduler may have published `task.due` with revision 2: the retraction
    // outranks it.
    assert_eq!(announced_revision(&store, call, "task.cancelled").await, 3);
    assert_eq!(revision(&store, call).await, 3);
    let claimed = claim(&store).await;
    assert!(
        claimed.tasks.is_empty(),
        "a cancelled task is never claimed again"
    );
    drop_store(store, "stale_claim").await;
}

async fn revision(store: &Store, task: Uuid) -> i32 {
    sqlx::query_scalar("SELECT revision FROM tasks WHERE task_id = $1")
        .bind(task)
        .fetch_one(store.pool())
        .await
        .expect("task")
}

async fn announced_revision(store: &Store, task: Uuid, ty: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT (body->'data'->>'revision')::bigint FROM outbox
         WHERE body->>'type' = $2 AND body->'data'->>'task_id' = $1",
    )
    .bind(task.to_string())
    .bind(ty)
    .fetch_one(store.pool())
    .await
    .expect("announced")
}

/// A rescued claim (its scheduler died, perhaps after publishing `task.due` with the
/// next revision) comes back with its revision advanced: the firing that follows, and a
/// cancellation if the rules want one, rank above anything the dead scheduler published.
#[tokio::test]
async fn a_rescued_claim_is_fired_again_with_a_higher_revision() {
    let store = store("rescued_revision", 4).await;
    let policy = Policy::default();
    let call = due_call(&store, &policy, "acc-f7").await;
    assert_eq!(revision(&store, call).await, 1);
    let first = claim(&store).await;
    assert_eq!(first.tasks.len(), 1);
    assert_eq!(
        first.tasks[0].task.revision, 1,
        "a claim changes no revision"
    );
    run_out(&store, call).await;
    assert_eq!(store.rescue_stuck_claims().await.expect("rescue"), 1);
    assert_eq!(revision(&store, call).await, 2);
    let again = claim(&store).await;
    assert_eq!(again.tasks.len(), 1);
    // At 10:00 in the account's zone (Asia/Shanghai): inside the contact window.
    let at: Timestamp = "2026-11-05T02:00:00Z".parse().expect("instant");
    let fired = collections_core::fire(
        &again.tasks[0].task,
        again.tasks[0].state.as_ref(),
        &policy,
        at,
    );
    let collections_core::FireOutcome::Due { message, .. } = fired else {
        panic!("the call fires: {fired:?}");
    };
    assert_eq!(message.json()["data"]["revision"], 3);
    store
        .complete_fired(
            again.token,
            &[(again.tasks[0].task.clone(), message.event_id)],
            &policy,
            Timestamp::now(),
        )
        .await
        .expect("completed");
    assert_eq!(status(&store, call).await, "emitted");
    assert_eq!(
        revision(&store, call).await,
        3,
        "the row keeps the revision of its task.due"
    );
    drop_store(store, "rescued_revision").await;
}

#[tokio::test]
async fn a_claim_passes_over_an_account_a_worker_holds() {
    let store = store("passes_over_locked", 4).await;
    let policy = Policy::default();
    let call = due_call(&store, &policy, "acc-f3").await;
    let mut worker = store.pool().begin().await.expect("tx");
    sqlx::query("SELECT 1 FROM accounts WHERE account_id = 'acc-f3' FOR UPDATE")
        .execute(&mut *worker)
        .await
        .expect("lock");
    let claimed = claim(&store).await;
    assert!(
        claimed.tasks.is_empty(),
        "the task of an account a worker holds is not claimed under its feet"
    );
    assert_eq!(status(&store, call).await, "scheduled");
    worker.commit().await.expect("commit");
    let claimed = claim(&store).await;
    assert_eq!(claimed.tasks.len(), 1, "claimed once the worker committed");
    assert_eq!(claimed.tasks[0].task.task_id, call);
    drop_store(store, "passes_over_locked").await;
}

/// Scheduled collection calls of an account, not counting the ones given.
async fn scheduled_calls(store: &Store, account: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM tasks
         WHERE account_id = $1 AND kind = 'collection_call' AND status = 'scheduled'",
    )
    .bind(account)
    .fetch_one(store.pool())
    .await
    .expect("count")
}

#[tokio::test]
async fn a_completion_plans_no_call_beside_one_another_replica_is_firing() {
    let store = store("completion_sees_firing", 4).await;
    let policy = Policy::default();
    let first = due_call(&store, &policy, "acc-f4").await;
    // A second collection call of the same account, also due: two replicas claim one each.
    let second = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO tasks (task_id, account_id, kind, channel, due_at, priority, tone, reason,
                            promise_id, cause_event_id, attempt, policy_version)
         SELECT $2, account_id, kind, channel, due_at, priority, tone, reason, promise_id,
                cause_event_id, attempt + 1, policy_version
         FROM tasks WHERE task_id = $1",
    )
    .bind(first)
    .bind(second)
    .execute(store.pool())
    .await
    .expect("second call");
    let claimed = claim(&store).await;
    assert_eq!(claimed.tasks.len(), 2);
    let task = |id: Uuid| {
        claimed
            .tasks
            .iter()
            .find(|c| c.task.task_id == id)
            .map(|c| c.task.clone())
            .expect("claimed")
    };

    // This replica fired the first; the other is still firing the second.
    let rows = store
        .complete_fired(
            claimed.token,
            &[(task(first), Uuid::new_v4())],
            &policy,
            Timestamp::now(),
        )
        .await
        .expect("completed")
        .rows;
    assert_eq!(status(&store, first).await, "emitted");
    assert_eq!(
        status(&store, second).await,
        "claimed",
        "left to its firing"
    );
    assert_eq!(
        scheduled_calls(&store, "acc-f4").await,
        0,
        "no next attempt while another call is being fired"
    );
    assert!(
        rows.iter()
            .all(|r| !r.routing_key.starts_with("task.cancelled.")),
        "nothing announced cancelled"
    );

    // When the other firing completes, it plans the next attempt: exactly one.
    store
        .complete_fired(
            claimed.token,
            &[(task(second), Uuid::new_v4())],
            &policy,
            Timestamp::now(),
        )
        .await
        .expect("completed");
    assert_eq!(status(&store, second).await, "emitted");
    assert_eq!(scheduled_calls(&store, "acc-f4").await, 1);
    drop_store(store, "completion_sees_firing").await;
}

/// Ends the claim on `task`, as if its scheduler had waited longer than the claim timeout.
async fn run_out(store: &Store, task: Uuid) {
    sqlx::query("UPDATE tasks SET claim_until = now() - interval '1 second' WHERE task_id = $1")
        .bind(task)
        .execute(store.pool())
        .await
        .expect("run the claim out");
}

#[tokio::test]
async fn a_claim_is_rescued_only_once_it_ran_out() {
    let store = store("rescue_ran_out", 4).await;
    let policy = Policy::default();
    let call = due_call(&store, &policy, "acc-f7").await;
    assert_eq!(claim(&store).await.tasks.len(), 1);
    assert_eq!(store.rescue_stuck_claims().await.expect("rescue"), 0);
    assert_eq!(status(&store, call).await, "claimed");
    run_out(&store, call).await;
    assert_eq!(store.rescue_stuck_claims().await.expect("rescue"), 1);
    assert_eq!(status(&store, call).await, "scheduled");
    drop_store(store, "rescue_ran_out").await;
}

#[tokio::test]
async fn a_claim_is_renewed_only_by_its_holder_and_only_while_it_holds_it() {
    let store = store("renew_fenced", 4).await;
    let policy = Policy::default();
    let call = due_call(&store, &policy, "acc-f10").await;
    let a = claim(&store).await;
    let until = || async {
        sqlx::query_scalar::<_, f64>(
            "SELECT extract(epoch FROM claim_until - now())::float8 FROM tasks WHERE task_id = $1",
        )
        .bind(call)
        .fetch_one(store.pool())
        .await
        .expect("claim_until")
    };
    assert!(
        store
            .renew_claim(Uuid::new_v4(), &[call])
            .await
            .expect("renew")
            .is_empty(),
        "another token renews nothing"
    );
    run_out(&store, call).await;
    assert_eq!(
        store.renew_claim(a.token, &[call]).await.expect("renew"),
        vec![call]
    );
    assert!(
        until().await > 30.0,
        "renewed for the claim timeout from now"
    );
    run_out(&store, call).await;
    assert_eq!(store.rescue_stuck_claims().await.expect("rescue"), 1);
    let b = claim(&store).await;
    assert_eq!(b.tasks.len(), 1);
    assert!(
        store
            .renew_claim(a.token, &[call])
            .await
            .expect("renew")
            .is_empty(),
        "a claim taken over is not renewed by its old holder"
    );
    drop_store(store, "renew_fenced").await;
}

#[tokio::test]
async fn a_scheduler_whose_claim_was_taken_over_completes_nothing_of_it() {
    let store = store("completion_fenced", 4).await;
    let policy = Policy::default();
    let call = due_call(&store, &policy, "acc-f8").await;
    // Replica A claims the call and waits on a slow broker past its claim; replica B
    // rescues it and claims it again.
    let a = claim(&store).await;
    run_out(&store, call).await;
    assert_eq!(store.rescue_stuck_claims().await.expect("rescue"), 1);
    let b = claim(&store).await;
    assert_eq!(b.tasks.len(), 1);
    assert_ne!(a.token, b.token);

    // A's confirms come in: it completes nothing of B's claim and plans nothing.
    let fired = vec![(a.tasks[0].task.clone(), Uuid::new_v4())];
    let done = store
        .complete_fired(a.token, &fired, &policy, Timestamp::now())
        .await
        .expect("completed");
    assert_eq!(done.lost, vec![call], "A learns it lost the claim");
    assert!(done.rows.is_empty(), "no follow-up from a lost claim");
    assert_eq!(status(&store, call).await, "claimed", "still B's");
    assert_eq!(scheduled_calls(&store, "acc-f8").await, 0);

    // B completes its own claim: the next attempt is planned once.
    let fired = vec![(b.tasks[0].task.clone(), Uuid::new_v4())];
    let done = store
        .complete_fired(b.token, &fired, &policy, Timestamp::now())
        .await
        .expect("completed");
    assert!(done.lost.is_empty());
    assert_eq!(status(&store, call).await, "emitted");
    assert_eq!(scheduled_calls(&store, "acc-f8").await, 1);
    drop_store(store, "completion_fenced").await;
}

#[tokio::test]
async fn a_scheduler_whose_claim_was_taken_over_moves_and_announces_nothing() {
    let store = store("move_fenced", 4).await;
    let policy = Policy::default();
    let call = due_call(&store, &policy, "acc-f9").await;
    let a = claim(&store).await;
    run_out(&store, call).await;
    assert_eq!(store.rescue_stuck_claims().await.expect("rescue"), 1);
    let b = claim(&store).await;
    assert_eq!(b.tasks.len(), 1);
    let moves = vec![Move {
        task_id: call,
        due_at: Timestamp::now() + jiff::SignedDuration::from_hours(12),
        priority: 3,
        revision: 3,
        why: "outside the contact window".to_owned(),
        message: OutboundMessage {
            event_id: Uuid::new_v4(),
            exchange: "collections.tasks",
            routing_key: "task.scheduled.collection_call".to_owned(),
            account_id: "acc-f9".to_owned(),
            body: serde_json::to_vec(&serde_json::json!({"type": "task.scheduled"})).expect("json"),
        },
        cancel: None,
    }];
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_pending")
        .fetch_one(store.pool())
        .await
        .expect("count");
    let moved = store
        .reschedule_claimed(a.token, &moves, "v", Timestamp::now())
        .await
        .expect("moved");
    assert_eq!(moved.lost, vec![call]);
    assert!(moved.rows.is_empty(), "no move announced for a lost claim");
    assert_eq!(status(&store, call).await, "claimed", "still B's");
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_pending")
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(after, pending, "nothing queued to publish");
    let journaled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM journal WHERE kind = 'task_moved' AND task_id = $1",
    )
    .bind(call)
    .fetch_one(store.pool())
    .await
    .expect("count");
    assert_eq!(journaled, 0, "no move journaled");
    drop_store(store, "move_fenced").await;
}

/// A connection of the test's own to the test's database, outside the store's pool.
async fn probe(test: &str) -> PgConnection {
    PgConnection::connect(&test_url(test)).await.expect("probe")
}

/// Runs `op` while another transaction holds the row lock that `lock` (one statement,
/// `$1` = `key`) takes, aborts `op` once it waits for that lock inside its own
/// transaction (as the scheduler's shutdown deadline drops a firing), frees the lock, and
/// asserts that the abandoned server session ends rather than going back to the pool with
/// its transaction open.
async fn abandon_while_blocked<T: Send + 'static>(
    store: &Store,
    probe: &mut PgConnection,
    lock: &str,
    key: Uuid,
    op: impl std::future::Future<Output = T> + Send + 'static,
) {
    let mut holder = store.pool().begin().await.expect("tx");
    sqlx::query(lock)
        .bind(key)
        .execute(&mut *holder)
        .await
        .expect("lock");
    let op = tokio::spawn(op);
    let mut waiting: Option<i32> = None;
    for _ in 0..100 {
        waiting = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_optional(&mut *probe)
        .await
        .expect("activity");
        if waiting.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let pid = waiting.expect("the operation waits for the lock inside its transaction");
    op.abort();
    assert!(op.await.is_err(), "the operation was abandoned");
    holder.rollback().await.expect("rollback");

    let mut alive = true;
    for _ in 0..100 {
        alive = sqlx::query_scalar("SELECT count(*) > 0 FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_one(&mut *probe)
            .await
            .expect("activity");
        if !alive {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        !alive,
        "the session of the abandoned operation ended instead of returning to the pool"
    );
}

#[tokio::test]
async fn a_completion_abandoned_mid_transaction_closes_its_connection() {
    let store = store("completion_abandoned", 4).await;
    let policy = Policy::default();
    let call = due_call(&store, &policy, "acc-f5").await;
    let claimed = claim(&store).await;
    assert_eq!(claimed.tasks.len(), 1);
    let fired = vec![(claimed.tasks[0].task.clone(), Uuid::new_v4())];
    let token = claimed.token;
    let mut probe = probe("completion_abandoned").await;

    // A worker holds the account: the completion's transaction begins, then waits for it.
    let completion = {
        let (store, fired, policy) = (store.clone(), fired.clone(), policy.clone());
        async move {
            store
                .complete_fired(token, &fired, &policy, Timestamp::now())
                .await
        }
    };
    abandon_while_blocked(
        &store,
        &mut probe,
        "SELECT 1 FROM accounts a JOIN tasks t USING (account_id)
         WHERE t.task_id = $1 FOR UPDATE OF a",
        call,
        completion,
    )
    .await;
    assert_eq!(
        status(&store, call).await,
        "claimed",
        "nothing was committed"
    );

    // Completed again (as the scheduler's retry does), it commits once.
    store
        .complete_fired(token, &fired, &policy, Timestamp::now())
        .await
        .expect("completed");
    let seen: String = sqlx::query_scalar("SELECT status FROM tasks WHERE task_id = $1")
        .bind(call)
        .fetch_one(&mut probe)
        .await
        .expect("task");
    assert_eq!(seen, "emitted", "committed, as another session sees it");
    probe.close().await.expect("close");
    drop_store(store, "completion_abandoned").await;
}

#[tokio::test]
async fn a_move_abandoned_mid_transaction_closes_its_connection() {
    let store = store("move_abandoned", 4).await;
    let policy = Policy::default();
    let call = due_call(&store, &policy, "acc-f6").await;
    let claimed = claim(&store).await;
    assert_eq!(claimed.tasks.len(), 1);
    let token = claimed.token;
    let later = Timestamp::now() + jiff::SignedDuration::from_hours(12);
    let message = OutboundMessage {
        event_id: Uuid::new_v4(),
        exchange: "collections.tasks",
        routing_key: "task.scheduled.collection_call".to_owned(),
        account_id: "acc-f6".to_owned(),
        body: serde_json::to_vec(&serde_json::json!({"type": "task.scheduled"})).expect("json"),
    };
    let moves = vec![Move {
        task_id: call,
        due_at: later,
        priority: 3,
        revision: 2,
        why: "outside the contact window".to_owned(),
        message,
        cancel: None,
    }];
    let mut probe = probe("move_abandoned").await;

    // Something holds the task row: the move's transaction begins, then waits for it.
    let moving = {
        let (store, moves) = (store.clone(), moves.clone());
        async move {
            store
                .reschedule_claimed(token, &moves, "v", Timestamp::now())
                .await
        }
    };
    abandon_while_blocked(
        &store,
        &mut probe,
        "SELECT 1 FROM tasks WHERE task_id = $1 FOR UPDATE",
        call,
        moving,
    )
    .await;
    assert_eq!(
        status(&store, call).await,
        "claimed",
        "nothing was committed"
    );
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_pending")
        .fetch_one(&mut probe)
        .await
        .expect("count");

    // Moved again (as the scheduler's retry does), it commits once.
    let rows = store
        .reschedule_claimed(token, &moves, "v", Timestamp::now())
        .await
        .expect("moved")
        .rows;
    assert_eq!(rows.len(), 1, "its task.scheduled written once");
    let (seen, due): (String, i64) = sqlx::query_as(
        "SELECT status, floor(extract(epoch FROM due_at))::bigint FROM tasks WHERE task_id = $1",
    )
    .bind(call)
    .fetch_one(&mut probe)
    .await
    .expect("task");
    assert_eq!(seen, "scheduled", "committed, as another session sees it");
    assert_eq!(due, later.as_second(), "due at the new instant");
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_pending")
        .fetch_one(&mut probe)
        .await
        .expect("count");
    assert_eq!(after, pending + 1);
    probe.close().await.expect("close");
    drop_store(store, "move_abandoned").await;
}
