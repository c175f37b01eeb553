//! Consumes `collections.payment-reversed`: a returned payment re-opens what it settled and plans a call.

use collections_core::EventType;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    collections_runtime::run_worker(EventType::PaymentReversed, "payment-reversed-worker").await
}
