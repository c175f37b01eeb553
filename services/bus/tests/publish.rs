//! The confirmed publisher against the real broker (`AMQP_URL`, default the local one):
//! messages queued together still arrive complete and in order, and a publish the broker
//! refuses is an error, never a silent success.

use std::time::Duration;

use collections_bus::{
    lapin::{
        options::{BasicConsumeOptions, QueueDeclareOptions},
        types::FieldTable,
    },
    OutMessage, Publisher,
};
use futures::StreamExt;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[tokio::test]
async fn pipelined_publishes_arrive_complete_and_in_order() {
    let conn = collections_bus::connect(&amqp_url(), "bus-test-order")
        .await
        .expect("broker reachable");
    let ch = conn.create_channel().await.expect("channel");
    // A server-named exclusive queue: private to this test, gone with the connection.
    let queue = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare queue");
    let name = queue.name().as_str().to_owned();
    let publisher = Publisher::open(&conn).await.expect("publisher");

    let bodies: Vec<String> = (0..1200).map(|i| format!("{{\"n\":{i}}}")).collect();
    let ids: Vec<String> = (0..bodies.len()).map(|i| format!("id-{i}")).collect();
    // Rounds of different sizes, as a worker's committed batches are.
    let mut start = 0;
    for size in [1, 7, 64, 500, 628] {
        let msgs: Vec<OutMessage<'_>> = (start..start + size)
            .map(|i| OutMessage::cloudevent("", &name, bodies[i].as_bytes(), &ids[i]))
            .collect();
        publisher
            .publish_confirmed(&msgs)
            .await
            .expect("every message confirmed");
        start += size;
    }
    assert_eq!(start, bodies.len());

    let mut consumer = ch
        .basic_consume(
            name.as_str().into(),
            "bus-test".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    for (i, body) in bodies.iter().enumerate() {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("message {i} never arrived"))
            .expect("consumer open")
            .expect("delivery");
        assert_eq!(
            std::str::from_utf8(&d.data).expect("utf-8"),
            body,
            "message {i}"
        );
        let id = d
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_owned());
        assert_eq!(id.as_deref(), Some(ids[i].as_str()));
    }
    let extra = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await;
    assert!(extra.is_err(), "no message twice");
}

#[tokio::test]
async fn a_refused_publish_is_an_error() {
    let conn = collections_bus::connect(&amqp_url(), "bus-test-refused")
        .await
        .expect("broker reachable");
    let publisher = Publisher::open(&conn).await.expect("publisher");
    let bodies: Vec<Vec<u8>> = (0..20).map(|i| vec![b'x'; i + 1]).collect();
    // The broker closes the channel (404) on the first message; the rest never get a
    // confirm. The call must fail, not report them stored.
    let msgs: Vec<OutMessage<'_>> = bodies
        .iter()
        .map(|b| OutMessage::cloudevent("collections.no-such-exchange", "x", b, "id"))
        .collect();
    let result = tokio::time::timeout(Duration::from_secs(10), publisher.publish_confirmed(&msgs))
        .await
        .expect("answers promptly");
    assert!(
        result.is_err(),
        "a publish to a missing exchange is refused"
    );
}

/// A mandatory publish no queue takes (here: an exchange with no binding, as a dead
/// letter meets when its `.dlq` binding is gone) is returned by the broker: an error
/// naming the target, never a success for a message that was dropped.
#[tokio::test]
async fn a_mandatory_publish_that_reaches_no_queue_is_an_error() {
    use collections_bus::{
        lapin::{options::ExchangeDeclareOptions, ExchangeKind},
        BusError,
    };
    let conn = collections_bus::connect(&amqp_url(), "bus-test-returned")
        .await
        .expect("broker reachable");
    let ch = conn.create_channel().await.expect("channel");
    let exchange = format!("bus-test-unbound-{}", std::process::id());
    ch.exchange_declare(
        exchange.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("exchange");
    let publisher = Publisher::open(&conn).await.expect("publisher");
    let mut msg = OutMessage::cloudevent(&exchange, "x.dlq", b"{}", "id-1");
    let not_mandatory = publisher.publish_confirmed(&[msg.clone()]).await;
    assert!(
        not_mandatory.is_ok(),
        "without mandatory the broker drops it silently: {not_mandatory:?}"
    );
    msg.mandatory = true;
    let result = publisher.publish_confirmed(&[msg]).await;
    match result {
        Err(BusError::Returned(target, reply)) => {
            assert_eq!(target, format!("{exchange}/x.dlq"));
            assert!(reply.contains("NO_ROUTE"), "{reply}");
        }
        other => panic!("a returned publish must fail, got {other:?}"),
    }
}
