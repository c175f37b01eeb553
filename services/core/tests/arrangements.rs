//! Payment arrangements (issue 22): one test per rule, driven by CloudEvents parsed from
//! JSON text as the workers parse them, with due tasks fired as the scheduler fires them
//! (through `fire`, and `on_instalment_due` / `on_call_fired` for what follows).
//!
//! Every instant is fixed: no test reads the clock.

use collections_core::{
    arrangement::{ArrangementStatus, InstalmentStatus},
    decide, fire, on_call_fired, on_instalment_due, parse_event,
    policy::DEFAULT_POLICY_TOML,
    state::Status,
    AccountState, Event, FireOutcome, Policy, RejectCode, Task, TaskKind, Tone,
};
use jiff::Timestamp;
use serde_json::{json, Value};

const ACC: &str = "acc-arr-1";
const SHANGHAI: &str = "Asia/Shanghai";

fn ts(s: &str) -> Timestamp {
    s.parse()
        .unwrap_or_else(|e| panic!("bad timestamp {s}: {e}"))
}

fn policy(replacements: &[(&str, &str)]) -> Policy {
    let mut text = DEFAULT_POLICY_TOML.to_owned();
    for (from, to) in replacements {
        assert!(text.contains(from), "default.toml has no {from:?}");
        text = text.replacen(from, to, 1);
    }
    Policy::from_toml_str(&text).unwrap_or_else(|e| panic!("policy refused: {e}"))
}

fn envelope(ty: &str, n: u32, time: &str, data: &Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": format!("00000000-0000-4000-8000-{n:012x}"),
        "source": "/tests/arrangements",
        "type": ty,
        "time": time,
        "subject": data["account_id"].clone(),
        "datacontenttype": "application/json",
        "data": data,
    })
}

fn event(ty: &str, n: u32, time: &str, data: Value) -> Event {
    let v = envelope(ty, n, time, &data);
    parse_event(&serde_json::to_vec(&v).expect("json"), None)
        .unwrap_or_else(|e| panic!("event refused: {e}\n{v:#}"))
}

fn cny(minor: i64) -> Value {
    json!({ "minor": minor, "currency": "CNY" })
}

fn failed(n: u32, time: &str, overdue: i64) -> Event {
    event(
        "payment.failed",
        n,
        time,
        json!({"account_id": ACC, "customer": {"timezone": SHANGHAI},
               "installment": {"number": 3, "due_date": "2026-11-03", "amount": cny(overdue)},
               "overdue_amount": cny(overdue), "failure_reason": "insufficient_funds",
               "attempted_at": time}),
    )
}

/// `arrangement.made` data: instalments of `amounts` due at `dues`.
fn arrangement_data(id: &str, kind: &str, dues: &[&str], amounts: &[i64]) -> Value {
    let instalments: Vec<Value> = dues
        .iter()
        .zip(amounts)
        .enumerate()
        .map(|(i, (d, a))| json!({"number": i + 1, "due_at": d, "amount": cny(*a)}))
        .collect();
    json!({"account_id": ACC, "arrangement_id": id, "kind": kind,
           "total": cny(amounts.iter().sum()), "instalments": instalments,
           "settles_in_full": false, "captured_by": "agent-1", "channel": "phone_mobile"})
}

/// Three instalments of 1 000.00 due at noon Shanghai on 10, 17 and 24 November.
const DUES: [&str; 3] = [
    "2026-11-10T12:00:00+08:00",
    "2026-11-17T12:00:00+08:00",
    "2026-11-24T12:00:00+08:00",
];

fn plan(n: u32, time: &str, id: &str) -> Event {
    event(
        "arrangement.made",
        n,
        time,
        arrangement_data(id, "instalment_plan", &DUES, &[100_000, 100_000, 100_000]),
    )
}

fn paid(n: u32, time: &str, minor: i64, after: Option<i64>) -> Event {
    let mut data = json!({"account_id": ACC, "payment_id": format!("pay-{n}"),
                          "amount": cny(minor), "received_at": time});
    if let Some(a) = after {
        data["overdue_amount_after"] = cny(a);
    }
    event("payment.received", n, time, data)
}

fn reversed(n: u32, time: &str, payment: u32, minor: i64) -> Event {
    event(
        "payment.reversed",
        n,
        time,
        json!({"account_id": ACC, "payment_id": format!("pay-{payment}"), "amount": cny(minor),
               "reversed_at": time, "reason": "returned_debit"}),
    )
}

