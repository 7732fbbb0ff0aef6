//! The SQLite implementation of [`Store`]: the zero-set-up default.

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::{
    ConnectOptions, Executor, FromRow, Sqlite, TransactionManager,
    pool::PoolConnection,
    sqlite::{
        SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
        SqliteSynchronous, SqliteTransactionManager,
    },
};
use uuid::Uuid;

use super::{
    BACKFILL_BATCH, Dialect, EventBacklog, Listing, PlanUpdate, RELAY_LEASE, Store, StoreError,
    Taken, TaskEvent,
    group_commit::{
        self, Create, CreateQueue, Leads, QueuedCreate, QueuedUpdate, QueuedWrite, Runs, Update,
        UpdateQueue, WriteQueue,
    },
    limits::{AttemptLimits, MemoryLimits},
    order_by, push_filters, push_page, push_total, push_unless_known, task_columns,
    warn_email_collision,
};
use crate::{
    auth::{
        domain::{Email, LoginId, User, UserCredentials, Username, email_key},
        revocation::{DELETED, Revocation},
    },
    config::{Database, Settings, SqliteLocation},
    events::record::{NewEvent, StoredEvent},
    tasks::domain::{ListQuery, Priority, Recurrence, TagCount, Tags, Task},
    text::fold,
};

pub struct SqliteStore {
    /// Readers. Every write goes through `writer`.
    pool: SqlitePool,
    /// The turn to write, and with it the connection that writes: one write of this process
    /// at a time (see [`SqliteStore::writer`]). `None` for an in-memory database, whose one
    /// connection is the pool's.
    writer: Arc<tokio::sync::Mutex<Option<SqliteConnection>>>,
    /// Set when a write on the own connection may have left a transaction open; the next
    /// writer rolls it back first (see [`SqliteStore::writer`]).
    rollback_owed: Arc<AtomicBool>,
    /// To open the writing connection again if its thread is gone.
    options: SqliteConnectOptions,
    /// Creates waiting for the next run (see [`Store::insert_task`]).
    creates: CreateQueue,
    /// Updates waiting for the next run (see [`Store::update_task`]).
    updates: UpdateQueue,
}

type Turn = tokio::sync::OwnedMutexGuard<Option<SqliteConnection>>;

/// The connection a write runs on, holding the process's turn to write until it is dropped.
enum Writer {
    /// A file's own writing connection, kept out of the pool: taking it is taking the turn,
    /// with no round trip to its thread (the pool pings a connection as it comes back).
    Own(tokio::sync::OwnedMappedMutexGuard<Option<SqliteConnection>, SqliteConnection>),
    /// An in-memory database's one connection, the pool's, taken in turn.
    Pooled {
        _turn: Turn,
        connection: PoolConnection<Sqlite>,
    },
}

impl std::ops::Deref for Writer {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        match self {
            Writer::Own(connection) => connection,
            Writer::Pooled { connection, .. } => connection,
        }
    }
}

impl std::ops::DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self {
            Writer::Own(connection) => connection,
            Writer::Pooled { connection, .. } => connection,
        }
    }
}

/// A write transaction on the [`Writer`]; dropped without [`WriteTransaction::commit`] (an
/// error, a refusal, a cancelled request), it rolls back before the next write starts.
///
/// On the own connection it is plain `BEGIN IMMEDIATE`, `COMMIT` and `ROLLBACK`, not sqlx's
/// transactions: sqlx counts open transactions itself and refuses a custom BEGIN while its
/// count is above zero, and a ROLLBACK that fails (SQLite already rolled back, after an I/O
/// error or a full disk) leaves its count at one for the connection's life.
struct WriteTransaction {
    writer: Writer,
    open: bool,
    rollback_owed: Arc<AtomicBool>,
}

impl std::ops::Deref for WriteTransaction {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.writer
    }
}

impl std::ops::DerefMut for WriteTransaction {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.writer
    }
}

impl WriteTransaction {
    async fn commit(mut self) -> Result<(), sqlx::Error> {
        match &mut self.writer {
            Writer::Own(connection) => {
                let connection: &mut SqliteConnection = connection;
                connection.execute("COMMIT").await?;
            }
            Writer::Pooled { connection, .. } => {
                SqliteTransactionManager::commit(connection).await?;
            }
        }
        self.open = false;
        Ok(())
    }
}

impl Drop for WriteTransaction {
    fn drop(&mut self) {
        if self.open {
            match &mut self.writer {
                // Rolled back by the next writer, before it begins.
                Writer::Own(_) => self.rollback_owed.store(true, Ordering::Release),
                // Queued on the connection's thread, so it runs before anything sent after
                // it, and before the pool's readers get the connection back.
                Writer::Pooled { connection, .. } => {
                    SqliteTransactionManager::start_rollback(connection)
                }
            }
        }
    }
}

