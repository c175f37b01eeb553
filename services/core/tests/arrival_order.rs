//! The outcome does not depend on the order events arrive in across queues.
//!
//! Each event type has its own queue and worker, so under a backlog on one queue (a
//! month-end debit run fills `payment-failed`) a later event of another type is applied
//! first. Within one queue the order holds. This property publishes a coherent history of
//! one account (a failed debit, promises, payments, broken promises, each carrying what
//! billing knows at its `time`), then delivers it in a burst after a backlog, in the
//! published order and in an arbitrary interleaving of the four queues, and asks that
//! both leave the same open tasks and the same account.
//!
//! Where the events do not carry enough to decide, the order can matter; those cases are
//! listed in ARCHITECTURE.md ("Arrival order") and left out of the generated histories:
//!
//! - only `payment.failed` carries the customer's zone, so the histories keep the
//!   customer in the policy's default zone;
//! - a `payment.received` without `overdue_amount_after` is a delta: applied before the
//!   `payment.failed` whose overdue it reduces, it has nothing to reduce, so histories
//!   here always carry the balance after the payment;
//! - the frequency caps and the daily attempt cap count calls as they fire, so the
//!   scheduler does not fire between the deliveries of the burst;
//! - billing reports broken only a promise still open.
//!
//! 256 cases from a fixed seed; wider runs (`PROPTEST_CASES=3000 PROPTEST_RNG_SEED=12`)
//! still find one class ARCHITECTURE.md lists as not yet handled. Set
//! `ARRIVAL_ORDER_TRACE=1` to print each decision's journal.

use std::collections::BTreeMap;

use collections_core::{
    decide, parse_event, policy::DEFAULT_POLICY_TOML, state::PromiseStatus, AccountState, Event,
    Policy, Task,
};
use jiff::{SignedDuration, Timestamp, ToSpan};
use proptest::prelude::*;
use serde_json::{json, Value};

const ACC: &str = "acc-order-0001";

/// The customer's zone: the policy's default. `payment.failed` alone carries the zone,
/// so what is planned before it arrives is planned in the default zone (see the module
/// doc and ARCHITECTURE.md for what a late zone re-plans).
const ZONE: &str = "Asia/Shanghai";

/// One step of billing's story, before it is given an instant.
#[derive(Debug, Clone)]
enum Ev {
    /// An instalment's debit failed; the overdue grows by its amount.
    Failed { amount: i64 },
    /// The customer promised to pay `amount` `ahead_h` hours after the event.
    Made { amount: i64, ahead_h: i64 },
    /// The latest promise was broken.
    Broken,
    /// The customer paid `amount` (capped to what is owed; billing gives the balance).
    Received { amount: i64 },
}

#[derive(Debug, Clone)]
struct History {
    start_s: i64,
    /// Each event, and the minutes since the previous one.
    steps: Vec<(i64, Ev)>,
    /// Minutes between the last event and the burst that delivers them all.
    backlog_min: i64,
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        3 => (10_000i64..200_000).prop_map(|amount| Ev::Failed { amount }),
        3 => (5_000i64..200_000, 1i64..96).prop_map(|(amount, ahead_h)| Ev::Made { amount, ahead_h }),
        2 => Just(Ev::Broken),
        2 => (1_000i64..250_000).prop_map(|amount| Ev::Received { amount }),
    ]
}

fn history() -> impl Strategy<Value = History> {
    (
        0i64..(14 * 86_400),
        proptest::collection::vec((1i64..(3 * 24 * 60), ev()), 1..8),
        0i64..(6 * 60),
    )
        .prop_map(|(start_s, steps, backlog_min)| History {
            start_s,
            steps,
            backlog_min,
        })
}

fn money(minor: i64) -> Value {
    json!({ "minor": minor, "currency": "CNY" })
}

/// The history as billing publishes it: events in `time` order, each with its queue.
/// The first event is always the failed debit that opens the case, so the account is
/// known to owe money; later facts follow billing's own ledger.
fn publish(h: &History) -> Vec<(&'static str, Event)> {
    let mut at: Timestamp = "2026-10-20T01:00:00Z"
        .parse::<Timestamp>()
        .expect("instant")
        + SignedDuration::from_secs(h.start_s);
    let start_day = jiff::civil::date(2026, 10, 1);
    let mut overdue = 0i64;
    let mut instalment = 0u32;
    let mut promise = 0u32;
    // Billing's view of the latest promise while it is open: (amount, paid, deadline).
    let mut open: Option<(i64, i64, Timestamp)> = None;
    let grace = SignedDuration::from_hours(2);
    let mut out = Vec::new();
    for (n, (gap_min, ev)) in h.steps.iter().enumerate() {
        at += SignedDuration::from_mins(*gap_min);
        let (ty, data) = match ev {
            Ev::Failed { amount } => {
                instalment += 1;
                overdue += amount;
                (
                    "payment.failed",
                    json!({
                        "account_id": ACC,
                        "customer": { "timezone": ZONE },
                        "installment": {
                            "number": instalment,
                            // Instalments fall due on consecutive days before the start.
                            "due_date": (start_day + i64::from(instalment).days()).to_string(),
                            "amount": money(*amount),
                        },
                        "overdue_amount": money(overdue),
                        "failure_reason": "insufficient_funds",
                        "attempted_at": at.to_string(),
                    }),
                )
            }
            Ev::Made { amount, ahead_h } => {
                promise += 1;
                open = Some((
                    *amount,
                    0,
                    at + SignedDuration::from_hours(*ahead_h) + grace,
                ));
                (
                    "promise.made",
                    json!({
                        "account_id": ACC,
                        "promise_id": format!("prm-{promise}"),
                        "amount": money(*amount),
                        "promised_at": (at + SignedDuration::from_hours(*ahead_h)).to_string(),
                        "captured_by": "agent-0421",
                        "channel": "phone_mobile",
                    }),
                )
            }
            // Billing reports broken only a promise still open (not kept, not superseded).
            Ev::Broken if open.take().is_none() => continue,
            Ev::Broken => (
                "promise.broken",
                json!({
                    "account_id": ACC,
                    "promise_id": format!("prm-{promise}"),
                    "reason": "no_payment",
                }),
            ),
            Ev::Received { amount } => {
                let paid = (*amount).min(overdue.max(1));
                overdue = (overdue - paid).max(0);
                if let Some((promised, so_far, deadline)) = open.as_mut() {
                    if at <= *deadline {
                        *so_far += paid;
                    }
                    if *so_far >= *promised || overdue == 0 {
                        open = None;
                    }
                }
                (
                    "payment.received",
                    json!({
                        "account_id": ACC,
                        "payment_id": format!("pay-{n}"),
                        "amount": money(paid),
                        "received_at": at.to_string(),
                        "overdue_amount_after": money(overdue),
                    }),
                )
            }
        };
        let body = json!({
            "specversion": "1.0",
            "id": format!("00000000-0000-4000-8000-{n:012x}"),
            "source": "/tests/arrival-order",
            "type": ty,
            "time": at.to_string(),
            "subject": ACC,
            "datacontenttype": "application/json",
            "data": data,
        });
        let bytes = serde_json::to_vec(&body).expect("serialise");
        let event = parse_event(&bytes, None).unwrap_or_else(|e| panic!("refused: {e}"));
        out.push((ty, event));
    }
    out
}

