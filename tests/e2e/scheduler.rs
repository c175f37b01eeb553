//! The task scheduler, end to end: firing on time, promise expiry, cadence, the contact
//! window at firing time, replicas and crashes.

use std::{collections::HashMap, time::Duration};

use jiff::{SignedDuration, Timestamp, ToSpan};
use serde_json::json;

use crate::harness::{cny, is, ts, zone_where_it_is, TestEnv};

const WAIT: Duration = Duration::from_secs(30);

/// A policy with promise timings in seconds, so a test can watch a whole promise cycle.
fn fast_promise_policy(env: &mut TestEnv) {
    let text = collections_core::policy::DEFAULT_POLICY_TOML
        .replace("reminder_before = \"1h\"", "reminder_before = \"3s\"")
        .replace("check_after = \"1h\"", "check_after = \"3s\"")
        .replace("grace = \"2h\"", "grace = \"5s\"");
    let path = env.log_dir.join("policy.toml");
    std::fs::write(&path, text).expect("write policy");
    env.extra_env
        .push(("POLICY_FILE".into(), path.display().to_string()));
}

fn failed(account: &str, zone: &str, due: &str) -> serde_json::Value {
    json!({
        "account_id": account,
        "customer": {"timezone": zone},
        "installment": {"number": 2, "due_date": due, "amount": cny(80_000)},
        "overdue_amount": cny(80_000),
        "failure_reason": "insufficient_funds",
        "attempted_at": Timestamp::now(),
    })
}

fn lateness_ms(e: &serde_json::Value) -> i64 {
    let due = ts(&e["data"]["due_at"]);
    let got = ts(&e["_received_at"]);
    got.duration_since(due).as_millis() as i64
}

#[tokio::test]
async fn unkept_promise_reminds_checks_and_expires_into_an_escalated_call() {
    let mut env = TestEnv::new().await;
    fast_promise_policy(&mut env);
    env.start_workers().await;
    env.spawn("task-scheduler").await;
    let (zone, tz) = zone_where_it_is(14);
    let today = Timestamp::now().to_zoned(tz).date();
    env.publish(
        "payment.failed",
        "acc-exp",
        failed("acc-exp", &zone, &today.to_string()),
    )
    .await;
    env.tasks
        .wait_for(1, WAIT, is("task.due", "collection_call", "acc-exp"))
        .await;

    let promised = Timestamp::now() + SignedDuration::from_secs(6);
    env.publish(
        "promise.made",
        "acc-exp",
        json!({"account_id": "acc-exp", "promise_id": "ptp-x", "amount": cny(80_000),
               "promised_at": promised, "captured_by": "agent-3", "channel": "phone_mobile"}),
    )
    .await;
    let reminder = env
        .tasks
        .wait_for(1, WAIT, is("task.due", "promise_reminder", "acc-exp"))
        .await;
    assert_eq!(reminder.len(), 1, "the reminder fires");
    assert_eq!(
        ts(&reminder[0]["data"]["due_at"]).as_microsecond(),
        (promised - SignedDuration::from_secs(3)).as_microsecond()
    );
    let late = lateness_ms(&reminder[0]);
    assert!(
        (0..1000).contains(&late),
        "reminder fired {late} ms after its instant"
    );

    let check = env
        .tasks
        .wait_for(1, WAIT, is("task.due", "promise_check", "acc-exp"))
        .await;
    assert_eq!(check.len(), 1, "the check fires");
    assert_eq!(
        ts(&check[0]["data"]["due_at"]).as_microsecond(),
        (promised + SignedDuration::from_secs(3)).as_microsecond()
    );
    let late = lateness_ms(&check[0]);
    assert!(
        (0..1000).contains(&late),
        "check fired {late} ms after its instant"
    );

    // No payment: at promised + grace the service breaks the promise itself, and the
    // promise-broken worker escalates.
    let calls = env
        .tasks
        .wait_for(1, WAIT, |e| {
            is("task.scheduled", "collection_call", "acc-exp")(e)
                && e["data"]["tone"] == "firm"
                && e["data"]["attempt"] == 1
        })
        .await;
    assert_eq!(calls.len(), 1, "an escalated call follows the expiry");
    assert!(ts(&calls[0]["time"]) >= promised + SignedDuration::from_secs(5));
    let journal = env.journal("acc-exp").await;
    assert!(
        journal
            .iter()
            .any(|(_, d)| d.contains("promise.broken: ptp-x (expired)")),
        "{journal:?}"
    );
    // An upstream report of the same promise is a no-op.
    env.publish(
        "promise.broken",
        "acc-exp",
        json!({"account_id": "acc-exp", "promise_id": "ptp-x", "reason": "no_payment"}),
    )
    .await;
    env.wait_count(
        "SELECT count(*) FROM inbox WHERE account_id = 'acc-exp'",
        4,
        WAIT,
    )
    .await;
    let broken: i64 = sqlx::query_scalar(
        "SELECT (state->>'broken_promises')::bigint FROM accounts WHERE account_id = 'acc-exp'",
    )
    .fetch_one(&env.db)
    .await
    .expect("q");
    assert_eq!(broken, 1);
}