/// One account as the service keeps it: state, open tasks, what was published.
struct Desk {
    policy: Policy,
    state: Option<AccountState>,
    open: Vec<Task>,
    /// Every task ever planned.
    planned: Vec<Task>,
    /// Routing keys and bodies of everything published on `collections.events`.
    published: Vec<(String, Value)>,
    /// Tasks fired (task.due published), by kind.
    fired: Vec<Task>,
    journal: Vec<String>,
}

impl Desk {
    fn new(policy: Policy) -> Self {
        Self {
            policy,
            state: None,
            open: Vec::new(),
            planned: Vec::new(),
            published: Vec::new(),
            fired: Vec::new(),
            journal: Vec::new(),
        }
    }

    fn absorb(&mut self, d: collections_core::Decision) {
        self.open
            .retain(|t| !d.cancel.iter().any(|c| c.task_id == t.task_id));
        self.open.extend(d.schedule.iter().cloned());
        self.planned.extend(d.schedule.iter().cloned());
        for m in &d.outbox {
            if m.exchange == collections_core::outbound::EVENTS_EXCHANGE {
                self.published.push((m.routing_key.clone(), m.json()));
            }
        }
        self.journal.extend(
            d.journal
                .iter()
                .map(|j| format!("{}: {}", j.kind, j.detail)),
        );
        self.state = Some(d.state);
    }

    /// Fires every task due up to `until`, then applies `e` at its time.
    fn apply(&mut self, e: &Event) {
        self.run_until(e.time);
        let d = decide(self.state.as_ref(), &self.open, e, &self.policy, e.time)
            .unwrap_or_else(|err| panic!("refused: {err}"));
        self.absorb(d);
    }

    fn try_apply(&mut self, e: &Event) -> Result<(), collections_core::DomainError> {
        self.run_until(e.time);
        let d = decide(self.state.as_ref(), &self.open, e, &self.policy, e.time)?;
        self.absorb(d);
        Ok(())
    }

    fn run_until(&mut self, until: Timestamp) {
        for _ in 0..10_000 {
            let Some(task) = self
                .open
                .iter()
                .filter(|t| t.due_at <= until)
                .min_by_key(|t| t.due_at)
                .cloned()
            else {
                return;
            };
            let now = task.due_at;
            self.open.retain(|t| t.task_id != task.task_id);
            match fire(&task, self.state.as_ref(), &self.policy, now) {
                FireOutcome::InstalmentDue { cause } => {
                    let state = self.state.clone().expect("state");
                    let d = on_instalment_due(&state, &self.open, &task, cause, &self.policy, now);
                    self.fired.push(task);
                    self.absorb(d);
                }
                FireOutcome::Due { message, follow_up } => {
                    self.fired.push(task.clone());
                    if follow_up {
                        let state = self.state.clone().expect("state");
                        let d = on_call_fired(
                            &state,
                            &self.open,
                            &task,
                            message.event_id,
                            &self.policy,
                            now,
                        );
                        self.absorb(d);
                    }
                }
                FireOutcome::Expired { message } => {
                    let e = parse_event(&message.body, None).expect("expiry");
                    let d = decide(self.state.as_ref(), &self.open, &e, &self.policy, now)
                        .expect("expiry applies");
                    self.absorb(d);
                }
                FireOutcome::Moved { task, .. } => self.open.push(*task),
                FireOutcome::Cancelled { .. } => {}
            }
        }
        panic!("the scheduler did not settle");
    }

    fn state(&self) -> &AccountState {
        self.state.as_ref().expect("state")
    }

    fn open_of(&self, kind: TaskKind) -> Vec<&Task> {
        self.open.iter().filter(|t| t.kind == kind).collect()
    }

    /// The collection call planned because an instalment of `arrangement` was missed.
    fn call_after(&self, arrangement: &str) -> &Task {
        self.planned
            .iter()
            .find(|t| {
                t.kind == TaskKind::CollectionCall
                    && t.reason.contains(&format!("of arrangement {arrangement}"))
            })
            .expect("a call after the miss")
    }

    fn published_of(&self, key: &str) -> Vec<&Value> {
        self.published
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect()
    }
}

