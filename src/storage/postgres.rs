//! The PostgreSQL implementation of [`Store`], for real deployments (Neon included).

use std::{
    num::NonZeroU32,
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    Connection, FromRow, PgConnection, Postgres, Row, Transaction,
    pool::PoolConnection,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow},
};
use uuid::Uuid;

use super::{
    BACKFILL_BATCH, Dialect, EventBacklog, Listing, PlanUpdate, RELAY_LEASE, Store, StoreError,
    Taken, TaskEvent,
    group_commit::{
        self, Create, CreateQueue, Leads, QueuedCreate, QueuedUpdate, Runs, Update, UpdateQueue,
    },
    limits::{Admission, AttemptLimits, LimitKey, gcra_parameters, refusal},
    order_by, push_filters, push_page, push_total, push_unless_known, task_columns,
    warn_email_collision,
};
use crate::{
    auth::{
        domain::{Email, LoginId, User, UserCredentials, Username, email_key},
        revocation::{DELETED, Revocation},
    },
    config::{Database, Settings, is_pgbouncer_url},
    events::record::{NewEvent, StoredEvent},
    tasks::domain::{ListQuery, Priority, Recurrence, Tag, TagCount, Tags, Task},
    text::fold,
};

/// Run on each new connection (not behind PgBouncer): plan each prepared statement once.
/// `plan_cache_mode` is PostgreSQL 12's; see [`PostgresStore::connect`].
const GENERIC_PLANS: &str = "SET plan_cache_mode = force_generic_plan";

#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// False behind PgBouncer in transaction mode, where a named prepared statement may land
    /// on a server connection that already has one of that name: statements stay unnamed.
    persistent: bool,
    /// Creates waiting for the next run (see [`Store::insert_task`]).
    creates: Arc<CreateQueue>,
    /// The turn to write a run of creates: one run of this process at a time, since each
    /// holds the event log's head row until it commits anyway.
    create_turn: Arc<tokio::sync::Mutex<()>>,
    /// Updates waiting for the next run (see [`Store::update_task`]).
    updates: Arc<UpdateQueue>,
    /// The turn to write a run of updates, as [`PostgresStore::create_turn`] for creates.
    update_turn: Arc<tokio::sync::Mutex<()>>,
}

/// The connection one store call runs on. Behind PgBouncer in transaction mode it is a
/// transaction: between two syncs of the extended protocol (sqlx parses an unnamed statement
/// and binds it in separate round trips) PgBouncer may switch server connections, so the
/// bind could meet another client's statement. Inside a transaction the server connection
/// stays the same.
enum Session {
    Direct(PoolConnection<Postgres>),
    Pinned(Transaction<'static, Postgres>),
}

impl Session {
    fn conn(&mut self) -> &mut PgConnection {
        match self {
            Self::Direct(connection) => connection,
            Self::Pinned(transaction) => transaction,
        }
    }

    async fn finish(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Direct(_) => Ok(()),
            Self::Pinned(transaction) => transaction.commit().await,
        }
    }
}

impl PostgresStore {
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        // SQLAlchemy's spellings (`postgresql+asyncpg://…?ssl=require`) become sqlx's.
        let Database::Postgres { url } = settings.database()? else {
            anyhow::bail!("DATABASE_URL is not a PostgreSQL URL");
        };
        let url = url.as_str();
        let pgbouncer = is_pgbouncer_url(url);
        // The URL's own parameters (sslmode, sslrootcert, options …) are honoured as given,
        // so a Neon connection string works as pasted. `pgbouncer` is ours, not libpq's.
        let mut url = url::Url::parse(url)?;
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(key, _)| key != "pgbouncer")
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
        url.set_query(None);
        if !kept.is_empty() {
            url.query_pairs_mut().extend_pairs(kept);
        }
        let options = PgConnectOptions::from_str(url.as_str())?;
        // One plain connection first: it fails fast with the real cause (refused, TLS,
        // authentication), where the pool would retry quietly for its whole acquire timeout.
        PgConnection::connect_with(&options).await?.close().await?;
        let mut pool = PgPoolOptions::new()
            // sqlx pings each connection before handing it out (`test_before_acquire`), a
            // round trip to the server before every query. Kept: a connection cut while in
            // the pool (a restarted server, a failover, a proxy) would otherwise fail the
            // request that takes it, and the pool's connections are cut all at once
            // (tests/postgres_faults.rs, `connections_cut_in_the_pool_cost_no_request_its_answer`;
            // bench/README.md, "SQLite writes", for what the ping costs).
            .max_connections(settings.database_max_connections)
            .acquire_timeout(settings.database_acquire_timeout);
        if !pgbouncer {
            // Our statements are prepared once per connection and reused. PostgreSQL's default
            // (`auto`) re-plans a prepared statement on every execution while its custom plans
            // look cheaper than the generic one, which for a listing they always do: the
            // planning then costs more than the query (measured: bench/README.md, "Generic
            // plans"). Every statement here is keyed by the owner and walks an index on it, so
            // the generic plan is the one a custom plan would pick; `todo-api explain` shows it.
            // Not behind PgBouncer: a SET would stay on whichever server connection ran it.
            pool = pool.after_connect(|connection, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(connection, GENERIC_PLANS).await?;
                    Ok(())
                })
            });
        }
        let pool = pool.connect_lazy_with(options);
        Ok(Self {
            pool,
            persistent: !pgbouncer,
            creates: Arc::default(),
            create_turn: Arc::default(),
            updates: Arc::default(),
            update_turn: Arc::default(),
        })
    }

    async fn session(&self) -> Result<Session, sqlx::Error> {
        if self.persistent {
            Ok(Session::Direct(self.pool.acquire().await?))
        } else {
            Ok(Session::Pinned(self.pool.begin().await?))
        }
    }

    /// Computes the folded keys that rows written without them lack (rows older than the
    /// keys, or written by an older version of the service), in batches, in id order. Safe
    /// to run again, and beside another instance: a row is only written at the version it
    /// was read at, with the keys of the text it was read with.
    async fn backfill_keys(&self) -> anyhow::Result<()> {
        let mut after = Uuid::nil();
        loop {
            let mut session = self.session().await?;
            let rows: Vec<(Uuid, i64, String, Option<String>)> = sqlx::query_as(
                "SELECT id, version, title, description FROM tasks
                 WHERE (title_key IS NULL OR (description IS NOT NULL AND description_key IS NULL))
                   AND id > $1
                 ORDER BY id LIMIT $2",
            )
            .bind(after)
            .bind(BACKFILL_BATCH)
            .persistent(self.persistent)
            .fetch_all(session.conn())
            .await?;
            let Some((last, ..)) = rows.last() else {
                session.finish().await?;
                break;
            };
            after = *last;
            let (ids, versions): (Vec<Uuid>, Vec<i64>) = rows.iter().map(|r| (r.0, r.1)).unzip();
            let title_keys: Vec<String> = rows.iter().map(|r| fold(&r.2)).collect();
            let description_keys: Vec<Option<String>> =
                rows.iter().map(|r| r.3.as_deref().map(fold)).collect();
            // One statement per batch: one round trip, not one per row.
            sqlx::query(
                "UPDATE tasks SET title_key = keys.title_key, description_key = keys.description_key
                 FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[])
                      AS keys (id, version, title_key, description_key)
                 WHERE tasks.id = keys.id AND tasks.version = keys.version",
            )
            .bind(ids)
            .bind(versions)
            .bind(title_keys)
            .bind(description_keys)
            .persistent(self.persistent)
            .execute(session.conn())
            .await?;
            session.finish().await?;
            tracing::info!(tasks = rows.len(), "back-filled folded title keys");
        }
        // Oldest first, so that of two addresses that become one, the older account keeps it.
        let mut after: Option<(DateTime<Utc>, Uuid)> = None;
        loop {
            let mut session = self.session().await?;
            let rows: Vec<(Uuid, DateTime<Utc>, String)> = sqlx::query_as(
                "SELECT id, created_at, email FROM users
                 WHERE email_key IS NULL AND ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2))
                 ORDER BY created_at, id LIMIT $3",
            )
            .bind(after.map(|a| a.0))
            .bind(after.map(|a| a.1))
            .bind(BACKFILL_BATCH)
            .persistent(self.persistent)
            .fetch_all(session.conn())
            .await?;
            session.finish().await?;
            let Some((id, created_at, _)) = rows.last() else {
                break;
            };
            after = Some((*created_at, *id));
            for (id, _, email) in &rows {
                let key = email_key(email);
                // One statement per session: a unique violation would abort a transaction.
                let mut session = self.session().await?;
                let written = sqlx::query(
                    "UPDATE users SET email_key = $1 WHERE id = $2 AND email_key IS NULL AND email = $3",
                )
                .bind(&key)
                .bind(id)
                .bind(email)
                .persistent(self.persistent)
                .execute(session.conn())
                .await;
                match written {
                    Ok(_) => session.finish().await?,
                    Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                        drop(session);
                        let mut session = self.session().await?;
                        let holder: Option<Uuid> =
                            sqlx::query_scalar("SELECT id FROM users WHERE email_key = $1")
                                .bind(&key)
                                .persistent(self.persistent)
                                .fetch_optional(session.conn())
                                .await?;
                        session.finish().await?;
                        warn_email_collision(id, holder.as_ref().map(|h| h as _));
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Ok(())
    }
}