#[tokio::test]
async fn promise_kept_in_time_cancels_the_check_and_never_expires() {
    let mut env = TestEnv::new().await;
    fast_promise_policy(&mut env);
    env.start_workers().await;
    env.spawn("task-scheduler").await;
    let (zone, tz) = zone_where_it_is(15);
    let today = Timestamp::now().to_zoned(tz).date();
    env.publish(
        "payment.failed",
        "acc-kept",
        failed("acc-kept", &zone, &today.to_string()),
    )
    .await;
    env.tasks
        .wait_for(1, WAIT, is("task.scheduled", "collection_call", "acc-kept"))
        .await;
    let promised = Timestamp::now() + SignedDuration::from_secs(5);
    env.publish(
        "promise.made",
        "acc-kept",
        json!({"account_id": "acc-kept", "promise_id": "ptp-k", "amount": cny(80_000),
               "promised_at": promised, "captured_by": "agent-3", "channel": "phone_mobile"}),
    )
    .await;
    env.tasks
        .wait_for(1, WAIT, is("task.due", "promise_reminder", "acc-kept"))
        .await;
    env.publish(
        "payment.received",
        "acc-kept",
        json!({"account_id": "acc-kept", "payment_id": "pay-k", "amount": cny(80_000),
               "received_at": Timestamp::now()}),
    )
    .await;
    let cancelled = env
        .tasks
        .wait_for(1, WAIT, is("task.cancelled", "promise_check", "acc-kept"))
        .await;
    assert_eq!(cancelled.len(), 1, "the kept promise cancels its check");
    // Wait past promised + grace: nothing more happens to this promise.
    tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_secs(8)).await;
    let due_checks = env
        .tasks
        .all()
        .into_iter()
        .filter(is("task.due", "promise_check", "acc-kept"))
        .count();
    assert_eq!(due_checks, 0);
    let journal = env.journal("acc-kept").await;
    assert!(
        !journal.iter().any(|(_, d)| d.contains("expired")),
        "{journal:?}"
    );
    assert!(journal.iter().any(|(k, _)| k == "promise_kept"));
}

#[tokio::test]
async fn a_fired_call_plans_the_next_attempt_at_the_next_cadence_hour() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    env.spawn("task-scheduler").await;
    let (zone, tz) = zone_where_it_is(14);
    let today = Timestamp::now().to_zoned(tz.clone()).date();
    env.publish(
        "payment.failed",
        "acc-cad",
        failed("acc-cad", &zone, &today.to_string()),
    )
    .await;
    let fired = env
        .tasks
        .wait_for(1, WAIT, is("task.due", "collection_call", "acc-cad"))
        .await;
    assert_eq!(fired.len(), 1);
    let next = env
        .tasks
        .wait_for(1, WAIT, |e| {
            is("task.scheduled", "collection_call", "acc-cad")(e) && e["data"]["attempt"] == 2
        })
        .await;
    assert_eq!(next.len(), 1, "attempt 2 is planned when attempt 1 fires");
    let due = ts(&next[0]["data"]["due_at"]).to_zoned(tz);
    assert_eq!(due.date(), today);
    assert_eq!(
        (due.hour(), due.minute()),
        (17, 0),
        "after 14:xx the next cadence hour is 17:00"
    );
    assert_eq!(next[0]["data"]["channel"], "phone_mobile");
}

