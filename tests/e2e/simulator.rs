//! The simulator against the real binaries: the same scenario, published for real and
//! replayed on the virtual clock, yields the same task timeline.

use std::{collections::BTreeMap, time::Duration};

use collections_core::{
    parse_event,
    sim::{simulate, Entry, Scenario, Timed},
    Policy,
};
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{cloudevent, cny, is, zone_where_it_is, TestEnv};

const WAIT: Duration = Duration::from_secs(30);

/// Promise timings in seconds so that a whole promise cycle happens while we watch.
fn fast_policy_text() -> String {
    collections_core::policy::DEFAULT_POLICY_TOML
        .replace("reminder_before = \"1h\"", "reminder_before = \"3s\"")
        .replace("check_after = \"1h\"", "check_after = \"3s\"")
        .replace("grace = \"2h\"", "grace = \"5s\"")
}

/// Publishes one inbound event now and records it as the simulator will replay it.
async fn publish(env: &TestEnv, log: &mut Vec<Timed>, ty: &str, account: &str, data: Value) {
    let body = cloudevent(Uuid::new_v4(), ty, account, data);
    let bytes = body.to_string().into_bytes();
    let event = parse_event(&bytes, None).expect("the scenario's event parses");
    let at = Timestamp::now();
    env.publish_raw(ty, &bytes).await;
    log.push(Timed { at, event });
}

/// One task event as the comparison sees it: everything a dashboard reads but the due
/// instant, which is compared with a tolerance (tasks due "now" are due when the real
/// worker decided, a few milliseconds after the recorded publish instant).
#[derive(Debug, Clone, PartialEq)]
struct Step {
    state: String,
    channel: String,
    tone: String,
    priority: Option<u8>,
    attempt: Option<u32>,
    reason: String,
}

/// One task's events in the order they were decided, with their due instants.
#[derive(Debug)]
struct Life {
    kind: String,
    steps: Vec<Step>,
    dues: Vec<Timestamp>,
}

