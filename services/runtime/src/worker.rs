//! An event worker binary's life: configuration, logging, the health server, the
//! database, then supervised broker sessions, each consuming one queue with
//! `WORKER_CONCURRENCY` pipelines beside an outbox relay.
//!
//! The top of the module stack: uses [`crate::pipeline`], [`crate::outbox`],
//! [`crate::http`], [`crate::supervisor`], [`crate::config`] and [`crate::telemetry`].

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use collections_bus::Publisher;
use collections_core::EventType;
use tokio_util::sync::CancellationToken;

use crate::{
    config::WorkerArgs,
    http, outbox,
    pipeline::{Ctx, Pipeline},
    supervisor,
    telemetry::{self, metrics},
};

/// Runs a worker for one event type until SIGTERM: migrations, topology, then supervised
/// consuming sessions that reconnect with capped backoff.
///
/// # Errors
/// Only start-up errors that retrying cannot fix (bad configuration).
pub async fn run_worker(event_type: EventType, binary: &str) -> anyhow::Result<()> {
    let args = WorkerArgs::parse_for(binary);
    let (log_filter, log_text) = args.logging();
    telemetry::init(binary, log_filter, log_text);
    let config = args.resolve()?;
    tracing::info!(?config, queue = event_type.queue(), "configuration loaded");
    let token = supervisor::shutdown_token();
    let common = &config.common;
    if let Some(addr) = common.health_addr {
        http::serve(addr, &common.database_url, token.clone()).await?;
    }
    let store =
        supervisor::connect_store(&common.database_url, common.db_pool, common.migrate, &token)
            .await?;
    let Some(store) = store else { return Ok(()) };
    let store = store.with_leases(common.leases);
    let ctx = Arc::new(Ctx {
        config,
        store,
        event_type,
        binary: binary.to_owned(),
    });
    supervisor::run_sessions(
        &token,
        "AMQP session ended; reconnecting",
        Some(&ctx.store),
        || session(&ctx, &token),
    )
    .await;
    tracing::info!("stopped");
    supervisor::close_store(&ctx.store).await;
    Ok(())
}

/// One connection's life: declare, consume with N pipelines, relay stale outbox rows.
async fn session(ctx: &Arc<Ctx>, token: &CancellationToken) -> anyhow::Result<()> {
    let session_token = token.child_token();
    // Setting up talks to the broker without a deadline of its own: shutdown must not
    // wait for a broker that is slow to answer.
    let setup = async {
        let conn = collections_bus::connect_with_ca(
            &ctx.config.common.amqp_url,
            &ctx.binary,
            ctx.config.common.amqp_ca.as_deref(),
        )
        .await
        .context("connect to broker")?;
        collections_bus::declare_topology_on(&conn)
            .await
            .context("declare topology")?;
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..ctx.config.concurrency {
            let pipeline = Pipeline::open(ctx.clone(), &conn, n).await?;
            let t = session_token.clone();
            tasks.spawn(async move { pipeline.run(t).await });
        }
        let relay_pub = Publisher::open(&conn)
            .await?
            .with_confirm_timeout(ctx.config.common.confirm_timeout);
        let relay_token = session_token.clone();
        let relay_store = ctx.store.clone();
        tasks.spawn(async move {
            outbox::run_relay(relay_store, relay_pub, Duration::from_secs(1), relay_token).await
        });
        Ok::<_, anyhow::Error>((conn, tasks))
    };
    let (conn, mut tasks) = tokio::select! {
        () = token.cancelled() => return Ok(()),
        r = setup => r?,
    };
    metrics::set_consuming(true);
    supervisor::set_broker(Some(conn.status()));
    tracing::info!(
        queue = ctx.event_type.queue(),
        consumers = ctx.config.concurrency,
        "consuming"
    );

    // The first pipeline to stop ends the session: on shutdown all stop; on a broker
    // failure the others are stopped and the supervisor starts a fresh session. After
    // SIGTERM the in-flight batch has SHUTDOWN_TIMEOUT_SECS to finish; whatever is not
    // acked by then is redelivered to another consumer.
    let shutdown_deadline = async {
        token.cancelled().await;
        tokio::time::sleep(ctx.config.common.shutdown_timeout).await;
    };
    let first = tokio::select! {
        r = tasks.join_next() => r,
        () = shutdown_deadline => {
            tracing::warn!("in-flight work did not finish in time after SIGTERM; unacked messages will be redelivered");
            tasks.abort_all();
            None
        }
    };
    supervisor::set_broker(None);
    session_token.cancel();
    let drain = async {
        while let Some(r) = tasks.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::debug!(error = %e, "pipeline ended");
            }
        }
    };
    if tokio::time::timeout(ctx.config.common.shutdown_timeout, drain)
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight work did not finish in time; unacked messages will be redelivered"
        );
    }
    supervisor::close_connection(&conn).await;
    match first {
        Some(Ok(Ok(()))) if token.is_cancelled() => Ok(()),
        Some(Ok(Ok(()))) => Err(anyhow::anyhow!("consumer stream ended")),
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(anyhow::anyhow!("pipeline panicked: {e}")),
        None => Ok(()),
    }
}
