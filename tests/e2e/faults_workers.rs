//! The workers under faults: broker and database links cut and stalled, kill -9, the
//! broker closing connections or deleting a queue, an event the database refuses; and
//! what the workers refuse or report (credentials, policy, health and metrics, TLS to
//! Postgres). The `#[test]` entry points are in `crate::faults`.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::json;
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::{
    fault_support::{check_invariants, env_behind_proxy, failed, publish_load, Rng},
    harness::{zone_where_it_is, TestEnv},
    proxy::Proxy,
};

/// Breaks a worker's broker link (`fault`) for `secs` while 400 events are published;
/// returns when the link is restored, with the ids published.
async fn broker_fault_under_load(
    prefix: &str,
    fault: impl Fn(&Proxy),
    secs: u64,
) -> (TestEnv, Vec<Uuid>) {
    let (mut env, proxy) = env_behind_proxy("AMQP_URL", &[]).await;
    env.spawn("payment-failed-worker").await;
    let mut ids = publish_load(&env, prefix, 0..300).await;
    env.wait_count("SELECT count(*) FROM inbox", 100, Duration::from_secs(30))
        .await;
    fault(&proxy);
    ids.extend(publish_load(&env, prefix, 300..400).await);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    proxy.restore();
    (env, ids)
}

pub async fn broker_connection_cut_under_load_loses_and_duplicates_nothing() {
    let (env, ids) = broker_fault_under_load("acc-b", Proxy::cut, 3).await;
    let restored = Instant::now();
    let got = env
        .wait_count("SELECT count(*) FROM inbox", 400, Duration::from_secs(30))
        .await;
    assert_eq!(got, 400);
    assert!(
        restored.elapsed() < Duration::from_secs(10),
        "consuming resumed within 10 s of the broker coming back"
    );
    check_invariants(&env, &ids).await;
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
    let mut ids = publish_load(&env, prefix, 0..100).await;
    env.wait_count("SELECT count(*) FROM inbox", 100, Duration::from_secs(30))
        .await;
    fault(&proxy);
    ids.extend(publish_load(&env, prefix, 100..250).await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&env.db)
        .await
        .expect("q");
    assert_eq!(during, 100, "nothing applied while the database is away");
    proxy.restore();
    check_invariants(&env, &ids).await;
    let log =
        std::fs::read_to_string(env.log_dir.join("payment-failed-worker-0.log")).expect("log");
    assert!(log.contains(logged), "the fault was seen and retried");
}

pub async fn database_outage_is_retried_never_dead_lettered() {
    database_fault_is_retried(
        "acc-d",
        Proxy::cut,
        &[],
        "database failed; retrying batch (not acked)",
    )
    .await;
}

/// Unacknowledged deliveries of the payment-failed queue in the test's vhost.
fn unacked(env: &TestEnv) -> i64 {
    let out = crate::harness::rabbitmqctl_output(&[
        "list_queues",
        "-q",
        "-p",
        &env.name,
        "name",
        "messages_unacknowledged",
    ]);
    out.lines()
        .filter_map(|l| l.split_once('\t'))
        .find(|(q, _)| q.trim() == "collections.payment-failed")
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or(-1)
}

/// A database that stays down gets the worker's deliveries back within seconds: it holds
/// none while it waits (a quorum queue counts a delivery each time a held message returns,
/// so holding them through a long outage with broker drops would run valid events into
/// the delivery limit), and consumes again once the database answers.
pub async fn a_long_database_outage_gives_the_deliveries_back_until_it_ends() {
    let (mut env, proxy) = env_behind_proxy("DATABASE_URL", &[]).await;
    env.spawn("payment-failed-worker").await;
    let mut ids = publish_load(&env, "acc-g", 0..50).await;
    env.wait_count("SELECT count(*) FROM inbox", 50, Duration::from_secs(30))
        .await;
    proxy.cut();
    ids.extend(publish_load(&env, "acc-g", 50..150).await);
    let log_path = env.log_dir.join("payment-failed-worker-0.log");
    let waiting = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("not consuming until it answers")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !waiting() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        waiting(),
        "the worker stopped consuming while the database is down"
    );
    // The broker's queue statistics lag by up to its collection interval (5 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    while unacked(&env) != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for _ in 0..6 {
        assert_eq!(
            unacked(&env),
            0,
            "no delivery held while the database is down"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&env.db)
        .await
        .expect("q");
    assert_eq!(inbox, 50, "nothing applied while the database is away");
    proxy.restore();
    check_invariants(&env, &ids).await;
}

/// A database that stops answering without closing anything (no RST, no FIN): the batch
/// in flight is abandoned after DB_TIMEOUT_SECS and retried like an outage.
pub async fn database_stall_is_timed_out_and_retried_never_dead_lettered() {
    database_fault_is_retried(
        "acc-s",
        Proxy::stall,
        &[("DB_TIMEOUT_SECS", "2")],
        "no answer within 2s (DB_TIMEOUT_SECS)",
    )
    .await;
}

pub async fn kill_9_of_a_worker_under_load_loses_and_duplicates_nothing() {
    let mut env = TestEnv::new().await;
    env.spawn("payment-failed-worker").await;
    let ids = publish_load(&env, "acc-k", 0..500).await;
    env.wait_count("SELECT count(*) FROM inbox", 50, Duration::from_secs(30))
        .await;
    let (_, mut victim) = env.children.pop().expect("worker");
    victim.start_kill().expect("SIGKILL");
    let _ = victim.wait().await;
    env.spawn("payment-failed-worker").await;
    check_invariants(&env, &ids).await;
}

