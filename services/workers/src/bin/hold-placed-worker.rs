//! Consumes `collections.hold-placed`: each hold stops the contact it covers and plans its review.

use collections_core::EventType;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    collections_runtime::run_worker(EventType::HoldPlaced, "hold-placed-worker").await
}
