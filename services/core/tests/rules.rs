//! Behaviour of `collections_core::decide`, driven by CloudEvents parsed from JSON text.
//!
//! Every instant is fixed: no test reads the clock.

use collections_core::{
    decide, on_call_fired,
    outbound::TASKS_EXCHANGE,
    parse_event,
    state::{PromiseStatus, Status},
    window, AccountState, Channel, Decision, Event, EventType, Policy, RejectCode, Task, TaskKind,
    Tone,
};
use jiff::{civil::Time, tz::TimeZone, Timestamp};
use serde_json::{json, Value};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const ACC: &str = "acc-000123";
const SHANGHAI: &str = "Asia/Shanghai";
const NEW_YORK: &str = "America/New_York";

fn ts(s: &str) -> Timestamp {
    s.parse()
        .unwrap_or_else(|e| panic!("bad timestamp {s}: {e}"))
}

fn tz(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap_or_else(|e| panic!("bad zone {name}: {e}"))
}

fn event_id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// A CloudEvents structured-mode envelope around `data`.
fn envelope(ty: &str, n: u32, time: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": event_id(n),
        "source": "/tests/rules",
        "type": ty,
        "time": time,
        "subject": data["account_id"].clone(),
        "datacontenttype": "application/json",
        "data": data,
    })
}

fn parse(v: &Value) -> Event {
    let bytes = serde_json::to_vec(v).expect("serialise event");
    parse_event(&bytes, None).unwrap_or_else(|e| panic!("event refused: {e}\n{v:#}"))
}

fn money(minor: i64, currency: &str) -> Value {
    json!({ "minor": minor, "currency": currency })
}

/// `payment.failed` for `ACC`, CNY, decided at `time`.
fn payment_failed(n: u32, time: &str, zone: &str, number: u32, due: &str, overdue: i64) -> Event {
    payment_failed_in(n, time, zone, number, due, overdue, "CNY")
}

fn payment_failed_in(
    n: u32,
    time: &str,
    zone: &str,
    number: u32,
    due: &str,
    overdue: i64,
    currency: &str,
) -> Event {
    parse(&envelope(
        "payment.failed",
        n,
        time,
        json!({
            "account_id": ACC,
            "customer": { "timezone": zone },
            "installment": { "number": number, "due_date": due, "amount": money(overdue.min(125_000), currency) },
            "overdue_amount": money(overdue, currency),
            "failure_reason": "insufficient_funds",
            "attempted_at": time,
        }),
    ))
}

fn promise_made(n: u32, time: &str, promise_id: &str, minor: i64, promised_at: &str) -> Event {
    promise_made_in(n, time, promise_id, minor, promised_at, "CNY")
}

fn promise_made_in(
    n: u32,
    time: &str,
    promise_id: &str,
    minor: i64,
    promised_at: &str,
    currency: &str,
) -> Event {
    parse(&envelope(
        "promise.made",
        n,
        time,
        json!({
            "account_id": ACC,
            "promise_id": promise_id,
            "amount": money(minor, currency),
            "promised_at": promised_at,
            "captured_by": "agent-0421",
            "channel": "phone_mobile",
        }),
    ))
}

fn promise_broken(n: u32, time: &str, promise_id: &str) -> Event {
    parse(&envelope(
        "promise.broken",
        n,
        time,
        json!({ "account_id": ACC, "promise_id": promise_id, "reason": "no_payment" }),
    ))
}

fn payment_received(
    n: u32,
    time: &str,
    minor: i64,
    currency: &str,
    overdue_after: Option<i64>,
) -> Event {
    let mut data = json!({
        "account_id": ACC,
        "payment_id": format!("pay-{n}"),
        "amount": money(minor, currency),
        "received_at": time,
    });
    if let Some(after) = overdue_after {
        data["overdue_amount_after"] = money(after, currency);
    }
    parse(&envelope("payment.received", n, time, data))
}

/// One account as the shell keeps it: state plus the tasks still open.
struct Account {
    policy: Policy,
    state: Option<AccountState>,
    open: Vec<Task>,
}

impl Account {
    fn new() -> Self {
        Self {
            policy: Policy::default(),
            state: None,
            open: Vec::new(),
        }
    }

    /// Decides `event` at `now`, checks the universal invariants, then keeps the new state
    /// and the open tasks (previous open minus cancelled plus scheduled).
    fn apply(&mut self, event: &Event, now: &str) -> Decision {
        let d = decide(
            self.state.as_ref(),
            &self.open,
            event,
            &self.policy,
            ts(now),
        )
        .unwrap_or_else(|e| panic!("domain error: {e}"));
        self.check_invariants(&d);
        self.open
            .retain(|t| !d.cancel.iter().any(|c| c.task_id == t.task_id));
        for (id, p) in &d.reprioritise {
            if let Some(t) = self.open.iter_mut().find(|t| t.task_id == *id) {
                t.priority = *p;
            }
        }
        self.open.extend(d.schedule.iter().cloned());
        self.state = Some(d.state.clone());
        d
    }

    fn check_invariants(&self, d: &Decision) {
        let zone = d.state.zone();
        for t in &d.schedule {
            if t.kind.contacts_customer() {
                assert!(
                    window::is_allowed(t.due_at, &zone, &self.policy.contact_window),
                    "{} at {} is outside the contact window",
                    t.kind,
                    t.due_at.to_zoned(zone.clone())
                );
            }
        }
        let mut published_cancels = 0;
        for c in &d.cancel {
            let t = self
                .open
                .iter()
                .find(|t| t.task_id == c.task_id)
                .unwrap_or_else(|| panic!("cancelled task {} was not open", c.task_id));
            if !t.kind.is_internal() {
                published_cancels += 1;
            }
        }
        // One message per published transition; internal tasks are never published.
        let published_schedules = d.schedule.iter().filter(|t| !t.kind.is_internal()).count();
        // Re-ranked open tasks are re-announced, one message each.
        for (id, _) in &d.reprioritise {
            assert!(
                self.open
                    .iter()
                    .any(|t| t.task_id == *id && !t.kind.is_internal()),
                "re-ranked task {id} was not open"
            );
        }
        assert_eq!(
            d.outbox.len(),
            published_schedules + published_cancels + d.reprioritise.len()
        );
        for t in &d.schedule {
            let n = d
                .outbox
                .iter()
                .filter(|m| m.json()["data"]["task_id"] == json!(t.task_id))
                .count();
            assert_eq!(n, usize::from(!t.kind.is_internal()), "{} messages", t.kind);
        }
    }

    /// Open tasks the dashboards see (internal bookkeeping tasks left out).
    fn published_open(&self) -> Vec<&Task> {
        self.open.iter().filter(|t| !t.kind.is_internal()).collect()
    }

    fn state(&self) -> &AccountState {
        self.state.as_ref().expect("account has state")
    }

    fn open_of(&self, kind: TaskKind) -> Vec<&Task> {
        self.open.iter().filter(|t| t.kind == kind).collect()
    }
}

