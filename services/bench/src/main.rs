//! Benchmarks. Each run measures the machine's raw limits (RabbitMQ confirmed publish and
//! acked consume with lapin, Postgres one-transaction-per-event with sqlx) and the real
//! service binaries in the same run, and prints the ratio.
//!
//! ```sh
//! cargo build --release --bins
//! cargo run --release -p bench -- ingest --events 50000 --accounts 100000
//! cargo run --release -p bench -- scheduler --future 1000000 --backlog 200000
//! ```

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, Connection, Consumer,
};
use serde_json::{json, Value};
use sqlx::{postgres::PgPoolOptions, Connection as _, PgConnection, PgPool};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "Collections service benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Inbound events to published task events, beside raw RabbitMQ and Postgres limits.
    Ingest {
        /// Events in the throughput phase.
        #[arg(long, default_value_t = 50_000)]
        events: usize,
        /// Accounts the events are spread over (pre-created in the database).
        #[arg(long, default_value_t = 100_000)]
        accounts: usize,
        /// Seconds of the paced latency phase (at half the measured rate).
        #[arg(long, default_value_t = 10)]
        latency_secs: u64,
        /// Events/s of the latency phase instead of half the measured rate.
        #[arg(long)]
        latency_rate: Option<f64>,
        /// Emitted (historical) tasks seeded before the run, as a live system has them
        /// (default: one per account, at most 200,000).
        #[arg(long)]
        history: Option<usize>,
    },
    /// Task firing precision with many future tasks, and backlog drain rate.
    Scheduler {
        /// Future tasks in the table during the lateness phase.
        #[arg(long, default_value_t = 1_000_000)]
        future: usize,
        /// Tasks per second planned due soon during the lateness phase.
        #[arg(long, default_value_t = 1000)]
        rate: usize,
        /// Seconds of the lateness phase.
        #[arg(long, default_value_t = 20)]
        secs: u64,
        /// Already-due tasks in the drain phase.
        #[arg(long, default_value_t = 200_000)]
        backlog: usize,
        /// Tasks per claim (`SCHEDULER_BATCH` of the scheduler).
        #[arg(long, default_value_t = 5000)]
        batch: usize,
        /// How long after insertion a due-soon task is due, in ms.
        #[arg(long, default_value_t = 2000)]
        lead_ms: u64,
        /// `pg_notify` the scheduler after every insert (by default only when the tasks
        /// are due within 1 s, like the workers; otherwise its 1 s poll finds them).
        #[arg(long)]
        notify: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Ingest {
            events,
            accounts,
            latency_secs,
            latency_rate,
            history,
        } => {
            let history = history.unwrap_or(accounts.min(200_000));
            ingest(events, accounts, latency_secs, latency_rate, history).await
        }
        Cmd::Scheduler {
            future,
            rate,
            secs,
            backlog,
            batch,
            lead_ms,
            notify,
        } => {
            let lateness = Lateness {
                future,
                rate,
                secs,
                lead_ms,
                notify: notify || lead_ms <= 1000,
            };
            scheduler(lateness, backlog, batch).await
        }
    }
}

// ---------------------------------------------------------------------------------------
// Environment: a private database and vhost, the release binaries.

struct Env {
    name: String,
    admin_url: String,
    database_url: String,
    amqp_url: String,
    db: PgPool,
    amqp: Connection,
    children: Vec<(String, Child)>,
}

/// Checkpoints Postgres has counted (timed and requested), from its statistics view
/// (Postgres 15 and 16; `-1` where the view differs).
const CHECKPOINTS_SQL: &str = "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter";

/// Full-page images Postgres has written to its WAL (Postgres 14 and later).
const WAL_FPI_SQL: &str = "SELECT wal_fpi FROM pg_stat_wal";

/// Postgres's current WAL position in bytes.
const WAL_LSN_SQL: &str = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint";

/// The newest write-ahead log file of the local broker's quorum queues, if its data
/// directory is readable. RabbitMQ starts a new file every `raft.wal_max_size_bytes`
/// (512 MiB by default) and then writes the old one out to segment files: on these two
/// cores that burst shows as a second of higher latency, so a run reports whether one fell
/// inside its latency phase.
fn broker_wal() -> Option<String> {
    let base =
        std::env::var("RABBITMQ_MNESIA_BASE").unwrap_or_else(|_| "/var/lib/rabbitmq/mnesia".into());
    let mut newest: Option<String> = None;
    for node in std::fs::read_dir(base).ok()?.flatten() {
        let Ok(nodes) = std::fs::read_dir(node.path().join("quorum")) else {
            continue;
        };
        for dir in nodes.flatten() {
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.path().display().to_string();
                if name.ends_with(".wal") && newest.as_ref().is_none_or(|n| name > *n) {
                    newest = Some(name);
                }
            }
        }
    }
    newest
}

/// The Postgres settings the figures depend on most, printed with every run: the same
/// binaries on the same machine give other figures when these differ (BENCHMARKS.md).
async fn server_settings(db: &PgPool) -> anyhow::Result<String> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, current_setting(name) FROM unnest(ARRAY['server_version',
             'shared_buffers', 'synchronous_commit', 'wal_compression', 'autovacuum']) name",
    )
    .fetch_all(db)
    .await?;
    let list: Vec<String> = rows.iter().map(|(k, v)| format!("{k} {v}")).collect();
    Ok(format!("Postgres: {}", list.join(", ")))
}

