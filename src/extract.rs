//! Extractors for request bodies, query strings and path ids that report every malformed
//! input as our own 400/413/415 problem document, never axum's plain-text rejections.
//!
//! Bodies are read as a JSON object and taken apart field by field with [`JsonObject`], so
//! that a request with several bad fields hears about all of them at once, and unknown
//! fields are refused instead of silently ignored.

use std::collections::HashMap;

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Request},
    http::{HeaderMap, StatusCode, header, request::Parts},
};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::{ApiError, FieldError};

/// The state of one field of a JSON object.
#[derive(Debug)]
pub enum Field<T> {
    Absent,
    Null,
    Present(T),
    /// Wrong type or failed its domain rule; the error is already recorded.
    Invalid,
}

/// A JSON object being taken apart. Fields are removed as they are read; whatever is left
/// at the end is unknown and refused.
#[derive(Debug)]
pub struct JsonObject {
    fields: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl JsonObject {
    pub fn from_value(value: Value) -> Result<Self, ApiError> {
        match value {
            Value::Object(fields) => Ok(Self {
                fields,
                errors: Vec::new(),
            }),
            _ => Err(ApiError::field("body", "must be a JSON object")),
        }
    }

    pub fn from_form(pairs: Vec<(String, String)>) -> Result<Self, ApiError> {
        let mut fields = Map::new();
        for (name, value) in pairs {
            if fields.insert(name.clone(), Value::String(value)).is_some() {
                return Err(ApiError::field(&name, "must be given only once"));
            }
        }
        Ok(Self {
            fields,
            errors: Vec::new(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Records a failure for `field`.
    pub fn reject(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// Reads a string field and applies its domain rule.
    pub fn string<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(String) -> Result<T, String>,
    ) -> Field<T> {
        match self.fields.remove(name) {
            None => Field::Absent,
            Some(Value::Null) => Field::Null,
            Some(Value::String(text)) => match parse(text) {
                Ok(value) => Field::Present(value),
                Err(message) => {
                    self.reject(name, message);
                    Field::Invalid
                }
            },
            Some(_) => {
                self.reject(name, "must be a string");
                Field::Invalid
            }
        }
    }

    /// Reads a field of any JSON type (`null` aside) and applies its rule, which names each
    /// failure's field itself (a nested object reports `outer.inner`).
    pub fn nested<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(Value) -> Result<T, Vec<(String, String)>>,
    ) -> Field<T> {
        match self.fields.remove(name) {
            None => Field::Absent,
            Some(Value::Null) => Field::Null,
            Some(value) => match parse(value) {
                Ok(value) => Field::Present(value),
                Err(failures) => {
                    for (field, message) in failures {
                        self.reject(&field, message);
                    }
                    Field::Invalid
                }
            },
        }
    }

    /// Reads a field of any JSON type (`null` aside) and applies its rule.
    pub fn value<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(Value) -> Result<T, String>,
    ) -> Field<T> {
        self.nested(name, |value| {
            parse(value).map_err(|message| vec![(name.to_owned(), message)])
        })
    }

    pub fn boolean(&mut self, name: &str) -> Field<bool> {
        match self.fields.remove(name) {
            None => Field::Absent,
            Some(Value::Null) => Field::Null,
            Some(Value::Bool(value)) => Field::Present(value),
            Some(_) => {
                self.reject(name, "must be true or false");
                Field::Invalid
            }
        }
    }

    /// A field that must be present and not null.
    pub fn required<T>(&mut self, name: &str, field: Field<T>) -> Option<T> {
        match field {
            Field::Present(value) => Some(value),
            Field::Absent => {
                self.reject(name, "is required");
                None
            }
            Field::Null => {
                self.reject(name, "must not be null");
                None
            }
            Field::Invalid => None,
        }
    }

    /// A field that may be absent but not null. `Some(None)` means absent.
    pub fn optional<T>(&mut self, name: &str, field: Field<T>) -> Option<Option<T>> {
        match field {
            Field::Present(value) => Some(Some(value)),
            Field::Absent => Some(None),
            Field::Null => {
                self.reject(name, "must not be null");
                None
            }
            Field::Invalid => None,
        }
    }

    /// Refuses the fields nobody read, then yields `value` if no field failed.
    pub fn finish<T>(mut self, value: Option<T>) -> Result<T, ApiError> {
        let unknown: Vec<String> = self.fields.keys().cloned().collect();
        for name in unknown {
            self.reject(&name, "is not a known field");
        }
        if !self.errors.is_empty() {
            return Err(ApiError::validation("request body is invalid", self.errors));
        }
        value.ok_or_else(|| ApiError::internal(anyhow::anyhow!("a field was lost while parsing")))
    }
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next()?.trim().to_ascii_lowercase();
    Some(essence)
}

fn is_json(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|essence| {
        essence == "application/json"
            || (essence.starts_with("application/") && essence.ends_with("+json"))
    })
}

async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit_hint = request
        .extensions()
        .get::<BodyLimit>()
        .map(|limit| limit.0)
        .unwrap_or_default();
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(limit_hint)
            } else {
                ApiError::field("body", "could not be read")
            }
        })
}

fn parse_value(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|error| ApiError::field("body", format!("is not valid JSON: {error}")))
}

fn parse_json(bytes: &[u8]) -> Result<JsonObject, ApiError> {
    JsonObject::from_value(parse_value(bytes)?)
}

/// The body limit in force, put in request extensions so that a 413 can say it.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

const EXPECT_JSON: &str = "expected Content-Type: application/json";

