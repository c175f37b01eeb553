//! Retention on a real Postgres (its own database per test): pruning deletes only history
//! past its horizon (published outbox rows, closed tasks, inbox ids, journal entries) and
//! never an unpublished outbox row or an open task, whatever its age; two pruners at once
//! share the rows without error or double counting.

use collections_store::Store;
use jiff::{SignedDuration, Timestamp};

mod common;
use common::{drop_store, store};

/// Inserts `n` inbox ids applied `days` ago.
async fn inbox(store: &Store, n: i64, days: i32) {
    sqlx::query(
        "INSERT INTO inbox (event_id, event_type, account_id, applied_at)
         SELECT gen_random_uuid(), 'payment.failed', 'acc-' || g, now() - make_interval(days => $2)
         FROM generate_series(1, $1) g",
    )
    .bind(n)
    .bind(days)
    .execute(store.pool())
    .await
    .expect("inbox");
}

/// Inserts `n` tasks with `status`, created and (when closed) closed `days` ago.
async fn tasks(store: &Store, n: i64, status: &str, days: i32) {
    sqlx::query(
        "INSERT INTO tasks (task_id, account_id, kind, channel, due_at, priority, tone, reason,
                            cause_event_id, policy_version, status, claimed_at, emitted_at,
                            cancelled_at, created_at)
         SELECT gen_random_uuid(), 'acc-' || g, 'collection_call', 'phone_mobile',
                now() + interval '1 day', 6, 'gentle', 'test', gen_random_uuid(), 'v', $2,
                CASE WHEN $2 = 'claimed' THEN now() - make_interval(days => $3) END,
                CASE WHEN $2 = 'emitted' THEN now() - make_interval(days => $3) END,
                CASE WHEN $2 = 'cancelled' THEN now() - make_interval(days => $3) END,
                now() - make_interval(days => $3)
         FROM generate_series(1, $1) g",
    )
    .bind(n)
    .bind(status)
    .bind(days)
    .execute(store.pool())
    .await
    .expect("tasks");
}

/// Inserts `n` outbox rows created `days` ago, published or still pending.
async fn outbox(store: &Store, n: i64, days: i32, published: bool) {
    sqlx::query(
        "WITH rows AS (
             INSERT INTO outbox (event_id, account_id, exchange, routing_key, body, created_at)
             SELECT gen_random_uuid(), 'acc-' || g, 'collections.tasks', 'task.due.x', '{}',
                    now() - make_interval(days => $2)
             FROM generate_series(1, $1) g
             RETURNING id)
         INSERT INTO outbox_pending (id, lease_until)
         SELECT id, now() FROM rows WHERE NOT $3",
    )
    .bind(n)
    .bind(days)
    .bind(published)
    .execute(store.pool())
    .await
    .expect("outbox");
}

/// Inserts `n` journal entries decided `days` ago.
async fn journal(store: &Store, n: i64, days: i32) {
    sqlx::query(
        "INSERT INTO journal (account_id, kind, detail, policy_version, decided_at)
         SELECT 'acc-' || g, 'event', 'test', 'v', now() - make_interval(days => $2)
         FROM generate_series(1, $1) g",
    )
    .bind(n)
    .bind(days)
    .execute(store.pool())
    .await
    .expect("journal");
}

async fn count(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(store.pool())
        .await
        .expect("count")
}

fn days_ago(days: i64) -> Timestamp {
    Timestamp::now() - SignedDuration::from_hours(24 * days)
}

/// One whole pass over the outbox (or, with `journal`, the journal), `batch` rows at a time.
async fn prune_walk(store: &Store, before: Timestamp, batch: i64, journal: bool) -> u64 {
    let upto = if journal {
        store.journal_horizon(before).await
    } else {
        store.outbox_horizon(before).await
    }
    .expect("horizon");
    let (mut after, mut total) = (0, 0);
    loop {
        let (n, last) = if journal {
            store.prune_journal(before, after, upto, batch).await
        } else {
            store.prune_outbox(before, after, upto, batch).await
        }
        .expect("prune");
        total += n;
        match last {
            Some(last) if n == batch as u64 => after = last,
            _ => return total,
        }
    }
}

