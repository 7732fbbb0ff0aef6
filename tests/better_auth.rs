//! The service with a REAL Better Auth server (better-auth from npm, run by node, see
//! `tests/common/better_auth.rs`) as its identity provider: tokens from Better Auth's JWT
//! plugin work on every task route for their own user, in every algorithm Better Auth signs
//! with; they never reach anyone else's tasks; a rotated key is picked up without a restart;
//! Better Auth being down never takes the service (or HS256 tokens) down; and tokens for
//! another issuer or audience, or signed by another Better Auth server, are refused.
//!
//! Needs Node 20+ and `npm ci --prefix tests/better-auth`.

#[path = "common/better_auth.rs"]
mod better_auth;
mod common;

use std::time::Duration;

use better_auth::{BetterAuth, BetterAuthOptions, BetterAuthUser, decode_unverified};
use common::*;
use reqwest::{Method, Response, StatusCode, header};
use serde_json::{Value, json};

const BA_PASSWORD: &str = "correct horse battery staple";
/// The refetch interval of the tests that wait for a refetch.
const REFETCH: Duration = Duration::from_secs(1);
/// A little over [`REFETCH`]: long enough for the next unknown `kid` to refetch.
const OVER_REFETCH: Duration = Duration::from_millis(1300);

/// The service, trusting the Better Auth server `ba` (`BETTER_AUTH_URL` = its base URL).
async fn app_trusting(backend: Backend, ba: &BetterAuth) -> TestApp {
    app_trusting_with(backend, ba, |_| {}).await
}

async fn app_trusting_with(
    backend: Backend,
    ba: &BetterAuth,
    configure: impl FnOnce(&mut todo_api::Settings),
) -> TestApp {
    let url = url::Url::parse(&ba.base_url()).expect("Better Auth base URL");
    TestApp::spawn_with(backend, |settings| {
        settings.better_auth_url = Some(url);
        configure(settings);
    })
    .await
}

fn tasks_path(user_id: &str) -> String {
    format!("/api/{user_id}/tasks")
}

fn task_path(user_id: &str, task_id: &str) -> String {
    format!("/api/{user_id}/tasks/{task_id}")
}

fn id_of(task: &Value) -> &str {
    task["id"].as_str().expect("a task has a string id")
}

