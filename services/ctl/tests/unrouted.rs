//! Events nobody is bound for (an unknown type) are kept in `collections.unrouted` by the
//! alternate exchange of `collections.events`, against a real RabbitMQ (a vhost of its own
//! per test); and a broker whose exchange predates that argument still gets the rest of
//! the topology.

mod common;

use collections_bus::{
    lapin::{
        options::{
            BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
            QueueDeclareOptions, QueueDeleteOptions,
        },
        types::{AMQPValue, FieldTable},
        BasicProperties, Channel, Confirmation, Connection, ExchangeKind,
    },
    EventsExchange, DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, TASKS_EXCHANGE, UNROUTED_EXCHANGE,
    UNROUTED_QUEUE,
};
use collections_core::EventType;
use common::{count, ctl, ctl_output, drain, listed, Vhost};

async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    ch
}

/// Publishes to `collections.events` as upstream does, mandatory so that a drop shows.
async fn publish_event(ch: &Channel, rk: &str, body: &[u8]) -> Confirmation {
    ch.basic_publish(
        EVENTS_EXCHANGE.into(),
        rk.into(),
        BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        },
        body,
        BasicProperties::default().with_message_id(format!("evt-{rk}").into()),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm")
}

fn old_events_exchange_options() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn an_event_of_unknown_type_is_kept_listed_and_replayable() {
    let vhost = Vhost::new();
    // The topology as the binary declares it.
    let list = ctl(&vhost.url, &["dlq", "list"]);
    assert_eq!(listed(&list, UNROUTED_QUEUE), Some(0), "{list}");

    let conn = vhost.connect().await;
    let ch = confirm_channel(&conn).await;
    let confirm = publish_event(&ch, "payment.refunded", b"{\"type\": \"payment.refunded\"}").await;
    assert_eq!(
        confirm,
        Confirmation::Ack(None),
        "taken by the alternate exchange, not returned"
    );
    assert_eq!(count(&conn, UNROUTED_QUEUE).await, 1);
    let list = ctl(&vhost.url, &["dlq", "list"]);
    assert_eq!(listed(&list, UNROUTED_QUEUE), Some(1), "{list}");
    let shown = ctl(&vhost.url, &["dlq", "show", UNROUTED_QUEUE]);
    assert!(
        shown.contains("reason=unrouted (no queue for routing key payment.refunded)"),
        "{shown}"
    );
    assert!(shown.contains("routing_key=payment.refunded"), "{shown}");

    // Known types still go to their own queue only.
    let confirm = publish_event(&ch, "payment.failed", b"{}").await;
    assert_eq!(confirm, Confirmation::Ack(None));
    assert_eq!(count(&conn, "collections.payment-failed").await, 1);
    assert_eq!(count(&conn, UNROUTED_QUEUE).await, 1);

    // The operator binds a queue for the new type, then replays.
    ch.queue_declare(
        "refunds".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("queue");
    ch.queue_bind(
        "refunds".into(),
        EVENTS_EXCHANGE.into(),
        "payment.refunded".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    let replayed = ctl(&vhost.url, &["dlq", "replay", UNROUTED_QUEUE]);
    assert!(replayed.contains("replayed 1 "), "{replayed}");
    assert_eq!(count(&conn, UNROUTED_QUEUE).await, 0);
    let refunds = drain(&ch, "refunds").await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].1, b"{\"type\": \"payment.refunded\"}");
    assert_eq!(
        refunds[0]
            .0
            .message_id()
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("evt-payment.refunded")
    );
    let _ = conn.close(200, "bye".into()).await;
}

/// Every exchange and queue of the topology exists (each check on its own channel: a
/// passive declare of something missing closes it).
async fn assert_topology_exists(conn: &Connection) {
    for (name, kind) in [
        (EVENTS_EXCHANGE, ExchangeKind::Topic),
        (TASKS_EXCHANGE, ExchangeKind::Topic),
        (DEAD_LETTER_EXCHANGE, ExchangeKind::Direct),
        (UNROUTED_EXCHANGE, ExchangeKind::Fanout),
    ] {
        let ch = conn.create_channel().await.expect("channel");
        ch.exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("exchange {name}: {e}"));
    }
    for t in EventType::ALL {
        count(conn, t.queue()).await;
        count(conn, &collections_bus::dlq_name(t.queue())).await;
    }
    count(conn, UNROUTED_QUEUE).await;
}

/// Each inbound type reaches its queue through `collections.events`.
async fn assert_inbound_bound(conn: &Connection) {
    let ch = confirm_channel(conn).await;
    for t in EventType::ALL {
        let before = count(conn, t.queue()).await;
        let confirm = publish_event(&ch, t.as_str(), b"{}").await;
        assert_eq!(confirm, Confirmation::Ack(None), "{} is bound", t.as_str());
        assert_eq!(count(conn, t.queue()).await, before + 1, "{}", t.as_str());
    }
}

