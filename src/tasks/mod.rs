//! Tasks: the domain types, the `/api/{user_id}/tasks` routes, and [`TaskService`], through
//! which every task change passes (and is announced as a [`events::TaskEvent`]).

pub mod domain;
pub mod events;
mod routes;
mod service;

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

pub use service::TaskService;

pub fn router() -> OpenApiRouter<AppState> {
    routes::router()
}
