-- Retention and the schema check at start (see deploy/README.md, "Migrations" and
-- "Retention").
--
-- Expand only: new indexes and a new table. Binaries of the previous release run against
-- this schema unchanged.

-- Which binaries may run against this schema: those that know migrations up to at least
-- `oldest_compatible` (the migrations embedded in the binary). A binary that finds
-- migrations newer than its own still starts if it is at least this new; a migration that
-- contracts the schema (drops or renames what older binaries use) raises the number to its
-- own version in the same transaction, so older binaries refuse to start with a clear
-- message instead of failing statement by statement. 10 is the first release that checks.
CREATE TABLE schema_compat (
    only_row          boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    oldest_compatible bigint  NOT NULL
);
INSERT INTO schema_compat (oldest_compatible) VALUES (10);

-- The pruner walks each table from its oldest rows, a batch at a time. The inbox's key is
-- a random UUID and a task's age is when it was closed, so both need an index on the age;
-- appends at the right-hand edge of a timestamp index are cheap. The outbox and the
-- journal are walked along their identity keys (assigned in insertion order) instead.
-- On a large table, create these first with CREATE INDEX CONCURRENTLY under the same
-- names; IF NOT EXISTS then leaves them alone.
CREATE INDEX IF NOT EXISTS inbox_applied ON inbox (applied_at);
CREATE INDEX IF NOT EXISTS tasks_closed ON tasks ((coalesce(emitted_at, cancelled_at)))
    WHERE status IN ('emitted', 'cancelled');
