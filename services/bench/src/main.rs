//! Benchmarks. Each run measures the machine's raw limits (RabbitMQ confirmed publish and
//! acked consume with lapin, Postgres one-transaction-per-event with sqlx) and the real
//! service binaries in the same run, and prints the ratio.
//!
//! `main.rs` is the command line only; each phase and helper is a module. The benchmark
//! starts the real release binaries as child processes; of their libraries it uses only
//! what prepares a run (`Store::migrate`, an `AccountState` to seed, a default).
//!
//! ```sh
//! cargo build --release --bins
//! cargo run --release -p bench -- ingest --events 50000 --accounts 100000
//! cargo run --release -p bench -- scheduler --future 1000000 --backlog 200000
//! cargo run --release -p bench -- retention --history 10000000
//! ```
//!
//! This file is the command line only; every environment variable the benchmark reads is
//! read here (clap `env =`). The phases are [`ingest`], [`scheduler`] and [`retention`]; [`env`] sets up
//! and tears down a run's private database, vhost and binaries; [`raw`] measures the
//! machine's raw limits; [`workload`] generates and publishes events; [`listen`] receives
//! task events; [`scrape`] reads the workers' `/metrics`; [`stats`] reads Postgres's and
//! the broker's own statistics; [`cpu`] accounts CPU by process group; [`report`] prints
//! the figures.

mod api;
mod cpu;
mod env;
mod ingest;
mod listen;
mod raw;
mod report;
mod retention;
mod scheduler;
mod scrape;
mod stats;
mod workload;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Collections service benchmarks")]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where the benchmark finds the servers and the binaries: the environment variables it
/// reads, all of them.
#[derive(Args, Clone)]
pub struct Settings {
    /// Postgres URL of a database the benchmark can create its own database from.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
    /// RabbitMQ URL of a user that may create vhosts (the path is replaced by the run's own).
    #[arg(
        long,
        global = true,
        env = "AMQP_URL",
        hide_env_values = true,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Directory of the release binaries to run, to compare another build of them (A/B
    /// runs); by default this workspace's `target/release`.
    #[arg(long, global = true, env = "BENCH_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Migrate the run's database with the binaries' own migrations (their payment-failed
    /// worker with `MIGRATIONS=auto`) instead of this build's: a build whose migrations
    /// differ refuses this build's schema.
    #[arg(long, global = true, env = "BENCH_MIGRATE_WITH_BINARIES")]
    pub migrate_with_binaries: bool,
    /// The local broker's data directory (its quorum-queue WAL tells whether it rolled over
    /// during the latency phase).
    #[arg(
        long,
        global = true,
        env = "RABBITMQ_MNESIA_BASE",
        default_value = "/var/lib/rabbitmq/mnesia"
    )]
    pub rabbitmq_mnesia_base: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// The read API (issue 20): filtered task pages idle and under ingest, SSE delivery
    /// lag with many subscribers.
    Api {
        /// Open tasks seeded (the issue's figure is 1,000,000).
        #[arg(long, default_value_t = 200_000)]
        open: usize,
        /// History (emitted) tasks seeded (the issue's figure is 10,000,000).
        #[arg(long, default_value_t = 1_000_000)]
        history: usize,
        /// Seconds of each phase.
        #[arg(long, default_value_t = 20)]
        secs: u64,
        /// payment.failed events/s during the loaded phase.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// SSE subscribers during the loaded phase.
        #[arg(long, default_value_t = 50)]
        subscribers: usize,
        /// Concurrent page readers.
        #[arg(long, default_value_t = 4)]
        clients: usize,
    },
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
        /// Consumers per worker process, passed on to the workers this run starts (default:
        /// the workers' own default).
        #[arg(long, env = "WORKER_CONCURRENCY")]
        worker_concurrency: Option<usize>,
        /// Replace the promises and partial payments of the mix by `arrangement.made` with
        /// this many instalments (issue 22: 12).
        #[arg(long)]
        arrangement_instalments: Option<usize>,
        /// The events: `mix` (the existing event types), `contacts` (`contact.attempted`
        /// only, on accounts made delinquent first) or `holds` (the mix with hold and
        /// restriction events).
        #[arg(long, value_enum, default_value_t = workload::Workload::Mix)]
        workload: workload::Workload,
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
    /// Ingest on an empty database, with rows of history in every table, and beside a
    /// pruner deleting that history.
    Retention {
        /// Rows of history seeded in each of inbox, outbox, journal and tasks (the issue's
        /// figure is 10,000,000).
        #[arg(long, default_value_t = 1_000_000)]
        history: usize,
        /// Events per ingest phase.
        #[arg(long, default_value_t = 30_000)]
        events: usize,
        /// Accounts per phase.
        #[arg(long, default_value_t = 50_000)]
        accounts: usize,
        /// Rows per prune statement (`PRUNE_BATCH`).
        #[arg(long, default_value_t = 5000)]
        batch: i64,
        /// Pause between prune statements in ms (`PRUNE_PAUSE_MS`).
        #[arg(long, default_value_t = 50)]
        pause_ms: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { settings, cmd } = Cli::parse();
    match cmd {
        Cmd::Api {
            open,
            history,
            secs,
            rate,
            subscribers,
            clients,
        } => {
            let run = api::ApiRun {
                open,
                history,
                secs,
                rate,
                subscribers,
                clients,
            };
            api::api(&settings, run).await
        }
        Cmd::Ingest {
            events,
            accounts,
            latency_secs,
            latency_rate,
            history,
            worker_concurrency,
            arrangement_instalments,
            workload,
        } => {
            let run = ingest::Ingest {
                n: events,
                accounts,
                latency_secs,
                latency_rate,
                history: history.unwrap_or(accounts.min(200_000)),
                per_worker: worker_concurrency
                    .unwrap_or(collections_runtime::config::DEFAULT_CONCURRENCY),
                worker_concurrency,
                arrangement_instalments,
                workload,
            };
            ingest::ingest(&settings, run).await
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
            let lateness = scheduler::Lateness {
                future,
                rate,
                secs,
                lead_ms,
                notify: notify || lead_ms <= 1000,
            };
            scheduler::scheduler(&settings, lateness, backlog, batch).await
        }
        Cmd::Retention {
            history,
            events,
            accounts,
            batch,
            pause_ms,
        } => {
            let run = retention::RetentionRun {
                history,
                events,
                accounts,
                batch,
                pause: std::time::Duration::from_millis(pause_ms),
            };
            retention::retention(&settings, run).await
        }
    }
}
