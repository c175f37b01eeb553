//! The process's metrics: counters and latency histograms keyed by name and labels, the
//! `collections_consuming` gauge and `collections_reconnects_total`, rendered in the
//! Prometheus text format.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex, OnceLock,
    },
};

/// Upper bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Process-wide metrics.
#[derive(Default)]
struct Metrics {
    counters: Mutex<BTreeMap<(String, String), u64>>,
    histograms: Mutex<BTreeMap<(String, String), Histogram>>,
    /// Broker session up and consumers running.
    consuming: AtomicBool,
    /// Sessions started after the first (reconnects).
    reconnects: AtomicU64,
}

fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::default)
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"{}\"", v.replace('"', "'"));
    }
    s
}

/// Adds `n` to a counter.
pub fn inc(name: &str, label_pairs: &[(&str, &str)], n: u64) {
    if let Ok(mut c) = metrics().counters.lock() {
        *c.entry((name.to_owned(), labels(label_pairs))).or_default() += n;
    }
}

/// Records one observation (seconds).
pub fn observe(name: &str, label_pairs: &[(&str, &str)], secs: f64) {
    if let Ok(mut h) = metrics().histograms.lock() {
        let h = h.entry((name.to_owned(), labels(label_pairs))).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }
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
    metrics().consuming.store(on, Ordering::Relaxed);
}

/// Whether the broker session is up with its consumers running.
pub fn consuming() -> bool {
    metrics().consuming.load(Ordering::Relaxed)
}

/// Counts a session started after the first.
pub fn count_reconnect() {
    metrics().reconnects.fetch_add(1, Ordering::Relaxed);
}

/// Everything recorded, in the Prometheus text format, plus the outbox backlog when the
/// caller could read it.
pub fn render(outbox_backlog: Option<i64>) -> String {
    let m = metrics();
    let mut out = String::new();
    if let Ok(c) = m.counters.lock() {
        let mut last = "";
        for ((name, l), v) in c.iter() {
            if name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            let _ = writeln!(out, "{name}{{{l}}} {v}");
        }
    }
    if let Ok(h) = m.histograms.lock() {
        let mut last = "";
        for ((name, l), h) in h.iter() {
            if name != last {
                let _ = writeln!(out, "# TYPE {name} histogram");
                last = name;
            }
            let sep = if l.is_empty() { "" } else { "," };
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "{name}_bucket{{{l}{sep}le=\"{b}\"}} {}", h.counts[i]);
            }
            let _ = writeln!(out, "{name}_bucket{{{l}{sep}le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{{l}}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{{l}}} {}", h.count);
        }
    }
    let _ = writeln!(out, "# TYPE collections_reconnects_total counter");
    let _ = writeln!(
        out,
        "collections_reconnects_total {}",
        m.reconnects.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# TYPE collections_consuming gauge");
    let _ = writeln!(out, "collections_consuming {}", u8::from(consuming()));
    if let Some(b) = outbox_backlog {
        let _ = writeln!(out, "# TYPE collections_outbox_backlog gauge");
        let _ = writeln!(out, "collections_outbox_backlog {b}");
    }
    out
}
