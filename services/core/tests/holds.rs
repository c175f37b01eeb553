//! Holds and contact restrictions (issue 19): one test per rule, driven by CloudEvents
//! parsed from JSON text, as the workers parse them.
//!
//! Every instant is fixed: no test reads the clock. Each test contrasts the held or
//! restricted account with what the same events plan without the hold or restriction,
//! where that is what makes the rule visible.

use collections_core::{
    decide, fire, on_call_fired, policy::DEFAULT_POLICY_TOML, state::Status, window, AccountState,
    Channel, Decision, Event, FireOutcome, Policy, Task, TaskKind,
};
use jiff::{civil::Time, tz::TimeZone, SignedDuration, Timestamp};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const ACC: &str = "acc-hold-1";
const SHANGHAI: &str = "Asia/Shanghai";

fn ts(s: &str) -> Timestamp {
    s.parse()
        .unwrap_or_else(|e| panic!("bad timestamp {s}: {e}"))
}

fn local(t: Timestamp) -> jiff::Zoned {
    t.to_zoned(TimeZone::get(SHANGHAI).expect("zone"))
}

fn hm(h: i8, m: i8) -> Time {
    Time::constant(h, m, 0, 0)
}

fn policy(replacements: &[(&str, &str)]) -> Policy {
    let mut text = DEFAULT_POLICY_TOML.to_owned();
    for (from, to) in replacements {
        assert!(text.contains(from), "default.toml has no {from:?}");
        text = text.replacen(from, to, 1);
    }
    Policy::from_toml_str(&text).unwrap_or_else(|e| panic!("policy refused: {e}"))
}

/// Promise reminders and checks by SMS (the shipped default is the mobile phone).
fn sms_reminders() -> Policy {
    policy(&[
        (
            "reminder_channel = \"phone_mobile\"",
            "reminder_channel = \"sms\"",
        ),
        (
            "check_channel = \"phone_mobile\"",
            "check_channel = \"sms\"",
        ),
    ])
}

fn event(ty: &str, n: u32, time: &str, data: Value) -> Event {
    let v = json!({
        "specversion": "1.0",
        "id": format!("00000000-0000-4000-8000-{n:012x}"),
        "source": "/tests/holds",
        "type": ty,
        "time": time,
        "subject": data["account_id"].clone(),
        "datacontenttype": "application/json",
        "data": data,
    });
    let bytes = serde_json::to_vec(&v).expect("serialise");
    collections_core::parse_event(&bytes, None)
        .unwrap_or_else(|e| panic!("event refused: {e}\n{v:#}"))
}

fn cny(minor: i64) -> Value {
    json!({ "minor": minor, "currency": "CNY" })
}

/// A later instalment (due `due`) failed at `time` in Shanghai.
fn failed(n: u32, time: &str, due: &str, overdue: i64) -> Event {
    event(
        "payment.failed",
        n,
        time,
        json!({"account_id": ACC, "customer": {"timezone": SHANGHAI},
               "installment": {"number": 3, "due_date": due, "amount": cny(overdue)},
               "overdue_amount": cny(overdue), "failure_reason": "insufficient_funds",
               "attempted_at": time}),
    )
}

fn promise(n: u32, time: &str, id: &str, minor: i64, at: &str) -> Event {
    event(
        "promise.made",
        n,
        time,
        json!({"account_id": ACC, "promise_id": id, "amount": cny(minor),
               "promised_at": at, "captured_by": "agent-1", "channel": "phone_mobile"}),
    )
}

fn broken(n: u32, time: &str, id: &str) -> Event {
    event(
        "promise.broken",
        n,
        time,
        json!({"account_id": ACC, "promise_id": id, "reason": "no_payment"}),
    )
}

fn paid(n: u32, time: &str, minor: i64, after: i64) -> Event {
    event(
        "payment.received",
        n,
        time,
        json!({"account_id": ACC, "payment_id": format!("pay-{n}"), "amount": cny(minor),
               "received_at": time, "overdue_amount_after": cny(after)}),
    )
}

/// `hold.placed` at `time` (also its `placed_at`).
fn placed(
    n: u32,
    time: &str,
    hold_id: &str,
    reason: &str,
    scope: Value,
    review_at: Option<&str>,
    pause_dpd: bool,
) -> Event {
    let mut data = json!({"account_id": ACC, "hold_id": hold_id, "reason": reason,
                          "scope": scope, "placed_at": time, "pause_dpd": pause_dpd,
                          "placed_by": "desk-7"});
    if let Some(r) = review_at {
        data["review_at"] = json!(r);
    }
    event("hold.placed", n, time, data)
}

fn released(n: u32, time: &str, hold_id: &str) -> Event {
    event(
        "hold.released",
        n,
        time,
        json!({"account_id": ACC, "hold_id": hold_id, "outcome": "resolved",
               "released_at": time, "released_by": "desk-7"}),
    )
}

/// `contact.restricted` effective at `time`; `extra` adds `channel`, `contact_point_id`,
/// `hours`, `expires_at`.
fn restricted(n: u32, time: &str, id: &str, kind: &str, extra: Value) -> Event {
    let mut data = json!({"account_id": ACC, "restriction_id": id, "kind": kind,
                          "effective_at": time, "source": "debtor-request"});
    if let (Some(d), Some(x)) = (data.as_object_mut(), extra.as_object()) {
        for (k, v) in x {
            d.insert(k.clone(), v.clone());
        }
    }
    event("contact.restricted", n, time, data)
}

fn unrestricted(n: u32, time: &str, id: &str) -> Event {
    event(
        "contact.unrestricted",
        n,
        time,
        json!({"account_id": ACC, "restriction_id": id, "effective_at": time}),
    )
}

fn attempted(n: u32, time: &str, attempt: &str, point: &str, extra: Value) -> Event {
    let mut data = json!({"account_id": ACC, "attempt_id": attempt, "channel": "phone_mobile",
                          "direction": "outbound", "contact_point_id": point,
                          "party": "unknown", "result": "no_answer", "started_at": time,
                          "agent_id": "dialer-1"});
    if let (Some(d), Some(x)) = (data.as_object_mut(), extra.as_object()) {
        for (k, v) in x {
            d.insert(k.clone(), v.clone());
        }
    }
    event("contact.attempted", n, time, data)
}

/// One account as the shell keeps it: state plus the tasks still open.
struct Account {
    policy: Policy,
    state: Option<AccountState>,
    open: Vec<Task>,
}

impl Account {
    fn new(policy: Policy) -> Self {
        Self {
            policy,
            state: None,
            open: Vec::new(),
        }
    }

    /// Decides `e` at `now`, checks that nothing planned breaks a hold or restriction in
    /// force at its instant or leaves the account's window, and keeps the result.
    fn apply(&mut self, e: &Event, now: &str) -> Decision {
        let d = decide(self.state.as_ref(), &self.open, e, &self.policy, ts(now))
            .unwrap_or_else(|e| panic!("domain error: {e}"));
        let zone = d.state.zone();
        for t in &d.schedule {
            if t.kind.contacts_customer() {
                assert_eq!(
                    d.state
                        .forbidden(t.kind, t.channel, t.contact_point_id.as_deref(), t.due_at),
                    None,
                    "{} via {} planned into a hold or restriction",
                    t.kind,
                    t.channel
                );
                let w = d.state.window(&self.policy.contact_window, t.due_at);
                assert!(
                    window::is_allowed(t.due_at, &zone, &w),
                    "{} at {} is outside the account's window",
                    t.kind,
                    local(t.due_at)
                );
            }
        }
        for c in &d.cancel {
            assert!(
                self.open.iter().any(|t| t.task_id == c.task_id),
                "cancelled task {} was not open",
                c.task_id
            );
        }
        self.keep(&d);
        d
    }

