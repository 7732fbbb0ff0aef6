//! The narrow storage interface the handlers see, and one implementation per database.
//!
//! Every task statement filters on the owner (`WHERE user_id = … AND id = …`), so isolation
//! between users is enforced by the query itself, not only by the path check in front of it.
//! Driver errors never leave this module: they become a [`StoreError`].

mod group_commit;
pub mod limits;
mod postgres;
mod sqlite;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    auth::{
        domain::{Email, LoginId, User, UserCredentials, Username},
        revocation::Revocation,
    },
    config::{DatabaseKind, Settings},
    events::record::{NewEvent, StoredEvent},
    tasks::domain::{ListQuery, Refusal, SortBy, SortOrder, TagCount, Task},
};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached right now (a 503, not a 500).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A unique constraint refused the write.
    #[error("unique constraint violated")]
    Conflict,
    /// The change breaks a rule found only against the stored row; nothing was written.
    #[error("{}: {}", .0.field, .0.message)]
    Refused(Refusal),
    #[error(transparent)]
    Other(anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict,
            _ if is_unavailable(&error) => Self::Unavailable(error),
            _ => Self::Other(error.into()),
        }
    }
}

impl StoreError {
    /// The error of one of several writes that failed together on `error`, which only one
    /// of them can own (`sqlx::Error` is not `Clone`): the same status, the same message.
    pub(crate) fn each_of(error: &sqlx::Error) -> Self {
        if is_unavailable(error) {
            Self::Unavailable(sqlx::Error::Protocol(error.to_string()))
        } else {
            Self::Other(anyhow::anyhow!("{error}"))
        }
    }
}

/// Whether `error` means the database cannot be reached right now, rather than that the
/// request is wrong.
fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => is_transient(db.code().as_deref()),
        // A certificate that does not verify will not verify on a retry either.
        sqlx::Error::Io(io) => !io.to_string().contains("certificate"),
        sqlx::Error::Tls(tls) => !tls.to_string().contains("certificate"),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// Database error codes that mean "not now" rather than "never": SQLite's busy and locked,
/// PostgreSQL's connection exceptions (class 08, but not 08P01, a protocol violation),
/// serialization failure and deadlock (40001, 40P01: the transaction was rolled back and a
/// retry may succeed), shutdown and start-up (57P0x).
fn is_transient(code: Option<&str>) -> bool {
    code.is_some_and(|code| {
        matches!(code, "5" | "6" | "261" | "517" | "40001" | "40P01")
            || (code.starts_with("08") && code != "08P01")
            || code.starts_with("57P0")
    })
}

/// Which of a sign-up's unique values are already in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Taken {
    pub username: bool,
    pub email: bool,
}

/// What a listing read ([`Store::list_tasks`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Listing {
    /// The page; `None` when the owner's tasks were still at the revision the caller knew,
    /// and the page was not read.
    pub tasks: Option<Vec<Task>>,
    /// The tasks that match, on all pages.
    pub total: u64,
    /// The revision of the owner's tasks that `tasks` and `total` are of: a new random value
    /// in the transaction of every write to them. `None` for a listing whose total is counted
    /// (filtered by more than `completed`), and for an owner with no revision yet.
    pub revision: Option<i64>,
}

/// What an update writes, decided from the task as it was.
#[derive(Clone, Debug)]
pub struct TaskUpdate {
    /// The task after the change.
    pub task: Task,
    /// A task the change creates (the next occurrence of a recurring task).
    pub created: Option<Task>,
    /// The change's events, written in this order.
    pub events: Vec<NewEvent>,
}

/// Decides, from the task as it was, what the update writes; a [`Refusal`] writes nothing.
/// It may be asked more than once for one update (the task is planned again when it changed
/// before the update was written), so it only computes.
pub type PlanUpdate<'a> = dyn Fn(&Task) -> Result<TaskUpdate, Refusal> + Send + Sync + 'a;

/// Makes, inside a transaction, the event for one task (deleted, or reminded).
pub type TaskEvent<'a> = dyn Fn(&Task) -> NewEvent + Send + Sync + 'a;

/// The relay's backlog: events not yet delivered, and when the oldest was committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBacklog {
    pub pending: u64,
    pub oldest: Option<DateTime<Utc>>,
}

