//! Keeping the process up: capped backoff, the shutdown token (SIGTERM/SIGINT), the
//! session loop that rebuilds a broker session after it fails, restarting spawned
//! helpers ([`task`]), waiting for the database ([`database`]), and the broker
//! connection that readiness watches.
//!
//! Uses only [`crate::telemetry`] below it.

pub mod database;
pub mod task;

use std::{
    future::Future,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use collections_bus::lapin::{Connection, ConnectionStatus};
use collections_store::Store;
use tokio_util::sync::CancellationToken;

pub use database::{close_store, connect_store, wait_for_database};
pub use task::{restart_on_failure, spawn_supervised};

use crate::telemetry::metrics;

/// Capped exponential backoff with jitter: 100 ms, 200 ms, ... up to `cap`.
#[must_use]
pub fn backoff(attempt: u32, cap: Duration) -> Duration {
    let base = Duration::from_millis(100).saturating_mul(1 << attempt.min(10));
    let d = base.min(cap);
    let jitter = rand::random::<f64>() * 0.3;
    d.mul_f64(1.0 - jitter)
}

/// A token cancelled on SIGTERM or SIGINT.
#[must_use]
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutdown requested: finishing in-flight messages");
        t.cancel();
    });
    token
}

/// Runs `session` again and again until it returns `Ok` (a shutdown) or the token is
/// cancelled, waiting a capped backoff after each failure (reset once a session lasted
/// 30 s). `ended` is the warning logged when a session fails ("... ended; reconnecting").
/// With `db_gate`, a session after the first starts only once the database answers.
pub async fn run_sessions<F, Fut>(
    token: &CancellationToken,
    ended: &str,
    db_gate: Option<&Store>,
    mut session: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut attempt = 0u32;
    let mut sessions = 0u64;
    while !token.is_cancelled() {
        let started = Instant::now();
        if sessions > 0 {
            metrics::count_reconnect();
            if let Some(store) = db_gate {
                if !wait_for_database(store, token).await {
                    break;
                }
            }
        }
        sessions += 1;
        let result = session().await;
        metrics::set_consuming(false);
        match result {
            Ok(()) => break,
            Err(e) => {
                if started.elapsed() > Duration::from_secs(30) {
                    attempt = 0;
                }
                attempt += 1;
                let wait = backoff(attempt, Duration::from_secs(5));
                tracing::warn!(error = format!("{e:#}"), ?wait, "{ended}");
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Closes a connection politely, without waiting long for a broker that does not answer.
pub async fn close_connection(conn: &Connection) {
    if tokio::time::timeout(Duration::from_secs(2), conn.close(200, "bye".into()))
        .await
        .is_err()
    {
        tracing::warn!("the broker did not confirm closing the connection; leaving");
    }
}

/// What readiness looks at besides the database: the broker connection of the current
/// session (none between sessions).
fn broker() -> &'static Mutex<Option<ConnectionStatus>> {
    static B: OnceLock<Mutex<Option<ConnectionStatus>>> = OnceLock::new();
    B.get_or_init(|| Mutex::new(None))
}

/// Records the broker connection readiness should watch (`None` when the session ended).
pub fn set_broker(status: Option<&ConnectionStatus>) {
    if let Ok(mut b) = broker().lock() {
        *b = status.cloned();
    }
}

/// Whether the current session's broker connection is up.
pub fn broker_connected() -> bool {
    broker()
        .lock()
        .ok()
        .and_then(|b| b.as_ref().map(ConnectionStatus::connected))
        .unwrap_or(false)
}
