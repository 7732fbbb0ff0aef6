//! The PostgreSQL implementation of [`Store`], for real deployments (Neon included).

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    Connection, FromRow, PgConnection, Postgres, Transaction,
    pool::PoolConnection,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
};
use uuid::Uuid;

use super::{
    DeleteEvent, EventBacklog, RELAY_LEASE, Store, StoreError, Taken, UpdateEvent, order_by,
    push_filters, push_page, task_columns,
};

/// Titles sort by their lower-case form in byte order, as on SQLite, whatever the locale.
const TITLE_KEY: &str = "lower(title) COLLATE \"C\"";
use crate::{
    auth::domain::{Email, LoginId, User, UserCredentials, Username},
    config::{Settings, is_pgbouncer_url},
    events::record::{NewEvent, StoredEvent},
    tasks::domain::{Completion, ListQuery, Task, TaskChange},
};

pub struct PostgresStore {
    pool: PgPool,
    /// False behind PgBouncer in transaction mode, where a named prepared statement may land
    /// on a server connection that already has one of that name: statements stay unnamed.
    persistent: bool,
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
        let url = settings.database_url.expose();
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
        let pool = PgPoolOptions::new()
            .max_connections(settings.database_max_connections)
            .acquire_timeout(settings.database_acquire_timeout)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            persistent: !pgbouncer,
        })
    }

    async fn session(&self) -> Result<Session, sqlx::Error> {
        if self.persistent {
            Ok(Session::Direct(self.pool.acquire().await?))
        } else {
            Ok(Session::Pinned(self.pool.begin().await?))
        }
    }
}

#[derive(FromRow)]
struct TaskRow {
    id: Uuid,
    user_id: String,
    title: String,
    description: Option<String>,
    completed: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
}

impl From<TaskRow> for Task {
    fn from(row: TaskRow) -> Self {
        Task {
            id: row.id,
            user_id: row.user_id,
            title: row.title,
            description: row.description,
            completed: row.completed,
            created_at: row.created_at,
            updated_at: row.updated_at,
            version: row.version,
        }
    }
}

