-- The contact ledger (issue 18): every contact attempt with a debtor, kept per debtor
-- (one person may owe on several accounts) so caps count across the debtor's accounts.
--
-- Expand only: a new table, a nullable column, an index and a new function. Binaries of
-- the previous release run against this schema unchanged (oldest_compatible stays 10).

-- One row per attempt, keyed by the publisher's attempt id within the debtor: a second
-- report of the same attempt (a correction) replaces the row. `attempt` is the core's
-- `contact::Attempt` as JSON; the columns beside it are what queries select on.
CREATE TABLE contact_attempts (
    debtor_id   text        NOT NULL,
    attempt_id  text        NOT NULL,
    account_id  text        NOT NULL,
    attempt     jsonb       NOT NULL,
    started_at  timestamptz NOT NULL,
    -- When the service applied the latest report: what a scheduler firing after it knew.
    recorded_at timestamptz NOT NULL,
    event_id    uuid        NOT NULL,
    PRIMARY KEY (debtor_id, attempt_id)
);
-- The batch loads a debtor's recent attempts; the pruner walks them oldest first.
CREATE INDEX contact_attempts_recent ON contact_attempts (debtor_id, started_at);
CREATE INDEX contact_attempts_started ON contact_attempts (started_at);

-- The accounts a contact attempt has named for each debtor: a contact on one account
-- moves the calls of the others. A table of its own, not an index on `accounts.state`:
-- an index on the state would make every state update a non-HOT one (0006).
CREATE TABLE debtor_accounts (
    debtor_id  text NOT NULL,
    account_id text NOT NULL,
    PRIMARY KEY (debtor_id, account_id)
);

-- The contact point a task is meant for, when one is known.
ALTER TABLE tasks ADD COLUMN contact_point_id text;

-- collections_open_batch_revised (0009) with the contact ledger: the accounts of the
-- debtors of the batch's contact attempts (`event_debtors`) are locked with the events'
-- own (one sorted set, so batches never deadlock), and the recent attempts of every
-- debtor concerned (named by an attempt, or by a locked account's state) are returned as
-- a fourth kind of row (`debtor_id`, `attempt` set). Task rows carry `contact_point_id`.
CREATE OR REPLACE FUNCTION collections_open_batch_contacts(
    event_ids uuid[], event_sources text[], event_types text[], event_accounts text[],
    event_debtors text[], stale_claim_secs float8, ledger_days float8)
RETURNS TABLE (
    fresh uuid, fresh_source text, account_id text, state text, task_id uuid, kind text,
    channel text, due_at timestamptz, priority smallint, tone text, reason text,
    promise_id text, cause_event_id uuid, attempt integer, policy_version text, status text,
    revision integer, contact_point_id text, debtor_id text, contact text)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    fresh_ids uuid[];
    fresh_sources text[];
    locked text[];
    debtors text[];
BEGIN
    WITH ins AS (
        INSERT INTO inbox (event_id, source, event_type, account_id)
        SELECT e, s, t, a FROM unnest(event_ids, event_sources, event_types, event_accounts)
            AS u(e, s, t, a)
        WHERE NOT EXISTS (SELECT 1 FROM inbox l WHERE l.event_id = u.e AND l.source = '')
        ON CONFLICT (event_id, source) DO NOTHING
        RETURNING inbox.event_id, inbox.source, inbox.account_id)
    SELECT coalesce(array_agg(ins.event_id), '{}'),
           coalesce(array_agg(ins.source), '{}'),
           coalesce(array_agg(DISTINCT ins.account_id), '{}')
    INTO fresh_ids, fresh_sources, locked
    FROM ins;
    IF cardinality(fresh_ids) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT f.e, f.s, NULL::text, NULL::text, NULL::uuid, NULL::text, NULL::text,
        NULL::timestamptz, NULL::smallint, NULL::text, NULL::text, NULL::text, NULL::uuid,
        NULL::integer, NULL::text, NULL::text, NULL::integer, NULL::text, NULL::text,
        NULL::text
    FROM unnest(fresh_ids, fresh_sources) AS f(e, s);
    INSERT INTO accounts (account_id)
    SELECT a FROM unnest(locked) a ORDER BY a
    ON CONFLICT (account_id) DO NOTHING;
    IF cardinality(event_debtors) > 0 THEN
        SELECT array_agg(DISTINCT x) INTO locked FROM (
            SELECT unnest(locked) AS x
            UNION
            SELECT d.account_id FROM debtor_accounts d
            WHERE d.debtor_id = ANY(event_debtors)) u;
    END IF;
    RETURN QUERY SELECT NULL::uuid, NULL::text, a.account_id, a.state::text, NULL::uuid,
        NULL::text, NULL::text, NULL::timestamptz, NULL::smallint, NULL::text, NULL::text,
        NULL::text, NULL::uuid, NULL::integer, NULL::text, NULL::text, NULL::integer,
        NULL::text, NULL::text, NULL::text
    FROM accounts a WHERE a.account_id = ANY(locked)
    ORDER BY a.account_id FOR UPDATE;
    RETURN QUERY SELECT NULL::uuid, NULL::text, t.account_id, NULL::text, t.task_id, t.kind,
        t.channel, t.due_at, t.priority, t.tone, t.reason, t.promise_id, t.cause_event_id,
        t.attempt, t.policy_version,
        CASE WHEN t.status = 'claimed'
                  AND coalesce(t.claim_until,
                               t.claimed_at + make_interval(secs => stale_claim_secs)) < now()
             THEN 'stale' ELSE t.status END,
        t.revision, t.contact_point_id, NULL::text, NULL::text
    FROM tasks t
    WHERE t.account_id = ANY(locked) AND t.status IN ('scheduled', 'claimed')
    ORDER BY t.created_at, t.task_id;
    SELECT coalesce(array_agg(DISTINCT d), '{}') INTO debtors FROM (
        SELECT unnest(event_debtors) AS d
        UNION
        SELECT a.state->>'debtor_id' FROM accounts a
        WHERE a.account_id = ANY(locked) AND a.state ? 'debtor_id') u;
    IF cardinality(debtors) > 0 THEN
        RETURN QUERY SELECT NULL::uuid, NULL::text, c.account_id, NULL::text, NULL::uuid,
            NULL::text, NULL::text, NULL::timestamptz, NULL::smallint, NULL::text,
            NULL::text, NULL::text, NULL::uuid, NULL::integer, NULL::text, NULL::text,
            NULL::integer, NULL::text, c.debtor_id, c.attempt::text
        FROM contact_attempts c
        WHERE c.debtor_id = ANY(debtors)
          AND c.started_at > now() - make_interval(days => ledger_days::int);
    END IF;
END
$$;
