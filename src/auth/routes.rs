//! `POST /api/auth/signup` and `POST /api/auth/login`; the account's own routes are in
//! [`super::account`].

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    domain::{AuthResponse, Login, LoginId, Signup, User},
    rate_limit::Account,
};
use crate::{
    app::AppState,
    client_addr::ClientAddr,
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
    ClientAddr(client): ClientAddr,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let signup = Signup::from_json(body)?;
    // Refused while hashing is saturated before the limits, which may be a database query.
    state.passwords.ensure_capacity()?;
    state.rate_limits.check_client(client).await?;
    state
        .rate_limits
        .check_sign_up(client, signup.email.key())
        .await?;
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
        (status = 400, description = "A field is missing or invalid (an identifier longer than any account's included)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong username, email or password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this client or for this account", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is neither JSON nor a form", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable (the rate limits included), or too many passwords being hashed", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    body: JsonOrForm,
) -> Result<Response, ApiError> {
    // Validated first: an identifier longer than any account's is a 400 before it reaches
    // the limits or the database.
    let login = Login::from_body(body.object, body.is_form)?;
    state.passwords.ensure_capacity()?;
    state.rate_limits.check_client(client).await?;
    let credentials = state.store.find_credentials(&login.id).await?;
    // Counted against the account, whichever identifier names it, before bcrypt runs.
    let account = match &credentials {
        Some(credentials) => Account::Id(credentials.user.id),
        None => Account::Unknown(&login.id),
    };
    let attempt = state.rate_limits.begin_login(client, account).await?;
    let verified = async {
        match credentials {
            Some(credentials)
                if state
                    .passwords
                    .verify(&login.password, &credentials.password_hash)
                    .await? =>
            {
                Ok((credentials.user, credentials.token_generation))
            }
            Some(_) => Err(ApiError::InvalidCredentials),
            None => {
                state.passwords.verify_nothing(&login.password).await?;
                Err(ApiError::InvalidCredentials)
            }
        }
    }
    .await;
    // Only a wrong password (or unknown account) counts; a success or a password that could
    // not be checked (hashing saturated) gives the attempt back.
    match &verified {
        Ok(_) => attempt.succeeded().await,
        Err(ApiError::InvalidCredentials) => drop(attempt),
        Err(_) => attempt.give_back().await,
    }
    let (user, generation) = verified?;
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