    fn keep(&mut self, d: &Decision) {
        self.open
            .retain(|t| !d.cancel.iter().any(|c| c.task_id == t.task_id));
        self.open.extend(d.schedule.iter().cloned());
        self.state = Some(d.state.clone());
    }

    /// Fires the open task of `kind` at `now` as the scheduler does and completes it.
    fn fire_call(&mut self, kind: TaskKind, now: &str) -> Decision {
        let i = self
            .open
            .iter()
            .position(|t| t.kind == kind)
            .unwrap_or_else(|| panic!("no open {kind}"));
        let t = self.open.remove(i);
        let state = self.state.clone().expect("state");
        let FireOutcome::Due { message, .. } = fire(&t, Some(&state), &self.policy, ts(now)) else {
            panic!("{kind} did not fire at {now}");
        };
        let d = on_call_fired(
            &state,
            &self.open,
            &t,
            message.event_id,
            &self.policy,
            ts(now),
        );
        self.keep(&d);
        d
    }

    fn state(&self) -> &AccountState {
        self.state.as_ref().expect("state")
    }

    fn open_of(&self, kind: TaskKind) -> Vec<&Task> {
        self.open.iter().filter(|t| t.kind == kind).collect()
    }

    fn one_open(&self, kind: TaskKind) -> Task {
        let v = self.open_of(kind);
        assert_eq!(v.len(), 1, "expected one open {kind}: {:#?}", self.open);
        v[0].clone()
    }

    /// Kinds of the open tasks, sorted (what the end state of two arrival orders compares).
    fn open_kinds(&self) -> Vec<String> {
        let mut v: Vec<String> = self.open.iter().map(|t| t.kind.to_string()).collect();
        v.sort();
        v
    }
}

fn only(d: &Decision, kind: TaskKind) -> &Task {
    let v: Vec<&Task> = d.schedule.iter().filter(|t| t.kind == kind).collect();
    assert_eq!(v.len(), 1, "expected one {kind}: {:#?}", d.schedule);
    v[0]
}

fn contacts_planned(d: &Decision) -> Vec<&Task> {
    d.schedule
        .iter()
        .filter(|t| t.kind.contacts_customer())
        .collect()
}

fn cancel_reason(d: &Decision, task: &Task) -> String {
    d.cancel
        .iter()
        .find(|c| c.task_id == task.task_id)
        .unwrap_or_else(|| {
            panic!(
                "{} {} not cancelled: {:#?}",
                task.kind, task.task_id, d.cancel
            )
        })
        .reason
        .clone()
}

fn journal_has(d: &Decision, text: &str) -> bool {
    d.journal.iter().any(|j| j.detail.contains(text))
}

/// Delinquent since `2026-11-01`, failed at 10:00: a collection call at 10:00.
fn delinquent(policy: Policy) -> Account {
    let mut a = Account::new(policy);
    let now = "2026-11-03T10:00:00+08:00";
    let d = a.apply(&failed(1, now, "2026-11-01", 125_000), now);
    assert_eq!(only(&d, TaskKind::CollectionCall).due_at, ts(now));
    a
}

/// Delinquent, with a promise for 2026-11-04 15:00 made at 10:05: its reminder (14:00)
/// and check (16:00) are open, the call cancelled.
fn promised(policy: Policy) -> Account {
    let mut a = delinquent(policy);
    let now = "2026-11-03T10:05:00+08:00";
    a.apply(
        &promise(2, now, "ptp-1", 125_000, "2026-11-04T15:00:00+08:00"),
        now,
    );
    assert!(a.open_of(TaskKind::CollectionCall).is_empty());
    assert_eq!(a.open_of(TaskKind::PromiseReminder).len(), 1);
    assert_eq!(a.open_of(TaskKind::PromiseCheck).len(), 1);
    a
}

const ALL_PHONES: [&str; 3] = ["phone_mobile", "phone_work", "phone_home"];

// ---------------------------------------------------------------------------------------
// hold.placed, scope all
// ---------------------------------------------------------------------------------------

#[test]
fn a_full_hold_cancels_every_open_contact_task_naming_its_reason() {
    let mut a = promised(Policy::default());
    let reminder = a.one_open(TaskKind::PromiseReminder);
    let check = a.one_open(TaskKind::PromiseCheck);
    let now = "2026-11-03T10:10:00+08:00";
    let d = a.apply(
        &placed(
            3,
            now,
            "hold-1",
            "dispute",
            json!("all"),
            Some("2026-11-20T10:00:00+08:00"),
            false,
        ),
        now,
    );
    assert_eq!(d.cancel.len(), 2, "{:#?}", d.cancel);
    assert_eq!(cancel_reason(&d, &reminder), "hold:dispute");
    assert_eq!(cancel_reason(&d, &check), "hold:dispute");
    // The published cancellations carry the reason and the summary the hold.
    let cancels: Vec<Value> = d
        .outbox
        .iter()
        .map(|m| m.json())
        .filter(|j| j["type"] == "task.cancelled")
        .collect();
    assert_eq!(cancels.len(), 2);
    for c in &cancels {
        assert_eq!(c["data"]["cancel_reason"], "hold:dispute");
        assert_eq!(c["data"]["account"]["holds"], json!(["dispute"]));
    }
    // Nothing contacts the customer; the review is the next step, at review_at.
    assert!(contacts_planned(&d).is_empty(), "{:#?}", d.schedule);
    let review = only(&d, TaskKind::HoldReview);
    assert_eq!(review.channel, Channel::None);
    assert_eq!(review.due_at, ts("2026-11-20T10:00:00+08:00"));
    // The internal expiry is not a contact: it stays.
    assert_eq!(a.open_of(TaskKind::PromiseExpiry).len(), 1);
    assert_eq!(a.state().summary(ts(now)).holds, vec!["dispute".to_owned()]);
}

#[test]
fn a_hold_without_review_at_is_reviewed_after_the_policys_default_for_its_reason() {
    let now = "2026-11-03T10:05:00+08:00";
    let review = |p: Policy, reason: &str| {
        let mut a = delinquent(p);
        let d = a.apply(
            &placed(2, now, "hold-1", reason, json!("all"), None, false),
            now,
        );
        only(&d, TaskKind::HoldReview).due_at
    };
    let days = |n: i64| ts(now) + SignedDuration::from_hours(24 * n);
    assert_eq!(review(Policy::default(), "dispute"), days(30));
    assert_eq!(review(Policy::default(), "hardship"), days(14));
    assert_eq!(review(Policy::default(), "bankruptcy"), days(90));
    let short = policy(&[("review_hardship = \"336h\"", "review_hardship = \"48h\"")]);
    assert_eq!(review(short, "hardship"), days(2));
}

