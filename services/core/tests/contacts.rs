//! Contact outcomes (issue 18): the ledger, the caps it keeps, and what each outcome leads
//! to, driven by CloudEvents parsed from JSON text as the workers parse them.
//!
//! A `Desk` keeps accounts as the store does: each account's state and open tasks, and one
//! contact ledger per debtor, loaded into the state before each decision. Every instant is
//! fixed: no test reads the clock.

use std::collections::BTreeMap;

use collections_core::{
    caps::{first_allowed, Call},
    contact::{Attempt, Ledger},
    decide,
    decide::reflow,
    fire, on_call_fired, parse_event,
    policy::US_REG_F_POLICY_TOML,
    AccountState, Channel, Decision, Event, EventBody, FireOutcome, Policy, Task, TaskKind, Tone,
};
use jiff::{civil::date, tz::TimeZone, Timestamp};
use serde_json::{json, Value};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const ACC: &str = "acc-000123";
const ACC_B: &str = "acc-000456";
const DEBTOR: &str = "dbt-0001";
const SHANGHAI: &str = "Asia/Shanghai";
const NEW_YORK: &str = "America/New_York";

fn ts(s: &str) -> Timestamp {
    s.parse()
        .unwrap_or_else(|e| panic!("bad timestamp {s}: {e}"))
}

fn tz(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap_or_else(|e| panic!("bad zone {name}: {e}"))
}

fn local(t: Timestamp, zone: &str) -> jiff::civil::DateTime {
    t.to_zoned(tz(zone)).datetime()
}

fn event_id(n: u32) -> Uuid {
    format!("00000000-0000-4000-8000-{n:012x}")
        .parse()
        .expect("uuid")
}

fn parse(ty: &str, n: u32, time: &str, data: &Value) -> Event {
    let v = json!({
        "specversion": "1.0",
        "id": event_id(n),
        "source": "/tests/contacts",
        "type": ty,
        "time": time,
        "subject": data["account_id"].clone(),
        "datacontenttype": "application/json",
        "data": data,
    });
    let bytes = serde_json::to_vec(&v).expect("serialise event");
    parse_event(&bytes, None).unwrap_or_else(|e| panic!("event refused: {e}\n{v:#}"))
}

fn money(minor: i64) -> Value {
    json!({ "minor": minor, "currency": "CNY" })
}

fn payment_failed(n: u32, time: &str, account: &str, zone: &str) -> Event {
    parse(
        "payment.failed",
        n,
        time,
        &json!({
            "account_id": account,
            "customer": { "timezone": zone },
            "installment": { "number": 3, "due_date": "2026-10-20", "amount": money(125_000) },
            "overdue_amount": money(125_000),
            "failure_reason": "insufficient_funds",
            "attempted_at": time,
        }),
    )
}

fn promise_made(n: u32, time: &str, promised_at: &str) -> Event {
    parse(
        "promise.made",
        n,
        time,
        &json!({
            "account_id": ACC,
            "promise_id": format!("prm-{n}"),
            "amount": money(125_000),
            "promised_at": promised_at,
            "captured_by": "agent-0421",
            "channel": "phone_mobile",
        }),
    )
}

/// `contact.attempted` for `ACC` at `time`: by default an outbound mobile call that
/// reached the debtor, attempt id `att-{n}`, started at `time`; `fields` override.
fn contact(n: u32, time: &str, fields: &Value) -> Event {
    let mut data = json!({
        "account_id": ACC,
        "attempt_id": format!("att-{n}"),
        "channel": "phone_mobile",
        "direction": "outbound",
        "party": "debtor",
        "result": "connected",
        "started_at": time,
    });
    for (k, v) in fields.as_object().expect("fields are an object") {
        data[k] = v.clone();
    }
    parse("contact.attempted", n, time, &data)
}

fn no_answer(point: &str) -> Value {
    json!({ "result": "no_answer", "party": "unknown", "contact_point_id": point })
}

/// Accounts as the store keeps them: states, open tasks, one ledger per debtor.
struct Desk {
    policy: Policy,
    states: BTreeMap<String, AccountState>,
    open: BTreeMap<String, Vec<Task>>,
    ledgers: BTreeMap<String, Ledger>,
}

impl Desk {
    fn new() -> Self {
        Self::with(Policy::default())
    }

    fn with(policy: Policy) -> Self {
        Self {
            policy,
            states: BTreeMap::new(),
            open: BTreeMap::new(),
            ledgers: BTreeMap::new(),
        }
    }

    fn reg_f() -> Self {
        Self::with(Policy::from_toml_str(US_REG_F_POLICY_TOML).expect("reg f policy"))
    }

    /// An account's state with its debtor's ledger, as the store loads it.
    fn state_of(&self, account: &str) -> Option<AccountState> {
        let mut s = self.states.get(account)?.clone();
        s.ledger = self.ledgers.get(s.debtor()).cloned().unwrap_or_default();
        Some(s)
    }

    fn open(&self, account: &str) -> Vec<Task> {
        self.open.get(account).cloned().unwrap_or_default()
    }

    fn open_of(&self, account: &str, kind: TaskKind) -> Vec<Task> {
        self.open(account)
            .into_iter()
            .filter(|t| t.kind == kind)
            .collect()
    }

    fn one(&self, account: &str, kind: TaskKind) -> Task {
        let v = self.open_of(account, kind);
        assert_eq!(v.len(), 1, "one open {kind}: {:#?}", self.open(account));
        v[0].clone()
    }

    fn apply(&mut self, e: &Event, now: &str) -> Decision {
        let account = e.account_id.clone();
        let mut prev = self.state_of(&account);
        if let (Some(s), EventBody::ContactAttempted(c)) = (prev.as_mut(), &e.body) {
            s.ledger = self.ledgers.get(c.debtor()).cloned().unwrap_or_default();
        }
        let open = self.open(&account);
        let d = decide(prev.as_ref(), &open, e, &self.policy, ts(now))
            .unwrap_or_else(|err| panic!("domain error: {err}"));
        self.absorb(&account, &d);
        d
    }