fn only(d: &Decision, kind: TaskKind) -> &Task {
    let found: Vec<&Task> = d.schedule.iter().filter(|t| t.kind == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}, got {:#?}", d.schedule);
    found[0]
}

/// Kinds of the published tasks planned (internal bookkeeping tasks left out).
fn kinds(d: &Decision) -> Vec<TaskKind> {
    d.schedule
        .iter()
        .filter(|t| !t.kind.is_internal())
        .map(|t| t.kind)
        .collect()
}

fn cancelled(d: &Decision) -> Vec<Uuid> {
    d.cancel.iter().map(|c| c.task_id).collect()
}

fn local(t: Timestamp, zone: &str) -> jiff::Zoned {
    t.to_zoned(tz(zone))
}

fn hm(h: i8, m: i8) -> Time {
    Time::constant(h, m, 0, 0)
}

fn account_summary(d: &Decision) -> Value {
    d.outbox.first().expect("an outbox message").json()["data"]["account"].clone()
}

/// Account with a failed first instalment in Shanghai on 2026-11-03 (call planned at 10:00).
fn delinquent_first_instalment() -> (Account, Decision) {
    let mut a = Account::new();
    let now = "2026-11-03T10:00:00+08:00";
    let d = a.apply(
        &payment_failed(1, now, SHANGHAI, 1, "2026-11-03", 125_000),
        now,
    );
    (a, d)
}

/// Account with a failed later instalment (no first-instalment default, small balance).
fn delinquent_later_instalment() -> (Account, Decision) {
    let mut a = Account::new();
    let now = "2026-11-03T10:00:00+08:00";
    let d = a.apply(
        &payment_failed(1, now, SHANGHAI, 3, "2026-11-01", 125_000),
        now,
    );
    (a, d)
}

// ---------------------------------------------------------------------------------------
// payment.failed
// ---------------------------------------------------------------------------------------

#[test]
fn first_instalment_default_plans_call_at_priority_one() {
    let (a, d) = delinquent_first_instalment();
    let s = a.state();
    assert_eq!(s.status, Status::Delinquent);
    assert!(s.first_installment_default);
    assert_eq!(s.overdue_minor, 125_000);
    assert_eq!(s.failed_payments, 1);
    assert_eq!(s.timezone, SHANGHAI);
    let call = only(&d, TaskKind::CollectionCall);
    assert_eq!(d.schedule.len(), 1);
    assert_eq!(call.priority, 1);
    assert_eq!(call.channel, Channel::PhoneMobile);
    assert_eq!(call.tone, Tone::Gentle);
    assert_eq!(call.account_id, ACC);
    assert_eq!(call.attempt, 1);
    assert!(call.promise_id.is_none());
    assert!(call.reason.contains("first-instalment default"));
    assert_eq!(call.cause_event_id.to_string(), event_id(1));
    assert!(d.cancel.is_empty());
    let summary = account_summary(&d);
    assert_eq!(summary["first_installment_default"], json!(true));
    assert_eq!(summary["overdue_amount"], money(125_000, "CNY"));
}

#[test]
fn failure_inside_the_window_calls_at_exactly_now() {
    let mut a = Account::new();
    let now = "2026-11-03T10:15:37+08:00";
    let d = a.apply(
        &payment_failed(1, now, SHANGHAI, 1, "2026-11-03", 125_000),
        now,
    );
    assert_eq!(only(&d, TaskKind::CollectionCall).due_at, ts(now));
}

#[test]
fn failure_at_half_past_ten_at_night_calls_at_eight_next_morning_local() {
    let mut a = Account::new();
    let now = "2026-11-03T22:30:00+08:00";
    let d = a.apply(
        &payment_failed(1, now, SHANGHAI, 1, "2026-11-03", 125_000),
        now,
    );
    let call = only(&d, TaskKind::CollectionCall);
    assert_eq!(call.due_at, ts("2026-11-04T08:00:00+08:00"));
    assert!(call.reason.contains("moved into the contact window"));
}

#[test]
fn failure_early_morning_in_customer_zone_calls_at_eight_same_local_day() {
    // 21:00 UTC is 05:00 the next day in Shanghai: the call waits for 08:00 that day.
    let mut a = Account::new();
    let now = "2026-11-02T21:00:00Z";
    let d = a.apply(
        &payment_failed(1, now, SHANGHAI, 1, "2026-11-03", 125_000),
        now,
    );
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts("2026-11-03T08:00:00+08:00")
    );
}

#[test]
fn later_instalment_failure_is_not_first_instalment_default() {
    let (a, d) = delinquent_later_instalment();
    assert!(!a.state().first_installment_default);
    let call = only(&d, TaskKind::CollectionCall);
    // Small balance, no promise, not a partial payer: the lowest listed priority.
    assert_eq!(call.priority, 6);
    assert!(!call.reason.contains("first-instalment default"));
}

#[test]
fn large_overdue_balance_ranks_after_partial_payers() {
    let mut a = Account::new();
    let now = "2026-11-03T10:00:00+08:00";
    let d = a.apply(
        &payment_failed(1, now, SHANGHAI, 4, "2026-11-01", 1_000_000),
        now,
    );
    assert_eq!(only(&d, TaskKind::CollectionCall).priority, 4);
}

#[test]
fn dpd_counts_from_earliest_unpaid_due_date_in_customer_calendar() {
    let mut a = Account::new();
    // 2026-11-02T17:00Z is already 2026-11-03 in Shanghai: 33 days after 2026-10-01.
    let now = "2026-11-02T17:00:00Z";
    let d = a.apply(
        &payment_failed(1, now, SHANGHAI, 2, "2026-10-01", 125_000),
        now,
    );
    assert_eq!(account_summary(&d)["dpd"], json!(33));
    assert_eq!(account_summary(&d)["bucket"], json!("M2"));
    // A later failure with a later due date does not move the earliest unpaid date. The
    // open call is passed back, so nothing is planned: read the state instead.
    let d2 = a.apply(
        &payment_failed(2, now, SHANGHAI, 3, "2026-11-01", 250_000),
        now,
    );
    assert!(d2.schedule.is_empty());
    assert_eq!(d2.state.dpd(ts(now)), 33);
    assert_eq!(d2.state.summary(ts(now)).bucket, "M2");
    assert_eq!(d2.state.overdue_minor, 250_000);
    assert_eq!(d2.state.failed_payments, 2);
}

#[test]
fn bucket_follows_dpd_bands() {
    let now = "2027-01-31T12:00:00+08:00";
    let today: jiff::civil::Date = "2027-01-31".parse().expect("date");
    for (days, bucket) in [
        (-1, "M0"),
        (0, "M0"),
        (1, "M1"),
        (30, "M1"),
        (31, "M2"),
        (60, "M2"),
        (61, "M3"),
        (90, "M3"),
        (91, "M3+"),
        (200, "M3+"),
    ] {
        let due = today
            .checked_sub(jiff::Span::new().days(days))
            .expect("date arithmetic");
        let mut a = Account::new();
        let d = a.apply(
            &payment_failed(1, now, SHANGHAI, 2, &due.to_string(), 125_000),
            now,
        );
        let summary = account_summary(&d);
        assert_eq!(summary["dpd"], json!(days), "due {due}");
        assert_eq!(summary["bucket"], json!(bucket), "dpd {days}");
    }
}

#[test]
fn failure_while_promise_pending_is_recorded_and_plans_nothing() {
    let (mut a, _) = delinquent_later_instalment();
    a.apply(
        &promise_made(
            2,
            "2026-11-03T10:30:00+08:00",
            "ptp-1",
            125_000,
            "2026-11-04T15:00:00+08:00",
        ),
        "2026-11-03T10:30:00+08:00",
    );
    let now = "2026-11-03T11:00:00+08:00";
    let d = a.apply(
        &payment_failed(3, now, SHANGHAI, 4, "2026-11-03", 250_000),
        now,
    );
    assert!(d.schedule.is_empty());
    assert!(d.cancel.is_empty());
    assert!(d.outbox.is_empty());
    assert_eq!(d.state.overdue_minor, 250_000);
    assert_eq!(d.state.failed_payments, 2);
    assert!(d.journal.iter().any(|j| j.kind == "event_applied"));
    assert!(d
        .journal
        .iter()
        .any(|j| j.kind == "decision" && j.detail.contains("ptp-1")));
}

#[test]
fn repeated_failure_never_duplicates_an_open_call() {
    let (mut a, first) = delinquent_first_instalment();
    let open_call = only(&first, TaskKind::CollectionCall).clone();
    let now = "2026-11-03T12:00:00+08:00";
    let d = a.apply(
        &payment_failed(2, now, SHANGHAI, 2, "2026-11-03", 250_000),
        now,
    );
    assert!(d.schedule.is_empty());
    assert!(d.cancel.is_empty());
    assert_eq!(a.open, vec![open_call]);
    // The same event redelivered on an empty open list would plan the call again; with the
    // open call passed in, it does not.
    let again = a.apply(
        &payment_failed(2, now, SHANGHAI, 2, "2026-11-03", 250_000),
        now,
    );
    assert!(again.schedule.is_empty());
    assert_eq!(a.open_of(TaskKind::CollectionCall).len(), 1);
}

// ---------------------------------------------------------------------------------------
// promise.made
// ---------------------------------------------------------------------------------------

#[test]
fn promise_plans_reminder_one_hour_before_and_check_one_hour_after() {
    let (mut a, _) = delinquent_first_instalment();
    let now = "2026-11-03T10:12:30+08:00";
    let d = a.apply(
        &promise_made(2, now, "ptp-1", 125_000, "2026-11-04T15:00:00+08:00"),
        now,
    );
    assert_eq!(
        kinds(&d),
        vec![TaskKind::PromiseReminder, TaskKind::PromiseCheck]
    );
    let reminder = only(&d, TaskKind::PromiseReminder);
    let check = only(&d, TaskKind::PromiseCheck);
    assert_eq!(reminder.due_at, ts("2026-11-04T14:00:00+08:00"));
    assert_eq!(check.due_at, ts("2026-11-04T16:00:00+08:00"));
    for t in [reminder, check] {
        assert_eq!(t.promise_id.as_deref(), Some("ptp-1"));
        assert_eq!(t.channel, Channel::PhoneMobile);
        // First-instalment default outranks "promise due today".
        assert_eq!(t.priority, 1);
    }
    let p = d.state.open_promise().expect("open promise");
    assert_eq!(p.promise_id, "ptp-1");
    assert_eq!(p.promised_at, Some(ts("2026-11-04T15:00:00+08:00")));
}

