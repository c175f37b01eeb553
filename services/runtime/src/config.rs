//! Configuration from the environment (credentials never live in code or files we ship):
//! the only module that reads environment variables. Uses no other module of the crate.

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Context};
use collections_core::Policy;

/// Consumers per worker process unless `WORKER_CONCURRENCY` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 1;

/// Everything a binary needs to start.
#[derive(Clone)]
pub struct Config {
    /// Postgres URL (`DATABASE_URL`).
    pub database_url: String,
    /// AMQP URL (`AMQP_URL`).
    pub amqp_url: String,
    /// PEM certificates of a private CA that signs the broker's TLS certificate
    /// (`AMQP_CA_FILE`), trusted beside the system's roots.
    pub amqp_ca: Option<String>,
    /// The policy in force (`POLICY_FILE`, else the built-in default).
    pub policy: Policy,
    /// Consumers per queue, each with its own channel (`WORKER_CONCURRENCY`, default 1:
    /// one consumer makes the largest batches, which did best on two shared cores; run
    /// more replicas to use more cores, see BENCHMARKS.md).
    pub concurrency: usize,
    /// Most deliveries applied in one transaction (`BATCH_MAX`, default 64).
    pub batch_max: usize,
    /// Longest a batch waits for more deliveries once the previous batch showed that
    /// deliveries queue up (`BATCH_LINGER_MS`, default 5). At low load batches never wait.
    pub batch_linger: Duration,
    /// Database pool size (`DB_POOL`, default concurrency + 2).
    pub db_pool: u32,
    /// Largest accepted message body in bytes (`MAX_MESSAGE_BYTES`, default 65536).
    pub max_message_bytes: usize,
    /// Longest a graceful shutdown may take (`SHUTDOWN_TIMEOUT_SECS`, default 20).
    pub shutdown_timeout: Duration,
    /// Longest one batch transaction may take before it is abandoned (rolled back) and
    /// retried: a database that stops answering is treated like one that is down
    /// (`DB_TIMEOUT_SECS`, default 30).
    pub db_timeout: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs carry credentials: never print them.
        f.debug_struct("Config")
            .field("policy_version", &self.policy.version())
            .field("concurrency", &self.concurrency)
            .field("batch_max", &self.batch_max)
            .field("db_pool", &self.db_pool)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish_non_exhaustive()
    }
}

