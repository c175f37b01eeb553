//! Consumes `collections.arrangement-cancelled`: the arrangement's tasks are cancelled and collection resumes.

use collections_core::EventType;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    collections_runtime::run_worker(
        EventType::ArrangementCancelled,
        "arrangement-cancelled-worker",
    )
    .await
}
