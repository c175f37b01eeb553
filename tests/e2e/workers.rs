//! The event workers, end to end.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp, ToSpan};
use serde_json::json;
use uuid::Uuid;

use crate::harness::{cny, is, ts, zone_where_it_is, TestEnv};

const WAIT: Duration = Duration::from_secs(20);

fn payment_failed(
    account: &str,
    zone: &str,
    number: u32,
    due: &str,
    overdue: i64,
) -> serde_json::Value {
    json!({
        "account_id": account,
        "customer": {"timezone": zone},
        "installment": {"number": number, "due_date": due, "amount": cny(150_000)},
        "overdue_amount": cny(overdue),
        "failure_reason": "insufficient_funds",
        "attempted_at": Timestamp::now(),
    })
}

#[tokio::test]
async fn first_instalment_default_gets_an_immediate_priority_one_call() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let (zone, tz) = zone_where_it_is(14);
    let today = Timestamp::now().to_zoned(tz.clone()).date();
    let due = today.checked_sub(3.days()).expect("date");
    let before = Timestamp::now();
    env.publish(
        "payment.failed",
        "acc-fid",
        payment_failed("acc-fid", &zone, 1, &due.to_string(), 150_000),
    )
    .await;

    let calls = env
        .tasks
        .wait_for(1, WAIT, is("task.scheduled", "collection_call", "acc-fid"))
        .await;
    assert_eq!(calls.len(), 1, "one collection call is planned");
    let call = &calls[0];
    assert_eq!(call["_routing_key"], "task.scheduled.collection_call");
    let d = &call["data"];
    assert_eq!(d["priority"], 1, "first-instalment default comes first");
    assert_eq!(d["tone"], "gentle");
    assert_eq!(d["channel"], "phone_mobile");
    assert_eq!(d["account"]["dpd"], 3);
    assert_eq!(d["account"]["bucket"], "M1");
    assert_eq!(d["account"]["overdue_amount"], cny(150_000));
    let due_at = ts(&d["due_at"]);
    assert!(
        due_at >= before && due_at <= Timestamp::now(),
        "inside the window the call is due at once, got {due_at}"
    );
    let journal = env.journal("acc-fid").await;
    assert!(journal.iter().any(|(k, _)| k == "event_applied"));
    assert!(journal.iter().any(|(k, _)| k == "task_planned"));
}

#[tokio::test]
async fn failure_late_at_night_is_called_at_eight_next_morning_and_never_twice() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let (zone, tz) = zone_where_it_is(23);
    let today = Timestamp::now().to_zoned(tz.clone()).date();
    let data = payment_failed("acc-night", &zone, 2, &today.to_string(), 300_000);
    env.publish("payment.failed", "acc-night", data.clone())
        .await;
    let calls = env
        .tasks
        .wait_for(
            1,
            WAIT,
            is("task.scheduled", "collection_call", "acc-night"),
        )
        .await;
    assert_eq!(calls.len(), 1);
    let due = ts(&calls[0]["data"]["due_at"]).to_zoned(tz.clone());
    assert_eq!(due.date(), today.tomorrow().expect("date"));
    assert_eq!(
        (due.hour(), due.minute()),
        (8, 0),
        "next allowed minute is 08:00 local"
    );

    // The billing system retries the debit and it fails again: no second call.
    env.publish("payment.failed", "acc-night", data).await;
    let applied = env
        .wait_count(
            "SELECT count(*) FROM inbox WHERE account_id = 'acc-night'",
            2,
            WAIT,
        )
        .await;
    assert_eq!(applied, 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = env
        .tasks
        .all()
        .into_iter()
        .filter(is("task.scheduled", "collection_call", "acc-night"))
        .count();
    assert_eq!(calls, 1, "a repeated failure never duplicates an open call");
}

