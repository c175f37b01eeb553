//! Payment arrangements end to end (issue 22): a plan paid on time is kept, a short
//! instalment breaks it at due + grace and collection resumes, a settlement below the
//! overdue without approval is refused, and a kept settlement's reversal re-opens the
//! account. Outcomes are read where billing reads them: `collections.arrangement-outcomes`.

use std::time::{Duration, Instant};

use collections_bus::lapin::options::{BasicAckOptions, BasicGetOptions};
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

use crate::harness::{cny, is, zone_where_it_is, TestEnv};

const WAIT: Duration = Duration::from_secs(30);

/// Promise and instalment timings in seconds (reminder 3 s before, check 3 s after, grace
/// 5 s), so a test can watch a whole instalment.
fn fast_policy(env: &mut TestEnv) {
    let text = collections_core::policy::DEFAULT_POLICY_TOML
        .replace("reminder_before = \"1h\"", "reminder_before = \"3s\"")
        .replace("check_after = \"1h\"", "check_after = \"3s\"")
        .replace("grace = \"2h\"", "grace = \"5s\"");
    let path = env.log_dir.join("policy.toml");
    std::fs::write(&path, text).expect("write policy");
    env.extra_env
        .push(("POLICY_FILE".into(), path.display().to_string()));
}

/// A delinquent account (3 000.00 overdue) in a zone where it is 14:00, its first call
/// planned.
async fn delinquent(env: &TestEnv, account: &str) {
    let (zone, tz) = zone_where_it_is(14);
    let today = Timestamp::now().to_zoned(tz).date();
    env.publish(
        "payment.failed",
        account,
        json!({
            "account_id": account,
            "customer": {"timezone": zone},
            "installment": {"number": 2, "due_date": today.to_string(), "amount": cny(300_000)},
            "overdue_amount": cny(300_000),
            "failure_reason": "insufficient_funds",
            "attempted_at": Timestamp::now(),
        }),
    )
    .await;
    let calls = env
        .tasks
        .wait_for(1, WAIT, is("task.scheduled", "collection_call", account))
        .await;
    assert_eq!(calls.len(), 1, "{account}: a call is planned");
}

fn whole_seconds(t: Timestamp) -> Timestamp {
    t.round(jiff::Unit::Second).expect("round")
}

fn arrangement(account: &str, id: &str, kind: &str, dues: &[Timestamp], amounts: &[i64]) -> Value {
    let instalments: Vec<Value> = dues
        .iter()
        .zip(amounts)
        .enumerate()
        .map(|(i, (d, a))| json!({"number": i + 1, "due_at": d, "amount": cny(*a)}))
        .collect();
    json!({
        "account_id": account,
        "arrangement_id": id,
        "kind": kind,
        "total": cny(amounts.iter().sum()),
        "instalments": instalments,
        "settles_in_full": false,
        "captured_by": "agent-7",
        "channel": "phone_mobile",
    })
}

async fn pay(env: &TestEnv, account: &str, id: &str, minor: i64, after: Option<i64>) {
    let mut data = json!({"account_id": account, "payment_id": id, "amount": cny(minor),
                          "received_at": Timestamp::now()});
    if let Some(a) = after {
        data["overdue_amount_after"] = cny(a);
    }
    env.publish("payment.received", account, data).await;
}

