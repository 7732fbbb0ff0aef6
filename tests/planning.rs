//! Planning a task: priority, tags, due dates, reminders and recurrence (docs/API.md, "Tasks",
//! "Recurring tasks", "Reminders", "Listing tasks", "GET /api/{user_id}/tags", "Events").
//!
//! Every HTTP case runs on SQLite and PostgreSQL. No assertion is about speed: the reminder
//! cases wait for behaviour within a generous bound, and "only once" is checked after a
//! reminder that fell due later has been sent, plus a few more scans.

mod common;

use std::{
    cmp::Ordering,
    collections::HashSet,
    time::{Duration, Instant},
};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use common::*;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

/// The longest any wait-until loop waits.
const BOUND: Duration = Duration::from_secs(30);
/// The reminder scan interval of the reminder tests.
const POLL: Duration = Duration::from_millis(100);
/// How long "it happened only once" is watched for after the condition that should have
/// ended it: many scans.
const QUIET: Duration = Duration::from_millis(1_000);

/// The fields of a task, old and new: a response carries exactly these.
const TASK_FIELDS: [&str; 13] = [
    "completed",
    "created_at",
    "description",
    "due_at",
    "id",
    "next_task_id",
    "priority",
    "recurrence",
    "remind_at",
    "tags",
    "title",
    "updated_at",
    "user_id",
];

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn id_of(task: &Value) -> &str {
    task["id"].as_str().expect("a task has a string id")
}

fn items(page: &Value) -> &Vec<Value> {
    page["items"].as_array().expect("items is an array")
}

/// A timestamp as the API writes it: UTC, milliseconds, `Z`.
fn api_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `now` + `millis`, as the API writes it.
fn from_now(millis: i64) -> String {
    api_time(Utc::now() + TimeDelta::milliseconds(millis))
}

fn parse_time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|error| panic!("{text} is RFC 3339: {error}"))
        .with_timezone(&Utc)
}

/// Sends `method path` as `user`, with `body` as JSON when given.
async fn send(
    app: &TestApp,
    user: &TestUser,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Response {
    let mut request = app.authed(method, path, &user.token);
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.expect("request")
}

/// A change that must succeed with 200; the task it answers with.
async fn change(
    app: &TestApp,
    user: &TestUser,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Value {
    let response = send(app, user, method.clone(), path, body).await;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "{method} {path} {body:?}: {answer}");
    answer
}

async fn patch(app: &TestApp, user: &TestUser, id: &str, body: Value) -> Value {
    change(
        app,
        user,
        Method::PATCH,
        &TestApp::task_path(user, id),
        Some(&body),
    )
    .await
}

async fn put(app: &TestApp, user: &TestUser, id: &str, body: Value) -> Value {
    change(
        app,
        user,
        Method::PUT,
        &TestApp::task_path(user, id),
        Some(&body),
    )
    .await
}

fn complete_path(user: &TestUser, id: &str) -> String {
    format!("{}/complete", TestApp::task_path(user, id))
}

/// Reads one of `user`'s tasks, which must exist.
async fn read_task(app: &TestApp, user: &TestUser, id: &str) -> Value {
    let (status, task) = app.get_json(user, &TestApp::task_path(user, id)).await;
    assert_eq!(status, StatusCode::OK, "reading task {id}: {task}");
    task
}

/// Reads a task and its `ETag`.
async fn read_with_etag(app: &TestApp, user: &TestUser, id: &str) -> (Value, String) {
    let response = send(app, user, Method::GET, &TestApp::task_path(user, id), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response
        .headers()
        .get("etag")
        .expect("an ETag")
        .to_str()
        .unwrap()
        .to_owned();
    (response.json().await.unwrap(), etag)
}

/// Lists `user`'s tasks with `query` (without the `?`), which must succeed.
async fn list(app: &TestApp, user: &TestUser, query: &str) -> Value {
    let path = format!("{}?{query}", TestApp::tasks_path(user));
    let (status, page) = app.get_json(user, &path).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {page}");
    page
}

/// Every task of `user`, newest first.
async fn all_tasks(app: &TestApp, user: &TestUser) -> Vec<Value> {
    let mut tasks = Vec::new();
    for number in 1.. {
        let page = list(app, user, &format!("page_size=100&page={number}")).await;
        if items(&page).is_empty() {
            return tasks;
        }
        tasks.extend(items(&page).iter().cloned());
    }
    unreachable!()
}

async fn task_count(app: &TestApp, user: &TestUser) -> u64 {
    list(app, user, "page_size=1").await["total"]
        .as_u64()
        .expect("total is a number")
}

/// Every event of `user` in the JSON feed, oldest first.
async fn all_events(app: &TestApp, user: &TestUser) -> Vec<Value> {
    let mut after = "0".to_owned();
    let mut events = Vec::new();
    loop {
        let (status, page) = app
            .get_json(
                user,
                &format!("/api/{}/events?after={after}&limit=100", user.id),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "the feed: {page}");
        let batch = items(&page).clone();
        if batch.is_empty() {
            return events;
        }
        after = page["next"].as_str().expect("next").to_owned();
        events.extend(batch);
    }
}

fn event_types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["type"].as_str().expect("a type"))
        .collect()
}

/// The `todo.task.reminder` events about task `id`.
fn reminders_of<'a>(events: &'a [Value], id: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|event| event["type"] == "todo.task.reminder" && event["subject"] == id)
        .collect()
}

