-- Folded keys (src/text.rs `fold`, src/auth/domain.rs `email_key`), computed by the
-- service, never by PostgreSQL, whose lower() depends on the database's collation. NULL
-- means "not computed yet": rows written before this migration, which the service
-- back-fills at start-up (and in `migrate`) before it listens. The keys' collation is "C":
-- byte order, the order SQLite gives, whatever the database's locale.
ALTER TABLE tasks
    ADD COLUMN title_key TEXT COLLATE "C",
    ADD COLUMN description_key TEXT COLLATE "C";
DROP INDEX tasks_owner_title;
CREATE INDEX tasks_owner_title ON tasks (user_id, title_key, id);
-- Finds the rows left to back-fill without reading the table.
CREATE INDEX tasks_unkeyed ON tasks (id)
    WHERE title_key IS NULL OR (description IS NOT NULL AND description_key IS NULL);

-- The address as shown stays in `email`; its canonical form is what is unique. NULL keys do
-- not collide, so an account whose address collides with an older one's after
-- normalisation keeps a NULL key (and logs in by username) rather than failing start-up.
ALTER TABLE users ADD COLUMN email_key TEXT COLLATE "C";
DROP INDEX users_email_key;
CREATE UNIQUE INDEX users_email_canonical ON users (email_key);
CREATE INDEX users_unkeyed ON users (created_at, id) WHERE email_key IS NULL;
