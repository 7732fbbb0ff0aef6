-- Sign-out everywhere: each account's token generation (carried by its tokens as `gen`), and
-- the latest revocation per account, which every instance polls by `revision`.
ALTER TABLE users ADD COLUMN token_generation BIGINT NOT NULL DEFAULT 0;

CREATE TABLE token_revocations (
    user_id    TEXT        PRIMARY KEY,
    generation BIGINT      NOT NULL,
    revoked_at TIMESTAMPTZ NOT NULL,
    revision   BIGINT      NOT NULL
);
CREATE INDEX token_revocations_revision ON token_revocations (revision);
CREATE INDEX token_revocations_revoked_at ON token_revocations (revoked_at);

-- One row: its row lock, taken by the revoking transaction, orders revisions by commit, so a
-- poller reading "revision > last seen" never skips a revocation that committed late.
CREATE TABLE token_revocation_clock (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT  NOT NULL
);
INSERT INTO token_revocation_clock (id, revision) VALUES (1, 0);