/// Sends `method path` with `token` as bearer, with `body` as JSON if any.
async fn send(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let request = app.authed(method.clone(), path, token);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Asserts `response` has `status` and returns its JSON body (the body is in the message
/// when the status is wrong).
async fn json_with(response: Response, status: StatusCode, what: &str) -> Value {
    let actual = response.status();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(actual, status, "{what}: body {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
}

/// Everything `user_id` has, oldest first, as its listing returns it.
async fn everything_of(app: &TestApp, user_id: &str, token: &str) -> Value {
    let path = format!(
        "{}?page_size=100&sort_by=created_at&sort_order=asc",
        tasks_path(user_id)
    );
    let response = send(app, token, Method::GET, &path, None).await;
    json_with(response, StatusCode::OK, &format!("listing of {user_id}")).await
}

/// The ids of the items of a listing page.
fn ids_in(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a page has items: {page}"))
        .iter()
        .map(|task| id_of(task).to_owned())
        .collect()
}

async fn sign_up(ba: &BetterAuth, name: &str) -> BetterAuthUser {
    ba.sign_up(&format!("{name}@example.com"), BA_PASSWORD, name)
        .await
}

/// Signs `name` up on `ba` and takes the `kid` of its token.
async fn sign_up_with_kid(ba: &BetterAuth, name: &str) -> (BetterAuthUser, String) {
    let user = sign_up(ba, name).await;
    let kid = decode_unverified(&user.token).0["kid"]
        .as_str()
        .expect("a Better Auth token has a kid")
        .to_owned();
    (user, kid)
}

// ---------------------------------------------------------------------------------------
// 1. Every algorithm Better Auth signs with works on every task route.
// ---------------------------------------------------------------------------------------

/// A Better Auth user signing with `alg` creates, lists, reads, replaces, patches, completes
/// and deletes its tasks; it has no local account.
async fn a_better_auth_user_manages_its_tasks(backend: Backend, alg: &str) {
    let ba = BetterAuth::start(alg).await;
    let app = app_trusting(backend, &ba).await;
    let alice = sign_up(&ba, "alice").await;
    let (token_header, claims) = decode_unverified(&alice.token);
    assert_eq!(token_header["alg"], alg, "Better Auth signed with {alg}");
    assert_eq!(claims["sub"], alice.id.as_str());
    assert!(
        uuid::Uuid::parse_str(&alice.id).is_err(),
        "a Better Auth user id is not a UUID: {}",
        alice.id
    );
    let token = alice.token.as_str();
    let id = alice.id.as_str();

    // Create.
    let response = send(
        &app,
        token,
        Method::POST,
        &tasks_path(id),
        Some(json!({"title": "Buy milk", "description": "2 litres"})),
    )
    .await;
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let milk = json_with(response, StatusCode::CREATED, "create").await;
    assert_eq!(
        milk["user_id"], id,
        "the task belongs to the Better Auth user"
    );
    assert_eq!(milk["title"], "Buy milk");
    assert_eq!(milk["description"], "2 litres");
    assert_eq!(milk["completed"], false);
    let milk_id = id_of(&milk).to_owned();
    let location = location.expect("create sets Location");
    assert!(
        location.ends_with(&task_path(id, &milk_id)),
        "Location {location}"
    );
    let response = send(
        &app,
        token,
        Method::POST,
        &tasks_path(id),
        Some(json!({"title": "Call mom", "completed": true})),
    )
    .await;
    let call = json_with(response, StatusCode::CREATED, "second create").await;
    assert_eq!(call["user_id"], id);
    let call_id = id_of(&call).to_owned();

    // List.
    let page = everything_of(&app, id, token).await;
    assert_eq!(page["total"], 2, "{page}");
    assert_eq!(ids_in(&page), [milk_id.clone(), call_id.clone()]);
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|task| task["user_id"] == id),
        "{page}"
    );
    let response = send(
        &app,
        token,
        Method::GET,
        &format!("{}?completed=true", tasks_path(id)),
        None,
    )
    .await;
    let completed = json_with(response, StatusCode::OK, "filtered listing").await;
    assert_eq!(ids_in(&completed), [call_id.as_str()]);

    // Read.
    let path = task_path(id, &milk_id);
    let response = send(&app, token, Method::GET, &path, None).await;
    assert_eq!(json_with(response, StatusCode::OK, "read").await, milk);

    // Replace.
    let response = send(
        &app,
        token,
        Method::PUT,
        &path,
        Some(json!({"title": "Buy oat milk", "description": null, "completed": true})),
    )
    .await;
    let replaced = json_with(response, StatusCode::OK, "PUT").await;
    assert_eq!(replaced["id"], milk["id"]);
    assert_eq!(replaced["user_id"], id);
    assert_eq!(replaced["title"], "Buy oat milk");
    assert_eq!(replaced["description"], Value::Null);
    assert_eq!(replaced["completed"], true);
    assert_eq!(replaced["created_at"], milk["created_at"]);

    // Patch.
    let response = send(
        &app,
        token,
        Method::PATCH,
        &path,
        Some(json!({"description": "1 litre"})),
    )
    .await;
    let patched = json_with(response, StatusCode::OK, "PATCH").await;
    assert_eq!(patched["title"], "Buy oat milk", "PATCH keeps the title");
    assert_eq!(patched["description"], "1 litre");
    assert_eq!(patched["completed"], true);
    assert_eq!(patched["user_id"], id);

    // Complete: set, then toggle with an empty body.
    let complete = format!("{path}/complete");
    let response = send(
        &app,
        token,
        Method::PATCH,
        &complete,
        Some(json!({"completed": false})),
    )
    .await;
    let reopened = json_with(response, StatusCode::OK, "complete false").await;
    assert_eq!(reopened["completed"], false);
    let response = send(&app, token, Method::PATCH, &complete, None).await;
    let toggled = json_with(response, StatusCode::OK, "complete toggle").await;
    assert_eq!(toggled["completed"], true, "an empty body toggles");
    assert_eq!(toggled["user_id"], id);

    let response = send(&app, token, Method::GET, &path, None).await;
    assert_eq!(
        json_with(response, StatusCode::OK, "read back").await,
        toggled
    );

    // Delete.
    let response = send(&app, token, Method::DELETE, &path, None).await;
    let deleted = json_with(response, StatusCode::OK, "DELETE").await;
    assert_eq!(deleted, toggled, "DELETE returns the deleted task");
    let response = send(&app, token, Method::GET, &path, None).await;
    expect_problem(response, StatusCode::NOT_FOUND).await;
    let page = everything_of(&app, id, token).await;
    assert_eq!(ids_in(&page), [call_id]);

    // A Better Auth user has no local account.
    let response = send(&app, token, Method::GET, "/api/auth/me", None).await;
    expect_problem(response, StatusCode::NOT_FOUND).await;
}

on_both_backends! {
    async fn an_eddsa_better_auth_user_creates_lists_reads_updates_completes_and_deletes_its_tasks(
        backend: Backend
    ) {
        a_better_auth_user_manages_its_tasks(backend, "EdDSA").await;
    }

    async fn an_rs256_better_auth_user_creates_lists_reads_updates_completes_and_deletes_its_tasks(
        backend: Backend
    ) {
        a_better_auth_user_manages_its_tasks(backend, "RS256").await;
    }

    async fn an_es256_better_auth_user_creates_lists_reads_updates_completes_and_deletes_its_tasks(
        backend: Backend
    ) {
        a_better_auth_user_manages_its_tasks(backend, "ES256").await;
    }

    async fn a_ps256_better_auth_user_creates_lists_reads_updates_completes_and_deletes_its_tasks(
        backend: Backend
    ) {
        a_better_auth_user_manages_its_tasks(backend, "PS256").await;
    }
}

// ---------------------------------------------------------------------------------------
// 2. Two Better Auth users never reach each other's tasks.
// ---------------------------------------------------------------------------------------

/// `intruder` tries every route on `owner`'s path (403) and `owner`'s tasks under its own
/// path (404).
async fn cannot_touch(
    app: &TestApp,
    intruder: &BetterAuthUser,
    owner: &BetterAuthUser,
    owner_tasks: &[Value],
) {
    for route in TaskRoute::ALL {
        for task in owner_tasks {
            let response = route
                .request(app, &owner.id, id_of(task))
                .bearer_auth(&intruder.token)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "{}: {route:?} on {}'s path",
                intruder.name,
                owner.name
            );
            expect_problem(response, StatusCode::FORBIDDEN).await;
        }
    }
    for route in TaskRoute::ON_ONE_TASK {
        for task in owner_tasks {
            let response = route
                .request(app, &intruder.id, id_of(task))
                .bearer_auth(&intruder.token)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::NOT_FOUND,
                "{}: {route:?} on {}'s task under its own path",
                intruder.name,
                owner.name
            );
            expect_problem(response, StatusCode::NOT_FOUND).await;
        }
    }
}

