//! A multi-user Todo REST API: sign-up, login and strictly per-user tasks over HTTP,
//! stored in SQLite (the default) or PostgreSQL.

/// Application builder, router, middleware and graceful shutdown.
pub mod app;
/// The `/api/auth` routes, tokens, password hashing and the authentication extractors.
pub mod auth;
/// The client address behind trusted proxies (RFC 7239 `Forwarded`, `X-Forwarded-For`).
pub mod client_addr;
/// Typed settings read once from the environment.
pub mod config;
/// The one error type, rendered as an RFC 9457 problem document.
pub mod error;
/// Task events: the transactional outbox (CloudEvents), its relay and sinks, the live feed.
pub mod events;
/// Request extractors that turn malformed input into our problem documents.
pub mod extract;
/// Request ids, `/metrics` and the summarised log of refused requests.
pub mod observe;
/// The OpenAPI document and Swagger UI.
pub mod openapi;
/// Liveness and readiness probes.
pub mod ops;
/// The accept loop: header-read timeout, connection cap, graceful shutdown.
pub mod server;
/// The narrow storage interface and its SQLite and PostgreSQL implementations.
pub mod storage;
/// The `/api/{user_id}/tasks` routes, task domain types and `TaskService`.
pub mod tasks;
/// Logging set-up.
pub mod telemetry;
/// Unicode rules: the folded search and sort key, and characters that show nothing.
pub mod text;

pub use app::Application;
pub use config::Settings;