#[tokio::test]
async fn a_task_that_comes_due_outside_the_window_is_moved_not_fired() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let (zone, tz) = zone_where_it_is(23);
    let today = Timestamp::now().to_zoned(tz.clone()).date();
    env.publish(
        "payment.failed",
        "acc-late",
        failed("acc-late", &zone, &today.to_string()),
    )
    .await;
    let planned = env
        .tasks
        .wait_for(1, WAIT, is("task.scheduled", "collection_call", "acc-late"))
        .await;
    assert_eq!(planned.len(), 1);
    // Pretend an outage delayed it: it is now overdue, at 23:xx local.
    sqlx::query(
        "UPDATE tasks SET due_at = now() - interval '1 minute' WHERE account_id = 'acc-late'",
    )
    .execute(&env.db)
    .await
    .expect("update");
    env.spawn("task-scheduler").await;
    let moved = env
        .tasks
        .wait_for(2, WAIT, is("task.scheduled", "collection_call", "acc-late"))
        .await;
    assert_eq!(
        moved.len(),
        2,
        "task.scheduled is re-emitted with the new time"
    );
    let due = ts(&moved[1]["data"]["due_at"]).to_zoned(tz);
    assert_eq!(due.date(), today.checked_add(1.day()).expect("date"));
    assert_eq!((due.hour(), due.minute()), (8, 0));
    assert_eq!(moved[0]["data"]["task_id"], moved[1]["data"]["task_id"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fired = env
        .tasks
        .all()
        .into_iter()
        .filter(is("task.due", "collection_call", "acc-late"))
        .count();
    assert_eq!(fired, 0, "never fired outside 08:00-21:00");
}

/// Plans `n` calls due now, each for its own account, with no scheduler running.
async fn plan_calls(env: &mut TestEnv, n: usize) -> String {
    let (zone, tz) = zone_where_it_is(13);
    let today = Timestamp::now().to_zoned(tz).date();
    for i in 0..n {
        let acc = format!("acc-r{i}");
        env.publish(
            "payment.failed",
            &acc,
            failed(&acc, &zone, &today.to_string()),
        )
        .await;
    }
    let planned = env
        .wait_count(
            "SELECT count(*) FROM tasks WHERE kind = 'collection_call'",
            n as i64,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(planned, n as i64);
    zone
}

fn due_counts(env: &TestEnv) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for e in env.tasks.all() {
        if e["type"] == "task.due" {
            *m.entry(e["data"]["task_id"].as_str().expect("id").to_owned())
                .or_default() += 1;
        }
    }
    m
}

#[tokio::test]
async fn two_schedulers_fire_each_task_exactly_once() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    plan_calls(&mut env, 400).await;
    env.extra_env.push(("SCHEDULER_BATCH".into(), "20".into()));
    // Each replica logs every batch it fired (debug), to show both took part.
    let debug = [(
        "RUST_LOG".to_owned(),
        "info,collections_runtime::scheduler=debug".to_owned(),
    )];
    // Due a moment after both replicas are up, so both wake for the same backlog.
    sqlx::query("UPDATE tasks SET due_at = now() + interval '3 seconds'")
        .execute(&env.db)
        .await
        .expect("due soon");
    env.spawn_with("task-scheduler", &debug).await;
    env.spawn_with("task-scheduler", &debug).await;
    let emitted = env
        .wait_count("SELECT count(*) FROM tasks WHERE kind = 'collection_call' AND attempt = 1 AND status = 'emitted'", 400, WAIT)
        .await;
    assert_eq!(emitted, 400);
    env.tasks
        .wait_for(400, WAIT, |e| e["type"] == "task.due")
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = due_counts(&env);
    assert_eq!(counts.len(), 400, "every task fired");
    assert!(counts.values().all(|c| *c == 1), "no task fired twice");
    // The replicas shared the work: what each fired, from its own log, adds up to 400
    // and neither fired everything (else the test proved nothing about replicas).
    let fired: Vec<u64> = (0..2)
        .map(|n| {
            env.log(&format!("task-scheduler-{n}"))
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|l| l["message"] == "fired")
                .filter_map(|l| l["fired"].as_u64())
                .sum()
        })
        .collect();
    println!("fired per replica: {fired:?}");
    assert_eq!(fired.iter().sum::<u64>(), 400, "each firing logged once");
    assert!(
        fired.iter().all(|n| *n > 0),
        "both replicas fired part of the backlog: {fired:?}"
    );
}

#[tokio::test]
async fn killing_a_scheduler_mid_run_loses_nothing() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    plan_calls(&mut env, 600).await;
    env.extra_env.push(("SCHEDULER_BATCH".into(), "50".into()));
    env.spawn("task-scheduler").await;
    // Let it claim and publish part of the backlog, then kill -9.
    env.tasks
        .wait_for(60, WAIT, |e| e["type"] == "task.due")
        .await;
    let (_, mut victim) = env.children.pop().expect("scheduler");
    victim.start_kill().expect("kill -9");
    let _ = victim.wait().await;
    env.spawn("task-scheduler").await;
    let emitted = env
        .wait_count(
            "SELECT count(*) FROM tasks WHERE kind = 'collection_call' AND attempt = 1 AND status = 'emitted'",
            600,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        emitted, 600,
        "every task ends emitted (stuck claims are rescued)"
    );
    env.tasks
        .wait_for(600, WAIT, |e| e["type"] == "task.due")
        .await;
    let counts = due_counts(&env);
    assert_eq!(counts.len(), 600, "no task lost");
    // A claim published but not yet marked when the process died is published again with
    // the same CloudEvents id; consumers drop it by id. Nothing else may repeat.
    let repeats: usize = counts.values().filter(|c| **c > 1).count();
    assert!(
        repeats <= 50,
        "at most one claimed batch repeats, got {repeats}"
    );
    let next_attempts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE kind = 'collection_call' AND attempt = 2",
    )
    .fetch_one(&env.db)
    .await
    .expect("q");
    assert_eq!(
        next_attempts, 600,
        "each fired call planned exactly one next attempt"
    );
}