async fn create(app: &TestApp, user: &BetterAuthUser, body: Value) -> Value {
    let response = send(
        app,
        &user.token,
        Method::POST,
        &tasks_path(&user.id),
        Some(body),
    )
    .await;
    let task = json_with(
        response,
        StatusCode::CREATED,
        &format!("create as {}", user.name),
    )
    .await;
    assert_eq!(task["user_id"], user.id.as_str());
    task
}

/// Each task of `tasks`, read back one by one by `user`.
async fn read_back(app: &TestApp, user: &BetterAuthUser, tasks: &[Value]) -> Vec<Value> {
    let mut read = Vec::new();
    for task in tasks {
        let response = send(
            app,
            &user.token,
            Method::GET,
            &task_path(&user.id, id_of(task)),
            None,
        )
        .await;
        read.push(json_with(response, StatusCode::OK, "read back").await);
    }
    read
}

on_both_backends! {
    async fn two_better_auth_users_see_only_their_own_tasks_and_get_403_and_404_on_each_others(
        backend: Backend
    ) {
        let ba = BetterAuth::start("EdDSA").await;
        let app = app_trusting(backend, &ba).await;
        let alice = sign_up(&ba, "alice").await;
        let bob = sign_up(&ba, "bob").await;
        assert_ne!(alice.id, bob.id);

        let alice_tasks = vec![
            create(&app, &alice, json!({"title": "alice: buy milk", "description": "2 litres"}))
                .await,
            create(&app, &alice, json!({"title": "alice: call mom", "completed": true})).await,
        ];
        let bob_tasks =
            vec![create(&app, &bob, json!({"title": "bob: water plants"})).await];

        let alice_before = everything_of(&app, &alice.id, &alice.token).await;
        let bob_before = everything_of(&app, &bob.id, &bob.token).await;
        assert_eq!(alice_before["total"], 2, "{alice_before}");
        assert_eq!(
            ids_in(&alice_before),
            alice_tasks.iter().map(|t| id_of(t).to_owned()).collect::<Vec<_>>()
        );
        assert_eq!(bob_before["total"], 1, "{bob_before}");
        assert_eq!(ids_in(&bob_before), [id_of(&bob_tasks[0]).to_owned()]);
        for (page, owner) in [(&alice_before, &alice), (&bob_before, &bob)] {
            for task in page["items"].as_array().unwrap() {
                assert_eq!(task["user_id"], owner.id.as_str(), "{}'s listing", owner.name);
            }
        }

        cannot_touch(&app, &bob, &alice, &alice_tasks).await;
        cannot_touch(&app, &alice, &bob, &bob_tasks).await;

        assert_eq!(
            everything_of(&app, &alice.id, &alice.token).await,
            alice_before,
            "alice's tasks are unchanged"
        );
        assert_eq!(
            everything_of(&app, &bob.id, &bob.token).await,
            bob_before,
            "bob's tasks are unchanged"
        );
        assert_eq!(read_back(&app, &alice, &alice_tasks).await, alice_tasks);
        assert_eq!(read_back(&app, &bob, &bob_tasks).await, bob_tasks);
    }
}

