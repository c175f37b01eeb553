//! The task scheduler: fires planned tasks on the minute, breaks expired promises, plans
//! the next call attempt ([`fire`]), rescues stuck claims ([`rescuer`]) and relays the
//! outbox.
//!
//! Firing is claim -> publish with confirms -> mark emitted. A scheduler killed between
//! claim and mark leaves rows `claimed`; the rescuer returns them once the claim runs out
//! (`CLAIM_TIMEOUT_SECS`, longer than the confirm wait it covers) and another scheduler
//! fires them again with the same event ids. Each claim carries a fencing token: a
//! scheduler whose claim was taken over completes or moves nothing of it.
//!
//! Uses [`crate::outbox`], [`crate::http`], [`crate::supervisor`], [`crate::config`] and
//! [`crate::telemetry`] below it.

mod fire;
pub mod rescuer;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use collections_bus::Publisher;
use collections_store::{scheduler::NOTIFY_CHANNEL, Store};
use futures::{future::FusedFuture, FutureExt};
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{SchedulerArgs, SchedulerConfig},
    http, outbox, supervisor,
    telemetry::{self, metrics},
};

/// Runs the scheduler until SIGTERM.
///
/// # Errors
/// Start-up errors retrying cannot fix.
pub async fn run_scheduler() -> anyhow::Result<()> {
    let args = SchedulerArgs::parse_for("task-scheduler");
    let (log_filter, log_text) = args.logging();
    telemetry::init("task-scheduler", log_filter, log_text);
    let config = args.resolve()?;
    tracing::info!(?config, "configuration loaded");
    let token = supervisor::shutdown_token();
    let common = &config.common;
    if let Some(addr) = common.health_addr {
        http::serve(addr, &common.database_url, token.clone()).await?;
    }
    let Some(store) =
        supervisor::connect_store(&common.database_url, common.db_pool, common.migrate, &token)
            .await?
    else {
        return Ok(());
    };
    let store = store.with_leases(common.leases);
    let ctx = Arc::new((config, store));
    supervisor::run_sessions(
        &token,
        "scheduler session ended; reconnecting",
        None,
        || session(&ctx, &token),
    )
    .await;
    supervisor::close_store(&ctx.1).await;
    tracing::info!("stopped");
    Ok(())
}

async fn session(
    ctx: &Arc<(SchedulerConfig, Store)>,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    let (config, store) = &**ctx;
    let common = &config.common;
    // Shutdown must not wait for a broker or database that is slow to answer set-up.
    let setup = async {
        let conn = collections_bus::connect_with_ca(
            &common.amqp_url,
            "task-scheduler",
            common.amqp_ca.as_deref(),
        )
        .await
        .context("connect to broker")?;
        collections_bus::declare_topology_on(&conn)
            .await
            .context("declare topology")?;
        let confirms = common.confirm_timeout;
        let publisher = Publisher::open(&conn).await?.with_confirm_timeout(confirms);
        let relay_publisher = Publisher::open(&conn).await?.with_confirm_timeout(confirms);
        let mut listener = PgListener::connect(&common.database_url).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        Ok::<_, anyhow::Error>((conn, publisher, relay_publisher, listener))
    };
    let (conn, publisher, relay_publisher, mut listener) = tokio::select! {
        () = token.cancelled() => return Ok(()),
        r = setup => r?,
    };
    let session_token = token.child_token();

    // The relay publishes on this session's connection: if it fails, the session ends
    // and is started afresh. The rescuer only needs the database: it is restarted alone.
    let mut relay = tokio::spawn(outbox::run_relay(
        store.clone(),
        relay_publisher,
        Duration::from_secs(1),
        session_token.clone(),
    ))
    .fuse();
    let rescuer_store = store.clone();
    let rescuer_token = session_token.clone();
    let rescuer = supervisor::spawn_supervised("rescuer", session_token.clone(), move || {
        rescuer::run_rescuer(rescuer_store.clone(), rescuer_token.clone())
    });

    metrics::set_consuming(true);
    supervisor::set_broker(Some(conn.status()));
    tracing::info!("scheduling");
    // After SIGTERM the batch being fired has SHUTDOWN_TIMEOUT_SECS to finish; claims
    // left behind are rescued and fired again (same event ids).
    let shutdown_deadline = async {
        token.cancelled().await;
        tokio::time::sleep(common.shutdown_timeout).await;
    };
    // A relay that fails while the scheduler runs ends the session; one that stops on
    // shutdown (or fails meanwhile) leaves the batch being fired to finish.
    let relay_failed = async {
        let error = match (&mut relay).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.context("outbox relay")),
            Err(e) => Some(anyhow::anyhow!("outbox relay panicked: {e}")),
        };
        match error {
            Some(e) if !token.is_cancelled() => e,
            _ => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = fire::fire_loop(store, &common.policy, config, &publisher, &mut listener, token) => r,
        e = relay_failed => Err(e),
        () = shutdown_deadline => {
            tracing::warn!("the batch being fired did not finish in time after SIGTERM; its claims will be rescued");
            Ok(())
        }
    };
    supervisor::set_broker(None);
    session_token.cancel();
    if !relay.is_terminated() {
        let _ = relay.await;
    }
    let _ = rescuer.await;
    supervisor::close_connection(&conn).await;
    result
}
