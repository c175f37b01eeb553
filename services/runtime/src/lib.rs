//! The runtime every binary shares: configuration, logging, the supervised AMQP session,
//! the batching consumer loop, the outbox relay and graceful shutdown.

pub mod config;
pub mod health;
pub mod relay;
pub mod scheduler;
pub mod telemetry;
pub mod worker;

pub use config::Config;
pub use worker::run_worker;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

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
