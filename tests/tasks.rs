//! The seven task routes over HTTP: each success, each failure status the contract lists,
//! the precedence between those failures, and that a refused request changes nothing.

mod common;

use common::*;
use reqwest::{
    Method, RequestBuilder, Response, StatusCode,
    header::{CONTENT_TYPE, LOCATION},
};
use serde_json::{Value, json};

fn id_of(task: &Value) -> &str {
    task["id"].as_str().expect("a task has a string id")
}

/// Sends `raw` as the body, labelled `application/json` whatever it holds.
fn json_text(request: RequestBuilder, raw: &str) -> RequestBuilder {
    request
        .header(CONTENT_TYPE, "application/json")
        .body(raw.to_owned())
}

/// A well-formed task id that names no task.
fn unknown_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Reads one of `user`'s tasks, which must exist.
async fn read_task(app: &TestApp, user: &TestUser, id: &str) -> Value {
    let (status, task) = app.get_json(user, &TestApp::task_path(user, id)).await;
    assert_eq!(status, StatusCode::OK, "reading task {id}");
    task
}

/// How many tasks `user` has, as the listing counts them.
async fn task_count(app: &TestApp, user: &TestUser) -> u64 {
    let (status, page) = app.get_json(user, &TestApp::tasks_path(user)).await;
    assert_eq!(status, StatusCode::OK, "listing");
    page["total"].as_u64().expect("total is a number")
}

/// A request body a route must refuse with 400.
struct BadBody {
    raw: String,
    /// The fields `errors` must name, exactly; empty when the body as a whole is wrong
    /// (then `errors` must merely be non-empty).
    fields: &'static [&'static str],
    why: &'static str,
}

fn bad(body: Value, fields: &'static [&'static str], why: &'static str) -> BadBody {
    BadBody {
        raw: body.to_string(),
        fields,
        why,
    }
}

fn bad_text(raw: &str, why: &'static str) -> BadBody {
    BadBody {
        raw: raw.to_owned(),
        fields: &[],
        why,
    }
}