/// The name of the one relay lease row.
const RELAY_LEASE: &str = "relay";

/// What the service needs from a database, and nothing more.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending schema migrations, then computes the folded keys (`text::fold`,
    /// `email_key`) of rows written without them; idempotent, and safe beside another
    /// instance doing the same.
    async fn migrate(&self) -> anyhow::Result<()>;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Which of `username` (ignoring case) and `email` (by its canonical key) already belong to
    /// an account.
    async fn taken(&self, username: &Username, email: &Email) -> Result<Taken, StoreError>;
    /// Stores a new account; [`StoreError::Conflict`] when the username or email is taken.
    async fn insert_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError>;
    async fn find_credentials(
        &self,
        login: &LoginId,
    ) -> Result<Option<UserCredentials>, StoreError>;
    async fn find_user(&self, id: Uuid) -> Result<Option<User>, StoreError>;
    /// The local account `id` with its password hash and token generation.
    async fn find_credentials_by_id(&self, id: Uuid)
    -> Result<Option<UserCredentials>, StoreError>;
    /// Which of `username` (ignoring case) and `email` belong to an account other than `id`.
    async fn taken_by_others(
        &self,
        id: Uuid,
        username: Option<&Username>,
        email: Option<&Email>,
    ) -> Result<Taken, StoreError>;
    /// Changes the given fields of account `id`; [`StoreError::Conflict`] when one is taken.
    async fn update_account(
        &self,
        id: Uuid,
        username: Option<&Username>,
        email: Option<&Email>,
    ) -> Result<Option<User>, StoreError>;
    /// In one transaction: raises account `id`'s token generation (revoking every token
    /// issued so far), records the revocation, and replaces the password hash when one is
    /// given. `None` when there is no such account.
    async fn revoke_tokens(
        &self,
        id: Uuid,
        new_password_hash: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<Revocation>, StoreError>;
    /// In one transaction: deletes account `id` and every task it owns, writing `event`'s
    /// event for each task (in task id order), and revokes all its tokens. `None` when there
    /// is no such account.
    async fn delete_account(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        event: &TaskEvent<'_>,
    ) -> Result<Option<Revocation>, StoreError>;
    /// Revocations committed after `revision`, in revision order.
    async fn revocations_after(&self, revision: i64) -> Result<Vec<Revocation>, StoreError>;
    /// Forgets revocations made before `before` (no token of ours lives that long).
    async fn prune_revocations(&self, before: DateTime<Utc>) -> Result<(), StoreError>;

    /// Stores a new task and its `event` in one transaction.
    async fn insert_task(&self, task: &Task, event: &NewEvent) -> Result<(), StoreError>;
    /// One page of the owner's tasks, how many match in all, and the revision of the owner's
    /// tasks the page is of; the page is not read when that revision is `known`.
    async fn list_tasks(
        &self,
        owner: &str,
        query: &ListQuery,
        known: Option<i64>,
    ) -> Result<Listing, StoreError>;
    /// The database's plan for the statement [`Store::list_tasks`] runs (on PostgreSQL the
    /// prepared statement's generic plan, `EXPLAIN QUERY PLAN` on SQLite), one line per row:
    /// for the benchmark and the tests that check a listing stays an index scan however many
    /// tasks a user has.
    async fn explain_listing(
        &self,
        owner: &str,
        query: &ListQuery,
    ) -> Result<Vec<String>, StoreError>;
    async fn get_task(&self, owner: &str, id: Uuid) -> Result<Option<Task>, StoreError>;
    /// Asks `plan` what to write from the task as it is (only at `version` when one is
    /// given), and writes the changed task, the task it creates if any, and the events, in
    /// one transaction in which the task is still as `plan` saw it: the update goes in a run
    /// of several (storage/group_commit.rs) that writes it only if the task is unchanged,
    /// and otherwise the task is read and planned again. `None` when no such task (at that
    /// version) exists; [`StoreError::Refused`] when `plan` refuses.
    async fn update_task(
        &self,
        owner: &str,
        id: Uuid,
        version: Option<i64>,
        plan: &PlanUpdate<'_>,
    ) -> Result<Option<Task>, StoreError>;
    /// Deletes and returns the task, only at `version` when one is given, and stores the
    /// event `event` makes of it in the same transaction.
    async fn delete_task(
        &self,
        owner: &str,
        id: Uuid,
        version: Option<i64>,
        event: &TaskEvent<'_>,
    ) -> Result<Option<Task>, StoreError>;

    /// Every tag of `owner`'s tasks with how many open and all tasks carry it, most used
    /// first, then by folded key.
    async fn tag_counts(&self, owner: &str) -> Result<Vec<TagCount>, StoreError>;
    /// In one transaction: claims up to `limit` tasks whose reminder is due at `now` (one
    /// instance each: rows another instance holds are skipped), marks each reminder sent and
    /// writes `event`'s event for it. How many were sent.
    async fn send_due_reminders(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        event: &TaskEvent<'_>,
    ) -> Result<usize, StoreError>;

    /// Closes the connection pool, waiting for connections in use to come back.
    async fn close(&self);

    /// Where sign-up and login attempts are counted: in the database on PostgreSQL, shared by
    /// every instance; in this process on SQLite. Call once: each call starts afresh in memory.
    fn attempt_limits(&self) -> Arc<dyn limits::AttemptLimits>;
    /// Up to `limit` undelivered events, oldest `sequence` first.
    async fn pending_events(&self, limit: u32) -> Result<Vec<StoredEvent>, StoreError>;
    /// Marks every event up to `through` delivered, if `holder` still holds the relay lease
    /// (a relay that lost it must not mark what another may be publishing); how many rows.
    async fn mark_delivered(&self, through: i64, holder: &str) -> Result<u64, StoreError>;
    /// Deletes events delivered before `before`; how many.
    async fn prune_delivered(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    async fn event_backlog(&self) -> Result<EventBacklog, StoreError>;
    /// Up to `limit` of `owner`'s events with a sequence above `after`, oldest first.
    async fn user_events(
        &self,
        owner: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// The sequence of the last committed event (0 before the first).
    async fn last_sequence(&self) -> Result<i64, StoreError>;
    /// Takes or renews the relay lease for `holder` until `ttl` from now (the database's
    /// clock on PostgreSQL); whether `holder` holds it now.
    async fn hold_relay_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Gives the lease up, so that another instance takes over at once.
    async fn release_relay_lease(&self, holder: &str) -> Result<(), StoreError>;
}

/// Runs `write` on a task of its own and waits for it. A request whose client hangs up is
/// dropped wherever it is waiting; a write transaction dropped half-way leaves its connection
/// to roll back only when next used, holding its row locks meanwhile (the event relay was
/// seen blocked behind one). Spawned, a write always runs to its commit or rollback.
pub async fn to_completion<T: Send + 'static>(
    write: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(write)
        .await
        .map_err(|error| StoreError::Other(error.into()))?
}

/// Connects to the database `settings` names. While it is unreachable (a Neon compute
/// waking up, a container starting after us) this retries with backoff for
/// `database_startup_timeout`, logging each attempt; other errors fail at once.
pub async fn connect(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let deadline = Instant::now() + settings.database_startup_timeout;
    let mut delay = Duration::from_millis(250);
    for attempt in 1.. {
        // No attempt may outlive the start-up budget (a silent host can hold a connect
        // for minutes), though each gets at least a second.
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let error = match tokio::time::timeout(budget, connect_once(settings)).await {
            Ok(Ok(store)) => return Ok(store),
            Ok(Err(error)) => error,
            Err(_) => anyhow::Error::new(sqlx::Error::PoolTimedOut)
                .context(format!("no answer within {} ms", budget.as_millis())),
        };
        let transient = error
            .downcast_ref::<sqlx::Error>()
            .is_some_and(is_unavailable);
        if !transient || Instant::now() + delay > deadline {
            return Err(error.context(format!(
                "could not connect to the database (attempt {attempt})"
            )));
        }
        tracing::warn!(
            attempt,
            retry_in_ms = delay.as_millis() as u64,
            error = %error,
            "the database is not reachable yet; retrying"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    unreachable!("the retry loop only ends by returning")
}

async fn connect_once(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match settings.database_kind()? {
        DatabaseKind::Sqlite => Arc::new(SqliteStore::connect(settings).await?),
        DatabaseKind::Postgres => Arc::new(PostgresStore::connect(settings).await?),
    };
    Ok(store)
}

/// How one database spells what the listing's SQL cannot share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

/// The `ORDER BY` clause for a listing, from a fixed set: sort columns never come from input.
/// Each matches an index (see the migrations), so a page is an index range scan.
fn order_by(query: &ListQuery, dialect: Dialect) -> String {
    let direction = match query.sort_order {
        SortOrder::Asc => "ASC",
        SortOrder::Desc => "DESC",
    };
    let column = match (query.sort_by, dialect) {
        (SortBy::CreatedAt, _) => "created_at",
        (SortBy::UpdatedAt, _) => "updated_at",
        // The folded title in byte order, whatever the locale.
        (SortBy::Title, Dialect::Sqlite) => "title_key",
        (SortBy::Title, Dialect::Postgres) => "title_key COLLATE \"C\"",
        (SortBy::Completed, _) => "completed",
        (SortBy::Priority, _) => "priority",
        // No due date last in both orders. SQLite indexes cannot say NULLS LAST; an index on
        // `due_at IS NULL` first serves both orders.
        // When the filters leave only dated tasks, that term is constant, and SQLite reads a
        // range of the index in order only if the ORDER BY leaves it out.
        (SortBy::DueAt, Dialect::Sqlite) if query.only_dated() => "due_at",
        (SortBy::DueAt, Dialect::Sqlite) => {
            return format!(" ORDER BY due_at IS NULL, due_at {direction}, id {direction}");
        }
        (SortBy::DueAt, Dialect::Postgres) => {
            return format!(" ORDER BY due_at {direction} NULLS LAST, id {direction}");
        }
    };
    format!(" ORDER BY {column} {direction}, id {direction}")
}

/// The columns of a task, in the order the row types read them; a macro so that it can be
/// `concat!`ed into static SQL.
macro_rules! task_columns {
    () => {
        "id, user_id, title, description, completed, created_at, updated_at, version, \
         priority, tags, due_at, remind_at, recurrence, next_task_id, reminder_sent"
    };
}
use task_columns;

/// Appends `FROM tasks WHERE …` for a listing's owner and filters. Both backends share the
/// SQL; the builder writes each one's placeholders. Every value is bound.
/// `time` is how the backend binds a timestamp.
fn push_filters<'q, DB, Time>(
    builder: &mut sqlx::QueryBuilder<'q, DB>,
    dialect: Dialect,
    owner: &str,
    query: &ListQuery,
    time: impl Fn(DateTime<Utc>) -> Time,
) where
    DB: sqlx::Database,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i16: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Time: sqlx::Encode<'q, DB> + sqlx::Type<DB> + 'q,
{
    builder.push(" FROM tasks WHERE user_id = ");
    builder.push_bind(owner.to_owned());
    if let Some(completed) = query.completed {
        builder.push(" AND completed = ");
        builder.push_bind(completed);
    }
    if let Some(q) = &query.q {
        let pattern = q.like_pattern();
        // Both sides folded by `text::fold`; neither database folds anything. Folded text has
        // no ASCII capitals, so SQLite's ASCII-case-insensitive LIKE changes nothing.
        builder.push(" AND (title_key LIKE ");
        builder.push_bind(pattern.clone());
        builder.push(" ESCAPE '\\' OR description_key LIKE ");
        builder.push_bind(pattern);
        builder.push(" ESCAPE '\\')");
    }
    if !query.priorities.is_empty() {
        builder.push(" AND priority IN (");
        let mut ranks = builder.separated(", ");
        for priority in &query.priorities {
            ranks.push_bind(priority.rank());
        }
        ranks.push_unseparated(")");
    }
    for tag in &query.tags {
        // One semi-join per tag, each an index look-up of (owner, tag).
        builder.push(" AND id IN (SELECT task_id FROM task_tags WHERE user_id = ");
        builder.push_bind(owner.to_owned());
        builder.push(" AND tag_key = ");
        builder.push_bind(tag.key());
        builder.push(")");
    }
    if query.only_dated() && dialect == Dialect::Sqlite {
        // Implied by the range below, but SQLite does not infer it: said outright, it is an
        // equality on the due-date indexes' second column, so a window sorted by due date is
        // read in index order instead of being sorted.
        builder.push(" AND (due_at IS NULL) = 0");
    }
    if let Some(after) = query.due_after {
        builder.push(" AND due_at >= ");
        builder.push_bind(time(after));
    }
    if let Some(before) = query.due_before {
        builder.push(" AND due_at < ");
        builder.push_bind(time(before));
    }
    if let Some(overdue) = query.overdue {
        builder.push(if overdue.overdue {
            " AND NOT completed AND due_at < "
        } else {
            " AND (completed OR due_at IS NULL OR due_at >= "
        });
        builder.push_bind(time(overdue.as_of));
        if !overdue.overdue {
            builder.push(")");
        }
    }
}

/// Appends `SELECT <total> AS total, <revision> AS revision …`: the number of the owner's
/// tasks the listing's filters keep, and the revision of the owner's tasks. With no filter
/// but `completed` both are read from the owner's row of `task_counts`, which triggers keep in
/// the transaction of every write to `tasks` (the migrations `20261130120000_task_counts` and
/// `20261202000000_task_revisions`), instead of counted from the owner's rows; otherwise the
/// revision is NULL.
fn push_total<'q, DB, Time>(
    builder: &mut sqlx::QueryBuilder<'q, DB>,
    dialect: Dialect,
    owner: &str,
    query: &ListQuery,
    time: impl Fn(DateTime<Utc>) -> Time,
) where
    DB: sqlx::Database,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i16: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Time: sqlx::Encode<'q, DB> + sqlx::Type<DB> + 'q,
{
    if !query.filters_only_completed() {
        // A count has no revision: such a listing is read every time.
        builder.push(match dialect {
            Dialect::Postgres => "SELECT count(*) AS total, CAST(NULL AS BIGINT) AS revision",
            Dialect::Sqlite => "SELECT count(*) AS total, NULL AS revision",
        });
        push_filters(builder, dialect, owner, query, time);
        return;
    }
    // One row whether or not the owner has a counts row (none yet: no tasks, no revision).
    builder.push(match query.completed {
        None => "SELECT coalesce(counts.tasks",
        Some(true) => "SELECT coalesce(counts.completed",
        Some(false) => "SELECT coalesce(counts.tasks - counts.completed",
    });
    builder.push(
        ", 0) AS total, counts.revision FROM (SELECT 1) AS one \
         LEFT JOIN task_counts AS counts ON counts.user_id = ",
    );
    builder.push_bind(owner.to_owned());
}

/// Appends the condition on which the listing reads its page, `prefix` first: always, unless
/// the owner's tasks are still at `known`, the revision the caller has the page of
/// (`counted.revision`, read by the same statement from the kept totals). It names none of
/// the page's columns, so the database evaluates it once, before reading any task (a
/// one-time filter on PostgreSQL, a `CASE` around the page's subquery on SQLite). Nothing,
/// and `false`, for a listing whose total is counted: it has no revision, and its plan stays
/// as it was.
fn push_unless_known<'q, DB>(
    builder: &mut sqlx::QueryBuilder<'q, DB>,
    prefix: &str,
    query: &ListQuery,
    known: Option<i64>,
) -> bool
where
    DB: sqlx::Database,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    if !query.filters_only_completed() {
        return false;
    }
    builder.push(prefix);
    builder.push("coalesce(counted.revision <> ");
    builder.push_bind(known);
    builder.push(", TRUE)");
    true
}

/// Appends ` LIMIT … OFFSET …` for the listing's page.
fn push_page<'q, DB>(builder: &mut sqlx::QueryBuilder<'q, DB>, query: &ListQuery)
where
    DB: sqlx::Database,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    builder.push(" LIMIT ");
    builder.push_bind(i64::from(query.page_size));
    builder.push(" OFFSET ");
    builder.push_bind(query.offset());
}

/// Rows the start-up back-fill reads and writes at a time.
const BACKFILL_BATCH: i64 = 500;

/// Logs an account whose address, once canonical, is already another account's: it keeps its
/// address but no key, so it logs in by username only (ids only: addresses are personal).
fn warn_email_collision(user_id: &dyn std::fmt::Display, holder: Option<&dyn std::fmt::Display>) {
    tracing::warn!(
        user_id = %user_id,
        holder = holder.map(ToString::to_string),
        "after Unicode normalisation this account's email address is an older account's; \
         it keeps its address but can log in by username only until an operator changes one \
         of the two addresses"
    );
}
