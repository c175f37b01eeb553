//! The retention benchmark: does history slow ingest down, and does pruning it?
//!
//! Three ingest phases through the four worker binaries, each on accounts of its own (so
//! they differ only in what the tables hold): on an empty database; after `history` rows
//! of old history are seeded in each of `inbox`, `outbox`, `journal` and `tasks`; and on
//! that history again while a pruner (the runtime's, as `collectionsctl prune` runs it)
//! deletes it. Figures are printed as ratios to the empty database's rate, beside the
//! machine's raw Postgres limit measured in the same run.

use std::time::{Duration, Instant};

use collections_runtime::config::Retention;
use jiff::Timestamp;
use lapin::options::ConfirmSelectOptions;
use tokio_util::sync::CancellationToken;

use crate::{
    env::{wait_until, Env},
    raw::raw_postgres,
    stats::server_settings,
    workload::{mix, publish_confirmed},
    Settings,
};

/// What to run: the command line's `retention` options.
pub struct RetentionRun {
    /// Rows of history seeded in each table.
    pub history: usize,
    /// Events per ingest phase.
    pub events: usize,
    /// Accounts per phase.
    pub accounts: usize,
    /// Rows per prune statement.
    pub batch: i64,
    /// Pause between prune statements.
    pub pause: Duration,
}

pub async fn retention(settings: &Settings, run: RetentionRun) -> anyhow::Result<()> {
    let mut env = Env::new(settings).await?;
    let result = retention_in(&mut env, run).await;
    env.teardown().await;
    result
}

/// Seeds `n` rows of 100-day-old history in each table, as generated series (one
/// statement per table).
async fn seed_history(env: &Env, n: i64) -> anyhow::Result<()> {
    let statements = [
        "INSERT INTO inbox (event_id, event_type, account_id, applied_at)
         SELECT gen_random_uuid(), 'payment.failed', 'hist-' || (g % 100000),
                now() - interval '100 days' + g * interval '1 ms'
         FROM generate_series(1, $1) g",
        "INSERT INTO outbox (event_id, account_id, exchange, routing_key, body, created_at)
         SELECT gen_random_uuid(), 'hist-' || (g % 100000), 'collections.tasks',
                'task.due.collection_call',
                jsonb_build_object('specversion', '1.0', 'type', 'task.due',
                                   'data', jsonb_build_object('reason', 'history row ' || g)),
                now() - interval '100 days' + g * interval '1 ms'
         FROM generate_series(1, $1) g",
        "INSERT INTO journal (account_id, event_id, kind, detail, policy_version, decided_at)
         SELECT 'hist-' || (g % 100000), gen_random_uuid(), 'event', 'payment.failed applied',
                'bench', now() - interval '100 days' + g * interval '1 ms'
         FROM generate_series(1, $1) g",
        "INSERT INTO tasks (task_id, account_id, kind, channel, due_at, priority, tone, reason,
                            cause_event_id, policy_version, status, emitted_at, cancelled_at,
                            cancel_reason, created_at)
         SELECT gen_random_uuid(), 'hist-' || (g % 100000), 'collection_call', 'phone_mobile',
                now() - interval '100 days', 6, 'gentle', 'history', gen_random_uuid(), 'bench',
                CASE WHEN g % 5 = 0 THEN 'cancelled' ELSE 'emitted' END,
                CASE WHEN g % 5 <> 0 THEN now() - interval '100 days' + g * interval '1 ms' END,
                CASE WHEN g % 5 = 0 THEN now() - interval '100 days' + g * interval '1 ms' END,
                CASE WHEN g % 5 = 0 THEN 'history' END,
                now() - interval '101 days'
         FROM generate_series(1, $1) g",
    ];
    for sql in statements {
        let t = Instant::now();
        sqlx::query(sql).bind(n).execute(&env.db).await?;
        println!(
            "  seeded in {:.0} s: {}",
            t.elapsed().as_secs_f64(),
            sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        );
    }
    sqlx::query("VACUUM ANALYZE").execute(&env.db).await?;
    sqlx::query("CHECKPOINT").execute(&env.db).await?;
    Ok(())
}