    fn absorb(&mut self, account: &str, d: &Decision) {
        if !d.ledger.is_empty() {
            let ledger = self.ledgers.entry(d.state.debtor().to_owned()).or_default();
            for a in &d.ledger {
                ledger.upsert(a.clone());
            }
        }
        let open = self.open.entry(account.to_owned()).or_default();
        open.retain(|t| !d.cancel.iter().any(|c| c.task_id == t.task_id));
        for (id, p) in &d.reprioritise {
            if let Some(t) = open.iter_mut().find(|t| t.task_id == *id) {
                t.priority = *p;
            }
        }
        open.extend(d.schedule.iter().cloned());
        self.states.insert(account.to_owned(), d.state.clone());
    }

    /// The store's reflow of `account` after a contact on a sibling account.
    fn reflow(&mut self, account: &str, cause: Uuid, now: &str) -> Decision {
        let state = self.state_of(account).expect("sibling state");
        let d = reflow(&state, &self.open(account), cause, &self.policy, ts(now));
        self.absorb(account, &d);
        d
    }

    /// Fires the open task of `kind` at `now` as the scheduler does.
    fn fire(&mut self, account: &str, kind: TaskKind, now: &str) -> FireOutcome {
        let task = self.one(account, kind);
        let state = self.state_of(account);
        let out = fire(&task, state.as_ref(), &self.policy, ts(now));
        let list = self.open.get_mut(account).expect("open tasks");
        match &out {
            FireOutcome::Cancelled { .. } => {
                list.retain(|t| t.task_id != task.task_id);
            }
            FireOutcome::Moved { task: moved, .. } => {
                let t = list
                    .iter_mut()
                    .find(|t| t.task_id == task.task_id)
                    .expect("task");
                *t = (**moved).clone();
            }
            FireOutcome::Due { message, follow_up } => {
                list.retain(|t| t.task_id != task.task_id);
                if *follow_up {
                    let state = self.state_of(account).expect("state");
                    let open = self.open(account);
                    let d = on_call_fired(
                        &state,
                        &open,
                        &task,
                        message.event_id,
                        &self.policy,
                        ts(now),
                    );
                    self.absorb(account, &d);
                }
            }
            FireOutcome::Expired { .. } | FireOutcome::InstalmentDue { .. } => {
                list.retain(|t| t.task_id != task.task_id);
            }
        }
        out
    }
}

/// A delinquent account in Shanghai: failed at 2026-11-03 09:00, call open at 09:00.
fn delinquent() -> Desk {
    let mut desk = Desk::new();
    desk.apply(
        &payment_failed(1, "2026-11-03T09:00:00+08:00", ACC, SHANGHAI),
        "2026-11-03T09:00:00+08:00",
    );
    desk
}

fn attempt(d: &Event) -> Attempt {
    let EventBody::ContactAttempted(c) = &d.body else {
        panic!("not a contact attempt")
    };
    Attempt::from_event(c, d.id, d.time)
}

fn journal_has(d: &Decision, needle: &str) -> bool {
    d.journal.iter().any(|j| j.detail.contains(needle))
}

// ---------------------------------------------------------------------------------------
// The ledger
// ---------------------------------------------------------------------------------------

/// New York leaves daylight time on 2026-11-01: 04:30Z on 2 November is still 1 November
/// (23:30 EST), where the summer offset would make it 2 November; 03:30Z on 1 November is
/// 31 October (23:30 EDT). Counting by UTC day or by a fixed offset gets both wrong.
#[test]
fn the_ledger_counts_by_the_debtors_local_day_across_the_dst_change() {
    let ny = tz(NEW_YORK);
    let mut ledger = Ledger::default();
    for (n, at) in [
        (1, "2026-11-01T03:30:00Z"), // Sat 31 Oct 23:30 EDT
        (2, "2026-11-01T13:00:00Z"), // Sun 1 Nov 08:00 EST
        (3, "2026-11-02T04:30:00Z"), // Sun 1 Nov 23:30 EST
        (4, "2026-11-02T05:30:00Z"), // Mon 2 Nov 00:30 EST
    ] {
        ledger.upsert(attempt(&contact(n, at, &json!({}))));
    }
    assert_eq!(ledger.conversations_on(date(2026, 10, 31), &ny), 1);
    assert_eq!(ledger.conversations_on(date(2026, 11, 1), &ny), 2);
    assert_eq!(ledger.conversations_on(date(2026, 11, 2), &ny), 1);
    assert_eq!(ledger.attempts_on(ACC, date(2026, 11, 1), &ny), 2);
    // The same instants in Shanghai fall on other days.
    let sh = tz(SHANGHAI);
    assert_eq!(ledger.conversations_on(date(2026, 11, 1), &sh), 2);
    assert_eq!(ledger.conversations_on(date(2026, 11, 2), &sh), 2);
}

/// Only connected contacts with the debtor count as conversations, in either direction;
/// a third party's conversation is counted apart; unanswered attempts are per point.
#[test]
fn the_ledger_tells_conversations_third_parties_and_unanswered_attempts_apart() {
    let sh = tz(SHANGHAI);
    let day = date(2026, 11, 3);
    let t = "2026-11-03T10:00:00+08:00";
    let mut ledger = Ledger::default();
    ledger.upsert(attempt(&contact(1, t, &json!({ "direction": "inbound" }))));
    ledger.upsert(attempt(&contact(
        2,
        t,
        &json!({ "party": "third_party", "channel": "contact_person" }),
    )));
    ledger.upsert(attempt(&contact(3, t, &no_answer("pt-m1"))));
    ledger.upsert(attempt(&contact(
        4,
        t,
        &json!({ "result": "busy", "party": "unknown", "contact_point_id": "pt-m1" }),
    )));
    ledger.upsert(attempt(&contact(5, t, &no_answer("pt-m2"))));
    assert_eq!(ledger.conversations_on(day, &sh), 1);
    assert_eq!(ledger.third_party_conversations_on(day, &sh), 1);
    assert_eq!(ledger.unanswered_on("pt-m1", day, &sh), 2);
    assert_eq!(ledger.unanswered_on("pt-m2", day, &sh), 1);
}

