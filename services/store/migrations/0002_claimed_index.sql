-- Tasks a scheduler has claimed and not yet confirmed: a handful at any time. The rescuer
-- looks for stale ones every few seconds; without this index it reads the whole
-- open-task index (every scheduled task) to find them.
CREATE INDEX IF NOT EXISTS tasks_claimed ON tasks (claimed_at) WHERE status = 'claimed';