impl SqliteStore {
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let Database::Sqlite { location, params } = settings.database()? else {
            anyhow::bail!("DATABASE_URL is not an SQLite URL");
        };
        // Options from the URL's parameters alone; the file is the resolved absolute path,
        // so that what is logged is what is opened.
        let params = params
            .map(|params| format!("?{params}"))
            .unwrap_or_default();
        let options = match &location {
            SqliteLocation::Memory => {
                SqliteConnectOptions::from_str(&format!("sqlite::memory:{params}"))?
            }
            SqliteLocation::File(path) => {
                SqliteConnectOptions::from_str(&format!("sqlite:{params}"))?.filename(path)
            }
        };
        let in_memory = location == SqliteLocation::Memory || params.contains("mode=memory");
        match &location {
            SqliteLocation::File(path) if !in_memory => {
                tracing::info!(sqlite_file = %path.display(), "SQLite database file");
            }
            _ => tracing::warn!(
                "the SQLite database is in memory: its data is lost when the process exits"
            ),
        }
        let options = options
            .create_if_missing(true)
            // WAL lets readers run beside the writer; NORMAL sync keeps every committed write
            // across a crash of the process (not of the machine), at a fraction of FULL's cost.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // Each connection to an in-memory database is a database of its own: keep just one.
        let mut pool = SqlitePoolOptions::new()
            // A file needs no liveness check: sqlx's default pings each connection before
            // handing it out, one more hand-off to the connection's thread per query.
            .test_before_acquire(false)
            .max_connections(if in_memory {
                1
            } else {
                settings.database_max_connections
            })
            .acquire_timeout(settings.database_acquire_timeout);
        if in_memory {
            pool = pool.idle_timeout(None).max_lifetime(None);
        }
        let pool = pool.connect_with(options.clone()).await?;
        let writer = if in_memory {
            None
        } else {
            Some(options.connect().await?)
        };
        Ok(Self {
            pool,
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            rollback_owed: Arc::default(),
            options,
            creates: CreateQueue::default(),
            updates: UpdateQueue::default(),
        })
    }

    /// Computes the folded keys that rows written without them lack (rows older than the
    /// keys, or written by an older version of the service), in batches, in id order. Safe
    /// to run again, and beside another instance: a row is only written at the version it
    /// was read at, with the keys of the text it was read with.
    async fn backfill_keys(&self) -> anyhow::Result<()> {
        let mut after = String::new();
        loop {
            let rows: Vec<(String, i64, String, Option<String>)> = sqlx::query_as(
                "SELECT id, version, title, description FROM tasks
                 WHERE (title_key IS NULL OR (description IS NOT NULL AND description_key IS NULL))
                   AND id > $1
                 ORDER BY id LIMIT $2",
            )
            .bind(&after)
            .bind(BACKFILL_BATCH)
            .fetch_all(&self.pool)
            .await?;
            let Some((last, ..)) = rows.last() else { break };
            after = last.clone();
            let mut batch = self.begin_write().await?;
            for (id, version, title, description) in &rows {
                sqlx::query(
                    "UPDATE tasks SET title_key = $1, description_key = $2
                     WHERE id = $3 AND version = $4",
                )
                .bind(fold(title))
                .bind(description.as_deref().map(fold))
                .bind(id)
                .bind(version)
                .execute(&mut *batch)
                .await?;
            }
            batch.commit().await?;
            tracing::info!(tasks = rows.len(), "back-filled folded title keys");
        }
        // Oldest first, so that of two addresses that become one, the older account keeps it.
        let mut after = (i64::MIN, String::new());
        loop {
            let rows: Vec<(String, i64, String)> = sqlx::query_as(
                "SELECT id, created_at, email FROM users
                 WHERE email_key IS NULL AND (created_at, id) > ($1, $2)
                 ORDER BY created_at, id LIMIT $3",
            )
            .bind(after.0)
            .bind(&after.1)
            .bind(BACKFILL_BATCH)
            .fetch_all(&self.pool)
            .await?;
            let Some((id, created_at, _)) = rows.last() else {
                break;
            };
            after = (*created_at, id.clone());
            for (id, _, email) in &rows {
                let key = email_key(email);
                let mut writer = self.writer().await?;
                let written = sqlx::query(
                    "UPDATE users SET email_key = $1 WHERE id = $2 AND email_key IS NULL AND email = $3",
                )
                .bind(&key)
                .bind(id)
                .bind(email)
                .execute(&mut *writer)
                .await;
                drop(writer);
                match written {
                    Ok(_) => {}
                    Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                        let holder: Option<String> =
                            sqlx::query_scalar("SELECT id FROM users WHERE email_key = $1")
                                .bind(&key)
                                .fetch_optional(&self.pool)
                                .await?;
                        warn_email_collision(id, holder.as_ref().map(|h| h as _));
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Ok(())
    }
}

#[derive(FromRow, Deserialize)]
struct TaskRow {
    id: String,
    user_id: String,
    title: String,
    description: Option<String>,
    completed: bool,
    created_at: i64,
    updated_at: i64,
    version: i64,
    priority: i64,
    tags: String,
    due_at: Option<i64>,
    remind_at: Option<i64>,
    recurrence: Option<String>,
    next_task_id: Option<String>,
    reminder_sent: bool,
}

impl TryFrom<TaskRow> for Task {
    type Error = StoreError;

    fn try_from(row: TaskRow) -> Result<Self, Self::Error> {
        Ok(Task {
            id: parse_uuid(&row.id)?,
            user_id: row.user_id,
            title: row.title,
            description: row.description,
            completed: row.completed,
            created_at: from_millis(row.created_at)?,
            updated_at: from_millis(row.updated_at)?,
            version: row.version,
            priority: Priority::from_rank(row.priority).ok_or_else(|| {
                StoreError::Other(anyhow::anyhow!("unknown priority rank {}", row.priority))
            })?,
            tags: Tags::from_stored(&row.tags).map_err(StoreError::Other)?,
            due_at: row.due_at.map(from_millis).transpose()?,
            remind_at: row.remind_at.map(from_millis).transpose()?,
            recurrence: row
                .recurrence
                .as_deref()
                .map(Recurrence::from_stored)
                .transpose()
                .map_err(StoreError::Other)?,
            next_task_id: row.next_task_id.as_deref().map(parse_uuid).transpose()?,
            reminder_sent: row.reminder_sent,
        })
    }
}

fn millis(time: Option<DateTime<Utc>>) -> Option<i64> {
    time.map(|time| time.timestamp_millis())
}

/// Runs of queued writes (creates, updates) on the writing connection, in the turn.
struct WriterRuns<'a> {
    writer: &'a mut Writer,
    /// The store's [`SqliteStore::rollback_owed`].
    rollback_owed: &'a AtomicBool,
}

impl Runs<Create> for WriterRuns<'_> {
    /// One multi-statement execution, a single hand-off to the connection's thread:
    /// `BEGIN IMMEDIATE`, for each create a plain INSERT of the task (a new task's id is
    /// new, and a clash is an error, which stops the run before COMMIT), its tags and its
    /// event, then `COMMIT`.
    async fn run(&mut self, creates: &[QueuedCreate]) -> Result<Vec<()>, sqlx::Error> {
        let mut run = sqlx::QueryBuilder::new("BEGIN IMMEDIATE; ");
        for queued in creates {
            push_task_insert(&mut run, &queued.task);
            run.push("; ");
            push_tag_inserts(&mut run, &queued.task);
            push_event_append(&mut run, &queued.event);
            run.push(" ");
        }
        run.push("COMMIT;");
        let connection = self.start().await;
        let written = run.build().execute(&mut *connection).await;
        self.end(written.map(|_| vec![(); creates.len()])).await
    }

    fn concerns_one_write(error: &sqlx::Error) -> bool {
        concerns_one_write(error)
    }
}