/// Delinquent in Shanghai since 2026-11-03 with 3 000.00 overdue and a call open.
fn delinquent(policy: Policy) -> Desk {
    let mut desk = Desk::new(policy);
    desk.apply(&failed(1, "2026-11-03T09:00:00+08:00", 300_000));
    assert_eq!(desk.open_of(TaskKind::CollectionCall).len(), 1);
    desk
}

fn with_plan() -> Desk {
    let mut desk = delinquent(Policy::default());
    desk.apply(&plan(2, "2026-11-03T10:00:00+08:00", "arr-1"));
    desk
}

// ---------------------------------------------------------------------------------------
// Contract
// ---------------------------------------------------------------------------------------

fn refused(data: Value) -> RejectCode {
    let v = envelope("arrangement.made", 9, "2026-11-03T10:00:00+08:00", &data);
    parse_event(&serde_json::to_vec(&v).expect("json"), None)
        .expect_err("refused")
        .code
}

#[test]
fn an_arrangement_has_1_to_36_increasing_instalments_summing_to_its_total() {
    let ok = arrangement_data("a", "instalment_plan", &DUES, &[1, 2, 3]);
    let v = envelope("arrangement.made", 9, "2026-11-03T10:00:00+08:00", &ok);
    assert!(parse_event(&serde_json::to_vec(&v).expect("json"), None).is_ok());

    let mut none = ok.clone();
    none["instalments"] = json!([]);
    assert_eq!(refused(none), RejectCode::InvalidValue);

    let start = ts("2026-11-10T04:00:00Z");
    let dues: Vec<String> = (0..37)
        .map(|i| (start + jiff::SignedDuration::from_hours(24 * i)).to_string())
        .collect();
    let dues: Vec<&str> = dues.iter().map(String::as_str).collect();
    assert_eq!(
        refused(arrangement_data("a", "instalment_plan", &dues, &[1; 37])),
        RejectCode::InvalidValue
    );
    assert!(parse_event(
        &serde_json::to_vec(&envelope(
            "arrangement.made",
            9,
            "2026-11-03T10:00:00+08:00",
            &arrangement_data("a", "instalment_plan", &dues[..36], &[1; 36])
        ))
        .expect("json"),
        None
    )
    .is_ok());

    let same = [DUES[0], DUES[0], DUES[2]];
    assert_eq!(
        refused(arrangement_data("a", "instalment_plan", &same, &[1, 2, 3])),
        RejectCode::InvalidValue
    );
    let mut wrong_total = ok.clone();
    wrong_total["total"] = cny(7);
    assert_eq!(refused(wrong_total), RejectCode::InvalidValue);
    let mut numbering = ok.clone();
    numbering["instalments"][1]["number"] = json!(3);
    assert_eq!(refused(numbering), RejectCode::InvalidValue);
    let mut shape = ok.clone();
    shape["instalments"][2]["due_at"] = json!("2026-11-24 12:00");
    assert_eq!(refused(shape), RejectCode::Schema);
    let mut kind = ok;
    kind["kind"] = json!("payday");
    assert_eq!(refused(kind), RejectCode::Schema);
}

#[test]
fn a_settlement_in_full_below_the_overdue_needs_an_approval_else_it_is_refused() {
    let mut desk = delinquent(Policy::default());
    let mut data = arrangement_data("set-1", "settlement", &DUES[..1], &[210_000]);
    data["settles_in_full"] = json!(true);
    let e = event(
        "arrangement.made",
        2,
        "2026-11-03T10:00:00+08:00",
        data.clone(),
    );
    let err = desk.try_apply(&e).expect_err("no approval");
    assert!(err.0.contains("discount_approved_by"), "{err}");
    assert_eq!(desk.state().arrangements.len(), 0, "nothing changed");

    data["discount_approved_by"] = json!("sup-9");
    let e = event("arrangement.made", 3, "2026-11-03T10:00:00+08:00", data);
    desk.try_apply(&e).expect("approved");
    assert_eq!(desk.state().arrangements.len(), 1);
}

// ---------------------------------------------------------------------------------------
// Planning
// ---------------------------------------------------------------------------------------

