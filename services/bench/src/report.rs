//! The figures of a run, printed as a Markdown table (the form BENCHMARKS.md quotes).

use std::time::Duration;

use crate::{
    cpu::CpuDelta,
    raw::RawRabbit,
    scrape::{Stage, STEPS},
};

/// The `p` quantile (0 to 1) of `sorted`, the nearest sample; NaN when it is empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Everything the ingest run prints, in the order the table shows it.
pub struct IngestReport<'a> {
    pub raw: RawRabbit,
    /// Raw Postgres events/s by concurrency.
    pub raw_pg_at: Vec<(usize, f64)>,
    /// Events in the throughput phase.
    pub n: usize,
    pub published_in: Duration,
    /// The service's end-to-end rate, events/s.
    pub rate: f64,
    /// The higher of the raw Postgres rates.
    pub raw_pg: f64,
    pub outbox_rows: i64,
    /// The latency phase's achieved and target rates.
    pub achieved: f64,
    pub half: f64,
    /// Publish-to-task-event latencies, ms, sorted.
    pub latencies: Vec<f64>,
    /// Events in the latency phase.
    pub lat_events: usize,
    pub to_tx: Vec<f64>,
    pub tx_to_task: Vec<f64>,
    pub relay: Vec<f64>,
    pub relay_cpu: CpuDelta,
    pub by_type: String,
    pub by_second: String,
    pub wal_rolled: &'a str,
    pub pg_wal: String,
    pub fpi: String,
    pub checkpoints: String,
    pub startup: Vec<(&'a str, Duration)>,
    pub rss: Vec<(String, u64)>,
    pub stages_after_throughput: Vec<(&'a str, Stage)>,
    pub stages_after_latency: Vec<(&'a str, Stage)>,
    pub raw_cpu: CpuDelta,
    pub throughput_cpu: CpuDelta,
    pub latency_cpu: CpuDelta,
    pub raw_scans: String,
    pub scans: String,
    pub hot: String,
    pub inbox: i64,
    pub want_all: i64,
    pub received: usize,
    pub outbox_all: i64,
    pub unpublished: i64,
    pub duplicates: usize,
    pub distinct: usize,
    /// Nothing lost or duplicated.
    pub ok: bool,
}

impl IngestReport<'_> {
    pub fn print(self) {
        let Self {
            raw,
            raw_pg_at,
            n,
            published_in,
            rate,
            raw_pg,
            outbox_rows,
            achieved,
            half,
            latencies,
            lat_events,
            to_tx,
            tx_to_task,
            relay,
            relay_cpu,
            by_type,
            by_second,
            wal_rolled,
            pg_wal,
            fpi,
            checkpoints,
            startup,
            rss,
            stages_after_throughput,
            stages_after_latency,
            raw_cpu,
            throughput_cpu,
            latency_cpu,
            raw_scans,
            scans,
            hot,
            inbox,
            want_all,
            received,
            outbox_all,
            unpublished,
            duplicates,
            distinct,
            ok,
        } = self;
        println!();
        println!("| figure | value |");
        println!("|---|---|");
        println!(
            "| raw RabbitMQ publish+confirm | {:.0} msg/s |",
            raw.publish_per_s
        );
        println!(
            "| raw RabbitMQ consume+ack | {:.0} msg/s |",
            raw.consume_per_s
        );
        for (c, r) in &raw_pg_at {
            println!("| raw Postgres, 1 tx per event, {c} concurrent | {r:.0} events/s |");
        }
        println!(
            "| service end to end ({n} events, publish took {:.1} s) | {rate:.0} events/s |",
            published_in.as_secs_f64()
        );
        println!(
            "| ratio service / raw Postgres (the higher of the rates above) | {:.2}x |",
            rate / raw_pg
        );
        println!(
            "| ratio service / raw RabbitMQ publish | {:.2}x |",
            rate / raw.publish_per_s
        );
        println!("| task events from the throughput phase | {outbox_rows} |");
        println!(
        "| publish-to-task-event latency at {achieved:.0} events/s (target {half:.0}; {} of {} events cause one): p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |",
        latencies.len(),
        lat_events,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
        println!(
        "| latency stages p50 / p99: publish to transaction start (queue, batch ahead, linger) / transaction start to task event received | {:.1} / {:.1} ms, {:.1} / {:.1} ms |",
        percentile(&to_tx, 0.5),
        percentile(&to_tx, 0.99),
        percentile(&tx_to_task, 0.5),
        percentile(&tx_to_task, 0.99)
    );
        println!(
        "| raw RabbitMQ relay at {half:.0} events/s ({} events; quorum queue → consumer on its own connection acks what arrived and republishes it with confirms → listener; no service code, no database): p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |",
        relay.len(),
        percentile(&relay, 0.5),
        percentile(&relay, 0.99),
        relay.last().copied().unwrap_or(f64::NAN)
    );
        println!(
        "| CPU during the relay ({:.1} s wall): workers / Postgres / RabbitMQ / bench / rest of the machine | {} |",
        relay_cpu.wall,
        relay_cpu.describe()
    );
        println!("| latency p99 by event type | {by_type} ms |");
        println!("| latency p99 by second of the phase | {by_second} ms |");
        println!(
        "| broker's quorum-queue WAL rolled over during the latency phase (its segment writes take CPU for about a second) | {wal_rolled} |"
    );
        println!(
        "| Postgres during the latency phase: WAL written / full-page images in it / checkpoints counted (after a checkpoint starts, the first change of each page logs the whole page) | {pg_wal} / {fpi} / {checkpoints} |"
    );
        for (b, d) in &startup {
            println!("| start-up to consuming: {b} | {} ms |", d.as_millis());
        }
        for (b, kib) in &rss {
            println!("| peak RSS: {b} | {:.1} MB |", *kib as f64 / 1024.0);
        }
        for (phase, before, after) in [
            ("throughput", None, &stages_after_throughput),
            (
                "latency",
                Some(&stages_after_throughput),
                &stages_after_latency,
            ),
        ] {
            for (i, s) in after.iter().enumerate() {
                let base = before
                    .and_then(|b| b.get(i))
                    .map_or(Stage::default(), |b| b.1);
                let (sum, count, events) = (
                    s.1.seconds - base.seconds,
                    s.1.batches - base.batches,
                    s.1.events - base.events,
                );
                if count <= 0.0 {
                    continue;
                }
                println!(
                "| {phase} phase, {}: batches / mean events per batch / mean transaction time | {count:.0} / {:.1} / {:.2} ms |",
                s.0,
                events / count,
                sum / count * 1000.0
            );
                let stepped = s.1.stepped - base.stepped;
                if stepped > 0.0 {
                    let means: Vec<String> = (0..STEPS.len())
                        .map(|k| {
                            format!("{:.2}", (s.1.steps[k] - base.steps[k]) / stepped * 1000.0)
                        })
                        .collect();
                    println!(
                        "| {phase} phase, {}: committed transaction, mean per step: {} | {} ms |",
                        s.0,
                        STEPS.join(" / "),
                        means.join(" / ")
                    );
                }
            }
        }
        for (phase, d) in [
            ("raw Postgres", &raw_cpu),
            ("throughput", &throughput_cpu),
            ("latency", &latency_cpu),
        ] {
            println!(
            "| CPU during the {phase} phase ({:.1} s wall): workers / Postgres / RabbitMQ / bench / rest of the machine | {} |",
            d.wall,
            d.describe()
        );
        }
        println!(
            "| machine CPU per event (all processes): throughput phase / latency phase | {} / {} |",
            throughput_cpu.per_event(n),
            latency_cpu.per_event(lat_events)
        );
        println!("| sequential scans / rows read and task index use, cumulative (after the raw phase: {raw_scans}) | {scans} |");
        println!("| row updates that were HOT (no new index entry), whole run | {hot} |");
        println!("| check: inbox rows / events published | {inbox} / {want_all} |");
        println!("| check: task events received / outbox rows / unpublished | {received} / {outbox_all} / {unpublished} |");
        println!("| check: duplicate task event ids / distinct | {duplicates} / {distinct} |");
        println!(
            "| nothing lost or duplicated | {} |",
            if ok { "yes" } else { "NO" }
        );
    }
}

/// Everything the scheduler run prints, in the order the table shows it.
pub struct SchedulerReport {
    pub raw: RawRabbit,
    pub future: usize,
    /// Due-soon tasks planned in the lateness phase, and their rate.
    pub planned: usize,
    pub achieved: f64,
    pub lead_ms: u64,
    pub notify: bool,
    /// `task.due` lateness, ms, sorted.
    pub late: Vec<f64>,
    pub backlog: usize,
    pub batch: String,
    pub drain_secs: f64,
    pub drain: f64,
    /// Seconds from spawn to the first `task.due`.
    pub first: f64,
    pub received_secs: f64,
    pub quarters: Vec<String>,
    pub drain_cpu: CpuDelta,
    pub rss: Vec<(String, u64)>,
    pub emitted: i64,
    pub dup: usize,
}

impl SchedulerReport {
    pub fn print(self) {
        let Self {
            raw,
            future,
            planned,
            achieved,
            lead_ms,
            notify,
            late,
            backlog,
            batch,
            drain_secs,
            drain,
            first,
            received_secs,
            quarters,
            drain_cpu,
            rss,
            emitted,
            dup,
        } = self;
        println!();
        println!("| figure | value |");
        println!("|---|---|");
        println!(
            "| raw RabbitMQ publish+confirm | {:.0} msg/s |",
            raw.publish_per_s
        );
        println!("| future tasks in the table | {future} |");
        println!(
        "| due-soon tasks planned | {planned} ({achieved:.0}/s, each due {lead_ms} ms after insert, 50 per insert every 50 ms) |"
    );
        println!(
            "| scheduler wake-up | {} |",
            if notify {
                "pg_notify after every insert"
            } else {
                "no NOTIFY: its own sleep until the earliest due_at, looking at least every 1 s"
            }
        );
        println!(
            "| lateness p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |",
            percentile(&late, 0.5),
            percentile(&late, 0.99),
            late.last().copied().unwrap_or(f64::NAN)
        );
        println!(
        "| backlog drain ({backlog} due tasks, batch {batch}, {drain_secs:.1} s) | {drain:.0} tasks/s |"
    );
        println!(
            "| drain: spawn to first task.due | {:.0} ms |",
            first * 1000.0
        );
        println!(
        "| drain: spawn to last task.due received / to all rows emitted | {received_secs:.1} s / {drain_secs:.1} s |"
    );
        println!(
            "| drain: rate per quarter of the backlog | {} tasks/s |",
            quarters.join(" / ")
        );
        println!(
        "| CPU during the drain ({:.1} s wall): scheduler / Postgres / RabbitMQ / bench / rest of the machine | {} |",
        drain_cpu.wall,
        drain_cpu.describe()
    );
        println!(
            "| ratio drain / raw publish+confirm | {:.2}x |",
            drain / raw.publish_per_s
        );
        for (b, kib) in &rss {
            println!("| peak RSS: {b} | {:.1} MB |", *kib as f64 / 1024.0);
        }
        println!(
            "| check: emitted rows / fired, duplicate ids | {emitted} / {}, {dup} |",
            planned + backlog
        );
    }
}