impl Runs<Update> for WriterRuns<'_> {
    /// Two hand-offs to the connection's thread whatever the run's size: `BEGIN IMMEDIATE`
    /// and, for each update, the rewrite of its task if it is still at the version and
    /// reminder flag its update was planned from (`RETURNING` the id of those rewritten);
    /// then, for those, their tag rows if their tags changed, the occurrences completions
    /// create, their events, and `COMMIT`.
    async fn run(&mut self, updates: &[QueuedUpdate]) -> Result<Vec<bool>, sqlx::Error> {
        let mut compare_and_set = sqlx::QueryBuilder::new("BEGIN IMMEDIATE; ");
        for queued in updates {
            push_compare_and_set(&mut compare_and_set, queued);
        }
        let connection = self.start().await;
        let written = async {
            let changed: Vec<String> = compare_and_set
                .build_query_scalar()
                .fetch_all(&mut *connection)
                .await?;
            let written: Vec<bool> = updates
                .iter()
                .map(|queued| changed.contains(&queued.update.task.id.to_string()))
                .collect();
            let mut rest = sqlx::QueryBuilder::new("");
            for (queued, _) in updates
                .iter()
                .zip(&written)
                .filter(|(_, written)| **written)
            {
                let task = &queued.update.task;
                if queued.tags_before != task.tags {
                    rest.push("DELETE FROM task_tags WHERE task_id = ")
                        .push_bind(task.id.to_string())
                        .push("; ");
                    push_tag_inserts(&mut rest, task);
                }
                if let Some(created) = &queued.update.created {
                    push_task_insert(&mut rest, created);
                    rest.push("; ");
                    push_tag_inserts(&mut rest, created);
                }
                for event in &queued.update.events {
                    push_event_append(&mut rest, event);
                }
            }
            rest.push("COMMIT;");
            // Its text depends on what each update writes: not worth a place in the cache.
            rest.build()
                .persistent(false)
                .execute(&mut *connection)
                .await?;
            Ok(written)
        }
        .await;
        self.end(written).await
    }

    fn concerns_one_write(error: &sqlx::Error) -> bool {
        concerns_one_write(error)
    }
}

impl WriterRuns<'_> {
    /// The writing connection for a run, any transaction a run cut short left open rolled
    /// back first. A rollback stays owed until [`WriterRuns::end`]: a run cut short (its task
    /// dropped) leaves its transaction to the next writer to roll back.
    async fn start(&mut self) -> &mut SqliteConnection {
        let connection: &mut SqliteConnection = self.writer;
        if self.rollback_owed.swap(true, Ordering::AcqRel) {
            let _ = connection.execute("ROLLBACK").await;
        }
        connection
    }

    /// Ends a run that `written` (committed) or failed. A failed run stopped at the failing
    /// statement, inside the transaction it began (or at BEGIN, with none to roll back: that
    /// ROLLBACK's own error is expected). Should this ROLLBACK fail too, the next writer
    /// tries again.
    async fn end<T>(&mut self, written: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        let connection: &mut SqliteConnection = self.writer;
        if written.is_ok() || connection.execute("ROLLBACK").await.is_ok() {
            self.rollback_owed.store(false, Ordering::Release);
        }
        written
    }
}

