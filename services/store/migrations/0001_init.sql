-- Collections state. One transaction per inbound event (or batch) writes all of these.

-- Every inbound event id ever applied: a redelivered duplicate finds its id here and changes nothing.
CREATE TABLE inbox (
    event_id    uuid PRIMARY KEY,
    event_type  text        NOT NULL,
    account_id  text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per account; `state` is the core's AccountState document. The row is the lock
-- that serialises events for one account arriving on different queues.
CREATE TABLE accounts (
    account_id  text PRIMARY KEY,
    state       jsonb,
    status      text,
    overdue_minor bigint,
    policy_version text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tasks (
    task_id        uuid PRIMARY KEY,
    account_id     text        NOT NULL,
    kind           text        NOT NULL,
    channel        text        NOT NULL,
    due_at         timestamptz NOT NULL,
    priority       smallint    NOT NULL,
    tone           text        NOT NULL,
    reason         text        NOT NULL,
    promise_id     text,
    cause_event_id uuid        NOT NULL,
    attempt        integer     NOT NULL DEFAULT 1,
    policy_version text        NOT NULL,
    -- scheduled -> (claimed) -> emitted, or scheduled -> cancelled
    status         text        NOT NULL DEFAULT 'scheduled'
                   CHECK (status IN ('scheduled', 'claimed', 'emitted', 'cancelled')),
    claimed_at     timestamptz,
    emitted_at     timestamptz,
    cancelled_at   timestamptz,
    cancel_reason  text,
    created_at     timestamptz NOT NULL DEFAULT now()
);
-- Open tasks of an account (loaded with every event).
CREATE INDEX tasks_open_by_account ON tasks (account_id) WHERE status IN ('scheduled', 'claimed');
-- The scheduler's claim: stays small however many tasks have been emitted.
CREATE INDEX tasks_due ON tasks (due_at) WHERE status = 'scheduled';

-- The collection note: every event applied and every decision taken, in order, per account.
CREATE TABLE journal (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id     text        NOT NULL,
    event_id       uuid,
    kind           text        NOT NULL,
    detail         text        NOT NULL,
    task_id        uuid,
    policy_version text        NOT NULL,
    decided_at     timestamptz NOT NULL
);
CREATE INDEX journal_by_account ON journal (account_id, id);

-- Messages committed with the state change and published after commit with confirms.
-- `lease_until` is the inserting worker's claim on its own rows; once it passes, any relay
-- may publish them.
CREATE TABLE outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      uuid        NOT NULL UNIQUE,
    account_id    text        NOT NULL,
    exchange      text        NOT NULL,
    routing_key   text        NOT NULL,
    body          jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    lease_until   timestamptz NOT NULL,
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (lease_until, id) WHERE published_at IS NULL;