#[derive(FromRow)]
struct UserRow {
    id: Uuid,
    username: String,
    email: String,
    password_hash: String,
    created_at: DateTime<Utc>,
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
        }
    }
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
        Ok(())
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
                    EXISTS (SELECT 1 FROM users WHERE email = $2)",
        )
        .bind(username.as_str())
        .bind(email.as_str())
        .persistent(self.persistent)
        .fetch_one(session.conn())
        .await?;
        session.finish().await?;
        Ok(Taken { username, email })
    }

    async fn insert_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
        let mut session = self.session().await?;
        sqlx::query(
            "INSERT INTO users (id, username, email, password_hash, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user.id)
        .bind(&user.username)
        .bind(&user.email)
        .bind(password_hash)
        .bind(user.created_at)
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
                "SELECT id, username, email, password_hash, created_at FROM users
                 WHERE lower(username) = lower($1)",
                name,
            ),
            LoginId::Email(email) => (
                "SELECT id, username, email, password_hash, created_at FROM users WHERE email = $1",
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
        let mut session = self.session().await?;
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT id, username, email, password_hash, created_at FROM users WHERE id = $1",
        )
        .bind(id)
        .persistent(self.persistent)
        .fetch_optional(session.conn())
        .await?;
        session.finish().await?;
        Ok(row.map(|row| UserCredentials::from(row).user))
    }

    async fn insert_task(&self, task: &Task, event: &NewEvent) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO tasks (id, user_id, title, description, completed, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(task.id)
        .bind(&task.user_id)
        .bind(&task.title)
        .bind(&task.description)
        .bind(task.completed)
        .bind(task.created_at)
        .bind(task.updated_at)
        .persistent(self.persistent)
        .execute(&mut *transaction)
        .await?;
        append_event(&mut transaction, event, self.persistent).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn list_tasks(
        &self,
        owner: &str,
        query: &ListQuery,
    ) -> Result<(Vec<Task>, u64), StoreError> {
        let mut session = self.session().await?;
        let mut page = sqlx::QueryBuilder::new(concat!("SELECT ", task_columns!()));
        push_filters(&mut page, owner, query);
        page.push(order_by(query.sort_by, query.sort_order, TITLE_KEY));
        push_page(&mut page, query);
        let mut count = sqlx::QueryBuilder::new("SELECT count(*)");
        push_filters(&mut count, owner, query);
        let rows: Vec<TaskRow> = page
            .build_query_as()
            .persistent(self.persistent)
            .fetch_all(session.conn())
            .await?;
        let (total,): (i64,) = count
            .build_query_as()
            .persistent(self.persistent)
            .fetch_one(session.conn())
            .await?;
        session.finish().await?;
        Ok((
            rows.into_iter().map(Task::from).collect(),
            total.max(0) as u64,
        ))
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
        Ok(row.map(Task::from))
    }

    async fn update_task(
        &self,
        owner: &str,
        id: Uuid,
        change: &TaskChange,
        now: DateTime<Utc>,
        version: Option<i64>,
        event: &UpdateEvent<'_>,
    ) -> Result<Option<Task>, StoreError> {
        let mut transaction = self.pool.begin().await?;
        // The row as it was, locked until commit: the event depends on it (`completed` from
        // false to true is a completion), and no other change may slip in between.
        let before: Option<TaskRow> = sqlx::query_as(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE user_id = $1 AND id = $2 FOR UPDATE"
        ))
        .bind(owner)
        .bind(id)
        .persistent(self.persistent)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(before) = before else {
            return Ok(None);
        };
        let row: Option<TaskRow> = sqlx::query_as(concat!(
            "UPDATE tasks SET
                 title = COALESCE($3, title),
                 description = CASE WHEN $4 THEN $5 ELSE description END,
                 completed = CASE WHEN $6 THEN NOT completed ELSE COALESCE($7, completed) END,
                 updated_at = GREATEST($8, updated_at + interval '1 millisecond'),
                 version = version + 1
             WHERE user_id = $1 AND id = $2 AND ($9 IS NULL OR version = $9)
             RETURNING ",
            task_columns!()
        ))
        .bind(owner)
        .bind(id)
        .bind(change.title.as_ref().map(|t| t.as_str()))
        .bind(change.description.is_some())
        .bind(
            change
                .description
                .as_ref()
                .and_then(|d| d.as_ref().map(|d| d.as_str())),
        )
        .bind(change.completed == Completion::Toggle)
        .bind(match change.completed {
            Completion::Set(value) => Some(value),
            Completion::Keep | Completion::Toggle => None,
        })
        .bind(now)
        .bind(version)
        .persistent(self.persistent)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(task) = row.map(Task::from) else {
            return Ok(None);
        };
        append_event(
            &mut transaction,
            &event(&Task::from(before), &task),
            self.persistent,
        )
        .await?;
        transaction.commit().await?;
        Ok(Some(task))
    }

    async fn delete_task(
        &self,
        owner: &str,
        id: Uuid,
        version: Option<i64>,
        event: &DeleteEvent<'_>,
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
        let Some(task) = row.map(Task::from) else {
            return Ok(None);
        };
        append_event(&mut transaction, &event(&task), self.persistent).await?;
        transaction.commit().await?;
        Ok(Some(task))
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
}

/// Appends `event` to the log inside `transaction`, as its last statement. Incrementing the
/// head row takes its lock until commit, so the next writer gets the next sequence only
/// once this one is committed: sequence order is commit order, and a reader that has seen
/// sequence n can never later find a smaller one appear. (A BIGSERIAL hands values out at
/// insert time, and transactions may commit in another order.) The lock is held only from
/// this statement to the commit.
async fn append_event(
    transaction: &mut Transaction<'static, Postgres>,
    event: &NewEvent,
    persistent: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH head AS (UPDATE event_log_head SET sequence = sequence + 1 RETURNING sequence)
         INSERT INTO task_events (sequence, id, user_id, type, source, subject, time, data)
         SELECT head.sequence, $1, $2, $3, $4, $5, $6, $7 FROM head",
    )
    .bind(event.id)
    .bind(&event.user_id)
    .bind(event.event_type.as_str())
    .bind(&event.source)
    .bind(&event.subject)
    .bind(NewEvent::time_now())
    .bind(event.data.to_string())
    .persistent(persistent)
    .execute(&mut **transaction)
    .await?;
    Ok(())
}