#[test]
fn under_a_full_hold_nothing_is_planned_but_payments_still_apply_and_can_cure() {
    let mut a = delinquent(Policy::default());
    let call = a.one_open(TaskKind::CollectionCall);
    let d = a.apply(
        &placed(
            2,
            "2026-11-03T10:05:00+08:00",
            "hold-1",
            "hardship",
            json!("all"),
            None,
            false,
        ),
        "2026-11-03T10:05:00+08:00",
    );
    assert_eq!(cancel_reason(&d, &call), "hold:hardship");
    // A promise made while held plans no reminder and no check.
    let d = a.apply(
        &promise(
            3,
            "2026-11-03T11:00:00+08:00",
            "ptp-1",
            125_000,
            "2026-11-04T15:00:00+08:00",
        ),
        "2026-11-03T11:00:00+08:00",
    );
    assert!(contacts_planned(&d).is_empty(), "{:#?}", d.schedule);
    assert!(journal_has(&d, "not planned: hold:hardship in force"));
    // A partial payment lowers the overdue and plans no call.
    let d = a.apply(
        &paid(4, "2026-11-03T12:00:00+08:00", 50_000, 75_000),
        "2026-11-03T12:00:00+08:00",
    );
    assert_eq!(a.state().overdue_minor, 75_000);
    assert!(contacts_planned(&d).is_empty(), "{:#?}", d.schedule);
    // The promise passes unpaid: broken, and still no call while held.
    let d = a.apply(
        &broken(5, "2026-11-04T18:00:00+08:00", "ptp-1"),
        "2026-11-04T18:00:00+08:00",
    );
    assert!(contacts_planned(&d).is_empty(), "{:#?}", d.schedule);
    assert_eq!(a.state().status, Status::Delinquent);
    // Paid in full while held: cured.
    let d = a.apply(
        &paid(6, "2026-11-05T12:00:00+08:00", 75_000, 0),
        "2026-11-05T12:00:00+08:00",
    );
    assert_eq!(a.state().status, Status::Cured);
    assert_eq!(a.state().overdue_minor, 0);
    assert!(contacts_planned(&d).is_empty());
    assert!(a.open.iter().all(|t| !t.kind.contacts_customer()));
}

// ---------------------------------------------------------------------------------------
// hold.placed, channel scope
// ---------------------------------------------------------------------------------------

#[test]
fn an_sms_hold_moves_open_and_new_reminders_to_the_phone() {
    let mut a = promised(sms_reminders());
    let reminder = a.one_open(TaskKind::PromiseReminder);
    assert_eq!(reminder.channel, Channel::Sms);
    let d = a.apply(
        &placed(
            3,
            "2026-11-03T10:10:00+08:00",
            "hold-1",
            "complaint",
            json!(["sms"]),
            None,
            false,
        ),
        "2026-11-03T10:10:00+08:00",
    );
    assert_eq!(cancel_reason(&d, &reminder), "hold:complaint");
    let moved = only(&d, TaskKind::PromiseReminder);
    assert_eq!(moved.channel, Channel::PhoneMobile);
    assert_eq!(moved.due_at, reminder.due_at);
    assert_eq!(
        only(&d, TaskKind::PromiseCheck).channel,
        Channel::PhoneMobile
    );
    // A channel hold is not a full hold: the summary names it, nothing else stops.
    assert!(a
        .state()
        .full_hold_at(ts("2026-11-03T10:10:00+08:00"))
        .is_none());
    // A new promise's reminder goes by phone too.
    let d = a.apply(
        &promise(
            4,
            "2026-11-03T11:00:00+08:00",
            "ptp-2",
            125_000,
            "2026-11-04T17:00:00+08:00",
        ),
        "2026-11-03T11:00:00+08:00",
    );
    assert_eq!(
        only(&d, TaskKind::PromiseReminder).channel,
        Channel::PhoneMobile
    );
}

#[test]
fn a_hold_on_every_phone_sends_reminders_by_sms_and_the_collection_call_waits() {
    let mut a = Account::new(Policy::default());
    let now = "2026-11-03T22:30:00+08:00";
    a.apply(&failed(1, now, "2026-11-01", 125_000), now);
    let call = a.one_open(TaskKind::CollectionCall);
    let d = a.apply(
        &placed(
            2,
            "2026-11-03T22:40:00+08:00",
            "hold-1",
            "complaint",
            json!(ALL_PHONES),
            None,
            false,
        ),
        "2026-11-03T22:40:00+08:00",
    );
    assert_eq!(cancel_reason(&d, &call), "hold:complaint");
    assert!(a.open_of(TaskKind::CollectionCall).is_empty());
    assert!(journal_has(&d, "no other channel is allowed"));
    let d = a.apply(
        &promise(
            3,
            "2026-11-03T22:50:00+08:00",
            "ptp-1",
            125_000,
            "2026-11-04T15:00:00+08:00",
        ),
        "2026-11-03T22:50:00+08:00",
    );
    let reminder = only(&d, TaskKind::PromiseReminder);
    assert_eq!(reminder.channel, Channel::Sms);
    assert_eq!(reminder.due_at, ts("2026-11-04T14:00:00+08:00"));
    assert_eq!(only(&d, TaskKind::PromiseCheck).channel, Channel::Sms);
    assert!(a.open_of(TaskKind::CollectionCall).is_empty());
}

#[test]
fn cease_attorney_bankruptcy_and_deceased_stop_all_contact_whatever_the_scope() {
    let now = "2026-11-03T10:05:00+08:00";
    for reason in [
        "cease_communication",
        "attorney_represented",
        "bankruptcy",
        "deceased",
    ] {
        let mut a = delinquent(Policy::default());
        let call = a.one_open(TaskKind::CollectionCall);
        let d = a.apply(
            &placed(2, now, "hold-1", reason, json!(["sms"]), None, false),
            now,
        );
        assert_eq!(cancel_reason(&d, &call), format!("hold:{reason}"));
        assert!(
            contacts_planned(&d).is_empty(),
            "{reason}: {:#?}",
            d.schedule
        );
        assert!(a.state().full_hold_at(ts(now)).is_some(), "{reason}");
        let d = a.apply(
            &promise(
                3,
                "2026-11-03T11:00:00+08:00",
                "ptp-1",
                125_000,
                "2026-11-04T15:00:00+08:00",
            ),
            "2026-11-03T11:00:00+08:00",
        );
        assert!(
            contacts_planned(&d).is_empty(),
            "{reason}: {:#?}",
            d.schedule
        );
    }
    // A dispute scoped to SMS leaves the call alone.
    let mut a = delinquent(Policy::default());
    let d = a.apply(
        &placed(2, now, "hold-1", "dispute", json!(["sms"]), None, false),
        now,
    );
    assert!(d.cancel.is_empty(), "{:#?}", d.cancel);
    assert_eq!(a.open_of(TaskKind::CollectionCall).len(), 1);
}

// ---------------------------------------------------------------------------------------
// hold.released
// ---------------------------------------------------------------------------------------

#[test]
fn release_plans_a_call_at_the_next_allowed_minute_and_cancels_the_review() {
    for (release, call_at) in [
        ("2026-11-05T15:20:00+08:00", "2026-11-05T15:20:00+08:00"),
        ("2026-11-05T22:00:00+08:00", "2026-11-06T08:00:00+08:00"),
    ] {
        let mut a = delinquent(Policy::default());
        let d = a.apply(
            &placed(
                2,
                "2026-11-03T10:05:00+08:00",
                "hold-1",
                "dispute",
                json!("all"),
                None,
                false,
            ),
            "2026-11-03T10:05:00+08:00",
        );
        let review = only(&d, TaskKind::HoldReview).clone();
        let d = a.apply(&released(3, release, "hold-1"), release);
        assert!(cancel_reason(&d, &review).contains("released"));
        let call = only(&d, TaskKind::CollectionCall);
        assert_eq!(call.due_at, ts(call_at), "released at {release}");
        assert!(a.open_of(TaskKind::HoldReview).is_empty());
        assert!(a.state().summary(ts(release)).holds.is_empty());
    }
}

