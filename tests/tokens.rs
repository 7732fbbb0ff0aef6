//! The token verifier under attack, over HTTP: every forged, stale or confused token is a
//! 401 problem with `WWW-Authenticate: Bearer`, and never a 5xx. JWKS-signed tokens are
//! checked against a key set served by the test itself (throw-away keys in
//! `tests/fixtures/jwks`), which also counts how often the service fetches it.

mod common;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::{Router, routing::get};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ED25519: &str = include_str!("fixtures/jwks/ed25519.pem");
const RSA: &str = include_str!("fixtures/jwks/rsa.pem");
const P256: &str = include_str!("fixtures/jwks/p256.pem");
const JWKS: &str = include_str!("fixtures/jwks/jwks.json");
const SUBJECT: &str = "ba0user0id0that0is0not0a0uuid00";

/// A key set served on loopback at `/api/auth/jwks`, as Better Auth serves it.
struct KeyServer {
    origin: String,
    hits: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl KeyServer {
    async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let router = Router::new().route(
            "/api/auth/jwks",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { ([("content-type", "application/json")], JWKS) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            origin,
            hits,
            server,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The application, trusting `origin` as its Better Auth server.
async fn app_trusting(backend: Backend, origin: &str, refetch_seconds: u64) -> TestApp {
    let url = url::Url::parse(origin).unwrap();
    TestApp::spawn_with(backend, move |settings| {
        settings.better_auth_url = Some(url);
        settings.jwks_refetch_interval = std::time::Duration::from_secs(refetch_seconds);
        settings.jwks_fetch_timeout = std::time::Duration::from_secs(2);
    })
    .await
}

fn claims(origin: &str) -> Value {
    json!({"sub": SUBJECT, "iat": now(), "exp": now() + 900, "iss": origin, "aud": origin})
}

fn sign(alg: Algorithm, kid: &str, claims: &Value) -> String {
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(ED25519.as_bytes()),
        Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(RSA.as_bytes()),
        Algorithm::ES256 => EncodingKey::from_ec_pem(P256.as_bytes()),
        other => panic!("no test key for {other:?}"),
    }
    .expect("test key");
    let mut header = Header::new(alg);
    header.typ = None;
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).expect("token")
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A token with any header, signed (HMAC-SHA256) with any secret, however wrong.
fn hmac_token(header: Value, claims: &Value, secret: &[u8]) -> String {
    let message = format!("{}.{}", b64(&header), b64(claims));
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

/// Replaces a token's payload, keeping its header and signature.
fn tampered(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], b64(claims), parts[2])
}

async fn list_as(app: &TestApp, authorization: &str) -> reqwest::Response {
    app.request(Method::GET, &format!("/api/{SUBJECT}/tasks"))
        .header("authorization", authorization)
        .send()
        .await
        .unwrap()
}

async fn assert_refused(app: &TestApp, case: &str, authorization: &str) {
    expect_unauthorized(list_as(app, authorization).await, case).await;
}

async fn every_forged_or_confused_token_is_a_401(backend: Backend) {
    let keys = KeyServer::start().await;
    let app = app_trusting(backend, &keys.origin, 10).await;
    let origin = keys.origin.as_str();
    let good = claims(origin);
    let with = |change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut claims = good.clone();
        change(claims.as_object_mut().unwrap());
        claims
    };
    let rsa_public_key = JWKS.as_bytes();
    let long_token = format!("{}.{}.sig", "e".repeat(32 * 1024), "e".repeat(32 * 1024));

    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&good)
            ),
        ),
        (
            "alg none with a kid",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "kid": "test-ed25519"})),
                b64(&good)
            ),
        ),
        ("HS384 with the shared secret", {
            let mut header = Header::new(Algorithm::HS384);
            header.kid = None;
            jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(SECRET.as_bytes()))
                .unwrap()
        }),
        (
            "HS512 with the shared secret",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS512),
                &good,
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap(),
        ),
        (
            "HS256 header naming a JWKS key id, keyed with the public key",
            hmac_token(
                json!({"alg": "HS256", "kid": "test-rsa"}),
                &good,
                rsa_public_key,
            ),
        ),
        (
            "RS256 header over an HMAC signature with the shared secret",
            hmac_token(
                json!({"alg": "RS256", "kid": "test-rsa"}),
                &good,
                SECRET.as_bytes(),
            ),
        ),
        (
            "EdDSA header over the RSA key's id",
            sign(Algorithm::EdDSA, "test-rsa", &good),
        ),
        (
            "ES256 signature under the Ed25519 key's id",
            sign(Algorithm::ES256, "test-ed25519", &good),
        ),
        (
            "tampered payload",
            tampered(
                &sign(Algorithm::EdDSA, "test-ed25519", &good),
                &with(&|c| {
                    c.insert("sub".into(), json!("someone-else"));
                }),
            ),
        ),
        (
            "HS256 with a wrong secret",
            hs256_token(&good, "another-secret-that-is-32-bytes-long!!"),
        ),
        (
            "expired beyond the leeway",
            sign(
                Algorithm::EdDSA,
                "test-ed25519",
                &with(&|c| {
                    c.insert("exp".into(), json!(now() - 120));
                }),
            ),
        ),
        (
            "not valid before a future nbf",
            sign(
                Algorithm::EdDSA,
                "test-ed25519",
                &with(&|c| {
                    c.insert("nbf".into(), json!(now() + 300));
                }),
            ),
        ),
        (
            "no exp",
            sign(
                Algorithm::EdDSA,
                "test-ed25519",
                &with(&|c| {
                    c.remove("exp");
                }),
            ),
        ),
        (
            "no exp, HS256",
            hs256_token(
                &with(&|c| {
                    c.remove("exp");
                }),
                SECRET,
            ),
        ),
        (
            "no sub",
            sign(
                Algorithm::EdDSA,
                "test-ed25519",
                &with(&|c| {
                    c.remove("sub");
                }),
            ),
        ),
        (
            "empty sub",
            sign(
                Algorithm::EdDSA,
                "test-ed25519",
                &with(&|c| {
                    c.insert("sub".into(), json!(""));
                }),
            ),
        ),
        (
            "empty sub, HS256",
            hs256_token(
                &with(&|c| {
                    c.insert("sub".into(), json!(""));
                }),
                SECRET,
            ),
        ),
        (
            "numeric sub",
            hs256_token(
                &with(&|c| {
                    c.insert("sub".into(), json!(42));
                }),
                SECRET,
            ),
        ),
        (
            "wrong issuer",
            sign(
                Algorithm::EdDSA,
                "test-ed25519",
                &with(&|c| {
                    c.insert("iss".into(), json!("https://evil.example.com"));
                }),
            ),
        ),
        (
            "wrong audience",
            sign(
                Algorithm::EdDSA,
                "test-ed25519",
                &with(&|c| {
                    c.insert("aud".into(), json!("https://evil.example.com"));
                }),
            ),
        ),
        (
            "no issuer",
            sign(
                Algorithm::EdDSA,
                "test-ed25519",
                &with(&|c| {
                    c.remove("iss");
                }),
            ),
        ),
        ("unknown kid", sign(Algorithm::EdDSA, "no-such-key", &good)),
        ("no kid", {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = None;
            jsonwebtoken::encode(
                &header,
                &good,
                &EncodingKey::from_ed_pem(ED25519.as_bytes()).unwrap(),
            )
            .unwrap()
        }),
        ("a 64 KiB token", long_token),
        ("not a JWT at all", "definitely-not-a-jwt".to_owned()),
        ("two segments", "abc.def".to_owned()),
    ];
    for (case, token) in &cases {
        assert_refused(&app, case, &format!("Bearer {token}")).await;
    }
    for (case, header) in [
        ("Bearer with nothing after it", "Bearer"),
        ("Bearer and a space", "Bearer "),
        ("Basic scheme", "Basic dXNlcjpwYXNz"),
        ("token without scheme", "eyJhbGciOiJIUzI1NiJ9.e30.sig"),
    ] {
        assert_refused(&app, case, header).await;
    }
    let response = app
        .request(Method::GET, &format!("/api/{SUBJECT}/tasks"))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNAUTHORIZED).await;
}

