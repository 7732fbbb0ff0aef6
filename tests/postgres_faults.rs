//! Fault injection against PostgreSQL (issue 4): an outage while serving, a service started
//! before its database, PgBouncer in transaction mode, TLS, and two instances on one database.
//!
//! Every test that stops, proxies or reconfigures a database starts a PostgreSQL 15 cluster of
//! its own (see `common/cluster.rs`), so the shared server on 127.0.0.1:5432 is never touched.
//! Needs the PostgreSQL 15 server binaries, `openssl` and `pgbouncer`
//! (`apt-get install -y pgbouncer`); run as root (the clusters run as the `postgres` user).
//!
//! No assertion is about speed: each waits for behaviour (a status, an exit) within a
//! generous deadline, and a request that hangs past its client timeout fails the test.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::{
    collections::BTreeMap,
    fs,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use cluster::{CertificateAuthority, Cluster, ClusterOptions, PgBouncer, blocking, free_port};
use common::*;
use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use todo_api::Settings;

/// Longer than any wait the service itself should impose (acquire timeouts of a second or
/// two here): a request still unanswered after this is a hang.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a recovery, a start-up or an exit may take before the test gives up on it.
const GENEROUS: Duration = Duration::from_secs(60);

/// Short database waits, so that an outage answers within a second or so.
fn short_waits(settings: &mut Settings) {
    settings.database_acquire_timeout = Duration::from_secs(1);
    settings.database_startup_timeout = Duration::from_secs(5);
}

// ---------------------------------------------------------------------------------------
// The binary, as a process of its own.
// ---------------------------------------------------------------------------------------

/// `todo-api` started as a process, with only the environment given (no `.env`: it runs in
/// an empty directory). Its output goes to files; dropping it kills it.
struct Service {
    child: Child,
    dir: tempfile::TempDir,
}