#[tokio::test]
async fn promise_plans_reminder_before_and_check_after_and_cancels_the_call() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let (zone, tz) = zone_where_it_is(10);
    let today = Timestamp::now().to_zoned(tz.clone()).date();
    env.publish(
        "payment.failed",
        "acc-ptp",
        payment_failed("acc-ptp", &zone, 2, &today.to_string(), 200_000),
    )
    .await;
    let call = env
        .tasks
        .wait_for(1, WAIT, is("task.scheduled", "collection_call", "acc-ptp"))
        .await;
    assert_eq!(call.len(), 1);

    // "Today at 15:00": the collector captures the promise.
    let promised = today
        .at(15, 0, 0, 0)
        .to_zoned(tz.clone())
        .expect("zoned")
        .timestamp();
    env.publish(
        "promise.made",
        "acc-ptp",
        json!({
            "account_id": "acc-ptp", "promise_id": "ptp-1", "amount": cny(200_000),
            "promised_at": promised, "captured_by": "agent-7", "channel": "phone_mobile"
        }),
    )
    .await;
    let reminder = env
        .tasks
        .wait_for(1, WAIT, is("task.scheduled", "promise_reminder", "acc-ptp"))
        .await;
    let check = env
        .tasks
        .wait_for(1, WAIT, is("task.scheduled", "promise_check", "acc-ptp"))
        .await;
    let cancelled = env
        .tasks
        .wait_for(1, WAIT, is("task.cancelled", "collection_call", "acc-ptp"))
        .await;
    assert_eq!(reminder.len(), 1);
    assert_eq!(check.len(), 1);
    assert_eq!(
        cancelled.len(),
        1,
        "the open call is cancelled by the promise"
    );
    assert_eq!(cancelled[0]["data"]["task_id"], call[0]["data"]["task_id"]);
    assert_eq!(
        ts(&reminder[0]["data"]["due_at"]),
        promised - SignedDuration::from_hours(1)
    );
    assert_eq!(
        ts(&check[0]["data"]["due_at"]),
        promised + SignedDuration::from_hours(1)
    );
    assert_eq!(reminder[0]["data"]["promise_id"], "ptp-1");
    assert_eq!(
        reminder[0]["data"]["priority"], 2,
        "a promise due today ranks second"
    );
    let reviews = env
        .tasks
        .all()
        .into_iter()
        .filter(is("task.scheduled", "supervisor_review", "acc-ptp"))
        .count();
    assert_eq!(reviews, 0, "a same-day promise needs no supervisor");
}

#[tokio::test]
async fn broken_promises_escalate_tone_then_open_a_field_visit_but_no_third_party_call() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let (zone, tz) = zone_where_it_is(11);
    let today = Timestamp::now().to_zoned(tz.clone()).date();
    env.publish(
        "payment.failed",
        "acc-esc",
        payment_failed("acc-esc", &zone, 3, &today.to_string(), 500_000),
    )
    .await;
    env.tasks
        .wait_for(1, WAIT, is("task.scheduled", "collection_call", "acc-esc"))
        .await;
    let mut tones = Vec::new();
    for n in 1..=3 {
        let pid = format!("ptp-{n}");
        let promised = Timestamp::now() + SignedDuration::from_hours(3);
        env.publish(
            "promise.made",
            "acc-esc",
            json!({"account_id": "acc-esc", "promise_id": pid, "amount": cny(500_000),
                   "promised_at": promised, "captured_by": "agent-1", "channel": "phone_mobile"}),
        )
        .await;
        env.tasks
            .wait_for(n, WAIT, is("task.scheduled", "promise_check", "acc-esc"))
            .await;
        env.publish(
            "promise.broken",
            "acc-esc",
            json!({"account_id": "acc-esc", "promise_id": pid, "reason": "no_payment"}),
        )
        .await;
        let calls = env
            .tasks
            .wait_for(
                n + 1,
                WAIT,
                is("task.scheduled", "collection_call", "acc-esc"),
            )
            .await;
        assert_eq!(calls.len(), n + 1);
        let last = calls.last().expect("a call");
        tones.push(last["data"]["tone"].as_str().expect("tone").to_owned());
        assert_eq!(last["data"]["account"]["broken_promises"], n);
    }
    assert_eq!(tones, ["firm", "serious", "serious"]);
    let visit = env
        .tasks
        .wait_for(1, WAIT, is("task.scheduled", "field_visit", "acc-esc"))
        .await;
    assert_eq!(visit.len(), 1, "three broken promises open a field visit");
    assert_eq!(visit[0]["data"]["account"]["broken_promises"], 3);
    // Third parties only when contact is lost (domain rule 8), not for broken promises.
    let third = env
        .tasks
        .all()
        .into_iter()
        .filter(is("task.scheduled", "third_party_call", "acc-esc"))
        .count();
    assert_eq!(third, 0, "broken promises open no third-party call");
    // Each broken promise cancelled its own reminder and check.
    let cancelled_checks = env
        .tasks
        .wait_for(3, WAIT, is("task.cancelled", "promise_check", "acc-esc"))
        .await;
    assert_eq!(cancelled_checks.len(), 3);
    let _ = tz;
}