/// Groups task events by task. Within a task, events are ordered by when they were
/// decided (the CloudEvents `time`), a plan before its firing or cancellation at the same
/// instant: the worker that plans and the scheduler that fires are different processes,
/// so arrival order on the exchange is not decision order on a busy machine. Tasks are
/// then ordered by kind, first attempt, first tone and first due instant.
fn lives<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<Life> {
    let mut by_task: BTreeMap<Uuid, Vec<&Entry>> = BTreeMap::new();
    for e in entries {
        by_task
            .entry(e.task_id.expect("every task event names its task"))
            .or_default()
            .push(e);
    }
    let mut out: Vec<Life> = by_task
        .into_values()
        .map(|mut events| {
            // Stable: the simulator's own order stands for events decided together.
            events.sort_by_key(|e| (e.at, e.state != "scheduled"));
            Life {
                kind: events[0].kind.clone(),
                steps: events
                    .iter()
                    .map(|e| Step {
                        state: e.state.clone(),
                        channel: e.channel.clone().unwrap_or_default(),
                        tone: e.tone.clone().unwrap_or_default(),
                        priority: e.priority,
                        attempt: e.attempt,
                        reason: e.reason.clone(),
                    })
                    .collect(),
                dues: events
                    .iter()
                    .map(|e| e.due_at.unwrap_or(Timestamp::UNIX_EPOCH))
                    .collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        let key = |l: &Life| {
            (
                l.kind.clone(),
                l.steps[0].attempt,
                l.steps[0].tone.clone(),
                l.dues[0],
            )
        };
        key(a).cmp(&key(b))
    });
    out
}

#[tokio::test]
async fn simulated_timeline_equals_what_the_binaries_emit() {
    let mut env = TestEnv::new().await;
    let policy_text = fast_policy_text();
    let policy = Policy::from_toml_str(&policy_text).expect("fast policy valid");
    let path = env.log_dir.join("policy.toml");
    std::fs::write(&path, &policy_text).expect("write policy");
    env.extra_env
        .push(("POLICY_FILE".into(), path.display().to_string()));
    env.start_workers().await;
    env.spawn("task-scheduler").await;
    let (zone, tz) = zone_where_it_is(14);
    let today = Timestamp::now().to_zoned(tz).date();
    let acc = "acc-sim";
    let mut log = Vec::new();

    // An instalment fails: the call is due at once and, once it fires, attempt 2 waits
    // for 17:00.
    publish(
        &env,
        &mut log,
        "payment.failed",
        acc,
        json!({"account_id": acc, "customer": {"timezone": zone},
               "installment": {"number": 2, "due_date": today.to_string(), "amount": cny(80_000)},
               "overdue_amount": cny(80_000), "failure_reason": "insufficient_funds",
               "attempted_at": Timestamp::now()}),
    )
    .await;
    env.tasks
        .wait_for(1, WAIT, |e| {
            is("task.scheduled", "collection_call", acc)(e) && e["data"]["attempt"] == 2
        })
        .await;
    // The call gets a promise in 6 s that is never kept: reminder, check, expiry, and an
    // escalated (firm) call that fires and plans its next attempt.
    let promised = Timestamp::now() + SignedDuration::from_secs(6);
    publish(
        &env,
        &mut log,
        "promise.made",
        acc,
        json!({"account_id": acc, "promise_id": "ptp-sim", "amount": cny(80_000),
               "promised_at": promised, "captured_by": "agent-3", "channel": "phone_mobile"}),
    )
    .await;
    let last = env
        .tasks
        .wait_for(1, WAIT, |e| {
            is("task.scheduled", "collection_call", acc)(e)
                && e["data"]["attempt"] == 2
                && e["data"]["tone"] == "firm"
        })
        .await;
    assert_eq!(
        last.len(),
        1,
        "the escalated call fires and plans attempt 2"
    );
    // Let anything in flight arrive; nothing else is due for hours.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let until = Timestamp::now();

    let real: Vec<Entry> = env
        .tasks
        .all()
        .iter()
        .filter(|e| e["subject"] == acc)
        .filter_map(|e| Entry::from_task_event(e, &zone))
        .collect();
    let scenario = Scenario::from_events("e2e", log, SignedDuration::ZERO);
    let timeline = simulate(&policy, &scenario, Some(until));
    let simulated: Vec<&Entry> = timeline.tasks();

    // Task by task: the same events in the same order, each with the same state, channel,
    // tone, priority, attempt and reason, and a due instant within 5 s (a task due "now"
    // is due when the real worker decided: seconds later on a loaded two-core machine).
    let sim_lives = lives(simulated.iter().copied());
    let real_lives = lives(&real);
    let outline = |ls: &[Life]| {
        ls.iter()
            .map(|l| {
                let states: Vec<&str> = l.steps.iter().map(|s| s.state.as_str()).collect();
                format!("{} {}", l.kind, states.join(">"))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        outline(&sim_lives),
        outline(&real_lives),
        "simulated (left) and real (right) tasks differ"
    );
    for (s, r) in sim_lives.iter().zip(&real_lives) {
        assert_eq!(
            s.steps, r.steps,
            "{} simulated (left) and real (right)",
            s.kind
        );
        for (sd, rd) in s.dues.iter().zip(&r.dues) {
            assert!(
                rd.duration_since(*sd).abs() <= SignedDuration::from_secs(5),
                "{} due {sd} simulated, {rd} real",
                s.kind
            );
        }
    }
    // The sequence is the whole promise cycle, not a trivial one.
    let sim_outline = outline(&sim_lives);
    for life in [
        "collection_call scheduled>due",
        "collection_call scheduled>cancelled",
        "promise_reminder scheduled>due",
        "promise_check scheduled>due",
    ] {
        assert!(
            sim_outline.iter().any(|l| l == life),
            "{life}: {sim_outline:#?}"
        );
    }
    assert!(timeline
        .entries
        .iter()
        .any(|e| e.kind == "promise.broken" && e.reason.contains("expired")));
}
