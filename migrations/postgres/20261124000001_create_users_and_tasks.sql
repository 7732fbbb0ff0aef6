CREATE TABLE users (
    id            UUID        PRIMARY KEY,
    username      TEXT        NOT NULL,
    email         TEXT        NOT NULL,
    password_hash TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_key ON users (email);

-- user_id is the token's subject: a local user's UUID or a Better Auth id, so no foreign key.
CREATE TABLE tasks (
    id          UUID        PRIMARY KEY,
    user_id     TEXT        NOT NULL,
    title       TEXT        NOT NULL,
    description TEXT,
    completed   BOOLEAN     NOT NULL DEFAULT FALSE,
    -- Bumped by every change; the task's ETag, so that If-Match can refuse a stale write.
    version     BIGINT      NOT NULL DEFAULT 1,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
-- One index per sort column, owner first and id last, so a listing is an index range scan
-- in the order requested. Titles sort by their lower-case form in byte order ("C"), the
-- same order SQLite gives, whatever the database's locale.
CREATE INDEX tasks_owner_created ON tasks (user_id, created_at, id);
CREATE INDEX tasks_owner_updated ON tasks (user_id, updated_at, id);
CREATE INDEX tasks_owner_title ON tasks (user_id, (lower(title) COLLATE "C"), id);
CREATE INDEX tasks_owner_completed ON tasks (user_id, completed, id);
