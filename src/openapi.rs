//! The OpenAPI 3.1 document (paths come from the handlers' annotations) and Swagger UI.
//!
//! The document is also where the CORS layer learns which request headers a browser may send
//! and which response headers it may read ([`cors_headers`]): headers the service reads or
//! sends on every route (`x-request-id`, `WWW-Authenticate`, `Retry-After`) are declared here
//! once, on every operation, so the document and the CORS lists cannot disagree.

use std::{collections::BTreeSet, sync::Arc};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderName, HeaderValue, header},
    middleware::Next,
    response::Response,
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{
        ApiKey, Flow, HttpAuthScheme, HttpBuilder, OAuth2, Password, Scopes, SecurityScheme,
    },
    openapi::{
        Object, RefOr, Required, Type,
        header::Header,
        path::{Operation, ParameterBuilder, ParameterIn},
        schema::Schema,
    },
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Todo API",
        description = "A multi-user Todo API. Sign up or log in under `auth`, press **Authorize** \
                       (paste the `access_token`, or log in with the password form), then call \
                       the task routes with your user id in the path.",
    ),
    modifiers(&SecuritySchemes),
    components(schemas(crate::error::Problem, crate::error::FieldError)),
    tags(
        (name = "auth", description = "Sign-up, login and the current user"),
        (name = "tasks", description = "A user's own tasks"),
        (name = "events", description = "A user's own task events (CloudEvents), paged or live"),
        (name = "operations", description = "Probes"),
    )
)]
pub struct ApiDoc;

/// Final touches once the routers have added their schemas: a `PATCH` body needs at least
/// one field (utoipa 5.5 writes a container's `min_properties` as `maxProperties`, so it is
/// set here instead), and the listing's `page_size` maximum is the configured
/// `MAX_PAGE_SIZE`, not the compiled-in default.
pub fn complete(openapi: &mut utoipa::openapi::OpenApi, max_page_size: u32) {
    let schema = openapi
        .components
        .as_mut()
        .and_then(|components| components.schemas.get_mut("PatchTaskRequest"));
    if let Some(RefOr::T(Schema::Object(object))) = schema {
        object.min_properties = Some(1);
    }
    let page_size = openapi
        .paths
        .paths
        .get_mut("/api/{user_id}/tasks")
        .and_then(|item| item.get.as_mut())
        .and_then(|listing| listing.parameters.as_mut())
        .and_then(|parameters| {
            parameters
                .iter_mut()
                .find(|parameter| parameter.name == "page_size")
        })
        .and_then(|parameter| parameter.schema.as_mut());
    if let Some(RefOr::T(Schema::Object(object))) = page_size {
        object.maximum = Some(max_page_size.into());
    }
    for item in openapi.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            declare_common_headers(operation);
        }
    }
}

/// The request-id header: honoured on requests, sent on every response.
pub const REQUEST_ID: &str = "x-request-id";

fn operations_mut(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

fn operations(item: &utoipa::openapi::PathItem) -> impl Iterator<Item = &Operation> {
    [
        &item.get,
        &item.put,
        &item.post,
        &item.delete,
        &item.options,
        &item.head,
        &item.patch,
        &item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_ref)
}

fn string_header(description: &str) -> Header {
    let mut header = Header::new(Object::with_type(Type::String));
    header.description = Some(description.to_owned());
    header
}

/// What middleware does on every route, written into each operation: `x-request-id` in and
/// out, `WWW-Authenticate` on every 401 (RFC 9110 §11.6.1), `Retry-After` on every 429 and
/// 503 (RFC 9110 §10.2.3).
fn declare_common_headers(operation: &mut Operation) {
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    if !parameters
        .iter()
        .any(|p| p.name.eq_ignore_ascii_case(REQUEST_ID))
    {
        parameters.push(
            ParameterBuilder::new()
                .name(REQUEST_ID)
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "The caller's id for this request, kept and sent back (one is made up when \
                     absent) and written in the request's log line",
                ))
                .schema(Some(Object::with_type(Type::String)))
                .build(),
        );
    }
    for (status, response) in &mut operation.responses.responses {
        let RefOr::T(response) = response else {
            continue;
        };
        response
            .headers
            .entry(REQUEST_ID.to_owned())
            .or_insert_with(|| {
                string_header("The request's id: the caller's own `x-request-id`, or a new UUID")
            });
        match status.as_str() {
            "401" => {
                response
                    .headers
                    .entry("WWW-Authenticate".to_owned())
                    .or_insert_with(|| string_header("`Bearer`"));
            }
            "429" | "503" => {
                response
                    .headers
                    .entry("Retry-After".to_owned())
                    .or_insert_with(|| {
                        let mut header = Header::new(Object::with_type(Type::Integer));
                        header.description = Some("Seconds to wait before trying again".into());
                        header
                    });
            }
            _ => {}
        }
    }
}

