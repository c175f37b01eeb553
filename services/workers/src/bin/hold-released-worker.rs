//! Consumes `collections.hold-released`: a released hold lets collection resume.

use collections_core::EventType;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    collections_runtime::run_worker(EventType::HoldReleased, "hold-released-worker").await
}
