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

/// A worker committed a task and died (or lost the broker) before publishing its
/// `task.scheduled`: the row waits in the outbox for its lease to run out. The task comes
/// due meanwhile. Dashboards must not get `task.due` for a task they were never told of:
/// the scheduler publishes the account's unpublished events first, in commit order.
#[tokio::test]
async fn a_task_due_never_overtakes_its_unpublished_task_scheduled() {
    use collections_core::{
        outbound::{task_message, TaskState},
        AccountState, Channel, Task, TaskKind, Tone,
    };
    let mut env = TestEnv::new().await;
    env.spawn("task-scheduler").await;
    // The schema is the scheduler's to create (migrations at start).
    env.wait_count(
        "SELECT count(*) FROM pg_proc WHERE proname = 'collections_open_batch_revised'",
        1,
        WAIT,
    )
    .await;
    let account = "acc-held";
    let now = Timestamp::now();
    let task = Task {
        task_id: uuid::Uuid::new_v4(),
        account_id: account.to_owned(),
        // Internal work (no contact window, no follow-up): it fires whatever the hour.
        kind: TaskKind::SupervisorReview,
        channel: Channel::None,
        due_at: now,
        priority: 3,
        tone: Tone::Gentle,
        reason: "promise_far_ahead".to_owned(),
        promise_id: None,
        cause_event_id: uuid::Uuid::new_v4(),
        attempt: 1,
        policy_version: "test".to_owned(),
        revision: Task::FIRST_REVISION,
        contact_point_id: None,
    };
    let summary = AccountState::new(account, "Asia/Shanghai").summary(now);
    let scheduled = task_message(TaskState::Scheduled, &task, &summary, now, None);
    // As the worker's batch transaction writes them: the task, and its event leased to the
    // worker (here for a minute, far longer than the test waits).
    let mut tx = env.db.begin().await.expect("begin");
    sqlx::query("INSERT INTO accounts (account_id) VALUES ($1)")
        .bind(account)
        .execute(&mut *tx)
        .await
        .expect("account");
    sqlx::query(
        "INSERT INTO tasks (task_id, account_id, kind, channel, due_at, priority, tone, reason,
                            cause_event_id, attempt, policy_version, revision)
         VALUES ($1, $2, 'supervisor_review', 'none', now(), 3, 'gentle', 'promise_far_ahead',
                 $3, 1, 'test', 1)",
    )
    .bind(task.task_id)
    .bind(account)
    .bind(task.cause_event_id)
    .execute(&mut *tx)
    .await
    .expect("task");
    sqlx::query(
        "WITH sent AS (
             INSERT INTO outbox (event_id, account_id, exchange, routing_key, body)
             VALUES ($1, $2, 'collections.tasks', $3, $4::jsonb)
             RETURNING id)
         INSERT INTO outbox_pending (id, lease_until)
         SELECT id, now() + interval '60 seconds' FROM sent",
    )
    .bind(scheduled.event_id)
    .bind(account)
    .bind(&scheduled.routing_key)
    .bind(std::str::from_utf8(&scheduled.body).expect("utf-8"))
    .execute(&mut *tx)
    .await
    .expect("outbox row");
    tx.commit().await.expect("commit");

    let both = env
        .tasks
        .wait_for(2, Duration::from_secs(15), |e| {
            e["data"]["task_id"] == task.task_id.to_string()
        })
        .await;
    let seen: Vec<(&str, u64)> = both
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default(),
                e["data"]["revision"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("task.scheduled", 1), ("task.due", 2)],
        "task.scheduled first, then task.due"
    );
    // The scheduler records the firing after the broker confirmed its `task.due`: the
    // row takes the revision a moment after the event is seen.
    let stored = env
        .wait_count(
            &format!(
                "SELECT revision::bigint FROM tasks WHERE task_id = '{}'",
                task.task_id
            ),
            2,
            WAIT,
        )
        .await;
    assert_eq!(stored, 2, "the row keeps the revision of its last event");
}