fn with_path(url: &str, path: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let query = tail
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{scheme}://{authority}/{path}{query}")
}

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .context("rabbitmqctl (the benchmark makes its own vhost)")?;
    if !out.status.success() {
        bail!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl Env {
    async fn new() -> anyhow::Result<Self> {
        let name = format!("bench_{}", &Uuid::new_v4().simple().to_string()[..8]);
        let admin_url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let base_amqp = std::env::var("AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let mut admin = PgConnection::connect(&admin_url).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        rabbitmqctl(&["add_vhost", &name])?;
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"])?;
        let database_url = with_path(&admin_url, &name);
        let amqp_url = with_path(&base_amqp, &name);
        let db = PgPoolOptions::new()
            .max_connections(24)
            .connect(&database_url)
            .await?;
        collections_store_migrate(&database_url).await?;
        let amqp = collections_bus::connect(&amqp_url, "bench").await?;
        collections_bus::declare_topology_on(&amqp).await?;
        Ok(Self {
            name,
            admin_url,
            database_url,
            amqp_url,
            db,
            amqp,
            children: Vec::new(),
        })
    }

    /// Starts a release binary; returns how long it took until it logged `ready_line`.
    async fn spawn(
        &mut self,
        bin: &str,
        env: &[(&str, &str)],
        ready_line: &str,
    ) -> anyhow::Result<Duration> {
        // BENCH_BIN_DIR compares another build of the binaries (A/B runs).
        let dir = std::env::var_os("BENCH_BIN_DIR").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release"),
            PathBuf::from,
        );
        let path = dir.join(bin);
        if !path.exists() {
            bail!(
                "{} is missing: run `cargo build --release --bins` first",
                path.display()
            );
        }
        let started = Instant::now();
        let mut child = Command::new(path)
            .env("DATABASE_URL", &self.database_url)
            .env("AMQP_URL", &self.amqp_url)
            .env("RUST_LOG", "warn,collections_runtime=info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let needle = format!("\"message\":\"{ready_line}\"");
        let ready = loop {
            match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
                Ok(Ok(Some(l))) if l.contains(&needle) => break started.elapsed(),
                Ok(Ok(Some(_))) => {}
                _ => bail!("{bin} did not become ready"),
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.children.push((bin.to_owned(), child));
        Ok(ready)
    }

    fn peak_rss_kib(&self) -> Vec<(String, u64)> {
        self.children
            .iter()
            .filter_map(|(name, c)| {
                let pid = c.id()?;
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let kib = status
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                Some((name.clone(), kib))
            })
            .collect()
    }

    async fn stop(&mut self) {
        for (_, c) in &mut self.children {
            if let Some(pid) = c.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            let _ = tokio::time::timeout(Duration::from_secs(20), c.wait()).await;
        }
        self.children.clear();
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db)
            .await
            .unwrap_or(-1)
    }

    async fn teardown(mut self) {
        self.stop().await;
        self.db.close().await;
        let _ = self.amqp.close(200, "bye".into()).await;
        let _ = rabbitmqctl(&["delete_vhost", &self.name]);
        if let Ok(mut admin) = PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)
            .await;
        }
    }
}

/// Applies the store's migrations with the store's own code, as the binaries do.
async fn collections_store_migrate(url: &str) -> anyhow::Result<()> {
    let store = collections_store::Store::connect(url, 1).await?;
    store.migrate().await?;
    store.pool().close().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// CPU accounting from /proc: where the two cores went during a phase.

/// CPU seconds by group: the service binaries, Postgres, RabbitMQ (beam), this benchmark.
/// The last entry is everything else on the machine (total busy time from /proc/stat
/// minus the four groups): other users' builds and tests disturb a 2-core machine.
fn cpu_snapshot(env: &Env) -> [f64; 5] {
    let ticks = 100.0; // USER_HZ on Linux
    let children: HashSet<u32> = env.children.iter().filter_map(|(_, c)| c.id()).collect();
    let me = std::process::id();
    let mut out = [0.0; 5];
    if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
        if let Some(cpu) = stat.lines().next() {
            let v: Vec<f64> = cpu
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal
            let busy: f64 = v
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
                .map(|(_, x)| x)
                .sum();
            out[4] = busy / ticks;
        }
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ... utime(14) stime(15)"
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let f: Vec<&str> = tail.split_whitespace().collect();
        let used = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // Fields after the comm start at field 3 (state), so utime (14) is index 11.
        let secs = (used(11) + used(12)) / ticks;
        let group = if children.contains(&pid) {
            0
        } else if comm == "postgres" {
            1
        } else if comm.starts_with("beam") || comm.starts_with("erl") {
            2
        } else if pid == me {
            3
        } else {
            continue;
        };
        out[group] += secs;
    }
    out[4] -= out[0] + out[1] + out[2] + out[3];
    out
}

struct Cpu {
    at: Instant,
    last: [f64; 5],
}

struct CpuDelta {
    wall: f64,
    secs: [f64; 5],
}

impl CpuDelta {
    /// CPU of every process on the machine per event, in microseconds, and the share of
    /// all cores busy: how the cost of an event moves with the rate.
    fn per_event(&self, events: usize) -> String {
        let total: f64 = self.secs.iter().sum();
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        format!(
            "{:.0} µs ({:.0} % of the {cores} cores busy)",
            total / events.max(1) as f64 * 1e6,
            total / self.wall.max(1e-9) / cores as f64 * 100.0
        )
    }