/// A task's columns, read by position in [`task_columns!`] order.
struct TaskRow {
    id: Uuid,
    user_id: String,
    title: String,
    description: Option<String>,
    completed: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
    priority: i16,
    tags: String,
    due_at: Option<DateTime<Utc>>,
    remind_at: Option<DateTime<Utc>>,
    recurrence: Option<String>,
    next_task_id: Option<Uuid>,
    reminder_sent: bool,
}

impl TryFrom<TaskRow> for Task {
    type Error = StoreError;

    fn try_from(row: TaskRow) -> Result<Self, StoreError> {
        Ok(Task {
            id: row.id,
            user_id: row.user_id,
            title: row.title,
            description: row.description,
            completed: row.completed,
            created_at: row.created_at,
            updated_at: row.updated_at,
            version: row.version,
            priority: Priority::from_rank(row.priority.into()).ok_or_else(|| {
                StoreError::Other(anyhow::anyhow!("unknown priority rank {}", row.priority))
            })?,
            tags: Tags::from_stored(&row.tags).map_err(StoreError::Other)?,
            due_at: row.due_at,
            remind_at: row.remind_at,
            recurrence: row
                .recurrence
                .as_deref()
                .map(Recurrence::from_stored)
                .transpose()
                .map_err(StoreError::Other)?,
            next_task_id: row.next_task_id,
            reminder_sent: row.reminder_sent,
        })
    }
}

fn one_task(row: Option<TaskRow>) -> Result<Option<Task>, StoreError> {
    row.map(Task::try_from).transpose()
}

/// A row of the listing: a task of the page (`None` for the one row of an empty or unread
/// page, whose task columns are NULL), the total of matching tasks and their revision.
struct ListingRow {
    task: Option<TaskRow>,
    total: i64,
    revision: Option<i64>,
}

/// Read by position, in [`task_columns!`] order (then the listing's `total`):
/// `#[derive(FromRow)]` looks every column up by name, which hashes the name for every value
/// of every row (7 % of a listing's instructions; bench/README.md, "Row decoding"). And
/// unchecked: `try_get` also compares each value's PostgreSQL type with the Rust type's before
/// decoding it, and without that (and with the body sized at once) a page of 50 tasks takes
/// 12.5 % fewer instructions. The columns' types are fixed by the migrations and
/// `task_columns!`; a column out of order or of another type fails every test that reads a
/// task (its value decodes as an error or as another value), as the comparison would.
impl<'r> FromRow<'r, PgRow> for TaskRow {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get_unchecked(0)?,
            user_id: row.try_get_unchecked(1)?,
            title: row.try_get_unchecked(2)?,
            description: row.try_get_unchecked(3)?,
            completed: row.try_get_unchecked(4)?,
            created_at: row.try_get_unchecked(5)?,
            updated_at: row.try_get_unchecked(6)?,
            version: row.try_get_unchecked(7)?,
            priority: row.try_get_unchecked(8)?,
            tags: row.try_get_unchecked(9)?,
            due_at: row.try_get_unchecked(10)?,
            remind_at: row.try_get_unchecked(11)?,
            recurrence: row.try_get_unchecked(12)?,
            next_task_id: row.try_get_unchecked(13)?,
            reminder_sent: row.try_get_unchecked(14)?,
        })
    }
}

impl<'r> FromRow<'r, PgRow> for ListingRow {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let id: Option<Uuid> = row.try_get_unchecked(0)?;
        Ok(Self {
            task: id.map(|_| TaskRow::from_row(row)).transpose()?,
            total: row.try_get_unchecked(15)?,
            revision: row.try_get_unchecked(16)?,
        })
    }
}

#[derive(FromRow)]
struct UserRow {
    id: Uuid,
    username: String,
    email: String,
    password_hash: String,
    created_at: DateTime<Utc>,
    token_generation: i64,
}

impl From<UserRow> for UserCredentials {
    fn from(row: UserRow) -> Self {
        UserCredentials {
            user: User {
                id: row.id,
                username: row.username,
                email: row.email,
                created_at: row.created_at,
            },
            password_hash: row.password_hash,
            token_generation: row.token_generation,
        }
    }
}

