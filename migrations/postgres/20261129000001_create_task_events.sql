-- The transactional outbox: one CloudEvents record per committed task change, written in the
-- change's own transaction (see src/events/).

-- The event log's head. Every writing transaction increments this one row just before it
-- commits; the row lock it takes is held until commit, so a transaction that gets a larger
-- sequence commits after every one with a smaller sequence. A BIGSERIAL would not do: its
-- values are handed out at insert time, so a transaction could take 5, commit after one that
-- took 6, and a reader that had already moved past 6 skip it.
CREATE TABLE event_log_head (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    sequence BIGINT NOT NULL
);
INSERT INTO event_log_head (singleton, sequence) VALUES (TRUE, 0);

CREATE TABLE task_events (
    sequence BIGINT PRIMARY KEY,
    id UUID NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    subject TEXT NOT NULL,
    time TIMESTAMPTZ NOT NULL,
    -- The task as the API returned it, as JSON text.
    data TEXT NOT NULL,
    delivered_at TIMESTAMPTZ
);
CREATE INDEX task_events_pending ON task_events (sequence) WHERE delivered_at IS NULL;
CREATE INDEX task_events_by_user ON task_events (user_id, sequence);
CREATE INDEX task_events_delivered ON task_events (delivered_at) WHERE delivered_at IS NOT NULL;

-- Which instance's relay publishes: a lease with an expiry that its holder renews. Unlike a
-- session advisory lock it holds no session state, so it works through PgBouncer in
-- transaction mode too.
CREATE TABLE event_relay_lease (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
