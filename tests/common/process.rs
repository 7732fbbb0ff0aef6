//! The real `todo-api` binary as a child process, for tests of what only a process can show:
//! being killed, being asked to stop with SIGTERM, what it writes to its log.
//!
//! Include it next to the shared harness (it uses `common::admin_url` and `common::Backend`):
//!
//! ```ignore
//! mod common;
//! #[path = "common/process.rs"]
//! mod process;
//! ```
#![allow(dead_code)]

use std::{
    io::Read,
    net::TcpListener,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::common::{Backend, create_test_database, drop_test_database};

/// The HS256 secret every process test gives the binary (at least 32 bytes).
pub const PROCESS_SECRET: &str = "process-fault-tests-secret-0123456789-abcdefghij";

/// How long a start-up may take before the test gives up on it.
const STARTUP_BOUND: Duration = Duration::from_secs(60);

/// A fresh database for one test: an SQLite file in a temporary directory, or a database of
/// its own on the shared PostgreSQL server, dropped (`WITH (FORCE)`) when this is dropped.
pub struct TestDatabase {
    pub backend: Backend,
    pub url: String,
    /// Holds the SQLite file, and serves as the binary's working directory either way (so
    /// that no stray `.env` is read).
    directory: tempfile::TempDir,
    postgres_database: Option<String>,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        let directory = tempfile::tempdir().expect("temporary directory");
        let (url, postgres_database) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", directory.path().join("todo.db").display()),
                None,
            ),
            Backend::Postgres => {
                let (name, url) = create_test_database().await;
                (url, Some(name))
            }
        };
        Self {
            backend,
            url,
            directory,
            postgres_database,
        }
    }

    pub fn directory(&self) -> &Path {
        self.directory.path()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(name) = self.postgres_database.take() {
            drop_test_database(name);
        }
    }
}

/// A port that was free a moment ago: bind port 0, note the port, release it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Everything the process wrote, stdout and stderr, collected by two reader threads.
#[derive(Clone, Default)]
struct Output {
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

fn collect(mut source: impl Read + Send + 'static, sink: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        loop {
            match source.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => sink.lock().unwrap().extend_from_slice(&buffer[..read]),
            }
        }
    })
}

/// One run of the `todo-api` binary.
pub struct ServerProcess {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:<port>`
    pub address: String,
    output: Output,
    readers: Vec<JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

impl ServerProcess {
    /// Starts the binary on `database` with the test environment plus `extra` (which may
    /// override it), and waits until `/health` answers. Retries on another port if the one
    /// picked was taken in the meantime.
    pub async fn start(database: &TestDatabase, extra: &[(&str, &str)]) -> Self {
        let mut last_failure = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut process = Self::spawn(database, port, extra);
            match process.wait_until_healthy().await {
                Ok(()) => return process,
                Err(failure) => {
                    let taken = failure.contains("Address already in use")
                        || failure.contains("address already in use")
                        || failure.contains("AddrInUse");
                    last_failure = failure;
                    drop(process);
                    if !taken {
                        break;
                    }
                }
            }
        }
        panic!("the todo-api binary did not start: {last_failure}");
    }

    fn spawn(database: &TestDatabase, port: u16, extra: &[(&str, &str)]) -> Self {
        let port_text = port.to_string();
        let mut command = Command::new(env!("CARGO_BIN_EXE_todo-api"));
        command
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", &port_text)
            .env("DATABASE_URL", &database.url)
            .env("BETTER_AUTH_SECRET", PROCESS_SECRET)
            .env("BCRYPT_COST", "4")
            .env("AUTH_RATE_LIMIT_PER_IP", "0")
            .env("AUTH_RATE_LIMIT_PER_ACCOUNT", "0")
            .envs(extra.iter().copied())
            .current_dir(database.directory())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the todo-api binary runs");
        let output = Output::default();
        let readers = vec![
            collect(
                child.stdout.take().expect("piped stdout"),
                output.stdout.clone(),
            ),
            collect(
                child.stderr.take().expect("piped stderr"),
                output.stderr.clone(),
            ),
        ];
        Self {
            child,
            port,
            address: format!("http://127.0.0.1:{port}"),
            output,
            readers,
            exit: None,
        }
    }

    /// Waits until the process has logged that it listens on its port and `/health` answers
    /// 200; an error (with the log) if the process exits first or does not come up in time.
    async fn wait_until_healthy(&mut self) -> Result<(), String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        let deadline = Instant::now() + STARTUP_BOUND;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                self.exit = Some(status);
                self.join_readers();
                return Err(format!("it exited with {status}\n{}", self.log()));
            }
            // The start-up line naming the port tells this process's answers from those of
            // another that took the port first (its log level must include `info`).
            if self.log().contains(&format!("127.0.0.1:{}", self.port))
                && let Ok(response) = client.get(self.url("/health")).send().await
                && response.status() == reqwest::StatusCode::OK
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "/health did not answer within {STARTUP_BOUND:?}\n{}",
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `127.0.0.1:<port>`, for raw TCP.
    pub fn socket_address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap the process.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            self.child.kill().ok();
            self.exit = Some(self.child.wait().expect("reap the killed child"));
            self.join_readers();
        }
    }

    /// Sends SIGTERM (with `kill -TERM`); does not wait.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(
            status.success(),
            "kill -TERM {} failed: {status}",
            self.pid()
        );
    }

    /// Waits up to `bound` for the process to exit; `None` if it is still running then.
    pub async fn wait_for_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.exit {
                return Some(status);
            }
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                self.exit = Some(status);
                self.join_readers();
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the log contains `needle`; `false` if it does not within `bound`.
    pub async fn wait_for_log(&self, needle: &str, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            reader.join().ok();
        }
    }

    /// What the process wrote so far: stdout, then stderr. Complete once it has exited.
    pub fn log(&self) -> String {
        let stdout = self.output.stdout.lock().unwrap();
        let stderr = self.output.stderr.lock().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl ServerProcess {
    /// `GET /metrics` with `token` as the bearer: the Prometheus text exposition (version
    /// 0.0.4, which the `Content-Type` must say).
    pub async fn scrape_metrics(&self, token: &str) -> String {
        let response = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("HTTP client")
            .get(self.url("/metrics"))
            .bearer_auth(token)
            .send()
            .await
            .expect("scrape");
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        response.text().await.expect("the exposition")
    }
}

/// The value of the sample `name` (with its labels, e.g. `x_total{status="503"}`) in a
/// Prometheus text exposition; `None` when absent.
pub fn metric_sample(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
}

impl ServerProcess {
    /// Starts the binary on `port` without waiting for it to serve: for runs that are meant
    /// to fail at start-up (a taken port, a refused setting).
    pub fn launch(database: &TestDatabase, port: u16, extra: &[(&str, &str)]) -> Self {
        Self::spawn(database, port, extra)
    }
}

/// Runs the binary with `arguments` and nothing but `environment`, in `directory`, to its
/// end: (success, stdout + stderr). For `--help` and other runs that never serve.
pub fn run_to_end(
    arguments: &[&str],
    environment: &[(&str, &str)],
    directory: &Path,
) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_todo-api"))
        .args(arguments)
        .env_clear()
        .envs(environment.iter().copied())
        .current_dir(directory)
        .stdin(Stdio::null())
        .output()
        .expect("the todo-api binary runs");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}
