//! RabbitMQ for the collections service: the topology, a confirmed publisher and consumers.
//!
//! lapin's own auto-recovery is not relied upon; the runtime supervises whole sessions
//! (connect, declare, consume) and starts a new one when anything in it fails.
//!
//! It owns the contract's exchanges, queues and headers; it may not touch Postgres or hold
//! collections rules (events are passed through as bytes and typed by `collections-core`).

use collections_core::EventType;
use futures::future::{maybe_done, try_join_all};
use lapin::{
    options::{
        BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    protocol::{AMQPErrorKind, AMQPSoftError},
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    ExchangeKind,
};

pub use lapin;

/// Inbound exchange (topic; routing key = event type).
pub const EVENTS_EXCHANGE: &str = "collections.events";
/// Outbound task exchange (topic; routing key `task.<state>.<kind>`).
pub const TASKS_EXCHANGE: &str = "collections.tasks";
/// Dead-letter exchange (direct; routing key `<queue>.dlq`).
pub const DEAD_LETTER_EXCHANGE: &str = "collections.dead-letter";
/// Alternate exchange of [`EVENTS_EXCHANGE`] (fanout): an event whose routing key matches
/// no binding (an unknown type) lands here instead of being dropped by the broker.
pub const UNROUTED_EXCHANGE: &str = "collections.unrouted";
/// The queue bound to [`UNROUTED_EXCHANGE`]; operators list and replay it like a DLQ.
pub const UNROUTED_QUEUE: &str = "collections.unrouted";
/// Deliveries of one message before the broker dead-letters it by itself (a worker that
/// crashes on a message must not crash forever).
pub const DELIVERY_LIMIT: i64 = 10;
/// Where the service's own arrangement outcomes (`arrangement.broken`,
/// `arrangement.kept`) wait for billing and dashboards: a quorum queue bound to
/// `collections.events` with [`ARRANGEMENT_OUTCOME_KEYS`] (without a binding they would
/// land in [`UNROUTED_QUEUE`]). Consumers may bind queues of their own as well.
pub const ARRANGEMENT_OUTCOMES_QUEUE: &str = "collections.arrangement-outcomes";
/// The routing keys of the service's arrangement outcomes.
pub const ARRANGEMENT_OUTCOME_KEYS: [&str; 2] = ["arrangement.broken", "arrangement.kept"];
/// `x-delivery-limit` of the queues that hold messages for an operator (the `.dlq` queues
/// and [`UNROUTED_QUEUE`]). They have no dead-letter exchange, so a message past its limit
/// is dropped: from RabbitMQ 4.0 a quorum queue declared without a limit gets 20, which a
/// few inspections that returned messages (the management UI's "get messages", a
/// `dlq replay` that died holding them) would use up. `-1` means "no limit" only from 4.0
/// (on 3.x it drops every returned message), so the limit is a number no inspection
/// reaches instead. `collectionsctl dlq` itself never returns a message to these queues
/// (it puts a copy back and acks the original), so it does not count against it.
pub const HOLDING_DELIVERY_LIMIT: i64 = 1_000_000;
/// `x-quorum-initial-group-size` of every queue: on a cluster of three nodes or more each
/// queue gets three replicas (a majority of two survives one node's loss); on fewer nodes
/// the broker makes as many as there are. Queues created before the nodes joined keep
/// the members they had: add the new nodes with `rabbitmq-queues grow` (deploy/README.md).
pub const QUORUM_GROUP_SIZE: i64 = 3;
/// The argument [`QUORUM_GROUP_SIZE`] is declared with.
const GROUP_SIZE_ARG: &str = "x-quorum-initial-group-size";
/// The delivery-limit argument.
const DELIVERY_LIMIT_ARG: &str = "x-delivery-limit";

/// Header carrying the machine-readable reason of a dead letter.
pub const HEADER_ERROR: &str = "x-collections-error";
/// Header carrying the human-readable reason of a dead letter.
pub const HEADER_ERROR_DETAIL: &str = "x-collections-error-detail";
/// Header naming the queue a dead letter came from.
pub const HEADER_ORIGINAL_QUEUE: &str = "x-collections-original-queue";
/// Header naming the routing key a dead letter was published with.
pub const HEADER_ORIGINAL_ROUTING_KEY: &str = "x-collections-original-routing-key";

/// Broker failures: all transient (reconnect and retry).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The client library failed (connection, channel, protocol).
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker refused a publish (negative confirm).
    #[error("broker nacked a publish to {0}")]
    Nacked(String),
    /// The broker did not finish the handshake in time (overloaded, or it refused
    /// `connection.open` in a way the client does not surface).
    #[error("no answer from the broker within {0:?}")]
    Timeout(std::time::Duration),
    /// A mandatory publish reached no queue (basic.return): nothing was stored. For a
    /// dead letter this means its `.dlq` or the binding to it is missing; the session is
    /// rebuilt, which declares them again, and the original is redelivered meanwhile.
    #[error("broker returned a publish to {0}: no queue is bound to it ({1})")]
    Returned(String, String),
    /// [`declare_topology`] met a holding queue created without its delivery limit (the
    /// broker closed the channel); [`declare_topology_on`] carries on instead.
    #[error("queue {0} exists without x-delivery-limit (see deploy/README.md)")]
    PredatesDeliveryLimit(String),
    /// [`declare_topology`] met a queue created without `x-quorum-initial-group-size`
    /// (the broker closed the channel); [`declare_topology_on`] carries on instead.
    #[error("queue {0} exists without x-quorum-initial-group-size (see deploy/README.md)")]
    PredatesGroupSize(String),
    /// The URL list was empty.
    #[error("no broker URL given")]
    NoUrl,
}

