//! Completing fired calls: what the calls a scheduler fired lead to, once the broker has
//! the `task.due` messages.
//!
//! Every call to the debtor counts towards the caps, and a collection call also plans
//! the next attempt ([`crate::on_call_fired`]). The shell locks the accounts of the calls
//! ([`counts_as_call`]), marks the fired tasks emitted, reads the accounts' states and
//! open tasks, and asks [`complete_calls`] what to write.
//!
//! Pure: no I/O; the store reads and writes around it.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use uuid::Uuid;

use crate::{
    netting::Netted, on_call_fired, on_instalment_due, AccountState, Policy, Task, TaskKind,
};

/// Whether completing this fired task involves the rules: a call to the debtor (it counts
/// towards the caps) or a collection call (it plans the next attempt). Other fired tasks
/// are only marked emitted.
#[must_use]
pub fn counts_as_call(task: &Task) -> bool {
    task.channel.is_phone() || task.kind == TaskKind::CollectionCall
}

/// Whether completing this fired task involves the rules: a call ([`counts_as_call`]) or
/// an arrangement's instalment expiry ([`crate::on_instalment_due`]).
#[must_use]
pub fn completes_with_rules(task: &Task) -> bool {
    counts_as_call(task) || task.kind == TaskKind::InstalmentExpiry
}