async fn better_auth_algorithms_and_lowercase_bearer_are_accepted(backend: Backend) {
    let keys = KeyServer::start().await;
    let app = app_trusting(backend, &keys.origin, 10).await;
    let good = claims(&keys.origin);
    let mut within_leeway = good.clone();
    within_leeway["exp"] = json!(now() - 20);
    for (case, token) in [
        ("EdDSA", sign(Algorithm::EdDSA, "test-ed25519", &good)),
        ("RS256", sign(Algorithm::RS256, "test-rsa", &good)),
        ("PS256", sign(Algorithm::PS256, "test-rsa", &good)),
        ("ES256", sign(Algorithm::ES256, "test-p256", &good)),
        (
            "expired within the 60 s leeway",
            sign(Algorithm::EdDSA, "test-ed25519", &within_leeway),
        ),
        (
            "HS256 with the shared secret",
            hs256_token(&json!({"sub": SUBJECT, "exp": now() + 60}), SECRET),
        ),
    ] {
        let response = list_as(&app, &format!("Bearer {token}")).await;
        assert_eq!(response.status(), StatusCode::OK, "{case}");
    }
    let token = sign(Algorithm::EdDSA, "test-ed25519", &good);
    let response = list_as(&app, &format!("bearer {token}")).await;
    assert_eq!(response.status(), StatusCode::OK, "lowercase scheme");
}

