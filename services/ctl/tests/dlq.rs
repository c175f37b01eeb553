//! `collectionsctl dlq` against a real RabbitMQ (a vhost of its own per test): list
//! counts, show keeps the message, replay re-publishes it with its original routing key,
//! and never loses nor repeats one.

mod common;

use collections_bus::{
    dead_letter_headers, header_str,
    lapin::{
        options::{
            BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
            ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
        },
        types::{AMQPValue, FieldTable, LongString},
        BasicProperties, Channel, ExchangeKind,
    },
    DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE,
};
use common::{count, ctl, ctl_output, drain, listed, Vhost};

const SOURCE: &str = "collections.payment-failed";
const DLQ: &str = "collections.payment-failed.dlq";

async fn confirm_channel(conn: &collections_bus::lapin::Connection) -> Channel {
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    ch
}

/// Puts a dead letter into the payment-failed DLQ as a worker would: the original
/// properties, plus the reason headers naming `routing_key`.
async fn dead_letter(ch: &Channel, routing_key: &str, body: &[u8], props: BasicProperties) {
    let headers = dead_letter_headers(
        props.headers().as_ref(),
        "schema",
        "payment.failed data: missing field `installment`",
        SOURCE,
        routing_key,
    );
    let confirm = ch
        .basic_publish(
            DEAD_LETTER_EXCHANGE.into(),
            DLQ.into(),
            BasicPublishOptions::default(),
            body,
            props.with_headers(headers),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert_eq!(confirm, collections_bus::lapin::Confirmation::Ack(None));
}

#[tokio::test]
async fn dead_letters_are_listed_shown_and_replayed_to_their_queue() {
    let vhost = Vhost::new();
    let conn = vhost.connect().await;
    collections_bus::declare_topology_on(&conn)
        .await
        .expect("topology");
    let ch = confirm_channel(&conn).await;
    dead_letter(
        &ch,
        "payment.failed",
        b"{\"fixed\": \"later\"}",
        BasicProperties::default(),
    )
    .await;

    let list = ctl(&vhost.url, &["dlq", "list"]);
    assert_eq!(listed(&list, DLQ), Some(1), "{list}");
    assert_eq!(listed(&list, "collections.unrouted"), Some(0), "{list}");
    let shown = ctl(&vhost.url, &["dlq", "show", SOURCE]);
    assert!(shown.contains("reason=schema"), "{shown}");
    assert!(shown.contains("routing_key=payment.failed"), "{shown}");
    let still = ctl(&vhost.url, &["dlq", "list"]);
    assert_eq!(listed(&still, DLQ), Some(1), "show keeps it: {still}");

    let replayed = ctl(&vhost.url, &["dlq", "replay", SOURCE]);
    assert!(replayed.contains("replayed 1 "), "{replayed}");
    assert!(replayed.contains("kept 0 "), "{replayed}");
    assert_eq!(
        count(&conn, DLQ).await,
        0,
        "replay removes it from the dead-letter queue"
    );
    let back = ch
        .basic_get(SOURCE.into(), BasicGetOptions::default())
        .await
        .expect("get")
        .expect("the message is back on its queue");
    assert_eq!(back.delivery.data, b"{\"fixed\": \"later\"}");
    let _ = conn.close(200, "bye".into()).await;
}

/// A broker whose `collections.events` has no alternate exchange drops what it cannot
/// route: the mandatory flag must bring the replay back, and the dead letter must stay.
#[tokio::test]
async fn a_replay_that_reaches_no_queue_keeps_the_dead_letter_and_says_so() {
    let vhost = Vhost::new();
    let conn = vhost.connect().await;
    // As on a broker set up before the alternate exchange existed.
    let ch = conn.create_channel().await.expect("channel");
    ch.exchange_declare(
        EVENTS_EXCHANGE.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("old exchange");
    collections_bus::declare_topology_on(&conn)
        .await
        .expect("topology");
    let ch = confirm_channel(&conn).await;
    dead_letter(
        &ch,
        "payment.refunded",
        b"{\"type\": \"payment.refunded\"}",
        BasicProperties::default().with_message_id("evt-refund-1".into()),
    )
    .await;

    let out = ctl_output(&vhost.url, &["dlq", "replay", SOURCE]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a kept message fails the run: {stdout}"
    );
    assert!(
        stdout.contains("kept message_id=evt-refund-1: returned, no queue is bound to routing key payment.refunded"),
        "{stdout}"
    );
    assert!(stdout.contains("replayed 0 "), "{stdout}");
    assert!(stdout.contains("kept 1 (returned 1,"), "{stdout}");
    assert!(
        stderr.contains("still in collections.payment-failed.dlq"),
        "{stderr}"
    );
    assert!(
        stderr.contains("no alternate-exchange argument"),
        "the binary says unroutable events are dropped here: {stderr}"
    );

    let kept = drain(&ch, DLQ).await;
    assert_eq!(kept.len(), 1, "the dead letter is still there");
    let (props, body) = &kept[0];
    assert_eq!(body, b"{\"type\": \"payment.refunded\"}");
    assert_eq!(
        header_str(props, collections_bus::HEADER_ERROR).as_deref(),
        Some("schema"),
        "unchanged, reason included"
    );
    let _ = conn.close(200, "bye".into()).await;
}

/// Where `collections.events` has its alternate exchange, the broker does not return an
/// unroutable replay: it keeps it in `collections.unrouted`, so nothing is lost either.
#[tokio::test]
async fn with_the_alternate_exchange_an_unroutable_replay_moves_to_unrouted() {
    let vhost = Vhost::new();
    let conn = vhost.connect().await;
    collections_bus::declare_topology_on(&conn)
        .await
        .expect("topology");
    let ch = confirm_channel(&conn).await;
    dead_letter(
        &ch,
        "payment.refunded",
        b"{\"type\": \"payment.refunded\"}",
        BasicProperties::default().with_message_id("evt-refund-2".into()),
    )
    .await;

    let replayed = ctl(&vhost.url, &["dlq", "replay", SOURCE]);
    assert!(replayed.contains("replayed 1 "), "{replayed}");
    assert_eq!(count(&conn, DLQ).await, 0);
    let list = ctl(&vhost.url, &["dlq", "list"]);
    assert_eq!(listed(&list, "collections.unrouted"), Some(1), "{list}");
    let shown = ctl(&vhost.url, &["dlq", "show", "collections.unrouted"]);
    assert!(
        shown.contains("reason=unrouted (no queue for routing key payment.refunded)"),
        "{shown}"
    );
    let _ = conn.close(200, "bye".into()).await;
}

/// A message still bad after its replay comes back into the DLQ during the same run; it
/// must wait for the next run instead of being replayed again up to --limit.
#[tokio::test]
async fn a_replay_run_replays_each_dead_letter_once() {
    let vhost = Vhost::new();
    let conn = vhost.connect().await;
    collections_bus::declare_topology_on(&conn)
        .await
        .expect("topology");
    let ch = confirm_channel(&conn).await;
    // Replays with this key land straight back in the DLQ (as a worker refusing them
    // again would put them), and a copy of each in a probe queue that counts replays.
    ch.queue_declare(
        "probe".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("probe queue");
    for queue in [DLQ, "probe"] {
        ch.queue_bind(
            queue.into(),
            EVENTS_EXCHANGE.into(),
            "still.bad".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    }
    for i in 0..3 {
        dead_letter(
            &ch,
            "still.bad",
            format!("{{\"n\": {i}}}").as_bytes(),
            BasicProperties::default().with_message_id(format!("evt-{i}").into()),
        )
        .await;
    }

    let replayed = ctl(&vhost.url, &["dlq", "replay", SOURCE, "--limit", "100"]);
    assert!(replayed.contains("replayed 3 "), "{replayed}");
    assert!(replayed.contains("3 there at start"), "{replayed}");
    let mut ids: Vec<String> = drain(&ch, "probe")
        .await
        .iter()
        .filter_map(|(p, _)| p.message_id().as_ref().map(ToString::to_string))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["evt-0", "evt-1", "evt-2"],
        "each replayed exactly once"
    );
    assert_eq!(count(&conn, DLQ).await, 3, "back for the next run");

    // --limit bounds a run too.
    let again = ctl(&vhost.url, &["dlq", "replay", SOURCE, "--limit", "2"]);
    assert!(again.contains("replayed 2 "), "{again}");
    assert_eq!(count(&conn, DLQ).await, 1, "the third waits");
    let _ = conn.close(200, "bye".into()).await;
}

#[tokio::test]
async fn a_replay_keeps_the_message_id_and_properties() {
    let vhost = Vhost::new();
    let conn = vhost.connect().await;
    collections_bus::declare_topology_on(&conn)
        .await
        .expect("topology");
    let ch = confirm_channel(&conn).await;
    let mut original_headers = FieldTable::default();
    original_headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )),
    );
    dead_letter(
        &ch,
        "payment.failed",
        b"{\"id\": \"5b0f3c1e\"}",
        BasicProperties::default()
            .with_message_id("5b0f3c1e-8d2a-4c47-9f61-2e7a1d9b4c01".into())
            .with_content_type("application/cloudevents+json".into())
            .with_correlation_id("corr-7".into())
            .with_app_id("billing".into())
            .with_timestamp(1_762_132_502)
            .with_headers(original_headers),
    )
    .await;

    let replayed = ctl(&vhost.url, &["dlq", "replay", SOURCE]);
    assert!(replayed.contains("replayed 1 "), "{replayed}");
    let back = drain(&ch, SOURCE).await;
    assert_eq!(back.len(), 1);
    let (p, body) = &back[0];
    assert_eq!(body, b"{\"id\": \"5b0f3c1e\"}");
    let s = |v: &Option<collections_bus::lapin::types::ShortString>| {
        v.as_ref().map(ToString::to_string)
    };
    assert_eq!(
        s(p.message_id()).as_deref(),
        Some("5b0f3c1e-8d2a-4c47-9f61-2e7a1d9b4c01")
    );
    assert_eq!(
        s(p.content_type()).as_deref(),
        Some("application/cloudevents+json")
    );
    assert_eq!(s(p.correlation_id()).as_deref(), Some("corr-7"));
    assert_eq!(s(p.app_id()).as_deref(), Some("billing"));
    assert_eq!(*p.timestamp(), Some(1_762_132_502));
    assert_eq!(*p.delivery_mode(), Some(2));
    let headers = p.headers().clone().unwrap_or_default();
    let keys: Vec<String> = headers
        .inner()
        .keys()
        .map(ToString::to_string)
        // Added by the quorum queue on this very delivery.
        .filter(|k| k != "x-delivery-count")
        .collect();
    assert_eq!(
        keys,
        ["traceparent"],
        "the event's own headers stay, the dead-letter ones go"
    );
    let _ = conn.close(200, "bye".into()).await;
}

