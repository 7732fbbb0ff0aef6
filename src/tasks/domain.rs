//! Task domain types. Each is parsed once at the boundary; past it, values are valid.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub use super::planning::{Priority, Recurrence, Tag, Tags};
use super::planning::{parse_timestamp, rfc3339_millis_opt, rfc3339_millis_text};
use crate::{
    error::{ApiError, FieldError},
    extract::{Field, JsonObject},
    text,
};

pub const TITLE_MAX_CHARS: usize = 255;
pub const DESCRIPTION_MAX_CHARS: usize = 10_000;
pub const SEARCH_MAX_CHARS: usize = 255;
pub const PAGE_SIZE_DEFAULT: u32 = 20;
/// Page numbers fit a signed 32-bit integer, what clients' JSON libraries read safely.
pub const PAGE_MAX: u32 = i32::MAX as u32;

/// A stored task, as every task route returns it.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Task {
    pub id: Uuid,
    /// The owner: the `sub` of the token that created it (not always a UUID).
    pub user_id: String,
    #[schema(min_length = 1, max_length = 255, example = "Buy milk")]
    pub title: String,
    #[schema(max_length = 10000, example = "2 litres", required = true)]
    pub description: Option<String>,
    pub completed: bool,
    #[serde(serialize_with = "rfc3339_millis")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-18T09:30:00.123Z")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_millis")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-18T09:30:00.123Z")]
    pub updated_at: DateTime<Utc>,
    #[schema(inline)]
    pub priority: Priority,
    /// 0–20 tags, unique ignoring case, in the order given.
    #[schema(value_type = Vec<String>, max_items = 20, example = json!(["Groceries", "weekly"]))]
    pub tags: Tags,
    /// When the task is due.
    #[serde(serialize_with = "rfc3339_millis_opt")]
    #[schema(value_type = Option<String>, format = DateTime, example = "2026-01-19T08:00:00.000Z", required = true)]
    pub due_at: Option<DateTime<Utc>>,
    /// When to send a `todo.task.reminder` event, if the task is still open then.
    #[serde(serialize_with = "rfc3339_millis_opt")]
    #[schema(value_type = Option<String>, format = DateTime, example = "2026-01-19T07:30:00.000Z", required = true)]
    pub remind_at: Option<DateTime<Utc>>,
    /// How the task repeats; completing it creates the next occurrence.
    #[schema(required = true)]
    pub recurrence: Option<Recurrence>,
    /// The next occurrence, created when this recurring task was completed.
    #[schema(required = true)]
    pub next_task_id: Option<Uuid>,
    /// Starts at 1 and grows with every change; sent as the `ETag` header, not in the body.
    #[serde(skip)]
    pub version: i64,
    /// Whether the reminder for the current `remind_at` has been sent.
    #[serde(skip)]
    pub reminder_sent: bool,
}

impl Task {
    /// The strong entity tag of this version of the task.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }

    /// The occurrence after this recurring task, created when it is completed at `now`; `None`
    /// when it does not recur, or its series has ended.
    pub fn next_occurrence(&self, now: DateTime<Utc>) -> Option<Task> {
        let recurrence = self.recurrence.as_ref()?;
        let due = self.due_at?;
        let next_due = recurrence.next_due(due)?;
        // The reminder keeps its distance from the due time.
        let remind_at = self
            .remind_at
            .and_then(|remind| next_due.checked_sub_signed(due.signed_duration_since(remind)));
        Some(Task {
            id: Uuid::now_v7(),
            user_id: self.user_id.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            completed: false,
            created_at: now,
            updated_at: now,
            priority: self.priority,
            tags: self.tags.clone(),
            due_at: Some(next_due),
            remind_at,
            recurrence: Some(recurrence.clone()),
            next_task_id: None,
            version: 1,
            reminder_sent: false,
        })
    }
}

/// A change refused by a rule that spans fields, found only against the stored task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub field: &'static str,
    pub message: &'static str,
}

const RECURRENCE_NEEDS_DUE: Refusal = Refusal {
    field: "recurrence",
    message: "needs a due_at",
};

/// Timestamps leave the service as RFC 3339 in UTC with millisecond precision and a `Z`.
pub fn rfc3339_millis<S: Serializer>(
    time: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&rfc3339_millis_text(time))
}

