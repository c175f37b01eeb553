//! The scheduler under faults: a load whose tasks come due during the test (night
//! accounts included), kill -9 and link cuts of the scheduler at random moments, and the
//! race of cancellations with firing. The `#[test]` entry points are in `crate::faults`.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use crate::fault_load::Load;
use crate::{
    fault_support::{failed, Rng},
    harness::{zone_where_it_is, TestEnv},
    invariants::{verify, Caps, Expect, Observed, Transition},
    proxy::{target, via, Proxy},
};

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
pub fn scheduler_work(observed: &Observed) -> HashMap<&'static str, usize> {
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
    m.insert("instalment expired", observed.summary.instalment_expiries);
    m
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerFault {
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
pub async fn scheduler_under_faults(test: &str, fault: SchedulerFault, times: usize) {
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
            // A claim left by the last kill runs out after the claim timeout (40 s) and
            // waits for the rescuer's next round (5 s).
            settle: Duration::from_secs(60),
            horizon: Some(load.horizon),
            // A kill between publish and mark, or a link cut that loses the confirm.
            crashed_firings: fault != SchedulerFault::DatabaseCut,
            caps: load.caps,
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
        "instalment expired",
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

/// No fault at all: calls come due the moment they are planned and promises made right
/// after them cancel them, so cancellations race the scheduler's claims. The policy keeps
/// Regulation F's caps too (the load's collector dials and conversations reach them). A task must never
/// be both announced cancelled and fired, and a cancellation the journal records must have
/// been made. (Claims pass over accounts a worker holds; a worker that would cancel a
/// task being fired waits for the firing to settle: ARCHITECTURE.md, "Tasks being fired".)
pub async fn a_task_cancelled_as_it_comes_due_is_never_also_fired() {
    let (mut rng, _) = Rng::seeded("FAULT_SEED", "cancelled_as_it_comes_due");
    let mut env = TestEnv::new().await;
    let mut load = Load::with_profile(
        &mut env,
        "acc-",
        Duration::from_secs(4),
        Duration::from_secs(4),
        3,
        true,
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
            caps: load.caps,
        },
    )
    .await;
    println!("invariants hold: {}", observed.summary);
}

/// A broker that takes a scheduler's publishes but holds its confirms for 25 s, longer
/// than the claim timeout of old (15 s) and shorter than the confirm timeout (30 s),
/// while a second scheduler runs. The stalled scheduler's claim must hold until its
/// confirms come in (claim timeout > confirm timeout + margin), and a completion must
/// only complete its own claim (fencing token). The contact window closes 8 s after the
/// calls come due: a second scheduler that rescued them and fired them again would find
/// the window closed and move them to tomorrow, where they would fire a second time
/// under a new id (a second call to the customer). Each call fires exactly once.
pub async fn a_broker_stalling_confirms_past_the_claim_timeout_fires_each_task_once() {
    const CALLS: usize = 8;
    const STALL: Duration = Duration::from_secs(25);
    let mut env = TestEnv::new().await;
    let (zone, tz) = zone_where_it_is(13);
    let window_end = Timestamp::now() + SignedDuration::from_secs(45);
    let fire_at = window_end - SignedDuration::from_secs(8);
    let mut text = collections_core::policy::DEFAULT_POLICY_TOML.to_owned();
    for (from, to) in [
        (
            "end = \"21:00\"".to_owned(),
            format!(
                "end = \"{}\"",
                window_end.to_zoned(tz.clone()).strftime("%H:%M:%S")
            ),
        ),
        (
            "default_timezone = \"Asia/Shanghai\"".to_owned(),
            format!("default_timezone = \"{zone}\""),
        ),
        // Inside the shortened window: the next attempts are planned for tomorrow.
        (
            "hours = [\"10:00\", \"13:00\", \"17:00\", \"20:00\"]".to_owned(),
            "hours = [\"10:00\"]".to_owned(),
        ),
    ] {
        assert!(text.contains(&from), "the default policy has `{from}`");
        text = text.replacen(&from, &to, 1);
    }
    if let Err(e) = collections_core::Policy::from_toml_str(&text) {
        panic!("the test policy is valid: {e}");
    }
    let path = env.log_dir.join("policy.toml");
    std::fs::write(&path, text).expect("write policy");
    env.extra_env
        .push(("POLICY_FILE".into(), path.display().to_string()));
    env.start_workers().await;

    // The calls are planned (due at once), then set to come due together at `fire_at`,
    // before any scheduler runs: the first scheduler claims them all in one batch.
    let today = Timestamp::now().to_zoned(tz.clone()).date().to_string();
    let mut inputs = Vec::new();
    for i in 0..CALLS {
        let acc = format!("acc-s{i}");
        inputs.push(
            env.publish("payment.failed", &acc, failed(&acc, &zone, &today))
                .await,
        );
    }
    env.wait_count(
        "SELECT count(*) FROM tasks WHERE kind = 'collection_call'",
        i64::try_from(CALLS).expect("small"),
        Duration::from_secs(20),
    )
    .await;
    let calls: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE tasks SET due_at = to_timestamp($1::float8 / 1000000)
         WHERE kind = 'collection_call' RETURNING task_id",
    )
    .bind(fire_at.as_microsecond())
    .fetch_all(&env.db)
    .await
    .expect("set the calls' instant");
    assert_eq!(calls.len(), CALLS);
    assert!(
        Timestamp::now() + SignedDuration::from_secs(5) < fire_at,
        "set-up took too long: the calls are due at {fire_at}, the scheduler must be up first"
    );

    // The first scheduler's broker link goes through a proxy; a long heartbeat, so that
    // only the confirm timeout bounds its wait.
    let proxy = Proxy::start(target(&env.amqp_url, 5672).await).await;
    let url = via(&env.amqp_url, proxy.addr, 5672);
    let sep = if url.contains('?') { '&' } else { '?' };
    let overrides = vec![("AMQP_URL".to_owned(), format!("{url}{sep}heartbeat=120"))];
    let first = env.start("task-scheduler", &overrides, "task-scheduler-0");
    env.children.push(("task-scheduler".into(), first));
    let up = Instant::now();
    while !env.log("task-scheduler-0").contains("\"scheduling\"")
        && !env.log("task-scheduler-0").contains(" scheduling")
    {
        assert!(
            up.elapsed() < Duration::from_secs(20),
            "the first scheduler did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.stall_replies();
    let claimed = env
        .wait_count(
            "SELECT count(*) FROM tasks WHERE status = 'claimed'",
            i64::try_from(CALLS).expect("small"),
            Duration::from_secs(40),
        )
        .await;
    assert_eq!(
        claimed,
        i64::try_from(CALLS).expect("small"),
        "the first scheduler claimed the calls"
    );
    let stalled_at = Instant::now();
    // Now a second scheduler, with a direct link to the broker.
    let second = env.start("task-scheduler", &[], "task-scheduler-1");
    env.children.push(("task-scheduler".into(), second));
    tokio::time::sleep(STALL.saturating_sub(stalled_at.elapsed())).await;
    proxy.restore();

    let observed = verify(
        &env,
        &Expect {
            inputs: &inputs,
            scheduler: true,
            settle: Duration::from_secs(45),
            horizon: Some(fire_at),
            crashed_firings: false,
            caps: Caps::DEFAULT,
        },
    )
    .await;
    for call in &calls {
        let events = observed.of_task(*call);
        let due = events
            .iter()
            .filter(|e| e.transition == Transition::Due)
            .count();
        let moved = events
            .iter()
            .filter(|e| e.transition == Transition::Moved)
            .count();
        assert_eq!(
            (due, moved, observed.tasks[call].status.as_str()),
            (1, 0, "emitted"),
            "call {call}: fired once, never moved to fire again"
        );
    }
    let lost = (0..2)
        .map(|n| env.log(&format!("task-scheduler-{n}")))
        .collect::<String>()
        .matches("rescued tasks claimed by a scheduler that died")
        .count();
    println!(
        "confirms stalled {STALL:?} with two schedulers: invariants hold: {}; rescues logged \
         {lost}",
        observed.summary
    );
}