/// A JSON object body. 415 without a JSON content type, 413 over the limit, 400 otherwise.
pub struct JsonBody(pub JsonObject);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType(EXPECT_JSON));
        }
        let bytes = read_body(request, state).await?;
        parse_json(&bytes).map(Self)
    }
}

/// Like [`JsonBody`], but an empty body (whatever its content type) is `None`.
pub struct OptionalJsonBody(pub Option<JsonObject>);

impl<S: Send + Sync> FromRequest<S> for OptionalJsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(request.headers());
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        if !json {
            return Err(ApiError::UnsupportedMediaType(EXPECT_JSON));
        }
        match parse_value(&bytes)? {
            // A JSON `null` is no body either.
            Value::Null => Ok(Self(None)),
            value => JsonObject::from_value(value).map(|object| Self(Some(object))),
        }
    }
}

/// A JSON object, or an `application/x-www-form-urlencoded` form read as an object of
/// strings (the OAuth2 password grant, as sent by Swagger UI's "Authorize").
pub struct JsonOrForm {
    pub object: JsonObject,
    pub is_form: bool,
}

impl<S: Send + Sync> FromRequest<S> for JsonOrForm {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = media_type(request.headers())
            .is_some_and(|essence| essence == "application/x-www-form-urlencoded");
        if !is_form && !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "expected Content-Type: application/json or application/x-www-form-urlencoded",
            ));
        }
        let bytes = read_body(request, state).await?;
        let object = if is_form {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
                .map_err(|_| ApiError::field("body", "is not a valid form"))?;
            JsonObject::from_form(pairs)?
        } else {
            parse_json(&bytes)?
        };
        Ok(Self { object, is_form })
    }
}

/// The query string as name/value pairs in order, repeats kept: for routes where some
/// parameters may be given more than once (the route decides which).
pub struct QueryList(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryList {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(raw)
            .map(Self)
            .map_err(|_| ApiError::field("query", "is not a valid query string"))
    }
}

/// The query string as name/value pairs, each name at most once.
pub struct QueryPairs(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
            .map_err(|_| ApiError::field("query", "is not a valid query string"))?;
        let mut map = HashMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            if map.insert(name.clone(), value).is_some() {
                return Err(ApiError::field(&name, "must be given only once"));
            }
        }
        Ok(Self(map))
    }
}

/// The `{id}` path segment as a UUID; 400 naming `id` when it is not one.
pub struct TaskId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for TaskId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::field("id", "must be a UUID"))?;
        params
            .get("id")
            .and_then(|id| Uuid::parse_str(id).ok())
            .map(Self)
            .ok_or_else(|| ApiError::field("id", "must be a UUID"))
    }
}

/// The `If-Match` header: `*`, or a list of strong entity tags (`"3"`). A weak tag never
/// matches, as RFC 9110 requires strong comparison for `If-Match`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    Tags(Vec<String>),
}

impl IfMatch {
    pub fn matches(&self, etag: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Tags(tags) => tags.iter().any(|tag| tag == etag),
        }
    }

    /// `None` when the header is not `*` or a list of entity tags, including when it is
    /// empty: RFC 9110 §13.1.1 requires at least one member.
    fn parse(values: &[&str]) -> Option<Self> {
        let mut tags = Vec::new();
        let mut members = 0;
        for value in values {
            for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                members += 1;
                if tag == "*" {
                    return Some(Self::Any);
                }
                let opaque = tag.strip_prefix("W/").unwrap_or(tag);
                let valid = opaque.len() >= 2
                    && opaque.starts_with('"')
                    && opaque.ends_with('"')
                    && !opaque[1..opaque.len() - 1].contains('"');
                if !valid {
                    return None;
                }
                if !tag.starts_with("W/") {
                    tags.push(tag.to_owned());
                }
            }
        }
        (members > 0).then_some(Self::Tags(tags))
    }
}

/// The optional `If-Match` precondition; 400 when the header is not a list of entity tags.
pub struct Precondition(pub Option<IfMatch>);

impl<S: Send + Sync> FromRequestParts<S> for Precondition {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let values: Vec<&str> = parts
            .headers
            .get_all(header::IF_MATCH)
            .iter()
            .map(|value| value.to_str().unwrap_or("\u{0}"))
            .collect();
        if values.is_empty() {
            return Ok(Self(None));
        }
        IfMatch::parse(&values)
            .map(|condition| Self(Some(condition)))
            .ok_or_else(|| {
                ApiError::field(
                    "If-Match",
                    "must be * or a list of entity tags such as \"3\"",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::IfMatch;

    #[test]
    fn if_match_takes_star_and_strong_tags_and_ignores_weak_ones() {
        assert_eq!(IfMatch::parse(&["*"]), Some(IfMatch::Any));
        let tags = IfMatch::parse(&["\"1\", W/\"2\"", "\"3\""]).unwrap();
        assert!(tags.matches("\"1\"") && tags.matches("\"3\"") && !tags.matches("\"2\""));
        assert_eq!(IfMatch::parse(&["3"]), None);
        assert_eq!(IfMatch::parse(&["\"a\"b\""]), None);
        for empty in [&[""][..], &[" "], &[","], &[" , ", ""]] {
            assert_eq!(IfMatch::parse(empty), None, "{empty:?}");
        }
        for empty in [&[""][..], &[" "], &[","], &[" , ", ""]] {
            assert_eq!(IfMatch::parse(empty), None, "{empty:?}");
        }
    }
}