/// Waits until task `id` has had `count` reminders; the user's events then.
async fn wait_for_reminders(app: &TestApp, user: &TestUser, id: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + BOUND;
    loop {
        let events = all_events(app, user).await;
        let sent = reminders_of(&events, id).len();
        if sent >= count {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} has {sent} of {count} reminders after {BOUND:?}: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A task whose reminder falls due at `remind_at`, and, once its reminder has arrived and a
/// few more scans have passed, the user's events: every reminder due no later than it must
/// have been sent by then, and no duplicate may have come since.
async fn after_a_later_reminder(
    app: &TestApp,
    user: &TestUser,
    remind_at: &str,
) -> (Value, Vec<Value>) {
    let marker = app
        .create_task(
            user,
            json!({"title": "a later reminder", "remind_at": remind_at}),
        )
        .await;
    wait_for_reminders(app, user, id_of(&marker), 1).await;
    tokio::time::sleep(QUIET).await;
    (marker, all_events(app, user).await)
}

/// The fields a 400 problem names, sorted and unique. An item of `tags` named by its
/// position (`tags[3]`, `tags.3`) names `tags`.
fn named_fields(problem: &Value) -> Vec<String> {
    let mut named: Vec<String> = error_fields(problem)
        .into_iter()
        .map(|field| {
            if field.starts_with("tags[") || field.starts_with("tags.") {
                "tags".to_owned()
            } else {
                field
            }
        })
        .collect();
    named.sort();
    named.dedup();
    named
}

/// Asserts that `response` is a 400 naming exactly `fields`.
async fn assert_refused(response: Response, fields: &[&str], why: &str) {
    let status = response.status();
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{why} must be a 400, got {status}: {:?}",
        response.text().await
    );
    let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
    let mut expected: Vec<&str> = fields.to_vec();
    expected.sort();
    assert_eq!(named_fields(&problem), expected, "{why}: {problem}");
}

/// `base` with the members of `extra` added (replacing any of the same name).
fn merged(base: &Value, extra: &Value) -> Value {
    let mut body = base.clone();
    for (key, value) in extra.as_object().expect("an object") {
        body[key.as_str()] = value.clone();
    }
    body
}

/// A full `PUT` body repeating `task`, with `completed` as given.
fn put_body(task: &Value, completed: bool) -> Value {
    json!({
        "title": task["title"],
        "description": task["description"],
        "completed": completed,
        "priority": task["priority"],
        "tags": task["tags"],
        "due_at": task["due_at"],
        "remind_at": task["remind_at"],
        "recurrence": task["recurrence"],
    })
}

fn keys(task: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = task
        .as_object()
        .expect("a task is an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    keys
}

/// The three ways of completing a task.
#[derive(Clone, Copy, Debug)]
enum Completion {
    Put,
    Patch,
    /// `PATCH …/complete` with `{"completed": true}`.
    Complete,
    /// `PATCH …/complete` without a body: a toggle.
    Toggle,
}

const COMPLETIONS: [Completion; 4] = [
    Completion::Put,
    Completion::Patch,
    Completion::Complete,
    Completion::Toggle,
];

/// Completes the open `task` one of the ways; the answer.
async fn complete(app: &TestApp, user: &TestUser, task: &Value, how: Completion) -> Value {
    let id = id_of(task);
    let answer = match how {
        Completion::Put => put(app, user, id, put_body(task, true)).await,
        Completion::Patch => patch(app, user, id, json!({"completed": true})).await,
        Completion::Complete => {
            change(
                app,
                user,
                Method::PATCH,
                &complete_path(user, id),
                Some(&json!({"completed": true})),
            )
            .await
        }
        Completion::Toggle => {
            change(app, user, Method::PATCH, &complete_path(user, id), None).await
        }
    };
    assert_eq!(answer["completed"], true, "{how:?} completes it");
    answer
}

/// Completes a recurring `task` and returns (the completed task, its next occurrence).
async fn complete_and_follow(app: &TestApp, user: &TestUser, task: &Value) -> (Value, Value) {
    let done = complete(app, user, task, Completion::Complete).await;
    let next_id = done["next_task_id"]
        .as_str()
        .unwrap_or_else(|| panic!("completing {task} names its next occurrence: {done}"));
    let next = read_task(app, user, next_id).await;
    (done, next)
}

// ---------------------------------------------------------------------------------------
// The new fields: defaults, values, PUT and PATCH.
// ---------------------------------------------------------------------------------------

on_both_databases! {
    async fn a_task_written_by_an_old_client_has_the_defaults_and_only_added_fields(app: TestApp) {
        let alice = app.signup("alice").await;
        let bare = app.create_task(&alice, json!({"title": "Buy milk"})).await;
        let old = app
            .create_task(
                &alice,
                json!({"title": "Call mom", "description": "Sunday", "completed": true}),
            )
            .await;
        for (task, title, description, completed) in [
            (&bare, "Buy milk", Value::Null, false),
            (&old, "Call mom", json!("Sunday"), true),
        ] {
            assert_eq!(keys(task), TASK_FIELDS, "every field, old and new: {task}");
            assert_eq!(task["title"], title);
            assert_eq!(task["description"], description);
            assert_eq!(task["completed"], completed);
            assert_eq!(task["user_id"], alice.id.as_str());
            assert_eq!(task["priority"], "medium");
            assert_eq!(task["tags"], json!([]));
            assert_eq!(task["due_at"], Value::Null);
            assert_eq!(task["remind_at"], Value::Null);
            assert_eq!(task["recurrence"], Value::Null);
            assert_eq!(task["next_task_id"], Value::Null);
            assert_eq!(&read_task(&app, &alice, id_of(task)).await, task);
        }
        let listed = all_tasks(&app, &alice).await;
        assert!(listed.contains(&bare) && listed.contains(&old), "{listed:?}");

        // An old client's PATCH leaves the fields it does not know alone…
        let planned = app
            .create_task(
                &alice,
                json!({
                    "title": "Planned",
                    "priority": "urgent",
                    "tags": ["Work"],
                    "due_at": "2026-06-01T09:00:00.000Z",
                    "remind_at": "2026-06-01T08:00:00.000Z",
                    "recurrence": {"frequency": "weekly"},
                }),
            )
            .await;
        let patched = patch(&app, &alice, id_of(&planned), json!({"title": "Renamed"})).await;
        let mut expected = planned.clone();
        expected["title"] = json!("Renamed");
        expected["updated_at"] = patched["updated_at"].clone();
        assert_eq!(patched, expected, "PATCH of an old field alone");
        // …and its PUT, a full replacement, gives them their defaults.
        let replaced = put(
            &app,
            &alice,
            id_of(&planned),
            json!({"title": "Replaced", "description": null, "completed": false}),
        )
        .await;
        assert_eq!(keys(&replaced), TASK_FIELDS);
        assert_eq!(replaced["priority"], "medium");
        assert_eq!(replaced["tags"], json!([]));
        assert_eq!(replaced["due_at"], Value::Null);
        assert_eq!(replaced["remind_at"], Value::Null);
        assert_eq!(replaced["recurrence"], Value::Null);
        assert_eq!(replaced["next_task_id"], Value::Null);
        assert_eq!(read_task(&app, &alice, id_of(&planned)).await, replaced);
    }

    async fn every_new_field_is_stored_as_given_on_create(app: TestApp) {
        let alice = app.signup("alice").await;
        for priority in ["low", "medium", "high", "urgent"] {
            let task = app
                .create_task(&alice, json!({"title": priority, "priority": priority}))
                .await;
            assert_eq!(task["priority"], priority);
            assert_eq!(read_task(&app, &alice, id_of(&task)).await["priority"], priority);
        }
        let twenty: Vec<String> = (0..20).map(|n| format!("tag {n:02}")).collect();
        let tag_cases: Vec<(Value, Value, &str)> = vec![
            (json!([]), json!([]), "no tags"),
            (json!(["zeta", "Alpha", "mid"]), json!(["zeta", "Alpha", "mid"]), "kept in the order given"),
            (json!(["  Work \t", "\u{200B}home\u{FEFF}"]), json!(["Work", "home"]), "trimmed as a title is"),
            (json!(["two words"]), json!(["two words"]), "a space inside is kept"),
            (json!(["é".repeat(32)]), json!(["é".repeat(32)]), "32 characters (64 bytes)"),
            (json!(twenty), json!(twenty), "20 tags"),
            (json!(["Straße", "Strasse-2"]), json!(["Straße", "Strasse-2"]), "different folded keys"),
        ];
        for (tags, expected, why) in tag_cases {
            let task = app.create_task(&alice, json!({"title": why, "tags": tags})).await;
            assert_eq!(task["tags"], expected, "{why}");
            assert_eq!(read_task(&app, &alice, id_of(&task)).await["tags"], expected, "{why}");
        }
        let time_cases = [
            ("2026-05-01T10:00:00Z", "2026-05-01T10:00:00.000Z", "Z without a fraction"),
            ("2026-05-01T12:00:00+02:00", "2026-05-01T10:00:00.000Z", "+02:00"),
            ("2026-05-01T04:30:00-05:30", "2026-05-01T10:00:00.000Z", "-05:30"),
            ("2026-05-01T10:00:00.5Z", "2026-05-01T10:00:00.500Z", "tenths"),
            ("2026-05-01T10:00:00.123456789Z", "2026-05-01T10:00:00.123Z", "nanoseconds dropped"),
            ("2026-05-01T10:00:00.999999+00:00", "2026-05-01T10:00:00.999Z", "finer digits dropped, not rounded"),
            ("2026-12-31T23:30:00-01:00", "2027-01-01T00:30:00.000Z", "into the next year in UTC"),
        ];
        for (given, expected, why) in time_cases {
            let task = app
                .create_task(&alice, json!({"title": why, "due_at": given, "remind_at": given}))
                .await;
            assert_eq!(task["due_at"], expected, "due_at {given} ({why})");
            assert_eq!(task["remind_at"], expected, "remind_at {given} ({why})");
            assert_eq!(read_task(&app, &alice, id_of(&task)).await, task, "{why}");
        }
        let recurrence_cases = [
            (
                json!({"frequency": "daily"}),
                json!({"frequency": "daily", "interval": 1, "timezone": "UTC", "until": null}),
            ),
            (
                json!({"frequency": "weekly", "interval": 365, "timezone": "Europe/Berlin"}),
                json!({"frequency": "weekly", "interval": 365, "timezone": "Europe/Berlin", "until": null}),
            ),
            (
                json!({"frequency": "monthly", "interval": 1, "timezone": "America/New_York", "until": "2027-12-31T23:00:00+00:00"}),
                json!({"frequency": "monthly", "interval": 1, "timezone": "America/New_York", "until": "2027-12-31T23:00:00.000Z"}),
            ),
            (
                json!({"frequency": "yearly", "timezone": "UTC", "until": null}),
                json!({"frequency": "yearly", "interval": 1, "timezone": "UTC", "until": null}),
            ),
        ];
        for (given, expected) in recurrence_cases {
            let task = app
                .create_task(
                    &alice,
                    json!({"title": "recurring", "due_at": "2026-06-01T09:00:00Z", "recurrence": given}),
                )
                .await;
            assert_eq!(task["recurrence"], expected, "recurrence {given}");
            assert_eq!(task["next_task_id"], Value::Null);
            assert_eq!(read_task(&app, &alice, id_of(&task)).await["recurrence"], expected);
        }
        // Every nullable field may be given as null.
        let nulls = app
            .create_task(
                &alice,
                json!({"title": "nulls", "description": null, "due_at": null, "remind_at": null, "recurrence": null}),
            )
            .await;
        assert_eq!(nulls["due_at"], Value::Null);
        assert_eq!(nulls["recurrence"], Value::Null);
    }

    async fn put_replaces_every_new_field_and_one_left_out_takes_its_default(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app.create_task(&alice, json!({"title": "Report"})).await;
        let id = id_of(&task);
        let full = json!({
            "title": "Report",
            "description": "Q3",
            "completed": false,
            "priority": "high",
            "tags": ["Work", "reports"],
            "due_at": "2026-09-30T17:00:00+02:00",
            "remind_at": "2026-09-30T14:00:00Z",
            "recurrence": {"frequency": "monthly", "timezone": "Europe/Berlin"},
        });
        let replaced = put(&app, &alice, id, full.clone()).await;
        assert_eq!(replaced["priority"], "high");
        assert_eq!(replaced["tags"], json!(["Work", "reports"]));
        assert_eq!(replaced["due_at"], "2026-09-30T15:00:00.000Z");
        assert_eq!(replaced["remind_at"], "2026-09-30T14:00:00.000Z");
        assert_eq!(
            replaced["recurrence"],
            json!({"frequency": "monthly", "interval": 1, "timezone": "Europe/Berlin", "until": null})
        );
        assert_eq!(read_task(&app, &alice, id).await, replaced);

        // Each one left out takes its default; the others stay as given.
        let defaults = [
            ("priority", json!("medium")),
            ("tags", json!([])),
            ("remind_at", Value::Null),
            ("recurrence", Value::Null),
        ];
        for (field, default) in defaults {
            put(&app, &alice, id, full.clone()).await;
            let mut body = full.clone();
            body.as_object_mut().unwrap().remove(field);
            let answer = put(&app, &alice, id, body).await;
            assert_eq!(answer[field], default, "PUT without {field}");
            let mut expected = replaced.clone();
            expected[field] = default.clone();
            expected["updated_at"] = answer["updated_at"].clone();
            assert_eq!(answer, expected, "PUT without {field} changes {field} alone");
        }
        // due_at may be left out only with the recurrence (a recurrence needs a due date).
        let mut body = full.clone();
        body.as_object_mut().unwrap().remove("due_at");
        body.as_object_mut().unwrap().remove("recurrence");
        let answer = put(&app, &alice, id, body).await;
        assert_eq!(answer["due_at"], Value::Null);
        assert_eq!(answer["recurrence"], Value::Null);
        assert_eq!(answer["remind_at"], "2026-09-30T14:00:00.000Z");
    }

    async fn patch_changes_only_the_new_fields_it_names_and_null_clears_the_nullable_ones(app: TestApp) {
        let alice = app.signup("alice").await;
        let base = json!({
            "title": "Report",
            "description": "Q3",
            "priority": "high",
            "tags": ["Work", "reports"],
            "due_at": "2026-09-30T15:00:00.000Z",
            "remind_at": "2026-09-30T14:00:00.000Z",
        });
        let cases = [
            (json!({"priority": "low"}), json!({"priority": "low"})),
            (json!({"priority": "urgent"}), json!({"priority": "urgent"})),
            (json!({"tags": ["Home"]}), json!({"tags": ["Home"]})),
            (json!({"tags": []}), json!({"tags": []})),
            (json!({"tags": [" a ", "b"]}), json!({"tags": ["a", "b"]})),
            (json!({"due_at": "2026-10-01T08:00:00+02:00"}), json!({"due_at": "2026-10-01T06:00:00.000Z"})),
            (json!({"due_at": null}), json!({"due_at": null})),
            (json!({"remind_at": "2026-09-29T10:00:00.1239Z"}), json!({"remind_at": "2026-09-29T10:00:00.123Z"})),
            (json!({"remind_at": null}), json!({"remind_at": null})),
            (
                json!({"recurrence": {"frequency": "daily", "interval": 2}}),
                json!({"recurrence": {"frequency": "daily", "interval": 2, "timezone": "UTC", "until": null}}),
            ),
            (json!({"recurrence": null}), json!({"recurrence": null})),
            (
                json!({"priority": "low", "tags": ["x"], "due_at": null, "remind_at": null}),
                json!({"priority": "low", "tags": ["x"], "due_at": null, "remind_at": null}),
            ),
        ];
        for (body, changed) in cases {
            let task = app.create_task(&alice, base.clone()).await;
            let answer = patch(&app, &alice, id_of(&task), body.clone()).await;
            let mut expected = merged(&task, &changed);
            expected["updated_at"] = answer["updated_at"].clone();
            assert_eq!(answer, expected, "PATCH {body} changes only what it names");
            assert!(timestamp(&answer["updated_at"]) > timestamp(&task["updated_at"]));
            assert_eq!(read_task(&app, &alice, id_of(&task)).await, answer, "PATCH {body}");
        }
        // A recurrence and its due date may be set, or cleared, together.
        let plain = app.create_task(&alice, json!({"title": "plain"})).await;
        let recurring = patch(
            &app,
            &alice,
            id_of(&plain),
            json!({"due_at": "2026-06-01T09:00:00Z", "recurrence": {"frequency": "weekly"}}),
        )
        .await;
        assert_eq!(recurring["recurrence"]["frequency"], "weekly");
        let cleared = patch(&app, &alice, id_of(&plain), json!({"due_at": null, "recurrence": null})).await;
        assert_eq!(cleared["due_at"], Value::Null);
        assert_eq!(cleared["recurrence"], Value::Null);
    }
}

// ---------------------------------------------------------------------------------------
// Bad values: a 400 naming each bad field, and nothing written.
// ---------------------------------------------------------------------------------------

/// Bad values of the new fields, refused by create, PUT and PATCH alike: (the fields added to
/// a valid body, the fields the 400 must name, why). The PATCH target has no due date.
fn bad_new_fields() -> Vec<(Value, Vec<&'static str>, String)> {
    let due = "2026-06-01T09:00:00Z";
    let recurrence = |value: Value| json!({"due_at": due, "recurrence": value});
    let twenty_one: Vec<String> = (0..21).map(|n| format!("tag{n}")).collect();
    let cases: Vec<(Value, Vec<&'static str>, &str)> = vec![
        (
            json!({"priority": "extreme"}),
            vec!["priority"],
            "an unknown priority",
        ),
        (
            json!({"priority": 1}),
            vec!["priority"],
            "a number as priority",
        ),
        (
            json!({"priority": ""}),
            vec!["priority"],
            "an empty priority",
        ),
        (
            json!({"priority": ["high"]}),
            vec!["priority"],
            "an array as priority",
        ),
        (
            json!({"tags": "work"}),
            vec!["tags"],
            "tags that are a string",
        ),
        (
            json!({"tags": {"work": true}}),
            vec!["tags"],
            "tags that are an object",
        ),
        (json!({"tags": twenty_one}), vec!["tags"], "21 tags"),
        (
            json!({"tags": ["   "]}),
            vec!["tags"],
            "a tag of spaces (empty once trimmed)",
        ),
        (json!({"tags": [""]}), vec!["tags"], "an empty tag"),
        (
            json!({"tags": ["\u{200B}\u{FEFF}"]}),
            vec!["tags"],
            "a tag of invisible characters",
        ),
        (
            json!({"tags": ["x".repeat(33)]}),
            vec!["tags"],
            "a tag of 33 characters",
        ),
        (
            json!({"tags": ["é".repeat(33)]}),
            vec!["tags"],
            "a tag of 33 two-byte characters",
        ),
        (
            json!({"tags": ["a\u{0007}b"]}),
            vec!["tags"],
            "a control character in a tag",
        ),
        (
            json!({"tags": ["a\tb"]}),
            vec!["tags"],
            "a tab inside a tag",
        ),
        (
            json!({"tags": ["a\u{0000}b"]}),
            vec!["tags"],
            "a NUL inside a tag",
        ),
        (
            json!({"tags": ["Work", "work"]}),
            vec!["tags"],
            "two tags equal ignoring case",
        ),
        (
            json!({"tags": ["Straße", "STRASSE"]}),
            vec!["tags"],
            "two tags with one folded key",
        ),
        (
            json!({"tags": [" home", "home\t"]}),
            vec!["tags"],
            "two tags equal once trimmed",
        ),
        (
            json!({"tags": ["work", 7]}),
            vec!["tags"],
            "a number among the tags",
        ),
        (json!({"tags": [null]}), vec!["tags"], "a null tag"),
        (
            json!({"due_at": "2026-01-01"}),
            vec!["due_at"],
            "a due date without a time",
        ),
        (
            json!({"due_at": "2026-01-01T10:00:00"}),
            vec!["due_at"],
            "a due date without an offset",
        ),
        (
            json!({"due_at": "2026-01-01 10:00:00"}),
            vec!["due_at"],
            "a due date without T or offset",
        ),
        (
            json!({"due_at": 123}),
            vec!["due_at"],
            "a number as due date",
        ),
        (
            json!({"due_at": "tomorrow"}),
            vec!["due_at"],
            "a word as due date",
        ),
        (
            json!({"due_at": "2026-02-30T10:00:00Z"}),
            vec!["due_at"],
            "30 February",
        ),
        (json!({"due_at": ""}), vec!["due_at"], "an empty due date"),
        (
            json!({"remind_at": "2026-01-01T10:00:00"}),
            vec!["remind_at"],
            "a reminder without an offset",
        ),
        (
            json!({"remind_at": "2026-01-01"}),
            vec!["remind_at"],
            "a reminder without a time",
        ),
        (
            json!({"remind_at": true}),
            vec!["remind_at"],
            "a boolean as reminder",
        ),
        (
            json!({"recurrence": {"frequency": "daily"}}),
            vec!["recurrence"],
            "a recurrence without a due date",
        ),
        (
            json!({"due_at": null, "recurrence": {"frequency": "daily"}}),
            vec!["recurrence"],
            "a recurrence with a null due date",
        ),
        (
            recurrence(json!("weekly")),
            vec!["recurrence"],
            "a recurrence that is a string",
        ),
        (
            recurrence(json!(["weekly"])),
            vec!["recurrence"],
            "a recurrence that is an array",
        ),
        (
            recurrence(json!({})),
            vec!["recurrence.frequency"],
            "a recurrence without frequency",
        ),
        (
            recurrence(json!({"interval": 2})),
            vec!["recurrence.frequency"],
            "an interval without frequency",
        ),
        (
            recurrence(json!({"frequency": "hourly"})),
            vec!["recurrence.frequency"],
            "an hourly recurrence",
        ),
        (
            recurrence(json!({"frequency": null})),
            vec!["recurrence.frequency"],
            "a null frequency",
        ),
        (
            recurrence(json!({"frequency": 7})),
            vec!["recurrence.frequency"],
            "a number as frequency",
        ),
        (
            recurrence(json!({"frequency": "daily", "interval": 0})),
            vec!["recurrence.interval"],
            "interval 0",
        ),
        (
            recurrence(json!({"frequency": "daily", "interval": 366})),
            vec!["recurrence.interval"],
            "interval 366",
        ),
        (
            recurrence(json!({"frequency": "daily", "interval": -1})),
            vec!["recurrence.interval"],
            "interval -1",
        ),
        (
            recurrence(json!({"frequency": "daily", "interval": 1.5})),
            vec!["recurrence.interval"],
            "interval 1.5",
        ),
        (
            recurrence(json!({"frequency": "daily", "interval": "2"})),
            vec!["recurrence.interval"],
            "interval \"2\"",
        ),
        (
            recurrence(json!({"frequency": "daily", "timezone": "Mars/Base"})),
            vec!["recurrence.timezone"],
            "an unknown time zone",
        ),
        (
            recurrence(json!({"frequency": "daily", "timezone": ""})),
            vec!["recurrence.timezone"],
            "an empty time zone",
        ),
        (
            recurrence(json!({"frequency": "daily", "timezone": 1})),
            vec!["recurrence.timezone"],
            "a number as time zone",
        ),
        (
            recurrence(json!({"frequency": "daily", "until": "2027-01-01"})),
            vec!["recurrence.until"],
            "an until without a time",
        ),
        (
            recurrence(json!({"frequency": "daily", "until": "2027-01-01T00:00:00"})),
            vec!["recurrence.until"],
            "an until without an offset",
        ),
        (
            recurrence(json!({"frequency": "daily", "byday": "MO"})),
            vec!["recurrence.byday"],
            "an unknown field inside recurrence",
        ),
        (
            recurrence(json!({"frequency": "hourly", "interval": 0, "timezone": "Mars/Base"})),
            vec![
                "recurrence.frequency",
                "recurrence.interval",
                "recurrence.timezone",
            ],
            "three bad fields inside recurrence at once",
        ),
        (
            json!({"next_task_id": uuid::Uuid::now_v7().to_string()}),
            vec!["next_task_id"],
            "next_task_id, which the service sets",
        ),
        (
            json!({"priority": "extreme", "tags": "x", "due_at": 123, "remind_at": "soon"}),
            vec!["due_at", "priority", "remind_at", "tags"],
            "four bad fields at once",
        ),
    ];
    cases
        .into_iter()
        .map(|(body, fields, why)| (body, fields, why.to_owned()))
        .collect()
}

on_both_databases! {
    async fn bad_values_of_the_new_fields_are_400s_naming_them_on_create_put_and_patch(app: TestApp) {
        let alice = app.signup("alice").await;
        let target = app
            .create_task(&alice, json!({"title": "Target", "priority": "high", "tags": ["keep"]}))
            .await;
        let id = id_of(&target);
        let events_before = all_events(&app, &alice).await.len();
        let routes = [
            (Method::POST, TestApp::tasks_path(&alice), json!({"title": "Refused"})),
            (
                Method::PUT,
                TestApp::task_path(&alice, id),
                json!({"title": "Refused", "description": null, "completed": false}),
            ),
            (Method::PATCH, TestApp::task_path(&alice, id), json!({})),
        ];
        for (method, path, base) in &routes {
            for (extra, fields, why) in bad_new_fields() {
                let body = merged(base, &extra);
                let response = send(&app, &alice, method.clone(), path, Some(&body)).await;
                assert_refused(response, &fields, &format!("{method} with {why}: {body}")).await;
            }
        }
        // PATCH only: null for a field that is not nullable.
        for (body, field) in [(json!({"priority": null}), "priority"), (json!({"tags": null}), "tags")] {
            let response = send(&app, &alice, Method::PATCH, &TestApp::task_path(&alice, id), Some(&body)).await;
            assert_refused(response, &[field], &format!("PATCH {body}")).await;
        }
        // Nothing was written: the task, the count, the event log.
        assert_eq!(read_task(&app, &alice, id).await, target, "the refused writes changed the task");
        assert_eq!(task_count(&app, &alice).await, 1, "a refused create wrote a task");
        assert_eq!(all_events(&app, &alice).await.len(), events_before, "a refused change wrote an event");
    }

    async fn a_change_is_checked_against_the_task_as_it_will_be(app: TestApp) {
        let alice = app.signup("alice").await;
        let recurring = app
            .create_task(
                &alice,
                json!({
                    "title": "Water plants",
                    "due_at": "2026-06-01T09:00:00Z",
                    "remind_at": "2026-06-01T08:00:00Z",
                    "recurrence": {"frequency": "daily", "timezone": "Europe/Berlin"},
                }),
            )
            .await;
        let plain = app.create_task(&alice, json!({"title": "No due date"})).await;
        let recurring_path = TestApp::task_path(&alice, id_of(&recurring));
        let plain_path = TestApp::task_path(&alice, id_of(&plain));
        let cases = [
            (Method::PATCH, &recurring_path, json!({"due_at": null}), "clearing the due date of a recurring task"),
            (
                Method::PATCH,
                &recurring_path,
                json!({"due_at": null, "remind_at": null, "priority": "low"}),
                "clearing the due date with other changes",
            ),
            (
                Method::PUT,
                &recurring_path,
                json!({"title": "Water plants", "description": null, "completed": false,
                       "recurrence": {"frequency": "daily"}}),
                "a PUT keeping the recurrence without a due date",
            ),
            (
                Method::PATCH,
                &plain_path,
                json!({"recurrence": {"frequency": "weekly"}}),
                "a recurrence for a task without a due date",
            ),
            (
                Method::PATCH,
                &plain_path,
                json!({"recurrence": {"frequency": "weekly"}, "due_at": null}),
                "a recurrence with the due date cleared",
            ),
        ];
        for (method, path, body, why) in cases {
            let response = send(&app, &alice, method.clone(), path, Some(&body)).await;
            assert_refused(response, &["recurrence"], &format!("{why}: {method} {body}")).await;
        }
        assert_eq!(read_task(&app, &alice, id_of(&recurring)).await, recurring, "nothing written");
        assert_eq!(read_task(&app, &alice, id_of(&plain)).await, plain, "nothing written");

        // Clearing both in one request is fine, and so is giving both.
        let cleared = patch(&app, &alice, id_of(&recurring), json!({"due_at": null, "recurrence": null})).await;
        assert_eq!(cleared["due_at"], Value::Null);
        assert_eq!(cleared["recurrence"], Value::Null);
        assert_eq!(cleared["remind_at"], "2026-06-01T08:00:00.000Z");
        let given = patch(
            &app,
            &alice,
            id_of(&plain),
            json!({"recurrence": {"frequency": "weekly"}, "due_at": "2026-06-01T09:00:00Z"}),
        )
        .await;
        assert_eq!(given["recurrence"]["frequency"], "weekly");
    }
}

// ---------------------------------------------------------------------------------------
// Recurring tasks
// ---------------------------------------------------------------------------------------

on_both_databases! {
    async fn the_next_occurrence_keeps_the_wall_clock_time_in_its_time_zone(app: TestApp) {
        let alice = app.signup("alice").await;
        // (recurrence, due_at, the next occurrence's due_at, why)
        let cases = [
            (
                json!({"frequency": "daily", "timezone": "Europe/Berlin"}),
                "2026-03-28T08:00:00.000Z",
                "2026-03-29T07:00:00.000Z",
                "09:00 in Berlin across the start of summer time (23 hours later)",
            ),
            (
                json!({"frequency": "daily", "timezone": "Europe/Berlin"}),
                "2026-10-24T07:00:00.000Z",
                "2026-10-25T08:00:00.000Z",
                "09:00 in Berlin across the end of summer time (25 hours later)",
            ),
            (
                json!({"frequency": "daily", "timezone": "Europe/Berlin"}),
                "2026-03-28T01:30:00.000Z",
                "2026-03-29T01:30:00.000Z",
                "02:30 in Berlin on the day it does not exist moves forward by the gap (03:30 CEST)",
            ),
            (
                json!({"frequency": "daily", "timezone": "Europe/Berlin"}),
                "2026-10-24T00:30:00.000Z",
                "2026-10-25T00:30:00.000Z",
                "02:30 in Berlin on the day it happens twice takes the earlier (CEST)",
            ),
            (
                json!({"frequency": "weekly", "timezone": "America/New_York"}),
                "2026-03-02T14:00:00.000Z",
                "2026-03-09T13:00:00.000Z",
                "09:00 in New York across the start of daylight saving time",
            ),
            (
                json!({"frequency": "monthly", "timezone": "Europe/Berlin"}),
                "2026-03-15T08:00:00.000Z",
                "2026-04-15T07:00:00.000Z",
                "monthly at 09:00 in Berlin across a change of offset",
            ),
            (
                json!({"frequency": "daily", "timezone": "UTC"}),
                "2026-03-28T08:00:00.000Z",
                "2026-03-29T08:00:00.000Z",
                "daily in UTC: 24 hours",
            ),
            (
                json!({"frequency": "daily"}),
                "2026-12-31T23:00:00.000Z",
                "2027-01-01T23:00:00.000Z",
                "the default time zone is UTC, across a year end",
            ),
            (
                json!({"frequency": "monthly", "timezone": "UTC"}),
                "2027-01-31T10:00:00.000Z",
                "2027-02-28T10:00:00.000Z",
                "31 January + 1 month is 28 February",
            ),
            (
                json!({"frequency": "monthly", "timezone": "UTC"}),
                "2028-01-31T10:00:00.000Z",
                "2028-02-29T10:00:00.000Z",
                "31 January + 1 month is 29 February in a leap year",
            ),
            (
                json!({"frequency": "monthly", "timezone": "UTC"}),
                "2026-08-31T10:00:00.000Z",
                "2026-09-30T10:00:00.000Z",
                "31 August + 1 month is 30 September",
            ),
            (
                json!({"frequency": "yearly", "timezone": "UTC"}),
                "2028-02-29T10:00:00.000Z",
                "2029-02-28T10:00:00.000Z",
                "29 February + 1 year is 28 February",
            ),
            (
                json!({"frequency": "yearly", "interval": 4, "timezone": "UTC"}),
                "2028-02-29T10:00:00.000Z",
                "2032-02-29T10:00:00.000Z",
                "29 February + 4 years is 29 February",
            ),
            (
                json!({"frequency": "weekly", "interval": 2, "timezone": "UTC"}),
                "2026-01-05T09:00:00.000Z",
                "2026-01-19T09:00:00.000Z",
                "every second week",
            ),
            (
                json!({"frequency": "daily", "interval": 365, "timezone": "UTC"}),
                "2026-01-01T00:00:00.000Z",
                "2027-01-01T00:00:00.000Z",
                "every 365 days",
            ),
            (
                json!({"frequency": "monthly", "interval": 12, "timezone": "Europe/Berlin"}),
                "2026-01-15T16:45:30.250Z",
                "2027-01-15T16:45:30.250Z",
                "every 12 months keeps the milliseconds",
            ),
        ];
        for (recurrence, due_at, expected, why) in cases {
            let task = app
                .create_task(
                    &alice,
                    json!({"title": why, "due_at": due_at, "recurrence": recurrence}),
                )
                .await;
            let (done, next) = complete_and_follow(&app, &alice, &task).await;
            assert_eq!(next["due_at"], expected, "{why}: from {due_at}");
            assert_eq!(next["recurrence"], task["recurrence"], "{why}");
            assert_eq!(next["completed"], false, "{why}");
            assert_eq!(done["due_at"], due_at, "{why}: the completed task keeps its due date");
        }
    }

    async fn a_monthly_series_that_reached_the_28th_goes_on_from_the_28th(app: TestApp) {
        let alice = app.signup("alice").await;
        let first = app
            .create_task(
                &alice,
                json!({"title": "Rent", "due_at": "2027-01-31T10:00:00Z", "recurrence": {"frequency": "monthly"}}),
            )
            .await;
        let (_, second) = complete_and_follow(&app, &alice, &first).await;
        assert_eq!(second["due_at"], "2027-02-28T10:00:00.000Z");
        let (_, third) = complete_and_follow(&app, &alice, &second).await;
        assert_eq!(third["due_at"], "2027-03-28T10:00:00.000Z", "computed from the one before");
        let (_, fourth) = complete_and_follow(&app, &alice, &third).await;
        assert_eq!(fourth["due_at"], "2027-04-28T10:00:00.000Z");
        assert_eq!(task_count(&app, &alice).await, 4);
    }

    async fn the_next_occurrence_copies_the_task_and_moves_remind_at_by_the_same_offset(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app
            .create_task(
                &alice,
                json!({
                    "title": "Stand-up",
                    "description": "room 4",
                    "priority": "urgent",
                    "tags": ["Work", "meetings"],
                    "due_at": "2026-03-28T08:00:00Z",
                    "remind_at": "2026-03-28T07:30:00Z",
                    "recurrence": {"frequency": "daily", "timezone": "Europe/Berlin",
                                   "until": "2026-12-31T23:00:00Z"},
                }),
            )
            .await;
        let done = complete(&app, &alice, &task, Completion::Patch).await;
        let next_id = done["next_task_id"].as_str().expect("the completion names the next occurrence");
        assert_ne!(next_id, id_of(&task));
        let (next, etag) = read_with_etag(&app, &alice, next_id).await;
        assert_eq!(etag, "\"1\"", "the occurrence is a new task");
        assert_eq!(next["user_id"], alice.id.as_str());
        for field in ["title", "description", "priority", "tags", "recurrence"] {
            assert_eq!(next[field], task[field], "the occurrence has the same {field}");
        }
        assert_eq!(next["completed"], false);
        assert_eq!(next["next_task_id"], Value::Null);
        // Across the change to summer time: 09:00 → 09:00, 23 hours later, and the reminder
        // 30 minutes before it still.
        assert_eq!(next["due_at"], "2026-03-29T07:00:00.000Z");
        assert_eq!(next["remind_at"], "2026-03-29T06:30:00.000Z");
        assert_eq!(timestamp(&next["created_at"]), timestamp(&next["updated_at"]));
        // The completed task names it, and is otherwise what a completion makes.
        let stored = read_task(&app, &alice, id_of(&task)).await;
        assert_eq!(stored, done);
        assert_eq!(stored["completed"], true);
        assert_eq!(stored["due_at"], task["due_at"]);
        assert_eq!(stored["recurrence"], task["recurrence"]);
        // The occurrence is read like any other task.
        let listed = all_tasks(&app, &alice).await;
        assert!(listed.contains(&next) && listed.contains(&done), "{listed:?}");

        // A reminder after the due date keeps its (positive) offset too; no reminder stays none.
        let late = app
            .create_task(
                &alice,
                json!({"title": "late", "due_at": "2027-01-31T10:00:00Z",
                       "remind_at": "2027-01-31T12:15:00Z", "recurrence": {"frequency": "monthly"}}),
            )
            .await;
        let (_, next) = complete_and_follow(&app, &alice, &late).await;
        assert_eq!(next["due_at"], "2027-02-28T10:00:00.000Z");
        assert_eq!(next["remind_at"], "2027-02-28T12:15:00.000Z");
        let silent = app
            .create_task(
                &alice,
                json!({"title": "silent", "due_at": "2027-01-31T10:00:00Z", "recurrence": {"frequency": "weekly"}}),
            )
            .await;
        let (_, next) = complete_and_follow(&app, &alice, &silent).await;
        assert_eq!(next["remind_at"], Value::Null);
    }

    async fn completing_by_put_patch_or_the_complete_route_creates_the_next_occurrence(app: TestApp) {
        let alice = app.signup("alice").await;
        for how in COMPLETIONS {
            let task = app
                .create_task(
                    &alice,
                    json!({"title": format!("{how:?}"), "due_at": "2026-01-05T09:00:00Z",
                           "recurrence": {"frequency": "weekly"}}),
                )
                .await;
            let before = task_count(&app, &alice).await;
            let done = complete(&app, &alice, &task, how).await;
            let next_id = done["next_task_id"]
                .as_str()
                .unwrap_or_else(|| panic!("{how:?}: the answer names the next occurrence: {done}"));
            let next = read_task(&app, &alice, next_id).await;
            assert_eq!(next["title"], format!("{how:?}"));
            assert_eq!(next["due_at"], "2026-01-12T09:00:00.000Z", "{how:?}");
            assert_eq!(next["completed"], false, "{how:?}");
            assert_eq!(task_count(&app, &alice).await, before + 1, "{how:?}: one new task");
        }
    }

    async fn completing_writes_completed_then_created_for_the_occurrence(app: TestApp) {
        let alice = app.signup("alice").await;
        for how in COMPLETIONS {
            let task = app
                .create_task(
                    &alice,
                    json!({"title": format!("{how:?}"), "tags": ["t"], "due_at": "2026-01-05T09:00:00Z",
                           "recurrence": {"frequency": "daily"}}),
                )
                .await;
            let before = all_events(&app, &alice).await.len();
            let done = complete(&app, &alice, &task, how).await;
            let next = read_task(&app, &alice, done["next_task_id"].as_str().expect("a next occurrence")).await;
            let events = all_events(&app, &alice).await;
            let new = &events[before..];
            assert_eq!(
                event_types(new),
                ["todo.task.completed", "todo.task.created"],
                "{how:?}: exactly these two, in this order"
            );
            assert_eq!(new[0]["subject"], id_of(&task), "{how:?}");
            assert_eq!(new[0]["data"], done, "{how:?}: the completed task, naming its occurrence");
            assert_eq!(new[1]["subject"], id_of(&next), "{how:?}");
            assert_eq!(new[1]["data"], next, "{how:?}: the occurrence as it is read");
            assert!(
                new[0]["sequence"].as_str().unwrap() < new[1]["sequence"].as_str().unwrap(),
                "{how:?}: completed before created"
            );
        }
    }

    async fn reopening_and_completing_again_creates_no_second_occurrence(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app
            .create_task(
                &alice,
                json!({"title": "Gym", "due_at": "2026-01-05T18:00:00Z", "recurrence": {"frequency": "daily"}}),
            )
            .await;
        let done = complete(&app, &alice, &task, Completion::Complete).await;
        let next_id = done["next_task_id"].as_str().expect("an occurrence").to_owned();
        assert_eq!(task_count(&app, &alice).await, 2);
        let events_before = all_events(&app, &alice).await.len();
        for how in COMPLETIONS {
            let reopened = patch(&app, &alice, id_of(&task), json!({"completed": false})).await;
            assert_eq!(reopened["completed"], false);
            assert_eq!(reopened["next_task_id"], next_id.as_str(), "reopening keeps the link");
            let again = complete(&app, &alice, &reopened, how).await;
            assert_eq!(again["next_task_id"], next_id.as_str(), "{how:?}: set once");
            assert_eq!(task_count(&app, &alice).await, 2, "{how:?}: still one occurrence");
        }
        let events = all_events(&app, &alice).await;
        assert_eq!(
            event_types(&events[events_before..]),
            [
                "todo.task.updated", "todo.task.completed",
                "todo.task.updated", "todo.task.completed",
                "todo.task.updated", "todo.task.completed",
                "todo.task.updated", "todo.task.completed",
            ],
            "no further todo.task.created"
        );
        // Completing the already completed task again changes nothing either.
        patch(&app, &alice, id_of(&task), json!({"completed": true})).await;
        assert_eq!(task_count(&app, &alice).await, 2);
        // The occurrence is a recurring task of its own: completing it makes the third.
        let occurrence = read_task(&app, &alice, &next_id).await;
        let (_, third) = complete_and_follow(&app, &alice, &occurrence).await;
        assert_eq!(third["due_at"], "2026-01-07T18:00:00.000Z");
        assert_eq!(task_count(&app, &alice).await, 3);
    }

    async fn a_task_created_completed_or_without_recurrence_creates_nothing(app: TestApp) {
        let alice = app.signup("alice").await;
        let created_done = app
            .create_task(
                &alice,
                json!({"title": "done already", "completed": true, "due_at": "2026-01-05T09:00:00Z",
                       "recurrence": {"frequency": "daily"}}),
            )
            .await;
        assert_eq!(created_done["next_task_id"], Value::Null);
        assert_eq!(task_count(&app, &alice).await, 1);
        for how in COMPLETIONS {
            let plain = app
                .create_task(
                    &alice,
                    json!({"title": format!("plain {how:?}"), "due_at": "2026-01-05T09:00:00Z",
                           "remind_at": "2026-01-05T08:00:00Z", "priority": "high", "tags": ["x"]}),
                )
                .await;
            let before = task_count(&app, &alice).await;
            let done = complete(&app, &alice, &plain, how).await;
            assert_eq!(done["next_task_id"], Value::Null, "{how:?}");
            assert_eq!(task_count(&app, &alice).await, before, "{how:?}: no occurrence");
        }
    }

    async fn no_occurrence_is_due_after_until_or_past_9999_12_30(app: TestApp) {
        let alice = app.signup("alice").await;
        // (due_at, recurrence, the next due date or None)
        let cases = [
            (
                "2026-01-05T09:00:00.000Z",
                json!({"frequency": "weekly", "until": "2026-01-12T08:59:59.999Z"}),
                None,
                "until a millisecond before the next due date",
            ),
            (
                "2026-01-05T09:00:00.000Z",
                json!({"frequency": "weekly", "until": "2026-01-12T09:00:00.000Z"}),
                Some("2026-01-12T09:00:00.000Z"),
                "until exactly at the next due date",
            ),
            (
                "2026-01-05T09:00:00.000Z",
                json!({"frequency": "weekly", "until": "2026-01-07T00:00:00Z"}),
                None,
                "until between the two",
            ),
            (
                "2026-01-05T09:00:00.000Z",
                json!({"frequency": "daily", "until": "2026-01-01T00:00:00Z"}),
                None,
                "until before the task itself",
            ),
            (
                "9999-06-01T00:00:00.000Z",
                json!({"frequency": "yearly"}),
                None,
                "past the year 9999",
            ),
            (
                "9999-12-29T12:00:00.000Z",
                json!({"frequency": "daily"}),
                Some("9999-12-30T12:00:00.000Z"),
                "the last day the date library represents in every zone",
            ),
        ];
        for (due_at, recurrence, expected, why) in cases {
            let task = app
                .create_task(&alice, json!({"title": why, "due_at": due_at, "recurrence": recurrence}))
                .await;
            let before = task_count(&app, &alice).await;
            let events_before = all_events(&app, &alice).await.len();
            let done = complete(&app, &alice, &task, Completion::Complete).await;
            match expected {
                None => {
                    assert_eq!(done["next_task_id"], Value::Null, "{why}");
                    assert_eq!(task_count(&app, &alice).await, before, "{why}: no occurrence");
                    let events = all_events(&app, &alice).await;
                    assert_eq!(event_types(&events[events_before..]), ["todo.task.completed"], "{why}");
                }
                Some(expected) => {
                    let next_id = done["next_task_id"].as_str().unwrap_or_else(|| {
                        panic!("{why}: a next occurrence due at {expected} is expected: {done}")
                    });
                    let next = read_task(&app, &alice, next_id).await;
                    assert_eq!(next["due_at"], expected, "{why}");
                    assert_eq!(next["recurrence"], task["recurrence"], "{why}: until is kept");
                }
            }
        }
        // A daily series with an until ends by itself.
        let mut task = app
            .create_task(
                &alice,
                json!({"title": "three days", "due_at": "2026-02-01T09:00:00Z",
                       "recurrence": {"frequency": "daily", "until": "2026-02-03T09:00:00Z"}}),
            )
            .await;
        let mut due_dates = vec![task["due_at"].as_str().unwrap().to_owned()];
        loop {
            let done = complete(&app, &alice, &task, Completion::Complete).await;
            let Some(next_id) = done["next_task_id"].as_str() else { break };
            task = read_task(&app, &alice, next_id).await;
            due_dates.push(task["due_at"].as_str().unwrap().to_owned());
            assert!(due_dates.len() <= 3, "the series went past until: {due_dates:?}");
        }
        assert_eq!(
            due_dates,
            ["2026-02-01T09:00:00.000Z", "2026-02-02T09:00:00.000Z", "2026-02-03T09:00:00.000Z"]
        );
    }
}

// ---------------------------------------------------------------------------------------
// Listing: the new filters and sorts, alone and combined.
// ---------------------------------------------------------------------------------------

/// A seeded task: (title, description, completed, priority, tags, due_at).
type Seed = (
    &'static str,
    Option<&'static str>,
    bool,
    &'static str,
    &'static [&'static str],
    Option<&'static str>,
);

/// Tasks with every priority, overlapping tags in several spellings, equal due dates, no due
/// dates, past (overdue) and future ones, open and completed.
const SEEDS: [Seed; 14] = [
    (
        "Write report",
        Some("quarterly numbers"),
        false,
        "high",
        &["Work", "reports"],
        Some("2020-03-01T09:00:00.000Z"),
    ),
    (
        "Review report",
        None,
        true,
        "urgent",
        &["work"],
        Some("2020-03-01T09:00:00.000Z"),
    ),
    (
        "Pay rent",
        Some("bank transfer"),
        false,
        "urgent",
        &["home", "money"],
        Some("2020-04-01T00:00:00.000Z"),
    ),
    (
        "Buy milk",
        Some("2 litres"),
        false,
        "low",
        &["Home", "groceries"],
        None,
    ),
    (
        "Plan trip",
        None,
        false,
        "medium",
        &[],
        Some("2099-06-01T10:00:00.000Z"),
    ),
    (
        "Call plumber",
        Some("kitchen sink"),
        true,
        "high",
        &["HOME"],
        Some("2099-06-01T10:00:00.000Z"),
    ),
    (
        "Team meeting",
        Some("report on progress"),
        false,
        "medium",
        &["work", "meetings"],
        Some("2099-01-15T08:30:00.000Z"),
    ),
    (
        "Dentist",
        None,
        false,
        "high",
        &["health"],
        Some("2099-01-15T08:30:00.000Z"),
    ),
    ("Gym", None, true, "low", &["health", "Straße"], None),
    (
        "Tax return",
        Some("report income"),
        false,
        "urgent",
        &["money", "WORK"],
        Some("2099-04-30T23:59:59.999Z"),
    ),
    ("Read book", None, false, "low", &[], None),
    (
        "Fix bike",
        Some("front brake"),
        true,
        "medium",
        &["STRASSE"],
        Some("2020-05-05T05:05:05.005Z"),
    ),
    (
        "Water plants",
        None,
        false,
        "medium",
        &["home"],
        Some("2099-04-30T23:59:59.999Z"),
    ),
    (
        "Old notes",
        Some("nothing due"),
        false,
        "urgent",
        &["work"],
        None,
    ),
];

async fn seed(app: &TestApp, user: &TestUser) -> Vec<Value> {
    let mut tasks = Vec::new();
    for (title, description, completed, priority, tags, due_at) in SEEDS {
        tasks.push(
            app.create_task(
                user,
                json!({
                    "title": title,
                    "description": description,
                    "completed": completed,
                    "priority": priority,
                    "tags": tags,
                    "due_at": due_at,
                }),
            )
            .await,
        );
    }
    tasks
}

/// The folded key of the seeds' tags (ASCII and `ß` only).
fn fold(tag: &str) -> String {
    tag.trim().to_lowercase().replace('ß', "ss")
}

fn has_tag(task: &Value, tag: &str) -> bool {
    task["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| fold(t.as_str().unwrap()) == fold(tag))
}

fn due(task: &Value) -> Option<DateTime<Utc>> {
    task["due_at"].as_str().map(parse_time)
}

fn rank(task: &Value) -> u8 {
    match task["priority"].as_str().unwrap() {
        "low" => 0,
        "medium" => 1,
        "high" => 2,
        "urgent" => 3,
        other => panic!("no priority {other}"),
    }
}

fn contains_text(task: &Value, term: &str) -> bool {
    ["title", "description"].iter().any(|field| {
        task[*field]
            .as_str()
            .is_some_and(|text| text.to_lowercase().contains(term))
    })
}

type Predicate = Box<dyn Fn(&Value) -> bool>;

/// One filter of the listing: its query, the parameter names it uses, and what it keeps.
struct Atom {
    query: &'static str,
    params: &'static [&'static str],
    keeps: Predicate,
}

fn atom(
    query: &'static str,
    params: &'static [&'static str],
    keeps: impl Fn(&Value) -> bool + 'static,
) -> Atom {
    Atom {
        query,
        params,
        keeps: Box::new(keeps),
    }
}