/// The current time at the precision we store (milliseconds), so that what a write returns
/// equals what a later read returns.
pub fn now_millis() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_default()
}

fn refuse_nul(text: &str) -> Result<(), String> {
    // PostgreSQL cannot store NUL in text; refusing it everywhere keeps both databases alike.
    if text.contains('\0') {
        Err("must not contain NUL characters".into())
    } else {
        Ok(())
    }
}

/// A title: 1–255 characters, without the leading and trailing characters that show nothing
/// (white space, zero-width and other invisible characters, see [`text::is_invisible`]); a
/// title of only such characters is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskTitle(String);

impl TaskTitle {
    pub fn parse(raw: String) -> Result<Self, String> {
        refuse_nul(&raw)?;
        let title = text::trim_invisible(&raw);
        match title.chars().count() {
            0 => Err("must not be empty".into()),
            n if n > TITLE_MAX_CHARS => {
                Err(format!("must be at most {TITLE_MAX_CHARS} characters"))
            }
            _ => Ok(Self(title.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A description: at most 10 000 characters, kept as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    pub fn parse(raw: String) -> Result<Self, String> {
        refuse_nul(&raw)?;
        if raw.chars().count() > DESCRIPTION_MAX_CHARS {
            return Err(format!(
                "must be at most {DESCRIPTION_MAX_CHARS} characters"
            ));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What `POST /tasks` creates.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub title: TaskTitle,
    pub description: Option<Description>,
    pub completed: bool,
    pub priority: Priority,
    pub tags: Tags,
    pub due_at: Option<DateTime<Utc>>,
    pub remind_at: Option<DateTime<Utc>>,
    pub recurrence: Option<Recurrence>,
}

/// How a change treats `completed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    Keep,
    Set(bool),
    Toggle,
}

/// A change to an existing task: `None` leaves a field as it is.
#[derive(Clone, Debug)]
pub struct TaskChange {
    pub title: Option<TaskTitle>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<Description>>,
    pub completed: Completion,
    pub priority: Option<Priority>,
    pub tags: Option<Tags>,
    /// `Some(None)` clears it, as for the other nullable fields.
    pub due_at: Option<Option<DateTime<Utc>>>,
    pub remind_at: Option<Option<DateTime<Utc>>>,
    pub recurrence: Option<Option<Recurrence>>,
}

impl TaskChange {
    /// The task as this change leaves `before`, at `now`: one version later, `updated_at`
    /// `now` or just after the previous value if the clock has not moved. A changed
    /// `remind_at` re-arms the reminder.
    pub fn apply(&self, before: &Task, now: DateTime<Utc>) -> Result<Task, Refusal> {
        let mut task = before.clone();
        if let Some(title) = &self.title {
            task.title = title.as_str().to_owned();
        }
        if let Some(description) = &self.description {
            task.description = description.as_ref().map(|d| d.as_str().to_owned());
        }
        task.completed = match self.completed {
            Completion::Keep => before.completed,
            Completion::Set(value) => value,
            Completion::Toggle => !before.completed,
        };
        if let Some(priority) = self.priority {
            task.priority = priority;
        }
        if let Some(tags) = &self.tags {
            task.tags = tags.clone();
        }
        if let Some(due_at) = self.due_at {
            task.due_at = due_at;
        }
        if let Some(remind_at) = self.remind_at {
            task.remind_at = remind_at;
        }
        if let Some(recurrence) = &self.recurrence {
            task.recurrence = recurrence.clone();
        }
        if task.recurrence.is_some() && task.due_at.is_none() {
            return Err(RECURRENCE_NEEDS_DUE);
        }
        if task.remind_at != before.remind_at {
            task.reminder_sent = false;
        }
        task.version = before.version + 1;
        task.updated_at = now.max(before.updated_at + TimeDelta::milliseconds(1));
        Ok(task)
    }
}

/// The planning fields of a body as read: `None` when absent; for the nullable ones,
/// `Some(None)` when `null`.
struct PlanningFields {
    priority: Option<Priority>,
    tags: Option<Tags>,
    due_at: Option<Option<DateTime<Utc>>>,
    remind_at: Option<Option<DateTime<Utc>>>,
    recurrence: Option<Option<Recurrence>>,
}

/// A nullable field's change: `None` when absent or invalid (`valid` is cleared then).
fn nullable_change<T>(field: Field<T>, valid: &mut bool) -> Option<Option<T>> {
    match field {
        Field::Absent => None,
        Field::Null => Some(None),
        Field::Present(value) => Some(Some(value)),
        Field::Invalid => {
            *valid = false;
            None
        }
    }
}

fn timestamp_field(value: serde_json::Value) -> Result<DateTime<Utc>, String> {
    match value {
        serde_json::Value::String(text) => parse_timestamp(&text),
        _ => Err("must be an RFC 3339 timestamp with an offset, or null".to_owned()),
    }
}

/// Reads `priority`, `tags`, `due_at`, `remind_at` and `recurrence`, recording every bad
/// one; `None` when one was bad.
fn read_planning(body: &mut JsonObject) -> Option<PlanningFields> {
    let mut valid = true;
    let priority = body.value("priority", |value| match value {
        serde_json::Value::String(text) => Priority::parse(&text),
        _ => Err("must be one of low, medium, high, urgent".to_owned()),
    });
    let priority = body.optional("priority", priority);
    let tags = body.value("tags", Tags::from_json);
    let tags = body.optional("tags", tags);
    let due_at = nullable_change(body.value("due_at", timestamp_field), &mut valid);
    let remind_at = nullable_change(body.value("remind_at", timestamp_field), &mut valid);
    let recurrence = nullable_change(body.nested("recurrence", Recurrence::from_json), &mut valid);
    let fields = PlanningFields {
        priority: priority?,
        tags: tags?,
        due_at,
        remind_at,
        recurrence,
    };
    valid.then_some(fields)
}

// These types only describe bodies for the OpenAPI document (the handlers read bodies with
// `JsonObject`, which reports every bad field at once). `Deserialize` is derived for its
// `deny_unknown_fields`, which the document shows as `additionalProperties: false`.

/// The body of `POST /tasks`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "Buy milk", "description": "2 litres"}))]
#[allow(dead_code)]
pub struct CreateTaskRequest {
    #[schema(min_length = 1, max_length = 255)]
    title: String,
    #[schema(max_length = 10000)]
    description: Option<String>,
    #[schema(default = false, nullable = false)]
    completed: Option<bool>,
    #[schema(inline, nullable = false, default = "medium")]
    priority: Option<Priority>,
    /// 0–20 tags, each 1–32 characters, unique ignoring case.
    #[schema(nullable = false, max_items = 20, default = json!([]))]
    tags: Option<Vec<String>>,
    /// RFC 3339 timestamp with an offset.
    #[schema(format = DateTime)]
    due_at: Option<String>,
    /// RFC 3339 timestamp with an offset.
    #[schema(format = DateTime)]
    remind_at: Option<String>,
    /// Needs a `due_at`.
    recurrence: Option<RecurrenceRequest>,
}

/// The `recurrence` object of a request body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RecurrenceRequest {
    #[schema(inline)]
    frequency: super::planning::Frequency,
    #[schema(minimum = 1, maximum = 365, default = 1, nullable = false)]
    interval: Option<u16>,
    /// An IANA time zone name.
    #[schema(default = "UTC", nullable = false, example = "Europe/Berlin")]
    timezone: Option<String>,
    /// RFC 3339 timestamp with an offset; no occurrence is due after it.
    #[schema(format = DateTime)]
    until: Option<String>,
}

/// The body of `PUT /tasks/{id}`: every field, `description` may be `null`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "Buy milk", "description": null, "completed": true}))]
#[allow(dead_code)]
pub struct ReplaceTaskRequest {
    #[schema(min_length = 1, max_length = 255)]
    title: String,
    #[schema(max_length = 10000, required = true)]
    description: Option<String>,
    completed: bool,
    /// Left out: `medium`.
    #[schema(inline, nullable = false, default = "medium")]
    priority: Option<Priority>,
    /// 0–20 tags, each 1–32 characters, unique ignoring case.
    #[schema(nullable = false, max_items = 20, default = json!([]))]
    tags: Option<Vec<String>>,
    /// RFC 3339 timestamp with an offset.
    #[schema(format = DateTime)]
    due_at: Option<String>,
    /// RFC 3339 timestamp with an offset.
    #[schema(format = DateTime)]
    remind_at: Option<String>,
    /// Needs a `due_at`.
    recurrence: Option<RecurrenceRequest>,
}

/// The body of `PATCH /tasks/{id}`: at least one field.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"completed": true}))]
#[allow(dead_code)]
pub struct PatchTaskRequest {
    #[schema(min_length = 1, max_length = 255, nullable = false)]
    title: Option<String>,
    /// `null` clears the description.
    #[schema(max_length = 10000)]
    description: Option<String>,
    #[schema(nullable = false)]
    completed: Option<bool>,
    #[schema(inline, nullable = false)]
    priority: Option<Priority>,
    /// Replaces the tags; `[]` removes them all.
    #[schema(nullable = false, max_items = 20)]
    tags: Option<Vec<String>>,
    /// `null` clears it.
    #[schema(format = DateTime)]
    due_at: Option<String>,
    /// `null` clears it.
    #[schema(format = DateTime)]
    remind_at: Option<String>,
    /// `null` clears it.
    recurrence: Option<RecurrenceRequest>,
}

/// The optional body of `PATCH /tasks/{id}/complete`; without it (or without `completed`)
/// the flag is toggled.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"completed": true}))]
#[allow(dead_code)]
pub struct CompleteTaskRequest {
    #[schema(nullable = false)]
    completed: Option<bool>,
}

impl NewTask {
    pub fn from_json(mut body: JsonObject) -> Result<Self, ApiError> {
        let title = body.string("title", TaskTitle::parse);
        let title = body.required("title", title);
        let description = body.string("description", Description::parse);
        let description = nullable(description);
        let completed = body.boolean("completed");
        let completed = body.optional("completed", completed);
        let planning = read_planning(&mut body);
        let planning = planning.map(|p| NewPlanning::defaulted(p, &mut body));
        body.finish((|| {
            let planning = planning??;
            Some(Self {
                title: title?,
                description: description?,
                completed: completed?.unwrap_or(false),
                priority: planning.priority,
                tags: planning.tags,
                due_at: planning.due_at,
                remind_at: planning.remind_at,
                recurrence: planning.recurrence,
            })
        })())
    }
}

/// The planning fields of a whole task (a create or a `PUT`): a field left out takes its
/// default.
struct NewPlanning {
    priority: Priority,
    tags: Tags,
    due_at: Option<DateTime<Utc>>,
    remind_at: Option<DateTime<Utc>>,
    recurrence: Option<Recurrence>,
}

impl NewPlanning {
    /// `None` (with the failure recorded) when a recurrence comes without a due time.
    fn defaulted(fields: PlanningFields, body: &mut JsonObject) -> Option<Self> {
        let planning = Self {
            priority: fields.priority.unwrap_or_default(),
            tags: fields.tags.unwrap_or_default(),
            due_at: fields.due_at.flatten(),
            remind_at: fields.remind_at.flatten(),
            recurrence: fields.recurrence.flatten(),
        };
        if planning.recurrence.is_some() && planning.due_at.is_none() {
            body.reject(RECURRENCE_NEEDS_DUE.field, RECURRENCE_NEEDS_DUE.message);
            return None;
        }
        Some(planning)
    }
}

/// Absent or null both mean "no description"; `None` when the field was invalid.
fn nullable(field: Field<Description>) -> Option<Option<Description>> {
    match field {
        Field::Absent | Field::Null => Some(None),
        Field::Present(value) => Some(Some(value)),
        Field::Invalid => None,
    }
}

impl TaskChange {
    /// `PUT`: a full replacement. `title`, `description` (which may be null) and `completed`
    /// must be given; a planning field left out takes its default.
    pub fn replace_from_json(mut body: JsonObject) -> Result<Self, ApiError> {
        let title = body.string("title", TaskTitle::parse);
        let title = body.required("title", title);
        let description = match body.string("description", Description::parse) {
            Field::Absent => {
                body.reject("description", "is required (it may be null)");
                None
            }
            other => nullable(other),
        };
        let completed = body.boolean("completed");
        let completed = body.required("completed", completed);
        let planning = read_planning(&mut body);
        let planning = planning.map(|p| NewPlanning::defaulted(p, &mut body));
        body.finish((|| {
            let planning = planning??;
            Some(Self {
                title: Some(title?),
                description: Some(description?),
                completed: Completion::Set(completed?),
                priority: Some(planning.priority),
                tags: Some(planning.tags),
                due_at: Some(planning.due_at),
                remind_at: Some(planning.remind_at),
                recurrence: Some(planning.recurrence),
            })
        })())
    }

    /// `PATCH`: any of the fields, at least one.
    pub fn patch_from_json(mut body: JsonObject) -> Result<Self, ApiError> {
        if body.is_empty() {
            return Err(ApiError::field(
                "body",
                "must contain at least one of title, description, completed, priority, tags, \
                 due_at, remind_at, recurrence",
            ));
        }
        let title = body.string("title", TaskTitle::parse);
        let title = body.optional("title", title);
        let description = match body.string("description", Description::parse) {
            Field::Absent => Some(None),
            other => nullable(other).map(Some),
        };
        let completed = body.boolean("completed");
        let completed = body.optional("completed", completed);
        let planning = read_planning(&mut body);
        body.finish((|| {
            let planning = planning?;
            Some(Self {
                title: title?,
                description: description?,
                completed: completed?.map_or(Completion::Keep, Completion::Set),
                priority: planning.priority,
                tags: planning.tags,
                due_at: planning.due_at,
                remind_at: planning.remind_at,
                recurrence: planning.recurrence,
            })
        })())
    }

    /// `PATCH /complete`: `{"completed": bool}` sets the flag; no body, or no field, toggles.
    pub fn completion_from_json(body: Option<JsonObject>) -> Result<Self, ApiError> {
        let completed = match body {
            None => Completion::Toggle,
            Some(mut body) => {
                let completed = body.boolean("completed");
                let completed = body.optional("completed", completed);
                body.finish(completed)?
                    .map_or(Completion::Toggle, Completion::Set)
            }
        };
        Ok(Self {
            title: None,
            description: None,
            completed,
            priority: None,
            tags: None,
            due_at: None,
            remind_at: None,
            recurrence: None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    CreatedAt,
    UpdatedAt,
    Title,
    Completed,
    /// Tasks without a due date last, in both orders.
    DueAt,
    /// By rank: `desc` lists `urgent` first.
    Priority,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    Asc,
    Desc,
}

/// A search text, trimmed like a title (1–255 characters), held folded with
/// [`text::fold`]: it is compared with the stored folded keys of titles and descriptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchText(String);

impl SearchText {
    /// The folded text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A `LIKE` pattern matching the folded text anywhere, with `\` as the escape character.
    pub fn like_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.0.len() + 2);
        pattern.push('%');
        for c in self.0.chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        pattern
    }
}

/// The listing's query parameters, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    pub page: u32,
    pub page_size: u32,
    pub sort_by: SortBy,
    pub sort_order: SortOrder,
    pub completed: Option<bool>,
    pub q: Option<SearchText>,
    /// Any of these; empty: every priority.
    pub priorities: Vec<Priority>,
    /// Every one of these.
    pub tags: Vec<Tag>,
    /// `due_at >= due_after`.
    pub due_after: Option<DateTime<Utc>>,
    /// `due_at < due_before`.
    pub due_before: Option<DateTime<Utc>>,
    pub overdue: Option<Overdue>,
}

impl ListQuery {
    /// Whether the listing filters by nothing but `completed`: its total is then read from
    /// the owner's kept totals, with the revision of the owner's tasks (storage, `push_total`),
    /// and its body may be kept (tasks/listing_cache.rs). Any other filter's total is counted.
    pub fn filters_only_completed(&self) -> bool {
        // Every field named, so that a new filter cannot be missed here.
        let Self {
            page: _,
            page_size: _,
            sort_by: _,
            sort_order: _,
            completed: _,
            q,
            priorities,
            tags,
            due_after,
            due_before,
            overdue,
        } = self;
        q.is_none()
            && priorities.is_empty()
            && tags.is_empty()
            && due_after.is_none()
            && due_before.is_none()
            && overdue.is_none()
    }
}

/// The `overdue` filter, with the time it was asked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overdue {
    /// `true`: only open tasks due before `as_of`; `false`: every other task.
    pub overdue: bool,
    pub as_of: DateTime<Utc>,
}

/// The listing's query parameters, for the OpenAPI document.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListParams {
    /// Page number, from 1.
    #[param(minimum = 1, maximum = 2147483647, default = 1)]
    page: Option<u32>,
    /// Tasks per page.
    #[param(minimum = 1, maximum = 100, default = 20)]
    page_size: Option<u32>,
    /// Sort column; ties are broken by `id`.
    #[param(inline, default = "created_at")]
    sort_by: Option<SortBy>,
    #[param(inline, default = "desc")]
    sort_order: Option<SortOrder>,
    /// Only completed (`true`) or open (`false`) tasks.
    completed: Option<bool>,
    /// Text matched case-insensitively in title and description.
    #[param(max_length = 255)]
    q: Option<String>,
    /// Tasks of any of these priorities; may be repeated.
    #[param(inline, explode = true, style = Form)]
    priority: Option<Vec<Priority>>,
    /// Tasks carrying every one of these tags, ignoring case; may be repeated (up to 20).
    #[param(explode = true, style = Form, max_items = 20)]
    tag: Option<Vec<String>>,
    /// Tasks due at or after this RFC 3339 timestamp.
    #[param(format = DateTime)]
    due_after: Option<String>,
    /// Tasks due strictly before this RFC 3339 timestamp.
    #[param(format = DateTime)]
    due_before: Option<String>,
    /// `true`: open tasks due before now; `false`: every other task.
    overdue: Option<bool>,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            page: 1,
            page_size: PAGE_SIZE_DEFAULT,
            sort_by: SortBy::CreatedAt,
            sort_order: SortOrder::Desc,
            completed: None,
            q: None,
            priorities: Vec::new(),
            tags: Vec::new(),
            due_after: None,
            due_before: None,
            overdue: None,
        }
    }
}

