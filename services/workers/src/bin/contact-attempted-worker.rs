//! Consumes `collections.contact-attempted`: each attempt goes into its debtor's contact
//! ledger and may move, replace or add the account's tasks (and its sibling accounts').

use collections_core::EventType;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    collections_runtime::run_worker(EventType::ContactAttempted, "contact-attempted-worker").await
}
