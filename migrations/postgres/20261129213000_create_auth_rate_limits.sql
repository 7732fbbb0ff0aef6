-- Sign-up and login attempt budgets, shared by every instance of the service (see
-- src/storage/limits.rs). One row per budget: `key` is the SHA-256 digest of what is limited
-- (a client address, an account, or both), `tat_ms` the time in milliseconds since the epoch
-- at which its budget is full again (GCRA's theoretical arrival time), `allowed` the answer
-- to the last attempt. Rows whose time has passed hold nothing and are deleted.
--
-- UNLOGGED: counters are not worth a WAL write per login attempt; after a crash the table
-- is empty, which only forgets the last minute of attempts.
CREATE UNLOGGED TABLE auth_rate_limits (
    key bytea PRIMARY KEY,
    tat_ms bigint NOT NULL,
    allowed boolean NOT NULL
);

CREATE INDEX auth_rate_limits_tat_ms ON auth_rate_limits (tat_ms);
