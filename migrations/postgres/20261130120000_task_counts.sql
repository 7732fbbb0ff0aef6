-- Each owner's number of tasks and of completed tasks, kept by triggers in the transaction of
-- every write to `tasks`, so a listing filtered by nothing but `completed` reads its total
-- from one row instead of counting the owner's tasks (src/storage/mod.rs `push_total`).
-- Row-level triggers: whatever writes a task (the service, an older instance during a rolling
-- deploy, a hand-written statement) keeps the count.
CREATE TABLE task_counts (
    user_id   TEXT   PRIMARY KEY,
    tasks     BIGINT NOT NULL CHECK (tasks >= 0),
    completed BIGINT NOT NULL CHECK (completed BETWEEN 0 AND tasks)
);

CREATE FUNCTION task_counts_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE task_counts
           SET tasks = tasks - 1, completed = completed - OLD.completed::int
         WHERE user_id = OLD.user_id;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO task_counts (user_id, tasks, completed)
        VALUES (NEW.user_id, 1, NEW.completed::int)
        ON CONFLICT (user_id) DO UPDATE
           SET tasks = task_counts.tasks + 1,
               completed = task_counts.completed + excluded.completed;
    END IF;
    RETURN NULL;
END
$$;

-- Constraint triggers deferred to commit: the owner's row is then locked at commit, after
-- the event log's head row (taken by the last statement of every write), so concurrent
-- writes of one owner wait for each other no longer than they already did, and always take
-- the two locks in the same order.
-- The triggers first, then the counts: the trigger's lock on `tasks` holds every other
-- writer back until this migration commits, so no write falls between the two.
CREATE CONSTRAINT TRIGGER task_counts_insert AFTER INSERT ON tasks
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION task_counts_follow();
CREATE CONSTRAINT TRIGGER task_counts_delete AFTER DELETE ON tasks
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION task_counts_follow();
CREATE CONSTRAINT TRIGGER task_counts_update AFTER UPDATE OF user_id, completed ON tasks
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (OLD.user_id IS DISTINCT FROM NEW.user_id OR OLD.completed IS DISTINCT FROM NEW.completed)
    EXECUTE FUNCTION task_counts_follow();

INSERT INTO task_counts (user_id, tasks, completed)
SELECT user_id, count(*), count(*) FILTER (WHERE completed) FROM tasks GROUP BY user_id;
