//! `collections-api`: the dashboards' read API and the task board (issue 20).
//!
//! Everything is read from Postgres (a read-only role is enough); nothing here decides or
//! writes. Routes: `/v1/tasks`, `/v1/accounts/{id}`, `/v1/accounts/{id}/journal`,
//! `/v1/task-events` (pages) and `/v1/task-events/stream` (Server-Sent Events),
//! `/v1/stats`, `/openapi.json`, the board at `/`, and `/health/live`, `/health/ready`,
//! `/metrics`. The OpenAPI document is generated from the handlers ([`openapi::ApiDoc`])
//! and committed as `proto/openapi.json` (a test keeps the two equal).
//!
//! Modules: [`error`] (JSON errors), [`params`] (query parameters and cursors),
//! [`model`] (response bodies), [`routes`] (handlers), [`feed`] (the task-event feed and
//! its SSE stream), [`openapi`], [`board`] (the HTML page and its script).

pub mod board;
pub mod error;
pub mod feed;
pub mod model;
pub mod openapi;
pub mod params;
pub mod routes;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use collections_runtime::{config::ApiArgs, supervisor, telemetry};
use collections_store::Store;
use tokio::{net::TcpListener, sync::Mutex};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

/// What every handler shares.
pub struct App {
    /// The database.
    pub store: Store,
    /// The bearer token required on `/v1` and the board, when set.
    pub token: Option<String>,
    /// RabbitMQ, only to count dead letters (`AMQP_URL`).
    pub amqp_url: Option<String>,
    /// The connection used for those counts, opened on first use.
    pub amqp: Mutex<Option<lapin::Connection>>,
    /// How often an idle SSE stream sends a comment line.
    pub heartbeat: Duration,
    /// How long the feed's tail waits before looking for new events again.
    pub poll: Duration,
    /// Ends SSE streams at shutdown.
    pub shutdown: CancellationToken,
    /// New task events as the feed's one tail reader finds them, for every live stream
    /// ([`feed::run_tail`]).
    pub tail: tokio::sync::broadcast::Sender<Arc<collections_store::read::FeedRow>>,
}

/// The full router.
pub fn router(app: Arc<App>) -> Router {
    let v1 = Router::new()
        .route("/v1/tasks", get(routes::tasks))
        .route("/v1/accounts/{account_id}", get(routes::account))
        .route("/v1/accounts/{account_id}/journal", get(routes::journal))
        .route("/v1/task-events", get(feed::page))
        .route("/v1/task-events/stream", get(feed::stream))
        .route("/v1/stats", get(routes::stats))
        .route("/", get(board::page))
        .layer(axum::middleware::from_fn_with_state(app.clone(), authorize));
    Router::new()
        .merge(v1)
        .route("/openapi.json", get(openapi::document))
        // Static, no data: the page that loads them was authorised.
        .route("/board.js", get(board::script))
        .route("/board.css", get(board::style))
        .route("/health/live", get(routes::live))
        .route("/health/ready", get(routes::ready))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn(count_requests))
        .with_state(app)
}

/// Bearer token check when `API_TOKEN` is set. Browsers cannot put a header on a page
/// load or an `EventSource`, so `?access_token=` is accepted too (the board passes it).
async fn authorize(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(want) = app.token.as_deref() else {
        return next.run(req).await;
    };
    let header_token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query_token = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("access_token=")));
    let ok = header_token
        .into_iter()
        .chain(query_token)
        .any(|t| same(t.as_bytes(), want.as_bytes()));
    if ok {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Counts requests and their durations by route for `/metrics`.
async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    telemetry::metrics::inc(
        "collections_api_requests_total",
        &[("route", &route), ("status", &status)],
        1,
    );
    telemetry::metrics::observe(
        "collections_api_request_seconds",
        &[("route", &route)],
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Runs the API until SIGTERM.
///
/// # Errors
/// Start-up errors retrying cannot fix (configuration, schema, address in use).
pub async fn run(binary: &str) -> anyhow::Result<()> {
    let args = ApiArgs::parse_for(binary);
    let (filter, text) = args.logging();
    telemetry::init(binary, filter, text);
    let config = args.resolve()?;
    tracing::info!(addr = %config.addr, token = config.token.is_some(), dead_letters = config.amqp_url.is_some(), "configuration loaded");
    let token = supervisor::shutdown_token();
    let Some(store) = supervisor::connect_store(
        config.database_url.expose(),
        config.db_pool,
        config.migrate,
        &token,
    )
    .await?
    else {
        return Ok(());
    };
    let _ = telemetry::metrics::install();
    let app = Arc::new(App {
        store,
        token: config.token.as_ref().map(|t| t.expose().to_owned()),
        amqp_url: config.amqp_url.as_ref().map(|u| u.expose().to_owned()),
        amqp: Mutex::new(None),
        heartbeat: config.heartbeat,
        poll: config.poll,
        shutdown: token.clone(),
        tail: tokio::sync::broadcast::channel(feed::TAIL_CAPACITY).0,
    });
    tokio::spawn(feed::run_tail(app.clone()));
    let listener = TcpListener::bind(config.addr).await?;
    let bound: SocketAddr = listener.local_addr()?;
    tracing::info!(%bound, "API and board listening");
    axum::serve(listener, router(app.clone()))
        .with_graceful_shutdown(token.cancelled_owned())
        .await?;
    supervisor::close_store(&app.store).await;
    tracing::info!("stopped");
    Ok(())
}