#[test]
fn promise_tasks_rank_as_promise_due_today_without_first_instalment_default() {
    let (mut a, _) = delinquent_later_instalment();
    let now = "2026-11-03T10:12:30+08:00";
    let d = a.apply(
        &promise_made(2, now, "ptp-1", 125_000, "2026-11-04T15:00:00+08:00"),
        now,
    );
    assert!(
        d.schedule.iter().all(|t| t.priority == 2),
        "{:#?}",
        d.schedule
    );
}

#[test]
fn promise_due_today_is_judged_on_the_day_each_task_is_due() {
    let (mut a, _) = delinquent_later_instalment();
    let now = "2026-11-03T10:12:30+08:00";
    // Three days ahead: the review is due now, the reminder and check on the promise day.
    let d = a.apply(
        &promise_made(2, now, "ptp-far", 125_000, "2026-11-06T15:00:00+08:00"),
        now,
    );
    assert_eq!(only(&d, TaskKind::PromiseReminder).priority, 2);
    assert_eq!(only(&d, TaskKind::PromiseCheck).priority, 2);
    let review = only(&d, TaskKind::SupervisorReview);
    assert_ne!(
        review.priority, 2,
        "a review due today is not work on a promise due today"
    );
}

#[test]
fn promise_cancels_open_collection_calls() {
    let (mut a, first) = delinquent_first_instalment();
    let call = only(&first, TaskKind::CollectionCall).task_id;
    let now = "2026-11-03T10:12:30+08:00";
    let d = a.apply(
        &promise_made(2, now, "ptp-1", 125_000, "2026-11-04T15:00:00+08:00"),
        now,
    );
    assert_eq!(cancelled(&d), vec![call]);
    assert!(d.cancel[0].reason.contains("ptp-1"));
    assert!(a.open_of(TaskKind::CollectionCall).is_empty());
}

#[test]
fn new_promise_supersedes_earlier_open_promise_and_cancels_its_tasks() {
    let (mut a, _) = delinquent_first_instalment();
    let now1 = "2026-11-03T10:12:30+08:00";
    let d1 = a.apply(
        &promise_made(2, now1, "ptp-1", 125_000, "2026-11-04T15:00:00+08:00"),
        now1,
    );
    let old: Vec<Uuid> = d1.schedule.iter().map(|t| t.task_id).collect();
    let now2 = "2026-11-03T16:00:00+08:00";
    let d2 = a.apply(
        &promise_made(3, now2, "ptp-2", 125_000, "2026-11-05T11:00:00+08:00"),
        now2,
    );
    let mut got = cancelled(&d2);
    got.sort();
    let mut want = old.clone();
    want.sort();
    assert_eq!(got, want);
    assert!(d2.cancel.iter().all(|c| c.reason.contains("superseded")));
    let s = a.state();
    let status = |id: &str| {
        s.promises
            .iter()
            .find(|p| p.promise_id == id)
            .map(|p| p.status)
    };
    assert_eq!(status("ptp-1"), Some(PromiseStatus::Superseded));
    assert_eq!(status("ptp-2"), Some(PromiseStatus::Open));
    assert!(a
        .open
        .iter()
        .all(|t| t.promise_id.as_deref() == Some("ptp-2")));
    assert_eq!(
        only(&d2, TaskKind::PromiseReminder).due_at,
        ts("2026-11-05T10:00:00+08:00")
    );
    assert_eq!(
        only(&d2, TaskKind::PromiseCheck).due_at,
        ts("2026-11-05T12:00:00+08:00")
    );
}

/// Account with `ptp-2` (made 10:05, promised 2026-11-05 11:00) applied before `ptp-1`
/// (made 10:00, promised 2026-11-04 15:00), as two consumers or a redelivery can do.
fn promises_applied_out_of_order() -> (Account, Vec<Task>, Decision) {
    let (mut a, _) = delinquent_later_instalment();
    a.apply(
        &promise_made(
            3,
            "2026-11-03T10:05:00+08:00",
            "ptp-2",
            125_000,
            "2026-11-05T11:00:00+08:00",
        ),
        "2026-11-03T10:06:00+08:00",
    );
    let open_before = a.open.clone();
    let late = a.apply(
        &promise_made(
            2,
            "2026-11-03T10:00:00+08:00",
            "ptp-1",
            125_000,
            "2026-11-04T15:00:00+08:00",
        ),
        "2026-11-03T10:07:00+08:00",
    );
    (a, open_before, late)
}

fn promise_status(a: &Account, id: &str) -> Option<PromiseStatus> {
    a.state()
        .promises
        .iter()
        .find(|p| p.promise_id == id)
        .map(|p| p.status)
}

#[test]
fn an_older_promise_arriving_late_does_not_supersede_the_newer_one() {
    let (a, _, d) = promises_applied_out_of_order();
    assert!(d.schedule.is_empty(), "{:#?}", d.schedule);
    assert!(d.cancel.is_empty());
    assert!(d.outbox.is_empty());
    assert!(d.reprioritise.is_empty());
    assert_eq!(promise_status(&a, "ptp-1"), Some(PromiseStatus::Superseded));
    assert_eq!(promise_status(&a, "ptp-2"), Some(PromiseStatus::Open));
    let p1 = a
        .state()
        .promises
        .iter()
        .find(|p| p.promise_id == "ptp-1")
        .expect("late promise recorded");
    assert_eq!(p1.made_at, Some(ts("2026-11-03T10:00:00+08:00")));
    assert_eq!(p1.promised_at, Some(ts("2026-11-04T15:00:00+08:00")));
    assert_eq!(p1.amount.map(|m| m.minor), Some(125_000));
    assert!(d.journal.iter().any(|j| j.kind == "promise_superseded"
        && j.detail.contains("ptp-1")
        && j.detail.contains("newer promise ptp-2")
        && j.detail.contains("nothing planned")));
}

#[test]
fn the_newer_promise_keeps_its_reminder_check_and_expiry_when_an_older_one_arrives_late() {
    let (a, open_before, _) = promises_applied_out_of_order();
    assert_eq!(a.open, open_before);
    let due = |kind| {
        let tasks = a.open_of(kind);
        assert_eq!(tasks.len(), 1, "{kind}: {tasks:#?}");
        assert_eq!(tasks[0].promise_id.as_deref(), Some("ptp-2"));
        tasks[0].due_at
    };
    assert_eq!(
        due(TaskKind::PromiseReminder),
        ts("2026-11-05T10:00:00+08:00")
    );
    assert_eq!(due(TaskKind::PromiseCheck), ts("2026-11-05T12:00:00+08:00"));
    assert_eq!(
        due(TaskKind::PromiseExpiry),
        ts("2026-11-05T13:00:00+08:00")
    );
    assert_eq!(
        a.state().open_promise().map(|p| p.promise_id.as_str()),
        Some("ptp-2")
    );
}

#[test]
fn a_payment_after_a_late_older_promise_counts_toward_the_newer_one() {
    let (mut a, _, _) = promises_applied_out_of_order();
    let now = "2026-11-05T11:30:00+08:00";
    let d = a.apply(&payment_received(4, now, 125_000, "CNY", Some(60_000)), now);
    assert!(d
        .journal
        .iter()
        .any(|j| j.kind == "promise_kept" && j.detail.contains("ptp-2")));
    assert_eq!(promise_status(&a, "ptp-1"), Some(PromiseStatus::Superseded));
    assert_eq!(promise_status(&a, "ptp-2"), Some(PromiseStatus::Kept));
}

#[test]
fn a_broken_report_for_a_late_older_promise_is_ignored_like_any_superseded_one() {
    let (mut a, open_before, _) = promises_applied_out_of_order();
    let now = "2026-11-04T17:05:00+08:00";
    let d = a.apply(&promise_broken(4, now, "ptp-1"), now);
    assert!(d.schedule.is_empty() && d.cancel.is_empty());
    assert_eq!(d.state.broken_promises, 0);
    assert_eq!(a.open, open_before);
}

