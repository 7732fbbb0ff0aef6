//! Users cannot see or touch each other's tasks: another user's path is a 403, another
//! user's task under one's own path is a 404 like a missing one, and nothing changes.

mod common;

use std::collections::HashSet;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn id_of(task: &Value) -> &str {
    task["id"].as_str().expect("a task has a string id")
}

/// Everything `user` has, as the listing returns it, oldest first.
async fn everything_of(app: &TestApp, user: &TestUser) -> Value {
    let path = format!(
        "{}?page_size=100&sort_by=created_at&sort_order=asc",
        TestApp::tasks_path(user)
    );
    let (status, page) = app.get_json(user, &path).await;
    assert_eq!(status, StatusCode::OK, "listing {}", user.username);
    page
}

/// Alice with three tasks, one of them completed and one with a description.
async fn alice_with_tasks(app: &TestApp) -> (TestUser, Vec<Value>) {
    let alice = app.signup("alice").await;
    let tasks = vec![
        app.create_task(
            &alice,
            json!({"title": "alice: buy milk", "description": "2 litres"}),
        )
        .await,
        app.create_task(
            &alice,
            json!({"title": "alice: call mom", "completed": true}),
        )
        .await,
        app.create_task(&alice, json!({"title": "alice: water plants"}))
            .await,
    ];
    (alice, tasks)
}

on_both_databases! {
    async fn another_user_gets_a_403_on_every_route_of_my_path(app: TestApp) {
        let (alice, tasks) = alice_with_tasks(&app).await;
        let bob = app.signup("bob").await;
        let before = everything_of(&app, &alice).await;
        for route in TaskRoute::ALL {
            for task in &tasks {
                let response = route
                    .request(&app, &alice.id, id_of(task))
                    .bearer_auth(&bob.token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    response.status(),
                    StatusCode::FORBIDDEN,
                    "bob: {route:?} on alice's path"
                );
                expect_problem(response, StatusCode::FORBIDDEN).await;
            }
        }
        assert_eq!(
            everything_of(&app, &alice).await,
            before,
            "alice's tasks are untouched"
        );
        assert_eq!(
            everything_of(&app, &bob).await["total"],
            0,
            "bob created nothing"
        );
    }

    async fn another_users_task_under_my_own_path_is_a_404_on_every_route(app: TestApp) {
        let (alice, tasks) = alice_with_tasks(&app).await;
        let bob = app.signup("bob").await;
        app.create_task(&bob, json!({"title": "bob: fix bike"}))
            .await;
        let alices_before = everything_of(&app, &alice).await;
        let bobs_before = everything_of(&app, &bob).await;
        for route in TaskRoute::ON_ONE_TASK {
            for task in &tasks {
                let response = route
                    .request(&app, &bob.id, id_of(task))
                    .bearer_auth(&bob.token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    response.status(),
                    StatusCode::NOT_FOUND,
                    "bob: {route:?} on his own path with alice's task {}",
                    task["title"]
                );
                expect_problem(response, StatusCode::NOT_FOUND).await;
            }
        }
        assert_eq!(
            everything_of(&app, &alice).await,
            alices_before,
            "alice's tasks are untouched"
        );
        for task in &tasks {
            let (status, read) = app
                .get_json(&alice, &TestApp::task_path(&alice, id_of(task)))
                .await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(
                &read, task,
                "alice still reads her task exactly as she made it"
            );
        }
        assert_eq!(
            everything_of(&app, &bob).await,
            bobs_before,
            "bob's tasks are as they were"
        );
    }

    async fn another_users_task_is_indistinguishable_from_a_missing_one(app: TestApp) {
        let (_alice, tasks) = alice_with_tasks(&app).await;
        let bob = app.signup("bob").await;
        let missing = uuid::Uuid::new_v4().to_string();
        for route in TaskRoute::ON_ONE_TASK {
            let mut answers = Vec::new();
            for id in [id_of(&tasks[0]), missing.as_str()] {
                let response = route
                    .request(&app, &bob.id, id)
                    .bearer_auth(&bob.token)
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let content_type = response.headers().get("content-type").cloned();
                let body = response.text().await.unwrap().replace(id, "{id}");
                answers.push((status, content_type, body));
            }
            assert_eq!(
                answers[0], answers[1],
                "{route:?}: alice's task and no task look alike"
            );
        }
    }

    async fn a_listing_never_contains_another_users_tasks(app: TestApp) {
        let (alice, alices) = alice_with_tasks(&app).await;
        let bob = app.signup("bob").await;
        let bobs = [
            app.create_task(&bob, json!({"title": "bob: fix bike"}))
                .await,
            app.create_task(&bob, json!({"title": "bob: buy milk", "completed": true}))
                .await,
        ];
        let queries = [
            "",
            "page_size=100",
            "sort_by=title&sort_order=asc&page_size=1",
            "completed=true",
            "completed=false",
            "q=milk",
            "q=alice",
        ];
        for (user, own) in [(&bob, bobs.to_vec()), (&alice, alices.clone())] {
            let own_ids: HashSet<&str> = own.iter().map(id_of).collect();
            for query in queries {
                let path = format!("{}?{query}", TestApp::tasks_path(user));
                let (status, page) = app.get_json(user, &path).await;
                assert_eq!(status, StatusCode::OK, "{path}");
                for task in page["items"].as_array().unwrap() {
                    assert!(
                        own_ids.contains(id_of(task)),
                        "{} sees someone else's task {task} in ?{query}",
                        user.username
                    );
                    assert_eq!(task["user_id"], user.id.as_str());
                }
                assert!(
                    page["total"].as_u64().unwrap() <= own.len() as u64,
                    "{}'s total counts only their own tasks in ?{query}: {page}",
                    user.username
                );
            }
        }
        let (_, bobs_search) = app
            .get_json(&bob, &format!("{}?q=alice", TestApp::tasks_path(&bob)))
            .await;
        assert_eq!(
            bobs_search["total"], 0,
            "searching for alice's words finds nothing"
        );
        assert_eq!(everything_of(&app, &bob).await["total"], 2);
        assert_eq!(everything_of(&app, &alice).await["total"], 3);
    }

    async fn a_subject_that_differs_only_in_case_is_another_user(app: TestApp) {
        let (alice, tasks) = alice_with_tasks(&app).await;
        let before = everything_of(&app, &alice).await;
        // Subjects are opaque strings: an upper-case spelling of alice's id is someone else.
        let shouting = alice.id.to_uppercase();
        let now = now();
        let token = hs256_token(
            &json!({"sub": shouting, "iat": now, "exp": now + 3600}),
            SECRET,
        );
        for route in TaskRoute::ALL {
            let response = route
                .request(&app, &alice.id, id_of(&tasks[0]))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "{route:?} on alice's path"
            );
        }
        for route in TaskRoute::ON_ONE_TASK {
            let response = route
                .request(&app, &shouting, id_of(&tasks[0]))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::NOT_FOUND,
                "{route:?} on the upper-case path with alice's task"
            );
        }
        let response = app
            .authed(Method::GET, &format!("/api/{shouting}/tasks"), &token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.json::<Value>().await.unwrap()["total"], 0);
        assert_eq!(
            everything_of(&app, &alice).await,
            before,
            "alice's tasks are untouched"
        );
    }
}
