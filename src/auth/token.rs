//! Issuing and verifying access tokens.
//!
//! Our own tokens are HS256, signed with `BETTER_AUTH_SECRET`. Verification dispatches on the
//! header's `alg`: HS256 goes to the shared secret only; EdDSA, ES256, RS256 and PS256 go to
//! Better Auth's key set ([`JwksVerifier`]) when one is configured; anything else is refused.
//! A key never verifies an algorithm outside its own family, so an HMAC token cannot be
//! checked against a public key, nor the reverse.

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{
    jwks::{JwksError, JwksVerifier},
    revocation::Revocations,
};
use crate::{config::Settings, error::ApiError};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

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
    /// The account's token generation when the token was issued: a sign-out, password
    /// change or deletion raises the account's generation and so revokes older tokens.
    r#gen: i64,
}

/// What is read from a verified HS256 token; the library checks `exp`, `nbf`, `iss`, `aud`.
/// Tokens minted elsewhere with the shared secret carry no `gen`: their `iat` is compared
/// with the account's last revocation instead.
#[derive(Deserialize)]
struct SharedSecretClaims {
    sub: String,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    r#gen: Option<i64>,
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
    jwks: Option<Arc<JwksVerifier>>,
    revocations: Arc<Revocations>,
}

impl TokenVerifier {
    pub fn new(
        secret: &[u8],
        settings: &Settings,
        jwks: Option<Arc<JwksVerifier>>,
        revocations: Arc<Revocations>,
    ) -> Self {
        let mut rules = Validation::new(Algorithm::HS256);
        // A configured issuer or audience must be present, not merely right when present.
        let mut required = vec!["exp", "sub"];
        required.extend(settings.jwt_issuer.as_ref().map(|_| "iss"));
        required.extend(settings.jwt_audience.as_ref().map(|_| "aud"));
        rules.set_required_spec_claims(&required);
        rules.leeway = settings.jwt_leeway.as_secs();
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
            jwks,
            revocations,
        }
    }

    /// Issues an HS256 token for `subject`, a local account whose token generation is
    /// `generation` (see [`Revocations`]).
    pub fn issue(&self, subject: &str, generation: i64) -> Result<IssuedToken, ApiError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: subject.to_owned(),
            iat: now,
            exp: now + self.ttl.as_secs() as i64,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            r#gen: generation,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)?;
        Ok(IssuedToken {
            token,
            expires_in: self.ttl.as_secs(),
        })
    }

    /// Verifies a bearer token and returns its subject.
    pub async fn verify(&self, token: &str) -> Result<String, ApiError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(INVALID_TOKEN);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| INVALID_TOKEN)?;
        let subject = match header.alg {
            Algorithm::HS256 => {
                let claims = jsonwebtoken::decode::<SharedSecretClaims>(
                    token,
                    &self.shared_secret,
                    &self.shared_secret_rules,
                )
                .map_err(|_| INVALID_TOKEN)?
                .claims;
                // Only our own accounts can be signed out; Better Auth's tokens (below) are
                // its sessions' business.
                if !self
                    .revocations
                    .allows(&claims.sub, claims.r#gen, claims.iat)
                {
                    return Err(ApiError::Unauthorized("token has been revoked"));
                }
                claims.sub
            }
            Algorithm::EdDSA | Algorithm::ES256 | Algorithm::RS256 | Algorithm::PS256 => {
                let jwks = self.jwks.as_ref().ok_or(INVALID_TOKEN)?;
                match jwks.verify(&header, token).await {
                    Ok(subject) => subject,
                    Err(JwksError::Invalid) => return Err(INVALID_TOKEN),
                    Err(JwksError::NoKeys) => return Err(ApiError::KeysUnavailable),
                }
            }
            _ => return Err(INVALID_TOKEN),
        };
        if subject.trim().is_empty() {
            return Err(INVALID_TOKEN);
        }
        Ok(subject)
    }
}
