//! Test environment: a fresh database and vhost, the real binaries, a task-event listener.

#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use jiff::Timestamp;
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
        ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::FieldTable,
    BasicProperties, Channel, Connection, ConnectionProperties,
};
use serde_json::{json, Value};
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::process::{Child, Command};
use uuid::Uuid;

pub const ALL_WORKERS: [&str; 12] = [
    "payment-failed-worker",
    "promise-made-worker",
    "promise-broken-worker",
    "payment-received-worker",
    "contact-attempted-worker",
    "hold-placed-worker",
    "hold-released-worker",
    "contact-restricted-worker",
    "contact-unrestricted-worker",
    "arrangement-made-worker",
    "arrangement-cancelled-worker",
    "payment-reversed-worker",
];

pub fn bin_path(name: &str) -> PathBuf {
    PathBuf::from(match name {
        "payment-failed-worker" => env!("CARGO_BIN_EXE_payment-failed-worker"),
        "promise-made-worker" => env!("CARGO_BIN_EXE_promise-made-worker"),
        "promise-broken-worker" => env!("CARGO_BIN_EXE_promise-broken-worker"),
        "payment-received-worker" => env!("CARGO_BIN_EXE_payment-received-worker"),
        "contact-attempted-worker" => env!("CARGO_BIN_EXE_contact-attempted-worker"),
        "hold-placed-worker" => env!("CARGO_BIN_EXE_hold-placed-worker"),
        "hold-released-worker" => env!("CARGO_BIN_EXE_hold-released-worker"),
        "contact-restricted-worker" => env!("CARGO_BIN_EXE_contact-restricted-worker"),
        "contact-unrestricted-worker" => env!("CARGO_BIN_EXE_contact-unrestricted-worker"),
        "arrangement-made-worker" => env!("CARGO_BIN_EXE_arrangement-made-worker"),
        "arrangement-cancelled-worker" => env!("CARGO_BIN_EXE_arrangement-cancelled-worker"),
        "payment-reversed-worker" => env!("CARGO_BIN_EXE_payment-reversed-worker"),
        "task-scheduler" => env!("CARGO_BIN_EXE_task-scheduler"),
        "collections-api" => env!("CARGO_BIN_EXE_collections-api"),
        other => panic!("unknown binary {other}"),
    })
}

fn admin_db_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn base_amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn with_path(url: &str, path: &str) -> String {
    // scheme://authority/path?query -> replace path
    let (scheme, rest) = url.split_once("://").expect("URL has a scheme");
    let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let query = tail
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{scheme}://{authority}/{path}{query}")
}

fn amqp_user() -> String {
    let url = base_amqp_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    rest.split_once('@')
        .map(|(cred, _)| cred.split(':').next().unwrap_or("guest").to_owned())
        .unwrap_or_else(|| "guest".to_owned())
}

fn rabbitmqctl(args: &[&str]) {
    rabbitmqctl_output(args);
}

