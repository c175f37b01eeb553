//! Supervised helpers: a task spawned beside the main loop (the health server, the
//! scheduler's rescuer) that fails or panics is logged and started again after a capped
//! backoff, so that it is never silently gone.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::backoff;

/// A helper that ran this long before failing starts again from the shortest backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// Runs the helper that `make` builds until it returns `Ok` (it saw the token cancelled)
/// or the token is cancelled. Each time it returns an error or panics, the failure is
/// logged at error level and a fresh helper is started after a capped backoff. Returns
/// how many times the helper was restarted.
pub async fn restart_on_failure<F, Fut>(
    name: &'static str,
    token: CancellationToken,
    mut make: F,
) -> u32
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut restarts = 0u32;
    let mut attempt = 0u32;
    loop {
        let started = Instant::now();
        // Spawned, so that a panic ends the helper's task and is reported here.
        let error = match tokio::spawn(make()).await {
            Ok(Ok(())) => return restarts,
            Ok(Err(e)) => format!("{e:#}"),
            Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic())),
            Err(_) => return restarts,
        };
        if token.is_cancelled() {
            tracing::debug!(helper = name, error, "helper ended during shutdown");
            return restarts;
        }
        if started.elapsed() > HEALTHY_AFTER {
            attempt = 0;
        }
        attempt += 1;
        let wait = backoff(attempt, Duration::from_secs(5));
        tracing::error!(helper = name, error, ?wait, "helper failed; restarting it");
        tokio::select! {
            () = token.cancelled() => return restarts,
            () = tokio::time::sleep(wait) => {}
        }
        restarts += 1;
    }
}

/// Spawns [`restart_on_failure`] for `make`.
pub fn spawn_supervised<F, Fut>(
    name: &'static str,
    token: CancellationToken,
    make: F,
) -> JoinHandle<u32>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    tokio::spawn(restart_on_failure(name, token, make))
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    };

    use tokio_util::sync::CancellationToken;

    use super::{restart_on_failure, spawn_supervised};

    #[tokio::test]
    async fn a_helper_that_fails_twice_is_restarted_until_it_succeeds() {
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let restarts = restart_on_failure("flaky", CancellationToken::new(), move || {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) < 2 {
                    anyhow::bail!("broken");
                }
                Ok(())
            }
        })
        .await;
        assert_eq!(restarts, 2);
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_panicking_helper_is_caught_and_restarted() {
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let handle = spawn_supervised("panicky", CancellationToken::new(), move || {
            let r = r.clone();
            async move {
                assert!(r.fetch_add(1, Ordering::SeqCst) > 0, "first run panics");
                Ok(())
            }
        });
        let restarts = handle.await.expect("the supervisor itself does not panic");
        assert_eq!(restarts, 1);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failing_helper_stops_being_restarted_on_shutdown() {
        let token = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let (r, t) = (runs.clone(), token.clone());
        let restarts = restart_on_failure("doomed", token, move || {
            let (r, t) = (r.clone(), t.clone());
            async move {
                if r.fetch_add(1, Ordering::SeqCst) == 1 {
                    t.cancel();
                }
                anyhow::bail!("always fails")
            }
        })
        .await;
        assert_eq!(restarts, 1);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