#[test]
fn release_of_a_cured_account_plans_no_call() {
    let mut a = delinquent(Policy::default());
    a.apply(
        &placed(
            2,
            "2026-11-03T10:05:00+08:00",
            "hold-1",
            "dispute",
            json!("all"),
            None,
            false,
        ),
        "2026-11-03T10:05:00+08:00",
    );
    a.apply(
        &paid(3, "2026-11-04T10:00:00+08:00", 125_000, 0),
        "2026-11-04T10:00:00+08:00",
    );
    let d = a.apply(
        &released(4, "2026-11-05T10:00:00+08:00", "hold-1"),
        "2026-11-05T10:00:00+08:00",
    );
    assert!(contacts_planned(&d).is_empty(), "{:#?}", d.schedule);
}

// ---------------------------------------------------------------------------------------
// pause_dpd
// ---------------------------------------------------------------------------------------

#[test]
fn pause_dpd_stops_dpd_and_bucket_during_the_held_days_and_they_resume_after_release() {
    // Due 2026-10-10: 24 days past due on 2026-11-03 (M1).
    let run = |pause: bool| {
        let mut a = Account::new(Policy::default());
        let now = "2026-11-03T10:00:00+08:00";
        a.apply(&failed(1, now, "2026-10-10", 125_000), now);
        assert_eq!(a.state().dpd(ts(now)), 24);
        a.apply(
            &placed(
                2,
                "2026-11-03T10:05:00+08:00",
                "hold-1",
                "hardship",
                json!("all"),
                None,
                pause,
            ),
            "2026-11-03T10:05:00+08:00",
        );
        a
    };
    let held = run(true);
    let s = held.state();
    assert_eq!(s.dpd(ts("2026-11-20T09:00:00+08:00")), 24);
    assert_eq!(s.summary(ts("2026-11-20T09:00:00+08:00")).bucket, "M1");
    // Without pause_dpd the days count: 41 days, M2.
    let unpaused = run(false);
    assert_eq!(unpaused.state().dpd(ts("2026-11-20T09:00:00+08:00")), 41);
    assert_eq!(
        unpaused
            .state()
            .summary(ts("2026-11-20T09:00:00+08:00"))
            .bucket,
        "M2"
    );
    // Released on 2026-11-20: the call resumes at DPD 24, and DPD advances from there.
    let mut a = held;
    let d = a.apply(
        &released(3, "2026-11-20T10:00:00+08:00", "hold-1"),
        "2026-11-20T10:00:00+08:00",
    );
    let msg = d
        .outbox
        .iter()
        .map(|m| m.json())
        .find(|j| j["type"] == "task.scheduled" && j["data"]["kind"] == "collection_call")
        .expect("a call scheduled on release");
    assert_eq!(msg["data"]["account"]["dpd"], json!(24));
    assert_eq!(msg["data"]["account"]["bucket"], json!("M1"));
    assert_eq!(a.state().dpd(ts("2026-11-25T10:00:00+08:00")), 29);
    assert_eq!(a.state().dpd(ts("2026-11-28T10:00:00+08:00")), 32);
    assert_eq!(
        a.state().summary(ts("2026-11-28T10:00:00+08:00")).bucket,
        "M2"
    );
}

// ---------------------------------------------------------------------------------------
// escalation frozen
// ---------------------------------------------------------------------------------------

fn escalating() -> Policy {
    policy(&[(
        "from = 1\ntone = \"firm\"\n",
        "from = 1\ntone = \"firm\"\nopen = [\"third_party_call\", \"field_visit\", \"formal_letter\"]\n",
    )])
}

#[test]
fn a_broken_promise_opens_no_escalation_while_a_full_hold_is_in_force() {
    let escalations = [
        TaskKind::ThirdPartyCall,
        TaskKind::FieldVisit,
        TaskKind::FormalLetter,
    ];
    let at = "2026-11-04T17:00:00+08:00";
    // Without a hold the step opens all three.
    let mut free = promised(escalating());
    let d = free.apply(&broken(3, at, "ptp-1"), at);
    for k in escalations {
        assert_eq!(
            d.schedule.iter().filter(|t| t.kind == k).count(),
            1,
            "{k}: {:#?}",
            d.schedule
        );
    }
    let mut held = promised(escalating());
    held.apply(
        &placed(
            3,
            "2026-11-03T10:10:00+08:00",
            "hold-1",
            "dispute",
            json!("all"),
            None,
            false,
        ),
        "2026-11-03T10:10:00+08:00",
    );
    let d = held.apply(&broken(4, at, "ptp-1"), at);
    for k in escalations {
        assert!(
            d.schedule.iter().all(|t| t.kind != k),
            "{k}: {:#?}",
            d.schedule
        );
    }
    assert!(journal_has(
        &d,
        "the escalation is frozen while hold:dispute"
    ));
    assert!(contacts_planned(&d).is_empty());
}

// ---------------------------------------------------------------------------------------
// contact.restricted
// ---------------------------------------------------------------------------------------

#[test]
fn an_sms_opt_out_moves_reminders_to_the_phone_at_once() {
    let mut a = promised(sms_reminders());
    let reminder = a.one_open(TaskKind::PromiseReminder);
    let check = a.one_open(TaskKind::PromiseCheck);
    let d = a.apply(
        &restricted(
            3,
            "2026-11-03T10:10:00+08:00",
            "r-1",
            "opt_out",
            json!({"channel": "sms"}),
        ),
        "2026-11-03T10:10:00+08:00",
    );
    assert_eq!(cancel_reason(&d, &reminder), "restriction:opt_out:sms");
    assert_eq!(cancel_reason(&d, &check), "restriction:opt_out:sms");
    let r = only(&d, TaskKind::PromiseReminder);
    assert_eq!(
        (r.channel, r.due_at),
        (Channel::PhoneMobile, reminder.due_at)
    );
    assert_eq!(
        only(&d, TaskKind::PromiseCheck).channel,
        Channel::PhoneMobile
    );
    assert_eq!(
        a.state()
            .summary(ts("2026-11-03T10:10:00+08:00"))
            .restrictions,
        vec!["opt_out".to_owned()]
    );
}

#[test]
fn an_opt_out_of_one_contact_point_moves_the_call_to_another() {
    let mut a = delinquent(Policy::default());
    // Two mobile numbers known, neither answering.
    for (n, (time, attempt, point)) in [
        ("2026-11-03T10:01:00+08:00", "dial-1", "cp-m1"),
        ("2026-11-03T10:02:00+08:00", "dial-2", "cp-m2"),
    ]
    .into_iter()
    .enumerate()
    {
        let n = u32::try_from(n).expect("small") + 2;
        a.apply(&attempted(n, time, attempt, point, json!({})), time);
    }
    // The next attempt, planned with the ledger known, goes to a known point.
    a.fire_call(TaskKind::CollectionCall, "2026-11-03T10:03:00+08:00");
    let call = a.one_open(TaskKind::CollectionCall);
    let point = call.contact_point_id.clone().expect("a point is named");
    let d = a.apply(
        &restricted(
            5,
            "2026-11-03T10:10:00+08:00",
            "r-1",
            "opt_out",
            json!({"contact_point_id": point}),
        ),
        "2026-11-03T10:10:00+08:00",
    );
    assert_eq!(
        cancel_reason(&d, &call),
        format!("restriction:opt_out:{point}")
    );
    let again = only(&d, TaskKind::CollectionCall);
    assert_ne!(again.contact_point_id.as_deref(), Some(point.as_str()));
    assert_eq!(again.due_at, call.due_at);
}

