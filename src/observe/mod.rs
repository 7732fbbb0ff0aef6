//! What operators see of a running service: the request id each request is logged under,
//! counters in the Prometheus text format at `GET /metrics`, and refusals (429, 503)
//! summarised in the log instead of one line each.

pub mod metrics;
pub mod refusals;

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use std::sync::Arc;

use subtle::ConstantTimeEq;

pub use metrics::Metrics;
pub use refusals::RefusalLog;

use crate::{app::AppState, config::Secret, error::ApiError};

/// The longest client-supplied `X-Request-Id` that is kept (a UUID is 36).
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// Everything the request log and `/metrics` share.
pub struct Observer {
    pub metrics: Metrics,
    pub refusals: Arc<RefusalLog>,
    metrics_token: Option<Secret>,
}

impl Observer {
    pub fn new(metrics: Metrics, metrics_token: Option<Secret>) -> Self {
        Self {
            metrics,
            refusals: Arc::default(),
            metrics_token,
        }
    }

    /// Whether `headers` carry `Authorization: Bearer <METRICS_TOKEN>`, compared in constant
    /// time (only the token's length can be learnt from timing). Always `false` without a
    /// configured token.
    fn authorizes(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.metrics_token else {
            return false;
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .unwrap_or_default();
        bool::from(presented.as_bytes().ct_eq(expected.expose().as_bytes()))
    }
}

/// `GET /metrics`: the counters in the Prometheus text format (version 0.0.4). Without
/// `METRICS_TOKEN`, or without it as the bearer token, this is the same 404 problem as any
/// unknown path (whatever the method), so a public port shows nothing.
pub async fn scrape(State(state): State<AppState>, method: Method, headers: HeaderMap) -> Response {
    let observer = &state.observer;
    if !observer.authorizes(&headers) {
        return ApiError::NotFound("no such route").into_response();
    }
    if method != Method::GET {
        return ApiError::MethodNotAllowed.into_response();
    }
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        observer.metrics.encode(),
    )
        .into_response()
}

/// Whether a client's request id is kept: 1 to [`MAX_REQUEST_ID_BYTES`] RFC 9110 token
/// characters (letters, digits and ``!#$%&'*+-.^_`|~``), so it cannot bloat or forge log lines
/// and response headers.
pub fn is_fit_request_id(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_BYTES).contains(&value.len())
        && value
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(byte))
}

/// Middleware, outside the one that makes request ids: removes a client's `X-Request-Id`
/// that is not [fit](is_fit_request_id), so a fresh one is made in its place.
pub async fn drop_unfit_request_id(
    State(name): State<HeaderName>,
    mut request: Request<Body>,
    next: Next,
) -> Response {
    let unfit = request
        .headers()
        .get_all(&name)
        .iter()
        .enumerate()
        .any(|(index, value)| index > 0 || !is_fit_request_id(value.as_bytes()));
    if unfit {
        request.headers_mut().remove(&name);
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_of_sane_length_and_characters_are_kept() {
        for kept in [
            "0193c7a4-5f7e-7a39-b8b5-1c2d3e4f5a6b",
            "abc",
            "a.b_c-d~e",
            &"x".repeat(MAX_REQUEST_ID_BYTES),
        ] {
            assert!(is_fit_request_id(kept.as_bytes()), "{kept}");
        }
        for replaced in [
            "",
            "has space",
            "quote\"",
            "new\nline",
            "caf\u{e9}",
            "a/b",
            &"x".repeat(MAX_REQUEST_ID_BYTES + 1),
        ] {
            assert!(!is_fit_request_id(replaced.as_bytes()), "{replaced:?}");
        }
    }
}