async fn random_kids_fetch_the_key_set_a_bounded_number_of_times(backend: Backend) {
    let keys = KeyServer::start().await;
    let app = app_trusting(backend, &keys.origin, 60).await;
    assert_eq!(keys.hits(), 1, "the key set is fetched once at start-up");
    let good = claims(&keys.origin);
    let requests = (0..1000).map(|_| {
        let token = sign(Algorithm::EdDSA, &uuid::Uuid::new_v4().to_string(), &good);
        let app = &app;
        async move { list_as(app, &format!("Bearer {token}")).await.status() }
    });
    let statuses = futures_join_all(requests, 50).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    assert!(
        keys.hits() <= 2,
        "1 000 random kids caused {} fetches",
        keys.hits()
    );
    let token = sign(Algorithm::EdDSA, "test-ed25519", &good);
    assert_eq!(
        list_as(&app, &format!("Bearer {token}")).await.status(),
        StatusCode::OK
    );
}

async fn an_unreachable_key_server_never_affects_hs256_tokens(backend: Backend) {
    // Nothing listens on this port: the start-up fetch fails, which is not fatal.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let app = app_trusting(backend, &origin, 1).await;
    let token = sign(Algorithm::EdDSA, "test-ed25519", &claims(&origin));
    let response = list_as(&app, &format!("Bearer {token}")).await;
    expect_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    let hs256 = hs256_token(&json!({"sub": SUBJECT, "exp": now() + 60}), SECRET);
    assert_eq!(
        list_as(&app, &format!("Bearer {hs256}")).await.status(),
        StatusCode::OK
    );
    let health = app.request(Method::GET, "/health").send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

/// Runs `futures` with at most `width` in flight.
async fn futures_join_all<F: std::future::Future<Output = StatusCode>>(
    futures: impl Iterator<Item = F>,
    width: usize,
) -> Vec<StatusCode> {
    use futures_util::StreamExt;
    futures_util::stream::iter(futures)
        .buffer_unordered(width)
        .collect()
        .await
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(Backend::Postgres).await
            }
        }
    )*};
}

on_both!(
    every_forged_or_confused_token_is_a_401,
    better_auth_algorithms_and_lowercase_bearer_are_accepted,
    random_kids_fetch_the_key_set_a_bounded_number_of_times,
    an_unreachable_key_server_never_affects_hs256_tokens,
);