#[test]
fn each_instalment_gets_a_reminder_a_check_and_an_expiry_and_calls_are_suspended() {
    let desk = with_plan();
    assert!(
        desk.open_of(TaskKind::CollectionCall).is_empty(),
        "call suspended"
    );
    for (i, due) in DUES.iter().enumerate() {
        let key = format!("arr-1#{}", i + 1);
        let of = |k: TaskKind| {
            desk.open
                .iter()
                .filter(|t| t.kind == k && t.promise_id.as_deref() == Some(key.as_str()))
                .count()
        };
        assert_eq!(of(TaskKind::PromiseReminder), 1, "{key}");
        assert_eq!(of(TaskKind::PromiseCheck), 1, "{key}");
        assert_eq!(of(TaskKind::InstalmentExpiry), 1, "{key}");
        let expiry = desk
            .open
            .iter()
            .find(|t| {
                t.kind == TaskKind::InstalmentExpiry
                    && t.promise_id.as_deref() == Some(key.as_str())
            })
            .expect("expiry");
        assert_eq!(expiry.due_at, ts(due) + jiff::SignedDuration::from_hours(2));
        let reminder = desk
            .open
            .iter()
            .find(|t| {
                t.kind == TaskKind::PromiseReminder && t.promise_id.as_deref() == Some(key.as_str())
            })
            .expect("reminder");
        assert_eq!(
            reminder.due_at,
            ts(due) - jiff::SignedDuration::from_hours(1)
        );
    }
    let a = &desk.state().arrangements[0];
    assert_eq!(a.status, ArrangementStatus::Open);
    assert_eq!(desk.state().status, Status::Delinquent);
}

#[test]
fn a_plan_paid_on_time_is_kept_nothing_fires_for_a_kept_instalment_and_no_call_follows() {
    let mut desk = with_plan();
    desk.apply(&paid(
        3,
        "2026-11-10T09:00:00+08:00",
        100_000,
        Some(200_000),
    ));
    desk.apply(&paid(
        4,
        "2026-11-17T09:00:00+08:00",
        100_000,
        Some(100_000),
    ));
    desk.apply(&paid(5, "2026-11-24T09:00:00+08:00", 100_000, Some(0)));
    desk.run_until(ts("2026-12-01T00:00:00Z"));
    // Paid before each reminder: nothing of the plan ever fired.
    assert!(
        desk.fired.iter().all(|t| t.promise_id.is_none()),
        "{:?}",
        desk.fired
    );
    let kept = desk.published_of("arrangement.kept");
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["data"]["arrangement_id"], "arr-1");
    assert_eq!(kept[0]["data"]["instalment_number"], 3);
    assert!(desk.published_of("arrangement.broken").is_empty());
    assert_eq!(desk.state().arrangements[0].status, ArrangementStatus::Kept);
    assert_eq!(desk.state().status, Status::Cured);
    assert!(desk.open.is_empty());
}

#[test]
fn payments_go_to_the_earliest_unmet_instalment_first() {
    let mut desk = with_plan();
    // 1 500.00: instalment 1 met, half of instalment 2.
    desk.apply(&paid(3, "2026-11-09T09:00:00+08:00", 150_000, None));
    let a = &desk.state().arrangements[0];
    assert_eq!(a.instalments[0].status, InstalmentStatus::Met);
    assert_eq!(a.instalments[1].paid_minor, 50_000);
    assert_eq!(a.instalments[1].status, InstalmentStatus::Pending);
    assert!(
        !desk
            .open
            .iter()
            .any(|t| t.promise_id.as_deref() == Some("arr-1#1")),
        "instalment 1's tasks are cancelled"
    );
    assert_eq!(
        desk.open
            .iter()
            .filter(|t| t.promise_id.as_deref() == Some("arr-1#2"))
            .count(),
        3
    );
    // The rest of instalment 2, then 3.
    desk.apply(&paid(4, "2026-11-16T09:00:00+08:00", 150_000, None));
    assert_eq!(desk.state().arrangements[0].status, ArrangementStatus::Kept);
}

#[test]
fn a_short_payment_within_the_tolerance_counts_as_met() {
    let mut desk = with_plan();
    desk.apply(&paid(3, "2026-11-10T09:00:00+08:00", 100_000, None));
    // 5 % of 1 000.00 is 50.00: 960.00 is within it.
    desk.apply(&paid(4, "2026-11-17T09:00:00+08:00", 96_000, None));
    desk.run_until(ts("2026-11-18T00:00:00Z"));
    let a = &desk.state().arrangements[0];
    assert_eq!(a.instalments[1].status, InstalmentStatus::Met);
    assert!(desk.published_of("arrangement.broken").is_empty());
    assert!(desk.open_of(TaskKind::CollectionCall).is_empty());
}

