-- Fencing tokens on claims and leases (see ARCHITECTURE.md, "Leases and fencing").
--
-- A scheduler that waits on a slow broker could see its claim rescued by another
-- replica and then complete that replica's claim, since completion checked only
-- `status = 'claimed'`; a move by the rescuer made the task fire again later under a new
-- id. Now each claim statement writes a token of its own (`claim_token`, random) and the
-- instant its claim runs out (`claim_until`, chosen by the claimer: its claim timeout);
-- completing, moving and renewing a claim touch only rows whose token still matches.
-- Likewise each `outbox_pending` row carries a lease number: 0 for the writer that
-- committed it, one more at each relay's claim; marking published deletes only rows whose
-- number still matches.
--
-- Rolling upgrade: binaries of the previous release leave both new task columns NULL
-- (their claims are judged by `claimed_at` and the caller's claim timeout, as before) and
-- write outbox rows with lease 0; their unfenced `collections_mark_published(ids)` stays.

ALTER TABLE tasks
    ADD COLUMN claim_token uuid,
    ADD COLUMN claim_until timestamptz;

ALTER TABLE outbox_pending ADD COLUMN lease bigint NOT NULL DEFAULT 0;

-- Marks outbox rows published, each only if its lease number is still the caller's
-- (a relay may have taken it over since). Returns how many rows were deleted: the caller
-- counts the others as lost. Asynchronous commit, as the unfenced version (migration
-- 0005): a lost mark only republishes rows with the same event ids.
CREATE OR REPLACE FUNCTION collections_mark_published(ids bigint[], leases bigint[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    DELETE FROM outbox_pending p
    USING unnest(ids, leases) AS m(id, lease)
    WHERE p.id = m.id AND p.lease = m.lease;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- As migration 0004's version, except that a claim is stale once its own `claim_until`
-- has passed (claims of previous binaries, without one, once `claimed_at` is older than
-- `stale_claim_secs`).
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
    -- The caller passes ids sorted, so two batches sharing ids lock them in one order.
    WITH ins AS (
        INSERT INTO inbox (event_id, event_type, account_id)
        SELECT * FROM unnest(event_ids, event_types, event_accounts)
        ON CONFLICT (event_id) DO NOTHING
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
    -- A row created here is ours until commit; one another transaction is creating makes
    -- this wait for it and then skip it (it is locked just below).
    INSERT INTO accounts (account_id)
    SELECT a FROM unnest(locked) a ORDER BY a
    ON CONFLICT (account_id) DO NOTHING;
    RETURN QUERY SELECT NULL::uuid, a.account_id, a.state::text, NULL::uuid, NULL::text,
        NULL::text, NULL::timestamptz, NULL::smallint, NULL::text, NULL::text, NULL::text,
        NULL::uuid, NULL::integer, NULL::text, NULL::text
    FROM accounts a WHERE a.account_id = ANY(locked)
    ORDER BY a.account_id FOR UPDATE;
    -- The predicate is `tasks_open_by_account`'s own, so that index serves it.
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
