//! A write that fails inside its transaction, after some of its statements ran, writes
//! nothing (not the task, its tags, its count nor its event), answers a `500` problem, and
//! leaves the service writing: the next writes succeed, so the failed transaction did not
//! stay open on the connection that writes. Among concurrent creates, or concurrent updates
//! (which the service writes together, several in one transaction), the refused one fails
//! alone. The failure is
//! real: a trigger, installed in the test's own database, that refuses every event whose
//! data carries a marker.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Text that makes the trigger refuse the event of the write that carries it.
const MARKER: &str = "refused-by-the-trigger";

const SQLITE_REFUSAL: &str = "CREATE TRIGGER refuse_marked_events BEFORE INSERT ON task_events
    WHEN NEW.data LIKE '%refused-by-the-trigger%'
    BEGIN SELECT RAISE(ABORT, 'refused by the test'); END";

const POSTGRES_REFUSAL: &str = "CREATE FUNCTION refuse_marked_events() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.data::text LIKE '%refused-by-the-trigger%' THEN
            RAISE EXCEPTION 'refused by the test';
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER refuse_marked_events BEFORE INSERT ON task_events
    FOR EACH ROW EXECUTE FUNCTION refuse_marked_events();";

/// `owner`'s rows of tasks, tags and events, and their kept total of tasks.
async fn rows_of(app: &TestApp, owner: &str) -> (i64, i64, i64, i64) {
    let sql = "SELECT (SELECT count(*) FROM tasks WHERE user_id = $1),
                      (SELECT count(*) FROM task_tags WHERE user_id = $1),
                      (SELECT count(*) FROM task_events WHERE user_id = $1),
                      (SELECT coalesce(max(tasks), 0) FROM task_counts WHERE user_id = $1)";
    app.owner_rows(sql, owner).await[0]
}