/// A broker that stops answering mid-load for a few seconds: deliveries stop and
/// confirms are held. When the link flows again the worker carries on (longer stalls hit
/// the confirm timeout and rebuild the session), and nothing is lost or duplicated.
pub async fn broker_stall_under_load_loses_and_duplicates_nothing() {
    let (env, ids) = broker_fault_under_load("acc-t", Proxy::stall, 5).await;
    check_invariants(&env, &ids).await;
}

pub async fn health_endpoints_report_readiness_and_metrics_count_events() {
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
    // Every committed batch reports each step of its transaction once.
    let step_count = |step: &str| -> u64 {
        let key = format!(
            r#"collections_batch_step_seconds_count{{type="payment.failed",step="{step}"}} "#
        );
        m.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {m}"))
    };
    let begun = step_count("begin");
    assert!(begun >= 1, "{m}");
    for step in ["read", "decide", "write", "commit"] {
        assert_eq!(step_count(step), begun, "{step}: {m}");
    }
}

pub async fn a_deleted_queue_is_redeclared_and_consuming_resumes() {
    let mut env = TestEnv::new().await;
    env.spawn("payment-failed-worker").await;
    let mut ids = publish_load(&env, "acc-q", 0..5).await;
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
            return Box::pin(retry_after_delete(env, ids)).await;
        }
        assert!(Instant::now() < deadline, "queue never redeclared");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ids.extend(publish_load(&env, "acc-q", 5..10).await);
    check_invariants(&env, &ids).await;
}

async fn retry_after_delete(env: TestEnv, mut ids: Vec<Uuid>) {
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
    ids.extend(publish_load(&env, "acc-q", 5..10).await);
    check_invariants(&env, &ids).await;
}

pub async fn postgres_tls_is_used_when_the_url_asks_for_it() {
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

pub async fn an_event_the_database_refuses_is_isolated_and_dead_lettered_not_retried_forever() {
    let mut env = TestEnv::new().await;
    // Publish before the worker starts, so the poison shares a batch with good events.
    let mut ids = publish_load(&env, "acc-p", 0..10).await;
    let (zone, tz) = zone_where_it_is(13);
    let today = Timestamp::now().to_zoned(tz).date().to_string();
    let mut poison = failed("acc-poison", &zone, &today);
    // Valid JSON and valid for the schema, but Postgres cannot store a NUL character.
    poison["failure_reason"] = json!("insufficient\u{0}funds");
    env.publish("payment.failed", "acc-poison", poison).await;
    ids.extend(publish_load(&env, "acc-p", 10..20).await);
    env.spawn("payment-failed-worker").await;
    let (props, _) = env
        .get_dead_letter("collections.payment-failed", Duration::from_secs(30))
        .await
        .expect("the poison is dead-lettered");
    assert_eq!(
        collections_bus::header_str(&props, "x-collections-error").as_deref(),
        Some("invalid_value")
    );
    check_invariants(&env, &ids).await;
}

/// Credentials come from the environment only: a binary started without them refuses to
/// start, names the variable, and never falls back to a default in code. A policy file
/// with a mistake is refused with the key that is wrong.
pub async fn binaries_refuse_to_start_without_credentials_or_with_a_bad_policy() {
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

/// The broker itself closes the worker's connection (`rabbitmqctl close_connection`, as an
/// operator or a broker under memory pressure does), twice under load: the worker reconnects
/// on a new connection and the invariants hold.
pub async fn broker_closing_the_workers_connection_under_load_loses_and_duplicates_nothing() {
    let test = "broker_closing_the_workers_connection";
    let (mut rng, _) = Rng::seeded("FAULT_SEED", test);
    let mut env = TestEnv::new().await;
    env.spawn("payment-failed-worker").await;
    let connections = |env: &TestEnv| env.broker_connections("payment-failed-worker");
    let mut ids = Vec::new();
    let mut closed: Vec<String> = Vec::new();
    for round in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(20);
        let current = loop {
            let c: Vec<String> = connections(&env)
                .into_iter()
                .filter(|p| !closed.contains(p))
                .collect();
            if !c.is_empty() {
                break c;
            }
            assert!(
                Instant::now() < deadline,
                "the worker has a broker connection (round {round}); closed so far {closed:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let base = ids.len();
        ids.extend(publish_load(&env, &format!("acc-c{round}-"), 0..200).await);
        // Close at a random point while the batch is being consumed.
        let want = i64::try_from(base + 20 + usize::try_from(rng.below(100)).expect("small"))
            .expect("count");
        env.wait_count(
            &format!("SELECT least(count(*), {want}) FROM inbox"),
            want,
            Duration::from_secs(30),
        )
        .await;
        for pid in &current {
            assert!(
                env.close_broker_connection(pid, "fault test: the broker closes the connection"),
                "rabbitmqctl close_connection {pid}"
            );
        }
        println!("{test}: round {round}: closed {current:?} after {want} applied");
        closed.extend(current);
        ids.extend(publish_load(&env, &format!("acc-c{round}-"), 200..300).await);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while connections(&env).iter().all(|p| closed.contains(p)) {
        assert!(
            Instant::now() < deadline,
            "the worker opened a new connection after the broker closed its own"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    check_invariants(&env, &ids).await;
    let log = env.log("payment-failed-worker-0");
    assert!(
        log.matches("AMQP session ended; reconnecting").count() >= 2,
        "each close was seen and survived"
    );
}