/// The listing's one statement, after `prefix` (empty, or `EXPLAIN `). One statement, so one
/// snapshot: the page and its total cannot disagree however writes interleave, and one round
/// trip instead of two. The count is the outer side of a LATERAL join, so a page past the end
/// still returns it (one row of NULL task columns). The outer ORDER BY repeats the page's,
/// because a join's output order is otherwise unspecified. With the kept totals, the page is
/// not read when the owner's revision is `known` (one row of NULL task columns again), from
/// the same snapshot as the page would be.
fn listing_statement(
    prefix: &str,
    owner: &str,
    query: &ListQuery,
    known: Option<i64>,
) -> sqlx::QueryBuilder<'static, Postgres> {
    let order = order_by(query, Dialect::Postgres);
    let mut listing = sqlx::QueryBuilder::new(format!(
        concat!(
            "{}SELECT ",
            task_columns!(),
            ", counted.total, counted.revision FROM ("
        ),
        prefix
    ));
    push_total(&mut listing, Dialect::Postgres, owner, query, |t| t);
    // The page also carries the title key, which the outer ORDER BY may sort on.
    listing.push(concat!(
        ") AS counted LEFT JOIN LATERAL (SELECT ",
        task_columns!(),
        ", title_key"
    ));
    push_filters(&mut listing, Dialect::Postgres, owner, query, |t| t);
    push_unless_known(&mut listing, " AND ", query, known);
    listing.push(&order);
    push_page(&mut listing, query);
    listing.push(") AS page ON true");
    listing.push(&order);
    listing
}

/// The generic plan of the listing's statement, the plan the service runs ([`GENERIC_PLANS`]):
/// `EXPLAIN` of a statement with bound values would plan for those values instead.
async fn generic_plan(
    pool: &PgPool,
    owner: &str,
    query: &ListQuery,
) -> Result<Vec<String>, StoreError> {
    // The statement is prepared by name on a connection of its own (then closed), so nothing
    // is left behind in the pool's connections.
    let mut listing = listing_statement("", owner, query, None);
    let prepare = format!("PREPARE todo_listing_plan AS {}", listing.sql());
    let arguments = sqlx::Execute::take_arguments(&mut listing.build())
        .map_err(sqlx::Error::Encode)?
        .ok_or_else(|| StoreError::Other(anyhow::anyhow!("the listing binds no values")))?;
    // A generic plan does not depend on the values, so each is passed as NULL: no value
    // reaches the SQL text. Without ANALYZE nothing is executed.
    let values = vec!["NULL"; sqlx::Arguments::len(&arguments)].join(", ");
    let explain = format!("EXPLAIN EXECUTE todo_listing_plan({values})");
    let mut connection = pool.acquire().await?.detach();
    // `prepare` is the listing's own text, whose values are all placeholders.
    sqlx::Executor::execute(&mut connection, sqlx::raw_sql(&prepare)).await?;
    let lines: Vec<(String,)> = sqlx::query_as(&explain)
        .persistent(false)
        .fetch_all(&mut connection)
        .await?;
    connection.close().await?;
    Ok(lines.into_iter().map(|(line,)| line).collect())
}

/// Records, inside the revoking transaction, that tokens of account `id` below `generation`
/// are refused from `now` on. The clock row's lock, held until commit, orders revisions by
/// commit.
async fn record_revocation(
    transaction: &mut Transaction<'static, Postgres>,
    persistent: bool,
    id: Uuid,
    generation: i64,
    now: DateTime<Utc>,
) -> Result<Revocation, StoreError> {
    let revision: i64 = sqlx::query_scalar(
        "UPDATE token_revocation_clock SET revision = revision + 1 WHERE id = 1 RETURNING revision",
    )
    .persistent(persistent)
    .fetch_one(&mut **transaction)
    .await?;
    sqlx::query(
        "INSERT INTO token_revocations (user_id, generation, revoked_at, revision)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id) DO UPDATE SET generation = excluded.generation,
             revoked_at = excluded.revoked_at, revision = excluded.revision",
    )
    .bind(id.to_string())
    .bind(generation)
    .bind(now)
    .bind(revision)
    .persistent(persistent)
    .execute(&mut **transaction)
    .await?;
    Ok(Revocation {
        subject: id.to_string(),
        generation,
        revoked_at: now,
        revision,
    })
}

/// The columns of an event, in the order [`EventRow`] reads them.
macro_rules! event_columns {
    () => {
        "sequence, id, user_id, type, source, subject, time, data"
    };
}
#[derive(FromRow)]
struct EventRow {
    sequence: i64,
    id: Uuid,
    user_id: String,
    #[sqlx(rename = "type")]
    event_type: String,
    source: String,
    subject: String,
    time: DateTime<Utc>,
    data: String,
}

