//! The test harness: [`TestApp`] starts the real application on port 0, on a fresh SQLite
//! file or a fresh PostgreSQL database, and talks to it over HTTP.
//!
//! PostgreSQL is found at `TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test creates its own database there
//! and drops it afterwards. If PostgreSQL is not reachable, the PostgreSQL tests fail: they
//! never skip.
#![allow(dead_code)]

use std::sync::Once;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use todo_api::{Application, Settings, config::Secret};
use tokio::sync::oneshot;

pub const SECRET: &str = "test-secret-for-hs256-tokens-0123456789abcdef";
pub const PASSWORD: &str = "correct horse battery";
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each listed test body once on SQLite and once on PostgreSQL, as
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_databases {
    ($(
        $(#[$meta:meta])*
        async fn $name:ident($app:ident: TestApp) $body:block
    )*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($app: TestApp) $body

            #[tokio::test]
            async fn sqlite() {
                run(TestApp::spawn(Backend::Sqlite).await).await
            }

            #[tokio::test]
            async fn postgres() {
                run(TestApp::spawn(Backend::Postgres).await).await
            }
        }
    )*};
}

/// A user signed up through the API.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: String,
    pub username: String,
    pub email: String,
    pub password: String,
    pub token: String,
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub backend: Backend,
    pub database_url: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _sqlite_dir: Option<tempfile::TempDir>,
    postgres_database: Option<String>,
}

fn init_logs() {
    static ONCE: Once = Once::new();
    // Logs only when asked: TEST_LOG=1 cargo test …
    if std::env::var_os("TEST_LOG").is_some() {
        ONCE.call_once(|| todo_api::telemetry::init(todo_api::config::LogFormat::Text));
    }
}

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// A database URL on the same server as `admin_url`, naming `database`.
fn url_for_database(admin: &str, database: &str) -> String {
    let mut url = url::Url::parse(admin).expect("TEST_DATABASE_URL is a URL");
    url.set_path(database);
    url.to_string()
}

