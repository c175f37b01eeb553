//! A run's environment: a private database (migrated by the store's own migrations) and
//! RabbitMQ vhost with the service's topology, the release binaries started in it (from
//! `target/release` or `BENCH_BIN_DIR`), and their teardown.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use lapin::Connection;
use sqlx::{postgres::PgPoolOptions, Connection as _, PgConnection, PgPool};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use uuid::Uuid;

use crate::Settings;

/// One run's private world; [`Env::teardown`] removes it.
pub struct Env {
    pub name: String,
    admin_url: String,
    database_url: String,
    pub amqp_url: String,
    pub db: PgPool,
    pub amqp: Connection,
    pub children: Vec<(String, Child)>,
    /// Where the release binaries are.
    bin_dir: PathBuf,
    /// The local broker's data directory.
    pub rabbitmq_mnesia_base: PathBuf,
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
    pub async fn new(settings: &Settings) -> anyhow::Result<Self> {
        let name = format!("bench_{}", &Uuid::new_v4().simple().to_string()[..8]);
        let admin_url = settings.database_url.clone();
        let base_amqp = &settings.amqp_url;
        let mut admin = PgConnection::connect(&admin_url).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        rabbitmqctl(&["add_vhost", &name])?;
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"])?;
        let database_url = with_path(&admin_url, &name);
        let amqp_url = with_path(base_amqp, &name);
        let db = PgPoolOptions::new()
            .max_connections(24)
            .connect(&database_url)
            .await?;
        let store = collections_store::Store::connect(&database_url, 1).await?;
        if !settings.migrate_with_binaries {
            store.migrate().await?;
        }
        store.pool().close().await;
        let amqp = collections_bus::connect(&amqp_url, "bench").await?;
        collections_bus::declare_topology_on(&amqp).await?;
        let mut env = Self {
            name,
            admin_url,
            database_url,
            amqp_url,
            db,
            amqp,
            children: Vec::new(),
            // BENCH_BIN_DIR compares another build of the binaries (A/B runs).
            bin_dir: settings.bin_dir.clone().unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release")
            }),
            rabbitmq_mnesia_base: settings.rabbitmq_mnesia_base.clone(),
        };
        if settings.migrate_with_binaries {
            // The binaries of another build refuse a schema whose migrations differ from
            // their own copy (checksums): let one of them apply its own, then stop it.
            env.spawn(
                "payment-failed-worker",
                &[("MIGRATIONS", "auto")],
                "consuming",
            )
            .await?;
            env.stop().await;
        }
        Ok(env)
    }

    /// The run's own database.
    pub fn database_url(&self) -> String {
        self.database_url.clone()
    }

    /// Starts a release binary; returns how long it took until it logged `ready_line`.
    pub async fn spawn(
        &mut self,
        bin: &str,
        env: &[(&str, &str)],
        ready_line: &str,
    ) -> anyhow::Result<Duration> {
        let path = self.bin_dir.join(bin);
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

    pub fn peak_rss_kib(&self) -> Vec<(String, u64)> {
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

    pub async fn stop(&mut self) {
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

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db)
            .await
            .unwrap_or(-1)
    }

    pub async fn teardown(mut self) {
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

/// Polls `f` every 100 ms until it holds, or fails after `timeout`.
pub async fn wait_until(
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