#[test]
fn do_not_call_on_the_mobile_moves_the_call_and_on_every_phone_cancels_it() {
    let mut a = delinquent(Policy::default());
    let call = a.one_open(TaskKind::CollectionCall);
    assert_eq!(call.channel, Channel::PhoneMobile);
    let d = a.apply(
        &restricted(
            2,
            "2026-11-03T10:05:00+08:00",
            "r-1",
            "do_not_call",
            json!({"channel": "phone_mobile"}),
        ),
        "2026-11-03T10:05:00+08:00",
    );
    assert_eq!(
        cancel_reason(&d, &call),
        "restriction:do_not_call:phone_mobile"
    );
    let work = only(&d, TaskKind::CollectionCall).clone();
    assert_eq!(work.channel, Channel::PhoneWork);
    // do_not_call without a channel or point: every phone. The call goes, and waits.
    let d = a.apply(
        &restricted(
            3,
            "2026-11-03T10:06:00+08:00",
            "r-2",
            "do_not_call",
            json!({}),
        ),
        "2026-11-03T10:06:00+08:00",
    );
    assert_eq!(cancel_reason(&d, &work), "restriction:do_not_call");
    assert!(
        a.open_of(TaskKind::CollectionCall).is_empty(),
        "{:#?}",
        a.open
    );
    // A promise's phone reminder goes by SMS.
    let d = a.apply(
        &promise(
            4,
            "2026-11-03T10:10:00+08:00",
            "ptp-1",
            125_000,
            "2026-11-04T15:00:00+08:00",
        ),
        "2026-11-03T10:10:00+08:00",
    );
    assert_eq!(only(&d, TaskKind::PromiseReminder).channel, Channel::Sms);
}

#[test]
fn workplace_prohibited_takes_the_work_phone_out_of_the_mix() {
    let mut a = delinquent(Policy::default());
    a.apply(
        &restricted(
            2,
            "2026-11-03T10:04:00+08:00",
            "r-work",
            "workplace_prohibited",
            json!({}),
        ),
        "2026-11-03T10:04:00+08:00",
    );
    // The mobile call is not at work: untouched.
    let call = a.one_open(TaskKind::CollectionCall);
    assert_eq!(call.channel, Channel::PhoneMobile);
    assert_eq!(
        a.state().forbidden(
            TaskKind::CollectionCall,
            Channel::PhoneWork,
            None,
            ts("2026-11-03T10:04:00+08:00")
        ),
        Some("restriction:workplace_prohibited".to_owned())
    );
    // With the mobile barred too, the call falls past the work phone to the home phone
    // (without the workplace restriction it falls to the work phone: see the test above).
    let d = a.apply(
        &restricted(
            3,
            "2026-11-03T10:05:00+08:00",
            "r-1",
            "do_not_call",
            json!({"channel": "phone_mobile"}),
        ),
        "2026-11-03T10:05:00+08:00",
    );
    assert_eq!(
        cancel_reason(&d, &call),
        "restriction:do_not_call:phone_mobile"
    );
    assert_eq!(
        only(&d, TaskKind::CollectionCall).channel,
        Channel::PhoneHome
    );
}

#[test]
fn third_party_refused_stops_third_party_calls_until_it_is_lifted() {
    let p = policy(&[
        (
            "from = 1\ntone = \"firm\"\n",
            "from = 1\ntone = \"firm\"\nopen = [\"third_party_call\", \"field_visit\"]\n",
        ),
        (
            "from = 2\ntone = \"serious\"\n",
            "from = 2\ntone = \"serious\"\nopen = [\"third_party_call\"]\n",
        ),
    ]);
    let mut a = promised(p);
    a.apply(
        &restricted(
            3,
            "2026-11-03T10:10:00+08:00",
            "r-tp",
            "third_party_refused",
            json!({}),
        ),
        "2026-11-03T10:10:00+08:00",
    );
    let d = a.apply(
        &broken(4, "2026-11-04T17:00:00+08:00", "ptp-1"),
        "2026-11-04T17:00:00+08:00",
    );
    assert!(d
        .schedule
        .iter()
        .all(|t| t.kind != TaskKind::ThirdPartyCall));
    assert_eq!(only(&d, TaskKind::FieldVisit).channel, Channel::Visit);
    assert!(journal_has(&d, "restriction:third_party_refused"));
    // Lifted: the next broken promise may call a third party again.
    a.apply(
        &unrestricted(5, "2026-11-04T17:10:00+08:00", "r-tp"),
        "2026-11-04T17:10:00+08:00",
    );
    a.apply(
        &promise(
            6,
            "2026-11-04T17:20:00+08:00",
            "ptp-2",
            125_000,
            "2026-11-05T15:00:00+08:00",
        ),
        "2026-11-04T17:20:00+08:00",
    );
    let d = a.apply(
        &broken(7, "2026-11-05T17:00:00+08:00", "ptp-2"),
        "2026-11-05T17:00:00+08:00",
    );
    assert_eq!(
        only(&d, TaskKind::ThirdPartyCall).channel,
        Channel::ContactPerson
    );
}

#[test]
fn agreed_hours_move_open_and_new_tasks_inside_them() {
    let mut a = delinquent(Policy::default());
    let call = a.one_open(TaskKind::CollectionCall);
    let d = a.apply(
        &restricted(
            2,
            "2026-11-03T10:05:00+08:00",
            "r-hours",
            "agreed_hours",
            json!({"hours": {"start": "18:00", "end": "20:00"}}),
        ),
        "2026-11-03T10:05:00+08:00",
    );
    assert_eq!(cancel_reason(&d, &call), "restriction:agreed_hours");
    let moved = only(&d, TaskKind::CollectionCall);
    assert_eq!(moved.due_at, ts("2026-11-03T18:00:00+08:00"));
    assert_eq!(moved.channel, Channel::PhoneMobile);
    assert_eq!(
        a.state()
            .summary(ts("2026-11-03T10:05:00+08:00"))
            .restrictions,
        vec!["agreed_hours".to_owned()]
    );
    // A promise's reminder one hour before 15:00 would be at 14:00: it moves into the
    // agreed hours, and its check (16:00) likewise.
    let d = a.apply(
        &promise(
            3,
            "2026-11-03T10:10:00+08:00",
            "ptp-1",
            125_000,
            "2026-11-04T21:00:00+08:00",
        ),
        "2026-11-03T10:10:00+08:00",
    );
    for t in contacts_planned(&d) {
        let h = local(t.due_at).time();
        assert!(h >= hm(18, 0) && h < hm(20, 0), "{} at {h}", t.kind);
    }
}

#[test]
fn agreed_hours_are_intersected_with_the_policy_window() {
    let mut a = Account::new(Policy::default());
    a.apply(
        &restricted(
            1,
            "2026-11-03T09:00:00+08:00",
            "r-hours",
            "agreed_hours",
            json!({"hours": {"start": "19:00", "end": "23:00"}}),
        ),
        "2026-11-03T09:00:00+08:00",
    );
    let w = a
        .state()
        .window(&a.policy.contact_window, ts("2026-11-03T12:00:00+08:00"))
        .into_owned();
    let hours = w.hours_on(jiff::civil::date(2026, 11, 3)).expect("open");
    assert_eq!((hours.start, hours.end), (hm(19, 0), hm(21, 0)));
    // A failure at 21:30 calls at 19:00 the next day (not 08:00, nor 21:30).
    let d = a.apply(
        &failed(2, "2026-11-03T21:30:00+08:00", "2026-11-01", 125_000),
        "2026-11-03T21:30:00+08:00",
    );
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts("2026-11-04T19:00:00+08:00")
    );
}

