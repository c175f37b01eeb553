//! What the cluster tests share: the cluster scripts, a test environment whose broker is a
//! cluster, and a publisher and a task listener that fail over between nodes the way a
//! billing system and a dashboard must.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString},
    BasicProperties, Channel, Confirmation, Connection,
};
use serde_json::{json, Value};
use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

use jiff::{SignedDuration, Timestamp};

use crate::harness::{cloudevent, cny, zone_where_it_is, TaskListener, TestEnv};

/// The queue the test's own "dashboard" reads task events from: a quorum queue, so it
/// survives the loss of a node like the service's queues do.
pub const LISTENER_QUEUE: &str = "cluster-test.tasks";

fn script(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/cluster")).join(name)
}

/// Runs a cluster script with `env`; panics with its output when it fails.
pub async fn run_script(name: &str, env: &[(&str, String)], args: &[&str]) -> String {
    // Output to files, not pipes: the daemons a script starts may inherit its descriptors,
    // and a pipe would then never reach its end.
    let base = std::env::temp_dir().join(format!("cluster-script-{}", Uuid::new_v4().simple()));
    let (out_path, err_path) = (base.with_extension("out"), base.with_extension("err"));
    let out = std::fs::File::create(&out_path).expect("script output file");
    let err = std::fs::File::create(&err_path).expect("script error file");
    let status = tokio::process::Command::new(script(name))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .await
        .expect("run the cluster script");
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    assert!(
        status.success(),
        "{name} {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// The 3-node RabbitMQ cluster of `deploy/cluster/rabbitmq-3.sh`, with the test's own node
/// names (`rct1..3@localhost`), ports (5711-5713) and directory. Torn down when dropped.
pub struct RabbitCluster {
    env: Vec<(&'static str, String)>,
    down: bool,
}

impl RabbitCluster {
    pub const PORT_BASE: u16 = 5710;

    pub async fn up() -> Self {
        let cluster = Self {
            env: vec![
                (
                    "RABBIT_CLUSTER_DIR",
                    std::env::temp_dir()
                        .join("collections-rabbitmq-3-test")
                        .display()
                        .to_string(),
                ),
                ("RABBIT_CLUSTER_NODE", "rct".to_owned()),
                ("RABBIT_CLUSTER_PORT_BASE", Self::PORT_BASE.to_string()),
            ],
            down: false,
        };
        cluster.run(&["up"]).await;
        cluster
    }

    async fn run(&self, args: &[&str]) -> String {
        run_script("rabbitmq-3.sh", &self.env, args).await
    }

    /// `rabbitmqctl` on node `n`.
    pub async fn ctl(&self, n: u8, args: &[&str]) -> String {
        let n = n.to_string();
        let all: Vec<&str> = ["ctl", n.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        self.run(&all).await
    }

    /// Node `n`'s AMQP URL for `vhost`.
    pub fn url(n: u8, vhost: &str) -> String {
        format!(
            "amqp://collections:collections@127.0.0.1:{}/{vhost}",
            Self::PORT_BASE + u16::from(n)
        )
    }

    /// The three nodes' URLs for `vhost`, comma-separated (what `AMQP_URL` takes).
    pub fn urls(vhost: &str) -> String {
        (1..=3)
            .map(|n| Self::url(n, vhost))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub async fn add_vhost(&self, vhost: &str) {
        self.ctl(1, &["add_vhost", vhost]).await;
        self.ctl(
            1,
            &[
                "set_permissions",
                "-p",
                vhost,
                "collections",
                ".*",
                ".*",
                ".*",
            ],
        )
        .await;
    }

    /// Sends SIGKILL to node `n`'s Erlang VM.
    pub async fn kill(&self, n: u8) {
        self.run(&["kill", &n.to_string()]).await;
    }

    /// Starts node `n` again; returns once it runs (it rejoins the cluster by itself).
    pub async fn start(&self, n: u8) {
        self.run(&["start", &n.to_string()]).await;
    }

    /// Per queue of `vhost`: its leader's node number and how many members are online.
    pub async fn queues(&self, via: u8, vhost: &str) -> HashMap<String, (u8, usize)> {
        let out = self
            .ctl(
                via,
                &[
                    "list_queues",
                    "-p",
                    vhost,
                    "name",
                    "leader",
                    "online",
                    "--quiet",
                    "--no-table-headers",
                ],
            )
            .await;
        out.lines()
            .filter_map(|l| {
                let mut cols = l.split('\t');
                let (name, leader, online) = (cols.next()?, cols.next()?, cols.next()?);
                // rct2@localhost -> 2
                let node = leader
                    .split('@')
                    .next()?
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .ok()?;
                Some((name.to_owned(), (node, online.matches('@').count())))
            })
            .collect()
    }

    pub async fn down(&mut self) {
        if !self.down {
            self.run(&["down"]).await;
            self.down = true;
        }
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        if !self.down {
            // A failed test: the nodes still go (their logs are in the log of the test).
            let _ = std::process::Command::new(script("rabbitmq-3.sh"))
                .arg("down")
                .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
                .output();
        }
    }
}

fn admin_db_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let (server, _) = base.rsplit_once('/').expect("a URL with a path");
    if query.is_empty() {
        format!("{server}/{db}")
    } else {
        format!("{server}/{db}?{query}")
    }
}

/// A fresh, migrated database named `name` on the server of `admin_url`.
pub async fn create_database(admin_url: &str, name: &str) -> String {
    let mut admin = PgConnection::connect(admin_url)
        .await
        .expect("connect to Postgres");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let _ = admin.close().await;
    let url = with_database(admin_url, name);
    let store = collections_store::Store::connect(&url, 1)
        .await
        .expect("connect to the test database");
    store.migrate().await.expect("migrate the test database");
    store.pool().close().await;
    url
}

/// A test environment on the cluster: `amqp_urls` is what the binaries get (a list),
/// `declare_on` the node URL the topology is declared through (quorum queues are led by
/// the node they are declared on), the database on `database_url`. The listener queue is
/// declared and bound before any binary starts, and consumed (across failovers) by
/// [`listen`].
pub async fn cluster_env(
    name: &str,
    amqp_urls: &str,
    declare_on: &str,
    database_url: String,
) -> TestEnv {
    let amqp = collections_bus::connect(declare_on, "cluster-test")
        .await
        .expect("connect to the cluster");
    collections_bus::declare_topology_on(&amqp)
        .await
        .expect("declare topology");
    let ch = amqp.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    ch.queue_declare(
        LISTENER_QUEUE.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await
    .expect("declare the listener queue");
    ch.queue_bind(
        LISTENER_QUEUE.into(),
        collections_bus::TASKS_EXCHANGE.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind the listener queue");
    let events = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(listen(amqp_urls.to_owned(), events.clone()));
    let db = PgPool::connect(&database_url).await.expect("test db");
    let log_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("cluster-logs")
        .join(name);
    std::fs::create_dir_all(&log_dir).expect("log dir");
    TestEnv {
        name: name.to_owned(),
        database_url,
        amqp_url: amqp_urls.to_owned(),
        db,
        amqp,
        publisher: ch,
        tasks: TaskListener { events },
        log_dir,
        children: Vec::new(),
        extra_env: vec![
            ("WORKER_CONCURRENCY".into(), "1".into()),
            // Shorter waits than the defaults, so that a claim or an outbox lease left by
            // a link that died with its node is taken over within the test.
            ("CONFIRM_TIMEOUT_SECS".into(), "10".into()),
            ("CLAIM_TIMEOUT_SECS".into(), "15".into()),
            ("OUTBOX_LEASE_SECS".into(), "15".into()),
        ],
    }
}

/// The test database for the RabbitMQ test, on the machine's Postgres.
pub async fn machine_database(name: &str) -> String {
    create_database(&admin_db_url(), name).await
}

/// Reads task events from [`LISTENER_QUEUE`] into `sink` for ever, connecting again (to
/// any node) whenever the connection or the queue's leader goes.
async fn listen(urls: String, sink: Arc<Mutex<Vec<Value>>>) {
    loop {
        let Ok(conn) = collections_bus::connect(&urls, "cluster-test-listener").await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let consumed = async {
            let ch = conn.create_channel().await?;
            ch.basic_qos(500, BasicQosOptions::default()).await?;
            let mut consumer = ch
                .basic_consume(
                    LISTENER_QUEUE.into(),
                    "cluster-test-listener".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            while let Some(d) = consumer.next().await {
                let d = d?;
                let mut v: Value = serde_json::from_slice(&d.data).expect("task event is JSON");
                v["_routing_key"] = json!(d.routing_key.as_str());
                v["_received_at"] = json!(jiff::Timestamp::now());
                sink.lock().expect("lock").push(v);
                d.acker.ack(BasicAckOptions::default()).await?;
            }
            Ok::<_, lapin::Error>(())
        };
        let _ = consumed.await;
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, "again".into())).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A confirmed publisher that moves to another node when its node goes, publishing again
/// (same event id) whatever was not confirmed: at-least-once, as a billing system does.
pub struct FailoverPublisher {
    urls: String,
    channel: Option<(Connection, Channel)>,
    /// Sessions lost (a node died, a confirm did not come).
    pub reconnects: u32,
}

impl FailoverPublisher {
    pub fn new(urls: &str) -> Self {
        Self {
            urls: urls.to_owned(),
            channel: None,
            reconnects: 0,
        }
    }

    /// Publishes until the broker confirms.
    pub async fn publish(&mut self, routing_key: &str, body: &[u8]) {
        loop {
            if self.channel.is_none() {
                let opened = async {
                    let conn = collections_bus::connect(&self.urls, "cluster-test-publisher")
                        .await
                        .map_err(|e| e.to_string())?;
                    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
                    ch.confirm_select(ConfirmSelectOptions::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>((conn, ch))
                };
                match opened.await {
                    Ok(c) => self.channel = Some(c),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
            let (_, ch) = self.channel.as_ref().expect("opened above");
            let sent = tokio::time::timeout(Duration::from_secs(10), async {
                ch.basic_publish(
                    collections_bus::EVENTS_EXCHANGE.into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?
                .await
            })
            .await;
            if let Ok(Ok(Confirmation::Ack(None))) = sent {
                return;
            }
            self.reconnects += 1;
            if let Some((conn, _)) = self.channel.take() {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), conn.close(200, "again".into()))
                        .await;
            }
        }
    }
}

/// Inputs published so far, with the instant each publish started.
pub type Published = Arc<Mutex<Vec<(Uuid, Instant)>>>;

/// How long after `since` an event first published after it was applied (polled every
/// 100 ms); `None` if none within `limit`.
pub async fn consuming_again(
    db: &PgPool,
    published: &Published,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    while since.elapsed() < limit {
        let after: Vec<Uuid> = published
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, at)| *at > since)
            .map(|(id, _)| *id)
            .collect();
        if !after.is_empty() {
            let applied: i64 =
                sqlx::query_scalar("SELECT count(*) FROM inbox WHERE event_id = ANY($1)")
                    .bind(&after)
                    .fetch_one(db)
                    .await
                    .unwrap_or(0);
            if applied > 0 {
                return Some(since.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Inputs applied so far.
pub async fn applied(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(db)
        .await
        .unwrap_or(-1)
}

/// Accounts per second the load publishes (each a `payment.failed`, every third one also
/// a `promise.made`).
pub const ACCOUNTS_PER_SEC: u64 = 20;

/// A steady load until `stop`: accounts in a zone where it is early afternoon, so each
/// first call is due at once and fired by the scheduler; every third account also promises
/// to pay in two hours (its reminder and check fall after the test). Each input is recorded
/// in `published` once confirmed, with the instant its publish started. Returns the
/// publisher's reconnects.
pub fn spawn_load(
    urls: &str,
    prefix: &str,
    published: Published,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u32> {
    let (urls, prefix) = (urls.to_owned(), prefix.to_owned());
    tokio::spawn(async move {
        let (zone, tz) = zone_where_it_is(13);
        let mut publisher = FailoverPublisher::new(&urls);
        let tick = Duration::from_millis(1000 / ACCOUNTS_PER_SEC);
        let mut next = Instant::now();
        let mut i = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let acc = format!("{prefix}-{i}");
            let today = Timestamp::now().to_zoned(tz.clone()).date().to_string();
            let mut events = vec![(
                "payment.failed",
                json!({
                    "account_id": acc, "customer": {"timezone": zone},
                    "installment": {"number": 2, "due_date": today, "amount": cny(10_000)},
                    "overdue_amount": cny(10_000), "failure_reason": "insufficient_funds",
                    "attempted_at": Timestamp::now(),
                }),
            )];
            if i.is_multiple_of(3) {
                events.push((
                    "promise.made",
                    json!({"account_id": acc, "promise_id": format!("ptp-{acc}"),
                           "amount": cny(10_000),
                           "promised_at": Timestamp::now() + SignedDuration::from_hours(2),
                           "captured_by": "agent-7", "channel": "phone_mobile"}),
                ));
            }
            for (ty, data) in events {
                let id = Uuid::new_v4();
                let at = Instant::now();
                let body = cloudevent(id, ty, &acc, data).to_string();
                publisher.publish(ty, body.as_bytes()).await;
                published.lock().expect("lock").push((id, at));
            }
            i += 1;
            next += tick;
            tokio::time::sleep_until(next.into()).await;
        }
        publisher.reconnects
    })
}

/// Postgres with failover from `deploy/cluster/postgres-ha.sh` (Patroni, etcd, HAProxy), on
/// the test's own ports (HAProxy 5450, nodes 5451-5452) and directory. Torn down when
/// dropped.
pub struct PostgresHa {
    env: Vec<(&'static str, String)>,
    down: bool,
}

impl PostgresHa {
    pub const PORT: u16 = 5450;

    pub async fn up() -> Self {
        let ha = Self {
            env: vec![
                (
                    "PG_HA_DIR",
                    std::env::temp_dir()
                        .join("collections-postgres-ha-test")
                        .display()
                        .to_string(),
                ),
                ("PG_HA_PORT_BASE", Self::PORT.to_string()),
            ],
            down: false,
        };
        ha.run(&["up"]).await;
        ha
    }

    pub async fn run(&self, args: &[&str]) -> String {
        run_script("postgres-ha.sh", &self.env, args).await
    }

    /// The address every client uses (HAProxy), for database `db`.
    pub fn url(db: &str) -> String {
        format!("postgres://postgres:postgres@127.0.0.1:{}/{db}", Self::PORT)
    }

    /// The primary's node name.
    pub async fn leader(&self) -> String {
        self.run(&["leader"]).await.trim().to_owned()
    }

    pub async fn down(&mut self) {
        if !self.down {
            self.run(&["down"]).await;
            self.down = true;
        }
    }
}

impl Drop for PostgresHa {
    fn drop(&mut self) {
        if !self.down {
            let _ = std::process::Command::new(script("postgres-ha.sh"))
                .arg("down")
                .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
                .output();
        }
    }
}

/// A vhost of the machine's RabbitMQ for one test (deleted with the test's `TestEnv`);
/// returns its URL.
pub fn machine_vhost(name: &str) -> String {
    let base = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let (server, _) = base.rsplit_once('/').expect("a URL with a vhost");
    let user = server
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map_or("guest", |(cred, _)| {
            cred.split(':').next().unwrap_or("guest")
        });
    crate::harness::rabbitmqctl_output(&["add_vhost", name]);
    crate::harness::rabbitmqctl_output(&["set_permissions", "-p", name, user, ".*", ".*", ".*"]);
    format!("{server}/{name}")
}
