//! Configuration, parsed in one place: one typed config per kind of binary
//! ([`WorkerArgs`] for the event workers, [`SchedulerArgs`] for the task scheduler), read
//! with clap from the environment (and, equally, from command-line flags), so that
//! `--help` lists every variable with its default. Credentials never live in code or
//! files we ship, and are never printed: not in `--help`, not in `Debug`.
//!
//! The only module that reads the environment. Uses no other module of the crate.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::Parser;
use collections_core::Policy;
use collections_store::Leases;

/// Consumers per worker process unless `WORKER_CONCURRENCY` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 1;

/// Heartbeat interval asked of the broker unless the URL names one (`?heartbeat=N`).
/// RabbitMQ's own default (60 s) lets a link that stalls without closing go unnoticed
/// for two minutes; with 10 s a dead link ends the session (and readiness) in about 20.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 10;

/// Tasks due sooner than this wake the scheduler at once; later ones it finds by polling
/// (its poll interval must not exceed this).
pub const NOTIFY_HORIZON: Duration = Duration::from_secs(1);

/// How much longer than the wait it covers a claim or a lease must be at least: the
/// database write that ends the holder's work (completion, mark published) after the
/// last confirm arrived, and a scheduler's preparation of its batch.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The log filter when `RUST_LOG` is unset or invalid.
const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,lapin=warn";

/// A value that carries credentials: its `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Settings every binary takes.
#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// Postgres URL with its credentials (add sslmode=require for TLS). Required, unless
    /// DATABASE_URL_FILE names a file that holds it
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<Secret>,
    /// A file holding the Postgres URL (mounted secrets); instead of DATABASE_URL
    #[arg(long, env = "DATABASE_URL_FILE")]
    database_url_file: Option<PathBuf>,
    /// RabbitMQ URL with its credentials (amqps:// for TLS), or a comma-separated list of
    /// a cluster's nodes, tried one after the other in a random order on every connect
    /// (a comma inside a password is written %2C); a heartbeat of 10 s is asked for
    /// unless a URL names one (?heartbeat=N). Required, unless AMQP_URLS or AMQP_URL_FILE
    /// gives it
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    amqp_url: Option<Secret>,
    /// The same list under another name (comma-separated node URLs); instead of AMQP_URL
    #[arg(long, env = "AMQP_URLS", hide_env_values = true)]
    amqp_urls: Option<Secret>,
    /// A file holding the RabbitMQ URL or URLs (mounted secrets; commas or one per line);
    /// instead of AMQP_URL
    #[arg(long, env = "AMQP_URL_FILE")]
    amqp_url_file: Option<PathBuf>,
    /// PEM certificate(s) of a private CA that signs the broker's TLS certificate, trusted
    /// beside the system's roots [default: none]
    #[arg(long, env = "AMQP_CA_FILE")]
    amqp_ca_file: Option<PathBuf>,
    /// The collections policy, validated whole at start [default: the built-in copy of
    /// deploy/policy/default.toml]
    #[arg(long, env = "POLICY_FILE")]
    policy_file: Option<PathBuf>,
    /// Database connections per process (plus one for the health routes when HEALTH_ADDR
    /// is set) [default: WORKER_CONCURRENCY + 2]
    #[arg(long, env = "DB_POOL")]
    db_pool: Option<u32>,
    /// After SIGTERM, how long in-flight work may take to finish; what is left is
    /// abandoned unacked (redelivered)
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 20)]
    shutdown_timeout_secs: u64,
    /// Longest a publish waits for the broker's confirms; past it the session is rebuilt
    /// and what was not confirmed is published again (same event ids)
    #[arg(long, env = "CONFIRM_TIMEOUT_SECS", default_value_t = collections_bus::CONFIRM_TIMEOUT.as_secs())]
    confirm_timeout_secs: u64,
    /// How long a writer (or a relay) owns the outbox rows it publishes before a relay of
    /// any process may take them over; must exceed CONFIRM_TIMEOUT_SECS by 5 s at least,
    /// so a publisher waiting on a slow broker keeps its rows
    #[arg(long, env = "OUTBOX_LEASE_SECS", default_value_t = collections_store::OUTBOX_LEASE_SECS)]
    outbox_lease_secs: u64,
    /// Where to serve /health/live, /health/ready and /metrics, e.g. 0.0.0.0:9100 (port 0
    /// picks one) [default: not served]
    #[arg(long, env = "HEALTH_ADDR")]
    health_addr: Option<String>,
    /// `check`: refuse to start unless the database's schema is one this binary can run
    /// against (migrations are a release step: `collectionsctl migrate`); `auto`: apply
    /// pending migrations first (one process on a development machine only: it breaks
    /// rolling upgrades). `off` is read as `check`
    #[arg(long, env = "MIGRATIONS", default_value = "check")]
    migrations: String,
    /// `text` for human-readable logs; JSON otherwise, unless stdout is a terminal
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    log_format: String,
    /// Log filter (tracing's env-filter syntax; `collections_runtime=debug` adds a line
    /// per applied event)
    #[arg(long = "log", env = "RUST_LOG", default_value = DEFAULT_LOG_FILTER)]
    rust_log: String,
}

