//! What a browser app on another origin meets: a CORS preflight allows every request header
//! the OpenAPI document says the API reads, and every response exposes every header the
//! document says the API sends (both lists derived from `/openapi.json`, as the service's
//! are); and an empty `If-Match` is a 400 that changes nothing.

mod common;

use std::collections::BTreeSet;

use common::*;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

const ORIGIN: &str = "http://localhost:3000";
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn cross_origin_app(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |settings| {
        settings.cors_origins = vec![ORIGIN.into()];
        // One login attempt per account a minute, so that a second one shows `Retry-After`.
        settings.auth_rate_limit_per_account = 1;
    })
    .await
}

async fn openapi(app: &TestApp) -> Value {
    let response = app
        .request(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Every operation of the document: (path, method, operation).
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                found.push((path.clone(), method.to_owned(), operation.clone()));
            }
        }
    }
    found
}

/// The request headers the document declares: header parameters, `Authorization` for its
/// bearer and OAuth2 schemes, `Content-Type` for operations with a body.
fn declared_request_headers(document: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (_, _, operation) in operations(document) {
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            if parameter["in"] == "header" {
                names.insert(parameter["name"].as_str().unwrap().to_lowercase());
            }
        }
        if operation.get("requestBody").is_some() {
            names.insert("content-type".into());
        }
    }
    for scheme in document["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes")
        .values()
    {
        match scheme["type"].as_str() {
            Some("http" | "oauth2" | "openIdConnect") => {
                names.insert("authorization".into());
            }
            Some("apiKey") if scheme["in"] == "header" => {
                names.insert(scheme["name"].as_str().unwrap().to_lowercase());
            }
            _ => {}
        }
    }
    names
}

/// The response headers the document declares, on any response of any operation.
fn declared_response_headers(document: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (_, _, operation) in operations(document) {
        for response in operation["responses"].as_object().unwrap().values() {
            for name in response["headers"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|h| h.0)
            {
                names.insert(name.to_lowercase());
            }
        }
    }
    names
}

fn header_list(response: &Response, name: &str) -> BTreeSet<String> {
    response
        .headers()
        .get_all(name)
        .iter()
        .flat_map(|value| value.to_str().unwrap().split(','))
        .map(|item| item.trim().to_lowercase())
        .filter(|item| !item.is_empty())
        .collect()
}

on_both_backends! {
    async fn a_preflight_allows_each_request_header_the_document_declares(backend: Backend) {
        let app = cross_origin_app(backend).await;
        let document = openapi(&app).await;
        let headers = declared_request_headers(&document);
        // What browser apps send: the token, JSON, a precondition and their own request id.
        for name in ["authorization", "content-type", "if-match", "x-request-id"] {
            assert!(headers.contains(name), "{name} is not declared: {headers:?}");
        }
        for (path, method, _) in operations(&document) {
            let path = path.replace("{user_id}", "some-user").replace("{id}", "some-task");
            let method = method.to_uppercase();
            for name in &headers {
                let response = app
                    .request(Method::OPTIONS, &path)
                    .header("origin", ORIGIN)
                    .header("access-control-request-method", &method)
                    .header("access-control-request-headers", name)
                    .send()
                    .await
                    .unwrap();
                let case = format!("preflight of {method} {path} with {name}");
                assert!(response.status().is_success(), "{case}: {}", response.status());
                assert_eq!(
                    response.headers().get("access-control-allow-origin").unwrap(),
                    ORIGIN,
                    "{case}"
                );
                assert!(
                    header_list(&response, "access-control-allow-headers").contains(name),
                    "{case}: {:?}",
                    response.headers().get("access-control-allow-headers")
                );
                assert!(
                    header_list(&response, "access-control-allow-methods").contains(&method.to_lowercase()),
                    "{case}"
                );
            }
        }
    }

    async fn a_cross_origin_response_exposes_each_response_header_the_document_declares(backend: Backend) {
        let app = cross_origin_app(backend).await;
        let document = openapi(&app).await;
        let declared = declared_response_headers(&document);
        for name in ["etag", "location", "retry-after", "www-authenticate", "x-request-id"] {
            assert!(declared.contains(name), "{name} is not declared: {declared:?}");
        }
        let user = app.signup("alice").await;
        let mut responses = Vec::new();
        // Location and ETag: a new task.
        responses.push(
            app.authed(Method::POST, &TestApp::tasks_path(&user), &user.token)
                .header("origin", ORIGIN)
                .json(&json!({"title": "from a browser"}))
                .send()
                .await
                .unwrap(),
        );
        // WWW-Authenticate: no token.
        responses.push(
            app.request(Method::GET, "/api/auth/me")
                .header("origin", ORIGIN)
                .send()
                .await
                .unwrap(),
        );
        // Retry-After: a login beyond the account's budget.
        for _ in 0..5 {
            let response = app
                .request(Method::POST, "/api/auth/login")
                .header("origin", ORIGIN)
                .json(&json!({"username": "alice", "password": "not the password"}))
                .send()
                .await
                .unwrap();
            let limited = response.status() == StatusCode::TOO_MANY_REQUESTS;
            responses.push(response);
            if limited {
                break;
            }
        }
        // x-request-id: the caller's own, sent back.
        responses.push(
            app.request(Method::GET, "/health")
                .header("origin", ORIGIN)
                .header("x-request-id", "browser-request-1")
                .send()
                .await
                .unwrap(),
        );
        assert_eq!(
            responses.last().unwrap().headers().get("x-request-id").unwrap(),
            "browser-request-1"
        );
        for response in &responses {
            let exposed = header_list(response, "access-control-expose-headers");
            assert_eq!(
                response.headers().get("access-control-allow-origin").unwrap(),
                ORIGIN,
                "{}",
                response.url()
            );
            assert!(exposed.is_superset(&declared), "{}: exposes {exposed:?}", response.url());
        }
        for name in &declared {
            assert!(
                responses.iter().any(|response| response.headers().contains_key(name.as_str())),
                "no response carried {name}: a declared header this test does not provoke"
            );
        }
    }
}

/// The routes that honour `If-Match`, as (method, path suffix, body).
fn conditional_writes() -> [(Method, &'static str, Option<Value>); 4] {
    [
        (
            Method::PUT,
            "",
            Some(json!({"title": "Replaced", "description": null, "completed": true})),
        ),
        (Method::PATCH, "", Some(json!({"title": "Patched"}))),
        (Method::PATCH, "/complete", Some(json!({"completed": true}))),
        (Method::DELETE, "", None),
    ]
}

on_both_databases! {
    async fn an_empty_if_match_is_a_400_that_changes_nothing(app: TestApp) {
        let user = app.signup("alice").await;
        let task = app.create_task(&user, json!({"title": "Keep me"})).await;
        let path = TestApp::task_path(&user, task["id"].as_str().unwrap());
        for value in ["", " ", ",", " , "] {
            for (method, suffix, body) in conditional_writes() {
                let mut request = app
                    .authed(method.clone(), &format!("{path}{suffix}"), &user.token)
                    .header("if-match", value);
                if let Some(body) = body {
                    request = request.json(&body);
                }
                let case = format!("{method} {suffix} with If-Match {value:?}");
                let problem = expect_problem(request.send().await.unwrap(), StatusCode::BAD_REQUEST).await;
                assert_eq!(error_fields(&problem), ["If-Match"], "{case}: {problem}");
                let (status, now) = app.get_json(&user, &path).await;
                assert_eq!(status, StatusCode::OK, "{case}");
                assert_eq!(now, task, "{case} changed the task");
            }
        }
    }
}