impl From<EventRow> for StoredEvent {
    fn from(row: EventRow) -> Self {
        StoredEvent {
            sequence: row.sequence,
            id: row.id,
            event_type: row.event_type,
            source: row.source,
            subject: row.subject,
            user_id: row.user_id,
            time: row.time,
            data: row.data,
        }
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> anyhow::Result<()> {
        // sqlx takes an advisory lock here, so instances starting together migrate once.
        sqlx::migrate!("migrations/postgres")
            .run(&self.pool)
            .await?;
        self.backfill_keys().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut session = self.session().await?;
        sqlx::query("SELECT 1")
            .persistent(self.persistent)
            .execute(session.conn())
            .await?;
        session.finish().await?;
        Ok(())
    }

    async fn taken(&self, username: &Username, email: &Email) -> Result<Taken, StoreError> {
        let mut session = self.session().await?;
        let (username, email): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM users WHERE lower(username) = lower($1)),
                    EXISTS (SELECT 1 FROM users WHERE email_key = $2)",
        )
        .bind(username.as_str())
        .bind(email.key())
        .persistent(self.persistent)
        .fetch_one(session.conn())
        .await?;
        session.finish().await?;
        Ok(Taken { username, email })
    }

    async fn insert_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
        let mut session = self.session().await?;
        sqlx::query(
            "INSERT INTO users (id, username, email, password_hash, created_at, email_key)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user.id)
        .bind(&user.username)
        .bind(&user.email)
        .bind(password_hash)
        .bind(user.created_at)
        .bind(email_key(&user.email))
        .persistent(self.persistent)
        .execute(session.conn())
        .await?;
        session.finish().await?;
        Ok(())
    }

    async fn find_credentials(
        &self,
        login: &LoginId,
    ) -> Result<Option<UserCredentials>, StoreError> {
        let mut session = self.session().await?;
        let (sql, value) = match login {
            LoginId::Username(name) => (
                "SELECT id, username, email, password_hash, created_at, token_generation FROM users
                 WHERE lower(username) = lower($1)",
                name,
            ),
            LoginId::Email(email) => (
                "SELECT id, username, email, password_hash, created_at, token_generation FROM users
                 WHERE email_key = $1",
                email,
            ),
        };
        let row: Option<UserRow> = sqlx::query_as(sql)
            .bind(value)
            .persistent(self.persistent)
            .fetch_optional(session.conn())
            .await?;
        session.finish().await?;
        Ok(row.map(UserCredentials::from))
    }

    async fn find_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        Ok(self
            .find_credentials_by_id(id)
            .await?
            .map(|credentials| credentials.user))
    }

    async fn find_credentials_by_id(
        &self,
        id: Uuid,
    ) -> Result<Option<UserCredentials>, StoreError> {
        let mut session = self.session().await?;
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT id, username, email, password_hash, created_at, token_generation FROM users WHERE id = $1",
        )
        .bind(id)
        .persistent(self.persistent)
        .fetch_optional(session.conn())
        .await?;
        session.finish().await?;
        Ok(row.map(UserCredentials::from))
    }

    async fn taken_by_others(
        &self,
        id: Uuid,
        username: Option<&Username>,
        email: Option<&Email>,
    ) -> Result<Taken, StoreError> {
        let mut session = self.session().await?;
        let (username, email): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM users WHERE lower(username) = lower($2) AND id <> $1),
                    EXISTS (SELECT 1 FROM users WHERE email_key = $3 AND id <> $1)",
        )
        .bind(id)
        .bind(username.map(Username::as_str))
        .bind(email.map(Email::key))
        .persistent(self.persistent)
        .fetch_one(session.conn())
        .await?;
        session.finish().await?;
        Ok(Taken { username, email })
    }

    async fn update_account(
        &self,
        id: Uuid,
        username: Option<&Username>,
        email: Option<&Email>,
    ) -> Result<Option<User>, StoreError> {
        let mut session = self.session().await?;
        let row: Option<UserRow> = sqlx::query_as(
            "UPDATE users SET username = COALESCE($2, username), email = COALESCE($3, email),
                              email_key = COALESCE($4, email_key)
             WHERE id = $1
             RETURNING id, username, email, password_hash, created_at, token_generation",
        )
        .bind(id)
        .bind(username.map(Username::as_str))
        .bind(email.map(Email::as_str))
        .bind(email.map(Email::key))
        .persistent(self.persistent)
        .fetch_optional(session.conn())
        .await?;
        session.finish().await?;
        Ok(row.map(|row| UserCredentials::from(row).user))
    }

    async fn revoke_tokens(
        &self,
        id: Uuid,
        new_password_hash: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<Revocation>, StoreError> {
        let mut transaction = self.pool.begin().await?;
        let generation: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET token_generation = token_generation + 1,
                              password_hash = COALESCE($2, password_hash)
             WHERE id = $1 RETURNING token_generation",
        )
        .bind(id)
        .bind(new_password_hash)
        .persistent(self.persistent)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(generation) = generation else {
            return Ok(None);
        };
        let revocation =
            record_revocation(&mut transaction, self.persistent, id, generation, now).await?;
        transaction.commit().await?;
        Ok(Some(revocation))
    }

    async fn delete_account(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        event: &TaskEvent<'_>,
    ) -> Result<Option<Revocation>, StoreError> {
        let mut transaction = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .persistent(self.persistent)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(None);
        }
        // The tasks are locked in id order first, as a run of updates locks them: in the
        // order the DELETE happened to visit them, a run holding one of them while waiting
        // for another could deadlock with it.
        let rows: Vec<TaskRow> = sqlx::query_as(concat!(
            "WITH locked AS MATERIALIZED (
                 SELECT id FROM tasks WHERE user_id = $1 ORDER BY id FOR UPDATE
             )
             DELETE FROM tasks WHERE user_id = $1 AND id IN (SELECT id FROM locked)
             RETURNING ",
            task_columns!()
        ))
        .bind(id.to_string())
        .persistent(self.persistent)
        .fetch_all(&mut *transaction)
        .await?;
        let mut tasks = rows
            .into_iter()
            .map(Task::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        // The triggers left the owner's counts at zero; the row goes with the account.
        sqlx::query("DELETE FROM task_counts WHERE user_id = $1")
            .bind(id.to_string())
            .persistent(self.persistent)
            .execute(&mut *transaction)
            .await?;
        tasks.sort_by_key(|task| task.id);
        append_events_of(&mut transaction, &tasks, event, self.persistent).await?;
        let revocation =
            record_revocation(&mut transaction, self.persistent, id, DELETED, now).await?;
        transaction.commit().await?;
        Ok(Some(revocation))
    }

    async fn revocations_after(&self, revision: i64) -> Result<Vec<Revocation>, StoreError> {
        let mut session = self.session().await?;
        let rows: Vec<(String, i64, DateTime<Utc>, i64)> = sqlx::query_as(
            "SELECT user_id, generation, revoked_at, revision FROM token_revocations
             WHERE revision > $1 ORDER BY revision",
        )
        .bind(revision)
        .persistent(self.persistent)
        .fetch_all(session.conn())
        .await?;
        session.finish().await?;
        Ok(rows
            .into_iter()
            .map(|(subject, generation, revoked_at, revision)| Revocation {
                subject,
                generation,
                revoked_at,
                revision,
            })
            .collect())
    }

    async fn prune_revocations(&self, before: DateTime<Utc>) -> Result<(), StoreError> {
        let mut session = self.session().await?;
        sqlx::query("DELETE FROM token_revocations WHERE revoked_at < $1")
            .bind(before)
            .persistent(self.persistent)
            .execute(session.conn())
            .await?;
        session.finish().await?;
        Ok(())
    }

    async fn insert_task(&self, task: &Task, event: &NewEvent) -> Result<(), StoreError> {
        // Group commit (storage/group_commit.rs): whoever takes the turn next writes the
        // creates queued by then, under one lock of the event log's head row.
        group_commit::create(self, task, event).await
    }

    async fn list_tasks(
        &self,
        owner: &str,
        query: &ListQuery,
        known: Option<i64>,
    ) -> Result<Listing, StoreError> {
        let mut listing = listing_statement("", owner, query, known);
        let mut session = self.session().await?;
        let rows: Vec<ListingRow> = listing
            .build_query_as()
            .persistent(self.persistent)
            .fetch_all(session.conn())
            .await?;
        session.finish().await?;
        let (total, revision) = rows
            .first()
            .map_or((0, None), |row| (row.total.max(0) as u64, row.revision));
        let tasks = if known.is_some() && revision == known {
            None
        } else {
            Some(
                rows.into_iter()
                    .filter_map(|row| row.task.map(Task::try_from))
                    .collect::<Result<_, _>>()?,
            )
        };
        Ok(Listing {
            tasks,
            total,
            revision,
        })
    }

    async fn explain_listing(
        &self,
        owner: &str,
        query: &ListQuery,
    ) -> Result<Vec<String>, StoreError> {
        if !self.persistent {
            // Unnamed statements are planned for their values each time: that plan.
            let mut listing = listing_statement("EXPLAIN ", owner, query, None);
            let mut session = self.session().await?;
            let lines: Vec<(String,)> = listing
                .build_query_as()
                .persistent(false)
                .fetch_all(session.conn())
                .await?;
            session.finish().await?;
            return Ok(lines.into_iter().map(|(line,)| line).collect());
        }
        generic_plan(&self.pool, owner, query).await
    }

    async fn get_task(&self, owner: &str, id: Uuid) -> Result<Option<Task>, StoreError> {
        let mut session = self.session().await?;
        let row: Option<TaskRow> = sqlx::query_as(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE user_id = $1 AND id = $2"
        ))
        .bind(owner)
        .bind(id)
        .persistent(self.persistent)
        .fetch_optional(session.conn())
        .await?;
        session.finish().await?;
        one_task(row)
    }

    async fn update_task(
        &self,
        owner: &str,
        id: Uuid,
        version: Option<i64>,
        plan: &PlanUpdate<'_>,
    ) -> Result<Option<Task>, StoreError> {
        // Group commit (storage/group_commit.rs), optimistic: the task is read and the update
        // planned outside any transaction; whoever takes the update turn next writes the
        // updates queued by then, each only if its task has not changed since.
        group_commit::update_optimistically(self, owner, id, version, plan).await
    }

    async fn delete_task(
        &self,
        owner: &str,
        id: Uuid,
        version: Option<i64>,
        event: &TaskEvent<'_>,
    ) -> Result<Option<Task>, StoreError> {
        let mut transaction = self.pool.begin().await?;
        let row: Option<TaskRow> = sqlx::query_as(concat!(
            "DELETE FROM tasks WHERE user_id = $1 AND id = $2 AND ($3 IS NULL OR version = $3)
             RETURNING ",
            task_columns!()
        ))
        .bind(owner)
        .bind(id)
        .bind(version)
        .persistent(self.persistent)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(task) = one_task(row)? else {
            return Ok(None);
        };
        append_events(&mut transaction, &[&event(&task)], self.persistent).await?;
        transaction.commit().await?;
        Ok(Some(task))
    }

    async fn tag_counts(&self, owner: &str) -> Result<Vec<TagCount>, StoreError> {
        let mut session = self.session().await?;
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT min(task_tags.tag COLLATE \"C\"),
                    count(*) FILTER (WHERE NOT tasks.completed), count(*)
             FROM task_tags JOIN tasks ON tasks.id = task_tags.task_id
             WHERE task_tags.user_id = $1
             GROUP BY task_tags.tag_key
             ORDER BY count(*) DESC, task_tags.tag_key",
        )
        .bind(owner)
        .persistent(self.persistent)
        .fetch_all(session.conn())
        .await?;
        session.finish().await?;
        Ok(rows
            .into_iter()
            .map(|(tag, open, total)| TagCount {
                tag,
                open: open.max(0) as u64,
                total: total.max(0) as u64,
            })
            .collect())
    }

    async fn send_due_reminders(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        event: &TaskEvent<'_>,
    ) -> Result<usize, StoreError> {
        let mut transaction = self.pool.begin().await?;
        // SKIP LOCKED: each due task is claimed by one instance; a row being changed by a
        // request is left for the next round, when its reminder may be disarmed.
        let rows: Vec<TaskRow> = sqlx::query_as(concat!(
            "UPDATE tasks SET reminder_sent = TRUE
             WHERE id IN (SELECT id FROM tasks
                          WHERE remind_at <= $1 AND NOT completed AND NOT reminder_sent
                          ORDER BY remind_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
               AND NOT completed AND NOT reminder_sent
             RETURNING ",
            task_columns!()
        ))
        .bind(now)
        .bind(i64::from(limit))
        .persistent(self.persistent)
        .fetch_all(&mut *transaction)
        .await?;
        let mut tasks = rows
            .into_iter()
            .map(Task::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        tasks.sort_by_key(|task| (task.remind_at, task.id));
        append_events_of(&mut transaction, &tasks, event, self.persistent).await?;
        transaction.commit().await?;
        Ok(tasks.len())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn pending_events(&self, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let mut session = self.session().await?;
        let rows: Vec<EventRow> = sqlx::query_as(concat!(
            "SELECT ",
            event_columns!(),
            " FROM task_events WHERE delivered_at IS NULL ORDER BY sequence LIMIT $1"
        ))
        .bind(i64::from(limit))
        .persistent(self.persistent)
        .fetch_all(session.conn())
        .await?;
        session.finish().await?;
        Ok(rows.into_iter().map(StoredEvent::from).collect())
    }

    async fn mark_delivered(&self, through: i64, holder: &str) -> Result<u64, StoreError> {
        let mut session = self.session().await?;
        let result = sqlx::query(
            "UPDATE task_events SET delivered_at = now()
             WHERE sequence <= $1 AND delivered_at IS NULL
               AND EXISTS (SELECT 1 FROM event_relay_lease
                           WHERE name = $2 AND holder = $3 AND expires_at > now())",
        )
        .bind(through)
        .bind(RELAY_LEASE)
        .bind(holder)
        .persistent(self.persistent)
        .execute(session.conn())
        .await?;
        session.finish().await?;
        Ok(result.rows_affected())
    }

    async fn prune_delivered(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut session = self.session().await?;
        let result = sqlx::query("DELETE FROM task_events WHERE delivered_at < $1")
            .bind(before)
            .persistent(self.persistent)
            .execute(session.conn())
            .await?;
        session.finish().await?;
        Ok(result.rows_affected())
    }

    async fn event_backlog(&self) -> Result<EventBacklog, StoreError> {
        let mut session = self.session().await?;
        let (pending, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), min(time) FROM task_events WHERE delivered_at IS NULL",
        )
        .persistent(self.persistent)
        .fetch_one(session.conn())
        .await?;
        session.finish().await?;
        Ok(EventBacklog {
            pending: pending.max(0) as u64,
            oldest,
        })
    }

    async fn user_events(
        &self,
        owner: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut session = self.session().await?;
        let rows: Vec<EventRow> = sqlx::query_as(concat!(
            "SELECT ",
            event_columns!(),
            " FROM task_events WHERE user_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
        ))
        .bind(owner)
        .bind(after)
        .bind(i64::from(limit))
        .persistent(self.persistent)
        .fetch_all(session.conn())
        .await?;
        session.finish().await?;
        Ok(rows.into_iter().map(StoredEvent::from).collect())
    }

    async fn last_sequence(&self) -> Result<i64, StoreError> {
        let mut session = self.session().await?;
        let (sequence,): (i64,) = sqlx::query_as("SELECT sequence FROM event_log_head")
            .persistent(self.persistent)
            .fetch_one(session.conn())
            .await?;
        session.finish().await?;
        Ok(sequence)
    }

    async fn hold_relay_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut session = self.session().await?;
        // Taken when free or expired, renewed when ours; the database's clock decides, so
        // instances with skewed clocks still agree.
        let held: Option<(String,)> = sqlx::query_as(
            "INSERT INTO event_relay_lease (name, holder, expires_at)
             VALUES ($1, $2, clock_timestamp() + $3 * interval '1 millisecond')
             ON CONFLICT (name) DO UPDATE
                 SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
                 WHERE event_relay_lease.holder = EXCLUDED.holder
                    OR event_relay_lease.expires_at < clock_timestamp()
             RETURNING holder",
        )
        .bind(RELAY_LEASE)
        .bind(holder)
        .bind(ttl.as_millis() as i64)
        .persistent(self.persistent)
        .fetch_optional(session.conn())
        .await?;
        session.finish().await?;
        Ok(held.is_some())
    }

    async fn release_relay_lease(&self, holder: &str) -> Result<(), StoreError> {
        let mut session = self.session().await?;
        sqlx::query("DELETE FROM event_relay_lease WHERE name = $1 AND holder = $2")
            .bind(RELAY_LEASE)
            .bind(holder)
            .persistent(self.persistent)
            .execute(session.conn())
            .await?;
        session.finish().await?;
        Ok(())
    }

    fn attempt_limits(&self) -> Arc<dyn AttemptLimits> {
        Arc::new(PostgresLimits {
            store: self.clone(),
            last_sweep: Mutex::new(None),
        })
    }
}

