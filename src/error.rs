//! [`ApiError`]: every failure the contract lists, mapped to an RFC 9457 problem document in
//! exactly one place.

use axum::{
    body::Body,
    http::{HeaderValue, Request, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::storage::StoreError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Why a request was refused (a 429 or 503), carried in the response's extensions so that
/// the request log can count refusals by kind without a log line of its own here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RefusalReason(pub &'static str);

/// One failing field of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field, query parameter or path segment, e.g. `title`, `page_size`, `id`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem document, the body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "about:blank", "title": "Bad Request", "status": 400,
    "detail": "request body is invalid",
    "errors": [{"field": "title", "message": "must not be empty"}]
}))]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Present on validation failures: every failing field, not only the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// Every way a request can fail. The status of each variant is in [`ApiError::status`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no token, or one that does not verify. Says nothing about the resource.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 401 from login: unknown user and wrong password look the same.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// 403: a valid token for another user's path.
    #[error("this path belongs to another user")]
    Forbidden,
    /// 400 with the failing fields.
    #[error("{detail}")]
    Validation {
        detail: &'static str,
        errors: Vec<FieldError>,
    },
    /// 404.
    #[error("{0}")]
    NotFound(&'static str),
    /// 405 for a known path with another method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409.
    #[error("{0}")]
    Conflict(&'static str),
    /// 429: too many sign-up or login attempts; try again after the given seconds.
    #[error("too many attempts; try again in {retry_after_seconds} s")]
    TooManyRequests { retry_after_seconds: u64 },
    /// 503: too many passwords are being hashed already.
    #[error("too many sign-ins at once; try again shortly")]
    Overloaded,
    /// 412: `If-Match` names a version that is no longer current.
    #[error("the task has changed since the version in If-Match")]
    PreconditionFailed,
    /// 413.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 431.
    #[error("request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(&'static str),
    /// 503: the database does not answer; the process keeps running.
    #[error("the database is unavailable, try again shortly")]
    Unavailable,
    /// 503: a token needs Better Auth's keys, and none could ever be fetched.
    #[error("the token issuer's keys are not available yet, try again shortly")]
    KeysUnavailable,
    /// 500. The cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn validation(detail: &'static str, errors: Vec<FieldError>) -> Self {
        Self::Validation { detail, errors }
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::validation("request is invalid", vec![FieldError::new(field, message)])
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }

    /// Why the service refused the request, for the 429s and 503s; `None` for other errors.
    pub fn refusal_reason(&self) -> Option<RefusalReason> {
        let reason = match self {
            Self::TooManyRequests { .. } => "rate limit",
            Self::Overloaded => "password hashing at capacity",
            Self::Unavailable => "database unavailable",
            Self::KeysUnavailable => "token keys unavailable",
            _ => return None,
        };
        Some(RefusalReason(reason))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Validation { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable | Self::KeysUnavailable | Self::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => Self::Unavailable,
            StoreError::Conflict => Self::Conflict("username or email is already taken"),
            StoreError::Refused(refusal) => Self::validation(
                "request body is invalid",
                vec![FieldError::new(refusal.field, refusal.message)],
            ),
            StoreError::Other(error) => Self::Internal(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Refusals (503, 429) are not logged here: the request log counts them by reason
        // and summarises them, so a flood does not write a line per request.
        if let Self::Internal(cause) = &self {
            tracing::error!(error = ?cause, "request failed");
        }
        let errors = match &self {
            Self::Validation { errors, .. } => Some(errors.clone()),
            _ => None,
        };
        let mut response = problem_response(status, self.to_string(), errors);
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        let retry_after = match &self {
            Self::TooManyRequests {
                retry_after_seconds,
            } => Some(*retry_after_seconds),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(reason) = self.refusal_reason() {
            response.extensions_mut().insert(reason);
        }
        response
    }
}

fn problem_response(
    status: StatusCode,
    detail: String,
    errors: Option<Vec<FieldError>>,
) -> Response {
    let problem = Problem {
        kind: "about:blank".into(),
        title: status.canonical_reason().unwrap_or("Error").into(),
        status: status.as_u16(),
        detail,
        errors,
    };
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
        body,
    )
        .into_response()
}

/// Middleware that turns every error response not already a problem document (axum's own
/// 404, 405 and rejections, a timeout) into one, keeping its status and headers (`Allow`).
pub async fn problem_for_bare_errors(request: Request<Body>, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let detail = match status {
        StatusCode::NOT_FOUND => "no such route".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let (mut parts, _) = response.into_parts();
    let problem = problem_response(status, detail, None);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    // The only bare 503 is the request timeout's: like every other 503 it says when to
    // come back.
    if status == StatusCode::SERVICE_UNAVAILABLE {
        parts
            .headers
            .entry(header::RETRY_AFTER)
            .or_insert(HeaderValue::from(1));
        parts
            .extensions
            .get_or_insert_with(|| RefusalReason("request timeout"));
    }
    Response::from_parts(parts, problem.into_body())
}
