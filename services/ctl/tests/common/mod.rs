//! Shared by the broker tests: a vhost of their own and the real `collectionsctl` binary.

#![allow(dead_code)] // each test crate uses its own subset

use std::process::{Command, Output};

use collections_bus::lapin::{
    options::{BasicGetOptions, QueueDeclareOptions},
    types::FieldTable,
    BasicProperties, Channel, Connection,
};
use uuid::Uuid;

pub fn rabbitmqctl(args: &[&str]) {
    let ok = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs")
        .status
        .success();
    assert!(ok, "rabbitmqctl {args:?}");
}

/// A vhost that exists for one test and is deleted when it ends, even by a panic.
pub struct Vhost {
    pub name: String,
    pub url: String,
}

impl Vhost {
    pub fn new() -> Self {
        let name = format!("ctl_{}", &Uuid::new_v4().simple().to_string()[..10]);
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        let url = format!("amqp://guest:guest@127.0.0.1:5672/{name}");
        Self { name, url }
    }

    pub async fn connect(&self) -> Connection {
        collections_bus::connect(&self.url, "ctl-test")
            .await
            .expect("connect")
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

/// Runs `collectionsctl` against `url`.
pub fn ctl_output(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_collectionsctl"))
        .env("AMQP_URL", url)
        .args(args)
        .output()
        .expect("collectionsctl runs")
}

/// Runs `collectionsctl`, which must succeed, and returns its standard output.
pub fn ctl(url: &str, args: &[&str]) -> String {
    let out = ctl_output(url, args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The count `dlq list` prints for `queue`.
pub fn listed(list: &str, queue: &str) -> Option<u64> {
    list.lines().find_map(|l| {
        let mut cols = l.split_whitespace();
        (cols.next()? == queue).then_some(())?;
        cols.next()?.parse().ok()
    })
}

pub async fn count(conn: &Connection, queue: &str) -> u32 {
    // A channel of its own: a passive declare of a missing queue closes it.
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("queue {queue}: {e}"))
    .message_count()
}

/// Takes every message of `queue` (acked) with its properties.
pub async fn drain(ch: &Channel, queue: &str) -> Vec<(BasicProperties, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
    {
        out.push((m.delivery.properties, m.delivery.data));
    }
    out
}
