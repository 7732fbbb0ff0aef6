//! Account self-service over HTTP: change the password, sign out everywhere, change the
//! username or email, delete the account — and tokens that really stop working, on every
//! instance sharing the database. Deleting an account leaves a `todo.task.deleted` event for
//! each of its tasks in the outbox.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

const NEW_PASSWORD: &str = "a brand new passphrase";

async fn send(request: reqwest::RequestBuilder) -> Response {
    request.send().await.expect("request")
}

async fn change_password(app: &TestApp, token: &str, body: Value) -> Response {
    send(
        app.authed(Method::POST, "/api/auth/password", token)
            .json(&body),
    )
    .await
}

fn password_change(current: &str) -> Value {
    json!({
        "current_password": current,
        "new_password": NEW_PASSWORD,
        "confirm_password": NEW_PASSWORD,
    })
}

async fn logout(app: &TestApp, token: &str) -> Response {
    send(app.authed(Method::POST, "/api/auth/logout", token)).await
}

async fn me(app: &TestApp, token: &str) -> Response {
    send(app.authed(Method::GET, "/api/auth/me", token)).await
}

async fn login(app: &TestApp, username: &str, password: &str) -> Response {
    send(
        app.request(Method::POST, "/api/auth/login")
            .json(&json!({"username": username, "password": password})),
    )
    .await
}

/// Logs in and returns the new token.
async fn login_token(app: &TestApp, username: &str, password: &str) -> String {
    let response = login(app, username, password).await;
    assert_eq!(response.status(), StatusCode::OK, "login of {username}");
    let body: Value = response.json().await.expect("login body");
    body["access_token"].as_str().expect("token").to_owned()
}

/// Asserts that `token` still opens both an account route and a task route of `user`.
async fn assert_token_works(app: &TestApp, user: &TestUser, token: &str, case: &str) {
    assert_eq!(me(app, token).await.status(), StatusCode::OK, "{case}: /me");
    let listing = send(app.authed(Method::GET, &TestApp::tasks_path(user), token)).await;
    assert_eq!(listing.status(), StatusCode::OK, "{case}: listing");
}

/// Asserts that `token` is refused, as any bad token is, on an account route and on every
/// kind of task route.
async fn assert_token_refused(app: &TestApp, user: &TestUser, token: &str, case: &str) {
    expect_unauthorized(me(app, token).await, &format!("{case}: /me")).await;
    let tasks = TestApp::tasks_path(user);
    expect_unauthorized(
        send(app.authed(Method::GET, &tasks, token)).await,
        &format!("{case}: listing"),
    )
    .await;
    expect_unauthorized(
        send(
            app.authed(Method::POST, &tasks, token)
                .json(&json!({"title": "x"})),
        )
        .await,
        &format!("{case}: create"),
    )
    .await;
}

/// Two applications on one database, as two instances behind a load balancer.
async fn two_instances(backend: Backend) -> (TestApp, TestApp, Option<String>) {
    match backend {
        Backend::Sqlite => {
            let first = TestApp::spawn(Backend::Sqlite).await;
            let second = TestApp::spawn_on(&first.database_url, |_| {}).await;
            (first, second, None)
        }
        Backend::Postgres => {
            let (name, url) = create_test_database().await;
            let first = TestApp::spawn_on(&url, |_| {}).await;
            let second = TestApp::spawn_on(&url, |_| {}).await;
            (first, second, Some(name))
        }
    }
}

