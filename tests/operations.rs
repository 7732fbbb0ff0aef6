//! The operational surface over HTTP: probes, the OpenAPI document and its snapshot, Swagger
//! UI, errors for unknown routes and methods, common headers, CORS, graceful shutdown, and the
//! binary's start-up checks and `migrate` command.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::*;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn header_text(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

async fn openapi(app: &TestApp) -> Value {
    let response = app
        .request(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        header_text(&response, "content-type")
            .is_some_and(|content_type| content_type.starts_with("application/json"))
    );
    response.json().await.expect("the document is JSON")
}

/// Every operation of the contract, with the status codes it must document.
const DOCUMENTED_OPERATIONS: &[(&str, &str, &[u16])] = &[
    ("/api/auth/signup", "post", &[201, 400, 409, 413, 415]),
    ("/api/auth/login", "post", &[200, 400, 401, 413, 415]),
    ("/api/auth/me", "get", &[200, 401, 404]),
    ("/api/{user_id}/tasks", "get", &[200, 400, 401, 403]),
    (
        "/api/{user_id}/tasks",
        "post",
        &[201, 400, 401, 403, 413, 415],
    ),
    (
        "/api/{user_id}/tasks/{id}",
        "get",
        &[200, 400, 401, 403, 404],
    ),
    (
        "/api/{user_id}/tasks/{id}",
        "put",
        &[200, 400, 401, 403, 404, 413, 415],
    ),
    (
        "/api/{user_id}/tasks/{id}",
        "patch",
        &[200, 400, 401, 403, 404, 413, 415],
    ),
    (
        "/api/{user_id}/tasks/{id}",
        "delete",
        &[200, 400, 401, 403, 404],
    ),
    (
        "/api/{user_id}/tasks/{id}/complete",
        "patch",
        &[200, 400, 401, 403, 404, 413, 415],
    ),
    ("/health", "get", &[200]),
    ("/ready", "get", &[200, 503]),
];

/// The operations that need a bearer token.
fn is_protected(path: &str) -> bool {
    path == "/api/auth/me" || path.starts_with("/api/{user_id}")
}

fn snapshot_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/openapi.json")
}