/// An interleaving of the queues: `keys` orders the events, then each queue's events are
/// put back in their published order in the slots that queue got.
fn interleave(published: &[(&'static str, Event)], keys: &[u32]) -> Vec<(&'static str, Event)> {
    let mut order: Vec<usize> = (0..published.len()).collect();
    order.sort_by_key(|i| (keys.get(*i).copied().unwrap_or(0), *i));
    let mut queues: BTreeMap<&str, std::collections::VecDeque<usize>> = BTreeMap::new();
    for (i, (ty, _)) in published.iter().enumerate() {
        queues.entry(ty).or_default().push_back(i);
    }
    order
        .iter()
        .map(|slot| {
            let ty = published[*slot].0;
            let i = queues
                .get_mut(ty)
                .and_then(std::collections::VecDeque::pop_front)
                .expect("one event per slot");
            published[i].clone()
        })
        .collect()
}

/// What the dashboards and the next decision see: open tasks (without ids, which name
/// the event that planned them) and the account's facts.
#[derive(Debug, PartialEq)]
struct Outcome {
    tasks: Vec<String>,
    account: String,
}

fn deliver(policy: &Policy, events: &[(&'static str, Event)], now: Timestamp) -> Outcome {
    let mut state: Option<AccountState> = None;
    let mut open: Vec<Task> = Vec::new();
    for (_, e) in events {
        let d = decide(state.as_ref(), &open, e, policy, now).expect("applies");
        if std::env::var_os("ARRIVAL_ORDER_TRACE").is_some() {
            eprintln!("{} {}", e.event_type().as_str(), e.time);
            for j in &d.journal {
                eprintln!("  {}: {}", j.kind, j.detail);
            }
        }
        open.retain(|t| !d.cancel.iter().any(|c| c.task_id == t.task_id));
        for (id, p) in &d.reprioritise {
            if let Some(t) = open.iter_mut().find(|t| t.task_id == *id) {
                t.priority = *p;
            }
        }
        open.extend(d.schedule);
        state = Some(d.state);
    }
    let mut tasks: Vec<String> = open
        .iter()
        .map(|t| {
            // Internal tasks are never published, so their rank is never seen (nor kept
            // up to date).
            let priority = if t.kind.is_internal() {
                "-".to_owned()
            } else {
                t.priority.to_string()
            };
            format!(
                "{} via {} at {} (priority {priority}, tone {}, promise {:?})",
                t.kind, t.channel, t.due_at, t.tone, t.promise_id
            )
        })
        .collect();
    tasks.sort();
    let s = state.expect("one event at least");
    let promises: Vec<(String, PromiseStatus)> = {
        let mut v: Vec<_> = s
            .promises
            .iter()
            .map(|p| (p.promise_id.clone(), p.status))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let account = format!(
        "status {:?}, zone {}, overdue {}, broken {}, unpaid due dates {:?}, first instalment \
         default {}, promises {promises:?}",
        s.status,
        s.timezone,
        s.overdue_minor,
        s.broken_promises,
        s.unpaid_due_dates,
        s.first_installment_default,
    );
    Outcome { tasks, account }
}

fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 256;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = proptest::test_runner::RngSeed::Fixed(0x0a11_0e1d);
    }
    c
}

proptest! {
    #![proptest_config(config())]

    /// Any interleaving of the four queues ends where the published order ends.
    #[test]
    fn any_interleaving_of_the_queues_ends_as_the_published_order(
        h in history(),
        keys in proptest::collection::vec(0u32..8, 8),
    ) {
        let policy = Policy::from_toml_str(DEFAULT_POLICY_TOML).expect("policy");
        let published = publish(&h);
        let Some((_, last)) = published.last() else { return Ok(()) };
        let now = last.time + SignedDuration::from_mins(h.backlog_min);
        let expected = deliver(&policy, &published, now);
        let shuffled = interleave(&published, &keys);
        let order: Vec<String> = shuffled
            .iter()
            .map(|(ty, e)| format!("{ty} {}", e.time))
            .collect();
        let got = deliver(&policy, &shuffled, now);
        prop_assert_eq!(got, expected, "delivered as {:#?}", order);
    }
}
