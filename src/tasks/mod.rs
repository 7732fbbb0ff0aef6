//! Tasks: the domain types, the `/api/{user_id}/tasks` routes, and [`TaskService`], through
//! which every task change passes (and which decides the event it makes, see
//! [`crate::events`]).

pub mod domain;
pub mod listing_cache;
pub mod planning;
pub mod reminders;
mod routes;
mod service;

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

pub use service::{Listed, TaskService};

pub fn router() -> OpenApiRouter<AppState> {
    routes::router()
}
