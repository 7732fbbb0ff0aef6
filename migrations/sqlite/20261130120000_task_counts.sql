-- Each owner's number of tasks and of completed tasks, kept by triggers in the transaction of
-- every write to `tasks`, so a listing filtered by nothing but `completed` reads its total
-- from one row instead of counting the owner's tasks (src/storage/mod.rs `push_total`).
-- Triggers, so that whatever writes a task (the service, an older version, a hand-written
-- statement) keeps the count.
CREATE TABLE task_counts (
    user_id   TEXT    PRIMARY KEY,
    tasks     INTEGER NOT NULL,
    completed INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO task_counts (user_id, tasks, completed)
SELECT user_id, count(*), sum(completed <> 0) FROM tasks GROUP BY user_id;

CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_counts (user_id, tasks, completed)
    VALUES (NEW.user_id, 1, NEW.completed <> 0)
    ON CONFLICT (user_id) DO UPDATE
       SET tasks = tasks + 1, completed = completed + excluded.completed;
END;

CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks
BEGIN
    UPDATE task_counts SET tasks = tasks - 1, completed = completed - (OLD.completed <> 0)
     WHERE user_id = OLD.user_id;
END;

CREATE TRIGGER task_counts_update AFTER UPDATE OF user_id, completed ON tasks
    WHEN OLD.user_id IS NOT NEW.user_id OR (OLD.completed <> 0) IS NOT (NEW.completed <> 0)
BEGIN
    UPDATE task_counts SET tasks = tasks - 1, completed = completed - (OLD.completed <> 0)
     WHERE user_id = OLD.user_id;
    INSERT INTO task_counts (user_id, tasks, completed)
    VALUES (NEW.user_id, 1, NEW.completed <> 0)
    ON CONFLICT (user_id) DO UPDATE
       SET tasks = tasks + 1, completed = completed + excluded.completed;
END;
