-- Sign-out everywhere: each account's token generation (carried by its tokens as `gen`), and
-- the latest revocation per account, which every instance polls by `revision`.
ALTER TABLE users ADD COLUMN token_generation INTEGER NOT NULL DEFAULT 0;

CREATE TABLE token_revocations (
    user_id    TEXT    PRIMARY KEY NOT NULL,
    generation INTEGER NOT NULL,
    revoked_at INTEGER NOT NULL,
    revision   INTEGER NOT NULL
);
CREATE INDEX token_revocations_revision ON token_revocations (revision);
CREATE INDEX token_revocations_revoked_at ON token_revocations (revoked_at);

-- One row: revisions come from it inside the revoking transaction, so they follow commit order.
CREATE TABLE token_revocation_clock (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL
);
INSERT INTO token_revocation_clock (id, revision) VALUES (1, 0);