#[tokio::test]
async fn pruning_deletes_only_history_past_its_horizon() {
    let store = store("retention_horizon", 2).await;
    inbox(&store, 25, 100).await;
    inbox(&store, 3, 10).await;
    tasks(&store, 4, "emitted", 100).await;
    tasks(&store, 5, "cancelled", 100).await;
    // Open tasks planned long ago (a promise far ahead, a claim left behind): never pruned.
    tasks(&store, 2, "scheduled", 100).await;
    tasks(&store, 2, "claimed", 100).await;
    tasks(&store, 3, "emitted", 10).await;
    outbox(&store, 12, 100, true).await;
    // Never published, however old: the relays still owe them to the broker.
    outbox(&store, 4, 100, false).await;
    outbox(&store, 3, 1, true).await;
    journal(&store, 6, 100).await;
    journal(&store, 2, 10).await;

    // The inbox in batches of 10: 10, 10, 5, then nothing.
    let horizon = days_ago(90);
    let mut batches = Vec::new();
    loop {
        let n = store.prune_inbox(horizon, 10).await.expect("inbox");
        batches.push(n);
        if n < 10 {
            break;
        }
    }
    assert_eq!(batches, [10, 10, 5]);
    assert_eq!(count(&store, "SELECT count(*) FROM inbox").await, 3);

    assert_eq!(store.prune_tasks(horizon, 100).await.expect("tasks"), 9);
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM tasks WHERE status IN ('scheduled', 'claimed')"
        )
        .await,
        4,
        "open tasks stay"
    );
    assert_eq!(count(&store, "SELECT count(*) FROM tasks").await, 7);

    assert_eq!(prune_walk(&store, days_ago(7), 5, false).await, 12);
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM outbox o JOIN outbox_pending p USING (id)"
        )
        .await,
        4,
        "unpublished rows stay"
    );
    assert_eq!(count(&store, "SELECT count(*) FROM outbox").await, 7);

    assert_eq!(prune_walk(&store, horizon, 4, true).await, 6);
    assert_eq!(count(&store, "SELECT count(*) FROM journal").await, 2);

    // A second pass finds nothing more.
    assert_eq!(store.prune_inbox(horizon, 10).await.expect("inbox"), 0);
    assert_eq!(store.prune_tasks(horizon, 10).await.expect("tasks"), 0);
    assert_eq!(prune_walk(&store, days_ago(7), 5, false).await, 0);
    drop_store(store, "retention_horizon").await;
}

#[tokio::test]
async fn two_pruners_at_once_share_the_rows() {
    let store = store("retention_two", 8).await;
    inbox(&store, 3000, 100).await;
    inbox(&store, 50, 1).await;
    tasks(&store, 3000, "emitted", 100).await;
    tasks(&store, 50, "scheduled", 100).await;
    outbox(&store, 3000, 100, true).await;
    outbox(&store, 50, 100, false).await;
    let horizon = days_ago(30);

    let pruner = || async {
        let (mut inbox, mut tasks) = (0, 0);
        loop {
            let n = store.prune_inbox(horizon, 50).await.expect("inbox");
            inbox += n;
            if n == 0 {
                break;
            }
        }
        loop {
            let n = store.prune_tasks(horizon, 50).await.expect("tasks");
            tasks += n;
            if n == 0 {
                break;
            }
        }
        let outbox = prune_walk(&store, horizon, 50, false).await;
        (inbox, tasks, outbox)
    };
    let (a, b) = tokio::join!(pruner(), pruner());
    assert_eq!(
        a.0 + b.0,
        3000,
        "each old inbox id deleted once: {a:?} {b:?}"
    );
    assert_eq!(
        a.1 + b.1,
        3000,
        "each closed task deleted once: {a:?} {b:?}"
    );
    assert_eq!(
        a.2 + b.2,
        3000,
        "each published row deleted once: {a:?} {b:?}"
    );
    assert_eq!(count(&store, "SELECT count(*) FROM inbox").await, 50);
    assert_eq!(count(&store, "SELECT count(*) FROM tasks").await, 50);
    assert_eq!(count(&store, "SELECT count(*) FROM outbox").await, 50);
    assert_eq!(
        count(&store, "SELECT count(*) FROM outbox_pending").await,
        50
    );
    drop_store(store, "retention_two").await;
}

#[tokio::test]
async fn contact_attempts_older_than_the_horizon_go_and_recent_ones_stay() {
    let store = store("retention_contacts", 1).await;
    for (n, days) in [(7_i64, 120_i32), (5, 10)] {
        sqlx::query(
            "INSERT INTO contact_attempts (debtor_id, attempt_id, account_id, attempt,
                                           started_at, recorded_at, event_id)
             SELECT 'debtor-1', 'att-' || $2 || '-' || g, 'acc-1', '{}'::jsonb,
                    now() - make_interval(days => $2), now(), gen_random_uuid()
             FROM generate_series(1, $1) g",
        )
        .bind(n)
        .bind(days)
        .execute(store.pool())
        .await
        .expect("attempts");
    }
    let before = Timestamp::now() - SignedDuration::from_hours(90 * 24);
    // Two batches of 4: the first deletes 4, the second the 3 left.
    assert_eq!(store.prune_contacts(before, 4).await.expect("prune"), 4);
    assert_eq!(store.prune_contacts(before, 4).await.expect("prune"), 3);
    assert_eq!(store.prune_contacts(before, 4).await.expect("prune"), 0);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM contact_attempts")
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(left, 5, "the last 90 days stay");
    drop_store(store, "retention_contacts").await;
}