/// Publishes `n` events on accounts `acc-<salt>*` as fast as the broker confirms and
/// waits until every one is applied and every task event published; returns events/s.
async fn ingest_phase(env: &Env, n: usize, accounts: usize, salt: &str) -> anyhow::Result<f64> {
    let events = mix(n, accounts, salt);
    let items: Vec<(String, Vec<u8>)> = events.into_iter().map(|(t, _, b)| (t, b)).collect();
    let publisher = env.amqp.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let since = Timestamp::now();
    let want = i64::try_from(n)?;
    // Counted through the inbox's age index: a count(*) of the whole inbox would scan
    // the seeded history ten times a second.
    let applied = format!("SELECT count(*) FROM inbox WHERE applied_at >= '{since}'::timestamptz");
    let t = Instant::now();
    publish_confirmed(&publisher, "collections.events", &items, 256).await?;
    wait_until(
        "every event applied",
        Duration::from_secs(900),
        async || env.count(&applied).await >= want,
    )
    .await?;
    wait_until(
        "every task event published",
        Duration::from_secs(300),
        async || env.count("SELECT count(*) FROM outbox_pending").await == 0,
    )
    .await?;
    let _ = publisher.close(200, "done".into()).await;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

async fn retention_in(env: &mut Env, run: RetentionRun) -> anyhow::Result<()> {
    let RetentionRun {
        history,
        events,
        accounts,
        batch,
        pause,
    } = run;
    println!(
        "bench retention: {history} rows of history per table, {events} events per phase over \
         {accounts} accounts (db {})",
        env.name
    );
    println!("{}", server_settings(&env.db).await?);
    for salt in ["e", "s", "p"] {
        sqlx::query(
            "INSERT INTO accounts (account_id)
             SELECT 'acc-' || $2 || g FROM generate_series(0, $1 - 1) g",
        )
        .bind(i64::try_from(accounts)?)
        .bind(salt)
        .execute(&env.db)
        .await?;
    }
    sqlx::query("ANALYZE").execute(&env.db).await?;
    let raw_pg = raw_postgres(&env.db, events.min(10_000), accounts, 4).await?;
    sqlx::query("TRUNCATE inbox, journal, outbox, outbox_pending")
        .execute(&env.db)
        .await?;
    sqlx::query("DELETE FROM tasks WHERE account_id LIKE 'raw-%'")
        .execute(&env.db)
        .await?;
    sqlx::query("DELETE FROM accounts WHERE account_id LIKE 'raw-%'")
        .execute(&env.db)
        .await?;
    println!("raw Postgres: one transaction per event at concurrency 4: {raw_pg:.0} events/s");
    sqlx::query("VACUUM ANALYZE").execute(&env.db).await?;
    sqlx::query("CHECKPOINT").execute(&env.db).await?;

    for b in [
        "payment-failed-worker",
        "promise-made-worker",
        "promise-broken-worker",
        "payment-received-worker",
    ] {
        env.spawn(b, &[], "consuming").await?;
    }

    // A warm-up phase, not counted: the first phase after the workers start also pays
    // their warm-up (connections, caches, the broker's first deliveries), which made the
    // empty database look slower than the seeded one by up to 2x in some runs and faster
    // in others. Its rows (a tenth of a phase) stay: next to the history, nothing.
    let warm = ingest_phase(env, (events / 10).max(2_000), accounts, "w").await?;
    println!("warm-up (not counted): {warm:.0} events/s");
    sqlx::query("VACUUM ANALYZE").execute(&env.db).await?;
    sqlx::query("CHECKPOINT").execute(&env.db).await?;

    let empty = ingest_phase(env, events, accounts, "e").await?;
    println!("ingest, empty database: {empty:.0} events/s");

    println!("seeding {history} rows of 100-day-old history in each table");
    let t = Instant::now();
    seed_history(env, i64::try_from(history)?).await?;
    println!("  seeded in {:.0} s", t.elapsed().as_secs_f64());

    let seeded = ingest_phase(env, events, accounts, "s").await?;
    println!("ingest, {history} rows of history per table: {seeded:.0} events/s");

    // The pruner runs from the start of the phase until it is done or the phase ends.
    let store = collections_store::Store::connect(&env.database_url(), 2).await?;
    let policy = Retention {
        outbox: Duration::from_secs(7 * 86_400),
        inbox: Duration::from_secs(90 * 86_400),
        tasks: Duration::from_secs(90 * 86_400),
        contacts: Duration::from_secs(90 * 86_400),
        journal: Some(Duration::from_secs(90 * 86_400)),
        batch,
        pause,
    };
    let token = CancellationToken::new();
    let prune_token = token.clone();
    let prune_store = store.clone();
    let pruner = tokio::spawn(async move {
        let t = Instant::now();
        let r = collections_runtime::retention::prune(
            &prune_store,
            &policy,
            Timestamp::now(),
            &prune_token,
        )
        .await;
        (r, t.elapsed())
    });
    let pruning = ingest_phase(env, events, accounts, "p").await?;
    token.cancel();
    let (pruned, prune_time) = pruner.await?;
    let pruned = pruned?;
    let deleted = pruned.inbox + pruned.outbox + pruned.tasks + pruned.journal;
    println!(
        "ingest beside a pruner: {pruning:.0} events/s; the pruner deleted {deleted} rows \
         ({} inbox, {} outbox, {} tasks, {} journal) in {:.0} s, {:.0} rows/s{}",
        pruned.inbox,
        pruned.outbox,
        pruned.tasks,
        pruned.journal,
        prune_time.as_secs_f64(),
        deleted as f64 / prune_time.as_secs_f64(),
        if deleted < 4 * history as u64 {
            " (stopped at the end of the phase)"
        } else {
            ""
        }
    );
    store.pool().close().await;

    println!();
    println!("| phase | events/s | vs empty | vs raw Postgres |");
    println!("|---|---|---|---|");
    for (what, rate) in [
        ("empty database".to_owned(), empty),
        (format!("{history} rows of history per table"), seeded),
        ("same, with a concurrent prune".to_owned(), pruning),
    ] {
        println!(
            "| {what} | {rate:.0} | {:.2} | {:.2} |",
            rate / empty,
            rate / raw_pg
        );
    }
    let worst = seeded.min(pruning) / empty;
    println!(
        "verdict: the slower of the two is {:.0} % of the empty database's rate ({})",
        worst * 100.0,
        if worst >= 0.8 {
            "within 20 %"
        } else {
            "MORE than 20 % lower"
        }
    );
    Ok(())
}