/// A second report of one attempt (same `attempt_id`) replaces the first: the ledger and
/// the decision's counts hold it once, and the state's refusal count does not double.
#[test]
fn a_correction_replaces_the_attempt_and_never_doubles_its_counts() {
    let mut desk = delinquent();
    let t = "2026-11-03T10:00:00+08:00";
    let first = contact(2, t, &no_answer("pt-m1"));
    desk.apply(&first, t);
    // The dialer corrects it: it was a conversation, and the debtor refused to pay.
    let mut fix = contact(
        3,
        t,
        &json!({ "attempt_id": "att-2", "contact_point_id": "pt-m1", "disposition": "refused" }),
    );
    fix.id = event_id(3);
    let d = desk.apply(&fix, "2026-11-03T10:05:00+08:00");
    assert!(
        journal_has(&d, "a correction of the report"),
        "{:#?}",
        d.journal
    );
    let ledger = &desk.ledgers[ACC];
    assert_eq!(ledger.attempts.len(), 1);
    assert_eq!(ledger.conversations_on(date(2026, 11, 3), &tz(SHANGHAI)), 1);
    assert_eq!(
        ledger.unanswered_on("pt-m1", date(2026, 11, 3), &tz(SHANGHAI)),
        0
    );
    assert_eq!(desk.states[ACC].refusals, 1);
    // The same correction delivered again changes nothing.
    let again = contact(
        4,
        t,
        &json!({ "attempt_id": "att-2", "contact_point_id": "pt-m1", "disposition": "refused" }),
    );
    desk.apply(&again, "2026-11-03T10:06:00+08:00");
    assert_eq!(desk.ledgers[ACC].attempts.len(), 1);
    assert_eq!(
        desk.states[ACC].refusals, 1,
        "a re-reported refusal counts once"
    );
    assert_eq!(desk.one(ACC, TaskKind::CollectionCall).tone, Tone::Firm);
    // A correction that withdraws the refusal withdraws its count.
    let withdrawn = contact(
        5,
        t,
        &json!({ "attempt_id": "att-2", "contact_point_id": "pt-m1", "disposition": "other" }),
    );
    desk.apply(&withdrawn, "2026-11-03T10:07:00+08:00");
    assert_eq!(desk.states[ACC].refusals, 0);
}

// ---------------------------------------------------------------------------------------
// The daily conversation cap (per debtor)
// ---------------------------------------------------------------------------------------

/// A promise is open (its reminder at 17:00 and check at 19:00 are phone calls) and the
/// debtor asked for a callback at 18:00: the third conversation of the day moves all three
/// to 08:00 tomorrow, the next day's first allowed minute; the second moves none.
#[test]
fn the_third_conversation_moves_every_open_call_of_the_day_to_tomorrow() {
    let mut desk = delinquent();
    desk.apply(
        &promise_made(2, "2026-11-03T09:30:00+08:00", "2026-11-03T18:00:00+08:00"),
        "2026-11-03T09:30:00+08:00",
    );
    let d = desk.apply(
        &contact(
            3,
            "2026-11-03T10:00:00+08:00",
            &json!({ "disposition": "callback_requested", "callback_at": "2026-11-03T18:00:00+08:00" }),
        ),
        "2026-11-03T10:00:00+08:00",
    );
    assert_eq!(
        local(
            d.schedule
                .iter()
                .find(|t| t.kind == TaskKind::Callback)
                .expect("callback")
                .due_at,
            SHANGHAI
        )
        .to_string(),
        "2026-11-03T18:00:00"
    );
    let d = desk.apply(
        &contact(
            4,
            "2026-11-03T11:00:00+08:00",
            &json!({ "direction": "inbound" }),
        ),
        "2026-11-03T11:00:00+08:00",
    );
    assert!(
        d.cancel.is_empty(),
        "two conversations move nothing: {d:#?}"
    );
    let d = desk.apply(
        &contact(
            5,
            "2026-11-03T12:00:00+08:00",
            &json!({ "direction": "inbound" }),
        ),
        "2026-11-03T12:00:00+08:00",
    );
    assert_eq!(d.cancel.len(), 3, "{:#?}", d.cancel);
    for kind in [
        TaskKind::PromiseReminder,
        TaskKind::PromiseCheck,
        TaskKind::Callback,
    ] {
        let t = desk.one(ACC, kind);
        assert_eq!(
            local(t.due_at, SHANGHAI).to_string(),
            "2026-11-04T08:00:00",
            "{kind}"
        );
        assert!(t.reason.contains("3rd conversation"), "{}", t.reason);
    }
}

/// One debtor, two accounts: three conversations about account A move account B's call
/// due today, through `reflow` (the store runs it for the debtor's other accounts).
#[test]
fn the_conversation_cap_counts_across_the_debtors_accounts() {
    let mut desk = Desk::new();
    desk.apply(
        &payment_failed(1, "2026-11-03T06:00:00+08:00", ACC, SHANGHAI),
        "2026-11-03T06:00:00+08:00",
    );
    desk.apply(
        &payment_failed(2, "2026-11-03T06:00:00+08:00", ACC_B, SHANGHAI),
        "2026-11-03T06:00:00+08:00",
    );
    // Account B learns its debtor from a contact that reached nobody.
    desk.apply(
        &contact(
            3,
            "2026-11-03T06:10:00+08:00",
            &json!({ "account_id": ACC_B, "debtor_id": DEBTOR, "result": "no_answer", "party": "unknown" }),
        ),
        "2026-11-03T06:10:00+08:00",
    );
    let b_call = desk.one(ACC_B, TaskKind::CollectionCall);
    assert_eq!(
        local(b_call.due_at, SHANGHAI).to_string(),
        "2026-11-03T08:00:00"
    );
    for n in 4..=6 {
        let at = format!("2026-11-03T07:{}0:00+08:00", n - 3);
        let e = contact(
            n,
            &at,
            &json!({ "debtor_id": DEBTOR, "direction": "inbound" }),
        );
        desk.apply(&e, &at);
        let d = desk.reflow(ACC_B, e.id, &at);
        if n < 6 {
            assert!(d.cancel.is_empty(), "conversation {}: {d:#?}", n - 3);
        }
    }
    let moved = desk.one(ACC_B, TaskKind::CollectionCall);
    assert_ne!(moved.task_id, b_call.task_id);
    assert_eq!(
        local(moved.due_at, SHANGHAI).to_string(),
        "2026-11-04T08:00:00"
    );
    assert!(
        moved.reason.contains("3rd conversation"),
        "{}",
        moved.reason
    );
}

