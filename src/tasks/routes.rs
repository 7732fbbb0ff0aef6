//! The `/api/{user_id}/tasks` routes. Every one takes [`TaskOwner`], so it answers 401 or 403
//! before it reads anything else of the request.

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use utoipa::IntoResponses;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    Listed,
    domain::{
        CompleteTaskRequest, CreateTaskRequest, ListParams, ListQuery, NewTask, PatchTaskRequest,
        ReplaceTaskRequest, TagList, Task, TaskChange, TaskPage,
    },
    listing_cache::{Cached, ListingKey},
};
use crate::{
    app::AppState,
    auth::TaskOwner,
    error::{ApiError, Problem},
    extract::{IfMatch, JsonBody, OptionalJsonBody, Precondition, QueryList, QueryPairs, TaskId},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tasks, create_task))
        .routes(routes!(get_task, replace_task, patch_task, delete_task))
        .routes(routes!(complete_task))
        .routes(routes!(list_tags))
}

/// The failures every task route can answer with.
#[derive(IntoResponses)]
#[allow(dead_code)]
enum TaskRouteErrors {
    /// Missing, malformed, expired or badly signed token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The path's `user_id` is not the token's subject.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// The database is unreachable, or it rolled the write back for a concurrent one
    /// (nothing was written; the same request may succeed).
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// The failures of a route that reads a JSON body.
#[derive(IntoResponses)]
#[allow(dead_code)]
enum BodyErrors {
    /// Body over the size limit.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// Body not sent as `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    NotJson(Problem),
}

/// A task as the body, with its version as the `ETag`.
fn task_response(status: StatusCode, task: Task, location: Option<HeaderValue>) -> Response {
    let etag = HeaderValue::try_from(task.etag()).ok();
    let mut response = (status, JsonResponse(task)).into_response();
    let headers = response.headers_mut();
    if let Some(etag) = etag {
        headers.insert(header::ETAG, etag);
    }
    if let Some(location) = location {
        headers.insert(header::LOCATION, location);
    }
    response
}

/// The failure of a conditional write.
#[derive(IntoResponses)]
#[allow(dead_code)]
enum ConditionErrors {
    /// `If-Match` names a version that is no longer current.
    #[response(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(Problem),
}

/// Applies a parsed change and answers with the task as it now is.
async fn apply(
    state: &AppState,
    owner: &TaskOwner,
    id: Uuid,
    condition: Option<IfMatch>,
    change: TaskChange,
) -> Result<Response, ApiError> {
    let task = state
        .tasks
        .update(&owner.user_id, id, &change, condition.as_ref())
        .await?;
    Ok(task_response(StatusCode::OK, task, None))
}

/// Characters a path segment may carry as they are (RFC 3986 "unreserved").
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn location(owner: &TaskOwner, task: &Task) -> HeaderValue {
    let owner = percent_encoding::utf8_percent_encode(&owner.user_id, PATH_SEGMENT);
    HeaderValue::try_from(format!("/api/{owner}/tasks/{}", task.id))
        .unwrap_or_else(|_| HeaderValue::from_static("/"))
}

/// List tasks
///
/// One page of the user's tasks, filtered and sorted. Ties are broken by `id`, so walking
/// the pages visits every task exactly once. A page past the end is empty.
#[utoipa::path(
    get,
    path = "/api/{user_id}/tasks",
    tag = "tasks",
    params(("user_id" = String, Path, description = "The token's subject"), ListParams),
    security(("bearer" = []), ("oauth2_password" = [])),
    responses(
        (status = 200, description = "One page of tasks", body = TaskPage),
        (status = 400, description = "A query parameter is invalid or unknown", body = Problem, content_type = "application/problem+json"),
        TaskRouteErrors,
    )
)]
async fn list_tasks(
    State(state): State<AppState>,
    owner: TaskOwner,
    QueryList(params): QueryList,
) -> Result<Response, ApiError> {
    let query = ListQuery::parse(params, state.max_page_size)?;
    // The body this instance answered last for this listing, if it kept it: the database
    // says whether the owner's tasks are still at its revision (tasks/listing_cache.rs).
    // Only a listing filtered by nothing but `completed` has a revision to compare.
    let key = query
        .filters_only_completed()
        .then(|| ListingKey::new(&owner.user_id, &query));
    let cached = key.as_ref().and_then(|key| state.listings.get(key));
    let known = cached.as_ref().map(|cached| cached.revision);
    match (
        state.tasks.list(&owner.user_id, &query, known).await?,
        cached,
    ) {
        (Listed::Unchanged, Some(cached)) => {
            state.listings.answered_again();
            Ok(json_response(cached.body))
        }
        (Listed::Unchanged, None) => Err(ApiError::Internal(anyhow::anyhow!(
            "a listing was unchanged from no revision"
        ))),
        (Listed::Page { page, revision }, _) => {
            let body = Bytes::from(to_json(&page, 256 + TASK_JSON_BYTES * page.items.len())?);
            if let (Some(key), Some(revision)) = (key, revision) {
                let body = body.clone();
                state.listings.insert(key, Cached { revision, body });
            }
            Ok(json_response(body))
        }
    }
}