/// Every task event carries the task's revision, and a consumer sees, per task, the
/// revisions rise by one in the order of commit, whoever made the change: a call planned
/// by a worker and fired by the scheduler, the next attempt the scheduler planned and a
/// promise cancelled, a reminder re-ranked by a later event and then fired.
#[tokio::test]
async fn each_task_s_events_carry_revisions_rising_in_commit_order() {
    let mut env = TestEnv::new().await;
    fast_promise_policy(&mut env);
    env.start_workers().await;
    env.spawn("task-scheduler").await;
    let account = "acc-rev";
    let (zone, tz) = zone_where_it_is(14);
    let today = Timestamp::now().to_zoned(tz).date();
    env.publish(
        "payment.failed",
        account,
        failed(account, &zone, &today.to_string()),
    )
    .await;
    // Fired at once; the scheduler plans the next attempt.
    env.tasks
        .wait_for(2, WAIT, is("task.scheduled", "collection_call", account))
        .await;
    let promised = Timestamp::now() + SignedDuration::from_secs(8);
    env.publish(
        "promise.made",
        account,
        json!({"account_id": account, "promise_id": "ptp-rev", "amount": cny(80_000),
               "promised_at": promised, "captured_by": "agent-5", "channel": "phone_mobile"}),
    )
    .await;
    env.tasks
        .wait_for(1, WAIT, is("task.scheduled", "promise_reminder", account))
        .await;
    // The first instalment failed too: the account ranks first, its open tasks are
    // re-ranked and re-announced.
    let mut first = failed(account, &zone, &today.to_string());
    first["installment"]["number"] = json!(1);
    env.publish("payment.failed", account, first).await;
    env.tasks
        .wait_for(1, WAIT, is("task.due", "promise_check", account))
        .await;
    // The promise expires unkept; its escalated call is fired too.
    env.tasks
        .wait_for(1, WAIT, |e| {
            is("task.due", "collection_call", account)(e) && e["data"]["tone"] == "firm"
        })
        .await;

    // Per task, in arrival order, each event once (consumers deduplicate by id).
    let mut seen_ids = std::collections::HashSet::new();
    let mut by_task: HashMap<String, Vec<(String, u64, u64)>> = HashMap::new();
    for e in env.tasks.all() {
        if e["subject"] != account || !seen_ids.insert(e["id"].to_string()) {
            continue;
        }
        by_task
            .entry(e["data"]["task_id"].as_str().expect("task_id").to_owned())
            .or_default()
            .push((
                e["type"].as_str().expect("type").to_owned(),
                e["data"]["revision"]
                    .as_u64()
                    .expect("every task event has a revision"),
                e["data"]["priority"].as_u64().expect("priority"),
            ));
    }
    let mut shapes = Vec::new();
    for (task_id, events) in &by_task {
        let revisions: Vec<u64> = events.iter().map(|e| e.1).collect();
        let expected: Vec<u64> = (1..=events.len() as u64).collect();
        assert_eq!(
            revisions, expected,
            "task {task_id}: revisions rise by one in arrival order: {events:?}"
        );
        assert_eq!(events[0].0, "task.scheduled", "task {task_id}: {events:?}");
        for (i, (ty, _, _)) in events.iter().enumerate() {
            if ty != "task.scheduled" {
                assert_eq!(i, events.len() - 1, "task {task_id}: final: {events:?}");
            }
        }
        let stored: i32 = sqlx::query_scalar("SELECT revision FROM tasks WHERE task_id = $1::uuid")
            .bind(task_id)
            .fetch_one(&env.db)
            .await
            .expect("q");
        assert_eq!(
            i64::from(stored),
            *revisions.last().expect("one event") as i64,
            "task {task_id}: the row keeps the revision of its last event"
        );
        shapes.push(
            events
                .iter()
                .map(|(ty, _, p)| format!("{ty}/{p}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    shapes.sort();
    let has = |s: &str| shapes.iter().any(|x| x == s);
    // The first call: planned by the worker, fired by the scheduler.
    assert!(
        shapes.iter().any(|s| s.starts_with("task.scheduled/")
            && s.contains(" task.due/")
            && s.split(' ').count() == 2),
        "{shapes:?}"
    );
    // The next attempt the scheduler planned, cancelled by the promise.
    assert!(
        shapes.iter().any(|s| s.starts_with("task.scheduled/")
            && s.contains(" task.cancelled/")
            && s.split(' ').count() == 2),
        "{shapes:?}"
    );
    // The reminder (and the check): ranked 2 (promise due today), re-ranked 1, fired.
    assert!(
        has("task.scheduled/2 task.scheduled/1 task.due/1"),
        "{shapes:?}"
    );
}
