//! Each policy key changes what is planned (not only that it parses), invalid files are
//! refused naming the key, and the shipped scenarios run in the simulator.
//!
//! Every instant is fixed: no test reads the clock.

use collections_core::{
    decide, fire, on_call_fired,
    policy::{Policy, DEFAULT_POLICY_TOML, US_REG_F_POLICY_TOML},
    sim::{simulate, Scenario},
    AccountState, Channel, Decision, Event, FireOutcome, Task, TaskKind, Tone,
};
use jiff::{tz::TimeZone, SignedDuration, Timestamp};
use serde_json::{json, Value};
use uuid::Uuid;

const ACC: &str = "acc-pol-1";
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

fn refused(replacements: &[(&str, &str)]) -> collections_core::policy::PolicyError {
    let mut text = DEFAULT_POLICY_TOML.to_owned();
    for (from, to) in replacements {
        assert!(text.contains(from), "default.toml has no {from:?}");
        text = text.replacen(from, to, 1);
    }
    Policy::from_toml_str(&text).expect_err("the policy should be refused")
}

fn event(ty: &str, n: u32, time: &str, data: Value) -> Event {
    let body = json!({
        "specversion": "1.0", "id": format!("00000000-0000-4000-8000-{n:012x}"),
        "source": "/tests/policy", "type": ty, "time": time, "subject": ACC,
        "datacontenttype": "application/json", "data": data,
    });
    collections_core::parse_event(&serde_json::to_vec(&body).expect("json"), None)
        .unwrap_or_else(|e| panic!("event refused: {e}"))
}

fn cny(minor: i64) -> Value {
    json!({"minor": minor, "currency": "CNY"})
}

fn failed(n: u32, time: &str, number: u32, due: &str, overdue: i64) -> Event {
    event(
        "payment.failed",
        n,
        time,
        json!({"account_id": ACC, "customer": {"timezone": SHANGHAI},
               "installment": {"number": number, "due_date": due, "amount": cny(overdue)},
               "overdue_amount": cny(overdue), "failure_reason": "insufficient_funds",
               "attempted_at": time}),
    )
}

fn promise(n: u32, time: &str, id: &str, at: &str) -> Event {
    event(
        "promise.made",
        n,
        time,
        json!({"account_id": ACC, "promise_id": id, "amount": cny(100_000), "promised_at": at,
               "captured_by": "agent-1", "channel": "phone_mobile"}),
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

fn paid(n: u32, time: &str, minor: i64, after: Option<i64>, next_due: Option<&str>) -> Event {
    let mut d = json!({"account_id": ACC, "payment_id": format!("pay-{n}"), "amount": cny(minor),
                       "received_at": time});
    if let Some(a) = after {
        d["overdue_amount_after"] = cny(a);
    }
    if let Some(nd) = next_due {
        d["next_due_date"] = json!(nd);
    }
    event("payment.received", n, time, d)
}

/// One account as the shell keeps it.
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

    fn apply(&mut self, e: &Event, now: &str) -> Decision {
        let d = decide(self.state.as_ref(), &self.open, e, &self.policy, ts(now))
            .unwrap_or_else(|e| panic!("domain error: {e}"));
        self.keep(&d);
        d
    }

    fn keep(&mut self, d: &Decision) {
        self.open
            .retain(|t| !d.cancel.iter().any(|c| c.task_id == t.task_id));
        self.open.extend(d.schedule.iter().cloned());
        self.state = Some(d.state.clone());
    }

    /// Fires the open task of `kind` at `now` as the scheduler does.
    fn fire(&mut self, kind: TaskKind, now: &str) -> Decision {
        let i = self
            .open
            .iter()
            .position(|t| t.kind == kind)
            .unwrap_or_else(|| panic!("no open {kind}"));
        let t = self.open.remove(i);
        let state = self.state.clone().expect("state");
        let FireOutcome::Due { message, follow_up } = fire(&t, Some(&state), &self.policy, ts(now))
        else {
            panic!("{kind} did not fire at {now}");
        };
        assert!(follow_up);
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
}

fn only(d: &Decision, kind: TaskKind) -> &Task {
    let v: Vec<&Task> = d.schedule.iter().filter(|t| t.kind == kind).collect();
    assert_eq!(v.len(), 1, "expected one {kind}: {:#?}", d.schedule);
    v[0]
}

fn none_of(d: &Decision, kind: TaskKind) {
    assert!(
        d.schedule.iter().all(|t| t.kind != kind),
        "unexpected {kind}: {:#?}",
        d.schedule
    );
}

/// A later instalment failed at `now` (no first-instalment default).
fn delinquent(policy: Policy, now: &str) -> (Account, Decision) {
    let mut a = Account::new(policy);
    let d = a.apply(&failed(1, now, 3, "2026-11-03", 125_000), now);
    (a, d)
}

// ---------------------------------------------------------------------------------------
// default_timezone
// ---------------------------------------------------------------------------------------

/// A later instalment failed at `now` for a customer whose event names no zone.
fn delinquent_without_zone(policy: Policy, now: &str) -> (Account, Decision) {
    let mut a = Account::new(policy);
    let d = a.apply(
        &event(
            "payment.failed",
            1,
            now,
            json!({"account_id": ACC, "customer": {},
                   "installment": {"number": 3, "due_date": "2026-11-03", "amount": cny(125_000)},
                   "overdue_amount": cny(125_000), "failure_reason": "insufficient_funds",
                   "attempted_at": now}),
        ),
        now,
    );
    (a, d)
}

#[test]
fn default_timezone_decides_the_call_time_of_a_customer_with_no_zone() {
    // 22:00 in Shanghai is 14:00 in London (GMT in November).
    let now = "2026-11-03T22:00:00+08:00";
    let (a, d) = delinquent_without_zone(Policy::default(), now);
    assert_eq!(a.state().timezone, SHANGHAI);
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts("2026-11-04T08:00:00+08:00"),
        "after 21:00 in Shanghai: the next morning"
    );
    let london = policy(&[(
        "default_timezone = \"Asia/Shanghai\"",
        "default_timezone = \"Europe/London\"",
    )]);
    let (a, d) = delinquent_without_zone(london.clone(), now);
    assert_eq!(a.state().timezone, "Europe/London");
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts(now),
        "14:00 in London: at once"
    );
    // A zone named by the event wins over the default.
    let (a, d) = delinquent(london, now);
    assert_eq!(a.state().timezone, SHANGHAI);
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts("2026-11-04T08:00:00+08:00")
    );
}

// ---------------------------------------------------------------------------------------
// contact_window
// ---------------------------------------------------------------------------------------

#[test]
fn contact_window_end_moves_a_late_call() {
    // 20:45: inside the default 08:00-21:00, outside with an end of 20:30.
    let now = "2026-11-03T20:45:00+08:00";
    let (_, d) = delinquent(Policy::default(), now);
    assert_eq!(only(&d, TaskKind::CollectionCall).due_at, ts(now));
    let (_, d) = delinquent(policy(&[("end = \"21:00\"", "end = \"20:30\"")]), now);
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts("2026-11-04T08:00:00+08:00")
    );
    // 21:30: the default moves it to the next morning; an end of 22:00 calls at once.
    let now = "2026-11-03T21:30:00+08:00";
    let (_, d) = delinquent(Policy::default(), now);
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts("2026-11-04T08:00:00+08:00")
    );
    let (_, d) = delinquent(policy(&[("end = \"21:00\"", "end = \"22:00\"")]), now);
    assert_eq!(only(&d, TaskKind::CollectionCall).due_at, ts(now));
}