/// A URL that carries credentials: required, never defaulted in code. It comes from the
/// variable itself or, for secrets mounted as files (Kubernetes, Docker secrets), from the
/// file named by `<KEY>_FILE`.
fn env_required(key: &str, example: &str) -> anyhow::Result<String> {
    let file_key = format!("{key}_FILE");
    match (std::env::var(key), std::env::var(&file_key)) {
        (Ok(v), Err(_)) if !v.trim().is_empty() => Ok(v),
        (Ok(_), Ok(_)) => bail!("set {key} or {file_key}, not both"),
        (_, Ok(path)) => {
            let v = std::fs::read_to_string(&path)
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

fn env_num<T: std::str::FromStr>(key: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(key) {
        Ok(v) => v
            .parse()
            .map_err(|e| anyhow::anyhow!("{key}={v:?} is not a valid number: {e}")),
        Err(_) => Ok(default),
    }
}

/// Heartbeat interval asked of the broker unless the URL names one (`?heartbeat=N`).
/// RabbitMQ's own default (60 s) lets a link that stalls without closing go unnoticed
/// for two minutes; with 10 s a dead link ends the session (and readiness) in about 20.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 10;

fn with_default_heartbeat(url: &str) -> String {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    if query.split('&').any(|p| p.starts_with("heartbeat=")) {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}heartbeat={DEFAULT_HEARTBEAT_SECS}")
}

/// Tasks due sooner than this wake the scheduler at once; later ones it finds by polling
/// (its poll interval must not exceed this).
pub const NOTIFY_HORIZON: Duration = Duration::from_secs(1);

/// Scheduler settings from the environment.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Most tasks claimed per statement (`SCHEDULER_BATCH`, default 5000).
    pub batch: i64,
    /// Longest sleep without looking at the table (`SCHEDULER_POLL_MS`, default 1000).
    pub poll: Duration,
}

impl SchedulerSettings {
    /// Reads `SCHEDULER_BATCH` and `SCHEDULER_POLL_MS`.
    ///
    /// # Errors
    /// A variable that is not a number.
    pub fn from_env() -> anyhow::Result<Self> {
        let batch = std::env::var("SCHEDULER_BATCH")
            .ok()
            .map(|v| v.parse::<i64>())
            .transpose()
            .context("SCHEDULER_BATCH")?
            .unwrap_or(5000);
        let poll_ms = std::env::var("SCHEDULER_POLL_MS")
            .ok()
            .map(|v| v.parse::<u64>())
            .transpose()
            .context("SCHEDULER_POLL_MS")?
            .unwrap_or(1000);
        let poll = Duration::from_millis(poll_ms).min(NOTIFY_HORIZON);
        Ok(Self {
            batch: batch.max(1),
            poll,
        })
    }
}

/// Human-readable logs even off a terminal (`LOG_FORMAT=text`).
#[must_use]
pub fn log_format_text() -> bool {
    std::env::var("LOG_FORMAT").as_deref() == Ok("text")
}

/// Where the health and metrics routes listen (`HEALTH_ADDR`, unset: nowhere).
///
/// # Errors
/// A malformed address.
pub fn health_addr() -> anyhow::Result<Option<SocketAddr>> {
    match std::env::var("HEALTH_ADDR") {
        Ok(addr) => {
            Ok(Some(addr.parse().map_err(|e| {
                anyhow::anyhow!("HEALTH_ADDR={addr:?}: {e}")
            })?))
        }
        Err(_) => Ok(None),
    }
}

/// Whether start-up runs the migrations (`MIGRATIONS`, anything but `off`).
#[must_use]
pub fn migrations_enabled() -> bool {
    std::env::var("MIGRATIONS").as_deref() != Ok("off")
}

impl Config {
    /// Reads and checks the environment; loads and validates the policy.
    ///
    /// # Errors
    /// A message naming the variable or policy key that is wrong.
    pub fn from_env() -> anyhow::Result<Self> {
        let policy = match std::env::var("POLICY_FILE") {
            Ok(path) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read POLICY_FILE {path}"))?;
                Policy::from_toml_str(&text).with_context(|| format!("POLICY_FILE {path}"))?
            }
            Err(_) => Policy::default(),
        };
        let concurrency: usize = env_num("WORKER_CONCURRENCY", DEFAULT_CONCURRENCY)?;
        if concurrency == 0 {
            bail!("WORKER_CONCURRENCY must be at least 1");
        }
        let batch_max: usize = env_num("BATCH_MAX", 64)?;
        if batch_max == 0 {
            bail!("BATCH_MAX must be at least 1");
        }
        let pool_default = u32::try_from(concurrency + 2).unwrap_or(8);
        Ok(Self {
            database_url: env_required(
                "DATABASE_URL",
                "postgres://user:password@127.0.0.1:5432/collections",
            )?,
            amqp_url: with_default_heartbeat(&env_required(
                "AMQP_URL",
                "amqp://user:password@127.0.0.1:5672/%2f",
            )?),
            amqp_ca: match std::env::var("AMQP_CA_FILE") {
                Ok(path) => Some(
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read AMQP_CA_FILE ({path})"))?,
                ),
                Err(_) => None,
            },
            policy,
            concurrency,
            batch_max,
            batch_linger: Duration::from_millis(env_num("BATCH_LINGER_MS", 5)?),
            db_pool: env_num("DB_POOL", pool_default)?,
            max_message_bytes: env_num("MAX_MESSAGE_BYTES", 65_536)?,
            shutdown_timeout: Duration::from_secs(env_num("SHUTDOWN_TIMEOUT_SECS", 20)?),
            db_timeout: Duration::from_secs(env_num("DB_TIMEOUT_SECS", 30)?.max(1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::with_default_heartbeat;

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
}
