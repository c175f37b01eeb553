//! The scheduler benchmark: how late `task.due` fires with many future tasks in the table
//! and tasks coming due at a steady rate (lateness phase), and how fast a backlog of due
//! tasks drains (drain phase), beside the raw broker publish rate.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::json;
use sqlx::PgPool;

use crate::{
    cpu::Cpu,
    env::{wait_until, Env},
    listen::listen,
    raw::raw_rabbit,
    report::SchedulerReport,
    stats::server_settings,
    Settings,
};

/// A zone (Etc/GMT±N) where it is about 14:00 now, so tasks are inside the window.
fn midday_zone() -> String {
    let utc_hour = i64::from(Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).hour());
    let mut offset = 14 - utc_hour;
    if offset > 14 {
        offset -= 24;
    }
    if offset < -12 {
        offset += 24;
    }
    match offset {
        0 => "Etc/GMT".to_owned(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

const SCHED_ACCOUNTS: i64 = 10_000;

async fn insert_tasks(db: &PgPool, n: usize, due_sql: &str) -> anyhow::Result<()> {
    // SMS reminders: contact the customer (window-checked) without a call follow-up.
    let sql = format!(
        "INSERT INTO tasks (task_id, account_id, kind, channel, due_at, priority, tone, reason,
                            promise_id, cause_event_id, policy_version)
         SELECT gen_random_uuid(), 'sched-' || (g % {SCHED_ACCOUNTS}), 'promise_reminder', 'sms',
                {due_sql}, 2, 'gentle', 'benchmark reminder', 'p-bench', gen_random_uuid(), 'bench'
         FROM generate_series(1, $1) g"
    );
    let mut left = n;
    while left > 0 {
        let chunk = left.min(100_000);
        sqlx::query(&sql)
            .bind(i64::try_from(chunk)?)
            .execute(db)
            .await?;
        left -= chunk;
    }
    Ok(())
}

/// The lateness phase's options.
pub struct Lateness {
    pub future: usize,
    pub rate: usize,
    pub secs: u64,
    pub lead_ms: u64,
    pub notify: bool,
}

pub async fn scheduler(
    settings: &Settings,
    l: Lateness,
    backlog: usize,
    batch: usize,
) -> anyhow::Result<()> {
    // The private database and vhost go whatever happens, a failed run included.
    let mut env = Env::new(settings).await?;
    let result = scheduler_in(&mut env, l, backlog, batch).await;
    env.teardown().await;
    result
}

async fn scheduler_in(
    env: &mut Env,
    l: Lateness,
    backlog: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let Lateness {
        future,
        rate,
        secs,
        lead_ms,
        notify,
    } = l;
    let batch = batch.to_string();
    let sched_env = [("SCHEDULER_BATCH", batch.as_str())];
    println!(
        "bench scheduler: {future} future tasks, {rate}/s due soon for {secs} s, backlog {backlog}"
    );
    println!("{}", server_settings(&env.db).await?);
    let body_len = 900;
    let raw = raw_rabbit(&env.amqp, 50_000, body_len).await?;
    println!(
        "raw RabbitMQ: publish+confirm {:.0}/s ({body_len} B)",
        raw.publish_per_s
    );

    let zone = midday_zone();
    let mut state = serde_json::to_value(collections_core::AccountState::new("x", &zone))?;
    state["status"] = json!("delinquent");
    sqlx::query("INSERT INTO accounts (account_id, state) SELECT 'sched-' || g, jsonb_set($2, '{account_id}', to_jsonb('sched-' || g)) FROM generate_series(0, $1 - 1) g")
        .bind(SCHED_ACCOUNTS)
        .bind(&state)
        .execute(&env.db)
        .await?;
    let t = Instant::now();
    insert_tasks(
        &env.db,
        future,
        "now() + interval '3 days' + (g % 86400) * interval '1 second'",
    )
    .await?;
    // Tasks planned over days have been vacuumed by the time they matter: do the same for
    // the bulk-loaded ones (hint bits, visibility map, statistics), so the figures are the
    // scheduler's and not a freshly loaded table's first read.
    sqlx::query("VACUUM ANALYZE tasks").execute(&env.db).await?;
    println!(
        "inserted {future} future tasks in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let seen = listen(&env.amqp, "task.due.#").await?;
    env.spawn("task-scheduler", &sched_env, "scheduling")
        .await?;

    // Lateness: `rate` tasks/s, each due 2 s after it is planned, spread over the second.
    let per_tick = (rate / 20).max(1);
    let mut planned = 0usize;
    let start = Instant::now();
    let mut tick = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        tick += 1;
        let next = start + Duration::from_millis(50 * tick);
        sqlx::query(
            "INSERT INTO tasks (task_id, account_id, kind, channel, due_at, priority, tone, reason,
                                promise_id, cause_event_id, policy_version)
             SELECT gen_random_uuid(), 'sched-' || (g % 10000), 'promise_reminder', 'sms',
                    now() + $2 * interval '1 millisecond' + (g * interval '50 milliseconds') / $1,
                    2, 'gentle', 'benchmark reminder', 'p-bench', gen_random_uuid(), 'bench'
             FROM generate_series(0, $1 - 1) g",
        )
        .bind(i64::try_from(per_tick)?)
        .bind(i64::try_from(lead_ms)?)
        .execute(&env.db)
        .await?;
        if notify {
            sqlx::query("SELECT pg_notify('collections_tasks', '')")
                .execute(&env.db)
                .await?;
        }
        planned += per_tick;
        tokio::time::sleep_until(next.into()).await;
    }
    wait_until("due tasks fired", Duration::from_secs(30), async || {
        seen.lock().map(|s| s.received >= planned).unwrap_or(false)
    })
    .await?;
    let mut late = seen
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .lateness_ms
        .clone();
    late.sort_by(f64::total_cmp);
    let achieved = planned as f64 / secs as f64;
    env.stop().await;

    // Backlog drain.
    let t = Instant::now();
    insert_tasks(&env.db, backlog, "now() - interval '1 minute'").await?;
    println!(
        "inserted {backlog} due tasks in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let before = seen.lock().map(|s| s.received).unwrap_or(0);
    // A backlog left by an outage was planned over days and vacuumed meanwhile.
    sqlx::query("VACUUM ANALYZE tasks").execute(&env.db).await?;
    sqlx::query("CHECKPOINT").execute(&env.db).await?;
    let mut cpu = Cpu::start(env);
    let t = Instant::now();
    env.spawn("task-scheduler", &sched_env, "scheduling")
        .await?;
    let mut progress: Vec<(f64, usize)> = Vec::new();
    wait_until("backlog drained", Duration::from_secs(900), async || {
        let got = seen.lock().map(|s| s.received - before).unwrap_or(0);
        progress.push((t.elapsed().as_secs_f64(), got));
        got >= backlog
    })
    .await?;
    let received_secs = t.elapsed().as_secs_f64();
    // Done when every task is also marked emitted (after the broker's confirm).
    let fired_total = i64::try_from(planned + backlog)?;
    wait_until(
        "backlog marked emitted",
        Duration::from_secs(120),
        async || {
            env.count("SELECT count(*) FROM tasks WHERE status = 'emitted'")
                .await
                >= fired_total
        },
    )
    .await?;
    let drain_secs = t.elapsed().as_secs_f64();
    let drain = backlog as f64 / drain_secs;
    // The scheduler is not yet among the children when `Cpu::start` ran; it counts
    // from its own start, which is what we want.
    let drain_cpu = cpu.delta(env);
    // Split: spawn to first task.due (start-up + first claim), and the rate in each
    // quarter of the backlog (does the claim slow down as the backlog drains?).
    let first = progress
        .iter()
        .find(|(_, n)| *n > 0)
        .map_or(f64::NAN, |(s, _)| *s);
    let at = |n: usize| {
        progress
            .iter()
            .find(|(_, got)| *got >= n)
            .map_or(f64::NAN, |(s, _)| *s)
    };
    let quarters: Vec<String> = (0..4)
        .map(|q| {
            let (a, b) = (backlog * q / 4, backlog * (q + 1) / 4);
            let secs = at(b.max(1)) - if a == 0 { first } else { at(a) };
            format!("{:.0}", (b - a) as f64 / secs)
        })
        .collect();
    let emitted = env
        .count("SELECT count(*) FROM tasks WHERE status = 'emitted'")
        .await;
    let dup = seen.lock().map(|s| s.duplicates).unwrap_or(0);
    let rss = env.peak_rss_kib();

    SchedulerReport {
        raw,
        future,
        planned,
        achieved,
        lead_ms,
        notify,
        late,
        backlog,
        batch,
        drain_secs,
        drain,
        first,
        received_secs,
        quarters,
        drain_cpu,
        rss,
        emitted,
        dup,
    }
    .print();
    Ok(())
}
