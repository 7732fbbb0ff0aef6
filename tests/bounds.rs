//! Bounds on what one client can make the service do (issue 12 §4, §6, §7, §8), over HTTP
//! against the real router on SQLite and PostgreSQL: a client's request id is kept only
//! when sane; the timeout's 503 says when to come back; the documented `page_size` maximum
//! is the configured one; `/metrics` is a 404 unless configured; a slow key server delays
//! only the tokens whose key is not cached; a listing's page and total always agree.

mod common;
#[path = "common/key_server.rs"]
mod key_server;

use std::time::Duration;

use common::*;
use key_server::{GatedKeyServer, JWKS, jwks_with, sign};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SUBJECT: &str = "ba0user0id0that0is0not0a0uuid00";

fn claims(origin: &str) -> Value {
    json!({"sub": SUBJECT, "iat": now(), "exp": now() + 900, "iss": origin, "aud": origin})
}

async fn list_as(app: &TestApp, token: &str) -> reqwest::Response {
    app.request(Method::GET, &format!("/api/{SUBJECT}/tasks"))
        .bearer_auth(token)
        .send()
        .await
        .expect("list request")
}

on_both_databases! {
    async fn a_client_request_id_is_kept_only_when_of_sane_length_and_characters(app: TestApp) {
        let echoed = |response: &reqwest::Response| {
            response
                .headers()
                .get("x-request-id")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let sane = "client-id_0123.abc~XYZ";
        let response = app
            .request(Method::GET, "/health")
            .header("x-request-id", sane)
            .send()
            .await
            .unwrap();
        assert_eq!(echoed(&response), sane);
        for (case, unfit) in [
            ("too long", "a".repeat(129)),
            ("a space", "two words".to_owned()),
            ("a quote", "say\"hi\"".to_owned()),
            ("a slash", "a/b".to_owned()),
        ] {
            let response = app
                .request(Method::GET, "/health")
                .header("x-request-id", &unfit)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{case}");
            let id = echoed(&response);
            assert_ne!(id, unfit, "{case}: the unfit id was echoed");
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{case}: a fresh id, got {id:?}");
        }
    }

    async fn the_openapi_page_size_maximum_follows_max_page_size(app: TestApp) {
        let document: Value = app
            .request(Method::GET, "/openapi.json")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page_size_maximum(&document), json!(100), "the default");
        let app = TestApp::spawn_with(app.backend, |settings| settings.max_page_size = 250).await;
        let document: Value = app
            .request(Method::GET, "/openapi.json")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page_size_maximum(&document), json!(250));
    }

    async fn metrics_is_the_404_of_an_unknown_route_without_a_configured_token(app: TestApp) {
        for method in [Method::GET, Method::POST] {
            let response = app
                .request(method.clone(), "/metrics")
                .bearer_auth("whatever-token-a-client-may-try")
                .send()
                .await
                .unwrap();
            let problem = expect_problem(response, StatusCode::NOT_FOUND).await;
            assert_eq!(problem["detail"], "no such route", "{method}");
        }
    }

    async fn page_and_total_agree_while_tasks_are_created_and_deleted(app: TestApp) {
        let user = app.signup("snapshot_reader").await;
        for n in 0..12 {
            app.create_task(&user, json!({"title": format!("seed {n}")})).await;
        }
        let writers: Vec<_> = (0..3)
            .map(|writer| {
                let (client, base, user) = (app.client.clone(), app.address.clone(), user.clone());
                tokio::spawn(async move {
                    let tasks = format!("{base}/api/{}/tasks", user.id);
                    for n in 0..60 {
                        let created: Value = client
                            .post(&tasks)
                            .bearer_auth(&user.token)
                            .json(&json!({"title": format!("writer {writer} task {n}")}))
                            .send()
                            .await
                            .expect("create")
                            .json()
                            .await
                            .expect("created task");
                        let id = created["id"].as_str().expect("an id");
                        let deleted = client
                            .delete(format!("{tasks}/{id}"))
                            .bearer_auth(&user.token)
                            .send()
                            .await
                            .expect("delete");
                        assert_eq!(deleted.status(), StatusCode::OK);
                    }
                })
            })
            .collect();
        let mut listings = 0;
        while listings < 300 && !writers.iter().all(|writer| writer.is_finished()) {
            for page in [1u64, 2, 3, 4] {
                let path = format!("{}?page={page}&page_size=5", TestApp::tasks_path(&user));
                let (status, body) = app.get_json(&user, &path).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let total = body["total"].as_u64().expect("a total");
                let items = body["items"].as_array().expect("items").len() as u64;
                let expected = total.saturating_sub((page - 1) * 5).min(5);
                assert_eq!(
                    items, expected,
                    "page {page} of 5 has {items} items but total is {total}: {body}"
                );
                listings += 1;
            }
        }
        for writer in writers {
            writer.await.expect("the writer finished without a failed assertion");
        }
        assert!(listings > 0);
    }
}