#[test]
fn a_short_payment_beyond_the_tolerance_breaks_the_plan_at_due_plus_grace() {
    let mut desk = with_plan();
    desk.apply(&paid(3, "2026-11-10T09:00:00+08:00", 100_000, None));
    desk.apply(&paid(4, "2026-11-17T09:00:00+08:00", 90_000, None));
    desk.run_until(ts("2026-11-17T06:00:00Z"));
    let broken = desk.published_of("arrangement.broken");
    assert_eq!(broken.len(), 1);
    assert_eq!(broken[0]["data"]["instalment_number"], 2);
    assert_eq!(broken[0]["data"]["reason"], "short_paid");
    assert_eq!(broken[0]["type"], "arrangement.broken");
    assert_eq!(broken[0]["source"], "collections");
    let s = desk.state();
    assert_eq!(s.arrangements[0].status, ArrangementStatus::Broken);
    assert_eq!(s.broken_promises, 1, "counted as a broken promise");
    // Collection resumes at the next allowed minute (14:00 Shanghai is inside the window),
    // in the firm tone; instalment 3's tasks are gone.
    let call = desk.call_after("arr-1");
    assert_eq!(
        call.due_at,
        ts("2026-11-17T14:00:00+08:00"),
        "{}",
        call.reason
    );
    assert_eq!(call.tone, Tone::Firm);
    assert!(!desk.open.iter().any(|t| t.promise_id.is_some()));
}

#[test]
fn a_missed_instalment_breaks_the_plan_and_collection_resumes_at_the_next_allowed_minute() {
    let mut desk = delinquent(Policy::default());
    // Due 20:30 local: due + 2 h is 22:30, outside the window; the call waits for 08:00.
    let data = arrangement_data(
        "arr-2",
        "instalment_plan",
        &["2026-11-10T20:30:00+08:00"],
        &[300_000],
    );
    desk.apply(&event(
        "arrangement.made",
        2,
        "2026-11-03T10:00:00+08:00",
        data,
    ));
    desk.run_until(ts("2026-11-11T00:00:00Z"));
    let broken = desk.published_of("arrangement.broken");
    assert_eq!(broken.len(), 1);
    assert_eq!(broken[0]["data"]["reason"], "missed");
    let call = desk.call_after("arr-2");
    assert_eq!(
        call.due_at,
        ts("2026-11-11T08:00:00+08:00"),
        "{}",
        call.reason
    );
    // The expiry fired once.
    assert_eq!(
        desk.fired
            .iter()
            .filter(|t| t.kind == TaskKind::InstalmentExpiry)
            .count(),
        1
    );
}

#[test]
fn under_misses_to_break_2_the_first_miss_resumes_calls_and_the_second_breaks_the_plan() {
    let mut desk = delinquent(policy(&[("misses_to_break = 1", "misses_to_break = 2")]));
    desk.apply(&plan(2, "2026-11-03T10:00:00+08:00", "arr-1"));
    desk.run_until(ts("2026-11-10T07:00:00Z"));
    assert!(desk.published_of("arrangement.broken").is_empty());
    let s = desk.state();
    assert_eq!(s.arrangements[0].status, ArrangementStatus::Open);
    assert_eq!(s.arrangements[0].misses, 1);
    assert_eq!(s.broken_promises, 1);
    assert_eq!(
        desk.open_of(TaskKind::CollectionCall).len(),
        1,
        "a call follows the miss"
    );
    // Catching up (instalment 1 paid late) suspends calls again.
    desk.apply(&paid(3, "2026-11-12T10:00:00+08:00", 100_000, None));
    assert!(desk.open_of(TaskKind::CollectionCall).is_empty());
    assert_eq!(
        desk.state().arrangements[0].instalments[0].status,
        InstalmentStatus::Met
    );
    // Instalment 2 missed: the second miss breaks it.
    desk.run_until(ts("2026-11-17T07:00:00Z"));
    let broken = desk.published_of("arrangement.broken");
    assert_eq!(broken.len(), 1);
    assert_eq!(broken[0]["data"]["instalment_number"], 2);
    assert_eq!(desk.state().broken_promises, 2);
    assert_eq!(
        desk.open_of(TaskKind::CollectionCall)[0].tone,
        Tone::Serious
    );
}

