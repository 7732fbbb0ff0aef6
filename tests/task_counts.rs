//! A listing's `total`: unfiltered, or filtered by `completed` alone, it is each owner's count
//! kept by the database's triggers in the transaction of every write; with any other filter
//! it is counted from the owner's rows. Every kind of write (create, each way of completing
//! and reopening, replace, delete, a recurring task's next occurrence, a refused write, an
//! account's deletion) leaves the two in agreement, and with the tasks that are really there.
//! So do creates of several owners written together (group commit: one transaction for the
//! creates waiting for the writer), alone or among other writes to the same owners, and each
//! of them gets exactly one event, numbered without a gap; and so do updates written
//! together, which apply as if one after another, a reminder sent meanwhile included.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

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

/// How many creates arrive together in the tests of concurrent creates: at least two full
/// runs (the service writes at most 16 creates in one), whatever the first run takes.
const CREATES: usize = 48;

/// The four owners of the tests of concurrent creates.
async fn four_owners(app: &TestApp) -> Vec<TestUser> {
    let mut users = Vec::new();
    for name in ["alice", "bob", "carol", "dave"] {
        users.push(app.signup(name).await);
    }
    users
}

/// The body of create `i`: some with tags, some created completed, in patterns that differ
/// from owner to owner (owner `i % 4`), so that a task's fields written for another task of
/// its run would move a count or a tag to another owner.
fn create_body(i: usize) -> Value {
    let mut body = json!({"title": format!("concurrent {i}"), "completed": i.is_multiple_of(5)});
    if !i.is_multiple_of(3) {
        body["tags"] = json!(
            (0..i % 3)
                .map(|n| format!("tag{}", (i + n) % 7))
                .collect::<Vec<_>>()
        );
    }
    body
}

/// `owner`'s kept counts (tasks, completed), the same counted from its rows, and its tag rows
/// whose task is the owner's.
const COUNTS: &str = "SELECT (SELECT tasks FROM task_counts WHERE user_id = $1),
                             (SELECT completed FROM task_counts WHERE user_id = $1),
                             (SELECT count(*) FROM tasks WHERE user_id = $1),
                             (SELECT count(*) FROM tasks WHERE user_id = $1 AND completed),
                             (SELECT count(*) FROM task_tags JOIN tasks ON tasks.id = task_tags.task_id
                               WHERE task_tags.user_id = $1 AND tasks.user_id = $1)";

/// Asserts that `user`'s kept counts are its rows' and the listing's, and are `expected`
/// (tasks, completed), with `tags` tag rows.
async fn assert_counts(app: &TestApp, user: &TestUser, expected: (u64, u64), tags: u64) {
    let (kept_tasks, kept_completed, tasks, completed, tag_rows) = app
        .owner_rows::<(i64, i64, i64, i64, i64)>(COUNTS, &user.id)
        .await[0];
    let counted = (tasks as u64, completed as u64);
    assert_eq!(
        counted, expected,
        "{}'s rows (tasks, completed)",
        user.username
    );
    assert_eq!(
        (kept_tasks, kept_completed),
        (tasks, completed),
        "{}'s kept counts and rows",
        user.username
    );
    assert_eq!(tag_rows as u64, tags, "{}'s tag rows", user.username);
    assert_totals(
        app,
        user,
        expected,
        &format!("{}'s concurrent creates", user.username),
    )
    .await;
}

/// The events of `users`' tasks (sequence, owner, type, subject, the id of the task in its
/// data), read owner by owner, in sequence order.
async fn events_of(
    app: &TestApp,
    users: &[TestUser],
) -> Vec<(i64, String, String, String, String)> {
    let sql = "SELECT sequence, user_id, type, subject, data FROM task_events WHERE user_id = $1";
    let mut events = Vec::new();
    for user in users {
        let rows = app
            .owner_rows::<(i64, String, String, String, String)>(sql, &user.id)
            .await;
        events.extend(
            rows.into_iter()
                .map(|(sequence, owner, kind, subject, data)| {
                    let data: Value = serde_json::from_str(&data).expect("an event's data is JSON");
                    let id = data["id"].as_str().unwrap_or_default().to_owned();
                    (sequence, owner, kind, subject, id)
                }),
        );
    }
    events.sort();
    events
}

