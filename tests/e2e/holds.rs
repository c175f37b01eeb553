//! Holds and contact restrictions end to end: what a hold stops, its review, the release,
//! restrictions moving tasks to another channel, and the scheduler refusing to fire a
//! task into a hold.

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

/// A delinquent account with its first call planned now (no scheduler running).
async fn delinquent(env: &TestEnv, account: &str) -> jiff::tz::TimeZone {
    let (zone, tz) = zone_where_it_is(13);
    let due = Timestamp::now()
        .to_zoned(tz.clone())
        .date()
        .checked_sub(4.days())
        .expect("date")
        .to_string();
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
    tz
}

#[tokio::test]
async fn a_dispute_hold_stops_contact_plans_its_review_and_its_release_resumes_calls() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let acc = "acc-hold";
    delinquent(&env, acc).await;
    let review_at = (Timestamp::now() + SignedDuration::from_hours(24 * 30))
        .round(jiff::Unit::Second)
        .expect("round");
    env.publish(
        "hold.placed",
        acc,
        json!({
            "account_id": acc,
            "hold_id": "hold-1",
            "reason": "dispute",
            "scope": "all",
            "placed_at": Timestamp::now(),
            "review_at": review_at,
            "placed_by": "desk-3",
            "case_ref": "case-77",
        }),
    )
    .await;
    let cancelled = env
        .tasks
        .wait_for(1, WAIT, is("task.cancelled", "collection_call", acc))
        .await;
    assert_eq!(cancelled.len(), 1, "the open call is cancelled");
    assert_eq!(cancelled[0]["data"]["cancel_reason"], "hold:dispute");
    let reviews = env
        .tasks
        .wait_for(1, WAIT, is("task.scheduled", "hold_review", acc))
        .await;
    assert_eq!(reviews.len(), 1, "a review is planned");
    assert_eq!(ts(&reviews[0]["data"]["due_at"]), review_at);
    assert_eq!(reviews[0]["data"]["channel"], "none");
    assert_eq!(reviews[0]["data"]["account"]["holds"], json!(["dispute"]));
    // A payment is still applied while held (it lowers the overdue), and plans no call.
    env.publish(
        "payment.received",
        acc,
        json!({
            "account_id": acc,
            "payment_id": "pay-1",
            "amount": cny(50_000),
            "received_at": Timestamp::now(),
            "overdue_amount_after": cny(100_000),
        }),
    )
    .await;
    let overdue = env
        .wait_count(
            &format!("SELECT overdue_minor FROM accounts WHERE account_id = '{acc}'"),
            100_000,
            WAIT,
        )
        .await;
    assert_eq!(overdue, 100_000, "the payment is applied during the hold");
    let open_calls: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE account_id = $1 AND status = 'scheduled'
           AND kind = 'collection_call'",
    )
    .bind(acc)
    .fetch_one(&env.db)
    .await
    .expect("count");
    assert_eq!(
        open_calls, 0,
        "no call is planned while the hold is in force"
    );
    // Released: the review is cancelled and a call planned at once (inside the window).
    env.publish(
        "hold.released",
        acc,
        json!({
            "account_id": acc,
            "hold_id": "hold-1",
            "outcome": "resolved",
            "released_at": Timestamp::now(),
            "released_by": "desk-3",
        }),
    )
    .await;
    let review_gone = env
        .tasks
        .wait_for(1, WAIT, is("task.cancelled", "hold_review", acc))
        .await;
    assert_eq!(review_gone.len(), 1, "the review is cancelled");
    let calls = env
        .tasks
        .wait_for(2, WAIT, is("task.scheduled", "collection_call", acc))
        .await;
    assert_eq!(calls.len(), 2, "calls resume after the release");
    let due = ts(&calls[1]["data"]["due_at"]);
    assert!(due <= Timestamp::now(), "at the next allowed minute: {due}");
    let journal = env.journal(acc).await;
    assert!(
        journal.iter().any(|(k, _)| k == "hold_placed"),
        "{journal:?}"
    );
    assert!(
        journal.iter().any(|(k, _)| k == "hold_released"),
        "{journal:?}"
    );
}