/// The scheduler checks the cap again when a call comes due: a call the store has not
/// moved yet is moved at firing, not placed.
#[test]
fn fire_moves_a_call_due_while_the_conversation_cap_is_reached() {
    let mut desk = Desk::new();
    desk.apply(
        &payment_failed(1, "2026-11-03T06:00:00+08:00", ACC_B, SHANGHAI),
        "2026-11-03T06:00:00+08:00",
    );
    desk.apply(
        &contact(
            2,
            "2026-11-03T06:10:00+08:00",
            &json!({ "account_id": ACC_B, "debtor_id": DEBTOR, "result": "no_answer", "party": "unknown" }),
        ),
        "2026-11-03T06:10:00+08:00",
    );
    desk.apply(
        &payment_failed(3, "2026-11-03T06:00:00+08:00", ACC, SHANGHAI),
        "2026-11-03T06:00:00+08:00",
    );
    for n in 4..=6 {
        let at = format!("2026-11-03T07:{}0:00+08:00", n - 3);
        desk.apply(
            &contact(
                n,
                &at,
                &json!({ "debtor_id": DEBTOR, "direction": "inbound" }),
            ),
            &at,
        );
    }
    // No reflow of B: its call is still due at 08:00.
    match desk.fire(ACC_B, TaskKind::CollectionCall, "2026-11-03T08:00:00+08:00") {
        FireOutcome::Moved { task, .. } => {
            assert_eq!(
                local(task.due_at, SHANGHAI).to_string(),
                "2026-11-04T08:00:00"
            );
            assert!(task.reason.contains("3rd conversation"), "{}", task.reason);
        }
        other => panic!("expected the call moved, got {other:?}"),
    }
    // With two conversations the call is placed.
    let mut desk2 = Desk::new();
    desk2.apply(
        &payment_failed(1, "2026-11-03T06:00:00+08:00", ACC, SHANGHAI),
        "2026-11-03T06:00:00+08:00",
    );
    for n in 4..=5 {
        let at = format!("2026-11-03T07:{}0:00+08:00", n - 3);
        desk2.apply(&contact(n, &at, &json!({ "direction": "inbound" })), &at);
    }
    // (The conversations put the call on a later day; place one due now directly.)
    let state = desk2.state_of(ACC).expect("state");
    let now = ts("2026-11-03T08:00:00+08:00");
    let mut call = desk2.one(ACC, TaskKind::CollectionCall);
    call.due_at = now;
    assert!(matches!(
        fire(&call, Some(&state), &desk2.policy, now),
        FireOutcome::Due { .. }
    ));
}

// ---------------------------------------------------------------------------------------
// Contact points
// ---------------------------------------------------------------------------------------

/// A promise's reminder and check go to the mobile number the ledger knows (`pt-m1`); its
/// sixth unanswered attempt of the day moves them off it: to the work number the ledger
/// knows (`pt-w1`, the next phone of the mix) at the same minutes.
#[test]
fn max_unanswered_on_a_point_sends_its_calls_to_another_phone() {
    let mut desk = delinquent();
    desk.apply(
        &contact(
            9,
            "2026-10-30T10:00:00+08:00",
            &json!({ "channel": "phone_work", "contact_point_id": "pt-w1", "disposition": "promise_made" }),
        ),
        "2026-11-03T09:01:00+08:00",
    );
    desk.apply(
        &contact(2, "2026-11-03T09:05:00+08:00", &no_answer("pt-m1")),
        "2026-11-03T09:05:00+08:00",
    );
    desk.apply(
        &promise_made(3, "2026-11-03T09:30:00+08:00", "2026-11-03T18:00:00+08:00"),
        "2026-11-03T09:30:00+08:00",
    );
    let reminder = desk.one(ACC, TaskKind::PromiseReminder);
    assert_eq!(reminder.contact_point_id.as_deref(), Some("pt-m1"));
    for n in 4..=8 {
        let at = format!("2026-11-03T1{}:00:00+08:00", n - 4);
        let d = desk.apply(&contact(n, &at, &no_answer("pt-m1")), &at);
        if n < 8 {
            assert!(d.cancel.is_empty(), "{} unanswered: {d:#?}", n - 2);
        }
    }
    for kind in [TaskKind::PromiseReminder, TaskKind::PromiseCheck] {
        let t = desk.one(ACC, kind);
        assert_eq!(t.channel, Channel::PhoneWork, "{kind}");
        assert_eq!(t.contact_point_id.as_deref(), Some("pt-w1"), "{kind}");
        assert_eq!(
            local(t.due_at, SHANGHAI).date(),
            date(2026, 11, 3),
            "{kind}"
        );
    }
    assert_eq!(
        local(desk.one(ACC, TaskKind::PromiseReminder).due_at, SHANGHAI).to_string(),
        "2026-11-03T17:00:00"
    );
}

/// The same, with the work and home numbers known to be wrong: no other phone is left, so
/// the point's calls move to 08:00 tomorrow, on the same point.
#[test]
fn max_unanswered_on_the_last_usable_point_moves_its_calls_to_tomorrow() {
    let mut desk = delinquent();
    desk.apply(
        &contact(2, "2026-11-03T09:05:00+08:00", &no_answer("pt-m1")),
        "2026-11-03T09:05:00+08:00",
    );
    for (n, ch, pt) in [(3, "phone_work", "pt-w1"), (4, "phone_home", "pt-h1")] {
        desk.apply(
            &contact(
                n,
                "2026-11-03T09:10:00+08:00",
                &json!({ "channel": ch, "contact_point_id": pt, "result": "wrong_number", "party": "third_party" }),
            ),
            "2026-11-03T09:10:00+08:00",
        );
    }
    assert!(!desk.states[ACC].lost_contact, "pt-m1 is still usable");
    desk.apply(
        &promise_made(5, "2026-11-03T09:30:00+08:00", "2026-11-03T18:00:00+08:00"),
        "2026-11-03T09:30:00+08:00",
    );
    for n in 6..=10 {
        let at = format!("2026-11-03T1{}:00:00+08:00", n - 6);
        desk.apply(&contact(n, &at, &no_answer("pt-m1")), &at);
    }
    for kind in [TaskKind::PromiseReminder, TaskKind::PromiseCheck] {
        let t = desk.one(ACC, kind);
        assert_eq!(t.channel, Channel::PhoneMobile, "{kind}");
        assert_eq!(t.contact_point_id.as_deref(), Some("pt-m1"), "{kind}");
        assert_eq!(
            local(t.due_at, SHANGHAI).to_string(),
            "2026-11-04T08:00:00",
            "{kind}"
        );
        assert!(t.reason.contains("6 unanswered attempts"), "{}", t.reason);
    }
}