/// The settings every test starts from: fast bcrypt, a known secret, port 0.
pub fn test_settings(database_url: &str) -> Settings {
    let mut settings = Settings::new(database_url);
    settings.port = 0;
    settings.bcrypt_cost = 4;
    settings.jwt_secret = Some(Secret::new(SECRET));
    // Tests sign up and log in far faster than people do; the limits have tests of their own.
    settings.auth_rate_limit_per_ip = 0;
    settings.auth_rate_limit_per_account = 0;
    settings
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts the application after `configure` adjusts its settings.
    pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> Self {
        init_logs();
        let (database_url, sqlite_dir, postgres_database) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("todo.db").display());
                (url, Some(dir), None)
            }
            Backend::Postgres => {
                let (name, url) = create_test_database().await;
                (url, None, Some(name))
            }
        };
        let mut app = Self::spawn_on(&database_url, configure).await;
        app.backend = backend;
        app._sqlite_dir = sqlite_dir;
        app.postgres_database = postgres_database;
        app
    }

    /// Starts the application on a database the caller provides (a cluster of its own, a
    /// pooler, a TLS endpoint …). Nothing is dropped afterwards.
    pub async fn spawn_on(database_url: &str, configure: impl FnOnce(&mut Settings)) -> Self {
        init_logs();
        let mut settings = test_settings(database_url);
        configure(&mut settings);
        let backend = match settings.database_kind().expect("a known database") {
            todo_api::config::DatabaseKind::Sqlite => Backend::Sqlite,
            todo_api::config::DatabaseKind::Postgres => Backend::Postgres,
        };
        let application = Application::build(settings)
            .await
            .expect("application starts");
        let address = format!("http://127.0.0.1:{}", application.port());
        let (stop, stopped) = oneshot::channel();
        let server = tokio::spawn(async move {
            application
                .run_until(async {
                    stopped.await.ok();
                })
                .await
                .expect("server runs");
        });
        Self {
            address,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("HTTP client"),
            backend,
            database_url: database_url.to_owned(),
            stop: Some(stop),
            server: Some(server),
            _sqlite_dir: None,
            postgres_database: None,
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server stops cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A request carrying `token` as a bearer token.
    pub fn authed(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(token)
    }

    pub async fn signup(&self, username: &str) -> TestUser {
        let email = format!("{username}@example.com");
        let response = self
            .request(Method::POST, "/api/auth/signup")
            .json(&json!({
                "username": username,
                "email": email,
                "password": PASSWORD,
                "confirm_password": PASSWORD,
            }))
            .send()
            .await
            .expect("signup request");
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "signup of {username}"
        );
        let body: Value = response.json().await.expect("signup body");
        TestUser {
            id: body["user"]["id"].as_str().expect("user id").to_owned(),
            username: username.to_owned(),
            email,
            password: PASSWORD.to_owned(),
            token: body["access_token"].as_str().expect("token").to_owned(),
        }
    }

    pub fn tasks_path(user: &TestUser) -> String {
        format!("/api/{}/tasks", user.id)
    }

    pub fn task_path(user: &TestUser, id: &str) -> String {
        format!("/api/{}/tasks/{id}", user.id)
    }

    /// Creates a task for `user` and returns its JSON.
    pub async fn create_task(&self, user: &TestUser, body: Value) -> Value {
        let response = self
            .authed(Method::POST, &Self::tasks_path(user), &user.token)
            .json(&body)
            .send()
            .await
            .expect("create request");
        assert_eq!(response.status(), StatusCode::CREATED, "create {body}");
        response.json().await.expect("task body")
    }

    /// `GET` a path as `user` and return status and JSON body.
    /// The rows of `sql`, with `owner` bound to `$1`, read from the test's database itself on
    /// a connection of its own (what the API no longer shows, or never shows).
    pub async fn owner_rows<T>(&self, sql: &str, owner: &str) -> Vec<T>
    where
        T: Send
            + Unpin
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        match self.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.database_url).await.unwrap();
                let rows = sqlx::query_as(sql).bind(owner).fetch_all(&pool).await;
                pool.close().await;
                rows.unwrap()
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.database_url).await.unwrap();
                let rows = sqlx::query_as(sql).bind(owner).fetch_all(&pool).await;
                pool.close().await;
                rows.unwrap()
            }
        }
    }

    /// Runs `sql` (no parameters; one statement or several) on the test's database, on a
    /// connection of its own.
    pub async fn run_sql(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.database_url).await.unwrap();
                sqlx::raw_sql(sql).execute(&pool).await.unwrap();
                pool.close().await;
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.database_url).await.unwrap();
                sqlx::raw_sql(sql).execute(&pool).await.unwrap();
                pool.close().await;
            }
        }
    }

    pub async fn get_json(&self, user: &TestUser, path: &str) -> (StatusCode, Value) {
        let response = self
            .authed(Method::GET, path, &user.token)
            .send()
            .await
            .expect("GET request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// Another connection holding what every run of creates must take (SQLite's write lock,
/// PostgreSQL's event log head row), so that creates arriving meanwhile queue and go in runs
/// of several.
pub enum Blocker {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Blocker {
    /// Takes the lock on a connection of its own, until [`Blocker::release`].
    pub async fn hold(app: &TestApp) -> Self {
        match app.backend {
            Backend::Sqlite => {
                let mut blocker = sqlx::SqliteConnection::connect(&app.database_url)
                    .await
                    .unwrap();
                blocker.execute("BEGIN IMMEDIATE").await.unwrap();
                Self::Sqlite(blocker)
            }
            Backend::Postgres => {
                let mut blocker = sqlx::PgConnection::connect(&app.database_url)
                    .await
                    .unwrap();
                blocker
                    .execute("BEGIN; UPDATE event_log_head SET sequence = sequence")
                    .await
                    .unwrap();
                Self::Postgres(blocker)
            }
        }
    }

    /// Rolls the other connection's transaction back: the writes waiting for the lock go on.
    pub async fn release(self) {
        match self {
            Self::Sqlite(mut blocker) => {
                blocker.execute("ROLLBACK").await.unwrap();
            }
            Self::Postgres(mut blocker) => {
                blocker.execute("ROLLBACK").await.unwrap();
            }
        }
    }

    /// Sends `requests` all at once while the lock is held, so that their writes queue and
    /// go in runs of several, then releases it; the responses, in the order of `requests`.
    /// Half a second is time for the requests to arrive (SQLite's BEGIN waits up to 5 s for
    /// the lock, PostgreSQL's as long as it takes); the outcome does not depend on it, only
    /// how many share a run.
    pub async fn send_meanwhile(
        app: &TestApp,
        requests: Vec<RequestBuilder>,
    ) -> Vec<reqwest::Response> {
        let blocker = Self::hold(app).await;
        let sent = tokio::spawn(futures_util::future::join_all(
            requests.into_iter().map(RequestBuilder::send),
        ));
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        blocker.release().await;
        let responses = sent.await.expect("the requests' task");
        responses
            .into_iter()
            .map(|response| response.expect("a response"))
            .collect()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(name) = self.postgres_database.take() {
            drop_test_database(name);
        }
    }
}

/// Creates a fresh database on the test PostgreSQL server; returns its name and URL. The
/// `todo_test_` prefix lets scripts/test.sh sweep databases an interrupted run left behind.
pub async fn create_test_database() -> (String, String) {
    let name = format!("todo_test_{}", uuid::Uuid::new_v4().simple());
    let admin = admin_url();
    let mut connection = PgConnection::connect(&admin).await.unwrap_or_else(|error| {
        panic!("PostgreSQL must be reachable at {admin} (set TEST_DATABASE_URL): {error}")
    });
    connection
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .expect("create the test database");
    connection.close().await.ok();
    let url = url_for_database(&admin, &name);
    (name, url)
}

/// Drops a database made by [`create_test_database`]. Usable from `Drop`, which cannot
/// await: the async work runs on a thread of its own.
pub fn drop_test_database(name: String) {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            if let Ok(mut connection) = PgConnection::connect(&admin_url()).await {
                let sql = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
                connection.execute(sql.as_str()).await.ok();
            }
        });
    })
    .join()
    .ok();
}

