//! The load: events generated in a realistic mix, and publishing them with confirms,
//! either as fast as the broker confirms them or paced at a rate.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use lapin::{
    options::BasicPublishOptions,
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel,
};
use serde_json::{json, Value};
use uuid::Uuid;

/// Queues one persistent publish on the connection now, in call order (its first poll
/// registers the confirm tag and queues the frames), and returns the wait for its write
/// and confirm: `true` if the broker did not confirm it. Awaiting each publish before
/// queueing the next would cost a hand-off to lapin's I/O thread and a socket write per
/// message, and understate what the broker takes.
pub async fn queue_publish<'a>(
    ch: &'a Channel,
    exchange: &'a str,
    routing_key: &'a str,
    body: &'a [u8],
) -> impl std::future::Future<Output = bool> + 'a {
    let mut send = Box::pin(futures::future::maybe_done(ch.basic_publish(
        exchange.into(),
        routing_key.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default().with_delivery_mode(2),
    )));
    let _queued = futures::poll!(send.as_mut());
    async move {
        send.as_mut().await;
        match send.as_mut().take_output() {
            Some(Ok(confirm)) => confirm.await.map(|c| c.is_nack()).unwrap_or(true),
            _ => true,
        }
    }
}

/// Publishes `items` persistently with confirms, `window` at a time: the whole window is
/// queued (see [`queue_publish`]), then its confirms are awaited.
pub async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    items: &[(String, Vec<u8>)],
    window: usize,
) -> anyhow::Result<()> {
    for chunk in items.chunks(window.max(1)) {
        let mut waits = Vec::with_capacity(chunk.len());
        for (rk, body) in chunk {
            waits.push(queue_publish(ch, exchange, rk, body).await);
        }
        for wait in waits {
            if wait.await {
                bail!("a publish to {exchange} was not confirmed");
            }
        }
    }
    Ok(())
}

/// Publishes `items` (routing key, body) to `exchange` paced at `rate` per second. Each
/// is handed to the connection when it comes due, without waiting for it to be written or
/// confirmed (sends and confirms are settled while the loop waits for the next due time):
/// the pacing never waits on the broker, and the items due within one timer tick (1 ms)
/// leave in one socket write, as any buffering client's would, instead of costing the
/// broker a read each. `sent(i)` is called as item `i` leaves. Returns the time the pacing
/// took and how many items the broker did not confirm.
pub async fn publish_paced<'a>(
    ch: &'a Channel,
    exchange: &'a str,
    items: impl Iterator<Item = (&'a str, &'a [u8])>,
    rate: f64,
    mut sent: impl FnMut(usize),
) -> (Duration, usize) {
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut nacks = 0usize;
    let start = Instant::now();
    for (i, (rk, body)) in items.enumerate() {
        let due = tokio::time::Instant::from_std(start + Duration::from_secs_f64(i as f64 / rate));
        loop {
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(due) => break,
                Some(nacked) = inflight.next(), if !inflight.is_empty() => {
                    nacks += usize::from(nacked);
                }
            }
        }
        sent(i);
        inflight.push(queue_publish(ch, exchange, rk, body).await);
    }
    let paced = start.elapsed();
    while let Some(nacked) = inflight.next().await {
        nacks += usize::from(nacked);
    }
    (paced, nacks)
}

/// Arguments declaring a quorum queue.
pub fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

fn cny(minor: i64) -> Value {
    json!({"minor": minor, "currency": "CNY"})
}

fn event(ty: &str, account: &str, data: Value) -> (String, Uuid, Vec<u8>) {
    let id = Uuid::new_v4();
    let body = json!({
        "specversion": "1.0", "id": id, "source": "bench", "type": ty,
        "time": Timestamp::now(), "subject": account,
        "datacontenttype": "application/json", "data": data,
    });
    (ty.to_owned(), id, body.to_string().into_bytes())
}

