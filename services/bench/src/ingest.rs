//! The ingest benchmark: inbound events to published task events through the four
//! worker binaries, beside the raw RabbitMQ and Postgres limits measured in the same run. A
//! throughput phase publishes as fast as the broker confirms; a latency phase publishes
//! paced (by default at half the measured rate) and times each event to its first task
//! event; the broker's own relay latency is then measured at the same rate.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use anyhow::bail;
use jiff::Timestamp;
use lapin::options::ConfirmSelectOptions;
use uuid::Uuid;

use crate::{
    cpu::Cpu,
    env::{wait_until, Env},
    listen::listen,
    raw::{raw_postgres, raw_rabbit, raw_relay},
    report::{percentile, IngestReport},
    scrape::{grew, scrape_stages},
    stats::{
        broker_wal, hot_updates, seq_scans, server_settings, CHECKPOINTS_SQL, WAL_FPI_SQL,
        WAL_LSN_SQL,
    },
    workload::{
        contact_accounts, contacts, delinquent, publish_confirmed, publish_paced, Workload,
    },
    Settings,
};

/// What to run: the command line's `ingest` options.
pub struct Ingest {
    /// Events in the throughput phase.
    pub n: usize,
    pub accounts: usize,
    pub latency_secs: u64,
    pub latency_rate: Option<f64>,
    pub history: usize,
    /// Consumers per worker process, as the workers will use.
    pub per_worker: usize,
    /// `WORKER_CONCURRENCY` to hand the workers, if given.
    pub worker_concurrency: Option<usize>,
    /// The arrangement workload instead of the mix: `arrangement.made` with this many
    /// instalments in place of the promises and partial payments.
    pub arrangement_instalments: Option<usize>,
    /// The events published.
    pub workload: Workload,
}

pub async fn ingest(settings: &Settings, run: Ingest) -> anyhow::Result<()> {
    // The private database and vhost go whatever happens, a failed run included.
    let mut env = Env::new(settings).await?;
    let result = ingest_in(&mut env, run).await;
    env.teardown().await;
    result
}