#[test]
fn an_expired_restriction_lapses_by_itself() {
    let mut a = delinquent(sms_reminders());
    a.apply(
        &restricted(
            2,
            "2026-11-03T10:01:00+08:00",
            "r-1",
            "opt_out",
            json!({"channel": "sms", "expires_at": "2026-11-04T00:00:00+08:00"}),
        ),
        "2026-11-03T10:01:00+08:00",
    );
    // A reminder due before the expiry goes by phone.
    let d = a.apply(
        &promise(
            3,
            "2026-11-03T10:05:00+08:00",
            "ptp-1",
            125_000,
            "2026-11-03T18:00:00+08:00",
        ),
        "2026-11-03T10:05:00+08:00",
    );
    assert_eq!(
        only(&d, TaskKind::PromiseReminder).channel,
        Channel::PhoneMobile
    );
    // One due after it goes by SMS again, with nothing lifted.
    let d = a.apply(
        &promise(
            4,
            "2026-11-03T10:10:00+08:00",
            "ptp-2",
            125_000,
            "2026-11-05T15:00:00+08:00",
        ),
        "2026-11-03T10:10:00+08:00",
    );
    assert_eq!(only(&d, TaskKind::PromiseReminder).channel, Channel::Sms);
    let s = a.state();
    assert_eq!(
        s.summary(ts("2026-11-03T23:59:00+08:00")).restrictions,
        vec!["opt_out".to_owned()]
    );
    assert!(s
        .summary(ts("2026-11-04T00:00:00+08:00"))
        .restrictions
        .is_empty());
}

// ---------------------------------------------------------------------------------------
// fire(): holds and restrictions re-checked at firing time
// ---------------------------------------------------------------------------------------

#[test]
fn fire_cancels_a_task_that_a_hold_placed_after_its_plan_forbids() {
    let mut a = Account::new(Policy::default());
    a.apply(
        &failed(1, "2026-11-03T22:30:00+08:00", "2026-11-01", 125_000),
        "2026-11-03T22:30:00+08:00",
    );
    let call = a.one_open(TaskKind::CollectionCall);
    let before = a.state().clone();
    // The scheduler claimed the call before the hold's decision committed.
    a.apply(
        &placed(
            2,
            "2026-11-04T07:59:59+08:00",
            "hold-1",
            "dispute",
            json!("all"),
            None,
            false,
        ),
        "2026-11-04T07:59:59+08:00",
    );
    let at = ts("2026-11-04T08:00:00+08:00");
    assert!(matches!(
        fire(&call, Some(&before), &a.policy, at),
        FireOutcome::Due { .. }
    ));
    let FireOutcome::Cancelled {
        task,
        message,
        reason,
        journal,
    } = fire(&call, a.state.as_ref(), &a.policy, at)
    else {
        panic!("a call fired into a hold");
    };
    assert_eq!(reason, "hold:dispute");
    assert_eq!(task.revision, call.revision + 1);
    let j = message.json();
    assert_eq!(j["type"], "task.cancelled");
    assert_eq!(j["data"]["cancel_reason"], "hold:dispute");
    assert_eq!(j["data"]["account"]["holds"], json!(["dispute"]));
    assert_eq!(journal.task_id, Some(call.task_id));
}

#[test]
fn fire_cancels_an_sms_the_debtor_opted_out_of_after_its_plan() {
    let mut a = promised(sms_reminders());
    let reminder = a.one_open(TaskKind::PromiseReminder);
    a.apply(
        &restricted(
            3,
            "2026-11-04T13:59:00+08:00",
            "r-1",
            "opt_out",
            json!({"channel": "sms"}),
        ),
        "2026-11-04T13:59:00+08:00",
    );
    let FireOutcome::Cancelled { reason, .. } =
        fire(&reminder, a.state.as_ref(), &a.policy, reminder.due_at)
    else {
        panic!("an SMS fired after the opt-out");
    };
    assert_eq!(reason, "restriction:opt_out:sms");
}

#[test]
fn fire_moves_a_task_outside_the_agreed_hours_inside_them() {
    let mut a = delinquent(Policy::default());
    let call = a.one_open(TaskKind::CollectionCall);
    a.apply(
        &restricted(
            2,
            "2026-11-03T09:59:00+08:00",
            "r-hours",
            "agreed_hours",
            json!({"hours": {"start": "18:00", "end": "20:00"}}),
        ),
        "2026-11-03T09:59:00+08:00",
    );
    let FireOutcome::Moved { task, .. } = fire(&call, a.state.as_ref(), &a.policy, call.due_at)
    else {
        panic!("a call fired outside the agreed hours");
    };
    assert_eq!(task.due_at, ts("2026-11-03T18:00:00+08:00"));
}

// ---------------------------------------------------------------------------------------
// contact.attempted dispositions
// ---------------------------------------------------------------------------------------

#[test]
fn a_dispute_raised_in_a_conversation_places_a_full_hold() {
    let mut a = delinquent(Policy::default());
    let call = a.one_open(TaskKind::CollectionCall);
    let at = "2026-11-03T10:01:00+08:00";
    let d = a.apply(
        &attempted(
            2,
            at,
            "dial-9",
            "cp-m1",
            json!({"party": "debtor", "result": "connected", "disposition": "dispute"}),
        ),
        at,
    );
    assert_eq!(cancel_reason(&d, &call), "hold:dispute");
    assert!(contacts_planned(&d).is_empty(), "{:#?}", d.schedule);
    assert_eq!(
        only(&d, TaskKind::HoldReview).due_at,
        ts(at) + SignedDuration::from_hours(720)
    );
    assert!(a
        .state()
        .holds
        .iter()
        .any(|h| h.hold_id == "contact:dial-9"));
    // Released by its id, collection resumes.
    let d = a.apply(
        &released(3, "2026-11-10T10:00:00+08:00", "contact:dial-9"),
        "2026-11-10T10:00:00+08:00",
    );
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts("2026-11-10T10:00:00+08:00")
    );
}

// ---------------------------------------------------------------------------------------
// Arrival order
// ---------------------------------------------------------------------------------------

/// Holds and restrictions as recorded, the labels in force, the kinds of open tasks.
type EndState = (String, String, (Vec<String>, Vec<String>), Vec<String>);

/// What two arrival orders must agree on, judged at `at`.
fn end_state(a: &Account, at: &str) -> EndState {
    let s = a.state();
    (
        serde_json::to_string(&s.holds).expect("holds"),
        serde_json::to_string(&s.restrictions).expect("restrictions"),
        s.in_force_labels(ts(at)),
        a.open_kinds(),
    )
}

#[test]
fn a_release_arriving_before_its_placement_ends_as_in_published_order() {
    let place = placed(
        2,
        "2026-11-03T10:05:00+08:00",
        "hold-1",
        "dispute",
        json!("all"),
        None,
        true,
    );
    let release = released(3, "2026-11-03T10:30:00+08:00", "hold-1");
    let mut published = delinquent(Policy::default());
    published.apply(&place, "2026-11-03T10:05:00+08:00");
    published.apply(&release, "2026-11-03T10:30:00+08:00");
    let mut late = delinquent(Policy::default());
    let d = late.apply(&release, "2026-11-03T10:30:00+08:00");
    assert!(journal_has(&d, "not known (yet)"));
    assert!(d.schedule.is_empty() && d.cancel.is_empty());
    let d = late.apply(&place, "2026-11-03T10:35:00+08:00");
    assert!(d.schedule.iter().all(|t| t.kind != TaskKind::HoldReview));
    assert_eq!(
        end_state(&published, "2026-11-03T11:00:00+08:00"),
        end_state(&late, "2026-11-03T11:00:00+08:00")
    );
    assert_eq!(late.open_kinds(), vec!["collection_call".to_owned()]);
    // The held minutes are the same in both: DPD agrees too.
    assert_eq!(
        published.state().dpd(ts("2026-11-10T10:00:00+08:00")),
        late.state().dpd(ts("2026-11-10T10:00:00+08:00"))
    );
}

