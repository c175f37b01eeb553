//! `bench api`: the read API under load (issue 20). Seeds open tasks and history, runs
//! the payment-failed worker and `collections-api`, then
//! 1. filtered `/v1/tasks` pages (p50/p99) with no ingest, beside the same page query
//!    run in-process on the store (the database's share);
//! 2. the same pages while ingest runs at a paced rate, with `subscribers` SSE streams
//!    open, each recording the delivery lag of every task event (arrival minus the
//!    event's `time`, which the worker set when it decided).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use collections_store::read::{ReadState, TaskFilter};
use futures::StreamExt;
use jiff::Timestamp;
use uuid::Uuid;

use crate::{
    env::{wait_until, Env},
    report::percentile,
    workload, Settings,
};

/// One run's settings.
pub struct ApiRun {
    /// Open (scheduled) tasks seeded.
    pub open: usize,
    /// Emitted tasks (history) seeded.
    pub history: usize,
    /// Seconds of each measuring phase.
    pub secs: u64,
    /// Ingest rate (payment.failed events/s) during the loaded phase.
    pub rate: f64,
    /// SSE subscribers during the loaded phase.
    pub subscribers: usize,
    /// Concurrent page readers.
    pub clients: usize,
}

/// The page queries: the board's tabs and filters, and the next page of each.
const QUERIES: [&str; 7] = [
    "state=scheduled&limit=100",
    "state=scheduled&kind=collection_call&limit=100",
    "state=scheduled&priority=1&limit=100",
    "state=scheduled&channel=phone_work&tone=firm&limit=100",
    "state=scheduled&due_after=@after&due_before=@before&limit=100",
    "state=due&kind=promise_check&limit=100",
    "state=scheduled&account_id=b-4242",
];

pub async fn api(settings: &Settings, run: ApiRun) -> anyhow::Result<()> {
    let mut env = Env::new(settings).await?;
    let result = phases(&mut env, &run).await;
    env.teardown().await;
    result
}

