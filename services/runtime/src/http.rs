//! The health and metrics routes on axum: `/health/live` (200 from the first instant),
//! `/health/ready` (200 when the database answers, the broker is connected and consumers
//! run; 503 otherwise) and `/metrics` (Prometheus text format). Served by a supervised
//! task: a server that fails is started again on the same address.
//!
//! Uses [`crate::supervisor`] (readiness, restarts) and [`crate::telemetry`] below it.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::State,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::any,
    Router,
};
use collections_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{supervisor, telemetry::metrics};

/// The Prometheus text format's content type, sent on every route.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Serves the health and metrics routes on `addr` until cancelled. `addr` port 0 picks a
/// free port; the bound address is logged.
///
/// The routes use a pool of their own (one connection, opened on first use): readiness
/// must not report the database down because the workers' connections are all busy, and
/// `/health/live` answers before the database is reachable at all.
///
/// # Errors
/// When the address cannot be bound or the database URL is malformed.
pub async fn serve(
    addr: SocketAddr,
    database_url: &str,
    token: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let opts: sqlx::postgres::PgConnectOptions = database_url.parse()?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy_with(opts);
    let app = router(Store::from_pool(pool));
    if metrics::install().is_none() {
        tracing::warn!(
            "another metrics recorder is installed: /metrics shows only the outbox backlog"
        );
    }
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, "health and metrics listening");
    // A restarted server binds the same address again.
    let first = Arc::new(Mutex::new(Some(listener)));
    let server_token = token.clone();
    supervisor::spawn_supervised("health server", token.clone(), move || {
        let listener = first.lock().ok().and_then(|mut l| l.take());
        let (app, token) = (app.clone(), server_token.clone());
        async move {
            let listener = match listener {
                Some(l) => l,
                None => TcpListener::bind(bound).await?,
            };
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await?;
            Ok(())
        }
    });
    let upkeep_token = token.clone();
    supervisor::spawn_supervised("metrics upkeep", token, move || {
        let token = upkeep_token.clone();
        async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    () = tokio::time::sleep(UPKEEP_EVERY) => metrics::upkeep(),
                }
            }
        }
    });
    Ok(bound)
}

/// The three routes (any method, as probes and scrapers send GET) and a 404 for the rest.
/// Each response closes its connection, as a probe expects.
fn router(store: Store) -> Router {
    Router::new()
        .route("/health/live", any(live))
        .route("/health/ready", any(ready))
        .route("/metrics", any(scrape))
        .fallback(not_found)
        .with_state(Arc::new(store))
        .layer(axum::middleware::map_response(close_connection))
}

async fn close_connection(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

async fn live() -> Response {
    (StatusCode::OK, "live\n").into_response()
}

async fn ready(State(store): State<Arc<Store>>) -> Response {
    let db = tokio::time::timeout(Duration::from_secs(2), store.ping())
        .await
        .is_ok_and(|r| r.is_ok());
    let broker = supervisor::broker_connected();
    let consuming = metrics::consuming();
    let body = format!(
        "database={} broker={} consuming={consuming}\n",
        if db { "ok" } else { "down" },
        if broker { "connected" } else { "down" },
    );
    if db && broker && consuming {
        (StatusCode::OK, format!("ready\n{body}")).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn scrape(State(store): State<Arc<Store>>) -> Response {
    let backlog = tokio::time::timeout(Duration::from_secs(1), store.outbox_backlog())
        .await
        .ok()
        .and_then(Result::ok);
    (StatusCode::OK, metrics::render(backlog)).into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}