#[tokio::test]
async fn redelivered_duplicate_changes_nothing() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let (zone, tz) = zone_where_it_is(12);
    let today = Timestamp::now().to_zoned(tz).date();
    let id = Uuid::new_v4();
    let data = payment_failed("acc-dup", &zone, 2, &today.to_string(), 100_000);
    for _ in 0..3 {
        env.publish_with_id(id, "payment.failed", "acc-dup", data.clone())
            .await;
    }
    env.tasks
        .wait_for(1, WAIT, is("task.scheduled", "collection_call", "acc-dup"))
        .await;
    // Give the copies time to be consumed, then check nothing doubled.
    let depth_zero = wait_queue_empty(&env, "collections.payment-failed").await;
    assert!(depth_zero, "all copies consumed and acked");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&env.db)
        .await
        .expect("q");
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&env.db)
        .await
        .expect("q");
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM journal WHERE kind = 'event_applied'")
            .fetch_one(&env.db)
            .await
            .expect("q");
    assert_eq!((inbox, tasks, applied), (1, 1, 1));
    assert_eq!(env.tasks.all().len(), 1, "one task event on the exchange");
}

async fn wait_queue_empty(env: &TestEnv, queue: &str) -> bool {
    let ch = env.amqp.create_channel().await.expect("channel");
    for _ in 0..200 {
        let q = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("passive declare");
        if q.message_count() == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn promise_broken_before_its_promise_made_is_counted_and_the_late_promise_plans_nothing() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let (zone, tz) = zone_where_it_is(15);
    let today = Timestamp::now().to_zoned(tz).date();
    env.publish(
        "payment.failed",
        "acc-ooo",
        payment_failed("acc-ooo", &zone, 2, &today.to_string(), 90_000),
    )
    .await;
    env.tasks
        .wait_for(1, WAIT, is("task.scheduled", "collection_call", "acc-ooo"))
        .await;
    env.publish(
        "promise.broken",
        "acc-ooo",
        json!({"account_id": "acc-ooo", "promise_id": "ptp-late", "reason": "no_payment"}),
    )
    .await;
    let calls = env
        .tasks
        .wait_for(2, WAIT, is("task.scheduled", "collection_call", "acc-ooo"))
        .await;
    assert_eq!(
        calls.len(),
        2,
        "the broken promise escalates with a new call"
    );
    assert_eq!(calls[1]["data"]["tone"], "firm");
    env.publish(
        "promise.made",
        "acc-ooo",
        json!({"account_id": "acc-ooo", "promise_id": "ptp-late", "amount": cny(90_000),
               "promised_at": Timestamp::now() + SignedDuration::from_hours(2),
               "captured_by": "agent-2", "channel": "phone_mobile"}),
    )
    .await;
    env.wait_count(
        "SELECT count(*) FROM inbox WHERE account_id = 'acc-ooo'",
        3,
        WAIT,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let promise_tasks = env
        .tasks
        .all()
        .into_iter()
        .filter(|e| e["data"]["promise_id"] == "ptp-late" && e["type"] == "task.scheduled")
        .count();
    assert_eq!(promise_tasks, 0, "a promise already broken plans nothing");
    let journal = env.journal("acc-ooo").await;
    assert!(
        journal
            .iter()
            .any(|(_, d)| d.contains("after its promise.broken")),
        "{journal:?}"
    );
}

#[tokio::test]
async fn payment_in_full_cures_the_account_and_cancels_every_open_task() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let (zone, tz) = zone_where_it_is(9);
    let today = Timestamp::now().to_zoned(tz).date();
    env.publish(
        "payment.failed",
        "acc-cure",
        payment_failed("acc-cure", &zone, 2, &today.to_string(), 120_000),
    )
    .await;
    env.tasks
        .wait_for(1, WAIT, is("task.scheduled", "collection_call", "acc-cure"))
        .await;
    // A partial payment keeps the plan.
    env.publish(
        "payment.received",
        "acc-cure",
        json!({"account_id": "acc-cure", "payment_id": "pay-1", "amount": cny(20_000),
               "received_at": Timestamp::now()}),
    )
    .await;
    env.wait_count(
        "SELECT count(*) FROM inbox WHERE account_id = 'acc-cure'",
        2,
        WAIT,
    )
    .await;
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status = 'scheduled'")
        .fetch_one(&env.db)
        .await
        .expect("q");
    assert_eq!(open, 1, "a partial payment keeps the call");
    env.publish(
        "payment.received",
        "acc-cure",
        json!({"account_id": "acc-cure", "payment_id": "pay-2", "amount": cny(100_000),
               "received_at": Timestamp::now(), "overdue_amount_after": cny(0)}),
    )
    .await;
    let cancelled = env
        .tasks
        .wait_for(1, WAIT, is("task.cancelled", "collection_call", "acc-cure"))
        .await;
    assert_eq!(cancelled.len(), 1);
    assert!(cancelled[0]["data"]["cancel_reason"]
        .as_str()
        .expect("reason")
        .contains("cured"));
    let status: String =
        sqlx::query_scalar("SELECT status FROM accounts WHERE account_id = 'acc-cure'")
            .fetch_one(&env.db)
            .await
            .expect("q");
    assert_eq!(status, "cured");
}

#[tokio::test]
async fn bad_messages_go_to_the_dead_letter_queue_with_their_reason_and_never_block() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let q = "collections.payment-failed";
    env.publish_raw("payment.failed", b"this is not json").await;
    let (props, body) = env
        .get_dead_letter(q, WAIT)
        .await
        .expect("dead letter for non-JSON");
    assert_eq!(body, b"this is not json");
    assert_eq!(
        header(&props, "x-collections-error").as_deref(),
        Some("not_json")
    );

    env.publish_raw("payment.failed", br#"{"hello": "world"}"#)
        .await;
    let (props, _) = env.get_dead_letter(q, WAIT).await.expect("dead letter");
    assert_eq!(
        header(&props, "x-collections-error").as_deref(),
        Some("not_cloudevent")
    );

    // Schema violation: negative money.
    let mut data = payment_failed("acc-bad", "Asia/Shanghai", 1, "2026-11-01", 1000);
    data["overdue_amount"]["minor"] = json!(-5);
    env.publish("payment.failed", "acc-bad", data).await;
    let (props, _) = env.get_dead_letter(q, WAIT).await.expect("dead letter");
    assert_eq!(
        header(&props, "x-collections-error").as_deref(),
        Some("schema")
    );
    assert!(header(&props, "x-collections-error-detail")
        .expect("detail")
        .contains("negative"));

    // Absurd value: a zone that does not exist.
    env.publish(
        "payment.failed",
        "acc-bad",
        payment_failed("acc-bad", "Mars/Olympus", 1, "2026-11-01", 1000),
    )
    .await;
    let (props, _) = env.get_dead_letter(q, WAIT).await.expect("dead letter");
    assert_eq!(
        header(&props, "x-collections-error").as_deref(),
        Some("invalid_value")
    );

    // A promise.made routed to the payment-failed queue by mistake.
    let body = crate::harness::cloudevent(Uuid::new_v4(), "promise.made", "acc-bad", json!({}));
    env.publish_raw("payment.failed", body.to_string().as_bytes())
        .await;
    let (props, _) = env.get_dead_letter(q, WAIT).await.expect("dead letter");
    assert_eq!(
        header(&props, "x-collections-error").as_deref(),
        Some("unexpected_type")
    );

    // Too large.
    let huge = vec![b' '; 70 * 1024];
    env.publish_raw("payment.failed", &huge).await;
    let (props, _) = env.get_dead_letter(q, WAIT).await.expect("dead letter");
    assert_eq!(
        header(&props, "x-collections-error").as_deref(),
        Some("too_large")
    );

    // The queue is not blocked: a good event behind the bad ones is applied.
    let (zone, tz) = zone_where_it_is(14);
    let today = Timestamp::now().to_zoned(tz).date();
    env.publish(
        "payment.failed",
        "acc-good",
        payment_failed("acc-good", &zone, 1, &today.to_string(), 5000),
    )
    .await;
    let calls = env
        .tasks
        .wait_for(1, WAIT, is("task.scheduled", "collection_call", "acc-good"))
        .await;
    assert_eq!(calls.len(), 1);
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&env.db)
        .await
        .expect("q");
    assert_eq!(inbox, 1, "rejected messages leave no trace in the inbox");
}