/// Query parameters the listing takes more than once.
const REPEATABLE: [&str; 2] = ["priority", "tag"];

impl ListQuery {
    /// Parses the query parameters, reporting every bad or unknown one. `priority` and `tag`
    /// may be repeated; any other parameter given twice is refused.
    pub fn parse(
        pairs: impl IntoIterator<Item = (String, String)>,
        max_page_size: u32,
    ) -> Result<Self, ApiError> {
        let mut params = HashMap::new();
        let mut repeated: HashMap<&'static str, Vec<String>> = HashMap::new();
        let mut twice = Vec::new();
        for (name, value) in pairs {
            if let Some(&name) = REPEATABLE.iter().find(|r| **r == name) {
                repeated.entry(name).or_default().push(value);
            } else {
                match params.entry(name) {
                    std::collections::hash_map::Entry::Occupied(entry) => {
                        if !twice.contains(entry.key()) {
                            twice.push(entry.key().clone());
                        }
                    }
                    std::collections::hash_map::Entry::Vacant(entry) => {
                        entry.insert(value);
                    }
                }
            }
        }
        // The setting is at least 1; a caller passing 0 still gets pages of one.
        let max_page_size = max_page_size.max(1);
        let mut query = Self {
            page_size: PAGE_SIZE_DEFAULT.min(max_page_size),
            ..Self::default()
        };
        let mut errors = Vec::new();
        let mut check = |name: &str, result: Result<(), String>| {
            if let Err(message) = result {
                errors.push(FieldError::new(name, message));
            }
        };
        if let Some(value) = params.remove("page") {
            check(
                "page",
                parse_number(&value, 1, PAGE_MAX).map(|n| query.page = n),
            );
        }
        if let Some(value) = params.remove("page_size") {
            check(
                "page_size",
                parse_number(&value, 1, max_page_size).map(|n| query.page_size = n),
            );
        }
        if let Some(value) = params.remove("sort_by") {
            let sort_by = match value.as_str() {
                "created_at" => Ok(SortBy::CreatedAt),
                "updated_at" => Ok(SortBy::UpdatedAt),
                "title" => Ok(SortBy::Title),
                "completed" => Ok(SortBy::Completed),
                "due_at" => Ok(SortBy::DueAt),
                "priority" => Ok(SortBy::Priority),
                _ => Err(
                    "must be one of created_at, updated_at, title, completed, due_at, priority"
                        .to_owned(),
                ),
            };
            check("sort_by", sort_by.map(|s| query.sort_by = s));
        }
        if let Some(value) = params.remove("sort_order") {
            let order = match value.as_str() {
                "asc" => Ok(SortOrder::Asc),
                "desc" => Ok(SortOrder::Desc),
                _ => Err("must be asc or desc".to_owned()),
            };
            check("sort_order", order.map(|o| query.sort_order = o));
        }
        if let Some(value) = params.remove("completed") {
            let completed = match value.as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err("must be true or false".to_owned()),
            };
            check("completed", completed.map(|c| query.completed = Some(c)));
        }
        if let Some(value) = params.remove("q") {
            let trimmed = text::trim_invisible(&value);
            let result = if trimmed.chars().count() > SEARCH_MAX_CHARS {
                Err(format!("must be at most {SEARCH_MAX_CHARS} characters"))
            } else {
                refuse_nul(&value).map(|()| {
                    // A term of invisible characters only folds to nothing: no filter.
                    let folded = text::fold(trimmed);
                    query.q = (!folded.is_empty()).then_some(SearchText(folded));
                })
            };
            check("q", result);
        }
        for value in repeated.remove("priority").unwrap_or_default() {
            match Priority::parse(&value) {
                Ok(priority) if !query.priorities.contains(&priority) => {
                    query.priorities.push(priority);
                }
                Ok(_) => {}
                Err(message) => check("priority", Err(message)),
            }
        }
        let tags = repeated.remove("tag").unwrap_or_default();
        if tags.len() > super::planning::TAGS_MAX {
            check(
                "tag",
                Err(format!(
                    "may be given at most {} times",
                    super::planning::TAGS_MAX
                )),
            );
        } else {
            for value in tags {
                match Tag::parse(&value) {
                    Ok(tag) => query.tags.push(tag),
                    Err(message) => check("tag", Err(message)),
                }
            }
        }
        if let Some(value) = params.remove("due_after") {
            check(
                "due_after",
                query_timestamp(&value).map(|time| query.due_after = Some(time)),
            );
        }
        if let Some(value) = params.remove("due_before") {
            check(
                "due_before",
                query_timestamp(&value).map(|time| query.due_before = Some(time)),
            );
        }
        if let Some(value) = params.remove("overdue") {
            let overdue = match value.as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err("must be true or false".to_owned()),
            };
            check(
                "overdue",
                overdue.map(|overdue| {
                    query.overdue = Some(Overdue {
                        overdue,
                        as_of: now_millis(),
                    });
                }),
            );
        }
        let mut unknown: Vec<String> = params.into_keys().collect();
        unknown.sort();
        for name in unknown {
            errors.push(FieldError::new(name, "is not a known query parameter"));
        }
        for name in twice {
            errors.push(FieldError::new(name, "must be given only once"));
        }
        if errors.is_empty() {
            Ok(query)
        } else {
            Err(ApiError::validation("query parameters are invalid", errors))
        }
    }

    /// Whether the filters match only tasks with a due date.
    pub fn only_dated(&self) -> bool {
        self.due_after.is_some()
            || self.due_before.is_some()
            || self.overdue.is_some_and(|overdue| overdue.overdue)
    }

    pub fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.page_size)
    }
}

