//! `POST /api/auth/signup` and `POST /api/auth/login`; the account's own routes are in
//! [`super::account`].

use std::net::SocketAddr;

use axum::{
    Json,
    extract::{ConnectInfo, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::domain::{AuthResponse, Login, LoginId, Signup, User};
use crate::{
    app::AppState,
    error::{ApiError, Problem},
    extract::{JsonBody, JsonOrForm},
    storage::Taken,
    tasks::domain::now_millis,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(login))
}

/// Responses carrying a token must not be stored by any cache.
pub(super) fn token_response(status: StatusCode, body: AuthResponse) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(body),
    )
        .into_response()
}

/// The token response for `user`, whose tokens are at `generation`.
pub(super) fn issue(
    state: &AppState,
    user: User,
    generation: i64,
) -> Result<AuthResponse, ApiError> {
    let token = state.tokens.issue(&user.id.to_string(), generation)?;
    Ok(AuthResponse {
        user,
        access_token: token.token,
        token_type: "bearer",
        expires_in: token.expires_in,
    })
}

/// Create an account
///
/// Creates a local account and returns it with an access token.
#[utoipa::path(
    post,
    path = "/api/auth/signup",
    tag = "auth",
    request_body(content = super::domain::SignupRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Account created", body = AuthResponse),
        (status = 400, description = "A field is missing or invalid, or the passwords differ", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Username or email already taken", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this client or for this account", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or too many passwords being hashed", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn signup(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    state.rate_limits.check_client(client.ip())?;
    let signup = Signup::from_json(body)?;
    state.rate_limits.check_account(signup.email.as_str())?;
    state.passwords.ensure_capacity()?;
    // Checked before hashing so that a duplicate costs no bcrypt time; the unique indexes
    // still decide when two sign-ups race.
    match state.store.taken(&signup.username, &signup.email).await? {
        Taken { username: true, .. } => {
            return Err(ApiError::Conflict("username is already taken"));
        }
        Taken { email: true, .. } => return Err(ApiError::Conflict("email is already registered")),
        Taken { .. } => {}
    }
    let password_hash = state.passwords.hash(&signup.password).await?;
    let user = User {
        id: Uuid::now_v7(),
        username: signup.username.as_str().to_owned(),
        email: signup.email.as_str().to_owned(),
        created_at: now_millis(),
    };
    state.store.insert_user(&user, &password_hash).await?;
    tracing::info!(user_id = %user.id, "account created");
    Ok(token_response(StatusCode::CREATED, issue(&state, user, 0)?))
}

/// Log in
///
/// Takes a username or an email with the password, as JSON or as an OAuth2 password-grant
/// form (what Swagger UI's "Authorize" sends). Unknown users and wrong passwords get the
/// same 401.
#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "auth",
    request_body(content(
        (super::domain::LoginRequest = "application/json"),
        (super::domain::LoginForm = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Logged in", body = AuthResponse),
        (status = 400, description = "A field is missing or invalid", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong username, email or password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this client or for this account", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is neither JSON nor a form", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or too many passwords being hashed", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn login(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: JsonOrForm,
) -> Result<Response, ApiError> {
    state.rate_limits.check_client(client.ip())?;
    let login = Login::from_body(body.object, body.is_form)?;
    state.rate_limits.check_account(match &login.id {
        LoginId::Username(name) => name,
        LoginId::Email(email) => email,
    })?;
    state.passwords.ensure_capacity()?;
    let credentials = state.store.find_credentials(&login.id).await?;
    let (user, generation) = match credentials {
        Some(credentials)
            if state
                .passwords
                .verify(&login.password, &credentials.password_hash)
                .await? =>
        {
            (credentials.user, credentials.token_generation)
        }
        Some(_) => return Err(ApiError::InvalidCredentials),
        None => {
            state.passwords.verify_nothing(&login.password).await?;
            return Err(ApiError::InvalidCredentials);
        }
    };
    let via = match login.id {
        LoginId::Username(_) => "username",
        LoginId::Email(_) => "email",
    };
    tracing::info!(user_id = %user.id, via, "logged in");
    Ok(token_response(
        StatusCode::OK,
        issue(&state, user, generation)?,
    ))
}
