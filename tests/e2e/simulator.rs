//! The simulator against the real binaries: the same scenario, published for real and
//! replayed on the virtual clock, yields the same task timeline.

use std::time::Duration;

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

/// What the comparison looks at: the task's life-cycle state, kind, channel and tone, and
/// its due instant (tasks due "now" are due when the real worker decided, a few
/// milliseconds after the recorded publish instant).
fn row(e: &Entry) -> (String, String, String, String, Timestamp) {
    (
        e.state.clone(),
        e.kind.clone(),
        e.channel.clone().unwrap_or_default(),
        e.tone.clone().unwrap_or_default(),
        e.due_at.unwrap_or(Timestamp::UNIX_EPOCH),
    )
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

    // Task events come from several processes (workers, scheduler), so their arrival
    // order on the exchange is not the order of decisions when the machine is busy:
    // compare the two timelines as sets, ordered by kind, state and due instant.
    let order = |rows: &mut Vec<(String, String, String, String, Timestamp)>| {
        rows.sort_by(|a, b| (&a.1, &a.0, a.4).cmp(&(&b.1, &b.0, b.4)));
    };
    let mut real_rows: Vec<_> = real.iter().map(row).collect();
    let mut sim_rows: Vec<_> = simulated.iter().map(|e| row(e)).collect();
    order(&mut real_rows);
    order(&mut sim_rows);
    let shape = |rows: &[(String, String, String, String, Timestamp)]| {
        rows.iter()
            .map(|r| (r.0.clone(), r.1.clone(), r.2.clone(), r.3.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        shape(&sim_rows),
        shape(&real_rows),
        "simulated (left) and real (right) task sequences differ"
    );
    for (s, r) in sim_rows.iter().zip(&real_rows) {
        let gap = r.4.duration_since(s.4).abs();
        assert!(
            gap <= SignedDuration::from_secs(2),
            "{} {} due {} simulated, {} real",
            s.0,
            s.1,
            s.4,
            r.4
        );
    }
    // The sequence is the whole promise cycle, not a trivial one.
    let kinds: Vec<&str> = sim_rows.iter().map(|r| r.1.as_str()).collect();
    for k in ["collection_call", "promise_reminder", "promise_check"] {
        assert!(kinds.contains(&k), "{kinds:?}");
    }
    assert!(timeline
        .entries
        .iter()
        .any(|e| e.kind == "promise.broken" && e.reason.contains("expired")));
}