/// Asserts that the sequences of `events`, every event of the test's new database, are 1,
/// 2, 3 …: every write appends after the last one committed, without a gap or a repeat.
fn assert_contiguous(events: &[(i64, String, String, String, String)]) {
    let sequences: Vec<i64> = events.iter().map(|event| event.0).collect();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(sequences, expected, "the events' sequences");
}

on_both_databases! {
    /// Creates of four owners arriving while the writer is held go in runs that mix owners:
    /// each is created, counted for its own owner (tasks, completed, tags), and has exactly
    /// one event, its own owner's, the log numbered without a gap.
    async fn concurrent_creates_of_several_owners_keep_counts_and_events_true(app: TestApp) {
        let users = four_owners(&app).await;
        let requests: Vec<RequestBuilder> = (0..CREATES)
            .map(|i| {
                let user = &users[i % users.len()];
                app.authed(Method::POST, &TestApp::tasks_path(user), &user.token)
                    .json(&create_body(i))
            })
            .collect();
        let responses = Blocker::send_meanwhile(&app, requests).await;

        // Task id → its owner's index, and each owner's expected counts.
        let mut created: HashMap<String, usize> = HashMap::new();
        let mut expected = vec![((0, 0), 0); users.len()];
        for (i, response) in responses.into_iter().enumerate() {
            assert_eq!(response.status(), StatusCode::CREATED, "create {i}");
            let task: Value = response.json().await.unwrap();
            let body = create_body(i);
            assert_eq!(task["completed"], body["completed"], "create {i}: {task}");
            let tags = body["tags"].as_array().map_or(0, Vec::len) as u64;
            assert_eq!(task["tags"].as_array().map_or(0, Vec::len) as u64, tags, "{task}");
            let owner = i % users.len();
            created.insert(id_of(&task), owner);
            let ((all, done), tag_rows) = &mut expected[owner];
            *all += 1;
            *done += u64::from(body["completed"] == true);
            *tag_rows += tags;
        }
        assert_eq!(created.len(), CREATES, "every create has an id of its own");
        for (user, (counts, tags)) in users.iter().zip(expected) {
            assert_counts(&app, user, counts, tags).await;
        }

        let events = events_of(&app, &users).await;
        assert_contiguous(&events);
        let mut subjects = HashSet::new();
        for (sequence, owner, kind, subject, data_id) in &events {
            assert_eq!(kind, "todo.task.created", "event {sequence}");
            let Some(&of) = created.get(subject) else {
                panic!("event {sequence}'s subject {subject} is no task created here");
            };
            assert_eq!(owner, &users[of].id, "event {sequence} belongs to its task's owner");
            assert_eq!(data_id, subject, "event {sequence}'s data is its subject's task");
            assert!(subjects.insert(subject), "task {subject}: a second event, {sequence}");
        }
        assert_eq!(subjects.len(), CREATES, "one event for each task created");
    }
}

