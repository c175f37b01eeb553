//! `collectionsctl dlq` against a real RabbitMQ (a vhost of its own): list counts, show
//! keeps the message, replay re-publishes it with its original routing key.

use std::process::Command;

use collections_bus::{
    dead_letter_headers,
    lapin::{
        options::{
            BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
        },
        types::FieldTable,
        BasicProperties,
    },
    DEAD_LETTER_EXCHANGE,
};
use uuid::Uuid;

fn rabbitmqctl(args: &[&str]) {
    let ok = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs")
        .status
        .success();
    assert!(ok, "rabbitmqctl {args:?}");
}

fn ctl(url: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_collectionsctl"))
        .env("AMQP_URL", url)
        .args(args)
        .output()
        .expect("collectionsctl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn dead_letters_are_listed_shown_and_replayed_to_their_queue() {
    let vhost = format!("ctl_{}", &Uuid::new_v4().simple().to_string()[..10]);
    rabbitmqctl(&["add_vhost", &vhost]);
    rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
    let url = format!("amqp://guest:guest@127.0.0.1:5672/{vhost}");
    let conn = collections_bus::connect(&url, "ctl-test")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    collections_bus::declare_topology(&ch)
        .await
        .expect("topology");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let headers = dead_letter_headers(
        None,
        "schema",
        "payment.failed data: missing field `installment`",
        "collections.payment-failed",
        "payment.failed",
    );
    ch.basic_publish(
        DEAD_LETTER_EXCHANGE.into(),
        "collections.payment-failed.dlq".into(),
        BasicPublishOptions::default(),
        b"{\"fixed\": \"later\"}",
        BasicProperties::default().with_headers(headers),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");

    let list = ctl(&url, &["dlq", "list"]);
    assert!(
        list.lines().any(
            |l| l.starts_with("collections.payment-failed.dlq") && l.trim_end().ends_with(" 1")
        ),
        "{list}"
    );
    let shown = ctl(&url, &["dlq", "show", "collections.payment-failed"]);
    assert!(shown.contains("reason=schema"), "{shown}");
    assert!(shown.contains("routing_key=payment.failed"), "{shown}");
    let still = ctl(&url, &["dlq", "list"]);
    assert!(
        still.lines().any(
            |l| l.starts_with("collections.payment-failed.dlq") && l.trim_end().ends_with(" 1")
        ),
        "show keeps it: {still}"
    );

    let replayed = ctl(&url, &["dlq", "replay", "collections.payment-failed"]);
    assert!(replayed.contains("replayed 1"), "{replayed}");
    let q = ch
        .queue_declare(
            "collections.payment-failed.dlq".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("dlq");
    assert_eq!(
        q.message_count(),
        0,
        "replay removes it from the dead-letter queue"
    );
    let back = ch
        .basic_get(
            "collections.payment-failed".into(),
            BasicGetOptions::default(),
        )
        .await
        .expect("get")
        .expect("the message is back on its queue");
    assert_eq!(back.delivery.data, b"{\"fixed\": \"later\"}");
    let _ = conn.close(200, "bye".into()).await;
    rabbitmqctl(&["delete_vhost", &vhost]);
}
