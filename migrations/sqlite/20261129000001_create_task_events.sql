-- The transactional outbox: one CloudEvents record per committed task change, written in the
-- change's own transaction (see src/events/). Times are Unix milliseconds, as in `tasks`.

-- The event log's head, incremented by every writing transaction. SQLite has one writer at a
-- time, so sequence order is commit order.
CREATE TABLE event_log_head (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    sequence INTEGER NOT NULL
);
INSERT INTO event_log_head (singleton, sequence) VALUES (1, 0);

CREATE TABLE task_events (
    sequence INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    subject TEXT NOT NULL,
    time INTEGER NOT NULL,
    data TEXT NOT NULL,
    delivered_at INTEGER
);
CREATE INDEX task_events_pending ON task_events (sequence) WHERE delivered_at IS NULL;
CREATE INDEX task_events_by_user ON task_events (user_id, sequence);
CREATE INDEX task_events_delivered ON task_events (delivered_at) WHERE delivered_at IS NOT NULL;

CREATE TABLE event_relay_lease (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
