//! The process's metrics, recorded through the `metrics` facade into a Prometheus
//! recorder (`metrics-exporter-prometheus`): counters, latency histograms, the
//! `collections_consuming` gauge and `collections_reconnects_total`. Nothing is recorded
//! until [`install`] (when the metrics are served); rendered by [`render`].

use std::sync::{
    atomic::{AtomicBool, Ordering},
    OnceLock,
};

use metrics::Label;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Upper bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Broker session up and consumers running (readiness reads it; the gauge mirrors it).
static CONSUMING: AtomicBool = AtomicBool::new(false);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same handle), with
/// the series that are rendered from the start. `None` if another recorder was installed.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            metrics::counter!("collections_reconnects_total").absolute(0);
            set_consuming(consuming());
            Some(handle)
        })
        .as_ref()
}

/// Moves recorded histogram samples into their buckets, so that memory stays bounded
/// between scrapes (run every few seconds while the metrics are served).
pub fn upkeep() {
    if let Some(handle) = HANDLE.get().and_then(Option::as_ref) {
        handle.run_upkeep();
    }
}

fn labels(pairs: &[(&'static str, &str)]) -> Vec<Label> {
    pairs
        .iter()
        .map(|(k, v)| Label::new(*k, (*v).to_owned()))
        .collect()
}

/// Adds `n` to a counter.
pub fn inc(name: &'static str, label_pairs: &[(&'static str, &str)], n: u64) {
    metrics::counter!(name, labels(label_pairs)).increment(n);
}

/// Records one observation (seconds).
pub fn observe(name: &'static str, label_pairs: &[(&'static str, &str)], secs: f64) {
    metrics::histogram!(name, labels(label_pairs)).record(secs);
}

/// Counts a published task event by its routing key `task.<state>.<kind>`.
pub fn count_task_event(routing_key: &str) {
    let mut parts = routing_key.splitn(3, '.');
    if let (Some("task"), Some(state), Some(kind)) = (parts.next(), parts.next(), parts.next()) {
        inc(
            "collections_task_events_total",
            &[("state", state), ("kind", kind)],
            1,
        );
    }
}

/// Records whether the broker session is up with its consumers running.
pub fn set_consuming(on: bool) {
    CONSUMING.store(on, Ordering::Relaxed);
    metrics::gauge!("collections_consuming").set(f64::from(u8::from(on)));
}

/// Whether the broker session is up with its consumers running.
pub fn consuming() -> bool {
    CONSUMING.load(Ordering::Relaxed)
}

/// Counts a session started after the first.
pub fn count_reconnect() {
    metrics::counter!("collections_reconnects_total").increment(1);
}

/// Everything recorded, in the Prometheus text format, plus the outbox backlog when the
/// caller could read it (left out when it could not).
pub fn render(outbox_backlog: Option<i64>) -> String {
    let mut out = HANDLE
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    if let Some(b) = outbox_backlog {
        // Read at scrape time: a gauge of its own recorder, so that a backlog that could
        // not be read is absent rather than stale.
        let recorder = PrometheusBuilder::new().build_recorder();
        metrics::with_local_recorder(&recorder, || {
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!("collections_outbox_backlog").set(b as f64);
        });
        out.push_str(&recorder.handle().render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{inc, install, observe, render, set_consuming};

    /// The names, labels and types the e2e tests and the benchmark parse.
    #[test]
    fn the_text_format_keeps_names_labels_and_types() {
        install().expect("the only recorder");
        inc(
            "collections_events_total",
            &[
                ("type", "payment.failed"),
                ("outcome", "applied"),
                ("reason", ""),
            ],
            3,
        );
        observe(
            "collections_batch_step_seconds",
            &[("type", "payment.failed"), ("step", "begin")],
            0.003,
        );
        observe("collections_scheduler_lateness_seconds", &[], 0.2);
        set_consuming(true);
        let m = render(Some(0));
        for line in [
            "# TYPE collections_events_total counter",
            r#"collections_events_total{type="payment.failed",outcome="applied",reason=""} 3"#,
            "# TYPE collections_batch_step_seconds histogram",
            r#"collections_batch_step_seconds_bucket{type="payment.failed",step="begin",le="0.0025"} 0"#,
            r#"collections_batch_step_seconds_bucket{type="payment.failed",step="begin",le="0.005"} 1"#,
            r#"collections_batch_step_seconds_bucket{type="payment.failed",step="begin",le="+Inf"} 1"#,
            r#"collections_batch_step_seconds_sum{type="payment.failed",step="begin"} 0.003"#,
            r#"collections_batch_step_seconds_count{type="payment.failed",step="begin"} 1"#,
            "collections_scheduler_lateness_seconds_count 1",
            "# TYPE collections_reconnects_total counter",
            "collections_reconnects_total 0",
            "# TYPE collections_consuming gauge",
            "collections_consuming 1",
            "# TYPE collections_outbox_backlog gauge",
            "collections_outbox_backlog 0",
        ] {
            assert!(m.lines().any(|l| l == line), "no {line:?} in\n{m}");
        }
        assert!(!render(None).contains("collections_outbox_backlog"));
    }
}