/// A timestamp from a query string. A `+` sent unencoded arrives as a space (form encoding);
/// that mistake gets its own message rather than a guess.
fn query_timestamp(value: &str) -> Result<DateTime<Utc>, String> {
    parse_timestamp(value).map_err(|message| {
        if parse_timestamp(&value.trim().replace(' ', "+")).is_ok() {
            "has a space where its offset's `+` should be: in a query string a `+` means a \
             space, so send it as %2B (or use Z)"
                .to_owned()
        } else {
            message
        }
    })
}

fn parse_number(value: &str, min: u32, max: u32) -> Result<u32, String> {
    // Digits only: `parse` would also take a leading `+`.
    Some(value)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("must be a whole number from {min} to {max}"))
}

/// One page of a listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskPage {
    pub items: Vec<Task>,
    /// Tasks matching the filters, on all pages.
    pub total: u64,
    pub page: u32,
    pub page_size: u32,
    /// `ceil(total / page_size)`; 0 when nothing matches.
    pub total_pages: u64,
}

impl TaskPage {
    pub fn new(items: Vec<Task>, total: u64, query: &ListQuery) -> Self {
        Self {
            items,
            total,
            page: query.page,
            page_size: query.page_size,
            total_pages: total.div_ceil(u64::from(query.page_size)),
        }
    }
}