fn due_at_or_after(at: &'static str) -> impl Fn(&Value) -> bool {
    move |task| due(task).is_some_and(|d| d >= parse_time(at))
}

fn due_before(at: &'static str) -> impl Fn(&Value) -> bool {
    move |task| due(task).is_some_and(|d| d < parse_time(at))
}

fn is_overdue(task: &Value) -> bool {
    task["completed"] == false && due(task).is_some_and(|d| d < Utc::now())
}

/// Each filter alone, several spellings of each.
fn single_filters() -> Vec<Atom> {
    vec![
        atom("priority=high", &["priority"], |t| t["priority"] == "high"),
        atom("priority=low", &["priority"], |t| t["priority"] == "low"),
        atom("priority=high&priority=urgent", &["priority"], |t| {
            rank(t) >= 2
        }),
        atom("priority=low&priority=urgent", &["priority"], |t| {
            matches!(rank(t), 0 | 3)
        }),
        atom(
            "priority=low&priority=medium&priority=high&priority=urgent",
            &["priority"],
            |_| true,
        ),
        atom("priority=medium&priority=medium", &["priority"], |t| {
            t["priority"] == "medium"
        }),
        atom("tag=work", &["tag"], |t| has_tag(t, "work")),
        atom("tag=WORK", &["tag"], |t| has_tag(t, "work")),
        atom("tag=%20Work%20", &["tag"], |t| has_tag(t, "work")),
        atom("tag=home", &["tag"], |t| has_tag(t, "home")),
        atom("tag=work&tag=money", &["tag"], |t| {
            has_tag(t, "work") && has_tag(t, "money")
        }),
        atom("tag=HOME&tag=Groceries", &["tag"], |t| {
            has_tag(t, "home") && has_tag(t, "groceries")
        }),
        atom("tag=Stra%C3%9Fe", &["tag"], |t| has_tag(t, "strasse")),
        atom("tag=strasse", &["tag"], |t| has_tag(t, "strasse")),
        atom("tag=nothing", &["tag"], |_| false),
        atom(
            "due_after=2099-01-15T08:30:00.000Z",
            &["due_after"],
            due_at_or_after("2099-01-15T08:30:00.000Z"),
        ),
        atom(
            "due_after=2099-01-15T10:30:00%2B02:00",
            &["due_after"],
            due_at_or_after("2099-01-15T08:30:00.000Z"),
        ),
        atom(
            "due_after=2099-04-30T23:59:59.999Z",
            &["due_after"],
            due_at_or_after("2099-04-30T23:59:59.999Z"),
        ),
        atom(
            "due_before=2099-01-15T08:30:00Z",
            &["due_before"],
            due_before("2099-01-15T08:30:00Z"),
        ),
        atom(
            "due_before=2020-03-01T09:00:00.001Z",
            &["due_before"],
            due_before("2020-03-01T09:00:00.001Z"),
        ),
        atom(
            "due_before=2020-04-01T02:00:00%2B02:00",
            &["due_before"],
            due_before("2020-04-01T00:00:00Z"),
        ),
        atom(
            "due_after=2099-01-15T03:30:00-05:00",
            &["due_after"],
            due_at_or_after("2099-01-15T08:30:00Z"),
        ),
        atom(
            "due_after=2020-03-01T09:00:00Z&due_before=2020-04-01T00:00:00Z",
            &["due_after", "due_before"],
            |t| due_at_or_after("2020-03-01T09:00:00Z")(t) && due_before("2020-04-01T00:00:00Z")(t),
        ),
        atom(
            "due_after=2020-04-01T00:00:00Z&due_before=2099-04-30T23:59:59.999Z",
            &["due_after", "due_before"],
            |t| {
                due_at_or_after("2020-04-01T00:00:00Z")(t)
                    && due_before("2099-04-30T23:59:59.999Z")(t)
            },
        ),
        atom("overdue=true", &["overdue"], is_overdue),
        atom("overdue=false", &["overdue"], |t| !is_overdue(t)),
        atom("completed=true", &["completed"], |t| t["completed"] == true),
        atom("completed=false", &["completed"], |t| {
            t["completed"] == false
        }),
        atom("q=report", &["q"], |t| contains_text(t, "report")),
    ]
}