#[test]
fn an_older_promise_arriving_after_the_newer_one_broke_plans_nothing() {
    let (mut a, _) = delinquent_later_instalment();
    a.apply(
        &promise_made(
            3,
            "2026-11-03T10:05:00+08:00",
            "ptp-2",
            125_000,
            "2026-11-04T11:00:00+08:00",
        ),
        "2026-11-03T10:06:00+08:00",
    );
    a.apply(
        &promise_broken(4, "2026-11-04T14:00:00+08:00", "ptp-2"),
        "2026-11-04T14:00:00+08:00",
    );
    let open_before = a.open.clone();
    let late = a.apply(
        &promise_made(
            2,
            "2026-11-03T10:00:00+08:00",
            "ptp-1",
            125_000,
            "2026-11-05T15:00:00+08:00",
        ),
        "2026-11-04T14:30:00+08:00",
    );
    assert!(late.schedule.is_empty(), "{:#?}", late.schedule);
    assert!(late.cancel.is_empty());
    assert_eq!(a.open, open_before, "the escalation after the break stands");
    assert_eq!(promise_status(&a, "ptp-1"), Some(PromiseStatus::Superseded));
    assert_eq!(promise_status(&a, "ptp-2"), Some(PromiseStatus::Broken));
}

#[test]
fn a_newer_promise_applied_after_an_older_one_supersedes_it() {
    let (mut a, _) = delinquent_later_instalment();
    let d1 = a.apply(
        &promise_made(
            2,
            "2026-11-03T10:00:00+08:00",
            "ptp-1",
            125_000,
            "2026-11-04T15:00:00+08:00",
        ),
        "2026-11-03T10:01:00+08:00",
    );
    let mut old: Vec<Uuid> = d1.schedule.iter().map(|t| t.task_id).collect();
    old.sort();
    let d2 = a.apply(
        &promise_made(
            3,
            "2026-11-03T10:05:00+08:00",
            "ptp-2",
            125_000,
            "2026-11-05T11:00:00+08:00",
        ),
        "2026-11-03T10:06:00+08:00",
    );
    let mut got = cancelled(&d2);
    got.sort();
    assert_eq!(got, old);
    assert_eq!(promise_status(&a, "ptp-1"), Some(PromiseStatus::Superseded));
    assert_eq!(promise_status(&a, "ptp-2"), Some(PromiseStatus::Open));
    assert!(a
        .open
        .iter()
        .all(|t| t.promise_id.as_deref() == Some("ptp-2")));
}

#[test]
fn promises_made_at_the_same_instant_let_the_one_applied_last_win() {
    let (mut a, _) = delinquent_later_instalment();
    let made = "2026-11-03T10:00:00+08:00";
    a.apply(
        &promise_made(2, made, "ptp-1", 125_000, "2026-11-04T15:00:00+08:00"),
        made,
    );
    let d = a.apply(
        &promise_made(3, made, "ptp-2", 125_000, "2026-11-05T11:00:00+08:00"),
        "2026-11-03T10:01:00+08:00",
    );
    assert!(!d.cancel.is_empty());
    assert_eq!(promise_status(&a, "ptp-1"), Some(PromiseStatus::Superseded));
    assert_eq!(promise_status(&a, "ptp-2"), Some(PromiseStatus::Open));
}

#[test]
fn an_open_promise_stored_without_its_time_is_superseded_by_any_new_one() {
    let (mut a, _) = delinquent_later_instalment();
    a.apply(
        &promise_made(
            3,
            "2026-11-03T10:05:00+08:00",
            "ptp-2",
            125_000,
            "2026-11-05T11:00:00+08:00",
        ),
        "2026-11-03T10:06:00+08:00",
    );
    // As stored by a version that did not record when promises were made.
    if let Some(s) = a.state.as_mut() {
        for p in &mut s.promises {
            p.made_at = None;
        }
    }
    let d = a.apply(
        &promise_made(
            2,
            "2026-11-03T10:00:00+08:00",
            "ptp-1",
            125_000,
            "2026-11-04T15:00:00+08:00",
        ),
        "2026-11-03T10:07:00+08:00",
    );
    assert!(!d.cancel.is_empty());
    assert_eq!(promise_status(&a, "ptp-2"), Some(PromiseStatus::Superseded));
    assert_eq!(promise_status(&a, "ptp-1"), Some(PromiseStatus::Open));
}

#[test]
fn promise_check_after_window_end_moves_to_eight_next_morning() {
    let (mut a, _) = delinquent_first_instalment();
    let now = "2026-11-03T10:12:30+08:00";
    let d = a.apply(
        &promise_made(2, now, "ptp-1", 125_000, "2026-11-04T20:30:00+08:00"),
        now,
    );
    // 19:30 is inside the window and stays; 21:30 is not and moves to 08:00.
    assert_eq!(
        only(&d, TaskKind::PromiseReminder).due_at,
        ts("2026-11-04T19:30:00+08:00")
    );
    let check = only(&d, TaskKind::PromiseCheck);
    assert_eq!(check.due_at, ts("2026-11-05T08:00:00+08:00"));
    assert!(check.reason.contains("moved into the contact window"));
}

#[test]
fn promise_reminder_before_window_start_moves_into_window_before_the_promise() {
    let (mut a, _) = delinquent_first_instalment();
    let now = "2026-11-03T10:12:30+08:00";
    let promised = ts("2026-11-04T08:30:00+08:00");
    let d = a.apply(
        &promise_made(2, now, "ptp-1", 125_000, "2026-11-04T08:30:00+08:00"),
        now,
    );
    let reminder = only(&d, TaskKind::PromiseReminder);
    // The ideal 07:30 is outside the window; the reminder lands on an allowed minute
    // (the checker in `apply` asserts that) that is still before the promise and after now.
    assert!(reminder.due_at < promised);
    assert!(reminder.due_at > ts(now));
    assert_eq!(reminder.due_at, ts("2026-11-03T20:59:00+08:00"));
    assert!(reminder.reason.contains("moved into the contact window"));
    assert_eq!(
        only(&d, TaskKind::PromiseCheck).due_at,
        ts("2026-11-04T09:30:00+08:00")
    );
}

#[test]
fn reminder_whose_time_has_passed_is_skipped() {
    let (mut a, _) = delinquent_first_instalment();
    let now = "2026-11-03T14:30:00+08:00";
    let d = a.apply(
        &promise_made(2, now, "ptp-1", 125_000, "2026-11-03T15:00:00+08:00"),
        now,
    );
    assert_eq!(kinds(&d), vec![TaskKind::PromiseCheck]);
    assert_eq!(
        only(&d, TaskKind::PromiseCheck).due_at,
        ts("2026-11-03T16:00:00+08:00")
    );
    assert!(d
        .journal
        .iter()
        .any(|j| j.kind == "decision" && j.detail.contains("reminder skipped")));
}

#[test]
fn promise_more_than_48_hours_ahead_gets_supervisor_review() {
    let (mut a, _) = delinquent_first_instalment();
    let now = "2026-11-03T10:00:00+08:00";
    let d = a.apply(
        &promise_made(2, now, "ptp-1", 125_000, "2026-11-06T10:00:00+08:00"),
        now,
    );
    assert_eq!(
        kinds(&d),
        vec![
            TaskKind::PromiseReminder,
            TaskKind::PromiseCheck,
            TaskKind::SupervisorReview
        ]
    );
    let review = only(&d, TaskKind::SupervisorReview);
    assert_eq!(review.channel, Channel::None);
    assert_eq!(review.due_at, ts(now));
    assert_eq!(review.promise_id.as_deref(), Some("ptp-1"));
}

#[test]
fn promise_expiry_is_planned_internally_at_grace_and_never_published() {
    let (mut a, _) = delinquent_first_instalment();
    let now = "2026-11-03T10:12:30+08:00";
    let d = a.apply(
        &promise_made(2, now, "ptp-1", 125_000, "2026-11-04T15:00:00+08:00"),
        now,
    );
    let internal: Vec<&Task> = d.schedule.iter().filter(|t| t.kind.is_internal()).collect();
    assert_eq!(internal.len(), 1, "{:#?}", d.schedule);
    let expiry = internal[0];
    assert_eq!(expiry.kind, TaskKind::PromiseExpiry);
    assert_eq!(expiry.due_at, ts("2026-11-04T17:00:00+08:00"));
    assert_eq!(expiry.promise_id.as_deref(), Some("ptp-1"));
    assert!(!d
        .outbox
        .iter()
        .any(|m| m.json()["data"]["task_id"] == json!(expiry.task_id)));
}

#[test]
fn promise_exactly_48_hours_ahead_gets_no_supervisor_review() {
    let (mut a, _) = delinquent_first_instalment();
    let now = "2026-11-03T10:00:00+08:00";
    let d = a.apply(
        &promise_made(2, now, "ptp-1", 125_000, "2026-11-05T10:00:00+08:00"),
        now,
    );
    assert!(!kinds(&d).contains(&TaskKind::SupervisorReview));
}

