//! What the check reads from the database, and whether the system has settled.

use std::collections::{HashMap, HashSet};

use collections_core::TaskKind;
use jiff::Timestamp;
use uuid::Uuid;

use super::{
    observed::{expiry_event_id, uuid, TaskRow},
    Expect,
};
use crate::harness::TestEnv;

pub async fn tasks(env: &TestEnv) -> HashMap<Uuid, TaskRow> {
    let rows: Vec<(Uuid, String, String, String, i64, i32)> = sqlx::query_as(
        "SELECT task_id, account_id, kind, status,
                (extract(epoch FROM due_at) * 1000000)::bigint, attempt
         FROM tasks",
    )
    .fetch_all(&env.db)
    .await
    .expect("tasks");
    rows.into_iter()
        .map(|(id, account, kind, status, due, attempt)| {
            (
                id,
                TaskRow {
                    account,
                    kind,
                    status,
                    due_at: Timestamp::from_microsecond(due).expect("due_at"),
                    attempt,
                },
            )
        })
        .collect()
}

pub fn internal(kind: &str) -> bool {
    kind.parse::<TaskKind>().is_ok_and(TaskKind::is_internal)
}

pub async fn ids(env: &TestEnv, sql: &str) -> HashSet<Uuid> {
    sqlx::query_scalar::<_, Uuid>(sql)
        .fetch_all(&env.db)
        .await
        .expect("ids")
        .into_iter()
        .collect()
}

pub async fn count(env: &TestEnv, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&env.db)
        .await
        .expect("count")
}

/// What is still in flight; empty when the system has settled.
pub async fn pending(env: &TestEnv, expect: &Expect<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let inbox = ids(env, "SELECT event_id FROM inbox").await;
    let missing = expect.inputs.iter().filter(|i| !inbox.contains(i)).count();
    if missing > 0 {
        out.push(format!("{missing} inputs not applied yet"));
    }
    let unpublished = count(env, "SELECT count(*) FROM outbox_pending").await;
    if unpublished > 0 {
        out.push(format!("{unpublished} outbox rows unpublished"));
    }
    let received: HashSet<Uuid> = env
        .tasks
        .all()
        .iter()
        .filter_map(|e| uuid(&e["id"]))
        .collect();
    let outbox = ids(env, super::TASK_OUTBOX).await;
    let unseen = outbox.difference(&received).count();
    if unseen > 0 {
        out.push(format!("{unseen} outbox rows not received"));
    }
    if expect.scheduler {
        let horizon = expect
            .horizon
            .unwrap_or_else(Timestamp::now)
            .as_microsecond();
        let in_flight: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tasks WHERE status = 'claimed'
                OR (status = 'scheduled'
                    AND due_at <= greatest(now(), to_timestamp($1::float8 / 1000000)))",
        )
        .bind(horizon)
        .fetch_one(&env.db)
        .await
        .expect("count");
        if in_flight > 0 {
            out.push(format!(
                "{in_flight} tasks claimed, or due before the horizon and not fired"
            ));
        }
        let due: HashSet<Uuid> = env
            .tasks
            .all()
            .iter()
            .filter(|e| e["type"] == "task.due")
            .filter_map(|e| uuid(&e["data"]["task_id"]))
            .collect();
        let mut unannounced = 0;
        let mut unapplied = 0;
        for (id, t) in tasks(env).await {
            if t.status != "emitted" {
                continue;
            }
            if t.kind == super::PROMISE_EXPIRY {
                unapplied += usize::from(!inbox.contains(&expiry_event_id(id)));
            } else if !internal(&t.kind) {
                unannounced += usize::from(!due.contains(&id));
            }
        }
        if unannounced > 0 {
            out.push(format!(
                "{unannounced} emitted tasks without task.due received"
            ));
        }
        if unapplied > 0 {
            out.push(format!("{unapplied} expiries not applied yet"));
        }
    }
    out
}