#[test]
fn a_task_moved_at_firing_takes_the_rank_of_its_new_day() {
    // A reminder for tomorrow's promise that came due late tonight (an outage): it moves
    // to tomorrow 08:00, the promise's day, and ranks as "promise due today" there.
    let p = Policy::default();
    let (mut a, _) = delinquent(p.clone(), "2026-11-03T10:00:00+08:00");
    a.apply(
        &promise(
            2,
            "2026-11-03T10:10:00+08:00",
            "ptp-1",
            "2026-11-04T15:00:00+08:00",
        ),
        "2026-11-03T10:10:00+08:00",
    );
    let state = a.state().clone();
    let mut late = a
        .open
        .iter()
        .find(|t| t.kind == TaskKind::PromiseReminder)
        .expect("a reminder")
        .clone();
    late.due_at = ts("2026-11-03T21:30:00+08:00");
    late.priority = collections_core::priority_at(&state, &p, late.due_at);
    let morning = ts("2026-11-04T08:00:00+08:00");
    let promise_day = collections_core::priority_at(&state, &p, morning);
    assert!(
        promise_day < late.priority,
        "the promise's day ranks higher"
    );
    match fire(&late, Some(&state), &p, late.due_at) {
        FireOutcome::Moved {
            task,
            message,
            journal,
        } => {
            assert_eq!(task.due_at, morning);
            assert_eq!(task.priority, promise_day);
            let body: Value = serde_json::from_slice(&message.body).expect("json");
            assert_eq!(body["data"]["priority"], json!(promise_day));
            assert!(
                journal
                    .detail
                    .contains(&format!("priority {} -> {promise_day}", late.priority)),
                "{}",
                journal.detail
            );
        }
        other => panic!("expected a move, got {other:?}"),
    }
}

#[test]
fn contact_window_start_moves_an_early_call() {
    let now = "2026-11-03T08:30:00+08:00";
    let (_, d) = delinquent(Policy::default(), now);
    assert_eq!(only(&d, TaskKind::CollectionCall).due_at, ts(now));
    let (_, d) = delinquent(policy(&[("start = \"08:00\"", "start = \"09:00\"")]), now);
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts("2026-11-03T09:00:00+08:00")
    );
}

#[test]
fn contact_window_holiday_skips_the_whole_day() {
    let now = "2026-11-03T22:00:00+08:00";
    let (_, d) = delinquent(Policy::default(), now);
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts("2026-11-04T08:00:00+08:00")
    );
    let (_, d) = delinquent(
        policy(&[("holidays = []", "holidays = [\"2026-11-04\"]")]),
        now,
    );
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts("2026-11-05T08:00:00+08:00")
    );
}

#[test]
fn contact_window_weekday_override_and_closed_weekday() {
    // 2026-11-07 is a Saturday, 2026-11-08 a Sunday.
    let now = "2026-11-06T22:00:00+08:00";
    let p = policy(&[
        (
            "weekdays = {}",
            "weekdays = { saturday = { start = \"10:30\", end = \"16:00\" } }",
        ),
        ("closed_weekdays = []", "closed_weekdays = [\"sunday\"]"),
    ]);
    let (_, d) = delinquent(p.clone(), now);
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts("2026-11-07T10:30:00+08:00")
    );
    let (_, d) = delinquent(p, "2026-11-07T17:00:00+08:00");
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts("2026-11-09T08:00:00+08:00"),
        "Saturday closes at 16:00 and Sunday is closed"
    );
}

// ---------------------------------------------------------------------------------------
// promise
// ---------------------------------------------------------------------------------------

#[test]
fn promise_timings_follow_the_policy() {
    let now = "2026-11-03T10:00:00+08:00";
    let at = "2026-11-04T15:00:00+08:00";
    let p = policy(&[
        ("reminder_before = \"1h\"", "reminder_before = \"30m\""),
        ("check_after = \"1h\"", "check_after = \"2h\""),
        ("grace = \"2h\"", "grace = \"4h\""),
        (
            "reminder_channel = \"phone_mobile\"",
            "reminder_channel = \"sms\"",
        ),
        (
            "check_channel = \"phone_mobile\"",
            "check_channel = \"phone_work\"",
        ),
    ]);
    let (mut a, _) = delinquent(p, now);
    let d = a.apply(&promise(2, now, "ptp-1", at), now);
    let r = only(&d, TaskKind::PromiseReminder);
    assert_eq!(r.due_at, ts("2026-11-04T14:30:00+08:00"));
    assert_eq!(r.channel, Channel::Sms);
    let c = only(&d, TaskKind::PromiseCheck);
    assert_eq!(c.due_at, ts("2026-11-04T17:00:00+08:00"));
    assert_eq!(c.channel, Channel::PhoneWork);
    assert_eq!(
        only(&d, TaskKind::PromiseExpiry).due_at,
        ts("2026-11-04T19:00:00+08:00")
    );
}

#[test]
fn promise_grace_decides_whether_a_late_payment_keeps_the_promise() {
    // The promised amount arrives 90 minutes after the promised 15:00.
    let late_payment = |p: Policy| {
        let now = "2026-11-03T10:00:00+08:00";
        let (mut a, _) = delinquent(p, now);
        a.apply(&promise(2, now, "ptp-1", "2026-11-04T15:00:00+08:00"), now);
        let check = a
            .open
            .iter()
            .find(|t| t.kind == TaskKind::PromiseCheck)
            .expect("a check")
            .task_id;
        let d = a.apply(
            &paid(3, "2026-11-04T16:30:00+08:00", 100_000, None, None),
            "2026-11-04T16:30:00+08:00",
        );
        (d, check)
    };
    // Within the default 2 h: kept, its check cancelled.
    let (d, check) = late_payment(Policy::default());
    assert!(d.journal.iter().any(|j| j.kind == "promise_kept"));
    assert!(d.cancel.iter().any(|c| c.task_id == check));
    // A 1 h grace has passed: not kept, the check stays.
    let (d, _) = late_payment(policy(&[("grace = \"2h\"", "grace = \"1h\"")]));
    assert!(d.journal.iter().all(|j| j.kind != "promise_kept"));
    assert!(d.cancel.is_empty(), "{:?}", d.cancel);
}

#[test]
fn promise_max_horizon_decides_the_supervisor_review() {
    let now = "2026-11-03T10:00:00+08:00";
    let at = "2026-11-06T10:00:00+08:00";
    let (mut a, _) = delinquent(Policy::default(), now);
    let d = a.apply(&promise(2, now, "ptp-1", at), now);
    only(&d, TaskKind::SupervisorReview);
    let (mut a, _) = delinquent(
        policy(&[("max_horizon = \"48h\"", "max_horizon = \"96h\"")]),
        now,
    );
    let d = a.apply(&promise(2, now, "ptp-1", at), now);
    none_of(&d, TaskKind::SupervisorReview);
}

// ---------------------------------------------------------------------------------------
// cadence and channel_mix
// ---------------------------------------------------------------------------------------

#[test]
fn cadence_hours_choose_the_next_attempt() {
    let now = "2026-11-03T10:00:00+08:00";
    let (mut a, _) = delinquent(Policy::default(), now);
    let d = a.fire(TaskKind::CollectionCall, now);
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts("2026-11-03T13:00:00+08:00")
    );
    let (mut a, _) = delinquent(
        policy(&[(
            "hours = [\"10:00\", \"13:00\", \"17:00\", \"20:00\"]",
            "hours = [\"09:00\", \"15:30\"]",
        )]),
        now,
    );
    let d = a.fire(TaskKind::CollectionCall, now);
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts("2026-11-03T15:30:00+08:00")
    );
}