/// A wrong number retires its point: the call meant for it goes to another known number;
/// a later conversation on it revives it, and calls go to it again.
#[test]
fn a_wrong_number_retires_the_point_and_a_later_conversation_revives_it() {
    let mut desk = delinquent();
    // Two mobile numbers known; pt-m1 reached the debtor last.
    desk.apply(
        &contact(
            2,
            "2026-10-30T10:00:00+08:00",
            &json!({ "contact_point_id": "pt-m2" }),
        ),
        "2026-11-03T09:01:00+08:00",
    );
    desk.apply(
        &contact(
            3,
            "2026-10-31T10:00:00+08:00",
            &json!({ "contact_point_id": "pt-m1" }),
        ),
        "2026-11-03T09:02:00+08:00",
    );
    desk.apply(
        &promise_made(4, "2026-11-03T09:30:00+08:00", "2026-11-03T18:00:00+08:00"),
        "2026-11-03T09:30:00+08:00",
    );
    assert_eq!(
        desk.one(ACC, TaskKind::PromiseReminder)
            .contact_point_id
            .as_deref(),
        Some("pt-m1")
    );
    let d = desk.apply(
        &contact(
            5,
            "2026-11-03T10:00:00+08:00",
            &json!({ "contact_point_id": "pt-m1", "result": "wrong_number", "party": "third_party" }),
        ),
        "2026-11-03T10:00:00+08:00",
    );
    assert!(
        journal_has(&d, "contact point pt-m1 retired"),
        "{:#?}",
        d.journal
    );
    assert!(desk.ledgers[ACC].point_retired("pt-m1"));
    for kind in [TaskKind::PromiseReminder, TaskKind::PromiseCheck] {
        let t = desk.one(ACC, kind);
        assert_eq!(t.contact_point_id.as_deref(), Some("pt-m2"), "{kind}");
        assert_eq!(
            local(t.due_at, SHANGHAI).date(),
            date(2026, 11, 3),
            "{kind}"
        );
        assert!(t.reason.contains("retired"), "{}", t.reason);
    }
    // The debtor calls in from pt-m1: it is theirs after all.
    desk.apply(
        &contact(
            6,
            "2026-11-03T11:00:00+08:00",
            &json!({ "contact_point_id": "pt-m1", "direction": "inbound", "disposition": "promise_made" }),
        ),
        "2026-11-03T11:00:00+08:00",
    );
    assert!(!desk.ledgers[ACC].point_retired("pt-m1"));
    desk.apply(
        &promise_made(7, "2026-11-03T11:05:00+08:00", "2026-11-03T19:00:00+08:00"),
        "2026-11-03T11:05:00+08:00",
    );
    assert_eq!(
        desk.one(ACC, TaskKind::PromiseReminder)
            .contact_point_id
            .as_deref(),
        Some("pt-m1")
    );
}

// ---------------------------------------------------------------------------------------
// Cadence
// ---------------------------------------------------------------------------------------

/// A conversation without a promise: the open call is cancelled and the next one is on
/// the next calling day, at the hour the debtor was reached.
#[test]
fn a_conversation_without_a_promise_puts_the_next_call_on_a_later_day() {
    let mut desk = delinquent();
    desk.fire(ACC, TaskKind::CollectionCall, "2026-11-03T09:00:00+08:00");
    let next = desk.one(ACC, TaskKind::CollectionCall);
    assert_eq!(
        local(next.due_at, SHANGHAI).to_string(),
        "2026-11-03T10:00:00"
    );
    let d = desk.apply(
        &contact(
            2,
            "2026-11-03T09:20:00+08:00",
            &json!({ "disposition": "other" }),
        ),
        "2026-11-03T09:21:00+08:00",
    );
    assert_eq!(d.cancel.len(), 1);
    assert_eq!(d.cancel[0].task_id, next.task_id);
    let call = desk.one(ACC, TaskKind::CollectionCall);
    assert_eq!(
        local(call.due_at, SHANGHAI).to_string(),
        "2026-11-04T09:20:00"
    );
    assert!(call.reason.contains("without a promise"), "{}", call.reason);
}

/// An attempt that reached nobody leaves the hour rotation as it was: nothing cancelled,
/// nothing planned, the call at the next cadence hour stays.
#[test]
fn an_attempt_that_reached_nobody_leaves_the_rotation_alone() {
    let mut desk = delinquent();
    desk.fire(ACC, TaskKind::CollectionCall, "2026-11-03T09:00:00+08:00");
    let next = desk.one(ACC, TaskKind::CollectionCall);
    for (n, result) in [(2, "no_answer"), (3, "busy"), (4, "voicemail")] {
        let d = desk.apply(
            &contact(
                n,
                "2026-11-03T09:00:00+08:00",
                &json!({ "result": result, "party": "unknown" }),
            ),
            "2026-11-03T09:01:00+08:00",
        );
        assert!(
            d.cancel.is_empty() && d.schedule.is_empty(),
            "{result}: {d:#?}"
        );
    }
    assert_eq!(desk.one(ACC, TaskKind::CollectionCall), next);
}

/// `callback_requested`: a callback at the minute asked for replaces the next collection
/// call; asked for outside the window, it moves to the window's next minute.
#[test]
fn a_requested_callback_replaces_the_next_call_at_the_minute_asked_for() {
    let mut desk = delinquent();
    let call = desk.one(ACC, TaskKind::CollectionCall);
    let d = desk.apply(
        &contact(
            2,
            "2026-11-03T09:10:00+08:00",
            &json!({ "disposition": "callback_requested", "callback_at": "2026-11-03T18:05:00+08:00" }),
        ),
        "2026-11-03T09:10:00+08:00",
    );
    assert!(d.cancel.iter().any(|c| c.task_id == call.task_id));
    assert!(desk.open_of(ACC, TaskKind::CollectionCall).is_empty());
    let cb = desk.one(ACC, TaskKind::Callback);
    assert_eq!(cb.due_at, ts("2026-11-03T18:05:00+08:00"));
    assert!(cb.channel.is_phone());
    // Fired at that minute, it is placed.
    assert!(matches!(
        desk.fire(ACC, TaskKind::Callback, "2026-11-03T18:05:00+08:00"),
        FireOutcome::Due { .. }
    ));
    // Asked for at 22:30: tomorrow at 08:00, and it replaces the earlier callback.
    let mut desk = delinquent();
    desk.apply(
        &contact(
            2,
            "2026-11-03T09:10:00+08:00",
            &json!({ "disposition": "callback_requested", "callback_at": "2026-11-03T18:05:00+08:00" }),
        ),
        "2026-11-03T09:10:00+08:00",
    );
    desk.apply(
        &contact(
            3,
            "2026-11-03T12:10:00+08:00",
            &json!({ "direction": "inbound", "disposition": "callback_requested", "callback_at": "2026-11-03T22:30:00+08:00" }),
        ),
        "2026-11-03T12:10:00+08:00",
    );
    let cb = desk.one(ACC, TaskKind::Callback);
    assert_eq!(
        local(cb.due_at, SHANGHAI).to_string(),
        "2026-11-04T08:00:00"
    );
    assert!(
        cb.reason.contains("moved into the contact window"),
        "{}",
        cb.reason
    );
}

