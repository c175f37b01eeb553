//! The schema check on a real Postgres: a binary runs against exactly its migrations, or a
//! newer schema that only expanded; it refuses an empty or older schema, and a newer one
//! that contracted past it, saying what to do.

use collections_store::{SchemaCheck, SchemaMismatch, Store, StoreError};

mod common;
use common::{drop_store, store};

async fn run(store: &Store, sql: &str) {
    sqlx::query(sql)
        .execute(store.pool())
        .await
        .expect("statement");
}

#[tokio::test]
async fn a_binary_refuses_a_schema_newer_than_it_knows_once_it_contracted() {
    let store = store("schema_newer", 2).await;
    let current = store.check_schema().await.expect("check");
    assert!(
        matches!(current, SchemaCheck::Current { .. }),
        "{current:?}"
    );

    // A later release expanded the schema: this binary still runs.
    run(
        &store,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99999, 'a future migration', true, '\\x00', 0)",
    )
    .await;
    let expanded = store.check_schema().await.expect("check");
    assert!(
        matches!(
            expanded,
            SchemaCheck::NewerCompatible { applied: 99999, .. }
        ),
        "{expanded:?}"
    );
    // and its collectionsctl migrate has nothing to apply.
    store.migrate().await.expect("nothing to do");

    // It contracted: this binary must not run, nor migrate.
    run(&store, "UPDATE schema_compat SET oldest_compatible = 99999").await;
    let refused = store.check_schema().await.expect_err("refused");
    let message = refused.to_string();
    assert!(
        matches!(
            refused,
            StoreError::Schema(SchemaMismatch::Newer {
                applied: 99999,
                oldest_compatible: 99999,
                ..
            })
        ),
        "{refused:?}"
    );
    assert!(
        message.contains("newer than this binary knows")
            && message.contains("deploy the newer release"),
        "{message}"
    );
    assert!(matches!(
        store.migrate().await,
        Err(StoreError::Schema(SchemaMismatch::Newer { .. }))
    ));
    drop_store(store, "schema_newer").await;
}

#[tokio::test]
async fn a_binary_refuses_an_older_schema_until_it_is_migrated() {
    let store = store("schema_older", 2).await;
    run(
        &store,
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .await;
    let refused = store.check_schema().await.expect_err("refused");
    assert!(
        matches!(refused, StoreError::Schema(SchemaMismatch::Older { ref missing, .. }) if missing.len() == 1),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("collectionsctl migrate"));

    // An empty database says so too.
    let mut admin = store.pool().acquire().await.expect("conn");
    sqlx::query("DROP TABLE _sqlx_migrations")
        .execute(&mut *admin)
        .await
        .expect("drop");
    drop(admin);
    assert!(matches!(
        store.check_schema().await,
        Err(StoreError::Schema(SchemaMismatch::Empty))
    ));
    drop_store(store, "schema_older").await;
}
