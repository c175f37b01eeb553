//! Structured logs: JSON when stdout is not a terminal, human-readable otherwise.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber: `filter` in env-filter syntax (`RUST_LOG`; one that
/// does not parse falls back to `info,sqlx=warn,lapin=warn`); `text` asks for
/// human-readable lines even when stdout is not a terminal (`LOG_FORMAT=text`).
pub fn init(binary: &str, filter: &str, text: bool) {
    let filter =
        EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=warn"));
    let json = !std::io::stdout().is_terminal() && !text;
    let result = if json {
        fmt()
            .with_env_filter(filter)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        fmt().with_env_filter(filter).try_init()
    };
    if result.is_ok() {
        tracing::info!(binary, version = env!("CARGO_PKG_VERSION"), "starting");
    }
}