/// An event worker's settings (`<binary> --help` lists them).
#[derive(Parser, Clone, Debug)]
#[command(version)]
pub struct WorkerArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Consumers (channels, one transaction in flight each) per worker process; one
    /// makes the largest batches: scale out with replicas
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    worker_concurrency: usize,
    /// Most deliveries applied in one transaction
    #[arg(long, env = "BATCH_MAX", default_value_t = 64)]
    batch_max: usize,
    /// While deliveries queue up (the last batch held more than one), how long to wait
    /// for more before applying; a lone delivery never waits
    #[arg(long, env = "BATCH_LINGER_MS", default_value_t = 5)]
    batch_linger_ms: u64,
    /// Larger message bodies are dead-lettered as too_large
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 65_536)]
    max_message_bytes: usize,
    /// A batch transaction taking longer is abandoned (rolled back, not acked) and
    /// retried: a database that stops answering is treated like one that is down
    #[arg(long, env = "DB_TIMEOUT_SECS", default_value_t = 30)]
    db_timeout_secs: u64,
}

/// The task scheduler's settings (`task-scheduler --help` lists them).
#[derive(Parser, Clone, Debug)]
#[command(version)]
pub struct SchedulerArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Most tasks claimed per statement
    #[arg(long, env = "SCHEDULER_BATCH", default_value_t = 5000)]
    scheduler_batch: i64,
    /// Longest sleep without looking at the tasks table (at most 1000)
    #[arg(long, env = "SCHEDULER_POLL_MS", default_value_t = 1000)]
    scheduler_poll_ms: u64,
    /// How long a claim on due tasks lasts (renewed before its batch is published); a
    /// claim that runs out is taken back by any scheduler or worker and fired again. Must
    /// exceed CONFIRM_TIMEOUT_SECS by 5 s at least, so a scheduler waiting on a slow
    /// broker keeps its claim
    #[arg(long, env = "CLAIM_TIMEOUT_SECS", default_value_t = collections_store::CLAIM_TIMEOUT_SECS)]
    claim_timeout_secs: u64,
}

/// Retention: how long history is kept, and how fast it is pruned (`collectionsctl
/// prune`). An operations setting, not a collections rule: it lives in the environment
/// with the other operations settings, not in the policy file.
#[derive(clap::Args, Clone, Debug)]
pub struct RetentionArgs {
    /// Published outbox rows older than this many days are deleted (unpublished rows never)
    #[arg(long, env = "RETENTION_OUTBOX_DAYS", default_value_t = 7)]
    retention_outbox_days: u32,
    /// The dedupe horizon: inbox ids older than this many days are deleted, after which a
    /// redelivered copy of the event would be applied again. Must outlast any dead-letter
    /// replay and any redelivery (at least 7)
    #[arg(long, env = "RETENTION_INBOX_DAYS", default_value_t = 90)]
    retention_inbox_days: u32,
    /// Tasks emitted or cancelled more than this many days ago are deleted (open tasks
    /// never)
    #[arg(long, env = "RETENTION_TASKS_DAYS", default_value_t = 90)]
    retention_tasks_days: u32,
    /// Contact attempts that started more than this many days ago are deleted from the
    /// contact ledger (at least 35: the caps and the lost-contact rule read 35 days)
    #[arg(long, env = "RETENTION_CONTACTS_DAYS", default_value_t = 90)]
    retention_contacts_days: u32,
    /// Journal entries older than this many days are deleted [default: kept for ever: the
    /// journal is the collection note, kept (or archived first) per the team's retention
    /// rules]
    #[arg(long, env = "RETENTION_JOURNAL_DAYS")]
    retention_journal_days: Option<u32>,
    /// Rows deleted per statement (one short transaction each)
    #[arg(long, env = "PRUNE_BATCH", default_value_t = 5000)]
    prune_batch: u32,
    /// Pause between two batches, leaving the database to the services
    #[arg(long, env = "PRUNE_PAUSE_MS", default_value_t = 50)]
    prune_pause_ms: u64,
}