/// The filters combined pairwise, and all at once.
fn combinable_filters() -> Vec<Atom> {
    vec![
        atom("priority=medium&priority=urgent", &["priority"], |t| {
            matches!(rank(t), 1 | 3)
        }),
        atom("tag=work", &["tag"], |t| has_tag(t, "work")),
        atom(
            "due_after=2020-04-01T00:00:00Z",
            &["due_after"],
            due_at_or_after("2020-04-01T00:00:00Z"),
        ),
        atom(
            "due_before=2099-04-30T23:59:59.999Z",
            &["due_before"],
            due_before("2099-04-30T23:59:59.999Z"),
        ),
        atom("overdue=false", &["overdue"], |t| !is_overdue(t)),
        atom("overdue=true", &["overdue"], is_overdue),
        atom("completed=false", &["completed"], |t| {
            t["completed"] == false
        }),
        atom("q=report", &["q"], |t| contains_text(t, "report")),
    ]
}

/// How two tasks compare on `sort_by` in `order`, ties by id in the same direction; tasks
/// without a due date last in both orders of `due_at`.
fn compare(a: &Value, b: &Value, sort_by: &str, order: &str) -> Ordering {
    let direct = |ordering: Ordering| {
        if order == "desc" {
            ordering.reverse()
        } else {
            ordering
        }
    };
    let by_id = id_of(a).cmp(id_of(b));
    match sort_by {
        "due_at" => match (due(a), due(b)) {
            (Some(x), Some(y)) => direct(x.cmp(&y).then(by_id)),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => direct(by_id),
        },
        "priority" => direct(rank(a).cmp(&rank(b)).then(by_id)),
        other => panic!("no model of sort_by={other}"),
    }
}