/// About the bytes of one task's JSON with a short title and description, for sizing a page's
/// body at once instead of doubling it from 128 bytes: eight reallocations and copies for a
/// page of 50 (bench/README.md, "Row decoding").
const TASK_JSON_BYTES: usize = 512;

/// A JSON body written by sonic-rs rather than axum's `Json` (serde_json): the same
/// `Serialize` impls and JSON, with strings escaped 16 bytes at a time. 6.6 % fewer
/// instructions per PostgreSQL listing under callgrind (bench/README.md, "JSON").
struct JsonResponse<T>(T);

impl<T: serde::Serialize> IntoResponse for JsonResponse<T> {
    fn into_response(self) -> Response {
        match to_json(&self.0, TASK_JSON_BYTES) {
            Ok(bytes) => json_response(bytes),
            Err(error) => error.into_response(),
        }
    }
}

/// `value` as JSON, in a buffer of `capacity` bytes at first. A failure is an internal error,
/// logged once and answered with a 500 problem, as every other.
fn to_json<T: serde::Serialize>(value: &T, capacity: usize) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::with_capacity(capacity);
    sonic_rs::to_writer(&mut bytes, value).map_err(|error| ApiError::Internal(error.into()))?;
    Ok(bytes)
}

fn json_response(body: impl Into<Body>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.into(),
    )
        .into_response()
}

/// Create a task
#[utoipa::path(
    post,
    path = "/api/{user_id}/tasks",
    tag = "tasks",
    params(("user_id" = String, Path, description = "The token's subject")),
    request_body(content = CreateTaskRequest, content_type = "application/json"),
    security(("bearer" = []), ("oauth2_password" = [])),
    responses(
        (status = 201, description = "Created", body = Task,
            headers(
                ("Location" = String, description = "The new task's URL"),
                ("ETag" = String, description = "The task's version, for If-Match"),
            )),
        (status = 400, description = "A field is missing, invalid or unknown", body = Problem, content_type = "application/problem+json"),
        TaskRouteErrors,
        BodyErrors,
    )
)]
async fn create_task(
    State(state): State<AppState>,
    owner: TaskOwner,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let new = NewTask::from_json(body)?;
    let task = state.tasks.create(&owner.user_id, new).await?;
    let location = location(&owner, &task);
    Ok(task_response(StatusCode::CREATED, task, Some(location)))
}

/// Read a task
#[utoipa::path(
    get,
    path = "/api/{user_id}/tasks/{id}",
    tag = "tasks",
    params(
        ("user_id" = String, Path, description = "The token's subject"),
        ("id" = uuid::Uuid, Path, description = "The task's id"),
    ),
    security(("bearer" = []), ("oauth2_password" = [])),
    responses(
        (status = 200, description = "The task", body = Task,
            headers(("ETag" = String, description = "The task's version, for If-Match"))),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this user", body = Problem, content_type = "application/problem+json"),
        TaskRouteErrors,
    )
)]
async fn get_task(
    State(state): State<AppState>,
    owner: TaskOwner,
    TaskId(id): TaskId,
) -> Result<Response, ApiError> {
    let task = state.tasks.get(&owner.user_id, id).await?;
    Ok(task_response(StatusCode::OK, task, None))
}

/// Replace a task
///
/// Every field is required; `description` may be `null`.
#[utoipa::path(
    put,
    path = "/api/{user_id}/tasks/{id}",
    tag = "tasks",
    params(
        ("user_id" = String, Path, description = "The token's subject"),
        ("id" = uuid::Uuid, Path, description = "The task's id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^\s*(\*|(W/)?"[^"]*"(\s*,\s*(W/)?"[^"]*")*)\s*$"#,
            description = "Only if the task is still at this ETag (or `*`)"),
    ),
    request_body(content = ReplaceTaskRequest, content_type = "application/json"),
    security(("bearer" = []), ("oauth2_password" = [])),
    responses(
        (status = 200, description = "The replaced task", body = Task,
            headers(("ETag" = String, description = "The task's version, for If-Match"))),
        (status = 400, description = "The id or a field is invalid, or If-Match is empty or malformed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this user", body = Problem, content_type = "application/problem+json"),
        TaskRouteErrors,
        ConditionErrors,
        BodyErrors,
    )
)]
async fn replace_task(
    State(state): State<AppState>,
    owner: TaskOwner,
    TaskId(id): TaskId,
    Precondition(condition): Precondition,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    apply(
        &state,
        &owner,
        id,
        condition,
        TaskChange::replace_from_json(body)?,
    )
    .await
}

