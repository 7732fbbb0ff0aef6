//! Faults only a whole process can show (issue 4): a SIGKILL in the middle of a write burst
//! loses nothing that was acknowledged; SIGTERM lets in-flight requests finish, refuses new
//! connections and exits 0 within the grace period; and at `RUST_LOG=trace` no password,
//! token, hash or secret reaches the log.
//!
//! Each test runs the real `todo-api` binary as a child process (see `common/process.rs`),
//! on SQLite and on PostgreSQL.

mod common;
#[path = "common/process.rs"]
mod process;

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Backend, hs256_token, now, read_head};
use futures_util::{StreamExt, stream};
use process::{PROCESS_SECRET, ServerProcess, TestDatabase};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Passwords are letters, digits and `-` only, so that they read the same in JSON, in a
/// form body and in a log line: a search for the plain value finds every encoding.
const PASSWORD: &str = "Process-Faults-Right-Password-7319";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // A bound, not a timing assumption: nothing here should take more than a moment.
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// A user signed up through the API: `(id, access_token)`.
async fn signup(
    client: &reqwest::Client,
    server: &ServerProcess,
    username: &str,
) -> (String, String) {
    let response = client
        .post(server.url("/api/auth/signup"))
        .json(&json!({
            "username": username,
            "email": format!("{username}@example.com"),
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
    (
        body["user"]["id"].as_str().expect("user id").to_owned(),
        body["access_token"].as_str().expect("token").to_owned(),
    )
}

/// The task id at the end of a `Location` header.
fn id_from_location(response: &reqwest::Response) -> Option<String> {
    let location = response.headers().get("location")?.to_str().ok()?;
    location.rsplit('/').next().map(str::to_owned)
}

/// Opens a raw connection and sends the head of a sign-up with `Expect: 100-continue`;
/// returns once the server's `100 Continue` shows that the handler is reading the body, so
/// that from then on the request is in flight.
async fn start_signup_in_flight(server: &ServerProcess, body_length: usize) -> TcpStream {
    let address = server.socket_address();
    let mut stream = TcpStream::connect(&address).await.expect("connect");
    let head = format!(
        "POST /api/auth/signup HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {body_length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    let interim = read_head(&mut stream).await;
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    stream
}

/// Polls until a new connection to `address` is refused; `false` if it still accepts
/// connections after `bound`.
async fn connections_become_refused(address: &str, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        match TcpStream::connect(address).await {
            Err(_) => return true,
            Ok(stream) => drop(stream),
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------
// 1. SIGKILL during a write burst
// ---------------------------------------------------------------------------------------

/// What the clients of the burst were told.
#[derive(Default)]
struct Acknowledged {
    /// Tasks whose create got a 201.
    created: HashSet<String>,
    /// Tasks whose delete got a 200.
    deleted: HashSet<String>,
    /// Tasks whose delete was sent but got no answer: either outcome is allowed.
    delete_unknown: HashSet<String>,
    /// Anything other than 201/200 before the kill, for the failure message.
    unexpected: Vec<String>,
}

const BURST_CLIENTS: usize = 12;
/// The kill comes once the burst has had this many acknowledged responses.
const KILL_AFTER_ACKNOWLEDGED: usize = 150;
const TASKS_BEFORE_THE_BURST: usize = 24;

struct Burst {
    client: reqwest::Client,
    base: String,
    user_id: String,
    token: String,
    acknowledged: Mutex<Acknowledged>,
    responses: AtomicUsize,
    killed: AtomicBool,
}

/// One client of the burst: creates tasks, and every third request deletes the oldest task
/// it still owns, until the server stops answering.
async fn burst_client(burst: Arc<Burst>, number: usize, mut owned: Vec<String>) {
    let tasks = format!("{}/api/{}/tasks", burst.base, burst.user_id);
    for round in 0u64.. {
        if round % 3 == 2 && !owned.is_empty() {
            let id = owned.remove(0);
            let result = burst
                .client
                .delete(format!("{tasks}/{id}"))
                .bearer_auth(&burst.token)
                .send()
                .await;
            let mut acknowledged = burst.acknowledged.lock().unwrap();
            match result {
                Ok(response) if response.status() == StatusCode::OK => {
                    acknowledged.deleted.insert(id);
                    burst.responses.fetch_add(1, Ordering::SeqCst);
                }
                Ok(response) => {
                    acknowledged.delete_unknown.insert(id.clone());
                    if !burst.killed.load(Ordering::SeqCst) {
                        let status = response.status();
                        acknowledged
                            .unexpected
                            .push(format!("DELETE {id}: {status}"));
                    }
                }
                Err(error) => {
                    acknowledged.delete_unknown.insert(id);
                    if !burst.killed.load(Ordering::SeqCst) {
                        acknowledged.unexpected.push(format!("DELETE: {error}"));
                    }
                    return;
                }
            }
        } else {
            let result = burst
                .client
                .post(&tasks)
                .bearer_auth(&burst.token)
                .json(&json!({
                    "title": format!("burst client {number} round {round}"),
                    "description": "written while the process may be killed",
                }))
                .send()
                .await;
            let mut acknowledged = burst.acknowledged.lock().unwrap();
            match result {
                // The status line is the acknowledgement; `Location` names the task, so
                // the body need not arrive.
                Ok(response) if response.status() == StatusCode::CREATED => {
                    let id = id_from_location(&response).expect("a 201 carries Location");
                    acknowledged.created.insert(id.clone());
                    owned.push(id);
                    burst.responses.fetch_add(1, Ordering::SeqCst);
                }
                Ok(response) => {
                    if !burst.killed.load(Ordering::SeqCst) {
                        let status = response.status();
                        acknowledged.unexpected.push(format!("POST: {status}"));
                    }
                }
                Err(error) => {
                    if !burst.killed.load(Ordering::SeqCst) {
                        acknowledged.unexpected.push(format!("POST: {error}"));
                    }
                    return;
                }
            }
        }
    }
}

on_both_backends! {
    async fn acknowledged_writes_survive_a_sigkill(backend: Backend) {
        let database = TestDatabase::create(backend).await;
        let mut server = ServerProcess::start(&database, &[]).await;
        let client = client();
        let (user_id, token) = signup(&client, &server, "burst_owner").await;

        let burst = Arc::new(Burst {
            client: client.clone(),
            base: server.address.clone(),
            user_id: user_id.clone(),
            token: token.clone(),
            acknowledged: Mutex::new(Acknowledged::default()),
            responses: AtomicUsize::new(0),
            killed: AtomicBool::new(false),
        });
        let mut before = Vec::new();
        for number in 0..TASKS_BEFORE_THE_BURST {
            let response = client
                .post(server.url(&format!("/api/{user_id}/tasks")))
                .bearer_auth(&token)
                .json(&json!({"title": format!("before the burst {number}")}))
                .send()
                .await
                .expect("create before the burst");
            assert_eq!(response.status(), StatusCode::CREATED);
            let id = id_from_location(&response).expect("Location");
            burst.acknowledged.lock().unwrap().created.insert(id.clone());
            before.push(id);
        }

        // Each client starts out owning a share of the earlier tasks, so that deletes begin
        // at once.
        let clients: Vec<_> = (0..BURST_CLIENTS)
            .map(|number| {
                let owned = before
                    .iter()
                    .skip(number)
                    .step_by(BURST_CLIENTS)
                    .cloned()
                    .collect();
                tokio::spawn(burst_client(burst.clone(), number, owned))
            })
            .collect();

        let deadline = Instant::now() + Duration::from_secs(120);
        while burst.responses.load(Ordering::SeqCst) < KILL_AFTER_ACKNOWLEDGED {
            assert!(
                Instant::now() < deadline,
                "the burst got only {} acknowledged responses in 120 s: {:?}\n{}",
                burst.responses.load(Ordering::SeqCst),
                burst.acknowledged.lock().unwrap().unexpected,
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        burst.killed.store(true, Ordering::SeqCst);
        server.kill();
        for client in clients {
            client.await.expect("burst client");
        }
        drop(server);

        let acknowledged = std::mem::take(&mut *burst.acknowledged.lock().unwrap());
        assert!(
            acknowledged.unexpected.is_empty(),
            "responses before the kill other than 201 and 200: {:?}",
            acknowledged.unexpected
        );
        assert!(
            acknowledged.created.len() >= TASKS_BEFORE_THE_BURST + 50
                && !acknowledged.deleted.is_empty(),
            "the burst did too little to test anything: {} created, {} deleted",
            acknowledged.created.len(),
            acknowledged.deleted.len()
        );

        eprintln!(
            "{backend:?}: killed after {} created, {} deleted, {} deletes unanswered",
            acknowledged.created.len(),
            acknowledged.deleted.len(),
            acknowledged.delete_unknown.len()
        );
        let server = ServerProcess::start(&database, &[]).await;
        let expectations: Vec<(String, StatusCode)> = acknowledged
            .created
            .iter()
            .filter(|id| !acknowledged.delete_unknown.contains(*id))
            .map(|id| {
                let expected = if acknowledged.deleted.contains(id) {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::OK
                };
                (id.clone(), expected)
            })
            .collect();
        let checked = expectations.len();
        let address = server.address.clone();
        let wrong: Vec<String> = stream::iter(expectations)
            .map(|(id, expected)| {
                let request = client
                    .get(format!("{address}/api/{user_id}/tasks/{id}"))
                    .bearer_auth(&token);
                async move {
                    let response = request.send().await.expect("GET after the restart");
                    let status = response.status();
                    if status != expected {
                        return Some(format!("{id}: expected {expected}, got {status}"));
                    }
                    if status == StatusCode::OK {
                        let task: Value = response.json().await.expect("task body");
                        if task["id"] != id.as_str() {
                            return Some(format!("{id}: got the task {task}"));
                        }
                    }
                    None
                }
            })
            .buffer_unordered(16)
            .filter_map(|failure| async move { failure })
            .collect()
            .await;
        assert!(
            wrong.is_empty(),
            "after a SIGKILL and a restart on {backend:?}, {} of {checked} acknowledged \
             writes are not as acknowledged ({} created, {} deleted, {} deletes unanswered):\n{}",
            wrong.len(),
            acknowledged.created.len(),
            acknowledged.deleted.len(),
            acknowledged.delete_unknown.len(),
            wrong.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------
// 2 and 3. SIGTERM
// ---------------------------------------------------------------------------------------

on_both_backends! {
    async fn sigterm_lets_in_flight_requests_finish_and_exits_zero(backend: Backend) {
        let database = TestDatabase::create(backend).await;
        let mut server =
            ServerProcess::start(&database, &[("SHUTDOWN_GRACE_SECONDS", "10")]).await;
        let body = json!({
            "username": "in_flight",
            "email": "in_flight@example.com",
            "password": PASSWORD,
            "confirm_password": PASSWORD,
        })
        .to_string();
        let mut stream = start_signup_in_flight(&server, body.len()).await;

        server.terminate();
        assert!(
            server
                .wait_for_log("shutdown signal received", Duration::from_secs(5))
                .await,
            "no sign that SIGTERM was handled:\n{}",
            server.log()
        );
        assert!(
            connections_become_refused(&server.socket_address(), Duration::from_secs(5)).await,
            "new connections are still accepted after SIGTERM:\n{}",
            server.log()
        );

        // The listener is gone; the request that was in flight still gets its answer.
        stream.write_all(body.as_bytes()).await.expect("send the body");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read the response");
        assert!(
            response.starts_with("HTTP/1.1 201"),
            "the in-flight sign-up got {response:?}\n{}",
            server.log()
        );

        let status = server.wait_for_exit(Duration::from_secs(20)).await;
        let log = server.log();
        let status = status.unwrap_or_else(|| panic!("still running 20 s after SIGTERM:\n{log}"));
        assert!(status.success(), "exit status {status} after SIGTERM:\n{log}");
        assert!(log.contains("stopped"), "{log}");

        // What the in-flight request wrote was committed.
        let server = ServerProcess::start(&database, &[]).await;
        let response = client()
            .post(server.url("/api/auth/login"))
            .json(&json!({"username": "in_flight", "password": PASSWORD}))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), StatusCode::OK);
    }

    async fn the_grace_period_bounds_shutdown(backend: Backend) {
        let database = TestDatabase::create(backend).await;
        let mut server =
            ServerProcess::start(&database, &[("SHUTDOWN_GRACE_SECONDS", "1")]).await;
        // A body that is announced but never finished: the handler waits on it for ever.
        let mut stream = start_signup_in_flight(&server, 1000).await;
        stream
            .write_all(br#"{"username": "never_fin"#)
            .await
            .expect("send part of the body");

        server.terminate();
        let status = server.wait_for_exit(Duration::from_secs(15)).await;
        let log = server.log();
        let status = status.unwrap_or_else(|| {
            panic!("still running 15 s after SIGTERM with a 1 s grace period:\n{log}")
        });
        assert!(status.success(), "exit status {status} after SIGTERM:\n{log}");
        assert!(log.contains("grace period over"), "{log}");

        // The held connection went with the process.
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("the held connection is closed");
        assert!(
            read.is_err() || !String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 201"),
            "the unfinished request was answered: {rest:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. No secret in the log
// ---------------------------------------------------------------------------------------

/// Removes ANSI colour sequences (`ESC [ … letter`) from text-format logs.
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Every secret the flow handled, with what it is, for the failure message.
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn add(&mut self, what: impl Into<String>, value: impl Into<String>) {
        let value = value.into();
        assert!(
            value.len() >= 8,
            "a secret too short to search for: {value:?}"
        );
        self.0.push((what.into(), value));
    }

    /// A token, and its signature alone (a truncated token still leaks it).
    fn add_token(&mut self, what: &str, token: &str) {
        self.add(what, token);
        let signature = token.rsplit('.').next().expect("a JWT");
        self.add(format!("{what} (signature)"), signature);
    }
}

/// Sends one request and asserts its status; returns the JSON body.
async fn expect_status(
    request: reqwest::RequestBuilder,
    expected: StatusCode,
    what: &str,
) -> Value {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(response.status(), expected, "{what}");
    response.json().await.unwrap_or(Value::Null)
}

/// Runs the whole auth flow against a server at `RUST_LOG=trace`, stops it, and returns its
/// log and the secrets that went through it.
async fn auth_flow_log(backend: Backend, log_format: &str) -> (String, Secrets) {
    let database = TestDatabase::create(backend).await;
    let mut server = ServerProcess::start(
        &database,
        &[("RUST_LOG", "trace"), ("LOG_FORMAT", log_format)],
    )
    .await;
    let client = client();
    let url = |path: &str| server.url(path);
    let mut secrets = Secrets(Vec::new());
    secrets.add("BETTER_AUTH_SECRET", PROCESS_SECRET);
    secrets.add("the right password", PASSWORD);
    for prefix in ["$2b$", "$2a$", "$2y$"] {
        secrets.0.push(("a bcrypt hash".into(), prefix.into()));
    }

    let signed_up = expect_status(
        client.post(url("/api/auth/signup")).json(&json!({
            "username": "trace_alice",
            "email": "trace_alice@example.com",
            "password": PASSWORD,
            "confirm_password": PASSWORD,
        })),
        StatusCode::CREATED,
        "signup",
    )
    .await;
    let user_id = signed_up["user"]["id"]
        .as_str()
        .expect("user id")
        .to_owned();
    let token = signed_up["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    secrets.add_token("the signup token", &token);

    let mismatched = (
        "Process-Faults-Mismatch-One-4821",
        "Process-Faults-Mismatch-Two-4822",
    );
    secrets.add("a refused sign-up's password", mismatched.0);
    secrets.add("a refused sign-up's confirmation", mismatched.1);
    expect_status(
        client.post(url("/api/auth/signup")).json(&json!({
            "username": "trace_bob",
            "email": "trace_bob@example.com",
            "password": mismatched.0,
            "confirm_password": mismatched.1,
        })),
        StatusCode::BAD_REQUEST,
        "signup with a mismatched confirmation",
    )
    .await;

    for (what, body) in [
        (
            "login by username",
            json!({"username": "trace_alice", "password": PASSWORD}),
        ),
        (
            "login by email",
            json!({"email": "trace_alice@example.com", "password": PASSWORD}),
        ),
    ] {
        let logged_in = expect_status(
            client.post(url("/api/auth/login")).json(&body),
            StatusCode::OK,
            what,
        )
        .await;
        secrets.add_token(what, logged_in["access_token"].as_str().expect("token"));
    }
    let client_secret = "Process-Faults-OAuth2-Client-Secret-5510";
    secrets.add("an OAuth2 client_secret", client_secret);
    let logged_in = expect_status(
        client.post(url("/api/auth/login")).form(&[
            ("grant_type", "password"),
            ("username", "trace_alice"),
            ("password", PASSWORD),
            ("client_id", "swagger"),
            ("client_secret", client_secret),
        ]),
        StatusCode::OK,
        "login with the OAuth2 form",
    )
    .await;
    let form_token = logged_in["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    secrets.add_token("the form login token", &form_token);

    let me = expect_status(
        client.get(url("/api/auth/me")).bearer_auth(&form_token),
        StatusCode::OK,
        "me",
    )
    .await;
    assert_eq!(me["id"], user_id.as_str());

    let tasks = format!("/api/{user_id}/tasks");
    let task = expect_status(
        client
            .post(url(&tasks))
            .bearer_auth(&token)
            .json(&json!({"title": "Trace me", "description": "nothing secret"})),
        StatusCode::CREATED,
        "create a task",
    )
    .await;
    let task_path = format!("{tasks}/{}", task["id"].as_str().expect("task id"));
    expect_status(
        client.get(url(&tasks)).bearer_auth(&token),
        StatusCode::OK,
        "list",
    )
    .await;
    expect_status(
        client
            .patch(url(&task_path))
            .bearer_auth(&token)
            .json(&json!({"completed": true})),
        StatusCode::OK,
        "patch",
    )
    .await;
    expect_status(
        client.delete(url(&task_path)).bearer_auth(&token),
        StatusCode::OK,
        "delete",
    )
    .await;

    let wrong_password = "Process-Faults-Wrong-Password-9046";
    secrets.add("a wrong password", wrong_password);
    expect_status(
        client
            .post(url("/api/auth/login"))
            .json(&json!({"username": "trace_alice", "password": wrong_password})),
        StatusCode::UNAUTHORIZED,
        "login with a wrong password",
    )
    .await;
    expect_status(
        client
            .post(url("/api/auth/login"))
            .form(&[("username", "trace_alice"), ("password", wrong_password)]),
        StatusCode::UNAUTHORIZED,
        "form login with a wrong password",
    )
    .await;
    expect_status(
        client
            .post(url("/api/auth/login"))
            .json(&json!({"username": "trace_nobody", "password": wrong_password})),
        StatusCode::UNAUTHORIZED,
        "login of an unknown user",
    )
    .await;

    let forged = hs256_token(
        &json!({"sub": user_id, "iat": now(), "exp": now() + 3600}),
        "a-forger-s-secret-that-is-not-the-service-s",
    );
    secrets.add_token("the forged token", &forged);
    expect_status(
        client.get(url("/api/auth/me")).bearer_auth(&forged),
        StatusCode::UNAUTHORIZED,
        "me with a forged token",
    )
    .await;
    expect_status(
        client.get(url(&tasks)).bearer_auth(&forged),
        StatusCode::UNAUTHORIZED,
        "list with a forged token",
    )
    .await;

    server.terminate();
    let status = server.wait_for_exit(Duration::from_secs(20)).await;
    let log = server.log();
    let status = status.unwrap_or_else(|| panic!("still running 20 s after SIGTERM:\n{log}"));
    assert!(status.success(), "exit status {status}:\n{log}");
    (log, secrets)
}

/// Where a leaked value sits: the JSON line's `target` when the line is JSON, else the line.
fn describe_leaks(log: &str, value: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains(value))
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(entry) => format!(
                "target {} (level {}): {}",
                entry["target"], entry["level"], line
            ),
            Err(_) => format!("text line: {line}"),
        })
        .collect()
}

fn assert_no_secret_in(log: &str, secrets: &Secrets, log_format: &str, backend: Backend) {
    let plain = strip_ansi(log);
    // The log is real, at trace level, and has the request lines: this test could fail.
    let has_trace = match log_format {
        "json" => plain.contains(r#""level":"TRACE""#),
        _ => plain.contains(" TRACE "),
    };
    assert!(has_trace, "no TRACE line in the {log_format} log:\n{plain}");
    let login_401 = plain.lines().any(|line| {
        line.contains("/api/auth/login")
            && match log_format {
                "json" => line.contains(r#""status":401"#),
                _ => line.contains("status=401"),
            }
    });
    assert!(
        login_401,
        "no request line for the failed login in the {log_format} log:\n{plain}"
    );
    assert!(plain.contains("/api/{user_id}/tasks"), "{plain}");

    let leaks: Vec<String> = secrets
        .0
        .iter()
        .filter(|(_, value)| plain.contains(value.as_str()) || log.contains(value.as_str()))
        .map(|(what, value)| {
            format!(
                "{what} ({value}):\n  {}",
                describe_leaks(&plain, value).join("\n  ")
            )
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "secrets in the {log_format} log at RUST_LOG=trace on {backend:?} ({} bytes of log):\n{}",
        plain.len(),
        leaks.join("\n")
    );
}

on_both_backends! {
    async fn no_secret_reaches_the_log_even_at_trace(backend: Backend) {
        for log_format in ["json", "text"] {
            let (log, secrets) = auth_flow_log(backend, log_format).await;
            assert_no_secret_in(&log, &secrets, log_format, backend);
        }
    }
}