/// Writes `text` to `path` through a temporary file and a rename, so that the two
/// databases' runs of the snapshot test never leave a half-written file.
fn write_atomically(path: &Path, text: &str) {
    let directory = path.parent().expect("the snapshot has a directory");
    std::fs::create_dir_all(directory).expect("create the snapshot directory");
    let temporary = directory.join(format!(".openapi.json.{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&temporary, text).expect("write the snapshot");
    std::fs::rename(&temporary, path).expect("move the snapshot into place");
}

/// JSON pointers where `actual` differs from `expected`, each with what changed.
fn differences(pointer: &str, expected: &Value, actual: &Value, found: &mut Vec<String>) {
    fn short(value: &Value) -> String {
        let text = value.to_string();
        if text.chars().count() > 120 {
            format!("{}…", text.chars().take(120).collect::<String>())
        } else {
            text
        }
    }
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => {
            let mut keys: Vec<&String> = expected.keys().chain(actual.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let child = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
                match (expected.get(key), actual.get(key)) {
                    (Some(expected), Some(actual)) => {
                        differences(&child, expected, actual, found);
                    }
                    (Some(expected), None) => {
                        found.push(format!("{child}: removed (was {})", short(expected)));
                    }
                    (None, Some(actual)) => {
                        found.push(format!("{child}: added {}", short(actual)));
                    }
                    (None, None) => {}
                }
            }
        }
        (Value::Array(expected), Value::Array(actual)) if expected.len() == actual.len() => {
            for (index, (expected, actual)) in expected.iter().zip(actual).enumerate() {
                differences(&format!("{pointer}/{index}"), expected, actual, found);
            }
        }
        _ if expected != actual => found.push(format!(
            "{pointer}: snapshot has {}, server has {}",
            short(expected),
            short(actual)
        )),
        _ => {}
    }
}

/// The `href` and `src` attribute values of an HTML page.
fn referenced_assets(html: &str) -> Vec<String> {
    let mut assets = Vec::new();
    for attribute in ["href=\"", "src=\""] {
        for (index, _) in html.match_indices(attribute) {
            let rest = &html[index + attribute.len()..];
            if let Some(end) = rest.find('"') {
                assets.push(rest[..end].to_owned());
            }
        }
    }
    assets
}

on_both_databases! {
    async fn health_is_200_without_a_token(app: TestApp) {
        let response = app.request(Method::GET, "/health").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"status": "ok"}));
    }

    async fn ready_is_200_when_the_database_answers(app: TestApp) {
        let response = app.request(Method::GET, "/ready").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        assert!(body["status"].is_string(), "{body}");
    }

    async fn the_openapi_document_is_openapi_3_1(app: TestApp) {
        let document = openapi(&app).await;
        let version = document["openapi"].as_str().expect("an openapi version");
        assert!(version.starts_with("3.1."), "version {version}");
        assert!(document["info"]["title"].is_string());
    }

    async fn the_openapi_document_describes_every_route_with_its_status_codes(app: TestApp) {
        let document = openapi(&app).await;
        let mut missing = Vec::new();
        for (path, method, statuses) in DOCUMENTED_OPERATIONS {
            let operation = &document["paths"][path][method];
            if !operation.is_object() {
                missing.push(format!("{} {path}: not documented", method.to_uppercase()));
                continue;
            }
            assert!(
                operation["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path} has a summary"
            );
            for status in *statuses {
                let response = &operation["responses"][status.to_string()];
                if !response.is_object() {
                    missing.push(format!("{} {path}: no {status} response", method.to_uppercase()));
                } else if *status >= 400 && !response["content"]["application/problem+json"].is_object() {
                    missing.push(format!(
                        "{} {path}: {status} is not an application/problem+json body",
                        method.to_uppercase()
                    ));
                }
            }
            if path.contains("{user_id}") {
                let parameters: Vec<&str> = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|parameter| parameter["name"].as_str())
                    .collect();
                let mut expected = vec!["user_id"];
                if path.contains("{id}") {
                    expected.push("id");
                }
                for name in expected {
                    if !parameters.contains(&name) {
                        missing.push(format!("{} {path}: no {name} parameter", method.to_uppercase()));
                    }
                }
            }
        }
        for (path, method) in [
            ("/api/auth/signup", "post"),
            ("/api/auth/login", "post"),
            ("/api/{user_id}/tasks", "post"),
            ("/api/{user_id}/tasks/{id}", "put"),
            ("/api/{user_id}/tasks/{id}", "patch"),
        ] {
            if !document["paths"][path][method]["requestBody"]["content"]["application/json"].is_object() {
                missing.push(format!("{} {path}: no JSON request body", method.to_uppercase()));
            }
        }
        let login_form = &document["paths"]["/api/auth/login"]["post"]["requestBody"]["content"]
            ["application/x-www-form-urlencoded"];
        if !login_form.is_object() {
            missing.push("POST /api/auth/login: no form request body".to_owned());
        }
        assert!(missing.is_empty(), "the OpenAPI document lacks: {missing:#?}");
    }

    async fn the_openapi_document_declares_a_bearer_scheme_that_protected_routes_use(app: TestApp) {
        let document = openapi(&app).await;
        let schemes = document["components"]["securitySchemes"]
            .as_object()
            .expect("components.securitySchemes");
        let bearer: Vec<&String> = schemes
            .iter()
            .filter(|(_, scheme)| {
                scheme["type"] == "http"
                    && scheme["scheme"]
                        .as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
            })
            .map(|(name, _)| name)
            .collect();
        assert!(!bearer.is_empty(), "no http bearer scheme in {schemes:?}");
        for (path, method, _) in DOCUMENTED_OPERATIONS {
            let operation = &document["paths"][path][method];
            // An operation's own `security` overrides the document's.
            let requirements = operation
                .get("security")
                .or_else(|| document.get("security"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let uses_bearer = requirements.iter().any(|requirement| {
                bearer.iter().any(|name| requirement.get(name.as_str()).is_some())
            });
            assert_eq!(
                uses_bearer,
                is_protected(path),
                "{method} {path}: security is {requirements:?}"
            );
        }
    }

    async fn the_openapi_document_matches_its_snapshot(app: TestApp) {
        let served = openapi(&app).await;
        let path = snapshot_path();
        if std::env::var("UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
            let text = serde_json::to_string_pretty(&served).unwrap() + "\n";
            write_atomically(&path, &text);
            return;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
            panic!(
                "no OpenAPI snapshot at {} ({error}). Create it with \
                 `UPDATE_SNAPSHOTS=1 cargo test --test operations`, review it and commit it.",
                path.display()
            )
        });
        let snapshot: Value = serde_json::from_str(&text).expect("the snapshot is JSON");
        let mut found = Vec::new();
        differences("", &snapshot, &served, &mut found);
        assert!(
            found.is_empty(),
            "the served OpenAPI document differs from {} in {} place(s):\n  {}\n\
             If the change is intended, run `UPDATE_SNAPSHOTS=1 cargo test --test operations` \
             and commit the updated snapshot with it.",
            path.display(),
            found.len(),
            found.iter().take(30).cloned().collect::<Vec<_>>().join("\n  "),
        );
    }

    async fn swagger_ui_and_its_assets_are_served_from_the_binary(app: TestApp) {
        let response = app.request(Method::GET, "/docs/").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            header_text(&response, "content-type").is_some_and(|t| t.starts_with("text/html")),
            "Swagger UI is HTML"
        );
        let html = response.text().await.unwrap();
        assert!(html.to_lowercase().contains("swagger"), "{html}");

        let assets = referenced_assets(&html);
        assert!(
            assets.iter().any(|asset| asset.ends_with(".js")),
            "the page loads scripts: {assets:?}"
        );
        for asset in &assets {
            assert!(
                !asset.starts_with("http:") && !asset.starts_with("https:") && !asset.starts_with("//"),
                "{asset} comes from elsewhere: Swagger UI must be served without a CDN"
            );
            let path = match asset.strip_prefix('/') {
                Some(_) => asset.clone(),
                None => format!("/docs/{}", asset.trim_start_matches("./")),
            };
            let response = app.request(Method::GET, &path).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let body = response.bytes().await.unwrap();
            assert!(!body.is_empty(), "{path} is empty");
        }

        let initializer = app
            .request(Method::GET, "/docs/swagger-initializer.js")
            .send()
            .await
            .unwrap();
        assert_eq!(initializer.status(), StatusCode::OK);
        let script = initializer.text().await.unwrap();
        assert!(script.contains("/openapi.json"), "Swagger UI loads our document: {script}");
    }

    async fn docs_without_a_trailing_slash_leads_to_swagger_ui(app: TestApp) {
        let response = app.request(Method::GET, "/docs").send().await.unwrap();
        if response.status().is_redirection() {
            let location = header_text(&response, "location").unwrap_or_default();
            assert!(location.ends_with("/docs/"), "redirected to {location:?}");
        } else {
            assert_eq!(response.status(), StatusCode::OK);
            let html = response.text().await.unwrap();
            assert!(html.to_lowercase().contains("swagger"));
        }
    }

    async fn an_unknown_route_is_a_404_problem_document(app: TestApp) {
        for path in ["/nope", "/api/nope", "/api/auth/nope", "/api/some-user/nope"] {
            let response = app.request(Method::GET, path).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            expect_problem(response, StatusCode::NOT_FOUND).await;
        }
    }

    async fn a_wrong_method_is_a_405_problem_document_with_an_allow_header(app: TestApp) {
        let cases = [
            (Method::DELETE, "/health", "GET"),
            (Method::POST, "/ready", "GET"),
            (Method::GET, "/api/auth/login", "POST"),
            (Method::PUT, "/api/auth/signup", "POST"),
        ];
        for (method, path, allowed) in cases {
            let response = app.request(method.clone(), path).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            let allow = header_text(&response, "allow").unwrap_or_default();
            assert!(allow.contains(allowed), "{method} {path}: Allow is {allow:?}");
            expect_problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
        }
    }

    async fn every_response_carries_a_request_id(app: TestApp) {
        let requests = [
            ("a 200", app.request(Method::GET, "/health")),
            ("a 201", app.request(Method::POST, "/api/auth/signup").json(&json!({
                "username": "alice", "email": "alice@example.com",
                "password": PASSWORD, "confirm_password": PASSWORD,
            }))),
            ("a 400", app.request(Method::POST, "/api/auth/signup").json(&json!({}))),
            ("a 401", app.request(Method::GET, "/api/auth/me")),
            ("a 404", app.request(Method::GET, "/nope")),
            ("a 405", app.request(Method::DELETE, "/health")),
            ("a 415", app.request(Method::POST, "/api/auth/login").body("x")),
            ("the docs", app.request(Method::GET, "/docs/")),
            ("the document", app.request(Method::GET, "/openapi.json")),
        ];
        let mut seen = Vec::new();
        for (case, request) in requests {
            let response = request.send().await.unwrap();
            let id = header_text(&response, "x-request-id").unwrap_or_default();
            assert!(!id.is_empty(), "{case} ({}) has no x-request-id", response.status());
            assert!(!seen.contains(&id), "{case} reuses request id {id}");
            seen.push(id);
        }
    }

    async fn a_request_id_sent_by_the_client_is_echoed_back(app: TestApp) {
        for path in ["/health", "/nope"] {
            let response = app
                .request(Method::GET, path)
                .header("x-request-id", "client-chosen-id-0123")
                .send()
                .await
                .unwrap();
            assert_eq!(
                header_text(&response, "x-request-id").as_deref(),
                Some("client-chosen-id-0123"),
                "{path}"
            );
        }
    }

    async fn responses_forbid_content_type_sniffing(app: TestApp) {
        for path in ["/health", "/nope", "/api/auth/me", "/openapi.json", "/docs/"] {
            let response = app.request(Method::GET, path).send().await.unwrap();
            assert_eq!(
                header_text(&response, "x-content-type-options").as_deref(),
                Some("nosniff"),
                "{path} ({})",
                response.status()
            );
        }
    }

    async fn without_configured_origins_cors_allows_no_origin(app: TestApp) {
        let response = app
            .request(Method::OPTIONS, "/api/auth/signup")
            .header("origin", "http://localhost:3000")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert!(response.status().as_u16() < 500);
        assert_eq!(header_text(&response, "access-control-allow-origin"), None);
    }

    async fn graceful_shutdown_lets_an_in_flight_request_finish(app: TestApp) {
        let address = app.address.trim_start_matches("http://").to_owned();
        let body = json!({
            "username": "alice", "email": "alice@example.com",
            "password": PASSWORD, "confirm_password": PASSWORD,
        })
        .to_string();
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST /api/auth/signup HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // The server sends `100 Continue` only once the handler reads the body: from here
        // on, the request is in flight.
        let interim = read_head(&mut stream).await;
        assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");

        let finish_request = async move {
            stream.write_all(body.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        };
        // `join!` polls `stop` first, so shutdown has begun before the body is sent.
        let ((), response) = tokio::join!(app.stop(), finish_request);
        assert!(response.starts_with("HTTP/1.1 201"), "{response}");
        assert!(
            TcpStream::connect(&address).await.is_err(),
            "the port still accepts connections after stop()"
        );
    }
}

