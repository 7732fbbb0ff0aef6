//! What the real binary says at start-up, where a newcomer reads it: `--help`, a taken port,
//! a refused setting (each fatal error printed once), the SQLite file it opens (SQLAlchemy's
//! `sqlite:///./x.db` lands in the working directory), and the request log's latency.

mod common;
#[path = "common/process.rs"]
mod process;

use std::time::Duration;

use common::*;
use process::{ServerProcess, TestDatabase, run_to_end};
use reqwest::StatusCode;
use todo_api::config::reference::SETTINGS;

const EXIT_BOUND: Duration = Duration::from_secs(60);

#[test]
fn help_lists_every_setting_with_its_default() {
    let directory = tempfile::tempdir().unwrap();
    let (success, help) = run_to_end(&["--help"], &[], directory.path());
    assert!(success, "{help}");
    for setting in SETTINGS {
        for name in setting.names {
            let listed = help.lines().any(|line| {
                line.starts_with("  ") && line.trim().split(", ").any(|listed| listed == *name)
            });
            assert!(listed, "{name} missing:\n{help}");
        }
        let default = setting.default.replace('`', "");
        assert!(
            help.contains(&format!("default: {default}")),
            "{default:?} missing:\n{help}"
        );
    }
}

on_both_backends! {
    async fn a_taken_port_names_the_address_and_the_settings_and_prints_once(backend: Backend) {
        let database = TestDatabase::create(backend).await;
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = holder.local_addr().unwrap().port();
        let mut process = ServerProcess::launch(&database, port, &[]);
        let status = process.wait_for_exit(EXIT_BOUND).await.expect("the process exits");
        assert!(!status.success());
        let log = process.log();
        assert_eq!(log.matches("cannot listen on").count(), 1, "{log}");
        let line = log.lines().find(|line| line.contains("cannot listen on")).unwrap();
        for needle in [&format!("127.0.0.1:{port}") as &str, "PORT", "HOST", "already in use"] {
            assert!(line.contains(needle), "{needle:?} missing from {line:?}");
        }
        drop(holder);
    }

    async fn a_request_is_logged_with_its_latency_in_whole_microseconds(backend: Backend) {
        let database = TestDatabase::create(backend).await;
        let process = ServerProcess::start(&database, &[]).await;
        let response = reqwest::get(process.url("/health")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(process.wait_for_log("latency_ms=", Duration::from_secs(10)).await);
        let log = process.log();
        for latency in log.split("latency_ms=").skip(1) {
            let number: String = latency
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let decimals = number.split_once('.').map_or(0, |(_, decimals)| decimals.len());
            assert!(
                !number.is_empty() && number.parse::<f64>().is_ok() && decimals <= 3,
                "latency_ms={number} in {log}"
            );
        }
    }
}

#[test]
fn a_refused_setting_is_printed_once() {
    let directory = tempfile::tempdir().unwrap();
    let (success, log) = run_to_end(
        &[],
        &[("DATABASE_URL", "sqlite:///todo.db")],
        directory.path(),
    );
    assert!(!success);
    assert_eq!(log.matches("invalid configuration").count(), 1, "{log}");
    assert!(
        log.contains("DATABASE_URL") && log.contains("sqlite:///./todo.db"),
        "{log}"
    );
}

#[tokio::test]
async fn a_runtime_failure_is_printed_once() {
    // A `mode` only the database driver checks: a failure after logging has started.
    let database = TestDatabase::create(Backend::Sqlite).await;
    let (success, log) = run_to_end(
        &["migrate"],
        &[("DATABASE_URL", "sqlite::memory:?mode=bogus")],
        database.directory(),
    );
    assert!(!success);
    assert_eq!(log.matches("bogus").count(), 1, "{log}");
}

#[tokio::test]
async fn sqlalchemys_relative_sqlite_url_lands_in_the_working_directory_and_is_logged() {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let process = ServerProcess::start(&database, &[("DATABASE_URL", "sqlite:///./x.db")]).await;
    let response = reqwest::Client::new()
        .post(process.url("/api/auth/signup"))
        .json(&serde_json::json!({
            "username": "alice", "email": "alice@example.com",
            "password": PASSWORD, "confirm_password": PASSWORD,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let file = std::fs::canonicalize(database.directory())
        .unwrap()
        .join("x.db");
    assert!(file.is_file(), "{} was not created", file.display());
    let log = process.log();
    assert!(
        log.contains(&format!("sqlite_file={}", file.display())),
        "{log}"
    );
}

#[tokio::test]
async fn explain_prints_the_plan_of_a_listing_and_refuses_a_bad_query_naming_it() {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let url = ("DATABASE_URL", "sqlite://./todo.db");
    let (migrated, log) = run_to_end(&["migrate"], &[url], database.directory());
    assert!(migrated, "{log}");
    let (success, plan) = run_to_end(
        &["explain", "alice", "sort_by=due_at&tag=work"],
        &[url, ("RUST_LOG", "warn")],
        database.directory(),
    );
    assert!(success, "{plan}");
    assert!(plan.contains("tasks_owner_due"), "{plan}");
    assert!(plan.contains("task_tags"), "{plan}");
    let (success, log) = run_to_end(
        &["explain", "alice", "sort_by=colour"],
        &[url, ("RUST_LOG", "warn")],
        database.directory(),
    );
    assert!(!success);
    assert!(log.contains("sort_by: must be one of"), "{log}");
}