on_both_databases! {
    async fn a_create_that_fails_at_its_event_writes_nothing_and_the_next_writes_succeed(
        app: TestApp
    ) {
        let alice = app.signup("alice").await;
        let kept = app
            .create_task(&alice, json!({"title": "written before", "tags": ["home"]}))
            .await;
        let before = rows_of(&app, &alice.id).await;
        assert_eq!(before, (1, 1, 1, 1), "one task, its tag, its event, its count");
        app.run_sql(match app.backend {
            Backend::Sqlite => SQLITE_REFUSAL,
            Backend::Postgres => POSTGRES_REFUSAL,
        })
        .await;

        // A create whose event is refused, after its task and tags were inserted.
        let refused = app
            .authed(Method::POST, &TestApp::tasks_path(&alice), &alice.token)
            .json(&json!({"title": MARKER, "tags": ["work", "urgent"]}))
            .send()
            .await
            .unwrap();
        let problem = expect_problem(refused, StatusCode::INTERNAL_SERVER_ERROR).await;
        assert!(
            !problem.to_string().contains("refused by the test"),
            "the database's message stays in the log: {problem}"
        );
        assert_eq!(rows_of(&app, &alice.id).await, before, "the refused create");

        // An update whose event is refused, after its row was rewritten.
        let kept_path = TestApp::task_path(&alice, kept["id"].as_str().unwrap());
        let refused = app
            .authed(Method::PATCH, &kept_path, &alice.token)
            .json(&json!({"title": MARKER, "tags": ["other"]}))
            .send()
            .await
            .unwrap();
        expect_problem(refused, StatusCode::INTERNAL_SERVER_ERROR).await;
        assert_eq!(rows_of(&app, &alice.id).await, before, "the refused update");
        let (status, task) = app.get_json(&alice, &kept_path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(task["title"], "written before", "{task}");
        assert_eq!(task["tags"], json!(["home"]), "{task}");

        // The writes after them run on a connection with no transaction left open.
        let second = app
            .create_task(&alice, json!({"title": "written after", "tags": ["work"]}))
            .await;
        let response = app
            .authed(Method::PATCH, &kept_path, &alice.token)
            .json(&json!({"completed": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let response = app
            .authed(
                Method::DELETE,
                &TestApp::task_path(&alice, second["id"].as_str().unwrap()),
                &alice.token,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // Two tasks created, one deleted; three more events (create, update, delete).
        assert_eq!(rows_of(&app, &alice.id).await, (1, 1, 4, 1), "after the refusals");
        let (status, page) = app.get_json(&alice, &TestApp::tasks_path(&alice)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["total"], 1, "{page}");
        assert_eq!(page["items"][0]["completed"], true, "{page}");
    }
}

on_both_databases! {
    /// Concurrent creates may be written together (the creates waiting for the turn to
    /// write go in one transaction): one refused among them fails alone.
    async fn a_create_refused_among_concurrent_creates_fails_alone(app: TestApp) {
        let alice = app.signup("alice").await;
        app.run_sql(match app.backend {
            Backend::Sqlite => SQLITE_REFUSAL,
            Backend::Postgres => POSTGRES_REFUSAL,
        })
        .await;
        let blocker = Blocker::hold(&app).await;
        let path = TestApp::tasks_path(&alice);
        let creates: Vec<_> = (0..40)
            .map(|i| {
                let title = if i == 17 { MARKER.to_owned() } else { format!("task {i}") };
                app.authed(Method::POST, &path, &alice.token)
                    .json(&json!({"title": title, "tags": [format!("tag{}", i % 3)]}))
                    .send()
            })
            .collect();
        let responses = tokio::spawn(futures_util::future::join_all(creates));
        // Time for the requests to arrive (SQLite's BEGIN waits up to 5 s for the lock,
        // PostgreSQL's as long as it takes); the outcome does not depend on it, only how
        // many share a run.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        blocker.release().await;
        let responses = responses.await.unwrap();
        for (i, response) in responses.into_iter().enumerate() {
            let response = response.unwrap();
            if i == 17 {
                expect_problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
            } else {
                assert_eq!(response.status(), StatusCode::CREATED, "create {i}");
            }
        }
        assert_eq!(rows_of(&app, &alice.id).await, (39, 39, 39, 39));
        let (status, page) = app.get_json(&alice, &format!("{path}?page_size=100")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["total"], 39, "{page}");
        let titles: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|task| task["title"].as_str().unwrap())
            .collect();
        assert!(!titles.contains(&MARKER), "{titles:?}");
    }
}

on_both_databases! {
    /// Concurrent updates are written together too (a run of the updates waiting for the
    /// turn): one refused among them fails alone, and its task keeps what it had.
    async fn an_update_refused_among_concurrent_updates_fails_alone(app: TestApp) {
        const UPDATES: usize = 24;
        const REFUSED: usize = 9;
        let alice = app.signup("alice").await;
        let mut paths = Vec::new();
        for i in 0..UPDATES {
            let task = app
                .create_task(&alice, json!({"title": format!("task {i}"), "tags": ["before"]}))
                .await;
            paths.push(TestApp::task_path(&alice, task["id"].as_str().unwrap()));
        }
        app.run_sql(match app.backend {
            Backend::Sqlite => SQLITE_REFUSAL,
            Backend::Postgres => POSTGRES_REFUSAL,
        })
        .await;
        let requests = paths
            .iter()
            .enumerate()
            .map(|(i, path)| {
                let title = if i == REFUSED { MARKER.to_owned() } else { format!("patched {i}") };
                app.authed(Method::PATCH, path, &alice.token)
                    .json(&json!({"title": title, "tags": ["after", "again"]}))
            })
            .collect();
        let responses = Blocker::send_meanwhile(&app, requests).await;
        for (i, response) in responses.into_iter().enumerate() {
            if i == REFUSED {
                expect_problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
            } else {
                assert_eq!(response.status(), StatusCode::OK, "update {i}");
            }
        }
        // Every task is there; the refused one with its one old tag, the others with two new
        // ones; an event for each create and each update but the refused one.
        let tags = 2 * (UPDATES as i64 - 1) + 1;
        let events = 2 * UPDATES as i64 - 1;
        assert_eq!(rows_of(&app, &alice.id).await, (UPDATES as i64, tags, events, UPDATES as i64));
        let (status, task) = app.get_json(&alice, &paths[REFUSED]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(task["title"], format!("task {REFUSED}"), "{task}");
        assert_eq!(task["tags"], json!(["before"]), "{task}");
        let (status, task) = app.get_json(&alice, &paths[REFUSED + 1]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(task["title"], format!("patched {}", REFUSED + 1), "{task}");
    }
}