/// The header names a browser needs to be allowed to send (CORS `Access-Control-Allow-Headers`)
/// and to read (`Access-Control-Expose-Headers`), lower-case and sorted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsHeaders {
    pub allowed: Vec<HeaderName>,
    pub exposed: Vec<HeaderName>,
}

/// Derives the CORS header lists from the document: allowed are every header parameter, the
/// header of every security scheme (`Authorization` for HTTP, OAuth2 and OpenID Connect
/// schemes, the named header of an API-key scheme) and `Content-Type` when an operation takes
/// a body; exposed is every response header any operation declares. Names that are not valid
/// header names are skipped (the document's own tests would show them).
pub fn cors_headers(openapi: &utoipa::openapi::OpenApi) -> CorsHeaders {
    let mut allowed = BTreeSet::new();
    let mut exposed = BTreeSet::new();
    for item in openapi.paths.paths.values() {
        for operation in operations(item) {
            for parameter in operation.parameters.iter().flatten() {
                if parameter.parameter_in == ParameterIn::Header {
                    allowed.insert(parameter.name.to_ascii_lowercase());
                }
            }
            if operation.request_body.is_some() {
                allowed.insert(header::CONTENT_TYPE.as_str().to_owned());
            }
            for response in operation.responses.responses.values() {
                if let RefOr::T(response) = response {
                    exposed.extend(
                        response
                            .headers
                            .keys()
                            .map(|name| name.to_ascii_lowercase()),
                    );
                }
            }
        }
    }
    let schemes = openapi
        .components
        .iter()
        .flat_map(|components| components.security_schemes.values());
    for scheme in schemes {
        match scheme {
            SecurityScheme::ApiKey(ApiKey::Header(key)) => {
                allowed.insert(key.name.to_ascii_lowercase());
            }
            SecurityScheme::Http(_)
            | SecurityScheme::OAuth2(_)
            | SecurityScheme::OpenIdConnect(_) => {
                allowed.insert(header::AUTHORIZATION.as_str().to_owned());
            }
            _ => {}
        }
    }
    let names = |set: BTreeSet<String>| {
        set.into_iter()
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect()
    };
    CorsHeaders {
        allowed: names(allowed),
        exposed: names(exposed),
    }
}

/// Middleware on the Swagger UI routes: its page's `<title>` names the API instead of the
/// generic "Swagger UI", so a browser tab or bookmark says what it is.
pub async fn title_swagger_ui(
    State(title): State<Arc<String>>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/html"));
    if !is_html {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // The page is a few kilobytes; anything far larger is not the page this expects.
    let Ok(bytes) = axum::body::to_bytes(body, 1024 * 1024).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let page = String::from_utf8_lossy(&bytes);
    let page = match (page.find("<title>"), page.find("</title>")) {
        (Some(open), Some(close)) if open < close => format!(
            "{}<title>{}</title>{}",
            &page[..open],
            escape_html(&title),
            &page[close + "</title>".len()..]
        ),
        _ => page.into_owned(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Ok(length) = HeaderValue::try_from(page.len().to_string()) {
        parts.headers.insert(header::CONTENT_LENGTH, length);
    }
    Response::from_parts(parts, Body::from(page))
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `bearer`: paste a JWT. `oauth2_password`: Swagger UI logs in through
/// `POST /api/auth/login` with a form and uses the token it returns.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "oauth2_password",
            SecurityScheme::OAuth2(OAuth2::new([Flow::Password(Password::new(
                "/api/auth/login",
                Scopes::new(),
            ))])),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_lists_come_from_every_header_the_document_declares() {
        let (_, mut api) =
            utoipa_axum::router::OpenApiRouter::<crate::app::AppState>::with_openapi(
                ApiDoc::openapi(),
            )
            .merge(crate::auth::router())
            .merge(crate::tasks::router())
            .merge(crate::ops::router())
            .split_for_parts();
        complete(&mut api, 100);
        let headers = cors_headers(&api);
        let names = |list: &[HeaderName]| -> Vec<String> {
            list.iter().map(|name| name.as_str().to_owned()).collect()
        };
        assert_eq!(
            names(&headers.allowed),
            ["authorization", "content-type", "if-match", "x-request-id"]
        );
        assert_eq!(
            names(&headers.exposed),
            [
                "etag",
                "location",
                "retry-after",
                "www-authenticate",
                "x-request-id"
            ]
        );
    }
}
