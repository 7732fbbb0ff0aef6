//! The password hashing pool, seen from outside the real `todo-api` binary (issue 12 §1,
//! issue 10 §1 and §3): clients that hang up cannot make more hashes run than the pool has
//! threads, the pool's threads run at the lowest scheduling priority, and start-up computes
//! no hash.
//!
//! What is measured is the pool's own counters (`/metrics`) and the process's CPU time from
//! `/proc` (clock ticks, so Linux only), never a wall-clock latency: neither depends on how
//! busy the machine is.

mod common;
#[path = "common/process.rs"]
mod process;

use std::time::{Duration, Instant};

use common::Backend;
use process::{ServerProcess, TestDatabase, metric_sample};
use reqwest::StatusCode;
use serde_json::json;

const PASSWORD: &str = "Password-Hashing-Pool-4711";
const METRICS_TOKEN: &str = "metrics-token-for-the-password-hashing-tests";

/// The fields of `/proc/<pid>/stat` (or of one thread's) after the command name, which may
/// itself hold spaces and parentheses: `fields[0]` is field 3 of proc(5), the state.
fn stat_fields(path: &str) -> Vec<String> {
    let stat = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path}: {error}"));
    let (_, after_name) = stat
        .rsplit_once(')')
        .expect("a stat line names its command");
    after_name.split_whitespace().map(str::to_owned).collect()
}

/// User plus system CPU time the whole process has used so far (fields 14 and 15).
fn cpu_time(pid: u32) -> Duration {
    let fields = stat_fields(&format!("/proc/{pid}/stat"));
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(per_second > 0, "clock ticks per second");
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// Waits until the process has used no CPU time for 300 ms in a row (at most 60 s).
async fn until_idle(pid: u32) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = cpu_time(pid);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = cpu_time(pid);
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the process went idle within 60 s"
        );
        last = now;
    }
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("HTTP client")
}

async fn signup(server: &ServerProcess, username: &str) {
    let response = client(Duration::from_secs(60))
        .post(server.url("/api/auth/signup"))
        .json(&json!({
            "username": username,
            "email": format!("{username}@example.com"),
            "password": PASSWORD,
            "confirm_password": PASSWORD,
        }))
        .send()
        .await
        .expect("signup");
    assert_eq!(response.status(), StatusCode::CREATED);
}