on_both_backends! {
    async fn cors_preflight_from_a_configured_origin_is_allowed(backend: Backend) {
        let app = TestApp::spawn_with(backend, |settings| {
            settings.cors_origins = vec!["http://localhost:3000".into()];
        })
        .await;
        let preflights = [
            ("/api/auth/signup", "POST", "content-type"),
            ("/api/some-user/tasks", "GET", "authorization"),
            ("/api/some-user/tasks/some-task", "PATCH", "authorization,content-type"),
            ("/api/some-user/tasks/some-task", "DELETE", "authorization"),
        ];
        for (path, method, headers) in preflights {
            let response = app
                .request(Method::OPTIONS, path)
                .header("origin", "http://localhost:3000")
                .header("access-control-request-method", method)
                .header("access-control-request-headers", headers)
                .send()
                .await
                .unwrap();
            let case = format!("preflight of {method} {path}");
            assert!(response.status().is_success(), "{case}: {}", response.status());
            assert_eq!(
                header_text(&response, "access-control-allow-origin").as_deref(),
                Some("http://localhost:3000"),
                "{case}"
            );
            let methods = header_text(&response, "access-control-allow-methods").unwrap_or_default();
            assert!(methods.contains(method), "{case}: allows {methods:?}");
            let allowed = header_text(&response, "access-control-allow-headers")
                .unwrap_or_default()
                .to_lowercase();
            for name in headers.split(',') {
                assert!(allowed.contains(name), "{case}: allows headers {allowed:?}");
            }
        }
        let response = app
            .request(Method::GET, "/health")
            .header("origin", "http://localhost:3000")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header_text(&response, "access-control-allow-origin").as_deref(),
            Some("http://localhost:3000")
        );
    }

    async fn cors_from_an_origin_not_configured_gets_no_allow_origin(backend: Backend) {
        let app = TestApp::spawn_with(backend, |settings| {
            settings.cors_origins = vec!["http://localhost:3000".into()];
        })
        .await;
        for origin in ["http://evil.example.com", "http://localhost:3001", "https://localhost:3000"] {
            let response = app
                .request(Method::OPTIONS, "/api/auth/signup")
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type")
                .send()
                .await
                .unwrap();
            assert!(response.status().as_u16() < 500, "{origin}: {}", response.status());
            assert_eq!(
                header_text(&response, "access-control-allow-origin"),
                None,
                "preflight from {origin}"
            );
            let response = app
                .request(Method::GET, "/health")
                .header("origin", origin)
                .send()
                .await
                .unwrap();
            assert_eq!(
                header_text(&response, "access-control-allow-origin"),
                None,
                "GET from {origin}"
            );
        }
    }

    async fn migrate_on_an_already_migrated_database_succeeds(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let directory = tempfile::tempdir().unwrap();
        let output = run_binary(&["migrate"], &[("DATABASE_URL", &app.database_url)], directory.path());
        assert!(output.status.success(), "{}", describe(&output));
        // The application still works on the database afterwards.
        app.signup("alice").await;
    }
}

