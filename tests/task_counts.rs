//! A listing's `total`: unfiltered, or filtered by `completed` alone, it is each owner's count
//! kept by the database's triggers in the transaction of every write; with any other filter
//! it is counted from the owner's rows. Every kind of write (create, each way of completing
//! and reopening, replace, delete, a recurring task's next occurrence, a refused write, an
//! account's deletion) leaves the two in agreement, and with the tasks that are really there.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A filter that keeps every task but makes the listing count rows: every priority.
const EVERY_PRIORITY: &str = "priority=low&priority=medium&priority=high&priority=urgent";

async fn total(app: &TestApp, user: &TestUser, query: &str) -> u64 {
    let path = format!("{}?{query}", TestApp::tasks_path(user));
    let (status, page) = app.get_json(user, &path).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {page}");
    page["total"].as_u64().expect("total is a number")
}

/// The tasks really there, page by page: (all, completed).
async fn tasks_there(app: &TestApp, user: &TestUser) -> (u64, u64) {
    let (mut all, mut done) = (0, 0);
    for page in 1.. {
        let path = format!("{}?page={page}&page_size=100", TestApp::tasks_path(user));
        let (status, listing) = app.get_json(user, &path).await;
        assert_eq!(status, StatusCode::OK);
        let items = listing["items"].as_array().unwrap();
        if items.is_empty() {
            break;
        }
        all += items.len() as u64;
        done += items
            .iter()
            .filter(|task| task["completed"] == true)
            .count() as u64;
    }
    (all, done)
}

/// Every way of reading the totals agrees with the tasks there, which are `expected`.
async fn assert_totals(app: &TestApp, user: &TestUser, expected: (u64, u64), after: &str) {
    let (all, done) = expected;
    assert_eq!(tasks_there(app, user).await, expected, "{after}: the tasks");
    let kept = (
        total(app, user, "").await,
        total(app, user, "completed=true").await,
        total(app, user, "completed=false").await,
    );
    let counted = (
        total(app, user, EVERY_PRIORITY).await,
        total(app, user, &format!("completed=true&{EVERY_PRIORITY}")).await,
        total(app, user, &format!("completed=false&{EVERY_PRIORITY}")).await,
    );
    assert_eq!(kept, (all, done, all - done), "{after}: the kept totals");
    assert_eq!(counted, kept, "{after}: counted and kept totals");
}

async fn send(app: &TestApp, user: &TestUser, method: Method, path: &str, body: Option<Value>) {
    let mut request = app.authed(method.clone(), path, &user.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{method} {path}: {}",
        response.status()
    );
}

fn id_of(task: &Value) -> String {
    task["id"].as_str().unwrap().to_owned()
}

on_both_databases! {
    async fn every_kind_of_write_keeps_the_kept_totals_true(app: TestApp) {
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        assert_totals(&app, &alice, (0, 0), "no tasks yet").await;

        let mut ids = Vec::new();
        for i in 0..5 {
            let task = app
                .create_task(&alice, json!({"title": format!("task {i}"), "completed": i == 4}))
                .await;
            ids.push(id_of(&task));
        }
        app.create_task(&bob, json!({"title": "bob's"})).await;
        assert_totals(&app, &alice, (5, 1), "five created, one of them completed").await;
        assert_totals(&app, &bob, (1, 0), "another owner's create").await;

        let complete = |id: &str| format!("{}/complete", TestApp::task_path(&alice, id));
        send(&app, &alice, Method::PATCH, &complete(&ids[0]), None).await;
        send(&app, &alice, Method::PATCH, &complete(&ids[1]), Some(json!({"completed": true})))
            .await;
        let path = TestApp::task_path(&alice, &ids[2]);
        send(&app, &alice, Method::PATCH, &path, Some(json!({"completed": true}))).await;
        let path = TestApp::task_path(&alice, &ids[3]);
        let body = json!({"title": "replaced", "description": null, "completed": true});
        send(&app, &alice, Method::PUT, &path, Some(body)).await;
        assert_totals(&app, &alice, (5, 5), "completed four ways").await;

        // Setting what is already set, and changing other fields, changes no count.
        send(&app, &alice, Method::PATCH, &complete(&ids[0]), Some(json!({"completed": true})))
            .await;
        let path = TestApp::task_path(&alice, &ids[1]);
        send(&app, &alice, Method::PATCH, &path, Some(json!({"title": "renamed"}))).await;
        assert_totals(&app, &alice, (5, 5), "writes that complete nothing new").await;

        send(&app, &alice, Method::PATCH, &complete(&ids[0]), None).await;
        let path = TestApp::task_path(&alice, &ids[1]);
        send(&app, &alice, Method::PATCH, &path, Some(json!({"completed": false}))).await;
        assert_totals(&app, &alice, (5, 3), "two reopened").await;

        // A refused write changes nothing: a stale If-Match.
        let response = app
            .authed(Method::PATCH, &complete(&ids[2]), &alice.token)
            .header("If-Match", "\"999\"")
            .json(&json!({"completed": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
        assert_totals(&app, &alice, (5, 3), "a refused write").await;

        send(&app, &alice, Method::DELETE, &TestApp::task_path(&alice, &ids[0]), None).await;
        send(&app, &alice, Method::DELETE, &TestApp::task_path(&alice, &ids[2]), None).await;
        assert_totals(&app, &alice, (3, 2), "an open and a completed task deleted").await;

        // Completing a recurring task creates its next, open occurrence.
        let weekly = app
            .create_task(
                &alice,
                json!({"title": "weekly", "due_at": "2027-01-04T09:00:00Z",
                       "recurrence": {"frequency": "weekly"}}),
            )
            .await;
        send(&app, &alice, Method::PATCH, &complete(&id_of(&weekly)), None).await;
        assert_totals(&app, &alice, (5, 3), "a recurring task completed").await;
        assert_totals(&app, &bob, (1, 0), "the other owner, untouched").await;

        // Deleting the account takes its counts with it: signed up again under the same id
        // is impossible, so the row is looked at directly.
        let response = app
            .authed(Method::DELETE, "/api/auth/me", &alice.token)
            .json(&json!({"password": alice.password}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(kept_rows(&app, &alice.id).await, 0, "the deleted account's counts");
        assert_eq!(kept_rows(&app, &bob.id).await, 1, "the other owner's counts");
        assert_totals(&app, &bob, (1, 0), "another account deleted").await;
    }
}

/// Rows of `task_counts` for `owner`, read from the database itself.
async fn kept_rows(app: &TestApp, owner: &str) -> i64 {
    let sql = "SELECT count(*) FROM task_counts WHERE user_id = $1";
    app.owner_rows::<(i64,)>(sql, owner).await[0].0
}