/// The dead-letter queue lost its binding while the worker runs (an operator's mistake, a
/// definitions import): the dead letter must not be dropped by the broker while its
/// original is acked. The worker publishes it mandatory, so the broker returns it; the
/// original stays unacked, and the next session declares the binding again before the
/// message is dead-lettered for good.
#[tokio::test]
async fn a_dead_letter_whose_queue_lost_its_binding_is_not_lost() {
    let mut env = TestEnv::new().await;
    env.spawn("payment-failed-worker").await;
    let q = "collections.payment-failed";
    // A first bad message proves the worker consumes (and declared its topology).
    env.publish_raw("payment.failed", b"first, not json").await;
    env.get_dead_letter(q, WAIT)
        .await
        .expect("the worker dead-letters while the binding is there");
    let ch = env.amqp.create_channel().await.expect("channel");
    ch.queue_unbind(
        "collections.payment-failed.dlq".into(),
        collections_bus::DEAD_LETTER_EXCHANGE.into(),
        "collections.payment-failed.dlq".into(),
        lapin::types::FieldTable::default(),
    )
    .await
    .expect("unbind the DLQ");

    env.publish_raw("payment.failed", b"second, not json").await;
    let (props, body) = env
        .get_dead_letter(q, Duration::from_secs(40))
        .await
        .expect("the dead letter reaches its queue once the binding is back");
    assert_eq!(body, b"second, not json");
    assert_eq!(
        header(&props, "x-collections-error").as_deref(),
        Some("not_json")
    );
    assert!(
        env.log("payment-failed-worker-0")
            .contains("no queue is bound"),
        "the returned dead letter is reported"
    );
}

