//! Set-up shared by the store's tests: each test gets a fresh, migrated database of its
//! own on the Postgres of `DATABASE_URL`, so tests run in parallel.

use collections_store::Store;
use sqlx::{Connection, PgConnection};

/// The server to create test databases on (its `postgres` database).
fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The name of `test`'s own database.
fn db_name(test: &str) -> String {
    format!("store_test_{test}")
}

/// The URL of `test`'s own database.
pub fn test_url(test: &str) -> String {
    let url = admin_url();
    let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
    format!("{base}/{}", db_name(test))
}

/// A fresh, migrated database named after `test`, on a pool of `connections` (see
/// [`drop_store`]).
pub async fn store(test: &str, connections: u32) -> Store {
    let name = db_name(test);
    let mut admin = PgConnection::connect(&admin_url()).await.expect("postgres");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create");
    let store = Store::connect(&test_url(test), connections)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store
}

/// Drops the test's database; one a failed test left is dropped by the next run's
/// [`store`].
pub async fn drop_store(store: Store, test: &str) {
    store.pool().close().await;
    let mut admin = PgConnection::connect(&admin_url()).await.expect("postgres");
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        db_name(test)
    ))
    .execute(&mut admin)
    .await
    .expect("drop");
}
