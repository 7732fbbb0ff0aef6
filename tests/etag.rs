//! Task versions over HTTP: every task response carries an `ETag` that grows by one per
//! change, and `PUT`, `PATCH`, `PATCH /complete` and `DELETE` honour `If-Match`, so that two
//! clients editing the same task cannot silently overwrite each other.

mod common;

use common::*;
use futures_util::future::join_all;
use reqwest::{
    Method, RequestBuilder, Response, StatusCode,
    header::{ETAG, IF_MATCH},
};
use serde_json::{Value, json};

/// The four routes that change an existing task and honour `If-Match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    Replace,
    Update,
    Complete,
    Delete,
}

const WRITES: [Write; 4] = [
    Write::Replace,
    Write::Update,
    Write::Complete,
    Write::Delete,
];

impl Write {
    /// A request of this kind on task `id` of `user`, with a body the route accepts.
    fn request(self, app: &TestApp, user: &TestUser, id: &str) -> RequestBuilder {
        let path = TestApp::task_path(user, id);
        match self {
            Write::Replace => app.authed(Method::PUT, &path, &user.token).json(&json!({
                "title": "Replaced",
                "description": "by PUT",
                "completed": true,
            })),
            Write::Update => app
                .authed(Method::PATCH, &path, &user.token)
                .json(&json!({"title": "Patched"})),
            Write::Complete => app
                .authed(Method::PATCH, &format!("{path}/complete"), &user.token)
                .json(&json!({"completed": true})),
            Write::Delete => app.authed(Method::DELETE, &path, &user.token),
        }
    }
}

fn id_of(task: &Value) -> String {
    task["id"]
        .as_str()
        .expect("a task has a string id")
        .to_owned()
}

/// The `ETag` of `response`, which must carry exactly one strong tag of the form `"N"`.
fn etag_of(response: &Response) -> String {
    let values: Vec<_> = response.headers().get_all(ETAG).iter().collect();
    assert_eq!(values.len(), 1, "exactly one ETag header: {values:?}");
    let tag = values[0].to_str().expect("ETag is text").to_owned();
    let digits = tag
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("ETag {tag:?} is a quoted strong tag"));
    assert!(
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
        "ETag {tag:?} holds a version number"
    );
    tag
}

/// The tag of version `n`.
fn tag(n: u64) -> String {
    format!("\"{n}\"")
}

async fn send(request: RequestBuilder) -> Response {
    request.send().await.expect("request is sent")
}

/// Reads the task and returns its body and `ETag`.
async fn read(app: &TestApp, user: &TestUser, id: &str) -> (Value, String) {
    let response = send(app.authed(Method::GET, &TestApp::task_path(user, id), &user.token)).await;
    assert_eq!(response.status(), StatusCode::OK, "reading task {id}");
    let etag = etag_of(&response);
    (response.json().await.expect("task body"), etag)
}