/// The shortest dedupe horizon accepted: a week of redeliveries and dead-letter replays.
pub const MIN_INBOX_DAYS: u32 = 7;

impl RetentionArgs {
    /// Validates the horizons.
    ///
    /// # Errors
    /// A horizon of zero days, an inbox horizon shorter than [`MIN_INBOX_DAYS`], or a batch
    /// of zero rows.
    pub fn resolve(self) -> anyhow::Result<Retention> {
        let days = |key: &str, d: u32| {
            if d == 0 {
                bail!("{key} must be at least 1 day");
            }
            Ok(Duration::from_secs(u64::from(d) * 86_400))
        };
        if self.retention_inbox_days < MIN_INBOX_DAYS {
            bail!(
                "RETENTION_INBOX_DAYS must be at least {MIN_INBOX_DAYS}: a shorter dedupe \
                 horizon lets a redelivered or replayed event apply twice"
            );
        }
        let ledger_days = u32::try_from(collections_core::contact::LEDGER_DAYS).unwrap_or(35);
        if self.retention_contacts_days < ledger_days {
            bail!(
                "RETENTION_CONTACTS_DAYS must be at least {ledger_days}: the caps and the \
                 lost-contact rule read that many days of contact attempts"
            );
        }
        if self.prune_batch == 0 {
            bail!("PRUNE_BATCH must be at least 1");
        }
        Ok(Retention {
            outbox: days("RETENTION_OUTBOX_DAYS", self.retention_outbox_days)?,
            inbox: days("RETENTION_INBOX_DAYS", self.retention_inbox_days)?,
            tasks: days("RETENTION_TASKS_DAYS", self.retention_tasks_days)?,
            contacts: days("RETENTION_CONTACTS_DAYS", self.retention_contacts_days)?,
            journal: self
                .retention_journal_days
                .map(|d| days("RETENTION_JOURNAL_DAYS", d))
                .transpose()?,
            batch: i64::from(self.prune_batch),
            pause: Duration::from_millis(self.prune_pause_ms),
        })
    }
}

/// How long each table's history is kept, and how pruning is paced.
#[derive(Clone, Debug)]
pub struct Retention {
    /// Published outbox rows.
    pub outbox: Duration,
    /// Inbox ids (the dedupe horizon).
    pub inbox: Duration,
    /// Emitted and cancelled tasks.
    pub tasks: Duration,
    /// Contact attempts in the ledger.
    pub contacts: Duration,
    /// Journal entries; `None`: kept.
    pub journal: Option<Duration>,
    /// Rows per statement.
    pub batch: i64,
    /// Pause between batches.
    pub pause: Duration,
}