async fn login(
    client: &reqwest::Client,
    server: &ServerProcess,
    username: &str,
) -> reqwest::Result<StatusCode> {
    client
        .post(server.url("/api/auth/login"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .map(|response| response.status())
}

/// The pool's counters from `/metrics`: hashes computed and hashes skipped since start-up.
async fn hash_counters(server: &ServerProcess) -> (u64, u64) {
    let exposition = server.scrape_metrics(METRICS_TOKEN).await;
    let counter = |name: &str| -> u64 {
        metric_sample(&exposition, name).unwrap_or_else(|| panic!("{name} in /metrics")) as u64
    };
    (
        counter("password_hashes_completed_total"),
        counter("password_hashes_skipped_total"),
    )
}

on_both_backends! {
    async fn logins_abandoned_by_their_clients_never_run_more_hashes_than_the_pool_has_threads(backend: Backend) {
        let database = TestDatabase::create(backend).await;
        let server = ServerProcess::start(
            &database,
            &[
                ("PASSWORD_HASH_CONCURRENCY", "1"),
                ("BCRYPT_COST", "11"),
                ("METRICS_TOKEN", METRICS_TOKEN),
            ],
        )
        .await;
        let pid = server.pid();
        let patient = client(Duration::from_secs(120));
        signup(&server, "alice").await;

        // What one login costs the process in CPU time, hash and all: a lower bound on the
        // wall time of every hash, however busy the machine is.
        let before = until_idle(pid).await;
        assert_eq!(login(&patient, &server, "alice").await.unwrap(), StatusCode::OK);
        let one_login = until_idle(pid).await - before;
        assert!(one_login >= Duration::from_millis(30), "a cost-11 hash is measurable: {one_login:?}");

        // Six logins one after another, each from a client that gives up after a tenth of a
        // hash (at least 50 ms, so that the request reaches the hashing). With the slot held
        // by the request, each would have left its hash running and freed its slot for the
        // next: six hashes at once.
        let (completed_before, skipped_before) = hash_counters(&server).await;
        let impatient = client((one_login / 10).max(Duration::from_millis(50)));
        let phase_start = Instant::now();
        for _ in 0..6 {
            let outcome = login(&impatient, &server, "alice").await;
            // (On a machine so busy that one hash looks longer than the wait bound allows,
            // a login may be refused at once instead.)
            assert!(
                match &outcome {
                    Err(error) => error.is_timeout(),
                    Ok(status) => *status == StatusCode::SERVICE_UNAVAILABLE,
                },
                "the impatient client timed out: {outcome:?}"
            );
        }
        let phase = phase_start.elapsed();

        // Over the next second, one hashing thread uses at most one core (and a little for
        // the rest of the process); six hashes at once would use every core there is.
        let window_start = Instant::now();
        let window_cpu_start = cpu_time(pid);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let window_cpu = cpu_time(pid) - window_cpu_start;
        let window = window_start.elapsed();
        assert!(
            window_cpu <= window.mul_f64(1.25) + Duration::from_millis(50),
            "{window_cpu:?} of CPU in {window:?}: more than one hash ran at once"
        );

        // A patient login afterwards queues behind whatever is left. One thread starts a hash
        // when it is idle and a client is still waiting; each hash takes at least
        // `one_login`, so while the impatient clients waited it could start at most one hash
        // plus one per `one_login` of the phase (and one more for a hang-up noticed late).
        // Jobs whose clients had gone when the thread came to them were skipped, not run.
        assert_eq!(login(&patient, &server, "alice").await.unwrap(), StatusCode::OK);
        until_idle(pid).await;
        let (completed, skipped) = hash_counters(&server).await;
        let impatient_hashes = completed - completed_before - 1;
        let startable = 2 + (phase.as_secs_f64() / one_login.as_secs_f64()).floor() as u64;
        assert!(
            impatient_hashes <= startable.min(5),
            "{impatient_hashes} of the 6 abandoned logins were hashed (and {} skipped) in a \
             {phase:?} phase where one hash costs {one_login:?}: abandoned hashes ran",
            skipped - skipped_before
        );
    }
}

#[tokio::test]
async fn the_hashing_threads_and_only_they_run_at_the_lowest_priority() {
    // Independent of the database: SQLite only.
    let database = TestDatabase::create(Backend::Sqlite).await;
    let server = ServerProcess::start(&database, &[("PASSWORD_HASH_CONCURRENCY", "3")]).await;
    let pid = server.pid();
    // The priority the process started with (that of whoever runs the tests, usually 0).
    let nice_of = |stat: &str| -> i32 { stat_fields(stat)[16].parse().unwrap() };
    let inherited = nice_of(&format!("/proc/{pid}/stat"));
    assert!(
        inherited < 19,
        "the tests run below nice 19, or there is nothing to lower"
    );
    // proc(5) field 41, the scheduling policy: 0 SCHED_OTHER, 5 SCHED_IDLE (sched(7)).
    let policy_of = |stat: &str| -> i32 { stat_fields(stat)[38].parse().unwrap() };
    let mut hashing = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads") {
        let task = entry.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap();
        let stat = task.join("stat").display().to_string();
        let nice = nice_of(&stat);
        if name.starts_with("password-hash") {
            hashing.push((nice, policy_of(&stat)));
        } else {
            assert_eq!(
                policy_of(&stat),
                0,
                "thread {} keeps SCHED_OTHER",
                name.trim()
            );
            assert_eq!(
                nice,
                inherited,
                "thread {} ({}) keeps the process's priority",
                task.display(),
                name.trim()
            );
        }
    }
    assert_eq!(
        hashing,
        [(19, 5), (19, 5), (19, 5)],
        "three hashing threads, each at nice 19 and SCHED_IDLE"
    );
    assert!(
        !server
            .log()
            .contains("could not lower the scheduling priority"),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn start_up_computes_no_hash_even_at_a_high_cost() {
    // At cost 16 one bcrypt takes seconds of CPU, even in a release build: a start-up that
    // made one would use far more than this bound by the time it is ready.
    let database = TestDatabase::create(Backend::Sqlite).await;
    let server = ServerProcess::start(&database, &[("BCRYPT_COST", "16")]).await;
    let used = cpu_time(server.pid());
    assert!(used < Duration::from_secs(2), "{used:?} of CPU to start");
}