    fn describe(&self) -> String {
        let cores = |s: f64| s / self.wall.max(1e-9);
        let parts: Vec<String> = self
            .secs
            .iter()
            .map(|s| format!("{s:.1} s ({:.2} cores)", cores(*s)))
            .collect();
        parts.join(" / ")
    }
}

impl Cpu {
    fn start(env: &Env) -> Self {
        Self {
            at: Instant::now(),
            last: cpu_snapshot(env),
        }
    }

    /// CPU used since the last call (processes that exited in between are not counted).
    fn delta(&mut self, env: &Env) -> CpuDelta {
        let now = cpu_snapshot(env);
        let mut secs = [0.0; 5];
        for (i, s) in secs.iter_mut().enumerate() {
            *s = (now[i] - self.last[i]).max(0.0);
        }
        let wall = self.at.elapsed().as_secs_f64();
        self.at = Instant::now();
        self.last = now;
        CpuDelta { wall, secs }
    }
}

// ---------------------------------------------------------------------------------------
// Raw limits.

/// Queues one persistent publish on the connection now, in call order (its first poll
/// registers the confirm tag and queues the frames), and returns the wait for its write
/// and confirm: `true` if the broker did not confirm it. Awaiting each publish before
/// queueing the next would cost a hand-off to lapin's I/O thread and a socket write per
/// message, and understate what the broker takes.
async fn queue_publish<'a>(
    ch: &'a Channel,
    exchange: &'a str,
    routing_key: &'a str,
    body: &'a [u8],
) -> impl std::future::Future<Output = bool> + 'a {
    let mut send = Box::pin(futures::future::maybe_done(ch.basic_publish(
        exchange.into(),
        routing_key.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default().with_delivery_mode(2),
    )));
    let _queued = futures::poll!(send.as_mut());
    async move {
        send.as_mut().await;
        match send.as_mut().take_output() {
            Some(Ok(confirm)) => confirm.await.map(|c| c.is_nack()).unwrap_or(true),
            _ => true,
        }
    }
}

/// Publishes `items` persistently with confirms, `window` at a time: the whole window is
/// queued (see [`queue_publish`]), then its confirms are awaited.
async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    items: &[(String, Vec<u8>)],
    window: usize,
) -> anyhow::Result<()> {
    for chunk in items.chunks(window.max(1)) {
        let mut waits = Vec::with_capacity(chunk.len());
        for (rk, body) in chunk {
            waits.push(queue_publish(ch, exchange, rk, body).await);
        }
        for wait in waits {
            if wait.await {
                bail!("a publish to {exchange} was not confirmed");
            }
        }
    }
    Ok(())
}

/// Publishes `items` (routing key, body) to `exchange` paced at `rate` per second. Each
/// is handed to the connection when it comes due, without waiting for it to be written or
/// confirmed (sends and confirms are settled while the loop waits for the next due time):
/// the pacing never waits on the broker, and the items due within one timer tick (1 ms)
/// leave in one socket write, as any buffering client's would, instead of costing the
/// broker a read each. `sent(i)` is called as item `i` leaves. Returns the time the pacing
/// took and how many items the broker did not confirm.
async fn publish_paced<'a>(
    ch: &'a Channel,
    exchange: &'a str,
    items: impl Iterator<Item = (&'a str, &'a [u8])>,
    rate: f64,
    mut sent: impl FnMut(usize),
) -> (Duration, usize) {
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut nacks = 0usize;
    let start = Instant::now();
    for (i, (rk, body)) in items.enumerate() {
        let due = tokio::time::Instant::from_std(start + Duration::from_secs_f64(i as f64 / rate));
        loop {
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(due) => break,
                Some(nacked) = inflight.next(), if !inflight.is_empty() => {
                    nacks += usize::from(nacked);
                }
            }
        }
        sent(i);
        inflight.push(queue_publish(ch, exchange, rk, body).await);
    }
    let paced = start.elapsed();
    while let Some(nacked) = inflight.next().await {
        nacks += usize::from(nacked);
    }
    (paced, nacks)
}

/// Arguments declaring a quorum queue.
fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

/// `after - before` of a counter read twice, unless either read failed (`-1`).
fn grew(before: i64, after: i64) -> Option<i64> {
    (before >= 0 && after >= before).then_some(after - before)
}

struct RawRabbit {
    publish_per_s: f64,
    consume_per_s: f64,
}

