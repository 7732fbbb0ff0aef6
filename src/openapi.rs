//! The OpenAPI 3.1 document (paths come from the handlers' annotations) and Swagger UI.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{
        Flow, HttpAuthScheme, HttpBuilder, OAuth2, Password, Scopes, SecurityScheme,
    },
    openapi::{RefOr, schema::Schema},
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
/// one field. (utoipa 5.5 writes a container's `min_properties` as `maxProperties`, so it is
/// set here instead.)
pub fn complete(openapi: &mut utoipa::openapi::OpenApi) {
    let schema = openapi
        .components
        .as_mut()
        .and_then(|components| components.schemas.get_mut("PatchTaskRequest"));
    if let Some(RefOr::T(Schema::Object(object))) = schema {
        object.min_properties = Some(1);
    }
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
