//! The accounts table keeps room on its pages for the next version of a row, so that the
//! state update every event and every fired task makes is a HOT update (no new entry in
//! `accounts_pkey`). On real Postgres.

mod common;

use common::{drop_store, store};

#[tokio::test]
async fn an_account_state_update_on_a_filled_page_stays_on_its_page() {
    let store = store("accounts_hot", 1).await;
    let db = store.pool();
    // Accounts as a live table holds them, state written: enough rows to fill the first
    // pages as far as the table lets inserts fill them.
    sqlx::query(
        "INSERT INTO accounts (account_id, state, status)
         SELECT 'acc-' || g, jsonb_build_object('account_id', 'acc-' || g, 'pad', repeat('x', 300)),
                'delinquent'
         FROM generate_series(1, 400) g",
    )
    .execute(db)
    .await
    .expect("insert");
    let (first, block): (String, String) = sqlx::query_as(
        "SELECT account_id, (ctid::text::point)[0]::text FROM accounts
         WHERE (ctid::text::point)[0] = 0 ORDER BY ctid LIMIT 1",
    )
    .fetch_one(db)
    .await
    .expect("first row");
    let page_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM accounts WHERE (ctid::text::point)[0] = 0")
            .fetch_one(db)
            .await
            .expect("rows on the first page");
    assert!(page_rows > 5, "the first page holds {page_rows} rows");

    // The next state of the account, the same size: in one transaction, so the
    // transaction's own statistics say whether the update was HOT.
    let mut tx = db.begin().await.expect("begin");
    sqlx::query(
        "UPDATE accounts SET state = jsonb_set(state, '{pad}', to_jsonb(repeat('y', 300))),
                             updated_at = now()
         WHERE account_id = $1",
    )
    .bind(&first)
    .execute(&mut *tx)
    .await
    .expect("update");
    let (hot, now_on): (i64, String) = sqlx::query_as(
        "SELECT pg_stat_get_xact_tuples_hot_updated('accounts'::regclass),
                (ctid::text::point)[0]::text
         FROM accounts WHERE account_id = $1",
    )
    .bind(&first)
    .fetch_one(&mut *tx)
    .await
    .expect("after the update");
    tx.commit().await.expect("commit");
    assert_eq!(now_on, block, "the new version left its page");
    assert_eq!(hot, 1, "the update was not HOT");
    drop_store(store, "accounts_hot").await;
}
