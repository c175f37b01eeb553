//! The machine's raw limits, measured in the same run as the service: RabbitMQ confirmed
//! publish and acked consume, the broker's own relay latency (no service code, no
//! database), and Postgres doing the workers' per-event work one transaction per event.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use futures::StreamExt;
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions,
    },
    types::FieldTable,
    Connection,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    env::Env,
    listen::exclusive_consumer,
    workload::{publish_confirmed, publish_paced, queue_publish, quorum_args},
};

/// Raw RabbitMQ rates, messages per second.
pub struct RawRabbit {
    pub publish_per_s: f64,
    pub consume_per_s: f64,
}

pub async fn raw_rabbit(conn: &Connection, n: usize, body_len: usize) -> anyhow::Result<RawRabbit> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let q = format!("bench.raw.{}", Uuid::new_v4().simple());
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        quorum_args(),
    )
    .await?;
    let body = vec![b'x'; body_len];
    let items: Vec<(String, Vec<u8>)> = (0..n).map(|_| (q.clone(), body.clone())).collect();
    let t = Instant::now();
    publish_confirmed(&ch, "", &items, 256).await?;
    let publish_per_s = n as f64 / t.elapsed().as_secs_f64();

    let cch = conn.create_channel().await?;
    cch.basic_qos(128, BasicQosOptions::default()).await?;
    let mut consumer = cch
        .basic_consume(
            q.as_str().into(),
            "raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let t = Instant::now();
    let mut got = 0;
    while got < n {
        let d = consumer.next().await.context("consumer ended")??;
        got += 1;
        // Multiple-ack every 64, as the workers ack once per batch.
        if got % 64 == 0 || got == n {
            d.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
    let consume_per_s = n as f64 / t.elapsed().as_secs_f64();
    ch.queue_delete(q.as_str().into(), Default::default())
        .await?;
    Ok(RawRabbit {
        publish_per_s,
        consume_per_s,
    })
}

/// The broker's own part of the publish-to-task-event latency, with no service code and no
/// database: events paced at `rate` for `secs` into a quorum queue, a consumer on its own
/// connection (as a worker has) that takes what has arrived, acks it with one
/// multiple-ack and republishes each message with confirms to a queue the benchmark
/// listens on. Returns the latencies in ms, sorted.
pub async fn raw_relay(
    env: &Env,
    rate: f64,
    secs: u64,
    body_len: usize,
) -> anyhow::Result<Vec<f64>> {
    let n = ((rate * secs as f64) as usize).max(1);
    let tag = Uuid::new_v4().simple().to_string();
    let inq = format!("bench.relay.in.{tag}");
    let ch = env.amqp.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(inq.as_str().into(), durable, quorum_args())
        .await?;
    let lch = env.amqp.create_channel().await?;

    // Listener: the receipt time of each message, by the index in its first 8 bytes.
    let got: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; n]));
    let (outq, mut listener) = exclusive_consumer(&lch, "relay-listener").await?;
    let sink = got.clone();
    let listening = tokio::spawn(async move {
        let mut seen = 0;
        while let Some(Ok(d)) = listener.next().await {
            let at = Instant::now();
            let Some(i) = d
                .data
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
            else {
                continue;
            };
            if let Ok(mut g) = sink.lock() {
                if let Some(slot) = g.get_mut(usize::try_from(i).unwrap_or(usize::MAX)) {
                    if slot.is_none() {
                        *slot = Some(at);
                        seen += 1;
                    }
                }
            }
            if seen == n {
                break;
            }
        }
    });

    // Relay, on a connection of its own.
    let relay_conn = collections_bus::connect(&env.amqp_url, "bench-relay").await?;
    let rch = relay_conn.create_channel().await?;
    rch.basic_qos(128, BasicQosOptions::default()).await?;
    let pch = relay_conn.create_channel().await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut consumer = rch
        .basic_consume(
            inq.as_str().into(),
            "relay".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let relay_outq = outq.clone();
    let relaying = tokio::spawn(async move {
        let mut relayed = 0;
        while relayed < n {
            let first = consumer.next().await.context("relay consumer ended")??;
            let mut batch = vec![first];
            while let Some(Some(d)) = futures::FutureExt::now_or_never(consumer.next()) {
                batch.push(d?);
            }
            relayed += batch.len();
            if let Some(last) = batch.last() {
                last.acker.ack(BasicAckOptions { multiple: true }).await?;
            }
            let mut waits = Vec::with_capacity(batch.len());
            for d in &batch {
                waits.push(queue_publish(&pch, "", &relay_outq, &d.data).await);
            }
            for w in waits {
                if w.await {
                    bail!("a relayed message was not confirmed");
                }
            }
        }
        Ok::<_, anyhow::Error>((rch, pch))
    });

    // Paced publisher, as in the latency phase.
    let bodies: Vec<Vec<u8>> = (0..n as u64)
        .map(|i| {
            let mut b = vec![b'x'; body_len.max(8)];
            b[..8].copy_from_slice(&i.to_le_bytes());
            b
        })
        .collect();
    let mut sent_at = Vec::with_capacity(n);
    let items = bodies.iter().map(|b| (inq.as_str(), b.as_slice()));
    let (_, nacks) = publish_paced(&ch, "", items, rate, |_| sent_at.push(Instant::now())).await;
    if nacks > 0 {
        bail!("{nacks} relay-phase events were not confirmed");
    }
    // The relay ends once it has republished (and had confirmed) every message, or with
    // its error; the listener then has them all within moments.
    let (rch, pch) = tokio::time::timeout(Duration::from_secs(60), relaying)
        .await
        .context("the relay did not pass every message on within 60 s")???;
    drop((rch, pch));
    tokio::time::timeout(Duration::from_secs(10), listening)
        .await
        .context("relayed messages did not reach the listener within 10 s")??;
    let _ = relay_conn.close(200, "bye".into()).await;
    ch.queue_delete(inq.as_str().into(), Default::default())
        .await?;
    let got = got.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    let mut l: Vec<f64> = sent_at
        .iter()
        .zip(got.iter())
        .filter_map(|(s, g)| g.map(|g| g.duration_since(*s).as_secs_f64() * 1000.0))
        .collect();
    l.sort_by(f64::total_cmp);
    Ok(l)
}

