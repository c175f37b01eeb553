-- Task revisions (see ARCHITECTURE.md, "Outbound order").
--
-- A task's events can reach consumers out of order: a worker's `task.scheduled` waits in
-- the outbox for its publisher (or, if the worker died, for a relay) while the scheduler
-- fires the task and publishes `task.due` at once. Every task event now carries the
-- task's revision (1 when planned, one more with each change), and the row keeps the
-- revision of its latest event, so the next change, and any replay of one, numbers its
-- event from the stored value.
--
-- Rows planned before this migration start at 1: their earlier events carried no revision.
ALTER TABLE tasks ADD COLUMN revision integer NOT NULL DEFAULT 1;

-- collections_open_batch (migration 0008: keyed on source + id, a claim judged by its
-- `claim_until`) with each open task's revision. A function of its own: a function's
-- result columns cannot change in place, and binaries of the previous release keep
-- calling 0008's during a rolling upgrade.
CREATE OR REPLACE FUNCTION collections_open_batch_revised(
    event_ids uuid[], event_sources text[], event_types text[], event_accounts text[],
    stale_claim_secs float8)
RETURNS TABLE (
    fresh uuid, fresh_source text, account_id text, state text, task_id uuid, kind text,
    channel text, due_at timestamptz, priority smallint, tone text, reason text,
    promise_id text, cause_event_id uuid, attempt integer, policy_version text, status text,
    revision integer)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    fresh_ids uuid[];
    fresh_sources text[];
    locked text[];
BEGIN
    -- The caller passes (id, source) pairs sorted, so two batches sharing ids lock them in
    -- one order.
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
        NULL::integer, NULL::text, NULL::text, NULL::integer
    FROM unnest(fresh_ids, fresh_sources) AS f(e, s);
    -- A row created here is ours until commit; one another transaction is creating makes
    -- this wait for it and then skip it (it is locked just below).
    INSERT INTO accounts (account_id)
    SELECT a FROM unnest(locked) a ORDER BY a
    ON CONFLICT (account_id) DO NOTHING;
    RETURN QUERY SELECT NULL::uuid, NULL::text, a.account_id, a.state::text, NULL::uuid,
        NULL::text, NULL::text, NULL::timestamptz, NULL::smallint, NULL::text, NULL::text,
        NULL::text, NULL::uuid, NULL::integer, NULL::text, NULL::text, NULL::integer
    FROM accounts a WHERE a.account_id = ANY(locked)
    ORDER BY a.account_id FOR UPDATE;
    -- The predicate is `tasks_open_by_account`'s own, so that index serves it.
    RETURN QUERY SELECT NULL::uuid, NULL::text, t.account_id, NULL::text, t.task_id, t.kind,
        t.channel, t.due_at, t.priority, t.tone, t.reason, t.promise_id, t.cause_event_id,
        t.attempt, t.policy_version,
        CASE WHEN t.status = 'claimed'
                  AND coalesce(t.claim_until,
                               t.claimed_at + make_interval(secs => stale_claim_secs)) < now()
             THEN 'stale' ELSE t.status END,
        t.revision
    FROM tasks t
    WHERE t.account_id = ANY(locked) AND t.status IN ('scheduled', 'claimed')
    ORDER BY t.created_at, t.task_id;
END
$$;
