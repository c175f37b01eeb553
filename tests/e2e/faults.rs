//! Fault injection: a TCP proxy of our own between the binaries and RabbitMQ/Postgres cuts
//! and restores connections (the shared servers are never restarted); processes are killed
//! with SIGKILL; the broker closes connections itself. Invariants are then checked from the
//! database and the task exchange (`crate::invariants`).
//!
//! Fault moments come from a seeded generator; each test prints its seed, and
//! `FAULT_SEED=<seed>` (`SOAK_SEED` for the soak) replays the same fault schedule.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use jiff::{tz::TimeZone, SignedDuration, Timestamp};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    harness::{cny, zone_where_it_is, TestEnv},
    invariants::{verify, Expect, Observed, Transition},
};

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

/// The invariants (`crate::invariants`) for a test that runs workers only: every input
/// applied exactly once, every committed task event received, ids stable, nothing
/// dead-lettered; and, since every input is a `payment.failed` of its own account, one
/// call per input.
async fn check_invariants(env: &TestEnv, inputs: &[Uuid]) -> Observed {
    let observed = verify(
        env,
        &Expect {
            inputs,
            scheduler: false,
            settle: Duration::from_secs(60),
            horizon: None,
            crashed_firings: false,
        },
    )
    .await;
    let calls = observed
        .tasks
        .values()
        .filter(|t| t.kind == "collection_call")
        .count();
    assert_eq!(calls, inputs.len(), "one call per delinquent account");
    println!("invariants hold: {}", observed.summary);
    observed
}

