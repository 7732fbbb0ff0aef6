//! Sign-up, login, the current user, and how bearer tokens are checked, all over HTTP.

mod common;

use common::*;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::{Method, Response, StatusCode, header};
use serde_json::{Value, json};

/// A secret long enough to be plausible, but not the service's.
const OTHER_SECRET: &str = "another-secret-that-is-long-enough-0123";

/// A sign-up body that the service accepts, to be spoiled one field at a time.
fn valid_signup() -> Value {
    json!({
        "username": "alice",
        "email": "alice@example.com",
        "password": PASSWORD,
        "confirm_password": PASSWORD,
    })
}

/// [`valid_signup`] with the fields of `changes` replaced or added.
fn signup_with(changes: Value) -> Value {
    let mut body = valid_signup();
    for (name, value) in changes.as_object().expect("changes are an object") {
        body[name] = value.clone();
    }
    body
}

/// [`valid_signup`] without `field`.
fn signup_without(field: &str) -> Value {
    let mut body = valid_signup();
    body.as_object_mut().expect("an object").remove(field);
    body
}

async fn post_signup(app: &TestApp, body: &Value) -> Response {
    app.request(Method::POST, "/api/auth/signup")
        .json(body)
        .send()
        .await
        .expect("signup request")
}

async fn post_login(app: &TestApp, body: &Value) -> Response {
    app.request(Method::POST, "/api/auth/login")
        .json(body)
        .send()
        .await
        .expect("login request")
}

fn header_text(response: &Response, name: header::HeaderName) -> String {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Asserts the shape the contract gives signup and login responses, and returns the body.
async fn expect_auth_response(response: Response, status: StatusCode, email: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        header_text(&response, header::CACHE_CONTROL),
        "no-store",
        "a response carrying a token must not be cached"
    );
    assert!(header_text(&response, header::CONTENT_TYPE).starts_with("application/json"));
    let body: Value = response.json().await.expect("JSON body");
    let user = &body["user"];
    let id = user["id"].as_str().expect("user.id is a string");
    let parsed = uuid::Uuid::parse_str(id).expect("user.id is a UUID");
    assert_eq!(
        id,
        parsed.hyphenated().to_string(),
        "lower-case, hyphenated"
    );
    assert_eq!(user["email"], email);
    let created_at = user["created_at"].as_str().expect("created_at is a string");
    assert!(created_at.ends_with('Z'), "UTC with Z: {created_at}");
    chrono::DateTime::parse_from_rfc3339(created_at).expect("created_at is RFC 3339");
    let mut user_fields: Vec<&str> = user
        .as_object()
        .expect("user is an object")
        .keys()
        .map(String::as_str)
        .collect();
    user_fields.sort_unstable();
    assert_eq!(user_fields, ["created_at", "email", "id", "username"]);
    assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 86400);
    assert_eq!(body.as_object().expect("an object").len(), 4, "{body}");
    body
}

async fn me(app: &TestApp, token: &str) -> Response {
    app.authed(Method::GET, "/api/auth/me", token)
        .send()
        .await
        .expect("me request")
}

/// The claims of a token issued by the service, checked against [`SECRET`] with HS256.
fn issued_claims(token: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).expect("a JWT header");
    assert_eq!(header.alg, Algorithm::HS256);
    let mut rules = Validation::new(Algorithm::HS256);
    rules.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(SECRET.as_bytes()), &rules)
        .expect("signed with BETTER_AUTH_SECRET")
        .claims
}