#[test]
fn a_kept_settlement_cures_the_account_naming_the_approval_and_a_reversal_reopens_it() {
    let mut desk = delinquent(Policy::default());
    let mut data = arrangement_data("set-1", "settlement", &DUES[..1], &[210_000]);
    data["settles_in_full"] = json!(true);
    data["discount_approved_by"] = json!("sup-9");
    desk.apply(&event(
        "arrangement.made",
        2,
        "2026-11-03T10:00:00+08:00",
        data,
    ));
    desk.apply(&paid(3, "2026-11-10T09:00:00+08:00", 210_000, Some(90_000)));
    let s = desk.state();
    assert_eq!(s.status, Status::Cured);
    assert_eq!(s.overdue_minor, 0);
    assert!(
        desk.journal
            .iter()
            .any(|l| l.starts_with("account_cured") && l.contains("sup-9")),
        "{:#?}",
        desk.journal
    );
    assert_eq!(desk.published_of("arrangement.kept").len(), 1);
    assert!(desk.open.is_empty());

    desk.apply(&reversed(4, "2026-11-12T10:00:00+08:00", 3, 210_000));
    let s = desk.state();
    assert_eq!(s.status, Status::Delinquent);
    assert_eq!(
        s.overdue_minor, 300_000,
        "the settled overdue is owed again"
    );
    assert_eq!(
        s.dpd(ts("2026-11-12T10:00:00+08:00")),
        9,
        "the DPD runs again from the due date the cure had cleared"
    );
    assert_eq!(s.arrangements[0].status, ArrangementStatus::Broken);
    let broken = desk.published_of("arrangement.broken");
    assert_eq!(broken.len(), 1);
    assert_eq!(broken[0]["data"]["reason"], "reversed");
    assert_eq!(
        desk.open_of(TaskKind::CollectionCall).len(),
        1,
        "a call is planned"
    );
    // Applied twice (a redelivery with another id): no change.
    let before = desk.state().clone();
    desk.apply(&reversed(5, "2026-11-12T10:05:00+08:00", 3, 210_000));
    assert_eq!(desk.state().overdue_minor, before.overdue_minor);
}

#[test]
fn a_reversed_instalment_payment_before_its_grace_is_followed_again() {
    let mut desk = with_plan();
    desk.apply(&paid(3, "2026-11-09T09:00:00+08:00", 100_000, None));
    assert!(!desk
        .open
        .iter()
        .any(|t| t.promise_id.as_deref() == Some("arr-1#1")));
    desk.apply(&reversed(4, "2026-11-09T15:00:00+08:00", 3, 100_000));
    assert_eq!(
        desk.open
            .iter()
            .filter(|t| t.promise_id.as_deref() == Some("arr-1#1"))
            .count(),
        3,
        "reminder, check and expiry again"
    );
    assert!(
        desk.open_of(TaskKind::CollectionCall).is_empty(),
        "still on time"
    );
}

#[test]
fn a_new_arrangement_supersedes_an_open_one_and_an_open_promise() {
    let mut desk = delinquent(Policy::default());
    desk.apply(&event(
        "promise.made",
        2,
        "2026-11-03T10:00:00+08:00",
        json!({"account_id": ACC, "promise_id": "ptp-1", "amount": cny(100_000),
               "promised_at": "2026-11-04T15:00:00+08:00", "captured_by": "agent-1",
               "channel": "phone_mobile"}),
    ));
    desk.apply(&plan(3, "2026-11-03T11:00:00+08:00", "arr-1"));
    assert!(!desk
        .open
        .iter()
        .any(|t| t.promise_id.as_deref() == Some("ptp-1")));
    desk.apply(&plan(4, "2026-11-03T12:00:00+08:00", "arr-2"));
    let s = desk.state();
    assert_eq!(s.arrangements[0].status, ArrangementStatus::Superseded);
    assert_eq!(s.arrangements[1].status, ArrangementStatus::Open);
    assert!(desk.open.iter().all(|t| t
        .promise_id
        .as_deref()
        .is_none_or(|p| p.starts_with("arr-2#"))));
    assert_eq!(desk.open.len(), 9);
}

