//! `POST /api/auth/signup`, `POST /api/auth/login` and `GET /api/auth/me`.

use std::net::SocketAddr;

use axum::{
    Json,
    extract::{ConnectInfo, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    CurrentUser,
    domain::{AuthResponse, Login, LoginId, Signup, User},
};
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
        .routes(routes!(me))
}

/// Responses carrying a token must not be stored by any cache.
fn token_response(status: StatusCode, body: AuthResponse) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(body),
    )
        .into_response()
}

fn issue(state: &AppState, user: User) -> Result<AuthResponse, ApiError> {
    let token = state.tokens.issue(&user.id.to_string())?;
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
    state.rate_limits.check_account(signup.email.key())?;
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
    Ok(token_response(StatusCode::CREATED, issue(&state, user)?))
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
    let user = match credentials {
        Some(credentials)
            if state
                .passwords
                .verify(&login.password, &credentials.password_hash)
                .await? =>
        {
            credentials.user
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
    Ok(token_response(StatusCode::OK, issue(&state, user)?))
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
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No local account for this subject", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn me(State(state): State<AppState>, user: CurrentUser) -> Result<Json<User>, ApiError> {
    const NO_ACCOUNT: ApiError = ApiError::NotFound("no local account for this token's subject");
    let id = Uuid::parse_str(&user.subject).map_err(|_| NO_ACCOUNT)?;
    state.store.find_user(id).await?.map(Json).ok_or(NO_ACCOUNT)
}
