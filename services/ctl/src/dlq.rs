//! `collectionsctl dlq`: list, show and replay dead letters and unrouted events.

use anyhow::Context;
use clap::Subcommand;
use collections_bus::{
    dlq_name, header_str,
    lapin::{
        message::Delivery,
        options::{
            BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
            ConfirmSelectOptions, QueueDeclareOptions,
        },
        types::{AMQPValue, FieldTable},
        BasicProperties, Channel, Confirmation, Connection,
    },
    CONFIRM_TIMEOUT, EVENTS_EXCHANGE, HEADER_ERROR, HEADER_ERROR_DETAIL,
    HEADER_ORIGINAL_ROUTING_KEY, UNROUTED_QUEUE,
};
use collections_core::EventType;

#[derive(Subcommand)]
pub enum DlqCmd {
    /// Message counts of every dead-letter queue and of `collections.unrouted`.
    List,
    /// Show up to N dead letters of a queue (they stay in the queue: each is put back as
    /// a copy at its tail before the original is acked, so showing never uses up a
    /// quorum queue's delivery limit; showing fewer than all moves those shown to the end).
    Show {
        /// Source queue (e.g. collections.payment-failed), its `.dlq`, or
        /// collections.unrouted.
        queue: String,
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// Re-publish dead letters to `collections.events` with their original routing key.
    /// Only the messages there when the command starts are taken (at most N); one the
    /// broker refuses or cannot route stays in the queue and makes the command fail.
    Replay {
        /// Source queue (e.g. collections.payment-failed), its `.dlq`, or
        /// collections.unrouted.
        queue: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// The queue that holds the messages named by the operator's argument.
fn holding_queue(arg: &str) -> String {
    if arg == UNROUTED_QUEUE || arg.ends_with(".dlq") {
        arg.to_owned()
    } else {
        dlq_name(arg)
    }
}

pub async fn run(conn: &Connection, cmd: DlqCmd) -> anyhow::Result<()> {
    let ch = conn.create_channel().await?;
    let result = run_on(conn, &ch, cmd).await;
    // Closed before the process exits, whatever the outcome: the broker answers the close
    // only after the acks sent before it on this channel, so no ack of a message kept or
    // replayed is lost with the process (which would return the original to the queue
    // beside its copy: a dead letter twice).
    let _ = ch.close(200, "done".into()).await;
    result
}

async fn run_on(conn: &Connection, ch: &Channel, cmd: DlqCmd) -> anyhow::Result<()> {
    match cmd {
        DlqCmd::List => {
            let names = EventType::ALL
                .into_iter()
                .map(|t| dlq_name(t.queue()))
                .chain([UNROUTED_QUEUE.to_owned()]);
            for name in names {
                println!("{name:<40} {:>8}", message_count(ch, &name).await?);
            }
        }
        DlqCmd::Show { queue, limit } => show(conn, ch, &holding_queue(&queue), limit).await?,
        DlqCmd::Replay { queue, limit } => replay(conn, ch, &holding_queue(&queue), limit).await?,
    }
    Ok(())
}

async fn message_count(ch: &Channel, queue: &str) -> anyhow::Result<u32> {
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("queue {queue}"))?;
    Ok(q.message_count())
}

async fn show(conn: &Connection, ch: &Channel, queue: &str, limit: usize) -> anyhow::Result<()> {
    // Only what is there now: the copies put back go to the tail, behind these.
    let at_start = message_count(ch, queue).await?;
    let budget = limit.min(usize::try_from(at_start).unwrap_or(usize::MAX));
    let pubch = confirm_channel(conn).await?;
    for _ in 0..budget {
        let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions::default())
            .await?
        else {
            break;
        };
        let d = m.delivery;
        let why = Why::of(queue, &d.properties, d.routing_key.as_str());
        let body = String::from_utf8_lossy(&d.data);
        let preview: String = body.chars().take(160).collect();
        println!(
            "reason={} detail={:?} routing_key={} message_id={} bytes={}\n  {preview}",
            why.reason,
            why.detail,
            why.routing_key.as_deref().unwrap_or("-"),
            d.properties
                .message_id()
                .as_ref()
                .map_or("-", |s| s.as_str()),
            d.data.len()
        );
        // Showing must not consume, nor count a delivery (a requeue would: a quorum
        // queue drops a message returned more often than its delivery limit).
        keep(&pubch, queue, d).await?;
    }
    Ok(())
}

async fn confirm_channel(conn: &Connection) -> anyhow::Result<Channel> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

/// Keeps a message taken from `queue` with basic.get without returning it, because a
/// quorum queue counts every return as a delivery and drops (these queues have no
/// dead-letter exchange) a message past its `x-delivery-limit`: a copy with the same
/// body and properties goes to the tail of `queue` (default exchange, mandatory,
/// confirmed), then the original is acked. Should the copy fail, the original is returned
/// after all (one delivery counted, nothing lost). Interrupted between the confirm and the
/// ack, the queue holds the message twice, with one message id.
async fn keep(pubch: &Channel, queue: &str, d: Delivery) -> anyhow::Result<()> {
    match put_copy(pubch, queue, &d).await {
        Ok(()) => {
            d.acker.ack(BasicAckOptions::default()).await?;
            Ok(())
        }
        Err(e) => {
            d.acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await?;
            Err(e.context(format!("put a copy back into {queue}")))
        }
    }
}

async fn put_copy(pubch: &Channel, queue: &str, d: &Delivery) -> anyhow::Result<()> {
    let confirm = pubch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &d.data,
            kept_properties(queue, &d.properties, d.routing_key.as_str()),
        )
        .await?;
    let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
        .await
        .map_err(|_| anyhow::anyhow!("no publisher confirm within {CONFIRM_TIMEOUT:?}"))??;
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(r)) | Confirmation::Nack(Some(r)) => {
            anyhow::bail!("returned: {} {}", r.reply_code, r.reply_text)
        }
        Confirmation::Nack(None) => anyhow::bail!("the broker refused it (negative confirm)"),
        Confirmation::NotRequested => anyhow::bail!("publish channel is not in confirm mode"),
    }
}