async fn raw_rabbit(conn: &Connection, n: usize, body_len: usize) -> anyhow::Result<RawRabbit> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let q = format!("bench.raw.{}", Uuid::new_v4().simple());
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        quorum_args(),
    )
    .await?;
    let body = vec![b'x'; body_len];
    let items: Vec<(String, Vec<u8>)> = (0..n).map(|_| (q.clone(), body.clone())).collect();
    let t = Instant::now();
    publish_confirmed(&ch, "", &items, 256).await?;
    let publish_per_s = n as f64 / t.elapsed().as_secs_f64();

    let cch = conn.create_channel().await?;
    cch.basic_qos(128, BasicQosOptions::default()).await?;
    let mut consumer = cch
        .basic_consume(
            q.as_str().into(),
            "raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let t = Instant::now();
    let mut got = 0;
    while got < n {
        let d = consumer.next().await.context("consumer ended")??;
        got += 1;
        // Multiple-ack every 64, as the workers ack once per batch.
        if got % 64 == 0 || got == n {
            d.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
    let consume_per_s = n as f64 / t.elapsed().as_secs_f64();
    ch.queue_delete(q.as_str().into(), Default::default())
        .await?;
    Ok(RawRabbit {
        publish_per_s,
        consume_per_s,
    })
}

/// The broker's own part of the publish-to-task-event latency, with no service code and no
/// database: events paced at `rate` for `secs` into a quorum queue, a consumer on its own
/// connection (as a worker has) that takes what has arrived, acks it with one
/// multiple-ack and republishes each message with confirms to a queue the benchmark
/// listens on. Returns the latencies in ms, sorted.
async fn raw_relay(env: &Env, rate: f64, secs: u64, body_len: usize) -> anyhow::Result<Vec<f64>> {
    let n = ((rate * secs as f64) as usize).max(1);
    let tag = Uuid::new_v4().simple().to_string();
    let inq = format!("bench.relay.in.{tag}");
    let ch = env.amqp.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(inq.as_str().into(), durable, quorum_args())
        .await?;
    let lch = env.amqp.create_channel().await?;

    // Listener: the receipt time of each message, by the index in its first 8 bytes.
    let got: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; n]));
    let (outq, mut listener) = exclusive_consumer(&lch, "relay-listener").await?;
    let sink = got.clone();
    let listening = tokio::spawn(async move {
        let mut seen = 0;
        while let Some(Ok(d)) = listener.next().await {
            let at = Instant::now();
            let Some(i) = d
                .data
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
            else {
                continue;
            };
            if let Ok(mut g) = sink.lock() {
                if let Some(slot) = g.get_mut(usize::try_from(i).unwrap_or(usize::MAX)) {
                    if slot.is_none() {
                        *slot = Some(at);
                        seen += 1;
                    }
                }
            }
            if seen == n {
                break;
            }
        }
    });

    // Relay, on a connection of its own.
    let relay_conn = collections_bus::connect(&env.amqp_url, "bench-relay").await?;
    let rch = relay_conn.create_channel().await?;
    rch.basic_qos(128, BasicQosOptions::default()).await?;
    let pch = relay_conn.create_channel().await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut consumer = rch
        .basic_consume(
            inq.as_str().into(),
            "relay".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let relay_outq = outq.clone();
    let relaying = tokio::spawn(async move {
        let mut relayed = 0;
        while relayed < n {
            let first = consumer.next().await.context("relay consumer ended")??;
            let mut batch = vec![first];
            while let Some(Some(d)) = futures::FutureExt::now_or_never(consumer.next()) {
                batch.push(d?);
            }
            relayed += batch.len();
            if let Some(last) = batch.last() {
                last.acker.ack(BasicAckOptions { multiple: true }).await?;
            }
            let mut waits = Vec::with_capacity(batch.len());
            for d in &batch {
                waits.push(queue_publish(&pch, "", &relay_outq, &d.data).await);
            }
            for w in waits {
                if w.await {
                    bail!("a relayed message was not confirmed");
                }
            }
        }
        Ok::<_, anyhow::Error>((rch, pch))
    });

    // Paced publisher, as in the latency phase.
    let bodies: Vec<Vec<u8>> = (0..n as u64)
        .map(|i| {
            let mut b = vec![b'x'; body_len.max(8)];
            b[..8].copy_from_slice(&i.to_le_bytes());
            b
        })
        .collect();
    let mut sent_at = Vec::with_capacity(n);
    let items = bodies.iter().map(|b| (inq.as_str(), b.as_slice()));
    let (_, nacks) = publish_paced(&ch, "", items, rate, |_| sent_at.push(Instant::now())).await;
    if nacks > 0 {
        bail!("{nacks} relay-phase events were not confirmed");
    }
    // The relay ends once it has republished (and had confirmed) every message, or with
    // its error; the listener then has them all within moments.
    let (rch, pch) = tokio::time::timeout(Duration::from_secs(60), relaying)
        .await
        .context("the relay did not pass every message on within 60 s")???;
    drop((rch, pch));
    tokio::time::timeout(Duration::from_secs(10), listening)
        .await
        .context("relayed messages did not reach the listener within 10 s")??;
    let _ = relay_conn.close(200, "bye".into()).await;
    ch.queue_delete(inq.as_str().into(), Default::default())
        .await?;
    let got = got.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    let mut l: Vec<f64> = sent_at
        .iter()
        .zip(got.iter())
        .filter_map(|(s, g)| g.map(|g| g.duration_since(*s).as_secs_f64() * 1000.0))
        .collect();
    l.sort_by(f64::total_cmp);
    Ok(l)
}

