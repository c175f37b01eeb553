-- The task-event feed (`GET /v1/task-events`, issue 20): each outbox row records the
-- transaction that wrote it, so the feed can serve rows in an order no later commit can
-- break (ARCHITECTURE.md, "Task-event feed").
--
-- Identity values are handed out when a row is inserted, not when its transaction
-- commits: a transaction that took id 10 may commit after one that took id 11, and a
-- reader that had passed 11 would never see 10. The writing transaction's id (xid8, never
-- wraps) orders rows by transaction, and a transaction id below the snapshot's xmin
-- belongs to a transaction that has ended: every row it wrote is visible, and no row with
-- a smaller (xact, id) can appear later.
--
-- Expand only. The constant default fills the rows already there without rewriting the
-- table (they read as transaction 0, served first, in id order); new rows take their
-- writer's id from the volatile default set after it. Binaries of the previous release
-- insert without naming the column and get the default too.
ALTER TABLE outbox ADD COLUMN xact xid8 NOT NULL DEFAULT '0';
ALTER TABLE outbox ALTER COLUMN xact SET DEFAULT pg_current_xact_id();

-- The feed's scan: task events only, in (xact, id) order from a cursor. On a large table,
-- create it first with CREATE INDEX CONCURRENTLY under the same name.
CREATE INDEX IF NOT EXISTS outbox_task_feed ON outbox (xact, id)
    WHERE exchange = 'collections.tasks';

-- The API's task pages, in its page order (due instant, task id): open tasks (the board's
-- first tab, walked without passing over history), and every task (fired and cancelled
-- ones, which are mostly history).
CREATE INDEX IF NOT EXISTS tasks_open_by_due ON tasks (due_at, task_id)
    WHERE status IN ('scheduled', 'claimed');
CREATE INDEX IF NOT EXISTS tasks_by_due ON tasks (due_at, task_id);
-- Cancelled tasks are a small share of history: without an index of their own, a page of
-- them walks (or sorts) every task.
CREATE INDEX IF NOT EXISTS tasks_cancelled_by_due ON tasks (due_at, task_id)
    WHERE status = 'cancelled';

-- What the workers dead-lettered, with the reason and the (masked) detail they put in the
-- message's headers: the board's dead-letters view counts reasons per queue from here
-- (the messages themselves stay in the `.dlq` queues, where the API does not touch them).
-- Written best effort after the broker confirmed the dead letter; never read by the rules.
CREATE TABLE dead_letters (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue     text        NOT NULL,
    reason    text        NOT NULL,
    detail    text        NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_at ON dead_letters (at);