async fn ingest_in(env: &mut Env, run: Ingest) -> anyhow::Result<()> {
    let Ingest {
        n,
        accounts,
        latency_secs,
        latency_rate,
        history,
        per_worker,
        worker_concurrency,
        workload,
        arrangement_instalments,
    } = run;
    // The contacts workload dials `dialled` accounts, made delinquent before the timed phase.
    let dialled = contact_accounts(n, accounts);
    let phase = |count: usize, salt: &str| match (arrangement_instalments, workload) {
        (Some(k), _) => crate::workload::arrangement_mix(count, accounts, salt, k),
        (None, Workload::Contacts) => contacts(count, dialled, salt),
        (None, w) => w.events(count, accounts, salt),
    };
    if let Some(k) = arrangement_instalments {
        println!("workload: payment.failed + arrangement.made with {k} instalments");
    }
    let worker_concurrency = worker_concurrency.map(|c| c.to_string());
    println!(
        "bench ingest ({workload:?} workload): {n} events over {accounts} accounts, {history} historical tasks (db {}, vhost {})",
        env.name, env.name
    );
    println!("{}", server_settings(&env.db).await?);
    // Pre-create the accounts, as a live system has them.
    sqlx::query(
        "INSERT INTO accounts (account_id) SELECT 'acc-' || g FROM generate_series(0, $1 - 1) g",
    )
    .bind(i64::try_from(accounts)?)
    .execute(&env.db)
    .await?;
    // A live system's task table holds history: emitted tasks, outside the open-task
    // index. Seeding some (and analysing) keeps the planner from choosing sequential scans
    // for a table it believes empty and caching that plan in prepared statements.
    sqlx::query(
        "INSERT INTO tasks (task_id, account_id, kind, channel, due_at, priority, tone, reason,
                            cause_event_id, policy_version, status, emitted_at)
         SELECT gen_random_uuid(), 'acc-' || g, 'collection_call', 'phone_mobile',
                now() - interval '30 days', 6, 'gentle', 'history', gen_random_uuid(), 'bench',
                'emitted', now() - interval '30 days'
         FROM generate_series(0, $1 - 1) g",
    )
    .bind(i64::try_from(history)?)
    .execute(&env.db)
    .await?;
    // And open tasks of other accounts, due in a month, as a live system has them: with
    // none, the statistics say the open-task indexes are empty, and the planner may read
    // an account's open tasks by walking `tasks_open_by_due` (the API's page order) and
    // filtering, which costs every batch a scan of all open tasks once they exist (seen:
    // 14 M index entries read in one run). Autovacuum keeps a live system's statistics
    // current; the benchmark runs without it, so it seeds them.
    sqlx::query(
        "INSERT INTO tasks (task_id, account_id, kind, channel, due_at, priority, tone, reason,
                            cause_event_id, policy_version, status)
         SELECT gen_random_uuid(), 'open-' || g, 'collection_call', 'phone_mobile',
                now() + interval '30 days', 6, 'gentle', 'open elsewhere', gen_random_uuid(),
                'bench', 'scheduled'
         FROM generate_series(0, $1 - 1) g",
    )
    .bind(i64::try_from(history / 2)?)
    .execute(&env.db)
    .await?;
    sqlx::query("ANALYZE").execute(&env.db).await?;

    let sample = phase(2, "");
    let body_len = sample[0].2.len();
    let raw = raw_rabbit(&env.amqp, n.min(50_000), body_len).await?;
    println!(
        "raw RabbitMQ: publish+confirm {:.0}/s, consume+ack {:.0}/s ({body_len} B)",
        raw.publish_per_s, raw.consume_per_s
    );
    // The workers' own concurrency: four processes, WORKER_CONCURRENCY consumers each
    // (handed to the workers this run starts). Postgres is also measured at 8
    // connections when that differs, and the higher rate is the limit the service is
    // compared with: a low concurrency must not flatter the ratio.
    let concurrency = 4 * per_worker;
    // Start each phase without a checkpoint pending from the bulk inserts.
    sqlx::query("CHECKPOINT").execute(&env.db).await?;
    let mut raw_cpu = Cpu::start(env);
    let mut raw_pg_at = Vec::new();
    for c in [concurrency, 8] {
        if raw_pg_at.iter().any(|(k, _)| *k == c) {
            continue;
        }
        let r = raw_postgres(&env.db, n.min(20_000), accounts, c).await?;
        println!("raw Postgres: one transaction per event at concurrency {c}: {r:.0} events/s");
        raw_pg_at.push((c, r));
    }
    let raw_cpu = raw_cpu.delta(env);
    let raw_pg = raw_pg_at.iter().map(|(_, r)| *r).fold(0.0, f64::max);
    let raw_scans = seq_scans(&env.db).await?;
    println!("raw Postgres phase: sequential scans / rows read: {raw_scans}");
    // Start from the same table sizes the service would see.
    sqlx::query("TRUNCATE inbox, journal, outbox, outbox_pending")
        .execute(&env.db)
        .await?;
    sqlx::query("DELETE FROM tasks WHERE account_id LIKE 'raw-%'")
        .execute(&env.db)
        .await?;
    sqlx::query("DELETE FROM accounts WHERE account_id LIKE 'raw-%'")
        .execute(&env.db)
        .await?;

    sqlx::query("CHECKPOINT").execute(&env.db).await?;
    let seen = listen(&env.amqp, "#").await?;
    let mut startup = Vec::new();
    let mut health = Vec::new();
    let mut bins = workload.workers();
    if arrangement_instalments.is_some() {
        bins.push("arrangement-made-worker");
    }
    for b in bins {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut worker_env = vec![("HEALTH_ADDR", addr.as_str())];
        if let Some(c) = &worker_concurrency {
            worker_env.push(("WORKER_CONCURRENCY", c.as_str()));
        }
        startup.push((b, env.spawn(b, &worker_env, "consuming").await?));
        health.push((b, port));
    }

    let publisher = env.amqp.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    // The contacts workload's accounts are made delinquent first, outside the timing.
    let mut prefill = 0;
    if workload == Workload::Contacts {
        let failures: Vec<(String, Vec<u8>)> = delinquent(dialled)
            .into_iter()
            .map(|(t, _, b)| (t, b))
            .collect();
        prefill = i64::try_from(failures.len())?;
        let t = Instant::now();
        publish_confirmed(&publisher, "collections.events", &failures, 256).await?;
        wait_until(
            "the dialled accounts delinquent",
            Duration::from_secs(600),
            async || {
                env.count("SELECT count(*) FROM inbox").await >= prefill
                    && env.count("SELECT count(*) FROM outbox_pending").await == 0
            },
        )
        .await?;
        println!(
            "prefill: {prefill} payment.failed applied in {:.1} s (not timed)",
            t.elapsed().as_secs_f64()
        );
        sqlx::query("CHECKPOINT").execute(&env.db).await?;
    }

    // Throughput phase.
    let events = phase(n, "");
    let mut cpu = Cpu::start(env);
    let items: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|(t, _, b)| (t.clone(), b.clone()))
        .collect();
    let outbox_before = env.count("SELECT count(*) FROM outbox").await;
    let t = Instant::now();
    publish_confirmed(&publisher, "collections.events", &items, 256).await?;
    let published_in = t.elapsed();
    let want = prefill + i64::try_from(n)?;
    wait_until(
        "every event committed",
        Duration::from_secs(600),
        async || env.count("SELECT count(*) FROM inbox").await >= want,
    )
    .await?;
    wait_until(
        "every task event published",
        Duration::from_secs(120),
        async || {
            let outbox = env.count("SELECT count(*) FROM outbox").await;
            env.count("SELECT count(*) FROM outbox_pending").await == 0
                && seen
                    .lock()
                    .map(|s| s.received as i64 >= outbox)
                    .unwrap_or(false)
        },
    )
    .await?;
    let elapsed = t.elapsed();
    let rate = n as f64 / elapsed.as_secs_f64();
    let outbox_rows = env.count("SELECT count(*) FROM outbox").await - outbox_before;

    // Latency phase at half the measured rate, same mix; latency is measured for the
    // events that cause a task event (a partial payment with nothing to re-rank causes none).
    let throughput_cpu = cpu.delta(env);
    let stages_after_throughput = scrape_stages(&health).await;
    let half = latency_rate.unwrap_or(rate / 2.0).max(1.0);
    let total = (half * latency_secs as f64) as usize;
    let lat_events = phase(total, "l");
    let mut published_at = HashMap::new();
    let wal_before = broker_wal(&env.rabbitmq_mnesia_base);
    let checkpoints_before = env.count(CHECKPOINTS_SQL).await;
    let pg_wal_before = env.count(WAL_LSN_SQL).await;
    let fpi_before = env.count(WAL_FPI_SQL).await;
    let items = lat_events
        .iter()
        .map(|(ty, _, body)| (ty.as_str(), body.as_slice()));
    let (paced, nacks) = publish_paced(&publisher, "collections.events", items, half, |i| {
        published_at.insert(lat_events[i].1.to_string(), Timestamp::now());
    })
    .await;
    let achieved = lat_events.len() as f64 / paced.as_secs_f64();
    let latency_cpu = cpu.delta(env);
    let per_event = |d: i64| d as f64 / lat_events.len().max(1) as f64;
    let checkpoints = grew(checkpoints_before, env.count(CHECKPOINTS_SQL).await)
        .map_or_else(|| "unknown".to_owned(), |d| d.to_string());
    let pg_wal = grew(pg_wal_before, env.count(WAL_LSN_SQL).await).map_or_else(
        || "unknown".to_owned(),
        |d| {
            format!(
                "{:.0} MB, {:.1} KB per event",
                d as f64 / 1e6,
                per_event(d) / 1e3
            )
        },
    );
    let fpi = grew(fpi_before, env.count(WAL_FPI_SQL).await).map_or_else(
        || "unknown".to_owned(),
        |d| format!("{d} ({:.2} per event)", per_event(d)),
    );
    let wal_rolled = match (wal_before, broker_wal(&env.rabbitmq_mnesia_base)) {
        (Some(a), Some(b)) if a == b => "no",
        (Some(_), Some(_)) => "yes",
        _ => "unknown (the broker's data directory is not readable here)",
    };
    if nacks > 0 {
        bail!("{nacks} latency-phase events were not confirmed");
    }
    // The last events are still in flight: polling count(*) now (a scan of the inbox,
    // ten times a second) would take CPU from them and inflate the last second's tail.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let want_all = want + i64::try_from(lat_events.len())?;
    wait_until(
        "latency events committed",
        Duration::from_secs(120),
        async || env.count("SELECT count(*) FROM inbox").await >= want_all,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = env.peak_rss_kib();
    let stages_after_latency = scrape_stages(&health).await;
    // The broker's own part, at the same rate, with the workers idle.
    let mut relay_cpu = Cpu::start(env);
    let relay = raw_relay(env, half, latency_secs, lat_events[0].2.len()).await?;
    let relay_cpu = relay_cpu.delta(env);
    let (latencies, received, duplicates, distinct) = {
        let s = seen.lock().map_err(|_| anyhow::anyhow!("lock"))?;
        let mut l: Vec<f64> = published_at
            .iter()
            .filter_map(|(id, at)| {
                s.first_by_cause
                    .get(id)
                    .map(|got| got.duration_since(*at).as_secs_f64() * 1000.0)
            })
            .collect();
        l.sort_by(f64::total_cmp);
        (l, s.received, s.duplicates, s.ids.len())
    };
    // Where the latency goes: publish -> the applying transaction began (queueing in the
    // broker, the batch in flight before it, the linger), then -> first task event
    // received (transaction, commit, ack, publish with confirm, delivery).
    let ids: Vec<Uuid> = published_at
        .keys()
        .filter_map(|id| id.parse().ok())
        .collect();
    let began: Vec<(Uuid, f64)> = sqlx::query_as(
        "SELECT event_id, extract(epoch FROM applied_at)::float8 FROM inbox WHERE event_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&env.db)
    .await?;
    let (mut to_tx, mut tx_to_task) = (Vec::new(), Vec::new());
    {
        let s = seen.lock().map_err(|_| anyhow::anyhow!("lock"))?;
        for (id, at) in &began {
            let id = id.to_string();
            let (Some(sent), Some(got)) = (published_at.get(&id), s.first_by_cause.get(&id)) else {
                continue;
            };
            let sent = sent.as_microsecond() as f64 / 1e6;
            let got = got.as_microsecond() as f64 / 1e6;
            to_tx.push((at - sent) * 1000.0);
            tx_to_task.push((got - at) * 1000.0);
        }
    }
    to_tx.sort_by(f64::total_cmp);
    tx_to_task.sort_by(f64::total_cmp);
    // The tail by event type and by second of the phase: a slow type or a stall (a
    // checkpoint, a vacuum, the broker's log roll) shows here.
    let (by_type, by_second) = {
        let s = seen.lock().map_err(|_| anyhow::anyhow!("lock"))?;
        let types: HashMap<String, &str> = lat_events
            .iter()
            .map(|(ty, id, _)| (id.to_string(), ty.as_str()))
            .collect();
        let first = published_at.values().min().copied();
        let mut by_type: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut by_second: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for (id, sent) in &published_at {
            let Some(got) = s.first_by_cause.get(id) else {
                continue;
            };
            let ms = got.duration_since(*sent).as_secs_f64() * 1000.0;
            if let Some(ty) = types.get(id) {
                by_type.entry(ty).or_default().push(ms);
            }
            if let Some(first) = first {
                let sec = sent.duration_since(first).as_secs();
                by_second.entry(sec).or_default().push(ms);
            }
        }
        let p99 = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            percentile(&v, 0.99)
        };
        let by_type: Vec<String> = by_type
            .into_iter()
            .map(|(t, v)| format!("{t} {:.1}", p99(v)))
            .collect();
        let by_second: Vec<String> = by_second
            .into_values()
            .map(|v| format!("{:.0}", p99(v)))
            .collect();
        (by_type.join(", "), by_second.join(" "))
    };
    let scans = seq_scans(&env.db).await?;
    let hot = hot_updates(&env.db).await?;
    let inbox = env.count("SELECT count(*) FROM inbox").await;
    let outbox_all = env.count("SELECT count(*) FROM outbox").await;
    let unpublished = env.count("SELECT count(*) FROM outbox_pending").await;

    let ok = inbox == want_all && unpublished == 0 && i64::try_from(distinct)? == outbox_all;
    IngestReport {
        raw,
        raw_pg_at,
        n,
        published_in,
        rate,
        raw_pg,
        outbox_rows,
        achieved,
        half,
        latencies,
        lat_events: lat_events.len(),
        to_tx,
        tx_to_task,
        relay,
        relay_cpu,
        by_type,
        by_second,
        wal_rolled,
        pg_wal,
        fpi,
        checkpoints,
        startup,
        rss,
        stages_after_throughput,
        stages_after_latency,
        raw_cpu,
        throughput_cpu,
        latency_cpu,
        raw_scans,
        scans,
        hot,
        inbox,
        want_all,
        received,
        outbox_all,
        unpublished,
        duplicates,
        distinct,
        ok,
    }
    .print();
    if !ok {
        bail!("loss or duplication detected");
    }
    Ok(())
}
