//! The PostgreSQL implementation of [`Store`], for real deployments (Neon included).

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    Connection, FromRow, PgConnection, Postgres, Transaction,
    pool::PoolConnection,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
};
use uuid::Uuid;

use super::{Store, StoreError, Taken, order_by, push_filters, push_page, task_columns};

/// Titles sort by their lower-case form in byte order, as on SQLite, whatever the locale.
const TITLE_KEY: &str = "lower(title) COLLATE \"C\"";
use crate::{
    auth::domain::{Email, LoginId, User, UserCredentials, Username},
    config::{Settings, is_pgbouncer_url},
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

/// A row of the listing: a task of the page (all `None` when the page is empty) and the
/// total of matching tasks.
#[derive(FromRow)]
struct ListingRow {
    id: Option<Uuid>,
    user_id: Option<String>,
    title: Option<String>,
    description: Option<String>,
    completed: Option<bool>,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    version: Option<i64>,
    total: i64,
}

impl ListingRow {
    fn task(self) -> Option<Task> {
        Some(Task {
            id: self.id?,
            user_id: self.user_id?,
            title: self.title?,
            description: self.description,
            completed: self.completed?,
            created_at: self.created_at?,
            updated_at: self.updated_at?,
            version: self.version?,
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

    async fn insert_task(&self, task: &Task) -> Result<(), StoreError> {
        let mut session = self.session().await?;
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
        .execute(session.conn())
        .await?;
        session.finish().await?;
        Ok(())
    }

    async fn list_tasks(
        &self,
        owner: &str,
        query: &ListQuery,
    ) -> Result<(Vec<Task>, u64), StoreError> {
        // One statement, so one snapshot: the page and its total cannot disagree however
        // writes interleave, and one round trip instead of two. The count is the outer
        // side of a LATERAL join, so a page past the end still returns it (one row of
        // NULL task columns). The outer ORDER BY repeats the page's, because a join's
        // output order is otherwise unspecified.
        let order = order_by(query.sort_by, query.sort_order, TITLE_KEY);
        let mut listing = sqlx::QueryBuilder::new(concat!(
            "SELECT ",
            task_columns!(),
            ", counted.total FROM (SELECT count(*) AS total"
        ));
        push_filters(&mut listing, owner, query);
        listing.push(concat!(
            ") AS counted LEFT JOIN LATERAL (SELECT ",
            task_columns!()
        ));
        push_filters(&mut listing, owner, query);
        listing.push(&order);
        push_page(&mut listing, query);
        listing.push(") AS page ON true");
        listing.push(&order);
        let mut session = self.session().await?;
        let rows: Vec<ListingRow> = listing
            .build_query_as()
            .persistent(self.persistent)
            .fetch_all(session.conn())
            .await?;
        session.finish().await?;
        let total = rows.first().map_or(0, |row| row.total.max(0) as u64);
        Ok((
            rows.into_iter().filter_map(ListingRow::task).collect(),
            total,
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
    ) -> Result<Option<Task>, StoreError> {
        let mut session = self.session().await?;
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
        .fetch_optional(session.conn())
        .await?;
        session.finish().await?;
        Ok(row.map(Task::from))
    }

    async fn delete_task(
        &self,
        owner: &str,
        id: Uuid,
        version: Option<i64>,
    ) -> Result<Option<Task>, StoreError> {
        let mut session = self.session().await?;
        let row: Option<TaskRow> = sqlx::query_as(concat!(
            "DELETE FROM tasks WHERE user_id = $1 AND id = $2 AND ($3 IS NULL OR version = $3)
             RETURNING ",
            task_columns!()
        ))
        .bind(owner)
        .bind(id)
        .bind(version)
        .persistent(self.persistent)
        .fetch_optional(session.conn())
        .await?;
        session.finish().await?;
        Ok(row.map(Task::from))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
