//! The task-event feed: pages (`/v1/task-events`) and a Server-Sent Events stream
//! (`/v1/task-events/stream`), both in `(xact, id)` order from a cursor (`<xact>-<id>`),
//! serving only rows of transactions that ended before the reading statement began
//! (`collections_store::Store::read_task_events`; ARCHITECTURE.md, "Task-event feed").
//! A stream resumed with `Last-Event-ID` (or `?after=`) continues after that event: none
//! missed, none repeated, whichever API process serves it.
//!
//! Streams do not poll the database each: one tail reader per process ([`run_tail`])
//! reads what is new every `SSE_POLL_MS` and broadcasts it. A stream subscribes to that
//! broadcast first, then catches up from the database from its cursor until a read finds
//! nothing more, then takes the broadcast, skipping what its cursor already passed. No
//! gap: a row broadcast before the stream subscribed was visible to the tail's read, so
//! to the stream's later catch-up read too (the horizon only moves forward). A stream
//! that falls more than [`TAIL_CAPACITY`] rows behind the broadcast catches up from the
//! database again.

use std::{collections::VecDeque, convert::Infallible, sync::Arc};

use axum::{
    extract::{RawQuery, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
    Json,
};
use futures::Stream;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::{
    error::{ApiError, ErrorBody},
    model::{FeedItem, FeedPage},
    params::{feed_cursor, make_feed_cursor, Params},
    App,
};

/// Events read per query by a stream catching up, and by the tail.
const STREAM_BATCH: i64 = 500;

/// Rows the broadcast keeps for streams that are slow to take them.
pub const TAIL_CAPACITY: usize = 8192;

/// The one reader of new task events in this process: from the feed's head at start,
/// every row in feed order, broadcast to the live streams. Database errors are retried.
pub async fn run_tail(app: Arc<App>) {
    let mut cursor = None;
    loop {
        let wait = match cursor {
            None => match app.store.read_feed_head().await {
                Ok(head) => {
                    cursor = Some(head);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %collections_runtime::telemetry::mask_pii(&e.to_string()), "task-event tail: reading the head failed; retrying");
                    app.poll * 5
                }
            },
            Some(after) => match app.store.read_task_events(after, STREAM_BATCH).await {
                Ok(rows) if !rows.is_empty() => {
                    for row in rows {
                        cursor = Some((row.xact, row.id));
                        // No receiver (no stream open) is not an error.
                        let _ = app.tail.send(Arc::new(row));
                    }
                    continue;
                }
                Ok(_) => app.poll,
                Err(e) => {
                    tracing::warn!(error = %collections_runtime::telemetry::mask_pii(&e.to_string()), "task-event tail: read failed; retrying");
                    app.poll * 5
                }
            },
        };
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Task events after a cursor, as published.
#[utoipa::path(
    get,
    path = "/v1/task-events",
    tag = "task events",
    params(
        ("after" = Option<String>, Query, description = "a cursor (<xact>-<id>) from an earlier item or page; absent: from the oldest event kept"),
        ("limit" = Option<i64>, Query, description = "1-1000, default 100"),
    ),
    responses(
        (status = 200, description = "Task events in feed order", body = FeedPage),
        (status = 400, description = "A bad parameter, named", body = ErrorBody),
    )
)]
pub async fn page(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
) -> Result<Json<FeedPage>, ApiError> {
    let p = Params::parse(query.as_deref(), &["after", "limit", "access_token"])?;
    let after = p
        .get("after")
        .map(|a| feed_cursor("after", a))
        .transpose()?
        .unwrap_or((0, 0));
    let limit = p.int("limit", 1, 1000)?.unwrap_or(100);
    let rows = app.store.read_task_events(after, limit).await?;
    let next = rows.last().map_or(after, |r| (r.xact, r.id));
    Ok(Json(FeedPage {
        items: rows
            .into_iter()
            .map(|r| FeedItem {
                cursor: make_feed_cursor(r.xact, r.id),
                event: serde_json::from_str(&r.body).unwrap_or(Value::Null),
            })
            .collect(),
        next_cursor: make_feed_cursor(next.0, next.1),
    }))
}

/// Task events as Server-Sent Events: `id:` is the cursor, `data:` the CloudEvent.
#[utoipa::path(
    get,
    path = "/v1/task-events/stream",
    tag = "task events",
    params(
        ("after" = Option<String>, Query, description = "start after this cursor; the Last-Event-ID header wins over it; neither: from now on"),
        ("Last-Event-ID" = Option<String>, Header, description = "the id of the last event received (browsers send it when they reconnect)"),
    ),
    responses(
        (status = 200, description = "text/event-stream: one event per task event, comment lines as heartbeats", content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad cursor, named", body = ErrorBody),
    )
)]
pub async fn stream(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let p = Params::parse(query.as_deref(), &["after", "access_token"])?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let start = match (last_event_id, p.get("after")) {
        (Some(id), _) => feed_cursor("Last-Event-ID", id)?,
        (None, Some(after)) => feed_cursor("after", after)?,
        (None, None) => app.store.read_feed_head().await?,
    };
    let heartbeat = app.heartbeat;
    // Subscribed before the first catch-up read (see the module's doc).
    let rx = app.tail.subscribe();
    let events = futures::stream::unfold(
        (app, start, VecDeque::new(), rx, false),
        |(app, mut cursor, mut buffered, mut rx, mut live)| async move {
            loop {
                if let Some(row) = buffered.pop_front() {
                    let row: Arc<collections_store::read::FeedRow> = row;
                    if (row.xact, row.id) <= cursor {
                        // Already served (read while catching up, then broadcast).
                        continue;
                    }
                    cursor = (row.xact, row.id);
                    let event = Event::default()
                        .id(make_feed_cursor(row.xact, row.id))
                        .data(row.body.as_str());
                    return Some((Ok(event), (app, cursor, buffered, rx, live)));
                }
                if live {
                    tokio::select! {
                        () = app.shutdown.cancelled() => return None,
                        got = rx.recv() => match got {
                            Ok(row) => buffered.push_back(row),
                            // Fell behind the broadcast: catch up from the database.
                            Err(broadcast::error::RecvError::Lagged(_)) => live = false,
                            Err(broadcast::error::RecvError::Closed) => return None,
                        },
                    }
                    continue;
                }
                let wait = match app.store.read_task_events(cursor, STREAM_BATCH).await {
                    Ok(rows) if !rows.is_empty() => {
                        buffered.extend(rows.into_iter().map(Arc::new));
                        continue;
                    }
                    Ok(_) => {
                        // Caught up: everything later comes through the broadcast.
                        live = true;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %collections_runtime::telemetry::mask_pii(&e.to_string()), "task-event stream: read failed; retrying");
                        app.poll * 5
                    }
                };
                tokio::select! {
                    () = app.shutdown.cancelled() => return None,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat")))
}