#[test]
fn cadence_attempts_per_day_and_days_between_attempts_push_to_a_later_day() {
    let now = "2026-11-03T10:00:00+08:00";
    let (mut a, _) = delinquent(
        policy(&[("attempts_per_day = 3", "attempts_per_day = 1")]),
        now,
    );
    let d = a.fire(TaskKind::CollectionCall, now);
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts("2026-11-04T10:00:00+08:00")
    );
    // The instalment was due 2026-11-03: DPD 0 -> bucket M0.
    let (mut a, _) = delinquent(
        policy(&[
            ("attempts_per_day = 3", "attempts_per_day = 1"),
            ("M0 = 1,", "M0 = 3,"),
        ]),
        now,
    );
    let d = a.fire(TaskKind::CollectionCall, now);
    let t = only(&d, TaskKind::CollectionCall);
    assert_eq!(t.due_at, ts("2026-11-06T10:00:00+08:00"));
    assert!(t.reason.contains("every 3 days"), "{}", t.reason);
}

#[test]
fn cadence_days_between_attempts_is_read_for_the_accounts_bucket() {
    let now = "2026-11-03T10:00:00+08:00";
    // Due dates putting the account in each bucket on 2026-11-03 (DPD 0, 14, 44, 75, 125).
    let buckets = [
        ("M0", "M0 = 1,", "M0 = 4,", "2026-11-03"),
        ("M1", "M1 = 1,", "M1 = 4,", "2026-10-20"),
        ("M2", "M2 = 1,", "M2 = 4,", "2026-09-20"),
        ("M3", "M3 = 1,", "M3 = 4,", "2026-08-20"),
        ("M3+", "\"M3+\" = 1 }", "\"M3+\" = 4 }", "2026-07-01"),
    ];
    for (changed, from, to, _) in buckets {
        let p = policy(&[("attempts_per_day = 3", "attempts_per_day = 1"), (from, to)]);
        for (bucket, _, _, due) in buckets {
            let mut a = Account::new(p.clone());
            a.apply(&failed(1, now, 3, due, 125_000), now);
            let d = a.fire(TaskKind::CollectionCall, now);
            let want = if bucket == changed {
                "2026-11-07T10:00:00+08:00"
            } else {
                "2026-11-04T10:00:00+08:00"
            };
            assert_eq!(
                only(&d, TaskKind::CollectionCall).due_at,
                ts(want),
                "{bucket} account with {changed} set to 4 days"
            );
        }
    }
}

#[test]
fn channel_mix_picks_the_phone_of_each_attempt() {
    let now = "2026-11-03T10:00:00+08:00";
    let (mut a, _) = delinquent(
        policy(&[
            ("phone_mobile = 0.75", "phone_mobile = 0.0"),
            ("phone_work = 0.15", "phone_work = 0.90"),
        ]),
        now,
    );
    let d = a.fire(TaskKind::CollectionCall, now);
    assert_eq!(
        only(&d, TaskKind::CollectionCall).channel,
        Channel::PhoneWork
    );
}

#[test]
fn channel_mix_also_picks_the_phone_of_the_first_call() {
    let now = "2026-11-03T10:00:00+08:00";
    let (_, d) = delinquent(
        policy(&[
            ("phone_mobile = 0.75", "phone_mobile = 0.0"),
            ("phone_work = 0.15", "phone_work = 0.90"),
        ]),
        now,
    );
    assert_eq!(
        only(&d, TaskKind::CollectionCall).channel,
        Channel::PhoneWork,
        "no mobile share: not even the first call goes to the mobile"
    );
}

#[test]
fn cadence_attempts_per_day_also_holds_for_a_call_a_broken_promise_plans() {
    // Three attempts fired on 11-03 (the daily cap), then a promise is made and broken the
    // same evening: the escalated call waits for tomorrow's first cadence hour.
    let (mut a, _) = delinquent(Policy::default(), "2026-11-03T09:00:00+08:00");
    for _ in 0..3 {
        let due = a
            .open
            .iter()
            .find(|t| t.kind == TaskKind::CollectionCall)
            .expect("an open call")
            .due_at;
        a.fire(TaskKind::CollectionCall, &due.to_string());
    }
    assert_eq!(a.state().calls_today, 3);
    a.apply(
        &promise(
            7,
            "2026-11-03T18:00:00+08:00",
            "ptp-1",
            "2026-11-03T19:00:00+08:00",
        ),
        "2026-11-03T18:00:00+08:00",
    );
    let d = a.apply(
        &broken(8, "2026-11-03T19:30:00+08:00", "ptp-1"),
        "2026-11-03T19:30:00+08:00",
    );
    let call = only(&d, TaskKind::CollectionCall);
    assert_eq!(call.due_at, ts("2026-11-04T10:00:00+08:00"));
    assert!(
        call.reason.contains("daily attempt cap of 3 reached"),
        "{}",
        call.reason
    );
    // With a cap of 4 the same call goes out at once.
    let (mut b, _) = delinquent(
        policy(&[("attempts_per_day = 3", "attempts_per_day = 4")]),
        "2026-11-03T09:00:00+08:00",
    );
    for _ in 0..3 {
        let due = b
            .open
            .iter()
            .find(|t| t.kind == TaskKind::CollectionCall)
            .expect("an open call")
            .due_at;
        b.fire(TaskKind::CollectionCall, &due.to_string());
    }
    b.apply(
        &promise(
            7,
            "2026-11-03T18:00:00+08:00",
            "ptp-1",
            "2026-11-03T19:00:00+08:00",
        ),
        "2026-11-03T18:00:00+08:00",
    );
    let d = b.apply(
        &broken(8, "2026-11-03T19:30:00+08:00", "ptp-1"),
        "2026-11-03T19:30:00+08:00",
    );
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts("2026-11-03T19:30:00+08:00")
    );
}

/// Fires each call at its due instant until attempt `last` is planned: (attempt, phone).
fn attempts_up_to(p: Policy, last: u32) -> Vec<(u32, Channel)> {
    let (mut a, d) = delinquent(p, "2026-11-03T10:00:00+08:00");
    let first = only(&d, TaskKind::CollectionCall);
    let mut out = vec![(first.attempt, first.channel)];
    while out.last().is_some_and(|(n, _)| *n < last) {
        let due = a
            .open
            .iter()
            .find(|t| t.kind == TaskKind::CollectionCall)
            .expect("an open call")
            .due_at;
        let d = a.fire(TaskKind::CollectionCall, &due.to_string());
        let t = only(&d, TaskKind::CollectionCall);
        out.push((t.attempt, t.channel));
    }
    out
}

#[test]
fn channel_mix_phone_home_takes_the_ninth_attempt() {
    use Channel::{PhoneHome as H, PhoneMobile as M, PhoneWork as W};
    // The golden-ratio sequence over 75/15/10: attempt 4 lands in the work share, attempt
    // 9 (0.944) in the home share.
    let got = attempts_up_to(Policy::default(), 9);
    let want: Vec<(u32, Channel)> = (1..=9).zip([M, M, M, W, M, M, M, M, H]).collect();
    assert_eq!(got, want);
    // Without a home share attempt 9 goes to the work phone; the rest is unchanged.
    let got = attempts_up_to(
        policy(&[
            ("phone_work = 0.15", "phone_work = 0.25"),
            ("phone_home = 0.10", "phone_home = 0.0"),
        ]),
        9,
    );
    let want: Vec<(u32, Channel)> = (1..=9).zip([M, M, M, W, M, M, M, M, W]).collect();
    assert_eq!(got, want);
    // A larger home share takes attempt 4 as well (0.854 >= 0.75).
    let got = attempts_up_to(
        policy(&[
            ("phone_mobile = 0.75", "phone_mobile = 0.70"),
            ("phone_work = 0.15", "phone_work = 0.05"),
            ("phone_home = 0.10", "phone_home = 0.25"),
        ]),
        4,
    );
    assert_eq!(got[3], (4, H));
}

