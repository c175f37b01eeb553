//! Consumes `collections.arrangement-made`: an instalment plan or settlement suspends calls and plans each instalment's reminder, check and expiry.

use collections_core::EventType;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    collections_runtime::run_worker(EventType::ArrangementMade, "arrangement-made-worker").await
}