on_both_databases! {
    /// Creates of four owners arriving, while the writer is held, among completions, a
    /// replacement and deletes of the same owners' tasks. On PostgreSQL each of these writes,
    /// like a run of creates, locks its owners' `task_counts` rows at its task statement and
    /// the event log's head row last, both until its commit, so that none waits for another
    /// in a cycle (a run that took the head row first would deadlock with them). Every write
    /// succeeds, every count stays true, and every write has its event, without a gap.
    async fn creates_among_other_writes_of_the_same_owners_all_succeed(app: TestApp) {
        let users = four_owners(&app).await;
        let mut earlier = Vec::new();
        for user in &users {
            let mut ids = Vec::new();
            for n in 0..4 {
                let task = app
                    .create_task(user, json!({"title": format!("earlier {n}"), "tags": ["old"]}))
                    .await;
                ids.push(id_of(&task));
            }
            earlier.push(ids);
        }
        // Per owner, one write to each earlier task, spread among the creates so that they
        // arrive mixed: a complete, a PATCH that completes, a delete, and a PUT that completes
        // and leaves the tags out (which empties them). The earlier tasks then count 3 tasks,
        // 3 completed, and 2 tag rows.
        let mut requests: Vec<RequestBuilder> = Vec::new();
        let mut expected: Vec<((u64, u64), u64)> = vec![((3, 3), 2); users.len()];
        for i in 0..CREATES {
            let owner = i % users.len();
            let user = &users[owner];
            let body = create_body(i);
            requests.push(
                app.authed(Method::POST, &TestApp::tasks_path(user), &user.token)
                    .json(&body),
            );
            let ((all, done), tags) = &mut expected[owner];
            *all += 1;
            *done += u64::from(body["completed"] == true);
            *tags += body["tags"].as_array().map_or(0, Vec::len) as u64;
            if i.is_multiple_of(3) {
                // 16 such i: each of the four owners, each of the four writes.
                let (of, write) = (i / 3 % users.len(), i / 3 / users.len());
                let user = &users[of];
                let path = TestApp::task_path(user, &earlier[of][write]);
                requests.push(match write {
                    0 => app.authed(Method::PATCH, &format!("{path}/complete"), &user.token),
                    1 => app
                        .authed(Method::PATCH, &path, &user.token)
                        .json(&json!({"completed": true})),
                    2 => app.authed(Method::DELETE, &path, &user.token),
                    _ => app
                        .authed(Method::PUT, &path, &user.token)
                        .json(&json!({"title": "replaced", "description": null, "completed": true})),
                });
            }
        }
        let responses = Blocker::send_meanwhile(&app, requests).await;
        for (i, response) in responses.into_iter().enumerate() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert!(status.is_success(), "request {i}: {status} {body}");
        }
        for (user, (counts, tags)) in users.iter().zip(expected) {
            assert_counts(&app, user, counts, tags).await;
        }
        let events = events_of(&app, &users).await;
        assert_eq!(events.len(), 16 + CREATES + 16, "one event for each write");
        assert_contiguous(&events);
        assert_times_follow_sequences(&app, &users).await;
    }
}

/// Asserts that, read from the owners' feeds, an event's `time` (its commit time) never goes
/// back as its `sequence` goes up, however long each write waited for its turn to append.
async fn assert_times_follow_sequences(app: &TestApp, users: &[TestUser]) {
    let mut events = Vec::new();
    for user in users {
        let (status, page) = app
            .get_json(user, &format!("/api/{}/events?limit=100", user.id))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for event in page["items"].as_array().expect("items") {
            let field = |name: &str| event[name].as_str().expect(name).to_owned();
            // Parsed, not compared as text: a time on a whole second has no fraction
            // ("…:45Z" sorts after "…:45.013Z" as text).
            let time = chrono::DateTime::parse_from_rfc3339(&field("time")).expect("RFC 3339");
            events.push((field("sequence"), time));
        }
    }
    // Sequences are zero-padded, so they sort as text.
    events.sort();
    for pair in events.windows(2) {
        assert!(pair[0].1 <= pair[1].1, "time goes back: {pair:?}");
    }
}

/// The version an `ETag` header names (`"7"` is version 7).
fn version_of(response: &reqwest::Response) -> i64 {
    let etag = response.headers()["etag"].to_str().expect("an ASCII ETag");
    etag.trim_matches('"')
        .parse()
        .expect("the ETag is a version")
}

