//! Migrations are a release step: a binary checks the schema at start and refuses, with a
//! message that says what to do, to run against one it cannot use.

use std::time::Duration;

use crate::harness::TestEnv;

/// Waits for a binary to exit by itself and returns its log.
async fn exits_by_itself(env: &TestEnv, bin: &str, log_name: &str) -> (bool, String) {
    let mut child = env.start(bin, &[], log_name);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap_or_else(|_| panic!("{bin} kept running: {}", env.log(log_name)))
        .expect("wait");
    (status.success(), env.log(log_name))
}

#[tokio::test]
async fn a_binary_refuses_to_start_against_a_schema_newer_than_it_knows() {
    let env = TestEnv::new().await;
    // A later release applied a migration that contracts the schema: binaries that do not
    // know it must not run.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99999, 'a future contract', true, '\\x00', 0)",
    )
    .execute(&env.db)
    .await
    .expect("future migration");
    sqlx::query("UPDATE schema_compat SET oldest_compatible = 99999")
        .execute(&env.db)
        .await
        .expect("contract");
    for bin in ["task-scheduler", "payment-failed-worker"] {
        let (ok, log) = exits_by_itself(&env, bin, &format!("{bin}-newer")).await;
        assert!(!ok, "{bin} must exit with an error: {log}");
        assert!(
            log.contains("is newer than this binary knows") && log.contains("99999"),
            "{bin} says why: {log}"
        );
    }
}

#[tokio::test]
async fn a_binary_refuses_to_start_against_a_schema_older_than_it_and_says_to_migrate() {
    let env = TestEnv::new().await;
    // The release's migrations were not applied yet (the latest is missing).
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&env.db)
    .await
    .expect("unapply");
    let (ok, log) = exits_by_itself(&env, "promise-made-worker", "older").await;
    assert!(!ok, "must exit with an error: {log}");
    assert!(
        log.contains("older than this binary") && log.contains("collectionsctl migrate"),
        "says to migrate: {log}"
    );
}

#[tokio::test]
async fn a_newer_schema_that_only_expanded_is_accepted() {
    let mut env = TestEnv::new().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99999, 'a future expansion', true, '\\x00', 0)",
    )
    .execute(&env.db)
    .await
    .expect("future migration");
    env.spawn("task-scheduler").await;
    let started = async {
        loop {
            let log = env.log("task-scheduler-0");
            if log.contains("scheduling") || log.contains("refusing") {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let log = tokio::time::timeout(Duration::from_secs(30), started)
        .await
        .unwrap_or_else(|_| env.log("task-scheduler-0"));
    assert!(log.contains("scheduling"), "runs: {log}");
    assert!(
        log.contains("newer than this binary and compatible"),
        "{log}"
    );
}
