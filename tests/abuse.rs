//! What keeps one client from hurting the service or the other users: the sign-up and login
//! rate limits (per client address and per account), the bound on bcrypt work, the size
//! limits on bodies, headers and pages, and the headers every response carries.

mod common;

use common::*;
use futures_util::future::join_all;
use reqwest::{
    Method, RequestBuilder, Response, StatusCode,
    header::{self, HeaderName},
};
use serde_json::{Value, json};
use todo_api::Settings;

const WRONG_PASSWORD: &str = "not the password at all";

fn header_text(response: &Response, name: HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().expect("header is text").to_owned())
}

/// The whole seconds of `Retry-After`, which must be present and at least 1.
fn retry_after(response: &Response) -> u64 {
    let text = header_text(response, header::RETRY_AFTER)
        .unwrap_or_else(|| panic!("a {} carries Retry-After", response.status()));
    let seconds: u64 = text
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After {text:?} is a whole number of seconds"));
    assert!(seconds >= 1, "Retry-After {seconds} is at least 1");
    seconds
}

/// Asserts a 429 problem document whose `Retry-After` lies within the minute of the limit.
async fn expect_rate_limited(response: Response) {
    let seconds = retry_after(&response);
    assert!(seconds <= 60, "a per-minute limit says to wait {seconds} s");
    expect_problem(response, StatusCode::TOO_MANY_REQUESTS).await;
}

/// A sign-up body for `username` with the harness's password and `username@example.com`.
fn signup_body(username: &str) -> Value {
    json!({
        "username": username,
        "email": format!("{username}@example.com"),
        "password": PASSWORD,
        "confirm_password": PASSWORD,
    })
}

async fn post_signup(app: &TestApp, body: &Value) -> Response {
    app.request(Method::POST, "/api/auth/signup")
        .json(body)
        .send()
        .await
        .expect("signup request")
}

/// Logs in as `username` (or an email, when it holds `@`) with `password`.
async fn login(app: &TestApp, username: &str, password: &str) -> Response {
    login_request(app, username, password)
        .send()
        .await
        .expect("login request")
}

async fn login_by_email(app: &TestApp, email: &str, password: &str) -> Response {
    app.request(Method::POST, "/api/auth/login")
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login request")
}

/// An HTTP client whose connections come from `address`: all of 127.0.0.0/8 is this
/// machine, so each such address is a real, distinct client address for the service.
fn client_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(address))
        .build()
        .expect("HTTP client")
}

