-- Each owner's task set gets a new revision in the transaction of every write to its tasks:
-- a listing whose owner's revision equals the one an instance cached its answer at may answer
-- that again (src/tasks/listing_cache.rs). A random 64-bit value, so a revision is not drawn
-- again for an owner whose row was deleted (an account deletion) and made again. NULL (rows
-- counted by a bulk load) means unknown: such a listing is not cached until the next write.
ALTER TABLE task_counts ADD COLUMN revision INTEGER;

UPDATE task_counts SET revision = random();

DROP TRIGGER task_counts_insert;
CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_counts (user_id, tasks, completed, revision)
    VALUES (NEW.user_id, 1, NEW.completed <> 0, random())
    ON CONFLICT (user_id) DO UPDATE
       SET tasks = tasks + 1, completed = completed + excluded.completed,
           revision = excluded.revision;
END;

DROP TRIGGER task_counts_delete;
CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks
BEGIN
    UPDATE task_counts
       SET tasks = tasks - 1, completed = completed - (OLD.completed <> 0), revision = random()
     WHERE user_id = OLD.user_id;
END;

-- Every update now, whatever changed: the counts move out of the old owner's row and into the
-- new owner's (the same row, when neither owner nor completion changed: no change but the
-- revision).
DROP TRIGGER task_counts_update;
CREATE TRIGGER task_counts_update AFTER UPDATE ON tasks
BEGIN
    UPDATE task_counts
       SET tasks = tasks - 1, completed = completed - (OLD.completed <> 0), revision = random()
     WHERE user_id = OLD.user_id;
    INSERT INTO task_counts (user_id, tasks, completed, revision)
    VALUES (NEW.user_id, 1, NEW.completed <> 0, random())
    ON CONFLICT (user_id) DO UPDATE
       SET tasks = tasks + 1, completed = completed + excluded.completed,
           revision = excluded.revision;
END;