fn page_size_maximum(document: &Value) -> Value {
    document["paths"]["/api/{user_id}/tasks"]["get"]["parameters"]
        .as_array()
        .expect("listing parameters")
        .iter()
        .find(|parameter| parameter["name"] == "page_size")
        .expect("a page_size parameter")["schema"]["maximum"]
        .clone()
}

on_both_backends! {
    async fn the_request_timeouts_503_is_a_problem_with_retry_after(backend: Backend) {
        // A key server that never answers a second time holds a request whose token names
        // a new key past the request timeout.
        let keys = GatedKeyServer::start(JWKS.to_owned(), JWKS.to_owned()).await;
        let origin = url::Url::parse(&keys.origin).unwrap();
        let app = TestApp::spawn_with(backend, move |settings| {
            settings.better_auth_url = Some(origin);
            settings.jwks_refetch_interval = Duration::from_millis(1);
            settings.jwks_fetch_timeout = Duration::from_secs(30);
            settings.request_timeout = Duration::from_millis(500);
        })
        .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let token = sign("a-key-not-yet-published", false, &claims(&keys.origin));
        let response = list_as(&app, &token).await;
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok()),
            Some("1")
        );
        let problem = expect_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
        assert!(problem["detail"].is_string());
        assert!(keys.wait_for_waiting(1, Duration::from_secs(5)).await);
    }

    async fn a_stale_key_set_is_refreshed_in_the_background_while_cached_keys_keep_working(
        backend: Backend
    ) {
        // Start-up gets only the Ed25519 key; the refresh, held at the gate, brings the
        // RSA key too.
        let keys = GatedKeyServer::start(jwks_with(&["test-ed25519"]), JWKS.to_owned()).await;
        let origin = url::Url::parse(&keys.origin).unwrap();
        let app = TestApp::spawn_with(backend, move |settings| {
            settings.better_auth_url = Some(origin);
            settings.jwks_max_age = Duration::from_millis(200);
            settings.jwks_refetch_interval = Duration::from_millis(100);
            // Long enough that a request waiting for the fetch would outlast the bound below.
            settings.jwks_fetch_timeout = Duration::from_secs(60);
        })
        .await;
        assert_eq!(keys.hits(), 1, "the start-up fetch");
        let known = sign("test-ed25519", false, &claims(&keys.origin));
        // Wait (bounded) until the cached set is stale and a request has started the
        // refresh, which now waits at the gate.
        let mut started = false;
        for _ in 0..100 {
            assert_eq!(list_as(&app, &known).await.status(), StatusCode::OK);
            if keys.wait_for_waiting(1, Duration::from_millis(50)).await {
                started = true;
                break;
            }
        }
        assert!(started, "a stale key set was never refreshed");

        // The refresh is pending; requests with a cached key complete without it. A
        // request that waited for the fetch would not finish before the fetch timeout.
        let requests = (0..20).map(|_| {
            let (app, known) = (&app, known.clone());
            async move { list_as(app, &known).await.status() }
        });
        let statuses = tokio::time::timeout(
            Duration::from_secs(30),
            futures_util::future::join_all(requests),
        )
        .await
        .expect("requests with a cached key waited for the pending key-set fetch");
        assert!(statuses.iter().all(|status| *status == StatusCode::OK), "{statuses:?}");
        assert_eq!(keys.hits(), 2, "one refresh, however many stale requests");
        assert_eq!(keys.answered(), 1, "the refresh is still pending");
        assert_eq!(keys.abandoned(), 0, "the refresh was not given up");

        // A token whose key is not cached waits for the refresh, and the new key is used.
        let rsa = sign("test-rsa", true, &claims(&keys.origin));
        let waiting = tokio::spawn({
            let (client, url) = (app.client.clone(), app.url(&format!("/api/{SUBJECT}/tasks")));
            async move { client.get(url).bearer_auth(rsa).send().await.unwrap().status() }
        });
        keys.open_gate();
        assert_eq!(waiting.await.unwrap(), StatusCode::OK);
        assert_eq!(keys.answered(), 2);
        let rsa = sign("test-rsa", true, &claims(&keys.origin));
        assert_eq!(list_as(&app, &rsa).await.status(), StatusCode::OK);
    }
}
