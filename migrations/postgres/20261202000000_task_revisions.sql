-- Each owner's task set gets a new revision in the transaction of every write to its tasks:
-- a listing whose owner's revision equals the one an instance cached its answer at may answer
-- that again (src/tasks/listing_cache.rs). A random 63-bit value rather than a sequence: a
-- sequence can go back (a point-in-time restore, a failover that loses its last values, a
-- setval) and draw again a value an instance still holds a body of; two random draws agree
-- once in 2^63. Also new for an owner whose row was deleted (an account deletion) and made
-- again.
CREATE FUNCTION task_revision() RETURNS BIGINT LANGUAGE sql VOLATILE AS $$
    SELECT (floor(random() * 2147483648)::BIGINT << 32) | floor(random() * 4294967296)::BIGINT
$$;

ALTER TABLE task_counts ADD COLUMN revision BIGINT NOT NULL DEFAULT task_revision();

CREATE OR REPLACE FUNCTION task_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_counts (user_id, tasks, completed, revision)
    SELECT user_id, count(*), count(*) FILTER (WHERE completed), task_revision()
      FROM inserted GROUP BY user_id
     ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE
       SET tasks = task_counts.tasks + excluded.tasks,
           completed = task_counts.completed + excluded.completed,
           revision = excluded.revision;
    RETURN NULL;
END
$$;

-- Every owner of an updated row gets a new revision, whatever changed; the counts move only
-- for rows whose owner or completion changed.
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
        UNION ALL
        SELECT user_id, 0, 0 FROM after
    ), per_owner AS (
        SELECT user_id, sum(tasks) AS tasks, sum(completed) AS completed
          FROM moves GROUP BY user_id
    )
    INSERT INTO task_counts (user_id, tasks, completed, revision)
    SELECT user_id, tasks, completed, task_revision() FROM per_owner ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE
       SET tasks = task_counts.tasks + excluded.tasks,
           completed = task_counts.completed + excluded.completed,
           revision = excluded.revision;
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
           completed = task_counts.completed - gone.completed,
           revision = task_revision()
      FROM (SELECT user_id, count(*) AS tasks, count(*) FILTER (WHERE completed) AS completed
              FROM deleted GROUP BY user_id) AS gone
     WHERE task_counts.user_id = gone.user_id;
    RETURN NULL;
END
$$;

-- TRUNCATE fires no row or statement trigger of the three above: every owner's tasks are gone.
CREATE FUNCTION task_counts_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE task_counts SET tasks = 0, completed = 0, revision = task_revision();
    RETURN NULL;
END
$$;

CREATE TRIGGER task_counts_truncate AFTER TRUNCATE ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION task_counts_truncated();
