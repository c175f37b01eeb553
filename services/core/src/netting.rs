//! Netting the decisions of one batch into what its transaction writes.
//!
//! The shell runs the rules event by event (or fired call by fired call) and feeds each
//! decision to [`Netted::absorb`], which keeps the account's open tasks the way the next
//! decision must see them and nets the writes so that every row is written by exactly one
//! part of one statement: a task planned and then cancelled or re-ranked within the batch
//! is written once, in its final form (inserted as cancelled, or with its last rank), and
//! an existing task is updated once (a cancellation beats an earlier re-rank; of two
//! re-ranks the last wins).
//!
//! Pure: no I/O; the store writes what this holds.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use uuid::Uuid;

use crate::{
    decide::{Cancellation, JournalEntry},
    outbound::OutboundMessage,
    Task,
};

/// A change to a task that existed before the batch, as written: the task's new
/// [`Task::revision`] is the one its last task event of the batch carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revised<T> {
    /// The change: a cancellation reason, or a new priority.
    pub change: T,
    /// The task's revision after the batch.
    pub revision: u32,
}

/// Everything one transaction writes once the rules have run, netted.
#[derive(Debug, Default)]
pub struct Netted {
    /// New tasks, with the reason when they were cancelled within the batch.
    tasks: Vec<(Task, Option<String>)>,
    /// Index into `tasks` by task id.
    planned: HashMap<Uuid, usize>,
    /// Existing tasks to cancel.
    cancel: Vec<(Uuid, Revised<String>)>,
    /// Existing tasks to re-rank (last word wins).
    reprioritise: BTreeMap<Uuid, Revised<u8>>,
    /// Collection-note lines: account, cause, entry.
    journal: Vec<(String, Uuid, JournalEntry)>,
    /// Outbound messages and the input the shell says each came from.
    outbox: Vec<(Option<usize>, OutboundMessage)>,
}

impl Netted {
    /// Takes in one decision for `account`, caused by `cause` (`origin` is the shell's tag
    /// for the outbound messages, e.g. the index of the input event): updates the
    /// account's open tasks (`open`) the way the next decision in the batch must see them,
    /// and nets the writes.
    #[allow(clippy::too_many_arguments)]
    pub fn absorb(
        &mut self,
        open: &mut Vec<Task>,
        account: &str,
        cause: Uuid,
        origin: Option<usize>,
        schedule: Vec<Task>,
        cancel: Vec<Cancellation>,
        reprioritise: &[(Uuid, u8)],
        journal: Vec<JournalEntry>,
        outbox: Vec<OutboundMessage>,
    ) {
        // Each change advances the task's revision by one (`Task::revised`), as the rules
        // did for the event announcing it: the rules read the revisions from `open`.
        let cancelled: HashMap<Uuid, u32> = cancel
            .iter()
            .filter_map(|c| {
                let t = open.iter().find(|t| t.task_id == c.task_id)?;
                Some((c.task_id, t.revised().revision))
            })
            .collect();
        open.retain(|t| !cancelled.contains_key(&t.task_id));
        for (id, p) in reprioritise {
            let Some(t) = open.iter_mut().find(|t| t.task_id == *id) else {
                continue;
            };
            *t = Task {
                priority: *p,
                ..t.revised()
            };
            match self.planned.get(id) {
                Some(&k) => self.tasks[k].0 = t.clone(),
                None => {
                    self.reprioritise.insert(
                        *id,
                        Revised {
                            change: *p,
                            revision: t.revision,
                        },
                    );
                }
            }
        }
        open.extend(schedule.iter().cloned());
        for t in schedule {
            self.planned.insert(t.task_id, self.tasks.len());
            self.tasks.push((t, None));
        }
        for c in cancel {
            // A task the rules cancel is always one of the open ones they were given.
            let Some(&revision) = cancelled.get(&c.task_id) else {
                continue;
            };
            match self.planned.get(&c.task_id) {
                Some(&k) => {
                    let (t, reason) = &mut self.tasks[k];
                    t.revision = revision;
                    *reason = Some(c.reason);
                }
                None => {
                    self.reprioritise.remove(&c.task_id);
                    self.cancel.push((
                        c.task_id,
                        Revised {
                            change: c.reason,
                            revision,
                        },
                    ));
                }
            }
        }
        self.journal
            .extend(journal.into_iter().map(|j| (account.to_owned(), cause, j)));
        self.outbox.extend(outbox.into_iter().map(|m| (origin, m)));
    }