/// The arrangement workload (`ingest --arrangement-instalments N`): half `payment.failed`,
/// half `arrangement.made` of `instalments` monthly instalments (each plans a reminder, a
/// check and an internal expiry per instalment), interleaved as in [`mix`].
pub fn arrangement_mix(
    n: usize,
    accounts: usize,
    salt: &str,
    instalments: usize,
) -> Vec<(String, Uuid, Vec<u8>)> {
    let mut out = mix(n, accounts, salt);
    let first = Timestamp::now() + SignedDuration::from_hours(24 * 7);
    for (i, e) in out.iter_mut().enumerate() {
        if e.0 == "payment.failed" {
            continue;
        }
        let body: Value = serde_json::from_slice(&e.2).unwrap_or_default();
        let a = body["subject"].as_str().unwrap_or_default().to_owned();
        let per = 150_000_i64;
        let list: Vec<Value> = (0..instalments)
            .map(|k| {
                let k32 = u32::try_from(k).unwrap_or(u32::MAX);
                json!({"number": k32 + 1,
                       "due_at": first + SignedDuration::from_hours(24 * 30 * i64::from(k32)),
                       "amount": cny(per)})
            })
            .collect();
        let total = per * i64::try_from(instalments).unwrap_or(1);
        *e = event(
            "arrangement.made",
            &a,
            json!({"account_id": a, "arrangement_id": format!("arr-{salt}{i}"),
                   "kind": "instalment_plan", "total": cny(total), "instalments": list,
                   "settles_in_full": false, "captured_by": "bench", "channel": "phone_mobile"}),
        );
    }
    out
}

/// How many failures a follow-up event trails its account's failure by, in the stream.
const FOLLOW_LAG: usize = 1000;

/// A realistic mix, interleaved: half `payment.failed`, a quarter `promise.made` and a
/// quarter partial `payment.received`. Each account's sequence is a failure followed,
/// about `2 * FOLLOW_LAG` events later, by its promise or partial payment, so the later
/// event finds a delinquent account while all three queues are busy at once.
pub fn mix(n: usize, accounts: usize, salt: &str) -> Vec<(String, Uuid, Vec<u8>)> {
    let failing = n.div_ceil(2);
    let follow = n - failing;
    let today = Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap_or(jiff::tz::TimeZone::UTC))
        .date();
    let acc = |i: usize| format!("acc-{salt}{}", (i * 7919) % accounts);
    let failure = |i: usize| {
        let a = acc(i);
        event(
            "payment.failed",
            &a,
            json!({
            "account_id": a, "customer": {"timezone": "Asia/Shanghai"},
            "installment": {"number": 2, "due_date": today.to_string(), "amount": cny(150_000)},
            "overdue_amount": cny(150_000), "failure_reason": "insufficient_funds",
            "attempted_at": Timestamp::now()}),
        )
    };
    let follow_up = |i: usize| {
        let a = acc(i);
        if i.is_multiple_of(2) {
            event(
                "promise.made",
                &a,
                json!({
                "account_id": a, "promise_id": format!("p-{salt}{i}"), "amount": cny(150_000),
                "promised_at": Timestamp::now() + SignedDuration::from_hours(5),
                "captured_by": "bench", "channel": "phone_mobile"}),
            )
        } else {
            event(
                "payment.received",
                &a,
                json!({
                "account_id": a, "payment_id": format!("pay-{salt}{i}"), "amount": cny(50_000),
                "received_at": Timestamp::now()}),
            )
        }
    };
    let lag = FOLLOW_LAG.min(failing / 4);
    let mut out = Vec::with_capacity(n);
    let mut next = 0;
    for i in 0..failing {
        out.push(failure(i));
        if i >= lag && next < follow {
            out.push(follow_up(next));
            next += 1;
        }
    }
    out.extend((next..follow).map(follow_up));
    out
}

/// Which events the ingest benchmark publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// The existing event types ([`mix`]): the workload every earlier figure used.
    Mix,
    /// `contact.attempted` only ([`contacts`]), on accounts made delinquent first (that
    /// prefill is not timed).
    Contacts,
    /// The mix with one event in ten a hold or restriction event ([`holds`]).
    Holds,
}