/// Waits (a bounded number of times) until `token` gets a 401 from `/me` on `app`; returns
/// how long that took.
async fn wait_until_refused(app: &TestApp, token: &str) -> Duration {
    let start = Instant::now();
    for _ in 0..200 {
        if me(app, token).await.status() == StatusCode::UNAUTHORIZED {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the revoked token still works on the other instance after 5 s");
}

/// The types and subjects of `owner`'s events in the outbox, in sequence order, read from the
/// database itself (a deleted account can no longer read its feed).
async fn outbox_of(app: &TestApp, owner: &str) -> Vec<(String, String)> {
    const SQL: &str = "SELECT type, subject FROM task_events WHERE user_id = $1 ORDER BY sequence";
    app.owner_rows(SQL, owner).await
}

on_both_databases! {
    async fn a_password_change_returns_a_working_token_and_refuses_every_older_one(app: TestApp) {
        let alice = app.signup("alice").await;
        let second_device = login_token(&app, "alice", PASSWORD).await;
        let response = change_password(&app, &alice.token, password_change(PASSWORD)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers().get("cache-control").and_then(|v| v.to_str().ok()),
            Some("no-store")
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["user"]["id"], alice.id.as_str());
        assert_eq!(body["token_type"], "bearer");
        let fresh = body["access_token"].as_str().unwrap().to_owned();

        assert_token_refused(&app, &alice, &alice.token, "the token used for the change").await;
        assert_token_refused(&app, &alice, &second_device, "another device's token").await;
        assert_token_works(&app, &alice, &fresh, "the token the change returned").await;

        // The old password is gone, the new one logs in, and that token works too.
        expect_unauthorized(login(&app, "alice", PASSWORD).await, "the old password").await;
        let after = login_token(&app, "alice", NEW_PASSWORD).await;
        assert_token_works(&app, &alice, &after, "a login after the change").await;
    }

    async fn a_wrong_current_password_is_a_401_and_changes_nothing(app: TestApp) {
        let alice = app.signup("alice").await;
        let response = change_password(&app, &alice.token, password_change("not my password")).await;
        expect_problem(response, StatusCode::UNAUTHORIZED).await;
        assert_token_works(&app, &alice, &alice.token, "the token after a refused change").await;
        login_token(&app, "alice", PASSWORD).await;
        expect_unauthorized(login(&app, "alice", NEW_PASSWORD).await, "the refused new password").await;
    }

    async fn bad_password_change_bodies_are_400s_naming_the_field_and_change_nothing(app: TestApp) {
        let alice = app.signup("alice").await;
        let cases = [
            (json!({"new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}), "current_password"),
            (json!({"current_password": PASSWORD, "confirm_password": NEW_PASSWORD}), "new_password"),
            (json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}), "confirm_password"),
            (json!({"current_password": PASSWORD, "new_password": "short", "confirm_password": "short"}), "new_password"),
            (json!({"current_password": PASSWORD, "new_password": "é".repeat(37), "confirm_password": "é".repeat(37)}), "new_password"),
            (json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": "something else"}), "confirm_password"),
            (json!({"current_password": "", "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}), "current_password"),
            (json!({"current_password": PASSWORD, "new_password": 12345678, "confirm_password": NEW_PASSWORD}), "new_password"),
            (json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD, "colour": "red"}), "colour"),
            (json!([PASSWORD]), "body"),
        ];
        for (body, field) in cases {
            let problem = expect_problem(
                change_password(&app, &alice.token, body.clone()).await,
                StatusCode::BAD_REQUEST,
            )
            .await;
            assert!(error_fields(&problem).contains(&field.to_owned()), "{body}: {problem}");
        }
        let not_json = send(
            app.authed(Method::POST, "/api/auth/password", &alice.token)
                .header("content-type", "text/plain")
                .body("current_password=x"),
        )
        .await;
        expect_problem(not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
        assert_token_works(&app, &alice, &alice.token, "after refused bodies").await;
        login_token(&app, "alice", PASSWORD).await;
    }

    async fn logout_revokes_every_token_issued_so_far_and_a_later_login_works(app: TestApp) {
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        let phone = login_token(&app, "alice", PASSWORD).await;
        let response = logout(&app, &alice.token).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert!(response.bytes().await.unwrap().is_empty());
        assert_token_refused(&app, &alice, &alice.token, "the token that signed out").await;
        assert_token_refused(&app, &alice, &phone, "the phone's token").await;
        expect_unauthorized(logout(&app, &alice.token).await, "a second logout with it").await;
        // Other accounts are untouched, and alice signs in again.
        assert_token_works(&app, &bob, &bob.token, "bob's token").await;
        let again = login_token(&app, "alice", PASSWORD).await;
        assert_token_works(&app, &alice, &again, "a login after logout").await;
    }

    async fn tokens_minted_with_the_shared_secret_are_judged_by_their_issue_time(app: TestApp) {
        let alice = app.signup("alice").await;
        let claims = |iat: i64| json!({"sub": alice.id, "iat": iat, "exp": iat + 3600});
        let before = hs256_token(&claims(now() - 5), SECRET);
        let without_iat = hs256_token(&json!({"sub": alice.id, "exp": now() + 3600}), SECRET);
        assert_token_works(&app, &alice, &before, "minted before").await;
        assert_eq!(logout(&app, &alice.token).await.status(), StatusCode::NO_CONTENT);
        assert_token_refused(&app, &alice, &before, "minted before the logout").await;
        assert_token_refused(&app, &alice, &without_iat, "minted without iat").await;
        let after = hs256_token(&claims(now() + 2), SECRET);
        assert_token_works(&app, &alice, &after, "minted after the logout").await;
    }

    async fn patch_me_changes_username_and_email_after_checking_the_password(app: TestApp) {
        let alice = app.signup("alice").await;
        let response = send(
            app.authed(Method::PATCH, "/api/auth/me", &alice.token).json(&json!({
                "username": "alicia", "email": "Alicia@Example.org", "current_password": PASSWORD
            })),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let user: Value = response.json().await.unwrap();
        assert_eq!(user["id"], alice.id.as_str());
        assert_eq!(user["username"], "alicia");
        assert_eq!(user["email"], "alicia@example.org");
        // The token stays valid, /me shows the change, and both new names log in.
        let (status, shown) = app.get_json(&alice, "/api/auth/me").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(shown, user);
        login_token(&app, "alicia", PASSWORD).await;
        login_token(&app, "alicia@example.org", PASSWORD).await;
        expect_unauthorized(login(&app, "alice", PASSWORD).await, "the old username").await;

        // One field alone, and one's own name in another case, are fine.
        let response = send(
            app.authed(Method::PATCH, "/api/auth/me", &alice.token)
                .json(&json!({"username": "ALICIA", "current_password": PASSWORD})),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let user: Value = response.json().await.unwrap();
        assert_eq!(user["username"], "ALICIA");
        assert_eq!(user["email"], "alicia@example.org");
    }

    async fn patch_me_refuses_taken_names_bad_values_and_wrong_passwords_changing_nothing(app: TestApp) {
        let alice = app.signup("alice").await;
        app.signup("bob").await;
        let patch = |body: Value| {
            app.authed(Method::PATCH, "/api/auth/me", &alice.token).json(&body)
        };
        let taken = expect_problem(
            send(patch(json!({"username": "BOB", "current_password": PASSWORD}))).await,
            StatusCode::CONFLICT,
        )
        .await;
        assert!(taken["detail"].as_str().unwrap().contains("username"), "{taken}");
        // Another spelling of bob's address is bob's address.
        for spelling in ["bob@example.com", " BOB@Example.COM "] {
            let taken = expect_problem(
                send(patch(json!({"email": spelling, "current_password": PASSWORD}))).await,
                StatusCode::CONFLICT,
            )
            .await;
            assert!(taken["detail"].as_str().unwrap().contains("email"), "{taken}");
        }
        expect_problem(
            send(patch(json!({"username": "alicia", "current_password": "wrong password"}))).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        let cases = [
            (json!({"current_password": PASSWORD}), "body"),
            (json!({"username": "alicia"}), "current_password"),
            (json!({"username": "a", "current_password": PASSWORD}), "username"),
            (json!({"username": "has space", "current_password": PASSWORD}), "username"),
            (json!({"email": "not-an-email", "current_password": PASSWORD}), "email"),
            (json!({"email": null, "current_password": PASSWORD}), "email"),
            (json!({"username": "alicia", "current_password": PASSWORD, "password": "x"}), "password"),
        ];
        for (body, field) in cases {
            let problem = expect_problem(send(patch(body.clone())).await, StatusCode::BAD_REQUEST).await;
            assert!(error_fields(&problem).contains(&field.to_owned()), "{body}: {problem}");
        }
        let (status, shown) = app.get_json(&alice, "/api/auth/me").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(shown["username"], "alice");
        assert_eq!(shown["email"], "alice@example.com");
    }

    async fn deleting_the_account_deletes_its_tasks_revokes_its_tokens_and_leaves_others_untouched(app: TestApp) {
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        let mut alice_tasks = Vec::new();
        for title in ["alice one", "alice two"] {
            alice_tasks.push(app.create_task(&alice, json!({"title": title})).await);
        }
        let bobs = app.create_task(&bob, json!({"title": "bob's", "description": "keep"})).await;
        let phone = login_token(&app, "alice", PASSWORD).await;

        // A wrong password deletes nothing.
        let refused = send(
            app.authed(Method::DELETE, "/api/auth/me", &alice.token)
                .json(&json!({"password": "wrong password"})),
        )
        .await;
        expect_problem(refused, StatusCode::UNAUTHORIZED).await;
        let (_, page) = app.get_json(&alice, &TestApp::tasks_path(&alice)).await;
        assert_eq!(page["total"], 2);
        let missing = send(app.authed(Method::DELETE, "/api/auth/me", &alice.token).json(&json!({}))).await;
        let problem = expect_problem(missing, StatusCode::BAD_REQUEST).await;
        assert_eq!(error_fields(&problem), ["password"]);

        let response = send(
            app.authed(Method::DELETE, "/api/auth/me", &alice.token)
                .json(&json!({"password": PASSWORD})),
        )
        .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_token_refused(&app, &alice, &alice.token, "the deleting token").await;
        assert_token_refused(&app, &alice, &phone, "another device's token").await;
        expect_unauthorized(login(&app, "alice", PASSWORD).await, "login of a deleted account").await;
        // Each deleted task left a `todo.task.deleted` event, committed with the deletion.
        let mut deleted: Vec<(String, String)> = outbox_of(&app, &alice.id)
            .await
            .into_iter()
            .filter(|(kind, _)| kind == "todo.task.deleted")
            .collect();
        deleted.sort();
        let mut expected: Vec<(String, String)> = alice_tasks
            .iter()
            .map(|task| ("todo.task.deleted".to_owned(), task["id"].as_str().unwrap().to_owned()))
            .collect();
        expected.sort();
        assert_eq!(deleted, expected);
        assert!(
            outbox_of(&app, &bob.id).await.iter().all(|(kind, _)| kind != "todo.task.deleted"),
            "bob lost nothing"
        );

        // The name is free again, and the new alice starts with nothing.
        let new_alice = app.signup("alice").await;
        assert_ne!(new_alice.id, alice.id);
        let (_, page) = app.get_json(&new_alice, &TestApp::tasks_path(&new_alice)).await;
        assert_eq!(page["total"], 0);

        // Bob's account and task are exactly as they were.
        assert_token_works(&app, &bob, &bob.token, "bob's token").await;
        let (status, read) = app
            .get_json(&bob, &TestApp::task_path(&bob, bobs["id"].as_str().unwrap()))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(read, bobs);
    }

    async fn subjects_without_a_local_account_get_404_on_every_account_route(app: TestApp) {
        let claims = |sub: &str| json!({"sub": sub, "iat": now(), "exp": now() + 3600});
        for subject in ["better-auth-user-42", "0192f0c4-0000-7000-8000-000000000000"] {
            let token = hs256_token(&claims(subject), SECRET);
            let requests = [
                app.authed(Method::GET, "/api/auth/me", &token),
                app.authed(Method::POST, "/api/auth/logout", &token),
                app.authed(Method::POST, "/api/auth/password", &token).json(&password_change(PASSWORD)),
                app.authed(Method::PATCH, "/api/auth/me", &token)
                    .json(&json!({"username": "someone", "current_password": PASSWORD})),
                app.authed(Method::DELETE, "/api/auth/me", &token).json(&json!({"password": PASSWORD})),
            ];
            for request in requests {
                expect_problem(send(request).await, StatusCode::NOT_FOUND).await;
            }
        }
    }

    async fn every_account_route_needs_a_valid_token(app: TestApp) {
        let forged = hs256_token(&json!({"sub": "x", "exp": now() + 60}), "another-secret-that-is-long-enough-0123");
        for token in [None, Some(forged.as_str())] {
            let requests = [
                (Method::GET, "/api/auth/me"),
                (Method::PATCH, "/api/auth/me"),
                (Method::DELETE, "/api/auth/me"),
                (Method::POST, "/api/auth/password"),
                (Method::POST, "/api/auth/logout"),
            ];
            for (method, path) in requests {
                let request = match token {
                    Some(token) => app.authed(method.clone(), path, token),
                    None => app.request(method.clone(), path),
                };
                expect_unauthorized(send(request.json(&json!({}))).await, &format!("{method} {path}")).await;
            }
        }
    }
}

on_both_backends! {
    async fn a_revocation_on_one_instance_holds_on_the_other_within_about_a_second(backend: Backend) {
        let (a, b, database) = two_instances(backend).await;
        let alice = a.signup("alice").await;
        let on_b = login_token(&b, "alice", PASSWORD).await;
        assert_token_works(&b, &alice, &alice.token, "A's token on B").await;

        // Sign out through A: B refuses both tokens once it has polled.
        assert_eq!(logout(&a, &alice.token).await.status(), StatusCode::NO_CONTENT);
        let took = wait_until_refused(&b, &on_b).await;
        eprintln!("B refused the revoked token {} ms after the logout on A", took.as_millis());
        assert_token_refused(&b, &alice, &alice.token, "A's token on B").await;
        assert_token_refused(&a, &alice, &on_b, "B's token on A").await;

        // A password change through B: A refuses the token from before, accepts the new one.
        let fresh_login = login_token(&a, "alice", PASSWORD).await;
        let changed = change_password(&b, &fresh_login, password_change(PASSWORD)).await;
        assert_eq!(changed.status(), StatusCode::OK);
        let fresh: Value = changed.json().await.unwrap();
        let fresh = fresh["access_token"].as_str().unwrap().to_owned();
        wait_until_refused(&a, &fresh_login).await;
        assert_token_works(&a, &alice, &fresh, "the new token on A").await;

        // A restarted instance still refuses what was revoked before it started.
        let c = TestApp::spawn_on(&a.database_url, |_| {}).await;
        assert_token_refused(&c, &alice, &alice.token, "an old token on a new instance").await;
        assert_token_works(&c, &alice, &fresh, "the new token on a new instance").await;

        drop((a, b, c));
        if let Some(name) = database {
            drop_test_database(name);
        }
    }

    async fn wrong_passwords_on_account_routes_count_against_the_login_limits(backend: Backend) {
        let app = TestApp::spawn_with(backend, |settings| settings.auth_rate_limit_per_account = 2).await;
        let alice = app.signup("alice").await;
        for attempt in 0..2 {
            let response = change_password(&app, &alice.token, password_change("wrong password")).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "attempt {attempt}");
        }
        let limited = change_password(&app, &alice.token, password_change("wrong password")).await;
        assert!(limited.headers().contains_key("retry-after"));
        expect_problem(limited, StatusCode::TOO_MANY_REQUESTS).await;
        // The limit is the login's: logging in now is refused too.
        expect_problem(login(&app, "alice", PASSWORD).await, StatusCode::TOO_MANY_REQUESTS).await;
    }
}

/// A row of `tasks` locked by a transaction of its own, until it is rolled back.
async fn hold_row(app: &TestApp, id: &str) -> sqlx::PgConnection {
    let mut holder = sqlx::PgConnection::connect(&app.database_url)
        .await
        .unwrap();
    holder.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT 1 FROM tasks WHERE id = $1::uuid FOR UPDATE")
        .bind(id)
        .execute(&mut holder)
        .await
        .unwrap();
    holder
}

fn id(task: &Value) -> String {
    task["id"].as_str().unwrap().to_owned()
}

/// A run of updates locks its tasks in id order; an account's deletion must lock the owner's
/// tasks in the same order, or the two deadlock. Here a run of three updates (alice's X1
/// and X2, bob's Xm between them by id) meets alice's deletion, which would otherwise reach
/// X2 first (X1 was moved behind it): PostgreSQL would abort one of them after its deadlock
/// timeout, and the deletion, or bob's PATCH of his own task, would get a 503. PostgreSQL
/// only: SQLite has one writer at a time.
#[tokio::test]
async fn an_update_run_and_an_account_deletion_do_not_deadlock() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let (alice, bob, carol) = (
        app.signup("alice").await,
        app.signup("bob").await,
        app.signup("carol").await,
    );
    let w = id(&app.create_task(&carol, json!({"title": "w"})).await);
    let x1 = id(&app.create_task(&alice, json!({"title": "x1"})).await);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let xm = id(&app.create_task(&bob, json!({"title": "xm"})).await);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let x2 = id(&app
        .create_task(&alice, json!({"title": "a x2", "priority": "low"}))
        .await);
    assert!(x1 < xm && xm < x2, "ids in creation order");
    // X1 moves behind X2 on the heap (a non-HOT update) and in every owner index but
    // (user_id, created_at, id): the deletion meets X2 first.
    let moved = app
        .authed(
            Method::PATCH,
            &TestApp::task_path(&alice, &x1),
            &alice.token,
        )
        .json(&json!({"title": "z x1", "completed": true, "priority": "urgent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), StatusCode::OK);

    // carol's update leads a run that waits for W, holding the update turn, while the three
    // updates queue behind it.
    let mut w_holder = hold_row(&app, &w).await;
    let mut xm_holder = hold_row(&app, &xm).await;
    let patch = |user: &TestUser, task: &str| {
        tokio::spawn(
            app.authed(Method::PATCH, &TestApp::task_path(user, task), &user.token)
                .json(&json!({"description": "edited"}))
                .send(),
        )
    };
    let carols = patch(&carol, &w);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alices_first = patch(&alice, &x1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let bobs = patch(&bob, &xm);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let alices_second = patch(&alice, &x2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The next run, [X1, Xm, X2], locks X1 and waits for Xm.
    w_holder.execute("ROLLBACK").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The deletion locks X2 and waits for X1.
    let deletion = tokio::spawn(
        app.authed(Method::DELETE, "/api/auth/me", &alice.token)
            .json(&json!({"password": alice.password}))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The run locks Xm and waits for X2: a cycle.
    xm_holder.execute("ROLLBACK").await.unwrap();

    assert_eq!(carols.await.unwrap().unwrap().status(), StatusCode::OK);
    let deleted = deletion.await.unwrap().unwrap().status();
    let bobs = bobs.await.unwrap().unwrap().status();
    let alices = (
        alices_first.await.unwrap().unwrap().status(),
        alices_second.await.unwrap().unwrap().status(),
    );
    // Alice's own PATCHes may meet her account gone (401, 404); none may fail on its own.
    assert!(
        !alices.0.is_server_error() && !alices.1.is_server_error(),
        "alice's PATCHes: {alices:?}"
    );
    assert_eq!(deleted, StatusCode::NO_CONTENT, "the account's deletion");
    assert_eq!(bobs, StatusCode::OK, "bob's PATCH of his own task");
}
