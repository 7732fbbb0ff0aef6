-- Planning fields (src/tasks/planning.rs). Every column has a default or is nullable, so rows
-- written before this migration read as tasks of today's defaults: priority medium, no tags,
-- no due date, no reminder, no recurrence. Timestamps are INTEGER milliseconds, as elsewhere.
-- The rank: 0 low, 1 medium, 2 high, 3 urgent, so the column sorts by urgency.
ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 3);
-- The tags as given, a JSON array of strings; task_tags below is what is searched.
ALTER TABLE tasks ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN due_at INTEGER;
ALTER TABLE tasks ADD COLUMN remind_at INTEGER;
-- The recurrence rule as JSON text: {"frequency", "interval", "timezone", "until"}.
ALTER TABLE tasks ADD COLUMN recurrence TEXT;
ALTER TABLE tasks ADD COLUMN next_task_id TEXT;
-- Whether the reminder for the current remind_at was sent.
ALTER TABLE tasks ADD COLUMN reminder_sent INTEGER NOT NULL DEFAULT 0 CHECK (reminder_sent IN (0, 1));

-- Listing by priority or due date is an index range scan per owner, like the other sorts.
-- SQLite indexes cannot say NULLS LAST, so the due-date indexes lead with `due_at IS NULL`
-- (undated tasks last), one per order; the listing's ORDER BY uses the same expressions.
CREATE INDEX tasks_owner_priority ON tasks (user_id, priority, id);
CREATE INDEX tasks_owner_due_asc ON tasks (user_id, due_at IS NULL, due_at, id);
CREATE INDEX tasks_owner_due_desc ON tasks (user_id, due_at IS NULL, due_at DESC, id DESC);
-- Armed reminders only (set, task open, not sent yet): what the reminder scan reads.
CREATE INDEX tasks_reminders_armed ON tasks (remind_at, id)
    WHERE remind_at IS NOT NULL AND NOT completed AND NOT reminder_sent;

-- One row per tag of a task: the tag filter and GET /api/{user_id}/tags read these.
-- tag_key is the folded tag (src/text.rs `fold`), compared in byte order.
CREATE TABLE task_tags (
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    tag_key TEXT NOT NULL,
    tag     TEXT NOT NULL,
    PRIMARY KEY (user_id, tag_key, task_id)
) WITHOUT ROWID;
CREATE INDEX task_tags_task ON task_tags (task_id);
