//! The Better Auth fixture itself: a real Better Auth server issues tokens that its own JWKS
//! verifies, with the claims the API relies on.

#[path = "common/better_auth.rs"]
mod better_auth;

use std::str::FromStr;

use better_auth::{BetterAuth, BetterAuthOptions, decode_unverified};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::Jwk};
use serde_json::Value;

const PASSWORD: &str = "correct horse battery";

/// The JWKS key with `kid`, if any.
fn key_with_kid<'a>(jwks: &'a Value, kid: &str) -> Option<&'a Value> {
    jwks["keys"]
        .as_array()
        .expect("JWKS has keys")
        .iter()
        .find(|key| key["kid"] == kid)
}

/// Verifies `token` with the key of its `kid` in `jwks`, for `issuer` as iss and aud.
fn verify(token: &str, jwks: &Value, issuer: &str) -> Result<Value, jsonwebtoken::errors::Error> {
    let header = jsonwebtoken::decode_header(token)?;
    let kid = header.kid.expect("token has a kid");
    let jwk: Jwk = serde_json::from_value(key_with_kid(jwks, &kid).expect("kid in JWKS").clone())
        .expect("JWKS key parses");
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[issuer]);
    validation.set_required_spec_claims(&["sub", "exp", "iss", "aud"]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(&jwk)?, &validation)
        .map(|data| data.claims)
}

async fn issues_tokens_its_jwks_verifies(alg: &str) {
    let server = BetterAuth::start(alg).await;
    let user = server.sign_up("alice@example.com", PASSWORD, "Alice").await;
    let (header, claims) = decode_unverified(&user.token);
    let jwks = server.jwks().await;

    assert_eq!(header["alg"], alg, "header {header}");
    let kid = header["kid"].as_str().expect("token has a kid");
    let key = key_with_kid(&jwks, kid).unwrap_or_else(|| panic!("kid {kid} in {jwks}"));
    assert_eq!(key["alg"], alg, "JWKS key {key}");
    assert_eq!(claims["sub"], user.id.as_str(), "claims {claims}");
    assert_eq!(claims["iss"], server.origin().as_str(), "claims {claims}");
    assert_eq!(claims["aud"], server.origin().as_str(), "claims {claims}");
    assert_eq!(server.origin(), server.local_url());
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 15 * 60, "claims {claims}");

    let verified = verify(&user.token, &jwks, &server.origin()).expect("token verifies");
    assert_eq!(verified["sub"], user.id.as_str());
    assert_eq!(
        Algorithm::from_str(alg).unwrap(),
        jsonwebtoken::decode_header(&user.token).unwrap().alg
    );
}

#[tokio::test]
async fn an_eddsa_token_carries_its_user_and_verifies_against_the_jwks() {
    issues_tokens_its_jwks_verifies("EdDSA").await;
}

#[tokio::test]
async fn an_rs256_token_carries_its_user_and_verifies_against_the_jwks() {
    issues_tokens_its_jwks_verifies("RS256").await;
}

#[tokio::test]
async fn an_es256_token_carries_its_user_and_verifies_against_the_jwks() {
    issues_tokens_its_jwks_verifies("ES256").await;
}

#[tokio::test]
async fn a_ps256_token_carries_its_user_and_verifies_against_the_jwks() {
    issues_tokens_its_jwks_verifies("PS256").await;
}

#[tokio::test]
async fn two_users_get_tokens_with_different_subjects_and_the_same_key() {
    let server = BetterAuth::start("EdDSA").await;
    let alice = server.sign_up("alice@example.com", PASSWORD, "Alice").await;
    let bob = server.sign_up("bob@example.com", PASSWORD, "Bob").await;
    let (alice_header, alice_claims) = decode_unverified(&alice.token);
    let (bob_header, bob_claims) = decode_unverified(&bob.token);

    assert_ne!(alice.id, bob.id);
    assert_eq!(alice_claims["sub"], alice.id.as_str());
    assert_eq!(bob_claims["sub"], bob.id.as_str());
    assert_eq!(alice_header["kid"], bob_header["kid"]);
    let again = server.sign_in("alice@example.com", PASSWORD).await;
    assert_eq!(again.id, alice.id);
    assert_eq!(decode_unverified(&again.token).1["sub"], alice.id.as_str());
}

#[tokio::test]
async fn a_restart_keeps_the_port_and_rotates_the_key() {
    let mut server = BetterAuth::start_with(BetterAuthOptions {
        stable_user_ids: true,
        ..BetterAuthOptions::new("ES256")
    })
    .await;
    let port = server.port();
    let before = server.sign_up("alice@example.com", PASSWORD, "Alice").await;
    let old_kid = decode_unverified(&before.token).0["kid"].clone();

    server.restart().await;

    assert_eq!(server.port(), port);
    let jwks = server.jwks().await;
    assert!(
        key_with_kid(&jwks, old_kid.as_str().unwrap()).is_none(),
        "{jwks}"
    );
    let after = server.sign_up("alice@example.com", PASSWORD, "Alice").await;
    let (header, claims) = decode_unverified(&after.token);
    assert_ne!(header["kid"], old_kid);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(after.id, before.id, "stable user ids survive the restart");
    assert_eq!(claims["sub"], before.id.as_str());
    verify(&after.token, &jwks, &server.origin()).expect("new token verifies");
}

#[tokio::test]
async fn without_stable_ids_a_user_signed_up_again_after_a_restart_is_someone_else() {
    let mut server = BetterAuth::start("EdDSA").await;
    let before = server.sign_up("alice@example.com", PASSWORD, "Alice").await;
    server.restart().await;
    let after = server.sign_up("alice@example.com", PASSWORD, "Alice").await;
    assert_ne!(after.id, before.id);
}

#[tokio::test]
async fn a_stopped_server_refuses_connections() {
    let mut server = BetterAuth::start("EdDSA").await;
    server.stop().await;
    assert!(!server.is_running());
    let refused = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(server.jwks_url())
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test]
async fn a_server_advertising_another_url_issues_tokens_for_that_origin() {
    let server = BetterAuth::start_with_base_url("RS256", "http://auth.other.test:4000").await;
    let user = server.sign_up("alice@example.com", PASSWORD, "Alice").await;
    let (_, claims) = decode_unverified(&user.token);
    let jwks = server.jwks().await;

    assert_eq!(server.origin(), "http://auth.other.test:4000");
    assert_eq!(claims["iss"], "http://auth.other.test:4000");
    assert_eq!(claims["aud"], "http://auth.other.test:4000");
    verify(&user.token, &jwks, "http://auth.other.test:4000").expect("verifies for its origin");
    let wrong = verify(&user.token, &jwks, &server.local_url());
    assert!(wrong.is_err(), "iss/aud of another URL are rejected");
}