// ---------------------------------------------------------------------------------------
// 3. Key rotation.
// ---------------------------------------------------------------------------------------

on_both_backends! {
    async fn a_token_signed_with_a_rotated_key_is_accepted_without_restarting_the_service(
        backend: Backend
    ) {
        let mut ba = BetterAuth::start_with(BetterAuthOptions {
            stable_user_ids: true,
            ..BetterAuthOptions::new("EdDSA")
        })
        .await;
        let app = app_trusting_with(backend, &ba, |settings| {
            settings.jwks_refetch_interval = REFETCH;
        })
        .await;
        let (before, old_kid) = sign_up_with_kid(&ba, "alice").await;
        let task = create(&app, &before, json!({"title": "made before the rotation"})).await;

        ba.restart().await;
        // Make sure that the service may refetch for the next unknown kid.
        tokio::time::sleep(OVER_REFETCH).await;
        let (after, new_kid) = sign_up_with_kid(&ba, "alice").await;
        assert_ne!(new_kid, old_kid, "the restart rotated the key");
        assert_eq!(after.id, before.id, "the same user");

        let page = everything_of(&app, &after.id, &after.token).await;
        assert_eq!(page["total"], 1, "{page}");
        assert_eq!(page["items"][0], task, "the new token sees the tasks made before");
        let more = create(&app, &after, json!({"title": "made after the rotation"})).await;
        assert_eq!(more["user_id"], before.id.as_str());
    }
}

// ---------------------------------------------------------------------------------------
// 4. Better Auth down.
// ---------------------------------------------------------------------------------------

