//! Rows the store cannot read, written by SQL on a real Postgres (its own database per
//! test): each is a data error that names the account or task (the pipeline dead-letters
//! the event that needs it, reason `state`), never a transient error retried for ever and
//! never a default in its place. End to end, with the worker binary:
//! `tests/e2e/workers.rs` (`an_unreadable_account_dead_letters_its_event_and_the_queue_moves_on`).

use collections_core::{parse_event, Event, Policy, RejectCode};
use collections_store::{Outcome, Store, StoreError};
use jiff::Timestamp;
use uuid::Uuid;

mod common;
use common::{drop_store, store};

fn failed(account: &str, number: u32) -> Event {
    let body = serde_json::json!({
        "specversion": "1.0",
        "id": Uuid::new_v4().to_string(),
        "source": "/tests",
        "type": "payment.failed",
        "time": Timestamp::now().to_string(),
        "subject": account,
        "datacontenttype": "application/json",
        "data": {
            "account_id": account,
            "customer": {"timezone": "Asia/Shanghai"},
            "installment": {"number": number, "due_date": "2026-11-03",
                            "amount": {"minor": 125_000, "currency": "CNY"}},
            "overdue_amount": {"minor": 125_000, "currency": "CNY"},
            "failure_reason": "insufficient_funds",
            "attempted_at": Timestamp::now().to_string(),
        },
    });
    parse_event(body.to_string().as_bytes(), None).expect("valid event")
}

/// Applies the account's first failure (a state, an open call), then runs `corrupt` on the
/// database and applies a second failure of the same account: the error it returns.
async fn second_event_after(test: &str, corrupt: &str) -> StoreError {
    let store = store(test, 2).await;
    let policy = Policy::default();
    let first = store
        .apply_batch(&[failed("acc-1", 1)], &policy, Timestamp::now())
        .await
        .expect("first event applied");
    assert!(matches!(first.outcomes[0], Outcome::Applied(_)));
    sqlx::query(corrupt)
        .execute(store.pool())
        .await
        .expect("corrupt the rows");
    let err = store
        .apply_batch(&[failed("acc-1", 2)], &policy, Timestamp::now())
        .await
        .expect_err("the second event cannot be applied");
    assert_nothing_committed(&store).await;
    drop_store(store, test).await;
    err
}

async fn assert_nothing_committed(store: &Store) {
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(store.pool())
        .await
        .expect("inbox");
    assert_eq!(inbox, 1, "only the first event is recorded");
}

fn assert_state_error(err: &StoreError, names: &str) {
    assert!(
        matches!(err, StoreError::State(_)),
        "a stored-data error, not {err:?}"
    );
    assert!(err.is_data_error(), "never retried: {err}");
    assert_eq!(err.reject_reason(), Some(RejectCode::State));
    assert!(err.to_string().contains(names), "{err} names {names}");
}

#[tokio::test]
async fn an_account_state_that_does_not_parse_is_a_state_error() {
    let err = second_event_after(
        "state_unparsable",
        r#"UPDATE accounts SET state = '{"status": "on_the_moon"}' WHERE account_id = 'acc-1'"#,
    )
    .await;
    assert_state_error(&err, "account acc-1");
}

#[tokio::test]
async fn an_account_state_naming_an_unknown_zone_is_a_state_error_not_utc() {
    let err = second_event_after(
        "state_zone",
        "UPDATE accounts SET state = jsonb_set(state, '{timezone}', '\"Mars/Olympus_Mons\"')
         WHERE account_id = 'acc-1'",
    )
    .await;
    assert_state_error(&err, "account acc-1");
}

#[tokio::test]
async fn a_task_of_an_unknown_kind_is_a_state_error() {
    let err = second_event_after(
        "task_kind",
        "UPDATE tasks SET kind = 'carrier_pigeon' WHERE account_id = 'acc-1'",
    )
    .await;
    assert_state_error(&err, "carrier_pigeon");
}

#[tokio::test]
async fn a_task_priority_out_of_range_is_a_state_error_not_nine() {
    let err = second_event_after(
        "task_priority",
        "UPDATE tasks SET priority = -1 WHERE account_id = 'acc-1'",
    )
    .await;
    assert_state_error(&err, "priority -1");
}

#[tokio::test]
async fn a_claimed_task_of_an_unreadable_account_is_reported_not_fired_in_utc() {
    let test = "claim_unreadable";
    let store = store(test, 2).await;
    let policy = Policy::default();
    for account in ["acc-bad", "acc-good"] {
        store
            .apply_batch(&[failed(account, 1)], &policy, Timestamp::now())
            .await
            .expect("applied");
    }
    sqlx::query(
        "UPDATE tasks SET due_at = now() - interval '1 minute' WHERE kind = 'collection_call'",
    )
    .execute(store.pool())
    .await
    .expect("due now");
    sqlx::query(r#"UPDATE accounts SET state = '[]' WHERE account_id = 'acc-bad'"#)
        .execute(store.pool())
        .await
        .expect("corrupt");
    let claims = store
        .claim_due_tasks(Timestamp::now(), 10)
        .await
        .expect("the claim itself succeeds");
    let fired: Vec<&str> = claims
        .tasks
        .iter()
        .map(|c| c.task.account_id.as_str())
        .collect();
    assert_eq!(fired, ["acc-good"], "the readable account's call fires");
    assert_eq!(claims.unreadable.len(), 1, "the other is reported");
    assert_state_error(&claims.unreadable[0].1, "account acc-bad");
    drop_store(store, test).await;
}
