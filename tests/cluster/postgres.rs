//! Every worker and the scheduler on Postgres with a synchronous standby behind HAProxy,
//! under a steady load: a planned switchover, then SIGKILL of the primary's node (Patroni
//! and Postgres). With synchronous replication nothing committed is lost and nothing is
//! applied twice (the fault suite's invariants), and the service resumes within 30 s.

use std::{
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::{Duration, Instant},
};

use jiff::{SignedDuration, Timestamp};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    harness::ALL_WORKERS,
    invariants::{verify, Caps, Expect},
    support::{
        applied, cluster_env, consuming_again, create_database, machine_vhost, spawn_load,
        PostgresHa, Published,
    },
};

/// A pool of the test's own, once the address answers again (a connection opened while
/// HAProxy switches nodes can meet a node that is going away).
async fn connect(url: &str) -> PgPool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match PgPool::connect(url).await {
            Ok(pool) => return pool,
            Err(e) => assert!(Instant::now() < deadline, "test db: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The service must apply events again within this long after the primary changes.
const RESUME_LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_of_postgres_loses_nothing_committed_and_applies_nothing_twice() {
    let _one = crate::ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut ha = PostgresHa::up().await;
    let ha_up = started.elapsed();
    let name = format!("ct_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let database_url = create_database(&PostgresHa::url("postgres"), &name).await;
    let amqp_url = machine_vhost(&name);
    let mut env = cluster_env(&name, &amqp_url, &amqp_url, database_url.clone()).await;
    // A batch whose database went away is abandoned (rolled back, not acked) sooner.
    env.extra_env.push(("DB_TIMEOUT_SECS".into(), "10".into()));
    for w in ALL_WORKERS {
        env.spawn(w).await;
    }
    env.spawn("task-scheduler").await;

    let published: Published = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(&amqp_url, &name, published.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(8)).await;

    let mut changes = Vec::new();
    for planned in [true, false] {
        let before_leader = ha.leader().await;
        // The test's own pool died with the old primary's sessions.
        env.db = connect(&database_url).await;
        let before = applied(&env.db).await;
        let at = Instant::now();
        if planned {
            ha.run(&["switchover"]).await;
        } else {
            ha.run(&["kill", &before_leader]).await;
        }
        let resumed = loop {
            // Read through a fresh pool each time: the old one's sessions may be cut.
            let db = PgPool::connect(&database_url).await;
            if let Ok(db) = db {
                if let Some(d) = consuming_again(&db, &published, at, Duration::from_secs(90)).await
                {
                    db.close().await;
                    break d;
                }
            }
            assert!(
                at.elapsed() < Duration::from_secs(90),
                "nothing applied after the change"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        env.db = connect(&database_url).await;
        let applied_during = applied(&env.db).await - before;
        let after_leader = ha.leader().await;
        let what = if planned {
            "switchover"
        } else {
            "kill -9 of the primary"
        };
        println!(
            "{what} ({before_leader} -> {after_leader}): applying again after {resumed:?}, \
             {applied_during} inputs applied from the change until then"
        );
        assert_ne!(before_leader, after_leader, "{what}: the standby took over");
        changes.push((what, resumed, applied_during));
        tokio::time::sleep(Duration::from_secs(5)).await;
        if planned {
            ha.run(&["wait", "60"]).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let publisher_reconnects = load.await.expect("load");
    let horizon = Timestamp::now() + SignedDuration::from_secs(2);
    let inputs: Vec<Uuid> = published
        .lock()
        .expect("lock")
        .iter()
        .map(|(id, _)| *id)
        .collect();
    env.db = connect(&database_url).await;
    let observed = verify(
        &env,
        &Expect {
            inputs: &inputs,
            scheduler: true,
            // A claim whose completion died with the primary is taken back after the claim
            // timeout (15 s here) by the rescuer.
            settle: Duration::from_secs(90),
            horizon: Some(horizon),
            // A scheduler that lost its database between publishing a task.due and
            // recording it.
            crashed_firings: true,
            caps: Caps::DEFAULT,
        },
    )
    .await;
    println!(
        "postgres failover test: {} inputs in {:?}, publisher reconnects \
         {publisher_reconnects}, HA up in {ha_up:?}; {}",
        inputs.len(),
        started.elapsed(),
        observed.summary
    );
    for (what, resumed, applied_during) in &changes {
        println!(
            "  {what}: applying again after {:.1} s; {applied_during} inputs applied meanwhile",
            resumed.as_secs_f64()
        );
        assert!(
            *resumed <= RESUME_LIMIT,
            "{what}: applying again after {resumed:?}, more than {RESUME_LIMIT:?}"
        );
    }
    env.stop_all().await;
    ha.down().await;
}
