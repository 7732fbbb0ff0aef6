//! `GET /api/{user_id}/events`: a user's own task events, oldest first, as JSON pages or, with
//! `Accept: text/event-stream`, as a live Server-Sent Events stream (WHATWG HTML §9.2).
//!
//! Every read filters on the owner in SQL, as the task routes do. A live stream follows the
//! event log's head: at once for changes made through this instance, and within
//! `EVENTS_POLL_MILLISECONDS` for changes made through another one (one cheap read of the
//! head row per instance, not per stream; it works through PgBouncer, where `LISTEN` would
//! need a session of its own). Streams end when the service stops, so they never hold up
//! graceful shutdown, and count against `EVENTS_STREAMS_PER_USER`.

use std::{collections::HashMap, collections::VecDeque, convert::Infallible, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    Events, StreamSlot,
    record::{StoredEvent, format_sequence, parse_sequence},
};
use crate::{
    app::AppState,
    auth::TaskOwner,
    error::{ApiError, FieldError, Problem},
    extract::QueryPairs,
    tasks::domain::Task,
};

const LIMIT_DEFAULT: u32 = 50;
const LIMIT_MAX: u32 = 100;
/// A comment line this often keeps proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// A client over its stream cap may try again after this.
const STREAM_RETRY_SECONDS: u64 = 5;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events_feed))
}

/// A page of events.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    /// CloudEvents 1.0 in structured JSON form, oldest first.
    #[schema(value_type = Vec<TaskCloudEvent>)]
    pub items: Vec<Value>,
    /// The `after` of the next page: the last item's sequence, or this page's `after` when
    /// it is empty.
    #[schema(example = "00000000000000000042")]
    pub next: String,
}

/// A task event as a CloudEvent (CloudEvents 1.0, JSON format). For the OpenAPI document.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TaskCloudEvent {
    #[schema(example = "1.0")]
    specversion: String,
    /// Unique per event; a redelivery carries the same one.
    #[schema(format = Uuid)]
    id: String,
    /// `todo.task.created`, `todo.task.updated`, `todo.task.completed` (completed went from
    /// false to true) or `todo.task.deleted`.
    #[schema(example = "todo.task.created")]
    r#type: String,
    /// `EVENTS_SOURCE`.
    #[schema(example = "todo-api")]
    source: String,
    /// The task id.
    subject: String,
    /// Commit time, RFC 3339 UTC.
    #[schema(example = "2026-01-18T09:30:00.123Z")]
    time: String,
    #[schema(example = "application/json")]
    datacontenttype: String,
    /// The task as the API returned it after the change (as it was, for a delete).
    data: Task,
    /// The owner.
    userid: String,
    /// Position in the service's event log: 20 digits, sorts in order.
    #[schema(example = "00000000000000000042")]
    sequence: String,
}

/// The query parameters of the feed.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct FeedParams {
    /// Only events after this sequence (`next` of the previous page). Default: from the
    /// oldest kept; for a stream, from now. A stream's `Last-Event-ID` header wins.
    #[param(example = "00000000000000000042")]
    after: Option<String>,
    /// Events per page, 1–100 (JSON only).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

struct FeedQuery {
    after: Option<i64>,
    limit: u32,
}

