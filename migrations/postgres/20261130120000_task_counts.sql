-- Each owner's number of tasks and of completed tasks, kept by triggers in the transaction of
-- every write to `tasks`, so a listing filtered by nothing but `completed` reads its total
-- from one row instead of counting the owner's tasks (src/storage/mod.rs `push_total`).
-- Triggers, so that whatever writes a task (the service, an older instance during a rolling
-- deploy, a hand-written statement) keeps the count.
--
-- Statement-level, with transition tables: one change of each owner's row per statement,
-- however many tasks it writes. Row-level triggers would update the same row once per task,
-- and within one transaction each such update walks the row's growing chain of versions:
-- deleting an account of 100 000 tasks would take minutes. An owner's row is locked from the
-- statement until commit; every write takes the event log's head row after it (its last
-- statement), so the two are always taken in the same order.
-- No CHECK on the numbers: the update trigger adds signed changes through INSERT … ON
-- CONFLICT, whose proposed row (a change, not a count) a CHECK would refuse.
CREATE TABLE task_counts (
    user_id   TEXT   PRIMARY KEY,
    tasks     BIGINT NOT NULL,
    completed BIGINT NOT NULL
);

CREATE FUNCTION task_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_counts (user_id, tasks, completed)
    SELECT user_id, count(*), count(*) FILTER (WHERE completed) FROM inserted GROUP BY user_id
    ON CONFLICT (user_id) DO UPDATE
       SET tasks = task_counts.tasks + excluded.tasks,
           completed = task_counts.completed + excluded.completed;
    RETURN NULL;
END
$$;

CREATE FUNCTION task_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE task_counts
       SET tasks = task_counts.tasks - gone.tasks,
           completed = task_counts.completed - gone.completed
      FROM (SELECT user_id, count(*) AS tasks, count(*) FILTER (WHERE completed) AS completed
              FROM deleted GROUP BY user_id) AS gone
     WHERE task_counts.user_id = gone.user_id;
    RETURN NULL;
END
$$;

-- Only rows whose owner or completion changed move a count; most updates change neither.
CREATE FUNCTION task_counts_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH changed AS (
        SELECT before.user_id AS old_owner, before.completed AS was_completed,
               after.user_id AS new_owner, after.completed AS is_completed
          FROM before JOIN after USING (id)
         WHERE before.user_id IS DISTINCT FROM after.user_id
            OR before.completed IS DISTINCT FROM after.completed
    ), moves AS (
        SELECT old_owner AS user_id, -1 AS tasks, -was_completed::int AS completed FROM changed
        UNION ALL
        SELECT new_owner, 1, is_completed::int FROM changed
    )
    INSERT INTO task_counts (user_id, tasks, completed)
    SELECT user_id, sum(tasks), sum(completed) FROM moves GROUP BY user_id
    ON CONFLICT (user_id) DO UPDATE
       SET tasks = task_counts.tasks + excluded.tasks,
           completed = task_counts.completed + excluded.completed;
    RETURN NULL;
END
$$;

-- The triggers first, then the counts: the trigger's lock on `tasks` holds every other
-- writer back until this migration commits, so no write falls between the two.
CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION task_counts_inserted();
CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION task_counts_deleted();
CREATE TRIGGER task_counts_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS before NEW TABLE AS after
    FOR EACH STATEMENT EXECUTE FUNCTION task_counts_updated();

INSERT INTO task_counts (user_id, tasks, completed)
SELECT user_id, count(*), count(*) FILTER (WHERE completed) FROM tasks GROUP BY user_id;