fn expected_order<'a>(tasks: &[&'a Value], sort_by: &str, order: &str) -> Vec<&'a str> {
    let mut sorted = tasks.to_vec();
    sorted.sort_by(|a, b| compare(a, b, sort_by, order));
    sorted.into_iter().map(id_of).collect()
}

const NEW_SORTS: [(&str, &str); 4] = [
    ("due_at", "asc"),
    ("due_at", "desc"),
    ("priority", "asc"),
    ("priority", "desc"),
];

/// Lists with `filter` and each new sort in turn, and checks the page against the model.
async fn check_listing(
    app: &TestApp,
    user: &TestUser,
    tasks: &[Value],
    filter: &str,
    keeps: &dyn Fn(&Value) -> bool,
    turn: usize,
) -> usize {
    let kept: Vec<&Value> = tasks.iter().filter(|t| keeps(t)).collect();
    let (sort_by, order) = NEW_SORTS[turn % NEW_SORTS.len()];
    let query = format!("{filter}&sort_by={sort_by}&sort_order={order}&page_size=100");
    let page = list(app, user, &query).await;
    assert_eq!(page["total"], kept.len(), "?{query}: total");
    let listed: Vec<&str> = items(&page).iter().map(id_of).collect();
    assert_eq!(
        listed,
        expected_order(&kept, sort_by, order),
        "?{query}: the tasks, in order"
    );
    for item in items(&page) {
        assert!(tasks.contains(item), "?{query}: listed as it is: {item}");
    }
    kept.len()
}