/// The workers' per-event work, one transaction per event, at `concurrency`, in the
/// fewest round trips the work allows (the same shape as the workers' transaction):
/// `BEGIN`; the read half (`collections_open_batch`: inbox row, account created if missing
/// and locked, open tasks loaded); the write half in one statement (account state, open
/// calls cancelled, a task inserted, two journal lines, an outbox row and its
/// `outbox_pending` entry); `COMMIT`.
async fn raw_postgres(
    db: &PgPool,
    n: usize,
    accounts: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let state = serde_json::to_value(collections_core::AccountState::new("x", "Asia/Shanghai"))?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (db, next, state) = (db.clone(), next.clone(), state.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, sqlx::Error>(());
                }
                let account = format!("raw-{}", (i * 7919) % accounts);
                let event = Uuid::new_v4();
                let mut tx = db.begin().await?;
                sqlx::query("SELECT * FROM collections_open_batch(ARRAY[$1::uuid], ARRAY['payment.failed'], ARRAY[$2::text])")
                    .bind(event).bind(&account).fetch_all(&mut *tx).await?;
                let task = Uuid::new_v4();
                sqlx::query(
                    "WITH acc AS (
                         UPDATE accounts SET state = $3, status = 'delinquent', overdue_minor = 1,
                                policy_version = 'raw', updated_at = now()
                         WHERE account_id = $2),
                     cancelled AS (
                         UPDATE tasks SET status = 'cancelled', cancelled_at = now(), cancel_reason = 'raw'
                         WHERE account_id = $2 AND status IN ('scheduled', 'claimed') AND kind = 'collection_call'),
                     planned AS (
                         INSERT INTO tasks (task_id, account_id, kind, channel, due_at, priority, tone,
                                            reason, cause_event_id, policy_version)
                         VALUES ($1, $2, 'collection_call', 'phone_mobile', now(), 6, 'gentle',
                                 'raw benchmark', $4, 'raw')),
                     noted AS (
                         INSERT INTO journal (account_id, event_id, kind, detail, policy_version, decided_at)
                         SELECT $2, $4, k, 'raw benchmark journal line of typical length', 'raw', now()
                         FROM unnest(ARRAY['event_applied', 'task_planned']) k),
                     sent AS (
                         INSERT INTO outbox (event_id, account_id, exchange, routing_key, body)
                         VALUES ($5, $2, 'collections.tasks', 'task.scheduled.collection_call', $3)
                         RETURNING id)
                     INSERT INTO outbox_pending (id, lease_until)
                     SELECT id, now() + interval '10 seconds' FROM sent",
                )
                .bind(task).bind(&account).bind(&state).bind(event).bind(Uuid::new_v4())
                .execute(&mut *tx).await?;
                tx.commit().await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------------------
// A listener on the task exchange.

#[derive(Default)]
struct Seen {
    received: usize,
    ids: HashSet<String>,
    duplicates: usize,
    /// First task event per cause event id.
    first_by_cause: HashMap<String, Timestamp>,
    /// `task.due` lateness in ms.
    lateness_ms: Vec<f64>,
}

/// The parts of a task event the listener reads.
#[derive(serde::Deserialize)]
struct TaskEventView<'a> {
    #[serde(borrow)]
    id: &'a str,
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow)]
    data: TaskDataView<'a>,
}

#[derive(serde::Deserialize)]
struct TaskDataView<'a> {
    #[serde(borrow, default)]
    cause_event_id: Option<&'a str>,
    #[serde(borrow, default)]
    due_at: Option<&'a str>,
}

/// An exclusive, server-named queue on `ch` and a no-ack consumer of it, as the
/// benchmark's listeners use: returns the queue's name (for binding) and the consumer.
async fn exclusive_consumer(ch: &Channel, tag: &str) -> anyhow::Result<(String, Consumer)> {
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?
        .name()
        .to_string();
    let consumer = ch
        .basic_consume(
            q.as_str().into(),
            tag.into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((q, consumer))
}

async fn listen(conn: &Connection, key: &str) -> anyhow::Result<Arc<Mutex<Seen>>> {
    let ch = conn.create_channel().await?;
    let (q, mut consumer) = exclusive_consumer(&ch, "bench").await?;
    ch.queue_bind(
        q.as_str().into(),
        "collections.tasks".into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = seen.clone();
    tokio::spawn(async move {
        let _keep = ch;
        while let Some(Ok(d)) = consumer.next().await {
            let now = Timestamp::now();
            // Only the fields the figures need, borrowed: the listener shares the two
            // cores with what it measures, so it should cost as little as it can.
            let Ok(v) = serde_json::from_slice::<TaskEventView<'_>>(&d.data) else {
                continue;
            };
            let Ok(mut s) = sink.lock() else { return };
            s.received += 1;
            if !s.ids.insert(v.id.to_owned()) {
                s.duplicates += 1;
            }
            if let Some(cause) = v.data.cause_event_id {
                if !s.first_by_cause.contains_key(cause) {
                    s.first_by_cause.insert(cause.to_owned(), now);
                }
            }
            if v.kind == "task.due" {
                if let Some(due) = v.data.due_at.and_then(|t| t.parse::<Timestamp>().ok()) {
                    s.lateness_ms
                        .push(now.duration_since(due).as_secs_f64() * 1000.0);
                }
            }
        }
    });
    Ok(seen)
}

/// A worker's batch figures so far, from its `/metrics`.
#[derive(Clone, Copy, Default)]
struct Stage {
    /// Seconds spent applying batches.
    seconds: f64,
    /// Batches applied.
    batches: f64,
    /// Events consumed.
    events: f64,
    /// Seconds in each step of the committed transactions (`STEPS`), and their number.
    steps: [f64; 5],
    stepped: f64,
}

/// The steps of a batch transaction, as the workers label them.
const STEPS: [&str; 5] = ["begin", "read", "decide", "write", "commit"];

async fn scrape_stages<'a>(health: &[(&'a str, u16)]) -> Vec<(&'a str, Stage)> {
    let mut out = Vec::new();
    for (b, port) in health {
        // One scrape per worker: every figure comes from the same snapshot.
        let text = get_metrics(*port).await.unwrap_or_default();
        let apply = |suffix: &str| {
            sample_total(
                &text,
                &format!("collections_batch_apply_seconds{suffix}"),
                "",
            )
        };
        let step = |suffix: &str, step: &str| {
            sample_total(
                &text,
                &format!("collections_batch_step_seconds{suffix}"),
                &format!("step=\"{step}\""),
            )
        };
        out.push((
            *b,
            Stage {
                seconds: apply("_sum"),
                batches: apply("_count"),
                events: sample_total(&text, "collections_events_total", ""),
                steps: STEPS.map(|st| step("_sum", st)),
                stepped: step("_count", STEPS[0]),
            },
        ));
    }
    out
}