/// Runs the built `todo-api` binary in `directory` (so that no `.env` is read) with only
/// the given environment variables.
fn run_binary(args: &[&str], variables: &[(&str, &str)], directory: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_todo-api"))
        .args(args)
        .env_clear()
        .envs(variables.iter().copied())
        .current_dir(directory)
        .output()
        .expect("the binary runs")
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_binary_refuses_a_port_that_is_not_a_number() {
    let directory = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", directory.path().join("todo.db").display());
    let output = run_binary(
        &[],
        &[("PORT", "notaport"), ("DATABASE_URL", &database)],
        directory.path(),
    );
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PORT"), "{}", describe(&output));
}

#[test]
fn the_binary_refuses_a_short_secret_without_printing_it() {
    const SHORT_SECRET: &str = "tiny-secret-QX7";
    let directory = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", directory.path().join("todo.db").display());
    let output = run_binary(
        &[],
        &[
            ("BETTER_AUTH_SECRET", SHORT_SECRET),
            ("DATABASE_URL", &database),
            ("PORT", "0"),
        ],
        directory.path(),
    );
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("BETTER_AUTH_SECRET"),
        "{}",
        describe(&output)
    );
    let everything = describe(&output);
    assert!(
        !everything.contains(SHORT_SECRET),
        "the secret was printed: {everything}"
    );
}

#[test]
fn migrate_creates_and_migrates_a_sqlite_database_file() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("fresh.db");
    let database = format!("sqlite://{}", file.display());
    let output = run_binary(
        &["migrate"],
        &[("DATABASE_URL", &database)],
        directory.path(),
    );
    assert!(output.status.success(), "{}", describe(&output));
    assert!(file.exists(), "{} was not created", file.display());
    // Running it again finds nothing to do, and still succeeds.
    let output = run_binary(
        &["migrate"],
        &[("DATABASE_URL", &database)],
        directory.path(),
    );
    assert!(output.status.success(), "{}", describe(&output));
}