// ---------------------------------------------------------------------------------------
// escalation
// ---------------------------------------------------------------------------------------

#[test]
fn escalation_by_broken_promises_sets_tone_and_opens_tasks() {
    let now = "2026-11-04T10:00:00+08:00";
    let p = policy(&[(
        "from = 1\ntone = \"firm\"",
        "from = 1\ntone = \"serious\"\nopen = [\"formal_letter\", \"supervisor_review\"]",
    )]);
    let (mut a, _) = delinquent(p, "2026-11-03T10:00:00+08:00");
    let d = a.apply(&broken(2, now, "ptp-1"), now);
    assert_eq!(only(&d, TaskKind::CollectionCall).tone, Tone::Serious);
    let letter = only(&d, TaskKind::FormalLetter);
    assert_eq!(letter.channel, Channel::Letter);
    assert_eq!(only(&d, TaskKind::SupervisorReview).channel, Channel::None);
}

/// Promises broken one after another (ids never seen: recorded as broken); the decision
/// of each.
fn broken_in_a_row(p: Policy, n: u32) -> Vec<Decision> {
    let (mut a, _) = delinquent(p, "2026-11-03T10:00:00+08:00");
    (1..=n)
        .map(|i| {
            let now = format!("2026-11-04T{:02}:00:00+08:00", 9 + i);
            a.apply(&broken(1 + i, &now, &format!("ptp-{i}")), &now)
        })
        .collect()
}

/// Edits of the default policy that open a third-party call from the second broken
/// promise, as the sources do.
const SOURCES_LADDER: &[(&str, &str)] = &[
    (
        "from = 2\ntone = \"serious\"\n",
        "from = 2\ntone = \"serious\"\nopen = [\"third_party_call\"]\n",
    ),
    (
        "open = [\"field_visit\"]",
        "open = [\"third_party_call\", \"field_visit\"]",
    ),
];

#[test]
fn escalation_step_from_decides_at_which_broken_promise_tasks_open() {
    // The default ladder opens no third-party call (domain rule 8: only when contact is
    // lost); the sources' ladder, which opens one at the second broken promise, is a
    // policy choice.
    let d = broken_in_a_row(Policy::default(), 3);
    for x in &d {
        none_of(x, TaskKind::ThirdPartyCall);
    }
    only(&d[2], TaskKind::FieldVisit);
    let d = broken_in_a_row(policy(SOURCES_LADDER), 3);
    none_of(&d[0], TaskKind::ThirdPartyCall);
    assert_eq!(only(&d[1], TaskKind::CollectionCall).tone, Tone::Serious);
    only(&d[1], TaskKind::ThirdPartyCall);
    only(&d[2], TaskKind::FieldVisit);
    // Each step one broken promise later: the second is only firm and opens nothing, the
    // third opens the third-party call, the fourth the visit.
    let mut edits = SOURCES_LADDER.to_vec();
    edits.extend([("from = 3", "from = 4"), ("from = 2", "from = 3")]);
    let later = policy(&edits);
    let d = broken_in_a_row(later, 4);
    assert_eq!(only(&d[1], TaskKind::CollectionCall).tone, Tone::Firm);
    none_of(&d[1], TaskKind::ThirdPartyCall);
    assert_eq!(only(&d[2], TaskKind::CollectionCall).tone, Tone::Serious);
    only(&d[2], TaskKind::ThirdPartyCall);
    none_of(&d[2], TaskKind::FieldVisit);
    only(&d[3], TaskKind::FieldVisit);
    // The first step moved to 2: the first broken promise leaves the tone gentle.
    let d = broken_in_a_row(
        policy(&[
            ("from = 3", "from = 4"),
            ("from = 2", "from = 3"),
            ("from = 1", "from = 2"),
        ]),
        2,
    );
    assert_eq!(only(&d[0], TaskKind::CollectionCall).tone, Tone::Gentle);
    assert_eq!(only(&d[1], TaskKind::CollectionCall).tone, Tone::Firm);
}

#[test]
fn escalation_by_bucket_raises_tone_and_opens_once_per_step() {
    // Due 2026-09-20: on 2026-11-03 the account is 44 DPD, bucket M2.
    let p = policy(&[(
        "by_bucket = []",
        "by_bucket = [{ from = \"M2\", tone = \"firm\", open = [\"field_visit\"] }]",
    )]);
    let now = "2026-11-03T10:00:00+08:00";
    let mut a = Account::new(p);
    let d = a.apply(&failed(1, now, 3, "2026-09-20", 125_000), now);
    assert_eq!(only(&d, TaskKind::CollectionCall).tone, Tone::Firm);
    assert!(d.outbox[0].json()["data"]["account"]["bucket"] == "M2");
    only(&d, TaskKind::FieldVisit);
    // The visit fires; the next call does not open another one for the same step.
    a.open.retain(|t| t.kind != TaskKind::FieldVisit);
    let d = a.fire(TaskKind::CollectionCall, now);
    none_of(&d, TaskKind::FieldVisit);
    // The default ladder has no bucket steps: gentle, nothing extra.
    let mut a = Account::new(Policy::default());
    let d = a.apply(&failed(1, now, 3, "2026-09-20", 125_000), now);
    assert_eq!(only(&d, TaskKind::CollectionCall).tone, Tone::Gentle);
    none_of(&d, TaskKind::FieldVisit);
}

// ---------------------------------------------------------------------------------------
// caps
// ---------------------------------------------------------------------------------------

fn capped_policy() -> Policy {
    policy(&[
        ("max_call_attempts = 0", "max_call_attempts = 3"),
        ("window_days = 7", "window_days = 2"),
    ])
}

#[test]
fn caps_max_call_attempts_defers_the_next_call_and_says_so() {
    let now = "2026-11-03T10:00:00+08:00";
    let (mut a, _) = delinquent(capped_policy(), now);
    a.fire(TaskKind::CollectionCall, now);
    a.fire(TaskKind::CollectionCall, "2026-11-03T13:00:00+08:00");
    let d = a.fire(TaskKind::CollectionCall, "2026-11-03T17:00:00+08:00");
    // Three attempts within 2 days: the fourth waits until the first leaves the window.
    let t = only(&d, TaskKind::CollectionCall);
    assert_eq!(t.due_at, ts("2026-11-05T10:00:00+08:00"));
    assert!(
        t.reason.contains("at most 3 call attempts in 2 days"),
        "{}",
        t.reason
    );
    // Without caps it is tomorrow's first cadence hour.
    let (mut a, _) = delinquent(Policy::default(), now);
    a.fire(TaskKind::CollectionCall, now);
    a.fire(TaskKind::CollectionCall, "2026-11-03T13:00:00+08:00");
    let d = a.fire(TaskKind::CollectionCall, "2026-11-03T17:00:00+08:00");
    assert_eq!(
        only(&d, TaskKind::CollectionCall).due_at,
        ts("2026-11-04T10:00:00+08:00")
    );
}