/// Parses the command line and the environment for `binary`; on a malformed value or
/// `--help`, prints and exits as clap does.
fn parse_for<T: Parser>(binary: &str, about: &str) -> T {
    let matches = T::command()
        .name(binary.to_owned())
        .bin_name(binary.to_owned())
        .about(about.to_owned())
        .get_matches();
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

impl WorkerArgs {
    /// Parses the settings of the worker `binary` from its flags and the environment.
    #[must_use]
    pub fn parse_for(binary: &str) -> Self {
        parse_for(
            binary,
            "An event worker: applies one queue's events to accounts.",
        )
    }

    /// The log filter and whether logs are text (read before anything can fail).
    #[must_use]
    pub fn logging(&self) -> (&str, bool) {
        self.common.logging()
    }

    /// Reads the secrets and the policy and checks the values.
    ///
    /// # Errors
    /// A message naming the variable or policy key that is wrong.
    pub fn resolve(self) -> anyhow::Result<Config> {
        if self.worker_concurrency == 0 {
            bail!("WORKER_CONCURRENCY must be at least 1");
        }
        if self.batch_max == 0 {
            bail!("BATCH_MAX must be at least 1");
        }
        let pool_default = u32::try_from(self.worker_concurrency + 2).unwrap_or(8);
        Ok(Config {
            common: self.common.resolve(pool_default)?,
            concurrency: self.worker_concurrency,
            batch_max: self.batch_max,
            batch_linger: Duration::from_millis(self.batch_linger_ms),
            max_message_bytes: self.max_message_bytes,
            db_timeout: Duration::from_secs(self.db_timeout_secs.max(1)),
        })
    }
}

impl SchedulerArgs {
    /// Parses the scheduler's settings from its flags and the environment.
    #[must_use]
    pub fn parse_for(binary: &str) -> Self {
        parse_for(
            binary,
            "The task scheduler: fires planned tasks at their instant, breaks expired \
             promises, plans the next call.",
        )
    }

    /// The log filter and whether logs are text (read before anything can fail).
    #[must_use]
    pub fn logging(&self) -> (&str, bool) {
        self.common.logging()
    }

    /// Reads the secrets and the policy.
    ///
    /// # Errors
    /// A message naming the variable or policy key that is wrong.
    pub fn resolve(self) -> anyhow::Result<SchedulerConfig> {
        let pool_default = u32::try_from(DEFAULT_CONCURRENCY + 2).unwrap_or(8);
        let mut common = self.common.resolve(pool_default)?;
        let claim_timeout = Duration::from_secs(self.claim_timeout_secs);
        longer_than_confirms("CLAIM_TIMEOUT_SECS", claim_timeout, common.confirm_timeout)?;
        common.leases.claim_secs = claim_timeout.as_secs_f64();
        Ok(SchedulerConfig {
            common,
            batch: self.scheduler_batch.max(1),
            poll: Duration::from_millis(self.scheduler_poll_ms).min(NOTIFY_HORIZON),
            claim_timeout,
        })
    }
}

impl CommonArgs {
    fn logging(&self) -> (&str, bool) {
        (&self.rust_log, self.log_format == "text")
    }

    fn resolve(self, pool_default: u32) -> anyhow::Result<Common> {
        let policy = match &self.policy_file {
            Some(path) => {
                let path = path.display();
                let text = std::fs::read_to_string(path.to_string())
                    .with_context(|| format!("cannot read POLICY_FILE {path}"))?;
                Policy::from_toml_str(&text).with_context(|| format!("POLICY_FILE {path}"))?
            }
            None => Policy::default(),
        };
        if self.confirm_timeout_secs == 0 {
            bail!("CONFIRM_TIMEOUT_SECS must be at least 1");
        }
        let confirm_timeout = Duration::from_secs(self.confirm_timeout_secs);
        let outbox_lease = Duration::from_secs(self.outbox_lease_secs);
        longer_than_confirms("OUTBOX_LEASE_SECS", outbox_lease, confirm_timeout)?;
        let health_addr = match self.health_addr {
            Some(addr) => Some(
                addr.parse()
                    .map_err(|e| anyhow::anyhow!("HEALTH_ADDR={addr:?}: {e}"))?,
            ),
            None => None,
        };
        Ok(Common {
            database_url: required(
                "DATABASE_URL",
                self.database_url,
                self.database_url_file,
                "postgres://user:password@127.0.0.1:5432/collections",
            )?,
            amqp_url: amqp_url_list(&required(
                "AMQP_URL",
                match (self.amqp_url, self.amqp_urls) {
                    (Some(_), Some(_)) => bail!("set AMQP_URL or AMQP_URLS, not both"),
                    (one, many) => one.or(many),
                },
                self.amqp_url_file,
                "amqp://user:password@127.0.0.1:5672/%2f",
            )?)?,
            amqp_ca: match self.amqp_ca_file {
                Some(path) => {
                    Some(std::fs::read_to_string(&path).with_context(|| {
                        format!("cannot read AMQP_CA_FILE ({})", path.display())
                    })?)
                }
                None => None,
            },
            policy,
            db_pool: self.db_pool.unwrap_or(pool_default),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            confirm_timeout,
            leases: Leases {
                outbox_secs: outbox_lease.as_secs_f64(),
                ..Leases::default()
            },
            health_addr,
            migrate: match self.migrations.as_str() {
                "auto" => true,
                "check" | "off" => false,
                other => bail!("MIGRATIONS must be check or auto, not {other:?}"),
            },
        })
    }
}

/// A URL that carries credentials: required, never defaulted in code. It comes from the
/// variable itself or, for secrets mounted as files (Kubernetes, Docker secrets), from the
/// file named by `<KEY>_FILE`.
fn required(
    key: &str,
    value: Option<Secret>,
    file: Option<PathBuf>,
    example: &str,
) -> anyhow::Result<String> {
    let file_key = format!("{key}_FILE");
    match (value, file) {
        (Some(v), None) if !v.0.trim().is_empty() => Ok(v.0),
        (Some(_), Some(_)) => bail!("set {key} or {file_key}, not both"),
        (_, Some(path)) => {
            let path = path.display();
            let v = std::fs::read_to_string(path.to_string())
                .with_context(|| format!("cannot read {file_key} ({path})"))?;
            let v = v.trim();
            if v.is_empty() {
                bail!("{file_key} ({path}) is empty");
            }
            Ok(v.to_owned())
        }
        _ => bail!("{key} is not set (for example {example}; or {file_key} naming a file)"),
    }
}

/// Checks that a claim or lease (`key`) outlasts the confirm wait it covers by
/// [`LEASE_MARGIN`]: a shorter one would let another process take the work over from a
/// holder that is only waiting for a slow broker, and fire or publish it a second time.
fn longer_than_confirms(key: &str, lease: Duration, confirms: Duration) -> anyhow::Result<()> {
    let least = confirms + LEASE_MARGIN;
    if lease < least {
        bail!(
            "{key}={} is too short: it must be at least CONFIRM_TIMEOUT_SECS ({}) + {} s = {} s, \
             or another process takes the work over while its holder still waits for the \
             broker's confirms, and fires or publishes it twice",
            lease.as_secs(),
            confirms.as_secs(),
            LEASE_MARGIN.as_secs(),
            least.as_secs()
        );
    }
    Ok(())
}

/// One URL or a list of them (commas, or one per line in a file), each with the default
/// heartbeat, joined by commas as `collections_bus::connect_with_ca` takes them.
fn amqp_url_list(value: &str) -> anyhow::Result<String> {
    let joined = value.replace(['\n', '\r'], ",");
    let urls: Vec<String> = collections_bus::url_list(&joined)
        .into_iter()
        .map(with_default_heartbeat)
        .collect();
    if urls.is_empty() {
        bail!("AMQP_URL names no URL");
    }
    if let Some(bad) = urls
        .iter()
        .position(|u| !(u.starts_with("amqp://") || u.starts_with("amqps://")))
    {
        // Never print the URL: it carries a password.
        bail!(
            "AMQP_URL: entry {} of {} is not an amqp:// or amqps:// URL",
            bad + 1,
            urls.len()
        );
    }
    Ok(urls.join(","))
}

fn with_default_heartbeat(url: &str) -> String {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    if query.split('&').any(|p| p.starts_with("heartbeat=")) {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}heartbeat={DEFAULT_HEARTBEAT_SECS}")
}

/// What every binary needs to start.
#[derive(Clone)]
pub struct Common {
    /// Postgres URL (`DATABASE_URL` or the file named by `DATABASE_URL_FILE`).
    pub database_url: String,
    /// AMQP URL, or the comma-separated URLs of a cluster's nodes (`AMQP_URL`,
    /// `AMQP_URLS` or `AMQP_URL_FILE`), each with the default heartbeat.
    pub amqp_url: String,
    /// PEM certificates of a private CA that signs the broker's TLS certificate
    /// (`AMQP_CA_FILE`), trusted beside the system's roots.
    pub amqp_ca: Option<String>,
    /// The policy in force (`POLICY_FILE`, else the built-in default).
    pub policy: Policy,
    /// Database pool size (`DB_POOL`, default concurrency + 2).
    pub db_pool: u32,
    /// Longest a graceful shutdown may take (`SHUTDOWN_TIMEOUT_SECS`, default 20).
    pub shutdown_timeout: Duration,
    /// Longest a publish waits for its confirms (`CONFIRM_TIMEOUT_SECS`, default 30).
    pub confirm_timeout: Duration,
    /// The claims and leases this process takes (`OUTBOX_LEASE_SECS`, default 40; the
    /// scheduler's `CLAIM_TIMEOUT_SECS`, default 40), each longer than the confirm wait.
    pub leases: Leases,
    /// Where the health and metrics routes listen (`HEALTH_ADDR`, unset: nowhere).
    pub health_addr: Option<SocketAddr>,
    /// Whether start-up applies the migrations before checking the schema (`MIGRATIONS=auto`;
    /// by default it only checks).
    pub migrate: bool,
}

impl std::fmt::Debug for Common {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs carry credentials: never print them.
        f.debug_struct("Common")
            .field("policy_version", &self.policy.version())
            .field("db_pool", &self.db_pool)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("leases", &self.leases)
            .field("health_addr", &self.health_addr)
            .field("migrate", &self.migrate)
            .finish_non_exhaustive()
    }
}