#[tokio::test]
async fn an_unreadable_account_dead_letters_its_event_and_the_queue_moves_on() {
    // Rows an operator (or a newer binary) left unreadable: a state document that is not
    // an account state, and a task of a kind this binary does not know. Each account's
    // next event goes to the dead-letter queue with reason `state`; the events of other
    // accounts published after them are applied as usual (before, the worker retried the
    // batch for ever and nothing behind it moved).
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let q = "collections.payment-failed";
    let (zone, tz) = zone_where_it_is(14);
    let today = Timestamp::now().to_zoned(tz).date().to_string();
    for account in ["acc-corrupt", "acc-enum"] {
        env.publish(
            "payment.failed",
            account,
            payment_failed(account, &zone, 1, &today, 5000),
        )
        .await;
    }
    env.wait_count("SELECT count(*) FROM tasks", 2, WAIT).await;
    sqlx::query(
        r#"UPDATE accounts SET state = '{"status": "on_the_moon"}' WHERE account_id = 'acc-corrupt'"#,
    )
    .execute(&env.db)
    .await
    .expect("corrupt the state");
    sqlx::query("UPDATE tasks SET kind = 'carrier_pigeon' WHERE account_id = 'acc-enum'")
        .execute(&env.db)
        .await
        .expect("an unknown kind");

    let mut bad = Vec::new();
    for account in ["acc-corrupt", "acc-enum"] {
        bad.push(
            env.publish(
                "payment.failed",
                account,
                payment_failed(account, &zone, 2, &today, 10_000),
            )
            .await,
        );
    }
    env.publish(
        "payment.failed",
        "acc-fine",
        payment_failed("acc-fine", &zone, 1, &today, 5000),
    )
    .await;

    let calls = env
        .tasks
        .wait_for(1, WAIT, is("task.scheduled", "collection_call", "acc-fine"))
        .await;
    assert_eq!(calls.len(), 1, "the other account's event is applied");
    let mut dead = Vec::new();
    for _ in 0..2 {
        let (props, body) = env
            .get_dead_letter(q, WAIT)
            .await
            .expect("the unreadable account's event is dead-lettered");
        assert_eq!(
            header(&props, "x-collections-error").as_deref(),
            Some("state")
        );
        let detail = header(&props, "x-collections-error-detail").expect("detail");
        assert!(
            detail.contains("stored data cannot be read"),
            "a clear detail: {detail}"
        );
        let body: serde_json::Value = serde_json::from_slice(&body).expect("the original");
        dead.push(
            body["id"]
                .as_str()
                .expect("id")
                .parse::<Uuid>()
                .expect("uuid"),
        );
    }
    dead.sort();
    bad.sort();
    assert_eq!(
        dead, bad,
        "exactly the two events of the unreadable accounts"
    );
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE event_id = ANY($1)")
        .bind(&bad)
        .fetch_one(&env.db)
        .await
        .expect("q");
    assert_eq!(
        applied, 0,
        "a dead-lettered event leaves no inbox row (a replay applies it)"
    );
}

