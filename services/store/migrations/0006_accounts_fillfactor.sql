-- Room on each accounts page for the next version of its rows, so that updating an
-- account's state (every event, every fired task) is a HOT update: no new index entry.
ALTER TABLE accounts SET (fillfactor = 80);