async fn seed(env: &Env, run: &ApiRun) -> anyhow::Result<()> {
    let accounts = (run.open / 4).max(1000);
    let template =
        serde_json::to_string(&collections_core::AccountState::new("x", "Asia/Shanghai"))?;
    let t = Instant::now();
    sqlx::query(
        "INSERT INTO accounts (account_id, state, status, policy_version)
         SELECT 'b-' || g, jsonb_set($1::jsonb, '{account_id}', to_jsonb('b-' || g)),
                'delinquent', 'bench'
         FROM generate_series(0, $2 - 1) g",
    )
    .bind(&template)
    .bind(i64::try_from(accounts)?)
    .execute(&env.db)
    .await?;
    // Millions of random-uuid keys inserted one by one into six B-trees cost the seed far
    // more than building the indexes once afterwards: drop them (their definitions kept
    // from the catalogue, so they come back exactly as migrated), insert, rebuild.
    let mut tx = env.db.begin().await?;
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname, indexdef FROM pg_indexes
         WHERE schemaname = current_schema() AND tablename = 'tasks'
           AND indexname <> 'tasks_pkey'",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (name, _) in &indexes {
        sqlx::query(&format!("DROP INDEX \"{name}\""))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("ALTER TABLE tasks DROP CONSTRAINT tasks_pkey")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    // Open tasks spread over the next 7 days; history over the last 90.
    for (status, n, sign) in [("scheduled", run.open, 1), ("emitted", run.history, -1)] {
        let chunk = 500_000usize;
        let mut done = 0;
        while done < n {
            let m = chunk.min(n - done);
            sqlx::query(
                "INSERT INTO tasks (task_id, account_id, kind, channel, due_at, priority, tone,
                                    reason, cause_event_id, policy_version, status, emitted_at)
                 SELECT gen_random_uuid(), 'b-' || (g % $1),
                        (ARRAY['collection_call','promise_reminder','promise_check','callback'])[1 + g % 4],
                        (ARRAY['phone_mobile','phone_work','phone_home','sms'])[1 + g % 4],
                        now() + $4 * ((g * 7919) % ($5 * 86400)) * interval '1 second',
                        1 + g % 9, (ARRAY['gentle','firm','serious'])[1 + g % 3],
                        'bench', gen_random_uuid(), 'bench', $2,
                        CASE WHEN $2 = 'emitted' THEN now() END
                 FROM generate_series($3, $3 + $6 - 1) g",
            )
            .bind(i64::try_from(accounts)?)
            .bind(status)
            .bind(i64::try_from(done)?)
            .bind(f64::from(sign))
            .bind(if sign > 0 { 7i64 } else { 90 })
            .bind(i64::try_from(m)?)
            .execute(&env.db)
            .await?;
            done += m;
        }
    }
    let mut conn = env.db.acquire().await?;
    sqlx::query("SET maintenance_work_mem = '1GB'")
        .execute(&mut *conn)
        .await?;
    sqlx::query("ALTER TABLE tasks ADD PRIMARY KEY (task_id)")
        .execute(&mut *conn)
        .await?;
    for (_, def) in &indexes {
        sqlx::query(def).execute(&mut *conn).await?;
    }
    drop(conn);
    sqlx::query("VACUUM ANALYZE tasks").execute(&env.db).await?;
    sqlx::query("VACUUM ANALYZE accounts")
        .execute(&env.db)
        .await?;
    println!(
        "seeded {accounts} accounts, {} open tasks, {} history tasks in {:.0} s",
        run.open,
        run.history,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn query_urls(base: &str) -> Vec<String> {
    let after = Timestamp::now() + jiff::SignedDuration::from_hours(24);
    let before = after + jiff::SignedDuration::from_hours(2);
    let enc = |t: Timestamp| t.to_string().replace('+', "%2B").replace(':', "%3A");
    QUERIES
        .iter()
        .map(|q| {
            format!(
                "{base}/v1/tasks?{}",
                q.replace("@after", &enc(after))
                    .replace("@before", &enc(before))
            )
        })
        .collect()
}

/// Runs `clients` readers for `secs`, each cycling through the queries and following one
/// `next_cursor` after each first page; returns latencies in ms, sorted.
async fn read_pages(base: &str, clients: usize, secs: u64) -> anyhow::Result<Vec<f64>> {
    let urls = Arc::new(query_urls(base));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (urls, lat) = (urls.clone(), lat.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = c;
            while Instant::now() < stop {
                let url = &urls[i % urls.len()];
                i += 1;
                let t = Instant::now();
                let r = http.get(url).send().await?;
                anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
                let page: serde_json::Value = r.json().await?;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                lat.lock().map_err(|_| anyhow::anyhow!("lock"))?.push(ms);
                if let Some(c) = page["next_cursor"].as_str() {
                    let t = Instant::now();
                    let r = http.get(format!("{url}&cursor={c}")).send().await?;
                    anyhow::ensure!(r.status().is_success(), "next page: {}", r.status());
                    let _: serde_json::Value = r.json().await?;
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    lat.lock().map_err(|_| anyhow::anyhow!("lock"))?.push(ms);
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut v = lat.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    v.sort_by(f64::total_cmp);
    Ok(v)
}

/// The same first pages, in-process on the store (no HTTP, no JSON): the database's part.
async fn read_store(env: &Env, secs: u64) -> anyhow::Result<Vec<f64>> {
    let store = collections_store::Store::connect(&env.database_url(), 2).await?;
    let after = Timestamp::now() + jiff::SignedDuration::from_hours(24);
    let filters = [
        TaskFilter {
            state: Some(ReadState::Scheduled),
            ..TaskFilter::default()
        },
        TaskFilter {
            state: Some(ReadState::Scheduled),
            kind: Some("collection_call".into()),
            ..TaskFilter::default()
        },
        TaskFilter {
            state: Some(ReadState::Scheduled),
            priority: Some(1),
            ..TaskFilter::default()
        },
        TaskFilter {
            state: Some(ReadState::Scheduled),
            due_after: Some(after),
            due_before: Some(after + jiff::SignedDuration::from_hours(2)),
            ..TaskFilter::default()
        },
    ];
    let mut v = Vec::new();
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut i = 0;
    while Instant::now() < stop {
        let t = Instant::now();
        store
            .read_tasks(&filters[i % filters.len()], 101, Timestamp::now())
            .await?;
        v.push(t.elapsed().as_secs_f64() * 1000.0);
        i += 1;
    }
    store.pool().close().await;
    v.sort_by(f64::total_cmp);
    Ok(v)
}

/// One SSE subscriber: records `arrival - event.time` in ms for every event.
async fn subscribe(url: String, lags: Arc<Mutex<Vec<f64>>>) -> anyhow::Result<()> {
    let resp = reqwest::get(&url).await?;
    anyhow::ensure!(resp.status().is_success(), "stream: {}", resp.status());
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(at) = buf.find('\n') {
            let line = buf[..at].to_owned();
            buf.drain(..=at);
            if let Some(data) = line.strip_prefix("data:") {
                let now = Timestamp::now();
                let v: serde_json::Value = serde_json::from_str(data.trim())?;
                if let Some(t) = v["time"].as_str().and_then(|t| t.parse::<Timestamp>().ok()) {
                    let ms = now.duration_since(t).as_secs_f64() * 1000.0;
                    lags.lock().map_err(|_| anyhow::anyhow!("lock"))?.push(ms);
                }
            }
        }
    }
    Ok(())
}

fn line(what: &str, v: &[f64]) {
    println!(
        "| {what} | {} | {:.1} | {:.1} | {:.1} |",
        v.len(),
        percentile(v, 0.5),
        percentile(v, 0.99),
        v.last().copied().unwrap_or(f64::NAN)
    );
}

async fn phases(env: &mut Env, run: &ApiRun) -> anyhow::Result<()> {
    seed(env, run).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let base = format!("http://{addr}");
    env.spawn("payment-failed-worker", &[], "consuming").await?;
    env.spawn(
        "collections-api",
        &[
            ("API_ADDR", &addr),
            ("DB_POOL", "16"),
            ("RUST_LOG", "warn,collections_api=info"),
        ],
        "API and board listening",
    )
    .await?;

    println!("| measure | samples | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    let raw = read_store(env, run.secs).await?;
    line("store.read_tasks in-process, 1 client, idle", &raw);
    let idle = read_pages(&base, run.clients, run.secs).await?;
    line(
        &format!("GET /v1/tasks, {} clients, idle", run.clients),
        &idle,
    );

    // Loaded: SSE subscribers from the feed's head, paced ingest, page readers.
    let lags = Arc::new(Mutex::new(Vec::new()));
    let mut subs = Vec::new();
    for _ in 0..run.subscribers {
        subs.push(tokio::spawn(subscribe(
            format!("{base}/v1/task-events/stream"),
            lags.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = (run.rate * run.secs as f64) as usize;
    let zone = "Asia/Shanghai";
    let bodies: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let a = format!("new-{i}");
            let id = Uuid::new_v4();
            let body = serde_json::json!({
                "specversion": "1.0", "id": id, "source": "bench", "type": "payment.failed",
                "time": Timestamp::now(), "subject": a, "datacontenttype": "application/json",
                "data": {
                    "account_id": a, "customer": {"timezone": zone},
                    "installment": {"number": 2, "due_date": "2026-01-05",
                                    "amount": {"minor": 100_000, "currency": "CNY"}},
                    "overdue_amount": {"minor": 100_000, "currency": "CNY"},
                    "failure_reason": "insufficient_funds", "attempted_at": Timestamp::now(),
                }
            });
            ("payment.failed".to_owned(), body.to_string().into_bytes())
        })
        .collect();
    let ch = env.amqp.create_channel().await?;
    ch.confirm_select(Default::default()).await?;
    let rate = run.rate;
    let publisher = tokio::spawn(async move {
        let items = bodies.iter().map(|(k, b)| (k.as_str(), b.as_slice()));
        workload::publish_paced(&ch, "collections.events", items, rate, |_| {}).await
    });
    let loaded = read_pages(&base, run.clients, run.secs).await?;
    let (paced, nacks) = publisher.await?;
    anyhow::ensure!(nacks == 0, "{nacks} publishes not confirmed");
    wait_until(
        "every event applied",
        Duration::from_secs(300),
        async || {
            env.count("SELECT count(*) FROM inbox").await >= i64::try_from(n).unwrap_or(i64::MAX)
        },
    )
    .await?;
    let applied = env.count("SELECT count(*) FROM inbox").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for s in &subs {
        s.abort();
    }
    line(
        &format!(
            "GET /v1/tasks, {} clients, ingest {:.0} events/s",
            run.clients, run.rate
        ),
        &loaded,
    );
    let mut lag = lags.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    lag.sort_by(f64::total_cmp);
    line(
        &format!(
            "SSE delivery lag (event time -> arrival), {} subscribers",
            run.subscribers
        ),
        &lag,
    );
    // The raw limit of this machine for a page: the same query in-process, no HTTP.
    let floor = percentile(&raw, 0.99);
    println!(
        "\nGET /v1/tasks p99 over the in-process query's p99 ({floor:.1} ms): idle {:.2}x, \
         under ingest {:.2}x",
        percentile(&idle, 0.99) / floor,
        percentile(&loaded, 0.99) / floor
    );
    let outbox = env
        .count("SELECT count(*) FROM outbox WHERE exchange = 'collections.tasks'")
        .await;
    println!(
        "\ningest: {n} events paced over {:.1} s ({:.0}/s achieved), {applied} applied, \
         {outbox} task events; {} deliveries to {} subscribers ({} each expected)",
        paced.as_secs_f64(),
        n as f64 / paced.as_secs_f64(),
        lag.len(),
        run.subscribers,
        outbox
    );
    Ok(())
}