/// Waits for `count` outcomes of `account` on `collections.arrangement-outcomes` (taking
/// them off the queue, as billing would).
async fn outcomes(env: &TestEnv, account: &str, count: usize, timeout: Duration) -> Vec<Value> {
    let ch = env.amqp.create_channel().await.expect("channel");
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < count && Instant::now() < deadline {
        match ch
            .basic_get(
                collections_bus::ARRANGEMENT_OUTCOMES_QUEUE.into(),
                BasicGetOptions::default(),
            )
            .await
            .expect("basic.get")
        {
            Some(m) => {
                m.delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .expect("ack");
                let mut v: Value = serde_json::from_slice(&m.delivery.data).expect("JSON");
                v["_routing_key"] = json!(m.delivery.routing_key.as_str());
                if v["subject"] == account {
                    got.push(v);
                }
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    got
}

async fn task_rows(env: &TestEnv, account: &str, kind: &str, status: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE account_id = $1 AND kind = $2 AND status = $3",
    )
    .bind(account)
    .bind(kind)
    .bind(status)
    .fetch_one(&env.db)
    .await
    .expect("count")
}

#[tokio::test]
async fn a_three_instalment_plan_paid_on_time_is_kept_and_nothing_fires_for_it() {
    let mut env = TestEnv::new().await;
    fast_policy(&mut env);
    env.start_workers().await;
    env.spawn("task-scheduler").await;
    let acc = "acc-arr-kept";
    delinquent(&env, acc).await;
    let start = whole_seconds(Timestamp::now());
    let dues: Vec<Timestamp> = [30, 40, 50]
        .iter()
        .map(|s| start + SignedDuration::from_secs(*s))
        .collect();
    env.publish(
        "arrangement.made",
        acc,
        arrangement(acc, "arr-1", "instalment_plan", &dues, &[100_000; 3]),
    )
    .await;
    let cancelled = env
        .tasks
        .wait_for(1, WAIT, |e| {
            is("task.cancelled", "collection_call", acc)(e)
                && e["data"]["cancel_reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("arrangement arr-1 made"))
        })
        .await;
    assert_eq!(cancelled.len(), 1, "calls are suspended by the plan");
    let reminders = env
        .tasks
        .wait_for(3, WAIT, is("task.scheduled", "promise_reminder", acc))
        .await;
    assert_eq!(reminders.len(), 3, "a reminder per instalment");
    assert_eq!(reminders[0]["data"]["promise_id"], "arr-1#1");
    // Each instalment paid in full, at once (before any reminder is due).
    pay(&env, acc, "pay-1", 100_000, Some(200_000)).await;
    pay(&env, acc, "pay-2", 100_000, Some(100_000)).await;
    pay(&env, acc, "pay-3", 100_000, Some(0)).await;
    let out = outcomes(&env, acc, 1, WAIT).await;
    assert_eq!(out.len(), 1, "arrangement.kept is published");
    assert_eq!(out[0]["_routing_key"], "arrangement.kept");
    assert_eq!(out[0]["type"], "arrangement.kept");
    assert_eq!(out[0]["source"], "collections");
    assert_eq!(out[0]["data"]["arrangement_id"], "arr-1");
    assert_eq!(out[0]["data"]["instalment_number"], 3);
    // Past the last instalment's grace: nothing of the plan fired, no break.
    tokio::time::sleep(Duration::from_secs(60)).await;
    for kind in ["instalment_expiry", "promise_reminder", "promise_check"] {
        assert_eq!(
            task_rows(&env, acc, kind, "emitted").await,
            0,
            "{kind} fired"
        );
        assert_eq!(task_rows(&env, acc, kind, "cancelled").await, 3, "{kind}");
    }
    assert!(outcomes(&env, acc, 1, Duration::from_secs(1))
        .await
        .is_empty());
    let status: String =
        sqlx::query_scalar("SELECT state->>'status' FROM accounts WHERE account_id = $1")
            .bind(acc)
            .fetch_one(&env.db)
            .await
            .expect("status");
    assert_eq!(status, "cured");
}

#[tokio::test]
async fn a_short_paid_instalment_breaks_the_plan_at_due_plus_grace_and_calls_resume() {
    let mut env = TestEnv::new().await;
    fast_policy(&mut env);
    env.start_workers().await;
    env.spawn("task-scheduler").await;
    let acc = "acc-arr-short";
    delinquent(&env, acc).await;
    let start = whole_seconds(Timestamp::now());
    let dues = [
        start + SignedDuration::from_secs(12),
        start + SignedDuration::from_secs(3600),
    ];
    env.publish(
        "arrangement.made",
        acc,
        arrangement(acc, "arr-2", "instalment_plan", &dues, &[150_000; 2]),
    )
    .await;
    env.tasks
        .wait_for(2, WAIT, is("task.scheduled", "promise_check", acc))
        .await;
    // Half of instalment 1: beyond the 5 % tolerance.
    pay(&env, acc, "pay-1", 75_000, None).await;
    let out = outcomes(&env, acc, 1, WAIT).await;
    assert_eq!(out.len(), 1, "arrangement.broken is published");
    assert_eq!(out[0]["_routing_key"], "arrangement.broken");
    assert_eq!(out[0]["data"]["instalment_number"], 1);
    assert_eq!(out[0]["data"]["reason"], "short_paid");
    let published = Timestamp::now();
    assert!(published >= dues[0] + SignedDuration::from_secs(5));
    // Collection resumes in the escalated tone, and instalment 2's tasks are gone.
    let calls = env
        .tasks
        .wait_for(1, WAIT, |e| {
            is("task.scheduled", "collection_call", acc)(e)
                && e["data"]["tone"] == "firm"
                && e["data"]["attempt"] == 1
        })
        .await;
    assert_eq!(calls.len(), 1, "an escalated call follows the break");
    let gone = env
        .tasks
        .wait_for(1, WAIT, |e| {
            is("task.cancelled", "promise_reminder", acc)(e) && e["data"]["promise_id"] == "arr-2#2"
        })
        .await;
    assert_eq!(gone.len(), 1, "instalment 2's reminder is cancelled");
    // The expiry fired once and is never published as a task event.
    assert_eq!(
        task_rows(&env, acc, "instalment_expiry", "emitted").await,
        1
    );
    assert!(env
        .tasks
        .all()
        .iter()
        .all(|e| e["data"]["kind"] != "instalment_expiry"));
    let broken: i64 = sqlx::query_scalar(
        "SELECT (state->>'broken_promises')::bigint FROM accounts WHERE account_id = $1",
    )
    .bind(acc)
    .fetch_one(&env.db)
    .await
    .expect("broken");
    assert_eq!(broken, 1, "counted as a broken promise");
    let journal = env.journal(acc).await;
    assert!(
        journal.iter().any(|(k, _)| k == "instalment_missed"),
        "{journal:?}"
    );
}

#[tokio::test]
async fn a_settlement_in_full_below_the_overdue_without_approval_is_dead_lettered() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let acc = "acc-arr-refused";
    delinquent(&env, acc).await;
    let mut data = arrangement(
        acc,
        "set-1",
        "settlement",
        &[Timestamp::now() + SignedDuration::from_hours(24)],
        &[210_000],
    );
    data["settles_in_full"] = json!(true);
    env.publish("arrangement.made", acc, data).await;
    let (props, _) = env
        .get_dead_letter("collections.arrangement-made", WAIT)
        .await
        .expect("dead-lettered");
    assert_eq!(
        collections_bus::header_str(&props, "x-collections-error").as_deref(),
        Some("domain")
    );
    assert!(
        collections_bus::header_str(&props, "x-collections-error-detail")
            .unwrap_or_default()
            .contains("discount_approved_by")
    );
    assert_eq!(
        task_rows(&env, acc, "instalment_expiry", "scheduled").await,
        0
    );
}

#[tokio::test]
async fn an_approved_settlement_kept_cures_and_its_reversal_reopens_with_a_call() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let acc = "acc-arr-settle";
    delinquent(&env, acc).await;
    let mut data = arrangement(
        acc,
        "set-2",
        "settlement",
        &[whole_seconds(
            Timestamp::now() + SignedDuration::from_hours(24),
        )],
        &[210_000],
    );
    data["settles_in_full"] = json!(true);
    data["discount_approved_by"] = json!("sup-9");
    env.publish("arrangement.made", acc, data).await;
    env.tasks
        .wait_for(1, WAIT, is("task.scheduled", "promise_check", acc))
        .await;
    pay(&env, acc, "pay-s", 210_000, Some(90_000)).await;
    let out = outcomes(&env, acc, 1, WAIT).await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["_routing_key"], "arrangement.kept");
    assert_eq!(out[0]["data"]["settles_in_full"], true);
    let journal = env.journal(acc).await;
    assert!(
        journal
            .iter()
            .any(|(k, d)| k == "account_cured" && d.contains("sup-9")),
        "{journal:?}"
    );
    env.publish(
        "payment.reversed",
        acc,
        json!({"account_id": acc, "payment_id": "pay-s", "amount": cny(210_000),
               "reversed_at": Timestamp::now(), "reason": "returned_debit"}),
    )
    .await;
    let out = outcomes(&env, acc, 1, WAIT).await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["_routing_key"], "arrangement.broken");
    assert_eq!(out[0]["data"]["reason"], "reversed");
    let calls = env
        .tasks
        .wait_for(1, WAIT, |e| {
            is("task.scheduled", "collection_call", acc)(e)
                && e["data"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("pay-s reversed"))
        })
        .await;
    assert_eq!(calls.len(), 1, "a call is planned after the reversal");
    let overdue = env
        .wait_count(
            &format!("SELECT overdue_minor FROM accounts WHERE account_id = '{acc}'"),
            300_000,
            WAIT,
        )
        .await;
    assert_eq!(overdue, 300_000, "the settled overdue is owed again");
}