/// The properties of a message put back where it was: all of them, dead-letter headers
/// included, but the quorum queue's own delivery count (the copy is a new message). The
/// copy travels with the queue's name as routing key, so an unrouted event, whose routing
/// key is all that says what it was, keeps it in `x-collections-original-routing-key`.
fn kept_properties(queue: &str, p: &BasicProperties, delivery_rk: &str) -> BasicProperties {
    let out = copy_properties(p, |key| key != "x-delivery-count");
    if queue != UNROUTED_QUEUE || header_str(p, HEADER_ORIGINAL_ROUTING_KEY).is_some() {
        return out;
    }
    let mut headers = out.headers().clone().unwrap_or_default();
    headers.insert(
        HEADER_ORIGINAL_ROUTING_KEY.into(),
        AMQPValue::LongString(delivery_rk.into()),
    );
    out.with_headers(headers)
}

/// Why a message sits where it is, and the routing key it was first published with.
struct Why {
    reason: String,
    detail: String,
    routing_key: Option<String>,
}

impl Why {
    fn of(queue: &str, p: &BasicProperties, delivery_rk: &str) -> Self {
        // The alternate exchange adds no header: the routing key it kept is the reason
        // (or, once `dlq` put the event back, the header that keeps it).
        if queue == UNROUTED_QUEUE {
            let rk = header_str(p, HEADER_ORIGINAL_ROUTING_KEY)
                .unwrap_or_else(|| delivery_rk.to_owned());
            return Self {
                reason: format!("unrouted (no queue for routing key {rk})"),
                detail: "-".into(),
                routing_key: Some(rk),
            };
        }
        if let Some(code) = header_str(p, HEADER_ERROR) {
            return Self {
                reason: code,
                detail: header_str(p, HEADER_ERROR_DETAIL).unwrap_or_else(|| "-".into()),
                routing_key: header_str(p, HEADER_ORIGINAL_ROUTING_KEY),
            };
        }
        // Dead-lettered by RabbitMQ itself (x-delivery-limit, for one): only x-death says so.
        if let Some(death) = Death::latest(p) {
            return Self {
                reason: format!("{} (x-death)", death.reason),
                detail: format!("dead-lettered by RabbitMQ from {}", death.queue),
                routing_key: death.routing_key,
            };
        }
        Self {
            reason: "-".into(),
            detail: "-".into(),
            routing_key: None,
        }
    }
}

/// The newest entry of RabbitMQ's `x-death` header.
struct Death {
    reason: String,
    queue: String,
    routing_key: Option<String>,
}

impl Death {
    fn latest(p: &BasicProperties) -> Option<Self> {
        let AMQPValue::FieldArray(deaths) = p.headers().as_ref()?.inner().get("x-death")? else {
            return None;
        };
        // RabbitMQ puts the most recent death first.
        let AMQPValue::FieldTable(t) = deaths.as_slice().first()? else {
            return None;
        };
        let field = |k: &str| match t.inner().get(k) {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()),
            Some(AMQPValue::ShortString(s)) => Some(s.to_string()),
            _ => None,
        };
        let routing_key = match t.inner().get("routing-keys") {
            Some(AMQPValue::FieldArray(keys)) => keys.as_slice().iter().find_map(|k| match k {
                AMQPValue::LongString(s) => Some(s.to_string()),
                AMQPValue::ShortString(s) => Some(s.to_string()),
                _ => None,
            }),
            _ => None,
        };
        Some(Self {
            reason: field("reason").unwrap_or_else(|| "?".into()),
            queue: field("queue").unwrap_or_else(|| "?".into()),
            routing_key,
        })
    }
}