#[test]
fn caps_window_days_sets_how_long_the_cap_holds() {
    // The same three calls on 2026-11-03 under a 3-call cap: the fourth waits until the
    // first (10:00) leaves a 2-day, then a 5-day window.
    let fourth = |p: Policy| {
        let now = "2026-11-03T10:00:00+08:00";
        let (mut a, _) = delinquent(p, now);
        a.fire(TaskKind::CollectionCall, now);
        a.fire(TaskKind::CollectionCall, "2026-11-03T13:00:00+08:00");
        let d = a.fire(TaskKind::CollectionCall, "2026-11-03T17:00:00+08:00");
        only(&d, TaskKind::CollectionCall).clone()
    };
    let t = fourth(capped_policy());
    assert_eq!(t.due_at, ts("2026-11-05T10:00:00+08:00"));
    let t = fourth(policy(&[
        ("max_call_attempts = 0", "max_call_attempts = 3"),
        ("window_days = 7", "window_days = 5"),
    ]));
    assert_eq!(t.due_at, ts("2026-11-08T10:00:00+08:00"));
    assert!(
        t.reason.contains("at most 3 call attempts in 5 days"),
        "{}",
        t.reason
    );
}

#[test]
fn caps_are_checked_again_when_a_call_comes_due() {
    let p = capped_policy();
    let mut state = AccountState::new(ACC, SHANGHAI);
    for t in [
        "2026-11-03T10:00:00+08:00",
        "2026-11-03T13:00:00+08:00",
        "2026-11-03T17:00:00+08:00",
    ] {
        collections_core::caps::record_call(&mut state, ts(t));
    }
    let (a, _) = delinquent(p.clone(), "2026-11-03T10:00:00+08:00");
    let mut call = a.open[0].clone();
    call.due_at = ts("2026-11-04T10:00:00+08:00");
    match fire(&call, Some(&state), &p, call.due_at) {
        FireOutcome::Moved { task, .. } => {
            assert_eq!(task.due_at, ts("2026-11-05T10:00:00+08:00"));
            assert!(
                task.reason.contains("moved at firing time"),
                "{}",
                task.reason
            );
        }
        other => panic!("expected a move, got {other:?}"),
    }
    // Under the default (no caps) it fires.
    assert!(matches!(
        fire(&call, Some(&state), &Policy::default(), call.due_at),
        FireOutcome::Due { .. }
    ));
}

#[test]
fn caps_quiet_period_after_a_promise_defers_the_escalated_call() {
    let p = policy(&[(
        "quiet_after_conversation = \"0s\"",
        "quiet_after_conversation = \"48h\"",
    )]);
    let now = "2026-11-03T10:00:00+08:00";
    let (mut a, _) = delinquent(p, now);
    a.apply(
        &promise(
            2,
            "2026-11-03T10:10:00+08:00",
            "ptp-1",
            "2026-11-03T15:00:00+08:00",
        ),
        "2026-11-03T10:10:00+08:00",
    );
    assert_eq!(
        a.state().last_conversation_at,
        Some(ts("2026-11-03T10:10:00+08:00"))
    );
    let d = a.apply(
        &broken(3, "2026-11-03T17:00:00+08:00", "ptp-1"),
        "2026-11-03T17:00:00+08:00",
    );
    let t = only(&d, TaskKind::CollectionCall);
    assert_eq!(t.due_at, ts("2026-11-05T10:10:00+08:00"));
    assert!(t.reason.contains("quiet period of 48h"), "{}", t.reason);
}

#[test]
fn caps_skip_a_phone_reminder_they_would_push_past_the_promise() {
    let p = policy(&[(
        "quiet_after_conversation = \"0s\"",
        "quiet_after_conversation = \"168h\"",
    )]);
    let now = "2026-11-03T10:00:00+08:00";
    let (mut a, _) = delinquent(p, now);
    let d = a.apply(&promise(2, now, "ptp-1", "2026-11-04T15:00:00+08:00"), now);
    none_of(&d, TaskKind::PromiseReminder);
    assert!(d
        .journal
        .iter()
        .any(|j| j.detail.contains("frequency caps allow no call")));
}

#[test]
fn reg_f_profile_reminds_by_sms_and_never_calls_within_seven_days_of_the_promise() {
    let p = Policy::from_toml_str(US_REG_F_POLICY_TOML).expect("valid");
    let ny = TimeZone::get("America/New_York").expect("tz");
    let now = "2026-11-03T10:00:00-05:00";
    let mut a = Account::new(p);
    a.apply(
        &event(
            "payment.failed",
            1,
            now,
            json!({"account_id": ACC, "customer": {"timezone": "America/New_York"},
                   "installment": {"number": 2, "due_date": "2026-11-01", "amount": {"minor": 5000, "currency": "USD"}},
                   "overdue_amount": {"minor": 5000, "currency": "USD"},
                   "failure_reason": "insufficient_funds", "attempted_at": now}),
        ),
        now,
    );
    let d = a.apply(
        &event(
            "promise.made",
            2,
            now,
            json!({"account_id": ACC, "promise_id": "ptp-1", "amount": {"minor": 5000, "currency": "USD"},
                   "promised_at": "2026-11-04T12:00:00-05:00", "captured_by": "a", "channel": "phone_mobile"}),
        ),
        now,
    );
    assert_eq!(only(&d, TaskKind::PromiseReminder).channel, Channel::Sms);
    assert_eq!(only(&d, TaskKind::PromiseCheck).channel, Channel::Sms);
    let d = a.apply(
        &broken(3, "2026-11-04T15:00:00-05:00", "ptp-1"),
        "2026-11-04T15:00:00-05:00",
    );
    let call = only(&d, TaskKind::CollectionCall);
    assert_eq!(call.due_at, ts("2026-11-10T10:00:00-05:00"));
    assert!(call.due_at.to_zoned(ny).hour() >= 8);
}

// ---------------------------------------------------------------------------------------
// segments and pre_due
// ---------------------------------------------------------------------------------------

/// Instalments 2 and 5 failed, both cured; the cure announces the next due date.
fn habitual(p: Policy) -> Decision {
    let mut a = Account::new(p);
    a.apply(
        &failed(1, "2026-08-03T10:00:00+08:00", 2, "2026-08-03", 50_000),
        "2026-08-03T10:00:00+08:00",
    );
    a.apply(
        &paid(
            2,
            "2026-08-04T10:00:00+08:00",
            50_000,
            Some(0),
            Some("2026-09-03"),
        ),
        "2026-08-04T10:00:00+08:00",
    );
    a.apply(
        &failed(3, "2026-11-03T10:00:00+08:00", 5, "2026-11-03", 50_000),
        "2026-11-03T10:00:00+08:00",
    );
    a.apply(
        &paid(
            4,
            "2026-11-04T10:00:00+08:00",
            50_000,
            Some(0),
            Some("2026-12-03"),
        ),
        "2026-11-04T10:00:00+08:00",
    )
}

#[test]
fn habitual_late_payer_gets_a_pre_due_reminder_a_week_ahead() {
    let d = habitual(Policy::default());
    let t = only(&d, TaskKind::PreDueReminder);
    assert_eq!(t.due_at, ts("2026-11-26T10:00:00+08:00"));
    assert_eq!(t.channel, Channel::Sms);
    assert!(t.reason.contains("habitual late payer"), "{}", t.reason);
}