#[test]
fn a_promise_during_a_plan_is_recorded_or_supersedes_it_per_policy() {
    let promise = event(
        "promise.made",
        3,
        "2026-11-05T10:00:00+08:00",
        json!({"account_id": ACC, "promise_id": "ptp-9", "amount": cny(50_000),
               "promised_at": "2026-11-06T15:00:00+08:00", "captured_by": "agent-1",
               "channel": "phone_mobile"}),
    );
    let mut desk = with_plan();
    desk.apply(&promise);
    assert!(!desk
        .open
        .iter()
        .any(|t| t.promise_id.as_deref() == Some("ptp-9")));
    assert_eq!(desk.state().arrangements[0].status, ArrangementStatus::Open);
    assert!(desk
        .journal
        .iter()
        .any(|l| l.starts_with("promise_recorded")));
    // Applied once, like every event (the fault suite's invariant counts these lines).
    assert_eq!(
        desk.journal
            .iter()
            .filter(|l| l.starts_with("event_applied: promise.made: ptp-9"))
            .count(),
        1,
        "{:?}",
        desk.journal
    );

    let mut desk = delinquent(policy(&[(
        "promise_during_plan = \"record\"",
        "promise_during_plan = \"supersede\"",
    )]));
    desk.apply(&plan(2, "2026-11-03T10:00:00+08:00", "arr-1"));
    desk.apply(&promise);
    assert_eq!(
        desk.state().arrangements[0].status,
        ArrangementStatus::Superseded
    );
    assert!(desk
        .open
        .iter()
        .any(|t| t.promise_id.as_deref() == Some("ptp-9")));
    assert!(!desk.open.iter().any(|t| t
        .promise_id
        .as_deref()
        .is_some_and(|p| p.starts_with("arr-1#"))));
}

#[test]
fn a_cancelled_arrangement_resumes_collection_and_one_cancelled_first_plans_nothing() {
    let cancel = event(
        "arrangement.cancelled",
        3,
        "2026-11-04T10:00:00+08:00",
        json!({"account_id": ACC, "arrangement_id": "arr-1", "reason": "customer_request"}),
    );
    let mut desk = with_plan();
    desk.apply(&cancel);
    assert!(desk.open.iter().all(|t| t.promise_id.is_none()));
    assert_eq!(desk.open_of(TaskKind::CollectionCall).len(), 1);
    assert_eq!(
        desk.state().arrangements[0].status,
        ArrangementStatus::Cancelled
    );

    // Cancellation applied before the arrangement (another queue).
    let mut desk = delinquent(Policy::default());
    desk.apply(&cancel);
    let made = plan(2, "2026-11-03T10:00:00+08:00", "arr-1");
    let d = decide(
        desk.state.as_ref(),
        &desk.open,
        &made,
        &desk.policy,
        ts("2026-11-04T11:00:00+08:00"),
    )
    .expect("applied");
    desk.absorb(d);
    assert_eq!(
        desk.state().arrangements[0].status,
        ArrangementStatus::Cancelled
    );
    assert!(desk.open.iter().all(|t| t.promise_id.is_none()));
    assert_eq!(desk.open_of(TaskKind::CollectionCall).len(), 1);
}

#[test]
fn a_hold_applies_to_every_task_an_arrangement_plans() {
    let mut desk = delinquent(Policy::default());
    desk.apply(&event(
        "hold.placed",
        2,
        "2026-11-03T09:30:00+08:00",
        json!({"account_id": ACC, "hold_id": "h-1", "reason": "dispute", "scope": "all",
               "placed_at": "2026-11-03T09:30:00+08:00", "placed_by": "desk-7"}),
    ));
    desk.apply(&plan(3, "2026-11-03T10:00:00+08:00", "arr-1"));
    assert!(desk.open_of(TaskKind::PromiseReminder).is_empty());
    assert!(desk.open_of(TaskKind::PromiseCheck).is_empty());
    assert_eq!(desk.open_of(TaskKind::InstalmentExpiry).len(), 3);
    desk.run_until(ts("2026-11-10T07:00:00Z"));
    assert_eq!(desk.published_of("arrangement.broken").len(), 1);
    assert!(
        desk.open_of(TaskKind::CollectionCall).is_empty(),
        "no call while the hold is in force"
    );
}