/// Runs `rabbitmqctl` and returns its standard output.
pub fn rabbitmqctl_output(args: &[&str]) -> String {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (tests create a vhost per test)");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One test's private world.
pub struct TestEnv {
    pub name: String,
    pub database_url: String,
    pub amqp_url: String,
    pub db: PgPool,
    pub amqp: Connection,
    pub publisher: Channel,
    pub tasks: TaskListener,
    pub log_dir: PathBuf,
    pub children: Vec<(String, Child)>,
    pub extra_env: Vec<(String, String)>,
}

impl TestEnv {
    pub async fn new() -> Self {
        let name = format!("ct_{}", &Uuid::new_v4().simple().to_string()[..12]);
        let mut admin = PgConnection::connect(&admin_db_url())
            .await
            .expect("connect to Postgres (is it running? deploy/local/ensure-services.sh)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let database_url = with_path(&admin_db_url(), &name);
        // Migrations are a release step: applied here as `collectionsctl migrate` applies
        // them (the same store function), before any binary starts and checks the schema.
        let store = collections_store::Store::connect(&database_url, 1)
            .await
            .expect("connect to the test database");
        store.migrate().await.expect("migrate the test database");
        store.pool().close().await;
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &name,
            &amqp_user(),
            ".*",
            ".*",
            ".*",
        ]);
        let amqp_url = with_path(&base_amqp_url(), &name);

        let amqp = Connection::connect(&amqp_url, ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let setup = amqp.create_channel().await.expect("channel");
        collections_bus::declare_topology(&setup)
            .await
            .expect("declare topology");
        let publisher = amqp.create_channel().await.expect("channel");
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        let tasks = TaskListener::start(&amqp).await;
        let db = PgPool::connect(&database_url).await.expect("test db");
        let log_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("e2e-logs")
            .join(&name);
        std::fs::create_dir_all(&log_dir).expect("log dir");
        Self {
            name,
            database_url,
            amqp_url,
            db,
            amqp,
            publisher,
            tasks,
            log_dir,
            children: Vec::new(),
            extra_env: Vec::new(),
        }
    }

    /// Starts one binary with this test's URLs; its logs go to the test's log directory.
    pub async fn spawn(&mut self, bin: &str) {
        self.spawn_with(bin, &[]).await;
    }

    /// [`TestEnv::spawn`] with variables of this process only (they win over `extra_env`),
    /// e.g. a scheduler whose link to the broker goes through a proxy while the workers'
    /// do not.
    pub async fn spawn_with(&mut self, bin: &str, overrides: &[(String, String)]) {
        let n = self.children.iter().filter(|(b, _)| b == bin).count();
        let child = self.start(bin, overrides, &format!("{bin}-{n}"));
        self.children.push((bin.to_owned(), child));
    }

    /// Starts one binary and hands the process to the caller (who kills or stops it; it is
    /// killed when dropped). Logs go to `<log_name>.log` in the test's log directory.
    pub fn start(&self, bin: &str, overrides: &[(String, String)], log_name: &str) -> Child {
        let log = std::fs::File::create(self.log_dir.join(format!("{log_name}.log"))).expect("log");
        let mut cmd = Command::new(bin_path(bin));
        cmd.env("DATABASE_URL", &self.database_url)
            .env("AMQP_URL", &self.amqp_url)
            .env("WORKER_CONCURRENCY", "2")
            .env("RUST_LOG", "info")
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        cmd.spawn().expect("spawn binary")
    }

    /// The broker-side ids (`pid`) of the connections a binary opened in this test's vhost,
    /// found by the connection name it announces (its binary name). (`list_connections`
    /// lists every vhost's connections whatever `-p` says: filtered here.)
    pub fn broker_connections(&self, connection_name: &str) -> Vec<String> {
        let out = rabbitmqctl_output(&[
            "list_connections",
            "--quiet",
            "--no-table-headers",
            "pid",
            "vhost",
            "client_properties",
        ]);
        // client_properties prints as [{"capabilities",[...]},{"connection_name","<name>"},...]
        let needle = format!("{{\"connection_name\",\"{connection_name}\"}}");
        out.lines()
            .filter_map(|l| {
                let mut cols = l.split('\t');
                let (pid, vhost, props) = (cols.next()?, cols.next()?, cols.next()?);
                (vhost == self.name && props.contains(&needle)).then(|| pid.to_owned())
            })
            .collect()
    }

    /// Makes the broker close a connection (`rabbitmqctl close_connection`), as an
    /// operator or a broker under memory pressure does. False when the broker refused (the
    /// connection was already gone, say).
    pub fn close_broker_connection(&self, pid: &str, reason: &str) -> bool {
        std::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, reason])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// The log of a binary started by [`TestEnv::spawn`] (`<bin>-<n>`) or
    /// [`TestEnv::start`] (`log_name`); empty when there is none.
    pub fn log(&self, log_name: &str) -> String {
        std::fs::read_to_string(self.log_dir.join(format!("{log_name}.log"))).unwrap_or_default()
    }

    pub async fn start_workers(&mut self) {
        for b in ALL_WORKERS {
            self.spawn(b).await;
        }
    }

    /// Publishes a raw body to `collections.events` with a routing key, confirmed.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        self.publisher
            .basic_publish(
                "collections.events".into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    /// Publishes an inbound CloudEvent; returns its id.
    pub async fn publish(&self, ty: &str, account: &str, data: Value) -> Uuid {
        let id = Uuid::new_v4();
        self.publish_with_id(id, ty, account, data).await;
        id
    }

    pub async fn publish_with_id(&self, id: Uuid, ty: &str, account: &str, data: Value) {
        let body = cloudevent(id, ty, account, data);
        self.publish_raw(ty, body.to_string().as_bytes()).await;
    }

    /// Polls the database until `sql` (returning one bigint) equals `want`.
    pub async fn wait_count(&self, sql: &str, want: i64, timeout: Duration) -> i64 {
        let deadline = Instant::now() + timeout;
        loop {
            let got: i64 = sqlx::query_scalar(sql)
                .fetch_one(&self.db)
                .await
                .unwrap_or(-1);
            if got == want || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reads one message from a dead-letter queue, waiting up to `timeout`.
    pub async fn get_dead_letter(
        &self,
        queue: &str,
        timeout: Duration,
    ) -> Option<(BasicProperties, Vec<u8>)> {
        let ch = self.amqp.create_channel().await.expect("channel");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = ch
                .basic_get(
                    format!("{queue}.dlq").as_str().into(),
                    BasicGetOptions::default(),
                )
                .await
                .expect("basic.get")
            {
                m.delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .expect("ack");
                return Some((m.delivery.properties.clone(), m.delivery.data.clone()));
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The journal of an account, in order.
    pub async fn journal(&self, account: &str) -> Vec<(String, String)> {
        sqlx::query_as("SELECT kind, detail FROM journal WHERE account_id = $1 ORDER BY id")
            .bind(account)
            .fetch_all(&self.db)
            .await
            .expect("journal")
    }

    /// Sends SIGTERM to every child and waits for them to exit.
    pub async fn stop_all(&mut self) -> Vec<(String, std::process::ExitStatus)> {
        let mut out = Vec::new();
        for (name, child) in &mut self.children {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
            }
            let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .expect("binary stops within 30 s of SIGTERM")
                .expect("wait");
            out.push((name.clone(), status));
        }
        self.children.clear();
        out
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.start_kill();
        }
        let name = self.name.clone();
        // Best effort: a failed test keeps its logs; the database and vhost go.
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &name])
            .output();
        let url = admin_db_url();
        let _ = std::process::Command::new("psql")
            .arg(&url)
            .arg("-qc")
            .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .output();
    }
}

/// Builds an inbound CloudEvent.
pub fn cloudevent(id: Uuid, ty: &str, account: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "billing-test",
        "type": ty,
        "time": Timestamp::now(),
        "subject": account,
        "datacontenttype": "application/json",
        "data": data,
    })
}