on_both_databases! {
    async fn each_new_filter_alone_keeps_exactly_its_tasks(app: TestApp) {
        let alice = app.signup("alice").await;
        let tasks = seed(&app, &alice).await;
        for (turn, filter) in single_filters().iter().enumerate() {
            let kept = check_listing(&app, &alice, &tasks, filter.query, &filter.keeps, turn).await;
            if !filter.query.contains("nothing") {
                assert!(kept > 0, "?{}: the seed leaves something to find", filter.query);
            }
        }
        // overdue splits the tasks in two, and only open tasks due in the past are overdue.
        let overdue = list(&app, &alice, "overdue=true&page_size=100").await;
        let titles: HashSet<&str> = items(&overdue).iter().map(|t| t["title"].as_str().unwrap()).collect();
        assert_eq!(titles, HashSet::from(["Write report", "Pay rent"]));
        let not_overdue = list(&app, &alice, "overdue=false&page_size=100").await;
        assert_eq!(items(&not_overdue).len() + items(&overdue).len(), tasks.len());
        // A window and the next one never share a task.
        let first = list(&app, &alice, "due_after=2020-01-01T00:00:00Z&due_before=2099-01-15T08:30:00Z&page_size=100").await;
        let second = list(&app, &alice, "due_after=2099-01-15T08:30:00Z&due_before=2100-01-01T00:00:00Z&page_size=100").await;
        let first: HashSet<&str> = items(&first).iter().map(id_of).collect();
        let second: HashSet<&str> = items(&second).iter().map(id_of).collect();
        assert!(first.is_disjoint(&second), "consecutive windows share a task");
        let with_due = tasks.iter().filter(|t| !t["due_at"].is_null()).count();
        assert_eq!(first.len() + second.len(), with_due, "together they hold every task with a due date");
    }

    async fn every_filter_combines_with_every_other(app: TestApp) {
        let alice = app.signup("alice").await;
        let tasks = seed(&app, &alice).await;
        let filters = combinable_filters();
        let mut turn = 0;
        for (i, a) in filters.iter().enumerate() {
            for b in &filters[i + 1..] {
                if a.params.iter().any(|p| b.params.contains(p)) {
                    continue;
                }
                let query = format!("{}&{}", a.query, b.query);
                let keeps = |t: &Value| (a.keeps)(t) && (b.keeps)(t);
                check_listing(&app, &alice, &tasks, &query, &keeps, turn).await;
                turn += 1;
            }
        }
        // All of them at once (one overdue), in both spellings of the parameters' order.
        let all = "priority=medium&priority=urgent&tag=work&due_after=2020-04-01T00:00:00Z\
                   &due_before=2099-04-30T23:59:59.999Z&overdue=false&completed=false&q=report";
        let every: Vec<&Atom> = filters.iter().filter(|f| f.query != "overdue=true").collect();
        let keeps = |t: &Value| every.iter().all(|f| (f.keeps)(t));
        for (turn, sort) in NEW_SORTS.iter().enumerate() {
            let kept = check_listing(&app, &alice, &tasks, all, &keeps, turn).await;
            assert_eq!(kept, 1, "{sort:?}: only Team meeting (Tax return is due exactly at due_before)");
        }
        let page = list(&app, &alice, "q=REPORT&completed=false&overdue=false&due_before=2099-04-30T23:59:59.999Z&due_after=2020-04-01T00:00:00Z&tag=WORK&priority=urgent&priority=medium").await;
        assert_eq!(page["total"], 1);
        assert_eq!(items(&page)[0]["title"], "Team meeting");
        // completed and q still combine, with and without the new filters.
        let page = list(&app, &alice, "completed=true&q=report&page_size=100").await;
        let titles: Vec<&str> = items(&page).iter().map(|t| t["title"].as_str().unwrap()).collect();
        assert_eq!(titles, ["Review report"]);
        let page = list(&app, &alice, "completed=false&q=report&tag=money&page_size=100").await;
        let titles: Vec<&str> = items(&page).iter().map(|t| t["title"].as_str().unwrap()).collect();
        assert_eq!(titles, ["Tax return"]);
    }

    async fn sort_by_due_at_and_priority_orders_the_whole_listing(app: TestApp) {
        let alice = app.signup("alice").await;
        let tasks = seed(&app, &alice).await;
        let all: Vec<&Value> = tasks.iter().collect();
        for (sort_by, order) in NEW_SORTS {
            let page = list(&app, &alice, &format!("sort_by={sort_by}&sort_order={order}&page_size=100")).await;
            let listed: Vec<&str> = items(&page).iter().map(id_of).collect();
            assert_eq!(listed, expected_order(&all, sort_by, order), "sort_by={sort_by}&sort_order={order}");
        }
        // Spelled out: no due date last in both orders; urgent first when descending.
        let title = |page: &Value, n: usize| items(page)[n]["title"].as_str().unwrap().to_owned();
        let asc = list(&app, &alice, "sort_by=due_at&sort_order=asc&page_size=100").await;
        let desc = list(&app, &alice, "sort_by=due_at&sort_order=desc&page_size=100").await;
        let undated: HashSet<&str> = HashSet::from(["Buy milk", "Gym", "Read book", "Old notes"]);
        for page in [&asc, &desc] {
            let last: HashSet<String> = (10..14).map(|n| title(page, n)).collect();
            assert_eq!(last, undated.iter().map(|t| t.to_string()).collect(), "no due date comes last: {page}");
        }
        assert!(["Write report", "Review report"].contains(&title(&asc, 0).as_str()));
        assert!(["Plan trip", "Call plumber"].contains(&title(&desc, 0).as_str()));
        let urgent_first = list(&app, &alice, "sort_by=priority&sort_order=desc&page_size=100").await;
        let ranks: Vec<u8> = items(&urgent_first).iter().map(rank).collect();
        assert_eq!(ranks, [3, 3, 3, 3, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0]);
        // sort_order defaults to desc for the new sorts too.
        for sort_by in ["due_at", "priority"] {
            let implicit = list(&app, &alice, &format!("sort_by={sort_by}&page_size=100")).await;
            let explicit = list(&app, &alice, &format!("sort_by={sort_by}&sort_order=desc&page_size=100")).await;
            assert_eq!(implicit, explicit, "sort_by={sort_by}");
        }
    }

    async fn walking_the_pages_of_the_new_sorts_visits_every_task_exactly_once(app: TestApp) {
        let alice = app.signup("alice").await;
        let tasks = seed(&app, &alice).await;
        let all: Vec<&Value> = tasks.iter().collect();
        for filter in ["", "&completed=false", "&tag=home", "&priority=medium&priority=urgent"] {
            for (sort_by, order) in NEW_SORTS {
                let sort = format!("sort_by={sort_by}&sort_order={order}{filter}");
                let mut walked: Vec<String> = Vec::new();
                for number in 1.. {
                    let page = list(&app, &alice, &format!("{sort}&page_size=4&page={number}")).await;
                    if items(&page).is_empty() {
                        break;
                    }
                    assert!(items(&page).len() <= 4);
                    walked.extend(items(&page).iter().map(|t| id_of(t).to_owned()));
                    assert!(number <= 4, "{sort}: more pages than tasks");
                }
                let unique: HashSet<&String> = walked.iter().collect();
                assert_eq!(unique.len(), walked.len(), "{sort}: a task appeared twice");
                let whole = list(&app, &alice, &format!("{sort}&page_size=100")).await;
                let whole: Vec<String> = items(&whole).iter().map(|t| id_of(t).to_owned()).collect();
                assert_eq!(walked, whole, "{sort}: the pages in turn are the whole listing");
                if filter.is_empty() {
                    let expected: Vec<String> = expected_order(&all, sort_by, order).into_iter().map(str::to_owned).collect();
                    assert_eq!(walked, expected, "{sort}");
                }
            }
        }
    }

    async fn bad_values_of_the_new_listing_parameters_are_400s_naming_them(app: TestApp) {
        let alice = app.signup("alice").await;
        seed(&app, &alice).await;
        let twenty_one_tags: String = (0..21).map(|n| format!("tag=t{n}")).collect::<Vec<_>>().join("&");
        let twenty_tags: String = (0..20).map(|n| format!("tag=t{n}")).collect::<Vec<_>>().join("&");
        let long_tag = format!("tag={}", "x".repeat(33));
        let cases: Vec<(&str, Vec<&str>, &str)> = vec![
            ("priority=extreme", vec!["priority"], "an unknown priority"),
            ("priority=", vec!["priority"], "an empty priority"),
            ("priority=high&priority=extreme", vec!["priority"], "one bad priority among good ones"),
            ("tag=", vec!["tag"], "an empty tag"),
            ("tag=%20%20", vec!["tag"], "a tag of spaces"),
            ("tag=a%07b", vec!["tag"], "a control character in a tag"),
            (long_tag.as_str(), vec!["tag"], "a tag of 33 characters"),
            (twenty_one_tags.as_str(), vec!["tag"], "21 tags"),
            ("due_before=tomorrow", vec!["due_before"], "a word as due_before"),
            ("due_after=2026-01-01", vec!["due_after"], "a date without a time"),
            ("due_after=2026-01-01T10:00:00", vec!["due_after"], "a time without an offset"),
            ("due_after=2026-01-01T10:00:00+02:00", vec!["due_after"], "an unencoded + (read as a space)"),
            ("due_after=1767261600", vec!["due_after"], "a Unix time"),
            ("due_after=2026-01-01T10:00:00Z&due_after=2026-02-01T10:00:00Z", vec!["due_after"], "due_after twice"),
            ("due_before=2026-01-01T10:00:00Z&due_before=2026-02-01T10:00:00Z", vec!["due_before"], "due_before twice"),
            ("overdue=maybe", vec!["overdue"], "overdue neither true nor false"),
            ("overdue=true&overdue=false", vec!["overdue"], "overdue twice"),
            ("sort_by=due", vec!["sort_by"], "a misspelt sort"),
            ("sort_by=tags", vec!["sort_by"], "sorting by tags"),
            ("tags=work", vec!["tags"], "the plural, unknown as a parameter"),
            (
                "priority=extreme&tag=&due_after=x&due_before=y&overdue=maybe&sort_by=due",
                vec!["due_after", "due_before", "overdue", "priority", "sort_by", "tag"],
                "six bad parameters at once",
            ),
        ];
        for (query, fields, why) in cases {
            let response = send(&app, &alice, Method::GET, &format!("{}?{query}", TestApp::tasks_path(&alice)), None).await;
            assert_refused(response, &fields, &format!("{why}: ?{query}")).await;
        }
        // Twenty tags are allowed (and here match nothing).
        let page = list(&app, &alice, &twenty_tags).await;
        assert_eq!(page["total"], 0);
    }
}