/// Logs in as `username` with `password`, through `client`.
async fn login_through(
    app: &TestApp,
    client: &reqwest::Client,
    username: &str,
    password: &str,
) -> Response {
    client
        .post(app.url("/api/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("login request")
}

/// Starts the application with only a per-account limit of `n` per minute.
async fn with_account_limit(backend: Backend, n: u32) -> TestApp {
    TestApp::spawn_with(backend, |settings| {
        settings.auth_rate_limit_per_ip = 0;
        settings.auth_rate_limit_per_account = n;
    })
    .await
}

/// Starts the application with only a per-address limit of `n` per minute.
async fn with_ip_limit(backend: Backend, n: u32) -> TestApp {
    TestApp::spawn_with(backend, |settings| {
        settings.auth_rate_limit_per_ip = n;
        settings.auth_rate_limit_per_account = 0;
    })
    .await
}

/// Starts the application with bcrypt work bounded to `concurrency` running and `queue`
/// waiting, at a cost high enough that logins overlap.
async fn with_hash_bound(backend: Backend, concurrency: usize, queue: usize) -> TestApp {
    TestApp::spawn_with(backend, |settings: &mut Settings| {
        settings.bcrypt_cost = 10;
        settings.password_hash_concurrency = concurrency;
        settings.password_hash_queue = queue;
    })
    .await
}

fn assert_no_store(response: &Response, what: &str) {
    assert_eq!(
        header_text(response, header::CACHE_CONTROL).as_deref(),
        Some("no-store"),
        "{what} carries a token and must not be cached"
    );
}

/// A JSON login request, not yet sent.
fn login_request(app: &TestApp, username: &str, password: &str) -> RequestBuilder {
    app.request(Method::POST, "/api/auth/login")
        .json(&json!({"username": username, "password": password}))
}

fn assert_nosniff(response: &Response, what: &str) {
    assert_eq!(
        header_text(response, header::X_CONTENT_TYPE_OPTIONS).as_deref(),
        Some("nosniff"),
        "{what} ({})",
        response.status()
    );
}

on_both_backends! {
    // Rate limits, per account.

    async fn the_login_past_the_per_account_limit_is_a_429_with_retry_after(backend: Backend) {
        let app = with_account_limit(backend, 3).await;
        app.signup("alice").await;
        for attempt in 1..=3 {
            let response = login(&app, "alice", WRONG_PASSWORD).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "failed login {attempt} of 3");
        }
        expect_rate_limited(login(&app, "alice", PASSWORD).await).await;
        expect_rate_limited(login(&app, "alice", WRONG_PASSWORD).await).await;
    }

    async fn successful_logins_do_not_use_up_the_budget(backend: Backend) {
        let app = with_account_limit(backend, 2).await;
        app.signup("alice").await;
        for attempt in 1..=10 {
            let response = login(&app, "alice", PASSWORD).await;
            assert_eq!(response.status(), StatusCode::OK, "login {attempt}");
        }
        // The failures still count, the successes in between did not.
        assert_eq!(login(&app, "alice", WRONG_PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(login(&app, "alice", PASSWORD).await.status(), StatusCode::OK);
        assert_eq!(login(&app, "alice", WRONG_PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
        expect_rate_limited(login(&app, "alice", PASSWORD).await).await;
    }

    async fn the_per_account_limit_counts_a_username_in_any_case_as_one_account(backend: Backend) {
        let app = with_account_limit(backend, 3).await;
        app.signup("alice").await;
        for name in ["alice", "ALICE", " Alice "] {
            let response = login(&app, name, WRONG_PASSWORD).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "login as {name}");
        }
        expect_rate_limited(login(&app, "aLiCe", PASSWORD).await).await;
    }

    async fn the_per_account_limit_counts_an_email_in_any_case_as_one_account(backend: Backend) {
        let app = with_account_limit(backend, 3).await;
        app.signup("alice").await;
        for email in ["alice@example.com", "Alice@Example.com", "ALICE@EXAMPLE.COM"] {
            let response = login_by_email(&app, email, WRONG_PASSWORD).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "login as {email}");
        }
        // An email given as `username` is the same account.
        expect_rate_limited(login(&app, "alice@EXAMPLE.com", PASSWORD).await).await;
        expect_rate_limited(login_by_email(&app, "alice@example.com", PASSWORD).await).await;
    }

    async fn username_and_email_share_one_budget(backend: Backend) {
        let app = with_account_limit(backend, 4).await;
        app.signup("alice").await;
        assert_eq!(login(&app, "alice", WRONG_PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            login_by_email(&app, "alice@example.com", WRONG_PASSWORD).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(login(&app, "ALICE", WRONG_PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            login(&app, "Alice@Example.com", WRONG_PASSWORD).await.status(),
            StatusCode::UNAUTHORIZED
        );
        // Four guesses in all, not four per identifier.
        expect_rate_limited(login(&app, "alice", PASSWORD).await).await;
        expect_rate_limited(login_by_email(&app, "alice@example.com", PASSWORD).await).await;
    }

    async fn another_account_is_still_allowed_while_one_is_limited(backend: Backend) {
        let app = with_account_limit(backend, 2).await;
        app.signup("alice").await;
        app.signup("bob").await;
        for _ in 0..2 {
            assert_eq!(login(&app, "alice", WRONG_PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
        }
        expect_rate_limited(login(&app, "alice", PASSWORD).await).await;
        for _ in 0..2 {
            assert_eq!(login(&app, "bob", WRONG_PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
        }
        expect_rate_limited(login(&app, "bob", PASSWORD).await).await;
        // A new account can still sign up, and a name nobody has is counted apart too.
        let carol = post_signup(&app, &signup_body("carol")).await;
        assert_eq!(carol.status(), StatusCode::CREATED);
        let nobody = login(&app, "nobody", PASSWORD).await;
        expect_problem(nobody, StatusCode::UNAUTHORIZED).await;
    }

    async fn a_429_comes_whether_the_password_is_right_or_wrong(backend: Backend) {
        let app = with_account_limit(backend, 3).await;
        app.signup("alice").await;
        app.signup("bob").await;
        for _ in 0..3 {
            let response = login(&app, "alice", WRONG_PASSWORD).await;
            expect_problem(response, StatusCode::UNAUTHORIZED).await;
        }
        // Guessing is over: even the right password is refused for now.
        expect_rate_limited(login(&app, "alice", PASSWORD).await).await;

        // And past the limit a wrong password is a 429, not a 401.
        expect_rate_limited(login(&app, "alice", WRONG_PASSWORD).await).await;
        // Bob is another account.
        assert_eq!(login(&app, "bob", PASSWORD).await.status(), StatusCode::OK);
    }

    async fn a_sign_up_counts_against_the_limit_of_its_email(backend: Backend) {
        let app = with_account_limit(backend, 2).await;
        app.signup("alice").await;
        let taken = post_signup(
            &app,
            &json!({
                "username": "alice1",
                "email": "alice@example.com",
                "password": PASSWORD,
                "confirm_password": PASSWORD,
            }),
        )
        .await;
        expect_problem(taken, StatusCode::CONFLICT).await;

        // Signing up again and again with one email is limited.
        let again = post_signup(
            &app,
            &json!({
                "username": "alice2",
                "email": "ALICE@example.com",
                "password": PASSWORD,
                "confirm_password": PASSWORD,
            }),
        )
        .await;
        expect_rate_limited(again).await;
        // Other emails, and logging in, are not.
        assert_eq!(post_signup(&app, &signup_body("bob")).await.status(), StatusCode::CREATED);
        assert_eq!(login_by_email(&app, "alice@example.com", PASSWORD).await.status(), StatusCode::OK);
    }

    async fn an_attacker_at_one_address_cannot_lock_out_the_owner_at_another(backend: Backend) {
        let app = with_account_limit(backend, 3).await;
        app.signup("alice").await;
        let attacker = client_from([127, 0, 0, 2]);
        let owner = client_from([127, 0, 0, 3]);
        for guess in 1..=3 {
            let response = login_through(&app, &attacker, "alice", &format!("guess {guess}")).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "guess {guess}");
        }
        for _ in 0..5 {
            expect_rate_limited(login_through(&app, &attacker, "alice", PASSWORD).await).await;
        }
        // The owner, elsewhere, is not locked out, not even after a typo of their own.
        let typo = login_through(&app, &owner, "alice", WRONG_PASSWORD).await;
        assert_eq!(typo.status(), StatusCode::UNAUTHORIZED);
        let owner_login = login_through(&app, &owner, "alice@example.com", PASSWORD).await;
        assert_eq!(owner_login.status(), StatusCode::OK);
    }

    async fn the_global_cap_limits_one_account_across_addresses(backend: Backend) {
        let app = TestApp::spawn_with(backend, |settings| {
            settings.auth_rate_limit_per_ip = 0;
            settings.auth_rate_limit_per_account = 2;
            settings.auth_rate_limit_per_account_global = Some(5);
        })
        .await;
        app.signup("alice").await;
        app.signup("bob").await;
        let mut guesses = 0;
        for host in 2..=4 {
            let client = client_from([127, 0, 0, host]);
            for _ in 0..2 {
                let response = login_through(&app, &client, "alice", WRONG_PASSWORD).await;
                guesses += 1;
                if guesses <= 5 {
                    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "guess {guesses}");
                } else {
                    // Its pair had budget left; the account had none.
                    expect_rate_limited(response).await;
                }
            }
        }
        // A fresh address, even with the right password, waits: distributed guessing is capped.
        let fresh = client_from([127, 0, 0, 5]);
        expect_rate_limited(login_through(&app, &fresh, "alice", PASSWORD).await).await;
        expect_rate_limited(login_by_email(&app, "alice@example.com", PASSWORD).await).await;
        // Another account is untouched.
        assert_eq!(login_through(&app, &fresh, "bob", PASSWORD).await.status(), StatusCode::OK);
    }

    async fn the_owner_passes_the_global_cap_where_they_logged_in_before(backend: Backend) {
        let app = TestApp::spawn_with(backend, |settings| {
            settings.auth_rate_limit_per_ip = 0;
            settings.auth_rate_limit_per_account = 2;
            settings.auth_rate_limit_per_account_global = Some(4);
        })
        .await;
        app.signup("alice").await;
        let home = client_from([127, 0, 0, 3]);
        assert_eq!(login_through(&app, &home, "alice", PASSWORD).await.status(), StatusCode::OK);
        for host in [4, 5] {
            let attacker = client_from([127, 0, 0, host]);
            for _ in 0..2 {
                let response = login_through(&app, &attacker, "alice", WRONG_PASSWORD).await;
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            }
        }
        // The account's budget is spent: a new address waits, even with the right password …
        let fresh = client_from([127, 0, 0, 6]);
        expect_rate_limited(login_through(&app, &fresh, "alice", PASSWORD).await).await;
        // … but where the owner logged in before, they still can (by email too).
        assert_eq!(login_through(&app, &home, "alice", PASSWORD).await.status(), StatusCode::OK);
        let by_email = login_through(&app, &home, "alice@example.com", PASSWORD).await;
        assert_eq!(by_email.status(), StatusCode::OK);
        // Within the pair's own budget: two failures there, then a wait.
        for _ in 0..2 {
            let typo = login_through(&app, &home, "alice", WRONG_PASSWORD).await;
            assert_eq!(typo.status(), StatusCode::UNAUTHORIZED);
        }
        expect_rate_limited(login_through(&app, &home, "alice", PASSWORD).await).await;
    }

    async fn the_global_cap_defaults_to_ten_times_the_pair_budget(backend: Backend) {
        let app = with_account_limit(backend, 1).await;
        app.signup("alice").await;
        for host in 2..=11 {
            let client = client_from([127, 0, 0, host]);
            let response = login_through(&app, &client, "alice", WRONG_PASSWORD).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "from 127.0.0.{host}");
        }
        let twelfth = client_from([127, 0, 0, 12]);
        expect_rate_limited(login_through(&app, &twelfth, "alice", PASSWORD).await).await;
    }

    async fn an_over_long_login_identifier_is_a_400_naming_its_field_and_counts_nowhere(backend: Backend) {
        let app = TestApp::spawn_with(backend, |settings| {
            settings.auth_rate_limit_per_ip = 1;
            settings.auth_rate_limit_per_account = 1;
        })
        .await;
        let long_email = format!("{}@example.com", "a".repeat(250));
        for (body, field) in [
            (json!({"username": "a".repeat(33), "password": PASSWORD}), "username"),
            (json!({"username": "x".repeat(120 * 1024), "password": PASSWORD}), "username"),
            (json!({"email": long_email, "password": PASSWORD}), "email"),
            (json!({"username": long_email, "password": PASSWORD}), "username"),
        ] {
            let response = app
                .request(Method::POST, "/api/auth/login")
                .json(&body)
                .send()
                .await
                .unwrap();
            let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
            assert_eq!(error_fields(&problem), [field], "{problem}");
        }
        let form = app
            .request(Method::POST, "/api/auth/login")
            .form(&[("username", "y".repeat(300).as_str()), ("password", PASSWORD)])
            .send()
            .await
            .unwrap();
        let problem = expect_problem(form, StatusCode::BAD_REQUEST).await;
        assert_eq!(error_fields(&problem), ["username"]);
        // None of them took this address's single attempt.
        let response = login(&app, "a".repeat(32).as_str(), PASSWORD).await;
        expect_problem(response, StatusCode::UNAUTHORIZED).await;
        expect_rate_limited(login(&app, "nobody", PASSWORD).await).await;
    }

    // Rate limits, per client address (every request of a test comes from 127.0.0.1).

    async fn the_attempt_past_the_per_ip_limit_is_a_429_whatever_the_account(backend: Backend) {
        let app = with_ip_limit(backend, 4).await;
        assert_eq!(post_signup(&app, &signup_body("alice")).await.status(), StatusCode::CREATED);
        assert_eq!(login(&app, "alice", PASSWORD).await.status(), StatusCode::OK);
        assert_eq!(login(&app, "nobody", PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(login(&app, "alice", WRONG_PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
        expect_rate_limited(login(&app, "alice", PASSWORD).await).await;
        expect_rate_limited(login(&app, "bob", PASSWORD).await).await;
        expect_rate_limited(login_by_email(&app, "carol@example.com", WRONG_PASSWORD).await).await;
    }

    async fn a_forged_forwarding_header_does_not_escape_the_per_ip_limit(backend: Backend) {
        let app = with_ip_limit(backend, 2).await;
        app.signup("alice").await;
        assert_eq!(login(&app, "alice", PASSWORD).await.status(), StatusCode::OK);
        for (name, value) in [
            ("x-forwarded-for", "203.0.113.7"),
            ("x-real-ip", "203.0.113.8"),
            ("forwarded", "for=203.0.113.9"),
        ] {
            let response = app
                .request(Method::POST, "/api/auth/login")
                .header(name, value)
                .json(&json!({"username": "alice", "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            expect_rate_limited(response).await;
        }
    }

    async fn the_per_ip_limit_covers_sign_up(backend: Backend) {
        let app = with_ip_limit(backend, 3).await;
        for name in ["alice", "bob", "carol"] {
            let response = post_signup(&app, &signup_body(name)).await;
            assert_eq!(response.status(), StatusCode::CREATED, "signup of {name}");
        }
        expect_rate_limited(post_signup(&app, &signup_body("dave")).await).await;
        // Logins share the address's budget with sign-ups.
        expect_rate_limited(login(&app, "alice", PASSWORD).await).await;
    }

    async fn a_zero_limit_is_off(backend: Backend) {
        // Both off.
        let app = with_account_limit(backend, 0).await;
        app.signup("alice").await;
        for attempt in 0..15 {
            let response = login(&app, "alice", PASSWORD).await;
            assert_eq!(response.status(), StatusCode::OK, "attempt {attempt}");
        }
        drop(app);

        // The account limit off, the address limit on but high.
        let app = with_ip_limit(backend, 100).await;
        app.signup("alice").await;
        for attempt in 0..15 {
            let response = login(&app, "alice", PASSWORD).await;
            assert_eq!(response.status(), StatusCode::OK, "attempt {attempt}");
        }
        drop(app);

        // The address limit off, the account limit on but high: many accounts from one address.
        let app = TestApp::spawn_with(backend, |settings| {
            settings.auth_rate_limit_per_ip = 0;
            settings.auth_rate_limit_per_account = 100;
        })
        .await;
        for n in 0..15 {
            let response = post_signup(&app, &signup_body(&format!("user{n}"))).await;
            assert_eq!(response.status(), StatusCode::CREATED, "signup {n}");
        }
    }

    async fn the_task_routes_are_not_rate_limited(backend: Backend) {
        let app = TestApp::spawn_with(backend, |settings| {
            settings.auth_rate_limit_per_ip = 1;
            settings.auth_rate_limit_per_account = 1;
        })
        .await;
        let alice = app.signup("alice").await;
        expect_rate_limited(login(&app, "alice", PASSWORD).await).await;
        for n in 0..10 {
            app.create_task(&alice, json!({"title": format!("Task {n}")})).await;
            let (status, page) = app.get_json(&alice, &TestApp::tasks_path(&alice)).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(page["total"], n + 1);
        }
        let me = app.authed(Method::GET, "/api/auth/me", &alice.token).send().await.unwrap();
        assert_eq!(me.status(), StatusCode::OK);
    }

    // The bound on bcrypt work.

    async fn logins_beyond_the_hashing_bound_get_503_at_once_while_tasks_keep_answering(backend: Backend) {
        let app = with_hash_bound(backend, 1, 0).await;
        let alice = app.signup("alice").await;
        app.create_task(&alice, json!({"title": "Still here"})).await;

        let logins = join_all((0..10).map(|_| async {
            let response = login(&app, "alice", PASSWORD).await;
            let status = response.status();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                retry_after(&response);
                assert_nosniff(&response, "a 503 from the hashing bound");
                expect_problem(response, status).await;
            }
            status
        }));
        let reads = async {
            let mut statuses = Vec::new();
            for _ in 0..5 {
                let (status, page) = app.get_json(&alice, &TestApp::tasks_path(&alice)).await;
                assert_eq!(page["total"], 1);
                statuses.push(status);
            }
            statuses
        };
        let (logins, reads) = tokio::join!(logins, reads);

        assert!(
            logins
                .iter()
                .all(|status| matches!(*status, StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE)),
            "each login succeeds or gets 503, never a 500 or a hang: {logins:?}"
        );
        assert!(logins.contains(&StatusCode::OK), "some logins succeed: {logins:?}");
        assert!(
            logins.contains(&StatusCode::SERVICE_UNAVAILABLE),
            "with one hash at a time and none waiting, ten at once cannot all be admitted: {logins:?}"
        );
        assert!(reads.iter().all(|status| *status == StatusCode::OK), "{reads:?}");

        // Once the flood is over, logins work again.
        assert_eq!(login(&app, "alice", PASSWORD).await.status(), StatusCode::OK);
    }

    async fn sign_ups_beyond_the_hashing_bound_get_503_and_create_nothing(backend: Backend) {
        let app = with_hash_bound(backend, 1, 0).await;
        let names: Vec<String> = (0..10).map(|n| format!("user{n}")).collect();
        let signups = join_all(names.iter().map(|name| {
            let app = &app;
            async move {
                let response = post_signup(app, &signup_body(name)).await;
                let status = response.status();
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    retry_after(&response);
                    expect_problem(response, status).await;
                }
                (name.clone(), status)
            }
        }))
        .await;
        let statuses: Vec<StatusCode> = signups.iter().map(|(_, status)| *status).collect();
        assert!(
            statuses
                .iter()
                .all(|status| matches!(*status, StatusCode::CREATED | StatusCode::SERVICE_UNAVAILABLE)),
            "{statuses:?}"
        );
        assert!(statuses.contains(&StatusCode::CREATED), "{statuses:?}");
        assert!(statuses.contains(&StatusCode::SERVICE_UNAVAILABLE), "{statuses:?}");

        // A refused sign-up left no account behind: the name is free again.
        let (refused, _) = signups
            .iter()
            .find(|(_, status)| *status == StatusCode::SERVICE_UNAVAILABLE)
            .expect("one was refused");
        let retried = post_signup(&app, &signup_body(refused)).await;
        assert_eq!(retried.status(), StatusCode::CREATED, "signup of {refused} again");
    }

    async fn logins_within_the_queue_wait_their_turn_and_all_succeed(backend: Backend) {
        let app = TestApp::spawn_with(backend, |settings| {
            settings.bcrypt_cost = 6;
            settings.password_hash_concurrency = 1;
            settings.password_hash_queue = 16;
        })
        .await;
        app.signup("alice").await;
        let statuses = join_all((0..10).map(|_| async {
            login(&app, "alice", PASSWORD).await.status()
        }))
        .await;
        assert!(statuses.iter().all(|status| *status == StatusCode::OK), "{statuses:?}");
    }

    async fn logins_whose_wait_would_pass_the_max_wait_get_503_at_once_however_much_room_the_queue_has(backend: Backend) {
        let app = TestApp::spawn_with(backend, |settings| {
            settings.bcrypt_cost = 8;
            settings.password_hash_concurrency = 1;
            // The count bound is far away: only the wait can refuse.
            settings.password_hash_queue = 10_000;
            settings.password_hash_max_wait = std::time::Duration::from_millis(50);
        })
        .await;
        app.signup("alice").await;

        let statuses = join_all((0..30).map(|_| async {
            let response = login(&app, "alice", PASSWORD).await;
            let status = response.status();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                retry_after(&response);
                expect_problem(response, status).await;
            }
            status
        }))
        .await;
        assert!(
            statuses
                .iter()
                .all(|status| matches!(*status, StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE)),
            "{statuses:?}"
        );
        assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
        assert!(
            statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
            "thirty hashes of at least 12 ms each on one thread cannot all end within 50 ms: {statuses:?}"
        );
        assert_eq!(login(&app, "alice", PASSWORD).await.status(), StatusCode::OK);
    }

    async fn a_burst_of_100_logins_within_the_max_wait_all_succeed_with_the_default_bounds(backend: Backend) {
        // The harness's settings keep the hashing defaults (every core, queue 256, 20 s).
        let app = TestApp::spawn(backend).await;
        app.signup("alice").await;
        let statuses = join_all((0..100).map(|_| async {
            login(&app, "alice", PASSWORD).await.status()
        }))
        .await;
        assert!(statuses.iter().all(|status| *status == StatusCode::OK), "{statuses:?}");
    }

    // Size limits.

    async fn a_body_over_max_body_bytes_is_a_413_problem_and_creates_nothing(backend: Backend) {
        let app = TestApp::spawn_with(backend, |settings| settings.max_body_bytes = 2048).await;
        let alice = app.signup("alice").await;
        let path = TestApp::tasks_path(&alice);

        let fits = app
            .authed(Method::POST, &path, &alice.token)
            .json(&json!({"title": "Fits", "description": "x".repeat(1500)}))
            .send()
            .await
            .unwrap();
        assert_eq!(fits.status(), StatusCode::CREATED);

        let too_large = app
            .authed(Method::POST, &path, &alice.token)
            .json(&json!({"title": "Too large", "description": "x".repeat(3000)}))
            .send()
            .await
            .unwrap();
        assert_nosniff(&too_large, "a 413");
        expect_problem(too_large, StatusCode::PAYLOAD_TOO_LARGE).await;

        let signup = post_signup(
            &app,
            &json!({
                "username": "bob",
                "email": "bob@example.com",
                "password": PASSWORD,
                "confirm_password": PASSWORD,
                "padding": "y".repeat(3000),
            }),
        )
        .await;
        expect_problem(signup, StatusCode::PAYLOAD_TOO_LARGE).await;

        let (status, page) = app.get_json(&alice, &path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["total"], 1, "only the task that fitted exists");
    }

    async fn headers_over_max_header_bytes_are_a_431_problem(backend: Backend) {
        let app = TestApp::spawn_with(backend, |settings| settings.max_header_bytes = 4096).await;
        let alice = app.signup("alice").await;
        let padding = "p".repeat(5000);
        let requests = [
            ("GET /health", app.request(Method::GET, "/health")),
            (
                "GET tasks",
                app.authed(Method::GET, &TestApp::tasks_path(&alice), &alice.token),
            ),
            (
                "POST signup",
                app.request(Method::POST, "/api/auth/signup").json(&signup_body("bob")),
            ),
        ];
        for (what, request) in requests {
            let response = request.header("x-padding", &padding).send().await.unwrap();
            let problem = expect_problem(response, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;
            assert_eq!(problem["title"], "Request Header Fields Too Large", "{what}");
        }

        // Under the limit, the same requests go through.
        let small = "p".repeat(1000);
        let health = app
            .request(Method::GET, "/health")
            .header("x-padding", &small)
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        let list = app
            .authed(Method::GET, &TestApp::tasks_path(&alice), &alice.token)
            .header("x-padding", &small)
            .send()
            .await
            .unwrap();
        assert_eq!(list.status(), StatusCode::OK);
    }

    async fn a_431_forbids_content_type_sniffing_too(backend: Backend) {
        let app = TestApp::spawn_with(backend, |settings| settings.max_header_bytes = 4096).await;
        let padding = "p".repeat(5000);
        for path in ["/health", "/api/auth/me", "/nope"] {
            let response = app
                .request(Method::GET, path)
                .header("x-padding", &padding)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "{path}");
            assert_nosniff(&response, path);
        }
    }

    async fn the_default_header_limit_admits_a_large_token_and_refuses_past_128_kib(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let alice = app.signup("alice").await;
        let path = TestApp::tasks_path(&alice);

        // A 100 KiB bearer token is judged as a token (401), not refused for its size.
        let huge_token = "a".repeat(100 * 1024);
        let response = app.authed(Method::GET, &path, &huge_token).send().await.unwrap();
        expect_problem(response, StatusCode::UNAUTHORIZED).await;

        let over = app
            .authed(Method::GET, &path, &alice.token)
            .header("x-padding", "p".repeat(130 * 1024))
            .send()
            .await
            .unwrap();
        expect_problem(over, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;
    }

    async fn max_page_size_caps_page_size(backend: Backend) {
        let app = TestApp::spawn_with(backend, |settings| settings.max_page_size = 10).await;
        let alice = app.signup("alice").await;
        for n in 0..12 {
            app.create_task(&alice, json!({"title": format!("Task {n}")})).await;
        }
        let path = TestApp::tasks_path(&alice);

        let (status, page) = app.get_json(&alice, &format!("{path}?page_size=10")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["page_size"], 10);
        assert_eq!(page["items"].as_array().unwrap().len(), 10);
        assert_eq!(page["total_pages"], 2);

        for too_big in ["11", "100", "1000"] {
            let response = app
                .authed(Method::GET, &format!("{path}?page_size={too_big}"), &alice.token)
                .send()
                .await
                .unwrap();
            let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
            assert_eq!(error_fields(&problem), ["page_size"], "page_size={too_big}");
        }
    }

    async fn a_listing_without_page_size_never_exceeds_a_smaller_max_page_size(backend: Backend) {
        // The default page size is 20; a maximum below it must still hold.
        let app = TestApp::spawn_with(backend, |settings| settings.max_page_size = 5).await;
        let bob = app.signup("bob").await;
        for n in 0..7 {
            app.create_task(&bob, json!({"title": format!("Task {n}")})).await;
        }
        let (status, page) = app.get_json(&bob, &TestApp::tasks_path(&bob)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap().len();
        assert!(
            page["page_size"].as_u64().unwrap() <= 5 && items <= 5,
            "a listing without page_size must not exceed max_page_size 5: page_size {}, {items} items",
            page["page_size"]
        );
    }

    async fn the_default_max_page_size_is_100(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let alice = app.signup("alice").await;
        let path = TestApp::tasks_path(&alice);
        let (status, page) = app.get_json(&alice, &format!("{path}?page_size=100")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["page_size"], 100);
        let response = app
            .authed(Method::GET, &format!("{path}?page_size=101"), &alice.token)
            .send()
            .await
            .unwrap();
        let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(error_fields(&problem), ["page_size"]);
    }

    // Headers.

    async fn sign_up_and_login_responses_are_never_cached(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let signup = post_signup(&app, &signup_body("alice")).await;
        assert_eq!(signup.status(), StatusCode::CREATED);
        assert_no_store(&signup, "signup");

        let json_login = login(&app, "alice", PASSWORD).await;
        assert_eq!(json_login.status(), StatusCode::OK);
        assert_no_store(&json_login, "login");

        let email_login = login_by_email(&app, "alice@example.com", PASSWORD).await;
        assert_eq!(email_login.status(), StatusCode::OK);
        assert_no_store(&email_login, "email login");

        let form_login = app
            .request(Method::POST, "/api/auth/login")
            .form(&[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(form_login.status(), StatusCode::OK);
        assert_no_store(&form_login, "form login");
    }

    async fn every_response_forbids_content_type_sniffing(backend: Backend) {
        let app = TestApp::spawn_with(backend, |settings| {
            settings.auth_rate_limit_per_account = 2;
        })
        .await;
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        let task = app.create_task(&alice, json!({"title": "Buy milk"})).await;
        let task_path = TestApp::task_path(&alice, task["id"].as_str().unwrap());
        let tasks_path = TestApp::tasks_path(&alice);

        let signup = |body: Value| app.request(Method::POST, "/api/auth/signup").json(&body);
        let as_alice = |method: Method, path: &str| app.authed(method, path, &alice.token);
        let requests = [
            ("health", app.request(Method::GET, "/health")),
            ("ready", app.request(Method::GET, "/ready")),
            ("openapi", app.request(Method::GET, "/openapi.json")),
            ("unknown route", app.request(Method::GET, "/nope")),
            ("wrong method", app.request(Method::DELETE, "/health")),
            ("signup", signup(signup_body("carol"))),
            ("signup conflict", signup(signup_body("alice"))),
            ("signup invalid", signup(json!({}))),
            ("login", login_request(&app, "alice", PASSWORD)),
            ("login wrong", login_request(&app, "alice", WRONG_PASSWORD)),
            ("login wrong again", login_request(&app, "alice", WRONG_PASSWORD)),
            ("login limited", login_request(&app, "alice", PASSWORD)),
            ("me", as_alice(Method::GET, "/api/auth/me")),
            ("no token", app.request(Method::GET, &tasks_path)),
            ("other user", app.authed(Method::GET, &tasks_path, &bob.token)),
            ("bad query", as_alice(Method::GET, &format!("{tasks_path}?page=0"))),
            ("list", as_alice(Method::GET, &tasks_path)),
            ("create", as_alice(Method::POST, &tasks_path).json(&json!({"title": "x"}))),
            (
                "not json",
                as_alice(Method::POST, &tasks_path)
                    .header(header::CONTENT_TYPE, "text/plain")
                    .body("x"),
            ),
            ("read", as_alice(Method::GET, &task_path)),
            (
                "stale if-match",
                as_alice(Method::DELETE, &task_path).header(header::IF_MATCH, "\"9\""),
            ),
            ("delete", as_alice(Method::DELETE, &task_path)),
            ("missing task", as_alice(Method::GET, &task_path)),
        ];
        let mut seen = Vec::new();
        for (what, request) in requests {
            let response = request.send().await.unwrap();
            assert_nosniff(&response, what);
            seen.push(response.status().as_u16());
        }
        // The list above did reach the statuses it means to cover.
        for status in [200, 201, 400, 401, 403, 404, 405, 409, 412, 415, 429] {
            assert!(seen.contains(&status), "no response had status {status}: {seen:?}");
        }
    }
}

fn shared_limits(settings: &mut Settings) {
    settings.auth_rate_limit_per_ip = 4;
    settings.auth_rate_limit_per_account = 2;
    settings.auth_rate_limit_per_account_global = Some(0);
}

/// On PostgreSQL the budgets live in the database: two instances together allow no more
/// than one budget (on SQLite one process serves a file, and counts in memory).
#[tokio::test]
async fn two_instances_on_one_postgresql_share_one_budget() {
    let (name, url) = create_test_database().await;
    let first = TestApp::spawn_on(&url, shared_limits).await;
    let second = TestApp::spawn_on(&url, shared_limits).await;
    // One attempt of the address's four.
    first.signup("alice").await;
    // The (address, account) pair's two failures, one on each instance.
    let one = login(&first, "alice", WRONG_PASSWORD).await;
    assert_eq!(one.status(), StatusCode::UNAUTHORIZED);
    let two = login(&second, "alice", WRONG_PASSWORD).await;
    assert_eq!(two.status(), StatusCode::UNAUTHORIZED);
    // The fourth attempt of the address, refused by the pair's budget on either instance.
    expect_rate_limited(login(&first, "alice", PASSWORD).await).await;
    // The address is spent on both.
    expect_rate_limited(login(&second, "bob", PASSWORD).await).await;
    expect_rate_limited(post_signup(&first, &signup_body("carol")).await).await;
    first.stop().await;
    second.stop().await;
    drop_test_database(name);
}

/// On PostgreSQL a budget is a row keyed by a 32-byte digest (no username, email or address
/// is stored), and rows whose budget is full again are swept.
#[tokio::test]
async fn on_postgresql_budgets_are_digest_rows_and_expired_ones_are_swept() {
    use sqlx::{Connection, PgConnection};
    let (name, url) = create_test_database().await;
    let app = TestApp::spawn_on(&url, shared_limits).await;
    let mut db = PgConnection::connect(&url)
        .await
        .expect("connect to the test database");
    // A budget that filled up again long ago, as an earlier attack would leave behind.
    sqlx::query("INSERT INTO auth_rate_limits (key, tat_ms, allowed) VALUES ($1, 0, true)")
        .bind(vec![7u8; 32])
        .execute(&mut db)
        .await
        .unwrap();
    app.signup("alice").await;
    let failed = login(&app, "alice", WRONG_PASSWORD).await;
    assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (stale,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM auth_rate_limits WHERE tat_ms = 0")
                .fetch_one(&mut db)
                .await
                .unwrap();
        if stale == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the expired row was not swept"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Sign-up: the address and the (address, email) pair; login: the address, the pair and
    // the account (its global budget is off here).
    let keys: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT key FROM auth_rate_limits")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(keys.len(), 3, "one row per live budget");
    for (key,) in &keys {
        assert_eq!(key.len(), 32);
        let text = String::from_utf8_lossy(key);
        assert!(!text.contains("alice") && !text.contains("127.0.0.1"));
    }
    db.close().await.ok();
    app.stop().await;
    drop_test_database(name);
}