/// The database's clock in milliseconds since the epoch: every instance reads the same one.
macro_rules! now_ms {
    () => {
        "(extract(epoch FROM statement_timestamp()) * 1000)::bigint"
    };
}

/// Attempt budgets in the `auth_rate_limits` table, shared by every instance. Each take is
/// one atomic upsert; rows whose budget is full again are deleted at most once a minute per
/// instance, in the background.
struct PostgresLimits {
    store: PostgresStore,
    last_sweep: Mutex<Option<std::time::Instant>>,
}

const LIMIT_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl PostgresLimits {
    fn sweep_if_due(&self) {
        let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < LIMIT_SWEEP_INTERVAL) {
            return;
        }
        *last = Some(std::time::Instant::now());
        let store = self.store.clone();
        tokio::spawn(async move {
            let swept = async {
                let mut session = store.session().await?;
                let done = sqlx::query(concat!(
                    "DELETE FROM auth_rate_limits WHERE tat_ms < ",
                    now_ms!()
                ))
                .persistent(store.persistent)
                .execute(session.conn())
                .await?;
                session.finish().await?;
                Ok::<u64, sqlx::Error>(done.rows_affected())
            };
            match swept.await {
                Ok(rows) => tracing::debug!(rows, "expired rate-limit rows swept"),
                Err(error) => tracing::debug!(%error, "rate-limit sweep failed; retried later"),
            }
        });
    }
}