#[tokio::test]
async fn a_payment_for_a_call_being_fired_waits_alone_while_other_accounts_are_applied() {
    // A scheduler is firing acc-held's call (claimed, not yet confirmed) when the customer
    // pays in full: the payment must not cancel the call under the scheduler's feet, so it
    // waits for the firing to settle. Payments of other accounts, queued before it or
    // published after it, are applied meanwhile (before, the whole batch and every batch
    // after it waited, up to the 15 s claim timeout).
    let mut env = TestEnv::new().await;
    env.spawn("payment-failed-worker").await;
    let (zone, tz) = zone_where_it_is(14);
    let today = Timestamp::now().to_zoned(tz).date().to_string();
    env.publish(
        "payment.failed",
        "acc-held",
        payment_failed("acc-held", &zone, 2, &today, 5000),
    )
    .await;
    let planned = env
        .wait_count(
            "SELECT count(*) FROM tasks WHERE account_id = 'acc-held' AND kind = 'collection_call'",
            1,
            WAIT,
        )
        .await;
    assert_eq!(planned, 1);
    // What a scheduler's claim does (no scheduler runs in this test).
    sqlx::query(
        "UPDATE tasks SET status = 'claimed', claimed_at = now()
         WHERE account_id = 'acc-held' AND kind = 'collection_call'",
    )
    .execute(&env.db)
    .await
    .expect("claim");

    // Queued before the worker starts, so that they come in one batch (or the ones
    // before the held payment in batches of their own, which changes nothing).
    let paid = |account: &str, n: u32| {
        json!({"account_id": account, "payment_id": format!("pay-{n}"), "amount": cny(5000),
               "received_at": Timestamp::now(), "overdue_amount_after": cny(0)})
    };
    for n in 1..=3 {
        let account = format!("acc-free-{n}");
        env.publish("payment.received", &account, paid(&account, n))
            .await;
    }
    let held = env
        .publish("payment.received", "acc-held", paid("acc-held", 9))
        .await;
    env.spawn("payment-received-worker").await;

    let free = env
        .wait_count(
            "SELECT count(*) FROM inbox WHERE account_id LIKE 'acc-free-%'",
            3,
            Duration::from_secs(6),
        )
        .await;
    assert_eq!(free, 3, "the other accounts' payments are applied at once");
    let held_in: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE event_id = $1")
        .bind(held)
        .fetch_one(&env.db)
        .await
        .expect("q");
    assert_eq!(held_in, 0, "the held payment waits");
    let status: String = sqlx::query_scalar(
        "SELECT status FROM tasks WHERE account_id = 'acc-held' AND kind = 'collection_call'",
    )
    .fetch_one(&env.db)
    .await
    .expect("q");
    assert_eq!(status, "claimed", "the call being fired is left alone");
    // Nor does the held payment hold up what arrives after it.
    env.publish("payment.received", "acc-free-4", paid("acc-free-4", 4))
        .await;
    let later = env
        .wait_count(
            "SELECT count(*) FROM inbox WHERE account_id = 'acc-free-4'",
            1,
            Duration::from_secs(3),
        )
        .await;
    assert_eq!(later, 1, "a payment published later is applied meanwhile");
    let held_in: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE event_id = $1")
        .bind(held)
        .fetch_one(&env.db)
        .await
        .expect("q");
    assert_eq!(held_in, 0, "the held payment still waits");

    // The firing settles: the payment is applied and the fired call stays fired.
    sqlx::query(
        "UPDATE tasks SET status = 'emitted', emitted_at = now()
         WHERE account_id = 'acc-held' AND kind = 'collection_call'",
    )
    .execute(&env.db)
    .await
    .expect("emitted");
    let applied = env
        .wait_count(
            &format!("SELECT count(*) FROM inbox WHERE event_id = '{held}'"),
            1,
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(applied, 1, "the payment is applied once the firing settled");
    let status: String = sqlx::query_scalar(
        "SELECT status FROM tasks WHERE account_id = 'acc-held' AND kind = 'collection_call'",
    )
    .fetch_one(&env.db)
    .await
    .expect("q");
    assert_eq!(status, "emitted");
}

fn header(props: &lapin::BasicProperties, key: &str) -> Option<String> {
    collections_bus::header_str(props, key)
}

#[tokio::test]
async fn events_committed_while_the_broker_link_is_down_are_published_by_the_relay() {
    // The fast path publishes after commit; rows it could not publish are leased for a
    // few seconds and then published by a relay. Simulate a worker that committed and died
    // by writing an outbox row directly with an expired lease.
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    // The migrations ran in TestEnv::new; give the workers a moment to start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = Uuid::new_v4();
    let body = json!({"specversion": "1.0", "id": id, "source": "collections", "type": "task.scheduled",
                      "time": Timestamp::now(), "subject": "acc-relay", "datacontenttype": "application/json",
                      "data": {"task_id": Uuid::new_v4(), "kind": "collection_call"}});
    sqlx::query(
        "WITH sent AS (
             INSERT INTO outbox (event_id, account_id, exchange, routing_key, body)
             VALUES ($1, 'acc-relay', 'collections.tasks', 'task.scheduled.collection_call', $2)
             RETURNING id)
         INSERT INTO outbox_pending (id, lease_until)
         SELECT id, now() - interval '1 second' FROM sent",
    )
    .bind(id)
    .bind(&body)
    .execute(&env.db)
    .await
    .expect("insert");
    let got = env
        .tasks
        .wait_for(1, WAIT, |e| e["id"] == id.to_string())
        .await;
    assert_eq!(got.len(), 1, "the relay published the orphaned row");
    let pending = env
        .wait_count("SELECT count(*) FROM outbox_pending", 0, WAIT)
        .await;
    assert_eq!(pending, 0, "the relay marked the row published");
}

