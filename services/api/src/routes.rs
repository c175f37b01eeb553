//! The JSON handlers: tasks, accounts, journals, figures, health and metrics.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Path, RawQuery, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use collections_core::task::{Channel, TaskKind, Tone};
use collections_store::read::{ReadState, TaskFilter};
use jiff::Timestamp;
use lapin::options::QueueDeclareOptions;
use serde_json::{json, Value};

use crate::{
    error::{ApiError, ErrorBody},
    model::{
        AccountBody, DeadLetterReason, HourCount, JournalItem, JournalPage, KindCount, QueueCount,
        Stats, TaskPage,
    },
    params::{make_task_cursor, task_cursor, Params},
    App,
};

/// Default page size.
const DEFAULT_LIMIT: i64 = 100;
/// Largest page.
const MAX_LIMIT: i64 = 1000;
/// Rows examined per page at most when filtering by bucket (computed per row): a page
/// may come back short, with a cursor, rather than scan without end.
const BUCKET_SCAN: i64 = 5000;

/// Buckets as task events name them.
const BUCKETS: [&str; 5] = ["M0", "M1", "M2", "M3", "M3+"];

fn parsed<T: std::str::FromStr>(
    p: &Params,
    name: &'static str,
) -> Result<Option<String>, ApiError> {
    match p.get(name) {
        None => Ok(None),
        Some(v) if v.parse::<T>().is_ok() => Ok(Some(v.to_owned())),
        Some(v) => Err(ApiError::bad(name, format!("{v:?} is not a known {name}"))),
    }
}