/// Headers that describe the dead-lettering, not the event: a replay is a fresh message.
fn is_dead_letter_header(key: &str) -> bool {
    key.starts_with("x-collections-")
        || key == "x-death"
        || key.starts_with("x-first-death-")
        || key.starts_with("x-last-death-")
        // Set by quorum queues on redelivery; carrying it over would miscount the new copy.
        || key == "x-delivery-count"
}

/// The original message's properties minus the dead-letter bookkeeping.
fn replay_properties(p: &BasicProperties) -> BasicProperties {
    copy_properties(p, |key| !is_dead_letter_header(key))
}

/// A message's properties for a publish of its copy: the headers `keep_header` keeps, and
/// every other property but `user_id`.
fn copy_properties(p: &BasicProperties, keep_header: impl Fn(&str) -> bool) -> BasicProperties {
    // Persistent whatever it was: a copy must survive a broker restart like the first
    // publish should have.
    let mut out = BasicProperties::default().with_delivery_mode(2);
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(h) = p.headers() {
        let mut kept = FieldTable::default();
        for (k, v) in h {
            if keep_header(k.as_str()) {
                kept.insert(k.clone(), v.clone());
            }
        }
        if !kept.inner().is_empty() {
            out = out.with_headers(kept);
        }
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = p.expiration() {
        out = out.with_expiration(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    // user_id is left out: the broker refuses a user_id other than the connection's own.
    out
}

/// What became of one publish.
pub(crate) enum Published {
    Stored,
    /// basic.return: the routing key reaches no queue.
    Returned(String),
    /// Negative confirm: the broker did not take it.
    Nacked,
}

/// Publishes to `collections.events`, mandatory, and waits for the confirm (bounded).
pub(crate) async fn republish(
    ch: &Channel,
    rk: &str,
    body: &[u8],
    props: BasicProperties,
) -> anyhow::Result<Published> {
    let confirm = ch
        .basic_publish(
            EVENTS_EXCHANGE.into(),
            rk.into(),
            // Mandatory: an unroutable message comes back instead of being dropped.
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            props,
        )
        .await?;
    let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
        .await
        .map_err(|_| anyhow::anyhow!("no publisher confirm within {CONFIRM_TIMEOUT:?}"))??;
    Ok(match confirmation {
        Confirmation::Ack(None) => Published::Stored,
        Confirmation::Ack(Some(r)) | Confirmation::Nack(Some(r)) => {
            Published::Returned(format!("{} {}", r.reply_code, r.reply_text))
        }
        Confirmation::Nack(None) => Published::Nacked,
        Confirmation::NotRequested => anyhow::bail!("publish channel is not in confirm mode"),
    })
}

/// The routing key to replay a message with.
fn replay_routing_key(queue: &str, why: &Why) -> Option<String> {
    why.routing_key.clone().or_else(|| {
        // A dead letter without any hint: its source queue has a single binding.
        let source = queue.strip_suffix(".dlq")?;
        EventType::ALL
            .into_iter()
            .find(|t| t.queue() == source)
            .map(|t| t.as_str().to_owned())
    })
}

#[derive(Default)]
struct Tally {
    replayed: usize,
    returned: usize,
    nacked: usize,
    no_routing_key: usize,
}

async fn replay(conn: &Connection, ch: &Channel, queue: &str, limit: usize) -> anyhow::Result<()> {
    // Only what is there now: a message that fails again re-enters the queue behind these
    // and must wait for the next run, not be replayed again by this one.
    let at_start = message_count(ch, queue).await?;
    let budget = limit.min(usize::try_from(at_start).unwrap_or(usize::MAX));
    let pubch = confirm_channel(conn).await?;
    let mut tally = Tally::default();
    // Messages not replayed are put back at the tail of the queue (`keep`: a requeue
    // would count a delivery), behind the budget, so this run does not meet them again.
    let mut n_kept = 0;
    let mut failure = None;
    for _ in 0..budget {
        let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions::default())
            .await?
        else {
            break;
        };
        let d = m.delivery;
        let why = Why::of(queue, &d.properties, d.routing_key.as_str());
        let id = d
            .properties
            .message_id()
            .as_ref()
            .map_or("-", |s| s.as_str())
            .to_owned();
        let Some(rk) = replay_routing_key(queue, &why) else {
            println!("kept message_id={id}: cannot tell its original routing key");
            tally.no_routing_key += 1;
            n_kept += 1;
            if let Err(e) = keep(&pubch, queue, d).await {
                failure = Some(e);
                break;
            }
            continue;
        };
        match republish(&pubch, &rk, &d.data, replay_properties(&d.properties)).await {
            Ok(Published::Stored) => {
                tally.replayed += 1;
                if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
                    // The copy is stored; the dead letter returns to the queue when the
                    // connection closes, and a later replay duplicates it (deduplicated by id).
                    failure = Some(anyhow::Error::from(e).context(format!("ack message_id={id}")));
                    break;
                }
            }
            Ok(Published::Returned(reply)) => {
                println!(
                    "kept message_id={id}: returned, no queue is bound to routing key {rk} ({reply})"
                );
                tally.returned += 1;
                n_kept += 1;
                if let Err(e) = keep(&pubch, queue, d).await {
                    failure = Some(e);
                    break;
                }
            }
            Ok(Published::Nacked) => {
                println!("kept message_id={id}: the broker refused it (negative confirm)");
                tally.nacked += 1;
                n_kept += 1;
                if let Err(e) = keep(&pubch, queue, d).await {
                    failure = Some(e);
                    break;
                }
            }
            Err(e) => {
                // Maybe stored, maybe not: keeping it risks a duplicate (consumers
                // deduplicate by id), dropping it risks a loss. The publish channel may be
                // gone too: then the original is returned (`keep`).
                n_kept += 1;
                if let Err(k) = keep(&pubch, queue, d).await {
                    eprintln!("{k:#}");
                }
                failure = Some(e.context(format!("re-publish message_id={id} to {rk}")));
                break;
            }
        }
    }
    println!(
        "replayed {} message(s) from {queue}; kept {n_kept} (returned {}, nacked {}, no routing key {}); {at_start} there at start",
        tally.replayed, tally.returned, tally.nacked, tally.no_routing_key
    );
    if let Some(e) = failure {
        return Err(e);
    }
    if n_kept > 0 {
        anyhow::bail!("{n_kept} message(s) were not replayed and are still in {queue}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use collections_bus::lapin::types::{FieldArray, LongString};

    use super::*;

    fn long(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    #[test]
    fn operator_names_resolve_to_the_holding_queue() {
        assert_eq!(
            holding_queue("collections.payment-failed"),
            "collections.payment-failed.dlq"
        );
        assert_eq!(
            holding_queue("collections.payment-failed.dlq"),
            "collections.payment-failed.dlq"
        );
        assert_eq!(holding_queue(UNROUTED_QUEUE), UNROUTED_QUEUE);
    }

    #[test]
    fn a_broker_dead_letter_is_explained_by_its_x_death() {
        let mut death = FieldTable::default();
        death.insert("reason".into(), long("delivery_limit"));
        death.insert("queue".into(), long("collections.promise-made"));
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![long("promise.made")])),
        );
        let mut h = FieldTable::default();
        h.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        h.insert("x-first-death-reason".into(), long("delivery_limit"));
        h.insert("x-delivery-count".into(), AMQPValue::LongLongInt(11));
        h.insert("traceparent".into(), long("00-abc-def-01"));
        let p = BasicProperties::default()
            .with_headers(h)
            .with_message_id("evt-1".into())
            .with_user_id("billing".into());
        let why = Why::of(
            "collections.promise-made.dlq",
            &p,
            "collections.promise-made.dlq",
        );
        assert_eq!(why.reason, "delivery_limit (x-death)");
        assert_eq!(why.routing_key.as_deref(), Some("promise.made"));

        let out = replay_properties(&p);
        assert_eq!(out.message_id().as_ref().map(|s| s.as_str()), Some("evt-1"));
        assert_eq!(*out.user_id(), None);
        let headers = out.headers().clone().unwrap_or_default();
        let keys: Vec<&str> = headers.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["traceparent"]);
    }

    #[test]
    fn without_any_hint_the_source_queue_gives_the_routing_key() {
        let why = Why::of(
            "collections.payment-received.dlq",
            &BasicProperties::default(),
            "collections.payment-received.dlq",
        );
        assert_eq!(why.reason, "-");
        assert_eq!(
            replay_routing_key("collections.payment-received.dlq", &why).as_deref(),
            Some("payment.received")
        );
        let unrouted = Why::of(
            UNROUTED_QUEUE,
            &BasicProperties::default(),
            "payment.refunded",
        );
        assert_eq!(
            unrouted.reason,
            "unrouted (no queue for routing key payment.refunded)"
        );
        assert_eq!(
            replay_routing_key(UNROUTED_QUEUE, &unrouted).as_deref(),
            Some("payment.refunded")
        );
    }
}