#[tokio::test]
async fn sigterm_stops_every_worker_cleanly() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let (zone, tz) = zone_where_it_is(14);
    let today = Timestamp::now().to_zoned(tz).date();
    env.publish(
        "payment.failed",
        "acc-term",
        payment_failed("acc-term", &zone, 2, &today.to_string(), 5000),
    )
    .await;
    env.tasks
        .wait_for(1, WAIT, is("task.scheduled", "collection_call", "acc-term"))
        .await;
    let started = std::time::Instant::now();
    for (name, status) in env.stop_all().await {
        assert!(status.success(), "{name} exited with {status}");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_promise_superseded_within_one_batch_leaves_no_open_tasks_behind() {
    let mut env = TestEnv::new().await;
    let (zone, tz) = zone_where_it_is(10);
    let today = Timestamp::now().to_zoned(tz).date();
    // The customer's zone comes with payment.failed: it must be applied before the
    // promises, or the account starts in the default zone, where the reminder may be night.
    env.spawn("payment-failed-worker").await;
    env.publish(
        "payment.failed",
        "acc-sup",
        payment_failed("acc-sup", &zone, 2, &today.to_string(), 70_000),
    )
    .await;
    let failed = env
        .wait_count(
            "SELECT count(*) FROM inbox WHERE account_id = 'acc-sup'",
            1,
            WAIT,
        )
        .await;
    assert_eq!(failed, 1, "payment.failed applied first");
    // Both promises wait in the queue for one consumer, so they land in one batch.
    for (n, hours) in [(1, 3), (2, 5)] {
        env.publish(
            "promise.made",
            "acc-sup",
            json!({"account_id": "acc-sup", "promise_id": format!("ptp-{n}"), "amount": cny(70_000),
                   "promised_at": Timestamp::now() + SignedDuration::from_hours(hours),
                   "captured_by": "agent-4", "channel": "phone_mobile"}),
        )
        .await;
    }
    env.extra_env
        .push(("WORKER_CONCURRENCY".into(), "1".into()));
    env.spawn("promise-made-worker").await;
    let applied = env
        .wait_count(
            "SELECT count(*) FROM inbox WHERE account_id = 'acc-sup'",
            3,
            WAIT,
        )
        .await;
    assert_eq!(applied, 3);
    let open: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT kind, promise_id FROM tasks WHERE account_id = 'acc-sup' AND status = 'scheduled' ORDER BY kind",
    )
    .fetch_all(&env.db)
    .await
    .expect("q");
    assert!(
        open.iter().all(|(_, p)| p.as_deref() == Some("ptp-2")),
        "only the newest promise's tasks stay open: {open:?}"
    );
    assert_eq!(
        open.len(),
        3,
        "check, expiry and reminder of ptp-2: {open:?}"
    );
    let journal = env.journal("acc-sup").await;
    assert!(
        journal
            .iter()
            .any(|(k, d)| k == "promise_superseded" && d == "ptp-1 superseded by ptp-2"),
        "{journal:?}"
    );
}