/// Everything an event worker needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// What every binary needs.
    pub common: Common,
    /// Consumers per queue, each with its own channel (`WORKER_CONCURRENCY`, default 1:
    /// one consumer makes the largest batches, which did best on two shared cores; run
    /// more replicas to use more cores, see BENCHMARKS.md).
    pub concurrency: usize,
    /// Most deliveries applied in one transaction (`BATCH_MAX`, default 64).
    pub batch_max: usize,
    /// Longest a batch waits for more deliveries once the previous batch showed that
    /// deliveries queue up (`BATCH_LINGER_MS`, default 5). At low load batches never wait.
    pub batch_linger: Duration,
    /// Largest accepted message body in bytes (`MAX_MESSAGE_BYTES`, default 65536).
    pub max_message_bytes: usize,
    /// Longest one batch transaction may take before it is abandoned (rolled back) and
    /// retried: a database that stops answering is treated like one that is down
    /// (`DB_TIMEOUT_SECS`, default 30).
    pub db_timeout: Duration,
}

/// Everything the scheduler needs to start.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// What every binary needs.
    pub common: Common,
    /// Most tasks claimed per statement (`SCHEDULER_BATCH`, default 5000).
    pub batch: i64,
    /// Longest sleep without looking at the table (`SCHEDULER_POLL_MS`, default 1000).
    pub poll: Duration,
    /// How long a claim lasts (`CLAIM_TIMEOUT_SECS`, default 40); also in
    /// `common.leases`.
    pub claim_timeout: Duration,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{with_default_heartbeat, SchedulerArgs, WorkerArgs};

    #[test]
    fn a_heartbeat_is_asked_for_unless_the_url_names_one() {
        assert_eq!(
            with_default_heartbeat("amqp://u:p@h:5672/%2f"),
            "amqp://u:p@h:5672/%2f?heartbeat=10"
        );
        assert_eq!(
            with_default_heartbeat("amqps://u:p@h/%2f?channel_max=8"),
            "amqps://u:p@h/%2f?channel_max=8&heartbeat=10"
        );
        assert_eq!(
            with_default_heartbeat("amqp://h/%2f?heartbeat=30"),
            "amqp://h/%2f?heartbeat=30"
        );
    }

    #[test]
    fn a_lease_no_longer_than_the_confirm_wait_it_covers_is_refused() {
        let base = [
            "s",
            "--database-url",
            "postgres://u:p@h/db",
            "--amqp-url",
            "amqp://u:p@h/%2f",
        ];
        let with = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            SchedulerArgs::try_parse_from(args)
                .expect("parse")
                .resolve()
        };
        let config = with(&[]).expect("the defaults are consistent");
        assert_eq!(config.claim_timeout.as_secs(), 40);
        assert_eq!(config.common.confirm_timeout.as_secs(), 30);
        assert!((config.common.leases.claim_secs - 40.0).abs() < f64::EPSILON);
        assert!((config.common.leases.outbox_secs - 40.0).abs() < f64::EPSILON);
        let e = with(&["--claim-timeout-secs", "15"]).expect_err("too short");
        assert!(
            e.to_string().contains("CLAIM_TIMEOUT_SECS=15 is too short"),
            "{e}"
        );
        let e = with(&["--confirm-timeout-secs", "60"]).expect_err("leases now too short");
        assert!(e.to_string().contains("OUTBOX_LEASE_SECS=40"), "{e}");
        let config = with(&[
            "--confirm-timeout-secs",
            "10",
            "--claim-timeout-secs",
            "15",
            "--outbox-lease-secs",
            "15",
        ])
        .expect("shorter waits, shorter leases");
        assert!((config.common.leases.outbox_secs - 15.0).abs() < f64::EPSILON);
    }

    #[test]
    fn a_list_of_cluster_nodes_is_taken_from_amqp_url_amqp_urls_or_a_file() {
        let parse = |args: &[&str]| {
            let base = ["w", "--database-url", "postgres://u:p@h/db"];
            let all: Vec<&str> = base.iter().chain(args).copied().collect();
            WorkerArgs::try_parse_from(all).expect("parse").resolve()
        };
        let two = "amqp://u:p@n1:5672/%2f,amqp://u:p@n2:5672/%2f?heartbeat=5";
        let want = "amqp://u:p@n1:5672/%2f?heartbeat=10,amqp://u:p@n2:5672/%2f?heartbeat=5";
        let config = parse(&["--amqp-url", two]).expect("a list in AMQP_URL");
        assert_eq!(config.common.amqp_url, want);
        let config = parse(&[
            "--amqp-urls",
            " amqp://u:p@n1:5672/%2f , amqp://u:p@n2:5672/%2f?heartbeat=5,",
        ])
        .expect("a list in AMQP_URLS, blanks dropped");
        assert_eq!(config.common.amqp_url, want);
        let e = parse(&["--amqp-url", two, "--amqp-urls", two]).expect_err("both");
        assert!(e.to_string().contains("not both"), "{e}");
        let e = parse(&["--amqp-url", "amqp://u:secret@n1/%2f,n2:5672"]).expect_err("not a URL");
        assert!(e.to_string().contains("entry 2 of 2"), "{e}");
        assert!(!e.to_string().contains("secret"), "{e}");
        let file = std::env::temp_dir().join(format!("amqp-urls-{}", std::process::id()));
        std::fs::write(
            &file,
            "amqp://u:p@n1:5672/%2f\namqp://u:p@n2:5672/%2f?heartbeat=5\n",
        )
        .expect("write");
        let config = parse(&["--amqp-url-file", file.to_str().expect("utf-8")]).expect("file");
        let _ = std::fs::remove_file(&file);
        assert_eq!(config.common.amqp_url, want);
    }

    #[test]
    fn the_arguments_are_consistent() {
        use clap::CommandFactory;
        WorkerArgs::command().debug_assert();
        SchedulerArgs::command().debug_assert();
    }

    #[test]
    fn flags_give_the_documented_defaults_and_secrets_stay_hidden() {
        let args = WorkerArgs::try_parse_from([
            "w",
            "--database-url",
            "postgres://u:secret@h/db",
            "--amqp-url",
            "amqp://u:secret@h/%2f",
        ])
        .expect("parse");
        assert!(!format!("{args:?}").contains("secret"));
        let config = args.resolve().expect("resolve");
        assert!(!format!("{config:?}").contains("secret"));
        assert_eq!(config.concurrency, 1);
        assert_eq!(config.batch_max, 64);
        assert_eq!(config.batch_linger.as_millis(), 5);
        assert_eq!(config.common.db_pool, 3);
        assert_eq!(config.max_message_bytes, 65_536);
        assert_eq!(config.common.shutdown_timeout.as_secs(), 20);
        assert_eq!(config.db_timeout.as_secs(), 30);
        assert_eq!(config.common.amqp_url, "amqp://u:secret@h/%2f?heartbeat=10");
        assert!(
            !config.common.migrate,
            "migrations are a release step, not a start-up one"
        );
        assert!(config.common.health_addr.is_none());
    }
}

