-- The inbox keys on CloudEvents' identity, `source` + `id`, rather than the id alone: two
-- producers may pick the same id for two events, and the second was dropped as a
-- duplicate (README, "The contract at a glance").
--
-- Rows written before this migration get the source '' and stand for "this id, from
-- whichever source": an event whose id has such a row is a duplicate, as it was before,
-- so redeliveries of events applied before the upgrade stay no-ops. The key leads with
-- `event_id` so that this look-up (and the old binaries', by id alone) uses the key.
--
-- Rebuilding the primary key locks the inbox while it runs (seconds per few million
-- rows): batch transactions wait meanwhile, nothing fails.
ALTER TABLE inbox ADD COLUMN source text NOT NULL DEFAULT '';
ALTER TABLE inbox DROP CONSTRAINT inbox_pkey;
ALTER TABLE inbox ADD PRIMARY KEY (event_id, source);

-- 0003's version (no stale claims) has had no caller since 0004, and its conflict target
-- no longer exists.
DROP FUNCTION collections_open_batch(uuid[], text[], text[]);

-- The read half of a batch, as in 0007 (a claim judged by its `claim_until`), with each
-- event's source: inbox rows keyed on (event_id, source); the new ids are returned with
-- their source.
CREATE FUNCTION collections_open_batch(
    event_ids uuid[], event_sources text[], event_types text[], event_accounts text[],
    stale_claim_secs float8)
RETURNS TABLE (
    fresh uuid, fresh_source text, account_id text, state text, task_id uuid, kind text,
    channel text, due_at timestamptz, priority smallint, tone text, reason text,
    promise_id text, cause_event_id uuid, attempt integer, policy_version text, status text)
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
        NULL::integer, NULL::text, NULL::text
    FROM unnest(fresh_ids, fresh_sources) AS f(e, s);
    -- A row created here is ours until commit; one another transaction is creating makes
    -- this wait for it and then skip it (it is locked just below).
    INSERT INTO accounts (account_id)
    SELECT a FROM unnest(locked) a ORDER BY a
    ON CONFLICT (account_id) DO NOTHING;
    RETURN QUERY SELECT NULL::uuid, NULL::text, a.account_id, a.state::text, NULL::uuid,
        NULL::text, NULL::text, NULL::timestamptz, NULL::smallint, NULL::text, NULL::text,
        NULL::text, NULL::uuid, NULL::integer, NULL::text, NULL::text
    FROM accounts a WHERE a.account_id = ANY(locked)
    ORDER BY a.account_id FOR UPDATE;
    -- The predicate is `tasks_open_by_account`'s own, so that index serves it.
    RETURN QUERY SELECT NULL::uuid, NULL::text, t.account_id, NULL::text, t.task_id, t.kind,
        t.channel, t.due_at, t.priority, t.tone, t.reason, t.promise_id, t.cause_event_id,
        t.attempt, t.policy_version,
        CASE WHEN t.status = 'claimed'
                  AND coalesce(t.claim_until,
                               t.claimed_at + make_interval(secs => stale_claim_secs)) < now()
             THEN 'stale' ELSE t.status END
    FROM tasks t
    WHERE t.account_id = ANY(locked) AND t.status IN ('scheduled', 'claimed')
    ORDER BY t.created_at, t.task_id;
END
$$;

-- 0007's version, for binaries of the previous release during a rolling upgrade: it keys
-- on the id alone, as they expect (an id any source applied is a duplicate), and records
-- its rows with the source ''.
CREATE OR REPLACE FUNCTION collections_open_batch(
    event_ids uuid[], event_types text[], event_accounts text[], stale_claim_secs float8)
RETURNS TABLE (
    fresh uuid, account_id text, state text, task_id uuid, kind text, channel text,
    due_at timestamptz, priority smallint, tone text, reason text, promise_id text,
    cause_event_id uuid, attempt integer, policy_version text, status text)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    fresh_ids uuid[];
    locked text[];
BEGIN
    WITH ins AS (
        INSERT INTO inbox (event_id, source, event_type, account_id)
        SELECT e, '', t, a FROM unnest(event_ids, event_types, event_accounts) AS u(e, t, a)
        WHERE NOT EXISTS (SELECT 1 FROM inbox l WHERE l.event_id = u.e)
        ON CONFLICT (event_id, source) DO NOTHING
        RETURNING inbox.event_id, inbox.account_id)
    SELECT coalesce(array_agg(ins.event_id), '{}'),
           coalesce(array_agg(DISTINCT ins.account_id), '{}')
    INTO fresh_ids, locked
    FROM ins;
    IF cardinality(fresh_ids) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT f, NULL::text, NULL::text, NULL::uuid, NULL::text, NULL::text,
        NULL::timestamptz, NULL::smallint, NULL::text, NULL::text, NULL::text, NULL::uuid,
        NULL::integer, NULL::text, NULL::text
    FROM unnest(fresh_ids) f;
    INSERT INTO accounts (account_id)
    SELECT a FROM unnest(locked) a ORDER BY a
    ON CONFLICT (account_id) DO NOTHING;
    RETURN QUERY SELECT NULL::uuid, a.account_id, a.state::text, NULL::uuid, NULL::text,
        NULL::text, NULL::timestamptz, NULL::smallint, NULL::text, NULL::text, NULL::text,
        NULL::uuid, NULL::integer, NULL::text, NULL::text
    FROM accounts a WHERE a.account_id = ANY(locked)
    ORDER BY a.account_id FOR UPDATE;
    RETURN QUERY SELECT NULL::uuid, t.account_id, NULL::text, t.task_id, t.kind, t.channel,
        t.due_at, t.priority, t.tone, t.reason, t.promise_id, t.cause_event_id, t.attempt,
        t.policy_version,
        CASE WHEN t.status = 'claimed'
                  AND coalesce(t.claim_until,
                               t.claimed_at + make_interval(secs => stale_claim_secs)) < now()
             THEN 'stale' ELSE t.status END
    FROM tasks t
    WHERE t.account_id = ANY(locked) AND t.status IN ('scheduled', 'claimed')
    ORDER BY t.created_at, t.task_id;
END
$$;
