//! Structured logs: JSON when stdout is not a terminal, human-readable otherwise.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber (`RUST_LOG` filters, default `info`).
pub fn init(binary: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=warn"));
    let json =
        !std::io::stdout().is_terminal() && std::env::var("LOG_FORMAT").as_deref() != Ok("text");
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

/// Masks personal data that might slip into free text (a parser error quoting the value
/// it choked on): double-quoted values are replaced by `"…"`, and every run of 5 or more
/// digits keeps only its last 2 (phone, card and id numbers).
#[must_use]
pub fn mask_pii(text: &str) -> String {
    let mut unquoted = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        if c == '"' {
            if inside {
                unquoted.push('…');
            }
            inside = !inside;
            unquoted.push(c);
        } else if !inside {
            unquoted.push(c);
        }
    }
    let mut out = String::with_capacity(unquoted.len());
    let chars: Vec<char> = unquoted.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let run = &chars[start..i];
            if run.len() >= 5 {
                out.extend(std::iter::repeat_n('*', run.len() - 2));
                out.extend(&run[run.len() - 2..]);
            } else {
                out.extend(run);
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::mask_pii;

    #[test]
    fn phone_numbers_are_masked_in_log_text() {
        assert_eq!(mask_pii("call 13812345678 now"), "call *********78 now");
        assert_eq!(mask_pii("instalment 3 due 2026"), "instalment 3 due 2026");
    }

    #[test]
    fn quoted_values_in_parser_errors_are_redacted() {
        assert_eq!(
            mask_pii(r#"invalid type: string "Zhang San", expected u32 at line 1"#),
            r#"invalid type: string "…", expected u32 at line 1"#
        );
    }
}
