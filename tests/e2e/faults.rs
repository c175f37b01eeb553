//! Fault injection: a TCP proxy of our own between the binaries and RabbitMQ/Postgres cuts
//! and restores connections (the shared servers are never restarted); processes are killed
//! with SIGKILL. Invariants are then checked from the database and the task exchange.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use jiff::Timestamp;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::harness::{cny, zone_where_it_is, TestEnv};

/// Forwards 127.0.0.1:<port> to a target. `cut` drops every connection and refuses new
/// ones; `stall` keeps every connection open but holds all bytes (a black-holed network,
/// a peer that stopped answering); `restore` ends either.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    generation: Arc<Mutex<CancellationToken>>,
    stalled: tokio::sync::watch::Sender<bool>,
}

/// Copies one direction, holding the bytes while the link is stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(Mutex::new(CancellationToken::new()));
        let (stalled, _) = tokio::sync::watch::channel(false);
        let (u, g, st) = (up.clone(), generation.clone(), stalled.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !u.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let token = g.lock().expect("lock").clone();
                let (a, b) = (st.subscribe(), st.subscribe());
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (in_r, in_w) = inbound.into_split();
                    let (out_r, out_w) = outbound.into_split();
                    tokio::select! {
                        () = token.cancelled() => {}
                        () = pump(in_r, out_w, a) => {}
                        () = pump(out_r, in_w, b) => {}
                    }
                });
            }
        });
        Self {
            addr,
            up,
            generation,
            stalled,
        }
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut g = self.generation.lock().expect("lock");
        g.cancel();
        *g = CancellationToken::new();
    }

    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
        self.stalled.send_replace(false);
    }
}

fn port_of(url: &str, default: u16) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let hostport = authority.rsplit('@').next().unwrap_or(authority);
    match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(default)),
        None => (hostport.to_owned(), default),
    }
}

fn via(url: &str, proxy: SocketAddr, default: u16) -> String {
    let (host, port) = port_of(url, default);
    url.replacen(&format!("{host}:{port}"), &proxy.to_string(), 1)
}

async fn target(url: &str, default: u16) -> SocketAddr {
    let (host, port) = port_of(url, default);
    let host = if host == "localhost" {
        "127.0.0.1".to_owned()
    } else {
        host
    };
    let mut addrs = tokio::net::lookup_host((host.as_str(), port))
        .await
        .expect("resolve");
    addrs.next().expect("an address")
}

fn failed(account: &str, zone: &str, due: &str) -> serde_json::Value {
    json!({
        "account_id": account, "customer": {"timezone": zone},
        "installment": {"number": 2, "due_date": due, "amount": cny(10_000)},
        "overdue_amount": cny(10_000), "failure_reason": "insufficient_funds",
        "attempted_at": Timestamp::now(),
    })
}

