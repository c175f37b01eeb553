//! Contact outcomes end to end (`contact.attempted`): the ledger per debtor in Postgres,
//! caps counted across a debtor's accounts, callbacks, corrections and bad reports.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp, ToSpan};
use serde_json::{json, Value};

use crate::harness::{cny, is, ts, zone_where_it_is, TestEnv};

const WAIT: Duration = Duration::from_secs(20);

fn payment_failed(account: &str, zone: &str, due: &str) -> Value {
    json!({
        "account_id": account,
        "customer": {"timezone": zone},
        "installment": {"number": 2, "due_date": due, "amount": cny(150_000)},
        "overdue_amount": cny(150_000),
        "failure_reason": "insufficient_funds",
        "attempted_at": Timestamp::now(),
    })
}

fn attempt(account: &str, debtor: &str, id: &str, result: &str, party: &str) -> Value {
    json!({
        "account_id": account,
        "debtor_id": debtor,
        "attempt_id": id,
        "channel": "phone_mobile",
        "direction": "outbound",
        "contact_point_id": format!("cp-{debtor}-mobile"),
        "party": party,
        "result": result,
        "started_at": Timestamp::now(),
        "agent_id": "agent-7",
    })
}

/// Two delinquent accounts of one debtor, each with its collection call planned now.
async fn two_accounts_of_one_debtor(env: &TestEnv, a: &str, b: &str) -> jiff::tz::TimeZone {
    let (zone, tz) = zone_where_it_is(13);
    let due = Timestamp::now()
        .to_zoned(tz.clone())
        .date()
        .checked_sub(5.days())
        .expect("date")
        .to_string();
    for account in [a, b] {
        env.publish(
            "payment.failed",
            account,
            payment_failed(account, &zone, &due),
        )
        .await;
        let calls = env
            .tasks
            .wait_for(1, WAIT, is("task.scheduled", "collection_call", account))
            .await;
        assert_eq!(calls.len(), 1, "{account}: a call is planned");
    }
    tz
}

#[tokio::test]
async fn the_third_conversation_of_the_day_moves_the_debtors_calls_on_every_account_to_tomorrow() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let (a, b) = ("acc-ct-a", "acc-ct-b");
    let tz = two_accounts_of_one_debtor(&env, a, b).await;
    let today = Timestamp::now().to_zoned(tz.clone()).date();
    // An unanswered attempt links account b to the debtor; its call stays today.
    env.publish(
        "contact.attempted",
        b,
        attempt(b, "debtor-ct", "att-b-1", "no_answer", "unknown"),
    )
    .await;
    let linked = env
        .wait_count(
            "SELECT count(*) FROM contact_attempts WHERE debtor_id = 'debtor-ct'",
            1,
            WAIT,
        )
        .await;
    assert_eq!(linked, 1);
    // Three conversations on account a.
    for n in 1..=3 {
        env.publish(
            "contact.attempted",
            a,
            attempt(a, "debtor-ct", &format!("att-a-{n}"), "connected", "debtor"),
        )
        .await;
    }
    let rows = env
        .wait_count(
            "SELECT count(*) FROM contact_attempts WHERE debtor_id = 'debtor-ct'",
            4,
            WAIT,
        )
        .await;
    assert_eq!(rows, 4, "every attempt is in the debtor's ledger");
    // Account b's call, due today, was cancelled and planned again tomorrow.
    let cancelled = env
        .tasks
        .wait_for(1, WAIT, is("task.cancelled", "collection_call", b))
        .await;
    assert_eq!(cancelled.len(), 1, "b's call today is moved");
    let reason = cancelled[0]["data"]["cancel_reason"].as_str().unwrap_or("");
    assert!(reason.contains("3rd conversation"), "{reason}");
    let again = env
        .tasks
        .wait_for(2, WAIT, is("task.scheduled", "collection_call", b))
        .await;
    let moved = again.last().expect("a new call");
    let day = ts(&moved["data"]["due_at"]).to_zoned(tz.clone()).date();
    assert!(day > today, "b's call is on a later day, got {day}");
    // Every call of the debtor still open is due on a later day.
    let open: Vec<(String, String)> = sqlx::query_as(
        "SELECT account_id,
                to_char(due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM tasks
         WHERE account_id IN ($1, $2) AND status = 'scheduled' AND kind = 'collection_call'",
    )
    .bind(a)
    .bind(b)
    .fetch_all(&env.db)
    .await
    .expect("open calls");
    assert_eq!(open.len(), 2, "one call per account: {open:?}");
    for (account, due) in open {
        let due: Timestamp = due.parse().expect("instant");
        let d = due.to_zoned(tz.clone()).date();
        assert!(d > today, "{account}: call due {d}, not after {today}");
    }
    let journal = env.journal(a).await;
    assert!(
        journal
            .iter()
            .any(|(k, d)| k == "contact_attempted" && d.contains("3 conversation(s)")),
        "{journal:?}"
    );
}