#[test]
fn segments_and_pre_due_keys_change_the_reminder() {
    // Three failures needed: the account is no longer habitual; others get none.
    let d = habitual(policy(&[(
        "habitual_late_min_failures = 2",
        "habitual_late_min_failures = 3",
    )]));
    none_of(&d, TaskKind::PreDueReminder);
    // The window counts back from the latest instalment: 2 and 5 within the last 3? No.
    let d = habitual(policy(&[(
        "habitual_late_last_instalments = 6",
        "habitual_late_last_instalments = 3",
    )]));
    none_of(&d, TaskKind::PreDueReminder);
    let d = habitual(policy(&[
        (
            "habitual_late_payer_days = 7",
            "habitual_late_payer_days = 3",
        ),
        ("at = \"10:00\"", "at = \"18:30\""),
        ("channel = \"sms\"", "channel = \"phone_home\""),
    ]));
    let t = only(&d, TaskKind::PreDueReminder);
    assert_eq!(t.due_at, ts("2026-11-30T18:30:00+08:00"));
    assert_eq!(t.channel, Channel::PhoneHome);
    let d = habitual(policy(&[
        ("other_days = 0", "other_days = 2"),
        (
            "habitual_late_min_failures = 2",
            "habitual_late_min_failures = 3",
        ),
    ]));
    assert_eq!(
        only(&d, TaskKind::PreDueReminder).due_at,
        ts("2026-12-01T10:00:00+08:00")
    );
}

#[test]
fn partial_payer_last_period_is_reminded_the_day_before() {
    let now = "2026-11-03T10:00:00+08:00";
    let (mut a, _) = delinquent(Policy::default(), now);
    a.apply(
        &paid(2, "2026-11-03T12:00:00+08:00", 25_000, None, None),
        "2026-11-03T12:00:00+08:00",
    );
    let d = a.apply(
        &paid(
            3,
            "2026-11-05T12:00:00+08:00",
            100_000,
            Some(0),
            Some("2026-12-03"),
        ),
        "2026-11-05T12:00:00+08:00",
    );
    let t = only(&d, TaskKind::PreDueReminder);
    assert_eq!(t.due_at, ts("2026-12-02T10:00:00+08:00"));
    assert!(t.reason.contains("paid only part"), "{}", t.reason);
    // A payment in full with no partial before: no risk segment, no reminder.
    let (mut a, _) = delinquent(Policy::default(), now);
    let d = a.apply(
        &paid(
            3,
            "2026-11-05T12:00:00+08:00",
            125_000,
            Some(0),
            Some("2026-12-03"),
        ),
        "2026-11-05T12:00:00+08:00",
    );
    none_of(&d, TaskKind::PreDueReminder);
}

/// Part paid on 2026-11-03, the rest on 2026-11-05 with the next due date 2026-12-03.
fn partial_then_paid(p: Policy) -> Decision {
    let now = "2026-11-03T10:00:00+08:00";
    let (mut a, _) = delinquent(p, now);
    a.apply(
        &paid(2, "2026-11-03T12:00:00+08:00", 25_000, None, None),
        "2026-11-03T12:00:00+08:00",
    );
    a.apply(
        &paid(
            3,
            "2026-11-05T12:00:00+08:00",
            100_000,
            Some(0),
            Some("2026-12-03"),
        ),
        "2026-11-05T12:00:00+08:00",
    )
}

#[test]
fn partial_payer_last_period_days_moves_the_reminder() {
    let d = partial_then_paid(Policy::default());
    assert_eq!(
        only(&d, TaskKind::PreDueReminder).due_at,
        ts("2026-12-02T10:00:00+08:00")
    );
    let d = partial_then_paid(policy(&[(
        "partial_payer_last_period_days = 1",
        "partial_payer_last_period_days = 5",
    )]));
    let t = only(&d, TaskKind::PreDueReminder);
    assert_eq!(t.due_at, ts("2026-11-28T10:00:00+08:00"));
    assert!(
        t.reason.contains("5 day(s) before 2026-12-03"),
        "{}",
        t.reason
    );
    let d = partial_then_paid(policy(&[(
        "partial_payer_last_period_days = 1",
        "partial_payer_last_period_days = 0",
    )]));
    none_of(&d, TaskKind::PreDueReminder);
    assert!(d.journal.iter().any(|j| j
        .detail
        .contains("no pre-due reminder for 2026-12-03: paid only part")));
}

#[test]
fn a_failed_payment_cancels_the_pending_pre_due_reminder() {
    let mut a = Account::new(Policy::default());
    let d = habitual(Policy::default());
    a.keep(&d);
    let reminder = only(&d, TaskKind::PreDueReminder).task_id;
    let d = a.apply(
        &failed(9, "2026-12-03T10:00:00+08:00", 6, "2026-12-03", 50_000),
        "2026-12-03T10:00:00+08:00",
    );
    assert!(d.cancel.iter().any(|c| c.task_id == reminder));
}

// ---------------------------------------------------------------------------------------
// priority
// ---------------------------------------------------------------------------------------

#[test]
fn priority_order_and_large_balance_follow_the_policy() {
    let now = "2026-11-03T10:00:00+08:00";
    let big = |p: Policy| {
        let mut a = Account::new(p);
        a.apply(&failed(1, now, 3, "2026-11-03", 2_000_000), now)
    };
    assert_eq!(
        only(&big(Policy::default()), TaskKind::CollectionCall).priority,
        4
    );
    let d = big(policy(&[(
        "order = [\"first_instalment_default\", \"promise_due_today\", \"partial_payer\", \"large_balance\", \"lost_contact\"]",
        "order = [\"large_balance\", \"first_instalment_default\"]",
    )]));
    assert_eq!(only(&d, TaskKind::CollectionCall).priority, 1);
    let d = big(policy(&[(
        "large_balance_minor = 1000000",
        "large_balance_minor = 5000000",
    )]));
    assert_eq!(only(&d, TaskKind::CollectionCall).priority, 6);
}

#[test]
fn priority_order_reranks_open_tasks_when_the_account_changes() {
    // A partial payment makes the account a partial payer: the open call is re-ranked
    // at the criterion's position in the order, and re-announced.
    let rerank = |p: Policy| {
        let now = "2026-11-03T10:00:00+08:00";
        let (mut a, d) = delinquent(p, now);
        let call = only(&d, TaskKind::CollectionCall).clone();
        let d = a.apply(
            &paid(2, "2026-11-03T12:00:00+08:00", 25_000, None, None),
            "2026-11-03T12:00:00+08:00",
        );
        let announced: Vec<u64> = d
            .outbox
            .iter()
            .map(|m| m.json())
            .filter(|v| v["data"]["task_id"] == json!(call.task_id))
            .filter_map(|v| v["data"]["priority"].as_u64())
            .collect();
        (call.priority, d.reprioritise, call.task_id, announced)
    };
    let (before, re, id, announced) = rerank(Policy::default());
    assert_eq!(before, 6);
    assert_eq!(re, vec![(id, 3)]);
    assert_eq!(announced, vec![3]);
    let (before, re, id, announced) = rerank(policy(&[(
        "order = [\"first_instalment_default\", \"promise_due_today\", \"partial_payer\", \"large_balance\", \"lost_contact\"]",
        "order = [\"partial_payer\", \"first_instalment_default\"]",
    )]));
    assert_eq!(before, 3);
    assert_eq!(re, vec![(id, 1)]);
    assert_eq!(announced, vec![1]);
    // Without the criterion in the order nothing changes and nothing is re-announced.
    let (before, re, _, announced) = rerank(policy(&[(
        "order = [\"first_instalment_default\", \"promise_due_today\", \"partial_payer\", \"large_balance\", \"lost_contact\"]",
        "order = [\"first_instalment_default\", \"large_balance\"]",
    )]));
    assert_eq!(before, 3);
    assert!(re.is_empty(), "{re:?}");
    assert!(announced.is_empty(), "{announced:?}");
}

// ---------------------------------------------------------------------------------------
// refused files
// ---------------------------------------------------------------------------------------