/// Longest a connection handshake may take before the attempt is abandoned and retried.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest a confirmed publish may wait for the broker's confirms, unless the publisher
/// is given another bound ([`Publisher::with_confirm_timeout`]).
pub const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Name of a queue's dead-letter queue.
#[must_use]
pub fn dlq_name(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// Connects, naming the connection after the binary so operators see who is who.
///
/// # Errors
/// When the broker cannot be reached or refuses the credentials.
pub async fn connect(url: &str, name: &str) -> Result<Connection, BusError> {
    connect_with_ca(url, name, None).await
}

/// The URLs of a comma-separated list (`amqp://a:5672/v,amqp://b:5672/v`), in order,
/// blanks dropped. A comma inside a password must be written `%2C`.
#[must_use]
pub fn url_list(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// Connects like [`connect`]; `urls` may be one URL or a comma-separated list of the
/// cluster's nodes ([`url_list`]). The nodes are tried one after the other in a random
/// order (so the replicas of a deployment spread over the nodes, and a dead node is not
/// every process's first choice); the first that accepts wins. For `amqps://` URLs the
/// broker's certificate may also be signed by `ca_pem` (PEM certificates of a private CA,
/// trusted beside the system's).
///
/// # Errors
/// When no node can be reached (the last node's error), a certificate is not trusted, or
/// the credentials are refused.
pub async fn connect_with_ca(
    urls: &str,
    name: &str,
    ca_pem: Option<&str>,
) -> Result<Connection, BusError> {
    let mut order = url_list(urls);
    shuffle(&mut order);
    let mut last = None;
    for (n, url) in order.iter().enumerate() {
        match connect_one(url, name, ca_pem).await {
            Ok(conn) => return Ok(conn),
            Err(e) => {
                // The URL carries credentials: name the node by its position only.
                if n + 1 < order.len() {
                    tracing::warn!(error = %e, node = n + 1, of = order.len(), "broker node refused; trying the next");
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or(BusError::NoUrl))
}

/// Fisher-Yates with the standard library's per-process random hasher keys: good enough
/// to spread replicas, and no extra dependency.
fn shuffle<T>(items: &mut [T]) {
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    for i in (1..items.len()).rev() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let j = usize::try_from(h.finish() % (i as u64 + 1)).unwrap_or(0);
        items.swap(i, j);
    }
}

async fn connect_one(url: &str, name: &str, ca_pem: Option<&str>) -> Result<Connection, BusError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: ca_pem.map(str::to_owned),
    };
    let runtime = lapin::runtime::default_runtime()?;
    // A handshake the broker never completes must not hang its caller (nor its shutdown).
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        Connection::connect_with_config(url, props, tls, runtime),
    )
    .await
    .map_err(|_| BusError::Timeout(CONNECT_TIMEOUT))?
    .map_err(BusError::from)
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Declares every exchange, queue and binding of the contract on a channel of its own
/// (two if `collections.events` predates its alternate exchange). Idempotent, so every
/// binary does it at start and start order never matters.
///
/// # Errors
/// When the broker refuses (for instance a queue exists with other arguments).
pub async fn declare_topology_on(conn: &Connection) -> Result<EventsExchange, BusError> {
    // Each queue on a channel of its own: one that predates an argument (its delivery
    // limit, its group size) makes the broker close the channel it was declared on (406),
    // and is declared again without it.
    for queue in holding_queues() {
        let dropped = declare_quorum_on(
            conn,
            &queue,
            &holding_queue_args(),
            &[GROUP_SIZE_ARG, DELIVERY_LIMIT_ARG],
        )
        .await?;
        warn_predating(&queue, &dropped);
    }
    for t in EventType::ALL {
        let dropped = declare_quorum_on(
            conn,
            t.queue(),
            &inbound_queue_args(t.queue()),
            &[GROUP_SIZE_ARG],
        )
        .await?;
        warn_predating(t.queue(), &dropped);
    }
    let dropped = declare_quorum_on(
        conn,
        ARRANGEMENT_OUTCOMES_QUEUE,
        &quorum_args(),
        &[GROUP_SIZE_ARG],
    )
    .await?;
    warn_predating(ARRANGEMENT_OUTCOMES_QUEUE, &dropped);
    let ch = conn.create_channel().await?;
    declare_unbound(&ch).await?;
    let events = declare_events_exchange(&ch).await?;
    let ch = match events {
        EventsExchange::WithAlternateExchange => ch,
        // The refusal closed that channel; the exchange exists, so bind on a new one.
        EventsExchange::PredatesAlternateExchange => conn.create_channel().await?,
    };
    bind_inbound_queues(&ch).await?;
    Ok(events)
}

/// [`declare_topology_on`] for callers that hold only a channel. If `collections.events`
/// predates its alternate exchange, the broker closes `ch` when it is declared (last), so
/// the inbound queues' bindings to it (made when it was created) are not re-declared:
/// a queue deleted and re-created stays unbound. A holding queue that predates its
/// delivery limit is an error here. Prefer [`declare_topology_on`].
///
/// # Errors
/// When the broker refuses (for instance a queue exists with other arguments).
pub async fn declare_topology(ch: &Channel) -> Result<EventsExchange, BusError> {
    for queue in holding_queues() {
        declare_quorum_strict(ch, &queue, &holding_queue_args()).await?;
    }
    for t in EventType::ALL {
        declare_quorum_strict(ch, t.queue(), &inbound_queue_args(t.queue())).await?;
    }
    declare_quorum_strict(ch, ARRANGEMENT_OUTCOMES_QUEUE, &quorum_args()).await?;
    declare_unbound(ch).await?;
    let events = declare_events_exchange(ch).await?;
    if events == EventsExchange::WithAlternateExchange {
        bind_inbound_queues(ch).await?;
    }
    Ok(events)
}

/// How `collections.events` stands once the topology is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsExchange {
    /// Declared with `alternate-exchange: collections.unrouted`: nothing unroutable is lost.
    WithAlternateExchange,
    /// Created by an older version without the argument, which cannot be added to an
    /// existing exchange: unroutable events are dropped unless a policy sets one.
    PredatesAlternateExchange,
}

static WARN_NO_ALTERNATE: std::sync::Once = std::sync::Once::new();

/// Declares `collections.events` with its alternate exchange. A broker where it already
/// exists without one refuses with 406 (closing `ch`): that is reported, not an error.
async fn declare_events_exchange(ch: &Channel) -> Result<EventsExchange, BusError> {
    let mut args = FieldTable::default();
    args.insert("alternate-exchange".into(), long(UNROUTED_EXCHANGE));
    let declared = ch
        .exchange_declare(
            EVENTS_EXCHANGE.into(),
            ExchangeKind::Topic,
            durable_exchange(),
            args,
        )
        .await;
    match declared {
        Ok(()) => Ok(EventsExchange::WithAlternateExchange),
        Err(e) if is_alternate_exchange_mismatch(&e) => {
            // Once per process: every reconnect would repeat it.
            WARN_NO_ALTERNATE.call_once(|| {
                tracing::warn!(
                    broker = %e,
                    "exchange {EVENTS_EXCHANGE} predates its alternate exchange (it has no \
                     alternate-exchange argument): unless a policy sets one, events whose \
                     routing key matches no queue are dropped. Add it with a policy: \
                     rabbitmqctl set_policy -p <vhost> collections-unrouted \
                     '^collections\\.events$' '{{\"alternate-exchange\":\"{UNROUTED_EXCHANGE}\"}}' \
                     --apply-to exchanges (deploy/README.md)"
                );
            });
            Ok(EventsExchange::PredatesAlternateExchange)
        }
        Err(e) => Err(e.into()),
    }
}

/// A 406 about `alternate-exchange` only: any other mismatch (type, durability) is a
/// real misconfiguration and stays an error.
fn is_alternate_exchange_mismatch(e: &lapin::Error) -> bool {
    is_argument_mismatch(e, "alternate-exchange")
}

/// A 406 (inequivalent argument) naming `argument`.
fn is_argument_mismatch(e: &lapin::Error, argument: &str) -> bool {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => {
            *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
                && amqp.get_message().as_str().contains(argument)
        }
        _ => false,
    }
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// Everything but `collections.events` and the bindings to it.
async fn declare_unbound(ch: &Channel) -> Result<(), BusError> {
    let durable = durable_exchange();
    ch.exchange_declare(
        TASKS_EXCHANGE.into(),
        ExchangeKind::Topic,
        durable,
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        DEAD_LETTER_EXCHANGE.into(),
        ExchangeKind::Direct,
        durable,
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        UNROUTED_EXCHANGE.into(),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await?;
    // The queues are declared before (`declare_quorum_*`); bound here.
    ch.queue_bind(
        UNROUTED_QUEUE.into(),
        UNROUTED_EXCHANGE.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    for t in EventType::ALL {
        let queue = t.queue();
        let dlq = dlq_name(queue);
        ch.queue_bind(
            dlq.as_str().into(),
            DEAD_LETTER_EXCHANGE.into(),
            dlq.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// A queue's declaration arguments, in order.
type QueueArgs = Vec<(&'static str, AMQPValue)>;

/// Quorum (replicated by Raft, and it counts deliveries, which `x-delivery-limit` needs)
/// with [`QUORUM_GROUP_SIZE`] replicas.
fn quorum_args() -> QueueArgs {
    vec![
        ("x-queue-type", long("quorum")),
        (GROUP_SIZE_ARG, AMQPValue::LongLongInt(QUORUM_GROUP_SIZE)),
    ]
}

/// An inbound queue: a message that keeps crashing its consumer is dead-lettered by the
/// broker after [`DELIVERY_LIMIT`] deliveries instead of blocking the queue forever.
fn inbound_queue_args(queue: &str) -> QueueArgs {
    let mut args = quorum_args();
    args.push((DELIVERY_LIMIT_ARG, AMQPValue::LongLongInt(DELIVERY_LIMIT)));
    args.push(("x-dead-letter-exchange", long(DEAD_LETTER_EXCHANGE)));
    args.push(("x-dead-letter-routing-key", long(&dlq_name(queue))));
    args
}

/// A holding queue: no dead-lettering, no TTL, and an explicit [`HOLDING_DELIVERY_LIMIT`]
/// rather than the broker's default.
fn holding_queue_args() -> QueueArgs {
    let mut args = quorum_args();
    args.push((
        DELIVERY_LIMIT_ARG,
        AMQPValue::LongLongInt(HOLDING_DELIVERY_LIMIT),
    ));
    args
}

async fn declare_queue(ch: &Channel, name: &str, args: &QueueArgs) -> Result<(), lapin::Error> {
    let mut table = FieldTable::default();
    for (k, v) in args {
        table.insert((*k).into(), v.clone());
    }
    let opts = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(name.into(), opts, table).await.map(|_| ())
}

/// Declares a queue on a channel of its own. A queue that exists without one of
/// `optional` (created by an older version; arguments cannot be added to an existing
/// queue) is refused with 406, which closes the channel: it is declared again without
/// that argument. Returns the arguments the queue was found without.
async fn declare_quorum_on(
    conn: &Connection,
    name: &str,
    args: &QueueArgs,
    optional: &[&'static str],
) -> Result<Vec<&'static str>, BusError> {
    let mut args = args.clone();
    let mut dropped = Vec::new();
    loop {
        let ch = conn.create_channel().await?;
        match declare_queue(&ch, name, &args).await {
            Ok(()) => {
                let _ = ch.close(200, "declared".into()).await;
                return Ok(dropped);
            }
            Err(e) => {
                let Some(arg) = optional.iter().find(|a| is_argument_mismatch(&e, a)) else {
                    return Err(e.into());
                };
                if dropped.contains(arg) {
                    // Declared without it, the queue still differs: it has a value of its
                    // own for the argument (a policy-era setting). It exists; carry on.
                    return Ok(dropped);
                }
                // Declared again without it, to find what else the queue predates.
                dropped.push(*arg);
                args.retain(|(k, _)| k != arg);
            }
        }
    }
}

/// Declares a queue on `ch`; a queue that predates the delivery limit or the group size
/// is an error (the broker closed `ch`).
async fn declare_quorum_strict(ch: &Channel, name: &str, args: &QueueArgs) -> Result<(), BusError> {
    match declare_queue(ch, name, args).await {
        Ok(()) => Ok(()),
        Err(e) if is_argument_mismatch(&e, GROUP_SIZE_ARG) => {
            Err(BusError::PredatesGroupSize(name.to_owned()))
        }
        Err(e) if is_argument_mismatch(&e, DELIVERY_LIMIT_ARG) => {
            Err(BusError::PredatesDeliveryLimit(name.to_owned()))
        }
        Err(e) => Err(e.into()),
    }
}

static WARN_NO_DELIVERY_LIMIT: std::sync::Once = std::sync::Once::new();
static WARN_NO_GROUP_SIZE: std::sync::Once = std::sync::Once::new();

/// Says once per process what a queue created by an older version lacks, and the fix.
fn warn_predating(queue: &str, dropped: &[&'static str]) {
    if dropped.contains(&DELIVERY_LIMIT_ARG) {
        WARN_NO_DELIVERY_LIMIT.call_once(|| {
            tracing::warn!(
                queue,
                "dead-letter queues predate their delivery limit (no x-delivery-limit \
                 argument): from RabbitMQ 4.0 they drop a message returned 20 times. \
                 Set it with a policy: rabbitmqctl set_policy -p <vhost> \
                 collections-holding '^collections\\.(.+\\.dlq|unrouted)$' \
                 '{{\"delivery-limit\":{HOLDING_DELIVERY_LIMIT}}}' --apply-to queues \
                 (deploy/README.md)"
            );
        });
    }
    if dropped.contains(&GROUP_SIZE_ARG) {
        WARN_NO_GROUP_SIZE.call_once(|| {
            tracing::warn!(
                queue,
                "queues predate their replica count (no {GROUP_SIZE_ARG} argument): \
                 they keep the members they were created with. On a cluster, give them \
                 {QUORUM_GROUP_SIZE} with: rabbitmq-queues grow <new node> all \
                 --vhost-pattern <vhost> --queue-pattern '^collections\\.' \
                 (deploy/README.md)"
            );
        });
    }
}

/// The queues where messages wait for an operator: every `.dlq` and [`UNROUTED_QUEUE`].
#[must_use]
pub fn holding_queues() -> Vec<String> {
    EventType::ALL
        .into_iter()
        .map(|t| dlq_name(t.queue()))
        .chain([UNROUTED_QUEUE.to_owned()])
        .collect()
}

async fn bind_inbound_queues(ch: &Channel) -> Result<(), BusError> {
    // The outcomes queue is declared before (`declare_quorum_*`); bound here.
    for key in ARRANGEMENT_OUTCOME_KEYS {
        ch.queue_bind(
            ARRANGEMENT_OUTCOMES_QUEUE.into(),
            EVENTS_EXCHANGE.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    for t in EventType::ALL {
        ch.queue_bind(
            t.queue().into(),
            EVENTS_EXCHANGE.into(),
            t.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct OutMessage<'a> {
    /// Exchange.
    pub exchange: &'a str,
    /// Routing key.
    pub routing_key: &'a str,
    /// Body.
    pub body: &'a [u8],
    /// AMQP `message-id` (the CloudEvents id).
    pub message_id: Option<&'a str>,
    /// Extra headers (dead-letter reasons).
    pub headers: Option<FieldTable>,
    /// AMQP `content-type`.
    pub content_type: &'a str,
    /// Publish `mandatory`: a message no queue takes is returned and the publish fails
    /// ([`BusError::Returned`]) instead of being dropped by the broker without a word.
    pub mandatory: bool,
}

impl<'a> OutMessage<'a> {
    /// A structured-mode CloudEvent.
    #[must_use]
    pub fn cloudevent(
        exchange: &'a str,
        routing_key: &'a str,
        body: &'a [u8],
        id: &'a str,
    ) -> Self {
        Self {
            exchange,
            routing_key,
            body,
            message_id: Some(id),
            headers: None,
            content_type: "application/cloudevents+json",
            // Task events may have no subscriber yet (each dashboard binds its own queue),
            // and `collections.events` has an alternate exchange: not mandatory.
            mandatory: false,
        }
    }
}

/// A channel in confirm mode.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    confirm_timeout: std::time::Duration,
}

impl Publisher {
    /// Opens a confirm-mode channel on `conn`.
    ///
    /// # Errors
    /// When the channel cannot be opened.
    pub async fn open(conn: &Connection) -> Result<Self, BusError> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            channel,
            confirm_timeout: CONFIRM_TIMEOUT,
        })
    }

    /// The same publisher, waiting at most `timeout` for a round's confirms.
    #[must_use]
    pub fn with_confirm_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// The underlying channel.
    #[must_use]
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes all messages persistently (pipelined, in order) and returns once the
    /// broker confirmed every one.
    ///
    /// # Errors
    /// A channel failure or a negative confirm: some may not have been stored; publish
    /// them again (consumers deduplicate by CloudEvents id).
    pub async fn publish_confirmed(&self, msgs: &[OutMessage<'_>]) -> Result<(), BusError> {
        // A broker that stops answering (a stalled network, a blocked connection) must not
        // hold the caller forever: past the bound the session is restarted, and whatever
        // was not confirmed is published again (from the outbox, or redelivered).
        tokio::time::timeout(self.confirm_timeout, self.publish_confirmed_unbounded(msgs))
            .await
            .map_err(|_| BusError::Timeout(self.confirm_timeout))?
    }

    async fn publish_confirmed_unbounded(&self, msgs: &[OutMessage<'_>]) -> Result<(), BusError> {
        // Every message is queued before any is awaited: `basic_publish` resolves only once
        // the connection's I/O loop has written the frames, so awaiting each in turn would
        // cost a hand-off between threads and a socket write per message. Queued together,
        // the loop writes them in a few writes and the broker reads them in a few packets.
        // The first poll of each send registers its confirm tag and queues its frames, in
        // message order; nothing else publishes on this channel meanwhile.
        let mut sends = Vec::with_capacity(msgs.len());
        for m in msgs {
            let mut props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(m.content_type.into());
            if let Some(id) = m.message_id {
                props = props.with_message_id(id.into());
            }
            if let Some(h) = &m.headers {
                props = props.with_headers(h.clone());
            }
            let mut send = Box::pin(maybe_done(self.channel.basic_publish(
                m.exchange.into(),
                m.routing_key.into(),
                BasicPublishOptions {
                    mandatory: m.mandatory,
                    ..BasicPublishOptions::default()
                },
                m.body,
                props,
            )));
            let _queued = futures::poll!(send.as_mut());
            sends.push(send);
        }
        let mut confirms = Vec::with_capacity(msgs.len());
        for (mut send, m) in sends.into_iter().zip(msgs) {
            send.as_mut().await;
            let confirm = send
                .as_mut()
                .take_output()
                .expect("a completed send holds its output")?;
            let target = format!("{}/{}", m.exchange, m.routing_key);
            confirms.push(async move {
                match confirm.await? {
                    Confirmation::Nack(_) => Err(BusError::Nacked(target)),
                    // Acked, yet no queue took it: a mandatory publish was returned.
                    Confirmation::Ack(Some(returned)) => Err(BusError::Returned(
                        target,
                        format!("{} {}", returned.reply_code, returned.reply_text),
                    )),
                    Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
                }
            });
        }
        try_join_all(confirms).await?;
        Ok(())
    }
}

/// Headers of a dead letter.
#[must_use]
pub fn dead_letter_headers(
    original: Option<&FieldTable>,
    code: &str,
    detail: &str,
    queue: &str,
    routing_key: &str,
) -> FieldTable {
    let mut h = original.cloned().unwrap_or_default();
    h.insert(HEADER_ERROR.into(), long(code));
    h.insert(HEADER_ERROR_DETAIL.into(), long(detail));
    h.insert(HEADER_ORIGINAL_QUEUE.into(), long(queue));
    h.insert(HEADER_ORIGINAL_ROUTING_KEY.into(), long(routing_key));
    h
}

/// Reads a string header.
#[must_use]
pub fn header_str(props: &BasicProperties, key: &str) -> Option<String> {
    let headers = props.headers().as_ref()?;
    let key: ShortString = key.into();
    match headers.inner().get(&key)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Opens a consuming channel with the given prefetch.
///
/// # Errors
/// When the channel cannot be opened or the queue does not exist.
pub async fn consume(
    conn: &Connection,
    queue: &str,
    prefetch: u16,
    tag: &str,
) -> Result<(Channel, Consumer), BusError> {
    let ch = conn.create_channel().await?;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let consumer = ch
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((ch, consumer))
}

#[cfg(test)]
mod tests {
    use super::{shuffle, url_list};

    #[test]
    fn a_url_list_splits_on_commas_and_drops_blanks() {
        assert_eq!(url_list("amqp://a/%2f"), ["amqp://a/%2f"]);
        assert_eq!(
            url_list(" amqp://a/%2f ,amqp://b/%2f,, "),
            ["amqp://a/%2f", "amqp://b/%2f"]
        );
        assert!(url_list(" , ").is_empty());
    }

    #[test]
    fn shuffling_keeps_every_node_and_spreads_the_first_choice() {
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut nodes = vec![1, 2, 3];
            shuffle(&mut nodes);
            let mut sorted = nodes.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [1, 2, 3]);
            firsts.insert(nodes[0]);
        }
        assert_eq!(firsts.len(), 3, "every node is somebody's first choice");
    }
}
