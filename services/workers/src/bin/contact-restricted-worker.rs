//! Consumes `collections.contact-restricted`: a restriction removes a channel, a contact point or hours of contact from every task.

use collections_core::EventType;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    collections_runtime::run_worker(EventType::ContactRestricted, "contact-restricted-worker").await
}