#[test]
fn an_hour_outside_0_to_23_is_refused_naming_the_key() {
    let e = refused(&[(
        "hours = [\"10:00\", \"13:00\"",
        "hours = [\"10:00\", \"25:00\"",
    )]);
    assert_eq!(e.key, "cadence.hours");
    assert!(e.problem.contains("hour"), "{}", e.problem);
    let e = refused(&[("start = \"08:00\"", "start = \"24:00\"")]);
    assert_eq!(e.key, "contact_window.start");
}

#[test]
fn invalid_files_are_refused_with_the_key_and_the_problem() {
    let cases: [(&[(&str, &str)], &str); 9] = [
        (
            &[("end = \"21:00\"", "end = \"07:00\"")],
            "contact_window.end",
        ),
        (&[("Asia/Shanghai", "Mars/Olympus")], "default_timezone"),
        (&[("phone_home = 0.10", "phone_home = 0.30")], "channel_mix"),
        (
            &[("attempts_per_day = 3", "attempts_per_day = 3\nretries = 2")],
            "cadence.retries",
        ),
        (&[("max_horizon = \"48h\"\n", "")], "promise.max_horizon"),
        (
            &[("open = [\"field_visit\"]", "open = [\"collection_call\"]")],
            "escalation.by_broken_promises[2].open",
        ),
        (
            &[(
                "by_bucket = []",
                "by_bucket = [{ from = \"M9\", tone = \"firm\" }]",
            )],
            "escalation.by_bucket[0].from",
        ),
        (
            &[(
                "weekdays = {}",
                "weekdays = { monday = { start = \"12:00\", end = \"09:00\" } }",
            )],
            "contact_window.weekdays.monday.end",
        ),
        (
            &[("max_call_attempts = 0", "max_call_attempts = 2")],
            "caps.max_call_attempts",
        ),
    ];
    for (edits, key) in cases {
        let e = refused(edits);
        assert_eq!(e.key, key, "{e}");
        assert!(!e.problem.is_empty());
        assert!(e.to_string().contains(key));
    }
}

// ---------------------------------------------------------------------------------------
// simulator
// ---------------------------------------------------------------------------------------