/// `UPDATE tasks … RETURNING id` of every column an update changes, ending in `;`: only
/// while the task is still at the version and reminder flag its update was planned from.
fn push_compare_and_set(
    statement: &mut sqlx::QueryBuilder<'static, Sqlite>,
    queued: &QueuedUpdate,
) {
    let task = &queued.update.task;
    statement.push("UPDATE tasks SET title = ");
    statement
        .push_bind(task.title.clone())
        .push(", description = ")
        .push_bind(task.description.clone())
        .push(", completed = ")
        .push_bind(task.completed)
        .push(", updated_at = ")
        .push_bind(task.updated_at.timestamp_millis())
        .push(", version = ")
        .push_bind(task.version)
        .push(", priority = ")
        .push_bind(task.priority.rank())
        .push(", tags = ")
        .push_bind(task.tags.to_stored())
        .push(", due_at = ")
        .push_bind(millis(task.due_at))
        .push(", remind_at = ")
        .push_bind(millis(task.remind_at))
        .push(", recurrence = ")
        .push_bind(task.recurrence.as_ref().map(Recurrence::to_stored))
        .push(", next_task_id = ")
        .push_bind(task.next_task_id.map(|id| id.to_string()))
        .push(", reminder_sent = ")
        .push_bind(task.reminder_sent)
        .push(", title_key = ")
        .push_bind(fold(&task.title))
        .push(", description_key = ")
        .push_bind(task.description.as_deref().map(fold))
        .push(" WHERE id = ")
        .push_bind(task.id.to_string())
        .push(" AND user_id = ")
        .push_bind(task.user_id.clone())
        .push(" AND version = ")
        .push_bind(queued.expected_version)
        .push(" AND reminder_sent = ")
        .push_bind(queued.expected_reminder_sent)
        .push(" RETURNING id; ");
}

/// Whether a failed run failed on one write's own data: SQLite's primary result codes (the
/// low byte of the extended code) SQLITE_ERROR 1, SQLITE_TOOBIG 18, SQLITE_CONSTRAINT 19,
/// SQLITE_MISMATCH 20, SQLITE_RANGE 25.
fn concerns_one_write(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(database) = error else {
        return false;
    };
    database
        .code()
        .and_then(|code| code.parse::<u32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 1 | 18 | 19 | 20 | 25))
}

/// `INSERT INTO tasks (…) VALUES (…)` of every column of `task`.
fn push_task_insert(statement: &mut sqlx::QueryBuilder<'static, Sqlite>, task: &Task) {
    statement.push(
        "INSERT INTO tasks (id, user_id, title, description, completed, created_at, updated_at,
                            version, priority, tags, due_at, remind_at, recurrence,
                            next_task_id, reminder_sent, title_key, description_key) VALUES (",
    );
    let mut values = statement.separated(", ");
    values
        .push_bind(task.id.to_string())
        .push_bind(task.user_id.clone())
        .push_bind(task.title.clone())
        .push_bind(task.description.clone())
        .push_bind(task.completed)
        .push_bind(task.created_at.timestamp_millis())
        .push_bind(task.updated_at.timestamp_millis())
        .push_bind(task.version)
        .push_bind(task.priority.rank())
        .push_bind(task.tags.to_stored())
        .push_bind(millis(task.due_at))
        .push_bind(millis(task.remind_at))
        .push_bind(task.recurrence.as_ref().map(Recurrence::to_stored))
        .push_bind(task.next_task_id.map(|id| id.to_string()))
        .push_bind(task.reminder_sent)
        .push_bind(fold(&task.title))
        .push_bind(task.description.as_deref().map(fold));
    values.push_unseparated(")");
}

/// One `INSERT INTO task_tags` of every tag of `task` (none for no tags), ending in `;`:
/// the tags travel as one JSON array of `[key, tag]` pairs, so that the statement is the
/// same whatever their number (a create's statements are cached by their text).
fn push_tag_inserts(statement: &mut sqlx::QueryBuilder<'static, Sqlite>, task: &Task) {
    let pairs: Vec<(String, &str)> = task
        .tags
        .iter()
        .map(|tag| (tag.key(), tag.as_str()))
        .collect();
    statement.push("INSERT INTO task_tags (task_id, user_id, tag_key, tag) SELECT ");
    statement
        .push_bind(task.id.to_string())
        .push(", ")
        .push_bind(task.user_id.clone())
        .push(", json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(")
        .push_bind(serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".to_owned()))
        .push(");");
}

#[derive(FromRow)]
struct UserRow {
    id: String,
    username: String,
    email: String,
    password_hash: String,
    created_at: i64,
    token_generation: i64,
}

impl UserRow {
    fn into_credentials(self) -> Result<UserCredentials, StoreError> {
        Ok(UserCredentials {
            user: User {
                id: parse_uuid(&self.id)?,
                username: self.username,
                email: self.email,
                created_at: from_millis(self.created_at)?,
            },
            password_hash: self.password_hash,
            token_generation: self.token_generation,
        })
    }
}

fn parse_uuid(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|error| StoreError::Other(error.into()))
}

fn from_millis(millis: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| StoreError::Other(anyhow::anyhow!("timestamp out of range: {millis}")))
}

/// Records, inside the revoking transaction, that tokens of account `id` below `generation`
/// are refused from `now` on.
async fn record_revocation(
    transaction: &mut SqliteConnection,
    id: Uuid,
    generation: i64,
    now: DateTime<Utc>,
) -> Result<Revocation, StoreError> {
    let revision: i64 = sqlx::query_scalar(
        "UPDATE token_revocation_clock SET revision = revision + 1 WHERE id = 1 RETURNING revision",
    )
    .fetch_one(&mut *transaction)
    .await?;
    sqlx::query(
        "INSERT INTO token_revocations (user_id, generation, revoked_at, revision)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id) DO UPDATE SET generation = excluded.generation,
             revoked_at = excluded.revoked_at, revision = excluded.revision",
    )
    .bind(id.to_string())
    .bind(generation)
    .bind(now.timestamp_millis())
    .bind(revision)
    .execute(&mut *transaction)
    .await?;
    Ok(Revocation {
        subject: id.to_string(),
        generation,
        revoked_at: now,
        revision,
    })
}

