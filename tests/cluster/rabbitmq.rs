//! Every worker and the scheduler on a 3-node RabbitMQ cluster under a steady load; the node
//! leading the inbound queues is killed with SIGKILL, started again, then the node leading
//! the other queues is killed. The service consumes again within 10 s of each loss and the
//! fault suite's invariants hold: each input applied once, each task fired once, nothing
//! lost, nothing outside the contact window, nothing dead-lettered.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use crate::{
    harness::ALL_WORKERS,
    invariants::{verify, Caps, Expect},
    support::{
        applied, cluster_env, consuming_again, machine_database, spawn_load, Published,
        RabbitCluster,
    },
};

/// The service must consume again within this long after losing a node.
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);

fn is_inbound(queue: &str) -> bool {
    collections_core::EventType::ALL
        .iter()
        .any(|t| t.queue() == queue)
}

/// The node leading most of the queues `pick` selects, `except` one.
fn leader_of(
    queues: &std::collections::HashMap<String, (u8, usize)>,
    pick: impl Fn(&str) -> bool,
    except: Option<u8>,
) -> u8 {
    let mut count = [0usize; 4];
    for (name, (node, _)) in queues {
        if pick(name) && Some(*node) != except && (1..=3).contains(node) {
            count[usize::from(*node)] += 1;
        }
    }
    (1..=3u8)
        .filter(|n| Some(*n) != except)
        .max_by_key(|n| count[usize::from(*n)])
        .expect("a node")
}

struct Loss {
    node: u8,
    recovery: Duration,
    applied_during: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_survives_losing_the_node_that_leads_its_queues() {
    let _one = crate::ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut cluster = RabbitCluster::up().await;
    let cluster_up = started.elapsed();
    let name = format!("ct_{}", &Uuid::new_v4().simple().to_string()[..12]);
    cluster.add_vhost(&name).await;
    let database_url = machine_database(&name).await;
    let urls = RabbitCluster::urls(&name);
    // Declared through node 1: it leads every queue until it dies.
    let mut env = cluster_env(&name, &urls, &RabbitCluster::url(1, &name), database_url).await;
    for w in ALL_WORKERS {
        env.spawn(w).await;
    }
    env.spawn("task-scheduler").await;

    let published: Published = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(&urls, &name, published.clone(), stop.clone());

    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut losses = Vec::new();
    let mut except = None;
    for round in 0..2 {
        let queues = cluster
            .queues(except.map_or(2, |n| if n == 3 { 2 } else { 3 }), &name)
            .await;
        // First the node leading the inbound queues, then (with it back) the node leading
        // the others (dead-letter queues, unrouted, the dashboard's queue).
        let node = if round == 0 {
            leader_of(&queues, is_inbound, None)
        } else {
            leader_of(&queues, |q| !is_inbound(q), except)
        };
        let before = applied(&env.db).await;
        let killed = Instant::now();
        cluster.kill(node).await;
        let recovery = consuming_again(&env.db, &published, killed, Duration::from_secs(60))
            .await
            .unwrap_or_else(|| panic!("nothing applied within 60 s of losing node {node}"));
        let applied_during = applied(&env.db).await - before;
        println!(
            "lost node {node}: consuming again after {recovery:?}, {applied_during} inputs \
             applied from the kill until then"
        );
        losses.push(Loss {
            node,
            recovery,
            applied_during,
        });
        if round == 0 {
            // Back before the second loss: two of three must stay for a majority.
            cluster.start(node).await;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let q = cluster.queues(node, &name).await;
                if !q.is_empty() && q.values().all(|(_, online)| *online == 3) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {node} rejoined every queue: {q:?}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            except = Some(node);
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let publisher_reconnects = load.await.expect("load");
    let horizon = Timestamp::now() + SignedDuration::from_secs(2);
    let inputs: Vec<Uuid> = published
        .lock()
        .expect("lock")
        .iter()
        .map(|(id, _)| *id)
        .collect();

    // The invariant check reads dead-letter queues through `env.amqp`: a live node.
    env.amqp = collections_bus::connect(&urls, "cluster-test-check")
        .await
        .expect("connect to a live node");
    let observed = verify(
        &env,
        &Expect {
            inputs: &inputs,
            scheduler: true,
            // A claim left by a scheduler whose link died with its node runs out after the
            // claim timeout (15 s here) and waits for the rescuer's next round.
            settle: Duration::from_secs(90),
            horizon: Some(horizon),
            // A scheduler that lost its node between publishing a task.due and recording it.
            crashed_firings: true,
            caps: Caps::DEFAULT,
        },
    )
    .await;
    let fired = observed
        .tasks
        .values()
        .filter(|t| t.kind == "collection_call" && t.status == "emitted")
        .count();
    println!(
        "cluster test: {} inputs in {:?} ({fired} calls fired), publisher reconnects \
         {publisher_reconnects}, cluster up in {cluster_up:?}; {}",
        inputs.len(),
        started.elapsed(),
        observed.summary
    );
    for l in &losses {
        println!(
            "  node {} killed: consuming again after {:.1} s; {} inputs applied meanwhile",
            l.node,
            l.recovery.as_secs_f64(),
            l.applied_during
        );
        assert!(
            l.recovery <= RECOVERY_LIMIT,
            "consuming again {:?} after losing node {}, more than {RECOVERY_LIMIT:?}",
            l.recovery,
            l.node
        );
    }
    assert!(fired > 0, "the scheduler fired calls");
    env.stop_all().await;
    cluster.down().await;
}