/// Creates a task and returns its id and `ETag`.
async fn create(app: &TestApp, user: &TestUser, title: &str) -> (String, String) {
    let response = send(
        app.authed(Method::POST, &TestApp::tasks_path(user), &user.token)
            .json(&json!({"title": title, "description": "original"})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let etag = etag_of(&response);
    let task: Value = response.json().await.expect("task body");
    (id_of(&task), etag)
}

/// Changes the task once without a precondition, so that its version moves on.
async fn touch(app: &TestApp, user: &TestUser, id: &str) -> String {
    let response = send(
        app.authed(Method::PATCH, &TestApp::task_path(user, id), &user.token)
            .json(&json!({"description": "touched"})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    etag_of(&response)
}

on_both_databases! {
    async fn a_created_task_is_version_one_and_reading_it_gives_the_same_tag(app: TestApp) {
        let alice = app.signup("alice").await;
        let (id, created) = create(&app, &alice, "Buy milk").await;
        assert_eq!(created, tag(1));
        let (_, read_tag) = read(&app, &alice, &id).await;
        assert_eq!(read_tag, tag(1));
        let (_, again) = read(&app, &alice, &id).await;
        assert_eq!(again, tag(1), "reading does not change the version");
    }

    async fn every_change_raises_the_version_by_one_on_every_route(app: TestApp) {
        let alice = app.signup("alice").await;
        let (id, created) = create(&app, &alice, "Buy milk").await;
        assert_eq!(created, tag(1));
        let path = TestApp::task_path(&alice, &id);

        let put = send(app.authed(Method::PUT, &path, &alice.token).json(&json!({
            "title": "Buy oat milk", "description": null, "completed": false,
        })))
        .await;
        assert_eq!(put.status(), StatusCode::OK);
        assert_eq!(etag_of(&put), tag(2), "PUT");

        let patch = send(
            app.authed(Method::PATCH, &path, &alice.token)
                .json(&json!({"description": "2 litres"})),
        )
        .await;
        assert_eq!(patch.status(), StatusCode::OK);
        assert_eq!(etag_of(&patch), tag(3), "PATCH");

        let set = send(
            app.authed(Method::PATCH, &format!("{path}/complete"), &alice.token)
                .json(&json!({"completed": true})),
        )
        .await;
        assert_eq!(set.status(), StatusCode::OK);
        assert_eq!(etag_of(&set), tag(4), "PATCH /complete with a body");

        let toggle = send(app.authed(Method::PATCH, &format!("{path}/complete"), &alice.token)).await;
        assert_eq!(toggle.status(), StatusCode::OK);
        assert_eq!(etag_of(&toggle), tag(5), "PATCH /complete without a body");
        let toggled: Value = toggle.json().await.unwrap();
        assert_eq!(toggled["completed"], false);

        let (task, read_tag) = read(&app, &alice, &id).await;
        assert_eq!(read_tag, tag(5));
        assert_eq!(task["title"], "Buy oat milk");
        assert_eq!(task["description"], "2 litres");
    }

    async fn a_refused_change_does_not_raise_the_version(app: TestApp) {
        let alice = app.signup("alice").await;
        let (id, _) = create(&app, &alice, "Buy milk").await;
        let path = TestApp::task_path(&alice, &id);
        let refusals = [
            app.authed(Method::PUT, &path, &alice.token).json(&json!({"title": "no other fields"})),
            app.authed(Method::PATCH, &path, &alice.token).json(&json!({})),
            app.authed(Method::PATCH, &path, &alice.token).json(&json!({"title": "   "})),
            app.authed(Method::PATCH, &format!("{path}/complete"), &alice.token)
                .json(&json!({"completed": "yes"})),
            app.authed(Method::PATCH, &path, &alice.token)
                .header(IF_MATCH, tag(9))
                .json(&json!({"title": "stale"})),
        ];
        for request in refusals {
            let response = send(request).await;
            assert!(response.status().is_client_error(), "{}", response.status());
        }
        let (task, etag) = read(&app, &alice, &id).await;
        assert_eq!(etag, tag(1));
        assert_eq!(task["title"], "Buy milk");
    }

    async fn writes_without_if_match_work_as_before(app: TestApp) {
        let alice = app.signup("alice").await;
        for write in WRITES {
            let (id, _) = create(&app, &alice, "Buy milk").await;
            touch(&app, &alice, &id).await;
            let response = send(write.request(&app, &alice, &id)).await;
            assert_eq!(response.status(), StatusCode::OK, "{write:?}");
        }
    }

    async fn the_current_etag_in_if_match_lets_every_write_through(app: TestApp) {
        let alice = app.signup("alice").await;
        let (id, created) = create(&app, &alice, "Buy milk").await;
        assert_eq!(created, tag(1));
        // Start from a version other than 1, so that a hard-coded "1" would not pass.
        let mut current = touch(&app, &alice, &id).await;
        let mut version = 2;
        for write in [Write::Replace, Write::Update, Write::Complete] {
            let response = send(write.request(&app, &alice, &id).header(IF_MATCH, &current)).await;
            assert_eq!(response.status(), StatusCode::OK, "{write:?} with {current}");
            version += 1;
            current = etag_of(&response);
            assert_eq!(current, tag(version), "{write:?}");
        }
        let (task, _) = read(&app, &alice, &id).await;
        assert_eq!(task["title"], "Patched");
        assert_eq!(task["completed"], true);

        let deleted = send(Write::Delete.request(&app, &alice, &id).header(IF_MATCH, &current)).await;
        assert_eq!(deleted.status(), StatusCode::OK);
        let gone = send(app.authed(Method::GET, &TestApp::task_path(&alice, &id), &alice.token)).await;
        expect_problem(gone, StatusCode::NOT_FOUND).await;
    }

    async fn a_stale_etag_is_412_on_every_write_and_changes_nothing(app: TestApp) {
        let alice = app.signup("alice").await;
        let (id, first) = create(&app, &alice, "Buy milk").await;
        let current = touch(&app, &alice, &id).await;
        assert_eq!(current, tag(2));
        let (before, _) = read(&app, &alice, &id).await;
        for write in WRITES {
            let response = send(write.request(&app, &alice, &id).header(IF_MATCH, &first)).await;
            let problem = expect_problem(response, StatusCode::PRECONDITION_FAILED).await;
            assert_eq!(problem["title"], "Precondition Failed", "{write:?}");
            let (after, etag) = read(&app, &alice, &id).await;
            assert_eq!(after, before, "{write:?} with a stale tag changed the task");
            assert_eq!(etag, current, "{write:?} with a stale tag changed the version");
        }
    }

    async fn a_tag_from_the_future_is_412_too(app: TestApp) {
        let alice = app.signup("alice").await;
        let (id, _) = create(&app, &alice, "Buy milk").await;
        for write in WRITES {
            let response = send(write.request(&app, &alice, &id).header(IF_MATCH, tag(2))).await;
            expect_problem(response, StatusCode::PRECONDITION_FAILED).await;
        }
        let (task, etag) = read(&app, &alice, &id).await;
        assert_eq!(etag, tag(1));
        assert_eq!(task["title"], "Buy milk");
    }

    async fn if_match_star_matches_whatever_the_version(app: TestApp) {
        let alice = app.signup("alice").await;
        for write in WRITES {
            let (id, _) = create(&app, &alice, "Buy milk").await;
            touch(&app, &alice, &id).await;
            touch(&app, &alice, &id).await;
            let response = send(write.request(&app, &alice, &id).header(IF_MATCH, "*")).await;
            assert_eq!(response.status(), StatusCode::OK, "{write:?} with *");
            if write != Write::Delete {
                assert_eq!(etag_of(&response), tag(4), "{write:?}");
            }
        }
    }

    async fn a_list_of_tags_matches_when_one_of_them_is_current(app: TestApp) {
        let alice = app.signup("alice").await;
        let (id, _) = create(&app, &alice, "Buy milk").await;
        let current = touch(&app, &alice, &id).await;
        assert_eq!(current, tag(2));

        let none_current = send(
            Write::Update
                .request(&app, &alice, &id)
                .header(IF_MATCH, r#""1", "3", "17""#),
        )
        .await;
        expect_problem(none_current, StatusCode::PRECONDITION_FAILED).await;

        let one_current = send(
            Write::Update
                .request(&app, &alice, &id)
                .header(IF_MATCH, r#""1", "2", "17""#),
        )
        .await;
        assert_eq!(one_current.status(), StatusCode::OK);
        assert_eq!(etag_of(&one_current), tag(3));

        // The same list split over several If-Match header lines.
        let over_lines = send(
            Write::Replace
                .request(&app, &alice, &id)
                .header(IF_MATCH, r#""1""#)
                .header(IF_MATCH, r#""3""#),
        )
        .await;
        assert_eq!(over_lines.status(), StatusCode::OK);
        assert_eq!(etag_of(&over_lines), tag(4));
    }

    async fn a_weak_tag_never_matches_even_for_the_current_version(app: TestApp) {
        let alice = app.signup("alice").await;
        let (id, current) = create(&app, &alice, "Buy milk").await;
        let weak = format!("W/{current}");
        for write in WRITES {
            let response = send(write.request(&app, &alice, &id).header(IF_MATCH, &weak)).await;
            expect_problem(response, StatusCode::PRECONDITION_FAILED).await;
        }
        let (task, etag) = read(&app, &alice, &id).await;
        assert_eq!(etag, current);
        assert_eq!(task["title"], "Buy milk");

        // A weak tag beside the strong one does not spoil the strong one.
        let mixed = send(
            Write::Update
                .request(&app, &alice, &id)
                .header(IF_MATCH, format!("{weak}, {current}")),
        )
        .await;
        assert_eq!(mixed.status(), StatusCode::OK);
    }

    async fn a_malformed_if_match_is_a_400_naming_if_match(app: TestApp) {
        let alice = app.signup("alice").await;
        let (id, _) = create(&app, &alice, "Buy milk").await;
        for value in ["1", "3", "abc", "\"1", "1\"", "\"a\"b\"", "W/1", "\"1\" \"2\""] {
            for write in WRITES {
                let response = send(write.request(&app, &alice, &id).header(IF_MATCH, value)).await;
                let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
                assert!(
                    error_fields(&problem).iter().any(|field| field == "If-Match"),
                    "{write:?} with If-Match {value:?}: {problem}"
                );
            }
        }
        let (task, etag) = read(&app, &alice, &id).await;
        assert_eq!(etag, tag(1));
        assert_eq!(task["title"], "Buy milk");
    }

    async fn of_two_tabs_holding_the_same_etag_the_first_put_wins_and_the_second_gets_412(app: TestApp) {
        let alice = app.signup("alice").await;
        let (id, _) = create(&app, &alice, "Buy milk").await;
        let path = TestApp::task_path(&alice, &id);
        let (_, seen_by_tab_one) = read(&app, &alice, &id).await;
        let (_, seen_by_tab_two) = read(&app, &alice, &id).await;
        assert_eq!(seen_by_tab_one, seen_by_tab_two);

        let first = send(
            app.authed(Method::PUT, &path, &alice.token)
                .header(IF_MATCH, &seen_by_tab_one)
                .json(&json!({"title": "Tab one", "description": "from tab one", "completed": true})),
        )
        .await;
        assert_eq!(first.status(), StatusCode::OK);
        let first_tag = etag_of(&first);
        let first_task: Value = first.json().await.unwrap();

        let second = send(
            app.authed(Method::PUT, &path, &alice.token)
                .header(IF_MATCH, &seen_by_tab_two)
                .json(&json!({"title": "Tab two", "description": null, "completed": false})),
        )
        .await;
        expect_problem(second, StatusCode::PRECONDITION_FAILED).await;

        let (task, etag) = read(&app, &alice, &id).await;
        assert_eq!(task, first_task, "the first tab's data stays");
        assert_eq!(etag, first_tag);
        assert_eq!(task["title"], "Tab one");

        // Tab two reloads, sees tab one's version, and may now write over it knowingly.
        let retry = send(
            app.authed(Method::PUT, &path, &alice.token)
                .header(IF_MATCH, &etag)
                .json(&json!({"title": "Tab two", "description": null, "completed": false})),
        )
        .await;
        assert_eq!(retry.status(), StatusCode::OK);
        assert_eq!(etag_of(&retry), tag(3));
    }

    async fn of_many_simultaneous_puts_with_the_same_etag_exactly_one_wins(app: TestApp) {
        let alice = app.signup("alice").await;
        let (id, current) = create(&app, &alice, "Buy milk").await;
        let path = TestApp::task_path(&alice, &id);
        let attempts = (0..8).map(|n| {
            let request = app
                .authed(Method::PUT, &path, &alice.token)
                .header(IF_MATCH, &current)
                .json(&json!({"title": format!("Writer {n}"), "description": null, "completed": false}));
            async move {
                let response = send(request).await;
                let status = response.status();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (status, body)
            }
        });
        let results = join_all(attempts).await;
        let winners: Vec<&Value> = results
            .iter()
            .filter(|(status, _)| *status == StatusCode::OK)
            .map(|(_, body)| body)
            .collect();
        for (status, body) in &results {
            assert!(
                *status == StatusCode::OK || *status == StatusCode::PRECONDITION_FAILED,
                "every conditional PUT either wins or gets 412, not {status}: {body}"
            );
        }
        assert_eq!(winners.len(), 1, "exactly one writer wins: {results:?}");
        let (task, etag) = read(&app, &alice, &id).await;
        assert_eq!(etag, tag(2), "one change, one version");
        assert_eq!(task["title"], winners[0]["title"], "the winner's data stays");
    }

    async fn if_match_on_a_missing_task_is_404(app: TestApp) {
        let alice = app.signup("alice").await;
        let missing = uuid::Uuid::new_v4().to_string();
        for value in ["*", "\"1\""] {
            for write in WRITES {
                let response = send(write.request(&app, &alice, &missing).header(IF_MATCH, value)).await;
                expect_problem(response, StatusCode::NOT_FOUND).await;
            }
        }
    }

    async fn if_match_on_another_users_task_is_404_and_changes_nothing(app: TestApp) {
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        let (bobs, bobs_tag) = create(&app, &bob, "Bob's task").await;
        for value in ["*", bobs_tag.as_str(), "\"7\""] {
            for write in WRITES {
                // Alice's own path with Bob's task id: another user's task looks missing.
                let response = send(write.request(&app, &alice, &bobs).header(IF_MATCH, value)).await;
                expect_problem(response, StatusCode::NOT_FOUND).await;
            }
        }
        let (task, etag) = read(&app, &bob, &bobs).await;
        assert_eq!(etag, bobs_tag);
        assert_eq!(task["title"], "Bob's task");
    }

    async fn a_request_without_a_token_is_401_whatever_its_if_match(app: TestApp) {
        let alice = app.signup("alice").await;
        let (id, _) = create(&app, &alice, "Buy milk").await;
        let path = TestApp::task_path(&alice, &id);
        for value in ["\"9\"", "not a tag", "*"] {
            let response = send(
                app.request(Method::PUT, &path)
                    .header(IF_MATCH, value)
                    .json(&json!({"title": "x", "description": null, "completed": true})),
            )
            .await;
            expect_problem(response, StatusCode::UNAUTHORIZED).await;
            let response = send(app.request(Method::DELETE, &path).header(IF_MATCH, value)).await;
            expect_problem(response, StatusCode::UNAUTHORIZED).await;
        }
        let (_, etag) = read(&app, &alice, &id).await;
        assert_eq!(etag, tag(1));
    }
}
