-- Runs of creates (src/storage/group_commit.rs) insert several owners' tasks in one statement,
-- so the insert trigger locks several owners' `task_counts` rows at once. Two instances whose
-- runs took the same rows in different orders could deadlock (PostgreSQL would then abort one
-- of them after `deadlock_timeout`); taken in owner order, the second waits for the first.
-- The update and delete triggers get the same order, for any statement that changes several
-- owners' counts (the service's never do; a hand-written purge would).
CREATE OR REPLACE FUNCTION task_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_counts (user_id, tasks, completed)
    SELECT user_id, count(*), count(*) FILTER (WHERE completed) FROM inserted GROUP BY user_id
     ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE
       SET tasks = task_counts.tasks + excluded.tasks,
           completed = task_counts.completed + excluded.completed;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION task_counts_updated() RETURNS trigger LANGUAGE plpgsql AS $$
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
    SELECT user_id, sum(tasks), sum(completed) FROM moves GROUP BY user_id ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE
       SET tasks = task_counts.tasks + excluded.tasks,
           completed = task_counts.completed + excluded.completed;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION task_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- UPDATE … FROM visits the rows in no set order: lock them in owner order first.
    PERFORM 1 FROM task_counts WHERE user_id IN (SELECT user_id FROM deleted)
      ORDER BY user_id FOR UPDATE;
    UPDATE task_counts
       SET tasks = task_counts.tasks - gone.tasks,
           completed = task_counts.completed - gone.completed
      FROM (SELECT user_id, count(*) AS tasks, count(*) FILTER (WHERE completed) AS completed
              FROM deleted GROUP BY user_id) AS gone
     WHERE task_counts.user_id = gone.user_id;
    RETURN NULL;
END
$$;
