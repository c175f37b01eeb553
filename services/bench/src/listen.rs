//! A listener on the task exchange: what task events arrived, when, and how late.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use jiff::Timestamp;
use lapin::{
    options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
    Channel, Connection, Consumer,
};

/// What the listener has received so far.
#[derive(Default)]
pub struct Seen {
    pub received: usize,
    pub ids: HashSet<String>,
    pub duplicates: usize,
    /// First task event per cause event id.
    pub first_by_cause: HashMap<String, Timestamp>,
    /// `task.due` lateness in ms.
    pub lateness_ms: Vec<f64>,
}

/// The parts of a task event the listener reads.
#[derive(serde::Deserialize)]
struct TaskEventView<'a> {
    #[serde(borrow)]
    id: &'a str,
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow)]
    data: TaskDataView<'a>,
}

#[derive(serde::Deserialize)]
struct TaskDataView<'a> {
    #[serde(borrow, default)]
    cause_event_id: Option<&'a str>,
    #[serde(borrow, default)]
    due_at: Option<&'a str>,
}

/// An exclusive, server-named queue on `ch` and a no-ack consumer of it, as the
/// benchmark's listeners use: returns the queue's name (for binding) and the consumer.
pub async fn exclusive_consumer(ch: &Channel, tag: &str) -> anyhow::Result<(String, Consumer)> {
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?
        .name()
        .to_string();
    let consumer = ch
        .basic_consume(
            q.as_str().into(),
            tag.into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((q, consumer))
}

/// Listens to the task events whose routing key matches `key`.
pub async fn listen(conn: &Connection, key: &str) -> anyhow::Result<Arc<Mutex<Seen>>> {
    let ch = conn.create_channel().await?;
    let (q, mut consumer) = exclusive_consumer(&ch, "bench").await?;
    ch.queue_bind(
        q.as_str().into(),
        "collections.tasks".into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = seen.clone();
    tokio::spawn(async move {
        let _keep = ch;
        while let Some(Ok(d)) = consumer.next().await {
            let now = Timestamp::now();
            // Only the fields the figures need, borrowed: the listener shares the two
            // cores with what it measures, so it should cost as little as it can.
            let Ok(v) = serde_json::from_slice::<TaskEventView<'_>>(&d.data) else {
                continue;
            };
            let Ok(mut s) = sink.lock() else { return };
            s.received += 1;
            if !s.ids.insert(v.id.to_owned()) {
                s.duplicates += 1;
            }
            if let Some(cause) = v.data.cause_event_id {
                if !s.first_by_cause.contains_key(cause) {
                    s.first_by_cause.insert(cause.to_owned(), now);
                }
            }
            if v.kind == "task.due" {
                if let Some(due) = v.data.due_at.and_then(|t| t.parse::<Timestamp>().ok()) {
                    s.lateness_ms
                        .push(now.duration_since(due).as_secs_f64() * 1000.0);
                }
            }
        }
    });
    Ok(seen)
}