#[async_trait]
impl AttemptLimits for PostgresLimits {
    async fn take(&self, key: &LimitKey, per_minute: NonZeroU32) -> Result<Admission, StoreError> {
        self.sweep_if_due();
        let (interval, burst) = gcra_parameters(per_minute);
        let mut session = self.store.session().await?;
        // The row lock of the upsert makes the read and the write one step, across instances.
        let (allowed, ahead_ms): (bool, i64) = sqlx::query_as(concat!(
            "INSERT INTO auth_rate_limits AS r (key, tat_ms, allowed) VALUES ($1, ",
            now_ms!(),
            " + $2, true)
             ON CONFLICT (key) DO UPDATE SET
                 allowed = GREATEST(r.tat_ms, ",
            now_ms!(),
            ") - ",
            now_ms!(),
            " <= $3,
                 tat_ms = CASE WHEN GREATEST(r.tat_ms, ",
            now_ms!(),
            ") - ",
            now_ms!(),
            " <= $3 THEN GREATEST(r.tat_ms, ",
            now_ms!(),
            ") + $2 ELSE r.tat_ms END
             RETURNING allowed, tat_ms - ",
            now_ms!()
        ))
        .bind(&key.0[..])
        .bind(interval)
        .bind(burst)
        .persistent(self.store.persistent)
        .fetch_one(session.conn())
        .await?;
        session.finish().await?;
        Ok(if allowed {
            Admission::Allowed
        } else {
            refusal(ahead_ms - burst)
        })
    }

    async fn give_back(&self, key: &LimitKey, per_minute: NonZeroU32) -> Result<(), StoreError> {
        let (interval, _) = gcra_parameters(per_minute);
        let mut session = self.store.session().await?;
        sqlx::query("UPDATE auth_rate_limits SET tat_ms = tat_ms - $2 WHERE key = $1")
            .bind(&key.0[..])
            .bind(interval)
            .persistent(self.store.persistent)
            .execute(session.conn())
            .await?;
        session.finish().await?;
        Ok(())
    }

    async fn remember(&self, key: &LimitKey, ttl: std::time::Duration) -> Result<(), StoreError> {
        let mut session = self.store.session().await?;
        // A remembered key is a row whose time lies `ttl` ahead; the sweep deletes it after.
        sqlx::query(concat!(
            "INSERT INTO auth_rate_limits (key, tat_ms, allowed) VALUES ($1, ",
            now_ms!(),
            " + $2, true)
             ON CONFLICT (key) DO UPDATE SET tat_ms = EXCLUDED.tat_ms"
        ))
        .bind(&key.0[..])
        .bind(ttl.as_millis() as i64)
        .persistent(self.store.persistent)
        .execute(session.conn())
        .await?;
        session.finish().await?;
        Ok(())
    }

    async fn remembers(&self, key: &LimitKey) -> Result<bool, StoreError> {
        let mut session = self.store.session().await?;
        let (remembered,): (bool,) = sqlx::query_as(concat!(
            "SELECT EXISTS (SELECT 1 FROM auth_rate_limits WHERE key = $1 AND tat_ms > ",
            now_ms!(),
            ")"
        ))
        .bind(&key.0[..])
        .persistent(self.store.persistent)
        .fetch_one(session.conn())
        .await?;
        session.finish().await?;
        Ok(remembered)
    }
}

impl Leads<Create> for PostgresStore {
    type Turn = tokio::sync::OwnedMutexGuard<()>;

    fn queue(&self) -> &CreateQueue {
        &self.creates
    }

    async fn turn(&self) -> Self::Turn {
        self.create_turn.clone().lock_owned().await
    }

    async fn lead(&self, _turn: Self::Turn) -> Result<(), StoreError> {
        group_commit::write_in_runs(&mut self.runs(), &self.creates).await;
        Ok(())
    }
}

impl Leads<Update> for PostgresStore {
    type Turn = tokio::sync::OwnedMutexGuard<()>;

    fn queue(&self) -> &UpdateQueue {
        &self.updates
    }

    async fn turn(&self) -> Self::Turn {
        self.update_turn.clone().lock_owned().await
    }

    async fn lead(&self, _turn: Self::Turn) -> Result<(), StoreError> {
        group_commit::write_in_runs(&mut self.runs(), &self.updates).await;
        Ok(())
    }
}

impl PostgresStore {
    /// Runs of queued writes, each in a transaction of its own from the pool.
    fn runs(&self) -> PoolRuns<'_> {
        PoolRuns {
            pool: &self.pool,
            persistent: self.persistent,
        }
    }
}

/// Runs of queued writes, each in a transaction of its own from the pool.
struct PoolRuns<'a> {
    pool: &'a PgPool,
    persistent: bool,
}