    /// New tasks to insert, in planning order, each with its cancellation reason when the
    /// batch cancelled it too (it is inserted as cancelled).
    #[must_use]
    pub fn new_tasks(&self) -> &[(Task, Option<String>)] {
        &self.tasks
    }

    /// Tasks that existed before the batch and that it cancels: (task, reason and the
    /// task's new revision).
    #[must_use]
    pub fn cancellations(&self) -> &[(Uuid, Revised<String>)] {
        &self.cancel
    }

    /// Tasks that existed before the batch and that it re-ranks: task → new priority and
    /// the task's new revision.
    #[must_use]
    pub fn reranks(&self) -> &BTreeMap<Uuid, Revised<u8>> {
        &self.reprioritise
    }

    /// Collection-note lines, in order: (account, cause, entry).
    #[must_use]
    pub fn journal(&self) -> &[(String, Uuid, JournalEntry)] {
        &self.journal
    }

    /// Outbound messages, in order, each with the origin given to [`Netted::absorb`].
    #[must_use]
    pub fn outbox(&self) -> &[(Option<usize>, OutboundMessage)] {
        &self.outbox
    }

    /// Existing tasks this batch cancels or re-ranks.
    pub fn touched(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.cancel
            .iter()
            .map(|c| c.0)
            .chain(self.reprioritise.keys().copied())
    }

    /// Earliest `due_at` among the new tasks that stay scheduled.
    #[must_use]
    pub fn earliest_due(&self) -> Option<Timestamp> {
        self.tasks
            .iter()
            .filter(|(_, cancelled)| cancelled.is_none())
            .map(|(t, _)| t.due_at)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Channel, TaskKind, Tone};

    fn task(n: u128, due: &str, priority: u8) -> Task {
        Task {
            task_id: Uuid::from_u128(n),
            account_id: "acc-1".to_owned(),
            kind: TaskKind::CollectionCall,
            channel: Channel::PhoneMobile,
            due_at: due.parse().expect("timestamp"),
            priority,
            tone: Tone::Gentle,
            reason: "test".to_owned(),
            promise_id: None,
            cause_event_id: Uuid::from_u128(1000),
            attempt: 1,
            policy_version: "p-test".to_owned(),
            revision: 1,
            contact_point_id: None,
        }
    }

    fn cancel(n: u128, why: &str) -> Cancellation {
        Cancellation {
            task_id: Uuid::from_u128(n),
            reason: why.to_owned(),
        }
    }

    fn absorb(
        w: &mut Netted,
        open: &mut Vec<Task>,
        schedule: Vec<Task>,
        cancels: Vec<Cancellation>,
        rerank: &[(Uuid, u8)],
    ) {
        w.absorb(
            open,
            "acc-1",
            Uuid::from_u128(7),
            Some(0),
            schedule,
            cancels,
            rerank,
            Vec::new(),
            Vec::new(),
        );
    }

    const DUE: &str = "2026-12-01T09:00:00Z";

    #[test]
    fn a_task_planned_then_cancelled_in_the_batch_is_inserted_once_as_cancelled() {
        let mut w = Netted::default();
        let mut open = Vec::new();
        absorb(&mut w, &mut open, vec![task(1, DUE, 3)], Vec::new(), &[]);
        absorb(&mut w, &mut open, Vec::new(), vec![cancel(1, "paid")], &[]);
        assert_eq!(w.new_tasks().len(), 1);
        assert_eq!(w.new_tasks()[0].1.as_deref(), Some("paid"));
        assert_eq!(
            w.new_tasks()[0].0.revision,
            2,
            "written with the revision of its task.cancelled"
        );
        assert!(
            w.cancellations().is_empty(),
            "no update of a row not yet written"
        );
        assert_eq!(w.touched().count(), 0);
        assert!(open.is_empty(), "the next decision no longer sees it");
        assert_eq!(
            w.earliest_due(),
            None,
            "a cancelled task wakes no scheduler"
        );
    }