#[tokio::test]
async fn a_correction_replaces_the_attempt_and_is_counted_once() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let (zone, tz) = zone_where_it_is(13);
    let due = Timestamp::now()
        .to_zoned(tz)
        .date()
        .checked_sub(2.days())
        .expect("date")
        .to_string();
    let acc = "acc-corr";
    env.publish("payment.failed", acc, payment_failed(acc, &zone, &due))
        .await;
    env.publish(
        "contact.attempted",
        acc,
        attempt(acc, acc, "att-1", "no_answer", "unknown"),
    )
    .await;
    env.wait_count(
        "SELECT count(*) FROM contact_attempts WHERE attempt->>'result' = 'no_answer'",
        1,
        WAIT,
    )
    .await;
    // The dialer corrects itself: the same attempt reached the debtor.
    env.publish(
        "contact.attempted",
        acc,
        attempt(acc, acc, "att-1", "connected", "debtor"),
    )
    .await;
    let connected = env
        .wait_count(
            "SELECT count(*) FROM contact_attempts WHERE attempt->>'result' = 'connected'",
            1,
            WAIT,
        )
        .await;
    assert_eq!(connected, 1);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM contact_attempts")
        .fetch_one(&env.db)
        .await
        .expect("count");
    assert_eq!(rows, 1, "a correction never doubles the attempt");
    let journal = env.journal(acc).await;
    assert!(
        journal.iter().any(|(_, d)| d.contains("a correction")),
        "{journal:?}"
    );
}

#[tokio::test]
async fn a_requested_callback_replaces_the_next_call_at_the_agreed_minute() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let (zone, tz) = zone_where_it_is(11);
    let due = Timestamp::now()
        .to_zoned(tz)
        .date()
        .checked_sub(2.days())
        .expect("date")
        .to_string();
    let acc = "acc-cb";
    env.publish("payment.failed", acc, payment_failed(acc, &zone, &due))
        .await;
    env.tasks
        .wait_for(1, WAIT, is("task.scheduled", "collection_call", acc))
        .await;
    let at = Timestamp::now()
        .checked_add(SignedDuration::from_hours(2))
        .expect("instant")
        .round(jiff::Unit::Second)
        .expect("round");
    let mut data = attempt(acc, acc, "att-cb", "connected", "debtor");
    data["contact_point_id"] = json!("cp-work-1");
    data["channel"] = json!("phone_work");
    data["disposition"] = json!("callback_requested");
    data["callback_at"] = json!(at);
    env.publish("contact.attempted", acc, data).await;
    let callbacks = env
        .tasks
        .wait_for(1, WAIT, is("task.scheduled", "callback", acc))
        .await;
    assert_eq!(callbacks.len(), 1, "a callback is planned");
    let d = &callbacks[0]["data"];
    assert_eq!(ts(&d["due_at"]), at, "at the minute the debtor asked for");
    assert_eq!(d["channel"], "phone_work");
    assert_eq!(d["contact_point_id"], "cp-work-1");
    let cancelled = env
        .tasks
        .wait_for(1, WAIT, is("task.cancelled", "collection_call", acc))
        .await;
    assert_eq!(cancelled.len(), 1, "the callback replaces the next call");
}

#[tokio::test]
async fn a_callback_without_its_time_is_dead_lettered_with_the_reason() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let mut data = attempt("acc-bad", "acc-bad", "att-bad", "connected", "debtor");
    data["disposition"] = json!("callback_requested");
    env.publish("contact.attempted", "acc-bad", data).await;
    let (props, _) = env
        .get_dead_letter("collections.contact-attempted", WAIT)
        .await
        .expect("a dead letter");
    let code = collections_bus::header_str(&props, "x-collections-error");
    assert_eq!(code.as_deref(), Some("invalid_value"));
    let detail =
        collections_bus::header_str(&props, "x-collections-error-detail").unwrap_or_default();
    assert!(detail.contains("callback_at"), "{detail}");
}