pub fn cny(minor: i64) -> Value {
    json!({"minor": minor, "currency": "CNY"})
}

/// A fixed-offset IANA zone (`Etc/GMT±N`) in which it is now about `local_hour` o'clock,
/// so that contact-window outcomes do not depend on when the test runs.
pub fn zone_where_it_is(local_hour: i64) -> (String, jiff::tz::TimeZone) {
    let now = Timestamp::now();
    let utc_hour = i64::from(now.to_zoned(jiff::tz::TimeZone::UTC).hour());
    let mut offset = local_hour - utc_hour;
    if offset > 14 {
        offset -= 24;
    }
    if offset < -12 {
        offset += 24;
    }
    // POSIX-style names: Etc/GMT-8 is UTC+8.
    let name = if offset == 0 {
        "Etc/GMT".to_owned()
    } else if offset > 0 {
        format!("Etc/GMT-{offset}")
    } else {
        format!("Etc/GMT+{}", -offset)
    };
    let tz = jiff::tz::TimeZone::get(&name).expect("Etc zone exists");
    (name, tz)
}

/// Collects every task event published on `collections.tasks`.
pub struct TaskListener {
    pub events: Arc<Mutex<Vec<Value>>>,
}

impl TaskListener {
    async fn start(conn: &Connection) -> Self {
        let ch = conn.create_channel().await.expect("channel");
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare listener queue");
        ch.queue_bind(
            q.name().clone(),
            "collections.tasks".into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
        let mut consumer = ch
            .basic_consume(
                q.name().clone(),
                "test-listener".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        tokio::spawn(async move {
            let _keep = ch;
            while let Some(Ok(d)) = consumer.next().await {
                let mut v: Value = serde_json::from_slice(&d.data).expect("task event is JSON");
                v["_routing_key"] = json!(d.routing_key.as_str());
                v["_received_at"] = json!(Timestamp::now());
                sink.lock().expect("lock").push(v);
            }
        });
        Self { events }
    }

    /// Every event received so far.
    pub fn all(&self) -> Vec<Value> {
        self.events.lock().expect("lock").clone()
    }

    /// Waits until `pred` holds for the received events (or the timeout passes) and returns
    /// the matching ones.
    pub async fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let got: Vec<Value> = self.all().into_iter().filter(|e| pred(e)).collect();
            if got.len() >= count || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Matches a task event by CloudEvents type and task kind (and account).
pub fn is(ty: &'static str, kind: &'static str, account: &str) -> impl Fn(&Value) -> bool {
    let account = account.to_owned();
    move |e| e["type"] == ty && e["data"]["kind"] == kind && e["subject"] == account.as_str()
}

pub fn ts(v: &Value) -> Timestamp {
    v.as_str()
        .expect("timestamp string")
        .parse()
        .expect("RFC 3339")
}