/// Once a callback is placed, the collection calls resume by the cadence: the account is
/// not left without a next step (no backstop needed).
#[test]
fn a_fired_callback_is_followed_by_the_next_collection_call() {
    let mut desk = delinquent();
    desk.apply(
        &contact(
            2,
            "2026-11-03T09:10:00+08:00",
            &json!({ "disposition": "callback_requested", "callback_at": "2026-11-03T18:05:00+08:00" }),
        ),
        "2026-11-03T09:10:00+08:00",
    );
    desk.fire(ACC, TaskKind::Callback, "2026-11-03T18:05:00+08:00");
    let call = desk.one(ACC, TaskKind::CollectionCall);
    assert_eq!(
        local(call.due_at, SHANGHAI).to_string(),
        "2026-11-03T20:00:00"
    );
}

// ---------------------------------------------------------------------------------------
// Regulation F
// ---------------------------------------------------------------------------------------

const NY_FAIL: &str = "2026-11-09T09:00:00-05:00";

fn reg_f_delinquent() -> Desk {
    let mut desk = Desk::reg_f();
    desk.apply(&payment_failed(1, NY_FAIL, ACC, NEW_YORK), NY_FAIL);
    desk
}

/// Seven placed calls (collectors' own dials, connected or not) in seven days: the next
/// call waits until the oldest leaves the window.
#[test]
fn reg_f_seven_placed_calls_in_seven_days_defer_the_eighth() {
    let mut desk = reg_f_delinquent();
    // Seven unanswered dials by collectors, one a day at 10:00 from 2 to 8 November.
    for n in 0..7u32 {
        let at = format!("2026-11-{:02}T10:00:00-05:00", 2 + n);
        desk.apply(&contact(10 + n, &at, &no_answer("pt-m1")), NY_FAIL);
    }
    let call = desk.one(ACC, TaskKind::CollectionCall);
    // Due at 09:00 on 9 November; the oldest (2 November 10:00) leaves the 7-day window
    // at 10:00.
    assert_eq!(call.due_at, ts("2026-11-09T10:00:00-05:00"));
    assert!(
        call.reason.contains("at most 7 call attempts"),
        "{}",
        call.reason
    );
}

/// A conversation (inbound included) starts seven quiet days: the next call waits a week.
#[test]
fn reg_f_an_inbound_conversation_starts_seven_quiet_days() {
    let mut desk = reg_f_delinquent();
    let at = "2026-11-09T11:00:00-05:00";
    desk.apply(
        &contact(
            2,
            at,
            &json!({ "direction": "inbound", "disposition": "other" }),
        ),
        at,
    );
    let call = desk.one(ACC, TaskKind::CollectionCall);
    assert_eq!(call.due_at, ts("2026-11-16T11:00:00-05:00"));
    assert!(call.reason.contains("quiet period"), "{}", call.reason);
    // The scheduler would not place it earlier either.
    let state = desk.state_of(ACC).expect("state");
    let (t, _) = first_allowed(
        ts("2026-11-12T11:00:00-05:00"),
        &state,
        &[],
        &desk.policy,
        Call::default(),
    );
    assert_eq!(t, ts("2026-11-16T11:00:00-05:00"));
}

/// A callback the debtor asked for is exempt from both (prior consent): planned at its
/// minute after seven dials and a conversation; and a placed callback is no attempt.
#[test]
fn reg_f_callbacks_are_exempt_and_not_counted() {
    let mut desk = reg_f_delinquent();
    for n in 0..6u32 {
        let at = format!("2026-11-{:02}T10:00:00-05:00", 3 + n);
        desk.apply(&contact(10 + n, &at, &no_answer("pt-m1")), NY_FAIL);
    }
    let at = "2026-11-09T10:00:00-05:00";
    desk.apply(
        &contact(
            20,
            at,
            &json!({ "contact_point_id": "pt-m1", "disposition": "callback_requested", "callback_at": "2026-11-09T17:00:00-05:00" }),
        ),
        at,
    );
    let cb = desk.one(ACC, TaskKind::Callback);
    assert_eq!(cb.due_at, ts("2026-11-09T17:00:00-05:00"));
    assert!(matches!(
        desk.fire(ACC, TaskKind::Callback, "2026-11-09T17:00:00-05:00"),
        FireOutcome::Due { .. }
    ));
    assert!(
        desk.states[ACC].recent_calls.is_empty(),
        "a consented callback is no attempt: {:?}",
        desk.states[ACC].recent_calls
    );
    // The next collection call keeps the quiet week after the conversation.
    let call = desk.one(ACC, TaskKind::CollectionCall);
    assert!(
        call.due_at >= ts("2026-11-16T10:00:00-05:00"),
        "{}",
        call.due_at
    );
}

// ---------------------------------------------------------------------------------------
// Lost contact and third parties
// ---------------------------------------------------------------------------------------