#[test]
fn money_applied_before_its_arrangement_counts_and_the_end_state_is_the_same() {
    let made = plan(2, "2026-11-03T10:00:00+08:00", "arr-1");
    let pay = paid(3, "2026-11-04T09:00:00+08:00", 100_000, None);
    let at = ts("2026-11-04T12:00:00+08:00");
    let mut a = delinquent(Policy::default());
    for e in [&made, &pay] {
        let d = decide(a.state.as_ref(), &a.open, e, &a.policy, at).expect("ok");
        a.absorb(d);
    }
    let mut b = delinquent(Policy::default());
    for e in [&pay, &made] {
        let d = decide(b.state.as_ref(), &b.open, e, &b.policy, at).expect("ok");
        b.absorb(d);
    }
    assert_eq!(a.state().arrangements, b.state().arrangements);
    let ids = |d: &Desk| {
        let mut v: Vec<(TaskKind, Option<String>, Timestamp)> = d
            .open
            .iter()
            .map(|t| (t.kind, t.promise_id.clone(), t.due_at))
            .collect();
        v.sort_by_key(|x| (x.1.clone(), x.2));
        v
    };
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(
        a.state().arrangements[0].instalments[0].status,
        InstalmentStatus::Met
    );
}

#[test]
fn a_reversal_applied_before_its_payment_leaves_the_instalment_unmet() {
    let made = plan(2, "2026-11-03T10:00:00+08:00", "arr-1");
    let pay = paid(3, "2026-11-04T09:00:00+08:00", 100_000, None);
    let rev = reversed(4, "2026-11-04T11:00:00+08:00", 3, 100_000);
    let at = ts("2026-11-04T12:00:00+08:00");
    let run = |order: [&Event; 2]| {
        let mut desk = delinquent(Policy::default());
        let d = decide(desk.state.as_ref(), &desk.open, &made, &desk.policy, at).expect("ok");
        desk.absorb(d);
        for e in order {
            let d = decide(desk.state.as_ref(), &desk.open, e, &desk.policy, at).expect("ok");
            desk.absorb(d);
        }
        desk
    };
    let a = run([&pay, &rev]);
    let b = run([&rev, &pay]);
    for desk in [&a, &b] {
        let s = desk.state();
        assert_eq!(
            s.arrangements[0].instalments[0].status,
            InstalmentStatus::Pending
        );
        assert_eq!(s.arrangements[0].instalments[0].paid_minor, 0);
        assert_eq!(
            desk.open
                .iter()
                .filter(|t| t.promise_id.as_deref() == Some("arr-1#1"))
                .count(),
            3
        );
    }
    assert_eq!(a.state().overdue_minor, b.state().overdue_minor);
}

#[test]
fn an_expiry_of_a_kept_or_cancelled_arrangement_does_nothing() {
    let mut desk = with_plan();
    let expiry = desk.open_of(TaskKind::InstalmentExpiry)[0].clone();
    desk.apply(&event(
        "arrangement.cancelled",
        3,
        "2026-11-04T10:00:00+08:00",
        json!({"account_id": ACC, "arrangement_id": "arr-1", "reason": "customer_request"}),
    ));
    let state = desk.state().clone();
    let d = on_instalment_due(
        &state,
        &desk.open,
        &expiry,
        collections_core::instalment_due_cause(&expiry),
        &desk.policy,
        expiry.due_at,
    );
    assert!(d.schedule.is_empty() && d.cancel.is_empty() && d.outbox.is_empty());
    assert_eq!(d.state.broken_promises, 0);
}

#[test]
fn a_payment_in_time_applied_after_the_expiry_fired_withdraws_the_miss() {
    let mut desk = delinquent(policy(&[("misses_to_break = 1", "misses_to_break = 2")]));
    desk.apply(&plan(2, "2026-11-03T10:00:00+08:00", "arr-1"));
    // The expiry of instalment 1 fires at 14:00 local with nothing applied yet...
    desk.run_until(ts("2026-11-10T14:00:00+08:00"));
    assert_eq!(desk.state().arrangements[0].misses, 1);
    assert_eq!(desk.state().broken_promises, 1);
    // ...then billing's payment received at 13:30 arrives from its queue.
    let late = paid(3, "2026-11-10T13:30:00+08:00", 100_000, None);
    let d = decide(
        desk.state.as_ref(),
        &desk.open,
        &late,
        &desk.policy,
        ts("2026-11-10T14:05:00+08:00"),
    )
    .expect("applied");
    desk.absorb(d);
    let s = desk.state();
    assert_eq!(s.arrangements[0].misses, 0);
    assert_eq!(s.broken_promises, 0);
    assert_eq!(
        s.arrangements[0].instalments[0].status,
        InstalmentStatus::Met
    );
    assert!(
        desk.open_of(TaskKind::CollectionCall).is_empty(),
        "calls suspended again"
    );
}