fn one_task(row: Option<TaskRow>) -> Result<Option<Task>, StoreError> {
    row.map(Task::try_from).transpose()
}

/// The columns of an event, in the order [`EventRow`] reads them.
macro_rules! event_columns {
    () => {
        "sequence, id, user_id, type, source, subject, time, data"
    };
}
#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("migrations/sqlite").run(&self.pool).await?;
        self.backfill_keys().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn taken(&self, username: &Username, email: &Email) -> Result<Taken, StoreError> {
        let (username, email): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM users WHERE lower(username) = lower($1)),
                    EXISTS (SELECT 1 FROM users WHERE email_key = $2)",
        )
        .bind(username.as_str())
        .bind(email.key())
        .fetch_one(&self.pool)
        .await?;
        Ok(Taken { username, email })
    }

    async fn insert_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
        let mut writer = self.writer().await?;
        sqlx::query(
            "INSERT INTO users (id, username, email, password_hash, created_at, email_key)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user.id.to_string())
        .bind(&user.username)
        .bind(&user.email)
        .bind(password_hash)
        .bind(user.created_at.timestamp_millis())
        .bind(email_key(&user.email))
        .execute(&mut *writer)
        .await?;
        Ok(())
    }

    async fn find_credentials(
        &self,
        login: &LoginId,
    ) -> Result<Option<UserCredentials>, StoreError> {
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
            .fetch_optional(&self.pool)
            .await?;
        row.map(UserRow::into_credentials).transpose()
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
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT id, username, email, password_hash, created_at, token_generation FROM users WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(UserRow::into_credentials).transpose()
    }

    async fn taken_by_others(
        &self,
        id: Uuid,
        username: Option<&Username>,
        email: Option<&Email>,
    ) -> Result<Taken, StoreError> {
        let (username, email): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM users WHERE lower(username) = lower($2) AND id <> $1),
                    EXISTS (SELECT 1 FROM users WHERE email_key = $3 AND id <> $1)",
        )
        .bind(id.to_string())
        .bind(username.map(Username::as_str))
        .bind(email.map(Email::key))
        .fetch_one(&self.pool)
        .await?;
        Ok(Taken { username, email })
    }

    async fn update_account(
        &self,
        id: Uuid,
        username: Option<&Username>,
        email: Option<&Email>,
    ) -> Result<Option<User>, StoreError> {
        let mut writer = self.writer().await?;
        let row: Option<UserRow> = sqlx::query_as(
            "UPDATE users SET username = COALESCE($2, username), email = COALESCE($3, email),
                              email_key = COALESCE($4, email_key)
             WHERE id = $1
             RETURNING id, username, email, password_hash, created_at, token_generation",
        )
        .bind(id.to_string())
        .bind(username.map(Username::as_str))
        .bind(email.map(Email::as_str))
        .bind(email.map(Email::key))
        .fetch_optional(&mut *writer)
        .await?;
        Ok(row
            .map(UserRow::into_credentials)
            .transpose()?
            .map(|credentials| credentials.user))
    }

    async fn revoke_tokens(
        &self,
        id: Uuid,
        new_password_hash: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<Revocation>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let generation: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET token_generation = token_generation + 1,
                              password_hash = COALESCE($2, password_hash)
             WHERE id = $1 RETURNING token_generation",
        )
        .bind(id.to_string())
        .bind(new_password_hash)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(generation) = generation else {
            return Ok(None);
        };
        let revocation = record_revocation(&mut transaction, id, generation, now).await?;
        transaction.commit().await?;
        Ok(Some(revocation))
    }

    async fn delete_account(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        event: &TaskEvent<'_>,
    ) -> Result<Option<Revocation>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(None);
        }
        let rows: Vec<TaskRow> = sqlx::query_as(concat!(
            "DELETE FROM tasks WHERE user_id = $1 RETURNING ",
            task_columns!()
        ))
        .bind(id.to_string())
        .fetch_all(&mut *transaction)
        .await?;
        let mut tasks = rows
            .into_iter()
            .map(Task::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        // The triggers left the owner's counts at zero; the row goes with the account.
        sqlx::query("DELETE FROM task_counts WHERE user_id = $1")
            .bind(id.to_string())
            .execute(&mut *transaction)
            .await?;
        tasks.sort_by_key(|task| task.id);
        for task in &tasks {
            append_event(&mut transaction, &event(task)).await?;
        }
        let revocation = record_revocation(&mut transaction, id, DELETED, now).await?;
        transaction.commit().await?;
        Ok(Some(revocation))
    }

    async fn revocations_after(&self, revision: i64) -> Result<Vec<Revocation>, StoreError> {
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT user_id, generation, revoked_at, revision FROM token_revocations
             WHERE revision > $1 ORDER BY revision",
        )
        .bind(revision)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(subject, generation, revoked_at, revision)| {
                Ok(Revocation {
                    subject,
                    generation,
                    revoked_at: from_millis(revoked_at)?,
                    revision,
                })
            })
            .collect()
    }

    async fn prune_revocations(&self, before: DateTime<Utc>) -> Result<(), StoreError> {
        let mut writer = self.writer().await?;
        sqlx::query("DELETE FROM token_revocations WHERE revoked_at < $1")
            .bind(before.timestamp_millis())
            .execute(&mut *writer)
            .await?;
        Ok(())
    }

    async fn insert_task(&self, task: &Task, event: &NewEvent) -> Result<(), StoreError> {
        // Group commit (storage/group_commit.rs): whoever takes the turn next writes the
        // creates queued by then.
        group_commit::create(self, task, event).await
    }

    async fn list_tasks(
        &self,
        owner: &str,
        query: &ListQuery,
        known: Option<i64>,
    ) -> Result<Listing, StoreError> {
        // One statement and one row: sqlx hands each SQLite row from the connection's thread
        // to the caller separately, which costs more than the query, so the page comes back
        // as a JSON array, together with the count.
        let mut listing = listing_statement("", owner, query, known);
        let (total, revision, page): (i64, Option<i64>, Option<String>) =
            listing.build_query_as().fetch_one(&self.pool).await?;
        let tasks = match page {
            // Not read: the owner's tasks are still at `known`.
            None => None,
            Some(page) => {
                let rows: Vec<TaskRow> =
                    serde_json::from_str(&page).map_err(|error| StoreError::Other(error.into()))?;
                Some(
                    rows.into_iter()
                        .map(Task::try_from)
                        .collect::<Result<_, _>>()?,
                )
            }
        };
        Ok(Listing {
            tasks,
            total: total.max(0) as u64,
            revision,
        })
    }

    async fn explain_listing(
        &self,
        owner: &str,
        query: &ListQuery,
    ) -> Result<Vec<String>, StoreError> {
        let mut listing = listing_statement("EXPLAIN QUERY PLAN ", owner, query, None);
        let rows: Vec<(i64, i64, i64, String)> =
            listing.build_query_as().fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|(.., detail)| detail).collect())
    }
    async fn get_task(&self, owner: &str, id: Uuid) -> Result<Option<Task>, StoreError> {
        let row = sqlx::query_as(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE user_id = $1 AND id = $2"
        ))
        .bind(owner)
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
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
        // planned on a reading connection, outside the writer's turn; whoever takes the turn
        // next writes the updates queued by then, each only if its task has not changed since.
        group_commit::update_optimistically(self, owner, id, version, plan).await
    }

    async fn delete_task(
        &self,
        owner: &str,
        id: Uuid,
        version: Option<i64>,
        event: &TaskEvent<'_>,
    ) -> Result<Option<Task>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let row = sqlx::query_as(concat!(
            "DELETE FROM tasks WHERE user_id = $1 AND id = $2 AND ($3 IS NULL OR version = $3)
             RETURNING ",
            task_columns!()
        ))
        .bind(owner)
        .bind(id.to_string())
        .bind(version)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(task) = one_task(row)? else {
            return Ok(None);
        };
        append_event(&mut transaction, &event(&task)).await?;
        transaction.commit().await?;
        Ok(Some(task))
    }

    async fn tag_counts(&self, owner: &str) -> Result<Vec<TagCount>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT min(task_tags.tag), sum(CASE WHEN tasks.completed THEN 0 ELSE 1 END), count(*)
             FROM task_tags JOIN tasks ON tasks.id = task_tags.task_id
             WHERE task_tags.user_id = $1
             GROUP BY task_tags.tag_key
             ORDER BY count(*) DESC, task_tags.tag_key",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
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
        // One writer at a time on SQLite: the claim and the events commit together, so two
        // processes on one file never both send a reminder.
        let mut transaction = self.begin_write().await?;
        let rows: Vec<TaskRow> = sqlx::query_as(concat!(
            "UPDATE tasks SET reminder_sent = 1
             WHERE id IN (SELECT id FROM tasks
                          WHERE remind_at <= $1 AND NOT completed AND NOT reminder_sent
                          ORDER BY remind_at, id LIMIT $2)
             RETURNING ",
            task_columns!()
        ))
        .bind(now.timestamp_millis())
        .bind(i64::from(limit))
        .fetch_all(&mut *transaction)
        .await?;
        let mut tasks = rows
            .into_iter()
            .map(Task::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        tasks.sort_by_key(|task| (task.remind_at, task.id));
        for task in &tasks {
            append_event(&mut transaction, &event(task)).await?;
        }
        transaction.commit().await?;
        Ok(tasks.len())
    }

    async fn close(&self) {
        // Side by side: the writer comes after the writes queued for it, and a shutdown
        // whose wait runs out must still have closed the readers.
        let writer = async {
            if let Some(writer) = self.writer.lock().await.take()
                && let Err(error) = sqlx::Connection::close(writer).await
            {
                tracing::warn!(%error, "closing the SQLite writing connection failed");
            }
        };
        tokio::join!(writer, self.pool.close());
    }

    /// One process serves an SQLite file, so its memory is the one place to count in.
    fn attempt_limits(&self) -> std::sync::Arc<dyn AttemptLimits> {
        std::sync::Arc::new(MemoryLimits::default())
    }

    async fn pending_events(&self, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(concat!(
            "SELECT ",
            event_columns!(),
            " FROM task_events WHERE delivered_at IS NULL ORDER BY sequence LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(StoredEvent::try_from).collect()
    }

    async fn mark_delivered(&self, through: i64, holder: &str) -> Result<u64, StoreError> {
        let mut writer = self.writer().await?;
        let now = Utc::now().timestamp_millis();
        let result = sqlx::query(
            "UPDATE task_events SET delivered_at = $1
             WHERE sequence <= $2 AND delivered_at IS NULL
               AND EXISTS (SELECT 1 FROM event_relay_lease
                           WHERE name = $3 AND holder = $4 AND expires_at > $1)",
        )
        .bind(now)
        .bind(through)
        .bind(RELAY_LEASE)
        .bind(holder)
        .execute(&mut *writer)
        .await?;
        Ok(result.rows_affected())
    }

    async fn prune_delivered(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut writer = self.writer().await?;
        let result = sqlx::query("DELETE FROM task_events WHERE delivered_at < $1")
            .bind(before.timestamp_millis())
            .execute(&mut *writer)
            .await?;
        Ok(result.rows_affected())
    }

    async fn event_backlog(&self) -> Result<EventBacklog, StoreError> {
        let (pending, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*), min(time) FROM task_events WHERE delivered_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(EventBacklog {
            pending: pending.max(0) as u64,
            oldest: oldest.map(from_millis).transpose()?,
        })
    }

    async fn user_events(
        &self,
        owner: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(concat!(
            "SELECT ",
            event_columns!(),
            " FROM task_events WHERE user_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
        ))
        .bind(owner)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(StoredEvent::try_from).collect()
    }

    async fn last_sequence(&self) -> Result<i64, StoreError> {
        let (sequence,): (i64,) = sqlx::query_as("SELECT sequence FROM event_log_head")
            .fetch_one(&self.pool)
            .await?;
        Ok(sequence)
    }

    async fn hold_relay_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut writer = self.writer().await?;
        // Several processes may share one SQLite file on one host, so one clock serves.
        let now = Utc::now().timestamp_millis();
        let held: Option<(String,)> = sqlx::query_as(
            "INSERT INTO event_relay_lease (name, holder, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE
                 SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE event_relay_lease.holder = excluded.holder
                    OR event_relay_lease.expires_at < $4
             RETURNING holder",
        )
        .bind(RELAY_LEASE)
        .bind(holder)
        .bind(now + ttl.as_millis() as i64)
        .bind(now)
        .fetch_optional(&mut *writer)
        .await?;
        Ok(held.is_some())
    }

    async fn release_relay_lease(&self, holder: &str) -> Result<(), StoreError> {
        let mut writer = self.writer().await?;
        sqlx::query("DELETE FROM event_relay_lease WHERE name = $1 AND holder = $2")
            .bind(RELAY_LEASE)
            .bind(holder)
            .execute(&mut *writer)
            .await?;
        Ok(())
    }
}