#[test]
fn promise_made_after_its_own_broken_is_recorded_and_plans_nothing() {
    let (mut a, _) = delinquent_first_instalment();
    let now = "2026-11-05T10:00:00+08:00";
    let broken = a.apply(&promise_broken(2, now, "ptp-1"), now);
    assert_eq!(broken.state.broken_promises, 1);
    let open_before = a.open.clone();
    let later = "2026-11-05T10:05:00+08:00";
    let d = a.apply(
        &promise_made(3, later, "ptp-1", 125_000, "2026-11-05T15:00:00+08:00"),
        later,
    );
    assert!(d.schedule.is_empty());
    assert!(d.cancel.is_empty());
    assert!(d.outbox.is_empty());
    assert_eq!(a.open, open_before);
    let p = a
        .state()
        .promises
        .iter()
        .find(|p| p.promise_id == "ptp-1")
        .expect("promise recorded");
    assert_eq!(p.status, PromiseStatus::Broken);
    assert_eq!(p.promised_at, Some(ts("2026-11-05T15:00:00+08:00")));
    assert_eq!(p.amount.map(|m| m.minor), Some(125_000));
    assert_eq!(a.state().broken_promises, 1);
}

#[test]
fn duplicate_promise_made_is_a_no_op() {
    let (mut a, _) = delinquent_first_instalment();
    let now = "2026-11-03T10:12:30+08:00";
    let ev = promise_made(2, now, "ptp-1", 125_000, "2026-11-04T15:00:00+08:00");
    a.apply(&ev, now);
    let open_before = a.open.clone();
    let d = a.apply(&ev, now);
    assert!(d.schedule.is_empty());
    assert!(d.cancel.is_empty());
    assert_eq!(a.open, open_before);
}

// ---------------------------------------------------------------------------------------
// promise.broken
// ---------------------------------------------------------------------------------------

/// Delinquent account with open promise `ptp-1` due 2026-11-04 15:00 Shanghai.
fn with_promise() -> Account {
    let (mut a, _) = delinquent_later_instalment();
    let now = "2026-11-03T10:12:30+08:00";
    a.apply(
        &promise_made(2, now, "ptp-1", 125_000, "2026-11-04T15:00:00+08:00"),
        now,
    );
    a
}

#[test]
fn broken_promise_cancels_its_tasks_and_plans_firm_call() {
    let mut a = with_promise();
    let promise_tasks: Vec<Uuid> = a
        .open
        .iter()
        .filter(|t| t.promise_id.as_deref() == Some("ptp-1"))
        .map(|t| t.task_id)
        .collect();
    assert!(promise_tasks.len() >= 2);
    let now = "2026-11-04T17:05:00+08:00";
    let d = a.apply(&promise_broken(3, now, "ptp-1"), now);
    let mut got = cancelled(&d);
    got.sort();
    let mut want = promise_tasks;
    want.sort();
    assert_eq!(got, want);
    assert_eq!(d.state.broken_promises, 1);
    let p = d
        .state
        .promises
        .iter()
        .find(|p| p.promise_id == "ptp-1")
        .expect("promise");
    assert_eq!(p.status, PromiseStatus::Broken);
    assert_eq!(kinds(&d), vec![TaskKind::CollectionCall]);
    let call = only(&d, TaskKind::CollectionCall);
    assert_eq!(call.tone, Tone::Firm);
    assert_eq!(call.due_at, ts(now));
    assert_eq!(call.channel, Channel::PhoneMobile);
}

#[test]
fn second_report_of_same_broken_promise_is_a_no_op() {
    let mut a = with_promise();
    let now = "2026-11-04T17:05:00+08:00";
    a.apply(&promise_broken(3, now, "ptp-1"), now);
    let open_before = a.open.clone();
    let later = "2026-11-04T17:10:00+08:00";
    let d = a.apply(&promise_broken(4, later, "ptp-1"), later);
    assert!(d.schedule.is_empty());
    assert!(d.cancel.is_empty());
    assert!(d.outbox.is_empty());
    assert_eq!(d.state.broken_promises, 1);
    assert_eq!(a.open, open_before);
}

#[test]
fn unknown_promise_broken_is_recorded_not_an_error() {
    let (mut a, first) = delinquent_later_instalment();
    let old_call = only(&first, TaskKind::CollectionCall).task_id;
    let now = "2026-11-04T17:05:00+08:00";
    let d = a.apply(&promise_broken(2, now, "ptp-never-seen"), now);
    assert_eq!(d.state.broken_promises, 1);
    let p = d
        .state
        .promises
        .iter()
        .find(|p| p.promise_id == "ptp-never-seen")
        .expect("recorded");
    assert_eq!(p.status, PromiseStatus::Broken);
    assert!(p.amount.is_none() && p.promised_at.is_none());
    // The open call is replaced by one in the escalated tone.
    assert_eq!(cancelled(&d), vec![old_call]);
    assert_eq!(only(&d, TaskKind::CollectionCall).tone, Tone::Firm);
}

/// Found by the property tests in CI: a `promise.broken` for a new account, then its
/// `promise.made`, left the account `current`, so the call the break planned fired with
/// no next attempt, and a later, older promise turned the account delinquent with nothing
/// open. A broken promise makes the account delinquent, whichever report comes first.
#[test]
fn a_broken_promise_reported_before_it_was_made_leaves_the_account_delinquent_and_called() {
    let mut a = Account::new();
    let now = "2026-11-04T10:00:00+08:00";
    let broken = a.apply(&promise_broken(1, now, "ptp-1"), now);
    assert_eq!(broken.state.status, Status::Delinquent);
    let call = only(&broken, TaskKind::CollectionCall).clone();
    let made = a.apply(
        &promise_made(2, now, "ptp-1", 50_000, "2026-11-04T10:00:00+08:00"),
        now,
    );
    assert_eq!(made.state.status, Status::Delinquent);
    assert!(
        made.schedule.is_empty(),
        "a broken promise plans nothing when made"
    );
    let fired_at = ts(now);
    let next = on_call_fired(a.state(), &[], &call, Uuid::nil(), &a.policy, fired_at);
    let next_call = only(&next, TaskKind::CollectionCall);
    assert!(next_call.due_at > fired_at);
    assert!(next
        .journal
        .iter()
        .all(|j| j.kind != collections_core::NEXT_STEP_BACKSTOP));
}

#[test]
fn escalation_follows_the_count_of_broken_promises() {
    let (mut a, _) = delinquent_later_instalment();
    assert_eq!(a.open[0].tone, Tone::Gentle);

    let d1 = a.apply(
        &promise_broken(2, "2026-11-04T10:00:00+08:00", "ptp-1"),
        "2026-11-04T10:00:00+08:00",
    );
    assert_eq!(kinds(&d1), vec![TaskKind::CollectionCall]);
    assert_eq!(only(&d1, TaskKind::CollectionCall).tone, Tone::Firm);

    let d2 = a.apply(
        &promise_broken(3, "2026-11-05T10:00:00+08:00", "ptp-2"),
        "2026-11-05T10:00:00+08:00",
    );
    // No third-party call: the default opens one only when contact is lost (rule 8).
    assert_eq!(kinds(&d2), vec![TaskKind::CollectionCall]);
    assert_eq!(only(&d2, TaskKind::CollectionCall).tone, Tone::Serious);

    let d3 = a.apply(
        &promise_broken(4, "2026-11-06T10:00:00+08:00", "ptp-3"),
        "2026-11-06T10:00:00+08:00",
    );
    assert_eq!(
        kinds(&d3),
        vec![TaskKind::CollectionCall, TaskKind::FieldVisit]
    );
    let visit = only(&d3, TaskKind::FieldVisit);
    assert_eq!(visit.channel, Channel::Visit);
    assert_eq!(visit.tone, Tone::Serious);
    assert_eq!(d3.state.broken_promises, 3);

    assert_eq!(a.open_of(TaskKind::CollectionCall).len(), 1);
    assert_eq!(a.open_of(TaskKind::ThirdPartyCall).len(), 0);
    assert_eq!(a.open_of(TaskKind::FieldVisit).len(), 1);
}

#[test]
fn broken_promise_late_at_night_plans_call_next_morning() {
    let mut a = with_promise();
    let now = "2026-11-04T23:15:00+08:00";
    let d = a.apply(&promise_broken(3, now, "ptp-1"), now);
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts("2026-11-05T08:00:00+08:00")
    );
}

// ---------------------------------------------------------------------------------------
// payment.received
// ---------------------------------------------------------------------------------------

#[test]
fn payment_lowers_the_overdue_amount() {
    let (mut a, _) = delinquent_later_instalment();
    let now = "2026-11-03T12:00:00+08:00";
    let d = a.apply(&payment_received(2, now, 25_000, "CNY", None), now);
    assert_eq!(d.state.overdue_minor, 100_000);
    assert_eq!(d.state.status, Status::Delinquent);
    let lp = d.state.last_payment.expect("last payment");
    assert_eq!(lp.amount.minor, 25_000);
    assert_eq!(lp.received_at, ts(now));
}