/// Six unanswered attempts in a row: not lost over two days, lost over three (then a
/// `contact_repair` and, only now, a `third_party_call`).
#[test]
fn lost_contact_needs_six_unanswered_attempts_over_three_days() {
    let days = |spread: [u32; 6]| {
        let mut desk = delinquent();
        for (i, day) in spread.iter().enumerate() {
            let n = u32::try_from(i).expect("small") + 2;
            let at = format!("2026-11-{day:02}T1{}:00:00+08:00", i % 4);
            desk.apply(&contact(n, &at, &no_answer("pt-m1")), &at);
        }
        desk
    };
    let two = days([3, 3, 3, 4, 4, 4]);
    assert!(!two.states[ACC].lost_contact);
    assert!(two.open_of(ACC, TaskKind::ThirdPartyCall).is_empty());
    assert!(two.open_of(ACC, TaskKind::ContactRepair).is_empty());
    let mut five = delinquent();
    for (i, day) in [3u32, 4, 5, 5, 5].iter().enumerate() {
        let n = u32::try_from(i).expect("small") + 2;
        let at = format!("2026-11-{day:02}T1{i}:00:00+08:00");
        five.apply(&contact(n, &at, &no_answer("pt-m1")), &at);
    }
    assert!(!five.states[ACC].lost_contact);
    assert!(five.open_of(ACC, TaskKind::ThirdPartyCall).is_empty());
    let three = days([3, 3, 4, 4, 5, 5]);
    assert!(three.states[ACC].lost_contact);
    assert_eq!(three.open_of(ACC, TaskKind::ContactRepair).len(), 1);
    let tp = three.one(ACC, TaskKind::ThirdPartyCall);
    assert_eq!(tp.channel, Channel::ContactPerson);
    // Lost contact is the fifth criterion of the default work order (domain rule 2): the
    // new tasks and the open call rank 5, where the account ranked 6 before.
    assert_eq!(tp.priority, 5);
    assert_eq!(three.one(ACC, TaskKind::CollectionCall).priority, 5);
    assert_eq!(two.one(ACC, TaskKind::CollectionCall).priority, 6);
    // A conversation in between resets the run.
    let mut reset = delinquent();
    for (i, day) in [3u32, 3, 4, 4, 5, 5, 5].iter().enumerate() {
        let n = u32::try_from(i).expect("small") + 2;
        let at = format!("2026-11-{day:02}T1{}:00:00+08:00", i % 4);
        let fields = if i == 2 {
            json!({ "direction": "inbound", "disposition": "promise_made" })
        } else {
            no_answer("pt-m1")
        };
        reset.apply(&contact(n, &at, &fields), &at);
    }
    assert!(!reset.states[ACC].lost_contact);
}

/// A wrong number answered by a stranger is an attempt that did not reach the debtor:
/// it counts in the run; a call to a contact person does not.
#[test]
fn a_wrong_number_counts_in_the_lost_contact_run_and_a_contact_persons_call_does_not() {
    let run = |second: &Value| {
        let mut desk = delinquent();
        // pt-w1 known first, so the wrong number on pt-m1 does not retire every point.
        let mut steps = vec![
            ("2026-11-03T10:00:00+08:00", no_answer("pt-w1")),
            ("2026-11-03T11:00:00+08:00", second.clone()),
        ];
        for at in [
            "2026-11-04T10:00:00+08:00",
            "2026-11-04T11:00:00+08:00",
            "2026-11-05T10:00:00+08:00",
        ] {
            steps.push((at, no_answer("pt-w1")));
        }
        for (i, (at, fields)) in steps.iter().enumerate() {
            let n = u32::try_from(i).expect("small") + 2;
            let mut fields = fields.clone();
            if fields["contact_point_id"] == json!("pt-w1") {
                fields["channel"] = json!("phone_work");
            }
            desk.apply(&contact(n, at, &fields), at);
        }
        desk
    };
    // Five attempts on the debtor's numbers plus one more makes six over three days.
    let wrong =
        json!({ "contact_point_id": "pt-m1", "result": "wrong_number", "party": "third_party" });
    let mut desk = run(&wrong);
    assert!(!desk.states[ACC].lost_contact, "five so far");
    desk.apply(
        &contact(9, "2026-11-05T11:00:00+08:00", &json!({ "channel": "phone_work", "contact_point_id": "pt-w1", "result": "no_answer", "party": "unknown" })),
        "2026-11-05T11:00:00+08:00",
    );
    assert!(desk.states[ACC].lost_contact);
    // The same with the second attempt a contact person's unanswered phone: five.
    let contact_person = json!({ "channel": "contact_person", "contact_point_id": "pt-c1", "result": "no_answer", "party": "unknown" });
    let mut desk = run(&contact_person);
    desk.apply(
        &contact(9, "2026-11-05T11:00:00+08:00", &json!({ "channel": "phone_work", "contact_point_id": "pt-w1", "result": "no_answer", "party": "unknown" })),
        "2026-11-05T11:00:00+08:00",
    );
    assert!(!desk.states[ACC].lost_contact);
}

/// Every known point retired (a wrong number on the only number) is lost contact too;
/// the debtor reached again cancels the repair and the third-party call.
#[test]
fn every_point_retired_is_lost_contact_and_reaching_the_debtor_regains_it() {
    let mut desk = delinquent();
    desk.apply(
        &contact(
            2,
            "2026-11-03T10:00:00+08:00",
            &json!({ "contact_point_id": "pt-m1", "result": "wrong_number", "party": "third_party" }),
        ),
        "2026-11-03T10:00:00+08:00",
    );
    assert!(desk.states[ACC].lost_contact);
    assert_eq!(desk.open_of(ACC, TaskKind::ThirdPartyCall).len(), 1);
    let d = desk.apply(
        &contact(
            3,
            "2026-11-03T11:00:00+08:00",
            &json!({ "contact_point_id": "pt-m2", "direction": "inbound", "disposition": "promise_made" }),
        ),
        "2026-11-03T11:00:00+08:00",
    );
    assert!(!desk.states[ACC].lost_contact);
    assert!(journal_has(&d, "contact regained"));
    assert!(desk.open_of(ACC, TaskKind::ThirdPartyCall).is_empty());
    assert!(desk.open_of(ACC, TaskKind::ContactRepair).is_empty());
}