/// The workers' per-event work, one transaction per event, at `concurrency`, in the
/// fewest round trips the work allows (the same shape as the workers' transaction):
/// `BEGIN`; the read half (`collections_open_batch`: inbox row, account created if missing
/// and locked, open tasks loaded); the write half in one statement (account state, open
/// calls cancelled, a task inserted, two journal lines, an outbox row and its
/// `outbox_pending` entry); `COMMIT`.
pub async fn raw_postgres(
    db: &PgPool,
    n: usize,
    accounts: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let state = serde_json::to_value(collections_core::AccountState::new("x", "Asia/Shanghai"))?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (db, next, state) = (db.clone(), next.clone(), state.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, sqlx::Error>(());
                }
                let account = format!("raw-{}", (i * 7919) % accounts);
                let event = Uuid::new_v4();
                let mut tx = db.begin().await?;
                sqlx::query("SELECT * FROM collections_open_batch(ARRAY[$1::uuid], ARRAY['raw'], ARRAY['payment.failed'], ARRAY[$2::text], 15::float8)")
                    .bind(event).bind(&account).fetch_all(&mut *tx).await?;
                let task = Uuid::new_v4();
                sqlx::query(
                    "WITH acc AS (
                         UPDATE accounts SET state = $3, status = 'delinquent', overdue_minor = 1,
                                policy_version = 'raw', updated_at = now()
                         WHERE account_id = $2),
                     cancelled AS (
                         UPDATE tasks SET status = 'cancelled', cancelled_at = now(), cancel_reason = 'raw'
                         WHERE account_id = $2 AND status IN ('scheduled', 'claimed') AND kind = 'collection_call'),
                     planned AS (
                         INSERT INTO tasks (task_id, account_id, kind, channel, due_at, priority, tone,
                                            reason, cause_event_id, policy_version)
                         VALUES ($1, $2, 'collection_call', 'phone_mobile', now(), 6, 'gentle',
                                 'raw benchmark', $4, 'raw')),
                     noted AS (
                         INSERT INTO journal (account_id, event_id, kind, detail, policy_version, decided_at)
                         SELECT $2, $4, k, 'raw benchmark journal line of typical length', 'raw', now()
                         FROM unnest(ARRAY['event_applied', 'task_planned']) k),
                     sent AS (
                         INSERT INTO outbox (event_id, account_id, exchange, routing_key, body)
                         VALUES ($5, $2, 'collections.tasks', 'task.scheduled.collection_call', $3)
                         RETURNING id)
                     INSERT INTO outbox_pending (id, lease_until)
                     SELECT id, now() + interval '10 seconds' FROM sent",
                )
                .bind(task).bind(&account).bind(&state).bind(event).bind(Uuid::new_v4())
                .execute(&mut *tx).await?;
                tx.commit().await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}