#[test]
fn authoritative_overdue_after_wins_over_arithmetic() {
    let (mut a, _) = delinquent_later_instalment();
    let now = "2026-11-03T12:00:00+08:00";
    // Fees make the billing system's figure differ from 125000 - 25000.
    let d = a.apply(&payment_received(2, now, 25_000, "CNY", Some(103_500)), now);
    assert_eq!(d.state.overdue_minor, 103_500);
}

#[test]
fn payment_in_full_cures_and_cancels_every_open_task() {
    let mut a = with_promise();
    assert_eq!(a.published_open().len(), 2);
    let open: Vec<Uuid> = a.open.iter().map(|t| t.task_id).collect();
    let now = "2026-11-04T18:00:00+08:00";
    let d = a.apply(&payment_received(3, now, 125_000, "CNY", None), now);
    assert_eq!(d.state.status, Status::Cured);
    assert_eq!(d.state.overdue_minor, 0);
    assert!(!d.state.first_installment_default);
    assert!(d.state.unpaid_due_dates.is_empty());
    let mut got = cancelled(&d);
    got.sort();
    let mut want = open;
    want.sort();
    assert_eq!(got, want);
    assert!(d.schedule.is_empty());
    assert!(a.open.is_empty());
    assert!(d.journal.iter().any(|j| j.kind == "account_cured"));
    assert_eq!(account_summary(&d)["bucket"], json!("M0"));
}

#[test]
fn cure_via_authoritative_zero_cancels_the_call() {
    let (mut a, first) = delinquent_first_instalment();
    let call = only(&first, TaskKind::CollectionCall).task_id;
    let now = "2026-11-03T12:00:00+08:00";
    let d = a.apply(&payment_received(2, now, 100_000, "CNY", Some(0)), now);
    assert_eq!(d.state.status, Status::Cured);
    assert_eq!(cancelled(&d), vec![call]);
}

#[test]
fn payments_reaching_promise_amount_within_grace_keep_it_and_cancel_its_check() {
    // A 60000 promise on an account 125000 overdue, so keeping it is not a cure.
    let (mut a, _) = delinquent_later_instalment();
    let now = "2026-11-03T10:20:00+08:00";
    let d = a.apply(
        &promise_made(3, now, "ptp-2", 60_000, "2026-11-04T15:00:00+08:00"),
        now,
    );
    let check2 = only(&d, TaskKind::PromiseCheck).task_id;
    let p1 = a.apply(
        &payment_received(4, "2026-11-04T14:00:00+08:00", 30_000, "CNY", None),
        "2026-11-04T14:00:00+08:00",
    );
    assert!(p1.cancel.is_empty(), "half the promise keeps nothing yet");
    // Exactly promised_at + grace (15:00 + 2h) is still in time.
    let at = "2026-11-04T17:00:00+08:00";
    let p2 = a.apply(&payment_received(5, at, 30_000, "CNY", None), at);
    assert!(cancelled(&p2).contains(&check2));
    let p = p2
        .state
        .promises
        .iter()
        .find(|p| p.promise_id == "ptp-2")
        .expect("promise");
    assert_eq!(p.status, PromiseStatus::Kept);
    assert_eq!(p.paid_minor, 60_000);
    assert_eq!(p2.state.status, Status::Delinquent);
    assert_eq!(p2.state.overdue_minor, 65_000);
    assert!(p2.journal.iter().any(|j| j.kind == "promise_kept"));
    assert!(a.open_of(TaskKind::PromiseCheck).is_empty());
}

/// An account 1,250.00 overdue (instalment 3 failed on 3 November, Shanghai) whose
/// customer promised `minor` for 4 November at 15:00 local (`ptp-1`).
fn promised_on_an_overdue_of_1250(minor: i64) -> Account {
    let mut a = Account::new();
    let fail_at = "2026-11-03T10:00:00+08:00";
    a.apply(
        &payment_failed(1, fail_at, SHANGHAI, 3, "2026-11-01", 125_000),
        fail_at,
    );
    let now = "2026-11-03T10:20:00+08:00";
    a.apply(
        &promise_made(2, now, "ptp-1", minor, "2026-11-04T15:00:00+08:00"),
        now,
    );
    a
}

#[test]
fn a_kept_promise_smaller_than_the_overdue_plans_the_next_call_by_the_cadence() {
    // Issue 17 item 2: overdue 1,250.00, a promise of 500.00 kept by a payment of 500.00.
    // The promise cancelled the call and keeping it cancels its check: without a next
    // call the account would owe 750.00 with nothing planned, for ever.
    let mut a = promised_on_an_overdue_of_1250(50_000);
    assert!(
        a.open_of(TaskKind::CollectionCall).is_empty(),
        "the promise cancelled the call"
    );
    let paid = "2026-11-04T14:10:00+08:00";
    let d = a.apply(&payment_received(3, paid, 50_000, "CNY", None), paid);
    assert!(d.journal.iter().any(|j| j.kind == "promise_kept"));
    assert_eq!(d.state.status, Status::Delinquent);
    assert_eq!(d.state.overdue_minor, 75_000);
    let call = only(&d, TaskKind::CollectionCall);
    // 14:10 local: the next cadence hour (10:00, 13:00, 17:00, 20:00) is 17:00 today.
    assert_eq!(local(call.due_at, SHANGHAI).time(), hm(17, 0));
    assert_eq!(
        local(call.due_at, SHANGHAI).date(),
        local(ts(paid), SHANGHAI).date()
    );
    assert!(call.reason.contains("ptp-1 kept"), "{}", call.reason);
    assert_eq!(a.open_of(TaskKind::CollectionCall).len(), 1);
    // A second payment that does not cure plans no second call beside it.
    let later = "2026-11-04T15:00:00+08:00";
    a.apply(&payment_received(4, later, 10_000, "CNY", None), later);
    assert_eq!(a.open_of(TaskKind::CollectionCall).len(), 1);
}

#[test]
fn payment_after_grace_does_not_keep_the_promise() {
    let mut a = promised_on_an_overdue_of_1250(60_000);
    let late = "2026-11-04T17:00:01+08:00";
    let d = a.apply(&payment_received(3, late, 60_000, "CNY", None), late);
    assert!(d.cancel.is_empty());
    assert_eq!(
        d.state.open_promise().map(|p| p.promise_id.as_str()),
        Some("ptp-1")
    );
    assert_eq!(a.open_of(TaskKind::PromiseCheck).len(), 1);
}

#[test]
fn partial_payment_keeps_the_plan_and_new_tasks_rank_as_partial_payer() {
    let (mut a, first) = delinquent_later_instalment();
    assert_eq!(only(&first, TaskKind::CollectionCall).priority, 6);
    let open_before = a.open.clone();
    let now = "2026-11-03T12:00:00+08:00";
    let d = a.apply(&payment_received(2, now, 25_000, "CNY", None), now);
    assert!(d.schedule.is_empty());
    assert!(d.cancel.is_empty());
    // The plan is kept (same tasks, same times), re-ranked as "able to pay part" and
    // re-announced with its new priority.
    assert_eq!(a.open.len(), open_before.len());
    for (after, before) in a.open.iter().zip(&open_before) {
        assert_eq!(
            (after.task_id, after.due_at),
            (before.task_id, before.due_at)
        );
    }
    let call = a.open_of(TaskKind::CollectionCall)[0];
    assert_eq!(call.priority, 3);
    assert_eq!(d.reprioritise, vec![(call.task_id, 3)]);
    let msg = d
        .outbox
        .iter()
        .find(|m| m.json()["data"]["task_id"] == json!(call.task_id))
        .expect("re-announced");
    assert_eq!(msg.routing_key, "task.scheduled.collection_call");
    assert_eq!(msg.json()["data"]["priority"], 3);
    assert!(d.state.partial_payer);
    assert!(!d.state.first_installment_default);
    // The next planned task ranks as "able to pay part".
    let later = "2026-11-04T10:00:00+08:00";
    let d2 = a.apply(&promise_broken(3, later, "ptp-x"), later);
    assert_eq!(only(&d2, TaskKind::CollectionCall).priority, 3);
}

#[test]
fn payment_in_another_currency_is_a_domain_error() {
    let (a, _) = delinquent_later_instalment();
    let now = "2026-11-03T12:00:00+08:00";
    let ev = payment_received(2, now, 25_000, "USD", None);
    let err = decide(a.state.as_ref(), &a.open, &ev, &a.policy, ts(now))
        .expect_err("USD payment on a CNY account");
    assert!(err.to_string().contains("USD"), "{err}");
}