/// A contact person who refuses: the open third-party call is cancelled and none is
/// planned when contact is lost again.
#[test]
fn a_third_party_refusal_stops_third_party_calls() {
    let mut desk = delinquent();
    let wrong = |n: u32, at: &str, pt: &str| {
        contact(
            n,
            at,
            &json!({ "contact_point_id": pt, "result": "wrong_number", "party": "third_party" }),
        )
    };
    desk.apply(
        &wrong(2, "2026-11-03T10:00:00+08:00", "pt-m1"),
        "2026-11-03T10:00:00+08:00",
    );
    assert_eq!(desk.open_of(ACC, TaskKind::ThirdPartyCall).len(), 1);
    let d = desk.apply(
        &contact(
            3,
            "2026-11-03T11:00:00+08:00",
            &json!({ "channel": "contact_person", "party": "third_party", "contact_point_id": "pt-c1", "disposition": "third_party_refused" }),
        ),
        "2026-11-03T11:00:00+08:00",
    );
    assert!(desk.states[ACC].third_party_refused);
    assert_eq!(d.cancel.len(), 1, "{:#?}", d.cancel);
    assert!(desk.open_of(ACC, TaskKind::ThirdPartyCall).is_empty());
    // Reached again, then lost again: still no third-party call.
    desk.apply(
        &contact(
            4,
            "2026-11-03T12:00:00+08:00",
            &json!({ "contact_point_id": "pt-m2", "direction": "inbound", "disposition": "promise_made" }),
        ),
        "2026-11-03T12:00:00+08:00",
    );
    assert!(!desk.states[ACC].lost_contact);
    desk.apply(
        &wrong(5, "2026-11-03T13:00:00+08:00", "pt-m2"),
        "2026-11-03T13:00:00+08:00",
    );
    assert!(desk.states[ACC].lost_contact);
    assert_eq!(desk.open_of(ACC, TaskKind::ContactRepair).len(), 1);
    assert!(desk.open_of(ACC, TaskKind::ThirdPartyCall).is_empty());
}

/// Broken promises no longer open third-party calls in the default policy.
#[test]
fn broken_promises_open_no_third_party_call_by_default() {
    let mut desk = delinquent();
    for n in 0..4u32 {
        let at = format!("2026-11-0{}T10:00:00+08:00", 3 + n);
        let due = format!("2026-11-0{}T12:00:00+08:00", 3 + n);
        desk.apply(&promise_made(10 + n, &at, &due), &at);
        let broken = parse(
            "promise.broken",
            20 + n,
            &format!("2026-11-0{}T15:00:00+08:00", 3 + n),
            &json!({ "account_id": ACC, "promise_id": format!("prm-{}", 10 + n), "reason": "no_payment" }),
        );
        desk.apply(&broken, &format!("2026-11-0{}T15:00:00+08:00", 3 + n));
    }
    assert_eq!(desk.states[ACC].broken_promises, 4);
    assert!(desk.open_of(ACC, TaskKind::ThirdPartyCall).is_empty());
    assert_eq!(desk.open_of(ACC, TaskKind::FieldVisit).len(), 1);
}

// ---------------------------------------------------------------------------------------
// Dispositions
// ---------------------------------------------------------------------------------------

/// The debtor says the money was paid: a `payment_verification` task now, and no call to
/// them for 24 hours (the open call moves to the end of the hold).
#[test]
fn claims_paid_plans_a_verification_and_holds_calls_for_a_day() {
    let mut desk = delinquent();
    desk.fire(ACC, TaskKind::CollectionCall, "2026-11-03T09:00:00+08:00");
    let at = "2026-11-03T09:30:00+08:00";
    let d = desk.apply(
        &contact(2, at, &json!({ "disposition": "claims_paid" })),
        at,
    );
    let v = desk.one(ACC, TaskKind::PaymentVerification);
    assert_eq!(v.due_at, ts(at));
    assert_eq!(v.channel, Channel::None);
    assert!(d.cancel.len() == 1, "{:#?}", d.cancel);
    let call = desk.one(ACC, TaskKind::CollectionCall);
    assert_eq!(call.due_at, ts("2026-11-04T09:30:00+08:00"));
    assert!(call.reason.contains("held until"), "{}", call.reason);
    // The scheduler keeps the hold too.
    let state = desk.state_of(ACC).expect("state");
    let (t, _) = first_allowed(
        ts("2026-11-03T13:00:00+08:00"),
        &state,
        &[],
        &desk.policy,
        Call::default(),
    );
    assert_eq!(t, ts("2026-11-04T09:30:00+08:00"));
}

/// A refusal escalates the tone like a broken promise.
#[test]
fn a_refusal_escalates_the_tone() {
    let mut desk = delinquent();
    assert_eq!(desk.one(ACC, TaskKind::CollectionCall).tone, Tone::Gentle);
    let at = "2026-11-03T09:30:00+08:00";
    let d = desk.apply(&contact(2, at, &json!({ "disposition": "refused" })), at);
    assert!(journal_has(&d, "refused"), "{:#?}", d.journal);
    assert_eq!(desk.one(ACC, TaskKind::CollectionCall).tone, Tone::Firm);
    let at = "2026-11-04T09:30:00+08:00";
    desk.apply(&contact(3, at, &json!({ "disposition": "refused" })), at);
    assert_eq!(desk.one(ACC, TaskKind::CollectionCall).tone, Tone::Serious);
}

/// An attempt for an account collections does not know is journalled and recorded in the
/// ledger, and plans nothing.
#[test]
fn an_attempt_for_an_unknown_account_is_journalled_only() {
    let at = "2026-11-03T09:30:00+08:00";
    let e = contact(
        1,
        at,
        &json!({ "disposition": "callback_requested", "callback_at": "2026-11-03T18:00:00+08:00" }),
    );
    let d = decide(None, &[], &e, &Policy::default(), ts(at)).expect("decided");
    assert!(d.schedule.is_empty() && d.cancel.is_empty() && d.outbox.is_empty());
    assert_eq!(d.ledger.len(), 1);
    assert!(journal_has(&d, "does not know"), "{:#?}", d.journal);
    assert!(d.journal.iter().any(|j| j.kind == "contact_attempted"));
}

/// Conversations show in the journal with their ordinal of the day.
#[test]
fn the_journal_counts_the_days_conversations() {
    let mut desk = delinquent();
    let at = "2026-11-03T09:30:00+08:00";
    desk.apply(
        &contact(2, at, &json!({ "disposition": "promise_made" })),
        at,
    );
    let at = "2026-11-03T10:30:00+08:00";
    let d = desk.apply(
        &contact(3, at, &json!({ "disposition": "promise_made" })),
        at,
    );
    assert!(
        journal_has(&d, "2 conversation(s) with the debtor"),
        "{:#?}",
        d.journal
    );
}