#[tokio::test]
async fn a_release_that_arrives_before_its_hold_leaves_the_hold_recorded_and_not_in_force() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let acc = "acc-order";
    delinquent(&env, acc).await;
    let placed = Timestamp::now() - SignedDuration::from_mins(10);
    let released = Timestamp::now() - SignedDuration::from_mins(5);
    env.publish(
        "hold.released",
        acc,
        json!({"account_id": acc, "hold_id": "hold-x", "outcome": "withdrawn",
               "released_at": released, "released_by": "desk-1"}),
    )
    .await;
    env.wait_count(
        "SELECT count(*) FROM journal WHERE kind = 'event_applied' AND detail LIKE '%hold-x%'",
        1,
        WAIT,
    )
    .await;
    env.publish(
        "hold.placed",
        acc,
        json!({"account_id": acc, "hold_id": "hold-x", "reason": "complaint", "scope": "all",
               "placed_at": placed, "placed_by": "desk-1"}),
    )
    .await;
    let placed_rows = env
        .wait_count(
            "SELECT count(*) FROM journal WHERE kind = 'hold_placed'",
            1,
            WAIT,
        )
        .await;
    assert_eq!(placed_rows, 1);
    // The call planned before either event is still open, and no review was planned.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancelled = env
        .tasks
        .all()
        .into_iter()
        .filter(is("task.cancelled", "collection_call", acc))
        .count();
    assert_eq!(cancelled, 0, "a hold already released stops nothing");
    let reviews = env
        .tasks
        .all()
        .into_iter()
        .filter(is("task.scheduled", "hold_review", acc))
        .count();
    assert_eq!(reviews, 0, "no review for a released hold");
}

#[tokio::test]
async fn a_do_not_call_on_the_mobile_moves_the_open_call_to_another_phone() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let acc = "acc-dnc";
    delinquent(&env, acc).await;
    env.publish(
        "contact.restricted",
        acc,
        json!({"account_id": acc, "restriction_id": "r-1", "kind": "do_not_call",
               "channel": "phone_mobile", "effective_at": Timestamp::now(),
               "source": "complaints-desk"}),
    )
    .await;
    let cancelled = env
        .tasks
        .wait_for(1, WAIT, is("task.cancelled", "collection_call", acc))
        .await;
    assert_eq!(cancelled.len(), 1);
    assert_eq!(
        cancelled[0]["data"]["cancel_reason"],
        "restriction:do_not_call:phone_mobile"
    );
    let calls = env
        .tasks
        .wait_for(2, WAIT, is("task.scheduled", "collection_call", acc))
        .await;
    let again = &calls.last().expect("planned again")["data"];
    assert_ne!(again["channel"], "phone_mobile", "{again}");
    assert_eq!(again["account"]["restrictions"], json!(["do_not_call"]));
}

#[tokio::test]
async fn the_scheduler_never_fires_a_task_into_a_hold_it_finds_at_firing_time() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let acc = "acc-fire-hold";
    delinquent(&env, acc).await;
    // A hold that reached the account's state after the call was planned, the plan not
    // yet revised (written directly, as a hold applied a moment before the firing would
    // be): the scheduler must cancel, not fire.
    sqlx::query(
        "UPDATE accounts SET state = jsonb_set(state, '{holds}', jsonb_build_array(
             jsonb_build_object('hold_id', 'h-late', 'reason', 'bankruptcy',
                                'scope', jsonb_build_array('letter'),
                                'placed_at', to_json(now() - interval '1 minute'))))
         WHERE account_id = $1",
    )
    .bind(acc)
    .execute(&env.db)
    .await
    .expect("hold in the state");
    env.spawn("task-scheduler").await;
    let cancelled = env
        .tasks
        .wait_for(1, WAIT, is("task.cancelled", "collection_call", acc))
        .await;
    assert_eq!(cancelled.len(), 1, "cancelled at firing time");
    assert_eq!(cancelled[0]["data"]["cancel_reason"], "hold:bankruptcy");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fired = env
        .tasks
        .all()
        .into_iter()
        .filter(is("task.due", "collection_call", acc))
        .count();
    assert_eq!(fired, 0, "never fired into the hold");
    let status: String = sqlx::query_scalar(
        "SELECT status FROM tasks WHERE account_id = $1 AND kind = 'collection_call'",
    )
    .bind(acc)
    .fetch_one(&env.db)
    .await
    .expect("status");
    assert_eq!(status, "cancelled");
}