#[test]
fn tasks_planned_before_the_customers_zone_was_known_are_planned_again_inside_its_window() {
    // The promise arrives first: the account is kept in the default zone (Shanghai), where
    // 15:00 is a fine hour. The customer is in New York, where it is 02:00.
    let mut a = Account::new();
    let t0 = "2026-11-03T10:00:00+08:00";
    a.apply(
        &promise_made(1, t0, "ptp-ny", 20_000, "2026-11-03T15:00:00+08:00"),
        t0,
    );
    assert_eq!(a.open_of(TaskKind::PromiseReminder).len(), 1);
    let t1 = "2026-11-03T10:05:00+08:00";
    let d = a.apply(
        &payment_failed(2, t1, NEW_YORK, 2, "2026-11-01", 20_000),
        t1,
    );
    let ny = jiff::tz::TimeZone::get(NEW_YORK).expect("zone");
    for t in a.open.iter().filter(|t| t.kind.contacts_customer()) {
        assert!(
            window::is_allowed(t.due_at, &ny, &a.policy.contact_window),
            "{} at {} is outside New York's window",
            t.kind,
            t.due_at.to_zoned(ny.clone())
        );
    }
    // The check moves to 08:00 New York time; the reminder cannot precede the promise
    // (02:00 New York) inside the window, so it is dropped.
    let check = a.open_of(TaskKind::PromiseCheck);
    assert_eq!(check.len(), 1);
    assert_eq!(check[0].due_at, ts("2026-11-03T08:00:00-05:00"));
    assert!(check[0]
        .reason
        .contains("planned again in the customer's zone"));
    assert!(a.open_of(TaskKind::PromiseReminder).is_empty());
    assert_eq!(
        a.open_of(TaskKind::PromiseExpiry).len(),
        1,
        "internal tasks stay"
    );
    assert!(d
        .journal
        .iter()
        .any(|j| j.detail.contains("customer's zone is America/New_York")));
}

