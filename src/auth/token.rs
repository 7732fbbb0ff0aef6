//! Issuing and verifying access tokens.
//!
//! Our own tokens are HS256, signed with `BETTER_AUTH_SECRET`. Verification dispatches on the
//! header's `alg`: HS256 goes to the shared secret, and every other algorithm to
//! [`TokenVerifier::verify_external`], the one place where Better Auth's JWKS-signed tokens
//! are (or will be) handled. Each key only ever verifies its own algorithm.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{config::Settings, error::ApiError};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 60;

const INVALID_TOKEN: ApiError = ApiError::Unauthorized("invalid or expired token");

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
}

/// Only `sub` is read from a verified token; the library checks `exp`, `nbf`, `iss`, `aud`.
#[derive(Deserialize)]
struct Subject {
    sub: String,
}

/// A freshly issued token.
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
}

pub struct TokenVerifier {
    encoding: EncodingKey,
    shared_secret: DecodingKey,
    shared_secret_rules: Validation,
    ttl: Duration,
    issuer: Option<String>,
    audience: Option<String>,
}

impl TokenVerifier {
    pub fn new(secret: &[u8], settings: &Settings) -> Self {
        let mut rules = Validation::new(Algorithm::HS256);
        rules.set_required_spec_claims(&["exp", "sub"]);
        rules.leeway = LEEWAY_SECONDS;
        rules.validate_nbf = true;
        if let Some(issuer) = &settings.jwt_issuer {
            rules.set_issuer(&[issuer]);
        }
        match &settings.jwt_audience {
            Some(audience) => rules.set_audience(&[audience]),
            None => rules.validate_aud = false,
        }
        Self {
            encoding: EncodingKey::from_secret(secret),
            shared_secret: DecodingKey::from_secret(secret),
            shared_secret_rules: rules,
            ttl: settings.token_ttl,
            issuer: settings.jwt_issuer.clone(),
            audience: settings.jwt_audience.clone(),
        }
    }

    /// Issues an HS256 token for `subject`.
    pub fn issue(&self, subject: &str) -> Result<IssuedToken, ApiError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: subject.to_owned(),
            iat: now,
            exp: now + self.ttl.as_secs() as i64,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)?;
        Ok(IssuedToken {
            token,
            expires_in: self.ttl.as_secs(),
        })
    }

    /// Verifies a bearer token and returns its subject.
    pub fn verify(&self, token: &str) -> Result<String, ApiError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(INVALID_TOKEN);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| INVALID_TOKEN)?;
        let subject = match header.alg {
            Algorithm::HS256 => {
                jsonwebtoken::decode::<Subject>(
                    token,
                    &self.shared_secret,
                    &self.shared_secret_rules,
                )
                .map_err(|_| INVALID_TOKEN)?
                .claims
                .sub
            }
            _ => self.verify_external(&header, token)?,
        };
        if subject.trim().is_empty() {
            return Err(INVALID_TOKEN);
        }
        Ok(subject)
    }

    /// Tokens signed with a key we do not share (Better Auth's JWKS). Until a key set is
    /// configured, no other algorithm is accepted.
    fn verify_external(&self, _header: &Header, _token: &str) -> Result<String, ApiError> {
        Err(INVALID_TOKEN)
    }
}