/// The read API's settings (`collections-api --help` lists them).
#[derive(Parser, Clone, Debug)]
#[command(version)]
pub struct ApiArgs {
    /// Where the API and the board listen (port 0 picks one; the bound address is logged)
    #[arg(long, env = "API_ADDR", default_value = "127.0.0.1:8080")]
    api_addr: String,
    /// Postgres URL with its credentials; a read-only role is enough (deploy/README.md).
    /// Required, unless DATABASE_URL_FILE names a file that holds it
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<Secret>,
    /// A file holding the Postgres URL (mounted secrets); instead of DATABASE_URL
    #[arg(long, env = "DATABASE_URL_FILE")]
    database_url_file: Option<PathBuf>,
    /// Bearer token required on /v1 and the board when set [default: none, open]
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    api_token: Option<Secret>,
    /// RabbitMQ URL, only to count dead letters per queue for /v1/stats and the board
    /// [default: not counted]
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    amqp_url: Option<Secret>,
    /// Database connections of the process
    #[arg(long, env = "DB_POOL", default_value_t = 8)]
    db_pool: u32,
    /// Seconds between the comment lines an idle SSE stream sends, so proxies keep it open
    #[arg(long, env = "SSE_HEARTBEAT_SECS", default_value_t = 15)]
    sse_heartbeat_secs: u64,
    /// How often the API's one tail reader looks for new task events for its SSE
    /// streams, in milliseconds
    #[arg(long, env = "SSE_POLL_MS", default_value_t = 50)]
    sse_poll_ms: u64,
    /// `check`: refuse to start unless the schema is one this binary can read; `auto`:
    /// apply pending migrations first (needs a role that may; development only)
    #[arg(long, env = "MIGRATIONS", default_value = "check")]
    migrations: String,
    /// `text` for human-readable logs; JSON otherwise, unless stdout is a terminal
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    log_format: String,
    /// Log filter (tracing's env-filter syntax)
    #[arg(long = "log", env = "RUST_LOG", default_value = DEFAULT_LOG_FILTER)]
    rust_log: String,
}

