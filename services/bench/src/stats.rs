//! Postgres's and the broker's own statistics, read around a phase: settings, WAL,
//! checkpoints, sequential scans, HOT updates, and the broker's quorum-queue WAL file.

use std::{path::Path, time::Duration};

use sqlx::PgPool;

/// Checkpoints Postgres has counted (timed and requested), from its statistics view
/// (Postgres 15 and 16; `-1` where the view differs).
pub const CHECKPOINTS_SQL: &str =
    "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter";

/// Full-page images Postgres has written to its WAL (Postgres 14 and later).
pub const WAL_FPI_SQL: &str = "SELECT wal_fpi FROM pg_stat_wal";

/// Postgres's current WAL position in bytes.
pub const WAL_LSN_SQL: &str = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint";

/// The newest write-ahead log file of the local broker's quorum queues, if its data
/// directory is readable. RabbitMQ starts a new file every `raft.wal_max_size_bytes`
/// (512 MiB by default) and then writes the old one out to segment files: on these two
/// cores that burst shows as a second of higher latency, so a run reports whether one fell
/// inside its latency phase.
pub fn broker_wal(base: &Path) -> Option<String> {
    let mut newest: Option<String> = None;
    for node in std::fs::read_dir(base).ok()?.flatten() {
        let Ok(nodes) = std::fs::read_dir(node.path().join("quorum")) else {
            continue;
        };
        for dir in nodes.flatten() {
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.path().display().to_string();
                if name.ends_with(".wal") && newest.as_ref().is_none_or(|n| name > *n) {
                    newest = Some(name);
                }
            }
        }
    }
    newest
}

/// The Postgres settings the figures depend on most, printed with every run: the same
/// binaries on the same machine give other figures when these differ (BENCHMARKS.md).
pub async fn server_settings(db: &PgPool) -> anyhow::Result<String> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, current_setting(name) FROM unnest(ARRAY['server_version',
             'shared_buffers', 'synchronous_commit', 'wal_compression', 'autovacuum']) name",
    )
    .fetch_all(db)
    .await?;
    let list: Vec<String> = rows.iter().map(|(k, v)| format!("{k} {v}")).collect();
    Ok(format!("Postgres: {}", list.join(", ")))
}

/// Sequential scans and rows they read per table so far (the statistics are cumulative;
/// the benchmark's own count(*) polls read `inbox` and `outbox`).
pub async fn seq_scans(db: &PgPool) -> anyhow::Result<String> {
    // Let the statistics collector catch up.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, seq_scan, seq_tup_read FROM pg_stat_user_tables
         WHERE relname IN ('inbox', 'accounts', 'tasks', 'journal', 'outbox') ORDER BY relname",
    )
    .fetch_all(db)
    .await?;
    let indexes: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT indexrelname::text, idx_scan, idx_tup_read FROM pg_stat_user_indexes
         WHERE relname = 'tasks' ORDER BY indexrelname",
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .iter()
        .map(|(t, n, r)| format!("{t} {n}/{r}"))
        .chain(
            indexes
                .iter()
                .map(|(i, n, r)| format!("index {i}: {n} scans/{r} entries")),
        )
        .collect::<Vec<_>>()
        .join(", "))
}

/// Updates so far that were HOT (no new index entries), per table that the batches update.
pub async fn hot_updates(db: &PgPool) -> anyhow::Result<String> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
         WHERE relname IN ('accounts', 'tasks') ORDER BY relname",
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .iter()
        .map(|(t, upd, hot)| {
            format!(
                "{t} {hot} of {upd} ({:.0} %)",
                *hot as f64 * 100.0 / (*upd).max(1) as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", "))
}
