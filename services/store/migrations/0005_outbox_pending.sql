-- Which outbox rows still wait to be published now lives in a narrow table of its own,
-- and the outbox itself is insert-only (see ARCHITECTURE.md, "Outbox").
--
-- Before, publishing a row updated it (`published_at`). Postgres writes an update as a new
-- copy of the whole row, body included, with new entries in the row's indexes, and the
-- partial index of unpublished rows kept an entry for every dead copy until a vacuum. The
-- relays' scan for expired leases, every second in every process, visited each of those
-- dead copies: in the ingest benchmark, 10,600 heap pages (122 ms) per scan once 62,000
-- rows had been published, and the scans pushed the batch transactions' pages out of
-- shared buffers. Now a published row's `outbox_pending` entry (two columns) is deleted.
--
-- Upgrade: binaries of the previous release write `outbox.lease_until`, which this
-- migration drops, so their batch transactions fail (and retry) until they are stopped;
-- nothing is acked or lost meanwhile. Rows they left unpublished are carried over below.

-- No index on lease_until: the relays walk the primary key from the oldest id, and the
-- live rows are only those in flight plus any backlog, which is where the scan stops.
-- Entries of rows deleted since the last vacuum are passed over once, then marked dead in
-- the index by that scan and skipped by the next ones.
CREATE TABLE outbox_pending (
    id          bigint      PRIMARY KEY,
    lease_until timestamptz NOT NULL
);

INSERT INTO outbox_pending (id, lease_until)
    SELECT id, lease_until FROM outbox WHERE published_at IS NULL;

DROP INDEX outbox_unpublished;
ALTER TABLE outbox DROP COLUMN lease_until, DROP COLUMN published_at;

-- Marks outbox rows published. The commit need not wait for the disk: if the database
-- loses it in a crash, the rows are published again with the same event ids, which
-- consumers already deduplicate. Saves a flush per published batch.
CREATE OR REPLACE FUNCTION collections_mark_published(ids bigint[])
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    DELETE FROM outbox_pending WHERE id = ANY(ids);
END
$$;