/// Update some fields of a task
///
/// Any of `title`, `description` (`null` clears it) and `completed`; at least one.
#[utoipa::path(
    patch,
    path = "/api/{user_id}/tasks/{id}",
    tag = "tasks",
    params(
        ("user_id" = String, Path, description = "The token's subject"),
        ("id" = uuid::Uuid, Path, description = "The task's id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^\s*(\*|(W/)?"[^"]*"(\s*,\s*(W/)?"[^"]*")*)\s*$"#,
            description = "Only if the task is still at this ETag (or `*`)"),
    ),
    request_body(content = PatchTaskRequest, content_type = "application/json"),
    security(("bearer" = []), ("oauth2_password" = [])),
    responses(
        (status = 200, description = "The updated task", body = Task,
            headers(("ETag" = String, description = "The task's version, for If-Match"))),
        (status = 400, description = "The id or a field is invalid, the body is empty, or If-Match is empty or malformed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this user", body = Problem, content_type = "application/problem+json"),
        TaskRouteErrors,
        ConditionErrors,
        BodyErrors,
    )
)]
async fn patch_task(
    State(state): State<AppState>,
    owner: TaskOwner,
    TaskId(id): TaskId,
    Precondition(condition): Precondition,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    apply(
        &state,
        &owner,
        id,
        condition,
        TaskChange::patch_from_json(body)?,
    )
    .await
}

/// Complete or reopen a task
///
/// `{"completed": true|false}` sets the flag; an empty body (or `{}`) toggles it.
#[utoipa::path(
    patch,
    path = "/api/{user_id}/tasks/{id}/complete",
    tag = "tasks",
    params(
        ("user_id" = String, Path, description = "The token's subject"),
        ("id" = uuid::Uuid, Path, description = "The task's id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^\s*(\*|(W/)?"[^"]*"(\s*,\s*(W/)?"[^"]*")*)\s*$"#,
            description = "Only if the task is still at this ETag (or `*`)"),
    ),
    request_body(content = Option<CompleteTaskRequest>, content_type = "application/json"),
    security(("bearer" = []), ("oauth2_password" = [])),
    responses(
        (status = 200, description = "The updated task", body = Task,
            headers(("ETag" = String, description = "The task's version, for If-Match"))),
        (status = 400, description = "The id or the body is invalid, or If-Match is empty or malformed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this user", body = Problem, content_type = "application/problem+json"),
        TaskRouteErrors,
        ConditionErrors,
        BodyErrors,
    )
)]
async fn complete_task(
    State(state): State<AppState>,
    owner: TaskOwner,
    TaskId(id): TaskId,
    Precondition(condition): Precondition,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Response, ApiError> {
    apply(
        &state,
        &owner,
        id,
        condition,
        TaskChange::completion_from_json(body)?,
    )
    .await
}

/// Delete a task
///
/// Removes it for good and returns it as it was.
#[utoipa::path(
    delete,
    path = "/api/{user_id}/tasks/{id}",
    tag = "tasks",
    params(
        ("user_id" = String, Path, description = "The token's subject"),
        ("id" = uuid::Uuid, Path, description = "The task's id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^\s*(\*|(W/)?"[^"]*"(\s*,\s*(W/)?"[^"]*")*)\s*$"#,
            description = "Only if the task is still at this ETag (or `*`)"),
    ),
    security(("bearer" = []), ("oauth2_password" = [])),
    responses(
        (status = 200, description = "The deleted task", body = Task),
        (status = 400, description = "The id is not a UUID, or If-Match is empty or malformed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this user", body = Problem, content_type = "application/problem+json"),
        TaskRouteErrors,
        ConditionErrors,
    )
)]
async fn delete_task(
    State(state): State<AppState>,
    owner: TaskOwner,
    TaskId(id): TaskId,
    Precondition(condition): Precondition,
) -> Result<Json<Task>, ApiError> {
    state
        .tasks
        .delete(&owner.user_id, id, condition.as_ref())
        .await
        .map(Json)
}

/// List the user's tags
///
/// Every tag the user's tasks carry, with how many open and all tasks carry it, most used
/// first, then by folded key. Tags that differ only in case are one tag.
#[utoipa::path(
    get,
    path = "/api/{user_id}/tags",
    tag = "tasks",
    params(("user_id" = String, Path, description = "The token's subject")),
    security(("bearer" = []), ("oauth2_password" = [])),
    responses(
        (status = 200, description = "The user's tags", body = TagList),
        (status = 400, description = "A query parameter was given (there are none)", body = Problem, content_type = "application/problem+json"),
        TaskRouteErrors,
    )
)]
async fn list_tags(
    State(state): State<AppState>,
    owner: TaskOwner,
    QueryPairs(params): QueryPairs,
) -> Result<JsonResponse<TagList>, ApiError> {
    if let Some(name) = params.keys().min() {
        return Err(ApiError::field(name, "is not a known query parameter"));
    }
    let items = state.tasks.tags(&owner.user_id).await?;
    Ok(JsonResponse(TagList { items }))
}