/// The read API's resolved settings.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Listening address.
    pub addr: SocketAddr,
    /// Postgres URL (credentials: never logged).
    pub database_url: Secret,
    /// Bearer token, when one is required.
    pub token: Option<Secret>,
    /// RabbitMQ URL for the dead-letter counts, when given.
    pub amqp_url: Option<Secret>,
    /// Pool size.
    pub db_pool: u32,
    /// SSE heartbeat interval.
    pub heartbeat: Duration,
    /// SSE poll interval.
    pub poll: Duration,
    /// Apply migrations at start.
    pub migrate: bool,
}

impl Secret {
    /// The value (to hand to a client library; never to a log).
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl ApiArgs {
    /// Parses the API's settings from its flags and the environment.
    #[must_use]
    pub fn parse_for(binary: &str) -> Self {
        parse_for(
            binary,
            "The read API and task board: tasks, accounts, journals, the task-event feed \
             (JSON and Server-Sent Events) and figures, for dashboards.",
        )
    }

    /// The log filter and whether logs are text.
    #[must_use]
    pub fn logging(&self) -> (&str, bool) {
        (&self.rust_log, self.log_format == "text")
    }

    /// Reads the secrets and checks the values.
    ///
    /// # Errors
    /// A message naming the variable that is wrong.
    pub fn resolve(self) -> anyhow::Result<ApiConfig> {
        let addr = self
            .api_addr
            .parse()
            .map_err(|e| anyhow::anyhow!("API_ADDR={:?}: {e}", self.api_addr))?;
        if self.db_pool == 0 {
            bail!("DB_POOL must be at least 1");
        }
        let token = self.api_token.filter(|t| !t.0.trim().is_empty());
        Ok(ApiConfig {
            addr,
            database_url: Secret(required(
                "DATABASE_URL",
                self.database_url,
                self.database_url_file,
                "postgres://reader:password@127.0.0.1:5432/collections",
            )?),
            token,
            amqp_url: self
                .amqp_url
                .filter(|u| !u.0.trim().is_empty())
                .map(|u| Secret(with_default_heartbeat(&u.0))),
            db_pool: self.db_pool,
            heartbeat: Duration::from_secs(self.sse_heartbeat_secs.max(1)),
            poll: Duration::from_millis(self.sse_poll_ms.clamp(10, 5000)),
            migrate: match self.migrations.as_str() {
                "auto" => true,
                "check" | "off" => false,
                other => bail!("MIGRATIONS must be check or auto, not {other:?}"),
            },
        })
    }
}
