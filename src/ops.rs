//! `GET /health` (liveness: no database access) and `GET /ready` (the database answers).

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    app::AppState,
    error::{ApiError, Problem},
    events::Lag,
};

#[derive(Serialize, ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    pub status: &'static str,
    /// `/ready` only: the task-event relay's lag. It never makes the service unready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Lag>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
}

/// Liveness
///
/// 200 whenever the process serves HTTP; never touches the database.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process is alive", body = Status)))]
async fn health() -> Json<Status> {
    Json(Status {
        status: "ok",
        events: None,
    })
}

/// Readiness
///
/// 200 when the database answers, 503 otherwise. `events` reports the task-event relay's
/// lag (undelivered events, the oldest one's age), which does not affect readiness.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "The database answers", body = Status),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn ready(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    state
        .store
        .ping()
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok(Json(Status {
        status: "ready",
        events: Some(state.events.lag()),
    }))
}
