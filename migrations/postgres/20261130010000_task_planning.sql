-- Planning fields (src/tasks/planning.rs). Every column has a default or is nullable, so rows
-- written before this migration read as tasks of today's defaults: priority medium, no tags,
-- no due date, no reminder, no recurrence. ADD COLUMN with a constant default rewrites
-- nothing.
ALTER TABLE tasks
    -- The rank: 0 low, 1 medium, 2 high, 3 urgent, so the column sorts by urgency.
    ADD COLUMN priority SMALLINT NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 3),
    -- The tags as given, a JSON array of strings; task_tags below is what is searched.
    ADD COLUMN tags TEXT NOT NULL DEFAULT '[]',
    ADD COLUMN due_at TIMESTAMPTZ,
    ADD COLUMN remind_at TIMESTAMPTZ,
    -- The recurrence rule as JSON text: {"frequency", "interval", "timezone", "until"}.
    ADD COLUMN recurrence TEXT,
    ADD COLUMN next_task_id UUID,
    -- Whether the reminder for the current remind_at was sent.
    ADD COLUMN reminder_sent BOOLEAN NOT NULL DEFAULT FALSE;

-- Listing by priority or due date is an index range scan per owner, like the other sorts;
-- due dates have one index per order, each with the undated tasks last.
CREATE INDEX tasks_owner_priority ON tasks (user_id, priority, id);
CREATE INDEX tasks_owner_due_asc ON tasks (user_id, due_at ASC NULLS LAST, id ASC);
CREATE INDEX tasks_owner_due_desc ON tasks (user_id, due_at DESC NULLS LAST, id DESC);
-- Armed reminders only (set, task open, not sent yet): what the reminder scan reads.
CREATE INDEX tasks_reminders_armed ON tasks (remind_at, id)
    WHERE remind_at IS NOT NULL AND NOT completed AND NOT reminder_sent;

-- One row per tag of a task: the tag filter and GET /api/{user_id}/tags read these.
-- tag_key is the folded tag (src/text.rs `fold`), compared in byte order.
CREATE TABLE task_tags (
    task_id UUID NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    tag_key TEXT COLLATE "C" NOT NULL,
    tag     TEXT NOT NULL,
    PRIMARY KEY (user_id, tag_key, task_id)
);
CREATE INDEX task_tags_task ON task_tags (task_id);