impl Service {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let stdout = fs::File::create(dir.path().join("stdout")).expect("stdout file");
        let stderr = fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_todo-api"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs([
                ("HOST", "127.0.0.1"),
                ("PORT", "0"),
                ("BCRYPT_COST", "4"),
                ("LOG_FORMAT", "json"),
                ("NO_COLOR", "1"),
            ])
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = command.spawn().expect("start todo-api");
        Self { child, dir }
    }

    fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Everything it printed, for failure messages.
    fn output(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout(), self.stderr())
    }

    /// The JSON log lines (on stdout and stderr) carrying `message`.
    fn log_lines(&self, message: &str) -> Vec<Value> {
        format!("{}\n{}", self.stdout(), self.stderr())
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["message"] == message)
            .collect()
    }

    /// The `attempt` numbers of the start-up retry warnings logged so far.
    fn retry_attempts(&self) -> Vec<u64> {
        self.log_lines("the database is not reachable yet; retrying")
            .iter()
            .filter_map(|line| line["attempt"].as_u64())
            .collect()
    }

    /// Waits for the process to exit (killing it after `timeout`).
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll todo-api") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "todo-api did not exit within {timeout:?}:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the service logs the address it listens on, and returns its base URL.
    fn wait_until_listening(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(address) = self
                .log_lines("listening")
                .first()
                .and_then(|line| line["address"].as_str().map(str::to_owned))
            {
                return format!("http://{address}");
            }
            if let Some(status) = self.child.try_wait().expect("poll todo-api") {
                panic!(
                    "todo-api exited ({status}) instead of serving:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "todo-api did not listen within {timeout:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `todo-api migrate` on `database_url` and asserts that it succeeds.
fn migrate(database_url: &str) {
    let mut migrate = Service::spawn(&["migrate"], &[("DATABASE_URL", database_url)]);
    let status = migrate.wait(GENEROUS);
    assert!(
        status.success(),
        "todo-api migrate failed:\n{}",
        migrate.output()
    );
}

// ---------------------------------------------------------------------------------------
// HTTP helpers.
// ---------------------------------------------------------------------------------------

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("HTTP client")
}

fn signup_body(username: &str) -> Value {
    json!({
        "username": username,
        "email": format!("{username}@example.com"),
        "password": PASSWORD,
        "confirm_password": PASSWORD,
    })
}

fn login_body(username: &str) -> Value {
    json!({"username": username, "password": PASSWORD})
}

/// Sends a request and returns the response, failing the test (rather than waiting forever)
/// when the service does not answer within [`CLIENT_TIMEOUT`].
async fn send(request: reqwest::RequestBuilder, what: &str) -> reqwest::Response {
    request
        .timeout(CLIENT_TIMEOUT)
        .send()
        .await
        .unwrap_or_else(|error| panic!("{what}: no answer: {error}"))
}

/// Asserts a 503 problem document that tells the client when to retry.
async fn expect_unavailable(response: reqwest::Response, what: &str) {
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what} during the outage: {body}"
    );
    let problem: Value = serde_json::from_str(&body)
        .unwrap_or_else(|_| panic!("{what}: a problem document, not {body:?}"));
    assert_eq!(problem["status"], 503, "{what}: {problem}");
    assert_eq!(problem["type"], "about:blank", "{what}: {problem}");
    assert!(retry_after.is_some(), "{what}: the 503 has a Retry-After");
}

// ---------------------------------------------------------------------------------------
// 1. An outage while serving.
// ---------------------------------------------------------------------------------------

/// What one request of the background load got.
#[derive(Debug)]
enum Outcome {
    Status(StatusCode, bool),
    NoAnswer(String),
}

/// Clients that keep listing and creating tasks until told to stop, recording every answer.
struct Load {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<(&'static str, Outcome)>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(app: &TestApp, user: &TestUser, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..workers)
            .map(|worker| {
                let (stop, outcomes) = (stop.clone(), outcomes.clone());
                let client = client();
                let tasks = app.url(&TestApp::tasks_path(user));
                let token = user.token.clone();
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let (what, request) = if (n + worker) % 2 == 0 {
                            ("list", client.get(&tasks))
                        } else {
                            let title = format!("load {worker}/{n}");
                            ("create", client.post(&tasks).json(&json!({"title": title})))
                        };
                        let outcome = match request.bearer_auth(&token).send().await {
                            Ok(response) => {
                                let problem =
                                    response.headers().get("content-type").is_some_and(|v| {
                                        v.as_bytes().starts_with(b"application/problem+json")
                                    });
                                Outcome::Status(response.status(), problem)
                            }
                            Err(error) => Outcome::NoAnswer(error.to_string()),
                        };
                        outcomes.lock().unwrap().push((what, outcome));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            outcomes,
            workers,
        }
    }

    /// Stops the clients and returns what they got.
    async fn finish(self) -> Vec<(&'static str, Outcome)> {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            worker.await.expect("load worker");
        }
        std::mem::take(&mut *self.outcomes.lock().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_while_serving_gives_503s_and_recovers_without_a_restart() {
    let cluster = blocking(Cluster::start_new);
    let app = TestApp::spawn_on(&cluster.url("postgres"), short_waits).await;
    let alice = app.signup("alice").await;
    let mut before = Vec::new();
    for i in 0..3 {
        let task = app
            .create_task(
                &alice,
                json!({"title": format!("written before the outage {i}")}),
            )
            .await;
        before.push(task);
    }

    let load = Load::start(&app, &alice, 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocking(|| cluster.stop());

    // The outage: every database route answers 503 (a problem document with Retry-After);
    // the process stays up and says so.
    let task_path = TestApp::task_path(&alice, before[0]["id"].as_str().unwrap());
    {
        let requests = [
            (
                "list",
                app.authed(Method::GET, &TestApp::tasks_path(&alice), &alice.token),
            ),
            ("get", app.authed(Method::GET, &task_path, &alice.token)),
            (
                "create",
                app.authed(Method::POST, &TestApp::tasks_path(&alice), &alice.token)
                    .json(&json!({"title": "written during the outage"})),
            ),
            (
                "update",
                app.authed(Method::PATCH, &task_path, &alice.token)
                    .json(&json!({"completed": true})),
            ),
            (
                "login",
                app.request(Method::POST, "/api/auth/login")
                    .json(&login_body("alice")),
            ),
            (
                "signup",
                app.request(Method::POST, "/api/auth/signup")
                    .json(&signup_body("bob")),
            ),
            ("me", app.authed(Method::GET, "/api/auth/me", &alice.token)),
        ];
        for (what, request) in requests {
            expect_unavailable(send(request, what).await, what).await;
        }
        let ready = send(app.request(Method::GET, "/ready"), "ready").await;
        expect_unavailable(ready, "/ready").await;
        let health = send(app.request(Method::GET, "/health"), "health").await;
        assert_eq!(health.status(), StatusCode::OK, "/health during the outage");
    }

    // The database comes back on the same address; the service notices by itself.
    blocking(|| cluster.start());
    let deadline = Instant::now() + GENEROUS;
    loop {
        let response = send(
            app.authed(Method::GET, &task_path, &alice.token),
            "get after the outage",
        )
        .await;
        match response.status() {
            StatusCode::OK => break,
            StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!(
                "after the outage: {other} {}",
                response.text().await.unwrap_or_default()
            ),
        }
        assert!(
            Instant::now() < deadline,
            "the service did not recover within {GENEROUS:?} of the database's return"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let outcomes = load.finish().await;

    // Everything written before the outage is there, and everything works again.
    for task in &before {
        let path = TestApp::task_path(&alice, task["id"].as_str().unwrap());
        let (status, body) = app.get_json(&alice, &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["title"], task["title"]);
    }
    let ready = send(app.request(Method::GET, "/ready"), "ready").await;
    assert_eq!(ready.status(), StatusCode::OK, "/ready after the outage");
    let login = send(
        app.request(Method::POST, "/api/auth/login")
            .json(&login_body("alice")),
        "login",
    )
    .await;
    assert_eq!(login.status(), StatusCode::OK, "login after the outage");
    app.create_task(&alice, json!({"title": "written after the outage"}))
        .await;
    app.signup("bob").await;

    // The clients that kept going through it all got answers: successes, or 503 problem
    // documents; never a 500, never silence.
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (what, outcome) in &outcomes {
        let ok = match outcome {
            Outcome::Status(status, problem) => {
                *tally.entry(format!("{what} {status}")).or_default() += 1;
                matches!(*status, StatusCode::OK | StatusCode::CREATED)
                    || (*status == StatusCode::SERVICE_UNAVAILABLE && *problem)
            }
            Outcome::NoAnswer(error) => {
                wrong.push(format!("{what}: no answer: {error}"));
                continue;
            }
        };
        if !ok {
            wrong.push(format!("{what}: {outcome:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "background requests got {wrong:#?} (all: {tally:?})"
    );
    assert!(
        tally
            .keys()
            .any(|key| key.ends_with("503 Service Unavailable")),
        "the background load saw the outage: {tally:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 2 and 3. Starting before the database.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_before_its_database_waits_for_it() {
    let cluster = blocking(|| Cluster::init(ClusterOptions::default()));
    let url = cluster.url("postgres");
    let mut service = Service::spawn(
        &[],
        &[
            ("DATABASE_URL", &url),
            ("DATABASE_STARTUP_TIMEOUT_SECONDS", "20"),
            ("DATABASE_ACQUIRE_TIMEOUT_SECONDS", "1"),
        ],
    );

    // It is retrying (and saying so) before the database exists at all.
    let deadline = Instant::now() + GENEROUS;
    while service.retry_attempts().is_empty() {
        assert!(
            service.child.try_wait().unwrap().is_none(),
            "todo-api gave up at once:\n{}",
            service.output()
        );
        assert!(
            Instant::now() < deadline,
            "no retry was logged:\n{}",
            service.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    blocking(|| cluster.start());

    let base = blocking(|| service.wait_until_listening(GENEROUS));
    let attempts = service.retry_attempts();
    assert!(
        !attempts.is_empty() && attempts.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "each attempt is logged, numbered: {attempts:?}"
    );

    // It serves: migrations ran once the database came, and accounts and tasks work.
    let client = client();
    let health = send(client.get(format!("{base}/health")), "health").await;
    assert_eq!(health.status(), StatusCode::OK);
    let ready = send(client.get(format!("{base}/ready")), "ready").await;
    assert_eq!(ready.status(), StatusCode::OK);
    let signup = send(
        client
            .post(format!("{base}/api/auth/signup"))
            .json(&signup_body("early")),
        "signup",
    )
    .await;
    assert_eq!(signup.status(), StatusCode::CREATED);
    let body: Value = signup.json().await.unwrap();
    let (id, token) = (
        body["user"]["id"].as_str().unwrap(),
        body["access_token"].as_str().unwrap(),
    );
    let created = send(
        client
            .post(format!("{base}/api/{id}/tasks"))
            .bearer_auth(token)
            .json(&json!({"title": "after a late database"})),
        "create",
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert!(
        service.child.try_wait().unwrap().is_none(),
        "todo-api is still running"
    );
}

/// Runs the binary against a port where nothing listens, with a password in the URL, and
/// returns it after it exits.
fn start_without_a_database(extra_env: &[(&str, &str)]) -> (Service, ExitStatus, String) {
    let password = "Pa55-never-print-me";
    let url = format!("postgres://todo:{password}@127.0.0.1:{}/todo", free_port());
    let mut env = vec![
        ("DATABASE_URL", url.as_str()),
        ("DATABASE_STARTUP_TIMEOUT_SECONDS", "2"),
    ];
    env.extend_from_slice(extra_env);
    let mut service = Service::spawn(&[], &env);
    let status = service.wait(GENEROUS);
    (service, status, password.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_whose_database_never_comes_exits_non_zero_with_a_clear_message() {
    let (service, status, password) =
        blocking(|| start_without_a_database(&[("DATABASE_ACQUIRE_TIMEOUT_SECONDS", "1")]));
    let stderr = service.stderr();
    let everything = service.output();

    assert!(!status.success(), "exit status {status}:\n{everything}");
    assert!(
        stderr.contains("could not connect to the database"),
        "stderr says why:\n{everything}"
    );
    assert!(
        !everything.contains(&password),
        "the password never appears in the output:\n{everything}"
    );
    assert!(
        service.log_lines("listening").is_empty(),
        "it never listened:\n{everything}"
    );
    // It retried before giving up: each attempt is logged, and the final message says how
    // many there were.
    let attempts = service.retry_attempts();
    assert!(
        !attempts.is_empty() && attempts.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "numbered retry warnings: {attempts:?}\n{everything}"
    );
    let last = attempts.last().unwrap() + 1;
    assert!(
        stderr.contains(&format!("(attempt {last})")),
        "the final message counts the attempts ({last}):\n{everything}"
    );
}

/// The start-up timeout bounds start-up, retries included, whatever the per-request
/// acquire timeout (default 5 s) is: with 2 s to start, the service still retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_retries_within_its_own_timeout_even_when_the_acquire_timeout_is_longer() {
    let (service, status, _) = blocking(|| start_without_a_database(&[]));
    let everything = service.output();
    assert!(!status.success(), "exit status {status}:\n{everything}");
    assert!(
        service
            .stderr()
            .contains("could not connect to the database"),
        "{everything}"
    );
    assert!(
        !service.retry_attempts().is_empty(),
        "with DATABASE_STARTUP_TIMEOUT_SECONDS=2 and the default acquire timeout, the service \
         retried at least once before giving up:\n{everything}"
    );
}

// ---------------------------------------------------------------------------------------
// 4. PgBouncer in transaction mode.
// ---------------------------------------------------------------------------------------

/// A mixed, concurrent workload through `app`: sign-ups, logins and the task routes, many
/// requests at once so that they share the pooler's few server connections. Returns every
/// unexpected answer.
async fn pooled_workload(app: &TestApp, users: usize, tasks_per_user: usize) -> Vec<String> {
    let failures = Mutex::new(Vec::new());
    let fail = |message: String| failures.lock().unwrap().push(message);
    let check = |what: String, status: StatusCode, expected: StatusCode, body: &str| {
        if status != expected {
            fail(format!("{what}: {status} {body}"));
        }
    };
    let names: Vec<String> = (0..users).map(|i| format!("pooled{i}")).collect();
    let signups = join_all(names.iter().map(|name| async move {
        let response = send(
            app.request(Method::POST, "/api/auth/signup")
                .json(&signup_body(name)),
            "signup",
        )
        .await;
        (response.status(), response.text().await.unwrap_or_default())
    }))
    .await;
    let mut people = Vec::new();
    for (name, (status, body)) in names.iter().zip(signups) {
        check(format!("signup {name}"), status, StatusCode::CREATED, &body);
        if let Ok(body) = serde_json::from_str::<Value>(&body)
            && status == StatusCode::CREATED
        {
            people.push(TestUser {
                id: body["user"]["id"].as_str().unwrap().to_owned(),
                username: name.clone(),
                email: format!("{name}@example.com"),
                password: PASSWORD.to_owned(),
                token: body["access_token"].as_str().unwrap().to_owned(),
            });
        }
    }

    let per_user = join_all(people.iter().map(|user| {
        let (check, fail) = (&check, &fail);
        async move {
            let login = send(
                app.request(Method::POST, "/api/auth/login")
                    .json(&login_body(&user.username)),
                "login",
            )
            .await;
            let status = login.status();
            check(
                format!("login {}", user.username),
                status,
                StatusCode::OK,
                &login.text().await.unwrap_or_default(),
            );

            let created = join_all((0..tasks_per_user).map(|i| async move {
                let response = send(
                    app.authed(Method::POST, &TestApp::tasks_path(user), &user.token)
                        .json(&json!({"title": format!("pooled task {i}"), "description": "x"})),
                    "create",
                )
                .await;
                (response.status(), response.text().await.unwrap_or_default())
            }))
            .await;
            let mut ids = Vec::new();
            for (status, body) in created {
                check("create".into(), status, StatusCode::CREATED, &body);
                if let Ok(task) = serde_json::from_str::<Value>(&body)
                    && let Some(id) = task["id"].as_str()
                {
                    ids.push(id.to_owned());
                }
            }

            let reads = join_all(ids.iter().enumerate().map(|(i, id)| async move {
                let path = TestApp::task_path(user, id);
                let (what, request) = match i % 3 {
                    0 => ("get", app.authed(Method::GET, &path, &user.token)),
                    1 => (
                        "update",
                        app.authed(Method::PATCH, &path, &user.token)
                            .json(&json!({"completed": true, "title": format!("updated {i}")})),
                    ),
                    _ => (
                        "list",
                        app.authed(
                            Method::GET,
                            &format!(
                                "{}?page_size=5&sort_by=title&completed=false",
                                TestApp::tasks_path(user)
                            ),
                            &user.token,
                        ),
                    ),
                };
                let response = send(request, what).await;
                (
                    what,
                    response.status(),
                    response.text().await.unwrap_or_default(),
                )
            }))
            .await;
            for (what, status, body) in reads {
                check(what.into(), status, StatusCode::OK, &body);
            }

            let deletes = join_all(ids.iter().map(|id| async move {
                let path = TestApp::task_path(user, id);
                let response = send(app.authed(Method::DELETE, &path, &user.token), "delete").await;
                (response.status(), response.text().await.unwrap_or_default())
            }))
            .await;
            for (status, body) in deletes {
                check("delete".into(), status, StatusCode::OK, &body);
            }
            let (status, listing) = app.get_json(user, &TestApp::tasks_path(user)).await;
            check(
                "final list".into(),
                status,
                StatusCode::OK,
                &listing.to_string(),
            );
            if status == StatusCode::OK && listing["total"] != 0 {
                fail(format!("after deleting everything: {listing}"));
            }
        }
    }));
    per_user.await;
    failures.into_inner().unwrap()
}

/// With `pgbouncer=true` every statement must survive being multiplexed onto two shared
/// server connections. A failure listing `bind message supplies N parameters, but prepared
/// statement "" requires M` means a statement was parsed on one server connection and bound
/// on another: PgBouncer hands the client a new server connection after every Sync outside
/// a transaction, and sqlx sends Parse/Describe and Bind/Execute in separate Syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_service_works_through_pgbouncer_in_transaction_mode() {
    let cluster = blocking(Cluster::start_new);
    let direct = blocking(|| cluster.create_database("todo"));
    // Behind PgBouncer the schema comes from the direct URL, once.
    blocking(|| migrate(&direct));
    let bouncer = blocking(|| PgBouncer::start_transaction_mode(&cluster, 2));

    let app = TestApp::spawn_on(&bouncer.url("todo"), |settings| {
        settings.migrate_on_start = false;
        settings.database_max_connections = 10;
        settings.database_acquire_timeout = Duration::from_secs(10);
    })
    .await;
    let failures = pooled_workload(&app, 4, 24).await;
    assert!(
        failures.is_empty(),
        "{} requests failed through PgBouncer with pgbouncer=true, e.g. {:#?}\n\
         server log errors:\n{}",
        failures.len(),
        &failures[..failures.len().min(10)],
        server_errors(&cluster)
    );
}

/// The ERROR lines of the cluster's log, to show what the database refused.
fn server_errors(cluster: &Cluster) -> String {
    let log = cluster.log();
    let errors: Vec<&str> = log.lines().filter(|line| line.contains("ERROR")).collect();
    let shown = errors.len().min(15);
    format!(
        "{} ERROR lines, the first {shown}:\n{}",
        errors.len(),
        errors[..shown].join("\n")
    )
}

/// The control experiment: the same workload through the same pooler, without
/// `pgbouncer=true`, breaks on named prepared statements, which is why the marker exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_pgbouncer_marker_named_statements_clash_in_transaction_mode() {
    let cluster = blocking(Cluster::start_new);
    let direct = blocking(|| cluster.create_database("todo"));
    blocking(|| migrate(&direct));
    let bouncer = blocking(|| PgBouncer::start_transaction_mode(&cluster, 2));

    let app = TestApp::spawn_on(&bouncer.url_without_marker("todo"), |settings| {
        settings.migrate_on_start = false;
        settings.database_max_connections = 10;
        settings.database_acquire_timeout = Duration::from_secs(10);
    })
    .await;
    let failures = pooled_workload(&app, 4, 24).await;
    let log = cluster.log();
    assert!(
        !failures.is_empty(),
        "named prepared statements should have clashed through PgBouncer"
    );
    assert!(
        log.contains("prepared statement \"sqlx_s_"),
        "the server refused named statements: {}",
        server_errors(&cluster)
    );
}

// ---------------------------------------------------------------------------------------
// 5. TLS.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_require_and_verify_full_work_against_a_cluster_with_our_certificate() {
    let password = "tls-Secret-42";
    let cluster = blocking(|| {
        let cluster = Cluster::init(ClusterOptions {
            tls: true,
            password: Some(password.to_owned()),
            ..ClusterOptions::default()
        });
        cluster.start();
        cluster
    });
    let ca = cluster
        .ca
        .as_ref()
        .expect("a CA")
        .cert
        .display()
        .to_string();
    let base = cluster.url("postgres");

    let urls = [
        ("require", format!("{base}?sslmode=require")),
        (
            "verifyfull",
            format!("{base}?sslmode=verify-full&sslrootcert={ca}"),
        ),
        // As Neon's console shows it.
        (
            "neon",
            format!("{base}?sslmode=require&channel_binding=require"),
        ),
    ];
    for (label, url) in &urls {
        let app = TestApp::spawn_on(url, short_waits).await;
        let user = app.signup(&format!("tls{label}")).await;
        let task = app
            .create_task(&user, json!({"title": format!("over TLS ({label})")}))
            .await;
        let (status, body) = app
            .get_json(
                &user,
                &TestApp::task_path(&user, task["id"].as_str().unwrap()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{label}: {body}");
        // pg_hba.conf rejects every connection without TLS, but look anyway.
        let encrypted = blocking(|| {
            cluster.psql(
                "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
                 WHERE ssl AND client_addr = '127.0.0.1'",
            )
        });
        assert_ne!(encrypted, "0", "{label}: the service's connections use TLS");
        app.stop().await;
    }

    // The checks are real: another CA's root does not verify our certificate, and a
    // connection without TLS is refused by the server.
    let other = tempfile::tempdir().expect("temporary directory");
    let other_ca = blocking(|| CertificateAuthority::new(other.path(), "other"));
    let refused = [
        (
            "verify-full with another CA",
            format!(
                "{base}?sslmode=verify-full&sslrootcert={}",
                other_ca.cert.display()
            ),
            "certificate",
        ),
        (
            "sslmode=disable",
            format!("{base}?sslmode=disable"),
            "no encryption",
        ),
    ];
    for (label, url, reason) in &refused {
        let mut service = Service::spawn(
            &[],
            &[
                ("DATABASE_URL", url),
                ("DATABASE_STARTUP_TIMEOUT_SECONDS", "1"),
                ("DATABASE_ACQUIRE_TIMEOUT_SECONDS", "1"),
            ],
        );
        let status = blocking(|| service.wait(GENEROUS));
        let everything = service.output();
        assert!(!status.success(), "{label}: exit {status}\n{everything}");
        let stderr = service.stderr();
        assert!(
            stderr.contains("could not connect to the database") && stderr.contains(reason),
            "{label}: stderr says why ({reason}):\n{everything}"
        );
        assert!(
            service.log_lines("listening").is_empty(),
            "{label}: never served\n{everything}"
        );
        assert!(
            !everything.contains(password),
            "{label}: the password stays out of the output"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 6. Several instances.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_one_database() {
    let cluster = blocking(Cluster::start_new);
    let url = blocking(|| cluster.create_database("shared"));
    // Started together: both migrate, and sqlx's advisory lock makes that safe.
    let (a, b) = tokio::join!(
        TestApp::spawn_on(&url, short_waits),
        TestApp::spawn_on(&url, short_waits)
    );

    // An account made on A logs in on B, as the same user.
    let alice = a.signup("alice").await;
    let login = send(
        b.request(Method::POST, "/api/auth/login")
            .json(&login_body("alice")),
        "login on B",
    )
    .await;
    assert_eq!(login.status(), StatusCode::OK, "login on B");
    let login: Value = login.json().await.unwrap();
    assert_eq!(login["user"]["id"], alice.id.as_str());
    let on_b = TestUser {
        token: login["access_token"].as_str().unwrap().to_owned(),
        ..alice.clone()
    };

    // A task written through A is read and changed through B, and the change is seen on A.
    let task = a
        .create_task(&alice, json!({"title": "written on A"}))
        .await;
    let path = TestApp::task_path(&alice, task["id"].as_str().unwrap());
    let (status, read) = b.get_json(&on_b, &path).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["title"], "written on A");
    let updated = send(
        b.authed(Method::PATCH, &path, &on_b.token)
            .json(&json!({"title": "changed on B", "completed": true})),
        "update on B",
    )
    .await;
    assert_eq!(updated.status(), StatusCode::OK);
    let (status, seen) = a.get_json(&alice, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["title"], "changed on B");
    assert_eq!(seen["completed"], true);
    let (_, listing) = b.get_json(&on_b, &TestApp::tasks_path(&alice)).await;
    assert_eq!(listing["total"], 1, "{listing}");

    // The same account raced through both: the database decides, once.
    let attempts = join_all((0..10).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        async move {
            let response = send(
                app.request(Method::POST, "/api/auth/signup")
                    .json(&signup_body("racer")),
                "racing signup",
            )
            .await;
            let status = response.status();
            if status == StatusCode::CONFLICT {
                expect_problem(response, StatusCode::CONFLICT).await;
            }
            status
        }
    }))
    .await;
    let created = attempts
        .iter()
        .filter(|status| **status == StatusCode::CREATED)
        .count();
    let conflicts = attempts
        .iter()
        .filter(|status| **status == StatusCode::CONFLICT)
        .count();
    assert_eq!(
        (created, conflicts),
        (1, 9),
        "one 201 and nine 409s: {attempts:?}"
    );
    for app in [&a, &b] {
        let login = send(
            app.request(Method::POST, "/api/auth/login")
                .json(&login_body("racer")),
            "racer login",
        )
        .await;
        assert_eq!(login.status(), StatusCode::OK);
    }
}

// ---------------------------------------------------------------------------------------
// Connections cut in the pool.
// ---------------------------------------------------------------------------------------

/// A restarted server, a failover or a proxy cuts every connection the pool holds at once;
/// none of them may cost a request its answer. sqlx's ping before it hands out a connection
/// is what finds them: switching it off (measured: up to +14 % for a page of 50,
/// bench/README.md) fails this test at its first request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_in_the_pool_cost_no_request_its_answer() {
    let cluster = blocking(Cluster::start_new);
    let app = TestApp::spawn_on(&cluster.url("postgres"), |_| {}).await;
    let alice = app.signup("alice").await;
    let task = app.create_task(&alice, json!({"title": "kept"})).await;
    // Several connections in the pool, all open.
    let tasks_path = TestApp::tasks_path(&alice);
    let reads = (0..8).map(|_| app.get_json(&alice, &tasks_path));
    for (status, _) in join_all(reads).await {
        assert_eq!(status, StatusCode::OK);
    }

    let cut = blocking(|| {
        cluster.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
    });
    assert_ne!(cut.trim(), "0", "the service's connections were cut");

    // One request at a time, so that each takes one of the cut connections in turn.
    let task_path = TestApp::task_path(&alice, task["id"].as_str().unwrap());
    for attempt in 0..12 {
        let (status, body) = app.get_json(&alice, &task_path).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "request {attempt} after the cut: {body}"
        );
    }
    app.create_task(&alice, json!({"title": "written after the cut"}))
        .await;
}
