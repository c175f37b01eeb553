//! Consumes `collections.payment-failed` and applies each event to its account.

use collections_core::EventType;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    collections_runtime::run_worker(EventType::PaymentFailed, "payment-failed-worker").await
}
