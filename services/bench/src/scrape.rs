//! The workers' `/metrics`, scraped: batch figures per worker, and the counter arithmetic
//! the figures need.

/// `after - before` of a counter read twice, unless either read failed (`-1`).
pub fn grew(before: i64, after: i64) -> Option<i64> {
    (before >= 0 && after >= before).then_some(after - before)
}

/// A worker's batch figures so far, from its `/metrics`.
#[derive(Clone, Copy, Default)]
pub struct Stage {
    /// Seconds spent applying batches.
    pub seconds: f64,
    /// Batches applied.
    pub batches: f64,
    /// Events consumed.
    pub events: f64,
    /// Seconds in each step of the committed transactions (`STEPS`), and their number.
    pub steps: [f64; 5],
    pub stepped: f64,
}

/// The steps of a batch transaction, as the workers label them.
pub const STEPS: [&str; 5] = ["begin", "read", "decide", "write", "commit"];

/// Every worker's batch figures so far, by its health port.
pub async fn scrape_stages<'a>(health: &[(&'a str, u16)]) -> Vec<(&'a str, Stage)> {
    let mut out = Vec::new();
    for (b, port) in health {
        // One scrape per worker: every figure comes from the same snapshot.
        let text = get_metrics(*port).await.unwrap_or_default();
        let apply = |suffix: &str| {
            sample_total(
                &text,
                &format!("collections_batch_apply_seconds{suffix}"),
                "",
            )
        };
        let step = |suffix: &str, step: &str| {
            sample_total(
                &text,
                &format!("collections_batch_step_seconds{suffix}"),
                &format!("step=\"{step}\""),
            )
        };
        out.push((
            *b,
            Stage {
                seconds: apply("_sum"),
                batches: apply("_count"),
                events: sample_total(&text, "collections_events_total", ""),
                steps: STEPS.map(|st| step("_sum", st)),
                stepped: step("_count", STEPS[0]),
            },
        ));
    }
    out
}

async fn get_metrics(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: bench\r\n\r\n")
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    Some(out)
}

/// The sum of the samples named `sample` (e.g. `x_count`, over all its label sets) whose
/// labels contain `label` (empty: every sample), in Prometheus text.
fn sample_total(text: &str, sample: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(sample)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
