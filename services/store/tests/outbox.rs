//! The outbox on a real Postgres (its own database per test): a row is leased to its
//! writer, claimed by a relay only once the lease runs out, and gone from the relays' view
//! once marked published; and a relay's scan never reads the published history.

use collections_core::outbound::OutboundMessage;
use collections_store::{insert_outbox, OutboxRow, Store};
use uuid::Uuid;

mod common;
use common::{drop_store, store};

fn message(n: usize) -> OutboundMessage {
    let id = Uuid::new_v4();
    let body = serde_json::json!({
        "specversion": "1.0", "id": id, "source": "collections", "type": "task.scheduled",
        "subject": format!("acc-{n}"),
        "data": {"task_id": Uuid::new_v4(), "kind": "collection_call",
                 "reason": "a body of about the size of a real task event ".repeat(8)},
    });
    OutboundMessage {
        event_id: id,
        exchange: "collections.tasks",
        routing_key: "task.scheduled.collection_call".to_owned(),
        account_id: format!("acc-{n}"),
        body: serde_json::to_vec(&body).expect("json"),
    }
}

async fn write(store: &Store, messages: &[OutboundMessage]) -> Vec<OutboxRow> {
    let mut tx = store.pool().begin().await.expect("begin");
    let rows = insert_outbox(&mut tx, messages.iter(), 40.0)
        .await
        .expect("insert");
    tx.commit().await.expect("commit");
    rows
}

/// Ends every lease, as if the writers had died more than a lease ago.
async fn expire_leases(store: &Store) {
    sqlx::query("UPDATE outbox_pending SET lease_until = now() - interval '1 second'")
        .execute(store.pool())
        .await
        .expect("expire");
}

fn ids(rows: &[OutboxRow]) -> Vec<i64> {
    rows.iter().map(|r| r.id).collect()
}

#[tokio::test]
async fn a_row_is_claimed_only_after_its_lease_and_never_once_published() {
    let store = store("outbox_lease", 2).await;
    let messages: Vec<OutboundMessage> = (0..3).map(message).collect();
    let written = write(&store, &messages).await;
    assert_eq!(written.len(), 3);
    assert_eq!(store.outbox_backlog().await.expect("backlog"), 3);

    // Leased to the writer: no relay takes them while it may still publish them itself.
    assert!(store
        .claim_stale_outbox(10)
        .await
        .expect("claim")
        .is_empty());

    expire_leases(&store).await;
    let claimed = store.claim_stale_outbox(10).await.expect("claim");
    assert_eq!(
        ids(&claimed),
        ids(&written),
        "oldest first, every stale row"
    );
    for (c, m) in claimed.iter().zip(&messages) {
        assert_eq!(c.event_id, m.event_id);
        assert_eq!(c.routing_key, m.routing_key);
        let body: serde_json::Value = serde_json::from_slice(&c.body).expect("body");
        assert_eq!(body, m.json(), "the body as written");
    }
    // Claiming leases them again: a second relay does not publish them too.
    assert!(store
        .claim_stale_outbox(10)
        .await
        .expect("claim")
        .is_empty());

    assert_eq!(
        store.mark_published(&claimed[..2]).await.expect("mark"),
        0,
        "the relay holds the rows it marks"
    );
    assert_eq!(store.outbox_backlog().await.expect("backlog"), 1);
    expire_leases(&store).await;
    let claimed = store.claim_stale_outbox(10).await.expect("claim");
    assert_eq!(
        ids(&claimed),
        ids(&written)[2..],
        "only the unpublished row"
    );

    // Writing the same messages again (a redelivered batch) adds nothing to publish.
    assert!(write(&store, &messages).await.is_empty());
    assert_eq!(store.outbox_backlog().await.expect("backlog"), 1);
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(kept, 3, "published rows stay in the outbox as history");
    drop_store(store, "outbox_lease").await;
}

#[tokio::test]
async fn a_writers_late_mark_leaves_the_rows_a_relay_took_over_to_the_relay() {
    let store = store("outbox_fenced", 2).await;
    let messages: Vec<OutboundMessage> = (0..3).map(message).collect();
    let written = write(&store, &messages).await;
    // The writer waited on the broker longer than its lease: a relay took the rows over.
    expire_leases(&store).await;
    let relayed = store.claim_stale_outbox(10).await.expect("claim");
    assert_eq!(ids(&relayed), ids(&written));
    assert!(relayed.iter().all(|r| r.lease == 1), "the relay's lease");

    // The writer's confirms come in at last: its mark counts the rows as lost and leaves
    // them to the relay, which is still publishing them.
    assert_eq!(store.mark_published(&written).await.expect("mark"), 3);
    assert_eq!(store.outbox_backlog().await.expect("backlog"), 3);
    assert_eq!(store.mark_published(&relayed).await.expect("mark"), 0);
    assert_eq!(store.outbox_backlog().await.expect("backlog"), 0);
    drop_store(store, "outbox_fenced").await;
}

/// Heap and index blocks of `table` read or found in shared buffers so far.
async fn blocks(db: &sqlx::PgPool, table: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(heap_blks_read + heap_blks_hit, 0)
              + coalesce(idx_blks_read + idx_blks_hit, 0)
         FROM pg_statio_user_tables WHERE relname = $1",
    )
    .bind(table)
    .fetch_one(db)
    .await
    .expect("statio")
}

#[tokio::test]
async fn the_relays_scan_never_reads_the_published_history() {
    // One connection, so the claims and the statistics flush happen on the same session.
    let store = store("outbox_history", 1).await;
    let messages: Vec<OutboundMessage> = (0..5_000).map(message).collect();
    let mut written = Vec::new();
    for chunk in messages.chunks(500) {
        written.extend(write(&store, chunk).await);
    }
    // Published longer ago than a lease: the rows a relay's scan passes by are exactly
    // those whose leases ran out.
    expire_leases(&store).await;
    store.mark_published(&written).await.expect("mark");
    let outbox_pages: i64 = sqlx::query_scalar(
        "SELECT pg_relation_size('outbox') / current_setting('block_size')::int",
    )
    .fetch_one(store.pool())
    .await
    .expect("size");
    assert!(outbox_pages >= 400, "history of {outbox_pages} pages");

    let flush = || async {
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(store.pool())
            .await
            .expect("flush");
        // The flush happens when the session goes idle after that statement.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    flush().await;
    let before = blocks(store.pool(), "outbox").await;
    for _ in 0..3 {
        assert!(store
            .claim_stale_outbox(500)
            .await
            .expect("claim")
            .is_empty());
    }
    flush().await;
    let read = blocks(store.pool(), "outbox").await - before;
    // Before migration 0005 each scan visited the dead copy of every published row
    // (hundreds of pages here, 10,600 in the benchmark).
    assert_eq!(read, 0, "blocks of the outbox read by three empty claims");

    // The counters do move: a claim that finds a stale row reads its body.
    let stale = write(&store, &[message(5_000)]).await;
    expire_leases(&store).await;
    flush().await;
    let before = blocks(store.pool(), "outbox").await;
    let claimed = store.claim_stale_outbox(500).await.expect("claim");
    assert_eq!(ids(&claimed), ids(&stale));
    flush().await;
    assert!(
        blocks(store.pool(), "outbox").await > before,
        "the body was read"
    );
    drop_store(store, "outbox_history").await;
}