#[test]
fn a_duplicate_placement_changes_nothing_before_or_after_the_release() {
    let place = placed(
        2,
        "2026-11-03T10:05:00+08:00",
        "hold-1",
        "dispute",
        json!("all"),
        None,
        false,
    );
    let mut a = delinquent(Policy::default());
    a.apply(&place, "2026-11-03T10:05:00+08:00");
    let state = a.state().clone();
    let d = a.apply(&place, "2026-11-03T10:06:00+08:00");
    assert!(d.schedule.is_empty() && d.cancel.is_empty(), "{d:#?}");
    assert!(d.outbox.is_empty());
    assert_eq!(a.state().holds, state.holds);
    assert_eq!(a.open_of(TaskKind::HoldReview).len(), 1);
    a.apply(
        &released(3, "2026-11-04T10:00:00+08:00", "hold-1"),
        "2026-11-04T10:00:00+08:00",
    );
    let after = end_state(&a, "2026-11-04T11:00:00+08:00");
    let d = a.apply(&place, "2026-11-04T10:30:00+08:00");
    assert!(d.schedule.is_empty() && d.cancel.is_empty(), "{d:#?}");
    assert_eq!(end_state(&a, "2026-11-04T11:00:00+08:00"), after);
    assert!(a
        .state()
        .full_hold_at(ts("2026-11-04T11:00:00+08:00"))
        .is_none());
}

#[test]
fn an_unknown_hold_released_is_recorded_and_idempotent() {
    let mut a = delinquent(Policy::default());
    let open = a.open.clone();
    let release = released(2, "2026-11-03T10:30:00+08:00", "hold-never-placed");
    let d = a.apply(&release, "2026-11-03T10:30:00+08:00");
    assert!(d.schedule.is_empty() && d.cancel.is_empty());
    assert!(journal_has(&d, "not known (yet)"));
    let rec = a
        .state()
        .holds
        .iter()
        .find(|h| h.hold_id == "hold-never-placed")
        .expect("recorded")
        .clone();
    assert_eq!(rec.released_at, Some(ts("2026-11-03T10:30:00+08:00")));
    let first = end_state(&a, "2026-11-03T11:00:00+08:00");
    let d = a.apply(&release, "2026-11-03T10:40:00+08:00");
    assert!(d.schedule.is_empty() && d.cancel.is_empty());
    assert_eq!(end_state(&a, "2026-11-03T11:00:00+08:00"), first);
    assert_eq!(a.open, open);
    assert!(first.2 .0.is_empty());
}

#[test]
fn a_lift_arriving_before_its_restriction_ends_as_in_published_order() {
    let restrict = restricted(
        2,
        "2026-11-03T10:05:00+08:00",
        "r-1",
        "do_not_call",
        json!({"channel": "phone_mobile"}),
    );
    let lift = unrestricted(3, "2026-11-03T10:30:00+08:00", "r-1");
    let mut published = delinquent(Policy::default());
    published.apply(&restrict, "2026-11-03T10:05:00+08:00");
    published.apply(&lift, "2026-11-03T10:30:00+08:00");
    let mut late = delinquent(Policy::default());
    let d = late.apply(&lift, "2026-11-03T10:30:00+08:00");
    assert!(journal_has(&d, "not known (yet)"));
    late.apply(&restrict, "2026-11-03T10:35:00+08:00");
    // Applied twice, each changes nothing more.
    late.apply(&lift, "2026-11-03T10:36:00+08:00");
    late.apply(&restrict, "2026-11-03T10:37:00+08:00");
    assert_eq!(
        end_state(&published, "2026-11-03T11:00:00+08:00"),
        end_state(&late, "2026-11-03T11:00:00+08:00")
    );
    assert!(late
        .state()
        .in_force_labels(ts("2026-11-03T11:00:00+08:00"))
        .1
        .is_empty());
}

#[test]
fn agreed_hours_keep_an_open_reminder_before_its_promise() {
    // Reminder at 14:00 for a promise at 15:00 on 2026-11-04; the debtor agrees to
    // 18:00-20:00 the day before. The next agreed minute (18:00 on the 4th) is after the
    // promise: the reminder moves back to the last agreed minute before it instead.
    let mut a = promised(Policy::default());
    let reminder = a.one_open(TaskKind::PromiseReminder);
    let check = a.one_open(TaskKind::PromiseCheck);
    let d = a.apply(
        &restricted(
            3,
            "2026-11-03T10:10:00+08:00",
            "r-hours",
            "agreed_hours",
            json!({"hours": {"start": "18:00", "end": "20:00"}}),
        ),
        "2026-11-03T10:10:00+08:00",
    );
    assert_eq!(cancel_reason(&d, &reminder), "restriction:agreed_hours");
    assert_eq!(cancel_reason(&d, &check), "restriction:agreed_hours");
    assert_eq!(
        only(&d, TaskKind::PromiseReminder).due_at,
        ts("2026-11-03T19:59:00+08:00")
    );
    assert_eq!(
        only(&d, TaskKind::PromiseCheck).due_at,
        ts("2026-11-04T18:00:00+08:00")
    );
    // Agreed too late for any reminder before the promise: none, and the journal says so.
    let mut late = promised(Policy::default());
    let d = late.apply(
        &restricted(
            3,
            "2026-11-03T20:30:00+08:00",
            "r-hours",
            "agreed_hours",
            json!({"hours": {"start": "18:00", "end": "20:00"}}),
        ),
        "2026-11-03T20:30:00+08:00",
    );
    assert!(d
        .schedule
        .iter()
        .all(|t| t.kind != TaskKind::PromiseReminder));
    assert!(late.open_of(TaskKind::PromiseReminder).is_empty());
    assert!(journal_has(&d, "reminder"));
}

// ---------------------------------------------------------------------------------------
// The shipped scenarios (deploy/scenarios), through the simulator
// ---------------------------------------------------------------------------------------

fn scenario(name: &str) -> collections_core::sim::Timeline {
    let path = format!(
        "{}/../../deploy/scenarios/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let s = collections_core::sim::Scenario::from_toml_str(&text)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    collections_core::sim::simulate(&Policy::default(), &s, None)
}

/// The task lines as (state, kind, channel, due instant, reason).
fn lines(t: &collections_core::sim::Timeline) -> Vec<(String, String, String, Timestamp, String)> {
    t.tasks()
        .into_iter()
        .map(|e| {
            (
                e.state.clone(),
                e.kind.clone(),
                e.channel.clone().unwrap_or_default(),
                e.due_at.expect("a task line has a due instant"),
                e.reason.clone(),
            )
        })
        .collect()
}

fn line<'a>(
    l: &'a [(String, String, String, Timestamp, String)],
    state: &str,
    kind: &str,
    due: &str,
) -> &'a (String, String, String, Timestamp, String) {
    l.iter()
        .find(|x| x.0 == state && x.1 == kind && x.3 == ts(due))
        .unwrap_or_else(|| panic!("no {state} {kind} due {due} in {l:#?}"))
}

/// Customer contacts that fired between `from` and `to`.
fn contacts_fired(t: &collections_core::sim::Timeline, from: &str, to: &str) -> usize {
    t.tasks()
        .into_iter()
        .filter(|e| e.state == "due" && e.kind != "hold_review")
        .filter(|e| e.at > ts(from) && e.at < ts(to))
        .count()
}