on_both_databases! {
    /// Updates arriving together while the writer is held: twelve PATCHes of one task, and
    /// for each of four owners a change of a task's tags and the completion of a recurring
    /// task (which creates its next occurrence). They go in runs, each writing a task at most
    /// once and only if it is still as its update read it; an update whose task changed
    /// meanwhile reads it again. Either way the outcome is that of the updates applied
    /// one after another: the twelve each saw their own version, none was lost, their events
    /// follow the same order, and every count, tag row and event is true.
    async fn concurrent_updates_apply_one_after_another_and_lose_nothing(app: TestApp) {
        let users = four_owners(&app).await;
        let mut tagged = Vec::new();
        let mut recurring = Vec::new();
        for user in &users {
            let task = app.create_task(user, json!({"title": "tagged", "tags": ["a"]})).await;
            tagged.push(id_of(&task));
            let task = app
                .create_task(
                    user,
                    json!({
                        "title": "recurring",
                        "due_at": "2030-01-07T09:00:00.000Z",
                        "recurrence": {"frequency": "weekly"},
                    }),
                )
                .await;
            recurring.push(id_of(&task));
        }
        let alice = &users[0];
        let contended = id_of(&app.create_task(alice, json!({"title": "contended"})).await);
        let contended_path = TestApp::task_path(alice, &contended);

        const EDITS: usize = 12;
        let mut requests: Vec<RequestBuilder> = (0..EDITS)
            .map(|n| {
                app.authed(Method::PATCH, &contended_path, &alice.token)
                    .json(&json!({"description": format!("edit {n}")}))
            })
            .collect();
        for (owner, user) in users.iter().enumerate() {
            requests.push(
                app.authed(Method::PATCH, &TestApp::task_path(user, &tagged[owner]), &user.token)
                    .json(&json!({"tags": ["b", "c"]})),
            );
            let path = TestApp::task_path(user, &recurring[owner]);
            requests.push(app.authed(Method::PATCH, &format!("{path}/complete"), &user.token));
        }
        let responses = Blocker::send_meanwhile(&app, requests).await;

        // The contended task's edits: each answered with a version of its own, 2 to 13.
        let mut edit_at_version = HashMap::new();
        let mut body_at_version = HashMap::new();
        for (i, response) in responses.into_iter().enumerate() {
            let status = response.status();
            let version = (status == StatusCode::OK).then(|| version_of(&response));
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!(status, StatusCode::OK, "request {i}: {body}");
            if i < EDITS {
                let description = body["description"].as_str().unwrap().to_owned();
                assert_eq!(description, format!("edit {i}"), "edit {i} answers with itself");
                let seen = edit_at_version.insert(version.unwrap(), description);
                assert!(seen.is_none(), "two edits answered with version {version:?}");
                body_at_version.insert(version.unwrap(), body);
            }
        }
        let versions: HashSet<i64> = edit_at_version.keys().copied().collect();
        assert_eq!(versions, (2..=1 + EDITS as i64).collect(), "the edits' versions");
        let last = app
            .authed(Method::GET, &contended_path, &alice.token)
            .send()
            .await
            .unwrap();
        assert_eq!(version_of(&last), 1 + EDITS as i64, "no edit lost");
        let last: Value = last.json().await.unwrap();
        // Each edit answered with the task as stored after it (an edit planned from the task
        // as the one before wrote it, without reading it, included): the last one is what a
        // GET now reads, and `updated_at` went up with every version.
        assert_eq!(last, body_at_version[&(1 + EDITS as i64)], "the last edit's answer is stored");
        assert_eq!(last["title"], "contended", "what no edit changed stays");
        for version in 3..=1 + EDITS as i64 {
            let (earlier, later) = (&body_at_version[&(version - 1)], &body_at_version[&version]);
            let time = |body: &Value| {
                chrono::DateTime::parse_from_rfc3339(body["updated_at"].as_str().unwrap()).unwrap()
            };
            assert!(time(earlier) < time(later), "updated_at of version {version}");
            assert_eq!(earlier["created_at"], later["created_at"]);
        }

        // Its events, in sequence order, are the edits in version order.
        let described: Vec<String> = app
            .owner_rows::<(i64, String)>(
                "SELECT sequence, data FROM task_events
                  WHERE subject = $1 AND type = 'todo.task.updated' ORDER BY sequence",
                &contended,
            )
            .await
            .into_iter()
            .map(|(_, data)| {
                let data: Value = serde_json::from_str(&data).unwrap();
                data["description"].as_str().unwrap().to_owned()
            })
            .collect();
        let in_version_order: Vec<String> = (2..=1 + EDITS as i64)
            .map(|version| edit_at_version[&version].clone())
            .collect();
        assert_eq!(described, in_version_order, "the events follow the versions");

        // Each owner: the tagged task, the completed recurring one, its next occurrence (and
        // alice's contended task); the two tags that replaced the one.
        for (owner, user) in users.iter().enumerate() {
            let tasks = if owner == 0 { 4 } else { 3 };
            assert_counts(&app, user, (tasks, 1), 2).await;
            let (status, tags) = app
                .get_json(user, &TestApp::task_path(user, &tagged[owner]))
                .await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(tags["tags"], json!(["b", "c"]), "{}", user.username);
        }
        let events = events_of(&app, &users).await;
        // Created: 2 per owner and the contended task; then the edits, the tag changes, and a
        // completion and an occurrence's creation per owner.
        assert_eq!(events.len(), 8 + 1 + EDITS + 4 + 8, "one event for each write");
        assert_contiguous(&events);
        assert_times_follow_sequences(&app, &users).await;
    }
}