/// One tag of a user, with how many of their tasks carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct TagCount {
    /// The tag, as the first of its spellings (by code point) that the user's tasks use.
    #[schema(example = "Groceries")]
    pub tag: String,
    /// Open (not completed) tasks carrying it.
    pub open: u64,
    /// All tasks carrying it.
    pub total: u64,
}

/// `GET /api/{user_id}/tags`: every tag of the user, most used first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TagList {
    pub items: Vec<TagCount>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(TaskTitle::parse("  milk ".into()).unwrap().as_str(), "milk");
        assert!(TaskTitle::parse("   ".into()).is_err());
        assert!(TaskTitle::parse("é".repeat(255)).is_ok());
        assert!(TaskTitle::parse("é".repeat(256)).is_err());
        assert!(TaskTitle::parse("a\0b".into()).is_err());
    }

    #[test]
    fn descriptions_are_bounded_in_characters() {
        assert!(Description::parse("x".repeat(10_000)).is_ok());
        assert!(Description::parse("x".repeat(10_001)).is_err());
        assert!(Description::parse(String::new()).is_ok());
    }

    #[test]
    fn listing_defaults_and_every_bad_parameter_is_named() {
        assert_eq!(
            ListQuery::parse(Vec::new(), 100).unwrap(),
            ListQuery::default()
        );
        let Err(ApiError::Validation { errors, .. }) = ListQuery::parse(
            params(&[
                ("page", "0"),
                ("page_size", "1000"),
                ("sort_by", "password"),
                ("sort_order", "up"),
                ("completed", "yes"),
                ("colour", "red"),
            ]),
            100,
        ) else {
            panic!("expected a validation error");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "page",
                "page_size",
                "sort_by",
                "sort_order",
                "completed",
                "colour"
            ]
        );
    }

    #[test]
    fn titles_of_invisible_characters_only_are_empty() {
        for raw in [
            "\u{200b}",
            "\u{feff}\u{2060}",
            "\u{3000}\u{a0}",
            "\u{fe0f}",
            "\u{ad}",
        ] {
            assert_eq!(
                TaskTitle::parse(raw.into()),
                Err("must not be empty".into()),
                "{raw:?}"
            );
        }
        assert_eq!(
            TaskTitle::parse("\u{200b}milk\u{feff}".into())
                .unwrap()
                .as_str(),
            "milk"
        );
    }

    #[test]
    fn search_text_is_folded_and_an_invisible_one_is_no_filter() {
        let query = ListQuery::parse(params(&[("q", " CAFÉ\u{200b} ")]), 100).unwrap();
        assert_eq!(query.q.unwrap().as_str(), "café");
        let query = ListQuery::parse(params(&[("q", "\u{200b}")]), 100).unwrap();
        assert_eq!(query.q, None);
    }

    #[test]
    fn an_unencoded_plus_in_a_due_filter_is_named_as_such() {
        let Err(ApiError::Validation { errors, .. }) = ListQuery::parse(
            params(&[
                ("due_after", "2026-12-01T00:00:00 02:00"),
                ("due_before", "soon"),
            ]),
            100,
        ) else {
            panic!("expected a validation error");
        };
        assert!(errors[0].message.contains("%2B"), "{:?}", errors[0]);
        assert!(!errors[1].message.contains("%2B"), "{:?}", errors[1]);
        let query = ListQuery::parse(params(&[("due_after", "2026-12-01T00:00:00+02:00")]), 100);
        assert!(query.unwrap().due_after.is_some());
    }

    #[test]
    fn search_text_is_escaped_for_like() {
        let query = ListQuery::parse(params(&[("q", " 50%_Off\\ ")]), 100).unwrap();
        assert_eq!(query.q.unwrap().like_pattern(), "%50\\%\\_off\\\\%");
    }

    #[test]
    fn pages_count_up() {
        let query = ListQuery::default();
        assert_eq!(TaskPage::new(vec![], 0, &query).total_pages, 0);
        assert_eq!(TaskPage::new(vec![], 20, &query).total_pages, 1);
        assert_eq!(TaskPage::new(vec![], 21, &query).total_pages, 2);
    }
}