fn scenario(name: &str) -> Scenario {
    let path = format!(
        "{}/../../deploy/scenarios/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Scenario::from_toml_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn rows(p: &Policy, s: &Scenario) -> Vec<(String, String, String)> {
    simulate(p, s, None)
        .tasks()
        .iter()
        .map(|e| {
            (
                e.state.clone(),
                e.kind.clone(),
                e.due_at.map(|d| d.to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

fn has(rows: &[(String, String, String)], state: &str, kind: &str, due: &str) -> bool {
    rows.iter()
        .any(|(s, k, d)| s == state && k == kind && ts(d) == ts(due))
}

#[test]
fn simulated_first_instalment_default_is_cured_after_one_call() {
    let r = rows(
        &Policy::default(),
        &scenario("first-instalment-default-paid-after-one-call"),
    );
    assert!(has(
        &r,
        "due",
        "collection_call",
        "2026-11-03T09:15:00+08:00"
    ));
    assert!(has(
        &r,
        "cancelled",
        "collection_call",
        "2026-11-03T10:00:00+08:00"
    ));
    assert_eq!(r.iter().filter(|x| x.0 == "due").count(), 1);
}

#[test]
fn simulated_kept_promise_never_expires() {
    let t = simulate(&Policy::default(), &scenario("promise-kept"), None);
    assert!(t.entries.iter().all(|e| e.kind != "promise.broken"));
    let r = rows(&Policy::default(), &scenario("promise-kept"));
    assert!(has(
        &r,
        "due",
        "promise_reminder",
        "2026-11-04T14:00:00+08:00"
    ));
    assert!(has(
        &r,
        "cancelled",
        "promise_check",
        "2026-11-04T16:00:00+08:00"
    ));
}

#[test]
fn simulated_repeated_broken_promises_end_in_a_field_visit() {
    let s = scenario("promises-broken-escalate-to-field-visit");
    let t = simulate(&Policy::default(), &s, None);
    assert!(t
        .entries
        .iter()
        .any(|e| e.kind == "promise.broken" && e.reason.contains("expired")));
    let visits: Vec<_> = t
        .tasks()
        .into_iter()
        .filter(|e| e.kind == "field_visit" && e.state == "scheduled")
        .collect();
    assert_eq!(visits.len(), 1);
    assert_eq!(visits[0].tone.as_deref(), Some("serious"));
    // A policy opening the visit at the second broken promise shows it a day earlier.
    let early = policy(&[(
        "from = 2\ntone = \"serious\"\n",
        "from = 2\ntone = \"serious\"\nopen = [\"field_visit\"]\n",
    )]);
    let t2 = simulate(&early, &s, None);
    let first = |t: &collections_core::sim::Timeline| {
        t.tasks()
            .into_iter()
            .find(|e| e.kind == "field_visit")
            .map(|e| e.at)
    };
    assert!(first(&t2) < first(&t));
}

#[test]
fn simulated_promise_across_fall_back_keeps_local_hours() {
    let r = rows(
        &Policy::default(),
        &scenario("dst-promise-across-fall-back"),
    );
    assert!(has(
        &r,
        "due",
        "promise_reminder",
        "2026-11-01T08:00:00-05:00"
    ));
    assert!(has(
        &r,
        "cancelled",
        "promise_check",
        "2026-11-01T10:00:00-05:00"
    ));
}

#[test]
fn simulated_reg_f_caps_defer_calls() {
    let s = scenario("reg-f-caps-defer-calls");
    assert_eq!(s.policy.as_deref(), Some("../policy/us-reg-f.toml"));
    let p = Policy::from_toml_str(US_REG_F_POLICY_TOML).expect("valid");
    let t = simulate(&p, &s, None);
    let deferred: Vec<_> = t
        .tasks()
        .into_iter()
        .filter(|e| e.state == "scheduled" && e.reason.contains("deferred"))
        .collect();
    assert_eq!(deferred.len(), 2, "{deferred:#?}");
    assert_eq!(deferred[0].due_at, Some(ts("2026-11-09T09:00:00-05:00")));
    assert_eq!(deferred[1].due_at, Some(ts("2026-11-11T15:00:00-05:00")));
    // Never more than 7 calls fired in any 7 days.
    let calls: Vec<Timestamp> = t
        .tasks()
        .into_iter()
        .filter(|e| {
            e.state == "due" && e.channel.as_deref().is_some_and(|c| c.starts_with("phone"))
        })
        .map(|e| e.at)
        .collect();
    for (i, c) in calls.iter().enumerate() {
        let within = calls[i..]
            .iter()
            .filter(|d| d.duration_since(*c) < SignedDuration::from_hours(168))
            .count();
        assert!(within <= 7, "{within} calls in 7 days from {c}");
    }
    // The same scenario under the default policy defers nothing.
    let t = simulate(&Policy::default(), &s, None);
    assert!(t.tasks().iter().all(|e| !e.reason.contains("deferred")));
}

#[test]
fn the_simulator_plans_what_decide_plans() {
    // Same events through decide directly: the simulator's first tasks carry the same ids.
    let s = scenario("promise-kept");
    let t = simulate(&Policy::default(), &s, None);
    let d = decide(
        None,
        &[],
        &s.events[0].event,
        &Policy::default(),
        s.events[0].at,
    )
    .expect("decide");
    let first = t.tasks()[0].task_id.expect("id");
    assert_eq!(first, d.schedule[0].task_id);
    assert_ne!(first, Uuid::nil());
}

// ---------------------------------------------------------------------------------------
// Contact outcomes (issue 18): the shipped scenarios
// ---------------------------------------------------------------------------------------

/// The task lines of a timeline: (account, state, kind, due instant), in order.
fn task_lines(t: &collections_core::sim::Timeline) -> Vec<(String, String, String, Timestamp)> {
    t.tasks()
        .into_iter()
        .filter_map(|e| {
            Some((
                e.account_id.clone(),
                e.state.clone(),
                e.kind.clone(),
                e.due_at?,
            ))
        })
        .collect()
}

fn line(
    lines: &[(String, String, String, Timestamp)],
    account: &str,
    state: &str,
    kind: &str,
    due: &str,
) -> Option<usize> {
    lines
        .iter()
        .position(|(a, s, k, d)| a == account && s == state && k == kind && *d == ts(due))
}

#[test]
fn simulated_three_conversations_push_the_fourth_call_to_tomorrow() {
    let t = simulate(
        &Policy::default(),
        &scenario("three-conversations-push-the-fourth-call"),
        None,
    );
    let l = task_lines(&t);
    // acc-b's call at 13:00 (planned after its 10:00 call) is cancelled by the third
    // conversation, about acc-a, and planned again at 08:00 tomorrow; acc-a's callback too.
    let planned = line(
        &l,
        "acc-b",
        "scheduled",
        "collection_call",
        "2026-11-03T13:00:00+08:00",
    )
    .expect("acc-b's 13:00 call");
    let cancelled = line(
        &l,
        "acc-b",
        "cancelled",
        "collection_call",
        "2026-11-03T13:00:00+08:00",
    )
    .expect("acc-b's 13:00 call moved");
    assert!(planned < cancelled);
    let fourth = t
        .tasks()
        .into_iter()
        .find(|e| {
            e.account_id == "acc-b"
                && e.state == "scheduled"
                && e.due_at == Some(ts("2026-11-04T08:00:00+08:00"))
        })
        .expect("acc-b's call tomorrow at 08:00");
    assert_eq!(fourth.at, ts("2026-11-03T12:00:00+08:00"));
    assert!(
        fourth.reason.contains("3rd conversation"),
        "{}",
        fourth.reason
    );
    assert!(line(
        &l,
        "acc-a",
        "cancelled",
        "callback",
        "2026-11-03T18:00:00+08:00"
    )
    .is_some());
    assert!(line(
        &l,
        "acc-b",
        "due",
        "collection_call",
        "2026-11-04T08:00:00+08:00"
    )
    .is_some());
    assert!(line(&l, "acc-a", "due", "callback", "2026-11-04T08:00:00+08:00").is_some());
    // No call of the debtor is placed after the third conversation on that day.
    assert!(!t.tasks().iter().any(|e| {
        e.state == "due"
            && e.at > ts("2026-11-03T12:00:00+08:00")
            && e.at < ts("2026-11-04T00:00:00+08:00")
    }));
}

#[test]
fn simulated_reg_f_quiet_week_after_a_conversation() {
    let s = scenario("reg-f-quiet-week-after-a-conversation");
    assert_eq!(s.policy.as_deref(), Some("../policy/us-reg-f.toml"));
    let p = Policy::from_toml_str(US_REG_F_POLICY_TOML).expect("valid");
    let t = simulate(&p, &s, None);
    let l = task_lines(&t);
    // The inbound conversation on Monday 09:30 defers the next call a week.
    let quiet = line(
        &l,
        "acc-regf-q",
        "scheduled",
        "collection_call",
        "2026-11-16T09:30:00-05:00",
    )
    .expect("next call a week after the conversation");
    assert!(t.tasks()[quiet].reason.contains("quiet period"));
    // The callback asked for on Wednesday is placed at 17:00, inside the quiet week.
    assert!(line(
        &l,
        "acc-regf-q",
        "due",
        "callback",
        "2026-11-11T17:00:00-05:00"
    )
    .is_some());
    // The collection call after it keeps 7 quiet days from Wednesday's conversation.
    assert!(line(
        &l,
        "acc-regf-q",
        "due",
        "collection_call",
        "2026-11-18T13:00:00-05:00"
    )
    .is_some());
    // No collection call is placed between the two weeks' ends.
    assert!(!t.tasks().iter().any(|e| e.state == "due"
        && e.kind == "collection_call"
        && e.at > ts("2026-11-09T09:30:00-05:00")
        && e.at < ts("2026-11-18T13:00:00-05:00")));
    // Under the default policy the next call is on Tuesday.
    let d = task_lines(&simulate(&Policy::default(), &s, None));
    assert!(line(
        &d,
        "acc-regf-q",
        "scheduled",
        "collection_call",
        "2026-11-10T09:30:00-05:00"
    )
    .is_some());
}

#[test]
fn simulated_wrong_number_then_lost_contact_then_a_third_party_call() {
    let t = simulate(
        &Policy::default(),
        &scenario("wrong-number-then-lost-contact-then-third-party"),
        None,
    );
    let tasks = t.tasks();
    // Only the sixth unanswered attempt, on Thursday, opens the repair and the third-party
    // call, at once, ranked 5 (lost contact).
    let first_tp = tasks
        .iter()
        .position(|e| e.kind == "third_party_call")
        .expect("a third-party call");
    assert_eq!(tasks[first_tp].state, "scheduled");
    assert_eq!(tasks[first_tp].at, ts("2026-11-05T10:01:00+08:00"));
    assert_eq!(tasks[first_tp].priority, Some(5));
    assert!(tasks[first_tp]
        .reason
        .contains("6 attempts in a row over 3 days"));
    assert!(tasks.iter().any(|e| e.kind == "contact_repair"
        && e.state == "scheduled"
        && e.at == ts("2026-11-05T10:01:00+08:00")));
    assert!(tasks
        .iter()
        .any(|e| e.kind == "third_party_call" && e.state == "due"));
    // After the wrong number on the mobile (Tuesday 10:01), calls planned go to the work
    // phone, not to the retired mobile number.
    let after: Vec<_> = tasks
        .iter()
        .filter(|e| {
            e.state == "scheduled"
                && e.kind == "collection_call"
                && e.at > ts("2026-11-03T10:01:00+08:00")
                && e.at < ts("2026-11-05T10:01:00+08:00")
        })
        .collect();
    assert!(!after.is_empty());
    assert!(
        after
            .iter()
            .all(|e| e.channel.as_deref() == Some("phone_work")),
        "{after:#?}"
    );
}

#[test]
fn simulated_callback_honoured_at_the_agreed_minute() {
    let t = simulate(
        &Policy::default(),
        &scenario("callback-at-the-agreed-minute"),
        None,
    );
    let l = task_lines(&t);
    assert!(line(
        &l,
        "acc-cb",
        "cancelled",
        "collection_call",
        "2026-11-03T10:00:00+08:00"
    )
    .is_some());
    let due = t
        .tasks()
        .into_iter()
        .find(|e| e.kind == "callback" && e.state == "due")
        .expect("callback placed");
    assert_eq!(due.at, ts("2026-11-03T18:30:00+08:00"));
    assert_eq!(due.due_at, Some(ts("2026-11-03T18:30:00+08:00")));
    // Reached on the callback without a promise: the next call is on Wednesday at 18:31.
    assert!(line(
        &l,
        "acc-cb",
        "scheduled",
        "collection_call",
        "2026-11-04T18:31:00+08:00"
    )
    .is_some());
    // No collection call was placed between the request and the callback.
    assert!(!t.tasks().iter().any(|e| e.state == "due"
        && e.kind == "collection_call"
        && e.at > ts("2026-11-03T09:02:00+08:00")
        && e.at < ts("2026-11-03T18:30:00+08:00")));
}