/// Asserts that `response` is a problem document with `status`, and returns its body.
pub async fn expect_problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/problem+json"),
        "content type {content_type:?}"
    );
    let body: Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status.as_u16(), "problem status in {body}");
    assert_eq!(body["type"], "about:blank");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// Asserts that `response` refuses its credentials: 401, a `WWW-Authenticate: Bearer`
/// challenge, and a problem document.
pub async fn expect_unauthorized(response: reqwest::Response, case: &str) {
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "{case} must be a 401"
    );
    let challenge = response
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer"),
        "{case}: WWW-Authenticate is {challenge:?}"
    );
    expect_problem(response, StatusCode::UNAUTHORIZED).await;
}

/// Reads one response head (up to the blank line) from a raw connection.
pub async fn read_head(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let read = stream
            .read(&mut byte)
            .await
            .expect("read the response head");
        assert_eq!(read, 1, "the connection closed mid-head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("the head is text")
}

/// The fields named in a 400 problem's `errors`.
pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Signs `claims` with HS256 and `secret`, as a forger or another issuer would.
pub fn hs256_token(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token encodes")
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Like [`on_both_databases!`], for tests that start the application themselves (with
/// [`TestApp::spawn_with`], say): the body receives the backend, once per database.
#[macro_export]
macro_rules! on_both_backends {
    ($(
        $(#[$meta:meta])*
        async fn $name:ident($backend:ident: Backend) $body:block
    )*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($backend: Backend) $body

            #[tokio::test]
            async fn sqlite() {
                run(Backend::Sqlite).await
            }

            #[tokio::test]
            async fn postgres() {
                run(Backend::Postgres).await
            }
        }
    )*};
}

/// Parses an RFC 3339 timestamp of the API, asserting that it is in UTC with a `Z` suffix.
pub fn timestamp(value: &Value) -> chrono::DateTime<chrono::Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp {value} is a string"));
    assert!(text.ends_with('Z'), "timestamp {text} ends in Z");
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|error| panic!("timestamp {text} is RFC 3339: {error}"))
        .with_timezone(&chrono::Utc)
}

/// The seven task routes, for the rules that must hold on every one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskRoute {
    List,
    Create,
    Read,
    Replace,
    Update,
    Complete,
    Delete,
}

impl TaskRoute {
    pub const ALL: [TaskRoute; 7] = [
        TaskRoute::List,
        TaskRoute::Create,
        TaskRoute::Read,
        TaskRoute::Replace,
        TaskRoute::Update,
        TaskRoute::Complete,
        TaskRoute::Delete,
    ];

    /// The routes whose path names one task.
    pub const ON_ONE_TASK: [TaskRoute; 5] = [
        TaskRoute::Read,
        TaskRoute::Replace,
        TaskRoute::Update,
        TaskRoute::Complete,
        TaskRoute::Delete,
    ];

    /// The routes that read a JSON body.
    pub const WITH_BODY: [TaskRoute; 4] = [
        TaskRoute::Create,
        TaskRoute::Replace,
        TaskRoute::Update,
        TaskRoute::Complete,
    ];

    pub fn method(self) -> Method {
        match self {
            TaskRoute::List | TaskRoute::Read => Method::GET,
            TaskRoute::Create => Method::POST,
            TaskRoute::Replace => Method::PUT,
            TaskRoute::Update | TaskRoute::Complete => Method::PATCH,
            TaskRoute::Delete => Method::DELETE,
        }
    }

    /// The route's path under `user_id`; `task_id` is ignored by the collection routes.
    pub fn path(self, user_id: &str, task_id: &str) -> String {
        match self {
            TaskRoute::List | TaskRoute::Create => format!("/api/{user_id}/tasks"),
            TaskRoute::Complete => format!("/api/{user_id}/tasks/{task_id}/complete"),
            _ => format!("/api/{user_id}/tasks/{task_id}"),
        }
    }

    /// A body the route accepts, for the routes that take one.
    pub fn valid_body(self) -> Option<Value> {
        match self {
            TaskRoute::Create => Some(json!({"title": "Created by the route table"})),
            TaskRoute::Replace => Some(json!({
                "title": "Replaced by the route table",
                "description": null,
                "completed": true,
            })),
            TaskRoute::Update => Some(json!({"title": "Patched by the route table"})),
            TaskRoute::Complete => Some(json!({"completed": true})),
            TaskRoute::List | TaskRoute::Read | TaskRoute::Delete => None,
        }
    }

    /// A request for this route, with its valid body (if any) and no credentials.
    pub fn request(self, app: &TestApp, user_id: &str, task_id: &str) -> RequestBuilder {
        let request = app.request(self.method(), &self.path(user_id, task_id));
        match self.valid_body() {
            Some(body) => request.json(&body),
            None => request,
        }
    }
}
