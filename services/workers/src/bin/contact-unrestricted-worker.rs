//! Consumes `collections.contact-unrestricted`: a restriction is lifted.

use collections_core::EventType;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    collections_runtime::run_worker(
        EventType::ContactUnrestricted,
        "contact-unrestricted-worker",
    )
    .await
}