/// The HS256 path, `/health` and `/ready` keep working whatever Better Auth does.
async fn the_service_still_serves_hs256_tokens(app: &TestApp) {
    let subject = "hs256-user-while-better-auth-is-down";
    let token = hs256_token(&json!({"sub": subject, "exp": now() + 600}), SECRET);
    let response = send(
        app,
        &token,
        Method::POST,
        &tasks_path(subject),
        Some(json!({"title": "made with an HS256 token"})),
    )
    .await;
    let task = json_with(response, StatusCode::CREATED, "HS256 create").await;
    assert_eq!(task["user_id"], subject);
    let page = everything_of(app, subject, &token).await;
    assert_eq!(ids_in(&page), [id_of(&task).to_owned()]);

    for path in ["/health", "/ready"] {
        let response = app.request(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

on_both_backends! {
    async fn while_better_auth_is_down_an_unfetched_key_is_a_401_and_hs256_tokens_still_work(
        backend: Backend
    ) {
        let mut ba = BetterAuth::start("EdDSA").await;
        let app = app_trusting_with(backend, &ba, |settings| {
            settings.jwks_refetch_interval = REFETCH;
        })
        .await;
        let (alice, old_kid) = sign_up_with_kid(&ba, "alice").await;
        create(&app, &alice, json!({"title": "made while Better Auth was up"})).await;

        // A token signed with a key the service has never seen, then Better Auth goes away.
        ba.restart().await;
        let (bob, new_kid) = sign_up_with_kid(&ba, "bob").await;
        assert_ne!(new_kid, old_kid);
        ba.stop().await;
        // The unknown kid does make the service try (and fail) to fetch the key set.
        tokio::time::sleep(OVER_REFETCH).await;

        for route in TaskRoute::ALL {
            let response = route
                .request(&app, &bob.id, "00000000-0000-4000-8000-000000000000")
                .bearer_auth(&bob.token)
                .send()
                .await
                .unwrap();
            expect_unauthorized(
                response,
                &format!("{route:?} with a token whose key could not be fetched"),
            )
            .await;
        }

        // The key the service fetched while Better Auth was up is still cached.
        let page = everything_of(&app, &alice.id, &alice.token).await;
        assert_eq!(page["total"], 1, "a cached key keeps verifying: {page}");

        the_service_still_serves_hs256_tokens(&app).await;
    }

    async fn a_service_that_never_fetched_the_key_set_answers_503_until_better_auth_comes_back(
        backend: Backend
    ) {
        let mut ba = BetterAuth::start("ES256").await;
        let (alice, old_kid) = sign_up_with_kid(&ba, "alice").await;
        ba.stop().await;
        // The service starts while Better Auth is down: its first fetch fails, not fatally.
        let app = app_trusting_with(backend, &ba, |settings| {
            settings.jwks_refetch_interval = REFETCH;
        })
        .await;

        for route in TaskRoute::ALL {
            let response = route
                .request(&app, &alice.id, "00000000-0000-4000-8000-000000000000")
                .bearer_auth(&alice.token)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{route:?}: no key set was ever fetched"
            );
            expect_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
        }
        the_service_still_serves_hs256_tokens(&app).await;

        // Better Auth comes back (with a new key): its tokens work, the service unrestarted.
        ba.restart().await;
        let (carol, new_kid) = sign_up_with_kid(&ba, "carol").await;
        assert_ne!(new_kid, old_kid);
        tokio::time::sleep(OVER_REFETCH).await;
        let task = create(&app, &carol, json!({"title": "made once Better Auth is back"})).await;
        assert_eq!(task["user_id"], carol.id.as_str());

        // Now that a key set was fetched, the old token's unknown key is a plain 401.
        let response = send(&app, &alice.token, Method::GET, &tasks_path(&alice.id), None).await;
        expect_unauthorized(response, "a key that Better Auth no longer lists").await;
    }
}

// ---------------------------------------------------------------------------------------
// 5. Wrong issuer or audience.
// ---------------------------------------------------------------------------------------

const OTHER_ORIGIN: &str = "http://auth.other.test:4000";

on_both_backends! {
    async fn a_better_auth_token_for_another_issuer_or_audience_is_a_401_unless_configured(
        backend: Backend
    ) {
        // Better Auth advertising another URL: its tokens say iss = aud = OTHER_ORIGIN.
        let ba = BetterAuth::start_with_base_url("RS256", OTHER_ORIGIN).await;
        let alice = sign_up(&ba, "alice").await;
        let (_, claims) = decode_unverified(&alice.token);
        assert_eq!(claims["iss"], OTHER_ORIGIN);
        assert_eq!(claims["aud"], OTHER_ORIGIN);

        let jwks_url = url::Url::parse(&ba.jwks_url()).unwrap();
        // The service fetches the very key set that signed the token, but expects the claims
        // of where Better Auth really listens.
        let expected = url::Url::parse(&ba.local_url()).unwrap();
        assert_ne!(ba.local_url(), OTHER_ORIGIN);
        let cases: [(&str, Option<&str>, Option<&str>); 3] = [
            ("iss and aud of the service's Better Auth URL", None, None),
            ("the right iss, aud of the Better Auth URL", Some(OTHER_ORIGIN), None),
            ("the right aud, iss of the Better Auth URL", None, Some(OTHER_ORIGIN)),
        ];
        for (case, issuer, audience) in cases {
            let app = TestApp::spawn_with(backend, |settings| {
                settings.better_auth_url = Some(expected.clone());
                settings.jwks_url = Some(jwks_url.clone());
                settings.jwt_issuer = issuer.map(str::to_owned);
                settings.jwt_audience = audience.map(str::to_owned);
            })
            .await;
            let response =
                send(&app, &alice.token, Method::GET, &tasks_path(&alice.id), None).await;
            expect_unauthorized(response, case).await;
            let response = send(
                &app,
                &alice.token,
                Method::POST,
                &tasks_path(&alice.id),
                Some(json!({"title": "must not be created"})),
            )
            .await;
            expect_unauthorized(response, case).await;
            app.stop().await;
        }

        // Positive control: the same token, with the claims it does carry expected.
        let app = TestApp::spawn_with(backend, |settings| {
            settings.better_auth_url = Some(expected.clone());
            settings.jwks_url = Some(jwks_url.clone());
            settings.jwt_issuer = Some(OTHER_ORIGIN.to_owned());
            settings.jwt_audience = Some(OTHER_ORIGIN.to_owned());
        })
        .await;
        let task = create(&app, &alice, json!({"title": "for the right issuer"})).await;
        let page = everything_of(&app, &alice.id, &alice.token).await;
        assert_eq!(ids_in(&page), [id_of(&task).to_owned()]);
    }
}

// ---------------------------------------------------------------------------------------
// 6. Another Better Auth server's tokens.
// ---------------------------------------------------------------------------------------

on_both_backends! {
    async fn a_token_from_a_better_auth_server_the_service_does_not_trust_is_a_401(
        backend: Backend
    ) {
        let trusted = BetterAuth::start_with(BetterAuthOptions {
            stable_user_ids: true,
            ..BetterAuthOptions::new("EdDSA")
        })
        .await;
        // An impostor that claims to be the trusted server (same iss and aud) and knows the
        // same user (same sub), but signs with its own keys.
        let impostor = BetterAuth::start_with(BetterAuthOptions {
            stable_user_ids: true,
            base_url: Some(trusted.base_url()),
            ..BetterAuthOptions::new("EdDSA")
        })
        .await;
        let app = app_trusting(backend, &trusted).await;
        let (alice, trusted_kid) = sign_up_with_kid(&trusted, "alice").await;
        let (forged, impostor_kid) = sign_up_with_kid(&impostor, "alice").await;
        assert_eq!(forged.id, alice.id, "the impostor's token names the same user");
        let (_, forged_claims) = decode_unverified(&forged.token);
        let (_, real_claims) = decode_unverified(&alice.token);
        for claim in ["sub", "iss", "aud"] {
            assert_eq!(forged_claims[claim], real_claims[claim], "{claim}");
        }
        assert_ne!(impostor_kid, trusted_kid);

        let task = create(&app, &alice, json!({"title": "alice's, from the trusted server"})).await;
        let before = everything_of(&app, &alice.id, &alice.token).await;

        for route in TaskRoute::ALL {
            let response = route
                .request(&app, &alice.id, id_of(&task))
                .bearer_auth(&forged.token)
                .send()
                .await
                .unwrap();
            expect_unauthorized(response, &format!("{route:?} with the impostor's token")).await;
        }

        // A token from an unrelated Better Auth server, with its own origin, too.
        let stranger = BetterAuth::start("EdDSA").await;
        let mallory = sign_up(&stranger, "mallory").await;
        let response =
            send(&app, &mallory.token, Method::GET, &tasks_path(&mallory.id), None).await;
        expect_unauthorized(response, "a token from an unrelated Better Auth server").await;

        assert_eq!(
            everything_of(&app, &alice.id, &alice.token).await,
            before,
            "alice's tasks are unchanged"
        );
    }
}