async fn get_metrics(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: bench\r\n\r\n")
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    Some(out)
}

/// The sum of the samples named `sample` (e.g. `x_count`, over all its label sets) whose
/// labels contain `label` (empty: every sample), in Prometheus text.
fn sample_total(text: &str, sample: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(sample)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !f().await {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        // Coarse enough that the benchmark's own count(*) polling stays negligible.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Ingest.

fn cny(minor: i64) -> Value {
    json!({"minor": minor, "currency": "CNY"})
}

fn event(ty: &str, account: &str, data: Value) -> (String, Uuid, Vec<u8>) {
    let id = Uuid::new_v4();
    let body = json!({
        "specversion": "1.0", "id": id, "source": "bench", "type": ty,
        "time": Timestamp::now(), "subject": account,
        "datacontenttype": "application/json", "data": data,
    });
    (ty.to_owned(), id, body.to_string().into_bytes())
}

/// How many failures a follow-up event trails its account's failure by, in the stream.
const FOLLOW_LAG: usize = 1000;

/// A realistic mix, interleaved: half `payment.failed`, a quarter `promise.made` and a
/// quarter partial `payment.received`. Each account's sequence is a failure followed,
/// about `2 * FOLLOW_LAG` events later, by its promise or partial payment, so the later
/// event finds a delinquent account while all three queues are busy at once.
fn mix(n: usize, accounts: usize, salt: &str) -> Vec<(String, Uuid, Vec<u8>)> {
    let failing = n.div_ceil(2);
    let follow = n - failing;
    let today = Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap_or(jiff::tz::TimeZone::UTC))
        .date();
    let acc = |i: usize| format!("acc-{salt}{}", (i * 7919) % accounts);
    let failure = |i: usize| {
        let a = acc(i);
        event(
            "payment.failed",
            &a,
            json!({
            "account_id": a, "customer": {"timezone": "Asia/Shanghai"},
            "installment": {"number": 2, "due_date": today.to_string(), "amount": cny(150_000)},
            "overdue_amount": cny(150_000), "failure_reason": "insufficient_funds",
            "attempted_at": Timestamp::now()}),
        )
    };
    let follow_up = |i: usize| {
        let a = acc(i);
        if i.is_multiple_of(2) {
            event(
                "promise.made",
                &a,
                json!({
                "account_id": a, "promise_id": format!("p-{salt}{i}"), "amount": cny(150_000),
                "promised_at": Timestamp::now() + SignedDuration::from_hours(5),
                "captured_by": "bench", "channel": "phone_mobile"}),
            )
        } else {
            event(
                "payment.received",
                &a,
                json!({
                "account_id": a, "payment_id": format!("pay-{salt}{i}"), "amount": cny(50_000),
                "received_at": Timestamp::now()}),
            )
        }
    };
    let lag = FOLLOW_LAG.min(failing / 4);
    let mut out = Vec::with_capacity(n);
    let mut next = 0;
    for i in 0..failing {
        out.push(failure(i));
        if i >= lag && next < follow {
            out.push(follow_up(next));
            next += 1;
        }
    }
    out.extend((next..follow).map(follow_up));
    out
}

/// Sequential scans and rows they read per table so far (the statistics are cumulative;
/// the benchmark's own count(*) polls read `inbox` and `outbox`).
async fn seq_scans(db: &PgPool) -> anyhow::Result<String> {
    // Let the statistics collector catch up.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, seq_scan, seq_tup_read FROM pg_stat_user_tables
         WHERE relname IN ('inbox', 'accounts', 'tasks', 'journal', 'outbox') ORDER BY relname",
    )
    .fetch_all(db)
    .await?;
    let indexes: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT indexrelname::text, idx_scan, idx_tup_read FROM pg_stat_user_indexes
         WHERE relname = 'tasks' ORDER BY indexrelname",
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .iter()
        .map(|(t, n, r)| format!("{t} {n}/{r}"))
        .chain(
            indexes
                .iter()
                .map(|(i, n, r)| format!("index {i}: {n} scans/{r} entries")),
        )
        .collect::<Vec<_>>()
        .join(", "))
}