/// A negative confirm (here: the target queue is full and rejects publishes) must not
/// cost the dead letter.
#[tokio::test]
async fn a_refused_replay_keeps_the_dead_letter() {
    let vhost = Vhost::new();
    let conn = vhost.connect().await;
    collections_bus::declare_topology_on(&conn)
        .await
        .expect("topology");
    common::rabbitmqctl(&[
        "set_policy",
        "-p",
        &vhost.name,
        "--apply-to",
        "queues",
        "full",
        "^collections\\.payment-failed$",
        r#"{"max-length": 1, "overflow": "reject-publish"}"#,
    ]);
    let ch = confirm_channel(&conn).await;
    // A quorum queue lets the limit be reached before it refuses: fill it until it does.
    let mut refused = false;
    for _ in 0..5 {
        let filler = ch
            .basic_publish(
                EVENTS_EXCHANGE.into(),
                "payment.failed".into(),
                BasicPublishOptions::default(),
                b"{}",
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        if filler.is_nack() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the full queue refuses publishes");
    dead_letter(
        &ch,
        "payment.failed",
        b"{\"n\": 1}",
        BasicProperties::default().with_message_id("evt-full".into()),
    )
    .await;

    let out = ctl_output(&vhost.url, &["dlq", "replay", SOURCE]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("kept message_id=evt-full: the broker refused it"),
        "{stdout}"
    );
    assert!(stdout.contains("nacked 1"), "{stdout}");
    assert_eq!(count(&conn, DLQ).await, 1, "the dead letter stays");
    let _ = conn.close(200, "bye".into()).await;
}

/// A message that crashes its consumer is dead-lettered by RabbitMQ itself after
/// `x-delivery-limit` deliveries, with `x-death` and none of our headers.
#[tokio::test]
async fn a_message_dead_lettered_by_the_delivery_limit_is_shown_and_replayed() {
    let vhost = Vhost::new();
    let conn = vhost.connect().await;
    collections_bus::declare_topology_on(&conn)
        .await
        .expect("topology");
    let ch = confirm_channel(&conn).await;
    ch.basic_publish(
        EVENTS_EXCHANGE.into(),
        "payment.failed".into(),
        BasicPublishOptions::default(),
        b"{\"crashes\": \"the worker\"}",
        BasicProperties::default().with_message_id("evt-poison".into()),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
    // A consumer that dies on it, over and over.
    let mut deliveries = 0;
    while let Some(m) = ch
        .basic_get(SOURCE.into(), BasicGetOptions::default())
        .await
        .expect("get")
    {
        deliveries += 1;
        assert!(deliveries <= 20, "the broker never dead-lettered it");
        m.delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .expect("nack");
    }
    // Dead-lettering by a quorum queue is asynchronous.
    for _ in 0..50 {
        if count(&conn, DLQ).await == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(count(&conn, DLQ).await, 1, "dead-lettered by the broker");

    let shown = ctl(&vhost.url, &["dlq", "show", SOURCE]);
    assert!(shown.contains("reason=delivery_limit (x-death)"), "{shown}");
    assert!(shown.contains("routing_key=payment.failed"), "{shown}");
    let replayed = ctl(&vhost.url, &["dlq", "replay", DLQ]);
    assert!(replayed.contains("replayed 1 "), "{replayed}");
    let back = drain(&ch, SOURCE).await;
    assert_eq!(back.len(), 1);
    let (p, _) = &back[0];
    assert_eq!(
        p.message_id().as_ref().map(ToString::to_string).as_deref(),
        Some("evt-poison")
    );
    let headers = p.headers().clone().unwrap_or_default();
    assert!(
        !headers.inner().keys().any(|k| k.as_str().contains("death")),
        "a replay starts afresh: {headers:?}"
    );
    let _ = conn.close(200, "bye".into()).await;
}

/// The delivery limit a test gives its dead-letter queue: a broker on which every
/// inspection that returns a message counts a delivery (RabbitMQ 4.0 gives quorum queues
/// 20 by default; this small one makes the test quick).
const SMALL_LIMIT: i64 = 3;

/// Declares the payment-failed DLQ as a broker configured with a small delivery limit
/// would have it, before the topology: `declare_topology_on` must carry on past it.
async fn dlq_with_small_limit(conn: &collections_bus::lapin::Connection) {
    let ch = conn.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(SMALL_LIMIT),
    );
    ch.queue_declare(
        DLQ.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("dlq with a small delivery limit");
}

/// `dlq show` run many more times than the queue's delivery limit: the dead letter, its
/// reason and its place are all still there (showing never returns a message, which a
/// quorum queue would count as a delivery and drop past the limit).
#[tokio::test]
async fn showing_a_dead_letter_more_often_than_the_delivery_limit_keeps_it() {
    let vhost = Vhost::new();
    let conn = vhost.connect().await;
    dlq_with_small_limit(&conn).await;
    collections_bus::declare_topology_on(&conn)
        .await
        .expect("topology, past the DLQ that predates its delivery limit");
    let ch = confirm_channel(&conn).await;
    for i in 0..2 {
        dead_letter(
            &ch,
            "payment.failed",
            format!("{{\"n\": {i}}}").as_bytes(),
            BasicProperties::default().with_message_id(format!("evt-shown-{i}").into()),
        )
        .await;
    }

    let runs = 8 * SMALL_LIMIT;
    for run in 0..runs {
        let shown = ctl(&vhost.url, &["dlq", "show", SOURCE]);
        assert_eq!(
            shown.matches("reason=schema").count(),
            2,
            "run {run} shows both: {shown}"
        );
        let first = shown.find("evt-shown-0").expect("first shown");
        let second = shown.find("evt-shown-1").expect("second shown");
        assert!(first < second, "in their order, run {run}: {shown}");
    }
    let kept = drain(&ch, DLQ).await;
    let ids: Vec<String> = kept
        .iter()
        .filter_map(|(p, _)| p.message_id().as_ref().map(ToString::to_string))
        .collect();
    assert_eq!(
        ids,
        ["evt-shown-0", "evt-shown-1"],
        "after {runs} shows the dead letters are all there, once each, in order"
    );
    let (props, body) = &kept[0];
    assert_eq!(body, b"{\"n\": 0}");
    assert_eq!(
        header_str(props, collections_bus::HEADER_ERROR).as_deref(),
        Some("schema"),
        "the reason headers stay"
    );
    let _ = conn.close(200, "bye".into()).await;
}

/// A dead letter a replay cannot deliver (no queue for its key) is kept: run after run,
/// more often than the delivery limit, it must stay in the queue.
#[tokio::test]
async fn a_dead_letter_kept_by_many_failed_replays_is_never_dropped() {
    let vhost = Vhost::new();
    let conn = vhost.connect().await;
    dlq_with_small_limit(&conn).await;
    // No alternate exchange: an unroutable replay is returned.
    let ch = conn.create_channel().await.expect("channel");
    ch.exchange_declare(
        EVENTS_EXCHANGE.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("old exchange");
    collections_bus::declare_topology_on(&conn)
        .await
        .expect("topology");
    let ch = confirm_channel(&conn).await;
    dead_letter(
        &ch,
        "payment.refunded",
        b"{\"type\": \"payment.refunded\"}",
        BasicProperties::default().with_message_id("evt-refund-kept".into()),
    )
    .await;

    for run in 0..4 * SMALL_LIMIT {
        let out = ctl_output(&vhost.url, &["dlq", "replay", SOURCE]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("kept 1 (returned 1,"),
            "run {run} keeps it: {stdout}"
        );
    }
    let kept = drain(&ch, DLQ).await;
    assert_eq!(kept.len(), 1, "the dead letter is still there");
    assert_eq!(
        header_str(&kept[0].0, collections_bus::HEADER_ERROR).as_deref(),
        Some("schema")
    );
    let _ = conn.close(200, "bye".into()).await;
}