/// Decides what the fired tasks `fired` (each with the id of its `task.due` message) lead
/// to, netted into one transaction's writes.
///
/// Only calls ([`counts_as_call`]) that this completion marked emitted (`emitted`: a claim
/// rescued and fired again by another scheduler is completed once) and whose account has
/// a state are decided. `states` and `open` are the locked accounts' states and open
/// tasks; they are updated the way each next decision must see them. `firing` are open
/// tasks another scheduler is firing at this moment: they count as the account's open call
/// (no second call is planned beside one), but should the rules want to cancel or re-rank
/// one, the call is decided again without the tasks being fired, which that firing
/// settles (and which cannot be waited for).
#[allow(clippy::too_many_arguments)]
#[must_use]
pub fn complete_calls(
    fired: &[(Task, Uuid)],
    emitted: &HashSet<Uuid>,
    states: &mut HashMap<String, Option<AccountState>>,
    open: &mut HashMap<String, Vec<Task>>,
    firing: &HashSet<Uuid>,
    policy: &Policy,
    now: Timestamp,
) -> Netted {
    let mut w = Netted::default();
    for (task, due_id) in fired.iter().filter(|(t, _)| completes_with_rules(t)) {
        if !emitted.contains(&task.task_id) {
            continue;
        }
        let Some(Some(state)) = states.get(&task.account_id).cloned() else {
            continue;
        };
        let tasks = open.entry(task.account_id.clone()).or_default();
        let rule = |open: &[Task]| {
            if task.kind == TaskKind::InstalmentExpiry {
                on_instalment_due(&state, open, task, *due_id, policy, now)
            } else {
                on_call_fired(&state, open, task, *due_id, policy, now)
            }
        };
        let mut d = rule(tasks);
        if d.cancel.iter().any(|c| firing.contains(&c.task_id))
            || d.reprioritise.iter().any(|(id, _)| firing.contains(id))
        {
            tasks.retain(|t| !firing.contains(&t.task_id));
            d = rule(tasks);
        }
        w.absorb(
            tasks,
            &task.account_id,
            *due_id,
            None,
            d.schedule,
            d.cancel,
            &d.reprioritise,
            d.journal,
            d.outbox,
        );
        states.insert(task.account_id.clone(), Some(d.state));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decide, parse_event, Channel, Decision};

    const ACC: &str = "acc-c1";
    const NOW: &str = "2026-11-10T02:00:00Z";

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    /// A later instalment failed: the account is delinquent with a collection call planned.
    fn delinquent(policy: &Policy) -> Decision {
        let body = serde_json::json!({
            "specversion": "1.0", "id": "00000000-0000-4000-8000-000000000001",
            "source": "/tests/completion", "type": "payment.failed", "time": NOW,
            "subject": ACC, "datacontenttype": "application/json",
            "data": {"account_id": ACC, "customer": {"timezone": "Asia/Shanghai"},
                     "installment": {"number": 3, "due_date": "2026-11-03",
                                     "amount": {"minor": 125_000, "currency": "CNY"}},
                     "overdue_amount": {"minor": 125_000, "currency": "CNY"},
                     "failure_reason": "insufficient_funds", "attempted_at": NOW},
        });
        let e = parse_event(body.to_string().as_bytes(), None).expect("event");
        decide(None, &[], &e, policy, ts(NOW)).expect("decided")
    }

    struct Setup {
        policy: Policy,
        call: Task,
        states: HashMap<String, Option<AccountState>>,
        open: HashMap<String, Vec<Task>>,
    }

    fn setup() -> Setup {
        let policy = Policy::default();
        let d = delinquent(&policy);
        let call = d
            .schedule
            .iter()
            .find(|t| t.kind == TaskKind::CollectionCall)
            .expect("a collection call is planned")
            .clone();
        let others: Vec<Task> = d
            .schedule
            .iter()
            .filter(|t| t.task_id != call.task_id)
            .cloned()
            .collect();
        Setup {
            policy,
            states: HashMap::from([(ACC.to_owned(), Some(d.state))]),
            open: HashMap::from([(ACC.to_owned(), others)]),
            call,
        }
    }

    /// Completes the fired call; `emitted`: whether this completion marked it emitted.
    fn complete(s: &mut Setup, emitted: bool, firing: &[Uuid]) -> Netted {
        let due_id = Uuid::from_u128(42);
        let fired = [(s.call.clone(), due_id)];
        let at = s.call.due_at;
        complete_calls(
            &fired,
            &HashSet::from_iter(emitted.then_some(s.call.task_id)),
            &mut s.states,
            &mut s.open,
            &firing.iter().copied().collect(),
            &s.policy,
            at,
        )
    }

    #[test]
    fn calls_and_collection_calls_count_other_tasks_do_not() {
        let s = setup();
        assert!(counts_as_call(&s.call));
        let mut sms = s.call.clone();
        sms.kind = TaskKind::PromiseReminder;
        sms.channel = Channel::Sms;
        assert!(!counts_as_call(&sms));
        let mut phone = sms.clone();
        phone.channel = Channel::PhoneWork;
        assert!(counts_as_call(&phone));
    }

    #[test]
    fn a_fired_collection_call_is_decided_as_on_call_fired_decides_it() {
        let mut s = setup();
        let before = s.states[ACC].clone().expect("state");
        let open_before = s.open[ACC].clone();
        let expected = on_call_fired(
            &before,
            &open_before,
            &s.call,
            Uuid::from_u128(42),
            &s.policy,
            s.call.due_at,
        );
        let w = complete(&mut s, true, &[]);
        let planned: Vec<&Task> = w.new_tasks().iter().map(|(t, _)| t).collect();
        assert_eq!(planned, expected.schedule.iter().collect::<Vec<_>>());
        assert!(
            planned.iter().any(|t| t.kind == TaskKind::CollectionCall),
            "the next attempt is planned"
        );
        assert_eq!(w.journal().len(), expected.journal.len());
        assert_eq!(w.outbox().len(), expected.outbox.len());
        assert!(w.outbox().iter().all(|(origin, _)| origin.is_none()));
        assert_eq!(s.states[ACC].as_ref(), Some(&expected.state));
    }

    #[test]
    fn a_call_this_completion_did_not_mark_emitted_is_not_decided_again() {
        let mut s = setup();
        let before = s.states.clone();
        let w = complete(&mut s, false, &[]);
        assert!(w.new_tasks().is_empty() && w.journal().is_empty() && w.outbox().is_empty());
        assert_eq!(s.states, before);
    }

    #[test]
    fn a_call_on_an_account_without_state_is_not_decided() {
        let mut s = setup();
        s.states.insert(ACC.to_owned(), None);
        let w = complete(&mut s, true, &[]);
        assert!(w.new_tasks().is_empty() && w.journal().is_empty());
        assert_eq!(s.states[ACC], None);
    }

    #[test]
    fn a_task_being_fired_elsewhere_is_never_cancelled_or_reranked() {
        let mut s = setup();
        // Every open task of the account is being fired by another scheduler. (Should the
        // default policy touch none of them anyway, this checks only the invariant.)
        let firing: Vec<Uuid> = s.open[ACC].iter().map(|t| t.task_id).collect();
        let w = complete(&mut s, true, &firing);
        assert!(w.touched().all(|id| !firing.contains(&id)));
    }
}