/// Bodies that are wrong whatever the route: not an object, or not JSON at all.
fn malformed_bodies() -> Vec<BadBody> {
    vec![
        bad_text("[]", "a JSON array"),
        bad_text(r#""Buy milk""#, "a JSON string"),
        bad_text("42", "a JSON number"),
        bad_text("null", "JSON null"),
        bad_text(r#"{"title": "Buy milk""#, "truncated JSON"),
        bad_text("{'title': 'Buy milk'}", "single-quoted pseudo-JSON"),
    ]
}

fn bad_create_bodies() -> Vec<BadBody> {
    let mut cases = vec![
        bad(json!({}), &["title"], "an empty object"),
        bad(
            json!({"description": "2 litres", "completed": false}),
            &["title"],
            "no title",
        ),
        bad(json!({"title": ""}), &["title"], "an empty title"),
        bad(
            json!({"title": " \t  "}),
            &["title"],
            "a title of whitespace",
        ),
        bad(
            json!({"title": "x".repeat(256)}),
            &["title"],
            "a title of 256 characters",
        ),
        bad(
            json!({"title": "Buy milk", "description": "x".repeat(10_001)}),
            &["description"],
            "a description of 10 001 characters",
        ),
        bad(json!({"title": 42}), &["title"], "a number as title"),
        bad(json!({"title": null}), &["title"], "a null title"),
        bad(
            json!({"title": "Buy milk", "description": ["2 litres"]}),
            &["description"],
            "an array as description",
        ),
        bad(
            json!({"title": "Buy milk", "completed": "true"}),
            &["completed"],
            "a string as completed",
        ),
        bad(
            json!({"title": "Buy milk", "completed": 1}),
            &["completed"],
            "a number as completed",
        ),
        bad(
            json!({"title": "Buy milk", "titel": "typo"}),
            &["titel"],
            "an unknown field",
        ),
        bad(
            json!({"title": "", "description": 5, "completed": "no", "priority": 1}),
            &["completed", "description", "priority", "title"],
            "four bad fields at once",
        ),
        bad_text("", "an empty body"),
    ];
    cases.extend(malformed_bodies());
    cases
}

fn bad_replace_bodies() -> Vec<BadBody> {
    let mut cases = vec![
        bad(
            json!({}),
            &["completed", "description", "title"],
            "an empty object",
        ),
        bad(
            json!({"description": null, "completed": false}),
            &["title"],
            "no title",
        ),
        bad(
            json!({"title": "Buy milk", "completed": false}),
            &["description"],
            "no description (it may be null, not absent)",
        ),
        bad(
            json!({"title": "Buy milk", "description": null}),
            &["completed"],
            "no completed",
        ),
        bad(
            json!({"title": "", "description": null, "completed": false}),
            &["title"],
            "an empty title",
        ),
        bad(
            json!({"title": "   ", "description": null, "completed": false}),
            &["title"],
            "a title of whitespace",
        ),
        bad(
            json!({"title": "x".repeat(256), "description": null, "completed": false}),
            &["title"],
            "a title of 256 characters",
        ),
        bad(
            json!({"title": "Buy milk", "description": "x".repeat(10_001), "completed": false}),
            &["description"],
            "a description of 10 001 characters",
        ),
        bad(
            json!({"title": true, "description": null, "completed": false}),
            &["title"],
            "a boolean as title",
        ),
        bad(
            json!({"title": "Buy milk", "description": 3, "completed": false}),
            &["description"],
            "a number as description",
        ),
        bad(
            json!({"title": "Buy milk", "description": null, "completed": "false"}),
            &["completed"],
            "a string as completed",
        ),
        bad(
            json!({"title": "Buy milk", "description": null, "completed": null}),
            &["completed"],
            "a null completed",
        ),
        bad(
            json!({"title": "Buy milk", "description": null, "completed": false, "due": "today"}),
            &["due"],
            "an unknown field",
        ),
        bad(
            json!({"title": " ", "description": {}, "completed": 0, "id": "x"}),
            &["completed", "description", "id", "title"],
            "four bad fields at once",
        ),
    ];
    cases.extend(malformed_bodies());
    cases
}

fn bad_patch_bodies() -> Vec<BadBody> {
    let mut cases = vec![
        bad(json!({"title": ""}), &["title"], "an empty title"),
        bad(
            json!({"title": "\n  "}),
            &["title"],
            "a title of whitespace",
        ),
        bad(
            json!({"title": "x".repeat(256)}),
            &["title"],
            "a title of 256 characters",
        ),
        bad(json!({"title": null}), &["title"], "a null title"),
        bad(json!({"title": 1}), &["title"], "a number as title"),
        bad(
            json!({"description": "x".repeat(10_001)}),
            &["description"],
            "a description of 10 001 characters",
        ),
        bad(
            json!({"description": false}),
            &["description"],
            "a boolean as description",
        ),
        bad(
            json!({"completed": "yes"}),
            &["completed"],
            "a string as completed",
        ),
        bad(
            json!({"completed": null}),
            &["completed"],
            "a null completed",
        ),
        bad(json!({"done": true}), &["done"], "an unknown field"),
        bad(
            json!({"title": "", "completed": "yes", "colour": "red"}),
            &["colour", "completed", "title"],
            "three bad fields at once",
        ),
    ];
    cases.extend(malformed_bodies());
    cases
}

fn bad_complete_bodies() -> Vec<BadBody> {
    vec![
        bad(
            json!({"completed": "yes"}),
            &["completed"],
            "a string as completed",
        ),
        bad(
            json!({"completed": 1}),
            &["completed"],
            "a number as completed",
        ),
        bad(
            json!({"completed": true, "title": "sneaky"}),
            &["title"],
            "a field this route does not take",
        ),
        bad_text("[]", "a JSON array"),
        bad_text("true", "a bare JSON boolean"),
        bad_text(r#"{"completed": tru"#, "truncated JSON"),
    ]
}

/// Asserts that `response` is a 400 whose `errors` name exactly `case.fields`.
async fn assert_refused(response: Response, case: &BadBody) {
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "{} must be a 400",
        case.why
    );
    let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
    let mut named = error_fields(&problem);
    named.sort();
    named.dedup();
    if case.fields.is_empty() {
        assert!(
            problem["errors"].as_array().is_some_and(|e| !e.is_empty()),
            "{}: errors must say what is wrong, got {problem}",
            case.why
        );
    } else {
        assert_eq!(
            named, case.fields,
            "{}: fields named in {problem}",
            case.why
        );
    }
}

on_both_databases! {
    async fn creating_a_task_is_a_201_whose_location_reads_the_same_task(app: TestApp) {
        let alice = app.signup("alice").await;
        let response = app
            .authed(Method::POST, &TestApp::tasks_path(&alice), &alice.token)
            .json(&json!({"title": "Buy milk", "description": "2 litres", "completed": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let location = response
            .headers()
            .get(LOCATION)
            .expect("a Location header")
            .to_str()
            .unwrap()
            .to_owned();
        let task: Value = response.json().await.unwrap();

        let id = id_of(&task);
        let parsed = uuid::Uuid::parse_str(id).expect("the id is a UUID");
        assert_eq!(
            id,
            parsed.hyphenated().to_string(),
            "lower-case and hyphenated"
        );
        assert_eq!(task["user_id"], alice.id.as_str());
        assert_eq!(task["title"], "Buy milk");
        assert_eq!(task["description"], "2 litres");
        assert_eq!(task["completed"], true);
        assert_eq!(
            timestamp(&task["created_at"]),
            timestamp(&task["updated_at"])
        );

        // Unreserved characters (the UUID's hyphens) are not percent-encoded (RFC 3986 §2.3).
        assert_eq!(location, TestApp::task_path(&alice, id), "Location names the new task");
        let url = if location.starts_with('/') {
            app.url(&location)
        } else {
            location
        };
        let read = app
            .client
            .get(url)
            .bearer_auth(&alice.token)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), StatusCode::OK);
        assert_eq!(read.json::<Value>().await.unwrap(), task);
    }

    async fn a_task_created_with_only_a_title_is_open_and_has_no_description(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app.create_task(&alice, json!({"title": "Buy milk"})).await;
        assert_eq!(task["completed"], false);
        assert_eq!(task["description"], Value::Null);
    }

    async fn a_task_can_be_created_with_a_null_description(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app
            .create_task(&alice, json!({"title": "Buy milk", "description": null}))
            .await;
        assert_eq!(task["description"], Value::Null);
    }

    async fn a_title_is_stored_trimmed(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app
            .create_task(&alice, json!({"title": "  Buy milk \t"}))
            .await;
        assert_eq!(task["title"], "Buy milk");
        assert_eq!(
            read_task(&app, &alice, id_of(&task)).await["title"],
            "Buy milk"
        );
    }

    async fn titles_up_to_255_and_descriptions_up_to_10000_characters_are_accepted(app: TestApp) {
        let alice = app.signup("alice").await;
        // Multi-byte characters: the limits count characters, not bytes.
        let title = "é".repeat(255);
        let description = "ü".repeat(10_000);
        let task = app
            .create_task(&alice, json!({"title": title, "description": description}))
            .await;
        let stored = read_task(&app, &alice, id_of(&task)).await;
        assert_eq!(stored["title"], title.as_str());
        assert_eq!(stored["description"], description.as_str());
    }

    async fn a_body_labelled_json_with_a_charset_is_accepted(app: TestApp) {
        let alice = app.signup("alice").await;
        let response = app
            .authed(Method::POST, &TestApp::tasks_path(&alice), &alice.token)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(r#"{"title": "Buy milk"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }

    async fn listing_tasks_is_a_200_page_envelope(app: TestApp) {
        let alice = app.signup("alice").await;
        let first = app.create_task(&alice, json!({"title": "First"})).await;
        let second = app.create_task(&alice, json!({"title": "Second"})).await;
        let (status, page) = app.get_json(&alice, &TestApp::tasks_path(&alice)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["total"], 2);
        assert_eq!(page["page"], 1);
        assert_eq!(page["page_size"], 20);
        assert_eq!(page["total_pages"], 1);
        let items = page["items"].as_array().expect("items is an array");
        assert_eq!(items.len(), 2);
        assert!(items.contains(&first) && items.contains(&second), "{page}");
    }

    async fn reading_a_task_is_a_200_with_the_task(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app
            .create_task(
                &alice,
                json!({"title": "Buy milk", "description": "2 litres"}),
            )
            .await;
        let response = app
            .authed(
                Method::GET,
                &TestApp::task_path(&alice, id_of(&task)),
                &alice.token,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.json::<Value>().await.unwrap(), task);
    }

    async fn put_replaces_every_field_and_is_a_200(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app
            .create_task(
                &alice,
                json!({"title": "Buy milk", "description": "2 litres"}),
            )
            .await;
        let path = TestApp::task_path(&alice, id_of(&task));
        let response = app
            .authed(Method::PUT, &path, &alice.token)
            .json(&json!({"title": "Buy oat milk", "description": null, "completed": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let replaced: Value = response.json().await.unwrap();
        assert_eq!(replaced["id"], task["id"]);
        assert_eq!(replaced["user_id"], alice.id.as_str());
        assert_eq!(replaced["title"], "Buy oat milk");
        assert_eq!(replaced["description"], Value::Null);
        assert_eq!(replaced["completed"], true);
        assert_eq!(replaced["created_at"], task["created_at"]);
        assert!(timestamp(&replaced["updated_at"]) > timestamp(&task["updated_at"]));
        assert_eq!(read_task(&app, &alice, id_of(&task)).await, replaced);

        let response = app
            .authed(Method::PUT, &path, &alice.token)
            .json(&json!({"title": "Buy milk", "description": "1 litre", "completed": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let again: Value = response.json().await.unwrap();
        assert_eq!(again["description"], "1 litre");
        assert_eq!(again["completed"], false);
        assert_eq!(read_task(&app, &alice, id_of(&task)).await, again);
    }

    async fn patch_changes_only_the_given_fields(app: TestApp) {
        let alice = app.signup("alice").await;
        let cases = [
            (json!({"title": "Buy bread"}), "title", json!("Buy bread")),
            (
                json!({"description": "wholemeal"}),
                "description",
                json!("wholemeal"),
            ),
            (json!({"completed": true}), "completed", json!(true)),
        ];
        for (patch, field, expected) in cases {
            let task = app
                .create_task(
                    &alice,
                    json!({"title": "Buy milk", "description": "2 litres"}),
                )
                .await;
            let response = app
                .authed(
                    Method::PATCH,
                    &TestApp::task_path(&alice, id_of(&task)),
                    &alice.token,
                )
                .json(&patch)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "PATCH {patch}");
            let patched: Value = response.json().await.unwrap();

            let mut expected_task = task.clone();
            expected_task[field] = expected;
            expected_task["updated_at"] = patched["updated_at"].clone();
            assert_eq!(
                patched, expected_task,
                "PATCH {patch} changes {field} alone"
            );
            assert!(
                timestamp(&patched["updated_at"]) > timestamp(&task["updated_at"]),
                "PATCH {patch} moves updated_at"
            );
            assert_eq!(
                read_task(&app, &alice, id_of(&task)).await,
                patched,
                "PATCH {patch}"
            );
        }
    }

    async fn patch_with_several_fields_changes_them_all(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app.create_task(&alice, json!({"title": "Buy milk"})).await;
        let response = app
            .authed(
                Method::PATCH,
                &TestApp::task_path(&alice, id_of(&task)),
                &alice.token,
            )
            .json(&json!({"title": "Buy bread", "description": "rye", "completed": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let patched: Value = response.json().await.unwrap();
        assert_eq!(patched["title"], "Buy bread");
        assert_eq!(patched["description"], "rye");
        assert_eq!(patched["completed"], true);
    }

    async fn patch_with_a_null_description_clears_it(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app
            .create_task(
                &alice,
                json!({"title": "Buy milk", "description": "2 litres"}),
            )
            .await;
        let response = app
            .authed(
                Method::PATCH,
                &TestApp::task_path(&alice, id_of(&task)),
                &alice.token,
            )
            .json(&json!({"description": null}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let patched: Value = response.json().await.unwrap();
        assert_eq!(patched["description"], Value::Null);
        assert_eq!(patched["title"], "Buy milk");
        assert_eq!(
            read_task(&app, &alice, id_of(&task)).await["description"],
            Value::Null
        );
    }

    async fn complete_with_a_completed_value_sets_it(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app.create_task(&alice, json!({"title": "Buy milk"})).await;
        let path = format!("{}/complete", TestApp::task_path(&alice, id_of(&task)));
        for value in [true, true, false, false, true] {
            let response = app
                .authed(Method::PATCH, &path, &alice.token)
                .json(&json!({"completed": value}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "completed: {value}");
            let updated: Value = response.json().await.unwrap();
            assert_eq!(updated["completed"], value, "completed: {value} sets it");
            assert_eq!(
                read_task(&app, &alice, id_of(&task)).await["completed"],
                value
            );
        }
    }

    async fn complete_with_an_empty_body_toggles_and_a_second_call_toggles_back(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app.create_task(&alice, json!({"title": "Buy milk"})).await;
        let path = format!("{}/complete", TestApp::task_path(&alice, id_of(&task)));
        for expected in [true, false] {
            let response = app
                .authed(Method::PATCH, &path, &alice.token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let toggled: Value = response.json().await.unwrap();
            assert_eq!(toggled["completed"], expected, "an empty body toggles");
            assert_eq!(toggled["title"], "Buy milk");
        }
        assert_eq!(
            read_task(&app, &alice, id_of(&task)).await["completed"],
            false
        );
    }

    async fn complete_with_an_empty_body_labelled_json_toggles(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app.create_task(&alice, json!({"title": "Buy milk"})).await;
        let path = format!("{}/complete", TestApp::task_path(&alice, id_of(&task)));
        let response = json_text(app.authed(Method::PATCH, &path, &alice.token), "")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.json::<Value>().await.unwrap()["completed"], true);
    }

    async fn complete_with_an_empty_object_toggles(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app
            .create_task(&alice, json!({"title": "Buy milk", "completed": true}))
            .await;
        let path = format!("{}/complete", TestApp::task_path(&alice, id_of(&task)));
        for expected in [false, true] {
            let response = app
                .authed(Method::PATCH, &path, &alice.token)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(
                response.json::<Value>().await.unwrap()["completed"],
                expected,
                "{{}} toggles"
            );
        }
    }

    async fn deleting_a_task_is_a_200_with_the_task_and_then_it_is_gone(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app
            .create_task(
                &alice,
                json!({"title": "Buy milk", "description": "2 litres"}),
            )
            .await;
        let keep = app.create_task(&alice, json!({"title": "Keep me"})).await;
        let path = TestApp::task_path(&alice, id_of(&task));
        let response = app
            .authed(Method::DELETE, &path, &alice.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.json::<Value>().await.unwrap(), task);

        let response = app
            .authed(Method::GET, &path, &alice.token)
            .send()
            .await
            .unwrap();
        expect_problem(response, StatusCode::NOT_FOUND).await;
        let response = app
            .authed(Method::DELETE, &path, &alice.token)
            .send()
            .await
            .unwrap();
        expect_problem(response, StatusCode::NOT_FOUND).await;

        let (_, page) = app.get_json(&alice, &TestApp::tasks_path(&alice)).await;
        assert_eq!(page["total"], 1);
        assert_eq!(page["items"], json!([keep]));
    }

    async fn every_change_moves_updated_at_forward_and_never_the_id_or_created_at(app: TestApp) {
        let alice = app.signup("alice").await;
        let created = app.create_task(&alice, json!({"title": "Buy milk"})).await;
        let path = TestApp::task_path(&alice, id_of(&created));
        let complete = format!("{path}/complete");
        let changes = [
            (
                Method::PUT,
                path.clone(),
                Some(json!({"title": "A", "description": "d", "completed": false})),
            ),
            (Method::PATCH, path.clone(), Some(json!({"title": "B"}))),
            (
                Method::PATCH,
                path.clone(),
                Some(json!({"description": "some words"})),
            ),
            (
                Method::PATCH,
                path.clone(),
                Some(json!({"description": null})),
            ),
            (
                Method::PATCH,
                complete.clone(),
                Some(json!({"completed": true})),
            ),
            (Method::PATCH, complete.clone(), None),
            (Method::PATCH, complete.clone(), Some(json!({}))),
        ];
        let mut previous = created.clone();
        for (method, path, body) in changes {
            let label = format!("{method} {path} {body:?}");
            let mut request = app.authed(method, &path, &alice.token);
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{label}");
            let task: Value = response.json().await.unwrap();
            assert_eq!(task["id"], created["id"], "{label} keeps the id");
            assert_eq!(
                task["created_at"], created["created_at"],
                "{label} keeps created_at"
            );
            assert!(
                timestamp(&task["updated_at"]) > timestamp(&previous["updated_at"]),
                "{label} moves updated_at past {}: {}",
                previous["updated_at"],
                task["updated_at"]
            );
            assert!(
                timestamp(&task["created_at"]) < timestamp(&task["updated_at"]),
                "{label}: a changed task was updated after it was created"
            );
            assert_eq!(
                read_task(&app, &alice, id_of(&created)).await,
                task,
                "{label}"
            );
            previous = task;
        }
    }

    async fn a_subject_that_is_not_a_uuid_owns_tasks_under_its_own_path(app: TestApp) {
        let subject = "kXq3bT9zLmA0pR7sW2vYc5nH8dJ4fG6e";
        let now = now();
        let token = hs256_token(
            &json!({"sub": subject, "iat": now, "exp": now + 3600}),
            SECRET,
        );
        let tasks = format!("/api/{subject}/tasks");
        let response = app
            .authed(Method::POST, &tasks, &token)
            .json(&json!({"title": "From Better Auth"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let task: Value = response.json().await.unwrap();
        assert_eq!(task["user_id"], subject);

        let response = app
            .authed(Method::GET, &format!("{tasks}/{}", id_of(&task)), &token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.json::<Value>().await.unwrap(), task);
        let response = app
            .authed(Method::GET, &tasks, &token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.json::<Value>().await.unwrap()["items"],
            json!([task])
        );
    }

    async fn every_task_route_without_a_token_is_a_401(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app.create_task(&alice, json!({"title": "Buy milk"})).await;
        for route in TaskRoute::ALL {
            let response = route
                .request(&app, &alice.id, id_of(&task))
                .send()
                .await
                .unwrap();
            expect_unauthorized(response, &format!("{route:?} without a token")).await;
        }
    }

    async fn every_task_route_with_a_garbage_token_is_a_401(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app.create_task(&alice, json!({"title": "Buy milk"})).await;
        let credentials = [
            ("Bearer garbage", "a token that is not a JWT"),
            ("Bearer a.b.c", "three segments of nonsense"),
            ("Bearer ", "an empty bearer token"),
            ("Basic YWxpY2U6cGFzc3dvcmQ=", "Basic credentials"),
            (alice.token.as_str(), "a token without a scheme"),
        ];
        for route in TaskRoute::ALL {
            for (authorization, why) in credentials {
                let response = route
                    .request(&app, &alice.id, id_of(&task))
                    .header("authorization", authorization)
                    .send()
                    .await
                    .unwrap();
                expect_unauthorized(response, &format!("{route:?} with {why}")).await;
            }
        }
    }

    async fn every_task_route_with_a_token_signed_by_another_secret_is_a_401(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app.create_task(&alice, json!({"title": "Buy milk"})).await;
        let now = now();
        let forged = hs256_token(
            &json!({"sub": alice.id, "iat": now, "exp": now + 3600}),
            "another-secret-that-is-long-enough-0123456789",
        );
        for route in TaskRoute::ALL {
            let response = route
                .request(&app, &alice.id, id_of(&task))
                .bearer_auth(&forged)
                .send()
                .await
                .unwrap();
            expect_unauthorized(response, &format!("{route:?} with a forged token")).await;
        }
    }

    async fn every_task_route_on_another_users_path_is_a_403(app: TestApp) {
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        let bobs_task = app.create_task(&bob, json!({"title": "Bob's"})).await;
        let nobody = uuid::Uuid::new_v4().to_string();
        for route in TaskRoute::ALL {
            for (user_id, whose) in [(&bob.id, "bob's path"), (&nobody, "a path of no user")] {
                let response = route
                    .request(&app, user_id, id_of(&bobs_task))
                    .bearer_auth(&alice.token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    response.status(),
                    StatusCode::FORBIDDEN,
                    "{route:?} on {whose} with alice's token"
                );
                expect_problem(response, StatusCode::FORBIDDEN).await;
            }
        }
    }

    async fn a_malformed_task_id_is_a_400_naming_id_on_every_route(app: TestApp) {
        let alice = app.signup("alice").await;
        let ids = [
            "not-a-uuid",
            "42",
            "0195f3e2-7c1a-7b3e-9d4f",
            "0195f3e2-7c1a-7b3e-9d4f-0123456789ab0",
            "0195f3e2-7c1a-7b3e-9d4f-0123456789xy",
        ];
        for route in TaskRoute::ON_ONE_TASK {
            for id in ids {
                let response = route
                    .request(&app, &alice.id, id)
                    .bearer_auth(&alice.token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    response.status(),
                    StatusCode::BAD_REQUEST,
                    "{route:?} with id {id:?}"
                );
                let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
                assert_eq!(
                    error_fields(&problem),
                    ["id"],
                    "{route:?} with id {id:?}: {problem}"
                );
            }
        }
    }

    async fn post_with_a_bad_body_is_a_400_naming_every_bad_field(app: TestApp) {
        let alice = app.signup("alice").await;
        for case in bad_create_bodies() {
            let request = app.authed(Method::POST, &TestApp::tasks_path(&alice), &alice.token);
            let response = json_text(request, &case.raw).send().await.unwrap();
            assert_refused(response, &case).await;
        }
    }

    async fn put_with_a_bad_body_is_a_400_naming_every_bad_field(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app.create_task(&alice, json!({"title": "Buy milk"})).await;
        for case in bad_replace_bodies() {
            let request = app.authed(
                Method::PUT,
                &TestApp::task_path(&alice, id_of(&task)),
                &alice.token,
            );
            let response = json_text(request, &case.raw).send().await.unwrap();
            assert_refused(response, &case).await;
        }
    }

    async fn patch_with_a_bad_body_is_a_400_naming_every_bad_field(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app.create_task(&alice, json!({"title": "Buy milk"})).await;
        for case in bad_patch_bodies() {
            let request = app.authed(
                Method::PATCH,
                &TestApp::task_path(&alice, id_of(&task)),
                &alice.token,
            );
            let response = json_text(request, &case.raw).send().await.unwrap();
            assert_refused(response, &case).await;
        }
    }

    async fn complete_with_a_bad_body_is_a_400_naming_every_bad_field(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app.create_task(&alice, json!({"title": "Buy milk"})).await;
        let path = format!("{}/complete", TestApp::task_path(&alice, id_of(&task)));
        for case in bad_complete_bodies() {
            let request = app.authed(Method::PATCH, &path, &alice.token);
            let response = json_text(request, &case.raw).send().await.unwrap();
            assert_refused(response, &case).await;
        }
    }

    async fn a_well_formed_id_of_no_task_is_a_404_on_every_route(app: TestApp) {
        let alice = app.signup("alice").await;
        let deleted = app.create_task(&alice, json!({"title": "Soon gone"})).await;
        let response = app
            .authed(
                Method::DELETE,
                &TestApp::task_path(&alice, id_of(&deleted)),
                &alice.token,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let ids = [
            (unknown_id(), "a random id"),
            (id_of(&deleted).to_owned(), "a deleted task's id"),
        ];
        for route in TaskRoute::ON_ONE_TASK {
            for (id, what) in &ids {
                let response = route
                    .request(&app, &alice.id, id)
                    .bearer_auth(&alice.token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    response.status(),
                    StatusCode::NOT_FOUND,
                    "{route:?} with {what}"
                );
                expect_problem(response, StatusCode::NOT_FOUND).await;
            }
        }
        assert_eq!(task_count(&app, &alice).await, 0, "nothing was created");
    }

    async fn a_body_without_a_json_content_type_is_a_415(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app.create_task(&alice, json!({"title": "Buy milk"})).await;
        let before = read_task(&app, &alice, id_of(&task)).await;
        let labels = [
            (None, "no Content-Type"),
            (Some("text/plain"), "text/plain"),
            (Some("application/x-www-form-urlencoded"), "a form"),
            (Some("application/xml"), "XML"),
        ];
        for route in TaskRoute::WITH_BODY {
            let body = route
                .valid_body()
                .expect("the route takes a body")
                .to_string();
            for (content_type, what) in labels {
                let mut request = app
                    .authed(
                        route.method(),
                        &route.path(&alice.id, id_of(&task)),
                        &alice.token,
                    )
                    .body(body.clone());
                if let Some(content_type) = content_type {
                    request = request.header(CONTENT_TYPE, content_type);
                }
                let response = request.send().await.unwrap();
                assert_eq!(
                    response.status(),
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "{route:?} with {what}"
                );
                expect_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
            }
        }
        assert_eq!(read_task(&app, &alice, id_of(&task)).await, before);
        assert_eq!(task_count(&app, &alice).await, 1);
    }

    async fn a_body_over_the_default_limit_is_a_413(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app.create_task(&alice, json!({"title": "Buy milk"})).await;
        let before = read_task(&app, &alice, id_of(&task)).await;
        let padding = "x".repeat(200 * 1024);
        for route in TaskRoute::WITH_BODY {
            let mut body = route.valid_body().expect("the route takes a body");
            body["padding"] = json!(padding);
            let response = app
                .authed(
                    route.method(),
                    &route.path(&alice.id, id_of(&task)),
                    &alice.token,
                )
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::PAYLOAD_TOO_LARGE,
                "{route:?}"
            );
            expect_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
        }
        assert_eq!(read_task(&app, &alice, id_of(&task)).await, before);
        assert_eq!(task_count(&app, &alice).await, 1);
    }

    async fn without_a_token_a_bad_id_and_a_bad_body_are_still_a_401(app: TestApp) {
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        for user_id in [&alice.id, &bob.id] {
            let request = app.request(Method::PUT, &format!("/api/{user_id}/tasks/not-a-uuid"));
            let response = json_text(request, r#"{"title": ""}"#).send().await.unwrap();
            expect_unauthorized(response, "no token, bad id, bad body").await;
        }
        let request = app.request(Method::POST, &TestApp::tasks_path(&alice));
        let response = json_text(request, "{").send().await.unwrap();
        expect_unauthorized(response, "no token, invalid JSON").await;
    }

    async fn without_a_token_a_non_json_or_oversized_body_is_still_a_401(app: TestApp) {
        let alice = app.signup("alice").await;
        let response = app
            .request(Method::POST, &TestApp::tasks_path(&alice))
            .header(CONTENT_TYPE, "text/plain")
            .body("Buy milk")
            .send()
            .await
            .unwrap();
        expect_unauthorized(response, "no token, text/plain body").await;
        let response = app
            .request(Method::POST, &TestApp::tasks_path(&alice))
            .json(&json!({"title": "x".repeat(200 * 1024)}))
            .send()
            .await
            .unwrap();
        expect_unauthorized(response, "no token, oversized body").await;
    }

    async fn a_valid_token_on_another_users_path_with_a_bad_id_and_body_is_a_403(app: TestApp) {
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        let cases = [
            (
                Method::PUT,
                format!("/api/{}/tasks/not-a-uuid", bob.id),
                "a bad id and body",
            ),
            (
                Method::PATCH,
                format!("/api/{}/tasks/{}", bob.id, unknown_id()),
                "an unknown id and bad body",
            ),
            (Method::POST, TestApp::tasks_path(&bob), "a bad body"),
        ];
        for (method, path, what) in cases {
            let request = app.authed(method, &path, &alice.token);
            let response = json_text(request, r#"{"title": 5}"#).send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "another's path with {what}"
            );
            expect_problem(response, StatusCode::FORBIDDEN).await;
        }
        let response = app
            .authed(Method::POST, &TestApp::tasks_path(&bob), &alice.token)
            .header(CONTENT_TYPE, "text/plain")
            .body("Buy milk")
            .send()
            .await
            .unwrap();
        expect_problem(response, StatusCode::FORBIDDEN).await;
    }

    async fn own_path_with_a_bad_id_and_a_bad_body_is_a_400(app: TestApp) {
        let alice = app.signup("alice").await;
        let request = app.authed(
            Method::PUT,
            &TestApp::task_path(&alice, "not-a-uuid"),
            &alice.token,
        );
        let response = json_text(request, r#"{"title": ""}"#).send().await.unwrap();
        let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
        assert!(
            error_fields(&problem).contains(&"id".to_owned()),
            "{problem}"
        );
    }

    async fn own_path_with_an_unknown_id_and_a_bad_body_is_a_400(app: TestApp) {
        let alice = app.signup("alice").await;
        let path = TestApp::task_path(&alice, &unknown_id());
        for method in [Method::PUT, Method::PATCH] {
            let request = app.authed(method.clone(), &path, &alice.token);
            let response = json_text(request, r#"{"title": ""}"#).send().await.unwrap();
            let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
            assert!(
                error_fields(&problem).contains(&"title".to_owned()),
                "{method}: {problem}"
            );
        }
        let request = app.authed(Method::PATCH, &format!("{path}/complete"), &alice.token);
        let response = json_text(request, r#"{"completed": "yes"}"#)
            .send()
            .await
            .unwrap();
        let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(error_fields(&problem), ["completed"]);
    }

    async fn own_path_with_an_unknown_id_and_a_good_body_is_a_404(app: TestApp) {
        let alice = app.signup("alice").await;
        let id = unknown_id();
        for route in [TaskRoute::Replace, TaskRoute::Update, TaskRoute::Complete] {
            let response = route
                .request(&app, &alice.id, &id)
                .bearer_auth(&alice.token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{route:?}");
            expect_problem(response, StatusCode::NOT_FOUND).await;
        }
    }

    async fn a_refused_post_creates_nothing(app: TestApp) {
        let alice = app.signup("alice").await;
        app.create_task(&alice, json!({"title": "Already here"}))
            .await;
        for case in bad_create_bodies() {
            let request = app.authed(Method::POST, &TestApp::tasks_path(&alice), &alice.token);
            let response = json_text(request, &case.raw).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{}", case.why);
            assert_eq!(
                task_count(&app, &alice).await,
                1,
                "{} created a task",
                case.why
            );
        }
    }

    async fn a_refused_put_changes_nothing(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app
            .create_task(
                &alice,
                json!({"title": "Buy milk", "description": "2 litres"}),
            )
            .await;
        let cases = [
            (
                json!({"title": "New", "description": "new", "completed": "true"}),
                "a bad completed",
            ),
            (
                json!({"title": "New", "description": 1, "completed": true}),
                "a bad description",
            ),
            (
                json!({"title": "", "description": null, "completed": true}),
                "a bad title",
            ),
            (
                json!({"title": "New", "description": null, "completed": true, "x": 1}),
                "an unknown field",
            ),
            (
                json!({"title": "New", "completed": true}),
                "a missing description",
            ),
        ];
        for (body, what) in cases {
            let response = app
                .authed(
                    Method::PUT,
                    &TestApp::task_path(&alice, id_of(&task)),
                    &alice.token,
                )
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::BAD_REQUEST,
                "PUT with {what}"
            );
            assert_eq!(
                read_task(&app, &alice, id_of(&task)).await,
                task,
                "PUT with {what}"
            );
        }
    }

    async fn a_refused_patch_changes_nothing(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app
            .create_task(
                &alice,
                json!({"title": "Buy milk", "description": "2 litres"}),
            )
            .await;
        let path = TestApp::task_path(&alice, id_of(&task));
        let cases = [
            (
                path.clone(),
                json!({"title": "New", "description": null, "completed": "yes"}),
                "a bad completed",
            ),
            (
                path.clone(),
                json!({"title": "New", "completed": true, "description": 7}),
                "a bad description",
            ),
            (
                path.clone(),
                json!({"title": "x".repeat(256), "completed": true}),
                "a long title",
            ),
            (
                path.clone(),
                json!({"description": null, "colour": "red"}),
                "an unknown field",
            ),
            (
                format!("{path}/complete"),
                json!({"completed": 1}),
                "a bad completed on /complete",
            ),
            (
                format!("{path}/complete"),
                json!({"completed": true, "x": 1}),
                "an unknown field on /complete",
            ),
        ];
        for (path, body, what) in cases {
            let response = app
                .authed(Method::PATCH, &path, &alice.token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::BAD_REQUEST,
                "PATCH with {what}"
            );
            assert_eq!(
                read_task(&app, &alice, id_of(&task)).await,
                task,
                "PATCH with {what}"
            );
        }
    }
}

/// With a small body limit, a body just over it is a 413 and one under it is accepted.
async fn a_configured_body_limit_is_enforced(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| settings.max_body_bytes = 2048).await;
    let alice = app.signup("alice").await;
    let small = json!({"title": "Fits", "description": "x".repeat(1500)});
    let response = app
        .authed(Method::POST, &TestApp::tasks_path(&alice), &alice.token)
        .json(&small)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "1.5 KiB under a 2 KiB limit"
    );

    let large = json!({"title": "Does not fit", "description": "x".repeat(3000)});
    let response = app
        .authed(Method::POST, &TestApp::tasks_path(&alice), &alice.token)
        .json(&large)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "3 KiB over a 2 KiB limit"
    );
    expect_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(task_count(&app, &alice).await, 1);
}

#[tokio::test]
async fn a_configured_body_limit_is_enforced_on_sqlite() {
    a_configured_body_limit_is_enforced(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_configured_body_limit_is_enforced_on_postgres() {
    a_configured_body_limit_is_enforced(Backend::Postgres).await;
}