/// The task's reminder flag, as stored.
async fn reminder_sent(app: &TestApp, task: &str) -> bool {
    app.owner_rows::<(bool,)>(
        "SELECT reminder_sent FROM tasks WHERE CAST(id AS TEXT) = $1",
        task,
    )
    .await[0]
        .0
}

on_both_databases! {
    /// A reminder is sent (its flag set, the task's version unchanged) while a PATCH of the
    /// same task waits to be written: the PATCH, which changes only the title, leaves the flag
    /// set. The PATCH read the task before the flag was set; its write then finds the task
    /// changed, and it reads and plans again, rather than writing the flag back to what it
    /// read (which would send the reminder a second time).
    async fn a_reminder_sent_while_an_update_waits_is_not_undone(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app
            .create_task(
                &alice,
                json!({"title": "remind me", "remind_at": "2099-01-01T09:00:00.000Z"}),
            )
            .await;
        let id = id_of(&task);
        let path = TestApp::task_path(&alice, &id);
        let held = match app.backend {
            Backend::Sqlite => {
                let mut holder = sqlx::SqliteConnection::connect(&app.database_url).await.unwrap();
                holder.execute("BEGIN IMMEDIATE").await.unwrap();
                Held::Sqlite(holder)
            }
            Backend::Postgres => {
                let mut holder = sqlx::PgConnection::connect(&app.database_url).await.unwrap();
                holder.execute("BEGIN").await.unwrap();
                sqlx::query("SELECT 1 FROM tasks WHERE id = $1::uuid FOR UPDATE")
                    .bind(&id)
                    .execute(&mut holder)
                    .await
                    .unwrap();
                Held::Postgres(holder)
            }
        };
        let patch = tokio::spawn(
            app.authed(Method::PATCH, &path, &alice.token)
                .json(&json!({"title": "renamed"}))
                .send(),
        );
        // Time for the PATCH to read the task and wait for the lock.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        match held {
            Held::Sqlite(mut holder) => {
                sqlx::query("UPDATE tasks SET reminder_sent = TRUE WHERE id = $1")
                    .bind(&id)
                    .execute(&mut holder)
                    .await
                    .unwrap();
                holder.execute("COMMIT").await.unwrap();
            }
            Held::Postgres(mut holder) => {
                sqlx::query("UPDATE tasks SET reminder_sent = TRUE WHERE id = $1::uuid")
                    .bind(&id)
                    .execute(&mut holder)
                    .await
                    .unwrap();
                holder.execute("COMMIT").await.unwrap();
            }
        }
        let response = patch.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let patched: Value = response.json().await.unwrap();
        assert_eq!(patched["title"], "renamed");
        assert!(reminder_sent(&app, &id).await, "the sent reminder's flag stays set");
    }
}

enum Held {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}