/// Every input applied exactly once, every planned task's event published exactly once
/// (by CloudEvents id), nothing dead-lettered, every outbox row published.
async fn check_invariants(env: &TestEnv, n: usize) {
    let n = n as i64;
    let inbox = env
        .wait_count("SELECT count(*) FROM inbox", n, Duration::from_secs(60))
        .await;
    assert_eq!(inbox, n, "every event applied");
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM journal WHERE kind = 'event_applied'")
            .fetch_one(&env.db)
            .await
            .expect("q");
    assert_eq!(applied, n, "each applied exactly once");
    let calls: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasks WHERE kind = 'collection_call'")
            .fetch_one(&env.db)
            .await
            .expect("q");
    assert_eq!(calls, n, "one call per delinquent account");
    let unpublished = env
        .wait_count(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
            0,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(unpublished, 0, "every committed task event published");
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&env.db)
        .await
        .expect("q");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids: HashSet<String> = env
            .tasks
            .all()
            .iter()
            .map(|e| e["id"].as_str().expect("id").to_owned())
            .collect();
        if ids.len() as i64 >= outbox || Instant::now() > deadline {
            assert_eq!(
                ids.len() as i64,
                outbox,
                "every outbox row reached the exchange"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for q in ["collections.payment-failed"] {
        assert!(
            env.get_dead_letter(q, Duration::from_millis(200))
                .await
                .is_none(),
            "nothing dead-lettered"
        );
    }
}

async fn publish_load(env: &TestEnv, prefix: &str, range: std::ops::Range<usize>) {
    let (zone, tz) = zone_where_it_is(13);
    let today = Timestamp::now().to_zoned(tz).date().to_string();
    for i in range {
        let acc = format!("{prefix}{i}");
        env.publish("payment.failed", &acc, failed(&acc, &zone, &today))
            .await;
    }
}

/// A test environment whose link to the broker (`AMQP_URL`) or the database
/// (`DATABASE_URL`) goes through a proxy of the test's own, and its extra variables.
async fn env_behind_proxy(var: &str, extra_env: &[(&str, &str)]) -> (TestEnv, Proxy) {
    let mut env = TestEnv::new().await;
    let (url, port) = match var {
        "AMQP_URL" => (env.amqp_url.clone(), 5672),
        _ => (env.database_url.clone(), 5432),
    };
    let proxy = Proxy::start(target(&url, port).await).await;
    env.extra_env
        .push((var.into(), via(&url, proxy.addr, port)));
    for (k, v) in extra_env {
        env.extra_env.push(((*k).into(), (*v).into()));
    }
    (env, proxy)
}

/// Breaks a worker's broker link (`fault`) for `secs` while 400 events are published;
/// returns when the link is restored.
async fn broker_fault_under_load(prefix: &str, fault: impl Fn(&Proxy), secs: u64) -> TestEnv {
    let (mut env, proxy) = env_behind_proxy("AMQP_URL", &[]).await;
    env.spawn("payment-failed-worker").await;
    publish_load(&env, prefix, 0..300).await;
    env.wait_count("SELECT count(*) FROM inbox", 100, Duration::from_secs(30))
        .await;
    fault(&proxy);
    publish_load(&env, prefix, 300..400).await;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    proxy.restore();
    env
}

#[tokio::test]
async fn broker_connection_cut_under_load_loses_and_duplicates_nothing() {
    let env = broker_fault_under_load("acc-b", Proxy::cut, 3).await;
    let restored = Instant::now();
    let got = env
        .wait_count("SELECT count(*) FROM inbox", 400, Duration::from_secs(30))
        .await;
    assert_eq!(got, 400);
    assert!(
        restored.elapsed() < Duration::from_secs(10),
        "consuming resumed within 10 s of the broker coming back"
    );
    check_invariants(&env, 400).await;
    let log =
        std::fs::read_to_string(env.log_dir.join("payment-failed-worker-0.log")).expect("log");
    assert!(
        log.contains("AMQP session ended; reconnecting"),
        "the cut was seen and survived"
    );
}

/// Breaks the database link of a worker under load (`fault`), checks that nothing more
/// is applied while it lasts, restores it, and checks that every event is applied once,
/// nothing dead-lettered, and that the worker logged `logged` (why it retried).
async fn database_fault_is_retried(
    prefix: &str,
    fault: impl Fn(&Proxy),
    extra_env: &[(&str, &str)],
    logged: &str,
) {
    let (mut env, proxy) = env_behind_proxy("DATABASE_URL", extra_env).await;
    env.spawn("payment-failed-worker").await;
    publish_load(&env, prefix, 0..100).await;
    env.wait_count("SELECT count(*) FROM inbox", 100, Duration::from_secs(30))
        .await;
    fault(&proxy);
    publish_load(&env, prefix, 100..250).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&env.db)
        .await
        .expect("q");
    assert_eq!(during, 100, "nothing applied while the database is away");
    proxy.restore();
    check_invariants(&env, 250).await;
    let log =
        std::fs::read_to_string(env.log_dir.join("payment-failed-worker-0.log")).expect("log");
    assert!(log.contains(logged), "the fault was seen and retried");
}

#[tokio::test]
async fn database_outage_is_retried_never_dead_lettered() {
    database_fault_is_retried(
        "acc-d",
        Proxy::cut,
        &[],
        "database failed; retrying batch (not acked)",
    )
    .await;
}

/// A database that stops answering without closing anything (no RST, no FIN): the batch
/// in flight is abandoned after DB_TIMEOUT_SECS and retried like an outage.
#[tokio::test]
async fn database_stall_is_timed_out_and_retried_never_dead_lettered() {
    database_fault_is_retried(
        "acc-s",
        Proxy::stall,
        &[("DB_TIMEOUT_SECS", "2")],
        "no answer within 2s (DB_TIMEOUT_SECS)",
    )
    .await;
}

#[tokio::test]
async fn kill_9_of_a_worker_under_load_loses_and_duplicates_nothing() {
    let mut env = TestEnv::new().await;
    env.spawn("payment-failed-worker").await;
    publish_load(&env, "acc-k", 0..500).await;
    env.wait_count("SELECT count(*) FROM inbox", 50, Duration::from_secs(30))
        .await;
    let (_, mut victim) = env.children.pop().expect("worker");
    victim.start_kill().expect("SIGKILL");
    let _ = victim.wait().await;
    env.spawn("payment-failed-worker").await;
    check_invariants(&env, 500).await;
}

/// A broker that stops answering mid-load for a few seconds: deliveries stop and
/// confirms are held. When the link flows again the worker carries on (longer stalls hit
/// the confirm timeout and rebuild the session), and nothing is lost or duplicated.
#[tokio::test]
async fn broker_stall_under_load_loses_and_duplicates_nothing() {
    let env = broker_fault_under_load("acc-t", Proxy::stall, 5).await;
    check_invariants(&env, 400).await;
}

#[tokio::test]
async fn health_endpoints_report_readiness_and_metrics_count_events() {
    let mut env = TestEnv::new().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    env.extra_env
        .push(("HEALTH_ADDR".into(), format!("127.0.0.1:{port}")));
    env.spawn("payment-failed-worker").await;
    let get = |path: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        Some(out)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(r) = get("/health/ready").await {
            if r.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "worker never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(get("/health/live")
        .await
        .expect("live")
        .starts_with("HTTP/1.1 200"));
    publish_load(&env, "acc-h", 0..3).await;
    env.publish_raw("payment.failed", b"nope").await;
    env.wait_count("SELECT count(*) FROM inbox", 3, Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = get("/metrics").await.expect("metrics");
    assert!(
        m.contains(
            r#"collections_events_total{type="payment.failed",outcome="applied",reason=""} 3"#
        ),
        "{m}"
    );
    assert!(
        m.contains(r#"outcome="dead_lettered",reason="not_json"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"collections_task_events_total{state="scheduled",kind="collection_call"} 3"#),
        "{m}"
    );
    assert!(m.contains("collections_outbox_backlog 0"), "{m}");
}

#[tokio::test]
async fn a_deleted_queue_is_redeclared_and_consuming_resumes() {
    let mut env = TestEnv::new().await;
    env.spawn("payment-failed-worker").await;
    publish_load(&env, "acc-q", 0..5).await;
    env.wait_count("SELECT count(*) FROM inbox", 5, Duration::from_secs(20))
        .await;
    // An operator deletes the queue: the broker cancels the consumers.
    let ch = env.amqp.create_channel().await.expect("channel");
    ch.queue_delete(
        "collections.payment-failed".into(),
        lapin::options::QueueDeleteOptions::default(),
    )
    .await
    .expect("delete queue");
    // The worker's new session redeclares queue and binding; then events flow again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let q = ch
            .queue_declare(
                "collections.payment-failed".into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await;
        if let Ok(q) = q {
            if q.consumer_count() > 0 {
                break;
            }
        } else {
            // A failed passive declare closes the channel.
            return Box::pin(retry_after_delete(env)).await;
        }
        assert!(Instant::now() < deadline, "queue never redeclared");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    publish_load(&env, "acc-q", 5..10).await;
    check_invariants(&env, 10).await;
}

async fn retry_after_delete(env: TestEnv) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ch = env.amqp.create_channel().await.expect("channel");
        let ok = ch
            .queue_declare(
                "collections.payment-failed".into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .is_ok_and(|q| q.consumer_count() > 0);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queue never redeclared with a consumer"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    publish_load(&env, "acc-q", 5..10).await;
    check_invariants(&env, 10).await;
}

#[tokio::test]
async fn postgres_tls_is_used_when_the_url_asks_for_it() {
    let mut env = TestEnv::new().await;
    let ssl_on: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&env.db)
        .await
        .expect("q");
    if ssl_on != "on" {
        eprintln!("server has ssl = off; nothing to prove here");
        return;
    }
    let url = format!(
        "{}?sslmode=require&application_name=tls-worker",
        env.database_url
    );
    env.extra_env.push(("DATABASE_URL".into(), url));
    env.spawn("payment-failed-worker").await;
    publish_load(&env, "acc-tls", 0..2).await;
    env.wait_count("SELECT count(*) FROM inbox", 2, Duration::from_secs(20))
        .await;
    let (total, tls): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl)
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.application_name = 'tls-worker'",
    )
    .fetch_one(&env.db)
    .await
    .expect("q");
    assert!(total >= 1, "the worker is connected");
    assert_eq!(tls, total, "every worker connection uses TLS");
}

/// Minutes of load with random faults, then the invariant check. Not in CI:
/// `SOAK_SECS=300 cargo test --release -p collections-workers --test e2e -- --ignored soak`
#[tokio::test]
#[ignore = "soak: run by hand, minutes long"]
async fn soak_with_random_faults() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let mut env = TestEnv::new().await;
    let broker = Proxy::start(target(&env.amqp_url, 5672).await).await;
    let db = Proxy::start(target(&env.database_url, 5432).await).await;
    env.extra_env
        .push(("AMQP_URL".into(), via(&env.amqp_url, broker.addr, 5672)));
    env.extra_env
        .push(("DATABASE_URL".into(), via(&env.database_url, db.addr, 5432)));
    env.extra_env.push(("DB_TIMEOUT_SECS".into(), "3".into()));
    env.spawn("payment-failed-worker").await;
    env.spawn("payment-failed-worker").await;
    let started = Instant::now();
    let mut published = 0usize;
    let mut faults = Vec::new();
    let mut rng_state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    while started.elapsed() < Duration::from_secs(secs) {
        publish_load(&env, "acc-s", published..published + 200).await;
        published += 200;
        match next() % 6 {
            0 => {
                faults.push("broker cut");
                broker.cut();
                tokio::time::sleep(Duration::from_millis(500 + next() % 2000)).await;
                broker.restore();
            }
            1 => {
                faults.push("database cut");
                db.cut();
                tokio::time::sleep(Duration::from_millis(500 + next() % 2000)).await;
                db.restore();
            }
            2 => {
                faults.push("kill -9 worker");
                let (_, mut victim) = env.children.remove(0);
                let _ = victim.start_kill();
                let _ = victim.wait().await;
                env.spawn("payment-failed-worker").await;
            }
            3 => {
                faults.push("broker stall");
                broker.stall();
                tokio::time::sleep(Duration::from_millis(500 + next() % 5000)).await;
                broker.restore();
            }
            4 => {
                faults.push("database stall");
                db.stall();
                tokio::time::sleep(Duration::from_millis(500 + next() % 5000)).await;
                db.restore();
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    println!("soak: {published} events, faults: {faults:?}");
    check_invariants(&env, published).await;
    println!("soak: invariants hold");
}

#[tokio::test]
async fn an_event_the_database_refuses_is_isolated_and_dead_lettered_not_retried_forever() {
    let mut env = TestEnv::new().await;
    // Publish before the worker starts, so the poison shares a batch with good events.
    publish_load(&env, "acc-p", 0..10).await;
    let (zone, tz) = zone_where_it_is(13);
    let today = Timestamp::now().to_zoned(tz).date().to_string();
    let mut poison = failed("acc-poison", &zone, &today);
    // Valid JSON and valid for the schema, but Postgres cannot store a NUL character.
    poison["failure_reason"] = json!("insufficient\u{0}funds");
    env.publish("payment.failed", "acc-poison", poison).await;
    publish_load(&env, "acc-p", 10..20).await;
    env.spawn("payment-failed-worker").await;
    let (props, _) = env
        .get_dead_letter("collections.payment-failed", Duration::from_secs(30))
        .await
        .expect("the poison is dead-lettered");
    assert_eq!(
        collections_bus::header_str(&props, "x-collections-error").as_deref(),
        Some("invalid_value")
    );
    check_invariants(&env, 20).await;
}

/// Credentials come from the environment only: a binary started without them refuses to
/// start, names the variable, and never falls back to a default in code. A policy file
/// with a mistake is refused with the key that is wrong.
#[tokio::test]
async fn binaries_refuse_to_start_without_credentials_or_with_a_bad_policy() {
    let run = |bin: &str, env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(crate::harness::bin_path(bin));
        cmd.env_clear().env("LOG_FORMAT", "text");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run binary");
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        (out.status, text)
    };
    for bin in ["payment-failed-worker", "task-scheduler"] {
        let (status, text) = run(bin, &[("AMQP_URL", "amqp://127.0.0.1:1/%2f")]);
        assert!(!status.success(), "{bin} started without DATABASE_URL");
        assert!(text.contains("DATABASE_URL is not set"), "{bin}: {text}");
        let (status, text) = run(bin, &[("DATABASE_URL", "postgres://127.0.0.1:1/x")]);
        assert!(!status.success(), "{bin} started without AMQP_URL");
        assert!(text.contains("AMQP_URL is not set"), "{bin}: {text}");
    }
    let dir = std::env::temp_dir().join(format!("bad-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("policy.toml");
    let default = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/policy/default.toml"
    ));
    let bad = default.replacen("start = \"08:00\"", "start = \"25:00\"", 1);
    assert_ne!(
        bad, default,
        "the default policy has a contact window start"
    );
    std::fs::write(&path, bad).expect("write");
    let (status, text) = run(
        "promise-made-worker",
        &[
            ("DATABASE_URL", "postgres://127.0.0.1:1/x"),
            ("AMQP_URL", "amqp://127.0.0.1:1/%2f"),
            ("POLICY_FILE", path.to_str().expect("utf-8 path")),
        ],
    );
    assert!(!status.success(), "started with a bad policy");
    assert!(text.contains("POLICY_FILE"), "{text}");
    assert!(text.contains("contact_window"), "names the key: {text}");
}
