//! The inbox keys on CloudEvents' identity, `source` + `id`, on a real Postgres (its own
//! database per test).

use collections_core::{parse_event, Event, Policy};
use collections_store::Outcome;
use jiff::Timestamp;
use uuid::Uuid;

mod common;
use common::{drop_store, store};

fn failed(id: Uuid, source: &str, account: &str) -> Event {
    let body = serde_json::json!({
        "specversion": "1.0",
        "id": id.to_string(),
        "source": source,
        "type": "payment.failed",
        "time": Timestamp::now().to_string(),
        "subject": account,
        "datacontenttype": "application/json",
        "data": {
            "account_id": account,
            "customer": {"timezone": "Asia/Shanghai"},
            "installment": {"number": 1, "due_date": "2026-11-03",
                            "amount": {"minor": 125_000, "currency": "CNY"}},
            "overdue_amount": {"minor": 125_000, "currency": "CNY"},
            "failure_reason": "insufficient_funds",
            "attempted_at": Timestamp::now().to_string(),
        },
    });
    parse_event(body.to_string().as_bytes(), None).expect("valid event")
}

#[tokio::test]
async fn the_same_id_from_two_sources_is_two_events() {
    let test = "inbox_two_sources";
    let store = store(test, 2).await;
    let policy = Policy::default();
    let id = Uuid::new_v4();
    let from_billing = failed(id, "/billing/cn", "acc-a");
    let from_cards = failed(id, "/cards", "acc-b");
    // In one batch, and again in batches of their own (a redelivery of each).
    let both = store
        .apply_batch(
            &[from_billing.clone(), from_cards.clone()],
            &policy,
            Timestamp::now(),
        )
        .await
        .expect("applied");
    for o in &both.outcomes {
        assert!(
            matches!(o, Outcome::Applied(rows) if rows.len() == 1),
            "{o:?}"
        );
    }
    for again in [from_billing, from_cards] {
        let b = store
            .apply_batch(&[again], &policy, Timestamp::now())
            .await
            .expect("applied");
        assert!(
            matches!(b.outcomes[0], Outcome::Duplicate),
            "a redelivery is a duplicate"
        );
    }
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE event_id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .expect("inbox");
    assert_eq!(inbox, 2);
    let calls: Vec<String> = sqlx::query_scalar(
        "SELECT account_id FROM tasks WHERE cause_event_id = $1 AND kind = 'collection_call'
         ORDER BY account_id",
    )
    .bind(id)
    .fetch_all(store.pool())
    .await
    .expect("tasks");
    assert_eq!(calls, ["acc-a", "acc-b"], "each event planned its own call");
    drop_store(store, test).await;
}

#[tokio::test]
async fn an_id_recorded_before_the_inbox_knew_sources_stays_a_duplicate() {
    // Rows written before migration 0008 have the source '' and match any source.
    let test = "inbox_legacy";
    let store = store(test, 2).await;
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO inbox (event_id, source, event_type, account_id)
         VALUES ($1, '', 'payment.failed', 'acc-a')",
    )
    .bind(id)
    .execute(store.pool())
    .await
    .expect("a legacy row");
    let b = store
        .apply_batch(
            &[failed(id, "/billing/cn", "acc-a")],
            &Policy::default(),
            Timestamp::now(),
        )
        .await
        .expect("applied");
    assert!(
        matches!(b.outcomes[0], Outcome::Duplicate),
        "{:?}",
        b.outcomes[0]
    );
    drop_store(store, test).await;
}