#[test]
fn simulated_dispute_stops_contact_fires_its_review_and_calls_resume_on_release() {
    let t = scenario("hold-dispute-placed-and-resolved");
    let l = lines(&t);
    assert_eq!(
        line(
            &l,
            "cancelled",
            "collection_call",
            "2026-11-03T13:00:00+08:00"
        )
        .4,
        "hold:dispute"
    );
    line(&l, "scheduled", "hold_review", "2026-11-06T10:00:00+08:00");
    line(&l, "due", "hold_review", "2026-11-06T10:00:00+08:00");
    assert_eq!(
        contacts_fired(&t, "2026-11-03T11:30:00+08:00", "2026-11-06T14:00:00+08:00"),
        0
    );
    let resumed = line(&l, "due", "collection_call", "2026-11-06T14:00:00+08:00");
    assert!(resumed.4.contains("collection resumes"), "{}", resumed.4);
    line(&l, "due", "collection_call", "2026-11-06T17:00:00+08:00");
}

#[test]
fn simulated_hardship_with_pause_dpd_keeps_the_bucket_until_release() {
    let t = scenario("hold-hardship-pause-dpd");
    let l = lines(&t);
    assert_eq!(
        line(
            &l,
            "cancelled",
            "collection_call",
            "2026-11-03T13:00:00+08:00"
        )
        .4,
        "hold:hardship"
    );
    let tasks = t.tasks();
    let at = |state: &str, kind: &str, due: &str| {
        tasks
            .iter()
            .find(|e| e.state == state && e.kind == kind && e.due_at == Some(ts(due)))
            .map(|e| (e.bucket.clone().unwrap_or_default(), e.dpd.unwrap_or(-1)))
            .unwrap_or_else(|| panic!("no {state} {kind} due {due}"))
    };
    // Placed at DPD 24 (M1); reviewed 14 days later, still 24; released three days
    // after that, still 24; then it runs again and crosses into M2 a week later.
    assert_eq!(
        at("due", "hold_review", "2026-11-17T10:30:00+08:00"),
        ("M1".to_owned(), 24)
    );
    assert_eq!(
        at("due", "collection_call", "2026-11-20T10:00:00+08:00"),
        ("M1".to_owned(), 24)
    );
    assert_eq!(
        at("due", "collection_call", "2026-11-21T10:00:00+08:00"),
        ("M1".to_owned(), 25)
    );
    assert_eq!(
        at("due", "collection_call", "2026-11-27T10:00:00+08:00"),
        ("M2".to_owned(), 31)
    );
    assert_eq!(
        contacts_fired(&t, "2026-11-03T10:30:00+08:00", "2026-11-20T10:00:00+08:00"),
        0
    );
}

#[test]
fn simulated_sms_opt_out_moves_the_pre_due_reminder_to_the_phone() {
    let t = scenario("opt-out-sms-reminders-move-to-phone");
    let l = lines(&t);
    let due = "2026-11-26T10:00:00+08:00";
    assert_eq!(line(&l, "scheduled", "pre_due_reminder", due).2, "sms");
    let gone = line(&l, "cancelled", "pre_due_reminder", due);
    assert_eq!(
        (gone.2.as_str(), gone.4.as_str()),
        ("sms", "restriction:opt_out:sms")
    );
    let fired: Vec<_> = l
        .iter()
        .filter(|x| x.0 == "due" && x.1 == "pre_due_reminder")
        .collect();
    assert_eq!(fired.len(), 1, "{l:#?}");
    assert_eq!((fired[0].2.as_str(), fired[0].3), ("phone_mobile", ts(due)));
}

#[test]
fn simulated_agreed_hours_keep_every_contact_between_six_and_eight_pm() {
    let t = scenario("agreed-hours-18-20");
    let l = lines(&t);
    assert_eq!(
        line(
            &l,
            "cancelled",
            "collection_call",
            "2026-11-03T13:00:00+08:00"
        )
        .4,
        "restriction:agreed_hours"
    );
    line(&l, "due", "collection_call", "2026-11-03T18:00:00+08:00");
    line(&l, "due", "promise_reminder", "2026-11-04T19:59:00+08:00");
    line(
        &l,
        "scheduled",
        "promise_check",
        "2026-11-05T18:00:00+08:00",
    );
    // Everything that fired after the restriction fired inside 18:00-20:00.
    let after: Vec<_> = t
        .tasks()
        .into_iter()
        .filter(|e| e.state == "due" && e.at > ts("2026-11-03T10:30:00+08:00"))
        .collect();
    assert!(after.len() >= 4, "{after:#?}");
    for e in after {
        let h = local(e.at).time();
        assert!(h >= hm(18, 0) && h < hm(20, 0), "{} fired at {h}", e.kind);
    }
}

/// A release dated ahead of the moment it is applied (billing closed the hold for a later
/// instant) ends the hold at that instant. In either arrival order the account is not left
/// without a next step: the collection call waits for the hold's end, and no review stays.
#[test]
fn a_release_dated_ahead_resumes_collection_at_its_instant_in_either_order() {
    let place = || {
        placed(
            2,
            "2026-11-03T10:05:00+08:00",
            "hold-1",
            "dispute",
            json!("all"),
            None,
            false,
        )
    };
    let release = || {
        event(
            "hold.released",
            3,
            "2026-11-03T10:05:10+08:00",
            json!({"account_id": ACC, "hold_id": "hold-1", "outcome": "resolved",
                   "released_at": "2026-11-03T10:30:00+08:00", "released_by": "desk-7"}),
        )
    };
    let published = {
        let mut a = delinquent(Policy::default());
        a.apply(&place(), "2026-11-03T10:05:00+08:00");
        a.apply(&release(), "2026-11-03T10:05:20+08:00");
        a
    };
    let reversed = {
        let mut a = delinquent(Policy::default());
        a.apply(&release(), "2026-11-03T10:05:10+08:00");
        a.apply(&place(), "2026-11-03T10:05:20+08:00");
        a
    };
    for (order, a) in [("published", &published), ("reversed", &reversed)] {
        let calls = a.open_of(TaskKind::CollectionCall);
        assert_eq!(calls.len(), 1, "{order}: {:?}", a.open_kinds());
        assert_eq!(calls[0].due_at, ts("2026-11-03T10:30:00+08:00"), "{order}");
        assert!(a.open_of(TaskKind::HoldReview).is_empty(), "{order}");
        assert_eq!(
            a.open_kinds(),
            vec!["collection_call".to_owned()],
            "{order}"
        );
    }
}

/// The account state is stored as JSON between events: a hold of scope `all` must read
/// back as one (it once came back without a scope, and then stopped nothing).
#[test]
fn a_full_hold_survives_the_state_round_trip_through_storage() {
    for scope in [json!("all"), json!(["sms", "phone_work"])] {
        let mut a = delinquent(Policy::default());
        let now = "2026-11-03T10:05:00+08:00";
        a.apply(
            &placed(2, now, "hold-1", "dispute", scope.clone(), None, false),
            now,
        );
        let stored = serde_json::to_value(a.state()).expect("serialise state");
        let hold = &stored["holds"][0];
        assert_eq!(hold["scope"], scope, "{stored:#}");
        let back: AccountState = serde_json::from_value(stored).expect("read state back");
        assert_eq!(&back, a.state());
        assert_eq!(
            back.full_hold_at(ts(now)).is_some(),
            scope == json!("all"),
            "scope {scope}"
        );
    }
}