#[test]
fn a_promise_in_another_currency_is_a_domain_error_and_changes_nothing() {
    let (a, _) = delinquent_later_instalment();
    let now = "2026-11-03T12:00:00+08:00";
    let ev = promise_made_in(
        2,
        now,
        "ptp-usd",
        25_000,
        "2026-11-04T15:00:00+08:00",
        "USD",
    );
    let err = decide(a.state.as_ref(), &a.open, &ev, &a.policy, ts(now))
        .expect_err("USD promise on a CNY account");
    assert!(err.to_string().contains("USD"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Daylight-saving time (America/New_York: falls back 2026-11-01, springs forward 2027-03-14)
// ---------------------------------------------------------------------------------------

fn new_york_account(now: &str, due: &str) -> Account {
    let mut a = Account::new();
    a.apply(
        &payment_failed_in(1, now, NEW_YORK, 2, due, 20_000, "USD"),
        now,
    );
    a
}

#[test]
fn promise_across_fall_back_keeps_wall_clock_hours() {
    let mut a = new_york_account("2026-10-31T14:00:00-04:00", "2026-10-30");
    let now = "2026-10-31T18:00:00-04:00";
    // 10:00 on the first day of standard time.
    let d = a.apply(
        &promise_made_in(2, now, "ptp-us", 20_000, "2026-11-01T10:00:00-05:00", "USD"),
        now,
    );
    let reminder = local(only(&d, TaskKind::PromiseReminder).due_at, NEW_YORK);
    let check = local(only(&d, TaskKind::PromiseCheck).due_at, NEW_YORK);
    assert_eq!(reminder.date(), "2026-11-01".parse().expect("date"));
    assert_eq!(reminder.time(), hm(9, 0));
    assert_eq!(reminder.offset().seconds(), -5 * 3600);
    assert_eq!(check.time(), hm(11, 0));
    assert_eq!(check.offset().seconds(), -5 * 3600);
}

#[test]
fn early_promise_after_fall_back_moves_reminder_to_previous_evening_in_daylight_time() {
    let mut a = new_york_account("2026-10-31T14:00:00-04:00", "2026-10-30");
    let now = "2026-10-31T18:00:00-04:00";
    let d = a.apply(
        &promise_made_in(2, now, "ptp-us", 20_000, "2026-11-01T08:30:00-05:00", "USD"),
        now,
    );
    let reminder = only(&d, TaskKind::PromiseReminder).due_at;
    assert_eq!(reminder, ts("2026-10-31T20:59:00-04:00"));
    let z = local(reminder, NEW_YORK);
    assert_eq!(z.time(), hm(20, 59));
    assert_eq!(z.offset().seconds(), -4 * 3600);
    let check = local(only(&d, TaskKind::PromiseCheck).due_at, NEW_YORK);
    assert_eq!(check.time(), hm(9, 30));
    assert_eq!(check.offset().seconds(), -5 * 3600);
}

#[test]
fn promise_across_spring_forward_keeps_wall_clock_hours() {
    let mut a = new_york_account("2027-03-13T12:00:00-05:00", "2027-03-12");
    let now = "2027-03-13T12:30:00-05:00";
    let d = a.apply(
        &promise_made_in(2, now, "ptp-us", 20_000, "2027-03-14T09:30:00-04:00", "USD"),
        now,
    );
    let reminder = local(only(&d, TaskKind::PromiseReminder).due_at, NEW_YORK);
    let check = local(only(&d, TaskKind::PromiseCheck).due_at, NEW_YORK);
    assert_eq!(reminder.date(), "2027-03-14".parse().expect("date"));
    assert_eq!(reminder.time(), hm(8, 30));
    assert_eq!(reminder.offset().seconds(), -4 * 3600);
    assert_eq!(check.time(), hm(10, 30));
    assert_eq!(check.offset().seconds(), -4 * 3600);
}

#[test]
fn call_at_half_past_eleven_before_fall_back_moves_to_eight_standard_time() {
    let mut a = Account::new();
    let now = "2026-10-31T23:30:00-04:00";
    let d = a.apply(
        &payment_failed_in(1, now, NEW_YORK, 1, "2026-10-31", 20_000, "USD"),
        now,
    );
    let due = only(&d, TaskKind::CollectionCall).due_at;
    assert_eq!(due, ts("2026-11-01T08:00:00-05:00"));
    assert_eq!(due, ts("2026-11-01T13:00:00Z"));
    let z = local(due, NEW_YORK);
    assert_eq!(z.time(), hm(8, 0));
    assert_eq!(z.offset().seconds(), -5 * 3600);
}

#[test]
fn call_at_half_past_eleven_before_spring_forward_moves_to_eight_daylight_time() {
    let mut a = Account::new();
    let now = "2027-03-13T23:30:00-05:00";
    let d = a.apply(
        &payment_failed_in(1, now, NEW_YORK, 1, "2027-03-13", 20_000, "USD"),
        now,
    );
    let due = only(&d, TaskKind::CollectionCall).due_at;
    assert_eq!(due, ts("2027-03-14T08:00:00-04:00"));
    assert_eq!(due, ts("2027-03-14T12:00:00Z"));
    let z = local(due, NEW_YORK);
    assert_eq!(z.time(), hm(8, 0));
    assert_eq!(z.offset().seconds(), -4 * 3600);
}

// ---------------------------------------------------------------------------------------
// Outbox
// ---------------------------------------------------------------------------------------

#[test]
fn each_scheduled_task_yields_one_task_scheduled_message() {
    let (mut a, _) = delinquent_later_instalment();
    let now = "2026-11-03T10:00:00+08:00";
    let d = a.apply(
        &promise_made(2, now, "ptp-1", 125_000, "2026-11-06T10:00:00+08:00"),
        now,
    );
    let scheduled: Vec<_> = d
        .outbox
        .iter()
        .filter(|m| m.json()["type"] == json!("task.scheduled"))
        .collect();
    assert_eq!(scheduled.len(), 3);
    for t in d.schedule.iter().filter(|t| !t.kind.is_internal()) {
        let msgs: Vec<_> = scheduled
            .iter()
            .filter(|m| m.json()["data"]["task_id"] == json!(t.task_id))
            .collect();
        assert_eq!(msgs.len(), 1, "one message for {}", t.kind);
        let m = msgs[0];
        assert_eq!(m.routing_key, format!("task.scheduled.{}", t.kind.as_str()));
        assert_eq!(m.exchange, TASKS_EXCHANGE);
        assert_eq!(m.account_id, ACC);
        assert_eq!(m.json()["id"], json!(m.event_id));
        assert_eq!(m.json()["specversion"], json!("1.0"));
        assert_eq!(m.json()["subject"], json!(ACC));
        assert_eq!(m.json()["data"]["kind"], json!(t.kind.as_str()));
        assert_eq!(m.json()["data"]["due_at"], json!(t.due_at));
        assert_eq!(m.json()["data"]["priority"], json!(t.priority));
        assert_eq!(m.json()["data"]["promise_id"], json!("ptp-1"));
        assert!(m.json()["data"].get("cancel_reason").is_none());
    }
}

#[test]
fn each_cancellation_yields_one_task_cancelled_message() {
    let (mut a, first) = delinquent_first_instalment();
    let call = only(&first, TaskKind::CollectionCall).clone();
    let now = "2026-11-03T10:12:30+08:00";
    let d = a.apply(
        &promise_made(2, now, "ptp-1", 125_000, "2026-11-04T15:00:00+08:00"),
        now,
    );
    let cancels: Vec<_> = d
        .outbox
        .iter()
        .filter(|m| m.json()["type"] == json!("task.cancelled"))
        .collect();
    assert_eq!(cancels.len(), 1);
    let m = cancels[0];
    assert_eq!(m.routing_key, "task.cancelled.collection_call");
    assert_eq!(m.json()["data"]["task_id"], json!(call.task_id));
    assert_eq!(
        m.json()["data"]["cancel_reason"],
        json!(d.cancel[0].reason.clone())
    );
    // The scheduled message for the same task and its cancellation have different ids.
    let scheduled_id = first.outbox[0].event_id;
    assert_ne!(m.event_id, scheduled_id);
    assert_eq!(
        d.outbox
            .iter()
            .filter(|m| m.json()["type"] == json!("task.scheduled"))
            .count(),
        2
    );
}

#[test]
fn same_inputs_give_same_ids() {
    let run = || {
        let mut a = with_promise();
        let now = "2026-11-04T17:05:00+08:00";
        let d = a.apply(&promise_broken(3, now, "ptp-1"), now);
        (a.open.clone(), d)
    };
    let (open1, d1) = run();
    let (open2, d2) = run();
    assert_eq!(open1, open2);
    assert_eq!(d1.schedule, d2.schedule);
    assert_eq!(d1.cancel, d2.cancel);
    assert_eq!(d1.journal, d2.journal);
    assert_eq!(d1.outbox, d2.outbox);
    assert!(!d1.outbox.is_empty());
    let mut ids: Vec<Uuid> = d1.outbox.iter().map(|m| m.event_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), d1.outbox.len(), "message ids are unique");
}

#[test]
fn a_different_event_id_gives_different_task_ids() {
    let now = "2026-11-03T10:00:00+08:00";
    let policy = Policy::default();
    let e1 = payment_failed(1, now, SHANGHAI, 1, "2026-11-03", 125_000);
    let e2 = payment_failed(2, now, SHANGHAI, 1, "2026-11-03", 125_000);
    let d1 = decide(None, &[], &e1, &policy, ts(now)).expect("decide");
    let d2 = decide(None, &[], &e2, &policy, ts(now)).expect("decide");
    assert_ne!(d1.schedule[0].task_id, d2.schedule[0].task_id);
    assert_ne!(d1.outbox[0].event_id, d2.outbox[0].event_id);
}

#[test]
fn tasks_record_the_version_of_the_policy_that_decided() {
    let now = "2026-11-03T10:00:00+08:00";
    let policy = Policy::default();
    let e = payment_failed(1, now, SHANGHAI, 1, "2026-11-03", 125_000);
    let d1 = decide(None, &[], &e, &policy, ts(now)).expect("decide");
    // The version is computed once and kept: deciding again decides the same.
    let d2 = decide(None, &[], &e, &policy, ts(now)).expect("decide");
    assert_eq!(format!("{d1:?}"), format!("{d2:?}"));
    assert!(!d1.schedule.is_empty());
    assert!(d1
        .schedule
        .iter()
        .all(|t| t.policy_version == policy.version()));
    // The version recorded is the deciding policy's own: another policy records its own.
    let other = Policy::from_toml_str(collections_core::policy::US_REG_F_POLICY_TOML)
        .expect("valid policy");
    assert_ne!(other.version(), policy.version());
    let d3 = decide(None, &[], &e, &other, ts(now)).expect("decide");
    assert!(!d3.schedule.is_empty());
    assert!(d3
        .schedule
        .iter()
        .all(|t| t.policy_version == other.version()));
}

// ---------------------------------------------------------------------------------------
// Parsing rejections
// ---------------------------------------------------------------------------------------

fn valid_payment_failed() -> Value {
    envelope(
        "payment.failed",
        1,
        "2026-11-03T09:15:02+08:00",
        json!({
            "account_id": ACC,
            "customer": { "timezone": SHANGHAI },
            "installment": { "number": 1, "due_date": "2026-11-03", "amount": money(125_000, "CNY") },
            "overdue_amount": money(125_000, "CNY"),
            "failure_reason": "insufficient_funds",
            "attempted_at": "2026-11-03T09:15:00+08:00",
        }),
    )
}

fn valid_promise_made() -> Value {
    envelope(
        "promise.made",
        2,
        "2026-11-03T10:12:30+08:00",
        json!({
            "account_id": ACC,
            "promise_id": "ptp-1",
            "amount": money(125_000, "CNY"),
            "promised_at": "2026-11-04T15:00:00+08:00",
            "captured_by": "agent-0421",
            "channel": "phone_mobile",
        }),
    )
}

fn reject(v: &Value, expected: Option<EventType>) -> RejectCode {
    let bytes = serde_json::to_vec(v).expect("serialise");
    parse_event(&bytes, expected)
        .expect_err("the event should be refused")
        .code
}

#[test]
fn valid_events_parse_with_their_fields() {
    let e = parse(&valid_payment_failed());
    assert_eq!(e.event_type(), EventType::PaymentFailed);
    assert_eq!(e.account_id, ACC);
    assert_eq!(e.id.to_string(), event_id(1));
    assert_eq!(e.time, ts("2026-11-03T09:15:02+08:00"));
    let bytes = serde_json::to_vec(&valid_promise_made()).expect("serialise");
    let e = parse_event(&bytes, Some(EventType::PromiseMade)).expect("right queue");
    assert_eq!(e.event_type(), EventType::PromiseMade);
}

#[test]
fn body_that_is_not_json_is_rejected_as_not_json() {
    let err = parse_event(b"payment failed for acc-000123", None).expect_err("not JSON");
    assert_eq!(err.code, RejectCode::NotJson);
    let err = parse_event(b"{\"specversion\": \"1.0\",", None).expect_err("truncated");
    assert_eq!(err.code, RejectCode::NotJson);
}

#[test]
fn wrong_specversion_is_rejected_as_not_cloudevent() {
    let mut v = valid_payment_failed();
    v["specversion"] = json!("0.3");
    assert_eq!(reject(&v, None), RejectCode::NotCloudEvent);
}

#[test]
fn unknown_type_is_rejected_as_unexpected_type() {
    let mut v = valid_payment_failed();
    v["type"] = json!("payment.bounced");
    assert_eq!(reject(&v, None), RejectCode::UnexpectedType);
}

#[test]
fn type_on_the_wrong_queue_is_rejected_as_unexpected_type() {
    let v = valid_payment_failed();
    assert_eq!(
        reject(&v, Some(EventType::PromiseMade)),
        RejectCode::UnexpectedType
    );
}

#[test]
fn missing_data_field_is_rejected_as_schema() {
    let mut v = valid_payment_failed();
    v["data"]
        .as_object_mut()
        .expect("data object")
        .remove("installment");
    assert_eq!(reject(&v, None), RejectCode::Schema);
}

#[test]
fn negative_money_is_rejected_as_schema() {
    let mut v = valid_payment_failed();
    v["data"]["overdue_amount"]["minor"] = json!(-1);
    assert_eq!(reject(&v, None), RejectCode::Schema);
}

#[test]
fn unknown_time_zone_is_rejected_as_invalid_value() {
    let mut v = valid_payment_failed();
    v["data"]["customer"]["timezone"] = json!("Mars/Olympus_Mons");
    assert_eq!(reject(&v, None), RejectCode::InvalidValue);
}

#[test]
fn subject_differing_from_account_id_is_rejected_as_invalid_value() {
    let mut v = valid_promise_made();
    v["subject"] = json!("acc-999999");
    assert_eq!(reject(&v, None), RejectCode::InvalidValue);
}

#[test]
fn promised_at_in_1970_is_rejected_as_invalid_value() {
    let mut v = valid_promise_made();
    v["data"]["promised_at"] = json!("1970-01-02T15:00:00+08:00");
    assert_eq!(reject(&v, None), RejectCode::InvalidValue);
}