/// Publishes one `payment.failed` per account `<prefix><i>`; returns the event ids.
async fn publish_load(env: &TestEnv, prefix: &str, range: std::ops::Range<usize>) -> Vec<Uuid> {
    let (zone, tz) = zone_where_it_is(13);
    let today = Timestamp::now().to_zoned(tz).date().to_string();
    let mut ids = Vec::with_capacity(range.len());
    for i in range {
        let acc = format!("{prefix}{i}");
        ids.push(
            env.publish("payment.failed", &acc, failed(&acc, &zone, &today))
                .await,
        );
    }
    ids
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

#[tokio::test]
async fn broker_connection_cut_under_load_loses_and_duplicates_nothing() {
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
#[tokio::test]
async fn a_long_database_outage_gives_the_deliveries_back_until_it_ends() {
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
#[tokio::test]
async fn broker_stall_under_load_loses_and_duplicates_nothing() {
    let (env, ids) = broker_fault_under_load("acc-t", Proxy::stall, 5).await;
    check_invariants(&env, &ids).await;
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

#[tokio::test]
async fn a_deleted_queue_is_redeclared_and_consuming_resumes() {
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

/// Minutes of load (payment failures and promises whose tasks come due during the run,
/// night accounts included) with random faults on every process and link: broker and
/// database cuts and stalls (some longer than the scheduler's claim timeout), kill -9 of a
/// worker or of one of two schedulers, the broker closing a connection. Then the invariant
/// check and its summary. Not in CI:
/// `SOAK_SECS=300 cargo test --release -p collections-workers --test e2e -- --ignored soak --nocapture`
/// (`SOAK_SEED=<seed>` replays the fault schedule of a run).
#[tokio::test]
#[ignore = "soak: run by hand, minutes long"]
async fn soak_with_random_faults() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let (mut rng, seed) = Rng::seeded("SOAK_SEED", "soak");
    let mut env = TestEnv::new().await;
    // Cadence hours every 10 s over the run, so cadence calls fire throughout.
    let hours = u32::try_from(secs / 10).expect("hours").clamp(1, 200);
    let mut load = Load::new(
        &mut env,
        "acc-s",
        Duration::from_secs(5),
        Duration::from_secs(10),
        hours,
    );
    let broker = Proxy::start(target(&env.amqp_url, 5672).await).await;
    let db = Proxy::start(target(&env.database_url, 5432).await).await;
    env.extra_env
        .push(("AMQP_URL".into(), via(&env.amqp_url, broker.addr, 5672)));
    env.extra_env
        .push(("DATABASE_URL".into(), via(&env.database_url, db.addr, 5432)));
    env.extra_env.push(("DB_TIMEOUT_SECS".into(), "3".into()));
    env.extra_env.push(("SCHEDULER_BATCH".into(), "20".into()));
    env.start_workers().await;
    env.spawn("payment-failed-worker").await;
    env.spawn("task-scheduler").await;
    env.spawn("task-scheduler").await;
    let started = Instant::now();
    let mut faults: Vec<String> = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        load.wave(&env, &mut rng, 30, 6).await;
        if load.waves.is_multiple_of(5) {
            load.set_back_night_tasks(&env).await;
        }
        let at = format!("{:.0}s", started.elapsed().as_secs_f64());
        match rng.below(10) {
            0 => {
                let d = rng.millis(500, 2500);
                faults.push(format!("{at} broker cut {d:?}"));
                broker.cut();
                tokio::time::sleep(d).await;
                broker.restore();
            }
            1 => {
                let d = rng.millis(500, 2500);
                faults.push(format!("{at} database cut {d:?}"));
                db.cut();
                tokio::time::sleep(d).await;
                db.restore();
            }
            2 => {
                let i = usize::try_from(rng.below(env.children.len() as u64)).expect("index");
                let (bin, mut victim) = env.children.remove(i);
                faults.push(format!("{at} kill -9 {bin}"));
                let _ = victim.start_kill();
                let _ = victim.wait().await;
                env.spawn(&bin).await;
            }
            3 => {
                let d = rng.millis(500, 5500);
                faults.push(format!("{at} broker stall {d:?}"));
                broker.stall();
                tokio::time::sleep(d).await;
                broker.restore();
            }
            4 => {
                let d = rng.millis(500, 5500);
                faults.push(format!("{at} database stall {d:?}"));
                db.stall();
                tokio::time::sleep(d).await;
                db.restore();
            }
            5 => {
                faults.push(format!("{at} kill -9 task-scheduler"));
                let i = env
                    .children
                    .iter()
                    .position(|(b, _)| b == "task-scheduler")
                    .expect("a scheduler");
                let (bin, mut victim) = env.children.remove(i);
                let _ = victim.start_kill();
                let _ = victim.wait().await;
                env.spawn(&bin).await;
            }
            6 => {
                let bins = [
                    "payment-failed-worker",
                    "promise-made-worker",
                    "task-scheduler",
                ];
                let bin = bins[usize::try_from(rng.below(3)).expect("index")];
                let pids = env.broker_connections(bin);
                faults.push(format!(
                    "{at} broker closes {bin} ({} connections)",
                    pids.len()
                ));
                for pid in pids {
                    let _ =
                        env.close_broker_connection(&pid, "soak: the broker closes the connection");
                }
            }
            7 => {
                // Longer than the 15 s claim timeout: completions retried across it meet
                // the rescuer.
                let d = rng.millis(16_000, 20_000);
                faults.push(format!("{at} long database cut {d:?}"));
                db.cut();
                tokio::time::sleep(d).await;
                db.restore();
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    println!(
        "soak (seed {seed}): {} inputs in {} waves, faults: {faults:?}",
        load.inputs.len(),
        load.waves
    );
    load.set_back_night_tasks(&env).await;
    let observed = verify(
        &env,
        &Expect {
            inputs: &load.inputs,
            scheduler: true,
            settle: Duration::from_secs(120),
            horizon: Some(load.horizon),
            crashed_firings: true,
        },
    )
    .await;
    let (moved, cancelled) = load.check_night(&observed);
    println!(
        "soak (seed {seed}): invariants hold: {}; night tasks set back {}: {moved} moved, \
         {cancelled} cancelled first; scheduler work {:?}",
        observed.summary,
        load.set_back.len(),
        scheduler_work(&observed)
    );
}

#[tokio::test]
async fn an_event_the_database_refuses_is_isolated_and_dead_lettered_not_retried_forever() {
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

// ---------------------------------------------------------------------------------------
// The scheduler under faults, the broker closing connections, and the pieces they share.
// ---------------------------------------------------------------------------------------

/// xorshift64* seeded from the clock (or a variable, to replay a run): the fault
/// schedule of a failing run can be reproduced; the system's own timing cannot.
pub struct Rng(u64);

impl Rng {
    /// Seeds from `var` when set, else from the clock; prints the seed.
    fn seeded(var: &str, test: &str) -> (Self, u64) {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                #[allow(clippy::cast_possible_truncation)]
                let low = nanos as u64;
                low ^ u64::from(std::process::id()).rotate_left(32)
            });
        println!("{test}: fault seed {seed} (replay the fault schedule with {var}={seed})");
        (Self::new(seed), seed)
    }

    fn new(seed: u64) -> Self {
        // splitmix64 of the seed: never zero, well spread even for small seeds.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A duration between `lo` and `hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }

    /// An independent generator (for a concurrent task).
    fn fork(&mut self) -> Self {
        Self::new(self.next())
    }
}

/// The scheduler's world under load: a policy with promise timings and cadence hours in
/// seconds, accounts in a zone where it is early afternoon, and accounts in two zones where
/// it is night (about 02:00 and 23:00).
struct Load {
    prefix: String,
    day: (String, TimeZone),
    nights: [(String, TimeZone); 2],
    /// Every input published, in order.
    inputs: Vec<Uuid>,
    /// Night accounts' contact tasks whose due instant the test set back to the last
    /// evening (20:59:30 local), as an outage would leave them: they come due at night.
    set_back: HashMap<Uuid, Timestamp>,
    waves: usize,
    /// The last instant a task of this load comes due today (the last cadence hour, the
    /// latest promise's expiry).
    horizon: Timestamp,
}

impl Load {
    /// Writes the policy (POLICY_FILE for every binary of `env`): reminder and check 3 s
    /// around the promise, expiry 6 s after it, and `cadence` cadence hours every
    /// `step` from `first` (local times in the day zone), 3 attempts a day.
    fn new(env: &mut TestEnv, prefix: &str, first: Duration, step: Duration, cadence: u32) -> Self {
        let day = zone_where_it_is(13);
        let nights = [zone_where_it_is(2), zone_where_it_is(23)];
        let start = Timestamp::now() + SignedDuration::try_from(first).expect("duration");
        let last_hour =
            start + SignedDuration::try_from(step * cadence.saturating_sub(1)).expect("duration");
        let hours: Vec<String> = (0..cadence)
            .map(|k| {
                let at = start + SignedDuration::try_from(step * k).expect("duration");
                format!("\"{}\"", at.to_zoned(day.1.clone()).strftime("%H:%M:%S"))
            })
            .collect();
        let mut text = collections_core::policy::DEFAULT_POLICY_TOML.to_owned();
        for (from, to) in [
            (
                "reminder_before = \"1h\"",
                "reminder_before = \"3s\"".to_owned(),
            ),
            ("check_after = \"1h\"", "check_after = \"3s\"".to_owned()),
            ("grace = \"2h\"", "grace = \"6s\"".to_owned()),
            (
                "hours = [\"10:00\", \"13:00\", \"17:00\", \"20:00\"]",
                format!("hours = [{}]", hours.join(", ")),
            ),
            (
                "default_timezone = \"Asia/Shanghai\"",
                format!("default_timezone = \"{}\"", day.0),
            ),
        ] {
            assert!(text.contains(from), "the default policy has `{from}`");
            text = text.replacen(from, &to, 1);
        }
        if let Err(e) = collections_core::Policy::from_toml_str(&text) {
            panic!("the test policy is valid: {e}");
        }
        let path = env.log_dir.join("policy.toml");
        std::fs::write(&path, text).expect("write policy");
        env.extra_env
            .push(("POLICY_FILE".into(), path.display().to_string()));
        Self {
            prefix: prefix.to_owned(),
            day,
            nights,
            inputs: Vec::new(),
            set_back: HashMap::new(),
            waves: 0,
            horizon: last_hour + SignedDuration::from_secs(1),
        }
    }

    /// One wave: `day` delinquent accounts in the afternoon zone and `night` in the night
    /// zones; half of each make a promise 4-8 s ahead. A night account's promise is sent
    /// once its `payment.failed` (which names its zone) is applied, so its tasks are
    /// planned in its own zone.
    async fn wave(&mut self, env: &TestEnv, rng: &mut Rng, day: usize, night: usize) {
        let w = self.waves;
        self.waves += 1;
        let mut promises = Vec::new();
        for i in 0..day {
            let acc = format!("{}d{w}-{i}", self.prefix);
            let (zone, tz) = &self.day;
            let today = Timestamp::now().to_zoned(tz.clone()).date().to_string();
            self.inputs.push(
                env.publish("payment.failed", &acc, failed(&acc, zone, &today))
                    .await,
            );
            if i % 2 == 0 {
                promises.push(acc);
            }
        }
        for acc in &promises {
            self.promise(env, rng, acc).await;
        }
        let mut night_ids = Vec::new();
        for i in 0..night {
            let acc = format!("{}n{w}-{i}", self.prefix);
            let (zone, tz) = &self.nights[i % 2];
            let today = Timestamp::now().to_zoned(tz.clone()).date().to_string();
            let id = env
                .publish("payment.failed", &acc, failed(&acc, zone, &today))
                .await;
            self.inputs.push(id);
            night_ids.push((id, acc, i));
        }
        // Once a night account's zone is known (its payment.failed applied): a promise from
        // every other one, and from the rest the news that the first instalment failed
        // too, which re-ranks their open call (priority 1, re-announced with an id of its
        // own).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !night_ids.is_empty() {
            let ids: Vec<Uuid> = night_ids.iter().map(|(id, _, _)| *id).collect();
            let applied: Vec<Uuid> =
                sqlx::query_scalar("SELECT event_id FROM inbox WHERE event_id = ANY($1)")
                    .bind(&ids)
                    .fetch_all(&env.db)
                    .await
                    .unwrap_or_default();
            let (ready, rest): (Vec<_>, Vec<_>) = night_ids
                .into_iter()
                .partition(|(id, _, _)| applied.contains(id));
            for (_, acc, i) in ready {
                if i % 2 == 0 {
                    self.promise(env, rng, &acc).await;
                } else {
                    let (zone, tz) = &self.nights[i % 2];
                    let today = Timestamp::now().to_zoned(tz.clone()).date().to_string();
                    let mut first = failed(&acc, zone, &today);
                    first["installment"]["number"] = json!(1);
                    self.inputs
                        .push(env.publish("payment.failed", &acc, first).await);
                }
            }
            night_ids = rest;
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn promise(&mut self, env: &TestEnv, rng: &mut Rng, acc: &str) {
        let secs = 4 + i64::try_from(rng.below(5)).expect("small");
        let promised = Timestamp::now() + SignedDuration::from_secs(secs);
        // Check 3 s and expiry 6 s after the promise.
        self.horizon = self.horizon.max(promised + SignedDuration::from_secs(7));
        self.inputs.push(
            env.publish(
                "promise.made",
                acc,
                json!({"account_id": acc, "promise_id": format!("ptp-{acc}"),
                       "amount": cny(10_000), "promised_at": promised,
                       "captured_by": "agent-7", "channel": "phone_mobile"}),
            )
            .await,
        );
    }

    /// Sets the night accounts' planned contact tasks (due tomorrow morning, local) back to
    /// 20:59:30 of the last evening, as if an outage had held them since: they are due now,
    /// at night, and must be moved, never fired.
    async fn set_back_night_tasks(&mut self, env: &TestEnv) {
        for (zone, tz) in &self.nights {
            let local = Timestamp::now().to_zoned(tz.clone());
            let mut date = local.date();
            if local.hour() < 21 {
                date = date.yesterday().expect("date");
            }
            let evening = date
                .at(20, 59, 30, 0)
                .to_zoned(tz.clone())
                .expect("local time")
                .timestamp();
            let micros = evening.as_microsecond();
            for attempt in 0.. {
                // A deadlock with a worker's batch is possible (both lock task rows);
                // Postgres aborts one side, and either side retries.
                let r: Result<Vec<Uuid>, _> = sqlx::query_scalar(
                    "UPDATE tasks t SET due_at = to_timestamp($1::float8 / 1000000)
                     FROM accounts a
                     WHERE a.account_id = t.account_id AND a.state->>'timezone' = $2
                       AND t.account_id LIKE $3 || '%'
                       AND t.status = 'scheduled' AND t.due_at > now()
                       AND t.kind NOT IN ('promise_expiry', 'supervisor_review')
                     RETURNING t.task_id",
                )
                .bind(micros)
                .bind(zone)
                .bind(&self.prefix)
                .fetch_all(&env.db)
                .await;
                match r {
                    Ok(ids) => {
                        for id in ids {
                            self.set_back.insert(id, evening);
                        }
                        break;
                    }
                    Err(e) if attempt < 5 => {
                        eprintln!("set back night tasks: {e}; retrying");
                    }
                    Err(e) => panic!("set back night tasks: {e}"),
                }
            }
        }
    }

    /// Publishes `waves` waves 300-900 ms apart, setting night tasks back halfway and at
    /// the end.
    async fn run(&mut self, env: &TestEnv, rng: &mut Rng, waves: usize, day: usize, night: usize) {
        for w in 0..waves {
            self.wave(env, rng, day, night).await;
            if w == waves / 2 {
                self.set_back_night_tasks(env).await;
            }
            tokio::time::sleep(rng.millis(300, 900)).await;
        }
        // Let the last night payments be planned, then set their tasks back too.
        env.wait_count(
            &format!(
                "SELECT count(*) FROM inbox WHERE event_id IN ({})",
                self.inputs
                    .iter()
                    .map(|i| format!("'{i}'"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            i64::try_from(self.inputs.len()).expect("count"),
            Duration::from_secs(20),
        )
        .await;
        self.set_back_night_tasks(env).await;
    }

    /// Night-time checks on top of the invariants: every task the test set back to the
    /// evening came due at night and was moved (re-announced as `task.scheduled` at a
    /// later instant inside the window) or cancelled, never fired. Returns (moved,
    /// cancelled).
    fn check_night(&self, observed: &Observed) -> (usize, usize) {
        let (mut moved, mut cancelled) = (0, 0);
        let mut problems = Vec::new();
        for (task, evening) in &self.set_back {
            let events = observed.of_task(*task);
            let row = &observed.tasks[task];
            let zone = &observed.zones[&row.account];
            let tz = TimeZone::get(zone).expect("zone");
            if events.iter().any(|e| e.transition == Transition::Due) {
                problems.push(format!("{} {task} of {} fired", row.kind, row.account));
            }
            let moves: Vec<_> = events
                .iter()
                .filter(|e| e.transition == Transition::Moved)
                .collect();
            for m in &moves {
                let local = m.due_at.to_zoned(tz.clone());
                let fired = m.times.first().copied().unwrap_or(m.due_at);
                if m.due_at <= *evening || m.due_at < fired || !(8..21).contains(&local.hour()) {
                    problems.push(format!(
                        "{} {task} of {} moved from {evening} to {} ({} local, announced at {fired})",
                        row.kind,
                        row.account,
                        m.due_at,
                        local.strftime("%F %T")
                    ));
                }
            }
            let was_cancelled = events.iter().any(|e| e.transition == Transition::Cancelled);
            if moves.is_empty() && !was_cancelled {
                problems.push(format!(
                    "{} {task} of {} came due at night and was neither moved nor cancelled \
                     (status {}, due {})",
                    row.kind, row.account, row.status, row.due_at
                ));
            }
            moved += usize::from(!moves.is_empty());
            cancelled += usize::from(moves.is_empty() && was_cancelled);
        }
        assert!(
            problems.is_empty(),
            "night tasks: {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
        (moved, cancelled)
    }
}

/// The database's clock, in microseconds (claims are stamped with it).
async fn db_clock(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")
        .fetch_one(&env.db)
        .await
        .expect("clock")
}

/// Waits up to `wait` until tasks claimed after `since` (database clock, microseconds)
/// are still claimed; returns how many (0 when none came).
async fn claims_since(env: &TestEnv, since: i64, wait: Duration) -> i64 {
    let deadline = Instant::now() + wait;
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tasks
             WHERE status = 'claimed' AND claimed_at > to_timestamp($1::float8 / 1000000)",
        )
        .bind(since)
        .fetch_one(&env.db)
        .await
        .unwrap_or(0);
        if n > 0 || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What the scheduler did, by kind of task event (the scheduler's work was really done
/// under the faults, not skipped).
fn scheduler_work(observed: &Observed) -> HashMap<&'static str, usize> {
    let mut m = HashMap::new();
    for r in &observed.received {
        let Some(t) = observed.tasks.get(&r.task_id) else {
            continue;
        };
        let key = match (r.transition, t.kind.as_str()) {
            (Transition::Due, "collection_call") if t.attempt > 1 => "cadence call due",
            (Transition::Due, "collection_call") => "first call due",
            (Transition::Due, "promise_reminder") => "reminder due",
            (Transition::Due, "promise_check") => "check due",
            (Transition::Moved, _) => "moved at firing",
            (Transition::Reranked, _) => "re-ranked",
            _ => continue,
        };
        *m.entry(key).or_default() += 1;
    }
    m.insert("promise expired", observed.summary.expiries);
    m
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchedulerFault {
    /// SIGKILL, then a new process.
    Kill9,
    /// The scheduler's broker link cut (RST) and restored.
    BrokerCut,
    /// The scheduler's database link cut and restored.
    DatabaseCut,
}

/// Runs the four workers and a scheduler (its links to the broker or the database through
/// a proxy of the test's own) under inbound load whose tasks come due during the test,
/// inflicts `fault` on the scheduler `times` times at random moments, then checks the
/// invariants, the night-time moves, and that the scheduler's work was done.
async fn scheduler_under_faults(test: &str, fault: SchedulerFault, times: usize) {
    let started = Instant::now();
    let (mut rng, _) = Rng::seeded("FAULT_SEED", test);
    let mut env = TestEnv::new().await;
    let mut load = Load::new(
        &mut env,
        "acc-",
        Duration::from_secs(4),
        Duration::from_secs(4),
        5,
    );
    // Small claims, so that a fault is likely to catch a batch between claim and mark.
    env.extra_env.push(("SCHEDULER_BATCH".into(), "10".into()));
    env.start_workers().await;
    let (proxy, overrides) = match fault {
        SchedulerFault::Kill9 => (None, Vec::new()),
        SchedulerFault::BrokerCut => {
            let p = Proxy::start(target(&env.amqp_url, 5672).await).await;
            let url = via(&env.amqp_url, p.addr, 5672);
            (Some(p), vec![("AMQP_URL".to_owned(), url)])
        }
        SchedulerFault::DatabaseCut => {
            let p = Proxy::start(target(&env.database_url, 5432).await).await;
            let url = via(&env.database_url, p.addr, 5432);
            (Some(p), vec![("DATABASE_URL".to_owned(), url)])
        }
    };
    let first = env.start("task-scheduler", &overrides, "task-scheduler-0");
    let mut fault_rng = rng.fork();
    let env_ref = &env;
    let faults = async {
        let mut scheduler = first;
        let mut done = Vec::new();
        let mut orphaned = 0;
        let t0 = Instant::now();
        let mut n = 0;
        // A kill that leaves no claim behind proves little: kill again (at most twice more).
        while n < times || (fault == SchedulerFault::Kill9 && orphaned == 0 && n < times + 2) {
            n += 1;
            tokio::time::sleep(fault_rng.millis(800, 3500)).await;
            // Then strike while the scheduler holds fresh claims (a batch between claim
            // and mark), if it takes one within 4 s.
            let since = db_clock(env_ref).await;
            let busy = claims_since(env_ref, since, Duration::from_secs(4)).await;
            let at = t0.elapsed().as_secs_f64();
            match (fault, &proxy) {
                (SchedulerFault::Kill9, _) => {
                    scheduler.start_kill().expect("SIGKILL");
                    let _ = scheduler.wait().await;
                    // Claims of the dead process: only the rescuer can return them.
                    let left = claims_since(env_ref, since, Duration::ZERO).await;
                    orphaned += left;
                    let pause = fault_rng.millis(0, 500);
                    tokio::time::sleep(pause).await;
                    scheduler =
                        env_ref.start("task-scheduler", &overrides, &format!("task-scheduler-{n}"));
                    done.push(format!(
                        "kill -9 at {at:.1}s ({busy} claimed, {left} left behind), restarted \
                         {pause:?} later"
                    ));
                }
                (_, Some(p)) => {
                    let outage = fault_rng.millis(1000, 3000);
                    p.cut();
                    tokio::time::sleep(outage).await;
                    p.restore();
                    done.push(format!(
                        "{fault:?} at {at:.1}s ({busy} claimed) for {outage:?}"
                    ));
                }
                (_, None) => unreachable!("a link fault has its proxy"),
            }
        }
        (scheduler, done, orphaned, n)
    };
    let mut load_rng = rng.fork();
    let loading = load.run(env_ref, &mut load_rng, 8, 16, 6);
    let ((scheduler, done, orphaned, strikes), ()) = tokio::join!(faults, loading);
    env.children.push(("task-scheduler".into(), scheduler));
    println!("{test}: faults {done:?}");
    if fault == SchedulerFault::Kill9 {
        assert!(
            orphaned > 0,
            "a kill -9 left claims behind (claimed, maybe published, not marked): {done:?}"
        );
    }

    let observed = verify(
        &env,
        &Expect {
            inputs: &load.inputs,
            scheduler: true,
            settle: Duration::from_secs(45),
            horizon: Some(load.horizon),
            // A kill between publish and mark, or a link cut that loses the confirm.
            crashed_firings: fault != SchedulerFault::DatabaseCut,
        },
    )
    .await;
    let (moved, cancelled) = load.check_night(&observed);
    let work = scheduler_work(&observed);
    let logs: String = (0..=strikes)
        .map(|n| env.log(&format!("task-scheduler-{n}")))
        .collect();
    let rescued = logs
        .matches("rescued tasks claimed by a scheduler that died")
        .count();
    println!(
        "{test}: invariants hold in {:.1}s: {}; night tasks set back {}: {moved} moved, \
         {cancelled} cancelled first; scheduler work {work:?}; rescues logged {rescued}",
        started.elapsed().as_secs_f64(),
        observed.summary,
        load.set_back.len(),
    );
    for what in [
        "first call due",
        "cadence call due",
        "reminder due",
        "check due",
        "promise expired",
        "moved at firing",
        "re-ranked",
    ] {
        assert!(
            work.get(what).copied().unwrap_or(0) > 0,
            "the scheduler's work includes {what}: {work:?}"
        );
    }
    match fault {
        SchedulerFault::Kill9 => {}
        SchedulerFault::BrokerCut => assert!(
            logs.contains("scheduler session ended; reconnecting"),
            "the broker cut was seen by the scheduler"
        ),
        SchedulerFault::DatabaseCut => assert!(
            logs.contains("claim failed; retrying")
                || logs.contains("database failed")
                || logs.contains("database unavailable")
                || logs.contains("scheduler session ended; reconnecting"),
            "the database cut was seen by the scheduler"
        ),
    }
}

/// kill -9 of the scheduler at random moments under load, restarted each time: claims
/// left by a dead scheduler are rescued and fired with the same ids; nothing is lost,
/// nothing fired twice under two ids, nothing fired at night.
#[tokio::test]
async fn kill_9_of_the_scheduler_at_random_moments_loses_and_duplicates_nothing() {
    scheduler_under_faults("kill_9_of_the_scheduler", SchedulerFault::Kill9, 3).await;
}

/// The scheduler's broker link cut twice under load (publishes of a claimed batch fail;
/// the session is rebuilt; the claims are rescued and fired again with the same ids).
#[tokio::test]
async fn scheduler_broker_cut_under_load_loses_and_duplicates_nothing() {
    scheduler_under_faults("scheduler_broker_cut", SchedulerFault::BrokerCut, 2).await;
}

/// The scheduler's database link cut twice under load (claims and completions fail and
/// are retried; a batch already published is completed once the database is back).
#[tokio::test]
async fn scheduler_database_cut_under_load_loses_and_duplicates_nothing() {
    scheduler_under_faults("scheduler_database_cut", SchedulerFault::DatabaseCut, 2).await;
}

/// The broker itself closes the worker's connection (`rabbitmqctl close_connection`, as an
/// operator or a broker under memory pressure does), twice under load: the worker reconnects
/// on a new connection and the invariants hold.
#[tokio::test]
async fn broker_closing_the_workers_connection_under_load_loses_and_duplicates_nothing() {
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

/// No fault at all: calls come due the moment they are planned and promises made right
/// after them cancel them, so cancellations race the scheduler's claims. A task must never
/// be both announced cancelled and fired, and a cancellation the journal records must have
/// been made. (Claims pass over accounts a worker holds; a worker that would cancel a
/// task being fired waits for the firing to settle: ARCHITECTURE.md, "Tasks being fired".)
#[tokio::test]
async fn a_task_cancelled_as_it_comes_due_is_never_also_fired() {
    let (mut rng, _) = Rng::seeded("FAULT_SEED", "cancelled_as_it_comes_due");
    let mut env = TestEnv::new().await;
    let mut load = Load::new(
        &mut env,
        "acc-",
        Duration::from_secs(4),
        Duration::from_secs(4),
        3,
    );
    env.start_workers().await;
    env.spawn("task-scheduler").await;
    load.run(&env, &mut rng, 8, 30, 0).await;
    let observed = verify(
        &env,
        &Expect {
            inputs: &load.inputs,
            scheduler: true,
            settle: Duration::from_secs(45),
            horizon: Some(load.horizon),
            crashed_firings: false,
        },
    )
    .await;
    println!("invariants hold: {}", observed.summary);
}
