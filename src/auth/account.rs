//! Self-service for local accounts: `GET`, `PATCH` and `DELETE /api/auth/me`,
//! `POST /api/auth/password` and `POST /api/auth/logout`.
//!
//! Every route that takes a password counts against the same rate limits as login, so it
//! cannot be used to guess passwords faster. Sign-out, a password change and deletion revoke
//! the account's tokens on every instance (see [`super::revocation`]).

use std::net::IpAddr;

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    CurrentUser,
    account_domain::{AccountChange, AccountDeletion, PasswordChange},
    domain::{AuthResponse, User, UserCredentials},
    rate_limit::Account,
    routes::{issue, token_response},
};
use crate::{
    app::AppState,
    client_addr::ClientAddr,
    error::{ApiError, Problem},
    extract::JsonBody,
    storage::{Taken, to_completion},
    tasks::domain::now_millis,
};

const NO_ACCOUNT: ApiError = ApiError::NotFound("no local account for this token's subject");

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me, update_me, delete_me))
        .routes(routes!(change_password))
        .routes(routes!(logout))
}

/// The local account behind the token: a 404 for a subject that has none (a Better Auth
/// user), whose tokens and sessions are Better Auth's business.
async fn local_account(state: &AppState, user: &CurrentUser) -> Result<UserCredentials, ApiError> {
    let id = Uuid::parse_str(&user.subject).map_err(|_| NO_ACCOUNT)?;
    state
        .store
        .find_credentials_by_id(id)
        .await?
        .ok_or(NO_ACCOUNT)
}

/// Checks `password` against the account, as a login would: the attempt counts against the
/// client's and the account's login budgets first, and only a wrong password keeps counting.
/// A wrong password is the login's 401.
async fn prove(
    state: &AppState,
    client: IpAddr,
    account: &UserCredentials,
    password: &str,
) -> Result<(), ApiError> {
    state.passwords.ensure_capacity()?;
    state.rate_limits.check_client(client).await?;
    let attempt = state
        .rate_limits
        .begin_login(client, Account::Id(account.user.id))
        .await?;
    match state
        .passwords
        .verify(password, &account.password_hash)
        .await
    {
        Ok(true) => {
            attempt.succeeded().await;
            Ok(())
        }
        Ok(false) => {
            drop(attempt);
            Err(ApiError::InvalidCredentials)
        }
        Err(error) => {
            attempt.give_back().await;
            Err(error)
        }
    }
}

