-- The read half of a worker's batch transaction in one round trip (it was four).
--
-- Records the batch's event ids in the inbox, creates the accounts of the new events,
-- locks them in account-id order and returns what the rules need. Each statement of a
-- volatile PL/pgSQL function takes a fresh snapshot (READ COMMITTED), so the open tasks
-- are read after the account locks are held and include whatever the transaction that
-- held a lock before us committed.
--
-- One row per result, told apart by which columns are set:
--   fresh      an event id that was new (not a duplicate);
--   account_id + state (task_id NULL)  a locked account (its state document as text,
--                                      NULL: never decided);
--   task_id + the task columns         an open task (status scheduled or claimed).
CREATE OR REPLACE FUNCTION collections_open_batch(
    event_ids uuid[], event_types text[], event_accounts text[])
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
        t.policy_version, t.status
    FROM tasks t
    WHERE t.account_id = ANY(locked) AND t.status IN ('scheduled', 'claimed')
    ORDER BY t.created_at, t.task_id;
END
$$;

-- Marks outbox rows published. The commit need not wait for the disk: if the database
-- loses it in a crash, the rows are published again with the same event ids, which
-- consumers already deduplicate. Saves a flush per published batch.
CREATE OR REPLACE FUNCTION collections_mark_published(ids bigint[])
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE outbox SET published_at = now() WHERE id = ANY(ids);
END
$$;
