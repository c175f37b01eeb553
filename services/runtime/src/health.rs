//! `/health/live`, `/health/ready` and `/metrics` (Prometheus text format) on a small
//! HTTP/1.1 listener of our own: three fixed GET routes do not justify a web framework.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use collections_store::Store;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;

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
pub struct Metrics {
    counters: Mutex<BTreeMap<(String, String), u64>>,
    histograms: Mutex<BTreeMap<(String, String), Histogram>>,
    /// Broker session up and consumers running.
    pub consuming: AtomicBool,
    /// Sessions started after the first (reconnects).
    pub reconnects: AtomicU64,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
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

impl Metrics {
    /// Adds `n` to a counter.
    pub fn inc(&self, name: &str, label_pairs: &[(&str, &str)], n: u64) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entry((name.to_owned(), labels(label_pairs))).or_default() += n;
        }
    }

    /// Records one observation (seconds).
    pub fn observe(&self, name: &str, label_pairs: &[(&str, &str)], secs: f64) {
        if let Ok(mut h) = self.histograms.lock() {
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

    fn render(&self, outbox_backlog: Option<i64>) -> String {
        let mut out = String::new();
        if let Ok(c) = self.counters.lock() {
            let mut last = "";
            for ((name, l), v) in c.iter() {
                if name != last {
                    let _ = writeln!(out, "# TYPE {name} counter");
                    last = name;
                }
                let _ = writeln!(out, "{name}{{{l}}} {v}");
            }
        }
        if let Ok(h) = self.histograms.lock() {
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
            self.reconnects.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE collections_consuming gauge");
        let _ = writeln!(
            out,
            "collections_consuming {}",
            u8::from(self.consuming.load(Ordering::Relaxed))
        );
        if let Some(b) = outbox_backlog {
            let _ = writeln!(out, "# TYPE collections_outbox_backlog gauge");
            let _ = writeln!(out, "collections_outbox_backlog {b}");
        }
        out
    }
}

/// What readiness looks at besides the database: the broker connection of the current
/// session (none between sessions).
fn broker() -> &'static Mutex<Option<lapin::ConnectionStatus>> {
    static B: OnceLock<Mutex<Option<lapin::ConnectionStatus>>> = OnceLock::new();
    B.get_or_init(|| Mutex::new(None))
}

/// Records the broker connection readiness should watch (`None` when the session ended).
pub fn set_broker(status: Option<&lapin::ConnectionStatus>) {
    if let Ok(mut b) = broker().lock() {
        *b = status.cloned();
    }
}

fn broker_connected() -> bool {
    broker()
        .lock()
        .ok()
        .and_then(|b| b.as_ref().map(lapin::ConnectionStatus::connected))
        .unwrap_or(false)
}

/// Serves the health and metrics routes on `addr` until cancelled. `addr` port 0 picks a
/// free port; the bound address is logged.
///
/// The routes use a pool of their own (one connection, opened on first use): readiness
/// must not report the database down because the workers' connections are all busy, and
/// `/health/live` answers before the database is reachable at all.
///
/// # Errors
/// When the address cannot be bound or the database URL is malformed.
pub async fn serve(
    addr: SocketAddr,
    database_url: &str,
    token: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let opts: sqlx::postgres::PgConnectOptions = database_url.parse()?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy_with(opts);
    let store = Arc::new(Store::from_pool(pool));
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, "health and metrics listening");
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = tokio::select! {
                () = token.cancelled() => return,
                r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
            };
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n =
                    match tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await {
                        Ok(Ok(n)) => n,
                        _ => return,
                    };
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = route(path, &store).await;
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(bound)
}

async fn route(path: &str, store: &Store) -> (&'static str, String) {
    match path {
        "/health/live" => ("200 OK", "live\n".to_owned()),
        "/health/ready" => {
            let db = tokio::time::timeout(Duration::from_secs(2), store.ping())
                .await
                .is_ok_and(|r| r.is_ok());
            let broker = broker_connected();
            let consuming = metrics().consuming.load(Ordering::Relaxed);
            let body = format!(
                "database={} broker={} consuming={consuming}\n",
                if db { "ok" } else { "down" },
                if broker { "connected" } else { "down" },
            );
            if db && broker && consuming {
                ("200 OK", format!("ready\n{body}"))
            } else {
                ("503 Service Unavailable", body)
            }
        }
        "/metrics" => {
            let backlog = tokio::time::timeout(Duration::from_secs(1), store.outbox_backlog())
                .await
                .ok()
                .and_then(Result::ok);
            ("200 OK", metrics().render(backlog))
        }
        _ => ("404 Not Found", "not found\n".to_owned()),
    }
}

/// Starts the listener when `HEALTH_ADDR` is set (e.g. `0.0.0.0:9100`; port 0 picks one).
/// Call it first thing: liveness answers while the database and broker are still away.
///
/// # Errors
/// A malformed address or a port in use.
pub async fn serve_from_env(database_url: &str, token: &CancellationToken) -> anyhow::Result<()> {
    if let Ok(addr) = std::env::var("HEALTH_ADDR") {
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| anyhow::anyhow!("HEALTH_ADDR={addr:?}: {e}"))?;
        serve(addr, database_url, token.clone()).await?;
    }
    Ok(())
}