/// The listing's one statement, after `prefix` (empty, or `EXPLAIN QUERY PLAN `): the total,
/// the owner's revision, and the page as one JSON array, which is NULL when the owner's
/// revision is `known` (only with the kept totals).
fn listing_statement(
    prefix: &str,
    owner: &str,
    query: &ListQuery,
    known: Option<i64>,
) -> sqlx::QueryBuilder<'static, Sqlite> {
    let order = order_by(query, Dialect::Sqlite);
    let mut listing =
        sqlx::QueryBuilder::new(format!("{prefix}SELECT counted.total, counted.revision, "));
    // The page's subquery is not correlated, so SQLite runs it where it stands: only when
    // the condition holds.
    let conditional = push_unless_known(&mut listing, "CASE WHEN ", query, known);
    listing.push(if conditional { " THEN " } else { "" });
    listing.push(
        "(SELECT json_group_array(json_object(
            'id', id, 'user_id', user_id, 'title', title, 'description', description,
            'completed', json(iif(completed, 'true', 'false')),
            'created_at', created_at, 'updated_at', updated_at, 'version', version,
            'priority', priority, 'tags', tags, 'due_at', due_at, 'remind_at', remind_at,
            'recurrence', recurrence, 'next_task_id', next_task_id,
            'reminder_sent', json(iif(reminder_sent, 'true', 'false')))",
    );
    listing.push(&order);
    listing.push(concat!(") FROM (SELECT ", task_columns!(), ", title_key"));
    push_filters(&mut listing, Dialect::Sqlite, owner, query, |t| {
        t.timestamp_millis()
    });
    listing.push(&order);
    push_page(&mut listing, query);
    listing.push(if conditional { ")) END" } else { "))" });
    listing.push(" FROM (");
    push_total(&mut listing, Dialect::Sqlite, owner, query, |t| {
        t.timestamp_millis()
    });
    listing.push(") AS counted");
    listing
}