impl Workload {
    /// The worker binaries the workload needs.
    pub fn workers(self) -> Vec<&'static str> {
        let mut w = vec![
            "payment-failed-worker",
            "promise-made-worker",
            "promise-broken-worker",
            "payment-received-worker",
        ];
        match self {
            Self::Mix => {}
            Self::Contacts => w.push("contact-attempted-worker"),
            Self::Holds => w.extend([
                "hold-placed-worker",
                "hold-released-worker",
                "contact-restricted-worker",
                "contact-unrestricted-worker",
            ]),
        }
        w
    }

    /// The events of a phase: `n` events of this workload (`salt` keeps two phases' ids
    /// and new accounts apart).
    pub fn events(self, n: usize, accounts: usize, salt: &str) -> Vec<(String, Uuid, Vec<u8>)> {
        match self {
            Self::Mix => mix(n, accounts, salt),
            Self::Contacts => contacts(n, contact_accounts(n, accounts), salt),
            Self::Holds => holds(n, accounts, salt),
        }
    }
}

/// The accounts a contacts run dials: one per five attempts of the throughput phase (a
/// day's dialling of a portfolio: several attempts per debtor, so the caps are reached),
/// the pre-created `acc-0` .. `acc-<k-1>`.
pub fn contact_accounts(n: usize, accounts: usize) -> usize {
    (n / 5).clamp(1, accounts.max(1))
}

/// One `payment.failed` per account `acc-0` .. `acc-<k-1>`: the delinquency the contact
/// attempts follow up.
pub fn delinquent(k: usize) -> Vec<(String, Uuid, Vec<u8>)> {
    let today = Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap_or(jiff::tz::TimeZone::UTC))
        .date();
    (0..k)
        .map(|i| {
            let a = format!("acc-{i}");
            event(
                "payment.failed",
                &a,
                json!({
                "account_id": a, "customer": {"timezone": "Asia/Shanghai"},
                "installment": {"number": 2, "due_date": today.to_string(), "amount": cny(150_000)},
                "overdue_amount": cny(150_000), "failure_reason": "insufficient_funds",
                "attempted_at": Timestamp::now()}),
            )
        })
        .collect()
}

/// `n` contact attempts over the accounts `acc-0` .. `acc-<k-1>`, two accounts per debtor
/// (`debtor-<i/2>`: the ledger and the caps are per person, a batch locks both). The mix of
/// a dialer's day: mostly unanswered calls (no answer, busy, voicemail), a quarter
/// conversations (with a disposition now and then: a promise, a callback an hour ahead, a
/// refusal, claims paid), wrong numbers and failed calls, SMS delivered or undeliverable,
/// one in ten inbound; one in twenty reports is a correction of an earlier attempt (same
/// `attempt_id`). No disposition that places a hold (dispute, hardship, cease): that is
/// the holds workload's part.
pub fn contacts(n: usize, k: usize, salt: &str) -> Vec<(String, Uuid, Vec<u8>)> {
    let k = k.max(1);
    let now = Timestamp::now();
    (0..n)
        .map(|j| {
            let i = (j * 7919) % k;
            let a = format!("acc-{i}");
            // A correction re-reports attempt j - 20 of the same stream with a new result.
            let attempt_id = if j % 20 == 19 && j >= 20 {
                format!("att-{salt}{}", j - 20)
            } else {
                format!("att-{salt}{j}")
            };
            let (channel, point) = match j % 10 {
                0 | 1 => ("sms", "s"),
                2 => ("phone_work", "w"),
                3 => ("phone_home", "h"),
                _ => ("phone_mobile", "m"),
            };
            let sms = channel == "sms";
            let roll = (j * 31) % 100;
            let (result, party, disposition) = if sms {
                if roll < 95 {
                    ("delivered", "debtor", None)
                } else {
                    ("undeliverable", "unknown", None)
                }
            } else {
                match roll {
                    0..=39 => ("no_answer", "unknown", None),
                    40..=47 => ("busy", "unknown", None),
                    48..=57 => ("voicemail", "unknown", None),
                    58..=60 => ("wrong_number", "unknown", None),
                    61..=62 => ("failed", "unknown", None),
                    63..=66 => ("connected", "third_party", Some("other")),
                    67..=74 => ("connected", "debtor", Some("promise_made")),
                    75..=79 => ("connected", "debtor", Some("callback_requested")),
                    80..=82 => ("connected", "debtor", Some("refused")),
                    83..=84 => ("connected", "debtor", Some("claims_paid")),
                    _ => ("connected", "debtor", None),
                }
            };
            let inbound = !sms && result == "connected" && party == "debtor" && j % 10 == 4;
            let mut data = json!({
                "account_id": a, "debtor_id": format!("debtor-{}", i / 2),
                "attempt_id": attempt_id, "channel": channel,
                "direction": if inbound { "inbound" } else { "outbound" },
                "contact_point_id": format!("cp-{i}-{point}"), "party": party,
                "result": result,
                "started_at": now - SignedDuration::from_secs(60 + (j % 600) as i64),
                "agent_id": "dialer-1",
            });
            if let Some(d) = disposition {
                data["disposition"] = json!(d);
                if d == "callback_requested" {
                    data["callback_at"] = json!(now + SignedDuration::from_hours(1));
                }
            }
            event("contact.attempted", &a, data)
        })
        .collect()
}