impl Runs<Create> for PoolRuns<'_> {
    /// Three statements whatever the run's size, each taking its rows as arrays: the tasks
    /// (a plain INSERT: a new task's id is new, and a clash is an error), their tags, their
    /// events. The tasks come first, so that the owners' `task_counts` rows are locked
    /// before the head row, as in every write.
    async fn run(&mut self, creates: &[QueuedCreate]) -> Result<Vec<()>, sqlx::Error> {
        let mut transaction = self.pool.begin().await?;
        let tasks: Vec<&Task> = creates.iter().map(|queued| &queued.task).collect();
        let events: Vec<&NewEvent> = creates.iter().map(|queued| &queued.event).collect();
        let written = async {
            insert_new_tasks(&mut transaction, &tasks, self.persistent).await?;
            append_events(&mut transaction, &events, self.persistent).await
        }
        .await;
        commit_or_roll_back(transaction, written.map(|()| vec![(); creates.len()])).await
    }

    fn concerns_one_write(error: &sqlx::Error) -> bool {
        concerns_one_write(error)
    }
}

impl Runs<Update> for PoolRuns<'_> {
    /// One to six statements whatever the run's size, each taking its rows as arrays:
    /// the tasks still at the version their update was planned from, locked in id order
    /// (two instances' runs cannot deadlock on them) and rewritten; the tag rows of those
    /// whose tags changed; the occurrences that completions create; the events, in the
    /// run's order. An update whose task changed meanwhile writes nothing, and its caller
    /// plans it again.
    async fn run(&mut self, updates: &[QueuedUpdate]) -> Result<Vec<bool>, sqlx::Error> {
        let mut transaction = self.pool.begin().await?;
        let written = async {
            let changed = compare_and_set_tasks(&mut transaction, updates, self.persistent).await?;
            let written: Vec<bool> = updates
                .iter()
                .map(|queued| changed.contains(&queued.update.task.id))
                .collect();
            let applied: Vec<&QueuedUpdate> = updates
                .iter()
                .zip(&written)
                .filter_map(|(queued, written)| written.then_some(queued))
                .collect();
            let retagged: Vec<&Task> = applied
                .iter()
                .filter(|queued| queued.tags_before != queued.update.task.tags)
                .map(|queued| &queued.update.task)
                .collect();
            if !retagged.is_empty() {
                sqlx::query("DELETE FROM task_tags WHERE task_id = ANY($1)")
                    .bind(column(&retagged, |task| task.id))
                    .persistent(self.persistent)
                    .execute(&mut *transaction)
                    .await?;
                insert_tags_of(&mut transaction, &retagged, self.persistent).await?;
            }
            let created: Vec<&Task> = applied
                .iter()
                .filter_map(|queued| queued.update.created.as_ref())
                .collect();
            if !created.is_empty() {
                insert_new_tasks(&mut transaction, &created, self.persistent).await?;
            }
            let events: Vec<&NewEvent> = applied
                .iter()
                .flat_map(|queued| &queued.update.events)
                .collect();
            append_events(&mut transaction, &events, self.persistent).await?;
            Ok(written)
        }
        .await;
        match commit_or_roll_back(transaction, written).await {
            // A deadlock or serialization failure rolled the whole run back: nothing of it
            // was written, so each update is planned and queued again, not refused.
            Err(sqlx::Error::Database(error))
                if matches!(error.code().as_deref(), Some("40001" | "40P01")) =>
            {
                Ok(vec![false; updates.len()])
            }
            outcome => outcome,
        }
    }

    fn concerns_one_write(error: &sqlx::Error) -> bool {
        concerns_one_write(error)
    }
}

/// Commits a run that `written`, or rolls it back at once, not when the pool next uses the
/// connection: the retry of each write alone, on another connection, would wait for its
/// row locks.
async fn commit_or_roll_back<T>(
    transaction: Transaction<'static, Postgres>,
    written: Result<T, sqlx::Error>,
) -> Result<T, sqlx::Error> {
    match written {
        Ok(outcome) => {
            transaction.commit().await?;
            Ok(outcome)
        }
        Err(error) => {
            let _ = transaction.rollback().await;
            Err(error)
        }
    }
}

/// Whether a failed run failed on one write's own data: SQLSTATE classes 22 (data
/// exception), 23 (integrity constraint violation), 54 (program limit exceeded, such as an
/// index row too large) and P0 (raised by a PL/pgSQL trigger), PostgreSQL's Appendix A.
fn concerns_one_write(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(database) = error else {
        return false;
    };
    database.code().is_some_and(|code| {
        ["22", "23", "54", "P0"]
            .iter()
            .any(|class| code.starts_with(class))
    })
}

/// Rewrites each task of `updates` that is still at its expected version and reminder flag,
/// in one statement; the ids of those rewritten. The rows are locked in id order first.
async fn compare_and_set_tasks(
    transaction: &mut Transaction<'static, Postgres>,
    updates: &[QueuedUpdate],
    persistent: bool,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let tasks: Vec<&Task> = updates.iter().map(|queued| &queued.update.task).collect();
    sqlx::query_scalar(
        "WITH locked AS MATERIALIZED (
             SELECT id FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE
         )
         UPDATE tasks AS t
            SET title = u.title, description = u.description, completed = u.completed,
                updated_at = u.updated_at, version = u.version, priority = u.priority,
                tags = u.tags, due_at = u.due_at, remind_at = u.remind_at,
                recurrence = u.recurrence, next_task_id = u.next_task_id,
                reminder_sent = u.reminder_sent, title_key = u.title_key,
                description_key = u.description_key
           FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::bool[], $5::text[], $6::text[],
                       $7::bool[], $8::timestamptz[], $9::int8[], $10::int2[], $11::text[],
                       $12::timestamptz[], $13::timestamptz[], $14::text[], $15::uuid[],
                       $16::bool[], $17::text[], $18::text[])
                AS u (id, user_id, expected_version, expected_reminder_sent, title,
                      description, completed, updated_at, version, priority, tags, due_at,
                      remind_at, recurrence, next_task_id, reminder_sent, title_key,
                      description_key)
          WHERE t.id = u.id AND t.user_id = u.user_id AND t.version = u.expected_version
            AND t.reminder_sent = u.expected_reminder_sent
            AND t.id IN (SELECT id FROM locked)
         RETURNING t.id",
    )
    .bind(column(&tasks, |task| task.id))
    .bind(column(&tasks, |task| task.user_id.as_str()))
    .bind(column(updates, |queued| queued.expected_version))
    .bind(column(updates, |queued| queued.expected_reminder_sent))
    .bind(column(&tasks, |task| task.title.as_str()))
    .bind(column(&tasks, |task| task.description.as_deref()))
    .bind(column(&tasks, |task| task.completed))
    .bind(column(&tasks, |task| task.updated_at))
    .bind(column(&tasks, |task| task.version))
    .bind(column(&tasks, |task| task.priority.rank()))
    .bind(column(&tasks, |task| task.tags.to_stored()))
    .bind(column(&tasks, |task| task.due_at))
    .bind(column(&tasks, |task| task.remind_at))
    .bind(column(&tasks, |task| {
        task.recurrence.as_ref().map(Recurrence::to_stored)
    }))
    .bind(column(&tasks, |task| task.next_task_id))
    .bind(column(&tasks, |task| task.reminder_sent))
    .bind(column(&tasks, |task| fold(&task.title)))
    .bind(column(&tasks, |task| task.description.as_deref().map(fold)))
    .persistent(persistent)
    .fetch_all(&mut **transaction)
    .await
}

