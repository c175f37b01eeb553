//! The soak: minutes of load with random faults on every process and link, then the
//! invariant check. Run by hand (its `#[test]` entry point in `crate::faults` is ignored).

use std::time::{Duration, Instant};

use crate::{
    fault_load::Load,
    fault_support::Rng,
    faults_scheduler::scheduler_work,
    harness::TestEnv,
    invariants::{verify, Expect},
    proxy::{target, via, Proxy},
};

/// Minutes of load (payment failures and promises whose tasks come due during the run,
/// night accounts included; contact attempts reaching the caps, callbacks, wrong numbers,
/// corrections; holds placed, duplicated, released before their placement; restrictions
/// placed and lifted: `Load::contacts_and_holds`) with random faults on every process and link: broker and
/// database cuts and stalls (some longer than the scheduler's claim timeout), kill -9 of a
/// worker or of one of two schedulers, the broker closing a connection. Then the invariant
/// check (the contact caps and holds among them) and its summary. Not in CI:
/// `SOAK_SECS=300 cargo test --release -p collections-workers --test e2e -- --ignored soak --nocapture`
/// (`SOAK_SEED=<seed>` replays the fault schedule of a run).
pub async fn soak_with_random_faults() {
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
                // Longer than the 40 s claim timeout: completions retried across it meet
                // the rescuer (and find their claims taken over: fenced).
                let d = rng.millis(41_000, 45_000);
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
    load.finish(&env, Duration::from_secs(30)).await;
    load.set_back_night_tasks(&env).await;
    let observed = verify(
        &env,
        &Expect {
            inputs: &load.inputs,
            scheduler: true,
            settle: Duration::from_secs(120),
            horizon: Some(load.horizon),
            crashed_firings: true,
            caps: load.caps,
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