/// [`mix`] with one event in ten replaced by a hold or restriction event on an account
/// whose failure came earlier in the stream, in pairs per account: a dispute placed then
/// resolved; a hardship hold (pausing DPD) released *before* it is placed (arrival order
/// across queues); a restriction (SMS opt-out, do-not-call on the mobile, workplace
/// prohibited, agreed hours 18:00-20:00) then lifted; a complaint on phone_work and SMS
/// placed twice (a duplicate publication: a new event id, the same hold).
pub fn holds(n: usize, accounts: usize, salt: &str) -> Vec<(String, Uuid, Vec<u8>)> {
    let h = n / 10;
    let mut base = mix(n - h, accounts, salt);
    let accounts = accounts.max(1);
    let now = Timestamp::now();
    let len = base.len();
    let mut out = Vec::with_capacity(n);
    let mut next_hold = 0;
    for (pos, e) in base.drain(..).enumerate() {
        out.push(e);
        // Hold events spread evenly over the stream.
        while next_hold < h && (next_hold + 1) * len / (h + 1) <= pos {
            let k = next_hold;
            next_hold += 1;
            let g = k / 2;
            let second = k % 2 == 1;
            // An account of a failure already published: failure i sits near 2i - lag.
            let slot = (g * 2 + 1) * len / (h + 1);
            let i = (slot / 2).saturating_sub(FOLLOW_LAG.min(len / 8));
            let a = format!("acc-{salt}{}", (i * 7919) % accounts);
            let hold_id = format!("hold-{salt}{g}");
            let placed = |reason: &str, scope: Value, pause: bool| {
                json!({"account_id": a, "hold_id": hold_id, "reason": reason,
                       "scope": scope, "placed_at": now, "pause_dpd": pause,
                       "placed_by": "bench"})
            };
            let released = |outcome: &str| {
                json!({"account_id": a, "hold_id": hold_id, "outcome": outcome,
                       "released_at": now + SignedDuration::from_secs(1), "released_by": "bench"})
            };
            let rid = format!("rst-{salt}{g}");
            let (ty, data) = match (g % 4, second) {
                (0, false) => ("hold.placed", placed("dispute", json!("all"), false)),
                (0, true) => ("hold.released", released("resolved")),
                (1, false) => ("hold.released", released("expired")),
                (1, true) => ("hold.placed", placed("hardship", json!("all"), true)),
                (2, false) => {
                    let mut r = json!({"account_id": a, "restriction_id": rid,
                                       "effective_at": now, "source": "bench"});
                    match (g / 4) % 4 {
                        0 => {
                            r["kind"] = json!("opt_out");
                            r["channel"] = json!("sms");
                        }
                        1 => {
                            r["kind"] = json!("do_not_call");
                            r["channel"] = json!("phone_mobile");
                        }
                        2 => r["kind"] = json!("workplace_prohibited"),
                        _ => {
                            r["kind"] = json!("agreed_hours");
                            r["hours"] = json!({"start": "18:00", "end": "20:00"});
                        }
                    }
                    ("contact.restricted", r)
                }
                (2, true) => (
                    "contact.unrestricted",
                    json!({"account_id": a, "restriction_id": rid,
                           "effective_at": now + SignedDuration::from_secs(1)}),
                ),
                _ => (
                    "hold.placed",
                    placed("complaint", json!(["phone_work", "sms"]), false),
                ),
            };
            out.push(event(ty, &a, data));
        }
    }
    out
}
