-- Timestamps are INTEGER milliseconds since the Unix epoch (UTC): they sort and compare
-- exactly, unlike text with a varying number of fractional digits.
CREATE TABLE users (
    id            TEXT    PRIMARY KEY NOT NULL,
    username      TEXT    NOT NULL,
    email         TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);
-- Usernames are ASCII (the API refuses anything else), so SQLite's ASCII lower() is exact.
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_key ON users (email);

-- user_id is the token's subject: a local user's UUID or a Better Auth id, so no foreign key.
CREATE TABLE tasks (
    id          TEXT    PRIMARY KEY NOT NULL,
    user_id     TEXT    NOT NULL,
    title       TEXT    NOT NULL,
    description TEXT,
    completed   INTEGER NOT NULL DEFAULT 0 CHECK (completed IN (0, 1)),
    -- Bumped by every change; the task's ETag, so that If-Match can refuse a stale write.
    version     INTEGER NOT NULL DEFAULT 1,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
-- One index per sort column, owner first and id last, so a listing is an index range scan
-- in the order requested, whatever the size of the table.
CREATE INDEX tasks_owner_created ON tasks (user_id, created_at, id);
CREATE INDEX tasks_owner_updated ON tasks (user_id, updated_at, id);
CREATE INDEX tasks_owner_title ON tasks (user_id, lower(title), id);
CREATE INDEX tasks_owner_completed ON tasks (user_id, completed, id);
