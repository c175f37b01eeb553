//! The database's operations: `migrate` (the release step) and `prune` (retention).

use anyhow::Context;
use collections_runtime::{config::RetentionArgs, retention};
use collections_store::{SchemaCheck, Store};
use jiff::Timestamp;

/// Where the database is.
#[derive(clap::Args)]
pub struct DbArgs {
    /// Postgres URL with its credentials. Never defaulted: credentials come from the
    /// environment.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl DbArgs {
    async fn connect(self) -> anyhow::Result<Store> {
        let url = self.database_url.context(
            "DATABASE_URL is not set (for example postgres://user:password@127.0.0.1:5432/collections)",
        )?;
        Store::connect(&url, 2)
            .await
            .context("connect to Postgres (DATABASE_URL)")
    }
}

/// Applies the pending migrations and prints the schema they leave.
pub async fn migrate(db: DbArgs) -> anyhow::Result<()> {
    let store = db.connect().await?;
    store.migrate().await?;
    match store.check_schema().await? {
        SchemaCheck::Current { version } => println!("schema at migration {version}"),
        SchemaCheck::NewerCompatible { applied, known } => println!(
            "schema at migration {applied}, newer than this collectionsctl ({known}) and \
             compatible with it: nothing to apply"
        ),
    }
    store.pool().close().await;
    Ok(())
}

/// One pruning pass; Ctrl-C stops it after the batch in flight.
pub async fn prune(db: DbArgs, retention: RetentionArgs) -> anyhow::Result<()> {
    let retention = retention.resolve()?;
    let store = db.connect().await?;
    // Deleting rows of a schema this binary does not know could delete the wrong ones.
    store.check_schema().await?;
    let token = tokio_util::sync::CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.cancel();
        }
    });
    let pruned = retention::prune(&store, &retention, Timestamp::now(), &token).await?;
    println!(
        "pruned: {} inbox ids, {} outbox rows, {} tasks, {} contact attempts, {} journal \
         entries{}",
        pruned.inbox,
        pruned.outbox,
        pruned.tasks,
        pruned.contacts,
        pruned.journal,
        if token.is_cancelled() {
            " (interrupted)"
        } else {
            ""
        }
    );
    store.pool().close().await;
    Ok(())
}
