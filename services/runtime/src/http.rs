//! `/health/live`, `/health/ready` and `/metrics` (Prometheus text format) on a small
//! HTTP/1.1 listener of our own, served by a supervised task (restarted if it fails).
//!
//! Uses [`crate::supervisor`] (readiness, restarts) and [`crate::telemetry`] below it.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use collections_store::Store;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;

use crate::{supervisor, telemetry::metrics};

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
    let store = Arc::new(Store::from_pool(pool));
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, "health and metrics listening");
    // A restarted server binds the same address again.
    let first = Arc::new(Mutex::new(Some(listener)));
    supervisor::spawn_supervised("health server", token.clone(), move || {
        let listener = first.lock().ok().and_then(|mut l| l.take());
        accept_loop(listener, bound, store.clone(), token.clone())
    });
    Ok(bound)
}

async fn accept_loop(
    listener: Option<TcpListener>,
    addr: SocketAddr,
    store: Arc<Store>,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind(addr).await?,
    };
    loop {
        let (mut sock, _) = tokio::select! {
            () = token.cancelled() => return Ok(()),
            r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
        };
        let store = store.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = route(path, &store).await;
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

async fn route(path: &str, store: &Store) -> (&'static str, String) {
    match path {
        "/health/live" => ("200 OK", "live\n".to_owned()),
        "/health/ready" => {
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
                ("200 OK", format!("ready\n{body}"))
            } else {
                ("503 Service Unavailable", body)
            }
        }
        "/metrics" => {
            let backlog = tokio::time::timeout(Duration::from_secs(1), store.outbox_backlog())
                .await
                .ok()
                .and_then(Result::ok);
            ("200 OK", metrics::render(backlog))
        }
        _ => ("404 Not Found", "not found\n".to_owned()),
    }
}