impl SqliteStore {
    /// The writing connection, in this process's turn: every write waits for it, in order.
    /// SQLite allows one writer at a time, and a connection that finds the lock taken waits
    /// in SQLite's busy handler, sleeping in growing steps (1, 2, 5 … 100 ms) and retrying,
    /// so under many concurrent writes most of them slept while the lock was free
    /// (bench/README.md, "SQLite writes"). Only another process on the same file still meets
    /// the busy handler.
    ///
    /// A transaction a failed write may have left open on the own connection is rolled back
    /// first (an error of that ROLLBACK, "no transaction is active", is the usual outcome);
    /// a connection whose thread is gone is opened again.
    async fn writer(&self) -> Result<Writer, sqlx::Error> {
        let turn = self.writer.clone().lock_owned().await;
        self.writer_in_turn(turn).await
    }

    /// The [`SqliteStore::writer`], once the turn is taken.
    async fn writer_in_turn(&self, turn: Turn) -> Result<Writer, sqlx::Error> {
        match tokio::sync::OwnedMutexGuard::try_map(turn, Option::as_mut) {
            Ok(mut own) => {
                if self.rollback_owed.load(Ordering::Acquire) {
                    let connection: &mut SqliteConnection = &mut own;
                    let rolled_back = connection.execute("ROLLBACK").await.map(drop);
                    if let Err(sqlx::Error::WorkerCrashed) = rolled_back {
                        tracing::warn!("the SQLite writing connection was lost; opening it again");
                        *own = self.options.connect().await?;
                    }
                    // Only once the ROLLBACK has ended (or a new connection replaced the old):
                    // a turn dropped while it waited leaves the rollback owed.
                    self.rollback_owed.store(false, Ordering::Release);
                }
                Ok(Writer::Own(own))
            }
            Err(turn) => Ok(Writer::Pooled {
                _turn: turn,
                connection: self.pool.acquire().await?,
            }),
        }
    }

