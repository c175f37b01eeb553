//! The dashboards' read API and task board (`collections_api`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    collections_api::run("collections-api").await
}