/// Unpadded base64url (RFC 4648 §5), to hand-craft the tokens no library will sign.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut encoded = String::new();
    for chunk in bytes.chunks(3) {
        let bits = chunk.iter().enumerate().fold(0u32, |bits, (i, byte)| {
            bits | u32::from(*byte) << (16 - 8 * i)
        });
        for i in 0..=chunk.len() {
            encoded.push(ALPHABET[(bits >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    encoded
}

fn sign(algorithm: Algorithm, claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token encodes")
}

#[test]
fn the_test_base64url_encoder_agrees_with_jwt_headers() {
    assert_eq!(
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"
    );
    assert_eq!(base64url(b"ab"), "YWI");
    assert_eq!(base64url(b"a"), "YQ");
}

on_both_databases! {
    async fn signup_returns_the_user_and_a_bearer_token_that_works(app: TestApp) {
        let body = signup_with(json!({"email": "Alice@Example.COM"}));
        let response = post_signup(&app, &body).await;
        let body = expect_auth_response(response, StatusCode::CREATED, "alice@example.com").await;
        assert_eq!(body["user"]["username"], "alice");

        let response = me(&app, body["access_token"].as_str().unwrap()).await;
        assert_eq!(response.status(), StatusCode::OK);
        let user: Value = response.json().await.unwrap();
        assert_eq!(user, body["user"]);
    }

    async fn the_issued_token_is_hs256_with_the_shared_secret_and_lives_a_day(app: TestApp) {
        let alice = app.signup("alice").await;
        let claims = issued_claims(&alice.token);
        assert_eq!(claims["sub"], alice.id.as_str());
        let iat = claims["iat"].as_i64().expect("iat");
        let exp = claims["exp"].as_i64().expect("exp");
        assert_eq!(exp - iat, 86400);
    }

    async fn signup_and_login_never_return_the_password_or_its_hash(app: TestApp) {
        let response = post_signup(&app, &valid_signup()).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let text = response.text().await.unwrap();
        assert!(!text.contains(PASSWORD) && !text.contains("$2"), "{text}");

        let login = json!({"username": "alice", "password": PASSWORD});
        let response = post_login(&app, &login).await;
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.unwrap();
        assert!(!text.contains(PASSWORD) && !text.contains("$2"), "{text}");

        let token = serde_json::from_str::<Value>(&text).unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let text = me(&app, &token).await.text().await.unwrap();
        assert!(!text.contains(PASSWORD) && !text.contains("$2"), "{text}");
    }

    async fn signup_with_an_invalid_field_is_a_400_naming_that_field(app: TestApp) {
        // Both password fields alike, so that only `password` itself can fail.
        let with_password = |password: &str| {
            signup_with(json!({"password": password, "confirm_password": password}))
        };
        let cases: Vec<(&str, Value, &[&str])> = vec![
            ("a username of 2 characters is too short", signup_with(json!({"username": "ab"})), &["username"]),
            ("a username of 33 characters is too long", signup_with(json!({"username": "a".repeat(33)})), &["username"]),
            ("an empty username", signup_with(json!({"username": ""})), &["username"]),
            ("a username with a space", signup_with(json!({"username": "alice smith"})), &["username"]),
            ("a username with an @", signup_with(json!({"username": "alice@home"})), &["username"]),
            ("a username with a slash", signup_with(json!({"username": "alice/bob"})), &["username"]),
            ("an email without @", signup_with(json!({"email": "alice.example.com"})), &["email"]),
            ("an email without a local part", signup_with(json!({"email": "@example.com"})), &["email"]),
            ("an email without a domain", signup_with(json!({"email": "alice@"})), &["email"]),
            ("an email with two @", signup_with(json!({"email": "alice@@example.com"})), &["email"]),
            ("an email with a space inside", signup_with(json!({"email": "alice smith@example.com"})), &["email"]),
            ("an empty email", signup_with(json!({"email": ""})), &["email"]),
            ("a password of 7 bytes", with_password("1234567"), &["password"]),
            ("a password of 73 bytes", with_password(&"p".repeat(73)), &["password"]),
            ("a password of 37 characters but 74 bytes", with_password(&"é".repeat(37)), &["password"]),
            ("a confirm_password that differs", signup_with(json!({"confirm_password": "other"})), &["confirm_password"]),
            ("a missing username", signup_without("username"), &["username"]),
            ("a missing email", signup_without("email"), &["email"]),
            ("a missing password", signup_without("password"), &["password"]),
            ("a missing confirm_password", signup_without("confirm_password"), &["confirm_password"]),
            ("an empty object", json!({}), &["confirm_password", "email", "password", "username"]),
            ("a username that is a number", signup_with(json!({"username": 42})), &["username"]),
            ("an email that is null", signup_with(json!({"email": null})), &["email"]),
            ("a password that is a boolean", signup_with(json!({"password": true})), &["password"]),
            ("a confirm_password that is an array", signup_with(json!({"confirm_password": []})), &["confirm_password"]),
            ("an unknown field", signup_with(json!({"is_admin": true})), &["is_admin"]),
        ];
        for (case, body, expected) in cases {
            let response = post_signup(&app, &body).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
            let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
            let mut fields = error_fields(&problem);
            fields.sort();
            assert_eq!(fields, expected, "{case}: {problem}");
            for error in problem["errors"].as_array().unwrap() {
                assert!(
                    error["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{case}: every error says why: {problem}"
                );
            }
        }
        // None of the refused bodies created an account.
        app.signup("alice").await;
    }

    async fn signup_reports_every_failing_field_at_once(app: TestApp) {
        let body = json!({
            "username": "a b",
            "email": "not-an-email",
            "password": "short",
            "confirm_password": "short",
            "nickname": "al",
        });
        let response = post_signup(&app, &body).await;
        let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
        let mut fields = error_fields(&problem);
        fields.sort();
        assert_eq!(fields, ["email", "nickname", "password", "username"], "{problem}");

        let body = json!({
            "username": "ab",
            "email": "alice@",
            "password": PASSWORD,
            "confirm_password": "something else entirely",
        });
        let response = post_signup(&app, &body).await;
        let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
        let mut fields = error_fields(&problem);
        fields.sort();
        assert_eq!(fields, ["confirm_password", "email", "username"], "{problem}");
    }

    async fn signup_with_a_body_that_is_not_a_json_object_is_a_400(app: TestApp) {
        let cases = [
            ("not JSON at all", "username=alice"),
            ("truncated JSON", r#"{"username": "alice""#),
            ("a JSON array", "[]"),
            ("a JSON string", r#""alice""#),
            ("JSON null", "null"),
            ("an empty body", ""),
        ];
        for (case, body) in cases {
            let response = app
                .request(Method::POST, "/api/auth/signup")
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
            let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
            assert!(!error_fields(&problem).is_empty(), "{case}: {problem}");
        }
    }

    async fn signup_with_a_taken_username_is_a_409_whatever_its_case(app: TestApp) {
        app.signup("alice").await;
        for (case, username) in [("the same", "alice"), ("capitalised", "Alice"), ("upper case", "ALICE")] {
            let body = signup_with(json!({"username": username, "email": "other@example.com"}));
            let response = post_signup(&app, &body).await;
            assert_eq!(response.status(), StatusCode::CONFLICT, "{case} username");
            expect_problem(response, StatusCode::CONFLICT).await;
        }
    }

    async fn signup_with_a_taken_email_is_a_409_whatever_its_case(app: TestApp) {
        app.signup("alice").await;
        for (case, email) in [
            ("the same", "alice@example.com"),
            ("upper case", "ALICE@EXAMPLE.COM"),
            ("mixed case", "Alice@Example.com"),
        ] {
            let body = signup_with(json!({"username": "bob", "email": email}));
            let response = post_signup(&app, &body).await;
            assert_eq!(response.status(), StatusCode::CONFLICT, "{case} email");
            expect_problem(response, StatusCode::CONFLICT).await;
        }
        // The refused sign-ups left bob's name free.
        app.signup("bob").await;
    }

    async fn signup_without_a_json_content_type_is_a_415(app: TestApp) {
        let json_text = valid_signup().to_string();
        let cases: [(&str, Option<&str>, String); 3] = [
            ("JSON sent as text/plain", Some("text/plain"), json_text.clone()),
            ("JSON sent without a content type", None, json_text),
            (
                "a form",
                Some("application/x-www-form-urlencoded"),
                format!("username=alice&email=alice%40example.com&password={PASSWORD}&confirm_password={PASSWORD}"),
            ),
        ];
        for (case, content_type, body) in cases {
            let mut request = app.request(Method::POST, "/api/auth/signup").body(body);
            if let Some(content_type) = content_type {
                request = request.header(header::CONTENT_TYPE, content_type);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{case}");
            expect_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
        }
    }

    async fn signup_with_a_huge_body_is_a_413(app: TestApp) {
        let body = signup_with(json!({"padding": "x".repeat(1024 * 1024)}));
        let response = post_signup(&app, &body).await;
        expect_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    }

    async fn login_by_username_returns_what_signup_returned(app: TestApp) {
        let signup = post_signup(&app, &valid_signup()).await;
        let signup: Value = signup.json().await.unwrap();
        let response = post_login(&app, &json!({"username": "alice", "password": PASSWORD})).await;
        let body = expect_auth_response(response, StatusCode::OK, "alice@example.com").await;
        assert_eq!(body["user"], signup["user"]);
        let response = me(&app, body["access_token"].as_str().unwrap()).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    async fn login_by_email_succeeds_whatever_the_email_case(app: TestApp) {
        let alice = app.signup("alice").await;
        for email in ["alice@example.com", "ALICE@Example.com"] {
            let response = post_login(&app, &json!({"email": email, "password": PASSWORD})).await;
            let body = expect_auth_response(response, StatusCode::OK, "alice@example.com").await;
            assert_eq!(body["user"]["id"], alice.id.as_str(), "{email}");
        }
    }

    async fn login_with_an_email_in_the_username_field_reads_it_as_an_email(app: TestApp) {
        let alice = app.signup("alice").await;
        let body = json!({"username": "alice@example.com", "password": PASSWORD});
        let response = post_login(&app, &body).await;
        let body = expect_auth_response(response, StatusCode::OK, "alice@example.com").await;
        assert_eq!(body["user"]["id"], alice.id.as_str());
    }

    async fn login_with_the_oauth2_password_form_that_swagger_ui_sends_succeeds(app: TestApp) {
        let alice = app.signup("alice").await;
        let forms = [
            ("by username", "alice"),
            ("by email", "alice@example.com"),
        ];
        for (case, username) in forms {
            let response = app
                .request(Method::POST, "/api/auth/login")
                .form(&[
                    ("grant_type", "password"),
                    ("username", username),
                    ("password", PASSWORD),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{case}");
            let body = expect_auth_response(response, StatusCode::OK, "alice@example.com").await;
            assert_eq!(body["user"]["id"], alice.id.as_str(), "{case}");
            let response = me(&app, body["access_token"].as_str().unwrap()).await;
            assert_eq!(response.status(), StatusCode::OK, "{case}");
        }
    }

    async fn login_with_a_wrong_password_or_an_unknown_user_is_the_same_401(app: TestApp) {
        app.signup("alice").await;
        let attempts = [
            ("a wrong password by username", json!({"username": "alice", "password": "wrong password"})),
            ("a wrong password by email", json!({"email": "alice@example.com", "password": "wrong password"})),
            ("an unknown username", json!({"username": "mallory", "password": PASSWORD})),
            ("an unknown email", json!({"email": "mallory@example.com", "password": PASSWORD})),
            ("an unknown email in the username field", json!({"username": "mallory@example.com", "password": PASSWORD})),
        ];
        let mut first: Option<(&str, Value)> = None;
        for (case, body) in attempts {
            let response = post_login(&app, &body).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}");
            let challenge = header_text(&response, header::WWW_AUTHENTICATE);
            assert!(challenge.starts_with("Bearer"), "{case}: {challenge:?}");
            let problem = expect_problem(response, StatusCode::UNAUTHORIZED).await;
            match &first {
                None => first = Some((case, problem)),
                Some((first_case, first_problem)) => assert_eq!(
                    &problem, first_problem,
                    "{case} must be indistinguishable from {first_case}"
                ),
            }
        }
    }

    async fn a_password_of_exactly_72_bytes_signs_up_and_logs_in(app: TestApp) {
        let password = "p".repeat(72);
        let body = signup_with(json!({"password": password, "confirm_password": password}));
        assert_eq!(post_signup(&app, &body).await.status(), StatusCode::CREATED);
        let response = post_login(&app, &json!({"username": "alice", "password": password})).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "the contract accepts passwords of 8 to 72 bytes, so a 72-byte one must log in"
        );
    }

    async fn login_with_the_right_password_plus_extra_bytes_is_a_401(app: TestApp) {
        // bcrypt reads 72 bytes: a longer attempt must not match by its first 72.
        let password = "p".repeat(72);
        let body = signup_with(json!({"password": password, "confirm_password": password}));
        assert_eq!(post_signup(&app, &body).await.status(), StatusCode::CREATED);
        let longer = format!("{password}x");
        let response = post_login(&app, &json!({"username": "alice", "password": longer})).await;
        expect_unauthorized(response, "73 bytes whose first 72 are the password").await;
    }

    async fn login_without_a_password_or_a_user_is_a_400(app: TestApp) {
        app.signup("alice").await;
        let cases: [(&str, Value, Option<&str>); 4] = [
            ("no password", json!({"username": "alice"}), Some("password")),
            ("a null password", json!({"username": "alice", "password": null}), Some("password")),
            ("neither username nor email", json!({"password": PASSWORD}), None),
            ("an empty object", json!({}), Some("password")),
        ];
        for (case, body, field) in cases {
            let response = post_login(&app, &body).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
            let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
            let fields = error_fields(&problem);
            assert!(!fields.is_empty(), "{case}: {problem}");
            if let Some(field) = field {
                assert!(fields.iter().any(|f| f == field), "{case}: {problem}");
            }
        }
    }

    async fn login_with_a_text_plain_body_is_a_415(app: TestApp) {
        app.signup("alice").await;
        let response = app
            .request(Method::POST, "/api/auth/login")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(json!({"username": "alice", "password": PASSWORD}).to_string())
            .send()
            .await
            .unwrap();
        expect_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    }

    async fn me_returns_the_account_of_the_token(app: TestApp) {
        let alice = app.signup("alice").await;
        app.signup("bob").await;
        let response = me(&app, &alice.token).await;
        assert_eq!(response.status(), StatusCode::OK);
        let user: Value = response.json().await.unwrap();
        assert_eq!(user["id"], alice.id.as_str());
        assert_eq!(user["username"], "alice");
        assert_eq!(user["email"], "alice@example.com");
        assert!(user["created_at"].is_string());
        assert_eq!(user.as_object().unwrap().len(), 4, "{user}");
    }

    async fn me_without_a_token_is_a_401(app: TestApp) {
        let response = app.request(Method::GET, "/api/auth/me").send().await.unwrap();
        expect_unauthorized(response, "no Authorization header").await;
    }

    async fn me_with_a_valid_token_for_a_subject_without_an_account_is_a_404(app: TestApp) {
        app.signup("alice").await;
        let subjects = [
            ("a Better Auth style id", "Xk3n9QpL2mR7vT1wY5zA8bC4dE6fG0hJ".to_owned()),
            ("a random UUID", uuid::Uuid::new_v4().to_string()),
            ("a username", "alice".to_owned()),
        ];
        for (case, subject) in subjects {
            let claims = json!({"sub": subject, "iat": now(), "exp": now() + 600});
            let response = me(&app, &hs256_token(&claims, SECRET)).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{case}");
            expect_problem(response, StatusCode::NOT_FOUND).await;
        }
    }

    async fn every_bad_token_is_a_401_on_every_protected_route(app: TestApp) {
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        let claims = |changes: Value| {
            let mut claims = json!({"sub": alice.id, "iat": now(), "exp": now() + 600});
            for (name, value) in changes.as_object().unwrap() {
                if value.is_null() {
                    claims.as_object_mut().unwrap().remove(name);
                } else {
                    claims[name] = value.clone();
                }
            }
            claims
        };
        let [bob_header, _, bob_signature] = parts(&bob.token);
        let [alice_header, alice_payload, alice_signature] = parts(&alice.token);
        let none_header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
        let alice_claims = base64url(claims(json!({})).to_string().as_bytes());
        let extended = base64url(claims(json!({"exp": now() + 365 * 86400})).to_string().as_bytes());
        let bearer = |algorithm, changes: Value, secret: &str| {
            format!("Bearer {}", sign(algorithm, &claims(changes), secret))
        };
        let hs256 = |changes: Value| bearer(Algorithm::HS256, changes, SECRET);
        let huge = hs256(json!({"padding": "x".repeat(64 * 1024)}));
        assert!(huge.len() > 64 * 1024);

        let cases: Vec<(&str, String)> = vec![
            ("a token expired an hour ago", hs256(json!({"iat": now() - 7200, "exp": now() - 3600}))),
            ("a token valid only in an hour", hs256(json!({"nbf": now() + 3600, "exp": now() + 7200}))),
            ("a token signed with another secret", bearer(Algorithm::HS256, json!({}), OTHER_SECRET)),
            ("a token without exp", hs256(json!({"exp": null}))),
            ("a token without sub", hs256(json!({"sub": null}))),
            ("a token with an empty sub", hs256(json!({"sub": ""}))),
            ("a token with a blank sub", hs256(json!({"sub": "   "}))),
            ("a token whose sub is a number", hs256(json!({"sub": 42}))),
            ("an alg none token without a signature", format!("Bearer {none_header}.{alice_claims}.")),
            ("an alg none token without the last dot", format!("Bearer {none_header}.{alice_claims}")),
            ("an alg none token with a genuine signature", format!("Bearer {none_header}.{alice_payload}.{alice_signature}")),
            ("an HS512 token with the right secret", bearer(Algorithm::HS512, json!({}), SECRET)),
            ("an HS384 token with the right secret", bearer(Algorithm::HS384, json!({}), SECRET)),
            ("bob's token with alice's payload", format!("Bearer {bob_header}.{alice_payload}.{bob_signature}")),
            ("alice's token with a longer exp", format!("Bearer {alice_header}.{extended}.{alice_signature}")),
            ("a 64 KiB token signed with the right secret", huge),
            ("a token that is not a JWT", "Bearer not-a-jwt".to_owned()),
            ("a token of three empty parts", "Bearer ..".to_owned()),
            ("Bearer with nothing after it", "Bearer".to_owned()),
            ("Bearer with only spaces after it", "Bearer    ".to_owned()),
            ("a genuine token without a scheme", alice.token.clone()),
            ("a genuine token under another scheme", format!("Token {}", alice.token)),
            ("Basic credentials", "Basic YWxpY2U6Y29ycmVjdCBob3JzZSBiYXR0ZXJ5".to_owned()),
        ];
        let tasks = TestApp::tasks_path(&alice);
        for (case, authorization) in &cases {
            let requests = [
                ("GET /api/auth/me", app.request(Method::GET, "/api/auth/me")),
                ("GET tasks", app.request(Method::GET, &tasks)),
                // An invalid body too: without a valid token, nothing else is looked at.
                ("POST tasks", app.request(Method::POST, &tasks).json(&json!({"title": ""}))),
            ];
            for (route, request) in requests {
                let response = request
                    .header(header::AUTHORIZATION, authorization)
                    .send()
                    .await
                    .unwrap_or_else(|error| panic!("{case} on {route}: {error}"));
                expect_unauthorized(response, &format!("{case} on {route}")).await;
            }
        }
    }

    async fn the_bearer_scheme_name_is_accepted_in_any_case(app: TestApp) {
        let alice = app.signup("alice").await;
        let tasks = TestApp::tasks_path(&alice);
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            for path in ["/api/auth/me", tasks.as_str()] {
                let response = app
                    .request(Method::GET, path)
                    .header(header::AUTHORIZATION, format!("{scheme} {}", alice.token))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK, "{scheme} on {path}");
            }
        }
    }

    async fn an_hs256_token_signed_elsewhere_with_the_shared_secret_is_accepted(app: TestApp) {
        let alice = app.signup("alice").await;
        let tokens = [
            ("minimal claims", json!({"sub": alice.id, "exp": now() + 600})),
            ("an nbf in the past", json!({"sub": alice.id, "iat": now() - 60, "nbf": now() - 60, "exp": now() + 600})),
        ];
        for (case, claims) in tokens {
            let response = me(&app, &hs256_token(&claims, SECRET)).await;
            assert_eq!(response.status(), StatusCode::OK, "{case}");
        }
    }
}

/// The three dot-separated parts of a JWT.
fn parts(token: &str) -> [String; 3] {
    let parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts.try_into().expect("a JWT has three parts")
}

on_both_backends! {
    async fn the_token_lifetime_follows_the_settings(backend: Backend) {
        let app = TestApp::spawn_with(backend, |settings| {
            settings.token_ttl = std::time::Duration::from_secs(3600);
        })
        .await;
        let response = post_signup(&app, &valid_signup()).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["expires_in"], 3600);
        let claims = issued_claims(body["access_token"].as_str().unwrap());
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
    }

    async fn with_an_issuer_and_audience_configured_tokens_must_carry_them(backend: Backend) {
        const ISSUER: &str = "https://auth.example.com";
        const AUDIENCE: &str = "https://api.example.com";
        let app = TestApp::spawn_with(backend, |settings| {
            settings.jwt_issuer = Some(ISSUER.into());
            settings.jwt_audience = Some(AUDIENCE.into());
        })
        .await;
        let alice = app.signup("alice").await;
        let claims = issued_claims(&alice.token);
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["aud"], AUDIENCE);
        assert_eq!(me(&app, &alice.token).await.status(), StatusCode::OK);

        let exp = now() + 600;
        let accepted = json!({"sub": alice.id, "exp": exp, "iss": ISSUER, "aud": AUDIENCE});
        assert_eq!(me(&app, &hs256_token(&accepted, SECRET)).await.status(), StatusCode::OK);

        let refused = [
            ("no iss and no aud", json!({"sub": alice.id, "exp": exp})),
            ("no iss", json!({"sub": alice.id, "exp": exp, "aud": AUDIENCE})),
            ("no aud", json!({"sub": alice.id, "exp": exp, "iss": ISSUER})),
            ("another iss", json!({"sub": alice.id, "exp": exp, "iss": "https://evil.example.com", "aud": AUDIENCE})),
            ("another aud", json!({"sub": alice.id, "exp": exp, "iss": ISSUER, "aud": "https://other.example.com"})),
        ];
        let mut accepted_wrongly = Vec::new();
        for (case, claims) in refused {
            let response = me(&app, &hs256_token(&claims, SECRET)).await;
            if response.status() == StatusCode::UNAUTHORIZED {
                expect_unauthorized(response, case).await;
            } else {
                accepted_wrongly.push(format!("{case}: {}", response.status()));
            }
        }
        assert!(
            accepted_wrongly.is_empty(),
            "with JWT_ISSUER and JWT_AUDIENCE set, these tokens must be 401: {accepted_wrongly:#?}"
        );
    }
}