/// One column of a run's rows, as the array that `unnest` turns back into rows.
fn column<'a, R, V>(rows: &'a [R], value: impl Fn(&'a R) -> V) -> Vec<V> {
    rows.iter().map(value).collect()
}

/// Inserts `tasks`, then their tags, each as one statement over arrays.
async fn insert_new_tasks(
    transaction: &mut Transaction<'static, Postgres>,
    tasks: &[&Task],
    persistent: bool,
) -> Result<(), sqlx::Error> {
    let written = sqlx::query(
        "INSERT INTO tasks (id, user_id, title, description, completed, created_at, updated_at,
                            version, priority, tags, due_at, remind_at, recurrence,
                            next_task_id, reminder_sent, title_key, description_key)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bool[],
                              $6::timestamptz[], $7::timestamptz[], $8::int8[], $9::int2[],
                              $10::text[], $11::timestamptz[], $12::timestamptz[], $13::text[],
                              $14::uuid[], $15::bool[], $16::text[], $17::text[])",
    )
    .bind(column(tasks, |task| task.id))
    .bind(column(tasks, |task| task.user_id.as_str()))
    .bind(column(tasks, |task| task.title.as_str()))
    .bind(column(tasks, |task| task.description.as_deref()))
    .bind(column(tasks, |task| task.completed))
    .bind(column(tasks, |task| task.created_at))
    .bind(column(tasks, |task| task.updated_at))
    .bind(column(tasks, |task| task.version))
    .bind(column(tasks, |task| task.priority.rank()))
    .bind(column(tasks, |task| task.tags.to_stored()))
    .bind(column(tasks, |task| task.due_at))
    .bind(column(tasks, |task| task.remind_at))
    .bind(column(tasks, |task| {
        task.recurrence.as_ref().map(Recurrence::to_stored)
    }))
    .bind(column(tasks, |task| task.next_task_id))
    .bind(column(tasks, |task| task.reminder_sent))
    .bind(column(tasks, |task| fold(&task.title)))
    .bind(column(tasks, |task| task.description.as_deref().map(fold)))
    .persistent(persistent)
    .execute(&mut **transaction)
    .await?
    .rows_affected();
    if written != tasks.len() as u64 {
        // A plain INSERT writes every row or fails; this guards against a schema not ours
        // (a rule or trigger that swallows rows), which must not pass for a success.
        return Err(sqlx::Error::RowNotFound);
    }
    insert_tags_of(transaction, tasks, persistent).await
}

/// Inserts the tag rows of `tasks` in one statement over arrays.
async fn insert_tags_of(
    transaction: &mut Transaction<'static, Postgres>,
    tasks: &[&Task],
    persistent: bool,
) -> Result<(), sqlx::Error> {
    let tagged: Vec<(&Task, &Tag)> = tasks
        .iter()
        .flat_map(|task| task.tags.iter().map(move |tag| (*task, tag)))
        .collect();
    if tagged.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO task_tags (task_id, user_id, tag_key, tag)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])",
    )
    .bind(column(&tagged, |(task, _)| task.id))
    .bind(column(&tagged, |(task, _)| task.user_id.as_str()))
    .bind(column(&tagged, |(_, tag)| tag.key()))
    .bind(column(&tagged, |(_, tag)| tag.as_str()))
    .persistent(persistent)
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// Appends the event of each of `tasks`, in their order, a thousand per statement (a
/// bound message stays small however many tasks an account holds).
async fn append_events_of(
    transaction: &mut Transaction<'static, Postgres>,
    tasks: &[Task],
    event: &TaskEvent<'_>,
    persistent: bool,
) -> Result<(), sqlx::Error> {
    for chunk in tasks.chunks(1000) {
        let events: Vec<NewEvent> = chunk.iter().map(event).collect();
        let events: Vec<&NewEvent> = events.iter().collect();
        append_events(transaction, &events, persistent).await?;
    }
    Ok(())
}

/// Appends `events` to the log inside `transaction`, in their order, as its last statement
/// (nothing for none). Moving the head row takes its lock until commit, so the next writer
/// gets the next sequences only once this one is committed: sequence order is commit order,
/// and a reader that has seen sequence n can never later find a smaller one appear. (A
/// BIGSERIAL hands values out at insert time, and transactions may commit in another
/// order.) The lock is held only from this statement to the commit.
async fn append_events(
    transaction: &mut Transaction<'static, Postgres>,
    events: &[&NewEvent],
    persistent: bool,
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    // The time is read once the head row is ours (`clock_timestamp()`, not the statement's
    // start), so that it is the commit's time to the millisecond and does not go back as the
    // sequence goes up (barring a step of the server's clock), however long the wait for the
    // head row was.
    let written = sqlx::query(
        "WITH head AS (
             UPDATE event_log_head SET sequence = sequence + cardinality($1::uuid[])
             RETURNING sequence - cardinality($1::uuid[]) AS before
         )
         INSERT INTO task_events (sequence, id, user_id, type, source, subject, time, data)
         SELECT head.before + event.n, event.id, event.user_id, event.type, event.source,
                event.subject, date_trunc('milliseconds', clock_timestamp()), event.data
           FROM head, unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[])
                      WITH ORDINALITY AS event (id, user_id, type, source, subject, data, n)",
    )
    .bind(column(events, |event| event.id))
    .bind(column(events, |event| event.user_id.as_str()))
    .bind(column(events, |event| event.event_type.as_str()))
    .bind(column(events, |event| event.source.as_str()))
    .bind(column(events, |event| event.subject.as_str()))
    .bind(column(events, |event| event.data.to_string()))
    .persistent(persistent)
    .execute(&mut **transaction)
    .await?
    .rows_affected();
    if written != events.len() as u64 {
        // No head row: the schema is not ours.
        return Err(sqlx::Error::RowNotFound);
    }
    Ok(())
}
