//! Authentication: accounts, passwords, tokens, and the extractors that protect routes.
//!
//! A handler is protected by taking [`CurrentUser`] (any valid token) or [`TaskOwner`] (a
//! valid token whose subject owns the `{user_id}` path). Failures are 401 before 403, and
//! both come before anything about the request's path or body is looked at.

mod account;
pub mod account_domain;
pub mod domain;
pub mod jwks;
pub mod password;
pub mod rate_limit;
pub mod revocation;
mod routes;
pub mod token;

use std::collections::HashMap;

use axum::{
    extract::{FromRequestParts, Path},
    http::{header, request::Parts},
};
use utoipa_axum::router::OpenApiRouter;

use crate::{app::AppState, error::ApiError};

pub fn router() -> OpenApiRouter<AppState> {
    routes::router().merge(account::router())
}

/// The subject of a verified token.
#[derive(Clone, Debug)]
pub struct CurrentUser {
    pub subject: String,
}

/// The bearer token of a request. The scheme name is matched in any case (RFC 7235).
fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized("missing bearer token"))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(ApiError::Unauthorized("malformed Authorization header"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::Unauthorized("malformed Authorization header"));
    }
    Ok(token)
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let subject = state.tokens.verify(bearer_token(parts)?).await?;
        Ok(Self { subject })
    }
}

/// A verified user acting on their own `/api/{user_id}/…` path.
#[derive(Clone, Debug)]
pub struct TaskOwner {
    pub user_id: String,
}

impl FromRequestParts<AppState> for TaskOwner {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::Forbidden)?;
        // Subjects are opaque strings (Better Auth ids are not UUIDs): compare, never parse.
        match params.get("user_id") {
            Some(user_id) if *user_id == user.subject => Ok(Self {
                user_id: user.subject,
            }),
            _ => Err(ApiError::Forbidden),
        }
    }
}