/// Tasks, filtered, by due instant.
#[utoipa::path(
    get,
    path = "/v1/tasks",
    tag = "tasks",
    params(
        ("state" = Option<String>, Query, description = "scheduled, due or cancelled"),
        ("kind" = Option<String>, Query, description = "task kind, e.g. collection_call"),
        ("channel" = Option<String>, Query, description = "channel, e.g. phone_mobile"),
        ("bucket" = Option<String>, Query, description = "M0, M1, M2, M3 or M3+ (the account's bucket now)"),
        ("priority" = Option<i64>, Query, description = "1 (most urgent) to 9"),
        ("tone" = Option<String>, Query, description = "gentle, firm or serious"),
        ("account_id" = Option<String>, Query, description = "one account"),
        ("due_after" = Option<String>, Query, description = "RFC 3339 instant: due_at at or after it"),
        ("due_before" = Option<String>, Query, description = "RFC 3339 instant: due_at before it"),
        ("limit" = Option<i64>, Query, description = "1-1000, default 100"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of tasks", body = TaskPage),
        (status = 400, description = "A bad parameter, named", body = ErrorBody),
        (status = 401, description = "API_TOKEN set and no or a wrong bearer token", body = ErrorBody),
    )
)]
pub async fn tasks(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
) -> Result<Json<TaskPage>, ApiError> {
    let p = Params::parse(
        query.as_deref(),
        &[
            "state",
            "kind",
            "channel",
            "bucket",
            "priority",
            "tone",
            "account_id",
            "due_after",
            "due_before",
            "limit",
            "cursor",
            "access_token",
        ],
    )?;
    let state = p
        .one_of("state", &["scheduled", "due", "cancelled"])?
        .and_then(|s| s.parse::<ReadState>().ok());
    let bucket = p.one_of("bucket", &BUCKETS)?;
    let limit = p.int("limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
    let mut filter = TaskFilter {
        state,
        kind: parsed::<TaskKind>(&p, "kind")?,
        channel: parsed::<Channel>(&p, "channel")?,
        priority: p
            .int("priority", 0, 255)?
            .and_then(|n| i16::try_from(n).ok()),
        tone: parsed::<Tone>(&p, "tone")?,
        account_id: p.text("account_id")?,
        due_after: p.instant("due_after")?,
        due_before: p.instant("due_before")?,
        after: p.get("cursor").map(task_cursor).transpose()?,
    };
    let now = Timestamp::now();
    let limit_n = usize::try_from(limit).unwrap_or(100);
    let Some(bucket) = bucket else {
        // One query is the page; one row more tells whether another page follows.
        let mut rows = app.store.read_tasks(&filter, limit + 1, now).await?;
        let more = rows.len() > limit_n;
        rows.truncate(limit_n);
        let next_cursor = more
            .then(|| rows.last().map(|r| make_task_cursor(r.due_at, r.task_id)))
            .flatten();
        let items = rows.into_iter().map(with_zone).collect();
        return Ok(Json(TaskPage { items, next_cursor }));
    };
    // The bucket is the account's now, computed from its state per row: rows are read in
    // chunks until the page is full, the rows run out, or BUCKET_SCAN rows were looked at
    // (then the page comes back short, with a cursor to go on from).
    let chunk = (limit * 2).clamp(200, MAX_LIMIT);
    let mut items = Vec::new();
    let mut scanned = 0;
    let next_cursor = loop {
        let rows = app.store.read_tasks(&filter, chunk, now).await?;
        let exhausted = i64::try_from(rows.len()).unwrap_or(0) < chunk;
        let mut full = false;
        for r in rows {
            scanned += 1;
            filter.after = Some((r.due_at, r.task_id));
            if r.bucket.as_deref() == Some(bucket.as_str()) {
                items.push(with_zone(r));
                if items.len() == limit_n {
                    full = true;
                    break;
                }
            }
        }
        if full || (!exhausted && scanned >= BUCKET_SCAN) {
            break filter.after.map(|(at, id)| make_task_cursor(at, id));
        }
        if exhausted {
            break None;
        }
    };
    Ok(Json(TaskPage { items, next_cursor }))
}

/// A page item: the task's data and the customer's zone.
fn with_zone(r: collections_store::read::TaskView) -> Value {
    let mut data = r.data;
    data["timezone"] = Value::from(r.timezone);
    data
}

/// An account's summary and open tasks.
#[utoipa::path(
    get,
    path = "/v1/accounts/{account_id}",
    tag = "accounts",
    params(("account_id" = String, Path, description = "the account")),
    responses(
        (status = 200, description = "The account", body = AccountBody),
        (status = 404, description = "No such account", body = ErrorBody),
    )
)]
pub async fn account(
    State(app): State<Arc<App>>,
    Path(account_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<AccountBody>, ApiError> {
    Params::parse(query.as_deref(), &["access_token"])?;
    let unknown = || ApiError::NotFound(format!("no account {account_id:?}"));
    if account_id.chars().count() > 128 {
        return Err(unknown());
    }
    let Some(view) = app.store.read_account(&account_id).await? else {
        return Err(unknown());
    };
    let now = Timestamp::now();
    let filter = TaskFilter {
        state: Some(ReadState::Scheduled),
        account_id: Some(account_id.clone()),
        ..TaskFilter::default()
    };
    let open_tasks = app
        .store
        .read_tasks(&filter, MAX_LIMIT, now)
        .await?
        .into_iter()
        .map(|t| t.data)
        .collect();
    let (status, timezone, summary, open_promise, holds, restrictions, contacts) = match &view.state
    {
        Some(s) => {
            let doc = serde_json::to_value(s).unwrap_or(Value::Null);
            let list = |k: &str| doc[k].as_array().cloned().unwrap_or_default();
            let counts = app.store.read_contact_counts(s.debtor()).await?;
            (
                doc["status"].as_str().map(str::to_owned),
                s.timezone.clone(),
                serde_json::to_value(s.summary(now)).unwrap_or(Value::Null),
                s.open_promise().and_then(|p| serde_json::to_value(p).ok()),
                list("holds"),
                list("restrictions"),
                counts,
            )
        }
        None => (
            None,
            "UTC".to_owned(),
            json!({}),
            None,
            Vec::new(),
            Vec::new(),
            (0, 0),
        ),
    };
    Ok(Json(AccountBody {
        account_id,
        status,
        timezone,
        summary,
        open_promise,
        holds,
        restrictions,
        contacts_last_day: contacts.0,
        contacts_last_7_days: contacts.1,
        policy_version: view.policy_version,
        updated_at: view.updated_at.to_string(),
        open_tasks,
    }))
}

/// An account's journal: every event applied and decision taken, in order.
#[utoipa::path(
    get,
    path = "/v1/accounts/{account_id}/journal",
    tag = "accounts",
    params(
        ("account_id" = String, Path, description = "the account"),
        ("limit" = Option<i64>, Query, description = "1-1000, default 100"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
    ),
    responses(
        (status = 200, description = "Journal lines", body = JournalPage),
        (status = 400, description = "A bad parameter, named", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    )
)]
pub async fn journal(
    State(app): State<Arc<App>>,
    Path(account_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<JournalPage>, ApiError> {
    let p = Params::parse(query.as_deref(), &["limit", "cursor", "access_token"])?;
    let limit = p.int("limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
    let after = p.int("cursor", 0, i64::MAX)?.unwrap_or(0);
    if account_id.chars().count() > 128 || app.store.read_account(&account_id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no account {account_id:?}")));
    }
    let lines = app.store.read_journal(&account_id, after, limit).await?;
    let full = i64::try_from(lines.len()).unwrap_or(0) == limit;
    let next_cursor = if full {
        lines.last().map(|l| l.id.to_string())
    } else {
        None
    };
    Ok(Json(JournalPage {
        items: lines
            .into_iter()
            .map(|l| JournalItem {
                id: l.id,
                at: l.decided_at.to_string(),
                kind: l.kind,
                detail: l.detail,
                event_id: l.event_id.map(|e| e.to_string()),
                task_id: l.task_id.map(|t| t.to_string()),
                policy_version: l.policy_version,
            })
            .collect(),
        next_cursor,
    }))
}

/// Counts by state and kind, due per hour, outbox backlog, dead letters.
#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "stats",
    responses((status = 200, description = "The figures", body = Stats))
)]
pub async fn stats(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Stats>, ApiError> {
    Params::parse(query.as_deref(), &["access_token"])?;
    let f = app.store.read_figures(Timestamp::now()).await?;
    let mut by_state = json!({"scheduled": 0, "due": 0, "cancelled": 0});
    for (s, _, n) in &f.counts {
        let slot = &mut by_state[s.as_str()];
        *slot = Value::from(slot.as_i64().unwrap_or(0) + n);
    }
    Ok(Json(Stats {
        counts: f
            .counts
            .into_iter()
            .map(|(s, kind, count)| KindCount {
                state: s.as_str().to_owned(),
                kind,
                count,
            })
            .collect(),
        by_state,
        due_per_hour: f
            .due_per_hour
            .into_iter()
            .map(|(h, count)| HourCount {
                hour: h.to_string(),
                count,
            })
            .collect(),
        outbox_backlog: f.outbox_backlog,
        dead_letters: dead_letters(&app).await,
        dead_letter_reasons: app
            .store
            .read_dead_letter_reasons(Timestamp::now() - jiff::SignedDuration::from_hours(24 * 7))
            .await?
            .into_iter()
            .map(|r| DeadLetterReason {
                queue: r.queue,
                reason: r.reason,
                count: r.count,
                last_detail: r.last_detail,
                last_at: r.last_at.to_string(),
            })
            .collect(),
    }))
}

/// Messages in every holding queue, by passive declares on one connection kept open; a
/// broker that does not answer within 2 s gives `None`.
async fn dead_letters(app: &App) -> Option<Vec<QueueCount>> {
    let url = app.amqp_url.as_deref()?;
    let mut slot = app.amqp.lock().await;
    let work = async {
        if !slot.as_ref().is_some_and(|c| c.status().connected()) {
            *slot = Some(
                collections_bus::connect(url, "collections-api")
                    .await
                    .ok()?,
            );
        }
        let conn = slot.as_ref()?;
        let ch = conn.create_channel().await.ok()?;
        let mut out = Vec::new();
        for queue in collections_bus::holding_queues() {
            let q = ch
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await;
            match q {
                Ok(q) => out.push(QueueCount {
                    queue,
                    count: q.message_count(),
                }),
                // A queue not declared yet closes the channel: count it as empty.
                Err(_) => return Some(out),
            }
        }
        let _ = ch.close(200, "done".into()).await;
        Some(out)
    };
    tokio::time::timeout(Duration::from_secs(2), work)
        .await
        .ok()
        .flatten()
}

/// 200 from the first instant.
pub async fn live() -> &'static str {
    "live\n"
}

/// 200 when the database answers.
pub async fn ready(State(app): State<Arc<App>>) -> Response {
    let ok = tokio::time::timeout(Duration::from_secs(2), app.store.ping())
        .await
        .is_ok_and(|r| r.is_ok());
    if ok {
        (StatusCode::OK, "ready\ndatabase=ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database=down\n").into_response()
    }
}

/// Prometheus text format.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    collections_runtime::telemetry::metrics::upkeep();
    let backlog = tokio::time::timeout(Duration::from_secs(1), app.store.outbox_backlog())
        .await
        .ok()
        .and_then(Result::ok);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        collections_runtime::telemetry::metrics::render(backlog),
    )
        .into_response()
}

/// JSON 404 for every other path.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}