/// Updates so far that were HOT (no new index entries), per table that the batches update.
async fn hot_updates(db: &PgPool) -> anyhow::Result<String> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
         WHERE relname IN ('accounts', 'tasks') ORDER BY relname",
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .iter()
        .map(|(t, upd, hot)| {
            format!(
                "{t} {hot} of {upd} ({:.0} %)",
                *hot as f64 * 100.0 / (*upd).max(1) as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", "))
}

async fn ingest(
    n: usize,
    accounts: usize,
    latency_secs: u64,
    latency_rate: Option<f64>,
    history: usize,
) -> anyhow::Result<()> {
    // The private database and vhost go whatever happens, a failed run included.
    let mut env = Env::new().await?;
    let result = ingest_in(&mut env, n, accounts, latency_secs, latency_rate, history).await;
    env.teardown().await;
    result
}

async fn ingest_in(
    env: &mut Env,
    n: usize,
    accounts: usize,
    latency_secs: u64,
    latency_rate: Option<f64>,
    history: usize,
) -> anyhow::Result<()> {
    println!(
        "bench ingest: {n} events over {accounts} accounts, {history} historical tasks (db {}, vhost {})",
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
    sqlx::query("ANALYZE").execute(&env.db).await?;

    let sample = mix(2, accounts, "");
    let body_len = sample[0].2.len();
    let raw = raw_rabbit(&env.amqp, n.min(50_000), body_len).await?;
    println!(
        "raw RabbitMQ: publish+confirm {:.0}/s, consume+ack {:.0}/s ({body_len} B)",
        raw.publish_per_s, raw.consume_per_s
    );
    // The workers' own concurrency: four processes, WORKER_CONCURRENCY consumers each
    // (inherited by the workers this run starts). Postgres is also measured at 8
    // connections when that differs, and the higher rate is the limit the service is
    // compared with: a low concurrency must not flatter the ratio.
    let per_worker: usize = match std::env::var("WORKER_CONCURRENCY") {
        Ok(v) => v.parse().context("WORKER_CONCURRENCY")?,
        Err(_) => collections_runtime::config::DEFAULT_CONCURRENCY,
    };
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
    for b in [
        "payment-failed-worker",
        "promise-made-worker",
        "promise-broken-worker",
        "payment-received-worker",
    ] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        startup.push((
            b,
            env.spawn(b, &[("HEALTH_ADDR", addr.as_str())], "consuming")
                .await?,
        ));
        health.push((b, port));
    }

    // Throughput phase.
    let events = mix(n, accounts, "");
    let mut cpu = Cpu::start(env);
    let publisher = env.amqp.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let items: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|(t, _, b)| (t.clone(), b.clone()))
        .collect();
    let t = Instant::now();
    publish_confirmed(&publisher, "collections.events", &items, 256).await?;
    let published_in = t.elapsed();
    let want = i64::try_from(n)?;
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
    let outbox_rows = env.count("SELECT count(*) FROM outbox").await;

    // Latency phase at half the measured rate, same mix; latency is measured for the
    // events that cause a task event (a partial payment with nothing to re-rank causes none).
    let throughput_cpu = cpu.delta(env);
    let stages_after_throughput = scrape_stages(&health).await;
    let half = latency_rate.unwrap_or(rate / 2.0).max(1.0);
    let total = (half * latency_secs as f64) as usize;
    let lat_events = mix(total, accounts, "l");
    let mut published_at = HashMap::new();
    let wal_before = broker_wal();
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
    let wal_rolled = match (wal_before, broker_wal()) {
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

    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| raw RabbitMQ publish+confirm | {:.0} msg/s |",
        raw.publish_per_s
    );
    println!(
        "| raw RabbitMQ consume+ack | {:.0} msg/s |",
        raw.consume_per_s
    );
    for (c, r) in &raw_pg_at {
        println!("| raw Postgres, 1 tx per event, {c} concurrent | {r:.0} events/s |");
    }
    println!(
        "| service end to end ({n} events, publish took {:.1} s) | {rate:.0} events/s |",
        published_in.as_secs_f64()
    );
    println!(
        "| ratio service / raw Postgres (the higher of the rates above) | {:.2}x |",
        rate / raw_pg
    );
    println!(
        "| ratio service / raw RabbitMQ publish | {:.2}x |",
        rate / raw.publish_per_s
    );
    println!("| task events from the throughput phase | {outbox_rows} |");
    println!(
        "| publish-to-task-event latency at {achieved:.0} events/s (target {half:.0}; {} of {} events cause one): p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |",
        latencies.len(),
        lat_events.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| latency stages p50 / p99: publish to transaction start (queue, batch ahead, linger) / transaction start to task event received | {:.1} / {:.1} ms, {:.1} / {:.1} ms |",
        percentile(&to_tx, 0.5),
        percentile(&to_tx, 0.99),
        percentile(&tx_to_task, 0.5),
        percentile(&tx_to_task, 0.99)
    );
    println!(
        "| raw RabbitMQ relay at {half:.0} events/s ({} events; quorum queue → consumer on its own connection acks what arrived and republishes it with confirms → listener; no service code, no database): p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |",
        relay.len(),
        percentile(&relay, 0.5),
        percentile(&relay, 0.99),
        relay.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| CPU during the relay ({:.1} s wall): workers / Postgres / RabbitMQ / bench / rest of the machine | {} |",
        relay_cpu.wall,
        relay_cpu.describe()
    );
    println!("| latency p99 by event type | {by_type} ms |");
    println!("| latency p99 by second of the phase | {by_second} ms |");
    println!(
        "| broker's quorum-queue WAL rolled over during the latency phase (its segment writes take CPU for about a second) | {wal_rolled} |"
    );
    println!(
        "| Postgres during the latency phase: WAL written / full-page images in it / checkpoints counted (after a checkpoint starts, the first change of each page logs the whole page) | {pg_wal} / {fpi} / {checkpoints} |"
    );
    for (b, d) in &startup {
        println!("| start-up to consuming: {b} | {} ms |", d.as_millis());
    }
    for (b, kib) in &rss {
        println!("| peak RSS: {b} | {:.1} MB |", *kib as f64 / 1024.0);
    }
    for (phase, before, after) in [
        ("throughput", None, &stages_after_throughput),
        (
            "latency",
            Some(&stages_after_throughput),
            &stages_after_latency,
        ),
    ] {
        for (i, s) in after.iter().enumerate() {
            let base = before
                .and_then(|b| b.get(i))
                .map_or(Stage::default(), |b| b.1);
            let (sum, count, events) = (
                s.1.seconds - base.seconds,
                s.1.batches - base.batches,
                s.1.events - base.events,
            );
            if count <= 0.0 {
                continue;
            }
            println!(
                "| {phase} phase, {}: batches / mean events per batch / mean transaction time | {count:.0} / {:.1} / {:.2} ms |",
                s.0,
                events / count,
                sum / count * 1000.0
            );
            let stepped = s.1.stepped - base.stepped;
            if stepped > 0.0 {
                let means: Vec<String> = (0..STEPS.len())
                    .map(|k| format!("{:.2}", (s.1.steps[k] - base.steps[k]) / stepped * 1000.0))
                    .collect();
                println!(
                    "| {phase} phase, {}: committed transaction, mean per step: {} | {} ms |",
                    s.0,
                    STEPS.join(" / "),
                    means.join(" / ")
                );
            }
        }
    }
    for (phase, d) in [
        ("raw Postgres", &raw_cpu),
        ("throughput", &throughput_cpu),
        ("latency", &latency_cpu),
    ] {
        println!(
            "| CPU during the {phase} phase ({:.1} s wall): workers / Postgres / RabbitMQ / bench / rest of the machine | {} |",
            d.wall,
            d.describe()
        );
    }
    println!(
        "| machine CPU per event (all processes): throughput phase / latency phase | {} / {} |",
        throughput_cpu.per_event(n),
        latency_cpu.per_event(lat_events.len())
    );
    println!("| sequential scans / rows read and task index use, cumulative (after the raw phase: {raw_scans}) | {scans} |");
    println!("| row updates that were HOT (no new index entry), whole run | {hot} |");
    println!("| check: inbox rows / events published | {inbox} / {want_all} |");
    println!("| check: task events received / outbox rows / unpublished | {received} / {outbox_all} / {unpublished} |");
    println!("| check: duplicate task event ids / distinct | {duplicates} / {distinct} |");
    let ok = inbox == want_all && unpublished == 0 && i64::try_from(distinct)? == outbox_all;
    println!(
        "| nothing lost or duplicated | {} |",
        if ok { "yes" } else { "NO" }
    );
    if !ok {
        bail!("loss or duplication detected");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Scheduler.

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

struct Lateness {
    future: usize,
    rate: usize,
    secs: u64,
    lead_ms: u64,
    notify: bool,
}

async fn scheduler(l: Lateness, backlog: usize, batch: usize) -> anyhow::Result<()> {
    // The private database and vhost go whatever happens, a failed run included.
    let mut env = Env::new().await?;
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

    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| raw RabbitMQ publish+confirm | {:.0} msg/s |",
        raw.publish_per_s
    );
    println!("| future tasks in the table | {future} |");
    println!(
        "| due-soon tasks planned | {planned} ({achieved:.0}/s, each due {lead_ms} ms after insert, 50 per insert every 50 ms) |"
    );
    println!(
        "| scheduler wake-up | {} |",
        if notify {
            "pg_notify after every insert"
        } else {
            "no NOTIFY: its own sleep until the earliest due_at, looking at least every 1 s"
        }
    );
    println!(
        "| lateness p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |",
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| backlog drain ({backlog} due tasks, batch {batch}, {drain_secs:.1} s) | {drain:.0} tasks/s |"
    );
    println!(
        "| drain: spawn to first task.due | {:.0} ms |",
        first * 1000.0
    );
    println!(
        "| drain: spawn to last task.due received / to all rows emitted | {received_secs:.1} s / {drain_secs:.1} s |"
    );
    println!(
        "| drain: rate per quarter of the backlog | {} tasks/s |",
        quarters.join(" / ")
    );
    println!(
        "| CPU during the drain ({:.1} s wall): scheduler / Postgres / RabbitMQ / bench / rest of the machine | {} |",
        drain_cpu.wall,
        drain_cpu.describe()
    );
    println!(
        "| ratio drain / raw publish+confirm | {:.2}x |",
        drain / raw.publish_per_s
    );
    for (b, kib) in &rss {
        println!("| peak RSS: {b} | {:.1} MB |", *kib as f64 / 1024.0);
    }
    println!(
        "| check: emitted rows / fired, duplicate ids | {emitted} / {}, {dup} |",
        planned + backlog
    );
    Ok(())
}