impl FeedQuery {
    fn parse(mut params: HashMap<String, String>) -> Result<Self, ApiError> {
        let mut errors = Vec::new();
        let mut query = Self {
            after: None,
            limit: LIMIT_DEFAULT,
        };
        if let Some(value) = params.remove("after") {
            match parse_sequence(&value) {
                Ok(after) => query.after = Some(after),
                Err(message) => errors.push(FieldError::new("after", message)),
            }
        }
        if let Some(value) = params.remove("limit") {
            match value.parse::<u32>().ok().filter(|n| {
                (1..=LIMIT_MAX).contains(n) && value.bytes().all(|b| b.is_ascii_digit())
            }) {
                Some(limit) => query.limit = limit,
                None => errors.push(FieldError::new(
                    "limit",
                    format!("must be a whole number from 1 to {LIMIT_MAX}"),
                )),
            }
        }
        let mut unknown: Vec<String> = params.into_keys().collect();
        unknown.sort();
        for name in unknown {
            errors.push(FieldError::new(name, "is not a known query parameter"));
        }
        if errors.is_empty() {
            Ok(query)
        } else {
            Err(ApiError::validation("query parameters are invalid", errors))
        }
    }
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// Task events
///
/// The user's own task events (CloudEvents 1.0), oldest first. As JSON: one page, and the
/// `next` to pass as `after`. With `Accept: text/event-stream`: a live Server-Sent Events
/// stream, one event per task change (`id:` the sequence, `event:` the type, `data:` the
/// CloudEvent), resuming after `Last-Event-ID`, with a comment line every 15 s; a change made
/// through any instance arrives within about a second. At most `EVENTS_STREAMS_PER_USER`
/// streams per user (429 beyond). Delivered events are kept `EVENTS_RETENTION_HOURS`.
#[utoipa::path(
    get,
    path = "/api/{user_id}/events",
    tag = "events",
    params(
        ("user_id" = String, Path, description = "The token's subject"),
        ("Last-Event-ID" = Option<String>, Header, description = "Streams only: resume after this sequence"),
        FeedParams,
    ),
    security(("bearer" = []), ("oauth2_password" = [])),
    responses(
        (status = 200, description = "A page of events, or (Accept: text/event-stream) a live stream",
            content(
                (EventPage = "application/json"),
                (String = "text/event-stream"),
            )),
        (status = 400, description = "A query parameter or Last-Event-ID is invalid or unknown", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, malformed, expired or badly signed token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The path's user_id is not the token's subject", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many open streams for this user", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn events_feed(
    State(state): State<AppState>,
    owner: TaskOwner,
    QueryPairs(params): QueryPairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = FeedQuery::parse(params)?;
    let store = state.events.store().clone();
    if !wants_stream(&headers) {
        let after = query.after.unwrap_or(0);
        let events = store
            .user_events(&owner.user_id, after, query.limit)
            .await?;
        let next = format_sequence(events.last().map_or(after, |event| event.sequence));
        let items = events
            .iter()
            .map(StoredEvent::to_json)
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(ApiError::internal)?;
        return Ok(Json(EventPage { items, next }).into_response());
    }
    let resume = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| "must be a sequence".to_owned())
                .and_then(parse_sequence)
                .map_err(|message| ApiError::field("Last-Event-ID", message))?,
        ),
        None => None,
    };
    let slot = state
        .events
        .open_stream(&owner.user_id)
        .ok_or(ApiError::TooManyRequests {
            retry_after_seconds: STREAM_RETRY_SECONDS,
        })?;
    let cursor = match resume.or(query.after) {
        Some(after) => after,
        None => store.last_sequence().await?,
    };
    let stream = FeedStream {
        head: state.events.inner.head.subscribe(),
        stopping: state.events.stopping(),
        events: state.events.clone(),
        owner: owner.user_id,
        cursor,
        buffer: VecDeque::new(),
        _slot: slot,
    };
    let mut response = Sse::new(futures_util::stream::unfold(stream, FeedStream::next))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    // Tells nginx-style proxies not to buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// One live feed: the user's events after `cursor`, as they are committed.
struct FeedStream {
    events: Events,
    owner: String,
    cursor: i64,
    buffer: VecDeque<StoredEvent>,
    head: watch::Receiver<i64>,
    stopping: watch::Receiver<bool>,
    _slot: StreamSlot,
}

impl FeedStream {
    /// The next SSE event, waiting for one to be committed; `None` (the end) on shutdown.
    async fn next(mut self) -> Option<(Result<SseEvent, Infallible>, Self)> {
        loop {
            if *self.stopping.borrow() {
                return None;
            }
            if let Some(event) = self.buffer.pop_front() {
                self.cursor = event.sequence;
                match event.to_json() {
                    Ok(json) => {
                        let sse = SseEvent::default()
                            .id(event.sequence_text())
                            .event(event.event_type.as_str())
                            .data(json.to_string());
                        return Some((Ok(sse), self));
                    }
                    Err(error) => {
                        tracing::error!(%error, sequence = event.sequence, "a stored event is unreadable");
                        continue;
                    }
                }
            }
            // Marks the head seen before reading, so a commit after the read wakes us.
            self.head.borrow_and_update();
            let poll = self.events.settings().poll_interval;
            match self
                .events
                .store()
                .user_events(&self.owner, self.cursor, LIMIT_MAX)
                .await
            {
                Ok(batch) if !batch.is_empty() => {
                    self.buffer.extend(batch);
                    continue;
                }
                Ok(_) => {
                    tokio::select! {
                        changed = self.head.changed() => {
                            if changed.is_err() {
                                return None;
                            }
                        }
                        _ = self.stopping.wait_for(|stop| *stop) => return None,
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "a live feed could not read events; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(poll) => {}
                        _ = self.stopping.wait_for(|stop| *stop) => return None,
                    }
                }
            }
        }
    }
}