    /// A transaction on the [`SqliteStore::writer`] that holds the write lock from its
    /// start: one that read first and then wrote could fail at once (SQLITE_BUSY) when
    /// another process wrote in between, where BEGIN IMMEDIATE waits under the busy timeout.
    async fn begin_write(&self) -> Result<WriteTransaction, sqlx::Error> {
        let mut writer = self.writer().await?;
        let begun = match &mut writer {
            Writer::Own(connection) => {
                let connection: &mut SqliteConnection = connection;
                connection.execute("BEGIN IMMEDIATE").await.map(drop)
            }
            Writer::Pooled { connection, .. } => {
                SqliteTransactionManager::begin(connection, Some("BEGIN IMMEDIATE".into())).await
            }
        };
        if begun.is_err() {
            self.rollback_owed.store(true, Ordering::Release);
        }
        begun?;
        Ok(WriteTransaction {
            writer,
            open: true,
            rollback_owed: self.rollback_owed.clone(),
        })
    }

    /// In the turn, writes the oldest writes of `queue` in one run; an error when the writer
    /// cannot be had (see [`group_commit::Joined::written`]).
    async fn lead_run<W>(&self, turn: Turn, queue: &WriteQueue<W>) -> Result<(), StoreError>
    where
        W: QueuedWrite,
        for<'w> WriterRuns<'w>: Runs<W>,
    {
        let mut writer = self.writer_in_turn(turn).await?;
        let mut runs = WriterRuns {
            writer: &mut writer,
            rollback_owed: &self.rollback_owed,
        };
        group_commit::write_in_runs(&mut runs, queue).await;
        Ok(())
    }
}

impl Leads<Create> for SqliteStore {
    type Turn = Turn;

    fn queue(&self) -> &CreateQueue {
        &self.creates
    }

    async fn turn(&self) -> Turn {
        self.writer.clone().lock_owned().await
    }

    async fn lead(&self, turn: Turn) -> Result<(), StoreError> {
        self.lead_run(turn, &self.creates).await
    }
}

impl Leads<Update> for SqliteStore {
    type Turn = Turn;

    fn queue(&self) -> &UpdateQueue {
        &self.updates
    }

    async fn turn(&self) -> Turn {
        self.writer.clone().lock_owned().await
    }

    async fn lead(&self, turn: Turn) -> Result<(), StoreError> {
        self.lead_run(turn, &self.updates).await
    }
}

#[derive(FromRow)]
struct EventRow {
    sequence: i64,
    id: String,
    user_id: String,
    #[sqlx(rename = "type")]
    event_type: String,
    source: String,
    subject: String,
    time: i64,
    data: String,
}

impl TryFrom<EventRow> for StoredEvent {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self, Self::Error> {
        Ok(StoredEvent {
            sequence: row.sequence,
            id: parse_uuid(&row.id)?,
            event_type: row.event_type,
            source: row.source,
            subject: row.subject,
            user_id: row.user_id,
            time: from_millis(row.time)?,
            data: row.data,
        })
    }
}

/// Appends `event` to the log inside `transaction`. SQLite has one writer at a time, holding
/// its lock until commit, so sequence order is commit order.
async fn append_event(
    transaction: &mut SqliteConnection,
    event: &NewEvent,
) -> Result<(), sqlx::Error> {
    let mut statement = sqlx::QueryBuilder::new("");
    push_event_append(&mut statement, event);
    let written = statement
        .build()
        .execute(&mut *transaction)
        .await?
        .rows_affected();
    if written != 2 {
        // No head row: the schema is not ours.
        return Err(sqlx::Error::RowNotFound);
    }
    Ok(())
}

/// The two statements that append `event`, each ending in `;`: the head row's next number,
/// then the event under it (one round trip to the connection's thread for both).
fn push_event_append(statement: &mut sqlx::QueryBuilder<'static, Sqlite>, event: &NewEvent) {
    statement.push(
        "UPDATE event_log_head SET sequence = sequence + 1;
         INSERT INTO task_events (sequence, id, user_id, type, source, subject, time, data)
         SELECT sequence, ",
    );
    let mut values = statement.separated(", ");
    values
        .push_bind(event.id.to_string())
        .push_bind(event.user_id.clone())
        .push_bind(event.event_type.as_str())
        .push_bind(event.source.clone())
        .push_bind(event.subject.clone())
        .push_bind(NewEvent::time_now().timestamp_millis())
        .push_bind(event.data.to_string());
    values.push_unseparated(" FROM event_log_head;");
}