#[tokio::test]
async fn an_events_exchange_that_predates_the_alternate_exchange_is_tolerated() {
    let vhost = Vhost::new();
    let conn = vhost.connect().await;
    let old = conn.create_channel().await.expect("channel");
    old.exchange_declare(
        EVENTS_EXCHANGE.into(),
        ExchangeKind::Topic,
        old_events_exchange_options(),
        FieldTable::default(),
    )
    .await
    .expect("the exchange as older versions declared it");

    let found = collections_bus::declare_topology_on(&conn)
        .await
        .expect("the 406 is not an error");
    assert_eq!(found, EventsExchange::PredatesAlternateExchange);
    assert!(conn.status().connected(), "a channel error only");
    assert_topology_exists(&conn).await;
    assert_inbound_bound(&conn).await;

    // A queue deleted meanwhile is re-created and bound again on the fresh channel.
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_delete(
        "collections.promise-made".into(),
        QueueDeleteOptions::default(),
    )
    .await
    .expect("delete");
    let again = collections_bus::declare_topology_on(&conn)
        .await
        .expect("again");
    assert_eq!(again, EventsExchange::PredatesAlternateExchange);
    assert_inbound_bound(&conn).await;

    // The channel form (kept for callers that hold only a channel) carries on too.
    let ch = conn.create_channel().await.expect("channel");
    let found = collections_bus::declare_topology(&ch)
        .await
        .expect("channel form");
    assert_eq!(found, EventsExchange::PredatesAlternateExchange);
    assert_topology_exists(&conn).await;

    // Here unroutable events are still dropped (until a policy adds the alternate
    // exchange), and the operator tool says so.
    let pubch = confirm_channel(&conn).await;
    let dropped = publish_event(&pubch, "payment.refunded", b"{}").await;
    assert!(matches!(dropped, Confirmation::Ack(Some(_))), "{dropped:?}");
    let out = ctl_output(&vhost.url, &["dlq", "list"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no alternate-exchange argument"),
        "{stderr}"
    );

    // The policy the warning and deploy/README.md give makes them kept.
    common::rabbitmqctl(&[
        "set_policy",
        "-p",
        &vhost.name,
        "collections-unrouted",
        "^collections\\.events$",
        r#"{"alternate-exchange":"collections.unrouted"}"#,
        "--apply-to",
        "exchanges",
    ]);
    let kept = publish_event(&pubch, "payment.refunded", b"{}").await;
    assert_eq!(kept, Confirmation::Ack(None));
    assert_eq!(count(&conn, UNROUTED_QUEUE).await, 1);
    let _ = conn.close(200, "bye".into()).await;
}

#[tokio::test]
async fn a_fresh_broker_gets_the_alternate_exchange_and_redeclaring_is_idempotent() {
    let vhost = Vhost::new();
    let conn = vhost.connect().await;
    for _ in 0..2 {
        let found = collections_bus::declare_topology_on(&conn)
            .await
            .expect("topology");
        assert_eq!(found, EventsExchange::WithAlternateExchange);
    }
    let ch = conn.create_channel().await.expect("channel");
    let found = collections_bus::declare_topology(&ch)
        .await
        .expect("channel form");
    assert_eq!(found, EventsExchange::WithAlternateExchange);
    assert_topology_exists(&conn).await;
    assert_inbound_bound(&conn).await;
    let _ = conn.close(200, "bye".into()).await;
}

#[tokio::test]
async fn another_mismatch_of_the_events_exchange_is_still_an_error() {
    let vhost = Vhost::new();
    let conn = vhost.connect().await;
    let ch = conn.create_channel().await.expect("channel");
    ch.exchange_declare(
        EVENTS_EXCHANGE.into(),
        ExchangeKind::Direct,
        old_events_exchange_options(),
        FieldTable::default(),
    )
    .await
    .expect("a wrongly typed exchange");
    let err = collections_bus::declare_topology_on(&conn)
        .await
        .expect_err("a different type is a misconfiguration");
    assert!(err.to_string().contains("PRECONDITION"), "{err}");
    let _ = conn.close(200, "bye".into()).await;
}

/// deploy/rabbitmq/definitions.json and the code declare the same thing: a broker booted
/// from the file takes the binaries' declarations without a 406 and with the alternate
/// exchange in place.
#[tokio::test]
async fn the_definitions_file_agrees_with_the_code() {
    let vhost = Vhost::new();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/rabbitmq/definitions.json"
    );
    let text = std::fs::read_to_string(path).expect("definitions.json");
    let mut defs: serde_json::Value = serde_json::from_str(&text).expect("json");
    // Every queue the code consumes, its dead-letter queue and both bindings are in the
    // file. The declarations below would not notice one missing (the code declares what
    // is absent), but a broker loaded from the file alone would send that type to
    // collections.unrouted until a worker of the type first started.
    let has = |section: &str, found: &dyn Fn(&serde_json::Value) -> bool| {
        defs[section].as_array().expect(section).iter().any(found)
    };
    for ty in EventType::ALL {
        let (queue, dlq) = (ty.queue(), format!("{}.dlq", ty.queue()));
        assert!(
            has("queues", &|q| q["name"] == queue),
            "definitions.json lacks the queue {queue}"
        );
        assert!(
            has("queues", &|q| q["name"] == dlq.as_str()),
            "definitions.json lacks the queue {dlq}"
        );
        assert!(
            has("bindings", &|b| b["source"] == "collections.events"
                && b["destination"] == queue
                && b["routing_key"] == ty.as_str()),
            "definitions.json does not bind {queue} to collections.events with key {}",
            ty.as_str()
        );
        assert!(
            has("bindings", &|b| b["source"] == "collections.dead-letter"
                && b["destination"] == dlq.as_str()
                && b["routing_key"] == dlq.as_str()),
            "definitions.json does not bind {dlq} to collections.dead-letter"
        );
    }
    // The file is for vhost "/": load it into this test's own vhost instead.
    for section in ["vhosts", "exchanges", "queues", "bindings"] {
        for item in defs[section].as_array_mut().expect(section) {
            let key = if section == "vhosts" { "name" } else { "vhost" };
            item[key] = vhost.name.clone().into();
        }
    }
    let copy = std::env::temp_dir().join(format!("{}-definitions.json", vhost.name));
    std::fs::write(&copy, defs.to_string()).expect("write copy");
    common::rabbitmqctl(&["import_definitions", copy.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_file(&copy);

    let conn = vhost.connect().await;
    assert_eq!(
        count(&conn, UNROUTED_QUEUE).await,
        0,
        "the file declares it"
    );
    let ch = confirm_channel(&conn).await;
    let kept = publish_event(&ch, "payment.refunded", b"{}").await;
    assert_eq!(kept, Confirmation::Ack(None));
    assert_eq!(
        count(&conn, UNROUTED_QUEUE).await,
        1,
        "the file's alternate exchange"
    );
    let found = collections_bus::declare_topology_on(&conn)
        .await
        .expect("the code's declarations match the file's");
    assert_eq!(found, EventsExchange::WithAlternateExchange);
    // The channel variant refuses a holding queue declared without the delivery limit
    // (`declare_topology_on` would carry on past it with a warning).
    let ch = conn.create_channel().await.expect("channel");
    collections_bus::declare_topology(&ch)
        .await
        .expect("the file's holding queues have the code's delivery limit");
    let _ = conn.close(200, "bye".into()).await;
}

/// Queues created before the topology asked for three replicas (an older version, or a
/// single broker that later became a cluster) cannot take the argument: the connection
/// form carries on (with a warning naming `rabbitmq-queues grow`), the channel form says
/// which queue predates it.
#[tokio::test]
async fn queues_that_predate_their_replica_count_are_tolerated() {
    let vhost = Vhost::new();
    let conn = vhost.connect().await;
    let ch = conn.create_channel().await.expect("channel");
    let quorum = |limit: i64| {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(limit));
        args
    };
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let mut inbound = quorum(collections_bus::DELIVERY_LIMIT);
    inbound.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(collections_bus::DEAD_LETTER_EXCHANGE.into()),
    );
    inbound.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString("collections.payment-failed.dlq".into()),
    );
    ch.queue_declare("collections.payment-failed".into(), durable, inbound)
        .await
        .expect("an inbound queue as an older version declared it");
    ch.queue_declare(
        "collections.payment-failed.dlq".into(),
        durable,
        quorum(collections_bus::HOLDING_DELIVERY_LIMIT),
    )
    .await
    .expect("a dead-letter queue as an older version declared it");

    for _ in 0..2 {
        collections_bus::declare_topology_on(&conn)
            .await
            .expect("the connection form carries on");
    }
    assert_topology_exists(&conn).await;
    assert_inbound_bound(&conn).await;
    let ch = conn.create_channel().await.expect("channel");
    let err = collections_bus::declare_topology(&ch)
        .await
        .expect_err("the channel form names the queue");
    assert!(
        matches!(err, collections_bus::BusError::PredatesGroupSize(ref q) if q.starts_with("collections.payment-failed")),
        "{err}"
    );
    let _ = conn.close(200, "bye".into()).await;
}
