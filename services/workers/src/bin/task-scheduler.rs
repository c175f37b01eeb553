//! Fires planned tasks at their instant, breaks expired promises, plans the next call.

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    collections_runtime::scheduler::run_scheduler().await
}