// ---------------------------------------------------------------------------------------
// GET /api/{user_id}/tags
// ---------------------------------------------------------------------------------------

fn tags_path(user: &TestUser) -> String {
    format!("/api/{}/tags", user.id)
}

async fn tags_of(app: &TestApp, user: &TestUser) -> Value {
    let (status, body) = app.get_json(user, &tags_path(user)).await;
    assert_eq!(status, StatusCode::OK, "GET tags: {body}");
    body
}

on_both_databases! {
    async fn the_tags_route_counts_open_and_all_tasks_most_used_first_under_one_spelling(app: TestApp) {
        let alice = app.signup("alice").await;
        assert_eq!(tags_of(&app, &alice).await, json!({"items": []}), "no tasks, no tags");
        let t1 = app.create_task(&alice, json!({"title": "1", "tags": ["Work", "home"]})).await;
        app.create_task(&alice, json!({"title": "2", "tags": ["work"], "completed": true})).await;
        let t3 = app.create_task(&alice, json!({"title": "3", "tags": ["WORK", "errands"]})).await;
        app.create_task(&alice, json!({"title": "4", "tags": ["home"], "completed": true})).await;
        app.create_task(&alice, json!({"title": "5", "tags": ["zebra"]})).await;
        app.create_task(&alice, json!({"title": "6", "tags": ["Apple"]})).await;
        app.create_task(&alice, json!({"title": "7"})).await;
        assert_eq!(
            tags_of(&app, &alice).await,
            json!({"items": [
                {"tag": "WORK", "open": 2, "total": 3},
                {"tag": "home", "open": 1, "total": 2},
                {"tag": "Apple", "open": 1, "total": 1},
                {"tag": "errands", "open": 1, "total": 1},
                {"tag": "zebra", "open": 1, "total": 1},
            ]}),
            "most used first, then by folded key; Work/work/WORK once, spelled as sorts first"
        );

        // Deleting a task updates the counts (and a tag no task carries is gone).
        let response = send(&app, &alice, Method::DELETE, &TestApp::task_path(&alice, id_of(&t3)), None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            tags_of(&app, &alice).await,
            json!({"items": [
                {"tag": "home", "open": 1, "total": 2},
                {"tag": "Work", "open": 1, "total": 2},
                {"tag": "Apple", "open": 1, "total": 1},
                {"tag": "zebra", "open": 1, "total": 1},
            ]}),
            "after the delete"
        );
        // Completing and retagging update them too.
        complete(&app, &alice, &t1, Completion::Complete).await;
        assert_eq!(
            tags_of(&app, &alice).await,
            json!({"items": [
                {"tag": "home", "open": 0, "total": 2},
                {"tag": "Work", "open": 0, "total": 2},
                {"tag": "Apple", "open": 1, "total": 1},
                {"tag": "zebra", "open": 1, "total": 1},
            ]}),
            "after completing"
        );
        patch(&app, &alice, id_of(&t1), json!({"tags": ["Zebra"], "completed": false})).await;
        assert_eq!(
            tags_of(&app, &alice).await,
            json!({"items": [
                {"tag": "Zebra", "open": 2, "total": 2},
                {"tag": "Apple", "open": 1, "total": 1},
                {"tag": "home", "open": 0, "total": 1},
                {"tag": "work", "open": 0, "total": 1},
            ]}),
            "after retagging"
        );
    }

    async fn tags_are_isolated_between_users(app: TestApp) {
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        app.create_task(&alice, json!({"title": "alice's", "tags": ["work"]})).await;
        let bobs = app.create_task(&bob, json!({"title": "bob's", "tags": ["Work", "secret"]})).await;
        app.create_task(&bob, json!({"title": "bob's too", "tags": ["work"]})).await;
        assert_eq!(tags_of(&app, &alice).await, json!({"items": [{"tag": "work", "open": 1, "total": 1}]}));
        assert_eq!(
            tags_of(&app, &bob).await,
            json!({"items": [{"tag": "Work", "open": 2, "total": 2}, {"tag": "secret", "open": 1, "total": 1}]})
        );
        // Another user's path is a 403, with or without tasks there; no token is a 401.
        let response = send(&app, &alice, Method::GET, &tags_path(&bob), None).await;
        expect_problem(response, StatusCode::FORBIDDEN).await;
        let response = app.request(Method::GET, &tags_path(&alice)).send().await.unwrap();
        expect_unauthorized(response, "the tags route without a token").await;
        // The tag filter never reaches another user's tasks.
        let page = list(&app, &alice, "tag=work&page_size=100").await;
        assert_eq!(page["total"], 1);
        assert_eq!(items(&page)[0]["title"], "alice's");
        let page = list(&app, &alice, "tag=secret").await;
        assert_eq!(page["total"], 0);
        // Deleting bob's task changes bob's counts only.
        send(&app, &bob, Method::DELETE, &TestApp::task_path(&bob, id_of(&bobs)), None).await;
        assert_eq!(tags_of(&app, &alice).await, json!({"items": [{"tag": "work", "open": 1, "total": 1}]}));
        assert_eq!(tags_of(&app, &bob).await, json!({"items": [{"tag": "work", "open": 1, "total": 1}]}));
    }

    async fn the_tags_route_takes_no_query_parameters(app: TestApp) {
        let alice = app.signup("alice").await;
        app.create_task(&alice, json!({"title": "t", "tags": ["work"]})).await;
        for (query, field) in [("page=1", "page"), ("tag=work", "tag"), ("sort_by=tag", "sort_by"), ("x=", "x")] {
            let response = send(&app, &alice, Method::GET, &format!("{}?{query}", tags_path(&alice)), None).await;
            assert_refused(response, &[field], &format!("GET tags?{query}")).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reminders
// ---------------------------------------------------------------------------------------

async fn spawn_fast(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |settings| settings.reminders_poll = POLL).await
}

/// The checks every reminder event passes, about `task` as it is read now.
fn check_reminder(event: &Value, user: &TestUser, task: &Value) {
    assert_eq!(event["type"], "todo.task.reminder");
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["source"], "todo-api");
    assert_eq!(event["datacontenttype"], "application/json");
    assert_eq!(event["userid"], user.id.as_str());
    assert_eq!(event["subject"], task["id"]);
    uuid::Uuid::parse_str(event["id"].as_str().unwrap()).expect("the event id is a UUID");
    let sent = timestamp(&event["time"]);
    let due = timestamp(&event["data"]["remind_at"]);
    assert!(
        sent >= due,
        "sent at {sent}, never before it was due at {due}"
    );
    assert_eq!(event["data"], *task, "the task as a client reads it");
}

/// Opens `user`'s live event stream (from now on).
async fn open_stream(app: &TestApp, user: &TestUser) -> Response {
    let response = app
        .authed(
            Method::GET,
            &format!("/api/{}/events", user.id),
            &user.token,
        )
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("stream request");
    assert_eq!(response.status(), StatusCode::OK, "the stream opens");
    response
}

/// Reads the live stream until an event of type `kind` about `subject` arrives; its
/// CloudEvent.
async fn next_streamed(response: &mut Response, kind: &str, subject: &str) -> Value {
    let read = async {
        let mut buffer = String::new();
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut event = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        event = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if event == kind && !data.is_empty() {
                    let cloud_event: Value = serde_json::from_str(&data).expect("JSON data");
                    if cloud_event["subject"] == subject {
                        return cloud_event;
                    }
                }
            }
            let chunk = response
                .chunk()
                .await
                .expect("read the stream")
                .expect("the stream stays open");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(BOUND, read)
        .await
        .unwrap_or_else(|_| panic!("a {kind} event about {subject} arrives on the live stream"))
}

on_both_backends! {
    async fn a_reminder_is_sent_once_when_remind_at_passes_and_changes_nothing_a_client_sees(backend: Backend) {
        let app = spawn_fast(backend).await;
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        let mut stream = open_stream(&app, &alice).await;
        let remind_at = from_now(1_000);
        let task = app
            .create_task(
                &alice,
                json!({"title": "Call mom", "remind_at": remind_at, "due_at": from_now(3_600_000)}),
            )
            .await;
        let later = app
            .create_task(&alice, json!({"title": "next year", "remind_at": from_now(365 * 86_400_000)}))
            .await;
        let without = app.create_task(&alice, json!({"title": "no reminder"})).await;
        let (before, etag_before) = read_with_etag(&app, &alice, id_of(&task)).await;

        let events = wait_for_reminders(&app, &alice, id_of(&task), 1).await;
        let reminder = reminders_of(&events, id_of(&task))[0].clone();
        check_reminder(&reminder, &alice, &before);
        assert_eq!(reminder["data"]["remind_at"], remind_at.as_str());
        // It reaches the live stream like any other event.
        let streamed = next_streamed(&mut stream, "todo.task.reminder", id_of(&task)).await;
        assert_eq!(streamed, reminder, "the same event on the stream and in the feed");
        drop(stream);

        let (_, events) = after_a_later_reminder(&app, &alice, &from_now(0)).await;
        assert_eq!(reminders_of(&events, id_of(&task)).len(), 1, "sent once: {events:#?}");
        assert!(reminders_of(&events, id_of(&later)).is_empty(), "not due yet");
        assert!(reminders_of(&events, id_of(&without)).is_empty(), "no remind_at, no reminder");
        let (after, etag_after) = read_with_etag(&app, &alice, id_of(&task)).await;
        assert_eq!(after, before, "updated_at and every field unchanged");
        assert_eq!(etag_after, etag_before, "the version unchanged");
        assert!(
            all_events(&app, &bob).await.iter().all(|e| e["type"] != "todo.task.reminder"),
            "another user's feed has none of alice's reminders"
        );
    }

    async fn every_due_reminder_is_sent_however_many_there_are(backend: Backend) {
        let app = spawn_fast(backend).await;
        let alice = app.signup("alice").await;
        let mut ids = Vec::new();
        for n in 0..150i64 {
            let remind_at = api_time(parse_time("2020-01-01T00:00:00Z") + TimeDelta::seconds(n));
            let task = app
                .create_task(&alice, json!({"title": format!("{n}"), "remind_at": remind_at}))
                .await;
            ids.push(id_of(&task).to_owned());
        }
        let deadline = Instant::now() + BOUND * 2;
        loop {
            let events = all_events(&app, &alice).await;
            let sent = ids.iter().filter(|id| !reminders_of(&events, id).is_empty()).count();
            if sent == ids.len() {
                break;
            }
            assert!(Instant::now() < deadline, "{sent} of {} reminders sent", ids.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, events) = after_a_later_reminder(&app, &alice, &from_now(0)).await;
        for id in &ids {
            assert_eq!(reminders_of(&events, id).len(), 1, "task {id}: exactly one reminder");
        }
    }

    async fn changing_remind_at_re_arms_the_reminder_and_other_changes_do_not(backend: Backend) {
        let app = spawn_fast(backend).await;
        let alice = app.signup("alice").await;
        let first = "2021-01-01T08:00:00.000Z";
        let task = app.create_task(&alice, json!({"title": "Pay rent", "remind_at": first})).await;
        let id = id_of(&task).to_owned();
        wait_for_reminders(&app, &alice, &id, 1).await;

        // Other changes, and remind_at set to the value it has, send nothing more.
        patch(&app, &alice, &id, json!({"title": "Pay the rent", "priority": "high"})).await;
        patch(&app, &alice, &id, json!({"remind_at": "2021-01-01T09:00:00+01:00"})).await;
        let current = read_task(&app, &alice, &id).await;
        put(&app, &alice, &id, put_body(&current, false)).await;
        let (_, events) = after_a_later_reminder(&app, &alice, &from_now(0)).await;
        assert_eq!(reminders_of(&events, &id).len(), 1, "no change of remind_at, no reminder: {events:#?}");

        // Another value, already past, fires at once; one in the future waits for its time.
        let second = "2021-01-02T08:00:00.000Z";
        patch(&app, &alice, &id, json!({"remind_at": second})).await;
        let events = wait_for_reminders(&app, &alice, &id, 2).await;
        let reminders = reminders_of(&events, &id);
        assert_eq!(reminders[0]["data"]["remind_at"], first);
        assert_eq!(reminders[1]["data"]["remind_at"], second);
        check_reminder(reminders[1], &alice, &read_task(&app, &alice, &id).await);

        let third = from_now(1_500);
        patch(&app, &alice, &id, json!({"remind_at": third})).await;
        let events = wait_for_reminders(&app, &alice, &id, 3).await;
        assert_eq!(reminders_of(&events, &id)[2]["data"]["remind_at"], third.as_str());

        // Cleared, then set far ahead: nothing more.
        patch(&app, &alice, &id, json!({"remind_at": null})).await;
        patch(&app, &alice, &id, json!({"remind_at": "2999-01-01T00:00:00Z"})).await;
        let (_, events) = after_a_later_reminder(&app, &alice, &from_now(0)).await;
        assert_eq!(reminders_of(&events, &id).len(), 3, "{events:#?}");
    }

    async fn completing_or_deleting_disarms_a_reminder_and_reopening_re_arms_an_unsent_one(backend: Backend) {
        let app = spawn_fast(backend).await;
        let alice = app.signup("alice").await;
        // Due in a few seconds; each is completed or deleted before then.
        let soon = from_now(3_000);
        let completed = app.create_task(&alice, json!({"title": "completed", "remind_at": soon})).await;
        let deleted = app.create_task(&alice, json!({"title": "deleted", "remind_at": soon})).await;
        let reopened = app.create_task(&alice, json!({"title": "reopened", "remind_at": soon})).await;
        let born_done = app
            .create_task(&alice, json!({"title": "created completed", "completed": true, "remind_at": "2021-01-01T00:00:00Z"}))
            .await;
        complete(&app, &alice, &completed, Completion::Patch).await;
        complete(&app, &alice, &reopened, Completion::Complete).await;
        let response = send(&app, &alice, Method::DELETE, &TestApp::task_path(&alice, id_of(&deleted)), None).await;
        assert_eq!(response.status(), StatusCode::OK);

        let (_, events) = after_a_later_reminder(&app, &alice, &api_time(parse_time(&soon) + TimeDelta::milliseconds(100))).await;
        for task in [&completed, &deleted, &reopened, &born_done] {
            assert!(
                reminders_of(&events, id_of(task)).is_empty(),
                "{}: no reminder for a task that is not open: {events:#?}",
                task["title"]
            );
        }

        // Reopening re-arms the reminder that was never sent: it is past, so it fires.
        patch(&app, &alice, id_of(&reopened), json!({"completed": false})).await;
        let events = wait_for_reminders(&app, &alice, id_of(&reopened), 1).await;
        check_reminder(reminders_of(&events, id_of(&reopened))[0], &alice, &read_task(&app, &alice, id_of(&reopened)).await);
        // A reminder already sent is not sent again when its task is completed and reopened.
        let (_, events) = after_a_later_reminder(&app, &alice, &from_now(0)).await;
        assert_eq!(reminders_of(&events, id_of(&reopened)).len(), 1);
        complete(&app, &alice, &read_task(&app, &alice, id_of(&reopened)).await, Completion::Toggle).await;
        patch(&app, &alice, id_of(&reopened), json!({"completed": false})).await;
        let (_, events) = after_a_later_reminder(&app, &alice, &from_now(0)).await;
        assert_eq!(reminders_of(&events, id_of(&reopened)).len(), 1, "{events:#?}");
        assert!(reminders_of(&events, id_of(&completed)).is_empty());
    }

    async fn two_instances_send_each_reminder_once(backend: Backend) {
        let first = spawn_fast(backend).await;
        let second = TestApp::spawn_on(&first.database_url, |settings| settings.reminders_poll = POLL).await;
        let alice = first.signup("alice").await;
        let remind_at = from_now(1_500);
        let mut ids = Vec::new();
        for n in 0..40 {
            let app = if n % 2 == 0 { &first } else { &second };
            let remind = if n % 4 < 2 { remind_at.clone() } else { "2021-06-01T00:00:00Z".to_owned() };
            let task = app
                .create_task(&alice, json!({"title": format!("{n}"), "remind_at": remind}))
                .await;
            ids.push(id_of(&task).to_owned());
        }
        let deadline = Instant::now() + BOUND;
        loop {
            let events = all_events(&second, &alice).await;
            let sent = ids.iter().filter(|id| !reminders_of(&events, id).is_empty()).count();
            if sent == ids.len() {
                break;
            }
            assert!(Instant::now() < deadline, "{sent} of {} reminders sent", ids.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, events) = after_a_later_reminder(&first, &alice, &from_now(0)).await;
        for id in &ids {
            assert_eq!(reminders_of(&events, id).len(), 1, "task {id}: once, however many instances run");
        }
        drop(second);
    }

    async fn a_reminder_that_fell_due_while_no_instance_ran_is_sent_at_the_next_start(backend: Backend) {
        let directory = tempfile::tempdir().unwrap();
        let (url, postgres_database) = match backend {
            Backend::Sqlite => (format!("sqlite://{}", directory.path().join("todo.db").display()), None),
            Backend::Postgres => {
                let (name, url) = create_test_database().await;
                (url, Some(name))
            }
        };
        // The first instance scans rarely, so it is gone before the reminder falls due.
        let app = TestApp::spawn_on(&url, |settings| settings.reminders_poll = Duration::from_secs(3_600)).await;
        let alice = app.signup("alice").await;
        let remind_at = from_now(2_000);
        let task = app.create_task(&alice, json!({"title": "while down", "remind_at": remind_at})).await;
        assert!(reminders_of(&all_events(&app, &alice).await, id_of(&task)).is_empty());
        app.stop().await;
        while Utc::now() <= parse_time(&remind_at) + TimeDelta::milliseconds(200) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let restarted = Utc::now();
        let app = TestApp::spawn_on(&url, |settings| settings.reminders_poll = POLL).await;
        let events = wait_for_reminders(&app, &alice, id_of(&task), 1).await;
        let reminder = reminders_of(&events, id_of(&task))[0].clone();
        check_reminder(&reminder, &alice, &read_task(&app, &alice, id_of(&task)).await);
        assert!(
            timestamp(&reminder["time"]) >= restarted - TimeDelta::milliseconds(1),
            "sent by the restarted instance: {reminder}"
        );
        let (_, events) = after_a_later_reminder(&app, &alice, &from_now(0)).await;
        assert_eq!(reminders_of(&events, id_of(&task)).len(), 1, "sent once");
        app.stop().await;
        if let Some(name) = postgres_database {
            drop_test_database(name);
        }
    }
}

on_both_backends! {
    async fn the_metrics_count_the_reminders_this_instance_sent(backend: Backend) {
        const METRICS_TOKEN: &str = "metrics-token-of-the-planning-tests";
        let app = TestApp::spawn_with(backend, |settings| {
            settings.reminders_poll = POLL;
            settings.metrics_token = Some(todo_api::config::Secret::new(METRICS_TOKEN));
        })
        .await;
        let alice = app.signup("alice").await;
        let sent = || async {
            let body = app
                .request(Method::GET, "/metrics")
                .bearer_auth(METRICS_TOKEN)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            body.lines()
                .find_map(|line| line.strip_prefix("reminders_sent_total "))
                .map(|value| value.trim().parse::<f64>().unwrap())
        };
        assert_eq!(sent().await, Some(0.0), "the counter is there from the start");
        for title in ["one", "two"] {
            app.create_task(&alice, json!({"title": title, "remind_at": from_now(0)}))
                .await;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while sent().await != Some(2.0) {
            assert!(
                std::time::Instant::now() < deadline,
                "two reminders never counted: {:?}",
                sent().await
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        app.stop().await;
    }
}