    #[test]
    fn a_task_planned_then_reranked_in_the_batch_is_inserted_with_its_last_rank() {
        let mut w = Netted::default();
        let mut open = Vec::new();
        absorb(&mut w, &mut open, vec![task(1, DUE, 3)], Vec::new(), &[]);
        absorb(
            &mut w,
            &mut open,
            Vec::new(),
            Vec::new(),
            &[(Uuid::from_u128(1), 1)],
        );
        absorb(
            &mut w,
            &mut open,
            Vec::new(),
            Vec::new(),
            &[(Uuid::from_u128(1), 2)],
        );
        assert_eq!(w.new_tasks().len(), 1);
        assert_eq!(w.new_tasks()[0].0.priority, 2);
        assert_eq!(w.new_tasks()[0].0.revision, 3, "planned, re-ranked twice");
        assert!(w.reranks().is_empty());
        assert_eq!(open[0].priority, 2);
        assert_eq!(open[0].revision, 3, "the next decision sees it");
    }

    #[test]
    fn an_existing_task_reranked_then_cancelled_is_only_cancelled() {
        let mut w = Netted::default();
        let mut open = vec![task(1, DUE, 3)];
        absorb(
            &mut w,
            &mut open,
            Vec::new(),
            Vec::new(),
            &[(Uuid::from_u128(1), 1)],
        );
        assert_eq!(open[0].priority, 1);
        absorb(&mut w, &mut open, Vec::new(), vec![cancel(1, "paid")], &[]);
        assert!(w.new_tasks().is_empty());
        assert!(w.reranks().is_empty());
        assert_eq!(
            w.cancellations(),
            &[(
                Uuid::from_u128(1),
                Revised {
                    change: "paid".to_owned(),
                    revision: 3
                }
            )],
            "its revision counts the re-rank and the cancellation"
        );
        assert_eq!(w.touched().collect::<Vec<_>>(), vec![Uuid::from_u128(1)]);
        assert!(open.is_empty());
    }

    #[test]
    fn an_existing_task_reranked_twice_takes_the_last_rank() {
        let mut w = Netted::default();
        let mut open = vec![task(1, DUE, 3)];
        absorb(
            &mut w,
            &mut open,
            Vec::new(),
            Vec::new(),
            &[(Uuid::from_u128(1), 1)],
        );
        absorb(
            &mut w,
            &mut open,
            Vec::new(),
            Vec::new(),
            &[(Uuid::from_u128(1), 4)],
        );
        assert_eq!(
            w.reranks().get(&Uuid::from_u128(1)),
            Some(&Revised {
                change: 4,
                revision: 3
            })
        );
        assert_eq!(w.reranks().len(), 1);
    }

    #[test]
    fn earliest_due_is_that_of_the_new_tasks_left_scheduled() {
        let mut w = Netted::default();
        let mut open = Vec::new();
        let early = task(1, "2026-12-01T08:00:00Z", 3);
        let late = task(2, "2026-12-02T08:00:00Z", 3);
        absorb(
            &mut w,
            &mut open,
            vec![early, late.clone()],
            Vec::new(),
            &[],
        );
        absorb(&mut w, &mut open, Vec::new(), vec![cancel(1, "moot")], &[]);
        assert_eq!(w.earliest_due(), Some(late.due_at));
        assert_eq!(open, vec![late]);
    }

    #[test]
    fn journal_and_outbox_keep_their_account_cause_and_origin_in_order() {
        let mut w = Netted::default();
        let mut open = Vec::new();
        let line = |k: &'static str| JournalEntry {
            kind: k,
            detail: k.to_owned(),
            task_id: None,
        };
        let msg = |n: u128| OutboundMessage {
            event_id: Uuid::from_u128(n),
            exchange: "x",
            routing_key: "k".to_owned(),
            account_id: "acc-1".to_owned(),
            body: b"{}".to_vec(),
        };
        w.absorb(
            &mut open,
            "acc-1",
            Uuid::from_u128(7),
            Some(0),
            Vec::new(),
            Vec::new(),
            &[],
            vec![line("a"), line("b")],
            vec![msg(1)],
        );
        w.absorb(
            &mut open,
            "acc-2",
            Uuid::from_u128(8),
            None,
            Vec::new(),
            Vec::new(),
            &[],
            vec![line("c")],
            vec![msg(2)],
        );
        let j: Vec<(&str, u128, &str)> = w
            .journal()
            .iter()
            .map(|(a, c, e)| (a.as_str(), c.as_u128(), e.kind))
            .collect();
        assert_eq!(
            j,
            vec![("acc-1", 7, "a"), ("acc-1", 7, "b"), ("acc-2", 8, "c")]
        );
        let o: Vec<(Option<usize>, u128)> = w
            .outbox()
            .iter()
            .map(|(o, m)| (*o, m.event_id.as_u128()))
            .collect();
        assert_eq!(o, vec![(Some(0), 1), (None, 2)]);
    }
}