/// The current user
///
/// The local account of the token's subject; 404 for a valid token whose subject has no
/// local account (a Better Auth user, for instance).
#[utoipa::path(
    get,
    path = "/api/auth/me",
    tag = "auth",
    security(("bearer" = []), ("oauth2_password" = [])),
    responses(
        (status = 200, description = "The account", body = User),
        (status = 401, description = "Missing, invalid or revoked token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No local account for this subject", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn me(State(state): State<AppState>, user: CurrentUser) -> Result<Json<User>, ApiError> {
    let id = Uuid::parse_str(&user.subject).map_err(|_| NO_ACCOUNT)?;
    state.store.find_user(id).await?.map(Json).ok_or(NO_ACCOUNT)
}

/// Change the username or email
///
/// Changes the username, the email or both, with the sign-up rules, after checking the
/// current password. Tokens stay valid.
#[utoipa::path(
    patch,
    path = "/api/auth/me",
    tag = "auth",
    security(("bearer" = []), ("oauth2_password" = [])),
    request_body(content = super::account_domain::AccountChangeRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The changed account", body = User),
        (status = 400, description = "A field is missing or invalid, or neither username nor email is given", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, invalid or revoked token, or wrong current password", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No local account for this subject", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Username or email already taken", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many password attempts from this client or for this account", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Database unavailable, or too many passwords being hashed", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update_me(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    user: CurrentUser,
    JsonBody(body): JsonBody,
) -> Result<Json<User>, ApiError> {
    let account = local_account(&state, &user).await?;
    let change = AccountChange::from_json(body)?;
    prove(&state, client, &account, &change.current_password).await?;
    let id = account.user.id;
    match state
        .store
        .taken_by_others(id, change.username.as_ref(), change.email.as_ref())
        .await?
    {
        Taken { username: true, .. } => {
            return Err(ApiError::Conflict("username is already taken"));
        }
        Taken { email: true, .. } => return Err(ApiError::Conflict("email is already registered")),
        Taken { .. } => {}
    }
    let user = state
        .store
        .update_account(id, change.username.as_ref(), change.email.as_ref())
        .await?
        .ok_or(NO_ACCOUNT)?;
    tracing::info!(user_id = %id, "account changed");
    Ok(Json(user))
}

/// Delete the account
///
/// Deletes the account and all its tasks in one transaction, after checking the password;
/// its tokens stop working on every instance.
#[utoipa::path(
    delete,
    path = "/api/auth/me",
    tag = "auth",
    security(("bearer" = []), ("oauth2_password" = [])),
    request_body(content = super::account_domain::AccountDeletionRequest, content_type = "application/json"),
    responses(
        (status = 204, description = "Account and tasks deleted"),
        (status = 400, description = "The password is missing", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, invalid or revoked token, or wrong password", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No local account for this subject", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many password attempts from this client or for this account", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Database unavailable, or too many passwords being hashed", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_me(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    user: CurrentUser,
    JsonBody(body): JsonBody,
) -> Result<StatusCode, ApiError> {
    let account = local_account(&state, &user).await?;
    let deletion = AccountDeletion::from_json(body)?;
    prove(&state, client, &account, &deletion.password).await?;
    let revocation = state
        .tasks
        .delete_account(account.user.id)
        .await?
        .ok_or(NO_ACCOUNT)?;
    state.revocations.record(&revocation);
    tracing::info!(user_id = %account.user.id, "account deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Change the password
///
/// Checks the current password, sets the new one (sign-up rules) and revokes every token
/// issued before; returns a fresh token, as login does.
#[utoipa::path(
    post,
    path = "/api/auth/password",
    tag = "auth",
    security(("bearer" = []), ("oauth2_password" = [])),
    request_body(content = super::account_domain::PasswordChangeRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Password changed; older tokens are revoked", body = AuthResponse),
        (status = 400, description = "A field is missing or invalid, or the new passwords differ", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, invalid or revoked token, or wrong current password", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No local account for this subject", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many password attempts from this client or for this account", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Database unavailable, or too many passwords being hashed", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn change_password(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    user: CurrentUser,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let account = local_account(&state, &user).await?;
    let change = PasswordChange::from_json(body)?;
    prove(&state, client, &account, &change.current_password).await?;
    let hash = state.passwords.hash(&change.new_password).await?;
    let store = state.store.clone();
    let id = account.user.id;
    let revocation =
        to_completion(async move { store.revoke_tokens(id, Some(&hash), now_millis()).await })
            .await?
            .ok_or(NO_ACCOUNT)?;
    state.revocations.record(&revocation);
    tracing::info!(user_id = %account.user.id, "password changed; older tokens revoked");
    let body = issue(&state, account.user, revocation.generation)?;
    Ok(token_response(StatusCode::OK, body))
}

/// Sign out everywhere
///
/// Revokes every token of this account issued up to now, on every instance.
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "auth",
    security(("bearer" = []), ("oauth2_password" = [])),
    responses(
        (status = 204, description = "Every token issued so far is revoked"),
        (status = 401, description = "Missing, invalid or revoked token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No local account for this subject", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn logout(State(state): State<AppState>, user: CurrentUser) -> Result<Response, ApiError> {
    let id = Uuid::parse_str(&user.subject).map_err(|_| NO_ACCOUNT)?;
    let store = state.store.clone();
    let revocation =
        to_completion(async move { store.revoke_tokens(id, None, now_millis()).await })
            .await?
            .ok_or(NO_ACCOUNT)?;
    state.revocations.record(&revocation);
    tracing::info!(user_id = %id, "signed out everywhere");
    Ok(StatusCode::NO_CONTENT.into_response())
}
